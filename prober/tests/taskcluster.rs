//! The Taskcluster client against the lab's double: every answer the
//! double gives is exactly a shape the client declares from Taskcluster's
//! schemas (no field it does not model), pools are read whole through
//! short pages and a failing load balancer, and quarantines are Hawk-signed
//! and refused without credentials.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use fleetroll_lab::{Lab, LabConfig, Scenario};
use fleetroll_prober::workload::taskcluster::shapes::{
    self, ManagerWorker, ManagerWorkerList, QueueWorker, QueueWorkerList, TaskStatusResponse,
};
use fleetroll_prober::workload::{
    ClientConfig, ClientCredentials, SourceError, Taskcluster, WorkerRef, WorkloadSource,
};
use serde_json::Value;
use time::OffsetDateTime;

const SCENARIO: &str = r#"
[defaults]
role = "gecko_t_linux_talos"
jobs_per_minute = 600
job_reasons = { canceled = 0.15, superseded = 0.1, claim-expired = 0.05, intermittent-task = 0.05 }
[taskcluster]
max_page_size = 2
expired_workers = 3
[[hosts]]
names = ["lab-0002", "lab-0003"]
role = "gecko_t_linux_2404_talos"
[[hosts]]
names = ["lab-0004"]
override = "PUPPET_BRANCH=x\nWORKER_TYPE_OVERRIDE='gecko-t-linux-talos-1804-staging'\n"
"#;

fn lab_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("fleetroll-prober-tc-")
        .tempdir_in("/tmp")
        .unwrap()
}

fn start(hosts: usize, dir: &std::path::Path, scenario: &str) -> Lab {
    let scenario = Scenario::parse(scenario, false).unwrap();
    Lab::start(LabConfig::new(hosts, dir).scenario(scenario)).unwrap()
}

fn client(lab: &Lab, credentials: Option<ClientCredentials>) -> Taskcluster {
    Taskcluster::new(&ClientConfig {
        root_url: lab.taskcluster_url().to_string(),
        credentials,
        timeout: Duration::from_secs(10),
    })
    .unwrap()
}

fn lab_credentials(lab: &Lab) -> ClientCredentials {
    let c = lab.taskcluster_client();
    ClientCredentials {
        client_id: c.client_id.clone(),
        access_token: c.access_token.clone(),
        certificate: None,
    }
}

/// GETs a JSON answer the way a plain client would: no retries.
fn get(url: &str) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut response = agent.get(url).call().unwrap();
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Every page of a worker listing (`.../workers`), as served.
fn pages(url: &str) -> Vec<Value> {
    let mut pages = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page_url = match &token {
            Some(t) => format!("{url}?continuationToken={t}"),
            None => url.to_string(),
        };
        let (status, page) = get(&page_url);
        assert_eq!(status, 200, "{page}");
        token = page["continuationToken"].as_str().map(str::to_string);
        pages.push(page);
        if token.is_none() {
            return pages;
        }
    }
}

/// The URL of a listed worker's own record.
fn worker_url(list_url: &str, w: &Value) -> String {
    format!(
        "{list_url}/{}/{}",
        w["workerGroup"].as_str().unwrap(),
        w["workerId"].as_str().unwrap()
    )
}

/// Asserts `value` reads as `T` with no field `T` does not model.
fn exactly<T: serde::de::DeserializeOwned>(what: &str, value: Value) {
    let unmodelled = shapes::unmodelled::<T>(value.clone())
        .unwrap_or_else(|e| panic!("{what} does not read as the schema says: {e}\n{value:#}"));
    assert!(
        unmodelled.is_empty(),
        "{what} carries fields the schema does not allow: {unmodelled:?}\n{value:#}"
    );
}

fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn every_answer_of_the_double_is_a_shape_the_client_declares() {
    let dir = lab_dir();
    let lab = start(5, dir.path(), SCENARIO);
    let tc = lab.taskcluster_url().trim_end_matches('/').to_string();
    lab.host("lab-0005")
        .unwrap()
        .quarantine(
            Some(SystemTime::now() + Duration::from_secs(3600)),
            Some("disk errors"),
        )
        .unwrap();
    let pools: BTreeSet<String> = lab
        .hosts()
        .iter()
        .filter_map(|h| lab.host(&h.hostname).unwrap().worker_pool())
        .collect();
    assert!(pools.contains("releng-hardware/gecko-t-linux-talos-1804-staging"));

    // Enough runs that retries, exceptions and several runs of one task
    // are among them.
    let mut statuses: Vec<Value> = Vec::new();
    wait_until("tasks with several runs", Duration::from_secs(60), || {
        statuses.clear();
        for pool in &pools {
            let (p, t) = pool.split_once('/').unwrap();
            let url = format!("{tc}/api/queue/v1/provisioners/{p}/worker-types/{t}/workers");
            for page in pages(&url) {
                for w in page["workers"].as_array().unwrap() {
                    let (status, detail) = get(&worker_url(&url, w));
                    assert_eq!(status, 200, "{detail}");
                    for task in detail["recentTasks"].as_array().unwrap() {
                        let id = task["taskId"].as_str().unwrap();
                        let (status, s) = get(&format!("{tc}/api/queue/v1/task/{id}/status"));
                        assert_eq!(status, 200, "{s}");
                        statuses.push(s);
                    }
                }
            }
        }
        let reasons: BTreeSet<&str> = statuses
            .iter()
            .flat_map(|s| s["status"]["runs"].as_array().unwrap())
            .filter_map(|r| r["reasonResolved"].as_str())
            .collect();
        statuses
            .iter()
            .any(|s| s["status"]["runs"].as_array().unwrap().len() > 1)
            && ["completed", "canceled", "superseded", "claim-expired"]
                .iter()
                .all(|r| reasons.contains(r))
    });
    for s in &statuses {
        exactly::<TaskStatusResponse>("task status", s.clone());
    }

    let mut page_count = 0;
    let mut short_pages = 0;
    for pool in &pools {
        let (p, t) = pool.split_once('/').unwrap();
        for service in ["queue", "worker-manager"] {
            let url = format!("{tc}/api/{service}/v1/provisioners/{p}/worker-types/{t}/workers");
            for page in pages(&url) {
                page_count += 1;
                let workers = page["workers"].as_array().unwrap().clone();
                short_pages +=
                    usize::from(workers.len() < 2 && page["continuationToken"].is_string());
                match service {
                    "queue" => exactly::<QueueWorkerList>("queue listWorkers", page),
                    _ => exactly::<ManagerWorkerList>("worker-manager listWorkers", page),
                }
                for w in &workers {
                    let (status, detail) = get(&worker_url(&url, w));
                    if service == "queue" {
                        assert_eq!(status, 200, "{detail}");
                        exactly::<QueueWorker>("queue getWorker", detail);
                    } else if status == 200 {
                        exactly::<ManagerWorker>("worker-manager getWorker", detail);
                    }
                }
            }
        }
    }
    assert!(
        page_count > pools.len() * 2,
        "every pool took several pages"
    );
    assert!(short_pages > 0, "expired workers made some pages short");

    // The quarantine's own answer, signed as the client signs it.
    let signed = taskcluster::Queue::new(taskcluster::ClientBuilder::new(tc.as_str()).credentials(
        taskcluster::Credentials::new(
            lab.taskcluster_client().client_id.clone(),
            lab.taskcluster_client().access_token.clone(),
        ),
    ))
    .unwrap();
    let until = OffsetDateTime::now_utc() + time::Duration::hours(2);
    let answer = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(signed.quarantineWorker(
            "releng-hardware",
            "gecko-t-linux-talos-1804",
            &lab.info().taskcluster_worker_group,
            "lab-0001",
            &serde_json::json!({
                "quarantineUntil": until.format(&time::format_description::well_known::Rfc3339).unwrap(),
                "quarantineInfo": "contract test",
            }),
        ))
        .unwrap();
    exactly::<QueueWorker>("queue quarantineWorker", answer);
}

