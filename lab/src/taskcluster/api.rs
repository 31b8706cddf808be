//! HTTP endpoints of the Taskcluster double (a subset of the queue and
//! worker-manager APIs, same paths and JSON shapes as the real services).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::jobs::{History, Job, RunState, Schedule};
use super::slugid;
use crate::runtime::{HostRt, Shared};

/// Taskcluster's date format: ISO 8601 with milliseconds, UTC.
pub(crate) fn tc_date(t: SystemTime) -> String {
    let dt = time::OffsetDateTime::from(t);
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    dt.format(&f).unwrap_or_default()
}

/// Routes of the double.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/queue/v1/ping", get(ping))
        .route("/api/worker-manager/v1/ping", get(ping))
        .route(
            "/api/queue/v1/provisioners/{provisioner}/worker-types/{worker_type}/workers",
            get(list_workers),
        )
        .route(
            "/api/queue/v1/provisioners/{provisioner}/worker-types/{worker_type}/workers/{group}/{worker}",
            get(get_worker),
        )
        .route("/api/queue/v1/task/{task_id}/status", get(task_status))
        .route("/api/worker-manager/v1/workers/{*rest}", get(worker_manager))
        .fallback(not_found)
        .with_state(shared)
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
    let body = json!({
        "code": code,
        "message": message,
        "requestInfo": {"method": "GET", "params": {}, "payload": {}, "time": tc_date(SystemTime::now())},
    });
    (status, Json(body)).into_response()
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        "no such endpoint in the fleetroll-lab Taskcluster double".into(),
    )
}

async fn ping() -> Json<Value> {
    Json(json!({"alive": true, "uptime": 0}))
}

/// The worker type hosts of a role work as: Taskcluster spells a Puppet
/// role's `_` as `-` (`gecko_t_linux_talos` works in `gecko-t-linux-talos`).
fn worker_type(role: &str) -> String {
    role.replace('_', "-")
}

/// Everything an answer about one worker needs, taken under its lock.
struct WorkerView {
    role: String,
    available: bool,
    quarantine_until: Option<SystemTime>,
    recent: Vec<Job>,
    first: Option<Job>,
}

fn schedule(shared: &Shared, host: &HostRt, jobs_per_minute: f64) -> Schedule {
    Schedule::new(shared.started, jobs_per_minute, &host.short)
}

fn view(shared: &Shared, host: &HostRt, now: SystemTime, recent: usize) -> WorkerView {
    shared.refresh_runs(host);
    let bad = shared
        .bad_branches
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let st = host.lock();
    let s = schedule(shared, host, st.cfg.jobs_per_minute);
    let h = History {
        down: &st.downtime,
        runs: &st.runs,
        bad: &bad,
        fail_on_puppet_failure: shared.taskcluster.fail_on_puppet_failure,
        failure_rate: st.cfg.job_failure_rate,
        host: &host.short,
    };
    WorkerView {
        role: worker_type(&st.cfg.role),
        available: h.available(now),
        quarantine_until: st.quarantine_until.filter(|&q| q > now),
        recent: h.recent(&s, now, recent),
        first: h.first(&s, now),
    }
}

fn task_id(shared: &Shared, host: &HostRt, job: &Job) -> String {
    slugid::encode(&shared.id, host.index as u16, job.k as u32)
}

fn task_run(shared: &Shared, host: &HostRt, job: &Job) -> Value {
    json!({"taskId": task_id(shared, host, job), "runId": 0})
}

fn pool_hosts<'a>(shared: &'a Shared, provisioner: &str, worker_type: &str) -> Vec<&'a HostRt> {
    if provisioner != shared.taskcluster.provisioner {
        return Vec::new();
    }
    let mut hosts: Vec<&HostRt> = shared
        .hosts
        .iter()
        .filter(|h| self::worker_type(&h.lock().cfg.role) == worker_type)
        .collect();
    hosts.sort_by(|a, b| a.short.cmp(&b.short));
    hosts
}

