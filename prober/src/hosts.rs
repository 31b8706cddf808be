//! Host commands and queries: refresh, repin, list, show.

use fleetroll_bus::codec;
use fleetroll_bus::connect::{Bus, BusError};
use fleetroll_bus::filter::Query;
use fleetroll_bus::hostname;
use fleetroll_bus::messages::command::{ProbeSummary, Reply, Verdict};
use fleetroll_bus::messages::host::Observation;
use fleetroll_bus::query::QueryError;
use fleetroll_bus::topology;
use fleetroll_bus::worker::CommandContext;
use futures::StreamExt;
use tracing::info;

use crate::fleet::Fleet;
use crate::seeds;

pub async fn refresh(
    ctx: &CommandContext,
    fleet: &Fleet,
    hostnames: &[String],
    all: bool,
) -> Verdict {
    let targets = if all {
        match seeds::list(&ctx.bus).await {
            Ok(list) => list.seeds.into_iter().map(|s| s.hostname).collect(),
            Err(e) => {
                return Verdict::Failed {
                    message: e.to_string(),
                };
            }
        }
    } else {
        match known_hosts(&ctx.bus, hostnames).await {
            Ok(names) => names,
            Err(verdict) => return verdict,
        }
    };
    let probes = targets.iter().map(|host| async move {
        match fleet.probe(host).await {
            Ok(o) => ProbeSummary {
                hostname: host.clone(),
                ok: o.last_error.is_none(),
                error: o.last_error,
            },
            Err(e) => ProbeSummary {
                hostname: host.clone(),
                ok: false,
                error: Some(e.to_string()),
            },
        }
    });
    let hosts = futures::future::join_all(probes).await;
    info!(
        hosts = hosts.len(),
        failed = hosts.iter().filter(|h| !h.ok).count(),
        "refresh done"
    );
    Verdict::Done {
        reply: Reply::Refreshed { hosts },
    }
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
        Err(e) => Verdict::Failed {
            message: e.to_string(),
        },
    }
}

/// Checks that every name is a seed; an unknown one refuses the whole
/// command.
async fn known_hosts(bus: &Bus, hostnames: &[String]) -> Result<Vec<String>, Verdict> {
    let seeds = seeds::list(bus).await.map_err(|e| Verdict::Failed {
        message: e.to_string(),
    })?;
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
        return Err(Verdict::Invalid {
            message: unknown.join("; "),
        });
    }
    if names.is_empty() {
        return Err(Verdict::Invalid {
            message: "no host given".into(),
        });
    }
    Ok(names)
}

/// Every host's observation matching `filter`, by hostname.
pub async fn list(bus: &Bus, filter: &str) -> Result<Vec<Observation>, QueryError> {
    let query = Query::parse(filter).map_err(|e| QueryError::Invalid(e.to_string()))?;
    query
        .check_fields(Observation::FIELDS)
        .map_err(|e| QueryError::Invalid(e.to_string()))?;
    let store = bus.kv(&topology::HOSTS).await?;
    let mut entries = store
        .watch_all_from_revision(1)
        .await
        .map_err(|e| BusError::JetStream {
            what: "reading hosts".into(),
            detail: e.to_string(),
        })?;
    let mut hosts = std::collections::BTreeMap::new();
    let now = time::OffsetDateTime::now_utc();
    // A history-replaying watch ends its backlog with the newest entry
    // flagged `delta == 0`; reading up to there is one consistent pass.
    let status = store.status().await.map_err(|e| BusError::JetStream {
        what: "reading hosts".into(),
        detail: e.to_string(),
    })?;
    if status.values() == 0 {
        return Ok(Vec::new());
    }
    while let Some(entry) = entries.next().await {
        let entry = entry.map_err(|e| BusError::JetStream {
            what: "reading hosts".into(),
            detail: e.to_string(),
        })?;
        match entry.operation {
            async_nats::jetstream::kv::Operation::Put => {
                if let Ok(o) = codec::from_cbor::<Observation>(&entry.value) {
                    hosts.insert(entry.key.clone(), o);
                }
            }
            _ => {
                hosts.remove(&entry.key);
            }
        }
        if entry.delta == 0 {
            break;
        }
    }
    Ok(hosts
        .into_values()
        .filter(|o| query.matches_at(&|f| o.field(f), now))
        .collect())
}

pub async fn get(bus: &Bus, hostname: &str) -> Result<Observation, QueryError> {
    let name = hostname::validate(hostname).map_err(|e| QueryError::Invalid(e.to_string()))?;
    let store = bus.kv(&topology::HOSTS).await?;
    let bytes = store
        .get(&name)
        .await
        .map_err(|e| QueryError::Failed(e.to_string()))?
        .ok_or_else(|| QueryError::Invalid(format!("unknown host `{name}`")))?;
    codec::from_cbor(&bytes).map_err(|e| QueryError::Failed(e.to_string()))
}
