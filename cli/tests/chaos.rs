//! Chaos: a rollout driven to completion over lab hosts on the 3-node NATS
//! cluster of `nats-config/`, with every worker kind running as two
//! processes, while a chaos loop SIGKILLs worker processes (now one replica,
//! now both of a kind) and, at times, a NATS node, and starts them again.
//!
//! Afterwards: every host held the change once and is clean again after
//! finalize (the lab counts the writes), no stage was started twice, every
//! command in the command stream has exactly one audit record, and the audit
//! chain verifies. It prints what it killed and how long the mesh took to
//! serve commands again after each kill.
//!
//! `make test` runs the small fleet; `make chaos` (`cargo test -p fleetroll --test chaos -- --ignored`) the full one (300 hosts).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Cli, Proc, lab_env, wait_until};
use fleetroll_bus::codec;
use fleetroll_bus::connect::{Bus, BusError, ConnectOptions, Credentials, Tls};
use fleetroll_bus::embedded::{self, find_nats_server};
use fleetroll_bus::messages::audit::AuditRecord;
use fleetroll_bus::messages::command::CommandEnvelope;
use fleetroll_bus::token::TokenSource;
use fleetroll_bus::{subjects, topology};
use fleetroll_lab::{Lab, LabConfig, OverrideEventKind, Scenario};
use serde_json::Value;

const CHANGE: &[u8] = b"PUPPET_BRANCH=feature_chaos\n";
const KINDS: [&str; 4] = ["prober", "gatekeeper", "orchestrator", "auditor"];
/// The client ports of node-1.conf, node-2.conf and node-3.conf.
const CLIENT_PORTS: [u16; 3] = [4231, 4232, 4233];
/// ...and their route ports.
const CLUSTER_PORTS: [u16; 3] = [6231, 6232, 6233];

struct Plan {
    hosts: usize,
    canary: usize,
    batch: usize,
    /// Every how many chaos rounds one NATS node is killed.
    node_every: u32,
}

#[test]
fn chaos_small() {
    run(Plan {
        hosts: 24,
        canary: 3,
        batch: 7,
        node_every: 4,
    });
}

/// `make chaos` (`cargo test -p fleetroll --test chaos -- --ignored`).
#[test]
#[ignore = "the full chaos run takes several minutes: `make chaos` (`cargo test -p fleetroll --test chaos -- --ignored`)"]
fn chaos_full() {
    run(Plan {
        hosts: 300,
        canary: 10,
        batch: 58,
        node_every: 5,
    });
}

/// The three nodes of the cluster, each a nats-server process started from
/// its file in `nats-config/`, with its own store.
struct Cluster {
    store: PathBuf,
    pki: PathBuf,
    env: Vec<(String, String)>,
    nodes: Vec<Option<Child>>,
}

