//! SPEC 11, "time for the mesh to serve commands again after a worker is
//! killed". For each worker kind, its operation (`ops`) kept going back to
//! back in a few slots while:
//!
//! - two replicas run, and one of them is SIGKILLed (busy: the slots keep
//!   both at work);
//! - the only replica is SIGKILLed, and another started at once.
//!
//! Timed from the kill: an operation sent at the kill, until answered; and
//! the operations in flight at the kill, until every one is answered. The
//! mesh serves again when both are. Target: under 2 s.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use fleetroll_bus::WorkerKind;
use fleetroll_bus::messages::command::{Command, Reply, Verdict};
use fleetroll_bus::send;
use fleetroll_bus::topology;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::FailoverArgs;
use crate::figures::{ms, percentile};
use crate::inventory;
use crate::ops::Ops;
use crate::own_mesh::{OwnMesh, Replica};

const TARGET: Duration = Duration::from_secs(2);
/// How long a replica may take to show up live.
const START_LIMIT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, PartialEq)]
enum Case {
    /// One of two replicas killed.
    OneOfTwo,
    /// The only replica killed, another started.
    Restarted,
}

impl Case {
    fn describe(self) -> &'static str {
        match self {
            Case::OneOfTwo => "1 of 2 replicas killed",
            Case::Restarted => "only replica killed, new one started",
        }
    }

    fn replicas(self) -> usize {
        match self {
            Case::OneOfTwo => 2,
            Case::Restarted => 1,
        }
    }
}

/// One kill, timed.
struct Kill {
    /// Latencies of the operations answered before the kill.
    before: Vec<Duration>,
    /// The operation sent at the kill, answered this long after it (None:
    /// not within `--give-up`).
    sent_at_kill: Option<Duration>,
    /// The operations in flight at the kill, the last answered this long
    /// after it (None: not all within `--give-up`).
    in_flight: Option<Duration>,
    in_flight_count: usize,
    /// Commands taken by the killed replica and redelivered.
    redelivered: usize,
    failures: Vec<String>,
}

impl Kill {
    fn served_again(&self) -> Option<Duration> {
        Some(self.sent_at_kill?.max(self.in_flight?))
    }
}

/// An operation's end, as a slot reports it.
struct Answered {
    slot: usize,
    sent: Instant,
    done: Instant,
    redelivered: bool,
    error: Option<String>,
}

pub async fn run(args: FailoverArgs) -> anyhow::Result<()> {
    let fleetroll = match &args.fleetroll {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("fleetroll"),
    };
    let lab_hosts: Vec<String> = std::fs::read_to_string(&args.hosts_file)
        .with_context(|| format!("reading {}", args.hosts_file.display()))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    let kinds = if args.kinds.is_empty() {
        WorkerKind::ALL.to_vec()
    } else {
        args.kinds.clone()
    };
    if args.runs == 0 || args.in_flight == 0 {
        bail!("--runs and --in-flight must be at least 1");
    }

    let mut mesh = OwnMesh::start(&args.data_dir, &fleetroll).await?;
    // A replica of every kind throughout, as a mesh runs; the kind under
    // test gets more or fewer.
    let mut pools = Vec::new();
    for kind in WorkerKind::ALL {
        let replica = mesh.spawn(kind)?;
        mesh.wait_live(kind, std::slice::from_ref(&replica), START_LIMIT)
            .await?;
        pools.push((kind, vec![replica]));
    }
    if !lab_hosts.is_empty() {
        onboard(&mesh, &lab_hosts, args.give_up).await?;
    }
    if args.inventory > 0 {
        let hosts = mesh.worker.kv(&topology::HOSTS).await?;
        let t0 = OffsetDateTime::now_utc();
        inventory::seed(&hosts, args.inventory, t0, 256).await?;
        inventory::ingest(&mesh.worker, &hosts, args.inventory, t0, 64).await?;
        inventory::judged(&mesh.relops, args.inventory, START_LIMIT).await?;
    }

    let mut results = Vec::new();
    for kind in kinds {
        let ops = Arc::new(Ops::new(kind, &mesh, &lab_hosts, args.in_flight + 1).await?);
        let pool = &mut pools
            .iter_mut()
            .find(|(k, _)| *k == kind)
            .expect("a pool per kind")
            .1;
        for case in [Case::OneOfTwo, Case::Restarted] {
            let mut kills = Vec::new();
            for run in 0..args.runs {
                let kill = kill_once(&mut mesh, &ops, pool, case, run, &args).await?;
                say!(
                    "{kind}, {}: run {}: the operation sent at the kill answered after {}, the {} in flight after {} ({} redelivered)",
                    case.describe(),
                    run + 1,
                    kill.sent_at_kill.map_or("-".into(), ms),
                    kill.in_flight_count,
                    kill.in_flight.map_or("-".into(), ms),
                    kill.redelivered,
                );
                for failure in &kill.failures {
                    say!("  failed: {failure}");
                }
                kills.push(kill);
            }
            results.push((kind, ops.describe(), case, kills));
        }
        // Back to one replica, stopped cleanly: nothing left for others.
        while pool.len() > 1 {
            mesh.stop_replica(pool.remove(0));
        }
    }
    drop(pools);
    mesh.stop().await;
    report(&results, lab_hosts.len(), &args);
    Ok(())
}

