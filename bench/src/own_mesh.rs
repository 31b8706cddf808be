//! A mesh of the benchmark's own, laid out as one runs at scale: a bare
//! nats-server (the embedded one, no workers in it) and every worker
//! replica a `fleetroll worker KIND` process of its own, to be killed alone,
//! on a "machine" of its own: a data dir of its own for what a replica keeps
//! locally (the auditor's index), sharing the mesh's credentials, keys and
//! settings.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use fleetroll_bus::WorkerKind;
use fleetroll_bus::connect::{Bus, ConnectOptions};
use fleetroll_bus::embedded::{EmbeddedOptions, EmbeddedServer, NatsUser};
use fleetroll_bus::setup::{self, Replicas};
use fleetroll_bus::status;
use fleetroll_bus::token::Role;

/// Who the benchmark's commands come from (its audit records name it).
const ACTOR: &str = "fleetroll-bench";

pub struct OwnMesh {
    server: EmbeddedServer,
    data_dir: PathBuf,
    fleetroll: PathBuf,
    /// As the CLI connects: sends commands, asks queries.
    pub relops: Bus,
    /// As a worker connects: writes what workers write.
    pub worker: Bus,
    /// A relops token and the key it is bound to.
    pub credential: fleetroll_bus::token::Credential,
    spawned: usize,
    /// Machines whose replica is gone, by kind.
    idle_machines: Vec<(WorkerKind, PathBuf)>,
}

/// One worker process; killed when dropped.
pub struct Replica {
    child: Child,
    kind: WorkerKind,
    machine: PathBuf,
}

impl Replica {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl OwnMesh {
    /// Starts the server in `data_dir` (which may hold a `fleetroll.toml`
    /// for the workers), creates the streams and buckets, a signing key and
    /// a relops token, as an operator sets up a mesh by hand.
    pub async fn start(data_dir: &Path, fleetroll: &Path) -> anyhow::Result<OwnMesh> {
        let server = EmbeddedServer::start(&EmbeddedOptions {
            data_dir: data_dir.to_path_buf(),
            port: 0,
            nats_server: None,
        })
        .await?;
        let as_role = |role: Role| {
            ConnectOptions::new(server.url(), format!("{ACTOR}-{role}"))
                .credentials(server.credentials(role).clone())
        };
        setup::ensure(
            &server.connect(NatsUser::Admin).await?,
            Replicas::default(),
            Default::default(),
        )
        .await?;
        let worker = Bus::connect(as_role(Role::Worker)).await?;
        let relops = Bus::connect(as_role(Role::Relops)).await?;
        let mut mesh = OwnMesh {
            data_dir: data_dir.to_path_buf(),
            fleetroll: fleetroll.to_path_buf(),
            relops,
            worker,
            credential: fleetroll_bus::token::Credential::bearer(String::new()),
            spawned: 0,
            idle_machines: Vec::new(),
            server,
        };
        let token_file = data_dir.join("token");
        mesh.cli(&["auth", "init"])?;
        mesh.cli(&[
            "auth",
            "issue",
            "--actor",
            ACTOR,
            "--role",
            "relops",
            "--ttl",
            "8h",
            "--out",
            &token_file.to_string_lossy(),
        ])?;
        mesh.credential = crate::credential(&token_file)?;
        Ok(mesh)
    }

    /// `fleetroll` on `data_dir` against this mesh only, whatever the
    /// environment says.
    fn command(&self, data_dir: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(&self.fleetroll);
        command
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--nats-url")
            .arg(self.server.url())
            .args(args)
            .stdin(Stdio::null());
        for var in [
            "FLEETROLL_CONFIG",
            "FLEETROLL_TOKEN",
            "FLEETROLL_TOKEN_FILE",
            "FLEETROLL_NATS_CREDENTIALS",
        ] {
            command.env_remove(var);
        }
        command
    }

    fn cli(&self, args: &[&str]) -> anyhow::Result<()> {
        let output = self
            .command(&self.data_dir, args)
            .output()
            .with_context(|| format!("running {}", self.fleetroll.display()))?;
        if !output.status.success() {
            bail!(
                "fleetroll {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    /// Starts a replica of `kind`, on the machine of one that is gone if
    /// there is one (as a replica is restarted), else on a new one; its log
    /// goes to `<data-dir>/logs/`.
    pub fn spawn(&mut self, kind: WorkerKind) -> anyhow::Result<Replica> {
        self.spawned += 1;
        let machine = match self.idle_machines.iter().position(|(k, _)| *k == kind) {
            Some(i) => self.idle_machines.remove(i).1,
            None => {
                let machine = self
                    .data_dir
                    .join("machines")
                    .join(format!("{kind}-{}", self.spawned));
                std::fs::create_dir_all(&machine)?;
                for shared in ["credentials", "auth", "fleetroll.toml"] {
                    let target = self.data_dir.join(shared);
                    if target.exists() {
                        std::os::unix::fs::symlink(&target, machine.join(shared))?;
                    }
                }
                machine
            }
        };
        let logs = self.data_dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        let log = std::fs::File::create(logs.join(format!("{kind}-{}.log", self.spawned)))?;
        let child = self
            .command(&machine, &["worker", kind.as_str()])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.fleetroll.display()))?;
        Ok(Replica {
            child,
            kind,
            machine,
        })
    }

    /// SIGKILL: no clean-up, no last heartbeat removed, nothing acked.
    /// Returns when it was sent.
    pub fn kill(&mut self, mut replica: Replica) -> Instant {
        let at = Instant::now();
        let _ = replica.child.kill();
        let _ = replica.child.wait();
        self.idle_machines
            .push((replica.kind, replica.machine.clone()));
        at
    }

    /// SIGTERM: a clean stop, nothing left unacknowledged.
    pub fn stop_replica(&mut self, mut replica: Replica) {
        // SAFETY: a plain signal to a child this process started and has
        // not reaped yet, so the pid is still its.
        unsafe {
            libc::kill(replica.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = replica.child.wait();
        self.idle_machines
            .push((replica.kind, replica.machine.clone()));
    }

    /// Waits until every one of `replicas` has a heartbeat on the mesh.
    pub async fn wait_live(
        &self,
        kind: WorkerKind,
        replicas: &[Replica],
        limit: Duration,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let mesh = status::gather(&self.relops).await?;
            let live: Vec<u32> = mesh
                .workers
                .iter()
                .filter(|w| w.kind == kind)
                .flat_map(|w| w.live.iter().map(|r| r.pid))
                .collect();
            if replicas.iter().all(|r| live.contains(&r.pid())) {
                return Ok(());
            }
            if start.elapsed() > limit {
                bail!(
                    "{kind} replicas not live after {limit:?}; see {}",
                    self.data_dir.join("logs").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn stop(self) {
        self.server.stop().await;
    }
}
