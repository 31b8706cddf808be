//! Writing and removing a host's override file (SPEC 5): the previous
//! contents, or their absence, are snapshotted durably first; the new file
//! is written to a temporary file in the same directory, its mode and owner
//! set, then renamed into place; the contents travel on stdin; the result
//! is verified by re-reading its SHA-256. Both are idempotent: a host that
//! already has the wanted contents (or no file) is not written again, so a
//! batch replayed after a crash touches each host once. A file is only
//! changed once its whole previous contents are stored: one too large for
//! a snapshot is left alone, with an error naming its size.

use fleetroll_bus::audit_log;
use fleetroll_bus::connect::{Bus, BusError};
use fleetroll_bus::messages::audit::{OverrideSnapshot, payload_hash};
use fleetroll_ssh::pool::{Pool, RunError};

const SCRIPT: &str = include_str!("override.sh");

/// The largest override fleetroll writes: an override is a few settings.
pub const MAX_OVERRIDE_BYTES: usize = 64 * 1024;

/// Room a snapshot needs beyond the file's base64: its id, host, times.
const SNAPSHOT_OVERHEAD: usize = 4096;

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
    #[error(
        "the override file on the host is {size} bytes, more than a snapshot can hold whole here ({most} bytes); it was left untouched: remove or shrink it on the host first"
    )]
    TooLargeToSnapshot { size: u64, most: usize },
    #[error("the snapshot could not be stored, so nothing was changed: {0}")]
    Snapshot(BusError),
}

impl OverrideError {
    /// Whether the failure is the mesh's own (NATS), not the host's: the
    /// job is then tried again later, never recorded as the host's result.
    pub fn is_infrastructure(&self) -> bool {
        matches!(
            self,
            OverrideError::Snapshot(_) | OverrideError::Run(RunError::Bus(_))
        )
    }

    /// Whether the host may answer better in a moment (unreachable, hung,
    /// its reply lost): worth a few more tries before it is the result.
    pub fn is_transient(&self) -> bool {
        use fleetroll_ssh::SshError;
        match self {
            OverrideError::Run(RunError::Resolve { .. }) => true,
            // Through a jump host too: what counts is the hop that failed.
            OverrideError::Run(RunError::Ssh(e)) => matches!(
                e.innermost(),
                SshError::Connect { .. } | SshError::Timeout { .. } | SshError::Protocol(_)
            ),
            _ => false,
        }
    }
}

/// What became of a host's override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Changed, after the snapshot with this id was stored.
    Changed { snapshot: String },
    /// It already was as asked: nothing written now. The snapshot an
    /// earlier try of the same job stored, if one did (its write landed
    /// but its reply was lost).
    AlreadyThere { snapshot: Option<String> },
}

fn command(operation: &str, arg: &str) -> String {
    format!("sudo -n /bin/sh -c '{SCRIPT}' fleetroll-override {operation} {arg}")
}

async fn run(
    pool: &Pool,
    hostname: &str,
    operation: &'static str,
    arg: &str,
    stdin: &[u8],
    cap: usize,
) -> Result<Vec<u8>, OverrideError> {
    let ran = pool
        .run(
            hostname,
            &command(operation, arg),
            stdin,
            pool.settings().exec_timeout,
            cap,
        )
        .await
        .map_err(|(e, _)| e)?;
    let stderr = String::from_utf8_lossy(&ran.output.stderr)
        .trim()
        .to_string();
    match ran.output.exit_status {
        Some(0) if ran.output.truncated => Err(OverrideError::Garbled(format!(
            "more than {cap} bytes of output"
        ))),
        Some(0) => Ok(ran.output.stdout),
        _ if stderr.starts_with("sudo:") => Err(OverrideError::SudoRefused(stderr)),
        status => Err(OverrideError::Failed {
            operation,
            status,
            stderr: stderr.chars().take(300).collect(),
        }),
    }
}

/// The largest override file a snapshot holds whole on this mesh: what
/// fits in one NATS message once base64-encoded.
pub fn snapshot_limit(bus: &Bus) -> usize {
    let payload = bus.client.server_info().max_payload;
    payload.saturating_sub(SNAPSHOT_OVERHEAD) / 4 * 3
}

