//! A small PKI for one fleetroll deployment: a certificate authority, NATS
//! node certificates (client port and cluster routes) and client
//! certificates (mutual TLS), as PEM files in one directory.
//!
//! ```
//! use fleetroll_pki::{Ca, Kind};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let ca = Ca::create(dir.path(), "example fleet").unwrap();
//! let node = ca
//!     .issue(Kind::Node, "nats-1", &["nats-1.example.com".into(), "10.0.0.1".into()], 365)
//!     .unwrap();
//! assert!(node.cert.exists() && node.key.exists());
//! assert!(Ca::load(dir.path()).is_ok());
//! ```
//!
//! Keys are ECDSA P-256; private keys are written mode 0600 and never
//! replaced: issuing a name that exists is refused.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// The CA certificate's file name in a PKI directory: what every client
/// and node is given as its `ca_file`.
pub const CA_CERT: &str = "ca.pem";
/// The CA's private key: it stays where certificates are issued.
pub const CA_KEY: &str = "ca-key.pem";

/// How long the CA is good for.
const CA_DAYS: i64 = 3650;

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A NATS server: its client port and its cluster routes, where each
    /// node is the other's client (server and client authentication).
    Node,
    /// A client of NATS presenting a certificate (mutual TLS): an operator,
    /// a worker machine, a bot.
    Client,
}

/// The files of an issued certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Why the PKI could not do it.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path} exists: refusing to replace it (remove it first to issue it anew)")]
    Exists { path: PathBuf },
    #[error("cannot read {path}: {source} (make the CA with `fleetroll tls init`)")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{name}` is not a usable certificate name: use letters, digits and . _ - (1-64)")]
    BadName { name: String },
    #[error("`{name}` is neither an IP address nor a DNS name")]
    BadSan { name: String },
    #[error("a node certificate needs at least one name or address it is reached by (--san)")]
    NoSan,
    #[error("{what}: {source}")]
    Certificate {
        what: String,
        #[source]
        source: rcgen::Error,
    },
}

/// A certificate authority kept in a directory.
pub struct Ca {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("dir", &self.dir).finish()
    }
}

fn certificate_error(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> PkiError {
    let what = what.into();
    move |source| PkiError::Certificate { what, source }
}

impl Ca {
    /// Makes a new CA in `dir` (created if missing): `ca.pem` and
    /// `ca-key.pem`. An existing CA there is never replaced.
    pub fn create(dir: &Path, name: &str) -> Result<Ca, PkiError> {
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let key = KeyPair::generate().map_err(certificate_error("generating the CA key"))?;
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name = distinguished_name(name);
        (params.not_before, params.not_after) = validity(CA_DAYS);
        let cert = params
            .self_signed(&key)
            .map_err(certificate_error("signing the CA certificate"))?;
        write_new(&dir.join(CA_KEY), &key.serialize_pem(), 0o600)?;
        write_new(&dir.join(CA_CERT), &cert.pem(), 0o644)?;
        Ok(Ca {
            dir: dir.to_path_buf(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA in `dir`.
    pub fn load(dir: &Path) -> Result<Ca, PkiError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| PkiError::Read { path, source })
        };
        let key = KeyPair::from_pem(&read(CA_KEY)?).map_err(certificate_error(format!(
            "reading {}",
            dir.join(CA_KEY).display()
        )))?;
        let issuer = Issuer::from_ca_cert_pem(&read(CA_CERT)?, key).map_err(certificate_error(
            format!("reading {}", dir.join(CA_CERT).display()),
        ))?;
        Ok(Ca {
            dir: dir.to_path_buf(),
            issuer,
        })
    }

    /// The CA certificate's file.
    pub fn cert_file(&self) -> PathBuf {
        self.dir.join(CA_CERT)
    }

    /// Issues a certificate for `name`, valid for `days`, into the CA's
    /// directory as `<name>.pem` and `<name>-key.pem`. `sans` are the DNS
    /// names and IP addresses a node is reached by (a client certificate
    /// needs none: its name is its common name).
    pub fn issue(
        &self,
        kind: Kind,
        name: &str,
        sans: &[String],
        days: u32,
    ) -> Result<Issued, PkiError> {
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid_name {
            return Err(PkiError::BadName {
                name: name.to_string(),
            });
        }
        if kind == Kind::Node && sans.is_empty() {
            return Err(PkiError::NoSan);
        }
        let issued = Issued {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}-key.pem")),
        };
        for path in [&issued.cert, &issued.key] {
            if path.exists() {
                return Err(PkiError::Exists { path: path.clone() });
            }
        }
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans
            .iter()
            .map(|san| san_type(san))
            .collect::<Result<_, _>>()?;
        params.distinguished_name = distinguished_name(name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = match kind {
            Kind::Node => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Kind::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        params.use_authority_key_identifier_extension = true;
        (params.not_before, params.not_after) = validity(days.into());
        let key = KeyPair::generate().map_err(certificate_error("generating a key"))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(certificate_error(format!("signing {name}")))?;
        write_new(&issued.key, &key.serialize_pem(), 0o600)?;
        write_new(&issued.cert, &cert.pem(), 0o644)?;
        Ok(issued)
    }
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name.push(DnType::OrganizationName, "fleetroll");
    name
}

/// From an hour ago (clocks differ a little) for `days`.
fn validity(days: i64) -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    (now - Duration::hours(1), now + Duration::days(days))
}

fn san_type(san: &str) -> Result<SanType, PkiError> {
    if let Ok(ip) = san.parse::<std::net::IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let dns = san.len() <= 253
        && !san.is_empty()
        && san.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '*')
        });
    let bad = || PkiError::BadSan {
        name: san.to_string(),
    };
    if !dns {
        return Err(bad());
    }
    Ok(SanType::DnsName(
        san.to_string().try_into().map_err(|_| bad())?,
    ))
}

/// Writes a file that must not exist yet, with `mode` from its creation on.
fn write_new(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                PkiError::Exists {
                    path: path.to_path_buf(),
                }
            } else {
                PkiError::Write {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
    file.write_all(contents.as_bytes())
        .map_err(|source| PkiError::Write {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_issues_nodes_and_clients_and_replaces_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::create(dir.path(), "test").unwrap();
        assert!(matches!(
            Ca::create(dir.path(), "again"),
            Err(PkiError::Exists { .. })
        ));
        let node = ca
            .issue(
                Kind::Node,
                "n1",
                &["127.0.0.1".into(), "localhost".into()],
                30,
            )
            .unwrap();
        let mode = std::fs::metadata(&node.key).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        assert!(matches!(
            ca.issue(Kind::Node, "n1", &["127.0.0.1".into()], 30),
            Err(PkiError::Exists { .. })
        ));
        assert!(matches!(
            ca.issue(Kind::Node, "n2", &[], 30),
            Err(PkiError::NoSan)
        ));
        for bad in ["../x", "", "a b"] {
            assert!(matches!(
                ca.issue(Kind::Client, bad, &[], 30),
                Err(PkiError::BadName { .. })
            ));
        }
        assert!(matches!(
            ca.issue(Kind::Node, "n3", &["not a name".into()], 30),
            Err(PkiError::BadSan { .. })
        ));
        let loaded = Ca::load(dir.path()).unwrap();
        loaded.issue(Kind::Client, "alice", &[], 30).unwrap();
    }
}
