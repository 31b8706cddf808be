//! What goes into the audit record of an event.

use fleetroll_bus::messages::audit::{ApprovalMode, AuditRecord};
use fleetroll_bus::messages::command::{Command, HostSelection, Outcome, Reply, Verdict};
use fleetroll_bus::messages::event::{Event, EventDetail};
use fleetroll_bus::messages::rollout::{ApplyOutcome, GateConfig, GateEvaluation};
use fleetroll_bus::messages::set_aside::SetAside;
use fleetroll_bus::subjects;

/// The audit record an event calls for (index and link still to fill in),
/// and the subject it is kept under; none for events that are not audited.
pub fn draft(event: &Event) -> Option<(String, AuditRecord)> {
    match &event.detail {
        EventDetail::CommandFinished {
            command,
            outcome,
            claimed_actor,
        } => Some((
            subjects::audit_command(&outcome.command_id),
            AuditRecord {
                index: 0,
                prev_hash: String::new(),
                at: outcome.finished_at,
                action: command.name().to_string(),
                actor: outcome.actor.clone(),
                claimed_actor: claimed_actor.clone(),
                outcome: outcome.verdict.label().to_string(),
                message: why_not_done(&outcome.verdict),
                command_id: Some(outcome.command_id.clone()),
                rollout: rollout_of(command, outcome),
                parameters: Some(command.as_ref().clone()),
                hosts: affected_hosts(command, outcome),
                approval_mode: ApprovalMode::SelfApproved,
                force: command.forced(),
                reason: command.reason().map(str::to_string),
                gate_config: gates_of(outcome).0,
                gate_evaluation: gates_of(outcome).1,
                snapshots: Vec::new(),
                handled_by: outcome.handled_by.clone(),
            },
        )),
        // What a rollout did to a host, with the snapshot taken first.
        EventDetail::RolloutHost {
            rollout,
            stage,
            hostname,
            outcome,
            actor,
            command_id,
            attempt,
        } => {
            let action = match outcome {
                ApplyOutcome::Removed { .. } => "override_remove",
                _ => "override_apply",
            };
            let (result, message, snapshots) = match outcome {
                ApplyOutcome::Applied { snapshot } | ApplyOutcome::Removed { snapshot } => {
                    ("done", None, snapshot.iter().cloned().collect())
                }
                ApplyOutcome::Failed { error } => ("failed", Some(error.clone()), Vec::new()),
                ApplyOutcome::SkippedDisabled => (
                    "skipped",
                    Some("the host is disabled".to_string()),
                    Vec::new(),
                ),
                // Never announced: the retry's own result is.
                ApplyOutcome::Retrying { .. } => return None,
            };
            Some((
                subjects::audit_host_change(
                    rollout,
                    action.trim_start_matches("override_"),
                    *stage,
                    *attempt,
                    hostname,
                ),
                AuditRecord {
                    actor: Some(actor.clone()),
                    outcome: result.into(),
                    message,
                    command_id: Some(command_id.clone()),
                    hosts: vec![hostname.clone()],
                    snapshots,
                    ..of_rollout(event, action, rollout)
                },
            ))
        }
        // The gatekeeper paused a rollout by itself.
        EventDetail::BlastRadius {
            rollout,
            stage,
            failing,
            reason,
            ..
        } => Some((
            subjects::audit_auto_pause(rollout, *stage),
            AuditRecord {
                hosts: failing.iter().map(|(h, _)| h.clone()).collect(),
                reason: Some(reason.clone()),
                ..of_rollout(event, "rollout_auto_pause", rollout)
            },
        )),
        // After finalize, the gatekeeper saw a severe regression.
        EventDetail::Regression { rollout, reason } => Some((
            subjects::audit_regression(rollout),
            AuditRecord {
                reason: Some(reason.clone()),
                ..of_rollout(event, "rollout_regression", rollout)
            },
        )),
        // Stage and state changes follow from commands, which are audited.
        EventDetail::RolloutStage { .. }
        | EventDetail::RolloutState { .. }
        | EventDetail::RolloutGates { .. } => None,
    }
}