/// The override's contents, whole; none when there is no override file.
/// A file larger than `most` bytes is refused, never cut.
pub async fn read_whole(
    pool: &Pool,
    hostname: &str,
    most: usize,
) -> Result<Option<Vec<u8>>, OverrideError> {
    let out = run(pool, hostname, "read", &most.to_string(), b"", most + 64).await?;
    let garbled =
        || OverrideError::Garbled(String::from_utf8_lossy(&out).chars().take(100).collect());
    if out == b"absent\n" {
        return Ok(None);
    }
    let newline = out.iter().position(|&b| b == b'\n').ok_or_else(garbled)?;
    let head = std::str::from_utf8(&out[..newline]).map_err(|_| garbled())?;
    let content = &out[newline + 1..];
    match head.split_once(' ') {
        Some(("present", n)) if n.parse::<usize>().ok() == Some(content.len()) => {
            Ok(Some(content.to_vec()))
        }
        Some(("toolarge", n)) => Err(OverrideError::TooLargeToSnapshot {
            size: n.parse().map_err(|_| garbled())?,
            most,
        }),
        _ => Err(garbled()),
    }
}

/// The override's contents; none when there is no override file.
pub async fn read(pool: &Pool, hostname: &str) -> Result<Option<Vec<u8>>, OverrideError> {
    read_whole(pool, hostname, MAX_OVERRIDE_BYTES).await
}

/// The id of the snapshot `job` takes on `hostname` before `occasion`: the
/// same for every try of one job, so a retry finds what an earlier try
/// stored.
fn snapshot_id(job: &str, hostname: &str, occasion: &str) -> String {
    let hash = payload_hash(format!("{job}\n{hostname}\n{occasion}").as_bytes());
    format!(
        "{}-{}-{}-{}-{}",
        &hash[..8],
        &hash[8..12],
        &hash[12..16],
        &hash[16..20],
        &hash[20..32]
    )
}

async fn snapshot(
    bus: &Bus,
    id: String,
    hostname: &str,
    occasion: &str,
    current: Option<&[u8]>,
) -> Result<String, OverrideError> {
    let snapshot = OverrideSnapshot {
        id,
        ..OverrideSnapshot::take(hostname, occasion, current)
    };
    audit_log::store_snapshot(bus, &snapshot)
        .await
        .map_err(OverrideError::Snapshot)?;
    Ok(snapshot.id)
}

/// Nothing to do now: the snapshot an earlier try of the job stored, if any.
async fn already_there(bus: &Bus, id: String) -> Result<Change, OverrideError> {
    let earlier = audit_log::load_snapshot(bus, &id)
        .await
        .map_err(OverrideError::Snapshot)?;
    Ok(Change::AlreadyThere {
        snapshot: earlier.map(|s| s.id),
    })
}

/// Makes the host's override exactly `content`, for `job` (which names its
/// snapshot).
pub async fn apply(
    pool: &Pool,
    bus: &Bus,
    hostname: &str,
    content: &[u8],
    job: &str,
) -> Result<Change, OverrideError> {
    if content.len() > MAX_OVERRIDE_BYTES {
        return Err(OverrideError::TooLarge(content.len()));
    }
    let expected = payload_hash(content);
    let id = snapshot_id(job, hostname, "before apply");
    let current = read_whole(pool, hostname, snapshot_limit(bus)).await?;
    if current.as_deref().map(payload_hash).as_ref() == Some(&expected) {
        return already_there(bus, id).await;
    }
    let snapshot = snapshot(bus, id, hostname, "before apply", current.as_deref()).await?;
    let out = run(pool, hostname, "apply", "", content, 4096).await?;
    let found = String::from_utf8_lossy(&out)
        .strip_prefix("sha256 ")
        .map(|s| s.trim().to_string())
        .ok_or_else(|| OverrideError::Garbled(String::from_utf8_lossy(&out).into_owned()))?;
    if found != expected {
        return Err(OverrideError::Verify { expected, found });
    }
    Ok(Change::Changed { snapshot })
}

/// Removes the host's override file, for `job` (which names its snapshot).
pub async fn remove(
    pool: &Pool,
    bus: &Bus,
    hostname: &str,
    job: &str,
) -> Result<Change, OverrideError> {
    let id = snapshot_id(job, hostname, "before removal");
    let Some(current) = read_whole(pool, hostname, snapshot_limit(bus)).await? else {
        return already_there(bus, id).await;
    };
    let snapshot = snapshot(bus, id, hostname, "before removal", Some(&current)).await?;
    let out = run(pool, hostname, "remove", "", b"", 4096).await?;
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
