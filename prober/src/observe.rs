//! Turning a probe's answer into the host's observation, with the ground
//! truth of SPEC 2: `applied` from the Puppet metadata file when there is
//! one, from the old heuristic (a successful run after the override's mtime)
//! when there is not, and the record says which.

use fleetroll_bus::messages::host::{AppliedSource, Observation, PuppetSource, PuppetState};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::probe::{FileState, ProbeReport, VaultState};

/// `last_run_metadata.json`, schema version 1 (seed 003). Every field may be
/// null or missing on a host whose wrapper could not know it.
#[derive(Debug, Deserialize)]
struct Metadata {
    schema_version: u32,
    #[serde(default, with = "time::serde::rfc3339::option")]
    ts: Option<OffsetDateTime>,
    success: Option<bool>,
    exit_code: Option<i64>,
    git_repo: Option<String>,
    git_branch: Option<String>,
    git_sha: Option<String>,
    override_sha: Option<String>,
    vault_sha: Option<String>,
    role: Option<String>,
    duration_s: Option<f64>,
}

fn from_metadata(bytes: &[u8]) -> Result<PuppetState, String> {
    let text =
        std::str::from_utf8(bytes).map_err(|e| format!("metadata file is not UTF-8 ({e})"))?;
    let m: Metadata =
        serde_json::from_str(text).map_err(|e| format!("metadata file is malformed: {e}"))?;
    if m.schema_version != 1 {
        return Err(format!(
            "metadata schema_version {} is not supported (this build reads 1)",
            m.schema_version
        ));
    }
    Ok(PuppetState {
        source: PuppetSource::Metadata,
        ts: m.ts,
        success: m.success,
        exit_code: m.exit_code,
        git_repo: m.git_repo,
        git_branch: m.git_branch,
        git_sha: m.git_sha,
        override_sha: m.override_sha,
        vault_sha: m.vault_sha,
        role: m.role,
        duration_s: m.duration_s,
        error: None,
    })
}

/// The few facts of Puppet's own `last_run_summary.yaml` that matter: when
/// it last ran and whether anything failed.
fn from_summary(bytes: &[u8]) -> Option<PuppetState> {
    let text = String::from_utf8_lossy(bytes);
    let mut section = "";
    let (mut last_run, mut failed) = (None, None);
    for line in text.lines() {
        if !line.starts_with(' ') {
            section = line.trim_end_matches(':');
            continue;
        }
        let Some((key, value)) = line.trim().split_once(':') else {
            continue;
        };
        let value = value.trim();
        match (section, key) {
            ("time", "last_run") => last_run = value.parse::<i64>().ok(),
            ("resources", "failed") => failed = value.parse::<u64>().ok(),
            ("events", "failure") if failed.is_none() => failed = value.parse::<u64>().ok(),
            _ => {}
        }
    }
    let ts = OffsetDateTime::from_unix_timestamp(last_run?).ok()?;
    Some(PuppetState {
        ts: Some(ts),
        success: failed.map(|f| f == 0),
        ..PuppetState::unknown(PuppetSource::Summary)
    })
}

fn puppet_state(report: &ProbeReport) -> PuppetState {
    let mut error = None;
    if let Some(read) = report.metadata.read() {
        match from_metadata(&read.content) {
            Ok(state) => return state,
            Err(e) => error = Some(e),
        }
    } else if report.metadata == FileState::Unreadable {
        error = Some("metadata file is not readable (sudo refused?)".into());
    }
    let mut state = report
        .summary
        .read()
        .and_then(|r| from_summary(&r.content))
        .unwrap_or_else(|| PuppetState::unknown(PuppetSource::None));
    state.error = error;
    state
}

/// Whether the current override (or its absence) is what Puppet last
/// applied successfully, and how that was decided.
fn applied(report: &ProbeReport, puppet: &PuppetState) -> Option<(bool, AppliedSource)> {
    let current_sha = match &report.override_file {
        FileState::Present(read) => Some(read.sha256.as_str()),
        FileState::Absent => None,
        FileState::Unreadable => return None,
    };
    let success = puppet.success?;
    match puppet.source {
        PuppetSource::Metadata => Some((
            success && puppet.override_sha.as_deref() == current_sha,
            AppliedSource::Metadata,
        )),
        PuppetSource::Summary => {
            let ran_after = match report.override_file.read() {
                Some(read) => puppet.ts?.unix_timestamp() >= read.mtime,
                None => true,
            };
            Some((success && ran_after, AppliedSource::Heuristic))
        }
        PuppetSource::None => None,
    }
}

