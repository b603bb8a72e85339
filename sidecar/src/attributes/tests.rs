use super::*;
use crate::dwarf::testutil::*;
use crate::spec::parse_probes;
use gotel_shared::*;
use std::path::Path;

const LIMITS: Limits = Limits { max_string: 64, max_attributes: 128 };

fn dwarf_for(go: &Path) -> (DwarfInfo, String) {
    let b = build_go(go, "attrs", DWARF_FLAGS);
    (load_dwarf(&b.path).expect("DWARF"), b.version.clone())
}

fn default_dwarf() -> &'static DwarfInfo {
    static D: std::sync::OnceLock<DwarfInfo> = std::sync::OnceLock::new();
    D.get_or_init(|| dwarf_for(&default_go().expect("the test starts with require_go!()")).0)
}

fn plan_with(d: Option<&DwarfInfo>, probe: &str) -> Result<AttributePlan, AttrError> {
    let spec = parse_probes(probe).unwrap().remove(0);
    let info = d.and_then(|d| d.function(&spec.symbol));
    plan_function(&spec.symbol, info, d, &spec.attrs, &LIMITS)
}

fn plan(probe: &str) -> AttributePlan {
    plan_with(Some(default_dwarf()), probe).unwrap_or_else(|e| panic!("{probe}: {e}"))
}

fn err(probe: &str) -> String {
    match plan_with(Some(default_dwarf()), probe) {
        Ok(p) => panic!("{probe}: expected an error, got {p:?}"),
        Err(e) => e.to_string(),
    }
}

/// (root, regs, stack offset, hops, kind, at_return) of a fetch, for compact assertions.
#[derive(Debug, PartialEq)]
enum At {
    Regs(Vec<u8>),
    Stack(i32),
}

fn at(f: &Fetch) -> (At, Vec<i32>, u8, u8) {
    let root = if f.root == Root::Registers as u8 {
        At::Regs(f.regs[..f.nregs as usize].to_vec())
    } else {
        At::Stack(f.stack_offset)
    };
    (root, f.hops[..f.nhops as usize].to_vec(), f.kind, f.at_return)
}

fn slot<'a>(p: &'a AttributePlan, key: &str) -> (&'a AttrSlot, &'a Fetch) {
    let i = p.slots.iter().position(|s| s.key.as_str() == key).unwrap_or_else(|| panic!("no slot {key}: {p:?}"));
    let f = p.fetches.iter().find(|f| f.slot as usize == i).unwrap();
    (&p.slots[i], f)
}

const S: u8 = ValueKind::String as u8;
const I: u8 = ValueKind::Int as u8;

#[test]
fn registers_stack_and_results() {
    require_go!();
    let p = plan("main.MixedMany(a=a, b=arg1, f=f, g=g, r0=ret0, r1=ret1)");
    assert_eq!(at(slot(&p, "a").1), (At::Regs(vec![REG_RAX, REG_RBX]), vec![], S, 0));
    assert_eq!(at(slot(&p, "b").1), (At::Regs(vec![REG_RCX]), vec![], I, 0));
    assert_eq!(at(slot(&p, "f").1), (At::Stack(8), vec![], S, 0));
    assert_eq!(at(slot(&p, "g").1), (At::Regs(vec![REG_R11]), vec![], I, 0));
    assert_eq!(slot(&p, "g").0.decode, Decode::Int { size: 1 });
    assert_eq!(at(slot(&p, "r0").1), (At::Regs(vec![REG_RAX, REG_RBX]), vec![], S, 1));
    assert_eq!(at(slot(&p, "r1").1), (At::Regs(vec![REG_RCX]), vec![], I, 1));
    assert_eq!(slot(&p, "a").1.max_len, 64);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);

    let p = plan("main.Many(a=a, i=i, j=j, l=l, r=ret0)");
    assert_eq!(at(slot(&p, "i").1).0, At::Regs(vec![REG_R11]));
    assert_eq!(at(slot(&p, "j").1).0, At::Stack(8));
    assert_eq!(at(slot(&p, "l").1).0, At::Stack(24));
    let p = plan("main.ManyResults(i=ret8, j=ret9)");
    assert_eq!(at(slot(&p, "i").1), (At::Regs(vec![REG_R11]), vec![], I, 1));
    assert_eq!(at(slot(&p, "j").1), (At::Stack(8), vec![], I, 1));
}

