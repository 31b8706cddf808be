//! Workload collection (SPEC 6): what the scheduler the hosts work for says
//! about each of them, and every task run they finish, recorded once.
//!
//! A sweep lists the workers of every pool the inventory's roles point to,
//! matches them to hosts, and for a host whose latest task changed asks for
//! its recent runs and records each finished one in the task-run stream.
//! Sweeps are jobs in a work queue, one per cycle: any prober replica takes
//! it, and one that dies mid-sweep leaves it to another.

mod taskcluster;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use fleetroll_bus::codec;
use fleetroll_bus::connect::{Bus, BusError};
use fleetroll_bus::messages::host::{HostIntent, Observation, Population};
use fleetroll_bus::messages::workload::{RunId, RunResult, TaskRun, Workload, WorkloadSweep};
use fleetroll_bus::{subjects, topology};
use serde::Deserialize;
use time::OffsetDateTime;
use tracing::{Instrument, info, info_span, warn};

pub use taskcluster::Taskcluster;

/// The `[workload]` section of `fleetroll.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSettings {
    /// Taskcluster's root URL, e.g. `https://firefox-ci-tc.services.mozilla.com`.
    pub root_url: String,
    /// The provisioner of the hosts' worker pools (`releng-hardware`).
    pub provisioner: String,
    /// How often the workload of every host is collected.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// A host counts as doing work when it was active this recently.
    #[serde(default = "default_active_window", with = "humantime_serde")]
    pub active_window: Duration,
}

fn default_interval() -> Duration {
    Duration::from_secs(60)
}

fn default_active_window() -> Duration {
    Duration::from_secs(3600)
}

/// Why the workload source could not answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    #[error("{url}: {detail}")]
    Request { url: String, detail: String },
    #[error("`{0}` is not a name the workload source accepts")]
    BadName(String),
}

/// A worker as the source lists it.
#[derive(Debug, Clone)]
pub struct Worker {
    pub pool: String,
    pub group: String,
    pub worker_id: String,
    pub state: Option<String>,
    pub last_active: Option<OffsetDateTime>,
    pub first_claim: Option<OffsetDateTime>,
    pub latest_run: Option<RunId>,
    pub quarantined_until: Option<OffsetDateTime>,
}

/// Where a task run is: `result` is set (with when it resolved) once it
/// finished.
#[derive(Debug, Clone)]
pub struct RunStatus {
    pub result: Option<(RunResult, OffsetDateTime)>,
    pub reason: Option<String>,
    pub started: Option<OffsetDateTime>,
}

/// A scheduler hosts do work for. Taskcluster today; others fit behind the
/// same four questions.
pub trait WorkloadSource: Send + Sync {
    fn name(&self) -> &'static str;
    /// The id a host's worker has in the source.
    fn worker_id(&self, hostname: &str) -> String;
    /// The pool hosts of a role work in.
    fn pool_for_role(&self, role: &str) -> String;
    fn workers(&self, pool: &str) -> impl Future<Output = Result<Vec<Worker>, SourceError>> + Send;
    /// The worker's latest runs, newest last.
    fn recent_runs(
        &self,
        worker: &Worker,
    ) -> impl Future<Output = Result<Vec<RunId>, SourceError>> + Send;
    /// A run's status; `None` when the source does not know it.
    fn run(&self, run: &str)
    -> impl Future<Output = Result<Option<RunStatus>, SourceError>> + Send;
}

/// How many recorded run ids a host's record remembers: more than the
/// source ever lists as recent, so a run is never recorded twice.
const REMEMBERED_RUNS: usize = 100;

/// Hosts (and pools) asked about at once.
const CONCURRENCY: usize = 16;

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepSummary {
    pub hosts: usize,
    pub unknown_to_source: usize,
    pub runs_recorded: usize,
}

