//! Host commands and queries: refresh, repin, list, show.

use fleetroll_bus::codec;
use fleetroll_bus::connect::{Bus, BusError};
use fleetroll_bus::filter::Query;
use fleetroll_bus::hostname;
use fleetroll_bus::messages::command::{ProbeSummary, Reply, Verdict};
use fleetroll_bus::messages::host::{HostHistory, HostList, HostQuery, HostRecord, Observation};
use fleetroll_bus::query::QueryError;
use fleetroll_bus::worker::CommandContext;
use fleetroll_bus::{subjects, topology};
use futures::StreamExt;
use tracing::info;

use crate::fleet::Fleet;
use crate::{jobs, seeds};
use fleetroll_bus::host_index::{HostIndex, IndexError};

/// Queues a probe of each host and waits until all of them have a fresh
/// observation, whichever prober replicas do the work. Redelivered (the
/// replica died), it queues nothing twice and waits again.
pub async fn refresh(ctx: &CommandContext, hostnames: &[String], all: bool, fast: bool) -> Verdict {
    let targets = if all {
        match seeds::list(&ctx.bus).await {
            Ok(list) => list.seeds.into_iter().map(|s| s.hostname).collect(),
            Err(e) => {
                return Verdict::failed(e);
            }
        }
    } else {
        match known_hosts(&ctx.bus, hostnames).await {
            Ok(names) => names,
            Err(verdict) => return verdict,
        }
    };
    let hosts = match wait_for_probes(&ctx.bus, &targets, &ctx.command_id, ctx.sent_at, fast).await
    {
        Ok(hosts) => hosts,
        Err(e) => {
            return Verdict::failed(e);
        }
    };
    info!(
        hosts = hosts.len(),
        failed = hosts.iter().filter(|h| !h.ok).count(),
        "refresh done"
    );
    Verdict::Done {
        reply: Reply::Refreshed { hosts },
    }
}

/// A host counts as refreshed by a probe this command asked for, or by any
/// probe since the command was sent (which a redelivered command, taken
/// over from a replica that died, finds already done).
async fn wait_for_probes(
    bus: &Bus,
    targets: &[String],
    origin: &str,
    sent_at: time::OffsetDateTime,
    fast: bool,
) -> Result<Vec<ProbeSummary>, BusError> {
    let store = bus.kv(&topology::HOSTS).await?;
    let fresh = |o: &Observation| {
        o.probed_for.as_deref() == Some(origin) || o.probed_at.is_some_and(|t| t >= sent_at)
    };
    let watch_error =
        |e: Box<dyn std::error::Error + Send + Sync>| BusError::js("watching hosts", e);
    // Watching before queueing: no observation can slip past.
    let mut updates = store.watch_all().await.map_err(|e| watch_error(e.into()))?;
    jobs::enqueue(bus, targets, origin, fast).await?;
    let mut pending: std::collections::BTreeSet<&str> =
        targets.iter().map(String::as_str).collect();
    let mut done = std::collections::BTreeMap::new();
    // An observation newer than the start may already be there (a
    // redelivered command, a scheduled probe that just ran).
    for chunk in targets.chunks(64) {
        let current = futures::future::join_all(chunk.iter().map(|name| store.get(name))).await;
        for (name, bytes) in chunk.iter().zip(current) {
            if let Ok(Some(bytes)) = bytes
                && let Ok(o) = codec::from_cbor::<Observation>(&bytes)
                && fresh(&o)
            {
                pending.remove(name.as_str());
                done.insert(name.clone(), o);
            }
        }
    }
    while !pending.is_empty() {
        let Some(entry) = updates.next().await else {
            return Err(watch_error("the watch ended".into()));
        };
        let entry = entry.map_err(|e| watch_error(e.into()))?;
        if !pending.contains(entry.key.as_str()) {
            continue;
        }
        if entry.operation != async_nats::jetstream::kv::Operation::Put {
            // Removed from the inventory while the refresh ran.
            pending.remove(entry.key.as_str());
            continue;
        }
        if let Ok(o) = codec::from_cbor::<Observation>(&entry.value)
            && fresh(&o)
        {
            pending.remove(entry.key.as_str());
            done.insert(entry.key.clone(), o);
        }
    }
    Ok(done
        .into_values()
        .map(|o| ProbeSummary {
            ok: o.last_error.is_none(),
            error: o.last_error,
            hostname: o.hostname,
        })
        .collect())
}

pub async fn repin(ctx: &CommandContext, fleet: &Fleet, hostname: &str) -> Verdict {
    let names = match known_hosts(&ctx.bus, &[hostname.to_string()]).await {
        Ok(names) => names,
        Err(verdict) => return verdict,
    };
    match fleet.repin(&names[0]).await {
        Ok(()) => Verdict::Done {
            reply: Reply::Repinned {
                hostname: names[0].clone(),
            },
        },
        Err(e) => Verdict::failed(e),
    }
}

