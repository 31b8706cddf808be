//! The audit log: one record per command with the verified actor, denied
//! attempts included; a stream the server will not let anyone delete from;
//! forgeries named by `audit verify`; an auditor killed mid-stream that
//! loses and doubles nothing; an index rebuilt with the same answers.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Bare, Cli, Up, wait_until};
use fleetroll_bus::audit_log::{self, Verification};
use fleetroll_bus::codec;
use fleetroll_bus::messages::audit::{AuditRecord, KEY_ID_HEADER, SIGNATURE_HEADER, payload_hash};
use fleetroll_bus::messages::auth::VerifyingKeyRecord;
use fleetroll_bus::messages::command::{Command, Outcome};
use fleetroll_bus::token::{self, Role, SigningKey};
use fleetroll_bus::topology;
use time::OffsetDateTime;

fn issue(cli: &Cli, actor: &str, role: &str) -> String {
    cli.issue_token(actor, role).display().to_string()
}

fn audit_list(cli: &Cli, filters: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["audit", "list", "--json"];
    args.extend_from_slice(filters);
    let run = cli.run(&args);
    assert_eq!(run.code, 0, "{run:?}");
    run.json().as_array().unwrap().clone()
}

/// How many records `audit list` shows; none while no auditor answers (one
/// just started, say).
fn audited(cli: &Cli) -> Option<usize> {
    let run = cli.run(&["audit", "list", "--json", "--limit", "100000"]);
    (run.code == 0).then(|| run.json().as_array().map_or(0, |a| a.len()))
}

/// Waits until the audit log holds a record for every outcome, and returns
/// the outcomes by command id.
fn all_audited(cli: &Cli, bus_url: &str) -> BTreeMap<String, Outcome> {
    let url = bus_url.to_string();
    let outcomes = move || {
        let url = url.clone();
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(async move {
                let bus = common::worker_bus(&url).await;
                bus.snapshot::<Outcome>(&topology::OUTCOMES).await.unwrap()
            })
    };
    let mut last = BTreeMap::new();
    wait_until(
        "a record for every outcome",
        Duration::from_secs(60),
        || {
            last = outcomes();
            audited(cli).is_some_and(|n| n >= last.len())
        },
    );
    last
}

