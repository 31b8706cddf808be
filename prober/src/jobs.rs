//! Probe jobs: every probe goes through one work-queue stream that all
//! prober replicas share. Each job is taken by one replica; a replica that
//! dies holding jobs lets them go to another after the ack wait; a job
//! published twice under the same id (two replicas scheduling the same
//! cycle, a refresh command redelivered) is stored once.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use fleetroll_bus::codec;
use fleetroll_bus::connect::{Bus, BusError};
use fleetroll_bus::hostname;
use fleetroll_bus::messages::host::ProbeJob;
use fleetroll_bus::worker::{retry_later, set_aside};
use fleetroll_bus::{subjects, topology};
use time::OffsetDateTime;
use tracing::{info, warn};

use crate::fleet::Fleet;

/// Queues a probe (`fast` or full) of each host; `origin` makes the job ids
/// (a command id, or the schedule's cycle).
pub async fn enqueue(
    bus: &Bus,
    hostnames: &[String],
    origin: &str,
    fast: bool,
) -> Result<(), BusError> {
    let now = OffsetDateTime::now_utc();
    let mut acks = Vec::with_capacity(hostnames.len());
    for hostname in hostnames {
        let job = ProbeJob {
            hostname: hostname.clone(),
            requested_at: now,
            origin: origin.to_string(),
            fast,
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("{origin}.{hostname}").as_str(),
        );
        let ack = bus
            .js
            .publish_with_headers(
                subjects::probe_job(hostname),
                headers,
                codec::to_cbor(&job).into(),
            )
            .await
            .map_err(|e| BusError::js("queueing a probe", e))?;
        acks.push(ack);
    }
    for ack in acks {
        ack.await.map_err(|e| BusError::js("queueing a probe", e))?;
    }
    Ok(())
}

/// Takes probe jobs and runs them until the consumer cannot be opened
/// (NATS gone), at most the fleet's parallelism at a time.
pub async fn work(bus: Bus, fleet: Arc<Fleet>) -> Result<(), BusError> {
    let parallelism = fleet.parallelism();
    fleetroll_bus::worker::serve_queue(&bus, &topology::PROBE_QUEUE, parallelism, |message| {
        let fleet = fleet.clone();
        async move { run_job(&fleet, message).await }
    })
    .await
}

async fn run_job(fleet: &Fleet, message: jetstream::Message) {
    let job: ProbeJob = match codec::from_cbor(&message.payload) {
        Ok(job) => job,
        Err(e) => return set_aside(&message, &format!("unreadable probe job: {e}")).await,
    };
    if let Err(e) = hostname::validate(&job.hostname) {
        return set_aside(&message, &format!("probe job: {e}")).await;
    }
    let result = fleetroll_bus::worker::with_progress(
        &message,
        fleet.probe(&job.hostname, &job.origin, job.fast),
    )
    .await;
    match result {
        // Probe failures are recorded on the host; the job is done.
        Ok(_) => {
            let _ = message.double_ack().await;
        }
        // The observation could not be recorded: let another try.
        Err(e) => {
            warn!(host = %job.hostname, error = %e, "probe not recorded; job left for retry");
            retry_later(&message).await;
        }
    }
}

/// Queues a probe (`fast` or full) of every seed at every whole `interval`
/// (aligned to the clock, so every replica names the cycle alike and the
/// stream keeps one job per host and cycle). New seeds are probed when
/// added, not here.
pub async fn schedule(bus: Bus, interval: Duration, fast: bool) -> Result<(), BusError> {
    let seconds = interval.as_secs().max(1);
    loop {
        let now = OffsetDateTime::now_utc().unix_timestamp() as u64;
        let next = (now / seconds + 1) * seconds;
        tokio::time::sleep(Duration::from_secs(next - now)).await;
        let cycle = next / seconds;
        let seeds = crate::seeds::list(&bus).await?;
        let hosts: Vec<String> = seeds.seeds.into_iter().map(|s| s.hostname).collect();
        if !hosts.is_empty() {
            let kind = if fast { "fast" } else { "full" };
            enqueue(
                &bus,
                &hosts,
                &format!("schedule-{kind}-{seconds}-{cycle}"),
                fast,
            )
            .await?;
            info!(hosts = hosts.len(), cycle, kind, "scheduled probes");
        }
    }
}
