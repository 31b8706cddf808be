//! # fleetroll-auditor
//!
//! The worker that remembers: it turns every command and outcome into the immutable audit log and serves audit queries.
//!
//! ```no_run
//! # async fn run(bus: fleetroll_bus::Bus) -> Result<(), fleetroll_bus::connect::BusError> {
//! fleetroll_auditor::run(bus, tokio::signal::ctrl_c()).await
//! # }
//! ```

use std::future::Future;

use fleetroll_bus::connect::{Bus, BusError};
use fleetroll_bus::messages::WorkerKind;
use fleetroll_bus::messages::command::{Command, Verdict};
use fleetroll_bus::worker::{self, CommandContext, Handler};

struct Auditor;

impl Handler for Auditor {
    async fn handle(&self, _ctx: &CommandContext, command: &Command) -> Verdict {
        Verdict::invalid(format!("the auditor does not execute `{}`", command.name()))
    }
}

/// Runs one auditor replica until `shutdown` resolves.
pub async fn run<S, T>(bus: Bus, shutdown: S) -> Result<(), BusError>
where
    S: Future<Output = T> + Send,
{
    worker::run(bus, WorkerKind::Auditor, Auditor, shutdown).await
}
