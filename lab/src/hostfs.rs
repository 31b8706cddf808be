//! Each lab host's own files: the tree under `hosts/<short>/fs` that its
//! sessions see bind-mounted over /etc/puppet, /etc/puppet_role, and friends.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::error::{IoContext, LabError};
use crate::layout::{HostLayout, LabLayout};
use crate::puppet::{write_file, write_initial_state};
use crate::scenario::{HostConfig, Os, PuppetSpec};
use crate::scripts::{COMMON_SHIMS, MACOS_SHIMS, shell_quote};
use crate::system::LAB_USER;

/// Identity of one host, as the scripts need it.
pub(crate) struct HostIdentity<'a> {
    pub lab_id: &'a str,
    pub short: &'a str,
    pub fqdn: &'a str,
    pub addr: std::net::Ipv4Addr,
}

fn mkdir(path: &Path, mode: u32) -> Result<(), LabError> {
    fs::create_dir_all(path).ctx(|| format!("create {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .ctx(|| format!("chmod {}", path.display()))
}

/// Creates a host's whole tree and its initial Puppet state.
pub(crate) fn create_host(
    lab: &LabLayout,
    id: &HostIdentity<'_>,
    cfg: &HostConfig,
    puppet: &PuppetSpec,
    started: SystemTime,
) -> Result<(), LabError> {
    let host = lab.host(id.short);
    let fs_root = host.fs();
    mkdir(host.dir(), 0o755)?;
    mkdir(&host.knobs(), 0o755)?;
    for (dir, mode) in [
        ("etc/puppet", 0o755),
        ("etc/sudoers.d", 0o755),
        ("opt/puppet_environments", 0o755),
        ("opt/puppetlabs/puppet/cache/state", 0o755),
        ("root", 0o700),
        ("var/root", 0o750),
        ("usr/local/sbin", 0o755),
    ] {
        mkdir(&fs_root.join(dir), mode)?;
    }

    write_file(
        &fs_root.join("etc/puppet_role"),
        format!("{}\n", cfg.role).as_bytes(),
        0o644,
    )?;
    let vault = format!(
        "---\n# lab vault of {}\nvault_token: {}\n",
        id.fqdn,
        crate::puppet::sha256_hex(format!("{}/{}", id.lab_id, id.short).as_bytes())
    );
    write_file(
        &fs_root.join(cfg.os.vault_path().trim_start_matches('/')),
        vault.as_bytes(),
        0o600,
    )?;
    if let Some(content) = &cfg.override_content {
        write_file(
            &fs_root.join(cfg.os.override_path().trim_start_matches('/')),
            content.as_bytes(),
            0o644,
        )?;
    }
    write_sudoers(&host, cfg.sudo)?;

    let sbin = fs_root.join("usr/local/sbin");
    let shims = COMMON_SHIMS.iter().chain(if cfg.os == Os::Macos {
        MACOS_SHIMS
    } else {
        &[]
    });
    for (name, file) in shims {
        let link = sbin.join(name);
        symlink(lab.in_session().share_dir().join(file), &link)
            .ctx(|| format!("link {}", link.display()))?;
    }
    write_host_config(lab, &host, id, cfg, puppet)?;
    set_slow(&host, cfg.slow)?;
    set_flag(&host, "hang", cfg.hang)?;

    let by_addr = lab.by_addr_dir().join(id.addr.to_string());
    write_file(&by_addr, format!("{}\n", id.short).as_bytes(), 0o644)?;

    let vault_bytes = vault.into_bytes();
    write_initial_state(
        host.dir(),
        &fs_root,
        cfg,
        puppet,
        &vault_bytes,
        started - Duration::from_secs(1),
    )
}

/// The host's sudo policy, bind-mounted over /etc/sudoers.d/zz-fleetroll-lab
/// in its sessions. `env_keep` lets the lab find root processes it started.
pub(crate) fn write_sudoers(host: &HostLayout, allowed: bool) -> Result<(), LabError> {
    let text = if allowed {
        format!(
            "# fleetroll-lab: sudo allowed on this host\nDefaults:{LAB_USER} env_keep += \"FLEETROLL_LAB_ID FLEETROLL_LAB_HOST\"\n{LAB_USER} ALL=(ALL:ALL) NOPASSWD: ALL\n"
        )
    } else {
        "# fleetroll-lab: sudo refused on this host\n".to_string()
    };
    // In place, not renamed over: the file is bind-mounted into every
    // session, and a session already open must see the new policy too, as
    // on a real host.
    let path = host.sudoers();
    if path.exists() {
        use std::io::Write as _;
        let mut file = fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .ctx(|| format!("open {}", path.display()))?;
        return file
            .write_all(text.as_bytes())
            .ctx(|| format!("write {}", path.display()));
    }
    crate::puppet::write_atomic(&path, text.as_bytes(), 0o440)
}

/// The per-host settings the scripts source (`/usr/local/sbin/.fleetroll-lab-host`).
pub(crate) fn write_host_config(
    lab: &LabLayout,
    host: &HostLayout,
    id: &HostIdentity<'_>,
    cfg: &HostConfig,
    puppet: &PuppetSpec,
) -> Result<(), LabError> {
    let mut text = String::from("# fleetroll-lab host settings, sourced by the lab's scripts\n");
    let duration = format!("{:.3}", cfg.puppet_duration.as_secs_f64());
    // Scripts run inside the host's namespace: give them the in-session paths.
    let inside = lab.in_session();
    let lab_dir = inside.root().display().to_string();
    let host_dir = inside.host(id.short).dir().display().to_string();
    let metadata: &str = cfg.metadata.as_str();
    for (key, value) in [
        ("LAB_ID", id.lab_id),
        ("LAB_DIR", lab_dir.as_str()),
        ("LAB_HOST", id.short),
        ("LAB_FQDN", id.fqdn),
        ("LAB_HOST_DIR", host_dir.as_str()),
        ("LAB_OS", cfg.os.as_str()),
        ("LAB_METADATA", metadata),
        ("LAB_METADATA_PATH", cfg.os.metadata_path()),
        ("LAB_OVERRIDE_PATH", cfg.os.override_path()),
        ("LAB_VAULT_PATH", cfg.os.vault_path()),
        ("LAB_DEFAULT_REPO", puppet.repo.as_str()),
        ("LAB_DEFAULT_BRANCH", puppet.branch.as_str()),
        (
            "LAB_PUPPET_DURATION",
            if cfg.puppet_duration.is_zero() {
                "0"
            } else {
                duration.as_str()
            },
        ),
    ] {
        text.push_str(&format!("{key}={}\n", shell_quote(value)));
    }
    crate::puppet::write_atomic(&host.host_config_file(), text.as_bytes(), 0o644)
}

/// The "slow" knob: seconds the session wrapper sleeps before each command.
pub(crate) fn set_slow(host: &HostLayout, delay: Duration) -> Result<(), LabError> {
    let path = host.knobs().join("slow");
    if delay.is_zero() {
        return remove_if_exists(&path);
    }
    crate::puppet::write_atomic(
        &path,
        format!("{:.3}\n", delay.as_secs_f64()).as_bytes(),
        0o644,
    )
}

/// A knob that is a flag file (present = on).
pub(crate) fn set_flag(host: &HostLayout, name: &str, on: bool) -> Result<(), LabError> {
    let path = host.knobs().join(name);
    if on {
        write_file(&path, b"1\n", 0o644)
    } else {
        remove_if_exists(&path)
    }
}

pub(crate) fn remove_if_exists(path: &Path) -> Result<(), LabError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LabError::io(format!("remove {}", path.display()), e)),
    }
}
