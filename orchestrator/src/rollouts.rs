//! The rollout state machine (SPEC 5). A rollout lives in the rollouts
//! bucket; every transition reads it, decides, and writes it back as a
//! compare-and-swap on the revision it read, so two replicas never both
//! start, advance or pause it: the loser reads again and finds it done.
//! A command redelivered after its transition finds the stage it started
//! (by command id) and only queues that stage's jobs again.

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::jetstream::kv;
use fleetroll_bus::codec;
use fleetroll_bus::connect::{Bus, BusError};
use fleetroll_bus::events;
use fleetroll_bus::filter::Query;
use fleetroll_bus::host_index::HostIndex;
use fleetroll_bus::hostname;
use fleetroll_bus::messages::command::{Reply, Verdict};
use fleetroll_bus::messages::event::EventDetail;
use fleetroll_bus::messages::rollout::{
    ApplyJob, ApplyOutcome, Decision, GateConfig, GateEvaluation, HeldBack, HostApply, Rollout,
    RolloutList, RolloutPlan, RolloutState, RolloutStatus, Stage, StageStatus, stage_order,
};
use fleetroll_bus::worker::CommandContext;
use fleetroll_bus::{subjects, topology};
use time::OffsetDateTime;
use tracing::warn;

use crate::overrides::MAX_OVERRIDE_BYTES;
use fleetroll_bus::rollout_store::{self, load, store};

/// How long queueing waits out NATS trouble before the command fails: a
/// lost cluster node makes JetStream elect new leaders, which took up to
/// about 20 s in the chaos test. A stage is stored before its jobs are
/// queued, so giving up early would leave it applying half its hosts.
const QUEUE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// Queues one job per host, for `command` (the command that asks for
/// them): applying the change, or (`remove`) removing the override. See
/// [`queue`].
async fn queue_jobs(
    bus: &Bus,
    command: &str,
    rollout: &str,
    stage: u32,
    hosts: &[String],
    remove: bool,
) -> Result<(), BusError> {
    let jobs: Vec<ApplyJob> = hosts
        .iter()
        .map(|host| ApplyJob {
            rollout: rollout.to_string(),
            stage,
            hostname: host.clone(),
            remove,
            attempt: 0,
        })
        .collect();
    queue(bus, command, &jobs).await
}

