//! Taskcluster as a workload source: the queue's worker and task-status
//! endpoints. A host's worker is in pool `<provisioner>/<worker type>`,
//! where the worker type is the host's role (`_` read as `-`, as Taskcluster
//! spells worker types), and its worker id is the host's short name.

use std::time::Duration;

use fleetroll_bus::messages::workload::{RunId, RunResult};
use serde::Deserialize;
use time::OffsetDateTime;

use super::{RunStatus, SourceError, Worker, WorkloadSource};

/// Taskcluster's identifiers (provisioner, worker type, group, worker id).
fn identifier(s: &str) -> bool {
    (1..=38).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Task ids are 22-character slugids.
fn slugid(s: &str) -> bool {
    s.len() == 22
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A Taskcluster deployment, by its root URL.
#[derive(Clone)]
pub struct Taskcluster {
    root_url: String,
    provisioner: String,
    agent: ureq::Agent,
}

impl Taskcluster {
    pub fn new(root_url: &str, provisioner: &str, timeout: Duration) -> Taskcluster {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Taskcluster {
            root_url: root_url.trim_end_matches('/').to_string(),
            provisioner: provisioner.to_string(),
            agent,
        }
    }

    /// GETs a queue path; `None` for a 404. Every parameter that reaches a
    /// path has been checked against Taskcluster's identifier patterns.
    async fn get<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        path: String,
        query: Vec<(&'static str, String)>,
    ) -> Result<Option<T>, SourceError> {
        let url = format!("{}/api/queue/v1/{path}", self.root_url);
        let agent = self.agent.clone();
        let shown = url.clone();
        let call = move || -> Result<Option<T>, SourceError> {
            let failed = |detail: String| SourceError::Request {
                url: shown.clone(),
                detail,
            };
            let mut response = agent
                .get(&url)
                .header("Accept", "application/json")
                .query_pairs(query.iter().map(|(k, v)| (*k, v.as_str())))
                .call()
                .map_err(|e| failed(e.to_string()))?;
            let status = response.status().as_u16();
            if status == 404 {
                return Ok(None);
            }
            if status != 200 {
                #[derive(Deserialize)]
                struct TcError {
                    message: Option<String>,
                }
                let message = response
                    .body_mut()
                    .read_json::<TcError>()
                    .ok()
                    .and_then(|e| e.message)
                    .unwrap_or_default();
                return Err(failed(format!(
                    "HTTP {status}: {}",
                    message.chars().take(300).collect::<String>()
                )));
            }
            response
                .body_mut()
                .with_config()
                .limit(16 << 20)
                .read_json::<T>()
                .map(Some)
                .map_err(|e| failed(format!("unreadable answer: {e}")))
        };
        tokio::task::spawn_blocking(call)
            .await
            .map_err(|e| SourceError::Request {
                url: path,
                detail: e.to_string(),
            })?
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TaskRef {
    task_id: String,
    run_id: u32,
}

impl TaskRef {
    fn run_id(&self) -> RunId {
        format!("{}/{}", self.task_id, self.run_id)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListedWorker {
    worker_group: String,
    worker_id: String,
    state: Option<String>,
    latest_task: Option<TaskRef>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    last_date_active: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    first_claim: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    quarantine_until: Option<OffsetDateTime>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WorkerList {
    workers: Vec<ListedWorker>,
    continuation_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WorkerDetail {
    recent_tasks: Vec<TaskRef>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Run {
    run_id: u32,
    state: String,
    reason_resolved: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    started: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    resolved: Option<OffsetDateTime>,
}

#[derive(Deserialize)]
struct TaskStatus {
    runs: Vec<Run>,
}

#[derive(Deserialize)]
struct TaskStatusAnswer {
    status: TaskStatus,
}

impl WorkloadSource for Taskcluster {
    fn name(&self) -> &'static str {
        "taskcluster"
    }

    fn worker_id(&self, hostname: &str) -> String {
        hostname.split('.').next().unwrap_or(hostname).to_string()
    }

    fn pool_for_role(&self, role: &str) -> String {
        format!("{}/{}", self.provisioner, role.replace('_', "-"))
    }

    async fn workers(&self, pool: &str) -> Result<Vec<Worker>, SourceError> {
        let (provisioner, worker_type) = pool.split_once('/').unwrap_or(("", pool));
        if !identifier(provisioner) || !identifier(worker_type) {
            return Err(SourceError::BadName(pool.to_string()));
        }
        let mut workers = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("limit", "1000".to_string())];
            if let Some(t) = token.take() {
                query.push(("continuationToken", t));
            }
            let Some(page) = self
                .get::<WorkerList>(
                    format!("provisioners/{provisioner}/worker-types/{worker_type}/workers"),
                    query,
                )
                .await?
            else {
                return Ok(workers);
            };
            workers.extend(page.workers.into_iter().map(|w| Worker {
                pool: pool.to_string(),
                group: w.worker_group,
                worker_id: w.worker_id,
                state: w.state,
                last_active: w.last_date_active,
                first_claim: w.first_claim,
                latest_run: w.latest_task.map(|t| t.run_id()),
                quarantined_until: w.quarantine_until,
            }));
            match page.continuation_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok(workers),
            }
        }
    }

    async fn recent_runs(&self, worker: &Worker) -> Result<Vec<RunId>, SourceError> {
        let (provisioner, worker_type) = worker.pool.split_once('/').unwrap_or(("", ""));
        for part in [provisioner, worker_type, &worker.group, &worker.worker_id] {
            if !identifier(part) {
                return Err(SourceError::BadName(part.to_string()));
            }
        }
        let detail = self
            .get::<WorkerDetail>(
                format!(
                    "provisioners/{provisioner}/worker-types/{worker_type}/workers/{}/{}",
                    worker.group, worker.worker_id
                ),
                Vec::new(),
            )
            .await?;
        Ok(detail
            .map(|d| d.recent_tasks.iter().map(TaskRef::run_id).collect())
            .unwrap_or_default())
    }

    async fn run(&self, run: &str) -> Result<Option<RunStatus>, SourceError> {
        let (task_id, run_id) = run
            .split_once('/')
            .and_then(|(t, r)| Some((t, r.parse::<u32>().ok()?)))
            .filter(|(t, _)| slugid(t))
            .ok_or_else(|| SourceError::BadName(run.to_string()))?;
        let Some(answer) = self
            .get::<TaskStatusAnswer>(format!("task/{task_id}/status"), Vec::new())
            .await?
        else {
            return Ok(None);
        };
        let Some(r) = answer.status.runs.into_iter().find(|r| r.run_id == run_id) else {
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
        assert!(identifier("gecko-t-linux-talos"));
        assert!(identifier("releng_hardware"));
        assert!(!identifier("a/b"));
        assert!(!identifier("x;rm -rf /"));
        assert!(!identifier(""));
        assert!(!identifier(&"x".repeat(39)));
        assert!(slugid("fN1SbArXTPSVFNUvaOlinQ"));
        assert!(!slugid("../../etc/passwd....."));
    }

    #[test]
    fn roles_map_to_worker_types_and_hosts_to_worker_ids() {
        let tc = Taskcluster::new(
            "http://127.0.0.1:1/",
            "releng-hardware",
            Duration::from_secs(1),
        );
        assert_eq!(
            tc.pool_for_role("gecko_t_linux_talos"),
            "releng-hardware/gecko-t-linux-talos"
        );
        assert_eq!(
            tc.worker_id("t-linux64-ms-016.test.releng.mdc1.mozilla.com"),
            "t-linux64-ms-016"
        );
    }
}
