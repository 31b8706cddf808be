//! SPEC 9, "NATS itself enforces roles": the embedded server of `fleetroll
//! up` runs with one NATS user per role (nats-config/permissions.conf), and
//! the server, not the workers, refuses what a user may not do. Every
//! client here holds a token that would pass the workers' own check, so a
//! refusal is the server's.

mod common;

use std::time::Duration;

use common::{Up, refused, worker_bus};
use fleetroll_bus::codec;
use fleetroll_bus::connect::{Bus, BusError, ConnectOptions};
use fleetroll_bus::messages::auth::Revocation;
use fleetroll_bus::messages::command::Command;
use fleetroll_bus::messages::{NoParams, SeedList};
use fleetroll_bus::send::{self, SendError};
use fleetroll_bus::subjects::queries;
use fleetroll_bus::token::Role;
use fleetroll_bus::topology::{self, auth_keys};
use futures::StreamExt;

const SEEDED: &str = "seeded.example.com";

/// Messages the command stream holds, read by a worker.
async fn commands_stored(worker: &Bus) -> u64 {
    worker
        .js
        .get_stream(topology::COMMANDS.name)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages
}

/// The seed entry as a worker reads it: its revision and value.
async fn seed_entry(worker: &Bus) -> (u64, Vec<u8>) {
    let entry = worker
        .kv(&topology::SEEDS)
        .await
        .unwrap()
        .entry(SEEDED)
        .await
        .unwrap()
        .expect("the seed exists");
    (entry.revision, entry.value.to_vec())
}

/// `audit verify` passes: the audit log is whole.
async fn audit_intact(up: &Up) {
    let cli = up.cli.clone();
    let verify = tokio::task::spawn_blocking(move || cli.run(&["audit", "verify"]))
        .await
        .unwrap();
    assert_eq!(verify.code, 0, "{verify:?}");
}

/// Publishes `payload` on `subject` with a `Nats-Rollup: <kind>` header,
/// which would erase what the stream holds on the subject (`sub`) or in
/// all of it (`all`); the stream's answer.
async fn publish_rollup(
    bus: &Bus,
    subject: &str,
    kind: &str,
    payload: Vec<u8>,
) -> Result<async_nats::jetstream::publish::PublishAck, async_nats::jetstream::context::PublishError>
{
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Rollup", kind);
    bus.js
        .publish_with_headers(subject.to_string(), headers, payload.into())
        .await?
        .await
}

