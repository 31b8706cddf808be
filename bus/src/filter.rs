//! The query language, one grammar everywhere: CLI `--filter`, rollout
//! targets, populations, the web UI and chatops.
//!
//! ```text
//! query   := or
//! or      := and ( "OR" and )*
//! and     := not ( ["AND"] not )*          juxtaposition means AND
//! not     := "NOT" not | "(" or ")" | term
//! term    := field ":" value               equality, `null`, or a glob with * and ?
//!          | field (">" | "<" | ">=" | "<=") number-or-duration
//! value   := bare word | "double-quoted, with \" and \\ escapes"
//! ```
//!
//! On a time field a duration compares the age: `last_seen>2h` is "last
//! seen more than two hours ago". Keywords are case-insensitive. A bad
//! query is an error that names the position, never an empty result.
//!
//! ```
//! use fleetroll_bus::filter::{Query, Value};
//!
//! let q = Query::parse("role:gecko_t_linux_talos AND expected_role:null").unwrap();
//! let host = |field: &str| match field {
//!     "role" => Value::Str("gecko_t_linux_talos".into()),
//!     _ => Value::Null,
//! };
//! assert!(q.matches(&host));
//! let err = Query::parse("role:a AND (b:c").unwrap_err();
//! assert_eq!(err.to_string(), "bad query at position 16: expected `)` to close the `(` at position 12");
//! ```

use std::borrow::Cow;
use std::fmt;

use time::OffsetDateTime;

