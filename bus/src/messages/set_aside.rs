//! Messages the mesh gave up on (SPEC 10: a malformed or poisoned message is
//! set aside and shown, never retried forever). nats-server announces each
//! on the set-aside stream ([`crate::topology::SET_ASIDE`]) as a JSON
//! advisory: a worker terminated it with a reason (it could not be read, or
//! was malformed), or its consumer delivered it `max_deliver` times and no
//! worker ever acknowledged it.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The advisory type of a message a worker terminated.
pub const TERMINATED: &str = "io.nats.jetstream.advisory.v1.terminated";
/// The advisory type of a message whose deliveries ran out.
pub const MAX_DELIVERIES: &str = "io.nats.jetstream.advisory.v1.max_deliver";

/// One message given up on, as the server announced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetAside {
    /// [`TERMINATED`] or [`MAX_DELIVERIES`].
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    /// Where the message is: its stream and sequence there.
    pub stream: String,
    pub stream_seq: u64,
    /// The durable consumer that gave up on it.
    pub consumer: String,
    pub deliveries: u64,
    /// Why, for a terminated message.
    #[serde(default)]
    pub reason: Option<String>,
}

impl SetAside {
    /// Reads an advisory as nats-server publishes it.
    ///
    /// ```
    /// use fleetroll_bus::messages::set_aside::SetAside;
    /// let advisory = br#"{"type":"io.nats.jetstream.advisory.v1.terminated","id":"x","timestamp":"2026-12-01T21:25:51.6Z","stream":"FLEETROLL_CMD","consumer":"worker-prober","consumer_seq":1,"stream_seq":7,"deliveries":1,"reason":"the command id is not a UUID"}"#;
    /// let set_aside = SetAside::parse(advisory).unwrap();
    /// assert_eq!(set_aside.why(), "terminated: the command id is not a UUID");
    /// ```
    pub fn parse(json: &[u8]) -> Result<SetAside, serde_json::Error> {
        serde_json::from_slice(json)
    }

    /// Why it was given up on, as people read it.
    pub fn why(&self) -> String {
        match (&self.reason, self.kind.as_str()) {
            (Some(reason), _) => format!("terminated: {reason}"),
            (None, MAX_DELIVERIES) => {
                format!("delivered {} times and never acknowledged", self.deliveries)
            }
            (None, _) => "terminated".to_string(),
        }
    }
}
