//! Seeds: the hostnames operators said exist. Adding one twice, or removing
//! one that is not there, changes nothing and says so.

use async_nats::jetstream::kv;
use fleetroll_bus::codec;
use fleetroll_bus::connect::{Bus, BusError};
use fleetroll_bus::hostname;
use fleetroll_bus::messages::command::{Reply, Verdict};
use fleetroll_bus::messages::host::Observation;
use fleetroll_bus::messages::{Seed, SeedList};
use fleetroll_bus::topology;
use fleetroll_bus::worker::CommandContext;
use futures::StreamExt;
use time::OffsetDateTime;
use tracing::info;

/// Checks every name before touching anything, so a bad name in a batch
/// changes nothing.
fn validated(hostnames: &[String]) -> Result<Vec<String>, Verdict> {
    let mut names = Vec::new();
    let mut errors = Vec::new();
    for raw in hostnames {
        match hostname::validate(raw) {
            Ok(name) => names.push(name),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !errors.is_empty() {
        return Err(Verdict::invalid(format!(
            "nothing changed: {}",
            errors.join("; ")
        )));
    }
    if names.is_empty() {
        return Err(Verdict::invalid("no hostname given"));
    }
    names.sort();
    names.dedup();
    Ok(names)
}

async fn stores(ctx: &CommandContext) -> Result<(kv::Store, kv::Store), BusError> {
    Ok((
        ctx.bus.kv(&topology::SEEDS).await?,
        ctx.bus.kv(&topology::HOSTS).await?,
    ))
}

pub async fn add(ctx: &CommandContext, hostnames: &[String]) -> Verdict {
    let names = match validated(hostnames) {
        Ok(names) => names,
        Err(verdict) => return verdict,
    };
    let (seeds, hosts) = match stores(ctx).await {
        Ok(stores) => stores,
        Err(e) => return Verdict::failed(e),
    };
    let (mut changed, mut unchanged) = (Vec::new(), Vec::new());
    for name in names {
        let seed = Seed {
            hostname: name.clone(),
            added_at: OffsetDateTime::now_utc(),
            added_by: ctx.actor.clone(),
        };
        match seeds.create(&name, codec::to_cbor(&seed).into()).await {
            Ok(_) => {
                // Seeds create discovered host records; an existing record
                // (a seed added back) keeps what was known.
                let discovered = Observation::discovered(&name, seed.added_at);
                if let Err(e) = hosts
                    .create(&name, codec::to_cbor(&discovered).into())
                    .await
                    && e.kind() != kv::CreateErrorKind::AlreadyExists
                {
                    return Verdict::failed(format!("recording host {name}: {e}"));
                }
                changed.push(name)
            }
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => unchanged.push(name),
            Err(e) => return Verdict::failed(format!("adding seed {name}: {e}")),
        }
    }
    info!(added = changed.len(), "seeds added");
    // New hosts are probed now, not at the next scheduled cycle.
    if !changed.is_empty()
        && let Err(e) = crate::jobs::enqueue(&ctx.bus, &changed, &ctx.command_id, false).await
    {
        tracing::warn!(error = %e, "first probe of new seeds not queued");
    }
    Verdict::Done {
        reply: Reply::SeedsChanged { changed, unchanged },
    }
}

pub async fn remove(ctx: &CommandContext, hostnames: &[String]) -> Verdict {
    let names = match validated(hostnames) {
        Ok(names) => names,
        Err(verdict) => return verdict,
    };
    let (seeds, hosts) = match stores(ctx).await {
        Ok(stores) => stores,
        Err(e) => return Verdict::failed(e),
    };
    let (mut changed, mut unchanged) = (Vec::new(), Vec::new());
    for name in names {
        match seeds.get(&name).await {
            Ok(Some(_)) => match seeds.delete(&name).await {
                Ok(()) => {
                    // The host leaves the inventory with its seed; its
                    // observation history stays in the history stream.
                    if let Err(e) = hosts.delete(&name).await {
                        return Verdict::failed(format!("removing host {name}: {e}"));
                    }
                    changed.push(name)
                }
                Err(e) => return Verdict::failed(format!("removing seed {name}: {e}")),
            },
            Ok(None) => unchanged.push(name),
            Err(e) => return Verdict::failed(format!("reading seed {name}: {e}")),
        }
    }
    info!(removed = changed.len(), "seeds removed");
    Verdict::Done {
        reply: Reply::SeedsChanged { changed, unchanged },
    }
}

pub async fn list(bus: &Bus) -> Result<SeedList, BusError> {
    let store = bus.kv(&topology::SEEDS).await?;
    let mut keys = match store.keys().await {
        Ok(keys) => keys,
        Err(e) => {
            return Err(BusError::js("listing seeds", e));
        }
    };
    let mut seeds = Vec::new();
    while let Some(key) = keys.next().await {
        let Ok(key) = key else { continue };
        if let Ok(Some(bytes)) = store.get(&key).await {
            let seed = codec::from_cbor::<Seed>(&bytes).map_err(|source| BusError::Decode {
                place: format!("seed {key}"),
                source,
            })?;
            seeds.push(seed);
        }
    }
    seeds.sort_by(|a, b| a.hostname.cmp(&b.hostname));
    Ok(SeedList { seeds })
}
