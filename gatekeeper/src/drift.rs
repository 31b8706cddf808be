//! Drift (SPEC 4), derived from observations and operator intent and
//! stored per host. The gatekeeper keeps it current by watching the
//! buckets (and the verdicts themselves) from their history, so a
//! restarted replica rebuilds everything from the streams, and
//! re-evaluates on a timer for the drift that only time makes (unreachable
//! for too long).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_nats::jetstream::kv;
use fleetroll_bus::codec;
use fleetroll_bus::connect::{Bus, BusError};
use fleetroll_bus::messages::host::{Drift, DriftType, HostIntent, Observation};
use fleetroll_bus::messages::workload::Workload;
use fleetroll_bus::topology;
use futures::{FutureExt, StreamExt};
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
        // The prober named the pool the host should be in (its override's
        // WORKER_TYPE_OVERRIDE, else its expected or reported role's pool).
        match (&w.worker_pool, &w.expected_pool) {
            (None, _) => types.push(DriftType::TcMissing),
            (Some(found), Some(expected)) if *found != expected.pool => {
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
    /// The verdicts in the drift bucket, whichever replica wrote them.
    written: BTreeMap<String, (Vec<DriftType>, Option<bool>)>,
    /// Per bucket: still replaying what it held when the watch began.
    replaying: [bool; 4],
}

impl Hosts {
    /// Takes in one bucket entry; says which host to judge again: the one
    /// it is about, unless it is a verdict this replica holds already or on
    /// a host it has not seen yet (it is behind, and judging would remove
    /// the verdict).
    fn absorb(&mut self, slot: usize, entry: &kv::Entry) -> Option<String> {
        if entry.delta == 0 {
            self.replaying[slot] = false;
        }
        let key = entry.key.clone();
        match slot {
            0 => set(&mut self.observations, &key, decode(entry)),
            1 => set(&mut self.intents, &key, decode(entry)),
            2 => set(&mut self.workload, &key, decode(entry)),
            _ => {
                // Its own verdict coming back, or one it would have written
                // too, needs no second look.
                let verdict = decode::<Drift>(entry).map(|d| (d.types, d.healthy));
                let news = self.written.get(&key) != verdict.as_ref();
                set(&mut self.written, &key, verdict);
                return (news && self.observations.contains_key(&key)).then_some(key);
            }
        }
        Some(key)
    }
}

fn set<T>(map: &mut BTreeMap<String, T>, key: &str, value: Option<T>) {
    match value {
        Some(v) => {
            map.insert(key.to_string(), v);
        }
        None => {
            map.remove(key);
        }
    }
}

/// Verdicts written at once: a burst of 100,000 new observations is judged
/// at the bucket's write rate, not one round trip per host.
const WRITES_IN_FLIGHT: usize = 64;

/// Entries taken in before judging: what arrived together is judged together.
const BATCH: usize = 1000;

/// Keeps the drift bucket current until the watches end (NATS gone), which
/// the caller treats as a failure to restart from.
pub async fn maintain(bus: Bus, settings: DriftSettings) -> Result<(), BusError> {
    let mut watches = Vec::new();
    let mut state = Hosts::default();
    // The drift bucket too: another replica's verdict (one that died, say,
    // before writing the next) is what is there, not the last one this
    // replica wrote, and a host whose verdict changed is judged again.
    for (slot, bucket) in [
        &topology::HOSTS,
        &topology::HOST_INTENT,
        &topology::WORKLOAD,
        &topology::DRIFT,
    ]
    .into_iter()
    .enumerate()
    {
        state.replaying[slot] = bus.bucket_state(bucket).await?.messages > 0;
        let watch = bus
            .kv(bucket)
            .await?
            .watch_all_from_revision(1)
            .await
            .map_err(|e| BusError::js(format!("watching {}", bucket.name), e))?;
        watches.push(watch.map(move |entry| (slot, entry)));
    }
    let mut entries = futures::stream::select_all(watches);
    let drift_store = bus.kv(&topology::DRIFT).await?;
    let ended = || BusError::js("watching the host buckets", "the watch ended");
    let mut ticker = tokio::time::interval(Duration::from_secs(10));
    let mut dirty = BTreeSet::new();
    loop {
        tokio::select! {
            entry = entries.next() => {
                let (slot, entry) = entry.ok_or_else(ended)?;
                let entry = entry.map_err(|e| BusError::js("watching the host buckets", e))?;
                dirty.extend(state.absorb(slot, &entry));
                while dirty.len() < BATCH {
                    match entries.next().now_or_never() {
                        Some(Some((slot, Ok(entry)))) => {
                            dirty.extend(state.absorb(slot, &entry));
                        }
                        Some(Some((_, Err(e)))) => {
                            return Err(BusError::js("watching the host buckets", e));
                        }
                        Some(None) => return Err(ended()),
                        None => break,
                    }
                }
            }
            _ = ticker.tick() => dirty.extend(state.observations.keys().cloned()),
        }
        // A replica starting up judges once it has caught up with every
        // bucket: before, it knows neither all of a host's evidence (its
        // intent may come after its observation, and intents keep history)
        // nor the verdicts already there.
        if state.replaying.iter().any(|r| *r) {
            continue;
        }
        judge(
            &mut state,
            std::mem::take(&mut dirty),
            &drift_store,
            &settings,
        )
        .await;
    }
}

/// Writes the verdict of each named host that changed (and drops the verdict
/// of a host that is gone).
async fn judge(
    state: &mut Hosts,
    names: BTreeSet<String>,
    store: &kv::Store,
    settings: &DriftSettings,
) {
    let now = OffsetDateTime::now_utc();
    let mut changed = Vec::new();
    for name in names {
        let Some(observation) = state.observations.get(&name) else {
            if state.written.remove(&name).is_some() {
                let _ = store.delete(&name).await;
            }
            continue;
        };
        let intent = state.intents.get(&name).cloned().unwrap_or_default();
        let workload = state.workload.get(&name);
        let types = drift_of(observation, &intent, workload, settings, now);
        let healthy = healthy_of(observation, workload, settings, now);
        if state.written.get(&name) != Some(&(types.clone(), healthy)) {
            changed.push((name, types, healthy));
        }
    }
    for chunk in changed.chunks(WRITES_IN_FLIGHT) {
        let writes = chunk.iter().map(|(name, types, healthy)| {
            let record = Drift {
                types: types.clone(),
                healthy: *healthy,
                computed_at: now,
            };
            store.put(name.as_str(), codec::to_cbor(&record).into())
        });
        let results = futures::future::join_all(writes).await;
        for ((name, types, healthy), result) in chunk.iter().zip(results) {
            match result {
                Ok(_) => {
                    state
                        .written
                        .insert(name.clone(), (types.clone(), *healthy));
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
    use fleetroll_bus::messages::workload::{ExpectedPool, PoolRule};

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
            expected_pool: Some(ExpectedPool {
                pool: "releng-hardware/gecko-t-linux-talos-1804".into(),
                rule: PoolRule::Table,
            }),
            worker_pool: pool.map(str::to_string),
            worker_group: pool.map(|_| "mdc1".to_string()),
            worker_id: "h".into(),
            state: Some("standalone".into()),
            capacity: Some(0),
            provider_id: Some("none".into()),
            last_active,
            first_claim: None,
            latest_task: None,
            quarantine: None,
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
        let home = worker(Some("releng-hardware/gecko-t-linux-talos-1804"), recent);
        assert!(drift_of(&o, &intent, Some(&home), &settings, now).is_empty());
        assert_eq!(healthy_of(&o, Some(&home), &settings, now), Some(true));
        assert_eq!(
            healthy_of(&o, None, &settings, now),
            None,
            "no source, no verdict"
        );

        let idle = worker(
            Some("releng-hardware/gecko-t-linux-talos-1804"),
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
        let moved = Workload {
            expected_pool: Some(ExpectedPool {
                pool: "releng-hardware/gecko-t-osx-1015".into(),
                rule: PoolRule::WorkerTypeOverride,
            }),
            ..elsewhere.clone()
        };
        assert!(
            drift_of(&o, &intent, Some(&moved), &settings, now).is_empty(),
            "the pool is the one the override names"
        );
        let unasked = Workload {
            error: Some("HTTP 500".into()),
            ..missing
        };
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
