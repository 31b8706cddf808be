//! What the queue keeps about a worker in one task queue (a `queue_workers`
//! row), and how the queue and worker-manager serialise it.
//!
//! The queue learns of a worker when it first calls `claimWork`, and
//! afterwards writes `lastDateActive` and `expires` (a day on) at most once
//! per update period (30 minutes) while the worker keeps calling it. A
//! quarantine is a date; lifting one sets it to now; each change appends a
//! details entry.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};

use super::pools::PoolId;
use super::reply::tc_date;

/// How long after the last update a worker row expires.
pub(crate) const WORKER_LIFETIME: Duration = Duration::from_secs(86_400);

/// What a new row's `quarantineUntil` is: ten years before it was made.
const NEVER_QUARANTINED: Duration = Duration::from_secs(10 * 365 * 86_400);

/// The queue keeps a worker's 20 most recent task runs.
pub(crate) const RECENT_TASKS: usize = 20;

/// One entry of a worker's quarantine history.
#[derive(Debug, Clone)]
pub(crate) struct QuarantineDetail {
    pub client_id: String,
    pub updated_at: SystemTime,
    /// As the request gave it (the queue stores the text it received).
    pub quarantine_until: String,
    pub until: SystemTime,
    pub info: String,
}

/// A `{taskId, runId}` the worker claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaskRun {
    pub task_id: String,
    pub run_id: u32,
}

impl TaskRun {
    fn json(&self) -> Value {
        json!({"taskId": self.task_id, "runId": self.run_id})
    }
}

/// A worker as one task queue knows it.
#[derive(Debug, Clone)]
pub(crate) struct WorkerRecord {
    pub pool: PoolId,
    pub group: String,
    pub id: String,
    pub first_claim: SystemTime,
    pub last_date_active: Option<SystemTime>,
    pub expires: SystemTime,
    next_update: SystemTime,
    pub quarantine_until: SystemTime,
    pub details: Vec<QuarantineDetail>,
    pub recent: VecDeque<TaskRun>,
}

impl WorkerRecord {
    /// The row the queue makes when the worker is first seen at `at`.
    pub(crate) fn first_seen(
        pool: PoolId,
        group: &str,
        id: &str,
        at: SystemTime,
        every: Duration,
    ) -> WorkerRecord {
        WorkerRecord {
            pool,
            group: group.to_string(),
            id: id.to_string(),
            first_claim: at,
            last_date_active: Some(at),
            expires: at + WORKER_LIFETIME,
            next_update: at + every,
            quarantine_until: at - NEVER_QUARANTINED,
            details: Vec::new(),
            recent: VecDeque::new(),
        }
    }

    /// A row for a worker last seen long before the lab started, expired
    /// since: the queue still pages over it until its daily clean-up.
    pub(crate) fn expired(pool: PoolId, group: &str, id: &str, lab_start: SystemTime) -> Self {
        let day = Duration::from_secs(86_400);
        let first = lab_start - day * 60;
        let last = lab_start - day * 30;
        WorkerRecord {
            pool,
            group: group.to_string(),
            id: id.to_string(),
            first_claim: first,
            last_date_active: Some(last),
            expires: last + WORKER_LIFETIME,
            next_update: last,
            quarantine_until: first - NEVER_QUARANTINED,
            details: Vec::new(),
            recent: VecDeque::new(),
        }
    }

    /// The worker was calling the queue without a break over `[from, to]`:
    /// the updates the queue made meanwhile, one per period at most.
    pub(crate) fn seen_over(&mut self, from: SystemTime, to: SystemTime, every: Duration) {
        let first = self.next_update.max(from);
        if first > to {
            return;
        }
        let steps = if every.is_zero() {
            0
        } else {
            (to.duration_since(first).unwrap_or_default().as_nanos() / every.as_nanos()) as u32
        };
        let at = if every.is_zero() {
            to
        } else {
            first + every * steps
        };
        self.last_date_active = Some(at);
        self.expires = self.expires.max(at + WORKER_LIFETIME);
        self.next_update = at + every;
    }

    /// Whether the worker was quarantined at `t` (the latest change made by
    /// then set a date after `t`).
    pub(crate) fn quarantined_at(&self, t: SystemTime) -> bool {
        self.details
            .iter()
            .rfind(|d| d.updated_at <= t)
            .is_some_and(|d| d.until > t)
    }

    /// quarantineWorker: sets the date, keeps the row for a day at least,
    /// and appends the change to the history.
    pub(crate) fn quarantine(&mut self, detail: QuarantineDetail) {
        self.quarantine_until = detail.until;
        self.expires = self.expires.max(detail.updated_at + WORKER_LIFETIME);
        self.details.push(detail);
    }

    /// Neither expired nor quarantined past its expiry.
    pub(crate) fn live(&self, now: SystemTime) -> bool {
        self.expires >= now || self.quarantine_until >= now
    }

    pub(crate) fn claimed(&mut self, run: TaskRun) {
        if self.recent.len() >= RECENT_TASKS {
            self.recent.pop_front();
        }
        self.recent.push_back(run);
    }

    fn latest_task(&self) -> Option<Value> {
        self.recent.back().map(TaskRun::json)
    }

    fn recent_json(&self) -> Value {
        Value::Array(self.recent.iter().map(TaskRun::json).collect())
    }

    fn details_json(&self) -> Value {
        Value::Array(
            self.details
                .iter()
                .map(|d| {
                    json!({
                        "clientId": d.client_id,
                        "updatedAt": tc_date(d.updated_at),
                        "quarantineUntil": d.quarantine_until,
                        "quarantineInfo": d.info,
                    })
                })
                .collect(),
        )
    }

