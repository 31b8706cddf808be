//! `fleetroll ping`: a command's full round trip through each worker kind.

use crate::term::{say, tell};
use std::time::Instant;

use fleetroll_bus::WorkerKind;
use fleetroll_bus::messages::command::{Command, Reply, Verdict};
use serde::Serialize;

use crate::args::PingArgs;
use crate::cmd::report_failure;
use crate::context::Context;
use crate::exit;

#[derive(Serialize)]
struct PingResult {
    worker: WorkerKind,
    ok: bool,
    instance: Option<String>,
    delivery: Option<u64>,
    round_trip_ms: u128,
    error: Option<String>,
}

pub async fn run(ctx: &Context, args: PingArgs) -> anyhow::Result<u8> {
    let credential = std::sync::Arc::new(ctx.credential()?);
    let bus = ctx.connect().await?;
    let kinds: Vec<WorkerKind> = match args.worker {
        Some(kind) => vec![kind],
        None => WorkerKind::ALL.to_vec(),
    };
    let hold_ms = args.hold.as_millis() as u64;
    let pings = kinds.into_iter().map(|worker| {
        let (bus, credential) = (bus.clone(), credential.clone());
        async move {
            let started = Instant::now();
            let command = Command::Ping { worker, hold_ms };
            let result = fleetroll_bus::send::send(&bus, &credential, command, args.timeout).await;
            (worker, started.elapsed(), result)
        }
    });
    let mut code = exit::OK;
    let mut results = Vec::new();
    for (worker, elapsed, result) in futures::future::join_all(pings).await {
        let mut entry = PingResult {
            worker,
            ok: false,
            instance: None,
            delivery: None,
            round_trip_ms: elapsed.as_millis(),
            error: None,
        };
        match result {
            Ok(outcome) => {
                entry.delivery = Some(outcome.delivery);
                if let Verdict::Done {
                    reply: Reply::Pong { instance, .. },
                } = &outcome.verdict
                {
                    entry.ok = true;
                    entry.instance = Some(instance.clone());
                } else {
                    code = code.max(report_failure(&outcome));
                    entry.error = Some(outcome.verdict.label().to_string());
                }
            }
            Err(e) => {
                let e = anyhow::Error::from(e);
                code = code.max(exit::for_error(&e));
                tell!("fleetroll: ping {worker}: {e}");
                entry.error = Some(e.to_string());
            }
        }
        results.push(entry);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        for r in &results {
            match &r.instance {
                Some(instance) => say!(
                    "{:<13} pong from {} in {} ms (delivery {})",
                    r.worker.as_str(),
                    instance,
                    r.round_trip_ms,
                    r.delivery.unwrap_or(1)
                ),
                None => say!("{:<13} no answer", r.worker.as_str()),
            }
        }
    }
    Ok(code)
}
