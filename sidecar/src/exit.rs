//! Process exit codes, documented in the README. Scripts and orchestrators can tell a bad
//! configuration (fix the spec) from a bad environment (fix the container) from a target error.
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCode {
    /// Everything worked (the target exited or gotel was stopped by SIGINT/SIGTERM).
    Ok = 0,
    /// Command line or configuration error: bad probe spec, unknown symbol, parameter or field,
    /// bad OTEL_* value.
    Config = 2,
    /// The target cannot be traced: not found, not a Go program, Go too old, not ELF/amd64.
    Target = 3,
    /// The environment refuses: missing capability, no uprobe support, BPF load failure.
    Environment = 4,
    /// An unexpected internal failure.
    Internal = 5,
}

/// An error with the exit code it maps to. Its Display is the one message the user sees.
#[derive(Debug)]
pub struct Failure {
    pub code: ExitCode,
    pub message: String,
}

impl Failure {
    pub fn new(code: ExitCode, message: impl fmt::Display) -> Self {
        Failure { code, message: message.to_string() }
    }
    pub fn config(message: impl fmt::Display) -> Self {
        Self::new(ExitCode::Config, message)
    }
    pub fn target(message: impl fmt::Display) -> Self {
        Self::new(ExitCode::Target, message)
    }
    pub fn environment(message: impl fmt::Display) -> Self {
        Self::new(ExitCode::Environment, message)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}
