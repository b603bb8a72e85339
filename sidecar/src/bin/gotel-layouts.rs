//! `gotel-layouts [--modules] BINARY...`: reads the field offsets the built-in instrumentations declare
//! (`gotel::go_layouts::fields`) from the DWARF of Go binaries and prints the layout table
//! (`sidecar/src/go_layouts.json`) with their entries added or replaced: the standard library's
//! under the binary's Go release, a module's under its path and the version the binary's build
//! info names. Used by `tools/gen-go-layouts.sh`, which builds `e2e/goapps/layouts` with every
//! Go release. `--modules` leaves the standard-library part alone and adds only the modules'
//! layouts (`tools/gen-grpc-layouts.sh`: a program that links grpc-go, built per grpc-go
//! version, need not link every standard-library type the table has).
use std::{path::PathBuf, process::ExitCode};

use gotel::{binary::GoBinary, go_layouts};

fn main() -> ExitCode {
    let mut paths: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let modules_only = paths.first().is_some_and(|p| p.as_os_str() == "--modules");
    if modules_only {
        paths.remove(0);
    }
    if paths.is_empty() {
        eprintln!("usage: gotel-layouts [--modules] GO_BINARY_WITH_DWARF... > sidecar/src/go_layouts.json");
        return ExitCode::from(2);
    }
    let mut table = go_layouts::table();
    for path in &paths {
        if let Err(e) = add(&mut table, path, modules_only) {
            eprintln!("gotel-layouts: {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    println!("{}", table.to_json());
    ExitCode::SUCCESS
}

fn add(table: &mut go_layouts::Table, path: &std::path::Path, modules_only: bool) -> Result<(), String> {
    let bin = GoBinary::open(path).map_err(|e| e.to_string())?;
    let version = bin.build.go_version.clone().ok_or("no Go build info")?;
    let release = go_layouts::release_of(&version).ok_or_else(|| format!("unusable Go version {version:?}"))?;
    let dwarf = bin.dwarf.as_ref().ok_or("no DWARF (build without -ldflags=-w)")?;
    let mut found = Vec::new();
    if !modules_only {
        // Merged with what another program built by the same release gave: an optional field one
        // program does not link (dbsvc has no HTTP client) keeps the other's offset.
        table.go.entry(release.clone()).or_default().extend(go_layouts::from_dwarf(dwarf, None)?);
        found.push(release);
    }
    for module in go_layouts::modules() {
        if let Some((_, v)) = bin.build.deps.iter().find(|(p, v)| p == module && !v.starts_with("=>")) {
            let layout = go_layouts::from_dwarf(dwarf, Some(module))?;
            table.modules.entry(module.to_string()).or_default().insert(v.clone(), layout);
            found.push(format!("{module}@{v}"));
        }
    }
    eprintln!("gotel-layouts: {}: {}", path.display(), found.join(", "));
    Ok(())
}
