//! The [`Lab`] handle: start a lab, drive its hosts, tear it down on drop.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::{IoContext, LabError};
use crate::hostfs::{self, HostIdentity};
use crate::hostkey::HostKeyKind;
use crate::layout::LabLayout;
use crate::namespace::MountPlan;
use crate::puppet::{branch_key, write_atomic};
use crate::runtime::{
    self, BadBranches, DownReason, Endpoint, HostRt, HostState, OverrideEvent, OverrideEventKind,
    Shared,
};
use crate::scenario::{MetadataMode, Os, Scenario};
use crate::slots::{self, Slot, SlotRecord};
use crate::system::{self, LAB_USER, MachineLock};
use crate::{hostsfile, overrides, procs, scripts, sshd};

/// How to start a lab.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// Number of virtual hosts (1 ..= 64000).
    pub hosts: usize,
    /// The lab directory (created if missing; its path may contain only
    /// letters, digits and `/._-+@,=`).
    pub dir: PathBuf,
    /// SSH port on every host address; 0 picks a free one.
    pub port: u16,
    /// Hosts' looks and misbehaviour.
    pub scenario: Scenario,
    /// DNS domain of the hosts (`lab-0001.<domain>`). Default:
    /// `fleetroll.test` for the first lab on the machine, `lab<N>.fleetroll.test`
    /// for concurrent ones, so their names never collide in /etc/hosts.
    pub domain: Option<String>,
    /// Put the hosts behind a bastion: they listen only in a private
    /// network namespace, which `bastion.<domain>` (a real sshd, the only
    /// thing listening where clients run) forwards into.
    pub bastion: bool,
}

impl LabConfig {
    /// `hosts` default hosts in `dir`, on a free port.
    pub fn new(hosts: usize, dir: impl Into<PathBuf>) -> LabConfig {
        LabConfig {
            hosts,
            dir: dir.into(),
            port: 0,
            scenario: Scenario::default(),
            domain: None,
            bastion: false,
        }
    }

    /// Puts the hosts behind a bastion (see [`LabConfig::bastion`]).
    pub fn bastion(mut self, on: bool) -> LabConfig {
        self.bastion = on;
        self
    }

    /// Sets the scenario.
    pub fn scenario(mut self, scenario: Scenario) -> LabConfig {
        self.scenario = scenario;
        self
    }

    /// Sets the SSH port (0 = pick a free one).
    pub fn port(mut self, port: u16) -> LabConfig {
        self.port = port;
        self
    }
}

/// One virtual host, as clients see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LabHost {
    /// Fully qualified name, resolvable through /etc/hosts.
    pub hostname: String,
    /// Short name (`lab-0001`): the Taskcluster worker id.
    pub short_name: String,
    /// The loopback address the host answers on.
    pub address: Ipv4Addr,
    /// Linux or macOS layout.
    pub os: Os,
    /// Role at start (/etc/puppet_role).
    pub role: String,
}

/// Whether the lab runs inside the process that started it or as a daemon.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LabMode {
    /// Inside a test process (the library).
    Embedded,
    /// `fleetroll-lab serve`, started by `fleetroll-lab up`.
    Daemon,
}

/// What `fleetroll-lab up` prints, and `lab.json` in the lab directory holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabInfo {
    /// Unique id of this lab run.
    pub id: String,
    /// The lab directory.
    pub dir: PathBuf,
    /// Process serving the lab.
    pub pid: u32,
    /// Embedded or daemon.
    pub mode: LabMode,
    /// Second octet of the lab's 127.x.0.0/16.
    pub slot: u8,
    /// User to log in as.
    pub ssh_user: String,
    /// Port every host listens on.
    pub ssh_port: u16,
    /// Private key to log in with.
    pub identity_file: PathBuf,
    /// known_hosts covering every host (and the bastion), for strict host
    /// key checking.
    pub known_hosts_file: PathBuf,
    /// OpenSSH client config for the hosts (through the bastion when there
    /// is one): `ssh -F <it> lab-0001.<domain>`.
    #[serde(default)]
    pub ssh_config_file: PathBuf,
    /// The jump host, when the hosts are behind one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bastion: Option<BastionInfo>,
    /// Base URL of the Taskcluster double (its `rootUrl`).
    pub taskcluster_url: String,
    /// Provisioner of every worker pool (`<provisioner>/<role>`).
    pub taskcluster_provisioner: String,
    /// Worker group of every lab worker.
    pub taskcluster_worker_group: String,
    /// Role → worker pool (`provisioner/workerType`) of the double; roles
    /// not in it work in `<provisioner>/<role with _ spelled ->`.
    #[serde(default)]
    pub taskcluster_pools: BTreeMap<String, String>,
    /// The lab's own Taskcluster client (Hawk credentials) at the double.
    #[serde(default)]
    pub taskcluster_client: TaskclusterClient,
    /// The hosts.
    pub hosts: Vec<LabHost>,
}

/// The jump host of a lab whose hosts are behind one: the same user, key
/// and port as the hosts; it forwards to them and runs nothing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BastionInfo {
    /// `bastion.<domain>`, resolvable through /etc/hosts.
    pub hostname: String,
    /// Its loopback address (127.S.0.254).
    pub address: Ipv4Addr,
    /// Its SSH port (the hosts' port).
    pub port: u16,
    /// Its own host key (`type base64`), also in the lab's known_hosts.
    pub public_key: String,
}

/// Taskcluster credentials the double accepts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TaskclusterClient {
    /// The clientId (`project/fleetroll/lab`).
    pub client_id: String,
    /// Its access token, the Hawk key.
    pub access_token: String,
    /// The scopes it holds.
    pub scopes: Vec<String>,
}

/// The lab's own client: the scenario's entry for its id if there is one,
/// else a fresh token (Taskcluster's shape: two slugids) and the default
/// scopes.
fn lab_client(spec: &crate::scenario::TaskclusterSpec) -> TaskclusterClient {
    use base64::Engine;
    let id = crate::scenario::LAB_CLIENT_ID;
    if let Some(c) = spec.clients.get(id) {
        return TaskclusterClient {
            client_id: id.to_string(),
            access_token: c.access_token.clone(),
            scopes: c.scopes.clone(),
        };
    }
    let slug =
        || base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes());
    TaskclusterClient {
        client_id: id.to_string(),
        access_token: format!("{}{}", slug(), slug()),
        scopes: crate::scenario::LAB_CLIENT_SCOPES
            .iter()
            .map(|s| s.to_string())
            .collect(),
    }
}

