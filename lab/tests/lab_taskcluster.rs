//! The Taskcluster double: what it serves (only fields the real queue and
//! worker-manager serve, checked against key sets written from their
//! schemas and code), job results that follow what Puppet applied, retries,
//! pools, quarantines, paging, Hawk and a failing load balancer.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use common::*;
use fleetroll_lab::Lab;
use serde_json::{Value, json};

// ---- What the real services may send (from their schemas) ----

/// queue list-workers-response.yml, an item of `workers`.
const QUEUE_LIST_ITEM: &[&str] = &[
    "workerGroup",
    "workerId",
    "quarantineUntil",
    "firstClaim",
    "latestTask",
    "lastDateActive",
];
/// queue worker-response.yml.
const QUEUE_WORKER: &[&str] = &[
    "provisionerId",
    "workerType",
    "taskQueueId",
    "workerGroup",
    "workerId",
    "recentTasks",
    "expires",
    "quarantineUntil",
    "quarantineDetails",
    "firstClaim",
    "lastDateActive",
];
/// task-status.yml.
const TASK_STATUS: &[&str] = &[
    "taskId",
    "provisionerId",
    "workerType",
    "taskQueueId",
    "schedulerId",
    "projectId",
    "taskGroupId",
    "priority",
    "deadline",
    "expires",
    "retriesLeft",
    "state",
    "runs",
];
/// task-status.yml, an item of `runs`.
const TASK_RUN: &[&str] = &[
    "runId",
    "state",
    "reasonCreated",
    "reasonResolved",
    "workerGroup",
    "workerId",
    "takenUntil",
    "scheduled",
    "started",
    "resolved",
];
/// worker-manager list-workers-response.yml, an item of `workers`.
const WM_LIST_ITEM: &[&str] = &[
    "workerGroup",
    "workerId",
    "workerPoolId",
    "quarantineUntil",
    "firstClaim",
    "latestTask",
    "lastDateActive",
    "state",
    "capacity",
    "providerId",
    "launchConfigId",
];
/// worker-manager worker-response.yml.
const WM_WORKER: &[&str] = &[
    "provisionerId",
    "workerType",
    "workerPoolId",
    "workerGroup",
    "workerId",
    "recentTasks",
    "expires",
    "quarantineUntil",
    "quarantineDetails",
    "firstClaim",
    "lastDateActive",
    "state",
    "capacity",
    "providerId",
    "launchConfigId",
];
const QUARANTINE_DETAIL: &[&str] = &["clientId", "quarantineUntil", "updatedAt", "quarantineInfo"];
const REASONS_RESOLVED: &[&str] = &[
    "completed",
    "failed",
    "deadline-exceeded",
    "canceled",
    "claim-expired",
    "worker-shutdown",
    "malformed-payload",
    "resource-unavailable",
    "internal-error",
    "intermittent-task",
    "superseded",
];
const RETRIED: &[&str] = &["worker-shutdown", "claim-expired", "intermittent-task"];

fn object_within<'a>(
    v: &'a Value,
    allowed: &[&str],
    required: &[&str],
    what: &str,
) -> &'a serde_json::Map<String, Value> {
    let o = v
        .as_object()
        .unwrap_or_else(|| panic!("{what} is not an object: {v}"));
    for k in o.keys() {
        assert!(allowed.contains(&k.as_str()), "{what} has {k:?}: {v}");
    }
    for k in required {
        assert!(o.contains_key(*k), "{what} lacks {k:?}: {v}");
    }
    o
}

fn parse_date(s: &str) -> SystemTime {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{s:?} is not a date: {e}"));
    SystemTime::from(t)
}

fn date(v: &Value, what: &str) -> SystemTime {
    parse_date(
        v.as_str()
            .unwrap_or_else(|| panic!("{what} is not a string: {v}")),
    )
}

fn check_task_run_ref(v: &Value) {
    object_within(v, &["taskId", "runId"], &["taskId", "runId"], "task run");
    assert_eq!(v["taskId"].as_str().map(str::len), Some(22), "{v}");
    assert!(v["runId"].is_u64(), "{v}");
}

fn check_id(v: &Value) {
    let s = v.as_str().expect("an identifier");
    assert!(
        (1..=38).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{s:?}"
    );
}

fn check_queue_list(body: &Value) {
    object_within(
        body,
        &["workers", "continuationToken"],
        &["workers"],
        "queue listWorkers",
    );
    for w in body["workers"].as_array().expect("workers") {
        object_within(
            w,
            QUEUE_LIST_ITEM,
            &["workerGroup", "workerId", "firstClaim"],
            "queue worker item",
        );
        check_id(&w["workerGroup"]);
        check_id(&w["workerId"]);
        date(&w["firstClaim"], "firstClaim");
        if let Some(t) = w.get("lastDateActive") {
            date(t, "lastDateActive");
        }
        if let Some(q) = w.get("quarantineUntil") {
            assert!(date(q, "quarantineUntil") > SystemTime::now() - Duration::from_secs(5));
        }
        if let Some(t) = w.get("latestTask") {
            check_task_run_ref(t);
        }
    }
}

fn check_details(v: &Value) {
    for d in v.as_array().expect("quarantineDetails") {
        object_within(d, QUARANTINE_DETAIL, QUARANTINE_DETAIL, "quarantine detail");
        date(&d["updatedAt"], "updatedAt");
        date(&d["quarantineUntil"], "quarantineUntil");
    }
}

fn check_queue_worker(w: &Value) {
    let required = [
        "provisionerId",
        "workerType",
        "workerGroup",
        "workerId",
        "recentTasks",
        "expires",
        "firstClaim",
    ];
    object_within(w, QUEUE_WORKER, &required, "queue getWorker");
    // The schema allows details, but the real queue's serialize() leaves
    // them out; and it always has a quarantineUntil.
    assert!(w.get("quarantineDetails").is_none(), "{w}");
    date(&w["quarantineUntil"], "quarantineUntil");
    date(&w["expires"], "expires");
    date(&w["firstClaim"], "firstClaim");
    assert_eq!(
        w["taskQueueId"].as_str(),
        Some(
            format!(
                "{}/{}",
                w["provisionerId"].as_str().unwrap(),
                w["workerType"].as_str().unwrap()
            )
            .as_str()
        )
    );
    let recent = w["recentTasks"].as_array().expect("recentTasks");
    assert!(recent.len() <= 20);
    recent.iter().for_each(check_task_run_ref);
}

