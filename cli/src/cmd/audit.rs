//! `fleetroll audit`: list the log (through the auditor's index), verify
//! the chain (straight from the stream, trusting no worker), and print
//! override snapshots.

use crate::term::{say, tell};
use std::io::Write;

use fleetroll_bus::audit_log::{self, Verification};
use fleetroll_bus::codec;
use fleetroll_bus::messages::audit::{AuditList, AuditQuery, ListedRecord};
use fleetroll_bus::messages::timestamp;
use fleetroll_bus::subjects::queries;
use time::OffsetDateTime;

use crate::args::AuditCommand;
use crate::cmd::query;
use crate::context::Context;
use crate::exit::{self, fail};

pub async fn run(ctx: &Context, command: AuditCommand) -> anyhow::Result<u8> {
    match command {
        AuditCommand::List {
            host,
            rollout,
            actor,
            since,
            limit,
            json,
        } => {
            let since = since.as_deref().map(parse_since).transpose()?;
            let list: AuditList = query(
                ctx,
                queries::AUDIT_LIST,
                &AuditQuery {
                    host,
                    rollout,
                    actor,
                    since,
                    limit,
                },
            )
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list.records)?);
            } else {
                print_records(&list.records);
                if list.truncated {
                    tell!(
                        "(the newest {} shown; narrow with --since/--host/--actor or raise --limit)",
                        list.records.len()
                    );
                }
            }
            Ok(exit::OK)
        }
        AuditCommand::Verify { json } => {
            let keys = ctx.trusted_audit_keys()?;
            let bus = ctx.connect().await?;
            let verification = audit_log::verify(&bus, &keys).await?;
            match &verification {
                Verification::Whole { records, head_hash } => {
                    if json {
                        say!(
                            "{}",
                            serde_json::json!({"intact": true, "records": records, "head_hash": head_hash})
                        );
                    } else {
                        say!("audit log intact: {records} records, head {head_hash}");
                    }
                    Ok(exit::OK)
                }
                Verification::Broken { good, first_bad } => {
                    if json {
                        say!(
                            "{}",
                            serde_json::json!({
                                "intact": false,
                                "good_records": good,
                                "first_bad": {"seq": first_bad.seq, "index": first_bad.index, "problem": first_bad.problem},
                            })
                        );
                    }
                    Err(fail(
                        exit::INVALID,
                        format!("audit log BROKEN after {good} good records: {first_bad}"),
                    ))
                }
            }
        }
        AuditCommand::Snapshot { id, json } => {
            let bus = ctx.connect().await?;
            let Some(snapshot) = audit_log::load_snapshot(&bus, &id).await? else {
                return Err(fail(exit::INVALID, format!("no override snapshot `{id}`")));
            };
            if json {
                println!("{}", String::from_utf8_lossy(&codec::to_json(&snapshot)));
                return Ok(exit::OK);
            }
            match snapshot.content() {
                Some(content) => {
                    // The contents exactly as they were, for diffing.
                    let _ = std::io::stdout().write_all(&content);
                    tell!(
                        "(override of {} {} at {}, sha256 {})",
                        snapshot.hostname,
                        snapshot.occasion,
                        timestamp(snapshot.taken_at),
                        snapshot.sha256.as_deref().unwrap_or("?")
                    );
                }
                None => tell!(
                    "no override file on {} {} at {}",
                    snapshot.hostname,
                    snapshot.occasion,
                    timestamp(snapshot.taken_at)
                ),
            }
            Ok(exit::OK)
        }
    }
}

/// `--since`: an RFC 3339 time, or a duration back from now (`2h`).
fn parse_since(text: &str) -> anyhow::Result<OffsetDateTime> {
    AuditQuery::parse_since(text, OffsetDateTime::now_utc()).ok_or_else(|| {
        fail(
            exit::INVALID,
            format!(
                "--since `{text}` is neither a time (2026-11-22T10:00:00Z) nor a duration (2h)"
            ),
        )
    })
}

fn print_records(records: &[ListedRecord]) {
    say!(
        "{:>5}  {:<20}  {:<14} {:<24} {:<8} HOSTS",
        "SEQ",
        "TIME",
        "ACTOR",
        "ACTION",
        "OUTCOME"
    );
    for listed in records {
        let r = &listed.record;
        let actor = match (&r.actor, &r.claimed_actor) {
            (Some(actor), _) => actor.clone(),
            // Never trusted: marked as a claim.
            (None, Some(claimed)) => format!("{claimed}?"),
            (None, None) => "-".into(),
        };
        let hosts = match r.hosts.len() {
            0 => "-".to_string(),
            1..=3 => r.hosts.join(","),
            n => format!("{} +{} more", r.hosts[..2].join(","), n - 2),
        };
        let mut line = format!(
            "{:>5}  {:<20}  {:<14} {:<24} {:<8} {hosts}",
            listed.seq,
            timestamp(r.at),
            actor,
            r.action,
            r.outcome
        );
        if let Some(reason) = &r.reason
            && !reason.is_empty()
        {
            line.push_str(&format!("  reason: {reason}"));
        }
        if let Some(message) = &r.message {
            line.push_str(&format!("  ({message})"));
        }
        say!("{line}");
    }
}
