//! Reading config files into entries: each line's keyword and checked
//! value, with `Include`d files read in place. Values are checked for every
//! line, whether or not it will apply to a host, as OpenSSH checks them.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::expand::check_agent_path;
use super::jump::parse_proxy_jump;
use super::lex::{Delim, Line, lex_line};
use super::value::{
    a2port, canonicalize_hostname, convtime, flag, strict_host_key_checking, strtonum,
};
use super::{ProxyJump, SshConfig, SshConfigError, StrictHostKeyChecking, keywords, sys};

/// OpenSSH's `READCONF_MAX_DEPTH`: the file given is at depth 0.
pub(super) const MAX_INCLUDE_DEPTH: usize = 16;
/// OpenSSH's `SSH_MAX_HOSTS_FILES`.
const MAX_HOSTS_FILES: usize = 32;

/// One line that means something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    /// Index into [`SshConfig`]'s files.
    pub file: usize,
    pub line: usize,
    pub item: Item,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Item {
    /// `Host` patterns as written (`!` kept).
    Host(Vec<String>),
    Match(MatchLine),
    /// The files one `Include` line brings in, in order, each as its entries.
    Include(Vec<Vec<Entry>>),
    Set(Setting),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MatchLine {
    /// `Match` as written, for reports.
    pub keyword: String,
    pub terms: Vec<Term>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Term {
    pub negate: bool,
    pub criterion: Criterion,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Criterion {
    All,
    Canonical,
    Final,
    Host(String),
    OriginalHost(String),
    User(String),
    LocalUser(String),
    /// `exec`, `localnetwork`, `tagged`, … or an unknown word, as written.
    Unevaluable(String),
}

/// An option line, its value checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Setting {
    HostName(String),
    User(String),
    Port(u16),
    IdentityFile(String),
    IdentitiesOnly(bool),
    IdentityAgent(String),
    ProxyJump(ProxyJump),
    ProxyCommand(String),
    /// Seconds; `None` for `none`, which leaves the option unset.
    ConnectTimeout(Option<u32>),
    ServerAliveInterval(Option<u32>),
    ServerAliveCountMax(u32),
    UserKnownHostsFile(Vec<String>),
    HostKeyAlias(String),
    HostKeyAlgorithms(String),
    StrictHostKeyChecking(StrictHostKeyChecking),
    BatchMode(bool),
    /// Whether it asks for canonicalisation (which makes OpenSSH evaluate
    /// the config a second time); fleetroll does not canonicalise.
    CanonicalizeHostname {
        on: bool,
        written: String,
    },
    IgnoreUnknown(String),
    /// Anything else: `known` when OpenSSH knows the keyword.
    Other {
        written: String,
        lower: String,
        known: bool,
    },
}

/// Parses `text` (read from, or named, `origin`) and the files it includes.
pub(super) fn parse(text: &[u8], origin: &Path, home: &Path) -> Result<SshConfig, SshConfigError> {
    let mut parser = Parser {
        home,
        files: Vec::new(),
        reading: Vec::new(),
    };
    let entries = parser.file(text, origin, 0)?;
    Ok(SshConfig {
        files: parser.files,
        entries,
    })
}

struct Parser<'a> {
    home: &'a Path,
    files: Vec<PathBuf>,
    /// The files being read, outermost first, for spotting cycles.
    reading: Vec<PathBuf>,
}

impl Parser<'_> {
    fn file(
        &mut self,
        text: &[u8],
        path: &Path,
        depth: usize,
    ) -> Result<Vec<Entry>, SshConfigError> {
        let file = self.files.len();
        self.files.push(path.to_path_buf());
        self.reading
            .push(std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()));
        let entries = self.lines(text, file, path, depth);
        self.reading.pop();
        entries
    }

    fn lines(
        &mut self,
        text: &[u8],
        file: usize,
        path: &Path,
        depth: usize,
    ) -> Result<Vec<Entry>, SshConfigError> {
        let mut entries = Vec::new();
        for (index, bytes) in text.split(|&b| b == b'\n').enumerate() {
            let line = index + 1;
            let syntax = |detail: String| SshConfigError::Syntax {
                path: path.to_path_buf(),
                line,
                detail,
            };
            let text = std::str::from_utf8(bytes).map_err(|_| syntax("not valid UTF-8".into()))?;
            let Some(lexed) = lex_line(text).map_err(syntax)? else {
                continue;
            };
            let lower = lexed.keyword.to_ascii_lowercase();
            let item = match lower.as_str() {
                "host" => {
                    if lexed.args.iter().any(String::is_empty) {
                        return Err(syntax("keyword host empty argument".into()));
                    }
                    Item::Host(lexed.args)
                }
                "match" => Item::Match(parse_match(&lexed).map_err(syntax)?),
                "include" => Item::Include(self.include(&lexed, path, line, depth)?),
                _ => Item::Set(setting(&lower, &lexed).map_err(syntax)?),
            };
            entries.push(Entry { file, line, item });
        }
        Ok(entries)
    }

    /// The files an `Include` line names, read. A pattern that matches
    /// nothing (or a file that vanished) is silently nothing, as in OpenSSH;
    /// a directory reads as empty.
    fn include(
        &mut self,
        lexed: &Line,
        path: &Path,
        line: usize,
        depth: usize,
    ) -> Result<Vec<Vec<Entry>>, SshConfigError> {
        let mut files = Vec::new();
        for arg in &lexed.args {
            if arg.is_empty() {
                return Err(SshConfigError::Syntax {
                    path: path.to_path_buf(),
                    line,
                    detail: "keyword include empty argument".into(),
                });
            }
            let targets = self.glob(arg);
            if targets.is_empty() {
                tracing::debug!(
                    at = %format!("{}:{line}", path.display()),
                    include = %arg,
                    "ssh config Include matched no files"
                );
            }
            for target in targets {
                let read_error = |source| SshConfigError::Read {
                    path: target.clone(),
                    source,
                };
                let meta = match std::fs::metadata(&target) {
                    Ok(meta) => meta,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(read_error(e)),
                };
                if (meta.uid() != 0 && meta.uid() != sys::uid()) || meta.mode() & 0o022 != 0 {
                    return Err(SshConfigError::Permissions { path: target });
                }
                let canonical = std::fs::canonicalize(&target).unwrap_or_else(|_| target.clone());
                if self.reading.contains(&canonical) {
                    return Err(SshConfigError::IncludeCycle {
                        path: path.to_path_buf(),
                        line,
                        target,
                    });
                }
                if depth + 1 > MAX_INCLUDE_DEPTH {
                    return Err(SshConfigError::IncludeDepth {
                        path: path.to_path_buf(),
                        line,
                    });
                }
                let text = if meta.is_dir() {
                    Vec::new()
                } else {
                    match std::fs::read(&target) {
                        Ok(text) => text,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(read_error(e)),
                    }
                };
                files.push(self.file(&text, &target, depth + 1)?);
            }
        }
        Ok(files)
    }

    /// What an `Include` argument names: absolute, `~`/`~user`, or relative
    /// to `~/.ssh/`; a glob, its matches sorted bytewise (hidden files only
    /// when the pattern names the dot, as glob(3)).
    fn glob(&self, arg: &str) -> Vec<PathBuf> {
        let home = self.home.to_string_lossy();
        let home = home.trim_end_matches('/');
        // (pattern with the home directory escaped, the same unescaped)
        let (pattern, literal) = if arg.starts_with('/') {
            (arg.to_string(), arg.to_string())
        } else if let Some(rest) = arg.strip_prefix('~') {
            let (user, tail) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
            let dir = if user.is_empty() {
                Some(home.to_string())
            } else {
                sys::user_by_name(user)
                    .map(|pw| pw.home.to_string_lossy().trim_end_matches('/').to_string())
            };
            match dir {
                Some(dir) => (
                    format!("{}{tail}", glob::Pattern::escape(&dir)),
                    format!("{dir}{tail}"),
                ),
                None => (arg.to_string(), arg.to_string()),
            }
        } else {
            (
                format!("{}/.ssh/{arg}", glob::Pattern::escape(home)),
                format!("{home}/.ssh/{arg}"),
            )
        };
        let options = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: true,
        };
        let mut found: Vec<PathBuf> = match glob::glob_with(&pattern, options) {
            Ok(paths) => paths.filter_map(Result::ok).collect(),
            // Not a pattern the glob crate takes (an unclosed `[`, say):
            // glob(3) takes such characters literally.
            Err(_) => {
                let literal = PathBuf::from(literal);
                if literal.symlink_metadata().is_ok() {
                    vec![literal]
                } else {
                    Vec::new()
                }
            }
        };
        found.sort_by(|a, b| a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes()));
        found.dedup();
        found
    }
}

