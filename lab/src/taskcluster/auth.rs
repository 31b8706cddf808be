//! Who is calling: Hawk authentication as Taskcluster's auth service and
//! lib-api do it, against the double's own clients.
//!
//! A request without `Authorization` is anonymous; a signed one must carry
//! a MAC made with the client's access token over the method, the path with
//! its query, and the host and port of the `Host` header (or
//! `X-Forwarded-Port`), within 15 minutes of the server's clock, and, when
//! the header carries a payload hash, the hash of the body as sent. Every
//! caller, signed or not, also holds the anonymous role's scopes.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::scopes;

/// A client of the double.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    pub access_token: String,
    pub scopes: Vec<String>,
}

/// The double's clients and the anonymous role.
#[derive(Debug, Clone)]
pub(crate) struct Clients {
    pub by_id: BTreeMap<String, Client>,
    pub anonymous: Vec<String>,
}

/// An authenticated (or anonymous) caller and the scopes it holds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Caller {
    /// `None` for anonymous requests.
    pub client_id: Option<String>,
    pub scopes: Vec<String>,
}

/// What the request carried, as the server sees it.
pub(crate) struct Signed<'a> {
    pub method: &'a str,
    /// Path and query as received (`req.originalUrl`).
    pub resource: &'a str,
    pub host: &'a str,
    pub port: u16,
    pub authorization: Option<&'a str>,
    pub content_type: Option<&'a str>,
    /// The body as the API parsed it (empty unless it was JSON).
    pub body: &'a [u8],
}

/// The clock skew Taskcluster tolerates, "similar to AWS".
const SKEW: Duration = Duration::from_secs(15 * 60);

