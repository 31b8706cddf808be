//! `fleetroll serve`: the read-only web UI and HTTP API against any mesh,
//! and the part of `fleetroll up` that starts them.

use crate::term::say;
use anyhow::Context as _;
use fleetroll_bus::connect::Bus;
use fleetroll_bus::token::Role;
use fleetroll_bus::token::TokenSource;
use fleetroll_web::Web;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::task::JoinHandle;

use crate::args::WebArgs;
use crate::cmd::workers;
use crate::context::Context;
use crate::exit::{self, fail};

/// The file `up` and `serve` write the web UI's address to.
const WEB_URL_FILE: &str = "web.url";

/// The web server's own readonly token, under the data dir: `up` keeps it
/// fresh; for `serve` elsewhere, `fleetroll auth issue --role readonly
/// --out` writes it.
pub const WEB_TOKEN_FILE: &str = "web.token";

pub async fn run(ctx: &Context, web: WebArgs) -> anyhow::Result<u8> {
    let metrics = fleetroll_web::metrics::install().context("installing the metrics recorder")?;
    let mut options = ctx
        .nats_options(ctx.nats_url(), "fleetroll-web")?
        .credentials(ctx.credentials(Role::Readonly)?)
        .token(web_token(ctx)?)
        .trust(ctx.trust_root());
    options.wait_for_server = true;
    let bus = Bus::connect(options).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (url, serving) = start(ctx, bus, web, Some(metrics), stop_rx).await?;
    say!("web UI: {url}");
    workers::stop_signal().await;
    let _ = stop_tx.send(true);
    let _ = serving.await;
    Ok(exit::OK)
}

/// The token the web server asks the mesh with, and is to a NATS with the
/// auth callout: `<data-dir>/web.token` when there is one (read at each
/// use), else the caller's.
pub fn web_token(ctx: &Context) -> anyhow::Result<TokenSource> {
    let own = ctx.data_dir().join(WEB_TOKEN_FILE);
    if own.exists() {
        return Ok(TokenSource::File(own));
    }
    ctx.token_source()
}

/// Binds `web.web_listen` and serves the UI and API until `stop` turns true;
/// returns where. The server asks the mesh with [`web_token`]; it never
/// loads the signing key.
pub async fn start(
    ctx: &Context,
    bus: Bus,
    web: WebArgs,
    metrics: Option<PrometheusHandle>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<(String, JoinHandle<()>)> {
    let tokens = web_token(ctx)?;
    let plain_off_loopback =
        !web.web_listen.ip().is_loopback() && web.web_tls_cert.is_none() && !web.web_plain_http;
    if plain_off_loopback {
        return Err(fail(
            exit::INVALID,
            format!(
                "{} is not loopback: serve HTTPS there (--web-tls-cert and --web-tls-key), or, behind a proxy that speaks HTTPS to browsers, --web-plain-http",
                web.web_listen
            ),
        ));
    }
    let mut server = Web::bind(web.web_listen)
        .await?
        .require_token(web.web_require_token)
        .allow_hosts(&web.web_hosts);
    if let (Some(cert), Some(key)) = (&web.web_tls_cert, &web.web_tls_key) {
        server = server.https(cert, key)?;
    }
    let web = server;
    let url = web.url();
    let file = ctx.data_dir().join(WEB_URL_FILE);
    std::fs::write(&file, &url).with_context(|| format!("writing {}", file.display()))?;
    let shutdown = workers::stopped(stop);
    let serving = tokio::spawn(async move {
        if let Err(e) = web.run(bus, tokens, metrics, shutdown).await {
            tracing::error!(error = %e, "the web server stopped");
        }
    });
    Ok((url, serving))
}
