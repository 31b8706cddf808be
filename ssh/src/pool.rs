//! Connections to the fleet's hosts, shared by every worker that runs
//! commands on them: one live connection per host, reused; the host key
//! checked against the one pinned in the mesh's host-key bucket (the first
//! contact pins it, and a changed key is refused until an operator
//! re-pins).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use fleetroll_bus::codec;
use fleetroll_bus::connect::{Bus, BusError};
use fleetroll_bus::messages::host::HostKeyPin;
use fleetroll_bus::topology;
use time::OffsetDateTime;
use tokio::sync::Mutex;

use crate::{ExecOutput, Identity, Session, SshError, SshSettings};

/// Why a command could not be run on a host.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot resolve {host}: {detail}")]
    Resolve { host: String, detail: String },
    #[error(transparent)]
    Ssh(#[from] SshError),
    #[error("{0}")]
    Bus(#[from] BusError),
    /// The pinned key could not be read, or a first key not pinned: the
    /// host is not connected to at all rather than trusted blindly.
    #[error("refusing to connect to {host}: {detail}")]
    Pin { host: String, detail: String },
}

/// A failed run, and the address it went to when it got that far.
pub type Failed = (RunError, Option<String>);

/// What a run produced, and which address and host key answered.
pub struct Ran {
    pub output: ExecOutput,
    pub address: String,
    pub fingerprint: String,
}

/// A live connection, the fingerprint of the key it was checked against,
/// and the address it went to.
type Pooled = (Arc<Session>, String, String);

/// The fleet's SSH side: settings, identity and live connections.
pub struct Pool {
    bus: Bus,
    settings: SshSettings,
    identity: Result<Identity, SshError>,
    sessions: Mutex<HashMap<String, Pooled>>,
}

impl Pool {
    pub fn new(bus: Bus, settings: SshSettings) -> Pool {
        let identity = match settings.identity_file.as_deref() {
            Some(path) => Identity::load(path),
            None => Err(SshError::NoIdentity),
        };
        Pool {
            bus,
            settings,
            identity,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    pub fn settings(&self) -> &SshSettings {
        &self.settings
    }

    /// Runs `command` with `stdin` on the host over its pooled connection,
    /// or a new one, within `limit`, keeping at most `cap` bytes of output.
    pub async fn run(
        &self,
        hostname: &str,
        command: &str,
        stdin: &[u8],
        limit: Duration,
        cap: usize,
    ) -> Result<Ran, Failed> {
        self.run_streaming(hostname, command, stdin, limit, cap, None)
            .await
    }

    /// As [`Pool::run`], sending the output to `live` as it comes.
    pub async fn run_streaming(
        &self,
        hostname: &str,
        command: &str,
        stdin: &[u8],
        limit: Duration,
        cap: usize,
        live: Option<&tokio::sync::mpsc::UnboundedSender<Vec<u8>>>,
    ) -> Result<Ran, Failed> {
        // A pooled connection needs no name lookup (with thousands of hosts
        // in /etc/hosts, a lookup costs more than the command).
        let known = self
            .sessions
            .lock()
            .await
            .get(hostname)
            .filter(|(s, _, _)| !s.is_closed())
            .map(|(_, _, address)| address.clone());
        let address = match known {
            Some(address) => address,
            None => {
                let target = self.settings.target(hostname);
                resolve(&target.host, target.port)
                    .await
                    .map_err(|e| (e, None))?
            }
        };
        let fail = |e: RunError| (e, Some(address.clone()));
        let (session, pooled) = self.session(hostname, &address).await.map_err(fail)?;
        let exec = |session: Arc<Session>| async move {
            session
                .exec_streaming(command, stdin, limit, cap, live)
                .await
        };
        let (output, fingerprint) = match exec(session.0.clone()).await {
            Ok(output) => (output, session.1),
            // A pooled connection the host dropped (a reboot, say) is
            // replaced at once rather than failing this run.
            Err(SshError::Protocol(_)) if pooled => {
                self.forget(hostname).await;
                let (fresh, _) = self.session(hostname, &address).await.map_err(fail)?;
                match exec(fresh.0.clone()).await {
                    Ok(output) => (output, fresh.1),
                    Err(e) => {
                        self.forget(hostname).await;
                        return Err(fail(e.into()));
                    }
                }
            }
            Err(e) => {
                // A host that hung or dropped us gets a fresh connection next time.
                self.forget(hostname).await;
                return Err(fail(e.into()));
            }
        };
        Ok(Ran {
            output,
            address,
            fingerprint,
        })
    }

    /// Drops the host's pooled connection, if any.
    pub async fn forget(&self, hostname: &str) {
        self.sessions.lock().await.remove(hostname);
    }

    /// A live session to the host and the fingerprint of its key: the pooled
    /// one, or a new one checked against (or pinning) the host key. Says
    /// whether it came from the pool.
    async fn session(
        &self,
        hostname: &str,
        address: &str,
    ) -> Result<((Arc<Session>, String), bool), RunError> {
        if let Some((session, fingerprint, _)) = self
            .sessions
            .lock()
            .await
            .get(hostname)
            .filter(|(s, _, _)| !s.is_closed())
            .cloned()
        {
            return Ok(((session, fingerprint), true));
        }
        let keys = self.bus.kv(&topology::HOST_KEYS).await?;
        let pinned = read_pin(&keys, hostname).await?;
        let identity = self.identity.as_ref().map_err(|e| e.clone())?;
        let target = self.settings.target(hostname);
        let (session, offered) = Session::connect(
            &target,
            identity,
            pinned.as_ref().map(|p| p.key.as_str()),
            &self.settings.timeouts(),
        )
        .await?;
        let fingerprint = crate::fingerprint(&offered);
        if pinned.is_none() {
            // First contact: the session is used only once the key it
            // offered is the pinned one, ours or another worker's that got
            // there first.
            let pin = HostKeyPin {
                key: offered.clone(),
                fingerprint: fingerprint.clone(),
                pinned_at: OffsetDateTime::now_utc(),
            };
            if let Err(e) = keys.create(hostname, codec::to_cbor(&pin).into()).await {
                let not_pinned = |detail: String| RunError::Pin {
                    host: hostname.to_string(),
                    detail,
                };
                if e.kind() != kv::CreateErrorKind::AlreadyExists {
                    return Err(RunError::Bus(BusError::js(
                        format!("pinning the host key of {hostname}, so not using the connection"),
                        e,
                    )));
                }
                match read_pin(&keys, hostname).await? {
                    Some(winner) if crate::same_key(&winner.key, &offered) => {}
                    Some(winner) => {
                        return Err(RunError::Ssh(SshError::HostKeyChanged {
                            pinned: winner.fingerprint,
                            offered: fingerprint,
                        }));
                    }
                    None => {
                        return Err(not_pinned(
                            "another worker pinned a key and it is gone again".into(),
                        ));
                    }
                }
            }
        }
        let session = Arc::new(session);
        self.sessions.lock().await.insert(
            hostname.to_string(),
            (session.clone(), fingerprint.clone(), address.to_string()),
        );
        Ok(((session, fingerprint), false))
    }

    /// Forgets a host's pinned key (after a reimage), so the next contact
    /// pins the new one.
    pub async fn repin(&self, hostname: &str) -> Result<(), BusError> {
        self.forget(hostname).await;
        let keys = self.bus.kv(&topology::HOST_KEYS).await?;
        keys.purge(hostname)
            .await
            .map_err(|e| BusError::js("removing the pinned key", e))
    }
}

/// The host's pinned key; none only when nothing is pinned. A pin that
/// cannot be read or decoded is an error, never "no pin".
async fn read_pin(keys: &kv::Store, hostname: &str) -> Result<Option<HostKeyPin>, RunError> {
    let refuse = |detail: String| RunError::Pin {
        host: hostname.to_string(),
        detail,
    };
    let Some(bytes) = keys.get(hostname).await.map_err(|e| {
        RunError::Bus(BusError::js(
            format!("reading the pinned host key of {hostname}, so not connecting"),
            e,
        ))
    })?
    else {
        return Ok(None);
    };
    codec::from_cbor::<HostKeyPin>(&bytes).map(Some).map_err(|e| {
        refuse(format!(
            "its pinned host key is unreadable ({e}); `fleetroll host repin {hostname} --confirm` pins the key it offers now"
        ))
    })
}

async fn resolve(host: &str, port: u16) -> Result<String, RunError> {
    let lookup = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::lookup_host((host, port)),
    )
    .await;
    let resolve_error = |detail: String| RunError::Resolve {
        host: host.to_string(),
        detail,
    };
    match lookup {
        Err(_) => Err(resolve_error("timed out".into())),
        Ok(Err(e)) => Err(resolve_error(e.to_string())),
        Ok(Ok(mut addrs)) => addrs
            .next()
            .map(|a| a.ip().to_string())
            .ok_or_else(|| resolve_error("no address".into())),
    }
}
