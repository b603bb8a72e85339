//! `gotel-layouts BINARY...`: reads the standard-library field offsets the HTTP spans need
//! (`gotel::go_layouts::FIELDS`) from the DWARF of Go binaries and prints the layout table
//! (`sidecar/src/go_layouts.json`) with their releases added or replaced. Used by
//! `tools/gen-go-layouts.sh`, which builds `e2e/goapps/httpsvc` with every Go release.
use std::{collections::BTreeMap, path::PathBuf, process::ExitCode};

use gotel::{binary::GoBinary, go_layouts};

fn main() -> ExitCode {
    let paths: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if paths.is_empty() {
        eprintln!("usage: gotel-layouts GO_BINARY_WITH_DWARF... > sidecar/src/go_layouts.json");
        return ExitCode::from(2);
    }
    let mut table: BTreeMap<String, go_layouts::Layout> = go_layouts::table();
    for path in &paths {
        let layout = GoBinary::open(path).map_err(|e| e.to_string()).and_then(|bin| {
            let version = bin.build.go_version.clone().ok_or("no Go build info")?;
            let release = go_layouts::release_of(&version).ok_or_else(|| format!("unusable Go version {version:?}"))?;
            let dwarf = bin.dwarf.as_ref().ok_or("no DWARF (build without -ldflags=-w)")?;
            Ok::<_, String>((release, go_layouts::from_dwarf(dwarf)?))
        });
        match layout {
            Ok((release, layout)) => {
                eprintln!("gotel-layouts: {}: {release}", path.display());
                table.insert(release, layout);
            }
            Err(e) => {
                eprintln!("gotel-layouts: {}: {e}", path.display());
                return ExitCode::from(1);
            }
        }
    }
    match serde_json::to_string_pretty(&table) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gotel-layouts: {e}");
            ExitCode::from(1)
        }
    }
}
