//! One host's record with the queue: its worker rows, the tasks it ran and
//! which pool it worked in when, brought up to date lazily.
//!
//! Nothing is stored ahead of time: when asked, the ledger walks the host's
//! slots from where it stopped up to now, using the host's recorded history
//! (reboots, reachability, Puppet runs, pool changes, quarantines), all of it
//! time-stamped, so the answer is the same however late it is asked, and a
//! run once resolved keeps its result.
//!
//! A run resolved with a reason the queue retries by itself adds a pending
//! run to its task; the host's next claim in that pool takes it (runId + 1,
//! `reasonCreated` `retry` or `task-retry`) before any new task.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use super::jobs::{History, Schedule, retry_created};
use super::pools::PoolId;
use super::slugid;
use super::tasks::{CLAIM_TIMEOUT, Claim, DEADLINE, PENDING, Run, Task};
use super::workers::{QuarantineDetail, TaskRun, WorkerRecord};

/// The most tasks a host remembers; older ones are forgotten (their status
/// is a 404, as an expired task's).
const MAX_TASKS: usize = 4096;

/// Everything `advance` needs besides the ledger.
pub(crate) struct Cx<'a> {
    pub lab_id: &'a str,
    pub host_index: u16,
    pub worker_group: &'a str,
    pub worker_id: &'a str,
    pub schedule: Schedule,
    pub history: History<'a>,
    /// How often the queue writes `lastDateActive`.
    pub update_every: Duration,
    /// Retries each new task has.
    pub retries: u32,
}

/// One host's state in the queue.
#[derive(Debug)]
pub(crate) struct Ledger {
    next_slot: u64,
    running: Option<u64>,
    pending: Vec<u64>,
    tasks: VecDeque<Task>,
    workers: Vec<WorkerRecord>,
    pools: Vec<(SystemTime, Option<PoolId>)>,
    seen_until: SystemTime,
}

impl Ledger {
    /// A host the queue knows in `pool` from `start` on (the lab's hosts
    /// have all worked before the lab starts, even those down at start).
    pub(crate) fn new(
        start: SystemTime,
        pool: Option<PoolId>,
        group: &str,
        id: &str,
        every: Duration,
    ) -> Ledger {
        let workers = pool
            .iter()
            .map(|p| WorkerRecord::first_seen(p.clone(), group, id, start, every))
            .collect();
        Ledger {
            next_slot: 0,
            running: None,
            pending: Vec::new(),
            tasks: VecDeque::new(),
            workers,
            pools: vec![(start, pool)],
            seen_until: start,
        }
    }

    /// The pool in effect at `t`.
    pub(crate) fn pool_at(&self, t: SystemTime) -> Option<&PoolId> {
        self.pools
            .iter()
            .rfind(|(at, _)| *at <= t)
            .or(self.pools.first())
            .and_then(|(_, p)| p.as_ref())
    }

    /// The pool the host works in from now on.
    pub(crate) fn current_pool(&self) -> Option<&PoolId> {
        self.pools.last().and_then(|(_, p)| p.as_ref())
    }

    /// Whether the host ever worked in `pool` (so may have a row there).
    pub(crate) fn touches(&self, pool: &PoolId) -> bool {
        self.pools.iter().any(|(_, p)| p.as_ref() == Some(pool))
    }

    /// The host works in `pool` from `at` on (never before what the ledger
    /// already accounted for).
    pub(crate) fn set_pool(&mut self, at: SystemTime, pool: Option<PoolId>) {
        if self.current_pool() != pool.as_ref() {
            self.pools.push((at.max(self.seen_until), pool));
        }
    }

    pub(crate) fn worker(&self, pool: &PoolId) -> Option<&WorkerRecord> {
        self.workers.iter().find(|w| &w.pool == pool)
    }

    /// Records a quarantine change of the host's row in `pool`; `false`
    /// when the queue has no such row.
    pub(crate) fn quarantine(&mut self, pool: &PoolId, detail: QuarantineDetail) -> bool {
        match self.workers.iter_mut().find(|w| &w.pool == pool) {
            Some(w) => {
                w.quarantine(detail);
                true
            }
            None => false,
        }
    }

