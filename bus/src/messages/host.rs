//! What the roll call knows about a host, split by who writes it: the
//! prober's observation, the operator's intent, the gatekeeper's drift. A
//! [`HostRecord`] is their union as people and bots read it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::codec::Message;
use crate::filter::Value;
use crate::messages::workload::Workload;

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

impl PuppetState {
    /// Nothing known yet but where it would come from.
    pub fn unknown(source: PuppetSource) -> PuppetState {
        PuppetState {
            source,
            ts: None,
            success: None,
            exit_code: None,
            git_repo: None,
            git_branch: None,
            git_sha: None,
            override_sha: None,
            vault_sha: None,
            role: None,
            duration_s: None,
            error: None,
        }
    }
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
    /// What asked for the last probe: a command id, or a schedule cycle.
    #[serde(default)]
    pub probed_for: Option<String>,
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
    /// The override snapshot holding the contents seen (`fleetroll audit
    /// snapshot <id>`); none without an override, or when only part of it
    /// could be read.
    #[serde(default)]
    pub override_snapshot_id: Option<String>,
    pub puppet: Option<PuppetState>,
    pub vault_sha256: Option<String>,
    pub applied: Option<bool>,
    pub applied_source: Option<AppliedSource>,
    pub host_key_fingerprint: Option<String>,
    /// Identifies the state the last full probe saw (file sizes, times,
    /// inodes, boot): a fast refresh that finds the same needs no full probe.
    #[serde(default)]
    pub state_token: Option<String>,
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
            probed_for: None,
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
            override_snapshot_id: None,
            puppet: None,
            vault_sha256: None,
            applied: None,
            applied_source: None,
            host_key_fingerprint: None,
            state_token: None,
            last_error: None,
            last_error_at: None,
        }
    }
}

impl Message for Observation {
    const KIND: &'static str = "observation";
    const VERSION: u16 = 1;
}

/// What a host's SSH key is checked against (bucket `fleetroll_hostkeys`):
/// the key pinned on first contact, or what an operator imported from an
/// OpenSSH `known_hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostKeyPin {
    /// OpenSSH public key (`type base64`): the one offered at first contact,
    /// or the first imported. Empty when only certificate authorities vouch
    /// for the host.
    pub key: String,
    /// SHA-256 fingerprint of `key` (empty with it).
    pub fingerprint: String,
    #[serde(with = "time::serde::rfc3339")]
    pub pinned_at: OffsetDateTime,
    /// Further keys the host may offer (known_hosts lists one per key type).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_keys: Vec<String>,
    /// CA keys (`@cert-authority`): a host certificate one of them signed,
    /// valid now and naming the host, is accepted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cert_authorities: Vec<String>,
    /// Keys refused outright (`@revoked`), plain or as a certificate's CA.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoked: Vec<String>,
    #[serde(default)]
    pub source: PinSource,
}

/// Where a pin came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PinSource {
    /// Trusted on first use (`[ssh] first_contact = "trust"`).
    #[default]
    FirstContact,
    /// Matched in a known_hosts file, named as the operator gave it.
    KnownHosts { file: String },
}

impl HostKeyPin {
    /// A key pinned on first contact.
    pub fn first_contact(key: String, fingerprint: String, at: OffsetDateTime) -> HostKeyPin {
        HostKeyPin {
            key,
            fingerprint,
            pinned_at: at,
            other_keys: Vec::new(),
            cert_authorities: Vec::new(),
            revoked: Vec::new(),
            source: PinSource::FirstContact,
        }
    }

    /// Every plain key the host may offer.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.key.as_str())
            .chain(self.other_keys.iter().map(String::as_str))
            .filter(|k| !k.is_empty())
    }
}

impl Message for HostKeyPin {
    const KIND: &'static str = "host_key_pin";
    const VERSION: u16 = 1;
}

