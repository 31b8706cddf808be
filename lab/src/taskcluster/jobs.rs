//! The job model behind the double, computed from time instead of stored.
//!
//! Host h runs job k from `epoch + offset_h + k * period` for one period.
//! The job is claimed only if the host was available at that moment; it ends
//! in `exception` (worker-shutdown) if the host goes away before it ends,
//! else `failed` when the host was in a bad Puppet state at claim time (or at
//! random, at the host's failure rate), else `completed`. Because outcomes
//! depend only on recorded history, a job's result never changes once
//! resolved, however late it is asked about.

use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::runtime::{BadBranches, Downtime, PuppetRun};

/// When a host's jobs are claimed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    pub epoch: SystemTime,
    pub offset: Duration,
    pub period: Duration,
}

fn hash64(parts: &[&[u8]]) -> u64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    let d = h.finalize();
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

impl Schedule {
    /// A host's schedule; the offset spreads hosts over the period.
    pub(crate) fn new(epoch: SystemTime, jobs_per_minute: f64, host: &str) -> Schedule {
        let period = Duration::from_secs_f64(60.0 / jobs_per_minute.max(1e-6));
        let frac = (hash64(&[b"offset", host.as_bytes()]) % 1000) as f64 / 1000.0;
        Schedule {
            epoch,
            offset: period.mul_f64(frac),
            period,
        }
    }

    pub(crate) fn claim(&self, k: u64) -> SystemTime {
        let nanos = self.period.as_nanos().saturating_mul(u128::from(k));
        self.epoch + self.offset + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// The latest slot claimed at or before `t`.
    pub(crate) fn last_slot(&self, t: SystemTime) -> Option<u64> {
        let since = t.duration_since(self.epoch + self.offset).ok()?;
        Some((since.as_nanos() / self.period.as_nanos().max(1)) as u64)
    }
}

/// How a job run ended (or that it has not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunState {
    Running,
    Completed,
    Failed,
    Exception,
}

impl RunState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Completed => "completed",
            RunState::Failed => "failed",
            RunState::Exception => "exception",
        }
    }
}

/// One claimed job.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub k: u64,
    pub claimed: SystemTime,
    pub resolved: Option<SystemTime>,
    pub state: RunState,
    pub reason_resolved: Option<&'static str>,
}

/// What a host went through, as far as jobs care.
pub(crate) struct History<'a> {
    pub down: &'a [Downtime],
    pub runs: &'a [PuppetRun],
    pub bad: &'a BadBranches,
    pub fail_on_puppet_failure: bool,
    pub failure_rate: f64,
    pub host: &'a str,
}

/// How far back or forward to look for a claimed job before giving up.
const SCAN_LIMIT: u64 = 200_000;

