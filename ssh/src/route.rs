//! How a host is reached: its address, user and identities, the jump hosts
//! in front of it, and the names its key is known by.
//!
//! Each setting comes from the first of these that has it:
//! 1. the `FLEETROLL_SSH_*` variables (the fleet's hosts only);
//! 2. the first matching `[[ssh.host]]` of `fleetroll.toml`;
//! 3. the OpenSSH client config (`[ssh] config_file`);
//! 4. the `[ssh]` defaults.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::settings::{FirstContact, SshSettings};
use crate::ssh_config::{
    HostOptions, IdentityAgent, Jump, MatchContext, ProxyJump, SshConfig, SshConfigError,
    StrictHostKeyChecking,
};

/// Hops a route may have, jump hosts' own jumps included.
const MAX_HOPS: usize = 8;

/// Where the agent is, if one is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Agent {
    None,
    Socket(PathBuf),
}

/// The keys to offer, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identities {
    pub files: Vec<PathBuf>,
    /// Only the files (the agent's copies of them included), as OpenSSH's
    /// `IdentitiesOnly`.
    pub only: bool,
    pub agent: Agent,
}

/// One SSH hop: the fleet's host, or a jump host in front of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The name fleetroll pins its key under: the inventory hostname, or
    /// the jump host as written in `ProxyJump`.
    pub name: String,
    /// What to connect to (`HostName`).
    pub address: String,
    pub port: u16,
    pub user: String,
    pub identities: Identities,
    /// The names known_hosts lists the host by (`HostKeyAlias`, or the
    /// address; `[name]:port` off port 22).
    pub known_as: Vec<String>,
    pub known_hosts_files: Vec<PathBuf>,
    pub first_contact: FirstContact,
    /// `ssh-rsa` (SHA-1) host keys are accepted only when the config asks.
    pub allow_ssh_rsa: bool,
    pub connect_timeout: Duration,
    pub keepalive: Duration,
    pub keepalive_max: usize,
}

/// A host and the jump hosts to go through, nearest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub target: Endpoint,
    pub jumps: Vec<Endpoint>,
}

/// Why a host has no route.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Config(#[from] SshConfigError),
    #[error(
        "{host}: the ssh config gives it a ProxyCommand, which fleetroll does not run; use ProxyJump"
    )]
    ProxyCommand { host: String },
    #[error("{host}: more than {MAX_HOPS} jump hosts (a ProxyJump loop?)")]
    TooManyHops { host: String },
    #[error("{host}: bad ProxyJump `{value}` in fleetroll.toml: {detail}")]
    BadJump {
        host: String,
        value: String,
        detail: String,
    },
}

/// Resolves routes from the settings and the ssh config, and names each
/// config option fleetroll does not act on once.
pub struct Resolver {
    settings: SshSettings,
    config: Option<SshConfig>,
    context: MatchContext,
}

impl Resolver {
    /// Reads the ssh config the settings name. The default file may be
    /// missing; a file named in `[ssh] config_file` must be there.
    pub fn new(settings: SshSettings) -> Result<Resolver, SshConfigError> {
        let context = MatchContext::current_user().unwrap_or_else(|| MatchContext {
            local_user: "root".into(),
            home: "/".into(),
        });
        let config = match settings.config_file.as_deref() {
            Some(path) if path == Path::new("none") => None,
            Some(path) => Some(SshConfig::load(path, &context.home)?),
            None => {
                let path = context.home.join(".ssh/config");
                path.exists()
                    .then(|| SshConfig::load(&path, &context.home))
                    .transpose()?
            }
        };
        Ok(Resolver {
            settings,
            config,
            context,
        })
    }

    pub fn settings(&self) -> &SshSettings {
        &self.settings
    }

    /// The route to a host of the fleet.
    pub fn route(&self, host: &str) -> Result<Route, RouteError> {
        let mut jumps = Vec::new();
        let target = self.endpoint(host, None, true, &mut jumps, 0)?;
        Ok(Route { target, jumps })
    }

    fn options(&self, host: &str) -> HostOptions {
        let Some(config) = &self.config else {
            return HostOptions::default();
        };
        let options = config.resolve(host, &self.context);
        // Once per process: the prober's and the orchestrator's pools read
        // the same config.
        static WARNED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
        let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
        for unsupported in &options.unsupported {
            if warned.insert(unsupported.option.to_ascii_lowercase()) {
                tracing::warn!(
                    option = %unsupported.option,
                    at = %unsupported.at,
                    "ssh config option not supported by fleetroll; it is ignored"
                );
            }
        }
        options
    }

