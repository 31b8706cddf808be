//! Rollouts (SPEC 5 and 6): a plan, the rollout as it goes (kept in the
//! rollouts bucket, every change a compare-and-swap), what happened on each
//! host, and the apply jobs orchestrator replicas share.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::codec::Message;

/// Health-gate configuration of one rollout (SPEC 6). A plan that names no
/// gates gets these defaults: slow is safe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GateConfig {
    /// The window workload is counted over, in seconds.
    pub window_s: u64,
    pub min_jobs_per_host: f64,
    pub min_jobs_total: u64,
    pub min_hosts_with_jobs_fraction: f64,
    /// Largest drop of the task success rate against the baseline, in points.
    pub tc_success_rate_drop: f64,
    /// Largest drop of the hosts active in Taskcluster, in percent.
    pub tc_online_drop_pct: f64,
    pub sshable_min_pct: f64,
    pub applied_min_pct: f64,
    /// Blast radius: after this many applied hosts...
    pub blast_min_applied: u64,
    /// ...a failing fraction above this pauses the rollout by itself.
    pub blast_max_failing_fraction: f64,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            window_s: 3600,
            min_jobs_per_host: 1.0,
            min_jobs_total: 0,
            min_hosts_with_jobs_fraction: 0.8,
            tc_success_rate_drop: 5.0,
            tc_online_drop_pct: 10.0,
            sshable_min_pct: 95.0,
            applied_min_pct: 100.0,
            blast_min_applied: 3,
            blast_max_failing_fraction: 0.25,
        }
    }
}

/// The longest gate window: a month of task runs is already more than the
/// gatekeeper reads every few seconds.
pub const MAX_WINDOW_S: u64 = 30 * 24 * 3600;

impl GateConfig {
    /// The window as a duration, never past [`MAX_WINDOW_S`] whatever a plan
    /// says: the gatekeeper subtracts it from timestamps.
    pub fn window(&self) -> time::Duration {
        time::Duration::seconds(self.window_s.min(MAX_WINDOW_S) as i64)
    }

    /// Refuses values no gate can judge by, from wherever the plan came
    /// (`set` checks each `--gate`; a plan sent over the bus is checked
    /// again by the orchestrator).
    pub fn check(&self) -> Result<(), String> {
        if !(1..=MAX_WINDOW_S).contains(&self.window_s) {
            return Err(format!(
                "gate window: {} s is not between 1 s and 30 days",
                self.window_s
            ));
        }
        let fractions = [
            (
                "min_hosts_with_jobs_fraction",
                self.min_hosts_with_jobs_fraction,
            ),
            (
                "blast_max_failing_fraction",
                self.blast_max_failing_fraction,
            ),
        ];
        let percentages = [
            ("tc_success_rate_drop", self.tc_success_rate_drop),
            ("tc_online_drop_pct", self.tc_online_drop_pct),
            ("sshable_min_pct", self.sshable_min_pct),
            ("applied_min_pct", self.applied_min_pct),
        ];
        let bounded = fractions
            .iter()
            .map(|&(name, v)| (name, v, 1.0))
            .chain(percentages.iter().map(|&(name, v)| (name, v, 100.0)))
            .chain([("min_jobs_per_host", self.min_jobs_per_host, f64::MAX)]);
        for (name, value, most) in bounded {
            if !(value.is_finite() && (0.0..=most).contains(&value)) {
                return Err(format!("gate {name}: {value} is not between 0 and {most}"));
            }
        }
        Ok(())
    }

    /// The gate names `--gate name=value` takes.
    pub const NAMES: [&'static str; 10] = [
        "window",
        "min_jobs_per_host",
        "min_jobs_total",
        "min_hosts_with_jobs_fraction",
        "tc_success_rate_drop",
        "tc_online_drop_pct",
        "sshable_min_pct",
        "applied_min_pct",
        "blast_min_applied",
        "blast_max_failing_fraction",
    ];

