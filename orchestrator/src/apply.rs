//! Apply jobs: every orchestrator replica takes them from one shared work
//! queue. A host's result is written once (a create in the rollout-hosts
//! bucket), and writing the override is idempotent, so a job replayed
//! after a replica died mid-batch leaves each host written exactly once.
//! When the last host of a stage has its result, the stage waits for
//! assessment.

use std::sync::Arc;

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, kv};
use fleetroll_bus::codec;
use fleetroll_bus::connect::{Bus, BusError};
use fleetroll_bus::events;
use fleetroll_bus::host_index::HostIndex;
use fleetroll_bus::hostname;
use fleetroll_bus::lease::{self, Claim};
use fleetroll_bus::messages::event::EventDetail;
use fleetroll_bus::messages::host::ProbeJob;
use fleetroll_bus::messages::rollout::RolloutId;
use fleetroll_bus::messages::rollout::{
    ApplyJob, ApplyOutcome, HostApply, RolloutState, StageStatus,
};
use fleetroll_bus::rollout_store;
use fleetroll_bus::worker::{retry_later, set_aside, with_progress};
use fleetroll_bus::{subjects, topology};
use fleetroll_ssh::pool::Pool;
use time::OffsetDateTime;
use tracing::{Instrument, info, info_span, warn};

use crate::overrides::{self, Change, OverrideError};
use crate::rollouts;

/// What one replica needs to apply.
pub struct Applier {
    pub bus: Bus,
    pub pool: Arc<Pool>,
    pub index: Arc<HostIndex>,
    pub instance: String,
}

/// Takes apply jobs until the consumer cannot be opened (NATS gone), at
/// most the SSH parallelism at a time.
pub async fn work(applier: Arc<Applier>) -> Result<(), BusError> {
    let parallelism = applier.pool.settings().parallelism;
    fleetroll_bus::worker::serve_queue(
        &applier.bus,
        &topology::APPLY_QUEUE,
        parallelism,
        |message| {
            let applier = applier.clone();
            async move { run_job(&applier, message).await }
        },
    )
    .await
}

async fn run_job(applier: &Applier, message: jetstream::Message) {
    let job: ApplyJob = match codec::from_cbor(&message.payload) {
        Ok(job) => job,
        Err(e) => return set_aside(&message, &format!("unreadable apply job: {e}")).await,
    };
    if !RolloutId::well_formed(&job.rollout) {
        return set_aside(&message, "apply job: not a rollout id").await;
    }
    if let Err(e) = hostname::validate(&job.hostname) {
        return set_aside(&message, &format!("apply job: {e}")).await;
    }
    let span = info_span!("apply", rollout = %job.rollout, stage = job.stage, host = %job.hostname, remove = job.remove);
    let delivery = message.info().map_or(1, |i| i.delivered.max(1) as u64);
    let handled = with_progress(&message, handle(applier, &job, delivery))
        .instrument(span)
        .await;
    match handled {
        Ok(Handled::Done) => {
            let _ = message.double_ack().await;
        }
        Ok(Handled::Wait(delay)) => {
            let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
        }
        Ok(Handled::Retry) => retry_later(&message).await,
        Err(e) => {
            warn!(host = %job.hostname, error = %e, "job not finished; left for retry");
            retry_later(&message).await;
        }
    }
}

/// How long a host lease holds without renewal: a replica that dies while
/// writing a host keeps others off it this long.
const HOST_LEASE: Duration = Duration::from_secs(30);

/// Tries a host that is unreachable, hangs, or whose reply is lost, before
/// that is its result (each a delivery of the job, further apart each time).
const HOST_ATTEMPTS: u64 = 4;

/// What became of one delivery of a job.
enum Handled {
    Done,
    /// Another job holds the host: come back then.
    Wait(Duration),
    /// Not now (NATS trouble, or the host may answer better later).
    Retry,
}

/// What the job did under the host's lease.
enum Acted {
    Recorded(HostApply),
    /// Nothing to do now (paused, rolled back, the rollout gone).
    Dropped,
    Retry,
}

/// The key a job's result is recorded under.
fn result_key(job: &ApplyJob) -> String {
    if job.remove {
        topology::rollout_removal_key(&job.rollout, &job.hostname)
    } else {
        topology::rollout_host_key(&job.rollout, &job.hostname)
    }
}

