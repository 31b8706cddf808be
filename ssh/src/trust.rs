//! Whether to accept the host key a server offers: a pure function of the
//! offer, what the pin and known_hosts say, the time, and the first-contact
//! policy.

use russh::keys::PublicKeyOrCertificate;
use russh::keys::ssh_key::certificate::CertType;
use russh::keys::ssh_key::{Fingerprint, HashAlg, PublicKey};

use crate::settings::FirstContact;

/// What is known about a host's key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trust {
    pub keys: Vec<PublicKey>,
    pub authorities: Vec<PublicKey>,
    pub revoked: Vec<PublicKey>,
}

impl Trust {
    /// Nothing at all vouches for the host (revocations alone do not).
    pub fn knows_nothing(&self) -> bool {
        self.keys.is_empty() && self.authorities.is_empty()
    }

    /// Adds what `other` knows.
    pub fn extend(&mut self, other: Trust) {
        let add = |list: &mut Vec<PublicKey>, more: Vec<PublicKey>| {
            for key in more {
                if !list.contains(&key) {
                    list.push(key);
                }
            }
        };
        add(&mut self.keys, other.keys);
        add(&mut self.authorities, other.authorities);
        add(&mut self.revoked, other.revoked);
    }
}

/// The verdict on an offered host key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A key the pin or known_hosts lists.
    Known,
    /// A valid host certificate for the host, signed by a trusted CA.
    Certified {
        authority: String,
    },
    /// Nothing knows the host and the policy trusts on first use: pin it.
    FirstContact,
    Refused(Refusal),
}

/// Why an offered key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("host key {offered} is revoked")]
    Revoked { offered: String },
    #[error(
        "host key changed: pinned {pinned}, host offers {offered}; refusing until the operator re-pins it (`fleetroll host repin <host> --confirm`)"
    )]
    Changed { pinned: String, offered: String },
    #[error(
        "host key {offered} is not pinned and first_contact is \"known-hosts\": pin it with `fleetroll host pin --from-known-hosts FILE --confirm`"
    )]
    Unknown { offered: String },
    #[error("host certificate {offered} refused: {detail}")]
    Certificate { offered: String, detail: String },
}

fn fp(key: &russh::keys::ssh_key::public::KeyData) -> Fingerprint {
    key.fingerprint(HashAlg::Sha256)
}

