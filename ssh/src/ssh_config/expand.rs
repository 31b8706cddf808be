//! `~`, `%`-token and `${VAR}` expansion as OpenSSH's misc.c does it
//! (`tilde_expand`, `percent_expand`, `percent_dollar_expand`).

use std::path::Path;

use super::sys;

/// misc.c `tilde_expand`: a leading `~` or `~/` is `home`, `~user` that
/// user's home directory (a `/` is put between). `Err` names a `~user`
/// with no passwd entry, which OpenSSH refuses.
pub(super) fn tilde(path: &str, home: &Path) -> Result<String, String> {
    let Some(after) = path.strip_prefix('~') else {
        return Ok(path.to_string());
    };
    let (user, rest) = if after.is_empty() {
        (None, "")
    } else if after.starts_with('/') {
        (None, after.trim_start_matches('/'))
    } else {
        match after.split_once('/') {
            Some((user, rest)) => (Some(user), rest.trim_start_matches('/')),
            None => (Some(after), ""),
        }
    };
    let home = match user {
        Some(user) => match sys::user_by_name(user) {
            Some(pw) => pw.home,
            None => return Err(format!("~{user}")),
        },
        None => home.to_path_buf(),
    };
    let home = home.to_string_lossy();
    let slash = if home.ends_with('/') { "" } else { "/" };
    Ok(format!("{home}{slash}{rest}"))
}

/// The result of an expansion: the text, and what could not be expanded
/// (left as written): `%C`, `%`, `${VAR}` (unset), `${` (not closed), `${}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Expansion {
    pub text: String,
    pub problems: Vec<String>,
}

/// Expands `%x` tokens from `tokens` (when given; `%%` is `%`) and, with
/// `dollar`, `${VAR}` from the environment. Replacements are not expanded
/// again.
pub(super) fn expand(s: &str, tokens: Option<&[(char, &str)]>, dollar: bool) -> Expansion {
    let mut out = Expansion::default();
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if dollar && rest.starts_with("${") {
            let inner = &rest[2..];
            let Some(close) = inner.find('}') else {
                out.problems.push("${".into());
                out.text.push_str(rest);
                break;
            };
            let name = &inner[..close];
            let written = &rest[..close + 3];
            let value = if name.is_empty() || name.contains(['=', '\0']) {
                None
            } else {
                std::env::var_os(name)
            };
            match value {
                Some(value) => out.text.push_str(&value.to_string_lossy()),
                None => {
                    out.problems.push(written.to_string());
                    out.text.push_str(written);
                }
            }
            rest = &rest[close + 3..];
            continue;
        }
        let (Some(tokens), '%') = (tokens, c) else {
            out.text.push(c);
            rest = &rest[c.len_utf8()..];
            continue;
        };
        let after = &rest[1..];
        match after.chars().next() {
            None => {
                out.problems.push("%".into());
                out.text.push('%');
                rest = after;
            }
            Some('%') => {
                out.text.push('%');
                rest = &after[1..];
            }
            Some(key) => {
                match tokens.iter().find(|(k, _)| *k == key) {
                    Some((_, value)) => out.text.push_str(value),
                    None => {
                        out.problems.push(format!("%{key}"));
                        out.text.push('%');
                        out.text.push(key);
                    }
                }
                rest = &after[key.len_utf8()..];
            }
        }
    }
    out
}

/// The check OpenSSH makes when it reads an `IdentityAgent` (or
/// `ForwardAgent`) path: every `${VAR}` closed, named and set, and the legacy
/// `$VAR` form a valid name.
pub(super) fn check_agent_path(s: &str) -> Result<(), String> {
    if let Some(problem) = expand(s, None, true).problems.first() {
        return Err(format!("invalid environment expansion {s} ({problem})"));
    }
    if let Some(name) = s.strip_prefix('$')
        && !name.starts_with('{')
        && !valid_env_name(name)
    {
        return Err(format!("invalid environment name {s}"));
    }
    Ok(())
}

/// misc.c `valid_env_name`.
pub(super) fn valid_env_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}