    /// The endpoint for `host`; its jump hosts are pushed on `jumps` first.
    fn endpoint(
        &self,
        host: &str,
        via: Option<&Jump>,
        fleet: bool,
        jumps: &mut Vec<Endpoint>,
        depth: usize,
    ) -> Result<Endpoint, RouteError> {
        if depth > MAX_HOPS {
            return Err(RouteError::TooManyHops { host: host.into() });
        }
        let s = &self.settings;
        let forced = fleet.then_some(&s.forced);
        let entry = s.host_override(host);
        let config = self.options(host);
        let proxy = match entry.and_then(|e| e.proxy_jump.as_deref()) {
            Some(value) => Some(parse_jumps(host, value)?),
            None => config.proxy_jump.clone(),
        };
        if config.proxy_command.is_some() && proxy.is_none() {
            return Err(RouteError::ProxyCommand { host: host.into() });
        }
        if let Some(ProxyJump::Hops(hops)) = &proxy {
            for hop in hops {
                let endpoint = self.endpoint(&hop.host, Some(hop), false, jumps, depth + 1)?;
                jumps.push(endpoint);
                if jumps.len() > MAX_HOPS {
                    return Err(RouteError::TooManyHops { host: host.into() });
                }
            }
        }
        let user = forced
            .and_then(|f| f.user.clone())
            .or_else(|| via.and_then(|j| j.user.clone()))
            .or_else(|| entry.and_then(|e| e.user.clone()))
            .or(config.user.clone())
            .unwrap_or_else(|| s.user.clone());
        let port = forced
            .and_then(|f| f.port)
            .or_else(|| via.and_then(|j| j.port))
            .or_else(|| entry.and_then(|e| e.port))
            .or(config.port)
            .unwrap_or(s.port);
        let address = config.host_name.clone().unwrap_or_else(|| host.to_string());
        let files = if let Some(key) = forced.and_then(|f| f.identity_file.clone()) {
            vec![key]
        } else if let Some(key) = entry.and_then(|e| e.identity_file.clone()) {
            vec![key]
        } else if !config.identity_files.is_empty() || config.no_default_identities {
            config.identity_files.clone()
        } else if let Some(key) = &s.identity_file {
            vec![key.clone()]
        } else if self.config.is_some() {
            // OpenSSH's defaults, those that exist.
            ["id_ed25519", "id_ecdsa", "id_rsa"]
                .iter()
                .map(|f| self.context.home.join(".ssh").join(f))
                .filter(|p| p.exists())
                .collect()
        } else {
            Vec::new()
        };
        let agent = match &config.identity_agent {
            Some(IdentityAgent::None) => Agent::None,
            Some(IdentityAgent::Socket(path)) => Agent::Socket(path.clone()),
            Some(IdentityAgent::Env) | None => std::env::var_os("SSH_AUTH_SOCK")
                .filter(|v| !v.is_empty())
                .map_or(Agent::None, |p| Agent::Socket(PathBuf::from(p))),
        };
        let key_name = config.host_key_alias.clone().unwrap_or(address.clone());
        let known_as = vec![if port == 22 {
            key_name
        } else {
            format!("[{key_name}]:{port}")
        }];
        let known_hosts_files = match &config.user_known_hosts_files {
            Some(files) => files.clone(),
            None if self.config.is_some() => {
                let ssh = self.context.home.join(".ssh");
                vec![
                    ssh.join("known_hosts"),
                    ssh.join("known_hosts2"),
                    PathBuf::from("/etc/ssh/ssh_known_hosts"),
                ]
            }
            None => Vec::new(),
        };
        let first_contact = match config.strict_host_key_checking {
            Some(StrictHostKeyChecking::Yes | StrictHostKeyChecking::Ask) => {
                FirstContact::KnownHosts
            }
            _ => s.first_contact,
        };
        Ok(Endpoint {
            name: host.to_string(),
            address,
            port,
            user,
            identities: Identities {
                files,
                only: config.identities_only.unwrap_or(false),
                agent,
            },
            known_as,
            known_hosts_files,
            first_contact,
            allow_ssh_rsa: config
                .host_key_algorithms
                .as_deref()
                .is_some_and(asks_for_ssh_rsa),
            connect_timeout: config.connect_timeout.unwrap_or(s.connect_timeout),
            keepalive: config
                .server_alive_interval
                .filter(|d| !d.is_zero())
                .unwrap_or(Duration::from_secs(30)),
            keepalive_max: config.server_alive_count_max.unwrap_or(3) as usize,
        })
    }
}

/// Whether a `HostKeyAlgorithms` value names `ssh-rsa` (plainly, or
/// appended with `+` or put first with `^`; `-` removes it).
fn asks_for_ssh_rsa(value: &str) -> bool {
    !value.starts_with('-')
        && value
            .trim_start_matches(['+', '^'])
            .split(',')
            .any(|a| a.trim() == "ssh-rsa")
}

