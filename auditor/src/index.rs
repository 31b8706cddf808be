//! The auditor's local index of the audit log (redb), for queries by host,
//! actor, rollout and time. It is only a cache of the stream: a missing,
//! stale or unreadable file is rebuilt from the stream with the same
//! answers.

use std::path::Path;

use fleetroll_bus::codec;
use fleetroll_bus::messages::audit::{AuditList, AuditQuery, AuditRecord, ListedRecord};
use redb::{Database, MultimapTableDefinition, ReadableDatabase, ReadableTable, TableDefinition};

/// Stream sequence → the listed record (CBOR).
const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
const BY_HOST: MultimapTableDefinition<&str, u64> = MultimapTableDefinition::new("by_host");
const BY_ACTOR: MultimapTableDefinition<&str, u64> = MultimapTableDefinition::new("by_actor");
const BY_ROLLOUT: MultimapTableDefinition<&str, u64> = MultimapTableDefinition::new("by_rollout");

/// What `audit.list` answers at most when the query sets no limit.
pub const DEFAULT_LIMIT: usize = 1_000;

#[derive(Debug, thiserror::Error)]
#[error("audit index: {0}")]
pub struct IndexError(String);

impl IndexError {
    pub fn from_text(text: String) -> Self {
        IndexError(text)
    }
}

impl<E: Into<redb::Error>> From<E> for IndexError {
    fn from(e: E) -> Self {
        IndexError(e.into().to_string())
    }
}

pub struct Index {
    db: Database,
}

impl Index {
    /// Opens the index file, creating it when missing; a file that cannot
    /// be used (held by another auditor on this machine, damaged) leaves an
    /// index in memory, rebuilt from the stream like any other.
    pub fn open(path: &Path) -> Index {
        let opened = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .map_err(|e| e.to_string())
            .and_then(|()| Database::create(path).map_err(|e| e.to_string()));
        let db = match opened {
            Ok(db) => db,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "audit index file unusable; indexing in memory");
                Self::in_memory_db()
            }
        };
        Index { db }
    }

    fn in_memory_db() -> Database {
        Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .expect("an in-memory redb database always opens")
    }

    /// The stream sequence of the newest record indexed (0: none), and its
    /// hash.
    pub fn head(&self) -> Result<Option<(u64, String)>, IndexError> {
        let txn = self.db.begin_read()?;
        let table = match txn.open_table(RECORDS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let Some((seq, bytes)) = table.last()? else {
            return Ok(None);
        };
        let listed: ListedRecord =
            codec::from_cbor(bytes.value()).map_err(|e| IndexError(e.to_string()))?;
        Ok(Some((seq.value(), listed.hash)))
    }

    /// Forgets everything: the stream it indexed is not the one there now.
    pub fn clear(&self) -> Result<(), IndexError> {
        let txn = self.db.begin_write()?;
        txn.delete_table(RECORDS)?;
        txn.delete_multimap_table(BY_HOST)?;
        txn.delete_multimap_table(BY_ACTOR)?;
        txn.delete_multimap_table(BY_ROLLOUT)?;
        txn.commit()?;
        Ok(())
    }

    /// Indexes records in one transaction.
    pub fn insert(&self, records: &[ListedRecord]) -> Result<(), IndexError> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(RECORDS)?;
            let mut by_host = txn.open_multimap_table(BY_HOST)?;
            let mut by_actor = txn.open_multimap_table(BY_ACTOR)?;
            let mut by_rollout = txn.open_multimap_table(BY_ROLLOUT)?;
            for listed in records {
                let seq = listed.seq;
                table.insert(seq, codec::to_cbor(listed).as_slice())?;
                let record = &listed.record;
                for host in &record.hosts {
                    by_host.insert(host.as_str(), seq)?;
                }
                if let Some(actor) = &record.actor {
                    by_actor.insert(actor.as_str(), seq)?;
                }
                if let Some(rollout) = &record.rollout {
                    by_rollout.insert(rollout.as_str(), seq)?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// The newest records matching every filter of `query`, oldest first.
    pub fn list(&self, query: &AuditQuery) -> Result<AuditList, IndexError> {
        let limit = match query.limit {
            0 => DEFAULT_LIMIT,
            n => n,
        };
        let txn = self.db.begin_read()?;
        let table = match txn.open_table(RECORDS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(AuditList::default()),
            Err(e) => return Err(e.into()),
        };
        // The narrowest index names the candidates, newest first.
        let by = |def, key: &str| -> Result<Vec<u64>, IndexError> {
            let index = match txn.open_multimap_table(def) {
                Ok(index) => index,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            let mut seqs = index
                .get(key)?
                .map(|s| s.map(|s| s.value()))
                .collect::<Result<Vec<_>, _>>()?;
            seqs.reverse();
            Ok(seqs)
        };
        let candidates: Box<dyn Iterator<Item = Result<u64, IndexError>>> =
            if let Some(host) = &query.host {
                Box::new(by(BY_HOST, host)?.into_iter().map(Ok))
            } else if let Some(rollout) = &query.rollout {
                Box::new(by(BY_ROLLOUT, rollout)?.into_iter().map(Ok))
            } else if let Some(actor) = &query.actor {
                Box::new(by(BY_ACTOR, actor)?.into_iter().map(Ok))
            } else {
                Box::new(
                    table
                        .range::<u64>(..)?
                        .rev()
                        .map(|entry| entry.map(|(seq, _)| seq.value()).map_err(Into::into)),
                )
            };
        let mut found = Vec::new();
        let mut truncated = false;
        for seq in candidates {
            let Some(bytes) = table.get(seq?)? else {
                continue;
            };
            let listed: ListedRecord =
                codec::from_cbor(bytes.value()).map_err(|e| IndexError(e.to_string()))?;
            if matches(&listed.record, query) {
                if found.len() == limit {
                    truncated = true;
                    break;
                }
                found.push(listed);
            }
        }
        found.reverse();
        Ok(AuditList {
            records: found,
            truncated,
        })
    }
}

fn matches(record: &AuditRecord, query: &AuditQuery) -> bool {
    // Records are appended about in time order, not exactly (a slow
    // command's record can follow a quicker one's), so time is a filter.
    query.since.is_none_or(|since| record.at >= since)
        && query.host.as_ref().is_none_or(|h| record.hosts.contains(h))
        && query
            .actor
            .as_ref()
            .is_none_or(|a| record.actor.as_ref() == Some(a))
        && query
            .rollout
            .as_ref()
            .is_none_or(|r| record.rollout.as_ref() == Some(r))
}
