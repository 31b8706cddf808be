//! Drift (SPEC 4), derived from observations and operator intent and
//! stored per host. The gatekeeper keeps it current by watching both
//! buckets from their history, so a restarted replica rebuilds everything
//! from the streams, and re-evaluates on a timer for the drift that only
//! time makes (unreachable for too long).

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::kv;
use fleetroll_bus::codec;
use fleetroll_bus::connect::{Bus, BusError};
use fleetroll_bus::messages::host::{Drift, DriftType, HostIntent, Observation};
use fleetroll_bus::topology;
use futures::StreamExt;
use serde::Deserialize;
use time::OffsetDateTime;
use tracing::warn;

/// The `[drift]` section of `fleetroll.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DriftSettings {
    /// How long a host may be unreachable before it counts as drift.
    #[serde(default = "default_unreachable_after", with = "humantime_serde")]
    pub unreachable_after: Duration,
}

fn default_unreachable_after() -> Duration {
    Duration::from_secs(15 * 60)
}

impl Default for DriftSettings {
    fn default() -> Self {
        DriftSettings {
            unreachable_after: default_unreachable_after(),
        }
    }
}

/// The drift of one host, now.
pub fn drift_of(
    observation: &Observation,
    intent: &HostIntent,
    settings: &DriftSettings,
    now: OffsetDateTime,
) -> Vec<DriftType> {
    let mut types = Vec::new();
    // No rollout exists yet that could expect an override, so any present
    // override is drift.
    if observation.override_present == Some(true) {
        types.push(DriftType::Override);
    }
    if let (Some(expected), Some(observed)) = (&intent.expected_role, &observation.role)
        && expected != observed
    {
        types.push(DriftType::Role);
    }
    if observation.sshable == Some(false) {
        let since = observation.last_seen.unwrap_or(observation.discovered_at);
        if now - since >= settings.unreachable_after {
            types.push(DriftType::Unreachable);
        }
    }
    types
}

#[derive(Default)]
struct Hosts {
    observations: BTreeMap<String, Observation>,
    intents: BTreeMap<String, HostIntent>,
    written: BTreeMap<String, Vec<DriftType>>,
}

/// Keeps the drift bucket current until the watches end (NATS gone), which
/// the caller treats as a failure to restart from.
pub async fn maintain(bus: Bus, settings: DriftSettings) -> Result<(), BusError> {
    let watch_error = |what: &str, e: &dyn std::fmt::Display| BusError::JetStream {
        what: format!("watching {what}"),
        detail: e.to_string(),
    };
    let hosts_store = bus.kv(&topology::HOSTS).await?;
    let intent_store = bus.kv(&topology::HOST_INTENT).await?;
    let drift_store = bus.kv(&topology::DRIFT).await?;
    let mut observations = hosts_store
        .watch_all_from_revision(1)
        .await
        .map_err(|e| watch_error("hosts", &e))?;
    let mut intents = intent_store
        .watch_all_from_revision(1)
        .await
        .map_err(|e| watch_error("intent", &e))?;
    let mut state = Hosts::default();
    for (name, drift) in bus.snapshot::<Drift>(&topology::DRIFT).await? {
        state.written.insert(name, drift.types);
    }
    let mut ticker = tokio::time::interval(Duration::from_secs(10));
    loop {
        let changed = tokio::select! {
            entry = observations.next() => {
                let entry = entry.ok_or_else(|| watch_error("hosts", &"watch ended"))?.map_err(|e| watch_error("hosts", &e))?;
                let key = entry.key.clone();
                match decode::<Observation>(&entry) {
                    Some(o) => { state.observations.insert(key.clone(), o); }
                    None => { state.observations.remove(&key); }
                }
                vec![key]
            }
            entry = intents.next() => {
                let entry = entry.ok_or_else(|| watch_error("intent", &"watch ended"))?.map_err(|e| watch_error("intent", &e))?;
                let key = entry.key.clone();
                match decode::<HostIntent>(&entry) {
                    Some(i) => { state.intents.insert(key.clone(), i); }
                    None => { state.intents.remove(&key); }
                }
                vec![key]
            }
            _ = ticker.tick() => state.observations.keys().cloned().collect(),
        };
        let now = OffsetDateTime::now_utc();
        for name in changed {
            let Some(observation) = state.observations.get(&name) else {
                if state.written.remove(&name).is_some() {
                    let _ = drift_store.delete(&name).await;
                }
                continue;
            };
            let intent = state.intents.get(&name).cloned().unwrap_or_default();
            let types = drift_of(observation, &intent, &settings, now);
            if state.written.get(&name) == Some(&types) {
                continue;
            }
            let record = Drift {
                types: types.clone(),
                computed_at: now,
            };
            match drift_store.put(&name, codec::to_cbor(&record).into()).await {
                Ok(_) => {
                    state.written.insert(name, types);
                }
                Err(e) => warn!(host = %name, error = %e, "drift not written"),
            }
        }
    }
}

fn decode<T: codec::Message>(entry: &kv::Entry) -> Option<T> {
    match entry.operation {
        kv::Operation::Put => codec::from_cbor(&entry.value).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_drift_type_from_its_evidence() {
        let now = OffsetDateTime::now_utc();
        let settings = DriftSettings {
            unreachable_after: Duration::from_secs(60),
        };
        let mut o = Observation::discovered("h", now - time::Duration::hours(1));
        let mut intent = HostIntent::default();
        assert!(
            drift_of(&o, &intent, &settings, now).is_empty(),
            "nothing known, nothing drifts"
        );
        o.role = Some("talos".into());
        intent.expected_role = Some("talos".into());
        assert!(drift_of(&o, &intent, &settings, now).is_empty());
        intent.expected_role = Some("osx".into());
        assert_eq!(drift_of(&o, &intent, &settings, now), [DriftType::Role]);
        o.override_present = Some(true);
        o.sshable = Some(false);
        o.last_seen = Some(now - time::Duration::seconds(30));
        assert_eq!(
            drift_of(&o, &intent, &settings, now),
            [DriftType::Override, DriftType::Role]
        );
        o.last_seen = Some(now - time::Duration::seconds(90));
        assert_eq!(
            drift_of(&o, &intent, &settings, now),
            [DriftType::Override, DriftType::Role, DriftType::Unreachable]
        );
    }
}
