//! `fleetroll inventory seed`.

use crate::term::{say, tell};
use fleetroll_bus::hostname;
use fleetroll_bus::messages::command::{Command, Reply, Verdict};
use fleetroll_bus::messages::{NoParams, SeedList};
use fleetroll_bus::subjects::queries;

use crate::args::SeedCommand;
use crate::cmd::{COMMAND_WAIT, print_changes, query, report_failure, send};
use crate::context::Context;
use crate::exit::{self, fail};

pub async fn run(ctx: &Context, command: SeedCommand) -> anyhow::Result<u8> {
    let (command, verb) = match command {
        SeedCommand::List { json } => return list(ctx, json).await,
        SeedCommand::Sync { from_file } => return sync(ctx, &from_file).await,
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
            print_changes(verb, changed, unchanged);
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
    let list: SeedList = query(ctx, queries::SEEDS_LIST, &NoParams {}).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list.seeds)?);
    } else {
        for seed in &list.seeds {
            say!(
                "{:<40} added {} by {}",
                seed.hostname,
                seed.added_at.date(),
                seed.added_by
            );
        }
        tell!("{} seed(s)", list.seeds.len());
    }
    Ok(exit::OK)
}

/// The most a seed file may hold: beyond it, it is not a seed file.
const MAX_SEED_FILE: u64 = 16 << 20;

/// Reads a seed file: one hostname per line, `#` starts a comment. Every
/// bad line is named; any bad line means nothing is sent.
pub fn read_seed_file(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let meta = std::fs::metadata(path)
        .map_err(|e| fail(exit::INVALID, format!("{}: {e}", path.display())))?;
    if meta.len() > MAX_SEED_FILE {
        return Err(fail(
            exit::INVALID,
            format!(
                "{}: {} bytes is too large for a seed file (at most {MAX_SEED_FILE})",
                path.display(),
                meta.len()
            ),
        ));
    }
    let bytes =
        std::fs::read(path).map_err(|e| fail(exit::INVALID, format!("{}: {e}", path.display())))?;
    let mut hosts = Vec::new();
    let mut errors = Vec::new();
    for (index, line) in bytes.split(|b| *b == b'\n').enumerate() {
        let Ok(line) = std::str::from_utf8(line) else {
            errors.push(format!("line {}: not UTF-8 text", index + 1));
            continue;
        };
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        match hostname::validate(line) {
            Ok(name) => hosts.push(name),
            Err(e) => errors.push(format!("line {}: {e}", index + 1)),
        }
    }
    if !errors.is_empty() {
        let shown: Vec<String> = errors.iter().take(10).cloned().collect();
        let more = errors.len().saturating_sub(shown.len());
        let tail = if more > 0 {
            format!(" (and {more} more)")
        } else {
            String::new()
        };
        return Err(fail(
            exit::INVALID,
            format!(
                "{}: nothing changed: {}{tail}",
                path.display(),
                shown.join("; ")
            ),
        ));
    }
    Ok(hosts)
}

async fn sync(ctx: &Context, path: &std::path::Path) -> anyhow::Result<u8> {
    let hostnames = read_seed_file(path)?;
    let outcome = send(ctx, Command::SeedSync { hostnames }, COMMAND_WAIT).await?;
    match &outcome.verdict {
        Verdict::Done {
            reply: Reply::SeedsSynced { added, removed },
        } => {
            for h in added {
                say!("added    {h}");
            }
            for h in removed {
                say!("removed  {h}");
            }
            tell!("{} added, {} removed", added.len(), removed.len());
            Ok(exit::OK)
        }
        _ => Ok(report_failure(&outcome)),
    }
}
