//! Command line and environment. Every option has a `GOTEL_*` environment fallback so the
//! sidecar can be configured from a compose file alone; OpenTelemetry's own `OTEL_*` variables
//! are read by `export` with the defaults of the specification.
//!
//! [`Settings::resolve`] reads and checks all of it once, when gotel starts: a bad value fails
//! before gotel launches or touches the target, and the stages after it get values, not
//! variables to read again (so a session for a restarted `--exe` target sees the same ones).
use std::{path::PathBuf, time::Duration};

use clap::Parser;
use opentelemetry_sdk::trace::Sampler;

use crate::{
    attach::MapSizes,
    attributes::Limits,
    exit::Failure,
    export::{self, BatchSettings},
    instrumentations::{self, Library},
    spec::{self, ProbeSpec},
};

#[derive(Parser, Debug)]
#[command(
    name = "gotel",
    version,
    about = "Trace chosen functions of a running Go program as OpenTelemetry spans (eBPF uprobes)",
    after_help = "Exactly one target: --pid, --exe, --node, or a command after `--`.\n\
                  Example: gotel --probe 'main.handle(user=u.Name)' -- ./server --port 8080"
)]
pub struct Cli {
    /// Trace the running process with this pid.
    #[arg(long, env = "GOTEL_TARGET_PID", value_name = "PID")]
    pub pid: Option<u32>,

    /// Trace the process running this executable; waits until one appears, and follows
    /// restarts (a new process of the same file is traced again).
    #[arg(long, env = "GOTEL_TARGET_EXE", value_name = "PATH")]
    pub exe: Option<PathBuf>,

    /// Node mode: trace every Go process on this host that a selector picks (--select), new and
    /// restarted ones too, each as its own service (see README "Kubernetes").
    #[arg(long, env = "GOTEL_NODE", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false)]
    pub node: bool,

    /// Node mode: which processes, `KEY=VALUE,...` (exe, namespace, pod, container,
    /// label:NAME, service, probes-file). Repeatable; added to GOTEL_SELECT.
    #[arg(long = "select", value_name = "SELECTOR")]
    pub select: Vec<String>,

    /// `;`-separated selectors (same grammar as --select).
    #[arg(long = "selectors", env = "GOTEL_SELECT", value_name = "SELECTORS", hide = true)]
    pub select_env: Option<String>,

    /// Functions to trace: `SYMBOL` or `SYMBOL(KEY=EXPR, ...)`, `*` globs allowed. Repeatable;
    /// added to GOTEL_PROBES.
    #[arg(long = "probe", value_name = "SPEC")]
    pub probes: Vec<String>,

    /// `;`-separated probe specs (same grammar as --probe).
    #[arg(long = "probes", env = "GOTEL_PROBES", value_name = "SPECS", hide = true)]
    pub probes_env: Option<String>,

    /// A file of probe specs (`;` or newlines between entries, `#` comments).
    #[arg(long, env = "GOTEL_PROBES_FILE", value_name = "FILE")]
    pub probes_file: Option<PathBuf>,

    /// Print what probe specs would attach to (each function, its entry offset, return points,
    /// attributes; refusals with their reasons) and exit 0 without attaching. With SPECS, those
    /// are listed instead of GOTEL_PROBES/--probe/--probes-file. The binary is read from
    /// --exe PATH, the command after `--` (not run), or the process of --pid.
    #[arg(long, value_name = "SPECS", num_args = 0..=1, default_missing_value = "")]
    pub list: Option<String>,

    /// Create this file once every probe is attached (readiness for scripts and orchestrators).
    #[arg(long, env = "GOTEL_READY_FILE", value_name = "FILE")]
    pub ready_file: Option<PathBuf>,

    /// How many goroutines with traced calls in progress the kernel remembers (LRU).
    #[arg(long, env = "GOTEL_MAX_GOROUTINES", default_value_t = 16384)]
    pub max_goroutines: u32,

    /// Node mode: how many processes one set of kernel programs traces at once (their per-target
    /// map entries are made at start). Processes beyond are reported as not traced.
    #[arg(long, env = "GOTEL_NODE_MAX_TARGETS", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=gotel_shared::MAX_SLOTS as i64))]
    pub node_max_targets: u32,

    /// Ring buffer size in bytes between kernel and gotel (power of two, >= 4096).
    #[arg(long, env = "GOTEL_RING_BUFFER_BYTES", default_value_t = 8 << 20)]
    pub ring_buffer_bytes: u32,