#[test]
fn field_paths_through_pointers_and_values() {
    require_go!();
    let p = plan(
        "main.ProcessOrder(id=o.ID, name=o.Customer.Name, city=o.Customer.Addr.City, zip=o.Customer.Addr.Zip,
            items=len(o.Items), tags=len(o.Tags), note=o.Note, cust=o.Customer, total=ret0, err=ret1)",
    );
    assert_eq!(at(slot(&p, "id").1), (At::Regs(vec![REG_RAX]), vec![0], I, 0));
    assert_eq!(at(slot(&p, "name").1), (At::Regs(vec![REG_RAX]), vec![8, 8], S, 0));
    assert_eq!(at(slot(&p, "city").1), (At::Regs(vec![REG_RAX]), vec![8, 32, 0], S, 0));
    assert_eq!(at(slot(&p, "zip").1), (At::Regs(vec![REG_RAX]), vec![8, 32, 16], I, 0));
    assert_eq!(slot(&p, "zip").0.decode, Decode::Uint { size: 2 });
    assert_eq!(at(slot(&p, "items").1), (At::Regs(vec![REG_RAX]), vec![16], ValueKind::Len as u8, 0));
    assert_eq!(at(slot(&p, "tags").1), (At::Regs(vec![REG_RAX]), vec![40], ValueKind::MapLen as u8, 0));
    assert_eq!(at(slot(&p, "note").1), (At::Regs(vec![REG_RAX]), vec![48], S, 0));
    assert_eq!(slot(&p, "cust").0.decode, Decode::Pointer);
    assert_eq!(at(slot(&p, "cust").1), (At::Regs(vec![REG_RAX]), vec![8], I, 0));
    let (err, f) = slot(&p, "err");
    assert!(err.sets_error_status && err.decode == Decode::Error);
    assert_eq!(at(f), (At::Regs(vec![REG_RBX, REG_RCX]), vec![], ValueKind::Interface as u8, 1));
    // The user's error slot replaces the automatic one.
    assert!(!p.slots.iter().any(|s| s.decode == Decode::ErrorType));

    // Pointer receiver; value receiver decomposed into registers.
    let p = plan("main.(*Store).Get(key=key, hits=s.hits, store=s.name, items=len(s.items), found=ret1, v=ret0)");
    assert_eq!(at(slot(&p, "key").1).0, At::Regs(vec![REG_RBX, REG_RCX]));
    assert_eq!(at(slot(&p, "hits").1), (At::Regs(vec![REG_RAX]), vec![24], I, 0));
    assert_eq!(at(slot(&p, "store").1), (At::Regs(vec![REG_RAX]), vec![0], S, 0));
    assert_eq!(slot(&p, "found").0.decode, Decode::Bool);
    assert_eq!(at(slot(&p, "found").1), (At::Regs(vec![REG_RCX]), vec![], I, 1));
    let p = plan("main.Counter.Value(n=c.N, name=c.Name, extra=extra)");
    assert_eq!(at(slot(&p, "n").1).0, At::Regs(vec![REG_RAX]));
    assert_eq!(at(slot(&p, "name").1).0, At::Regs(vec![REG_RBX, REG_RCX]));
    assert_eq!(at(slot(&p, "extra").1).0, At::Regs(vec![REG_RDI]));
    // Struct fields in registers, sub-word fields; struct on the stack.
    let p = plan("main.StructArg(py=p.Y, qn=q.Name)");
    assert_eq!(at(slot(&p, "py").1).0, At::Regs(vec![REG_RBX]));
    assert_eq!(slot(&p, "py").0.decode, Decode::Int { size: 4 });
    assert_eq!(at(slot(&p, "qn").1).0, At::Regs(vec![REG_R9, REG_R10]));
    let p = plan("main.GridArg(label=g.Label, m=m, n=n)");
    assert_eq!(at(slot(&p, "label").1).0, At::Stack(8 + 24));
    assert_eq!(at(slot(&p, "m").1).0, At::Regs(vec![REG_RBX]));
    // Promoted field through an embedded struct, via pointer and by value.
    let p = plan("main.Promoted(dk=d.Kind, vs=v.Size, vk=v.Kind)");
    assert_eq!(at(slot(&p, "dk").1), (At::Regs(vec![REG_RAX]), vec![0], S, 0));
    assert_eq!(at(slot(&p, "vk").1).0, At::Regs(vec![REG_RBX, REG_RCX]));
    assert_eq!(at(slot(&p, "vs").1).0, At::Regs(vec![REG_RDI]));
}

