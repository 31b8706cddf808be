//! Every message type round-trips through the codec, and what is not a
//! message of this schema version is refused with an error that says why.

use fleetroll_bus::codec::{self, DecodeError, Message};
use fleetroll_bus::messages::audit::{AuditQuery, AuditRecord, OverrideSnapshot};
use fleetroll_bus::messages::auth::{Revocation, VerifyingKeyRecord};
use fleetroll_bus::messages::command::{Command, CommandEnvelope, Denial, Outcome, Reply, Verdict};
use fleetroll_bus::messages::event::{Event, EventDetail};
use fleetroll_bus::messages::host::{
    Drift, DriftType, HostHistory, HostIntent, HostKeyPin, HostList, HostName, HostQuery,
    HostRecord, Observation, PinSource, Population, PopulationList, ProbeJob,
};
use fleetroll_bus::messages::rollout::GateEvaluation;
use fleetroll_bus::messages::workload::{
    ExpectedPool, PoolRule, Quarantine, RUN_REASONS, RunCount, RunResult, TaskRun, Workload,
    WorkloadSweep,
};
use fleetroll_bus::messages::{Heartbeat, NoParams, Seed, SeedList, WorkerKind};
use serde::Serialize;
use time::OffsetDateTime;

fn at() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_790_000_000).unwrap()
}

fn round_trips<T: Message + PartialEq + std::fmt::Debug>(message: T) {
    assert_eq!(
        codec::from_cbor::<T>(&codec::to_cbor(&message)).unwrap(),
        message,
        "CBOR {}",
        T::KIND
    );
    assert_eq!(
        codec::from_json::<T>(&codec::to_json(&message)).unwrap(),
        message,
        "JSON {}",
        T::KIND
    );
}

fn commands() -> Vec<Command> {
    vec![
        Command::Ping {
            worker: WorkerKind::Auditor,
            hold_ms: 1500,
        },
        Command::SeedAdd {
            hostnames: vec!["a.example.com".into(), "b".into()],
        },
        Command::SeedRemove {
            hostnames: vec!["a.example.com".into()],
        },
    ]
}

fn verdicts() -> Vec<Verdict> {
    let denials = vec![
        Denial::Missing,
        Denial::Garbled { detail: "x".into() },
        Denial::Forged,
        Denial::Expired {
            expired_at: "then".into(),
        },
        Denial::Revoked {
            jti: "j".into(),
            revoked_at: "now".into(),
        },
        Denial::WrongRole {
            role: "readonly".into(),
            action: "seed_add".into(),
            allowed: "relops".into(),
        },
        Denial::ClockSkew { skew_ms: -31_000 },
        Denial::NoSigningKey,
    ];
    let mut verdicts: Vec<Verdict> = denials
        .into_iter()
        .map(|denial| Verdict::Denied { denial })
        .collect();
    verdicts.extend([
        Verdict::Done {
            reply: Reply::Pong {
                worker: WorkerKind::Prober,
                instance: "prober-1".into(),
            },
        },
        Verdict::Done {
            reply: Reply::SeedsChanged {
                changed: vec!["a".into()],
                unchanged: vec![],
            },
        },
        Verdict::Invalid {
            message: "bad".into(),
        },
        Verdict::Refused {
            message: "gates".into(),
        },
        Verdict::Failed {
            message: "ssh".into(),
        },
    ]);
    verdicts
}

