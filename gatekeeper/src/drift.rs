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
use fleetroll_bus::messages::workload::Workload;
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
    /// A host counts as doing work when its workload source saw it active
    /// this recently (`[workload] active_window`).
    #[serde(skip, default = "default_active_window")]
    pub active_window: Duration,
}

fn default_active_window() -> Duration {
    Duration::from_secs(3600)
}

fn default_unreachable_after() -> Duration {
    Duration::from_secs(15 * 60)
}

impl Default for DriftSettings {
    fn default() -> Self {
        DriftSettings {
            unreachable_after: default_unreachable_after(),
            active_window: default_active_window(),
        }
    }
}

/// The drift of one host, now. `workload` is `None` when no workload
/// source is configured (or it has not answered yet).
pub fn drift_of(
    observation: &Observation,
    intent: &HostIntent,
    workload: Option<&Workload>,
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
    if let Some(w) = workload.filter(|w| w.error.is_none()) {
        // The role the host should work as: what operators expect, else
        // what it says it is. Taskcluster spells `_` as `-`.
        let role = intent
            .expected_role
            .as_deref()
            .or(observation.role.as_deref());
        match (w.worker_type(), role) {
            (None, _) => types.push(DriftType::TcMissing),
            (Some(worker_type), Some(role)) if worker_type != role.replace('_', "-") => {
                types.push(DriftType::TcMismatch)
            }
            _ => {}
        }
        let active_since = now - settings.active_window;
        let since = intent
            .disabled_at
            .map_or(active_since, |d| d.max(active_since));
        if intent.disabled && w.active_since(since, now) {
            types.push(DriftType::DisabledActive);
        }
    }
    types
}

/// SPEC 2: applied, and doing work. Unknown while either half is.
pub fn healthy_of(
    observation: &Observation,
    workload: Option<&Workload>,
    settings: &DriftSettings,
    now: OffsetDateTime,
) -> Option<bool> {
    match observation.applied? {
        false => Some(false),
        true => {
            let w = workload.filter(|w| w.error.is_none())?;
            Some(w.active_since(now - settings.active_window, now))
        }
    }
}

