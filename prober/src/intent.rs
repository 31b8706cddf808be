//! What operators say about hosts: seed sync, populations, expected roles,
//! disabling. Assignments are manual only; every change to a host's intent
//! is a compare-and-swap on its entry, so concurrent commands never lose
//! each other's changes.

use async_nats::jetstream::kv;
use fleetroll_bus::codec;
use fleetroll_bus::connect::{Bus, BusError};
use fleetroll_bus::filter::Query;
use fleetroll_bus::hostname;
use fleetroll_bus::messages::command::{HostSelection, Reply, Verdict};
use fleetroll_bus::messages::host::{HostIntent, HostRecord, Population, PopulationList};
use fleetroll_bus::topology;
use fleetroll_bus::worker::CommandContext;
use time::OffsetDateTime;

use crate::{hosts, seeds};
use fleetroll_bus::host_index::HostIndex;

/// Population names are bucket keys and appear in queries.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

pub async fn population_create(
    ctx: &CommandContext,
    name: &str,
    expected_role: &str,
    target_query: Option<&str>,
    description: Option<&str>,
) -> Verdict {
    if !valid_name(name) {
        return Verdict::invalid(format!(
            "population name `{name}` must be 1-64 characters of a-z, 0-9, - and _"
        ));
    }
    if expected_role.trim().is_empty() || expected_role.chars().any(char::is_whitespace) {
        return Verdict::invalid("the expected role must be one word");
    }
    if let Some(q) = target_query
        && let Err(e) = Query::parse(q).and_then(|q| q.check_fields(HostRecord::FIELDS))
    {
        return Verdict::invalid(format!("target query: {e}"));
    }
    let population = Population {
        name: name.to_string(),
        expected_role: expected_role.to_string(),
        target_query: target_query.map(str::to_string),
        description: description.map(str::to_string),
        created_at: OffsetDateTime::now_utc(),
        created_by: ctx.actor.clone(),
    };
    let store = match ctx.bus.kv(&topology::POPULATIONS).await {
        Ok(store) => store,
        Err(e) => return Verdict::failed(e),
    };
    match store.create(name, codec::to_cbor(&population).into()).await {
        Ok(_) => Verdict::Done {
            reply: Reply::PopulationCreated {
                name: name.to_string(),
            },
        },
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
            Verdict::invalid(format!("population `{name}` already exists"))
        }
        Err(e) => Verdict::failed(e),
    }
}

pub async fn populations(bus: &Bus) -> Result<PopulationList, BusError> {
    Ok(PopulationList {
        populations: bus
            .snapshot::<Population>(&topology::POPULATIONS)
            .await?
            .into_values()
            .collect(),
    })
}

/// The hosts a selection names: known hosts only, all or nothing.
async fn select(
    bus: &Bus,
    index: &HostIndex,
    selection: &HostSelection,
) -> Result<Vec<String>, Verdict> {
    match selection {
        HostSelection::Names { hostnames } => hosts::known_hosts(bus, hostnames).await,
        HostSelection::Filter { query } => hosts::matching(index, query)
            .await
            .map_err(|e| Verdict::invalid(e.to_string())),
    }
}

/// Applies `change` to each host's intent with compare-and-swap, retrying
/// when another command got there first.
async fn update_intents(
    bus: &Bus,
    names: Vec<String>,
    change: impl Fn(&mut HostIntent),
) -> Verdict {
    let store = match bus.kv(&topology::HOST_INTENT).await {
        Ok(store) => store,
        Err(e) => return Verdict::failed(e),
    };
    let (mut changed, mut unchanged) = (Vec::new(), Vec::new());
    for name in names {
        loop {
            let entry = match store.entry(&name).await {
                Ok(entry) => entry.filter(|e| e.operation == kv::Operation::Put),
                Err(e) => return Verdict::failed(e),
            };
            let current: HostIntent = entry
                .as_ref()
                .and_then(|e| codec::from_cbor(&e.value).ok())
                .unwrap_or_default();
            let mut next = current.clone();
            change(&mut next);
            if next == current {
                unchanged.push(name);
                break;
            }
            let bytes = codec::to_cbor(&next).into();
            // Losing a race to another command means: read again, re-apply.
            let written = match &entry {
                Some(e) => match store.update(&name, bytes, e.revision).await {
                    Ok(_) => Ok(true),
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
                    Err(e) => Err(e.to_string()),
                },
                None => match store.create(&name, bytes).await {
                    Ok(_) => Ok(true),
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
                    Err(e) => Err(e.to_string()),
                },
            };
            match written {
                Ok(true) => {
                    changed.push(name);
                    break;
                }
                Ok(false) => continue,
                Err(e) => return Verdict::failed(format!("updating {name}: {e}")),
            }
        }
    }
    Verdict::Done {
        reply: Reply::HostsUpdated { changed, unchanged },
    }
}

