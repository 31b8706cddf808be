//! `fleetroll-bench`: benchmark clients for `make bench` (SPEC 11). They
//! talk to a running mesh the way its own components do; no test uses them.
//!
//! Results go to stdout as Markdown table rows (lines starting with `|`)
//! and one `summary:` line; progress goes to stderr.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use fleetroll_bus::WorkerKind;
use fleetroll_bus::connect::{Bus, ConnectOptions, Credentials};
use fleetroll_bus::token::Credential;

/// Progress on stderr.
macro_rules! say {
    ($($arg:tt)*) => { eprintln!("fleetroll-bench: {}", format_args!($($arg)*)) };
}

mod failover;
mod figures;
mod inventory;
mod memory;
mod ops;
mod own_mesh;
mod rss;
mod synth;

#[derive(Parser)]
#[command(
    name = "fleetroll-bench",
    version,
    about = "Benchmark clients for fleetroll (`make bench`)"
)]
struct Cli {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// The inventory at N hosts: seed N host records, ingest a full
    /// observation of each through the prober's `record`, then measure the
    /// latency of `hosts.list` queries.
    Inventory(InventoryArgs),
    /// Time for the mesh to serve again after a worker is killed: per
    /// worker kind, one of two replicas SIGKILLed while busy, and the only
    /// replica SIGKILLed and started again. Runs its own mesh (a bare
    /// nats-server and `fleetroll worker` processes).
    Failover(FailoverArgs),
    /// Resident memory of `fleetroll up` and its nats-server while the mesh
    /// holds N hosts and works on them.
    Memory(MemoryArgs),
}

#[derive(Args)]
pub struct InventoryArgs {
    #[command(flatten)]
    pub mesh: MeshArgs,
    /// Hosts in the inventory.
    #[arg(long, default_value_t = 100_000)]
    pub hosts: usize,
    /// Queries timed, rotating over the filters.
    #[arg(long, default_value_t = 300)]
    pub queries: usize,
    /// Host records created at once while seeding.
    #[arg(long, default_value_t = 256)]
    pub seed_in_flight: usize,
    /// Observations recorded at once while ingesting.
    #[arg(long, default_value_t = 64)]
    pub ingest_in_flight: usize,
    /// How long one query may take before it counts as failed.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub query_timeout: Duration,
    /// How long the query service may take to show the ingested data.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub settle_timeout: Duration,
    /// Stop timing queries after this long, even if fewer than `--queries`
    /// ran (a slow query service would otherwise take hours).
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    pub query_budget: Duration,
}

#[derive(Args)]
pub struct FailoverArgs {
    /// A data dir of its own for the benchmark's mesh (server, keys, worker
    /// logs); a `fleetroll.toml` there reaches the lab (`[ssh]`).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Lab hosts the prober refreshes, one hostname a line.
    #[arg(long)]
    pub hosts_file: PathBuf,
    /// The `fleetroll` binary the workers run (default: the one beside this
    /// binary).
    #[arg(long)]
    pub fleetroll: Option<PathBuf>,
    /// Synthetic hosts in the inventory besides the lab's: what a restarted
    /// replica replays before it serves.
    #[arg(long, default_value_t = 10_000)]
    pub inventory: usize,
    /// Kills per worker kind and case.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// How long the operations go on before a kill, at the least: a
    /// replica just started has settled by then (replayed the buckets).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub warm: Duration,
    /// Operations kept going against the worker kind while it is killed.
    #[arg(long, default_value_t = 4)]
    pub in_flight: usize,
    /// Only these worker kinds (default: all four).
    #[arg(long, value_delimiter = ',')]
    pub kinds: Vec<WorkerKind>,
    /// A run that has not recovered after this long counts as failed.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub give_up: Duration,
}

#[derive(Args)]
pub struct MemoryArgs {
    /// The `fleetroll up` process measured (its nats-server child too).
    #[arg(long)]
    pub pid: u32,
    #[command(flatten)]
    pub mesh: MeshArgs,
    /// The web UI of that `fleetroll up` (its `web.url`).
    #[arg(long)]
    pub web_url: String,
    /// Hosts in the inventory: the lab's, and synthetic ones for the rest.
    #[arg(long, default_value_t = 10_000)]
    pub hosts: usize,
    /// Real lab hosts, one hostname a line; probed over SSH by the mesh.
    #[arg(long)]
    pub lab_hosts_file: Option<PathBuf>,
    /// How long the queries and page views go on.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub work_for: Duration,
    /// How long probing the lab or judging every host may take.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub settle_timeout: Duration,
}

/// A running mesh, as the inventory and memory benchmarks reach it: they
/// write host records as the prober does and ask as an operator or bot.
#[derive(Args)]
pub struct MeshArgs {
    /// The mesh's NATS (loopback; its buckets must exist: `fleetroll up`).
    #[arg(long, env = "FLEETROLL_NATS_URL")]
    pub nats_url: String,
    /// The token commands and queries are sent with.
    #[arg(long)]
    pub token_file: PathBuf,
    /// The NATS user commands and queries go as (`fleetroll up` keeps one
    /// per role in <data-dir>/credentials/; none: connect without).
    #[arg(long, env = "FLEETROLL_NATS_CREDENTIALS")]
    pub nats_credentials: Option<PathBuf>,
    /// The NATS user host records are written as: the workers'.
    #[arg(long)]
    pub worker_credentials: Option<PathBuf>,
}

/// What [`MeshArgs`] open: the token, a connection to ask on and one to
/// write host records on.
pub struct Mesh {
    pub credential: Credential,
    pub asker: Bus,
    pub writer: Bus,
}

impl MeshArgs {
    pub async fn open(&self) -> anyhow::Result<Mesh> {
        Ok(Mesh {
            credential: credential(&self.token_file)?,
            asker: self
                .connect("fleetroll-bench", &self.nats_credentials)
                .await?,
            writer: self
                .connect("fleetroll-bench-writer", &self.worker_credentials)
                .await?,
        })
    }

    async fn connect(&self, name: &str, file: &Option<PathBuf>) -> anyhow::Result<Bus> {
        let credentials = file.as_deref().map(Credentials::load).transpose()?;
        let options = ConnectOptions::new(&self.nats_url, name).credentials(credentials);
        Ok(Bus::connect(options).await?)
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Bench::Inventory(args) => runtime.block_on(inventory::run(args)),
        Bench::Failover(args) => runtime.block_on(failover::run(args)),
        Bench::Memory(args) => runtime.block_on(memory::run(args)),
    }
}

/// The token in `file` and the key it is bound to, beside it in
/// `<file>.key` (as `fleetroll auth issue --out` writes them).
pub fn credential(file: &std::path::Path) -> anyhow::Result<Credential> {
    Ok(fleetroll_bus::token::TokenSource::File(file.to_path_buf()).credential()?)
}