impl Cluster {
    /// Starts the nodes with the PKI, the callout key and the two password
    /// users (the set-up's and the authorizer's) `cli` makes in its data
    /// dir, as an operator deploying the cluster does.
    fn start(cli: &Cli) -> Cluster {
        // The configurations' own ports: a server already there (another
        // run) would answer with other keys.
        for port in CLIENT_PORTS.iter().chain(&CLUSTER_PORTS) {
            assert!(
                std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok(),
                "port {port} is taken: the chaos test runs nats-config/node-*.conf on 4231-4233 and 6231-6233"
            );
        }
        let data_dir = cli.data_dir.as_path();
        let store = data_dir.join("nats");
        std::fs::create_dir_all(&store).unwrap();
        // The nodes speak TLS to clients and to each other (nats-config/):
        // a CA and a certificate per node made by `fleetroll tls` in the
        // data dir.
        let pki = data_dir.join("tls");
        let init = cli.run(&["tls", "init", "--name", "chaos"]);
        assert_eq!(init.code, 0, "{init:?}");
        for node in 1..=3 {
            let name = format!("n{node}");
            let issued = cli.run(&["tls", "issue", "node", &name, "--san", "127.0.0.1"]);
            assert_eq!(issued.code, 0, "{issued:?}");
        }
        // Every other connection is its token's, as the authorizers judge
        // (nats-config/callout.conf).
        let seed = callout_seed(data_dir);
        let made = cli.run(&["auth", "callout-key", "--out", seed.to_str().unwrap()]);
        assert_eq!(made.code, 0, "{made:?}");
        let mut env = vec![
            (
                "FLEETROLL_TLS_CA".to_string(),
                pki.join(fleetroll_pki::CA_CERT).display().to_string(),
            ),
            (
                "FLEETROLL_CALLOUT_ISSUER".to_string(),
                made.stdout.trim().to_string(),
            ),
        ];
        for user in ["admin", "auth"] {
            let credentials = Credentials {
                user: user.into(),
                password: random_hex(),
            };
            let file = password_user_file(data_dir, user);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, credentials.to_toml()).unwrap();
            env.push((
                format!("FLEETROLL_{}_PASSWORD", user.to_uppercase()),
                format!("\"{}\"", credentials.password),
            ));
        }
        let mut cluster = Cluster {
            store,
            pki,
            env,
            nodes: vec![None, None, None],
        };
        for node in 0..3 {
            cluster.start_node(node);
        }
        cluster
    }

    fn url() -> String {
        CLIENT_PORTS
            .iter()
            .map(|p| format!("tls://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn config(node: usize) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../nats-config/node-{}.conf", node + 1))
    }

    fn start_node(&mut self, node: usize) {
        assert!(self.nodes[node].is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.store.join(format!("node-{}.log", node + 1)))
            .unwrap();
        let child = Command::new(find_nats_server(None).expect("nats-server (run `make setup`)"))
            .arg("-c")
            .arg(Self::config(node))
            .env(
                "FLEETROLL_NATS_STORE",
                self.store.join(format!("n{}", node + 1)),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env(
                "FLEETROLL_TLS_CERT",
                self.pki.join(format!("n{}.pem", node + 1)),
            )
            .env(
                "FLEETROLL_TLS_KEY",
                self.pki.join(format!("n{}-key.pem", node + 1)),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.nodes[node] = Some(child);
    }

    fn kill_node(&mut self, node: usize) -> u32 {
        let mut child = self.nodes[node].take().expect("a running node");
        let pid = child.id();
        common::kill(&mut child, libc::SIGKILL);
        let _ = child.wait();
        pid
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for mut child in self.nodes.drain(..).flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Every process of the mesh: two replicas of each worker kind, each with
/// its own worker token, and two authorizers.
struct Workers {
    cli: Cli,
    procs: Vec<(&'static str, Option<Proc>)>,
}

/// The authorizer's slots in [`Workers`].
const AUTHORIZER: &str = "authorizer";

impl Workers {
    /// Issues the workers' tokens; starts the authorizers first, as the
    /// workers' connections need one.
    fn start(cli: &Cli) -> Workers {
        let mut workers = Workers {
            cli: cli.clone(),
            procs: std::iter::once(AUTHORIZER)
                .chain(KINDS)
                .flat_map(|k| [(k, None), (k, None)])
                .collect(),
        };
        for slot in 0..workers.procs.len() {
            if workers.procs[slot].0 != AUTHORIZER {
                cli.issue_token(&workers.identity(slot), "worker");
            }
            workers.start_one(slot);
        }
        workers
    }

    /// The worker's actor: its kind and replica (`prober-2`).
    fn identity(&self, slot: usize) -> String {
        let kind = self.procs[slot].0;
        let replica = self.procs[..slot]
            .iter()
            .filter(|(k, _)| *k == kind)
            .count()
            + 1;
        format!("{kind}-{replica}")
    }

    fn start_one(&mut self, slot: usize) {
        let kind = self.procs[slot].0;
        assert!(self.procs[slot].1.is_none());
        let data = self.cli.data_dir.clone();
        let path = |p: PathBuf| p.display().to_string();
        let args = if kind == AUTHORIZER {
            vec![
                "--nats-credentials".to_string(),
                path(password_user_file(&data, "auth")),
                AUTHORIZER.into(),
                "--issuer-seed".into(),
                path(callout_seed(&data)),
            ]
        } else {
            let token = data.join(format!("{}.token", self.identity(slot)));
            vec![
                "--token-file".to_string(),
                path(token),
                "worker".into(),
                kind.into(),
            ]
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.procs[slot].1 = Some(self.cli.spawn(&args));
    }

    /// Workers that ended without being killed (none should: a worker
    /// rides out a lost node), started again.
    fn restart_exited(&mut self) -> Vec<String> {
        let mut exited = Vec::new();
        for slot in 0..self.procs.len() {
            let (kind, proc) = &mut self.procs[slot];
            if let Some(status) = proc.as_mut().and_then(|p| p.try_wait().unwrap()) {
                exited.push(format!(
                    "{kind} (pid {}) {status}",
                    proc.as_ref().unwrap().id()
                ));
                self.procs[slot].1 = None;
                self.start_one(slot);
            }
        }
        exited
    }

    fn kill_one(&mut self, slot: usize) -> u32 {
        let mut proc = self.procs[slot].1.take().expect("a running worker");
        let pid = proc.id();
        common::kill(&mut proc, libc::SIGKILL);
        let _ = proc.wait();
        pid
    }
}

/// The authorizers' callout signing key, in the data dir.
fn callout_seed(data_dir: &Path) -> PathBuf {
    data_dir.join("callout.nk")
}

/// The credentials file of one of the cluster's two password users.
fn password_user_file(data_dir: &Path, user: &str) -> PathBuf {
    data_dir
        .join(embedded::CREDENTIALS_DIR)
        .join(format!("{user}.toml"))
}

fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").unwrap(),
        &mut bytes,
    )
    .unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The test's own connection to the cluster: a worker's rights, with a
/// worker token of its own.
async fn worker_bus(cli: &Cli) -> Bus {
    let token = cli.data_dir.join("chaos-check.token");
    if !token.exists() {
        cli.issue_token("chaos-check", "worker");
    }
    Bus::connect(
        ConnectOptions::new(Cluster::url(), "test-chaos")
            .token(TokenSource::File(token))
            .tls(Tls {
                ca_file: Some(cli.data_dir.join("tls").join(fleetroll_pki::CA_CERT)),
                client: None,
            }),
    )
    .await
    .unwrap()
}

/// A small random number generator, seeded from `CHAOS_SEED` or the clock
/// (and printed), so that a failing run can be replayed.
struct Dice(u64);

impl Dice {
    fn new() -> Dice {
        let seed = std::env::var("CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            })
            | 1;
        eprintln!("chaos: CHAOS_SEED={seed}");
        Dice(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from))
    }
}

/// What the chaos loop did, and how long until commands were served again.
struct Kill {
    at: Duration,
    what: String,
    served_after: Duration,
}

/// How long until a command reaches a worker of `kind` (every kind when
/// `None`) and comes back done: `fleetroll ping`'s full round trip.
fn time_to_serve(cli: &Cli, kind: Option<&str>, since: Instant) -> Duration {
    let mut args = vec!["ping", "--timeout", "2s"];
    if let Some(kind) = kind {
        args.extend(["--worker", kind]);
    }
    wait_until(
        "the mesh to serve commands again",
        Duration::from_secs(120),
        || cli.run(&args).code == 0,
    );
    since.elapsed()
}

fn sleep_unless(stop: &AtomicBool, pause: Duration) {
    let until = Instant::now() + pause;
    while Instant::now() < until && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills and restarts until `stop`; leaves every process running.
fn chaos(
    cluster: &mut Cluster,
    workers: &mut Workers,
    cli: &Cli,
    plan_node_every: u32,
    stop: &AtomicBool,
) -> Vec<Kill> {
    let mut dice = Dice::new();
    let began = Instant::now();
    let mut kills = Vec::new();
    let mut round = 0;
    loop {
        sleep_unless(stop, dice.millis(1500, 4000));
        if stop.load(Ordering::SeqCst) {
            break;
        }
        for exited in workers.restart_exited() {
            eprintln!("chaos: a worker exited by itself: {exited}");
            kills.push(Kill {
                at: began.elapsed(),
                what: format!("nothing: {exited} exited by itself"),
                served_after: Duration::ZERO,
            });
        }
        round += 1;
        let kill_at = Instant::now();
        let (what, served_after) = if round % plan_node_every == 0 {
            let node = dice.below(3) as usize;
            let pid = cluster.kill_node(node);
            let served = time_to_serve(cli, None, kill_at);
            // Back after a while, and caught up before another node goes.
            std::thread::sleep(dice.millis(1000, 4000));
            cluster.start_node(node);
            std::thread::sleep(Duration::from_secs(5));
            (format!("NATS node {} (pid {pid})", node + 1), served)
        } else if round % 3 == 0 {
            // Both replicas of a kind: nothing serves until one is back.
            let kind = KINDS[dice.below(4) as usize];
            let slots: Vec<usize> = (0..workers.procs.len())
                .filter(|&s| workers.procs[s].0 == kind)
                .collect();
            let pids: Vec<String> = slots
                .iter()
                .map(|&s| workers.kill_one(s).to_string())
                .collect();
            for &slot in &slots {
                workers.start_one(slot);
            }
            let served = time_to_serve(cli, Some(kind), kill_at);
            (
                format!(
                    "both {kind} replicas (pids {}), restarted at once",
                    pids.join(", ")
                ),
                served,
            )
        } else {
            let slot = dice.below(workers.procs.len() as u64) as usize;
            let kind = workers.procs[slot].0;
            let pid = workers.kill_one(slot);
            // An authorizer gone: every new connection needs the other.
            let served = time_to_serve(cli, (kind != AUTHORIZER).then_some(kind), kill_at);
            std::thread::sleep(dice.millis(0, 2000));
            workers.start_one(slot);
            (format!("one {kind} replica (pid {pid})"), served)
        };
        eprintln!(
            "chaos: t+{:>6.1}s killed {what}; commands served again after {:.2} s",
            kill_at.duration_since(began).as_secs_f64(),
            served_after.as_secs_f64()
        );
        kills.push(Kill {
            at: kill_at.duration_since(began),
            what,
            served_after,
        });
    }
    kills
}

/// Runs a CLI command until it exits 0, or until `done_anyway` says an
/// earlier attempt took effect though its answer was lost.
fn until_done(cli: &Cli, args: &[&str], mut done_anyway: impl FnMut() -> bool) -> String {
    let mut last = String::new();
    wait_until(
        &format!("`{}` to go through", args.join(" ")),
        Duration::from_secs(240),
        || {
            let run = cli.run(args);
            if run.code == 0 {
                last = run.stdout;
                return true;
            }
            eprintln!(
                "chaos: `{}` exit {}: {} (retrying)",
                args.join(" "),
                run.code,
                run.stderr.trim()
            );
            done_anyway()
        },
    );
    last
}

fn status(cli: &Cli, id: &str) -> Option<Value> {
    let run = cli.run(&["rollout", "status", id, "--json"]);
    (run.code == 0).then(|| run.json())
}

fn stages(cli: &Cli, id: &str) -> Option<Vec<Value>> {
    status(cli, id)?["rollout"]["stages"].as_array().cloned()
}

fn stage_hosts(stage: &Value) -> Vec<String> {
    stage["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_string())
        .collect()
}

/// Converges `hosts` a few at a time, each until its command goes through.
fn converge(cli: &Cli, hosts: &[String]) {
    for chunk in hosts.chunks(6) {
        let runs: Vec<(String, Child)> = chunk
            .iter()
            .map(|h| (h.clone(), cli.spawn_output(&["converge", "host", h])))
            .collect();
        for (host, child) in runs {
            if !child.wait_with_output().unwrap().status.success() {
                until_done(cli, &["converge", "host", &host], || false);
            }
        }
    }
}

/// The driver: create, start, then per stage converge its hosts, advance
/// normally when every gate passes (forced after a while otherwise), until
/// the rollout succeeds; then finalize. Returns the rollout id.
fn drive(cli: &Cli, lab: &Lab, plan: &Plan, names: &[String]) -> String {
    let canary = plan.canary.to_string();
    let id = until_done(
        cli,
        &[
            "rollout",
            "create",
            "--target",
            "hostname:lab-*",
            "--canary",
            &canary,
            "--change",
            std::str::from_utf8(CHANGE).unwrap().trim_end(),
        ],
        || false,
    )
    .trim()
    .to_string();
    let stage_count = || stages(cli, &id).map_or(0, |s| s.len());
    until_done(cli, &["rollout", "start", &id], || stage_count() >= 1);
    let batch = plan.batch.to_string();
    let mut staged = 0;
    for stage in 1.. {
        let mut hosts = Vec::new();
        wait_until(
            &format!("stage {stage} waiting for assessment"),
            Duration::from_secs(300),
            || {
                let waiting = stages(cli, &id).and_then(|s| s.get(stage - 1).cloned());
                match waiting {
                    Some(s) if s["status"] == "waiting_for_assessment" => {
                        hosts = stage_hosts(&s);
                        true
                    }
                    _ => false,
                }
            },
        );
        staged += hosts.len();
        converge(cli, &hosts);
        if staged == names.len() {
            break;
        }
        let gates_pass = || {
            status(cli, &id).is_some_and(|s| {
                s["evaluation"]["stage"] == stage
                    && s["evaluation"]["gates"]
                        .as_array()
                        .is_some_and(|g| g.iter().all(|g| g["verdict"] == "pass"))
            })
        };
        let deadline = Instant::now() + Duration::from_secs(40);
        while !gates_pass() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
        }
        // Normal when the gates pass; forced when they did not in time, or
        // turned and refused the normal one (exit 4).
        let mut force = !gates_pass();
        wait_until(
            &format!("the advance from stage {stage}"),
            Duration::from_secs(240),
            || {
                let mut args = vec!["rollout", "advance", &id, "--batch-size", &batch];
                if force {
                    args.extend(["--force", "--reason", "chaos: the gates did not pass"]);
                }
                let run = cli.run(&args);
                if run.code == 0 || stage_count() > stage {
                    return true;
                }
                eprintln!(
                    "chaos: advance exit {}: {} (retrying)",
                    run.code,
                    run.stderr.trim()
                );
                force |= run.code == 4;
                false
            },
        );
        eprintln!("chaos: stage {} started", stage + 1);
    }
    let began = Instant::now();
    while !status(cli, &id).is_some_and(|s| s["rollout"]["state"] == "succeeded") {
        if began.elapsed() > Duration::from_secs(300) {
            let hosts = cli.run(&["host", "list", "--json"]).json();
            let unhealthy: Vec<&Value> = hosts
                .as_array()
                .unwrap()
                .iter()
                .filter(|h| h["healthy"] != true)
                .collect();
            panic!(
                "the rollout did not succeed: {:#}\nhosts not healthy: {unhealthy:#?}",
                status(cli, &id).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for name in names {
        let host = lab.host(name).unwrap();
        assert_eq!(
            host.file(host.override_path()).unwrap().as_deref(),
            Some(CHANGE),
            "{name} holds the change"
        );
        assert_eq!(host.override_writes().unwrap(), 1, "{name} written once");
    }
    let state =
        || status(cli, &id).map(|s| s["rollout"]["state"].as_str().unwrap_or("").to_string());
    until_done(
        cli,
        &["rollout", "finalize", &id, "--all", "--confirm"],
        || state().is_some_and(|s| s == "finalizing" || s == "finalized"),
    );
    wait_until("the rollout finalized", Duration::from_secs(300), || {
        state().is_some_and(|s| s == "finalized")
    });
    id
}

/// The cluster serves one test at a time: its nodes listen on the fixed
/// ports of their configuration files.
static CLUSTER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A lab of `hosts` (with the scenario's defaults), the cluster, two
/// workers of every kind, and the hosts onboarded.
struct Mesh {
    lab: Lab,
    _lab_dir: tempfile::TempDir,
    names: Vec<String>,
    /// The data dir: workers' and nodes' logs, node stores; copied aside
    /// when the test fails.
    data: KeptOnPanic,
    cluster: Cluster,
    cli: Cli,
    runtime: tokio::runtime::Runtime,
    workers: Workers,
}

impl Mesh {
    fn start(hosts: usize, scenario: &str) -> Mesh {
        let lab_dir = tempfile::tempdir().unwrap();
        let scenario = Scenario::parse(scenario, false).unwrap();
        let lab = Lab::start(LabConfig::new(hosts, lab_dir.path()).scenario(scenario)).unwrap();
        let names: Vec<String> = lab.hosts().iter().map(|h| h.hostname.clone()).collect();

        // Kept when the run fails: the workers' and nodes' logs are in it.
        let data = tempfile::Builder::new()
            .prefix("chaos-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        std::fs::write(
            data.path().join("fleetroll.toml"),
            format!(
                "[workload]\nroot_url = {}\nprovisioner = {}\ninterval = \"2s\"\nactive_window = \"5m\"\n",
                serde_json::to_string(lab.taskcluster_url()).unwrap(),
                serde_json::to_string(&lab.info().taskcluster_provisioner).unwrap(),
            ),
        )
        .unwrap();
        let mut cli = Cli::new(data.path());
        cli.nats_url = Some(Cluster::url());
        cli.env = lab_env(&lab);
        cli.env.push(("FLEETROLL_REPLICAS".into(), "3".into()));
        // The operator's keys and token first: nothing answers yet, which
        // `auth init` allows; the keys are published once someone can.
        cli.init_auth();
        let cluster = Cluster::start(&cli);
        cli.env.push((
            "FLEETROLL_NATS_CA_FILE".into(),
            data.path()
                .join("tls")
                .join(fleetroll_pki::CA_CERT)
                .display()
                .to_string(),
        ));
        let runtime = tokio::runtime::Runtime::new().unwrap();
        wait_until("the nodes to listen", Duration::from_secs(30), || {
            CLIENT_PORTS
                .iter()
                .all(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok())
        });
        // Streams can be made once the cluster has elected its JetStream
        // leader: `fleetroll setup`, as the cluster's admin NATS user.
        let admin = password_user_file(data.path(), "admin");
        let began = Instant::now();
        loop {
            let set_up = cli.run(&["--nats-credentials", admin.to_str().unwrap(), "setup"]);
            if set_up.code == 0 {
                break;
            }
            assert!(
                began.elapsed() < Duration::from_secs(60),
                "the cluster: {set_up:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }

        let workers = Workers::start(&cli);
        until_done(&cli, &["auth", "publish"], || false);
        // No role has a password on the cluster: a login with one is
        // refused, as the authorizers refuse whatever carries no token.
        let password = runtime.block_on(Bus::connect(
            ConnectOptions::new(Cluster::url(), "test-password")
                .credentials(Credentials {
                    user: "worker".into(),
                    password: random_hex(),
                })
                .tls(Tls {
                    ca_file: Some(data.path().join("tls").join(fleetroll_pki::CA_CERT)),
                    client: None,
                }),
        ));
        assert!(
            matches!(password, Err(BusError::NotAuthorized { .. })),
            "a password login: {:?}",
            password.map(|b| b.url().to_string())
        );
        wait_until(
            "two replicas of every kind",
            Duration::from_secs(60),
            || KINDS.iter().all(|k| cli.replicas_of(k) == 2),
        );
        // Onboarding, retried: 300 hosts on a loaded machine may outlast
        // one query's patience.
        let mut add = vec!["inventory", "seed", "add"];
        add.extend(names.iter().map(String::as_str));
        until_done(&cli, &add, || false);
        until_done(&cli, &["inventory", "refresh", "--seed", "all"], || false);
        Mesh {
            lab,
            _lab_dir: lab_dir,
            names,
            data: KeptOnPanic(data),
            cluster,
            cli,
            runtime,
            workers,
        }
    }

    /// Stops everything; the data dir goes unless the test failed.
    fn stop(self) {
        drop(self.workers);
        drop(self.cluster);
        self.lab.down().unwrap();
    }
}

/// A NATS node lost while a stage's hosts are being written (the leader of
/// the snapshot stream, while every host's snapshot is being stored): each
/// write is done once, none is recorded as failed for the mesh's own
/// trouble, and the rollout succeeds.
#[test]
fn a_nats_node_lost_during_a_stages_writes() {
    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    // Slow hosts: every host is between reading its override and storing
    // the snapshot when the node goes.
    let mut mesh = Mesh::start(8, "[defaults]\njobs_per_minute = 60\nslow = \"3s\"\n");
    let cli = mesh.cli.clone();
    let id = until_done(
        &cli,
        &[
            "rollout",
            "create",
            "--target",
            "hostname:lab-*",
            "--canary",
            "8",
            "--change",
            std::str::from_utf8(CHANGE).unwrap().trim_end(),
        ],
        || false,
    )
    .trim()
    .to_string();
    let bus = mesh.runtime.block_on(worker_bus(&cli));
    let leader = mesh.runtime.block_on(async {
        let mut stream = bus.js.get_stream(topology::SNAPSHOTS.name).await.unwrap();
        let info = stream.info().await.unwrap();
        info.cluster
            .as_ref()
            .and_then(|c| c.leader.clone())
            .unwrap()
    });
    let node = leader
        .strip_prefix("fleetroll_n")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap()
        - 1;
    let start = cli.run(&["rollout", "start", &id]);
    assert_eq!(start.code, 0, "{start:?}");
    mesh.cluster.kill_node(node);
    eprintln!("chaos: killed {leader}, the snapshot stream's leader");
    std::thread::sleep(Duration::from_secs(15));
    mesh.cluster.start_node(node);

    let mut hosts = Vec::new();
    wait_until("the stage applied", Duration::from_secs(300), || {
        let stage = stages(&cli, &id).and_then(|s| s.first().cloned());
        match stage {
            Some(s) if s["status"] == "waiting_for_assessment" => {
                hosts = stage_hosts(&s);
                true
            }
            _ => false,
        }
    });
    let results = status(&cli, &id).unwrap()["hosts"].clone();
    for result in results.as_array().unwrap() {
        assert_eq!(result["outcome"]["result"], "applied", "{result:#}");
    }
    converge(&cli, &hosts);
    wait_until("the rollout succeeded", Duration::from_secs(300), || {
        status(&cli, &id).is_some_and(|s| s["rollout"]["state"] == "succeeded")
    });
    for name in &mesh.names {
        let host = mesh.lab.host(name).unwrap();
        assert_eq!(host.override_writes().unwrap(), 1, "{name} written once");
    }
    drop(bus);
    mesh.stop();
}

fn run(plan: Plan) {
    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let scenario = "[defaults]\njobs_per_minute = 60\n";
    let mesh = Mesh::start(plan.hosts, scenario);
    let Mesh {
        lab,
        _lab_dir,
        names,
        data: _data,
        mut cluster,
        cli,
        runtime,
        mut workers,
    } = mesh;
    let stop = AtomicBool::new(false);
    let began = Instant::now();
    let (id, kills) = std::thread::scope(|scope| {
        let chaos = scope.spawn(|| chaos(&mut cluster, &mut workers, &cli, plan.node_every, &stop));
        let driven = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            drive(&cli, &lab, &plan, &names)
        }));
        stop.store(true, Ordering::SeqCst);
        let kills = chaos.join().expect("the chaos loop");
        match driven {
            Ok(id) => (id, kills),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    });
    report(&kills, began.elapsed(), &plan);
    assert!(
        kills.iter().any(|k| k.what.starts_with("NATS node")),
        "the run outlasted a NATS node kill"
    );
    let exited: Vec<&str> = kills
        .iter()
        .filter(|k| k.what.starts_with("nothing"))
        .map(|k| k.what.as_str())
        .collect();
    assert!(
        exited.is_empty(),
        "workers exited by themselves: {exited:?}"
    );

    // Every host: written once, removed once, clean.
    for name in &names {
        let host = lab.host(name).unwrap();
        let events: Vec<OverrideEventKind> = host
            .override_events()
            .unwrap()
            .iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            events,
            [OverrideEventKind::Written, OverrideEventKind::Removed],
            "{name}"
        );
        assert_eq!(host.file(host.override_path()).unwrap(), None, "{name}");
    }

    // Stages: numbered in order, disjoint, covering the fleet; one per
    // advance that went through.
    let mut stages_now = None;
    wait_until("the rollout's stages", Duration::from_secs(60), || {
        stages_now = stages(&cli, &id);
        stages_now.is_some()
    });
    let stages = stages_now.unwrap();
    let mut seen = BTreeSet::new();
    for (i, stage) in stages.iter().enumerate() {
        assert_eq!(stage["number"], i + 1, "{stage}");
        for host in stage_hosts(stage) {
            assert!(seen.insert(host.clone()), "{host} in two stages");
        }
    }
    assert_eq!(seen, names.iter().cloned().collect::<BTreeSet<_>>());

    // The auditor writes behind the events: one killed just before the end
    // catches up after its restart, so read until the trail is complete or
    // a minute has gone by, then judge what is there.
    let bus = runtime.block_on(worker_bus(&cli));
    let read = || {
        runtime.block_on(async {
            let envelopes = bus
                .stored(&topology::COMMANDS, subjects::COMMANDS.to_string())
                .await
                .unwrap();
            let records = bus
                .stored(&topology::AUDIT, subjects::AUDIT.to_string())
                .await
                .unwrap();
            let envelopes: Vec<CommandEnvelope> = envelopes
                .iter()
                .map(|m| codec::from_cbor(m).unwrap())
                .collect();
            let records: Vec<AuditRecord> = records
                .iter()
                .map(|m| codec::from_cbor(m).unwrap())
                .collect();
            (envelopes, records)
        })
    };
    let recorded = |records: &[AuditRecord], envelope: &CommandEnvelope| {
        let action = envelope.command.name();
        records
            .iter()
            .filter(|r| r.command_id.as_deref() == Some(envelope.id.as_str()) && r.action == action)
            .count()
    };
    let done = |records: &[AuditRecord], action: &str| {
        records
            .iter()
            .filter(|r| {
                r.action == action
                    && r.outcome == "done"
                    && r.rollout.as_deref() == Some(id.as_str())
            })
            .count()
    };
    let complete = |envelopes: &[CommandEnvelope], records: &[AuditRecord]| {
        envelopes.iter().all(|e| recorded(records, e) >= 1)
            && done(records, "override_apply") >= names.len()
            && done(records, "override_remove") >= names.len()
    };
    let caught_up = Instant::now();
    let (envelopes, records) = loop {
        let (envelopes, records) = read();
        if complete(&envelopes, &records) || caught_up.elapsed() > Duration::from_secs(60) {
            break (envelopes, records);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    // No command lost, none recorded twice.
    for envelope in &envelopes {
        assert_eq!(
            recorded(&records, envelope),
            1,
            "command {} ({}) recorded once",
            envelope.id,
            envelope.command.name()
        );
    }
    assert_eq!(done(&records, "rollout_start"), 1);
    assert_eq!(
        done(&records, "rollout_advance"),
        stages.len() - 1,
        "one stage per advance"
    );
    assert_eq!(
        done(&records, "override_apply"),
        names.len(),
        "one write audited per host"
    );
    assert_eq!(
        done(&records, "override_remove"),
        names.len(),
        "one removal audited per host"
    );

    let verify = cli.run(&["audit", "verify"]);
    assert_eq!(verify.code, 0, "{verify:?}");
    eprintln!(
        "chaos: {} commands, {} audit records, {} stages; audit verify: {}",
        envelopes.len(),
        records.len(),
        stages.len(),
        verify.stdout.trim()
    );
    drop(bus);
    drop(workers);
    drop(cluster);
    lab.down().unwrap();
}

/// A temporary dir, copied aside (before it goes) when the test fails.
struct KeptOnPanic(tempfile::TempDir);

impl Drop for KeptOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let aside = self.0.path().with_extension("failed");
            let copied = Command::new("cp")
                .arg("-a")
                .arg(self.0.path())
                .arg(&aside)
                .status();
            eprintln!(
                "chaos: the failed run's logs: {} ({copied:?})",
                aside.display()
            );
        }
    }
}

fn report(kills: &[Kill], took: Duration, plan: &Plan) {
    eprintln!(
        "chaos: {} hosts, {} kills in {:.0} s",
        plan.hosts,
        kills.len(),
        took.as_secs_f64()
    );
    eprintln!("chaos: | t | killed | commands served again after |");
    eprintln!("chaos: |---|---|---|");
    for kill in kills {
        eprintln!(
            "chaos: | {:.1} s | {} | {:.2} s |",
            kill.at.as_secs_f64(),
            kill.what,
            kill.served_after.as_secs_f64()
        );
    }
}
