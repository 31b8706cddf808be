//! The audit log (SPEC 7): one [`AuditRecord`] per mutating action,
//! accepted or refused, chained by hash and signed by the auditor.
//!
//! A record travels as an ordinary CBOR message on `fleetroll.audit.…` in a
//! stream the server forbids deleting from or purging. Its NATS headers
//! carry the signature: [`KEY_ID_HEADER`] names the audit key and
//! [`SIGNATURE_HEADER`] holds the Ed25519 signature (base64url) of the
//! payload bytes. Each record holds the SHA-256 of the previous record's
//! payload and its own position, so [`Chain`] finds any gap, reorder, change
//! or record nobody with the audit key wrote.
//!
//! ```
//! use fleetroll_bus::messages::audit::{AuditRecord, Chain, ChainBreak, sign, payload_hash};
//! use fleetroll_bus::token::SigningKey;
//!
//! let key = SigningKey::generate();
//! let keys = vec![key.verifying_key()];
//! let mut chain = Chain::default();
//! let mut record = AuditRecord::example();
//! record.prev_hash = chain.head_hash().to_string();
//! record.index = chain.next_index();
//! let payload = fleetroll_bus::codec::to_cbor(&record);
//! let (key_id, signature) = sign(&key, &payload);
//! chain.check(1, &payload, &key_id, &signature, &keys).unwrap();
//! assert_eq!(chain.head_hash(), payload_hash(&payload));
//! // The same record again is out of place: its index and link are stale.
//! assert!(matches!(chain.check(2, &payload, &key_id, &signature, &keys), Err(ChainBreak { .. })));
//! ```

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::command::Command;
use super::rollout::{GateConfig, GateEvaluation};
use crate::codec::{self, Message};
use crate::token::{SigningKey, VerifyingKey};

/// Header naming the audit key a record was signed with.
pub const KEY_ID_HEADER: &str = "Fleetroll-Audit-Key";
/// Header holding the record's signature.
pub const SIGNATURE_HEADER: &str = "Fleetroll-Audit-Signature";

/// Who approved an action. fleetroll has a single approver: the actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalMode {
    #[serde(rename = "self")]
    SelfApproved,
}

/// One audited action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the chain, from 1: the audit stream's sequence number
    /// the record was written at.
    pub index: u64,
    /// SHA-256 (hex) of the previous record's payload; empty for the first.
    pub prev_hash: String,
    /// When the action reached its outcome.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// What was done: the command's name.
    pub action: String,
    /// The actor from the verified token; none when the token was not valid.
    pub actor: Option<String>,
    /// For a refused token that could not be verified: the name it claimed.
    /// Never trusted, kept for the investigation.
    pub claimed_actor: Option<String>,
    /// done, denied, invalid, refused or failed.
    pub outcome: String,
    /// Why it was not done, when it was not.
    pub message: Option<String>,
    pub command_id: Option<String>,
    pub rollout: Option<String>,
    /// The command as sent, with every parameter.
    pub parameters: Option<Command>,
    /// Hosts the action touched or was about.
    pub hosts: Vec<String>,
    pub approval_mode: ApprovalMode,
    pub force: bool,
    pub reason: Option<String>,
    /// For a rollout decision: the effective gate configuration...
    #[serde(default)]
    pub gate_config: Option<GateConfig>,
    /// ...and the evaluation at that moment.
    #[serde(default)]
    pub gate_evaluation: Option<GateEvaluation>,
    /// Override snapshots taken for this action ([`OverrideSnapshot`] ids).
    pub snapshots: Vec<String>,
    /// The worker replica that carried the action out.
    pub handled_by: String,
}

impl Message for AuditRecord {
    const KIND: &'static str = "audit_record";
    const VERSION: u16 = 1;
}

impl AuditRecord {
    /// A record for documentation and tests.
    pub fn example() -> AuditRecord {
        AuditRecord {
            index: 1,
            prev_hash: String::new(),
            at: OffsetDateTime::UNIX_EPOCH,
            action: "seed_add".into(),
            actor: Some("alice".into()),
            claimed_actor: None,
            outcome: "done".into(),
            message: None,
            command_id: Some("0192f0c2-0000-7000-8000-000000000000".into()),
            rollout: None,
            parameters: Some(Command::SeedAdd {
                hostnames: vec!["host1.example.com".into()],
            }),
            hosts: vec!["host1.example.com".into()],
            approval_mode: ApprovalMode::SelfApproved,
            force: false,
            reason: None,
            gate_config: None,
            gate_evaluation: None,
            snapshots: Vec::new(),
            handled_by: "prober-0a1b2c3d".into(),
        }
    }
}

/// SHA-256 of a record's payload, hex: what the next record links to.
pub fn payload_hash(payload: &[u8]) -> String {
    hex(&Sha256::digest(payload))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The id of an audit key: the first 16 hex digits of the SHA-256 of its
/// public half.
pub fn key_id(key: &VerifyingKey) -> String {
    payload_hash(key.as_bytes())[..16].to_string()
}

/// Signs a record's payload: (key id, signature) for its headers.
pub fn sign(key: &SigningKey, payload: &[u8]) -> (String, String) {
    (
        key_id(&key.verifying_key()),
        URL_SAFE_NO_PAD.encode(key.sign(payload)),
    )
}

/// Where the audit chain is broken, and how.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit record at stream sequence {seq} (record #{index}): {problem}")]
pub struct ChainBreak {
    /// Stream sequence of the first bad record.
    pub seq: u64,
    /// The index it claims (0 when unreadable).
    pub index: u64,
    pub problem: String,
}

/// The state of a chain walked so far: where it ends and the hash the next
/// record must link to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chain {
    last_seq: u64,
    head_hash: String,
    records: u64,
}

