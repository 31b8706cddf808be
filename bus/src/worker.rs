//! The worker loop every worker kind runs: take commands from the kind's
//! durable pull consumer, verify, act, record the outcome exactly once, then
//! acknowledge; and keep a heartbeat in the workers bucket.
//!
//! Exactly once: the outcome is written with a compare-and-swap create under
//! the command id *before* the message is acknowledged. A replica that dies
//! before the ack lets the message be redelivered to another replica, which
//! finds the outcome (and only re-announces it) or, if there is none, runs
//! the command. Handlers make their own effects idempotent per command id.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, kv};
use futures::StreamExt;
use time::OffsetDateTime;
use tokio::sync::Semaphore;
use tracing::{Instrument, info, info_span, warn};

use crate::codec;
use crate::connect::{Bus, BusError};
use crate::lease::{self, Claim};
use crate::messages::command::{Command, CommandEnvelope, Denial, Outcome, Reply, Verdict};
use crate::messages::event::{Event, EventDetail};
use crate::messages::{Heartbeat, WorkerKind};
use crate::setup;
use crate::subjects;
use crate::token::Claims;
use crate::topology;
use crate::verify::{Verifier, VerifyError};

/// How many commands one replica works on at once.
const CONCURRENCY: usize = 16;
/// Progress acks keep a long command or job from being redelivered while
/// its replica lives: four of them per [`topology::TAKEOVER_WAIT`], so
/// three may come late.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// How long one pull for the next message waits on the server. A pull lost
/// with the connection is given up 5 s after that (async-nats), so a
/// replica pulls again at most 7 s after NATS comes back.
const PULL_EXPIRES: Duration = Duration::from_secs(2);

/// What a worker kind does with the commands it owns.
pub trait Handler: Send + Sync + 'static {
    /// Carries out one verified command and says how it ended.
    fn handle(
        &self,
        ctx: &CommandContext,
        command: &Command,
    ) -> impl Future<Output = Verdict> + Send;

    /// Whether the command acts on a host (converge, reboot): its replica
    /// then holds a lease on it while it runs ([`crate::lease`]), and a
    /// replica it is redelivered to meanwhile does not run it again.
    fn acts_on_host(&self, _command: &Command) -> bool {
        false
    }
}

/// Who asked, and what for; given to a handler with each command.
#[derive(Debug, Clone)]
pub struct CommandContext {
    pub command_id: String,
    /// When the sender sent it (the sender's clock).
    pub sent_at: OffsetDateTime,
    pub actor: String,
    pub claims: Claims,
    pub instance: String,
    pub bus: Bus,
}

/// Identity of one worker replica.
#[derive(Clone)]
pub struct Replica {
    pub kind: WorkerKind,
    pub instance: String,
    pub started_at: OffsetDateTime,
    pub verifier: Verifier,
    pub bus: Bus,
    handled: Arc<AtomicU64>,
}

