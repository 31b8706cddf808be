//! The streams, buckets and durable consumers of the mesh, as plain data.
//! [`crate::setup`] turns them into JetStream objects.

use std::time::Duration;

use crate::messages::WorkerKind;

/// A JetStream stream.
#[derive(Debug, Clone, Copy)]
pub struct StreamDef {
    pub name: &'static str,
    pub subjects: &'static [&'static str],
    pub description: &'static str,
    pub max_age: Duration,
    /// Set once, never clearable: the server itself refuses deletes/purges.
    pub immutable: bool,
    /// Messages kept per subject (0: no limit).
    pub per_subject: i64,
    /// A work queue: a message is gone once a consumer acknowledges it.
    pub work_queue: bool,
    /// Its part of the store, in thousandths ([`Storage`]).
    pub share: u64,
    /// When full, drop the oldest messages (history, task runs, periodic
    /// jobs) rather than refuse new ones (commands, events, the audit log,
    /// snapshots, apply jobs: nothing of those is ever dropped).
    pub discard_old: bool,
}

/// The command stream. Commands are kept as long as their outcomes so that
/// a redelivered command always finds its outcome if it already ran.
pub const COMMANDS: StreamDef = StreamDef {
    name: "FLEETROLL_CMD",
    subjects: &[crate::subjects::COMMANDS],
    description: "fleetroll mutating commands",
    max_age: Duration::from_secs(7 * 24 * 3600),
    immutable: false,
    per_subject: 0,
    work_queue: false,
    share: 60,
    discard_old: false,
};

pub const EVENTS: StreamDef = StreamDef {
    name: "FLEETROLL_EVT",
    subjects: &[crate::subjects::EVENTS],
    description: "fleetroll events",
    max_age: Duration::from_secs(30 * 24 * 3600),
    immutable: false,
    per_subject: 0,
    work_queue: false,
    share: 100,
    discard_old: false,
};

pub const AUDIT: StreamDef = StreamDef {
    name: "FLEETROLL_AUDIT",
    subjects: &[crate::subjects::AUDIT],
    description: "fleetroll immutable audit log",
    max_age: Duration::ZERO,
    immutable: true,
    per_subject: 0,
    work_queue: false,
    share: 150,
    discard_old: false,
};

/// Revocations, append-only: the server refuses deletes, purges and
/// rollups, so once written a revocation stays. A token is revoked when a
/// message on its subject (or its actor's) was stored at or after it was
/// issued, by the server's clock: what a message says cannot undo it.
pub const REVOCATIONS: StreamDef = StreamDef {
    name: "FLEETROLL_REVOCATIONS",
    subjects: &[crate::subjects::REVOCATIONS],
    description: "fleetroll token revocations (append-only)",
    max_age: Duration::ZERO,
    immutable: true,
    per_subject: 0,
    work_queue: false,
    share: 2,
    discard_old: false,
};

/// The last observations of every host, for history and "what changed".
pub const HOST_HISTORY: StreamDef = StreamDef {
    name: "FLEETROLL_HOST_HISTORY",
    subjects: &[crate::subjects::HOST_HISTORY],
    description: "fleetroll observations per host (the last ones)",
    max_age: Duration::ZERO,
    immutable: false,
    per_subject: 50,
    work_queue: false,
    share: 200,
    discard_old: true,
};

/// Probe jobs, shared by every prober replica: each host is probed once
/// per job, and a job a dead prober held goes to another.
pub const PROBE_JOBS: StreamDef = StreamDef {
    name: "FLEETROLL_PROBE_JOBS",
    subjects: &[crate::subjects::PROBE_JOBS],
    description: "fleetroll probe jobs (work queue)",
    max_age: Duration::from_secs(24 * 3600),
    immutable: false,
    per_subject: 0,
    work_queue: true,
    share: 20,
    discard_old: true,
};

/// Workload sweeps: one job per cycle, taken by one prober replica.
pub const WORKLOAD_JOBS: StreamDef = StreamDef {
    name: "FLEETROLL_WORKLOAD_JOBS",
    subjects: &[crate::subjects::WORKLOAD_SWEEP],
    description: "fleetroll workload collection sweeps (work queue)",
    max_age: Duration::from_secs(24 * 3600),
    immutable: false,
    per_subject: 0,
    work_queue: true,
    share: 5,
    discard_old: true,
};

/// Every task run a workload source reported resolved, per host: jobs per
/// host and success rate over a window come from here.
pub const TASK_RUNS: StreamDef = StreamDef {
    name: "FLEETROLL_TASK_RUNS",
    subjects: &[crate::subjects::TASK_RUNS],
    description: "fleetroll resolved task runs per host",
    max_age: Duration::from_secs(30 * 24 * 3600),
    immutable: false,
    per_subject: 0,
    work_queue: false,
    share: 150,
    discard_old: true,
};

