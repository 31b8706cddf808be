//! Which pool a host should work in: `WORKER_TYPE_OVERRIDE` in its
//! override file, else its role's entry in the pool table, else its role's
//! name with `_` spelled `-` under the default provisioner.

use std::collections::BTreeMap;

use fleetroll_bus::messages::workload::{ExpectedPool, PoolRule};

/// Firefox CI's Linux hardware pools: their names carry the OS release,
/// which the roles do not. (Its macOS pools follow the role's name.)
pub const FIREFOX_CI_POOLS: &[(&str, &str)] = &[
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

/// Taskcluster's identifiers (provisioner, worker type, worker group and
/// id): 1 to 38 characters of `[a-zA-Z0-9_-]`.
pub fn identifier(s: &str) -> bool {
    (1..=38).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A pool id, `<provisioner>/<worker type>`, split; `None` when either half
/// is not an identifier.
pub fn split_pool(pool: &str) -> Option<(&str, &str)> {
    pool.split_once('/')
        .filter(|(p, t)| identifier(p) && identifier(t))
}

/// A pool table entry that is not a pool id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "[workload.pools] maps `{role}` to `{pool}`, which is not `<provisioner>/<worker type>` (each 1-38 characters of A-Z a-z 0-9 _ -)"
)]
pub struct BadPool {
    pub role: String,
    pub pool: String,
}

/// Role → pool, with the rule for roles it does not list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolTable {
    provisioner: String,
    table: BTreeMap<String, String>,
}

impl PoolTable {
    /// The Firefox CI defaults with `entries` over them.
    pub fn new(
        provisioner: &str,
        entries: &BTreeMap<String, String>,
    ) -> Result<PoolTable, BadPool> {
        let mut table: BTreeMap<String, String> = FIREFOX_CI_POOLS
            .iter()
            .map(|(role, pool)| (role.to_string(), pool.to_string()))
            .collect();
        for (role, pool) in entries {
            if split_pool(pool).is_none() {
                return Err(BadPool {
                    role: role.clone(),
                    pool: pool.clone(),
                });
            }
            table.insert(role.clone(), pool.clone());
        }
        Ok(PoolTable {
            provisioner: provisioner.to_string(),
            table,
        })
    }

    /// The pool hosts of `role` work in.
    pub fn for_role(&self, role: &str) -> ExpectedPool {
        match self.table.get(role) {
            Some(pool) => ExpectedPool {
                pool: pool.clone(),
                rule: PoolRule::Table,
            },
            None => ExpectedPool {
                pool: format!("{}/{}", self.provisioner, role.replace('_', "-")),
                rule: PoolRule::RoleName,
            },
        }
    }

    /// The pool a host works in: its override's `WORKER_TYPE_OVERRIDE`
    /// (under its role's provisioner) wins over its role's pool.
    pub fn for_host(
        &self,
        role: Option<&str>,
        override_contents: Option<&str>,
    ) -> Option<ExpectedPool> {
        let by_role = role.map(|r| self.for_role(r));
        match override_contents.and_then(worker_type_override) {
            Some(worker_type) => {
                let provisioner = by_role
                    .as_ref()
                    .and_then(|p| split_pool(&p.pool))
                    .map_or(self.provisioner.as_str(), |(p, _)| p);
                Some(ExpectedPool {
                    pool: format!("{provisioner}/{worker_type}"),
                    rule: PoolRule::WorkerTypeOverride,
                })
            }
            None => by_role,
        }
    }
}

/// The worker type an override file sets, read as the shell would: the
/// last `WORKER_TYPE_OVERRIDE=` assignment (with or without `export`,
/// quotes, a trailing comment), commented-out lines ignored. A value that
/// is not a worker type is no override.
pub fn worker_type_override(contents: &str) -> Option<&str> {
    let mut found = None;
    for line in contents.lines() {
        let line = line.trim();
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let Some(value) = line.strip_prefix("WORKER_TYPE_OVERRIDE=") else {
            continue;
        };
        let value = match value.chars().next() {
            Some(q @ ('\'' | '"')) => value[1..].split(q).next().unwrap_or(""),
            _ => value.split_whitespace().next().unwrap_or(""),
        };
        found = Some(value);
    }
    found.filter(|v| identifier(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> PoolTable {
        let mut entries = BTreeMap::new();
        entries.insert("moonshot_x".to_string(), "proj-x/moon-shot".to_string());
        PoolTable::new("releng-hardware", &entries).unwrap()
    }

    #[test]
    fn roles_map_through_the_table_then_the_name_rule() {
        let t = table();
        assert_eq!(
            t.for_role("gecko_t_linux_talos"),
            ExpectedPool {
                pool: "releng-hardware/gecko-t-linux-talos-1804".into(),
                rule: PoolRule::Table
            }
        );
        assert_eq!(
            t.for_role("gecko_t_linux_2404_netperf").pool,
            "releng-hardware/gecko-t-linux-netperf-2404"
        );
        assert_eq!(t.for_role("moonshot_x").pool, "proj-x/moon-shot");
        assert_eq!(
            t.for_role("gecko_t_osx_1400_r8"),
            ExpectedPool {
                pool: "releng-hardware/gecko-t-osx-1400-r8".into(),
                rule: PoolRule::RoleName
            }
        );
    }

    #[test]
    fn a_bad_table_entry_is_refused() {
        let mut entries = BTreeMap::new();
        entries.insert("r".to_string(), "no-slash".to_string());
        assert!(PoolTable::new("releng-hardware", &entries).is_err());
        entries.insert("r".to_string(), "a/b/c".to_string());
        assert!(PoolTable::new("releng-hardware", &entries).is_err());
    }

    #[test]
    fn the_override_names_the_worker_type_under_the_roles_provisioner() {
        let t = table();
        let moved = t
            .for_host(
                Some("moonshot_x"),
                Some("PUPPET_BRANCH=x\nWORKER_TYPE_OVERRIDE='moon-staging'\n"),
            )
            .unwrap();
        assert_eq!(moved.pool, "proj-x/moon-staging");
        assert_eq!(moved.rule, PoolRule::WorkerTypeOverride);
        assert_eq!(
            t.for_host(None, Some("WORKER_TYPE_OVERRIDE=t-staging"))
                .unwrap()
                .pool,
            "releng-hardware/t-staging"
        );
        assert_eq!(
            t.for_host(Some("gecko_t_linux_talos"), Some("PUPPET_BRANCH=x"))
                .unwrap()
                .rule,
            PoolRule::Table
        );
        assert_eq!(t.for_host(None, None), None);
    }

    #[test]
    fn override_files_are_read_as_the_shell_reads_them() {
        let cases = [
            ("WORKER_TYPE_OVERRIDE=a-b", Some("a-b")),
            ("WORKER_TYPE_OVERRIDE=\"a-b\"", Some("a-b")),
            ("export WORKER_TYPE_OVERRIDE='a-b'", Some("a-b")),
            ("  WORKER_TYPE_OVERRIDE=a-b # staging", Some("a-b")),
            ("# WORKER_TYPE_OVERRIDE='a-b'", None),
            ("WORKER_TYPE_OVERRIDE=a\nWORKER_TYPE_OVERRIDE=b", Some("b")),
            ("WORKER_TYPE_OVERRIDE=", None),
            ("WORKER_TYPE_OVERRIDE='a/../b'", None),
            ("MY_WORKER_TYPE_OVERRIDE=a", None),
            ("PUPPET_BRANCH=x", None),
        ];
        for (contents, expected) in cases {
            assert_eq!(worker_type_override(contents), expected, "{contents:?}");
        }
    }
}
