//! The command envelope and its outcome.
//!
//! A mutating request is a [`CommandEnvelope`] published to the command
//! stream under the owning worker's subject, with its `id` as `Nats-Msg-Id`
//! so a retried publish is stored once. The worker that executes it records
//! exactly one [`Outcome`] under the same id in the outcomes bucket; that
//! record is the reply.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::WorkerKind;
use super::rollout::{GateConfig, GateEvaluation, RolloutPlan};
use crate::codec::Message;
use crate::token::Role;

/// What an operator asks the mesh to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Round trip through one worker kind. `hold_ms` keeps the command in
    /// hand (unacknowledged) that long before answering, which is how a
    /// crash in the middle of a command is rehearsed.
    Ping {
        worker: WorkerKind,
        hold_ms: u64,
    },
    /// Add hostnames to the inventory's seeds.
    SeedAdd {
        hostnames: Vec<String>,
    },
    /// Remove hostnames from the seeds.
    SeedRemove {
        hostnames: Vec<String>,
    },
    /// Probe these hosts now (every seed when `all`).
    HostRefresh {
        hostnames: Vec<String>,
        all: bool,
        /// Fast: a full probe only where the host's state token changed.
        #[serde(default)]
        fast: bool,
    },
    /// Forget a host's pinned SSH key; the next contact pins the new one.
    HostRepin {
        hostname: String,
    },
    /// Pin the host keys that an OpenSSH `known_hosts` (its whole text)
    /// gives for the inventory's hosts; `file` names it in the pins.
    HostPinImport {
        known_hosts: String,
        file: String,
    },
    /// Make the seeds exactly these hostnames: add the missing, remove the rest.
    SeedSync {
        hostnames: Vec<String>,
    },
    PopulationCreate {
        name: String,
        expected_role: String,
        target_query: Option<String>,
        description: Option<String>,
    },
    /// Assign hosts (named, or every host matching `filter`) to a population.
    HostAssignPopulation {
        hosts: HostSelection,
        population: String,
    },
    HostSetExpectedRole {
        hostname: String,
        role: String,
    },
    HostClearExpectedRole {
        hostname: String,
    },
    HostDisable {
        hostname: String,
        reason: String,
    },
    HostEnable {
        hostname: String,
    },
    /// Quarantine the host's worker in the workload source (Taskcluster):
    /// it claims no work until `until`.
    HostQuarantine {
        hostname: String,
        #[serde(with = "time::serde::rfc3339")]
        until: OffsetDateTime,
        reason: String,
    },
    /// Lift the quarantine of the host's worker.
    HostUnquarantine {
        hostname: String,
    },
    /// Run the host's converge command (Puppet) now; its output is
    /// published live on [`crate::subjects::command_output`].
    HostConverge {
        hostname: String,
    },
    /// Reboot the host and wait until it answers again.
    HostReboot {
        hostname: String,
    },
    /// Plan a rollout; nothing is applied until it is started.
    RolloutCreate {
        plan: RolloutPlan,
    },
    /// Resolve the targets and apply the canary stage.
    RolloutStart {
        id: String,
    },
    /// Apply the next `batch_size` hosts: when the gates pass, or `force`d
    /// with a reason.
    RolloutAdvance {
        id: String,
        batch_size: usize,
        force: bool,
        reason: Option<String>,
    },
    RolloutPause {
        id: String,
        reason: String,
    },
    RolloutResume {
        id: String,
    },
    /// After success and the merge: remove the override from every target
    /// host (snapshotted first); irreversible.
    RolloutFinalize {
        id: String,
    },
    /// Emergency: pause every running rollout.
    RolloutHalt {
        reason: String,
    },
    /// Try again the hosts whose write failed in the current stage (or,
    /// while rolling back or finalizing, whose removal failed): all of
    /// them, or the ones named.
    RolloutRetry {
        id: String,
        hosts: Vec<String>,
    },
    /// Stop the rollout for good; with `remove_overrides`, remove the
    /// overrides it applied (it is rolled back once a fresh probe shows
    /// every host clean).
    RolloutRollback {
        id: String,
        remove_overrides: bool,
        reason: String,
    },
    /// Refuse one token, or every token an actor holds, from now on.
    TokenRevoke {
        target: RevokeTarget,
        reason: String,
    },
}

/// What a revocation refuses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum RevokeTarget {
    /// One token, by its id (`jti`).
    Token { jti: String },
    /// Every token issued to this actor before the revocation.
    Actor { actor: String },
}

/// Which hosts a command is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum HostSelection {
    Names { hostnames: Vec<String> },
    Filter { query: String },
}

