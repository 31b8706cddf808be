//! Test harness: real `fleetroll` processes against a real nats-server.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use fleetroll_bus::connect::{Bus, ConnectOptions, Credentials};
use fleetroll_bus::embedded::{EmbeddedOptions, EmbeddedServer, NatsUser};
use fleetroll_bus::token::Role;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_fleetroll")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Output of one CLI run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(output: Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A `fleetroll` command line bound to a data dir (and maybe a NATS URL).
#[derive(Clone)]
pub struct Cli {
    pub data_dir: PathBuf,
    pub nats_url: Option<String>,
    pub env: Vec<(String, String)>,
}

/// Debian's libfaketime (package `faketime`), preloaded so the process
/// itself, not a wrapper, runs with a shifted clock.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// A spawned process that is killed when the test lets go of it, panics
/// included.
pub struct Proc(pub Child);

impl std::ops::Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Cli {
    pub fn new(data_dir: &Path) -> Cli {
        Cli {
            data_dir: data_dir.to_path_buf(),
            nats_url: None,
            env: Vec::new(),
        }
    }

    /// Runs every command with its clock shifted by `offset` ("+90s").
    pub fn with_clock_offset(mut self, offset: &str) -> Cli {
        assert!(
            Path::new(LIBFAKETIME).exists(),
            "libfaketime missing: run `make setup`"
        );
        self.env.push(("LD_PRELOAD".into(), LIBFAKETIME.into()));
        self.env.push(("FAKETIME".into(), offset.into()));
        self.env
            .push(("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()));
        self
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(bin());
        command.arg("--data-dir").arg(&self.data_dir);
        if let Some(url) = &self.nats_url {
            command.arg("--nats-url").arg(url);
        }
        command
            .args(args)
            .env_remove("FLEETROLL_TOKEN")
            .env_remove("FLEETROLL_NATS_URL")
            .env_remove("FLEETROLL_NATS_CREDENTIALS")
            .env_remove("FLEETROLL_NATS_CA_FILE")
            .env_remove("FLEETROLL_NATS_CERT_FILE")
            .env_remove("FLEETROLL_NATS_KEY_FILE");
        // A Taskcluster client of the shell running the tests is not the lab's.
        for name in [
            "TASKCLUSTER_ROOT_URL",
            "TASKCLUSTER_CLIENT_ID",
            "TASKCLUSTER_ACCESS_TOKEN",
            "TASKCLUSTER_CERTIFICATE",
        ] {
            command.env_remove(name);
        }
        for (k, v) in &self.env {
            command.env(k, v);
        }
        command
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(
            self.command(args)
                .stdin(Stdio::null())
                .output()
                .expect("running fleetroll"),
        )
    }

    /// Starts a long-running command (`up`, `worker`); its output goes to
    /// files in the data dir so a chatty process never blocks on a pipe.
    pub fn spawn(&self, args: &[&str]) -> Proc {
        let log = self.log_of(args);
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let err = out.try_clone().unwrap();
        Proc(
            self.command(args)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .expect("spawning fleetroll"),
        )
    }

    /// Where [`Cli::spawn`] keeps the output of the command `args`.
    pub fn log_of(&self, args: &[&str]) -> PathBuf {
        self.data_dir.join(format!(
            "{}-{}.log",
            args.join("_").replace('/', "_"),
            std::process::id()
        ))
    }

    /// Starts a command whose output the test reads when it ends.
    pub fn spawn_output(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning fleetroll")
    }

    /// A token for `actor` in `role`, written with its holder key to
    /// `<data-dir>/<actor>.token` (and `.token.key`); its path.
    pub fn issue_token(&self, actor: &str, role: &str) -> PathBuf {
        let path = self.data_dir.join(format!("{actor}.token"));
        let out = path.to_str().unwrap();
        let issued = self.run(&[
            "auth", "issue", "--actor", actor, "--role", role, "--out", out,
        ]);
        assert_eq!(issued.code, 0, "{issued:?}");
        path
    }

    /// The audit keys this data dir's `audit verify` trusts.
    pub fn trusted_audit_keys(&self) -> Vec<fleetroll_bus::token::VerifyingKey> {
        fleetroll_bus::audit_log::trusted_keys(&self.data_dir.join("auth").join("audit-keys.pub"))
            .expect("the data dir's trusted audit keys")
    }

    /// A signing key published to the mesh, and a relops token for
    /// `tester` in the data dir, as an operator sets up.
    pub fn init_auth(&self) {
        let init = self.run(&["auth", "init"]);
        assert_eq!(init.code, 0, "{init:?}");
        let token = self.data_dir.join("token");
        let issue = self.run(&[
            "auth",
            "issue",
            "--actor",
            "tester",
            "--role",
            "relops",
            "--out",
            token.to_str().unwrap(),
        ]);
        assert_eq!(issue.code, 0, "{issue:?}");
    }

    /// Number of live replicas per worker kind, from `status --json`.
    pub fn live_replicas(&self) -> Option<Vec<(String, usize)>> {
        let run = self.run(&["status", "--json"]);
        if run.code != 0 {
            return None;
        }
        let json = run.json();
        Some(
            json["workers"]
                .as_array()?
                .iter()
                .map(|w| {
                    (
                        w["kind"].as_str().unwrap_or("").to_string(),
                        w["live"].as_array().map_or(0, |l| l.len()),
                    )
                })
                .collect(),
        )
    }

    pub fn replicas_of(&self, kind: &str) -> usize {
        self.live_replicas()
            .and_then(|l| l.into_iter().find(|(k, _)| k == kind).map(|(_, n)| n))
            .unwrap_or(0)
    }
}

pub fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

pub fn kill(child: &mut Child, signal: i32) {
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
}

/// `fleetroll up` as a child process on its own data dir and port.
pub struct Up {
    pub child: Proc,
    dir: Option<tempfile::TempDir>,
    pub port: u16,
    pub cli: Cli,
}

impl Up {
    pub fn start() -> Up {
        let dir = tempfile::tempdir().unwrap();
        Up::start_in(dir, 0)
    }

    /// A mesh with this `fleetroll.toml` and environment (SSH settings for
    /// a lab, say).
    pub fn start_with(settings: &str, env: Vec<(String, String)>) -> Up {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("fleetroll.toml"), settings).unwrap();
        let mut cli = Cli::new(dir.path());
        cli.env = env;
        Up::start_cli(dir, 0, cli)
    }

    /// `up` on its data dir, on `port`; 0 lets the server pick one (a port
    /// picked here could be taken by another test before the server binds
    /// it).
    pub fn start_in(dir: tempfile::TempDir, port: u16) -> Up {
        let cli = Cli::new(dir.path());
        Up::start_cli(dir, port, cli)
    }

    fn start_cli(dir: tempfile::TempDir, port: u16, cli: Cli) -> Up {
        let url_file = dir.path().join("nats.url");
        let _ = std::fs::remove_file(&url_file);
        let mut child = cli.spawn(&[
            "up",
            "--nats-port",
            &port.to_string(),
            "--web-listen",
            "127.0.0.1:0",
        ]);
        // The server's port, once `up` says where it runs.
        let mut url = String::new();
        wait_until("up to name its NATS URL", Duration::from_secs(60), || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "fleetroll up exited with {status}; its log is in {}",
                    cli.data_dir.display()
                );
            }
            url = std::fs::read_to_string(&url_file).unwrap_or_default();
            !url.is_empty()
        });
        remember(&url, dir.path());
        let port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no port in {url}"));
        let mut up = Up {
            child,
            dir: Some(dir),
            port,
            cli,
        };
        up.wait_all_live();
        up
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn wait_all_live(&mut self) {
        let cli = self.cli.clone();
        let child = &mut self.child;
        wait_until(
            "all four worker kinds live",
            Duration::from_secs(60),
            || {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "fleetroll up exited with {status}; its log is in {}",
                        cli.data_dir.display()
                    );
                }
                cli.live_replicas()
                    .is_some_and(|l| l.len() == 4 && l.iter().all(|(_, n)| *n >= 1))
            },
        );
    }

    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("data dir").path()
    }

    /// Where this mesh's web UI and API are, e.g. `http://127.0.0.1:43121/`.
    pub fn web_url(&self) -> String {
        std::fs::read_to_string(self.dir().join("web.url"))
            .expect("up writes web.url before its workers are live")
    }

    /// SIGTERM, and wait for the exit; hands back the data dir.
    pub fn stop(mut self) -> (std::process::ExitStatus, tempfile::TempDir) {
        kill(&mut self.child, libc::SIGTERM);
        let status = self.child.wait().unwrap();
        (status, self.dir.take().expect("data dir"))
    }

    /// A connection as the `relops` NATS user, as the CLI makes (it may
    /// publish commands and read; [`worker_bus`] may write buckets).
    pub async fn bus(&self) -> Bus {
        self.bus_as(Role::Relops).await
    }

    /// A connection as `role`'s NATS user.
    pub async fn bus_as(&self, role: Role) -> Bus {
        connect_as(&self.url(), self.dir(), role).await
    }

    /// The credentials file `up` made for `role`'s NATS user.
    pub fn credentials_file(&self, role: Role) -> PathBuf {
        fleetroll_bus::embedded::credentials_file(self.dir(), role)
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.dir().join("token"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// The operator's token and the key `up` bound it to, as the CLI
    /// presents them.
    pub fn credential(&self) -> fleetroll_bus::token::Credential {
        credential_in(self.dir())
    }
}

/// A bare nats-server (no workers), with a signing key published and a
/// relops token in the data dir, for tests that run worker processes
/// themselves.
pub struct Bare {
    pub server: Option<EmbeddedServer>,
    pub dir: tempfile::TempDir,
    pub cli: Cli,
}

impl Bare {
    pub async fn start() -> Bare {
        let dir = tempfile::tempdir().unwrap();
        let server = unset_server(dir.path()).await;
        let admin = connect_as(server.url(), dir.path(), NatsUser::Admin).await;
        fleetroll_bus::setup::ensure(&admin, Default::default(), Default::default())
            .await
            .unwrap();
        let mut cli = Cli::new(dir.path());
        cli.nats_url = Some(server.url().to_string());
        let c = cli.clone();
        tokio::task::spawn_blocking(move || c.init_auth())
            .await
            .unwrap();
        Bare {
            server: Some(server),
            dir,
            cli,
        }
    }

    pub fn url(&self) -> String {
        self.cli.nats_url.clone().unwrap()
    }

    /// The relops token `init_auth` issued and the key it is bound to.
    pub fn credential(&self) -> fleetroll_bus::token::Credential {
        credential_in(self.dir.path())
    }

    /// A connection as the `relops` NATS user, as the CLI makes.
    pub async fn bus(&self) -> Bus {
        connect_as(&self.url(), self.dir.path(), Role::Relops).await
    }
}

/// An embedded nats-server with the mesh's users and nothing set up; the
/// users' credentials go where the CLI looks for them,
/// `<data-dir>/credentials/`.
pub async fn unset_server(data_dir: &Path) -> EmbeddedServer {
    let server = EmbeddedServer::start(&EmbeddedOptions {
        data_dir: data_dir.to_path_buf(),
        port: 0,
        nats_server: None,
    })
    .await
    .unwrap();
    remember(server.url(), data_dir);
    server
}

/// The data dirs of the servers this test process started, by URL.
static DATA_DIRS: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());

