//! What each worker kind serves, as one operation timed end to end, each
//! something only that kind does:
//!
//! - prober: `HostRefresh` of one lab host: the command, then a full probe
//!   over SSH (a probe job), answered once the observation is recorded;
//! - gatekeeper: a host's new observation (override present, then gone),
//!   until the host's drift verdict says so;
//! - orchestrator: `RolloutCreate`, then `rollouts.get` of the new rollout;
//! - auditor: `TokenRevoke` of an unknown token, then the command's audit
//!   record in the log and an `audit.list` answered from an index that
//!   holds it.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use async_nats::jetstream::kv;
use fleetroll_bus::audit_log;
use fleetroll_bus::codec::{self, Message};
use fleetroll_bus::connect::Bus;
use fleetroll_bus::messages::WorkerKind;
use fleetroll_bus::messages::audit::{AuditList, AuditQuery};
use fleetroll_bus::messages::command::{Command, Outcome, Reply, RevokeTarget, Verdict};
use fleetroll_bus::messages::host::{Drift, DriftType, Observation};
use fleetroll_bus::messages::rollout::{GateConfig, RolloutId, RolloutPlan, RolloutStatus};
use fleetroll_bus::query::{self, QueryFailure};
use fleetroll_bus::send;
use fleetroll_bus::subjects::{self, queries};
use fleetroll_bus::topology;
use futures::StreamExt;
use time::OffsetDateTime;
use tokio::sync::broadcast;

use crate::own_mesh::OwnMesh;

pub struct Ops {
    pub kind: WorkerKind,
    relops: Bus,
    worker: Bus,
    credential: fleetroll_bus::token::Credential,
    lab_hosts: Vec<String>,
    /// Makes this run's token ids and rollouts its own.
    run_id: String,
    outcomes: Changes,
    /// The gatekeeper's verdicts, for its operation.
    drift: Option<Changes>,
}

/// What an operation found out besides its answer.
pub struct Served {
    /// Its command was redelivered: the replica that first took it died
    /// before it was done.
    pub redelivered: bool,
}

/// Every change to a bucket as it happens, for the operations to wait on:
/// one watch for them all, as a watch is a consumer on the server and one
/// per operation would pile up faster than the server lets them go.
struct Changes {
    store: kv::Store,
    entries: broadcast::Sender<kv::Entry>,
    task: tokio::task::JoinHandle<()>,
}

impl Changes {
    async fn watch(store: kv::Store) -> anyhow::Result<Changes> {
        let mut watch = store.watch_all().await?;
        let (entries, _) = broadcast::channel(4096);
        let tx = entries.clone();
        let task = tokio::spawn(async move {
            while let Some(Ok(entry)) = watch.next().await {
                let _ = tx.send(entry);
            }
        });
        Ok(Changes {
            store,
            entries,
            task,
        })
    }

    /// Changes from now on: taken before the write they are to show.
    fn subscribe(&self) -> Waiter<'_> {
        Waiter {
            store: &self.store,
            changes: self.entries.subscribe(),
        }
    }
}

impl Drop for Changes {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Waiter<'a> {
    store: &'a kv::Store,
    changes: broadcast::Receiver<kv::Entry>,
}

impl Waiter<'_> {
    /// The first change of `key` that `wanted` takes, before `deadline`.
    async fn change_of(
        &mut self,
        key: &str,
        deadline: Instant,
        wanted: impl Fn(&kv::Entry) -> bool,
    ) -> anyhow::Result<kv::Entry> {
        let wait = deadline.saturating_duration_since(Instant::now());
        tokio::time::timeout(wait, async {
            loop {
                match self.changes.recv().await {
                    Ok(entry) if entry.key == key && wanted(&entry) => return Ok(entry),
                    Ok(_) => {}
                    // Changes came faster than they were looked at, and
                    // some were dropped: the entry as it is now tells.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if let Some(entry) = self.store.entry(key).await?
                            && wanted(&entry)
                        {
                            return Ok(entry);
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => bail!("the watch ended"),
                }
            }
        })
        .await
        .with_context(|| format!("no change of {key} within {wait:?}"))?
    }
}

