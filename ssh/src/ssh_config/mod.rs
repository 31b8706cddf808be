//! # OpenSSH client configuration
//!
//! Reads an `ssh_config(5)` file (and every file it `Include`s) and
//! evaluates it for one destination the way OpenSSH's `readconf.c` does, so
//! that fleetroll reaches a host exactly as `ssh host` would:
//!
//! * one pass over the lines in file order for the host; only the `Host` and
//!   `Match` sections that match apply, and the first value obtained for an
//!   option wins (`IdentityFile` accumulates every value; `UserKnownHostsFile`
//!   takes the whole list of the first line that applies);
//! * `Host` patterns (`*`, `?`, `!negation`, several per line) compare with
//!   the destination as given, case-sensitively, as OpenSSH does;
//! * `Match` with `all`, `host` (the name after `HostName` so far),
//!   `originalhost`, `user`, `localuser`, `canonical` and `final`, each
//!   negatable; `Match final` (or `CanonicalizeHostname`) asks for the second
//!   pass OpenSSH makes, with the resolved host name, where `final` and
//!   `canonical` match. No DNS canonicalisation is done (`CanonicalizeHostname`
//!   is reported as unsupported): that is what OpenSSH does when
//!   canonicalisation does not change the name;
//! * `Include` with globs, `~` and paths relative to `~/.ssh/`, glob results
//!   sorted, at most 16 levels deep; an `Include` inside a `Host`/`Match`
//!   block applies only when that block matches. An included file must not
//!   be writable by group or others and must be owned by root or the user, as
//!   OpenSSH demands;
//! * `%`-tokens, `${VAR}` and `~` expanded where OpenSSH expands them
//!   (`HostName`: `%h`, `%%`; `IdentityFile`, `UserKnownHostsFile`,
//!   `IdentityAgent`: `~`, `%%`, `%d`, `%h`, `%i`, `%k`, `%L`, `%l`, `%n`, `%p`,
//!   `%r`, `%u`, `${VAR}`), after the whole evaluation.
//!
//! The reference is OpenSSH 9.2p1 as Debian 12 ships it (which has 10.3's
//! ProxyJump/ProxyCommand precedence backported); the module tests compare
//! [`SshConfig::resolve`] with `ssh -G` when `/usr/bin/ssh` is installed.
//!
//! Where this module deliberately differs from OpenSSH:
//!
//! * an unknown keyword is not a fatal error: it is listed in
//!   [`HostOptions::unsupported`] when it applies to the host (unless an
//!   earlier `IgnoreUnknown` matches it, as in OpenSSH);
//! * a `Match` criterion that cannot be evaluated here (`exec`,
//!   `localnetwork`, `tagged`, `sessiontype`, `command`, `version`, or an
//!   unknown word) makes the block not match, and the line is listed in
//!   [`HostOptions::unsupported`] (as `Match exec`, say) when the line's
//!   other criteria match, so the caller can say that a block that might
//!   apply was skipped;
//! * a `%`-token or `${VAR}` that OpenSSH would refuse when connecting (`%C`,
//!   an unknown token, an unset variable) is left as written and listed in
//!   [`HostOptions::unsupported`] (as `IdentityFile %C`, say);
//! * the values of options fleetroll does not act on are not checked (nor
//!   are `HostKeyAlgorithms` names);
//! * `ProxyJump none # comment` (or `none` followed by other words) is
//!   [`ProxyJump::None`]; OpenSSH takes it for a jump host named `none`.
//!
//! Quirks of OpenSSH 9.2 kept on purpose because `ssh` behaves so: only the
//! first word of a `ProxyJump` value counts (its `rtrim()` cuts at the first
//! whitespace); `Match !final` also asks for the final pass; `ProxyJump none`
//! does not keep a later `ProxyCommand` out.
//!
//! ```
//! use std::path::Path;
//! use fleetroll_ssh::ssh_config::{MatchContext, ProxyJump, SshConfig};
//!
//! let text = "\
//! Host *.example.com !bastion.example.com
//!     ProxyJump relops@bastion.example.com:2222
//! Host *
//!     User deploy
//!     IdentityFile ~/.ssh/id_%h
//! ";
//! let config = SshConfig::parse(text, Path::new("config"), Path::new("/home/me")).unwrap();
//! let context = MatchContext { local_user: "me".into(), home: "/home/me".into() };
//! let options = config.resolve("web1.example.com", &context);
//! assert_eq!(options.user.as_deref(), Some("deploy"));
//! assert!(matches!(options.proxy_jump, Some(ProxyJump::Hops(ref hops)) if hops[0].port == Some(2222)));
//! assert_eq!(options.identity_files, vec![Path::new("/home/me/.ssh/id_web1.example.com")]);
//! ```

