//! Where the CLI finds its data dir, NATS and token.

use std::path::PathBuf;

use anyhow::Context as _;
use fleetroll_bus::connect::{Bus, ConnectOptions, Credentials, DEFAULT_NATS_URL, Tls};
use fleetroll_bus::embedded::NatsUser;
use fleetroll_bus::token::Role;

use crate::args::Global;
use crate::exit::{self, fail};

/// The file `fleetroll up` writes its NATS URL to while it runs, so other
/// commands with the same data dir find it.
const URL_FILE: &str = "nats.url";

/// `fleetroll.toml`: in the data dir, or wherever `--config` says.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub nats: NatsSettings,
    #[serde(default)]
    pub ssh: fleetroll_ssh::SshSettings,
    #[serde(default)]
    pub drift: fleetroll_gatekeeper::DriftSettings,
    #[serde(default)]
    pub refresh: RefreshSettings,
    #[serde(default)]
    pub orchestrator: fleetroll_orchestrator::OrchestratorSettings,
    #[serde(default)]
    pub storage: StorageSettings,
    /// Where workload comes from (Taskcluster); none, none collected.
    pub workload: Option<fleetroll_prober::workload::WorkloadSettings>,
}

/// The `[storage]` section: the JetStream store the mesh's streams and
/// buckets share, each with its part as its size limit.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    /// "16 GiB", "512 MiB": no more than the server's `max_file_store`.
    #[serde(default = "default_store")]
    pub max_bytes: bytesize::ByteSize,
}

fn default_store() -> bytesize::ByteSize {
    bytesize::ByteSize::b(fleetroll_bus::topology::Storage::default().bytes)
}

impl Default for StorageSettings {
    fn default() -> Self {
        StorageSettings {
            max_bytes: default_store(),
        }
    }
}

/// The `[refresh]` section.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshSettings {
    /// Every seed is fully probed this often.
    #[serde(default = "default_full_interval", with = "humantime_serde")]
    pub full_interval: std::time::Duration,
    /// Every seed gets a fast probe this often.
    #[serde(default = "default_fast_interval", with = "humantime_serde")]
    pub fast_interval: std::time::Duration,
}

fn default_fast_interval() -> std::time::Duration {
    std::time::Duration::from_secs(300)
}

fn default_full_interval() -> std::time::Duration {
    std::time::Duration::from_secs(3600)
}

impl Default for RefreshSettings {
    fn default() -> Self {
        RefreshSettings {
            full_interval: default_full_interval(),
            fast_interval: default_fast_interval(),
        }
    }
}

impl Settings {
    /// The prober's settings, its workload source resolved from
    /// `[workload]` and Taskcluster's variables.
    pub fn prober(&self) -> anyhow::Result<fleetroll_prober::ProberSettings> {
        let workload = match &self.workload {
            Some(w) => Some(
                w.resolve(|name| std::env::var(name).ok())
                    .map_err(|e| fail(exit::INVALID, format!("the workload source: {e:#}")))?,
            ),
            None => None,
        };
        Ok(fleetroll_prober::ProberSettings {
            ssh: self.ssh.clone(),
            full_interval: self.refresh.full_interval,
            fast_interval: self.refresh.fast_interval,
            workload,
        })
    }

    pub fn orchestrator(&self) -> fleetroll_orchestrator::OrchestratorSettings {
        fleetroll_orchestrator::OrchestratorSettings {
            ssh: self.ssh.clone(),
            ..self.orchestrator.clone()
        }
    }

