//! `fleetroll population`.

use crate::term::say;
use fleetroll_bus::messages::NoParams;
use fleetroll_bus::messages::command::{Command, Reply, Verdict};
use fleetroll_bus::messages::host::PopulationList;
use fleetroll_bus::subjects::queries;

use crate::args::PopulationCommand;
use crate::cmd::{COMMAND_WAIT, query, report_failure, send};
use crate::context::Context;
use crate::exit;

pub async fn run(ctx: &Context, command: PopulationCommand) -> anyhow::Result<u8> {
    match command {
        PopulationCommand::Create {
            name,
            expected_role,
            target_query,
            description,
        } => {
            let command = Command::PopulationCreate {
                name,
                expected_role,
                target_query,
                description,
            };
            let outcome = send(ctx, command, COMMAND_WAIT).await?;
            match &outcome.verdict {
                Verdict::Done {
                    reply: Reply::PopulationCreated { name },
                } => {
                    say!("created population {name}");
                    Ok(exit::OK)
                }
                _ => Ok(report_failure(&outcome)),
            }
        }
        PopulationCommand::List { json } => {
            let list: PopulationList = query(ctx, queries::POPULATIONS_LIST, &NoParams {}).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list.populations)?);
            } else {
                say!(
                    "{:<24} {:<28} {:<30} DESCRIPTION",
                    "NAME",
                    "EXPECTED ROLE",
                    "TARGET QUERY"
                );
                for p in &list.populations {
                    say!(
                        "{:<24} {:<28} {:<30} {}",
                        p.name,
                        p.expected_role,
                        p.target_query.as_deref().unwrap_or("-"),
                        p.description.as_deref().unwrap_or("")
                    );
                }
            }
            Ok(exit::OK)
        }
    }
}
