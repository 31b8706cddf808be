//! Reading the probe's answer. Anything short of a complete, consistent
//! record is an error: a probe either yields the whole truth about a host
//! or a recorded failure, never half a record.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

use super::CONTENT_CAP;

const HEADER: &str = "FLEETROLL-PROBE 1";

/// What the probe found on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    pub os: String,
    pub os_version: Option<String>,
    pub uptime_s: Option<u64>,
    pub sudo: bool,
    /// `fleetroll_state`'s answer (see [`super::state_token`]).
    pub state: Vec<u8>,
    pub role: FileState,
    pub override_file: FileState,
    pub metadata: FileState,
    pub summary: FileState,
    pub vault: VaultState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileState {
    Absent,
    /// There, but not readable (sudo refused, say).
    Unreadable,
    Present(FileRead),
}

impl FileState {
    pub fn read(&self) -> Option<&FileRead> {
        match self {
            FileState::Present(read) => Some(read),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRead {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    pub mtime: i64,
    /// At most [`CONTENT_CAP`] bytes.
    pub content: Vec<u8>,
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultState {
    Absent,
    Unreadable,
    Present { sha256: String },
}

/// Why an answer is not a probe record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeParseError {
    #[error("the probe printed no header: the host did not run it, or its shell failed")]
    NoHeader,
    #[error("the probe answer ends early (no END line): truncated")]
    Truncated,
    #[error(
        "the probe answer has {got} fields but says it has {expected}: truncated or interleaved"
    )]
    CountMismatch { expected: usize, got: usize },
    #[error("probe line {line}: {detail}")]
    Malformed { line: usize, detail: String },
    #[error("probe field `{0}` appears twice")]
    Duplicate(String),
    #[error("probe field `{0}` is missing")]
    Missing(String),
    #[error("probe field `{0}` is not part of format 1")]
    Unknown(String),
    #[error("probe field `{key}`: {detail}")]
    BadValue { key: String, detail: String },
    #[error("{0} changed while it was being read; the next probe will tell")]
    Changed(String),
}

/// Parses the probe's standard output.
pub fn parse(stdout: &[u8]) -> Result<ProbeReport, ProbeParseError> {
    let text = std::str::from_utf8(stdout).map_err(|e| ProbeParseError::Malformed {
        line: 0,
        detail: format!(
            "not UTF-8 ({e}); the probe encodes all host data, so this is not its output"
        ),
    })?;
    // A last line without its newline was cut off in transit.
    let complete = match text.rfind('\n') {
        Some(end) if text.contains("\nEND ") => &text[..=end],
        _ if text.starts_with(HEADER) => return Err(ProbeParseError::Truncated),
        _ => return Err(ProbeParseError::NoHeader),
    };
    let mut lines = complete.lines().enumerate();
    match lines.next() {
        Some((_, HEADER)) => {}
        _ => return Err(ProbeParseError::NoHeader),
    }
    let mut fields = Fields(BTreeMap::new());
    let mut declared = None;
    for (index, line) in lines {
        if let Some(count) = line.strip_prefix("END ") {
            declared = Some(
                count
                    .parse::<usize>()
                    .map_err(|_| ProbeParseError::Malformed {
                        line: index + 1,
                        detail: format!("bad END line `{line}`"),
                    })?,
            );
            break;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| ProbeParseError::Malformed {
                line: index + 1,
                detail: "expected key=value".into(),
            })?;
        if fields
            .0
            .insert(key.to_string(), value.to_string())
            .is_some()
        {
            return Err(ProbeParseError::Duplicate(key.to_string()));
        }
    }
    let declared = declared.ok_or(ProbeParseError::Truncated)?;
    if declared != fields.0.len() {
        return Err(ProbeParseError::CountMismatch {
            expected: declared,
            got: fields.0.len(),
        });
    }
    let report = ProbeReport {
        os: fields.take("os")?,
        os_version: fields.text_b64("os_version")?,
        uptime_s: fields.optional_number("uptime_s")?,
        sudo: match fields.take("sudo")?.as_str() {
            "ok" => true,
            "refused" => false,
            other => return Err(bad("sudo", format!("`{other}`"))),
        },
        state: fields.bytes_b64("state")?,
        role: fields.file("role")?,
        override_file: fields.file("override")?,
        metadata: fields.file("metadata")?,
        summary: fields.file("summary")?,
        vault: match fields.take("vault")?.as_str() {
            "absent" => VaultState::Absent,
            "unreadable" => VaultState::Unreadable,
            "present" => VaultState::Present {
                sha256: fields.sha("vault_sha256")?,
            },
            other => return Err(bad("vault", format!("`{other}`"))),
        },
    };
    if let Some(key) = fields.0.keys().next() {
        return Err(ProbeParseError::Unknown(key.clone()));
    }
    Ok(report)
}

fn bad(key: &str, detail: impl Into<String>) -> ProbeParseError {
    ProbeParseError::BadValue {
        key: key.to_string(),
        detail: detail.into(),
    }
}

struct Fields(BTreeMap<String, String>);

impl Fields {
    fn take(&mut self, key: &str) -> Result<String, ProbeParseError> {
        self.0
            .remove(key)
            .ok_or_else(|| ProbeParseError::Missing(key.to_string()))
    }

