//! Connections to the fleet's hosts, shared by every worker that runs
//! commands on them: one live connection per host, reused; jump hosts
//! reached once and shared by many targets (a bounded number of channels
//! on each connection); host keys checked against the pin in the mesh's
//! host-key bucket and the operator's known_hosts (a first contact pins
//! the key when the policy allows, a changed key is refused until an
//! operator re-pins).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::kv;
use fleetroll_bus::codec;
use fleetroll_bus::connect::{Bus, BusError};
use fleetroll_bus::messages::command::{ImportedPin, PinChange};
use fleetroll_bus::messages::host::{HostKeyPin, PinSource};
use fleetroll_bus::topology;
use russh::keys::PublicKey;
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};

use crate::known_hosts::{KnownHosts, KnownHostsError};
use crate::route::{Endpoint, Resolver, Route, RouteError};
use crate::ssh_config::SshConfigError;
use crate::trust::{Decision, Trust};
use crate::{Accepted, ExecOutput, Session, SshError, SshSettings};

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
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("the ssh config cannot be used: {0}")]
    Config(Arc<SshConfigError>),
    /// A known_hosts file that cannot be read is not taken as "knows
    /// nothing".
    #[error("refusing to connect: {0}")]
    KnownHosts(Arc<KnownHostsError>),
}

/// A failed run, and the address it went to when it got that far.
pub type Failed = (RunError, Option<String>);

/// What a run produced, and which address and host key answered.
pub struct Ran {
    pub output: ExecOutput,
    pub address: String,
    pub fingerprint: String,
}

/// A connection, and the channel it holds on a jump host's connection.
struct Live {
    session: Session,
    _slot: Option<OwnedSemaphorePermit>,
}

/// A live connection to a host, the fingerprint it was accepted with, and
/// the address it went to.
type Pooled = (Arc<Live>, String, String);

/// A connection to a jump host, and how many more tunnels it may carry.
struct Jump {
    live: Live,
    slots: Arc<Semaphore>,
}

/// A known_hosts file as last read, and when it was changed then.
type Cached = (Option<SystemTime>, Arc<KnownHosts>);

/// The fleet's SSH side: settings, routes and live connections.
pub struct Pool {
    bus: Bus,
    settings: SshSettings,
    resolver: Result<Resolver, Arc<SshConfigError>>,
    sessions: Mutex<HashMap<String, Pooled>>,
    /// Connections to jump hosts by the chain of hops that reaches them.
    jumps: std::sync::Mutex<HashMap<String, Vec<Arc<Jump>>>>,
    /// One connection to a jump host is made at a time, per chain.
    connecting: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
    known_hosts: std::sync::Mutex<HashMap<PathBuf, Cached>>,
}

impl Pool {
    pub fn new(bus: Bus, settings: SshSettings) -> Pool {
        let resolver = Resolver::new(settings.clone()).map_err(|e| {
            tracing::error!(error = %e, "the ssh config cannot be used; every host will fail");
            Arc::new(e)
        });
        Pool {
            bus,
            settings,
            resolver,
            sessions: Mutex::new(HashMap::new()),
            jumps: std::sync::Mutex::new(HashMap::new()),
            connecting: std::sync::Mutex::new(HashMap::new()),
            known_hosts: std::sync::Mutex::new(HashMap::new()),
        }
    }

    pub fn settings(&self) -> &SshSettings {
        &self.settings
    }

