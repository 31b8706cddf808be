//! `fleetroll converge host` and `fleetroll reboot host`: explicit,
//! audited, one host at a time, never part of a rollout.

use crate::term::{ByteEscaper, say, tell};
use std::io::Write;
use std::time::Duration;

use fleetroll_bus::hostname;
use fleetroll_bus::messages::command::{Command, Reply, Verdict};
use fleetroll_bus::{send, subjects};
use futures::StreamExt;

use crate::cmd::report_failure;
use crate::context::Context;
use crate::exit::{self, fail};

/// Extra time the CLI gives a worker beyond the host-side limit.
const MARGIN: Duration = Duration::from_secs(120);

pub async fn converge(ctx: &Context, raw: String) -> anyhow::Result<u8> {
    let host = hostname::validate(&raw).map_err(|e| fail(exit::INVALID, e.to_string()))?;
    let credential = ctx.credential()?;
    let bus = ctx.connect().await?;
    let wait = ctx.settings.orchestrator.converge_timeout + MARGIN;
    let envelope = send::envelope(
        &credential,
        Command::HostConverge {
            hostname: host.clone(),
        },
        wait,
    );
    // Listening before sending: the output is not kept anywhere.
    let mut output = bus
        .client
        .subscribe(subjects::command_output(&envelope.id))
        .await
        .map_err(|e| fail(exit::INFRASTRUCTURE, format!("listening for output: {e}")))?;
    let printing = tokio::spawn(async move {
        let mut stdout = std::io::stdout();
        // The host's output, as it comes: its control characters are shown,
        // not obeyed.
        let mut text = ByteEscaper::default();
        loop {
            // The last pieces may trail the outcome a little.
            match tokio::time::timeout(Duration::from_millis(300), output.next()).await {
                Ok(Some(chunk)) => {
                    let _ = stdout.write_all(text.push(&chunk.payload).as_bytes());
                    let _ = stdout.flush();
                }
                Ok(None) => break,
                Err(_) => continue,
            }
        }
    });
    let outcome = send::send_envelope(&bus, &envelope, wait).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    printing.abort();
    let outcome = outcome?;
    match &outcome.verdict {
        Verdict::Done {
            reply: Reply::Converged { hostname },
        } => {
            tell!("converged {hostname}");
            Ok(exit::OK)
        }
        _ => Ok(report_failure(&outcome)),
    }
}

pub async fn reboot(ctx: &Context, raw: String, confirm: bool) -> anyhow::Result<u8> {
    let host = hostname::validate(&raw).map_err(|e| fail(exit::INVALID, e.to_string()))?;
    let settings = &ctx.settings.orchestrator;
    if !confirm {
        say!(
            "would reboot {host} (`{}` on it) and wait up to {} s for it to answer again",
            settings.reboot_command,
            settings.reboot_timeout.as_secs()
        );
        say!("run again with --confirm to do it");
        return Ok(exit::REFUSED);
    }
    let outcome = crate::cmd::send(
        ctx,
        Command::HostReboot { hostname: host },
        settings.reboot_timeout + MARGIN,
    )
    .await?;
    match &outcome.verdict {
        Verdict::Done {
            reply:
                Reply::Rebooted {
                    hostname,
                    back_after_s,
                },
        } => {
            say!("rebooted {hostname}: answering again {back_after_s} s after the reboot");
            Ok(exit::OK)
        }
        _ => Ok(report_failure(&outcome)),
    }
}
