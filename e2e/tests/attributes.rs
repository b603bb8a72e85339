//! Function arguments and results as span attributes, end to end, as root against the real
//! kernel: `e2e/goapps/attrs` calls its functions with fixed values, gotel captures them through
//! `GOTEL_PROBES`, and every attribute must equal what the program passed or returned. Covers
//! every value kind (ints of each size, unsigned, bool, uintptr, strings, []byte, len() of
//! string/slice/map, named types, pointers followed through struct fields, errors with their
//! message and status), methods with pointer and value receivers, more arguments than
//! registers, structs decomposed into registers, results, with DWARF on three Go versions and
//! without DWARF (`-ldflags=-w`, `argN:type`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use gotel_e2e::{gotel_command, require_environment, run, Export, FlatSpan, Proc, Sink};

const SINK: &str = env!("CARGO_BIN_EXE_otlp-sink");

fn build(go: &Path, dir: &Path, ldflags: Option<&str>) -> PathBuf {
    let out = dir.join("attrs");
    let mut cmd = Command::new(go);
    cmd.args(["build", "-o"]).arg(&out);
    if let Some(f) = ldflags {
        cmd.arg(format!("-ldflags={f}"));
    }
    cmd.arg(".")
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("goapps/attrs"))
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .env("CGO_ENABLED", "0");
    let (st, so, se) = run("go build attrs", cmd, Duration::from_secs(300)).unwrap();
    assert!(st.success(), "go build with {}: {so}{se}", go.display());
    out
}

/// Runs the program once under gotel with `probes`; returns the spans and the program's stdout.
fn traced(go: &Path, ldflags: Option<&str>, probes: &str) -> (Vec<FlatSpan>, String) {
    require_environment().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bin = build(go, dir.path(), ldflags);
    let (_, untraced, _) = run("attrs untraced", Command::new(&bin), Duration::from_secs(60)).unwrap();
    let sink = Sink::start(Path::new(SINK), dir.path()).unwrap();
    let mut cmd = gotel_command(&Export::Grpc(sink.grpc_endpoint()), probes);
    cmd.arg("--").arg(&bin);
    let mut gotel = Proc::spawn("gotel attrs", cmd).unwrap();
    let st = gotel.wait_timeout(Duration::from_secs(120)).unwrap();
    assert!(st.success(), "gotel: {st}\n{}", gotel.stderr_string());
    assert_eq!(gotel.stdout_string(), untraced, "the traced program printed something else");
    let spans = sink.wait_quiet(Duration::from_millis(500), Duration::from_secs(30)).unwrap();
    (spans, untraced)
}

fn span<'a>(spans: &'a [FlatSpan], name: &str) -> &'a FlatSpan {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no {name} span among {:?}", spans.iter().map(|s| &s.name).collect::<Vec<_>>()))
}

fn attr(s: &FlatSpan, key: &str) -> String {
    match s.attributes.get(key) {
        Some(serde_json::Value::String(v)) => v.clone(),
        Some(v) => v.to_string(),
        None => panic!("{}: no attribute {key}; has {:?}", s.name, s.attributes),
    }
}

const WITH_DWARF: &str = "\
    main.Ints(a=a, b=b, c=c, d=d, e=e, r=ret0);\
    main.Uints(a=a, b=b, c=c, d=d, e=e, p=p);\
    main.Bools(a=a, b=b, r=ret0);\
    main.Strings(s=s, b=b, r0=ret0, r1=ret1);\
    main.Lens(s=len(s), xs=len(xs), m=len(m));\
    main.Named(id=id, n=n, r=ret0);\
    main.ProcessOrder(id=o.ID, customer=o.Customer.Name, city=o.Customer.Addr.City, items=len(o.Items), tags=len(o.Tags), note=o.Note, total=o.Total, r=ret0);\
    main.Charge(cents=cents, currency=currency);\
    main.Many(a=a, i=i, j=j, k=k, l=l);\
    main.MixedMany(a=a, c=c, d=d, f=f, g=g, r=ret0);\
    main.StructArg(px=p.X, qy=q.Y, qn=q.Name);\
    main.(*Store).Get(key=key, name=s.name, v=ret0, ok=ret1);\
    main.Counter.Value(n=c.N, extra=extra, r=ret0);\
    main.Fail(code=code, r=ret0, err=ret1)";

