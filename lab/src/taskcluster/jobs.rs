//! When a host claims work and how each run ends.
//!
//! Host h may claim at `epoch + offset_h + k * period` (slot k) and a run
//! lasts one period. How a run ends is decided by what happened, never by
//! when the double is asked: it ends in `exception` (`worker-shutdown`) if
//! the host goes away before the end; otherwise the host's `job_reasons`
//! shares draw a reason (deterministically per host, task and run); else it
//! fails when the host was in a bad Puppet state at claim time, or at random
//! at the host's failure rate; else it completes.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::runtime::{BadBranches, Downtime, PuppetRun};

/// Every `reasonResolved` the queue knows (task-status.yml), in the order
/// `job_reasons` shares are drawn.
pub(crate) const REASONS_RESOLVED: [&str; 11] = [
    "completed",
    "failed",
    "deadline-exceeded",
    "canceled",
    "claim-expired",
    "worker-shutdown",
    "malformed-payload",
    "resource-unavailable",
    "internal-error",
    "intermittent-task",
    "superseded",
];

/// The state a run resolved with `reason` is in.
pub(crate) fn state_for(reason: &str) -> RunState {
    match reason {
        "completed" => RunState::Completed,
        "failed" => RunState::Failed,
        _ => RunState::Exception,
    }
}

/// The `reasonCreated` of the run the queue adds after a run resolved with
/// `reason`, for the reasons it retries by itself.
pub(crate) fn retry_created(reason: &str) -> Option<&'static str> {
    match reason {
        "worker-shutdown" | "claim-expired" => Some("retry"),
        "intermittent-task" => Some("task-retry"),
        _ => None,
    }
}

/// When a host's jobs are claimed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    pub epoch: SystemTime,
    pub offset: Duration,
    pub period: Duration,
}

pub(crate) fn hash64(parts: &[&[u8]]) -> u64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    let d = h.finalize();
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

fn unit(parts: &[&[u8]]) -> f64 {
    hash64(parts) as f64 / u64::MAX as f64
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

    /// The first slot claimed at or after `t`.
    pub(crate) fn slot_at_or_after(&self, t: SystemTime) -> u64 {
        let Ok(since) = t.duration_since(self.epoch + self.offset) else {
            return 0;
        };
        let p = self.period.as_nanos().max(1);
        u64::try_from(since.as_nanos().div_ceil(p)).unwrap_or(u64::MAX)
    }
}

/// How a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunState {
    Pending,
    Running,
    Completed,
    Failed,
    Exception,
}

impl RunState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RunState::Pending => "pending",
            RunState::Running => "running",
            RunState::Completed => "completed",
            RunState::Failed => "failed",
            RunState::Exception => "exception",
        }
    }
}

/// What a host went through, as far as its runs care.
pub(crate) struct History<'a> {
    pub down: &'a [Downtime],
    pub runs: &'a [PuppetRun],
    pub bad: &'a BadBranches,
    pub fail_on_puppet_failure: bool,
    pub failure_rate: f64,
    pub reasons: &'a BTreeMap<String, f64>,
    pub host: &'a str,
}

impl History<'_> {
    /// Whether the host was up (not rebooting, reachable) at `t`.
    pub(crate) fn up(&self, t: SystemTime) -> bool {
        !self
            .down
            .iter()
            .any(|d| d.start <= t && d.end.is_none_or(|e| t < e))
    }

    /// The first moment after `t` the host goes away, if it does by `until`.
    pub(crate) fn goes_down(&self, t: SystemTime, until: SystemTime) -> Option<SystemTime> {
        self.down
            .iter()
            .map(|d| d.start)
            .filter(|&s| t < s && s < until)
            .min()
    }

    /// Whether runs claimed at `t` fail because of Puppet.
    pub(crate) fn bad_at(&self, t: SystemTime) -> bool {
        let Some(run) = self.runs.iter().rfind(|r| r.at <= t) else {
            return false;
        };
        (self.fail_on_puppet_failure && !matches!(run.exit_code, 0 | 2))
            || self.bad.bad_at(&run.branch, t)
    }

    /// How run `run` of the task first claimed in slot `task` ends if the
    /// host stays up, given it was claimed at `claimed`.
    pub(crate) fn outcome(&self, task: u64, run: u32, claimed: SystemTime) -> &'static str {
        let (k, r) = (task.to_be_bytes(), run.to_be_bytes());
        let host = self.host.as_bytes();
        let u = unit(&[b"reason", host, &k, &r]);
        let mut acc = 0.0;
        for reason in REASONS_RESOLVED {
            acc += self.reasons.get(reason).copied().unwrap_or(0.0);
            if u < acc {
                return reason;
            }
        }
        if self.bad_at(claimed)
            || (self.failure_rate > 0.0 && unit(&[b"flaky", host, &k, &r]) < self.failure_rate)
        {
            "failed"
        } else {
            "completed"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    #[test]
    fn outcomes_follow_puppet_state_and_shares() {
        let runs = vec![
            PuppetRun {
                at: t(0),
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
        let none = BTreeMap::new();
        let h = History {
            down: &[],
            runs: &runs,
            bad: &bad,
            fail_on_puppet_failure: true,
            failure_rate: 0.0,
            reasons: &none,
            host: "lab-0001",
        };
        assert_eq!(h.outcome(1, 0, t(20)), "completed");
        assert_eq!(h.outcome(3, 0, t(30)), "failed");
        assert_eq!(h.outcome(5, 0, t(50)), "failed");

        let shares: BTreeMap<String, f64> = [("canceled", 0.2), ("intermittent-task", 0.1)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let h = History {
            reasons: &shares,
            runs: &[],
            ..h
        };
        let drawn: Vec<&str> = (0..2000).map(|k| h.outcome(k, 0, t(10))).collect();
        let count = |r| drawn.iter().filter(|&&d| d == r).count();
        assert!(
            (300..500).contains(&count("canceled")),
            "{}",
            count("canceled")
        );
        assert!((130..270).contains(&count("intermittent-task")));
        assert_eq!(
            count("canceled") + count("intermittent-task") + count("completed"),
            2000
        );
        // Deterministic: asked again, the same draw.
        assert_eq!(
            drawn,
            (0..2000)
                .map(|k| h.outcome(k, 0, t(99)))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn failure_rate_is_deterministic_and_roughly_right() {
        let bad = BadBranches::default();
        let none = BTreeMap::new();
        let h = History {
            down: &[],
            runs: &[],
            bad: &bad,
            fail_on_puppet_failure: true,
            failure_rate: 0.25,
            reasons: &none,
            host: "lab-0002",
        };
        let failed = (0..1000)
            .filter(|&k| h.outcome(k, 0, t(1)) == "failed")
            .count();
        assert!((180..320).contains(&failed), "{failed}");
    }

    #[test]
    fn slots() {
        let s = Schedule {
            epoch: t(0),
            offset: Duration::ZERO,
            period: Duration::from_secs(10),
        };
        assert_eq!(s.claim(3), t(30));
        assert_eq!(s.slot_at_or_after(t(30)), 3);
        assert_eq!(s.slot_at_or_after(t(31)), 4);
        assert_eq!(s.slot_at_or_after(t(0) - Duration::from_secs(5)), 0);
        assert_eq!(state_for("superseded"), RunState::Exception);
        assert_eq!(retry_created("intermittent-task"), Some("task-retry"));
        assert_eq!(retry_created("canceled"), None);
    }
}
