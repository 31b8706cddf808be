//! Publishing rollout events: `fleetroll.evt.rollout.<id>.<kind>` on the
//! events stream, where oncall follows one rollout or all.

use time::OffsetDateTime;
use tracing::warn;

use crate::codec;
use crate::connect::Bus;
use crate::messages::event::{Event, EventDetail};
use crate::subjects;

/// Publishes a rollout event. `key` names this occurrence: publishing the
/// same one again (a retried step) stores it once.
pub async fn rollout(
    bus: &Bus,
    source: &str,
    rollout: &str,
    kind: &str,
    key: &str,
    detail: EventDetail,
) {
    let event = Event {
        at: OffsetDateTime::now_utc(),
        source: source.to_string(),
        detail,
    };
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        format!("{rollout}-{kind}-{key}").as_str(),
    );
    let published = async {
        bus.js
            .publish_with_headers(
                subjects::rollout_event(rollout, kind),
                headers,
                codec::to_cbor(&event).into(),
            )
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())
    };
    if let Err(e) = published.await {
        warn!(rollout, kind, error = %e, "rollout event not published");
    }
}
