//! Taskcluster as a workload source, through its official client (its
//! retries with backoff, its Hawk signing): the queue lists a pool's
//! workers, their recent tasks and each task's runs; worker-manager adds
//! each worker's state and its quarantine notes.

pub mod shapes;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use fleetroll_bus::messages::workload::{Quarantine, RunId, RunResult};
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use tracing::debug;

use self::shapes::{
    ManagerWorker, ManagerWorkerList, QuarantineDetail, QueueWorker, QueueWorkerList, TaskRunRef,
    TaskStatusResponse,
};
use super::pools::{identifier, split_pool};
use super::{RunStatus, SourceError, Worker, WorkloadSource};

/// Task ids are 22-character slugids.
fn slugid(s: &str) -> bool {
    s.len() == 22
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Workers asked for per page; the services' own maximum.
const PAGE: &str = "1000";

/// More pages than any pool has: a service that keeps handing out
/// continuation tokens is broken, not big.
const MAX_PAGES: usize = 1000;

/// How to reach a Taskcluster deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    pub root_url: String,
    /// Without them every call is anonymous, which reads enough; setting a
    /// quarantine needs them.
    pub credentials: Option<ClientCredentials>,
    /// Each request's own limit; retries come on top.
    pub timeout: Duration,
}

/// A Taskcluster client's id and access token (and a temporary
/// credential's certificate).
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCredentials {
    pub client_id: String,
    pub access_token: String,
    pub certificate: Option<String>,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// A Taskcluster deployment, by its root URL.
#[derive(Clone)]
pub struct Taskcluster {
    queue: Arc<taskcluster::Queue>,
    manager: Arc<taskcluster::WorkerManager>,
    /// The queue as fleetroll's client, for quarantines. Reads stay
    /// anonymous: the `taskcluster` crate signs a request's path without
    /// its query string, which Taskcluster refuses (401, bad MAC) on every
    /// paged listing.
    signed_queue: Option<Arc<taskcluster::Queue>>,
    client_id: Option<String>,
}

impl std::fmt::Debug for Taskcluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Taskcluster")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// An answer's error, sorted by what the caller does about it.
enum CallError {
    NotFound,
    Other(SourceError),
}

impl Taskcluster {
    pub fn new(config: &ClientConfig) -> Result<Taskcluster, SourceError> {
        let builder = taskcluster::ClientBuilder::new(config.root_url.trim_end_matches('/'))
            .timeout(config.timeout);
        let setup = |e: anyhow::Error| SourceError::Setup {
            root_url: config.root_url.clone(),
            source: e.into(),
        };
        let signed_queue = match &config.credentials {
            Some(c) => Some(Arc::new(
                taskcluster::Queue::new(builder.clone().credentials(taskcluster::Credentials {
                    client_id: c.client_id.clone(),
                    access_token: c.access_token.clone(),
                    certificate: c.certificate.clone(),
                }))
                .map_err(setup)?,
            )),
            None => None,
        };
        Ok(Taskcluster {
            queue: Arc::new(taskcluster::Queue::new(builder.clone()).map_err(setup)?),
            manager: Arc::new(taskcluster::WorkerManager::new(builder).map_err(setup)?),
            signed_queue,
            client_id: config.credentials.as_ref().map(|c| c.client_id.clone()),
        })
    }

    /// The client id writes are signed with; `None`: anonymous.
    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }

    /// Sets the worker's quarantine (`until` now or earlier lifts it); says
    /// until when it holds now.
    pub async fn quarantine(
        &self,
        worker: &WorkerRef,
        until: OffsetDateTime,
        note: &str,
    ) -> Result<Option<OffsetDateTime>, SourceError> {
        let what = format!("quarantining {worker}");
        let Some(queue) = &self.signed_queue else {
            return Err(SourceError::NoCredentials { what });
        };
        let (provisioner, worker_type) = worker.checked()?;
        // Only a year RFC 3339 cannot write fails here.
        let until = until
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|_| SourceError::BadName(until.to_string()))?;
        let payload = serde_json::json!({"quarantineUntil": until, "quarantineInfo": note});
        let answer = queue
            .quarantineWorker(
                provisioner,
                worker_type,
                &worker.group,
                &worker.worker_id,
                &payload,
            )
            .await;
        match decode::<QueueWorker>(&what, answer) {
            Ok(w) => Ok(w.quarantine_until),
            Err(CallError::NotFound) => Err(SourceError::UnknownWorker(worker.to_string())),
            Err(CallError::Other(e)) => Err(e),
        }
    }

    async fn manager_states(
        &self,
        provisioner: &str,
        worker_type: &str,
    ) -> Result<HashMap<(String, String), shapes::ManagerListedWorker>, SourceError> {
        let what = format!("listing the workers of {provisioner}/{worker_type} in worker-manager");
        let listed = every_page::<ManagerWorkerList, _, _>(&what, |token| {
            let manager = &self.manager;
            async move {
                manager
                    .listWorkers(
                        provisioner,
                        worker_type,
                        token.as_deref(),
                        Some(PAGE),
                        None,
                        None,
                        None,
                    )
                    .await
            }
        })
        .await?;
        Ok(listed
            .into_iter()
            .map(|w| ((w.worker_group.clone(), w.worker_id.clone()), w))
            .collect())
    }
}

