use super::*;

/// The value of attribute `key` among a span's `attrs`, as text; `None` when it has none.
pub(super) fn attribute(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.as_str().into_owned())
}

#[test]
fn libraries_parse() {
    let names = |v: &str| parse_libraries(v).unwrap().iter().map(|l| l.name).collect::<Vec<_>>();
    let all = ["http.server", "http.client", "database.sql", "redis", "grpc.server", "grpc.client", "join.same_node"];
    assert_eq!(names(""), all);
    assert_eq!(names("all"), all);
    assert_eq!(names("grpc.server,grpc.client"), ["grpc.server", "grpc.client"]);
    assert_eq!(names(" http.client "), ["http.client"]);
    assert!(names("none").is_empty());
    let e = parse_libraries("http.server,grpc").unwrap_err().to_string();
    assert!(
        e.contains("unknown instrumentation `grpc`")
            && e.contains("http.server, http.client, database.sql, redis, grpc.server"),
        "{e}"
    );
    // Only selectable units are names the user can give.
    assert!(parse_libraries("goroutines").is_err());
}

#[test]
fn registry_is_consistent() {
    for (i, u) in ALL.iter().enumerate() {
        assert!(!u.name.is_empty() && !u.doc.is_empty(), "unit {i} lacks a name or doc");
        assert!(ALL[..i].iter().all(|o| o.name != u.name), "{} registered twice", u.name);
        // Span units are the selectable ones, and join.same_node (a choice, without spans).
        let choice = u.name == super::join_same_node::JOIN_SAME_NODE.name;
        assert_eq!(u.selectable, u.span.is_some() || choice, "{}: span units are the selectable ones", u.name);
        assert!(u.span.is_some() || u.more_spans.is_empty(), "{}: more_spans without span", u.name);
        for span in u.spans() {
            assert!(spec::parse_probes(span.spec).is_ok_and(|s| s.len() == 1 && s[0].symbol == span.symbol));
        }
        for h in u.hooks {
            assert!(h.program.starts_with("gotel_"), "{}: program {}", u.name, h.program);
        }
    }
    // The RETs of a function are attached before its entry: no entry without its return.
    for u in ALL {
        for (i, h) in u.hooks.iter().enumerate() {
            if h.at == At::Returns {
                assert!(u.hooks[..i].iter().all(|e| e.function != h.function || e.at != At::Entry), "{}", u.name);
            }
        }
    }
}

/// The README's table of instrumentations is the registry's.
#[test]
fn readme_table_matches_registry() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    let readme = std::fs::read_to_string(path).unwrap();
    let (begin, end) = ("<!-- instrumentations:begin -->\n", "<!-- instrumentations:end -->");
    let start = readme.find(begin).expect("README has the instrumentations markers") + begin.len();
    let stop = readme[start..].find(end).expect("end marker") + start;
    let want = readme_table();
    if readme[start..stop] != want {
        if std::env::var_os("GOTEL_BLESS").is_some() {
            std::fs::write(path, format!("{}{want}{}", &readme[..start], &readme[stop..])).unwrap();
        } else {
            panic!("README's instrumentations table is stale (GOTEL_BLESS=1 rewrites it); expected:\n{want}");
        }
    }
}

#[test]
fn summary_names_every_unit_counter() {
    let s = summary_counters(|c| c as u64);
    assert!(s.contains("traceparent_adopted=9") && s.contains("traceparent_injected=11"), "{s}");
    assert!(s.contains("socket_injected=16 "), "{s}");
    // The socket path's counters only when it did something; the memory path's always (their
    // zero says nothing was written into the target).
    let s = summary_counters(|c| if c == Counter::TraceparentAdopted { 1 } else { 0 });
    assert!(s.contains("traceparent_injected=0") && !s.contains("socket_"), "{s}");
}