impl Replica {
    pub fn new(bus: Bus, kind: WorkerKind) -> Self {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        Replica {
            kind,
            instance: format!("{kind}-{}", &suffix[..8]),
            started_at: OffsetDateTime::now_utc(),
            verifier: Verifier::new(bus.clone()),
            bus,
            handled: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// Runs one replica of a worker kind until `shutdown` resolves. The streams
/// and buckets must exist ([`setup::ensure`]).
///
/// ```no_run
/// # async fn run(bus: fleetroll_bus::Bus) -> Result<(), fleetroll_bus::connect::BusError> {
/// use fleetroll_bus::messages::{WorkerKind, command::{Command, Verdict}};
/// use fleetroll_bus::worker::{self, CommandContext, Handler};
///
/// struct Nothing;
/// impl Handler for Nothing {
///     async fn handle(&self, _: &CommandContext, _: &Command) -> Verdict {
///         Verdict::invalid("this worker owns no commands")
///     }
/// }
/// worker::run(bus, WorkerKind::Gatekeeper, Nothing, tokio::signal::ctrl_c()).await
/// # }
/// ```
pub async fn run<H, S, T>(
    bus: Bus,
    kind: WorkerKind,
    handler: H,
    shutdown: S,
) -> Result<(), BusError>
where
    H: Handler,
    S: Future<Output = T> + Send,
{
    run_replica(Replica::new(bus, kind), Arc::new(handler), shutdown).await
}

/// As [`run`], for a replica (and handler) the caller built, e.g. to serve
/// queries with the same identity.
pub async fn run_replica<H, S, T>(
    replica: Replica,
    handler: Arc<H>,
    shutdown: S,
) -> Result<(), BusError>
where
    H: Handler,
    S: Future<Output = T> + Send,
{
    let span = info_span!("worker", kind = %replica.kind, instance = %replica.instance);
    async move {
        let skew_ms = crate::clock::measure_skew_ms(&replica.bus).await?;
        replica.verifier.record_skew(skew_ms);
        let heartbeats = tokio::spawn(heartbeat_loop(replica.clone()).in_current_span());
        info!(skew_ms, "worker started");
        let consuming = consume(replica.clone(), handler);
        tokio::select! {
            result = consuming => {
                heartbeats.abort();
                result?;
            }
            _ = shutdown => {
                heartbeats.abort();
                info!("worker stopping");
            }
        }
        // A clean stop leaves no ghost replica behind in `fleetroll status`.
        if let Ok(workers) = replica.bus.kv(&topology::WORKERS).await {
            let _ = workers
                .delete(topology::heartbeat_key(replica.kind, &replica.instance))
                .await;
        }
        Ok(())
    }
    .instrument(span)
    .await
}

async fn heartbeat_loop(replica: Replica) {
    let mut ticker = tokio::time::interval(topology::HEARTBEAT_INTERVAL);
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    loop {
        ticker.tick().await;
        match crate::clock::measure_skew_ms(&replica.bus).await {
            Ok(skew) => replica.verifier.record_skew(skew),
            Err(e) => warn!(error = %e, "cannot measure clock skew"),
        }
        let beat = Heartbeat {
            kind: replica.kind,
            instance: replica.instance.clone(),
            hostname: hostname.clone(),
            pid: std::process::id(),
            started_at: replica.started_at,
            version: env!("CARGO_PKG_VERSION").to_string(),
            clock_skew_ms: replica.verifier.skew_ms(),
            commands_handled: replica.handled.load(Ordering::Relaxed),
        };
        let put = async {
            let workers = replica.bus.kv(&topology::WORKERS).await?;
            workers
                .put(
                    topology::heartbeat_key(replica.kind, &replica.instance),
                    codec::to_cbor(&beat).into(),
                )
                .await
                .map_err(|e| BusError::js("writing heartbeat", e))
        };
        if let Err(e) = put.await {
            warn!(error = %e, "heartbeat not written");
        }
    }
}

async fn consume<H: Handler>(replica: Replica, handler: Arc<H>) -> Result<(), BusError> {
    let open = || setup::worker_consumer(&replica.bus, replica.kind);
    serve(open, CONCURRENCY, "commands", |message| {
        let (replica, handler) = (replica.clone(), handler.clone());
        async move { process(&replica, handler.as_ref(), message).await }
    })
    .await
}

async fn process<H: Handler>(replica: &Replica, handler: &H, message: jetstream::Message) {
    let delivery = message
        .info()
        .map(|i| i.delivered.max(1) as u64)
        .unwrap_or(1);
    // Nothing can make a garbled command, or one whose id is no command
    // id, right: it is set aside at once, before its id is used as a key
    // or in a subject.
    let envelope: CommandEnvelope = match codec::from_cbor(&message.payload) {
        Ok(envelope) => envelope,
        Err(e) => return set_aside(&message, &format!("unreadable command: {e}")).await,
    };
    if !CommandEnvelope::well_formed_id(&envelope.id) {
        let id: String = envelope.id.chars().take(40).collect();
        return set_aside(&message, &format!("the command id `{id}` is not a UUID")).await;
    }
    let span = info_span!("command", id = %envelope.id, command = envelope.command.name());
    async {
        let outcomes = match replica.bus.kv(&topology::OUTCOMES).await {
            Ok(outcomes) => outcomes,
            Err(e) => {
                warn!(error = %e, "outcomes bucket unavailable; leaving the command for redelivery");
                return;
            }
        };
        let outcome = match recorded_outcome(&outcomes, &envelope.id).await {
            Some(outcome) => {
                info!(handled_by = %outcome.handled_by, "already executed; re-announcing its outcome");
                outcome
            }
            None => {
                let executed = with_progress(
                    &message,
                    execute(replica, handler, &outcomes, &envelope, delivery),
                )
                .await;
                let outcome = match executed {
                    Executed::Finished(outcome) => outcome,
                    // Another replica ran it, while this one waited on its
                    // lease.
                    Executed::Recorded(outcome) => {
                        info!(handled_by = %outcome.handled_by, "ran on another replica; re-announcing its outcome");
                        return announce_and_ack(replica, &envelope, &outcome, &message).await;
                    }
                    Executed::NotNow(e) => {
                        warn!(error = %e, "its lease could not be taken; leaving the command for redelivery");
                        retry_later(&message).await;
                        return;
                    }
                };
                match outcomes.create(&envelope.id, codec::to_cbor(&outcome).into()).await {
                    Ok(_) => {
                        replica.handled.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!(
                            "fleetroll_commands_total",
                            "worker" => replica.kind.as_str(),
                            "verdict" => outcome.verdict.label()
                        )
                        .increment(1);
                        info!(verdict = outcome.verdict.label(), "command finished");
                        outcome
                    }
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                        recorded_outcome(&outcomes, &envelope.id).await.unwrap_or(outcome)
                    }
                    Err(e) => {
                        warn!(error = %e, "outcome not recorded; leaving the command for redelivery");
                        return;
                    }
                }
            }
        };
        announce_and_ack(replica, &envelope, &outcome, &message).await
    }
    .instrument(span)
    .await
}

/// Announces a recorded outcome, then acknowledges the command.
async fn announce_and_ack(
    replica: &Replica,
    envelope: &CommandEnvelope,
    outcome: &Outcome,
    message: &jetstream::Message,
) {
    if let Err(e) = announce(replica, envelope, outcome).await {
        // The audit log is made from this event: without it the command
        // stays unacknowledged, and its redelivery announces again.
        warn!(error = %e, "outcome not announced; leaving the command for redelivery");
        return;
    }
    if let Err(e) = message.double_ack().await {
        warn!(error = %e, "ack failed; a redelivery will find the outcome");
    }
}

/// Gives up on a message for good: the server stops delivering it and
/// announces it, with `reason`, on the set-aside stream
/// ([`topology::SET_ASIDE`]), where `fleetroll status` shows it and the
/// auditor records it. For what no retry can mend (unreadable, malformed);
/// a message that keeps failing otherwise is given up on by the server
/// after [`topology::MAX_DELIVER`] deliveries, and announced the same way.
pub async fn set_aside(message: &jetstream::Message, reason: &str) {
    warn!(subject = %message.subject, reason, "message set aside");
    let Some(reply) = &message.reply else {
        return;
    };
    // One line, and short: it travels in the server's advisory.
    let reason: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON)
        .collect();
    let terminate = format!("+TERM {reason}");
    if let Err(e) = message
        .context
        .client()
        .publish(reply.clone(), terminate.into())
        .await
    {
        warn!(error = %e, "could not set the message aside; it comes again");
    }
}

/// Leaves a message that failed for now (NATS trouble, a bus write that
/// did not land) for a later delivery, each one waiting longer
/// ([`topology::REDELIVERY_BACKOFF`]); after [`topology::MAX_DELIVER`] the
/// server sets it aside. A nak without a delay would come back at once.
pub async fn retry_later(message: &jetstream::Message) {
    let delivered = message.info().map_or(1, |i| i.delivered.max(1) as usize);
    let backoff = &topology::REDELIVERY_BACKOFF;
    let delay = backoff[delivered.min(backoff.len() - 1)];
    let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
}

/// The longest reason [`set_aside`] sends.
const MAX_REASON: usize = 300;

async fn recorded_outcome(outcomes: &kv::Store, id: &str) -> Option<Outcome> {
    let bytes = outcomes.get(id).await.ok().flatten()?;
    codec::from_cbor(&bytes).ok()
}

/// Serves the work queue `queue`: runs `job` on each message, at most
/// `parallelism` at a time; see [`serve`]. Returns only when the consumer
/// cannot be opened.
pub async fn serve_queue<F, Fut>(
    bus: &Bus,
    queue: &topology::JobQueue,
    parallelism: usize,
    job: F,
) -> Result<(), BusError>
where
    F: Fn(jetstream::Message) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let open = || setup::job_consumer(bus, queue);
    serve(open, parallelism, queue.consumer, job).await
}

