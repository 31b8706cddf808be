//! Text for a person's terminal. Much of what fleetroll prints came from
//! hosts (roles, Puppet metadata, stderr in an error, converge output), and
//! a control character in it could move the cursor, rewrite the screen or
//! retitle the window. Everything printed for a person goes through
//! [`escape`] ([`say!`], [`tell!`]); `--json` output does not, since JSON
//! escapes control characters itself.

use std::borrow::Cow;

/// `text` with every control character but newline and tab shown as an
/// escape (`\x1b`, `\u{9b}`), so it prints as what it is.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !is_unsafe(c) {
            out.push(c);
        } else if c.is_ascii() {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        }
    }
    Cow::Owned(out)
}

fn is_unsafe(c: char) -> bool {
    c.is_control() && c != '\n' && c != '\t'
}

/// Bytes from a host (converge output, as it streams) as text for the
/// terminal: invalid UTF-8 is replaced, control characters escaped. A
/// character cut between two pieces is kept for the next one.
#[derive(Debug, Default)]
pub struct ByteEscaper {
    pending: Vec<u8>,
}

impl ByteEscaper {
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let cut = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            // An incomplete sequence at the end waits for its other bytes.
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => self.pending.len(),
        };
        let rest = self.pending.split_off(cut);
        let text = escape(&String::from_utf8_lossy(&self.pending)).into_owned();
        self.pending = rest;
        text
    }
}

/// `println!` for a person: the line is [`escape`]d. A closed stdout is
/// no reason to stop (a worker whose output nobody reads goes on).
macro_rules! say {
    () => { $crate::term::line(&mut std::io::stdout(), "") };
    ($($arg:tt)*) => { $crate::term::line(&mut std::io::stdout(), &format!($($arg)*)) };
}

/// `eprintln!` for a person: the line is [`escape`]d.
macro_rules! tell {
    ($($arg:tt)*) => { $crate::term::line(&mut std::io::stderr(), &format!($($arg)*)) };
}

/// Writes `text`, escaped, as a line; a write that fails (nobody reads
/// any more) is dropped.
pub fn line(out: &mut impl std::io::Write, text: &str) {
    let _ = writeln!(out, "{}", escape(text));
}

pub(crate) use {say, tell};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(escape("gecko_t_linux\n"), "gecko_t_linux\n");
        assert_eq!(
            escape("\u{1b}]0;pwned\u{7}role\r\u{9b}2J\u{7f}"),
            "\\x1b]0;pwned\\x07role\\x0d\\u{9b}2J\\x7f"
        );
    }

    #[test]
    fn a_character_split_between_pieces_survives() {
        let mut e = ByteEscaper::default();
        let text = "né\u{1b}[2J\n".as_bytes();
        let mut out = e.push(&text[..2]);
        out += &e.push(&text[2..]);
        assert_eq!(out, "né\\x1b[2J\n");
        assert_eq!(e.push(b"\xff ok"), "\u{fffd} ok");
    }
}