mod eval;
mod expand;
mod jump;
mod keywords;
mod lex;
mod parse;
pub(crate) mod pattern;
mod sys;
mod value;

#[cfg(test)]
mod differential;
#[cfg(test)]
mod tests;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A parsed config file with the files it includes, ready to be evaluated
/// for any number of hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshConfig {
    /// Every file read; entries refer to them by index. The first is the
    /// file (or text) given to [`SshConfig::load`] or [`SshConfig::parse`].
    files: Vec<PathBuf>,
    entries: Vec<parse::Entry>,
}

/// Why a config could not be read. Errors name the file and line.
#[derive(Debug, thiserror::Error)]
pub enum SshConfigError {
    /// The file, or a file an `Include` names, exists but cannot be read.
    #[error("cannot read the ssh config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A line OpenSSH would refuse (bad value, missing argument, bad quotes…).
    #[error("{}:{line}: {detail}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        detail: String,
    },
    /// More than 16 levels of `Include` (OpenSSH's limit).
    #[error("{}:{line}: Include nested more than 16 levels deep", path.display())]
    IncludeDepth { path: PathBuf, line: usize },
    /// An `Include` that includes a file being read already: OpenSSH would
    /// recurse until its depth limit.
    #[error("{}:{line}: Include of {} includes itself", path.display(), target.display())]
    IncludeCycle {
        path: PathBuf,
        line: usize,
        target: PathBuf,
    },
    /// An included file that is writable by group or others, or owned by
    /// someone other than root or this user: OpenSSH refuses it.
    #[error("bad owner or permissions on the included ssh config {}", path.display())]
    Permissions { path: PathBuf },
}

/// What `Match` criteria and `~`/`%`-tokens are evaluated against: the user
/// fleetroll runs as, from the passwd database as OpenSSH takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchContext {
    /// `Match localuser`, `%u`, and `%r` when the config sets no `User`.
    pub local_user: String,
    /// `~` and `%d` in `IdentityFile`, `UserKnownHostsFile` and `IdentityAgent`.
    pub home: PathBuf,
}

impl MatchContext {
    /// The user this process runs as and its passwd home (OpenSSH ignores
    /// `$HOME` for `~/.ssh`, and so do we); none when passwd has no entry.
    pub fn current_user() -> Option<MatchContext> {
        sys::current_user().map(|pw| MatchContext {
            local_user: pw.name,
            home: pw.home,
        })
    }
}