    pub fn drift(&self) -> fleetroll_gatekeeper::DriftSettings {
        let mut drift = self.drift.clone();
        if let Some(w) = &self.workload {
            drift.active_window = w.active_window;
        }
        drift
    }
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSettings {
    pub url: Option<String>,
    /// The NATS credentials file (`--nats-credentials` wins).
    pub credentials: Option<PathBuf>,
    /// TLS: the CA that signed the servers' certificates, and this client's
    /// certificate and key for mutual TLS (the `--nats-*-file` flags win).
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

#[derive(Clone)]
pub struct Context {
    pub global: Global,
    pub settings: Settings,
}

impl Context {
    /// Reads the settings file (a missing default one is fine) and applies
    /// the environment's overrides.
    pub fn new(global: Global) -> anyhow::Result<Context> {
        let mut ctx = Context {
            global,
            settings: Settings::default(),
        };
        let path = ctx
            .global
            .config
            .clone()
            .unwrap_or_else(|| ctx.data_dir().join("fleetroll.toml"));
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                ctx.settings = toml::from_str(&text)
                    .map_err(|e| fail(exit::INVALID, format!("{}: {e}", path.display())))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && ctx.global.config.is_none() => {}
            Err(e) => {
                return Err(fail(
                    exit::INVALID,
                    format!("cannot read {}: {e}", path.display()),
                ));
            }
        }
        ctx.settings
            .ssh
            .apply_env(|name| std::env::var_os(name))
            .map_err(|e| fail(exit::INVALID, e.to_string()))?;
        Ok(ctx)
    }

    pub fn data_dir(&self) -> PathBuf {
        if let Some(dir) = &self.global.data_dir {
            return dir.clone();
        }
        let base = std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
            .unwrap_or_else(|| PathBuf::from("."));
        base.join("fleetroll")
    }

    pub fn replicas(&self) -> fleetroll_bus::setup::Replicas {
        fleetroll_bus::setup::Replicas(self.global.replicas.into())
    }

    pub fn storage(&self) -> fleetroll_bus::topology::Storage {
        fleetroll_bus::topology::Storage {
            bytes: self.settings.storage.max_bytes.as_u64(),
        }
    }

    pub fn url_file(&self) -> PathBuf {
        self.data_dir().join(URL_FILE)
    }

    pub fn nats_url(&self) -> String {
        self.named_nats_url()
            .unwrap_or_else(|| DEFAULT_NATS_URL.to_string())
    }

    /// The NATS URL from `--nats-url`, `[nats] url` or the one a running
    /// `fleetroll up` wrote into the data dir; `None` when only the
    /// default is left.
    fn named_nats_url(&self) -> Option<String> {
        if let Some(url) = self
            .global
            .nats_url
            .as_ref()
            .or(self.settings.nats.url.as_ref())
        {
            return Some(url.clone());
        }
        std::fs::read_to_string(self.url_file())
            .map(|u| u.trim().to_string())
            .ok()
            .filter(|u| !u.is_empty())
    }

    /// The NATS credentials to connect with: `--nats-credentials`
    /// (`FLEETROLL_NATS_CREDENTIALS`), else `[nats] credentials`, else
    /// `<data-dir>/credentials/<user>.toml` when `fleetroll up` made one;
    /// none without any (a NATS without authentication). A named file
    /// that cannot be read is an error.
    pub fn credentials(&self, user: impl Into<NatsUser>) -> anyhow::Result<Option<Credentials>> {
        let explicit = self.global.nats_credentials.as_ref().or(self
            .settings
            .nats
            .credentials
            .as_ref());
        let path = match explicit {
            Some(path) => path.clone(),
            None => {
                let default = self.credentials_file(user);
                if !default.exists() {
                    return Ok(None);
                }
                default
            }
        };
        Credentials::load(&path)
            .map(Some)
            .map_err(|e| fail(exit::INVALID, e.to_string()))
    }

    /// Where `fleetroll up` keeps the credentials of a NATS user.
    pub fn credentials_file(&self, user: impl Into<NatsUser>) -> PathBuf {
        fleetroll_bus::embedded::credentials_file(&self.data_dir(), user)
    }

    /// TLS to the named NATS: flags, else `[nats]`.
    pub fn nats_tls(&self) -> anyhow::Result<Tls> {
        let (global, nats) = (&self.global, &self.settings.nats);
        let ca_file = global.nats_ca_file.clone().or(nats.ca_file.clone());
        let client = match (
            global.nats_cert_file.clone().or(nats.cert_file.clone()),
            global.nats_key_file.clone().or(nats.key_file.clone()),
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                return Err(fail(
                    exit::INVALID,
                    "[nats] cert_file and key_file go together: give both or neither",
                ));
            }
        };
        for path in ca_file
            .iter()
            .chain(client.iter().flat_map(|(c, k)| [c, k]))
        {
            if let Err(e) = std::fs::metadata(path) {
                return Err(fail(
                    exit::INVALID,
                    format!("cannot read the TLS file {}: {e}", path.display()),
                ));
            }
        }
        Ok(Tls { ca_file, client })
    }

