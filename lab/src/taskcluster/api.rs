//! The double's HTTP front: routes, the load balancer in front of it, and
//! what lib-api does before a method runs (parse the body, authenticate and
//! check scopes, validate URL parameters and the query string), in that
//! order, with the same errors.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};

use super::auth::{Caller, Signed};
use super::hashids;
use super::reply::{self, Call, Code};
use super::scopes;
use crate::runtime::Shared;

/// A ready answer refusing a request (boxed: responses are big).
pub(crate) type Refused = Box<Response>;

/// Bodies larger than lib-api's input limit are refused.
const INPUT_LIMIT: usize = 10 * 1024 * 1024;

/// Routes of the double.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let q = "/api/queue/v1";
    let wm = "/api/worker-manager/v1";
    let nf = no_such_path;
    Router::new()
        .route(&format!("{q}/ping"), get(ping).fallback(nf))
        .route(&format!("{wm}/ping"), get(ping).fallback(nf))
        .route(&format!("{q}/__lbheartbeat__"), get(heartbeat).fallback(nf))
        .route(&format!("{wm}/__lbheartbeat__"), get(heartbeat).fallback(nf))
        .route(
            &format!("{q}/provisioners/{{provisionerId}}/worker-types/{{workerType}}/workers"),
            get(super::queue::list_workers).fallback(nf),
        )
        .route(
            &format!(
                "{q}/provisioners/{{provisionerId}}/worker-types/{{workerType}}/workers/{{workerGroup}}/{{workerId}}"
            ),
            get(super::queue::get_worker)
                .put(super::queue::quarantine_worker)
                .fallback(nf),
        )
        .route(
            &format!("{q}/task/{{taskId}}/status"),
            get(super::queue::task_status).fallback(nf),
        )
        .route(
            &format!("{wm}/provisioners/{{provisionerId}}/worker-types/{{workerType}}/workers"),
            get(super::worker_manager::list_workers).fallback(nf),
        )
        .route(
            &format!(
                "{wm}/provisioners/{{provisionerId}}/worker-types/{{workerType}}/workers/{{workerGroup}}/{{workerId}}"
            ),
            get(super::worker_manager::get_worker).fallback(nf),
        )
        .route(
            &format!("{wm}/workers/{{*rest}}"),
            get(super::worker_manager::managed_workers).fallback(nf),
        )
        .fallback(nf)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            load_balancer,
        ))
        .with_state(shared)
}

/// The load balancer: answers its share of requests with a 502 of its own
/// before any service sees them.
async fn load_balancer(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    if shared.tc.fails_next() {
        return reply::bad_gateway();
    }
    next.run(req).await
}

async fn no_such_path() -> Response {
    reply::no_such_path()
}

async fn ping(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let uptime = SystemTime::now()
        .duration_since(shared.started)
        .unwrap_or_default()
        .as_secs_f64();
    Json(json!({"alive": true, "uptime": uptime}))
}

async fn heartbeat() -> Json<Value> {
    Json(json!({}))
}

/// A request, read whole.
pub(crate) struct Req {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Handlers take the request read whole, or answer the refusal.
impl<S: Send + Sync> axum::extract::FromRequest<S> for Req {
    type Rejection = Response;

    async fn from_request(req: Request, _: &S) -> Result<Req, Response> {
        Req::read(req).await.map_err(|refused| *refused)
    }
}

impl Req {
    async fn read(req: Request) -> Result<Req, Refused> {
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, INPUT_LIMIT)
            .await
            .map_err(|_| Box::new(axum::http::StatusCode::PAYLOAD_TOO_LARGE.into_response()))?;
        Ok(Req {
            method: parts.method,
            uri: parts.uri,
            headers: parts.headers,
            body,
        })
    }

    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn content_type(&self) -> Option<&str> {
        self.header(header::CONTENT_TYPE)
    }

    /// Whether the body is JSON by its content type (type-is semantics).
    fn is_json(&self) -> bool {
        self.content_type()
            .and_then(|c| c.split(';').next())
            .is_some_and(|c| c.trim().eq_ignore_ascii_case("application/json"))
    }