/// The one argument of a single-valued option.
fn one_arg(lexed: &Line) -> Result<String, String> {
    let arg = match lexed.args.first() {
        Some(arg) if !arg.is_empty() => arg.clone(),
        _ => return Err("missing argument".into()),
    };
    extra_args(lexed, 1)?;
    Ok(arg)
}

fn extra_args(lexed: &Line, wanted: usize) -> Result<(), String> {
    if lexed.args.len() > wanted {
        return Err(format!(
            "keyword {} extra arguments at end of line",
            lexed.keyword.to_ascii_lowercase()
        ));
    }
    Ok(())
}

/// A yes/no (true/false) option.
fn flag_arg(lexed: &Line) -> Result<bool, String> {
    let arg = one_arg(lexed)?;
    flag(&arg).ok_or_else(|| {
        format!(
            "{}: unsupported option \"{arg}\" (yes or no)",
            lexed.keyword
        )
    })
}

/// A time option: `none` leaves it unset.
fn time_arg(lexed: &Line) -> Result<Option<u32>, String> {
    let arg = one_arg(lexed).map_err(|_| "missing time value".to_string())?;
    if arg == "none" {
        return Ok(None);
    }
    convtime(&arg)
        .map(Some)
        .ok_or_else(|| format!("{}: invalid time value \"{arg}\"", lexed.keyword))
}

