//! The lab daemon: one TCP listener per host address, an `sshd -i` per
//! connection, reboots, and the Taskcluster double, all on a tokio runtime
//! that lives in its own thread (so callers may be sync or async).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::error::{IoContext, LabError};
use crate::hostkey::HostKeyKind;
use crate::layout::{HostLayout, LabLayout};
use crate::namespace::MountPlan;
use crate::netns::FleetNet;
use crate::scenario::{HostConfig, Os, PuppetSpec, TaskclusterSpec};

/// Why a host was not taking work during an interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DownReason {
    Unreachable,
    Reboot,
}

/// An interval during which the host took no jobs.
#[derive(Debug, Clone)]
pub(crate) struct Downtime {
    pub start: SystemTime,
    pub end: Option<SystemTime>,
    pub reason: DownReason,
}

/// One Puppet run, from the host's events.log.
#[derive(Debug, Clone)]
pub(crate) struct PuppetRun {
    pub at: SystemTime,
    pub exit_code: i32,
    pub branch: Vec<u8>,
}

/// One change of the host's override file, seen by inotify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverrideEvent {
    /// When the lab saw it.
    pub at: SystemTime,
    /// Written (created, replaced by rename, or rewritten) or removed.
    pub kind: OverrideEventKind,
}

/// What happened to an override file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverrideEventKind {
    /// New content landed (write, or rename onto the name).
    Written,
    /// The file went away (unlink, or renamed elsewhere).
    Removed,
}

/// Mutable state of one host.
#[derive(Debug)]
pub(crate) struct HostState {
    pub cfg: HostConfig,
    pub rebooting: bool,
    /// The host's record with the Taskcluster double's queue.
    pub tc: crate::taskcluster::ledger::Ledger,
    /// Whether a listener is bound right now (what setters wait for).
    pub listening: bool,
    pub downtime: Vec<Downtime>,
    pub runs: Vec<PuppetRun>,
    pub events_offset: u64,
    /// Process-group ids of this host's live `sshd -i` processes.
    pub sessions: HashSet<i32>,
    pub override_events: Vec<OverrideEvent>,
    pub override_tracking: Result<(), String>,
    pub reboots: u64,
    /// The key this host presents from the next connection on.
    pub host_key: PresentedKey,
}

/// The host key a host presents, and its certificate.
#[derive(Debug, Clone)]
pub(crate) struct PresentedKey {
    /// The private key: the lab's shared one, or the host's own.
    pub path: std::path::PathBuf,
    pub kind: HostKeyKind,
    /// The host's own key (rotated or set by a test): sshd gets it with -h
    /// and offers nothing else.
    pub own: bool,
    /// A certificate of that key, presented too.
    pub certificate: Option<std::path::PathBuf>,
}

impl HostState {
    pub(crate) fn should_listen(&self) -> bool {
        !self.cfg.unreachable && !self.rebooting
    }

    /// Opens a downtime interval unless one of that reason is open.
    pub(crate) fn down(&mut self, reason: DownReason, at: SystemTime) {
        if !self
            .downtime
            .iter()
            .any(|d| d.reason == reason && d.end.is_none())
        {
            self.downtime.push(Downtime {
                start: at,
                end: None,
                reason,
            });
        }
    }

    /// Closes the open downtime interval of that reason, if any.
    pub(crate) fn up(&mut self, reason: DownReason, at: SystemTime) {
        for d in &mut self.downtime {
            if d.reason == reason && d.end.is_none() {
                d.end = Some(at);
            }
        }
    }
}

/// One lab host as the daemon knows it.
#[derive(Debug)]
pub(crate) struct HostRt {
    pub index: usize,
    pub short: String,
    pub fqdn: String,
    pub addr: Ipv4Addr,
    pub os: Os,
    pub layout: HostLayout,
    pub mount_plan: Arc<MountPlan>,
    pub want_listen: watch::Sender<bool>,
    pub state: Mutex<HostState>,
}

