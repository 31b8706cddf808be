//! `fleetroll host` and `fleetroll inventory refresh`.

use crate::term::{say, tell};
use std::time::Duration;

use fleetroll_bus::hostname;
use fleetroll_bus::messages::command::{Command, HostSelection, Reply, Verdict};
use fleetroll_bus::messages::host::{
    DriftSummary, HostHistory, HostList, HostName, HostQuery, HostRecord,
};
use fleetroll_bus::messages::timestamp;
use fleetroll_bus::messages::workload::Workload;
use fleetroll_bus::messages::{NoParams, SeedList};
use fleetroll_bus::subjects::queries;

use crate::args::HostCommand;
use crate::cmd::{COMMAND_WAIT, print_changes, query, report_failure, send};
use crate::context::Context;
use crate::exit::{self, fail};

/// A refresh probes many hosts; each has its own SSH timeouts.
const REFRESH_WAIT: Duration = Duration::from_secs(600);

pub async fn run(ctx: &Context, command: HostCommand) -> anyhow::Result<u8> {
    match command {
        HostCommand::List {
            filter,
            drift_type,
            json,
        } => list(ctx, with_drift(filter, drift_type), json).await,
        HostCommand::AssignPopulation {
            hostname,
            filter,
            population,
            confirm,
        } => {
            let hosts = match (hostname, filter) {
                (Some(h), _) => HostSelection::Names { hostnames: vec![h] },
                (None, Some(query)) => {
                    if !confirm {
                        return dry_run(
                            ctx,
                            &query,
                            &format!("would assign to population {population}"),
                        )
                        .await;
                    }
                    HostSelection::Filter { query }
                }
                (None, None) => {
                    return Err(fail(
                        exit::INVALID,
                        "name a host, or --filter QUERY --confirm",
                    ));
                }
            };
            intent(ctx, Command::HostAssignPopulation { hosts, population }).await
        }
        HostCommand::SetExpectedRole {
            hostname,
            role,
            confirm,
        } => {
            if !confirm {
                return dry_run(
                    ctx,
                    &host_query(&hostname)?,
                    &format!("would set the expected role to {role}"),
                )
                .await;
            }
            intent(ctx, Command::HostSetExpectedRole { hostname, role }).await
        }
        HostCommand::ClearExpectedRole { hostname, confirm } => {
            if !confirm {
                return dry_run(
                    ctx,
                    &host_query(&hostname)?,
                    "would clear the expected role",
                )
                .await;
            }
            intent(ctx, Command::HostClearExpectedRole { hostname }).await
        }
        HostCommand::Disable { hostname, reason } => {
            intent(ctx, Command::HostDisable { hostname, reason }).await
        }
        HostCommand::Enable { hostname } => intent(ctx, Command::HostEnable { hostname }).await,
        HostCommand::Show { hostname, json } => show(ctx, hostname, json).await,
        HostCommand::History { hostname, json } => history(ctx, hostname, json).await,
        HostCommand::Refresh {
            hostnames,
            fast,
            json,
        } => refresh(ctx, hostnames, false, fast, json).await,
        HostCommand::Repin { hostname, confirm } => repin(ctx, hostname, confirm).await,
        HostCommand::Pin {
            from_known_hosts,
            confirm,
        } => pin_import(ctx, &from_known_hosts, confirm).await,
        HostCommand::Quarantine {
            hostname,
            until,
            reason,
            confirm,
        } => quarantine(ctx, hostname, Some((until, reason)), confirm).await,
        HostCommand::Unquarantine { hostname, confirm } => {
            quarantine(ctx, hostname, None, confirm).await
        }
    }
}

