//! The host records the read queries answer from: every bucket a record is
//! made of, watched from its history into memory, so a query over 100,000
//! hosts filters memory rather than reading 100,000 entries.
//!
//! A query first learns each bucket's last revision and waits until the
//! index has applied it, so an answer never predates a write the caller
//! already saw acknowledged (a refresh, then a list).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::kv;
use fleetroll_bus::codec::{self, Message};
use fleetroll_bus::connect::{Bus, BusError};
use fleetroll_bus::filter::Query;
use fleetroll_bus::messages::host::{Drift, HostIntent, HostRecord, Observation};
use fleetroll_bus::messages::workload::Workload;
use fleetroll_bus::topology::{self, BucketDef};
use futures::StreamExt;
use time::OffsetDateTime;
use tokio::sync::watch;

/// The buckets a host record is made of, in the order of [`Revisions`].
const BUCKETS: [&BucketDef; 4] = [
    &topology::HOSTS,
    &topology::HOST_INTENT,
    &topology::DRIFT,
    &topology::WORKLOAD,
];

type Revisions = [u64; 4];

#[derive(Default)]
struct Hosts {
    observations: BTreeMap<String, Observation>,
    intents: BTreeMap<String, HostIntent>,
    verdicts: BTreeMap<String, Drift>,
    workload: BTreeMap<String, Workload>,
}

impl Hosts {
    fn record(&self, name: &str, observation: &Observation) -> HostRecord {
        let verdict = self.verdicts.get(name);
        HostRecord {
            observation: observation.clone(),
            intent: self.intents.get(name).cloned().unwrap_or_default(),
            drift: verdict.map(|d| d.types.clone()).unwrap_or_default(),
            healthy: verdict.and_then(|d| d.healthy),
            workload: self.workload.get(name).cloned(),
        }
    }
}

/// Why the index could not answer.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("the host index is still catching up with the buckets after {0:?}")]
    Behind(Duration),
    #[error("the host index stopped: {0}")]
    Stopped(String),
}

/// Every host's record, kept current in memory.
pub struct HostIndex {
    bus: Bus,
    hosts: RwLock<Hosts>,
    /// The revision of each bucket the index has applied.
    applied: watch::Sender<Revisions>,
    failure: RwLock<Option<String>>,
}

/// How long a query waits for the index to catch up.
const CATCH_UP: Duration = Duration::from_secs(10);

impl HostIndex {
    /// Starts watching the buckets; the index fills in the background.
    pub fn start(bus: Bus) -> Arc<HostIndex> {
        let index = Arc::new(HostIndex {
            bus,
            hosts: RwLock::default(),
            applied: watch::Sender::new([0; 4]),
            failure: RwLock::default(),
        });
        let maintained = index.clone();
        tokio::spawn(async move {
            if let Err(e) = maintained.maintain().await {
                tracing::warn!(error = %e, "host index stopped");
                *maintained
                    .failure
                    .write()
                    .unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                // Wake the waiters so they see the failure.
                maintained.applied.send_modify(|_| {});
            }
        });
        index
    }

    async fn maintain(&self) -> Result<(), BusError> {
        let mut watches = Vec::new();
        for (slot, bucket) in BUCKETS.iter().enumerate() {
            let store = self.bus.kv(bucket).await?;
            let watch = store
                .watch_all_from_revision(1)
                .await
                .map_err(|e| BusError::js(format!("watching {}", bucket.name), e))?;
            watches.push(watch.map(move |entry| (slot, entry)));
        }
        let mut entries = futures::stream::select_all(watches);
        while let Some((slot, entry)) = entries.next().await {
            let entry =
                entry.map_err(|e| BusError::js(format!("watching {}", BUCKETS[slot].name), e))?;
            {
                let mut hosts = self.hosts.write().unwrap_or_else(|e| e.into_inner());
                let key = entry.key.clone();
                match slot {
                    0 => apply(&mut hosts.observations, key, &entry),
                    1 => apply(&mut hosts.intents, key, &entry),
                    2 => apply(&mut hosts.verdicts, key, &entry),
                    _ => apply(&mut hosts.workload, key, &entry),
                }
            }
            self.applied
                .send_modify(|r| r[slot] = r[slot].max(entry.revision));
        }
        Err(BusError::js("watching the host buckets", "the watch ended"))
    }

    /// Waits until the index holds every write the buckets have taken.
    async fn caught_up(&self) -> Result<(), IndexError> {
        let mut wanted: Revisions = [0; 4];
        for (slot, bucket) in BUCKETS.iter().enumerate() {
            let store = self.bus.kv(bucket).await?;
            let status = store
                .status()
                .await
                .map_err(|e| BusError::js(format!("reading {}", bucket.name), e))?;
            wanted[slot] = status.info.state.last_sequence;
        }
        let mut applied = self.applied.subscribe();
        let wait = applied.wait_for(|r| {
            r.iter().zip(wanted).all(|(have, want)| *have >= want)
                || self.failure.read().map(|f| f.is_some()).unwrap_or(true)
        });
        match tokio::time::timeout(CATCH_UP, wait).await {
            Err(_) => Err(IndexError::Behind(CATCH_UP)),
            Ok(Err(_)) => Err(IndexError::Stopped("closed".into())),
            Ok(Ok(_)) => match self.failure.read().ok().and_then(|f| f.clone()) {
                Some(e) => Err(IndexError::Stopped(e)),
                None => Ok(()),
            },
        }
    }

    /// Every host matching `query`, by hostname, starting after `after`;
    /// stops early once `take` says so (a page is full).
    pub async fn list(
        &self,
        query: &Query,
        after: Option<&str>,
        mut take: impl FnMut(&HostRecord) -> bool,
    ) -> Result<(Vec<HostRecord>, Option<String>), IndexError> {
        self.caught_up().await?;
        let now = OffsetDateTime::now_utc();
        let hosts = self.hosts.read().unwrap_or_else(|e| e.into_inner());
        let range = match after {
            Some(a) => hosts
                .observations
                .range::<str, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
            None => hosts.observations.range::<str, _>(..),
        };
        let mut page = Vec::new();
        for (name, observation) in range {
            let record = hosts.record(name, observation);
            if !query.matches_at(&|f| record.field(f), now) {
                continue;
            }
            if !take(&record) {
                let next = page
                    .last()
                    .map(|r: &HostRecord| r.observation.hostname.clone());
                return Ok((page, next));
            }
            page.push(record);
        }
        Ok((page, None))
    }

    /// One host's record.
    pub async fn get(&self, hostname: &str) -> Result<Option<HostRecord>, IndexError> {
        self.caught_up().await?;
        let hosts = self.hosts.read().unwrap_or_else(|e| e.into_inner());
        Ok(hosts
            .observations
            .get(hostname)
            .map(|o| hosts.record(hostname, o)))
    }
}

fn apply<T: Message>(map: &mut BTreeMap<String, T>, key: String, entry: &kv::Entry) {
    match entry.operation {
        kv::Operation::Put => match codec::from_cbor::<T>(&entry.value) {
            Ok(value) => {
                map.insert(key, value);
            }
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "unreadable entry left out of the host index");
                map.remove(&key);
            }
        },
        _ => {
            map.remove(&key);
        }
    }
}