/// A listing's page: its items, and the token for the next one.
trait Page: DeserializeOwned {
    type Item;
    fn into_parts(self) -> (Vec<Self::Item>, Option<String>);
}

impl Page for QueueWorkerList {
    type Item = shapes::QueueListedWorker;
    fn into_parts(self) -> (Vec<Self::Item>, Option<String>) {
        (self.workers, self.continuation_token)
    }
}

impl Page for ManagerWorkerList {
    type Item = shapes::ManagerListedWorker;
    fn into_parts(self) -> (Vec<Self::Item>, Option<String>) {
        (self.workers, self.continuation_token)
    }
}

/// Every item of a paged listing, `fetch` asking for the page after a
/// token. Expired workers are dropped after paging, so a short page, even
/// an empty one, is not the last: only a missing token is. An unknown pool
/// is an empty list, and a 404 is the same answer said differently.
async fn every_page<P, F, Fut>(what: &str, mut fetch: F) -> Result<Vec<P::Item>, SourceError>
where
    P: Page,
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<serde_json::Value, anyhow::Error>>,
{
    let mut items = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let (page, next) = match decode::<P>(what, fetch(token.take()).await) {
            Ok(page) => page.into_parts(),
            Err(CallError::NotFound) => return Ok(items),
            Err(CallError::Other(e)) => return Err(e),
        };
        items.extend(page);
        match next {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => return Ok(items),
        }
    }
    Err(SourceError::EndlessPaging {
        what: what.to_string(),
    })
}

/// Which worker: its pool, group and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerRef {
    pub pool: String,
    pub group: String,
    pub worker_id: String,
}

impl WorkerRef {
    /// The pool's halves, once every part that reaches a URL path is
    /// checked against Taskcluster's identifier pattern.
    fn checked(&self) -> Result<(&str, &str), SourceError> {
        let (provisioner, worker_type) =
            split_pool(&self.pool).ok_or_else(|| SourceError::BadName(self.pool.clone()))?;
        for part in [&self.group, &self.worker_id] {
            if !identifier(part) {
                return Err(SourceError::BadName(part.clone()));
            }
        }
        Ok((provisioner, worker_type))
    }
}

impl std::fmt::Display for WorkerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.pool, self.group, self.worker_id)
    }
}

impl From<&Worker> for WorkerRef {
    fn from(w: &Worker) -> WorkerRef {
        WorkerRef {
            pool: w.pool.clone(),
            group: w.group.clone(),
            worker_id: w.worker_id.clone(),
        }
    }
}

