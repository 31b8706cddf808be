//! The lab's Puppet model: which git sha a branch "is", which branches break,
//! and the state a host has before anyone runs Puppet on it.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{IoContext, LabError};
use crate::scenario::{HostConfig, MetadataMode, PuppetSpec};

/// The git sha the lab's Puppet "applies" for `branch` of `repo`: sha1 of
/// `"<repo>\n<branch>"`, 40 lowercase hex digits. The lab's run-puppet.sh
/// computes the same with `sha1sum`.
pub fn git_sha(repo: &str, branch: &str) -> String {
    sha1_smol::Sha1::from(format!("{repo}\n{branch}"))
        .digest()
        .to_string()
}

/// Where a branch's "broken" marker lives: sha1 of the branch name, so any
/// branch name (quotes, slashes, newlines) maps to a plain file name.
pub(crate) fn branch_key(branch: &[u8]) -> String {
    sha1_smol::Sha1::from(branch).digest().to_string()
}

/// sha256 of some bytes, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// `PUPPET_REPO` and `PUPPET_BRANCH` of an override, read as plain
/// `KEY=value` lines (optionally quoted). Used only for the state a host starts
/// with; the lab's run-puppet.sh sources the file like a real wrapper.
pub(crate) fn override_settings(content: &str) -> (Option<String>, Option<String>) {
    let mut repo = None;
    let mut branch = None;
    for line in content.lines() {
        let line = line.trim();
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = unquote(value.trim());
        match key.trim() {
            "PUPPET_REPO" => repo = Some(value),
            "PUPPET_BRANCH" => branch = Some(value),
            _ => {}
        }
    }
    (repo, branch)
}

fn unquote(v: &str) -> String {
    if v.len() >= 2
        && ((v.starts_with('\'') && v.ends_with('\'')) || (v.starts_with('"') && v.ends_with('"')))
    {
        v[1..v.len() - 1].to_string()
    } else {
        v.to_string()
    }
}

/// The metadata file, field for field as the reference writer produces it.
#[derive(Serialize)]
struct Metadata<'a> {
    schema_version: u32,
    ts: String,
    success: bool,
    exit_code: i32,
    git_repo: &'a str,
    git_branch: &'a str,
    git_sha: &'a str,
    override_sha: Option<String>,
    vault_sha: Option<String>,
    override_path: &'a str,
    role: &'a str,
    duration_s: u64,
}

/// Formats a time as the metadata's `ts` (ISO 8601, seconds, UTC).
pub(crate) fn iso_seconds(t: SystemTime) -> String {
    let dt = time::OffsetDateTime::from(t);
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    dt.format(&f).unwrap_or_default()
}