    /// Host and port the way Hawk's `parseHost` and lib-api find them.
    fn host_port(&self) -> (String, u16) {
        let raw = self
            .header(header::HOST)
            .or_else(|| self.uri.authority().map(|a| a.as_str()))
            .unwrap_or("")
            .trim();
        let (name, mut port) = match raw.rsplit_once(':') {
            Some((n, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                (n.to_string(), p.parse().unwrap_or(80))
            }
            _ => (raw.to_string(), 80),
        };
        if let Some(p) = self
            .headers
            .get("x-forwarded-port")
            .and_then(|v| v.to_str().ok())
        {
            port = p.trim().parse().unwrap_or(port);
        } else if self
            .headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            == Some("https")
        {
            port = 443;
        }
        (name, port)
    }

    fn resource(&self) -> &str {
        self.uri
            .path_and_query()
            .map_or(self.uri.path(), |p| p.as_str())
    }
}

/// A URL parameter and the pattern lib-api checks it against.
pub(crate) struct Param<'a> {
    pub name: &'static str,
    pub value: &'a str,
    pub valid: fn(&str) -> bool,
    pub pattern: &'static str,
}

/// A query-string parameter an endpoint accepts.
#[derive(Clone, Copy)]
pub(crate) struct QueryParam {
    pub name: &'static str,
    pub valid: fn(&str) -> bool,
    pub pattern: &'static str,
}

/// The query parameters of paged listings (`paginateResults.query`).
pub(crate) const PAGING: [QueryParam; 2] = [
    QueryParam {
        name: "continuationToken",
        valid: |v| !v.is_empty(),
        pattern: "/./",
    },
    QueryParam {
        name: "limit",
        valid: |v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()),
        pattern: "/^[0-9]+$/",
    },
];

/// One API method's declaration, as far as the checks before it go.
pub(crate) struct Endpoint<'a> {
    pub name: &'static str,
    /// The scope required, with the URL parameters filled in.
    pub scope: String,
    /// Whether the method declares it as `{AllOf: [scope]}` rather than a
    /// bare string (it shows in the 403 message).
    pub all_of: bool,
    pub params: Vec<Param<'a>>,
    pub query: &'a [QueryParam],
}

/// What passed the checks.
pub(crate) struct Admitted {
    pub caller: Caller,
    pub call_params: Value,
    pub body: Value,
    pub query: Vec<(String, String)>,
}