/// An answer read as `T`, or why not. The client has already retried
/// server errors and lost connections.
fn decode<T: DeserializeOwned>(
    what: &str,
    answer: Result<serde_json::Value, anyhow::Error>,
) -> Result<T, CallError> {
    let value = answer.map_err(
        |e| match taskcluster::err_status_code(&e).map(|s| s.as_u16()) {
            Some(404) => CallError::NotFound,
            Some(401 | 403) => CallError::Other(SourceError::NotAuthorized {
                what: what.to_string(),
                source: e.into(),
            }),
            _ => CallError::Other(SourceError::Request {
                what: what.to_string(),
                source: e.into(),
            }),
        },
    )?;
    let (read, unmodelled) = shapes::read::<T>(value).map_err(|e| {
        CallError::Other(SourceError::Unreadable {
            what: what.to_string(),
            source: e,
        })
    })?;
    if !unmodelled.is_empty() {
        debug!(what, fields = ?unmodelled, "Taskcluster answered fields fleetroll does not read");
    }
    Ok(read)
}

impl TaskRunRef {
    fn run_id(&self) -> RunId {
        format!("{}/{}", self.task_id, self.run_id)
    }
}

/// The latest of a worker's quarantine notes.
fn latest_note(until: OffsetDateTime, details: &[QuarantineDetail]) -> Quarantine {
    let latest = details.iter().max_by_key(|d| d.updated_at);
    Quarantine {
        until,
        by: latest.map(|d| d.client_id.clone()),
        at: latest.map(|d| d.updated_at),
        reason: latest.map(|d| d.quarantine_info.clone()),
    }
}

