//! Who may read: on loopback, whoever can connect; on any other address,
//! only a visitor with a readonly token (as a bearer token, or in the
//! `fleetroll_token` cookie the UI sets, since a browser's event source
//! cannot send headers). A relops or worker token is refused: a browser
//! session must never hold one.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use fleetroll_bus::token::Role;
use fleetroll_bus::verify::VerifyError;

use crate::AppState;
use crate::api::ApiError;

pub(crate) const COOKIE: &str = "fleetroll_token";

pub(crate) async fn check(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(verifier) = &state.visitors else {
        return next.run(request).await;
    };
    let Some(token) = visitor_token(request.headers()) else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "this server needs a readonly token: send `Authorization: Bearer <token>` (`fleetroll auth issue --role readonly`)",
        )
        .into_response();
    };
    match verifier.check(&token, &[Role::Readonly], "web").await {
        Ok(_) => next.run(request).await,
        Err(VerifyError::Denied { denial, .. }) => {
            ApiError::new(StatusCode::UNAUTHORIZED, denial.to_string()).into_response()
        }
        Err(VerifyError::Bus(e)) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response()
        }
    }
}

fn visitor_token(headers: &HeaderMap) -> Option<String> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let cookie = || {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
    };
    bearer
        .or_else(cookie)
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_comes_from_the_header_or_the_cookie() {
        let mut headers = HeaderMap::new();
        assert_eq!(visitor_token(&headers), None);
        headers.insert(header::COOKIE, "a=1; fleetroll_token=abc".parse().unwrap());
        assert_eq!(visitor_token(&headers).as_deref(), Some("abc"));
        headers.insert(header::AUTHORIZATION, "Bearer xyz".parse().unwrap());
        assert_eq!(visitor_token(&headers).as_deref(), Some("xyz"));
    }
}
