//! # fleetroll-ssh
//!
//! SSH as fleetroll uses it: one key-based identity, the server's host key
//! checked against the pinned one (first contact reports it for pinning),
//! and a timeout on connect, on authentication and on every exec, so a
//! hanging host costs at most its timeouts. Commands are fixed strings;
//! anything that comes from outside (override contents, scripts) travels on
//! stdin, never in the command line.
//!
//! ```no_run
//! # async fn run() -> Result<(), fleetroll_ssh::SshError> {
//! use std::time::Duration;
//! use fleetroll_ssh::{Identity, Session, Target, Timeouts};
//!
//! let identity = Identity::load("/root/.ssh/id_ed25519".as_ref())?;
//! let target = Target { host: "host1.example.com".into(), port: 22, user: "relops".into() };
//! let (session, host_key) = Session::connect(&target, &identity, None, &Timeouts::default()).await?;
//! println!("pin this: {host_key}");
//! let out = session.exec("sh -s", b"uname -s\n", Duration::from_secs(10), 1 << 20).await?;
//! assert_eq!(out.exit_status, Some(0));
//! # Ok(()) }
//! ```

pub mod pool;
mod settings;

pub use settings::{HostOverride, SshSettings};

use std::sync::Arc;
use std::time::Duration;

use russh::ChannelMsg;
use russh::client::{self, Handle};
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use tokio::sync::Mutex;

/// Where to connect, as whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: String,
}

/// Time limits. None of them is optional: russh has no timeout of its own.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub auth: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            auth: Duration::from_secs(10),
        }
    }
}

/// Why an SSH operation failed. Each is recorded per host, never fatal.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SshError {
    #[error(
        "no SSH identity configured (ssh.identity_file in fleetroll.toml, or FLEETROLL_SSH_KEY)"
    )]
    NoIdentity,
    #[error("cannot read the SSH identity {path}: {detail}")]
    Identity { path: String, detail: String },
    #[error("cannot connect to {host}:{port}: {detail}")]
    Connect {
        host: String,
        port: u16,
        detail: String,
    },
    #[error("{stage} timed out after {after:?}")]
    Timeout {
        stage: &'static str,
        after: Duration,
    },
    #[error(
        "host key changed: pinned {pinned}, host offers {offered}; refusing until the operator re-pins it (`fleetroll host repin <host> --confirm`)"
    )]
    HostKeyChanged { pinned: String, offered: String },
    #[error("authentication as {user} refused")]
    AuthRefused { user: String },
    #[error("SSH protocol error: {0}")]
    Protocol(String),
}

fn protocol(e: impl std::fmt::Display) -> SshError {
    SshError::Protocol(e.to_string())
}

/// The one key-based identity fleetroll logs in with.
#[derive(Clone)]
pub struct Identity {
    key: Arc<PrivateKey>,
}

impl Identity {
    pub fn load(path: &std::path::Path) -> Result<Identity, SshError> {
        russh::keys::load_secret_key(path, None)
            .map(|key| Identity { key: Arc::new(key) })
            .map_err(|e| SshError::Identity {
                path: path.display().to_string(),
                detail: e.to_string(),
            })
    }
}

/// What the server's key was checked against.
struct Client {
    pinned: Option<String>,
    /// The key the server offered, in OpenSSH format, for the caller.
    offered: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            return Ok(false);
        };
        let offered = key.to_openssh().unwrap_or_default();
        let accepted = self
            .pinned
            .as_deref()
            .is_none_or(|pinned| same_key(pinned, &offered));
        *self.offered.lock().await = Some(offered);
        Ok(accepted)
    }
}

/// Compares OpenSSH public keys by algorithm and key data, ignoring comments.
pub(crate) fn same_key(a: &str, b: &str) -> bool {
    let fields = |s: &str| {
        s.split_whitespace()
            .take(2)
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    fields(a) == fields(b)
}

/// The SHA-256 fingerprint of an OpenSSH public key, as `ssh-keygen -l` shows it.
pub fn fingerprint(openssh: &str) -> String {
    russh::keys::PublicKey::from_openssh(openssh)
        .map(|k| k.fingerprint(HashAlg::Sha256).to_string())
        .unwrap_or_else(|_| "unparseable key".into())
}

/// What a command left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// None when the server sent no exit status (killed by a signal).
    pub exit_status: Option<u32>,
    /// Output beyond the cap was read and dropped.
    pub truncated: bool,
}

/// An authenticated connection, reusable for many execs.
pub struct Session {
    handle: Handle<Client>,
}