/// The double's clients: the scenario's, and the lab's own.
fn clients(
    spec: &crate::scenario::TaskclusterSpec,
    lab: &TaskclusterClient,
) -> crate::taskcluster::auth::Clients {
    use crate::taskcluster::auth::{Client, Clients};
    let mut by_id: BTreeMap<String, Client> = spec
        .clients
        .iter()
        .map(|(id, c)| {
            (
                id.clone(),
                Client {
                    access_token: c.access_token.clone(),
                    scopes: c.scopes.clone(),
                },
            )
        })
        .collect();
    by_id.insert(
        lab.client_id.clone(),
        Client {
            access_token: lab.access_token.clone(),
            scopes: lab.scopes.clone(),
        },
    );
    Clients {
        by_id,
        anonymous: spec.anonymous_scopes.clone(),
    }
}

/// A running lab. Dropping it stops the lab and removes every trace of it
/// from the machine (processes, mounts, /etc/hosts entries); the lab
/// directory stays for inspection.
///
/// Every method is blocking and quick, and never needs the caller's async
/// runtime: the lab runs its own on a private thread, so a `Lab` may be
/// used from plain and `#[tokio::test]` tests alike.
pub struct Lab {
    shared: Arc<Shared>,
    info: LabInfo,
    handle: tokio::runtime::Handle,
    thread: Option<JoinHandle<()>>,
    watcher: Option<JoinHandle<()>>,
    slot: Option<Slot>,
    stopped: bool,
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("id", &self.info.id)
            .field("dir", &self.info.dir)
            .field("hosts", &self.info.hosts.len())
            .finish()
    }
}

/// Paths inside the lab dir end up in sshd_config and shell scripts; keep
/// them to characters that need no quoting anywhere.
fn check_dir_chars(dir: &Path) -> Result<(), LabError> {
    let s = dir
        .to_str()
        .ok_or_else(|| LabError::Config(format!("lab directory {} is not UTF-8", dir.display())))?;
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "/._-+@,=".contains(*c)))
    {
        return Err(LabError::Config(format!(
            "lab directory {s:?} contains {c:?}; use only letters, digits and / . _ - + @ , ="
        )));
    }
    Ok(())
}

/// The domain ends up in /etc/hosts and the lab's ssh_config (as a `Host`
/// pattern): a plain DNS name, nothing either would read differently.
fn check_domain(domain: &str) -> Result<(), LabError> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if domain.len() > 200 || !domain.split('.').all(label_ok) {
        return Err(LabError::Config(format!(
            "domain {domain:?} is not a DNS name (letters, digits and -, in dot-separated labels)"
        )));
    }
    Ok(())
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// Undoes a failed start: whatever was set up before the failure.
struct StartGuard {
    id: String,
    armed: bool,
}

impl Drop for StartGuard {
    fn drop(&mut self) {
        if self.armed {
            procs::kill_lab_processes(&self.id, None);
            let _ = hostsfile::remove_block(&self.id);
            if let Ok(_machine) = MachineLock::acquire("machine.lock") {
                let _ = system::release_if_idle();
            }
        }
    }
}

/// Cleans what a dead lab left behind: its processes and hosts block.
pub(crate) fn cleanup_dead_lab(id: &str) -> Result<(), LabError> {
    procs::kill_lab_processes(id, None);
    hostsfile::remove_block(id)
}

/// Cleans up labs that died without stopping. Call with the machine lock.
fn collect_garbage() -> Result<(), LabError> {
    for (octet, rec) in slots::stale_records()? {
        cleanup_dead_lab(&rec.id)?;
        slots::forget(octet)?;
    }
    let live: HashSet<String> = slots::live_ids()?.into_iter().collect();
    for id in hostsfile::block_ids()? {
        if !live.contains(&id) {
            cleanup_dead_lab(&id)?;
        }
    }
    Ok(())
}

/// Reads `lab.json` of a lab directory.
pub fn read_info(dir: &Path) -> Result<LabInfo, LabError> {
    let path = LabLayout::new(dir.to_path_buf()).state_file();
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(LabError::NoLab(dir.to_path_buf()));
        }
        Err(e) => return Err(LabError::io(format!("read {}", path.display()), e)),
    };
    serde_json::from_str(&text)
        .map_err(|e| LabError::Daemon(format!("{} is not a lab state file: {e}", path.display())))
}

/// Whether the lab described by `info` is still being served.
pub fn is_running(info: &LabInfo) -> bool {
    slots::live_ids()
        .map(|ids| ids.contains(&info.id))
        .unwrap_or(false)
}

impl Lab {
    /// Starts a lab in this process. Blocks until every host accepts SSH
    /// connections and resolves by name (about a second per few hundred
    /// hosts). Needs root.
    pub fn start(config: LabConfig) -> Result<Lab, LabError> {
        Lab::start_as(config, LabMode::Embedded)
    }

    /// Starts a lab, recording who serves it.
    pub fn start_as(config: LabConfig, mode: LabMode) -> Result<Lab, LabError> {
        system::check_prerequisites()?;
        system::raise_fd_limit();
        if config.hosts == 0 || config.hosts > slots::MAX_HOSTS {
            return Err(LabError::Config(format!(
                "hosts must be 1..={}, not {}",
                slots::MAX_HOSTS,
                config.hosts
            )));
        }
        if let Some(domain) = &config.domain {
            check_domain(domain)?;
        }
        fs::create_dir_all(&config.dir).ctx(|| format!("create {}", config.dir.display()))?;
        let dir =
            fs::canonicalize(&config.dir).ctx(|| format!("resolve {}", config.dir.display()))?;
        check_dir_chars(&dir)?;
        let layout = LabLayout::new(dir.clone());
        if let Ok(old) = read_info(&dir)
            && is_running(&old)
        {
            return Err(LabError::AlreadyRunning {
                dir,
                pid: old.pid as i32,
            });
        }

        let id = new_id();
        let slot = {
            let _machine = MachineLock::acquire("machine.lock")?;
            system::prepare()?;
            collect_garbage()?;
            let (slot, _) = slots::acquire(&SlotRecord {
                id: id.clone(),
                dir: dir.clone(),
                pid: std::process::id(),
            })?;
            slot
        };
        let mut guard = StartGuard {
            id: id.clone(),
            armed: true,
        };
        let result = Lab::start_in_slot(config, mode, layout, id, slot);
        if result.is_ok() {
            guard.armed = false;
        }
        result
    }

