//! `fleetroll up`, `status`, `worker` and `ping` as real processes.

mod common;

use std::time::Duration;

use common::{Up, kill, wait_until};

fn nats_server_pids(data_dir: &std::path::Path) -> Vec<u32> {
    let config = data_dir.join("nats").join("server.conf");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("nats-server") && cmdline.contains(config.to_str().unwrap()) {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn up_runs_every_worker_kind_and_replicas_come_and_go() {
    let up = Up::start();
    let status = up.cli.run(&["status", "--json"]);
    assert_eq!(status.code, 0, "{status:?}");
    let json = status.json();
    assert_eq!(json["nats"]["reachable"], true);
    assert!(
        json["nats"]["version"].as_str().unwrap().starts_with("2."),
        "{json}"
    );
    let streams: Vec<&str> = json["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        streams,
        [
            "FLEETROLL_CMD",
            "FLEETROLL_EVT",
            "FLEETROLL_AUDIT",
            "FLEETROLL_REVOCATIONS",
            "FLEETROLL_SNAPSHOTS",
            "FLEETROLL_HOST_HISTORY",
            "FLEETROLL_PROBE_JOBS",
            "FLEETROLL_WORKLOAD_JOBS",
            "FLEETROLL_TASK_RUNS",
            "FLEETROLL_APPLY_JOBS",
            "FLEETROLL_SET_ASIDE"
        ]
    );
    assert!(
        json["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["exists"] == true),
        "{json}"
    );

    let ping = up.cli.run(&["ping", "--json"]);
    assert_eq!(ping.code, 0, "{ping:?}");
    let pongs = ping.json();
    assert_eq!(pongs.as_array().unwrap().len(), 4);
    assert!(
        pongs.as_array().unwrap().iter().all(|p| p["ok"] == true),
        "{pongs}"
    );

    // A second prober beside the mesh is a second replica...
    let mut cli = up.cli.clone();
    cli.nats_url = Some(up.url());
    let mut second = cli.spawn(&["worker", "prober"]);
    wait_until("a second prober replica", Duration::from_secs(30), || {
        up.cli.replicas_of("prober") == 2
    });
    // ...and once killed outright, it drops out of status within the liveness window.
    kill(&mut second, libc::SIGKILL);
    let _ = second.wait();
    wait_until(
        "the killed prober to disappear",
        Duration::from_secs(60),
        || up.cli.replicas_of("prober") == 1,
    );
    assert_eq!(up.cli.replicas_of("gatekeeper"), 1);
}

#[test]
fn up_keeps_its_data_across_restarts_and_refuses_a_taken_port() {
    let up = Up::start();
    let add = up
        .cli
        .run(&["inventory", "seed", "add", "kept.example.com"]);
    assert_eq!(add.code, 0, "{add:?}");

    let other = tempfile::tempdir().unwrap();
    let second = common::Cli::new(other.path()).run(&["up", "--nats-port", &up.port.to_string()]);
    assert_eq!(second.code, 2, "{second:?}");
    assert!(second.stderr.contains("already in use"), "{second:?}");

    assert_eq!(
        nats_server_pids(up.dir()).len(),
        1,
        "one embedded nats-server"
    );
    let (port, cli) = (up.port, up.cli.clone());
    let (status, dir) = up.stop();
    assert!(
        status.success(),
        "fleetroll up exits cleanly on SIGTERM: {status}"
    );
    assert!(
        nats_server_pids(dir.path()).is_empty(),
        "no nats-server left behind"
    );
    // With `up` stopped, its URL is gone from the data dir: the CLI says
    // so rather than only what the default port answered.
    let stopped = cli.run(&["host", "list"]);
    assert!([2, 4].contains(&stopped.code), "{stopped:?}");
    assert!(
        stopped.stderr.contains("no `fleetroll up` is running for"),
        "{stopped:?}"
    );
    // Its own port, named: the default one may have another mesh on it.
    let url = format!("nats://127.0.0.1:{port}");
    assert!(
        cli.run(&["--nats-url", &url, "status"]).code == 2,
        "nothing answers once stopped"
    );

    // The operator token left in the data dir has expired meanwhile: `up`
    // replaces it, so the mesh is usable at once.
    let pem = std::fs::read_to_string(dir.path().join("auth/signing-key.pem")).unwrap();
    let key = fleetroll_bus::token::SigningKey::from_pem(&pem).unwrap();
    let long_ago = time::OffsetDateTime::now_utc() - time::Duration::days(2);
    let (expired, _) = fleetroll_bus::token::issue(
        &key,
        "op",
        fleetroll_bus::token::Role::Relops,
        time::Duration::hours(8),
        long_ago,
        None,
    )
    .unwrap();
    std::fs::write(dir.path().join("token"), expired).unwrap();

    let up = Up::start_in(dir, 0);
    let list = up.cli.run(&["inventory", "seed", "list", "--json"]);
    assert_eq!(list.code, 0, "{list:?}");
    assert_eq!(list.json()[0]["hostname"], "kept.example.com");
}

#[test]
fn killing_up_outright_takes_its_nats_server_along() {
    let mut up = Up::start();
    assert_eq!(nats_server_pids(up.dir()).len(), 1);
    kill(&mut up.child, libc::SIGKILL);
    let _ = up.child.wait();
    wait_until(
        "the orphaned nats-server to exit",
        Duration::from_secs(20),
        || nats_server_pids(up.dir()).is_empty(),
    );
}

#[test]
fn up_says_why_the_server_cannot_start() {
    let dir = tempfile::tempdir().unwrap();
    let cli = common::Cli::new(dir.path());
    let port = common::free_port().to_string();

    let missing = cli.run(&[
        "up",
        "--nats-port",
        &port,
        "--nats-server",
        "/nonexistent/nats-server",
    ]);
    assert_eq!(missing.code, 2, "{missing:?}");
    assert!(
        missing
            .stderr
            .contains("/nonexistent/nats-server does not exist or is not executable"),
        "{missing:?}"
    );

    // A server that dies at start-up: its own last words are shown.
    let crashing = dir.path().join("crashing-nats-server");
    std::fs::write(
        &crashing,
        "#!/bin/sh\necho 'Error: could not open store dir: permission denied' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(
        &crashing,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let crashed = cli.run(&[
        "up",
        "--nats-port",
        &port,
        "--nats-server",
        crashing.to_str().unwrap(),
    ]);
    assert_eq!(crashed.code, 2, "{crashed:?}");
    assert!(
        crashed
            .stderr
            .contains("nats-server exited during start-up"),
        "{crashed:?}"
    );
    assert!(
        crashed.stderr.contains("could not open store dir"),
        "{crashed:?}"
    );
}

#[test]
fn auth_init_keeps_an_existing_key_and_tokens_come_from_the_environment_too() {
    let up = Up::start();
    let key = std::fs::read(up.dir().join("auth/signing-key.pem")).unwrap();
    let again = up.cli.run(&["auth", "init"]);
    assert_eq!(again.code, 1, "{again:?}");
    assert!(again.stderr.contains("refusing to overwrite"), "{again:?}");
    assert_eq!(
        std::fs::read(up.dir().join("auth/signing-key.pem")).unwrap(),
        key,
        "the key is untouched"
    );

    // FLEETROLL_TOKEN is used when no --token-file is given; a readonly one may read but not write.
    let issued = up
        .cli
        .run(&["auth", "issue", "--actor", "viewer", "--role", "readonly"]);
    assert_eq!(issued.code, 0, "{issued:?}");
    let mut cli = up.cli.clone();
    std::fs::remove_file(up.dir().join("token")).unwrap();
    cli.env
        .push(("FLEETROLL_TOKEN".into(), issued.stdout.trim().to_string()));
    assert_eq!(cli.run(&["inventory", "seed", "list"]).code, 0);
    let write = cli.run(&["inventory", "seed", "add", "x.example.com"]);
    assert_eq!(write.code, 5, "{write:?}");
    assert!(write.stderr.contains("role `readonly`"), "{write:?}");
}

/// Every stream and bucket has its part of the store as a size limit:
/// host history that outgrows its part drops its oldest, and never takes
/// the commands' room; a full command stream refuses new commands with a
/// clear error, `status` warns, and every command it took is audited.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_store_refuses_clearly_and_loses_no_audit_record() {
    use fleetroll_bus::token::Role;
    let up = tokio::task::spawn_blocking(|| {
        Up::start_with("[storage]\nmax_bytes = \"64 MiB\"\n", Vec::new())
    })
    .await
    .unwrap();
    let store = |json: &serde_json::Value, name: &str| {
        json["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()
            .clone()
    };
    let cli = up.cli.clone();
    let status = tokio::task::spawn_blocking(move || cli.run(&["status", "--json"]).json())
        .await
        .unwrap();
    let commands = store(&status, "FLEETROLL_CMD");
    assert_eq!(
        commands["max_bytes"],
        64 * 1024 * 1024 / 1000 * 60,
        "{commands}"
    );
    assert_eq!(commands["discard"], "new");
    assert_eq!(store(&status, "FLEETROLL_HOST_HISTORY")["discard"], "old");

    // Host history three times its part: the oldest go, nothing is refused.
    let chunk = vec![b'h'; 512 * 1024];
    let worker = up.bus_as(Role::Worker).await;
    for i in 0..80 {
        worker
            .js
            .publish(
                format!("fleetroll.history.h{i}.example.com"),
                chunk.clone().into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let cli = up.cli.clone();
    let (history, ping) = tokio::task::spawn_blocking(move || {
        let status = cli.run(&["status", "--json"]).json();
        (store(&status, "FLEETROLL_HOST_HISTORY"), cli.run(&["ping"]))
    })
    .await
    .unwrap();
    assert!(
        history["bytes"].as_u64() <= history["max_bytes"].as_u64(),
        "{history}"
    );
    assert_eq!(ping.code, 0, "commands keep their room: {ping:?}");

    // Commands until the stream refuses even a small one.
    let relops = up.bus_as(Role::Relops).await;
    let mut taken = 0;
    for size in [512 * 1024, 16 * 1024, 256] {
        let refusal = loop {
            let stored = async {
                relops
                    .js
                    .publish("fleetroll.cmd.prober.ping", vec![b'c'; size].into())
                    .await?
                    .await
            };
            match stored.await {
                Ok(_) => taken += 1,
                Err(e) => break e.to_string(),
            }
            assert!(taken < 1000, "the command stream never filled");
        };
        assert!(refusal.contains("maximum bytes"), "{refusal}");
    }
    let cli = up.cli.clone();
    tokio::task::spawn_blocking(move || {
        let ping = cli.run(&["ping", "--worker", "prober"]);
        assert_eq!(ping.code, 2, "{ping:?}");
        assert!(ping.stderr.contains("FLEETROLL_CMD is full"), "{ping:?}");
        let status = cli.run(&["status"]);
        assert!(
            status
                .stdout
                .lines()
                .any(|l| l.starts_with("WARNING") && l.contains("FLEETROLL_CMD")),
            "{status:?}"
        );
        // Every command the stream took (each set aside as junk) has its
        // audit record.
        wait_until("every command audited", Duration::from_secs(60), || {
            let audit = cli.run(&["audit", "list", "--json"]).json();
            audit
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["record"]["action"] == "message_set_aside")
                .count()
                == taken
        });
    })
    .await
    .unwrap();
}

/// A worker whose output nobody reads any more (its pipe closed, as when
/// whatever started it went away) goes on working: neither SIGPIPE nor a
/// failed write ends it.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_outlives_a_closed_stdout() {
    let bare = common::Bare::start().await;
    let cli = bare.cli.clone();
    tokio::task::spawn_blocking(move || {
        let mut worker = cli
            .command(&["worker", "prober", "--metrics-listen", "127.0.0.1:0"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Closed before the worker says where its metrics are.
        drop(worker.stdout.take());
        wait_until("the prober live", Duration::from_secs(30), || {
            cli.replicas_of("prober") == 1
        });
        let ping = cli.run(&["ping", "--worker", "prober"]);
        assert_eq!(ping.code, 0, "{ping:?}");
        assert!(
            worker.try_wait().unwrap().is_none(),
            "the worker ended: {:?}",
            worker.try_wait()
        );
        let _ = worker.kill();
        let _ = worker.wait();
    })
    .await
    .unwrap();
}
