//! The clock guard: token checks are only as good as the clocks that check
//! expiry, so a worker or CLI more than 30 s off the NATS server refuses
//! token operations.

use std::time::Duration;

use serde::Deserialize;
use time::OffsetDateTime;

use crate::connect::{Bus, BusError};
use crate::topology;

/// The most a clock may be off the NATS server's.
pub const MAX_SKEW: Duration = Duration::from_secs(30);

/// A local clock too far from the server's.
#[derive(Debug, thiserror::Error)]
#[error(
    "this machine's clock is {} s {} the NATS server's (limit {} s): refusing token operations; fix the clock (NTP)",
    .skew_ms.unsigned_abs() as f64 / 1000.0,
    if *.skew_ms > 0 { "ahead of" } else { "behind" },
    MAX_SKEW.as_secs()
)]
pub struct SkewError {
    pub skew_ms: i64,
}

#[derive(Deserialize)]
struct ApiResponse {
    #[serde(default, with = "time::serde::rfc3339::option")]
    ts: Option<OffsetDateTime>,
    error: Option<ApiError>,
}

#[derive(Deserialize)]
struct ApiError {
    description: String,
}

/// Local clock minus the server's, in milliseconds, measured against the
/// `ts` the server stamps on stream-info responses of the command stream (half the round trip is
/// credited to the way back).
pub async fn measure_skew_ms(bus: &Bus) -> Result<i64, BusError> {
    let subject = format!("$JS.API.STREAM.INFO.{}", topology::COMMANDS.name);
    let before = OffsetDateTime::now_utc();
    let response = bus
        .unless_refused(
            "asking the server's time",
            &subject,
            bus.client.request(subject.clone(), "".into()),
        )
        .await?
        .map_err(|e| BusError::js("asking the server's time", e))?;
    let after = OffsetDateTime::now_utc();
    let api: ApiResponse = serde_json::from_slice(&response.payload)
        .map_err(|e| BusError::js("reading the server's time", e))?;
    let server_time = match api {
        ApiResponse { ts: Some(ts), .. } => ts,
        ApiResponse { error: Some(e), .. } => {
            return Err(BusError::js(
                "asking the server's time (is the mesh set up? `fleetroll setup`, or `fleetroll up` for its embedded server, creates it)",
                e.description,
            ));
        }
        _ => {
            return Err(BusError::js(
                "asking the server's time",
                "the server sent no timestamp",
            ));
        }
    };
    let local_mid: OffsetDateTime = before + (after - before) / 2;
    let skew: time::Duration = local_mid - server_time;
    Ok(skew.whole_milliseconds() as i64)
}

/// Refuses when the skew exceeds [`MAX_SKEW`].
pub fn check(skew_ms: i64) -> Result<(), SkewError> {
    if skew_ms.unsigned_abs() > MAX_SKEW.as_millis() as u64 {
        Err(SkewError { skew_ms })
    } else {
        Ok(())
    }
}
