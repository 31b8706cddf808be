//! `fleetroll authorizer`: the auth callout of a NATS deployment.

use std::path::Path;
use std::time::Duration;

use fleetroll_authorizer::Authorizer;
use fleetroll_bus::connect::Bus;
use fleetroll_bus::token::Role;

use crate::cmd::workers;
use crate::context::Context;
use crate::exit::{self, fail};

pub async fn run(ctx: &Context, seed_file: &Path, session: Duration) -> anyhow::Result<u8> {
    let seed = std::fs::read_to_string(seed_file).map_err(|e| {
        fail(
            exit::INVALID,
            format!("cannot read the callout key {}: {e}", seed_file.display()),
        )
    })?;
    let issuer = nkeys::KeyPair::from_seed(seed.trim()).map_err(|e| {
        fail(
            exit::INVALID,
            format!("{} holds no account key: {e}", seed_file.display()),
        )
    })?;
    let mut options = ctx
        .nats_options(ctx.nats_url(), "fleetroll-authorizer")?
        .credentials(ctx.credentials(Role::Relops)?)
        .trust(ctx.trust_root());
    options.wait_for_server = true;
    let bus = Bus::connect(options).await?;
    fleetroll_authorizer::run(bus, Authorizer { issuer, session }, workers::stop_signal()).await?;
    Ok(exit::OK)
}
