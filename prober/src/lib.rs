//! # fleetroll-prober
//!
//! The worker that knows what exists: it owns the inventory's seeds and
//! probes hosts over SSH, recording one observation per host.
//!
//! ```no_run
//! # async fn run(bus: fleetroll_bus::Bus) -> Result<(), fleetroll_bus::connect::BusError> {
//! let settings = fleetroll_prober::ProberSettings::default();
//! fleetroll_prober::run(bus, settings, tokio::signal::ctrl_c()).await
//! # }
//! ```

pub mod fleet;
mod hosts;
mod intent;
mod jobs;
pub mod observe;
pub mod probe;
mod quarantine;
mod seeds;
pub mod workload;

use std::future::Future;
use std::sync::Arc;

use fleetroll_bus::connect::{Bus, BusError};
use fleetroll_bus::messages::command::{Command, Verdict};
use fleetroll_bus::messages::host::{HostName, HostQuery, PopulationList};
use fleetroll_bus::messages::{NoParams, SeedList, WorkerKind};
use fleetroll_bus::query::{QueryError, QueryService};
use fleetroll_bus::subjects::queries;
use fleetroll_bus::worker::{self, CommandContext, Handler, Replica};
use fleetroll_ssh::SshSettings;

use crate::fleet::Fleet;
use fleetroll_bus::host_index::HostIndex;

struct Prober {
    fleet: Arc<Fleet>,
    index: Arc<HostIndex>,
    /// The workload source, when one is configured: quarantines are set
    /// through it.
    source: Option<workload::Taskcluster>,
}

impl Handler for Prober {
    async fn handle(&self, ctx: &CommandContext, command: &Command) -> Verdict {
        match command {
            Command::SeedAdd { hostnames } => seeds::add(ctx, hostnames).await,
            Command::SeedRemove { hostnames } => seeds::remove(ctx, hostnames).await,
            Command::HostRefresh {
                hostnames,
                all,
                fast,
            } => hosts::refresh(ctx, hostnames, *all, *fast).await,
            Command::HostRepin { hostname } => hosts::repin(ctx, &self.fleet, hostname).await,
            Command::HostPinImport { known_hosts, file } => {
                hosts::pin_import(ctx, &self.fleet, known_hosts, file).await
            }
            Command::SeedSync { hostnames } => intent::seed_sync(ctx, hostnames).await,
            Command::PopulationCreate {
                name,
                expected_role,
                target_query,
                description,
            } => {
                intent::population_create(
                    ctx,
                    name,
                    expected_role,
                    target_query.as_deref(),
                    description.as_deref(),
                )
                .await
            }
            Command::HostAssignPopulation { hosts, population } => {
                intent::assign_population(ctx, &self.index, hosts, population).await
            }
            Command::HostSetExpectedRole { hostname, role } => {
                intent::set_expected_role(ctx, hostname, Some(role)).await
            }
            Command::HostClearExpectedRole { hostname } => {
                intent::set_expected_role(ctx, hostname, None).await
            }
            Command::HostDisable { hostname, reason } => {
                intent::set_disabled(ctx, hostname, Some(reason)).await
            }
            Command::HostEnable { hostname } => intent::set_disabled(ctx, hostname, None).await,
            Command::HostQuarantine {
                hostname,
                until,
                reason,
            } => {
                quarantine::set(
                    ctx,
                    self.source.as_ref(),
                    hostname,
                    Some(*until),
                    Some(reason),
                )
                .await
            }
            Command::HostUnquarantine { hostname } => {
                quarantine::set(ctx, self.source.as_ref(), hostname, None, None).await
            }
            other => Verdict::invalid(format!("the prober does not execute `{}`", other.name())),
        }
    }

    /// A quarantine changes Taskcluster and notes it there: once.
    fn acts_on_host(&self, command: &Command) -> bool {
        matches!(
            command,
            Command::HostQuarantine { .. } | Command::HostUnquarantine { .. }
        )
    }
}