    /// The task first claimed in `slot`.
    pub(crate) fn task(&self, slot: u64) -> Option<&Task> {
        let i = self.tasks.binary_search_by_key(&slot, |t| t.slot).ok()?;
        self.tasks.get(i)
    }

    fn task_mut(&mut self, slot: u64) -> Option<&mut Task> {
        let i = self.tasks.binary_search_by_key(&slot, |t| t.slot).ok()?;
        self.tasks.get_mut(i)
    }

    /// Brings the ledger up to `now`.
    pub(crate) fn advance(&mut self, cx: &Cx<'_>, now: SystemTime) {
        loop {
            if let Some(slot) = self.running
                && !self.resolve(cx, slot, now)
            {
                break;
            }
            let c = cx.schedule.claim(self.next_slot);
            if c > now {
                break;
            }
            if self.running.is_none()
                && let Some(back) = down_until(cx, c)
            {
                // Nothing happens while the host is away: skip to its return.
                self.see(cx, c);
                let next = cx.schedule.slot_at_or_after(back.min(now));
                self.next_slot = next.max(self.next_slot + 1);
                continue;
            }
            self.see(cx, c);
            self.claim(cx, c);
            self.next_slot += 1;
        }
        self.see(cx, now);
    }

    /// The queue seeing the worker call it over `(seen_until, to]`: each
    /// stretch where the host is up in one pool updates that pool's row.
    fn see(&mut self, cx: &Cx<'_>, to: SystemTime) {
        let from = self.seen_until;
        if to < from {
            return;
        }
        let mut points = vec![from];
        for d in cx.history.down {
            points.extend([Some(d.start), d.end].into_iter().flatten());
        }
        points.extend(self.pools.iter().map(|(at, _)| *at));
        points.retain(|&p| from <= p && p <= to);
        points.sort();
        points.dedup();
        for (i, &a) in points.iter().enumerate() {
            let b = points.get(i + 1).copied().unwrap_or(to);
            if !cx.history.up(a) {
                continue;
            }
            let Some(pool) = self.pool_at(a).cloned() else {
                continue;
            };
            let every = cx.update_every;
            let row = match self.workers.iter_mut().position(|w| w.pool == pool) {
                Some(i) => &mut self.workers[i],
                None => {
                    self.workers.push(WorkerRecord::first_seen(
                        pool,
                        cx.worker_group,
                        cx.worker_id,
                        a,
                        every,
                    ));
                    let last = self.workers.len() - 1;
                    &mut self.workers[last]
                }
            };
            // The stretch ends where the next one starts (exclusive).
            let end = if i + 1 < points.len() {
                b.checked_sub(Duration::from_nanos(1)).unwrap_or(b)
            } else {
                b
            };
            row.seen_over(a, end, every);
        }
        self.seen_until = to;
    }

    /// Slot at `c`: the host claims unless it is away, quarantined or in
    /// no valid pool; a pending retry in its pool goes first.
    fn claim(&mut self, cx: &Cx<'_>, c: SystemTime) {
        if !cx.history.up(c) {
            return;
        }
        let Some(pool) = self.pool_at(c).cloned() else {
            return;
        };
        if self
            .workers
            .iter()
            .find(|w| w.pool == pool)
            .is_none_or(|w| w.quarantined_at(c))
        {
            return;
        }
        let tasks = &self.tasks;
        self.pending.retain(|s| {
            tasks
                .binary_search_by_key(s, |t| t.slot)
                .ok()
                .and_then(|i| tasks.get(i))
                .is_some_and(|t| t.deadline > c)
        });
        let retry = self
            .pending
            .iter()
            .position(|s| self.task(*s).is_some_and(|t| t.pool == pool));
        let (slot, run_id) = match retry {
            Some(i) => {
                let slot = self.pending.remove(i);
                let Some(task) = self.task_mut(slot) else {
                    return;
                };
                let run_id = task.runs.len() as u32 - 1;
                let planned = cx.history.outcome(slot, run_id, c);
                if let Some(run) = task.runs.last_mut() {
                    run.claim = Some(Claim {
                        started: c,
                        taken_until: c + CLAIM_TIMEOUT,
                        planned,
                    });
                }
                (slot, run_id)
            }
            None => {
                let slot = self.next_slot;
                let scheduled = c - PENDING;
                self.tasks.push_back(Task {
                    slot,
                    pool: pool.clone(),
                    retries_left: cx.retries,
                    deadline: scheduled + DEADLINE,
                    runs: vec![Run {
                        reason_created: "scheduled",
                        scheduled,
                        claim: Some(Claim {
                            started: c,
                            taken_until: c + CLAIM_TIMEOUT,
                            planned: cx.history.outcome(slot, 0, c),
                        }),
                        resolved: None,
                    }],
                });
                if self.tasks.len() > MAX_TASKS
                    && let Some(old) = self.tasks.pop_front()
                {
                    self.pending.retain(|s| *s != old.slot);
                }
                (slot, 0)
            }
        };
        self.running = Some(slot);
        if let Some(w) = self.workers.iter_mut().find(|w| w.pool == pool) {
            w.claimed(TaskRun {
                task_id: slugid::encode(cx.lab_id, cx.host_index, slot as u32),
                run_id,
            });
        }
    }

