//! Tokens as workers meet them: any text is refused with a denial or
//! verifies to claims that hold, and the unverified reading of a genuine
//! token names the same actor and token id.

#![no_main]

use fleetroll_bus::token::{self, SigningKey, VerifyingKey};
use libfuzzer_sys::fuzz_target;
use time::OffsetDateTime;

/// A key made for fuzzing only, fixed so the seed tokens under
/// `corpus/token` (issued at `NOW`) keep verifying.
const KEY: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIBDZVRY4Sl6WwdsB3R6oAxwW1MKxycl4QMIASUbFDl3N
-----END PRIVATE KEY-----
";
const NOW: i64 = 1_790_000_000;

fn check(text: &str) {
    let key = SigningKey::from_pem(KEY)
        .expect("the fuzzing key")
        .verifying_key();
    let now = OffsetDateTime::from_unix_timestamp(NOW).expect("a fixed time");
    if let Ok(claims) = token::verify(text, &key, now) {
        assert_eq!(claims.iss, "fleetroll");
        assert!(claims.exp > NOW, "expired claims verified: {claims:?}");
        assert_eq!(
            token::unverified_claims(text),
            Some((claims.sub.clone(), claims.jti.clone())),
            "{claims:?}"
        );
    }
    let _ = token::unverified_claims(text);
    let _ = VerifyingKey::from_base64(text);
    let _ = SigningKey::from_pem(text);
}

fuzz_target!(|text: &str| {
    let text = text.to_owned();
    fleetroll_fuzz::on_worker_stack(move || check(&text));
});