    /// The route to a host, as the next connection would take it.
    pub fn route(&self, hostname: &str) -> Result<Route, RunError> {
        let resolver = self
            .resolver
            .as_ref()
            .map_err(|e| RunError::Config(e.clone()))?;
        Ok(resolver.route(hostname)?)
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
        let exec = |session: Arc<Live>| async move {
            session
                .session
                .exec_streaming(command, stdin, limit, cap, live)
                .await
        };
        let ((session, fingerprint, address), pooled) = self.session(hostname).await?;
        let fail = |e: RunError| (e, Some(address.clone()));
        let (output, fingerprint) = match exec(session).await {
            Ok(output) => (output, fingerprint),
            // A pooled connection the host dropped (a reboot, a jump host
            // that went away) is replaced at once rather than failing this run.
            Err(SshError::Protocol(_)) if pooled => {
                self.forget(hostname).await;
                let ((fresh, fingerprint, _), _) = self.session(hostname).await?;
                match exec(fresh).await {
                    Ok(output) => (output, fingerprint),
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

    /// The host's pooled connection, or a new one; says whether it was
    /// pooled.
    async fn session(&self, hostname: &str) -> Result<(Pooled, bool), Failed> {
        if let Some(pooled) = self
            .sessions
            .lock()
            .await
            .get(hostname)
            .filter(|(s, _, _)| !s.session.is_closed())
            .cloned()
        {
            return Ok((pooled, true));
        }
        let route = self.route(hostname).map_err(|e| (e, None))?;
        let target = &route.target;
        let (stream, slot, address): (Box<dyn Stream>, _, _) = if route.jumps.is_empty() {
            let address = resolve(&target.address, target.port)
                .await
                .map_err(|e| (e, None))?;
            let stream = tcp(&address, target)
                .await
                .map_err(|e| (e.into(), Some(address.clone())))?;
            (Box::new(stream), None, address)
        } else {
            let (stream, slot) = self
                .tunnel(&route.jumps, &target.address, target.port)
                .await
                .map_err(|e| (e, Some(target.address.clone())))?;
            (stream, Some(slot), target.address.clone())
        };
        let fail = |e: RunError| (e, Some(address.clone()));
        let (session, accepted) = self.establish(target, stream).await.map_err(fail)?;
        let live = Arc::new(Live {
            session,
            _slot: slot,
        });
        let pooled = (live, accepted.fingerprint, address);
        self.sessions
            .lock()
            .await
            .insert(hostname.to_string(), pooled.clone());
        Ok((pooled, false))
    }

    /// Connects the endpoint's SSH session over `stream`, its key judged
    /// against the pin and known_hosts, and pins a first contact's key.
    async fn establish(
        &self,
        endpoint: &Endpoint,
        stream: Box<dyn Stream>,
    ) -> Result<(Session, Accepted), RunError> {
        let keys = self.bus.kv(&topology::HOST_KEYS).await?;
        let pinned = read_pin(&keys, &endpoint.name).await?;
        let local = self.local_trust(&endpoint.known_hosts_files, &endpoint.known_as)?;
        let trust = match &pinned {
            Some(pin) => {
                let mut trust = pin_trust(&endpoint.name, pin)?;
                trust.revoked.extend(local.revoked);
                trust
            }
            None => local,
        };
        let mut principals = vec![endpoint.name.clone(), endpoint.address.clone()];
        principals.extend(endpoint.known_as.iter().cloned());
        let (session, accepted) = Session::establish(endpoint, stream, trust, principals).await?;
        if accepted.decision == Decision::FirstContact {
            self.pin_first_contact(&keys, &endpoint.name, &accepted)
                .await?;
        }
        Ok((session, accepted))
    }

    /// Pins a first contact's key. The session is used only once the key
    /// it offered is the pinned one, ours or another worker's that got
    /// there first.
    async fn pin_first_contact(
        &self,
        keys: &kv::Store,
        name: &str,
        accepted: &Accepted,
    ) -> Result<(), RunError> {
        let pin = HostKeyPin::first_contact(
            accepted.key.clone(),
            accepted.fingerprint.clone(),
            OffsetDateTime::now_utc(),
        );
        let Err(e) = keys.create(name, codec::to_cbor(&pin).into()).await else {
            return Ok(());
        };
        if e.kind() != kv::CreateErrorKind::AlreadyExists {
            return Err(RunError::Bus(BusError::js(
                format!("pinning the host key of {name}, so not using the connection"),
                e,
            )));
        }
        match read_pin(keys, name).await? {
            Some(winner) if winner.keys().any(|k| same_key(k, &accepted.key)) => Ok(()),
            Some(winner) => Err(RunError::Ssh(SshError::HostKey(
                crate::trust::Refusal::Changed {
                    pinned: winner.fingerprint,
                    offered: accepted.fingerprint.clone(),
                },
            ))),
            None => Err(RunError::Pin {
                host: name.to_string(),
                detail: "another worker pinned a key and it is gone again".into(),
            }),
        }
    }

    /// A tunnel to `host:port` through the chain of `jumps` (nearest
    /// first), and the channel slot it holds on the last one.
    async fn tunnel(
        &self,
        jumps: &[Endpoint],
        host: &str,
        port: u16,
    ) -> Result<(Box<dyn Stream>, OwnedSemaphorePermit), RunError> {
        let Some(last) = jumps.last() else {
            return Err(RunError::Ssh(crate::protocol("a tunnel needs a jump host")));
        };
        let via = |e: RunError| match e {
            RunError::Ssh(error) => RunError::Ssh(SshError::Via {
                hop: last.name.clone(),
                error: Box::new(error),
            }),
            e => e,
        };
        let (jump, slot) = Box::pin(self.jump(jumps)).await.map_err(via)?;
        let stream = match jump
            .live
            .session
            .tunnel(host, port, last.connect_timeout)
            .await
        {
            Ok(stream) => stream,
            // A connection that dropped since it was pooled is replaced
            // at once, not failed on.
            Err(e) if jump.live.session.is_closed() => {
                tracing::info!(jump = %last.name, error = %e, "jump host connection dropped; reconnecting");
                let (jump, fresh_slot) = Box::pin(self.jump(jumps)).await.map_err(via)?;
                let stream = jump
                    .live
                    .session
                    .tunnel(host, port, last.connect_timeout)
                    .await
                    .map_err(|e| via(e.into()))?;
                return Ok((Box::new(stream), fresh_slot));
            }
            Err(e) => return Err(via(e.into())),
        };
        Ok((Box::new(stream), slot))
    }

    /// A connection to the last of `jumps` with a free channel slot: a
    /// pooled one, or a new one.
    async fn jump(
        &self,
        jumps: &[Endpoint],
    ) -> Result<(Arc<Jump>, OwnedSemaphorePermit), RunError> {
        let chain = jumps
            .iter()
            .map(|j| format!("{}@{}:{}", j.user, j.address, j.port))
            .collect::<Vec<_>>()
            .join(">");
        let free = |pool: &Pool| {
            let mut all = pool.jumps.lock().unwrap_or_else(|e| e.into_inner());
            let conns = all.entry(chain.clone()).or_default();
            conns.retain(|j| !j.live.session.is_closed());
            conns.iter().find_map(|j| {
                j.slots
                    .clone()
                    .try_acquire_owned()
                    .ok()
                    .map(|slot| (j.clone(), slot))
            })
        };
        if let Some(found) = free(self) {
            return Ok(found);
        }
        let gate = self
            .connecting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(chain.clone())
            .or_default()
            .clone();
        let _turn = gate.lock().await;
        if let Some(found) = free(self) {
            return Ok(found);
        }
        let (hop, before) = jumps
            .split_last()
            .ok_or_else(|| crate::protocol("no jump host"))?;
        let (stream, slot): (Box<dyn Stream>, _) = if before.is_empty() {
            let address = resolve(&hop.address, hop.port).await?;
            (Box::new(tcp(&address, hop).await?), None)
        } else {
            let (stream, slot) = Box::pin(self.tunnel(before, &hop.address, hop.port)).await?;
            (stream, Some(slot))
        };
        let (session, _) = self.establish(hop, stream).await?;
        let jump = Arc::new(Jump {
            live: Live {
                session,
                _slot: slot,
            },
            slots: Arc::new(Semaphore::new(self.settings.channels_per_jump.max(1))),
        });
        let slot = jump
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| crate::protocol("a new jump host connection has no free channel"))?;
        self.jumps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(chain)
            .or_default()
            .push(jump.clone());
        tracing::info!(jump = %hop.name, "connected to jump host");
        Ok((jump, slot))
    }

    /// What these known_hosts files say about a host listed as any of
    /// `names`; each file is read again when it changes.
    fn local_trust(&self, paths: &[PathBuf], names: &[String]) -> Result<Trust, RunError> {
        let mut trust = Trust::default();
        let mut cache = self.known_hosts.lock().unwrap_or_else(|e| e.into_inner());
        for path in paths {
            let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            let entries = match cache.get(path) {
                Some((at, entries)) if *at == modified => entries.clone(),
                _ => {
                    let entries = Arc::new(
                        KnownHosts::read(std::slice::from_ref(path))
                            .map_err(|e| RunError::KnownHosts(Arc::new(e)))?,
                    );
                    cache.insert(path.clone(), (modified, entries.clone()));
                    entries
                }
            };
            trust.extend(entries.trust_for(names));
        }
        Ok(trust)
    }

    /// Forgets a host's pinned key (after a reimage), so the next contact
    /// pins the new one. A delete, not a purge: buckets refuse rollups,
    /// and the old pin stays in the history.
    pub async fn repin(&self, hostname: &str) -> Result<(), BusError> {
        self.forget(hostname).await;
        let keys = self.bus.kv(&topology::HOST_KEYS).await?;
        keys.delete(hostname)
            .await
            .map_err(|e| BusError::js("removing the pinned key", e))
    }

    /// Pins what a known_hosts text says about each of `hostnames` and
    /// the jump hosts in front of them, or with `apply` false only says
    /// what it would pin.
    pub async fn import_known_hosts(
        &self,
        text: &str,
        file: &str,
        hostnames: &[String],
        apply: bool,
    ) -> Result<Vec<ImportedPin>, RunError> {
        let known = KnownHosts::parse(text, file).map_err(|e| RunError::KnownHosts(Arc::new(e)))?;
        let mut endpoints: Vec<Endpoint> = Vec::new();
        for hostname in hostnames {
            let route = match self.route(hostname) {
                Ok(route) => route,
                Err(e @ RunError::Config(_)) => return Err(e),
                // A host with no route (a ProxyCommand) is not pinned.
                Err(_) => continue,
            };
            for endpoint in route.jumps.into_iter().chain([route.target]) {
                if !endpoints.iter().any(|e| e.name == endpoint.name) {
                    endpoints.push(endpoint);
                }
            }
        }
        let keys = self.bus.kv(&topology::HOST_KEYS).await?;
        let mut imported = Vec::new();
        for endpoint in endpoints {
            let trust = known.trust_for(&endpoint.known_as);
            // Revocations travel with the keys and CAs they stand beside;
            // alone they would leave a pin that vouches for nothing.
            if trust.knows_nothing() {
                continue;
            }
            let pin = pin_from(&trust, file);
            let current = read_pin(&keys, &endpoint.name).await.ok().flatten();
            let change = match &current {
                None => PinChange::New,
                Some(c) if same_pin(c, &pin) => PinChange::Unchanged,
                Some(c) => PinChange::Replaced {
                    previous: pin_fingerprints(c),
                },
            };
            if apply && change != PinChange::Unchanged {
                keys.put(&endpoint.name, codec::to_cbor(&pin).into())
                    .await
                    .map_err(|e| {
                        BusError::js(format!("pinning the host key of {}", endpoint.name), e)
                    })?;
                self.forget(&endpoint.name).await;
            }
            imported.push(ImportedPin {
                hostname: endpoint.name,
                change,
                fingerprints: pin_fingerprints(&pin),
            });
        }
        Ok(imported)
    }
}

/// A byte stream an SSH connection runs over.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

fn pin_from(trust: &Trust, file: &str) -> HostKeyPin {
    let keys: Vec<String> = trust
        .keys
        .iter()
        .map(crate::known_hosts::openssh_line)
        .collect();
    let (key, other_keys) = keys
        .split_first()
        .map_or((String::new(), Vec::new()), |(k, rest)| {
            (k.clone(), rest.to_vec())
        });
    HostKeyPin {
        fingerprint: trust
            .keys
            .first()
            .map(crate::known_hosts::fingerprint_of)
            .unwrap_or_default(),
        key,
        other_keys,
        cert_authorities: trust
            .authorities
            .iter()
            .map(crate::known_hosts::openssh_line)
            .collect(),
        revoked: trust
            .revoked
            .iter()
            .map(crate::known_hosts::openssh_line)
            .collect(),
        source: PinSource::KnownHosts { file: file.into() },
        pinned_at: OffsetDateTime::now_utc(),
    }
}

fn pin_fingerprints(pin: &HostKeyPin) -> Vec<String> {
    let parse =
        |k: &str| PublicKey::from_openssh(k).map(|k| crate::known_hosts::fingerprint_of(&k));
    pin.keys()
        .filter_map(|k| parse(k).ok())
        .chain(
            pin.cert_authorities
                .iter()
                .filter_map(|k| parse(k).ok().map(|f| format!("CA {f}"))),
        )
        .collect()
}

fn same_pin(a: &HostKeyPin, b: &HostKeyPin) -> bool {
    let set = |keys: Vec<&str>| {
        let mut v: Vec<String> = keys
            .into_iter()
            .map(|k| k.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
            .collect();
        v.sort();
        v
    };
    fn strs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    set(a.keys().collect()) == set(b.keys().collect())
        && set(strs(&a.cert_authorities)) == set(strs(&b.cert_authorities))
        && set(strs(&a.revoked)) == set(strs(&b.revoked))
}

/// Compares OpenSSH public keys by algorithm and key data, ignoring comments.
fn same_key(a: &str, b: &str) -> bool {
    let fields = |s: &str| {
        s.split_whitespace()
            .take(2)
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    fields(a) == fields(b)
}

/// What a pin trusts. A key in it that does not parse refuses the host.
fn pin_trust(name: &str, pin: &HostKeyPin) -> Result<Trust, RunError> {
    let parse = |k: &str| {
        PublicKey::from_openssh(k).map_err(|e| RunError::Pin {
            host: name.to_string(),
            detail: format!(
                "its pinned host key does not parse ({e}); `fleetroll host repin {name} --confirm` pins the key it offers now"
            ),
        })
    };
    let all = |v: &[String]| v.iter().map(|k| parse(k)).collect::<Result<Vec<_>, _>>();
    Ok(Trust {
        keys: pin.keys().map(parse).collect::<Result<_, _>>()?,
        authorities: all(&pin.cert_authorities)?,
        revoked: all(&pin.revoked)?,
    })
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

async fn tcp(address: &str, endpoint: &Endpoint) -> Result<tokio::net::TcpStream, SshError> {
    let connecting = tokio::net::TcpStream::connect((address, endpoint.port));
    let stream = tokio::time::timeout(endpoint.connect_timeout, connecting)
        .await
        .map_err(|_| SshError::Timeout {
            stage: "connect",
            after: endpoint.connect_timeout,
        })?
        .map_err(|e| SshError::Connect {
            host: endpoint.address.clone(),
            port: endpoint.port,
            detail: e.to_string(),
        })?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
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
