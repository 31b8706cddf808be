//! Token checks as every worker performs them before it acts: clock guard,
//! signature and expiry against the process's own trust root, revocation,
//! then role.
//!
//! The verifying key comes from the worker's own data dir or configuration
//! ([`TrustRoot`]), never from a bucket: any credential that may write the
//! bucket could otherwise install its own key and mint tokens for anyone.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use time::OffsetDateTime;

use crate::codec;
use crate::connect::{Bus, BusError};
use crate::messages::auth::Revocation;
use crate::messages::command::Denial;
use crate::subjects;
use crate::token::{self, Claims, Role, VerifyingKey};
use crate::topology::{self, auth_keys};

/// Which token signer a process trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustRoot {
    Key(VerifyingKey),
    /// The key in this file (base64, as `fleetroll auth init` writes it),
    /// read at each check: a key copied in after the worker started is
    /// used, and a file that cannot be read refuses every token.
    File(PathBuf),
}

impl TrustRoot {
    /// The verifying key; a refusal when it cannot be had.
    pub fn key(&self) -> Result<VerifyingKey, Denial> {
        match self {
            TrustRoot::Key(key) => Ok(key.clone()),
            TrustRoot::File(path) => {
                let untrusted = |why: String| Denial::NoTrustRoot {
                    detail: format!(
                        "{} {why} (`fleetroll auth init` writes it; copy it from the data dir that has the signing key)",
                        path.display()
                    ),
                };
                let text = std::fs::read_to_string(path)
                    .map_err(|e| untrusted(format!("cannot be read: {e}")))?;
                VerifyingKey::from_base64(text.trim())
                    .map_err(|e| untrusted(format!("holds no verifying key: {e}")))
            }
        }
    }
}

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

    /// When the token, or its actor, was revoked after the token was
    /// issued: the time the server stored the latest revocation on either
    /// subject (the message itself says nothing that counts, and no one may
    /// remove one). A revocation stream that cannot be read refuses.
    async fn revoked_since(&self, claims: &Claims) -> Result<Option<OffsetDateTime>, BusError> {
        use async_nats::jetstream::stream::DirectGetErrorKind;
        let stream = self
            .bus
            .js
            .get_stream_no_info(topology::REVOCATIONS.name)
            .await
            .map_err(|e| BusError::js("reading revocations", e))?;
        let mut latest: Option<OffsetDateTime> = None;
        for subject in [
            subjects::revoked_token(&claims.jti),
            subjects::revoked_actor(&claims.sub),
        ] {
            match stream.direct_get_last_for_subject(subject).await {
                Ok(message) => latest = latest.max(Some(message.time)),
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => {}
                Err(e) => return Err(BusError::js("reading revocations", e)),
            }
        }
        Ok(latest.filter(|at| at.unix_timestamp() >= claims.iat))
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
        let key = match self.bus.trust_root() {
            Some(root) => root.key()?,
            None => {
                return Err(Denial::NoTrustRoot {
                    detail: "it was started without a verifying key".into(),
                }
                .into());
            }
        };
        let auth = self.bus.kv(&topology::AUTH).await?;
        let claims = token::decode(jwt, &key)?;
        let genuine = |denial: Denial| VerifyError::Denied {
            denial,
            actor: Some(claims.sub.clone()),
        };
        token::check_expiry(&claims, OffsetDateTime::now_utc()).map_err(genuine)?;
        if let Some(revoked_at) = self.revoked_since(&claims).await? {
            return Err(genuine(Denial::Revoked {
                jti: claims.jti.clone(),
                revoked_at: crate::messages::timestamp(revoked_at),
            }));
        }
        // Revocations an older version kept in the auth bucket: they can
        // only add a refusal (and no user may write them any more).
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