pub async fn assign_population(
    ctx: &CommandContext,
    index: &HostIndex,
    selection: &HostSelection,
    population: &str,
) -> Verdict {
    let store = match ctx.bus.kv(&topology::POPULATIONS).await {
        Ok(store) => store,
        Err(e) => return Verdict::failed(e),
    };
    let found: Option<Population> = match store.get(population).await {
        Ok(bytes) => bytes.and_then(|b| codec::from_cbor(&b).ok()),
        Err(e) => return Verdict::failed(e),
    };
    let Some(found) = found else {
        return Verdict::invalid(format!(
            "unknown population `{population}` (create it with `fleetroll population create`)"
        ));
    };
    let names = match select(&ctx.bus, index, selection).await {
        Ok(names) => names,
        Err(verdict) => return verdict,
    };
    update_intents(&ctx.bus, names, |intent| {
        intent.population = Some(found.name.clone());
        intent.expected_role = Some(found.expected_role.clone());
    })
    .await
}

pub async fn set_expected_role(
    ctx: &CommandContext,
    hostname: &str,
    role: Option<&str>,
) -> Verdict {
    if let Some(role) = role
        && (role.trim().is_empty() || role.chars().any(char::is_whitespace))
    {
        return Verdict::invalid("the expected role must be one word");
    }
    let names = match hosts::known_hosts(&ctx.bus, &[hostname.to_string()]).await {
        Ok(names) => names,
        Err(verdict) => return verdict,
    };
    update_intents(&ctx.bus, names, |intent| {
        intent.expected_role = role.map(str::to_string)
    })
    .await
}

pub async fn set_disabled(ctx: &CommandContext, hostname: &str, reason: Option<&str>) -> Verdict {
    if let Some(reason) = reason
        && reason.trim().is_empty()
    {
        return Verdict::invalid("say why the host is disabled (--reason)");
    }
    let names = match hosts::known_hosts(&ctx.bus, &[hostname.to_string()]).await {
        Ok(names) => names,
        Err(verdict) => return verdict,
    };
    let now = OffsetDateTime::now_utc();
    update_intents(&ctx.bus, names, |intent| match reason {
        Some(reason) if !intent.disabled => {
            intent.disabled = true;
            intent.disabled_reason = Some(reason.to_string());
            intent.disabled_by = Some(ctx.actor.clone());
            intent.disabled_at = Some(now);
        }
        Some(_) => {}
        None => {
            intent.disabled = false;
            intent.disabled_reason = None;
            intent.disabled_by = None;
            intent.disabled_at = None;
        }
    })
    .await
}

/// Makes the seeds exactly `hostnames`: adds what is missing, removes the
/// rest, and says both. A bad name anywhere changes nothing.
pub async fn seed_sync(ctx: &CommandContext, hostnames: &[String]) -> Verdict {
    let mut wanted = Vec::new();
    let mut errors = Vec::new();
    for raw in hostnames {
        match hostname::validate(raw) {
            Ok(name) => wanted.push(name),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !errors.is_empty() {
        return Verdict::invalid(format!("nothing changed: {}", errors.join("; ")));
    }
    wanted.sort();
    wanted.dedup();
    let current: Vec<String> = match seeds::list(&ctx.bus).await {
        Ok(list) => list.seeds.into_iter().map(|s| s.hostname).collect(),
        Err(e) => return Verdict::failed(e),
    };
    let to_add: Vec<String> = wanted
        .iter()
        .filter(|h| !current.contains(h))
        .cloned()
        .collect();
    let to_remove: Vec<String> = current
        .iter()
        .filter(|h| !wanted.contains(h))
        .cloned()
        .collect();
    if !to_add.is_empty()
        && let Verdict::Failed { message } = seeds::add(ctx, &to_add).await
    {
        return Verdict::failed(message);
    }
    if !to_remove.is_empty()
        && let Verdict::Failed { message } = seeds::remove(ctx, &to_remove).await
    {
        return Verdict::failed(message);
    }
    Verdict::Done {
        reply: Reply::SeedsSynced {
            added: to_add,
            removed: to_remove,
        },
    }
}
