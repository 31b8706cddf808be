//! `fleetroll tls`: a CA and certificates for TLS to NATS (fleetroll-pki).

use fleetroll_pki::{Ca, Kind};

use crate::args::{TlsCommand, TlsKind};
use crate::context::Context;
use crate::exit::{self, fail};
use crate::term::say;

pub fn run(ctx: &Context, command: TlsCommand) -> anyhow::Result<u8> {
    let pki_error = |e: fleetroll_pki::PkiError| fail(exit::INVALID, e.to_string());
    match command {
        TlsCommand::Init { dir, name } => {
            let dir = dir.unwrap_or_else(|| ctx.data_dir().join("tls"));
            let ca = Ca::create(&dir, &name).map_err(pki_error)?;
            say!("created CA `{name}`: {}", ca.cert_file().display());
            say!(
                "  give {} to every NATS node (tls ca_file) and client ([nats] ca_file); keep {} here",
                fleetroll_pki::CA_CERT,
                fleetroll_pki::CA_KEY
            );
        }
        TlsCommand::Issue {
            kind,
            name,
            sans,
            days,
            dir,
        } => {
            let dir = dir.unwrap_or_else(|| ctx.data_dir().join("tls"));
            let ca = Ca::load(&dir).map_err(pki_error)?;
            let kind = match kind {
                TlsKind::Node => Kind::Node,
                TlsKind::Client => Kind::Client,
            };
            let issued = ca.issue(kind, &name, &sans, days).map_err(pki_error)?;
            say!("issued {name} ({days} days)");
            say!("  certificate: {}", issued.cert.display());
            say!("  key:         {} (mode 0600)", issued.key.display());
        }
    }
    Ok(exit::OK)
}
