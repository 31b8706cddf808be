//! OpenSSH `known_hosts` files: what they say about a host's key.
//!
//! Lines are parsed by `ssh-key`; matching a host against a line's
//! patterns (wildcards, `!` negation, `[host]:port`, hashed `|1|` names) is
//! done here, as OpenSSH's `hostfile.c` does it.

use std::path::PathBuf;

use hmac::{KeyInit, Mac};
use russh::keys::ssh_key::known_hosts::{Entry, HostPatterns, Marker};
use russh::keys::ssh_key::{HashAlg, PublicKey};

use crate::trust::Trust;

/// A known_hosts line that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum KnownHostsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}:{line}: not a known_hosts entry: {source}")]
    Line {
        origin: String,
        line: usize,
        #[source]
        source: russh::keys::ssh_key::Error,
    },
}

/// The entries of one or more known_hosts files.
#[derive(Debug, Clone, Default)]
pub struct KnownHosts {
    entries: Vec<Entry>,
}

impl KnownHosts {
    /// Parses known_hosts text; `origin` names it in errors. Comments and
    /// blank lines are skipped, and so (with a warning) are keys of a type
    /// fleetroll never accepts (`ssh-dss`, security-key `sk-*` keys), as in
    /// an operator's long-lived file: no host could be accepted with one,
    /// so nothing is trusted that would not be otherwise. Any other line
    /// that is not an entry is an error (a truncated file is not silently
    /// half-trusted).
    pub fn parse(text: &str, origin: &str) -> Result<KnownHosts, KnownHostsError> {
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(kind) = unsupported_key_type(line) {
                tracing::warn!(at = %format!("{origin}:{}", n + 1), kind, "known_hosts line of a key type fleetroll does not use; ignored");
                continue;
            }
            let entry = line
                .parse::<Entry>()
                .map_err(|source| KnownHostsError::Line {
                    origin: origin.to_string(),
                    line: n + 1,
                    source,
                })?;
            entries.push(entry);
        }
        Ok(KnownHosts { entries })
    }

    /// Reads the files that exist of `paths` (OpenSSH skips missing ones).
    pub fn read(paths: &[PathBuf]) -> Result<KnownHosts, KnownHostsError> {
        let mut all = KnownHosts::default();
        for path in paths {
            match std::fs::read_to_string(path) {
                Ok(text) => all
                    .entries
                    .extend(KnownHosts::parse(&text, &path.display().to_string())?.entries),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(KnownHostsError::Read {
                        path: path.clone(),
                        source,
                    });
                }
            }
        }
        Ok(all)
    }

    /// What the entries say about a host listed under any of `names`
    /// (`host`, or `[host]:port` off port 22).
    pub fn trust_for(&self, names: &[String]) -> Trust {
        let mut trust = Trust::default();
        for entry in &self.entries {
            if !names.iter().any(|n| matches(entry.host_patterns(), n)) {
                continue;
            }
            let key = entry.public_key().clone();
            let list = match entry.marker() {
                Some(Marker::CertAuthority) => &mut trust.authorities,
                Some(Marker::Revoked) => &mut trust.revoked,
                None => &mut trust.keys,
            };
            if !list.contains(&key) {
                list.push(key);
            }
        }
        trust
    }
}

/// The key type of a line, when it is one fleetroll never negotiates (DSA,
/// security keys), whose lines are skipped rather than fatal.
fn unsupported_key_type(line: &str) -> Option<&str> {
    let mut fields = line.split_whitespace();
    let mut kind = fields.nth(1)?;
    if line.starts_with('@') {
        kind = fields.next()?;
    }
    (kind == "ssh-dss" || kind.starts_with("sk-")).then_some(kind)
}

/// Whether `name` is listed by these patterns: a hashed name equals it, or
/// a pattern matches it and no negated one does (OpenSSH's `match_hostname`).
fn matches(patterns: &HostPatterns, name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    match patterns {
        HostPatterns::HashedName { salt, hash } => {
            let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(salt) else {
                return false;
            };
            mac.update(name.as_bytes());
            mac.verify_slice(hash).is_ok()
        }
        HostPatterns::Patterns(list) => {
            crate::ssh_config::pattern::match_hostname(&name, &list.join(","))
        }
    }
}

/// The key as known_hosts and pins write it: `type base64`, no comment.
pub(crate) fn openssh_line(key: &PublicKey) -> String {
    key.to_openssh()
        .map(|k| k.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The SHA-256 fingerprint, as `ssh-keygen -l` shows it.
pub fn fingerprint_of(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAII9rIieSf93H0HlXdfPhCBIVTCa3G7XSezTg2IepCq50";
    const ED2: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMFp12CrrWi2wYIKkNfjJQOVEA3YEDjzTa50bGyKx3g7";

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn plain_wildcard_negated_and_port_entries() {
        let text = format!(
            "# comment\n\n\
             h1.example.com,10.0.0.1 {ED}\n\
             [h2.example.com]:2222 {ED2}\n\
             *.mdc1.example.com,!bad.mdc1.example.com {ED}\n\
             @cert-authority *.example.com {ED2}\n\
             @revoked * {ED2}\n"
        );
        let k = KnownHosts::parse(&text, "kh").unwrap();
        let t = k.trust_for(&names(&["h1.example.com"]));
        assert_eq!(t.keys.len(), 1);
        assert_eq!(t.authorities.len(), 1);
        assert_eq!(t.revoked.len(), 1);
        assert!(k.trust_for(&names(&["h2.example.com"])).keys.is_empty());
        assert_eq!(
            k.trust_for(&names(&["[h2.example.com]:2222"])).keys.len(),
            1
        );
        assert_eq!(k.trust_for(&names(&["x.MDC1.example.com"])).keys.len(), 1);
        assert!(
            k.trust_for(&names(&["bad.mdc1.example.com"]))
                .keys
                .is_empty()
        );
        assert!(k.trust_for(&names(&["other.test"])).authorities.is_empty());
    }

    #[test]
    fn hashed_names_match_what_ssh_keygen_hashes() {
        // What `ssh-keygen -H` writes: HMAC-SHA1 of the name, keyed by the salt.
        let salt = [7u8; 20];
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt).unwrap();
        mac.update(b"h1.example.com");
        let hash = mac.finalize().into_bytes();
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let line = format!("|1|{}|{} {ED}\n", b64.encode(salt), b64.encode(hash));
        let k = KnownHosts::parse(&line, "kh").unwrap();
        assert_eq!(k.trust_for(&names(&["h1.example.com"])).keys.len(), 1);
        assert!(k.trust_for(&names(&["h2.example.com"])).keys.is_empty());
    }

    #[test]
    fn keys_of_types_never_used_are_skipped_not_fatal() {
        let text = format!(
            "old.example.com ssh-dss AAAAB3NzaC1kc3MAAACBAP\n\
             @revoked * sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5\n\
             h1.example.com {ED}\n"
        );
        let k = KnownHosts::parse(&text, "kh").unwrap();
        assert_eq!(k.trust_for(&names(&["h1.example.com"])).keys.len(), 1);
        assert!(k.trust_for(&names(&["old.example.com"])).knows_nothing());
    }

    #[test]
    fn a_line_that_is_no_entry_is_an_error_naming_it() {
        let err = KnownHosts::parse("h1 ssh-ed25519 AAAA-truncated\n", "kh").unwrap_err();
        assert!(err.to_string().starts_with("kh:1: "), "{err}");
    }
}
