//! Task ids: Taskcluster slugids (22 characters of URL-safe base64 of a v4
//! UUID) that encode which host ran which job, so the double needs no table
//! to answer `task/<id>/status`. A checksum over the lab id keeps ids of
//! other labs (or made-up ones) from decoding.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

fn checksum(lab_id: &str, host: u16, job: u32) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(lab_id.as_bytes());
    h.update(host.to_be_bytes());
    h.update(job.to_be_bytes());
    h.finalize().into()
}

/// Per-lab mask over the encoded (job, host), so ids look as random as
/// real ones instead of sharing a prefix.
fn mask(lab_id: &str) -> [u8; 6] {
    let d: [u8; 32] = Sha256::digest(format!("mask:{lab_id}")).into();
    let mut m = [0u8; 6];
    m.copy_from_slice(&d[..6]);
    m[0] &= 0x7f;
    m
}

/// The task id of job `job` (must be < 2^31) of host `host`.
pub(crate) fn encode(lab_id: &str, host: u16, job: u32) -> String {
    let c = checksum(lab_id, host, job);
    let m = mask(lab_id);
    let mut b = [0u8; 16];
    // First bit clear: a "nice" slugid never starts with '-'.
    b[0..4].copy_from_slice(&(job & 0x7fff_ffff).to_be_bytes());
    b[4..6].copy_from_slice(&host.to_be_bytes());
    for (byte, m) in b[..6].iter_mut().zip(m) {
        *byte ^= m;
    }
    b[6] = 0x40 | (c[0] & 0x0f); // UUID version 4
    b[7] = c[1];
    b[8] = 0x80 | (c[2] & 0x3f); // RFC 4122 variant
    b[9..16].copy_from_slice(&c[3..10]);
    URL_SAFE_NO_PAD.encode(b)
}

/// The (host, job) of a task id made by `encode` for this lab.
pub(crate) fn decode(lab_id: &str, task_id: &str) -> Option<(u16, u32)> {
    if task_id.len() != 22 {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(task_id).ok()?;
    let mut b: [u8; 16] = bytes.try_into().ok()?;
    for (byte, m) in b[..6].iter_mut().zip(mask(lab_id)) {
        *byte ^= m;
    }
    let job = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let host = u16::from_be_bytes([b[4], b[5]]);
    (encode(lab_id, host, job) == task_id).then_some((host, job))
}

/// A deterministic slugid for anything else (task groups).
pub(crate) fn derive(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    let c: [u8; 32] = h.finalize().into();
    let mut b = [0u8; 16];
    b.copy_from_slice(&c[..16]);
    b[0] &= 0x7f;
    b[6] = 0x40 | (b[6] & 0x0f);
    b[8] = 0x80 | (b[8] & 0x3f);
    URL_SAFE_NO_PAD.encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_foreign_ids() {
        let id = encode("lab-a", 17, 123_456);
        assert_eq!(id.len(), 22);
        assert!(!id.starts_with('-'));
        assert!(
            id.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_eq!(decode("lab-a", &id), Some((17, 123_456)));
        assert_eq!(decode("lab-b", &id), None);
        assert_eq!(decode("lab-a", "fNvfdGJxRGeKm1Ug_IQ4rw"), None);
        assert_eq!(decode("lab-a", "short"), None);
        assert_ne!(encode("lab-a", 17, 1), encode("lab-a", 18, 1));
    }
}
