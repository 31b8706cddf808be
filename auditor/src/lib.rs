//! # fleetroll-auditor
//!
//! The worker that remembers (SPEC 7). It turns every command's outcome,
//! accepted or refused, into a signed record chained by hash onto the
//! immutable audit stream; keeps a local redb index of that stream for
//! `audit.list`; and carries out token revocations, so they are audited
//! like any other command.
//!
//! ```no_run
//! # async fn run(bus: fleetroll_bus::Bus) -> Result<(), fleetroll_auditor::AuditorError> {
//! use std::sync::Arc;
//! use fleetroll_auditor::AuditorSettings;
//! use fleetroll_bus::token::SigningKey;
//!
//! let settings = AuditorSettings {
//!     key: Arc::new(SigningKey::from_pem(&std::fs::read_to_string("audit-key.pem").unwrap()).unwrap()),
//!     index: "/var/lib/fleetroll/auditor/index.redb".into(),
//! };
//! fleetroll_auditor::run(bus, settings, tokio::signal::ctrl_c()).await
//! # }
//! ```

mod append;
mod feed;
pub mod index;
mod record;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use fleetroll_bus::codec;
use fleetroll_bus::connect::{Bus, BusError};
use fleetroll_bus::messages::WorkerKind;
use fleetroll_bus::messages::audit::{AuditQuery, key_id};
use fleetroll_bus::messages::auth::{Revocation, VerifyingKeyRecord};
use fleetroll_bus::messages::command::{Command, Reply, RevokeTarget, Verdict};
use fleetroll_bus::query::{QueryError, QueryService};
use fleetroll_bus::subjects::{self, queries};
use fleetroll_bus::token::SigningKey;
use fleetroll_bus::topology::{self, auth_keys};
use fleetroll_bus::worker::{self, CommandContext, Handler, Replica};
use time::OffsetDateTime;

/// What an auditor replica needs besides the bus.
#[derive(Clone)]
pub struct AuditorSettings {
    /// The audit key: records are signed with it. Its public half must be
    /// published on the mesh (`fleetroll auth init` does it).
    pub key: Arc<SigningKey>,
    /// The redb index file (a cache; rebuilt when missing).
    pub index: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditorError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(
        "audit key {key_id} is not published on this mesh, so the records it signs would not verify: publish it from the data dir that holds it (`fleetroll up`, or `fleetroll auth init`)"
    )]
    KeyNotPublished { key_id: String },
}

struct Auditor;

impl Handler for Auditor {
    async fn handle(&self, ctx: &CommandContext, command: &Command) -> Verdict {
        match command {
            Command::TokenRevoke { target, reason } => revoke(ctx, target, reason).await,
            other => Verdict::invalid(format!("the auditor does not execute `{}`", other.name())),
        }
    }
}

async fn revoke(ctx: &CommandContext, target: &RevokeTarget, reason: &str) -> Verdict {
    let key = match target {
        RevokeTarget::Token { jti } => {
            let valid = !jti.is_empty()
                && jti.len() <= 64
                && jti.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !valid {
                return Verdict::invalid(format!("`{jti}` is not a token id"));
            }
            subjects::revoked_token(jti)
        }
        RevokeTarget::Actor { actor } => {
            if actor.is_empty() || actor.len() > 64 {
                return Verdict::invalid(format!("`{actor}` is not an actor name"));
            }
            subjects::revoked_actor(actor)
        }
    };
    let record = Revocation {
        revoked_at: OffsetDateTime::now_utc(),
        reason: reason.to_string(),
    };
    // Appended to the revocation stream, where it stays: its time there,
    // not what it says, is what revokes.
    let written = async {
        ctx.bus
            .js
            .publish(key, codec::to_cbor(&record).into())
            .await
            .map_err(|e| BusError::js("writing the revocation", e))?
            .await
            .map_err(|e| BusError::js("writing the revocation", e))
    };
    match written.await {
        Ok(_) => Verdict::Done {
            reply: Reply::Revoked {
                target: target.clone(),
            },
        },
        Err(e) => Verdict::failed(e),
    }
}

async fn check_key_published(bus: &Bus, key: &SigningKey) -> Result<(), AuditorError> {
    let id = key_id(&key.verifying_key());
    let published = bus
        .kv(&topology::AUTH)
        .await?
        .get(auth_keys::audit_key(&id))
        .await
        .map_err(|e| BusError::js("reading the audit keys", e))?
        .and_then(|bytes| codec::from_cbor::<VerifyingKeyRecord>(&bytes).ok())
        .is_some_and(|record| record.public_key == key.verifying_key().to_base64());
    if published {
        Ok(())
    } else {
        Err(AuditorError::KeyNotPublished { key_id: id })
    }
}

/// Runs one auditor replica until `shutdown` resolves. The streams and
/// buckets must exist (`fleetroll_bus::setup::ensure`).
pub async fn run<S, T>(bus: Bus, settings: AuditorSettings, shutdown: S) -> Result<(), AuditorError>
where
    S: Future<Output = T> + Send,
{
    check_key_published(&bus, &settings.key).await?;
    let replica = Replica::new(bus.clone(), WorkerKind::Auditor);
    let index = Arc::new(index::Index::open(&settings.index));
    let follower = feed::Follower::new(bus.clone(), index);
    let queries = QueryService::start(&replica).await?;
    let f = follower.clone();
    queries
        .serve(queries::AUDIT_LIST, move |_claims, q: AuditQuery| {
            let follower = f.clone();
            async move {
                follower
                    .list(q)
                    .await
                    .map_err(|e| QueryError::Failed(e.to_string()))
            }
        })
        .await?;
    let result = tokio::select! {
        result = worker::run_replica(replica, Arc::new(Auditor), shutdown) => result,
        result = feed::write_records(bus.clone(), settings.key.clone()) => result,
        result = follower.keep_indexed() => result,
    };
    result.map_err(Into::into)
}
