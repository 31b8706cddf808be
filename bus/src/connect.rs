//! Connecting to NATS. async-nats reconnects on its own, forever; these
//! options only decide how long a first connect may take, and as which NATS
//! user (SPEC 9: the server itself enforces the roles, see
//! `nats-config/permissions.conf`).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;

use crate::topology::{BucketDef, StreamDef};

/// The default URL: the embedded server of `fleetroll up`.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// Errors reaching or using the bus. Most are "infrastructure" failures
/// (exit code 2) for the CLI; [`BusError::NotAuthorized`] and
/// [`BusError::NotPermitted`] mean the server refused this NATS user.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot reach NATS at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error(
        "NATS at {url} refused the connection: {}",
        match user {
            Some(user) => format!("wrong password for NATS user `{user}`, or no such user (check the credentials file: --nats-credentials, FLEETROLL_NATS_CREDENTIALS or `[nats] credentials`)"),
            None => "it needs a NATS user and password: pass --nats-credentials FILE (`fleetroll up` keeps one file per role in <data-dir>/credentials/)".to_string(),
        }
    )]
    NotAuthorized { url: String, user: Option<String> },
    #[error(
        "NATS refused {what}: {violation} ({}); these NATS credentials are not allowed to do that",
        match user { Some(user) => format!("NATS user `{user}`"), None => "no NATS user".to_string() }
    )]
    NotPermitted {
        what: String,
        violation: String,
        user: Option<String>,
    },
    #[error("TLS with NATS at {url} failed: {detail}; {hint}")]
    Tls {
        url: String,
        detail: String,
        hint: &'static str,
    },
    #[error("JetStream {what} failed: {source}")]
    JetStream {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "bucket `{bucket}` does not exist on this NATS: is the mesh set up? (`fleetroll setup` with the admin NATS credentials; `fleetroll up` sets up its embedded server)"
    )]
    MissingBucket { bucket: &'static str },
    #[error(
        "stream {stream} does not exist on this NATS: the mesh is not set up (`fleetroll setup` with the admin NATS credentials; `fleetroll up` sets up its embedded server)"
    )]
    NotSetUp { stream: String },
    #[error("message in {place} is unreadable: {source}")]
    Decode {
        place: String,
        #[source]
        source: crate::codec::DecodeError,
    },
}

/// Where [`Bus::stored_from`] starts reading a stream.
#[derive(Debug, Clone, Copy)]
pub enum StoredFrom {
    /// Its first message.
    Start,
    /// The first message stored at or after this time.
    Time(time::OffsetDateTime),
    /// The message after this stream sequence.
    After(u64),
}

impl BusError {
    /// A JetStream call that failed while doing `what`.
    pub fn js(
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        BusError::JetStream {
            what: what.into(),
            source: source.into(),
        }
    }
}

