//! Workload collection (SPEC 6): what the scheduler the hosts work for says
//! about each of them, and every task run they finish, recorded once.
//!
//! A sweep lists the workers of every pool the inventory's roles point to,
//! matches them to hosts, and for a host whose latest task changed asks for
//! its recent runs and records each finished one in the task-run stream.
//! Sweeps are jobs in a work queue, one per cycle: any prober replica takes
//! it, and one that dies mid-sweep leaves it to another.

pub mod pools;
pub mod taskcluster;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use fleetroll_bus::codec;
use fleetroll_bus::connect::{Bus, BusError};
use fleetroll_bus::messages::host::{HostIntent, Observation, Population};
use fleetroll_bus::messages::workload::{
    ExpectedPool, Quarantine, RunId, RunResult, TaskRun, Workload, WorkloadSweep,
};
use fleetroll_bus::{subjects, topology};
use serde::Deserialize;
use time::OffsetDateTime;
use tracing::{Instrument, info, info_span, warn};

pub use self::pools::PoolTable;
pub use self::taskcluster::{ClientConfig, ClientCredentials, Taskcluster, WorkerRef};

/// The `[workload]` section of `fleetroll.toml`. What it leaves out comes
/// from Taskcluster's own variables (`TASKCLUSTER_ROOT_URL`,
/// `TASKCLUSTER_CLIENT_ID`, `TASKCLUSTER_ACCESS_TOKEN`,
/// `TASKCLUSTER_CERTIFICATE`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSettings {
    /// Taskcluster's root URL, e.g. `https://firefox-ci-tc.services.mozilla.com`.
    pub root_url: Option<String>,
    /// The provisioner of pools named after a role (`releng-hardware`).
    #[serde(default = "default_provisioner")]
    pub provisioner: String,
    /// Role → `<provisioner>/<worker type>`, over the Firefox CI defaults
    /// ([`pools::FIREFOX_CI_POOLS`]).
    #[serde(default)]
    pub pools: BTreeMap<String, String>,
    /// The Taskcluster client quarantines are set as (with
    /// `access_token_file`).
    pub client_id: Option<String>,
    /// A file holding the client's access token.
    pub access_token_file: Option<PathBuf>,
    /// How often the workload of every host is collected.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// A host counts as doing work when it was active this recently. The
    /// queue updates a worker's last activity only about every 30
    /// minutes, so less than an hour sees busy hosts as idle.
    #[serde(default = "default_active_window", with = "humantime_serde")]
    pub active_window: Duration,
    /// Each request's limit (Taskcluster's client retries server errors
    /// and lost connections 5 times with backoff on top).
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
}

fn default_provisioner() -> String {
    "releng-hardware".to_string()
}

fn default_interval() -> Duration {
    Duration::from_secs(60)
}

fn default_active_window() -> Duration {
    Duration::from_secs(3600)
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}

