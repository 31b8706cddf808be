//! Every host's record in memory: each bucket a record is made of, watched
//! from its history, so a query over 100,000 hosts filters memory rather
//! than reading 100,000 entries. The prober's read queries answer from it;
//! the orchestrator resolves rollout targets with it.
//!
//! A query first learns each bucket's last revision and waits until the
//! index has applied it, so an answer never predates a write the caller
//! already saw acknowledged (a refresh, then a list).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::codec::{self, Message};
use crate::connect::{Bus, BusError};
use crate::filter::Query;
use crate::messages::host::{
    Drift, DriftCount, DriftSummary, DriftType, HostIntent, HostRecord, HostView, Observation,
};
use crate::messages::workload::Workload;
use crate::topology::{self, BucketDef};
use async_nats::jetstream::kv;
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

/// What the buckets hold about one host. Boxed, so that a scan walks small
/// map nodes and touches only the parts a query reads.
#[derive(Default)]
struct Parts {
    observation: Option<Box<Observation>>,
    intent: Option<Box<HostIntent>>,
    verdict: Option<Box<Drift>>,
    workload: Option<Box<Workload>>,
}

impl Parts {
    fn view(&self) -> Option<HostView<'_>> {
        Some(HostView {
            observation: self.observation.as_deref()?,
            intent: self.intent.as_deref(),
            drift: self.verdict.as_ref().map_or(&[], |d| &d.types),
            healthy: self.verdict.as_ref().and_then(|d| d.healthy),
            workload: self.workload.as_deref(),
        })
    }

    fn is_empty(&self) -> bool {
        self.observation.is_none()
            && self.intent.is_none()
            && self.verdict.is_none()
            && self.workload.is_none()
    }
}

fn record(view: HostView<'_>) -> HostRecord {
    HostRecord {
        observation: view.observation.clone(),
        intent: view.intent.cloned().unwrap_or_default(),
        drift: view.drift.to_vec(),
        healthy: view.healthy,
        workload: view.workload.cloned(),
    }
}

/// Why the index could not answer.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("the host index is still catching up with the buckets after {0:?}")]
    Behind(Duration),
    #[error("the host index lost its watch of the buckets and is watching again: {0}")]
    Interrupted(String),
}

/// Every host's record, kept current in memory.
pub struct HostIndex {
    bus: Bus,
    hosts: RwLock<BTreeMap<String, Parts>>,
    /// The revision of each bucket the index has applied.
    applied: watch::Sender<Revisions>,
    failure: RwLock<Option<String>>,
}

/// How long a query waits for the index to catch up.
const CATCH_UP: Duration = Duration::from_secs(10);