/// One page of `items` per Taskcluster's `limit` / `continuationToken`
/// query parameters; the error is a ready 400 answer, boxed because it is big.
fn page<T>(
    items: Vec<T>,
    q: &HashMap<String, String>,
) -> Result<(Vec<T>, Option<String>), Box<Response>> {
    let bad = |message: String| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestArguments",
            message,
        ))
    };
    let limit = match q.get("limit") {
        None => 1000,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|&l| l > 0)
            .map(|l| l.min(1000))
            .ok_or_else(|| bad(format!("bad limit {l:?}")))?,
    };
    let start = match q.get("continuationToken") {
        None => 0,
        Some(t) => URL_SAFE_NO_PAD
            .decode(t)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or_else(|| bad("bad continuationToken".into()))?,
    };
    let total = items.len();
    let items: Vec<T> = items.into_iter().skip(start).take(limit).collect();
    let next = (start + limit < total).then(|| URL_SAFE_NO_PAD.encode((start + limit).to_string()));
    Ok((items, next))
}

fn last_active(v: &WorkerView) -> Option<SystemTime> {
    v.recent.first().map(|j| j.claimed)
}

async fn list_workers(
    State(shared): State<Arc<Shared>>,
    Path((provisioner, worker_type)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let now = SystemTime::now();
    let want_quarantined = match q.get("quarantined").map(String::as_str) {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                "InvalidRequestArguments",
                format!("quarantined must be true or false, not {other:?}"),
            );
        }
    };
    let mut workers = Vec::new();
    for host in pool_hosts(&shared, &provisioner, &worker_type) {
        let v = view(&shared, host, now, 1);
        if want_quarantined.is_some_and(|w| w != v.quarantine_until.is_some()) {
            continue;
        }
        let mut w = json!({
            "workerGroup": shared.taskcluster.worker_group,
            "workerId": host.short,
            "firstClaim": tc_date(v.first.as_ref().map_or(shared.started, |j| j.claimed)),
            "state": if v.available { "running" } else { "stopped" },
        });
        if let Some(job) = v.recent.first() {
            w["latestTask"] = task_run(&shared, host, job);
        }
        if let Some(t) = last_active(&v) {
            w["lastDateActive"] = json!(tc_date(t));
        }
        if let Some(q) = v.quarantine_until {
            w["quarantineUntil"] = json!(tc_date(q));
        }
        workers.push(w);
    }
    match page(workers, &q) {
        Ok((workers, next)) => {
            let mut body = json!({"workers": workers});
            if let Some(t) = next {
                body["continuationToken"] = json!(t);
            }
            Json(body).into_response()
        }
        Err(r) => *r,
    }
}

fn find_worker<'a>(
    shared: &'a Shared,
    provisioner: &str,
    worker_type: &str,
    group: &str,
    worker: &str,
) -> Option<&'a HostRt> {
    if group != shared.taskcluster.worker_group {
        return None;
    }
    pool_hosts(shared, provisioner, worker_type)
        .into_iter()
        .find(|h| h.short == worker)
}

async fn get_worker(
    State(shared): State<Arc<Shared>>,
    Path((provisioner, worker_type, group, worker)): Path<(String, String, String, String)>,
) -> Response {
    let now = SystemTime::now();
    let Some(host) = find_worker(&shared, &provisioner, &worker_type, &group, &worker) else {
        return error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!(
                "Worker with workerId `{worker}`, workerGroup `{group}`, worker-type `{worker_type}` and provisionerId `{provisioner}` not found. Are you sure it was created?"
            ),
        );
    };
    let v = view(&shared, host, now, 20);
    // The queue lists recent tasks oldest first.
    let recent: Vec<Value> = v
        .recent
        .iter()
        .rev()
        .map(|j| task_run(&shared, host, j))
        .collect();
    let mut body = json!({
        "provisionerId": provisioner,
        "workerType": worker_type,
        "taskQueueId": format!("{provisioner}/{worker_type}"),
        "workerGroup": group,
        "workerId": worker,
        "recentTasks": recent,
        "expires": tc_date(now + Duration::from_secs(86_400)),
        "firstClaim": tc_date(v.first.as_ref().map_or(shared.started, |j| j.claimed)),
        "quarantineDetails": [],
        "actions": [],
        "state": if v.available { "running" } else { "stopped" },
    });
    if let Some(t) = last_active(&v) {
        body["lastDateActive"] = json!(tc_date(t));
    }
    if let Some(q) = v.quarantine_until {
        body["quarantineUntil"] = json!(tc_date(q));
    }
    Json(body).into_response()
}

