//! SSH settings: one identity for the fleet, with per-host overrides by
//! hostname glob (the first matching override wins).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::{Target, Timeouts};

/// The `[ssh]` section of `fleetroll.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SshSettings {
    #[serde(default = "default_user")]
    pub user: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// Private key file (OpenSSH format).
    pub identity_file: Option<PathBuf>,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(default = "default_exec_timeout", with = "humantime_serde")]
    pub exec_timeout: Duration,
    /// Hosts worked on at once.
    #[serde(default = "default_parallelism")]
    pub parallelism: usize,
    #[serde(default, rename = "host")]
    pub hosts: Vec<HostOverride>,
}

/// `[[ssh.host]]`: settings for the hosts whose name matches `match`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostOverride {
    #[serde(rename = "match")]
    pub pattern: String,
    pub user: Option<String>,
    pub port: Option<u16>,
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

impl Default for SshSettings {
    fn default() -> Self {
        SshSettings {
            user: default_user(),
            port: default_port(),
            identity_file: None,
            connect_timeout: default_connect_timeout(),
            exec_timeout: default_exec_timeout(),
            parallelism: default_parallelism(),
            hosts: Vec::new(),
        }
    }
}

impl SshSettings {
    /// Where and as whom to reach `host`.
    pub fn target(&self, host: &str) -> Target {
        let matching = self
            .hosts
            .iter()
            .find(|o| glob::Pattern::new(&o.pattern).is_ok_and(|p| p.matches(host)));
        Target {
            host: host.to_string(),
            port: matching.and_then(|o| o.port).unwrap_or(self.port),
            user: matching
                .and_then(|o| o.user.clone())
                .unwrap_or_else(|| self.user.clone()),
        }
    }

    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            connect: self.connect_timeout,
            auth: self.connect_timeout,
        }
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
            [[host]]
            match = "mac-*.example.com"
            user = "admin"
            [[host]]
            match = "*.example.com"
            port = 2222
            "#,
        )
        .unwrap();
        assert_eq!(settings.exec_timeout, Duration::from_secs(5));
        assert_eq!(settings.target("mac-1.example.com").user, "admin");
        assert_eq!(settings.target("mac-1.example.com").port, 22);
        assert_eq!(settings.target("linux-1.example.com").port, 2222);
        assert_eq!(settings.target("other.test").user, "relops");
        assert!(toml::from_str::<SshSettings>("colour = 1").is_err());
    }
}
