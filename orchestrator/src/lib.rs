//! # fleetroll-orchestrator
//!
//! The worker that changes hosts: the rollout state machine (create,
//! start, advance, pause, resume; every transition a compare-and-swap),
//! apply jobs shared by every replica, applying and removing overrides
//! over SSH ([`overrides`]), and converge and reboot, which operators ask
//! for explicitly and which are never part of a rollout. It answers the
//! `rollouts.list` and `rollouts.get` queries.
//!
//! ```no_run
//! # async fn run(bus: fleetroll_bus::Bus) -> Result<(), fleetroll_bus::connect::BusError> {
//! use fleetroll_orchestrator::OrchestratorSettings;
//! fleetroll_orchestrator::run(bus, OrchestratorSettings::default(), tokio::signal::ctrl_c()).await
//! # }
//! ```

mod apply;
mod hosts;
pub mod overrides;
mod rollouts;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use fleetroll_bus::connect::{Bus, BusError};
use fleetroll_bus::host_index::HostIndex;
use fleetroll_bus::messages::NoParams;
use fleetroll_bus::messages::WorkerKind;
use fleetroll_bus::messages::command::{Command, Verdict};
use fleetroll_bus::messages::rollout::RolloutId;
use fleetroll_bus::query::{QueryError, QueryService};
use fleetroll_bus::subjects::queries;
use fleetroll_bus::worker::{self, CommandContext, Handler, Replica};
use fleetroll_ssh::SshSettings;
use fleetroll_ssh::pool::Pool;

/// How the orchestrator reaches and changes hosts. The commands are the
/// operator's own settings, run as they are; nothing in them comes from a
/// command's parameters.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrchestratorSettings {
    #[serde(skip)]
    pub ssh: SshSettings,
    /// What `converge host` runs on the host.
    #[serde(default = "default_converge_command")]
    pub converge_command: String,
    #[serde(default = "default_converge_timeout", with = "humantime_serde")]
    pub converge_timeout: Duration,
    /// Exit statuses of the converge command that mean it went well
    /// (Puppet's --detailed-exitcodes: 0 no changes, 2 changes applied).
    #[serde(default = "default_converge_ok")]
    pub converge_ok: Vec<u32>,
    /// What `reboot host` runs on the host.
    #[serde(default = "default_reboot_command")]
    pub reboot_command: String,
    /// How long a rebooting host may take to answer again.
    #[serde(default = "default_reboot_timeout", with = "humantime_serde")]
    pub reboot_timeout: Duration,
}

fn default_converge_command() -> String {
    "sudo -n run-puppet.sh".into()
}

fn default_converge_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}

fn default_converge_ok() -> Vec<u32> {
    vec![0, 2]
}

fn default_reboot_command() -> String {
    "sudo -n reboot".into()
}

fn default_reboot_timeout() -> Duration {
    Duration::from_secs(15 * 60)
}

impl Default for OrchestratorSettings {
    fn default() -> Self {
        OrchestratorSettings {
            ssh: SshSettings::default(),
            converge_command: default_converge_command(),
            converge_timeout: default_converge_timeout(),
            converge_ok: default_converge_ok(),
            reboot_command: default_reboot_command(),
            reboot_timeout: default_reboot_timeout(),
        }
    }
}

struct Orchestrator {
    pool: Arc<Pool>,
    index: Arc<HostIndex>,
    settings: OrchestratorSettings,
}

impl Handler for Orchestrator {
    async fn handle(&self, ctx: &CommandContext, command: &Command) -> Verdict {
        match command {
            Command::HostConverge { hostname } => {
                hosts::converge(ctx, &self.pool, &self.settings, hostname).await
            }
            Command::HostReboot { hostname } => {
                hosts::reboot(ctx, &self.pool, &self.settings, hostname).await
            }
            Command::RolloutCreate { plan } => rollouts::create(ctx, plan).await,
            Command::RolloutStart { id } => rollouts::start(ctx, &self.index, id).await,
            Command::RolloutAdvance {
                id,
                batch_size,
                force,
                reason,
            } => rollouts::advance(ctx, id, *batch_size, *force, reason.as_deref()).await,
            Command::RolloutPause { id, reason } => {
                rollouts::pause_or_resume(ctx, id, Some(reason)).await
            }
            Command::RolloutResume { id } => rollouts::pause_or_resume(ctx, id, None).await,
            Command::RolloutHalt { reason } => rollouts::halt(ctx, reason).await,
            Command::RolloutRetry { id, hosts } => rollouts::retry(ctx, id, hosts).await,
            Command::RolloutFinalize { id } => rollouts::finalize(ctx, id).await,
            Command::RolloutRollback {
                id,
                remove_overrides,
                reason,
            } => rollouts::rollback(ctx, id, *remove_overrides, reason).await,
            other => Verdict::invalid(format!(
                "the orchestrator does not execute `{}`",
                other.name()
            )),
        }
    }

    fn acts_on_host(&self, command: &Command) -> bool {
        matches!(
            command,
            Command::HostConverge { .. } | Command::HostReboot { .. }
        )
    }
}

/// Runs one orchestrator replica until `shutdown` resolves.
pub async fn run<S, T>(
    bus: Bus,
    settings: OrchestratorSettings,
    shutdown: S,
) -> Result<(), BusError>
where
    S: Future<Output = T> + Send,
{
    let pool = Arc::new(Pool::new(bus.clone(), settings.ssh.clone()));
    let index = HostIndex::start(bus.clone());
    let replica = Replica::new(bus.clone(), WorkerKind::Orchestrator);
    let queries = QueryService::start(&replica).await?;
    let b = bus.clone();
    queries
        .serve(queries::ROLLOUTS_LIST, move |_claims, _: NoParams| {
            let bus = b.clone();
            async move { Ok::<_, QueryError>(rollouts::list(&bus).await?) }
        })
        .await?;
    let (b, i) = (bus.clone(), index.clone());
    queries
        .serve(queries::ROLLOUTS_GET, move |_claims, q: RolloutId| {
            let (bus, index) = (b.clone(), i.clone());
            async move {
                rollouts::status(&bus, &index, &q.id)
                    .await?
                    .ok_or_else(|| QueryError::NotFound(format!("no rollout `{}`", q.id)))
            }
        })
        .await?;
    let applier = Arc::new(apply::Applier {
        bus: bus.clone(),
        pool: pool.clone(),
        index: index.clone(),
        instance: replica.instance.clone(),
    });
    let settling = rollouts::settle(bus.clone(), index.clone(), replica.instance.clone());
    let handler = Arc::new(Orchestrator {
        pool,
        index,
        settings,
    });
    tokio::select! {
        result = worker::run_replica(replica, handler, shutdown) => result,
        result = apply::work(applier) => result,
        result = settling => result,
    }
}
