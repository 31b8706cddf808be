//! The embedded `nats-server` of `fleetroll up`: a real server with
//! JetStream, run as a child process on loopback with its data under the
//! data dir, configured by `nats-config/single.conf`, which includes
//! `nats-config/permissions.conf`: one NATS user per role (SPEC 9), whose
//! passwords [`ServerUsers`] keeps under `<data-dir>/credentials/`.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::connect::{ConnectOptions, Credentials, CredentialsError};
use crate::token::Role;

/// Where, under a data dir, the NATS users' credentials are kept.
pub const CREDENTIALS_DIR: &str = "credentials";

/// A user of `permissions.conf`: one per token role, and the set-up's
/// `admin`, the only one that may create or reconfigure streams (nothing
/// runs as admin: `fleetroll setup` does its work and disconnects).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatsUser {
    Role(Role),
    Admin,
}

impl NatsUser {
    pub const ALL: [NatsUser; 5] = [
        NatsUser::Role(Role::Relops),
        NatsUser::Role(Role::Readonly),
        NatsUser::Role(Role::Chatops),
        NatsUser::Role(Role::Worker),
        NatsUser::Admin,
    ];

    /// The user's name in `permissions.conf`.
    pub fn name(self) -> &'static str {
        match self {
            NatsUser::Role(role) => role.as_str(),
            NatsUser::Admin => "admin",
        }
    }
}

impl From<Role> for NatsUser {
    fn from(role: Role) -> Self {
        NatsUser::Role(role)
    }
}

impl std::fmt::Display for NatsUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The credentials file of a NATS user under a data dir:
/// `<data-dir>/credentials/<user>.toml`.
pub fn credentials_file(data_dir: &Path, user: impl Into<NatsUser>) -> PathBuf {
    data_dir
        .join(CREDENTIALS_DIR)
        .join(format!("{}.toml", user.into().name()))
}

/// The environment variable `permissions.conf` takes a user's password
/// from, e.g. `FLEETROLL_RELOPS_PASSWORD`.
pub fn password_variable(user: impl Into<NatsUser>) -> String {
    format!(
        "FLEETROLL_{}_PASSWORD",
        user.into().name().to_ascii_uppercase()
    )
}

/// The NATS users of `permissions.conf` ([`NatsUser::ALL`]) and their
/// passwords, kept one file per user in a directory (mode 0700; files
/// 0600, see [`Credentials`]).
#[derive(Debug, Clone)]
pub struct ServerUsers {
    users: Vec<(NatsUser, Credentials)>,
}

impl ServerUsers {
    /// Reads the users' credentials from `dir`, creating what is missing: a
    /// new user gets a random password (32 random bytes, base64url).
    pub fn load_or_create(dir: &Path) -> Result<ServerUsers, EmbeddedError> {
        let io = |source| EmbeddedError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        let mut users = Vec::new();
        for user in NatsUser::ALL {
            let path = dir.join(format!("{}.toml", user.name()));
            let credentials = if path.exists() {
                let credentials = Credentials::load(&path)?;
                if credentials.user != user.name() {
                    return Err(CredentialsError::Invalid {
                        path,
                        detail: format!(
                            "`user` is `{}`, but permissions.conf names this user `{user}`",
                            credentials.user
                        ),
                    }
                    .into());
                }
                credentials
            } else {
                let credentials = Credentials {
                    user: user.name().to_string(),
                    password: random_password(),
                };
                write_private(&path, &credentials.to_toml()).map_err(|source| {
                    CredentialsError::Write {
                        path: path.clone(),
                        source,
                    }
                })?;
                credentials
            };
            users.push((user, credentials));
        }
        Ok(ServerUsers { users })
    }

    /// The credentials of a user.
    pub fn get(&self, user: impl Into<NatsUser>) -> &Credentials {
        let user = user.into();
        &self
            .users
            .iter()
            .find(|(u, _)| *u == user)
            .expect("every user has credentials")
            .1
    }

    /// The server's environment: each `FLEETROLL_<USER>_PASSWORD`. The
    /// server parses a variable's value as a config value (a leading `-`
    /// or digits only would not be a string), so each is quoted.
    pub fn server_env(&self) -> Vec<(String, String)> {
        self.users
            .iter()
            .map(|(user, c)| (password_variable(*user), format!("\"{}\"", c.password)))
            .collect()
    }
}

fn random_password() -> String {
    use base64::Engine as _;
    use rand_core::RngCore as _;
    let mut bytes = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Writes a secret readable by its owner only (mode 0600), whole or not
/// at all: a new file of a random name in the same directory, created
/// exclusively (so no symlink or file planted there is followed or
/// reused), then renamed over the old one.
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut file = tempfile::Builder::new()
        .prefix(".fleetroll-")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)?;
    file.write_all(contents.as_bytes())?;
    file.as_file().sync_all()?;
    file.persist(path).map(drop).map_err(|e| e.error)
}

/// Where the project's set-up installs nats-server, relative to the
/// repository root.
const LOCAL_TOOLS_BIN: &str = ".tools/nats/bin/nats-server";

