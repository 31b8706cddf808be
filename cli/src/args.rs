//! The command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use fleetroll_bus::WorkerKind;
use fleetroll_bus::token::Role;

#[derive(Parser)]
#[command(
    name = "fleetroll",
    version,
    about = "Roll call and staged rollouts for a Puppet-managed fleet over SSH"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Top,
}

#[derive(Args, Clone)]
pub struct Global {
    /// Where fleetroll keeps its signing key, token and embedded NATS data.
    #[arg(long, global = true, env = "FLEETROLL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Settings file (default: <data-dir>/fleetroll.toml).
    #[arg(long, global = true, env = "FLEETROLL_CONFIG")]
    pub config: Option<PathBuf>,
    /// NATS to use instead of the embedded server.
    #[arg(long, global = true, env = "FLEETROLL_NATS_URL")]
    pub nats_url: Option<String>,
    /// NATS user and password to connect as (TOML `user = ".."`, `password = ".."`;
    /// default: <data-dir>/credentials/relops.toml, for `worker` worker.toml,
    /// when it exists; else none).
    #[arg(long, global = true, env = "FLEETROLL_NATS_CREDENTIALS")]
    pub nats_credentials: Option<PathBuf>,
    /// CA certificate that signed the NATS servers' certificates: the
    /// connection must then be TLS (`fleetroll tls init` makes one).
    #[arg(long, global = true, env = "FLEETROLL_NATS_CA_FILE")]
    pub nats_ca_file: Option<PathBuf>,
    /// This client's certificate, for servers that ask for one (mutual TLS).
    #[arg(
        long,
        global = true,
        env = "FLEETROLL_NATS_CERT_FILE",
        requires = "nats_key_file"
    )]
    pub nats_cert_file: Option<PathBuf>,
    /// The private key of --nats-cert-file.
    #[arg(
        long,
        global = true,
        env = "FLEETROLL_NATS_KEY_FILE",
        requires = "nats_cert_file"
    )]
    pub nats_key_file: Option<PathBuf>,
    /// File holding your token (default: <data-dir>/token, or $FLEETROLL_TOKEN).
    #[arg(long, global = true, env = "FLEETROLL_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Copies of each stream and bucket, when `setup` (or `up`) creates
    /// them: 1 on a single server, 3 on a cluster.
    #[arg(long, global = true, env = "FLEETROLL_REPLICAS", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=5))]
    pub replicas: u8,
}

