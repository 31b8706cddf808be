//! Idempotent creation of every stream, bucket and worker consumer, by the
//! set-up (`fleetroll setup` as the `admin` NATS user; `fleetroll up` does
//! it for its embedded server). Components that run only [`check`] that
//! it happened: their NATS users may not create or reconfigure streams.

use async_nats::jetstream::{consumer, stream};

use crate::connect::{Bus, BusError};
use crate::messages::WorkerKind;
use crate::topology::{self, BucketDef, JobQueue, Storage, StreamDef};

/// How many copies of each stream and bucket the server keeps: 1 for the
/// embedded single node, 3 on a cluster.
#[derive(Debug, Clone, Copy)]
pub struct Replicas(pub usize);

impl Default for Replicas {
    fn default() -> Self {
        Replicas(1)
    }
}

fn stream_config(def: &StreamDef, replicas: Replicas, storage: Storage) -> stream::Config {
    stream::Config {
        name: def.name.to_string(),
        subjects: def.subjects.iter().map(|s| s.to_string()).collect(),
        description: Some(def.description.to_string()),
        max_age: def.max_age,
        storage: stream::StorageType::File,
        num_replicas: replicas.0,
        duplicate_window: topology::DUPLICATE_WINDOW,
        deny_delete: def.immutable,
        deny_purge: def.immutable,
        max_messages_per_subject: if def.per_subject > 0 {
            def.per_subject
        } else {
            -1
        },
        allow_direct: true,
        max_bytes: storage.limit(def.share),
        discard: if def.discard_old {
            stream::DiscardPolicy::Old
        } else {
            stream::DiscardPolicy::New
        },
        retention: if def.work_queue {
            stream::RetentionPolicy::WorkQueue
        } else {
            stream::RetentionPolicy::Limits
        },
        ..Default::default()
    }
}

/// A bucket's stream, as async-nats makes it for a KV bucket but that it
/// refuses `Nats-Rollup` headers: any credential that may write one key of
/// a bucket could otherwise wipe the whole bucket with one message (the
/// trust root and every revocation with a revocation). fleetroll never
/// purges a key; it deletes it (a marker, history kept).
fn bucket_config(def: &BucketDef, replicas: Replicas, storage: Storage) -> stream::Config {
    stream::Config {
        name: def.stream_name(),
        description: Some(def.description.to_string()),
        subjects: vec![format!("$KV.{}.>", def.name)],
        max_messages_per_subject: def.history,
        max_bytes: storage.limit(def.share),
        max_age: def.max_age,
        storage: stream::StorageType::File,
        num_replicas: replicas.0,
        allow_rollup: false,
        deny_delete: true,
        deny_purge: false,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    }
}

/// The durable pull consumer shared by every replica of one worker kind.
pub fn worker_consumer_config(kind: WorkerKind) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(topology::consumer_name(kind)),
        description: Some(format!("commands for {kind} workers")),
        filter_subject: crate::subjects::commands_for(kind),
        deliver_policy: consumer::DeliverPolicy::All,
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: topology::TAKEOVER_WAIT,
        max_deliver: topology::MAX_DELIVER,
        backoff: topology::REDELIVERY_BACKOFF.to_vec(),
        ..Default::default()
    }
}

/// The durable pull consumer of a work queue.
pub fn job_consumer_config(queue: &JobQueue) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(queue.consumer.to_string()),
        description: Some(format!("jobs of {}", queue.stream.name)),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: topology::TAKEOVER_WAIT,
        max_deliver: queue.max_deliver,
        backoff: topology::REDELIVERY_BACKOFF.to_vec(),
        max_ack_pending: queue.max_ack_pending,
        ..Default::default()
    }
}

/// Creates whatever is missing of the streams and buckets, and the worker
/// consumers. Streams and buckets that exist keep their replica count (the
/// first component to start decides it, and a replica started later with
/// other settings never scales a cluster's streams down), but take the
/// size limits of `storage` (where the server lets this user change them:
/// nobody may reconfigure the audit log or the snapshots at run time).
///
/// Consumers are created here rather than when a worker first starts so that
/// commands sent before any replica of a kind ever ran are still delivered.
pub async fn ensure(bus: &Bus, replicas: Replicas, storage: Storage) -> Result<(), BusError> {
    for def in topology::STREAMS {
        let config = stream_config(&def, replicas, storage);
        ensure_stream(bus, &def, config).await?;
    }
    for def in topology::BUCKETS {
        ensure_bucket(bus, &def, replicas, storage).await?;
    }
    for kind in WorkerKind::ALL {
        worker_consumer(bus, kind).await?;
    }
    for queue in topology::JOB_QUEUES {
        job_consumer(bus, &queue).await?;
    }
    Ok(())
}

