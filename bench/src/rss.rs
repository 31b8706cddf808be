//! Resident memory of processes, from `/proc/<pid>/status`: sampled in the
//! background so a phase's peak is seen, not only its end.

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the processes are looked at.
const EVERY: Duration = Duration::from_millis(200);

/// One process's resident memory, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Resident {
    /// Now (`VmRSS`).
    pub rss: u64,
    /// The highest since the process started (`VmHWM`).
    pub hwm: u64,
}

pub fn resident(pid: u32) -> Option<Resident> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |field: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(field))?;
        let value = line[field.len()..].trim().strip_suffix("kB")?.trim();
        Some(value.parse::<u64>().ok()? * 1024)
    };
    Some(Resident {
        rss: kib("VmRSS:")?,
        hwm: kib("VmHWM:")?,
    })
}

/// The child process of `parent` whose command name is `name`.
pub fn child_named(parent: u32, name: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
            let (head, tail) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1;
            let ppid: u32 = tail.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == parent && comm == name).then_some(pid)
        })
}

/// What one process used during a phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct PhaseUse {
    pub end: Resident,
    /// The highest `VmRSS` sampled during the phase.
    pub peak: u64,
}

/// Samples processes until dropped.
pub struct Sampler {
    pids: Vec<u32>,
    peaks: Arc<Mutex<Vec<u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    pub fn start(pids: Vec<u32>) -> Sampler {
        let peaks = Arc::new(Mutex::new(vec![0; pids.len()]));
        let (p, watched) = (peaks.clone(), pids.clone());
        let task = tokio::spawn(async move {
            loop {
                sample(&watched, &p);
                tokio::time::sleep(EVERY).await;
            }
        });
        Sampler { pids, peaks, task }
    }

    /// Ends a phase: what each process holds now and its peak since the
    /// last phase ended (in `pids` order).
    pub fn phase(&self) -> Vec<PhaseUse> {
        sample(&self.pids, &self.peaks);
        let mut peaks = self.peaks.lock().unwrap_or_else(|e| e.into_inner());
        let uses = self
            .pids
            .iter()
            .zip(peaks.iter())
            .map(|(pid, peak)| PhaseUse {
                end: resident(*pid).unwrap_or_default(),
                peak: *peak,
            })
            .collect();
        peaks.iter_mut().for_each(|p| *p = 0);
        uses
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn sample(pids: &[u32], peaks: &Mutex<Vec<u64>>) {
    let now: Vec<u64> = pids
        .iter()
        .map(|pid| resident(*pid).map_or(0, |r| r.rss))
        .collect();
    let mut peaks = peaks.lock().unwrap_or_else(|e| e.into_inner());
    for (peak, rss) in peaks.iter_mut().zip(now) {
        *peak = (*peak).max(rss);
    }
}