/// Why `[workload]` and the environment do not make a source.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(
        "[workload] has no root_url and TASKCLUSTER_ROOT_URL is not set: say which Taskcluster to ask"
    )]
    NoRootUrl,
    #[error("[workload] root_url `{0}` is not an http(s) URL")]
    BadRootUrl(String),
    #[error("[workload] client_id needs access_token_file")]
    NoAccessToken,
    #[error("reading the Taskcluster access token from {path}")]
    AccessToken {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("TASKCLUSTER_CLIENT_ID is set but TASKCLUSTER_ACCESS_TOKEN is not")]
    NoAccessTokenVariable,
    #[error(transparent)]
    Pool(#[from] pools::BadPool),
    #[error(transparent)]
    Client(#[from] SourceError),
}

impl WorkloadSettings {
    /// How to reach Taskcluster: `[workload]` first, then what `env` (the
    /// process environment, in production) has for what it leaves out.
    fn client_config(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ClientConfig, SettingsError> {
        let root_url = self
            .root_url
            .clone()
            .or_else(|| env("TASKCLUSTER_ROOT_URL"))
            .filter(|u| !u.is_empty())
            .ok_or(SettingsError::NoRootUrl)?;
        if !(root_url.starts_with("https://") || root_url.starts_with("http://")) {
            return Err(SettingsError::BadRootUrl(root_url));
        }
        let credentials = match (&self.client_id, &self.access_token_file) {
            (Some(client_id), Some(path)) => {
                let token =
                    std::fs::read_to_string(path).map_err(|source| SettingsError::AccessToken {
                        path: path.clone(),
                        source,
                    })?;
                Some(ClientCredentials {
                    client_id: client_id.clone(),
                    access_token: token.trim().to_string(),
                    certificate: None,
                })
            }
            (Some(_), None) => return Err(SettingsError::NoAccessToken),
            (None, _) => match env("TASKCLUSTER_CLIENT_ID").filter(|c| !c.is_empty()) {
                Some(client_id) => Some(ClientCredentials {
                    client_id,
                    access_token: env("TASKCLUSTER_ACCESS_TOKEN")
                        .filter(|t| !t.is_empty())
                        .ok_or(SettingsError::NoAccessTokenVariable)?,
                    certificate: env("TASKCLUSTER_CERTIFICATE").filter(|c| !c.is_empty()),
                }),
                None => None,
            },
        };
        Ok(ClientConfig {
            root_url,
            credentials,
            timeout: self.request_timeout,
        })
    }

    /// The source these settings and `env` make, checked.
    pub fn resolve(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<WorkloadConfig, SettingsError> {
        Ok(WorkloadConfig {
            source: Taskcluster::new(&self.client_config(env)?)?,
            pools: PoolTable::new(&self.provisioner, &self.pools)?,
            interval: self.interval,
        })
    }
}

/// A workload source as the prober runs it.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    pub source: Taskcluster,
    pub pools: PoolTable,
    /// How often every host's workload is collected.
    pub interval: Duration,
}

/// Why the workload source could not answer.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{what}: {source}")]
    Request {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{what}: Taskcluster refused fleetroll's credentials or scopes: {source}")]
    NotAuthorized {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "{what}: no Taskcluster credentials (set [workload] client_id and access_token_file, or TASKCLUSTER_CLIENT_ID and TASKCLUSTER_ACCESS_TOKEN, for the prober)"
    )]
    NoCredentials { what: String },
    #[error("{what}: the answer is not what Taskcluster's schema says: {source}")]
    Unreadable {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what}: still handing out continuation tokens after 1000 pages")]
    EndlessPaging { what: String },
    #[error("Taskcluster does not know worker {0}")]
    UnknownWorker(String),
    #[error("setting up the Taskcluster client for {root_url}: {source}")]
    Setup {
        root_url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
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
    pub capacity: Option<u32>,
    pub provider_id: Option<String>,
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
/// same questions.
pub trait WorkloadSource: Send + Sync {
    fn name(&self) -> &'static str;
    /// The id a host's worker has in the source.
    fn worker_id(&self, hostname: &str) -> String;
    /// Every worker of a pool (`<provisioner>/<worker type>`).
    fn workers(&self, pool: &str) -> impl Future<Output = Result<Vec<Worker>, SourceError>> + Send;
    /// The worker's latest runs, newest last.
    fn recent_runs(
        &self,
        worker: &Worker,
    ) -> impl Future<Output = Result<Vec<RunId>, SourceError>> + Send;
    /// Who quarantined the worker (until `until`), when and why.
    fn quarantine_note(
        &self,
        worker: &Worker,
        until: OffsetDateTime,
    ) -> impl Future<Output = Result<Quarantine, SourceError>> + Send;
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
pub async fn sweep<S: WorkloadSource>(
    bus: &Bus,
    source: &S,
    pools: &PoolTable,
) -> Result<SweepSummary, BusError> {
    let hosts = bus.snapshot::<Observation>(&topology::HOSTS).await?;
    let intents = bus.snapshot::<HostIntent>(&topology::HOST_INTENT).await?;
    let populations = bus.snapshot::<Population>(&topology::POPULATIONS).await?;
    let previous = bus.snapshot::<Workload>(&topology::WORKLOAD).await?;
    let store = bus.kv(&topology::WORKLOAD).await?;

    let expected: HashMap<&str, Option<ExpectedPool>> = hosts
        .values()
        .map(|o| {
            let role = intents
                .get(&o.hostname)
                .and_then(|i| i.expected_role.as_deref())
                .or(o.role.as_deref());
            let pool = pools.for_host(role, o.override_contents.as_deref());
            (o.hostname.as_str(), pool)
        })
        .collect();
    // Beyond the pools hosts should be in, the ones they say they are in
    // and were last seen in: a host found in the wrong pool is a mismatch,
    // not missing.
    let roles = hosts
        .values()
        .filter_map(|o| o.role.as_deref())
        .chain(populations.values().map(|p| p.expected_role.as_str()));
    let to_list: BTreeSet<String> = expected
        .values()
        .flatten()
        .map(|p| p.pool.clone())
        .chain(roles.map(|r| pools.for_role(r).pool))
        .chain(previous.values().filter_map(|w| w.worker_pool.clone()))
        .collect();
    let mut listed: HashMap<String, Vec<Worker>> = HashMap::new();
    let mut failed_pools: BTreeMap<String, SourceError> = BTreeMap::new();
    for chunk in to_list.into_iter().collect::<Vec<_>>().chunks(CONCURRENCY) {
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
    // Before its first probe nothing may name a host's pool yet: it is not
    // known to be missing, so it waits for the next sweep.
    let observations: Vec<&Observation> = hosts
        .values()
        .filter(|o| {
            o.probed_at.is_some() || matches!(expected.get(o.hostname.as_str()), Some(Some(_)))
        })
        .collect();
    for chunk in observations.chunks(CONCURRENCY) {
        let results = futures::future::join_all(chunk.iter().map(|observation| {
            let hostname = &observation.hostname;
            let home = expected.get(hostname.as_str()).cloned().flatten();
            let worker = listed.get(&source.worker_id(hostname)).and_then(|ws| {
                ws.iter()
                    .find(|w| Some(&w.pool) == home.as_ref().map(|h| &h.pool))
                    .or(ws.first())
            });
            // A host whose own pool could not be listed is not known to be
            // missing: say why nothing is known.
            let pool_error = home
                .as_ref()
                .and_then(|p| failed_pools.get(&p.pool))
                .map(|e| e.to_string());
            let host = Host {
                hostname,
                expected: home,
                worker,
                pool_error,
                before: previous.get(hostname),
            };
            collect(bus, source, &store, host, now)
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

/// What a sweep knows about one host before asking more.
struct Host<'a> {
    hostname: &'a str,
    expected: Option<ExpectedPool>,
    /// Its worker, found in its own pool or another.
    worker: Option<&'a Worker>,
    /// Why its own pool could not be listed.
    pool_error: Option<String>,
    before: Option<&'a Workload>,
}

/// Writes one host's new workload record; says what it is and how many runs
/// it newly recorded. The newly finished runs are published
/// to the task-run stream first (under their run id, so a sweep that died
/// before writing the record does not record them twice).
async fn collect<S: WorkloadSource>(
    bus: &Bus,
    source: &S,
    store: &kv::Store,
    host: Host<'_>,
    now: OffsetDateTime,
) -> Result<(Workload, usize), BusError> {
    let Host {
        hostname,
        expected,
        worker,
        pool_error,
        before,
    } = host;
    let mut record = Workload {
        source: source.name().to_string(),
        expected_pool: expected,
        worker_pool: None,
        worker_group: None,
        worker_id: source.worker_id(hostname),
        state: None,
        capacity: None,
        provider_id: None,
        last_active: None,
        first_claim: None,
        latest_task: None,
        quarantine: None,
        collected_at: now,
        error: None,
        recorded: before.map(|b| b.recorded.clone()).unwrap_or_default(),
        pending: before.map(|b| b.pending.clone()).unwrap_or_default(),
    };
    let Some(worker) = worker else {
        // Our trouble asking is not news about the host: what the last
        // sweep learned stands until a sweep can ask again.
        if let (Some(_), Some(before)) = (&pool_error, before) {
            return Ok((before.clone(), 0));
        }
        record.error = pool_error;
        return write(store, hostname, record, 0, before).await;
    };
    record.worker_pool = Some(worker.pool.clone());
    record.worker_group = Some(worker.group.clone());
    record.state = worker.state.clone();
    record.capacity = worker.capacity;
    record.provider_id = worker.provider_id.clone();
    // The queue moves lastDateActive only about every 30 minutes; the
    // runs the worker started say it more precisely.
    record.last_active = worker.last_active.max(before.and_then(|b| b.last_active));
    record.first_claim = worker.first_claim;
    record.latest_task = worker.latest_run.clone();
    if let Some(until) = worker.quarantined_until.filter(|u| *u > now) {
        // The note changes only with the quarantine: asked again when the
        // until-time did.
        let known = before
            .and_then(|b| b.quarantine.clone())
            .filter(|q| q.until == until && q.by.is_some());
        record.quarantine = Some(match known {
            Some(q) => q,
            None => match source.quarantine_note(worker, until).await {
                Ok(q) => q,
                Err(e) => {
                    record.error = Some(e.to_string());
                    Quarantine {
                        until,
                        by: None,
                        at: None,
                        reason: None,
                    }
                }
            },
        });
    }

    let latest_known = worker
        .latest_run
        .as_ref()
        .is_none_or(|r| record.recorded.contains(r));
    if latest_known && record.pending.is_empty() {
        return write(store, hostname, record, 0, before).await;
    }
    let recent = match source.recent_runs(worker).await {
        Ok(recent) => recent,
        Err(e) => {
            record.error = Some(e.to_string());
            return write(store, hostname, record, 0, before).await;
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
                record.last_active = record.last_active.max(started);
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
            Ok(Some(status)) => {
                record.last_active = record.last_active.max(status.started);
                record.pending.push(run);
            }
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
    write(store, hostname, record, newly, before).await
}

/// Writes a host's record. A record that changed since the sweep read it
/// was changed by `host quarantine` or `unquarantine` while the sweep asked
/// Taskcluster: its quarantine is newer than what the sweep saw, and stays.
async fn write(
    store: &kv::Store,
    hostname: &str,
    mut record: Workload,
    newly: usize,
    before: Option<&Workload>,
) -> Result<(Workload, usize), BusError> {
    let failed = |e: Box<dyn std::error::Error + Send + Sync>| BusError::js("writing workload", e);
    for _ in 0..5 {
        let current = store.entry(hostname).await.map_err(|e| failed(e.into()))?;
        let live = current
            .as_ref()
            .filter(|e| e.operation == kv::Operation::Put);
        let Some(entry) = live else {
            store
                .put(hostname, codec::to_cbor(&record).into())
                .await
                .map_err(|e| failed(e.into()))?;
            return Ok((record, newly));
        };
        if let Ok(now) = codec::from_cbor::<Workload>(&entry.value)
            && Some(&now) != before
        {
            record.quarantine = now.quarantine;
        }
        match store
            .update(hostname, codec::to_cbor(&record).into(), entry.revision)
            .await
        {
            Ok(_) => return Ok((record, newly)),
            // Changed again meanwhile: read it once more.
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
            Err(e) => return Err(failed(e.into())),
        }
    }
    Err(BusError::js(
        "writing workload",
        format!("the record of {hostname} kept changing"),
    ))
}

async fn publish_run(bus: &Bus, run: &TaskRun) -> Result<(), BusError> {
    let id = format!("{}.{}.{}", run.hostname, run.task_id, run.run_id);
    bus.publish_once(
        "recording a task run",
        subjects::task_runs(&run.hostname),
        &id,
        codec::to_cbor(run),
    )
    .await
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
        bus.publish_once(
            "queueing a workload sweep",
            subjects::WORKLOAD_SWEEP.to_string(),
            &origin,
            codec::to_cbor(&sweep),
        )
        .await?;
    }
}

/// Takes sweeps one at a time until the consumer cannot be opened (NATS
/// gone).
pub async fn work<S: WorkloadSource + 'static>(
    bus: Bus,
    source: S,
    pools: PoolTable,
) -> Result<(), BusError> {
    let source = Arc::new(source);
    let pools = Arc::new(pools);
    fleetroll_bus::worker::serve_queue(&bus, &topology::WORKLOAD_QUEUE, 1, |message| {
        let (bus, source, pools) = (bus.clone(), source.clone(), pools.clone());
        async move {
            let result = fleetroll_bus::worker::with_progress(
                &message,
                sweep(&bus, source.as_ref(), &pools),
            )
            .await;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(toml_text: &str) -> WorkloadSettings {
        toml::from_str(toml_text).unwrap()
    }

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_section_wins_and_taskclusters_variables_fill_in() {
        let anonymous = settings("").client_config(env(&[(
            "TASKCLUSTER_ROOT_URL",
            "https://firefox-ci-tc.services.mozilla.com",
        )]));
        let anonymous = anonymous.unwrap();
        assert_eq!(
            anonymous.root_url,
            "https://firefox-ci-tc.services.mozilla.com"
        );
        assert_eq!(anonymous.credentials, None);

        let vars = [
            ("TASKCLUSTER_ROOT_URL", "https://elsewhere.example"),
            ("TASKCLUSTER_CLIENT_ID", "project/releng/fleetroll"),
            ("TASKCLUSTER_ACCESS_TOKEN", "sekrit"),
        ];
        let config = settings("root_url = \"http://127.0.0.1:9\"")
            .client_config(env(&vars))
            .unwrap();
        assert_eq!(config.root_url, "http://127.0.0.1:9");
        let credentials = config.credentials.unwrap();
        assert_eq!(credentials.client_id, "project/releng/fleetroll");
        assert_eq!(credentials.access_token, "sekrit");
        assert!(
            !format!("{credentials:?}").contains("sekrit"),
            "tokens stay out of logs"
        );

        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "from-file\n").unwrap();
        let from_file = settings(&format!(
            "client_id = \"project/x\"\naccess_token_file = {:?}",
            token.display().to_string()
        ))
        .client_config(env(&vars))
        .unwrap()
        .credentials
        .unwrap();
        assert_eq!(
            (
                from_file.client_id.as_str(),
                from_file.access_token.as_str()
            ),
            ("project/x", "from-file")
        );
    }

    #[test]
    fn what_cannot_make_a_client_is_said() {
        assert!(matches!(
            settings("").client_config(env(&[])),
            Err(SettingsError::NoRootUrl)
        ));
        assert!(matches!(
            settings("root_url = \"ftp://x\"").client_config(env(&[])),
            Err(SettingsError::BadRootUrl(_))
        ));
        assert!(matches!(
            settings("root_url = \"http://x\"\nclient_id = \"c\"").client_config(env(&[])),
            Err(SettingsError::NoAccessToken)
        ));
        assert!(matches!(
            settings("root_url = \"http://x\"")
                .client_config(env(&[("TASKCLUSTER_CLIENT_ID", "c")])),
            Err(SettingsError::NoAccessTokenVariable)
        ));
        assert!(matches!(
            settings("root_url = \"http://x\"\n[pools]\nr = \"nope\"").resolve(env(&[])),
            Err(SettingsError::Pool(_))
        ));
    }
}
