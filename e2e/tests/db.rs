//! Database spans end to end, as root against the real kernel and real servers: PostgreSQL and
//! Redis from Debian's packages, started by the test on loopback (`gotel_e2e::servers`), and
//! `e2e/goapps/dbsvc`, which runs a known sequence per HTTP handler: database/sql with pgx v5
//! stdlib, lib/pq and modernc SQLite (queries, execs, a transaction, a prepared statement, a
//! syntax error, a unique violation, a connection the server closes) and go-redis v9 commands,
//! a pipeline, a `redis.Nil` miss and a WRONGTYPE error.
//!
//! Checks, per query or command: exactly one CLIENT span, its name, `db.*` attributes
//! (sanitized text), status and message, and parents: under the user function that made the
//! calls, itself under the HTTP server span, in one trace. With DWARF and stripped
//! (`-ldflags=-s -w`: offsets from the layout table), on the Go releases listed below.
use std::path::Path;
use std::time::Duration;

use gotel_e2e::servers::{Postgres, Redis};
use gotel_e2e::{
    build_go, go_version_bin, gotel_command, private_copy, require_environment, wait_until, Export, FlatSpan, Proc,
    Sink, Variant,
};

const SINK: &str = env!("CARGO_BIN_EXE_otlp-sink");
const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const ERROR: i32 = 2;

/// One expected database span: name, `db.query.text`, error message part (None: not ERROR).
struct Want {
    name: &'static str,
    text: &'static str,
    error: Option<&'static str>,
    /// `db.response.status_code` (SQLSTATE), when the driver gives it.
    code: Option<&'static str>,
}

const fn ok(name: &'static str, text: &'static str) -> Want {
    Want { name, text, error: None, code: None }
}

const fn err(name: &'static str, text: &'static str, error: &'static str, code: Option<&'static str>) -> Want {
    Want { name, text, error: Some(error), code }
}

/// dbsvc's `sqlSequence`, with PostgreSQL's placeholders (`$`) or SQLite's (`?`).
fn sql_sequence(pg: bool) -> Vec<Want> {
    let (insert, select, update) = if pg {
        (
            "INSERT INTO items (id, name) VALUES ($1, $2)",
            "SELECT name FROM items WHERE id = $1",
            "UPDATE items SET name = $1 WHERE id = $2",
        )
    } else {
        (
            "INSERT INTO items (id, name) VALUES (?1, ?2)",
            "SELECT name FROM items WHERE id = ?1",
            "UPDATE items SET name = ?1 WHERE id = ?2",
        )
    };
    vec![
        ok("DROP items", "DROP TABLE IF EXISTS items"),
        ok("CREATE items", "CREATE TABLE items (id integer primary key, name text)"),
        ok("INSERT items", insert),
        ok("SELECT items", select),
        ok("SELECT items", "SELECT id FROM items WHERE name = ? AND id > ?"),
        ok("UPDATE items", update),
        ok("SELECT items", "SELECT count(*) FROM items"),
        ok("SELECT items", select),
        ok("SELECT items", select),
        err("SELEC", "SELEC ?", "syntax error", pg.then_some("42601")),
        err(
            "INSERT items",
            "INSERT INTO items (id, name) VALUES (?, ?)",
            if pg { "duplicate key" } else { "UNIQUE constraint failed" },
            pg.then_some("23505"),
        ),
    ]
}

fn redis_sequence() -> Vec<Want> {
    vec![
        ok("SET", "SET ? ?"),
        ok("GET", "GET ?"),
        ok("GET", "GET ?"),
        ok("INCR", "INCR ?"),
        Want { name: "PIPELINE", text: "", error: None, code: None },
        err("LPUSH", "LPUSH ? ?", "WRONGTYPE", None),
    ]
}

fn get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply
}

/// The children of `parent`, in start order.
fn children<'a>(spans: &'a [FlatSpan], parent: &FlatSpan) -> Vec<&'a FlatSpan> {
    let mut c: Vec<&FlatSpan> = spans.iter().filter(|s| s.parent_span_id == parent.span_id).collect();
    c.sort_by_key(|s| s.start_unix_nano);
    c
}

/// The span of user function `function` under the server span of `GET route`.
fn function_span<'a>(spans: &'a [FlatSpan], route: &str, function: &str) -> &'a FlatSpan {
    // Named `GET /pgx` from Go 1.23 (ServeMux's pattern), `GET` before.
    let server =
        spans.iter().find(|s| s.kind == SERVER && s.attr_str("url.path") == Some(route)).unwrap_or_else(|| {
            panic!("no server span for {route}; spans: {:?}", spans.iter().map(|s| &s.name).collect::<Vec<_>>())
        });
    let f = children(spans, server).into_iter().find(|s| s.name == function);
    let f = f.unwrap_or_else(|| panic!("no {function} under GET {route}"));
    assert_eq!(f.trace_id, server.trace_id);
    f
}

