//! The checks of an engine run's spans: counts, fields, parents, children, traces.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{Expectation, FlatSpan};

/// The line of the declaration of Go function `name` (`main.f`, `main.(*T).M`) in `src`.
pub fn decl_line(src: &str, name: &str) -> Option<i64> {
    let short = name.rsplit_once('.').map(|(_, s)| s)?;
    let recv = name.strip_prefix("main.").and_then(|r| r.strip_prefix("(*")).and_then(|r| r.split_once(')'));
    src.lines()
        .position(|l| match recv {
            Some((ty, _)) => l.starts_with("func (") && l.contains(&format!(" *{ty}) {short}(")),
            None => l.starts_with(&format!("func {short}(")),
        })
        .map(|i| i as i64 + 1)
}

/// How the run was made, for the checks.
pub struct RunInfo<'a> {
    /// Names the run in messages (e.g. the build variant).
    pub label: String,
    pub expect: &'a Expectation,
    /// Spans expected per function.
    pub counts: BTreeMap<String, i64>,
    /// The traced program's pid, when known.
    pub pid: Option<u32>,
    /// `grpc`, `http` or `console`.
    pub transport: &'a str,
    /// Wall clock before the program started and after it ended.
    pub t0: SystemTime,
    pub t1: SystemTime,
    /// Expected `service.name` and `process.executable.name`.
    pub service: &'a str,
    pub executable: &'a str,
    /// The Go source file of the traced functions (for `code.file.path` / `code.line.number`).
    pub source_suffix: &'a str,
    pub source: &'a str,
    /// `code.line.number` may exceed the declaration's line by this much. 0 for Go >= 1.20,
    /// whose binaries record the declaration line; before that only the line of the entry
    /// instruction is known, which in a function without a frame is its first statement's.
    pub line_slack: i64,
}