#[test]
fn every_command_has_exactly_one_record_with_its_verified_actor() {
    let up = Up::start();
    let cli = &up.cli;
    let sync_file = up.dir().join("seeds.txt");
    std::fs::write(&sync_file, "a.example.com\nc.example.com\n").unwrap();
    let relops_commands: Vec<Vec<&str>> = vec![
        vec!["inventory", "seed", "add", "a.example.com", "b.example.com"],
        vec!["inventory", "seed", "remove", "b.example.com"],
        vec![
            "inventory",
            "seed",
            "sync",
            "--from-file",
            sync_file.to_str().unwrap(),
        ],
        vec![
            "population",
            "create",
            "talos",
            "--expected-role",
            "gecko_t_linux_talos",
        ],
        vec![
            "host",
            "assign-population",
            "a.example.com",
            "--population",
            "talos",
        ],
        vec![
            "host",
            "set-expected-role",
            "c.example.com",
            "--role",
            "r1",
            "--confirm",
        ],
        vec!["host", "clear-expected-role", "c.example.com", "--confirm"],
        vec!["host", "disable", "a.example.com", "--reason", "disk dying"],
        vec!["host", "enable", "a.example.com"],
        vec!["host", "repin", "a.example.com", "--confirm"],
        vec!["host", "refresh", "c.example.com"],
    ];
    for args in &relops_commands {
        let run = cli.run(args);
        // A refresh of a host that does not resolve completes, and says
        // the host could not be reached.
        let want = if args[1] == "refresh" { 2 } else { 0 };
        assert_eq!(run.code, want, "{args:?}: {run:?}");
    }

    // Refused: the wrong role, an expired token, a revoked one.
    let reader = issue(cli, "olive", "readonly");
    let denied = cli.run(&[
        "--token-file",
        &reader,
        "inventory",
        "seed",
        "add",
        "x.example.com",
    ]);
    assert_eq!(denied.code, 5, "{denied:?}");
    let pem = std::fs::read_to_string(up.dir().join("auth/signing-key.pem")).unwrap();
    let key = SigningKey::from_pem(&pem).unwrap();
    let (expired, _) = token::issue(
        &key,
        "late",
        Role::Relops,
        time::Duration::hours(1),
        OffsetDateTime::now_utc() - time::Duration::hours(2),
        None,
    )
    .unwrap();
    let expired_path = up.dir().join("late.token");
    std::fs::write(&expired_path, expired).unwrap();
    let run = cli.run(&[
        "--token-file",
        expired_path.to_str().unwrap(),
        "host",
        "disable",
        "c.example.com",
        "--reason",
        "late",
    ]);
    assert_eq!(run.code, 5, "{run:?}");
    let leaver = issue(cli, "leaver", "relops");
    let revoke = cli.run(&[
        "auth",
        "revoke",
        "--actor",
        "leaver",
        "--reason",
        "left the team",
    ]);
    assert_eq!(revoke.code, 0, "{revoke:?}");
    let run = cli.run(&[
        "--token-file",
        &leaver,
        "inventory",
        "seed",
        "add",
        "y.example.com",
    ]);
    assert_eq!(run.code, 5, "{run:?}");
    let (forged, _) = token::issue(
        &SigningKey::generate(),
        "mallory",
        Role::Relops,
        time::Duration::hours(1),
        OffsetDateTime::now_utc(),
        None,
    )
    .unwrap();
    let forged_path = up.dir().join("forged.token");
    std::fs::write(&forged_path, forged).unwrap();
    let run = cli.run(&[
        "--token-file",
        forged_path.to_str().unwrap(),
        "inventory",
        "seed",
        "add",
        "z.example.com",
    ]);
    assert_eq!(run.code, 5, "{run:?}");

    let outcomes = all_audited(cli, &up.url());
    // 11 roll-call commands, the revocation, and 4 refused.
    assert_eq!(outcomes.len(), relops_commands.len() + 5, "{outcomes:#?}");
    let records = audit_list(cli, &["--limit", "100000"]);
    assert_eq!(records.len(), outcomes.len(), "one record per command");
    let me = std::env::var("USER").unwrap_or_else(|_| "operator".into());
    for (id, outcome) in &outcomes {
        let matching: Vec<_> = records
            .iter()
            .filter(|r| r["record"]["command_id"] == id.as_str())
            .collect();
        assert_eq!(matching.len(), 1, "command {id}: {matching:#?}");
        let record = &matching[0]["record"];
        assert_eq!(record["action"], outcome.command.as_str());
        assert_eq!(record["outcome"], outcome.verdict.label());
        assert_eq!(record["approval_mode"], "self");
        assert_eq!(record["actor"].as_str(), outcome.actor.as_deref());
    }
    let by = |action: &str, outcome: &str| -> Vec<&serde_json::Value> {
        records
            .iter()
            .map(|r| &r["record"])
            .filter(|r| r["action"] == action && r["outcome"] == outcome)
            .collect()
    };
    let disabled = by("host_disable", "done");
    assert_eq!(disabled.len(), 1);
    assert_eq!(disabled[0]["actor"], me.as_str());
    assert_eq!(disabled[0]["reason"], "disk dying");
    assert_eq!(disabled[0]["hosts"], serde_json::json!(["a.example.com"]));
    let sync = by("seed_sync", "done");
    assert_eq!(
        sync[0]["hosts"],
        serde_json::json!(["c.example.com"]),
        "sync added c"
    );
    let refused: Vec<_> = records
        .iter()
        .map(|r| &r["record"])
        .filter(|r| r["outcome"] == "denied")
        .collect();
    assert_eq!(refused.len(), 4, "{refused:#?}");
    let actor_of = |name: &str| {
        refused
            .iter()
            .find(|r| r["actor"] == name || r["claimed_actor"] == name)
            .unwrap_or_else(|| panic!("no denied record for {name}: {refused:#?}"))
    };
    assert!(
        actor_of("olive")["message"]
            .as_str()
            .unwrap()
            .contains("role `readonly`")
    );
    assert!(
        actor_of("late")["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
    assert!(
        actor_of("leaver")["message"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );
    let mallory = actor_of("mallory");
    assert!(
        mallory["actor"].is_null(),
        "a forged token's actor is not verified"
    );
    assert_eq!(mallory["claimed_actor"], "mallory");
    let revocation = by("token_revoke", "done");
    assert_eq!(revocation[0]["reason"], "left the team");

    // Filters.
    let for_a = audit_list(cli, &["--host", "a.example.com"]);
    assert!(!for_a.is_empty());
    assert!(for_a.iter().all(|r| {
        r["record"]["hosts"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("a.example.com"))
    }));
    assert_eq!(audit_list(cli, &["--actor", "olive"]).len(), 1);
    assert_eq!(audit_list(cli, &["--since", "1h"]).len(), records.len());
    assert!(audit_list(cli, &["--since", "2999-01-01T00:00:00Z"]).is_empty());
    let bad = cli.run(&["audit", "list", "--since", "yesterday-ish"]);
    assert_eq!(bad.code, 1, "{bad:?}");

    let verify = cli.run(&["audit", "verify"]);
    assert_eq!(verify.code, 0, "{verify:?}");
    assert!(
        verify
            .stdout
            .contains(&format!("intact: {} records", records.len())),
        "{verify:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_refuses_to_delete_or_purge_audit_records_and_verify_names_a_forgery() {
    let up = tokio::task::spawn_blocking(Up::start).await.unwrap();
    let cli = up.cli.clone();
    let seeded = tokio::task::spawn_blocking(move || {
        cli.run(&["inventory", "seed", "add", "a.example.com"])
    })
    .await
    .unwrap();
    assert_eq!(seeded.code, 0, "{seeded:?}");
    // Everything a worker may do on the JetStream API: it still may not
    // delete or purge audit records.
    let bus = common::worker_bus(&up.url()).await;
    let mut waited = 0;
    while audit_log::last(&bus).await.unwrap().is_none() {
        waited += 1;
        assert!(waited < 100, "no audit record");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut stream = bus.js.get_stream(topology::AUDIT.name).await.unwrap();
    assert!(stream.delete_message(1).await.is_err(), "delete refused");
    assert!(stream.purge().await.is_err(), "purge refused");
    assert_eq!(
        stream.info().await.unwrap().state.messages,
        1,
        "nothing removed"
    );

    // A record forged with worker credentials, linked correctly to the
    // chain, but signed by a key that is not the mesh's audit key, though
    // a relops credential published it among the audit keys.
    let last = audit_log::last(&bus).await.unwrap().unwrap();
    let mut forged = AuditRecord::example();
    forged.index = last.seq + 1;
    forged.prev_hash = payload_hash(&last.payload);
    forged.actor = Some("mallory".into());
    let payload = codec::to_cbor(&forged);
    let forger = SigningKey::generate();
    let (key_id, signature) = fleetroll_bus::messages::audit::sign(&forger, &payload);
    let relops = up.bus_as(Role::Relops).await;
    let published = VerifyingKeyRecord {
        public_key: forger.verifying_key().to_base64(),
        published_at: OffsetDateTime::now_utc(),
    };
    relops
        .kv(&topology::AUTH)
        .await
        .unwrap()
        .put(
            topology::auth_keys::audit_key(&key_id),
            codec::to_cbor(&published).into(),
        )
        .await
        .expect("relops may publish an audit key");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(KEY_ID_HEADER, key_id.as_str());
    headers.insert(SIGNATURE_HEADER, signature.as_str());
    bus.js
        .publish_with_headers("fleetroll.audit.cmd.forged", headers, payload.into())
        .await
        .unwrap()
        .await
        .unwrap();
    let forged_seq = last.seq + 1;
    // The auditor goes on writing after it.
    let cli = up.cli.clone();
    let (after, verify) = tokio::task::spawn_blocking(move || {
        let after = cli.run(&["inventory", "seed", "add", "b.example.com"]);
        wait_until(
            "the record after the forgery",
            Duration::from_secs(30),
            || audit_list(&cli, &[]).len() == 3,
        );
        (after, cli.run(&["audit", "verify"]))
    })
    .await
    .unwrap();
    assert_eq!(after.code, 0, "{after:?}");
    assert_eq!(verify.code, 1, "{verify:?}");
    assert!(
        verify
            .stderr
            .contains(&format!("stream sequence {forged_seq} ")),
        "names the forged record: {verify:?}"
    );
    assert!(verify.stderr.contains("forged"), "{verify:?}");
    assert!(verify.stderr.contains("after 1 good records"), "{verify:?}");
    match audit_log::verify(&bus, &up.cli.trusted_audit_keys())
        .await
        .unwrap()
    {
        Verification::Broken { first_bad, .. } => assert_eq!(first_bad.seq, forged_seq),
        whole => panic!("{whole:?}"),
    }
    // A data dir with no audit keys of its own checks nothing: it refuses.
    let elsewhere = tempfile::tempdir().unwrap();
    let mut stranger = up.cli.clone();
    stranger.data_dir = elsewhere.path().to_path_buf();
    let refused = tokio::task::spawn_blocking(move || stranger.run(&["audit", "verify"]))
        .await
        .unwrap();
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("audit-keys.pub") && refused.stdout.is_empty(),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_auditor_killed_mid_stream_loses_and_doubles_nothing() {
    let bare = Bare::start().await;
    let cli = bare.cli.clone();
    let _prober = cli.spawn(&["worker", "prober"]);
    let mut auditor = cli.spawn(&["worker", "auditor"]);
    let c = cli.clone();
    tokio::task::spawn_blocking(move || {
        wait_until("prober and auditor live", Duration::from_secs(30), || {
            c.replicas_of("prober") == 1 && c.replicas_of("auditor") == 1
        })
    })
    .await
    .unwrap();
    let bus = bare.bus().await;
    let credential = bare.credential();
    const COMMANDS: usize = 300;
    let mut ids = Vec::new();
    for n in 0..COMMANDS {
        let envelope = fleetroll_bus::send::envelope(
            &credential,
            Command::SeedAdd {
                hostnames: vec![format!("h{n}.example.com")],
            },
            Duration::from_secs(120),
        );
        fleetroll_bus::send::publish(&bus, &envelope).await.unwrap();
        ids.push(envelope.id);
    }
    // Kill the auditor once it is part-way through.
    let worker = common::worker_bus(&bare.url()).await;
    loop {
        let written = worker
            .js
            .get_stream(topology::AUDIT.name)
            .await
            .unwrap()
            .cached_info()
            .state
            .messages;
        if written >= 20 {
            assert!((written as usize) < COMMANDS, "killed too late ({written})");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    common::kill(&mut auditor, libc::SIGKILL);
    let _ = auditor.wait();
    let _auditor = cli.spawn(&["worker", "auditor"]);
    let c = cli.clone();
    let records = tokio::task::spawn_blocking(move || {
        wait_until("every command audited", Duration::from_secs(120), || {
            audited(&c).is_some_and(|n| n >= COMMANDS)
        });
        audit_list(&c, &["--limit", "100000"])
    })
    .await
    .unwrap();
    let mut audited: Vec<String> = records
        .iter()
        .map(|r| r["record"]["command_id"].as_str().unwrap().to_string())
        .collect();
    audited.sort();
    ids.sort();
    assert_eq!(audited, ids, "each command exactly once");
    match audit_log::verify(&worker, &cli.trusted_audit_keys())
        .await
        .unwrap()
    {
        Verification::Whole { records, .. } => assert_eq!(records, COMMANDS as u64),
        broken => panic!("{broken:?}"),
    }
}

#[test]
fn a_deleted_index_is_rebuilt_with_the_same_answers() {
    let up = Up::start();
    let cli = up.cli.clone();
    for host in ["a.example.com", "b.example.com"] {
        assert_eq!(cli.run(&["inventory", "seed", "add", host]).code, 0);
    }
    assert_eq!(
        cli.run(&["host", "disable", "a.example.com", "--reason", "r"])
            .code,
        0
    );
    let reader = issue(&cli, "olive", "readonly");
    assert_eq!(
        cli.run(&[
            "--token-file",
            &reader,
            "inventory",
            "seed",
            "add",
            "c.example.com"
        ])
        .code,
        5
    );
    let queries: [&[&str]; 4] = [
        &[],
        &["--host", "a.example.com"],
        &["--actor", "olive"],
        &["--since", "1h", "--limit", "2"],
    ];
    wait_until("four records", Duration::from_secs(30), || {
        audited(&cli) == Some(4)
    });
    let before: Vec<_> = queries.iter().map(|q| audit_list(&cli, q)).collect();
    let index = up.dir().join("auditor/index.redb");
    assert!(index.exists());
    let (status, dir) = up.stop();
    assert!(status.success());
    std::fs::remove_file(&index).unwrap();
    let up = Up::start_in(dir, 0);
    let after: Vec<_> = queries.iter().map(|q| audit_list(&up.cli, q)).collect();
    assert_eq!(after, before);
    assert!(index.exists(), "the index file is made again");
    assert_eq!(before[1].len(), 2, "seed add and disable of a");
    assert_eq!(before[3].len(), 2, "--limit keeps the newest");
}