#[test]
fn value_kinds() {
    require_go!();
    let p = plan("main.Uints(a=a, b=b, c=c, d=d, e=e, p=p)");
    assert_eq!(slot(&p, "b").0.decode, Decode::Uint { size: 1 });
    assert_eq!(slot(&p, "e").0.decode, Decode::Uint { size: 8 });
    assert_eq!(slot(&p, "p").0.decode, Decode::Uintptr);
    let p = plan("main.Strings(s=s, b=b, n=len(b), sl=len(s))");
    assert_eq!(slot(&p, "b").0.decode, Decode::Bytes);
    assert_eq!(slot(&p, "n").0.decode, Decode::Len);
    let p = plan("main.Iface(v=v, s=s)");
    assert_eq!(slot(&p, "v").0.decode, Decode::Interface);
    let p = plan("main.Named(id=id, n=n, rid=ret0)");
    assert_eq!(slot(&p, "id").0.decode, Decode::Int { size: 8 });
    assert_eq!(slot(&p, "n").0.decode, Decode::String);
    let p = plan("main.Lens(m=len(m), x=len(xs))");
    assert_eq!(slot(&p, "m").0.decode, Decode::MapLen);
    let p = plan("main.Ptrs(p=p, c=c.Name)");
    assert_eq!(slot(&p, "p").0.decode, Decode::Pointer);
    // A type annotation that agrees with DWARF is fine.
    plan("main.Ints(e=e:int64, a=arg0:int)");
}

#[test]
fn automatic_error_status() {
    require_go!();
    let d = default_dwarf();
    let info = d.function("main.Charge").unwrap();
    let p = plan_function("main.Charge", Some(info), Some(d), &AttrSpec::None, &LIMITS).unwrap();
    assert_eq!(
        p.slots,
        vec![AttrSlot { key: "error.type".into(), decode: Decode::ErrorType, sets_error_status: true }]
    );
    assert_eq!(at(&p.fetches[0]), (At::Regs(vec![REG_RAX, REG_RBX]), vec![], ValueKind::Interface as u8, 1));
    let p = plan("main.Fail(code=code)");
    // (result string, err error): err after the string's two registers.
    assert_eq!(slot(&p, "error.type").1.regs[..2], [REG_RCX, REG_RDI]);
    // No error result: nothing automatic.
    let info = d.function("main.Ints").unwrap();
    assert!(plan_function("main.Ints", Some(info), Some(d), &AttrSpec::None, &LIMITS).unwrap().fetches.is_empty());
}