    /// Resolves the running run if it ended by `now`; `false` if it still
    /// runs.
    fn resolve(&mut self, cx: &Cx<'_>, slot: u64, now: SystemTime) -> bool {
        let period = cx.schedule.period;
        let Some(task) = self.task_mut(slot) else {
            self.running = None;
            return true;
        };
        let Some(run) = task.runs.last_mut() else {
            self.running = None;
            return true;
        };
        let Some(claim) = run.claim.as_mut() else {
            self.running = None;
            return true;
        };
        let end = claim.started + period;
        let (at, reason) = match cx.history.goes_down(claim.started, end) {
            Some(d) if d <= now => (d, "worker-shutdown"),
            _ if end <= now => (end, claim.planned),
            _ => return false,
        };
        if reason == "claim-expired" {
            // The worker stopped reclaiming: the claim ran out then.
            claim.taken_until = at;
        }
        run.resolved = Some((at, reason));
        if reason == "deadline-exceeded" {
            task.deadline = at;
        }
        let retry = retry_created(reason).filter(|_| task.retries_left > 0);
        if let Some(created) = retry {
            task.retries_left -= 1;
            task.runs.push(Run {
                reason_created: created,
                scheduled: at,
                claim: None,
                resolved: None,
            });
            self.pending.push(slot);
        }
        self.running = None;
        true
    }
}

/// Later than any lab lives.
const FOREVER: Duration = Duration::from_secs(1 << 40);