/// Quarantines the host's worker until a time, for a reason, or (`None`)
/// lifts its quarantine.
async fn quarantine(
    ctx: &Context,
    hostname: String,
    until: Option<(time::OffsetDateTime, String)>,
    confirm: bool,
) -> anyhow::Result<u8> {
    let name = hostname::validate(&hostname).map_err(|e| fail(exit::INVALID, e.to_string()))?;
    if !confirm {
        match &until {
            Some((until, _)) => say!(
                "would quarantine the Taskcluster worker of {name} until {}: it claims no work until then",
                timestamp(*until)
            ),
            None => say!("would lift the quarantine of the Taskcluster worker of {name}"),
        }
        say!("run again with --confirm to do it");
        return Ok(exit::REFUSED);
    }
    let command = match until {
        Some((until, reason)) => Command::HostQuarantine {
            hostname: name,
            until,
            reason,
        },
        None => Command::HostUnquarantine { hostname: name },
    };
    let outcome = send(ctx, command, COMMAND_WAIT).await?;
    match &outcome.verdict {
        Verdict::Done {
            reply:
                Reply::Quarantined {
                    hostname,
                    worker,
                    until,
                },
        } => {
            say!(
                "quarantined {hostname} (worker {worker}) until {}",
                timestamp(*until)
            );
            Ok(exit::OK)
        }
        Verdict::Done {
            reply: Reply::Unquarantined { hostname, worker },
        } => {
            say!("lifted the quarantine of {hostname} (worker {worker})");
            Ok(exit::OK)
        }
        _ => Ok(report_failure(&outcome)),
    }
}

/// `--drift-type T` is the query `drift:T` (`any`: some drift), ANDed with
/// the filter.
fn with_drift(filter: String, drift_type: Option<String>) -> String {
    let drift = match drift_type.as_deref() {
        None => return filter,
        Some("any") => "NOT drift:null".to_string(),
        Some(t) => format!("drift:{t}"),
    };
    if filter.trim().is_empty() {
        drift
    } else {
        format!("({filter}) AND {drift}")
    }
}

fn host_query(hostname: &str) -> anyhow::Result<String> {
    let name = hostname::validate(hostname).map_err(|e| fail(exit::INVALID, e.to_string()))?;
    Ok(format!("hostname:\"{name}\""))
}

/// Says which hosts a change would touch, changes nothing, and exits 4.
async fn dry_run(ctx: &Context, filter: &str, what: &str) -> anyhow::Result<u8> {
    let hosts = matching(ctx, filter).await?;
    for h in &hosts {
        say!("{what}: {}", h.observation.hostname);
    }
    say!(
        "{} host(s); nothing changed: run again with --confirm",
        hosts.len()
    );
    Ok(exit::REFUSED)
}

/// Every host matching `filter`, page after page.
async fn matching(ctx: &Context, filter: &str) -> anyhow::Result<Vec<HostRecord>> {
    let mut hosts = Vec::new();
    let mut after = None;
    loop {
        let page: HostList = query(
            ctx,
            queries::HOSTS_LIST,
            &HostQuery {
                filter: filter.to_string(),
                after,
                limit: None,
            },
        )
        .await?;
        hosts.extend(page.hosts);
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(hosts),
        }
    }
}

async fn intent(ctx: &Context, command: Command) -> anyhow::Result<u8> {
    let outcome = send(ctx, command, COMMAND_WAIT).await?;
    match &outcome.verdict {
        Verdict::Done {
            reply: Reply::HostsUpdated { changed, unchanged },
        } => {
            print_changes("changed", changed, unchanged);
            Ok(exit::OK)
        }
        _ => Ok(report_failure(&outcome)),
    }
}

