//! Host keys of every type a real fleet has, and host certificates.
//!
//! A host normally presents the lab's shared ed25519 key. A test that needs
//! a host with another key type (an old host with only RSA/SHA-1, say) or a
//! certified key gives it one of its own; the daemon then passes it to that
//! host's `sshd -i` with `-h`, and narrows `HostKeyAlgorithms` per connection
//! so the host offers that key (and its certificate) and nothing else.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::LabError;
use crate::system::run;

/// The type of a host key, as far as what the server offers goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostKeyKind {
    /// `ssh-ed25519`.
    Ed25519,
    /// `ecdsa-sha2-nistp256`.
    Ecdsa,
    /// An RSA key offered with SHA-2 signatures only (`rsa-sha2-512`,
    /// `rsa-sha2-256`), as current OpenSSH does.
    Rsa,
    /// An RSA key offered only as `ssh-rsa` (SHA-1 signatures), as an old
    /// server does: current clients refuse it unless told otherwise.
    RsaSha1Only,
}

impl HostKeyKind {
    fn keygen_args(self) -> &'static [&'static str] {
        match self {
            HostKeyKind::Ed25519 => &["-t", "ed25519"],
            HostKeyKind::Ecdsa => &["-t", "ecdsa", "-b", "256"],
            // 2048 bits: enough for sshd (it wants 1024), and quick to make.
            HostKeyKind::Rsa | HostKeyKind::RsaSha1Only => &["-t", "rsa", "-b", "2048"],
        }
    }

    /// Part of the key's file name. The two RSA kinds get different files,
    /// so switching between them never changes the key under a connection
    /// that was started for the other.
    pub(crate) fn file_stem(self) -> &'static str {
        match self {
            HostKeyKind::Ed25519 => "ed25519",
            HostKeyKind::Ecdsa => "ecdsa",
            HostKeyKind::Rsa => "rsa",
            HostKeyKind::RsaSha1Only => "rsa_sha1",
        }
    }

    /// sshd's `HostKeyAlgorithms` for a host with only this key (and its
    /// certificate): what it offers, certificate first as OpenSSH orders them.
    pub(crate) fn host_key_algorithms(self, certified: bool) -> &'static str {
        match (self, certified) {
            (HostKeyKind::Ed25519, false) => "ssh-ed25519",
            (HostKeyKind::Ed25519, true) => "ssh-ed25519-cert-v01@openssh.com,ssh-ed25519",
            (HostKeyKind::Ecdsa, false) => "ecdsa-sha2-nistp256",
            (HostKeyKind::Ecdsa, true) => {
                "ecdsa-sha2-nistp256-cert-v01@openssh.com,ecdsa-sha2-nistp256"
            }
            (HostKeyKind::Rsa, false) => "rsa-sha2-512,rsa-sha2-256",
            (HostKeyKind::Rsa, true) => {
                "rsa-sha2-512-cert-v01@openssh.com,rsa-sha2-256-cert-v01@openssh.com,\
                 rsa-sha2-512,rsa-sha2-256"
            }
            (HostKeyKind::RsaSha1Only, false) => "ssh-rsa",
            (HostKeyKind::RsaSha1Only, true) => "ssh-rsa-cert-v01@openssh.com,ssh-rsa",
        }
    }
}

/// `path` with `suffix` appended to its file name (`key` → `key.pub`).
pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Generates a key pair of `kind` at `private` (and `private.pub`),
/// replacing any, and returns the public key as `type base64`. Suits host
/// keys and certificate authorities alike (no passphrase).
pub fn generate_key_pair(
    private: &Path,
    kind: HostKeyKind,
    comment: &str,
) -> Result<String, LabError> {
    let _ = std::fs::remove_file(private);
    let _ = std::fs::remove_file(with_suffix(private, ".pub"));
    run(Command::new("/usr/bin/ssh-keygen")
        .arg("-q")
        .args(kind.keygen_args())
        .args(["-N", "", "-C", comment, "-f"])
        .arg(private))?;
    public_key_of(private)
}

/// The public half of `private` as `type base64` (no comment).
pub(crate) fn public_key_of(private: &Path) -> Result<String, LabError> {
    let key = crate::sshd::public_key(private)?;
    Ok(key.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
}

/// Signs the public key `public` as a host certificate with `ca` (a private
/// key file), writing `<public without .pub>-cert.pub` as ssh-keygen does.
pub(crate) fn sign_host_key(
    ca: &Path,
    public: &Path,
    identity: &str,
    principals: &[&str],
    validity: Option<&str>,
) -> Result<(), LabError> {
    if let Some(p) = principals.iter().find(|p| {
        p.is_empty() || p.contains(',') || p.chars().any(|c| c.is_whitespace() || c.is_control())
    }) {
        // ssh-keygen splits -n on commas: such a name would silently become
        // other principals.
        return Err(LabError::Config(format!(
            "certificate principal {p:?} must be non-empty, without commas or spaces"
        )));
    }
    let mut cmd = Command::new("/usr/bin/ssh-keygen");
    cmd.arg("-q").arg("-s").arg(ca).args(["-h", "-I", identity]);
    // No principals: ssh-keygen makes the certificate valid for any name.
    if !principals.is_empty() {
        cmd.arg("-n").arg(principals.join(","));
    }
    if let Some(v) = validity {
        cmd.arg("-V").arg(v);
    }
    run(cmd.arg(public))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_offers_its_certificate_first_and_no_other_type() {
        for kind in [
            HostKeyKind::Ed25519,
            HostKeyKind::Ecdsa,
            HostKeyKind::Rsa,
            HostKeyKind::RsaSha1Only,
        ] {
            let plain = kind.host_key_algorithms(false);
            let cert = kind.host_key_algorithms(true);
            assert!(cert.ends_with(plain), "{kind:?}");
            assert!(cert.split(',').next().unwrap().contains("-cert-v01@"));
            assert!(!plain.contains("cert"));
        }
        assert_eq!(
            HostKeyKind::RsaSha1Only.host_key_algorithms(false),
            "ssh-rsa"
        );
        assert!(
            !HostKeyKind::Rsa
                .host_key_algorithms(true)
                .contains("ssh-rsa")
        );
    }

    #[test]
    fn bad_principals_are_refused_before_signing() {
        let err = sign_host_key(
            Path::new("/nonexistent/ca"),
            Path::new("/nonexistent/key.pub"),
            "id",
            &["a,b"],
            None,
        )
        .unwrap_err();
        assert!(matches!(err, LabError::Config(_)), "{err}");
    }
}
