//! `fleetroll host` and `fleetroll inventory refresh`.

use std::time::Duration;

use fleetroll_bus::hostname;
use fleetroll_bus::messages::command::{Command, Reply, Verdict};
use fleetroll_bus::messages::host::{HostList, HostName, HostQuery, Observation};
use fleetroll_bus::subjects::queries;

use crate::args::HostCommand;
use crate::cmd::{COMMAND_WAIT, report_failure, send};
use crate::context::Context;
use crate::exit::{self, fail};

/// A refresh probes many hosts; each has its own SSH timeouts.
const REFRESH_WAIT: Duration = Duration::from_secs(600);

pub async fn run(ctx: &Context, command: HostCommand) -> anyhow::Result<u8> {
    match command {
        HostCommand::List { filter, json } => list(ctx, filter, json).await,
        HostCommand::Show { hostname, json } => show(ctx, hostname, json).await,
        HostCommand::Refresh { hostnames, json } => refresh(ctx, hostnames, false, json).await,
        HostCommand::Repin { hostname, confirm } => repin(ctx, hostname, confirm).await,
    }
}

async fn list(ctx: &Context, filter: String, json: bool) -> anyhow::Result<u8> {
    // A bad query is refused here already, with its position.
    fleetroll_bus::filter::Query::parse(&filter)
        .and_then(|q| q.check_fields(Observation::FIELDS).map(|_| q))
        .map_err(|e| fail(exit::INVALID, e.to_string()))?;
    let token = ctx.token()?;
    let bus = ctx.connect().await?;
    let list: HostList = fleetroll_bus::query::request(
        &bus,
        &token,
        queries::HOSTS_LIST,
        &HostQuery { filter },
        COMMAND_WAIT,
    )
    .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list.hosts)?);
        return Ok(exit::OK);
    }
    println!(
        "{:<36} {:<8} {:<5} {:<24} {:<9} {:<8} LAST SEEN",
        "HOST", "SSH", "SUDO", "ROLE", "OVERRIDE", "APPLIED"
    );
    for h in &list.hosts {
        let yes_no = |v: Option<bool>| match v {
            Some(true) => "yes",
            Some(false) => "no",
            None => "-",
        };
        println!(
            "{:<36} {:<8} {:<5} {:<24} {:<9} {:<8} {}",
            h.hostname,
            yes_no(h.sshable),
            yes_no(h.sudoable),
            h.role.as_deref().unwrap_or("-"),
            yes_no(h.override_present),
            yes_no(h.applied),
            h.last_seen
                .map(fleetroll_bus::messages::timestamp)
                .unwrap_or_else(|| "never".into())
        );
    }
    eprintln!("{} host(s)", list.hosts.len());
    Ok(exit::OK)
}

async fn show(ctx: &Context, hostname: String, json: bool) -> anyhow::Result<u8> {
    let name = hostname::validate(&hostname).map_err(|e| fail(exit::INVALID, e.to_string()))?;
    let token = ctx.token()?;
    let bus = ctx.connect().await?;
    let host: Observation = fleetroll_bus::query::request(
        &bus,
        &token,
        queries::HOSTS_GET,
        &HostName { hostname: name },
        COMMAND_WAIT,
    )
    .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&host)?);
    } else {
        // The JSON field names, one per line: greppable and stable.
        let value = serde_json::to_value(&host)?;
        if let Some(map) = value.as_object() {
            for (key, value) in map {
                println!("{key:<22} {}", value);
            }
        }
    }
    Ok(exit::OK)
}

pub async fn refresh(
    ctx: &Context,
    hostnames: Vec<String>,
    all: bool,
    json: bool,
) -> anyhow::Result<u8> {
    if all != hostnames.is_empty() {
        return Err(fail(
            exit::INVALID,
            "name the hosts to refresh, or say --seed all",
        ));
    }
    let outcome = send(ctx, Command::HostRefresh { hostnames, all }, REFRESH_WAIT).await?;
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
                None => println!("ok      {}", h.hostname),
                Some(e) => println!("failed  {}: {e}", h.hostname),
            }
        }
    }
    let failed = hosts.iter().filter(|h| !h.ok).count();
    eprintln!("{} probed, {failed} failed", hosts.len());
    Ok(exit::OK)
}

async fn repin(ctx: &Context, hostname: String, confirm: bool) -> anyhow::Result<u8> {
    let name = hostname::validate(&hostname).map_err(|e| fail(exit::INVALID, e.to_string()))?;
    if !confirm {
        println!(
            "would forget the pinned SSH host key of {name}; the next probe pins whatever key it offers"
        );
        println!("run again with --confirm to do it");
        return Ok(exit::REFUSED);
    }
    let outcome = send(ctx, Command::HostRepin { hostname: name }, COMMAND_WAIT).await?;
    match &outcome.verdict {
        Verdict::Done {
            reply: Reply::Repinned { hostname },
        } => {
            println!("forgot the pinned key of {hostname}");
            Ok(exit::OK)
        }
        _ => Ok(report_failure(&outcome)),
    }
}