#[derive(Subcommand)]
pub enum Top {
    /// Run the whole mesh here: embedded nats-server plus one replica of every worker.
    Up(UpArgs),
    /// Create the streams, buckets and worker consumers of a NATS deployment
    /// (as its `admin` NATS user; `up` does it for its embedded server).
    /// Idempotent: what exists keeps its replicas and takes today's limits.
    Setup,
    /// Run one worker replica against a NATS deployment.
    Worker {
        #[arg(value_parser = parse_kind)]
        kind: WorkerKind,
        /// Serve Prometheus `/metrics` (and `/healthz`) on this address.
        #[arg(long, env = "FLEETROLL_METRICS_LISTEN")]
        metrics_listen: Option<SocketAddr>,
    },
    /// Serve the read-only web UI and HTTP API against a mesh (`up` serves
    /// them too).
    Serve(WebArgs),
    /// Answer a NATS server's auth callout: each connection's fleetroll
    /// token is its NATS identity (connects as the server's `auth` user,
    /// --nats-credentials).
    Authorizer {
        /// The account key that signs NATS users (`fleetroll auth
        /// callout-key` makes it; its public half is the server's
        /// `auth_callout { issuer }`).
        #[arg(long, env = "FLEETROLL_CALLOUT_SEED_FILE")]
        issuer_seed: PathBuf,
        /// The longest a NATS connection lives before it is authorized
        /// again (a revoked operator's open connection ends within it).
        #[arg(long, value_parser = parse_duration, default_value = "5m")]
        session: Duration,
    },
    /// The mesh at a glance: NATS, streams and buckets, live worker replicas.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Round trip CLI → command stream → worker → outcome, for each worker kind.
    Ping(PingArgs),
    /// Signing key and tokens.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// A small PKI for TLS between NATS nodes and clients: a CA, node and
    /// client certificates.
    #[command(subcommand)]
    Tls(TlsCommand),
    /// The inventory: seeds and refreshes.
    #[command(subcommand)]
    Inventory(InventoryCommand),
    /// Hosts: list, show, refresh, repin, assignments.
    #[command(subcommand)]
    Host(HostCommand),
    /// Populations: named groups of hosts with an expected role.
    #[command(subcommand)]
    Population(PopulationCommand),
    /// Follow rollout events live: of one rollout, or of all.
    Watch {
        #[command(subcommand)]
        what: Option<WatchWhat>,
        #[arg(long)]
        json: bool,
    },
    /// Live host table in the terminal: sort, filter in the query language,
    /// overrides only (`?` lists the keys).
    Monitor {
        /// How often the table is fetched again.
        #[arg(long, value_parser = parse_duration, default_value = "2s")]
        interval: Duration,
    },
    /// Rollouts: plan, start, advance, pause, resume, status.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Run a host's converge command (Puppet) now, its output streamed here.
    #[command(subcommand)]
    Converge(ConvergeCommand),
    /// Reboot a host and wait until it answers again.
    #[command(subcommand)]
    Reboot(RebootCommand),
    /// The audit log: list it, verify its chain, print override snapshots.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Print a shell completion script (`fleetroll completions bash > /etc/bash_completion.d/fleetroll`).
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
pub enum PopulationCommand {
    Create {
        name: String,
        #[arg(long)]
        expected_role: String,
        #[arg(long)]
        target_query: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum HostCommand {
    /// Hosts and what was last observed of them.
    List {
        /// Only hosts matching this query (`role:gecko* AND sshable:false`).
        #[arg(long, default_value = "")]
        filter: String,
        /// Only hosts with this drift (override, role, unreachable, tc-missing,
        /// tc-mismatch, disabled-active, any).
        #[arg(long, value_parser = ["override", "role", "unreachable", "tc-missing", "tc-mismatch", "disabled-active", "any"])]
        drift_type: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Assign hosts to a population (one host, or `--filter Q --confirm`).
    AssignPopulation {
        #[arg(required_unless_present = "filter", conflicts_with = "filter")]
        hostname: Option<String>,
        #[arg(long)]
        filter: Option<String>,
        #[arg(long)]
        population: String,
        /// Needed with --filter; without it, only say which hosts would change.
        #[arg(long)]
        confirm: bool,
    },
    SetExpectedRole {
        hostname: String,
        #[arg(long)]
        role: String,
        #[arg(long)]
        confirm: bool,
    },
    ClearExpectedRole {
        hostname: String,
        #[arg(long)]
        confirm: bool,
    },
    /// Keep a host in the inventory but out of targeting.
    Disable {
        hostname: String,
        #[arg(long)]
        reason: String,
    },
    Enable {
        hostname: String,
    },
    /// Everything known about one host.
    Show {
        hostname: String,
        #[arg(long)]
        json: bool,
    },
    /// A host's last observations and what changed between them.
    History {
        hostname: String,
        #[arg(long)]
        json: bool,
    },
    /// Probe hosts now.
    Refresh {
        #[arg(required = true)]
        hostnames: Vec<String>,
        /// Reachability, and a full probe only where the host's state changed.
        #[arg(long)]
        fast: bool,
        #[arg(long)]
        json: bool,
    },
    /// Pin the SSH host keys an OpenSSH known_hosts file gives for the
    /// inventory's hosts and their jump hosts (hashed names, `[host]:port`,
    /// `@cert-authority` and `@revoked` lines included).
    Pin {
        /// The known_hosts file.
        #[arg(long = "from-known-hosts", value_name = "FILE")]
        from_known_hosts: std::path::PathBuf,
        /// Without it: say what would be pinned, change nothing.
        #[arg(long)]
        confirm: bool,
    },
    /// Forget a host's pinned SSH key (after a reimage); the next probe pins the new one.
    Repin {
        hostname: String,
        /// Without it: say what would happen, change nothing.
        #[arg(long)]
        confirm: bool,
    },
    /// Quarantine the host's Taskcluster worker: it claims no work until then.
    /// Needs the prober to have Taskcluster credentials.
    Quarantine {
        hostname: String,
        /// When it ends: a duration from now (8h, 3d) or an RFC 3339 time
        /// (2026-12-05T14:00:00Z).
        #[arg(long, value_parser = parse_until)]
        until: time::OffsetDateTime,
        /// Why; kept in Taskcluster's quarantine note and the audit log.
        #[arg(long)]
        reason: String,
        /// Without it: say what would happen, change nothing.
        #[arg(long)]
        confirm: bool,
    },
    /// Lift the quarantine of the host's Taskcluster worker.
    Unquarantine {
        hostname: String,
        /// Without it: say what would happen, change nothing.
        #[arg(long)]
        confirm: bool,
    },
}

#[derive(Args)]
pub struct UpArgs {
    /// Port of the embedded nats-server (loopback only).
    #[arg(long, default_value_t = 4222)]
    pub nats_port: u16,
    #[command(flatten)]
    pub web: WebArgs,
    /// nats-server binary (default: the project's .tools/, then PATH).
    #[arg(long, env = "FLEETROLL_NATS_SERVER")]
    pub nats_server: Option<PathBuf>,
}

/// Where the web UI, HTTP API and `/metrics` are served, and to whom.
#[derive(Args, Clone)]
pub struct WebArgs {
    /// Address to listen on (port 0: any free one; the URL is also written
    /// to <data-dir>/web.url). On anything but loopback, every API request
    /// and `/metrics` needs a readonly token.
    #[arg(long, env = "FLEETROLL_WEB_LISTEN", default_value = "127.0.0.1:8080")]
    pub web_listen: SocketAddr,
    /// Ask every API request for a token on loopback too (a machine other
    /// people log in to).
    #[arg(long, env = "FLEETROLL_WEB_REQUIRE_TOKEN")]
    pub web_require_token: bool,
    /// A name browsers reach the server by, besides loopback's and the
    /// listen address (requests naming any other `Host` are refused, against
    /// DNS rebinding). Repeatable.
    #[arg(
        long = "web-host",
        value_name = "NAME",
        env = "FLEETROLL_WEB_HOSTS",
        value_delimiter = ','
    )]
    pub web_hosts: Vec<String>,
    /// Serve HTTPS with this certificate (PEM, the chain); needed off
    /// loopback (`fleetroll tls issue node NAME --san NAME` makes one).
    #[arg(long, env = "FLEETROLL_WEB_TLS_CERT", requires = "web_tls_key")]
    pub web_tls_cert: Option<PathBuf>,
    /// The private key of --web-tls-cert.
    #[arg(long, env = "FLEETROLL_WEB_TLS_KEY", requires = "web_tls_cert")]
    pub web_tls_key: Option<PathBuf>,
    /// Serve plain HTTP off loopback all the same: only behind a proxy that
    /// speaks HTTPS to browsers.
    #[arg(
        long,
        env = "FLEETROLL_WEB_PLAIN_HTTP",
        conflicts_with = "web_tls_cert"
    )]
    pub web_plain_http: bool,
}