    /// How often the ring buffer is drained, in milliseconds (events are submitted without
    /// wake-ups, which halves the cost of a traced call).
    #[arg(long, env = "GOTEL_DRAIN_INTERVAL_MS", default_value_t = 10)]
    pub drain_interval_ms: u64,

    /// Serve Prometheus `/metrics` and `/healthz` on this address (e.g. 0.0.0.0:9464). Off by
    /// default.
    #[arg(long, env = "GOTEL_METRICS_ADDR", value_name = "ADDR")]
    pub metrics_addr: Option<String>,

    /// Log filter for gotel's own diagnostics on stderr (error, warn, info, debug, trace).
    /// Defaults to OTEL_LOG_LEVEL, else info.
    #[arg(long, env = "GOTEL_LOG", value_name = "FILTER")]
    pub log: Option<String>,

    /// The program to launch and trace from its first instruction.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// What to trace.
#[derive(Clone, Debug)]
pub enum Target {
    Pid(u32),
    Exe(PathBuf),
    Launch(Vec<String>),
    /// Node mode: every process a selector picks.
    Node(Vec<crate::node::Selector>),
}

impl Cli {
    pub fn target(&self) -> Result<Target, Failure> {
        let mut chosen = Vec::new();
        if let Some(pid) = self.pid {
            chosen.push(Target::Pid(pid));
        }
        if let Some(exe) = &self.exe {
            chosen.push(Target::Exe(exe.clone()));
        }
        if !self.command.is_empty() {
            chosen.push(Target::Launch(self.command.clone()));
        }
        if self.node {
            chosen.push(Target::Node(crate::node::selectors(self.select_env.as_deref(), &self.select)?));
        } else if self.select_env.is_some() || !self.select.is_empty() {
            return Err(Failure::config("--select (GOTEL_SELECT) is for node mode: add --node (GOTEL_NODE=true)"));
        }
        match chosen.len() {
            1 => Ok(chosen.pop().unwrap()),
            0 => Err(Failure::config(
                "no target: give --pid PID (GOTEL_TARGET_PID), --exe PATH (GOTEL_TARGET_EXE), --node with --select (GOTEL_NODE, GOTEL_SELECT), or a command after `--`",
            )),
            _ => Err(Failure::config(
                "more than one target: choose one of --pid (GOTEL_TARGET_PID), --exe (GOTEL_TARGET_EXE), --node (GOTEL_NODE) and a command after `--`",
            )),
        }
    }

    /// Every probe spec: GOTEL_PROBES, then GOTEL_PROBES_FILE, then each --probe, each parsed
    /// on its own so that an error names where the text came from (the file and line).
    /// May be empty: the built-in HTTP instrumentations need no spec (`plan` complains when
    /// nothing at all is left to trace).
    pub fn probe_specs(&self) -> Result<Vec<ProbeSpec>, Failure> {
        let mut specs = Vec::new();
        if let Some(p) = &self.probes_env {
            specs.extend(spec::parse_source("GOTEL_PROBES", p).map_err(Failure::config)?);
        }
        if let Some(path) = &self.probes_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Failure::config(format!("cannot read GOTEL_PROBES_FILE {}: {e}", path.display())))?;
            specs.extend(spec::parse_source(&path.display().to_string(), &text).map_err(Failure::config)?);
        }
        for p in &self.probes {
            specs.extend(spec::parse_source("--probe", p).map_err(Failure::config)?);
        }
        Ok(specs)
    }

    pub fn drain_interval(&self) -> Duration {
        Duration::from_millis(self.drain_interval_ms.clamp(1, 1000))
    }
}

/// Everything the command line and the environment asked for, resolved and checked.
#[derive(Clone, Debug)]
pub struct Settings {
    pub target: Target,
    pub specs: Vec<ProbeSpec>,
    /// `OTEL_SPAN_ATTRIBUTE_*_LIMIT`.
    pub limits: Limits,
    /// `GOTEL_LIBRARIES`.
    pub libraries: Vec<Library>,
    /// `GOTEL_PROPAGATION=inject`.
    pub inject: bool,
    /// `GOTEL_GOROUTINE_PARENTS` (default on).
    pub goroutine_parents: bool,
    /// `GOTEL_THREAD_ID` (default off): a `thread.id` attribute on every span.
    pub thread_id: bool,
    /// `OTEL_TRACES_SAMPLER(_ARG)`.
    pub sampler: Sampler,
    /// `OTEL_BSP_*`.
    pub batch: BatchSettings,
    /// Sizes of the kernel maps (`GOTEL_MAX_GOROUTINES`, `GOTEL_RING_BUFFER_BYTES`).
    pub maps: MapSizes,
    pub drain_interval: Duration,
    pub ready_file: Option<PathBuf>,
    pub metrics_addr: Option<String>,
}