async fn list(ctx: &Context, filter: String, json: bool) -> anyhow::Result<u8> {
    // A bad query is refused here already, with its position.
    fleetroll_bus::filter::Query::parse(&filter)
        .and_then(|q| q.check_fields(HostRecord::FIELDS).map(|_| q))
        .map_err(|e| fail(exit::INVALID, e.to_string()))?;
    let hosts = matching(ctx, &filter).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&hosts)?);
        return Ok(exit::OK);
    }
    say!(
        "{:<32} {:<4} {:<5} {:<24} {:<24} {:<9} {:<8} {:<8} {:<20} LAST SEEN",
        "HOST",
        "SSH",
        "SUDO",
        "ROLE",
        "EXPECTED ROLE",
        "OVERRIDE",
        "APPLIED",
        "HEALTHY",
        "DRIFT"
    );
    for record in &hosts {
        let h = &record.observation;
        let yes_no = |v: Option<bool>| match v {
            Some(true) => "yes",
            Some(false) => "no",
            None => "-",
        };
        let drift: Vec<&str> = record.drift.iter().map(|d| d.as_str()).collect();
        say!(
            "{:<32} {:<4} {:<5} {:<24} {:<24} {:<9} {:<8} {:<8} {:<20} {}",
            h.hostname,
            yes_no(h.sshable),
            yes_no(h.sudoable),
            h.role.as_deref().unwrap_or("-"),
            record.intent.expected_role.as_deref().unwrap_or("-"),
            yes_no(h.override_present),
            yes_no(h.applied),
            yes_no(record.healthy),
            if drift.is_empty() {
                "-".to_string()
            } else {
                drift.join(",")
            },
            h.last_seen
                .map(fleetroll_bus::messages::timestamp)
                .unwrap_or_else(|| "never".into())
        );
    }
    tell!("{} host(s)", hosts.len());
    Ok(exit::OK)
}

async fn history(ctx: &Context, hostname: String, json: bool) -> anyhow::Result<u8> {
    let name = hostname::validate(&hostname).map_err(|e| fail(exit::INVALID, e.to_string()))?;
    let history: HostHistory =
        query(ctx, queries::HOSTS_HISTORY, &HostName { hostname: name }).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&history)?);
        return Ok(exit::OK);
    }
    for (i, entry) in history.entries.iter().enumerate() {
        let at = entry
            .observation
            .probed_at
            .map(fleetroll_bus::messages::timestamp)
            .unwrap_or_else(|| "-".into());
        let what = if i == 0 {
            "oldest observation kept".to_string()
        } else if entry.changes.is_empty() {
            "no change".to_string()
        } else {
            entry
                .changes
                .iter()
                .map(|c| format!("{}: {} -> {}", c.field, c.from, c.to))
                .collect::<Vec<_>>()
                .join("; ")
        };
        say!("{at}  {what}");
    }
    tell!(
        "{} observation(s) of {}",
        history.entries.len(),
        history.hostname
    );
    Ok(exit::OK)
}

pub async fn drift(ctx: &Context, json: bool) -> anyhow::Result<u8> {
    let summary: DriftSummary = query(ctx, queries::DRIFT_SUMMARY, &NoParams {}).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(exit::OK);
    }
    say!(
        "{} host(s), {} drifting; healthy {}, unhealthy {}, unknown {}",
        summary.hosts,
        summary.drifting,
        summary.healthy,
        summary.unhealthy,
        summary.health_unknown
    );
    say!("{:<16} {:>6}  HOSTS", "DRIFT", "COUNT");
    for t in &summary.types {
        let more = t.count - t.hosts.len();
        let mut hosts = t.hosts.join(", ");
        if more > 0 {
            hosts.push_str(&format!(" and {more} more"));
        }
        say!("{:<16} {:>6}  {}", t.drift_type.as_str(), t.count, hosts);
    }
    Ok(exit::OK)
}

async fn show(ctx: &Context, hostname: String, json: bool) -> anyhow::Result<u8> {
    let name = hostname::validate(&hostname).map_err(|e| fail(exit::INVALID, e.to_string()))?;
    let host: HostRecord = query(ctx, queries::HOSTS_GET, &HostName { hostname: name }).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&host)?);
    } else {
        // The JSON field names, one per line: greppable and stable.
        let value = serde_json::to_value(&host)?;
        if let Some(map) = value.as_object() {
            for (key, value) in map {
                say!("{key:<22} {}", value);
            }
        }
        if let Some(w) = &host.workload {
            say_pool(w);
        }
    }
    Ok(exit::OK)
}

