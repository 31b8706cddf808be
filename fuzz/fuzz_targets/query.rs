//! The query language: any text parses or is refused with a position inside
//! it, and a parsed query evaluates against a host without trouble.

#![no_main]

use fleetroll_bus::filter::Query;
use fleetroll_bus::messages::host::{DriftType, HostIntent, HostRecord, Observation};
use libfuzzer_sys::fuzz_target;
use time::OffsetDateTime;

fn host(now: OffsetDateTime) -> HostRecord {
    let mut observation = Observation::discovered("t-linux-042.test", now);
    observation.role = Some("gecko_t_linux_talos".into());
    observation.sshable = Some(true);
    observation.uptime_s = Some(3 * 86400);
    observation.last_seen = Some(now - time::Duration::hours(3));
    HostRecord {
        observation,
        intent: HostIntent {
            population: Some("talos".into()),
            ..HostIntent::default()
        },
        drift: vec![DriftType::Role, DriftType::Override],
        healthy: Some(true),
        workload: None,
    }
}

fn check(text: &str) {
    // One past the last character: where "expected ... at the end" points.
    let end = text.chars().count() + 1;
    let in_text = |position: usize| (1..=end).contains(&position);
    match Query::parse(text) {
        Err(e) => assert!(in_text(e.position), "{e} (query has {} chars)", end - 1),
        Ok(query) => {
            assert_eq!(query.text(), text);
            if let Err(e) = query.check_fields(HostRecord::FIELDS) {
                assert!(in_text(e.position), "{e} (query has {} chars)", end - 1);
            }
            let now = OffsetDateTime::from_unix_timestamp(1_790_000_000).expect("a fixed time");
            let host = host(now);
            query.matches_at(&|field| host.field(field), now);
        }
    }
}

fuzz_target!(|text: &str| {
    let text = text.to_owned();
    fleetroll_fuzz::on_worker_stack(move || check(&text));
});
