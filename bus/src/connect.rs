//! Connecting to NATS. async-nats reconnects on its own, forever; these
//! options only decide how long a first connect may take.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream;

use crate::topology::{BucketDef, StreamDef};

/// The default URL: the embedded server of `fleetroll up`.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// Errors reaching or using the bus. All of them are "infrastructure"
/// failures (exit code 2) for the CLI.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot reach NATS at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("JetStream {what} failed: {detail}")]
    JetStream { what: String, detail: String },
    #[error(
        "bucket `{bucket}` does not exist on this NATS: is the mesh set up? (`fleetroll up`, or any worker, creates it)"
    )]
    MissingBucket { bucket: &'static str },
    #[error("message in {place} is unreadable: {source}")]
    Decode {
        place: String,
        #[source]
        source: crate::codec::DecodeError,
    },
}

impl BusError {
    /// A JetStream call that failed while doing `what`.
    pub fn js(what: impl Into<String>, detail: impl ToString) -> Self {
        BusError::JetStream {
            what: what.into(),
            detail: detail.to_string(),
        }
    }
}

/// How a component connects.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub url: String,
    /// Shown by `nats server report connections`.
    pub name: String,
    /// Workers wait for NATS to come up; the CLI fails fast.
    pub wait_for_server: bool,
}

impl ConnectOptions {
    pub fn new(url: impl Into<String>, name: impl Into<String>) -> Self {
        ConnectOptions {
            url: url.into(),
            name: name.into(),
            wait_for_server: false,
        }
    }
}

/// A connection to the mesh: the core client and its JetStream context.
#[derive(Clone, Debug)]
pub struct Bus {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    url: String,
    /// Buckets opened so far: opening one is a request of its own, and hot
    /// paths (every probe, every query) use the same few.
    buckets: std::sync::Arc<std::sync::Mutex<HashMap<&'static str, jetstream::kv::Store>>>,
}

impl Bus {
    /// Connects to NATS.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), fleetroll_bus::connect::BusError> {
    /// use fleetroll_bus::connect::{Bus, ConnectOptions};
    /// let bus = Bus::connect(ConnectOptions::new("nats://127.0.0.1:4222", "my-bot")).await?;
    /// println!("connected to {}", bus.url());
    /// # Ok(()) }
    /// ```
    pub async fn connect(options: ConnectOptions) -> Result<Bus, BusError> {
        let mut nats = async_nats::ConnectOptions::new()
            .name(&options.name)
            .connection_timeout(Duration::from_secs(3))
            .max_reconnects(None);
        if options.wait_for_server {
            nats = nats.retry_on_initial_connect();
        }
        // A cluster is given as a comma-separated list of its servers.
        let servers: Vec<async_nats::ServerAddr> = options
            .url
            .split(',')
            .map(|u| u.trim().parse())
            .collect::<Result<_, _>>()
            .map_err(|e: std::io::Error| BusError::Unreachable {
                url: options.url.clone(),
                detail: format!("not a NATS URL list: {e}"),
            })?;
        let client = nats
            .connect(servers)
            .await
            .map_err(|e| BusError::Unreachable {
                url: options.url.clone(),
                detail: e.to_string(),
            })?;
        let js = jetstream::new(client.clone());
        Ok(Bus {
            client,
            js,
            url: options.url,
            buckets: Default::default(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every current entry of a bucket, decoded, by key, read in one pass
    /// (one consumer, not a request per key). Entries that do not decode
    /// are skipped: a reader must not fail on one bad record.
    pub async fn snapshot<T: crate::codec::Message>(
        &self,
        bucket: &BucketDef,
    ) -> Result<std::collections::BTreeMap<String, T>, BusError> {
        use futures::StreamExt;
        let store = self.kv(bucket).await?;
        let read_error =
            |e: &dyn std::fmt::Display| BusError::js(format!("reading bucket {}", bucket.name), e);
        let mut entries = std::collections::BTreeMap::new();
        if self.bucket_state(bucket).await?.messages == 0 {
            return Ok(entries);
        }
        let mut watch = store
            .watch_all_from_revision(1)
            .await
            .map_err(|e| read_error(&e))?;
        while let Some(entry) = watch.next().await {
            let entry = entry.map_err(|e| read_error(&e))?;
            match entry.operation {
                jetstream::kv::Operation::Put => {
                    if let Ok(value) = crate::codec::from_cbor::<T>(&entry.value) {
                        entries.insert(entry.key.clone(), value);
                    }
                }
                _ => {
                    entries.remove(&entry.key);
                }
            }
            // The replayed backlog ends with the newest entry, `delta == 0`.
            if entry.delta == 0 {
                break;
            }
        }
        Ok(entries)
    }

    /// A bucket's state now: its message count and last revision. (The
    /// `status` of an opened `kv::Store` is what it was when opened.)
    pub async fn bucket_state(
        &self,
        bucket: &BucketDef,
    ) -> Result<jetstream::stream::State, BusError> {
        let stream = self
            .js
            .get_stream(bucket.stream_name())
            .await
            .map_err(|e| BusError::js(format!("reading bucket {}", bucket.name), e))?;
        Ok(stream.cached_info().state.clone())
    }

    /// Every message a stream holds on `subject`, oldest first.
    pub async fn stored(
        &self,
        stream: &StreamDef,
        subject: String,
    ) -> Result<Vec<bytes::Bytes>, BusError> {
        use futures::StreamExt;
        let read_error =
            |e: &dyn std::fmt::Display| BusError::js(format!("reading {}", stream.name), e);
        let consumer = self
            .js
            .get_stream(stream.name)
            .await
            .map_err(|e| read_error(&e))?
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                filter_subject: subject,
                ..Default::default()
            })
            .await
            .map_err(|e| read_error(&e))?;
        let pending = consumer.cached_info().num_pending;
        let mut messages = consumer.messages().await.map_err(|e| read_error(&e))?;
        let mut payloads = Vec::new();
        while (payloads.len() as u64) < pending {
            match messages.next().await {
                Some(Ok(message)) => payloads.push(message.payload.clone()),
                Some(Err(e)) => return Err(read_error(&e)),
                None => break,
            }
        }
        Ok(payloads)
    }

    /// Opens an existing bucket.
    pub async fn kv(&self, bucket: &BucketDef) -> Result<jetstream::kv::Store, BusError> {
        let opened = self
            .buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(bucket.name)
            .cloned();
        if let Some(store) = opened {
            return Ok(store);
        }
        let store = self.js.get_key_value(bucket.name).await.map_err(|e| {
            if matches!(e.kind(), jetstream::context::KeyValueErrorKind::GetBucket) {
                BusError::MissingBucket {
                    bucket: bucket.name,
                }
            } else {
                BusError::js(format!("opening bucket {}", bucket.name), e)
            }
        })?;
        self.buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(bucket.name, store.clone());
        Ok(store)
    }
}