/// A field's value in a record being matched, borrowed from the record
/// where it can be: a query over 100,000 records copies nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Null,
    Str(Cow<'a, str>),
    Bool(bool),
    Num(f64),
    Time(OffsetDateTime),
    /// Matches when any element does; `null` when empty.
    List(Vec<Cow<'a, str>>),
}

impl<'a> Value<'a> {
    /// A text field, `null` when absent.
    pub fn text(v: Option<&'a str>) -> Value<'a> {
        v.map_or(Value::Null, |s| Value::Str(Cow::Borrowed(s)))
    }
}

/// A parse error, at a 1-based character position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad query at position {position}: {message}")]
pub struct ParseError {
    pub position: usize,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Gt,
    Lt,
    Ge,
    Le,
}

/// A chain of ORs or ANDs is one node, however long: only nesting makes
/// the tree deeper, and nesting is bounded by [`MAX_NESTING`].
#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Or(Vec<Expr>),
    And(Vec<Expr>),
    Not(Box<Expr>),
    Is {
        field: Field,
        value: Literal,
    },
    Compare {
        field: Field,
        cmp: Cmp,
        amount: Amount,
    },
}

#[derive(Debug, Clone, PartialEq)]
struct Field {
    name: String,
    position: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Null,
    Exact(String),
    /// The pattern, and its literal start: most texts are refused by a
    /// prefix check before the pattern is run.
    Glob(glob::Pattern, String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Amount {
    Number(f64),
    /// Seconds.
    Duration(f64),
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    text: String,
    expr: Option<Expr>,
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Query {
    /// Parses a query. The empty query matches everything.
    pub fn parse(text: &str) -> Result<Query, ParseError> {
        let tokens = lex(text)?;
        let mut parser = Parser {
            tokens,
            next: 0,
            end: text.chars().count() + 1,
            depth: 0,
        };
        let expr = if parser.tokens.is_empty() {
            None
        } else {
            Some(parser.or()?)
        };
        if let Some(token) = parser.tokens.get(parser.next) {
            return Err(ParseError {
                position: token.position,
                message: format!("unexpected {}", token.kind.describe()),
            });
        }
        Ok(Query {
            text: text.to_string(),
            expr,
        })
    }

    /// Refuses fields not in `known`, naming the first unknown one.
    pub fn check_fields(&self, known: &[&str]) -> Result<(), ParseError> {
        let mut fields = Vec::new();
        if let Some(expr) = &self.expr {
            collect_fields(expr, &mut fields);
        }
        match fields
            .into_iter()
            .find(|f| !known.contains(&f.name.as_str()))
        {
            None => Ok(()),
            Some(f) => Err(ParseError {
                position: f.position,
                message: format!("unknown field `{}` (fields: {})", f.name, known.join(", ")),
            }),
        }
    }

    /// Whether a record matches, `now` being the time ages are counted from.
    pub fn matches_at<'a>(&self, record: &dyn Fn(&str) -> Value<'a>, now: OffsetDateTime) -> bool {
        self.expr.as_ref().is_none_or(|e| eval(e, record, now))
    }

    pub fn matches<'a>(&self, record: &dyn Fn(&str) -> Value<'a>) -> bool {
        self.matches_at(record, OffsetDateTime::now_utc())
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

fn collect_fields<'a>(expr: &'a Expr, out: &mut Vec<&'a Field>) {
    match expr {
        Expr::Or(all) | Expr::And(all) => all.iter().for_each(|e| collect_fields(e, out)),
        Expr::Not(a) => collect_fields(a, out),
        Expr::Is { field, .. } | Expr::Compare { field, .. } => out.push(field),
    }
}

fn eval<'a>(expr: &Expr, record: &dyn Fn(&str) -> Value<'a>, now: OffsetDateTime) -> bool {
    match expr {
        Expr::Or(any) => any.iter().any(|e| eval(e, record, now)),
        Expr::And(all) => all.iter().all(|e| eval(e, record, now)),
        Expr::Not(a) => !eval(a, record, now),
        Expr::Is { field, value } => is(&record(&field.name), value),
        Expr::Compare { field, cmp, amount } => compare(&record(&field.name), *cmp, *amount, now),
    }
}

fn is(actual: &Value, wanted: &Literal) -> bool {
    match (actual, wanted) {
        (Value::List(items), Literal::Null) => items.is_empty(),
        (Value::List(items), _) => items.iter().any(|item| is_text(item, wanted)),
        (Value::Null, _) => matches!(wanted, Literal::Null),
        (_, Literal::Null) => false,
        (Value::Bool(b), Literal::Exact(w)) => parse_bool(w) == Some(*b),
        (Value::Num(n), Literal::Exact(w)) => w.parse::<f64>().is_ok_and(|w| w == *n),
        (Value::Str(s), _) => is_text(s, wanted),
        (Value::Bool(b), _) => is_text(&b.to_string(), wanted),
        (Value::Num(n), _) => is_text(&n.to_string(), wanted),
        (Value::Time(t), _) => is_text(&crate::messages::timestamp(*t), wanted),
    }
}

fn is_text(text: &str, wanted: &Literal) -> bool {
    match wanted {
        Literal::Null => false,
        Literal::Exact(w) => text == w,
        Literal::Glob(pattern, prefix) => {
            text.starts_with(prefix.as_str()) && pattern.matches(text)
        }
    }
}

fn parse_bool(word: &str) -> Option<bool> {
    let is = |w: &str| word.eq_ignore_ascii_case(w);
    if is("true") || is("yes") {
        Some(true)
    } else if is("false") || is("no") {
        Some(false)
    } else {
        None
    }
}

fn compare(actual: &Value, cmp: Cmp, amount: Amount, now: OffsetDateTime) -> bool {
    let (left, right) = match (actual, amount) {
        (Value::Num(n), Amount::Number(x) | Amount::Duration(x)) => (*n, x),
        (Value::Time(t), Amount::Duration(seconds)) => ((now - *t).as_seconds_f64(), seconds),
        _ => return false,
    };
    match cmp {
        Cmp::Gt => left > right,
        Cmp::Lt => left < right,
        Cmp::Ge => left >= right,
        Cmp::Le => left <= right,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum TokenKind {
    Word(String),
    Quoted(String),
    Colon,
    Op(Cmp),
    Open,
    Close,
}

impl TokenKind {
    fn describe(&self) -> String {
        match self {
            TokenKind::Word(w) => format!("`{w}`"),
            TokenKind::Quoted(q) => format!("\"{q}\""),
            TokenKind::Colon => "`:`".into(),
            TokenKind::Op(_) => "a comparison".into(),
            TokenKind::Open => "`(`".into(),
            TokenKind::Close => "`)`".into(),
        }
    }

    fn keyword(&self) -> Option<&'static str> {
        match self {
            TokenKind::Word(w) if w.eq_ignore_ascii_case("and") => Some("AND"),
            TokenKind::Word(w) if w.eq_ignore_ascii_case("or") => Some("OR"),
            TokenKind::Word(w) if w.eq_ignore_ascii_case("not") => Some("NOT"),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    kind: TokenKind,
    position: usize,
}

fn lex(text: &str) -> Result<Vec<Token>, ParseError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let position = i + 1;
        let single = |kind| Token { kind, position };
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                tokens.push(single(TokenKind::Open));
                i += 1;
            }
            ')' => {
                tokens.push(single(TokenKind::Close));
                i += 1;
            }
            ':' => {
                tokens.push(single(TokenKind::Colon));
                i += 1;
            }
            '>' | '<' => {
                let or_equal = chars.get(i + 1) == Some(&'=');
                let cmp = match (c, or_equal) {
                    ('>', false) => Cmp::Gt,
                    ('>', true) => Cmp::Ge,
                    ('<', false) => Cmp::Lt,
                    _ => Cmp::Le,
                };
                tokens.push(single(TokenKind::Op(cmp)));
                i += if or_equal { 2 } else { 1 };
            }
            '"' => {
                let mut value = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => {
                            return Err(ParseError {
                                position,
                                message: "unterminated quoted value".into(),
                            });
                        }
                        Some('"') => break,
                        Some('\\') => match chars.get(i + 1) {
                            Some(escaped @ ('"' | '\\')) => {
                                value.push(*escaped);
                                i += 2;
                                continue;
                            }
                            _ => {
                                return Err(ParseError {
                                    position: i + 1,
                                    message: "only \\\" and \\\\ may be escaped".into(),
                                });
                            }
                        },
                        Some(other) => value.push(*other),
                    }
                    i += 1;
                }
                i += 1;
                tokens.push(single(TokenKind::Quoted(value)));
            }
            c if c.is_control() => {
                return Err(ParseError {
                    position,
                    message: format!("control character {c:?} is not allowed"),
                });
            }
            _ => {
                let start = i;
                while i < chars.len()
                    && !chars[i].is_whitespace()
                    && !matches!(chars[i], '(' | ')' | ':' | '>' | '<' | '"')
                {
                    i += 1;
                }
                tokens.push(single(TokenKind::Word(chars[start..i].iter().collect())));
            }
        }
    }
    Ok(tokens)
}