/// Queues jobs for `command`. Each has a message id made of the job and
/// the command, so a command queueing again (redelivered, or after a
/// failure) queues nothing twice, while another command (a resume after a
/// pause, a retry) queues afresh even within the duplicate window.
async fn queue(bus: &Bus, command: &str, jobs: &[ApplyJob]) -> Result<(), BusError> {
    let began = std::time::Instant::now();
    for job in jobs {
        let verb = if job.remove { "remove" } else { "apply" };
        let (rollout, stage, host) = (&job.rollout, job.stage, &job.hostname);
        let id = format!("{verb}-{rollout}-{stage}-{host}-{}-{command}", job.attempt);
        let payload = codec::to_cbor(job);
        loop {
            let queued = bus
                .publish_once(
                    "queueing an apply job",
                    subjects::apply_job(rollout, host),
                    &id,
                    payload.clone(),
                )
                .await;
            match queued {
                Ok(()) => break,
                Err(e) if began.elapsed() < QUEUE_PATIENCE => {
                    warn!(host = %host, error = %e, "queueing an apply job; trying again");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

fn stage_event(rollout: &str, stage: &Stage) -> EventDetail {
    EventDetail::RolloutStage {
        rollout: rollout.to_string(),
        stage: stage.number,
        status: stage.status,
        hosts: stage.hosts.clone(),
    }
}

/// The gatekeeper's latest evaluation of a rollout.
pub async fn evaluation(bus: &Bus, id: &str) -> Result<Option<GateEvaluation>, BusError> {
    let Some(bytes) = bus
        .kv(&topology::GATES)
        .await?
        .get(id)
        .await
        .map_err(|e| BusError::js("reading the gate evaluation", e))?
    else {
        return Ok(None);
    };
    Ok(codec::from_cbor(&bytes).ok())
}

/// Announces a stage that was just started and queues its hosts; for an
/// advance, says what it was decided on.
async fn launch(
    ctx: &CommandContext,
    rollout: &str,
    stage: &Stage,
    decided_on: Option<(GateConfig, Option<GateEvaluation>)>,
) -> Verdict {
    if let Err(e) = queue_jobs(
        &ctx.bus,
        &ctx.command_id,
        rollout,
        stage.number,
        &stage.hosts,
        false,
    )
    .await
    {
        // The stage is recorded, but NATS stayed away for `QUEUE_PATIENCE`:
        // `rollout pause` and `resume` queue the hosts still without a
        // result.
        return Verdict::failed(e);
    }
    let _ = events::rollout(
        &ctx.bus,
        &ctx.instance,
        rollout,
        &format!("{}-{}", stage.number, stage.status.as_str()),
        stage_event(rollout, stage),
    )
    .await;
    Verdict::Done {
        reply: Reply::StageStarted {
            id: rollout.to_string(),
            stage: stage.number,
            hosts: stage.hosts.clone(),
            gates: decided_on.as_ref().map(|(g, _)| Box::new(g.clone())),
            evaluation: decided_on.and_then(|(_, e)| e).map(Box::new),
        },
    }
}

fn check_plan(plan: &RolloutPlan) -> Result<(), String> {
    Query::parse(&plan.target).map_err(|e| format!("--target: {e}"))?;
    if plan.change.trim().is_empty() {
        return Err("--change is empty: say what the override file holds".into());
    }
    if plan.change.len() > MAX_OVERRIDE_BYTES {
        return Err(format!(
            "--change is {} bytes; an override holds at most {MAX_OVERRIDE_BYTES}",
            plan.change.len()
        ));
    }
    if plan.canary == 0 {
        return Err("--canary must be at least 1".into());
    }
    if !(1..=100).contains(&plan.batch_pct) {
        return Err("--batch-pct must be 1 to 100".into());
    }
    for host in &plan.skip {
        hostname::validate(host).map_err(|e| format!("--skip: {e}"))?;
    }
    plan.gates.check()
}

/// The rollout id a creating command gets: derived from the command id, so
/// a redelivered create finds the rollout it made.
fn id_for(command_id: &str) -> String {
    let hash = fleetroll_bus::messages::audit::payload_hash(command_id.as_bytes());
    format!("ro-{}", &hash[..10])
}

pub async fn create(ctx: &CommandContext, plan: &RolloutPlan) -> Verdict {
    if let Err(message) = check_plan(plan) {
        return Verdict::invalid(message);
    }
    let now = OffsetDateTime::now_utc();
    let rollout = Rollout {
        id: id_for(&ctx.command_id),
        plan: plan.clone(),
        state: RolloutState::Created,
        created_by: ctx.actor.clone(),
        created_at: now,
        updated_at: now,
        targets: Vec::new(),
        stages: Vec::new(),
        pause_reason: None,
        rollback: None,
        finalize: None,
    };
    let created = async {
        ctx.bus
            .kv(&topology::ROLLOUTS)
            .await?
            .create(&rollout.id, codec::to_cbor(&rollout).into())
            .await
            .map(|_| ())
            .or_else(|e| {
                if e.kind() == kv::CreateErrorKind::AlreadyExists {
                    Ok(())
                } else {
                    Err(BusError::js("creating the rollout", e))
                }
            })
    };
    match created.await {
        Ok(()) => Verdict::Done {
            reply: Reply::RolloutCreated { id: rollout.id },
        },
        Err(e) => Verdict::failed(e),
    }
}

fn no_such(id: &str) -> Verdict {
    Verdict::invalid(format!("no rollout `{id}` (`fleetroll rollout list`)"))
}

/// The plan's target hosts now: matching the target, not skipped, not
/// disabled; in stage order.
async fn resolve(
    index: &HostIndex,
    rollout: &Rollout,
) -> Result<(Vec<String>, Vec<String>), String> {
    let query = Query::parse(&rollout.plan.target).map_err(|e| e.to_string())?;
    let (records, _) = index
        .list(&query, None, |_| true)
        .await
        .map_err(|e| e.to_string())?;
    let mut targets = Vec::new();
    let mut overridden = Vec::new();
    for record in records {
        let host = &record.observation.hostname;
        if rollout.plan.skip.contains(host) || record.intent.disabled {
            continue;
        }
        if record.observation.override_present == Some(true) {
            overridden.push(host.clone());
        }
        targets.push(host.clone());
    }
    stage_order(&rollout.id, &mut targets);
    Ok((targets, overridden))
}

pub async fn start(ctx: &CommandContext, index: &Arc<HostIndex>, id: &str) -> Verdict {
    loop {
        let read = match load(&ctx.bus, id).await {
            Ok(Some(read)) => read,
            Ok(None) => return no_such(id),
            Err(e) => return Verdict::failed(e),
        };
        let mut rollout = read.rollout;
        if let Some(stage) = rollout.current_stage()
            && stage.started_by_command == ctx.command_id
        {
            let stage = stage.clone();
            return launch(ctx, id, &stage, None).await;
        }
        if rollout.state != RolloutState::Created {
            return Verdict::Refused {
                message: format!(
                    "rollout {id} is {}; only a created rollout starts",
                    rollout.state.as_str()
                ),
            };
        }
        let (targets, overridden) = match resolve(index, &rollout).await {
            Ok(found) => found,
            Err(e) => return Verdict::failed(e),
        };
        if targets.is_empty() {
            return Verdict::Refused {
                message: format!(
                    "the target `{}` matches no host that is not disabled or skipped",
                    rollout.plan.target
                ),
            };
        }
        if !overridden.is_empty() {
            return Verdict::Refused {
                message: format!(
                    "{} target host(s) already have an override; clean them up outside fleetroll or leave them out with --skip: {}",
                    overridden.len(),
                    overridden.join(", ")
                ),
            };
        }
        let now = OffsetDateTime::now_utc();
        let canary: Vec<String> = targets.iter().take(rollout.plan.canary).cloned().collect();
        rollout.targets = targets;
        rollout.state = RolloutState::Running;
        rollout.updated_at = now;
        rollout.stages = vec![Stage {
            number: 1,
            hosts: canary,
            status: StageStatus::Applying,
            started_at: now,
            started_by: ctx.actor.clone(),
            started_by_command: ctx.command_id.clone(),
            forced: false,
            reason: None,
        }];
        match store(&ctx.bus, &rollout, read.revision).await {
            Ok(true) => {
                let _ = events::rollout(
                    &ctx.bus,
                    &ctx.instance,
                    id,
                    "running",
                    EventDetail::RolloutState {
                        rollout: id.to_string(),
                        state: RolloutState::Running,
                        reason: None,
                    },
                )
                .await;
                return launch(ctx, id, &rollout.stages[0], None).await;
            }
            Ok(false) => continue,
            Err(e) => return Verdict::failed(e),
        }
    }
}

pub async fn advance(
    ctx: &CommandContext,
    id: &str,
    batch_size: usize,
    force: bool,
    reason: Option<&str>,
) -> Verdict {
    let reason = reason.map(str::trim).filter(|r| !r.is_empty());
    if force && reason.is_none() {
        return Verdict::invalid("a forced advance needs --reason");
    }
    if batch_size == 0 {
        return Verdict::invalid("--batch-size must be at least 1");
    }
    loop {
        let read = match load(&ctx.bus, id).await {
            Ok(Some(read)) => read,
            Ok(None) => return no_such(id),
            Err(e) => return Verdict::failed(e),
        };
        let mut rollout = read.rollout;
        let Some(current) = rollout.current_stage().cloned() else {
            return Verdict::Refused {
                message: format!("rollout {id} has not started (`fleetroll rollout start {id}`)"),
            };
        };
        let gates = rollout.plan.gates.clone();
        let evaluation = match evaluation(&ctx.bus, id).await {
            Ok(evaluation) => evaluation.filter(|e| e.stage == current.number),
            Err(e) => return Verdict::failed(e),
        };
        if current.started_by_command == ctx.command_id {
            return launch(ctx, id, &current, Some((gates, evaluation))).await;
        }
        if rollout.state != RolloutState::Running {
            return Verdict::Refused {
                message: format!("rollout {id} is {}", rollout.state.as_str()),
            };
        }
        if current.status != StageStatus::WaitingForAssessment {
            return Verdict::Refused {
                message: format!(
                    "stage {} is {}; advance once it waits for assessment",
                    current.number,
                    current.status.as_str()
                ),
            };
        }
        if !force {
            let blocking = match &evaluation {
                None => format!(
                    "stage {} has no gate evaluation yet (the gatekeeper evaluates every few seconds)",
                    current.number
                ),
                Some(e) if e.passed() => String::new(),
                Some(e) => e.blocking().join("; "),
            };
            if !blocking.is_empty() {
                return Verdict::Refused {
                    message: format!(
                        "the health gates of rollout {id} do not all pass: {blocking}; advance with --force --reason to go on regardless"
                    ),
                };
            }
        }
        let batch: Vec<String> = rollout.remaining().into_iter().take(batch_size).collect();
        if batch.is_empty() {
            return Verdict::Refused {
                message: format!("every target host of rollout {id} is in a stage already"),
            };
        }
        let now = OffsetDateTime::now_utc();
        if let Some(last) = rollout.stages.last_mut() {
            last.status = StageStatus::Advanced;
        }
        let stage = Stage {
            number: current.number + 1,
            hosts: batch,
            status: StageStatus::Applying,
            started_at: now,
            started_by: ctx.actor.clone(),
            started_by_command: ctx.command_id.clone(),
            forced: force,
            reason: reason.map(str::to_string),
        };
        rollout.stages.push(stage.clone());
        rollout.updated_at = now;
        match store(&ctx.bus, &rollout, read.revision).await {
            Ok(true) => return launch(ctx, id, &stage, Some((gates, evaluation))).await,
            Ok(false) => continue,
            Err(e) => return Verdict::failed(e),
        }
    }
}

/// Pauses (`pause`) or resumes a running rollout.
pub async fn pause_or_resume(ctx: &CommandContext, id: &str, pause: Option<&str>) -> Verdict {
    loop {
        let read = match load(&ctx.bus, id).await {
            Ok(Some(read)) => read,
            Ok(None) => return no_such(id),
            Err(e) => return Verdict::failed(e),
        };
        let mut rollout = read.rollout;
        let (from, to) = match pause {
            Some(_) => (RolloutState::Running, RolloutState::Paused),
            None => (RolloutState::Paused, RolloutState::Running),
        };
        if rollout.state == to {
            // Already so (a redelivery, or twice asked): nothing to change.
            return done_pausing(id, pause.is_some());
        }
        if rollout.state != from {
            return Verdict::Refused {
                message: format!(
                    "rollout {id} is {}; only a {} rollout can be {}",
                    rollout.state.as_str(),
                    from.as_str(),
                    if pause.is_some() { "paused" } else { "resumed" }
                ),
            };
        }
        rollout.state = to;
        rollout.pause_reason = pause.map(str::to_string);
        rollout.updated_at = OffsetDateTime::now_utc();
        let mut requeue = None;
        if let Some(stage) = rollout.stages.last_mut() {
            match pause {
                Some(_) => stage.status = StageStatus::Paused,
                None => {
                    let unfinished = unfinished_hosts(&ctx.bus, id, stage).await;
                    stage.status = if unfinished.is_empty() {
                        StageStatus::WaitingForAssessment
                    } else {
                        requeue = Some(Stage {
                            hosts: unfinished,
                            ..stage.clone()
                        });
                        StageStatus::Applying
                    };
                }
            }
        }
        match store(&ctx.bus, &rollout, read.revision).await {
            Ok(true) => {
                if let Some(stage) = &requeue
                    && let Err(e) = queue_jobs(
                        &ctx.bus,
                        &ctx.command_id,
                        id,
                        stage.number,
                        &stage.hosts,
                        false,
                    )
                    .await
                {
                    return Verdict::failed(e);
                }
                let _ = events::rollout(
                    &ctx.bus,
                    &ctx.instance,
                    id,
                    &format!("{}-{}", to.as_str(), ctx.command_id),
                    EventDetail::RolloutState {
                        rollout: id.to_string(),
                        state: to,
                        reason: pause.map(str::to_string),
                    },
                )
                .await;
                return done_pausing(id, pause.is_some());
            }
            Ok(false) => continue,
            Err(e) => return Verdict::failed(e),
        }
    }
}

/// Pauses every running rollout (emergency).
pub async fn halt(ctx: &CommandContext, reason: &str) -> Verdict {
    if reason.trim().is_empty() {
        return Verdict::invalid("a halt needs --reason");
    }
    let running = match list(&ctx.bus).await {
        Ok(list) => list.rollouts,
        Err(e) => return Verdict::failed(e),
    };
    let mut paused = Vec::new();
    for rollout in running.iter().filter(|r| r.state == RolloutState::Running) {
        let reason = format!("halt: {reason}");
        match pause_or_resume(ctx, &rollout.id, Some(&reason)).await {
            Verdict::Done { .. } => paused.push(rollout.id.clone()),
            // Changed meanwhile (rolled back, succeeded): not running any more.
            Verdict::Refused { .. } => {}
            other => return other,
        }
    }
    Verdict::Done {
        reply: Reply::Halted { paused },
    }
}

/// Queues another try of the hosts whose write failed in the current stage
/// (or, rolling back or finalizing, whose removal failed): every such host,
/// or those `named`. Each is marked as retrying (its failure kept in the
/// mark) before its job is queued, so the stage waits for it again and a
/// redelivery of this command queues the same tries, no more.
pub async fn retry(ctx: &CommandContext, id: &str, named: &[String]) -> Verdict {
    for host in named {
        if let Err(e) = hostname::validate(host) {
            return Verdict::invalid(format!("--host: {e}"));
        }
    }
    let bus = &ctx.bus;
    'again: loop {
        let read = match load(bus, id).await {
            Ok(Some(read)) => read,
            Ok(None) => return no_such(id),
            Err(e) => return Verdict::failed(e),
        };
        let mut rollout = read.rollout;
        let results = match results(bus, id).await {
            Ok(results) => results,
            Err(e) => return Verdict::failed(e),
        };
        let (remove, scope) = match (rollout.state, rollout.current_stage()) {
            (RolloutState::Running, Some(stage)) => (false, stage.hosts.clone()),
            (RolloutState::RollingBack | RolloutState::Finalizing, _) => {
                (true, removal_scope(&rollout, &results))
            }
            (state, _) => {
                return Verdict::Refused {
                    message: format!(
                        "rollout {id} is {}; hosts are tried again in a running rollout (resume a paused one first), or in one rolling back or finalizing",
                        state.as_str()
                    ),
                };
            }
        };
        let key = |host: &str| match remove {
            true => topology::rollout_removal_key(id, host),
            false => topology::rollout_host_key(id, host),
        };
        let retriable = |host: &String| {
            results.get(&key(host)).is_some_and(|r| {
                matches!(
                    r.outcome,
                    ApplyOutcome::Failed { .. } | ApplyOutcome::Retrying { .. }
                )
            })
        };
        let selected: Vec<String> = if named.is_empty() {
            scope.iter().filter(|h| retriable(h)).cloned().collect()
        } else {
            if let Some(host) = named.iter().find(|h| !scope.contains(h) || !retriable(h)) {
                return Verdict::Refused {
                    message: format!(
                        "{host} has no failed {} to try again in rollout {id}",
                        if remove {
                            "removal"
                        } else {
                            "write in the current stage"
                        }
                    ),
                };
            }
            named.to_vec()
        };
        if selected.is_empty() {
            return Verdict::Refused {
                message: format!("no host of rollout {id} has failed: nothing to try again"),
            };
        }
        let store_results = match bus.kv(&topology::ROLLOUT_HOSTS).await {
            Ok(store) => store,
            Err(e) => return Verdict::failed(e),
        };
        let mut jobs = Vec::new();
        for host in &selected {
            let k = key(host);
            let entry = match store_results.entry(k.as_str()).await {
                Ok(Some(entry)) => entry,
                Ok(None) => continue 'again,
                Err(e) => return Verdict::failed(BusError::js("reading a rollout result", e)),
            };
            let Ok(mut result) = codec::from_cbor::<HostApply>(&entry.value) else {
                return Verdict::failed(format!("the result of {host} is unreadable"));
            };
            if let ApplyOutcome::Failed { error } = &result.outcome {
                result.outcome = ApplyOutcome::Retrying {
                    previous: error.clone(),
                };
                result.attempt += 1;
                result.at = OffsetDateTime::now_utc();
                result.by = ctx.instance.clone();
                match store_results
                    .update(k.as_str(), codec::to_cbor(&result).into(), entry.revision)
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue 'again,
                    Err(e) => {
                        return Verdict::failed(BusError::js("marking a host for retry", e));
                    }
                }
            }
            jobs.push(ApplyJob {
                rollout: id.to_string(),
                stage: result.stage,
                hostname: host.clone(),
                remove,
                attempt: result.attempt,
            });
        }
        if !remove
            && let Some(stage) = rollout.stages.last_mut()
            && stage.status == StageStatus::WaitingForAssessment
        {
            stage.status = StageStatus::Applying;
            rollout.updated_at = OffsetDateTime::now_utc();
            match store(bus, &rollout, read.revision).await {
                Ok(true) => {}
                Ok(false) => continue 'again,
                Err(e) => return Verdict::failed(e),
            }
        }
        if let Err(e) = queue(bus, &ctx.command_id, &jobs).await {
            return Verdict::failed(e);
        }
        return Verdict::Done {
            reply: Reply::Retrying {
                id: id.to_string(),
                hosts: selected,
            },
        };
    }
}

fn done_pausing(id: &str, paused: bool) -> Verdict {
    let id = id.to_string();
    Verdict::Done {
        reply: if paused {
            Reply::RolloutPaused { id }
        } else {
            Reply::RolloutResumed { id }
        },
    }
}

/// What happened on each host of the rollout so far, by result key
/// ([`topology::rollout_host_key`], [`topology::rollout_removal_key`]).
pub async fn results(bus: &Bus, id: &str) -> Result<HashMap<String, HostApply>, BusError> {
    let prefix = topology::rollout_host_key(id, "");
    Ok(bus
        .snapshot::<HostApply>(&topology::ROLLOUT_HOSTS)
        .await?
        .into_iter()
        .filter(|(key, _)| key.starts_with(&prefix))
        .collect())
}

/// The hosts a decided removal covers: for a finalize every target; for a
/// rollback with `--remove-overrides` every host of every started stage
/// where the write may have landed, recorded or not (a write can land and
/// its reply be lost, or its replica die before recording it), so all but
/// those left alone as disabled. Removing is idempotent, so a host where
/// nothing landed costs one read.
pub fn removal_scope(rollout: &Rollout, results: &HashMap<String, HostApply>) -> Vec<String> {
    if rollout.finalize.is_some() {
        return rollout.targets.clone();
    }
    if !rollout
        .rollback
        .as_ref()
        .is_some_and(|d| d.remove_overrides)
    {
        return Vec::new();
    }
    let skipped = |host: &String| {
        results
            .get(&topology::rollout_host_key(&rollout.id, host))
            .is_some_and(|r| r.outcome == ApplyOutcome::SkippedDisabled)
    };
    let mut hosts: Vec<String> = rollout
        .stages
        .iter()
        .flat_map(|s| &s.hosts)
        .filter(|h| !skipped(h))
        .cloned()
        .collect();
    hosts.dedup();
    hosts
}

/// Hosts of a removal not yet seen clean, each with why: no removal
/// recorded yet, a removal that failed, or no probe since the removal
/// showing the override gone. Empty: the rollout is rolled back (or
/// finalized).
pub fn not_clean(
    rollout: &Rollout,
    results: &HashMap<String, HostApply>,
    record: impl Fn(&str) -> Option<fleetroll_bus::messages::host::HostRecord>,
) -> Vec<(String, String)> {
    removal_scope(rollout, results)
        .into_iter()
        .filter_map(|host| {
            let removal = results.get(&topology::rollout_removal_key(&rollout.id, &host));
            let why = match removal.map(|r| (&r.outcome, r.at)) {
                None => "its removal has not run yet".to_string(),
                Some((ApplyOutcome::Failed { error }, _)) => format!("its removal failed: {error}"),
                Some((_, removed_at)) => {
                    let seen = record(&host).map(|r| r.observation);
                    match seen {
                        Some(o)
                            if o.probed_at.is_some_and(|at| at > removed_at)
                                && o.override_present == Some(false) =>
                        {
                            return None;
                        }
                        Some(o) if o.probed_at.is_some_and(|at| at > removed_at) => {
                            "a probe since the removal still finds an override".to_string()
                        }
                        _ => "no probe since the removal yet".to_string(),
                    }
                }
            };
            Some((host, why))
        })
        .collect()
}

/// Stops a rollout for good; with `remove_overrides`, queues the removal of
/// every override it applied.
pub async fn rollback(
    ctx: &CommandContext,
    id: &str,
    remove_overrides: bool,
    reason: &str,
) -> Verdict {
    let reason = reason.trim();
    if reason.is_empty() {
        return Verdict::invalid("a rollback needs --reason");
    }
    loop {
        let read = match load(&ctx.bus, id).await {
            Ok(Some(read)) => read,
            Ok(None) => return no_such(id),
            Err(e) => return Verdict::failed(e),
        };
        let mut rollout = read.rollout;
        let stage = rollout.current_stage().map_or(0, |s| s.number);
        let results = match results(&ctx.bus, id).await {
            Ok(results) => results,
            Err(e) => return Verdict::failed(e),
        };
        if rollout.rollback.is_some() {
            // Rolled back already (or this very command, redelivered): the
            // removals are queued again, which changes nothing done.
            let removing = removal_scope(&rollout, &results);
            if let Err(e) = queue_jobs(&ctx.bus, &ctx.command_id, id, stage, &removing, true).await
            {
                return Verdict::failed(e);
            }
            return rolling_back(id, removing);
        }
        if !matches!(
            rollout.state,
            RolloutState::Running | RolloutState::Paused | RolloutState::Succeeded
        ) {
            return Verdict::Refused {
                message: format!(
                    "rollout {id} is {}; only a started rollout rolls back",
                    rollout.state.as_str()
                ),
            };
        }
        let now = OffsetDateTime::now_utc();
        rollout.state = RolloutState::RollingBack;
        rollout.updated_at = now;
        rollout.rollback = Some(Decision {
            remove_overrides,
            reason: reason.to_string(),
            by: ctx.actor.clone(),
            command_id: ctx.command_id.clone(),
            at: now,
        });
        if let Some(stage) = rollout.stages.last_mut() {
            stage.status = StageStatus::RolledBack;
        }
        let removing = removal_scope(&rollout, &results);
        match store(&ctx.bus, &rollout, read.revision).await {
            Ok(true) => {
                if let Err(e) =
                    queue_jobs(&ctx.bus, &ctx.command_id, id, stage, &removing, true).await
                {
                    return Verdict::failed(e);
                }
                let _ = events::rollout(
                    &ctx.bus,
                    &ctx.instance,
                    id,
                    "rolling_back",
                    EventDetail::RolloutState {
                        rollout: id.to_string(),
                        state: RolloutState::RollingBack,
                        reason: Some(reason.to_string()),
                    },
                )
                .await;
                return rolling_back(id, removing);
            }
            Ok(false) => continue,
            Err(e) => return Verdict::failed(e),
        }
    }
}

/// After success: removes the override from every target host, for good.
pub async fn finalize(ctx: &CommandContext, id: &str) -> Verdict {
    loop {
        let read = match load(&ctx.bus, id).await {
            Ok(Some(read)) => read,
            Ok(None) => return no_such(id),
            Err(e) => return Verdict::failed(e),
        };
        let mut rollout = read.rollout;
        let stage = rollout.current_stage().map_or(0, |s| s.number);
        let removing = rollout.targets.clone();
        let finalizing = |removing: Vec<String>| Verdict::Done {
            reply: Reply::Finalizing {
                id: id.to_string(),
                removing,
            },
        };
        if rollout.finalize.is_some() {
            // This very command, redelivered: queue the removals again.
            if let Err(e) = queue_jobs(&ctx.bus, &ctx.command_id, id, stage, &removing, true).await
            {
                return Verdict::failed(e);
            }
            return finalizing(removing);
        }
        if rollout.state != RolloutState::Succeeded {
            return Verdict::Refused {
                message: format!(
                    "rollout {id} is {}; only a succeeded rollout is finalized",
                    rollout.state.as_str()
                ),
            };
        }
        let now = OffsetDateTime::now_utc();
        rollout.state = RolloutState::Finalizing;
        rollout.updated_at = now;
        rollout.finalize = Some(Decision {
            remove_overrides: true,
            reason: "finalize: the change is merged".into(),
            by: ctx.actor.clone(),
            command_id: ctx.command_id.clone(),
            at: now,
        });
        match store(&ctx.bus, &rollout, read.revision).await {
            Ok(true) => {
                if let Err(e) =
                    queue_jobs(&ctx.bus, &ctx.command_id, id, stage, &removing, true).await
                {
                    return Verdict::failed(e);
                }
                let _ = events::rollout(
                    &ctx.bus,
                    &ctx.instance,
                    id,
                    "finalizing",
                    EventDetail::RolloutState {
                        rollout: id.to_string(),
                        state: RolloutState::Finalizing,
                        reason: None,
                    },
                )
                .await;
                return finalizing(removing);
            }
            Ok(false) => continue,
            Err(e) => return Verdict::failed(e),
        }
    }
}

fn rolling_back(id: &str, removing: Vec<String>) -> Verdict {
    Verdict::Done {
        reply: Reply::RollingBack {
            id: id.to_string(),
            removing,
        },
    }
}

/// How often rolling-back rollouts are checked for clean hosts.
const SETTLE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// A rolling-back rollout is rolled back, and a finalizing one finalized,
/// once every host its removal covers ([`removal_scope`]) has its removal
/// recorded and a probe since shows no override there ([`not_clean`]).
/// Every replica runs this; the compare-and-swap lets one of them record
/// it.
pub async fn settle(bus: Bus, index: Arc<HostIndex>, instance: String) -> Result<(), BusError> {
    loop {
        tokio::time::sleep(SETTLE_EVERY).await;
        let rollouts = match list(&bus).await {
            Ok(list) => list.rollouts,
            Err(e) => {
                warn!(error = %e, "cannot read rollouts");
                continue;
            }
        };
        for rollout in rollouts.into_iter().filter(|r| {
            matches!(
                r.state,
                RolloutState::RollingBack | RolloutState::Finalizing
            )
        }) {
            let done = match rollout.state {
                RolloutState::Finalizing => RolloutState::Finalized,
                _ => RolloutState::RolledBack,
            };
            let results = match results(&bus, &rollout.id).await {
                Ok(results) => results,
                Err(e) => {
                    warn!(rollout = %rollout.id, error = %e, "cannot read its hosts' results");
                    continue;
                }
            };
            let hosts = removal_scope(&rollout, &results);
            let mut records = HashMap::new();
            for host in &hosts {
                if let Ok(Some(record)) = index.get(host).await {
                    records.insert(host.clone(), record);
                }
            }
            if !not_clean(&rollout, &results, |h| records.get(h).cloned()).is_empty() {
                continue;
            }
            let settled = rollout_store::update(&bus, &rollout.id, |current| {
                if current.state != rollout.state {
                    return false;
                }
                current.state = done;
                current.updated_at = OffsetDateTime::now_utc();
                true
            })
            .await;
            let settled = match settled {
                Ok(settled) => settled,
                Err(e) => {
                    warn!(rollout = %rollout.id, error = %e, "cannot record it settled");
                    continue;
                }
            };
            if settled.is_some() {
                tracing::info!(rollout = %rollout.id, hosts = hosts.len(), state = done.as_str(), "every host clean");
                let _ = events::rollout(
                    &bus,
                    &instance,
                    &rollout.id,
                    done.as_str(),
                    EventDetail::RolloutState {
                        rollout: rollout.id.clone(),
                        state: done,
                        reason: None,
                    },
                )
                .await;
            }
        }
    }
}

/// The stage's hosts with no result yet (a retry counts as none).
pub async fn unfinished_hosts(bus: &Bus, rollout: &str, stage: &Stage) -> Vec<String> {
    let Ok(results) = results(bus, rollout).await else {
        return stage.hosts.clone();
    };
    stage
        .hosts
        .iter()
        .filter(|host| {
            results
                .get(&topology::rollout_host_key(rollout, host))
                .is_none_or(|r| matches!(r.outcome, ApplyOutcome::Retrying { .. }))
        })
        .cloned()
        .collect()
}

/// Every rollout, newest first.
pub async fn list(bus: &Bus) -> Result<RolloutList, BusError> {
    let mut rollouts: Vec<Rollout> = bus
        .snapshot::<Rollout>(&topology::ROLLOUTS)
        .await?
        .into_values()
        .collect();
    rollouts.sort_by_key(|r| std::cmp::Reverse(r.created_at));
    Ok(RolloutList { rollouts })
}

/// A rollout with its hosts' results, and, while it removes its
/// overrides, which hosts are not seen clean yet.
pub async fn status(
    bus: &Bus,
    index: &HostIndex,
    id: &str,
) -> Result<Option<RolloutStatus>, BusError> {
    let Some(read) = load(bus, id).await? else {
        return Ok(None);
    };
    let rollout = read.rollout;
    let results = results(bus, id).await?;
    let mut not_clean_hosts = Vec::new();
    if matches!(
        rollout.state,
        RolloutState::RollingBack | RolloutState::Finalizing
    ) {
        let mut records = HashMap::new();
        for host in removal_scope(&rollout, &results) {
            if let Ok(Some(record)) = index.get(&host).await {
                records.insert(host, record);
            }
        }
        not_clean_hosts = not_clean(&rollout, &results, |h| records.get(h).cloned())
            .into_iter()
            .map(|(hostname, why)| HeldBack { hostname, why })
            .collect();
    }
    Ok(Some(RolloutStatus {
        evaluation: evaluation(bus, id).await?,
        rollout,
        hosts: results.into_values().collect(),
        not_clean: not_clean_hosts,
    }))
}

#[cfg(test)]
mod tests {
    use fleetroll_bus::messages::rollout::{GateConfig, MAX_WINDOW_S};

    use super::*;

    fn plan(gates: GateConfig) -> RolloutPlan {
        RolloutPlan {
            target: "role:gecko*".into(),
            canary: 1,
            batch_pct: 25,
            change: "PUPPET_BRANCH=x\n".into(),
            gates,
            skip: vec![],
        }
    }

    /// A stage's jobs are queued even when, for a while in the middle, no
    /// stream takes them ("no stream found", as while a cluster that lost
    /// a node elects the stream's leader): the chaos test once left a
    /// stage applying half its hosts because the advance gave up.
    #[tokio::test(flavor = "multi_thread")]
    async fn jobs_are_queued_through_a_while_without_the_stream() {
        use fleetroll_bus::embedded::{EmbeddedServer, NatsUser};
        use fleetroll_bus::setup::{self, Replicas};

        let dir = tempfile::tempdir().unwrap();
        let (server, bus) = EmbeddedServer::with_mesh(dir.path())
            .await
            .expect("nats-server (run `make setup`)");
        let admin = server.connect(NatsUser::Admin).await.unwrap();
        admin
            .js
            .delete_stream(topology::APPLY_JOBS.name)
            .await
            .unwrap();
        let hosts: Vec<String> = (0..5).map(|i| format!("h{i}.example.com")).collect();

        let (queued, ()) = tokio::join!(
            queue_jobs(&bus, "command-1", "ro-test", 1, &hosts, false),
            async {
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                setup::ensure(&admin, Replicas(1), Default::default())
                    .await
                    .unwrap();
            }
        );
        queued.unwrap();
        let stream = bus
            .js
            .get_stream(topology::APPLY_JOBS.name)
            .await
            .unwrap()
            .get_info()
            .await
            .unwrap();
        assert_eq!(stream.state.messages, hosts.len() as u64);
    }

    /// A plan sent over the bus skips the CLI's `--gate` checks: a NaN or
    /// negative threshold would judge nothing, and a window past the
    /// calendar would make every gatekeeper replica panic on it.
    #[test]
    fn gates_no_gatekeeper_can_judge_by_are_refused() {
        assert_eq!(check_plan(&plan(GateConfig::default())), Ok(()));
        type Spoil = fn(&mut GateConfig);
        let cases: [(&str, Spoil); 5] = [
            ("window", |g| g.window_s = u64::MAX),
            ("window", |g| g.window_s = 0),
            ("sshable_min_pct", |g| g.sshable_min_pct = f64::NAN),
            ("min_jobs_per_host", |g| g.min_jobs_per_host = -1.0),
            ("blast_max_failing_fraction", |g| {
                g.blast_max_failing_fraction = 1.5
            }),
        ];
        for (name, spoil) in cases {
            let mut gates = GateConfig::default();
            spoil(&mut gates);
            let err = check_plan(&plan(gates)).unwrap_err();
            assert!(err.contains(name), "{name}: {err}");
        }
        let huge = GateConfig {
            window_s: u64::MAX,
            ..GateConfig::default()
        };
        assert_eq!(huge.window().whole_seconds(), MAX_WINDOW_S as i64);
    }
}
