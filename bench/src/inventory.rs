//! SPEC 11, "query latency and observation ingest with 100,000 hosts in the
//! inventory": seed N host records, record a full observation of each the
//! way the prober does (`fleetroll_prober::fleet::record`), then time
//! `hosts.list` queries with selective filters through the query service.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use async_nats::jetstream::kv;
use fleetroll_bus::codec;
use fleetroll_bus::connect::Bus;
use fleetroll_bus::filter::Query;
use fleetroll_bus::messages::host::{HostList, HostQuery, Observation};
use fleetroll_bus::query::{self, QueryFailure};
use fleetroll_bus::subjects::queries;
use fleetroll_bus::topology;
use futures::{StreamExt, TryStreamExt};
use time::OffsetDateTime;

use crate::InventoryArgs;
use crate::figures::{ms, percentile, size};
use crate::synth;

/// The filters timed, in turn. Each is selective: at 100,000 hosts they
/// match from ten to about two thousand hosts, a few MiB of answer at most
/// (an answer of the whole inventory measures the wire, not the query).
pub const FILTERS: &[&str] = &[
    "role:gecko_t_linux_talos AND override_present:true",
    "sshable:false",
    "hostname:bench-00042*",
    "last_seen>20h AND role:gecko_t_osx_1015",
    "(override_present:true OR sshable:false) AND role:gecko_t_linux_2404_talos",
    "expected_role:null AND role:gecko_t_linux_talos AND applied:false",
    "puppet_success:false AND os:Darwin AND NOT role:gecko_t_osx_1015",
];

pub async fn run(args: InventoryArgs) -> anyhow::Result<()> {
    if args.hosts == 0 || args.hosts > 999_999 {
        bail!("--hosts must be 1 to 999999");
    }
    // The inventory is written as the prober writes it (the `worker` NATS
    // user) and read as a bot reads it (`--nats-credentials`).
    let crate::Mesh {
        credential,
        asker: bus,
        writer,
    } = args.mesh.open().await?;
    let token = credential.token;
    let hosts = writer.kv(&topology::HOSTS).await?;
    let n = args.hosts;
    // Every observation is "as of" this instant, so the expected answers
    // are known here (ages are whole hours and a half: `last_seen>20h`
    // keeps its answer for half an hour).
    let t0 = OffsetDateTime::now_utc();

    let seed = seed(&hosts, n, t0, args.seed_in_flight).await?;
    let ingest = ingest(&writer, &hosts, n, t0, args.ingest_in_flight).await?;

    // What each filter should answer, from the same synthetic fleet.
    let fleet: Vec<Observation> = (1..=n)
        .map(|i| synth::observation(i, Observation::discovered(&synth::hostname(i), t0), t0))
        .collect();
    let filters: Vec<(&str, usize)> = FILTERS
        .iter()
        .map(|f| {
            let q = Query::parse(f).expect("the benchmark's filters parse");
            let now = OffsetDateTime::now_utc();
            let expected = fleet
                .iter()
                .filter(|o| q.matches_at(&|name| synth::field(o, name), now))
                .count();
            (*f, expected)
        })
        .collect();
    drop(fleet);

    let settle = settle(&bus, &token, &filters, &args).await?;
    judged(&bus, n, args.settle_timeout).await?;
    let timed = time_queries(&bus, &token, &filters, &args).await?;
    report(n, &seed, &ingest, &settle, &filters, &timed, &args);
    Ok(())
}