/// The workload source's pool and quarantine, in words.
fn say_pool(w: &Workload) {
    let expected = w.expected_pool.as_ref().map_or_else(
        || "no pool expected: no role known".to_string(),
        |p| format!("expected {}, named by {}", p.pool, p.rule.describe()),
    );
    match &w.worker_pool {
        Some(pool) => say!("{:<22} {pool} ({expected})", "tc pool"),
        None => say!("{:<22} not found ({expected})", "tc pool"),
    }
    if let Some(q) = w.quarantine.as_ref() {
        say!(
            "{:<22} until {}{}{}: {}",
            "tc quarantine",
            timestamp(q.until),
            q.by.as_deref()
                .map(|b| format!(" by {b}"))
                .unwrap_or_default(),
            q.at.map(|a| format!(" at {}", timestamp(a)))
                .unwrap_or_default(),
            q.reason.as_deref().unwrap_or("(no reason given)")
        );
    }
}

pub async fn refresh(
    ctx: &Context,
    hostnames: Vec<String>,
    all: bool,
    fast: bool,
    json: bool,
) -> anyhow::Result<u8> {
    if all != hostnames.is_empty() {
        return Err(fail(
            exit::INVALID,
            "name the hosts to refresh, or say --seed all",
        ));
    }
    let credential = ctx.credential()?;
    let bus = ctx.connect().await?;
    let total = if all {
        seeds(&bus, &credential.token).await?.seeds.len()
    } else {
        hostnames.len()
    };
    let envelope = fleetroll_bus::send::envelope(
        &credential,
        Command::HostRefresh {
            hostnames,
            all,
            fast,
        },
        REFRESH_WAIT,
    );
    let progress = tokio::spawn(show_progress(bus.clone(), envelope.id.clone(), total));
    let outcome = fleetroll_bus::send::send_envelope(&bus, &envelope, REFRESH_WAIT).await;
    progress.abort();
    let outcome = outcome?;
    let Verdict::Done {
        reply: Reply::Refreshed { hosts },
    } = &outcome.verdict
    else {
        return Ok(report_failure(&outcome));
    };
    if json {
        println!("{}", serde_json::to_string_pretty(hosts)?);
    } else {
        for h in hosts {
            match &h.error {
                None => say!("ok      {}", h.hostname),
                Some(e) => say!("failed  {}: {e}", h.hostname),
            }
        }
    }
    let failed = hosts.iter().filter(|h| !h.ok).count();
    tell!("{} probed, {failed} failed", hosts.len());
    // A script that refreshes must be able to tell that some hosts could
    // not be reached (SPEC 8: SSH unreachable is exit 2); what was probed
    // is recorded either way.
    Ok(if failed > 0 {
        exit::INFRASTRUCTURE
    } else {
        exit::OK
    })
}

/// A progress bar (on a terminal only) counting the observations this
/// refresh produces, as the probers record them.
async fn show_progress(bus: fleetroll_bus::Bus, command_id: String, total: usize) {
    use futures::StreamExt;
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} probing {pos}/{len} hosts [{bar:30}] {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let Ok(store) = bus.kv(&fleetroll_bus::topology::HOSTS).await else {
        return;
    };
    let Ok(mut updates) = store.watch_all().await else {
        return;
    };
    let mut seen = std::collections::BTreeSet::new();
    while let Some(Ok(entry)) = updates.next().await {
        if let Ok(o) = fleetroll_bus::codec::from_cbor::<fleetroll_bus::messages::host::Observation>(
            &entry.value,
        ) && o.probed_for.as_deref() == Some(command_id.as_str())
            && seen.insert(entry.key.clone())
        {
            bar.set_position(seen.len() as u64);
        }
    }
}

