//! Pure rules on SQL text for the database spans: the sanitized `db.query.text` (literals
//! replaced by `?`, comments dropped) and the operation and table a statement names.
//!
//! Why a small tokenizer rather than a parser crate (sqlparser): gotel sees at most the first
//! `OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT` bytes of a query, so the text is often cut in the
//! middle, and it must cope with every dialect a Go driver speaks (PostgreSQL `$1` and
//! `$tag$...$tag$`, SQLite `?1`, MySQL backquotes). A parser refuses cut or foreign text; a
//! tokenizer that knows literals, quoting and comments does the job on any input and never
//! fails. What it cannot tell (joins, subqueries) it leaves out rather than guess: the table is
//! only named when the statement plainly targets one.

/// One lexical piece of SQL text.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token<'a> {
    /// A word: keyword or bare identifier, or a quoted identifier (`"t"`, `` `t` ``, `[t]`).
    Word(&'a str),
    /// A literal: string, number, dollar-quoted or hex/bit/escape string.
    Literal,
    /// A placeholder: `$1`, `?`, `?1`, `:name`, `@p1`.
    Param(&'a str),
    /// Any other character (operators, punctuation).
    Punct(&'a str),
}

/// Splits `sql` into tokens, skipping white space and comments. A cut (unterminated) literal,
/// quoted identifier or comment ends the text.
fn tokens(sql: &str) -> Vec<Token<'_>> {
    spaced_tokens(sql).into_iter().map(|(t, _)| t).collect()
}

/// [`tokens`], each with whether white space or a comment came before it.
fn spaced_tokens(sql: &str) -> Vec<(Token<'_>, bool)> {
    let b = sql.as_bytes();
    let mut toks: Vec<(Token, bool)> = Vec::new();
    let mut i = 0;
    let mut gap = false;
    // The end of a quoted run starting at `i` with quote `q`, where `qq` doubles the quote.
    let quoted = |mut j: usize, q: u8, backslash: bool| -> usize {
        j += 1;
        while j < b.len() {
            if backslash && b[j] == b'\\' {
                j += 2;
                continue;
            }
            if b[j] == q {
                if j + 1 < b.len() && b[j + 1] == q {
                    j += 2;
                    continue;
                }
                return j + 1;
            }
            j += 1;
        }
        b.len()
    };
    let word_char = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c.is_ascii_whitespace() {
            i += 1;
            gap = true;
        } else if c == b'-' && next == Some(b'-') || c == b'#' {
            i = sql[i..].find('\n').map_or(b.len(), |n| i + n + 1);
            gap = true;
        } else if c == b'/' && next == Some(b'*') {
            i = sql[i + 2..].find("*/").map_or(b.len(), |n| i + 2 + n + 2);
            gap = true;
        } else if c == b'\'' {
            i = quoted(i, b'\'', false);
            toks.push((Token::Literal, std::mem::take(&mut gap)));
        } else if matches!(c, b'E' | b'e') && next == Some(b'\'') {
            i = quoted(i + 1, b'\'', true);
            toks.push((Token::Literal, std::mem::take(&mut gap)));
        } else if matches!(c, b'X' | b'x' | b'B' | b'b' | b'N' | b'n') && next == Some(b'\'') {
            i = quoted(i + 1, b'\'', false);
            toks.push((Token::Literal, std::mem::take(&mut gap)));
        } else if c == b'"' || c == b'`' {
            let end = quoted(i, c, false);
            toks.push((Token::Word(&sql[i..end]), std::mem::take(&mut gap)));
            i = end;
        } else if c == b'$' && next.is_some_and(|n| n.is_ascii_digit()) {
            let end = i + 1 + b[i + 1..].iter().take_while(|d| d.is_ascii_digit()).count();
            toks.push((Token::Param(&sql[i..end]), std::mem::take(&mut gap)));
            i = end;
        } else if c == b'$' {
            // A dollar-quoted string: $$...$$ or $tag$...$tag$.
            let tag_len = b[i + 1..].iter().take_while(|&&d| word_char(d)).count();
            if b.get(i + 1 + tag_len) == Some(&b'$') {
                let tag = &sql[i..i + tag_len + 2];
                let body = i + tag.len();
                i = sql[body..].find(tag).map_or(b.len(), |n| body + n + tag.len());
                toks.push((Token::Literal, std::mem::take(&mut gap)));
            } else {
                toks.push((Token::Punct(&sql[i..i + 1]), std::mem::take(&mut gap)));
                i += 1;
            }
        } else if c == b':' && next == Some(b':') {
            // A PostgreSQL cast (`x::int`), not a named parameter.
            toks.push((Token::Punct("::"), std::mem::take(&mut gap)));
            i += 2;
        } else if matches!(c, b'?' | b'@') && next.is_some_and(word_char)
            || c == b':' && next.is_some_and(|n| n.is_ascii_alphabetic() || n == b'_')
        {
            let end = i + 1 + b[i + 1..].iter().take_while(|&&d| word_char(d)).count();
            toks.push((Token::Param(&sql[i..end]), std::mem::take(&mut gap)));
            i = end;
        } else if c == b'?' {
            toks.push((Token::Param("?"), std::mem::take(&mut gap)));
            i += 1;
        } else if c.is_ascii_digit() || c == b'.' && next.is_some_and(|n| n.is_ascii_digit()) {
            // 12, 1.5, .5, 1e-3, 0x1F
            let mut j = i + 1;
            while j < b.len() {
                let d = b[j];
                if d.is_ascii_alphanumeric()
                    || d == b'.'
                    || (matches!(d, b'+' | b'-') && matches!(b[j - 1], b'e' | b'E'))
                {
                    j += 1;
                } else {
                    break;
                }
            }
            toks.push((Token::Literal, std::mem::take(&mut gap)));
            i = j;
        } else if word_char(c) {
            let end = i + b[i..].iter().take_while(|&&d| word_char(d) || d == b'$').count();
            toks.push((Token::Word(&sql[i..end]), std::mem::take(&mut gap)));
            i = end;
        } else if c == b'[' {
            let end = sql[i..].find(']').map_or(b.len(), |n| i + n + 1);
            toks.push((Token::Word(&sql[i..end]), std::mem::take(&mut gap)));
            i = end;
        } else {
            let len = sql[i..].chars().next().map_or(1, char::len_utf8);
            toks.push((Token::Punct(&sql[i..i + len]), std::mem::take(&mut gap)));
            i += len;
        }
    }
    toks
}