#[test]
fn capture_all() {
    require_go!();
    let p = plan("main.Strings(*)");
    let keys: Vec<_> = p.slots.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, ["s", "b", "ret0", "ret1"]);
    let p = plan("main.Lens(*)");
    let keys: Vec<_> = p.slots.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, ["s", "xs.len", "m.len", "ret0"]);
    let p = plan("main.Floats(*)");
    let keys: Vec<_> = p.slots.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, ["n", "ret0"]);
    assert!(p.warnings.iter().any(|w| w.contains("x float64 (in an XMM register)")), "{:?}", p.warnings);
    let p = plan("main.StructArg(*)");
    assert!(p.warnings.iter().any(|w| w.contains("p main.Point (unsupported type)")), "{:?}", p.warnings);
    let p = plan("main.Fail(*)");
    assert!(slot(&p, "err").0.sets_error_status);
    assert!(!p.slots.iter().any(|s| s.decode == Decode::ErrorType));
    // Limits: 12 + 1 values fit in 16.
    assert_eq!(plan("main.Many(*)").fetches.len(), 13);
}

#[test]
fn helpful_errors() {
    require_go!();
    let e = err("main.ProcessOrder(x=order)");
    assert!(e.contains("main.ProcessOrder has no parameter or result named `order`"), "{e}");
    assert!(e.contains("parameters (o *main.Order) and results (~r0 int64, ~r1 error)"), "{e}");
    let e = err("main.ProcessOrder(x=o.Customer.Nmae)");
    assert!(e.contains("`o.Customer` is a main.Customer without a field `Nmae`"), "{e}");
    assert!(e.contains("ID main.UserID, Name main.Name, VIP bool, Addr *main.Address"), "{e}");
    let e = err("main.Floats(x=x)");
    assert!(e.contains("`x` (float64) is passed in a floating-point (XMM) register"), "{e}");
    let e = err("main.StructArg(x=p)");
    assert!(e.contains("it is a struct; capture one of its fields (X int32, Y int32, Name string)"), "{e}");
    let e = err("main.Ints(x=a.B)");
    assert!(e.contains("`a` is a int, not a struct"), "{e}");
    let e = err("main.Ints(x=len(a))");
    assert!(e.contains("len() works on strings, slices and maps"), "{e}");
    let e = err("main.Ints(x=arg9)");
    assert!(e.contains("has no `arg9`"), "{e}");
    let e = err("main.Ints(x=e:string)");
    assert!(e.contains("does not match the type DWARF gives, int64"), "{e}");
    let e = err("main.GridArg(x=g.Cells)");
    assert!(e.contains("arrays are not supported"), "{e}");
    let e = err("main.Lens(x=xs)");
    assert!(e.contains("capture its length with `len(xs)`"), "{e}");
    let many: Vec<String> = (0..17).map(|i| format!("k{i}=a")).collect();
    let e = err(&format!("main.Ints({})", many.join(",")));
    assert!(e.contains("one probe captures at most 16"), "{e}");
    let e = err("main.Ints(x=a:float99)");
    assert!(e.contains("unknown type `float99`"), "{e}");
}

#[test]
fn count_limit_drops_with_a_warning() {
    require_go!();
    let d = default_dwarf();
    let spec = parse_probes("main.Ints(a=a, b=b, c=c)").unwrap().remove(0);
    let limits = Limits { max_string: 10, max_attributes: 2 };
    let p = plan_function("main.Ints", d.function("main.Ints"), Some(d), &spec.attrs, &limits).unwrap();
    assert_eq!(p.slots.len(), 2);
    assert!(p.warnings[0].contains("`c=c` dropped"), "{:?}", p.warnings);
    assert_eq!(p.fetches[0].max_len, 10);
}