/// A `proxy_jump` from fleetroll.toml, read as OpenSSH reads ProxyJump.
fn parse_jumps(host: &str, value: &str) -> Result<ProxyJump, RouteError> {
    let bad = |detail: &str| RouteError::BadJump {
        host: host.into(),
        value: value.into(),
        detail: detail.into(),
    };
    if value.trim().eq_ignore_ascii_case("none") {
        return Ok(ProxyJump::None);
    }
    let mut hops = Vec::new();
    for hop in value.split(',') {
        let hop = hop.trim();
        let (user, rest) = match hop.rsplit_once('@') {
            Some((user, rest)) => (Some(user.to_string()), rest),
            None => (None, hop),
        };
        let (name, port) = match rest.rsplit_once(':') {
            Some((name, port)) => (
                name,
                Some(
                    port.parse::<u16>()
                        .map_err(|_| bad("the port is not a number"))?,
                ),
            ),
            None => (rest, None),
        };
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("a hop has no host name"));
        }
        hops.push(Jump {
            user,
            host: name.to_string(),
            port,
        });
    }
    Ok(ProxyJump::Hops(hops))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(config: &str, toml_text: &str) -> (Resolver, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, config).unwrap();
        let mut settings: SshSettings = toml::from_str(toml_text).unwrap();
        settings.config_file = Some(path);
        (Resolver::new(settings).unwrap(), dir)
    }

    const CONFIG: &str = "\
Host bastion.example.com
    User jump
    Port 2200
    IdentityFile ~/.ssh/jump_key
Host *.example.com !bastion.example.com
    ProxyJump bastion.example.com
    User relops
    HostKeyAlgorithms +ssh-rsa
Host *
    ConnectTimeout 3
";

    #[test]
    fn env_beats_fleetroll_toml_beats_ssh_config_beats_defaults() {
        let (r, _dir) = resolver(CONFIG, "user = \"root\"\nport = 2022\n");
        let route = r.route("h1.example.com").unwrap();
        assert_eq!(route.target.user, "relops", "ssh config over [ssh] user");
        assert_eq!(
            route.target.port, 2022,
            "[ssh] port when the config is silent"
        );
        assert_eq!(route.target.connect_timeout, Duration::from_secs(3));
        assert!(route.target.allow_ssh_rsa);
        assert_eq!(route.target.known_as, vec!["[h1.example.com]:2022"]);
        let jump = &route.jumps[0];
        assert_eq!(
            (jump.name.as_str(), jump.user.as_str(), jump.port),
            ("bastion.example.com", "jump", 2200)
        );
        assert!(jump.identities.files[0].ends_with(".ssh/jump_key"));
        assert!(!jump.allow_ssh_rsa);

        let toml_text = "[[host]]\nmatch = \"h1.*\"\nuser = \"admin\"\nproxy_jump = \"none\"\n";
        let (mut r, _dir) = resolver(CONFIG, toml_text);
        assert_eq!(r.route("h1.example.com").unwrap().target.user, "admin");
        assert!(r.route("h1.example.com").unwrap().jumps.is_empty());
        r.settings.forced.user = Some("forced".into());
        r.settings.forced.port = Some(1);
        let route = r.route("h2.example.com").unwrap();
        assert_eq!(
            (route.target.user.as_str(), route.target.port),
            ("forced", 1)
        );
        assert_eq!(
            route.jumps[0].user, "jump",
            "the variables leave jump hosts alone"
        );
    }

    #[test]
    fn identity_file_none_leaves_only_the_agent() {
        let (r, _dir) = resolver(
            "Host bare\n    IdentityFile none\n",
            "identity_file = \"/etc/fleetroll/id\"\n",
        );
        assert!(r.route("bare").unwrap().target.identities.files.is_empty());
        assert_eq!(
            r.route("other").unwrap().target.identities.files,
            vec![PathBuf::from("/etc/fleetroll/id")]
        );
    }

    #[test]
    fn jump_hosts_chain_and_loops_are_refused() {
        let config = "Host a\n ProxyJump b\nHost b\n ProxyJump c\nHost loop\n ProxyJump loop\n";
        let (r, _dir) = resolver(config, "");
        let route = r.route("a").unwrap();
        let names: Vec<_> = route.jumps.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["c", "b"]);
        assert!(matches!(
            r.route("loop"),
            Err(RouteError::TooManyHops { .. })
        ));
        let (r, _dir) = resolver("Host p\n ProxyCommand nc %h %p\n", "");
        assert!(matches!(r.route("p"), Err(RouteError::ProxyCommand { .. })));
    }

    #[test]
    fn toml_jumps_read_as_openssh_does() {
        let ProxyJump::Hops(hops) = parse_jumps("h", "u@j1:2200, j2").unwrap() else {
            panic!("hops expected");
        };
        assert_eq!(hops[0].user.as_deref(), Some("u"));
        assert_eq!(hops[0].port, Some(2200));
        assert_eq!(hops[1].host, "j2");
        assert!(parse_jumps("h", "j1:port").is_err());
        assert!(asks_for_ssh_rsa("ssh-ed25519,ssh-rsa"));
        assert!(!asks_for_ssh_rsa("-ssh-rsa"));
        assert!(!asks_for_ssh_rsa("rsa-sha2-512"));
    }
}