/// `sql` with every literal replaced by `?` and comments dropped; white space between tokens
/// becomes one space (and a dropped comment one space where two words would join).
pub fn sanitize(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    for (t, gap) in spaced_tokens(sql) {
        let text = match t {
            Token::Word(w) | Token::Param(w) | Token::Punct(w) => w,
            Token::Literal => "?",
        };
        if gap && !out.is_empty() {
            out.push(' ');
        }
        out.push_str(text);
    }
    out
}

/// What a statement does and to which table: (`db.operation.name`, `db.collection.name`).
/// The operation is the first keyword, upper case; the table only when the statement plainly
/// names one (not for joins, several tables or subqueries).
pub fn operation_and_table(sql: &str) -> (Option<String>, Option<String>) {
    let toks = tokens(sql);
    let word = |i: usize| match toks.get(i) {
        Some(Token::Word(w)) => Some(*w),
        _ => None,
    };
    let is = |i: usize, kw: &str| word(i).is_some_and(|w| w.eq_ignore_ascii_case(kw));
    let Some(first) = word(0) else { return (None, None) };
    let op = first.to_ascii_uppercase();
    // The index of the table name.
    let at = match op.as_str() {
        "SELECT" => {
            toks.iter().position(|t| matches!(t, Token::Word(w) if w.eq_ignore_ascii_case("FROM"))).map(|i| i + 1)
        }
        "INSERT" | "REPLACE" if is(1, "INTO") => Some(2),
        "DELETE" if is(1, "FROM") => Some(2),
        "UPDATE" => Some(1),
        "TRUNCATE" => Some(if is(1, "TABLE") { 2 } else { 1 }),
        "CREATE" | "DROP" | "ALTER" => {
            let mut i = 1;
            while is(i, "TEMP") || is(i, "TEMPORARY") || is(i, "UNLOGGED") || is(i, "OR") || is(i, "REPLACE") {
                i += 1;
            }
            if !is(i, "TABLE") {
                return (Some(op), None);
            }
            i += 1;
            if is(i, "IF") && (is(i + 1, "EXISTS") || is(i + 1, "NOT") && is(i + 2, "EXISTS")) {
                i += if is(i + 1, "NOT") { 3 } else { 2 };
            }
            Some(i)
        }
        _ => None,
    };
    let table = at.and_then(|i| qualified_name(&toks, i)).filter(|&(_, after)| {
        // One table: not followed by another one (`a, b`) nor joined to one (any later JOIN).
        let another = matches!(toks.get(after), Some(Token::Punct(",")));
        let joined = toks[after..].iter().any(|t| matches!(t, Token::Word(w) if w.eq_ignore_ascii_case("JOIN")));
        !another && !joined
    });
    (Some(op), table.map(|(name, _)| name))
}