async fn task_status(State(shared): State<Arc<Shared>>, Path(task): Path<String>) -> Response {
    let now = SystemTime::now();
    let missing = || {
        error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!("`{task}` does not correspond to a task that exists."),
        )
    };
    let Some((index, k)) = slugid::decode(&shared.id, &task) else {
        return missing();
    };
    let Some(host) = shared.hosts.get(usize::from(index)) else {
        return missing();
    };
    shared.refresh_runs(host);
    let (job, role) = {
        let bad = shared
            .bad_branches
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let st = host.lock();
        let s = schedule(&shared, host, st.cfg.jobs_per_minute);
        let h = History {
            down: &st.downtime,
            runs: &st.runs,
            bad: &bad,
            fail_on_puppet_failure: shared.taskcluster.fail_on_puppet_failure,
            failure_rate: st.cfg.job_failure_rate,
            host: &host.short,
        };
        (h.job(&s, u64::from(k), now), worker_type(&st.cfg.role))
    };
    let Some(job) = job else {
        return missing();
    };
    let provisioner = &shared.taskcluster.provisioner;
    let mut run = json!({
        "runId": 0,
        "state": job.state.as_str(),
        "reasonCreated": "scheduled",
        "workerGroup": shared.taskcluster.worker_group,
        "workerId": host.short,
        "takenUntil": tc_date(job.claimed + Duration::from_secs(1200)),
        "scheduled": tc_date(job.claimed - Duration::from_millis(500)),
        "started": tc_date(job.claimed),
    });
    if let (Some(at), Some(reason)) = (job.resolved, job.reason_resolved) {
        run["resolved"] = json!(tc_date(at));
        run["reasonResolved"] = json!(reason);
    }
    let group = slugid::derive(&[
        shared.id.as_bytes(),
        host.short.as_bytes(),
        &(job.k / 100).to_be_bytes(),
    ]);
    let body = json!({"status": {
        "taskId": task,
        "provisionerId": provisioner,
        "workerType": role,
        "taskQueueId": format!("{provisioner}/{role}"),
        "schedulerId": "fleetroll-lab",
        "projectId": "none",
        "taskGroupId": group,
        "deadline": tc_date(job.claimed + Duration::from_secs(86_400)),
        "expires": tc_date(job.claimed + Duration::from_secs(28 * 86_400)),
        "retriesLeft": if job.state == RunState::Exception { 4 } else { 5 },
        "state": job.state.as_str(),
        "runs": [run],
    }});
    Json(body).into_response()
}

fn wm_worker(shared: &Shared, host: &HostRt, v: &WorkerView, now: SystemTime) -> Value {
    let provisioner = &shared.taskcluster.provisioner;
    json!({
        "workerPoolId": format!("{provisioner}/{}", v.role),
        "workerGroup": shared.taskcluster.worker_group,
        "workerId": host.short,
        "providerId": "static",
        "created": tc_date(shared.started),
        "expires": tc_date(now + Duration::from_secs(86_400)),
        "state": if v.available { "running" } else { "stopped" },
        "capacity": 1,
        "lastModified": tc_date(shared.started),
        "lastChecked": tc_date(now),
    })
}

/// `GET /workers/<workerPoolId>` (listWorkersForWorkerPool) and
/// `GET /workers/<workerPoolId>:/<workerGroup>/<workerId>` (worker).
async fn worker_manager(
    State(shared): State<Arc<Shared>>,
    Path(rest): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let now = SystemTime::now();
    if let Some((pool, who)) = rest.split_once(":/") {
        let (Some((provisioner, worker_type)), Some((group, worker))) =
            (pool.split_once('/'), who.split_once('/'))
        else {
            return not_found().await;
        };
        let Some(host) = find_worker(&shared, provisioner, worker_type, group, worker) else {
            return error(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                "Worker not found".into(),
            );
        };
        let v = view(&shared, host, now, 1);
        return Json(wm_worker(&shared, host, &v, now)).into_response();
    }
    let Some((provisioner, worker_type)) = rest.split_once('/') else {
        return error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            "Worker Pool does not exist".into(),
        );
    };
    let hosts = pool_hosts(&shared, provisioner, worker_type);
    if hosts.is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            "Worker Pool does not exist".into(),
        );
    }
    let workers: Vec<Value> = hosts
        .into_iter()
        .map(|h| wm_worker(&shared, h, &view(&shared, h, now, 1), now))
        .collect();
    match page(workers, &q) {
        Ok((workers, next)) => {
            let mut body = json!({"workers": workers});
            if let Some(t) = next {
                body["continuationToken"] = json!(t);
            }
            Json(body).into_response()
        }
        Err(r) => *r,
    }
}