/// The host whose drift operations in `slot` flip.
fn drift_host(slot: usize) -> String {
    format!("failover-{slot}.fleetroll.test")
}

impl Ops {
    /// `slots`: operations that may run at once (each gatekeeper slot has a
    /// host of its own, created here).
    pub async fn new(
        kind: WorkerKind,
        mesh: &OwnMesh,
        lab_hosts: &[String],
        slots: usize,
    ) -> anyhow::Result<Ops> {
        if kind == WorkerKind::Prober && lab_hosts.is_empty() {
            bail!("the prober's operation refreshes lab hosts: none given");
        }
        if kind == WorkerKind::Gatekeeper {
            let hosts = mesh.worker.kv(&topology::HOSTS).await?;
            for slot in 0..slots {
                let name = drift_host(slot);
                let record = Observation::discovered(&name, OffsetDateTime::now_utc());
                match hosts.create(&name, codec::to_cbor(&record).into()).await {
                    Ok(_) => {}
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                    Err(e) => bail!("creating {name}: {e}"),
                }
            }
        }
        let drift = match kind {
            WorkerKind::Gatekeeper => {
                Some(Changes::watch(mesh.worker.kv(&topology::DRIFT).await?).await?)
            }
            _ => None,
        };
        Ok(Ops {
            kind,
            relops: mesh.relops.clone(),
            worker: mesh.worker.clone(),
            credential: mesh.credential.clone(),
            lab_hosts: lab_hosts.to_vec(),
            run_id: uuid::Uuid::new_v4().simple().to_string()[..8].to_string(),
            outcomes: Changes::watch(mesh.relops.kv(&topology::OUTCOMES).await?).await?,
            drift,
        })
    }

