//! # fleetroll-prober
//!
//! The worker that knows what exists: it owns the inventory's seeds and,
//! as the roll call grows, discovers and probes hosts over SSH.
//!
//! ```no_run
//! # async fn run(bus: fleetroll_bus::Bus) -> Result<(), fleetroll_bus::connect::BusError> {
//! fleetroll_prober::run(bus, tokio::signal::ctrl_c()).await
//! # }
//! ```

pub mod observe;
pub mod probe;
mod seeds;

use std::future::Future;
use std::sync::Arc;

use fleetroll_bus::connect::{Bus, BusError};
use fleetroll_bus::messages::command::{Command, Verdict};
use fleetroll_bus::messages::{NoParams, SeedList, WorkerKind};
use fleetroll_bus::query::QueryService;
use fleetroll_bus::subjects::queries;
use fleetroll_bus::worker::{self, CommandContext, Handler, Replica};

struct Prober;

impl Handler for Prober {
    async fn handle(&self, ctx: &CommandContext, command: &Command) -> Verdict {
        match command {
            Command::SeedAdd { hostnames } => seeds::add(ctx, hostnames).await,
            Command::SeedRemove { hostnames } => seeds::remove(ctx, hostnames).await,
            other => Verdict::Invalid {
                message: format!("the prober does not execute `{}`", other.name()),
            },
        }
    }
}

/// Runs one prober replica until `shutdown` resolves. The streams and
/// buckets must exist (`fleetroll_bus::setup::ensure`).
pub async fn run<S, T>(bus: Bus, shutdown: S) -> Result<(), BusError>
where
    S: Future<Output = T> + Send,
{
    let replica = Replica::new(bus.clone(), WorkerKind::Prober);
    let queries = QueryService::start(&replica).await?;
    let list_bus = bus.clone();
    queries
        .serve(queries::SEEDS_LIST, move |_claims, _: NoParams| {
            let bus = list_bus.clone();
            async move { Ok::<SeedList, _>(seeds::list(&bus).await?) }
        })
        .await?;
    worker::run_replica(replica, Arc::new(Prober), shutdown).await
}
