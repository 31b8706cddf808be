//! A Taskcluster double: the queue's and worker-manager's worker and task
//! endpoints for the lab's hosts, serving what the real services serve for
//! static hardware and nothing more.
//!
//! Each host is the worker whose id is its short name, in the pool its
//! role names (see [`pools`]), or the worker type its override file's
//! `WORKER_TYPE_OVERRIDE` gives. It claims a run each slot (see [`jobs`])
//! while it is up and not quarantined in that pool; runs fail while the
//! branch Puppet last applied is bad, end at the host's `job_reasons`
//! shares, and the reasons the queue retries give the task another run.
//! [`ledger`] keeps each host's tasks and worker rows, brought up to date
//! when asked.

pub(crate) mod api;
pub(crate) mod auth;
pub(crate) mod hashids;
pub(crate) mod jobs;
pub(crate) mod ledger;
pub(crate) mod pools;
mod queue;
pub(crate) mod reply;
pub(crate) mod scopes;
pub(crate) mod slugid;
mod tasks;
mod worker_manager;
pub(crate) mod workers;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use crate::runtime::{HostRt, HostState, Shared};
use crate::scenario::TaskclusterSpec;
use jobs::{History, Schedule};
use ledger::{Cx, Ledger};
use pools::PoolId;
use workers::{QuarantineDetail, WorkerRecord};

/// What the double keeps besides the hosts' ledgers.
#[derive(Debug)]
pub(crate) struct TcState {
    pub clients: auth::Clients,
    /// The clientId the lab's own quarantines are recorded under.
    pub lab_client_id: String,
    fail_rate: AtomicU64,
    requests: AtomicU64,
    /// Rows of workers that expired long ago (`expired_workers` per pool).
    pub expired: Mutex<Vec<WorkerRecord>>,
}

impl TcState {
    pub(crate) fn new(
        clients: auth::Clients,
        lab_client_id: String,
        fail_rate: f64,
        expired: Vec<WorkerRecord>,
    ) -> TcState {
        TcState {
            clients,
            lab_client_id,
            fail_rate: AtomicU64::new(fail_rate.to_bits()),
            requests: AtomicU64::new(0),
            expired: Mutex::new(expired),
        }
    }

    pub(crate) fn set_fail_rate(&self, rate: f64) {
        self.fail_rate.store(rate.to_bits(), Ordering::SeqCst);
    }

    /// Whether the load balancer fails this request: a deterministic
    /// pseudo-random draw per request, so the share holds over any run of
    /// requests without failing them in a pattern a client could learn.
    pub(crate) fn fails_next(&self) -> bool {
        let rate = f64::from_bits(self.fail_rate.load(Ordering::SeqCst));
        if rate <= 0.0 {
            return false;
        }
        let n = self.requests.fetch_add(1, Ordering::SeqCst);
        let u = jobs::hash64(&[b"lb", &n.to_be_bytes()]) as f64 / u64::MAX as f64;
        u < rate
    }
}

/// The pool a host of `role` works in with `override_content` in its
/// override file.
pub(crate) fn pool_of(
    spec: &TaskclusterSpec,
    role: &str,
    override_content: Option<&[u8]>,
) -> Option<PoolId> {
    let wt = override_content.and_then(pools::worker_type_override);
    pools::pool_for(&spec.pools, &spec.provisioner, role, wt.as_deref())
}

/// A new host's ledger: known to the queue in its pool from the lab's start.
pub(crate) fn new_ledger(
    spec: &TaskclusterSpec,
    start: SystemTime,
    pool: Option<PoolId>,
    short: &str,
) -> Ledger {
    Ledger::new(
        start,
        pool,
        &spec.worker_group,
        short,
        spec.worker_info_update_frequency,
    )
}

/// Re-reads a host's override file and moves it to the pool it names from
/// now on (the override watcher calls this on every change).
pub(crate) fn refresh_pool(shared: &Shared, host: &HostRt) {
    let content = host
        .layout
        .on_host(host.os.override_path())
        .and_then(|p| std::fs::read(p).ok());
    let mut st = host.lock();
    let pool = pool_of(&shared.taskcluster, &st.cfg.role, content.as_deref());
    st.tc.set_pool(SystemTime::now(), pool);
}

/// Brings a host's ledger up to now and hands it to `f` with the moment it
/// stands at.
pub(crate) fn with_ledger<R>(
    shared: &Shared,
    host: &HostRt,
    f: impl FnOnce(&mut Ledger, &Cx<'_>, SystemTime) -> R,
) -> R {
    shared.refresh_runs(host);
    let tracking_lost = host.lock().override_tracking.is_err();
    if tracking_lost {
        // The watcher may have missed changes: read the file instead.
        refresh_pool(shared, host);
    }
    let bad = shared
        .bad_branches
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let mut guard = host.lock();
    let now = SystemTime::now();
    let HostState {
        cfg,
        downtime,
        runs,
        tc,
        ..
    } = &mut *guard;
    let spec = &shared.taskcluster;
    let cx = Cx {
        lab_id: &shared.id,
        host_index: host.index as u16,
        worker_group: &spec.worker_group,
        worker_id: &host.short,
        schedule: Schedule::new(shared.started, cfg.jobs_per_minute, &host.short),
        history: History {
            down: downtime,
            runs,
            bad: &bad,
            fail_on_puppet_failure: spec.fail_on_puppet_failure,
            failure_rate: cfg.job_failure_rate,
            reasons: &cfg.job_reasons,
            host: &host.short,
        },
        update_every: spec.worker_info_update_frequency,
        retries: spec.task_retries,
    };
    tc.advance(&cx, now);
    f(tc, &cx, now)
}

/// Why a quarantine could not be recorded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum QuarantineError {
    /// The queue has no row for that worker in that pool.
    UnknownWorker,
}

/// quarantineWorker on a lab host's row in `pool` (or, with `None`, the
/// pool it works in now): returns the updated row.
pub(crate) fn quarantine_host(
    shared: &Shared,
    host: &HostRt,
    pool: Option<&PoolId>,
    until: SystemTime,
    quarantine_until: String,
    client_id: &str,
    info: &str,
) -> Result<WorkerRecord, QuarantineError> {
    with_ledger(shared, host, |ledger, _, now| {
        let pool = pool
            .or(ledger.current_pool())
            .cloned()
            .ok_or(QuarantineError::UnknownWorker)?;
        let detail = QuarantineDetail {
            client_id: client_id.to_string(),
            updated_at: now,
            quarantine_until,
            until,
            info: info.to_string(),
        };
        if !ledger.quarantine(&pool, detail) {
            return Err(QuarantineError::UnknownWorker);
        }
        ledger
            .worker(&pool)
            .cloned()
            .ok_or(QuarantineError::UnknownWorker)
    })
}

/// The expired rows the queue still pages over: `n` per pool, named after
/// live workers so they fall among them in the listing's order.
pub(crate) fn expired_rows(
    spec: &TaskclusterSpec,
    start: SystemTime,
    hosts: &BTreeMap<PoolId, Vec<String>>,
) -> Vec<WorkerRecord> {
    let n = spec.expired_workers;
    let mut rows = Vec::new();
    for (pool, names) in hosts {
        let mut names = names.clone();
        names.sort();
        for i in 0..n {
            let Some(near) = names.get(i * names.len() / n.max(1)) else {
                continue;
            };
            rows.push(WorkerRecord::expired(
                pool.clone(),
                &spec.worker_group,
                &format!("{near}-gone{}", i + 1),
                start,
            ));
        }
    }
    rows
}
