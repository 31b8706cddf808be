//! Signed tokens: who is acting, in which role, until when.
//!
//! Tokens are JWTs signed with Ed25519 (`EdDSA`). The operator holds the
//! private key (`fleetroll auth init`); workers only ever see the public
//! half, so a compromised worker cannot mint tokens.
//!
//! ```
//! use fleetroll_bus::token::{self, Role, SigningKey};
//! use time::{Duration, OffsetDateTime};
//!
//! let key = SigningKey::generate();
//! let now = OffsetDateTime::now_utc();
//! let (jwt, claims) = token::issue(&key, "alice", Role::Relops, Duration::hours(8), now, None).unwrap();
//! let verified = token::verify(&jwt, &key.verifying_key(), now).unwrap();
//! assert_eq!(verified, claims);
//! assert!(token::verify(&jwt, &SigningKey::generate().verifying_key(), now).is_err());
//! ```

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::messages::command::Denial;

const ISSUER: &str = "fleetroll";

/// Who may do what (SPEC 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// May mutate.
    Relops,
    /// Oncall and stakeholders: read only.
    Readonly,
    /// Bots: read queries only.
    Chatops,
    /// The workers themselves.
    Worker,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Relops, Role::Readonly, Role::Chatops, Role::Worker];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Relops => "relops",
            Role::Readonly => "readonly",
            Role::Chatops => "chatops",
            Role::Worker => "worker",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role `{s}` (relops, readonly, chatops, worker)"))
    }
}

/// The claims of a fleetroll token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The actor.
    pub sub: String,
    pub role: Role,
    /// Token id, for revocation.
    pub jti: String,
    pub iss: String,
    pub iat: i64,
    pub exp: i64,
    /// The holder's public key (base64url Ed25519), when the token is bound
    /// to one: every command envelope must then be signed with its private
    /// half, so a token captured off the wire or out of an envelope sends
    /// nothing (proof of possession).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<String>,
}

/// A token as a client presents it: the token, and the key it is bound to
/// when it is (see [`Claims::cnf`]).
#[derive(Clone)]
pub struct Credential {
    pub token: String,
    pub holder: Option<SigningKey>,
}

impl Credential {
    /// A token bound to no key: whoever holds it may use it.
    pub fn bearer(token: impl Into<String>) -> Credential {
        Credential {
            token: token.into(),
            holder: None,
        }
    }
}

impl Claims {
    /// The inbox prefix of this token's holder on a NATS with the auth
    /// callout: the authorizer lets each actor subscribe to its own only,
    /// so one operator cannot read the replies another's queries get.
    /// The actor is hex-encoded: it may hold `.` and other characters a
    /// subject token may not.
    pub fn inbox_prefix(&self) -> String {
        format!("_INBOX_{}_{}", self.role, crate::subjects::hex(&self.sub))
    }
}

/// Where a long-running process's own token comes from.
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// A token given to the process; when it expires, answers say so.
    Fixed(String),
    /// The token in this file, read at each use (each query, each NATS
    /// connect), so a token renewed on disk (`fleetroll up` renews
    /// `<data-dir>/web.token`; `fleetroll auth issue --out` writes one) is
    /// used at once, without a restart.
    File(std::path::PathBuf),
}

/// A [`TokenSource`] gave no token.
#[derive(Debug, thiserror::Error)]
pub enum TokenSourceError {
    #[error("cannot read the token file {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the token file {path} is empty")]
    Empty { path: std::path::PathBuf },
    #[error("the token is bound to a holder key, which should be in {path}: {source}")]
    HolderKey {
        path: std::path::PathBuf,
        #[source]
        source: KeyError,
    },
}

/// The holder key of the token in `token_file` ([`holder_key_path`]).
pub fn read_holder_key(token_file: &std::path::Path) -> Result<SigningKey, TokenSourceError> {
    let path = holder_key_path(token_file);
    let pem = std::fs::read_to_string(&path).map_err(|e| TokenSourceError::HolderKey {
        path: path.clone(),
        source: KeyError::BadPrivateKey(e.to_string()),
    })?;
    SigningKey::from_pem(&pem).map_err(|source| TokenSourceError::HolderKey { path, source })
}