impl WorkloadSource for Taskcluster {
    fn name(&self) -> &'static str {
        "taskcluster"
    }

    fn worker_id(&self, hostname: &str) -> String {
        hostname.split('.').next().unwrap_or(hostname).to_string()
    }

    async fn workers(&self, pool: &str) -> Result<Vec<Worker>, SourceError> {
        let (provisioner, worker_type) =
            split_pool(pool).ok_or_else(|| SourceError::BadName(pool.to_string()))?;
        let what = format!("listing the workers of {pool}");
        let listed = every_page::<QueueWorkerList, _, _>(&what, |token| {
            let queue = &self.queue;
            async move {
                queue
                    .listWorkers(provisioner, worker_type, token.as_deref(), Some(PAGE), None)
                    .await
            }
        })
        .await?;
        if listed.is_empty() {
            return Ok(Vec::new());
        }
        // State is worth having but not worth losing the pool over.
        let mut states = match self.manager_states(provisioner, worker_type).await {
            Ok(states) => states,
            Err(e) => {
                tracing::warn!(pool, error = %e, "worker states unknown");
                HashMap::new()
            }
        };
        Ok(listed
            .into_iter()
            .map(|w| {
                let state = states.remove(&(w.worker_group.clone(), w.worker_id.clone()));
                Worker {
                    pool: pool.to_string(),
                    group: w.worker_group,
                    worker_id: w.worker_id,
                    state: state.as_ref().and_then(|s| s.state.clone()),
                    capacity: state.as_ref().and_then(|s| s.capacity),
                    provider_id: state.and_then(|s| s.provider_id),
                    last_active: w.last_date_active,
                    first_claim: Some(w.first_claim),
                    latest_run: w.latest_task.as_ref().map(TaskRunRef::run_id),
                    quarantined_until: w.quarantine_until,
                }
            })
            .collect())
    }

    async fn recent_runs(&self, worker: &Worker) -> Result<Vec<RunId>, SourceError> {
        let worker = WorkerRef::from(worker);
        let (provisioner, worker_type) = worker.checked()?;
        let what = format!("reading worker {worker}");
        let answer = self
            .queue
            .getWorker(provisioner, worker_type, &worker.group, &worker.worker_id)
            .await;
        match decode::<QueueWorker>(&what, answer) {
            Ok(w) => Ok(w.recent_tasks.iter().map(TaskRunRef::run_id).collect()),
            Err(CallError::NotFound) => Ok(Vec::new()),
            Err(CallError::Other(e)) => Err(e),
        }
    }

    async fn quarantine_note(
        &self,
        worker: &Worker,
        until: OffsetDateTime,
    ) -> Result<Quarantine, SourceError> {
        let worker = WorkerRef::from(worker);
        let (provisioner, worker_type) = worker.checked()?;
        let what = format!("reading the quarantine of {worker} in worker-manager");
        let answer = self
            .manager
            .getWorker(provisioner, worker_type, &worker.group, &worker.worker_id)
            .await;
        match decode::<ManagerWorker>(&what, answer) {
            Ok(w) => Ok(latest_note(
                until,
                w.quarantine_details.as_deref().unwrap_or_default(),
            )),
            Err(CallError::NotFound) => Ok(latest_note(until, &[])),
            Err(CallError::Other(e)) => Err(e),
        }
    }

    async fn run(&self, run: &str) -> Result<Option<RunStatus>, SourceError> {
        let (task_id, run_id) = run
            .split_once('/')
            .and_then(|(t, r)| Some((t, r.parse::<u32>().ok()?)))
            .filter(|(t, _)| slugid(t))
            .ok_or_else(|| SourceError::BadName(run.to_string()))?;
        let what = format!("reading the status of task {task_id}");
        let answer = self.queue.status(task_id).await;
        let status = match decode::<TaskStatusResponse>(&what, answer) {
            Ok(answer) => answer.status,
            Err(CallError::NotFound) => return Ok(None),
            Err(CallError::Other(e)) => return Err(e),
        };
        let Some(r) = status.runs.into_iter().find(|r| r.run_id == run_id) else {
            return Ok(None);
        };
        let result = match r.state.as_str() {
            "completed" => Some(RunResult::Completed),
            "failed" => Some(RunResult::Failed),
            "exception" => Some(RunResult::Exception),
            _ => None,
        };
        Ok(Some(RunStatus {
            result: result.zip(r.resolved),
            reason: r.reason_resolved,
            started: r.started,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_reach_a_url_path_are_checked() {
        assert!(slugid("fN1SbArXTPSVFNUvaOlinQ"));
        assert!(!slugid("../../etc/passwd....."));
        let bad = WorkerRef {
            pool: "releng-hardware/gecko-t-linux-talos-1804".into(),
            group: "mdc1".into(),
            worker_id: "../x".into(),
        };
        assert!(matches!(bad.checked(), Err(SourceError::BadName(_))));
    }

    #[test]
    fn hosts_map_to_worker_ids() {
        let tc = Taskcluster::new(&ClientConfig {
            root_url: "http://127.0.0.1:1/".into(),
            credentials: None,
            timeout: Duration::from_secs(1),
        })
        .unwrap();
        assert_eq!(
            tc.worker_id("t-linux64-ms-016.test.releng.mdc1.mozilla.com"),
            "t-linux64-ms-016"
        );
        assert_eq!(tc.client_id(), None);
    }

    #[test]
    fn the_latest_quarantine_note_is_the_one_shown() {
        let at = |s: i64| OffsetDateTime::from_unix_timestamp(1_800_000_000 + s).unwrap();
        let note = |who: &str, s: i64, why: &str| QuarantineDetail {
            client_id: who.into(),
            quarantine_until: at(s + 3600),
            updated_at: at(s),
            quarantine_info: why.into(),
        };
        let q = latest_note(
            at(9000),
            &[
                note("a", 10, "first"),
                note("b", 30, "bad disk"),
                note("c", 20, "x"),
            ],
        );
        assert_eq!(q.by.as_deref(), Some("b"));
        assert_eq!(q.reason.as_deref(), Some("bad disk"));
        assert_eq!(q.until, at(9000));
        assert_eq!(latest_note(at(1), &[]).reason, None);
    }
}