impl History<'_> {
    pub(crate) fn available(&self, t: SystemTime) -> bool {
        !self
            .down
            .iter()
            .any(|d| d.start <= t && d.end.is_none_or(|e| t < e))
    }

    /// Whether jobs claimed at `t` fail because of Puppet.
    pub(crate) fn bad_at(&self, t: SystemTime) -> bool {
        let Some(run) = self.runs.iter().rfind(|r| r.at <= t) else {
            return false;
        };
        (self.fail_on_puppet_failure && !matches!(run.exit_code, 0 | 2))
            || self.bad.bad_at(&run.branch, t)
    }

    fn flaky(&self, k: u64) -> bool {
        if self.failure_rate <= 0.0 {
            return false;
        }
        let h = hash64(&[b"flaky", self.host.as_bytes(), &k.to_be_bytes()]);
        (h as f64 / u64::MAX as f64) < self.failure_rate
    }

    /// Job k as of `now`, if it was claimed.
    pub(crate) fn job(&self, s: &Schedule, k: u64, now: SystemTime) -> Option<Job> {
        let claimed = s.claim(k);
        if claimed > now || !self.available(claimed) {
            return None;
        }
        let end = claimed + s.period;
        let interrupted = self
            .down
            .iter()
            .map(|d| d.start)
            .filter(|&start| claimed < start && start < end)
            .min();
        let (state, resolved, reason) = match interrupted {
            Some(at) if at <= now => (RunState::Exception, Some(at), Some("worker-shutdown")),
            _ if now < end => (RunState::Running, None, None),
            _ if self.bad_at(claimed) || self.flaky(k) => {
                (RunState::Failed, Some(end), Some("failed"))
            }
            _ => (RunState::Completed, Some(end), Some("completed")),
        };
        Some(Job {
            k,
            claimed,
            resolved,
            state,
            reason_resolved: reason,
        })
    }

    /// Up to `n` most recent claimed jobs, newest first.
    pub(crate) fn recent(&self, s: &Schedule, now: SystemTime, n: usize) -> Vec<Job> {
        let mut out = Vec::new();
        let Some(mut k) = s.last_slot(now) else {
            return out;
        };
        for _ in 0..SCAN_LIMIT {
            if out.len() >= n {
                break;
            }
            if let Some(job) = self.job(s, k, now) {
                out.push(job);
            }
            if k == 0 {
                break;
            }
            k -= 1;
        }
        out
    }

    /// The first job the host ever claimed.
    pub(crate) fn first(&self, s: &Schedule, now: SystemTime) -> Option<Job> {
        let last = s.last_slot(now)?;
        (0..=last.min(SCAN_LIMIT)).find_map(|k| self.job(s, k, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::DownReason;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    fn sched() -> Schedule {
        Schedule {
            epoch: t(0),
            offset: Duration::ZERO,
            period: Duration::from_secs(10),
        }
    }

    #[test]
    fn jobs_follow_puppet_state_and_availability() {
        let runs = vec![
            PuppetRun {
                at: t(0) - Duration::from_secs(1),
                exit_code: 2,
                branch: b"master".to_vec(),
            },
            PuppetRun {
                at: t(25),
                exit_code: 2,
                branch: b"bad".to_vec(),
            },
            PuppetRun {
                at: t(45),
                exit_code: 4,
                branch: b"broken".to_vec(),
            },
        ];
        let mut bad = BadBranches::default();
        bad.set(b"bad", true, SystemTime::UNIX_EPOCH);
        let down = vec![Downtime {
            start: t(65),
            end: Some(t(85)),
            reason: DownReason::Reboot,
        }];
        let h = History {
            down: &down,
            runs: &runs,
            bad: &bad,
            fail_on_puppet_failure: true,
            failure_rate: 0.0,
            host: "lab-0001",
        };
        let s = sched();
        let now = t(100);
        let state = |k| h.job(&s, k, now).map(|j| j.state);
        assert_eq!(state(0), Some(RunState::Completed));
        assert_eq!(state(2), Some(RunState::Completed)); // claimed at 20, before the bad run
        assert_eq!(state(3), Some(RunState::Failed)); // claimed at 30: bad branch applied
        assert_eq!(state(5), Some(RunState::Failed)); // claimed at 50: Puppet failed
        assert_eq!(state(6), Some(RunState::Exception)); // 60..70, rebooted at 65
        assert_eq!(state(7), None); // 70: rebooting
        assert_eq!(state(8), None); // 80: rebooting
        assert_eq!(state(9), Some(RunState::Failed)); // still broken Puppet
        assert_eq!(state(10), Some(RunState::Running)); // claimed at 100
        assert_eq!(state(11), None); // future
        let recent: Vec<u64> = h.recent(&s, now, 4).iter().map(|j| j.k).collect();
        assert_eq!(recent, vec![10, 9, 6, 5]);
        assert_eq!(h.first(&s, now).map(|j| j.k), Some(0));
        // Asked later, a resolved job keeps its result.
        assert_eq!(
            h.job(&s, 3, t(10_000)).map(|j| j.state),
            Some(RunState::Failed)
        );
    }

    #[test]
    fn failure_rate_is_deterministic_and_roughly_right() {
        let bad = BadBranches::default();
        let h = History {
            down: &[],
            runs: &[],
            bad: &bad,
            fail_on_puppet_failure: true,
            failure_rate: 0.25,
            host: "lab-0002",
        };
        let s = sched();
        let failed = (0..1000)
            .filter(|&k| h.job(&s, k, t(20_000)).unwrap().state == RunState::Failed)
            .count();
        assert!((180..320).contains(&failed), "{failed}");
        let again = (0..1000)
            .filter(|&k| h.job(&s, k, t(30_000)).unwrap().state == RunState::Failed)
            .count();
        assert_eq!(failed, again);
    }
}
