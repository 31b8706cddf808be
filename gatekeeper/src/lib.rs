//! # fleetroll-gatekeeper
//!
//! The worker that judges: drift today; health gates and blast radius as
//! rollouts arrive. Everything it knows it derives from observations and
//! intent in the buckets, so any replica can take over at any time.
//!
//! ```no_run
//! # async fn run(bus: fleetroll_bus::Bus) -> Result<(), fleetroll_bus::connect::BusError> {
//! let settings = fleetroll_gatekeeper::DriftSettings::default();
//! fleetroll_gatekeeper::run(bus, settings, tokio::signal::ctrl_c()).await
//! # }
//! ```

mod drift;

use std::future::Future;

pub use drift::{DriftSettings, drift_of, healthy_of};
use fleetroll_bus::connect::{Bus, BusError};
use fleetroll_bus::messages::WorkerKind;
use fleetroll_bus::messages::command::{Command, Verdict};
use fleetroll_bus::worker::{self, CommandContext, Handler};

struct Gatekeeper;

impl Handler for Gatekeeper {
    async fn handle(&self, _ctx: &CommandContext, command: &Command) -> Verdict {
        Verdict::invalid(format!(
            "the gatekeeper does not execute `{}`",
            command.name()
        ))
    }
}

/// Runs one gatekeeper replica until `shutdown` resolves, or until keeping
/// drift current fails (NATS gone), which the caller restarts from.
pub async fn run<S, T>(bus: Bus, settings: DriftSettings, shutdown: S) -> Result<(), BusError>
where
    S: Future<Output = T> + Send,
{
    let maintaining = drift::maintain(bus.clone(), settings);
    tokio::select! {
        result = worker::run(bus, WorkerKind::Gatekeeper, Gatekeeper, shutdown) => result,
        result = maintaining => result,
    }
}
