//! `fleetroll auth`: the signing key and tokens.

use crate::term::{say, tell};
use std::path::Path;

use anyhow::Context as _;
use fleetroll_bus::Bus;
use fleetroll_bus::codec;
use fleetroll_bus::connect::BusError;
use fleetroll_bus::messages::audit::key_id;
use fleetroll_bus::messages::auth::VerifyingKeyRecord;
use fleetroll_bus::messages::command::{Command, Reply, RevokeTarget, Verdict};
use fleetroll_bus::messages::timestamp;
use fleetroll_bus::token::{self, Role, SigningKey};
use fleetroll_bus::topology::{self, auth_keys};
use time::OffsetDateTime;

use crate::args::AuthCommand;
use crate::cmd::{COMMAND_WAIT, report_failure, send};
use crate::context::Context;
use crate::exit::{self, fail};

pub async fn run(ctx: &Context, command: AuthCommand) -> anyhow::Result<u8> {
    match command {
        AuthCommand::Publish => {
            let bus = ctx.connect().await?;
            publish_keys(&bus, &load_key(ctx)?, &audit_key(ctx)?).await?;
            Ok(exit::OK)
        }
        AuthCommand::CalloutKey { out } => {
            let key = nkeys::KeyPair::new_account();
            let seed = key
                .seed()
                .map_err(|e| fail(exit::INTERNAL, format!("an account key: {e}")))?;
            if out.exists() {
                return Err(fail(
                    exit::INVALID,
                    format!("{} exists: refusing to replace it", out.display()),
                ));
            }
            write_private(&out, &seed)?;
            tell!(
                "callout key written to {}; its public half, for `auth_callout {{ issuer }}`:",
                out.display()
            );
            say!("{}", key.public_key());
            Ok(exit::OK)
        }
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
            tell!("signing key written to {}", path.display());
            write_verifying_key(ctx, &key)?;
            let audit_path = ctx.audit_key_path();
            let audit_key = init_key(&audit_path)?;
            trust_audit_key(ctx, &audit_key)?;
            tell!(
                "audit key {} written to {} (the auditor signs records with it)",
                key_id(&audit_key.verifying_key()),
                audit_path.display()
            );
            match ctx.connect().await {
                Ok(bus) => publish_keys(&bus, &key, &audit_key).await?,
                Err(e) if unreachable(&e) => tell!(
                    "NATS at {} is not reachable: the verifying key is published when `fleetroll up` starts",
                    ctx.nats_url()
                ),
                Err(e) if refused(&e) => tell!(
                    "NATS at {} does not let this token in ({e:#}): publish the keys with `fleetroll auth publish` and a relops token it takes",
                    ctx.nats_url()
                ),
                Err(e) => return Err(e),
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
            match out {
                Some(path) => {
                    let (holder, key_path) = holder_key(&path)?;
                    let (jwt, claims) =
                        issue(&key, &actor, role, ttl, Some(&holder.verifying_key()))?;
                    write_private(&path, &jwt)?;
                    tell!(
                        "token written to {}, bound to the key in {} (keep them together)",
                        path.display(),
                        key_path.display()
                    );
                    tell_issued(&claims);
                }
                None => {
                    let (jwt, claims) = issue(&key, &actor, role, ttl, None)?;
                    say!("{jwt}");
                    if role == Role::Relops {
                        tell!(
                            "a printed token is a bearer token (whoever holds it may use it); --out FILE binds it to a key of its own"
                        );
                    }
                    tell_issued(&claims);
                }
            }
            Ok(exit::OK)
        }
        AuthCommand::Revoke {
            jti,
            actor,
            token,
            reason,
        } => {
            let target = match (jti, actor, token) {
                (Some(jti), _, _) => RevokeTarget::Token { jti },
                (None, Some(actor), _) => RevokeTarget::Actor { actor },
                (None, None, Some(path)) => {
                    let jwt = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))
                        .map_err(|e| fail(exit::INVALID, format!("{e:#}")))?;
                    // Revoking needs only the token's id; whether it is
                    // genuine does not matter (a forged one is refused anyway).
                    let (_, jti) = token::unverified_claims(&jwt)
                        .filter(|(_, jti)| !jti.is_empty())
                        .ok_or_else(|| {
                            fail(
                                exit::INVALID,
                                format!("{} does not hold a fleetroll token", path.display()),
                            )
                        })?;
                    RevokeTarget::Token { jti }
                }
                (None, None, None) => {
                    return Err(fail(
                        exit::INVALID,
                        "say what to revoke: --jti, --actor or --token",
                    ));
                }
            };
            let outcome = send(ctx, Command::TokenRevoke { target, reason }, COMMAND_WAIT).await?;
            if let Verdict::Done {
                reply: Reply::Revoked { target },
            } = &outcome.verdict
            {
                match target {
                    RevokeTarget::Token { jti } => tell!("revoked token {jti}"),
                    RevokeTarget::Actor { actor } => {
                        tell!("revoked every token issued to {actor} so far")
                    }
                }
            }
            Ok(report_failure(&outcome))
        }
    }
}

