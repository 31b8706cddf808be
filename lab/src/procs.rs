//! Finding and ending a lab's processes.
//!
//! Every process a lab starts carries `FLEETROLL_LAB_ID=<id>` in its
//! environment: sshd gets it from the daemon (though its process title
//! then hides it from /proc), sessions from sshd's `SetEnv`, and root
//! commands keep it through sudo (`env_keep` in the hosts' sudo policy).
//! Sessions also carry `FLEETROLL_LAB_HOST=<short name>`. A session runs in
//! its own session id (sshd calls setsid), so a child that scrubbed its
//! environment is still found through its session. The bastion's sshd, which
//! starts no sessions, runs under a marked shell leading a session of its
//! own (`FLEETROLL_LAB_HOST=bastion`).

use std::collections::HashSet;
use std::fs;

/// One process as seen in /proc.
#[derive(Debug, Clone)]
pub struct ProcInfo {
    /// Process id.
    pub pid: i32,
    /// Session id.
    pub sid: i32,
    /// Command line, NULs replaced by spaces.
    pub cmdline: String,
}

fn own_ids() -> (i32, i32) {
    // SAFETY: getpid/getsid(0) have no preconditions.
    unsafe { (libc::getpid(), libc::getsid(0)) }
}

fn stat_sid(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start
    // after the last ')'. Then: state ppid pgrp session.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(3)?.parse().ok()
}

fn environ_has(pid: i32, lab_id: &str, host: Option<&str>) -> bool {
    let Ok(env) = fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let want_id = format!("FLEETROLL_LAB_ID={lab_id}");
    let want_host = host.map(|h| format!("FLEETROLL_LAB_HOST={h}"));
    let mut has_id = false;
    let mut has_host = want_host.is_none();
    for var in env.split(|b| *b == 0) {
        if var == want_id.as_bytes() {
            has_id = true;
        } else if let Some(h) = &want_host
            && var == h.as_bytes()
        {
            has_host = true;
        }
    }
    has_id && has_host
}

fn all_pids() -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .collect()
}

/// Processes belonging to lab `lab_id` (to one of its hosts when `host` is
/// given), never including the calling process or its session.
pub fn lab_processes(lab_id: &str, host: Option<&str>) -> Vec<ProcInfo> {
    let (me, my_sid) = own_ids();
    let pids = all_pids();
    let mut marked = HashSet::new();
    let mut sids = HashSet::new();
    for &pid in &pids {
        if pid == me || !environ_has(pid, lab_id, host) {
            continue;
        }
        marked.insert(pid);
        if let Some(sid) = stat_sid(pid)
            && sid > 1
            && sid != my_sid
        {
            sids.insert(sid);
        }
    }
    // A session counts only if its leader is ours or gone: a living leader
    // without the mark is someone else's (e.g. the test's own shell).
    sids.retain(|sid| {
        marked.contains(sid) || !std::path::Path::new(&format!("/proc/{sid}")).exists()
    });
    pids.into_iter()
        .filter(|&pid| pid != me && !is_zombie(pid))
        .filter_map(|pid| {
            let sid = stat_sid(pid)?;
            if !(marked.contains(&pid) || sids.contains(&sid)) {
                return None;
            }
            let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| {
                    String::from_utf8_lossy(&b)
                        .replace('\0', " ")
                        .trim_end()
                        .to_string()
                })
                .unwrap_or_default();
            Some(ProcInfo { pid, sid, cmdline })
        })
        .collect()
}

/// Live processes whose command line contains `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<ProcInfo> {
    let (me, _) = own_ids();
    all_pids()
        .into_iter()
        .filter(|&pid| pid != me && !is_zombie(pid))
        .filter_map(|pid| {
            let b = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&b)
                .replace('\0', " ")
                .trim_end()
                .to_string();
            if !cmdline.contains(needle) {
                return None;
            }
            Some(ProcInfo {
                pid,
                sid: stat_sid(pid).unwrap_or(0),
                cmdline,
            })
        })
        .collect()
}

/// SIGKILLs a lab's processes until none is left (they may fork meanwhile).
/// Returns how many were signalled.
pub(crate) fn kill_lab_processes(lab_id: &str, host: Option<&str>) -> usize {
    let mut total = 0;
    for _ in 0..20 {
        let live = lab_processes(lab_id, host);
        if live.is_empty() {
            break;
        }
        for p in &live {
            // SAFETY: plain kill(2) on a pid we just saw.
            unsafe {
                libc::kill(p.pid, libc::SIGKILL);
            }
        }
        total += live.len();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    total
}

fn is_zombie(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s[s.rfind(')')? + 1..].to_string();
            rest.split_whitespace().next().map(|st| st == "Z")
        })
        .unwrap_or(true)
}

/// Lines of any process's mount table that mention `needle` (a lab
/// directory): a mount leaked into some namespace.
pub fn mounts_mentioning(needle: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut tables = vec!["/proc/self/mountinfo".to_string()];
    tables.extend(
        all_pids()
            .into_iter()
            .map(|p| format!("/proc/{p}/mountinfo")),
    );
    for table in tables {
        let Ok(text) = fs::read_to_string(&table) else {
            continue;
        };
        for line in text.lines() {
            if line.contains(needle) && seen.insert(line.to_string()) {
                out.push(line.to_string());
            }
        }
    }
    out
}
