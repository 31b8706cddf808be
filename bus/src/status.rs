//! The mesh at a glance: NATS, every stream and bucket, every worker kind's
//! live replicas.

use async_nats::jetstream::context::GetStreamErrorKind;
use futures::StreamExt;
use serde::Serialize;
use time::OffsetDateTime;

use crate::codec;
use crate::connect::{Bus, BusError};
use crate::messages::set_aside::SetAside;
use crate::messages::{Heartbeat, WorkerKind};
use crate::topology;

#[derive(Debug, Clone, Serialize)]
pub struct MeshStatus {
    pub nats: NatsStatus,
    pub streams: Vec<StoreStatus>,
    pub buckets: Vec<StoreStatus>,
    pub workers: Vec<KindStatus>,
    /// Messages the mesh gave up on (SPEC 10: set aside and shown).
    pub set_aside: SetAsideStatus,
}

/// How many messages were given up on, and the latest few.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SetAsideStatus {
    pub total: u64,
    /// Newest first, at most [`SET_ASIDE_SHOWN`].
    pub latest: Vec<SetAside>,
}

/// How many set-aside messages `fleetroll status` shows.
pub const SET_ASIDE_SHOWN: u64 = 5;

#[derive(Debug, Clone, Serialize)]
pub struct NatsStatus {
    pub url: String,
    pub reachable: bool,
    pub version: String,
    pub server_name: String,
    pub clock_skew_ms: i64,
    /// Whether this connection is encrypted (the embedded default is
    /// plaintext, on loopback only).
    pub tls: bool,
}

/// A stream or bucket; `exists` is false when nothing has created it yet.
#[derive(Debug, Clone, Serialize)]
pub struct StoreStatus {
    pub name: String,
    pub exists: bool,
    pub messages: u64,
    pub bytes: u64,
    pub replicas: usize,
    /// Its size limit; none when it has none.
    pub max_bytes: Option<u64>,
    /// What happens when it is full: "old" (the oldest go) or "new" (new
    /// writes are refused).
    pub discard: String,
}

impl StoreStatus {
    /// How full it is, 0 to 1; none without a limit.
    pub fn usage(&self) -> Option<f64> {
        self.max_bytes
            .filter(|&m| m > 0)
            .map(|m| self.bytes as f64 / m as f64)
    }

    /// Whether it is past [`topology::STORE_WARNING`] of its limit.
    pub fn nearly_full(&self) -> bool {
        self.usage().is_some_and(|u| u >= topology::STORE_WARNING)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct KindStatus {
    pub kind: WorkerKind,
    pub live: Vec<ReplicaStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplicaStatus {
    pub instance: String,
    pub hostname: String,
    pub pid: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_heartbeat: OffsetDateTime,
    pub heartbeat_age_ms: i64,
    pub commands_handled: u64,
    pub clock_skew_ms: i64,
}

/// Gathers the status of the mesh `bus` is connected to.
pub async fn gather(bus: &Bus) -> Result<MeshStatus, BusError> {
    let info = bus.client.server_info();
    let skew_ms = crate::clock::measure_skew_ms(bus).await.unwrap_or(0);
    let mut streams = Vec::new();
    for def in topology::STREAMS {
        streams.push(store_status(bus, def.name, def.name).await?);
    }
    let mut buckets = Vec::new();
    for def in topology::BUCKETS {
        buckets.push(store_status(bus, def.name, &def.stream_name()).await?);
    }
    let beats = heartbeats(bus, skew_ms).await?;
    let set_aside = set_aside(bus).await?;
    let workers = WorkerKind::ALL
        .into_iter()
        .map(|kind| KindStatus {
            kind,
            live: beats
                .iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, r)| r.clone())
                .collect(),
        })
        .collect();
    Ok(MeshStatus {
        nats: NatsStatus {
            url: bus.url().to_string(),
            reachable: true,
            version: info.version.clone(),
            server_name: info.server_name.clone(),
            clock_skew_ms: skew_ms,
            tls: bus.is_tls(),
        },
        streams,
        buckets,
        workers,
        set_aside,
    })
}

/// The set-aside stream's count and its latest advisories.
async fn set_aside(bus: &Bus) -> Result<SetAsideStatus, BusError> {
    let name = topology::SET_ASIDE.name;
    let info = format!("$JS.API.STREAM.INFO.{name}");
    let mut stream = match bus
        .unless_refused("the set-aside stream", &info, bus.js.get_stream(name))
        .await?
    {
        Ok(stream) => stream,
        // Not set up yet: nothing was set aside.
        Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(_)) => {
            return Ok(SetAsideStatus::default());
        }
        Err(e) => return Err(BusError::js("opening the set-aside stream", e)),
    };
    let state = stream
        .info()
        .await
        .map_err(|e| BusError::js("reading the set-aside stream", e))?
        .state
        .clone();
    let mut latest = Vec::new();
    let first = state.first_sequence.max(1);
    let mut seq = state.last_sequence;
    while seq >= first && (latest.len() as u64) < SET_ASIDE_SHOWN {
        if let Ok(message) = stream.get_raw_message(seq).await
            && let Ok(advisory) = SetAside::parse(&message.payload)
        {
            latest.push(advisory);
        }
        seq -= 1;
    }
    Ok(SetAsideStatus {
        total: state.messages,
        latest,
    })
}