impl Session {
    /// Connects, checks the host key against `pinned` (any key is accepted
    /// and reported when nothing is pinned yet), and authenticates. Returns
    /// the session and the server's key in OpenSSH format.
    pub async fn connect(
        target: &Target,
        identity: &Identity,
        pinned: Option<&str>,
        timeouts: &Timeouts,
    ) -> Result<(Session, String), SshError> {
        let config = Arc::new(client::Config {
            inactivity_timeout: None,
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_max: 3,
            nodelay: true,
            ..Default::default()
        });
        let offered = Arc::new(Mutex::new(None));
        let handler = Client {
            pinned: pinned.map(str::to_string),
            offered: offered.clone(),
        };
        let connecting = client::connect(config, (target.host.as_str(), target.port), handler);
        let connected = tokio::time::timeout(timeouts.connect, connecting)
            .await
            .map_err(|_| SshError::Timeout {
                stage: "connect",
                after: timeouts.connect,
            })?;
        let mut handle = match connected {
            Ok(handle) => handle,
            Err(russh::Error::UnknownKey) => {
                let offered = offered.lock().await.clone().unwrap_or_default();
                return Err(SshError::HostKeyChanged {
                    pinned: pinned.map(fingerprint).unwrap_or_default(),
                    offered: fingerprint(&offered),
                });
            }
            Err(russh::Error::IO(e)) => {
                return Err(SshError::Connect {
                    host: target.host.clone(),
                    port: target.port,
                    detail: e.to_string(),
                });
            }
            Err(e) => return Err(protocol(e)),
        };
        let server_key = offered.lock().await.clone().unwrap_or_default();
        let authenticating = async {
            let hash = handle
                .best_supported_rsa_hash()
                .await
                .map_err(protocol)?
                .flatten();
            handle
                .authenticate_publickey(
                    &target.user,
                    PrivateKeyWithHashAlg::new(identity.key.clone(), hash),
                )
                .await
                .map_err(protocol)
        };
        let auth = tokio::time::timeout(timeouts.auth, authenticating)
            .await
            .map_err(|_| SshError::Timeout {
                stage: "authentication",
                after: timeouts.auth,
            })??;
        if !auth.success() {
            return Err(SshError::AuthRefused {
                user: target.user.clone(),
            });
        }
        Ok((Session { handle }, server_key))
    }

    /// Whether the connection is gone (the next exec would fail).
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Runs `command` with `stdin`, waits for it within `limit`, and keeps at
    /// most `cap` bytes of each output stream. The channel is always read
    /// to its end, so the server never blocks on a full window.
    pub async fn exec(
        &self,
        command: &str,
        stdin: &[u8],
        limit: Duration,
        cap: usize,
    ) -> Result<ExecOutput, SshError> {
        self.exec_streaming(command, stdin, limit, cap, None).await
    }

    /// As [`Session::exec`], and every piece of output (stdout and stderr,
    /// as it comes) is also sent to `live`.
    pub async fn exec_streaming(
        &self,
        command: &str,
        stdin: &[u8],
        limit: Duration,
        cap: usize,
        live: Option<&tokio::sync::mpsc::UnboundedSender<Vec<u8>>>,
    ) -> Result<ExecOutput, SshError> {
        let run = async {
            let mut channel = self.handle.channel_open_session().await.map_err(protocol)?;
            channel.exec(true, command).await.map_err(protocol)?;
            if !stdin.is_empty() {
                channel.data_bytes(stdin.to_vec()).await.map_err(protocol)?;
            }
            channel.eof().await.map_err(protocol)?;
            let mut out = ExecOutput {
                stdout: Vec::new(),
                stderr: Vec::new(),
                exit_status: None,
                truncated: false,
            };
            let keep = |buffer: &mut Vec<u8>, data: &[u8], truncated: &mut bool| {
                let room = cap.saturating_sub(buffer.len());
                buffer.extend_from_slice(&data[..data.len().min(room)]);
                *truncated |= data.len() > room;
            };
            let forward = |data: &[u8]| {
                if let Some(live) = live {
                    let _ = live.send(data.to_vec());
                }
            };
            while let Some(message) = channel.wait().await {
                match message {
                    ChannelMsg::Data { data } => {
                        forward(&data);
                        keep(&mut out.stdout, &data, &mut out.truncated)
                    }
                    ChannelMsg::ExtendedData { data, .. } => {
                        forward(&data);
                        keep(&mut out.stderr, &data, &mut out.truncated)
                    }
                    ChannelMsg::ExitStatus { exit_status } => out.exit_status = Some(exit_status),
                    _ => {}
                }
            }
            Ok(out)
        };
        tokio::time::timeout(limit, run)
            .await
            .map_err(|_| SshError::Timeout {
                stage: "command",
                after: limit,
            })?
    }

    /// Closes the connection politely.
    pub async fn close(self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }
}
