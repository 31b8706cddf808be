//! `fleetroll up`: the whole mesh in one process.

use crate::term::{say, tell};
use std::time::Duration;

use anyhow::Context as _;
use fleetroll_bus::WorkerKind;
use fleetroll_bus::connect::{Bus, BusError, ConnectOptions, Credentials};
use fleetroll_bus::embedded::{EmbeddedOptions, EmbeddedServer, NatsUser};
use fleetroll_bus::setup;
use fleetroll_bus::token::Role;
use tokio::sync::watch;

use crate::args::UpArgs;
use crate::cmd::{auth, serve, workers};
use crate::context::Context;
use crate::exit::{self, fail};

pub async fn run(ctx: &Context, args: UpArgs) -> anyhow::Result<u8> {
    let data_dir = ctx.data_dir();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;

    let server = match &ctx.global.nats_url {
        Some(_) => None,
        None => Some(
            EmbeddedServer::start(&EmbeddedOptions {
                data_dir: data_dir.clone(),
                port: args.nats_port,
                nats_server: args.nats_server.clone(),
            })
            .await?,
        ),
    };
    let url = match &server {
        Some(server) => server.url().to_string(),
        None => ctx.nats_url(),
    };
    // The set-up runs as the `admin` NATS user and disconnects; the workers
    // connect as `worker`; the operator's keys are published as `relops`.
    let (worker, relops) = match &server {
        Some(server) => (
            Some(server.credentials(Role::Worker).clone()),
            Some(server.credentials(Role::Relops).clone()),
        ),
        None => external_credentials(ctx)?,
    };
    // The embedded server is plaintext on loopback; a NATS of one's own
    // takes the configured TLS.
    let options = |name: &str| -> anyhow::Result<ConnectOptions> {
        match &server {
            Some(_) => Ok(ConnectOptions::new(url.clone(), name)),
            None => ctx.nats_options(url.clone(), name),
        }
    };
    let admin = match &server {
        Some(server) => Some(server.credentials(NatsUser::Admin).clone()),
        None if ctx.credentials_file(NatsUser::Admin).exists() => {
            ctx.credentials(NatsUser::Admin)?
        }
        // Someone else sets up that NATS (`fleetroll setup`); the workers
        // wait for it.
        None => None,
    };
    if let Some(admin) = admin {
        let mut setup_options = options("fleetroll-setup")?.credentials(admin);
        setup_options.wait_for_server = server.is_none();
        setup::ensure(
            &Bus::connect(setup_options).await?,
            ctx.replicas(),
            ctx.storage(),
        )
        .await?;
    }
    // Without credentials files (a NATS with the auth callout) the workers
    // are the caller's token (--token-file: a worker token), and the web
    // server its own.
    let mut worker_options = options("fleetroll-up")?
        .credentials(worker)
        .token(ctx.token_source().ok())
        .trust(ctx.trust_root());
    worker_options.wait_for_server = server.is_none();
    let bus = Bus::connect(worker_options).await?;
    if server.is_some() {
        std::fs::write(ctx.url_file(), &url)
            .with_context(|| format!("writing {}", ctx.url_file().display()))?;
    }
    {
        let operator = Bus::connect(
            options("fleetroll-up-keys")?
                .credentials(relops)
                .token(ctx.token_source().ok()),
        )
        .await?;
        first_run_credentials(ctx, &operator).await?;
    }
    let config = workers::WorkerConfig::for_kinds(ctx, &WorkerKind::ALL)?;
    let metrics = fleetroll_web::metrics::install().context("installing the metrics recorder")?;

    let (stop_tx, stop_rx) = watch::channel(false);
    renew_web_token(ctx)?;
    tokio::spawn(keep_web_token_fresh(ctx.clone(), stop_rx.clone()));
    // The web server reads as the `readonly` NATS user, as `serve` does.
    let reader = match &server {
        Some(server) => Some(server.credentials(Role::Readonly).clone()),
        None => ctx.credentials(Role::Readonly)?,
    };
    let web_bus = Bus::connect(
        options("fleetroll-web")?
            .credentials(reader)
            .token(serve::web_token(ctx).ok())
            .trust(ctx.trust_root()),
    )
    .await?;
    let (web_url, web) =
        serve::start(ctx, web_bus, args.web, Some(metrics), stop_rx.clone()).await?;
    let replicas: Vec<_> = WorkerKind::ALL
        .into_iter()
        .map(|kind| {
            tokio::spawn(workers::supervise(
                kind,
                bus.clone(),
                config.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();

    say!("fleetroll mesh is up");
    say!(
        "  NATS:      {url}{}",
        if server.is_some() {
            " (embedded, JetStream)"
        } else {
            ""
        }
    );
    say!("  data dir:  {}", data_dir.display());
    if server.is_some() {
        say!(
            "  users:     relops, readonly, chatops, worker, admin (NATS passwords in {})",
            data_dir.join("credentials").display()
        );
    }
    say!("  workers:   prober, gatekeeper, orchestrator, auditor (one replica each)");
    say!("  web UI:    {web_url} (API: {web_url}api/v1/openapi.json, metrics: {web_url}metrics)");
    say!(
        "  check it:  fleetroll --data-dir {} status",
        data_dir.display()
    );
    say!("stop with Ctrl-C");

    workers::stop_signal().await;
    tell!("stopping…");
    let _ = stop_tx.send(true);
    for replica in replicas {
        let _ = tokio::time::timeout(Duration::from_secs(10), replica).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), web).await;
    drop(bus);
    if let Some(server) = server {
        let _ = std::fs::remove_file(ctx.url_file());
        server.stop().await;
    }
    tell!("stopped");
    Ok(exit::OK)
}

/// Who `up` connects as on a NATS of its own (`--nats-url`): the workers
/// with `--nats-credentials`, else the data dir's `worker.toml` if any; the
/// keys with the data dir's `relops.toml` if any, else as the workers.
fn external_credentials(
    ctx: &Context,
) -> anyhow::Result<(Option<Credentials>, Option<Credentials>)> {
    let worker = ctx.credentials(Role::Worker)?;
    let own = ctx.credentials_file(Role::Relops);
    let relops = if own.exists() {
        Some(Credentials::load(&own).map_err(|e| fail(exit::INVALID, e.to_string()))?)
    } else {
        worker.clone()
    };
    Ok((worker, relops))
}

/// On a fresh data dir: a signing key and a RelOps token for the local
/// operator, so the mesh is usable at once (a missing or expired token in
/// the data dir is replaced). Always makes sure the mesh has the verifying
/// key of the data dir's signing key (and its audit key), publishing them
/// as the NATS user `bus` is, relops.
async fn first_run_credentials(ctx: &Context, bus: &Bus) -> anyhow::Result<()> {
    let key_path = ctx.signing_key_path();
    let key = if key_path.exists() {
        auth::load_key(ctx)?
    } else {
        let key = auth::init_key(&key_path)?;
        say!("created signing key {}", key_path.display());
        key
    };
    auth::write_verifying_key(ctx, &key)?;
    tolerate_refusal(auth::publish_verifying_key(bus, &key).await)?;
    tolerate_refusal(auth::publish_audit_key(bus, &auth::audit_key(ctx)?).await)?;
    let token_path = ctx.default_token_path();
    if valid_token_in(&token_path, &key).is_none() {
        let actor = std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "operator".into());
        let (holder, _) = auth::holder_key(&token_path)?;
        let (jwt, claims) = auth::issue(
            &key,
            &actor,
            Role::Relops,
            time::Duration::hours(8),
            Some(&holder.verifying_key()),
        )?;
        auth::write_private(&token_path, &jwt)?;
        say!(
            "issued a relops token for `{}` (8 h) in {}",
            claims.sub,
            token_path.display()
        );
    }
    Ok(())
}

/// How long the web server's token lives, and how long before its end
/// `up` issues the next.
const WEB_TOKEN_TTL: time::Duration = time::Duration::days(30);
const WEB_TOKEN_RENEW_BEFORE: time::Duration = time::Duration::days(7);

/// Makes sure `<data-dir>/web.token` holds a readonly token of the data
/// dir's signing key that is good for a week yet. The web server reads that
/// file and never holds the key: `up` loads the key for this and drops it.
fn renew_web_token(ctx: &Context) -> anyhow::Result<()> {
    let key = auth::load_key(ctx)?;
    let path = ctx.data_dir().join(serve::WEB_TOKEN_FILE);
    let renew_after = time::OffsetDateTime::now_utc() + WEB_TOKEN_RENEW_BEFORE;
    let fresh = valid_token_in(&path, &key).filter(|claims| {
        claims.role == Role::Readonly && claims.exp > renew_after.unix_timestamp()
    });
    if fresh.is_none() {
        // Queries only, never a command: a bearer token.
        let (jwt, _) = auth::issue(&key, "fleetroll-web", Role::Readonly, WEB_TOKEN_TTL, None)?;
        auth::write_private(&path, &jwt)?;
    }
    Ok(())
}

/// The claims of the token in `path`, if it is one of `key` and good now.
fn valid_token_in(
    path: &std::path::Path,
    key: &fleetroll_bus::token::SigningKey,
) -> Option<fleetroll_bus::token::Claims> {
    let jwt = std::fs::read_to_string(path).ok()?;
    let now = time::OffsetDateTime::now_utc();
    fleetroll_bus::token::verify(jwt.trim(), &key.verifying_key(), now).ok()
}

/// Renews the web server's token twice a day while `up` runs.
async fn keep_web_token_fresh(ctx: Context, stop: watch::Receiver<bool>) {
    let twice_a_day = Duration::from_secs(12 * 3600);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(twice_a_day) => {}
            _ = workers::stopped(stop.clone()) => return,
        }
        if let Err(e) = renew_web_token(&ctx) {
            tracing::warn!(error = %format!("{e:#}"), "could not renew the web server's token");
        }
    }
}

/// On a NATS of one's own with worker credentials only, the server refuses
/// to let `up` publish the keys: say so and go on with the keys the mesh
/// has.
fn tolerate_refusal(published: anyhow::Result<()>) -> anyhow::Result<()> {
    match published {
        Err(e)
            if e.chain().any(|cause| {
                matches!(
                    cause.downcast_ref::<BusError>(),
                    Some(BusError::NotPermitted { .. })
                )
            }) =>
        {
            tell!(
                "fleetroll: warning: {e:#}. The mesh keeps the keys it has; to publish this data dir's, run `fleetroll up` once with a relops credentials file in <data-dir>/credentials/relops.toml"
            );
            Ok(())
        }
        other => other,
    }
}