/// Where the holder key of the token in `token_file` is kept: beside it,
/// in `<file>.key`.
pub fn holder_key_path(token_file: &std::path::Path) -> std::path::PathBuf {
    let mut name = token_file.as_os_str().to_os_string();
    name.push(".key");
    std::path::PathBuf::from(name)
}

impl TokenSource {
    /// The token to use now.
    pub fn token(&self) -> Result<String, TokenSourceError> {
        match self {
            TokenSource::Fixed(token) => Ok(token.clone()),
            TokenSource::File(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| TokenSourceError::Read {
                        path: path.clone(),
                        source,
                    })?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(TokenSourceError::Empty { path: path.clone() });
                }
                Ok(token.to_string())
            }
        }
    }
}

impl TokenSource {
    /// The token to use now, with its holder key when it is bound to one
    /// (read from beside a token file; a token given inline has none).
    pub fn credential(&self) -> Result<Credential, TokenSourceError> {
        let token = self.token()?;
        let bound = peek(&token).is_some_and(|claims| claims.cnf.is_some());
        let TokenSource::File(file) = self else {
            return Ok(Credential::bearer(token));
        };
        if !bound {
            return Ok(Credential::bearer(token));
        }
        Ok(Credential {
            token,
            holder: Some(read_holder_key(file)?),
        })
    }
}

/// The claims of a token, unverified: what a client may read of its own
/// token (its id, its holder key) before any worker has checked it.
pub fn peek(jwt: &str) -> Option<Claims> {
    payload(jwt)
}

/// A JWT's claims as `T`, unverified.
fn payload<T: serde::de::DeserializeOwned>(jwt: &str) -> Option<T> {
    let payload = jwt.trim().split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

/// Errors of key handling and issuing.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the signing key file is not an Ed25519 PKCS#8 PEM key: {0}")]
    BadPrivateKey(String),
    #[error("the verifying key is not a base64url Ed25519 public key: {0}")]
    BadPublicKey(String),
    #[error("actor `{0}` is not valid: use 1-64 characters of letters, digits and . _ @ -")]
    BadActor(String),
    #[error("token lifetime must be between 1 minute and 30 days")]
    BadTtl,
    #[error("signing failed: {0}")]
    Signing(String),
}

/// The operator's private key (or a token holder's).
#[derive(Clone)]
pub struct SigningKey(ed25519_dalek::SigningKey);

impl SigningKey {
    pub fn generate() -> Self {
        SigningKey(ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng))
    }

    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
            .map(SigningKey)
            .map_err(|e| KeyError::BadPrivateKey(e.to_string()))
    }

    pub fn to_pem(&self) -> String {
        self.0
            .to_pkcs8_pem(Default::default())
            .map(|pem| pem.to_string())
            .expect("PKCS#8 encoding of an in-memory Ed25519 key")
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey(self.0.verifying_key().to_bytes())
    }

    /// An Ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer;
        self.0.sign(message).to_bytes()
    }
}

/// The public half that workers verify with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyingKey([u8; 32]);

impl VerifyingKey {
    /// base64url without padding, as in a JWK's `x`.
    pub fn to_base64(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Whether `signature` is this key's signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = ed25519_dalek::Signature::from_slice(signature) else {
            return false;
        };
        ed25519_dalek::VerifyingKey::from_bytes(&self.0)
            .is_ok_and(|key| key.verify_strict(message, &signature).is_ok())
    }

    /// Whether `signature`, base64url without padding (as envelopes and
    /// NATS connections carry it), is this key's signature of `message`.
    pub fn verify_base64(&self, message: &[u8], signature: &str) -> bool {
        URL_SAFE_NO_PAD
            .decode(signature)
            .is_ok_and(|signature| self.verify(message, &signature))
    }

    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|e| KeyError::BadPublicKey(e.to_string()))?;
        let array: [u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError::BadPublicKey("not 32 bytes".into()))?;
        Ok(VerifyingKey(array))
    }
}

fn valid_actor(actor: &str) -> bool {
    (1..=64).contains(&actor.len())
        && actor
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'))
}