    /// Sets one gate from `name=value` (the window in seconds or with a
    /// unit: `30m`), refusing a value [`GateConfig::check`] refuses.
    pub fn set(&mut self, assignment: &str) -> Result<(), String> {
        let (name, value) = assignment
            .split_once('=')
            .ok_or_else(|| format!("`{assignment}` is not name=value"))?;
        let (name, value) = (name.trim(), value.trim());
        // Parsed here, judged by `check` with every other gate.
        let number = || {
            value
                .parse::<f64>()
                .map_err(|_| format!("gate {name}: `{value}` is not a number"))
        };
        let whole = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("gate {name}: `{value}` is not a whole number"))
        };
        match name {
            "window" => {
                self.window_s = match value.parse::<u64>() {
                    Ok(s) => s,
                    Err(_) => crate::filter::duration_seconds(value)
                        .map(|s| s as u64)
                        .ok_or_else(|| format!("gate window: `{value}` is not a duration"))?,
                }
            }
            "min_jobs_per_host" => self.min_jobs_per_host = number()?,
            "min_jobs_total" => self.min_jobs_total = whole()?,
            "min_hosts_with_jobs_fraction" => self.min_hosts_with_jobs_fraction = number()?,
            "tc_success_rate_drop" => self.tc_success_rate_drop = number()?,
            "tc_online_drop_pct" => self.tc_online_drop_pct = number()?,
            "sshable_min_pct" => self.sshable_min_pct = number()?,
            "applied_min_pct" => self.applied_min_pct = number()?,
            "blast_min_applied" => self.blast_min_applied = whole()?,
            "blast_max_failing_fraction" => self.blast_max_failing_fraction = number()?,
            other => {
                return Err(format!(
                    "unknown gate `{other}` (known: {})",
                    Self::NAMES.join(", ")
                ));
            }
        }
        self.check()
    }
}

/// What an operator plans: which hosts, how, which change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutPlan {
    /// The target population, in the query language.
    pub target: String,
    /// Hosts in the first stage.
    pub canary: usize,
    /// Suggested batch size after the canary, in percent of the targets.
    pub batch_pct: u8,
    /// The override file's contents (e.g. `PUPPET_BRANCH=feature_xyz`).
    pub change: String,
    pub gates: GateConfig,
    /// Hosts left out even though the target matches them.
    pub skip: Vec<String>,
}

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    Created,
    Running,
    Paused,
    Succeeded,
    RollingBack,
    RolledBack,
    Finalizing,
    Finalized,
}

impl RolloutState {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Created => "created",
            RolloutState::Running => "running",
            RolloutState::Paused => "paused",
            RolloutState::Succeeded => "succeeded",
            RolloutState::RollingBack => "rolling_back",
            RolloutState::RolledBack => "rolled_back",
            RolloutState::Finalizing => "finalizing",
            RolloutState::Finalized => "finalized",
        }
    }
}

/// Where a stage is (SPEC 5's stage lifecycle).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageStatus {
    /// Its hosts are being written.
    Applying,
    /// Every host was handled; fleetroll waits for the operator.
    WaitingForAssessment,
    Advanced,
    Paused,
    RolledBack,
}

impl StageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StageStatus::Applying => "applying",
            StageStatus::WaitingForAssessment => "waiting_for_assessment",
            StageStatus::Advanced => "advanced",
            StageStatus::Paused => "paused",
            StageStatus::RolledBack => "rolled_back",
        }
    }
}

/// One batch of hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    /// 1 is the canary.
    pub number: u32,
    pub hosts: Vec<String>,
    pub status: StageStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// Who started it, with which command (a redelivered command finishes
    /// its own stage instead of starting another).
    pub started_by: String,
    pub started_by_command: String,
    pub forced: bool,
    pub reason: Option<String>,
}