/// How deep `(` and NOT may nest: far beyond what people write, and shallow
/// enough that parsing, matching and dropping a query stay well within a
/// thread's stack whatever text a bot sends.
const MAX_NESTING: usize = 64;

struct Parser {
    tokens: Vec<Token>,
    next: usize,
    /// Position just past the end, for "expected ... at the end" errors.
    end: usize,
    /// `(` and NOT around the current token.
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next)
    }

    fn position(&self) -> usize {
        self.peek().map_or(self.end, |t| t.position)
    }

    fn error<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            position: self.position(),
            message: message.into(),
        })
    }

    fn at_keyword(&self, keyword: &str) -> bool {
        self.peek().and_then(|t| t.kind.keyword()) == Some(keyword)
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut any = vec![self.and()?];
        while self.at_keyword("OR") {
            self.next += 1;
            any.push(self.and()?);
        }
        Ok(one_or(any, Expr::Or))
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut all = vec![self.not()?];
        loop {
            if self.at_keyword("AND") {
                self.next += 1;
            } else if self.peek().is_none()
                || self.at_keyword("OR")
                || self.peek().is_some_and(|t| t.kind == TokenKind::Close)
            {
                return Ok(one_or(all, Expr::And));
            }
            all.push(self.not()?);
        }
    }

    fn not(&mut self) -> Result<Expr, ParseError> {
        if self.depth == MAX_NESTING {
            return self.error(format!(
                "`(` and NOT nest deeper than {MAX_NESTING} levels here"
            ));
        }
        self.depth += 1;
        let expr = self.nested();
        self.depth -= 1;
        expr
    }

    fn nested(&mut self) -> Result<Expr, ParseError> {
        if self.at_keyword("NOT") {
            self.next += 1;
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        match self.peek().map(|t| (t.kind.clone(), t.position)) {
            None => self.error("expected a condition like `field:value` at the end"),
            Some((TokenKind::Open, open)) => {
                self.next += 1;
                let inner = self.or()?;
                match self.peek() {
                    Some(t) if t.kind == TokenKind::Close => {
                        self.next += 1;
                        Ok(inner)
                    }
                    _ => self.error(format!("expected `)` to close the `(` at position {open}")),
                }
            }
            Some((TokenKind::Word(name), position))
                if TokenKind::Word(name.clone()).keyword().is_none() =>
            {
                self.next += 1;
                self.term(Field { name, position })
            }
            Some((kind, _)) => self.error(format!(
                "expected a condition like `field:value`, found {}",
                kind.describe()
            )),
        }
    }

    fn term(&mut self, field: Field) -> Result<Expr, ParseError> {
        if !field
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            return Err(ParseError {
                position: field.position,
                message: format!("`{}` is not a field name", field.name),
            });
        }
        match self.peek().map(|t| t.kind.clone()) {
            Some(TokenKind::Colon) => {
                self.next += 1;
                let word = match self.peek().map(|t| t.kind.clone()) {
                    Some(TokenKind::Word(w)) if w == "null" => None,
                    Some(TokenKind::Word(w) | TokenKind::Quoted(w)) => Some(w),
                    _ => return self.error(format!("expected a value after `{}:`", field.name)),
                };
                let value = match word {
                    None => Literal::Null,
                    Some(w) if w.contains(['*', '?', '[']) => match glob::Pattern::new(&w) {
                        Ok(pattern) => {
                            let prefix =
                                w[..w.find(['*', '?', '[']).unwrap_or(w.len())].to_string();
                            Literal::Glob(pattern, prefix)
                        }
                        Err(e) => {
                            return self.error(format!("`{w}` is not a valid pattern: {}", e.msg));
                        }
                    },
                    Some(w) => Literal::Exact(w),
                };
                self.next += 1;
                Ok(Expr::Is { field, value })
            }
            Some(TokenKind::Op(cmp)) => {
                self.next += 1;
                let amount = match self.peek().map(|t| t.kind.clone()) {
                    Some(TokenKind::Word(w)) => match amount(&w) {
                        Some(a) => a,
                        None => {
                            return self.error(format!(
                                "`{w}` is not a number or a duration like 30s, 2h, 7d"
                            ));
                        }
                    },
                    _ => {
                        return self.error(format!(
                            "expected a number or duration after `{}`",
                            field.name
                        ));
                    }
                };
                self.next += 1;
                Ok(Expr::Compare { field, cmp, amount })
            }
            _ => self.error(format!(
                "expected `:`, `>` or `<` after the field `{}`",
                field.name
            )),
        }
    }
}