/// Issues a token for `actor` in `role`, valid for `ttl` from `now`, bound
/// to `holder`'s key when given.
pub fn issue(
    key: &SigningKey,
    actor: &str,
    role: Role,
    ttl: time::Duration,
    now: OffsetDateTime,
    holder: Option<&VerifyingKey>,
) -> Result<(String, Claims), KeyError> {
    if !valid_actor(actor) {
        return Err(KeyError::BadActor(actor.to_string()));
    }
    if ttl < time::Duration::minutes(1) || ttl > time::Duration::days(30) {
        return Err(KeyError::BadTtl);
    }
    let claims = Claims {
        sub: actor.to_string(),
        role,
        jti: uuid::Uuid::new_v4().to_string(),
        iss: ISSUER.to_string(),
        iat: now.unix_timestamp(),
        exp: (now + ttl).unix_timestamp(),
        cnf: holder.map(VerifyingKey::to_base64),
    };
    let der = key
        .0
        .to_pkcs8_der()
        .map_err(|e| KeyError::Signing(e.to_string()))?;
    let jwt = jsonwebtoken::encode(
        &Header::new(Algorithm::EdDSA),
        &claims,
        &EncodingKey::from_ed_der(der.as_bytes()),
    )
    .map_err(|e| KeyError::Signing(e.to_string()))?;
    Ok((jwt, claims))
}

/// Verifies signature, issuer and expiry against `now`. Revocation needs the
/// auth bucket and is checked by the caller.
pub fn verify(jwt: &str, key: &VerifyingKey, now: OffsetDateTime) -> Result<Claims, Denial> {
    let claims = decode(jwt, key)?;
    check_expiry(&claims, now)?;
    Ok(claims)
}

/// Verifies signature and issuer only: the claims are genuine, whether or
/// not they are still valid.
pub fn decode(jwt: &str, key: &VerifyingKey) -> Result<Claims, Denial> {
    let jwt = jwt.trim();
    if jwt.is_empty() {
        return Err(Denial::Missing);
    }
    let mut validation = Validation::new(Algorithm::EdDSA);
    // Expiry is checked by `check_expiry` against the caller's `now`, which
    // the clock guard has vouched for.
    validation.validate_exp = false;
    validation.required_spec_claims = ["exp", "sub", "iss"]
        .into_iter()
        .map(String::from)
        .collect();
    validation.set_issuer(&[ISSUER]);
    jsonwebtoken::decode::<Claims>(jwt, &DecodingKey::from_ed_der(&key.0), &validation)
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature
            | ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidEddsaKey => Denial::Forged,
            _ => Denial::Garbled {
                detail: e.to_string(),
            },
        })
}

/// Refuses genuine claims that expired by `now`.
pub fn check_expiry(claims: &Claims, now: OffsetDateTime) -> Result<(), Denial> {
    if claims.exp <= now.unix_timestamp() {
        let expired_at = OffsetDateTime::from_unix_timestamp(claims.exp)
            .map(crate::messages::timestamp)
            .unwrap_or_else(|_| claims.exp.to_string());
        return Err(Denial::Expired { expired_at });
    }
    Ok(())
}