/// Why the embedded server could not run.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "nats-server not found: name it with --nats-server or FLEETROLL_NATS_SERVER, run `make setup` to install it into .tools/, or put it on PATH"
    )]
    NotFound,
    #[error("nats-server at {0} does not exist or is not executable")]
    NotExecutable(PathBuf),
    #[error(
        "{addr} is already in use: another `fleetroll up` or NATS server is running there (pick another with --nats-port)"
    )]
    PortInUse { addr: SocketAddr },
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("nats-server exited during start-up ({status}); last lines of {log}:\n{tail}")]
    Crashed {
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("nats-server did not become ready within {0:?}; see {1}")]
    NotReady(Duration, PathBuf),
    #[error("nats-server refused the credentials it was started with (user `{user}`); see {log}")]
    Refused { user: String, log: PathBuf },
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error(transparent)]
    Bus(#[from] crate::connect::BusError),
}

/// Finds the nats-server binary: the explicit path, then the project's
/// local tools folder (looked for above the current directory and above the
/// running executable), then `PATH`.
pub fn find_nats_server(explicit: Option<&Path>) -> Result<PathBuf, EmbeddedError> {
    if let Some(path) = explicit {
        return if is_executable(path) {
            Ok(path.to_path_buf())
        } else {
            Err(EmbeddedError::NotExecutable(path.to_path_buf()))
        };
    }
    let starts = [std::env::current_dir().ok(), std::env::current_exe().ok()];
    for start in starts.into_iter().flatten() {
        for dir in start.ancestors() {
            let candidate = dir.join(LOCAL_TOOLS_BIN);
            if is_executable(&candidate) {
                return Ok(candidate);
            }
        }
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("nats-server"))
        .find(|p| is_executable(p))
        .ok_or(EmbeddedError::NotFound)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Options of the embedded server.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Everything the server keeps goes under `<data_dir>/nats`; its users'
    /// credentials under `<data_dir>/credentials` ([`credentials_file`]).
    pub data_dir: PathBuf,
    /// 0 picks a free port.
    pub port: u16,
    pub nats_server: Option<PathBuf>,
}

/// A running embedded nats-server. Dropping it kills the server; call
/// [`EmbeddedServer::stop`] for a clean shutdown.
#[derive(Debug)]
pub struct EmbeddedServer {
    child: Child,
    url: String,
    log: PathBuf,
    users: ServerUsers,
}

