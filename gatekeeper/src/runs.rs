//! The task runs the gates read, kept in memory and brought up to date with
//! only what the stream took since the last read. Reading every run since a
//! rollout started, every few seconds, grows with the fleet times its job
//! rate times the window; a fleet of 300 busy hosts already outran it. The
//! stream stays the truth: a new replica reads it once.

use std::collections::HashMap;

use fleetroll_bus::connect::{Bus, BusError, StoredFrom};
use fleetroll_bus::messages::workload::TaskRun;
use fleetroll_bus::{codec, subjects, topology};
use time::OffsetDateTime;

#[derive(Default)]
pub struct RunLog {
    /// Runs stored since this time are all held.
    from: Option<OffsetDateTime>,
    /// The stream sequence of the last run read.
    last: u64,
    by_host: HashMap<String, Vec<TaskRun>>,
    /// The earliest time asked for since the last [`RunLog::forget_unasked`].
    asked: Option<OffsetDateTime>,
}

impl RunLog {
    /// Makes sure every run stored since `since` is held.
    pub async fn update(&mut self, bus: &Bus, since: OffsetDateTime) -> Result<(), BusError> {
        self.asked = Some(self.asked.map_or(since, |a| a.min(since)));
        let from = match self.from {
            Some(from) if from <= since => StoredFrom::After(self.last),
            _ => StoredFrom::Time(since),
        };
        let stored = bus
            .stored_from(&topology::TASK_RUNS, subjects::TASK_RUNS.to_string(), from)
            .await?;
        if let StoredFrom::Time(since) = from {
            self.by_host.clear();
            self.from = Some(since);
        }
        for (sequence, bytes) in stored {
            self.last = sequence;
            if let Ok(run) = codec::from_cbor::<TaskRun>(&bytes) {
                self.by_host
                    .entry(run.hostname.clone())
                    .or_default()
                    .push(run);
            }
        }
        Ok(())
    }

    /// Every run held, by host; older than what was asked for, too.
    pub fn by_host(&self) -> &HashMap<String, Vec<TaskRun>> {
        &self.by_host
    }

    /// Drops the runs older than anything asked for since the last call.
    pub fn forget_unasked(&mut self) {
        let Some(asked) = self.asked.take() else {
            self.by_host.clear();
            self.from = None;
            return;
        };
        for runs in self.by_host.values_mut() {
            runs.retain(|r| r.resolved >= asked);
        }
        self.by_host.retain(|_, runs| !runs.is_empty());
        self.from = self.from.map(|from| from.max(asked));
    }
}
