//! Redis client spans (kind CLIENT) for go-redis v9: one per command from
//! `(*baseClient).process` (every command of `Client`, after the user's hooks, retries
//! included; `processStartingAt` from v9.23, where `process` only forwards to it and is
//! inlined), one per pipeline from `(*baseClient).processPipeline` and per transaction
//! pipeline from `processTxPipeline`.
//!
//! The command is an interface (`Cmder`); every command type embeds `baseCmd` first, whose
//! `args[0]` is the command name as a string inside an `interface{}`. The spec language cannot
//! look through an interface, so [`extend`] reads it: the data word of `cmd` (RSI) ->
//! `baseCmd.args` -> `args[0]`'s data pointer -> the string. `db.query.text` is the command with
//! every argument replaced by `?` (values are never read). `redis.Nil` (a miss) is not an error;
//! any other error makes the span ERROR with the server's message.
use gotel_shared::{Root, ValueKind, REG_RSI};
use opentelemetry::{
    trace::{SpanKind, Status},
    KeyValue,
};

use super::{host_port, int, take, text, Arg, FieldNeed, Finished, GoTy, Instrumentation, Read, SpanProbe};
use crate::{
    attributes::{AttributePlan, Decode, Limits},
    dwarf::{DwarfInfo, FunctionInfo},
};

const MODULE: &str = "github.com/redis/go-redis/v9";
/// Where commands go from v9.23 (`process` is then inlined into its callers).
pub const PROCESS_STARTING_AT: &str = "github.com/redis/go-redis/v9.(*baseClient).processStartingAt";
/// The message of `redis.Nil`.
const NIL: &str = "redis: nil";

const CLIENT_SIG: Arg = Arg::param("c", GoTy::Ptr("github.com/redis/go-redis/v9.baseClient"));

pub static REDIS: Instrumentation = Instrumentation {
    name: "redis",
    selectable: true,
    doc: "go-redis v9 client spans (kind CLIENT) named after the command (`GET`), or `PIPELINE`/`MULTI`; \
          ERROR with the server's message, not for a `redis.Nil` miss",
    attributes: &[
        "db.system.name",
        "db.operation.name",
        "db.query.text",
        "db.operation.batch.size",
        "server.address",
        "server.port",
    ],
    fields: &[
        FieldNeed::module(
            MODULE,
            "github.com/redis/go-redis/v9.baseClient",
            "opt",
            GoTy::Ptr("github.com/redis/go-redis/v9.Options"),
        ),
        FieldNeed::module(MODULE, "github.com/redis/go-redis/v9.Options", "Addr", GoTy::String),
        FieldNeed::module(MODULE, "github.com/redis/go-redis/v9.baseCmd", "args", GoTy::Bytes),
    ],
    span: Some(command_probe(
        "github.com/redis/go-redis/v9.(*baseClient).process",
        "github.com/redis/go-redis/v9.(*baseClient).process(addr=c.opt.Addr, err=ret0)",
    )),
    more_spans: &[
        // From v9.23 `process` only forwards here and is inlined away: same receiver, context
        // and command registers, so the same captures.
        command_probe(
            PROCESS_STARTING_AT,
            "github.com/redis/go-redis/v9.(*baseClient).processStartingAt(addr=c.opt.Addr, err=ret0)",
        ),
        SpanProbe {
            symbol: "github.com/redis/go-redis/v9.(*baseClient).processPipeline",
            kind: SpanKind::Client,
            spec: "github.com/redis/go-redis/v9.(*baseClient).processPipeline(addr=c.opt.Addr, n=len(cmds), err=ret0)",
            signature: PIPELINE_SIG,
            save_regs: [gotel_shared::NO_REG; 2],
            extend: None,
            finish: |raw, err| finish_batch("PIPELINE", raw, err),
        },
        SpanProbe {
            symbol: "github.com/redis/go-redis/v9.(*baseClient).processTxPipeline",
            kind: SpanKind::Client,
            spec:
                "github.com/redis/go-redis/v9.(*baseClient).processTxPipeline(addr=c.opt.Addr, n=len(cmds), err=ret0)",
            signature: PIPELINE_SIG,
            save_regs: [gotel_shared::NO_REG; 2],
            extend: None,
            finish: |raw, err| finish_batch("MULTI", raw, err),
        },
    ],
    ..Instrumentation::BASE
};

/// A command's span probe on `symbol` (`c`, `ctx`, `cmd` first; an `error` result).
const fn command_probe(symbol: &'static str, spec: &'static str) -> SpanProbe {
    SpanProbe {
        symbol,
        kind: SpanKind::Client,
        spec,
        signature: COMMAND_SIG,
        save_regs: [gotel_shared::NO_REG; 2],
        extend: Some(extend),
        finish: finish_command,
    }
}

