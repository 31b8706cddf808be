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
    crate::hostkey::generate_key_pair(path, crate::hostkey::HostKeyKind::Ed25519, comment)
        .map(|_| ())
}

/// The public half of a key pair, one line.
pub(crate) fn public_key(private: &Path) -> Result<String, LabError> {
    let mut pub_path = private.as_os_str().to_owned();
    pub_path.push(".pub");
    let text =
        fs::read_to_string(&pub_path).ctx(|| format!("read {}", Path::new(&pub_path).display()))?;
    Ok(text.trim().to_string())
}

/// Creates host key, client identity, authorized_keys and sshd_config, and
/// with `bastion` the bastion's host key (its sshd_config needs the port:
/// see [`write_bastion_config`]).
pub(crate) fn setup(layout: &LabLayout, lab_id: &str, bastion: bool) -> Result<(), LabError> {
    let ssh = layout.ssh_dir();
    fs::create_dir_all(&ssh).ctx(|| format!("create {}", ssh.display()))?;
    fs::set_permissions(&ssh, fs::Permissions::from_mode(0o755))
        .ctx(|| format!("chmod {}", ssh.display()))?;
    keygen(
        &layout.host_key(),
        &format!("fleetroll-lab host key {lab_id}"),
    )?;
    if bastion {
        keygen(
            &layout.bastion_host_key(),
            &format!("fleetroll-lab bastion host key {lab_id}"),
        )?;
    }
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
         {login}\
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
        login = login_policy(layout),
        wrapper = shell_quote(&layout.in_session().session_wrapper().display().to_string()),
    )
}

/// The bastion's sshd_config: a jump host that forwards to the lab's hosts
/// and does nothing else.
pub(crate) fn write_bastion_config(
    layout: &LabLayout,
    lab_id: &str,
    port: u16,
) -> Result<(), LabError> {
    let config = bastion_sshd_config(layout, lab_id, port);
    let path = layout.bastion_sshd_config();
    fs::write(&path, config).ctx(|| format!("write {}", path.display()))?;
    run(Command::new(crate::system::SSHD)
        .arg("-t")
        .arg("-f")
        .arg(&path)
        .arg("-h")
        .arg(layout.bastion_host_key()))?;
    Ok(())
}

fn bastion_sshd_config(layout: &LabLayout, lab_id: &str, port: u16) -> String {
    // The host key comes with -h. PermitOpen names no hosts: its list is
    // parsed with quadratic cost (2 GB of memory for 10,000 hosts), and the
    // bastion's network namespace holds nothing but the lab's hosts, so
    // "any address on the lab's port" is exactly the lab's hosts; anything
    // else is refused by the kernel. ForceCommand nologin: no shell or
    // command ever runs, while forwarding (a channel, not a session) works.
    format!(
        "# fleetroll-lab bastion sshd_config, lab {lab_id}: a jump host started per connection (-i)\n\
         {login}\
         ForceCommand /usr/sbin/nologin\n\
         PermitTTY no\n\
         PermitUserEnvironment no\n\
         SetEnv FLEETROLL_LAB_ID={lab_id} FLEETROLL_LAB_HOST={BASTION_SHORT}\n\
         AllowTcpForwarding local\n\
         PermitOpen *:{port}\n\
         PermitListen none\n\
         GatewayPorts no\n\
         X11Forwarding no\n\
         AllowAgentForwarding no\n\
         AllowStreamLocalForwarding no\n\
         PermitTunnel no\n\
         PrintMotd no\n\
         PrintLastLog no\n\
         UseDNS no\n\
         LogLevel ERROR\n",
        login = login_policy(layout),
    )
}

/// How hosts and the bastion alike let the lab's client in: its key as the
/// lab user, nothing else. sshd reads authorized_keys as the user, inside
/// the connection's mount namespace (namespace.rs).
fn login_policy(layout: &LabLayout) -> String {
    format!(
        "PidFile none\n\
         AuthorizedKeysFile {authorized}\n\
         StrictModes no\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         HostbasedAuthentication no\n\
         UsePAM no\n\
         PermitRootLogin no\n\
         AllowUsers {LAB_USER}\n",
        authorized = layout.in_session().authorized_keys().display(),
    )
}

/// The bastion's short name (its `FLEETROLL_LAB_HOST`, never a host's:
/// those are `lab-NNNN`).
pub(crate) const BASTION_SHORT: &str = "bastion";

/// Where a client finds the bastion.
pub(crate) struct BastionAddr<'a> {
    pub fqdn: &'a str,
    pub addr: std::net::Ipv4Addr,
}

/// A known_hosts file covering every lab host (by name and address) on
/// `port`, and the bastion with its own key, for clients that want strict
/// host key checking.
pub(crate) fn write_known_hosts(
    layout: &LabLayout,
    port: u16,
    hosts: &[(String, std::net::Ipv4Addr)],
    bastion: Option<&BastionAddr<'_>>,
) -> Result<(), LabError> {
    let key = crate::hostkey::public_key_of(&layout.host_key())?;
    let mut text = String::new();
    for (name, addr) in hosts {
        text.push_str(&format!("[{name}]:{port},[{addr}]:{port} {key}\n"));
    }
    if let Some(b) = bastion {
        let key = crate::hostkey::public_key_of(&layout.bastion_host_key())?;
        text.push_str(&format!(
            "[{fqdn}]:{port},[{addr}]:{port} {key}\n",
            fqdn = b.fqdn,
            addr = b.addr
        ));
    }
    let path = layout.known_hosts();
    fs::write(&path, text).ctx(|| format!("write {}", path.display()))
}

/// An OpenSSH client config for the lab: `ssh -F <it> lab-0001.<domain>`
/// logs in with the lab's user, port, key and known_hosts, through the
/// bastion when there is one. Only options fleetroll's own client reads
/// (SPEC 4), so it can take the same file.
pub(crate) fn write_client_config(
    layout: &LabLayout,
    lab_id: &str,
    domain: &str,
    slot: u8,
    port: u16,
    bastion: Option<&BastionAddr<'_>>,
) -> Result<(), LabError> {
    // Paths are validated to need no quoting (see check_dir_chars).
    let common = format!(
        "    Port {port}\n    User {LAB_USER}\n    IdentityFile {key}\n    UserKnownHostsFile {known}\n",
        key = layout.client_key().display(),
        known = layout.known_hosts().display(),
    );
    let mut text = format!(
        "# fleetroll-lab {lab_id}: ssh -F {} <host>\n",
        layout.ssh_client_config().display()
    );
    match bastion {
        None => {
            text.push_str(&format!("Host *.{domain} 127.{slot}.*\n{common}"));
        }
        Some(b) => {
            // The bastion's block comes first: for each option ssh keeps the
            // first value it finds. Its own name and address are excluded from
            // the fleet's patterns, or it would jump through itself.
            text.push_str(&format!(
                "# The hosts are reachable only through the bastion.\n\
                 Host {fqdn} {addr}\n    HostName {addr}\n{common}\n\
                 Host *.{domain} 127.{slot}.* !{fqdn} !{addr}\n    ProxyJump {fqdn}\n{common}",
                fqdn = b.fqdn,
                addr = b.addr,
            ));
        }
    }
    let path = layout.ssh_client_config();
    fs::write(&path, text).ctx(|| format!("write {}", path.display()))
}