/// Collects the workload of every host once.
pub async fn sweep<S: WorkloadSource>(bus: &Bus, source: &S) -> Result<SweepSummary, BusError> {
    let hosts = bus.snapshot::<Observation>(&topology::HOSTS).await?;
    let intents = bus.snapshot::<HostIntent>(&topology::HOST_INTENT).await?;
    let populations = bus.snapshot::<Population>(&topology::POPULATIONS).await?;
    let previous = bus.snapshot::<Workload>(&topology::WORKLOAD).await?;
    let store = bus.kv(&topology::WORKLOAD).await?;

    let roles = hosts
        .values()
        .filter_map(|o| o.role.clone())
        .chain(intents.values().filter_map(|i| i.expected_role.clone()))
        .chain(populations.values().map(|p| p.expected_role.clone()));
    let pools: BTreeSet<String> = roles.map(|r| source.pool_for_role(&r)).collect();
    let mut listed: HashMap<String, Vec<Worker>> = HashMap::new();
    let mut failed_pools: BTreeMap<String, SourceError> = BTreeMap::new();
    for chunk in pools.into_iter().collect::<Vec<_>>().chunks(CONCURRENCY) {
        let answers =
            futures::future::join_all(chunk.iter().map(|pool| source.workers(pool))).await;
        for (pool, answer) in chunk.iter().zip(answers) {
            match answer {
                Ok(workers) => {
                    for w in workers {
                        listed.entry(w.worker_id.clone()).or_default().push(w);
                    }
                }
                Err(e) => {
                    warn!(pool = %pool, error = %e, "workload source did not list the pool");
                    failed_pools.insert(pool.clone(), e);
                }
            }
        }
    }

    let now = OffsetDateTime::now_utc();
    let mut summary = SweepSummary {
        hosts: hosts.len(),
        ..Default::default()
    };
    let observations: Vec<&Observation> = hosts.values().collect();
    for chunk in observations.chunks(CONCURRENCY) {
        let results = futures::future::join_all(chunk.iter().map(|observation| {
            let hostname = &observation.hostname;
            let role = intents
                .get(hostname)
                .and_then(|i| i.expected_role.clone())
                .or_else(|| observation.role.clone());
            let home = role.map(|r| source.pool_for_role(&r));
            let worker = listed.get(&source.worker_id(hostname)).and_then(|ws| {
                ws.iter()
                    .find(|w| Some(&w.pool) == home.as_ref())
                    .or(ws.first())
            });
            // A host whose own pool could not be listed is not known to be
            // missing: say why nothing is known.
            let pool_error = home
                .as_ref()
                .and_then(|p| failed_pools.get(p))
                .map(|e| e.to_string());
            let before = previous.get(hostname);
            collect(
                bus, source, &store, hostname, worker, pool_error, before, now,
            )
            .instrument(info_span!("workload", host = %hostname))
        }))
        .await;
        for result in results {
            let (record, recorded) = result?;
            summary.runs_recorded += recorded;
            summary.unknown_to_source +=
                usize::from(record.worker_pool.is_none() && record.error.is_none());
        }
    }
    // Hosts removed from the inventory take their workload record along.
    for name in previous.keys().filter(|n| !hosts.contains_key(*n)) {
        let _ = store.delete(name).await;
    }
    Ok(summary)
}

/// Writes one host's new workload record; says what it is and how many runs
/// it newly recorded. The newly finished runs are published
/// to the task-run stream first (under their run id, so a sweep that died
/// before writing the record does not record them twice).
#[allow(clippy::too_many_arguments)]
async fn collect<S: WorkloadSource>(
    bus: &Bus,
    source: &S,
    store: &kv::Store,
    hostname: &str,
    worker: Option<&Worker>,
    pool_error: Option<String>,
    before: Option<&Workload>,
    now: OffsetDateTime,
) -> Result<(Workload, usize), BusError> {
    let mut record = Workload {
        source: source.name().to_string(),
        worker_pool: None,
        worker_id: source.worker_id(hostname),
        state: None,
        last_active: None,
        first_claim: None,
        latest_task: None,
        quarantined_until: None,
        collected_at: now,
        error: None,
        recorded: before.map(|b| b.recorded.clone()).unwrap_or_default(),
        pending: before.map(|b| b.pending.clone()).unwrap_or_default(),
    };
    let Some(worker) = worker else {
        record.error = pool_error;
        return write(store, hostname, record, 0).await;
    };
    record.worker_pool = Some(worker.pool.clone());
    record.state = worker.state.clone();
    record.last_active = worker.last_active;
    record.first_claim = worker.first_claim;
    record.latest_task = worker.latest_run.clone();
    record.quarantined_until = worker.quarantined_until;

    let latest_known = worker
        .latest_run
        .as_ref()
        .is_none_or(|r| record.recorded.contains(r));
    if latest_known && record.pending.is_empty() {
        return write(store, hostname, record, 0).await;
    }
    let recent = match source.recent_runs(worker).await {
        Ok(recent) => recent,
        Err(e) => {
            record.error = Some(e.to_string());
            return write(store, hostname, record, 0).await;
        }
    };
    let mut newly = 0;
    let mut to_check: Vec<RunId> = std::mem::take(&mut record.pending);
    for run in recent {
        if !record.recorded.contains(&run) && !to_check.contains(&run) {
            to_check.push(run);
        }
    }
    for run in to_check {
        match source.run(&run).await {
            Ok(Some(RunStatus {
                result: Some((result, resolved)),
                reason,
                started,
            })) => {
                let (task_id, run_id) = run.split_once('/').unwrap_or((&run, "0"));
                let task_run = TaskRun {
                    hostname: hostname.to_string(),
                    worker_pool: worker.pool.clone(),
                    task_id: task_id.to_string(),
                    run_id: run_id.parse().unwrap_or(0),
                    result,
                    reason,
                    started,
                    resolved,
                };
                publish_run(bus, &task_run).await?;
                record.recorded.push(run);
                newly += 1;
            }
            Ok(Some(_)) => record.pending.push(run),
            // Gone from the source (expired): nothing to record.
            Ok(None) => {}
            Err(e) => {
                record.error = Some(e.to_string());
                record.pending.push(run);
            }
        }
    }
    let excess = record.recorded.len().saturating_sub(REMEMBERED_RUNS);
    record.recorded.drain(..excess);
    write(store, hostname, record, newly).await
}