fn remember(url: &str, data_dir: &Path) {
    let mut dirs = DATA_DIRS.lock().unwrap_or_else(|e| e.into_inner());
    dirs.retain(|(u, _)| u != url);
    dirs.push((url.to_string(), data_dir.to_path_buf()));
}

/// A connection as the `worker` NATS user to a server this test started
/// (an [`Up`] or a [`Bare`]): what a worker may do, no more.
pub async fn worker_bus(url: &str) -> Bus {
    bus_as(url, Role::Worker).await
}

/// A connection as `role`'s NATS user to a server this test started.
pub async fn bus_as(url: &str, role: Role) -> Bus {
    let dir = DATA_DIRS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .rev()
        .find(|(u, _)| u == url)
        .map(|(_, dir)| dir.clone())
        .unwrap_or_else(|| panic!("no server this test started runs at {url}"));
    connect_as(url, &dir, role).await
}

/// Connects to `url` as a NATS user, with the credentials in the data dir.
pub async fn connect_as(url: &str, data_dir: &Path, user: impl Into<NatsUser>) -> Bus {
    let user = user.into();
    let file = fleetroll_bus::embedded::credentials_file(data_dir, user);
    let credentials = Credentials::load(&file).unwrap();
    // A cluster a test made TLS keeps its CA in the data dir.
    let ca_file = data_dir.join("tls").join("ca.pem");
    let tls = fleetroll_bus::connect::Tls {
        ca_file: ca_file.exists().then_some(ca_file),
        client: None,
    };
    Bus::connect(
        ConnectOptions::new(url, format!("test-{user}"))
            .credentials(credentials)
            .tls(tls),
    )
    .await
    .unwrap()
}

