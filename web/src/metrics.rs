//! Prometheus metrics. The workers count what they do through the `metrics`
//! facade; the process that runs them installs one recorder
//! ([`install`]) and serves it at `/metrics`: `fleetroll up` on its web
//! server, `fleetroll worker` on `--metrics-listen` ([`serve`]).
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `fleetroll_probes_total` | counter | `result` (`ok`, `failed`) |
//! | `fleetroll_probe_duration_seconds` | summary | |
//! | `fleetroll_hosts` | gauge | `state` (`reachable`, `unreachable`, `not_probed`, `disabled`) |
//! | `fleetroll_commands_total` | counter | `worker`, `verdict` (`done`, `refused`, `denied`, `invalid`, `failed`) |
//! | `fleetroll_rollout_stage` | gauge | `rollout` |
//! | `fleetroll_gate_verdict` | gauge (1 for the current verdict) | `rollout`, `gate`, `verdict` |
//! | `fleetroll_audit_records_total` | counter | |

use std::future::Future;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle};

use crate::{Web, WebError};

/// Installs this process's recorder (once per process) and describes every
/// metric.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new().install_recorder()?;
    metrics::describe_counter!("fleetroll_probes_total", "Host probes done, by result");
    metrics::describe_histogram!(
        "fleetroll_probe_duration_seconds",
        metrics::Unit::Seconds,
        "How long a host probe took"
    );
    metrics::describe_gauge!("fleetroll_hosts", "Hosts in the inventory, by state");
    metrics::describe_counter!(
        "fleetroll_commands_total",
        "Commands handled, by worker kind and verdict"
    );
    metrics::describe_gauge!(
        "fleetroll_rollout_stage",
        "The current stage of each running rollout"
    );
    metrics::describe_gauge!(
        "fleetroll_gate_verdict",
        "1 for each gate's current verdict in each running rollout"
    );
    metrics::describe_counter!("fleetroll_audit_records_total", "Audit records written");
    Ok(handle)
}

pub(crate) fn routes<S>(handle: Option<PrometheusHandle>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/metrics", get(render))
        .with_state(handle)
}

async fn render(State(handle): State<Option<PrometheusHandle>>) -> Response {
    match handle {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no metrics recorder in this process").into_response(),
    }
}

/// Serves `/metrics` (and a bare `/healthz`) alone, for a worker process.
pub async fn serve<S>(web: Web, handle: PrometheusHandle, shutdown: S) -> Result<(), WebError>
where
    S: Future<Output = ()> + Send + 'static,
{
    let app = routes(Some(handle)).route("/healthz", get(|| async { "ok" }));
    web.serve(app, shutdown).await
}