    /// How to connect to `url` as `name`, TLS included.
    pub fn nats_options(
        &self,
        url: impl Into<String>,
        name: impl Into<String>,
    ) -> anyhow::Result<ConnectOptions> {
        Ok(ConnectOptions::new(url, name).tls(self.nats_tls()?))
    }

    /// Connects as RelOps (see [`Context::credentials`]), failing fast when
    /// NATS is not there.
    pub async fn connect(&self) -> anyhow::Result<Bus> {
        let options = self
            .nats_options(self.nats_url(), "fleetroll-cli")?
            .credentials(self.credentials(Role::Relops)?)
            .token(self.token_source().ok());
        let connected = Bus::connect(options).await;
        if connected.is_err() && self.named_nats_url().is_none() {
            // Whatever answered (or not) at the default port, the likely
            // story is a stopped `up`: say so before the server's words.
            return connected.context(format!(
                "no `fleetroll up` is running for {} (it writes its NATS URL to {}), so the default {DEFAULT_NATS_URL} was tried; start `fleetroll up`, or name the mesh with --nats-url or FLEETROLL_NATS_URL",
                self.data_dir().display(),
                self.url_file().display()
            ));
        }
        Ok(connected?)
    }

    pub fn signing_key_path(&self) -> PathBuf {
        self.data_dir().join("auth").join("signing-key.pem")
    }

    /// The public half of the signing key, which workers and the web
    /// server check tokens against (copied to every machine they run on).
    pub fn verifying_key_path(&self) -> PathBuf {
        self.data_dir().join("auth").join("verifying-key.pub")
    }

    /// What this process trusts tokens from: the data dir's verifying key
    /// file, never the copy published on the mesh.
    pub fn trust_root(&self) -> fleetroll_bus::verify::TrustRoot {
        fleetroll_bus::verify::TrustRoot::File(self.verifying_key_path())
    }

    /// The key the auditor signs records with.
    pub fn audit_key_path(&self) -> PathBuf {
        self.data_dir().join("auth").join("audit-key.pem")
    }

    /// The public halves of the audit keys this data dir's `audit verify`
    /// trusts, written by `auth init` and `up` (copied to every machine
    /// that verifies the log); never the keys published on the mesh.
    pub fn trusted_audit_keys_path(&self) -> PathBuf {
        self.data_dir().join("auth").join("audit-keys.pub")
    }

    /// The keys listed in [`Context::trusted_audit_keys_path`]; none when
    /// there is no such file.
    pub fn listed_audit_keys(&self) -> anyhow::Result<Vec<fleetroll_bus::token::VerifyingKey>> {
        use fleetroll_bus::audit_log::{self, AuditKeysError};
        match audit_log::trusted_keys(&self.trusted_audit_keys_path()) {
            Ok(keys) => Ok(keys),
            Err(AuditKeysError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(Vec::new())
            }
            Err(e) => Err(fail(exit::INVALID, e.to_string())),
        }
    }

    /// The audit keys `audit verify` checks records against: those listed
    /// in [`Context::trusted_audit_keys_path`] and the data dir's own audit
    /// key. With neither it refuses (fail closed: nothing would be checked).
    pub fn trusted_audit_keys(&self) -> anyhow::Result<Vec<fleetroll_bus::token::VerifyingKey>> {
        let listed = self.trusted_audit_keys_path();
        let mut keys = self.listed_audit_keys()?;
        let own = self.audit_key_path();
        if own.exists() {
            keys.push(
                read_key(&own, |e| format!("cannot read {}: {e}", own.display()))?.verifying_key(),
            );
        }
        if keys.is_empty() {
            return Err(fail(
                exit::INVALID,
                format!(
                    "no audit keys to check records against: audit verify trusts the keys listed in {} (and the data dir's own audit key), never those published on the mesh; copy that file from the data dir where `fleetroll auth init` ran",
                    listed.display()
                ),
            ));
        }
        Ok(keys)
    }