pub fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// Every check on the spans of one engine run; returns the problems found (at most ~60).
pub fn problems(spans: &[FlatSpan], info: &RunInfo) -> Vec<String> {
    let mut problems: Vec<String> = Vec::new();
    macro_rules! problem {
        ($($t:tt)*) => { if problems.len() < 60 { problems.push(format!($($t)*)); } };
    }

    // 1. Exactly one span per call that returned.
    // Calls that did not return (unwound by panic/Goexit, or cut by the exit) are exported as
    // error spans marked `gotel.unwound`, so that nothing points at a missing parent.
    let is_unwound = |s: &FlatSpan| s.attributes.get("gotel.unwound").and_then(|v| v.as_bool()) == Some(true);
    let mut got: BTreeMap<String, i64> = BTreeMap::new();
    let mut got_unwound: BTreeMap<String, i64> = BTreeMap::new();
    for s in spans {
        if is_unwound(s) {
            *got_unwound.entry(s.name.clone()).or_default() += 1;
            if s.status_code != 2 {
                problem!("{} {}: unwound call without ERROR status", s.name, s.span_id);
            }
        } else {
            *got.entry(s.name.clone()).or_default() += 1;
        }
    }
    for (name, want) in &info.counts {
        let have = got.get(name).copied().unwrap_or(0);
        if have != *want {
            let unwound = info.expect.unwound.get(name).copied().unwrap_or(0);
            problem!(
                "{name}: {have} spans, want {want} (calls that returned; {unwound} more were unwound by panic/Goexit)"
            );
        }
    }
    for (name, have) in &got_unwound {
        let want = info.expect.unwound.get(name).copied().unwrap_or(0);
        if *have > want {
            problem!("{name}: {have} unwound spans, but only {want} calls were unwound");
        }
    }
    for (name, have) in &got {
        if !info.counts.contains_key(name) {
            problem!("unexpected span name {name:?} ({have} spans)");
        }
    }

    // 2. Per-span fields.
    let mut ids = HashSet::new();
    let lo = nanos(info.t0) - 1_000_000_000;
    let hi = nanos(info.t1) + 1_000_000_000;
    for s in spans {
        if !ids.insert(s.span_id.clone()) {
            problem!("duplicate span id {} ({})", s.span_id, s.name);
        }
        if s.trace_id.len() != 32 || s.trace_id == "0".repeat(32) {
            problem!("{}: bad trace id {:?}", s.name, s.trace_id);
        }
        if s.span_id.len() != 16 || s.span_id == "0".repeat(16) {
            problem!("{}: bad span id {:?}", s.name, s.span_id);
        }
        if s.transport != info.transport {
            problem!("{}: came by {}, want {}", s.name, s.transport, info.transport);
        }
        if s.kind != 1 {
            problem!("{}: kind {}, want 1 (INTERNAL)", s.name, s.kind);
        }
        if s.duration_ns() <= 0 {
            problem!("{} {}: duration {} ns", s.name, s.span_id, s.duration_ns());
        }
        if s.start_unix_nano < lo || s.end_unix_nano > hi {
            problem!(
                "{} {}: [{}, {}] outside the run [{lo}, {hi}] (wall clock conversion?)",
                s.name,
                s.span_id,
                s.start_unix_nano,
                s.end_unix_nano
            );
        }
        if s.attr_str("code.function.name") != Some(s.name.as_str()) {
            problem!("{}: code.function.name = {:?}", s.name, s.attributes.get("code.function.name"));
        }
        match s.attr_str("code.file.path") {
            Some(p) if p.ends_with(info.source_suffix) => {}
            other => problem!("{}: code.file.path = {other:?}", s.name),
        }
        let want_line = decl_line(info.source, &s.name);
        let line_ok = match (s.attr_i64("code.line.number"), want_line) {
            (Some(have), Some(want)) => have >= want && have <= want + info.line_slack,
            _ => false,
        };
        if !line_ok {
            problem!("{}: code.line.number = {:?}, want {want_line:?}", s.name, s.attributes.get("code.line.number"));
        }
        if !is_unwound(s) && s.attr_i64("thread.id").unwrap_or(0) <= 0 {
            problem!("{}: thread.id = {:?}", s.name, s.attributes.get("thread.id"));
        }
        // Resource.
        if s.res_str("service.name") != Some(info.service) {
            problem!("{}: resource service.name = {:?}", s.name, s.resource.get("service.name"));
        }
        if s.res_str("process.runtime.name") != Some("go") {
            problem!("{}: resource process.runtime.name = {:?}", s.name, s.resource.get("process.runtime.name"));
        }
        if !s.res_str("process.runtime.version").is_some_and(|v| v.starts_with("go1.") || v.starts_with("1.")) {
            problem!("{}: resource process.runtime.version = {:?}", s.name, s.resource.get("process.runtime.version"));
        }
        if s.res_str("process.executable.name") != Some(info.executable) {
            problem!("{}: resource process.executable.name = {:?}", s.name, s.resource.get("process.executable.name"));
        }
        match (info.pid, s.res_i64("process.pid")) {
            (Some(p), Some(q)) if p as i64 == q => {}
            (None, Some(q)) if q > 0 => {}
            (want, have) => problem!("{}: resource process.pid = {have:?}, want {want:?}", s.name),
        }
        if problems.len() >= 60 {
            break;
        }
    }

    // 3. Parents: the right function, the same trace, and the child inside the parent's time.
    let by_id: HashMap<&str, &FlatSpan> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let mut children: HashMap<&str, BTreeMap<&str, usize>> = HashMap::new();
    for s in spans {
        let Some(allowed) = info.expect.parents.get(&s.name) else { continue };
        if s.parent_span_id.is_empty() {
            if !allowed.iter().any(|a| a.is_empty()) {
                problem!("{} {}: is a root span, want a parent in {allowed:?}", s.name, s.span_id);
            }
            continue;
        }
        let Some(p) = by_id.get(s.parent_span_id.as_str()) else {
            problem!(
                "{} {}: parent {} is not among the spans received (want one of {allowed:?})",
                s.name,
                s.span_id,
                s.parent_span_id
            );
            continue;
        };
        *children.entry(p.span_id.as_str()).or_default().entry(s.name.as_str()).or_default() += 1;
        // A call made while a panic unwinds (a deferred function) runs inside the frames being
        // unwound: its parent is one of those unwound calls.
        if !allowed.contains(&p.name) && !is_unwound(p) {
            problem!("{} {}: parent is {} {}, want one of {allowed:?}", s.name, s.span_id, p.name, p.span_id);
        }
        if p.trace_id != s.trace_id {
            problem!(
                "{} {}: trace {} differs from its parent {}'s {}",
                s.name,
                s.span_id,
                s.trace_id,
                p.name,
                p.trace_id
            );
        }
        if s.start_unix_nano < p.start_unix_nano || s.end_unix_nano > p.end_unix_nano {
            problem!(
                "{} [{}, {}] is not inside its parent {} [{}, {}]",
                s.name,
                s.start_unix_nano,
                s.end_unix_nano,
                p.name,
                p.start_unix_nano,
                p.end_unix_nano
            );
        }
    }

    // 4. Children per parent (catches a call paired with another goroutine's span).
    for s in spans {
        let Some(rules) = info.expect.children.get(&s.name) else { continue };
        if is_unwound(s) {
            continue;
        }
        let empty = BTreeMap::new();
        let have = children.get(s.span_id.as_str()).unwrap_or(&empty);
        for (child, [min, max]) in rules {
            let n = have.get(child.as_str()).copied().unwrap_or(0);
            if n < *min || n > *max {
                problem!("{} {}: {n} {child} children, want {min}..={max}", s.name, s.span_id);
            }
        }
        for (child, n) in have {
            if !rules.contains_key(*child) {
                problem!("{} {}: {n} unexpected {child} children", s.name, s.span_id);
            }
        }
    }

    // 5. A root call starts its own trace (main.child may inherit fanout's trace).
    let mut root_traces: HashMap<&str, &str> = HashMap::new();
    for s in spans.iter().filter(|s| s.parent_span_id.is_empty() && s.name != "main.child") {
        if let Some(other) = root_traces.insert(s.trace_id.as_str(), s.name.as_str()) {
            problem!("root spans {} and {other} share trace {}", s.name, s.trace_id);
        }
    }

    problems
}