/// Decides on the key a server offered. `principals` are the names the
/// host must carry in a certificate; `now` is Unix seconds.
pub fn decide(
    offered: &PublicKeyOrCertificate,
    principals: &[String],
    now: u64,
    trust: &Trust,
    first_contact: FirstContact,
) -> Decision {
    let (key, certificate) = match offered {
        PublicKeyOrCertificate::PublicKey { key, .. } => (key.key_data().clone(), None),
        PublicKeyOrCertificate::Certificate(cert) => (cert.public_key().clone(), Some(cert)),
    };
    let offered_fp = fp(&key).to_string();
    let revoked =
        |k: &russh::keys::ssh_key::public::KeyData| trust.revoked.iter().any(|r| r.key_data() == k);
    if revoked(&key) || certificate.is_some_and(|c| revoked(c.signature_key())) {
        return Decision::Refused(Refusal::Revoked {
            offered: offered_fp,
        });
    }
    if let Some(cert) = certificate {
        let authority = trust
            .authorities
            .iter()
            .find(|a| a.key_data() == cert.signature_key());
        if let Some(authority) = authority {
            let refuse = |detail: String| {
                Decision::Refused(Refusal::Certificate {
                    offered: offered_fp.clone(),
                    detail,
                })
            };
            let authority_fp = fp(authority.key_data());
            if let Err(e) = cert.validate_at(now, [&authority_fp]) {
                return refuse(format!("not valid now or badly signed ({e})"));
            }
            if cert.cert_type() != CertType::Host {
                return refuse("it is a user certificate".into());
            }
            let names = cert.valid_principals();
            if !names
                .iter()
                .any(|n| principals.iter().any(|p| p.eq_ignore_ascii_case(n)))
            {
                return refuse(format!(
                    "it names {} and not {}",
                    if names.is_empty() {
                        "no host".to_string()
                    } else {
                        names.join(", ")
                    },
                    principals.join(" or ")
                ));
            }
            return Decision::Certified {
                authority: authority_fp.to_string(),
            };
        }
        // No trusted CA signed it: judge the key inside, as OpenSSH does.
    }
    if trust.keys.iter().any(|k| k.key_data() == &key) {
        return Decision::Known;
    }
    if !trust.knows_nothing() {
        let mut pinned: Vec<String> = trust
            .keys
            .iter()
            .map(|k| fp(k.key_data()).to_string())
            .collect();
        pinned.extend(
            trust
                .authorities
                .iter()
                .map(|a| format!("certificates of CA {}", fp(a.key_data()))),
        );
        return Decision::Refused(Refusal::Changed {
            pinned: pinned.join(", "),
            offered: offered_fp,
        });
    }
    match first_contact {
        FirstContact::Trust => Decision::FirstContact,
        FirstContact::KnownHosts => Decision::Refused(Refusal::Unknown {
            offered: offered_fp,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use russh::keys::ssh_key::{Certificate, PrivateKey};
    use std::process::Command;

    /// Keys and certificates made by the real `ssh-keygen`.
    struct Keys(tempfile::TempDir);

    impl Keys {
        fn new() -> Keys {
            Keys(tempfile::tempdir().unwrap())
        }

        fn key(&self, name: &str) -> PrivateKey {
            let path = self.0.path().join(name);
            let status = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(&path)
                .status()
                .unwrap();
            assert!(status.success());
            russh::keys::load_secret_key(&path, None).unwrap()
        }

        /// Signs `host`'s key with `ca`; `-h` unless `user`; `validity` as
        /// `ssh-keygen -V` takes it.
        fn cert(
            &self,
            host: &str,
            ca: &str,
            user: bool,
            names: &[&str],
            validity: &str,
        ) -> PublicKeyOrCertificate {
            let dir = self.0.path();
            let mut cmd = Command::new("ssh-keygen");
            cmd.args(["-q", "-s"])
                .arg(dir.join(ca))
                .args(["-I", "test", "-V", validity]);
            if !user {
                cmd.arg("-h");
            }
            if !names.is_empty() {
                cmd.arg("-n").arg(names.join(","));
            }
            assert!(
                cmd.arg(dir.join(format!("{host}.pub")))
                    .status()
                    .unwrap()
                    .success()
            );
            let text = std::fs::read_to_string(dir.join(format!("{host}-cert.pub"))).unwrap();
            PublicKeyOrCertificate::Certificate(Certificate::from_openssh(&text).unwrap())
        }
    }

    fn plain(k: &PrivateKey) -> PublicKeyOrCertificate {
        PublicKeyOrCertificate::PublicKey {
            key: k.public_key().clone(),
            hash_alg: None,
        }
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn names() -> Vec<String> {
        vec!["h1.example.com".into()]
    }

    #[test]
    fn plain_keys_against_pins_and_policy() {
        let keys = Keys::new();
        let (a, b) = (keys.key("a"), keys.key("b"));
        let pinned = Trust {
            keys: vec![a.public_key().clone()],
            ..Trust::default()
        };
        let decide_now = |offer: &PublicKeyOrCertificate, trust: &Trust, policy| {
            decide(offer, &names(), now(), trust, policy)
        };
        assert_eq!(
            decide_now(&plain(&a), &pinned, FirstContact::KnownHosts),
            Decision::Known
        );
        let changed = decide_now(&plain(&b), &pinned, FirstContact::Trust);
        let Decision::Refused(Refusal::Changed { pinned: p, offered }) = changed else {
            panic!("{changed:?}");
        };
        assert_eq!(p, fp(a.public_key().key_data()).to_string());
        assert_eq!(offered, fp(b.public_key().key_data()).to_string());
        let nothing = Trust::default();
        assert_eq!(
            decide_now(&plain(&b), &nothing, FirstContact::Trust),
            Decision::FirstContact
        );
        assert!(matches!(
            decide_now(&plain(&b), &nothing, FirstContact::KnownHosts),
            Decision::Refused(Refusal::Unknown { .. })
        ));
        let revoked = Trust {
            revoked: vec![b.public_key().clone()],
            ..Trust::default()
        };
        assert!(matches!(
            decide_now(&plain(&b), &revoked, FirstContact::Trust),
            Decision::Refused(Refusal::Revoked { .. })
        ));
    }

    #[test]
    fn certificates_need_a_trusted_ca_the_right_name_and_time() {
        let keys = Keys::new();
        let host = keys.key("host");
        let ca = keys.key("ca");
        keys.key("other_ca");
        let trust = Trust {
            authorities: vec![ca.public_key().clone()],
            ..Trust::default()
        };
        let good = keys.cert("host", "ca", false, &["h1.example.com"], "-5m:+5m");
        let verdict = |offer: &PublicKeyOrCertificate, trust: &Trust| {
            decide(offer, &names(), now(), trust, FirstContact::Trust)
        };
        assert!(matches!(verdict(&good, &trust), Decision::Certified { .. }));
        let refused = |offer: PublicKeyOrCertificate, why: &str| {
            let v = verdict(&offer, &trust);
            assert!(matches!(v, Decision::Refused(_)), "{why}: {v:?}");
        };
        refused(
            keys.cert("host", "other_ca", false, &["h1.example.com"], "-5m:+5m"),
            "another CA, and no TOFU",
        );
        refused(
            keys.cert("host", "ca", false, &["h2.example.com"], "-5m:+5m"),
            "another name",
        );
        refused(keys.cert("host", "ca", false, &[], "-5m:+5m"), "no names");
        refused(
            keys.cert("host", "ca", true, &["h1.example.com"], "-5m:+5m"),
            "a user certificate",
        );
        refused(
            keys.cert("host", "ca", false, &["h1.example.com"], "-10m:-5m"),
            "expired",
        );
        let revoked_ca = Trust {
            revoked: vec![ca.public_key().clone()],
            ..trust.clone()
        };
        assert!(matches!(
            verdict(&good, &revoked_ca),
            Decision::Refused(Refusal::Revoked { .. })
        ));
        // Signed by a CA nobody trusts, but the key inside is pinned.
        let pinned = Trust {
            keys: vec![host.public_key().clone()],
            ..Trust::default()
        };
        let unknown_ca = keys.cert("host", "other_ca", false, &["h1.example.com"], "-5m:+5m");
        assert_eq!(verdict(&unknown_ca, &pinned), Decision::Known);
    }
}