    fn start_in_slot(
        config: LabConfig,
        mode: LabMode,
        layout: LabLayout,
        id: String,
        slot: Slot,
    ) -> Result<Lab, LabError> {
        let mut phases = Phases::new();
        let dir = layout.root().to_path_buf();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
            .ctx(|| format!("chmod {}", dir.display()))?;

        // A previous run's files would confuse hosts and tests: start clean,
        // touching only what the lab itself creates. They are moved aside and
        // deleted once the lab is up: deleting thousands of files first slows
        // down creating their replacements (markedly so under gVisor).
        let old = dir.join(format!(".old-{id}"));
        for sub in [
            "ssh", "bin", "share", "puppet", "requests", "by-addr", "hosts",
        ] {
            let p = dir.join(sub);
            if p.exists() {
                fs::create_dir_all(&old).ctx(|| format!("create {}", old.display()))?;
                fs::rename(&p, old.join(sub)).ctx(|| format!("move {} aside", p.display()))?;
            }
        }
        let _ = fs::remove_file(layout.state_file());
        for d in [
            layout.bin_dir(),
            layout.share_dir(),
            layout.broken_dir(),
            layout.requests_dir(),
            layout.by_addr_dir(),
            layout.hosts_dir(),
        ] {
            fs::create_dir_all(&d).ctx(|| format!("create {}", d.display()))?;
            fs::set_permissions(&d, fs::Permissions::from_mode(0o755))
                .ctx(|| format!("chmod {}", d.display()))?;
        }
        if let Some(p) = layout.broken_dir().parent() {
            fs::set_permissions(p, fs::Permissions::from_mode(0o755))
                .ctx(|| format!("chmod {}", p.display()))?;
        }
        let log = fs::File::create(layout.log_file())
            .ctx(|| format!("create {}", layout.log_file().display()))?;
        let sshd_log = fs::File::create(layout.sshd_log())
            .ctx(|| format!("create {}", layout.sshd_log().display()))?;

        phases.mark("clean");
        sshd::setup(&layout, &id, config.bastion)?;
        phases.mark("keys");
        scripts::install(&layout)?;
        let scenario = &config.scenario;
        for (branch, code) in &scenario.puppet.broken_branches {
            crate::puppet::write_file(
                &layout.broken_dir().join(branch_key(branch.as_bytes())),
                format!("{code}\n").as_bytes(),
                0o644,
            )?;
        }

        let domain = config.domain.clone().unwrap_or_else(|| {
            if slot.octet == slots::FIRST {
                "fleetroll.test".to_string()
            } else {
                format!("lab{}.fleetroll.test", slot.octet)
            }
        });
        let width = config.hosts.to_string().len().max(4);
        let started = SystemTime::now();
        let mut hosts = Vec::with_capacity(config.hosts);
        let mut rts = Vec::with_capacity(config.hosts);
        let mut by_name = HashMap::new();
        let name = |index: usize| {
            let short = format!("lab-{:0width$}", index + 1);
            let fqdn = format!("{short}.{domain}");
            (short, fqdn)
        };
        // Creating ~30 files per host is the bulk of a start; spread it over
        // a few threads (the work is syscalls, which overlap well).
        let workers = 4.min(config.hosts);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|w| {
                    let (layout, id, scenario, slot, name) = (&layout, &id, scenario, &slot, &name);
                    s.spawn(move || -> Result<(), LabError> {
                        for index in (w..config.hosts).step_by(workers) {
                            let (short, fqdn) = name(index);
                            let cfg = scenario.host_config(index, &short, &fqdn);
                            let ident = HostIdentity {
                                lab_id: id,
                                short: &short,
                                fqdn: &fqdn,
                                addr: slot.addr(index),
                            };
                            hostfs::create_host(layout, &ident, &cfg, &scenario.puppet, started)?;
                            hostfs::set_flag(&layout.host(&short), "unreachable", cfg.unreachable)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            handles.into_iter().try_for_each(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(LabError::Daemon("creating host files panicked".into()))
                })
            })
        })?;
        let mut pools_at_start = std::collections::BTreeMap::new();
        for index in 0..config.hosts {
            let (short, fqdn) = name(index);
            let addr = slot.addr(index);
            let cfg = scenario.host_config(index, &short, &fqdn);
            let host_layout = layout.host(&short);
            let plan = MountPlan::for_host(&dir, &host_layout, cfg.os, &fqdn)?;
            hosts.push(LabHost {
                hostname: fqdn.clone(),
                short_name: short.clone(),
                address: addr,
                os: cfg.os,
                role: cfg.role.clone(),
            });
            by_name.insert(short.clone(), index);
            by_name.insert(fqdn.clone(), index);
            let (want_listen, _) = watch::channel(!cfg.unreachable);
            let initial_pool = crate::taskcluster::pool_of(
                &scenario.taskcluster,
                &cfg.role,
                cfg.override_content.as_deref().map(str::as_bytes),
            );
            if let Some(pool) = &initial_pool {
                pools_at_start
                    .entry(pool.clone())
                    .or_insert_with(Vec::new)
                    .push(short.clone());
            }
            let ledger = crate::taskcluster::new_ledger(
                &scenario.taskcluster,
                started,
                initial_pool,
                &short,
            );
            rts.push(HostRt {
                index,
                short,
                fqdn,
                addr,
                os: cfg.os,
                layout: host_layout,
                mount_plan: Arc::new(plan),
                want_listen,
                state: Mutex::new(HostState {
                    tc: ledger,
                    cfg,
                    rebooting: false,
                    listening: false,
                    downtime: Vec::new(),
                    runs: Vec::new(),
                    events_offset: 0,
                    sessions: HashSet::new(),
                    override_events: Vec::new(),
                    override_tracking: Ok(()),
                    reboots: 0,
                    host_key: runtime::PresentedKey {
                        path: layout.host_key(),
                        kind: HostKeyKind::Ed25519,
                        own: false,
                        certificate: None,
                    },
                }),
            });
        }
        phases.mark("host files");
        let known: HashSet<String> = by_name.keys().cloned().collect();
        let unknown = scenario.unknown_names(&known);
        if !unknown.is_empty() {
            return Err(LabError::Config(format!(
                "the scenario names hosts this lab does not have: {}",
                unknown.join(", ")
            )));
        }
        for h in &rts {
            if h.lock().cfg.unreachable {
                h.lock().down(DownReason::Unreachable, started);
            }
        }