#[derive(Args)]
pub struct PingArgs {
    /// Only this worker kind (default: all four).
    #[arg(long, value_parser = parse_kind)]
    pub worker: Option<WorkerKind>,
    /// Have the worker hold the command this long before answering.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub hold: Duration,
    /// How long to wait for the outcome.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub timeout: Duration,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum AuthCommand {
    /// Publish the data dir's verifying key and audit key on the mesh (for
    /// reference, and so that audit records verify), as `up` and `auth init`
    /// do when they can reach it.
    Publish,
    /// Make the account key `fleetroll authorizer` signs NATS users with
    /// (mode 0600); prints its public half for the servers' config.
    CalloutKey {
        #[arg(long)]
        out: PathBuf,
    },
    /// Create the signing key (under the data dir) and publish its public half.
    Init {
        /// Replace an existing key: every token issued with it stops working.
        #[arg(long)]
        force: bool,
    },
    /// Issue a token.
    Issue {
        #[arg(long)]
        actor: String,
        #[arg(long, value_parser = parse_role)]
        role: Role,
        #[arg(long, value_parser = parse_duration, default_value = "8h")]
        ttl: Duration,
        /// Write the token to this file (mode 0600) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Revoke one token (by id, or the token in a file) or every token of an actor.
    Revoke {
        #[arg(long, conflicts_with_all = ["actor", "token"])]
        jti: Option<String>,
        #[arg(long, conflicts_with = "token")]
        actor: Option<String>,
        /// A file holding the token to revoke.
        #[arg(long)]
        token: Option<PathBuf>,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Subcommand)]
pub enum TlsCommand {
    /// Make a CA: ca.pem (give it to every node and client) and ca-key.pem
    /// (keep it where certificates are issued). Never replaces one.
    Init {
        /// Where the PKI lives (default: <data-dir>/tls).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The CA's name, in its certificate.
        #[arg(long, default_value = "fleetroll")]
        name: String,
    },
    /// Issue a certificate signed by the CA: <name>.pem and <name>-key.pem.
    Issue {
        #[arg(value_enum)]
        kind: TlsKind,
        /// The certificate's name (a node's server name, a client's identity).
        name: String,
        /// A DNS name or IP address the node is reached by (repeatable; at
        /// least one for a node).
        #[arg(long = "san", value_name = "NAME_OR_IP")]
        sans: Vec<String>,
        /// Days the certificate is good for.
        #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
        days: u32,
        /// Where the PKI lives (default: <data-dir>/tls).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum TlsKind {
    /// A NATS server: its client port and cluster routes.
    Node,
    /// A NATS client presenting a certificate (mutual TLS).
    Client,
}

#[derive(Subcommand)]
pub enum WatchWhat {
    Rollout { id: String },
}

#[derive(Subcommand)]
pub enum RolloutCommand {
    /// Plan a rollout (nothing is applied until `start`); prints its id.
    Create {
        /// The target population, in the query language.
        #[arg(long)]
        target: String,
        /// Hosts in the first stage.
        #[arg(long, default_value_t = 1)]
        canary: usize,
        /// Suggested batch size after the canary, in percent of the targets.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u8).range(1..=100))]
        batch_pct: u8,
        /// The override file's contents, e.g. 'PUPPET_BRANCH=feature_xyz'.
        #[arg(long)]
        change: String,
        /// A health gate, name=value (repeatable); unnamed gates keep their safe defaults.
        #[arg(long)]
        gate: Vec<String>,
        /// A host to leave out (repeatable).
        #[arg(long)]
        skip: Vec<String>,
    },
    /// Resolve the targets and apply the canary stage.
    Start {
        id: String,
    },
    /// Apply the next batch (when the gates pass, or --force with --reason).
    Advance {
        id: String,
        #[arg(long)]
        batch_size: usize,
        #[arg(long, requires = "reason")]
        force: bool,
        #[arg(long)]
        reason: Option<String>,
    },
    Pause {
        id: String,
        #[arg(long)]
        reason: String,
    },
    Resume {
        id: String,
    },
    /// Try again the hosts whose write (or removal) failed, in the current
    /// stage: all of them, or those named with --host.
    Retry {
        id: String,
        /// A host to try again (repeatable); without it, every failed host.
        #[arg(long)]
        host: Vec<String>,
    },
    /// Stop the rollout for good; --remove-overrides removes what it applied.
    Rollback {
        id: String,
        #[arg(long)]
        remove_overrides: bool,
        /// Without it, only say what would happen.
        #[arg(long)]
        confirm: bool,
        #[arg(long)]
        reason: String,
    },
    /// After success and the merge: remove the override from every target host, for good.
    Finalize {
        id: String,
        /// Required: the whole target population at once.
        #[arg(long, required = true)]
        all: bool,
        /// Without it, only say what would happen.
        #[arg(long)]
        confirm: bool,
    },
    /// Emergency: pause every running rollout.
    Halt {
        /// Required: every running rollout (the only kind of halt).
        #[arg(long, required = true)]
        all: bool,
        #[arg(long)]
        reason: String,
    },
    /// Stages, hosts, results and gates.
    Status {
        id: String,
        #[arg(long)]
        json: bool,
        /// Show it again whenever it changes.
        #[arg(long, conflicts_with = "json")]
        watch: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum ConvergeCommand {
    /// Run the converge command on one host (no reboot).
    Host { hostname: String },
}

#[derive(Subcommand)]
pub enum RebootCommand {
    /// Reboot one host, then wait until it answers again.
    Host {
        hostname: String,
        /// Without it, only say what would happen.
        #[arg(long)]
        confirm: bool,
    },
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Audit records, oldest first (the newest --limit of those matching).
    List {
        #[arg(long)]
        host: Option<String>,
        #[arg(long)]
        rollout: Option<String>,
        #[arg(long)]
        actor: Option<String>,
        /// A time (2026-11-22T10:00:00Z) or how long ago (2h).
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Check every record's signature and link; exit 1 naming the first bad one.
    Verify {
        #[arg(long)]
        json: bool,
    },
    /// Print an override snapshot's contents as they were.
    Snapshot {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum InventoryCommand {
    /// Seeds: the hostnames the inventory starts from.
    #[command(subcommand)]
    Seed(SeedCommand),
    /// Probe every seed (`--seed all`) or the hosts named.
    Refresh {
        #[arg(long, value_parser = ["all"])]
        seed: Option<String>,
        hostnames: Vec<String>,
        /// Reachability, and a full probe only where a host's state changed.
        #[arg(long)]
        fast: bool,
        #[arg(long)]
        json: bool,
    },
    /// How many hosts drift, of each type, and how many are healthy.
    Drift {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum SeedCommand {
    Add {
        #[arg(required = true)]
        hostnames: Vec<String>,
    },
    Remove {
        #[arg(required = true)]
        hostnames: Vec<String>,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    /// Make the seeds exactly the file's hostnames (one per line, `#` comments).
    Sync {
        #[arg(long)]
        from_file: PathBuf,
    },
}

fn parse_kind(s: &str) -> Result<WorkerKind, String> {
    s.parse()
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

/// A duration from now, or an RFC 3339 time.
fn parse_until(s: &str) -> Result<time::OffsetDateTime, String> {
    if let Ok(d) = humantime::parse_duration(s) {
        let d = time::Duration::try_from(d).map_err(|e| format!("`{s}`: {e}"))?;
        return time::OffsetDateTime::now_utc()
            .checked_add(d)
            .ok_or_else(|| format!("`{s}` is too far away"));
    }
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).map_err(|_| {
        format!("`{s}` is neither a duration like 8h or 3d nor a time like 2026-12-05T14:00:00Z")
    })
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration like 30s, 5m or 8h: {e}"))
}