/// Panics with every problem [`problems`] finds.
pub fn check_spans(spans: &[FlatSpan], info: &RunInfo) {
    let problems = problems(spans, info);
    if !problems.is_empty() {
        panic!(
            "{}: {} spans received, {} problems:\n  {}",
            info.label,
            spans.len(),
            if problems.len() >= 60 { "60+".to_string() } else { problems.len().to_string() },
            problems.join("\n  ")
        );
    }
}

/// Checks that hold for any run, whatever was traced: unique ids, positive durations inside the
/// run, every parent among the spans received, in the same trace, and started before the child.
/// (A child on another goroutine may end after its parent, so only starts are compared.)
pub fn structural_problems(spans: &[FlatSpan], t0: SystemTime, t1: SystemTime) -> Vec<String> {
    let mut problems = Vec::new();
    let lo = nanos(t0) - 1_000_000_000;
    let hi = nanos(t1) + 1_000_000_000;
    let by_id: HashMap<&str, &FlatSpan> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    if by_id.len() != spans.len() {
        problems.push(format!("{} duplicate span ids", spans.len() - by_id.len()));
    }
    for s in spans {
        if problems.len() >= 60 {
            break;
        }
        if s.duration_ns() <= 0 || s.start_unix_nano < lo || s.end_unix_nano > hi {
            problems.push(format!(
                "{} {}: [{}, {}] (run [{lo}, {hi}])",
                s.name, s.span_id, s.start_unix_nano, s.end_unix_nano
            ));
        }
        if s.parent_span_id.is_empty() {
            continue;
        }
        match by_id.get(s.parent_span_id.as_str()) {
            None => problems
                .push(format!("{} {}: parent {} is not among the spans received", s.name, s.span_id, s.parent_span_id)),
            Some(p) => {
                if p.trace_id != s.trace_id {
                    problems.push(format!("{} {}: trace differs from its parent {}'s", s.name, s.span_id, p.name));
                }
                if s.start_unix_nano < p.start_unix_nano {
                    problems
                        .push(format!("{} {}: starts before its parent {} {}", s.name, s.span_id, p.name, p.span_id));
                }
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    const SRC: &str = "package main\n\nfunc top() {\n}\n\nfunc middle() {\n}\n\nfunc (s *Store) Get(k int) int {\n}\n";

    fn expect() -> Expectation {
        serde_json::from_value(json!({
            "counts": {"main.top": 1, "main.middle": 2, "main.(*Store).Get": 1},
            "startup": {},
            "unwound": {"main.middle": 1},
            "parents": {"main.top": [""], "main.middle": ["main.top"], "main.(*Store).Get": ["main.middle"]},
            "children": {"main.top": {"main.middle": [2, 2]}, "main.middle": {"main.(*Store).Get": [0, 1]}},
            "probes": ["main.top", "main.middle", "main.(*Store).Get"]
        }))
        .unwrap()
    }

    fn span(name: &str, id: &str, parent: &str, start: u64, end: u64, base: u64) -> FlatSpan {
        let line = decl_line(SRC, name).unwrap();
        FlatSpan {
            transport: "grpc".into(),
            trace_id: "0123456789abcdef0123456789abcdef".into(),
            span_id: id.into(),
            parent_span_id: parent.into(),
            name: name.into(),
            kind: 1,
            start_unix_nano: base + start,
            end_unix_nano: base + end,
            attributes: [
                ("code.function.name".to_string(), json!(name)),
                ("code.file.path".to_string(), json!("/src/goapps/x/main.go")),
                ("code.line.number".to_string(), json!(line)),
                ("thread.id".to_string(), json!(77)),
            ]
            .into_iter()
            .collect(),
            status_code: 0,
            status_message: String::new(),
            resource: [
                ("service.name".to_string(), json!("svc")),
                ("process.pid".to_string(), json!(42)),
                ("process.executable.name".to_string(), json!("x")),
                ("process.runtime.name".to_string(), json!("go")),
                ("process.runtime.version".to_string(), json!("go1.26.0")),
            ]
            .into_iter()
            .collect(),
            scope_name: "gotel".into(),
            events: vec![],
        }
    }

    fn run(spans: &[FlatSpan]) -> Vec<String> {
        let e = expect();
        let t0 = SystemTime::now();
        let info = RunInfo {
            label: "unit".into(),
            expect: &e,
            counts: e.counts.clone(),
            pid: Some(42),
            transport: "grpc",
            t0,
            t1: t0 + Duration::from_secs(1),
            service: "svc",
            executable: "x",
            source_suffix: "goapps/x/main.go",
            source: SRC,
            line_slack: 0,
        };
        problems(spans, &info)
    }

    fn good() -> Vec<FlatSpan> {
        let base = nanos(SystemTime::now());
        vec![
            span("main.top", "1000000000000001", "", 100, 1000, base),
            span("main.middle", "1000000000000002", "1000000000000001", 200, 400, base),
            span("main.(*Store).Get", "1000000000000003", "1000000000000002", 250, 300, base),
            span("main.middle", "1000000000000004", "1000000000000001", 500, 900, base),
        ]
    }

    #[test]
    fn decl_lines() {
        assert_eq!(decl_line(SRC, "main.top"), Some(3));
        assert_eq!(decl_line(SRC, "main.middle"), Some(6));
        assert_eq!(decl_line(SRC, "main.(*Store).Get"), Some(9));
        assert_eq!(decl_line(SRC, "main.nothere"), None);
    }

    #[test]
    fn a_right_run_passes() {
        assert_eq!(run(&good()), Vec::<String>::new());
    }

    fn assert_finds(spans: Vec<FlatSpan>, needle: &str) {
        let p = run(&spans);
        assert!(p.iter().any(|p| p.contains(needle)), "no problem with {needle:?} in {p:#?}");
    }

    #[test]
    fn wrong_runs_fail() {
        // A missing span, a duplicate, an extra name.
        let mut s = good();
        s.pop();
        assert_finds(s, "main.middle: 1 spans, want 2");
        let mut s = good();
        let mut d = s[2].clone();
        d.span_id = "1000000000000009".into();
        s.push(d);
        assert_finds(s, "main.(*Store).Get: 2 spans, want 1");
        let mut s = good();
        s[2].name = "main.other".into();
        assert_finds(s, "unexpected span name");
        // Mis-paired: the Get under the other middle (outside its time), or under top.
        let mut s = good();
        s[2].parent_span_id = "1000000000000004".into();
        assert_finds(s, "is not inside its parent");
        let mut s = good();
        s[2].parent_span_id = "1000000000000001".into();
        assert_finds(s, "parent is main.top");
        let mut s = good();
        s[2].parent_span_id = "".into();
        assert_finds(s, "is a root span");
        let mut s = good();
        s[3].parent_span_id = "100000000000000f".into();
        assert_finds(s, "is not among the spans received");
        // Child counts.
        let mut s = good();
        s[3].parent_span_id = "1000000000000002".into();
        s[3].start_unix_nano = s[1].start_unix_nano + 1;
        s[3].end_unix_nano = s[1].start_unix_nano + 2;
        assert_finds(s, "1 main.middle children, want 2..=2");
        // Trace, duration, fields, resource.
        let mut s = good();
        s[1].trace_id = "ffffffffffffffffffffffffffffffff".into();
        assert_finds(s, "differs from its parent");
        let mut s = good();
        s[0].end_unix_nano = s[0].start_unix_nano;
        assert_finds(s, "duration 0 ns");
        let mut s = good();
        s[0].start_unix_nano -= 3_000_000_000;
        assert_finds(s, "outside the run");
        let mut s = good();
        s[0].kind = 2;
        assert_finds(s, "kind 2");
        let mut s = good();
        s[0].attributes.insert("code.line.number".into(), json!(4));
        assert_finds(s, "code.line.number");
        let mut s = good();
        s[0].attributes.remove("thread.id");
        assert_finds(s, "thread.id");
        let mut s = good();
        s[0].resource.insert("process.pid".into(), json!(43));
        assert_finds(s, "process.pid");
        let mut s = good();
        s[0].transport = "http".into();
        assert_finds(s, "came by http");
        let mut s = good();
        s[3].span_id = s[1].span_id.clone();
        assert_finds(s, "duplicate span id");
        // Two roots in one trace.
        let mut s = good();
        let mut t = s[0].clone();
        t.span_id = "2000000000000001".into();
        s.push(t);
        assert_finds(s, "share trace");
    }
}
