//! `fleetroll rollout`: plan, start, watch over and steer a rollout.

use crate::term::{say, tell};
use fleetroll_bus::hostname;
use fleetroll_bus::messages::NoParams;
use fleetroll_bus::messages::command::{Command, Reply, Verdict};
use fleetroll_bus::messages::rollout::{
    ApplyOutcome, GateConfig, HeldBack, RolloutId, RolloutList, RolloutPlan, RolloutState,
    RolloutStatus,
};
use fleetroll_bus::messages::timestamp;
use fleetroll_bus::subjects::queries;

use futures::StreamExt;

use crate::args::RolloutCommand;
use crate::cmd::{COMMAND_WAIT, query, report_failure, send};
use crate::context::Context;
use crate::exit::{self, fail};

pub async fn run(ctx: &Context, command: RolloutCommand) -> anyhow::Result<u8> {
    match command {
        RolloutCommand::Create {
            target,
            canary,
            batch_pct,
            change,
            gate,
            skip,
        } => {
            let mut gates = GateConfig::default();
            for assignment in &gate {
                gates
                    .set(assignment)
                    .map_err(|e| fail(exit::INVALID, format!("--gate: {e}")))?;
            }
            let plan = RolloutPlan {
                target,
                canary,
                batch_pct,
                change: with_newline(change),
                gates,
                skip,
            };
            create(ctx, plan).await
        }
        RolloutCommand::Start { id } => stage_started(ctx, Command::RolloutStart { id }).await,
        RolloutCommand::Advance {
            id,
            batch_size,
            force,
            reason,
        } => {
            stage_started(
                ctx,
                Command::RolloutAdvance {
                    id,
                    batch_size,
                    force,
                    reason,
                },
            )
            .await
        }
        RolloutCommand::Pause { id, reason } => pause(ctx, id, reason).await,
        RolloutCommand::Retry { id, host } => retry(ctx, id, host).await,
        RolloutCommand::Resume { id } => resume(ctx, id).await,
        RolloutCommand::Rollback {
            id,
            remove_overrides,
            confirm,
            reason,
        } => rollback(ctx, id, remove_overrides, confirm, reason).await,
        RolloutCommand::List { json } => list(ctx, json).await,
        RolloutCommand::Status { id, json, watch } => status(ctx, id, json, watch).await,
        RolloutCommand::Finalize {
            id,
            all: _,
            confirm,
        } => finalize(ctx, id, confirm).await,
        RolloutCommand::Halt { all: _, reason } => halt(ctx, reason).await,
    }
}

/// `rollout create`: the rollout's id on stdout.
async fn create(ctx: &Context, plan: RolloutPlan) -> anyhow::Result<u8> {
    let outcome = send(ctx, Command::RolloutCreate { plan }, COMMAND_WAIT).await?;
    match &outcome.verdict {
        Verdict::Done {
            reply: Reply::RolloutCreated { id },
        } => {
            say!("{id}");
            tell!("created rollout {id}; start it with `fleetroll rollout start {id}`");
            Ok(exit::OK)
        }
        _ => Ok(report_failure(&outcome)),
    }
}

async fn pause(ctx: &Context, id: String, reason: String) -> anyhow::Result<u8> {
    let outcome = send(ctx, Command::RolloutPause { id, reason }, COMMAND_WAIT).await?;
    if let Verdict::Done {
        reply: Reply::RolloutPaused { id },
    } = &outcome.verdict
    {
        say!("paused {id}");
    }
    Ok(report_failure(&outcome))
}

async fn retry(ctx: &Context, id: String, host: Vec<String>) -> anyhow::Result<u8> {
    for h in &host {
        hostname::validate(h).map_err(|e| fail(exit::INVALID, format!("--host: {e}")))?;
    }
    let outcome = send(ctx, Command::RolloutRetry { id, hosts: host }, COMMAND_WAIT).await?;
    if let Verdict::Done {
        reply: Reply::Retrying { id, hosts },
    } = &outcome.verdict
    {
        say!(
            "{id}: trying {} host(s) again: {}",
            hosts.len(),
            hosts.join(", ")
        );
    }
    Ok(report_failure(&outcome))
}

async fn resume(ctx: &Context, id: String) -> anyhow::Result<u8> {
    let outcome = send(ctx, Command::RolloutResume { id }, COMMAND_WAIT).await?;
    if let Verdict::Done {
        reply: Reply::RolloutResumed { id },
    } = &outcome.verdict
    {
        say!("resumed {id}");
    }
    Ok(report_failure(&outcome))
}

