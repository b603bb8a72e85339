use super::testutil::*;
use super::*;

fn ty<'a>(d: &'a DwarfInfo, f: &FunctionInfo, param: &str) -> &'a GoType {
    let p = f.params.iter().find(|p| p.name == param).unwrap_or_else(|| panic!("{}: no {param}", f.name));
    d.types.get(p.ty).unwrap()
}

fn check_attrs_binary(go: &std::path::Path) {
    let b = build_go(go, "attrs", DWARF_FLAGS);
    let d = load_dwarf(&b.path).expect("has DWARF");
    let v = &b.version;

    let f = d.function("main.MixedMany").unwrap_or_else(|| panic!("{v}: MixedMany"));
    let names: Vec<_> = f.params.iter().map(|p| (p.name.as_str(), p.is_result)).collect();
    assert_eq!(
        names[..7],
        [("a", false), ("b", false), ("c", false), ("d", false), ("e", false), ("f", false), ("g", false)],
        "{v}"
    );
    assert_eq!(f.results().count(), 2, "{v}");
    assert_eq!(ty(&d, f, "a").kind, Kind::String, "{v}");
    assert_eq!(ty(&d, f, "g").kind, Kind::Int, "{v}");
    assert_eq!(ty(&d, f, "g").size, 1, "{v}");
    assert!(f.decl_file.as_deref().unwrap_or("").ends_with("attrs/main.go"), "{v}: {:?}", f.decl_file);
    assert!(f.decl_line.is_some(), "{v}");

    // Receiver first, pointer to a struct with fields.
    let g = d.function("main.(*Store).Get").unwrap_or_else(|| panic!("{v}: Store.Get"));
    assert_eq!(g.params[0].name, "s", "{v}");
    let Kind::Pointer(Some(target)) = d.types.get(g.params[0].ty).unwrap().kind else { panic!("{v}: receiver") };
    let (_, store) = d.types.underlying(target).unwrap();
    assert_eq!(store.name, "main.Store", "{v}");
    assert!(matches!(&store.kind, Kind::Struct(f) if f.len() == 3), "{v}");
    assert_eq!(d.types.field(target, "hits").map(|f| f.0), Some(24), "{v}");
    let Kind::Map = d.types.underlying(d.types.field(target, "items").unwrap().1.unwrap()).unwrap().1.kind else {
        panic!("{v}: map field")
    };
    // Value receiver.
    let c = d.function("main.Counter.Value").unwrap_or_else(|| panic!("{v}: Counter.Value"));
    assert_eq!(c.params.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["c", "extra", "~r0"], "{v}");

    // Named types keep their names; error and other interfaces.
    let n = d.function("main.Named").unwrap();
    assert_eq!(ty(&d, n, "id").name, "main.UserID", "{v}");
    assert_eq!(ty(&d, n, "id").kind, Kind::Int, "{v}");
    assert_eq!(d.types.underlying(n.params[1].ty).unwrap().1.kind, Kind::String, "{v}");
    let fail = d.function("main.Fail").unwrap();
    let err = fail.params.iter().find(|p| p.name == "err").unwrap();
    assert!(err.is_result, "{v}");
    assert_eq!(d.types.get(err.ty).unwrap().name, "error", "{v}");
    assert_eq!(d.types.underlying(err.ty).unwrap().1.kind, Kind::Interface { empty: false }, "{v}");
    let i = d.function("main.Iface").unwrap();
    assert_eq!(d.types.underlying(i.params[0].ty).unwrap().1.kind, Kind::Interface { empty: true }, "{v}");
    assert_eq!(d.types.underlying(i.params[1].ty).unwrap().1.kind, Kind::Interface { empty: false }, "{v}");

    // Slices know their element; arrays their length.
    let s = d.function("main.Strings").unwrap();
    let Kind::Slice(Some(e)) = ty(&d, s, "b").kind else { panic!("{v}: []byte") };
    assert_eq!(d.types.get(e).unwrap().name, "uint8", "{v}");
    let grid = d.function("main.GridArg").unwrap();
    let (_, gt) = d.types.underlying(grid.params[1].ty).unwrap();
    assert_eq!(gt.size, 40, "{v}");
    let cells = d.types.field(grid.params[1].ty, "Cells").unwrap().1.unwrap();
    assert!(matches!(d.types.get(cells).unwrap().kind, Kind::Array { len: 3, .. }), "{v}");

    // Promoted fields of embedded structs.
    let p = d.function("main.Promoted").unwrap();
    assert_eq!(d.types.field(p.params[1].ty, "Kind").map(|f| f.0), Some(0), "{v}");
    assert_eq!(d.types.field(p.params[1].ty, "Size").map(|f| f.0), Some(16), "{v}");

    // Inlined-only vs. inlined-and-out-of-line.
    assert!(d.is_inlined_only("main.double"), "{v}");
    assert!(d.function("main.double").is_none(), "{v}");
    let small = d.function("main.Small").unwrap_or_else(|| panic!("{v}: Small concrete"));
    assert_eq!(
        small.params.iter().map(|p| (p.name.as_str(), p.is_result)).collect::<Vec<_>>(),
        [("a", false), ("s", false), ("~r0", true)],
        "{v}"
    );
    assert!(!d.is_inlined_only("main.Small"), "{v}");
    assert!(small.decl_file.is_some() && small.decl_line.is_some(), "{v}");

    // Locations at entry are read (compared against the ABI in abi's tests).
    let loc = f.params[0].entry_location.as_ref().unwrap_or_else(|| panic!("{v}: location of a"));
    assert_eq!(loc[0], LocPiece { loc: Loc::Reg(0), size: Some(8) }, "{v}");
    assert!(d.function_names().any(|n| n == "main.main"), "{v}");
}

