//! Bad input, command by command: bad arguments, bad files and bad hosts
//! (the lab's malformed scenarios). Each gets the exit code of SPEC 8 and a
//! message that names what was wrong, and none of it changes or loses
//! anything in the inventory, the rollouts or the audit chain.

mod common;

use std::time::{Duration, Instant};

use common::{Cli, Up, lab_env};
use fleetroll_lab::{Lab, LabConfig, Scenario};

/// Runs a command that must end by itself soon: `None` if it did not (a
/// command that hangs on bad input is as wrong as one that accepts it).
fn run_within(cli: &Cli, args: &[&str], limit: Duration) -> Option<(i32, String)> {
    let mut child = cli.spawn_output(args);
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    Some((out.status.code().unwrap_or(-1), said))
}

/// (arguments, exit code, words the message must hold)
type Case = (&'static [&'static str], i32, &'static [&'static str]);

const ROLLOUT: &str = "ROLLOUT";

const CASES: &[Case] = &[
    // Hostnames are data, and checked.
    (
        &["inventory", "seed", "add", "a b.example.com"],
        1,
        &["a b.example.com"],
    ),
    (&["inventory", "seed", "add", "host;rm -rf /"], 1, &["';'"]),
    (
        &["host", "show", "nowhere..example.com"],
        1,
        &["nowhere..example.com"],
    ),
    (
        &["host", "show", "unknown.example.com"],
        1,
        &["unknown host"],
    ),
    (
        &["host", "history", "unknown.example.com"],
        1,
        &["unknown host"],
    ),
    (&["host", "refresh", "bad host!"], 1, &["bad host!"]),
    (&["converge", "host", "$(reboot)"], 1, &["$(reboot)"]),
    // Queries name the position.
    (&["host", "list", "--filter", "role:("], 1, &["position"]),
    (
        &["host", "list", "--filter", "role:x AND"],
        1,
        &["position"],
    ),
    (
        &["host", "list", "--filter", "nosuchfield:x"],
        1,
        &["nosuchfield"],
    ),
    (
        &[
            "population",
            "create",
            "p",
            "--expected-role",
            "r",
            "--target-query",
            "role:(",
        ],
        1,
        &["position"],
    ),
    // Rollout plans.
    (
        &[
            "rollout",
            "create",
            "--target",
            "role:(",
            "--change",
            "PUPPET_BRANCH=x",
        ],
        1,
        &["position"],
    ),
    (
        &[
            "rollout",
            "create",
            "--target",
            "hostname:a*",
            "--change",
            "PUPPET_BRANCH=x",
            "--gate",
            "nosuch=1",
        ],
        1,
        &["nosuch"],
    ),
    (
        &[
            "rollout",
            "create",
            "--target",
            "hostname:a*",
            "--change",
            "PUPPET_BRANCH=x",
            "--gate",
            "tc_success_rate_drop=lots",
        ],
        1,
        &["lots"],
    ),
    (
        &[
            "rollout",
            "create",
            "--target",
            "hostname:a*",
            "--change",
            "PUPPET_BRANCH=x",
            "--gate",
            "window=99999999999999",
        ],
        1,
        &["window", "30 days"],
    ),
    (
        &[
            "rollout",
            "create",
            "--target",
            "hostname:a*",
            "--change",
            "PUPPET_BRANCH=x",
            "--gate",
            "sshable_min_pct=150",
        ],
        1,
        &["sshable_min_pct", "150"],
    ),
    (&["rollout", "start", "ro-nothing"], 1, &["ro-nothing"]),
    (&["rollout", "status", "ro.*"], 1, &["ro.*"]),
    (
        &[
            "rollout",
            "advance",
            ROLLOUT,
            "--batch-size",
            "1",
            "--force",
        ],
        1,
        &["--reason"],
    ),
    (
        &["rollout", "advance", ROLLOUT, "--batch-size", "lots"],
        1,
        &["lots"],
    ),
    // What needs --confirm is refused without it (exit 4), and says so.
    (
        &["rollout", "rollback", ROLLOUT, "--reason", "r"],
        4,
        &["--confirm"],
    ),
    (
        &["rollout", "finalize", ROLLOUT, "--all"],
        4,
        &["--confirm"],
    ),
    (&["reboot", "host", "a.example.com"], 4, &["--confirm"]),
    (
        &["host", "set-expected-role", "a.example.com", "--role", "r"],
        4,
        &["--confirm"],
    ),
    (
        &[
            "host",
            "assign-population",
            "--filter",
            "hostname:a*",
            "--population",
            "p",
        ],
        4,
        &["--confirm"],
    ),
    (&["host", "repin", "a.example.com"], 4, &["--confirm"]),
    (
        &[
            "host",
            "quarantine",
            "a.example.com",
            "--until",
            "8h",
            "--reason",
            "r",
        ],
        4,
        &["--confirm"],
    ),
    (
        &["host", "unquarantine", "a.example.com"],
        4,
        &["--confirm"],
    ),
    (
        &[
            "host",
            "quarantine",
            "a.example.com",
            "--until",
            "next tuesday",
            "--reason",
            "r",
            "--confirm",
        ],
        1,
        &["next tuesday"],
    ),
    (
        &["host", "quarantine", "a.example.com", "--until", "8h"],
        1,
        &["--reason"],
    ),
    (
        &[
            "host",
            "quarantine",
            "bad!host",
            "--until",
            "8h",
            "--reason",
            "r",
            "--confirm",
        ],
        1,
        &["bad!host"],
    ),
    (
        &["host", "unquarantine", "unknown.example.com", "--confirm"],
        1,
        &["unknown.example.com"],
    ),
    (&["host", "disable", "a.example.com"], 1, &["--reason"]),
    (
        &[
            "host",
            "assign-population",
            "a.example.com",
            "--population",
            "no-such-population",
        ],
        1,
        &["no-such-population"],
    ),
    (
        &["rollout", "pause", "ro-nothing", "--reason", "r"],
        1,
        &["ro-nothing"],
    ),
    (&["rollout", "halt", "--all"], 1, &["--reason"]),
    (&["watch", "rollout", "ro.*"], 1, &["ro.*"]),
    (&["watch", "rollout", "ro-nothing"], 1, &["ro-nothing"]),
    (&["rollout", "resume", "ro-nothing"], 1, &["ro-nothing"]),
    (&["rollout", "retry", "ro-nothing"], 1, &["ro-nothing"]),
    (
        &["rollout", "retry", "ro-nothing", "--host", "a;b"],
        1,
        &["--host", "';'"],
    ),
    (&["rollout", "list", "--bogus"], 1, &["--bogus"]),
    (&["host", "enable", "bad!host"], 1, &["bad!host"]),
    (
        &["host", "clear-expected-role", "bad!host"],
        1,
        &["bad!host"],
    ),
    (&["host", "history", "bad!host"], 1, &["bad!host"]),
    (
        &["inventory", "seed", "remove", "bad!host"],
        1,
        &["bad!host"],
    ),
    (&["inventory", "refresh", "--seed", "some"], 1, &["some"]),
    (&["inventory", "drift", "--bogus"], 1, &["--bogus"]),
    (&["population", "list", "--bogus"], 1, &["--bogus"]),
    // The mesh and its processes.
    (&["up", "--nats-port", "99999"], 1, &["99999"]),
    (&["up", "--web-listen", "garbage"], 1, &["garbage"]),
    (&["serve", "--web-listen", "garbage"], 1, &["garbage"]),
    (&["worker", "nosuchkind"], 1, &["nosuchkind"]),
    (&["ping", "--worker", "nosuchkind"], 1, &["nosuchkind"]),
    (&["status", "extra"], 1, &["extra"]),
    (&["monitor", "--interval", "bogus"], 1, &["bogus"]),
    (&["auth", "init", "--bogus"], 1, &["--bogus"]),
    (&["audit", "verify", "--bogus"], 1, &["--bogus"]),
    (&["completions", "nosuchshell"], 1, &["nosuchshell"]),
    (
        &["converge", "host", "unknown.example.com"],
        1,
        &["unknown.example.com"],
    ),
    (
        &[
            "inventory",
            "seed",
            "sync",
            "--from-file",
            "/nonexistent/seeds.txt",
        ],
        1,
        &["/nonexistent/seeds.txt"],
    ),
    (&["auth", "revoke"], 1, &["--jti"]),
    // The audit log and tokens.
    (
        &["audit", "list", "--since", "yesterday"],
        1,
        &["yesterday"],
    ),
    (
        &["audit", "snapshot", "no-such-snapshot"],
        1,
        &["no-such-snapshot"],
    ),
    (
        &["auth", "issue", "--actor", "bad actor!", "--role", "relops"],
        1,
        &["bad actor!"],
    ),
    (
        &["auth", "issue", "--actor", "a", "--role", "god"],
        1,
        &["god"],
    ),
    (
        &["--token-file", "/nonexistent/token", "host", "list"],
        1,
        &["/nonexistent/token"],
    ),
];

