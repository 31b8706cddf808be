//! Public-key authentication the way OpenSSH goes about it: the identity
//! files in order (signed by the agent when it holds them), then the
//! agent's other keys unless `IdentitiesOnly`; a key the server refuses
//! moves on to the next. Nothing ever asks for a passphrase.

use std::path::Path;
use std::sync::Arc;

use russh::client::Handle;
use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};

use crate::SshError;
use crate::route::{Agent, Identities};

/// One key to offer.
enum Offer {
    /// Signed by the agent.
    Agent(PublicKey),
    /// Read from a file.
    File(Arc<PrivateKey>),
}

/// What an identity file gave.
enum FileKey {
    Private(Arc<PrivateKey>),
    /// Encrypted; its public half, when a `.pub` is beside it.
    Encrypted(Option<PublicKey>),
}

fn read_file(path: &Path) -> Result<Option<FileKey>, SshError> {
    match russh::keys::load_secret_key(path, None) {
        Ok(key) => Ok(Some(FileKey::Private(Arc::new(key)))),
        Err(russh::keys::Error::KeyIsEncrypted) => {
            let mut public = path.as_os_str().to_owned();
            public.push(".pub");
            Ok(Some(FileKey::Encrypted(
                russh::keys::load_public_key(Path::new(&public)).ok(),
            )))
        }
        Err(russh::keys::Error::IO(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SshError::Identity {
            path: path.display().to_string(),
            detail: e.to_string(),
        }),
    }
}

async fn agent_keys(
    agent: &Agent,
) -> Option<(AgentClient<tokio::net::UnixStream>, Vec<PublicKey>)> {
    let Agent::Socket(path) = agent else {
        return None;
    };
    let mut client = AgentClient::connect_uds(path).await.ok()?;
    let keys = client
        .request_identities()
        .await
        .ok()?
        .into_iter()
        .filter_map(|id| match id {
            AgentIdentity::PublicKey { key, .. } => Some(key),
            AgentIdentity::Certificate { .. } => None,
        })
        .collect();
    Some((client, keys))
}

/// Authenticates `user` with the first identity the server accepts.
pub(crate) async fn authenticate<H: russh::client::Handler>(
    handle: &mut Handle<H>,
    user: &str,
    identities: &Identities,
) -> Result<(), SshError> {
    let mut agent = agent_keys(&identities.agent).await;
    let in_agent: Vec<PublicKey> = agent.as_ref().map(|(_, k)| k.clone()).unwrap_or_default();
    let held = |key: &PublicKey| in_agent.iter().any(|k| k.key_data() == key.key_data());
    let mut offers = Vec::new();
    let mut encrypted = Vec::new();
    for path in &identities.files {
        match read_file(path)? {
            Some(FileKey::Private(key)) if held(key.public_key()) => {
                offers.push(Offer::Agent(key.public_key().clone()))
            }
            Some(FileKey::Private(key)) => offers.push(Offer::File(key)),
            Some(FileKey::Encrypted(Some(public))) if held(&public) => {
                offers.push(Offer::Agent(public))
            }
            Some(FileKey::Encrypted(_)) => encrypted.push(path.display().to_string()),
            None => {}
        }
    }
    if !identities.only {
        for key in &in_agent {
            let offered = offers.iter().any(|o| match o {
                Offer::Agent(k) => k.key_data() == key.key_data(),
                Offer::File(k) => k.public_key().key_data() == key.key_data(),
            });
            if !offered {
                offers.push(Offer::Agent(key.clone()));
            }
        }
    }
    if offers.is_empty() {
        return Err(match encrypted.into_iter().next() {
            Some(path) => SshError::EncryptedKey { path },
            None => SshError::NoIdentity,
        });
    }
    let rsa_hash: Option<HashAlg> = handle
        .best_supported_rsa_hash()
        .await
        .map_err(crate::protocol)?
        .flatten();
    let mut tried = Vec::new();
    for offer in offers {
        let accepted = match &offer {
            Offer::File(key) => {
                tried.push(crate::known_hosts::fingerprint_of(key.public_key()));
                handle
                    .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key.clone(), rsa_hash))
                    .await
                    .map_err(crate::protocol)?
                    .success()
            }
            Offer::Agent(key) => {
                tried.push(format!(
                    "{} (agent)",
                    crate::known_hosts::fingerprint_of(key)
                ));
                let Some((client, _)) = agent.as_mut() else {
                    continue;
                };
                // An agent that declines to sign is the next key's turn.
                handle
                    .authenticate_publickey_with(user, key.clone(), rsa_hash, client)
                    .await
                    .is_ok_and(|r| r.success())
            }
        };
        if accepted {
            return Ok(());
        }
    }
    Err(SshError::AuthRefused {
        user: user.to_string(),
        tried: tried.join(", "),
        encrypted: encrypted.join(", "),
    })
}
