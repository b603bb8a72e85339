//! The `GOTEL_PROBES` grammar: which functions to trace and which of their arguments,
//! struct fields and results become span attributes.
//!
//! ```text
//! probes   = entry { ( ";" | NEWLINE ) entry }   empty entries are ignored
//! entry    = SYMBOL [ "(" [ attrs ] ")" ]
//! attrs    = "*" | attr { "," attr } [ "," ]
//! attr     = KEY "=" expr
//! expr     = term [ ":" TYPE ]                   TYPE: int64, string, []byte, error, *T ...
//! term     = "len" "(" expr ")" | IDENT { "." IDENT }
//! KEY      = [A-Za-z_][A-Za-z0-9_.-]*            "_" may repeat: declares a type only
//! ```
//! `argN` / `retN` as the first identifier are positions (0-based, receiver first) and win
//! over a parameter that happens to have that name. `#` starts a comment to the end of the
//! line. A newline ends an entry, like `;`, except inside an attribute list `( ... )`, which
//! may span lines (probe files are written one entry per line); other whitespace may appear
//! between any tokens.
//!
//! A SYMBOL is a Go symbol: it runs up to the first `(` that does not open a method receiver
//! `(*T)` (a `(` directly followed by `*` and something other than `)`), and up to
//! whitespace, `;` or `#`. `(` inside generic brackets `[...]` is part of the symbol.
//!
//! Names mean what they say (see `names`): the `*` right after `(`, the pointer of a receiver
//! `(*T)`, is part of the name; every other `*` is a glob for any run of characters, so
//! `sync.(*Mutex).Lock` is one function (never `(*RWMutex)`), `main.*` and
//! `main.(*Stack[*]).Push` (a generic method, whatever its shape) are globs.
//!
//! Why over 600 lines: the grammar, its parser and its error positions are one unit, and the
//! parser's tests (about 230 lines) stay beside the grammar they pin.

use std::fmt;

/// One traced function (or glob of functions) and what to capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSpec {
    /// Go symbol, may contain `*` globs.
    pub symbol: String,
    pub attrs: AttrSpec,
    /// The entry as written (comments removed, on one line), for messages.
    pub text: String,
    /// Where the entry was written: `GOTEL_PROBES`, `--probe`, or `FILE line N`.
    pub origin: String,
}

impl ProbeSpec {
    /// One entry for a function that both `self` and `later` name (a glob and an exact name,
    /// or the same name twice): their attributes together. Refused, with the reason, when they
    /// clash: one key bound to two different expressions, or `(*)` beside a list (which
    /// would name the same parameters twice). Never drops one silently.
    pub fn merge(&self, later: &ProbeSpec) -> Result<ProbeSpec, String> {
        let attrs = match (&self.attrs, &later.attrs) {
            (AttrSpec::None, a) | (a, AttrSpec::None) => a.clone(),
            (AttrSpec::All, AttrSpec::All) => AttrSpec::All,
            (AttrSpec::All, AttrSpec::List(_)) | (AttrSpec::List(_), AttrSpec::All) => {
                return Err("one asks for every parameter `(*)`, the other for a list: keep one of the two".into())
            }
            (AttrSpec::List(a), AttrSpec::List(b)) => {
                let mut list = a.clone();
                for attr in b {
                    match list.iter().find(|x| x.key == attr.key && attr.key != "_") {
                        Some(x) if x.expr == attr.expr => {}
                        Some(x) => {
                            return Err(format!(
                                "key `{}` is `{}` in one and `{}` in the other: use one expression, or two keys",
                                attr.key, x.text, attr.text
                            ))
                        }
                        None => list.push(attr.clone()),
                    }
                }
                AttrSpec::List(list)
            }
        };
        let origin = if self.origin == later.origin {
            self.origin.clone()
        } else {
            format!("{} and {}", self.origin, later.origin)
        };
        Ok(ProbeSpec { symbol: self.symbol.clone(), attrs, text: format!("{}; {}", self.text, later.text), origin })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttrSpec {
    /// `SYMBOL` or `SYMBOL()`.
    None,
    /// `SYMBOL(*)`: every parameter of a supported type.
    All,
    List(Vec<AttrExpr>),
}

/// `KEY=EXPR`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttrExpr {
    pub key: String,
    pub expr: Expr,
    /// `KEY=EXPR` as written, for messages.
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    /// A parameter or result by name.
    Param(String),
    /// `argN`: the N-th of receiver + parameters.
    Arg(usize),
    /// `retN`: the N-th result.
    Ret(usize),
    /// `EXPR.Field` (through pointers too).
    Field(Box<Expr>, String),
    /// `len(EXPR)` of a string, slice or map.
    Len(Box<Expr>),
    /// `EXPR:TYPE`, e.g. `arg0:int64`.
    Typed(Box<Expr>, String),
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Param(p) => write!(f, "{p}"),
            Expr::Arg(n) => write!(f, "arg{n}"),
            Expr::Ret(n) => write!(f, "ret{n}"),
            Expr::Field(e, name) => write!(f, "{e}.{name}"),
            Expr::Len(e) => write!(f, "len({e})"),
            Expr::Typed(e, t) => write!(f, "{e}:{t}"),
        }
    }
}

