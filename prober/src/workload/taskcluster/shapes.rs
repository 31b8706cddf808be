//! The answers fleetroll reads from Taskcluster, field for field as the
//! services' published schemas declare them (`services/queue/schemas/v1`,
//! `services/worker-manager/schemas/v1` in `taskcluster/taskcluster`),
//! whether fleetroll uses a field or not: a field an answer carries that is
//! not modelled here is one the schema does not allow, which
//! [`unmodelled`] finds (the lab's double is checked with it).
//!
//! Reading stays lenient about such fields, since Taskcluster adds fields
//! over time and fleetroll must keep working when it does.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

/// `task-run.json`: a run of a task.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRunRef {
    pub task_id: String,
    pub run_id: u32,
}

/// queue `listWorkers` (`list-workers-response.yml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueWorkerList {
    pub workers: Vec<QueueListedWorker>,
    pub continuation_token: Option<String>,
}

/// One worker of queue `listWorkers`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueListedWorker {
    pub worker_group: String,
    pub worker_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub first_claim: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_date_active: Option<OffsetDateTime>,
    pub latest_task: Option<TaskRunRef>,
    /// Present only while the quarantine lasts.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub quarantine_until: Option<OffsetDateTime>,
}

/// One entry of a worker's `quarantineDetails`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuarantineDetail {
    pub client_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub quarantine_until: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    pub quarantine_info: String,
}

/// queue `getWorker` and `quarantineWorker` (`worker-response.yml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueWorker {
    pub provisioner_id: String,
    pub worker_type: String,
    pub task_queue_id: Option<String>,
    pub worker_group: String,
    pub worker_id: String,
    /// The latest tasks the worker claimed, oldest first.
    pub recent_tasks: Vec<TaskRunRef>,
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
    /// May be in the past: a quarantine that ended.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub quarantine_until: Option<OffsetDateTime>,
    pub quarantine_details: Option<Vec<QuarantineDetail>>,
    #[serde(with = "time::serde::rfc3339")]
    pub first_claim: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_date_active: Option<OffsetDateTime>,
}

/// worker-manager `listWorkers` (its `list-workers-response.yml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagerWorkerList {
    pub workers: Vec<ManagerListedWorker>,
    pub continuation_token: Option<String>,
}

/// One worker of worker-manager `listWorkers`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagerListedWorker {
    pub worker_group: String,
    pub worker_id: String,
    pub worker_pool_id: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub quarantine_until: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub first_claim: Option<OffsetDateTime>,
    pub latest_task: Option<TaskRunRef>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_date_active: Option<OffsetDateTime>,
    /// `standalone` for a worker worker-manager does not manage.
    pub state: Option<String>,
    pub capacity: Option<u32>,
    pub provider_id: Option<String>,
    pub launch_config_id: Option<String>,
}

/// worker-manager `getWorker` (its `worker-response.yml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagerWorker {
    pub provisioner_id: String,
    pub worker_type: String,
    pub worker_pool_id: Option<String>,
    pub worker_group: String,
    pub worker_id: String,
    pub recent_tasks: Vec<TaskRunRef>,
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub quarantine_until: Option<OffsetDateTime>,
    pub quarantine_details: Option<Vec<QuarantineDetail>>,
    #[serde(with = "time::serde::rfc3339")]
    pub first_claim: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_date_active: Option<OffsetDateTime>,
    pub state: Option<String>,
    pub capacity: Option<u32>,
    pub provider_id: Option<String>,
    pub launch_config_id: Option<String>,
}

/// queue `status` (`task-status-response.yml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatusResponse {
    pub status: TaskStatus,
}

/// `task-status.yml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatus {
    pub task_id: String,
    pub provisioner_id: String,
    pub worker_type: String,
    pub task_queue_id: String,
    pub scheduler_id: String,
    pub project_id: String,
    pub task_group_id: String,
    pub priority: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub deadline: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
    pub retries_left: u32,
    pub state: String,
    /// Index `i` is run `i`.
    pub runs: Vec<Run>,
}

/// One run in a task's status.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    pub run_id: u32,
    pub state: String,
    pub reason_created: String,
    /// Set once the run resolved.
    pub reason_resolved: Option<String>,
    pub worker_group: Option<String>,
    pub worker_id: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub taken_until: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub scheduled: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub started: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub resolved: Option<OffsetDateTime>,
}

/// Reads `value` as `T`; also says which of its fields `T` does not model
/// (as paths: `workers.0.state`).
pub fn read<T: DeserializeOwned>(
    value: serde_json::Value,
) -> Result<(T, Vec<String>), serde_json::Error> {
    let mut ignored = Vec::new();
    let read = serde_ignored::deserialize(value, |path| ignored.push(path.to_string()))?;
    Ok((read, ignored))
}

/// The fields of `value` that `T` does not model: empty when the answer is
/// exactly what the schema allows.
pub fn unmodelled<T: DeserializeOwned>(
    value: serde_json::Value,
) -> Result<Vec<String>, serde_json::Error> {
    read::<T>(value).map(|(_, ignored)| ignored)
}
