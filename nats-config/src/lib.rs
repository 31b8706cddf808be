//! The nats-server configurations fleetroll ships, beside this crate's
//! manifest: `single.conf` (the embedded server of `fleetroll up`),
//! `node-1.conf` … `node-3.conf` (a TLS cluster on the auth callout),
//! `permissions.conf` (one password user per role), `callout.conf`
//! (`fleetroll authorizer` decides) and `admin.conf` (the set-up's
//! permissions, included by both). Operators copy the files; programs that
//! write a configuration out, or read the role permissions, take the text
//! from here.

/// The configuration `fleetroll up` runs its embedded server with.
pub const SINGLE_NODE: &str = include_str!("../single.conf");

/// The role permissions (and password users) every configuration but the
/// callout's includes; the authorizer reads its role lists from it too.
pub const PERMISSIONS: &str = include_str!("../permissions.conf");

/// The set-up's permissions, included by `permissions.conf` and
/// `callout.conf`.
pub const ADMIN: &str = include_str!("../admin.conf");