/// Files: what each holds, and (arguments with `FILE` for its path, exit
/// code, words the message must hold).
type FileCase = (
    &'static str,
    Contents,
    &'static [&'static str],
    i32,
    &'static [&'static str],
);

#[derive(Clone, Copy)]
enum Contents {
    Text(&'static str),
    /// Bytes that are not UTF-8, NULs among them.
    Binary,
    /// Larger than any seed file may be.
    Huge,
}

const HUGE: usize = 17 << 20;

const FILE_CASES: &[FileCase] = &[
    (
        "seeds-junk.txt",
        Contents::Text("good.example.com\nthis is not a hostname\n;rm -rf /\n"),
        &["inventory", "seed", "sync", "--from-file", "FILE"],
        1,
        &["line 2", "line 3", "nothing changed"],
    ),
    (
        "seeds-binary.txt",
        Contents::Binary,
        &["inventory", "seed", "sync", "--from-file", "FILE"],
        1,
        &["not UTF-8", "nothing changed"],
    ),
    (
        "seeds-huge.txt",
        Contents::Huge,
        &["inventory", "seed", "sync", "--from-file", "FILE"],
        1,
        &["too large"],
    ),
    (
        "seeds-dir",
        Contents::Text(""),
        &["inventory", "seed", "sync", "--from-file", "/"],
        1,
        &["/"],
    ),
    (
        "config-junk.toml",
        Contents::Text("[ssh\nparallelism = lots\n"),
        &["--config", "FILE", "host", "list"],
        1,
        &["config-junk.toml"],
    ),
    (
        "config-unknown.toml",
        Contents::Text("[ssh]\nparalelism = 4\n"),
        &["--config", "FILE", "host", "list"],
        1,
        &["paralelism"],
    ),
    (
        "config-binary.toml",
        Contents::Binary,
        &["--config", "FILE", "host", "list"],
        1,
        &["config-binary.toml"],
    ),
    (
        "known-hosts-junk",
        Contents::Text("# fleet\nh1.example.com ssh-ed25519 not-base64!\n"),
        &["host", "pin", "--from-known-hosts", "FILE", "--confirm"],
        1,
        &["known-hosts-junk:2", "not a known_hosts entry"],
    ),
    (
        "known-hosts-binary",
        Contents::Binary,
        &["host", "pin", "--from-known-hosts", "FILE", "--confirm"],
        1,
        &["known-hosts-binary", "UTF-8"],
    ),
    (
        "known-hosts-huge",
        Contents::Huge,
        &["host", "pin", "--from-known-hosts", "FILE", "--confirm"],
        1,
        &["too large"],
    ),
    (
        "token-junk",
        Contents::Text("not.a.token\n"),
        &[
            "--token-file",
            "FILE",
            "inventory",
            "seed",
            "add",
            "b.example.com",
        ],
        5,
        &["token"],
    ),
    (
        "token-binary",
        Contents::Binary,
        &["--token-file", "FILE", "host", "list"],
        1,
        &["token-binary"],
    ),
    (
        "token-empty",
        Contents::Text(""),
        &["--token-file", "FILE", "host", "list"],
        1,
        &["token-empty"],
    ),
];

fn write_file(dir: &std::path::Path, name: &str, contents: Contents) -> String {
    let path = dir.join(name);
    let bytes: Vec<u8> = match contents {
        Contents::Text(text) => text.as_bytes().to_vec(),
        Contents::Binary => (0..4096u32)
            .map(|i| (i * 167 % 251) as u8 | 0x80)
            .chain([0, 0xff, 0xfe])
            .collect(),
        Contents::Huge => "h.example.com\n".repeat(HUGE / 14 + 1).into_bytes(),
    };
    std::fs::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_string()
}

/// Runs each case, and names every one that did not exit as it should.
fn check_cases<'a>(cli: &Cli, cases: impl Iterator<Item = (Vec<String>, i32, &'a [&'a str])>) {
    let mut wrong = Vec::new();
    for (args, code, words) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let Some((got, said)) = run_within(cli, &args, Duration::from_secs(30)) else {
            wrong.push(format!(
                "fleetroll {}: still running after 30 s",
                args.join(" ")
            ));
            continue;
        };
        let named = words.iter().all(|w| said.contains(w));
        if got != code || !named || said.contains("panicked") {
            wrong.push(format!(
                "fleetroll {}: wanted exit {code} naming {words:?}, got exit {got}:\n{said}",
                args.join(" ")
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

/// A rollout over `target`, created and not started.
fn created_rollout(cli: &Cli, target: &str) -> String {
    let create = cli.run(&[
        "rollout",
        "create",
        "--target",
        target,
        "--change",
        "PUPPET_BRANCH=x",
    ]);
    assert_eq!(create.code, 0, "{create:?}");
    create.stdout.trim().to_string()
}

/// What bad input must leave as it was: the seeds and the rollout.
fn state(cli: &Cli, rollout: &str) -> (String, String) {
    (
        cli.run(&["inventory", "seed", "list", "--json"]).stdout,
        cli.run(&["rollout", "status", rollout, "--json"]).stdout,
    )
}

#[test]
fn every_bad_input_is_refused_clearly_and_changes_nothing() {
    let up = Up::start();
    let cli = &up.cli;
    assert_eq!(
        cli.run(&["inventory", "seed", "add", "a.example.com"]).code,
        0
    );
    let rollout = created_rollout(cli, "hostname:a*");
    let before = state(cli, &rollout);

    let files = tempfile::tempdir().unwrap();
    let arguments = CASES.iter().map(|(args, code, words)| {
        let args = args
            .iter()
            .map(|a| {
                if *a == ROLLOUT {
                    rollout.clone()
                } else {
                    a.to_string()
                }
            })
            .collect();
        (args, *code, *words)
    });
    let files = FILE_CASES
        .iter()
        .map(|(name, contents, args, code, words)| {
            let path = write_file(files.path(), name, *contents);
            let args = args
                .iter()
                .map(|a| {
                    if *a == "FILE" {
                        path.clone()
                    } else {
                        a.to_string()
                    }
                })
                .collect();
            (args, *code, *words)
        });
    check_cases(cli, arguments.chain(files));

    assert_eq!(state(cli, &rollout), before, "bad input changed nothing");
    let verify = cli.run(&["audit", "verify"]);
    assert_eq!(verify.code, 0, "{verify:?}");
}

const BAD_HOSTS: &str = r#"
[puppet]
broken_branches = { feature_broken = 1 }
[[hosts]]
names = ["lab-0002"]
unreachable = true
[[hosts]]
names = ["lab-0003"]
blackhole = true
[[hosts]]
names = ["lab-0004"]
hang = true
[[hosts]]
names = ["lab-0005"]
sudo = false
[[hosts]]
names = ["lab-0006"]
metadata = "malformed"
[[hosts]]
names = ["lab-0007"]
metadata = "not_utf8"
[[hosts]]
names = ["lab-0008"]
override = "PUPPET_BRANCH=feature_broken\n"
"#;

/// (arguments, with `lab-000N` for that host's name and ROLLOUT for a
/// rollout over the pre-overridden host; exit code; words the message must
/// hold)
const HOST_CASES: &[Case] = &[
    (
        &["host", "refresh", "lab-0002"],
        2,
        &["lab-0002", "refused"],
    ),
    (
        &["host", "refresh", "lab-0003"],
        2,
        &["lab-0003", "timed out"],
    ),
    (
        &["host", "refresh", "lab-0004"],
        2,
        &["lab-0004", "timed out"],
    ),
    (
        &["host", "refresh", "lab-0009"],
        2,
        &["lab-0009", "host key", "repin"],
    ),
    (
        &["converge", "host", "lab-0002"],
        2,
        &["lab-0002", "refused"],
    ),
    (
        &["converge", "host", "lab-0003"],
        2,
        &["lab-0003", "timed out"],
    ),
    (&["converge", "host", "lab-0005"], 2, &["lab-0005", "sudo"]),
    (&["converge", "host", "lab-0008"], 2, &["lab-0008", "exit"]),
    (
        &["converge", "host", "lab-0009"],
        2,
        &["lab-0009", "host key"],
    ),
    (
        &["reboot", "host", "lab-0003", "--confirm"],
        2,
        &["lab-0003", "timed out"],
    ),
    (&["host", "show", "lab-0006"], 0, &["metadata"]),
    (&["host", "show", "lab-0007"], 0, &["UTF-8"]),
    (&["rollout", "start", ROLLOUT], 4, &["lab-0008", "override"]),
];

#[test]
fn every_bad_host_is_reported_clearly_and_loses_nothing() {
    let lab_dir = tempfile::tempdir().unwrap();
    let scenario = Scenario::parse(BAD_HOSTS, false).unwrap();
    let lab = Lab::start(LabConfig::new(10, lab_dir.path()).scenario(scenario)).unwrap();
    let up = Up::start_with(
        "[ssh]\nexec_timeout = \"4s\"\nconnect_timeout = \"4s\"\n",
        lab_env(&lab),
    );
    let cli = &up.cli;
    let names: Vec<String> = lab.hosts().iter().map(|h| h.hostname.clone()).collect();
    let mut add = vec!["inventory", "seed", "add"];
    add.extend(names.iter().map(String::as_str));
    assert_eq!(cli.run(&add).code, 0);
    let onboard = cli.run(&["inventory", "refresh", "--seed", "all"]);
    assert_eq!(
        onboard.code, 2,
        "some hosts could not be probed: {onboard:?}"
    );
    // Reimaged: a new key, and a reboot that drops the pooled connection.
    let reimaged = lab.host("lab-0009").unwrap();
    reimaged.rotate_host_key().unwrap();
    reimaged.set_reboot_duration(Duration::from_secs(1));
    reimaged.reboot().unwrap();
    reimaged.wait_reachable(Duration::from_secs(30)).unwrap();
    let rollout = created_rollout(cli, "hostname:lab-0008*");
    let before = state(cli, &rollout);
    let full = |short: &str| {
        names
            .iter()
            .find(|n| n.starts_with(&format!("{short}.")))
            .cloned()
    };
    check_cases(
        cli,
        HOST_CASES.iter().map(|(args, code, words)| {
            let args = args
                .iter()
                .map(|a| {
                    if *a == ROLLOUT {
                        rollout.clone()
                    } else {
                        full(a).unwrap_or_else(|| a.to_string())
                    }
                })
                .collect();
            (args, *code, *words)
        }),
    );
    assert_eq!(state(cli, &rollout), before, "bad hosts changed nothing");
    let list = cli.run(&["host", "list", "--json"]);
    assert_eq!(
        list.json().as_array().unwrap().len(),
        names.len(),
        "no host lost"
    );
    let verify = cli.run(&["audit", "verify"]);
    assert_eq!(verify.code, 0, "{verify:?}");
    drop(up);
    lab.down().unwrap();
}