/// A syntax error: which entry, where, what was expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{origin}, entry {number}: expected {expected}, found {found}\n  {entry}\n  {caret}^", caret = " ".repeat(*.column))]
pub struct SpecError {
    /// Where the text came from (`GOTEL_PROBES`, `--probe`, `FILE line N`).
    pub origin: String,
    /// 1-based entry number within that text.
    pub number: usize,
    /// The entry on one line.
    pub entry: String,
    /// Character (not byte) position of the error in `entry`.
    pub column: usize,
    pub expected: String,
    pub found: String,
}

/// Parses `GOTEL_PROBES` (or any text whose errors should blame `GOTEL_PROBES`).
pub fn parse_probes(text: &str) -> Result<Vec<ProbeSpec>, SpecError> {
    parse_source("GOTEL_PROBES", text)
}

/// Parses probe specs that came from `origin` (`GOTEL_PROBES`, `--probe`, a file's path):
/// messages name it, and the line of the entry when the text has several lines.
pub fn parse_source(origin: &str, text: &str) -> Result<Vec<ProbeSpec>, SpecError> {
    let multiline = text.trim_end().contains('\n');
    let mut out = Vec::new();
    for (number, (line_no, raw)) in split_entries(&strip_comments(text)).into_iter().enumerate() {
        // On one line, same character positions: newlines and tabs become spaces.
        let line: String = raw.chars().map(|c| if c.is_whitespace() { ' ' } else { c }).collect();
        let entry = line.trim();
        let origin = if multiline { format!("{origin} line {line_no}") } else { origin.to_string() };
        let mut p = Parser { chars: entry.chars().collect(), pos: 0, number: number + 1, entry, origin: &origin };
        out.push(p.entry()?);
    }
    Ok(out)
}

/// Non-empty entries with the 1-based line each starts on: `;` always ends an entry, a newline
/// only outside parentheses (an attribute list may span lines).
fn split_entries(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let (mut depth, mut start, mut line, mut start_line) = (0usize, 0, 1, 1);
    let mut push = |from: usize, to: usize, first_line: usize| {
        let raw = &text[from..to];
        if !raw.trim().is_empty() {
            let lead = &raw[..raw.len() - raw.trim_start().len()];
            out.push((first_line + lead.matches('\n').count(), raw));
        }
    };
    for (i, c) in text.char_indices() {
        let ends = match c {
            '(' => {
                depth += 1;
                false
            }
            ')' => {
                depth = depth.saturating_sub(1);
                false
            }
            ';' => true,
            '\n' => depth == 0,
            _ => false,
        };
        if c == '\n' {
            line += 1;
        }
        if ends {
            push(start, i, start_line);
            // An unclosed `(` does not swallow the next entry.
            depth = 0;
            start = i + 1;
            start_line = line;
        }
    }
    push(start, text.len(), start_line);
    out
}

/// Replaces `# ...` up to the end of the line with nothing (keeps the newline).
fn strip_comments(text: &str) -> String {
    text.lines().map(|l| l.split_once('#').map(|(a, _)| a).unwrap_or(l)).collect::<Vec<_>>().join("\n")
}

