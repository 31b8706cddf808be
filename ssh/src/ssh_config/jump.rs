//! `ProxyJump` values, read as readconf.c `parse_jump` and misc.c
//! `parse_user_host_port` / `parse_uri` read them.

use super::value::a2port;
use super::{Jump, ProxyJump};

/// C `isspace`.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// `raw` is the text after the keyword and its separator. Everything from
/// a `#` on is a comment, and only the first word counts: OpenSSH 9.2's
/// `rtrim()` cuts the value at its first whitespace (`ProxyJump a b` jumps
/// through `a`). `none` (any case) is [`ProxyJump::None`].
pub(super) fn parse_proxy_jump(raw: &str) -> Result<ProxyJump, String> {
    let value = raw.split('#').next().unwrap_or_default();
    let end = value
        .char_indices()
        .skip(1)
        .find(|&(_, c)| is_c_space(c))
        .map_or(value.len(), |(i, _)| i);
    let value = &value[..end];
    if raw.eq_ignore_ascii_case("none") || value.eq_ignore_ascii_case("none") {
        return Ok(ProxyJump::None);
    }
    value
        .split(',')
        .map(|hop| parse_hop(hop).ok_or_else(|| format!("Invalid ProxyJump \"{raw}\"")))
        .collect::<Result<Vec<_>, _>>()
        .map(ProxyJump::Hops)
}

/// `[user@]host[:port]` or `ssh://[user@]host[:port][/]`.
fn parse_hop(hop: &str) -> Option<Jump> {
    match hop.strip_prefix("ssh://") {
        Some(uri) => parse_uri(uri),
        None => parse_user_host_port(hop),
    }
}

/// misc.c `parse_user_host_port`: the user is up to the last `@`.
fn parse_user_host_port(s: &str) -> Option<Jump> {
    let (user, rest) = match s.rsplit_once('@') {
        Some(("", _)) => return None,
        Some((user, rest)) => (Some(user.to_string()), rest),
        None => (None, s),
    };
    let (host, delimiter, tail) = hpdelim2(rest)?;
    if delimiter == Some('/') || host.is_empty() {
        return None;
    }
    let port = match tail {
        Some(tail) if !tail.is_empty() => Some(a2port(tail)?),
        _ => None,
    };
    Some(Jump {
        user,
        host: cleanhostname(host).to_string(),
        port,
    })
}

/// misc.c `parse_uri("ssh", …)` after the `ssh://`: the user is up to the
/// first `@` (`;` parameters dropped, `%XX` decoded), the host must be a
/// plausible domain name, no path.
fn parse_uri(uri: &str) -> Option<Jump> {
    let (user, rest) = match uri.split_once('@') {
        Some((info, rest)) => {
            let user = info.split(';').next().unwrap_or_default();
            if user.is_empty() {
                return None;
            }
            (Some(urldecode(user)?), rest)
        }
        None => (None, uri),
    };
    let (host, delimiter, tail) = hpdelim2(rest)?;
    if host.is_empty() {
        return None;
    }
    let host = valid_domain(cleanhostname(host))?;
    let mut port = None;
    let mut path = tail.filter(|t| !t.is_empty());
    if let (Some(t), Some(':')) = (path, delimiter) {
        let (number, after) = match t.split_once('/') {
            Some((number, after)) => (number, Some(after)),
            None => (t, None),
        };
        port = Some(a2port(number)?);
        path = after.filter(|t| !t.is_empty());
    }
    if path.is_some() {
        return None;
    }
    Some(Jump {
        user,
        host: host.to_string(),
        port,
    })
}

/// misc.c `hpdelim2`: the host part (a bracketed address kept whole), the
/// `:` or `/` after it, and what follows.
fn hpdelim2(s: &str) -> Option<(&str, Option<char>, Option<&str>)> {
    let end = if s.starts_with('[') {
        s.find(']')? + 1
    } else {
        s.find([':', '/']).unwrap_or(s.len())
    };
    match s[end..].chars().next() {
        None => Some((s, None, None)),
        Some(c @ (':' | '/')) => Some((&s[..end], Some(c), Some(&s[end + 1..]))),
        Some(_) => None,
    }
}

/// misc.c `cleanhostname`: brackets off an address.
fn cleanhostname(host: &str) -> &str {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(inner) => inner,
        None => host,
    }
}

/// misc.c `valid_domain` (without lowercasing): letters, digits, `.`, `-`,
/// `_`, starting with a letter or digit, no `..`; a trailing `.` dropped.
fn valid_domain(name: &str) -> Option<&str> {
    let first = name.bytes().next()?;
    if !first.is_ascii_alphanumeric()
        || name.contains("..")
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return None;
    }
    Some(name.strip_suffix('.').unwrap_or(name))
}

/// misc.c `urldecode`: `+` is a space, `%XX` a byte.
fn urldecode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}