impl EmbeddedServer {
    /// A server of its own in `data_dir` on a free loopback port, with the
    /// mesh's streams and buckets set up (one replica), and a connection to
    /// it as the workers' NATS user: what one component needs to run
    /// against, in a test or a bot author's sandbox.
    ///
    /// ```no_run
    /// # async fn sandbox() -> Result<(), fleetroll_bus::embedded::EmbeddedError> {
    /// use fleetroll_bus::embedded::EmbeddedServer;
    /// use fleetroll_bus::topology;
    ///
    /// let dir = std::env::temp_dir().join("fleetroll-sandbox");
    /// let (server, bus) = EmbeddedServer::with_mesh(&dir).await?;
    /// let hosts = bus.kv(&topology::HOSTS).await?;
    /// # drop((server, hosts));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn with_mesh(
        data_dir: &Path,
    ) -> Result<(EmbeddedServer, crate::connect::Bus), EmbeddedError> {
        let server = EmbeddedServer::start(&EmbeddedOptions {
            data_dir: data_dir.to_path_buf(),
            port: 0,
            nats_server: None,
        })
        .await?;
        let admin = server.connect(NatsUser::Admin).await?;
        crate::setup::ensure(&admin, crate::setup::Replicas(1), Default::default()).await?;
        let bus = server.connect(Role::Worker).await?;
        Ok((server, bus))
    }

    /// Starts the server (creating its users' credentials on the first
    /// run) and waits until it accepts JetStream requests.
    pub async fn start(options: &EmbeddedOptions) -> Result<EmbeddedServer, EmbeddedError> {
        let binary = find_nats_server(options.nats_server.as_deref())?;
        let addr = SocketAddr::from(([127, 0, 0, 1], options.port));
        // Binding first turns nats-server's generic start-up failure into a
        // clear "port in use" before anything is spawned. Port 0 is the
        // server's own pick (-1 to nats-server), read back from its ports
        // file: a port picked here and handed over could be taken by
        // someone else in between.
        if options.port != 0 {
            match TcpListener::bind(addr) {
                Ok(probe) => drop(probe),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    return Err(EmbeddedError::PortInUse { addr });
                }
                Err(e) => {
                    return Err(EmbeddedError::Io {
                        path: PathBuf::from(addr.to_string()),
                        source: e,
                    });
                }
            }
        }
        let users = ServerUsers::load_or_create(&options.data_dir.join(CREDENTIALS_DIR))?;
        let dir = options.data_dir.join("nats");
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| EmbeddedError::Io { path, source }
        };
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let config = dir.join("server.conf");
        std::fs::write(&config, fleetroll_nats_config::SINGLE_NODE).map_err(io(&config))?;
        // server.conf includes them from its own directory.
        for (name, text) in [
            ("permissions.conf", fleetroll_nats_config::PERMISSIONS),
            ("admin.conf", fleetroll_nats_config::ADMIN),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(io(&path))?;
        }
        let log = dir.join("nats-server.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io(&log))?;
        let log_err = log_file.try_clone().map_err(io(&log))?;

        let ports_dir = dir.join("ports");
        if ports_dir.exists() {
            std::fs::remove_dir_all(&ports_dir).map_err(io(&ports_dir))?;
        }
        std::fs::create_dir_all(&ports_dir).map_err(io(&ports_dir))?;
        let port = match options.port {
            0 => "-1".to_string(),
            port => port.to_string(),
        };
        let mut command = Command::new(&binary);
        command
            .arg("-c")
            .arg(&config)
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .env("FLEETROLL_NATS_HOST", "127.0.0.1")
            .env("FLEETROLL_NATS_PORT", port)
            .env("FLEETROLL_NATS_STORE", &dir)
            .envs(users.server_env())
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .kill_on_drop(true);
        // The server must not outlive `fleetroll up`, even when `up` is
        // killed with SIGKILL and cannot clean up.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(io(&binary))?;
        let mut server = EmbeddedServer {
            child,
            url: String::new(),
            log,
            users,
        };
        let limit = Duration::from_secs(20);
        server.url = server.client_url(&ports_dir, limit).await?;
        server.wait_ready(limit).await?;
        Ok(server)
    }

    /// The client URL the server listens on, from the ports file it writes
    /// once it does.
    async fn client_url(
        &mut self,
        ports_dir: &Path,
        limit: Duration,
    ) -> Result<String, EmbeddedError> {
        #[derive(serde::Deserialize)]
        struct Ports {
            nats: Vec<String>,
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(crashed) = self.crashed() {
                return Err(crashed);
            }
            let written = std::fs::read_dir(ports_dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".ports"))
                .find_map(|e| std::fs::read(e.path()).ok())
                .and_then(|bytes| serde_json::from_slice::<Ports>(&bytes).ok())
                .and_then(|ports| ports.nats.into_iter().next());
            if let Some(url) = written {
                return Ok(url);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(EmbeddedError::NotReady(limit, self.log.clone()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Why the server is gone, if it exited.
    fn crashed(&mut self) -> Option<EmbeddedError> {
        let status = self.child.try_wait().ok().flatten()?;
        Some(EmbeddedError::Crashed {
            status: status.to_string(),
            log: self.log.clone(),
            tail: log_tail(&self.log),
        })
    }

    async fn wait_ready(&mut self, limit: Duration) -> Result<(), EmbeddedError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(crashed) = self.crashed() {
                return Err(crashed);
            }
            let check = ConnectOptions::new(self.url.as_str(), "fleetroll-up-ready")
                .credentials(self.users.get(Role::Worker).clone())
                .nats(Duration::from_millis(500), Default::default());
            match check.connect(self.url.as_str()).await {
                Ok(client) => {
                    let js = async_nats::jetstream::new(client);
                    if js.query_account().await.is_ok() {
                        return Ok(());
                    }
                }
                Err(e) if crate::connect::is_auth_error(&e) => {
                    return Err(EmbeddedError::Refused {
                        user: Role::Worker.to_string(),
                        log: self.log.clone(),
                    });
                }
                Err(_) => {}
            }
            if tokio::time::Instant::now() > deadline {
                return Err(EmbeddedError::NotReady(limit, self.log.clone()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// A connection to this server as one of its users.
    pub async fn connect(
        &self,
        user: impl Into<NatsUser>,
    ) -> Result<crate::connect::Bus, crate::connect::BusError> {
        let user = user.into();
        let options = ConnectOptions::new(self.url(), format!("fleetroll-{user}"))
            .credentials(self.credentials(user).clone());
        crate::connect::Bus::connect(options).await
    }

    /// The credentials of a NATS user on this server.
    pub fn credentials(&self, user: impl Into<NatsUser>) -> &Credentials {
        self.users.get(user)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Asks the server to shut down (SIGTERM: it flushes JetStream) and
    /// waits for it; kills it after 15 s.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::write_private;

    /// Whatever was planted beside the secret (a symlink to another file,
    /// a world-readable file under the name a fixed temp name would use),
    /// the secret lands whole, mode 0600, and nothing else is written.
    #[test]
    fn a_secret_is_written_exclusively_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("token");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep me").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("token.tmp")).unwrap();
        write_private(&secret, "s3cret").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "s3cret");

        let key = dir.path().join("key.pem");
        let planted = dir.path().join("key.tmp");
        std::fs::write(&planted, "").unwrap();
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&key, "old").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&key, "new").unwrap();
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_to_string(&key).unwrap(), "new");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(".fleetroll-"))
            .collect();
        assert!(left.is_empty(), "temporary files left: {left:?}");
    }
}