#[test]
fn every_message_type_round_trips() {
    for command in commands() {
        round_trips(command.clone());
        for proof in [None, Some("c2lnbmF0dXJl".to_string())] {
            round_trips(CommandEnvelope {
                id: "0190-abc".into(),
                token: "jwt".into(),
                sent_at: at(),
                deadline: at(),
                command: command.clone(),
                proof,
            });
        }
    }
    for verdict in verdicts() {
        round_trips(Outcome {
            command_id: "id".into(),
            command: "seed_add".into(),
            actor: Some("alice@example.com".into()),
            verdict,
            handled_by: "prober-1".into(),
            delivery: 2,
            finished_at: at(),
        });
    }
    for kind in WorkerKind::ALL {
        round_trips(Heartbeat {
            kind,
            instance: "i".into(),
            hostname: "h".into(),
            pid: 7,
            started_at: at(),
            version: "0.1.0".into(),
            clock_skew_ms: -3,
            commands_handled: 9,
        });
    }
    let seed = Seed {
        hostname: "h".into(),
        added_at: at(),
        added_by: "alice".into(),
    };
    round_trips(seed.clone());
    round_trips(SeedList { seeds: vec![seed] });
    round_trips(NoParams {});
    round_trips(VerifyingKeyRecord {
        public_key: "abc".into(),
        published_at: at(),
    });
    round_trips(Revocation {
        revoked_at: at(),
        reason: "left the team".into(),
    });
    round_trips(Event {
        at: at(),
        source: "prober-1".into(),
        detail: EventDetail::CommandFinished {
            command: Box::new(Command::SeedAdd {
                hostnames: vec!["h1.example.com".into()],
            }),
            outcome: Outcome {
                command_id: "id".into(),
                command: "seed_add".into(),
                actor: None,
                verdict: Verdict::Denied {
                    denial: Denial::Forged,
                },
                handled_by: "prober-1".into(),
                delivery: 1,
                finished_at: at(),
            },
            claimed_actor: Some("mallory".into()),
        },
    });
    let mut record = AuditRecord::example();
    record.at = at();
    round_trips(record);
    let snapshot = OverrideSnapshot::take(
        "h1.example.com",
        "before apply",
        Some(b"\xffPUPPET_BRANCH=x\n"),
    );
    assert_eq!(
        snapshot.content().unwrap(),
        b"\xffPUPPET_BRANCH=x\n",
        "exact bytes, UTF-8 or not"
    );
    round_trips(snapshot);
    assert_eq!(
        OverrideSnapshot::take("h1.example.com", "observed", None).content(),
        None
    );
    round_trips(AuditQuery {
        host: Some("h1.example.com".into()),
        since: Some(at()),
        ..Default::default()
    });
}

fn observation_for_history() -> Observation {
    let mut o = Observation::discovered("h1.example.com", at());
    o.override_present = Some(false);
    o.probed_at = Some(at());
    o
}

#[test]
fn every_host_and_workload_message_round_trips() {
    let mut observation = Observation::discovered("h1.example.com", at());
    observation.role = Some("gecko_t_linux_talos".into());
    observation.override_contents = Some("PUPPET_BRANCH=\"$(x)\"\n".into());
    round_trips(observation.clone());
    round_trips(HostKeyPin::first_contact(
        "ssh-ed25519 AAAA".into(),
        "SHA256:x".into(),
        at(),
    ));
    round_trips(HostKeyPin {
        other_keys: vec!["ecdsa-sha2-nistp256 AAAB".into()],
        cert_authorities: vec!["ssh-ed25519 AAAC".into()],
        revoked: vec!["ssh-ed25519 AAAD".into()],
        source: PinSource::KnownHosts {
            file: "/etc/ssh/ssh_known_hosts".into(),
        },
        ..HostKeyPin::first_contact(String::new(), String::new(), at())
    });
    let intent = HostIntent {
        expected_role: Some("r".into()),
        population: Some("p".into()),
        disabled: true,
        disabled_reason: Some("disk".into()),
        disabled_by: Some("alice".into()),
        disabled_at: Some(at()),
    };
    round_trips(intent.clone());
    let population = Population {
        name: "p".into(),
        expected_role: "r".into(),
        target_query: Some("role:r".into()),
        description: None,
        created_at: at(),
        created_by: "alice".into(),
    };
    round_trips(population.clone());
    round_trips(PopulationList {
        populations: vec![population],
    });
    round_trips(Drift {
        types: DriftType::ALL.to_vec(),
        healthy: Some(false),
        computed_at: at(),
    });
    let workload = Workload {
        source: "taskcluster".into(),
        expected_pool: Some(ExpectedPool {
            pool: "releng-hardware/gecko-t-linux-talos-1804".into(),
            rule: PoolRule::Table,
        }),
        worker_pool: Some("releng-hardware/gecko-t-linux-talos-1804".into()),
        worker_group: Some("mdc1".into()),
        worker_id: "h1".into(),
        state: Some("standalone".into()),
        capacity: Some(0),
        provider_id: Some("none".into()),
        last_active: Some(at()),
        first_claim: Some(at()),
        latest_task: Some("fN1SbArXTPSVFNUvaOlinQ/0".into()),
        quarantine: Some(Quarantine {
            until: at(),
            by: Some("mozilla-auth0/ad|Mozilla-LDAP|relops".into()),
            at: Some(at()),
            reason: Some("bad disk".into()),
        }),
        collected_at: at(),
        error: None,
        recorded: vec!["fN1SbArXTPSVFNUvaOlinQ/0".into()],
        pending: Vec::new(),
    };
    round_trips(workload.clone());
    let record = HostRecord {
        observation,
        intent,
        drift: vec![DriftType::Role],
        healthy: Some(true),
        workload: Some(workload),
    };
    round_trips(record.clone());
    round_trips(HostList {
        hosts: vec![record],
        next: Some("h1.example.com".into()),
    });
    round_trips(HostQuery {
        filter: "role:r".into(),
        after: Some("a".into()),
        limit: Some(10),
    });
    let mut changed = observation_for_history();
    changed.override_present = Some(true);
    let history = HostHistory::of("h1.example.com", vec![observation_for_history(), changed]);
    assert_eq!(history.entries[1].changes.len(), 1, "{history:?}");
    assert_eq!(history.entries[1].changes[0].field, "override_present");
    round_trips(history);
    round_trips(HostName {
        hostname: "h1.example.com".into(),
    });
    round_trips(ProbeJob {
        hostname: "h1.example.com".into(),
        requested_at: at(),
        origin: "schedule".into(),
        fast: true,
    });
    round_trips(TaskRun {
        hostname: "h1.example.com".into(),
        worker_pool: "releng-hardware/gecko-t-linux-talos".into(),
        task_id: "fN1SbArXTPSVFNUvaOlinQ".into(),
        run_id: 0,
        result: RunResult::Failed,
        reason: Some("failed".into()),
        started: Some(at()),
        resolved: at(),
    });
    round_trips(WorkloadSweep {
        requested_at: at(),
        origin: "workload-60-1".into(),
    });
}

