//! `fleetroll worker <kind>`, and running workers supervised: a replica that
//! fails (NATS gone, say) starts again; a stop request ends them all.

use crate::term::say;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;

use fleetroll_auditor::AuditorSettings;
use fleetroll_bus::WorkerKind;
use fleetroll_bus::connect::Bus;
use fleetroll_bus::setup;
use fleetroll_bus::token::Role;
use fleetroll_web::Web;
use tokio::sync::watch;
use tracing::warn;

use crate::context::{Context, Settings};
use crate::exit;

/// What the workers of this process run with.
#[derive(Clone)]
pub struct WorkerConfig {
    pub settings: Settings,
    /// Needed to run an auditor.
    pub auditor: Option<AuditorSettings>,
    /// Needed to run a prober: the settings with the workload source
    /// resolved (credentials read, pool table checked).
    pub prober: Option<fleetroll_prober::ProberSettings>,
}

impl WorkerConfig {
    /// The configuration for running `kinds` from this data dir.
    pub fn for_kinds(ctx: &Context, kinds: &[WorkerKind]) -> anyhow::Result<WorkerConfig> {
        Ok(WorkerConfig {
            settings: ctx.settings.clone(),
            auditor: if kinds.contains(&WorkerKind::Auditor) {
                Some(ctx.auditor()?)
            } else {
                None
            },
            prober: if kinds.contains(&WorkerKind::Prober) {
                Some(ctx.settings.prober()?)
            } else {
                None
            },
        })
    }
}

async fn run_once(
    kind: WorkerKind,
    bus: Bus,
    config: WorkerConfig,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let shutdown = stopped(stop);
    let settings = config.settings;
    match kind {
        WorkerKind::Prober => {
            let prober = config
                .prober
                .ok_or_else(|| anyhow::anyhow!("no prober settings given to the prober"))?;
            fleetroll_prober::run(bus, prober, shutdown).await?
        }
        WorkerKind::Gatekeeper => {
            fleetroll_gatekeeper::run(bus, settings.drift(), settings.workload.is_some(), shutdown)
                .await?
        }
        WorkerKind::Orchestrator => {
            fleetroll_orchestrator::run(bus, settings.orchestrator(), shutdown).await?
        }
        WorkerKind::Auditor => {
            let auditor = config
                .auditor
                .ok_or_else(|| anyhow::anyhow!("no audit key given to the auditor"))?;
            fleetroll_auditor::run(bus, auditor, shutdown).await?
        }
    }
    Ok(())
}

/// Runs a replica of `kind` until `stop` turns true, restarting it when it
/// fails. Each start first checks that the mesh is set up (`fleetroll
/// setup`): until it is, the replica waits, trying again every 2 s.
pub async fn supervise(
    kind: WorkerKind,
    bus: Bus,
    config: WorkerConfig,
    stop: watch::Receiver<bool>,
) {
    loop {
        let started = async {
            setup::check(&bus).await?;
            run_once(kind, bus.clone(), config.clone(), stop.clone()).await
        };
        match started.await {
            Ok(()) => return,
            Err(e) => {
                warn!(%kind, error = %format!("{e:#}"), "worker failed; restarting in 2 s");
                tokio::time::sleep(Duration::from_secs(2)).await;
                if *stop.borrow() {
                    return;
                }
            }
        }
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn stop_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

pub async fn run(
    ctx: &Context,
    kind: WorkerKind,
    metrics_listen: Option<SocketAddr>,
) -> anyhow::Result<u8> {
    let config = WorkerConfig::for_kinds(ctx, &[kind])?;
    let metrics = fleetroll_web::metrics::install().context("installing the metrics recorder")?;
    let url = ctx.nats_url();
    let mut options = ctx
        .nats_options(url, format!("fleetroll-{kind}"))?
        .credentials(ctx.credentials(Role::Worker)?)
        .token(ctx.token_source().ok())
        .trust(ctx.trust_root());
    options.wait_for_server = true;
    let bus = Bus::connect(options).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    if let Some(listen) = metrics_listen {
        let web = Web::bind(listen).await?;
        say!("metrics: {}metrics", web.url());
        let shutdown = stopped(stop_rx.clone());
        tokio::spawn(async move {
            if let Err(e) = fleetroll_web::metrics::serve(web, metrics, shutdown).await {
                warn!(error = %e, "metrics server stopped");
            }
        });
    }
    let replica = tokio::spawn(supervise(kind, bus, config, stop_rx));
    stop_signal().await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), replica).await;
    Ok(exit::OK)
}
