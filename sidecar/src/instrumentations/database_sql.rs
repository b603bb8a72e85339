//! SQL client spans (kind CLIENT) for every query and exec through `database/sql`, whatever
//! the driver. The narrowest set of functions that sees each statement once, with its text:
//!
//! - `(*DB).execDC` and `(*DB).queryDC`: every `Exec*`/`Query*`/`QueryRow*` of `DB`, `Conn` and
//!   `Tx` ends there, with the connection (`dc.ci`, whose dynamic type names the driver) and
//!   the text; a driver without the fast path is prepared and run inside them, no second span.
//! - `(*Stmt).ExecContext` and `(*Stmt).QueryContext`: prepared statements (`Exec`, `Query`,
//!   `QueryRow` call them), with `s.query`; the driver from `s.db.connector`'s type.
//!
//! Attributes follow the OpenTelemetry database conventions: `db.system.name` from the driver
//! type, `db.operation.name` and `db.collection.name` told from the text (`sql.rs`),
//! `db.query.text` with literals replaced unless `GOTEL_DB_QUERY_TEXT=raw`, read up to the
//! attribute length limit. An error result makes the span ERROR with the driver's message: the
//! generic decoder knows `errors.New`-style errors; for PostgreSQL errors (pgx `*pgconn.PgError`,
//! lib/pq `*pq.Error`) the message and SQLSTATE are read at return through the error's data
//! pointer ([`extend`]), since their first field is only the severity.
//!
//! `server.address` is not set: it lives in driver-specific connection state.
use std::sync::OnceLock;

use gotel_shared::{Root, ValueKind, REG_RAX, REG_RCX, REG_RDI};
use opentelemetry::{
    trace::{SpanKind, Status},
    KeyValue,
};

use super::{sql, take, text, Arg, FieldNeed, Finished, GoTy, Instrumentation, Read, SpanProbe};
use crate::{
    attributes::{AttributePlan, Decode, Limits},
    dwarf::{DwarfInfo, FunctionInfo},
    exit::Failure,
};

const PGX: &str = "github.com/jackc/pgx/v5";
const PQ: &str = "github.com/lib/pq";

/// PostgreSQL error structs: (module, struct, capture prefix) with `Message` and `Code` fields.
const PG_ERRORS: [(&str, &str, &str); 2] =
    [(PGX, "github.com/jackc/pgx/v5/pgconn.PgError", "pgx"), (PQ, "github.com/lib/pq.Error", "pq")];