/// Without `confirm`, says what it would do and does nothing.
async fn rollback(
    ctx: &Context,
    id: String,
    remove_overrides: bool,
    confirm: bool,
    reason: String,
) -> anyhow::Result<u8> {
    if !confirm {
        say!(
            "would stop rollout {id} for good{}",
            if remove_overrides {
                " and remove the overrides it applied (each snapshotted first), then wait for fresh probes to show the hosts clean"
            } else {
                "; its overrides stay until removed (--remove-overrides)"
            }
        );
        say!("run again with --confirm to do it");
        return Ok(exit::REFUSED);
    }
    let outcome = send(
        ctx,
        Command::RolloutRollback {
            id,
            remove_overrides,
            reason,
        },
        COMMAND_WAIT,
    )
    .await?;
    if let Verdict::Done {
        reply: Reply::RollingBack { id, removing },
    } = &outcome.verdict
    {
        say!(
            "{id}: rolling back; removing the override from {} host(s)",
            removing.len()
        );
        tell!(
            "it is rolled back once fresh probes show them clean (`fleetroll rollout status {id}`)"
        );
    }
    Ok(report_failure(&outcome))
}

async fn list(ctx: &Context, json: bool) -> anyhow::Result<u8> {
    let list: RolloutList = query(ctx, queries::ROLLOUTS_LIST, &NoParams {}).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list.rollouts)?);
        return Ok(exit::OK);
    }
    say!(
        "{:<14} {:<12} {:>7} {:>7}  {:<20}  TARGET",
        "ID",
        "STATE",
        "STAGES",
        "HOSTS",
        "CREATED"
    );
    for r in &list.rollouts {
        say!(
            "{:<14} {:<12} {:>7} {:>7}  {:<20}  {}",
            r.id,
            r.state.as_str(),
            r.stages.len(),
            r.targets.len(),
            timestamp(r.created_at),
            r.plan.target
        );
    }
    Ok(exit::OK)
}

/// The status now, and with `watch` again at each of its events.
async fn status(ctx: &Context, id: String, json: bool, watch: bool) -> anyhow::Result<u8> {
    let params = RolloutId { id: id.clone() };
    let ask = || query::<_, RolloutStatus>(ctx, queries::ROLLOUTS_GET, &params);
    if json {
        println!("{}", serde_json::to_string_pretty(&ask().await?)?);
        return Ok(exit::OK);
    }
    print_status(&ask().await?);
    if watch {
        let bus = ctx.connect().await?;
        let events = fleetroll_bus::events::follow(&bus, Some(&id)).await?;
        tokio::pin!(events);
        while let Some(event) = events.next().await {
            say!("\n{}", crate::cmd::watch::describe(&event));
            print_status(&ask().await?);
        }
    }
    Ok(exit::OK)
}

/// Without `confirm`, says what it would do and does nothing.
async fn finalize(ctx: &Context, id: String, confirm: bool) -> anyhow::Result<u8> {
    if !confirm {
        say!(
            "would remove the override from every target host of rollout {id} (each snapshotted first), for good: to bring the change back, create a new rollout"
        );
        say!("run again with --confirm to do it");
        return Ok(exit::REFUSED);
    }
    let outcome = send(ctx, Command::RolloutFinalize { id }, COMMAND_WAIT).await?;
    if let Verdict::Done {
        reply: Reply::Finalizing { id, removing },
    } = &outcome.verdict
    {
        say!(
            "{id}: finalizing; removing the override from {} host(s)",
            removing.len()
        );
        tell!("it is finalized once fresh probes show them clean");
    }
    Ok(report_failure(&outcome))
}

async fn halt(ctx: &Context, reason: String) -> anyhow::Result<u8> {
    let outcome = send(ctx, Command::RolloutHalt { reason }, COMMAND_WAIT).await?;
    if let Verdict::Done {
        reply: Reply::Halted { paused },
    } = &outcome.verdict
    {
        if paused.is_empty() {
            say!("no rollout was running");
        }
        for id in paused {
            say!("paused {id}");
        }
    }
    Ok(report_failure(&outcome))
}

/// The override file's contents end with a newline, like any text file.
fn with_newline(mut change: String) -> String {
    if !change.ends_with('\n') {
        change.push('\n');
    }
    change
}

