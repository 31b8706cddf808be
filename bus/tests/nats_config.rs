//! The server configurations in `nats-config/` are valid, and the 3-node
//! cluster forms and keeps three replicas of every stream and bucket.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fleetroll_bus::connect::{Bus, ConnectOptions};
use fleetroll_bus::embedded::find_nats_server;
use fleetroll_bus::setup::{self, Replicas};
use fleetroll_bus::topology;

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../nats-config")
}

fn nats_server(config: &Path, store: &Path) -> Command {
    let mut command = Command::new(find_nats_server(None).expect("nats-server (run `make setup`)"));
    command
        .arg("-c")
        .arg(config)
        .env("FLEETROLL_NATS_STORE", store)
        .env("FLEETROLL_NATS_HOST", "127.0.0.1")
        .env("FLEETROLL_NATS_PORT", "14222");
    for role in ["RELOPS", "READONLY", "CHATOPS", "WORKER"] {
        command.env(
            format!("FLEETROLL_{role}_PASSWORD"),
            format!("{role}-secret"),
        );
    }
    command
}

#[test]
fn every_config_is_valid() {
    let store = tempfile::tempdir().unwrap();
    let dir = config_dir();
    // permissions.conf is a fragment: check it inside the single-node config.
    let with_permissions = store.path().join("single-with-permissions.conf");
    let single = std::fs::read_to_string(dir.join("single.conf")).unwrap();
    std::fs::copy(
        dir.join("permissions.conf"),
        store.path().join("permissions.conf"),
    )
    .unwrap();
    std::fs::write(&with_permissions, single + "include ./permissions.conf\n").unwrap();
    let mut configs = vec![with_permissions];
    for name in ["single.conf", "node-1.conf", "node-2.conf", "node-3.conf"] {
        configs.push(dir.join(name));
    }
    for config in configs {
        let output = nats_server(&config, store.path())
            .arg("-t")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}: {}",
            config.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_three_node_cluster_keeps_three_replicas() {
    let store = tempfile::tempdir().unwrap();
    let _nodes: Vec<Node> = (1..=3)
        .map(|n| {
            let config = config_dir().join(format!("node-{n}.conf"));
            Node(
                nats_server(&config, &store.path().join(format!("n{n}")))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    let mut options = ConnectOptions::new(
        "nats://127.0.0.1:4231,nats://127.0.0.1:4232,nats://127.0.0.1:4233",
        "test",
    );
    options.wait_for_server = true;
    let bus = Bus::connect(options).await.unwrap();
    // The cluster needs a meta leader before it takes R3 streams.
    let mut created = Err(None);
    for _ in 0..60 {
        match setup::ensure(&bus, Replicas(3)).await {
            Ok(()) => {
                created = Ok(());
                break;
            }
            Err(e) => created = Err(Some(e.to_string())),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    created.unwrap();
    for stream in topology::STREAMS
        .iter()
        .map(|s| s.name.to_string())
        .chain(topology::BUCKETS.iter().map(|b| format!("KV_{}", b.name)))
    {
        let info = bus
            .js
            .get_stream(&stream)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .clone();
        assert_eq!(info.config.num_replicas, 3, "{stream}");
        let cluster = info.cluster.expect("cluster info");
        assert_eq!(
            cluster.replicas.len(),
            2,
            "{stream}: a leader and two followers"
        );
    }
    // A second `ensure` with other settings leaves the cluster's streams alone.
    setup::ensure(&bus, Replicas(1)).await.unwrap();
    let info = bus
        .js
        .get_stream(topology::COMMANDS.name)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(info.config.num_replicas, 3);
}