pub static DATABASE_SQL: Instrumentation = Instrumentation {
    name: "database.sql",
    selectable: true,
    doc: "client spans (kind CLIENT) named `{operation} {table}` for each query and exec through `database/sql` \
          (transactions and prepared statements included); ERROR with the driver's message",
    attributes: &[
        "db.system.name",
        "db.operation.name",
        "db.collection.name",
        "db.query.text",
        "db.response.status_code",
    ],
    fields: &[
        FieldNeed::std("database/sql.driverConn", "ci", GoTy::Iface("database/sql/driver.Conn")),
        FieldNeed::std("database/sql.Stmt", "query", GoTy::String),
        FieldNeed::std("database/sql.Stmt", "db", GoTy::Ptr("database/sql.DB")),
        FieldNeed::std("database/sql.DB", "connector", GoTy::Iface("database/sql/driver.Connector")),
        FieldNeed::std("database/sql.dsnConnector", "driver", GoTy::Iface("database/sql/driver.Driver")),
        FieldNeed::module(PGX, "github.com/jackc/pgx/v5/pgconn.PgError", "Code", GoTy::String).optional(),
        FieldNeed::module(PGX, "github.com/jackc/pgx/v5/pgconn.PgError", "Message", GoTy::String).optional(),
        FieldNeed::module(PQ, "github.com/lib/pq.Error", "Code", GoTy::String).optional(),
        FieldNeed::module(PQ, "github.com/lib/pq.Error", "Message", GoTy::String).optional(),
    ],
    span: Some(SpanProbe {
        symbol: "database/sql.(*DB).execDC",
        kind: SpanKind::Client,
        spec: "database/sql.(*DB).execDC(q=query, drv=dc.ci, err=ret1)",
        signature: &[
            Arg::param("db", GoTy::Opaque),
            Arg::param("ctx", GoTy::Iface("context.Context")),
            Arg::param("dc", GoTy::Ptr("database/sql.driverConn")),
            Arg::param("release", GoTy::Opaque),
            Arg::param("query", GoTy::String),
            Arg::param("args", GoTy::Bytes),
            Arg::result("res", GoTy::Iface("database/sql/driver.Result")),
            Arg::result("err", GoTy::Iface("error")),
        ],
        save_regs: [gotel_shared::NO_REG; 2],
        extend: Some(|p, d, i, l| extend(p, d, i, l, REG_RDI, false)),
        finish,
    }),
    more_spans: &[
        SpanProbe {
            symbol: "database/sql.(*DB).queryDC",
            kind: SpanKind::Client,
            spec: "database/sql.(*DB).queryDC(q=query, drv=dc.ci, err=ret1)",
            signature: &[
                Arg::param("db", GoTy::Opaque),
                Arg::param("ctx", GoTy::Iface("context.Context")),
                Arg::param("txctx", GoTy::Iface("context.Context")),
                Arg::param("dc", GoTy::Ptr("database/sql.driverConn")),
                Arg::param("releaseConn", GoTy::Opaque),
                Arg::param("query", GoTy::String),
                Arg::param("args", GoTy::Bytes),
                Arg::result("~r0", GoTy::Opaque),
                Arg::result("~r1", GoTy::Iface("error")),
            ],
            save_regs: [gotel_shared::NO_REG; 2],
            extend: Some(|p, d, i, l| extend(p, d, i, l, REG_RCX, false)),
            finish,
        },
        SpanProbe {
            symbol: "database/sql.(*Stmt).ExecContext",
            kind: SpanKind::Client,
            spec: "database/sql.(*Stmt).ExecContext(q=s.query, drv=s.db.connector, err=ret1)",
            signature: &[
                Arg::param("s", GoTy::Ptr("database/sql.Stmt")),
                Arg::param("ctx", GoTy::Iface("context.Context")),
                Arg::param("args", GoTy::Bytes),
                Arg::result("~r0", GoTy::Iface("database/sql/driver.Result")),
                Arg::result("~r1", GoTy::Iface("error")),
            ],
            save_regs: [gotel_shared::NO_REG; 2],
            extend: Some(|p, d, i, l| extend(p, d, i, l, REG_RDI, true)),
            finish,
        },
        SpanProbe {
            symbol: "database/sql.(*Stmt).QueryContext",
            kind: SpanKind::Client,
            spec: "database/sql.(*Stmt).QueryContext(q=s.query, drv=s.db.connector, err=ret1)",
            signature: &[
                Arg::param("s", GoTy::Ptr("database/sql.Stmt")),
                Arg::param("ctx", GoTy::Iface("context.Context")),
                Arg::param("args", GoTy::Bytes),
                Arg::result("~r0", GoTy::Opaque),
                Arg::result("~r1", GoTy::Iface("error")),
            ],
            save_regs: [gotel_shared::NO_REG; 2],
            extend: Some(|p, d, i, l| extend(p, d, i, l, REG_RCX, true)),
            finish,
        },
    ],
    ..Instrumentation::BASE
};

/// At return, through the error's data word (register `err_data`): `Message` and `Code` of the
/// PostgreSQL error structs the binary has. Read whatever the error's type; `finish` uses them
/// only when the type is that struct. For a statement (`stmt`, `s` in RAX at entry): the
/// driver's type behind `s.db.connector` when that is `sql.Open`'s `dsnConnector` (drivers
/// without `OpenConnector`: lib/pq, SQLite), whose own type names no driver.
fn extend(
    plan: &mut AttributePlan,
    dwarf: &DwarfInfo,
    _info: &FunctionInfo,
    limits: &Limits,
    err_data: u8,
    stmt: bool,
) -> Result<(), String> {
    let types = &dwarf.types;
    if stmt {
        let field = |s: &str, f: &str| types.struct_field(s, f).map(|(o, _)| o as i32);
        if let (Some(db), Some(connector), Some(driver)) = (
            field("database/sql.Stmt", "db"),
            field("database/sql.DB", "connector"),
            field("database/sql.dsnConnector", "driver"),
        ) {
            // s -> s.db (load) -> the connector's data word (load) -> its driver field.
            let hops = [db, connector + 8, driver];
            let kind = ValueKind::Interface;
            Read {
                key: "dsn_driver",
                root: Root::Registers,
                reg: REG_RAX,
                hops: &hops,
                kind,
                decode: Decode::Interface,
                at_return: false,
            }
            .push(plan, limits);
        }
    }
    for (_, strukt, prefix) in PG_ERRORS {
        for field in ["Message", "Code"] {
            let Some((off, _)) = dwarf.types.struct_field(strukt, field) else { continue };
            let key = format!("{prefix}.{field}");
            let hops = [off as i32];
            Read {
                key: &key,
                root: Root::Registers,
                reg: err_data,
                hops: &hops,
                kind: ValueKind::String,
                decode: Decode::String,
                at_return: true,
            }
            .push(plan, limits);
        }
    }
    Ok(())
}

