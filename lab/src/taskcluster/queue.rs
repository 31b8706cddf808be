//! The queue's worker and task-status methods.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::api::{self, Admitted, Endpoint, PAGING, Param, QueryParam, Req};
use super::pools::{self, PoolId};
use super::reply::{self, Call, Code, parse_date};
use super::tasks::Names;
use super::workers::{QuarantineDetail, WorkerRecord};
use super::{QuarantineError, quarantine_host, slugid, with_ledger};
use crate::runtime::{HostRt, Shared};

const GENERIC: &str = "/^[a-zA-Z0-9-_]{1,38}$/";
const SLUGID: &str =
    "/^[A-Za-z0-9_-]{8}[Q-T][A-Za-z0-9_-][CGKOSWaeimquy26-][A-Za-z0-9_-]{10}[AQgw]$/";

fn param<'a>(name: &'static str, value: &'a str) -> Param<'a> {
    Param {
        name,
        value,
        valid: pools::generic_id,
        pattern: GENERIC,
    }
}

/// The queue's slugid pattern (a v4 UUID, URL-safe base64).
fn slugid_like(s: &str) -> bool {
    let b = s.as_bytes();
    let any = |c: &u8| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_';
    b.len() == 22
        && b.iter().all(any)
        && (b'Q'..=b'T').contains(&b[8])
        && b"CGKOSWaeimquy26-".contains(&b[10])
        && b"AQgw".contains(&b[21])
}

/// Every row the queue has for `pool`, in its order (group, then id).
pub(crate) fn rows(shared: &Shared, pool: &PoolId) -> Vec<WorkerRecord> {
    let mut rows: Vec<WorkerRecord> = shared
        .hosts
        .iter()
        .filter(|h| h.lock().tc.touches(pool))
        .filter_map(|h| with_ledger(shared, h, |l, _, _| l.worker(pool).cloned()))
        .collect();
    rows.extend(
        shared
            .tc
            .expired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|w| &w.pool == pool)
            .cloned(),
    );
    rows.sort_by(|a, b| (&a.group, &a.id).cmp(&(&b.group, &b.id)));
    rows
}

/// The lab host that is worker `group`/`id`, if any.
fn host<'a>(shared: &'a Shared, group: &str, id: &str) -> Option<&'a HostRt> {
    if group != shared.taskcluster.worker_group {
        return None;
    }
    shared
        .by_name
        .get(id)
        .map(|&i| &shared.hosts[i])
        .filter(|h| h.short == id)
}

/// The queue's row for a worker, live or not.
pub(crate) fn row(shared: &Shared, pool: &PoolId, group: &str, id: &str) -> Option<WorkerRecord> {
    if let Some(h) = host(shared, group, id) {
        return with_ledger(shared, h, |l, _, _| l.worker(pool).cloned());
    }
    shared
        .tc
        .expired
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|w| &w.pool == pool && w.group == group && w.id == id)
        .cloned()
}

pub(crate) async fn list_workers(
    State(shared): State<Arc<Shared>>,
    Path((provisioner, worker_type)): Path<(String, String)>,
    req: Req,
) -> Response {
    const QUERY: [QueryParam; 3] = [
        PAGING[0],
        PAGING[1],
        QueryParam {
            name: "quarantined",
            valid: |v| v == "true" || v == "false",
            pattern: "/^(true|false)$/",
        },
    ];
    let ep = Endpoint {
        name: "listWorkers",
        scope: format!("queue:list-workers:{provisioner}/{worker_type}"),
        all_of: false,
        params: vec![
            param("provisionerId", &provisioner),
            param("workerType", &worker_type),
        ],
        query: &QUERY,
    };
    let adm = match api::admit(&shared, &req, &ep) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let pool = PoolId {
        provisioner: provisioner.clone(),
        worker_type: worker_type.clone(),
    };
    let all = rows(&shared, &pool);
    let call = adm.call(ep.name);
    let (page, token) = match api::page(all, &adm, shared.taskcluster.max_page_size, &call) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let now = SystemTime::now();
    let want = adm.query("quarantined").map(|q| q == "true");
    // The queue filters after paging: a page may come back short.
    let workers = page
        .iter()
        .filter(|w| w.live(now))
        .filter(|w| match want {
            Some(true) => w.quarantine_until >= now,
            Some(false) => w.quarantine_until < now,
            None => true,
        })
        .map(|w| w.queue_list_item(now))
        .collect();
    api::listing(workers, token)
}