/// Override snapshots: what a host's override file held (or that there was
/// none) before fleetroll changed it. Kept forever, like the audit log that
/// refers to them.
pub const SNAPSHOTS: StreamDef = StreamDef {
    name: "FLEETROLL_SNAPSHOTS",
    subjects: &[crate::subjects::SNAPSHOTS],
    description: "fleetroll override snapshots (immutable)",
    max_age: Duration::ZERO,
    immutable: true,
    per_subject: 0,
    work_queue: false,
    share: 100,
    discard_old: false,
};

/// Apply jobs: one per host of a rollout stage, shared by every
/// orchestrator replica; a job a dead replica held goes to another.
pub const APPLY_JOBS: StreamDef = StreamDef {
    name: "FLEETROLL_APPLY_JOBS",
    subjects: &[crate::subjects::APPLY_JOBS],
    description: "fleetroll rollout apply jobs (work queue)",
    max_age: Duration::from_secs(7 * 24 * 3600),
    immutable: false,
    per_subject: 0,
    work_queue: true,
    share: 20,
    discard_old: false,
};

/// Messages the mesh gave up on (SPEC 10): what nats-server announces
/// when a worker sets one aside or its deliveries run out. `fleetroll
/// status` shows them and the auditor records each.
pub const SET_ASIDE: StreamDef = StreamDef {
    name: "FLEETROLL_SET_ASIDE",
    subjects: crate::subjects::SET_ASIDE,
    description: "fleetroll messages given up on (server advisories)",
    max_age: Duration::from_secs(90 * 24 * 3600),
    immutable: false,
    per_subject: 0,
    work_queue: false,
    share: 10,
    discard_old: true,
};

pub const STREAMS: [StreamDef; 11] = [
    COMMANDS,
    EVENTS,
    AUDIT,
    REVOCATIONS,
    SNAPSHOTS,
    HOST_HISTORY,
    PROBE_JOBS,
    WORKLOAD_JOBS,
    TASK_RUNS,
    APPLY_JOBS,
    SET_ASIDE,
];

/// A stream and the one durable consumer every replica of a worker kind
/// pulls from: a work queue, or a feed of a stream that keeps its messages.
#[derive(Debug, Clone, Copy)]
pub struct JobQueue {
    pub stream: &'static StreamDef,
    pub consumer: &'static str,
    /// Jobs handed out and not yet acknowledged, at most.
    pub max_ack_pending: i64,
    /// Deliveries before the server gives up on a job and announces it on
    /// [`SET_ASIDE`]; -1 never gives up.
    pub max_deliver: i64,
}

pub const PROBE_QUEUE: JobQueue = JobQueue {
    stream: &PROBE_JOBS,
    consumer: "probers",
    max_ack_pending: 10_000,
    max_deliver: MAX_DELIVER,
};

pub const WORKLOAD_QUEUE: JobQueue = JobQueue {
    stream: &WORKLOAD_JOBS,
    consumer: "collectors",
    max_ack_pending: 10_000,
    max_deliver: MAX_DELIVER,
};

/// Every event, for the auditor to turn into audit records. Created with the
/// mesh, so events published before any auditor ran are audited too.
pub const AUDIT_FEED: JobQueue = JobQueue {
    stream: &EVENTS,
    consumer: "auditor",
    max_ack_pending: 256,
    // An event is an audit record to be: never given up on while it can
    // be read (a full audit stream refuses it until there is room).
    max_deliver: -1,
};

pub const APPLY_QUEUE: JobQueue = JobQueue {
    stream: &APPLY_JOBS,
    consumer: "appliers",
    max_ack_pending: 10_000,
    max_deliver: MAX_DELIVER,
};

/// Every message given up on, for the auditor to record.
pub const SET_ASIDE_FEED: JobQueue = JobQueue {
    stream: &SET_ASIDE,
    consumer: "auditor-set-aside",
    max_ack_pending: 256,
    max_deliver: -1,
};

pub const JOB_QUEUES: [JobQueue; 5] = [
    PROBE_QUEUE,
    WORKLOAD_QUEUE,
    AUDIT_FEED,
    APPLY_QUEUE,
    SET_ASIDE_FEED,
];

/// A key-value bucket.
#[derive(Debug, Clone, Copy)]
pub struct BucketDef {
    pub name: &'static str,
    pub description: &'static str,
    pub history: i64,
    /// Zero keeps entries forever.
    pub max_age: Duration,
    /// Its part of the store, in thousandths ([`Storage`]); a full bucket
    /// refuses new writes.
    pub share: u64,
}

