//! # fleetroll-orchestrator
//!
//! The worker that changes hosts: the rollout state machine, applying and removing overrides over SSH, converge and reboot.
//!
//! ```no_run
//! # async fn run(bus: fleetroll_bus::Bus) -> Result<(), fleetroll_bus::connect::BusError> {
//! fleetroll_orchestrator::run(bus, tokio::signal::ctrl_c()).await
//! # }
//! ```

use std::future::Future;

use fleetroll_bus::connect::{Bus, BusError};
use fleetroll_bus::messages::WorkerKind;
use fleetroll_bus::messages::command::{Command, Verdict};
use fleetroll_bus::worker::{self, CommandContext, Handler};

struct Orchestrator;

impl Handler for Orchestrator {
    async fn handle(&self, _ctx: &CommandContext, command: &Command) -> Verdict {
        Verdict::invalid(format!(
            "the orchestrator does not execute `{}`",
            command.name()
        ))
    }
}

/// Runs one orchestrator replica until `shutdown` resolves.
pub async fn run<S, T>(bus: Bus, shutdown: S) -> Result<(), BusError>
where
    S: Future<Output = T> + Send,
{
    worker::run(bus, WorkerKind::Orchestrator, Orchestrator, shutdown).await
}