impl Chain {
    /// The stream sequence, and so the index, the next record must have.
    pub fn next_index(&self) -> u64 {
        self.last_seq + 1
    }

    /// The hash the next record must link to (empty before the first).
    pub fn head_hash(&self) -> &str {
        &self.head_hash
    }

    /// How many records were checked.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Checks the record stored at stream sequence `seq` against the chain
    /// so far and the trusted audit keys; on success it becomes the head.
    pub fn check(
        &mut self,
        seq: u64,
        payload: &[u8],
        key_id: &str,
        signature: &str,
        keys: &[VerifyingKey],
    ) -> Result<AuditRecord, ChainBreak> {
        let broken = |index: u64, problem: String| ChainBreak {
            seq,
            index,
            problem,
        };
        let record: AuditRecord =
            codec::from_cbor(payload).map_err(|e| broken(0, format!("unreadable: {e}")))?;
        let Some(key) = keys.iter().find(|k| self::key_id(k) == key_id) else {
            return Err(broken(
                record.index,
                format!("signed with `{key_id}`, which is not a trusted audit key: forged"),
            ));
        };
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| {
            broken(
                record.index,
                "its signature is not base64url: forged".into(),
            )
        })?;
        if !key.verify(payload, &signature) {
            return Err(broken(
                record.index,
                "its signature does not match its contents: forged or altered".into(),
            ));
        }
        if seq != self.next_index() {
            return Err(broken(
                record.index,
                format!(
                    "stream sequences {}..{} are missing: records were removed",
                    self.next_index(),
                    seq - 1
                ),
            ));
        }
        if record.index != seq {
            return Err(broken(
                record.index,
                format!("it was written as record #{} and moved", record.index),
            ));
        }
        if record.prev_hash != self.head_hash {
            return Err(broken(
                record.index,
                "it does not link to the record before it: the chain was changed".into(),
            ));
        }
        self.last_seq = seq;
        self.head_hash = payload_hash(payload);
        self.records += 1;
        Ok(record)
    }
}

/// The content of an override file on a host at one moment, or its
/// absence, kept for forensics before fleetroll writes or removes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverrideSnapshot {
    pub id: String,
    pub hostname: String,
    #[serde(with = "time::serde::rfc3339")]
    pub taken_at: OffsetDateTime,
    /// Why it was taken: "observed", "before apply", "before removal".
    pub occasion: String,
    /// The file's exact bytes, base64 (standard alphabet); none when there
    /// was no override file.
    pub content_base64: Option<String>,
    pub sha256: Option<String>,
}

impl OverrideSnapshot {
    /// A snapshot of `content` (none: no override file) on `hostname` now.
    pub fn take(hostname: &str, occasion: &str, content: Option<&[u8]>) -> OverrideSnapshot {
        OverrideSnapshot {
            id: uuid::Uuid::now_v7().to_string(),
            hostname: hostname.to_string(),
            taken_at: OffsetDateTime::now_utc(),
            occasion: occasion.to_string(),
            content_base64: content.map(|c| STANDARD.encode(c)),
            sha256: content.map(payload_hash),
        }
    }

    /// The file's bytes; none when there was no file (or the snapshot is
    /// damaged).
    pub fn content(&self) -> Option<Vec<u8>> {
        STANDARD.decode(self.content_base64.as_ref()?).ok()
    }
}

impl Message for OverrideSnapshot {
    const KIND: &'static str = "override_snapshot";
    const VERSION: u16 = 1;
}

/// Parameters of the `audit.list` query; every filter is optional and they
/// all must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditQuery {
    pub host: Option<String>,
    pub rollout: Option<String>,
    pub actor: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub since: Option<OffsetDateTime>,
    /// The newest this many (0: the default of the query, 1,000).
    pub limit: usize,
}

impl AuditQuery {
    /// A `since` as people write it: an RFC 3339 time, or a duration back
    /// from `now` in the query language's units (`90m`, `2h`, `3d`).
    ///
    /// ```
    /// use fleetroll_bus::messages::audit::AuditQuery;
    /// let now = time::macros::datetime!(2026-11-22 12:00 UTC);
    /// assert_eq!(AuditQuery::parse_since("2h", now), Some(time::macros::datetime!(2026-11-22 10:00 UTC)));
    /// assert_eq!(AuditQuery::parse_since("2026-11-01T00:00:00Z", now), Some(time::macros::datetime!(2026-11-01 0:00 UTC)));
    /// assert_eq!(AuditQuery::parse_since("yesterday", now), None);
    /// ```
    pub fn parse_since(text: &str, now: OffsetDateTime) -> Option<OffsetDateTime> {
        if let Ok(at) = OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        {
            return Some(at);
        }
        let back = crate::filter::duration_seconds(text)?;
        now.checked_sub(time::Duration::checked_seconds_f64(back)?)
    }
}

impl Message for AuditQuery {
    const KIND: &'static str = "audit_query";
    const VERSION: u16 = 1;
}

/// One record as listed: where it sits in the stream, its hash, itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListedRecord {
    pub seq: u64,
    pub hash: String,
    pub record: AuditRecord,
}

impl Message for ListedRecord {
    const KIND: &'static str = "listed_audit_record";
    const VERSION: u16 = 1;
}

/// Answer of `audit.list`, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditList {
    pub records: Vec<ListedRecord>,
    /// More records matched than `limit`; these are the newest.
    pub truncated: bool,
}

impl Message for AuditList {
    const KIND: &'static str = "audit_list";
    const VERSION: u16 = 1;
}
