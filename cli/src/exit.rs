//! Exit codes (SPEC 8) and how errors map to them.

use fleetroll_bus::connect::BusError;
use fleetroll_bus::embedded::EmbeddedError;
use fleetroll_bus::messages::command::Verdict;
use fleetroll_bus::query::QueryFailure;
use fleetroll_bus::send::SendError;

pub const OK: u8 = 0;
pub const INVALID: u8 = 1;
pub const INFRASTRUCTURE: u8 = 2;
pub const INTERNAL: u8 = 3;
pub const REFUSED: u8 = 4;
pub const UNAUTHORIZED: u8 = 5;

/// An error that already knows its exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

pub fn fail(code: u8, message: impl Into<String>) -> anyhow::Error {
    Exit {
        code,
        message: message.into(),
    }
    .into()
}

pub fn for_verdict(verdict: &Verdict) -> u8 {
    match verdict {
        Verdict::Done { .. } => OK,
        Verdict::Invalid { .. } => INVALID,
        Verdict::Refused { .. } => REFUSED,
        Verdict::Denied { .. } => UNAUTHORIZED,
        Verdict::Failed { .. } => INFRASTRUCTURE,
    }
}

/// The exit code for an error that reached `main`.
pub fn for_error(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if let Some(exit) = cause.downcast_ref::<Exit>() {
            return exit.code;
        }
        if let Some(e) = cause.downcast_ref::<SendError>() {
            return match e {
                SendError::ClockSkew(_) => UNAUTHORIZED,
                SendError::Bus(e) => for_bus(e),
                _ => INFRASTRUCTURE,
            };
        }
        if let Some(e) = cause.downcast_ref::<QueryFailure>() {
            return match e {
                QueryFailure::Denied(_) => UNAUTHORIZED,
                QueryFailure::Invalid(_) | QueryFailure::NotFound(_) => INVALID,
                QueryFailure::Failed(_) => INTERNAL,
                QueryFailure::Bus(e) => for_bus(e),
                _ => INFRASTRUCTURE,
            };
        }
        if cause
            .downcast_ref::<fleetroll_bus::clock::SkewError>()
            .is_some()
        {
            return UNAUTHORIZED;
        }
        if let Some(e) = cause.downcast_ref::<BusError>() {
            return for_bus(e);
        }
        // The web server's address is taken, or it stopped.
        if let Some(e) = cause.downcast_ref::<fleetroll_web::WebError>() {
            return match e {
                // A certificate or key that cannot be used is the operator's
                // to fix.
                fleetroll_web::WebError::Tls { .. } => INVALID,
                _ => INFRASTRUCTURE,
            };
        }
        if let Some(e) = cause.downcast_ref::<EmbeddedError>() {
            return match e {
                EmbeddedError::Credentials(_) => INVALID,
                _ => INFRASTRUCTURE,
            };
        }
    }
    INTERNAL
}

/// NATS refusing this user (its password, or what it tried) is "not
/// authorized"; anything else on the bus is infrastructure.
fn for_bus(error: &BusError) -> u8 {
    match error {
        BusError::NotAuthorized { .. } | BusError::NotPermitted { .. } => UNAUTHORIZED,
        _ => INFRASTRUCTURE,
    }
}