/// Copies `nats-config/<name>` and the files it includes into `dir`, where
/// a server configuration written there includes it from.
pub fn copy_nats_config(dir: &Path, name: &str) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../nats-config");
    for file in [name, "admin.conf"] {
        std::fs::copy(from.join(file), dir.join(file)).unwrap();
    }
}

/// Adds `hosts` as seeds and probes them all, as an operator onboards.
pub fn onboard(cli: &Cli, hosts: &[String]) {
    let mut add = vec!["inventory", "seed", "add"];
    add.extend(hosts.iter().map(String::as_str));
    let added = cli.run(&add);
    assert_eq!(added.code, 0, "{added:?}");
    let refresh = cli.run(&["inventory", "refresh", "--seed", "all"]);
    assert_eq!(refresh.code, 0, "{refresh:?}");
}

/// The SSH environment that points fleetroll at a lab (and away from the
/// ssh config of whoever runs the tests).
pub fn lab_env(lab: &fleetroll_lab::Lab) -> Vec<(String, String)> {
    vec![
        ("FLEETROLL_SSH_CONFIG".into(), "none".into()),
        ("FLEETROLL_SSH_USER".into(), lab.ssh_user().to_string()),
        ("FLEETROLL_SSH_PORT".into(), lab.ssh_port().to_string()),
        (
            "FLEETROLL_SSH_KEY".into(),
            lab.identity_file().display().to_string(),
        ),
    ]
}

