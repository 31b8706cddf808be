//! The real OpenSSH server behind every lab host.
//!
//! sshd can listen on at most 16 sockets and must not be pointed at
//! non-loopback addresses, so it never listens at all: the lab daemon accepts
//! each connection on the dialled host's address and starts `sshd -i` (inetd
//! mode) on the socket, inside that host's mount namespace. `$SSH_CONNECTION`
//! then carries the dialled address, exactly as with a listening sshd.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::error::{IoContext, LabError};
use crate::layout::LabLayout;
use crate::scripts::shell_quote;
use crate::system::{LAB_USER, run};

/// Generates an ed25519 key pair at `path` (and `path.pub`), replacing any.
pub(crate) fn keygen(path: &Path, comment: &str) -> Result<(), LabError> {
    let _ = fs::remove_file(path);
    let _ = fs::remove_file(path.with_extension("pub"));
    run(Command::new("/usr/bin/ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path))?;
    Ok(())
}

/// The public half of a key pair, one line.
pub(crate) fn public_key(private: &Path) -> Result<String, LabError> {
    let mut pub_path = private.as_os_str().to_owned();
    pub_path.push(".pub");
    let text =
        fs::read_to_string(&pub_path).ctx(|| format!("read {}", Path::new(&pub_path).display()))?;
    Ok(text.trim().to_string())
}

/// Creates host key, client identity, authorized_keys and sshd_config.
pub(crate) fn setup(layout: &LabLayout, lab_id: &str) -> Result<(), LabError> {
    let ssh = layout.ssh_dir();
    fs::create_dir_all(&ssh).ctx(|| format!("create {}", ssh.display()))?;
    fs::set_permissions(&ssh, fs::Permissions::from_mode(0o755))
        .ctx(|| format!("chmod {}", ssh.display()))?;
    keygen(
        &layout.host_key(),
        &format!("fleetroll-lab host key {lab_id}"),
    )?;
    keygen(
        &layout.client_key(),
        &format!("fleetroll-lab client {lab_id}"),
    )?;
    let authorized = format!("{}\n", public_key(&layout.client_key())?);
    let path = layout.authorized_keys();
    fs::write(&path, authorized).ctx(|| format!("write {}", path.display()))?;
    // sshd reads authorized_keys as the user it authenticates.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644))
        .ctx(|| format!("chmod {}", path.display()))?;

    let config = sshd_config(layout, lab_id);
    let path = layout.sshd_config();
    fs::write(&path, config).ctx(|| format!("write {}", path.display()))?;
    run(Command::new(crate::system::SSHD)
        .arg("-t")
        .arg("-f")
        .arg(&path))?;
    Ok(())
}

fn sshd_config(layout: &LabLayout, lab_id: &str) -> String {
    // Paths are validated at start to contain no spaces or quotes, so they
    // can be written bare; ForceCommand goes through the user's shell, so
    // it is shell-quoted all the same.
    format!(
        "# fleetroll-lab sshd_config, lab {lab_id}: sshd is started per connection (-i)\n\
         HostKey {host_key}\n\
         PidFile none\n\
         AuthorizedKeysFile {authorized}\n\
         StrictModes no\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         HostbasedAuthentication no\n\
         UsePAM no\n\
         PermitRootLogin no\n\
         AllowUsers {LAB_USER}\n\
         ForceCommand {wrapper}\n\
         PermitUserEnvironment no\n\
         SetEnv FLEETROLL_LAB_ID={lab_id}\n\
         X11Forwarding no\n\
         AllowTcpForwarding no\n\
         AllowAgentForwarding no\n\
         AllowStreamLocalForwarding no\n\
         PermitTunnel no\n\
         PrintMotd no\n\
         PrintLastLog no\n\
         UseDNS no\n\
         MaxSessions 64\n\
         LogLevel ERROR\n\
         Subsystem sftp /usr/lib/openssh/sftp-server\n",
        host_key = layout.host_key().display(),
        // sshd reads these as the user, inside the host's namespace.
        authorized = layout.in_session().authorized_keys().display(),
        wrapper = shell_quote(&layout.in_session().session_wrapper().display().to_string()),
    )
}

/// A known_hosts file covering every lab host (by name and address) on
/// `port`, for clients that want strict host key checking.
pub(crate) fn write_known_hosts(
    layout: &LabLayout,
    port: u16,
    hosts: &[(String, std::net::Ipv4Addr)],
) -> Result<(), LabError> {
    let key = public_key(&layout.host_key())?;
    // Drop the comment: known_hosts wants "type base64".
    let key: String = key.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    let mut text = String::new();
    for (name, addr) in hosts {
        text.push_str(&format!("[{name}]:{port},[{addr}]:{port} {key}\n"));
    }
    let path = layout.known_hosts();
    fs::write(&path, text).ctx(|| format!("write {}", path.display()))
}