/// The only expression, or all of them joined by `join`.
fn one_or(mut all: Vec<Expr>, join: fn(Vec<Expr>) -> Expr) -> Expr {
    if all.len() == 1 {
        all.remove(0)
    } else {
        join(all)
    }
}

/// A duration as the query language writes it (`90s`, `30m`, `2h`, `1d`,
/// `1w`), in seconds.
pub fn duration_seconds(word: &str) -> Option<f64> {
    match amount(word)? {
        Amount::Duration(seconds) => Some(seconds),
        Amount::Number(_) => None,
    }
}

fn amount(word: &str) -> Option<Amount> {
    if let Ok(n) = word.parse::<f64>() {
        return n.is_finite().then_some(Amount::Number(n));
    }
    let split = word.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = word.split_at(split);
    let n: f64 = number.parse().ok()?;
    let scale = match unit {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        "w" => 7.0 * 86400.0,
        _ => return None,
    };
    Some(Amount::Duration(n * scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(field: &str) -> Value<'static> {
        match field {
            "hostname" => Value::Str("t-linux-042.test".into()),
            "role" => Value::Str("gecko_t_linux_talos".into()),
            "expected_role" => Value::Null,
            "drift" => Value::List(vec!["role".into(), "override".into()]),
            "clean" => Value::List(vec![]),
            "sshable" => Value::Bool(true),
            "uptime" => Value::Num(3.0 * 86400.0),
            "last_seen" => Value::Time(OffsetDateTime::now_utc() - time::Duration::hours(3)),
            _ => Value::Null,
        }
    }

    fn yes(q: &str) -> bool {
        Query::parse(q)
            .unwrap_or_else(|e| panic!("{q}: {e}"))
            .matches(&host)
    }

    #[test]
    fn seed_examples_work_verbatim() {
        assert!(yes("expected_role:null"));
        assert!(yes("role:gecko_t_linux_talos AND expected_role:null"));
        assert!(!yes("role:gecko_t_linux_talos AND NOT expected_role:null"));
    }

    #[test]
    fn globs_numbers_durations_and_booleans() {
        assert!(yes("hostname:t-linux-*"));
        assert!(yes("hostname:\"t-linux-0?2.test\""));
        assert!(!yes("hostname:t-mac-*"));
        assert!(yes("last_seen>2h") && !yes("last_seen>4h") && yes("last_seen<1d"));
        assert!(yes("uptime>2d") && yes("uptime>=259200") && !yes("uptime<1h"));
        assert!(yes("sshable:true") && yes("sshable:yes") && !yes("sshable:false"));
        assert!(yes("(role:x OR role:gecko*) and not hostname:other"));
        assert!(
            yes("drift:role")
                && yes("drift:over*")
                && !yes("drift:unreachable")
                && !yes("drift:null")
        );
        assert!(yes("clean:null") && !yes("clean:role"));
        assert!(yes("role:gecko* hostname:t-*"), "juxtaposition is AND");
        assert!(yes(""), "the empty query matches everything");
    }

    #[test]
    fn errors_name_the_position() {
        let cases = [
            ("role:", 6, "expected a value after `role:`"),
            ("role:a AND", 11, "expected a condition"),
            ("(role:a", 8, "expected `)` to close the `(` at position 1"),
            ("role:a)", 7, "unexpected `)`"),
            ("last_seen>soon", 11, "`soon` is not a number or a duration"),
            ("role", 5, "expected `:`, `>` or `<` after the field `role`"),
            ("role:\"abc", 6, "unterminated quoted value"),
            ("AND role:a", 1, "expected a condition"),
            ("ro;le:a", 1, "`ro;le` is not a field name"),
            ("hostname:a[", 10, "`a[` is not a valid pattern"),
        ];
        for (q, position, says) in cases {
            let err = Query::parse(q).unwrap_err();
            assert_eq!(err.position, position, "{q}: {err}");
            assert!(err.message.contains(says), "{q}: {err}");
        }
        let q = Query::parse("role:a AND colour:red").unwrap();
        let err = q.check_fields(&["role", "hostname"]).unwrap_err();
        assert_eq!(err.position, 12);
        assert!(err.message.contains("unknown field `colour`"));
    }

    /// Found by fuzzing (`fuzz/regressions/query/deep-parentheses`): 988
    /// unclosed `(` overflowed the stack of the thread parsing them, which
    /// kills a worker whatever query a bot sends. Long chains of AND made
    /// trees as deep, whose matching and dropping overflowed as well.
    #[test]
    fn deep_or_long_queries_do_not_exhaust_the_stack() {
        let text = include_str!("../../fuzz/regressions/query/deep-parentheses");
        let err = Query::parse(text).unwrap_err();
        assert!(err.message.contains("deeper than 64"), "{err}");
        assert_eq!(err.position, 85, "inside the 64th `(`");
        let nested = format!("{}a:b{}", "(".repeat(63), ")".repeat(63));
        assert!(!yes(&nested));
        assert!(Query::parse(&format!("({nested})")).is_err());
        assert!(Query::parse(&format!("{}a:b", "NOT ".repeat(100))).is_err());
        let chain = vec!["role:gecko*"; 20_000].join(" AND ");
        assert!(yes(&chain) && yes(&chain.replace("AND", "OR")));
    }
}
