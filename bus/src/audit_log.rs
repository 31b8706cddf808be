//! Reading the audit log and the override snapshots, and checking the
//! chain: what `fleetroll audit verify` and the auditor's index both do,
//! straight from the streams. Records are written by the auditor alone.

use std::path::{Path, PathBuf};

use async_nats::jetstream::{self, consumer::DeliverPolicy, stream::DirectGetErrorKind};
use futures::{Stream, StreamExt};

use crate::codec;
use crate::connect::{Bus, BusError};
use crate::messages::audit::{
    Chain, ChainBreak, KEY_ID_HEADER, OverrideSnapshot, SIGNATURE_HEADER,
};
use crate::subjects;
use crate::token::VerifyingKey;
use crate::topology;

/// One message of the audit stream, as stored.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    pub seq: u64,
    pub payload: bytes::Bytes,
    pub key_id: String,
    pub signature: String,
}

impl StoredRecord {
    fn new(seq: u64, headers: Option<&async_nats::HeaderMap>, payload: bytes::Bytes) -> Self {
        let header = |name: &str| {
            headers
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_string())
                .unwrap_or_default()
        };
        StoredRecord {
            seq,
            key_id: header(KEY_ID_HEADER),
            signature: header(SIGNATURE_HEADER),
            payload,
        }
    }

    /// Checks this record against `chain` (see [`Chain::check`]).
    pub fn check(
        &self,
        chain: &mut Chain,
        keys: &[VerifyingKey],
    ) -> Result<crate::messages::audit::AuditRecord, ChainBreak> {
        chain.check(self.seq, &self.payload, &self.key_id, &self.signature, keys)
    }
}

async fn audit_stream(bus: &Bus) -> Result<jetstream::stream::Stream, BusError> {
    bus.js
        .get_stream(topology::AUDIT.name)
        .await
        .map_err(|e| BusError::js("opening the audit stream", e))
}

/// The last record of the log, read from the stream's leader; none when the
/// log is empty.
pub async fn last(bus: &Bus) -> Result<Option<StoredRecord>, BusError> {
    let mut stream = audit_stream(bus).await?;
    let last_seq = stream
        .info()
        .await
        .map_err(|e| BusError::js("reading the audit stream", e))?
        .state
        .last_sequence;
    if last_seq == 0 {
        return Ok(None);
    }
    let message = stream
        .get_raw_message(last_seq)
        .await
        .map_err(|e| BusError::js("reading the last audit record", e))?;
    Ok(Some(StoredRecord::new(
        message.sequence,
        Some(&message.headers),
        message.payload,
    )))
}

/// Whether the log already holds a record on `subject`, asked of the
/// stream's leader.
pub async fn holds(bus: &Bus, subject: &str) -> Result<bool, BusError> {
    let stream = audit_stream(bus).await?;
    match stream
        .raw_message_builder()
        .last_by_subject(subject)
        .send()
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => Ok(false),
        Err(e) => Err(BusError::js("looking up an audit record", e)),
    }
}

/// The records from stream sequence `from` on, then every record appended
/// later, for as long as the caller reads. `pending` on each item says how
/// many more are stored right now.
pub async fn follow(
    bus: &Bus,
    from: u64,
) -> Result<impl Stream<Item = Result<(StoredRecord, u64), BusError>> + use<>, BusError> {
    let consumer = audit_stream(bus)
        .await?
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from.max(1),
            },
            ..Default::default()
        })
        .await
        .map_err(|e| BusError::js("reading the audit stream", e))?;
    let messages = consumer
        .messages()
        .await
        .map_err(|e| BusError::js("reading the audit stream", e))?;
    Ok(messages.map(|next| {
        let message = next.map_err(|e| BusError::js("reading the audit stream", e))?;
        let info = message
            .info()
            .map_err(|e| BusError::js("reading the audit stream", e))?;
        let (seq, pending) = (info.stream_sequence, info.pending);
        Ok((
            StoredRecord::new(seq, message.headers.as_ref(), message.payload.clone()),
            pending,
        ))
    }))
}

/// The audit keys a reader trusts: the public halves listed in a file of
/// its own (one base64url key per line; `#` comments and blank lines
/// skipped), never the copies published on the mesh, which a relops
/// credential may write. Retired keys stay listed so the records they
/// signed still verify.
pub fn trusted_keys(path: &Path) -> Result<Vec<VerifyingKey>, AuditKeysError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuditKeysError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    text.lines()
        .enumerate()
        .map(|(n, line)| (n + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .map(|(line, text)| {
            VerifyingKey::from_base64(text).map_err(|source| AuditKeysError::Invalid {
                path: path.to_path_buf(),
                line,
                source,
            })
        })
        .collect()
}

/// A file of trusted audit keys that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuditKeysError {
    #[error("cannot read the trusted audit keys {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}, line {line}: not an audit key: {source}")]
    Invalid {
        path: PathBuf,
        line: usize,
        #[source]
        source: crate::token::KeyError,
    },
}

/// What a walk over the whole log found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// Every record is in place: how many, and the hash of the last.
    Whole { records: u64, head_hash: String },
    /// The first bad record, and how many good ones came before it.
    Broken { good: u64, first_bad: ChainBreak },
}

/// Walks the whole log, as it stands when called, and checks every link and
/// every signature against `keys` ([`trusted_keys`]). Reads only what a
/// readonly identity may read.
pub async fn verify(bus: &Bus, keys: &[VerifyingKey]) -> Result<Verification, BusError> {
    let mut chain = Chain::default();
    let last_seq = audit_stream(bus).await?.cached_info().state.last_sequence;
    if last_seq == 0 {
        return Ok(Verification::Whole {
            records: 0,
            head_hash: String::new(),
        });
    }
    let records = follow(bus, 1).await?;
    tokio::pin!(records);
    while let Some(next) = records.next().await {
        let (stored, _) = next?;
        if let Err(first_bad) = stored.check(&mut chain, keys) {
            return Ok(Verification::Broken {
                good: chain.records(),
                first_bad,
            });
        }
        if stored.seq >= last_seq {
            break;
        }
    }
    Ok(Verification::Whole {
        records: chain.records(),
        head_hash: chain.head_hash().to_string(),
    })
}

/// Stores an override snapshot for good (the stream refuses deletes).
pub async fn store_snapshot(bus: &Bus, snapshot: &OverrideSnapshot) -> Result<(), BusError> {
    bus.publish_once(
        "storing an override snapshot",
        subjects::snapshot(&snapshot.id),
        &snapshot.id,
        codec::to_cbor(snapshot),
    )
    .await
}

/// The snapshot with this id; none when there is no such snapshot.
pub async fn load_snapshot(bus: &Bus, id: &str) -> Result<Option<OverrideSnapshot>, BusError> {
    let stream = bus
        .js
        .get_stream(topology::SNAPSHOTS.name)
        .await
        .map_err(|e| BusError::js("opening the snapshot stream", e))?;
    let message = match stream
        .direct_get_last_for_subject(subjects::snapshot(id))
        .await
    {
        Ok(message) => message,
        Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => return Ok(None),
        Err(e) if matches!(e.kind(), DirectGetErrorKind::InvalidSubject) => return Ok(None),
        Err(e) => return Err(BusError::js("reading an override snapshot", e)),
    };
    codec::from_cbor(&message.payload)
        .map(Some)
        .map_err(|source| BusError::Decode {
            place: format!("snapshot {id}"),
            source,
        })
}