/// When the host, away at `t`, is back (`None` when it is up at `t`).
fn down_until(cx: &Cx<'_>, t: SystemTime) -> Option<SystemTime> {
    cx.history
        .down
        .iter()
        .filter(|d| d.start <= t && d.end.is_none_or(|e| t < e))
        .map(|d| d.end.unwrap_or(SystemTime::UNIX_EPOCH + FOREVER))
        .max()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::runtime::{BadBranches, DownReason, Downtime, PuppetRun};
    use crate::taskcluster::jobs::RunState;

    fn t(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + ms)
    }

    fn pool(s: &str) -> PoolId {
        PoolId::parse(s).unwrap()
    }

    struct Fixture {
        down: Vec<Downtime>,
        runs: Vec<PuppetRun>,
        bad: BadBranches,
        reasons: BTreeMap<String, f64>,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                down: Vec::new(),
                runs: Vec::new(),
                bad: BadBranches::default(),
                reasons: BTreeMap::new(),
            }
        }

        fn cx(&self) -> Cx<'_> {
            Cx {
                lab_id: "lab",
                host_index: 0,
                worker_group: "mdc1",
                worker_id: "lab-0001",
                schedule: Schedule {
                    epoch: t(0),
                    offset: Duration::ZERO,
                    period: Duration::from_secs(10),
                },
                history: History {
                    down: &self.down,
                    runs: &self.runs,
                    bad: &self.bad,
                    fail_on_puppet_failure: true,
                    failure_rate: 0.0,
                    reasons: &self.reasons,
                    host: "lab-0001",
                },
                update_every: Duration::from_secs(1800),
                retries: 5,
            }
        }
    }

    fn ledger() -> Ledger {
        Ledger::new(
            t(0),
            Some(pool("p/a")),
            "mdc1",
            "lab-0001",
            Duration::from_secs(1800),
        )
    }

    fn states(l: &Ledger) -> Vec<(u64, Vec<RunState>)> {
        l.tasks
            .iter()
            .map(|t| (t.slot, t.runs.iter().map(Run::state).collect()))
            .collect()
    }

    #[test]
    fn a_reboot_mid_run_retries_the_task_on_the_next_claim() {
        let mut f = Fixture::new();
        f.down.push(Downtime {
            start: t(25_000),
            end: Some(t(47_000)),
            reason: DownReason::Reboot,
        });
        let mut l = ledger();
        l.advance(&f.cx(), t(65_000));
        use RunState::*;
        assert_eq!(
            states(&l),
            vec![
                (0, vec![Completed]),
                (1, vec![Completed]),
                // Claimed at 20 s, cut short by the reboot at 25 s, run 1 on
                // the first slot after the host is back (50 s).
                (2, vec![Exception, Completed]),
                (6, vec![Running]),
            ]
        );
        let task = l.task(2).unwrap();
        assert_eq!(task.runs[0].resolved, Some((t(25_000), "worker-shutdown")));
        assert_eq!(task.runs[1].reason_created, "retry");
        assert_eq!(task.runs[1].scheduled, t(25_000));
        assert_eq!(task.retries_left, 4);
        let w = l.worker(&pool("p/a")).unwrap();
        let recent: Vec<u32> = w.recent.iter().map(|r| r.run_id).collect();
        assert_eq!(recent, vec![0, 0, 0, 1, 0]);
        // Asked later, nothing that was resolved changes.
        let before = format!("{:?}", l.task(2));
        l.advance(&f.cx(), t(500_000));
        assert_eq!(before, format!("{:?}", l.task(2)));
    }

    #[test]
    fn retries_run_out() {
        let mut f = Fixture::new();
        f.reasons.insert("intermittent-task".into(), 1.0);
        let mut l = ledger();
        l.advance(&f.cx(), t(200_000));
        let task = l.task(0).unwrap();
        assert_eq!(task.runs.len(), 6, "five retries");
        assert!(
            task.runs
                .iter()
                .skip(1)
                .all(|r| r.reason_created == "task-retry")
        );
        assert_eq!(task.retries_left, 0);
        assert_eq!(task.runs[5].state(), RunState::Exception);
        // The next slot after the last run starts a new task.
        assert!(l.task(6).is_some());
    }

    #[test]
    fn pools_and_quarantine_decide_where_and_whether_the_host_claims() {
        let f = Fixture::new();
        let mut l = ledger();
        l.advance(&f.cx(), t(15_000));
        l.set_pool(t(15_000), Some(pool("p/b")));
        l.advance(&f.cx(), t(35_000));
        assert!(l.quarantine(
            &pool("p/b"),
            QuarantineDetail {
                client_id: "c".into(),
                updated_at: t(35_000),
                quarantine_until: String::new(),
                until: t(60_000),
                info: "x".into(),
            }
        ));
        l.advance(&f.cx(), t(75_000));
        let pools: Vec<(u64, String)> = l
            .tasks
            .iter()
            .map(|t| (t.slot, t.pool.to_string()))
            .collect();
        assert_eq!(
            pools,
            vec![
                (0, "p/a".into()),
                (1, "p/a".into()),
                (2, "p/b".into()),
                (3, "p/b".into()),
                (6, "p/b".into()),
                (7, "p/b".into()),
            ]
        );
        let b = l.worker(&pool("p/b")).unwrap();
        assert_eq!(b.first_claim, t(15_000));
        // The old pool's row stays (it expires a day after its last update).
        assert!(l.worker(&pool("p/a")).unwrap().live(t(75_000)));
    }
}
