//! What the roll call knows about a host, split by who writes it: the
//! prober's observation, the operator's intent, the gatekeeper's drift. A
//! [`HostRecord`] is their union as people and bots read it.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::codec::Message;

/// Where the Puppet state of a host came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PuppetSource {
    /// `last_run_metadata.json`, the ground truth.
    Metadata,
    /// Puppet's `last_run_summary.yaml`: timestamps and failures only.
    Summary,
    /// Neither could be read.
    None,
}

/// The host's last Puppet run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PuppetState {
    pub source: PuppetSource,
    #[serde(with = "time::serde::rfc3339::option")]
    pub ts: Option<OffsetDateTime>,
    pub success: Option<bool>,
    pub exit_code: Option<i64>,
    pub git_repo: Option<String>,
    pub git_branch: Option<String>,
    pub git_sha: Option<String>,
    pub override_sha: Option<String>,
    pub vault_sha: Option<String>,
    pub role: Option<String>,
    pub duration_s: Option<f64>,
    /// Why the metadata file could not be used, when it could not.
    pub error: Option<String>,
}

/// How `applied` was decided (SPEC 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppliedSource {
    /// Metadata `override_sha` against the current override's sha256.
    Metadata,
    /// The old heuristic: a successful Puppet run after the override's mtime.
    Heuristic,
}

/// The prober's latest observation of a host (bucket `fleetroll_hosts`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub hostname: String,
    #[serde(with = "time::serde::rfc3339")]
    pub discovered_at: OffsetDateTime,
    /// When the last probe attempt finished, successful or not.
    #[serde(with = "time::serde::rfc3339::option")]
    pub probed_at: Option<OffsetDateTime>,
    /// When the host last answered a probe completely.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_seen: Option<OffsetDateTime>,
    pub address: Option<String>,
    pub sshable: Option<bool>,
    pub sudoable: Option<bool>,
    pub os: Option<String>,
    pub os_version: Option<String>,
    pub uptime_s: Option<u64>,
    pub role: Option<String>,
    pub override_present: Option<bool>,
    pub override_sha256: Option<String>,
    /// The override's contents, up to the probe's cap, lossily decoded.
    pub override_contents: Option<String>,
    pub override_size: Option<u64>,
    pub override_path: Option<String>,
    pub puppet: Option<PuppetState>,
    pub vault_sha256: Option<String>,
    pub applied: Option<bool>,
    pub applied_source: Option<AppliedSource>,
    pub host_key_fingerprint: Option<String>,
    pub last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_error_at: Option<OffsetDateTime>,
}

impl Observation {
    /// A host seen for the first time (a seed), not probed yet.
    pub fn discovered(hostname: &str, at: OffsetDateTime) -> Observation {
        Observation {
            hostname: hostname.to_string(),
            discovered_at: at,
            probed_at: None,
            last_seen: None,
            address: None,
            sshable: None,
            sudoable: None,
            os: None,
            os_version: None,
            uptime_s: None,
            role: None,
            override_present: None,
            override_sha256: None,
            override_contents: None,
            override_size: None,
            override_path: None,
            puppet: None,
            vault_sha256: None,
            applied: None,
            applied_source: None,
            host_key_fingerprint: None,
            last_error: None,
            last_error_at: None,
        }
    }
}

impl Message for Observation {
    const KIND: &'static str = "observation";
    const VERSION: u16 = 1;
}