/// readconf.c's `parse_int` (0 to `INT_MAX`).
fn int_arg(lexed: &Line) -> Result<u32, String> {
    let arg = one_arg(lexed).map_err(|_| "integer value missing".to_string())?;
    let value = strtonum(&arg, 0, i64::from(i32::MAX))
        .map_err(|why| format!("{}: integer value {why}", lexed.keyword))?;
    u32::try_from(value).map_err(|_| format!("{}: integer value too large", lexed.keyword))
}

/// What `ProxyCommand` and `ProxyJump` take: the rest of the line as
/// written, after whitespace and `=`.
fn raw_rest(lexed: &Line) -> &str {
    lexed.rest.trim_start_matches([' ', '\t', '\r', '\n', '='])
}

/// An option line and its checked value.
fn setting(lower: &str, lexed: &Line) -> Result<Setting, String> {
    Ok(match lower {
        "hostname" => Setting::HostName(one_arg(lexed)?),
        "user" => Setting::User(one_arg(lexed)?),
        "port" => {
            let arg = one_arg(lexed)?;
            Setting::Port(a2port(&arg).ok_or_else(|| format!("Bad port '{arg}'"))?)
        }
        "identityfile" | "identityfile2" => Setting::IdentityFile(one_arg(lexed)?),
        "identitiesonly" => Setting::IdentitiesOnly(flag_arg(lexed)?),
        "batchmode" => Setting::BatchMode(flag_arg(lexed)?),
        "stricthostkeychecking" => {
            let arg = one_arg(lexed)?;
            Setting::StrictHostKeyChecking(strict_host_key_checking(&arg).ok_or_else(|| {
                format!(
                    "{}: unsupported option \"{arg}\" (yes, no, ask or accept-new)",
                    lexed.keyword
                )
            })?)
        }
        "identityagent" => {
            let arg = one_arg(lexed)?;
            check_agent_path(&arg)?;
            Setting::IdentityAgent(arg)
        }
        "proxyjump" => Setting::ProxyJump(parse_proxy_jump(raw_rest(lexed))?),
        "proxycommand" => Setting::ProxyCommand(raw_rest(lexed).to_string()),
        "connecttimeout" => Setting::ConnectTimeout(time_arg(lexed)?),
        "serveraliveinterval" => Setting::ServerAliveInterval(time_arg(lexed)?),
        "serveralivecountmax" => Setting::ServerAliveCountMax(int_arg(lexed)?),
        "userknownhostsfile" => {
            let files = &lexed.args;
            if files.iter().any(String::is_empty) {
                return Err("keyword userknownhostsfile empty argument".into());
            }
            if files.len() > 1 && files.iter().any(|f| f.eq_ignore_ascii_case("none")) {
                return Err(
                    "keyword userknownhostsfile \"none\" argument must appear alone".into(),
                );
            }
            if files.len() > MAX_HOSTS_FILES {
                return Err("too many userknownhostsfile entries".into());
            }
            Setting::UserKnownHostsFile(files.clone())
        }
        "hostkeyalias" => Setting::HostKeyAlias(one_arg(lexed)?),
        "hostkeyalgorithms" => Setting::HostKeyAlgorithms(one_arg(lexed)?),
        "ignoreunknown" => Setting::IgnoreUnknown(one_arg(lexed)?),
        "canonicalizehostname" => {
            let arg = one_arg(lexed)?;
            let on = canonicalize_hostname(&arg).ok_or_else(|| {
                format!(
                    "{}: unsupported option \"{arg}\" (yes, no or always)",
                    lexed.keyword
                )
            })?;
            Setting::CanonicalizeHostname {
                on,
                written: lexed.keyword.clone(),
            }
        }
        _ => Setting::Other {
            written: lexed.keyword.clone(),
            lower: lower.to_string(),
            known: keywords::is_known(lower),
        },
    })
}

