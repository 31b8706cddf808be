//! Records of the auth bucket: the public half of the signing key and
//! revocations.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::codec::Message;

/// The public key every worker verifies tokens with. Only the operator who
/// holds the private half (`fleetroll auth init`) publishes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyingKeyRecord {
    /// Ed25519 public key, base64url without padding (the JWK `x`).
    pub public_key: String,
    #[serde(with = "time::serde::rfc3339")]
    pub published_at: OffsetDateTime,
}

impl Message for VerifyingKeyRecord {
    const KIND: &'static str = "verifying_key";
    const VERSION: u16 = 1;
}

/// A revocation: of one token (by its id) or of every token of an actor
/// issued before `revoked_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    #[serde(with = "time::serde::rfc3339")]
    pub revoked_at: OffsetDateTime,
    pub reason: String,
}

impl Message for Revocation {
    const KIND: &'static str = "revocation";
    const VERSION: u16 = 1;
}