async fn stage_started(ctx: &Context, command: Command) -> anyhow::Result<u8> {
    let outcome = send(ctx, command, COMMAND_WAIT).await?;
    match &outcome.verdict {
        Verdict::Done {
            reply: Reply::StageStarted {
                id, stage, hosts, ..
            },
        } => {
            say!(
                "{id}: stage {stage} applying on {} host(s): {}",
                hosts.len(),
                hosts.join(", ")
            );
            tell!("follow it with `fleetroll rollout status {id}`");
            Ok(exit::OK)
        }
        _ => Ok(report_failure(&outcome)),
    }
}

fn print_status(status: &RolloutStatus) {
    let r = &status.rollout;
    say!("rollout   {}", r.id);
    say!("state     {}", r.state.as_str());
    if let Some(reason) = &r.pause_reason {
        say!("paused    {reason}");
    }
    if let Some(rollback) = &r.rollback {
        say!(
            "rollback  by {} at {}: {}{}",
            rollback.by,
            timestamp(rollback.at),
            rollback.reason,
            if rollback.remove_overrides {
                " (removing its overrides)"
            } else {
                ""
            }
        );
    }
    say!("target    {} ({} host(s))", r.plan.target, r.targets.len());
    say!(
        "change    {}",
        r.plan.change.trim_end().replace('\n', "\\n")
    );
    say!("created   {} by {}", timestamp(r.created_at), r.created_by);
    for stage in &r.stages {
        let forced = if stage.forced {
            format!(
                "  FORCED: {}",
                stage.reason.as_deref().unwrap_or("(no reason)")
            )
        } else {
            String::new()
        };
        say!(
            "stage {}   {} ({} host(s), by {} at {}){forced}",
            stage.number,
            stage.status.as_str(),
            stage.hosts.len(),
            stage.started_by,
            timestamp(stage.started_at)
        );
        for host in &stage.hosts {
            let results: Vec<String> = status
                .hosts
                .iter()
                .filter(|h| &h.hostname == host)
                .map(|h| match &h.outcome {
                    ApplyOutcome::Applied { snapshot: Some(id) } => {
                        format!("applied (snapshot {id})")
                    }
                    ApplyOutcome::Applied { snapshot: None } => "applied (already so)".into(),
                    ApplyOutcome::Removed { snapshot: Some(id) } => {
                        format!("removed (snapshot {id})")
                    }
                    ApplyOutcome::Removed { snapshot: None } => "removed (already gone)".into(),
                    ApplyOutcome::Failed { error } => format!("FAILED: {error}"),
                    ApplyOutcome::SkippedDisabled => "skipped (disabled)".into(),
                    ApplyOutcome::Retrying { previous } => {
                        format!("retrying (try {}; it failed: {previous})", h.attempt + 1)
                    }
                })
                .collect();
            let result = if results.is_empty() {
                "pending".to_string()
            } else {
                results.join("; ")
            };
            say!("  {host:<36} {result}");
        }
    }
    match &status.evaluation {
        Some(e) => {
            say!(
                "gates     stage {} at {} (baseline success rate {})",
                e.stage,
                timestamp(e.at),
                e.baseline
                    .success_rate
                    .map_or("-".to_string(), |r| format!("{:.1}%", r * 100.0))
            );
            for gate in &e.gates {
                say!(
                    "  {:<30} {:<13} value {:<10} threshold {:<8} {}",
                    gate.name,
                    gate.verdict.as_str(),
                    gate.value.map_or("-".to_string(), |v| format!("{v:.2}")),
                    gate.threshold,
                    gate.detail
                );
            }
        }
        None => say!("gates     not evaluated yet"),
    }
    let remaining = r.remaining().len();
    if remaining > 0 {
        say!("not yet   {remaining} host(s)");
    }
    // Why a rollout is not yet where its gates or removals would take it.
    let held: &[HeldBack] = match r.state {
        RolloutState::Running => status
            .evaluation
            .as_ref()
            .map_or(&[], |e| e.holding_back.as_slice()),
        _ => &status.not_clean,
    };
    if !held.is_empty() {
        let what = match r.state {
            RolloutState::Running => "not succeeded",
            RolloutState::Finalizing => "not finalized",
            _ => "not rolled back",
        };
        say!("{what}: {} host(s) hold it back", held.len());
        for h in held {
            say!("  {:<36} {}", h.hostname, h.why);
        }
    }
}