/// The new observation after a successful probe.
pub fn observed(
    previous: Observation,
    report: &ProbeReport,
    address: Option<String>,
    now: OffsetDateTime,
) -> Observation {
    let puppet = puppet_state(report);
    let applied = applied(report, &puppet);
    let text = |state: &FileState| {
        state
            .read()
            .map(|r| String::from_utf8_lossy(&r.content).trim().to_string())
    };
    Observation {
        probed_at: Some(now),
        last_seen: Some(now),
        address,
        sshable: Some(true),
        sudoable: Some(report.sudo),
        os: Some(report.os.clone()),
        os_version: report.os_version.clone(),
        uptime_s: report.uptime_s,
        role: text(&report.role).filter(|r| !r.is_empty()),
        override_present: match report.override_file {
            FileState::Unreadable => None,
            ref state => Some(state.read().is_some()),
        },
        override_sha256: report.override_file.read().map(|r| r.sha256.clone()),
        override_contents: text(&report.override_file),
        override_size: report.override_file.read().map(|r| r.size),
        override_path: report.override_file.read().map(|r| r.path.clone()),
        vault_sha256: match &report.vault {
            VaultState::Present { sha256 } => Some(sha256.clone()),
            _ => None,
        },
        applied: applied.map(|(a, _)| a),
        applied_source: applied.map(|(_, s)| s),
        puppet: Some(puppet),
        state_token: Some(crate::probe::state_token(&report.state)),
        last_error: None,
        last_error_at: None,
        ..previous
    }
}

/// The observation after a failed probe: what was known stays, the failure
/// is recorded.
pub fn failed(
    previous: Observation,
    error: &str,
    sshable: Option<bool>,
    address: Option<String>,
    now: OffsetDateTime,
) -> Observation {
    Observation {
        probed_at: Some(now),
        sshable: sshable.or(previous.sshable.map(|_| false)),
        address: address.or(previous.address.clone()),
        last_error: Some(error.to_string()),
        last_error_at: Some(now),
        state_token: None,
        ..previous
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::FileRead;

    fn file(content: &[u8], mtime: i64) -> FileState {
        FileState::Present(FileRead {
            path: "/x".into(),
            size: content.len() as u64,
            sha256: crate::probe::hex_sha256(content),
            mtime,
            content: content.to_vec(),
            truncated: false,
        })
    }

    fn report(override_file: FileState, metadata: FileState, summary: FileState) -> ProbeReport {
        ProbeReport {
            os: "Linux".into(),
            os_version: None,
            uptime_s: Some(5),
            sudo: true,
            state: b"state".to_vec(),
            role: file(b"talos\n", 0),
            override_file,
            metadata,
            summary,
            vault: VaultState::Absent,
        }
    }

    fn observe(r: &ProbeReport) -> Observation {
        observed(
            Observation::discovered("h", OffsetDateTime::UNIX_EPOCH),
            r,
            None,
            OffsetDateTime::now_utc(),
        )
    }

    #[test]
    fn applied_from_metadata_compares_override_shas() {
        let content = b"PUPPET_BRANCH=feature_xyz\n";
        let sha = crate::probe::hex_sha256(content);
        let meta = format!(
            r#"{{"schema_version":1,"success":true,"exit_code":2,"override_sha":"{sha}","git_branch":"feature_xyz"}}"#
        );
        let o = observe(&report(
            file(content, 100),
            file(meta.as_bytes(), 0),
            FileState::Absent,
        ));
        assert_eq!(
            (o.applied, o.applied_source),
            (Some(true), Some(AppliedSource::Metadata))
        );
        assert_eq!(o.role.as_deref(), Some("talos"));
        let stale = r#"{"schema_version":1,"success":true,"override_sha":null}"#;
        let o = observe(&report(
            file(content, 100),
            file(stale.as_bytes(), 0),
            FileState::Absent,
        ));
        assert_eq!(
            o.applied,
            Some(false),
            "Puppet has not applied this override yet"
        );
        let clean = observe(&report(
            FileState::Absent,
            file(stale.as_bytes(), 0),
            FileState::Absent,
        ));
        assert_eq!(clean.applied, Some(true), "no override, and none applied");
    }

    #[test]
    fn without_metadata_the_heuristic_decides_and_says_so() {
        let summary = b"---\nresources:\n  failed: 0\ntime:\n  last_run: 2000\n";
        let o = observe(&report(
            file(b"X=1\n", 1000),
            FileState::Absent,
            file(summary, 0),
        ));
        assert_eq!(
            (o.applied, o.applied_source),
            (Some(true), Some(AppliedSource::Heuristic))
        );
        assert_eq!(o.puppet.as_ref().unwrap().source, PuppetSource::Summary);
        let o = observe(&report(
            file(b"X=1\n", 3000),
            FileState::Absent,
            file(summary, 0),
        ));
        assert_eq!(
            o.applied,
            Some(false),
            "the override is newer than the last run"
        );
    }

    #[test]
    fn broken_metadata_is_recorded_and_the_summary_used() {
        let summary = b"---\ntime:\n  last_run: 2000\nevents:\n  failure: 1\n";
        for (bad, says) in [
            (&b"{not json"[..], "malformed"),
            (
                &b"{\"schema_version\":1,\"git_branch\":\"\xff\"}"[..],
                "not UTF-8",
            ),
        ] {
            let o = observe(&report(FileState::Absent, file(bad, 0), file(summary, 0)));
            let puppet = o.puppet.unwrap();
            assert_eq!(puppet.source, PuppetSource::Summary);
            assert!(
                puppet.error.as_deref().unwrap().contains(says),
                "{:?}",
                puppet.error
            );
            assert_eq!(puppet.success, Some(false));
            assert_eq!(o.applied, Some(false));
        }
    }
}