/// The options the config gives one host. `None` (or empty) means the
/// config does not set it, and the caller's default applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostOptions {
    /// `HostName`, with `%h` (the host as given) and `%%` expanded and
    /// lowercased unless it is an IP address, as OpenSSH does. When `None`,
    /// OpenSSH connects to the host as given, lowercased.
    pub host_name: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    /// Every `IdentityFile` that applies, in order, duplicates dropped, with
    /// `~` and tokens expanded after the whole evaluation (so `%r`, `%h` and
    /// `%p` are the final user, host name and port). `IdentityFile none`
    /// entries are dropped, as OpenSSH drops them when loading keys.
    pub identity_files: Vec<PathBuf>,
    /// An `IdentityFile none` applied: no default key files (only the
    /// listed ones and the agent's).
    pub no_default_identities: bool,
    pub identities_only: Option<bool>,
    pub identity_agent: Option<IdentityAgent>,
    /// The first of `ProxyJump` and `ProxyCommand` wins, as in OpenSSH (a
    /// `ProxyJump` list after a `ProxyCommand` is ignored and the other way
    /// round; `ProxyJump none` only stops later `ProxyJump` lines).
    pub proxy_jump: Option<ProxyJump>,
    /// `ProxyCommand` as written (tokens not expanded); `ProxyCommand none`
    /// gives `None` (after keeping a later `ProxyJump` out), as OpenSSH
    /// clears it.
    pub proxy_command: Option<String>,
    pub connect_timeout: Option<Duration>,
    pub server_alive_interval: Option<Duration>,
    pub server_alive_count_max: Option<u32>,
    /// The files of the first `UserKnownHostsFile` that applies, `~` and
    /// tokens expanded; `none` gives `Some(vec![])`.
    pub user_known_hosts_files: Option<Vec<PathBuf>>,
    /// `HostKeyAlias`, lowercased as OpenSSH does.
    pub host_key_alias: Option<String>,
    /// `HostKeyAlgorithms` as written, e.g. `+ssh-rsa` or `ssh-ed25519,rsa-sha2-512`.
    pub host_key_algorithms: Option<String>,
    pub strict_host_key_checking: Option<StrictHostKeyChecking>,
    pub batch_mode: Option<bool>,
    /// Options set for this host that fleetroll does not act on, each with
    /// where it was set: every other option (known to OpenSSH or not) once,
    /// at its first occurrence; `Match` lines with a criterion that cannot
    /// be evaluated; tokens that cannot be expanded.
    pub unsupported: Vec<Unsupported>,
}

/// `IdentityAgent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityAgent {
    /// `none`: no agent.
    None,
    /// `SSH_AUTH_SOCK`: the agent the environment names.
    Env,
    /// A socket path, with `~`, tokens and `${VAR}` expanded (and the legacy
    /// `$VAR` form read from the environment).
    Socket(PathBuf),
}

/// `ProxyJump`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyJump {
    /// `ProxyJump none`: connect directly.
    None,
    /// The jump hosts, in the order written (the first is connected to first).
    Hops(Vec<Jump>),
}

/// One `ProxyJump` hop: `[user@]host[:port]` or `ssh://[user@]host[:port]`,
/// an IPv6 address in brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jump {
    pub user: Option<String>,
    /// Brackets around an IPv6 address removed.
    pub host: String,
    pub port: Option<u16>,
}

/// `StrictHostKeyChecking`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrictHostKeyChecking {
    /// `yes` (or `true`).
    Yes,
    /// `accept-new`.
    AcceptNew,
    /// `no`, `off` (or `false`).
    No,
    /// `ask`.
    Ask,
}

/// An option (or `Match` criterion, or token) the config sets for a host
/// that fleetroll does not act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    /// As written in the file: `ForwardAgent`, `Match exec`, `IdentityFile %C`.
    pub option: String,
    /// Where: `path:line`.
    pub at: String,
}

impl SshConfig {
    /// Reads `path` and every file it includes. `home` expands `~` and
    /// anchors relative Includes (home/.ssh).
    pub fn load(path: &Path, home: &Path) -> Result<SshConfig, SshConfigError> {
        let text = std::fs::read(path).map_err(|source| SshConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        parse::parse(&text, path, home)
    }

    /// The same from text (`origin` names it in errors and warnings).
    pub fn parse(text: &str, origin: &Path, home: &Path) -> Result<SshConfig, SshConfigError> {
        parse::parse(text.as_bytes(), origin, home)
    }

    /// Evaluates the config for `host` as `ssh host` would.
    pub fn resolve(&self, host: &str, context: &MatchContext) -> HostOptions {
        eval::resolve(self, host, context)
    }
}