/// Hawk's content-type normalisation for payload hashes.
fn bare_content_type(ct: Option<&str>) -> String {
    ct.and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// The `ext` restrictions the official clients send.
fn restrict(ext: &str, scopes: Vec<String>, anonymous: &[String]) -> Result<Vec<String>, String> {
    let json = STANDARD
        .decode(ext)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .ok_or_else(|| "Failed to parse ext".to_string())?;
    if json.get("certificate").is_some() {
        return Err(
            "ext.certificate: temporary credentials are not supported by the fleetroll-lab Taskcluster double"
                .into(),
        );
    }
    let Some(authorized) = json.get("authorizedScopes") else {
        return Ok(scopes);
    };
    let authorized: Vec<String> = authorized
        .as_array()
        .ok_or("ext.authorizedScopes must be an array")?
        .iter()
        .map(|s| s.as_str().filter(|s| scopes::valid(s)).map(str::to_string))
        .collect::<Option<_>>()
        .ok_or("ext.authorizedScopes must be an array of valid scopes")?;
    let held = scopes::merge(&scopes, anonymous);
    if !authorized.iter().all(|s| scopes::satisfies(&held, s)) {
        return Err(format!(
            "Supplied credentials do not satisfy authorizedScopes; credentials have scopes:\n\n```\n{}\n```\n\nauthorizedScopes are:\n\n```\n{}\n```",
            held.join("\n"),
            authorized.join("\n")
        ));
    }
    Ok(authorized)
}

impl Clients {
    /// Authenticates a request; the error is the `auth-failed` message the
    /// real API puts in its 401 answer.
    pub(crate) fn authenticate(&self, req: &Signed<'_>, now: SystemTime) -> Result<Caller, String> {
        let Some(authorization) = req.authorization else {
            return Ok(Caller {
                client_id: None,
                scopes: self.anonymous.clone(),
            });
        };
        let Some(rest) = authorization.strip_prefix("Hawk ") else {
            return Err("Unauthorized".into());
        };
        let header = hawk::Header::from_str(rest)
            .map_err(|_| "Bad Request: Invalid header syntax".to_string())?;
        let (Some(id), Some(ts), Some(_), Some(_)) =
            (&header.id, header.ts, &header.nonce, &header.mac)
        else {
            return Err("Bad Request: Missing attributes".into());
        };
        let client = self
            .by_id
            .get(id)
            .ok_or_else(|| format!("Client with clientId '{id}' not found"))?;
        let mut held = client.scopes.clone();
        if let Some(ext) = &header.ext {
            held = restrict(ext, held, &self.anonymous)?;
        }
        let key = hawk::Key::new(client.access_token.as_bytes(), hawk::SHA256)
            .map_err(|e| format!("Internal: {e}"))?;
        let request =
            hawk::RequestBuilder::new(req.method, req.host, req.port, req.resource).request();
        // The MAC first, with any timestamp, so a bad signature and a stale
        // one are told apart as Hawk does.
        if !request.validate_header(&header, &key, Duration::from_secs(u64::MAX / 4)) {
            return Err("Unauthorized: Bad mac".into());
        }
        let skew = match now.duration_since(ts) {
            Ok(d) => d,
            Err(e) => e.duration(),
        };
        if skew > SKEW {
            return Err("Unauthorized: Stale timestamp".into());
        }
        if let Some(sent) = &header.hash {
            let computed = hawk::PayloadHasher::hash(
                bare_content_type(req.content_type),
                hawk::SHA256,
                req.body,
            )
            .map_err(|e| format!("Internal: {e}"))?;
            if &computed != sent {
                // `{{hash}}` stays as is: the real API's message template
                // has no value for it.
                return Err(format!(
                    "Invalid payload hash: {{{{hash}}}}\nComputed payload hash: {}\nThis happens when your request carries a signed hash of the payload and the hash doesn't match the hash we've computed on the server-side.",
                    STANDARD.encode(&computed)
                ));
            }
        }
        Ok(Caller {
            client_id: Some(id.clone()),
            scopes: scopes::merge(&held, &self.anonymous),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clients() -> Clients {
        let mut by_id = BTreeMap::new();
        by_id.insert(
            "project/x".to_string(),
            Client {
                access_token: "secret-token".into(),
                scopes: vec!["queue:quarantine-worker:*".into()],
            },
        );
        Clients {
            by_id,
            anonymous: vec!["queue:get-worker:*".into()],
        }
    }

    fn sign(path: &str, body: Option<&[u8]>, token: &str, ts: SystemTime) -> String {
        let creds = hawk::Credentials {
            id: "project/x".into(),
            key: hawk::Key::new(token, hawk::SHA256).unwrap(),
        };
        let hash =
            body.map(|b| hawk::PayloadHasher::hash("application/json", hawk::SHA256, b).unwrap());
        let mut r = hawk::RequestBuilder::new("PUT", "127.0.0.1", 8080, path);
        if let Some(h) = &hash {
            r = r.hash(&h[..]);
        }
        let header = r
            .request()
            .make_header_full(&creds, ts, "nonce123".to_string())
            .unwrap();
        format!("Hawk {header}")
    }

    fn req<'a>(auth: Option<&'a str>, path: &'a str, body: &'a [u8]) -> Signed<'a> {
        Signed {
            method: "PUT",
            resource: path,
            host: "127.0.0.1",
            port: 8080,
            authorization: auth,
            content_type: Some("application/json; charset=utf-8"),
            body,
        }
    }

    #[test]
    fn verifies_hawk_like_taskcluster() {
        let c = clients();
        let now = SystemTime::now();
        let body = br#"{"quarantineUntil":"2030-01-01T00:00:00.000Z"}"#;
        let good = sign("/p", Some(body), "secret-token", now);
        let caller = c.authenticate(&req(Some(&good), "/p", body), now).unwrap();
        assert_eq!(caller.client_id.as_deref(), Some("project/x"));
        assert!(scopes::satisfies(
            &caller.scopes,
            "queue:get-worker:a/b/c/d"
        ));

        let anon = c.authenticate(&req(None, "/p", body), now).unwrap();
        assert_eq!(anon.client_id, None);

        let wrong_key = sign("/p", Some(body), "other", now);
        let err = c
            .authenticate(&req(Some(&wrong_key), "/p", body), now)
            .unwrap_err();
        assert_eq!(err, "Unauthorized: Bad mac");
        let err = c
            .authenticate(&req(Some(&good), "/q", body), now)
            .unwrap_err();
        assert_eq!(err, "Unauthorized: Bad mac");
        let err = c
            .authenticate(&req(Some(&good), "/p", br#"{"quarantineUntil":"x"}"#), now)
            .unwrap_err();
        assert!(err.starts_with("Invalid payload hash"), "{err}");
        let old = sign(
            "/p",
            Some(body),
            "secret-token",
            now - Duration::from_secs(3600),
        );
        let err = c
            .authenticate(&req(Some(&old), "/p", body), now)
            .unwrap_err();
        assert_eq!(err, "Unauthorized: Stale timestamp");
        let err = c
            .authenticate(&req(Some("Basic abc"), "/p", body), now)
            .unwrap_err();
        assert_eq!(err, "Unauthorized");
        let err = c
            .authenticate(&req(Some("Hawk garbage"), "/p", body), now)
            .unwrap_err();
        assert_eq!(err, "Bad Request: Invalid header syntax");
        let unknown = good.replace("project/x", "project/y");
        let err = c
            .authenticate(&req(Some(&unknown), "/p", body), now)
            .unwrap_err();
        assert_eq!(err, "Client with clientId 'project/y' not found");
    }
}
