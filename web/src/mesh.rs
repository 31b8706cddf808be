//! The banner: whether the mesh can be trusted right now, and if not, why
//! and what that means for what the page shows.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use fleetroll_bus::WorkerKind;
use fleetroll_bus::connect::Bus;
use fleetroll_bus::status::{self, MeshStatus};
use serde::Serialize;

use crate::AppState;

/// How long gathering the mesh's status may take before the mesh counts as
/// recovering.
const WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MeshState {
    /// NATS answers and every worker kind has a live replica.
    Ok,
    /// NATS answers, but something is missing: a worker kind with no live
    /// replica, or streams and buckets not (yet) there.
    Degraded,
    /// NATS does not answer (or only slowly): the mesh is recovering.
    Unreachable,
}

/// Answer of `/api/v1/mesh`.
#[derive(Debug, Clone, Serialize)]
pub struct MeshHealth {
    pub state: MeshState,
    /// What is wrong, each in words for the banner.
    pub problems: Vec<String>,
    /// The whole status, when it could be gathered.
    pub status: Option<MeshStatus>,
}

/// What a worker kind's absence means for the reader.
fn without(kind: WorkerKind) -> &'static str {
    match kind {
        WorkerKind::Prober => "hosts are not probed, and host queries go unanswered",
        WorkerKind::Gatekeeper => "gates, drift and health are not evaluated",
        WorkerKind::Orchestrator => "rollouts do not move, and rollout queries go unanswered",
        WorkerKind::Auditor => "audit records are not written, and the audit log cannot be listed",
    }
}

/// The mesh as the banner tells it.
pub async fn health(bus: &Bus) -> MeshHealth {
    let unreachable = |why: String| MeshHealth {
        state: MeshState::Unreachable,
        problems: vec![why],
        status: None,
    };
    if bus.client.connection_state() != async_nats::connection::State::Connected {
        return unreachable(format!(
            "NATS at {} is unreachable; reconnecting. What is shown may be out of date.",
            bus.url()
        ));
    }
    let status = match tokio::time::timeout(WAIT, status::gather(bus)).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => return unreachable(format!("the mesh is recovering: {e}")),
        Err(_) => {
            return unreachable(format!(
                "the mesh is recovering: NATS did not describe it within {WAIT:?}"
            ));
        }
    };
    let mut problems: Vec<String> = status
        .streams
        .iter()
        .chain(&status.buckets)
        .filter(|s| !s.exists)
        .map(|s| {
            format!(
                "{} is missing: the mesh is being set up or recovering",
                s.name
            )
        })
        .collect();
    problems.extend(
        status
            .workers
            .iter()
            .filter(|k| k.live.is_empty())
            .map(|k| format!("no live {} replica: {}", k.kind, without(k.kind))),
    );
    MeshHealth {
        state: if problems.is_empty() {
            MeshState::Ok
        } else {
            MeshState::Degraded
        },
        problems,
        status: Some(status),
    }
}

pub(crate) async fn mesh(State(state): State<AppState>) -> Json<MeshHealth> {
    Json(health(&state.bus).await)
}

#[derive(Serialize)]
pub(crate) struct Healthz {
    status: &'static str,
}

/// The web server is up; 503 while its NATS connection is down.
pub(crate) async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Healthz>) {
    if state.bus.client.connection_state() == async_nats::connection::State::Connected {
        (StatusCode::OK, Json(Healthz { status: "ok" }))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Healthz {
                status: "nats unreachable",
            }),
        )
    }
}
