//! Rollout events: `fleetroll.evt.rollout.<id>.<kind>` on the events
//! stream, where oncall follows one rollout or all.

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use futures::{Stream, StreamExt};
use time::OffsetDateTime;
use tracing::warn;

use crate::codec;
use crate::connect::{Bus, BusError};
use crate::messages::event::{Event, EventDetail};
use crate::{subjects, topology};

/// Publishes a rollout event, on the subject of its kind
/// ([`EventDetail::rollout_kind`]). `key` names this occurrence: publishing
/// the same one again (a retried step) stores it once. A failure is logged
/// and returned: a step whose event is audited retries on it, others go on.
pub async fn rollout(
    bus: &Bus,
    source: &str,
    rollout: &str,
    key: &str,
    detail: EventDetail,
) -> Result<(), BusError> {
    let Some(kind) = detail.rollout_kind() else {
        return Err(BusError::js(
            "publishing a rollout event",
            "a command's outcome is not a rollout event",
        ));
    };
    let event = Event {
        at: OffsetDateTime::now_utc(),
        source: source.to_string(),
        detail,
    };
    bus.publish_once(
        "publishing a rollout event",
        subjects::rollout_event(rollout, kind),
        &format!("{rollout}-{kind}-{key}"),
        codec::to_cbor(&event),
    )
    .await
    .inspect_err(|e| {
        warn!(rollout, kind, error = %e, "rollout event not published");
    })
}

/// Rollout events from now on: of one rollout, or of all.
pub async fn follow(
    bus: &Bus,
    rollout: Option<&str>,
) -> Result<impl Stream<Item = Event> + use<>, BusError> {
    let filter = match rollout {
        Some(id) => subjects::rollout_events(id),
        None => subjects::ROLLOUT_EVENTS.to_string(),
    };
    let consumer = bus
        .js
        .get_stream(topology::EVENTS.name)
        .await
        .map_err(|e| BusError::js("opening the event stream", e))?
        .create_consumer(OrderedConfig {
            filter_subject: filter,
            deliver_policy: DeliverPolicy::New,
            ..Default::default()
        })
        .await
        .map_err(|e| BusError::js("following events", e))?;
    let messages = consumer
        .messages()
        .await
        .map_err(|e| BusError::js("following events", e))?;
    Ok(messages.filter_map(|m| async move {
        m.ok()
            .and_then(|m| codec::from_cbor::<Event>(&m.payload).ok())
    }))
}
