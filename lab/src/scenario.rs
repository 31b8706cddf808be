//! Scenario files: what each lab host looks like and how it misbehaves.
//!
//! A scenario is TOML (or JSON, by extension `.json`) with host defaults, the
//! Puppet branches that break, the Taskcluster shape, and per-host overrides
//! selected by name or by index range. See `lab/README.md` for the format.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::error::LabError;

/// The default Puppet repository, the one ronin hosts converge from.
pub const DEFAULT_PUPPET_REPO: &str = "https://github.com/mozilla-platform-ops/ronin_puppet.git";

/// Which operating system a lab host pretends to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Os {
    /// Linux layout: override in /etc/puppet, vault in /root.
    Linux,
    /// macOS layout: override and metadata in /opt/puppet_environments,
    /// vault in /var/root, `uname -s` says Darwin, `sw_vers` exists.
    Macos,
}

impl Os {
    /// Where the override file lives on this OS.
    pub fn override_path(self) -> &'static str {
        match self {
            Os::Linux => "/etc/puppet/ronin_settings",
            Os::Macos => "/opt/puppet_environments/ronin_settings",
        }
    }

    /// Where the Puppet wrapper writes its metadata on a lab host of this OS.
    pub fn metadata_path(self) -> &'static str {
        match self {
            Os::Linux => "/etc/puppet/last_run_metadata.json",
            Os::Macos => "/opt/puppet_environments/last_run_metadata.json",
        }
    }

    /// Where the vault file lives on this OS.
    pub fn vault_path(self) -> &'static str {
        match self {
            Os::Linux => "/root/vault.yaml",
            Os::Macos => "/var/root/vault.yaml",
        }
    }

    /// The role a host of this OS gets when the scenario names none.
    pub fn default_role(self) -> &'static str {
        match self {
            Os::Linux => "gecko-t-linux-talos",
            Os::Macos => "gecko-t-osx-1400-r8",
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Os::Linux => "linux",
            Os::Macos => "macos",
        }
    }
}

/// What the host's Puppet wrapper leaves in the metadata file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetadataMode {
    /// The current wrapper: valid JSON after every run.
    Present,
    /// An older wrapper: no metadata file at all (Puppet's
    /// last_run_summary.yaml is still written).
    Absent,
    /// A broken wrapper: truncated JSON after every run.
    Malformed,
    /// A broken wrapper: bytes that are not UTF-8 after every run.
    NotUtf8,
}

impl MetadataMode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            MetadataMode::Present => "present",
            MetadataMode::Absent => "absent",
            MetadataMode::Malformed => "malformed",
            MetadataMode::NotUtf8 => "not_utf8",
        }
    }
}

/// Per-host settings as written in a scenario; every field is optional so
/// that defaults and per-host groups can be layered.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    /// Contents of /etc/puppet_role.
    pub role: Option<String>,
    /// Linux or macOS layout.
    pub os: Option<Os>,
    /// Whether `sudo -n` works for the SSH user.
    pub sudo: Option<bool>,
    /// What the Puppet wrapper writes as metadata.
    pub metadata: Option<MetadataMode>,
    /// A pre-existing override file (its exact contents).
    #[serde(rename = "override")]
    pub override_content: Option<String>,
    /// Delay added to every command.
    #[serde(default, deserialize_with = "opt_duration")]
    pub slow: Option<Duration>,
    /// Commands are accepted but never answer.
    pub hang: Option<bool>,
    /// Connections are refused.
    pub unreachable: Option<bool>,
    /// Connections are accepted but the SSH server never speaks.
    pub blackhole: Option<bool>,
    /// How long `reboot` keeps the host away.
    #[serde(default, deserialize_with = "opt_duration")]
    pub reboot_duration: Option<Duration>,
    /// How long a simulated Puppet run takes.
    #[serde(default, deserialize_with = "opt_duration")]
    pub puppet_duration: Option<Duration>,
    /// Jobs the host runs per minute (Taskcluster double).
    pub jobs_per_minute: Option<f64>,
    /// Fraction of jobs that fail for no reason (flaky tests), 0..=1.
    pub job_failure_rate: Option<f64>,
    /// Share of jobs resolved with each Taskcluster `reasonResolved`
    /// (`canceled = 0.1`); the shares add up to at most 1, the rest of the
    /// jobs end as usual.
    pub job_reasons: Option<BTreeMap<String, f64>>,
}