    fn bytes_b64(&mut self, key: &str) -> Result<Vec<u8>, ProbeParseError> {
        STANDARD
            .decode(self.take(key)?)
            .map_err(|e| bad(key, format!("not base64: {e}")))
    }

    fn text_b64(&mut self, key: &str) -> Result<Option<String>, ProbeParseError> {
        let bytes = self.bytes_b64(key)?;
        let text = String::from_utf8_lossy(&bytes).trim().to_string();
        Ok((!text.is_empty()).then_some(text))
    }

    fn optional_number(&mut self, key: &str) -> Result<Option<u64>, ProbeParseError> {
        let value = self.take(key)?;
        if value.is_empty() {
            return Ok(None);
        }
        value
            .parse()
            .map(Some)
            .map_err(|_| bad(key, format!("`{value}` is not a number")))
    }

    fn number<T: std::str::FromStr>(&mut self, key: &str) -> Result<T, ProbeParseError> {
        let value = self.take(key)?;
        value
            .parse()
            .map_err(|_| bad(key, format!("`{value}` is not a number")))
    }

    fn sha(&mut self, key: &str) -> Result<String, ProbeParseError> {
        let value = self.take(key)?;
        if value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(value.to_ascii_lowercase())
        } else {
            Err(bad(key, format!("`{value}` is not a sha256")))
        }
    }

    fn file(&mut self, name: &str) -> Result<FileState, ProbeParseError> {
        match self.take(name)?.as_str() {
            "absent" => Ok(FileState::Absent),
            "unreadable" => Ok(FileState::Unreadable),
            "present" => {
                let read = FileRead {
                    path: self.take(&format!("{name}_path"))?,
                    size: self.number(&format!("{name}_size"))?,
                    sha256: self.sha(&format!("{name}_sha256"))?,
                    mtime: self.number(&format!("{name}_mtime"))?,
                    content: self.bytes_b64(&format!("{name}_b64"))?,
                    truncated: false,
                };
                let sent = read.content.len() as u64;
                // The size and the capped contents come from one copy of the
                // file: more bytes than either is no probe's answer.
                if read.size < sent || read.content.len() > CONTENT_CAP {
                    return Err(bad(
                        &format!("{name}_size"),
                        format!(
                            "{} bytes, yet {sent} were sent (the probe sends at most {CONTENT_CAP})",
                            read.size
                        ),
                    ));
                }
                let truncated = read.size > sent;
                if truncated && read.content.len() != CONTENT_CAP {
                    return Err(ProbeParseError::Changed(read.path));
                }
                if !truncated && hex_sha256(&read.content) != read.sha256 {
                    return Err(ProbeParseError::Changed(read.path));
                }
                Ok(FileState::Present(FileRead { truncated, ..read }))
            }
            other => Err(bad(name, format!("`{other}`"))),
        }
    }
}

