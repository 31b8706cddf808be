//! Subject names. Nothing outside this crate spells one.
//!
//! | subjects | what |
//! |---|---|
//! | `fleetroll.cmd.<worker>.<command>` | mutating commands (command stream) |
//! | `fleetroll.evt.cmd.<id>.<verdict>` | a command reached its outcome |
//! | `fleetroll.evt.rollout.<id>.<kind>` | rollout events, one rollout or all |
//! | `fleetroll.audit.cmd.<id>` | the audit record of one command (immutable audit stream) |
//! | `fleetroll.snapshot.<id>` | override snapshots (immutable) |
//! | `fleetroll.out.<id>` | live output of a converge (core NATS, not kept) |
//! | `fleetroll.apply.<rollout>.<host>` | apply jobs (work queue shared by orchestrators) |
//! | `fleetroll.history.<host>` | a host's last observations |
//! | `fleetroll.probe.<host>` | probe jobs (work queue shared by probers) |
//! | `fleetroll.workload.sweep` | workload collection sweeps (work queue) |
//! | `fleetroll.task.<host>` | resolved task runs per host |
//! | `fleetroll.query.<area>.<name>` | read queries (NATS service) |
//! | `fleetroll.revoked.token.<jti>`, `fleetroll.revoked.actor.<hex>` | revocations (append-only) |
//! | `fleetroll.audit.setaside.<stream>.<seq>` | the audit record of a message given up on |
//! | `$JS.EVENT.ADVISORY.CONSUMER.{MSG_TERMINATED,MAX_DELIVERIES}.<stream>.<consumer>` | the server's word that a message was given up on (set-aside stream) |

use crate::messages::WorkerKind;
use crate::messages::command::Command;

pub const COMMANDS: &str = "fleetroll.cmd.>";
pub const EVENTS: &str = "fleetroll.evt.>";
pub const AUDIT: &str = "fleetroll.audit.>";
pub const ROLLOUT_EVENTS: &str = "fleetroll.evt.rollout.>";
pub const HOST_HISTORY: &str = "fleetroll.history.>";
pub const PROBE_JOBS: &str = "fleetroll.probe.>";
pub const WORKLOAD_SWEEP: &str = "fleetroll.workload.sweep";
pub const TASK_RUNS: &str = "fleetroll.task.>";
pub const SNAPSHOTS: &str = "fleetroll.snapshot.>";
pub const APPLY_JOBS: &str = "fleetroll.apply.>";
pub const REVOCATIONS: &str = "fleetroll.revoked.>";

/// Where the revocation of one token is published.
pub fn revoked_token(jti: &str) -> String {
    format!("fleetroll.revoked.token.{jti}")
}

/// Where the revocation of every token of an actor is published (the name
/// hex-encoded: actors may contain `.`).
pub fn revoked_actor(actor: &str) -> String {
    format!("fleetroll.revoked.actor.{}", hex(actor))
}

/// A name as a subject token (or key) of hex digits, whatever it holds.
pub fn hex(name: &str) -> String {
    name.bytes().map(|b| format!("{b:02x}")).collect()
}

/// What the set-aside stream keeps: the advisories nats-server publishes
/// when a consumer of one of the mesh's streams terminates a message (a
/// worker's `+TERM <reason>`) or stops after `max_deliver` deliveries.
/// Only the streams consumers work from; never the set-aside stream's own.
pub const SET_ASIDE: &[&str] = &[
    "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.FLEETROLL_CMD.*",
    "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.FLEETROLL_CMD.*",
    "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.FLEETROLL_EVT.*",
    "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.FLEETROLL_EVT.*",
    "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.FLEETROLL_PROBE_JOBS.*",
    "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.FLEETROLL_PROBE_JOBS.*",
    "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.FLEETROLL_WORKLOAD_JOBS.*",
    "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.FLEETROLL_WORKLOAD_JOBS.*",
    "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.FLEETROLL_APPLY_JOBS.*",
    "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.FLEETROLL_APPLY_JOBS.*",
];

/// The audit record of message `seq` of `stream`, given up on.
pub fn audit_set_aside(stream: &str, seq: u64) -> String {
    format!("fleetroll.audit.setaside.{stream}.{seq}")
}

