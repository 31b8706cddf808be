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
    // Each feed holds a NATS subscription and a connection: bounded.
    let slot = state.live_feeds.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many live event feeds are open on this server; try again later",
        )
    })?;
    let feed = events::follow(&state.bus, Some(&id))
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()))?;
    let messages = feed.filter_map(move |event| {
        // The slot is given back when the visitor goes and the feed drops.
        let _held = &slot;
        let message = SseEvent::default().json_data(&event).ok().map(Ok);
        async move { message }
    });
    Ok(Sse::new(messages).keep_alive(KeepAlive::default()))
}
