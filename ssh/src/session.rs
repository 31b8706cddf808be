//! One authenticated SSH connection, over TCP or over a channel through a
//! jump host, its host key judged by [`crate::trust::decide`] during the
//! handshake; and the commands run on it.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::ChannelMsg;
use russh::client::{self, Handle};
use russh::keys::PublicKeyOrCertificate;
use russh::keys::ssh_key::{Algorithm, EcdsaCurve, HashAlg};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::route::Endpoint;
use crate::settings::FirstContact;
use crate::trust::{Decision, Trust};
use crate::{SshError, protocol};

/// Host key algorithms, best first; `ssh-rsa` (SHA-1) only on request.
fn host_key_algorithms(allow_ssh_rsa: bool) -> Vec<Algorithm> {
    let mut list = vec![
        Algorithm::Ed25519,
        Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP256,
        },
        Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP384,
        },
        Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP521,
        },
        Algorithm::Rsa {
            hash: Some(HashAlg::Sha512),
        },
        Algorithm::Rsa {
            hash: Some(HashAlg::Sha256),
        },
    ];
    if allow_ssh_rsa {
        list.push(Algorithm::Rsa { hash: None });
    }
    list
}

/// The host key a connection was accepted with.
#[derive(Debug, Clone)]
pub(crate) struct Accepted {
    /// The key (a certificate's own key), OpenSSH `type base64`.
    pub key: String,
    pub fingerprint: String,
    pub decision: Decision,
}

/// Judges the server's key during the handshake.
struct Checker {
    trust: Trust,
    principals: Vec<String>,
    first_contact: FirstContact,
    verdict: Arc<Mutex<Option<Accepted>>>,
}

impl client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        offered: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let decision = crate::trust::decide(
            offered,
            &self.principals,
            now,
            &self.trust,
            self.first_contact,
        );
        let key = match offered {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            PublicKeyOrCertificate::Certificate(cert) => {
                russh::keys::PublicKey::new(cert.public_key().clone(), "")
            }
        };
        let accept = !matches!(decision, Decision::Refused(_));
        let accepted = Accepted {
            key: crate::known_hosts::openssh_line(&key),
            fingerprint: crate::known_hosts::fingerprint_of(&key),
            decision,
        };
        *self.verdict.lock().unwrap_or_else(|e| e.into_inner()) = Some(accepted);
        Ok(accept)
    }
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

/// An authenticated connection, reusable for many execs and channels.
pub(crate) struct Session {
    handle: Handle<Checker>,
}

impl Session {
    /// Runs the handshake on `stream` (a TCP connection, or a channel
    /// through a jump host), judges the host key against `trust`, and
    /// authenticates, each within the endpoint's connect timeout.
    pub(crate) async fn establish<S>(
        endpoint: &Endpoint,
        stream: S,
        trust: Trust,
        principals: Vec<String>,
    ) -> Result<(Session, Accepted), SshError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let certificates = if trust.authorities.is_empty() {
            Vec::new()
        } else {
            host_key_algorithms(false)
        };
        let config = Arc::new(client::Config {
            inactivity_timeout: None,
            keepalive_interval: Some(endpoint.keepalive),
            keepalive_max: endpoint.keepalive_max,
            nodelay: true,
            preferred: russh::Preferred {
                key: Cow::Owned(host_key_algorithms(endpoint.allow_ssh_rsa)),
                host_key_certificates: Cow::Owned(certificates),
                ..Default::default()
            },
            ..Default::default()
        });
        let verdict = Arc::new(Mutex::new(None));
        let checker = Checker {
            trust,
            principals,
            first_contact: endpoint.first_contact,
            verdict: verdict.clone(),
        };
        let limit = endpoint.connect_timeout;
        let timeout = |stage| SshError::Timeout {
            stage,
            after: limit,
        };
        let handshake = client::connect_stream(config, stream, checker);
        let connected = tokio::time::timeout(limit, handshake)
            .await
            .map_err(|_| timeout("handshake"))?;
        let verdict = || verdict.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut handle = match connected {
            Ok(handle) => handle,
            Err(russh::Error::UnknownKey) => {
                return Err(match verdict().map(|a| a.decision) {
                    Some(Decision::Refused(refusal)) => SshError::HostKey(refusal),
                    _ => protocol("host key refused"),
                });
            }
            Err(russh::Error::NoCommonAlgo { kind, theirs, .. }) => {
                return Err(SshError::Protocol(format!(
                    "no common {kind:?} algorithm: the host offers {}{}",
                    theirs.join(","),
                    if theirs.iter().all(|a| a == "ssh-rsa") {
                        " (SHA-1 RSA, refused unless the ssh config asks: HostKeyAlgorithms +ssh-rsa)"
                    } else {
                        ""
                    }
                )));
            }
            Err(russh::Error::IO(e)) => {
                return Err(SshError::Connect {
                    host: endpoint.address.clone(),
                    port: endpoint.port,
                    detail: e.to_string(),
                });
            }
            Err(e) => return Err(protocol(e)),
        };
        let accepted = verdict().ok_or_else(|| protocol("the server offered no host key"))?;
        tokio::time::timeout(
            limit,
            crate::auth::authenticate(&mut handle, &endpoint.user, &endpoint.identities),
        )
        .await
        .map_err(|_| timeout("authentication"))??;
        Ok((Session { handle }, accepted))
    }

    /// Whether the connection is gone (the next exec would fail).
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// A `direct-tcpip` channel to `host:port` from the far end, as a
    /// stream to run another SSH connection over.
    pub(crate) async fn tunnel(
        &self,
        host: &str,
        port: u16,
        limit: Duration,
    ) -> Result<impl AsyncRead + AsyncWrite + Unpin + Send + 'static, SshError> {
        let open = self
            .handle
            .channel_open_direct_tcpip(host, u32::from(port), "127.0.0.1", 0);
        let channel = tokio::time::timeout(limit, open)
            .await
            .map_err(|_| SshError::Timeout {
                stage: "opening the tunnel",
                after: limit,
            })?
            .map_err(|e| match e {
                russh::Error::ChannelOpenFailure(why) => SshError::Connect {
                    host: host.to_string(),
                    port,
                    detail: match why {
                        russh::ChannelOpenFailure::ConnectFailed => {
                            "the jump host could not connect to it".into()
                        }
                        russh::ChannelOpenFailure::AdministrativelyProhibited => {
                            "the jump host does not forward there (administratively prohibited)"
                                .into()
                        }
                        russh::ChannelOpenFailure::ResourceShortage => {
                            "the jump host is short of resources".into()
                        }
                        russh::ChannelOpenFailure::UnknownChannelType => {
                            "the jump host does not forward TCP".into()
                        }
                        russh::ChannelOpenFailure::Other { reason, .. } => reason,
                    },
                },
                e => protocol(e),
            })?;
        Ok(channel.into_stream())
    }

    /// Runs `command` with `stdin`, waits for it within `limit`, and keeps at
    /// most `cap` bytes of each output stream; every piece of output (stdout
    /// and stderr, as it comes) is also sent to `live`. The channel is
    /// always read to its end, so the server never blocks on a full window.
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
}
