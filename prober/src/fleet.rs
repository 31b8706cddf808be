//! Probing hosts over SSH: resolve, connect (or reuse the connection),
//! check the pinned host key, run the probe, record the observation.
//! Every step has a timeout; a failure is recorded on the host, never
//! raised.

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::jetstream::kv;
use fleetroll_bus::audit_log;
use fleetroll_bus::codec;
use fleetroll_bus::connect::{Bus, BusError};
use fleetroll_bus::messages::audit::OverrideSnapshot;
use fleetroll_bus::messages::host::Observation;
use fleetroll_bus::subjects;
use fleetroll_bus::topology;
use fleetroll_ssh::pool::{Pool, Ran, RunError};
use fleetroll_ssh::{SshError, SshSettings};
use time::OffsetDateTime;
use tokio::sync::{Mutex, Semaphore};
use tracing::{Instrument, info_span, warn};

use crate::observe;
use crate::probe;

/// The prober's SSH side: the connection pool, one probe per host at a
/// time, and at most `parallelism` at once.
pub struct Fleet {
    bus: Bus,
    pool: Pool,
    /// One probe per host at a time: a second job for the same host (a
    /// refresh meeting a scheduled probe) waits and reuses the connection.
    busy: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    permits: Semaphore,
}

/// Why a host could not be probed.
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("the probe exited with status {status:?}: {stderr}")]
    Exit { status: Option<u32>, stderr: String },
    #[error("the probe's answer is unusable: {0}")]
    Parse(#[from] probe::ProbeParseError),
    #[error("{0}")]
    Bus(#[from] BusError),
}

impl From<SshError> for ProbeError {
    fn from(e: SshError) -> Self {
        ProbeError::Run(RunError::Ssh(e))
    }
}

impl Fleet {
    pub fn new(bus: Bus, settings: SshSettings) -> Fleet {
        let permits = Semaphore::new(settings.parallelism.max(1));
        Fleet {
            pool: Pool::new(bus.clone(), settings),
            bus,
            busy: Mutex::new(HashMap::new()),
            permits,
        }
    }

    /// How many hosts are probed at once.
    pub fn parallelism(&self) -> usize {
        self.pool.settings().parallelism.max(1)
    }

    /// Probes one host and records what was found (or why nothing was).
    /// A host that is not (or no longer) in the inventory is not probed, and
    /// a probe never brings back a host removed while it ran: the record is
    /// written as a compare-and-swap on the revision it started from.
    ///
    /// A `fast` probe first asks the host only for its state token: when it
    /// is the one the last full probe saw, the host is recorded as seen and
    /// nothing more is read; otherwise (or when that fails) a full probe runs.
    pub async fn probe(
        &self,
        hostname: &str,
        origin: &str,
        fast: bool,
    ) -> Result<Option<Observation>, BusError> {
        let host_lock = self
            .busy
            .lock()
            .await
            .entry(hostname.to_string())
            .or_default()
            .clone();
        let _one_at_a_time = host_lock.lock().await;
        let _permit = self.permits.acquire().await.expect("never closed");
        let span = info_span!("probe", host = hostname);
        async {
            let hosts = self.bus.kv(&topology::HOSTS).await?;
            let read_error =
                |e: Box<dyn std::error::Error + Send + Sync>| BusError::js("reading host", e);
            let Some(entry) = hosts
                .entry(hostname)
                .await
                .map_err(|e| read_error(e.into()))?
                .filter(|e| e.operation == kv::Operation::Put)
            else {
                return Ok(None);
            };
            if fast && self.unchanged(hostname, &entry).await {
                let now = OffsetDateTime::now_utc();
                let seen = |previous: Observation| Observation {
                    probed_at: Some(now),
                    last_seen: Some(now),
                    sshable: Some(true),
                    probed_for: Some(origin.to_string()),
                    ..previous
                };
                // Nothing changed, so nothing for the history either.
                return write(&self.bus, &hosts, entry, seen, false).await;
            }
            let started = std::time::Instant::now();
            let result = self.run_probe(hostname).await;
            metrics::histogram!("fleetroll_probe_duration_seconds")
                .record(started.elapsed().as_secs_f64());
            metrics::counter!(
                "fleetroll_probes_total",
                "result" => if result.is_ok() { "ok" } else { "failed" }
            )
            .increment(1);
            let snapshot_id = match &result {
                Ok((report, ..)) => self.override_snapshot(hostname, &entry, report).await,
                Err(_) => None,
            };
            let now = OffsetDateTime::now_utc();
            // The probe's result applied to whatever the record is when it is
            // written: a record another probe changed meanwhile is built on,
            // not overwritten with a view derived from an older one.
            let apply = |previous: Observation| {
                let observation = match &result {
                    Ok((report, address, fingerprint)) => Observation {
                        host_key_fingerprint: Some(fingerprint.clone()),
                        override_snapshot_id: snapshot_id.clone(),
                        ..observe::observed(previous, report, Some(address.clone()), now)
                    },
                    Err((e, address)) => {
                        let sshable = match e {
                            ProbeError::Run(RunError::Resolve { .. } | RunError::Bus(_))
                            | ProbeError::Bus(_) => None,
                            ProbeError::Run(RunError::Ssh(e)) => match e.innermost() {
                                // It let us in, then never answered.
                                SshError::Timeout {
                                    stage: "command", ..
                                } => Some(true),
                                SshError::Connect { .. }
                                | SshError::Timeout { .. }
                                | SshError::HostKey(_)
                                | SshError::AuthRefused { .. }
                                | SshError::EncryptedKey { .. }
                                | SshError::NoIdentity
                                | SshError::Identity { .. } => Some(false),
                                _ => Some(true),
                            },
                            // Not connected to at all.
                            ProbeError::Run(
                                RunError::Pin { .. }
                                | RunError::Route(_)
                                | RunError::Config(_)
                                | RunError::KnownHosts(_),
                            ) => Some(false),
                            _ => Some(true),
                        };
                        observe::failed(previous, &e.to_string(), sshable, address.clone(), now)
                    }
                };
                Observation {
                    probed_for: Some(origin.to_string()),
                    ..observation
                }
            };
            if let Err((e, _)) = &result {
                warn!(error = %e, "probe failed");
            }
            write(&self.bus, &hosts, entry, apply, true).await
        }
        .instrument(span)
        .await
    }

    /// The snapshot of the override a probe read: the one already taken of
    /// these very contents, or a new one. None without an override, or when
    /// the probe read only part of it.
    async fn override_snapshot(
        &self,
        hostname: &str,
        entry: &kv::Entry,
        report: &probe::ProbeReport,
    ) -> Option<String> {
        let read = report.override_file.read()?;
        if read.truncated {
            return None;
        }
        if let Ok(known) = codec::from_cbor::<Observation>(&entry.value)
            && known.override_sha256.as_deref() == Some(read.sha256.as_str())
            && let Some(id) = known.override_snapshot_id
        {
            return Some(id);
        }
        let snapshot = OverrideSnapshot::take(hostname, "observed", Some(&read.content));
        match audit_log::store_snapshot(&self.bus, &snapshot).await {
            Ok(()) => Some(snapshot.id),
            Err(e) => {
                warn!(error = %e, "override snapshot not stored");
                None
            }
        }
    }

    /// Whether the host's state token is still the one its record holds
    /// (from a full probe that went well).
    async fn unchanged(&self, hostname: &str, entry: &kv::Entry) -> bool {
        let Some(known) = codec::from_cbor::<Observation>(&entry.value)
            .ok()
            .filter(|o| o.last_error.is_none())
            .and_then(|o| o.state_token)
        else {
            return false;
        };
        match self.run(hostname, probe::FAST_SCRIPT, 1 << 16).await {
            Ok((output, _, _)) => {
                let same = probe::state_token(&output.stdout) == known;
                if !same {
                    tracing::info!(state = %String::from_utf8_lossy(&output.stdout), "state changed since the last full probe");
                }
                same
            }
            Err(e) => {
                tracing::info!(error = %e.0, "fast check failed; probing fully");
                false
            }
        }
    }

    async fn run_probe(
        &self,
        hostname: &str,
    ) -> Result<(probe::ProbeReport, String, String), (ProbeError, Option<String>)> {
        let (output, address, fingerprint) = self.run(hostname, probe::SCRIPT, 1 << 20).await?;
        let report = probe::parse(&output.stdout).map_err(|e| (e.into(), Some(address.clone())))?;
        Ok((report, address, fingerprint))
    }

    /// Runs a script (on stdin to `sh -s`) on the host over its pooled
    /// connection, or a new one; says which address and host key answered.
    async fn run(
        &self,
        hostname: &str,
        script: &str,
        limit: usize,
    ) -> Result<(fleetroll_ssh::ExecOutput, String, String), (ProbeError, Option<String>)> {
        let Ran {
            output,
            address,
            fingerprint,
        } = self
            .pool
            .run(
                hostname,
                probe::COMMAND,
                script.as_bytes(),
                self.pool.settings().exec_timeout,
                limit,
            )
            .await
            .map_err(|(e, address)| (e.into(), address))?;
        let fail = |e: ProbeError| (e, Some(address.clone()));
        if output.exit_status != Some(0) {
            return Err(fail(ProbeError::Exit {
                status: output.exit_status,
                stderr: String::from_utf8_lossy(&output.stderr)
                    .chars()
                    .take(300)
                    .collect(),
            }));
        }
        Ok((output, address, fingerprint))
    }

    /// The SSH connections this prober uses.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Forgets a host's pinned key (after a reimage), so the next contact
    /// pins the new one.
    pub async fn repin(&self, hostname: &str) -> Result<(), BusError> {
        self.pool.repin(hostname).await
    }
}

/// Writes the observation `apply` makes of a host's current record, as a
/// compare-and-swap on `entry` (the record as last read), and appends it to
/// the host's history. A record changed meanwhile is read again and built
/// on; a record deleted meanwhile (the seed removed) stays deleted and
/// `None` is returned.
pub async fn record(
    bus: &Bus,
    hosts: &kv::Store,
    entry: kv::Entry,
    apply: impl Fn(Observation) -> Observation,
) -> Result<Option<Observation>, BusError> {
    write(bus, hosts, entry, apply, true).await
}

async fn write(
    bus: &Bus,
    hosts: &kv::Store,
    mut entry: kv::Entry,
    apply: impl Fn(Observation) -> Observation,
    history: bool,
) -> Result<Option<Observation>, BusError> {
    let write_error =
        |what: &str, e: Box<dyn std::error::Error + Send + Sync>| BusError::js(what, e);
    loop {
        let previous = codec::from_cbor(&entry.value)
            .unwrap_or_else(|_| Observation::discovered(&entry.key, OffsetDateTime::now_utc()));
        let observation = apply(previous);
        let bytes = codec::to_cbor(&observation);
        match hosts
            .update(&observation.hostname, bytes.clone().into(), entry.revision)
            .await
        {
            Ok(_) => {
                if history {
                    bus.js
                        .publish(subjects::host_history(&observation.hostname), bytes.into())
                        .await
                        .map_err(|e| write_error("writing host history", e.into()))?;
                }
                return Ok(Some(observation));
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                match hosts
                    .entry(&observation.hostname)
                    .await
                    .map_err(|e| write_error("reading host", e.into()))?
                {
                    Some(newer) if newer.operation == kv::Operation::Put => entry = newer,
                    _ => return Ok(None),
                }
            }
            Err(e) => return Err(write_error("writing host", e.into())),
        }
    }
}