/// A rollout as it stands, in the rollouts bucket under its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub id: String,
    pub plan: RolloutPlan,
    pub state: RolloutState,
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Every target host, in the order stages take them (fixed at start:
    /// by hash of host and rollout id).
    pub targets: Vec<String>,
    pub stages: Vec<Stage>,
    /// Why it is paused.
    pub pause_reason: Option<String>,
    /// Set when it was rolled back.
    #[serde(default)]
    pub rollback: Option<Decision>,
    /// Set when it was finalized.
    #[serde(default)]
    pub finalize: Option<Decision>,
}

impl Rollout {
    /// The operator's decision its override removals carry out: the
    /// rollback, or the finalize.
    pub fn removal(&self) -> Option<&Decision> {
        self.finalize.as_ref().or(self.rollback.as_ref())
    }
}

/// An operator's decision that ends a rollout: who, when, with which
/// command, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub remove_overrides: bool,
    pub reason: String,
    pub by: String,
    pub command_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

impl Message for Rollout {
    const KIND: &'static str = "rollout";
    const VERSION: u16 = 1;
}

impl Rollout {
    /// The stage in progress (the last one).
    pub fn current_stage(&self) -> Option<&Stage> {
        self.stages.last()
    }

    /// Target hosts no stage has taken yet, in order.
    pub fn remaining(&self) -> Vec<String> {
        let taken: std::collections::HashSet<&String> =
            self.stages.iter().flat_map(|s| &s.hosts).collect();
        self.targets
            .iter()
            .filter(|h| !taken.contains(h))
            .cloned()
            .collect()
    }
}

/// The order stages take a rollout's targets: by SHA-256 of host and
/// rollout id, so it is fixed, differs between rollouts, and anyone can
/// recompute it.
pub fn stage_order(rollout_id: &str, hosts: &mut [String]) {
    use sha2::{Digest, Sha256};
    hosts.sort_by_cached_key(|host| Sha256::digest(format!("{host}\n{rollout_id}").as_bytes()));
}

/// What happened on one host of a rollout, in the rollout-hosts bucket
/// under `<rollout>.<host>`; written once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostApply {
    pub rollout: String,
    pub stage: u32,
    pub hostname: String,
    pub outcome: ApplyOutcome,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The orchestrator replica that did it.
    pub by: String,
    /// 0 for the stage's own try; each `rollout retry` of the host counts
    /// one up.
    #[serde(default)]
    pub attempt: u32,
}

impl Message for HostApply {
    const KIND: &'static str = "host_apply";
    const VERSION: u16 = 1;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ApplyOutcome {
    /// Written (after the snapshot), or already as asked (no snapshot).
    Applied {
        snapshot: Option<String>,
    },
    Failed {
        error: String,
    },
    /// Disabled since the rollout started: left alone.
    SkippedDisabled,
    /// Its override removed (rollback), after the snapshot; none when it
    /// was already gone.
    Removed {
        snapshot: Option<String>,
    },
    /// Failed, and an operator asked for another try (`rollout retry`),
    /// now queued as [`HostApply::attempt`]: no result yet.
    Retrying {
        previous: String,
    },
}

/// A request to apply a rollout's change on one host, taken by whichever
/// orchestrator replica is free.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyJob {
    pub rollout: String,
    pub stage: u32,
    pub hostname: String,
    /// Remove the override instead (rollback).
    #[serde(default)]
    pub remove: bool,
    /// Which try of the host this is ([`HostApply::attempt`]).
    #[serde(default)]
    pub attempt: u32,
}

impl Message for ApplyJob {
    const KIND: &'static str = "apply_job";
    const VERSION: u16 = 1;
}

/// Parameters of `rollouts.get`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutId {
    pub id: String,
}