#[test]
fn without_dwarf_positional_types() {
    require_go!();
    let e = plan_with(None, "main.MixedMany(n=arg1:int)").unwrap_err().to_string();
    assert!(e.contains("the location of arg1 depends on the types of arg0"), "{e}");
    assert!(e.contains("`_=arg0:TYPE`"), "{e}");
    let p = plan_with(None, "main.MixedMany(_=arg0:string, n=arg1:int, _=arg2:string, _=arg3:string, _=arg4:int, f=arg5:string, g=arg6:int8, r=ret0:string, c=ret1:int)").unwrap();
    let keys: Vec<_> = p.slots.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, ["n", "f", "g", "r", "c"]);
    assert_eq!(at(slot(&p, "n").1).0, At::Regs(vec![REG_RCX]));
    assert_eq!(at(slot(&p, "f").1).0, At::Stack(8));
    assert_eq!(at(slot(&p, "g").1).0, At::Regs(vec![REG_R11]));
    assert_eq!(at(slot(&p, "c").1), (At::Regs(vec![REG_RCX]), vec![], I, 1));
    // Without DWARF nothing checks that main.Fail really has an arg1: the user's types rule.
    let p = plan_with(None, "main.Fail(_=ret0:string, err=ret1:error, code=arg0:int, b=len(arg1:[]byte))").unwrap();
    assert_eq!(at(slot(&p, "b").1).0, At::Regs(vec![REG_RBX, REG_RCX]));
    assert!(slot(&p, "err").0.sets_error_status);
    assert_eq!(at(slot(&p, "err").1).0, At::Regs(vec![REG_RCX, REG_RDI]));
    let e = plan_with(None, "main.Fail(code=code)").unwrap_err().to_string();
    assert!(e.contains("no DWARF") && e.contains("by position with a type"), "{e}");
    let e = plan_with(None, "main.Fail(code=arg0)").unwrap_err().to_string();
    assert!(e.contains("`arg0:int64`"), "{e}");
    let e = plan_with(None, "main.F(x=arg0:int, y=arg0:string)").unwrap_err().to_string();
    assert!(e.contains("two different types"), "{e}");
    let e = plan_with(None, "main.F(x=arg0:float64)").unwrap_err().to_string();
    assert!(e.contains("XMM"), "{e}");
    // Stack results need all arguments.
    let rets: Vec<String> = (0..10).map(|i| format!("r{i}=ret{i}:int")).collect();
    let e = plan_with(None, &format!("main.ManyResults({})", rets.join(","))).unwrap_err().to_string();
    assert!(e.contains("passed on the stack"), "{e}");
    let p = plan_with(None, "main.F(*)").unwrap();
    assert!(p.fetches.is_empty() && !p.warnings.is_empty());
    assert!(plan_with(None, "main.F(x=arg0:*main.T, y=len(arg1:map[string]int), z=len(arg2:[]int))").is_ok());
    // A map itself is refused with what to write instead (its address told nothing).
    let e = plan_with(None, "main.F(y=arg0:map[string]int)").unwrap_err().to_string();
    assert!(e.contains("len(arg0)"), "{e}");
}

/// Go up to 1.21 omits blank parameters from DWARF: the compiler's location wins.
#[test]
fn blank_parameters_on_every_toolchain() {
    for go in go_matrix() {
        let (d, v) = dwarf_for(&go);
        let spec = parse_probes("main.Blank(x=x, n=ret0)").unwrap().remove(0);
        let p = plan_function("main.Blank", d.function("main.Blank"), Some(&d), &spec.attrs, &LIMITS)
            .unwrap_or_else(|e| panic!("{v}: {e}"));
        assert_eq!(at(slot(&p, "x").1).0, At::Regs(vec![REG_RBX, REG_RCX]), "{v}");
        assert_eq!(at(slot(&p, "n").1).0, At::Regs(vec![REG_RAX]), "{v}");
    }
}