impl BucketDef {
    /// The stream JetStream keeps the bucket in.
    pub fn stream_name(&self) -> String {
        format!("KV_{}", self.name)
    }
}

pub const SEEDS: BucketDef = BucketDef {
    name: "fleetroll_seeds",
    description: "inventory seeds: hostnames operators said exist",
    history: 5,
    max_age: Duration::ZERO,
    share: 5,
};

/// Worker heartbeats; an entry not refreshed for a minute is gone.
pub const WORKERS: BucketDef = BucketDef {
    name: "fleetroll_workers",
    description: "worker replica heartbeats",
    history: 1,
    max_age: Duration::from_secs(60),
    share: 2,
};

/// One outcome per command id: the reply, and the proof a command ran.
pub const OUTCOMES: BucketDef = BucketDef {
    name: "fleetroll_outcomes",
    description: "command outcomes by command id",
    history: 1,
    max_age: Duration::from_secs(7 * 24 * 3600),
    share: 30,
};

/// The verifying key and revocations.
pub const AUTH: BucketDef = BucketDef {
    name: "fleetroll_auth",
    description: "token verifying key and revocations",
    history: 5,
    max_age: Duration::ZERO,
    share: 2,
};

/// The prober's latest observation of each host, by hostname.
pub const HOSTS: BucketDef = BucketDef {
    name: "fleetroll_hosts",
    description: "latest observation per host",
    history: 1,
    max_age: Duration::ZERO,
    share: 50,
};

/// SSH host keys pinned on first contact, by hostname.
pub const HOST_KEYS: BucketDef = BucketDef {
    name: "fleetroll_hostkeys",
    description: "pinned SSH host keys",
    history: 5,
    max_age: Duration::ZERO,
    share: 5,
};

/// What operators said about each host: expected role, population, disabled.
pub const HOST_INTENT: BucketDef = BucketDef {
    name: "fleetroll_host_intent",
    description: "operator assignments per host",
    history: 5,
    max_age: Duration::ZERO,
    share: 5,
};

pub const POPULATIONS: BucketDef = BucketDef {
    name: "fleetroll_populations",
    description: "populations by name",
    history: 5,
    max_age: Duration::ZERO,
    share: 2,
};

/// The gatekeeper's drift verdict per host.
pub const DRIFT: BucketDef = BucketDef {
    name: "fleetroll_drift",
    description: "drift per host",
    history: 1,
    max_age: Duration::ZERO,
    share: 10,
};

/// What the workload source last said about each host, by hostname.
pub const WORKLOAD: BucketDef = BucketDef {
    name: "fleetroll_workload",
    description: "workload source view per host",
    history: 1,
    max_age: Duration::ZERO,
    share: 20,
};

/// Rollouts by id; every change a compare-and-swap.
pub const ROLLOUTS: BucketDef = BucketDef {
    name: "fleetroll_rollouts",
    description: "rollouts by id",
    history: 10,
    max_age: Duration::ZERO,
    share: 5,
};

/// What happened on each host of a rollout, by `<rollout>.<host>`.
pub const ROLLOUT_HOSTS: BucketDef = BucketDef {
    name: "fleetroll_rollout_hosts",
    description: "per-host results of rollouts",
    history: 1,
    max_age: Duration::ZERO,
    share: 20,
};

/// The gatekeeper's latest evaluation of each rollout, by rollout id.
pub const GATES: BucketDef = BucketDef {
    name: "fleetroll_gates",
    description: "gate evaluations by rollout",
    history: 5,
    max_age: Duration::ZERO,
    share: 5,
};

/// Who is carrying out a side effect now ([`crate::lease`]): a command
/// that runs something on a host (converge, reboot), by command id, kept
/// as long as outcomes; a host being written, by hostname, while it is.
pub const LEASES: BucketDef = BucketDef {
    name: "fleetroll_leases",
    description: "side effects in progress: command and host leases",
    history: 1,
    max_age: Duration::from_secs(7 * 24 * 3600),
    share: 5,
};

/// Key of the lease of a command that acts on a host.
pub fn command_lease_key(command_id: &str) -> String {
    format!("command.{command_id}")
}

/// Key of the lease on writing a host's override.
pub fn host_lease_key(hostname: &str) -> String {
    format!("host.{hostname}")
}

/// Key of a host's result in [`ROLLOUT_HOSTS`].
pub fn rollout_host_key(rollout: &str, hostname: &str) -> String {
    format!("{rollout}.{hostname}")
}

/// Key of a host's removal result (rollback) in [`ROLLOUT_HOSTS`].
pub fn rollout_removal_key(rollout: &str, hostname: &str) -> String {
    format!("{rollout}.removed.{hostname}")
}

