//! SPEC 11, "memory of the embedded mesh at 10,000 hosts": the resident
//! memory of a `fleetroll up` process and, apart, of its nats-server child,
//! sampled while the mesh takes in N hosts and works on them: the lab's
//! hosts added as seeds and probed over SSH, synthetic hosts for the rest
//! recorded as the prober records a probe, the gatekeeper judging them
//! all, then queries, web pages and fast refreshes of the lab.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use fleetroll_bus::connect::Bus;
use fleetroll_bus::messages::NoParams;
use fleetroll_bus::messages::command::{Command, Verdict};
use fleetroll_bus::messages::host::DriftSummary;
use fleetroll_bus::query;
use fleetroll_bus::send;
use fleetroll_bus::subjects::queries;
use fleetroll_bus::topology;
use time::OffsetDateTime;

use crate::MemoryArgs;
use crate::figures::size;
use crate::inventory;
use crate::rss::{self, PhaseUse, Sampler};

const TARGET: u64 = 300 << 20;
const QUERY_WAIT: Duration = Duration::from_secs(60);

pub async fn run(args: MemoryArgs) -> anyhow::Result<()> {
    let nats_pid = rss::child_named(args.pid, "nats-server")
        .with_context(|| format!("no nats-server child of process {}", args.pid))?;
    let lab: Vec<String> = match &args.lab_hosts_file {
        Some(file) => std::fs::read_to_string(file)
            .with_context(|| format!("reading {}", file.display()))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect(),
        None => Vec::new(),
    };
    if lab.len() > args.hosts {
        bail!("{} lab hosts, more than --hosts {}", lab.len(), args.hosts);
    }
    let synthetic = args.hosts - lab.len();
    let crate::Mesh {
        credential,
        asker: bus,
        writer,
    } = args.mesh.open().await?;
    let token = credential.token.clone();
    let sampler = Sampler::start(vec![args.pid, nats_pid]);
    let mut phases: Vec<(String, Vec<PhaseUse>)> = Vec::new();

    tokio::time::sleep(Duration::from_secs(2)).await;
    phases.push(("mesh up, inventory empty".into(), sampler.phase()));

    if !lab.is_empty() {
        say!(
            "adding {} lab hosts as seeds; the mesh probes them",
            lab.len()
        );
        let start = Instant::now();
        command(
            &bus,
            &credential,
            Command::SeedAdd {
                hostnames: lab.clone(),
            },
        )
        .await?;
        let unprobed = wait_probed(&bus, &token, args.settle_timeout).await?;
        let failed = inventory::ask(&bus, &token, "NOT error:null", QUERY_WAIT)
            .await?
            .hosts;
        phases.push((
            format!(
                "{} lab hosts added as seeds and probed over SSH ({:.0} s, {} failed{})",
                lab.len(),
                start.elapsed().as_secs_f64(),
                failed,
                if unprobed > 0 {
                    format!(", {unprobed} never probed")
                } else {
                    String::new()
                }
            ),
            sampler.phase(),
        ));
    }

    if synthetic > 0 {
        let hosts = writer.kv(&topology::HOSTS).await?;
        let t0 = OffsetDateTime::now_utc();
        let seeded = inventory::seed(&hosts, synthetic, t0, 256).await?;
        let ingested = inventory::ingest(&writer, &hosts, synthetic, t0, 64).await?;
        phases.push((
            format!(
                "{synthetic} synthetic host records created ({:.1} s) and a full observation of each recorded ({:.1} s)",
                seeded.elapsed.as_secs_f64(),
                ingested.elapsed.as_secs_f64()
            ),
            sampler.phase(),
        ));
    }

    let start = Instant::now();
    inventory::judged(&bus, args.hosts, args.settle_timeout).await?;
    phases.push((
        format!(
            "the gatekeeper's drift verdict on all {} hosts ({:.1} s more)",
            args.hosts,
            start.elapsed().as_secs_f64()
        ),
        sampler.phase(),
    ));

    let work = work(&bus, &credential, &args, &lab).await?;
    phases.push((work, sampler.phase()));

    tokio::time::sleep(Duration::from_secs(10)).await;
    phases.push(("quiet, 10 s later".into(), sampler.phase()));

    // The kernel updates VmHWM lazily: a sample may have seen more.
    let highest = |process: usize, pid: u32| {
        let now = rss::resident(pid).unwrap_or_default();
        let sampled = phases.iter().map(|(_, uses)| uses[process].peak).max();
        rss::Resident {
            rss: now.rss,
            hwm: now.hwm.max(sampled.unwrap_or_default()),
        }
    };
    let (up, nats) = (highest(0, args.pid), highest(1, nats_pid));
    report(&args, lab.len(), synthetic, &phases, up, nats);
    Ok(())
}

