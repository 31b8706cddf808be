//! Tasks and their runs, and the queue's task status structure.

use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};

use super::jobs::{RunState, state_for};
use super::pools::PoolId;
use super::reply::tc_date;

/// The queue's claim timeout: a claimed run is taken for 20 minutes.
pub(crate) const CLAIM_TIMEOUT: Duration = Duration::from_secs(1200);
/// Firefox CI's test tasks: a day to run, kept four weeks.
pub(crate) const DEADLINE: Duration = Duration::from_secs(86_400);
const EXPIRES: Duration = Duration::from_secs(28 * 86_400);
/// How long a new task waits before its worker claims it.
pub(crate) const PENDING: Duration = Duration::from_millis(500);

/// A claimed run: when, until when, and how it ends if the host stays up.
#[derive(Debug, Clone)]
pub(crate) struct Claim {
    pub started: SystemTime,
    pub taken_until: SystemTime,
    pub planned: &'static str,
}

/// One run of a task.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub reason_created: &'static str,
    pub scheduled: SystemTime,
    pub claim: Option<Claim>,
    pub resolved: Option<(SystemTime, &'static str)>,
}

impl Run {
    pub(crate) fn state(&self) -> RunState {
        match (&self.resolved, &self.claim) {
            (Some((_, reason)), _) => state_for(reason),
            (None, Some(_)) => RunState::Running,
            (None, None) => RunState::Pending,
        }
    }
}

/// A task one host ran (or is to run); `slot` is the slot its first run
/// was claimed in, which with the host names its task id.
#[derive(Debug, Clone)]
pub(crate) struct Task {
    pub slot: u64,
    pub pool: PoolId,
    pub retries_left: u32,
    pub deadline: SystemTime,
    pub runs: Vec<Run>,
}

/// Who ran a task, for its runs' worker fields.
pub(crate) struct Names<'a> {
    pub task_id: &'a str,
    pub task_group_id: &'a str,
    pub worker_group: &'a str,
    pub worker_id: &'a str,
}

impl Task {
    /// The queue's `task-status.yml` structure as of `now`. A run still
    /// pending at the task's deadline is resolved `deadline-exceeded` then,
    /// as the queue's deadline resolver does.
    pub(crate) fn status(&self, n: &Names<'_>, now: SystemTime) -> Value {
        let created = self.runs.first().map_or(self.deadline, |r| r.scheduled);
        let mut last_state = RunState::Pending;
        let runs: Vec<Value> = self
            .runs
            .iter()
            .enumerate()
            .map(|(i, run)| {
                let mut m = Map::new();
                m.insert("runId".into(), json!(i));
                let mut state = run.state();
                let mut resolved = run.resolved;
                if state == RunState::Pending && now >= self.deadline {
                    state = RunState::Exception;
                    resolved = Some((self.deadline, "deadline-exceeded"));
                }
                last_state = state;
                m.insert("state".into(), json!(state.as_str()));
                m.insert("reasonCreated".into(), json!(run.reason_created));
                if let Some((_, reason)) = resolved {
                    m.insert("reasonResolved".into(), json!(reason));
                }
                if let Some(c) = &run.claim {
                    m.insert("workerGroup".into(), json!(n.worker_group));
                    m.insert("workerId".into(), json!(n.worker_id));
                    m.insert("takenUntil".into(), json!(tc_date(c.taken_until)));
                }
                m.insert("scheduled".into(), json!(tc_date(run.scheduled)));
                if let Some(c) = &run.claim {
                    m.insert("started".into(), json!(tc_date(c.started)));
                }
                if let Some((at, _)) = resolved {
                    m.insert("resolved".into(), json!(tc_date(at)));
                }
                Value::Object(m)
            })
            .collect();
        json!({
            "taskId": n.task_id,
            "provisionerId": self.pool.provisioner,
            "workerType": self.pool.worker_type,
            "taskQueueId": self.pool.to_string(),
            "schedulerId": "gecko-level-3",
            "projectId": "none",
            "taskGroupId": n.task_group_id,
            "priority": "low",
            "deadline": tc_date(self.deadline),
            "expires": tc_date(created + EXPIRES),
            "retriesLeft": self.retries_left,
            "state": last_state.as_str(),
            "runs": runs,
        })
    }
}