        // Behind a bastion, the hosts listen in a network namespace of their
        // own and only the bastion listens where clients run.
        let bastion_fqdn = format!("bastion.{domain}");
        let bastion_addr = slots::bastion_addr(slot.octet);
        let fleet_net = if config.bastion {
            Some(crate::netns::FleetNet::create()?)
        } else {
            None
        };
        // Bind everything before returning, so `up` means reachable. The port
        // is chosen where clients run (the fleet's namespace is empty).
        let bastion_listener = if config.bastion {
            Some(runtime::bind(bastion_addr, config.port)?)
        } else {
            None
        };
        let port = match &bastion_listener {
            Some(l) => l
                .local_addr()
                .ctx(|| "read the chosen port".to_string())?
                .port(),
            None if config.port == 0 => {
                let probe = runtime::bind(slot.addr(0), 0)?;
                probe
                    .local_addr()
                    .ctx(|| "read the chosen port".to_string())?
                    .port()
            }
            None => config.port,
        };
        let bind_host = |addr: Ipv4Addr| match &fleet_net {
            Some(net) => net.bind(std::net::SocketAddr::from((addr, port))),
            None => runtime::bind(addr, port),
        };
        let mut listeners = Vec::with_capacity(rts.len());
        for h in &rts {
            listeners.push(if h.lock().should_listen() {
                Some(bind_host(h.addr)?)
            } else {
                None
            });
        }
        for h in &rts {
            let listening = listeners[h.index].is_some();
            h.lock().listening = listening;
        }

        let mut entries: Vec<(Ipv4Addr, String)> = hosts
            .iter()
            .map(|h| (h.address, h.hostname.clone()))
            .collect();
        if config.bastion {
            entries.push((bastion_addr, bastion_fqdn.clone()));
        }
        phases.mark("listeners");
        hostsfile::add_block(&id, &dir, &entries)?;
        phases.mark("/etc/hosts");
        let names: Vec<(String, Ipv4Addr)> = hosts
            .iter()
            .map(|h| (h.hostname.clone(), h.address))
            .collect();
        let bastion_at = sshd::BastionAddr {
            fqdn: &bastion_fqdn,
            addr: bastion_addr,
        };
        let bastion_at = config.bastion.then_some(&bastion_at);
        sshd::write_known_hosts(&layout, port, &names, bastion_at)?;
        sshd::write_client_config(&layout, &id, &domain, slot.octet, port, bastion_at)?;
        let bastion = match fleet_net {
            Some(net) => {
                sshd::write_bastion_config(&layout, &id, port)?;
                Some(runtime::Bastion {
                    mount_plan: Arc::new(MountPlan::for_bastion(&dir, &bastion_fqdn)?),
                    fqdn: bastion_fqdn.clone(),
                    addr: bastion_addr,
                    net,
                    want_listen: watch::channel(true).0,
                    listening: AtomicBool::new(true),
                    sessions: Mutex::new(HashSet::new()),
                })
            }
            None => None,
        };
        let bastion_info = match &bastion {
            Some(b) => Some(BastionInfo {
                hostname: b.fqdn.clone(),
                address: b.addr,
                port,
                public_key: crate::hostkey::public_key_of(&layout.bastion_host_key())?,
            }),
            None => None,
        };

