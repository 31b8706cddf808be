//! Unit tests: lexing, patterns, Match, Include, values, tokens. What each
//! asserts was checked with `ssh -G` (OpenSSH 9.2p1, Debian 12).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::lex::lex_line;
use super::pattern::{ListMatch, match_pattern, match_pattern_list};
use super::*;

const HOME: &str = "/home/me";

fn context() -> MatchContext {
    MatchContext {
        local_user: "me".into(),
        home: HOME.into(),
    }
}

fn parse(text: &str) -> SshConfig {
    SshConfig::parse(text, Path::new("/etc/cfg"), Path::new(HOME)).unwrap()
}

fn resolve(text: &str, host: &str) -> HostOptions {
    parse(text).resolve(host, &context())
}

/// The line and detail of the syntax error `text` must give.
fn syntax_error(text: &str) -> (usize, String) {
    match SshConfig::parse(text, Path::new("/etc/cfg"), Path::new(HOME)) {
        Err(SshConfigError::Syntax { line, detail, .. }) => (line, detail),
        other => panic!("expected a syntax error for {text:?}, got {other:?}"),
    }
}

fn unsupported(options: &HostOptions) -> Vec<(&str, &str)> {
    options
        .unsupported
        .iter()
        .map(|u| (u.option.as_str(), u.at.as_str()))
        .collect()
}

/// Writes a file (parents made) that OpenSSH would accept to include.
fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

// ---------------------------------------------------------------- lexing