impl Admitted {
    pub(crate) fn call(&self, name: &'static str) -> Call<'static> {
        Call {
            name,
            params: self.call_params.clone(),
            payload: self.body.clone(),
        }
    }

    pub(crate) fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Runs lib-api's checks for `ep`; the error is the answer to send.
pub(crate) fn admit(shared: &Shared, req: &Req, ep: &Endpoint<'_>) -> Result<Admitted, Refused> {
    let call_params = Value::Object(
        ep.params
            .iter()
            .map(|p| (p.name.to_string(), json!(p.value)))
            .collect::<Map<_, _>>(),
    );
    let call = |payload: Value| Call {
        name: ep.name,
        params: call_params.clone(),
        payload,
    };
    // parseBody: only JSON bodies are read; anything else counts as none.
    let text: &[u8] = if req.is_json() { &req.body } else { b"" };
    let body = if text.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice::<Value>(text) {
            Ok(v @ (Value::Object(_) | Value::Array(_))) => v,
            Ok(_) => {
                return Err(Box::new(reply::error(
                    &call(json!({})),
                    Code::MalformedPayload,
                    "Failed to parse JSON: Must be an object or array",
                )));
            }
            Err(e) => {
                return Err(Box::new(reply::error(
                    &call(json!({})),
                    Code::MalformedPayload,
                    &format!("Failed to parse JSON: {e}"),
                )));
            }
        }
    };
    let call = call(body.clone());

    let (host, port) = req.host_port();
    let signed = Signed {
        method: req.method.as_str(),
        resource: req.resource(),
        host: &host,
        port,
        authorization: req.header(header::AUTHORIZATION),
        content_type: req.content_type(),
        body: text,
    };
    let caller = shared
        .tc
        .clients
        .authenticate(&signed, SystemTime::now())
        .map_err(|m| Box::new(reply::error(&call, Code::AuthenticationFailed, &m)))?;
    if !scopes::satisfies(&caller.scopes, &ep.scope) {
        let required = if ep.all_of {
            format!("{{\n  \"AllOf\": [\n    \"{}\"\n  ]\n}}", ep.scope)
        } else {
            ep.scope.clone()
        };
        let message = match &caller.client_id {
            Some(id) => format!(
                "Client ID {id} does not have sufficient scopes and is missing the following scopes:\n\n```\n{}\n```\n\nThis request requires the client to satisfy the following scope expression:\n\n```\n{required}\n```",
                ep.scope
            ),
            None => format!(
                "This request requires Taskcluster credentials that satisfy the following scope expression:\n\n```\n{required}\n```"
            ),
        };
        return Err(Box::new(reply::error(
            &call,
            Code::InsufficientScopes,
            &message,
        )));
    }

    let bad_params: Vec<String> = ep
        .params
        .iter()
        .filter(|p| !(p.valid)(p.value))
        .map(|p| {
            format!(
                "URL parameter '{}' given as '{}' must match regular expression: '{}'",
                p.name, p.value, p.pattern
            )
        })
        .collect();
    if !bad_params.is_empty() {
        return Err(Box::new(reply::error(
            &call,
            Code::InvalidRequestArguments,
            &format!("Invalid URL patterns:\n{}", bad_params.join("\n")),
        )));
    }

    let query = Query::<Vec<(String, String)>>::try_from_uri(&req.uri)
        .map(|Query(q)| q)
        .unwrap_or_default();
    let mut errors = Vec::new();
    for (i, (key, value)) in query.iter().enumerate() {
        let Some(qp) = ep.query.iter().find(|qp| qp.name == key) else {
            if key != "bewit" {
                errors.push(format!("Query-string parameter: {key} is not supported!"));
            }
            continue;
        };
        if query[..i].iter().any(|(k, _)| k == key) {
            errors.push(format!("Query-string parameter: {key} must be a string!"));
        } else if !(qp.valid)(value) {
            errors.push(format!(
                "Query-string parameter: {key}=\"{value}\" does not match expression: {}",
                qp.pattern
            ));
        }
    }
    if !errors.is_empty() {
        return Err(Box::new(reply::error(
            &call,
            Code::InvalidRequestArguments,
            &errors.join("\n"),
        )));
    }
    Ok(Admitted {
        caller,
        call_params,
        body,
        query,
    })
}

/// One page of `rows` per `limit` and `continuationToken`, as
/// `paginateResults` cuts it: at most `max` rows, and a token whenever
/// more rows follow.
pub(crate) fn page<T>(
    rows: Vec<T>,
    adm: &Admitted,
    max: usize,
    call: &Call<'_>,
) -> Result<(Vec<T>, Option<String>), Refused> {
    let size = adm
        .query("limit")
        .map_or(max, |l| l.parse::<usize>().unwrap_or(usize::MAX))
        .min(max);
    let offset = match adm.query("continuationToken") {
        None => 0,
        Some(t) => hashids::decode_offset(t).map_err(|_| {
            Box::new(reply::error(
                call,
                Code::InputError,
                "Invalid continuation token",
            ))
        })?,
    };
    let offset = usize::try_from(offset).unwrap_or(usize::MAX);
    let mut rows: Vec<T> = rows
        .into_iter()
        .skip(offset)
        .take(size.saturating_add(1))
        .collect();
    let token = if rows.len() > size {
        rows.truncate(size);
        hashids::encode_offset((offset + size) as u64)
    } else {
        None
    };
    Ok((rows, token))
}

/// `{workers, continuationToken?}`.
pub(crate) fn listing(workers: Vec<Value>, token: Option<String>) -> Response {
    let mut body = json!({"workers": workers});
    if let Some(t) = token {
        body["continuationToken"] = json!(t);
    }
    Json(body).into_response()
}