impl Observation {
    /// A field's value for the query language (see [`HostRecord::FIELDS`]).
    pub fn field(&self, name: &str) -> Value<'_> {
        fn text(v: &Option<String>) -> Value<'_> {
            Value::text(v.as_deref())
        }
        fn flag(v: Option<bool>) -> Value<'static> {
            v.map_or(Value::Null, Value::Bool)
        }
        fn at(v: Option<OffsetDateTime>) -> Value<'static> {
            v.map_or(Value::Null, Value::Time)
        }
        let puppet = self.puppet.as_ref();
        match name {
            "hostname" => Value::text(Some(&self.hostname)),
            "discovered_at" => Value::Time(self.discovered_at),
            "probed_at" => at(self.probed_at),
            "last_seen" => at(self.last_seen),
            "address" => text(&self.address),
            "sshable" => flag(self.sshable),
            "sudoable" => flag(self.sudoable),
            "os" => text(&self.os),
            "os_version" => text(&self.os_version),
            "uptime" => self.uptime_s.map_or(Value::Null, |u| Value::Num(u as f64)),
            "role" => text(&self.role),
            "override_present" => flag(self.override_present),
            "override_sha256" => text(&self.override_sha256),
            "override" => text(&self.override_contents),
            "override_snapshot_id" => text(&self.override_snapshot_id),
            "puppet_source" => puppet.map_or(Value::Null, |p| {
                Value::text(Some(match p.source {
                    PuppetSource::Metadata => "metadata",
                    PuppetSource::Summary => "summary",
                    PuppetSource::None => "none",
                }))
            }),
            "puppet_success" => flag(puppet.and_then(|p| p.success)),
            "puppet_ts" => at(puppet.and_then(|p| p.ts)),
            "puppet_branch" => Value::text(puppet.and_then(|p| p.git_branch.as_deref())),
            "puppet_sha" => Value::text(puppet.and_then(|p| p.git_sha.as_deref())),
            "applied" => flag(self.applied),
            "applied_source" => self.applied_source.map_or(Value::Null, |s| {
                Value::text(Some(match s {
                    AppliedSource::Metadata => "metadata",
                    AppliedSource::Heuristic => "heuristic",
                }))
            }),
            "error" => text(&self.last_error),
            _ => Value::Null,
        }
    }
}

/// Parameters of the `hosts.list` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostQuery {
    /// A query in the query language; empty for every host.
    #[serde(default)]
    pub filter: String,
    /// Only hosts whose name sorts after this one (the previous page's `next`).
    #[serde(default)]
    pub after: Option<String>,
    /// At most this many hosts (a page also ends before the answer gets too
    /// big for one NATS message).
    #[serde(default)]
    pub limit: Option<u32>,
}

impl Message for HostQuery {
    const KIND: &'static str = "host_query";
    const VERSION: u16 = 1;
}

/// Answer of `hosts.list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostList {
    pub hosts: Vec<HostRecord>,
    /// More hosts match: ask again with `after` set to this.
    #[serde(default)]
    pub next: Option<String>,
}

impl Message for HostList {
    const KIND: &'static str = "host_list";
    const VERSION: u16 = 1;
}

/// Parameters of the `hosts.get` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostName {
    pub hostname: String,
}

impl Message for HostName {
    const KIND: &'static str = "host_name";
    const VERSION: u16 = 1;
}

/// Answer of `hosts.history`: a host's last observations, oldest first,
/// each with what changed since the one before.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostHistory {
    pub hostname: String,
    pub entries: Vec<HistoryEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub observation: Observation,
    /// Empty for the oldest entry kept.
    pub changes: Vec<FieldChange>,
}

/// One field of an observation that differs from the previous one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub from: serde_json::Value,
    pub to: serde_json::Value,
}

