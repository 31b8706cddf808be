//! OpenSSH's readings of numbers, times and flags (misc.c `a2port`,
//! `convtime`, `strtonum`; readconf.c's multistate tables).

use super::StrictHostKeyChecking;

/// OpenBSD `strtonum` in base 10 (leading whitespace and a sign allowed, as
/// `strtoll` takes them), within `min..=max`.
pub(super) fn strtonum(s: &str, min: i64, max: i64) -> Result<i64, &'static str> {
    let t = s.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let (negative, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("invalid");
    }
    let magnitude: i64 = digits
        .parse()
        .map_err(|_| if negative { "too small" } else { "too large" })?;
    let value = if negative { -magnitude } else { magnitude };
    if value < min {
        Err("too small")
    } else if value > max {
        Err("too large")
    } else {
        Ok(value)
    }
}

/// misc.c `a2port`: a port number 1..=65535 or a TCP service name from
/// /etc/services (OpenSSH takes `Port ssh`). `None` when neither.
pub(super) fn a2port(s: &str) -> Option<u16> {
    let port = match strtonum(s, 0, 65535) {
        Ok(n) => u16::try_from(n).ok(),
        Err(_) => service_port(s),
    };
    port.filter(|&p| p > 0)
}

/// The TCP port of a service named in /etc/services.
fn service_port(name: &str) -> Option<u16> {
    if name.is_empty() {
        return None;
    }
    let services = std::fs::read_to_string("/etc/services").ok()?;
    for line in services.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let (Some(service), Some(port_proto)) = (words.next(), words.next()) else {
            continue;
        };
        let Some((port, "tcp")) = port_proto.split_once('/') else {
            continue;
        };
        if service == name || words.any(|alias| alias == name) {
            return port.parse().ok();
        }
    }
    None
}

/// misc.c `convtime`: `90`, `90s`, `1m30s`, `2h`, `1d`, `1w` (units in
/// either case) to seconds, at most `i32::MAX`.
pub(super) fn convtime(s: &str) -> Option<u32> {
    if s.is_empty() {
        return None;
    }
    let mut total: i64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        // strtol: optional whitespace and sign, then digits.
        let t = rest.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
        let (negative, t) = match t.as_bytes().first() {
            Some(b'-') => (true, &t[1..]),
            Some(b'+') => (false, &t[1..]),
            _ => (false, t),
        };
        let digits = t.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let secs: i64 = t[..digits].parse().ok()?;
        if negative && secs != 0 {
            return None;
        }
        let after = &t[digits..];
        let (multiplier, unit) = match after.as_bytes().first() {
            None => (1, 0),
            Some(b's' | b'S') => (1, 1),
            Some(b'm' | b'M') => (60, 1),
            Some(b'h' | b'H') => (60 * 60, 1),
            Some(b'd' | b'D') => (24 * 60 * 60, 1),
            Some(b'w' | b'W') => (7 * 24 * 60 * 60, 1),
            Some(_) => return None,
        };
        let after = &after[unit..];
        let max = i64::from(i32::MAX);
        if secs > max / multiplier {
            return None;
        }
        let secs = secs * multiplier;
        if total > max - secs {
            return None;
        }
        total += secs;
        rest = after;
    }
    u32::try_from(total).ok()
}

/// readconf.c `multistate_flag`: yes/true, no/false, any case.
pub(super) fn flag(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "yes" | "true" => Some(true),
        "no" | "false" => Some(false),
        _ => None,
    }
}

/// readconf.c `multistate_strict_hostkey`.
pub(super) fn strict_host_key_checking(s: &str) -> Option<StrictHostKeyChecking> {
    match s.to_ascii_lowercase().as_str() {
        "yes" | "true" => Some(StrictHostKeyChecking::Yes),
        "no" | "false" | "off" => Some(StrictHostKeyChecking::No),
        "ask" => Some(StrictHostKeyChecking::Ask),
        "accept-new" => Some(StrictHostKeyChecking::AcceptNew),
        _ => None,
    }
}

/// readconf.c `multistate_canonicalizehostname`: whether it is on.
pub(super) fn canonicalize_hostname(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "yes" | "true" | "always" => Some(true),
        "no" | "false" => Some(false),
        _ => None,
    }
}
