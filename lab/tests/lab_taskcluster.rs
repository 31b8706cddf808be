//! The Taskcluster double: worker listings and task results that follow
//! what Puppet applied on each host, reboots and quarantine.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use fleetroll_lab::Lab;
use serde_json::Value;

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

fn parse_date(s: &str) -> SystemTime {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{s:?} is not a date: {e}"));
    SystemTime::from(t)
}

fn queue(lab: &Lab, path: &str) -> (u16, Value) {
    http_get(&format!("{}/api/queue/v1/{path}", lab.taskcluster_url()))
}

fn worker(lab: &Lab, short: &str) -> Value {
    let (status, body) = queue(
        lab,
        &format!(
            "provisioners/releng-hardware/worker-types/gecko-t-linux-talos/workers/mdc1/{short}"
        ),
    );
    assert_eq!(status, 200, "{body}");
    body
}

/// (started, state) of a worker's recent tasks, oldest first.
fn recent_results(lab: &Lab, short: &str) -> Vec<(SystemTime, String)> {
    let w = worker(lab, short);
    w["recentTasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let id = t["taskId"].as_str().unwrap();
            let (status, body) = queue(lab, &format!("task/{id}/status"));
            assert_eq!(status, 200, "{body}");
            let s = &body["status"];
            assert_eq!(s["taskId"], id);
            assert_eq!(s["runs"][0]["workerId"], short);
            assert_eq!(s["runs"][0]["workerGroup"], "mdc1");
            assert_eq!(s["taskQueueId"], "releng-hardware/gecko-t-linux-talos");
            (
                parse_date(s["runs"][0]["started"].as_str().unwrap()),
                s["state"].as_str().unwrap().to_string(),
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

/// Results of tasks started after `t` and resolved (not running).
fn resolved_after(lab: &Lab, short: &str, t: SystemTime) -> Vec<String> {
    recent_results(lab, short)
        .into_iter()
        .filter(|(started, state)| *started > t && state != "running")
        .map(|(_, s)| s)
        .collect()
}

#[test]
fn job_results_follow_the_applied_branch() {
    let dir = lab_dir();
    let lab = start(4, dir.path(), SCENARIO);
    wait("ten jobs on lab-0002", || {
        recent_results(&lab, "lab-0002").len() >= 10
    });

    // The queue's worker listing for the role's pool.
    let (status, list) = queue(
        &lab,
        "provisioners/releng-hardware/worker-types/gecko-t-linux-talos/workers",
    );
    assert_eq!(status, 200);
    let workers = list["workers"].as_array().unwrap();
    let ids: Vec<&str> = workers
        .iter()
        .map(|w| w["workerId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["lab-0001", "lab-0002", "lab-0003"]);
    for w in workers {
        assert_eq!(w["workerGroup"], "mdc1");
        assert!(w["latestTask"]["taskId"].as_str().unwrap().len() == 22);
        assert_eq!(w["latestTask"]["runId"], 0);
        parse_date(w["firstClaim"].as_str().unwrap());
        let active = parse_date(w["lastDateActive"].as_str().unwrap());
        assert!(SystemTime::now().duration_since(active).unwrap() < Duration::from_secs(2));
        assert!(w.get("quarantineUntil").is_none());
    }
    // Pagination.
    let (_, page) = queue(
        &lab,
        "provisioners/releng-hardware/worker-types/gecko-t-linux-talos/workers?limit=2",
    );
    assert_eq!(page["workers"].as_array().unwrap().len(), 2);
    let token = page["continuationToken"].as_str().unwrap();
    let (_, rest) = queue(
        &lab,
        &format!(
            "provisioners/releng-hardware/worker-types/gecko-t-linux-talos/workers?limit=2&continuationToken={token}"
        ),
    );
    assert_eq!(rest["workers"][0]["workerId"], "lab-0003");
    assert!(rest.get("continuationToken").is_none());

    // Healthy so far.
    let results = recent_results(&lab, "lab-0002");
    assert!(results.len() >= 10, "{results:?}");
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
    // The neighbour is unaffected.
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
    assert!(
        !again.is_empty() && again.iter().all(|s| s == "completed"),
        "{again:?}"
    );

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
    assert!(
        !broken.is_empty() && broken.iter().all(|s| s == "failed"),
        "{broken:?}"
    );

    // Marking a branch bad at run time affects jobs from then on.
    lab.set_branch_bad("master", true);
    let marked = SystemTime::now();
    wait("a job since master went bad", || {
        !resolved_after(&lab, "lab-0001", marked).is_empty()
    });
    let now_bad = resolved_after(&lab, "lab-0001", marked);
    assert!(
        !now_bad.is_empty() && now_bad.iter().all(|s| s == "failed"),
        "{now_bad:?}"
    );
}

#[test]
fn reboots_and_quarantine_stop_jobs() {
    let dir = lab_dir();
    let lab = start(4, dir.path(), SCENARIO);
    // A task running on lab-0001, for the reboot to cut short.
    wait("a task running on lab-0001", || {
        recent_results(&lab, "lab-0001")
            .last()
            .is_some_and(|(_, state)| state == "running")
    });
    let h1 = lab.hosts()[0].hostname.clone();
    let host = lab.host(&h1).unwrap();

    host.reboot().unwrap();
    let rebooted = SystemTime::now();
    wait("lab-0001 stopped", || {
        worker(&lab, "lab-0001")["state"] == "stopped"
    });
    // The task running at the reboot ended in exception; none started since.
    let results = recent_results(&lab, "lab-0001");
    assert!(
        results.iter().all(|(started, _)| *started <= rebooted),
        "{results:?}"
    );
    assert_eq!(results.last().unwrap().1, "exception", "{results:?}");
    let (_, wm) = http_get(&format!(
        "{}/api/worker-manager/v1/workers/releng-hardware%2Fgecko-t-linux-talos:/mdc1/lab-0001",
        lab.taskcluster_url()
    ));
    assert_eq!(wm["state"], "stopped");

    host.wait_reachable(Duration::from_secs(20)).unwrap();
    wait("lab-0001 running again", || {
        worker(&lab, "lab-0001")["state"] == "running"
            && recent_results(&lab, "lab-0001")
                .iter()
                .any(|(started, _)| *started > rebooted)
    });
    let back = recent_results(&lab, "lab-0001");
    assert!(back.iter().any(|(started, _)| {
        started
            .duration_since(rebooted)
            .is_ok_and(|d| d >= Duration::from_secs(2))
    }));

    // Quarantine: listed as quarantined, no new jobs.
    let h2 = lab.hosts()[1].hostname.clone();
    let until = SystemTime::now() + Duration::from_secs(3600);
    lab.host(&h2).unwrap().set_quarantine(Some(until));
    let q = SystemTime::now();
    wait("lab-0002 listed quarantined", || {
        let (_, list) = queue(
            &lab,
            "provisioners/releng-hardware/worker-types/gecko-t-linux-talos/workers?quarantined=true",
        );
        list["workers"].as_array().is_some_and(|w| !w.is_empty())
    });
    let (_, list) = queue(
        &lab,
        "provisioners/releng-hardware/worker-types/gecko-t-linux-talos/workers?quarantined=true",
    );
    let ids: Vec<&str> = list["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["workerId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["lab-0002"]);
    assert!(list["workers"][0]["quarantineUntil"].is_string());
    assert!(
        recent_results(&lab, "lab-0002")
            .iter()
            .all(|(s, _)| *s <= q)
    );
}

#[test]
fn worker_manager_lists_pools_and_unknowns_are_404() {
    let dir = lab_dir();
    let lab = start(4, dir.path(), SCENARIO);
    let url = lab.taskcluster_url();
    let (status, body) = http_get(&format!(
        "{url}/api/worker-manager/v1/workers/releng-hardware/other-pool"
    ));
    assert_eq!(status, 200);
    let workers = body["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 1);
    let w = &workers[0];
    assert_eq!(w["workerPoolId"], "releng-hardware/other-pool");
    assert_eq!(w["workerId"], "lab-0004");
    assert_eq!(w["workerGroup"], "mdc1");
    assert_eq!(w["state"], "running");
    assert_eq!(w["capacity"], 1);
    for key in [
        "providerId",
        "created",
        "expires",
        "lastModified",
        "lastChecked",
    ] {
        assert!(w[key].is_string(), "{key} in {w}");
    }
    // Same pool, URL-encoded as Taskcluster clients send it.
    let (status, enc) = http_get(&format!(
        "{url}/api/worker-manager/v1/workers/releng-hardware%2Fother-pool"
    ));
    assert_eq!(status, 200);
    assert_eq!(enc["workers"][0]["workerId"], "lab-0004");

    let (status, body) = http_get(&format!(
        "{url}/api/worker-manager/v1/workers/releng-hardware/nope"
    ));
    assert_eq!(status, 404);
    assert_eq!(body["code"], "ResourceNotFound");
    let (status, _) = http_get(&format!(
        "{url}/api/queue/v1/task/fNvfdGJxRGeKm1Ug_IQ4rw/status"
    ));
    assert_eq!(status, 404);
    let (status, _) = http_get(&format!(
        "{url}/api/queue/v1/provisioners/releng-hardware/worker-types/gecko-t-linux-talos/workers/mdc1/lab-0004"
    ));
    assert_eq!(status, 404, "lab-0004 is in another pool");
    let (status, body) = http_get(&format!(
        "{url}/api/queue/v1/provisioners/releng-hardware/worker-types/gecko-t-linux-talos/workers?quarantined=maybe"
    ));
    assert_eq!(status, 400, "{body}");
}
