//! The codec: every message travels as `{kind, v, body}`, CBOR on the bus and
//! JSON for chatops bots that ask for it.
//!
//! The `kind` and `v` fields are checked before the body is looked at, so a
//! message from a newer (or older, incompatible) build is refused with an
//! error that names both versions instead of being mis-parsed.
//!
//! ```
//! use fleetroll_bus::codec::{self, DecodeError};
//! use fleetroll_bus::messages::Seed;
//!
//! let seed = Seed { hostname: "h1".into(), added_at: time::OffsetDateTime::UNIX_EPOCH, added_by: "alice".into() };
//! let json = codec::to_json(&seed);
//! assert!(String::from_utf8_lossy(&json).contains(r#""v":1"#));
//! let wrong = br#"{"kind":"seed","v":99,"body":{}}"#;
//! assert!(matches!(codec::from_json::<Seed>(wrong), Err(DecodeError::UnknownVersion { got: 99, .. })));
//! ```

use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// A message type of the wire contract.
pub trait Message: Serialize + DeserializeOwned {
    /// The message's name on the wire (`kind`).
    const KIND: &'static str;
    /// The schema version this build writes and the only one it reads.
    const VERSION: u16;
}

/// Why bytes could not be read as a message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("not a fleetroll message (expected `{expected}`): {detail}")]
    Malformed {
        expected: &'static str,
        detail: String,
    },
    #[error("expected a `{expected}` message, got `{got}`")]
    WrongKind { expected: &'static str, got: String },
    #[error(
        "`{kind}` message has schema version {got}, this build reads only version {supported}; upgrade the older side"
    )]
    UnknownVersion {
        kind: &'static str,
        got: u16,
        supported: u16,
    },
    #[error("`{kind}` v{version} message has an invalid body: {detail}")]
    BadBody {
        kind: &'static str,
        version: u16,
        detail: String,
    },
}

#[derive(Serialize)]
struct Outgoing<'a, T> {
    kind: &'static str,
    v: u16,
    body: &'a T,
}

#[derive(Deserialize)]
struct Incoming<B> {
    kind: String,
    v: u16,
    body: B,
}

fn outgoing<T: Message>(message: &T) -> Outgoing<'_, T> {
    Outgoing {
        kind: T::KIND,
        v: T::VERSION,
        body: message,
    }
}

fn check_header<T: Message, B>(incoming: &Incoming<B>) -> Result<(), DecodeError> {
    if incoming.kind != T::KIND {
        return Err(DecodeError::WrongKind {
            expected: T::KIND,
            got: incoming.kind.clone(),
        });
    }
    if incoming.v != T::VERSION {
        return Err(DecodeError::UnknownVersion {
            kind: T::KIND,
            got: incoming.v,
            supported: T::VERSION,
        });
    }
    Ok(())
}

fn bad_body<T: Message>(detail: impl ToString) -> DecodeError {
    DecodeError::BadBody {
        kind: T::KIND,
        version: T::VERSION,
        detail: detail.to_string(),
    }
}

/// Encodes a message as CBOR.
pub fn to_cbor<T: Message>(message: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail and every message type is plain data.
    ciborium::into_writer(&outgoing(message), &mut out).expect("CBOR encoding into memory");
    out
}

/// Decodes a CBOR message, checking its kind and schema version first.
pub fn from_cbor<T: Message>(bytes: &[u8]) -> Result<T, DecodeError> {
    // The header first, the body skipped unread; then the body straight
    // into its type (no intermediate value tree: a page of 2,000 hosts
    // decodes in half the time).
    let header: Incoming<serde::de::IgnoredAny> =
        whole_cbor(bytes).map_err(|detail| DecodeError::Malformed {
            expected: T::KIND,
            detail,
        })?;
    check_header::<T, _>(&header)?;
    let incoming: Incoming<T> = whole_cbor(bytes).map_err(bad_body::<T>)?;
    Ok(incoming.body)
}

/// Reads the one CBOR item `bytes` must be: anything after it would be
/// ignored otherwise, and a payload with more than the message in it is not
/// that message (JSON refuses trailing data the same way).
fn whole_cbor<V: DeserializeOwned>(bytes: &[u8]) -> Result<V, String> {
    let mut rest = bytes;
    let value = ciborium::from_reader(&mut rest).map_err(|e| e.to_string())?;
    match rest.len() {
        0 => Ok(value),
        n => Err(format!("{n} bytes follow the message")),
    }
}

/// Encodes a message as JSON (for chatops bots and `--json`).
pub fn to_json<T: Message>(message: &T) -> Vec<u8> {
    serde_json::to_vec(&outgoing(message)).expect("JSON encoding into memory")
}

/// Decodes a JSON message, checking its kind and schema version first.
pub fn from_json<T: Message>(bytes: &[u8]) -> Result<T, DecodeError> {
    let incoming: Incoming<serde_json::Value> =
        serde_json::from_slice(bytes).map_err(|e| DecodeError::Malformed {
            expected: T::KIND,
            detail: e.to_string(),
        })?;
    check_header::<T, _>(&incoming)?;
    serde_json::from_value(incoming.body).map_err(bad_body::<T>)
}