/// The message a set-aside advisory is about, as far as it is still in its
/// stream: its subject, and for a command what it claimed to be.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SetAsideMessage {
    pub subject: Option<String>,
    pub command: Option<Command>,
    pub command_id: Option<String>,
    pub claimed_actor: Option<String>,
}

/// The audit record of a message the mesh gave up on, and its subject
/// (one per message).
pub fn set_aside(advisory: &SetAside, message: &SetAsideMessage) -> (String, AuditRecord) {
    let subject = message.subject.as_deref().unwrap_or("no longer stored");
    (
        subjects::audit_set_aside(&advisory.stream, advisory.stream_seq),
        AuditRecord {
            index: 0,
            prev_hash: String::new(),
            at: advisory.timestamp,
            action: "message_set_aside".into(),
            actor: None,
            claimed_actor: message.claimed_actor.clone(),
            outcome: "set_aside".into(),
            message: Some(format!(
                "{} message {} ({subject}), consumer {}: {}",
                advisory.stream,
                advisory.stream_seq,
                advisory.consumer,
                advisory.why()
            )),
            command_id: message.command_id.clone(),
            rollout: message
                .command
                .as_ref()
                .and_then(|c| c.rollout().map(str::to_string)),
            parameters: message.command.clone(),
            hosts: Vec::new(),
            approval_mode: ApprovalMode::SelfApproved,
            force: false,
            reason: advisory.reason.clone(),
            gate_config: None,
            gate_evaluation: None,
            snapshots: Vec::new(),
            handled_by: advisory.consumer.clone(),
        },
    )
}

/// A record of what happened in a rollout outside any command (a host
/// changed, a pause by the gatekeeper): nobody's token, done, no
/// parameters; each caller fills in what it knows.
fn of_rollout(event: &Event, action: &str, rollout: &str) -> AuditRecord {
    AuditRecord {
        index: 0,
        prev_hash: String::new(),
        at: event.at,
        action: action.into(),
        actor: None,
        claimed_actor: None,
        outcome: "done".into(),
        message: None,
        command_id: None,
        rollout: Some(rollout.to_string()),
        parameters: None,
        hosts: Vec::new(),
        approval_mode: ApprovalMode::SelfApproved,
        force: false,
        reason: None,
        gate_config: None,
        gate_evaluation: None,
        snapshots: Vec::new(),
        handled_by: event.source.clone(),
    }
}

/// The gate configuration and evaluation an advance was decided on.
fn gates_of(outcome: &Outcome) -> (Option<GateConfig>, Option<GateEvaluation>) {
    match &outcome.verdict {
        Verdict::Done {
            reply: Reply::StageStarted {
                gates, evaluation, ..
            },
        } => (gates.as_deref().cloned(), evaluation.as_deref().cloned()),
        _ => (None, None),
    }
}

/// The rollout a command is about; for a creation, the one it created.
fn rollout_of(command: &Command, outcome: &Outcome) -> Option<String> {
    match &outcome.verdict {
        Verdict::Done {
            reply: Reply::RolloutCreated { id },
        } => Some(id.clone()),
        _ => command.rollout().map(str::to_string),
    }
}

fn why_not_done(verdict: &Verdict) -> Option<String> {
    match verdict {
        Verdict::Done { .. } => None,
        Verdict::Denied { denial } => Some(denial.to_string()),
        Verdict::Invalid { message }
        | Verdict::Refused { message }
        | Verdict::Failed { message } => Some(message.clone()),
    }
}