    /// The auditor's settings: the audit key of the data dir (which must
    /// exist: it is the operator's, copied to where auditors run) and its
    /// index file.
    pub fn auditor(&self) -> anyhow::Result<fleetroll_auditor::AuditorSettings> {
        let path = self.audit_key_path();
        let key = read_key(&path, |e| {
            format!(
                "no audit key at {} ({e}): an auditor signs records with the key `fleetroll auth init` made; copy it here or use the data dir that has it",
                path.display()
            )
        })?;
        Ok(fleetroll_auditor::AuditorSettings {
            key: std::sync::Arc::new(key),
            index: self.data_dir().join("auditor").join("index.redb"),
        })
    }

    pub fn default_token_path(&self) -> PathBuf {
        self.data_dir().join("token")
    }

    /// The caller's token and, when it is bound to a key, that key: the
    /// file beside the token file, `<token-file>.key` (`auth issue --out`
    /// and `up` write both). A bound token without its key is refused here
    /// rather than by every worker.
    pub fn credential(&self) -> anyhow::Result<fleetroll_bus::token::Credential> {
        let (token, file) = self.token_and_file()?;
        let bound = fleetroll_bus::token::peek(&token).is_some_and(|c| c.cnf.is_some());
        if !bound {
            return Ok(fleetroll_bus::token::Credential::bearer(token));
        }
        let Some(file) = file else {
            return Err(fail(
                exit::INVALID,
                "the token in FLEETROLL_TOKEN is bound to a holder key: pass it as --token-file FILE with its key in FILE.key",
            ));
        };
        let holder = fleetroll_bus::token::read_holder_key(&file)
            .map_err(|e| fail(exit::INVALID, e.to_string()))?;
        Ok(fleetroll_bus::token::Credential {
            token,
            holder: Some(holder),
        })
    }

    /// The caller's token as a NATS identity (a server with the auth
    /// callout): its file, read again at every reconnect, or the
    /// environment's token.
    pub fn token_source(&self) -> anyhow::Result<fleetroll_bus::token::TokenSource> {
        use fleetroll_bus::token::TokenSource;
        Ok(match self.token_and_file()? {
            (_, Some(file)) => TokenSource::File(file),
            (token, None) => TokenSource::Fixed(token),
        })
    }

    /// The caller's token: `--token-file`, then `$FLEETROLL_TOKEN`, then
    /// `<data-dir>/token`.
    pub fn token(&self) -> anyhow::Result<String> {
        Ok(self.token_and_file()?.0)
    }

    /// The caller's token and the file it came from (none: the
    /// environment's).
    fn token_and_file(&self) -> anyhow::Result<(String, Option<PathBuf>)> {
        if let Some(path) = &self.global.token_file {
            let token = std::fs::read_to_string(path)
                .map(|t| t.trim().to_string())
                .with_context(|| format!("reading token file {}", path.display()))
                .map_err(|e| fail(exit::INVALID, format!("{e:#}")))?;
            if token.is_empty() {
                return Err(fail(
                    exit::INVALID,
                    format!("token file {} is empty", path.display()),
                ));
            }
            return Ok((token, Some(path.clone())));
        }
        if let Ok(token) = std::env::var("FLEETROLL_TOKEN") {
            return Ok((token.trim().to_string(), None));
        }
        let path = self.default_token_path();
        std::fs::read_to_string(&path)
            .map(|t| (t.trim().to_string(), Some(path.clone())))
            .map_err(|_| {
                fail(
                    exit::UNAUTHORIZED,
                    format!(
                        "no token: pass --token-file, set FLEETROLL_TOKEN, or put one in {} (`fleetroll auth issue --actor you --role relops --out {}`)",
                        path.display(),
                        path.display()
                    ),
                )
            })
    }
}

/// An Ed25519 key file (PKCS#8 PEM); `missing` says what a file that
/// cannot be read means. Either failure is exit 1.
pub fn read_key(
    path: &std::path::Path,
    missing: impl FnOnce(std::io::Error) -> String,
) -> anyhow::Result<fleetroll_bus::token::SigningKey> {
    let pem = std::fs::read_to_string(path).map_err(|e| fail(exit::INVALID, missing(e)))?;
    fleetroll_bus::token::SigningKey::from_pem(&pem)
        .map_err(|e| fail(exit::INVALID, format!("{}: {e}", path.display())))
}