fn check(spans: &[&FlatSpan], want: &[Want], system: &str, what: &str) {
    let got: Vec<String> =
        spans.iter().map(|s| format!("{} [{}]", s.name, s.attr_str("db.query.text").unwrap_or(""))).collect();
    assert_eq!(spans.len(), want.len(), "{what}: spans {got:#?}");
    for (s, w) in spans.iter().zip(want) {
        let at = format!("{what}: {} ({:?})", s.name, s.attributes);
        assert_eq!(s.kind, CLIENT, "{at}");
        assert_eq!(s.name, w.name, "{at}");
        assert_eq!(s.attr_str("db.system.name"), Some(system), "{at}");
        if !w.text.is_empty() {
            assert_eq!(s.attr_str("db.query.text"), Some(w.text), "{at}");
        }
        let op = w.name.split(' ').next().unwrap();
        assert_eq!(s.attr_str("db.operation.name"), Some(op), "{at}");
        if let Some(table) = w.name.split(' ').nth(1) {
            assert_eq!(s.attr_str("db.collection.name"), Some(table), "{at}");
        }
        match w.error {
            Some(m) => {
                assert_eq!(s.status_code, ERROR, "{at}");
                assert!(s.status_message.contains(m), "{at}: message {:?} lacks {m:?}", s.status_message);
            }
            None => assert_ne!(s.status_code, ERROR, "{at}: {}", s.status_message),
        }
        assert_eq!(s.attr_str("db.response.status_code"), w.code, "{at}");
    }
}

fn run(go: &Path, variant: Variant) {
    require_environment().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start().unwrap();
    let redis = Redis::start().unwrap();
    let bin = private_copy(&build_go(go, "dbsvc", variant).unwrap(), dir.path()).unwrap();
    let sink = Sink::start(Path::new(SINK), dir.path()).unwrap();
    let portfile = dir.path().join("addr");
    let mut cmd =
        gotel_command(&Export::HttpProtobuf(sink.http_endpoint()), "main.sqlSequence;main.pgClosed;main.redisSequence");
    cmd.arg("--").arg(&bin).args(["-portfile", portfile.to_str().unwrap(), "-pg", &pg.dsn(), "-redis", &redis.addr()]);
    cmd.arg("-sqlite").arg(dir.path().join("lite.db"));
    let mut gotel = Proc::spawn("gotel dbsvc", cmd).unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || portfile.exists()),
        "dbsvc never listened: {}",
        gotel.stderr_string()
    );
    std::thread::sleep(Duration::from_millis(100));
    let addr = std::fs::read_to_string(&portfile).unwrap();
    for route in ["/pgx", "/pq", "/sqlite", "/redis"] {
        let reply = get(&addr, route);
        assert!(reply.starts_with("HTTP/1.1 200"), "{route}: {reply}");
    }
    // Server and function spans, then 11 + 2 (pgx), 11 + 1 (pq), 11 (sqlite), 6 and the
    // connection's HELLO (redis).
    let _ = sink.wait_spans(16 + 15 + 13 + 9, Duration::from_secs(30));
    gotel.signal(libc::SIGTERM);
    let st = gotel.wait_timeout(Duration::from_secs(30)).unwrap();
    let stderr = gotel.stderr_string();
    // Launch mode: gotel exits with the program's status (killed by its SIGTERM: 143).
    assert!(st.code().is_some(), "gotel: {st}; stderr:\n{stderr}");
    assert!(!stderr.contains("spans are off"), "{stderr}");
    let spans = sink.wait_quiet(Duration::from_millis(500), Duration::from_secs(10)).unwrap();

    for (route, system) in [("/pgx", "postgresql"), ("/pq", "postgresql"), ("/sqlite", "sqlite")] {
        let seq = function_span(&spans, route, "main.sqlSequence");
        check(&children(&spans, seq), &sql_sequence(system == "postgresql"), system, route);
    }
    // The server ends the session: the terminate fails with the connection (pq: "bad
    // connection", and database/sql then refuses the next query before the driver); pgx sees
    // the server's error, then the closed connection on the next query.
    let closed = |route| children(&spans, function_span(&spans, route, "main.pgClosed"));
    let pgx = closed("/pgx");
    assert_eq!(pgx.len(), 2, "{pgx:#?}");
    assert!(pgx.iter().all(|s| s.status_code == ERROR && s.attr_str("db.system.name") == Some("postgresql")));
    assert_eq!(pgx[0].attr_str("db.query.text"), Some("SELECT pg_terminate_backend(pg_backend_pid())"));
    assert_eq!(pgx[1].attr_str("db.query.text"), Some("SELECT ?"));
    let pq = closed("/pq");
    assert_eq!(pq.len(), 1, "{pq:#?}");
    assert!(pq[0].status_code == ERROR && pq[0].status_message.contains("bad connection"), "{:?}", pq[0]);

    let seq = function_span(&spans, "/redis", "main.redisSequence");
    let cmds = children(&spans, seq);
    check(&cmds, &redis_sequence(), "redis", "/redis");
    for c in &cmds {
        assert_eq!(c.attr_str("server.address"), Some("127.0.0.1"), "{c:?}");
        assert_eq!(c.attr_i64("server.port"), Some(redis.port as i64), "{c:?}");
    }
    assert_eq!(cmds[4].attr_i64("db.operation.batch.size"), Some(2));
}

#[test]
fn db_spans_go_default() {
    gotel_e2e::require!(Root, Go, Databases);
    run(&gotel_e2e::go_bin(), Variant::Normal);
}

#[test]
fn db_spans_go_default_stripped() {
    gotel_e2e::require!(Root, Go, Databases);
    run(&gotel_e2e::go_bin(), Variant::Stripped);
}

#[test]
fn db_spans_go_1_27_stripped() {
    gotel_e2e::require!(Root, GoVersion("1.27"), Databases);
    run(&go_version_bin("1.27").unwrap(), Variant::Stripped);
}

#[test]
fn db_spans_go_1_22() {
    gotel_e2e::require!(Root, GoVersion("1.22"), Databases);
    run(&go_version_bin("1.22").unwrap(), Variant::Normal);
}
