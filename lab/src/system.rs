//! What the lab needs from the machine, shared by every lab running on it:
//! the SSH user, sshd's privilege-separation directory, and the mount points
//! that hosts' files are bind-mounted onto.
//!
//! Mount points that do not exist are created (empty) and recorded; the last
//! lab to stop removes them again, so a machine without labs looks as it did.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{IoContext, LabError};

/// Machine-wide state of all labs (locks, slot records, created paths).
pub(crate) const RUN_DIR: &str = "/run/fleetroll-lab";
/// The unprivileged user every lab host is logged into.
pub const LAB_USER: &str = "fleetroll-lab";
/// Name of the sudoers.d entry that each host's own sudo policy replaces.
pub(crate) const SUDOERS_NAME: &str = "zz-fleetroll-lab";
/// Debian's OpenSSH server.
pub(crate) const SSHD: &str = "/usr/sbin/sshd";
const LAB_HOME: &str = "/var/lib/fleetroll-lab";

/// How a mount point is created when missing.
#[derive(Clone, Copy)]
enum Stub {
    Dir,
    File,
    /// A sudoers.d entry that grants nothing: hosts bind their own over it.
    Sudoers,
}

/// Every path the lab bind-mounts onto, in creation order (parents first).
const STUBS: &[(&str, Stub)] = &[
    ("/etc/puppet", Stub::Dir),
    ("/etc/puppet_role", Stub::File),
    ("/opt/puppet_environments", Stub::Dir),
    ("/opt/puppetlabs", Stub::Dir),
    ("/opt/puppetlabs/puppet", Stub::Dir),
    ("/opt/puppetlabs/puppet/cache", Stub::Dir),
    ("/opt/puppetlabs/puppet/cache/state", Stub::Dir),
    ("/root/vault.yaml", Stub::File),
    ("/var/root", Stub::Dir),
    ("/usr/local/sbin", Stub::Dir),
    ("/etc/sudoers.d/zz-fleetroll-lab", Stub::Sudoers),
    ("/run/sshd", Stub::Dir),
    ("/run/fleetroll-lab/lab", Stub::Dir),
];

/// Fails unless the lab can work here: root, sshd, sudo, ssh-keygen, unshare.
pub(crate) fn check_prerequisites() -> Result<(), LabError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(LabError::NotRoot);
    }
    for (program, hint) in [
        (SSHD, "apt-get install openssh-server"),
        ("/usr/bin/ssh-keygen", "apt-get install openssh-client"),
        ("/usr/bin/sudo", "apt-get install sudo"),
        ("/usr/bin/sha1sum", "apt-get install coreutils"),
    ] {
        if !Path::new(program).exists() {
            return Err(LabError::MissingProgram {
                program: program.to_string(),
                hint: hint.to_string(),
            });
        }
    }
    Ok(())
}

/// An exclusive machine-wide lock held while labs change shared state.
pub(crate) struct MachineLock(#[allow(dead_code)] File);

impl MachineLock {
    pub(crate) fn acquire(name: &str) -> Result<MachineLock, LabError> {
        let path = run_dir()?.join(name);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .ctx(|| format!("open {}", path.display()))?;
        flock(&file, libc::LOCK_EX).ctx(|| format!("lock {}", path.display()))?;
        Ok(MachineLock(file))
    }
}

pub(crate) fn run_dir() -> Result<PathBuf, LabError> {
    let dir = PathBuf::from(RUN_DIR);
    fs::create_dir_all(dir.join("slots")).ctx(|| format!("create {RUN_DIR}"))?;
    // Sessions reach their lab directory through a mount point in here.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
        .ctx(|| format!("chmod {RUN_DIR}"))?;
    Ok(dir)
}

pub(crate) fn flock(file: &File, op: libc::c_int) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: the fd is owned by `file` and open for the whole call.
        let r = unsafe { libc::flock(file.as_raw_fd(), op) };
        if r == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Makes the machine ready for labs (idempotent). Call with the "machine"
/// lock held.
pub(crate) fn prepare() -> Result<(), LabError> {
    ensure_user()?;
    let created_list = run_dir()?.join("created");
    let mut created = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&created_list)
        .ctx(|| format!("open {}", created_list.display()))?;
    for (path, stub) in STUBS {
        let p = Path::new(path);
        if p.symlink_metadata().is_ok() {
            continue;
        }
        match stub {
            Stub::Dir => {
                fs::create_dir(p).ctx(|| format!("create mount point {path}"))?;
                fs::set_permissions(p, fs::Permissions::from_mode(0o755))
                    .ctx(|| format!("chmod {path}"))?;
            }
            Stub::File => {
                File::create(p).ctx(|| format!("create mount point {path}"))?;
                fs::set_permissions(p, fs::Permissions::from_mode(0o644))
                    .ctx(|| format!("chmod {path}"))?;
            }
            Stub::Sudoers => {
                fs::write(
                    p,
                    "# fleetroll-lab: each lab host bind-mounts its own sudo policy here.\n",
                )
                .ctx(|| format!("create {path}"))?;
                fs::set_permissions(p, fs::Permissions::from_mode(0o440))
                    .ctx(|| format!("chmod {path}"))?;
            }
        }
        writeln!(created, "{path}").ctx(|| format!("write {}", created_list.display()))?;
    }
    Ok(())
}

