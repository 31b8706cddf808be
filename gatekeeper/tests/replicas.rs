//! Gatekeeper replicas share one drift bucket: what a replica compares its
//! verdict with is the bucket's, whichever replica wrote it, not the last
//! verdict it wrote itself.

use std::time::{Duration, Instant};

use fleetroll_bus::codec;
use fleetroll_bus::connect::Bus;
use fleetroll_bus::embedded::EmbeddedServer;
use fleetroll_bus::messages::host::{Drift, DriftType, Observation};
use fleetroll_bus::topology;
use time::OffsetDateTime;

const HOST: &str = "watched.example.com";

/// The host's verdict once it is `types`; fails after `limit`.
async fn wait_for_verdict(bus: &Bus, types: &[DriftType], limit: Duration) {
    let drift = bus.kv(&topology::DRIFT).await.unwrap();
    let start = Instant::now();
    loop {
        let verdict = drift.get(HOST).await.unwrap();
        if let Some(bytes) = &verdict
            && codec::from_cbor::<Drift>(bytes).unwrap().types == types
        {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "the verdict of {HOST} never became {types:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_verdict_another_replica_left_behind_is_put_right() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, bus) = EmbeddedServer::with_mesh(dir.path())
        .await
        .expect("nats-server (run `make setup`)");
    let mut observation = Observation::discovered(HOST, OffsetDateTime::now_utc());
    observation.override_present = Some(false);
    bus.kv(&topology::HOSTS)
        .await
        .unwrap()
        .put(HOST, codec::to_cbor(&observation).into())
        .await
        .unwrap();
    let gatekeeper = tokio::spawn(fleetroll_gatekeeper::run(
        bus.clone(),
        Default::default(),
        false,
        std::future::pending::<()>(),
    ));
    wait_for_verdict(&bus, &[], Duration::from_secs(30)).await;

    // Another replica's verdict on an observation since replaced: it died
    // before it judged the one there now.
    let stale = Drift {
        types: vec![DriftType::Override],
        healthy: None,
        computed_at: OffsetDateTime::now_utc(),
    };
    bus.kv(&topology::DRIFT)
        .await
        .unwrap()
        .put(HOST, codec::to_cbor(&stale).into())
        .await
        .unwrap();
    wait_for_verdict(&bus, &[], Duration::from_secs(30)).await;
    gatekeeper.abort();
}
