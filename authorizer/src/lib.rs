//! nats-server's auth callout for fleetroll: the server asks this service
//! about every connection but its own (`auth_users`), and a connection's
//! fleetroll token (`auth_token`) is its NATS identity. The token is checked
//! as every worker checks it (signature against this process's trust root,
//! expiry, revocation); the answer is a user JWT with the permissions of
//! the token's role, as `nats-config/permissions.conf` gives them, that
//! expires with the token or after `session`, whichever is first. A revoked
//! operator is refused at the next connect, and an open connection ends
//! when its session does (async-nats then reconnects, and is asked again).

pub mod jwt;
pub mod permissions;

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use fleetroll_bus::connect::Bus;
use fleetroll_bus::token::Role;
use fleetroll_bus::verify::{Verifier, VerifyError};
use futures::StreamExt;
use time::OffsetDateTime;
use tracing::{info, warn};

use crate::permissions::Permissions;

/// The subject nats-server asks on.
pub const REQUESTS: &str = "$SYS.REQ.USER.AUTH";

/// How often the clock is compared with the server's.
const CLOCK_CHECK: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum AuthorizerError {
    #[error(transparent)]
    Permissions(#[from] permissions::PermissionsError),
    #[error("cannot listen for authorization requests: {0}")]
    Subscribe(#[source] async_nats::SubscribeError),
}

/// What the service needs.
pub struct Authorizer {
    /// The account key that signs users (its public half is the server's
    /// `auth_callout { issuer }`).
    pub issuer: nkeys::KeyPair,
    /// The longest a connection lives before it is asked about again.
    pub session: Duration,
}

/// Answers authorization requests until `shutdown` resolves.
pub async fn run(
    bus: Bus,
    authorizer: Authorizer,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AuthorizerError> {
    let roles = permissions::from_config(fleetroll_nats_config::PERMISSIONS)?;
    let verifier = Verifier::new(bus.clone());
    let mut requests = bus
        .client
        .queue_subscribe(REQUESTS, "fleetroll-authorizer".into())
        .await
        .map_err(AuthorizerError::Subscribe)?;
    info!(issuer = %authorizer.issuer.public_key(), "answering NATS authorization requests");
    // Expiry is judged by this machine's clock: the guard a worker keeps
    // (refuse every token while the clock is off the server's) runs here too.
    let mut clock = tokio::time::interval(CLOCK_CHECK);
    tokio::pin!(shutdown);
    loop {
        let request = tokio::select! {
            request = requests.next() => match request {
                Some(request) => request,
                None => return Ok(()),
            },
            _ = clock.tick() => {
                match fleetroll_bus::clock::measure_skew_ms(&bus).await {
                    Ok(skew_ms) => verifier.record_skew(skew_ms),
                    Err(e) => warn!(error = %e, "could not compare this clock with the server's"),
                }
                continue;
            }
            _ = &mut shutdown => return Ok(()),
        };
        let Some(reply) = request.reply.clone() else {
            continue;
        };
        let Some(answer) = answer(&authorizer, &roles, &verifier, &request.payload).await else {
            warn!("an authorization request that is not one");
            continue;
        };
        if let Err(e) = bus.client.publish(reply, answer.into()).await {
            warn!(error = %e, "could not answer an authorization request");
        }
    }
}

/// Why a bound token presented without its holder key's signature is
/// refused.
const NOT_POSSESSED: &str = "the token is bound to a holder key, and the connection did not sign the server's nonce with it (connect with --token-file FILE, its key in FILE.key)";

/// Whether a connection may use `claims`' token: a bearer token always; a
/// token bound to a holder key (`cnf`) only with that key's signature of
/// the server's nonce (base64url, as nats-server passes `sig`). No nonce,
/// no proof: the server must send one (callout.conf's nkey user sees to it).
fn proves_possession(claims: &fleetroll_bus::token::Claims, nonce: &str, sig: &str) -> bool {
    let Some(holder) = &claims.cnf else {
        return true;
    };
    !nonce.is_empty()
        && fleetroll_bus::token::VerifyingKey::from_base64(holder)
            .is_ok_and(|key| key.verify_base64(nonce.as_bytes(), sig))
}

/// The signed answer to one request; none for one that cannot be read.
async fn answer(
    authorizer: &Authorizer,
    roles: &HashMap<Role, Permissions>,
    verifier: &Verifier,
    request: &[u8],
) -> Option<String> {
    let claims = jwt::claims(std::str::from_utf8(request).ok()?)?;
    let nats = &claims["nats"];
    let user_nkey = nats["user_nkey"].as_str()?;
    let server = nats["server_id"]["id"].as_str()?;
    let token = nats["connect_opts"]["auth_token"].as_str().unwrap_or("");
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let verdict = match verifier.check(token, &Role::ALL, "connect to NATS").await {
        Ok(claims)
            if !proves_possession(
                &claims,
                nats["client_info"]["nonce"].as_str().unwrap_or(""),
                nats["connect_opts"]["sig"].as_str().unwrap_or(""),
            ) =>
        {
            warn!(actor = %claims.sub, "NATS connection refused: a bound token without its holder key");
            Err(NOT_POSSESSED.to_string())
        }
        Ok(claims) => {
            let session_end = now + authorizer.session.as_secs() as i64;
            let user = jwt::user(
                user_nkey,
                &claims.sub,
                claims.exp.min(session_end),
                now,
                &roles[&claims.role].for_holder(&claims),
            );
            info!(actor = %claims.sub, role = %claims.role, "NATS connection authorized");
            jwt::encode(user, &authorizer.issuer).map_err(|e| e.to_string())
        }
        Err(VerifyError::Denied { denial, actor }) => {
            warn!(actor = ?actor, reason = %denial, "NATS connection refused");
            Err(denial.to_string())
        }
        // Fail closed: a token that cannot be checked connects no one.
        Err(VerifyError::Bus(e)) => Err(format!("the token cannot be checked: {e}")),
    };
    let response = jwt::response(user_nkey, server, now, verdict);
    jwt::encode(response, &authorizer.issuer).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use fleetroll_bus::token::{Claims, SigningKey};

    fn claims(cnf: Option<String>) -> Claims {
        Claims {
            sub: "alice".into(),
            role: Role::Relops,
            jti: "j".into(),
            iss: "fleetroll".into(),
            iat: 0,
            exp: 1,
            cnf,
        }
    }

    fn sig(key: &SigningKey, nonce: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.sign(nonce.as_bytes()))
    }

    /// A bound token connects only with its holder's signature of this
    /// connection's nonce; a bearer token needs none.
    #[test]
    fn a_bound_token_needs_its_holders_signature_of_the_nonce() {
        let holder = SigningKey::generate();
        let bound = claims(Some(holder.verifying_key().to_base64()));
        assert!(proves_possession(&bound, "n0nce", &sig(&holder, "n0nce")));
        assert!(!proves_possession(&bound, "n0nce", ""), "no signature");
        assert!(
            !proves_possession(&bound, "other", &sig(&holder, "n0nce")),
            "another connection's signature"
        );
        let stranger = SigningKey::generate();
        assert!(!proves_possession(
            &bound,
            "n0nce",
            &sig(&stranger, "n0nce")
        ));
        assert!(
            !proves_possession(&bound, "", &sig(&holder, "")),
            "no nonce"
        );
        assert!(!proves_possession(&bound, "n0nce", "not base64!"));
        assert!(proves_possession(&claims(None), "", ""));
    }
}