/// Writes the state a host has before the lab starts: the result of a Puppet
/// run at "boot" with the host's initial override, exactly as the lab's
/// run-puppet.sh would leave it (metadata, last_run_summary.yaml, the
/// `applied` marker and the first events.log line).
pub(crate) fn write_initial_state(
    host_dir: &Path,
    fs_root: &Path,
    cfg: &HostConfig,
    puppet: &PuppetSpec,
    vault: &[u8],
    at: SystemTime,
) -> Result<(), LabError> {
    let (repo, branch) = cfg
        .override_content
        .as_deref()
        .map(override_settings)
        .unwrap_or((None, None));
    let repo = repo.unwrap_or_else(|| puppet.repo.clone());
    let branch = branch.unwrap_or_else(|| puppet.branch.clone());
    let sha = git_sha(&repo, &branch);
    let override_sha = cfg
        .override_content
        .as_deref()
        .map(|c| sha256_hex(c.as_bytes()));
    let exit_code = puppet.broken_branches.get(&branch).copied().unwrap_or(2);
    let success = matches!(exit_code, 0 | 2);
    if success {
        let applied = format!(
            "{sha} {} {}\n",
            override_sha.as_deref().unwrap_or("none"),
            cfg.role
        );
        write_file(&host_dir.join("applied"), applied.as_bytes(), 0o644)?;
    }

    let metadata_file = fs_root.join(cfg.os.metadata_path().trim_start_matches('/'));
    match cfg.metadata {
        MetadataMode::Present => {
            let m = Metadata {
                schema_version: 1,
                ts: iso_seconds(at),
                success,
                exit_code,
                git_repo: &repo,
                git_branch: &branch,
                git_sha: &sha,
                override_sha,
                vault_sha: Some(sha256_hex(vault)),
                override_path: cfg.os.override_path(),
                role: &cfg.role,
                duration_s: cfg.puppet_duration.as_secs(),
            };
            let mut text = serde_json::to_vec_pretty(&m).unwrap_or_default();
            text.push(b'\n');
            write_file(&metadata_file, &text, 0o644)?;
        }
        MetadataMode::Absent => {}
        MetadataMode::Malformed => write_file(
            &metadata_file,
            format!(
                "{{\"schema_version\": 1, \"ts\": \"{}\", \"success\": tru",
                iso_seconds(at)
            )
            .as_bytes(),
            0o644,
        )?,
        MetadataMode::NotUtf8 => write_file(
            &metadata_file,
            b"{\"schema_version\": 1, \"git_branch\": \"\xff\xfe\xfd\"}\n",
            0o644,
        )?,
    }

    let epoch = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let (failed, changed) = if success { (0, 1) } else { (1, 0) };
    let summary = format!(
        "---\nversion:\n  config: {sha}\n  puppet: 7.34.0\nresources:\n  changed: {changed}\n  failed: {failed}\n  total: 120\ntime:\n  total: {}\n  last_run: {}\nchanges:\n  total: {changed}\nevents:\n  failure: {failed}\n  success: {changed}\n  total: 1\n",
        cfg.puppet_duration.as_secs(),
        epoch.as_secs()
    );
    write_file(
        &fs_root.join("opt/puppetlabs/puppet/cache/state/last_run_summary.yaml"),
        summary.as_bytes(),
        0o644,
    )?;

    let hex: String = branch.bytes().map(|b| format!("{b:02x}")).collect();
    let line = format!("puppet {} {exit_code} {hex}\n", epoch.as_millis());
    let log = host_dir.join("events.log");
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .ctx(|| format!("open {}", log.display()))?;
    f.write_all(line.as_bytes())
        .ctx(|| format!("write {}", log.display()))?;
    Ok(())
}

/// Writes a file with a mode (not atomically: only used while the host is
/// not yet reachable).
pub(crate) fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), LabError> {
    fs::write(path, bytes).ctx(|| format!("write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .ctx(|| format!("chmod {}", path.display()))
}

/// Writes a file through a temp file and a rename in the same directory, so
/// a host reading it concurrently sees the old or the new content.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), LabError> {
    let dir = path
        .parent()
        .ok_or_else(|| LabError::Config(format!("{} has no parent", path.display())))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.fleetroll-lab.{}", std::process::id()));
    write_file(&tmp, bytes, mode)?;
    fs::rename(&tmp, path).ctx(|| format!("rename to {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_sha_matches_sha1sum() {
        let out = std::process::Command::new("/bin/sh")
            .args([
                "-c",
                "printf '%s\\n%s' \"$1\" \"$2\" | sha1sum | cut -c1-40",
                "sh",
            ])
            .args(["https://example/repo.git", "feat/\"x\"-ü"])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap().trim(),
            git_sha("https://example/repo.git", "feat/\"x\"-ü")
        );
        assert_eq!(git_sha("a", "b").len(), 40);
    }

    #[test]
    fn reads_plain_and_quoted_settings() {
        let (r, b) = override_settings(
            "# comment\nPUPPET_REPO=\"https://x/y.git\"\nexport PUPPET_BRANCH='feat x'\nPUPPET_MAIL=a@b\n",
        );
        assert_eq!(r.as_deref(), Some("https://x/y.git"));
        assert_eq!(b.as_deref(), Some("feat x"));
    }
}
