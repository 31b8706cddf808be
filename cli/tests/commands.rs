//! The command contract end to end: ids, redelivery, exactly-once.

mod common;

use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use common::{Bare, Up, kill, wait_until};
use fleetroll_bus::codec;
use fleetroll_bus::connect::Bus;
use fleetroll_bus::messages::Seed;
use fleetroll_bus::messages::WorkerKind;
use fleetroll_bus::messages::command::{Command, Outcome};
use fleetroll_bus::messages::event::Event;
use fleetroll_bus::token::Role;
use fleetroll_bus::{send, subjects, topology};
use futures::StreamExt;

/// Messages on `subject` in `stream`, as stored by the server.
async fn count(bus: &Bus, stream: &str, subject: &str) -> usize {
    let stream = bus.js.get_stream(stream).await.unwrap();
    let info = stream.info_with_subjects(subject).await.unwrap();
    let mut subjects = info;
    let mut total = 0;
    while let Some(Ok((_, n))) = subjects.next().await {
        total += n;
    }
    total
}

/// The durable consumer a worker kind's replicas share.
async fn worker_consumer(bus: &Bus, kind: WorkerKind) -> PullConsumer {
    bus.js
        .get_stream(topology::COMMANDS.name)
        .await
        .unwrap()
        .get_consumer(&topology::consumer_name(kind))
        .await
        .unwrap()
}

