//! Events on `fleetroll.evt.>`: what happened, for whoever watches.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::command::{Command, Outcome};
use super::rollout::{ApplyOutcome, GateEvaluation, RolloutState, StageStatus};
use crate::codec::Message;

/// One event. `detail` says what happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The worker replica that published it.
    pub source: String,
    pub detail: EventDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventDetail {
    /// A command reached its outcome (executed, or refused). The auditor
    /// makes its audit record from this.
    CommandFinished {
        /// The command as sent, with its parameters.
        command: Box<Command>,
        outcome: Outcome,
        /// When the token could not be verified: the actor it claimed.
        /// Untrusted, kept for the investigation.
        claimed_actor: Option<String>,
    },
    /// A rollout's stage changed (`fleetroll.evt.rollout.<id>.stage`).
    RolloutStage {
        rollout: String,
        stage: u32,
        status: StageStatus,
        hosts: Vec<String>,
    },
    /// A rollout changed state (`fleetroll.evt.rollout.<id>.state`).
    RolloutState {
        rollout: String,
        state: RolloutState,
        reason: Option<String>,
    },
    /// Too many changed hosts fail: the gatekeeper paused the rollout
    /// (`fleetroll.evt.rollout.<id>.blast`); audited.
    BlastRadius {
        rollout: String,
        stage: u32,
        /// The failing hosts, each with why.
        failing: Vec<(String, String)>,
        changed: usize,
        /// What the failing hosts share: ("role gecko_t_linux_talos", 3), ...
        groups: Vec<(String, usize)>,
        reason: String,
    },
    /// After finalize, the targets regressed badly
    /// (`fleetroll.evt.rollout.<id>.regression`); audited.
    Regression { rollout: String, reason: String },
    /// A gate verdict of a rollout changed (`fleetroll.evt.rollout.<id>.gates`).
    RolloutGates { evaluation: Box<GateEvaluation> },
    /// One host of a rollout was handled (`fleetroll.evt.rollout.<id>.host`);
    /// audited, with its snapshot.
    RolloutHost {
        rollout: String,
        stage: u32,
        hostname: String,
        outcome: ApplyOutcome,
        /// Who started the stage, and with which command.
        actor: String,
        command_id: String,
        /// Which try of the host ([`super::rollout::HostApply::attempt`]).
        #[serde(default)]
        attempt: u32,
    },
}

impl EventDetail {
    /// The last token of a rollout event's subject
    /// (`fleetroll.evt.rollout.<id>.<kind>`); none for what is no rollout
    /// event (a command's outcome).
    pub fn rollout_kind(&self) -> Option<&'static str> {
        match self {
            EventDetail::CommandFinished { .. } => None,
            EventDetail::RolloutStage { .. } => Some("stage"),
            EventDetail::RolloutState { .. } => Some("state"),
            EventDetail::BlastRadius { .. } => Some("blast"),
            EventDetail::Regression { .. } => Some("regression"),
            EventDetail::RolloutGates { .. } => Some("gates"),
            EventDetail::RolloutHost { .. } => Some("host"),
        }
    }
}

impl Message for Event {
    const KIND: &'static str = "event";
    const VERSION: u16 = 2;
}
