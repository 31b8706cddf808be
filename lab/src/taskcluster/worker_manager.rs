//! Worker-manager's methods for workers it does not manage: its
//! `provisioners/.../workers` views of the queue's rows, and its own
//! `workers/...` methods, which know nothing of static hardware (the lab's
//! pools are not worker-manager pools).

use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};

use super::api::{self, Endpoint, PAGING, Param, QueryParam, Req};
use super::pools::{self, PoolId};
use super::queue::{row, rows};
use super::reply::{self, Code};
use crate::runtime::Shared;

const GENERIC: &str = "/^([a-zA-Z0-9-_]{1,38})$/";
const POOL: &str = "/^[a-zA-Z0-9-_]{1,38}\\/[a-z]([-a-z0-9]{0,36}[a-z0-9])?$/";

fn generic<'a>(name: &'static str, value: &'a str) -> Param<'a> {
    Param {
        name,
        value,
        valid: pools::generic_id,
        pattern: GENERIC,
    }
}

fn pool_param(value: &str) -> Param<'_> {
    Param {
        name: "workerPoolId",
        value,
        valid: |v| PoolId::parse(v).is_some(),
        pattern: POOL,
    }
}

pub(crate) async fn list_workers(
    State(shared): State<Arc<Shared>>,
    Path((provisioner, worker_type)): Path<(String, String)>,
    req: Req,
) -> Response {
    const QUERY: [QueryParam; 5] = [
        PAGING[0],
        PAGING[1],
        QueryParam {
            name: "launchConfigId",
            valid: |v| {
                (1..=38).contains(&v.len())
                    && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            },
            pattern: "/^[a-zA-Z0-9-]{1,38}$/",
        },
        QueryParam {
            name: "quarantined",
            valid: |v| v == "true" || v == "false",
            pattern: "/^(true|false)$/",
        },
        QueryParam {
            name: "workerState",
            valid: |v| matches!(v, "requested" | "running" | "stopping" | "stopped"),
            pattern: "/^(requested|running|stopping|stopped)$/",
        },
    ];
    // Only the pool id's parts are free of patterns here.
    let ep = Endpoint {
        name: "listWorkers",
        scope: format!("worker-manager:list-workers:{provisioner}/{worker_type}"),
        all_of: false,
        params: Vec::new(),
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
    let now = SystemTime::now();
    // Worker-manager filters in the database, before paging: no expiry
    // filter at all, `quarantined=true` keeps quarantined rows, and rows
    // it does not manage have no state or launch config to match.
    let all: Vec<_> = if adm.query("workerState").is_some() || adm.query("launchConfigId").is_some()
    {
        Vec::new()
    } else {
        rows(&shared, &pool)
            .into_iter()
            .filter(|w| adm.query("quarantined") != Some("true") || w.quarantine_until >= now)
            .collect()
    };
    let call = adm.call(ep.name);
    match api::page(all, &adm, shared.taskcluster.max_page_size, &call) {
        Ok((page, token)) => api::listing(page.iter().map(|w| w.wm_list_item()).collect(), token),
        Err(r) => *r,
    }
}

pub(crate) async fn get_worker(
    State(shared): State<Arc<Shared>>,
    Path((p, wt, g, id)): Path<(String, String, String, String)>,
    req: Req,
) -> Response {
    let ep = Endpoint {
        name: "getWorker",
        scope: format!("worker-manager:get-worker:{p}/{wt}/{g}/{id}"),
        all_of: false,
        params: vec![generic("workerGroup", &g), generic("workerId", &id)],
        query: &[],
    };
    let adm = match api::admit(&shared, &req, &ep) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let pool = PoolId {
        provisioner: p.clone(),
        worker_type: wt.clone(),
    };
    let now = SystemTime::now();
    match row(&shared, &pool, &g, &id).filter(|w| w.expires > now || w.quarantine_until > now) {
        Some(w) => Json(w.wm_worker()).into_response(),
        None => reply::error(
            &adm.call(ep.name),
            Code::ResourceNotFound,
            &format!(
                "Worker with workerId `{id}`, workerGroup `{g}`,worker-type `{wt}` and provisioner `{p}` not found. Are you sure it was created?"
            ),
        ),
    }
}

/// `workers/<workerPoolId>/<workerGroup>` (listWorkersForWorkerGroup),
/// `workers/<workerPoolId>/<workerGroup>/<workerId>` (worker), each also
/// with a `:` after the pool id, and `workers/<workerPoolId>`
/// (listWorkersForWorkerPool), matched in that order on the raw path as
/// Express does (a pool id with an unencoded `/` is two segments).
pub(crate) async fn managed_workers(State(shared): State<Arc<Shared>>, req: Req) -> Response {
    let raw = req
        .uri
        .path()
        .strip_prefix("/api/worker-manager/v1/workers/")
        .unwrap_or("")
        .to_string();
    let decode = |s: &str| percent_decode(s).unwrap_or_else(|| s.to_string());
    let segments: Vec<String> = raw.split('/').map(decode).collect();
    let pool_of = |s: &str| s.strip_suffix(':').unwrap_or(s).to_string();
    match segments.as_slice() {
        [pool, group] => {
            let pool = pool_of(pool);
            let ep = Endpoint {
                name: "listWorkersForWorkerGroup",
                scope: format!("worker-manager:list-workers:{pool}/{group}"),
                all_of: false,
                params: vec![pool_param(&pool), generic("workerGroup", group)],
                query: &PAGING,
            };
            match api::admit(&shared, &req, &ep) {
                // Its workers table has no row for unmanaged workers.
                Ok(_) => api::listing(Vec::new(), None),
                Err(r) => *r,
            }
        }
        [pool, group, id] => {
            let pool = pool_of(pool);
            let ep = Endpoint {
                name: "worker",
                scope: format!("worker-manager:get-worker:{pool}/{group}/{id}"),
                all_of: false,
                params: vec![
                    pool_param(&pool),
                    generic("workerGroup", group),
                    generic("workerId", id),
                ],
                query: &[],
            };
            match api::admit(&shared, &req, &ep) {
                Ok(adm) => reply::error(
                    &adm.call(ep.name),
                    Code::ResourceNotFound,
                    "Worker not found",
                ),
                Err(r) => *r,
            }
        }
        _ => {
            let pool = decode(&raw);
            const QUERY: [QueryParam; 4] = [
                PAGING[0],
                PAGING[1],
                QueryParam {
                    name: "launchConfigId",
                    valid: |v| {
                        (1..=38).contains(&v.len())
                            && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    },
                    pattern: "/^[a-zA-Z0-9-]{1,38}$/",
                },
                QueryParam {
                    name: "state",
                    valid: |v| {
                        matches!(
                            v,
                            "requested" | "running" | "stopping" | "stopped" | "standalone"
                        )
                    },
                    pattern: "/^(requested|running|stopping|stopped|standalone)$/",
                },
            ];
            let ep = Endpoint {
                name: "listWorkersForWorkerPool",
                scope: format!("worker-manager:list-workers:{pool}"),
                all_of: false,
                params: vec![pool_param(&pool)],
                query: &QUERY,
            };
            match api::admit(&shared, &req, &ep) {
                Ok(adm) => reply::error(
                    &adm.call(ep.name),
                    Code::ResourceNotFound,
                    "Worker Pool does not exist",
                ),
                Err(r) => *r,
            }
        }
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