/// Whether the set-up made every stream and bucket: the first one missing
/// is [`BusError::NotSetUp`]. A worker checks before it starts, and waits
/// for the set-up rather than making streams of its own.
pub async fn check(bus: &Bus) -> Result<(), BusError> {
    let names = topology::STREAMS
        .iter()
        .map(|def| def.name.to_string())
        .chain(topology::BUCKETS.iter().map(|def| def.stream_name()));
    for name in names {
        if let Err(e) = bus.js.get_stream(&name).await {
            return Err(if crate::connect::stream_not_found(&e) {
                BusError::NotSetUp { stream: name }
            } else {
                BusError::js(format!("reading stream {name}"), e)
            });
        }
    }
    Ok(())
}

/// Creates the stream, or brings an existing one's size limit and discard
/// policy to `config`'s.
async fn ensure_stream(bus: &Bus, def: &StreamDef, config: stream::Config) -> Result<(), BusError> {
    // A user that may not create streams is told so at once: the server
    // drops a refused request, which would otherwise only time out.
    let subject = format!("$JS.API.STREAM.CREATE.{}", def.name);
    let mut stream = bus
        .unless_refused(
            &format!("creating stream {}", def.name),
            &subject,
            bus.js.get_or_create_stream(config.clone()),
        )
        .await?
        .map_err(|e| BusError::js(format!("creating stream {}", def.name), e))?;
    resize(bus, &format!("stream {}", def.name), &mut stream, |c| {
        (c.max_bytes, c.discard) = (config.max_bytes, config.discard)
    })
    .await
}

/// Updates a stream's configuration as `change` says, when that changes
/// it. A protected stream the server does not let this user reconfigure
/// keeps its limits (with a warning): whoever holds that right sets them.
async fn resize(
    bus: &Bus,
    what: &str,
    stream: &mut stream::Stream,
    change: impl FnOnce(&mut stream::Config),
) -> Result<(), BusError> {
    let current = stream
        .info()
        .await
        .map_err(|e| BusError::js(format!("reading {what}"), e))?
        .config
        .clone();
    let mut wanted = current.clone();
    change(&mut wanted);
    if wanted == current {
        return Ok(());
    }
    let subject = format!("$JS.API.STREAM.UPDATE.{}", current.name);
    match bus
        .unless_refused(what, &subject, bus.js.update_stream(wanted))
        .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(BusError::js(format!("resizing {what}"), e)),
        Err(BusError::NotPermitted { .. }) => {
            tracing::warn!(
                "{what} keeps its configuration (size limit, rollups): these credentials may not reconfigure it"
            );
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Opens the durable consumer of one worker kind's commands.
pub async fn worker_consumer(
    bus: &Bus,
    kind: WorkerKind,
) -> Result<consumer::PullConsumer, BusError> {
    open_consumer(bus, topology::COMMANDS.name, worker_consumer_config(kind)).await
}

/// Opens the durable consumer of a work queue.
pub async fn job_consumer(bus: &Bus, queue: &JobQueue) -> Result<consumer::PullConsumer, BusError> {
    open_consumer(bus, queue.stream.name, job_consumer_config(queue)).await
}

/// Creates the consumer, or brings one that exists up to date: one an
/// older version made keeps its `ack_wait` otherwise, and with it how long
/// a dead replica's work waits for another.
async fn open_consumer(
    bus: &Bus,
    stream: &str,
    config: consumer::pull::Config,
) -> Result<consumer::PullConsumer, BusError> {
    bus.js
        .get_stream(stream)
        .await
        .map_err(|e| BusError::js(format!("opening {stream}"), e))?
        .create_consumer(config)
        .await
        .map_err(|e| BusError::js(format!("opening the consumer of {stream}"), e))
}

async fn ensure_bucket(
    bus: &Bus,
    def: &BucketDef,
    replicas: Replicas,
    storage: Storage,
) -> Result<(), BusError> {
    let config = bucket_config(def, replicas, storage);
    if bus.js.get_key_value(def.name).await.is_err() {
        let what = format!("creating bucket {}", def.name);
        let subject = format!("$JS.API.STREAM.CREATE.{}", def.stream_name());
        bus.unless_refused(&what, &subject, bus.js.create_stream(config.clone()))
            .await?
            .map_err(|e| BusError::js(what, e))?;
    }
    let mut stream = bus
        .js
        .get_stream(def.stream_name())
        .await
        .map_err(|e| BusError::js(format!("opening bucket {}", def.name), e))?;
    // A bucket an older version made still allows rollups: closed here
    // where these credentials may reconfigure it.
    resize(bus, &format!("bucket {}", def.name), &mut stream, |c| {
        c.max_bytes = config.max_bytes;
        c.allow_rollup = false;
    })
    .await
}
