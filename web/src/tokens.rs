//! The token the web server asks the mesh's read queries with.

use std::sync::Mutex;

use fleetroll_bus::token::{self, Role, SigningKey};
use time::{Duration, OffsetDateTime};

/// Where the server's own token comes from.
pub enum TokenSource {
    /// A token given to the server; when it expires, answers say so.
    Fixed(String),
    /// Short-lived readonly tokens issued as needed with the operator's
    /// signing key (the key of `fleetroll up`'s data dir), so a server that
    /// runs for weeks never holds a stale or powerful one.
    Minted {
        key: Box<SigningKey>,
        current: Mutex<Option<(String, OffsetDateTime)>>,
    },
}

/// How long a minted token lives, and how long before its end a new one is
/// issued.
const MINTED_FOR: Duration = Duration::hours(1);
const RENEW_BEFORE: Duration = Duration::minutes(10);

/// The name minted tokens carry, which is what the workers log.
const ACTOR: &str = "fleetroll-web";

impl TokenSource {
    pub fn minted(key: SigningKey) -> TokenSource {
        TokenSource::Minted {
            key: Box::new(key),
            current: Mutex::new(None),
        }
    }

    /// A token good for a while yet.
    pub fn token(&self) -> Result<String, token::KeyError> {
        match self {
            TokenSource::Fixed(token) => Ok(token.clone()),
            TokenSource::Minted { key, current } => {
                let now = OffsetDateTime::now_utc();
                let mut current = current.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((jwt, expires)) = current.as_ref()
                    && *expires - RENEW_BEFORE > now
                {
                    return Ok(jwt.clone());
                }
                let (jwt, claims) = token::issue(key, ACTOR, Role::Readonly, MINTED_FOR, now)?;
                let expires =
                    OffsetDateTime::from_unix_timestamp(claims.exp).unwrap_or(now + MINTED_FOR);
                *current = Some((jwt.clone(), expires));
                Ok(jwt)
            }
        }
    }
}