/// The lab's hosts as seeds, each probed once (host keys pinned), as an
/// operator onboards them.
async fn onboard(mesh: &OwnMesh, hosts: &[String], wait: Duration) -> anyhow::Result<()> {
    say!("onboarding {} lab hosts", hosts.len());
    for command in [
        Command::SeedAdd {
            hostnames: hosts.to_vec(),
        },
        Command::HostRefresh {
            hostnames: hosts.to_vec(),
            all: false,
            fast: false,
        },
    ] {
        let outcome = send::send(&mesh.relops, &mesh.credential, command, wait).await?;
        match outcome.verdict {
            Verdict::Done {
                reply: Reply::Refreshed { hosts },
            } if hosts.iter().any(|h| !h.ok) => bail!("lab hosts not probed: {hosts:?}"),
            Verdict::Done { .. } => {}
            other => bail!("{}: {other:?}", outcome.command),
        }
    }
    Ok(())
}

async fn kill_once(
    mesh: &mut OwnMesh,
    ops: &Arc<Ops>,
    pool: &mut Vec<Replica>,
    case: Case,
    run: usize,
    args: &FailoverArgs,
) -> anyhow::Result<Kill> {
    let kind = ops.kind;
    while pool.len() > case.replicas() {
        mesh.stop_replica(pool.remove(0));
    }
    while pool.len() < case.replicas() {
        pool.push(mesh.spawn(kind)?);
    }
    mesh.wait_live(kind, pool, START_LIMIT).await?;

    let (tx, mut rx) = mpsc::unbounded_channel();
    let stop = Arc::new(AtomicBool::new(false));
    let seq = Arc::new(AtomicUsize::new(0));
    let slots: Vec<_> = (0..args.in_flight)
        .map(|slot| {
            let (ops, tx, stop, seq) = (ops.clone(), tx.clone(), stop.clone(), seq.clone());
            let give_up = args.give_up;
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let n = seq.fetch_add(1, Ordering::Relaxed);
                    let sent = Instant::now();
                    let result = ops.run(slot, n, sent + give_up).await;
                    let answered = Answered {
                        slot,
                        sent,
                        done: Instant::now(),
                        redelivered: result.as_ref().is_ok_and(|s| s.redelivered),
                        error: result.err().map(|e| format!("{e:#}")),
                    };
                    if tx.send(answered).is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    drop(tx);

    // Busy: every slot answered twice and `--warm` over, then a pause that
    // moves the kill around within an operation from run to run.
    let warmed = Instant::now() + args.warm;
    let mut log = Vec::new();
    let warm = tokio::time::timeout(args.give_up, async {
        while log.len() < 2 * args.in_flight {
            match rx.recv().await {
                Some(answered) => log.push(answered),
                None => break,
            }
        }
    });
    if warm.await.is_err() {
        bail!(
            "{kind}: the operations did not get going within {:?}",
            args.give_up
        );
    }
    tokio::time::sleep_until(warmed.into()).await;
    tokio::time::sleep(Duration::from_millis((run as u64 * 211) % 500)).await;

    let killed_at = mesh.kill(pool.remove(0));
    if case == Case::Restarted {
        pool.push(mesh.spawn(kind)?);
    }
    let deadline = killed_at + args.give_up;
    let at_kill = {
        let (ops, n) = (ops.clone(), seq.fetch_add(1, Ordering::Relaxed));
        let slot = args.in_flight;
        tokio::spawn(async move {
            let result = ops.run(slot, n, deadline).await;
            (Instant::now(), result)
        })
    };

    // Every slot settles with its first answer after the kill: an
    // operation in flight at the kill, or one sent after it.
    let mut settled = vec![false; args.in_flight];
    while settled.iter().any(|s| !s) {
        match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
            Ok(Some(answered)) => {
                if answered.done >= killed_at {
                    settled[answered.slot] = true;
                }
                log.push(answered);
            }
            Ok(None) | Err(_) => break,
        }
    }
    let all_settled = settled.iter().all(|s| *s);
    let (sent_at_kill, at_kill_error) =
        match tokio::time::timeout_at(deadline.into(), at_kill).await {
            Ok(Ok((done, Ok(_)))) => (Some(done - killed_at), None),
            Ok(Ok((_, Err(e)))) => (None, Some(format!("{e:#}"))),
            Ok(Err(e)) => (None, Some(e.to_string())),
            Err(_) => (
                None,
                Some(format!("not answered within {:?}", args.give_up)),
            ),
        };
    stop.store(true, Ordering::Relaxed);
    for slot in slots {
        let _ = slot.await;
    }
    while let Ok(answered) = rx.try_recv() {
        log.push(answered);
    }

    let mut before: Vec<Duration> = log
        .iter()
        .filter(|a| a.done < killed_at && a.error.is_none())
        .map(|a| a.done - a.sent)
        .collect();
    before.sort();
    let in_flight: Vec<Duration> = log
        .iter()
        .filter(|a| a.sent < killed_at && a.done >= killed_at)
        .map(|a| a.done - killed_at)
        .collect();
    let mut failures: Vec<String> = log.iter().filter_map(|a| a.error.clone()).collect();
    failures.extend(at_kill_error);
    Ok(Kill {
        before,
        sent_at_kill,
        in_flight: all_settled.then(|| in_flight.iter().max().copied().unwrap_or_default()),
        in_flight_count: in_flight.len(),
        redelivered: log.iter().filter(|a| a.redelivered).count(),
        failures,
    })
}

fn p50_max(values: &[Option<Duration>]) -> String {
    if values.iter().any(Option::is_none) {
        let missing = values.iter().filter(|v| v.is_none()).count();
        return format!(
            "{missing} of {} runs not within the give-up time",
            values.len()
        );
    }
    let mut sorted: Vec<Duration> = values.iter().flatten().copied().collect();
    sorted.sort();
    format!(
        "{} / {}",
        ms(percentile(&sorted, 0.5)),
        ms(sorted.last().copied().unwrap_or_default())
    )
}

fn report(results: &[(WorkerKind, &str, Case, Vec<Kill>)], lab_hosts: usize, args: &FailoverArgs) {
    println!(
        "| worker | operation timed | case | runs | operation before the kill, p50 | sent at the kill, answered after: p50 / max | in flight at the kill (per run: in flight, of which redelivered), all answered after: p50 / max | **served again after: p50 / max** | target < 2 s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut missed = Vec::new();
    for (kind, operation, case, kills) in results {
        let mut before: Vec<Duration> = kills.iter().flat_map(|k| k.before.clone()).collect();
        before.sort();
        let served: Vec<Option<Duration>> = kills.iter().map(Kill::served_again).collect();
        let failures: usize = kills.iter().map(|k| k.failures.len()).sum();
        let met = failures == 0 && served.iter().all(|s| s.is_some_and(|s| s < TARGET));
        if !met {
            missed.push(format!("{kind} ({})", case.describe()));
        }
        let counts: Vec<String> = kills
            .iter()
            .map(|k| format!("{}/{}", k.in_flight_count, k.redelivered))
            .collect();
        println!(
            "| {kind} | {operation} | {} | {} | {} | {} | {} ({}) | **{}** | {}{} |",
            case.describe(),
            kills.len(),
            ms(percentile(&before, 0.5)),
            p50_max(&kills.iter().map(|k| k.sent_at_kill).collect::<Vec<_>>()),
            p50_max(&kills.iter().map(|k| k.in_flight).collect::<Vec<_>>()),
            counts.join(", "),
            p50_max(&served),
            if met { "met" } else { "**NOT met**" },
            if failures > 0 {
                format!(" ({failures} operations failed)")
            } else {
                String::new()
            },
        );
    }
    println!();
    let slowest = results
        .iter()
        .flat_map(|(kind, _, case, kills)| {
            kills
                .iter()
                .filter_map(Kill::served_again)
                .map(move |d| (d, *kind, *case))
        })
        .max_by_key(|(d, _, _)| *d);
    println!(
        "summary: failover: {} synthetic hosts and {} lab hosts in the inventory; {} runs per worker kind and case, {} operations kept in flight; slowest to serve again: {}; target served again < {}: {}",
        args.inventory,
        lab_hosts,
        args.runs,
        args.in_flight,
        slowest.map_or("-".into(), |(d, kind, case)| format!(
            "{} ({kind}, {})",
            ms(d),
            case.describe()
        )),
        humantime::format_duration(TARGET),
        if missed.is_empty() {
            "met for every kind and case".to_string()
        } else {
            format!("NOT met for {}", missed.join(", "))
        }
    );
}
