//! # fleetroll-bus: the whole wire contract of the fleetroll mesh
//!
//! Every worker, the CLI and any chatops bot meet here. This crate owns the
//! subject names ([`subjects`]), the stream and bucket definitions
//! ([`topology`]), every message type with its schema version
//! ([`messages`]), the CBOR/JSON codec ([`codec`]), the command envelope and
//! its outcome ([`messages::command`]) and the signed tokens ([`token`]).
//! No other crate spells a subject or bucket name.
//!
//! Built with `default-features = false` the crate is only that contract:
//! plain types and functions, no tokio, no async-nats. The default `client`
//! feature adds the runtime side: connecting ([`connect`]), creating the
//! streams and buckets ([`setup`]), sending commands and awaiting their
//! outcome ([`send`]), the worker loop ([`worker`]), the read-query service
//! ([`query`]), the clock guard ([`clock`]), the mesh status ([`status`]) and
//! the embedded `nats-server` ([`embedded`]).
//!
//! ```
//! use fleetroll_bus::{codec, messages::command::Command, subjects};
//!
//! let cmd = Command::SeedAdd { hostnames: vec!["host1.example.com".into()] };
//! assert_eq!(subjects::command(&cmd), "fleetroll.cmd.prober.seed_add");
//! let bytes = codec::to_cbor(&cmd);
//! let back: Command = codec::from_cbor(&bytes).unwrap();
//! assert_eq!(back, cmd);
//! ```

pub mod codec;
pub mod filter;
pub mod hostname;
pub mod messages;
pub mod subjects;
pub mod token;
pub mod topology;

#[cfg(feature = "client")]
pub mod audit_log;
#[cfg(feature = "client")]
pub mod clock;
#[cfg(feature = "client")]
pub mod connect;
#[cfg(feature = "client")]
pub mod embedded;
#[cfg(feature = "client")]
pub mod events;
#[cfg(feature = "client")]
pub mod host_index;
#[cfg(feature = "client")]
pub mod lease;
#[cfg(feature = "client")]
pub mod query;
#[cfg(feature = "client")]
pub mod rollout_store;
#[cfg(feature = "client")]
pub mod send;
#[cfg(feature = "client")]
pub mod setup;
#[cfg(feature = "client")]
pub mod status;
#[cfg(feature = "client")]
pub mod verify;
#[cfg(feature = "client")]
pub mod worker;

#[cfg(feature = "client")]
pub use connect::Bus;
pub use messages::WorkerKind;