/// The hosts a command was about; where the command chose them itself (a
/// filter, `--seed all`, a sync), the ones it touched.
fn affected_hosts(command: &Command, outcome: &Outcome) -> Vec<String> {
    let reply = match &outcome.verdict {
        Verdict::Done { reply } => Some(reply),
        _ => None,
    };
    let mut hosts = match (command, reply) {
        (Command::SeedSync { .. }, Some(Reply::SeedsSynced { added, removed })) => {
            added.iter().chain(removed).cloned().collect()
        }
        (Command::HostRefresh { all: true, .. }, Some(Reply::Refreshed { hosts })) => {
            hosts.iter().map(|h| h.hostname.clone()).collect()
        }
        (
            Command::HostAssignPopulation {
                hosts: HostSelection::Filter { .. },
                ..
            },
            Some(Reply::HostsUpdated { changed, .. }),
        ) => changed.clone(),
        (
            Command::HostAssignPopulation {
                hosts: HostSelection::Names { hostnames },
                ..
            },
            _,
        )
        | (Command::SeedAdd { hostnames }, _)
        | (Command::SeedRemove { hostnames }, _)
        | (Command::SeedSync { hostnames }, _)
        | (Command::HostRefresh { hostnames, .. }, _) => hostnames.clone(),
        (Command::HostRepin { hostname }, _)
        | (Command::HostSetExpectedRole { hostname, .. }, _)
        | (Command::HostClearExpectedRole { hostname }, _)
        | (Command::HostDisable { hostname, .. }, _)
        | (Command::HostEnable { hostname }, _)
        | (Command::HostQuarantine { hostname, .. }, _)
        | (Command::HostUnquarantine { hostname }, _)
        | (Command::HostConverge { hostname }, _)
        | (Command::HostReboot { hostname }, _) => vec![hostname.clone()],
        (_, Some(Reply::PinsImported { pins })) => {
            pins.iter().map(|p| p.hostname.clone()).collect()
        }
        (_, Some(Reply::StageStarted { hosts, .. }))
        | (_, Some(Reply::Retrying { hosts, .. }))
        | (
            _,
            Some(Reply::RollingBack {
                removing: hosts, ..
            }),
        ) => hosts.clone(),
        (Command::HostAssignPopulation { .. }, _)
        | (Command::RolloutCreate { .. }, _)
        | (Command::RolloutStart { .. }, _)
        | (Command::RolloutAdvance { .. }, _)
        | (Command::RolloutPause { .. }, _)
        | (Command::RolloutRetry { .. }, _)
        | (Command::RolloutResume { .. }, _)
        | (Command::RolloutRollback { .. }, _)
        | (Command::RolloutHalt { .. }, _)
        | (Command::RolloutFinalize { .. }, _)
        | (Command::Ping { .. }, _)
        | (Command::PopulationCreate { .. }, _)
        | (Command::HostPinImport { .. }, _)
        | (Command::TokenRevoke { .. }, _) => Vec::new(),
    };
    hosts.sort();
    hosts.dedup();
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetroll_bus::messages::command::{Denial, ProbeSummary};
    use time::OffsetDateTime;

    fn finished(command: Command, verdict: Verdict) -> Event {
        Event {
            at: OffsetDateTime::UNIX_EPOCH,
            source: "prober-1".into(),
            detail: EventDetail::CommandFinished {
                outcome: Outcome {
                    command_id: "c1".into(),
                    command: command.name().into(),
                    actor: Some("alice".into()),
                    verdict,
                    handled_by: "prober-1".into(),
                    delivery: 1,
                    finished_at: OffsetDateTime::UNIX_EPOCH,
                },
                command: Box::new(command),
                claimed_actor: None,
            },
        }
    }

    #[test]
    fn a_refresh_of_every_seed_names_the_hosts_it_probed() {
        let event = finished(
            Command::HostRefresh {
                hostnames: vec![],
                all: true,
                fast: false,
            },
            Verdict::Done {
                reply: Reply::Refreshed {
                    hosts: vec![ProbeSummary {
                        hostname: "b.example.com".into(),
                        ok: true,
                        error: None,
                    }],
                },
            },
        );
        let (subject, record) = draft(&event).unwrap();
        assert_eq!(subject, "fleetroll.audit.cmd.c1");
        assert_eq!(record.hosts, vec!["b.example.com"]);
        assert_eq!(record.outcome, "done");
        assert_eq!(record.message, None);
    }

    #[test]
    fn a_denied_command_keeps_its_hosts_reason_and_why() {
        let event = finished(
            Command::HostDisable {
                hostname: "a.example.com".into(),
                reason: "disk".into(),
            },
            Verdict::Denied {
                denial: Denial::Forged,
            },
        );
        let (_, record) = draft(&event).unwrap();
        assert_eq!(record.hosts, vec!["a.example.com"]);
        assert_eq!(record.reason.as_deref(), Some("disk"));
        assert_eq!(record.outcome, "denied");
        assert!(record.message.unwrap().contains("signature"));
    }
}