fn not_found(call: &Call<'_>, p: &str, wt: &str, g: &str, id: &str, tail: &str) -> Response {
    reply::error(
        call,
        Code::ResourceNotFound,
        &format!(
            "Worker with workerId `{id}`, workerGroup `{g}`,worker-type `{wt}` and provisionerId `{p}` not found.{tail}"
        ),
    )
}

fn worker_endpoint<'a>(
    name: &'static str,
    scope: &str,
    p: &'a str,
    wt: &'a str,
    g: &'a str,
    id: &'a str,
) -> Endpoint<'a> {
    Endpoint {
        name,
        scope: format!("queue:{scope}:{p}/{wt}/{g}/{id}"),
        // quarantineWorker declares {AllOf: [...]}, getWorker a string.
        all_of: name == "quarantineWorker",
        params: vec![
            param("provisionerId", p),
            param("workerType", wt),
            param("workerGroup", g),
            param("workerId", id),
        ],
        query: &[],
    }
}

pub(crate) async fn get_worker(
    State(shared): State<Arc<Shared>>,
    Path((p, wt, g, id)): Path<(String, String, String, String)>,
    req: Req,
) -> Response {
    let ep = worker_endpoint("getWorker", "get-worker", &p, &wt, &g, &id);
    let adm = match api::admit(&shared, &req, &ep) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let pool = PoolId {
        provisioner: p.clone(),
        worker_type: wt.clone(),
    };
    let now = SystemTime::now();
    match row(&shared, &pool, &g, &id).filter(|w| w.live(now)) {
        Some(w) => Json(w.queue_worker()).into_response(),
        None => not_found(
            &adm.call(ep.name),
            &p,
            &wt,
            &g,
            &id,
            " Are you sure it was created?",
        ),
    }
}

/// Checks a quarantineWorker body against quarantine-worker-request.yml;
/// the error lists what is wrong, as ajv words it.
fn quarantine_request(body: &Value) -> Result<(String, SystemTime, Option<String>), Vec<String>> {
    let Some(obj) = body.as_object() else {
        return Err(vec!["data must be object".into()]);
    };
    let mut errors = Vec::new();
    for key in obj.keys() {
        if key != "quarantineUntil" && key != "quarantineInfo" {
            errors.push(format!(
                "data must NOT have additional properties: \"{key}\""
            ));
        }
    }
    let until = match obj.get("quarantineUntil") {
        None => {
            errors.push("data must have required property 'quarantineUntil'".into());
            None
        }
        Some(Value::String(s)) => match parse_date(s) {
            Some(t) => Some((s.clone(), t)),
            None => {
                errors.push("data/quarantineUntil must match format \"date-time\"".into());
                None
            }
        },
        Some(_) => {
            errors.push("data/quarantineUntil must be string".into());
            None
        }
    };
    let info = match obj.get("quarantineInfo") {
        None => None,
        Some(Value::String(s)) if s.chars().count() <= 4000 => Some(s.clone()),
        Some(Value::String(_)) => {
            errors.push("data/quarantineInfo must NOT have more than 4000 characters".into());
            None
        }
        Some(_) => {
            errors.push("data/quarantineInfo must be string".into());
            None
        }
    };
    match (errors.is_empty(), until) {
        (true, Some((text, t))) => Ok((text, t, info)),
        _ => Err(errors),
    }
}

