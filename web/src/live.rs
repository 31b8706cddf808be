//! The live event feed of one rollout, as server-sent events: every event
//! published from now on under `fleetroll.evt.rollout.<id>.>`, each as one
//! JSON `message`.

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use fleetroll_bus::events;
use fleetroll_bus::messages::rollout::{RolloutId, RolloutStatus};
use fleetroll_bus::subjects::queries;
use futures::{Stream, StreamExt};

use crate::AppState;
use crate::api::{ApiError, ask};

pub(crate) async fn rollout_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    // The id becomes part of a subject: only what rollout ids are made of.
    if !RolloutId::well_formed(&id) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no rollout `{id}`"),
        ));
    }
    // Unknown rollouts are a 404, not a feed that never says anything.
    let _: axum::Json<RolloutStatus> =
        ask(&state, queries::ROLLOUTS_GET, &RolloutId { id: id.clone() }).await?;
    let feed = events::follow(&state.bus, Some(&id))
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()))?;
    let messages =
        feed.filter_map(|event| async move { SseEvent::default().json_data(&event).ok().map(Ok) });
    Ok(Sse::new(messages).keep_alive(KeepAlive::default()))
}
