//! Differential tests: [`SshConfig::resolve`] against OpenSSH's own
//! evaluation, `ssh -G -F <file> <host>` (which prints the evaluated config,
//! lower-case keys, without connecting; with `-F` it reads neither
//! `~/.ssh/config` nor `/etc/ssh/ssh_config`).
//!
//! `ssh -G` prints defaults for what the config leaves unset (port 22, the
//! local user, the default identity and known-hosts files…); those are
//! normalised here. It prints `IdentityFile` values as written (ssh expands
//! them only when it loads the keys): they are expanded here with the
//! tokens ssh -G reports; the same tokens in `UserKnownHostsFile`, which ssh
//! -G prints expanded, check the expansion itself.
//!
//! ssh runs with `HOME` set to a scratch directory: OpenSSH anchors
//! `Include` at `$HOME/.ssh` (glob's `~`), and takes `~` elsewhere from the
//! passwd database, as [`MatchContext`] does.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use super::expand::{expand, tilde};
use super::*;

const SSH: &str = "/usr/bin/ssh";

/// ssh 9.2's default identity files, as `ssh -G` lists them.
const DEFAULT_IDENTITY_FILES: [&str; 7] = [
    "~/.ssh/id_rsa",
    "~/.ssh/id_ecdsa",
    "~/.ssh/id_ecdsa_sk",
    "~/.ssh/id_ed25519",
    "~/.ssh/id_ed25519_sk",
    "~/.ssh/id_xmss",
    "~/.ssh/id_dsa",
];

