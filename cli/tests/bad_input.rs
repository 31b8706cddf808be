//! Bad input, command by command: each gets the exit code of SPEC 8 and a
//! message that names what was wrong, and none of it changes the
//! inventory, the rollouts or the audit chain.

mod common;

use std::time::{Duration, Instant};

use common::{Cli, Up};

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

#[test]
fn every_bad_input_is_refused_clearly_and_changes_nothing() {
    let up = Up::start();
    let cli = &up.cli;
    assert_eq!(
        cli.run(&["inventory", "seed", "add", "a.example.com"]).code,
        0
    );
    let create = cli.run(&[
        "rollout",
        "create",
        "--target",
        "hostname:a*",
        "--change",
        "PUPPET_BRANCH=x",
    ]);
    assert_eq!(create.code, 0, "{create:?}");
    let rollout = create.stdout.trim().to_string();
    let state = |cli: &Cli| {
        (
            cli.run(&["inventory", "seed", "list", "--json"]).stdout,
            cli.run(&["rollout", "status", &rollout, "--json"]).stdout,
        )
    };
    let before = state(cli);

    let mut wrong = Vec::new();
    for (args, code, words) in CASES {
        let args: Vec<&str> = args
            .iter()
            .map(|a| if *a == ROLLOUT { rollout.as_str() } else { a })
            .collect();
        let Some((got, said)) = run_within(cli, &args, Duration::from_secs(30)) else {
            wrong.push(format!(
                "fleetroll {}: still running after 30 s",
                args.join(" ")
            ));
            continue;
        };
        let named = words.iter().all(|w| said.contains(w));
        if got != *code || !named || said.contains("panicked") {
            wrong.push(format!(
                "fleetroll {}: wanted exit {code} naming {words:?}, got exit {got}:\n{said}",
                args.join(" ")
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));

    assert_eq!(state(cli), before, "bad input changed nothing");
    let verify = cli.run(&["audit", "verify"]);
    assert_eq!(verify.code, 0, "{verify:?}");
}
