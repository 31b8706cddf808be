//! `fleetroll status`.

use crate::term::say;
use fleetroll_bus::status::{self, MeshStatus};

use crate::context::Context;
use crate::exit;

pub async fn run(ctx: &Context, json: bool) -> anyhow::Result<u8> {
    let bus = match ctx.connect().await {
        Ok(bus) => bus,
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"nats": {"url": ctx.nats_url(), "reachable": false, "error": e.to_string()}})
                );
            }
            return Err(e);
        }
    };
    let mesh = status::gather(&bus).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&mesh)?);
    } else {
        print_human(&mesh);
    }
    Ok(exit::OK)
}

fn print_human(mesh: &MeshStatus) {
    print_stores_and_workers(mesh);
    let set_aside = &mesh.set_aside;
    say!();
    if set_aside.total == 0 {
        say!("SET ASIDE  none: no message was given up on");
        return;
    }
    say!(
        "SET ASIDE  {} message(s) given up on (each is in the audit log: `fleetroll audit list`); latest:",
        set_aside.total
    );
    for s in &set_aside.latest {
        say!(
            "    {}  {} message {} (consumer {}): {}",
            fleetroll_bus::messages::timestamp(s.timestamp),
            s.stream,
            s.stream_seq,
            s.consumer,
            s.why()
        );
    }
}

fn print_stores_and_workers(mesh: &MeshStatus) {
    let n = &mesh.nats;
    say!(
        "NATS     {}  reachable  v{} ({})  clock skew {} ms  {}",
        n.url,
        n.version,
        n.server_name,
        n.clock_skew_ms,
        if n.tls {
            "TLS"
        } else {
            "plaintext: fine on loopback only (see docs/deployment.md, TLS)"
        }
    );
    say!();
    say!(
        "{:<28} {:>9} {:>11} {:>8} {:>11} {:>5}  WHEN FULL",
        "STREAM / BUCKET",
        "MESSAGES",
        "BYTES",
        "REPLICAS",
        "LIMIT",
        "USED"
    );
    for store in mesh.streams.iter().chain(&mesh.buckets) {
        if !store.exists {
            say!("{:<28} {:>9}", store.name, "missing");
            continue;
        }
        let limit = store
            .max_bytes
            .map_or("none".to_string(), |m| bytesize::ByteSize::b(m).to_string());
        let used = store
            .usage()
            .map_or("-".to_string(), |u| format!("{:.0}%", u * 100.0));
        let when_full = match store.discard.as_str() {
            "old" => "oldest dropped",
            _ => "writes refused",
        };
        say!(
            "{:<28} {:>9} {:>11} {:>8} {:>11} {:>5}  {when_full}{}",
            store.name,
            store.messages,
            store.bytes,
            store.replicas,
            limit,
            used,
            if store.nearly_full() {
                "  WARNING: nearly full"
            } else {
                ""
            }
        );
    }
    let full: Vec<&str> = mesh
        .streams
        .iter()
        .chain(&mesh.buckets)
        .filter(|s| s.nearly_full() && s.discard != "old")
        .map(|s| s.name.as_str())
        .collect();
    if !full.is_empty() {
        say!(
            "WARNING: {} past {:.0}% of its limit; when full it refuses new writes (raise [storage] max_bytes, see docs/configuration.md)",
            full.join(", "),
            fleetroll_bus::topology::STORE_WARNING * 100.0
        );
    }
    say!();
    say!("{:<13} {:>8}  LAST HEARTBEAT", "WORKER", "REPLICAS");
    for kind in &mesh.workers {
        let newest = kind.live.iter().map(|r| r.heartbeat_age_ms).min();
        let beat = match newest {
            Some(ms) => format!("{:.1} s ago", ms as f64 / 1000.0),
            None => "DOWN: no live replica".into(),
        };
        say!("{:<13} {:>8}  {beat}", kind.kind.as_str(), kind.live.len());
        for r in &kind.live {
            let since = fleetroll_bus::messages::timestamp(r.started_at);
            say!(
                "    {}  pid {} on {}  up since {since}  {} command(s)",
                r.instance,
                r.pid,
                r.hostname,
                r.commands_handled
            );
        }
    }
}
