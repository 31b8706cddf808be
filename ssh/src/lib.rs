//! # fleetroll-ssh
//!
//! SSH as fleetroll uses it, the way the operator's own `ssh` would reach
//! the same hosts: the OpenSSH client config ([`ssh_config`], combined with
//! `fleetroll.toml` in [`route`]), jump hosts (`ProxyJump`, pooled and
//! shared by many targets), keys from ssh-agent and identity files
//! (`auth.rs`), and host keys checked against the pin in the mesh and the
//! operator's known_hosts ([`trust`], [`known_hosts`]). Connect,
//! authentication and every exec have a timeout, so a hanging host costs at
//! most its timeouts. Commands are fixed strings; anything that comes from
//! outside (override contents, scripts) travels on stdin, never in the
//! command line.
//!
//! [`pool::Pool`] is what workers use: `pool.run(host, command, stdin, ..)`.

mod auth;
pub mod known_hosts;
pub mod pool;
pub mod route;
mod session;
mod settings;
pub mod ssh_config;
pub mod trust;

pub use session::ExecOutput;
use session::{Accepted, Session};
pub use settings::{BadVariable, FirstContact, Forced, HostOverride, SshSettings};

use std::time::Duration;

/// Why an SSH operation failed. Each is recorded per host, never fatal.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SshError {
    #[error(
        "no SSH identity: no identity file (ssh config IdentityFile, [ssh] identity_file or FLEETROLL_SSH_KEY) and no key in an ssh-agent (SSH_AUTH_SOCK)"
    )]
    NoIdentity,
    #[error("cannot read the SSH identity {path}: {detail}")]
    Identity { path: String, detail: String },
    #[error(
        "the SSH identity {path} is encrypted and no ssh-agent holds its key (fleetroll never asks for a passphrase: `ssh-add {path}`)"
    )]
    EncryptedKey { path: String },
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
    #[error(transparent)]
    HostKey(#[from] trust::Refusal),
    #[error("authentication as {user} refused (keys tried: {tried}{})", if encrypted.is_empty() { String::new() } else { format!("; encrypted, not in the agent: {encrypted}") })]
    AuthRefused {
        user: String,
        tried: String,
        encrypted: String,
    },
    /// A jump host failed, or the target could not be reached through it.
    #[error("via {hop}: {error}")]
    Via { hop: String, error: Box<SshError> },
    #[error("SSH protocol error: {0}")]
    Protocol(String),
}

impl SshError {
    /// The error itself, under any `via` hops.
    pub fn innermost(&self) -> &SshError {
        match self {
            SshError::Via { error, .. } => error.innermost(),
            e => e,
        }
    }
}

fn protocol(e: impl std::fmt::Display) -> SshError {
    SshError::Protocol(e.to_string())
}