/// The sha256 of some bytes, lower-case hex.
pub fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &[u8]) -> String {
        STANDARD.encode(s)
    }

    fn answer(extra: &[(&str, String)]) -> String {
        let role = b"gecko_t_linux_talos\n";
        let mut fields: Vec<(String, String)> = vec![
            ("os".into(), "Linux".into()),
            ("sudo".into(), "ok".into()),
            (
                "state".into(),
                b64(b"/etc/puppet_role 20 1790000000 1790000000 42\nboot"),
            ),
            ("os_version".into(), b64(b"Debian 12")),
            ("uptime_s".into(), "3600".into()),
            ("role".into(), "present".into()),
            ("role_path".into(), "/etc/puppet_role".into()),
            ("role_size".into(), role.len().to_string()),
            ("role_sha256".into(), hex_sha256(role)),
            ("role_mtime".into(), "1790000000".into()),
            ("role_b64".into(), b64(role)),
            ("override".into(), "absent".into()),
            ("metadata".into(), "unreadable".into()),
            ("summary".into(), "absent".into()),
            ("vault".into(), "present".into()),
            ("vault_sha256".into(), "ab".repeat(32)),
        ];
        for (k, v) in extra {
            fields.retain(|(key, _)| key != k);
            fields.push((k.to_string(), v.clone()));
        }
        let mut out = format!("{HEADER}\n");
        for (k, v) in &fields {
            out.push_str(&format!("{k}={v}\n"));
        }
        out.push_str(&format!("END {}\n", fields.len()));
        out
    }

    #[test]
    fn a_complete_answer_parses() {
        let report = parse(answer(&[]).as_bytes()).unwrap();
        assert_eq!(report.os, "Linux");
        assert!(report.sudo);
        assert_eq!(
            report.role.read().unwrap().content,
            b"gecko_t_linux_talos\n"
        );
        assert_eq!(report.metadata, FileState::Unreadable);
        assert_eq!(
            report.vault,
            VaultState::Present {
                sha256: "ab".repeat(32)
            }
        );
    }

    #[test]
    fn anything_incomplete_or_inconsistent_is_an_error() {
        let full = answer(&[]);
        let cut = &full[..full.len() / 2];
        assert_eq!(parse(cut.as_bytes()), Err(ProbeParseError::Truncated));
        assert_eq!(parse(b""), Err(ProbeParseError::NoHeader));
        assert_eq!(
            parse(b"Permission denied\n"),
            Err(ProbeParseError::NoHeader)
        );
        let miscounted = full.replace("END 16", "END 17");
        assert!(matches!(
            parse(miscounted.as_bytes()),
            Err(ProbeParseError::CountMismatch { .. })
        ));
        let unknown = answer(&[("colour", "red".into())]);
        assert_eq!(
            parse(unknown.as_bytes()),
            Err(ProbeParseError::Unknown("colour".into()))
        );
        let changed = answer(&[("role_b64", b64(b"another role\n"))]);
        assert!(matches!(
            parse(changed.as_bytes()),
            Err(ProbeParseError::Changed(_))
        ));
        let bad_sudo = answer(&[("sudo", "maybe".into())]);
        assert!(matches!(
            parse(bad_sudo.as_bytes()),
            Err(ProbeParseError::BadValue { .. })
        ));
        let not_b64 = answer(&[("role_b64", "%%%".into())]);
        assert!(matches!(
            parse(not_b64.as_bytes()),
            Err(ProbeParseError::BadValue { .. })
        ));
        let duplicated = full.replace("os=Linux\n", "os=Linux\nos=Darwin\n");
        assert_eq!(
            parse(duplicated.as_bytes()),
            Err(ProbeParseError::Duplicate("os".into()))
        );
        assert!(matches!(
            parse(b"FLEETROLL-PROBE 1\n\xff\xfe\nEND 1\n"),
            Err(ProbeParseError::Malformed { .. })
        ));
    }

    /// Found by fuzzing (`fuzz/regressions/probe_output/size-below-contents`):
    /// a file said to be 118 bytes came with 237, and was read as consistent.
    #[test]
    fn a_size_below_the_contents_sent_is_refused() {
        let answer = include_bytes!("../../../fuzz/regressions/probe_output/size-below-contents");
        assert!(
            matches!(
                parse(answer),
                Err(ProbeParseError::BadValue { ref key, .. }) if key == "summary_size"
            ),
            "{:?}",
            parse(answer)
        );
    }
}