/// A NATS user and its password. `fleetroll up` keeps one per role (SPEC 9:
/// relops, readonly, chatops, worker) in `<data-dir>/credentials/<role>.toml`,
/// mode 0600:
///
/// ```toml
/// user = "relops"
/// password = "Zm9vYmFy..."
/// ```
///
/// Load one with [`Credentials::load`] and connect with
/// [`ConnectOptions::credentials`]. The password never shows in `Debug`.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A credentials file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read NATS credentials {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "NATS credentials {path} are not valid: {detail} (expected two lines: user = \"NAME\" and password = \"SECRET\")"
    )]
    Invalid { path: PathBuf, detail: String },
    #[error("cannot write NATS credentials {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Credentials {
    /// Reads a credentials file (TOML: `user`, `password`, nothing else).
    pub fn load(path: &Path) -> Result<Credentials, CredentialsError> {
        let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Credentials::parse(&text).map_err(|detail| CredentialsError::Invalid {
            path: path.to_path_buf(),
            detail,
        })
    }

    /// Parses the text of a credentials file.
    pub fn parse(text: &str) -> Result<Credentials, String> {
        let credentials: Credentials = toml::from_str(text).map_err(|e| e.message().to_string())?;
        let user = credentials.user.as_str();
        if user.is_empty() {
            return Err("`user` is empty".into());
        }
        // The user names the inbox prefix, a subject token.
        if let Some(bad) = user
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>'))
        {
            return Err(format!("`user` may not contain {bad:?}"));
        }
        if credentials.password.is_empty() {
            return Err("`password` is empty".into());
        }
        Ok(credentials)
    }

    /// The file's text, as [`Credentials::parse`] reads it back.
    pub fn to_toml(&self) -> String {
        format!(
            "user = {}\npassword = {}\n",
            toml_string(&self.user),
            toml_string(&self.password)
        )
    }

    /// The inbox prefix this user's replies come to. Each role may
    /// subscribe only to its own (`nats-config/permissions.conf`): a
    /// worker's replies carry commands, and commands carry tokens.
    pub fn inbox_prefix(&self) -> String {
        format!("_INBOX_{}", self.user)
    }
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// TLS to NATS: the CA that signed the servers' certificates, and this
/// client's own certificate and key for servers that ask for one (mutual
/// TLS). With a CA file the connection must be TLS: a server that offers
/// plaintext only is refused rather than trusted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    pub ca_file: Option<PathBuf>,
    /// Certificate and key files, PEM.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// How a component connects.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub url: String,
    /// Shown by `nats server report connections`.
    pub name: String,
    /// Workers wait for NATS to come up; the CLI fails fast.
    pub wait_for_server: bool,
    /// The NATS user to connect as; none connects without (a NATS without
    /// authentication).
    pub credentials: Option<Credentials>,
    /// The token signer this process trusts (workers, the web server):
    /// part of how it is set up, never read from the mesh.
    pub trust: Option<crate::verify::TrustRoot>,
    pub tls: Tls,
    /// A fleetroll token as the NATS credential, where the server asks
    /// fleetroll who a connection is (auth callout, `fleetroll authorizer`):
    /// read again at every connect and reconnect, so a long-running
    /// process picks up a token renewed on disk. A token bound to a holder
    /// key signs the server's nonce with it.
    pub token: Option<crate::token::TokenSource>,
}

impl ConnectOptions {
    pub fn new(url: impl Into<String>, name: impl Into<String>) -> Self {
        ConnectOptions {
            url: url.into(),
            name: name.into(),
            wait_for_server: false,
            credentials: None,
            trust: None,
            tls: Tls::default(),
            token: None,
        }
    }

    /// Connects with this fleetroll token as its NATS identity (a server
    /// whose auth callout is `fleetroll authorizer`); NATS credentials, when
    /// given too, win.
    pub fn token(mut self, token: impl Into<Option<crate::token::TokenSource>>) -> Self {
        self.token = token.into();
        self
    }

    /// The token this connection presents now, if it has one that reads.
    fn current_token(&self) -> Option<String> {
        self.token.as_ref()?.token().ok()
    }

