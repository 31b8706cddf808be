//! Leases on a real nats-server: one holder at a time, a lapsed lease is
//! seen as lapsed (on the server's clock) and taken over once, and junk in
//! the bucket is an error, never a free lease.

use std::time::Duration;

use fleetroll_bus::embedded::EmbeddedServer;
use fleetroll_bus::lease::{self, Claim};
use fleetroll_bus::topology;

#[tokio::test(flavor = "multi_thread")]
async fn one_holder_until_it_lapses_then_one_taker() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, bus) = EmbeddedServer::with_mesh(dir.path())
        .await
        .expect("nats-server (run `make setup`)");
    let key = topology::host_lease_key("h1.example.com");
    let ttl = Duration::from_millis(1500);

    let Claim::Taken(mut ours) = lease::claim(&bus, &key, "a", ttl).await.unwrap() else {
        panic!("a free lease is taken");
    };
    match lease::claim(&bus, &key, "b", ttl).await.unwrap() {
        Claim::Held { holder, .. } => assert_eq!(holder, "a"),
        other => panic!("held by a: {other:?}"),
    }
    lease::renew(&bus, &mut ours, "a", ttl).await.unwrap();

    // a stops renewing: once its time is up, b sees it lapsed, and of two
    // takers only one gets it.
    let revision = loop {
        match lease::claim(&bus, &key, "b", ttl).await.unwrap() {
            Claim::Lapsed {
                holder, revision, ..
            } => {
                assert_eq!(holder, "a");
                break revision;
            }
            Claim::Held { .. } => tokio::time::sleep(Duration::from_millis(200)).await,
            Claim::Taken(_) => panic!("a lapsed lease is not free"),
        }
    };
    let b = lease::take_over(&bus, &key, revision, "b", ttl)
        .await
        .unwrap();
    let c = lease::take_over(&bus, &key, revision, "c", ttl)
        .await
        .unwrap();
    assert!(b.is_some() && c.is_none(), "{b:?} {c:?}");
    assert!(
        lease::renew(&bus, &mut ours, "a", ttl).await.is_err(),
        "a's lease is b's now"
    );

    lease::release(&bus, b.unwrap()).await.unwrap();
    assert!(matches!(
        lease::claim(&bus, &key, "d", ttl).await.unwrap(),
        Claim::Taken(_)
    ));

    bus.kv(&topology::LEASES)
        .await
        .unwrap()
        .put("host.junk", b"\xff".to_vec().into())
        .await
        .unwrap();
    assert!(lease::claim(&bus, "host.junk", "e", ttl).await.is_err());
}
