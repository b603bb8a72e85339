//! `gotel`: wires the stages together; each stage lives in its own module of the library.
use std::process::ExitCode as ProcessExit;

use clap::Parser;
use gotel::{
    config::{Cli, Settings, Target},
    exit::Failure,
    session, target,
};

fn init_logging(cli: &Cli) {
    let level = cli.log.clone().or_else(|| std::env::var("OTEL_LOG_LEVEL").ok()).unwrap_or_else(|| "info".into());
    // Dependencies speak only when something is wrong, unless asked for by name.
    let filter = format!(
        "warn,gotel={level},{level_deps}",
        level_deps = if level.contains('=') { level.clone() } else { String::new() }
    );
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_new(filter.trim_end_matches(',')).unwrap_or_else(|_| "info".into());
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter(filter),
        )
        .with(gotel::diagnostics::self_tracing_layer())
        .init();
}

fn main() -> ProcessExit {
    let cli = Cli::parse();
    init_logging(&cli);
    let result = (|| {
        if cli.list.is_some() {
            print!("{}", gotel::names::list_command(&cli)?);
            return Ok(0);
        }
        let settings = Settings::resolve(&cli)?;
        // Fork the launched program now, while gotel has a single thread.
        let launched = match &settings.target {
            Target::Launch(cmd) => Some(target::launch(cmd)?),
            _ => None,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Failure::environment(format!("starting the async runtime: {e}")))?;
        runtime.block_on(session::run(&settings, launched))
    })();
    gotel::diagnostics::shutdown_self_tracing();
    match result {
        Ok(code) => ProcessExit::from(code as u8),
        Err(f) => {
            // One message, on stderr, whatever the log filter.
            eprintln!("gotel: {f}");
            ProcessExit::from(f.code as u8)
        }
    }
}
