//! `fleetroll inventory seed`.

use fleetroll_bus::hostname;
use fleetroll_bus::messages::command::{Command, Reply, Verdict};
use fleetroll_bus::messages::{NoParams, SeedList};
use fleetroll_bus::subjects::queries;

use crate::args::SeedCommand;
use crate::cmd::{COMMAND_WAIT, report_failure, send};
use crate::context::Context;
use crate::exit::{self, fail};

pub async fn run(ctx: &Context, command: SeedCommand) -> anyhow::Result<u8> {
    let (command, verb) = match command {
        SeedCommand::List { json } => return list(ctx, json).await,
        SeedCommand::Add { hostnames } => (
            Command::SeedAdd {
                hostnames: checked(hostnames)?,
            },
            "added",
        ),
        SeedCommand::Remove { hostnames } => (
            Command::SeedRemove {
                hostnames: checked(hostnames)?,
            },
            "removed",
        ),
    };
    let outcome = send(ctx, command, COMMAND_WAIT).await?;
    match &outcome.verdict {
        Verdict::Done {
            reply: Reply::SeedsChanged { changed, unchanged },
        } => {
            for host in changed {
                println!("{verb}      {host}");
            }
            for host in unchanged {
                println!("unchanged  {host}");
            }
            Ok(exit::OK)
        }
        _ => Ok(report_failure(&outcome)),
    }
}

/// Bad names are refused here already, before anything is sent.
fn checked(hostnames: Vec<String>) -> anyhow::Result<Vec<String>> {
    let errors: Vec<String> = hostnames
        .iter()
        .filter_map(|h| hostname::validate(h).err().map(|e| e.to_string()))
        .collect();
    if errors.is_empty() {
        Ok(hostnames)
    } else {
        Err(fail(
            exit::INVALID,
            format!("nothing changed: {}", errors.join("; ")),
        ))
    }
}

async fn list(ctx: &Context, json: bool) -> anyhow::Result<u8> {
    let token = ctx.token()?;
    let bus = ctx.connect().await?;
    let list: SeedList = fleetroll_bus::query::request(
        &bus,
        &token,
        queries::SEEDS_LIST,
        &NoParams {},
        COMMAND_WAIT,
    )
    .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list.seeds)?);
    } else {
        for seed in &list.seeds {
            println!(
                "{:<40} added {} by {}",
                seed.hostname,
                seed.added_at.date(),
                seed.added_by
            );
        }
        eprintln!("{} seed(s)", list.seeds.len());
    }
    Ok(exit::OK)
}