/// A running command whose output lines the test reads as they come.
pub struct Following {
    pub child: Proc,
    stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Following {
    /// Every stdout line so far.
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Waits until a stderr line contains `text` (a command saying it is
    /// ready: `watching ...`).
    pub fn wait_stderr(&self, text: &str, limit: Duration) {
        wait_until(&format!("`{text}` on stderr"), limit, || {
            self.stderr.lock().unwrap().iter().any(|l| l.contains(text))
        });
    }

    /// Waits until stdout lines satisfy `check`.
    pub fn wait_stdout(&self, what: &str, limit: Duration, check: impl Fn(&[String]) -> bool) {
        wait_until(what, limit, || check(&self.stdout.lock().unwrap()));
    }
}

impl Cli {
    /// Starts a command and follows its output, line by line.
    pub fn follow(&self, args: &[&str]) -> Following {
        let mut child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning fleetroll");
        let lines = |pipe: Box<dyn std::io::Read + Send>| {
            let kept = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let k = kept.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                    k.lock().unwrap().push(line);
                }
            });
            kept
        };
        let stdout = lines(Box::new(child.stdout.take().unwrap()));
        let stderr = lines(Box::new(child.stderr.take().unwrap()));
        Following {
            child: Proc(child),
            stdout,
            stderr,
        }
    }
}

/// Creates a rollout of `PUPPET_BRANCH=feature_xyz` over the hosts `target`
/// selects, `canary` of them first; its id.
pub fn create_rollout(cli: &Cli, target: &str, canary: &str) -> String {
    let create = cli.run(&[
        "rollout",
        "create",
        "--target",
        target,
        "--canary",
        canary,
        "--change",
        "PUPPET_BRANCH=feature_xyz",
    ]);
    assert_eq!(create.code, 0, "{create:?}");
    create.stdout.trim().to_string()
}

/// The token in `<data_dir>/token` and the key beside it.
pub fn credential_in(data_dir: &Path) -> fleetroll_bus::token::Credential {
    credential_of(&data_dir.join("token"))
}

/// The token in `file` and the key beside it.
pub fn credential_of(file: &Path) -> fleetroll_bus::token::Credential {
    let credential = fleetroll_bus::token::TokenSource::File(file.to_path_buf())
        .credential()
        .unwrap();
    assert!(credential.holder.is_some(), "{} is bound", file.display());
    credential
}

/// Asserts that the server refused `bus`'s user the publish (or request,
/// or subscription) `work` makes on `subject`, rather than anything else
/// going wrong. Only what `work` does counts: it must not have started.
pub async fn refused<T: std::fmt::Debug>(
    bus: &Bus,
    subject: &str,
    work: impl std::future::Future<Output = T>,
) {
    let what = format!("{subject} as {:?}", bus.user());
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        bus.unless_refused("the test", subject, work),
    )
    .await
    .unwrap_or_else(|_| panic!("{what}: neither refused nor done"));
    match outcome {
        Err(fleetroll_bus::connect::BusError::NotPermitted { violation, .. }) => {
            assert!(violation.contains("Permissions Violation"), "{violation}")
        }
        other => panic!("{what}: not refused by the server: {other:?}"),
    }
}