pub const BUCKETS: [BucketDef; 14] = [
    SEEDS,
    WORKERS,
    OUTCOMES,
    AUTH,
    HOSTS,
    HOST_KEYS,
    HOST_INTENT,
    POPULATIONS,
    DRIFT,
    WORKLOAD,
    ROLLOUTS,
    ROLLOUT_HOSTS,
    GATES,
    LEASES,
];

/// Keys of the auth bucket.
pub mod auth_keys {
    pub const VERIFYING_KEY: &str = "verifying-key";

    /// The public half of an audit key, by [`crate::messages::audit::key_id`].
    /// Old keys stay, so records they signed still verify.
    pub fn audit_key(key_id: &str) -> String {
        format!("audit-key.{key_id}")
    }

    /// Every audit key.
    pub const AUDIT_KEYS: &str = "audit-key.>";

    /// Revocations as an older version kept them (now in
    /// [`super::REVOCATIONS`]): still honoured, never written.
    pub fn revoked_token(jti: &str) -> String {
        format!("revoked-token.{jti}")
    }

    /// Actor names may hold characters a key may not (`@`), so they are
    /// hex-encoded.
    pub fn revoked_actor(actor: &str) -> String {
        format!("revoked-actor.{}", crate::subjects::hex(actor))
    }
}

/// Key of a worker replica's heartbeat.
pub fn heartbeat_key(kind: WorkerKind, instance: &str) -> String {
    format!("{kind}.{instance}")
}

/// A heartbeat older than this means the replica is gone.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
pub const LIVENESS_WINDOW: Duration = Duration::from_secs(15);

/// The durable consumer one worker kind's replicas share.
pub fn consumer_name(kind: WorkerKind) -> String {
    format!("worker-{kind}")
}

/// How long a command, a job (probe, workload, apply) or an event to audit
/// may go unacknowledged in a replica's hands before the server gives it to
/// another. Replicas take one at a time, only when they can work on it at
/// once ([`crate::worker::take_one`]), and progress-ack it while they
/// work, so only a dead replica lets it lapse; what it held is then taken
/// over this soon (SPEC 11: the mesh serves again within 2 s of losing a
/// worker).
pub const TAKEOVER_WAIT: Duration = Duration::from_secs(1);

/// The JetStream store the mesh's streams and buckets share: each gets its
/// [`StreamDef::share`] or [`BucketDef::share`] of it as its size limit, so
/// no one of them (host history, task runs) can fill the store and leave
/// commands and the audit log no room. The shares add up to less than the
/// whole (`nats-config/` gives JetStream 20 GB; the default is 16 GiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Storage {
    pub bytes: u64,
}

impl Default for Storage {
    fn default() -> Self {
        Storage { bytes: 16 << 30 }
    }
}

impl Storage {
    /// The size limit of a stream or bucket with this share.
    pub fn limit(&self, share: u64) -> i64 {
        (self.bytes / 1000 * share) as i64
    }
}

/// Of the store, above this usage `fleetroll status` warns.
pub const STORE_WARNING: f64 = 0.8;

/// Deliveries of a command or job before the server gives up on it (and
/// announces it on [`SET_ASIDE`]): with [`REDELIVERY_BACKOFF`], retried
/// for more than an hour.
pub const MAX_DELIVER: i64 = 20;

/// How long an unacknowledged (or nak'd) message waits before each
/// redelivery; the last wait repeats. The first is [`TAKEOVER_WAIT`], so a
/// dead replica's work is taken over as soon as before; a message that
/// keeps failing is retried less and less often.
pub const REDELIVERY_BACKOFF: [Duration; 8] = [
    TAKEOVER_WAIT,
    Duration::from_secs(2),
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(30),
    Duration::from_secs(60),
    Duration::from_secs(120),
    Duration::from_secs(300),
];

/// How long the duplicate window of the command stream lasts.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(2 * 60);

#[cfg(test)]
mod tests {
    use super::*;

    /// Every stream and bucket has a share, and together they leave room.
    #[test]
    fn the_shares_fit_in_the_store() {
        let streams: u64 = STREAMS.iter().map(|s| s.share).sum();
        let buckets: u64 = BUCKETS.iter().map(|b| b.share).sum();
        assert!(streams + buckets <= 1000, "{streams} + {buckets}");
        assert!(STREAMS.iter().all(|s| s.share > 0));
        assert!(BUCKETS.iter().all(|b| b.share > 0));
        for kept in [COMMANDS, EVENTS, AUDIT, SNAPSHOTS, APPLY_JOBS] {
            assert!(!kept.discard_old, "{} never drops a message", kept.name);
        }
    }
}