        let mut bad = BadBranches::default();
        for b in &scenario.puppet.bad_branches {
            bad.set(b.as_bytes(), true, SystemTime::UNIX_EPOCH);
        }
        let tc_client = lab_client(&scenario.taskcluster);
        let tc = crate::taskcluster::TcState::new(
            clients(&scenario.taskcluster, &tc_client),
            tc_client.client_id.clone(),
            scenario.taskcluster.fail_rate,
            crate::taskcluster::expired_rows(&scenario.taskcluster, started, &pools_at_start),
        );
        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            id: id.clone(),
            layout: layout.clone(),
            started,
            port: AtomicU16::new(port),
            hosts: rts,
            by_name,
            puppet: scenario.puppet.clone(),
            taskcluster: scenario.taskcluster.clone(),
            bad_branches: Mutex::new(bad),
            tc,
            shutdown,
            stopping: AtomicBool::new(false),
            sshd_log,
            log: Mutex::new(log),
            bastion,
        });
        let watcher = overrides::spawn(Arc::clone(&shared));
        let (thread, handle, tc_url) =
            match spawn_runtime(Arc::clone(&shared), listeners, bastion_listener) {
                Ok(x) => x,
                Err(e) => {
                    shared.stopping.store(true, Ordering::SeqCst);
                    let _ = watcher.join();
                    return Err(e);
                }
            };

        let info = LabInfo {
            id,
            dir,
            pid: std::process::id(),
            mode,
            slot: slot.octet,
            ssh_user: LAB_USER.to_string(),
            ssh_port: port,
            identity_file: layout.client_key(),
            known_hosts_file: layout.known_hosts(),
            ssh_config_file: layout.ssh_client_config(),
            bastion: bastion_info,
            taskcluster_url: tc_url,
            taskcluster_provisioner: scenario.taskcluster.provisioner.clone(),
            taskcluster_worker_group: scenario.taskcluster.worker_group.clone(),
            taskcluster_pools: scenario.taskcluster.pools.clone(),
            taskcluster_client: tc_client,
            hosts,
        };
        let mut lab = Lab {
            shared,
            info,
            handle,
            thread: Some(thread),
            watcher: Some(watcher),
            slot: Some(slot),
            stopped: false,
        };
        let text = serde_json::to_vec_pretty(&lab.info).unwrap_or_default();
        if let Err(e) = write_atomic(&layout.state_file(), &text, 0o644) {
            let _ = lab.teardown();
            return Err(e);
        }
        lab.shared.log(format!(
            "lab {} up: {} hosts on port {port}",
            lab.info.id,
            lab.info.hosts.len()
        ));
        phases.mark("runtime");
        lab.shared
            .log(format!("start phases: {}", phases.out.join(", ")));
        remove_old_runs_later(&lab.info.dir);
        Ok(lab)
    }

    /// Everything `fleetroll-lab up` prints.
    pub fn info(&self) -> &LabInfo {
        &self.info
    }

    /// The hosts, in index order (`lab-0001` first).
    pub fn hosts(&self) -> &[LabHost] {
        &self.info.hosts
    }

    /// The lab directory.
    pub fn dir(&self) -> &Path {
        &self.info.dir
    }

    /// The SSH user every host accepts.
    pub fn ssh_user(&self) -> &str {
        &self.info.ssh_user
    }

    /// The SSH port of every host.
    pub fn ssh_port(&self) -> u16 {
        self.info.ssh_port
    }

    /// The private key to log in with.
    pub fn identity_file(&self) -> &Path {
        &self.info.identity_file
    }

    /// A known_hosts file for every host (name and address, on the port).
    pub fn known_hosts_file(&self) -> &Path {
        &self.info.known_hosts_file
    }

    /// Base URL (`rootUrl`) of the Taskcluster double.
    pub fn taskcluster_url(&self) -> &str {
        &self.info.taskcluster_url
    }

    /// A handle on one host, by full or short name.
    pub fn host(&self, name: &str) -> Result<HostHandle<'_>, LabError> {
        let rt = self.shared.host(name)?;
        Ok(HostHandle {
            lab: self,
            index: rt.index,
        })
    }

    /// Reads a file as the host sees it (`/etc/puppet/ronin_settings`);
    /// `None` when it does not exist.
    pub fn host_file(&self, host: &str, path: &str) -> Result<Option<Vec<u8>>, LabError> {
        self.host(host)?.file(path)
    }

    /// Makes Puppet fail on `branch` with `exit_code` (1, 4 or 6), or
    /// repairs it with `None`. Applies to runs that start afterwards.
    pub fn set_branch_broken(&self, branch: &str, exit_code: Option<i32>) -> Result<(), LabError> {
        let path = self
            .shared
            .layout
            .broken_dir()
            .join(branch_key(branch.as_bytes()));
        match exit_code {
            Some(code) if matches!(code, 0 | 2) || !(1..=255).contains(&code) => Err(
                LabError::Config(format!("exit code {code} is not a Puppet failure")),
            ),
            Some(code) => write_atomic(&path, format!("{code}\n").as_bytes(), 0o644),
            None => hostfs::remove_if_exists(&path),
        }
    }

    /// Marks `branch` as making jobs fail (or not) from now on, on every host
    /// where Puppet applied it.
    pub fn set_branch_bad(&self, branch: &str, bad: bool) {
        self.shared
            .bad_branches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set(branch.as_bytes(), bad, SystemTime::now());
    }

    /// Answers this share (0..=1) of the Taskcluster double's requests from
    /// now on with a load balancer's 502 (an HTML page, not Taskcluster's
    /// JSON error).
    pub fn set_taskcluster_fail_rate(&self, rate: f64) -> Result<(), LabError> {
        if !(0.0..=1.0).contains(&rate) {
            return Err(LabError::Config(format!(
                "Taskcluster fail rate {rate} must be in [0, 1]"
            )));
        }
        self.shared.tc.set_fail_rate(rate);
        Ok(())
    }

    /// The lab's own Taskcluster client (clientId, access token, scopes).
    pub fn taskcluster_client(&self) -> &TaskclusterClient {
        &self.info.taskcluster_client
    }

    /// The jump host, when the hosts are behind one ([`LabConfig::bastion`]).
    pub fn bastion(&self) -> Option<&BastionInfo> {
        self.info.bastion.as_ref()
    }

    /// OpenSSH client config for the lab's hosts (user, port, key,
    /// known_hosts, and `ProxyJump` through the bastion when there is one):
    /// `ssh -F <it> lab-0001.<domain>`.
    pub fn ssh_config_file(&self) -> &Path {
        &self.info.ssh_config_file
    }

    fn the_bastion(&self) -> Result<&runtime::Bastion, LabError> {
        self.shared
            .bastion
            .as_ref()
            .ok_or_else(|| LabError::Config("this lab has no bastion".into()))
    }

    /// Live connections to the bastion (its `sshd -i` processes, one per
    /// client connection whatever number of hosts it carries); 0 without a
    /// bastion.
    pub fn bastion_connections(&self) -> usize {
        self.shared
            .bastion
            .as_ref()
            .map_or(0, |b| b.lock_sessions().len())
    }

    /// Kills every live connection to the bastion, as a bastion that
    /// restarts does: clients must reconnect, and what they ran on hosts
    /// through it loses its connection. Returns once they are gone.
    pub fn drop_bastion_connections(&self) -> Result<(), LabError> {
        let bastion = self.the_bastion()?;
        runtime::kill_bastion_sessions(&self.shared);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !bastion.lock_sessions().is_empty() {
            if Instant::now() > deadline {
                return Err(LabError::Daemon(
                    "the bastion's connections did not end".into(),
                ));
            }
            // A connection accepted meanwhile is dropped too.
            runtime::kill_bastion_groups(&self.shared);
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Unreachable bastion: connections to it are refused (nothing listens
    /// on its address), so no host can be reached. Existing connections are
    /// left alone ([`Lab::drop_bastion_connections`] ends them).
    pub fn set_bastion_unreachable(&self, on: bool) -> Result<(), LabError> {
        let bastion = self.the_bastion()?;
        bastion.want_listen.send_replace(!on);
        let deadline = Instant::now() + Duration::from_secs(10);
        while bastion.listening.load(Ordering::SeqCst) == on {
            if Instant::now() > deadline {
                return Err(LabError::Daemon(
                    "the bastion's listener did not follow".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Stops the lab now, reporting cleanup errors (drop does the same,
    /// silently).
    pub fn down(mut self) -> Result<(), LabError> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<(), LabError> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        self.shared.log("stopping");
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.shutdown.send_replace(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(t) = self.watcher.take() {
            let _ = t.join();
        }
        let mut first_err = None;
        // Sessions started by the runtime were killed on its way out; this
        // catches anything that escaped (orphans, sudo children).
        procs::kill_lab_processes(&self.info.id, None);
        if let Err(e) = hostsfile::remove_block(&self.info.id) {
            first_err.get_or_insert(e);
        }
        let _ = fs::remove_file(self.shared.layout.state_file());
        if let Some(slot) = self.slot.take() {
            slots::clear_record(&slot);
            drop(slot);
        }
        match MachineLock::acquire("machine.lock") {
            Ok(_machine) => {
                if let Err(e) = system::release_if_idle() {
                    first_err.get_or_insert(e);
                }
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("fleetroll-lab: cleaning up lab {}: {e}", self.info.id);
        }
    }
}

/// How long each step of a start took (logged, for slow machines).
struct Phases {
    t: Instant,
    out: Vec<String>,
}

impl Phases {
    fn new() -> Phases {
        Phases {
            t: Instant::now(),
            out: Vec::new(),
        }
    }
    fn mark(&mut self, what: &str) {
        self.out.push(format!("{what} {:.2?}", self.t.elapsed()));
        self.t = Instant::now();
    }
}

/// Deletes previous runs' files (`.old-*`) in the background.
fn remove_old_runs_later(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let old: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".old-"))
        .map(|e| e.path())
        .collect();
    if old.is_empty() {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("fleetroll-lab-cleanup".into())
        .spawn(move || {
            for p in old {
                let _ = fs::remove_dir_all(p);
            }
        });
}

type Started = (JoinHandle<()>, tokio::runtime::Handle, String);

/// Starts the lab's runtime thread: host listeners, reboot requests, the
/// Taskcluster double. Returns once all are serving.
fn spawn_runtime(
    shared: Arc<Shared>,
    listeners: Vec<Option<std::net::TcpListener>>,
    bastion: Option<std::net::TcpListener>,
) -> Result<Started, LabError> {
    let (ready_tx, ready_rx) =
        std::sync::mpsc::channel::<Result<(tokio::runtime::Handle, String), LabError>>();
    let thread = std::thread::Builder::new()
        .name("fleetroll-lab".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("fleetroll-lab-rt")
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(LabError::io("start the lab runtime", e)));
                    return;
                }
            };
            let handle = rt.handle().clone();
            rt.block_on(serve(shared, listeners, bastion, handle, ready_tx));
            rt.shutdown_timeout(Duration::from_secs(2));
        })
        .ctx(|| "spawn the lab thread".to_string())?;
    match ready_rx.recv() {
        Ok(Ok((handle, url))) => Ok((thread, handle, url)),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err(LabError::Daemon(
                "the lab runtime died while starting".into(),
            ))
        }
    }
}

async fn serve(
    shared: Arc<Shared>,
    listeners: Vec<Option<std::net::TcpListener>>,
    bastion: Option<std::net::TcpListener>,
    handle: tokio::runtime::Handle,
    ready: std::sync::mpsc::Sender<Result<(tokio::runtime::Handle, String), LabError>>,
) {
    let tc = match tokio::net::TcpListener::bind(("127.0.0.1", 0)).await {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(LabError::io("listen for the Taskcluster double", e)));
            return;
        }
    };
    let url = match tc.local_addr() {
        Ok(a) => format!("http://{a}"),
        Err(e) => {
            let _ = ready.send(Err(LabError::io(
                "read the Taskcluster double's address",
                e,
            )));
            return;
        }
    };
    let app = crate::taskcluster::api::router(Arc::clone(&shared));
    let mut stop = shared.shutdown.subscribe();
    let server = tokio::spawn(async move {
        let _ = axum::serve(tc, app)
            .with_graceful_shutdown(async move {
                let _ = stop.changed().await;
            })
            .await;
    });
    for (index, l) in listeners.into_iter().enumerate() {
        tokio::spawn(runtime::listener(
            Arc::clone(&shared),
            Endpoint::Host(index),
            l,
        ));
    }
    if bastion.is_some() {
        tokio::spawn(runtime::listener(
            Arc::clone(&shared),
            Endpoint::Bastion,
            bastion,
        ));
    }
    tokio::spawn(runtime::request_poller(Arc::clone(&shared)));
    let _ = ready.send(Ok((handle, url)));

    let mut stop = shared.shutdown.subscribe();
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            break;
        }
    }
    // Kill sessions while the runtime still reaps its children.
    {
        let shared = Arc::clone(&shared);
        let _ = tokio::task::spawn_blocking(move || {
            runtime::kill_bastion_sessions(&shared);
            for index in 0..shared.hosts.len() {
                runtime::kill_host_sessions_groups(&shared, index);
            }
            procs::kill_lab_processes(&shared.id, None);
        })
        .await;
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    let live = |shared: &Shared| {
        shared.hosts.iter().any(|h| !h.lock().sessions.is_empty())
            || shared
                .bastion
                .as_ref()
                .is_some_and(|b| !b.lock_sessions().is_empty())
    };
    while Instant::now() < deadline && live(&shared) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
}

