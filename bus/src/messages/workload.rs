//! What the workload source (Taskcluster) says about hosts: the worker
//! behind each host, and every task run it finished.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::codec::Message;

/// A task run, as `<taskId>/<runId>`.
pub type RunId = String;

/// The workload source's view of one host (bucket `fleetroll_workload`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    /// Which source said it (`taskcluster`).
    pub source: String,
    /// The pool the host should work in, and which rule named it; `None`
    /// when nothing names a pool (no role known).
    #[serde(default)]
    pub expected_pool: Option<ExpectedPool>,
    /// The worker pool the host's worker was found in; `None` when the
    /// source does not know the host.
    pub worker_pool: Option<String>,
    #[serde(default)]
    pub worker_group: Option<String>,
    pub worker_id: String,
    /// The worker manager's word for the worker's state: `standalone` for
    /// hardware it does not manage, else `requested`, `running`,
    /// `stopping`, `stopped`.
    pub state: Option<String>,
    /// Tasks the worker takes at once (0: not managed, not known).
    #[serde(default)]
    pub capacity: Option<u32>,
    /// The worker manager's provider (`none` for hardware it does not manage).
    #[serde(default)]
    pub provider_id: Option<String>,
    /// When the worker last claimed work. The queue updates it only about
    /// every 30 minutes, so it may lag that much.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_active: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub first_claim: Option<OffsetDateTime>,
    pub latest_task: Option<RunId>,
    /// Set while the worker is quarantined.
    #[serde(default)]
    pub quarantine: Option<Quarantine>,
    #[serde(with = "time::serde::rfc3339")]
    pub collected_at: OffsetDateTime,
    /// Why the source could not be asked about this host, when it could not.
    pub error: Option<String>,
    /// Runs already recorded in the task-run stream (the latest ones), so
    /// a run is recorded once however often it is seen.
    pub recorded: Vec<RunId>,
    /// Runs seen but not finished yet: asked again next sweep.
    pub pending: Vec<RunId>,
}

impl Workload {
    /// Whether the worker did work at or after `since` and is not in
    /// quarantine at `now`.
    pub fn active_since(&self, since: OffsetDateTime, now: OffsetDateTime) -> bool {
        self.worker_pool.is_some()
            && !self.quarantined_at(now)
            && self.last_active.is_some_and(|t| t >= since)
    }

    /// Whether the worker is in quarantine at `now`.
    pub fn quarantined_at(&self, now: OffsetDateTime) -> bool {
        self.quarantine.as_ref().is_some_and(|q| q.until > now)
    }
}

/// The pool a host should work in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectedPool {
    /// `<provisioner>/<worker type>`.
    pub pool: String,
    pub rule: PoolRule,
}

/// Which rule named a host's pool, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolRule {
    /// `WORKER_TYPE_OVERRIDE` in the host's override file.
    WorkerTypeOverride,
    /// The role's entry in the pool table (`[workload.pools]`, or the
    /// Firefox CI defaults).
    Table,
    /// The role's name with `_` spelled `-`, under the default provisioner.
    RoleName,
}

impl PoolRule {
    /// How `host show` says it.
    pub fn describe(self) -> &'static str {
        match self {
            PoolRule::WorkerTypeOverride => "WORKER_TYPE_OVERRIDE in the override file",
            PoolRule::Table => "the role's entry in the pool table",
            PoolRule::RoleName => "the role's name (`_` spelled `-`)",
        }
    }
}

/// A worker's quarantine: until when, and the latest note about it (who
/// set it, when, why), when the source gives one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantine {
    #[serde(with = "time::serde::rfc3339")]
    pub until: OffsetDateTime,
    /// The client that set it (Taskcluster's `clientId`).
    pub by: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub at: Option<OffsetDateTime>,
    pub reason: Option<String>,
}

impl Message for Workload {
    const KIND: &'static str = "workload";
    const VERSION: u16 = 1;
}

/// How a task run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunResult {
    Completed,
    Failed,
    Exception,
}

/// One finished task run of a host (stream `FLEETROLL_TASK_RUNS`, subject
/// per host).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRun {
    pub hostname: String,
    pub worker_pool: String,
    pub task_id: String,
    pub run_id: u32,
    pub result: RunResult,
    /// The source's reason (`completed`, `failed`, `worker-shutdown`, ...).
    pub reason: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub resolved: OffsetDateTime,
}

/// How a finished run counts towards a host's success rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunCount {
    Success,
    /// Failed, or an exception the host can cause.
    Failure,
    /// An exception that is not the host's doing: left out of the rate and
    /// counted apart.
    NotTheHost,
}

/// Taskcluster's `reasonResolved` values and how each counts. A reason not
/// listed here (Taskcluster may add some) counts by the run's state, an
/// unknown exception as a failure: a gate must not pass on what it cannot
/// judge.
pub const RUN_REASONS: &[(&str, RunCount)] = &[
    ("completed", RunCount::Success),
    ("failed", RunCount::Failure),
    ("claim-expired", RunCount::Failure),
    ("worker-shutdown", RunCount::Failure),
    ("internal-error", RunCount::Failure),
    ("intermittent-task", RunCount::Failure),
    ("canceled", RunCount::NotTheHost),
    ("superseded", RunCount::NotTheHost),
    ("deadline-exceeded", RunCount::NotTheHost),
    ("malformed-payload", RunCount::NotTheHost),
    ("resource-unavailable", RunCount::NotTheHost),
];

impl TaskRun {
    pub fn run_id(&self) -> RunId {
        format!("{}/{}", self.task_id, self.run_id)
    }

    /// How this run counts (see [`RUN_REASONS`]).
    pub fn counts_as(&self) -> RunCount {
        let listed = self.reason.as_deref().and_then(|reason| {
            RUN_REASONS
                .iter()
                .find(|(r, _)| *r == reason)
                .map(|(_, c)| *c)
        });
        match (listed, self.result) {
            (Some(count), _) => count,
            (None, RunResult::Completed) => RunCount::Success,
            (None, _) => RunCount::Failure,
        }
    }
}

impl Message for TaskRun {
    const KIND: &'static str = "task_run";
    const VERSION: u16 = 1;
}

/// A request to collect workload for every host, taken by one prober.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadSweep {
    #[serde(with = "time::serde::rfc3339")]
    pub requested_at: OffsetDateTime,
    pub origin: String,
}

impl Message for WorkloadSweep {
    const KIND: &'static str = "workload_sweep";
    const VERSION: u16 = 1;
}