async fn handle(applier: &Applier, job: &ApplyJob, delivery: u64) -> Result<Handled, BusError> {
    let bus = &applier.bus;
    let key = result_key(job);
    if let Some(Recorded::Final(result)) = recorded(bus, &key).await? {
        follow_up(applier, job, result).await?;
        return Ok(Handled::Done);
    }
    // A write and a removal of one host never overlap, and whether to act
    // is judged only by the lease's holder: a rollback that lands while a
    // write is under way finds the write recorded and removes it after.
    let holder = format!("{} {key} {}", applier.instance, job.attempt);
    let lease_key = topology::host_lease_key(&job.hostname);
    let mut held = match lease::claim(bus, &lease_key, &holder, HOST_LEASE).await? {
        Claim::Taken(lease) => lease,
        Claim::Held { holder, until } => {
            info!(%holder, "another job has the host; waiting");
            let left = Duration::try_from(until - OffsetDateTime::now_utc()).unwrap_or_default();
            return Ok(Handled::Wait(left.max(Duration::from_millis(500))));
        }
        Claim::Lapsed {
            holder: lapsed,
            revision,
            ..
        } => match lease::take_over(bus, &lease_key, revision, &holder, HOST_LEASE).await? {
            Some(lease) => {
                info!(holder = %lapsed, "took over the lease a stopped replica held");
                lease
            }
            None => return Ok(Handled::Wait(Duration::from_secs(1))),
        },
    };
    let acted = lease::hold(
        bus,
        &mut held,
        &holder,
        HOST_LEASE,
        act(applier, job, &key, delivery),
    )
    .await;
    if let Err(e) = lease::release(bus, held).await {
        warn!(error = %e, "host lease not released; it lapses by itself");
    }
    match acted? {
        Acted::Recorded(result) => {
            follow_up(applier, job, result).await?;
            Ok(Handled::Done)
        }
        Acted::Dropped => Ok(Handled::Done),
        Acted::Retry => Ok(Handled::Retry),
    }
}

/// Writes or removes the override, if the rollout still asks for it, and
/// records the host's result.
async fn act(
    applier: &Applier,
    job: &ApplyJob,
    key: &str,
    delivery: u64,
) -> Result<Acted, BusError> {
    let bus = &applier.bus;
    // Again under the lease: the rollout may have moved on meanwhile.
    let retrying = match recorded(bus, key).await? {
        Some(Recorded::Final(result)) => return Ok(Acted::Recorded(result)),
        Some(Recorded::Retrying { attempt, revision }) => Some((attempt, revision)),
        None => None,
    };
    let Some(read) = rollout_store::load(bus, &job.rollout).await? else {
        warn!("the rollout is gone; job dropped");
        return Ok(Acted::Dropped);
    };
    let rollout = read.rollout;
    let attempt = retrying.map_or(job.attempt, |(attempt, _)| attempt);
    let snapshot_job = format!("{} {} {attempt} {}", job.rollout, job.stage, job.remove);
    let outcome = if job.remove {
        if rollout.removal().is_none() {
            return Ok(Acted::Dropped);
        }
        let removed = overrides::remove(&applier.pool, bus, &job.hostname, &snapshot_job).await;
        match judge(removed, delivery, |snapshot| ApplyOutcome::Removed {
            snapshot,
        }) {
            Some(outcome) => outcome,
            None => return Ok(Acted::Retry),
        }
    } else {
        let applying = rollout.state == RolloutState::Running
            && rollout
                .stages
                .get(job.stage.saturating_sub(1) as usize)
                .is_some_and(|s| s.status == StageStatus::Applying);
        if !applying {
            // Paused (or stopped) before this host was reached: resuming
            // queues it again, and a rollback removes whatever may be there.
            info!(
                state = rollout.state.as_str(),
                "not applying now; job dropped"
            );
            return Ok(Acted::Dropped);
        }
        let disabled = applier
            .index
            .get(&job.hostname)
            .await
            .ok()
            .flatten()
            .is_some_and(|r| r.intent.disabled);
        if disabled {
            ApplyOutcome::SkippedDisabled
        } else {
            let change = rollout.plan.change.as_bytes();
            let applied =
                overrides::apply(&applier.pool, bus, &job.hostname, change, &snapshot_job).await;
            match judge(applied, delivery, |snapshot| ApplyOutcome::Applied {
                snapshot,
            }) {
                Some(outcome) => outcome,
                None => return Ok(Acted::Retry),
            }
        }
    };
    info!(?outcome, "host handled");
    record(applier, job, key, outcome, retrying)
        .await
        .map(Acted::Recorded)
}