    /// Connects over TLS as `tls` says.
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = tls;
        self
    }

    /// Checks tokens against this trust root ([`crate::verify::Verifier`]).
    pub fn trust(mut self, root: crate::verify::TrustRoot) -> Self {
        self.trust = Some(root);
        self
    }

    /// Connects as this NATS user (none: without credentials).
    pub fn credentials(mut self, credentials: impl Into<Option<Credentials>>) -> Self {
        self.credentials = credentials.into();
        self
    }

    /// The async-nats options: name, user and password, and the user's
    /// inbox prefix. `violations` collects the permission violations the
    /// server reports.
    pub(crate) fn nats(
        &self,
        timeout: Duration,
        violations: Violations,
    ) -> async_nats::ConnectOptions {
        let base = match (&self.credentials, &self.token) {
            (None, Some(source)) => {
                let source = source.clone();
                async_nats::ConnectOptions::with_auth_callback(move |nonce| {
                    let credential = source.credential();
                    async move {
                        let credential = credential.map_err(async_nats::AuthError::new)?;
                        let mut auth = async_nats::Auth::new();
                        // Proof of possession: the authorizer checks that a
                        // bound token's holder signed this server's nonce.
                        auth.signature = credential.holder.map(|key| key.sign(&nonce).to_vec());
                        auth.token = Some(credential.token);
                        Ok(auth)
                    }
                })
            }
            _ => async_nats::ConnectOptions::new(),
        };
        let mut nats = base
            .name(&self.name)
            .connection_timeout(timeout)
            .max_reconnects(None)
            .event_callback(move |event| {
                let violations = violations.clone();
                async move {
                    if let async_nats::Event::ServerError(async_nats::ServerError::Other(text)) =
                        event
                    {
                        violations.record(text);
                    }
                }
            });
        if let Some(credentials) = &self.credentials {
            nats = nats
                .user_and_password(credentials.user.clone(), credentials.password.clone())
                .custom_inbox_prefix(credentials.inbox_prefix());
        } else if let Some(claims) = self.current_token().and_then(|t| crate::token::peek(&t)) {
            nats = nats.custom_inbox_prefix(claims.inbox_prefix());
        }
        if let Some(ca_file) = &self.tls.ca_file {
            nats = nats
                .add_root_certificates(ca_file.clone())
                .require_tls(true);
        }
        if let Some((cert, key)) = &self.tls.client {
            nats = nats.add_client_certificate(cert.clone(), key.clone());
        }
        nats
    }

    /// What an operator can do about a TLS failure with these options.
    fn tls_hint(&self, failure: TlsFailure) -> &'static str {
        if failure == TlsFailure::NotTls {
            return "the server does not speak TLS (a plaintext NATS); with a CA file fleetroll speaks TLS only";
        }
        match (&self.tls.ca_file, &self.tls.client) {
            (None, _) => {
                "the server speaks TLS: give the CA that signed its certificate ([nats] ca_file, FLEETROLL_NATS_CA_FILE or --nats-ca-file)"
            }
            (Some(_), None) => {
                "the server's certificate must be signed by the CA in the CA file and name the host in the URL; a server that asks for client certificates needs [nats] cert_file and key_file"
            }
            (Some(_), Some(_)) => {
                "the server's certificate must be signed by the CA in the CA file and name the host in the URL, and the client certificate must be one the server's CA signed"
            }
        }
    }
}

/// The permission violations a server reported to one connection (a
/// publish the server refuses is dropped, and the refusal comes back on
/// its own, not as the publish's error).
#[derive(Clone, Debug, Default)]
pub(crate) struct Violations(Arc<ViolationLog>);

#[derive(Debug)]
struct ViolationLog {
    /// The newest ones, each with its number.
    kept: Mutex<VecDeque<(u64, String)>>,
    /// How many so far.
    count: tokio::sync::watch::Sender<u64>,
}