/// How long after a broken watch the index watches again.
const REWATCH_AFTER: Duration = Duration::from_secs(1);

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
            // A watch breaks when the node serving it goes (a cluster losing
            // a node, a server restart); the index watches again from the
            // revisions it has, rather than serve stale records for good.
            while let Err(e) = maintained.maintain().await {
                tracing::warn!(error = %e, "host index watch broke; watching again");
                *maintained
                    .failure
                    .write()
                    .unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                // Wake the waiters so they see the failure.
                maintained.applied.send_modify(|_| {});
                tokio::time::sleep(REWATCH_AFTER).await;
            }
        });
        index
    }

    /// Applies the buckets' changes from the revisions already applied on;
    /// returns `Ok` once nothing but this task holds the index.
    async fn maintain(self: &Arc<Self>) -> Result<(), BusError> {
        let mut watches = Vec::new();
        let from = *self.applied.borrow();
        for (slot, bucket) in BUCKETS.iter().enumerate() {
            let watch = self
                .bus
                .kv(bucket)
                .await?
                .watch_all_from_revision(from[slot] + 1)
                .await
                .map_err(|e| BusError::js(format!("watching {}", bucket.name), e))?;
            watches.push(watch.map(move |entry| (slot, entry)));
        }
        *self.failure.write().unwrap_or_else(|e| e.into_inner()) = None;
        let mut entries = futures::stream::select_all(watches);
        let mut still_used = tokio::time::interval(REWATCH_AFTER * 30);
        loop {
            let (slot, entry) = tokio::select! {
                next = entries.next() => match next {
                    Some(next) => next,
                    None => return Err(BusError::js("watching the host buckets", "the watch ended")),
                },
                _ = still_used.tick() => {
                    if Arc::strong_count(self) == 1 {
                        return Ok(());
                    }
                    continue;
                }
            };
            let entry =
                entry.map_err(|e| BusError::js(format!("watching {}", BUCKETS[slot].name), e))?;
            {
                let mut hosts = self.hosts.write().unwrap_or_else(|e| e.into_inner());
                let parts = hosts.entry(entry.key.clone()).or_default();
                match slot {
                    0 => parts.observation = decode(&entry),
                    1 => parts.intent = decode(&entry),
                    2 => parts.verdict = decode(&entry),
                    _ => parts.workload = decode(&entry),
                }
                if parts.is_empty() {
                    hosts.remove(&entry.key);
                }
            }
            self.applied
                .send_modify(|r| r[slot] = r[slot].max(entry.revision));
        }
    }

    /// Waits until the index holds every write the buckets have taken.
    async fn caught_up(&self) -> Result<(), IndexError> {
        let mut wanted: Revisions = [0; 4];
        let statuses = futures::future::join_all(BUCKETS.iter().map(|bucket| async move {
            self.bus.bucket_state(bucket).await.map(|s| s.last_sequence)
        }))
        .await;
        for (slot, status) in statuses.into_iter().enumerate() {
            wanted[slot] = status?;
        }
        let mut applied = self.applied.subscribe();
        let wait = applied.wait_for(|r| {
            r.iter().zip(wanted).all(|(have, want)| *have >= want)
                || self.failure.read().map(|f| f.is_some()).unwrap_or(true)
        });
        match tokio::time::timeout(CATCH_UP, wait).await {
            Err(_) => Err(IndexError::Behind(CATCH_UP)),
            Ok(Err(_)) => Err(IndexError::Interrupted("closed".into())),
            Ok(Ok(_)) => match self.failure.read().ok().and_then(|f| f.clone()) {
                Some(e) => Err(IndexError::Interrupted(e)),
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
            Some(a) => hosts.range::<str, _>((Bound::Excluded(a), Bound::Unbounded)),
            None => hosts.range::<str, _>(..),
        };
        let mut page: Vec<HostRecord> = Vec::new();
        for view in range.filter_map(|(_, parts)| parts.view()) {
            if !query.matches_at(&|f| view.field(f), now) {
                continue;
            }
            let found = record(view);
            if !take(&found) {
                let next = page.last().map(|r| r.observation.hostname.clone());
                return Ok((page, next));
            }
            page.push(found);
        }
        Ok((page, None))
    }

    /// Counts of every drift type and of health, over every host.
    pub async fn drift_summary(&self) -> Result<DriftSummary, IndexError> {
        self.caught_up().await?;
        let hosts = self.hosts.read().unwrap_or_else(|e| e.into_inner());
        let mut summary = DriftSummary {
            types: DriftType::ALL
                .iter()
                .map(|&drift_type| DriftCount {
                    drift_type,
                    count: 0,
                    hosts: Vec::new(),
                })
                .collect(),
            ..Default::default()
        };
        for (name, view) in hosts.iter().filter_map(|(n, p)| Some((n, p.view()?))) {
            summary.hosts += 1;
            summary.drifting += usize::from(!view.drift.is_empty());
            let o = view.observation;
            let state = if view.intent.is_some_and(|i| i.disabled) {
                "disabled"
            } else {
                match o.sshable {
                    Some(true) => "reachable",
                    Some(false) => "unreachable",
                    None => "not_probed",
                }
            };
            *summary.by_state.entry(state.into()).or_default() += 1;
            let role = o.role.clone().unwrap_or_else(|| "unknown".into());
            *summary.by_role.entry(role).or_default() += 1;
            let sha = o
                .puppet
                .as_ref()
                .and_then(|p| p.git_sha.clone())
                .unwrap_or_else(|| "unknown".into());
            *summary.by_puppet_sha.entry(sha).or_default() += 1;
            match view.healthy {
                Some(true) => summary.healthy += 1,
                Some(false) => summary.unhealthy += 1,
                None => summary.health_unknown += 1,
            }
            for count in &mut summary.types {
                if view.drift.contains(&count.drift_type) {
                    count.count += 1;
                    if count.hosts.len() < DriftSummary::SAMPLE {
                        count.hosts.push(name.clone());
                    }
                }
            }
        }
        Ok(summary)
    }

    /// One host's record.
    pub async fn get(&self, hostname: &str) -> Result<Option<HostRecord>, IndexError> {
        self.caught_up().await?;
        let hosts = self.hosts.read().unwrap_or_else(|e| e.into_inner());
        Ok(hosts.get(hostname).and_then(Parts::view).map(record))
    }
}

/// An entry's value; `None` for a deletion (and for an unreadable value,
/// which is logged and left out).
fn decode<T: Message>(entry: &kv::Entry) -> Option<Box<T>> {
    if entry.operation != kv::Operation::Put {
        return None;
    }
    codec::from_cbor(&entry.value)
        .inspect_err(|e| {
            tracing::warn!(key = %entry.key, error = %e, "unreadable entry left out of the host index")
        })
        .ok()
        .map(Box::new)
}