/// An apply job: one host of a rollout stage.
pub fn apply_job(rollout: &str, hostname: &str) -> String {
    format!("fleetroll.apply.{rollout}.{hostname}")
}

/// A rollout event (`kind`: stage, state, ...).
pub fn rollout_event(rollout: &str, kind: &str) -> String {
    format!("fleetroll.evt.rollout.{rollout}.{kind}")
}

/// Every event of one rollout.
pub fn rollout_events(rollout: &str) -> String {
    format!("fleetroll.evt.rollout.{rollout}.>")
}

/// The audit record of command `command_id`: one subject per command, so a
/// record is written once however often its outcome is announced.
pub fn audit_command(command_id: &str) -> String {
    format!("fleetroll.audit.cmd.{command_id}")
}

/// Live output of a command that runs something on a host (converge), as
/// it comes; not kept: the CLI listens before it sends the command.
pub fn command_output(command_id: &str) -> String {
    format!("fleetroll.out.{command_id}")
}

/// Every command's live output.
pub const COMMAND_OUTPUT: &str = "fleetroll.out.>";

/// The audit record of a rollout's change on one host (`verb`: apply,
/// remove), for each try of it (`attempt`: 0 first, then one per `rollout
/// retry`).
pub fn audit_host_change(
    rollout: &str,
    verb: &str,
    stage: u32,
    attempt: u32,
    hostname: &str,
) -> String {
    match attempt {
        0 => format!("fleetroll.audit.host.{rollout}.{verb}.{stage}.{hostname}"),
        n => format!("fleetroll.audit.host.{rollout}.{verb}.{stage}.retry{n}.{hostname}"),
    }
}

/// The audit record of a rollout paused by its blast radius, per stage.
pub fn audit_auto_pause(rollout: &str, stage: u32) -> String {
    format!("fleetroll.audit.auto.{rollout}.{stage}")
}

/// The audit record of a regression seen after a rollout was finalized.
pub fn audit_regression(rollout: &str) -> String {
    format!("fleetroll.audit.regression.{rollout}")
}

/// Where override snapshot `id` is kept.
pub fn snapshot(id: &str) -> String {
    format!("fleetroll.snapshot.{id}")
}

/// Where a host's resolved task runs are kept.
pub fn task_runs(hostname: &str) -> String {
    format!("fleetroll.task.{hostname}")
}

/// A probe job for one host.
pub fn probe_job(hostname: &str) -> String {
    format!("fleetroll.probe.{hostname}")
}

/// Where a host's observations are kept (hostnames are valid subject
/// tokens once validated).
pub fn host_history(hostname: &str) -> String {
    format!("fleetroll.history.{hostname}")
}
/// The group every read-query endpoint lives under.
pub const QUERY_GROUP: &str = "fleetroll.query";

/// The subject a command is published on.
pub fn command(command: &Command) -> String {
    format!("fleetroll.cmd.{}.{}", command.worker(), command.name())
}

/// The filter of one worker kind's durable consumer.
pub fn commands_for(kind: WorkerKind) -> String {
    format!("fleetroll.cmd.{kind}.>")
}

/// The event published when a command reaches its outcome.
pub fn command_finished(command_id: &str, verdict: &str) -> String {
    format!("fleetroll.evt.cmd.{command_id}.{verdict}")
}

/// Every event about one command.
pub fn command_events(command_id: &str) -> String {
    format!("fleetroll.evt.cmd.{command_id}.>")
}

/// The full subject of a read query, e.g. `fleetroll.query.seeds.list`.
pub fn query(endpoint: &str) -> String {
    format!("{QUERY_GROUP}.{endpoint}")
}

/// Query endpoints (relative to [`QUERY_GROUP`]).
pub mod queries {
    pub const SEEDS_LIST: &str = "seeds.list";
    pub const HOSTS_LIST: &str = "hosts.list";
    pub const HOSTS_GET: &str = "hosts.get";
    pub const HOSTS_HISTORY: &str = "hosts.history";
    pub const POPULATIONS_LIST: &str = "populations.list";
    pub const DRIFT_SUMMARY: &str = "drift.summary";
    pub const AUDIT_LIST: &str = "audit.list";
    pub const ROLLOUTS_LIST: &str = "rollouts.list";
    pub const ROLLOUTS_GET: &str = "rollouts.get";
}