async fn seeds(bus: &fleetroll_bus::connect::Bus, token: &str) -> anyhow::Result<SeedList> {
    Ok(
        fleetroll_bus::query::request(bus, token, queries::SEEDS_LIST, &NoParams {}, COMMAND_WAIT)
            .await?,
    )
}

/// `host pin --from-known-hosts`: the plan is made here against the
/// mesh's pins; with --confirm the prober makes it again and applies it.
async fn pin_import(ctx: &Context, file: &std::path::Path, confirm: bool) -> anyhow::Result<u8> {
    use fleetroll_bus::messages::command::PinChange;
    // The whole file travels in one command message.
    const MAX_KNOWN_HOSTS: u64 = 4 << 20;
    let name = file.display().to_string();
    let unreadable = |e: std::io::Error| fail(exit::INVALID, format!("cannot read {name}: {e}"));
    let size = std::fs::metadata(file).map_err(unreadable)?.len();
    if size > MAX_KNOWN_HOSTS {
        return Err(fail(
            exit::INVALID,
            format!(
                "{name}: {size} bytes is too large for a known_hosts file (at most {MAX_KNOWN_HOSTS})"
            ),
        ));
    }
    let text = std::fs::read_to_string(file).map_err(unreadable)?;
    fleetroll_ssh::known_hosts::KnownHosts::parse(&text, &name)
        .map_err(|e| fail(exit::INVALID, e.to_string()))?;
    let pins = if confirm {
        let command = Command::HostPinImport {
            known_hosts: text,
            file: name,
        };
        let outcome = send(ctx, command, COMMAND_WAIT).await?;
        match outcome.verdict {
            Verdict::Done {
                reply: Reply::PinsImported { pins },
            } => pins,
            _ => return Ok(report_failure(&outcome)),
        }
    } else {
        let token = ctx.token()?;
        let bus = ctx.connect().await?;
        let seeds = seeds(&bus, &token).await?;
        let names: Vec<String> = seeds.seeds.into_iter().map(|s| s.hostname).collect();
        let pool = fleetroll_ssh::pool::Pool::new(bus, ctx.settings.ssh.clone());
        pool.import_known_hosts(&text, &name, &names, false)
            .await
            .map_err(|e| fail(exit::INVALID, e.to_string()))?
    };
    let verb = if confirm { "" } else { "would " };
    for pin in &pins {
        let what = match &pin.change {
            PinChange::New => format!("{verb}pin"),
            PinChange::Unchanged => "already pinned".into(),
            PinChange::Replaced { previous } => {
                format!("{verb}replace {} with", previous.join(", "))
            }
        };
        say!("{}: {what} {}", pin.hostname, pin.fingerprints.join(", "));
    }
    let changes = pins
        .iter()
        .filter(|p| p.change != PinChange::Unchanged)
        .count();
    say!(
        "{} host(s) in {}: {changes} {verb}change",
        pins.len(),
        file.display()
    );
    if !confirm {
        if changes > 0 {
            say!("run again with --confirm to pin them");
        }
        return Ok(exit::REFUSED);
    }
    Ok(exit::OK)
}

async fn repin(ctx: &Context, hostname: String, confirm: bool) -> anyhow::Result<u8> {
    let name = hostname::validate(&hostname).map_err(|e| fail(exit::INVALID, e.to_string()))?;
    if !confirm {
        say!(
            "would forget the pinned SSH host key of {name}; the next probe pins whatever key it offers"
        );
        say!("run again with --confirm to do it");
        return Ok(exit::REFUSED);
    }
    let outcome = send(ctx, Command::HostRepin { hostname: name }, COMMAND_WAIT).await?;
    match &outcome.verdict {
        Verdict::Done {
            reply: Reply::Repinned { hostname },
        } => {
            say!("forgot the pinned key of {hostname}");
            Ok(exit::OK)
        }
        _ => Ok(report_failure(&outcome)),
    }
}
