//! Resolving the user's probe specs against the binary: which functions, where to put the
//! entry probe (after the stack-check prologue), every RET, source location, and the kernel
//! fetch instructions for the attributes. Everything that can be wrong with the configuration
//! is found here, before anything is attached.
use std::collections::BTreeMap;

use gotel_shared::{ProbePlan, MAX_FETCHES, PLAN_HAS_ENTRY_FETCH, PLAN_HAS_RETURN_FETCH};

use crate::{
    attributes::{self, AttributePlan, Limits},
    binary::{disasm, Function, GoBinary},
    exit::Failure,
    instrumentations::Library,
    spec::ProbeSpec,
};

/// Upper bound of traced functions (size of the kernel's `PROBES` array).
pub const MAX_PROBES: usize = 4096;

/// One traced function.
#[derive(Debug)]
pub struct Probe {
    /// Index into the kernel's `PROBES` array and the low half of every attach cookie.
    pub id: u32,
    pub function: Function,
    /// Offset from the function start where the entry probe goes.
    pub entry_offset: u64,
    /// No prologue was found: the entry probe sits at the first instruction and the kernel
    /// ignores a morestack re-entry.
    pub at_function_start: bool,
    /// Offsets of every RET instruction.
    pub ret_offsets: Vec<u64>,
    pub source: Option<(String, u32)>,
    pub attributes: AttributePlan,
    /// Set for built-in instrumentations (HTTP server and client spans).
    pub library: Option<Library>,
    /// Registers the kernel keeps from entry for reads at return (`Root::Saved`).
    pub save_regs: [u8; 2],
    /// HTTP client span that hands its context to the request writer (GOTEL_PROPAGATION=inject).
    pub inject: bool,
}

impl Probe {
    /// Probe number `id` on `function` (whose instructions are `code`): entry after the
    /// stack-check prologue, a return probe on every RET; a user probe (no library, no saved
    /// registers, no injection) until the caller says otherwise.
    fn new(id: usize, bin: &GoBinary, function: &Function, code: &[u8], attributes: AttributePlan) -> Probe {
        let (prologue, ret_offsets) = probe_points(code, function.entry);
        Probe {
            id: id as u32,
            source: bin.source_location(function),
            function: function.clone(),
            entry_offset: prologue.unwrap_or(0),
            at_function_start: prologue.is_none(),
            ret_offsets,
            attributes,
            library: None,
            save_regs: [gotel_shared::NO_REG; 2],
            inject: false,
        }
    }

    /// The kernel-side record for this probe.
    pub fn kernel_plan(&self) -> ProbePlan {
        let mut plan = ProbePlan::default();
        for (i, f) in self.attributes.fetches.iter().take(MAX_FETCHES).enumerate() {
            plan.fetches[i] = *f;
            plan.flags |= if f.at_return != 0 { PLAN_HAS_RETURN_FETCH } else { PLAN_HAS_ENTRY_FETCH };
        }
        plan.nfetches = self.attributes.fetches.len().min(MAX_FETCHES) as u32;
        plan.save_regs = self.save_regs;
        if self.inject {
            plan.flags |= gotel_shared::PLAN_INJECT_CONTEXT;
        }
        plan
    }
}

/// `runtime.newproc1`: where goroutines are born (g reuse, parent goroutine context).
#[derive(Debug)]
pub struct RuntimeHook {
    pub function: Function,
    pub entry_offset: u64,
    pub ret_offsets: Vec<u64>,
}

/// Where and how gotel writes `traceparent` into outgoing HTTP/1 requests.
#[derive(Debug)]
pub struct Injection {
    /// `net/http.(*Request).write`: the goroutine about to write a request.
    pub request_write: RuntimeHook,
    /// `net/http.Header.writeSubset`: the request's own header lines.
    pub header_write: RuntimeHook,
    pub config: gotel_shared::InjectConfig,
    /// Why the memory path (writing into the target's `bufio.Writer`) cannot run here, if the
    /// kernel says so up front (lockdown).
    pub memory_refused: Option<String>,
}

