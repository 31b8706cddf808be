//! `fleetroll setup`: the streams, buckets and worker consumers of a NATS
//! deployment, made as its `admin` NATS user. Nothing that runs afterwards
//! may create or reconfigure a stream.

use fleetroll_bus::connect::Bus;
use fleetroll_bus::embedded::NatsUser;
use fleetroll_bus::setup;
use fleetroll_bus::topology;

use crate::context::Context;
use crate::exit;
use crate::term::say;

pub async fn run(ctx: &Context) -> anyhow::Result<u8> {
    let options = ctx
        .nats_options(ctx.nats_url(), "fleetroll-setup")?
        .credentials(ctx.credentials(NatsUser::Admin)?);
    let bus = Bus::connect(options).await?;
    setup::ensure(&bus, ctx.replicas(), ctx.storage()).await?;
    say!(
        "{} is set up: {} streams and {} buckets (new ones with {} replica(s))",
        bus.url(),
        topology::STREAMS.len(),
        topology::BUCKETS.len(),
        ctx.replicas().0
    );
    Ok(exit::OK)
}