impl HostSpec {
    fn layer(&mut self, over: &HostSpec) {
        macro_rules! take {
            ($($f:ident),*) => { $( if over.$f.is_some() { self.$f = over.$f.clone(); } )* };
        }
        take!(
            role,
            os,
            sudo,
            metadata,
            override_content,
            slow,
            hang,
            unreachable,
            blackhole,
            reboot_duration,
            puppet_duration,
            jobs_per_minute,
            job_failure_rate,
            job_reasons
        );
    }
}

/// Which hosts a `[[hosts]]` group applies to.
#[derive(Debug, Clone, Default)]
pub struct HostSelector {
    /// Short names (`lab-0003`) or full host names.
    pub names: Vec<String>,
    /// 1-based inclusive index range, `[first, last]`.
    pub range: Option<(usize, usize)>,
}

/// A `[[hosts]]` group: settings for the selected hosts.
#[derive(Debug, Clone, Default)]
pub struct HostGroup {
    /// Which hosts.
    pub select: HostSelector,
    /// What to set on them.
    pub spec: HostSpec,
}

/// Puppet behaviour shared by every host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PuppetSpec {
    /// Repository applied when the override names none.
    pub repo: String,
    /// Branch applied when the override names none.
    pub branch: String,
    /// Branches whose Puppet run fails, with the exit code it fails with
    /// (1, 4 or 6, as `puppet apply --detailed-exitcodes`).
    pub broken_branches: BTreeMap<String, i32>,
    /// Branches that apply cleanly but make the host's jobs fail.
    pub bad_branches: Vec<String>,
}

impl Default for PuppetSpec {
    fn default() -> Self {
        PuppetSpec {
            repo: DEFAULT_PUPPET_REPO.to_string(),
            branch: "master".to_string(),
            broken_branches: BTreeMap::new(),
            bad_branches: Vec::new(),
        }
    }
}

/// A Taskcluster client of the double.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSpec {
    /// The client's access token (the Hawk key).
    pub access_token: String,
    /// Scopes the client holds (a trailing `*` matches any suffix).
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// The client every lab has, unless the scenario names it with its own
/// token and scopes.
pub const LAB_CLIENT_ID: &str = "project/fleetroll/lab";

/// The scopes of the lab's own client.
pub const LAB_CLIENT_SCOPES: [&str; 1] = ["queue:quarantine-worker:*"];

/// What anonymous requests may do: read workers and task statuses.
pub const ANONYMOUS_SCOPES: [&str; 5] = [
    "queue:list-workers:*",
    "queue:get-worker:*",
    "queue:status:*",
    "worker-manager:list-workers:*",
    "worker-manager:get-worker:*",
];

/// Shape of the Taskcluster double.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TaskclusterSpec {
    /// The provisioner of roles the pool table does not name.
    pub provisioner: String,
    /// The worker group every lab worker belongs to.
    pub worker_group: String,
    /// Whether jobs fail while the host's last Puppet run failed.
    pub fail_on_puppet_failure: bool,
    /// Role → worker pool (`provisioner/workerType`). Firefox CI's Linux
    /// hardware pools, with the scenario's entries added over them; other
    /// roles work in `<provisioner>/<role with _ spelled ->`.
    #[serde(deserialize_with = "pools_over_defaults")]
    pub pools: BTreeMap<String, String>,
    /// The most workers one page of a listing holds (the real APIs: 1000).
    pub max_page_size: usize,
    /// Workers per pool that expired long ago but still take their place
    /// in the queue's pages (it drops them after paging).
    pub expired_workers: usize,
    /// Share of requests answered 502 by the "load balancer", 0..=1.
    pub fail_rate: f64,
    /// Retries (automatic reruns) each new task has.
    pub task_retries: u32,
    /// How often the queue writes a worker's `lastDateActive`.
    #[serde(deserialize_with = "duration")]
    pub worker_info_update_frequency: Duration,
    /// Clients by clientId, besides the lab's own.
    pub clients: BTreeMap<String, ClientSpec>,
    /// Scopes of the anonymous role (every caller holds them).
    pub anonymous_scopes: Vec<String>,
}

