//! Scope satisfaction as Taskcluster's lib-scopes does it, for the
//! single-scope expressions the double's endpoints require.

/// Whether a client holding `have` satisfies `required`: a held scope
/// equals it, or ends in `*` and the rest is a prefix of it.
pub(crate) fn satisfies(have: &[String], required: &str) -> bool {
    have.iter().any(|s| match s.strip_suffix('*') {
        Some(prefix) => required.starts_with(prefix),
        None => s == required,
    })
}

/// Taskcluster's scope syntax: printable ASCII (space included), no newline.
pub(crate) fn valid(scope: &str) -> bool {
    scope.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

/// `a` followed by the scopes of `b` it lacks.
pub(crate) fn merge(a: &[String], b: &[String]) -> Vec<String> {
    let mut out = a.to_vec();
    for s in b {
        if !out.contains(s) {
            out.push(s.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn star_matches_any_suffix() {
        let have = s(&["queue:quarantine-worker:releng-hardware/*"]);
        assert!(satisfies(
            &have,
            "queue:quarantine-worker:releng-hardware/gecko-t-linux-talos-1804/mdc1/lab-0001"
        ));
        assert!(!satisfies(&have, "queue:quarantine-worker:other/x/y/z"));
        assert!(satisfies(&s(&["*"]), "anything:at-all"));
        assert!(satisfies(&s(&["a:b"]), "a:b"));
        assert!(!satisfies(&s(&["a:b"]), "a:bc"));
        // A star in the middle is a literal character.
        assert!(!satisfies(&s(&["a:*:c"]), "a:b:c"));
        assert!(satisfies(&s(&["a:*:c"]), "a:*:c"));
        assert!(!satisfies(&[], "a"));
        assert!(valid("queue:get-worker:*"));
        assert!(!valid("a\nb"));
    }
}
