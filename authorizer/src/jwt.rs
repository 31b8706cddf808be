//! NATS JWTs, as nats-server reads them: `ed25519-nkey` signatures by an
//! account key, claims hashed into their `jti`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::Digest as _;

/// Signs `claims` (their `iss` and `jti` filled in here) with `issuer`.
pub fn encode(mut claims: Value, issuer: &nkeys::KeyPair) -> Result<String, nkeys::error::Error> {
    claims["iss"] = Value::String(issuer.public_key());
    claims["jti"] = Value::String(String::new());
    let hashed = serde_json::to_vec(&claims).expect("JSON of JSON");
    let jti = data_encoding::BASE32_NOPAD.encode(&sha2::Sha512_256::digest(&hashed));
    claims["jti"] = Value::String(jti);
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("JSON of JSON"));
    let signed = format!("{header}.{payload}");
    let signature = issuer.sign(signed.as_bytes())?;
    Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

/// The claims of a JWT, unverified (the server's own request comes on a
/// subject only the server publishes on).
pub fn claims(jwt: &str) -> Option<Value> {
    let payload = jwt.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

/// A user's claims: who, until when, and what it may do.
pub fn user(
    user_nkey: &str,
    name: &str,
    expires: i64,
    now: i64,
    permissions: &crate::permissions::Permissions,
) -> Value {
    let mut nats = json!({
        "pub": {"allow": permissions.publish_allow, "deny": permissions.publish_deny},
        "sub": {"allow": permissions.subscribe_allow},
        "subs": -1,
        "data": -1,
        "payload": -1,
        "type": "user",
        "version": 2,
    });
    if permissions.allow_responses {
        nats["resp"] = json!({"max": 1, "ttl": 0});
    }
    json!({
        "aud": "$G",
        "sub": user_nkey,
        "name": name,
        "iat": now,
        "exp": expires,
        "nats": nats,
    })
}

/// The answer to one authorization request: the user JWT, or why not.
pub fn response(user_nkey: &str, server: &str, now: i64, answer: Result<String, String>) -> Value {
    let mut nats = json!({"type": "authorization_response", "version": 2});
    match answer {
        Ok(jwt) => nats["jwt"] = Value::String(jwt),
        Err(why) => nats["error"] = Value::String(why),
    }
    json!({"aud": server, "sub": user_nkey, "iat": now, "nats": nats})
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What nats-server checks of a JWT: the issuer's signature over
    /// header and claims, the issuer named in them, and the claims' hash
    /// as their `jti`.
    #[test]
    fn a_jwt_carries_its_issuer_signature_and_hash() {
        let issuer = nkeys::KeyPair::new_account();
        let jwt = encode(json!({"sub": "UABC", "nats": {"type": "user"}}), &issuer).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let public = nkeys::KeyPair::from_public_key(&issuer.public_key()).unwrap();
        let signed = format!("{}.{}", parts[0], parts[1]);
        public.verify(signed.as_bytes(), &signature).unwrap();
        assert!(public.verify(b"something else", &signature).is_err());
        let mut claims = claims(&jwt).unwrap();
        assert_eq!(claims["iss"], issuer.public_key());
        let jti = claims["jti"].as_str().unwrap().to_string();
        claims["jti"] = Value::String(String::new());
        let hashed = serde_json::to_vec(&claims).unwrap();
        assert_eq!(
            jti,
            data_encoding::BASE32_NOPAD.encode(&sha2::Sha512_256::digest(&hashed))
        );
    }
}
