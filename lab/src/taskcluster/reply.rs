//! Answers as Taskcluster's services and its load balancer give them: dates
//! in JavaScript's `toJSON()` form, lib-api's error bodies, the bare 404 of
//! an unknown path, and a load balancer's 502 page.

use std::time::SystemTime;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Taskcluster's date format: ISO 8601 with milliseconds, UTC.
pub(crate) fn tc_date(t: SystemTime) -> String {
    let dt = time::OffsetDateTime::from(t);
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    dt.format(&f).unwrap_or_default()
}

/// A `date-time` as JSON schema (RFC 3339) accepts it.
pub(crate) fn parse_date(s: &str) -> Option<SystemTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(SystemTime::from)
}

/// lib-api's error codes and their statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    MalformedPayload,
    InvalidRequestArguments,
    InputValidationError,
    InputError,
    AuthenticationFailed,
    InsufficientScopes,
    ResourceNotFound,
}

impl Code {
    fn name(self) -> &'static str {
        match self {
            Code::MalformedPayload => "MalformedPayload",
            Code::InvalidRequestArguments => "InvalidRequestArguments",
            Code::InputValidationError => "InputValidationError",
            Code::InputError => "InputError",
            Code::AuthenticationFailed => "AuthenticationFailed",
            Code::InsufficientScopes => "InsufficientScopes",
            Code::ResourceNotFound => "ResourceNotFound",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Code::MalformedPayload
            | Code::InvalidRequestArguments
            | Code::InputValidationError
            | Code::InputError => StatusCode::BAD_REQUEST,
            Code::AuthenticationFailed => StatusCode::UNAUTHORIZED,
            Code::InsufficientScopes => StatusCode::FORBIDDEN,
            Code::ResourceNotFound => StatusCode::NOT_FOUND,
        }
    }
}

/// The API method being answered, for `requestInfo`.
pub(crate) struct Call<'a> {
    /// The method's name (`listWorkers`), not the HTTP verb.
    pub name: &'a str,
    /// Route parameters as received.
    pub params: Value,
    /// The parsed request body (`{}` when there is none).
    pub payload: Value,
}

/// An error body as lib-api's `reportError` builds it: the message gets a
/// footer naming the method, code, status and time, and `requestInfo`
/// echoes the method, parameters and payload.
pub(crate) fn error(call: &Call<'_>, code: Code, message: &str) -> Response {
    let status = code.status();
    let time = tc_date(SystemTime::now());
    let message = format!(
        "{message}\n\n---\n\n* method:     {}\n* errorCode:  {}\n* statusCode: {}\n* time:       {time}",
        call.name,
        code.name(),
        status.as_u16()
    );
    let body = json!({
        "code": code.name(),
        "message": message,
        "requestInfo": {
            "method": call.name,
            "params": call.params,
            "payload": call.payload,
            "time": time,
        },
    });
    let mut r = (status, Json(body)).into_response();
    if code == Code::AuthenticationFailed {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("hawk"));
    }
    r
}

/// What a Taskcluster service answers for a path it has no method for.
pub(crate) fn no_such_path() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"error": "Not found"}))).into_response()
}

/// What the load balancer in front of Firefox CI answers when a backend
/// fails: an HTML page, nothing a Taskcluster client can parse as JSON.
pub(crate) fn bad_gateway() -> Response {
    const PAGE: &str = "<html><head>\n<meta http-equiv=\"content-type\" content=\"text/html;charset=utf-8\">\n<title>502 Server Error</title>\n</head>\n<body text=#000000 bgcolor=#ffffff>\n<h1>Error: Server Error</h1>\n<h2>The server encountered a temporary error and could not complete your request.<p>Please try again in 30 seconds.</h2>\n<h2></h2>\n</body></html>\n";
    (
        StatusCode::BAD_GATEWAY,
        [(header::CONTENT_TYPE, "text/html; charset=UTF-8")],
        PAGE,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_at_millisecond_precision() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        assert_eq!(tc_date(t), "2023-11-14T22:13:20.123Z");
        assert_eq!(parse_date(&tc_date(t)), Some(t));
        assert_eq!(
            parse_date("2023-11-14T23:13:20.123+01:00"),
            Some(t),
            "offsets are accepted"
        );
        assert_eq!(parse_date("2023-11-14"), None);
    }
}