pub(crate) async fn quarantine_worker(
    State(shared): State<Arc<Shared>>,
    Path((p, wt, g, id)): Path<(String, String, String, String)>,
    req: Req,
) -> Response {
    let ep = worker_endpoint("quarantineWorker", "quarantine-worker", &p, &wt, &g, &id);
    let adm = match api::admit(&shared, &req, &ep) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let call = adm.call(ep.name);
    if !req
        .headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| c.split(';').next())
        .is_some_and(|c| c.trim().eq_ignore_ascii_case("application/json"))
    {
        let ct = req
            .headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("null");
        return reply::error(
            &call,
            Code::MalformedPayload,
            &format!(
                "Payload must be JSON with content-type: application/json got content-type: {ct}"
            ),
        );
    }
    let (text, until, info) = match quarantine_request(&adm.body) {
        Ok(x) => x,
        Err(errors) => {
            return reply::error(
                &call,
                Code::InputValidationError,
                &format!(
                    "\nSchema Validation Failed!\nRejecting Schema: {}/schemas/queue/v1/quarantine-worker-request.json#\nErrors:\n  * {}",
                    root_url(&req),
                    errors.join("\n  * ")
                ),
            );
        }
    };
    let client_id = client_id(&adm);
    let info = info.filter(|s| !s.is_empty());
    let info = info.as_deref().unwrap_or("[unspecified]");
    let pool = PoolId {
        provisioner: p.clone(),
        worker_type: wt.clone(),
    };
    let updated = match host(&shared, &g, &id) {
        Some(h) => quarantine_host(&shared, h, Some(&pool), until, text, &client_id, info),
        None => {
            let mut expired = shared.tc.expired.lock().unwrap_or_else(|e| e.into_inner());
            match expired
                .iter_mut()
                .find(|w| w.pool == pool && w.group == g && w.id == id)
            {
                Some(w) => {
                    w.quarantine(QuarantineDetail {
                        client_id: client_id.clone(),
                        updated_at: SystemTime::now(),
                        quarantine_until: text,
                        until,
                        info: info.to_string(),
                    });
                    Ok(w.clone())
                }
                None => Err(QuarantineError::UnknownWorker),
            }
        }
    };
    match updated {
        Ok(w) => Json(w.queue_worker()).into_response(),
        Err(QuarantineError::UnknownWorker) => not_found(&call, &p, &wt, &g, &id, ""),
    }
}

/// `req.clientId()`: the caller's clientId, or why there is none.
fn client_id(adm: &Admitted) -> String {
    adm.caller
        .client_id
        .clone()
        .unwrap_or_else(|| "auth-failed:no-auth".to_string())
}

fn root_url(req: &Req) -> String {
    let host = req
        .headers
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

pub(crate) async fn task_status(
    State(shared): State<Arc<Shared>>,
    Path(task): Path<String>,
    req: Req,
) -> Response {
    let ep = Endpoint {
        name: "status",
        scope: format!("queue:status:{task}"),
        all_of: false,
        params: vec![Param {
            name: "taskId",
            value: &task,
            valid: slugid_like,
            pattern: SLUGID,
        }],
        query: &[],
    };
    let adm = match api::admit(&shared, &req, &ep) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let missing = || {
        reply::error(
            &adm.call(ep.name),
            Code::ResourceNotFound,
            &format!(
                "`{task}` does not correspond to a task that exists.\nAre you sure this task exists?"
            ),
        )
    };
    let Some((index, slot)) = slugid::decode(&shared.id, &task) else {
        return missing();
    };
    let Some(host) = shared.hosts.get(usize::from(index)) else {
        return missing();
    };
    let status = with_ledger(&shared, host, |l, cx, now| {
        let t = l.task(u64::from(slot))?;
        let group_id = slugid::derive(&[
            shared.id.as_bytes(),
            host.short.as_bytes(),
            &(t.slot / 100).to_be_bytes(),
        ]);
        let names = Names {
            task_id: &task,
            task_group_id: &group_id,
            worker_group: cx.worker_group,
            worker_id: cx.worker_id,
        };
        Some(t.status(&names, now))
    });
    match status {
        Some(s) => Json(json!({"status": s})).into_response(),
        None => missing(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_quarantine_requests_like_the_schema() {
        let ok = quarantine_request(&json!({"quarantineUntil": "2030-01-01T00:00:00Z"})).unwrap();
        assert_eq!(ok.0, "2030-01-01T00:00:00Z");
        assert_eq!(ok.2, None);
        let e = quarantine_request(&json!({"quarantineUntil": "soon", "why": 1})).unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(quarantine_request(&json!({})).is_err());
        assert!(quarantine_request(&json!([])).is_err());
        let long = "x".repeat(4001);
        assert!(
            quarantine_request(
                &json!({"quarantineUntil": "2030-01-01T00:00:00Z", "quarantineInfo": long})
            )
            .is_err()
        );
    }

    #[test]
    fn task_ids_match_the_queue_pattern() {
        assert!(slugid_like("fNvfdGJxRGeKm1Ug_IQ4rw"));
        assert!(!slugid_like("fNvfdGJxAGeKm1Ug_IQ4rw"));
        assert!(slugid_like(&slugid::encode("lab", 3, 77)));
    }
}
