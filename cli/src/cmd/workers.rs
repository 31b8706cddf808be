//! `fleetroll worker <kind>`, and running workers supervised: a replica that
//! fails (NATS gone, say) starts again; a stop request ends them all.

use std::time::Duration;

use fleetroll_bus::WorkerKind;
use fleetroll_bus::connect::{Bus, BusError, ConnectOptions};
use fleetroll_bus::setup::{self, Replicas};
use tokio::sync::watch;
use tracing::warn;

use crate::context::{Context, Settings};
use crate::exit;

async fn run_once(
    kind: WorkerKind,
    bus: Bus,
    settings: Settings,
    mut stop: watch::Receiver<bool>,
) -> Result<(), BusError> {
    let shutdown = async move {
        let _ = stop.wait_for(|stopping| *stopping).await;
    };
    match kind {
        WorkerKind::Prober => fleetroll_prober::run(bus, settings.prober(), shutdown).await,
        WorkerKind::Gatekeeper => fleetroll_gatekeeper::run(bus, settings.drift(), shutdown).await,
        WorkerKind::Orchestrator => fleetroll_orchestrator::run(bus, shutdown).await,
        WorkerKind::Auditor => fleetroll_auditor::run(bus, shutdown).await,
    }
}

/// Runs a replica of `kind` until `stop` turns true, restarting it when it
/// fails. Each start first creates whatever streams and buckets are missing.
pub async fn supervise(
    kind: WorkerKind,
    bus: Bus,
    replicas: Replicas,
    settings: Settings,
    stop: watch::Receiver<bool>,
) {
    loop {
        let started = async {
            setup::ensure(&bus, replicas).await?;
            run_once(kind, bus.clone(), settings.clone(), stop.clone()).await
        };
        match started.await {
            Ok(()) => return,
            Err(e) => {
                warn!(%kind, error = %e, "worker failed; restarting in 2 s");
                tokio::time::sleep(Duration::from_secs(2)).await;
                if *stop.borrow() {
                    return;
                }
            }
        }
    }
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

pub async fn run(ctx: &Context, kind: WorkerKind) -> anyhow::Result<u8> {
    let url = ctx.nats_url();
    let mut options = ConnectOptions::new(url, format!("fleetroll-{kind}"));
    options.wait_for_server = true;
    let bus = Bus::connect(options).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let replica = tokio::spawn(supervise(
        kind,
        bus,
        ctx.replicas(),
        ctx.settings.clone(),
        stop_rx,
    ));
    stop_signal().await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), replica).await;
    Ok(exit::OK)
}