impl HostRt {
    pub(crate) fn lock(&self) -> MutexGuard<'_, HostState> {
        // A panic while holding the lock leaves plain data behind: keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the listener task whether to be bound, from the current state.
    pub(crate) fn sync_listener(&self) {
        let want = self.lock().should_listen();
        self.want_listen.send_replace(want);
    }
}

/// Branch "badness" over time (jobs fail while a bad branch is applied).
#[derive(Debug, Default)]
pub(crate) struct BadBranches {
    changes: Vec<(SystemTime, Vec<u8>, bool)>,
}

impl BadBranches {
    pub(crate) fn set(&mut self, branch: &[u8], bad: bool, at: SystemTime) {
        self.changes.push((at, branch.to_vec(), bad));
    }

    /// Whether `branch` was marked bad at time `t`.
    pub(crate) fn bad_at(&self, branch: &[u8], t: SystemTime) -> bool {
        self.changes
            .iter()
            .rfind(|(at, b, _)| *at <= t && b == branch)
            .is_some_and(|(_, _, bad)| *bad)
    }
}

/// Everything the daemon's tasks share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub id: String,
    pub layout: LabLayout,
    pub started: SystemTime,
    pub port: std::sync::atomic::AtomicU16,
    pub hosts: Vec<HostRt>,
    pub by_name: HashMap<String, usize>,
    pub puppet: PuppetSpec,
    pub taskcluster: TaskclusterSpec,
    pub bad_branches: Mutex<BadBranches>,
    /// The Taskcluster double's own state (clients, failures, old workers).
    pub tc: crate::taskcluster::TcState,
    pub shutdown: watch::Sender<bool>,
    pub stopping: AtomicBool,
    pub sshd_log: File,
    pub log: Mutex<File>,
    /// The jump host, when the fleet is behind one.
    pub bastion: Option<Bastion>,
}

/// The bastion: a real `sshd -i` per connection, accepted where clients run
/// and forwarding into the fleet's own network namespace.
#[derive(Debug)]
pub(crate) struct Bastion {
    pub fqdn: String,
    pub addr: Ipv4Addr,
    /// The fleet's network, where every host listens.
    pub net: FleetNet,
    pub mount_plan: Arc<MountPlan>,
    pub want_listen: watch::Sender<bool>,
    pub listening: AtomicBool,
    /// Process-group ids of its live connections: each is an `sshd -i`
    /// under a marked shell, in a session of its own (see spawn_sshd).
    pub sessions: Mutex<HashSet<i32>>,
}

impl Bastion {
    pub(crate) fn lock_sessions(&self) -> MutexGuard<'_, HashSet<i32>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Shared {
    pub(crate) fn log(&self, msg: impl AsRef<str>) {
        use std::io::Write;
        let ts = crate::taskcluster::reply::tc_date(SystemTime::now());
        let mut f = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(f, "{ts} {}", msg.as_ref());
    }

    pub(crate) fn host(&self, name: &str) -> Result<&HostRt, LabError> {
        self.by_name
            .get(name)
            .map(|&i| &self.hosts[i])
            .ok_or_else(|| LabError::UnknownHost(name.to_string()))
    }

    pub(crate) fn port(&self) -> u16 {
        self.port.load(Ordering::SeqCst)
    }

