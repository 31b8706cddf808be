//! One module per top-level command.

pub mod audit;
pub mod auth;
pub mod authorizer;
pub mod host;
pub mod monitor;
pub mod out_of_band;
pub mod ping;
pub mod population;
pub mod rollout;
pub mod seed;
pub mod serve;
pub mod setup;
pub mod status;
pub mod tls;
pub mod up;
pub mod watch;
pub mod workers;

use crate::term::{say, tell};
use std::time::Duration;

use fleetroll_bus::codec::Message;
use fleetroll_bus::messages::command::{Command, Outcome, Verdict};

use crate::context::Context;
use crate::exit;

/// How long a mutating command waits for its outcome by default.
pub const COMMAND_WAIT: Duration = Duration::from_secs(30);

/// Sends a command with the caller's token and waits for its outcome.
pub async fn send(ctx: &Context, command: Command, wait: Duration) -> anyhow::Result<Outcome> {
    let credential = ctx.credential()?;
    let bus = ctx.connect().await?;
    Ok(fleetroll_bus::send::send(&bus, &credential, command, wait).await?)
}

/// Asks a read query with the caller's token.
pub async fn query<P: Message, R: Message>(
    ctx: &Context,
    endpoint: &str,
    params: &P,
) -> anyhow::Result<R> {
    let token = ctx.token()?;
    let bus = ctx.connect().await?;
    Ok(fleetroll_bus::query::request(&bus, &token, endpoint, params, COMMAND_WAIT).await?)
}

/// Prints why a command did not succeed and returns its exit code.
pub fn report_failure(outcome: &Outcome) -> u8 {
    let text = match &outcome.verdict {
        Verdict::Done { .. } => return exit::OK,
        Verdict::Denied { denial } => format!("not authorized: {denial}"),
        Verdict::Invalid { message } => format!("invalid: {message}"),
        Verdict::Refused { message } => format!("refused: {message}"),
        Verdict::Failed { message } => format!("failed: {message}"),
    };
    tell!(
        "fleetroll: {} {}: {text}",
        outcome.command,
        outcome.command_id
    );
    exit::for_verdict(&outcome.verdict)
}

/// Lists what a command changed and what was already as asked.
pub fn print_changes(verb: &str, changed: &[String], unchanged: &[String]) {
    for host in changed {
        say!("{verb:<10} {host}");
    }
    for host in unchanged {
        say!("{:<10} {host}", "unchanged");
    }
}
