//! A real Go program nobody here wrote: go-httpbin v2 (an HTTP test server, 13 MB with DWARF),
//! built from the Go module proxy by `tools/build-thirdparty.sh httpbin` (cached outside the
//! clone; seconds once the Go build cache is warm). One run covers what a new user does to a
//! service they did not write:
//!
//! * a mistaken broad glob (`net/http.*` and the whole `httpbin` package, about 940 functions
//!   and thousands of uprobes) attached by `--pid` while 4 clients keep it busy: every response
//!   is byte for byte the untraced one, and spans come out;
//! * `(*T)` is part of the name: `bufio.(*Writer).Flush` traces that method and not
//!   `bufio.(*ReadWriter).Flush`, both in `--list` and in the spans;
//! * SIGTERM: gotel leaves within seconds (uprobe_multi; perf-event uprobes took minutes for as
//!   many) and the server answers as before;
//! * a stripped copy names the type of an error gotel was never told about
//!   (`*strconv.NumError`, was an address).
//!
//! Needs root, Go and a built gotel (`GOTEL_BIN`). Run with `--test-threads=1`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use gotel_e2e::{gotel_bin, gotel_command, require_environment, run, wait_until, Export, Proc, Sink};

const SINK: &str = env!("CARGO_BIN_EXE_otlp-sink");
const PKG: &str = "github.com/mccutchen/go-httpbin/v2/httpbin";
/// Paths whose answers do not depend on time, randomness or the client's address.
const PATHS: &[&str] = &[
    "/base64/Z290ZWwgd2FzIGhlcmU=",
    "/json",
    "/html",
    "/xml",
    "/robots.txt",
    "/bytes/2048?seed=7",
    "/range/1000",
    "/status/418",
    "/links/5/2",
    "/encoding/utf8",
];
const EXIT_BOUND: Duration = Duration::from_secs(20);

/// go-httpbin from `tools/build-thirdparty.sh` (cached after the first build).
pub fn httpbin() -> PathBuf {
    let script = gotel_e2e::workspace_root().join("tools/build-thirdparty.sh");
    let mut cmd = Command::new(script);
    cmd.arg("httpbin");
    let (st, out, err) = run("tools/build-thirdparty.sh httpbin", cmd, Duration::from_secs(15 * 60)).unwrap();
    assert!(st.success(), "tools/build-thirdparty.sh httpbin failed: {err}");
    out.trim().into()
}

/// One HTTP/1.1 request; the whole answer after the headers that vary (`Date`).
fn fetch(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    String::from_utf8_lossy(&reply).lines().filter(|l| !l.starts_with("Date: ")).collect::<Vec<_>>().join("\n")
}

fn answers(addr: &str) -> Vec<String> {
    PATHS.iter().map(|p| fetch(addr, p)).collect()
}

