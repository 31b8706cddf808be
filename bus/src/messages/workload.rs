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
    /// The worker pool the host's worker was found in; `None` when the
    /// source does not know the host.
    pub worker_pool: Option<String>,
    pub worker_id: String,
    /// The source's own word for the worker's state (`running`, `stopped`).
    pub state: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_active: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub first_claim: Option<OffsetDateTime>,
    pub latest_task: Option<RunId>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub quarantined_until: Option<OffsetDateTime>,
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
            && self.quarantined_until.is_none_or(|q| q <= now)
            && self.last_active.is_some_and(|t| t >= since)
    }

    /// The worker type of its pool (`<provisioner>/<worker type>`).
    pub fn worker_type(&self) -> Option<&str> {
        let pool = self.worker_pool.as_deref()?;
        Some(pool.split_once('/').map_or(pool, |(_, t)| t))
    }
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

impl TaskRun {
    pub fn run_id(&self) -> RunId {
        format!("{}/{}", self.task_id, self.run_id)
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