impl Command {
    /// The worker kind that executes this command.
    pub fn worker(&self) -> WorkerKind {
        match self {
            Command::Ping { worker, .. } => *worker,
            Command::SeedAdd { .. }
            | Command::SeedRemove { .. }
            | Command::HostRefresh { .. }
            | Command::HostRepin { .. }
            | Command::HostPinImport { .. }
            | Command::SeedSync { .. }
            | Command::PopulationCreate { .. }
            | Command::HostAssignPopulation { .. }
            | Command::HostSetExpectedRole { .. }
            | Command::HostClearExpectedRole { .. }
            | Command::HostDisable { .. }
            | Command::HostEnable { .. }
            | Command::HostQuarantine { .. }
            | Command::HostUnquarantine { .. } => WorkerKind::Prober,
            Command::TokenRevoke { .. } => WorkerKind::Auditor,
            Command::HostConverge { .. }
            | Command::HostReboot { .. }
            | Command::RolloutCreate { .. }
            | Command::RolloutStart { .. }
            | Command::RolloutAdvance { .. }
            | Command::RolloutPause { .. }
            | Command::RolloutResume { .. }
            | Command::RolloutRollback { .. }
            | Command::RolloutHalt { .. }
            | Command::RolloutRetry { .. }
            | Command::RolloutFinalize { .. } => WorkerKind::Orchestrator,
        }
    }

    /// The command's name, last token of its subject.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Ping { .. } => "ping",
            Command::SeedAdd { .. } => "seed_add",
            Command::SeedRemove { .. } => "seed_remove",
            Command::HostRefresh { .. } => "host_refresh",
            Command::HostRepin { .. } => "host_repin",
            Command::HostPinImport { .. } => "host_pin_import",
            Command::SeedSync { .. } => "seed_sync",
            Command::PopulationCreate { .. } => "population_create",
            Command::HostAssignPopulation { .. } => "host_assign_population",
            Command::HostSetExpectedRole { .. } => "host_set_expected_role",
            Command::HostClearExpectedRole { .. } => "host_clear_expected_role",
            Command::HostDisable { .. } => "host_disable",
            Command::HostEnable { .. } => "host_enable",
            Command::HostQuarantine { .. } => "host_quarantine",
            Command::HostUnquarantine { .. } => "host_unquarantine",
            Command::TokenRevoke { .. } => "token_revoke",
            Command::HostConverge { .. } => "host_converge",
            Command::HostReboot { .. } => "host_reboot",
            Command::RolloutCreate { .. } => "rollout_create",
            Command::RolloutStart { .. } => "rollout_start",
            Command::RolloutAdvance { .. } => "rollout_advance",
            Command::RolloutPause { .. } => "rollout_pause",
            Command::RolloutResume { .. } => "rollout_resume",
            Command::RolloutRollback { .. } => "rollout_rollback",
            Command::RolloutHalt { .. } => "rollout_halt",
            Command::RolloutFinalize { .. } => "rollout_finalize",
            Command::RolloutRetry { .. } => "rollout_retry",
        }
    }

    /// The operator's reason, for commands that take one.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Command::HostDisable { reason, .. }
            | Command::HostQuarantine { reason, .. }
            | Command::TokenRevoke { reason, .. }
            | Command::RolloutPause { reason, .. }
            | Command::RolloutRollback { reason, .. }
            | Command::RolloutHalt { reason } => Some(reason),
            Command::RolloutAdvance { reason, .. } => reason.as_deref(),
            _ => None,
        }
    }

    /// Whether the operator overrode a policy (a forced advance).
    pub fn forced(&self) -> bool {
        matches!(self, Command::RolloutAdvance { force: true, .. })
    }

    /// The rollout the command is about.
    pub fn rollout(&self) -> Option<&str> {
        match self {
            Command::RolloutStart { id }
            | Command::RolloutAdvance { id, .. }
            | Command::RolloutPause { id, .. }
            | Command::RolloutResume { id }
            | Command::RolloutRollback { id, .. }
            | Command::RolloutRetry { id, .. }
            | Command::RolloutFinalize { id } => Some(id),
            _ => None,
        }
    }

    /// Roles allowed to issue it. Every command goes through the command
    /// stream, which only RelOps may write to.
    pub fn allowed_roles(&self) -> &'static [Role] {
        &[Role::Relops]
    }
}

impl Message for Command {
    const KIND: &'static str = "command";
    const VERSION: u16 = 1;
}

/// A command as it travels: id, the actor's token, and a deadline after
/// which no worker may start it (a command nobody picked up in time is
/// refused rather than executed by surprise hours later).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandEnvelope {
    pub id: String,
    pub token: String,
    #[serde(with = "time::serde::rfc3339")]
    pub sent_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub deadline: OffsetDateTime,
    pub command: Command,
    /// The holder key's signature of everything else in the envelope
    /// (base64url), when the token is bound to a key ([`crate::token::Claims::cnf`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
}

