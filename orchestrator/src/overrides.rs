//! Writing and removing a host's override file (SPEC 5): the previous
//! contents, or their absence, are snapshotted durably first; the new file
//! is written to a temporary file in the same directory, its mode and owner
//! set, then renamed into place; the contents travel on stdin; the result
//! is verified by re-reading its SHA-256. Both are idempotent: a host that
//! already has the wanted contents (or no file) is not written again, so a
//! batch replayed after a crash touches each host once.

use std::time::Duration;

use fleetroll_bus::audit_log;
use fleetroll_bus::connect::{Bus, BusError};
use fleetroll_bus::messages::audit::{OverrideSnapshot, payload_hash};
use fleetroll_ssh::pool::{Pool, RunError};

const SCRIPT: &str = include_str!("override.sh");

/// The largest override fleetroll writes: an override is a few settings.
pub const MAX_OVERRIDE_BYTES: usize = 64 * 1024;

/// How long one operation on a host may take.
const LIMIT: Duration = Duration::from_secs(60);

/// Why an override could not be read, written or removed.
#[derive(Debug, thiserror::Error)]
pub enum OverrideError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("sudo refused (`sudo -n` needs passwordless sudo for the SSH user): {0}")]
    SudoRefused(String),
    #[error("the override {operation} exited with status {status:?}: {stderr}")]
    Failed {
        operation: &'static str,
        status: Option<u32>,
        stderr: String,
    },
    #[error("the host answered something unexpected: {0}")]
    Garbled(String),
    #[error("verification failed: wrote sha256 {expected}, the file now reads {found}")]
    Verify { expected: String, found: String },
    #[error("the override is {0} bytes; at most {MAX_OVERRIDE_BYTES} are written")]
    TooLarge(usize),
    #[error("the snapshot could not be stored, so nothing was changed: {0}")]
    Snapshot(BusError),
}

/// What became of a host's override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Changed, after the snapshot with this id was stored.
    Changed { snapshot: String },
    /// It already was as asked: nothing written.
    AlreadyThere,
}

fn command(operation: &str) -> String {
    format!("sudo -n /bin/sh -c '{SCRIPT}' fleetroll-override {operation}")
}

async fn run(
    pool: &Pool,
    hostname: &str,
    operation: &'static str,
    stdin: &[u8],
) -> Result<Vec<u8>, OverrideError> {
    let ran = pool
        .run(
            hostname,
            &command(operation),
            stdin,
            LIMIT,
            MAX_OVERRIDE_BYTES + 4096,
        )
        .await
        .map_err(|(e, _)| e)?;
    let stderr = String::from_utf8_lossy(&ran.output.stderr)
        .trim()
        .to_string();
    match ran.output.exit_status {
        Some(0) => Ok(ran.output.stdout),
        _ if stderr.starts_with("sudo:") => Err(OverrideError::SudoRefused(stderr)),
        status => Err(OverrideError::Failed {
            operation,
            status,
            stderr: stderr.chars().take(300).collect(),
        }),
    }
}

/// The override's contents; none when there is no override file.
pub async fn read(pool: &Pool, hostname: &str) -> Result<Option<Vec<u8>>, OverrideError> {
    let out = run(pool, hostname, "read", b"").await?;
    if let Some(content) = out.strip_prefix(b"present\n") {
        Ok(Some(content.to_vec()))
    } else if out == b"absent\n" {
        Ok(None)
    } else {
        Err(OverrideError::Garbled(
            String::from_utf8_lossy(&out).chars().take(100).collect(),
        ))
    }
}

async fn snapshot(
    bus: &Bus,
    hostname: &str,
    occasion: &str,
    current: Option<&[u8]>,
) -> Result<String, OverrideError> {
    let snapshot = OverrideSnapshot::take(hostname, occasion, current);
    audit_log::store_snapshot(bus, &snapshot)
        .await
        .map_err(OverrideError::Snapshot)?;
    Ok(snapshot.id)
}

/// Makes the host's override exactly `content`.
pub async fn apply(
    pool: &Pool,
    bus: &Bus,
    hostname: &str,
    content: &[u8],
) -> Result<Change, OverrideError> {
    if content.len() > MAX_OVERRIDE_BYTES {
        return Err(OverrideError::TooLarge(content.len()));
    }
    let expected = payload_hash(content);
    let current = read(pool, hostname).await?;
    if current.as_deref().map(payload_hash).as_ref() == Some(&expected) {
        return Ok(Change::AlreadyThere);
    }
    let snapshot = snapshot(bus, hostname, "before apply", current.as_deref()).await?;
    let out = run(pool, hostname, "apply", content).await?;
    let found = String::from_utf8_lossy(&out)
        .strip_prefix("sha256 ")
        .map(|s| s.trim().to_string())
        .ok_or_else(|| OverrideError::Garbled(String::from_utf8_lossy(&out).into_owned()))?;
    if found != expected {
        return Err(OverrideError::Verify { expected, found });
    }
    Ok(Change::Changed { snapshot })
}

/// Removes the host's override file.
pub async fn remove(pool: &Pool, bus: &Bus, hostname: &str) -> Result<Change, OverrideError> {
    let Some(current) = read(pool, hostname).await? else {
        return Ok(Change::AlreadyThere);
    };
    let snapshot = snapshot(bus, hostname, "before removal", Some(&current)).await?;
    let out = run(pool, hostname, "remove", b"").await?;
    if out != b"absent\n" {
        return Err(OverrideError::Garbled(
            String::from_utf8_lossy(&out).into_owned(),
        ));
    }
    Ok(Change::Changed { snapshot })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_script_fits_in_single_quotes() {
        assert!(!super::SCRIPT.contains('\''));
    }
}
