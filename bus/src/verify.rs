//! Token checks as every worker performs them before it acts: clock guard,
//! signature and expiry against the published verifying key, revocation,
//! then role.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use time::OffsetDateTime;

use crate::codec;
use crate::connect::{Bus, BusError};
use crate::messages::auth::{Revocation, VerifyingKeyRecord};
use crate::messages::command::Denial;
use crate::token::{self, Claims, Role, VerifyingKey};
use crate::topology::{self, auth_keys};

/// Checks tokens for one worker replica. Cheap to clone.
#[derive(Clone)]
pub struct Verifier {
    bus: Bus,
    /// Last measured local-minus-server clock skew; kept fresh by the
    /// worker's heartbeat loop.
    skew_ms: Arc<AtomicI64>,
}

/// A refusal, or a failure to check at all.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// `actor` is known when the token was genuine (expired, revoked, or
    /// of the wrong role).
    #[error("{denial}")]
    Denied {
        denial: Denial,
        actor: Option<String>,
    },
    #[error(transparent)]
    Bus(#[from] BusError),
}

impl From<Denial> for VerifyError {
    fn from(denial: Denial) -> Self {
        VerifyError::Denied {
            denial,
            actor: None,
        }
    }
}

impl Verifier {
    pub fn new(bus: Bus) -> Self {
        Verifier {
            bus,
            skew_ms: Arc::new(AtomicI64::new(0)),
        }
    }

    pub fn record_skew(&self, skew_ms: i64) {
        self.skew_ms.store(skew_ms, Ordering::Relaxed);
    }

    pub fn skew_ms(&self) -> i64 {
        self.skew_ms.load(Ordering::Relaxed)
    }

    /// Verifies `jwt` and that its role is one of `allowed` for `action`.
    pub async fn check(
        &self,
        jwt: &str,
        allowed: &[Role],
        action: &str,
    ) -> Result<Claims, VerifyError> {
        let skew_ms = self.skew_ms();
        if crate::clock::check(skew_ms).is_err() {
            return Err(Denial::ClockSkew { skew_ms }.into());
        }
        let auth = self.bus.kv(&topology::AUTH).await?;
        let key = match auth
            .get(auth_keys::VERIFYING_KEY)
            .await
            .map_err(|e| BusError::js("reading the verifying key", e))?
        {
            None => return Err(Denial::NoSigningKey.into()),
            Some(bytes) => {
                let record: VerifyingKeyRecord =
                    codec::from_cbor(&bytes).map_err(|source| BusError::Decode {
                        place: "the verifying key record".into(),
                        source,
                    })?;
                VerifyingKey::from_base64(&record.public_key).map_err(|_| Denial::NoSigningKey)?
            }
        };
        let claims = token::decode(jwt, &key)?;
        let genuine = |denial: Denial| VerifyError::Denied {
            denial,
            actor: Some(claims.sub.clone()),
        };
        token::check_expiry(&claims, OffsetDateTime::now_utc()).map_err(genuine)?;
        for revocation_key in [
            auth_keys::revoked_token(&claims.jti),
            auth_keys::revoked_actor(&claims.sub),
        ] {
            let Some(bytes) = auth
                .get(revocation_key.as_str())
                .await
                .map_err(|e| BusError::js("reading revocations", e))?
            else {
                continue;
            };
            let revocation: Revocation =
                codec::from_cbor(&bytes).map_err(|source| BusError::Decode {
                    place: format!("revocation {revocation_key}"),
                    source,
                })?;
            if revocation.revoked_at.unix_timestamp() >= claims.iat {
                return Err(genuine(Denial::Revoked {
                    jti: claims.jti.clone(),
                    revoked_at: crate::messages::timestamp(revocation.revoked_at),
                }));
            }
        }
        if !allowed.contains(&claims.role) {
            return Err(genuine(Denial::WrongRole {
                role: claims.role.to_string(),
                action: action.to_string(),
                allowed: allowed
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }));
        }
        Ok(claims)
    }
}