async fn check_clock(ctx: &Context) -> anyhow::Result<()> {
    // Without a mesh that lets us in there is no server clock to compare
    // with (on a NATS with the auth callout, an operator whose own token
    // has run out issues the next one); the workers check again when the
    // token is used.
    let bus = match ctx.connect().await {
        Ok(bus) => bus,
        Err(e) if unreachable(&e) || refused(&e) => {
            tell!("not comparing this machine's clock with the mesh's: {e:#}");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    if let Ok(skew) = fleetroll_bus::clock::measure_skew_ms(&bus).await {
        fleetroll_bus::clock::check(skew)?;
    }
    Ok(())
}

/// NATS refused who we are (with the auth callout: our token).
fn refused(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<BusError>(),
        Some(BusError::NotAuthorized { .. })
    )
}

/// NATS is not there (as opposed to: refused us, or a bad credentials file).
fn unreachable(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<BusError>(),
        Some(BusError::Unreachable { .. })
    )
}

pub fn issue(
    key: &SigningKey,
    actor: &str,
    role: Role,
    ttl: time::Duration,
    holder: Option<&token::VerifyingKey>,
) -> anyhow::Result<(String, token::Claims)> {
    token::issue(key, actor, role, ttl, OffsetDateTime::now_utc(), holder)
        .map_err(|e| fail(exit::INVALID, e.to_string()))
}

fn tell_issued(claims: &token::Claims) {
    tell!(
        "issued token {} for {} ({}), expires {}",
        claims.jti,
        claims.sub,
        claims.role,
        OffsetDateTime::from_unix_timestamp(claims.exp)
            .map(timestamp)
            .unwrap_or_default()
    );
}

/// The holder key of the token file `token_file`: the one beside it, kept
/// across renewals, or a new one (mode 0600).
pub fn holder_key(token_file: &Path) -> anyhow::Result<(SigningKey, std::path::PathBuf)> {
    let path = token::holder_key_path(token_file);
    if path.exists() {
        let key = crate::context::read_key(&path, |e| format!("{}: {e}", path.display()))?;
        return Ok((key, path));
    }
    let key = SigningKey::generate();
    write_private(&path, &key.to_pem())?;
    Ok((key, path))
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
    crate::context::read_key(&path, |_| {
        format!(
            "no signing key at {}: run `fleetroll auth init` (or use the data dir that has it)",
            path.display()
        )
    })
}

/// Publishes the public halves of the signing key and the audit key.
async fn publish_keys(bus: &Bus, key: &SigningKey, audit_key: &SigningKey) -> anyhow::Result<()> {
    publish_verifying_key(bus, key).await?;
    publish_audit_key(bus, audit_key).await?;
    tell!("verifying key and audit key published on {}", bus.url());
    Ok(())
}

pub async fn publish_verifying_key(bus: &Bus, key: &SigningKey) -> anyhow::Result<()> {
    publish_key(
        bus,
        auth_keys::VERIFYING_KEY,
        key,
        "publishing the verifying key",
    )
    .await
}

