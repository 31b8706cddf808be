//! The shell scripts the lab installs: the ForceCommand wrapper and the tool
//! shims hosts see in /usr/local/sbin. They live as real files under
//! `lab/scripts/` (so shellcheck can check them) and are compiled in.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{IoContext, LabError};
use crate::layout::LabLayout;

/// The project's reference state writer, sourced by the lab's run-puppet.sh.
pub const WRITE_PUPPET_STATE: &str = include_str!("../../reference/write_puppet_state.sh");
const LAB_SESSION: &str = include_str!("../scripts/lab-session.sh");
const RUN_PUPPET: &str = include_str!("../scripts/run-puppet.sh");
const REBOOT: &str = include_str!("../scripts/reboot.sh");
const SHUTDOWN: &str = include_str!("../scripts/shutdown.sh");
const UNAME: &str = include_str!("../scripts/uname.sh");
const SW_VERS: &str = include_str!("../scripts/sw_vers.sh");

/// Shims every host has, as (name on the host, file in share/).
pub(crate) const COMMON_SHIMS: &[(&str, &str)] = &[
    ("run-puppet.sh", "run-puppet.sh"),
    ("reboot", "reboot.sh"),
    ("shutdown", "shutdown.sh"),
];
/// Extra shims of macOS-like hosts.
pub(crate) const MACOS_SHIMS: &[(&str, &str)] = &[("uname", "uname.sh"), ("sw_vers", "sw_vers.sh")];

/// Writes the wrapper and shared shims into the lab directory.
pub(crate) fn install(layout: &LabLayout) -> Result<(), LabError> {
    write_exec(&layout.session_wrapper(), LAB_SESSION)?;
    let share = layout.share_dir();
    for (name, text) in [
        ("run-puppet.sh", RUN_PUPPET),
        ("reboot.sh", REBOOT),
        ("shutdown.sh", SHUTDOWN),
        ("uname.sh", UNAME),
        ("sw_vers.sh", SW_VERS),
    ] {
        write_exec(&share.join(name), text)?;
    }
    let lib = share.join("write_puppet_state.sh");
    fs::write(&lib, WRITE_PUPPET_STATE).ctx(|| format!("write {}", lib.display()))?;
    fs::set_permissions(&lib, fs::Permissions::from_mode(0o644))
        .ctx(|| format!("chmod {}", lib.display()))?;
    Ok(())
}

fn write_exec(path: &Path, text: &str) -> Result<(), LabError> {
    fs::write(path, text).ctx(|| format!("write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .ctx(|| format!("chmod {}", path.display()))
}

/// Quotes a value for a POSIX shell: the result is one word, taken literally.
pub(crate) fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_the_shell() {
        let nasty = "it's a \"test\" $(rm -rf /) `x` \\ \n end";
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("printf '%s' {}", shell_quote(nasty)))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), nasty);
    }
}