/// Pins what a known_hosts file says about the inventory's hosts and the
/// jump hosts in front of them.
pub async fn pin_import(ctx: &CommandContext, fleet: &Fleet, text: &str, file: &str) -> Verdict {
    let seeds = match seeds::list(&ctx.bus).await {
        Ok(list) => list
            .seeds
            .into_iter()
            .map(|s| s.hostname)
            .collect::<Vec<_>>(),
        Err(e) => return Verdict::failed(e),
    };
    match fleet
        .pool()
        .import_known_hosts(text, file, &seeds, true)
        .await
    {
        Ok(pins) => {
            info!(pins = pins.len(), file, "known_hosts imported");
            Verdict::Done {
                reply: Reply::PinsImported { pins },
            }
        }
        Err(e @ fleetroll_ssh::pool::RunError::KnownHosts(_)) => Verdict::invalid(e.to_string()),
        Err(e) => Verdict::failed(e),
    }
}

/// Checks that every name is a seed; an unknown one refuses the whole
/// command.
pub(crate) async fn known_hosts(bus: &Bus, hostnames: &[String]) -> Result<Vec<String>, Verdict> {
    let seeds = seeds::list(bus).await.map_err(Verdict::failed)?;
    let mut names = Vec::new();
    let mut unknown = Vec::new();
    for raw in hostnames {
        match hostname::validate(raw) {
            Ok(name) if seeds.seeds.iter().any(|s| s.hostname == name) => names.push(name),
            Ok(name) => unknown.push(format!("unknown host `{name}` (not a seed)")),
            Err(e) => unknown.push(e.to_string()),
        }
    }
    if !unknown.is_empty() {
        return Err(Verdict::invalid(unknown.join("; ")));
    }
    if names.is_empty() {
        return Err(Verdict::invalid("no host given"));
    }
    Ok(names)
}

fn parse_filter(filter: &str) -> Result<Query, QueryError> {
    let query = Query::parse(filter).map_err(|e| QueryError::Invalid(e.to_string()))?;
    query
        .check_fields(HostRecord::FIELDS)
        .map_err(|e| QueryError::Invalid(e.to_string()))?;
    Ok(query)
}

fn index_failed(e: IndexError) -> QueryError {
    QueryError::Failed(e.to_string())
}

/// More than a record takes encoded, in CBOR or JSON (where a control
/// character in a text costs six bytes), without encoding it.
fn encoded_size_bound(record: &HostRecord) -> usize {
    let o = &record.observation;
    let texts: usize = [&o.override_contents, &o.last_error, &o.os_version]
        .iter()
        .map(|t| t.as_ref().map_or(0, String::len))
        .sum();
    2048 + 6 * texts
}

/// One page of the hosts matching a query, by hostname: at most `limit`
/// hosts, and never more than `max_bytes` of encoded records.
pub async fn page(
    index: &HostIndex,
    q: &HostQuery,
    max_bytes: usize,
) -> Result<HostList, QueryError> {
    let query = parse_filter(&q.filter)?;
    let limit = q.limit.map_or(usize::MAX, |l| l as usize);
    let (mut count, mut bytes) = (0usize, 0usize);
    let (hosts, next) = index
        .list(&query, q.after.as_deref(), |record| {
            bytes += encoded_size_bound(record);
            count += 1;
            // A page holds at least one host, however big.
            count == 1 || (count <= limit && bytes <= max_bytes)
        })
        .await
        .map_err(index_failed)?;
    Ok(HostList { hosts, next })
}

/// The names of every host matching `filter`.
pub async fn matching(index: &HostIndex, filter: &str) -> Result<Vec<String>, QueryError> {
    let query = parse_filter(filter)?;
    let (hosts, _) = index
        .list(&query, None, |_| true)
        .await
        .map_err(index_failed)?;
    Ok(hosts.into_iter().map(|r| r.observation.hostname).collect())
}

/// A host's last observations (the history stream keeps the last 50), with
/// what changed from one to the next.
pub async fn history(bus: &Bus, hostname: &str) -> Result<HostHistory, QueryError> {
    let name = hostname::validate(hostname).map_err(|e| QueryError::Invalid(e.to_string()))?;
    let stored = bus
        .stored(&topology::HOST_HISTORY, subjects::host_history(&name))
        .await?;
    let observations: Vec<Observation> = stored
        .iter()
        .filter_map(|bytes| codec::from_cbor::<Observation>(bytes).ok())
        .collect();
    // No history of a host the inventory never had is an unknown host, as
    // `host show` says, not an empty answer.
    if observations.is_empty() {
        let known = bus
            .kv(&topology::HOSTS)
            .await?
            .get(name.as_str())
            .await
            .map_err(|e| BusError::js("reading the host record", e))?
            .is_some();
        if !known {
            return Err(QueryError::NotFound(format!("unknown host `{name}`")));
        }
    }
    Ok(HostHistory::of(&name, observations))
}

pub async fn get(index: &HostIndex, hostname: &str) -> Result<HostRecord, QueryError> {
    let name = hostname::validate(hostname).map_err(|e| QueryError::Invalid(e.to_string()))?;
    index
        .get(&name)
        .await
        .map_err(index_failed)?
        .ok_or_else(|| QueryError::NotFound(format!("unknown host `{name}`")))
}
