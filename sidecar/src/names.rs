//! Which functions a probe spec names, and what to say when it names none or names one twice.
//!
//! Names mean what they say. Go writes a method with a pointer receiver `pkg.(*T).M`; that
//! `*` is part of the name, so it never globs: `sync.(*Mutex).Lock` is that one function and
//! not `sync.(*RWMutex).Lock`, `bufio.(*Writer).Flush` not `(*ReadWriter)`. The rule is
//! textual and has no exception list: a `*` directly after `(` is literal, every other `*` is a
//! glob for any run of characters (dots, slashes and brackets included). So `main.*`,
//! `main.(*Store).*`, `main.(*S*).Get` (the receiver's pointer literal, `S*` a glob) and
//! `main.(*Stack[*]).Push` (a generic method whatever its shape) all glob.
//!
//! A function named by several entries (a broad glob and an exact name with attributes, or the
//! same name twice) gets their attributes merged; entries that clash are refused, naming both.
//! Nothing is dropped silently.
use std::collections::BTreeMap;

use crate::{
    attributes::Limits,
    binary::{Function, GoBinary},
    config::{Cli, Target},
    exit::Failure,
    plan,
    spec::{self, ProbeSpec},
    target,
};

/// The literal pieces between glob stars: `main.(*T).*` -> `["main.(*T).", ""]`.
fn pieces(pattern: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = pattern.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'*' && !(i > 0 && bytes[i - 1] == b'(') {
            out.push(&pattern[start..i]);
            start = i + 1;
        }
    }
    out.push(&pattern[start..]);
    out
}

/// Whether the pattern has a glob `*` (one not right after `(`).
pub fn is_glob(pattern: &str) -> bool {
    pieces(pattern).len() > 1
}

/// Whether `name` matches `pattern`: a glob `*` matches any run of characters; everything
/// else, `(*` included, matches itself.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let parts = pieces(pattern);
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// Functions a glob should not pick up: package initialisers and compiler-generated helpers,
/// which users never mean by `main.*`. An exact name still reaches them.
pub fn generated(name: &str) -> bool {
    name.ends_with(".init")
        || name.contains(".init.")
        || name.ends_with("-fm")
        || name.contains("..")
        || name.starts_with("type:")
        || name.starts_with("go:")
}

/// The functions one spec names, or why it names none.
pub fn resolve<'b>(bin: &'b GoBinary, spec: &ProbeSpec) -> Result<Vec<&'b Function>, String> {
    if !is_glob(&spec.symbol) {
        return bin.function(&spec.symbol).map(|f| vec![f]).ok_or_else(|| missing(bin, spec));
    }
    let matches: Vec<&Function> =
        bin.functions().iter().filter(|f| !generated(&f.name) && glob_match(&spec.symbol, &f.name)).collect();
    if matches.is_empty() {
        return Err(format!(
            "probe `{}` ({}): no function of {} matches `{}`; closest names: {}",
            spec.text,
            spec.origin,
            bin.path,
            spec.symbol,
            bin.closest_names(&spec.symbol, 5).join(", ")
        ));
    }
    Ok(matches)
}

fn missing(bin: &GoBinary, spec: &ProbeSpec) -> String {
    if bin.dwarf.as_ref().is_some_and(|d| d.is_inlined_only(&spec.symbol)) {
        return format!(
            "probe `{}` ({}): {} is inlined into its callers and has no code of its own to probe; \
             mark it //go:noinline or build with -gcflags=all=-l",
            spec.text, spec.origin, spec.symbol
        );
    }
    format!(
        "probe `{}` ({}): no function {} in {} (symbols from {:?}); closest: {}. \
         If it exists in the source, it may be inlined everywhere or removed as dead code: \
         mark it //go:noinline",
        spec.text,
        spec.origin,
        spec.symbol,
        bin.path,
        bin.symbol_source,
        bin.closest_names(&spec.symbol, 5).join(", ")
    )
}

/// What the specs name, by function name, with one merged entry each.
#[derive(Debug, Default)]
pub struct Chosen<'b> {
    pub functions: BTreeMap<String, (&'b Function, ProbeSpec)>,
    /// Everything wrong: specs that name nothing, entries that clash on one function. `plan`
    /// refuses to start with any; `--list` prints them.
    pub refusals: Vec<String>,
}

/// Resolves every spec; a function named twice gets the entries merged (`ProbeSpec::merge`).
pub fn choose<'b>(bin: &'b GoBinary, specs: &[ProbeSpec]) -> Chosen<'b> {
    let mut chosen = Chosen::default();
    for spec in specs {
        let functions = match resolve(bin, spec) {
            Ok(f) => f,
            Err(why) => {
                chosen.refusals.push(why);
                continue;
            }
        };
        for f in functions {
            let merged = match chosen.functions.get(&f.name) {
                None => Ok(spec.clone()),
                Some((_, before)) => before.merge(spec).map_err(|why| {
                    format!(
                        "{}: entries `{}` ({}) and `{}` ({}) both name it and clash: {why}",
                        f.name, before.text, before.origin, spec.text, spec.origin
                    )
                }),
            };
            match merged {
                Ok(m) => {
                    chosen.functions.insert(f.name.clone(), (f, m));
                }
                Err(why) => chosen.refusals.push(why),
            }
        }
    }
    chosen
}

