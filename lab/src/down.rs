//! Stopping a lab from outside (`fleetroll-lab down`), and checking that a
//! stopped lab left nothing behind.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::LabError;
use crate::lab::{LabInfo, LabMode, cleanup_dead_lab, is_running, read_info};
use crate::layout::LabLayout;
use crate::system::MachineLock;
use crate::{hostsfile, procs, slots, system};

fn alive(pid: u32) -> bool {
    // A zombie still has a /proc entry but is gone for our purposes.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 1..];
            rest.split_whitespace().next().map(|st| st != "Z")
        })
        .unwrap_or(false)
}

/// Stops the lab in `dir`: asks its daemon to stop (SIGTERM), waits up to
/// `timeout`, then kills it, and in every case removes whatever is left
/// (processes, hosts entries, slot). Returns what was stopped, or `None`
/// when there was no lab.
pub fn down(dir: &Path, timeout: Duration) -> Result<Option<LabInfo>, LabError> {
    let info = match read_info(dir) {
        Ok(info) => info,
        Err(LabError::NoLab(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let running = is_running(&info);
    if running && info.mode == LabMode::Embedded {
        return Err(LabError::Daemon(format!(
            "the lab in {} runs inside process {} (a test?); stop it there",
            dir.display(),
            info.pid
        )));
    }
    if running && alive(info.pid) {
        // SAFETY: kill(2); the pid is the daemon recorded for this lab.
        unsafe {
            libc::kill(info.pid as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        while alive(info.pid) && is_running(&info) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if alive(info.pid) && is_running(&info) {
            // SAFETY: as above.
            unsafe {
                libc::kill(info.pid as i32, libc::SIGKILL);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while alive(info.pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    let _machine = MachineLock::acquire("machine.lock")?;
    cleanup_dead_lab(&info.id)?;
    if !is_running(&info) {
        slots::forget(info.slot)?;
    }
    system::release_if_idle()?;
    let _ = std::fs::remove_file(LabLayout::new(dir.to_path_buf()).state_file());
    Ok(Some(info))
}

/// What a lab left on the machine; all empty once it is down.
#[derive(Debug, Clone, Default)]
pub struct Leftovers {
    /// Processes of the lab (marked, or sshd started with its config).
    pub processes: Vec<procs::ProcInfo>,
    /// Mount table lines, in any process, that mention the lab directory.
    pub mounts: Vec<String>,
    /// Lines of the lab's block in /etc/hosts.
    pub hosts_lines: usize,
}

impl Leftovers {
    /// Nothing left.
    pub fn is_clean(&self) -> bool {
        self.processes.is_empty() && self.mounts.is_empty() && self.hosts_lines == 0
    }
}

/// Looks for anything lab `id` (in `dir`) left behind.
pub fn leftovers(id: &str, dir: &Path) -> Result<Leftovers, LabError> {
    let dir_str = dir.display().to_string();
    let mut processes = procs::lab_processes(id, None);
    let config = LabLayout::new(dir.to_path_buf()).sshd_config();
    let config = config.display().to_string();
    for p in procs::processes_mentioning(&config) {
        if !processes.iter().any(|q| q.pid == p.pid) {
            processes.push(p);
        }
    }
    Ok(Leftovers {
        processes,
        mounts: procs::mounts_mentioning(&dir_str),
        hosts_lines: hostsfile::block_lines(id)?,
    })
}