/// `a` or `a.b` (quoted parts unquoted) starting at token `i`, and the index after it.
fn qualified_name(toks: &[Token], mut i: usize) -> Option<(String, usize)> {
    let unquote = |w: &str| {
        let q = w.as_bytes()[0];
        if matches!(q, b'"' | b'`' | b'[') && w.len() >= 2 {
            w[1..w.len() - 1].to_string()
        } else {
            w.to_string()
        }
    };
    let mut name = String::new();
    loop {
        match toks.get(i) {
            Some(Token::Word(w)) if !is_keyword(w) => name.push_str(&unquote(w)),
            _ => return None,
        }
        i += 1;
        if matches!(toks.get(i), Some(Token::Punct("."))) {
            name.push('.');
            i += 1;
        } else {
            return Some((name, i));
        }
    }
}

/// Words that cannot be a table name where one is expected (`SELECT 1 FROM (SELECT ...)`,
/// `INSERT INTO t SELECT`).
fn is_keyword(w: &str) -> bool {
    ["SELECT", "WITH", "VALUES", "LATERAL", "ONLY", "UNNEST"].iter().any(|k| w.eq_ignore_ascii_case(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_replaced_and_structure_kept() {
        let cases = [
            ("SELECT id FROM items WHERE name = 'tea' AND id > 0", "SELECT id FROM items WHERE name = ? AND id > ?"),
            ("INSERT INTO items (id, name) VALUES (1, 'dup')", "INSERT INTO items (id, name) VALUES (?, ?)"),
            ("SELECT name FROM items WHERE id = $1", "SELECT name FROM items WHERE id = $1"),
            (
                "select * from t where a=?1 and b = :name and c = @p1",
                "select * from t where a=?1 and b = :name and c = @p1",
            ),
            ("SELECT 'it''s', E'a\\'b', x'ff', 1.5e-3, .5 FROM t", "SELECT ?, ?, ?, ?, ? FROM t"),
            ("SELECT $$a 'b' c$$, $tag$x$tag$", "SELECT ?, ?"),
            ("SELECT 1 -- secret 42\nFROM t /* 'x' */ WHERE \"col 1\" = 2", "SELECT ? FROM t WHERE \"col 1\" = ?"),
            ("SELECT count(*) FROM s.t WHERE x IN (1, 2, 3);", "SELECT count(*) FROM s.t WHERE x IN (?, ?, ?);"),
            ("SELECT col2, t2.x FROM t2", "SELECT col2, t2.x FROM t2"),
            ("SELECT * FROM t WHERE name = 'cut in the mid", "SELECT * FROM t WHERE name = ?"),
            ("SELECT '5'::int, a::text FROM t", "SELECT ?::int, a::text FROM t"),
            ("", ""),
        ];
        for (sql, want) in cases {
            assert_eq!(sanitize(sql), want, "{sql}");
        }
    }

    #[test]
    fn operation_and_table_when_plain() {
        let op = |sql: &str| operation_and_table(sql);
        let s = |v: &str| Some(v.to_string());
        assert_eq!(op("SELECT name FROM items WHERE id = $1"), (s("SELECT"), s("items")));
        assert_eq!(op("select count(*) from public.items"), (s("SELECT"), s("public.items")));
        assert_eq!(op("INSERT INTO \"Items\" (id) VALUES (1)"), (s("INSERT"), s("Items")));
        assert_eq!(op("update items set a = 1"), (s("UPDATE"), s("items")));
        assert_eq!(op("DELETE FROM `items` WHERE 1"), (s("DELETE"), s("items")));
        assert_eq!(op("CREATE TABLE IF NOT EXISTS items (id int)"), (s("CREATE"), s("items")));
        assert_eq!(op("DROP TABLE IF EXISTS items"), (s("DROP"), s("items")));
        assert_eq!(op("CREATE INDEX i ON items (id)"), (s("CREATE"), None));
        assert_eq!(op("SELECT * FROM a, b"), (s("SELECT"), None));
        assert_eq!(op("SELECT * FROM a JOIN b ON a.x = b.x"), (s("SELECT"), None));
        assert_eq!(op("SELECT * FROM a LEFT OUTER JOIN b USING (x)"), (s("SELECT"), None));
        assert_eq!(op("UPDATE a SET x = 1 FROM b JOIN c ON b.y = c.y"), (s("UPDATE"), None));
        assert_eq!(op("SELECT * FROM (SELECT 1) AS s"), (s("SELECT"), None));
        assert_eq!(op("SELECT 1"), (s("SELECT"), None));
        assert_eq!(op("SELEC 1"), (s("SELEC"), None));
        assert_eq!(op("BEGIN"), (s("BEGIN"), None));
        assert_eq!(op("  -- nothing\n"), (None, None));
        assert_eq!(op("'x'"), (None, None));
    }
}