#[derive(Debug)]
pub struct Plan {
    pub probes: Vec<Probe>,
    pub newproc: Option<RuntimeHook>,
    /// `net/textproto.(*Reader).readContinuedLineSlice`: raw header lines, for incoming
    /// `traceparent` (only with HTTP server spans).
    pub header_lines: Option<RuntimeHook>,
    /// Outgoing `traceparent` (GOTEL_PROPAGATION=inject).
    pub injection: Option<Injection>,
    /// Things worth telling the user that do not stop tracing (float parameters skipped...).
    pub warnings: Vec<String>,
}

/// `*` matches any run of characters (dots and slashes included).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// Functions a glob should not pick up: package initialisers and compiler-generated helpers,
/// which users never mean by `main.*`.
fn generated(name: &str) -> bool {
    name.ends_with(".init")
        || name.contains(".init.")
        || name.ends_with("-fm")
        || name.contains("..")
        || name.starts_with("type:")
        || name.starts_with("go:")
}

/// Where a function's probes go: the end of its stack-check prologue (if it has one) and every
/// RET, as offsets from its first instruction.
fn probe_points(code: &[u8], entry: u64) -> (Option<u64>, Vec<u64>) {
    (disasm::prologue_end(code, entry), disasm::ret_offsets(code, entry))
}

pub fn build(
    bin: &GoBinary,
    specs: &[ProbeSpec],
    limits: &Limits,
    libraries: &[Library],
    inject: bool,
) -> Result<Plan, Failure> {
    // Resolve each spec to functions; a later spec for the same function wins.
    let mut chosen: BTreeMap<String, (&Function, &ProbeSpec)> = BTreeMap::new();
    for spec in specs {
        if spec.symbol.contains('*') {
            let matches: Vec<&Function> =
                bin.functions().iter().filter(|f| !generated(&f.name) && glob_match(&spec.symbol, &f.name)).collect();
            if matches.is_empty() {
                return Err(Failure::config(format!(
                    "probe `{}`: no function of {} matches `{}`",
                    spec.text, bin.path, spec.symbol
                )));
            }
            for f in matches {
                chosen.insert(f.name.clone(), (f, spec));
            }
        } else {
            let f = bin.function(&spec.symbol).ok_or_else(|| missing_symbol(bin, spec))?;
            chosen.insert(f.name.clone(), (f, spec));
        }
    }
    if chosen.len() > MAX_PROBES {
        return Err(Failure::config(format!(
            "{} functions match the probe specs; gotel traces at most {MAX_PROBES}: narrow the globs",
            chosen.len()
        )));
    }

    let mut probes = Vec::new();
    let mut warnings = Vec::new();
    for (name, (function, spec)) in chosen {
        let code = bin.code(function).ok_or_else(|| {
            Failure::target(format!("{}: the code of {name} is outside the file's loadable segments", bin.path))
        })?;
        let info = bin.dwarf.as_ref().and_then(|d| d.function(&name));
        // Also without an attribute list: an `error` last result still sets the span status.
        let attributes = attributes::plan_function(&name, info, bin.dwarf.as_ref(), &spec.attrs, limits)
            .map_err(|e| Failure::config(format!("probe `{}`: {e}", spec.text)))?;
        let probe = Probe::new(probes.len(), bin, function, code, attributes);
        if probe.ret_offsets.is_empty() {
            warnings.push(format!("{name} has no RET instruction (it never returns): no span will end"));
        }
        warnings.extend(probe.attributes.warnings.iter().map(|w| format!("{name}: {w}")));
        probes.push(probe);
    }

    // Built-in instrumentations the binary contains, unless the user probes that function.
    for &lib in libraries {
        let Some(function) = bin.function(lib.symbol()) else { continue };
        if probes.iter().any(|p| p.function.name == function.name) {
            warnings.push(format!(
                "{}: your probe on {} replaces the built-in {} spans",
                lib.name(),
                function.name,
                lib.name()
            ));
            continue;
        }
        let Some(code) = bin.code(function) else { continue };
        match crate::instrumentations::plan(bin, lib, limits) {
            Ok((attributes, save_regs)) => probes.push(Probe {
                library: Some(lib),
                save_regs,
                ..Probe::new(probes.len(), bin, function, code, attributes)
            }),
            Err(why) => warnings.push(format!("{} spans are off for this binary: {why}", lib.name())),
        }
    }
    if probes.is_empty() {
        return Err(Failure::config(format!(
            "nothing to trace in {}: set GOTEL_PROBES (e.g. 'main.handle;main.(*Store).Get') or pass --probe{}",
            bin.path,
            if libraries.is_empty() {
                ""
            } else {
                " (the built-in HTTP instrumentations found no usable net/http server or client in it)"
            }
        )));
    }
    if probes.len() > MAX_PROBES {
        return Err(Failure::config(format!("more than {MAX_PROBES} functions to trace: narrow the globs")));
    }

    let hook = |name: &str| {
        bin.function(name).and_then(|f| {
            let (prologue, ret_offsets) = probe_points(bin.code(f)?, f.entry);
            Some(RuntimeHook { function: f.clone(), entry_offset: prologue.unwrap_or(0), ret_offsets })
        })
    };
    let newproc = hook("runtime.newproc1");
    let header_lines = if probes.iter().any(|p| p.library == Some(Library::HttpServer)) {
        hook("net/textproto.(*Reader).readContinuedLineSlice")
    } else {
        None
    };
    if newproc.is_none() {
        warnings.push(
            "runtime.newproc1 not found: spans in new goroutines will not get their spawning call as parent".into(),
        );
    }
    let mut injection = None;
    // A kernel in lockdown refuses the memory path only; the socket path
    // (instrumentations::inject_socket) still covers plaintext HTTP/1.
    let memory_refused = crate::instrumentations::lockdown_refusal().map(|_| "kernel in lockdown".to_string());
    if inject {
        let client = probes.iter_mut().find(|p| p.library == Some(Library::HttpClient));
        let parts = (
            hook("net/http.(*Request).write"),
            hook("net/http.Header.writeSubset"),
            crate::instrumentations::bufio_writer_offsets(bin),
        );
        match (client, parts) {
            (Some(client), (Some(request_write), Some(header_write), Some(config))) => {
                client.inject = true;
                client.save_regs[0] = gotel_shared::REG_RBX; // roundTrip(t *Transport, req *Request)
                injection = Some(Injection { request_write, header_write, config, memory_refused });
            }
            _ => warnings.push(
                "GOTEL_PROPAGATION=inject: this binary has no HTTP client spans (net/http client, bufio.Writer layout); nothing will be injected".into(),
            ),
        }
    }
    Ok(Plan { probes, newproc, header_lines, injection, warnings })
}

