//! Which worker pool (task queue) a host works in.
//!
//! As on Firefox CI, a Puppet role names a pool through a table (the Linux
//! hardware testers work in pools suffixed with their Ubuntu release), other
//! roles work in `<provisioner>/<role with _ spelled ->`, and a
//! `WORKER_TYPE_OVERRIDE=` line in the host's override file moves the host to
//! another worker type of the same provisioner.

use std::collections::BTreeMap;
use std::fmt;

/// Firefox CI's Linux hardware pools, by Puppet role.
pub(crate) const FIREFOX_CI_POOLS: [(&str, &str); 4] = [
    (
        "gecko_t_linux_talos",
        "releng-hardware/gecko-t-linux-talos-1804",
    ),
    (
        "gecko_t_linux_2404_talos",
        "releng-hardware/gecko-t-linux-talos-2404",
    ),
    (
        "gecko_t_linux_netperf",
        "releng-hardware/gecko-t-linux-netperf-1804",
    ),
    (
        "gecko_t_linux_2404_netperf",
        "releng-hardware/gecko-t-linux-netperf-2404",
    ),
];

/// The default role → pool table.
pub(crate) fn firefox_ci_pools() -> BTreeMap<String, String> {
    FIREFOX_CI_POOLS
        .iter()
        .map(|(r, p)| (r.to_string(), p.to_string()))
        .collect()
}

/// A task queue id, `<provisionerId>/<workerType>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct PoolId {
    pub provisioner: String,
    pub worker_type: String,
}

impl fmt::Display for PoolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provisioner, self.worker_type)
    }
}

impl PoolId {
    /// Parses `<provisionerId>/<workerType>` as the queue accepts it.
    pub(crate) fn parse(s: &str) -> Option<PoolId> {
        let (p, wt) = s.split_once('/')?;
        (generic_id(p) && worker_type(wt)).then(|| PoolId {
            provisioner: p.to_string(),
            worker_type: wt.to_string(),
        })
    }
}

/// The queue's pattern for provisioner ids, worker groups and worker ids:
/// `^[a-zA-Z0-9-_]{1,38}$`.
pub(crate) fn generic_id(s: &str) -> bool {
    (1..=38).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The worker-type half of a task queue id:
/// `^[a-z]([-a-z0-9]{0,36}[a-z0-9])?$`. A worker whose worker type does not
/// match cannot claim work at all (the queue refuses its `claimWork`).
pub(crate) fn worker_type(s: &str) -> bool {
    let b = s.as_bytes();
    let inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-';
    match b {
        [] => false,
        [first] => first.is_ascii_lowercase(),
        [first, mid @ .., last] => {
            b.len() <= 38
                && first.is_ascii_lowercase()
                && mid.iter().all(inner)
                && (last.is_ascii_lowercase() || last.is_ascii_digit())
        }
    }
}

/// The pool a host of `role` works in, given the `WORKER_TYPE_OVERRIDE` of
/// its override file; `None` when the result is not a valid task queue id
/// (such a worker claims nothing anywhere).
pub(crate) fn pool_for(
    table: &BTreeMap<String, String>,
    provisioner: &str,
    role: &str,
    worker_type_override: Option<&str>,
) -> Option<PoolId> {
    let base = match table.get(role) {
        Some(p) => PoolId::parse(p)?,
        None => PoolId {
            provisioner: provisioner.to_string(),
            worker_type: role.replace('_', "-"),
        },
    };
    let pool = match worker_type_override {
        Some(wt) => PoolId {
            provisioner: base.provisioner,
            worker_type: wt.to_string(),
        },
        None => base,
    };
    (generic_id(&pool.provisioner) && worker_type(&pool.worker_type)).then_some(pool)
}

/// The `WORKER_TYPE_OVERRIDE` an override file sets, read the way a shell
/// sourcing it would for the simple forms such files use: `KEY=value`,
/// optionally after `export `, the value optionally quoted; comments and
/// other lines are ignored; a later assignment wins; an empty value is none.
pub(crate) fn worker_type_override(content: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(content);
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let line = line
            .strip_prefix("export")
            .filter(|rest| rest.starts_with([' ', '\t']))
            .map_or(line, str::trim_start);
        let Some(value) = line.strip_prefix("WORKER_TYPE_OVERRIDE=") else {
            continue;
        };
        let value = value.trim_end();
        let unquoted = ['"', '\'']
            .iter()
            .find_map(|q| {
                value
                    .strip_prefix(*q)
                    .and_then(|v| v.strip_suffix(*q))
                    .filter(|v| !v.contains(*q))
            })
            .unwrap_or(value);
        found = (!unquoted.is_empty()).then(|| unquoted.to_string());
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_map_to_firefox_ci_pools() {
        let t = firefox_ci_pools();
        let pool = |role, o| pool_for(&t, "releng-hardware", role, o).map(|p| p.to_string());
        assert_eq!(
            pool("gecko_t_linux_talos", None).as_deref(),
            Some("releng-hardware/gecko-t-linux-talos-1804")
        );
        assert_eq!(
            pool("gecko_t_linux_2404_netperf", None).as_deref(),
            Some("releng-hardware/gecko-t-linux-netperf-2404")
        );
        assert_eq!(
            pool("gecko_t_osx_1400_r8", None).as_deref(),
            Some("releng-hardware/gecko-t-osx-1400-r8")
        );
        assert_eq!(
            pool("gecko_t_linux_talos", Some("gecko-t-linux-talos-exp")).as_deref(),
            Some("releng-hardware/gecko-t-linux-talos-exp")
        );
        assert_eq!(pool("gecko_t_linux_talos", Some("Not_Valid")), None);
        assert_eq!(pool("Upper", None), None);
    }

    #[test]
    fn reads_worker_type_override_like_a_shell() {
        let wt = |s: &str| worker_type_override(s.as_bytes());
        assert_eq!(wt("PUPPET_BRANCH=x\n"), None);
        assert_eq!(wt("WORKER_TYPE_OVERRIDE=a-b\n").as_deref(), Some("a-b"));
        assert_eq!(
            wt("export WORKER_TYPE_OVERRIDE=\"a-b\"\n").as_deref(),
            Some("a-b")
        );
        assert_eq!(
            wt("  export\tWORKER_TYPE_OVERRIDE='x1'  \n").as_deref(),
            Some("x1")
        );
        assert_eq!(wt("# WORKER_TYPE_OVERRIDE=a\n"), None);
        assert_eq!(
            wt("WORKER_TYPE_OVERRIDE=a\nWORKER_TYPE_OVERRIDE=b\n").as_deref(),
            Some("b")
        );
        assert_eq!(wt("WORKER_TYPE_OVERRIDE=a\nWORKER_TYPE_OVERRIDE=\n"), None);
        assert_eq!(wt("exportWORKER_TYPE_OVERRIDE=a\n"), None);
    }

    #[test]
    fn queue_id_patterns() {
        assert!(worker_type("a"));
        assert!(worker_type("gecko-t-linux-talos-1804"));
        assert!(!worker_type("gecko-t-"));
        assert!(!worker_type("1abc"));
        assert!(!worker_type("gecko_t"));
        assert!(!worker_type(&"a".repeat(39)));
        assert!(generic_id("mdc1"));
        assert!(!generic_id("a/b"));
        assert_eq!(
            PoolId::parse("releng-hardware/x").map(|p| p.to_string()),
            Some("releng-hardware/x".into())
        );
        assert_eq!(PoolId::parse("releng-hardware"), None);
    }
}
