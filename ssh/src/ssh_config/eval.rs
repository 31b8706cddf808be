//! Evaluating the entries for one host as readconf.c does (first value
//! wins, only matching sections apply, `Include`s keep the including file's
//! state) and then finishing the options as ssh.c does (HostName expanded
//! and lowercased, tokens expanded last).

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::expand::{expand, tilde};
use super::parse::{Criterion, Entry, Item, MatchLine, Setting};
use super::pattern::{ListMatch, host_line_matches, match_hostname, match_pattern_list};
use super::{
    HostOptions, IdentityAgent, MatchContext, ProxyJump, SshConfig, StrictHostKeyChecking,
    Unsupported, sys,
};

/// Where a line is: file index and line number.
#[derive(Debug, Clone, Copy)]
struct At {
    file: usize,
    line: usize,
}

/// Which of ProxyJump/ProxyCommand took the proxy slot.
#[derive(Debug, Clone)]
enum Proxy {
    /// A `ProxyJump` list (OpenSSH sets its ProxyCommand to `none` then).
    Jump,
    Command(String),
}

/// The values obtained so far; the first one wins.
#[derive(Debug, Default)]
struct Got {
    host_name: Option<(String, At)>,
    user: Option<String>,
    port: Option<u16>,
    identity_files: Vec<(String, At)>,
    identities_only: Option<bool>,
    identity_agent: Option<(String, At)>,
    jump: Option<ProxyJump>,
    proxy: Option<Proxy>,
    connect_timeout: Option<u32>,
    server_alive_interval: Option<u32>,
    server_alive_count_max: Option<u32>,
    user_known_hosts_files: Option<(Vec<String>, At)>,
    host_key_alias: Option<String>,
    host_key_algorithms: Option<String>,
    strict_host_key_checking: Option<StrictHostKeyChecking>,
    batch_mode: Option<bool>,
    canonicalize: Option<bool>,
    ignore_unknown: Option<String>,
    /// A `Match final` was seen: OpenSSH evaluates the config again.
    want_final: bool,
    unsupported: Vec<Unsupported>,
    reported: HashSet<String>,
}

struct Eval<'a> {
    config: &'a SshConfig,
    context: &'a MatchContext,
    /// The host as given: `Match originalhost`, `%h` in HostName, `%n`.
    original: &'a str,
    /// What `Host` lines match: the host as given, then (final pass) the
    /// resolved host name.
    host: String,
    final_pass: bool,
    got: Got,
}

pub(super) fn resolve(config: &SshConfig, host: &str, context: &MatchContext) -> HostOptions {
    let mut eval = Eval {
        config,
        context,
        original: host,
        host: host.to_string(),
        final_pass: false,
        got: Got::default(),
    };
    eval.walk(&config.entries, &mut true, false);
    let host = eval.host_after_first_pass();
    // ssh.c: a `Match final`, or canonicalisation (which fleetroll does not
    // do, so the name stays as it is), makes a second pass with the host
    // name resolved so far, where `final` and `canonical` match.
    if eval.got.want_final || eval.got.canonicalize == Some(true) {
        eval.final_pass = true;
        eval.host = host.clone();
        eval.walk(&config.entries, &mut true, false);
    }
    eval.finish(host)
}

/// Whether OpenSSH takes `name` for an address (which it does not lowercase).
fn is_addr(name: &str) -> bool {
    let bare = name.split('%').next().unwrap_or(name);
    bare.parse::<IpAddr>().is_ok()
}

