//! The probe: one script, one exec, a strictly parsed answer.

mod report;

pub use report::{
    FileRead, FileState, ProbeParseError, ProbeReport, VaultState, hex_sha256, parse,
};

/// The script, sent on stdin to `sh -s` (see `probe.sh`).
pub const SCRIPT: &str = concat!(include_str!("state.sh"), include_str!("probe.sh"));

/// The fast refresh's script (see `state.sh`): what the full probe reports
/// as `state`, alone.
pub const FAST_SCRIPT: &str = concat!(include_str!("state.sh"), "fleetroll_state\n");

/// What identifies a host's state: the sha256 of `fleetroll_state`'s
/// answer, trailing newlines dropped (as the full probe's `$(...)` drops them).
pub fn state_token(answer: &[u8]) -> String {
    let end = answer
        .iter()
        .rposition(|&b| b != b'\n')
        .map_or(0, |i| i + 1);
    hex_sha256(&answer[..end])
}

/// The fixed command line of every probe: the script comes on stdin.
pub const COMMAND: &str = "/bin/sh -s";

/// Most of a file the probe brings back; the rest is only hashed.
pub const CONTENT_CAP: usize = 65536;