#[derive(Serialize)]
struct Frame<'a, B: Serialize> {
    kind: &'a str,
    v: u16,
    body: B,
}

fn cbor<B: Serialize>(kind: &str, v: u16, body: B) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(&Frame { kind, v, body }, &mut out).unwrap();
    out
}

#[test]
fn unknown_schema_version_is_refused_by_name() {
    let body = Command::Ping {
        worker: WorkerKind::Prober,
        hold_ms: 0,
    };
    let err = codec::from_cbor::<Command>(&cbor("command", 2, &body)).unwrap_err();
    assert_eq!(
        err,
        DecodeError::UnknownVersion {
            kind: "command",
            got: 2,
            supported: 1
        }
    );
    assert!(err.to_string().contains("schema version 2"), "{err}");
    let json = br#"{"kind":"command","v":7,"body":{"type":"ping","worker":"prober","hold_ms":0}}"#;
    assert!(matches!(
        codec::from_json::<Command>(json),
        Err(DecodeError::UnknownVersion { got: 7, .. })
    ));
}

#[test]
fn wrong_kind_garbage_and_bad_bodies_are_refused() {
    let seed = Seed {
        hostname: "h".into(),
        added_at: at(),
        added_by: "a".into(),
    };
    assert!(matches!(
        codec::from_cbor::<Command>(&codec::to_cbor(&seed)),
        Err(DecodeError::WrongKind {
            expected: "command",
            ..
        })
    ));
    assert!(matches!(
        codec::from_cbor::<Command>(b"\xff\x00garbage"),
        Err(DecodeError::Malformed { .. })
    ));
    assert!(matches!(
        codec::from_json::<Command>(b"{not json"),
        Err(DecodeError::Malformed { .. })
    ));
    let unknown_command = cbor("command", 1, serde_json::json!({"type": "format_disk"}));
    assert!(matches!(
        codec::from_cbor::<Command>(&unknown_command),
        Err(DecodeError::BadBody { .. })
    ));
}

/// Found by fuzzing (`fuzz/regressions/messages/json-float-not-exact`,
/// less its first byte, which picks the type): a rate written as JSON was
/// read back as the float next to it.
#[test]
fn floats_read_back_from_json_exactly() {
    let cbor = &include_bytes!("../../fuzz/regressions/messages/json-float-not-exact")[1..];
    let evaluation: GateEvaluation = codec::from_cbor(cbor).unwrap();
    let rate = evaluation.baseline.success_rate;
    let back: GateEvaluation = codec::from_json(&codec::to_json(&evaluation)).unwrap();
    assert_eq!(back.baseline.success_rate, rate);
    assert_eq!(back, evaluation);
}

