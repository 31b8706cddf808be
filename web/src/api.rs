//! The JSON API under `/api/v1`: what the UI shows, for any HTTP client.
//! Every answer comes from the mesh's read queries; the OpenAPI document
//! at `/api/v1/openapi.json` describes them.

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router, middleware};
use fleetroll_bus::codec::Message;
use fleetroll_bus::messages::NoParams;
use fleetroll_bus::messages::audit::{AuditList, AuditQuery};
use fleetroll_bus::messages::host::{
    DriftSummary, HostHistory, HostList, HostName, HostQuery, HostRecord,
};
use fleetroll_bus::messages::rollout::{RolloutId, RolloutList, RolloutStatus};
use fleetroll_bus::query::{self, QueryFailure};
use fleetroll_bus::subjects::queries;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{AppState, access, live, mesh};

/// How long a request waits for the mesh's answer.
const WAIT: Duration = Duration::from_secs(10);

const OPENAPI: &str = include_str!("../assets/openapi.json");

pub(crate) fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/api/v1/overview", get(overview))
        .route("/api/v1/hosts", get(hosts))
        .route("/api/v1/hosts/{hostname}", get(host))
        .route("/api/v1/hosts/{hostname}/history", get(history))
        .route("/api/v1/rollouts", get(rollouts))
        .route("/api/v1/rollouts/{id}", get(rollout))
        .route("/api/v1/rollouts/{id}/events", get(live::rollout_events))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/mesh", get(mesh::mesh))
        .route_layer(middleware::from_fn_with_state(state, access::check))
        .route("/api/v1/openapi.json", get(openapi))
}

/// An error answer: its status and `{"error": "..."}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: &self.message,
            }),
        )
            .into_response()
    }
}

impl From<QueryFailure> for ApiError {
    fn from(failure: QueryFailure) -> Self {
        let status = match &failure {
            QueryFailure::Invalid(_) => StatusCode::BAD_REQUEST,
            QueryFailure::NotFound(_) => StatusCode::NOT_FOUND,
            QueryFailure::NoResponders { .. } => StatusCode::SERVICE_UNAVAILABLE,
            QueryFailure::TimedOut { .. } => StatusCode::GATEWAY_TIMEOUT,
            // The server's own token was refused: a misconfigured server.
            QueryFailure::Denied(_) | QueryFailure::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            QueryFailure::Bus(_) => StatusCode::BAD_GATEWAY,
        };
        ApiError::new(status, failure.to_string())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, rejection.body_text())
    }
}

/// Asks one of the mesh's read queries with the server's token.
pub(crate) async fn ask<P: Message, R: Message>(
    state: &AppState,
    endpoint: &str,
    params: &P,
) -> Result<Json<R>, ApiError> {
    let token = state.tokens.token().map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the web server has no token to ask the mesh with: {e}"),
        )
    })?;
    Ok(Json(
        query::request(&state.bus, &token, endpoint, params, WAIT).await?,
    ))
}

async fn overview(State(state): State<AppState>) -> Result<Json<DriftSummary>, ApiError> {
    ask(&state, queries::DRIFT_SUMMARY, &NoParams {}).await
}

#[derive(Deserialize)]
struct HostsParams {
    filter: Option<String>,
    after: Option<String>,
    limit: Option<u32>,
}

async fn hosts(
    State(state): State<AppState>,
    params: Result<Query<HostsParams>, QueryRejection>,
) -> Result<Json<HostList>, ApiError> {
    let Query(params) = params?;
    let query = HostQuery {
        filter: params.filter.unwrap_or_default(),
        after: params.after.filter(|a| !a.is_empty()),
        limit: params.limit,
    };
    ask(&state, queries::HOSTS_LIST, &query).await
}

async fn host(
    State(state): State<AppState>,
    Path(hostname): Path<String>,
) -> Result<Json<HostRecord>, ApiError> {
    ask(&state, queries::HOSTS_GET, &HostName { hostname }).await
}

async fn history(
    State(state): State<AppState>,
    Path(hostname): Path<String>,
) -> Result<Json<HostHistory>, ApiError> {
    ask(&state, queries::HOSTS_HISTORY, &HostName { hostname }).await
}

async fn rollouts(State(state): State<AppState>) -> Result<Json<RolloutList>, ApiError> {
    ask(&state, queries::ROLLOUTS_LIST, &NoParams {}).await
}

async fn rollout(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RolloutStatus>, ApiError> {
    ask(&state, queries::ROLLOUTS_GET, &RolloutId { id }).await
}

#[derive(Deserialize)]
struct AuditParams {
    host: Option<String>,
    rollout: Option<String>,
    actor: Option<String>,
    /// RFC 3339, or a duration back from now (`2h`, `3d`).
    since: Option<String>,
    limit: Option<u32>,
}

async fn audit(
    State(state): State<AppState>,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Json<AuditList>, ApiError> {
    let Query(params) = params?;
    let given = |v: Option<String>| v.filter(|v| !v.is_empty());
    let since = match given(params.since) {
        None => None,
        Some(since) => Some(
            AuditQuery::parse_since(&since, OffsetDateTime::now_utc()).ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "`since` is neither an RFC 3339 time nor a duration like 2h: `{since}`"
                    ),
                )
            })?,
        ),
    };
    let query = AuditQuery {
        host: given(params.host),
        rollout: given(params.rollout),
        actor: given(params.actor),
        since,
        limit: params.limit.map_or(0, |l| l as usize),
    };
    ask(&state, queries::AUDIT_LIST, &query).await
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_is_json_naming_every_route() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("valid JSON");
        let paths = doc["paths"].as_object().expect("paths");
        for path in [
            "/api/v1/overview",
            "/api/v1/hosts",
            "/api/v1/hosts/{hostname}",
            "/api/v1/hosts/{hostname}/history",
            "/api/v1/rollouts",
            "/api/v1/rollouts/{id}",
            "/api/v1/rollouts/{id}/events",
            "/api/v1/audit",
            "/api/v1/mesh",
            "/healthz",
            "/metrics",
        ] {
            assert!(paths.contains_key(path), "{path} undocumented");
        }
    }
}