/// Writes the public half of `key` under `name` in the auth bucket, unless
/// it is there already (a user that may not write it, a worker, can then
/// still start on a mesh that has it). Only relops may write these keys.
async fn publish_key(bus: &Bus, name: &str, key: &SigningKey, what: &str) -> anyhow::Result<()> {
    let public_key = key.verifying_key().to_base64();
    let auth = bus.kv(&topology::AUTH).await?;
    if let Ok(Some(bytes)) = auth.get(name).await
        && codec::from_cbor::<VerifyingKeyRecord>(&bytes).is_ok_and(|r| r.public_key == public_key)
    {
        return Ok(());
    }
    let record = VerifyingKeyRecord {
        public_key,
        published_at: OffsetDateTime::now_utc(),
    };
    let subject = format!("$KV.{}.{name}", topology::AUTH.name);
    bus.unless_refused(
        what,
        &subject,
        auth.put(name, codec::to_cbor(&record).into()),
    )
    .await?
    .map_err(|e| fail(exit::INFRASTRUCTURE, format!("{what}: {e}")))?;
    Ok(())
}

/// Publishes the public half of an audit key; earlier ones stay published
/// so the records they signed still verify.
pub async fn publish_audit_key(bus: &Bus, key: &SigningKey) -> anyhow::Result<()> {
    let name = auth_keys::audit_key(&key_id(&key.verifying_key()));
    publish_key(bus, &name, key, "publishing the audit key").await
}

/// The audit key of this data dir, made on first use, and listed among
/// the keys the data dir's `audit verify` trusts.
pub fn audit_key(ctx: &Context) -> anyhow::Result<SigningKey> {
    let key = load_or_make_audit_key(ctx)?;
    trust_audit_key(ctx, &key)?;
    Ok(key)
}

/// Adds the public half of `key` to the data dir's trusted audit keys
/// ([`Context::trusted_audit_keys_path`]) unless it is there; keys already
/// listed stay, so records signed before a new `auth init` still verify.
fn trust_audit_key(ctx: &Context, key: &SigningKey) -> anyhow::Result<()> {
    use std::io::Write as _;
    let public = key.verifying_key();
    if ctx.listed_audit_keys()?.contains(&public) {
        return Ok(());
    }
    let path = ctx.trusted_audit_keys_path();
    // A line of its own even after a last line without its newline.
    let entry = format!(
        "\n# audit key {}\n{}\n",
        key_id(&public),
        public.to_base64()
    );
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| file.write_all(entry.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))
}

fn load_or_make_audit_key(ctx: &Context) -> anyhow::Result<SigningKey> {
    let path = ctx.audit_key_path();
    match std::fs::read_to_string(&path) {
        Ok(pem) => SigningKey::from_pem(&pem)
            .map_err(|e| fail(exit::INVALID, format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = init_key(&path)?;
            say!(
                "created audit key {} {}",
                key_id(&key.verifying_key()),
                path.display()
            );
            Ok(key)
        }
        Err(e) => Err(fail(
            exit::INVALID,
            format!("cannot read {}: {e}", path.display()),
        )),
    }
}

/// Writes a secret readable by its owner only, replacing the file whole.
/// Writes the public half of `key` where this data dir's workers read it
/// ([`Context::trust_root`]), unless it is there already.
pub fn write_verifying_key(ctx: &Context, key: &SigningKey) -> anyhow::Result<()> {
    let path = ctx.verifying_key_path();
    let public = key.verifying_key().to_base64();
    if std::fs::read_to_string(&path).is_ok_and(|t| t.trim() == public) {
        return Ok(());
    }
    std::fs::write(&path, format!("{public}\n"))
        .with_context(|| format!("writing {}", path.display()))
}

pub fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    fleetroll_bus::embedded::write_private(path, &format!("{}\n", contents.trim_end()))
        .with_context(|| format!("writing {}", path.display()))
}