/// Removes what `prepare` created, if no lab is running any more. Call with
/// the "machine" lock held. The SSH user stays: removing and re-adding a user
/// on every run would churn /etc/passwd for nothing.
pub(crate) fn release_if_idle() -> Result<(), LabError> {
    if crate::slots::any_held()? {
        return Ok(());
    }
    let created_list = run_dir()?.join("created");
    let text = match fs::read_to_string(&created_list) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(LabError::io(format!("read {}", created_list.display()), e)),
    };
    // Children before parents; only what is still empty, so nothing that
    // someone else put there meanwhile is lost.
    for path in text.lines().rev().filter(|l| !l.is_empty()) {
        let p = Path::new(path);
        let Ok(meta) = p.symlink_metadata() else {
            continue;
        };
        if meta.is_dir() {
            let _ = fs::remove_dir(p);
        } else if meta.len() == 0 || path.ends_with(SUDOERS_NAME) {
            let _ = fs::remove_file(p);
        }
    }
    fs::remove_file(&created_list).ctx(|| format!("remove {}", created_list.display()))?;
    Ok(())
}

/// The user's uid, gid and home, if it exists.
fn lab_user() -> Option<(u32, u32, PathBuf)> {
    let name = std::ffi::CString::new(LAB_USER).ok()?;
    // SAFETY: getpwnam returns a pointer to static storage or null; we copy
    // everything out before any other call could overwrite it.
    unsafe {
        let pw = libc::getpwnam(name.as_ptr());
        if pw.is_null() {
            return None;
        }
        let home = if (*pw).pw_dir.is_null() {
            PathBuf::from("/")
        } else {
            use std::os::unix::ffi::OsStrExt;
            PathBuf::from(std::ffi::OsStr::from_bytes(
                std::ffi::CStr::from_ptr((*pw).pw_dir).to_bytes(),
            ))
        };
        Some(((*pw).pw_uid, (*pw).pw_gid, home))
    }
}

fn ensure_user() -> Result<(), LabError> {
    if let Some((uid, gid, home)) = lab_user() {
        // Without its home, every session would print "Could not chdir to
        // home directory" on the client's stderr.
        if !home.exists() {
            fs::create_dir_all(&home).ctx(|| format!("create {}", home.display()))?;
            std::os::unix::fs::chown(&home, Some(uid), Some(gid))
                .ctx(|| format!("chown {}", home.display()))?;
        }
        return Ok(());
    }
    run(Command::new("useradd").args([
        "--system",
        "--create-home",
        "--home-dir",
        LAB_HOME,
        "--shell",
        "/bin/sh",
        "--comment",
        "fleetroll test fleet",
        LAB_USER,
    ]))?;
    // useradd leaves the password locked ("!"), and sshd without PAM refuses
    // locked accounts even for key logins; "*" means no password can match
    // while the account stays usable with a key.
    run(Command::new("usermod").args(["--password", "*", LAB_USER]))?;
    Ok(())
}

/// Raises this process's open-file limit to its hard limit: a lab holds a
/// listener per host plus two descriptors per connection.
pub(crate) fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain get/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Runs a command to completion, turning failure into a `LabError`.
pub(crate) fn run(cmd: &mut Command) -> Result<std::process::Output, LabError> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| LabError::Command {
            command: shown.clone(),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(LabError::Command {
            command: shown,
            message: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(out)
}