/// Sends `command` as an operator; it must be done.
async fn command(
    bus: &Bus,
    credential: &fleetroll_bus::token::Credential,
    command: Command,
) -> anyhow::Result<()> {
    let outcome = send::send(bus, credential, command, QUERY_WAIT).await?;
    match outcome.verdict {
        Verdict::Done { .. } => Ok(()),
        other => bail!("{}: {other:?}", outcome.command),
    }
}

/// Waits until no host is left unprobed; says how many still are when the
/// wait ends.
async fn wait_probed(bus: &Bus, token: &str, limit: Duration) -> anyhow::Result<usize> {
    let start = Instant::now();
    loop {
        let unprobed = inventory::ask(bus, token, "probed_at:null", QUERY_WAIT)
            .await?
            .hosts;
        if unprobed == 0 || start.elapsed() > limit {
            return Ok(unprobed);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// For `--work-for`: the query service's filters and the drift summary,
/// the web UI's overview and host list pages, one after the other; and a
/// fast refresh of the lab's hosts every 10 s beside them. Says what was
/// done.
async fn work(
    bus: &Bus,
    credential: &fleetroll_bus::token::Credential,
    args: &MemoryArgs,
    lab: &[String],
) -> anyhow::Result<String> {
    let token = credential.token.as_str();
    let until = Instant::now() + args.work_for;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(QUERY_WAIT))
        .build()
        .into();
    let base = args.web_url.trim_end_matches('/').to_string();
    let pages = [
        "api/v1/overview",
        "api/v1/hosts",
        "api/v1/hosts?filter=sshable%3Afalse",
    ];
    let asking = async {
        let (mut queries, mut views) = (0, 0);
        while Instant::now() < until {
            for filter in inventory::FILTERS {
                inventory::ask(bus, token, filter, QUERY_WAIT).await?;
                queries += 1;
            }
            let _: DriftSummary =
                query::request(bus, token, queries::DRIFT_SUMMARY, &NoParams {}, QUERY_WAIT)
                    .await?;
            queries += 1;
            for page in pages {
                let (agent, url) = (agent.clone(), format!("{base}/{page}"));
                tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                    agent
                        .get(&url)
                        .call()
                        .with_context(|| format!("GET {url}"))?
                        .body_mut()
                        .read_to_string()
                        .with_context(|| format!("GET {url}"))?;
                    Ok(())
                })
                .await??;
                views += 1;
            }
        }
        anyhow::Ok((queries, views))
    };
    let refreshing = async {
        let mut refreshes = 0;
        while !lab.is_empty() && Instant::now() < until {
            let next = Instant::now() + Duration::from_secs(10);
            let fast = Command::HostRefresh {
                hostnames: lab.to_vec(),
                all: false,
                fast: true,
            };
            command(bus, credential, fast).await?;
            refreshes += 1;
            tokio::time::sleep_until(next.into()).await;
        }
        anyhow::Ok(refreshes)
    };
    let ((queries, views), refreshes) = tokio::try_join!(asking, refreshing)?;
    Ok(format!(
        "working for {}: {queries} queries (`hosts.list` filters, `drift.summary`), {views} web API pages (overview, host lists), fast refreshes of the lab hosts: {refreshes}",
        humantime::format_duration(args.work_for)
    ))
}

fn report(
    args: &MemoryArgs,
    lab: usize,
    synthetic: usize,
    phases: &[(String, Vec<PhaseUse>)],
    up: rss::Resident,
    nats: rss::Resident,
) {
    println!(
        "| phase | `fleetroll up` resident at its end | `fleetroll up` peak | nats-server resident at its end | nats-server peak |"
    );
    println!("|---|---|---|---|---|");
    for (phase, uses) in phases {
        println!(
            "| {phase} | {} | {} | {} | {} |",
            size(uses[0].end.rss as usize),
            size(uses[0].peak as usize),
            size(uses[1].end.rss as usize),
            size(uses[1].peak as usize),
        );
    }
    println!();
    println!(
        "summary: memory: {} hosts ({lab} lab hosts probed over SSH, {synthetic} synthetic); fleetroll up resident {} now, {} at its highest (VmHWM or the highest sample); nats-server {} now, {} at its highest; target fleetroll up < {} MiB: {}",
        args.hosts,
        size(up.rss as usize),
        size(up.hwm as usize),
        size(nats.rss as usize),
        size(nats.hwm as usize),
        TARGET >> 20,
        if up.hwm < TARGET { "met" } else { "NOT met" }
    );
}
