//! The host index against a real nats-server that stops answering a while:
//! it keeps applying the buckets' changes instead of serving what it had
//! when its watch broke.

use std::time::{Duration, Instant};

use fleetroll_bus::codec;
use fleetroll_bus::connect::{Bus, ConnectOptions};
use fleetroll_bus::embedded::{EmbeddedOptions, EmbeddedServer};
use fleetroll_bus::host_index::HostIndex;
use fleetroll_bus::messages::host::Observation;
use fleetroll_bus::setup::{self, Replicas};
use fleetroll_bus::token::Role;
use fleetroll_bus::topology;
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
                .map_err(|e| fleetroll_bus::connect::BusError::js("put", e))
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

#[tokio::test(flavor = "multi_thread")]
async fn the_host_index_keeps_up_after_its_watch_breaks() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let url = server.url().to_string();
    let mut options = ConnectOptions::new(&url, "host-index-test")
        .credentials(server.credentials(Role::Worker).clone());
    options.wait_for_server = true;
    let bus = Bus::connect(options).await.unwrap();
    setup::ensure(&bus, Replicas(1)).await.unwrap();
    let index = HostIndex::start(bus.clone());
    put(&bus, "before.example.com").await;
    wait_for(&index, "before.example.com", Duration::from_secs(10))
        .await
        .unwrap();

    // A server that stops answering for a while (as a node the cluster
    // loses does): the watches miss their heartbeats and break.
    let pid = server.pid().unwrap().to_string();
    let signal = |sig: &str| {
        let sent = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    signal("-STOP");
    tokio::time::sleep(Duration::from_secs(15)).await;
    signal("-CONT");
    put(&bus, "after.example.com").await;
    wait_for(&index, "after.example.com", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(matches!(index.get("before.example.com").await, Ok(Some(_))));
}