    /// An item of the queue's listWorkers.
    pub(crate) fn queue_list_item(&self, now: SystemTime) -> Value {
        let mut m = Map::new();
        m.insert("workerGroup".into(), json!(self.group));
        m.insert("workerId".into(), json!(self.id));
        m.insert("firstClaim".into(), json!(tc_date(self.first_claim)));
        if let Some(t) = self.last_date_active {
            m.insert("lastDateActive".into(), json!(tc_date(t)));
        }
        if let Some(t) = self.latest_task() {
            m.insert("latestTask".into(), t);
        }
        if self.quarantine_until > now {
            m.insert(
                "quarantineUntil".into(),
                json!(tc_date(self.quarantine_until)),
            );
        }
        Value::Object(m)
    }

    /// The queue's getWorker (and quarantineWorker) answer: no quarantine
    /// details, which `Worker.serialize()` leaves out.
    pub(crate) fn queue_worker(&self) -> Value {
        let mut m = Map::new();
        m.insert("provisionerId".into(), json!(self.pool.provisioner));
        m.insert("workerType".into(), json!(self.pool.worker_type));
        m.insert("taskQueueId".into(), json!(self.pool.to_string()));
        m.insert("workerGroup".into(), json!(self.group));
        m.insert("workerId".into(), json!(self.id));
        m.insert(
            "quarantineUntil".into(),
            json!(tc_date(self.quarantine_until)),
        );
        m.insert("expires".into(), json!(tc_date(self.expires)));
        m.insert("firstClaim".into(), json!(tc_date(self.first_claim)));
        m.insert("recentTasks".into(), self.recent_json());
        if let Some(t) = self.last_date_active {
            m.insert("lastDateActive".into(), json!(tc_date(t)));
        }
        Value::Object(m)
    }

    /// Worker-manager's view of a worker it does not manage (static
    /// hardware): `standalone`, capacity 0, provider `none`.
    fn wm_common(&self, m: &mut Map<String, Value>) {
        m.insert("workerPoolId".into(), json!(self.pool.to_string()));
        m.insert("workerGroup".into(), json!(self.group));
        m.insert("workerId".into(), json!(self.id));
        m.insert("providerId".into(), json!("none"));
        m.insert("state".into(), json!("standalone"));
        m.insert("capacity".into(), json!(0));
        m.insert("firstClaim".into(), json!(tc_date(self.first_claim)));
        if let Some(t) = self.last_date_active {
            m.insert("lastDateActive".into(), json!(tc_date(t)));
        }
        m.insert(
            "quarantineUntil".into(),
            json!(tc_date(self.quarantine_until)),
        );
    }

    /// An item of worker-manager's listWorkers.
    pub(crate) fn wm_list_item(&self) -> Value {
        let mut m = Map::new();
        self.wm_common(&mut m);
        if let Some(t) = self.latest_task() {
            m.insert("latestTask".into(), t);
        }
        Value::Object(m)
    }

    /// Worker-manager's getWorker answer.
    pub(crate) fn wm_worker(&self) -> Value {
        let mut m = Map::new();
        self.wm_common(&mut m);
        m.insert("provisionerId".into(), json!(self.pool.provisioner));
        m.insert("workerType".into(), json!(self.pool.worker_type));
        m.insert("expires".into(), json!(tc_date(self.expires)));
        m.insert("recentTasks".into(), self.recent_json());
        m.insert("quarantineDetails".into(), self.details_json());
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    fn rec() -> WorkerRecord {
        let pool = PoolId::parse("p/wt").unwrap();
        WorkerRecord::first_seen(pool, "mdc1", "lab-0001", t(0), Duration::from_secs(1800))
    }

    #[test]
    fn last_date_active_moves_once_per_period() {
        let mut w = rec();
        w.seen_over(t(0), t(1799), Duration::from_secs(1800));
        assert_eq!(w.last_date_active, Some(t(0)));
        w.seen_over(t(1799), t(1800), Duration::from_secs(1800));
        assert_eq!(w.last_date_active, Some(t(1800)));
        // Away from 2000 to 9000: the first call back updates at once.
        w.seen_over(t(1800), t(2000), Duration::from_secs(1800));
        w.seen_over(t(9000), t(9001), Duration::from_secs(1800));
        assert_eq!(w.last_date_active, Some(t(9000)));
        w.seen_over(t(9001), t(9000 + 4 * 1800 + 5), Duration::from_secs(1800));
        assert_eq!(w.last_date_active, Some(t(9000 + 4 * 1800)));
        assert_eq!(w.expires, t(9000 + 4 * 1800) + WORKER_LIFETIME);
    }

    #[test]
    fn quarantine_history_is_time_indexed() {
        let mut w = rec();
        assert!(w.quarantine_until < w.first_claim);
        let detail = |at, until| QuarantineDetail {
            client_id: "c".into(),
            updated_at: t(at),
            quarantine_until: tc_date(t(until)),
            until: t(until),
            info: "why".into(),
        };
        w.quarantine(detail(10, 100));
        w.quarantine(detail(50, 50));
        assert!(!w.quarantined_at(t(9)));
        assert!(w.quarantined_at(t(10)));
        assert!(w.quarantined_at(t(49)));
        assert!(!w.quarantined_at(t(50)));
        let item = w.queue_list_item(t(60));
        assert!(item.get("quarantineUntil").is_none());
        assert_eq!(
            w.wm_worker()["quarantineDetails"].as_array().map(Vec::len),
            Some(2)
        );
        assert!(w.queue_worker().get("quarantineDetails").is_none());
    }
}