/// The actor and token id a token claims, *without* checking anything: for
/// the record of a refusal, and to name a token to revoke. Never trust it.
pub fn unverified_claims(jwt: &str) -> Option<(String, String)> {
    #[derive(Deserialize)]
    struct Claimed {
        sub: String,
        #[serde(default)]
        jti: String,
    }
    let claimed: Claimed = payload(jwt)?;
    valid_actor(&claimed.sub).then_some((claimed.sub, claimed.jti))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifying_key_round_trips_through_base64() {
        let key = SigningKey::generate().verifying_key();
        assert_eq!(VerifyingKey::from_base64(&key.to_base64()).unwrap(), key);
        assert!(VerifyingKey::from_base64("!!").is_err());
    }

    #[test]
    fn signing_key_round_trips_through_pem() {
        let key = SigningKey::generate();
        let again = SigningKey::from_pem(&key.to_pem()).unwrap();
        assert_eq!(again.verifying_key(), key.verifying_key());
    }

    #[test]
    fn denials_say_which() {
        let key = SigningKey::generate();
        let now = OffsetDateTime::now_utc();
        let (jwt, _) = issue(
            &key,
            "alice",
            Role::Relops,
            time::Duration::minutes(5),
            now,
            None,
        )
        .unwrap();
        let later = now + time::Duration::minutes(6);
        assert!(matches!(
            verify(&jwt, &key.verifying_key(), later),
            Err(Denial::Expired { .. })
        ));
        assert_eq!(
            verify(&jwt, &SigningKey::generate().verifying_key(), now),
            Err(Denial::Forged)
        );
        assert!(matches!(
            verify("not.a.token", &key.verifying_key(), now),
            Err(Denial::Garbled { .. })
        ));
        assert_eq!(verify("", &key.verifying_key(), now), Err(Denial::Missing));
        // A token whose payload was edited keeps a signature that no longer matches.
        let mut parts: Vec<String> = jwt.split('.').map(String::from).collect();
        let forged_claims = URL_SAFE_NO_PAD.encode(
            serde_json::json!({"sub":"mallory","role":"relops","jti":"x","iss":"fleetroll","iat":0,"exp":i64::MAX})
                .to_string()
                .as_bytes(),
        );
        parts[1] = forged_claims;
        assert_eq!(
            verify(&parts.join("."), &key.verifying_key(), now),
            Err(Denial::Forged)
        );
    }

    #[test]
    fn issue_refuses_bad_actor_and_ttl() {
        let key = SigningKey::generate();
        let now = OffsetDateTime::now_utc();
        assert!(
            issue(
                &key,
                "a b",
                Role::Relops,
                time::Duration::hours(1),
                now,
                None
            )
            .is_err()
        );
        assert!(
            issue(
                &key,
                "a",
                Role::Relops,
                time::Duration::days(365),
                now,
                None
            )
            .is_err()
        );
    }

    /// An envelope signed by the holder key proves itself; any change to it,
    /// a missing proof or another key's does not.
    #[test]
    fn an_envelope_proves_only_what_its_holder_signed() {
        use crate::messages::command::{Command, CommandEnvelope};
        let holder = SigningKey::generate();
        let now = OffsetDateTime::now_utc();
        let (jwt, claims) = issue(
            &SigningKey::generate(),
            "alice",
            Role::Relops,
            time::Duration::hours(1),
            now,
            Some(&holder.verifying_key()),
        )
        .unwrap();
        assert_eq!(claims.cnf, Some(holder.verifying_key().to_base64()));
        assert_eq!(peek(&jwt).and_then(|c| c.cnf), claims.cnf);
        let seed = |host: &str| Command::SeedAdd {
            hostnames: vec![host.into()],
        };
        let mut envelope = CommandEnvelope {
            id: uuid::Uuid::now_v7().to_string(),
            token: jwt,
            sent_at: now,
            deadline: now + time::Duration::minutes(1),
            command: seed("a.example.com"),
            proof: None,
        };
        assert!(!envelope.proven_by(&holder.verifying_key()), "no proof");
        envelope.prove(&holder);
        assert!(envelope.proven_by(&holder.verifying_key()));
        // It survives the wire.
        let decoded: CommandEnvelope =
            crate::codec::from_cbor(&crate::codec::to_cbor(&envelope)).unwrap();
        assert!(decoded.proven_by(&holder.verifying_key()));
        assert!(!envelope.proven_by(&SigningKey::generate().verifying_key()));
        let changes: [fn(&mut CommandEnvelope); 4] = [
            |e| {
                e.command = Command::SeedAdd {
                    hostnames: vec!["b.example.com".into()],
                }
            },
            |e| e.id = uuid::Uuid::now_v7().to_string(),
            |e| e.deadline += time::Duration::days(1),
            |e| e.sent_at -= time::Duration::nanoseconds(1),
        ];
        for change in changes {
            let mut altered = envelope.clone();
            change(&mut altered);
            assert!(!altered.proven_by(&holder.verifying_key()), "{altered:?}");
        }
    }
}