/// What a write or removal comes to: `done` with the snapshot taken before
/// it, or why the host failed it; none when it is to be tried again (NATS
/// trouble, or a host that may answer on a later try).
fn judge(
    change: Result<Change, OverrideError>,
    delivery: u64,
    done: fn(Option<String>) -> ApplyOutcome,
) -> Option<ApplyOutcome> {
    match change {
        Ok(Change::Changed { snapshot }) => Some(done(Some(snapshot))),
        Ok(Change::AlreadyThere { snapshot }) => Some(done(snapshot)),
        Err(e) if e.is_infrastructure() => {
            warn!(error = %e, "NATS trouble; the job is tried again");
            None
        }
        Err(e) if e.is_transient() && delivery < HOST_ATTEMPTS => {
            warn!(error = %e, delivery, "the host did not answer; trying again");
            None
        }
        Err(e) => Some(ApplyOutcome::Failed {
            error: e.to_string(),
        }),
    }
}

/// After a host's result is recorded, by this delivery or an earlier one:
/// announced (the auditor records it), a fresh probe asked for (the gates
/// and the rollback's check read it), and the stage moved on when it was
/// its last host.
async fn follow_up(applier: &Applier, job: &ApplyJob, result: HostApply) -> Result<(), BusError> {
    let bus = &applier.bus;
    let Some(read) = rollout_store::load(bus, &job.rollout).await? else {
        return Ok(());
    };
    let rollout = read.rollout;
    let by = if job.remove {
        rollout
            .removal()
            .map(|d| (d.by.clone(), d.command_id.clone()))
    } else {
        rollout
            .stages
            .get(job.stage.saturating_sub(1) as usize)
            .map(|s| (s.started_by.clone(), s.started_by_command.clone()))
    };
    if let Some((actor, command_id)) = by {
        announce(applier, &result_key(job), result, actor, command_id).await?;
    }
    request_probe(bus, &job.hostname, format!("rollout {}", job.rollout)).await?;
    if job.remove {
        return Ok(());
    }
    stage_done(applier, job).await
}

/// What is recorded for a host.
enum Recorded {
    /// Its result.
    Final(HostApply),
    /// An operator's retry, queued as try `attempt`: no result yet.
    Retrying { attempt: u32, revision: u64 },
}

/// What is recorded under `key`, if anything.
async fn recorded(bus: &Bus, key: &str) -> Result<Option<Recorded>, BusError> {
    let results = bus.kv(&topology::ROLLOUT_HOSTS).await?;
    let Some(entry) = results
        .entry(key)
        .await
        .map_err(|e| BusError::js("reading a rollout result", e))?
        .filter(|e| e.operation == kv::Operation::Put)
    else {
        return Ok(None);
    };
    let result: HostApply = codec::from_cbor(&entry.value).map_err(|source| BusError::Decode {
        place: format!("rollout result {key}"),
        source,
    })?;
    Ok(Some(match result.outcome {
        ApplyOutcome::Retrying { .. } => Recorded::Retrying {
            attempt: result.attempt,
            revision: entry.revision,
        },
        _ => Recorded::Final(result),
    }))
}

/// Records a host's result once, under `key` (over the retry marker it
/// replaces, if `retrying`), and returns the recorded one: ours, or
/// another delivery's that got there first.
async fn record(
    applier: &Applier,
    job: &ApplyJob,
    key: &str,
    outcome: ApplyOutcome,
    retrying: Option<(u32, u64)>,
) -> Result<HostApply, BusError> {
    let bus = &applier.bus;
    let result = HostApply {
        rollout: job.rollout.clone(),
        stage: job.stage,
        hostname: job.hostname.clone(),
        outcome,
        at: OffsetDateTime::now_utc(),
        by: applier.instance.clone(),
        attempt: retrying.map_or(job.attempt, |(attempt, _)| attempt),
    };
    let results = bus.kv(&topology::ROLLOUT_HOSTS).await?;
    let value = codec::to_cbor(&result);
    let written = match retrying {
        None => results
            .create(key, value.into())
            .await
            .map(drop)
            .map_err(|e| {
                (
                    e.kind() == kv::CreateErrorKind::AlreadyExists,
                    e.to_string(),
                )
            }),
        Some((_, revision)) => results
            .update(key, value.into(), revision)
            .await
            .map(drop)
            .map_err(|e| {
                (
                    e.kind() == kv::UpdateErrorKind::WrongLastRevision,
                    e.to_string(),
                )
            }),
    };
    match written {
        Ok(()) => Ok(result),
        // Another delivery recorded first: its result stands.
        Err((true, _)) => match recorded(bus, key).await? {
            Some(Recorded::Final(theirs)) => Ok(theirs),
            _ => Err(BusError::js(
                "recording a rollout result",
                "it changed meanwhile",
            )),
        },
        Err((false, e)) => Err(BusError::js("recording a rollout result", e)),
    }
}