#[tokio::test(flavor = "multi_thread")]
async fn pools_are_read_whole_through_short_pages_and_a_failing_load_balancer() {
    let dir = lab_dir();
    let lab = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || start(7, &dir, SCENARIO)
    })
    .await
    .unwrap();
    lab.set_taskcluster_fail_rate(0.2).unwrap();
    // A plain client meets the failures...
    let tc = lab.taskcluster_url().trim_end_matches('/').to_string();
    let url = format!(
        "{tc}/api/queue/v1/provisioners/releng-hardware/worker-types/gecko-t-linux-talos-1804/workers"
    );
    let failed =
        tokio::task::spawn_blocking(move || (0..100).filter(|_| get(&url).0 == 502).count())
            .await
            .unwrap();
    assert!((5..=45).contains(&failed), "{failed} of 100 answered 502");

    // ...which the client's retries ride out, every page of every pool.
    let source = client(&lab, None);
    let expected = |pool: &str| -> BTreeSet<String> {
        lab.hosts()
            .iter()
            .filter(|h| lab.host(&h.hostname).unwrap().worker_pool().as_deref() == Some(pool))
            .map(|h| h.short_name.clone())
            .collect()
    };
    for _ in 0..5 {
        for pool in [
            "releng-hardware/gecko-t-linux-talos-1804",
            "releng-hardware/gecko-t-linux-talos-2404",
            "releng-hardware/gecko-t-linux-talos-1804-staging",
        ] {
            let workers = source.workers(pool).await.unwrap();
            let ids: BTreeSet<String> = workers.iter().map(|w| w.worker_id.clone()).collect();
            // A host moved by its override still has its old row in the
            // old pool until that expires; the live ones are all there.
            assert!(ids.is_superset(&expected(pool)), "{pool}: {ids:?}");
            for w in &workers {
                assert_eq!(w.state.as_deref(), Some("standalone"), "{w:?}");
                assert_eq!(w.provider_id.as_deref(), Some("none"));
            }
        }
    }
    let unknown = source
        .workers("releng-hardware/gecko-t-linux-talos")
        .await
        .unwrap();
    assert!(unknown.is_empty(), "the old pool name lists nobody");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quarantine_is_signed_and_refused_without_credentials() {
    let dir = lab_dir();
    let lab = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || start(5, &dir, SCENARIO)
    })
    .await
    .unwrap();
    let worker = WorkerRef {
        pool: "releng-hardware/gecko-t-linux-talos-1804".into(),
        group: lab.info().taskcluster_worker_group.clone(),
        worker_id: "lab-0001".into(),
    };
    let until = OffsetDateTime::now_utc() + time::Duration::hours(3);

    let anonymous = client(&lab, None);
    assert!(matches!(
        anonymous.quarantine(&worker, until, "no").await,
        Err(SourceError::NoCredentials { .. })
    ));
    let mut forged = lab_credentials(&lab);
    forged.access_token = "not-the-token-not-the-token-not-the-token-x".into();
    assert!(matches!(
        client(&lab, Some(forged))
            .quarantine(&worker, until, "no")
            .await,
        Err(SourceError::NotAuthorized { .. })
    ));
    let pools = anonymous.workers(&worker.pool).await.unwrap();
    let listed = pools.iter().find(|w| w.worker_id == "lab-0001").unwrap();
    assert_eq!(listed.quarantined_until, None, "nothing got through");

    let signed = client(&lab, Some(lab_credentials(&lab)));
    let holds = signed
        .quarantine(&worker, until, "disk errors (by relops with fleetroll)")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(holds.unix_timestamp(), until.unix_timestamp());
    let listed = anonymous.workers(&worker.pool).await.unwrap();
    let listed = listed.iter().find(|w| w.worker_id == "lab-0001").unwrap();
    assert_eq!(
        listed.quarantined_until.map(|u| u.unix_timestamp()),
        Some(until.unix_timestamp())
    );
    let note = anonymous.quarantine_note(listed, until).await.unwrap();
    assert_eq!(
        note.by.as_deref(),
        Some(lab.taskcluster_client().client_id.as_str())
    );
    assert_eq!(
        note.reason.as_deref(),
        Some("disk errors (by relops with fleetroll)")
    );

    // Lifting it: the queue lists no quarantine any more.
    signed
        .quarantine(&worker, OffsetDateTime::now_utc(), "lifted")
        .await
        .unwrap();
    let listed = anonymous.workers(&worker.pool).await.unwrap();
    let listed = listed.iter().find(|w| w.worker_id == "lab-0001").unwrap();
    assert_eq!(listed.quarantined_until, None);
}