async fn store_status(bus: &Bus, name: &str, stream: &str) -> Result<StoreStatus, BusError> {
    let info = format!("$JS.API.STREAM.INFO.{stream}");
    let what = format!("stream info {stream}");
    match bus
        .unless_refused(&what, &info, bus.js.get_stream(stream))
        .await?
    {
        Ok(mut s) => {
            let info = s
                .info()
                .await
                .map_err(|e| BusError::js(format!("stream info {stream}"), e))?;
            Ok(StoreStatus {
                name: name.to_string(),
                exists: true,
                messages: info.state.messages,
                bytes: info.state.bytes,
                replicas: info.config.num_replicas,
                max_bytes: u64::try_from(info.config.max_bytes).ok(),
                discard: match info.config.discard {
                    async_nats::jetstream::stream::DiscardPolicy::Old => "old",
                    async_nats::jetstream::stream::DiscardPolicy::New => "new",
                }
                .to_string(),
            })
        }
        Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(_)) => Ok(StoreStatus {
            name: name.to_string(),
            exists: false,
            messages: 0,
            bytes: 0,
            replicas: 0,
            max_bytes: None,
            discard: String::new(),
        }),
        Err(e) => Err(BusError::js(format!("stream info {stream}"), e)),
    }
}

/// Live replicas (heartbeat within the liveness window), by kind.
async fn heartbeats(bus: &Bus, skew_ms: i64) -> Result<Vec<(WorkerKind, ReplicaStatus)>, BusError> {
    let workers = match bus.kv(&topology::WORKERS).await {
        Ok(workers) => workers,
        Err(BusError::MissingBucket { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut keys = workers
        .keys()
        .await
        .map_err(|e| BusError::js("listing heartbeats", e))?;
    let server_now = OffsetDateTime::now_utc() - time::Duration::milliseconds(skew_ms);
    let mut live = Vec::new();
    while let Some(key) = keys.next().await {
        let Ok(key) = key else { continue };
        let Ok(Some(entry)) = workers.entry(key).await else {
            continue;
        };
        if entry.operation != async_nats::jetstream::kv::Operation::Put {
            continue;
        }
        let Ok(beat) = codec::from_cbor::<Heartbeat>(&entry.value) else {
            continue;
        };
        let created: OffsetDateTime = entry.created;
        let age = server_now - created;
        if age > topology::LIVENESS_WINDOW {
            continue;
        }
        live.push((
            beat.kind,
            ReplicaStatus {
                instance: beat.instance,
                hostname: beat.hostname,
                pid: beat.pid,
                started_at: beat.started_at,
                last_heartbeat: created,
                heartbeat_age_ms: age.whole_milliseconds() as i64,
                commands_handled: beat.commands_handled,
                clock_skew_ms: beat.clock_skew_ms,
            },
        ));
    }
    live.sort_by(|a, b| (a.0, &a.1.instance).cmp(&(b.0, &b.1.instance)));
    Ok(live)
}

/// How many replicas of `kind` are alive now.
pub async fn live_replicas(bus: &Bus, kind: WorkerKind) -> Result<usize, BusError> {
    let skew_ms = crate::clock::measure_skew_ms(bus).await.unwrap_or(0);
    Ok(heartbeats(bus, skew_ms)
        .await?
        .iter()
        .filter(|(k, _)| *k == kind)
        .count())
}
