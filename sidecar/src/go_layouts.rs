//! Standard-library struct layouts per Go release, so the built-in HTTP spans work on binaries
//! built without DWARF (`-ldflags=-w`, or `-s -w`, the usual production build).
//!
//! The HTTP instrumentations read a handful of fields (`http.Request.Method`, `url.URL.Path`,
//! `http.response.status`, ...). With DWARF their offsets come from the binary itself. Without
//! it they come from `go_layouts.json`, which `gotel-layouts` writes from the DWARF of real
//! builds of `e2e/goapps/httpsvc` with every Go release this machine has (`tools/gen-go-layouts.sh`).
//! A unit test rebuilds with every installed Go and compares the table with the compiler's DWARF.
//!
//! Decision: only an exact `go1.N` match is used. Field offsets of unexported types
//! (`http.response`, the bundled HTTP/2 server) change between releases; guessing from the
//! nearest release could read the wrong field and report a wrong status. A release missing from
//! the table gets a clear message instead (HTTP spans off, user probes unaffected).
use std::collections::BTreeMap;

use crate::dwarf::{DwarfInfo, Field, FunctionInfo, GoType, Kind, Param, TypeId, TypeTable};

/// Every field the HTTP instrumentations (and header injection) read: (struct, field).
/// `net/http.Request.Pattern` exists from Go 1.22 on, and the HTTP/2 types moved in Go 1.27
/// (see [`OPTIONAL`]); the others are in every supported release.
pub const FIELDS: &[(&str, &str)] = &[
    ("net/http.Request", "Method"),
    ("net/http.Request", "URL"),
    ("net/http.Request", "ProtoMajor"),
    ("net/http.Request", "ProtoMinor"),
    ("net/http.Request", "Host"),
    ("net/http.Request", "RemoteAddr"),
    ("net/http.Request", "Pattern"),
    ("net/url.URL", "Scheme"),
    ("net/url.URL", "Host"),
    ("net/url.URL", "Path"),
    ("net/url.URL", "RawQuery"),
    ("net/http.Response", "StatusCode"),
    ("net/http.response", "status"),
    // HTTP/2 server status: bundled in net/http up to Go 1.26 ...
    ("net/http.http2responseWriter", "rws"),
    ("net/http.http2responseWriterState", "status"),
    // ... and from Go 1.27 in net/http/internal/http2 (net/http.http2ResponseWriter is then
    // `struct{ *http2.responseWriter }`, pointer-shaped, so the interface holds that pointer).
    ("net/http/internal/http2.responseWriter", "rws"),
    ("net/http/internal/http2.responseWriterState", "status"),
    ("bufio.Writer", "buf"),
    ("bufio.Writer", "n"),
];

/// Fields a release may lack without making the layout unusable.
const OPTIONAL: &[&str] = &[
    "net/http.Request.Pattern",
    "net/http.http2responseWriter.rws",
    "net/http.http2responseWriterState.status",
    "net/http/internal/http2.responseWriter.rws",
    "net/http/internal/http2.responseWriterState.status",
];

/// Offsets by `struct.field` key (`net/http.Request.Method`).
pub type Layout = BTreeMap<String, u64>;

const TABLE: &str = include_str!("go_layouts.json");

/// The whole table: `go1.N` -> layout.
pub fn table() -> BTreeMap<String, Layout> {
    // The file is generated and checked by tests; a broken one is a build defect, so an empty
    // table (HTTP spans off for stripped binaries, with a message) is the safe fallback.
    serde_json::from_str(TABLE).unwrap_or_default()
}

/// `go1.26.8` -> `go1.26`; `None` for development builds and unparsable versions.
pub fn release_of(version: &str) -> Option<String> {
    let rest = version.strip_prefix("go1.")?;
    let minor: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    (!minor.is_empty()).then(|| format!("go1.{minor}"))
}

/// The layout of the binary's Go release, or why there is none.
pub fn layout_for(go_version: Option<&str>) -> Result<Layout, String> {
    let version = go_version.ok_or("the binary has neither DWARF nor Go build info")?;
    let release = release_of(version).ok_or_else(|| format!("no layout table for Go version {version:?}"))?;
    let table = table();
    table.get(&release).cloned().ok_or_else(|| {
        let known: Vec<&str> = table.keys().map(String::as_str).collect();
        format!(
            "the binary has no DWARF and {release} is not in gotel's layout table ({}); build without -ldflags=-w or use a gotel that knows {release}",
            known.join(", ")
        )
    })
}