/// A seed_add envelope carrying the operator's own (relops) token: only
/// NATS stands between it and the prober.
fn seed_add(up: &Up, host: &str) -> fleetroll_bus::messages::command::CommandEnvelope {
    send::envelope(
        &up.credential(),
        Command::SeedAdd {
            hostnames: vec![host.to_string()],
        },
        Duration::from_secs(30),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn readonly_and_chatops_can_neither_send_commands_nor_write_buckets() {
    let up = tokio::task::spawn_blocking(Up::start).await.unwrap();
    let u = up.cli.clone();
    let (ro_token, bot_token) = tokio::task::spawn_blocking(move || {
        let added = u.run(&["inventory", "seed", "add", SEEDED]);
        assert_eq!(added.code, 0, "{added:?}");
        let mut tokens = Vec::new();
        for (actor, role) in [("oncall", "readonly"), ("bot", "chatops")] {
            tokens.push(u.issue_token(actor, role));
        }
        (tokens[0].clone(), tokens[1].clone())
    })
    .await
    .unwrap();
    let worker = worker_bus(&up.url()).await;
    let stored = commands_stored(&worker).await;
    let seed = seed_entry(&worker).await;

    for role in [Role::Readonly, Role::Chatops] {
        let bus = up.bus_as(role).await;
        assert_eq!(bus.user(), Some(role.as_str()));

        // (a) A command through JetStream, with a relops token inside.
        let envelope = seed_add(&up, &format!("{role}.example.com"));
        let subject = "fleetroll.cmd.prober.seed_add";
        match send::publish(&bus, &envelope).await {
            Err(SendError::Bus(BusError::NotPermitted { violation, .. })) => {
                assert!(violation.contains(subject), "{violation}")
            }
            other => panic!("{role} published a command: {other:?}"),
        }
        // The raw publish, past any helper: refused just the same.
        refused(&bus, subject, async {
            bus.js
                .publish(subject, codec::to_cbor(&envelope).into())
                .await?
                .await
        })
        .await;

        // (b) A bucket write.
        let key = format!("$KV.{}.{SEEDED}", topology::SEEDS.name);
        refused(&bus, &key, async {
            bus.js
                .publish(key.clone(), "overwritten".into())
                .await?
                .await
        })
        .await;
    }

    // Nothing reached the stream or the bucket, and no worker ran anything.
    assert_eq!(commands_stored(&worker).await, stored, "no command stored");
    assert_eq!(seed_entry(&worker).await, seed, "the seed is unchanged");

    // readonly reads everything relops reads: the bucket, directly...
    let readonly = up.bus_as(Role::Readonly).await;
    let entry = readonly
        .kv(&topology::SEEDS)
        .await
        .unwrap()
        .entry(SEEDED)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((entry.revision, entry.value.to_vec()), seed);
    // ... but not the command stream (commands carry tokens) nor anyone
    // else's inbox (where a worker's pulled commands arrive).
    let create = format!("$JS.API.CONSUMER.CREATE.{}", topology::COMMANDS.name);
    refused(
        &readonly,
        &create,
        readonly.client.request(create.clone(), "{}".into()),
    )
    .await;
    refused(&readonly, "_INBOX_worker.>", async {
        let mut snoop = readonly.client.subscribe("_INBOX_worker.>").await.unwrap();
        snoop.next().await
    })
    .await;
    // Nor may it reconfigure, or take messages from, a worker's durable
    // consumer on a stream it reads (the auditor's feed of events).
    for queue in topology::JOB_QUEUES
        .iter()
        .filter(|q| q.stream.name == topology::EVENTS.name)
    {
        let stream = queue.stream.name;
        let before = worker
            .js
            .get_stream(stream)
            .await
            .unwrap()
            .consumer_info(queue.consumer)
            .await
            .unwrap()
            .config
            .clone();
        let hijack = serde_json::json!({
            "stream_name": stream,
            "config": {"durable_name": queue.consumer, "filter_subject": "fleetroll.evt.nothing", "ack_policy": "explicit"},
        })
        .to_string();
        let named = format!("$JS.API.CONSUMER.CREATE.{stream}.{}", queue.consumer);
        refused(
            &readonly,
            &named,
            readonly
                .client
                .request(named.clone(), hijack.clone().into()),
        )
        .await;
        let next = format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{}", queue.consumer);
        refused(
            &readonly,
            &next,
            readonly.client.request(next.clone(), "1".into()),
        )
        .await;
        // The unnamed form of the API takes no durable name.
        let unnamed = format!("$JS.API.CONSUMER.CREATE.{stream}");
        let reply = readonly
            .client
            .request(unnamed, hijack.into())
            .await
            .unwrap();
        let reply: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
        assert!(reply.get("error").is_some(), "{reply}");
        let after = worker
            .js
            .get_stream(stream)
            .await
            .unwrap()
            .consumer_info(queue.consumer)
            .await
            .unwrap()
            .config
            .clone();
        assert_eq!(after.filter_subject, before.filter_subject);
    }

    // ... and runs the read commands with its own NATS user and token.
    let readonly_file = up.credentials_file(Role::Readonly);
    let ro = ro_token.to_str().unwrap().to_string();
    let ro_file = readonly_file.to_str().unwrap().to_string();
    let u = up.cli.clone();
    let (list, status, send) = tokio::task::spawn_blocking(move || {
        let as_readonly = |args: &[&str]| {
            let mut all = vec!["--nats-credentials", &ro_file, "--token-file", &ro];
            all.extend_from_slice(args);
            u.run(&all)
        };
        let list = as_readonly(&["host", "list", "--json"]);
        let status = as_readonly(&["status", "--json"]);
        // The operator's relops token over the readonly NATS user: the
        // server refuses the command before any worker sees it.
        let send = u.run(&[
            "--nats-credentials",
            &ro_file,
            "inventory",
            "seed",
            "add",
            "never.example.com",
        ]);
        (list, status, send)
    })
    .await
    .unwrap();
    assert_eq!(list.code, 0, "{list:?}");
    assert!(list.stdout.contains(SEEDED), "{list:?}");
    assert_eq!(status.code, 0, "{status:?}");
    let status = status.json();
    assert!(
        status["workers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| !w["live"].as_array().unwrap().is_empty()),
        "{status}"
    );
    assert!(
        status["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["exists"] == true),
        "{status}"
    );
    assert_eq!(send.code, 5, "not authorized: {send:?}");
    assert!(
        send.stderr.contains("Permissions Violation")
            && send.stderr.contains("fleetroll.cmd.prober.seed_add")
            && send.stderr.contains("NATS user `readonly`"),
        "{send:?}"
    );
    assert_eq!(commands_stored(&worker).await, stored, "no command stored");

    // chatops asks queries with its token...
    let chatops = up.bus_as(Role::Chatops).await;
    let bot = std::fs::read_to_string(&bot_token).unwrap();
    let seeds: SeedList = fleetroll_bus::query::request(
        &chatops,
        bot.trim(),
        queries::SEEDS_LIST,
        &NoParams {},
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert!(
        seeds.seeds.iter().any(|s| s.hostname == SEEDED),
        "{seeds:?}"
    );
    // ... and reads nothing else: no bucket, no stream info, no events.
    let get = format!(
        "$JS.API.DIRECT.GET.{}.$KV.{}.{SEEDED}",
        topology::SEEDS.stream_name(),
        topology::SEEDS.name
    );
    refused(
        &chatops,
        &get,
        chatops.client.request(get.clone(), "".into()),
    )
    .await;
    let info = format!("$JS.API.STREAM.INFO.{}", topology::SEEDS.stream_name());
    refused(&chatops, &info, chatops.kv(&topology::SEEDS)).await;
    refused(&chatops, "fleetroll.evt.>", async {
        let mut events = chatops.client.subscribe("fleetroll.evt.>").await.unwrap();
        events.next().await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_and_relops_keep_to_their_part_of_the_trust_root() {
    let up = tokio::task::spawn_blocking(Up::start).await.unwrap();
    let worker = worker_bus(&up.url()).await;
    let auth = worker.kv(&topology::AUTH).await.unwrap();
    let key = auth
        .entry(auth_keys::VERIFYING_KEY)
        .await
        .unwrap()
        .expect("up published the verifying key");

    // A worker may not replace the verifying key (it could then mint any
    // token), nor reach it through the stream API.
    let subject = format!("$KV.{}.{}", topology::AUTH.name, auth_keys::VERIFYING_KEY);
    refused(
        &worker,
        &subject,
        auth.put(auth_keys::VERIFYING_KEY, "forged".into()),
    )
    .await;
    let purge = format!("$JS.API.STREAM.PURGE.{}", topology::AUTH.stream_name());
    refused(
        &worker,
        &purge,
        worker.client.request(purge.clone(), "".into()),
    )
    .await;
    let auth_stream = topology::AUTH.stream_name();
    for stream in [topology::AUDIT.name, auth_stream.as_str()] {
        let update = format!("$JS.API.STREAM.UPDATE.{stream}");
        refused(
            &worker,
            &update,
            worker.client.request(update.clone(), "{}".into()),
        )
        .await;
    }
    let now = auth.entry(auth_keys::VERIFYING_KEY).await.unwrap().unwrap();
    assert_eq!(
        (now.revision, &now.value),
        (key.revision, &key.value),
        "the verifying key is unchanged"
    );
    // Nor publish a command (it executes them).
    match send::publish(&worker, &seed_add(&up, "worker.example.com")).await {
        Err(SendError::Bus(BusError::NotPermitted { .. })) => {}
        other => panic!("a worker published a command: {other:?}"),
    }
    // Nor write the auth bucket at all: revocations are appended to their
    // own stream (the auditor executes `auth revoke`).
    let legacy = format!(
        "$KV.{}.{}",
        topology::AUTH.name,
        auth_keys::revoked_token("00000000-0000-0000-0000-000000000000")
    );
    refused(&worker, &legacy, async {
        worker.js.publish(legacy.clone(), "x".into()).await?.await
    })
    .await;

    // relops writes the trust root and nothing else of the buckets, and
    // never the audit log.
    let relops = up.bus_as(Role::Relops).await;
    let seeds_key = format!("$KV.{}.relops.example.com", topology::SEEDS.name);
    refused(&relops, &seeds_key, async {
        relops
            .js
            .publish(seeds_key.clone(), "x".into())
            .await?
            .await
    })
    .await;
    let audit = "fleetroll.audit.cmd.forged";
    refused(&relops, audit, async {
        relops.js.publish(audit, "x".into()).await?.await
    })
    .await;
    let delete = format!("$JS.API.STREAM.DELETE.{}", topology::AUDIT.name);
    refused(
        &relops,
        &delete,
        relops.client.request(delete.clone(), "".into()),
    )
    .await;
    // The operator's keys: `up` published them as relops, and relops can
    // write them again (its own verifying key, unchanged).
    let relops_auth = relops.kv(&topology::AUTH).await.unwrap();
    relops_auth
        .put(auth_keys::VERIFYING_KEY, now.value.clone())
        .await
        .expect("relops writes the verifying key");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_turns_away_a_connection_without_the_right_password() {
    let up = tokio::task::spawn_blocking(Up::start).await.unwrap();
    match Bus::connect(ConnectOptions::new(up.url(), "anonymous")).await {
        Err(BusError::NotAuthorized { user: None, .. }) => {}
        other => panic!("connected without credentials: {other:?}"),
    }
    let mut wrong =
        fleetroll_bus::connect::Credentials::load(&up.credentials_file(Role::Relops)).unwrap();
    wrong.password.push('x');
    match Bus::connect(ConnectOptions::new(up.url(), "wrong").credentials(wrong)).await {
        Err(BusError::NotAuthorized {
            user: Some(user), ..
        }) => assert_eq!(user, "relops"),
        other => panic!("connected with a wrong password: {other:?}"),
    }

    let dir = up.dir().to_path_buf();
    let url = up.url();
    let u = up.cli.clone();
    let elsewhere = tempfile::tempdir().unwrap();
    let other_dir = elsewhere.path().to_path_buf();
    let (bad, missing, none, by_env, from_settings) = tokio::task::spawn_blocking(move || {
        let bad_file = dir.join("bad.toml");
        std::fs::write(&bad_file, "user = \"relops\"\npassword = \"nope\"\n").unwrap();
        let bad = u.run(&["--nats-credentials", bad_file.to_str().unwrap(), "status"]);
        let missing = u.run(&["--nats-credentials", "/nonexistent/relops.toml", "status"]);
        // A data dir `up` never ran in has no credentials: none are sent.
        let mut other = common::Cli::new(&other_dir);
        other.nats_url = Some(url);
        let none = other.run(&["status"]);
        // The environment and the settings file name one too.
        let relops = dir.join("credentials").join("relops.toml");
        let mut env = other.clone();
        env.env.push((
            "FLEETROLL_NATS_CREDENTIALS".into(),
            relops.display().to_string(),
        ));
        let by_env = env.run(&["status", "--json"]);
        std::fs::write(
            other_dir.join("fleetroll.toml"),
            format!("[nats]\ncredentials = {:?}\n", relops.display().to_string()),
        )
        .unwrap();
        let from_settings = other.run(&["status", "--json"]);
        (bad, missing, none, by_env, from_settings)
    })
    .await
    .unwrap();
    assert_eq!(bad.code, 5, "{bad:?}");
    assert!(
        bad.stderr.contains("wrong password for NATS user `relops`"),
        "{bad:?}"
    );
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(
        missing.stderr.contains("/nonexistent/relops.toml"),
        "{missing:?}"
    );
    assert_eq!(none.code, 5, "{none:?}");
    assert!(none.stderr.contains("--nats-credentials"), "{none:?}");
    assert_eq!(by_env.code, 0, "{by_env:?}");
    assert_eq!(from_settings.code, 0, "{from_settings:?}");
    drop(elsewhere);
}

/// A `Nats-Rollup` header on any key a credential may write would erase
/// the whole bucket: with one revocation, a worker would wipe the verifying
/// key, every revocation and every audit key. No bucket takes one.
#[tokio::test(flavor = "multi_thread")]
async fn no_bucket_takes_a_rollup_so_one_key_cannot_wipe_it() {
    let up = tokio::task::spawn_blocking(Up::start).await.unwrap();
    let worker = worker_bus(&up.url()).await;
    let auth = worker.kv(&topology::AUTH).await.unwrap();
    let key = auth
        .entry(auth_keys::VERIFYING_KEY)
        .await
        .unwrap()
        .expect("up published the verifying key");
    let revocation = codec::to_cbor(&Revocation {
        revoked_at: time::OffsetDateTime::now_utc(),
        reason: "test".into(),
    });
    let subject = format!(
        "$KV.{}.{}",
        topology::AUTH.name,
        auth_keys::revoked_token("00000000-0000-0000-0000-000000000000")
    );
    let wiped = publish_rollup(&worker, &subject, "all", revocation).await;
    assert!(wiped.is_err(), "the server took a rollup: {wiped:?}");
    let now = auth.entry(auth_keys::VERIFYING_KEY).await.unwrap();
    assert_eq!(
        now.map(|e| (e.revision, e.value)),
        Some((key.revision, key.value)),
        "the verifying key is still there"
    );
    for bucket in topology::BUCKETS {
        let config = worker
            .js
            .get_stream(bucket.stream_name())
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .config
            .clone();
        assert!(!config.allow_rollup, "{} allows rollups", bucket.name);
    }
    audit_intact(&up).await;
}

/// The `relops` NATS user may write the verifying key published on the
/// mesh. With the shared password, an operator whose tokens were revoked
/// could install a key of their own there and mint a token for anyone.
/// Workers trust only the verifying key of their own data dir: the forged
/// token is refused, nothing changes, and the refusal is audited.
#[tokio::test(flavor = "multi_thread")]
async fn a_verifying_key_written_to_the_mesh_mints_no_token() {
    use fleetroll_bus::messages::auth::VerifyingKeyRecord;
    use fleetroll_bus::token::SigningKey;

    let up = tokio::task::spawn_blocking(Up::start).await.unwrap();
    let relops = up.bus_as(Role::Relops).await;
    let mallory = SigningKey::generate();
    let record = VerifyingKeyRecord {
        public_key: mallory.verifying_key().to_base64(),
        published_at: time::OffsetDateTime::now_utc(),
    };
    relops
        .kv(&topology::AUTH)
        .await
        .unwrap()
        .put(auth_keys::VERIFYING_KEY, codec::to_cbor(&record).into())
        .await
        .expect("relops may write the published key");
    let (forged, _) = fleetroll_bus::token::issue(
        &mallory,
        "mallory",
        Role::Relops,
        time::Duration::hours(1),
        time::OffsetDateTime::now_utc(),
        None,
    )
    .unwrap();
    let outcome = send::send(
        &relops,
        &fleetroll_bus::token::Credential::bearer(forged),
        Command::SeedAdd {
            hostnames: vec!["forged.example.com".into()],
        },
        Duration::from_secs(30),
    )
    .await
    .expect("an outcome");
    assert!(
        matches!(
            outcome.verdict,
            fleetroll_bus::messages::command::Verdict::Denied {
                denial: fleetroll_bus::messages::command::Denial::Forged
            }
        ),
        "{outcome:?}"
    );

    let worker = worker_bus(&up.url()).await;
    let seeds = worker.kv(&topology::SEEDS).await.unwrap();
    assert!(seeds.get("forged.example.com").await.unwrap().is_none());
    let cli = up.cli.clone();
    let (audit, verify) = tokio::task::spawn_blocking(move || {
        (
            cli.run(&["audit", "list", "--json"]).json(),
            cli.run(&["audit", "verify"]),
        )
    })
    .await
    .unwrap();
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["record"]["action"] == "seed_add" && r["record"]["outcome"] == "denied"),
        "the refusal is audited: {audit:#}"
    );
    assert_eq!(verify.code, 0, "{verify:?}");
}

/// nats-server does not check a push consumer's deliver subject against
/// its creator's permissions: readonly may have what it reads delivered to
/// any subject. The server we ship hands such deliveries to subscribers
/// only, and no stream stores them, so a reader cannot forge audit records,
/// bucket entries or commands this way (a regression test: the day a
/// server stores them, this fails).
#[tokio::test(flavor = "multi_thread")]
async fn a_readers_push_consumer_delivers_nothing_into_a_stream() {
    use async_nats::jetstream::consumer::push;
    let up = tokio::task::spawn_blocking(Up::start).await.unwrap();
    let worker = worker_bus(&up.url()).await;
    let reader = up.bus_as(Role::Readonly).await;
    // Readers may subscribe to live events: here a delivery has someone to
    // go to, and the events stream's subjects cover it.
    let mut watching = reader
        .client
        .subscribe("fleetroll.evt.forged")
        .await
        .unwrap();
    // (A deliver subject of the consumer's own stream the server refuses
    // as a cycle.)
    let targets = [
        (&topology::AUDIT, "fleetroll.evt.forged".to_string()),
        (&topology::EVENTS, "fleetroll.audit.forged".to_string()),
        (
            &topology::AUDIT,
            format!("$KV.{}.forged.example.com", topology::HOST_KEYS.name),
        ),
        (&topology::AUDIT, "fleetroll.cmd.prober.forged".to_string()),
    ];
    for (n, (source, target)) in targets.iter().enumerate() {
        reader
            .js
            .get_stream(source.name)
            .await
            .unwrap()
            .create_consumer(push::Config {
                durable_name: Some(format!("forge-{n}")),
                deliver_subject: target.clone(),
                ..Default::default()
            })
            .await
            .expect("the server lets a reader create a push consumer");
    }
    let cli = up.cli.clone();
    tokio::task::spawn_blocking(move || {
        let added = cli.run(&["inventory", "seed", "add", SEEDED]);
        assert_eq!(added.code, 0, "{added:?}");
    })
    .await
    .unwrap();
    let delivered = tokio::time::timeout(Duration::from_secs(30), watching.next())
        .await
        .expect("the audit record is delivered to the subscriber")
        .expect("a message");
    assert!(
        delivered.subject.starts_with("fleetroll.audit."),
        "{delivered:?}"
    );

    let stored = |stream, subject: &str| {
        let worker = worker.clone();
        let subject = subject.to_string();
        async move { worker.stored(stream, subject).await.unwrap().len() }
    };
    assert_eq!(stored(&topology::EVENTS, "fleetroll.evt.forged").await, 0);
    assert_eq!(stored(&topology::AUDIT, "fleetroll.audit.forged").await, 0);
    assert_eq!(
        stored(&topology::COMMANDS, "fleetroll.cmd.prober.forged").await,
        0
    );
    let key = worker
        .kv(&topology::HOST_KEYS)
        .await
        .unwrap()
        .get("forged.example.com")
        .await
        .unwrap();
    assert!(key.is_none(), "a delivery landed in the host keys: {key:?}");
    audit_intact(&up).await;
}

/// A worker credential could delete or purge any stream but the three the
/// denies named (the hosts, the host keys: trust on first use again, the
/// commands), or create a stream that republishes or sources into a
/// subject it may not publish on. Workers now use what the set-up made and
/// nothing more: no stream is created, reconfigured, deleted or purged
/// with their credentials.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_creates_reconfigures_deletes_and_purges_no_stream() {
    use async_nats::jetstream::stream;
    let up = tokio::task::spawn_blocking(Up::start).await.unwrap();
    let worker = worker_bus(&up.url()).await;
    let hosts = topology::HOSTS.stream_name();
    let host_keys = topology::HOST_KEYS.stream_name();
    for (what, subject) in [
        ("delete", format!("$JS.API.STREAM.DELETE.{hosts}")),
        ("purge", format!("$JS.API.STREAM.PURGE.{host_keys}")),
        (
            "purge",
            format!("$JS.API.STREAM.PURGE.{}", topology::EVENTS.name),
        ),
        (
            "delete",
            format!("$JS.API.STREAM.MSG.DELETE.{}", topology::EVENTS.name),
        ),
        (
            "delete",
            format!("$JS.API.STREAM.DELETE.{}", topology::COMMANDS.name),
        ),
    ] {
        eprintln!("{what} {subject}");
        refused(
            &worker,
            &subject,
            worker.client.request(subject.clone(), "{\"seq\":1}".into()),
        )
        .await;
    }
    // A stream that would copy what a worker may publish into the command
    // stream's subjects, where no permission checks it again.
    let republish = stream::Config {
        name: "FORGE".into(),
        subjects: vec!["fleetroll.evt.forge".into()],
        republish: Some(stream::Republish {
            source: ">".into(),
            destination: "fleetroll.cmd.prober.forged".into(),
            headers_only: false,
        }),
        ..Default::default()
    };
    refused(
        &worker,
        "$JS.API.STREAM.CREATE.FORGE",
        worker.js.create_stream(republish),
    )
    .await;
    let commands_config = || async {
        worker
            .js
            .get_stream(topology::COMMANDS.name)
            .await
            .unwrap()
            .cached_info()
            .config
            .clone()
    };
    let mut commands = commands_config().await;
    commands.subjects.push("fleetroll.evt.>".into());
    let update = format!("$JS.API.STREAM.UPDATE.{}", topology::COMMANDS.name);
    refused(&worker, &update, worker.js.update_stream(commands)).await;

    // Everything is as the set-up left it.
    worker
        .js
        .get_stream(&hosts)
        .await
        .expect("the hosts bucket");
    worker
        .js
        .get_stream(&host_keys)
        .await
        .expect("the host keys");
    assert!(
        worker.js.get_stream("FORGE").await.is_err(),
        "no FORGE stream"
    );
    assert_eq!(
        commands_config().await.subjects,
        topology::COMMANDS
            .subjects
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    );
    audit_intact(&up).await;
}

/// A worker started before the mesh is set up makes no stream of its own:
/// it says what is missing and waits; `fleetroll setup`, as the admin NATS
/// user, sets the mesh up, and the worker starts. Set-up with another
/// user's credentials is refused at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_waits_for_the_set_up_which_only_the_admin_user_may_do() {
    use fleetroll_bus::embedded::{NatsUser, credentials_file};
    let dir = tempfile::tempdir().unwrap();
    let server = common::unset_server(dir.path()).await;
    let mut cli = common::Cli::new(dir.path());
    cli.nats_url = Some(server.url().to_string());
    let creds = |user: NatsUser| credentials_file(dir.path(), user).display().to_string();
    let worker_creds = creds(NatsUser::Role(Role::Worker));
    let worker_args = [
        "--nats-credentials",
        worker_creds.as_str(),
        "worker",
        "prober",
    ];
    let _worker = cli.spawn(&worker_args);
    let log = cli.log_of(&worker_args);
    let c = cli.clone();
    let refused_setup = tokio::task::spawn_blocking(move || {
        common::wait_until(
            "the worker says why it waits",
            Duration::from_secs(30),
            || std::fs::read_to_string(&log).is_ok_and(|l| l.contains("the mesh is not set up")),
        );
        c.run(&["--nats-credentials", &worker_creds, "setup"])
    })
    .await
    .unwrap();
    assert_eq!(refused_setup.code, 5, "{refused_setup:?}");
    assert!(
        refused_setup.stderr.contains("$JS.API.STREAM.CREATE")
            && refused_setup.stderr.contains("not allowed"),
        "{refused_setup:?}"
    );
    let bus = server.connect(Role::Worker).await.unwrap();
    for def in topology::STREAMS {
        assert!(
            bus.js.get_stream(def.name).await.is_err(),
            "nobody but the admin made {}",
            def.name
        );
    }

    let admin = creds(NatsUser::Admin);
    let c = cli.clone();
    let set_up =
        tokio::task::spawn_blocking(move || c.run(&["--nats-credentials", &admin, "setup"]))
            .await
            .unwrap();
    assert_eq!(set_up.code, 0, "{set_up:?}");
    for def in topology::STREAMS {
        bus.js.get_stream(def.name).await.unwrap();
    }
    let c = cli.clone();
    tokio::task::spawn_blocking(move || {
        common::wait_until("the prober is live", Duration::from_secs(30), || {
            c.replicas_of("prober") == 1
        })
    })
    .await
    .unwrap();
}

/// A revocation, once written, stays: it lives in a stream that refuses
/// deletes, purges and rollups, and it is the server's time of storing it
/// that revokes, not what it says. A worker credential cannot undo one:
/// not by deleting or purging it, not by writing a later one that claims
/// an earlier time, not through the old bucket keys.
#[tokio::test(flavor = "multi_thread")]
async fn a_revocation_cannot_be_undone_with_a_worker_credential() {
    let up = tokio::task::spawn_blocking(Up::start).await.unwrap();
    let cli = up.cli.clone();
    let (mallory, jti) = tokio::task::spawn_blocking(move || {
        let path = cli.issue_token("mallory", "relops");
        let mallory = common::credential_of(&path);
        let jti = jwt_id(&mallory.token);
        let revoked = cli.run(&["auth", "revoke", "--jti", &jti, "--reason", "left"]);
        assert_eq!(revoked.code, 0, "{revoked:?}");
        (mallory, jti)
    })
    .await
    .unwrap();
    let relops = up.bus_as(Role::Relops).await;
    let denied = |outcome: fleetroll_bus::messages::command::Outcome| {
        assert!(
            matches!(
                outcome.verdict,
                fleetroll_bus::messages::command::Verdict::Denied {
                    denial: fleetroll_bus::messages::command::Denial::Revoked { .. }
                }
            ),
            "{outcome:?}"
        );
    };
    let seed_as_mallory = |host: &str| {
        let seed = Command::SeedAdd {
            hostnames: vec![host.to_string()],
        };
        let (relops, mallory) = (relops.clone(), mallory.clone());
        async move {
            send::send(&relops, &mallory, seed, Duration::from_secs(30))
                .await
                .unwrap()
        }
    };
    denied(seed_as_mallory("one.example.com").await);

    let worker = worker_bus(&up.url()).await;
    let stream = topology::REVOCATIONS.name;
    for subject in [
        format!("$JS.API.STREAM.PURGE.{stream}"),
        format!("$JS.API.STREAM.MSG.DELETE.{stream}"),
        format!("$JS.API.STREAM.DELETE.{stream}"),
        format!("$JS.API.STREAM.UPDATE.{stream}"),
    ] {
        refused(
            &worker,
            &subject,
            worker.client.request(subject.clone(), "{\"seq\":1}".into()),
        )
        .await;
    }
    // A later message claiming the revocation happened before the token.
    let claim = codec::to_cbor(&Revocation {
        revoked_at: time::OffsetDateTime::UNIX_EPOCH,
        reason: "never mind".into(),
    });
    let subject = fleetroll_bus::subjects::revoked_token(&jti);
    worker
        .js
        .publish(subject.clone(), claim.clone().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let rolled = publish_rollup(&worker, &subject, "sub", claim).await;
    assert!(rolled.is_err(), "the stream took a rollup: {rolled:?}");
    let stored = worker
        .stored(&topology::REVOCATIONS, subject.clone())
        .await
        .unwrap();
    assert_eq!(stored.len(), 2, "the revocation and the claim, both kept");
    denied(seed_as_mallory("two.example.com").await);
    let seeds = worker.kv(&topology::SEEDS).await.unwrap();
    for host in ["one.example.com", "two.example.com"] {
        assert!(seeds.get(host).await.unwrap().is_none(), "{host} was added");
    }
    audit_intact(&up).await;
}

/// The `jti` of a token (its claims, unverified).
fn jwt_id(jwt: &str) -> String {
    use base64::Engine as _;
    let claims = jwt.split('.').nth(1).unwrap();
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims)
        .unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&claims).unwrap();
    claims["jti"].as_str().unwrap().to_string()
}

/// A command envelope captured off the wire (its token included) sends
/// nothing else: the operator's token is bound to a key only the operator
/// holds, and every envelope must be signed with it. A changed envelope,
/// the token in a new one, or a bearer token (bound to no key) is refused
/// and audited; the envelope replayed as it was runs no second time.
#[tokio::test(flavor = "multi_thread")]
async fn a_captured_envelope_or_token_sends_nothing_else() {
    use fleetroll_bus::messages::command::Denial;
    use fleetroll_bus::token::Credential;
    let up = tokio::task::spawn_blocking(Up::start).await.unwrap();
    let relops = up.bus_as(Role::Relops).await;
    let operator = up.credential();
    let seed = |host: &str| Command::SeedAdd {
        hostnames: vec![host.to_string()],
    };
    let wait = Duration::from_secs(30);
    let original = send::envelope(&operator, seed("one.example.com"), wait);
    let sent = send::send_envelope(&relops, &original, wait).await.unwrap();
    assert_eq!(sent.verdict.label(), "done", "{sent:?}");
    let worker = worker_bus(&up.url()).await;
    let seeds = worker.kv(&topology::SEEDS).await.unwrap();
    let first = seeds.entry("one.example.com").await.unwrap().unwrap();

    // The envelope changed: another command under the same proof.
    let mut altered = original.clone();
    altered.id = uuid::Uuid::now_v7().to_string();
    altered.command = seed("two.example.com");
    // The token alone, in an envelope of its own.
    let taken = send::envelope(
        &Credential::bearer(operator.token.clone()),
        seed("three.example.com"),
        wait,
    );
    for envelope in [&altered, &taken] {
        let outcome = send::send_envelope(&relops, envelope, wait).await.unwrap();
        assert!(
            matches!(
                &outcome.verdict,
                fleetroll_bus::messages::command::Verdict::Denied {
                    denial: Denial::Unproven
                }
            ),
            "{outcome:?}"
        );
    }
    // Replayed as it was: its one outcome again, nothing run twice.
    let replayed = send::send_envelope(&relops, &original, wait).await.unwrap();
    assert_eq!(replayed, sent);
    for host in ["two.example.com", "three.example.com"] {
        assert!(seeds.get(host).await.unwrap().is_none(), "{host} was added");
    }
    let now = seeds.entry("one.example.com").await.unwrap().unwrap();
    assert_eq!(now.revision, first.revision, "one.example.com written once");

    let cli = up.cli.clone();
    let (audit, verify, keyless, bearer) = tokio::task::spawn_blocking(move || {
        // A bearer token (bound to no key, as `auth issue` prints one) of
        // the same role reads, but sends no command.
        let issued = cli.run(&["auth", "issue", "--actor", "tester", "--role", "relops"]);
        assert_eq!(issued.code, 0, "{issued:?}");
        let mut with_bearer = cli.clone();
        with_bearer
            .env
            .push(("FLEETROLL_TOKEN".into(), issued.stdout.trim().to_string()));
        assert_eq!(with_bearer.run(&["inventory", "seed", "list"]).code, 0);
        let bearer = with_bearer.run(&["inventory", "seed", "add", "five.example.com"]);
        let token = cli.data_dir.join("copied.token");
        std::fs::copy(cli.data_dir.join("token"), &token).unwrap();
        let keyless = cli.run(&[
            "--token-file",
            token.to_str().unwrap(),
            "inventory",
            "seed",
            "add",
            "four.example.com",
        ]);
        (
            cli.run(&["audit", "list", "--json"]).json(),
            cli.run(&["audit", "verify"]),
            keyless,
            bearer,
        )
    })
    .await
    .unwrap();
    let denied: Vec<_> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["record"]["action"] == "seed_add" && r["record"]["outcome"] == "denied")
        .collect();
    assert_eq!(denied.len(), 3, "every refusal is audited: {audit:#}");
    assert_eq!(bearer.code, 5, "{bearer:?}");
    assert!(bearer.stderr.contains("bearer token"), "{bearer:?}");
    assert!(seeds.get("five.example.com").await.unwrap().is_none());
    assert_eq!(verify.code, 0, "{verify:?}");
    // A token file without the key beside it is refused before anything is sent.
    assert_eq!(keyless.code, 1, "{keyless:?}");
    assert!(keyless.stderr.contains("holder key"), "{keyless:?}");
}