#[test]
fn reads_go_dwarf_default_toolchain() {
    let Some(go) = default_go() else { return };
    check_attrs_binary(&go);
}

#[test]
fn reads_go_dwarf_version_matrix() {
    for go in go_matrix().iter().skip(1) {
        check_attrs_binary(go);
    }
}

#[test]
fn stripped_binary_has_no_dwarf() {
    let Some(go) = default_go() else { return };
    let b = build_go(&go, "attrs", &["-ldflags=-w -s"]);
    assert!(load_dwarf(&b.path).is_none());
}

#[test]
fn garbage_sections_do_not_panic() {
    // Random-ish bytes in every section: errors are fine, panics are not.
    let mut seed = 0x12345678u64;
    for len in [0usize, 1, 11, 64, 500, 4096] {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let section = |_: &str| -> Option<Cow<'_, [u8]>> { Some(Cow::Borrowed(&bytes[..])) };
        let _ = DwarfInfo::load(&section);
    }
    // Truncations of a real binary's sections.
    let Some(go) = default_go() else { return };
    let b = build_go(&go, "attrs", DWARF_FLAGS);
    let bytes = std::fs::read(&b.path).unwrap();
    let elf = goblin::elf::Elf::parse(&bytes).unwrap();
    for cut in [10usize, 100, 1000, 20000] {
        let section = |name: &str| -> Option<Cow<'_, [u8]>> {
            let sh = elf.section_headers.iter().find(|sh| elf.shdr_strtab.get_at(sh.sh_name) == Some(name))?;
            let start = sh.sh_offset as usize;
            let len = (sh.sh_size as usize).min(cut);
            bytes.get(start..start + len).map(Cow::Borrowed)
        };
        let _ = DwarfInfo::load(&section);
    }
}

/// Load time and memory on a large binary: `GOTEL_BIG_BINARY=/path cargo test ... -- --ignored`.
#[test]
#[ignore]
fn load_big_binary() {
    let path = std::env::var("GOTEL_BIG_BINARY").expect("GOTEL_BIG_BINARY");
    let t = std::time::Instant::now();
    let d = load_dwarf(std::path::Path::new(&path)).expect("DWARF");
    eprintln!("{} functions, {} types in {:?}", d.function_names().count(), d.types.len(), t.elapsed());
}