struct Parser<'a> {
    chars: Vec<char>,
    pos: usize,
    number: usize,
    entry: &'a str,
    origin: &'a str,
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_ident_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.chars.get(self.pos + n).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn slice(&self, from: usize, to: usize) -> String {
        self.chars[from..to.min(self.chars.len())].iter().collect()
    }

    fn error(&self, at: usize, expected: &str) -> SpecError {
        let found = match self.chars.get(at) {
            None => "the end of the entry".to_string(),
            Some(c) => format!("`{c}`"),
        };
        SpecError {
            origin: self.origin.to_string(),
            number: self.number,
            entry: self.entry.to_string(),
            column: at,
            expected: expected.to_string(),
            found,
        }
    }

    fn expect(&mut self, c: char, what: &str) -> Result<(), SpecError> {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(self.pos, what))
        }
    }

    fn entry(&mut self) -> Result<ProbeSpec, SpecError> {
        self.skip_ws();
        let symbol = self.symbol()?;
        self.skip_ws();
        let attrs = match self.peek() {
            None => AttrSpec::None,
            Some('(') => {
                self.pos += 1;
                let attrs = self.attrs()?;
                self.expect(')', "`)` or `,` after an attribute")?;
                attrs
            }
            Some(_) => return Err(self.error(self.pos, "`(` with attributes, or `;` before the next entry")),
        };
        self.skip_ws();
        if self.peek().is_some() {
            return Err(self.error(self.pos, "`;` before the next entry"));
        }
        Ok(ProbeSpec { symbol, attrs, text: self.entry.to_string(), origin: self.origin.to_string() })
    }

    fn symbol(&mut self) -> Result<String, SpecError> {
        let start = self.pos;
        let mut brackets = 0usize;
        while let Some(c) = self.peek() {
            match c {
                '[' => brackets += 1,
                ']' => brackets = brackets.saturating_sub(1),
                '(' if brackets > 0 => {}
                // `(*T)`: a pointer receiver, part of the symbol.
                '(' if self.peek_at(1) == Some('*') && !matches!(self.peek_at(2), Some(')') | None) => {
                    while let Some(c) = self.peek() {
                        self.pos += 1;
                        if c == ')' {
                            break;
                        }
                    }
                    continue;
                }
                '(' | ')' | ',' | '=' if brackets == 0 => break,
                c if c.is_whitespace() && brackets == 0 => break,
                _ => {}
            }
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.error(start, "a Go function symbol like `main.handle` or `main.(*Server).Get`"));
        }
        Ok(self.slice(start, self.pos))
    }

    fn attrs(&mut self) -> Result<AttrSpec, SpecError> {
        self.skip_ws();
        match self.peek() {
            Some(')') => return Ok(AttrSpec::None),
            Some('*') => {
                self.pos += 1;
                return Ok(AttrSpec::All);
            }
            _ => {}
        }
        let mut list: Vec<AttrExpr> = Vec::new();
        loop {
            self.skip_ws();
            if self.peek() == Some(')') && !list.is_empty() {
                break; // trailing comma
            }
            let start = self.pos;
            let key = self.key()?;
            if key != "_" && list.iter().any(|a| a.key == key) {
                let mut e = self.error(start, "a key not used before in this entry");
                e.found = format!("`{key}` a second time");
                return Err(e);
            }
            self.expect('=', "`=` after the attribute key")?;
            let expr = self.expr()?;
            let text = self.slice(start, self.pos).trim().to_string();
            list.push(AttrExpr { key, expr, text });
            self.skip_ws();
            if self.peek() == Some(',') {
                self.pos += 1;
            } else {
                break;
            }
        }
        Ok(AttrSpec::List(list))
    }

    fn key(&mut self) -> Result<String, SpecError> {
        let start = self.pos;
        if !self.peek().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') {
            return Err(self.error(start, "an attribute key like `order.id` (letters, digits, `_`, `.`, `-`)"));
        }
        while self.peek().is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
            self.pos += 1;
        }
        Ok(self.slice(start, self.pos))
    }

    fn ident(&mut self, what: &str) -> Result<String, SpecError> {
        self.skip_ws();
        let start = self.pos;
        if !self.peek().is_some_and(is_ident_start) {
            return Err(self.error(start, what));
        }
        while self.peek().is_some_and(is_ident_char) {
            self.pos += 1;
        }
        Ok(self.slice(start, self.pos))
    }

    fn expr(&mut self) -> Result<Expr, SpecError> {
        let term = self.term(0)?;
        self.skip_ws();
        if self.peek() == Some(':') {
            self.pos += 1;
            self.skip_ws();
            let start = self.pos;
            while self.peek().is_some_and(|c| is_ident_char(c) || matches!(c, '.' | '[' | ']' | '*' | '/')) {
                self.pos += 1;
            }
            if self.pos == start {
                return Err(self.error(start, "a Go type after `:` like `int64`, `string`, `[]byte`, `error`"));
            }
            return Ok(Expr::Typed(Box::new(term), self.slice(start, self.pos)));
        }
        Ok(term)
    }

    fn term(&mut self, depth: usize) -> Result<Expr, SpecError> {
        self.skip_ws();
        let start = self.pos;
        if depth > 8 {
            return Err(self.error(start, "fewer nested `len(...)`"));
        }
        let name = self.ident("a parameter name, `argN`, `retN`, a field path or `len(...)`")?;
        self.skip_ws();
        if name == "len" && self.peek() == Some('(') {
            self.pos += 1;
            let inner = self.term(depth + 1)?;
            self.skip_ws();
            let inner = if self.peek() == Some(':') {
                // `len(arg1:[]byte)`: the type annotation inside.
                self.pos += 1;
                self.skip_ws();
                let tstart = self.pos;
                while self.peek().is_some_and(|c| is_ident_char(c) || matches!(c, '.' | '[' | ']' | '*' | '/')) {
                    self.pos += 1;
                }
                if self.pos == tstart {
                    return Err(self.error(tstart, "a Go type after `:` like `string` or `[]int`"));
                }
                Expr::Typed(Box::new(inner), self.slice(tstart, self.pos))
            } else {
                inner
            };
            self.expect(')', "`)` closing `len(`")?;
            return Ok(Expr::Len(Box::new(inner)));
        }
        let mut e = positional(&name).unwrap_or(Expr::Param(name));
        loop {
            self.skip_ws();
            if self.peek() != Some('.') {
                break;
            }
            self.pos += 1;
            let field = self.ident("a field name after `.`")?;
            e = Expr::Field(Box::new(e), field);
        }
        Ok(e)
    }
}