/// How the prober works.
#[derive(Debug, Clone)]
pub struct ProberSettings {
    pub ssh: SshSettings,
    /// Every seed is fully probed this often (SSH, sudo, file reads).
    pub full_interval: std::time::Duration,
    /// Every seed gets a fast probe this often (reachability, and a full
    /// probe where its state changed).
    pub fast_interval: std::time::Duration,
    /// Where workload comes from; none configured, none collected.
    pub workload: Option<workload::WorkloadConfig>,
}

impl Default for ProberSettings {
    fn default() -> Self {
        ProberSettings {
            ssh: SshSettings::default(),
            full_interval: std::time::Duration::from_secs(3600),
            fast_interval: std::time::Duration::from_secs(300),
            workload: None,
        }
    }
}

/// Runs one prober replica until `shutdown` resolves, or until taking probe
/// jobs fails (NATS gone), which the caller restarts from. The streams and
/// buckets must exist (`fleetroll_bus::setup::ensure`).
pub async fn run<S, T>(bus: Bus, settings: ProberSettings, shutdown: S) -> Result<(), BusError>
where
    S: Future<Output = T> + Send,
{
    let replica = Replica::new(bus.clone(), WorkerKind::Prober);
    let queries = QueryService::start(&replica).await?;
    let b = bus.clone();
    queries
        .serve(queries::SEEDS_LIST, move |_claims, _: NoParams| {
            let bus = b.clone();
            async move { Ok::<SeedList, _>(seeds::list(&bus).await?) }
        })
        .await?;
    let index = HostIndex::start(bus.clone());
    // An answer must fit one NATS message, JSON included (the page's size
    // bound is already a generous one).
    let max_bytes = bus.client.server_info().max_payload * 2 / 3;
    let i = index.clone();
    queries
        .serve(queries::HOSTS_LIST, move |_claims, q: HostQuery| {
            let index = i.clone();
            async move { hosts::page(&index, &q, max_bytes).await }
        })
        .await?;
    let b = bus.clone();
    queries
        .serve(queries::HOSTS_HISTORY, move |_claims, q: HostName| {
            let bus = b.clone();
            async move { hosts::history(&bus, &q.hostname).await }
        })
        .await?;
    let i = index.clone();
    queries
        .serve(queries::DRIFT_SUMMARY, move |_claims, _: NoParams| {
            let index = i.clone();
            async move {
                index
                    .drift_summary()
                    .await
                    .map_err(|e| QueryError::Failed(e.to_string()))
            }
        })
        .await?;
    let i = index.clone();
    queries
        .serve(queries::HOSTS_GET, move |_claims, q: HostName| {
            let index = i.clone();
            async move { hosts::get(&index, &q.hostname).await }
        })
        .await?;
    let b = bus.clone();
    queries
        .serve(queries::POPULATIONS_LIST, move |_claims, _: NoParams| {
            let bus = b.clone();
            async move { Ok::<PopulationList, _>(intent::populations(&bus).await?) }
        })
        .await?;
    let fleet = Arc::new(Fleet::new(bus.clone(), settings.ssh));
    let source = settings.workload.as_ref().map(|w| w.source.clone());
    let collecting = async {
        match &settings.workload {
            Some(w) => tokio::try_join!(
                workload::work(bus.clone(), w.source.clone(), w.pools.clone()),
                workload::schedule(bus.clone(), w.interval)
            )
            .map(|_| ()),
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = count_hosts(index.clone()) => Ok(()),
        result = worker::run_replica(replica, Arc::new(Prober { fleet: fleet.clone(), index, source }), shutdown) => result,
        result = jobs::work(bus.clone(), fleet) => result,
        result = jobs::schedule(bus.clone(), settings.full_interval, false) => result,
        result = jobs::schedule(bus.clone(), settings.fast_interval, true) => result,
        result = collecting => result,
    }
}

/// Keeps the `fleetroll_hosts` gauge (hosts by state) current, for
/// Prometheus.
async fn count_hosts(index: Arc<HostIndex>) {
    const STATES: [&str; 4] = ["reachable", "unreachable", "not_probed", "disabled"];
    loop {
        if let Ok(summary) = index.drift_summary().await {
            for state in STATES {
                let count = summary.by_state.get(state).copied().unwrap_or(0);
                metrics::gauge!("fleetroll_hosts", "state" => state).set(count as f64);
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    }
}
