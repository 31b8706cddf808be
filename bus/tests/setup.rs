//! `setup::ensure` on a mesh an older version set up: what exists is kept,
//! but the consumers take the settings this version relies on.

use std::time::Duration;

use fleetroll_bus::WorkerKind;
use fleetroll_bus::embedded::{EmbeddedServer, NatsUser};
use fleetroll_bus::setup::{self, Replicas};
use fleetroll_bus::topology;

#[tokio::test(flavor = "multi_thread")]
async fn ensure_brings_an_older_meshs_consumers_up_to_date() {
    let dir = tempfile::tempdir().unwrap();
    let (server, bus) = EmbeddedServer::with_mesh(dir.path())
        .await
        .expect("nats-server (run `make setup`)");

    // What an older version left: a 10 s ack_wait, so a dead replica's
    // command waited 10 s for another, and no end to redeliveries, so a
    // message no worker could handle came back forever.
    let commands = bus.js.get_stream(topology::COMMANDS.name).await.unwrap();
    let old = Duration::from_secs(10);
    let mut config = setup::worker_consumer_config(WorkerKind::Orchestrator);
    config.ack_wait = old;
    config.max_deliver = -1;
    config.backoff = Vec::new();
    commands.update_consumer(config).await.unwrap();
    let probes = bus
        .js
        .get_stream(topology::PROBE_QUEUE.stream.name)
        .await
        .unwrap();
    let mut config = setup::job_consumer_config(&topology::PROBE_QUEUE);
    config.ack_wait = old;
    config.max_deliver = -1;
    config.backoff = Vec::new();
    probes.update_consumer(config).await.unwrap();

    let admin = server.connect(NatsUser::Admin).await.unwrap();
    setup::ensure(&admin, Replicas(1), Default::default())
        .await
        .unwrap();
    let name = topology::consumer_name(WorkerKind::Orchestrator);
    let mut worker = commands
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&name)
        .await
        .unwrap();
    let config = worker.info().await.unwrap().config.clone();
    assert_eq!(config.ack_wait, topology::TAKEOVER_WAIT);
    assert_eq!(config.max_deliver, topology::MAX_DELIVER);
    assert_eq!(config.backoff, topology::REDELIVERY_BACKOFF);
    let mut queue = probes
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>(
            topology::PROBE_QUEUE.consumer,
        )
        .await
        .unwrap();
    let config = queue.info().await.unwrap().config.clone();
    assert_eq!(config.ack_wait, topology::TAKEOVER_WAIT);
    assert_eq!(config.max_deliver, topology::MAX_DELIVER);
    assert_eq!(config.backoff, topology::REDELIVERY_BACKOFF);
}