impl Eval<'_> {
    fn at(&self, at: At) -> String {
        let path = self
            .config
            .files
            .get(at.file)
            .map(|p| p.display().to_string());
        format!("{}:{}", path.unwrap_or_default(), at.line)
    }

    /// Lists `option` once per `key`.
    fn report(&mut self, option: String, at: At, key: String) {
        if self.got.reported.insert(key) {
            let at = self.at(at);
            self.got.unsupported.push(Unsupported { option, at });
        }
    }

    /// Lists what an expansion could not expand, once per line.
    fn report_problems(&mut self, keyword: &str, problems: Vec<String>, at: At) {
        for problem in problems {
            let option = format!("{keyword} {problem}");
            let key = format!("{}@{}:{}", option.to_ascii_lowercase(), at.file, at.line);
            self.report(option, at, key);
        }
    }

    /// One file's entries. `active` is the state of the section around
    /// them; `never` is set inside a file included from a section that
    /// does not apply, where nothing ever matches.
    fn walk(&mut self, entries: &[Entry], active: &mut bool, never: bool) {
        for entry in entries {
            let at = At {
                file: entry.file,
                line: entry.line,
            };
            match &entry.item {
                Item::Host(patterns) => *active = !never && host_line_matches(&self.host, patterns),
                Item::Match(line) => {
                    let matched = self.eval_match(line, at, never);
                    *active = !never && matched;
                }
                Item::Include(files) => {
                    let outer = *active;
                    for file in files {
                        self.walk(file, active, never || !outer);
                        // A Host or Match in the included file does not
                        // change the including file's section.
                        *active = outer;
                    }
                }
                Item::Set(setting) => {
                    if *active {
                        self.apply(setting, at);
                    }
                }
            }
        }
    }

    /// The name `Match host` compares: HostName so far with `%h` expanded
    /// (the resolved name in the final pass), else the host as given.
    fn match_host(&self) -> String {
        if self.final_pass {
            return self.host.clone();
        }
        match &self.got.host_name {
            Some((name, _)) => expand(name, Some(&[('h', self.original)]), false).text,
            None => self.original.to_string(),
        }
    }

    fn eval_match(&mut self, line: &MatchLine, at: At, never: bool) -> bool {
        let host = self.match_host();
        let remote_user = self
            .got
            .user
            .clone()
            .unwrap_or_else(|| self.context.local_user.clone());
        let mut result = true;
        // Whether the criteria that can be evaluated all match.
        let mut others = true;
        let mut unevaluable = None;
        for term in &line.terms {
            let matched = match &term.criterion {
                Criterion::All => {
                    result &= !term.negate;
                    others &= !term.negate;
                    break;
                }
                Criterion::Canonical => self.final_pass,
                Criterion::Final => {
                    // OpenSSH 9.2 asks for the final pass for `!final` too.
                    self.got.want_final = true;
                    self.final_pass
                }
                Criterion::Host(patterns) => match_hostname(&host, patterns),
                Criterion::OriginalHost(patterns) => match_hostname(self.original, patterns),
                Criterion::User(patterns) => {
                    match_pattern_list(&remote_user, patterns, false) == ListMatch::Yes
                }
                Criterion::LocalUser(patterns) => {
                    match_pattern_list(&self.context.local_user, patterns, false) == ListMatch::Yes
                }
                Criterion::Unevaluable(name) => {
                    result = false;
                    unevaluable.get_or_insert(name);
                    continue;
                }
            };
            if matched == term.negate {
                result = false;
                others = false;
            }
        }
        if let Some(name) = unevaluable
            && others
            && !never
        {
            let option = format!("{} {name}", line.keyword);
            let key = format!("{}@{}:{}", option.to_ascii_lowercase(), at.file, at.line);
            self.report(option, at, key);
        }
        result
    }

    fn apply(&mut self, setting: &Setting, at: At) {
        fn first<T: Clone>(slot: &mut Option<T>, value: &T) {
            if slot.is_none() {
                *slot = Some(value.clone());
            }
        }
        let got = &mut self.got;
        match setting {
            Setting::HostName(name) => first(&mut got.host_name, &(name.clone(), at)),
            Setting::User(user) => first(&mut got.user, user),
            Setting::Port(port) => first(&mut got.port, port),
            Setting::IdentityFile(file) => {
                // OpenSSH drops a file already listed.
                if !got.identity_files.iter().any(|(f, _)| f == file) {
                    got.identity_files.push((file.clone(), at));
                }
            }
            Setting::IdentitiesOnly(on) => first(&mut got.identities_only, on),
            Setting::IdentityAgent(agent) => first(&mut got.identity_agent, &(agent.clone(), at)),
            Setting::ProxyJump(ProxyJump::None) => first(&mut got.jump, &ProxyJump::None),
            Setting::ProxyJump(hops) => {
                if got.jump.is_none() && got.proxy.is_none() {
                    got.jump = Some(hops.clone());
                    got.proxy = Some(Proxy::Jump);
                }
            }
            Setting::ProxyCommand(command) => {
                first(&mut got.proxy, &Proxy::Command(command.clone()))
            }
            Setting::ConnectTimeout(secs) => {
                if let Some(secs) = secs {
                    first(&mut got.connect_timeout, secs);
                }
            }
            Setting::ServerAliveInterval(secs) => {
                if let Some(secs) = secs {
                    first(&mut got.server_alive_interval, secs);
                }
            }
            Setting::ServerAliveCountMax(count) => first(&mut got.server_alive_count_max, count),
            Setting::UserKnownHostsFile(files) => {
                if !files.is_empty() {
                    first(&mut got.user_known_hosts_files, &(files.clone(), at));
                }
            }
            Setting::HostKeyAlias(alias) => first(&mut got.host_key_alias, alias),
            Setting::HostKeyAlgorithms(algorithms) => {
                first(&mut got.host_key_algorithms, algorithms)
            }
            Setting::StrictHostKeyChecking(strict) => {
                first(&mut got.strict_host_key_checking, strict)
            }
            Setting::BatchMode(on) => first(&mut got.batch_mode, on),
            Setting::IgnoreUnknown(patterns) => first(&mut got.ignore_unknown, patterns),
            Setting::CanonicalizeHostname { on, written } => {
                first(&mut got.canonicalize, on);
                self.report(written.clone(), at, written.to_ascii_lowercase());
            }
            Setting::Other {
                written,
                lower,
                known,
            } => {
                let ignored = !known
                    && got.ignore_unknown.as_deref().is_some_and(|patterns| {
                        match_pattern_list(lower, patterns, true) == ListMatch::Yes
                    });
                if !ignored {
                    self.report(written.clone(), at, lower.clone());
                }
            }
        }
    }

    /// ssh.c after the first pass: HostName with `%h` expanded, the name
    /// lowercased unless it is an address.
    fn host_after_first_pass(&mut self) -> String {
        let host = match self.got.host_name.clone() {
            Some((name, at)) => {
                let expanded = expand(&name, Some(&[('h', self.original)]), false);
                self.report_problems("HostName", expanded.problems, at);
                expanded.text
            }
            None => self.original.to_string(),
        };
        if is_addr(&host) {
            host
        } else {
            host.to_ascii_lowercase()
        }
    }

    /// ssh.c's defaults and token expansion, after every pass.
    fn finish(mut self, host: String) -> HostOptions {
        let context = self.context;
        let remote_user = self
            .got
            .user
            .clone()
            .unwrap_or_else(|| context.local_user.clone());
        let port = self.got.port.unwrap_or(22).to_string();
        let host_key_alias = self
            .got
            .host_key_alias
            .as_deref()
            .map(str::to_ascii_lowercase);
        let key_alias = host_key_alias
            .clone()
            .unwrap_or_else(|| self.original.to_string());
        let this_host = sys::hostname();
        let short_host = this_host.split('.').next().unwrap_or_default().to_string();
        let uid = sys::uid().to_string();
        let home = context.home.to_string_lossy().into_owned();
        let original = self.original.to_string();
        let tokens = [
            ('L', short_host.as_str()),
            ('i', uid.as_str()),
            ('k', key_alias.as_str()),
            ('l', this_host.as_str()),
            ('n', original.as_str()),
            ('p', port.as_str()),
            ('d', home.as_str()),
            ('h', host.as_str()),
            ('r', remote_user.as_str()),
            ('u', context.local_user.as_str()),
        ];
        // ssh.c: tilde_expand_filename, then percent and ${VAR} expansion.
        let path = |eval: &mut Self, keyword: &str, raw: &str, at: At| -> String {
            let text = match tilde(raw, &context.home) {
                Ok(text) => text,
                Err(problem) => {
                    eval.report_problems(keyword, vec![problem], at);
                    raw.to_string()
                }
            };
            let expanded = expand(&text, Some(&tokens), true);
            eval.report_problems(keyword, expanded.problems, at);
            expanded.text
        };

        let no_default_identities = self
            .got
            .identity_files
            .iter()
            .any(|(file, _)| file.eq_ignore_ascii_case("none"));
        let identity_files = std::mem::take(&mut self.got.identity_files)
            .into_iter()
            .filter(|(file, _)| !file.eq_ignore_ascii_case("none"))
            .map(|(file, at)| PathBuf::from(path(&mut self, "IdentityFile", &file, at)))
            .collect();
        let user_known_hosts_files = self.got.user_known_hosts_files.take().map(|(files, at)| {
            if files
                .first()
                .is_some_and(|f| f.eq_ignore_ascii_case("none"))
            {
                return Vec::new();
            }
            files
                .iter()
                .map(|file| PathBuf::from(path(&mut self, "UserKnownHostsFile", file, at)))
                .collect()
        });
        let identity_agent = self.got.identity_agent.take().map(|(raw, at)| {
            let agent = path(&mut self, "IdentityAgent", &raw, at);
            match agent.as_str() {
                "SSH_AUTH_SOCK" | "$SSH_AUTH_SOCK" => IdentityAgent::Env,
                "none" => IdentityAgent::None,
                // The legacy `$VAR` form: the socket the variable names;
                // unset or empty, no agent.
                legacy if legacy.starts_with('$') && !legacy.starts_with("${") => {
                    match std::env::var_os(&legacy[1..]).filter(|v| !v.is_empty()) {
                        Some(socket) => IdentityAgent::Socket(socket.into()),
                        None => IdentityAgent::None,
                    }
                }
                socket => IdentityAgent::Socket(socket.into()),
            }
        });
        let got = self.got;
        let seconds = |s: Option<u32>| s.map(|s| Duration::from_secs(u64::from(s)));
        HostOptions {
            host_name: got.host_name.map(|_| host),
            user: got.user,
            port: got.port,
            identity_files,
            no_default_identities,
            identities_only: got.identities_only,
            identity_agent,
            proxy_jump: got.jump,
            // OpenSSH clears `ProxyCommand none` (which still kept a later
            // ProxyJump out).
            proxy_command: match got.proxy {
                Some(Proxy::Command(command)) if command != "none" => Some(command),
                _ => None,
            },
            connect_timeout: seconds(got.connect_timeout),
            server_alive_interval: seconds(got.server_alive_interval),
            server_alive_count_max: got.server_alive_count_max,
            user_known_hosts_files,
            host_key_alias,
            host_key_algorithms: got.host_key_algorithms,
            strict_host_key_checking: got.strict_host_key_checking,
            batch_mode: got.batch_mode,
            unsupported: got.unsupported,
        }
    }
}
