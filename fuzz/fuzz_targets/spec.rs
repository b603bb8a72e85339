//! `GOTEL_PROBES` parser: any text gives specs or a positioned error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match gotel::spec::parse_probes(text) {
        Ok(specs) => {
            for s in &specs {
                let _ = format!("{s:?}");
            }
        }
        Err(e) => {
            // The message the user sees (with the caret line) must render.
            let _ = e.to_string();
        }
    }
});