async fn write(
    store: &kv::Store,
    hostname: &str,
    record: Workload,
    newly: usize,
) -> Result<(Workload, usize), BusError> {
    store
        .put(hostname, codec::to_cbor(&record).into())
        .await
        .map_err(|e| BusError::js("writing workload", e))?;
    Ok((record, newly))
}

async fn publish_run(bus: &Bus, run: &TaskRun) -> Result<(), BusError> {
    let id = format!("{}.{}.{}", run.hostname, run.task_id, run.run_id);
    publish_once(
        bus,
        subjects::task_runs(&run.hostname),
        &id,
        codec::to_cbor(run),
    )
    .await
}

/// Publishes with `id` as `Nats-Msg-Id` and waits for the stream to store
/// it: the same id published again within the duplicate window is kept out.
async fn publish_once(
    bus: &Bus,
    subject: String,
    id: &str,
    payload: Vec<u8>,
) -> Result<(), BusError> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
    let failed = |e: &dyn std::fmt::Display| BusError::js(format!("publishing to {subject}"), e);
    bus.js
        .publish_with_headers(subject.clone(), headers, payload.into())
        .await
        .map_err(|e| failed(&e))?
        .await
        .map_err(|e| failed(&e))?;
    Ok(())
}

/// Queues one sweep at every whole `interval` (aligned to the clock, so all
/// replicas name the cycle alike and the queue keeps one sweep per cycle).
pub async fn schedule(bus: Bus, interval: Duration) -> Result<(), BusError> {
    let seconds = interval.as_secs().max(1);
    loop {
        let now = OffsetDateTime::now_utc().unix_timestamp() as u64;
        let next = (now / seconds + 1) * seconds;
        tokio::time::sleep(Duration::from_secs(next - now)).await;
        let origin = format!("workload-{seconds}-{}", next / seconds);
        let sweep = WorkloadSweep {
            requested_at: OffsetDateTime::now_utc(),
            origin: origin.clone(),
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, origin.as_str());
        bus.js
            .publish_with_headers(
                subjects::WORKLOAD_SWEEP,
                headers,
                codec::to_cbor(&sweep).into(),
            )
            .await
            .map_err(|e| BusError::js("queueing a workload sweep", e))?
            .await
            .map_err(|e| BusError::js("queueing a workload sweep", e))?;
    }
}

/// Takes sweeps one at a time until the consumer cannot be opened (NATS
/// gone).
pub async fn work<S: WorkloadSource + 'static>(bus: Bus, source: S) -> Result<(), BusError> {
    let source = Arc::new(source);
    fleetroll_bus::worker::serve_queue(&bus, &topology::WORKLOAD_QUEUE, 1, |message| {
        let (bus, source) = (bus.clone(), source.clone());
        async move {
            let result =
                fleetroll_bus::worker::with_progress(&message, sweep(&bus, source.as_ref())).await;
            match result {
                Ok(summary) => {
                    info!(
                        hosts = summary.hosts,
                        unknown = summary.unknown_to_source,
                        runs = summary.runs_recorded,
                        "workload collected"
                    );
                    let _ = message.double_ack().await;
                }
                Err(e) => {
                    warn!(error = %e, "workload sweep failed; left for retry");
                    fleetroll_bus::worker::retry_later(&message).await;
                }
            }
        }
    })
    .await
}
