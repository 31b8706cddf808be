//! Where everything lives inside a lab directory.
//!
//! ```text
//! <dir>/lab.json                 what `up` prints; also read by `down`
//! <dir>/lab.log, sshd.log        daemon and sshd diagnostics
//! <dir>/ssh/                     host key, client identity, sshd_config, known_hosts
//!                                (and the bastion's host key and sshd_config)
//! <dir>/ssh_config               OpenSSH client config for the lab's hosts
//! <dir>/bin/lab-session          the ForceCommand wrapper
//! <dir>/share/                   shell shims shared by all hosts (run-puppet.sh, reboot, ...)
//! <dir>/puppet/broken/<key>      exit code of a branch whose Puppet run fails
//! <dir>/requests/                reboot requests dropped by hosts' `reboot`
//! <dir>/by-addr/<address>        which host answers on an address
//! <dir>/hosts/<short>/fs/...     the host's own files, bind-mounted into its sessions
//! <dir>/hosts/<short>/knobs/     per-host misbehaviour read by the session wrapper
//! <dir>/hosts/<short>/events.log append-only Puppet run log (read by the Taskcluster double)
//! ```

use std::path::{Path, PathBuf};

/// Where every session sees its lab's directory. The daemon bind-mounts
/// the lab directory here in each host namespace, so the SSH user reaches
/// the wrapper and knobs whatever the permissions of the directory's
/// ancestors (a lab under /root works).
pub(crate) const IN_SESSION_ROOT: &str = "/run/fleetroll-lab/lab";

/// Paths of one lab directory.
#[derive(Debug, Clone)]
pub(crate) struct LabLayout {
    root: PathBuf,
}

impl LabLayout {
    pub(crate) fn new(root: PathBuf) -> Self {
        LabLayout { root }
    }
    /// The same layout as seen from inside a host session.
    pub(crate) fn in_session(&self) -> LabLayout {
        LabLayout::new(PathBuf::from(IN_SESSION_ROOT))
    }
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }
    pub(crate) fn state_file(&self) -> PathBuf {
        self.root.join("lab.json")
    }
    pub(crate) fn log_file(&self) -> PathBuf {
        self.root.join("lab.log")
    }
    pub(crate) fn sshd_log(&self) -> PathBuf {
        self.root.join("sshd.log")
    }
    pub(crate) fn ssh_dir(&self) -> PathBuf {
        self.root.join("ssh")
    }
    pub(crate) fn host_key(&self) -> PathBuf {
        self.ssh_dir().join("host_ed25519_key")
    }
    pub(crate) fn client_key(&self) -> PathBuf {
        self.ssh_dir().join("id_ed25519")
    }
    pub(crate) fn authorized_keys(&self) -> PathBuf {
        self.ssh_dir().join("authorized_keys")
    }
    pub(crate) fn known_hosts(&self) -> PathBuf {
        self.ssh_dir().join("known_hosts")
    }
    pub(crate) fn sshd_config(&self) -> PathBuf {
        self.ssh_dir().join("sshd_config")
    }
    pub(crate) fn bastion_host_key(&self) -> PathBuf {
        self.ssh_dir().join("bastion_host_ed25519_key")
    }
    pub(crate) fn bastion_sshd_config(&self) -> PathBuf {
        self.ssh_dir().join("bastion_sshd_config")
    }
    pub(crate) fn ssh_client_config(&self) -> PathBuf {
        self.root.join("ssh_config")
    }
    pub(crate) fn bin_dir(&self) -> PathBuf {
        self.root.join("bin")
    }
    pub(crate) fn session_wrapper(&self) -> PathBuf {
        self.bin_dir().join("lab-session")
    }
    pub(crate) fn share_dir(&self) -> PathBuf {
        self.root.join("share")
    }
    pub(crate) fn broken_dir(&self) -> PathBuf {
        self.root.join("puppet").join("broken")
    }
    pub(crate) fn requests_dir(&self) -> PathBuf {
        self.root.join("requests")
    }
    pub(crate) fn by_addr_dir(&self) -> PathBuf {
        self.root.join("by-addr")
    }
    pub(crate) fn hosts_dir(&self) -> PathBuf {
        self.root.join("hosts")
    }
    pub(crate) fn host(&self, short: &str) -> HostLayout {
        HostLayout {
            dir: self.hosts_dir().join(short),
        }
    }
}

/// Paths of one lab host.
#[derive(Debug, Clone)]
pub(crate) struct HostLayout {
    dir: PathBuf,
}

impl HostLayout {
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
    /// The host's root: `fs/etc/puppet` is what the host sees as `/etc/puppet`.
    pub(crate) fn fs(&self) -> PathBuf {
        self.dir.join("fs")
    }
    /// Maps a path on the host (`/etc/puppet/ronin_settings`) to the file in
    /// the lab directory, refusing paths that would escape the host's tree.
    pub(crate) fn on_host(&self, host_path: &str) -> Option<PathBuf> {
        let rel = host_path.strip_prefix('/')?;
        let mut out = self.fs();
        for part in rel.split('/') {
            match part {
                "" | "." => {}
                ".." => return None,
                p => out.push(p),
            }
        }
        Some(out)
    }
    pub(crate) fn knobs(&self) -> PathBuf {
        self.dir.join("knobs")
    }
    pub(crate) fn events_log(&self) -> PathBuf {
        self.dir.join("events.log")
    }
    pub(crate) fn host_config_file(&self) -> PathBuf {
        self.fs().join("usr/local/sbin/.fleetroll-lab-host")
    }
    pub(crate) fn sudoers(&self) -> PathBuf {
        self.fs()
            .join("etc/sudoers.d")
            .join(crate::system::SUDOERS_NAME)
    }
    /// The host's own key of a kind (rotated or set by a test).
    pub(crate) fn own_host_key(&self, kind: crate::hostkey::HostKeyKind) -> PathBuf {
        self.dir.join(format!("ssh_host_{}_key", kind.file_stem()))
    }
    /// The certificate of the host key at `key` (the host's own, or the
    /// lab's shared one): always in the host's directory.
    pub(crate) fn host_certificate(&self, key: &Path) -> PathBuf {
        let name = key
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.dir.join(format!("{name}-cert.pub"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_paths_cannot_escape() {
        let l = LabLayout::new(PathBuf::from("/lab")).host("lab-0001");
        assert_eq!(
            l.on_host("/etc/puppet/ronin_settings").unwrap(),
            PathBuf::from("/lab/hosts/lab-0001/fs/etc/puppet/ronin_settings")
        );
        assert!(l.on_host("/etc/../../x").is_none());
        assert!(l.on_host("etc/puppet").is_none());
    }
}
