//! Every message type of the contract. Each implements [`Message`] with its
//! wire name and schema version.

pub mod audit;
pub mod auth;
pub mod command;
pub mod event;
pub mod host;
pub mod rollout;
pub mod set_aside;
pub mod workload;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::codec::Message;

/// A time as people read it in messages: RFC 3339, whole seconds, UTC.
pub fn timestamp(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// The kinds of stateless worker in the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerKind {
    Prober,
    Gatekeeper,
    Orchestrator,
    Auditor,
}

impl WorkerKind {
    pub const ALL: [WorkerKind; 4] = [
        WorkerKind::Prober,
        WorkerKind::Gatekeeper,
        WorkerKind::Orchestrator,
        WorkerKind::Auditor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkerKind::Prober => "prober",
            WorkerKind::Gatekeeper => "gatekeeper",
            WorkerKind::Orchestrator => "orchestrator",
            WorkerKind::Auditor => "auditor",
        }
    }
}

impl std::fmt::Display for WorkerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for WorkerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WorkerKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!("unknown worker kind `{s}` (prober, gatekeeper, orchestrator, auditor)")
            })
    }
}

/// A worker replica's sign of life, refreshed every few seconds in the
/// workers bucket under `<kind>.<instance>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub kind: WorkerKind,
    pub instance: String,
    pub hostname: String,
    pub pid: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    pub version: String,
    /// This replica's clock minus the NATS server's, as last measured.
    pub clock_skew_ms: i64,
    /// Commands this replica has finished since it started.
    pub commands_handled: u64,
}

impl Message for Heartbeat {
    const KIND: &'static str = "heartbeat";
    const VERSION: u16 = 1;
}

/// An authoritative starting point of the inventory: a hostname an operator
/// said exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seed {
    pub hostname: String,
    #[serde(with = "time::serde::rfc3339")]
    pub added_at: OffsetDateTime,
    pub added_by: String,
}

impl Message for Seed {
    const KIND: &'static str = "seed";
    const VERSION: u16 = 1;
}

/// Answer of the `seeds.list` query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedList {
    pub seeds: Vec<Seed>,
}

impl Message for SeedList {
    const KIND: &'static str = "seed_list";
    const VERSION: u16 = 1;
}

/// The empty parameters of a query that takes none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoParams {}

impl Message for NoParams {
    const KIND: &'static str = "no_params";
    const VERSION: u16 = 1;
}