#[test]
fn lexing_separators_quotes_and_comments() {
    let line = |s: &str| lex_line(s).unwrap().map(|l| (l.keyword, l.args));
    let words = |k: &str, a: &[&str]| {
        Some((
            k.to_string(),
            a.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        ))
    };
    assert_eq!(line("   # comment"), None);
    assert_eq!(line(""), None);
    assert_eq!(line("  \t "), None);
    assert_eq!(line("#User x"), None);
    assert_eq!(line("HOST=a"), words("HOST", &["a"]));
    assert_eq!(line("  User = bob  "), words("User", &["bob"]));
    assert_eq!(line("User=  bob"), words("User", &["bob"]));
    assert_eq!(line("User==bob"), words("User", &["=bob"]), "one = only");
    assert_eq!(
        line("\tuser \"John Smith\" # trailing"),
        words("user", &["John Smith"])
    );
    assert_eq!(
        line("HostName host#x.example"),
        words("HostName", &["host#x.example"])
    );
    assert_eq!(
        line("IdentityFile '/tmp/single q'"),
        words("IdentityFile", &["/tmp/single q"])
    );
    assert_eq!(
        line(r"IdentityFile /tmp/esc\ aped"),
        words("IdentityFile", &["/tmp/esc aped"])
    );
    assert_eq!(
        line(r#"IdentityFile /tmp/mid"dle q"uote"#),
        words("IdentityFile", &["/tmp/middle quote"])
    );
    assert_eq!(
        line(r"IdentityFile c:\x"),
        words("IdentityFile", &[r"c:\x"])
    );
    assert_eq!(line("Port 22\r"), words("Port", &["22"]));
    assert_eq!(line("User \"\""), words("User", &[""]));
    assert_eq!(lex_line("User \"x").unwrap_err(), "invalid quotes");
    assert_eq!(
        lex_line("User").unwrap_err(),
        "no argument after keyword \"user\""
    );
    assert_eq!(
        lex_line("  FooBar  ").unwrap_err(),
        "no argument after keyword \"foobar\""
    );
    let raw = lex_line("ProxyCommand = nc %h %p # not a comment here")
        .unwrap()
        .unwrap();
    assert_eq!(raw.keyword, "ProxyCommand");
    assert_eq!(raw.rest, "nc %h %p # not a comment here");
}

#[test]
fn keywords_are_case_insensitive_and_values_checked_everywhere() {
    let options = resolve("HOST a\n  hostNAME b\n  PORT 2222\n", "a");
    assert_eq!(options.host_name.as_deref(), Some("b"));
    assert_eq!(options.port, Some(2222));
    // Bad values are errors even in a block that applies to no host, as in OpenSSH.
    assert_eq!(
        syntax_error("Host zzz\n Port abc\n"),
        (2, "Bad port 'abc'".into())
    );
    assert_eq!(syntax_error("Port 0\n").1, "Bad port '0'");
    assert_eq!(syntax_error("Port 65536\n").1, "Bad port '65536'");
    assert_eq!(
        syntax_error("Host a\n User x y\n"),
        (2, "keyword user extra arguments at end of line".into())
    );
    assert_eq!(syntax_error("HostName \"\"\n").1, "missing argument");
    assert_eq!(
        syntax_error("Host\n").1,
        "no argument after keyword \"host\""
    );
    assert_eq!(syntax_error("Host \"\"\n").1, "keyword host empty argument");
    assert!(
        syntax_error("ConnectTimeout 5x\n")
            .1
            .contains("invalid time value")
    );
    assert!(
        syntax_error("ConnectTimeout 1.5\n")
            .1
            .contains("invalid time value")
    );
    assert!(
        syntax_error("ServerAliveCountMax -1\n")
            .1
            .contains("too small")
    );
    assert!(
        syntax_error("IdentitiesOnly maybe\n")
            .1
            .contains("unsupported option")
    );
    assert!(
        syntax_error("BatchMode 1\n")
            .1
            .contains("unsupported option")
    );
    assert!(
        syntax_error("StrictHostKeyChecking sometimes\n")
            .1
            .contains("unsupported option")
    );
    assert!(
        syntax_error("UserKnownHostsFile none /x\n")
            .1
            .contains("must appear alone")
    );
    assert!(
        syntax_error("IdentityAgent ${FLEETROLL_SURELY_UNSET_VAR}\n")
            .1
            .contains("invalid environment expansion")
    );
    assert!(
        syntax_error("IdentityAgent $BAD-NAME\n")
            .1
            .contains("invalid environment name")
    );
    assert!(
        syntax_error("ProxyJump a,\n")
            .1
            .contains("Invalid ProxyJump")
    );
    assert_eq!(syntax_error("\n\nUser \"x\n"), (3, "invalid quotes".into()));
    let error = SshConfig::parse("Port x\n", Path::new("/p/config"), Path::new(HOME)).unwrap_err();
    assert_eq!(error.to_string(), "/p/config:1: Bad port 'x'");
}

#[test]
fn values_as_openssh_reads_them() {
    let options = resolve(
        "Port +2200\nConnectTimeout 1m30s\nServerAliveInterval 2H\nServerAliveCountMax 0\nIdentitiesOnly YES\nBatchMode false\nStrictHostKeyChecking off\n",
        "a",
    );
    assert_eq!(options.port, Some(2200));
    assert_eq!(options.connect_timeout, Some(Duration::from_secs(90)));
    assert_eq!(
        options.server_alive_interval,
        Some(Duration::from_secs(7200))
    );
    assert_eq!(options.server_alive_count_max, Some(0));
    assert_eq!(options.identities_only, Some(true));
    assert_eq!(options.batch_mode, Some(false));
    assert_eq!(
        options.strict_host_key_checking,
        Some(StrictHostKeyChecking::No)
    );
    for (word, value) in [
        ("yes", StrictHostKeyChecking::Yes),
        ("true", StrictHostKeyChecking::Yes),
        ("no", StrictHostKeyChecking::No),
        ("ask", StrictHostKeyChecking::Ask),
        ("Accept-New", StrictHostKeyChecking::AcceptNew),
    ] {
        let options = resolve(&format!("StrictHostKeyChecking {word}\n"), "a");
        assert_eq!(options.strict_host_key_checking, Some(value), "{word}");
    }
    if super::value::a2port("ssh") == Some(22) {
        assert_eq!(
            resolve("Port ssh\n", "a").port,
            Some(22),
            "a service name, as getservbyname"
        );
    }
    // `none` leaves a time unset: a later line still sets it.
    let options = resolve(
        "Host a\n ConnectTimeout none\nHost *\n ConnectTimeout 5\n",
        "a",
    );
    assert_eq!(options.connect_timeout, Some(Duration::from_secs(5)));
    let options = resolve("HostKeyAlgorithms +ssh-rsa\n", "a");
    assert_eq!(options.host_key_algorithms.as_deref(), Some("+ssh-rsa"));
}

// -------------------------------------------------------------- patterns

#[test]
fn wildcard_patterns() {
    assert!(match_pattern("web1.example.com", "*.example.com"));
    assert!(match_pattern("web1.example.com", "web?.example.com"));
    assert!(!match_pattern("web10.example.com", "web?.example.com"));
    assert!(match_pattern("a", "*"));
    assert!(match_pattern("", "*"));
    assert!(match_pattern("abcabd", "*ab?"));
    assert!(match_pattern("aaa", "a**a"));
    assert!(!match_pattern("ab", "a"));
    assert!(!match_pattern("Web1", "web1"), "case-sensitive");
    assert_eq!(match_pattern_list("a.b", "x,*.b", false), ListMatch::Yes);
    assert_eq!(
        match_pattern_list("a.b", "*.b,!a.*", false),
        ListMatch::Negated
    );
    assert_eq!(match_pattern_list("a.b", "x,", false), ListMatch::No);
    assert_eq!(
        match_pattern_list("x", "X", true),
        ListMatch::Yes,
        "patterns lowercased"
    );
    assert_eq!(
        match_pattern_list("X", "x", true),
        ListMatch::No,
        "the string is not"
    );
}

#[test]
fn host_lines_negation_several_patterns_and_case() {
    let text = "\
Host *.example.com !bastion.example.com
  ProxyJump bastion.example.com
Host bastion.example.com db? !db9
  User jump
Host *
  User everyone
";
    assert!(resolve(text, "web.example.com").proxy_jump.is_some());
    assert_eq!(resolve(text, "bastion.example.com").proxy_jump, None);
    assert_eq!(
        resolve(text, "bastion.example.com").user.as_deref(),
        Some("jump")
    );
    assert_eq!(resolve(text, "db1").user.as_deref(), Some("jump"));
    assert_eq!(
        resolve(text, "db9").user.as_deref(),
        Some("everyone"),
        "a negation wins"
    );
    assert_eq!(resolve(text, "db10").user.as_deref(), Some("everyone"));
    // OpenSSH compares Host patterns case-sensitively with the host as given.
    let text = "Host foo\n User x\nHost BAR\n User y\n";
    assert_eq!(resolve(text, "foo").user.as_deref(), Some("x"));
    assert_eq!(resolve(text, "FOO").user, None);
    assert_eq!(resolve(text, "BAR").user.as_deref(), Some("y"));
    assert_eq!(resolve(text, "bar").user, None);
    // Only negations: never matches.
    assert_eq!(resolve("Host !x\n User y\n", "a").user, None);
}

#[test]
fn first_value_wins_and_options_before_any_host_apply_to_all() {
    let text = "\
User top
Host a
  User a-user
  Port 1
  HostName first
Host *
  Port 2
  HostName second
  IdentitiesOnly yes
";
    let options = resolve(text, "a");
    assert_eq!(options.user.as_deref(), Some("top"));
    assert_eq!(options.port, Some(1));
    assert_eq!(options.host_name.as_deref(), Some("first"));
    assert_eq!(options.identities_only, Some(true));
    let options = resolve(text, "b");
    assert_eq!(
        (options.user.as_deref(), options.port),
        (Some("top"), Some(2))
    );
}

// ----------------------------------------------------------------- Match

#[test]
fn match_host_sees_hostname_so_far() {
    let text = "Host a\n HostName b\nMatch host b\n User x\nMatch originalhost a\n Port 2222\n";
    let options = resolve(text, "a");
    assert_eq!(options.user.as_deref(), Some("x"));
    assert_eq!(options.port, Some(2222));
    assert_eq!(resolve(text, "b").user.as_deref(), Some("x"));
    assert_eq!(resolve(text, "b").port, None);
    // %h in HostName is the host as given; the result is lowercased, and
    // Match host compares case-insensitively.
    let text = "Host a\n HostName B%h.X\n HostKeyAlias ALIAS\nMatch host ba.x\n User m\n";
    let options = resolve(text, "a");
    assert_eq!(options.host_name.as_deref(), Some("ba.x"));
    assert_eq!(options.host_key_alias.as_deref(), Some("alias"));
    assert_eq!(options.user.as_deref(), Some("m"));
    assert_eq!(
        resolve("HostName 10.0.0.1\n", "a").host_name.as_deref(),
        Some("10.0.0.1")
    );
    assert_eq!(
        resolve("HostName FE80::1\n", "a").host_name.as_deref(),
        Some("FE80::1"),
        "addresses stay"
    );
    assert_eq!(
        resolve("HostName a%%b\n", "x").host_name.as_deref(),
        Some("a%b")
    );
}

#[test]
fn match_criteria() {
    let user = |text: &str, host: &str| resolve(text, host).user;
    let x = Some("x".to_string());
    assert_eq!(
        user("Match host=a\n User x\n", "a"),
        x,
        "strdelim splits on ="
    );
    assert_eq!(user("Match HOST a LocalUser me\n User x\n", "a"), x);
    assert_eq!(
        user("Match host a localuser other\n User x\n", "a"),
        None,
        "all criteria must match"
    );
    assert_eq!(
        user("Match !host b user m*\n User x\n", "a"),
        x,
        "user is the local user before any User"
    );
    assert_eq!(user("Match all\n User x\n", "a"), x);
    assert_eq!(user("Match !all\n User x\n", "a"), None);
    assert_eq!(user("Match host a all\n User x\n", "a"), x);
    assert_eq!(user("Match host a # comment\n User x\n", "a"), x);
    assert_eq!(user("Match localuser me host a,!b\n User x\n", "a"), x);
    assert_eq!(
        user("Match localuser me host !a,a\n User x\n", "a"),
        None,
        "a negated entry wins"
    );
    assert_eq!(
        user("Match originalhost A\n User x\n", "a"),
        x,
        "case-insensitive"
    );
    let options = resolve("Host a\n User u1\nMatch user u1\n Port 5\n", "a");
    assert_eq!(options.port, Some(5), "Match user sees the User so far");
    // Errors, as OpenSSH's.
    assert!(
        syntax_error("Match host a user me all\n")
            .1
            .contains("cannot be combined")
    );
    assert!(
        syntax_error("Match host\n")
            .1
            .contains("Missing Match criteria for host")
    );
    assert!(
        syntax_error("Match host #x\n")
            .1
            .contains("Missing Match criteria")
    );
    assert!(
        syntax_error("Match # c\n")
            .1
            .contains("One or more attributes")
    );
    assert!(
        syntax_error("Match host a extra\n")
            .1
            .contains("Missing Match criteria for extra")
    );
    assert!(
        syntax_error("Match exec\n")
            .1
            .contains("Missing Match criteria for exec")
    );
}

#[test]
fn match_final_and_canonical_as_without_canonicalisation() {
    // Without `Match final` there is one pass, where canonical never matches.
    let options = resolve(
        "Host a\n HostName b\nMatch canonical\n Port 99\nMatch !canonical\n ConnectTimeout 7\n",
        "a",
    );
    assert_eq!(options.port, None);
    assert_eq!(options.connect_timeout, Some(Duration::from_secs(7)));
    // A `Match final` line (matching or not) asks for the final pass, where
    // canonical and final match and `Match host` is the resolved name.
    let text = "\
Host a
  HostName b
Match canonical host b
  Port 99
Match final host a
  User x
Match !canonical
  ConnectTimeout 7
";
    let options = resolve(text, "a");
    assert_eq!(options.port, Some(99));
    assert_eq!(options.user, None);
    assert_eq!(options.connect_timeout, Some(Duration::from_secs(7)));
    // In the final pass Host lines compare with the resolved name.
    let options = resolve(
        "Host a\n HostName b\nHost b\n Port 99\nMatch final\n User x\n",
        "a",
    );
    assert_eq!(
        (options.port, options.user.as_deref()),
        (Some(99), Some("x"))
    );
    // OpenSSH 9.2 asks for the final pass for `!final` too.
    let options = resolve(
        "Host a\n HostName b\nHost b\n Port 99\nMatch !final\n User x\n",
        "a",
    );
    assert_eq!(
        (options.port, options.user.as_deref()),
        (Some(99), Some("x"))
    );
    // CanonicalizeHostname asks for it as well (and is not supported).
    let options = resolve(
        "CanonicalizeHostname yes\nHost a\n HostName b\nHost b\n Port 99\n",
        "a",
    );
    assert_eq!(options.port, Some(99));
    assert_eq!(
        unsupported(&options),
        [("CanonicalizeHostname", "/etc/cfg:1")]
    );
    // ... with the name lowercased.
    assert_eq!(resolve("Match final\nHost a\n Port 2\n", "A").port, Some(2));
    assert_eq!(resolve("Host a\n Port 2\n", "A").port, None);
}

#[test]
fn unevaluable_match_criteria_do_not_match_and_are_reported() {
    let text = "\
Match exec \"test -f /etc/x\" host a
  User from-exec
Match host b exec true
  Port 1
Match !tagged prod
  Port 2
Match frobnicate x
  Port 3
Host *
  User rest
";
    let options = resolve(text, "a");
    assert_eq!(options.user.as_deref(), Some("rest"));
    assert_eq!(options.port, None);
    assert_eq!(
        unsupported(&options),
        [
            ("Match exec", "/etc/cfg:1"),
            ("Match tagged", "/etc/cfg:5"),
            ("Match frobnicate", "/etc/cfg:7"),
        ],
        "line 3 cannot apply to a (host b), so it is not reported"
    );
}

// ------------------------------------------------------------ unsupported

#[test]
fn other_options_are_listed_once_where_first_set() {
    let text = "\
ForwardAgent yes
Host a
  forwardagent no
  SendEnv LANG
  FooBar 1
Host b
  Compression yes
";
    let options = resolve(text, "a");
    assert_eq!(
        unsupported(&options),
        [
            ("ForwardAgent", "/etc/cfg:1"),
            ("SendEnv", "/etc/cfg:4"),
            ("FooBar", "/etc/cfg:5")
        ]
    );
    // IgnoreUnknown hides unknown keywords after it, not known ones.
    let text = "FooBar 1\nIgnoreUnknown foo*,Baz\nFooQux 2\nbaz 3\nForwardX11 no\nOther 4\n";
    let options = resolve(text, "a");
    assert_eq!(
        unsupported(&options),
        [
            ("FooBar", "/etc/cfg:1"),
            ("ForwardX11", "/etc/cfg:5"),
            ("Other", "/etc/cfg:6")
        ]
    );
    // Unknown keywords in blocks that do not apply are not an error here.
    assert!(resolve("Host zzz\n FooBar x\n", "a").unsupported.is_empty());
    // Only the first IgnoreUnknown counts, and only where it applies.
    let text = "Host zzz\n IgnoreUnknown *\nHost *\n IgnoreUnknown x\n Y 1\n";
    assert_eq!(unsupported(&resolve(text, "a")), [("Y", "/etc/cfg:5")]);
}

// ------------------------------------------------------- lists and proxies

#[test]
fn identity_files_accumulate_and_user_known_hosts_take_the_first_line() {
    let text = "\
Host a
  IdentityFile ~/.ssh/a
  IdentityFile none
  IdentityFile /keys/%r@%h:%p
  UserKnownHostsFile ~/kh1 /kh2
  UserKnownHostsFile ~/kh3
Host *
  IdentityFile ~/.ssh/a
  IdentityFile2 ~/.ssh/b
  User deploy
  HostName A.Example
";
    let options = resolve(text, "a");
    assert_eq!(
        options.identity_files,
        [
            PathBuf::from("/home/me/.ssh/a"),
            PathBuf::from("/keys/deploy@a.example:22"),
            PathBuf::from("/home/me/.ssh/b"),
        ],
        "duplicates and `none` dropped, tokens expanded after the whole pass"
    );
    assert_eq!(
        options.user_known_hosts_files,
        Some(vec![PathBuf::from("/home/me/kh1"), PathBuf::from("/kh2")])
    );
    let options = resolve("UserKnownHostsFile NONE\nUserKnownHostsFile /x\n", "a");
    assert_eq!(options.user_known_hosts_files, Some(vec![]));
    assert!(
        resolve("IdentityFile none\n", "a")
            .identity_files
            .is_empty()
    );
}

#[test]
fn proxy_jump_parsing() {
    let hops = |value: &str| match resolve(&format!("ProxyJump {value}\n"), "a").proxy_jump {
        Some(ProxyJump::Hops(hops)) => hops,
        other => panic!("{value}: {other:?}"),
    };
    let jump = |user: Option<&str>, host: &str, port: Option<u16>| Jump {
        user: user.map(str::to_string),
        host: host.to_string(),
        port,
    };
    assert_eq!(
        hops("u@[::1]:2222,ssh://v@h2:33,h3"),
        [
            jump(Some("u"), "::1", Some(2222)),
            jump(Some("v"), "h2", Some(33)),
            jump(None, "h3", None)
        ]
    );
    assert_eq!(hops("ssh://u;x=y@h.:99"), [jump(Some("u"), "h", Some(99))]);
    assert_eq!(hops("ssh://u%41@h/"), [jump(Some("uA"), "h", None)]);
    assert_eq!(
        hops("a@b@c"),
        [jump(Some("a@b"), "c", None)],
        "the user is up to the last @"
    );
    assert_eq!(hops("[fe80::1%eth0]"), [jump(None, "fe80::1%eth0", None)]);
    assert_eq!(hops("=h2"), [jump(None, "h2", None)]);
    assert_eq!(hops("h # comment"), [jump(None, "h", None)]);
    assert_eq!(
        hops("x y,z"),
        [jump(None, "x", None)],
        "OpenSSH 9.2 takes the first word"
    );
    if super::value::a2port("ssh") == Some(22) {
        assert_eq!(hops("h:ssh"), [jump(None, "h", Some(22))]);
    }
    for bad in [
        "a,",
        "ssh://h/path",
        "ssh://[::1]",
        "h/22",
        "h:0",
        "@h",
        "h:x",
        "[::1",
        "[::1]x",
        ":22",
    ] {
        assert!(
            SshConfig::parse(
                &format!("ProxyJump {bad}\n"),
                Path::new("c"),
                Path::new(HOME)
            )
            .is_err(),
            "{bad}"
        );
    }
    assert_eq!(
        resolve("ProxyJump NONE\n", "a").proxy_jump,
        Some(ProxyJump::None)
    );
}

#[test]
fn proxy_jump_and_proxy_command_precedence() {
    // Debian's OpenSSH 9.2 (10.3's rule): a ProxyJump list and a ProxyCommand
    // exclude each other, first wins; `ProxyJump none` only stops later
    // ProxyJump lines.
    let options = resolve("ProxyCommand x\nProxyJump y\n", "a");
    assert_eq!(
        (options.proxy_command.as_deref(), &options.proxy_jump),
        (Some("x"), &None)
    );
    let options = resolve("ProxyJump y\nProxyCommand x\n", "a");
    assert_eq!(options.proxy_command, None);
    assert!(matches!(options.proxy_jump, Some(ProxyJump::Hops(_))));
    let options = resolve(
        "Host a\n ProxyJump none\nHost *\n ProxyJump bastion\n ProxyCommand foo\n",
        "a",
    );
    assert_eq!(options.proxy_jump, Some(ProxyJump::None));
    assert_eq!(options.proxy_command.as_deref(), Some("foo"));
    let options = resolve("ProxyCommand none\nProxyJump bastion\n", "a");
    assert_eq!(
        (options.proxy_command, options.proxy_jump),
        (None, None),
        "cleared, as OpenSSH"
    );
    let options = resolve("ProxyCommand = nc %h %p # trailing\n", "a");
    assert_eq!(
        options.proxy_command.as_deref(),
        Some("nc %h %p # trailing"),
        "raw"
    );
}

// ------------------------------------------------------------- expansion

#[test]
fn tokens_in_identity_files() {
    let text = "\
Host Web1
  HostName %h.EXAMPLE.com
  User deploy
  Port 2200
  HostKeyAlias KA
  IdentityFile ~/k/%d/%u/%h/%r/%p/%n/%k/%%
  IdentityFile ~root/x
  IdentityFile /k/%l/%L/%i
  IdentityFile /k/%C/${FLEETROLL_SURELY_UNSET_VAR}/%
  IdentityFile ~nosuchuser-fleetroll/x
";
    let options = resolve(text, "Web1");
    let host = sys::hostname();
    let short = host.split('.').next().unwrap_or_default();
    assert_eq!(
        options.identity_files[0],
        PathBuf::from("/home/me/k//home/me/me/web1.example.com/deploy/2200/Web1/ka/%")
    );
    let root = sys::user_by_name("root").expect("root in the passwd database");
    assert_eq!(options.identity_files[1], root.home.join("x"));
    assert_eq!(
        options.identity_files[2],
        PathBuf::from(format!("/k/{host}/{short}/{}", sys::uid()))
    );
    assert_eq!(
        options.identity_files[3],
        PathBuf::from("/k/%C/${FLEETROLL_SURELY_UNSET_VAR}/%"),
        "left as written"
    );
    assert_eq!(
        options.identity_files[4],
        PathBuf::from("~nosuchuser-fleetroll/x")
    );
    assert_eq!(
        unsupported(&options),
        [
            ("IdentityFile %C", "/etc/cfg:9"),
            ("IdentityFile ${FLEETROLL_SURELY_UNSET_VAR}", "/etc/cfg:9"),
            ("IdentityFile %", "/etc/cfg:9"),
            ("IdentityFile ~nosuchuser-fleetroll", "/etc/cfg:10"),
        ]
    );
    let options = resolve("HostName %p.x\n", "a");
    assert_eq!(options.host_name.as_deref(), Some("%p.x"));
    assert_eq!(unsupported(&options), [("HostName %p", "/etc/cfg:1")]);
    assert_eq!(
        resolve("IdentityFile ~\n", "a").identity_files,
        [PathBuf::from("/home/me/")]
    );
}

#[test]
fn identity_agent_forms() {
    let agent = |value: &str| resolve(&format!("IdentityAgent {value}\n"), "a").identity_agent;
    assert_eq!(agent("SSH_AUTH_SOCK"), Some(IdentityAgent::Env));
    assert_eq!(agent("$SSH_AUTH_SOCK"), Some(IdentityAgent::Env));
    assert_eq!(agent("none"), Some(IdentityAgent::None));
    assert_eq!(
        agent("~/agent.sock"),
        Some(IdentityAgent::Socket("/home/me/agent.sock".into()))
    );
    assert_eq!(
        agent("/run/%u/%h.sock"),
        Some(IdentityAgent::Socket("/run/me/a.sock".into()))
    );
    if let Ok(path) = std::env::var("PATH") {
        assert_eq!(
            agent("/x/${PATH}"),
            Some(IdentityAgent::Socket(format!("/x/{path}").into()))
        );
        assert_eq!(
            agent("$PATH"),
            Some(IdentityAgent::Socket(path.into())),
            "legacy form"
        );
    }
    assert_eq!(
        agent("$FLEETROLL_SURELY_UNSET_VAR"),
        Some(IdentityAgent::None)
    );
    assert_eq!(
        resolve("Host b\n IdentityAgent none\n", "a").identity_agent,
        None
    );
}

// --------------------------------------------------------------- Include

#[test]
fn include_globs_relative_paths_and_section_state() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let ssh = home.join(".ssh");
    write(&ssh.join("conf.d/b.conf"), "User fromB\n");
    write(
        &ssh.join("conf.d/a.conf"),
        "Port 1111\nHost other\n  ConnectTimeout 3\n",
    );
    write(&ssh.join("conf.d/.hidden.conf"), "User hidden\n");
    write(&ssh.join("conf.d/c.txt"), "User notconf\n");
    std::fs::create_dir_all(ssh.join("conf.d/zdir.conf")).unwrap();
    std::fs::set_permissions(
        ssh.join("conf.d/zdir.conf"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    write(
        &ssh.join("c.conf"),
        "HostKeyAlias fromC\nHost *\n  IdentityAgent none\n",
    );
    write(&home.join("abs.conf"), "BatchMode yes\n");
    let main = format!(
        "\
Host nomatch
  Include c.conf
Host x
  Include conf.d/*.conf
  ConnectTimeout 9
Include missing/*.conf ~/.ssh/c.conf
Host *
  Include {}/abs.conf nothere.conf
",
        home.display()
    );
    write(&ssh.join("config"), &main);
    let config = SshConfig::load(&ssh.join("config"), home).unwrap();
    let options = config.resolve("x", &context());
    assert_eq!(options.port, Some(1111), "a.conf first: sorted");
    assert_eq!(
        options.user.as_deref(),
        Some("fromB"),
        "hidden files are not globbed"
    );
    assert_eq!(
        options.connect_timeout,
        Some(Duration::from_secs(9)),
        "the Host x section goes on after the Include"
    );
    assert_eq!(options.host_key_alias.as_deref(), Some("fromc"));
    assert_eq!(options.identity_agent, Some(IdentityAgent::None));
    assert_eq!(options.batch_mode, Some(true));
    // For y, Host x's Includes are read but nothing in them applies, not
    // even their `Host *`.
    let options = config.resolve("y", &context());
    assert_eq!(
        (
            options.port,
            options.user,
            options.host_key_alias,
            options.identity_agent
        ),
        (None, None, None, None)
    );
    assert_eq!(options.batch_mode, Some(true));
}

fn resolve_at(config: &SshConfig, host: &str, option: &str) -> Vec<String> {
    config
        .resolve(host, &context())
        .unsupported
        .into_iter()
        .filter(|u| u.option == option)
        .map(|u| u.at)
        .collect()
}

#[test]
fn include_reports_where_options_were_set() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    write(&home.join(".ssh/extra"), "\n\nForwardAgent yes\n");
    let config = SshConfig::parse("Include extra\n", Path::new("main"), home).unwrap();
    let at = format!("{}:3", home.join(".ssh/extra").display());
    assert_eq!(resolve_at(&config, "a", "ForwardAgent"), [at]);
    // A syntax error in an included file names that file.
    write(&home.join(".ssh/bad"), "User ok\nPort nope\n");
    match SshConfig::parse("Include bad\n", Path::new("main"), home) {
        Err(SshConfigError::Syntax { path, line, .. }) => {
            assert_eq!((path, line), (home.join(".ssh/bad"), 2))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn include_depth_cycles_and_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let ssh = home.join(".ssh");
    // A chain of 16 includes is fine (OpenSSH's limit), 17 is not.
    let chain = |leaf: usize| {
        for i in 1..leaf {
            write(&ssh.join(format!("d{i}")), &format!("Include d{}\n", i + 1));
        }
        write(&ssh.join(format!("d{leaf}")), &format!("User u{leaf}\n"));
        SshConfig::parse("Include d1\n", Path::new("main"), home)
    };
    let config = chain(16).unwrap();
    assert_eq!(config.resolve("a", &context()).user.as_deref(), Some("u16"));
    match chain(17) {
        Err(SshConfigError::IncludeDepth { path, line }) => {
            assert_eq!((path, line), (ssh.join("d16"), 1))
        }
        other => panic!("{other:?}"),
    }
    write(&ssh.join("loop"), "Host nomatch\n Include loop\n");
    assert!(matches!(
        SshConfig::parse("Include loop\n", Path::new("main"), home),
        Err(SshConfigError::IncludeCycle { .. })
    ));
    // The same file twice, not nested, is no cycle.
    write(&ssh.join("twice"), "SendEnv X\n");
    assert!(SshConfig::parse("Include twice twice\n", Path::new("main"), home).is_ok());
    // A group-writable included file is refused, as OpenSSH refuses it.
    let loose = ssh.join("loose");
    write(&loose, "User x\n");
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o664)).unwrap();
    assert!(matches!(
        SshConfig::parse("Include loose\n", Path::new("main"), home),
        Err(SshConfigError::Permissions { .. })
    ));
    // A missing main file is a read error that keeps its cause.
    let error = SshConfig::load(&home.join("nothere"), home).unwrap_err();
    assert!(
        matches!(&error, SshConfigError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    );
    assert!(std::error::Error::source(&error).is_some());
}

// ------------------------------------------------------------ robustness

#[test]
fn odd_input_is_an_error_or_a_value_never_a_panic() {
    let lines = [
        "ConnectTimeout 5é",
        "ConnectTimeout é",
        "ServerAliveInterval 99999999999999999999",
        "ServerAliveInterval 1w1w1w1w1w1w1w1w1w1w1w1w1w1w1w1w1w1w1w1w1w1w1w1w1w1w1w1w1w1w1w1w1w1w1w1w",
        "Port ５",
        "Port -0",
        "ProxyJump é:é",
        "ProxyJump [é]:1",
        "ProxyJump ssh://é@h",
        "ProxyJump ssh://u%zz@h",
        "ProxyJump ssh://u%c3@h",
        "Match hostéx y",
        "Match !",
        "Match \"",
        "Match host \"a b\" user \"",
        "HostName %é%",
        "IdentityFile ${é",
        "IdentityFile ${}%",
        "IdentityFile ~é/x",
        "User \"é",
        "é=é",
        "=",
        "= =",
        "\"",
        "Host \"é\" !* ?",
        "Include [",
        "\u{0}",
        "IgnoreUnknown é*\né 1",
        "UserKnownHostsFile %é ${X",
        "IdentityAgent ${",
        "IdentityAgent $",
    ];
    for line in lines {
        let text = format!("{line}\nHost *\n IdentityFile %\n");
        if let Ok(config) = SshConfig::parse(&text, Path::new("c"), Path::new(HOME)) {
            for host in ["é", "", "a", "%h", "[::1]"] {
                let _ = config.resolve(host, &context());
            }
        }
    }
    assert_eq!(super::value::convtime("1m30s"), Some(90));
    assert_eq!(super::value::convtime("+5"), Some(5));
    assert_eq!(super::value::convtime("-0"), Some(0));
    assert_eq!(super::value::convtime("2147483647"), Some(2_147_483_647));
    assert_eq!(super::value::convtime("2147483648"), None);
    assert_eq!(super::value::convtime("5ms"), None);
    let bytes = SshConfig::load(Path::new("/dev/null"), Path::new(HOME)).unwrap();
    assert!(bytes.resolve("a", &context()) == HostOptions::default());
    let invalid = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(invalid.path(), b"User ok\nUser \xff\n").unwrap();
    assert!(matches!(
        SshConfig::load(invalid.path(), Path::new(HOME)),
        Err(SshConfigError::Syntax { line: 2, .. })
    ));
}
