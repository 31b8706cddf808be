//! Quarantining a host's worker in Taskcluster, and lifting it: the
//! worker is the one the latest sweep found for the host, and the
//! operator's name goes into Taskcluster's own quarantine note, since
//! Taskcluster sees only fleetroll's client.

use fleetroll_bus::codec;
use fleetroll_bus::messages::command::{Denial, Reply, Verdict};
use fleetroll_bus::messages::workload::{Quarantine, Workload};
use fleetroll_bus::topology;
use fleetroll_bus::worker::CommandContext;
use time::OffsetDateTime;
use tracing::warn;

use crate::hosts;
use crate::workload::{SourceError, Taskcluster, WorkerRef};

/// Taskcluster's limit on a quarantine note.
const NOTE_LIMIT: usize = 4000;

/// Quarantines the host's worker until `until`, or lifts its quarantine
/// when `until` is `None`.
pub async fn set(
    ctx: &CommandContext,
    source: Option<&Taskcluster>,
    hostname: &str,
    until: Option<OffsetDateTime>,
    reason: Option<&str>,
) -> Verdict {
    let now = OffsetDateTime::now_utc();
    let note = match (until, reason) {
        (Some(until), _) if until <= now => {
            return Verdict::invalid(format!(
                "the quarantine would end at {until}, which is past; `host unquarantine` lifts one"
            ));
        }
        (Some(_), Some(reason)) if reason.trim().is_empty() => {
            return Verdict::invalid("say why the worker is quarantined (--reason)");
        }
        (Some(_), Some(reason)) => format!("{reason} (by {} with fleetroll)", ctx.actor),
        _ => format!("lifted by {} with fleetroll", ctx.actor),
    };
    if note.chars().count() > NOTE_LIMIT {
        return Verdict::invalid(format!(
            "the reason is too long for Taskcluster's quarantine note ({NOTE_LIMIT} characters with the operator's name)"
        ));
    }
    let known = hosts::known_hosts(&ctx.bus, &[hostname.to_string()]).await;
    let name = match known.map(|names| names.into_iter().next()) {
        Ok(Some(name)) => name,
        Ok(None) => return Verdict::invalid("no host given"),
        Err(verdict) => return verdict,
    };
    let Some(source) = source else {
        return Verdict::Refused {
            message: "no workload source is configured: quarantines are set in Taskcluster ([workload] in fleetroll.toml)".into(),
        };
    };
    let store = match ctx.bus.kv(&topology::WORKLOAD).await {
        Ok(store) => store,
        Err(e) => return Verdict::failed(e),
    };
    let entry = match store.entry(&name).await {
        Ok(entry) => entry,
        Err(e) => return Verdict::failed(format!("reading the workload of {name}: {e}")),
    };
    let record = entry
        .as_ref()
        .and_then(|e| codec::from_cbor::<Workload>(&e.value).ok());
    let worker = record.as_ref().and_then(|w| {
        Some(WorkerRef {
            pool: w.worker_pool.clone()?,
            group: w.worker_group.clone()?,
            worker_id: w.worker_id.clone(),
        })
    });
    let Some(worker) = worker else {
        return Verdict::invalid(format!(
            "Taskcluster has no worker for {name} (none found at the latest workload sweep)"
        ));
    };
    let holds_until = match source
        .quarantine(&worker, until.unwrap_or(now), &note)
        .await
    {
        Ok(holds_until) => holds_until,
        Err(e @ (SourceError::NoCredentials { .. } | SourceError::NotAuthorized { .. })) => {
            return Verdict::Denied {
                denial: Denial::WorkloadSource {
                    detail: e.to_string(),
                },
            };
        }
        Err(e @ SourceError::UnknownWorker(_)) => return Verdict::invalid(e.to_string()),
        Err(e) => return Verdict::failed(e),
    };
    // Shown at once rather than at the next sweep, which then rereads it.
    if let (Some(entry), Some(mut record)) = (entry, record) {
        record.quarantine = until.map(|until| Quarantine {
            until: holds_until.unwrap_or(until),
            by: source.client_id().map(str::to_string),
            at: Some(now),
            reason: Some(note.clone()),
        });
        if let Err(e) = store
            .update(&name, codec::to_cbor(&record).into(), entry.revision)
            .await
        {
            warn!(host = %name, error = %e, "quarantine set; the workload record waits for the next sweep");
        }
    }
    let worker = worker.to_string();
    Verdict::Done {
        reply: match until {
            Some(until) => Reply::Quarantined {
                hostname: name,
                worker,
                until: holds_until.unwrap_or(until),
            },
            None => Reply::Unquarantined {
                hostname: name,
                worker,
            },
        },
    }
}