/// Found by fuzzing (`fuzz/regressions/messages/bytes-after-the-message`,
/// less its first byte): CBOR was read up to the end of the message and
/// whatever followed it ignored, so a payload with more in it passed for
/// the message. JSON refuses the same.
#[test]
fn bytes_after_a_message_are_refused() {
    let payload = &include_bytes!("../../fuzz/regressions/messages/bytes-after-the-message")[1..];
    let err = codec::from_cbor::<HostQuery>(payload).unwrap_err();
    assert!(
        matches!(&err, DecodeError::Malformed { detail, .. } if detail.contains("follow the message")),
        "{err}"
    );
    let query = HostQuery {
        filter: "role:x".into(),
        ..Default::default()
    };
    let padded = [codec::to_cbor(&query), vec![0]].concat();
    assert!(codec::from_cbor::<HostQuery>(&padded).is_err());
    let padded = [codec::to_json(&query), b" x".to_vec()].concat();
    assert!(codec::from_json::<HostQuery>(&padded).is_err());
}

#[test]
fn runs_count_by_who_caused_their_end() {
    let run = |result, reason: Option<&str>| TaskRun {
        hostname: "h1".into(),
        worker_pool: "releng-hardware/gecko-t-linux-talos-1804".into(),
        task_id: "fN1SbArXTPSVFNUvaOlinQ".into(),
        run_id: 0,
        result,
        reason: reason.map(String::from),
        started: None,
        resolved: at(),
    };
    use RunResult::*;
    let cases = [
        (Completed, Some("completed"), RunCount::Success),
        (Failed, Some("failed"), RunCount::Failure),
        (Exception, Some("claim-expired"), RunCount::Failure),
        (Exception, Some("worker-shutdown"), RunCount::Failure),
        (Exception, Some("internal-error"), RunCount::Failure),
        (Exception, Some("canceled"), RunCount::NotTheHost),
        (Exception, Some("superseded"), RunCount::NotTheHost),
        (Exception, Some("deadline-exceeded"), RunCount::NotTheHost),
        (Exception, Some("malformed-payload"), RunCount::NotTheHost),
        (
            Exception,
            Some("resource-unavailable"),
            RunCount::NotTheHost,
        ),
        // What cannot be judged counts against the host.
        (Exception, Some("a-reason-added-later"), RunCount::Failure),
        (Exception, None, RunCount::Failure),
        (Completed, None, RunCount::Success),
    ];
    for (result, reason, expected) in cases {
        assert_eq!(run(result, reason).counts_as(), expected, "{reason:?}");
    }
    // Every reason Taskcluster's task-status schema names is in the table.
    for reason in [
        "completed",
        "failed",
        "deadline-exceeded",
        "canceled",
        "claim-expired",
        "worker-shutdown",
        "malformed-payload",
        "resource-unavailable",
        "internal-error",
        "intermittent-task",
        "superseded",
    ] {
        assert!(RUN_REASONS.iter().any(|(r, _)| *r == reason), "{reason}");
    }
}

/// A pin written before known_hosts imports (key, fingerprint, time only)
/// still decodes: an upgraded mesh keeps its pins.
#[test]
fn a_pin_of_the_first_version_still_decodes() {
    #[derive(Debug, Serialize, serde::Deserialize)]
    struct FirstPin {
        key: String,
        fingerprint: String,
        #[serde(with = "time::serde::rfc3339")]
        pinned_at: time::OffsetDateTime,
    }
    impl Message for FirstPin {
        const KIND: &'static str = "host_key_pin";
        const VERSION: u16 = 1;
    }
    let old = codec::to_cbor(&FirstPin {
        key: "ssh-ed25519 AAAA".into(),
        fingerprint: "SHA256:x".into(),
        pinned_at: at(),
    });
    let pin: HostKeyPin = codec::from_cbor(&old).unwrap();
    assert_eq!(
        pin,
        HostKeyPin::first_contact("ssh-ed25519 AAAA".into(), "SHA256:x".into(), at())
    );
}