fn check_with_dwarf(go: &Path) {
    let (spans, _) = traced(go, None, WITH_DWARF);
    let s = span(&spans, "main.Ints");
    assert_eq!(
        [attr(s, "a"), attr(s, "b"), attr(s, "c"), attr(s, "d"), attr(s, "e"), attr(s, "r")],
        ["-1", "-2", "-3", "-4", "-5", "-15"]
    );
    let s = span(&spans, "main.Uints");
    assert_eq!([attr(s, "a"), attr(s, "b"), attr(s, "c"), attr(s, "d")], ["1", "200", "60000", "4000000000"]);
    assert_eq!(attr(s, "e"), (1u64 << 63).to_string(), "u64 above i64::MAX");
    assert_eq!(attr(s, "p"), "0xdead");
    let s = span(&spans, "main.Bools");
    assert_eq!([attr(s, "a"), attr(s, "b"), attr(s, "r")], ["true", "false", "true"]);
    let s = span(&spans, "main.Strings");
    assert_eq!([attr(s, "s"), attr(s, "b")], ["hello", "world"]);
    let s = span(&spans, "main.Lens");
    assert_eq!([attr(s, "s"), attr(s, "xs"), attr(s, "m")], ["3", "2", "1"]);
    let s = span(&spans, "main.Named");
    assert_eq!([attr(s, "id"), attr(s, "n"), attr(s, "r")], ["7", "bob", "8"]);
    let s = span(&spans, "main.ProcessOrder");
    assert_eq!(
        [
            attr(s, "id"),
            attr(s, "customer"),
            attr(s, "city"),
            attr(s, "items"),
            attr(s, "tags"),
            attr(s, "note"),
            attr(s, "total"),
            attr(s, "r")
        ],
        ["1001", "Ada", "Paris", "3", "2", "fragile", "250", "1001"]
    );
    // Charge(200000, "USD") returns a wrapped error: status ERROR with its message.
    let charges: Vec<&FlatSpan> = spans.iter().filter(|s| s.name == "main.Charge").collect();
    let big = charges.iter().find(|s| attr(s, "cents") == "200000").expect("Charge(200000)");
    assert_eq!(attr(big, "currency"), "USD");
    assert_eq!(big.status_code, 2);
    assert_eq!(big.status_message, "charge 200000 USD: over the limit");
    let small = charges.iter().find(|s| attr(s, "cents") == "500").expect("Charge(500)");
    assert_eq!(small.status_code, 0, "a nil error is no error");
    let s = span(&spans, "main.Many");
    assert_eq!(
        [attr(s, "a"), attr(s, "i"), attr(s, "j"), attr(s, "k"), attr(s, "l")],
        ["1", "9", "10", "11", "12"],
        "stack-passed arguments"
    );
    let s = span(&spans, "main.MixedMany");
    assert_eq!([attr(s, "a"), attr(s, "c"), attr(s, "d"), attr(s, "f"), attr(s, "g")], ["s1", "s3", "s4", "s6", "7"]);
    let s = span(&spans, "main.StructArg");
    assert_eq!([attr(s, "px"), attr(s, "qy"), attr(s, "qn")], ["1", "4", "q"], "structs decomposed into registers");
    let s = span(&spans, "main.(*Store).Get");
    assert_eq!(
        [attr(s, "key"), attr(s, "name"), attr(s, "v"), attr(s, "ok")],
        ["k", "main", "v", "true"],
        "pointer receiver"
    );
    let s = span(&spans, "main.Counter.Value");
    assert_eq!([attr(s, "n"), attr(s, "extra"), attr(s, "r")], ["5", "3", "8"], "value receiver");
    let fails: Vec<&FlatSpan> = spans.iter().filter(|s| s.name == "main.Fail").collect();
    let by_code = |c: &str| *fails.iter().find(|s| attr(s, "code") == c).unwrap_or_else(|| panic!("Fail({c})"));
    assert_eq!(by_code("0").status_code, 0);
    assert_eq!(attr(by_code("0"), "r"), "ok");
    assert_eq!((by_code("1").status_code, by_code("1").status_message.as_str()), (2, "plain failure"));
    assert_eq!(by_code("2").status_message, "wrapped: over the limit");
    assert!(
        by_code("3").status_message.contains("CodeError"),
        "unknown error type named: {}",
        by_code("3").status_message
    );
}

