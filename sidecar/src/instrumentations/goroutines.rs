//! Goroutine ancestry from `runtime.newproc1`, where every goroutine is born: its RETs hand the
//! new `g` the context of the spawning call (so a span in a goroutine started inside a traced
//! call gets that call as parent) and clear the state of a reused `g`.
//!
//! Cost: one trap per goroutine start. newproc1 runs on the system stack, so its RETs find the
//! spawning goroutine as `g0.m.curg` (offsets of `runtime.g.m` and `runtime.m.curg` from DWARF or
//! the layout table). When those offsets are unknown (a binary without DWARF of a Go release the
//! table lacks), [`GOROUTINES_ENTRY`] adds the entry hook that remembers the caller per M: two
//! traps, as before.
//!
//! `GOTEL_GOROUTINE_PARENTS=off` attaches neither: goroutine starts cost nothing, spans in
//! goroutines started inside traced calls start their own traces, and a reused `g` is not
//! cleared when it is handed out (frames of a goroutine that ended inside traced calls, after
//! `runtime.Goexit`, are then reported as unwound at the next traced call on that `g` at the
//! same or a shallower depth, and could parent a deeper one until then).
use gotel_shared::{NewprocConfig, COOKIE_NEWPROC_ENTRY, COOKIE_NEWPROC_RETURN};

use super::{types_of, Activation, At, FieldNeed, GoTy, HookSpec, Instrumentation, MapFill, Wanted};

const MISSING: &str = "runtime.newproc1 not found: spans in new goroutines will not get their spawning call as parent";

pub static GOROUTINES: Instrumentation = Instrumentation {
    name: "goroutines",
    doc: "a goroutine started inside a traced call gets that call as parent; reused `g`s start clean \
          (one probe per goroutine start; none with `GOTEL_GOROUTINE_PARENTS=off`)",
    // Opaque: only the offsets are used (`*m` and `*g` point at each other, a type cycle).
    fields: &[FieldNeed::std("runtime.g", "m", GoTy::Opaque), FieldNeed::std("runtime.m", "curg", GoTy::Opaque)],
    hooks: &[HookSpec {
        program: gotel_shared::names::PROGRAM_NEWPROC_RETURN,
        function: "runtime.newproc1",
        at: At::Returns,
        cookie: COOKIE_NEWPROC_RETURN,
    }],
    wanted: |s| if s.goroutine_parents { Wanted::Yes } else { Wanted::No },
    missing_hooks: Some(MISSING),
    prepare: Some(prepare),
    ..Instrumentation::BASE
};

/// The entry hook, only for binaries whose `runtime.g` / `runtime.m` offsets are unknown.
pub static GOROUTINES_ENTRY: Instrumentation = Instrumentation {
    name: "goroutines.entry",
    doc: "with *goroutines*, when the offsets of `runtime.g.m` and `runtime.m.curg` are unknown: remembers the \
          spawning goroutine at newproc1's entry (a second probe per goroutine start)",
    hooks: &[HookSpec {
        program: gotel_shared::names::PROGRAM_NEWPROC_ENTRY,
        function: "runtime.newproc1",
        at: At::Entry,
        cookie: COOKIE_NEWPROC_ENTRY,
    }],
    wanted: |s| if s.goroutine_parents && offsets(s.bin).is_none() { Wanted::Yes } else { Wanted::No },
    ..Instrumentation::BASE
};

fn prepare(a: &mut Activation) -> Result<(), String> {
    if let Some(config) = offsets(a.bin) {
        a.map_fills.push(MapFill::array(GOROUTINES.name, "NEWPROC_CONFIG", config));
    }
    Ok(())
}

fn offsets(bin: &crate::binary::GoBinary) -> Option<NewprocConfig> {
    let dwarf = types_of(bin).ok()?;
    let t = &dwarf.types;
    Some(NewprocConfig {
        enabled: 1,
        g_m: t.struct_field("runtime.g", "m")?.0 as u32,
        m_curg: t.struct_field("runtime.m", "curg")?.0 as u32,
        _pad: 0,
    })
}

/// `GOTEL_GOROUTINE_PARENTS`: `on` (default) or `off`.
pub fn parents_from_env() -> Result<bool, crate::exit::Failure> {
    parse_parents(&std::env::var("GOTEL_GOROUTINE_PARENTS").unwrap_or_default())
}

fn parse_parents(value: &str) -> Result<bool, crate::exit::Failure> {
    match value.trim() {
        "" | "on" => Ok(true),
        "off" => Ok(false),
        other => Err(crate::exit::Failure::config(format!(
            "GOTEL_GOROUTINE_PARENTS={other}: use on (default: a goroutine started inside a traced call gets \
             that call as parent, one probe per goroutine start) or off (no probe: such goroutines start new traces)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_setting_is_on_or_off() {
        assert!(super::parse_parents("").unwrap());
        assert!(super::parse_parents(" on").unwrap());
        assert!(!super::parse_parents("off").unwrap());
        let e = super::parse_parents("no").unwrap_err().to_string();
        assert!(e.contains("GOTEL_GOROUTINE_PARENTS=no") && e.contains("off"), "{e}");
    }
}
