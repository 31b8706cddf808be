//! OpenSSH's wildcard patterns (match.c): `*` matches any run of bytes, `?`
//! any one byte, everything else itself, case-sensitively.

/// match.c `match_pattern`: whether `s` matches `pattern` as a whole.
pub(super) fn match_pattern(s: &str, pattern: &str) -> bool {
    let (s, p) = (s.as_bytes(), pattern.as_bytes());
    // Iterative wildcard matching with backtracking to the last `*`: the
    // same language as OpenSSH's recursive matcher, without its worst case.
    let (mut si, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) && p[pi] != b'*' {
            si += 1;
            pi += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((star_p, star_s)) = star {
            pi = star_p + 1;
            si = star_s + 1;
            star = Some((star_p, star_s + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// How `s` fares against a comma-separated pattern list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ListMatch {
    /// A negated (`!pattern`) entry matched: this overrides any positive one.
    Negated,
    /// No entry matched.
    No,
    /// A positive entry matched and no negated one.
    Yes,
}

/// match.c `match_pattern_list`: each comma-separated entry may be negated
/// with `!`; with `lower`, the patterns are lowercased first (the string is
/// not).
pub(super) fn match_pattern_list(s: &str, list: &str, lower: bool) -> ListMatch {
    let mut positive = false;
    let mut entries: Vec<&str> = list.split(',').collect();
    if entries.last() == Some(&"") {
        // OpenSSH reads no entry after a trailing comma (or in "").
        entries.pop();
    }
    for entry in entries {
        let (negated, pattern) = match entry.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, entry),
        };
        if pattern.len() >= 1023 {
            // OpenSSH gives up on the whole list.
            return ListMatch::No;
        }
        let pattern = if lower {
            pattern.to_ascii_lowercase()
        } else {
            pattern.to_string()
        };
        if match_pattern(s, &pattern) {
            if negated {
                return ListMatch::Negated;
            }
            positive = true;
        }
    }
    if positive {
        ListMatch::Yes
    } else {
        ListMatch::No
    }
}

/// match.c `match_hostname`: a pattern list against a host name, both
/// lowercased.
pub(crate) fn match_hostname(host: &str, list: &str) -> bool {
    match_pattern_list(&host.to_ascii_lowercase(), list, true) == ListMatch::Yes
}

/// A `Host` line's patterns against the host: a negated pattern that matches
/// rules the line out, whatever else matches.
pub(super) fn host_line_matches(host: &str, patterns: &[String]) -> bool {
    let mut matched = false;
    for pattern in patterns {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern.as_str()),
        };
        if match_pattern(host, pattern) {
            if negated {
                return false;
            }
            matched = true;
        }
    }
    matched
}
