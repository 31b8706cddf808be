//! Converge and reboot: one host at a time, on an operator's explicit
//! command, never part of a rollout.

use std::time::{Duration, Instant};

use fleetroll_bus::connect::BusError;
use fleetroll_bus::messages::command::{Reply, Verdict};
use fleetroll_bus::worker::CommandContext;
use fleetroll_bus::{hostname, subjects, topology};
use fleetroll_ssh::SshError;
use fleetroll_ssh::pool::{Pool, RunError};
use tracing::{Instrument, info, info_span};

use crate::OrchestratorSettings;

/// Output kept for the outcome (the whole of it went out live).
const OUTPUT_CAP: usize = 1 << 20;
/// How long a host may take to go down after the reboot command.
const GOING_DOWN: Duration = Duration::from_secs(120);

/// The hostname, if it is valid and in the inventory.
async fn known_host(ctx: &CommandContext, raw: &str) -> Result<String, Verdict> {
    let name = hostname::validate(raw).map_err(|e| Verdict::invalid(e.to_string()))?;
    let present = async {
        ctx.bus
            .kv(&topology::HOSTS)
            .await?
            .get(&name)
            .await
            .map_err(|e| BusError::js("reading the host", e))
    };
    match present.await {
        Ok(Some(_)) => Ok(name),
        Ok(None) => Err(Verdict::invalid(format!(
            "{name} is not in the inventory (`fleetroll inventory seed add {name}`)"
        ))),
        Err(e) => Err(Verdict::failed(e)),
    }
}

/// Runs the converge command, publishing its output as it comes.
pub async fn converge(
    ctx: &CommandContext,
    pool: &Pool,
    settings: &OrchestratorSettings,
    raw: &str,
) -> Verdict {
    let host = match known_host(ctx, raw).await {
        Ok(host) => host,
        Err(verdict) => return verdict,
    };
    let span = info_span!("converge", host = %host);
    async {
        let (live, mut chunks) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        let client = ctx.bus.client.clone();
        let subject = subjects::command_output(&ctx.command_id);
        let forwarding = tokio::spawn(async move {
            while let Some(chunk) = chunks.recv().await {
                let _ = client.publish(subject.clone(), chunk.into()).await;
            }
            let _ = client.flush().await;
        });
        let ran = pool
            .run_streaming(
                &host,
                &settings.converge_command,
                b"",
                settings.converge_timeout,
                OUTPUT_CAP,
                Some(&live),
            )
            .await;
        drop(live);
        let _ = forwarding.await;
        if ran.is_ok() {
            // Puppet ran, well or not: what it did shows in the next
            // observation (the gates and the blast radius read it).
            if let Err(e) =
                crate::apply::request_probe(&ctx.bus, &host, format!("converge {}", ctx.command_id))
                    .await
            {
                tracing::warn!(error = %e, "no probe after the converge");
            }
        }
        match ran {
            Ok(ran)
                if ran
                    .output
                    .exit_status
                    .is_some_and(|s| settings.converge_ok.contains(&s)) =>
            {
                info!("converged");
                Verdict::Done {
                    reply: Reply::Converged { hostname: host },
                }
            }
            Ok(ran) => Verdict::failed(format!(
                "`{}` exited with status {} on {host}",
                settings.converge_command,
                ran.output
                    .exit_status
                    .map_or("none (killed)".to_string(), |s| s.to_string())
            )),
            Err((e, _)) => Verdict::failed(format!("converging {host}: {e}")),
        }
    }
    .instrument(span)
    .await
}

/// Whether a fresh connection to the host can run a command now.
async fn answers(pool: &Pool, host: &str) -> bool {
    pool.forget(host).await;
    pool.run(host, "true", b"", Duration::from_secs(5), 1024)
        .await
        .is_ok_and(|ran| ran.output.exit_status == Some(0))
}

/// How long the reboot command may take to answer.
const REBOOT_COMMAND: Duration = Duration::from_secs(30);

/// Reboots the host and waits until it has gone down and answers again.
pub async fn reboot(
    ctx: &CommandContext,
    pool: &Pool,
    settings: &OrchestratorSettings,
    raw: &str,
) -> Verdict {
    let host = match known_host(ctx, raw).await {
        Ok(host) => host,
        Err(verdict) => return verdict,
    };
    let span = info_span!("reboot", host = %host);
    async {
        let started = Instant::now();
        let ran = pool
            .run(
                &host,
                &settings.reboot_command,
                b"",
                REBOOT_COMMAND,
                64 * 1024,
            )
            .await;
        match ran {
            Ok(ran) if matches!(ran.output.exit_status, Some(0) | None) => {}
            Ok(ran) => {
                return Verdict::failed(format!(
                    "`{}` exited with status {:?} on {host}: {}",
                    settings.reboot_command,
                    ran.output.exit_status,
                    String::from_utf8_lossy(&ran.output.stderr).trim()
                ));
            }
            // A reboot may cut the connection before the command answers;
            // a host never reached (connect or login timed out) was not
            // rebooted, and waiting for it to "come back" would hide that.
            Err((RunError::Ssh(e), _))
                if matches!(
                    e.innermost(),
                    SshError::Protocol(_)
                        | SshError::Timeout {
                            stage: "command",
                            ..
                        }
                ) => {}
            Err((e, _)) => return Verdict::failed(format!("rebooting {host}: {e}")),
        }
        while answers(pool, &host).await {
            if started.elapsed() > GOING_DOWN {
                return Verdict::failed(format!(
                    "{host} still answers {} s after `{}`: it did not reboot",
                    GOING_DOWN.as_secs(),
                    settings.reboot_command
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        info!("down; waiting for it to answer again");
        while !answers(pool, &host).await {
            if started.elapsed() > settings.reboot_timeout {
                return Verdict::failed(format!(
                    "{host} did not answer again within {} s of the reboot",
                    settings.reboot_timeout.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        info!("back");
        Verdict::Done {
            reply: Reply::Rebooted {
                hostname: host,
                back_after_s: started.elapsed().as_secs(),
            },
        }
    }
    .instrument(span)
    .await
}