struct Case {
    name: &'static str,
    /// The main config, and files under the scratch `~/.ssh/` it includes.
    config: &'static str,
    includes: &'static [(&'static str, &'static str)],
    hosts: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        name: "bastion",
        config: "\
# The fleet behind a bastion.
Host db?.example.com
    ProxyJump none
    User dbadmin
Host direct.example.com
    ProxyCommand none
Host bastion.example.com
    User jump
    Port 2200
    IdentityFile ~/.ssh/jump_ed25519
    IdentitiesOnly yes
Host *.example.com !bastion.example.com
    ProxyJump jump@bastion.example.com:2200
    User relops
    IdentityFile ~/.ssh/fleet_ed25519
    IdentityFile ~/.ssh/id_%h
Host legacy.example.com
    HostKeyAlgorithms ssh-ed25519,rsa-sha2-512
    StrictHostKeyChecking accept-new
    ProxyJump other@legacy-gw.example.com,[2001:db8::1]:2022
Host *
    ServerAliveInterval 30
    ServerAliveCountMax 4
    ConnectTimeout 10
    UserKnownHostsFile ~/.ssh/known_hosts ~/.ssh/fleet_known_hosts
    UserKnownHostsFile ~/.ssh/ignored
    IdentityFile ~/.ssh/id_ed25519
    BatchMode yes
",
        includes: &[],
        hosts: &[
            "bastion.example.com",
            "web1.example.com",
            "WEB2.example.com",
            "db1.example.com",
            "db10.example.com",
            "direct.example.com",
            "legacy.example.com",
            "other.org",
        ],
    },
    Case {
        name: "match",
        config: "\
Host alias-*
    HostName %h.internal.example.net
Host alias-db
    HostName db-primary.internal.example.net
    Port 5432
Match host *.internal.example.net
    User svc
    Port 2022
    IdentityFile ~/.ssh/internal_%r_%p
Match originalhost alias-web !host *.internal.example.net
    User never
Match localuser root,nobody host alias-*
    ConnectTimeout 5
Match user svc
    HostKeyAlias Internal-Key
    ServerAliveInterval 15
Match !originalhost direct.*,other
    StrictHostKeyChecking yes
Match all
    IdentitiesOnly yes
",
        includes: &[],
        hosts: &[
            "alias-web",
            "alias-db",
            "ALIAS-x",
            "direct.internal.example.net",
            "other",
        ],
    },
    Case {
        name: "include",
        config: "\
Include conf.d/*.conf
Host *.lab !gw.lab
    ProxyJump gw.lab
    Include lab-extra.conf
Host gw.lab
    HostName 192.0.2.10
    User gate
Host *
    UserKnownHostsFile none
",
        includes: &[
            (
                "conf.d/10-first.conf",
                "Host special.lab\n    User special\n    IdentityAgent ~/.ssh/agent.sock\n",
            ),
            (
                "conf.d/20-second.conf",
                "Host special.lab\n    User ignored\n    Port 2201\nMatch host 192.0.2.*\n    Port 2222\n    IdentityAgent SSH_AUTH_SOCK\n",
            ),
            ("conf.d/.hidden.conf", "User hidden\n"),
            (
                "lab-extra.conf",
                "IdentityFile ~/.ssh/lab_key\nHost *\n    ConnectTimeout 3\n",
            ),
        ],
        hosts: &["special.lab", "n1.lab", "gw.lab", "elsewhere"],
    },
    Case {
        name: "tokens and first value wins",
        config: "\
Host tok
    HostName Tok.Example.ORG
    User deploy
    Port 2200
    HostKeyAlias TokAlias
    IdentityFile /keys/%d/%u/%l/%L/%h/%r/%p/%n/%k/%i/%%
    UserKnownHostsFile /kh/%d/%u/%l/%L/%h/%r/%p/%n/%k/%i/%% ~/kh2
    IdentityAgent /agents/%u/%h.sock
Host=eq
    User=\"a b\"
    IdentityFile = \"/tmp/with space/key\"   # comment
Host *
    User late
    IdentityFile none
    IdentityFile ~/.ssh/shared
    ProxyCommand ssh -W %h:%p gateway # not a comment
",
        includes: &[],
        hosts: &["tok", "TOK", "eq", "x"],
    },
    Case {
        name: "syntax",
        config: "\tHOST=quoted\r
  User = \"with space\"   # comment\r
Host\tspaced\tmulti  other
  HostName=\"Spaced.Example.com\"
  Port=2222
  IdentityFile \"~/.ssh/key with space\"
  IdentityFile '~/.ssh/single'
  IdentityFile ~/.ssh/esc\\ aped
  HostKeyAlias=x#y
  ConnectTimeout 1m5s
",
        includes: &[],
        hosts: &["quoted", "spaced", "multi", "nomatch"],
    },
    Case {
        name: "include in match",
        config: "\
Match originalhost app-*
    Include app.d/*
Match all
    Include ~/.ssh/common
",
        includes: &[
            ("app.d/1", "User app\nHost app-2\n    Port 2002\n"),
            (
                "app.d/2",
                "Match host app-1\n    Port 2001\nIdentityFile ~/.ssh/app_%n\n",
            ),
            (
                "common",
                "ServerAliveCountMax 7\nHost *\n    ConnectTimeout 2\n",
            ),
        ],
        hosts: &["app-1", "app-2", "web"],
    },
    Case {
        name: "final pass",
        config: "\
Host short
    HostName long.example.com
Host long.example.com
    Port 2022
Match final host long.example.com
    User finaluser
Match canonical
    ServerAliveInterval 9
Match !canonical
    ConnectTimeout 4
",
        includes: &[],
        hosts: &["short", "long.example.com", "zzz"],
    },
];

/// `ssh -G`'s lines, each key's values in order.
fn ssh_g(file: &Path, home: &Path, host: &str) -> HashMap<String, Vec<String>> {
    let out = Command::new(SSH)
        .arg("-G")
        .arg("-F")
        .arg(file)
        .arg(host)
        .env("HOME", home)
        .stdin(Stdio::null())
        .output()
        .expect("run ssh -G");
    assert!(
        out.status.success(),
        "ssh -G -F {} {host}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: HashMap<String, Vec<String>> = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        lines
            .entry(key.to_string())
            .or_default()
            .push(value.to_string());
    }
    lines
}

fn jump_text(jump: &Jump) -> String {
    let user = jump
        .user
        .as_ref()
        .map(|u| format!("{u}@"))
        .unwrap_or_default();
    let host = if jump.host.contains(':') {
        format!("[{}]", jump.host)
    } else {
        jump.host.clone()
    };
    let port = jump.port.map(|p| format!(":{p}")).unwrap_or_default();
    format!("{user}{host}{port}")
}

/// What `ssh -G` would print for what fleetroll resolved (defaults filled
/// in as ssh fills them), next to what it did print, for each compared key.
fn compare(
    host: &str,
    ours: &HostOptions,
    theirs: &HashMap<String, Vec<String>>,
    context: &MatchContext,
) -> Vec<String> {
    let one = |key: &str| theirs.get(key).and_then(|v| v.first()).cloned();
    let mut mismatches = Vec::new();
    let mut check = |key: &str, ours: Option<String>, theirs: Option<String>| {
        if ours != theirs {
            mismatches.push(format!(
                "{host}: {key}: fleetroll {ours:?}, ssh -G {theirs:?}"
            ));
        }
    };
    let home = context.home.to_string_lossy().to_string();

    check(
        "hostname",
        Some(
            ours.host_name
                .clone()
                .unwrap_or_else(|| host.to_ascii_lowercase()),
        ),
        one("hostname"),
    );
    check(
        "user",
        Some(
            ours.user
                .clone()
                .unwrap_or_else(|| context.local_user.clone()),
        ),
        one("user"),
    );
    check(
        "port",
        Some(ours.port.unwrap_or(22).to_string()),
        one("port"),
    );

    // IdentityFile: ssh -G prints them as written; expand them with the
    // values ssh -G reports.
    let their_files = theirs.get("identityfile").cloned().unwrap_or_default();
    let their_files = if their_files == DEFAULT_IDENTITY_FILES {
        Vec::new()
    } else {
        their_files
    };
    let this_host = sys::hostname();
    let short = this_host.split('.').next().unwrap_or_default().to_string();
    let (their_user, their_host, their_port) = (
        one("user").unwrap_or_default(),
        one("hostname").unwrap_or_default(),
        one("port").unwrap_or_default(),
    );
    let key_alias = one("hostkeyalias").unwrap_or_else(|| host.to_string());
    let uid = sys::uid().to_string();
    let tokens = [
        ('L', short.as_str()),
        ('i', uid.as_str()),
        ('k', key_alias.as_str()),
        ('l', this_host.as_str()),
        ('n', host),
        ('p', their_port.as_str()),
        ('d', home.as_str()),
        ('h', their_host.as_str()),
        ('r', their_user.as_str()),
        ('u', context.local_user.as_str()),
    ];
    let their_files: Vec<String> = their_files
        .iter()
        .filter(|f| !f.eq_ignore_ascii_case("none"))
        .map(|f| expand(&tilde(f, &context.home).unwrap(), Some(&tokens), true).text)
        .collect();
    let our_files: Vec<String> = ours
        .identity_files
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    check(
        "identityfile",
        Some(our_files.join("\n")),
        Some(their_files.join("\n")),
    );

    let jump = match &ours.proxy_jump {
        Some(ProxyJump::Hops(hops)) => {
            Some(hops.iter().map(jump_text).collect::<Vec<_>>().join(","))
        }
        Some(ProxyJump::None) | None => None,
    };
    check("proxyjump", jump, one("proxyjump"));
    check(
        "proxycommand",
        ours.proxy_command.clone(),
        one("proxycommand"),
    );
    check(
        "connecttimeout",
        Some(
            ours.connect_timeout
                .map_or("none".into(), |d| d.as_secs().to_string()),
        ),
        one("connecttimeout"),
    );
    check(
        "serveraliveinterval",
        Some(
            ours.server_alive_interval
                .map_or(0, |d| d.as_secs())
                .to_string(),
        ),
        one("serveraliveinterval"),
    );
    check(
        "serveralivecountmax",
        Some(ours.server_alive_count_max.unwrap_or(3).to_string()),
        one("serveralivecountmax"),
    );
    let known_hosts = match &ours.user_known_hosts_files {
        None => format!("{home}/.ssh/known_hosts {home}/.ssh/known_hosts2"),
        Some(files) if files.is_empty() => "none".into(),
        Some(files) => files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(" "),
    };
    check(
        "userknownhostsfile",
        Some(known_hosts),
        one("userknownhostsfile"),
    );
    check(
        "hostkeyalias",
        ours.host_key_alias.clone(),
        one("hostkeyalias"),
    );
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
    check(
        "identitiesonly",
        Some(yes_no(ours.identities_only.unwrap_or(false))),
        one("identitiesonly"),
    );
    check(
        "batchmode",
        Some(yes_no(ours.batch_mode.unwrap_or(false))),
        one("batchmode"),
    );
    let agent = ours.identity_agent.as_ref().map(|a| match a {
        IdentityAgent::None => "none".to_string(),
        IdentityAgent::Env => "SSH_AUTH_SOCK".to_string(),
        IdentityAgent::Socket(path) => path.display().to_string(),
    });
    check("identityagent", agent, one("identityagent"));
    let strict = match ours.strict_host_key_checking {
        Some(StrictHostKeyChecking::Yes) => "true",
        Some(StrictHostKeyChecking::No) => "false",
        Some(StrictHostKeyChecking::AcceptNew) => "accept-new",
        Some(StrictHostKeyChecking::Ask) | None => "ask",
    };
    check(
        "stricthostkeychecking",
        Some(strict.into()),
        one("stricthostkeychecking"),
    );
    // ssh -G prints the algorithms resolved against its defaults; a plain
    // list (no +, -, ^) comes out as written.
    if let Some(algorithms) = ours
        .host_key_algorithms
        .as_ref()
        .filter(|a| !a.starts_with(['+', '-', '^']))
    {
        check(
            "hostkeyalgorithms",
            Some(algorithms.clone()),
            one("hostkeyalgorithms"),
        );
    }
    mismatches
}

#[test]
fn resolve_agrees_with_ssh_g() {
    if !Path::new(SSH).exists() {
        eprintln!("skipping the ssh -G differential test: {SSH} is not installed");
        return;
    }
    let passwd = sys::current_user().expect("this user's passwd entry");
    let context = MatchContext {
        local_user: passwd.name,
        home: passwd.home,
    };
    let mut mismatches = Vec::new();
    let mut compared = 0;
    for case in CASES {
        let scratch = tempfile::tempdir().unwrap();
        let home = scratch.path();
        let ssh_dir = home.join(".ssh");
        for (name, text) in case.includes {
            let path = ssh_dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let file = home.join("config");
        std::fs::write(&file, case.config).unwrap();
        let config = SshConfig::load(&file, home).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        for host in case.hosts {
            let ours = config.resolve(host, &context);
            let theirs = ssh_g(&file, home, host);
            mismatches.extend(
                compare(host, &ours, &theirs, &context)
                    .into_iter()
                    .map(|m| format!("[{}] {m}", case.name)),
            );
            compared += 1;
        }
    }
    assert!(compared >= 12);
    assert!(
        mismatches.is_empty(),
        "resolve() and ssh -G disagree:\n{}",
        mismatches.join("\n")
    );
}

/// Configs OpenSSH refuses are refused here too.
#[test]
fn refuses_what_ssh_g_refuses() {
    if !Path::new(SSH).exists() {
        eprintln!("skipping the ssh -G differential test: {SSH} is not installed");
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("config");
    for text in [
        "Host zzz\n Port abc\n",
        "Host a\n User x y\n",
        "ConnectTimeout 5x\n",
        "IdentitiesOnly maybe\n",
        "Match host\n User x\n",
        "Match host a user b all\n",
        "User \"unclosed\n",
        "ProxyJump a,\n",
        "ProxyJump ssh://h/path\n",
        "UserKnownHostsFile none /x\n",
        "Host \"\"\n",
    ] {
        std::fs::write(&file, text).unwrap();
        let status = Command::new(SSH)
            .args(["-G", "-F"])
            .arg(&file)
            .arg("a")
            .env("HOME", scratch.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "ssh -G accepts {text:?}");
        assert!(
            SshConfig::load(&file, scratch.path()).is_err(),
            "fleetroll accepts {text:?}, which ssh -G refuses"
        );
    }
}