impl HostHistory {
    /// Fields that change with every probe, so they are not "what changed".
    const EVERY_PROBE: [&'static str; 4] =
        ["probed_at", "last_seen", "probed_for", "last_error_at"];

    /// The history of `observations`, oldest first.
    pub fn of(hostname: &str, observations: Vec<Observation>) -> HostHistory {
        let mut entries: Vec<HistoryEntry> = Vec::with_capacity(observations.len());
        let mut previous: Option<serde_json::Map<String, serde_json::Value>> = None;
        for observation in observations {
            let fields = match serde_json::to_value(&observation) {
                Ok(serde_json::Value::Object(fields)) => fields,
                _ => serde_json::Map::new(),
            };
            let changes = previous
                .as_ref()
                .map(|before| {
                    fields
                        .iter()
                        .filter(|(field, _)| !Self::EVERY_PROBE.contains(&field.as_str()))
                        .filter_map(|(field, to)| {
                            let from = before.get(field).cloned().unwrap_or_default();
                            (from != *to).then(|| FieldChange {
                                field: field.clone(),
                                from,
                                to: to.clone(),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            entries.push(HistoryEntry {
                observation,
                changes,
            });
            previous = Some(fields);
        }
        HostHistory {
            hostname: hostname.to_string(),
            entries,
        }
    }
}

impl Message for HostHistory {
    const KIND: &'static str = "host_history";
    const VERSION: u16 = 1;
}

/// What operators said about a host (bucket `fleetroll_host_intent`):
/// assignments are manual only, never inferred.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostIntent {
    pub expected_role: Option<String>,
    pub population: Option<String>,
    pub disabled: bool,
    pub disabled_reason: Option<String>,
    pub disabled_by: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub disabled_at: Option<OffsetDateTime>,
}

impl Message for HostIntent {
    const KIND: &'static str = "host_intent";
    const VERSION: u16 = 1;
}

/// A named group of hosts with the role they are expected to have
/// (bucket `fleetroll_populations`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Population {
    pub name: String,
    pub expected_role: String,
    pub target_query: Option<String>,
    pub description: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub created_by: String,
}

impl Message for Population {
    const KIND: &'static str = "population";
    const VERSION: u16 = 1;
}

/// Answer of `populations.list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PopulationList {
    pub populations: Vec<Population>,
}

impl Message for PopulationList {
    const KIND: &'static str = "population_list";
    const VERSION: u16 = 1;
}

/// The kinds of drift (SPEC 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DriftType {
    /// An override is present that no active rollout expects (or with other contents).
    Override,
    /// The observed role is not the expected role.
    Role,
    /// Unreachable for longer than the threshold.
    Unreachable,
    /// The workload source does not know the host.
    TcMissing,
    /// The workload source places the host in another worker pool than its role.
    TcMismatch,
    /// Disabled, yet doing work.
    DisabledActive,
}

impl DriftType {
    pub const ALL: [DriftType; 6] = [
        DriftType::Override,
        DriftType::Role,
        DriftType::Unreachable,
        DriftType::TcMissing,
        DriftType::TcMismatch,
        DriftType::DisabledActive,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DriftType::Override => "override",
            DriftType::Role => "role",
            DriftType::Unreachable => "unreachable",
            DriftType::TcMissing => "tc-missing",
            DriftType::TcMismatch => "tc-mismatch",
            DriftType::DisabledActive => "disabled-active",
        }
    }
}

/// The gatekeeper's verdict on a host (bucket `fleetroll_drift`): its
/// drift, and whether it is healthy (SPEC 2: applied, and doing work).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    pub types: Vec<DriftType>,
    /// `None` while either half is unknown (no workload source, never probed).
    #[serde(default)]
    pub healthy: Option<bool>,
    #[serde(with = "time::serde::rfc3339")]
    pub computed_at: OffsetDateTime,
}

impl Message for Drift {
    const KIND: &'static str = "drift";
    const VERSION: u16 = 1;
}

/// Answer of `drift.summary`: the fleet's drift and health at a glance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftSummary {
    pub hosts: usize,
    /// Hosts with at least one kind of drift.
    pub drifting: usize,
    pub healthy: usize,
    pub unhealthy: usize,
    /// Hosts whose health is unknown (no workload source, never probed).
    pub health_unknown: usize,
    /// Every drift type, with its count and the first hosts by name.
    pub types: Vec<DriftCount>,
    /// Hosts by reachability: `reachable`, `unreachable`, `not_probed`,
    /// and `disabled` (which wins over the others).
    #[serde(default)]
    pub by_state: BTreeMap<String, usize>,
    /// Hosts by observed role (`unknown` when none was read).
    #[serde(default)]
    pub by_role: BTreeMap<String, usize>,
    /// Hosts by the git sha of their last Puppet run (`unknown` when none).
    #[serde(default)]
    pub by_puppet_sha: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftCount {
    pub drift_type: DriftType,
    pub count: usize,
    /// At most [`DriftSummary::SAMPLE`] names; `count` says how many in all.
    pub hosts: Vec<String>,
}

impl DriftSummary {
    pub const SAMPLE: usize = 20;
}

impl Message for DriftSummary {
    const KIND: &'static str = "drift_summary";
    const VERSION: u16 = 1;
}

/// A host as people and bots read it: the observation, the operator's
/// intent and the drift, with the field names of SPEC 4.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "FlatHostRecord")]
pub struct HostRecord {
    #[serde(flatten)]
    pub observation: Observation,
    #[serde(flatten)]
    pub intent: HostIntent,
    pub drift: Vec<DriftType>,
    pub healthy: Option<bool>,
    /// What the workload source says, when one is configured.
    pub workload: Option<Workload>,
}

impl HostRecord {
    /// The fields the query language can name.
    pub const FIELDS: &'static [&'static str] = &[
        "hostname",
        "discovered_at",
        "probed_at",
        "last_seen",
        "address",
        "sshable",
        "sudoable",
        "os",
        "os_version",
        "uptime",
        "role",
        "expected_role",
        "population",
        "disabled",
        "drift",
        "override_present",
        "override_sha256",
        "override",
        "override_snapshot_id",
        "puppet_source",
        "puppet_success",
        "puppet_ts",
        "puppet_branch",
        "puppet_sha",
        "applied",
        "applied_source",
        "healthy",
        "error",
        "tc_pool",
        "tc_state",
        "tc_last_active",
        "tc_quarantined",
    ];