/// Announces a recorded result (the auditor records it, with its
/// snapshot, for `actor`'s command). Every delivery of a job announces,
/// because the one that recorded the result may have died before it
/// could; the event's message id and the audit record's one subject keep
/// repeats from counting twice.
async fn announce(
    applier: &Applier,
    key: &str,
    result: HostApply,
    actor: String,
    command_id: String,
) -> Result<(), BusError> {
    events::rollout(
        &applier.bus,
        &applier.instance,
        &result.rollout,
        &format!("{key}-{}", result.attempt),
        EventDetail::RolloutHost {
            rollout: result.rollout.clone(),
            stage: result.stage,
            hostname: result.hostname,
            outcome: result.outcome,
            actor,
            command_id,
            attempt: result.attempt,
        },
    )
    .await
}

/// How long queueing a probe keeps trying: longer than a NATS election
/// (the probe stream has no leader meanwhile).
const PROBE_QUEUE_PATIENCE: Duration = Duration::from_secs(90);

/// Queues a full probe of the host, after something changed it. The change
/// is done by then and shows only in that probe, so a bus that cannot take
/// the job right now is asked again, with backoff, for a while.
pub async fn request_probe(bus: &Bus, hostname: &str, origin: String) -> Result<(), BusError> {
    let probe = ProbeJob {
        hostname: hostname.to_string(),
        requested_at: OffsetDateTime::now_utc(),
        origin,
        fast: false,
    };
    let payload = codec::to_cbor(&probe);
    let deadline = tokio::time::Instant::now() + PROBE_QUEUE_PATIENCE;
    let mut pause = Duration::from_millis(250);
    loop {
        let stored = async {
            bus.js
                .publish(subjects::probe_job(hostname), payload.clone().into())
                .await
                .map_err(|e| BusError::js("queueing a probe", e))?
                .await
                .map_err(|e| BusError::js("queueing a probe", e))
        }
        .await;
        match stored {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() + pause > deadline => return Err(e),
            Err(e) => {
                warn!(host = hostname, error = %e, "queueing a probe failed; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(8));
            }
        }
    }
}

/// Moves the job's stage to "waiting for assessment" once every host of it
/// has a result.
async fn stage_done(applier: &Applier, job: &ApplyJob) -> Result<(), BusError> {
    let bus = &applier.bus;
    loop {
        let Some(read) = rollout_store::load(bus, &job.rollout).await? else {
            return Ok(());
        };
        let mut rollout = read.rollout;
        let Some(stage) = rollout.stages.get_mut(job.stage.saturating_sub(1) as usize) else {
            return Ok(());
        };
        if stage.status != StageStatus::Applying
            || !rollouts::unfinished_hosts(bus, &job.rollout, stage)
                .await
                .is_empty()
        {
            return Ok(());
        }
        stage.status = StageStatus::WaitingForAssessment;
        let stage = stage.clone();
        rollout.updated_at = OffsetDateTime::now_utc();
        if rollout_store::store(bus, &rollout, read.revision).await? {
            info!(
                stage = stage.number,
                "stage applied; waiting for assessment"
            );
            let _ = events::rollout(
                bus,
                &applier.instance,
                &job.rollout,
                &format!("{}-{}", stage.number, stage.status.as_str()),
                EventDetail::RolloutStage {
                    rollout: job.rollout.clone(),
                    stage: stage.number,
                    status: stage.status,
                    hosts: stage.hosts.clone(),
                },
            )
            .await;
            return Ok(());
        }
    }
}
