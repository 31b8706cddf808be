//! Sending a command and awaiting its outcome: the client half of the
//! command contract.

use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use futures::StreamExt;
use time::OffsetDateTime;

use crate::clock::{self, SkewError};
use crate::codec;
use crate::connect::{Bus, BusError};
use crate::messages::WorkerKind;
use crate::messages::command::{Command, CommandEnvelope, Outcome};
use crate::status;
use crate::subjects;
use crate::token::Credential;
use crate::topology;

/// Why no outcome came back.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    ClockSkew(#[from] SkewError),
    #[error(
        "no live {kind} worker: command {id} was not answered within {waited:?}. Start one (`fleetroll up`, or `fleetroll worker {kind}`); the command stays queued until its deadline and runs at most once"
    )]
    NoWorker {
        kind: WorkerKind,
        id: String,
        waited: Duration,
    },
    #[error(
        "{live} live {kind} worker(s) did not answer command {id} within {waited:?}; it stays queued until its deadline and runs at most once (see `fleetroll status`)"
    )]
    TimedOut {
        kind: WorkerKind,
        live: usize,
        id: String,
        waited: Duration,
    },
    #[error(
        "the command stream is missing: is the mesh set up? (`fleetroll setup`, or `fleetroll up` for its embedded server, creates it)"
    )]
    NoStream,
    #[error(
        "the command stream {stream} is full ({used} of its {limit} limit), so the command was refused and nothing was done: raise `[storage] max_bytes` (docs/configuration.md), or wait for old commands to age out"
    )]
    StreamFull {
        stream: &'static str,
        used: String,
        limit: String,
    },
}

/// Wraps a command in a fresh envelope whose deadline is `patience` away,
/// signed with the holder key when the credential has one.
pub fn envelope(credential: &Credential, command: Command, patience: Duration) -> CommandEnvelope {
    let now = OffsetDateTime::now_utc();
    let mut envelope = CommandEnvelope {
        id: uuid::Uuid::now_v7().to_string(),
        token: credential.token.clone(),
        sent_at: now,
        deadline: now + patience,
        command,
        proof: None,
    };
    if let Some(holder) = &credential.holder {
        envelope.prove(holder);
    }
    envelope
}

/// Sends a command and waits up to `wait` for its outcome.
///
/// ```no_run
/// # async fn run(bus: fleetroll_bus::Bus, token: String) -> Result<(), fleetroll_bus::send::SendError> {
/// use std::time::Duration;
/// use fleetroll_bus::messages::{WorkerKind, command::Command};
/// use fleetroll_bus::token::Credential;
/// let ping = Command::Ping { worker: WorkerKind::Prober, hold_ms: 0 };
/// let outcome = fleetroll_bus::send::send(&bus, &Credential::bearer(token), ping, Duration::from_secs(30)).await?;
/// println!("{:?}", outcome.verdict);
/// # Ok(()) }
/// ```
pub async fn send(
    bus: &Bus,
    credential: &Credential,
    command: Command,
    wait: Duration,
) -> Result<Outcome, SendError> {
    send_envelope(bus, &envelope(credential, command, wait), wait).await
}

/// Publishes an envelope (once, whatever retries happen) and waits for its
/// outcome. Refuses when the local clock is too far off the server's.
pub async fn send_envelope(
    bus: &Bus,
    envelope: &CommandEnvelope,
    wait: Duration,
) -> Result<Outcome, SendError> {
    clock::check(clock::measure_skew_ms(bus).await?)?;
    publish(bus, envelope).await?;
    await_outcome(bus, &envelope.id, envelope.command.worker(), wait).await
}

/// Publishes an envelope with its id as `Nats-Msg-Id`: the stream keeps a
/// second publish of the same id (within the duplicate window) out. Returns
/// whether the stream called it a duplicate.
pub async fn publish(bus: &Bus, envelope: &CommandEnvelope) -> Result<bool, SendError> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, envelope.id.as_str());
    let subject = subjects::command(&envelope.command);
    let ack = bus
        .unless_refused("publishing the command", &subject, async {
            bus.js
                .publish_with_headers(subject.clone(), headers, codec::to_cbor(envelope).into())
                .await?
                .await
        })
        .await?;
    let ack = match ack {
        Ok(ack) => ack,
        Err(e) if e.kind() == PublishErrorKind::StreamNotFound => return Err(SendError::NoStream),
        Err(e) if e.to_string().contains("maximum bytes exceeded") => {
            return Err(full(bus).await);
        }
        Err(e) => return Err(BusError::js("publishing the command", e).into()),
    };
    Ok(ack.duplicate)
}

/// The refusal of a full command stream, with how full it is.
async fn full(bus: &Bus) -> SendError {
    let name = topology::COMMANDS.name;
    let sizes = async {
        let mut stream = bus.js.get_stream(name).await.ok()?;
        let info = stream.info().await.ok()?;
        Some((info.state.bytes, info.config.max_bytes))
    };
    let (used, limit) = sizes.await.unwrap_or_default();
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1 << 20) as f64);
    SendError::StreamFull {
        stream: name,
        used: mib(used),
        limit: mib(u64::try_from(limit).unwrap_or_default()),
    }
}

/// Waits for the outcome of command `id`, which `kind` workers execute.
pub async fn await_outcome(
    bus: &Bus,
    id: &str,
    kind: WorkerKind,
    wait: Duration,
) -> Result<Outcome, SendError> {
    let outcomes = bus.kv(&topology::OUTCOMES).await?;
    // With history: an outcome recorded before we started watching counts.
    let mut watch = outcomes
        .watch_with_history(id)
        .await
        .map_err(|e| BusError::js("watching for the outcome", e))?;
    let found = tokio::time::timeout(wait, async {
        while let Some(entry) = watch.next().await {
            let Ok(entry) = entry else { continue };
            if entry.operation == async_nats::jetstream::kv::Operation::Put {
                return Some(entry);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(entry)) => codec::from_cbor(&entry.value).map_err(|source| {
            BusError::Decode {
                place: format!("outcome of {id}"),
                source,
            }
            .into()
        }),
        Ok(None) | Err(_) => {
            let live = status::live_replicas(bus, kind).await.unwrap_or(0);
            Err(if live == 0 {
                SendError::NoWorker {
                    kind,
                    id: id.to_string(),
                    waited: wait,
                }
            } else {
                SendError::TimedOut {
                    kind,
                    live,
                    id: id.to_string(),
                    waited: wait,
                }
            })
        }
    }
}