    /// What the operation is, for the report.
    pub fn describe(&self) -> &'static str {
        match self.kind {
            WorkerKind::Prober => "`host refresh` of a lab host (full probe over SSH)",
            WorkerKind::Gatekeeper => "a new observation, until the host's drift shows it",
            WorkerKind::Orchestrator => "`rollout create`, then `rollouts.get` of it",
            WorkerKind::Auditor => "`auth revoke`, then its audit record, indexed for `audit.list`",
        }
    }

    /// Runs operation number `seq` in `slot`, giving up at `deadline`.
    pub async fn run(&self, slot: usize, seq: usize, deadline: Instant) -> anyhow::Result<Served> {
        match self.kind {
            WorkerKind::Prober => {
                let host = &self.lab_hosts[seq % self.lab_hosts.len()];
                let command = Command::HostRefresh {
                    hostnames: vec![host.clone()],
                    all: false,
                    fast: false,
                };
                match self.send(command, deadline).await? {
                    (_, Reply::Refreshed { hosts }, served) if hosts.iter().all(|h| h.ok) => {
                        Ok(served)
                    }
                    (_, other, _) => bail!("refresh of {host}: {other:?}"),
                }
            }
            WorkerKind::Gatekeeper => {
                self.flip_drift(&drift_host(slot), deadline).await?;
                Ok(Served { redelivered: false })
            }
            WorkerKind::Orchestrator => {
                let plan = RolloutPlan {
                    target: format!("hostname:failover-{}-{seq}", self.run_id),
                    canary: 1,
                    batch_pct: 10,
                    change: "PUPPET_BRANCH=failover_bench".into(),
                    gates: GateConfig::default(),
                    skip: Vec::new(),
                };
                let (_, Reply::RolloutCreated { id }, served) =
                    self.send(Command::RolloutCreate { plan }, deadline).await?
                else {
                    bail!("rollout create answered something else");
                };
                let _: RolloutStatus = self
                    .ask(queries::ROLLOUTS_GET, &RolloutId { id }, deadline)
                    .await?;
                Ok(served)
            }
            WorkerKind::Auditor => {
                let command = Command::TokenRevoke {
                    target: RevokeTarget::Token {
                        jti: format!("failover-{}-{seq}", self.run_id),
                    },
                    reason: "fleetroll-bench failover".into(),
                };
                let (id, _, served) = self.send(command, deadline).await?;
                let record = subjects::audit_command(&id);
                while !audit_log::holds(&self.relops, &record).await? {
                    if Instant::now() > deadline {
                        bail!("no audit record of {id}");
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                // `audit.list` answers once the auditor's index holds every
                // record the log held when asked: the newest one will do.
                let newest = AuditQuery {
                    limit: 1,
                    ..Default::default()
                };
                let _: AuditList = self.ask(queries::AUDIT_LIST, &newest, deadline).await?;
                Ok(served)
            }
        }
    }

    /// Sends `command` as the CLI does; it must be done: its id, what it
    /// answered and whether it was redelivered.
    async fn send(
        &self,
        command: Command,
        deadline: Instant,
    ) -> anyhow::Result<(String, Reply, Served)> {
        let wait = deadline.saturating_duration_since(Instant::now());
        let envelope = send::envelope(&self.credential, command, wait);
        let mut outcomes = self.outcomes.subscribe();
        send::publish(&self.relops, &envelope).await?;
        let entry = outcomes
            .change_of(&envelope.id, deadline, |e| {
                e.operation == kv::Operation::Put
            })
            .await?;
        let outcome: Outcome = codec::from_cbor(&entry.value)?;
        let served = Served {
            redelivered: outcome.delivery > 1,
        };
        match outcome.verdict {
            Verdict::Done { reply } => Ok((outcome.command_id, reply, served)),
            other => bail!("{}: {other:?}", outcome.command),
        }
    }

    /// Asks a query as the CLI does, again while no replica serves it (the
    /// only one was killed), as an operator would.
    async fn ask<P: Message, R: Message>(
        &self,
        endpoint: &str,
        params: &P,
        deadline: Instant,
    ) -> anyhow::Result<R> {
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            match query::request(&self.relops, &self.credential.token, endpoint, params, wait).await
            {
                Ok(answer) => return Ok(answer),
                Err(QueryFailure::NoResponders { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => bail!("{endpoint}: {e}"),
            }
        }
    }

    /// Records an observation of `host` with its override flipped, the way
    /// the prober records a probe, and waits until its drift verdict has
    /// followed.
    async fn flip_drift(&self, host: &str, deadline: Instant) -> anyhow::Result<()> {
        let hosts = self.worker.kv(&topology::HOSTS).await?;
        // Watching first: the verdict cannot come before it is looked for.
        let mut verdicts = self.drift.as_ref().context("no drift watch")?.subscribe();
        let entry = hosts
            .entry(host)
            .await?
            .with_context(|| format!("{host} is not in the inventory"))?;
        let now = OffsetDateTime::now_utc();
        let recorded = fleetroll_prober::fleet::record(&self.worker, &hosts, entry, |previous| {
            let overridden = previous.override_present == Some(true);
            Observation {
                probed_at: Some(now),
                last_seen: Some(now),
                override_present: Some(!overridden),
                ..previous
            }
        })
        .await?
        .with_context(|| format!("{host} left the inventory"))?;
        let want = recorded.override_present == Some(true);
        let shows = |entry: &kv::Entry| {
            codec::from_cbor::<Drift>(&entry.value)
                .is_ok_and(|verdict| verdict.types.contains(&DriftType::Override) == want)
        };
        // Replicas judge on their own: one that lagged may have written a
        // verdict on an older observation that already agrees with this
        // one, and then no replica writes it again.
        if let Some(entry) = self.worker.kv(&topology::DRIFT).await?.entry(host).await?
            && shows(&entry)
        {
            return Ok(());
        }
        let waited = verdicts.change_of(host, deadline, shows).await;
        if let Err(e) = waited {
            let drift = self.worker.kv(&topology::DRIFT).await?;
            let now: Option<Drift> = drift
                .get(host)
                .await?
                .and_then(|bytes| codec::from_cbor(&bytes).ok());
            let observed: Option<Observation> = hosts
                .get(host)
                .await?
                .and_then(|bytes| codec::from_cbor(&bytes).ok());
            bail!(
                "the drift verdict of {host}, override {want}: {e:#}; now {:?} for override {:?}",
                now.map(|d| d.types),
                observed.and_then(|o| o.override_present)
            );
        }
        Ok(())
    }
}