    /// The record as the query language reads it.
    pub fn view(&self) -> HostView<'_> {
        HostView {
            observation: &self.observation,
            intent: Some(&self.intent),
            drift: &self.drift,
            healthy: self.healthy,
            workload: self.workload.as_ref(),
        }
    }

    /// A field's value for the query language (see [`HostView::field`]).
    pub fn field(&self, name: &str) -> Value<'_> {
        self.view().field(name)
    }
}

/// A host's parts, borrowed: what a query filters on before anything is
/// copied into a [`HostRecord`].
#[derive(Debug, Clone, Copy)]
pub struct HostView<'a> {
    pub observation: &'a Observation,
    /// `None`: no operator said anything about the host.
    pub intent: Option<&'a HostIntent>,
    pub drift: &'a [DriftType],
    pub healthy: Option<bool>,
    pub workload: Option<&'a Workload>,
}

impl<'a> HostView<'a> {
    /// A field's value for the query language. `drift` matches any of the
    /// host's drift types (`drift:role`); `drift:null` means no drift.
    pub fn field(&self, name: &str) -> Value<'a> {
        let intent = self.intent;
        match name {
            "expected_role" => Value::text(intent.and_then(|i| i.expected_role.as_deref())),
            "population" => Value::text(intent.and_then(|i| i.population.as_deref())),
            "disabled" => Value::Bool(intent.is_some_and(|i| i.disabled)),
            "drift" => Value::List(self.drift.iter().map(|d| d.as_str().into()).collect()),
            "healthy" => self.healthy.map_or(Value::Null, Value::Bool),
            "tc_pool" => Value::text(self.workload.and_then(|w| w.worker_pool.as_deref())),
            "tc_state" => Value::text(self.workload.and_then(|w| w.state.as_deref())),
            "tc_last_active" => self
                .workload
                .and_then(|w| w.last_active)
                .map_or(Value::Null, Value::Time),
            "tc_quarantined" => self.workload.map_or(Value::Null, |w| {
                Value::Bool(w.quarantined_at(OffsetDateTime::now_utc()))
            }),
            other => self.observation.field(other),
        }
    }
}