/// What a host is doing now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostStatus {
    /// Accepting SSH connections right now.
    pub reachable: bool,
    /// In the middle of a reboot.
    pub rebooting: bool,
    /// Reboots so far.
    pub reboots: u64,
    /// Live SSH connections.
    pub connections: usize,
}

/// One Puppet run a host went through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PuppetRunRecord {
    /// When it finished.
    pub at: SystemTime,
    /// Puppet's exit code.
    pub exit_code: i32,
    /// The branch it applied (lossy UTF-8).
    pub branch: String,
}

/// Drives one lab host. Setters take effect for new connections at once;
/// they return after the daemon has acted (e.g. the listener is closed).
#[derive(Debug, Clone, Copy)]
pub struct HostHandle<'a> {
    lab: &'a Lab,
    index: usize,
}

impl HostHandle<'_> {
    fn rt(&self) -> &HostRt {
        &self.lab.shared.hosts[self.index]
    }

    fn ident(&self) -> HostIdentity<'_> {
        let rt = self.rt();
        HostIdentity {
            lab_id: &self.lab.shared.id,
            short: &rt.short,
            fqdn: &rt.fqdn,
            addr: rt.addr,
        }
    }

    fn rewrite_host_config(&self) -> Result<(), LabError> {
        let cfg = self.rt().lock().cfg.clone();
        hostfs::write_host_config(
            &self.lab.shared.layout,
            &self.rt().layout,
            &self.ident(),
            &cfg,
            &self.lab.shared.puppet,
        )
    }

    /// Full host name.
    pub fn hostname(&self) -> &str {
        &self.rt().fqdn
    }

    /// Short name (Taskcluster worker id).
    pub fn short_name(&self) -> &str {
        &self.rt().short
    }

    /// The host's address.
    pub fn address(&self) -> Ipv4Addr {
        self.rt().addr
    }

    /// Waits until the listener matches the host's state (bound or not).
    fn settle(&self) -> Result<(), LabError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            {
                let st = self.rt().lock();
                if st.listening == st.should_listen() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(LabError::Daemon(format!(
                    "{}: listener did not follow the host's state",
                    self.rt().short
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Unreachable: connections are refused (nothing listens on the
    /// address). Existing connections are left alone. The host takes no jobs.
    pub fn set_unreachable(&self, on: bool) -> Result<(), LabError> {
        {
            let mut st = self.rt().lock();
            st.cfg.unreachable = on;
            let now = SystemTime::now();
            if on {
                st.down(DownReason::Unreachable, now);
            } else {
                st.up(DownReason::Unreachable, now);
            }
        }
        hostfs::set_flag(&self.rt().layout, "unreachable", on)?;
        self.rt().sync_listener();
        self.settle()
    }

    /// Black hole: connections are accepted but the server never sends its
    /// banner, so clients time out in the SSH handshake.
    pub fn set_blackhole(&self, on: bool) -> Result<(), LabError> {
        self.rt().lock().cfg.blackhole = on;
        hostfs::set_flag(&self.rt().layout, "blackhole", on)
    }

    /// Slow: every command starts `delay` late (zero turns it off).
    pub fn set_slow(&self, delay: Duration) -> Result<(), LabError> {
        self.rt().lock().cfg.slow = delay;
        hostfs::set_slow(&self.rt().layout, delay)
    }

    /// Hanging: commands are accepted and never answer.
    pub fn set_hang(&self, on: bool) -> Result<(), LabError> {
        self.rt().lock().cfg.hang = on;
        hostfs::set_flag(&self.rt().layout, "hang", on)
    }

    /// Whether `sudo -n` works for the SSH user (new connections).
    /// Commands run to their end, but one that changed the override file
    /// never answers: the write landed and its reply was lost.
    pub fn set_lose_reply_after_override_change(&self, on: bool) -> Result<(), LabError> {
        hostfs::set_flag(&self.rt().layout, "lose_reply_after_override_change", on)
    }

    pub fn set_sudo(&self, allowed: bool) -> Result<(), LabError> {
        self.rt().lock().cfg.sudo = allowed;
        hostfs::write_sudoers(&self.rt().layout, allowed)
    }

    /// Changes /etc/puppet_role (and so the host's worker pool).
    pub fn set_role(&self, role: &str) -> Result<(), LabError> {
        if !crate::scenario::valid_role(role) {
            return Err(LabError::Config(format!("invalid role {role:?}")));
        }
        write_atomic(
            &self.rt().layout.fs().join("etc/puppet_role"),
            format!("{role}\n").as_bytes(),
            0o644,
        )?;
        self.rt().lock().cfg.role = role.to_string();
        crate::taskcluster::refresh_pool(&self.lab.shared, self.rt());
        Ok(())
    }

    /// What the host's Puppet wrapper writes as metadata from the next run
    /// on (the current file is left as it is).
    pub fn set_metadata(&self, mode: MetadataMode) -> Result<(), LabError> {
        self.rt().lock().cfg.metadata = mode;
        self.rewrite_host_config()
    }

    /// How long the host's Puppet runs take from now on.
    pub fn set_puppet_duration(&self, d: Duration) -> Result<(), LabError> {
        self.rt().lock().cfg.puppet_duration = d;
        self.rewrite_host_config()
    }

    /// How long the next reboots take.
    pub fn set_reboot_duration(&self, d: Duration) {
        self.rt().lock().cfg.reboot_duration = d;
    }

    /// Writes (or with `None` removes) the override file as someone on the
    /// host would. The write counts in [`HostHandle::override_writes`].
    pub fn set_override(&self, content: Option<&[u8]>) -> Result<(), LabError> {
        let path = self
            .rt()
            .layout
            .on_host(self.rt().os.override_path())
            .ok_or_else(|| LabError::Config("bad override path".into()))?;
        match content {
            Some(c) => write_atomic(&path, c, 0o644),
            None => hostfs::remove_if_exists(&path),
        }
    }

    /// Quarantines the worker in the pool it works in now until `until`
    /// (it claims nothing meanwhile), or lifts the quarantine with `None`,
    /// as the lab's own client with no reason given. Does nothing when the
    /// queue does not know the worker in that pool yet (a host moved while
    /// it was down); [`HostHandle::quarantine`] says so.
    pub fn set_quarantine(&self, until: Option<SystemTime>) {
        let _ = self.quarantine(until, None);
    }

    /// Quarantines the worker in the pool it works in now (or lifts it with
    /// `None`, setting the date to now, as Taskcluster does), recording a
    /// details entry by the lab's client with `reason` (`[unspecified]`
    /// without one), exactly as a `quarantineWorker` call would.
    pub fn quarantine(
        &self,
        until: Option<SystemTime>,
        reason: Option<&str>,
    ) -> Result<(), LabError> {
        let until = until.unwrap_or_else(SystemTime::now);
        let shared = &self.lab.shared;
        crate::taskcluster::quarantine_host(
            shared,
            self.rt(),
            None,
            until,
            crate::taskcluster::reply::tc_date(until),
            &shared.tc.lab_client_id,
            reason.filter(|r| !r.is_empty()).unwrap_or("[unspecified]"),
        )
        .map(|_| ())
        .map_err(|_| {
            LabError::Config(format!(
                "{}: the queue does not know this worker in its current pool yet",
                self.rt().short
            ))
        })
    }

    /// The worker pool (`provisioner/workerType`) the host works in now, by
    /// its role and its override file's `WORKER_TYPE_OVERRIDE`; `None` when
    /// that is no valid task queue id (the host then claims nothing).
    pub fn worker_pool(&self) -> Option<String> {
        crate::taskcluster::refresh_pool(&self.lab.shared, self.rt());
        self.rt().lock().tc.current_pool().map(|p| p.to_string())
    }

    /// Reboots the host as `sudo reboot` on it would; returns once it is down.
    pub fn reboot(&self) -> Result<(), LabError> {
        self.lab
            .handle
            .spawn(runtime::reboot(Arc::clone(&self.lab.shared), self.index));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.rt().lock().rebooting {
            if Instant::now() > deadline {
                return Err(LabError::Daemon("reboot did not start".into()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.settle()
    }

    /// Waits until the host accepts connections again (after a reboot).
    pub fn wait_reachable(&self, timeout: Duration) -> Result<(), LabError> {
        let deadline = Instant::now() + timeout;
        while !self.status().reachable {
            if Instant::now() > deadline {
                return Err(LabError::Daemon(format!(
                    "{} still unreachable after {timeout:?}",
                    self.rt().short
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// What the host is doing now.
    pub fn status(&self) -> HostStatus {
        let st = self.rt().lock();
        HostStatus {
            reachable: st.listening && !st.cfg.blackhole,
            rebooting: st.rebooting,
            reboots: st.reboots,
            connections: st.sessions.len(),
        }
    }

    /// Writes a file as root on the host would, whatever it holds: a
    /// broken or hostile host, for the tests of what fleetroll does with
    /// what it reads there.
    pub fn write_file(&self, path: &str, contents: &[u8]) -> Result<(), LabError> {
        let p =
            self.rt().layout.on_host(path).ok_or_else(|| {
                LabError::Config(format!("{path:?} is not an absolute host path"))
            })?;
        write_atomic(&p, contents, 0o644)
    }

    /// Reads a file as the host sees it; `None` when it does not exist.
    pub fn file(&self, path: &str) -> Result<Option<Vec<u8>>, LabError> {
        let p =
            self.rt().layout.on_host(path).ok_or_else(|| {
                LabError::Config(format!("{path:?} is not an absolute host path"))
            })?;
        match fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(LabError::io(format!("read {}", p.display()), e)),
        }
    }

    /// A host file's modification time; `None` when it does not exist.
    pub fn file_mtime(&self, path: &str) -> Result<Option<SystemTime>, LabError> {
        let p =
            self.rt().layout.on_host(path).ok_or_else(|| {
                LabError::Config(format!("{path:?} is not an absolute host path"))
            })?;
        match fs::metadata(&p) {
            Ok(m) => Ok(Some(
                m.modified().ctx(|| format!("mtime of {}", p.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(LabError::io(format!("stat {}", p.display()), e)),
        }
    }

    /// The override file's path on this host (by OS).
    pub fn override_path(&self) -> &'static str {
        self.rt().os.override_path()
    }

    /// The metadata file's path on this host (by OS).
    pub fn metadata_path(&self) -> &'static str {
        self.rt().os.metadata_path()
    }

    /// Every change of the override file since the lab started, in order.
    /// Errs if changes may have been missed (see `LabError::OverrideTracking`).
    pub fn override_events(&self) -> Result<Vec<OverrideEvent>, LabError> {
        // inotify delivers asynchronously: give events of a write that just
        // returned a moment to arrive.
        std::thread::sleep(Duration::from_millis(50));
        let st = self.rt().lock();
        st.override_tracking
            .clone()
            .map_err(|why| LabError::OverrideTracking(self.rt().short.clone(), why))?;
        Ok(st.override_events.clone())
    }

    /// How many times the override file was written since the lab started.
    pub fn override_writes(&self) -> Result<usize, LabError> {
        Ok(self
            .override_events()?
            .iter()
            .filter(|e| e.kind == OverrideEventKind::Written)
            .count())
    }

    /// Every Puppet run so far (the initial one at lab start included).
    pub fn puppet_runs(&self) -> Vec<PuppetRunRecord> {
        self.lab.shared.refresh_runs(self.rt());
        self.rt()
            .lock()
            .runs
            .iter()
            .map(|r| PuppetRunRecord {
                at: r.at,
                exit_code: r.exit_code,
                branch: String::from_utf8_lossy(&r.branch).into_owned(),
            })
            .collect()
    }

    /// Gives the host a new SSH host key of its own, of the type it has now
    /// (ed25519 unless [`HostHandle::set_host_key`] chose another), without
    /// certificate: clients that knew the old one see "REMOTE HOST
    /// IDENTIFICATION HAS CHANGED".
    pub fn rotate_host_key(&self) -> Result<(), LabError> {
        let kind = self.rt().lock().host_key.kind;
        self.set_host_key(kind).map(|_| ())
    }

    /// Gives the host a fresh host key of its own of `kind`, which from the
    /// next connection on is the only key it offers (`HostKeyAlgorithms`
    /// narrowed to it: `rsa-sha2-512,rsa-sha2-256` for [`HostKeyKind::Rsa`],
    /// `ssh-rsa` alone for [`HostKeyKind::RsaSha1Only`]). Drops any
    /// certificate. Returns the public key (`type base64`).
    pub fn set_host_key(&self, kind: HostKeyKind) -> Result<String, LabError> {
        let path = self.rt().layout.own_host_key(kind);
        let tmp = crate::hostkey::with_suffix(&path, ".new");
        let public = crate::hostkey::generate_key_pair(
            &tmp,
            kind,
            &format!("fleetroll-lab {}", self.rt().fqdn),
        )?;
        // Public half first: a connection starting now reads the private
        // key, which is the old one or the new one, never half of each.
        fs::rename(
            crate::hostkey::with_suffix(&tmp, ".pub"),
            crate::hostkey::with_suffix(&path, ".pub"),
        )
        .ctx(|| "install new host key".to_string())?;
        fs::rename(&tmp, &path).ctx(|| "install new host key".to_string())?;
        self.rt().lock().host_key = runtime::PresentedKey {
            path,
            kind,
            own: true,
            certificate: None,
        };
        Ok(public)
    }

    /// Signs the key the host presents now (its own, or the lab's shared
    /// one) as a host certificate with the CA private key `ca_private_key`
    /// (`ssh-keygen -s CA -h -I <host> -n <principals> [-V validity]`; no
    /// principals: valid for any name), and makes the host present it from
    /// the next connection on, besides the plain key. `validity` is
    /// ssh-keygen's `-V` (`+52w`, `-1d:+1d`, `20300101:20310101`, ...).
    pub fn certify_host_key(
        &self,
        ca_private_key: &Path,
        principals: &[&str],
        validity: Option<&str>,
    ) -> Result<(), LabError> {
        let key = self.rt().lock().host_key.clone();
        let layout = &self.rt().layout;
        let certificate = layout.host_certificate(&key.path);
        // ssh-keygen writes <name>-cert.pub next to the public key: sign a
        // copy, then move the certificate in place in one step.
        let tmp_pub = layout.dir().join("signing.pub");
        fs::copy(crate::hostkey::with_suffix(&key.path, ".pub"), &tmp_pub)
            .ctx(|| format!("copy {}'s public host key", self.rt().short))?;
        let signed = crate::hostkey::sign_host_key(
            ca_private_key,
            &tmp_pub,
            &format!("fleetroll-lab {}", self.rt().fqdn),
            principals,
            validity,
        );
        let _ = fs::remove_file(&tmp_pub);
        signed?;
        fs::rename(layout.dir().join("signing-cert.pub"), &certificate)
            .ctx(|| format!("install {}", certificate.display()))?;
        let mut st = self.rt().lock();
        // Unless the key changed meanwhile, under this certificate.
        if st.host_key.path == key.path {
            st.host_key.certificate = Some(certificate);
        }
        Ok(())
    }

    /// The host's current public host key (`type base64`).
    pub fn host_public_key(&self) -> Result<String, LabError> {
        let path = self.rt().lock().host_key.path.clone();
        crate::hostkey::public_key_of(&path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_plain_dns_names() {
        for ok in ["fleetroll.test", "lab11.fleetroll.test", "a-b.c0"] {
            assert!(check_domain(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", ".test", "a..b", "a b", "a\nb", "-a.test", "a*.test", "a.test.",
        ] {
            assert!(check_domain(bad).is_err(), "{bad:?}");
        }
    }
}