/// `gotel --list [SPECS]`: what the specs would attach to in the target's executable, one
/// line per function, refusals with their reasons; nothing is attached and nothing is run.
pub fn list_command(cli: &Cli) -> Result<String, Failure> {
    let specs = match cli.list.as_deref() {
        Some(text) if !text.trim().is_empty() => spec::parse_source("--list", text).map_err(Failure::config)?,
        _ => cli.probe_specs()?,
    };
    if specs.is_empty() {
        return Err(Failure::config(
            "--list: no probe specs to list: give them as `--list SPECS`, GOTEL_PROBES or --probe",
        ));
    }
    let path = match cli.target()? {
        Target::Pid(pid) => target::existing(pid)?.exe,
        Target::Exe(path) => path,
        Target::Launch(cmd) => target::resolve_program(&cmd[0])
            .ok_or_else(|| Failure::target(format!("cannot find {}: no such file (looked in PATH)", cmd[0])))?,
        Target::Node(_) => {
            return Err(Failure::config("--list: name one binary with --exe PATH or --pid PID, not --node"))
        }
    };
    let bin = GoBinary::open(&path).map_err(Failure::target)?;
    Ok(list(&bin, &specs, &crate::config::limits()?))
}

/// The text `--list` prints: one line per function (name, entry probe offset, return points,
/// attributes, or why it is refused), then refusals of whole entries, then a summary.
pub fn list(bin: &GoBinary, specs: &[ProbeSpec], limits: &Limits) -> String {
    use std::fmt::Write;
    let chosen = choose(bin, specs);
    let mut out = String::new();
    let mut refused = chosen.refusals.len();
    for (i, (name, (function, spec))) in chosen.functions.iter().enumerate() {
        match plan::user_probe(i, bin, function, spec, limits) {
            Ok((probe, warnings)) => {
                let entry = if probe.at_function_start {
                    "entry +0x0 (no stack-check prologue)".to_string()
                } else {
                    format!("entry {:+#x}", probe.entry_offset)
                };
                let rets = probe.ret_offsets.len() - probe.tail_jumps.len();
                let mut exits = format!("{rets} RET");
                if !probe.tail_jumps.is_empty() {
                    let _ = write!(exits, " + {} tail jump (no results)", probe.tail_jumps.len());
                }
                let keys: Vec<&str> = probe.attributes.slots.iter().map(|s| s.key.as_str()).collect();
                let _ = write!(out, "{name}\t{entry}\t{exits}");
                if !keys.is_empty() {
                    let _ = write!(out, "\tattributes: {}", keys.join(", "));
                }
                out.push('\n');
                for w in warnings {
                    let _ = writeln!(out, "  warning: {w}");
                }
            }
            Err(why) => {
                refused += 1;
                let _ = writeln!(out, "{name}\tREFUSED: {why}");
            }
        }
    }
    for why in &chosen.refusals {
        let _ = writeln!(out, "REFUSED: {why}");
    }
    let _ = writeln!(
        out,
        "{} functions would be traced, {refused} refused ({} probe entries, {})",
        chosen.functions.len() - (refused - chosen.refusals.len()),
        specs.len(),
        bin.path
    );
    out
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
    fn a_receiver_pointer_is_part_of_the_name() {
        assert!(!is_glob("sync.(*Mutex).Lock"));
        assert!(glob_match("sync.(*Mutex).Lock", "sync.(*Mutex).Lock"));
        assert!(!glob_match("sync.(*Mutex).Lock", "sync.(*RWMutex).Lock"));
        assert!(!glob_match("bufio.(*Writer).Flush", "bufio.(*ReadWriter).Flush"));
        let h = "github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy.(*Handler).ServeHTTP";
        assert!(!glob_match(h, &h.replace("(*Handler)", "(*CopyResponseHandler)")));
        // Globs elsewhere still glob, receivers included.
        assert!(is_glob("main.(*Store).*"));
        assert!(glob_match("main.(*Store).*", "main.(*Store).Get"));
        assert!(!glob_match("main.(*Store).*", "main.(*StoreX).Get"));
        assert!(glob_match("main.(*S*).Get", "main.(*Store).Get"));
        assert!(!glob_match("main.(*S*).Get", "main.Store.Get"));
        assert!(glob_match("main.(*Stack[*]).Push", "main.(*Stack[go.shape.string]).Push"));
        assert!(glob_match("main.(*Stack[*]).Push", "main.(*Stack[go.shape.*uint8]).Push"));
        assert!(!glob_match("main.(*Stack[*]).Push", "main.(*Stack[go.shape.int]).Pop"));
        assert!(glob_match("*(*Mutex).Lock", "sync.(*Mutex).Lock"));
        assert!(!glob_match("*(*Mutex).Lock", "sync.(*RWMutex).Lock"));
    }

    #[test]
    fn generated_functions_are_skipped_by_globs() {
        assert!(generated("main.init"));
        assert!(generated("main.init.0"));
        assert!(generated("main.(*T).M-fm"));
        assert!(!generated("main.(*Store).Get"));
    }
}
