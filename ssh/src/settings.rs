//! The `[ssh]` section of `fleetroll.toml`: defaults for every host,
//! `[[ssh.host]]` entries by hostname glob, and what the `FLEETROLL_SSH_*`
//! variables force. How they combine with the OpenSSH client config is
//! [`crate::route`]'s business.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The `[ssh]` section of `fleetroll.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SshSettings {
    #[serde(default = "default_user")]
    pub user: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// Private key file (OpenSSH format), tried when neither the ssh config
    /// nor a `[[ssh.host]]` names one.
    pub identity_file: Option<PathBuf>,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(default = "default_exec_timeout", with = "humantime_serde")]
    pub exec_timeout: Duration,
    /// Hosts worked on at once.
    #[serde(default = "default_parallelism")]
    pub parallelism: usize,
    /// The OpenSSH client config to read: unset is `~/.ssh/config` of the
    /// user the worker runs as (its passwd home, as OpenSSH does), `"none"`
    /// reads none.
    pub config_file: Option<PathBuf>,
    /// What to do with a host no pin and no known_hosts knows.
    #[serde(default)]
    pub first_contact: FirstContact,
    /// Targets carried on one connection to a jump host before another
    /// connection to it is opened.
    #[serde(default = "default_channels_per_jump")]
    pub channels_per_jump: usize,
    #[serde(default, rename = "host")]
    pub hosts: Vec<HostOverride>,
    /// What the `FLEETROLL_SSH_*` variables force (never read from the file).
    #[serde(skip)]
    pub forced: Forced,
}

/// Whether an unknown host's key is pinned on first sight.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FirstContact {
    /// Trust on first use: pin whatever key it offers.
    #[default]
    Trust,
    /// Refuse until a pin (`fleetroll host pin --from-known-hosts`) or a
    /// known_hosts file knows the host.
    KnownHosts,
}

/// `[[ssh.host]]`: settings for the hosts whose name matches `match`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostOverride {
    #[serde(rename = "match")]
    pub pattern: String,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_file: Option<PathBuf>,
    /// As OpenSSH's `ProxyJump`: `[user@]host[:port]`, comma-separated
    /// hops, or `"none"`.
    pub proxy_jump: Option<String>,
}

/// Settings the environment forces over every other source, for the
/// fleet's hosts (jump hosts keep their own).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Forced {
    /// `FLEETROLL_SSH_USER`.
    pub user: Option<String>,
    /// `FLEETROLL_SSH_PORT`.
    pub port: Option<u16>,
    /// `FLEETROLL_SSH_KEY`: the only identity file tried.
    pub identity_file: Option<PathBuf>,
}

/// A `FLEETROLL_SSH_*` variable that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable} `{value}` is not a port number")]
pub struct BadVariable {
    pub variable: &'static str,
    pub value: String,
}

fn default_user() -> String {
    "root".into()
}
fn default_port() -> u16 {
    22
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_exec_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_parallelism() -> usize {
    64
}
fn default_channels_per_jump() -> usize {
    100
}

impl Default for SshSettings {
    fn default() -> Self {
        SshSettings {
            user: default_user(),
            port: default_port(),
            identity_file: None,
            connect_timeout: default_connect_timeout(),
            exec_timeout: default_exec_timeout(),
            parallelism: default_parallelism(),
            config_file: None,
            first_contact: FirstContact::default(),
            channels_per_jump: default_channels_per_jump(),
            hosts: Vec::new(),
            forced: Forced::default(),
        }
    }
}

impl SshSettings {
    /// Takes `FLEETROLL_SSH_USER`, `_PORT`, `_KEY` and `_CONFIG` from
    /// `var` (the process environment, in practice).
    pub fn apply_env(
        &mut self,
        var: impl Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Result<(), BadVariable> {
        let text = |name: &str| var(name).map(|v| v.to_string_lossy().into_owned());
        if let Some(user) = text("FLEETROLL_SSH_USER") {
            self.forced.user = Some(user);
        }
        if let Some(port) = text("FLEETROLL_SSH_PORT") {
            self.forced.port = Some(port.parse().map_err(|_| BadVariable {
                variable: "FLEETROLL_SSH_PORT",
                value: port,
            })?);
        }
        if let Some(key) = var("FLEETROLL_SSH_KEY") {
            self.forced.identity_file = Some(PathBuf::from(key));
        }
        if let Some(config) = var("FLEETROLL_SSH_CONFIG") {
            self.config_file = Some(PathBuf::from(config));
        }
        Ok(())
    }

    /// The first `[[ssh.host]]` whose glob matches `host`.
    pub fn host_override(&self, host: &str) -> Option<&HostOverride> {
        self.hosts
            .iter()
            .find(|o| glob::Pattern::new(&o.pattern).is_ok_and(|p| p.matches(host)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_match_by_glob_first_wins() {
        let settings: SshSettings = toml::from_str(
            r#"
            user = "relops"
            exec_timeout = "5s"
            first_contact = "known-hosts"
            [[host]]
            match = "mac-*.example.com"
            user = "admin"
            proxy_jump = "none"
            [[host]]
            match = "*.example.com"
            port = 2222
            "#,
        )
        .unwrap();
        assert_eq!(settings.exec_timeout, Duration::from_secs(5));
        assert_eq!(settings.first_contact, FirstContact::KnownHosts);
        let mac = settings.host_override("mac-1.example.com").unwrap();
        assert_eq!(mac.user.as_deref(), Some("admin"));
        assert_eq!(mac.port, None);
        assert_eq!(
            settings.host_override("linux-1.example.com").unwrap().port,
            Some(2222)
        );
        assert!(settings.host_override("other.test").is_none());
        assert!(toml::from_str::<SshSettings>("colour = 1").is_err());
    }

    #[test]
    fn the_environment_forces_user_port_and_key() {
        let mut settings = SshSettings::default();
        let env = |name: &str| match name {
            "FLEETROLL_SSH_USER" => Some("relops".into()),
            "FLEETROLL_SSH_PORT" => Some("2222".into()),
            "FLEETROLL_SSH_CONFIG" => Some("none".into()),
            _ => None,
        };
        settings.apply_env(env).unwrap();
        assert_eq!(settings.forced.user.as_deref(), Some("relops"));
        assert_eq!(settings.forced.port, Some(2222));
        assert_eq!(settings.config_file, Some(PathBuf::from("none")));
        let bad = settings.apply_env(|name| (name == "FLEETROLL_SSH_PORT").then(|| "ssh".into()));
        assert_eq!(
            bad.unwrap_err().to_string(),
            "FLEETROLL_SSH_PORT `ssh` is not a port number"
        );
    }
}