    /// Reads Puppet runs appended to a host's events.log since last time.
    pub(crate) fn refresh_runs(&self, host: &HostRt) {
        use std::io::{Read, Seek, SeekFrom};
        let path = host.layout.events_log();
        let mut st = host.lock();
        let Ok(mut f) = File::open(&path) else {
            return;
        };
        let Ok(len) = f.metadata().map(|m| m.len()) else {
            return;
        };
        if len <= st.events_offset {
            return;
        }
        if f.seek(SeekFrom::Start(st.events_offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_err() {
            return;
        }
        // Only whole lines: a run still being appended is read next time.
        let Some(last_nl) = buf.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        st.events_offset += last_nl as u64 + 1;
        for line in buf[..=last_nl].split(|&b| b == b'\n') {
            if let Some(run) = parse_run(line) {
                st.runs.push(run);
            }
        }
    }
}

fn parse_run(line: &[u8]) -> Option<PuppetRun> {
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    if parts.next()? != "puppet" {
        return None;
    }
    let ms: u64 = parts.next()?.parse().ok()?;
    let exit_code: i32 = parts.next()?.parse().ok()?;
    let hex = parts.next().unwrap_or("");
    let branch = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some(PuppetRun {
        at: SystemTime::UNIX_EPOCH + Duration::from_millis(ms),
        exit_code,
        branch,
    })
}

/// Binds a listener in the calling thread's network namespace (SO_REUSEADDR,
/// as std does on Unix).
pub(crate) fn bind(addr: Ipv4Addr, port: u16) -> Result<std::net::TcpListener, LabError> {
    let l = std::net::TcpListener::bind(SocketAddr::from((addr, port)))
        .ctx(|| format!("listen on {addr}:{port}"))?;
    l.set_nonblocking(true)
        .ctx(|| format!("set {addr}:{port} non-blocking"))?;
    Ok(l)
}

/// What a listener serves: one host, or the bastion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Host(usize),
    Bastion,
}

impl Shared {
    /// Binds a host's listener: in the fleet's network namespace behind a
    /// bastion, else where clients run.
    fn bind_host(&self, addr: Ipv4Addr, port: u16) -> Result<std::net::TcpListener, LabError> {
        match &self.bastion {
            Some(b) => b.net.bind(SocketAddr::from((addr, port))),
            None => bind(addr, port),
        }
    }

    fn endpoint_name(&self, ep: Endpoint) -> &str {
        match ep {
            Endpoint::Host(i) => &self.hosts[i].short,
            Endpoint::Bastion => crate::sshd::BASTION_SHORT,
        }
    }

    fn want_listen(&self, ep: Endpoint) -> Option<watch::Receiver<bool>> {
        match ep {
            Endpoint::Host(i) => Some(self.hosts[i].want_listen.subscribe()),
            Endpoint::Bastion => self.bastion.as_ref().map(|b| b.want_listen.subscribe()),
        }
    }

    fn set_listening(&self, ep: Endpoint, on: bool) {
        match ep {
            Endpoint::Host(i) => self.hosts[i].lock().listening = on,
            Endpoint::Bastion => {
                if let Some(b) = &self.bastion {
                    b.listening.store(on, Ordering::SeqCst);
                }
            }
        }
    }

    fn bind_endpoint(&self, ep: Endpoint) -> Result<std::net::TcpListener, LabError> {
        match ep {
            Endpoint::Host(i) => self.bind_host(self.hosts[i].addr, self.port()),
            Endpoint::Bastion => match &self.bastion {
                Some(b) => bind(b.addr, self.port()),
                None => Err(LabError::Daemon("this lab has no bastion".into())),
            },
        }
    }