impl Message for CommandEnvelope {
    const KIND: &'static str = "command_envelope";
    const VERSION: u16 = 1;
}

impl CommandEnvelope {
    /// Whether `id` is a command id as [`crate::send`] makes them: a UUID,
    /// hyphenated, lower case. Ids become bucket keys and subject tokens,
    /// so a worker checks this before anything else.
    ///
    /// ```
    /// use fleetroll_bus::messages::command::CommandEnvelope;
    /// assert!(CommandEnvelope::well_formed_id("0193e0c2-7a4e-7c1d-9a55-3c1f0e2b9d41"));
    /// assert!(!CommandEnvelope::well_formed_id("0193E0C2-7A4E-7C1D-9A55-3C1F0E2B9D41"));
    /// assert!(!CommandEnvelope::well_formed_id("a.b"));
    /// ```
    pub fn well_formed_id(id: &str) -> bool {
        uuid::Uuid::try_parse(id).is_ok_and(|u| u.hyphenated().to_string() == id)
    }

    /// What a holder key signs: every field but the proof, times to the
    /// nanosecond, after a label no other signed thing of fleetroll starts
    /// with.
    fn proof_content(&self) -> Vec<u8> {
        let mut content = b"fleetroll command envelope v1\0".to_vec();
        let fields = (
            &self.id,
            &self.token,
            self.sent_at.unix_timestamp_nanos(),
            self.deadline.unix_timestamp_nanos(),
            &self.command,
        );
        ciborium::into_writer(&fields, &mut content).expect("CBOR into memory");
        content
    }

    /// Signs the envelope with the key its token is bound to.
    pub fn prove(&mut self, holder: &crate::token::SigningKey) {
        use base64::Engine as _;
        let signature = holder.sign(&self.proof_content());
        self.proof = Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signature));
    }

    /// Whether the envelope, as it is, was signed by `holder`: any change
    /// to its id, token, times or command breaks the proof.
    pub fn proven_by(&self, holder: &crate::token::VerifyingKey) -> bool {
        self.proof
            .as_deref()
            .is_some_and(|proof| holder.verify_base64(&self.proof_content(), proof))
    }
}

/// The one recorded result of a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub command_id: String,
    pub command: String,
    /// The actor from the verified token (none when the token was not valid).
    pub actor: Option<String>,
    pub verdict: Verdict,
    /// The worker replica that recorded it.
    pub handled_by: String,
    /// Which delivery of the command this was (1 = first).
    pub delivery: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
}

impl Message for Outcome {
    const KIND: &'static str = "outcome";
    const VERSION: u16 = 1;
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Verdict {
    Done {
        reply: Reply,
    },
    /// The token or role did not allow it.
    Denied {
        denial: Denial,
    },
    /// Bad input: the command names something that is not valid.
    Invalid {
        message: String,
    },
    /// Refused by policy (gates, existing overrides, past its deadline).
    Refused {
        message: String,
    },
    /// The worker could not do it (SSH, bus, ...).
    Failed {
        message: String,
    },
}

impl Verdict {
    /// The command could not be carried out (NATS, SSH, ...): worth a retry.
    pub fn failed(e: impl std::fmt::Display) -> Verdict {
        Verdict::Failed {
            message: e.to_string(),
        }
    }

    /// The command is wrong as given: it changed nothing.
    pub fn invalid(message: impl Into<String>) -> Verdict {
        Verdict::Invalid {
            message: message.into(),
        }
    }

    /// A short name for events and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Done { .. } => "done",
            Verdict::Denied { .. } => "denied",
            Verdict::Invalid { .. } => "invalid",
            Verdict::Refused { .. } => "refused",
            Verdict::Failed { .. } => "failed",
        }
    }
}

/// One host's pin after a known_hosts import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedPin {
    pub hostname: String,
    pub change: PinChange,
    /// Fingerprints of the keys and certificate authorities now pinned.
    pub fingerprints: Vec<String>,
}

/// How an imported pin relates to the one the host had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PinChange {
    /// Nothing was pinned.
    New,
    /// The same keys were pinned already.
    Unchanged,
    /// A different pin was replaced; `previous` are its fingerprints.
    Replaced { previous: Vec<String> },
}

