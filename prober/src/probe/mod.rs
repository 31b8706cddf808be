//! The probe: one script, one exec, a strictly parsed answer.

mod report;

pub use report::{
    FileRead, FileState, ProbeParseError, ProbeReport, VaultState, hex_sha256, parse,
};

/// The script, sent on stdin to `sh -s` (see `probe.sh`).
pub const SCRIPT: &str = include_str!("probe.sh");

/// The fixed command line of every probe: the script comes on stdin.
pub const COMMAND: &str = "/bin/sh -s";

/// Most of a file the probe brings back; the rest is only hashed.
pub const CONTENT_CAP: usize = 65536;
