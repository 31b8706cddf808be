//! # fleetroll-gatekeeper
//!
//! The worker that judges: health gates, blast radius and drift, computed from observations and workload data.
//!
//! ```no_run
//! # async fn run(bus: fleetroll_bus::Bus) -> Result<(), fleetroll_bus::connect::BusError> {
//! fleetroll_gatekeeper::run(bus, tokio::signal::ctrl_c()).await
//! # }
//! ```

use std::future::Future;

use fleetroll_bus::connect::{Bus, BusError};
use fleetroll_bus::messages::WorkerKind;
use fleetroll_bus::messages::command::{Command, Verdict};
use fleetroll_bus::worker::{self, CommandContext, Handler};

struct Gatekeeper;

impl Handler for Gatekeeper {
    async fn handle(&self, _ctx: &CommandContext, command: &Command) -> Verdict {
        Verdict::Invalid {
            message: format!("the gatekeeper does not execute `{}`", command.name()),
        }
    }
}

/// Runs one gatekeeper replica until `shutdown` resolves.
pub async fn run<S, T>(bus: Bus, shutdown: S) -> Result<(), BusError>
where
    S: Future<Output = T> + Send,
{
    worker::run(bus, WorkerKind::Gatekeeper, Gatekeeper, shutdown).await
}
