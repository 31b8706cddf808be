//! The auditor's two loops: events in, records out (the chain); and the
//! audit stream in, the local index kept current.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::Message;
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::stream::RawMessageErrorKind;
use fleetroll_bus::audit_log;
use fleetroll_bus::codec;
use fleetroll_bus::connect::{Bus, BusError};
use fleetroll_bus::messages::audit::AuditRecord;
use fleetroll_bus::messages::audit::{AuditList, AuditQuery, ListedRecord, payload_hash};
use fleetroll_bus::messages::command::CommandEnvelope;
use fleetroll_bus::messages::event::Event;
use fleetroll_bus::messages::set_aside::SetAside;
use fleetroll_bus::setup;
use fleetroll_bus::token::SigningKey;
use fleetroll_bus::token::unverified_claims;
use fleetroll_bus::topology;
use fleetroll_bus::topology::JobQueue;
use fleetroll_bus::worker;
use futures::StreamExt;
use tokio::sync::watch;
use tracing::{Instrument, info_span, warn};

use crate::append::{Appended, Appender};
use crate::index::{Index, IndexError};
use crate::record::{self, SetAsideMessage};

/// How long a query waits for the index to reach the stream's end.
const CATCH_UP_WAIT: Duration = Duration::from_secs(10);
/// Records indexed per transaction while catching up.
const BATCH: usize = 500;

/// Takes events from the audit feed, and messages given up on from the
/// set-aside feed, and writes their records, until the bus fails for good.
pub async fn write_records(bus: Bus, key: Arc<SigningKey>) -> Result<(), BusError> {
    tokio::try_join!(
        follow(&bus, &key, Feed::Events),
        follow(&bus, &key, Feed::SetAside),
    )
    .map(|_| ())
}

/// What the auditor records from.
#[derive(Debug, Clone, Copy)]
enum Feed {
    /// Every event ([`topology::AUDIT_FEED`]).
    Events,
    /// Every message given up on ([`topology::SET_ASIDE_FEED`]).
    SetAside,
}

impl Feed {
    fn queue(self) -> &'static JobQueue {
        match self {
            Feed::Events => &topology::AUDIT_FEED,
            Feed::SetAside => &topology::SET_ASIDE_FEED,
        }
    }
}