fn check_status(body: &Value) {
    object_within(body, &["status"], &["status"], "status response");
    let s = &body["status"];
    let required: Vec<&str> = TASK_STATUS
        .iter()
        .copied()
        .filter(|k| *k != "priority")
        .collect();
    object_within(s, TASK_STATUS, &required, "task status");
    let states = [
        "unscheduled",
        "pending",
        "running",
        "completed",
        "failed",
        "exception",
    ];
    assert!(states.contains(&s["state"].as_str().unwrap()), "{s}");
    assert!(s["retriesLeft"].as_u64().is_some_and(|r| r <= 999));
    for k in ["deadline", "expires"] {
        date(&s[k], k);
    }
    let runs = s["runs"].as_array().expect("runs");
    for (i, r) in runs.iter().enumerate() {
        object_within(
            r,
            TASK_RUN,
            &["runId", "state", "reasonCreated", "scheduled"],
            "run",
        );
        assert_eq!(r["runId"], i, "runs[i] has runId i: {s}");
        assert!(
            ["pending", "running", "completed", "failed", "exception"]
                .contains(&r["state"].as_str().unwrap())
        );
        assert!(
            ["scheduled", "retry", "task-retry", "rerun", "exception"]
                .contains(&r["reasonCreated"].as_str().unwrap())
        );
        if let Some(reason) = r.get("reasonResolved") {
            assert!(REASONS_RESOLVED.contains(&reason.as_str().unwrap()), "{r}");
        }
        for k in ["takenUntil", "scheduled", "started", "resolved"] {
            if let Some(t) = r.get(k) {
                date(t, k);
            }
        }
    }
    if let Some(last) = runs.last() {
        assert_eq!(s["state"], last["state"]);
    }
}

fn check_wm_list(body: &Value) {
    object_within(
        body,
        &["workers", "continuationToken"],
        &["workers"],
        "wm listWorkers",
    );
    for w in body["workers"].as_array().expect("workers") {
        object_within(
            w,
            WM_LIST_ITEM,
            &["workerGroup", "workerId"],
            "wm worker item",
        );
        // Static hardware, unknown to worker-manager.
        assert_eq!(w["state"], "standalone");
        assert_eq!(w["capacity"], 0);
        assert_eq!(w["providerId"], "none");
        assert!(w.get("launchConfigId").is_none());
        date(&w["quarantineUntil"], "quarantineUntil");
        if let Some(t) = w.get("latestTask") {
            check_task_run_ref(t);
        }
    }
}

fn check_wm_worker(w: &Value) {
    let required = [
        "provisionerId",
        "workerType",
        "workerGroup",
        "workerId",
        "recentTasks",
        "expires",
        "firstClaim",
    ];
    object_within(w, WM_WORKER, &required, "wm getWorker");
    assert_eq!(w["state"], "standalone");
    check_details(&w["quarantineDetails"]);
    w["recentTasks"]
        .as_array()
        .unwrap()
        .iter()
        .for_each(check_task_run_ref);
}

fn check_error(body: &Value, code: &str) {
    object_within(
        body,
        &["code", "message", "requestInfo"],
        &["code", "message", "requestInfo"],
        "error",
    );
    assert_eq!(body["code"], code, "{body}");
    let info = object_within(
        &body["requestInfo"],
        &["method", "params", "payload", "time"],
        &["method", "params", "payload", "time"],
        "requestInfo",
    );
    date(&info["time"], "time");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains(&format!("* errorCode:  {code}")),
        "{body}"
    );
}

// ---- Access ----

const TALOS: &str = "releng-hardware/gecko-t-linux-talos";

fn get(lab: &Lab, path: &str) -> (u16, Value) {
    http_get(&format!("{}/{path}", lab.taskcluster_url()))
}

fn split(pool: &str) -> (&str, &str) {
    pool.split_once('/').unwrap()
}

fn queue_page(lab: &Lab, pool: &str, query: &str) -> Value {
    let (p, wt) = split(pool);
    let (status, body) = get(
        lab,
        &format!("api/queue/v1/provisioners/{p}/worker-types/{wt}/workers{query}"),
    );
    assert_eq!(status, 200, "{body}");
    check_queue_list(&body);
    body
}

/// Every worker of a pool, following continuation tokens; `query` is ""
/// or "?k=v&...".
fn queue_workers(lab: &Lab, pool: &str, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let q = match (&token, query.is_empty()) {
            (None, _) => query.to_string(),
            (Some(t), true) => format!("?continuationToken={t}"),
            (Some(t), false) => format!("{query}&continuationToken={t}"),
        };
        let page = queue_page(lab, pool, &q);
        out.extend(page["workers"].as_array().unwrap().iter().cloned());
        match page["continuationToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => return out,
        }
    }
}

fn ids(workers: &[Value]) -> Vec<String> {
    workers
        .iter()
        .map(|w| w["workerId"].as_str().unwrap().to_string())
        .collect()
}

fn queue_worker(lab: &Lab, pool: &str, short: &str) -> Option<Value> {
    get_worker(lab, "queue", pool, short, check_queue_worker)
}

fn wm_worker(lab: &Lab, pool: &str, short: &str) -> Option<Value> {
    get_worker(lab, "worker-manager", pool, short, check_wm_worker)
}

/// A service's getWorker: the worker, checked by `check`, or `None` for
/// the 404 the service gives an unknown worker.
fn get_worker(
    lab: &Lab,
    service: &str,
    pool: &str,
    short: &str,
    check: fn(&Value),
) -> Option<Value> {
    let (p, wt) = split(pool);
    let (status, body) = get(
        lab,
        &format!("api/{service}/v1/provisioners/{p}/worker-types/{wt}/workers/mdc1/{short}"),
    );
    match status {
        200 => {
            check(&body);
            Some(body)
        }
        404 => {
            check_error(&body, "ResourceNotFound");
            None
        }
        _ => panic!("{service} getWorker answered {status}: {body}"),
    }
}