#[derive(Default)]
struct Hosts {
    observations: BTreeMap<String, Observation>,
    intents: BTreeMap<String, HostIntent>,
    workload: BTreeMap<String, Workload>,
    written: BTreeMap<String, (Vec<DriftType>, Option<bool>)>,
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
    let workload_store = bus.kv(&topology::WORKLOAD).await?;
    let mut observations = hosts_store
        .watch_all_from_revision(1)
        .await
        .map_err(|e| watch_error("hosts", &e))?;
    let mut intents = intent_store
        .watch_all_from_revision(1)
        .await
        .map_err(|e| watch_error("intent", &e))?;
    let mut workloads = workload_store
        .watch_all_from_revision(1)
        .await
        .map_err(|e| watch_error("workload", &e))?;
    let mut state = Hosts::default();
    for (name, drift) in bus.snapshot::<Drift>(&topology::DRIFT).await? {
        state.written.insert(name, (drift.types, drift.healthy));
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
            entry = workloads.next() => {
                let entry = entry.ok_or_else(|| watch_error("workload", &"watch ended"))?.map_err(|e| watch_error("workload", &e))?;
                let key = entry.key.clone();
                match decode::<Workload>(&entry) {
                    Some(w) => { state.workload.insert(key.clone(), w); }
                    None => { state.workload.remove(&key); }
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
            let workload = state.workload.get(&name);
            let types = drift_of(observation, &intent, workload, &settings, now);
            let healthy = healthy_of(observation, workload, &settings, now);
            let verdict = (types, healthy);
            if state.written.get(&name) == Some(&verdict) {
                continue;
            }
            let record = Drift {
                types: verdict.0.clone(),
                healthy,
                computed_at: now,
            };
            match drift_store.put(&name, codec::to_cbor(&record).into()).await {
                Ok(_) => {
                    state.written.insert(name, verdict);
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
            active_window: Duration::from_secs(600),
        };
        let mut o = Observation::discovered("h", now - time::Duration::hours(1));
        let mut intent = HostIntent::default();
        assert!(
            drift_of(&o, &intent, None, &settings, now).is_empty(),
            "nothing known, nothing drifts"
        );
        o.role = Some("talos".into());
        intent.expected_role = Some("talos".into());
        assert!(drift_of(&o, &intent, None, &settings, now).is_empty());
        intent.expected_role = Some("osx".into());
        assert_eq!(
            drift_of(&o, &intent, None, &settings, now),
            [DriftType::Role]
        );
        o.override_present = Some(true);
        o.sshable = Some(false);
        o.last_seen = Some(now - time::Duration::seconds(30));
        assert_eq!(
            drift_of(&o, &intent, None, &settings, now),
            [DriftType::Override, DriftType::Role]
        );
        o.last_seen = Some(now - time::Duration::seconds(90));
        assert_eq!(
            drift_of(&o, &intent, None, &settings, now),
            [DriftType::Override, DriftType::Role, DriftType::Unreachable]
        );
    }

    fn worker(pool: Option<&str>, last_active: Option<OffsetDateTime>) -> Workload {
        Workload {
            source: "taskcluster".into(),
            worker_pool: pool.map(str::to_string),
            worker_id: "h".into(),
            state: Some("running".into()),
            last_active,
            first_claim: None,
            latest_task: None,
            quarantined_until: None,
            collected_at: OffsetDateTime::now_utc(),
            error: None,
            recorded: Vec::new(),
            pending: Vec::new(),
        }
    }

    #[test]
    fn workload_drift_and_health() {
        let now = OffsetDateTime::now_utc();
        let settings = DriftSettings {
            unreachable_after: Duration::from_secs(60),
            active_window: Duration::from_secs(600),
        };
        let mut o = Observation::discovered("h", now);
        o.role = Some("gecko_t_linux_talos".into());
        o.applied = Some(true);
        let mut intent = HostIntent::default();
        let recent = Some(now - time::Duration::minutes(2));
        let home = worker(Some("releng-hardware/gecko-t-linux-talos"), recent);
        assert!(drift_of(&o, &intent, Some(&home), &settings, now).is_empty());
        assert_eq!(healthy_of(&o, Some(&home), &settings, now), Some(true));
        assert_eq!(
            healthy_of(&o, None, &settings, now),
            None,
            "no source, no verdict"
        );

        let idle = worker(
            Some("releng-hardware/gecko-t-linux-talos"),
            Some(now - time::Duration::hours(2)),
        );
        assert_eq!(healthy_of(&o, Some(&idle), &settings, now), Some(false));
        o.applied = Some(false);
        assert_eq!(healthy_of(&o, Some(&home), &settings, now), Some(false));

        let missing = worker(None, None);
        assert_eq!(
            drift_of(&o, &intent, Some(&missing), &settings, now),
            [DriftType::TcMissing]
        );
        let elsewhere = worker(Some("releng-hardware/gecko-t-osx-1015"), recent);
        assert_eq!(
            drift_of(&o, &intent, Some(&elsewhere), &settings, now),
            [DriftType::TcMismatch]
        );
        intent.expected_role = Some("gecko-t-osx-1015".into());
        assert_eq!(
            drift_of(&o, &intent, Some(&elsewhere), &settings, now),
            [DriftType::Role],
            "the pool matches what operators expect"
        );
        let unasked = Workload {
            error: Some("HTTP 500".into()),
            ..missing
        };
        intent.expected_role = None;
        assert!(
            drift_of(&o, &intent, Some(&unasked), &settings, now).is_empty(),
            "no answer is no evidence"
        );

        intent.disabled = true;
        intent.disabled_at = Some(now - time::Duration::minutes(5));
        assert_eq!(
            drift_of(&o, &intent, Some(&home), &settings, now),
            [DriftType::DisabledActive]
        );
        intent.disabled_at = Some(now - time::Duration::minutes(1));
        assert!(
            drift_of(&o, &intent, Some(&home), &settings, now).is_empty(),
            "its last job began before it was disabled"
        );
    }
}