pub struct Phase {
    pub records: usize,
    pub elapsed: Duration,
    in_flight: usize,
    note: String,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Progress every 10% on stderr.
fn progress(what: &'static str, n: usize, start: Instant) -> impl Fn() + Send + Sync {
    let done = AtomicUsize::new(0);
    let step = (n / 10).max(1);
    move || {
        let d = done.fetch_add(1, Ordering::Relaxed) + 1;
        if d.is_multiple_of(step) || d == n {
            say!(
                "{what}: {d}/{n} ({:.0}/s)",
                d as f64 / start.elapsed().as_secs_f64()
            );
        }
    }
}

/// N discovered hosts, created in the hosts bucket as a seed sync would.
pub async fn seed(
    hosts: &kv::Store,
    n: usize,
    t0: OffsetDateTime,
    in_flight: usize,
) -> anyhow::Result<Phase> {
    say!("seeding {n} host records ({in_flight} in flight)");
    let start = Instant::now();
    let tick = progress("seed", n, start);
    let existing = AtomicUsize::new(0);
    futures::stream::iter(1..=n)
        .map(|i| {
            let (tick, existing) = (&tick, &existing);
            async move {
                let name = synth::hostname(i);
                let record = codec::to_cbor(&Observation::discovered(&name, t0));
                match hosts.create(&name, record.into()).await {
                    Ok(_) => {}
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                        existing.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => return Err(anyhow::anyhow!("creating {name}: {e}")),
                }
                tick();
                Ok(())
            }
        })
        .buffer_unordered(in_flight.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    let existing = existing.into_inner();
    Ok(Phase {
        records: n,
        elapsed: start.elapsed(),
        in_flight,
        note: if existing > 0 {
            format!("{existing} already there")
        } else {
            String::new()
        },
    })
}

/// A full observation of every host, recorded the way the prober records a
/// probe: read the entry, then `fleet::record` (a compare-and-swap on the
/// record, then the host's history).
pub async fn ingest(
    bus: &Bus,
    hosts: &kv::Store,
    n: usize,
    t0: OffsetDateTime,
    in_flight: usize,
) -> anyhow::Result<Phase> {
    say!("ingesting {n} observations through fleet::record ({in_flight} in flight)");
    let start = Instant::now();
    let tick = progress("ingest", n, start);
    let gone = Arc::new(AtomicUsize::new(0));
    futures::stream::iter(1..=n)
        .map(|i| {
            let (tick, gone) = (&tick, gone.clone());
            async move {
                let name = synth::hostname(i);
                let entry = hosts
                    .entry(&name)
                    .await
                    .with_context(|| format!("reading {name}"))?
                    .filter(|e| e.operation == kv::Operation::Put)
                    .with_context(|| format!("{name} is not in the inventory"))?;
                let recorded = fleetroll_prober::fleet::record(bus, hosts, entry, |previous| {
                    synth::observation(i, previous, t0)
                })
                .await
                .with_context(|| format!("recording {name}"))?;
                if recorded.is_none() {
                    gone.fetch_add(1, Ordering::Relaxed);
                }
                tick();
                anyhow::Ok(())
            }
        })
        .buffer_unordered(in_flight.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    let gone = gone.load(Ordering::Relaxed);
    if gone > 0 {
        bail!("{gone} host records vanished during the ingest");
    }
    Ok(Phase {
        records: n,
        elapsed: start.elapsed(),
        in_flight,
        note: String::new(),
    })
}

/// Every host matching `filter`: the first page, and the next ones when
/// the answer was too big for one (`next`).
pub struct Answer {
    pub hosts: usize,
    pages: usize,
    /// Encoded size of the pages together (CBOR).
    bytes: usize,
}

pub async fn ask(
    bus: &Bus,
    token: &str,
    filter: &str,
    wait: Duration,
) -> Result<Answer, QueryFailure> {
    let mut answer = Answer {
        hosts: 0,
        pages: 0,
        bytes: 0,
    };
    let mut after = None;
    loop {
        let page: HostList = query::request::<HostQuery, HostList>(
            bus,
            token,
            queries::HOSTS_LIST,
            &HostQuery {
                filter: filter.into(),
                after,
                ..Default::default()
            },
            wait,
        )
        .await?;
        answer.hosts += page.hosts.len();
        answer.pages += 1;
        answer.bytes += codec::to_cbor(&page).len();
        match page.next {
            Some(next) if !page.hosts.is_empty() => after = Some(next),
            _ => return Ok(answer),
        }
    }
}

struct Settle {
    elapsed: Duration,
    rounds: usize,
    /// Filters still answering another count when the wait ended.
    off: Vec<(String, usize, usize)>,
}

/// Waits until the query service shows the ingested data: every filter
/// answers what the synthetic fleet says it should.
async fn settle(
    bus: &Bus,
    token: &str,
    filters: &[(&str, usize)],
    args: &InventoryArgs,
) -> anyhow::Result<Settle> {
    say!("waiting for the query service to show the ingested data");
    let start = Instant::now();
    let mut rounds = 0;
    loop {
        rounds += 1;
        let mut off = Vec::new();
        for (filter, expected) in filters {
            match ask(bus, token, filter, args.query_timeout).await {
                Ok(answer) if answer.hosts == *expected => {}
                Ok(answer) => off.push((filter.to_string(), answer.hosts, *expected)),
                Err(e @ (QueryFailure::Denied(_) | QueryFailure::Invalid(_))) => {
                    bail!("`{filter}`: {e}")
                }
                Err(e) => {
                    say!("`{filter}`: {e}");
                    off.push((filter.to_string(), usize::MAX, *expected));
                }
            }
        }
        if off.is_empty() {
            say!(
                "the query service shows the ingested data ({:.1} s, {rounds} round(s))",
                start.elapsed().as_secs_f64()
            );
            return Ok(Settle {
                elapsed: start.elapsed(),
                rounds,
                off,
            });
        }
        if start.elapsed() > args.settle_timeout {
            for (filter, got, expected) in &off {
                say!("`{filter}` still answers {got} hosts, expected {expected}");
            }
            return Ok(Settle {
                elapsed: start.elapsed(),
                rounds,
                off,
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until the gatekeeper has judged every host (a drift entry each), so
/// the queries are timed in the steady state, not while 100,000 drift
/// verdicts are being written and indexed.
pub async fn judged(bus: &Bus, n: usize, settle_timeout: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let judged = bus.bucket_state(&topology::DRIFT).await?.messages;
        if judged >= n as u64 {
            say!(
                "the gatekeeper judged every host ({:.1} s after the data showed)",
                start.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if start.elapsed() > settle_timeout {
            bail!("the gatekeeper judged only {judged} of {n} hosts");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

struct Timed {
    /// Per filter: latencies and the last answer.
    per_filter: Vec<(Vec<Duration>, Option<Answer>)>,
    failures: Vec<String>,
    budget_hit: bool,
}

/// `--queries` requests, one at a time, rotating over the filters.
async fn time_queries(
    bus: &Bus,
    token: &str,
    filters: &[(&str, usize)],
    args: &InventoryArgs,
) -> anyhow::Result<Timed> {
    say!(
        "timing {} queries over {} filters",
        args.queries,
        filters.len()
    );
    let mut timed = Timed {
        per_filter: filters.iter().map(|_| (Vec::new(), None)).collect(),
        failures: Vec::new(),
        budget_hit: false,
    };
    let start = Instant::now();
    for k in 0..args.queries {
        if start.elapsed() > args.query_budget {
            say!(
                "query budget of {} spent after {k} queries",
                humantime::format_duration(args.query_budget)
            );
            timed.budget_hit = true;
            break;
        }
        let which = k % filters.len();
        let sent = Instant::now();
        let answer = ask(bus, token, filters[which].0, args.query_timeout).await;
        let latency = sent.elapsed();
        match answer {
            Ok(answer) => {
                let slot = &mut timed.per_filter[which];
                slot.0.push(latency);
                slot.1 = Some(answer);
            }
            Err(e) => timed.failures.push(format!("`{}`: {e}", filters[which].0)),
        }
        if (k + 1).is_multiple_of(50) {
            say!("queries: {}/{}", k + 1, args.queries);
        }
    }
    Ok(timed)
}

const TARGET_P99: Duration = Duration::from_millis(100);

fn report(
    n: usize,
    seed: &Phase,
    ingest: &Phase,
    settle: &Settle,
    filters: &[(&str, usize)],
    timed: &Timed,
    args: &InventoryArgs,
) {
    println!("| step | records | in flight | wall time | rate |");
    println!("|---|---|---|---|---|");
    for (what, phase, unit) in [
        ("seed: `kv create` of discovered hosts", seed, "records/s"),
        (
            "ingest: full observations via `fleet::record` (CAS + history)",
            ingest,
            "observations/s",
        ),
    ] {
        println!(
            "| {what}{} | {} | {} | {:.1} s | {:.0} {unit} |",
            if phase.note.is_empty() {
                String::new()
            } else {
                format!(" ({})", phase.note)
            },
            phase.records,
            phase.in_flight,
            phase.elapsed.as_secs_f64(),
            phase.rate(),
        );
    }
    println!();
    println!("| `hosts.list` filter | matches | answer | queries | p50 | p99 | max |");
    println!("|---|---|---|---|---|---|---|");
    let mut all = Vec::new();
    for ((filter, expected), (latencies, answer)) in filters.iter().zip(&timed.per_filter) {
        let mut sorted = latencies.clone();
        sorted.sort();
        let (matches, bytes) = match answer {
            None => ("-".to_string(), "-".to_string()),
            Some(a) => (
                if a.hosts == *expected {
                    a.hosts.to_string()
                } else {
                    format!("{} (expected {expected})", a.hosts)
                },
                if a.pages > 1 {
                    format!("{} in {} pages", size(a.bytes), a.pages)
                } else {
                    size(a.bytes)
                },
            ),
        };
        println!(
            "| `{}` | {matches} | {bytes} | {} | {} | {} | {} |",
            filter.replace('|', "\\|"),
            sorted.len(),
            ms(percentile(&sorted, 0.5)),
            ms(percentile(&sorted, 0.99)),
            ms(sorted.last().copied().unwrap_or_default()),
        );
        all.extend(sorted);
    }
    all.sort();
    let (p50, p99, max) = (
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        all.last().copied().unwrap_or_default(),
    );
    println!(
        "| **all filters** | | | {} | **{}** | **{}** | {} |",
        all.len(),
        ms(p50),
        ms(p99),
        ms(max)
    );
    println!();
    let mut notes = Vec::new();
    if !timed.failures.is_empty() {
        notes.push(format!(
            "{} queries failed (first: {})",
            timed.failures.len(),
            timed.failures[0]
        ));
    }
    if timed.budget_hit {
        notes.push(format!(
            "{} of {} queries within the {} budget",
            all.len(),
            args.queries,
            humantime::format_duration(args.query_budget)
        ));
    }
    if !settle.off.is_empty() {
        notes.push(format!(
            "{} filter(s) never answered the expected count",
            settle.off.len()
        ));
    }
    println!(
        "summary: {n} hosts; seed {:.0} records/s; ingest {:.0} observations/s ({:.1} s); \
         visible to queries after {:.1} s ({} round(s)); query p50 {}, p99 {}, max {} \
         over {} queries; target p99 < {}: {}{}",
        seed.rate(),
        ingest.rate(),
        ingest.elapsed.as_secs_f64(),
        settle.elapsed.as_secs_f64(),
        settle.rounds,
        ms(p50),
        ms(p99),
        ms(max),
        all.len(),
        ms(TARGET_P99),
        if !all.is_empty() && p99 < TARGET_P99 && timed.failures.is_empty() {
            "met"
        } else {
            "NOT met"
        },
        if notes.is_empty() {
            String::new()
        } else {
            format!("; {}", notes.join("; "))
        }
    );
}
