//! Read queries: a NATS service (`nats micro ls` lists it) with endpoints
//! under `fleetroll.query.>`. Requests carry a token in an
//! `Authorization: Bearer <jwt>` header; a request with
//! `Accept: application/json` gets JSON, anything else CBOR. Parameters
//! come as JSON or CBOR (`Content-Type`), or empty for none.
//!
//! A chatops bot needs nothing of this crate: with the `nats` CLI,
//! `nats req fleetroll.query.seeds.list '' -H 'Accept: application/json' -H "Authorization: Bearer $TOKEN"`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::service::{self, ServiceExt};
use futures::StreamExt;
use tracing::{Instrument, info_span, warn};

use crate::codec::{self, Message};
use crate::connect::{Bus, BusError};
use crate::subjects;
use crate::token::{Claims, Role};
use crate::verify::VerifyError;
use crate::worker::Replica;

pub const AUTHORIZATION: &str = "Authorization";
pub const ACCEPT: &str = "Accept";
pub const CONTENT_TYPE: &str = "Content-Type";
pub const JSON: &str = "application/json";

/// Every role may read.
pub const READERS: &[Role] = &[Role::Relops, Role::Readonly, Role::Chatops, Role::Worker];

/// Why a query handler could not answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Invalid(String),
    /// What was asked for does not exist (an unknown host or rollout).
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Failed(String),
}

impl From<BusError> for QueryError {
    fn from(e: BusError) -> Self {
        QueryError::Failed(e.to_string())
    }
}

/// Status codes carried in `Nats-Service-Error-Code`.
pub mod codes {
    pub const INVALID: usize = 400;
    pub const DENIED: usize = 403;
    pub const NOT_FOUND: usize = 404;
    pub const FAILED: usize = 500;
}

/// One replica's query service.
pub struct QueryService {
    service: service::Service,
    replica: Replica,
}

impl QueryService {
    /// Registers the service `fleetroll-<kind>` for this replica.
    pub async fn start(replica: &Replica) -> Result<QueryService, BusError> {
        let service = replica
            .bus
            .client
            .service_builder()
            .description(format!("fleetroll {} read queries", replica.kind))
            .start(
                format!("fleetroll-{}", replica.kind),
                env!("CARGO_PKG_VERSION"),
            )
            .await
            .map_err(|e| BusError::js("starting the query service", e))?;
        Ok(QueryService {
            service,
            replica: replica.clone(),
        })
    }

    /// Serves `endpoint` (e.g. [`subjects::queries::SEEDS_LIST`]) with
    /// `handler` until the service stops.
    pub async fn serve<P, R, F, Fut>(
        &self,
        endpoint: &'static str,
        handler: F,
    ) -> Result<(), BusError>
    where
        P: Message + Default + Send + 'static,
        R: Message + Send + 'static,
        F: Fn(Claims, P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, QueryError>> + Send + 'static,
    {
        let mut requests = self
            .service
            .group(subjects::QUERY_GROUP)
            .endpoint(endpoint)
            .await
            .map_err(|e| BusError::js(format!("adding query endpoint {endpoint}"), e))?;
        let handler = Arc::new(handler);
        let replica = self.replica.clone();
        tokio::spawn(async move {
            while let Some(request) = requests.next().await {
                let handler = handler.clone();
                let replica = replica.clone();
                let span = info_span!("query", endpoint, instance = %replica.instance);
                tokio::spawn(
                    async move {
                        let (response, json) =
                            answer(&replica, &request.message, handler.as_ref()).await;
                        let mut headers = async_nats::HeaderMap::new();
                        if json {
                            headers.insert(CONTENT_TYPE, JSON);
                        }
                        if let Err(e) = request.respond_with_headers(response, headers).await {
                            warn!(error = %e, "query answer not sent");
                        }
                    }
                    .instrument(span),
                );
            }
        });
        Ok(())
    }
}

fn header<'a>(message: &'a async_nats::Message, name: &str) -> Option<&'a str> {
    message.headers.as_ref()?.get(name).map(|v| v.as_str())
}