/// [`HostRecord`] as it is on the wire, one flat map, read field by field:
/// serde's `flatten` buffers every record first, which makes a page of
/// 2,000 hosts half again as slow to read. Unknown fields are refused, so a
/// field added to [`Observation`] and not here fails the codec tests.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlatHostRecord {
    hostname: String,
    #[serde(with = "time::serde::rfc3339")]
    discovered_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    probed_at: Option<OffsetDateTime>,
    #[serde(default)]
    probed_for: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    last_seen: Option<OffsetDateTime>,
    address: Option<String>,
    sshable: Option<bool>,
    sudoable: Option<bool>,
    os: Option<String>,
    os_version: Option<String>,
    uptime_s: Option<u64>,
    role: Option<String>,
    override_present: Option<bool>,
    override_sha256: Option<String>,
    override_contents: Option<String>,
    override_size: Option<u64>,
    override_path: Option<String>,
    #[serde(default)]
    override_snapshot_id: Option<String>,
    puppet: Option<PuppetState>,
    vault_sha256: Option<String>,
    applied: Option<bool>,
    applied_source: Option<AppliedSource>,
    host_key_fingerprint: Option<String>,
    #[serde(default)]
    state_token: Option<String>,
    last_error: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    last_error_at: Option<OffsetDateTime>,
    expected_role: Option<String>,
    population: Option<String>,
    disabled: bool,
    disabled_reason: Option<String>,
    disabled_by: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    disabled_at: Option<OffsetDateTime>,
    drift: Vec<DriftType>,
    healthy: Option<bool>,
    workload: Option<Workload>,
}

impl From<FlatHostRecord> for HostRecord {
    fn from(f: FlatHostRecord) -> HostRecord {
        HostRecord {
            observation: Observation {
                hostname: f.hostname,
                discovered_at: f.discovered_at,
                probed_at: f.probed_at,
                probed_for: f.probed_for,
                last_seen: f.last_seen,
                address: f.address,
                sshable: f.sshable,
                sudoable: f.sudoable,
                os: f.os,
                os_version: f.os_version,
                uptime_s: f.uptime_s,
                role: f.role,
                override_present: f.override_present,
                override_sha256: f.override_sha256,
                override_contents: f.override_contents,
                override_size: f.override_size,
                override_path: f.override_path,
                override_snapshot_id: f.override_snapshot_id,
                puppet: f.puppet,
                vault_sha256: f.vault_sha256,
                applied: f.applied,
                applied_source: f.applied_source,
                host_key_fingerprint: f.host_key_fingerprint,
                state_token: f.state_token,
                last_error: f.last_error,
                last_error_at: f.last_error_at,
            },
            intent: HostIntent {
                expected_role: f.expected_role,
                population: f.population,
                disabled: f.disabled,
                disabled_reason: f.disabled_reason,
                disabled_by: f.disabled_by,
                disabled_at: f.disabled_at,
            },
            drift: f.drift,
            healthy: f.healthy,
            workload: f.workload,
        }
    }
}

impl Message for HostRecord {
    const KIND: &'static str = "host_record";
    const VERSION: u16 = 1;
}

/// A request to probe one host, taken by whichever prober replica is free.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeJob {
    pub hostname: String,
    #[serde(with = "time::serde::rfc3339")]
    pub requested_at: OffsetDateTime,
    /// What asked: a command id, or `schedule`.
    pub origin: String,
    /// A fast probe: a full one only when the host's state token changed.
    #[serde(default)]
    pub fast: bool,
}

impl Message for ProbeJob {
    const KIND: &'static str = "probe_job";
    const VERSION: u16 = 1;
}