/// Waits until `witness` has claimed well after `since`, by when
/// `quarantined` would have too; asserts `quarantined` claimed nothing
/// after it.
fn claims_nothing_since(lab: &Lab, quarantined: &str, witness: &str, since: SystemTime) {
    wait(
        &format!("{witness} claiming well past the quarantine"),
        || {
            recent_results(lab, TALOS, witness).iter().any(|(t, _)| {
                t.duration_since(since)
                    .is_ok_and(|d| d > Duration::from_millis(500))
            })
        },
    );
    assert!(
        recent_results(lab, TALOS, quarantined)
            .iter()
            .all(|(t, _)| *t <= since),
        "{quarantined} claimed work while quarantined"
    );
}

fn status(lab: &Lab, task: &str) -> Value {
    let (code, body) = get(lab, &format!("api/queue/v1/task/{task}/status"));
    assert_eq!(code, 200, "{body}");
    check_status(&body);
    body["status"].clone()
}

/// (started, state) of the runs in a worker's recent tasks, oldest first.
fn recent_results(lab: &Lab, pool: &str, short: &str) -> Vec<(SystemTime, String)> {
    let w = queue_worker(lab, pool, short).expect("the worker is known");
    w["recentTasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let id = t["taskId"].as_str().unwrap();
            let run_id = t["runId"].as_u64().unwrap() as usize;
            let s = status(lab, id);
            assert_eq!(s["taskId"], id);
            assert_eq!(s["taskQueueId"], pool);
            let run = &s["runs"][run_id];
            assert_eq!(run["workerId"], short);
            assert_eq!(run["workerGroup"], "mdc1");
            (
                date(&run["started"], "started"),
                run["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Waits (up to 30 s) until `check` holds.
fn wait(what: &str, check: impl FnMut() -> bool) {
    let mut check = check;
    assert!(
        wait_for(Duration::from_secs(30), || check().then_some(())).is_some(),
        "timed out waiting for {what}"
    );
}

/// Results of runs started after `t` and resolved.
fn resolved_after(lab: &Lab, short: &str, t: SystemTime) -> Vec<String> {
    recent_results(lab, TALOS, short)
        .into_iter()
        .filter(|(started, state)| *started > t && state != "running")
        .map(|(_, s)| s)
        .collect()
}

const SCENARIO: &str = r#"
[defaults]
jobs_per_minute = 1200
reboot_duration = "2s"
[puppet]
bad_branches = ["bad-branch"]
broken_branches = { "broken-branch" = 6 }
[[hosts]]
names = ["lab-0004"]
role = "other-pool"
"#;

#[test]
fn job_results_follow_the_applied_branch() {
    let dir = lab_dir();
    let lab = start(4, dir.path(), SCENARIO);
    wait("ten jobs on lab-0002", || {
        recent_results(&lab, TALOS, "lab-0002").len() >= 10
    });

    // The queue's worker listing for the role's pool.
    let list = queue_page(&lab, TALOS, "");
    let workers = list["workers"].as_array().unwrap();
    assert_eq!(ids(workers), ["lab-0001", "lab-0002", "lab-0003"]);
    for w in workers {
        assert_eq!(w["workerGroup"], "mdc1");
        assert_eq!(w["latestTask"]["runId"], 0);
        // Written when first seen and then every 30 minutes: still then.
        assert_eq!(w["lastDateActive"], w["firstClaim"], "{w}");
        assert!(w.get("quarantineUntil").is_none());
    }
    // Pagination.
    let page = queue_page(&lab, TALOS, "?limit=2");
    assert_eq!(page["workers"].as_array().unwrap().len(), 2);
    let token = page["continuationToken"].as_str().unwrap();
    let rest = queue_page(&lab, TALOS, &format!("?limit=2&continuationToken={token}"));
    assert_eq!(ids(rest["workers"].as_array().unwrap()), ["lab-0003"]);
    assert!(rest.get("continuationToken").is_none());

    // Healthy so far.
    let results = recent_results(&lab, TALOS, "lab-0002");
    assert!(
        results
            .iter()
            .all(|(_, s)| s == "completed" || s == "running"),
        "{results:?}"
    );

    // Apply a bad branch on lab-0002, the way fleetroll would.
    let h2 = lab.hosts()[1].hostname.clone();
    ok_stdout(&write_override(&lab, &h2, "PUPPET_BRANCH=bad-branch\n"));
    let out = ssh(&lab, &h2, "sudo -n run-puppet.sh");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let applied = SystemTime::now();
    wait("five jobs since the bad branch", || {
        resolved_after(&lab, "lab-0002", applied).len() >= 5
    });
    let after = resolved_after(&lab, "lab-0002", applied);
    assert!(after.iter().all(|s| s == "failed"), "{after:?}");
    let other = resolved_after(&lab, "lab-0001", applied);
    assert!(other.iter().all(|s| s == "completed"), "{other:?}");

    // Back to master: jobs pass again; earlier results do not change.
    ok_stdout(&ssh(&lab, &h2, "sudo -n rm /etc/puppet/ronin_settings"));
    assert_eq!(
        ssh(&lab, &h2, "sudo -n run-puppet.sh").status.code(),
        Some(2)
    );
    let fixed = SystemTime::now();
    wait("a job since the fix", || {
        !resolved_after(&lab, "lab-0002", fixed).is_empty()
    });
    let again = resolved_after(&lab, "lab-0002", fixed);
    assert!(again.iter().all(|s| s == "completed"), "{again:?}");

    // A broken branch (Puppet fails) fails jobs too.
    let h3 = lab.hosts()[2].hostname.clone();
    ok_stdout(&write_override(&lab, &h3, "PUPPET_BRANCH=broken-branch\n"));
    assert_eq!(
        ssh(&lab, &h3, "sudo -n run-puppet.sh").status.code(),
        Some(6)
    );
    let broke = SystemTime::now();
    wait("a job since Puppet broke", || {
        !resolved_after(&lab, "lab-0003", broke).is_empty()
    });
    let broken = resolved_after(&lab, "lab-0003", broke);
    assert!(broken.iter().all(|s| s == "failed"), "{broken:?}");

    // Marking a branch bad at run time affects jobs from then on.
    lab.set_branch_bad("master", true);
    let marked = SystemTime::now();
    wait("a job since master went bad", || {
        !resolved_after(&lab, "lab-0001", marked).is_empty()
    });
    let now_bad = resolved_after(&lab, "lab-0001", marked);
    assert!(now_bad.iter().all(|s| s == "failed"), "{now_bad:?}");
}

#[test]
fn a_reboot_retries_the_task_and_quarantine_stops_claims() {
    let dir = lab_dir();
    let lab = start(4, dir.path(), SCENARIO);
    wait("a job on lab-0001", || {
        queue_worker(&lab, TALOS, "lab-0001")
            .is_some_and(|w| !w["recentTasks"].as_array().unwrap().is_empty())
    });
    let h1 = lab.hosts()[0].hostname.clone();
    let host = lab.host(&h1).unwrap();

    host.reboot().unwrap();
    let rebooted = SystemTime::now();
    // The host always has a run going: the one the reboot cut short ends in
    // exception, and the queue adds a pending retry.
    let w = queue_worker(&lab, TALOS, "lab-0001").unwrap();
    let cut = w["recentTasks"].as_array().unwrap().last().unwrap().clone();
    let task = cut["taskId"].as_str().unwrap().to_string();
    let run = cut["runId"].as_u64().unwrap() as usize;
    let s = status(&lab, &task);
    assert_eq!(s["runs"][run]["state"], "exception", "{s}");
    assert_eq!(s["runs"][run]["reasonResolved"], "worker-shutdown");
    let next = &s["runs"][run + 1];
    assert_eq!(next["state"], "pending", "{s}");
    assert_eq!(next["reasonCreated"], "retry");
    assert_eq!(next["scheduled"], s["runs"][run]["resolved"]);
    assert!(next.get("workerId").is_none());
    assert_eq!(s["state"], "pending");
    assert_eq!(s["retriesLeft"], 4 - run);

    // Back from the reboot, the host's first claim is that retry.
    host.wait_reachable(Duration::from_secs(20)).unwrap();
    wait("the retry claimed", || {
        status(&lab, &task)["runs"][run + 1]["state"] != "pending"
    });
    let s = status(&lab, &task);
    assert_eq!(s["runs"][run + 1]["workerId"], "lab-0001");
    let started = date(&s["runs"][run + 1]["started"], "started");
    assert!(started.duration_since(rebooted).unwrap() >= Duration::from_secs(2));
    wait("the retry listed among recent tasks", || {
        queue_worker(&lab, TALOS, "lab-0001").is_some_and(|w| {
            w["recentTasks"]
                .as_array()
                .unwrap()
                .contains(&json!({"taskId": task, "runId": run + 1}))
        })
    });
    let results = recent_results(&lab, TALOS, "lab-0001");
    assert!(
        !results
            .iter()
            .any(|(t, _)| *t > rebooted
                && t.duration_since(rebooted).unwrap() < Duration::from_secs(2)),
        "nothing claimed while rebooting: {results:?}"
    );

    // Quarantine: listed as quarantined, no new claims.
    let h2 = lab.hosts()[1].hostname.clone();
    let until = SystemTime::now() + Duration::from_secs(3600);
    lab.host(&h2).unwrap().set_quarantine(Some(until));
    let q = SystemTime::now();
    let quarantined = queue_page(&lab, TALOS, "?quarantined=true");
    assert_eq!(
        ids(quarantined["workers"].as_array().unwrap()),
        ["lab-0002"]
    );
    assert!(quarantined["workers"][0]["quarantineUntil"].is_string());
    let not = queue_page(&lab, TALOS, "?quarantined=false");
    assert_eq!(
        ids(not["workers"].as_array().unwrap()),
        ["lab-0001", "lab-0003"]
    );
    // Wait until lab-0003 has claimed well after the quarantine, so
    // lab-0002 would have too.
    claims_nothing_since(&lab, "lab-0002", "lab-0003", q);
    let details = wm_worker(&lab, TALOS, "lab-0002").unwrap()["quarantineDetails"].clone();
    assert_eq!(details.as_array().unwrap().len(), 1, "{details}");
    assert_eq!(details[0]["clientId"], "project/fleetroll/lab");
    assert_eq!(details[0]["quarantineInfo"], "[unspecified]");

    // Lifting it with a reason: the host claims again.
    lab.host(&h2)
        .unwrap()
        .quarantine(None, Some("disk replaced"))
        .unwrap();
    let lifted = SystemTime::now();
    wait("lab-0002 claiming again", || {
        recent_results(&lab, TALOS, "lab-0002")
            .iter()
            .any(|(t, _)| *t > lifted)
    });
    let details = wm_worker(&lab, TALOS, "lab-0002").unwrap()["quarantineDetails"].clone();
    assert_eq!(details.as_array().unwrap().len(), 2, "{details}");
    assert_eq!(details[1]["quarantineInfo"], "disk replaced");
    assert!(date(&details[1]["quarantineUntil"], "until") <= SystemTime::now());
}

#[test]
fn unknowns_are_answered_as_the_real_services_do() {
    let dir = lab_dir();
    let lab = start(4, dir.path(), SCENARIO);
    // An unknown pool is an empty list, not an error.
    let empty = queue_page(&lab, "releng-hardware/nope", "");
    assert_eq!(empty, json!({"workers": []}));
    let (status, body) = get(&lab, "api/queue/v1/task/fNvfdGJxRGeKm1Ug_IQ4rw/status");
    assert_eq!(status, 404);
    check_error(&body, "ResourceNotFound");
    assert_eq!(body["requestInfo"]["method"], "status");
    assert_eq!(
        body["requestInfo"]["params"],
        json!({"taskId": "fNvfdGJxRGeKm1Ug_IQ4rw"})
    );
    let (status, body) = get(&lab, "api/queue/v1/task/not-a-slugid/status");
    assert_eq!(status, 400);
    check_error(&body, "InvalidRequestArguments");
    assert!(
        queue_worker(&lab, TALOS, "lab-0004").is_none(),
        "lab-0004 is in another pool"
    );
    assert!(queue_worker(&lab, "releng-hardware/other-pool", "lab-0004").is_some());
    let (status, body) = get(
        &lab,
        "api/queue/v1/provisioners/releng-hardware/worker-types/gecko-t-linux-talos/workers?quarantined=maybe",
    );
    assert_eq!(status, 400, "{body}");
    check_error(&body, "InvalidRequestArguments");
    let (status, body) = get(
        &lab,
        "api/queue/v1/provisioners/releng-hardware/worker-types/gecko-t-linux-talos/workers?state=running",
    );
    assert_eq!(status, 400, "unknown query parameters are refused: {body}");
    let (status, body) = get(
        &lab,
        "api/queue/v1/provisioners/releng-hardware/worker-types/gecko-t-linux-talos/workers?continuationToken=!!",
    );
    assert_eq!(status, 400);
    check_error(&body, "InputError");

    // Worker-manager knows no static hardware of its own.
    let url = lab.taskcluster_url();
    let (status, body) = http_get(&format!(
        "{url}/api/worker-manager/v1/workers/releng-hardware%2Fgecko-t-linux-talos"
    ));
    assert_eq!(status, 404);
    check_error(&body, "ResourceNotFound");
    let (status, body) = http_get(&format!(
        "{url}/api/worker-manager/v1/workers/releng-hardware%2Fgecko-t-linux-talos/mdc1/lab-0001"
    ));
    assert_eq!(status, 404);
    check_error(&body, "ResourceNotFound");
    let (status, body) = http_get(&format!(
        "{url}/api/worker-manager/v1/workers/releng-hardware%2Fgecko-t-linux-talos/mdc1"
    ));
    assert_eq!((status, body), (200, json!({"workers": []})));
    // ... but shows the queue's view of it.
    let (status, body) = get(
        &lab,
        "api/worker-manager/v1/provisioners/releng-hardware/worker-types/other-pool/workers",
    );
    assert_eq!(status, 200);
    check_wm_list(&body);
    assert_eq!(ids(body["workers"].as_array().unwrap()), ["lab-0004"]);
    assert_eq!(
        body["workers"][0]["workerPoolId"],
        "releng-hardware/other-pool"
    );
    let w = wm_worker(&lab, "releng-hardware/other-pool", "lab-0004").unwrap();
    assert_eq!(w["quarantineDetails"], json!([]));
    assert!(date(&w["quarantineUntil"], "q") < SystemTime::now());

    // A path no service has.
    let (status, body) = get(&lab, "api/queue/v1/no-such-method");
    assert_eq!((status, body), (404, json!({"error": "Not found"})));
    let (status, body) = get(&lab, "api/queue/v1/ping");
    assert_eq!(status, 200);
    assert_eq!(body["alive"], true);
}

#[test]
fn roles_use_firefox_ci_pools_and_worker_type_override_moves_a_host() {
    let dir = lab_dir();
    let lab = start(
        5,
        dir.path(),
        r##"
[defaults]
jobs_per_minute = 600
role = "gecko_t_linux_talos"
[[hosts]]
names = ["lab-0003"]
role = "gecko_t_linux_2404_netperf"
[[hosts]]
names = ["lab-0004"]
os = "macos"
role = "gecko_t_osx_1400_r8"
[[hosts]]
names = ["lab-0005"]
override = "# staging\nexport WORKER_TYPE_OVERRIDE='gecko-t-linux-talos-1804-beta'\n"
"##,
    );
    let talos = "releng-hardware/gecko-t-linux-talos-1804";
    let netperf = "releng-hardware/gecko-t-linux-netperf-2404";
    let osx = "releng-hardware/gecko-t-osx-1400-r8";
    let beta = "releng-hardware/gecko-t-linux-talos-1804-beta";
    assert_eq!(
        ids(&queue_workers(&lab, talos, "")),
        ["lab-0001", "lab-0002"]
    );
    assert_eq!(ids(&queue_workers(&lab, netperf, "")), ["lab-0003"]);
    assert_eq!(ids(&queue_workers(&lab, osx, "")), ["lab-0004"]);
    assert_eq!(ids(&queue_workers(&lab, beta, "")), ["lab-0005"]);
    assert_eq!(lab.info().taskcluster_pools["gecko_t_linux_talos"], talos);
    assert_eq!(
        lab.host("lab-0005").unwrap().worker_pool().as_deref(),
        Some(beta)
    );
    wait("a job on lab-0005", || {
        !recent_results(&lab, beta, "lab-0005").is_empty()
    });

    // An override written over SSH, as fleetroll would, moves the host.
    let exp = "releng-hardware/gecko-t-linux-talos-exp";
    let h2 = lab.hosts()[1].hostname.clone();
    ok_stdout(&write_override(
        &lab,
        &h2,
        "PUPPET_BRANCH=master\nWORKER_TYPE_OVERRIDE=\"gecko-t-linux-talos-exp\"\n",
    ));
    let moved = SystemTime::now();
    wait("lab-0002 in the exp pool", || {
        ids(&queue_workers(&lab, exp, "")) == ["lab-0002"]
    });
    wait("a job of lab-0002 in the exp pool", || {
        !recent_results(&lab, exp, "lab-0002").is_empty()
    });
    let row = queue_worker(&lab, exp, "lab-0002").unwrap();
    assert_eq!(row["taskQueueId"], exp);
    // A new row: first seen when the host moved.
    let first = date(&row["firstClaim"], "firstClaim");
    assert!(first >= moved - Duration::from_secs(1), "{row}");
    assert_eq!(row["lastDateActive"], row["firstClaim"]);
    // Its old row stays until it expires a day later, and no longer moves.
    let old = queue_worker(&lab, talos, "lab-0002").expect("the old row is kept");
    let old_latest = old["recentTasks"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    let s = status(&lab, old_latest["taskId"].as_str().unwrap());
    assert_eq!(s["taskQueueId"], talos);
    assert!(date(&s["runs"][0]["started"], "started") <= moved + Duration::from_secs(1));

    // On macOS, through the lab's own handle.
    let staging = "releng-hardware/gecko-t-osx-1400-r8-staging";
    lab.host("lab-0004")
        .unwrap()
        .set_override(Some(b"WORKER_TYPE_OVERRIDE=gecko-t-osx-1400-r8-staging\n"))
        .unwrap();
    wait("lab-0004 in the staging pool", || {
        ids(&queue_workers(&lab, staging, "")) == ["lab-0004"]
    });

    // An invalid worker type: the worker can claim nowhere.
    lab.host("lab-0001")
        .unwrap()
        .set_override(Some(b"WORKER_TYPE_OVERRIDE=Not_A_Worker_Type\n"))
        .unwrap();
    assert_eq!(lab.host("lab-0001").unwrap().worker_pool(), None);

    // Removing the override brings lab-0002 back to its role's pool.
    ok_stdout(&ssh(&lab, &h2, "sudo -n rm /etc/puppet/ronin_settings"));
    let back = SystemTime::now();
    wait("lab-0002 claiming in its role's pool again", || {
        recent_results(&lab, talos, "lab-0002")
            .iter()
            .any(|(t, _)| *t > back)
    });
}

#[test]
fn retry_reasons_give_a_task_several_runs() {
    let dir = lab_dir();
    let lab = start(
        2,
        dir.path(),
        r#"
[defaults]
jobs_per_minute = 1200
job_reasons = { worker-shutdown = 0.25, intermittent-task = 0.15, claim-expired = 0.1, canceled = 0.1, superseded = 0.05, resource-unavailable = 0.05 }
"#,
    );
    let mut seen_reasons = BTreeSet::new();
    let mut most_runs = 0;
    let mut checked = BTreeMap::new();
    let mut retry_claimed = false;
    wait("every reason and a task with three runs", || {
        let Some(w) = queue_worker(&lab, TALOS, "lab-0001") else {
            return false;
        };
        for t in w["recentTasks"].as_array().unwrap() {
            // The recent tasks list each run the host claimed.
            retry_claimed |= t["runId"].as_u64() > Some(0);
            let id = t["taskId"].as_str().unwrap().to_string();
            let s = status(&lab, &id);
            let runs = s["runs"].as_array().unwrap();
            for (i, r) in runs.iter().enumerate() {
                let Some(reason) = r["reasonResolved"].as_str() else {
                    continue;
                };
                seen_reasons.insert(reason.to_string());
                let last = i + 1 == runs.len();
                if !RETRIED.contains(&reason) {
                    assert!(last, "only retried reasons get another run: {s}");
                } else if !last {
                    let next = &runs[i + 1];
                    let created = if reason == "intermittent-task" {
                        "task-retry"
                    } else {
                        "retry"
                    };
                    assert_eq!(next["reasonCreated"], created, "{s}");
                    assert_eq!(next["scheduled"], r["resolved"], "{s}");
                }
                if reason == "claim-expired" {
                    assert_eq!(r["takenUntil"], r["resolved"], "{s}");
                }
                let want = match reason {
                    "completed" => "completed",
                    "failed" => "failed",
                    _ => "exception",
                };
                assert_eq!(r["state"], want, "{s}");
            }
            assert_eq!(
                s["retriesLeft"].as_u64(),
                Some(5 - (runs.len() as u64 - 1)),
                "{s}"
            );
            most_runs = most_runs.max(runs.len());
            // A resolved run never changes.
            for (i, r) in runs.iter().enumerate() {
                if r.get("resolved").is_some()
                    && let Some(before) = checked.insert((id.clone(), i), r.clone())
                {
                    assert_eq!(before, *r, "a resolved run changed");
                }
            }
        }
        let wanted = [
            "worker-shutdown",
            "intermittent-task",
            "claim-expired",
            "canceled",
            "superseded",
            "resource-unavailable",
            "completed",
        ];
        wanted.iter().all(|r| seen_reasons.contains(*r)) && most_runs >= 3 && retry_claimed
    });
}

#[test]
fn expired_workers_make_short_pages_and_paging_finds_every_live_worker() {
    let dir = lab_dir();
    let lab = start(
        5,
        dir.path(),
        r#"
[defaults]
jobs_per_minute = 60
[taskcluster]
max_page_size = 2
expired_workers = 3
"#,
    );
    let live = ["lab-0001", "lab-0002", "lab-0003", "lab-0004", "lab-0005"];
    let mut pages = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let q = token
            .as_ref()
            .map_or(String::new(), |t| format!("?continuationToken={t}"));
        let page = queue_page(&lab, TALOS, &q);
        let n = page["workers"].as_array().unwrap().len();
        assert!(n <= 2, "at most max_page_size: {page}");
        token = page["continuationToken"].as_str().map(str::to_string);
        pages.push((n, token.is_some()));
        if token.is_none() {
            break;
        }
    }
    assert!(
        pages.iter().any(|&(n, more)| n < 2 && more),
        "a short page that still has a token: {pages:?}"
    );
    assert_eq!(ids(&queue_workers(&lab, TALOS, "")), live);
    // With one row a page, an expired row's page is empty and goes on.
    let page = queue_page(&lab, TALOS, "?limit=1");
    let t1 = page["continuationToken"].as_str().unwrap().to_string();
    let second = queue_page(&lab, TALOS, &format!("?limit=1&continuationToken={t1}"));
    assert_eq!(second["workers"], json!([]), "{second}");
    assert!(second["continuationToken"].is_string());
    assert_eq!(ids(&queue_workers(&lab, TALOS, "?limit=1")), live);

    // Worker-manager does not filter expired rows.
    let mut wm = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let q = token
            .as_ref()
            .map_or(String::new(), |t| format!("?continuationToken={t}"));
        let (status, page) = get(
            &lab,
            &format!(
                "api/worker-manager/v1/provisioners/releng-hardware/worker-types/gecko-t-linux-talos/workers{q}"
            ),
        );
        assert_eq!(status, 200);
        check_wm_list(&page);
        wm.extend(ids(page["workers"].as_array().unwrap()));
        token = page["continuationToken"].as_str().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(wm.len(), 8, "{wm:?}");
    let gone: Vec<&String> = wm
        .iter()
        .filter(|id| !live.contains(&id.as_str()))
        .collect();
    assert_eq!(gone.len(), 3);
    assert!(queue_worker(&lab, TALOS, gone[0]).is_none());
    assert!(wm_worker(&lab, TALOS, gone[0]).is_none());
}

#[test]
fn a_share_of_requests_fails_at_the_load_balancer() {
    let dir = lab_dir();
    let lab = start(2, dir.path(), "[taskcluster]\nfail_rate = 1.0\n");
    let url = format!(
        "{}/api/queue/v1/provisioners/releng-hardware/worker-types/gecko-t-linux-talos/workers",
        lab.taskcluster_url()
    );
    for _ in 0..10 {
        let (status, ct, body) = http_request("GET", &url, &[], b"");
        assert_eq!(status, 502);
        assert!(ct.starts_with("text/html"), "{ct}");
        assert!(
            serde_json::from_str::<Value>(&body).is_err(),
            "not Taskcluster's JSON"
        );
    }
    lab.set_taskcluster_fail_rate(0.5).unwrap();
    let failed = (0..200)
        .filter(|_| http_request("GET", &url, &[], b"").0 == 502)
        .count();
    assert!((60..=140).contains(&failed), "{failed} of 200");
    lab.set_taskcluster_fail_rate(0.0).unwrap();
    assert!((0..50).all(|_| http_request("GET", &url, &[], b"").0 == 200));
    assert!(lab.set_taskcluster_fail_rate(1.5).is_err());
}

fn quarantine_body(until: SystemTime, info: Option<&str>) -> Value {
    let until = time::OffsetDateTime::from(until)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    match info {
        Some(i) => json!({"quarantineUntil": until, "quarantineInfo": i}),
        None => json!({"quarantineUntil": until}),
    }
}

fn tc_queue(lab: &Lab, creds: Option<(&str, &str)>) -> taskcluster::Queue {
    let mut b = taskcluster::ClientBuilder::new(lab.taskcluster_url()).retry(taskcluster::Retry {
        retries: 0,
        ..Default::default()
    });
    if let Some((id, token)) = creds {
        b = b.credentials(taskcluster::Credentials::new(id, token));
    }
    taskcluster::Queue::new(b).unwrap()
}

#[test]
fn quarantines_need_hawk_signed_requests_with_the_scope() {
    let dir = lab_dir();
    let lab = start(
        3,
        dir.path(),
        r#"
[defaults]
jobs_per_minute = 1200
[taskcluster.clients."project/other"]
access_token = "other-token"
scopes = ["queue:quarantine-worker:releng-hardware/gecko-t-linux-netperf-1804/*"]
"#,
    );
    let me = lab.taskcluster_client().clone();
    assert_eq!(me.client_id, "project/fleetroll/lab");
    assert_eq!(me.scopes, ["queue:quarantine-worker:*"]);
    assert_eq!(me.access_token.len(), 44);
    assert_eq!(lab.info().taskcluster_client, me);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (p, wt) = split(TALOS);
    let until = SystemTime::now() + Duration::from_secs(3600);

    // Signed by the lab's client: accepted, recorded with its reason.
    let queue = tc_queue(&lab, Some((&me.client_id, &me.access_token)));
    let body = quarantine_body(until, Some("bad disk"));
    let answer = rt
        .block_on(queue.quarantineWorker(p, wt, "mdc1", "lab-0001", &body))
        .expect("a signed quarantine gets through");
    check_queue_worker(&answer);
    let q = SystemTime::now();
    assert_eq!(
        date(&answer["quarantineUntil"], "q")
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        until
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    );
    let w = wm_worker(&lab, TALOS, "lab-0001").unwrap();
    let d = &w["quarantineDetails"][0];
    assert_eq!(d["clientId"], "project/fleetroll/lab");
    assert_eq!(d["quarantineInfo"], "bad disk");
    assert_eq!(
        d["quarantineUntil"], body["quarantineUntil"],
        "stored as sent"
    );
    // Reads need no credentials; a signed read works too.
    let read = rt
        .block_on(queue.getWorker(p, wt, "mdc1", "lab-0001"))
        .expect("a signed read");
    check_queue_worker(&read);
    // The client signs the path without its query, the service checks
    // both: a signed read with a query string is refused, as by the real one.
    let e = rt
        .block_on(queue.listWorkers(p, wt, None, Some("1"), None))
        .expect_err("signed over the path alone");
    assert!(format!("{e:#}").contains("Bad mac"), "{e:#}");
    let anon = tc_queue(&lab, None);
    let listed = rt
        .block_on(anon.listWorkers(p, wt, None, None, Some("true")))
        .unwrap();
    check_queue_list(&listed);
    assert_eq!(ids(listed["workers"].as_array().unwrap()), ["lab-0001"]);

    // Unsigned: the anonymous role may not quarantine.
    let url = format!(
        "{}/api/queue/v1/provisioners/{p}/worker-types/{wt}/workers/mdc1/lab-0002",
        lab.taskcluster_url()
    );
    let raw = serde_json::to_vec(&body).unwrap();
    let (status, _, text) =
        http_request("PUT", &url, &[("Content-Type", "application/json")], &raw);
    assert_eq!(status, 403, "{text}");
    let err: Value = serde_json::from_str(&text).unwrap();
    check_error(&err, "InsufficientScopes");
    assert_eq!(err["requestInfo"]["method"], "quarantineWorker");
    assert!(
        rt.block_on(anon.quarantineWorker(p, wt, "mdc1", "lab-0002", &body))
            .is_err()
    );

    // Wrong token, unknown client, or too few scopes: refused.
    let refused = |creds: (&str, &str)| {
        let e = rt
            .block_on(
                tc_queue(&lab, Some(creds)).quarantineWorker(p, wt, "mdc1", "lab-0002", &body),
            )
            .expect_err("refused");
        format!("{e:#}")
    };
    let e = refused((&me.client_id, "not-the-token"));
    assert!(
        e.contains("AuthenticationFailed") && e.contains("Bad mac"),
        "{e}"
    );
    let e = refused(("project/nobody", "x"));
    assert!(
        e.contains("AuthenticationFailed") && e.contains("not found"),
        "{e}"
    );
    let e = refused(("project/other", "other-token"));
    assert!(e.contains("InsufficientScopes"), "{e}");
    assert!(
        e.contains("queue:quarantine-worker:releng-hardware/gecko-t-linux-talos/mdc1/lab-0002"),
        "{e}"
    );

    // A signature over another body.
    let creds = hawk::Credentials {
        id: me.client_id.clone(),
        key: hawk::Key::new(me.access_token.as_bytes(), hawk::SHA256).unwrap(),
    };
    let port: u16 = lab
        .taskcluster_url()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let path = format!("/api/queue/v1/provisioners/{p}/worker-types/{wt}/workers/mdc1/lab-0002");
    let hash = hawk::PayloadHasher::hash("application/json", hawk::SHA256, b"{}").unwrap();
    let header = hawk::RequestBuilder::new("PUT", "127.0.0.1", port, &path)
        .hash(&hash[..])
        .request()
        .make_header(&creds)
        .unwrap();
    let auth = format!("Hawk {header}");
    let (status, _, text) = http_request(
        "PUT",
        &url,
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &auth),
        ],
        &raw,
    );
    assert_eq!(status, 401, "{text}");
    let err: Value = serde_json::from_str(&text).unwrap();
    check_error(&err, "AuthenticationFailed");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("Invalid payload hash")
    );
    // A body the schema refuses, signed.
    let e = rt
        .block_on(queue.quarantineWorker(
            p,
            wt,
            "mdc1",
            "lab-0002",
            &json!({"quarantineUntil": "soon", "x": 1}),
        ))
        .expect_err("refused");
    assert!(format!("{e:#}").contains("InputValidationError"), "{e:#}");
    // A worker the queue does not know.
    let e = rt
        .block_on(queue.quarantineWorker(p, wt, "mdc1", "lab-0099", &body))
        .expect_err("unknown");
    assert!(format!("{e:#}").contains("ResourceNotFound"), "{e:#}");

    // While quarantined lab-0001 claims nothing; lifted, it claims again.
    claims_nothing_since(&lab, "lab-0001", "lab-0002", q);
    let lift = quarantine_body(SystemTime::now(), None);
    rt.block_on(queue.quarantineWorker(p, wt, "mdc1", "lab-0001", &lift))
        .unwrap();
    let lifted = SystemTime::now();
    wait("lab-0001 claiming again", || {
        recent_results(&lab, TALOS, "lab-0001")
            .iter()
            .any(|(t, _)| *t > lifted)
    });
    let w = wm_worker(&lab, TALOS, "lab-0001").unwrap();
    assert_eq!(w["quarantineDetails"].as_array().unwrap().len(), 2);
    assert_eq!(w["quarantineDetails"][1]["quarantineInfo"], "[unspecified]");
}

#[test]
fn last_date_active_is_as_coarse_as_the_queue_writes_it() {
    let dir = lab_dir();
    let lab = start(
        2,
        dir.path(),
        "[defaults]\njobs_per_minute = 1200\n[taskcluster]\nworker_info_update_frequency = \"2s\"\n",
    );
    let mut values = BTreeSet::new();
    wait("lastDateActive moving twice", || {
        let asked = SystemTime::now();
        let w = queue_worker(&lab, TALOS, "lab-0001").unwrap();
        let first = date(&w["firstClaim"], "firstClaim");
        let active = date(&w["lastDateActive"], "lastDateActive");
        let since = active.duration_since(first).unwrap();
        assert_eq!(
            since.as_millis() % 2000,
            0,
            "written every 2 s from the first sighting: {w}"
        );
        assert!(active <= SystemTime::now());
        assert!(
            asked.duration_since(active).unwrap_or_default() < Duration::from_millis(2500),
            "it lags by at most the period: {w}"
        );
        // Jobs go on between writes: the latest claim may be later.
        let latest = w["recentTasks"].as_array().unwrap().last().cloned();
        if let Some(t) = latest {
            let s = status(&lab, t["taskId"].as_str().unwrap());
            let run = &s["runs"][t["runId"].as_u64().unwrap() as usize];
            let started = date(&run["started"], "started");
            assert!(started >= first);
        }
        values.insert(active);
        values.len() >= 3
    });
}

#[test]
fn every_object_served_has_only_fields_the_real_api_has() {
    let dir = lab_dir();
    let lab = start(
        3,
        dir.path(),
        r#"
[defaults]
jobs_per_minute = 1200
job_reasons = { worker-shutdown = 0.2, canceled = 0.2, deadline-exceeded = 0.1, failed = 0.1 }
[taskcluster]
expired_workers = 2
"#,
    );
    lab.host("lab-0002")
        .unwrap()
        .quarantine(
            Some(SystemTime::now() + Duration::from_secs(600)),
            Some("checking"),
        )
        .unwrap();
    wait("twenty recent tasks on lab-0001", || {
        queue_worker(&lab, TALOS, "lab-0001")
            .is_some_and(|w| w["recentTasks"].as_array().unwrap().len() == 20)
    });
    // Every checker runs on what these return (they panic on any key the
    // schemas above lack).
    for q in ["", "?quarantined=true", "?quarantined=false", "?limit=1"] {
        queue_workers(&lab, TALOS, q);
    }
    for short in ["lab-0001", "lab-0002", "lab-0003"] {
        let w = queue_worker(&lab, TALOS, short).unwrap();
        for t in w["recentTasks"].as_array().unwrap() {
            status(&lab, t["taskId"].as_str().unwrap());
        }
        wm_worker(&lab, TALOS, short).unwrap();
    }
    for q in ["", "?quarantined=true", "?limit=2"] {
        let (code, body) = get(
            &lab,
            &format!(
                "api/worker-manager/v1/provisioners/releng-hardware/worker-types/gecko-t-linux-talos/workers{q}"
            ),
        );
        assert_eq!(code, 200);
        check_wm_list(&body);
    }
    let (code, body) = get(
        &lab,
        "api/worker-manager/v1/provisioners/releng-hardware/worker-types/gecko-t-linux-talos/workers?workerState=running",
    );
    assert_eq!(code, 200);
    assert_eq!(body, json!({"workers": []}), "no managed state to match");
    let quarantined = wm_worker(&lab, TALOS, "lab-0002").unwrap();
    assert_eq!(
        quarantined["quarantineDetails"][0]["quarantineInfo"],
        "checking"
    );
}