#[test]
fn attributes_go_1_19() {
    gotel_e2e::require!(Root, Go, GoVersion("1.19"));
    check_with_dwarf(&gotel_e2e::go_version_bin("1.19").unwrap());
}

#[test]
fn attributes_go_1_22() {
    gotel_e2e::require!(Root, Go, GoVersion("1.22"));
    check_with_dwarf(&gotel_e2e::go_version_bin("1.22").unwrap());
}

/// Go 1.27 (the go1.27.3 toolchain download): its symbol table no longer names itabs
/// (`go:itab.*`), so dynamic types are named through the itab's type descriptor.
#[test]
fn attributes_go_1_27() {
    gotel_e2e::require!(Root, Go, GoVersion("1.27"));
    check_with_dwarf(&gotel_e2e::go_version_bin("1.27").unwrap());
}

#[test]
fn attributes_machine_go() {
    gotel_e2e::require!(Root, Go);
    check_with_dwarf(&gotel_e2e::go_bin());
}

#[test]
fn attributes_without_dwarf_need_types() {
    gotel_e2e::require!(Root, Go);
    let go = gotel_e2e::go_bin();
    let (spans, _) = traced(
        &go,
        Some("-w"),
        "main.Ints(a=arg0:int, b=arg1:int8, e=arg4:int64, _=arg2:int16, _=arg3:int32);\
         main.Strings(s=arg0:string, b=arg1:[]byte);\
         main.Charge(cents=arg0:int64, currency=arg1:string)",
    );
    let s = span(&spans, "main.Ints");
    assert_eq!([attr(s, "a"), attr(s, "b"), attr(s, "e")], ["-1", "-2", "-5"]);
    let s = span(&spans, "main.Strings");
    assert_eq!([attr(s, "s"), attr(s, "b")], ["hello", "world"]);
    assert!(spans
        .iter()
        .any(|s| s.name == "main.Charge" && attr(s, "currency") == "USD" && attr(s, "cents") == "200000"));
}

/// A stripped build (`-ldflags=-s -w`: no symbol table, no DWARF) still names the dynamic
/// type of an error, so its message is read: gotel finds the type descriptors through Go's
/// module data instead of the `runtime.types` symbol. Before, the error showed as an address.
#[test]
fn stripped_build_names_error_types() {
    gotel_e2e::require!(Root, Go);
    let go = gotel_e2e::go_bin();
    let (spans, _) = traced(&go, Some("-s -w"), "main.Fail(code=arg0:int, r=ret0:string, err=ret1:error)");
    let fails: Vec<&FlatSpan> = spans.iter().filter(|s| s.name == "main.Fail").collect();
    let by_code = |c: &str| *fails.iter().find(|s| attr(s, "code") == c).unwrap_or_else(|| panic!("Fail({c})"));
    assert_eq!(attr(by_code("0"), "err"), "<nil>");
    assert_eq!(attr(by_code("1"), "err"), "plain failure", "*errors.errorString: its message");
    assert_eq!(attr(by_code("2"), "err"), "wrapped: over the limit", "*fmt.wrapError: its message");
    let other = attr(by_code("3"), "err");
    assert_eq!(other, "*main.CodeError", "other error types by name");
}

#[test]
fn unknown_parameter_is_refused_before_attaching() {
    gotel_e2e::require!(Root, Go);
    require_environment().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bin = build(&gotel_e2e::go_bin(), dir.path(), None);
    let mut cmd = gotel_command(&Export::Console, "main.Charge(x=amount)");
    cmd.arg("--").arg(&bin);
    let (st, stdout, stderr) = run("gotel bad spec", cmd, Duration::from_secs(60)).unwrap();
    assert_eq!(st.code(), Some(2), "configuration error exit code; stderr: {stderr}");
    assert!(stdout.is_empty(), "the program must not have run: {stdout}");
    assert!(
        stderr.contains("amount") && stderr.contains("cents") && stderr.contains("currency"),
        "lists the parameters: {stderr}"
    );
    assert!(!stderr.contains("panicked"));
}
