//! Loopback address ranges for concurrent labs.
//!
//! Each running lab owns one slot: the range 127.S.0.0/16, S in 10..=250.
//! Ownership is an flock on `/run/fleetroll-lab/slots/S.lock`, held for the
//! lab's lifetime, so a lab that died (even by SIGKILL) frees its slot at
//! once; the record inside the file then tells the next owner what to clean.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{IoContext, LabError};
use crate::system::{flock, run_dir};

/// First and last second octet a lab may use.
pub(crate) const FIRST: u8 = 10;
pub(crate) const LAST: u8 = 250;
/// Hosts per /16, keeping the last octet in 1..=250.
pub(crate) const MAX_HOSTS: usize = 256 * 250;

/// Who holds (or held) a slot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SlotRecord {
    pub id: String,
    pub dir: PathBuf,
    pub pid: u32,
}

/// A held slot. Dropping it releases the range.
#[derive(Debug)]
pub(crate) struct Slot {
    pub octet: u8,
    #[allow(dead_code)]
    file: File,
}

impl Slot {
    /// The address of host `index` (0-based) in this slot.
    pub(crate) fn addr(&self, index: usize) -> Ipv4Addr {
        host_addr(self.octet, index)
    }
}

pub(crate) fn host_addr(octet: u8, index: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, octet, (index / 250) as u8, (index % 250 + 1) as u8)
}

/// The bastion's address in a slot: hosts' last octet is 1..=250, so this
/// is never a host's.
pub(crate) fn bastion_addr(octet: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, octet, 0, 254)
}

fn slot_path(octet: u8) -> Result<PathBuf, LabError> {
    Ok(run_dir()?.join("slots").join(format!("{octet}.lock")))
}

fn open(octet: u8) -> Result<File, LabError> {
    let path = slot_path(octet)?;
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .ctx(|| format!("open {}", path.display()))
}

fn try_lock(file: &File) -> Result<bool, LabError> {
    match flock(file, libc::LOCK_EX | libc::LOCK_NB) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(LabError::io("lock a lab slot", e)),
    }
}

/// Takes the first free slot. Returns it with the record of a previous owner
/// that died without cleaning up, if any.
pub(crate) fn acquire(record: &SlotRecord) -> Result<(Slot, Option<SlotRecord>), LabError> {
    for octet in FIRST..=LAST {
        let mut file = open(octet)?;
        if !try_lock(&file)? {
            continue;
        }
        let mut old = String::new();
        let _ = file.read_to_string(&mut old);
        let stale = serde_json::from_str::<SlotRecord>(&old).ok();
        let text = serde_json::to_string(record).unwrap_or_default();
        file.set_len(0).ctx(|| "truncate slot record".to_string())?;
        file.rewind().ctx(|| "rewind slot record".to_string())?;
        file.write_all(text.as_bytes())
            .ctx(|| "write slot record".to_string())?;
        return Ok((Slot { octet, file }, stale));
    }
    Err(LabError::NoFreeSlot(usize::from(LAST - FIRST) + 1))
}

/// Marks a slot's record as cleaned so the next owner does not redo it.
pub(crate) fn clear_record(slot: &Slot) {
    let _ = slot.file.set_len(0);
}

/// Whether any lab on the machine is running.
pub(crate) fn any_held() -> Result<bool, LabError> {
    let dir = run_dir()?.join("slots");
    let entries = std::fs::read_dir(&dir).ctx(|| format!("read {}", dir.display()))?;
    for entry in entries.flatten() {
        let Ok(file) = File::open(entry.path()) else {
            continue;
        };
        if !try_lock(&file)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Records of slots whose owner is gone but did not clean up.
pub(crate) fn stale_records() -> Result<Vec<(u8, SlotRecord)>, LabError> {
    let mut out = Vec::new();
    for octet in FIRST..=LAST {
        let path = slot_path(octet)?;
        if !path.exists() {
            continue;
        }
        let mut file = open(octet)?;
        if !try_lock(&file)? {
            continue;
        }
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        if let Ok(rec) = serde_json::from_str::<SlotRecord>(&text) {
            out.push((octet, rec));
        }
    }
    Ok(out)
}

/// Ids of the labs running now (their slot is locked).
pub(crate) fn live_ids() -> Result<Vec<String>, LabError> {
    let mut out = Vec::new();
    for octet in FIRST..=LAST {
        let path = slot_path(octet)?;
        if !path.exists() {
            continue;
        }
        let file = open(octet)?;
        if try_lock(&file)? {
            continue;
        }
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(rec) = serde_json::from_str::<SlotRecord>(&text)
        {
            out.push(rec.id);
        }
    }
    Ok(out)
}

/// Forgets a dead lab's record once it has been cleaned up.
pub(crate) fn forget(octet: u8) -> Result<(), LabError> {
    let file = open(octet)?;
    if try_lock(&file)? {
        let _ = file.set_len(0);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_stay_in_the_slot_and_skip_dot_zero() {
        assert_eq!(host_addr(10, 0), Ipv4Addr::new(127, 10, 0, 1));
        assert_eq!(host_addr(10, 249), Ipv4Addr::new(127, 10, 0, 250));
        assert_eq!(host_addr(10, 250), Ipv4Addr::new(127, 10, 1, 1));
        assert_eq!(
            host_addr(11, MAX_HOSTS - 1),
            Ipv4Addr::new(127, 11, 255, 250)
        );
    }
}
