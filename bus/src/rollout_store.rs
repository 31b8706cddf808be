//! The rollouts bucket: a rollout read with its revision, and written back
//! only if nobody changed it meanwhile. Every worker that moves a rollout
//! (the orchestrator on commands, the gatekeeper on evidence) goes through
//! here.

use async_nats::jetstream::kv;

use crate::codec;
use crate::connect::{Bus, BusError};
use crate::messages::rollout::{Rollout, RolloutId};
use crate::topology;

/// A rollout and the revision it was read at.
pub struct Read {
    pub rollout: Rollout,
    pub revision: u64,
}

pub async fn load(bus: &Bus, id: &str) -> Result<Option<Read>, BusError> {
    if !RolloutId::well_formed(id) {
        return Ok(None);
    }
    let store = bus.kv(&topology::ROLLOUTS).await?;
    let Some(entry) = store
        .entry(id)
        .await
        .map_err(|e| BusError::js("reading the rollout", e))?
        .filter(|e| e.operation == kv::Operation::Put)
    else {
        return Ok(None);
    };
    let rollout = codec::from_cbor(&entry.value).map_err(|source| BusError::Decode {
        place: format!("rollout {id}"),
        source,
    })?;
    Ok(Some(Read {
        rollout,
        revision: entry.revision,
    }))
}

/// Writes `rollout` if it is still at `revision`; false when another
/// replica changed it first.
pub async fn store(bus: &Bus, rollout: &Rollout, revision: u64) -> Result<bool, BusError> {
    let bytes = codec::to_cbor(rollout);
    match bus
        .kv(&topology::ROLLOUTS)
        .await?
        .update(&rollout.id, bytes.into(), revision)
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
        Err(e) => Err(BusError::js("writing the rollout", e)),
    }
}

/// Changes the rollout as it stands now: `change` says whether it changed
/// anything; the write is a compare-and-swap, and on a conflict the rollout
/// is read again and `change` asked again. Returns the rollout written, or
/// none when there is no such rollout or `change` left it.
pub async fn update(
    bus: &Bus,
    id: &str,
    mut change: impl FnMut(&mut Rollout) -> bool,
) -> Result<Option<Rollout>, BusError> {
    loop {
        let Some(Read {
            mut rollout,
            revision,
        }) = load(bus, id).await?
        else {
            return Ok(None);
        };
        if !change(&mut rollout) {
            return Ok(None);
        }
        if store(bus, &rollout, revision).await? {
            return Ok(Some(rollout));
        }
    }
}