/// readconf.c `match_cfg_line`'s reading of the criteria (words split as
/// `strdelim` splits them, so `host=a` is `host a`).
fn parse_match(lexed: &Line) -> Result<MatchLine, String> {
    let mut words = Delim::new(&lexed.rest);
    let mut terms = Vec::new();
    let mut attributes = 0;
    let done = |terms| MatchLine {
        keyword: lexed.keyword.clone(),
        terms,
    };
    while let Some(word) = words.next() {
        if word.is_empty() {
            break;
        }
        if word.starts_with('#') {
            words.consume();
            break;
        }
        let (negate, attribute) = match word.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, word.as_str()),
        };
        let lower = attribute.to_ascii_lowercase();
        if lower == "all" {
            let next = words.next();
            if attributes > 1
                || next
                    .as_deref()
                    .is_some_and(|a| !a.is_empty() && !a.starts_with('#'))
            {
                return Err(format!(
                    "'{word}' cannot be combined with other Match attributes"
                ));
            }
            terms.push(Term {
                negate,
                criterion: Criterion::All,
            });
            return Ok(done(terms));
        }
        attributes += 1;
        let criterion = match lower.as_str() {
            "canonical" => Criterion::Canonical,
            "final" => Criterion::Final,
            "host" | "originalhost" | "user" | "localuser" | "exec" | "localnetwork" | "tagged"
            | "sessiontype" | "command" | "version" => {
                let may_be_empty = lower == "tagged" || lower == "command";
                let arg = match words.next() {
                    Some(arg) if !arg.starts_with('#') && (may_be_empty || !arg.is_empty()) => arg,
                    _ => return Err(format!("Missing Match criteria for {attribute}")),
                };
                match lower.as_str() {
                    "host" => Criterion::Host(arg),
                    "originalhost" => Criterion::OriginalHost(arg),
                    "user" => Criterion::User(arg),
                    "localuser" => Criterion::LocalUser(arg),
                    _ => Criterion::Unevaluable(attribute.to_string()),
                }
            }
            _ => {
                // Unknown. Every criterion but all/canonical/final takes an
                // argument in every OpenSSH; past that, the rest of the line
                // cannot be read reliably, and the block never matches anyway.
                if !words
                    .next()
                    .is_some_and(|arg| !arg.is_empty() && !arg.starts_with('#'))
                {
                    return Err(format!("Missing Match criteria for {attribute}"));
                }
                terms.push(Term {
                    negate,
                    criterion: Criterion::Unevaluable(attribute.to_string()),
                });
                return Ok(done(terms));
            }
        };
        terms.push(Term { negate, criterion });
    }
    if attributes == 0 {
        return Err("One or more attributes required for Match".into());
    }
    if words.rest().is_some_and(|rest| !rest.is_empty()) {
        return Err("keyword match extra arguments at end of line".into());
    }
    Ok(done(terms))
}