/// `GOTEL_DB_QUERY_TEXT`: what `db.query.text` holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryText {
    /// Literals replaced by `?` (default).
    Sanitized,
    /// As the program sent it.
    Raw,
    /// Not recorded.
    Off,
}

static QUERY_TEXT: OnceLock<QueryText> = OnceLock::new();

/// Reads and checks `GOTEL_DB_QUERY_TEXT` once (config time); the spans then follow it.
pub fn query_text_from_env() -> Result<QueryText, Failure> {
    let v = match std::env::var("GOTEL_DB_QUERY_TEXT").unwrap_or_default().trim() {
        "" | "sanitized" => QueryText::Sanitized,
        "raw" => QueryText::Raw,
        "off" => QueryText::Off,
        other => {
            return Err(Failure::config(format!(
                "GOTEL_DB_QUERY_TEXT={other}: use sanitized (default: literals replaced by ?), raw or off"
            )))
        }
    };
    let _ = QUERY_TEXT.set(v);
    Ok(v)
}

fn query_text() -> QueryText {
    QUERY_TEXT.get().copied().unwrap_or(QueryText::Sanitized)
}

/// Driver packages and their `db.system.name`: (package path or its last element, system).
/// Type names carry the full path with DWARF (`*github.com/jackc/pgx/v5/stdlib.Conn`) and the
/// last element without (`*stdlib.Conn`).
const SYSTEMS: &[(&str, &str)] = &[
    ("github.com/jackc/pgx/v4/stdlib", "postgresql"),
    ("github.com/jackc/pgx/v5/stdlib", "postgresql"),
    ("stdlib", "postgresql"),
    ("github.com/lib/pq", "postgresql"),
    ("pq", "postgresql"),
    ("github.com/uptrace/bun/driver/pgdriver", "postgresql"),
    ("pgdriver", "postgresql"),
    ("modernc.org/sqlite", "sqlite"),
    ("github.com/mattn/go-sqlite3", "sqlite"),
    ("github.com/glebarez/go-sqlite", "sqlite"),
    ("github.com/ncruces/go-sqlite3/driver", "sqlite"),
    ("sqlite", "sqlite"),
    ("sqlite3", "sqlite"),
    ("github.com/go-sql-driver/mysql", "mysql"),
    ("mysql", "mysql"),
    ("github.com/microsoft/go-mssqldb", "microsoft.sql_server"),
    ("github.com/denisenkom/go-mssqldb", "microsoft.sql_server"),
    ("mssql", "microsoft.sql_server"),
    ("github.com/godror/godror", "oracle.db"),
    ("godror", "oracle.db"),
    ("github.com/ClickHouse/clickhouse-go/v2", "clickhouse"),
    ("clickhouse", "clickhouse"),
];

/// `db.system.name` from the dynamic type of the driver's connection, connector or driver.
pub fn system_of(driver_type: &str) -> &'static str {
    let t = driver_type.trim_start_matches('*');
    // The package path: up to the last '.' after the last '/'.
    let slash = t.rfind('/').map_or(0, |i| i + 1);
    let pkg = t[slash..].find('.').map_or(t, |i| &t[..slash + i]);
    SYSTEMS.iter().find(|(p, _)| *p == pkg).map_or("other_sql", |(_, s)| s)
}

fn finish(raw: Vec<KeyValue>, error: Option<String>) -> Finished {
    finish_with(raw, error, query_text())
}

fn finish_with(mut raw: Vec<KeyValue>, error: Option<String>, mode: QueryText) -> Finished {
    let query = text(take(&mut raw, "q")).unwrap_or_default();
    let mut driver = text(take(&mut raw, "drv")).unwrap_or_default();
    if driver.ends_with("sql.dsnConnector") {
        driver = text(take(&mut raw, "dsn_driver")).unwrap_or(driver);
    }
    let err_type = text(take(&mut raw, "err"));
    let system = system_of(&driver);
    let (op, table) = sql::operation_and_table(&query);
    let mut attributes = vec![KeyValue::new("db.system.name", system)];
    if let Some(op) = &op {
        attributes.push(KeyValue::new("db.operation.name", op.clone()));
    }
    if let Some(t) = &table {
        attributes.push(KeyValue::new("db.collection.name", t.clone()));
    }
    match mode {
        QueryText::Sanitized => attributes.push(KeyValue::new("db.query.text", sql::sanitize(&query))),
        QueryText::Raw => attributes.push(KeyValue::new("db.query.text", query.clone())),
        QueryText::Off => {}
    }
    let mut status = Status::Unset;
    if let Some(mut msg) = error {
        let pg = PG_ERRORS.iter().find(|(_, s, _)| {
            err_type.as_deref().map(|t| t.trim_start_matches('*')).is_some_and(|t| t == *s || t == short_type(s))
        });
        if let Some((_, _, prefix)) = pg {
            if let Some(m) = text(take(&mut raw, &format!("{prefix}.Message"))) {
                msg = m;
            }
            if let Some(code) = text(take(&mut raw, &format!("{prefix}.Code"))) {
                attributes.push(KeyValue::new("db.response.status_code", code));
            }
        }
        status = Status::error(msg);
    }
    let name = match (op, table) {
        (Some(op), Some(t)) => format!("{op} {t}"),
        (Some(op), None) => op,
        _ => system.to_string(),
    };
    Finished { name, attributes, status }
}

