//! A real nats-server in trouble: one that stops answering a while (as a
//! node a cluster loses does), and one that lacks the buckets.

use std::time::{Duration, Instant};

use fleetroll_bus::codec;
use fleetroll_bus::connect::{Bus, BusError, ConnectOptions};
use fleetroll_bus::embedded::{EmbeddedOptions, EmbeddedServer, NatsUser};
use fleetroll_bus::host_index::HostIndex;
use fleetroll_bus::messages::host::Observation;
use fleetroll_bus::setup::{self, Replicas};
use fleetroll_bus::token::Role;
use fleetroll_bus::{subjects, topology};
use time::OffsetDateTime;

async fn start(dir: &std::path::Path) -> EmbeddedServer {
    EmbeddedServer::start(&EmbeddedOptions {
        data_dir: dir.to_path_buf(),
        port: 0,
        nats_server: None,
    })
    .await
    .expect("nats-server (run `make setup`)")
}

/// Writes a host's record, retrying while the server recovers.
async fn put(bus: &Bus, hostname: &str) {
    let record = Observation::discovered(hostname, OffsetDateTime::now_utc());
    let began = Instant::now();
    loop {
        let put = async {
            bus.kv(&topology::HOSTS)
                .await?
                .put(hostname, codec::to_cbor(&record).into())
                .await
                .map_err(|e| BusError::js("put", e))
        };
        match put.await {
            Ok(_) => return,
            Err(e) => assert!(began.elapsed() < Duration::from_secs(30), "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_for(index: &HostIndex, hostname: &str, limit: Duration) -> Result<(), String> {
    let began = Instant::now();
    loop {
        let got = index.get(hostname).await;
        if matches!(got, Ok(Some(_))) {
            return Ok(());
        }
        if began.elapsed() > limit {
            return Err(format!(
                "{hostname} not in the index after {limit:?}: {got:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The set-up, as its admin NATS user.
async fn set_up(server: &EmbeddedServer) {
    let admin = server.connect(NatsUser::Admin).await.unwrap();
    setup::ensure(&admin, Replicas(1), Default::default())
        .await
        .unwrap();
}

async fn connect(server: &EmbeddedServer) -> Bus {
    let mut options = ConnectOptions::new(server.url(), "server-trouble-test")
        .credentials(server.credentials(Role::Worker).clone());
    options.wait_for_server = true;
    Bus::connect(options).await.unwrap()
}

/// Stops the server answering (SIGSTOP) for `pause`, then lets it go on.
async fn freeze(server: &EmbeddedServer, pause: Duration) {
    let pid = server.pid().unwrap().to_string();
    let signal = |sig: &str| {
        let sent = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    signal("-STOP");
    tokio::time::sleep(pause).await;
    signal("-CONT");
}

/// The index keeps applying the buckets' changes after its watches miss
/// their heartbeats, instead of serving what it had when they broke.
#[tokio::test(flavor = "multi_thread")]
async fn the_host_index_keeps_up_after_its_watch_breaks() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let bus = connect(&server).await;
    set_up(&server).await;
    let index = HostIndex::start(bus.clone());
    put(&bus, "before.example.com").await;
    wait_for(&index, "before.example.com", Duration::from_secs(10))
        .await
        .unwrap();

    freeze(&server, Duration::from_secs(15)).await;
    put(&bus, "after.example.com").await;
    wait_for(&index, "after.example.com", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(matches!(index.get("before.example.com").await, Ok(Some(_))));
}

/// "Missing" is what the server says, not what a timeout suggests.
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_bucket_is_named_and_a_silent_server_is_no_missing_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let bus = connect(&server).await;
    let missing = bus.kv(&topology::HOSTS).await.unwrap_err();
    assert!(
        matches!(missing, BusError::MissingBucket { bucket } if bucket == topology::HOSTS.name),
        "{missing}"
    );
    set_up(&server).await;
    let fresh = connect(&server).await;
    let (_, opened) = tokio::join!(freeze(&server, Duration::from_secs(14)), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        fresh.kv(&topology::HOSTS).await
    });
    let silent = opened.unwrap_err();
    assert!(
        !matches!(silent, BusError::MissingBucket { .. }),
        "{silent}"
    );
}

/// A worker serving a job queue goes on taking jobs after the server stops
/// answering a while: one published after the pause is still run.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_queue_is_served_again_after_the_server_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let bus = connect(&server).await;
    set_up(&server).await;
    let (ran, mut runs) = tokio::sync::mpsc::unbounded_channel();
    let serving = tokio::spawn({
        let bus = bus.clone();
        async move {
            fleetroll_bus::worker::serve_queue(&bus, &topology::PROBE_QUEUE, 4, |message| {
                let ran = ran.clone();
                async move {
                    let _ = message.double_ack().await;
                    let _ = ran.send(message.subject.to_string());
                }
            })
            .await
        }
    });
    let publish = |hostname: &'static str| {
        let bus = bus.clone();
        async move {
            let began = Instant::now();
            loop {
                let sent = async {
                    bus.js
                        .publish(subjects::probe_job(hostname), "job".into())
                        .await?
                        .await
                };
                match sent.await {
                    Ok(_) => return,
                    Err(e) => assert!(began.elapsed() < Duration::from_secs(30), "{e}"),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    publish("before.example.com").await;
    assert_eq!(
        next_run(&mut runs).await,
        subjects::probe_job("before.example.com")
    );
    freeze(&server, Duration::from_secs(15)).await;
    publish("after.example.com").await;
    assert_eq!(
        next_run(&mut runs).await,
        subjects::probe_job("after.example.com")
    );
    assert!(!serving.is_finished(), "{:?}", serving.await);
}

async fn next_run(runs: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(30), runs.recv())
        .await
        .expect("a job run within 30 s")
        .unwrap()
}