async fn outcome_revisions(bus: &Bus, id: &str) -> usize {
    let outcomes = bus.kv(&topology::OUTCOMES).await.unwrap();
    let mut history = outcomes.history(id).await.unwrap();
    let mut n = 0;
    while let Some(Ok(_)) = history.next().await {
        n += 1;
    }
    n
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_command_id_twice_is_executed_once() {
    let up = tokio::task::spawn_blocking(Up::start).await.unwrap();
    // Commands are the operators' to publish: NATS refuses them to workers.
    let bus = up.bus_as(Role::Relops).await;
    let envelope = send::envelope(
        &up.credential(),
        Command::SeedAdd {
            hostnames: vec!["once.example.com".into()],
        },
        Duration::from_secs(30),
    );
    assert!(
        !send::publish(&bus, &envelope).await.unwrap(),
        "first publish is new"
    );
    assert!(
        send::publish(&bus, &envelope).await.unwrap(),
        "second publish is a duplicate"
    );
    let outcome = send::await_outcome(
        &bus,
        &envelope.id,
        WorkerKind::Prober,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_eq!(outcome.verdict.label(), "done", "{outcome:?}");
    assert_eq!(
        count(
            &bus,
            topology::COMMANDS.name,
            &subjects::command(&envelope.command)
        )
        .await,
        1
    );

    // Past the stream's duplicate window (a different message id, same
    // command id) the worker still finds the outcome and does not run it again.
    let seeds = bus.kv(&topology::SEEDS).await.unwrap();
    let first_seed: Seed =
        codec::from_cbor(&seeds.get("once.example.com").await.unwrap().unwrap()).unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "another-message-id");
    bus.js
        .publish_with_headers(
            subjects::command(&envelope.command),
            headers,
            codec::to_cbor(&envelope).into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(
        count(
            &bus,
            topology::COMMANDS.name,
            &subjects::command(&envelope.command)
        )
        .await,
        2
    );
    let mut consumer = worker_consumer(&bus, WorkerKind::Prober).await;
    for _ in 0..100 {
        let info = consumer.info().await.unwrap();
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        consumer.info().await.unwrap().num_ack_pending,
        0,
        "the redelivered copy was acknowledged"
    );
    assert_eq!(
        outcome_revisions(&bus, &envelope.id).await,
        1,
        "one outcome, written once"
    );
    assert_eq!(
        count(
            &bus,
            topology::EVENTS.name,
            &subjects::command_events(&envelope.id)
        )
        .await,
        1
    );
    let seed_after: Seed =
        codec::from_cbor(&seeds.get("once.example.com").await.unwrap().unwrap()).unwrap();
    assert_eq!(seed_after, first_seed);
    let seed_history = seeds
        .history("once.example.com")
        .await
        .unwrap()
        .count()
        .await;
    assert_eq!(seed_history, 1, "the seed was written once");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_before_acking_leaves_the_command_to_its_successor_once() {
    let bare = Bare::start().await;
    let bus = bare.bus().await;
    let cli = bare.cli.clone();
    let mut first = cli.spawn(&["worker", "gatekeeper"]);
    let c = cli.clone();
    tokio::task::spawn_blocking(move || {
        wait_until("the first gatekeeper", Duration::from_secs(30), || {
            c.replicas_of("gatekeeper") == 1
        })
    })
    .await
    .unwrap();

    // The operator's ping: the worker holds it 3 s before answering.
    let c = cli.clone();
    let ping = tokio::task::spawn_blocking(move || {
        c.run(&[
            "ping",
            "--worker",
            "gatekeeper",
            "--hold",
            "3s",
            "--timeout",
            "90s",
            "--json",
        ])
    });

    let mut consumer = worker_consumer(&bus, WorkerKind::Gatekeeper).await;
    let mut delivered = false;
    for _ in 0..200 {
        if consumer.info().await.unwrap().num_ack_pending == 1 {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(delivered, "the first gatekeeper received the command");
    kill(&mut first, libc::SIGKILL);
    let _ = first.wait();
    let outcomes = bus.kv(&topology::OUTCOMES).await.unwrap();
    assert_eq!(
        outcomes.keys().await.unwrap().count().await,
        0,
        "killed before finishing"
    );

    let mut second = cli.spawn(&["worker", "gatekeeper"]);
    let run = ping.await.unwrap();
    kill(&mut second, libc::SIGTERM);
    let _ = second.wait();
    assert_eq!(run.code, 0, "{run:?}");
    let reply = run.json();
    assert_eq!(reply[0]["ok"], true, "{reply}");
    assert_eq!(
        reply[0]["delivery"], 2,
        "answered by the second delivery: {reply}"
    );

    let ids: Vec<String> = outcomes
        .keys()
        .await
        .unwrap()
        .filter_map(|k| async { k.ok() })
        .collect()
        .await;
    assert_eq!(ids.len(), 1, "exactly one outcome");
    let outcome: Outcome =
        codec::from_cbor(&outcomes.get(&ids[0]).await.unwrap().unwrap()).unwrap();
    assert_eq!(outcome.delivery, 2);
    assert_eq!(outcome_revisions(&bus, &ids[0]).await, 1);
    assert_eq!(
        count(
            &bus,
            topology::EVENTS.name,
            &subjects::command_events(&ids[0])
        )
        .await,
        1,
        "executed once"
    );
    let events = bus.js.get_stream(topology::EVENTS.name).await.unwrap();
    let last = events
        .get_last_raw_message_by_subject(&subjects::command_finished(&ids[0], "done"))
        .await
        .unwrap();
    let event: Event = codec::from_cbor(&last.payload).unwrap();
    assert_eq!(event.source, outcome.handled_by);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_nobody_answers_says_so_and_is_not_run_after_its_deadline() {
    let bare = Bare::start().await;
    let cli = bare.cli.clone();
    let run = tokio::task::spawn_blocking(move || {
        cli.run(&["ping", "--worker", "auditor", "--timeout", "2s"])
    })
    .await
    .unwrap();
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("no live auditor worker"), "{run:?}");

    // An auditor that turns up later finds the command past its deadline:
    // it records a refusal instead of running it by surprise.
    let mut late = bare.cli.spawn(&["worker", "auditor"]);
    let bus = bare.bus().await;
    let outcomes = bus.kv(&topology::OUTCOMES).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..120 {
        ids = outcomes
            .keys()
            .await
            .unwrap()
            .filter_map(|k| async { k.ok() })
            .collect()
            .await;
        if !ids.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    kill(&mut late, libc::SIGTERM);
    let _ = late.wait();
    assert_eq!(ids.len(), 1, "the queued command got an outcome");
    let outcome: Outcome =
        codec::from_cbor(&outcomes.get(&ids[0]).await.unwrap().unwrap()).unwrap();
    assert_eq!(outcome.verdict.label(), "refused", "{outcome:?}");
    assert_eq!(outcome.actor.as_deref(), Some("tester"));
}

#[test]
fn shell_completions_are_valid_scripts() {
    let dir = tempfile::tempdir().unwrap();
    let cli = common::Cli::new(dir.path());
    let bash = cli.run(&["completions", "bash"]);
    assert_eq!(bash.code, 0, "{bash:?}");
    assert!(bash.stdout.contains("inventory") && bash.stdout.contains("assign-population"));
    let path = dir.path().join("fleetroll.bash");
    std::fs::write(&path, &bash.stdout).unwrap();
    let check = std::process::Command::new("bash")
        .arg("-n")
        .arg(&path)
        .status()
        .unwrap();
    assert!(check.success(), "bash -n refused the completion script");
    let zsh = cli.run(&["completions", "zsh"]);
    assert!(zsh.stdout.contains("#compdef fleetroll"), "{zsh:?}");
    let bad = cli.run(&["completions", "tcsh"]);
    assert_eq!(bad.code, 1, "a bad argument is invalid input: {bad:?}");
    assert!(bad.stderr.contains("tcsh"), "{bad:?}");
    assert_eq!(cli.run(&["--help"]).code, 0);
}

/// Junk on the bus, written with the credentials that may write there (a
/// relops user's for commands, the workers' for jobs), is set aside at
/// once and shown, never retried forever: a command id that is no UUID
/// (once the outcome's bucket key), one of 5 KiB (past nats-server's
/// control-line limit in a subject), bytes that are no command, and an
/// unreadable apply job. The workers go on serving; `fleetroll status`
/// and the audit log name every one.
#[tokio::test(flavor = "multi_thread")]
async fn junk_on_the_bus_is_set_aside_shown_and_audited() {
    let up = tokio::task::spawn_blocking(Up::start).await.unwrap();
    let relops = up.bus_as(Role::Relops).await;
    let ping = Command::Ping {
        worker: WorkerKind::Prober,
        hold_ms: 0,
    };
    let mut bad_key = send::envelope(&up.credential(), ping.clone(), Duration::from_secs(60));
    bad_key.id = "not a key.*".into();
    let mut huge = send::envelope(&up.credential(), ping.clone(), Duration::from_secs(60));
    huge.id = uuid::Uuid::now_v7().to_string().repeat(140);
    let junk: [(&str, Vec<u8>); 3] = [
        ("fleetroll.cmd.prober.ping", codec::to_cbor(&bad_key)),
        ("fleetroll.cmd.prober.ping", codec::to_cbor(&huge)),
        (
            "fleetroll.cmd.orchestrator.rollout_start",
            b"\xff\x00junk".to_vec(),
        ),
    ];
    for (subject, payload) in junk {
        relops
            .js
            .publish(subject, payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let worker = common::worker_bus(&up.url()).await;
    worker
        .js
        .publish(
            subjects::apply_job("ro-x", "h.example.com"),
            b"\x00junk".to_vec().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();

    let cli = up.cli.clone();
    let status = tokio::task::spawn_blocking(move || {
        let mut status = serde_json::Value::Null;
        wait_until("four messages set aside", Duration::from_secs(30), || {
            status = cli.run(&["status", "--json"]).json();
            status["set_aside"]["total"] == 4
        });
        status
    })
    .await
    .unwrap();
    let reasons: Vec<String> = status["set_aside"]["latest"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["reason"].as_str().unwrap_or("").to_string())
        .collect();
    for wanted in [
        "the command id `not a key.*` is not a UUID",
        "is not a UUID",
        "unreadable command",
        "unreadable apply job",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(wanted)),
            "{wanted}: {reasons:?}"
        );
    }
    let human = up.cli.run(&["status"]);
    assert!(
        human.stdout.contains("4 message(s) given up on"),
        "{human:?}"
    );

    // Nothing is left to come back, and every kind still answers.
    let mut prober = worker_consumer(&relops, WorkerKind::Prober).await;
    let info = prober.info().await.unwrap();
    assert_eq!(info.num_ack_pending, 0, "{info:?}");
    let cli = up.cli.clone();
    let audit = tokio::task::spawn_blocking(move || {
        let ping = cli.run(&["ping"]);
        assert_eq!(ping.code, 0, "{ping:?}");
        let mut records = Vec::new();
        wait_until(
            "the set-aside messages audited",
            Duration::from_secs(30),
            || {
                let list = cli.run(&["audit", "list", "--json"]).json();
                records = list
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|r| r["record"]["action"] == "message_set_aside")
                    .cloned()
                    .collect();
                records.len() == 4
            },
        );
        records
    })
    .await
    .unwrap();
    let bad = audit
        .iter()
        .find(|r| {
            r["record"]["reason"]
                .as_str()
                .is_some_and(|m| m.contains("not a key.*"))
        })
        .expect("the bad id's record");
    assert!(
        bad["record"]["message"]
            .as_str()
            .unwrap()
            .contains("fleetroll.cmd.prober.ping"),
        "{bad:#}"
    );
    assert!(bad["record"]["claimed_actor"].is_string(), "{bad:#}");
    assert_eq!(
        bad["record"]["command_id"],
        serde_json::Value::Null,
        "{bad:#}"
    );
}