/// `rounds` passes over [`PATHS`] from each of `clients` threads; the answers that differ from
/// `want`, and the time taken.
fn load(addr: &str, clients: usize, rounds: usize, want: &[String]) -> (Vec<String>, Duration) {
    let t = Instant::now();
    let differ = std::thread::scope(|s| {
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| {
                    let mut bad = Vec::new();
                    for _ in 0..rounds {
                        for (p, w) in PATHS.iter().zip(want) {
                            let got = fetch(addr, p);
                            if &got != w {
                                bad.push(format!("{p}: {got:.300}"));
                            }
                        }
                    }
                    bad
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    (differ, t.elapsed())
}

fn field(line: &str, key: &str) -> Option<f64> {
    let rest = line.split(&format!("{key}=")).nth(1)?;
    rest.split(|c: char| !(c.is_ascii_digit() || c == '.')).next()?.parse().ok()
}

#[test]
fn broad_glob_on_httpbin_under_load() {
    gotel_e2e::require!(Root, Go);
    require_environment().unwrap();
    let bin = httpbin();
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(&bin);
    cmd.args(["-host", "127.0.0.1", "-port", &port.to_string(), "-log-level", "OFF"]);
    let mut server = Proc::spawn("go-httpbin", cmd).unwrap();
    assert!(wait_until(Duration::from_secs(30), || TcpStream::connect(&addr).is_ok()), "go-httpbin did not listen");
    let want = answers(&addr);
    assert!(want[0].contains("gotel was here"), "{}", want[0]);
    let (_, untraced) = load(&addr, 4, 5, &want);

    // `--list`: the exact name and nothing else of that shape.
    let mut list = Command::new(gotel_bin());
    list.env_remove("GOTEL_PROBES").args(["--list", "bufio.(*Writer).Flush", "--pid", &server.pid().to_string()]);
    let (st, out, err) = run("gotel --list", list, Duration::from_secs(60)).unwrap();
    assert!(st.success(), "{out}{err}");
    assert!(out.lines().any(|l| l.starts_with("bufio.(*Writer).Flush\t")), "{out}");
    assert!(!out.contains("(*ReadWriter)") && out.contains("1 functions would be traced, 0 refused"), "{out}");

    let sink = Sink::start(Path::new(SINK), dir.path()).unwrap();
    let probes = format!("net/http.*; {PKG}.*; bufio.(*Writer).Flush");
    let mut cmd = gotel_command(&Export::Grpc(sink.grpc_endpoint()), &probes);
    cmd.arg("--pid").arg(server.pid().to_string());
    let mut gotel = Proc::spawn("gotel", cmd).unwrap();
    let attached = gotel.wait_stderr_line("attached pid=", Duration::from_secs(120)).unwrap();
    let uprobes = field(&attached, "uprobes").unwrap_or(0.0) as usize;
    assert!(uprobes >= 2000, "a broad glob: {uprobes} uprobes\n{}", gotel.stderr_string());

    let (differ, traced) = load(&addr, 4, 5, &want);
    assert!(
        differ.is_empty(),
        "{} answers changed under tracing, e.g. {:?}",
        differ.len(),
        &differ[..differ.len().min(3)]
    );
    let spans = sink.wait_spans(200, Duration::from_secs(60)).unwrap();
    let named = |n: &str| spans.iter().filter(|s| s.name == n).count();
    assert!(named(&format!("{PKG}.(*HTTPBin).Base64")) > 0, "no handler spans among {}", spans.len());
    assert!(named("bufio.(*Writer).Flush") > 0, "no bufio.(*Writer).Flush spans among {}", spans.len());
    assert_eq!(named("bufio.(*ReadWriter).Flush"), 0, "(*Writer) matched (*ReadWriter)");
    // The glob covers `net/http.serverHandler.ServeHTTP`: a user probe there replaces (and says
    // it replaces) the built-in SERVER span.
    assert!(named("net/http.serverHandler.ServeHTTP") > 0, "no request spans among {}", spans.len());

    let sent = Instant::now();
    gotel.signal(libc::SIGTERM);
    let st =
        gotel.wait_timeout(EXIT_BOUND).unwrap_or_else(|e| panic!("gotel did not leave within {EXIT_BOUND:?}: {e}"));
    let exit = sent.elapsed();
    let stderr = gotel.stderr_string();
    assert!(st.success(), "gotel: {st}\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let (differ, after) = load(&addr, 4, 5, &want);
    assert!(differ.is_empty(), "answers changed after gotel left: {:?}", &differ[..differ.len().min(3)]);
    eprintln!(
        "go-httpbin: {uprobes} uprobes; 200 requests untraced {:.2} s, traced {:.2} s, after leaving {:.2} s; \
         exit {:.2} s after SIGTERM",
        untraced.as_secs_f64(),
        traced.as_secs_f64(),
        after.as_secs_f64(),
        exit.as_secs_f64()
    );
    // Back at full speed once gotel has left (perf-event uprobes kept it slow for minutes).
    assert!(after < untraced * 4 + Duration::from_secs(1), "still slow after leaving: {after:?} vs {untraced:?}");
    server.kill();
}

/// A stripped copy (`strip`: no symbol table, no DWARF, like `-ldflags=-s -w`) still names the
/// type of an error the user never declared: `strconv.Atoi` failing on `/bytes/abc` gives
/// `*strconv.NumError` (the type descriptors are found through Go's module data), not an address.
#[test]
fn stripped_httpbin_names_error_types() {
    gotel_e2e::require!(Root, Go);
    require_environment().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("go-httpbin");
    std::fs::copy(httpbin(), &bin).unwrap();
    let (st, _, err) = run(
        "strip",
        {
            let mut c = Command::new("strip");
            c.arg(&bin);
            c
        },
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(st.success(), "strip: {err}");
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let sink = Sink::start(Path::new(SINK), dir.path()).unwrap();
    let mut cmd =
        gotel_command(&Export::Grpc(sink.grpc_endpoint()), "strconv.Atoi(s=arg0:string, _=ret0:int, err=ret1:error)");
    cmd.arg("--").arg(&bin).args(["-host", "127.0.0.1", "-port", &port.to_string(), "-log-level", "OFF"]);
    let mut gotel = Proc::spawn("gotel go-httpbin", cmd).unwrap();
    assert!(wait_until(Duration::from_secs(60), || TcpStream::connect(&addr).is_ok()), "go-httpbin did not listen");
    assert!(fetch(&addr, "/bytes/abc").starts_with("HTTP/1.1 400"));
    assert!(fetch(&addr, "/bytes/12").starts_with("HTTP/1.1 200"));
    let spans = sink.wait_spans(2, Duration::from_secs(30)).unwrap();
    gotel.signal(libc::SIGTERM);
    gotel.wait_timeout(Duration::from_secs(30)).unwrap();
    let atoi = |s: &str| {
        spans
            .iter()
            .find(|x| x.name == "strconv.Atoi" && x.attr_str("s") == Some(s))
            .unwrap_or_else(|| panic!("Atoi({s}): {spans:#?}"))
    };
    let bad = atoi("abc");
    assert_eq!(bad.attr_str("err"), Some("*strconv.NumError"), "{bad:?}");
    assert_eq!((bad.status_code, bad.status_message.as_str()), (2, "*strconv.NumError"));
    assert_eq!(atoi("12").attr_str("err"), Some("<nil>"));
}
