//! Tokens and roles, checked by the workers: the matrix of roles against a
//! mutating command and a read query, and every way a token can be bad.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Bare, Cli, Up, wait_until};
use fleetroll_bus::token::{self, Role, SigningKey};
use time::OffsetDateTime;

fn issue(cli: &Cli, actor: &str, role: &str) -> std::path::PathBuf {
    let path = cli.data_dir.join(format!("{actor}.token"));
    let run = cli.run(&[
        "auth",
        "issue",
        "--actor",
        actor,
        "--role",
        role,
        "--ttl",
        "1h",
        "--out",
        path.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    path
}

fn write_token(dir: &Path, name: &str, jwt: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, jwt).unwrap();
    path
}

fn as_token(cli: &Cli, path: &Path, args: &[&str]) -> common::Run {
    let mut all = vec!["--token-file", path.to_str().unwrap()];
    all.extend_from_slice(args);
    cli.run(&all)
}

fn seeds(cli: &Cli) -> Vec<String> {
    let run = cli.run(&["inventory", "seed", "list", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    run.json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["hostname"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn roles_and_bad_tokens() {
    let up = Up::start();
    let cli = &up.cli;
    for (role, may_mutate) in [
        ("relops", true),
        ("readonly", false),
        ("chatops", false),
        ("worker", false),
    ] {
        let token = issue(cli, &format!("{role}-user"), role);
        let host = format!("{role}.example.com");
        let add = as_token(cli, &token, &["inventory", "seed", "add", &host]);
        if may_mutate {
            assert_eq!(add.code, 0, "{role}: {add:?}");
        } else {
            assert_eq!(add.code, 5, "{role} may not mutate: {add:?}");
            assert!(
                add.stderr
                    .contains(&format!("role `{role}` may not do `seed_add`")),
                "{add:?}"
            );
        }
        let list = as_token(cli, &token, &["inventory", "seed", "list"]);
        assert_eq!(list.code, 0, "{role} may read: {list:?}");
    }

    let pem = std::fs::read_to_string(up.dir().join("auth/signing-key.pem")).unwrap();
    let key = SigningKey::from_pem(&pem).unwrap();
    let two_hours_ago = OffsetDateTime::now_utc() - time::Duration::hours(2);
    let (expired, _) = token::issue(
        &key,
        "late",
        Role::Relops,
        time::Duration::hours(1),
        two_hours_ago,
        None,
    )
    .unwrap();
    let (forged, _) = token::issue(
        &SigningKey::generate(),
        "mallory",
        Role::Relops,
        time::Duration::hours(1),
        OffsetDateTime::now_utc(),
        None,
    )
    .unwrap();
    let cases = [
        (
            "expired",
            write_token(up.dir(), "expired.token", &expired),
            "expired at",
        ),
        (
            "forged",
            write_token(up.dir(), "forged.token", &forged),
            "signature does not match",
        ),
        (
            "garbled",
            write_token(up.dir(), "garbled.token", "this-is-not-a-token"),
            "garbled",
        ),
    ];
    for (what, path, says) in &cases {
        for args in [
            &["inventory", "seed", "add", "bad.example.com"][..],
            &["inventory", "seed", "list"][..],
        ] {
            let run = as_token(cli, path, args);
            assert_eq!(run.code, 5, "{what} token, {args:?}: {run:?}");
            assert!(run.stderr.contains(says), "{what}: {run:?}");
        }
    }

    let revoked = issue(cli, "leaver", "relops");
    assert_eq!(
        as_token(
            cli,
            &revoked,
            &["inventory", "seed", "add", "before.example.com"]
        )
        .code,
        0
    );
    let revoke = cli.run(&[
        "auth",
        "revoke",
        "--token",
        revoked.to_str().unwrap(),
        "--reason",
        "left",
    ]);
    assert_eq!(revoke.code, 0, "{revoke:?}");
    let after = as_token(
        cli,
        &revoked,
        &["inventory", "seed", "add", "after.example.com"],
    );
    assert_eq!(after.code, 5, "{after:?}");
    assert!(after.stderr.contains("revoked"), "{after:?}");
    let read_after = as_token(cli, &revoked, &["inventory", "seed", "list"]);
    assert_eq!(read_after.code, 5, "{read_after:?}");

    // Revoking an actor refuses all of that actor's earlier tokens.
    let alice = issue(cli, "alice", "relops");
    assert_eq!(cli.run(&["auth", "revoke", "--actor", "alice"]).code, 0);
    assert_eq!(
        as_token(
            cli,
            &alice,
            &["inventory", "seed", "add", "alice.example.com"]
        )
        .code,
        5
    );

    assert_eq!(
        seeds(cli),
        ["before.example.com", "relops.example.com"],
        "refused commands changed nothing"
    );
}

#[test]
fn a_missing_token_is_refused_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let run = Cli::new(dir.path()).run(&["inventory", "seed", "add", "h.example.com"]);
    assert_eq!(run.code, 5, "{run:?}");
    assert!(run.stderr.contains("no token"), "{run:?}");
}

#[test]
fn a_cli_with_a_skewed_clock_refuses_token_operations() {
    let up = Up::start();
    let skewed = up.cli.clone().with_clock_offset("+90s");
    let ping = skewed.run(&["ping", "--worker", "prober"]);
    assert_eq!(ping.code, 5, "{ping:?}");
    assert!(ping.stderr.contains("ahead of the NATS server"), "{ping:?}");
    let issue = skewed.run(&["auth", "issue", "--actor", "x", "--role", "relops"]);
    assert_eq!(issue.code, 5, "{issue:?}");
    // 20 s off is within the limit.
    let fine = up
        .cli
        .clone()
        .with_clock_offset("-20s")
        .run(&["ping", "--worker", "prober"]);
    assert_eq!(fine.code, 0, "{fine:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_with_a_skewed_clock_refuses_commands() {
    let bare = Bare::start().await;
    let skewed = bare.cli.clone().with_clock_offset("+75s");
    let mut worker = skewed.spawn(&["worker", "auditor"]);
    let cli = bare.cli.clone();
    let run = tokio::task::spawn_blocking(move || {
        wait_until("the skewed auditor", Duration::from_secs(30), || {
            cli.replicas_of("auditor") == 1
        });
        cli.run(&["ping", "--worker", "auditor"])
    })
    .await
    .unwrap();
    common::kill(&mut worker, libc::SIGTERM);
    let _ = worker.wait();
    assert_eq!(run.code, 5, "{run:?}");
    assert!(run.stderr.contains("clock skew of 7"), "{run:?}");
    assert!(run.stderr.contains("exceeds 30 s"), "{run:?}");
}
