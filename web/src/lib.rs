//! The read side of fleetroll for people and dashboards: a web UI (its
//! assets are built into the binary), a read-only JSON API described by an
//! OpenAPI document, server-sent rollout events, `/healthz` and Prometheus
//! `/metrics`.
//!
//! It answers from the mesh's own read queries (the same ones the CLI and
//! chatops bots ask), so every reader sees the same hosts, rollouts and
//! audit records; only the live event feed and the mesh banner read
//! NATS directly.
//!
//! ```no_run
//! # async fn run(bus: fleetroll_bus::connect::Bus, token: String) -> Result<(), fleetroll_web::WebError> {
//! use fleetroll_bus::token::TokenSource;
//! use fleetroll_web::Web;
//! let web = Web::bind("127.0.0.1:8080".parse().unwrap()).await?;
//! println!("web UI: {}", web.url());
//! web.run(bus, TokenSource::Fixed(token), None, std::future::pending::<()>()).await
//! # }
//! ```

mod access;
mod api;
mod assets;
mod host_check;
mod https;
mod live;
mod mesh;
pub mod metrics;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use fleetroll_bus::connect::Bus;
use fleetroll_bus::verify::Verifier;
use metrics_exporter_prometheus::PrometheusHandle;

use fleetroll_bus::token::TokenSource;

/// Why the web server could not run.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the web server stopped: {0}")]
    Serve(#[source] std::io::Error),
    #[error("cannot use {path} for HTTPS: {detail}")]
    Tls {
        path: std::path::PathBuf,
        detail: String,
    },
}

/// What every request handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub bus: Bus,
    pub tokens: Arc<TokenSource>,
    /// Checks visitors' tokens; `None` when the server listens on loopback
    /// only and was not asked to, where whoever can connect may read.
    pub visitors: Option<Verifier>,
    pub metrics: Option<PrometheusHandle>,
    pub hosts: host_check::AllowedHosts,
    /// Live event feeds open at once; beyond them a feed is refused.
    pub live_feeds: Arc<tokio::sync::Semaphore>,
}

/// Live event feeds one server keeps open at once.
const LIVE_FEEDS: usize = 64;

/// A bound web server, not yet serving.
pub struct Web {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    tokens_required: bool,
    extra_hosts: Vec<String>,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
}

impl Web {
    /// Binds `addr` (port 0 picks a free one). On an address other than
    /// loopback every API request must carry a token of any role.
    pub async fn bind(addr: SocketAddr) -> Result<Web, WebError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| WebError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| WebError::Bind { addr, source })?;
        Ok(Web {
            listener,
            addr,
            tokens_required: !addr.ip().is_loopback(),
            extra_hosts: Vec::new(),
            tls: None,
        })
    }

    /// Serves HTTPS with this certificate chain and key (PEM files).
    pub fn https(
        mut self,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Result<Self, WebError> {
        self.tls = Some(https::server_config(cert, key)?);
        Ok(self)
    }

    /// Whether it serves HTTPS.
    pub fn is_https(&self) -> bool {
        self.tls.is_some()
    }

    /// Serves `app` until `shutdown` resolves, over HTTPS when asked.
    async fn serve<S>(self, app: Router, shutdown: S) -> Result<(), WebError>
    where
        S: Future<Output = ()> + Send + 'static,
    {
        match self.tls {
            Some(config) => {
                let listener = https::Listener::start(self.listener, self.addr, config);
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
            None => {
                axum::serve(self.listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
        }
        .map_err(WebError::Serve)
    }

    /// Asks every API request for a token on loopback too (a machine other
    /// people log in to). Beyond loopback tokens are always required.
    pub fn require_token(mut self, required: bool) -> Self {
        self.tokens_required |= required;
        self
    }

    /// Names, besides loopback's and the bound address, that requests may
    /// carry as `Host` (the name a proxy or DNS gives the server).
    pub fn allow_hosts(mut self, names: &[String]) -> Self {
        self.extra_hosts.extend(names.iter().cloned());
        self
    }

    /// Where a browser finds the UI.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}/", self.addr)
    }

    /// Serves until `shutdown` resolves. `tokens` are what the server asks
    /// the mesh's read queries with; `metrics` is this process's recorder,
    /// rendered at `/metrics`.
    pub async fn run<S>(
        self,
        bus: Bus,
        tokens: TokenSource,
        metrics: Option<PrometheusHandle>,
        shutdown: S,
    ) -> Result<(), WebError>
    where
        S: Future<Output = ()> + Send + 'static,
    {
        let visitors = self.tokens_required.then(|| Verifier::new(bus.clone()));
        let state = AppState {
            bus,
            tokens: Arc::new(tokens),
            visitors,
            metrics,
            hosts: host_check::AllowedHosts::new(self.addr.ip(), &self.extra_hosts),
            live_feeds: Arc::new(tokio::sync::Semaphore::new(LIVE_FEEDS)),
        };
        self.serve(router(state), shutdown).await
    }
}

fn router(state: AppState) -> Router {
    // /metrics is read under the API's rule: beyond loopback (or when asked
    // for), with a token only.
    let metrics = metrics::routes(state.metrics.clone()).route_layer(
        axum::middleware::from_fn_with_state(state.clone(), access::check),
    );
    Router::new()
        .merge(api::routes(state.clone()))
        .merge(assets::routes())
        .merge(metrics)
        .route("/healthz", axum::routing::get(mesh::healthz))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            host_check::check,
        ))
        .with_state(state)
}