const COMMAND_SIG: &[Arg] = &[
    CLIENT_SIG,
    Arg::param("ctx", GoTy::Iface("context.Context")),
    Arg::param("cmd", GoTy::Iface("github.com/redis/go-redis/v9.Cmder")),
    Arg::result("~r0", GoTy::Iface("error")),
];

const PIPELINE_SIG: &[Arg] = &[
    CLIENT_SIG,
    Arg::param("ctx", GoTy::Iface("context.Context")),
    Arg::param("cmds", GoTy::Bytes),
    Arg::result("~r0", GoTy::Iface("error")),
];

/// At entry, through `cmd`'s data word (RSI): the command name (`args[0]`) and `len(args)`.
fn extend(plan: &mut AttributePlan, dwarf: &DwarfInfo, _info: &FunctionInfo, limits: &Limits) -> Result<(), String> {
    let (args, _) = dwarf
        .types
        .struct_field("github.com/redis/go-redis/v9.baseCmd", "args")
        .ok_or("no layout for go-redis baseCmd.args")?;
    let read = |key, kind, hops, decode| Read {
        key,
        root: Root::Registers,
        reg: REG_RSI,
        hops,
        kind,
        decode,
        at_return: false,
    };
    let args = args as i32;
    // cmd -> &args (load the array pointer) -> &args[0].data (load it) -> the string header.
    let (name, count) = ([args, 8, 0], [args + 8]);
    read("cmd", ValueKind::String, &name, Decode::String).push(plan, limits);
    read("nargs", ValueKind::Int, &count, Decode::Int { size: 8 }).push(plan, limits);
    Ok(())
}

/// Common attributes and the status: a `redis.Nil` miss is not an error.
fn common(raw: &mut Vec<KeyValue>, error: Option<String>) -> (Vec<KeyValue>, Status) {
    let mut attributes = vec![KeyValue::new("db.system.name", "redis")];
    if let Some(addr) = text(take(raw, "addr")) {
        let (h, p) = host_port(&addr);
        attributes.push(KeyValue::new("server.address", h));
        if let Some(p) = p {
            attributes.push(KeyValue::new("server.port", p));
        }
    }
    let _ = take(raw, "err");
    let status = match error {
        Some(m) if m != NIL => Status::error(m),
        _ => Status::Unset,
    };
    (attributes, status)
}

fn finish_command(mut raw: Vec<KeyValue>, error: Option<String>) -> Finished {
    let name = text(take(&mut raw, "cmd")).map(|c| c.to_ascii_uppercase());
    let nargs = int(take(&mut raw, "nargs")).unwrap_or(1).clamp(1, 64);
    let (mut attributes, status) = common(&mut raw, error);
    let name = name.unwrap_or_else(|| "redis".into());
    attributes.push(KeyValue::new("db.operation.name", name.clone()));
    let mut q = name.clone();
    for _ in 1..nargs {
        q.push_str(" ?");
    }
    attributes.push(KeyValue::new("db.query.text", q));
    Finished { name, attributes, status }
}

fn finish_batch(op: &str, mut raw: Vec<KeyValue>, error: Option<String>) -> Finished {
    let n = int(take(&mut raw, "n"));
    let (mut attributes, status) = common(&mut raw, error);
    attributes.push(KeyValue::new("db.operation.name", op.to_string()));
    if let Some(n) = n {
        attributes.push(KeyValue::new("db.operation.batch.size", n));
    }
    Finished { name: op.into(), attributes, status }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instrumentations::tests::attribute;

    #[test]
    fn command_spans_omit_values_and_a_miss_is_not_an_error() {
        let raw =
            vec![KeyValue::new("cmd", "set"), KeyValue::new("nargs", 3i64), KeyValue::new("addr", "127.0.0.1:6379")];
        let f = finish_command(raw, None);
        assert_eq!(f.name, "SET");
        assert_eq!(attribute(&f.attributes, "db.query.text").as_deref(), Some("SET ? ?"));
        assert_eq!(attribute(&f.attributes, "server.address").as_deref(), Some("127.0.0.1"));
        assert_eq!(attribute(&f.attributes, "server.port").as_deref(), Some("6379"));
        let miss = finish_command(vec![KeyValue::new("cmd", "get"), KeyValue::new("nargs", 2i64)], Some(NIL.into()));
        assert!(matches!(miss.status, Status::Unset));
        let wrong = finish_command(vec![KeyValue::new("cmd", "lpush")], Some("WRONGTYPE Operation".into()));
        assert!(matches!(wrong.status, Status::Error { .. }));
        let p = finish_batch("PIPELINE", vec![KeyValue::new("n", 2i64)], None);
        assert_eq!(attribute(&p.attributes, "db.operation.batch.size").as_deref(), Some("2"));
    }
}