    /// Adds (or with `live` false removes) a live `sshd -i` of an endpoint.
    fn track_session(&self, ep: Endpoint, pid: i32, live: bool) {
        let update = |set: &mut HashSet<i32>| {
            if live {
                set.insert(pid);
            } else {
                set.remove(&pid);
            }
        };
        match ep {
            Endpoint::Host(i) => update(&mut self.hosts[i].lock().sessions),
            Endpoint::Bastion => {
                if let Some(b) = &self.bastion {
                    update(&mut b.lock_sessions());
                }
            }
        }
    }
}

/// Serves a host or the bastion: bound while it should be reachable,
/// accepting connections and handing each to its own `sshd -i`.
pub(crate) async fn listener(
    shared: Arc<Shared>,
    ep: Endpoint,
    mut initial: Option<std::net::TcpListener>,
) {
    let Some(mut want) = shared.want_listen(ep) else {
        return;
    };
    let name = shared.endpoint_name(ep).to_string();
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        if *shutdown.borrow() {
            return;
        }
        if !*want.borrow_and_update() {
            initial = None;
            shared.set_listening(ep, false);
            tokio::select! {
                r = want.changed() => if r.is_err() { return },
                _ = shutdown.changed() => return,
            }
            continue;
        }
        let std_listener = match initial.take() {
            Some(l) => l,
            None => match shared.bind_endpoint(ep) {
                Ok(l) => l,
                Err(e) => {
                    shared.log(format!("{name}: {e}; retrying"));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        let listener = match tokio::net::TcpListener::from_std(std_listener) {
            Ok(l) => l,
            Err(e) => {
                shared.log(format!("{name}: listener: {e}"));
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        shared.set_listening(ep, true);
        loop {
            tokio::select! {
                r = listener.accept() => match r {
                    Ok((stream, _)) => accept(&shared, ep, stream),
                    Err(e) => {
                        // Out of descriptors and the like: back off, do not spin.
                        shared.log(format!("{name}: accept: {e}"));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                r = want.changed() => {
                    if r.is_err() || !*want.borrow() { break }
                }
                _ = shutdown.changed() => return,
            }
        }
        drop(listener);
        shared.set_listening(ep, false);
    }
}

fn accept(shared: &Arc<Shared>, ep: Endpoint, stream: tokio::net::TcpStream) {
    let blackhole = match ep {
        Endpoint::Host(i) => shared.hosts[i].lock().cfg.blackhole,
        Endpoint::Bastion => false,
    };
    if blackhole {
        // Accepted, and never a byte back: the client's banner exchange
        // times out, like a host whose sshd is wedged.
        let mut shutdown = shared.shutdown.subscribe();
        tokio::spawn(async move {
            let mut stream = stream;
            let mut buf = [0u8; 1024];
            loop {
                tokio::select! {
                    r = tokio::io::AsyncReadExt::read(&mut stream, &mut buf) => {
                        if matches!(r, Ok(0) | Err(_)) { break }
                    }
                    _ = shutdown.changed() => break,
                }
            }
        });
        return;
    }
    if let Err(e) = spawn_sshd(shared, ep, stream) {
        shared.log(format!(
            "{}: cannot start sshd: {e}",
            shared.endpoint_name(ep)
        ));
    }
}

/// The per-connection sshd options of a host: which key it presents (and
/// only that one), and its certificate.
fn host_key_args(host: &HostRt) -> Vec<std::ffi::OsString> {
    let key = host.lock().host_key.clone();
    let mut args = Vec::new();
    if key.own {
        // Keys given with -h are loaded before the config's; with
        // HostKeyAlgorithms narrowed to this key's type, it is the only
        // one offered even when the shared key is of another type.
        args.push("-h".into());
        args.push(key.path.clone().into_os_string());
    }
    if key.own || key.certificate.is_some() {
        args.push("-o".into());
        args.push(
            format!(
                "HostKeyAlgorithms={}",
                key.kind.host_key_algorithms(key.certificate.is_some())
            )
            .into(),
        );
    }
    if let Some(cert) = &key.certificate {
        let mut opt = std::ffi::OsString::from("HostCertificate=");
        opt.push(cert);
        args.push("-o".into());
        args.push(opt);
    }
    args
}

fn spawn_sshd(
    shared: &Arc<Shared>,
    ep: Endpoint,
    stream: tokio::net::TcpStream,
) -> Result<(), LabError> {
    let std_stream = stream.into_std().ctx(|| "detach connection".to_string())?;
    // sshd expects a blocking socket on stdin/stdout.
    std_stream
        .set_nonblocking(false)
        .ctx(|| "set connection blocking".to_string())?;
    let sock: OwnedFd = std_stream.into();
    let sock_out = sock.try_clone().ctx(|| "dup connection".to_string())?;
    let stderr = shared
        .sshd_log
        .try_clone()
        .ctx(|| "dup sshd log".to_string())?;

    let mut cmd;
    let (plan, netns) = match ep {
        Endpoint::Host(index) => {
            let host = &shared.hosts[index];
            cmd = tokio::process::Command::new(crate::system::SSHD);
            cmd.args(["-i", "-e", "-f"])
                .arg(shared.layout.sshd_config())
                .args(host_key_args(host))
                .process_group(0);
            (Arc::clone(&host.mount_plan), None)
        }
        Endpoint::Bastion => {
            let Some(b) = &shared.bastion else {
                return Err(LabError::Daemon("this lab has no bastion".into()));
            };
            // sshd overwrites its environment with its process title, and
            // unlike a host's the bastion's connections start no session
            // that carries the lab's mark. So sshd runs under a shell that
            // keeps the mark, in a session of its own (set up below): the
            // lab finds and kills the whole session even after its daemon
            // died (procs.rs).
            cmd = tokio::process::Command::new("/bin/sh");
            cmd.args(["-c", "\"$@\"; exit $?", "fleetroll-lab-bastion"])
                .arg(crate::system::SSHD)
                .args(["-i", "-e", "-f"])
                .arg(shared.layout.bastion_sshd_config())
                .arg("-h")
                .arg(shared.layout.bastion_host_key());
            (Arc::clone(&b.mount_plan), Some(b.net.raw_fd()))
        }
    };
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("FLEETROLL_LAB_ID", &shared.id)
        .env("FLEETROLL_LAB_HOST", shared.endpoint_name(ep))
        .stdin(Stdio::from(sock))
        .stdout(Stdio::from(sock_out))
        .stderr(Stdio::from(stderr))
        .kill_on_drop(false);
    // SAFETY: `enter`, `join` and setsid only make raw syscalls on memory
    // prepared before the fork (see namespace.rs, netns.rs); the
    // namespace's fd stays open in the parent (Shared owns it) until after
    // the spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            plan.enter()?;
            // The bastion's connection was accepted where clients run; the
            // connections it opens for them go to the fleet's network.
            if let Some(ns) = netns {
                crate::netns::join(ns)?;
                // Its own session and process group (the group id is what
                // the lab kills).
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().ctx(|| "spawn sshd -i".to_string())?;
    let Some(pid) = child.id().map(|p| p as i32) else {
        return Ok(());
    };
    shared.track_session(ep, pid, true);
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let _ = child.wait().await;
        shared.track_session(ep, pid, false);
    });
    Ok(())
}

/// Runs the host's run-puppet.sh as root in its namespace (Puppet at boot).
pub(crate) async fn run_puppet_at_boot(
    shared: &Arc<Shared>,
    index: usize,
) -> Result<i32, LabError> {
    let host = &shared.hosts[index];
    let log_path = host.layout.dir().join("boot.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .ctx(|| format!("open {}", log_path.display()))?;
    let log2 = log.try_clone().ctx(|| "dup boot log".to_string())?;
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("/usr/local/sbin/run-puppet.sh")
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", "/root")
        .env("FLEETROLL_LAB_ID", &shared.id)
        .env("FLEETROLL_LAB_HOST", &host.short)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2))
        .process_group(0)
        .kill_on_drop(true);
    let plan = Arc::clone(&host.mount_plan);
    // SAFETY: as in spawn_sshd.
    unsafe {
        cmd.pre_exec(move || plan.enter());
    }
    let mut child = cmd.spawn().ctx(|| "spawn run-puppet.sh".to_string())?;
    let status = tokio::time::timeout(Duration::from_secs(120), child.wait())
        .await
        .map_err(|_| LabError::Daemon(format!("{}: Puppet at boot did not finish", host.short)))?
        .ctx(|| "wait for run-puppet.sh".to_string())?;
    Ok(status.code().unwrap_or(-1))
}

/// Kills the `sshd -i` process groups of a host's connections.
pub(crate) fn kill_host_sessions_groups(shared: &Shared, index: usize) {
    let groups: Vec<i32> = shared.hosts[index]
        .lock()
        .sessions
        .iter()
        .copied()
        .collect();
    for pgid in groups {
        // SAFETY: kill(2) on a process group we started.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

/// Kills the process groups of the bastion's live connections (their
/// `sshd -i`, and so the forwarded connections they carry).
pub(crate) fn kill_bastion_groups(shared: &Shared) {
    let Some(b) = &shared.bastion else {
        return;
    };
    let groups: Vec<i32> = b.lock_sessions().iter().copied().collect();
    for pgid in groups {
        // SAFETY: kill(2) on a process group we started.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

/// Kills the bastion's connections and anything they left running.
pub(crate) fn kill_bastion_sessions(shared: &Shared) {
    kill_bastion_groups(shared);
    crate::procs::kill_lab_processes(&shared.id, Some(crate::sshd::BASTION_SHORT));
}

/// Kills every connection to a host and what its sessions left running (a
/// reboot drops them all).
pub(crate) fn kill_host_sessions(shared: &Shared, index: usize) {
    kill_host_sessions_groups(shared, index);
    crate::procs::kill_lab_processes(&shared.id, Some(&shared.hosts[index].short));
}

/// Takes a host away for its reboot duration, then runs Puppet at boot and
/// brings it back.
pub(crate) async fn reboot(shared: Arc<Shared>, index: usize) {
    let host = &shared.hosts[index];
    let duration = {
        let mut st = host.lock();
        if st.rebooting {
            return;
        }
        st.rebooting = true;
        st.reboots += 1;
        st.down(DownReason::Reboot, SystemTime::now());
        st.cfg.reboot_duration
    };
    shared.log(format!("{}: rebooting for {duration:?}", host.short));
    host.sync_listener();
    {
        let shared = Arc::clone(&shared);
        let _ = tokio::task::spawn_blocking(move || kill_host_sessions(&shared, index)).await;
    }
    let mut shutdown = shared.shutdown.subscribe();
    tokio::select! {
        _ = tokio::time::sleep(duration) => {}
        _ = shutdown.changed() => return,
    }
    match run_puppet_at_boot(&shared, index).await {
        Ok(code) => shared.log(format!("{}: Puppet at boot exited {code}", host.short)),
        Err(e) => shared.log(format!("{}: Puppet at boot: {e}", host.short)),
    }
    {
        let mut st = host.lock();
        st.rebooting = false;
        st.up(DownReason::Reboot, SystemTime::now());
    }
    host.sync_listener();
    shared.log(format!("{}: back from reboot", host.short));
}

/// Picks up reboot requests dropped by hosts' `reboot` into requests/.
pub(crate) async fn request_poller(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    let dir = shared.layout.requests_dir();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = shutdown.changed() => return,
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(short) = name.strip_prefix("reboot.") else {
                continue;
            };
            let _ = std::fs::remove_file(entry.path());
            if let Some(&index) = shared.by_name.get(short) {
                tokio::spawn(reboot(Arc::clone(&shared), index));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_run_lines() {
        let r = parse_run(b"puppet 1700000000123 2 666f6f").unwrap();
        assert_eq!(r.exit_code, 2);
        assert_eq!(r.branch, b"foo");
        assert_eq!(
            r.at,
            SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)
        );
        assert!(parse_run(b"puppet x 2 00").is_none());
        assert!(parse_run(b"reboot 1 2 00").is_none());
        assert_eq!(parse_run(b"puppet 1 0 ").unwrap().branch, b"");
    }

    #[test]
    fn bad_branches_are_time_indexed() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let mut b = BadBranches::default();
        b.set(b"x", true, t0);
        b.set(b"x", false, t0 + Duration::from_secs(10));
        assert!(!b.bad_at(b"x", t0 - Duration::from_secs(1)));
        assert!(b.bad_at(b"x", t0 + Duration::from_secs(5)));
        assert!(!b.bad_at(b"x", t0 + Duration::from_secs(10)));
        assert!(!b.bad_at(b"y", t0 + Duration::from_secs(5)));
    }
}