/// `arg3` -> `Arg(3)`, `ret0` -> `Ret(0)`.
fn positional(name: &str) -> Option<Expr> {
    let num = |rest: &str| -> Option<usize> {
        if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) || (rest.len() > 1 && rest.starts_with('0')) {
            return None;
        }
        rest.parse().ok()
    };
    if let Some(rest) = name.strip_prefix("arg") {
        return num(rest).map(Expr::Arg);
    }
    if let Some(rest) = name.strip_prefix("ret") {
        return num(rest).map(Expr::Ret);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(e: &str) -> Expr {
        Expr::Param(e.into())
    }
    fn field(e: Expr, f: &str) -> Expr {
        Expr::Field(Box::new(e), f.into())
    }
    fn list(s: &ProbeSpec) -> Vec<(String, Expr)> {
        match &s.attrs {
            AttrSpec::List(l) => l.iter().map(|a| (a.key.clone(), a.expr.clone())).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn issue_example() {
        let specs = parse_probes(
            "main.processOrder(order.id=id, customer.name=customer.Name, order.items=len(items), order.total=ret0);
              main.chargeCard(payment.amount=cents, payment.currency=currency)",
        )
        .unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].symbol, "main.processOrder");
        assert_eq!(
            list(&specs[0]),
            vec![
                ("order.id".into(), p("id")),
                ("customer.name".into(), field(p("customer"), "Name")),
                ("order.items".into(), Expr::Len(Box::new(p("items")))),
                ("order.total".into(), Expr::Ret(0)),
            ]
        );
        assert_eq!(specs[1].symbol, "main.chargeCard");
        assert_eq!(specs[1].text, "main.chargeCard(payment.amount=cents, payment.currency=currency)");
        let AttrSpec::List(l) = &specs[0].attrs else { panic!() };
        assert_eq!(l[2].text, "order.items=len(items)");
    }

    #[test]
    fn symbols() {
        let s = parse_probes(
            "main.(*Store).Get(key=arg1); github.com/acme/shop-x/cart.(*Cart).Add ; main.*;main.Counter.Value;
             main.Map[go.shape.int,go.shape.string].Put(k=arg1:int64); main.(*Store).*(*);
             net/http.(*Client).Do",
        )
        .unwrap();
        let syms: Vec<_> = s.iter().map(|s| s.symbol.as_str()).collect();
        assert_eq!(
            syms,
            [
                "main.(*Store).Get",
                "github.com/acme/shop-x/cart.(*Cart).Add",
                "main.*",
                "main.Counter.Value",
                "main.Map[go.shape.int,go.shape.string].Put",
                "main.(*Store).*",
                "net/http.(*Client).Do"
            ]
        );
        assert_eq!(list(&s[0]), vec![("key".into(), Expr::Arg(1))]);
        assert_eq!(s[2].attrs, AttrSpec::None);
        assert_eq!(list(&s[4]), vec![("k".into(), Expr::Typed(Box::new(Expr::Arg(1)), "int64".into()))]);
        assert_eq!(s[5].attrs, AttrSpec::All);
        // `main.f(*)`: all attributes, not a receiver.
        assert_eq!(parse_probes("main.f(*)").unwrap()[0].attrs, AttrSpec::All);
        assert_eq!(parse_probes("main.f()").unwrap()[0].attrs, AttrSpec::None);
        assert_eq!(parse_probes("main.f( * )").unwrap()[0].attrs, AttrSpec::All);
    }

    #[test]
    fn whitespace_comments_and_empty_entries() {
        let s = parse_probes(
            "# probes for the shop\n;;  main.a ( x = len ( s . Name ) ,\n  y=ret1 : error , ) # trailing\n;\n\n main.b ; # c;d\n",
        )
        .unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(
            list(&s[0]),
            vec![
                ("x".into(), Expr::Len(Box::new(field(p("s"), "Name")))),
                ("y".into(), Expr::Typed(Box::new(Expr::Ret(1)), "error".into())),
            ]
        );
        assert_eq!(s[1].symbol, "main.b");
        assert!(parse_probes("").unwrap().is_empty());
        assert!(parse_probes(" ; # nothing\n ;").unwrap().is_empty());
    }

    #[test]
    fn newlines_end_entries_outside_attribute_lists() {
        let s =
            parse_source("probes.txt", "main.a\n  main.b(x=arg0,\n    y=ret0)\n# c\nmain.(*T).M; main.d\n").unwrap();
        let got: Vec<_> = s.iter().map(|s| (s.symbol.as_str(), s.origin.as_str())).collect();
        assert_eq!(
            got,
            [
                ("main.a", "probes.txt line 1"),
                ("main.b", "probes.txt line 2"),
                ("main.(*T).M", "probes.txt line 5"),
                ("main.d", "probes.txt line 5")
            ]
        );
        assert_eq!(list(&s[1]), vec![("x".into(), Expr::Arg(0)), ("y".into(), Expr::Ret(0))]);
        // An unclosed list does not swallow the entries after the next `;`.
        let e = parse_source("f.txt", "main.a(x=arg0\nmain.b; main.c").unwrap_err();
        assert_eq!((e.origin.as_str(), e.number), ("f.txt line 1", 1));
        assert!(e.to_string().starts_with("f.txt line 1, entry 1: expected"), "{e}");
        // One line of GOTEL_PROBES: no line number.
        let e = parse_probes("main.a; main.b c").unwrap_err();
        assert!(e.to_string().starts_with("GOTEL_PROBES, entry 2: expected"), "{e}");
    }

    #[test]
    fn entries_for_one_function_merge_or_clash() {
        let one = |t: &str| parse_source("GOTEL_PROBES", t).unwrap().remove(0);
        let m = one("main.f(x=a)").merge(&one("main.f(y=b, x=a)")).unwrap();
        assert_eq!(list(&m), vec![("x".into(), p("a")), ("y".into(), p("b"))]);
        assert_eq!(m.text, "main.f(x=a); main.f(y=b, x=a)");
        assert_eq!(one("main.*").merge(&one("main.f(x=a)")).unwrap().attrs, one("main.f(x=a)").attrs);
        assert_eq!(one("main.f(x=a)").merge(&one("main.*")).unwrap().attrs, one("main.f(x=a)").attrs);
        assert_eq!(one("main.f(*)").merge(&one("main.f(*)")).unwrap().attrs, AttrSpec::All);
        let why = one("main.f(x=a)").merge(&one("main.f(x=b)")).unwrap_err();
        assert!(why.contains("key `x` is `x=a` in one and `x=b` in the other"), "{why}");
        let why = one("main.f(*)").merge(&one("main.f(x=a)")).unwrap_err();
        assert!(why.contains("every parameter"), "{why}");
        // `_` only declares a type: it may repeat.
        let m = one("main.f(_=arg0:int64)").merge(&one("main.f(_=arg1:string)")).unwrap();
        assert_eq!(list(&m).len(), 2);
    }

    #[test]
    fn types_and_paths() {
        let s = parse_probes(
            "main.f(a=arg0:[]byte, b=len(arg1:[]int), c=req.URL.Path, d=arg10, e=arg01, _=arg2:string, _=arg3:*main.T)",
        )
        .unwrap();
        let l = list(&s[0]);
        assert_eq!(l[0].1, Expr::Typed(Box::new(Expr::Arg(0)), "[]byte".into()));
        assert_eq!(l[1].1, Expr::Len(Box::new(Expr::Typed(Box::new(Expr::Arg(1)), "[]int".into()))));
        assert_eq!(l[2].1, field(field(p("req"), "URL"), "Path"));
        assert_eq!(l[3].1, Expr::Arg(10));
        assert_eq!(l[4].1, p("arg01"));
        assert_eq!(l[6].1, Expr::Typed(Box::new(Expr::Arg(3)), "*main.T".into()));
        assert_eq!(l[2].1.to_string(), "req.URL.Path");
    }

    #[test]
    fn errors_show_entry_and_position() {
        let e = parse_probes("main.ok; main.f(a=x, b y)").unwrap_err();
        assert_eq!(e.number, 2);
        assert_eq!(e.entry, "main.f(a=x, b y)");
        assert_eq!(e.column, 14);
        let msg = e.to_string();
        assert!(msg.contains("expected `=` after the attribute key, found `y`"), "{msg}");
        assert!(msg.ends_with("  main.f(a=x, b y)\n                ^"), "{msg}");

        let e = parse_probes("main.f(a=x, a=y)").unwrap_err();
        assert!(e.to_string().contains("found `a` a second time"), "{e}");
        let e = parse_probes("main.f(a=x").unwrap_err();
        assert!(e.to_string().contains("found the end of the entry"), "{e}");
        let e = parse_probes("main.f(1a=x)").unwrap_err();
        assert!(e.to_string().contains("an attribute key"), "{e}");
        let e = parse_probes("main.f(a=)").unwrap_err();
        assert!(e.to_string().contains("a parameter name"), "{e}");
        let e = parse_probes("main.f(a=b.)").unwrap_err();
        assert!(e.to_string().contains("a field name"), "{e}");
        let e = parse_probes("main.f(a=len(b)").unwrap_err();
        assert!(e.to_string().contains("`)`"), "{e}");
        let e = parse_probes("main.f(a=b) extra").unwrap_err();
        assert!(e.to_string().contains("`;` before the next entry"), "{e}");
        let e = parse_probes("main.f x").unwrap_err();
        assert!(e.to_string().contains("`(` with attributes"), "{e}");
        let e = parse_probes("(a=b)").unwrap_err();
        assert!(e.to_string().contains("a Go function symbol"), "{e}");
        let e = parse_probes("main.f(a=b:)").unwrap_err();
        assert!(e.to_string().contains("a Go type"), "{e}");
        // Unicode: positions count characters.
        let e = parse_probes("main.é(a=b c)").unwrap_err();
        assert_eq!(e.column, 11);
    }

    #[test]
    fn never_panics_on_odd_input() {
        let inputs = [
            "(",
            ")",
            "((",
            "main.(*",
            "main.(*)",
            "main.(*T",
            "[",
            "]]]((",
            "a(b=len(len(len(len(len(len(len(len(len(len(x)))))))))))",
            "a(=",
            "a(b",
            "a(b=",
            "a(b=c:",
            "a(b=c.",
            "a(,)",
            "a(b=c,,)",
            "\u{0}",
            "é(é=é)",
            "a(*,b=c)",
            "#",
            "a(b=c)#(",
        ];
        for i in inputs {
            let _ = parse_probes(i);
        }
        // Exhaustive short strings over a small alphabet.
        let alphabet: Vec<char> = "a(*)=,.:;[ ]#".chars().collect();
        let mut idx = [0usize; 5];
        loop {
            let s: String = idx.iter().map(|&i| alphabet[i]).collect();
            let _ = parse_probes(&s);
            let mut k = 0;
            loop {
                if k == idx.len() {
                    return;
                }
                idx[k] += 1;
                if idx[k] < alphabet.len() {
                    break;
                }
                idx[k] = 0;
                k += 1;
            }
        }
    }
}
