//! `fleetroll-bench`: benchmark clients for `make bench` (SPEC 11). They
//! talk to a running mesh the way its own components do; no test uses them.
//!
//! Results go to stdout as Markdown table rows (lines starting with `|`)
//! and one `summary:` line; progress goes to stderr.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

mod inventory;
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
}

#[derive(Args)]
pub struct InventoryArgs {
    /// The mesh's NATS (loopback; its buckets must exist: `fleetroll up`).
    #[arg(long, env = "FLEETROLL_NATS_URL")]
    pub nats_url: String,
    /// A token any reader role may hold, for the query service.
    #[arg(long)]
    pub token_file: PathBuf,
    /// The NATS user the queries are asked as (`fleetroll up` keeps one
    /// per role in <data-dir>/credentials/; none: connect without).
    #[arg(long, env = "FLEETROLL_NATS_CREDENTIALS")]
    pub nats_credentials: Option<PathBuf>,
    /// The NATS user the inventory is written as: the workers'.
    #[arg(long)]
    pub worker_credentials: Option<PathBuf>,
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Bench::Inventory(args) => runtime.block_on(inventory::run(args)),
    }
}