impl Default for ViolationLog {
    fn default() -> Self {
        ViolationLog {
            kept: Mutex::new(VecDeque::new()),
            count: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl Violations {
    const KEPT: usize = 32;

    fn record(&self, text: String) {
        if !text
            .to_ascii_lowercase()
            .starts_with("permissions violation")
        {
            return;
        }
        tracing::debug!(violation = %text, "NATS refused an operation");
        let mut kept = self.0.kept.lock().unwrap_or_else(|e| e.into_inner());
        let number = *self.0.count.borrow() + 1;
        if kept.len() == Self::KEPT {
            kept.pop_front();
        }
        kept.push_back((number, text));
        self.0.count.send_replace(number);
    }

    fn count(&self) -> u64 {
        *self.0.count.borrow()
    }

    /// The newest violation after number `after` that names `subject`.
    fn about(&self, subject: &str, after: u64) -> Option<String> {
        let quoted = format!("\"{subject}\"");
        self.0
            .kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .rev()
            .take_while(|(number, _)| *number > after)
            .find(|(_, v)| v.contains(&quoted))
            .map(|(_, v)| v.clone())
    }

    /// Resolves with the first violation after number `after` that names
    /// `subject`; never, if none comes.
    async fn wait(&self, subject: &str, after: u64) -> String {
        let mut count = self.0.count.subscribe();
        loop {
            if let Some(violation) = self.about(subject, after) {
                return violation;
            }
            if count.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }
}

/// A connection to the mesh: the core client and its JetStream context.
#[derive(Clone, Debug)]
pub struct Bus {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    url: String,
    /// The NATS user connected as, if any.
    user: Option<String>,
    violations: Violations,
    /// Buckets opened so far: opening one is a request of its own, and hot
    /// paths (every probe, every query) use the same few.
    buckets: std::sync::Arc<std::sync::Mutex<HashMap<&'static str, jetstream::kv::Store>>>,
    trust: Option<std::sync::Arc<crate::verify::TrustRoot>>,
    tls: bool,
}

impl Bus {
    /// Connects to NATS. With `wait_for_server` it tries again every second
    /// until the server is there; a server that refuses the credentials is
    /// an error at once ([`BusError::NotAuthorized`]) either way.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use fleetroll_bus::connect::{Bus, ConnectOptions, Credentials};
    /// let credentials = Credentials::load("/root/.local/share/fleetroll/credentials/readonly.toml".as_ref())?;
    /// let options = ConnectOptions::new("nats://127.0.0.1:4222", "my-bot").credentials(credentials);
    /// let bus = Bus::connect(options).await?;
    /// println!("connected to {}", bus.url());
    /// # Ok(()) }
    /// ```
    pub async fn connect(options: ConnectOptions) -> Result<Bus, BusError> {
        // rustls picks no crypto provider when the build has two (ring and
        // aws-lc-rs both come in through dependencies): TLS would panic.
        // Installing one is idempotent; a provider the program chose first
        // stays.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // A cluster is given as a comma-separated list of its servers.
        let servers: Vec<async_nats::ServerAddr> = options
            .url
            .split(',')
            .map(|u| u.trim().parse())
            .collect::<Result<_, _>>()
            .map_err(|e: std::io::Error| BusError::Unreachable {
                url: options.url.clone(),
                detail: format!("not a NATS URL list: {e}"),
            })?;
        let user = options
            .credentials
            .as_ref()
            .map(|c| c.user.clone())
            .or_else(|| {
                let claims = crate::token::peek(&options.current_token()?)?;
                Some(format!("{} (token of {})", claims.role, claims.sub))
            });
        let violations = Violations::default();
        let mut waiting = false;
        let client = loop {
            let nats = options.nats(Duration::from_secs(3), violations.clone());
            match nats.connect(servers.clone()).await {
                Ok(client) => break client,
                Err(e) if is_auth_error(&e) => {
                    return Err(BusError::NotAuthorized {
                        url: options.url.clone(),
                        user,
                    });
                }
                // A certificate no one here trusts does not become trusted by
                // waiting.
                Err(e) if let Some(failure) = tls_failure(&e) => {
                    return Err(BusError::Tls {
                        url: options.url.clone(),
                        detail: e.to_string(),
                        hint: options.tls_hint(failure),
                    });
                }
                Err(e) if options.wait_for_server => {
                    if !waiting {
                        tracing::warn!(url = %options.url, error = %e, "NATS not reachable yet; waiting for it");
                        waiting = true;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => {
                    return Err(BusError::Unreachable {
                        url: options.url.clone(),
                        detail: e.to_string(),
                    });
                }
            }
        };
        let js = jetstream::new(client.clone());
        let tls = client.server_info().tls_required
            || options.tls.ca_file.is_some()
            || options
                .url
                .split(',')
                .any(|u| u.trim().to_ascii_lowercase().starts_with("tls://"));
        Ok(Bus {
            tls,
            client,
            js,
            url: options.url,
            user,
            violations,
            buckets: Default::default(),
            trust: options.trust.map(std::sync::Arc::new),
        })
    }

    /// The token signer this connection's process trusts, if it was given one.
    pub fn trust_root(&self) -> Option<&crate::verify::TrustRoot> {
        self.trust.as_deref()
    }

    /// Publishes `payload` on `subject` with `id` as its `Nats-Msg-Id` and
    /// waits for the stream to store it: the same id published again
    /// within the stream's duplicate window is stored once (a retried step
    /// announces once). `what` names the publish in the error.
    pub async fn publish_once(
        &self,
        what: &str,
        subject: String,
        id: &str,
        payload: Vec<u8>,
    ) -> Result<(), BusError> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
        self.js
            .publish_with_headers(subject, headers, payload.into())
            .await
            .map_err(|e| BusError::js(what, e))?
            .await
            .map_err(|e| BusError::js(what, e))?;
        Ok(())
    }

    /// The NATS user this connection is, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Whether this connection is encrypted: the server requires TLS, or
    /// this client asked for it (a `tls://` URL, a CA file).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Runs `work`, a publish on `subject` or a request to it. When the
    /// server refuses this user that subject meanwhile, gives up at once
    /// with [`BusError::NotPermitted`]: a refused publish is dropped, so
    /// `work` itself would only time out.
    pub async fn unless_refused<T>(
        &self,
        what: &str,
        subject: &str,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, BusError> {
        let after = self.violations.count();
        tokio::select! {
            done = work => Ok(done),
            violation = self.violations.wait(subject, after) => Err(BusError::NotPermitted {
                what: what.to_string(),
                violation,
                user: self.user.clone(),
            }),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every current entry of a bucket, decoded, by key, read in one pass
    /// (one consumer, not a request per key). Entries that do not decode
    /// are skipped: a reader must not fail on one bad record.
    pub async fn snapshot<T: crate::codec::Message>(
        &self,
        bucket: &BucketDef,
    ) -> Result<std::collections::BTreeMap<String, T>, BusError> {
        use futures::StreamExt;
        let store = self.kv(bucket).await?;
        let read_error = |e: Box<dyn std::error::Error + Send + Sync>| {
            BusError::js(format!("reading bucket {}", bucket.name), e)
        };
        let mut entries = std::collections::BTreeMap::new();
        if self.bucket_state(bucket).await?.messages == 0 {
            return Ok(entries);
        }
        let mut watch = store
            .watch_all_from_revision(1)
            .await
            .map_err(|e| read_error(e.into()))?;
        while let Some(entry) = watch.next().await {
            let entry = entry.map_err(|e| read_error(e.into()))?;
            match entry.operation {
                jetstream::kv::Operation::Put => {
                    if let Ok(value) = crate::codec::from_cbor::<T>(&entry.value) {
                        entries.insert(entry.key.clone(), value);
                    }
                }
                _ => {
                    entries.remove(&entry.key);
                }
            }
            // The replayed backlog ends with the newest entry, `delta == 0`.
            if entry.delta == 0 {
                break;
            }
        }
        Ok(entries)
    }

    /// A bucket's state now: its message count and last revision. (The
    /// `status` of an opened `kv::Store` is what it was when opened.)
    pub async fn bucket_state(
        &self,
        bucket: &BucketDef,
    ) -> Result<jetstream::stream::State, BusError> {
        let stream = self
            .js
            .get_stream(bucket.stream_name())
            .await
            .map_err(|e| BusError::js(format!("reading bucket {}", bucket.name), e))?;
        Ok(stream.cached_info().state.clone())
    }

    /// Every message a stream holds on `subject` (wildcards allowed) that
    /// was stored at or after `since`, oldest first.
    pub async fn stored_since(
        &self,
        stream: &StreamDef,
        subject: String,
        since: time::OffsetDateTime,
    ) -> Result<Vec<bytes::Bytes>, BusError> {
        Ok(self
            .stored_from(stream, subject, StoredFrom::Time(since))
            .await?
            .into_iter()
            .map(|(_, payload)| payload)
            .collect())
    }

    /// Every message a stream holds on `subject`, oldest first.
    pub async fn stored(
        &self,
        stream: &StreamDef,
        subject: String,
    ) -> Result<Vec<bytes::Bytes>, BusError> {
        Ok(self
            .stored_from(stream, subject, StoredFrom::Start)
            .await?
            .into_iter()
            .map(|(_, payload)| payload)
            .collect())
    }

    /// Every message a stream holds on `subject` from `from` on, with its
    /// stream sequence, oldest first: a reader that remembers the last
    /// sequence it saw reads only what came since.
    pub async fn stored_from(
        &self,
        stream: &StreamDef,
        subject: String,
        from: StoredFrom,
    ) -> Result<Vec<(u64, bytes::Bytes)>, BusError> {
        use futures::StreamExt;
        use jetstream::consumer::DeliverPolicy;
        let read_error = |e: Box<dyn std::error::Error + Send + Sync>| {
            BusError::js(format!("reading {}", stream.name), e)
        };
        let deliver_policy = match from {
            StoredFrom::Start => DeliverPolicy::All,
            StoredFrom::Time(start_time) => DeliverPolicy::ByStartTime { start_time },
            StoredFrom::After(sequence) => DeliverPolicy::ByStartSequence {
                start_sequence: sequence + 1,
            },
        };
        let consumer = self
            .js
            .get_stream(stream.name)
            .await
            .map_err(|e| read_error(e.into()))?
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                filter_subject: subject,
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| read_error(e.into()))?;
        let pending = consumer.cached_info().num_pending;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| read_error(e.into()))?;
        let mut stored = Vec::new();
        while (stored.len() as u64) < pending {
            match messages.next().await {
                Some(Ok(message)) => {
                    let sequence = message.info().map_err(&read_error)?.stream_sequence;
                    stored.push((sequence, message.payload.clone()));
                }
                Some(Err(e)) => return Err(read_error(e.into())),
                None => break,
            }
        }
        Ok(stored)
    }

    /// Opens an existing bucket.
    pub async fn kv(&self, bucket: &BucketDef) -> Result<jetstream::kv::Store, BusError> {
        let opened = self
            .buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(bucket.name)
            .cloned();
        if let Some(store) = opened {
            return Ok(store);
        }
        let store = self.js.get_key_value(bucket.name).await.map_err(|e| {
            // Only the server saying so means missing: while a cluster elects
            // a new leader the lookup times out, and that is no setup problem.
            let missing = std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<jetstream::context::GetStreamError>())
                .is_some_and(stream_not_found);
            if missing {
                BusError::MissingBucket {
                    bucket: bucket.name,
                }
            } else {
                BusError::js(format!("opening bucket {}", bucket.name), e)
            }
        })?;
        self.buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(bucket.name, store.clone());
        Ok(store)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsFailure {
    /// A certificate one side does not trust, or TLS set up wrong.
    Handshake,
    /// What answered is not TLS.
    NotTls,
}

/// Whether, and how, the TLS handshake failed (async-nats reports most of
/// these as I/O errors carrying the rustls error).
fn tls_failure(e: &async_nats::ConnectError) -> Option<TlsFailure> {
    let judge = |error: &rustls::Error| match error {
        rustls::Error::InvalidMessage(_) => TlsFailure::NotTls,
        _ => TlsFailure::Handshake,
    };
    let mut cause = std::error::Error::source(e);
    while let Some(error) = cause {
        if let Some(rustls) = error.downcast_ref::<rustls::Error>() {
            return Some(judge(rustls));
        }
        if let Some(rustls) = error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(judge(rustls));
        }
        cause = error.source();
    }
    (e.kind() == async_nats::ConnectErrorKind::Tls).then_some(TlsFailure::Handshake)
}

/// The server says the stream does not exist (a lookup that timed out, as
/// while a cluster elects a leader, is not that).
pub(crate) fn stream_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(j)
        if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

/// The server refused the user or password (not: the server is not there).
pub(crate) fn is_auth_error(e: &async_nats::ConnectError) -> bool {
    matches!(
        e.kind(),
        async_nats::ConnectErrorKind::AuthorizationViolation
            | async_nats::ConnectErrorKind::Authentication
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    /// A JetStream failure keeps the error it came from: a caller can
    /// reach it and tell its kind.
    #[test]
    fn a_jetstream_error_keeps_its_source() {
        let cause = std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer");
        let error = BusError::js("reading a bucket", cause);
        assert_eq!(
            error.to_string(),
            "JetStream reading a bucket failed: no answer"
        );
        let source = error.source().expect("a source");
        let io = source
            .downcast_ref::<std::io::Error>()
            .expect("the io error");
        assert_eq!(io.kind(), std::io::ErrorKind::TimedOut);
    }
}
