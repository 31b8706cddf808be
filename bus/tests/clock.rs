use fleetroll_bus::connect::{Bus, ConnectOptions};
use fleetroll_bus::embedded::{EmbeddedOptions, EmbeddedServer};

#[tokio::test]
async fn skew_against_a_real_server_is_small() {
    let dir = tempfile::tempdir().unwrap();
    let server = EmbeddedServer::start(&EmbeddedOptions {
        data_dir: dir.path().into(),
        port: 0,
        nats_server: None,
    })
    .await
    .unwrap();
    let bus = Bus::connect(ConnectOptions::new(server.url(), "test"))
        .await
        .unwrap();
    fleetroll_bus::setup::ensure(&bus, Default::default())
        .await
        .unwrap();
    let skew = fleetroll_bus::clock::measure_skew_ms(&bus).await;
    println!("{skew:?}");
    server.stop().await;
}
