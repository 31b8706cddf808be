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
}

/// The command stream. Commands are kept as long as their outcomes so that
/// a redelivered command always finds its outcome if it already ran.
pub const COMMANDS: StreamDef = StreamDef {
    name: "FLEETROLL_CMD",
    subjects: &[crate::subjects::COMMANDS],
    description: "fleetroll mutating commands",
    max_age: Duration::from_secs(7 * 24 * 3600),
    immutable: false,
};

pub const EVENTS: StreamDef = StreamDef {
    name: "FLEETROLL_EVT",
    subjects: &[crate::subjects::EVENTS],
    description: "fleetroll events",
    max_age: Duration::from_secs(30 * 24 * 3600),
    immutable: false,
};

pub const AUDIT: StreamDef = StreamDef {
    name: "FLEETROLL_AUDIT",
    subjects: &[crate::subjects::AUDIT],
    description: "fleetroll immutable audit log",
    max_age: Duration::ZERO,
    immutable: true,
};

pub const STREAMS: [StreamDef; 3] = [COMMANDS, EVENTS, AUDIT];

/// A key-value bucket.
#[derive(Debug, Clone, Copy)]
pub struct BucketDef {
    pub name: &'static str,
    pub description: &'static str,
    pub history: i64,
    /// Zero keeps entries forever.
    pub max_age: Duration,
}

pub const SEEDS: BucketDef = BucketDef {
    name: "fleetroll_seeds",
    description: "inventory seeds: hostnames operators said exist",
    history: 5,
    max_age: Duration::ZERO,
};

/// Worker heartbeats; an entry not refreshed for a minute is gone.
pub const WORKERS: BucketDef = BucketDef {
    name: "fleetroll_workers",
    description: "worker replica heartbeats",
    history: 1,
    max_age: Duration::from_secs(60),
};

/// One outcome per command id: the reply, and the proof a command ran.
pub const OUTCOMES: BucketDef = BucketDef {
    name: "fleetroll_outcomes",
    description: "command outcomes by command id",
    history: 1,
    max_age: Duration::from_secs(7 * 24 * 3600),
};

/// The verifying key and revocations.
pub const AUTH: BucketDef = BucketDef {
    name: "fleetroll_auth",
    description: "token verifying key and revocations",
    history: 5,
    max_age: Duration::ZERO,
};

pub const BUCKETS: [BucketDef; 4] = [SEEDS, WORKERS, OUTCOMES, AUTH];

/// Keys of the auth bucket.
pub mod auth_keys {
    pub const VERIFYING_KEY: &str = "verifying-key";

    pub fn revoked_token(jti: &str) -> String {
        format!("revoked-token.{jti}")
    }

    /// Actor names may hold characters a key may not (`@`), so they are
    /// hex-encoded.
    pub fn revoked_actor(actor: &str) -> String {
        let hex: String = actor.bytes().map(|b| format!("{b:02x}")).collect();
        format!("revoked-actor.{hex}")
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

/// How long a delivered command may go unacknowledged before it is
/// redelivered to another replica. Workers send progress acks while they
/// work, so only a dead replica lets it lapse.
pub const COMMAND_ACK_WAIT: Duration = Duration::from_secs(10);

/// How long the duplicate window of the command stream lasts.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(2 * 60);