fn missing_symbol(bin: &GoBinary, spec: &ProbeSpec) -> Failure {
    if bin.dwarf.as_ref().is_some_and(|d| d.is_inlined_only(&spec.symbol)) {
        return Failure::config(format!(
            "probe `{}`: {} is inlined into its callers and has no code of its own to probe; \
             mark it //go:noinline or build with -gcflags=all=-l",
            spec.text, spec.symbol
        ));
    }
    let close = bin.closest_names(&spec.symbol, 5);
    Failure::config(format!(
        "probe `{}`: no function {} in {} (symbols from {:?}); closest: {}. \
         If it exists in the source, it may be inlined everywhere or removed as dead code: \
         mark it //go:noinline",
        spec.text,
        spec.symbol,
        bin.path,
        bin.symbol_source,
        close.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_across_dots_and_slashes() {
        assert!(glob_match("main.*", "main.(*Store).Get"));
        assert!(glob_match("github.com/acme/*/cart.*", "github.com/acme/shop/cart.(*Cart).Add"));
        assert!(glob_match("*.Get", "main.(*Store).Get"));
        assert!(!glob_match("main.*", "runtime.main"));
        assert!(glob_match("main.leaf", "main.leaf"));
        assert!(!glob_match("main.leaf", "main.leaf2"));
        assert!(!glob_match("a*b*c", "ab"));
    }

    #[test]
    fn generated_functions_are_skipped_by_globs() {
        assert!(generated("main.init"));
        assert!(generated("main.init.0"));
        assert!(generated("main.(*T).M-fm"));
        assert!(!generated("main.(*Store).Get"));
    }
}
