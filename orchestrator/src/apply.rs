//! Apply jobs: every orchestrator replica takes them from one shared work
//! queue. A host's result is written once (a create in the rollout-hosts
//! bucket), and writing the override is idempotent, so a job replayed
//! after a replica died mid-batch leaves each host written exactly once.
//! When the last host of a stage has its result, the stage waits for
//! assessment.

use std::sync::Arc;

use async_nats::jetstream::{self, kv};
use fleetroll_bus::codec;
use fleetroll_bus::connect::{Bus, BusError};
use fleetroll_bus::events;
use fleetroll_bus::host_index::HostIndex;
use fleetroll_bus::hostname;
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
    let span = info_span!("apply", rollout = %job.rollout, stage = job.stage, host = %job.hostname);
    let result = with_progress(&message, apply(applier, &job))
        .instrument(span)
        .await;
    match result {
        Ok(()) => {
            let _ = message.double_ack().await;
        }
        Err(e) => {
            warn!(host = %job.hostname, error = %e, "apply not recorded; job left for retry");
            retry_later(&message).await;
        }
    }
}

async fn apply(applier: &Applier, job: &ApplyJob) -> Result<(), BusError> {
    if job.remove {
        return remove(applier, job).await;
    }
    let bus = &applier.bus;
    let key = topology::rollout_host_key(&job.rollout, &job.hostname);
    let recorded = recorded(bus, &key).await?;
    let Some(read) = rollout_store::load(bus, &job.rollout).await? else {
        warn!("the rollout is gone; job dropped");
        return Ok(());
    };
    let rollout = read.rollout;
    let Some(stage) = rollout.stages.get(job.stage.saturating_sub(1) as usize) else {
        warn!("no such stage; job dropped");
        return Ok(());
    };
    let result = match recorded {
        Some(result) => result,
        None => {
            if rollout.state != RolloutState::Running || stage.status != StageStatus::Applying {
                // Paused (or stopped) before this host was reached:
                // resuming queues it again.
                info!(
                    state = rollout.state.as_str(),
                    "not applying now; job dropped"
                );
                return Ok(());
            }
            let disabled = applier
                .index
                .get(&job.hostname)
                .await
                .ok()
                .flatten()
                .is_some_and(|r| r.intent.disabled);
            let outcome = if disabled {
                ApplyOutcome::SkippedDisabled
            } else {
                let change = rollout.plan.change.as_bytes();
                outcome_of(
                    overrides::apply(&applier.pool, bus, &job.hostname, change).await,
                    |snapshot| ApplyOutcome::Applied { snapshot },
                )
            };
            info!(?outcome, "host handled");
            record(applier, job, &key, outcome).await?
        }
    };
    announce(
        applier,
        &key,
        result,
        stage.started_by.clone(),
        stage.started_by_command.clone(),
    )
    .await?;
    // A fresh observation for the gates (what Puppet has applied since).
    request_probe(bus, &job.hostname, format!("rollout {}", job.rollout)).await?;
    stage_done(applier, job).await
}

/// Removes the override a rolled-back (or finalized) rollout applied, then asks for a
/// fresh probe of the host: the rollout is rolled back when the probes
/// show every host clean.
async fn remove(applier: &Applier, job: &ApplyJob) -> Result<(), BusError> {
    let bus = &applier.bus;
    let key = topology::rollout_removal_key(&job.rollout, &job.hostname);
    let recorded = recorded(bus, &key).await?;
    let Some(read) = rollout_store::load(bus, &job.rollout).await? else {
        return Ok(());
    };
    if let Some(decision) = read.rollout.removal() {
        let result = match recorded {
            Some(result) => result,
            None => {
                let outcome = outcome_of(
                    overrides::remove(&applier.pool, bus, &job.hostname).await,
                    |snapshot| ApplyOutcome::Removed { snapshot },
                );
                info!(?outcome, "override removed");
                record(applier, job, &key, outcome).await?
            }
        };
        announce(
            applier,
            &key,
            result,
            decision.by.clone(),
            decision.command_id.clone(),
        )
        .await?;
    }
    request_probe(bus, &job.hostname, format!("rollout {}", job.rollout)).await
}

/// What a write or removal comes to: `done` with the snapshot taken before
/// it (none when the host already was as asked), or why it failed.
fn outcome_of(
    change: Result<Change, OverrideError>,
    done: fn(Option<String>) -> ApplyOutcome,
) -> ApplyOutcome {
    match change {
        Ok(Change::Changed { snapshot }) => done(Some(snapshot)),
        Ok(Change::AlreadyThere) => done(None),
        Err(e) => ApplyOutcome::Failed {
            error: e.to_string(),
        },
    }
}

/// The result already recorded under `key`, if any.
async fn recorded(bus: &Bus, key: &str) -> Result<Option<HostApply>, BusError> {
    let results = bus.kv(&topology::ROLLOUT_HOSTS).await?;
    let Some(value) = results
        .get(key)
        .await
        .map_err(|e| BusError::js("reading a rollout result", e))?
    else {
        return Ok(None);
    };
    codec::from_cbor(&value)
        .map(Some)
        .map_err(|source| BusError::Decode {
            place: format!("rollout result {key}"),
            source,
        })
}

/// Records a host's result once, under `key`, and returns the recorded
/// one: ours, or another delivery's that got there first.
async fn record(
    applier: &Applier,
    job: &ApplyJob,
    key: &str,
    outcome: ApplyOutcome,
) -> Result<HostApply, BusError> {
    let bus = &applier.bus;
    let result = HostApply {
        rollout: job.rollout.clone(),
        stage: job.stage,
        hostname: job.hostname.clone(),
        outcome,
        at: OffsetDateTime::now_utc(),
        by: applier.instance.clone(),
    };
    let results = bus.kv(&topology::ROLLOUT_HOSTS).await?;
    match results.create(key, codec::to_cbor(&result).into()).await {
        Ok(_) => Ok(result),
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => recorded(bus, key)
            .await?
            .ok_or_else(|| BusError::js("reading a rollout result", "it vanished")),
        Err(e) => Err(BusError::js("recording a rollout result", e)),
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
        "host",
        key,
        EventDetail::RolloutHost {
            rollout: result.rollout.clone(),
            stage: result.stage,
            hostname: result.hostname,
            outcome: result.outcome,
            actor,
            command_id,
        },
    )
    .await
}

/// Queues a full probe of the host, after something changed it.
pub async fn request_probe(bus: &Bus, hostname: &str, origin: String) -> Result<(), BusError> {
    let probe = ProbeJob {
        hostname: hostname.to_string(),
        requested_at: OffsetDateTime::now_utc(),
        origin,
        fast: false,
    };
    bus.js
        .publish(subjects::probe_job(hostname), codec::to_cbor(&probe).into())
        .await
        .map_err(|e| BusError::js("queueing a probe", e))?
        .await
        .map_err(|e| BusError::js("queueing a probe", e))?;
    Ok(())
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
                "stage",
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