/// `pgconn.PgError` for `github.com/jackc/pgx/v5/pgconn.PgError`: how Go's runtime names a type.
fn short_type(full: &str) -> &str {
    full.rsplit('/').next().unwrap_or(full)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instrumentations::tests::attribute;

    #[test]
    fn sql_span_from_captures() {
        let raw =
            vec![KeyValue::new("q", "SELECT id FROM items WHERE name = 'tea'"), KeyValue::new("drv", "*stdlib.Conn")];
        let f = finish(raw, None);
        assert_eq!(f.name, "SELECT items");
        assert_eq!(attribute(&f.attributes, "db.system.name").as_deref(), Some("postgresql"));
        assert_eq!(attribute(&f.attributes, "db.operation.name").as_deref(), Some("SELECT"));
        assert_eq!(attribute(&f.attributes, "db.collection.name").as_deref(), Some("items"));
        assert_eq!(attribute(&f.attributes, "db.query.text").as_deref(), Some("SELECT id FROM items WHERE name = ?"));
        assert!(matches!(f.status, Status::Unset));
    }

    #[test]
    fn postgres_errors_carry_message_and_sqlstate() {
        let raw = vec![
            KeyValue::new("q", "INSERT INTO items (id) VALUES (1)"),
            KeyValue::new("drv", "*stdlib.Conn"),
            KeyValue::new("err", "*github.com/jackc/pgx/v5/pgconn.PgError"),
            KeyValue::new("pgx.Message", "duplicate key value violates unique constraint \"items_pkey\""),
            KeyValue::new("pgx.Code", "23505"),
            KeyValue::new("pq.Message", "garbage"),
        ];
        let f = finish(raw, Some("*pgconn.PgError".into()));
        assert_eq!(attribute(&f.attributes, "db.response.status_code").as_deref(), Some("23505"));
        match f.status {
            Status::Error { description } => assert!(description.contains("duplicate key")),
            other => panic!("{other:?}"),
        }
        // Another error type keeps the generic message, and the PostgreSQL reads are ignored.
        let raw =
            vec![KeyValue::new("q", "SELECT 1"), KeyValue::new("drv", "*sqlite.conn"), KeyValue::new("pgx.Code", "x")];
        let f = finish(raw, Some("conn closed".into()));
        assert_eq!(attribute(&f.attributes, "db.system.name").as_deref(), Some("sqlite"));
        assert_eq!(attribute(&f.attributes, "db.response.status_code"), None);
        assert!(matches!(f.status, Status::Error { description } if description == "conn closed"));
    }

    #[test]
    fn query_text_setting() {
        let q = || vec![KeyValue::new("q", "SELECT 1 FROM t WHERE a = 'secret'")];
        let raw = finish_with(q(), None, QueryText::Raw);
        assert_eq!(attribute(&raw.attributes, "db.query.text").as_deref(), Some("SELECT 1 FROM t WHERE a = 'secret'"));
        let off = finish_with(q(), None, QueryText::Off);
        assert_eq!(attribute(&off.attributes, "db.query.text"), None);
        assert_eq!(off.name, "SELECT t");
        let sanitized = finish_with(q(), None, QueryText::Sanitized);
        assert_eq!(attribute(&sanitized.attributes, "db.query.text").as_deref(), Some("SELECT ? FROM t WHERE a = ?"));
    }

    #[test]
    fn systems_from_driver_types() {
        assert_eq!(system_of("*stdlib.driverConnector"), "postgresql");
        assert_eq!(system_of("*pq.conn"), "postgresql");
        assert_eq!(system_of("*sqlite.conn"), "sqlite");
        assert_eq!(system_of("*mysql.mysqlConn"), "mysql");
        assert_eq!(system_of("0x4a2b00"), "other_sql");
        assert_eq!(system_of("*github.com/jackc/pgx/v5/stdlib.Conn"), "postgresql");
        assert_eq!(system_of("github.com/lib/pq.Driver"), "postgresql");
        assert_eq!(system_of("*modernc.org/sqlite.conn"), "sqlite");
        assert_eq!(system_of("*example.com/stdlib.Conn"), "other_sql");
        assert_eq!(system_of("database/sql.dsnConnector"), "other_sql");
    }
}