impl Settings {
    /// The exporter itself (`OTEL_TRACES_EXPORTER`, `OTEL_EXPORTER_OTLP_*`) is still built per
    /// session by `export::Pipeline`, since its resource names the traced process.
    pub fn resolve(cli: &Cli) -> Result<Settings, Failure> {
        instrumentations::database_sql::query_text_from_env()?;
        Ok(Settings {
            target: cli.target()?,
            specs: cli.probe_specs()?,
            limits: limits()?,
            libraries: instrumentations::libraries_from_env()?,
            inject: instrumentations::inject_from_env()?,
            goroutine_parents: instrumentations::goroutines::parents_from_env()?,
            thread_id: thread_id(&std::env::var("GOTEL_THREAD_ID").unwrap_or_default())?,
            sampler: export::sampler_from_env()?,
            batch: BatchSettings::from_env()?,
            maps: MapSizes {
                max_goroutines: cli.max_goroutines,
                ring_buffer_bytes: cli.ring_buffer_bytes,
                node_max_targets: cli.node_max_targets,
            },
            drain_interval: cli.drain_interval(),
            ready_file: cli.ready_file.clone(),
            metrics_addr: cli.metrics_addr.clone(),
        })
    }
}

/// `GOTEL_THREAD_ID`: `off` (default) or `on`. The OS thread that ran a call says little in Go,
/// whose scheduler moves goroutines between threads; it costs 8-12 bytes per span.
fn thread_id(value: &str) -> Result<bool, Failure> {
    match value.trim() {
        "" | "off" => Ok(false),
        "on" => Ok(true),
        other => Err(Failure::config(format!(
            "GOTEL_THREAD_ID={other}: use off (default) or on (a thread.id attribute on every span)"
        ))),
    }
}

pub fn limits() -> Result<Limits, Failure> {
    Ok(Limits {
        max_string: (export::env_u64("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", 128)? as usize)
            .min(gotel_shared::MAX_STR),
        max_attributes: export::env_u64("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", 128)? as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("gotel").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn thread_ids_are_opt_in() {
        assert!(!thread_id("").unwrap());
        assert!(thread_id("on").unwrap());
        assert!(thread_id("yes").unwrap_err().to_string().contains("GOTEL_THREAD_ID=yes"));
    }

    #[test]
    fn one_target_is_required() {
        assert!(parse(&["--probe", "main.f"]).target().is_err());
        assert!(matches!(parse(&["--pid", "7"]).target(), Ok(Target::Pid(7))));
        assert!(parse(&["--pid", "7", "--", "ls"]).target().is_err());
        match parse(&["--", "./app", "-x"]).target() {
            Ok(Target::Launch(cmd)) => assert_eq!(cmd, vec!["./app", "-x"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn probes_come_from_every_source_and_errors_name_it() {
        let file = std::env::temp_dir().join(format!("gotel-probes-{}.txt", std::process::id()));
        std::fs::write(&file, "# two entries, one per line\nmain.a\nmain.b(x=arg0,\n  y=ret0)\nmain.c d\n").unwrap();
        let mut cli = parse(&["--probe", "main.e", "--pid", "1"]);
        cli.probes_env = Some("main.f".into());
        cli.probes_file = Some(file.clone());
        let err = cli.probe_specs().unwrap_err().to_string();
        assert!(err.starts_with(&format!("{} line 5, entry 3: expected", file.display())), "{err}");
        std::fs::write(&file, "main.a\nmain.b(x=arg0,\n  y=ret0)\n").unwrap();
        let specs = cli.probe_specs().unwrap();
        let got: Vec<_> = specs.iter().map(|s| (s.symbol.as_str(), s.origin.clone())).collect();
        let f = file.display();
        assert_eq!(
            got,
            [
                ("main.f", "GOTEL_PROBES".into()),
                ("main.a", format!("{f} line 1")),
                ("main.b", format!("{f} line 2")),
                ("main.e", "--probe".into())
            ]
        );
        let _ = std::fs::remove_file(file);
        assert_eq!(parse(&["--list", "--pid", "1"]).list.as_deref(), Some(""));
        assert_eq!(parse(&["--list", "main.*", "--pid", "1"]).list.as_deref(), Some("main.*"));
        assert_eq!(parse(&["--pid", "1"]).list, None);
    }
}
