//! `fleetroll watch [rollout ID]`: rollout events as they happen.

use crate::term::{say, tell};
use fleetroll_bus::codec;
use fleetroll_bus::events;
use fleetroll_bus::messages::event::{Event, EventDetail};
use fleetroll_bus::messages::rollout::{ApplyOutcome, RolloutId};
use fleetroll_bus::messages::timestamp;
use fleetroll_bus::rollout_store;
use futures::StreamExt;

use crate::context::Context;
use crate::exit;

/// One line for an event.
pub fn describe(event: &Event) -> String {
    let at = timestamp(event.at);
    match &event.detail {
        EventDetail::RolloutState {
            rollout,
            state,
            reason,
        } => format!(
            "{at}  {rollout}  state  {}{}",
            state.as_str(),
            reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
        EventDetail::RolloutStage {
            rollout,
            stage,
            status,
            hosts,
        } => format!(
            "{at}  {rollout}  stage  {stage} {} ({} host(s))",
            status.as_str(),
            hosts.len()
        ),
        EventDetail::RolloutHost {
            rollout,
            stage,
            hostname,
            outcome,
            ..
        } => {
            let what = match outcome {
                ApplyOutcome::Applied { .. } => "applied".to_string(),
                ApplyOutcome::Removed { .. } => "removed".to_string(),
                ApplyOutcome::Failed { error } => format!("FAILED: {error}"),
                ApplyOutcome::SkippedDisabled => "skipped (disabled)".to_string(),
                ApplyOutcome::Retrying { .. } => "retrying".to_string(),
            };
            format!("{at}  {rollout}  host   stage {stage} {hostname} {what}")
        }
        EventDetail::Regression { rollout, reason } => {
            format!("{at}  {rollout}  REGRESSION {reason}")
        }
        EventDetail::BlastRadius {
            rollout, reason, ..
        } => {
            format!("{at}  {rollout}  PAUSED {reason}")
        }
        EventDetail::RolloutGates { evaluation } => {
            let verdicts: Vec<String> = evaluation
                .gates
                .iter()
                .map(|g| format!("{}={}", g.name, g.verdict.as_str()))
                .collect();
            format!(
                "{at}  {}  gates  stage {}: {}",
                evaluation.rollout,
                evaluation.stage,
                verdicts.join(" ")
            )
        }
        EventDetail::CommandFinished { outcome, .. } => format!(
            "{at}  command {} {}: {}",
            outcome.command,
            outcome.command_id,
            outcome.verdict.label()
        ),
    }
}

pub async fn run(ctx: &Context, rollout: Option<String>, json: bool) -> anyhow::Result<u8> {
    // The id goes into a subject: `ro.*` would follow other rollouts.
    if let Some(id) = rollout.as_deref().filter(|id| !RolloutId::well_formed(id)) {
        return Err(exit::fail(
            exit::INVALID,
            format!(
                "no rollout `{id}`: rollout ids are letters, digits, `-` and `_` (e.g. ro-3f2a9c01d4)"
            ),
        ));
    }
    let bus = ctx.connect().await?;
    // An unknown rollout is an error, not a watch that never says anything
    // (as the web UI's feed answers 404).
    if let Some(id) = rollout.as_deref()
        && rollout_store::load(&bus, id).await?.is_none()
    {
        return Err(exit::fail(
            exit::INVALID,
            format!("no rollout `{id}` (`fleetroll rollout list`)"),
        ));
    }
    let events = events::follow(&bus, rollout.as_deref()).await?;
    tokio::pin!(events);
    tell!(
        "watching {} (Ctrl-C to stop)",
        rollout
            .as_deref()
            .map_or("every rollout".to_string(), |id| format!("rollout {id}"))
    );
    while let Some(event) = events.next().await {
        if json {
            println!("{}", String::from_utf8_lossy(&codec::to_json(&event)));
        } else {
            say!("{}", describe(&event));
        }
    }
    Ok(exit::OK)
}