/// One feed, one message at a time, asked for once the last is written.
async fn follow(bus: &Bus, key: &Arc<SigningKey>, feed: Feed) -> Result<(), BusError> {
    let mut appender = Appender::new(bus.clone(), key.clone());
    loop {
        let consumer = setup::job_consumer(bus, feed.queue()).await?;
        loop {
            let message = match worker::take_one(&consumer).await {
                Ok(message) => message,
                Err(e) => {
                    warn!(feed = feed.queue().consumer, error = %e, "pulling");
                    break;
                }
            };
            let drafted = match draft(bus, feed, &message).await {
                Ok(Ok(drafted)) => drafted,
                Ok(Err(unreadable)) => {
                    worker::set_aside(&message, &unreadable).await;
                    continue;
                }
                Err(e) => {
                    warn!(error = %e, "looking up what to record; it comes again");
                    worker::retry_later(&message).await;
                    continue;
                }
            };
            if let Some((subject, draft)) = drafted {
                let span = info_span!("audit", subject = %subject, action = %draft.action);
                let appending = appender.append(&subject, draft).instrument(span);
                match worker::with_progress(&message, appending).await {
                    Ok(Appended::Written { .. } | Appended::AlreadyThere) => {}
                    Err(e) => {
                        warn!(error = %e, "audit record not written; it comes again");
                        worker::retry_later(&message).await;
                        continue;
                    }
                }
            }
            if let Err(e) = message.ack().await {
                warn!(error = %e, "ack failed; its record is kept once all the same");
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What a feed's message is to be recorded as: nothing (an event that is
/// not audited), a record, or (inner error) unreadable.
type Drafted = Result<Option<(String, AuditRecord)>, String>;

async fn draft(bus: &Bus, feed: Feed, message: &Message) -> Result<Drafted, BusError> {
    match feed {
        Feed::Events => Ok(match codec::from_cbor::<Event>(&message.payload) {
            Ok(event) => Ok(record::draft(&event)),
            Err(e) => Err(format!("unreadable event: {e}")),
        }),
        Feed::SetAside => {
            let advisory = match SetAside::parse(&message.payload) {
                Ok(advisory) => advisory,
                Err(e) => return Ok(Err(format!("unreadable advisory: {e}"))),
            };
            let original = set_aside_message(bus, &advisory).await?;
            Ok(Ok(Some(record::set_aside(&advisory, &original))))
        }
    }
}

/// What the set-aside message was, read from its stream when it is still
/// there (a work queue drops a terminated job).
async fn set_aside_message(bus: &Bus, advisory: &SetAside) -> Result<SetAsideMessage, BusError> {
    let mut found = SetAsideMessage::default();
    let stream = match bus.js.get_stream(&advisory.stream).await {
        Ok(stream) => stream,
        Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(_)) => return Ok(found),
        Err(e) => return Err(BusError::js("opening a set-aside message's stream", e)),
    };
    let stored = match stream.get_raw_message(advisory.stream_seq).await {
        Ok(stored) => stored,
        Err(e) if matches!(e.kind(), RawMessageErrorKind::NoMessageFound) => return Ok(found),
        Err(e) => return Err(BusError::js("reading a set-aside message", e)),
    };
    found.subject = Some(stored.subject.to_string());
    if advisory.stream == topology::COMMANDS.name
        && let Ok(envelope) = codec::from_cbor::<CommandEnvelope>(&stored.payload)
    {
        found.claimed_actor = unverified_claims(&envelope.token).map(|(actor, _)| actor);
        found.command_id =
            CommandEnvelope::well_formed_id(&envelope.id).then(|| envelope.id.clone());
        found.command = Some(envelope.command);
    }
    Ok(found)
}

/// The index, kept current by following the audit stream.
#[derive(Clone)]
pub struct Follower {
    bus: Bus,
    index: Arc<Index>,
    /// Stream sequence indexed so far.
    indexed: Arc<watch::Sender<u64>>,
}

impl Follower {
    pub fn new(bus: Bus, index: Arc<Index>) -> Self {
        Follower {
            bus,
            index,
            indexed: Arc::new(watch::Sender::new(0)),
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Index) -> Result<T, IndexError> + Send + 'static,
    ) -> Result<T, IndexError> {
        let index = self.index.clone();
        tokio::task::spawn_blocking(move || work(&index))
            .await
            .map_err(|e| IndexError::from_text(e.to_string()))?
    }

    /// Where indexing resumes: after the index's newest record if the
    /// stream still holds that very record there; otherwise the index
    /// belongs to another stream (a new data dir, say) and starts over.
    async fn resume_point(&self) -> Result<u64, BusError> {
        let failed = |e: IndexError| BusError::js("using the audit index", e);
        let Some((seq, hash)) = self.blocking(|index| index.head()).await.map_err(failed)? else {
            return Ok(1);
        };
        let stream = self
            .bus
            .js
            .get_stream(topology::AUDIT.name)
            .await
            .map_err(|e| BusError::js("opening the audit stream", e))?;
        let same = match stream.get_raw_message(seq).await {
            Ok(message) => payload_hash(&message.payload) == hash,
            Err(_) => false,
        };
        if same {
            return Ok(seq + 1);
        }
        warn!("the audit index does not match the audit stream; rebuilding it");
        self.blocking(|index| index.clear()).await.map_err(failed)?;
        Ok(1)
    }

    /// Indexes every record, old and new, until the bus fails for good.
    pub async fn keep_indexed(&self) -> Result<(), BusError> {
        loop {
            let start = self.resume_point().await?;
            self.indexed.send_replace(start - 1);
            let records = audit_log::follow(&self.bus, start).await?;
            tokio::pin!(records);
            let mut batch = Vec::new();
            while let Some(next) = records.next().await {
                let (stored, pending) = match next {
                    Ok(next) => next,
                    Err(e) => {
                        warn!(error = %e, "following the audit stream");
                        break;
                    }
                };
                let last_seq = stored.seq;
                // A record that does not decode is not listed; `audit verify`
                // names it.
                if let Ok(record) = codec::from_cbor(&stored.payload) {
                    batch.push(ListedRecord {
                        seq: stored.seq,
                        hash: payload_hash(&stored.payload),
                        record,
                    });
                }
                if pending == 0 || batch.len() >= BATCH {
                    let records = std::mem::take(&mut batch);
                    if let Err(e) = self.blocking(move |index| index.insert(&records)).await {
                        warn!(error = %e, "audit index not written; starting over");
                        break;
                    }
                    self.indexed.send_replace(last_seq);
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Answers `audit.list` once the index holds every record the stream
    /// held when the query came in.
    pub async fn list(&self, query: AuditQuery) -> Result<AuditList, IndexError> {
        let last = self
            .bus
            .js
            .get_stream(topology::AUDIT.name)
            .await
            .map_err(|e| IndexError::from_text(format!("reading the audit stream: {e}")))?
            .cached_info()
            .state
            .last_sequence;
        let mut indexed = self.indexed.subscribe();
        tokio::time::timeout(CATCH_UP_WAIT, indexed.wait_for(|seq| *seq >= last))
            .await
            .map_err(|_| {
                IndexError::from_text(format!(
                    "the audit index is still catching up with the stream (record {last}); ask again"
                ))
            })?
            .map_err(|e| IndexError::from_text(e.to_string()))?;
        self.blocking(move |index| index.list(&query)).await
    }
}
