//! Leases on side effects (SPEC 10: an override write, a converge, a
//! reboot runs at most once even when its command or job is redelivered).
//! A replica that stalls past the one-second takeover (a NATS election
//! takes longer) has what it holds handed to another replica; before
//! touching a host, each takes a lease, a compare-and-swap `create` in the
//! leases bucket ([`topology::LEASES`]), and one that cannot does not act.
//!
//! A lease holds for its time to live after the entry's server-side
//! timestamp, judged on the server's clock (the measured skew taken off),
//! so replicas with different clocks agree on when it lapses. The holder
//! renews it while it works ([`hold`]), so one that dies is known within
//! the time to live, not after the longest the work could take. A host
//! lease is released when the work is done; a command's is left to lapse,
//! and says the command ran.

use std::time::Duration;

use async_nats::jetstream::kv;
use time::OffsetDateTime;

use crate::codec;
use crate::connect::{Bus, BusError};
use crate::messages::command::LeaseRecord;
use crate::topology;

/// A lease this replica holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub key: String,
    revision: u64,
}

/// What became of a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Ours: act.
    Taken(Lease),
    /// Someone else's, holding until `until` (server time).
    Held {
        holder: String,
        until: OffsetDateTime,
    },
    /// Someone else's that lapsed at `since`: its holder died or hung.
    /// [`take_over`] with `revision` makes it ours.
    Lapsed {
        holder: String,
        since: OffsetDateTime,
        revision: u64,
    },
}

async fn leases(bus: &Bus) -> Result<kv::Store, BusError> {
    bus.kv(&topology::LEASES).await
}

fn record(holder: &str, ttl: Duration) -> bytes::Bytes {
    codec::to_cbor(&LeaseRecord {
        holder: holder.to_string(),
        ttl_ms: ttl.as_millis() as u64,
    })
    .into()
}

/// Claims `key` for `holder`, for `ttl`. A lease that cannot be read is an
/// error, never "free": nothing acts on a host it cannot account for.
pub async fn claim(bus: &Bus, key: &str, holder: &str, ttl: Duration) -> Result<Claim, BusError> {
    let store = leases(bus).await?;
    loop {
        match store.create(key, record(holder, ttl)).await {
            Ok(revision) => {
                return Ok(Claim::Taken(Lease {
                    key: key.to_string(),
                    revision,
                }));
            }
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(BusError::js("taking a lease", e)),
        }
        let Some(entry) = store
            .entry(key)
            .await
            .map_err(|e| BusError::js("reading a lease", e))?
        else {
            // Released meanwhile: claim again.
            continue;
        };
        if entry.operation != kv::Operation::Put {
            continue;
        }
        let held: LeaseRecord =
            codec::from_cbor(&entry.value).map_err(|source| BusError::Decode {
                place: format!("lease {key}"),
                source,
            })?;
        let created: OffsetDateTime = entry.created;
        let until = created + Duration::from_millis(held.ttl_ms);
        let skew_ms = crate::clock::measure_skew_ms(bus).await?;
        let server_now = OffsetDateTime::now_utc() - time::Duration::milliseconds(skew_ms);
        return Ok(if until > server_now {
            Claim::Held {
                holder: held.holder,
                until,
            }
        } else {
            Claim::Lapsed {
                holder: held.holder,
                since: until,
                revision: entry.revision,
            }
        });
    }
}

/// Takes over a lapsed lease (see [`Claim::Lapsed`]); none when another
/// replica took it first.
pub async fn take_over(
    bus: &Bus,
    key: &str,
    revision: u64,
    holder: &str,
    ttl: Duration,
) -> Result<Option<Lease>, BusError> {
    match leases(bus)
        .await?
        .update(key, record(holder, ttl), revision)
        .await
    {
        Ok(revision) => Ok(Some(Lease {
            key: key.to_string(),
            revision,
        })),
        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
        Err(e) => Err(BusError::js("taking over a lease", e)),
    }
}

/// Holds the lease for another `ttl` from now. Fails when it is no longer
/// ours (it lapsed and was taken over).
pub async fn renew(
    bus: &Bus,
    lease: &mut Lease,
    holder: &str,
    ttl: Duration,
) -> Result<(), BusError> {
    lease.revision = leases(bus)
        .await?
        .update(&lease.key, record(holder, ttl), lease.revision)
        .await
        .map_err(|e| BusError::js("renewing a lease", e))?;
    Ok(())
}

/// Gives the lease up, unless it is no longer ours.
pub async fn release(bus: &Bus, lease: Lease) -> Result<(), BusError> {
    match leases(bus)
        .await?
        .delete_expect_revision(&lease.key, Some(lease.revision))
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == kv::DeleteErrorKind::WrongLastRevision => Ok(()),
        Err(e) => Err(BusError::js("releasing a lease", e)),
    }
}

/// Runs `work` while holding `lease`, renewing it four times per `ttl`,
/// so that it lapses only if this replica dies or loses NATS for `ttl`.
pub async fn hold<F: std::future::Future>(
    bus: &Bus,
    lease: &mut Lease,
    holder: &str,
    ttl: Duration,
    work: F,
) -> F::Output {
    tokio::pin!(work);
    let mut tick = tokio::time::interval(ttl / 4);
    tick.tick().await;
    loop {
        tokio::select! {
            output = &mut work => return output,
            _ = tick.tick() => {
                if let Err(e) = renew(bus, lease, holder, ttl).await {
                    tracing::warn!(lease = %lease.key, error = %e, "lease not renewed");
                }
            }
        }
    }
}
