//! Splitting a config line into its keyword and arguments as OpenSSH's
//! `process_config_line` does: the keyword ends at whitespace or one `=`
//! (misc.c `strdelim`), the arguments are split as misc.c `argv_split` splits
//! them (whitespace-separated, `"…"` and `'…'` quoting, `\` escapes, a `#`
//! starting a word ends the line).

/// OpenSSH's `WHITESPACE`.
const WHITESPACE: [char; 4] = [' ', '\t', '\r', '\n'];

fn is_space(c: char) -> bool {
    WHITESPACE.contains(&c)
}

/// One non-blank line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Line {
    /// As written (quotes removed, case kept).
    pub keyword: String,
    /// Everything after the keyword and its separator, as written: what
    /// `ProxyCommand` and `ProxyJump` take, and what `Match` is read from.
    pub rest: String,
    /// `rest` split into arguments.
    pub args: Vec<String>,
}

/// Lexes one line. `Ok(None)` for blank lines and comments; `Err` carries
/// OpenSSH's complaint.
pub(super) fn lex_line(text: &str) -> Result<Option<Line>, String> {
    let text = text.trim_end_matches(|c: char| is_space(c) || c == '\u{c}');
    let mut cursor = Delim::new(text);
    let Some(mut keyword) = cursor.next() else {
        return Ok(None);
    };
    if keyword.is_empty() {
        // Leading whitespace.
        match cursor.next() {
            Some(k) => keyword = k,
            None => return Ok(None),
        }
    }
    if keyword.is_empty() || keyword.starts_with('#') {
        return Ok(None);
    }
    let rest = cursor.rest().unwrap_or_default();
    let rest = rest.trim_start_matches(is_space);
    if rest.is_empty() {
        return Err(format!(
            "no argument after keyword \"{}\"",
            keyword.to_ascii_lowercase()
        ));
    }
    let args = argv_split(rest).ok_or_else(|| "invalid quotes".to_string())?;
    Ok(Some(Line {
        keyword,
        rest: rest.to_string(),
        args,
    }))
}

/// misc.c `strdelim`: words separated by whitespace, one `=` (with
/// whitespace around it) or a `"…"` quoted word. `Match` criteria are read
/// with it.
pub(super) struct Delim {
    buf: Vec<char>,
    /// `None` once the string is used up (C's NULL).
    pos: Option<usize>,
}

impl Delim {
    pub(super) fn new(text: &str) -> Delim {
        Delim {
            buf: text.chars().collect(),
            pos: Some(0),
        }
    }

    /// The next word: `None` when there is none left (or a quote is not
    /// closed), `Some("")` when a delimiter comes first.
    pub(super) fn next(&mut self) -> Option<String> {
        let start = self.pos?;
        let delimiter = |c: char| is_space(c) || c == '"' || c == '=';
        let Some(offset) = self.buf[start..].iter().position(|&c| delimiter(c)) else {
            self.pos = None;
            return Some(self.buf[start..].iter().collect());
        };
        let at = start + offset;
        if self.buf[at] == '"' {
            self.buf.remove(at);
            let Some(close) = self.buf[at..].iter().position(|&c| c == '"') else {
                self.pos = None;
                return None;
            };
            let end = at + close;
            let word = self.buf[start..end].iter().collect();
            self.pos = Some(self.skip_space(end + 1));
            return Some(word);
        }
        let equals = self.buf[at] == '=';
        let word = self.buf[start..at].iter().collect();
        let mut next = self.skip_space(at + 1);
        if !equals && self.buf.get(next) == Some(&'=') {
            next = self.skip_space(next + 1);
        }
        self.pos = Some(next);
        Some(word)
    }

    fn skip_space(&self, mut at: usize) -> usize {
        while self.buf.get(at).is_some_and(|&c| is_space(c)) {
            at += 1;
        }
        at
    }

    /// What is left, `None` when used up.
    pub(super) fn rest(&self) -> Option<String> {
        self.pos
            .map(|p| self.buf[p.min(self.buf.len())..].iter().collect())
    }

    /// Marks everything consumed (a comment was reached).
    pub(super) fn consume(&mut self) {
        self.pos = None;
    }
}

/// misc.c `argv_split` with comments ending the line. `None` when a quote
/// is not closed.
pub(super) fn argv_split(s: &str) -> Option<Vec<String>> {
    let s: Vec<char> = s.chars().collect();
    let mut args = Vec::new();
    let mut i = 0;
    while i < s.len() {
        if s[i] == ' ' || s[i] == '\t' {
            i += 1;
            continue;
        }
        if s[i] == '#' {
            break;
        }
        let mut arg = String::new();
        let mut quote = None;
        while i < s.len() {
            let c = s[i];
            if c == '\\' {
                match s.get(i + 1) {
                    Some(&n)
                        if n == '\'' || n == '"' || n == '\\' || (quote.is_none() && n == ' ') =>
                    {
                        arg.push(n);
                        i += 1;
                    }
                    // An unrecognised escape stays as written.
                    _ => arg.push(c),
                }
            } else if quote.is_none() && (c == ' ' || c == '\t') {
                break;
            } else if quote.is_none() && (c == '"' || c == '\'') {
                quote = Some(c);
            } else if quote == Some(c) {
                quote = None;
            } else {
                arg.push(c);
            }
            i += 1;
        }
        if i >= s.len() && quote.is_some() {
            return None;
        }
        args.push(arg);
    }
    Some(args)
}
