//! The private mount namespace each connection to a lab host runs in.
//!
//! The daemon enters it between fork and exec of `sshd -i`, so sshd, the
//! ForceCommand wrapper and everything the client runs (sudo included) see
//! the host's own /etc/puppet, /etc/puppet_role, ... and its host name.
//! Propagation is private: nothing mounted here is visible outside, and the
//! mounts vanish with the connection's last process.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::LabError;
use crate::layout::HostLayout;
use crate::scenario::Os;

/// Bind mounts and host name of one host, prepared ahead of time so that
/// entering needs no allocation (only async-signal-safe calls are allowed
/// between fork and exec).
#[derive(Debug)]
pub(crate) struct MountPlan {
    binds: Vec<(CString, CString)>,
    hostname: CString,
}

fn cpath(p: &Path) -> Result<CString, LabError> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| LabError::Config(format!("path {} contains NUL", p.display())))
}

impl MountPlan {
    pub(crate) fn for_host(
        lab_dir: &Path,
        host: &HostLayout,
        os: Os,
        fqdn: &str,
    ) -> Result<MountPlan, LabError> {
        let fs = host.fs();
        let mut pairs: Vec<(&str, &str)> = vec![
            ("etc/puppet", "/etc/puppet"),
            ("etc/puppet_role", "/etc/puppet_role"),
            ("opt/puppet_environments", "/opt/puppet_environments"),
            (
                "opt/puppetlabs/puppet/cache/state",
                "/opt/puppetlabs/puppet/cache/state",
            ),
            ("var/root", "/var/root"),
            ("usr/local/sbin", "/usr/local/sbin"),
            (
                "etc/sudoers.d/zz-fleetroll-lab",
                "/etc/sudoers.d/zz-fleetroll-lab",
            ),
        ];
        // A macOS host has no /root of its own (root's home is /var/root):
        // hide the machine's. A Linux host only gets its vault there.
        match os {
            Os::Linux => pairs.push(("root/vault.yaml", "/root/vault.yaml")),
            Os::Macos => pairs.push(("root", "/root")),
        }
        let mut binds = vec![(
            cpath(lab_dir)?,
            cpath(Path::new(crate::layout::IN_SESSION_ROOT))?,
        )];
        for (src, dst) in pairs {
            binds.push((cpath(&fs.join(src))?, cpath(Path::new(dst))?));
        }
        let hostname = CString::new(fqdn)
            .map_err(|_| LabError::Config(format!("host name {fqdn:?} contains NUL")))?;
        Ok(MountPlan { binds, hostname })
    }

    /// The bastion's namespace: the machine's files (its /etc/hosts, so
    /// host names resolve as for any client) plus the lab directory where
    /// sessions see it, so sshd reads the same authorized_keys as the
    /// hosts' whatever the permissions of the directory's ancestors.
    pub(crate) fn for_bastion(lab_dir: &Path, fqdn: &str) -> Result<MountPlan, LabError> {
        let binds = vec![(
            cpath(lab_dir)?,
            cpath(Path::new(crate::layout::IN_SESSION_ROOT))?,
        )];
        let hostname = CString::new(fqdn)
            .map_err(|_| LabError::Config(format!("host name {fqdn:?} contains NUL")))?;
        Ok(MountPlan { binds, hostname })
    }

    /// Moves the calling process into a fresh mount and UTS namespace with
    /// the host's files and name.
    ///
    /// Runs between fork and exec: only raw syscalls, no allocation.
    pub(crate) fn enter(&self) -> io::Result<()> {
        // SAFETY: plain syscalls on NUL-terminated strings owned by `self`,
        // which outlives the call.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS) != 0 {
                return Err(io::Error::last_os_error());
            }
            // Without this, mounts below would propagate back to the
            // machine's namespace on systems where / is shared.
            if libc::mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            for (src, dst) in &self.binds {
                if libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
            if libc::sethostname(self.hostname.as_ptr(), self.hostname.as_bytes().len()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}