async fn answer<P, R, F, Fut>(
    replica: &Replica,
    message: &async_nats::Message,
    handler: &F,
) -> (Result<bytes::Bytes, service::error::Error>, bool)
where
    P: Message + Default,
    R: Message,
    F: Fn(Claims, P) -> Fut,
    Fut: Future<Output = Result<R, QueryError>>,
{
    let json = header(message, ACCEPT).is_some_and(|a| a.contains(JSON));
    let error = |code: usize, status: String| Err(service::error::Error { status, code });
    let token = header(message, AUTHORIZATION)
        .map(|v| v.trim_start_matches("Bearer ").trim())
        .unwrap_or("");
    let claims = match replica
        .verifier
        .check(token, READERS, message.subject.as_str())
        .await
    {
        Ok(claims) => claims,
        Err(VerifyError::Denied { denial, .. }) => {
            return (error(codes::DENIED, denial.to_string()), json);
        }
        Err(VerifyError::Bus(e)) => return (error(codes::FAILED, e.to_string()), json),
    };
    let params = if message.payload.is_empty() {
        Ok(P::default())
    } else if header(message, CONTENT_TYPE).is_some_and(|c| c.contains(JSON)) {
        codec::from_json::<P>(&message.payload)
    } else {
        codec::from_cbor::<P>(&message.payload)
    };
    let params = match params {
        Ok(params) => params,
        Err(e) => return (error(codes::INVALID, e.to_string()), json),
    };
    let response = match handler(claims, params).await {
        Ok(reply) if json => Ok(codec::to_json(&reply).into()),
        Ok(reply) => Ok(codec::to_cbor(&reply).into()),
        Err(QueryError::Invalid(m)) => error(codes::INVALID, m),
        Err(QueryError::NotFound(m)) => error(codes::NOT_FOUND, m),
        Err(QueryError::Failed(m)) => error(codes::FAILED, m),
    };
    (response, json)
}

/// Why a query got no answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryFailure {
    #[error("nothing serves {subject}: no live worker answers this query (see `fleetroll status`)")]
    NoResponders { subject: String },
    #[error("{subject} did not answer within {waited:?}")]
    TimedOut { subject: String, waited: Duration },
    #[error("query refused: {0}")]
    Denied(String),
    #[error("invalid query: {0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("query failed: {0}")]
    Failed(String),
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// How long a query goes unanswered before it is asked again: most answers
/// take milliseconds, so by then the replica that took it is likely gone.
const ASK_AGAIN_AFTER: Duration = Duration::from_secs(1);

/// Asks `endpoint` with `params` and decodes the CBOR answer.
pub async fn request<P: Message, R: Message>(
    bus: &Bus,
    token: &str,
    endpoint: &str,
    params: &P,
    wait: Duration,
) -> Result<R, QueryFailure> {
    let subject = subjects::query(endpoint);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(AUTHORIZATION, format!("Bearer {token}").as_str());
    let payload: bytes::Bytes = codec::to_cbor(params).into();
    let ask = |timeout: Duration| {
        let request = async_nats::Request::new()
            .headers(headers.clone())
            .payload(payload.clone())
            .timeout(Some(timeout));
        bus.client.send_request(subject.clone(), request)
    };
    let hedged = async {
        let first = ask(wait);
        tokio::pin!(first);
        if wait <= ASK_AGAIN_AFTER {
            return first.await;
        }
        tokio::select! {
            reply = &mut first => reply,
            _ = tokio::time::sleep(ASK_AGAIN_AFTER) => {
                // The replica that took the request may have died with it:
                // NATS loses such a request rather than hand it to another.
                // A read asked twice does no harm; the first answer counts.
                let second = ask(wait - ASK_AGAIN_AFTER);
                tokio::select! {
                    reply = &mut first => reply,
                    reply = second => reply,
                }
            }
        }
    };
    // A NATS user not allowed to ask is told at once, not after `wait`.
    let reply = bus
        .unless_refused(&format!("the query {subject}"), &subject, hedged)
        .await?
        .map_err(|e| match e.kind() {
            async_nats::RequestErrorKind::NoResponders => QueryFailure::NoResponders {
                subject: subject.clone(),
            },
            async_nats::RequestErrorKind::TimedOut => QueryFailure::TimedOut {
                subject: subject.clone(),
                waited: wait,
            },
            _ => BusError::js(format!("query {subject}"), e).into(),
        })?;
    if let Some(code) = header(&reply, service::NATS_SERVICE_ERROR_CODE) {
        let status = header(&reply, service::NATS_SERVICE_ERROR)
            .unwrap_or("")
            .to_string();
        return Err(match code.parse::<usize>().unwrap_or(codes::FAILED) {
            codes::DENIED => QueryFailure::Denied(status),
            codes::INVALID => QueryFailure::Invalid(status),
            codes::NOT_FOUND => QueryFailure::NotFound(status),
            _ => QueryFailure::Failed(status),
        });
    }
    codec::from_cbor(&reply.payload).map_err(|source| {
        BusError::Decode {
            place: format!("answer of {subject}"),
            source,
        }
        .into()
    })
}