/// Key of one field in a [`Layout`].
pub fn key(strukt: &str, field: &str) -> String {
    format!("{strukt}.{field}")
}

/// Reads the offsets of [`FIELDS`] from a binary's DWARF (the generator and the test).
pub fn from_dwarf(d: &DwarfInfo) -> Result<Layout, String> {
    let mut out = Layout::new();
    for (strukt, field) in FIELDS {
        let k = key(strukt, field);
        match d.types.struct_field(strukt, field) {
            Some((off, _)) => {
                out.insert(k, off);
            }
            None if OPTIONAL.contains(&k.as_str()) => {}
            None => return Err(format!("no {k} in the binary's DWARF")),
        }
    }
    Ok(out)
}

/// Just enough DWARF, made from a layout, for the HTTP instrumentations' probe specs to plan as
/// they do with real DWARF: the types of the fields they read and the signatures of
/// `net/http.serverHandler.ServeHTTP` and `net/http.(*Transport).roundTrip`.
pub fn synthetic_dwarf(layout: &Layout) -> DwarfInfo {
    let mut t = TypeTable::new();
    let basic = |t: &mut TypeTable, name: &str, size: u64, kind: Kind| t.add(GoType { name: name.into(), size, kind });
    let string = basic(&mut t, "string", 16, Kind::String);
    let int = basic(&mut t, "int", 8, Kind::Int);
    let byte = basic(&mut t, "uint8", 1, Kind::Uint);
    let bytes = basic(&mut t, "[]uint8", 24, Kind::Slice(Some(byte)));
    let opaque = basic(&mut t, "unsafe.Pointer", 8, Kind::Pointer(None));
    let iface = basic(&mut t, "net/http.ResponseWriter", 16, Kind::Interface { empty: false });
    let error = basic(&mut t, "error", 16, Kind::Interface { empty: false });
    // Structs with only the fields the layout knows; sizes are not needed behind pointers.
    let strukt = |t: &mut TypeTable, name: &str, fields: &[(&str, TypeId)]| {
        let fields = fields
            .iter()
            .filter_map(|(f, ty)| {
                let offset = *layout.get(&key(name, f))?;
                Some(Field { name: f.to_string(), offset, ty: Some(*ty), embedded: false })
            })
            .collect();
        t.add(GoType { name: name.into(), size: 0, kind: Kind::Struct(fields) })
    };
    let pointer = |t: &mut TypeTable, to: TypeId| {
        let name = format!("*{}", t.name(Some(to)));
        t.add(GoType { name, size: 8, kind: Kind::Pointer(Some(to)) })
    };
    let url =
        strukt(&mut t, "net/url.URL", &[("Scheme", string), ("Host", string), ("Path", string), ("RawQuery", string)]);
    let url_ptr = pointer(&mut t, url);
    let request = strukt(
        &mut t,
        "net/http.Request",
        &[
            ("Method", string),
            ("URL", url_ptr),
            ("ProtoMajor", int),
            ("ProtoMinor", int),
            ("Host", string),
            ("RemoteAddr", string),
            ("Pattern", string),
        ],
    );
    let request_ptr = pointer(&mut t, request);
    let response = strukt(&mut t, "net/http.Response", &[("StatusCode", int)]);
    let response_ptr = pointer(&mut t, response);
    strukt(&mut t, "net/http.response", &[("status", int)]);
    let h2_state = strukt(&mut t, "net/http.http2responseWriterState", &[("status", int)]);
    let h2_state_ptr = pointer(&mut t, h2_state);
    strukt(&mut t, "net/http.http2responseWriter", &[("rws", h2_state_ptr)]);
    let h2_state = strukt(&mut t, "net/http/internal/http2.responseWriterState", &[("status", int)]);
    let h2_state_ptr = pointer(&mut t, h2_state);
    strukt(&mut t, "net/http/internal/http2.responseWriter", &[("rws", h2_state_ptr)]);
    strukt(&mut t, "bufio.Writer", &[("buf", bytes), ("n", int)]);
    // serverHandler is `struct{ srv *Server }`: one pointer word, passed in a register.
    let handler = t.add(GoType {
        name: "net/http.serverHandler".into(),
        size: 8,
        kind: Kind::Struct(vec![Field { name: "srv".into(), offset: 0, ty: Some(opaque), embedded: false }]),
    });

    let param =
        |name: &str, ty: TypeId, is_result: bool| Param { name: name.into(), ty, is_result, entry_location: None };
    let function = |name: &str, params: Vec<Param>| FunctionInfo {
        name: name.into(),
        low_pc: 0,
        decl_file: None,
        decl_line: None,
        params,
    };
    let functions = vec![
        function(
            "net/http.serverHandler.ServeHTTP",
            vec![param("sh", handler, false), param("rw", iface, false), param("req", request_ptr, false)],
        ),
        function(
            "net/http.(*Transport).roundTrip",
            vec![
                param("t", opaque, false),
                param("req", request_ptr, false),
                param("~r0", response_ptr, true),
                param("~r1", error, true),
            ],
        ),
    ];
    DwarfInfo::from_parts(t, functions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dwarf::testutil::{build_go, default_go, go_matrix, load_dwarf};

    #[test]
    fn releases_are_cut_from_versions() {
        assert_eq!(release_of("go1.26.8").as_deref(), Some("go1.26"));
        assert_eq!(release_of("go1.22rc1").as_deref(), Some("go1.22"));
        assert_eq!(release_of("go1.19").as_deref(), Some("go1.19"));
        assert_eq!(release_of("devel go1.27-abc"), None);
    }

    #[test]
    fn table_parses_and_covers_every_field() {
        let table = table();
        assert!(table.len() >= 5, "layout table has {} releases", table.len());
        for (release, layout) in &table {
            for (s, f) in FIELDS {
                let k = key(s, f);
                assert!(layout.contains_key(&k) || OPTIONAL.contains(&k.as_str()), "{release}: no {k}");
            }
        }
    }

    /// The table says what the compiler says, for every Go on this machine: build the layouts
    /// program with each and compare its DWARF field offsets with the table's entry.
    #[test]
    fn table_matches_dwarf_of_every_installed_go() {
        let table = table();
        for go in go_matrix() {
            let built = build_go(&go, "layouts", &["-ldflags=-compressdwarf=false"]);
            let bin = crate::binary::GoBinary::open(&built.path).unwrap();
            let release = release_of(bin.build.go_version.as_deref().unwrap()).unwrap();
            let actual = from_dwarf(bin.dwarf.as_ref().expect("DWARF")).unwrap();
            let listed = table.get(&release).unwrap_or_else(|| {
                panic!("{release} ({}) is not in go_layouts.json: run tools/gen-go-layouts.sh", go.display())
            });
            assert_eq!(listed, &actual, "{release}: go_layouts.json differs from the compiler's DWARF");
        }
        // go_matrix() named the listed toolchains that are missing (a failure under
        // GOTEL_TEST_REQUIRE_ALL=1, as tools/test.sh runs it).
    }

    /// The synthetic DWARF gives the HTTP specs the same fetches as the real DWARF.
    #[test]
    fn synthetic_dwarf_plans_like_real_dwarf() {
        use crate::attributes::{plan_function, Limits};
        let Some(go) = default_go() else { return };
        let built = build_go(&go, "layouts", &["-ldflags=-compressdwarf=false"]);
        let real = load_dwarf(&built.path).expect("DWARF");
        let fake = synthetic_dwarf(&from_dwarf(&real).unwrap());
        let limits = Limits::default();
        for lib in crate::instrumentations::Library::ALL {
            let specs = crate::spec::parse_probes(lib.spec()).unwrap();
            let plan = |d: &DwarfInfo| {
                plan_function(lib.symbol(), d.function(lib.symbol()), Some(d), &specs[0].attrs, &limits).unwrap()
            };
            let (a, b) = (plan(&real), plan(&fake));
            assert_eq!(format!("{:?}", a.fetches), format!("{:?}", b.fetches), "{}", lib.name());
        }
    }
}