impl RolloutId {
    /// Whether `id` could name a rollout at all. Ids become bucket keys
    /// and subject tokens, so anything else (dots, wildcards, spaces) is
    /// no rollout rather than a malformed request to NATS.
    ///
    /// ```
    /// use fleetroll_bus::messages::rollout::RolloutId;
    /// assert!(RolloutId::well_formed("ro-3f2a9c01d4"));
    /// assert!(!RolloutId::well_formed("ro.*"));
    /// assert!(!RolloutId::well_formed(""));
    /// ```
    pub fn well_formed(id: &str) -> bool {
        !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }
}

impl Message for RolloutId {
    const KIND: &'static str = "rollout_id";
    const VERSION: u16 = 1;
}

/// A rollout with what happened on each of its hosts so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutStatus {
    pub rollout: Rollout,
    pub hosts: Vec<HostApply>,
    /// The gatekeeper's latest evaluation, when there is one.
    #[serde(default)]
    pub evaluation: Option<GateEvaluation>,
    /// Rolling back or finalizing: the hosts not yet seen clean, each with
    /// why (the rollout is rolled back, or finalized, once there are none).
    #[serde(default)]
    pub not_clean: Vec<HeldBack>,
}

impl Message for RolloutStatus {
    const KIND: &'static str = "rollout_status";
    const VERSION: u16 = 1;
}

/// Answer of `rollouts.list`, newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RolloutList {
    pub rollouts: Vec<Rollout>,
}

impl Message for RolloutList {
    const KIND: &'static str = "rollout_list";
    const VERSION: u16 = 1;
}

/// What a gate says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateVerdict {
    Pass,
    Fail,
    /// Not enough workload evidence yet.
    Inconclusive,
}

impl GateVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            GateVerdict::Pass => "pass",
            GateVerdict::Fail => "fail",
            GateVerdict::Inconclusive => "inconclusive",
        }
    }
}

/// One gate's evaluation: its measured value against its threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateResult {
    pub name: String,
    pub verdict: GateVerdict,
    pub value: Option<f64>,
    pub threshold: f64,
    pub detail: String,
}

/// What the rollout's hosts looked like before it changed them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    #[serde(with = "time::serde::rfc3339")]
    pub taken_at: OffsetDateTime,
    /// Successes out of the runs the rate counts (see
    /// [`crate::messages::workload::RUN_REASONS`]), over the window before
    /// the start, on every target host; none without such runs.
    pub success_rate: Option<f64>,
    /// The runs the rate counts.
    pub runs: u64,
    /// Runs left out of the rate: exceptions that were not the host's
    /// doing (canceled, superseded, ...).
    #[serde(default)]
    pub not_the_host: u64,
    /// Fraction of the targets active in the workload source.
    pub online_fraction: Option<f64>,
}

/// The gatekeeper's evaluation of a rollout's current stage, kept in the
/// gates bucket under the rollout id and published when a verdict changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateEvaluation {
    pub rollout: String,
    pub stage: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub baseline: Baseline,
    pub gates: Vec<GateResult>,
    /// Once every target is in a stage: the hosts that keep the rollout
    /// from having succeeded, each with why (not written, failed, not
    /// healthy). Empty then means it has succeeded.
    #[serde(default)]
    pub holding_back: Vec<HeldBack>,
}

/// A host that keeps a rollout from having succeeded, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldBack {
    pub hostname: String,
    pub why: String,
}

impl GateEvaluation {
    /// A normal advance needs every gate to pass.
    pub fn passed(&self) -> bool {
        self.gates.iter().all(|g| g.verdict == GateVerdict::Pass)
    }

    /// The gates that do not pass, as people read them.
    pub fn blocking(&self) -> Vec<String> {
        self.gates
            .iter()
            .filter(|g| g.verdict != GateVerdict::Pass)
            .map(|g| format!("{} {} ({})", g.name, g.verdict.as_str(), g.detail))
            .collect()
    }
}

impl Message for GateEvaluation {
    const KIND: &'static str = "gate_evaluation";
    const VERSION: u16 = 1;
}
