//! Writing the chain: each record links to the one before it, signed, and
//! appended only if nothing else was appended meanwhile (the stream checks
//! the expected last sequence), so any number of auditor replicas keep one
//! straight chain. A record is written once per subject, however often its
//! event is delivered.

use std::sync::Arc;

use async_nats::jetstream::context::PublishErrorKind;
use fleetroll_bus::audit_log;
use fleetroll_bus::codec;
use fleetroll_bus::connect::{Bus, BusError};
use fleetroll_bus::messages::audit::{
    AuditRecord, KEY_ID_HEADER, SIGNATURE_HEADER, payload_hash, sign,
};
use fleetroll_bus::token::SigningKey;
use tracing::debug;

/// Where the chain ends, as this replica last saw it.
#[derive(Debug, Clone)]
struct Head {
    seq: u64,
    hash: String,
}

/// Appends records to the audit log.
pub struct Appender {
    bus: Bus,
    key: Arc<SigningKey>,
    head: Option<Head>,
}

/// What became of a record.
#[derive(Debug, PartialEq, Eq)]
pub enum Appended {
    Written {
        seq: u64,
    },
    /// The log already holds it (an earlier delivery wrote it).
    AlreadyThere,
}

impl Appender {
    pub fn new(bus: Bus, key: Arc<SigningKey>) -> Self {
        Appender {
            bus,
            key,
            head: None,
        }
    }

    /// Links `record` to the end of the chain and stores it under `subject`.
    pub async fn append(
        &mut self,
        subject: &str,
        mut record: AuditRecord,
    ) -> Result<Appended, BusError> {
        loop {
            if audit_log::holds(&self.bus, subject).await? {
                return Ok(Appended::AlreadyThere);
            }
            let head = match &self.head {
                Some(head) => head.clone(),
                None => {
                    let head = match audit_log::last(&self.bus).await? {
                        Some(last) => Head {
                            seq: last.seq,
                            hash: payload_hash(&last.payload),
                        },
                        None => Head {
                            seq: 0,
                            hash: String::new(),
                        },
                    };
                    self.head = Some(head.clone());
                    head
                }
            };
            record.index = head.seq + 1;
            record.prev_hash = head.hash;
            let payload = codec::to_cbor(&record);
            let (key_id, signature) = sign(&self.key, &payload);
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(
                async_nats::header::NATS_EXPECTED_LAST_SEQUENCE,
                head.seq.to_string().as_str(),
            );
            // The server itself keeps a subject to one record: `holds` can
            // miss a record just stored while a cluster changes leaders (seen
            // as two records of one removal in the chaos run).
            headers.insert(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, "0");
            headers.insert(KEY_ID_HEADER, key_id.as_str());
            headers.insert(SIGNATURE_HEADER, signature.as_str());
            let hash = payload_hash(&payload);
            let stored = self
                .bus
                .js
                .publish_with_headers(subject.to_string(), headers, payload.into())
                .await
                .map_err(|e| BusError::js("writing an audit record", e))?
                .await;
            match stored {
                Ok(ack) => {
                    self.head = Some(Head {
                        seq: ack.sequence,
                        hash,
                    });
                    metrics::counter!("fleetroll_audit_records_total").increment(1);
                    return Ok(Appended::Written { seq: ack.sequence });
                }
                // The chain moved on, or the subject has its record: either
                // way another writer got there first; look again.
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    debug!("another auditor appended first; linking to its record");
                    self.head = None;
                }
                Err(e) => {
                    self.head = None;
                    return Err(BusError::js("writing an audit record", e));
                }
            }
        }
    }
}