/// The main cases on every toolchain of the matrix.
#[test]
fn version_matrix() {
    for go in go_matrix() {
        let (d, v) = dwarf_for(&go);
        let pl = |probe: &str| plan_with(Some(&d), probe).unwrap_or_else(|e| panic!("{v} {probe}: {e}"));
        let p = pl("main.ProcessOrder(name=o.Customer.Name, err=ret1)");
        assert_eq!(at(slot(&p, "name").1), (At::Regs(vec![REG_RAX]), vec![8, 8], S, 0), "{v}");
        let p = pl("main.MixedMany(f=f, g=g)");
        assert_eq!(at(slot(&p, "f").1).0, At::Stack(8), "{v}");
        assert_eq!(at(slot(&p, "g").1).0, At::Regs(vec![REG_R11]), "{v}");
        let p = pl("main.Counter.Value(name=c.Name, extra=extra)");
        assert_eq!(at(slot(&p, "extra").1).0, At::Regs(vec![REG_RDI]), "{v}");
        // Generic method: the hidden dictionary moved between Go 1.19 and 1.20.
        // Go 1.19 names the shape `go.shape.string_0`.
        let push = d.function_names().find(|n| n.starts_with("main.(*Stack[go.shape.string")).expect("Push");
        let p = pl(&format!("{push}(v=v, label=label, n=len(s.items), r=ret0)"));
        assert!(p.warnings.is_empty(), "{v}: {:?}", p.warnings);
        assert_eq!(at(slot(&p, "v").1).0, At::Regs(vec![REG_RCX, REG_RDI]), "{v}");
        assert_eq!(at(slot(&p, "label").1).0, At::Regs(vec![REG_RSI, REG_R8]), "{v}");
        assert_eq!(at(slot(&p, "r").1).0, At::Regs(vec![REG_RAX]), "{v}");
        let p = pl("main.Small(s=s)");
        assert_eq!(at(slot(&p, "s").1).0, At::Regs(vec![REG_RBX, REG_RCX]), "{v}");
        for name in ["main.Ints", "main.Uints", "main.Strings", "main.Fail", "main.(*Store).Get", "main.Iface"] {
            pl(&format!("{name}(*)"));
        }
    }
}

/// The steps report typed errors; the message adds the attribute's text once, in front
/// (or, for TooMany, as the first one over). No DWARF needed: these are the annotation paths.
#[test]
fn typed_errors() {
    let kind = |probe: &str| plan_with(None, probe).unwrap_err();
    let e = kind("main.F(n=arg2:int, _=arg1:string)");
    assert_eq!(e.attr, "n=arg2:int");
    assert_eq!(e.kind, AttrErrorKind::NeedsEarlierTypes { pos: "arg2".into(), missing: vec!["arg0".into()] });
    let e = kind("main.F(n=arg2:int)");
    assert!(e.to_string().starts_with("`n=arg2:int`: without DWARF the location of arg2"), "{e}");
    assert!(e.to_string().contains("the types of arg0, arg1; declare them"), "{e}");
    let rets: Vec<String> = (0..10).map(|i| format!("r{i}=ret{i}:int")).collect();
    let e = kind(&format!("main.F({})", rets.join(",")));
    assert_eq!(e.kind, AttrErrorKind::Unreadable { name: "ret9".into(), why: Unlocated::StackResultWithoutDwarf });
    let e = kind("main.F(x=arg65:int)");
    assert_eq!(e.kind, AttrErrorKind::PositionTooLarge { position: 65 });
    assert!(matches!(kind("main.F(x=arg0.f)").kind, AttrErrorKind::NeedsDwarf { why: NoDwarf::Field, .. }));
    let many: Vec<String> = (0..17).map(|i| format!("k{i}=arg0:int")).collect();
    let e = kind(&format!("main.F({})", many.join(",")));
    assert_eq!(e.kind, AttrErrorKind::TooMany { count: 17, max: MAX_FETCHES });
    assert!(e.to_string().ends_with("remove some attributes (first one over: `k16=arg0:int`)"), "{e}");
    // Not about one attribute: no empty "``:" in front.
    let e = AttrError { attr: String::new(), kind: AttrErrorKind::TooDeep };
    assert_eq!(e.to_string(), "expression nested too deeply");
}