/// Runs `job` on each message of the consumer `open` opens, at most
/// `parallelism` at a time, taking a message only when it can start on it
/// ([`take_one`]). After NATS trouble (a lost node, a leader change) the
/// consumer is opened again rather than trusted to recover; returns only
/// when it cannot be opened.
async fn serve<O, OFut, F, Fut>(
    open: O,
    parallelism: usize,
    what: &str,
    job: F,
) -> Result<(), BusError>
where
    O: Fn() -> OFut,
    OFut: Future<Output = Result<jetstream::consumer::PullConsumer, BusError>>,
    F: Fn(jetstream::Message) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(parallelism.max(1)));
    loop {
        let consumer = open().await?;
        loop {
            let permit = permits
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let message = match take_one(&consumer).await {
                Ok(message) => message,
                Err(e) => {
                    warn!(consumer = what, error = %e, "pulling; opening the consumer again");
                    break;
                }
            };
            let work = job(message);
            tokio::spawn(
                async move {
                    work.await;
                    drop(permit);
                }
                .in_current_span(),
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The next message of a durable pull consumer, asked for only now: call
/// it once there is room to work on the message. No message then waits in
/// a busy replica, unacknowledged, to be handed after
/// [`topology::TAKEOVER_WAIT`] to another replica as well.
pub async fn take_one(
    consumer: &jetstream::consumer::PullConsumer,
) -> Result<jetstream::Message, BusError> {
    let failed = |e: Box<dyn std::error::Error + Send + Sync>| BusError::js("pulling a message", e);
    loop {
        let mut pull = consumer
            .batch()
            .max_messages(1)
            .expires(PULL_EXPIRES)
            .messages()
            .await
            .map_err(|e| failed(e.into()))?;
        match pull.next().await {
            Some(Ok(message)) => return Ok(message),
            Some(Err(e)) => return Err(failed(e)),
            // Nothing came before the pull expired: ask again.
            None => {}
        }
    }
}

/// Runs `work` for a message taken from a durable consumer (a command, a
/// job), telling the server several times a second that it is in progress,
/// so that it goes to another replica only if this one dies.
pub async fn with_progress<F: Future>(message: &jetstream::Message, work: F) -> F::Output {
    tokio::pin!(work);
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tick.tick().await;
    loop {
        tokio::select! {
            output = &mut work => return output,
            _ = tick.tick() => {
                let _ = message.ack_with(AckKind::Progress).await;
            }
        }
    }
}

/// How far a command got in this replica.
enum Executed {
    Finished(Outcome),
    /// Another replica ran it (this one waited on its lease): its outcome.
    Recorded(Outcome),
    /// Its lease could not be taken or read (NATS trouble): not now.
    NotNow(BusError),
}

/// How long a command's lease holds without renewal: its holder renews it
/// while it runs, so a replica that dies mid-command is known within this.
const COMMAND_LEASE: Duration = Duration::from_secs(60);

async fn execute<H: Handler>(
    replica: &Replica,
    handler: &H,
    outcomes: &kv::Store,
    envelope: &CommandEnvelope,
    delivery: u64,
) -> Executed {
    let command = &envelope.command;
    let finish = |actor: Option<String>, verdict: Verdict| Outcome {
        command_id: envelope.id.clone(),
        command: command.name().to_string(),
        actor,
        verdict,
        handled_by: replica.instance.clone(),
        delivery,
        finished_at: OffsetDateTime::now_utc(),
    };
    let claims = match replica
        .verifier
        .check(&envelope.token, command.allowed_roles(), command.name())
        .await
    {
        Ok(claims) => claims,
        Err(VerifyError::Denied { denial, actor }) => {
            warn!(reason = %denial, "command denied");
            return Executed::Finished(finish(actor, Verdict::Denied { denial }));
        }
        Err(VerifyError::Bus(e)) => {
            return Executed::Finished(finish(
                None,
                Verdict::failed(format!("could not verify the token: {e}")),
            ));
        }
    };
    let actor = Some(claims.sub.clone());
    // A command needs a token bound to a key, in an envelope that key
    // signed: a token seen elsewhere (a query, a bot) sends nothing.
    let Some(holder) = &claims.cnf else {
        warn!("command denied: a bearer token");
        return Executed::Finished(finish(
            actor,
            Verdict::Denied {
                denial: Denial::Unbound,
            },
        ));
    };
    let proven = crate::token::VerifyingKey::from_base64(holder)
        .is_ok_and(|holder| envelope.proven_by(&holder));
    if !proven {
        warn!("command denied: the envelope is not signed by the token's holder key");
        return Executed::Finished(finish(
            actor,
            Verdict::Denied {
                denial: Denial::Unproven,
            },
        ));
    }
    // Before the deadline check: a replica that took the lease may have
    // acted already, and "not executed" would then be untrue.
    let mut lease = None;
    if handler.acts_on_host(command) {
        let key = topology::command_lease_key(&envelope.id);
        let mut said = false;
        lease = loop {
            match lease::claim(&replica.bus, &key, &replica.instance, COMMAND_LEASE).await {
                Ok(Claim::Taken(taken)) => break Some(taken),
                Err(e) => return Executed::NotNow(e),
                // Redelivered while the replica running it stalled: it is
                // not run here too; this one waits for its outcome.
                Ok(Claim::Held { holder, .. }) => {
                    if !said {
                        info!(%holder, "already running on another replica; not run again here");
                        said = true;
                    }
                }
                Ok(Claim::Lapsed { holder, since, .. }) => {
                    if let Some(outcome) = recorded_outcome(outcomes, &envelope.id).await {
                        return Executed::Recorded(outcome);
                    }
                    return Executed::Finished(finish(
                        actor,
                        Verdict::failed(format!(
                            "interrupted: {holder} started this command and stopped before it finished (its lease lapsed at {}); it is not run again, since it may have acted: look at the host, and ask again if need be",
                            crate::messages::timestamp(since)
                        )),
                    ));
                }
            }
            if let Some(outcome) = recorded_outcome(outcomes, &envelope.id).await {
                return Executed::Recorded(outcome);
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        };
    }
    if OffsetDateTime::now_utc() > envelope.deadline {
        return Executed::Finished(finish(
            actor,
            Verdict::Refused {
                message: format!(
                    "no worker took the command before its deadline ({}); it was not executed",
                    crate::messages::timestamp(envelope.deadline)
                ),
            },
        ));
    }
    let verdict = match command {
        Command::Ping { hold_ms, .. } => {
            tokio::time::sleep(Duration::from_millis(*hold_ms)).await;
            Verdict::Done {
                reply: Reply::Pong {
                    worker: replica.kind,
                    instance: replica.instance.clone(),
                },
            }
        }
        _ => {
            let ctx = CommandContext {
                command_id: envelope.id.clone(),
                sent_at: envelope.sent_at,
                actor: claims.sub.clone(),
                claims,
                instance: replica.instance.clone(),
                bus: replica.bus.clone(),
            };
            match lease.as_mut() {
                // Renewed while it runs, and left to lapse after: it says
                // the command ran.
                Some(held) => {
                    let holder = replica.instance.clone();
                    let running = handler.handle(&ctx, command);
                    lease::hold(&replica.bus, held, &holder, COMMAND_LEASE, running).await
                }
                None => handler.handle(&ctx, command).await,
            }
        }
    };
    Executed::Finished(finish(actor, verdict))
}

/// Publishes the "command finished" event, which the auditor turns into
/// the command's audit record. Its message id is derived from the command
/// id, so re-announcing after a redelivery stores it once.
async fn announce(
    replica: &Replica,
    envelope: &CommandEnvelope,
    outcome: &Outcome,
) -> Result<(), BusError> {
    let claimed_actor = match outcome.actor {
        Some(_) => None,
        None => crate::token::unverified_claims(&envelope.token).map(|(actor, _)| actor),
    };
    let event = Event {
        at: outcome.finished_at,
        source: outcome.handled_by.clone(),
        detail: EventDetail::CommandFinished {
            command: Box::new(envelope.command.clone()),
            outcome: outcome.clone(),
            claimed_actor,
        },
    };
    replica
        .bus
        .publish_once(
            "announcing a command's outcome",
            subjects::command_finished(&outcome.command_id, outcome.verdict.label()),
            &format!("finished-{}", outcome.command_id),
            codec::to_cbor(&event),
        )
        .await
}