impl Default for TaskclusterSpec {
    fn default() -> Self {
        TaskclusterSpec {
            provisioner: "releng-hardware".to_string(),
            worker_group: "mdc1".to_string(),
            fail_on_puppet_failure: true,
            pools: crate::taskcluster::pools::firefox_ci_pools(),
            max_page_size: 1000,
            expired_workers: 0,
            fail_rate: 0.0,
            task_retries: 5,
            worker_info_update_frequency: Duration::from_secs(30 * 60),
            clients: BTreeMap::new(),
            anonymous_scopes: ANONYMOUS_SCOPES.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl TaskclusterSpec {
    fn validate(&self) -> Result<(), String> {
        use crate::taskcluster::{pools, scopes};
        if !pools::generic_id(&self.provisioner) {
            return Err(format!(
                "taskcluster.provisioner {:?} is not a Taskcluster identifier",
                self.provisioner
            ));
        }
        if !pools::generic_id(&self.worker_group) {
            return Err(format!(
                "taskcluster.worker_group {:?} is not a Taskcluster identifier",
                self.worker_group
            ));
        }
        for (role, pool) in &self.pools {
            if !valid_role(role) || pools::PoolId::parse(pool).is_none() {
                return Err(format!(
                    "taskcluster.pools.{role:?} = {pool:?}: need a role and a task queue id (provisioner/worker-type)"
                ));
            }
        }
        if self.max_page_size == 0 {
            return Err("taskcluster.max_page_size must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.fail_rate) {
            return Err(format!(
                "taskcluster.fail_rate {} must be in [0, 1]",
                self.fail_rate
            ));
        }
        if self.task_retries > 49 {
            return Err("taskcluster.task_retries must be at most 49 (50 runs)".into());
        }
        if self.worker_info_update_frequency < Duration::from_millis(1) {
            return Err("taskcluster.worker_info_update_frequency must be at least 1ms".into());
        }
        for (id, c) in &self.clients {
            if !valid_client_id(id) {
                return Err(format!("taskcluster.clients: {id:?} is not a clientId"));
            }
            if c.access_token.is_empty() || c.access_token.contains('"') {
                return Err(format!("taskcluster.clients.{id:?}: bad access_token"));
            }
            if let Some(s) = c.scopes.iter().find(|s| !scopes::valid(s)) {
                return Err(format!("taskcluster.clients.{id:?}: bad scope {s:?}"));
            }
        }
        if let Some(s) = self.anonymous_scopes.iter().find(|s| !scopes::valid(s)) {
            return Err(format!("taskcluster.anonymous_scopes: bad scope {s:?}"));
        }
        Ok(())
    }
}

/// Taskcluster's clientId pattern: `^[A-Za-z0-9!@/:.+|_-]+$`.
fn valid_client_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!@/:.+|_-".contains(&b))
}

fn pools_over_defaults<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    let mut pools = crate::taskcluster::pools::firefox_ci_pools();
    pools.extend(BTreeMap::<String, String>::deserialize(d)?);
    Ok(pools)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(serde::de::Error::custom)
}

/// A whole scenario.
#[derive(Debug, Clone, Default)]
pub struct Scenario {
    /// Settings for every host, before groups.
    pub defaults: HostSpec,
    /// Puppet behaviour.
    pub puppet: PuppetSpec,
    /// Taskcluster double.
    pub taskcluster: TaskclusterSpec,
    /// Per-host groups, applied in order (later wins).
    pub hosts: Vec<HostGroup>,
}

/// A host's settings after layering defaults and groups.
#[derive(Debug, Clone, PartialEq)]
pub struct HostConfig {
    /// Contents of /etc/puppet_role.
    pub role: String,
    /// Layout.
    pub os: Os,
    /// `sudo -n` allowed.
    pub sudo: bool,
    /// Metadata behaviour.
    pub metadata: MetadataMode,
    /// Pre-existing override.
    pub override_content: Option<String>,
    /// Delay per command.
    pub slow: Duration,
    /// Commands never answer.
    pub hang: bool,
    /// Connections refused.
    pub unreachable: bool,
    /// Connections accepted, never answered.
    pub blackhole: bool,
    /// How long a reboot takes.
    pub reboot_duration: Duration,
    /// How long a Puppet run takes.
    pub puppet_duration: Duration,
    /// Jobs per minute.
    pub jobs_per_minute: f64,
    /// Fraction of jobs failing at random.
    pub job_failure_rate: f64,
    /// Share of jobs resolved with each `reasonResolved`.
    pub job_reasons: BTreeMap<String, f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    #[serde(default)]
    defaults: HostSpec,
    #[serde(default)]
    puppet: PuppetSpec,
    #[serde(default)]
    taskcluster: TaskclusterSpec,
    #[serde(default)]
    hosts: Vec<serde_json::Map<String, serde_json::Value>>,
}

impl Scenario {
    /// Reads a scenario file: JSON when the name ends in `.json`, else TOML.
    pub fn from_file(path: &Path) -> Result<Scenario, LabError> {
        let bad = |message: String| LabError::Scenario {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let is_json = path.extension().is_some_and(|e| e == "json");
        Scenario::parse(&text, is_json).map_err(bad)
    }

    /// Parses scenario text (TOML, or JSON when `json`).
    pub fn parse(text: &str, json: bool) -> Result<Scenario, String> {
        let raw: RawScenario = if json {
            serde_json::from_str(text).map_err(|e| e.to_string())?
        } else {
            toml::from_str(text).map_err(|e| e.to_string())?
        };
        let mut hosts = Vec::new();
        for (i, mut table) in raw.hosts.into_iter().enumerate() {
            let group = i + 1;
            let names = match table.remove("names") {
                None => Vec::new(),
                Some(v) => serde_json::from_value::<Vec<String>>(v)
                    .map_err(|e| format!("[[hosts]] #{group}: names: {e}"))?,
            };
            let range = match table.remove("range") {
                None => None,
                Some(v) => {
                    let r = serde_json::from_value::<(usize, usize)>(v)
                        .map_err(|e| format!("[[hosts]] #{group}: range: {e}"))?;
                    if r.0 == 0 || r.1 < r.0 {
                        return Err(format!(
                            "[[hosts]] #{group}: range must be [first, last], 1-based, first <= last"
                        ));
                    }
                    Some(r)
                }
            };
            if names.is_empty() && range.is_none() {
                return Err(format!("[[hosts]] #{group}: needs `names` or `range`"));
            }
            let spec: HostSpec = serde_json::from_value(serde_json::Value::Object(table))
                .map_err(|e| format!("[[hosts]] #{group}: {e}"))?;
            hosts.push(HostGroup {
                select: HostSelector { names, range },
                spec,
            });
        }
        let scenario = Scenario {
            defaults: raw.defaults,
            puppet: raw.puppet,
            taskcluster: raw.taskcluster,
            hosts,
        };
        scenario.validate()?;
        Ok(scenario)
    }

    fn validate(&self) -> Result<(), String> {
        self.taskcluster.validate()?;
        for (branch, code) in &self.puppet.broken_branches {
            if matches!(code, 0 | 2) || !(1..=255).contains(code) {
                return Err(format!(
                    "puppet.broken_branches.{branch:?}: exit code {code} is not a failure (use 1, 4 or 6)"
                ));
            }
        }
        for spec in std::iter::once(&self.defaults).chain(self.hosts.iter().map(|g| &g.spec)) {
            if let Some(r) = spec.jobs_per_minute
                && !(r.is_finite() && r > 0.0 && r <= 60_000.0)
            {
                return Err(format!("jobs_per_minute {r} must be in (0, 60000]"));
            }
            if let Some(f) = spec.job_failure_rate
                && !(0.0..=1.0).contains(&f)
            {
                return Err(format!("job_failure_rate {f} must be in [0, 1]"));
            }
            if let Some(reasons) = &spec.job_reasons {
                validate_reasons(reasons)?;
            }
            if let Some(role) = &spec.role
                && !valid_role(role)
            {
                return Err(format!(
                    "role {role:?} must be 1-38 characters of [A-Za-z0-9_-] (it is a Taskcluster worker type)"
                ));
            }
        }
        Ok(())
    }

    /// The settings of host `index` (0-based) named `short_name`.
    pub fn host_config(&self, index: usize, short_name: &str, fqdn: &str) -> HostConfig {
        let mut spec = HostSpec::default();
        spec.layer(&self.defaults);
        for group in &self.hosts {
            let by_name = group
                .select
                .names
                .iter()
                .any(|n| n == short_name || n == fqdn);
            let by_range = group
                .select
                .range
                .is_some_and(|(a, b)| (a..=b).contains(&(index + 1)));
            if by_name || by_range {
                spec.layer(&group.spec);
            }
        }
        let os = spec.os.unwrap_or(Os::Linux);
        HostConfig {
            role: spec.role.unwrap_or_else(|| os.default_role().to_string()),
            os,
            sudo: spec.sudo.unwrap_or(true),
            metadata: spec.metadata.unwrap_or(MetadataMode::Present),
            override_content: spec.override_content,
            slow: spec.slow.unwrap_or(Duration::ZERO),
            hang: spec.hang.unwrap_or(false),
            unreachable: spec.unreachable.unwrap_or(false),
            blackhole: spec.blackhole.unwrap_or(false),
            reboot_duration: spec.reboot_duration.unwrap_or(Duration::from_secs(3)),
            puppet_duration: spec.puppet_duration.unwrap_or(Duration::ZERO),
            jobs_per_minute: spec.jobs_per_minute.unwrap_or(6.0),
            job_failure_rate: spec.job_failure_rate.unwrap_or(0.0),
            job_reasons: spec.job_reasons.unwrap_or_default(),
        }
    }

    /// Names in `[[hosts]]` groups that are not among `known` host names:
    /// almost always a typo worth reporting.
    pub(crate) fn unknown_names<'a>(
        &'a self,
        known: &'a std::collections::HashSet<String>,
    ) -> Vec<&'a str> {
        self.hosts
            .iter()
            .flat_map(|g| g.select.names.iter())
            .filter(|n| !known.contains(n.as_str()))
            .map(String::as_str)
            .collect()
    }
}

fn validate_reasons(reasons: &BTreeMap<String, f64>) -> Result<(), String> {
    use crate::taskcluster::jobs::REASONS_RESOLVED;
    for (reason, share) in reasons {
        if !REASONS_RESOLVED.contains(&reason.as_str()) {
            return Err(format!(
                "job_reasons: {reason:?} is not a reasonResolved (one of {})",
                REASONS_RESOLVED.join(", ")
            ));
        }
        if !(share.is_finite() && (0.0..=1.0).contains(share)) {
            return Err(format!("job_reasons.{reason}: {share} must be in [0, 1]"));
        }
    }
    let total: f64 = reasons.values().sum();
    if total > 1.0 + 1e-9 {
        return Err(format!("job_reasons add up to {total}, more than 1"));
    }
    Ok(())
}

/// Taskcluster identifiers: 1 to 38 characters of `[a-zA-Z0-9_-]`.
pub(crate) fn valid_role(role: &str) -> bool {
    (1..=38).contains(&role.len())
        && role
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    s.map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_defaults_then_groups_in_order() {
        let s = Scenario::parse(
            r#"
            [defaults]
            role = "base"
            slow = "250ms"
            [puppet]
            broken_branches = { "broken" = 4 }
            bad_branches = ["bad"]
            [[hosts]]
            range = [2, 3]
            os = "macos"
            sudo = false
            [[hosts]]
            names = ["lab-0003"]
            role = "special"
            override = "PUPPET_BRANCH=x\n"
            "#,
            false,
        )
        .unwrap();
        let h1 = s.host_config(0, "lab-0001", "lab-0001.t");
        assert_eq!(h1.role, "base");
        assert_eq!(h1.os, Os::Linux);
        assert!(h1.sudo);
        assert_eq!(h1.slow, Duration::from_millis(250));
        let h2 = s.host_config(1, "lab-0002", "lab-0002.t");
        assert_eq!(h2.os, Os::Macos);
        assert!(!h2.sudo);
        let h3 = s.host_config(2, "lab-0003", "lab-0003.t");
        assert_eq!(h3.role, "special");
        assert_eq!(h3.override_content.as_deref(), Some("PUPPET_BRANCH=x\n"));
        assert_eq!(s.puppet.broken_branches["broken"], 4);
    }

    #[test]
    fn rejects_unknown_fields_and_bad_values() {
        assert!(Scenario::parse("[defaults]\nrole_typo = 1\n", false).is_err());
        assert!(Scenario::parse("[[hosts]]\nrole = \"x\"\n", false).is_err());
        assert!(Scenario::parse("[puppet]\nbroken_branches = { \"b\" = 2 }\n", false).is_err());
        assert!(Scenario::parse("[defaults]\nrole = \"a b\"\n", false).is_err());
        assert!(Scenario::parse("[defaults]\nslow = \"soon\"\n", false).is_err());
    }

    #[test]
    fn taskcluster_knobs_and_job_reasons() {
        let s = Scenario::parse(
            r#"
            [defaults]
            job_reasons = { canceled = 0.1, superseded = 0.05 }
            [taskcluster]
            pools = { gecko_t_osx_1400_r8 = "releng-hardware/gecko-t-osx-1400-r8-staging" }
            max_page_size = 3
            expired_workers = 2
            fail_rate = 0.25
            worker_info_update_frequency = "2s"
            anonymous_scopes = ["queue:list-workers:*"]
            [taskcluster.clients."project/ops"]
            access_token = "tok"
            scopes = ["queue:quarantine-worker:releng-hardware/*"]
            "#,
            false,
        )
        .unwrap();
        let tc = &s.taskcluster;
        assert_eq!(
            tc.pools["gecko_t_linux_talos"], "releng-hardware/gecko-t-linux-talos-1804",
            "the Firefox CI defaults stay"
        );
        assert_eq!(
            tc.pools["gecko_t_osx_1400_r8"],
            "releng-hardware/gecko-t-osx-1400-r8-staging"
        );
        assert_eq!(tc.max_page_size, 3);
        assert_eq!(tc.expired_workers, 2);
        assert_eq!(tc.worker_info_update_frequency, Duration::from_secs(2));
        assert_eq!(tc.clients["project/ops"].access_token, "tok");
        let h = s.host_config(0, "lab-0001", "x");
        assert_eq!(h.job_reasons["canceled"], 0.1);
        let d = TaskclusterSpec::default();
        assert_eq!(d.max_page_size, 1000);
        assert_eq!(d.worker_info_update_frequency, Duration::from_secs(1800));
        assert_eq!(d.pools.len(), 4);

        for bad in [
            "[defaults]\njob_reasons = { cancelled = 0.1 }\n",
            "[defaults]\njob_reasons = { canceled = 0.6, failed = 0.6 }\n",
            "[defaults]\njob_reasons = { canceled = -0.1 }\n",
            "[taskcluster]\nfail_rate = 2.0\n",
            "[taskcluster]\nmax_page_size = 0\n",
            "[taskcluster]\npools = { x = \"nopool\" }\n",
            "[taskcluster.clients.\"a b\"]\naccess_token = \"t\"\n",
        ] {
            assert!(Scenario::parse(bad, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn reads_json_too() {
        let s = Scenario::parse(
            r#"{"defaults": {"hang": true}, "hosts": [{"names": ["lab-0001"], "hang": false}]}"#,
            true,
        )
        .unwrap();
        assert!(!s.host_config(0, "lab-0001", "x").hang);
        assert!(s.host_config(1, "lab-0002", "y").hang);
    }
}
