//! Which names the server answers for. A page on another site can make a
//! browser on this machine talk to a loopback server by pointing its own
//! name at 127.0.0.1 (DNS rebinding); the browser then sends that name as
//! `Host`, and only an allow-list of the server's own names tells the two
//! apart.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::api::ApiError;

/// The names a request's `Host` may carry: loopback's, the bound address,
/// and the operator's own (`--web-host`).
#[derive(Debug, Clone)]
pub(crate) struct AllowedHosts(Vec<String>);

impl AllowedHosts {
    pub(crate) fn new(bound: std::net::IpAddr, extra: &[String]) -> AllowedHosts {
        let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"]
            .iter()
            .map(|n| n.to_string())
            .chain([bound.to_string()])
            .chain(extra.iter().map(|n| n.to_ascii_lowercase()))
            .collect();
        names.dedup();
        AllowedHosts(names)
    }

    /// Whether a `Host` header value (`name`, `name:port`, `[v6]:port`)
    /// names this server.
    pub(crate) fn allows(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        let name = match host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => host
                .rsplit_once(':')
                .map_or(host.as_str(), |(name, _)| name),
        };
        self.0.iter().any(|allowed| allowed == name)
    }

    fn list(&self) -> String {
        self.0.join(", ")
    }
}

pub(crate) async fn check(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    match host {
        Some(host) if state.hosts.allows(host) => next.run(request).await,
        _ => ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this server answers for {} only; a name of your own needs `--web-host NAME`",
                state.hosts.list()
            ),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_the_bound_address_and_named_hosts_only() {
        let hosts = AllowedHosts::new("10.0.0.5".parse().unwrap(), &["Fleet.Example.com".into()]);
        for ok in [
            "localhost:8080",
            "127.0.0.1",
            "[::1]:8080",
            "10.0.0.5:80",
            "fleet.example.com",
            "FLEET.example.com:443",
        ] {
            assert!(hosts.allows(ok), "{ok}");
        }
        for refused in ["evil.example.com:8080", "127.0.0.1.evil.com", "", "[::2]:1"] {
            assert!(!hosts.allows(refused), "{refused}");
        }
    }
}