/// What a command that was carried out answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    Pong {
        worker: WorkerKind,
        instance: String,
    },
    SeedsChanged {
        changed: Vec<String>,
        unchanged: Vec<String>,
    },
    Refreshed {
        hosts: Vec<ProbeSummary>,
    },
    Repinned {
        hostname: String,
    },
    /// What an import of known_hosts did, host by host (hosts it had
    /// nothing for are not listed).
    PinsImported {
        pins: Vec<ImportedPin>,
    },
    SeedsSynced {
        added: Vec<String>,
        removed: Vec<String>,
    },
    PopulationCreated {
        name: String,
    },
    /// Hosts whose intent changed, and those already as asked.
    HostsUpdated {
        changed: Vec<String>,
        unchanged: Vec<String>,
    },
    Revoked {
        target: RevokeTarget,
    },
    /// The converge command ran to its end with status 0.
    Converged {
        hostname: String,
    },
    RolloutCreated {
        id: String,
    },
    /// A stage was started: its number and hosts, and for an advance the
    /// gate configuration and the evaluation it was decided on.
    StageStarted {
        id: String,
        stage: u32,
        hosts: Vec<String>,
        #[serde(default)]
        gates: Option<Box<GateConfig>>,
        #[serde(default)]
        evaluation: Option<Box<GateEvaluation>>,
    },
    RolloutPaused {
        id: String,
    },
    RolloutResumed {
        id: String,
    },
    /// Every rollout that was running is paused.
    Halted {
        paused: Vec<String>,
    },
    /// Finalizing: the hosts whose overrides are being removed.
    Finalizing {
        id: String,
        removing: Vec<String>,
    },
    /// Rolling back: the hosts whose overrides are being removed.
    RollingBack {
        id: String,
        removing: Vec<String>,
    },
    /// These hosts are queued for another try.
    Retrying {
        id: String,
        hosts: Vec<String>,
    },
    /// The host's worker is quarantined until `until`, as the workload
    /// source answered.
    Quarantined {
        hostname: String,
        /// `<pool>/<group>/<id>`.
        worker: String,
        #[serde(with = "time::serde::rfc3339")]
        until: OffsetDateTime,
    },
    /// The host's worker is out of quarantine.
    Unquarantined {
        hostname: String,
        worker: String,
    },
    /// The host went down and answered again.
    Rebooted {
        hostname: String,
        /// Seconds from the reboot command until the host answered again.
        back_after_s: u64,
    },
}

/// How one host's probe went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeSummary {
    pub hostname: String,
    pub ok: bool,
    pub error: Option<String>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Denial {
    #[error("no token was presented")]
    Missing,
    #[error("the token is garbled (not a fleetroll token): {detail}")]
    Garbled { detail: String },
    #[error(
        "the token's signature does not match the mesh's signing key (forged, or issued by another key)"
    )]
    Forged,
    #[error("the token expired at {expired_at}")]
    Expired { expired_at: String },
    #[error("the token {jti} was revoked at {revoked_at}")]
    Revoked { jti: String, revoked_at: String },
    /// The token is bound to a holder key and the envelope is not signed
    /// with it: a token taken from elsewhere, or an envelope changed.
    #[error(
        "the token is bound to its holder's key and this envelope is not signed with it (a captured token, or an altered envelope)"
    )]
    Unproven,
    /// A token bound to no key (a bearer token, as `auth issue` prints
    /// one) may read, but never send a command: what any query service or
    /// bot it was shown to could replay.
    #[error(
        "commands need a token bound to its holder's key, and this one is a bearer token: issue one with `fleetroll auth issue --out FILE` (the key goes to FILE.key) and pass --token-file FILE"
    )]
    Unbound,
    #[error("role `{role}` may not do `{action}` (allowed: {allowed})")]
    WrongRole {
        role: String,
        action: String,
        allowed: String,
    },
    #[error(
        "clock skew of {skew_ms} ms between the checking worker and the NATS server exceeds 30 s; fix the clock (NTP)"
    )]
    ClockSkew { skew_ms: i64 },
    #[error("no signing key is published on this mesh: run `fleetroll auth init`")]
    NoSigningKey,
    /// The worker has no verifying key of its own to check tokens with.
    #[error("this worker trusts no token signer: {detail}")]
    NoTrustRoot { detail: String },
    /// The workload source (Taskcluster) would not let fleetroll do it:
    /// no credentials, or too few scopes.
    #[error("{detail}")]
    WorkloadSource { detail: String },
}

/// A lease in the leases bucket ([`crate::topology::LEASES`]): who holds
/// it, and for how long after the entry's server-side time it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The worker replica (and job) carrying the side effect out.
    pub holder: String,
    pub ttl_ms: u64,
}

impl Message for LeaseRecord {
    const KIND: &'static str = "lease";
    const VERSION: u16 = 1;
}
