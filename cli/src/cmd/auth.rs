//! `fleetroll auth`: the signing key and tokens.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context as _;
use fleetroll_bus::Bus;
use fleetroll_bus::codec;
use fleetroll_bus::messages::auth::{Revocation, VerifyingKeyRecord};
use fleetroll_bus::messages::timestamp;
use fleetroll_bus::token::{self, Role, SigningKey};
use fleetroll_bus::topology::{self, auth_keys};
use time::OffsetDateTime;

use crate::args::AuthCommand;
use crate::context::Context;
use crate::exit::{self, fail};

pub async fn run(ctx: &Context, command: AuthCommand) -> anyhow::Result<u8> {
    match command {
        AuthCommand::Init { force } => {
            let path = ctx.signing_key_path();
            if path.exists() && !force {
                return Err(fail(
                    exit::INVALID,
                    format!(
                        "a signing key already exists at {}; refusing to overwrite it (--force replaces it, and every token issued with it stops working)",
                        path.display()
                    ),
                ));
            }
            let key = init_key(&path)?;
            eprintln!("signing key written to {}", path.display());
            match ctx.connect().await {
                Ok(bus) => {
                    publish_verifying_key(&bus, &key).await?;
                    eprintln!("verifying key published on {}", bus.url());
                }
                Err(_) => eprintln!(
                    "NATS at {} is not reachable: the verifying key is published when `fleetroll up` starts",
                    ctx.nats_url()
                ),
            }
            Ok(exit::OK)
        }
        AuthCommand::Issue {
            actor,
            role,
            ttl,
            out,
        } => {
            let key = load_key(ctx)?;
            check_clock(ctx).await?;
            let ttl = time::Duration::try_from(ttl)
                .map_err(|_| fail(exit::INVALID, "token lifetime too long"))?;
            let (jwt, claims) = issue(&key, &actor, role, ttl)?;
            match out {
                Some(path) => {
                    write_private(&path, &jwt)?;
                    eprintln!("token written to {}", path.display());
                }
                None => println!("{jwt}"),
            }
            eprintln!(
                "issued token {} for {} ({}), expires {}",
                claims.jti,
                claims.sub,
                claims.role,
                OffsetDateTime::from_unix_timestamp(claims.exp)
                    .map(timestamp)
                    .unwrap_or_default()
            );
            Ok(exit::OK)
        }
        AuthCommand::Revoke {
            jti,
            actor,
            token,
            reason,
        } => {
            let key = load_key(ctx)?;
            let revoked_key = match (jti, actor, token) {
                (Some(jti), _, _) => auth_keys::revoked_token(&jti),
                (None, Some(actor), _) => auth_keys::revoked_actor(&actor),
                (None, None, Some(path)) => {
                    let jwt = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))
                        .map_err(|e| fail(exit::INVALID, format!("{e:#}")))?;
                    // Only tokens this key issued can be revoked by id.
                    let claims =
                        token::verify(&jwt, &key.verifying_key(), OffsetDateTime::now_utc())
                            .map_err(|d| {
                                fail(exit::INVALID, format!("cannot revoke that token: {d}"))
                            })?;
                    auth_keys::revoked_token(&claims.jti)
                }
                (None, None, None) => {
                    return Err(fail(
                        exit::INVALID,
                        "say what to revoke: --jti, --actor or --token",
                    ));
                }
            };
            let bus = ctx.connect().await?;
            check_clock(ctx).await?;
            let record = Revocation {
                revoked_at: OffsetDateTime::now_utc(),
                reason,
            };
            bus.kv(&topology::AUTH)
                .await?
                .put(revoked_key.as_str(), codec::to_cbor(&record).into())
                .await
                .map_err(|e| fail(exit::INFRASTRUCTURE, format!("writing the revocation: {e}")))?;
            eprintln!("revoked ({revoked_key})");
            Ok(exit::OK)
        }
    }
}

async fn check_clock(ctx: &Context) -> anyhow::Result<()> {
    // Without a reachable mesh there is no server clock to compare with;
    // the workers check again when the token is used.
    if let Ok(bus) = ctx.connect().await
        && let Ok(skew) = fleetroll_bus::clock::measure_skew_ms(&bus).await
    {
        fleetroll_bus::clock::check(skew)?;
    }
    Ok(())
}

pub fn issue(
    key: &SigningKey,
    actor: &str,
    role: Role,
    ttl: time::Duration,
) -> anyhow::Result<(String, token::Claims)> {
    token::issue(key, actor, role, ttl, OffsetDateTime::now_utc())
        .map_err(|e| fail(exit::INVALID, e.to_string()))
}

/// Creates a new signing key file (mode 0600).
pub fn init_key(path: &Path) -> anyhow::Result<SigningKey> {
    let key = SigningKey::generate();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_private(path, &key.to_pem())?;
    Ok(key)
}

pub fn load_key(ctx: &Context) -> anyhow::Result<SigningKey> {
    let path = ctx.signing_key_path();
    let pem = std::fs::read_to_string(&path).map_err(|_| {
        fail(
            exit::INVALID,
            format!(
                "no signing key at {}: run `fleetroll auth init` (or use the data dir that has it)",
                path.display()
            ),
        )
    })?;
    SigningKey::from_pem(&pem).map_err(|e| fail(exit::INVALID, format!("{}: {e}", path.display())))
}

pub async fn publish_verifying_key(bus: &Bus, key: &SigningKey) -> anyhow::Result<()> {
    let record = VerifyingKeyRecord {
        public_key: key.verifying_key().to_base64(),
        published_at: OffsetDateTime::now_utc(),
    };
    bus.kv(&topology::AUTH)
        .await?
        .put(auth_keys::VERIFYING_KEY, codec::to_cbor(&record).into())
        .await
        .map_err(|e| {
            fail(
                exit::INFRASTRUCTURE,
                format!("publishing the verifying key: {e}"),
            )
        })?;
    Ok(())
}

/// Writes a secret readable by its owner only, replacing the file whole.
pub fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    writeln!(file, "{}", contents.trim_end())
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
