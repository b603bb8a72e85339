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
    assert!(table.go.len() >= 5, "layout table has {} releases", table.go.len());
    for (release, layout) in &table.go {
        for f in fields().iter().filter(|f| f.module.is_none() && !f.optional) {
            let k = key(f.strukt, f.field);
            assert!(layout.contains_key(&k), "{release}: no {k}");
        }
    }
    // What gotel-layouts writes reads back the same.
    assert_eq!(Table::parse(&table.to_json()).unwrap(), table);
}

/// A field declared twice (by two instrumentations) is declared alike.
#[test]
fn declared_fields_agree() {
    let all: Vec<&FieldNeed> = instrumentations::ALL.iter().flat_map(|u| u.fields.iter()).collect();
    for f in fields() {
        for other in all.iter().filter(|o| (o.strukt, o.field) == (f.strukt, f.field)) {
            assert_eq!(**other, f, "{} declared differently", key(f.strukt, f.field));
        }
    }
}

/// Third-party layouts are keyed by module path and exact version from build info, beside the
/// standard library's Go release.
#[test]
fn module_layouts_follow_the_binary_s_module_versions() {
    let mut table = Table::default();
    table.go.insert("go1.26".into(), Layout::from([("net/http.Request.Method".into(), 0)]));
    let grpc = |off| Layout::from([("google.golang.org/grpc.Server.opts".to_string(), off)]);
    table.modules.insert(
        "google.golang.org/grpc".into(),
        BTreeMap::from([("v1.64.0".to_string(), grpc(24)), ("v1.65.0".to_string(), grpc(32))]),
    );
    let build = |deps: &[(&str, &str)]| BuildInfo {
        go_version: Some("go1.26.3".into()),
        deps: deps.iter().map(|(p, v)| (p.to_string(), v.to_string())).collect(),
        ..BuildInfo::default()
    };
    let l = layout_in(&table, &build(&[("google.golang.org/grpc", "v1.65.0")])).unwrap();
    assert_eq!(l.get("google.golang.org/grpc.Server.opts"), Some(&32));
    assert_eq!(l.get("net/http.Request.Method"), Some(&0));
    let l = layout_in(&table, &build(&[("google.golang.org/grpc", "v1.66.0")])).unwrap();
    assert_eq!(l.get("google.golang.org/grpc.Server.opts"), None, "no guess from another version");
    let back = Table::parse(&table.to_json()).unwrap();
    assert_eq!(back, table);
    let mut old = build(&[]);
    old.go_version = Some("go1.18.1".into());
    assert!(layout_in(&table, &old).unwrap_err().contains("go1.18 is not in gotel's layout table"));
}

/// The table says what the compiler says, for every Go on this machine: build the layouts
/// program with each and compare its DWARF field offsets with the table's entry.
#[test]
fn table_matches_dwarf_of_every_installed_go() {
    let table = table();
    let mut releases = Vec::new();
    for go in go_matrix() {
        let built = build_go(&go, "layouts", &["-ldflags=-compressdwarf=false"]);
        let bin = crate::binary::GoBinary::open(&built.path).unwrap();
        let release = release_of(bin.build.go_version.as_deref().unwrap()).unwrap();
        let actual = from_dwarf(bin.dwarf.as_ref().expect("DWARF"), None).unwrap();
        let listed = table.go.get(&release).unwrap_or_else(|| {
            panic!("{release} ({}) is not in go_layouts.json: run tools/gen-go-layouts.sh", go.display())
        });
        assert_eq!(listed, &actual, "{release}: go_layouts.json differs from the compiler's DWARF");
        releases.push(release);
    }
    // go_matrix() named the listed toolchains that are missing (a failure under
    // GOTEL_TEST_REQUIRE_ALL=1, as tools/test.sh runs it).
}

/// The synthetic DWARF gives the instrumentations' specs the same fetches as the real DWARF:
/// the standard library's spans on `layouts`, the database modules' on `dbsvc` (which links
/// them); every span probe is checked on one of them.
#[test]
fn synthetic_dwarf_plans_like_real_dwarf() {
    use crate::attributes::{plan_function, Limits};
    let Some(go) = default_go() else { return };
    let limits = Limits::default();
    let mut checked = std::collections::BTreeSet::new();
    let mut fake = None;
    let mut real_layouts = None;
    for app in ["layouts", "dbsvc"] {
        let built = build_go(&go, app, &["-ldflags=-compressdwarf=false"]);
        let real = load_dwarf(&built.path).expect("DWARF");
        let mut layout = from_dwarf(&real, None).unwrap();
        for module in modules() {
            // A module the program does not link has no (required) fields in its DWARF.
            if let Ok(l) = from_dwarf(&real, Some(module)) {
                layout.extend(l);
            }
        }
        let synth = synthetic_dwarf(&layout);
        for (unit, span) in instrumentations::ALL.iter().flat_map(|u| u.spans().map(move |s| (u, s))) {
            if real.function(span.symbol).is_none() {
                continue;
            }
            let specs = crate::spec::parse_probes(span.spec).unwrap();
            let plan = |d: &DwarfInfo| {
                let info = d.function(span.symbol).unwrap();
                let mut p = plan_function(span.symbol, Some(info), Some(d), &specs[0].attrs, &limits).unwrap();
                if let Some(extend) = span.extend {
                    extend(&mut p, d, info, &limits).unwrap();
                }
                p
            };
            let (a, b) = (plan(&real), plan(&synth));
            assert_eq!(
                format!("{:?}", a.fetches),
                format!("{:?}", b.fetches),
                "{} ({}, {app})",
                unit.name,
                span.symbol
            );
            checked.insert(span.symbol);
        }
        if app == "layouts" {
            fake = Some(synth);
            real_layouts = Some(real);
        }
    }
    let all: std::collections::BTreeSet<&str> =
        instrumentations::ALL.iter().flat_map(|u| u.spans()).map(|s| s.symbol).collect();
    // go-redis v9.23's command path: dbsvc pins v9.7.0 (e2e-tested); checked by hand on v9.23.0.
    let newer_only = [instrumentations::redis::PROCESS_STARTING_AT];
    let all = all.into_iter().filter(|s| !newer_only.contains(s)).collect();
    assert_eq!(checked, all, "span probes no test program links");
    let (fake, real) = (fake.unwrap(), real_layouts.unwrap());
    let w = fake.types.struct_named("bufio.Writer").expect("bufio.Writer, declared by inject.memory");
    assert_eq!(fake.types.field(w, "n").map(|f| f.0), real.types.struct_field("bufio.Writer", "n").map(|f| f.0));
}
