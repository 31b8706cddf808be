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
    let roles = permissions::from_config(fleetroll_bus::embedded::PERMISSIONS_CONFIG)?;
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
