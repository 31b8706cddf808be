//! # fleetroll-gatekeeper
//!
//! The worker that judges: drift, and the health gates of running
//! rollouts (and their success). Everything it knows it derives from observations and
//! intent in the buckets, so any replica can take over at any time.
//!
//! ```no_run
//! # async fn run(bus: fleetroll_bus::Bus) -> Result<(), fleetroll_bus::connect::BusError> {
//! let settings = fleetroll_gatekeeper::DriftSettings::default();
//! fleetroll_gatekeeper::run(bus, settings, false, tokio::signal::ctrl_c()).await
//! # }
//! ```

mod drift;
mod gates;
mod runs;

use std::future::Future;

pub use drift::{DriftSettings, drift_of, healthy_of};
use fleetroll_bus::connect::{Bus, BusError};
use fleetroll_bus::messages::WorkerKind;
use fleetroll_bus::messages::command::{Command, Verdict};
use fleetroll_bus::worker::{self, CommandContext, Handler, Replica};

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
/// drift and gates current fails (NATS gone), which the caller restarts
/// from. `workload`: whether a workload source is configured (without one,
/// workload gates are inconclusive).
pub async fn run<S, T>(
    bus: Bus,
    settings: DriftSettings,
    workload: bool,
    shutdown: S,
) -> Result<(), BusError>
where
    S: Future<Output = T> + Send,
{
    let replica = Replica::new(bus.clone(), WorkerKind::Gatekeeper);
    let judging = gates::maintain(bus.clone(), workload, replica.instance.clone());
    let maintaining = drift::maintain(bus.clone(), settings);
    tokio::select! {
        result = worker::run_replica(replica, std::sync::Arc::new(Gatekeeper), shutdown) => result,
        result = maintaining => result,
        result = judging => result,
    }
}
