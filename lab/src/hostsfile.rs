//! The lab's managed blocks in /etc/hosts, so that lab host names resolve
//! through the system resolver like real ones.
//!
//! Each lab owns one block delimited by `# BEGIN fleetroll-lab <id> ...` and
//! `# END fleetroll-lab <id>`; nothing outside its own block is touched.

use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{IoContext, LabError};
use crate::system::MachineLock;

const HOSTS: &str = "/etc/hosts";

fn begin_marker(id: &str) -> String {
    format!("# BEGIN fleetroll-lab {id}")
}

fn end_marker(id: &str) -> String {
    format!("# END fleetroll-lab {id}")
}

/// Adds (or replaces) lab `id`'s block.
pub(crate) fn add_block(
    id: &str,
    dir: &Path,
    entries: &[(Ipv4Addr, String)],
) -> Result<(), LabError> {
    let _lock = MachineLock::acquire("hosts.lock")?;
    let current = fs::read_to_string(HOSTS).ctx(|| format!("read {HOSTS}"))?;
    let mut text = without_block(&current, id);
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    // The directory is only a hint for humans; keep the line a comment.
    let shown_dir: String = dir
        .display()
        .to_string()
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    text.push_str(&format!("{} {shown_dir}\n", begin_marker(id)));
    for (addr, name) in entries {
        text.push_str(&format!("{addr} {name}\n"));
    }
    text.push_str(&end_marker(id));
    text.push('\n');
    write_hosts(&text)
}

/// Removes lab `id`'s block; a no-op when there is none.
pub(crate) fn remove_block(id: &str) -> Result<(), LabError> {
    let _lock = MachineLock::acquire("hosts.lock")?;
    let current = fs::read_to_string(HOSTS).ctx(|| format!("read {HOSTS}"))?;
    let text = without_block(&current, id);
    if text != current {
        write_hosts(&text)?;
    }
    Ok(())
}

/// How many lines of lab `id`'s block are in /etc/hosts (0 when none).
pub fn block_lines(id: &str) -> Result<usize, LabError> {
    let current = fs::read_to_string(HOSTS).ctx(|| format!("read {HOSTS}"))?;
    Ok(current.lines().count() - without_block(&current, id).lines().count())
}

/// Ids of every lab block present.
pub(crate) fn block_ids() -> Result<Vec<String>, LabError> {
    let current = fs::read_to_string(HOSTS).ctx(|| format!("read {HOSTS}"))?;
    Ok(current
        .lines()
        .filter_map(|l| l.strip_prefix("# BEGIN fleetroll-lab "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

fn without_block(text: &str, id: &str) -> String {
    let begin = begin_marker(id);
    let end = end_marker(id);
    let mut out = String::with_capacity(text.len());
    let mut inside = false;
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches('\n');
        if !inside && (bare == begin || bare.starts_with(&format!("{begin} "))) {
            inside = true;
            continue;
        }
        if inside {
            if bare == end {
                inside = false;
            }
            continue;
        }
        out.push_str(line);
    }
    out
}

/// Replaces /etc/hosts' content. A rename is atomic for readers, but
/// containers often bind-mount /etc/hosts, where rename fails with EBUSY: then
/// the file is rewritten in place (new content first, then the tail cut), so
/// a concurrent reader sees the old or the new entries, never an empty file.
fn write_hosts(text: &str) -> Result<(), LabError> {
    let path = Path::new(HOSTS);
    let tmp = path.with_file_name(format!(".hosts.fleetroll-lab.{}", std::process::id()));
    let renamed = (|| -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        let mode = fs::metadata(path)
            .map(|m| m.permissions().mode())
            .unwrap_or(0o644);
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
        fs::rename(&tmp, path)
    })();
    if renamed.is_ok() {
        return Ok(());
    }
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .ctx(|| format!("open {HOSTS}"))?;
    f.write_all(text.as_bytes())
        .ctx(|| format!("write {HOSTS}"))?;
    f.set_len(text.len() as u64)
        .ctx(|| format!("truncate {HOSTS}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_only_its_own_block() {
        let text = "127.0.0.1 localhost\n# BEGIN fleetroll-lab a /x\n127.10.0.1 h\n# END fleetroll-lab a\n# BEGIN fleetroll-lab b /y\n127.11.0.1 g\n# END fleetroll-lab b\n::1 ip6\n";
        let out = without_block(text, "a");
        assert_eq!(
            out,
            "127.0.0.1 localhost\n# BEGIN fleetroll-lab b /y\n127.11.0.1 g\n# END fleetroll-lab b\n::1 ip6\n"
        );
        assert_eq!(without_block(&out, "b"), "127.0.0.1 localhost\n::1 ip6\n");
        assert_eq!(without_block(&out, "zzz"), out);
    }
}
