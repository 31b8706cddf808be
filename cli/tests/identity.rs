//! One NATS identity per operator: a server running `nats-config/callout.conf`
//! asks `fleetroll authorizer` about each connection, and the connection's
//! fleetroll token is its identity. Two operators connect with their own
//! tokens (bound to their keys: a token alone connects no one); revoking
//! one refuses that operator's next connection and ends
//! the open one within the session, and the other goes on.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Cli, free_port, refused, wait_until};
use fleetroll_bus::connect::{Bus, BusError, ConnectOptions};
use fleetroll_bus::subjects::hex;
use fleetroll_bus::token::TokenSource;
use futures::StreamExt;

struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_operator_is_their_own_nats_identity_and_revoking_one_cuts_only_them() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let mut cli = Cli::new(dir.path());
    cli.nats_url = Some(url.clone());
    let data = dir.path().to_path_buf();
    let seed_file = data.join("callout.nk");
    let path = |name: &str| data.join(name).display().to_string();
    let c = cli.clone();
    let (seed_path, issuer) = (path("callout.nk"), {
        // Keys and tokens first: nothing answers yet, which they allow.
        let init = c.run(&["auth", "init"]);
        assert_eq!(init.code, 0, "{init:?}");
        let made = c.run(&["auth", "callout-key", "--out", seed_file.to_str().unwrap()]);
        assert_eq!(made.code, 0, "{made:?}");
        made.stdout.trim().to_string()
    });
    for (actor, role) in [
        ("alice", "relops"),
        ("bob", "relops"),
        ("auditor-1", "worker"),
    ] {
        cli.issue_token(actor, role);
    }
    for (user, password) in [("auth", "auth-secret"), ("admin", "admin-secret")] {
        std::fs::write(
            data.join(format!("{user}.toml")),
            format!("user = \"{user}\"\npassword = \"{password}\"\n"),
        )
        .unwrap();
    }
    let config = data.join("server.conf");
    common::copy_nats_config(&data, "callout.conf");
    std::fs::write(
        &config,
        format!(
            "host: 127.0.0.1\nport: {port}\njetstream {{ store_dir: {:?} }}\ninclude ./callout.conf\n",
            data.join("store")
        ),
    )
    .unwrap();
    let _server = Server(
        Command::new(fleetroll_bus::embedded::find_nats_server(None).expect("nats-server"))
            .arg("-c")
            .arg(&config)
            .env("FLEETROLL_CALLOUT_ISSUER", &issuer)
            .env("FLEETROLL_AUTH_PASSWORD", "\"auth-secret\"")
            .env("FLEETROLL_ADMIN_PASSWORD", "\"admin-secret\"")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("nats-server to listen", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let set_up = cli.run(&["--nats-credentials", &path("admin.toml"), "setup"]);
    assert_eq!(set_up.code, 0, "{set_up:?}");
    let session = Duration::from_secs(3);
    let _authorizer = cli.spawn(&[
        "--nats-credentials",
        &path("auth.toml"),
        "authorizer",
        "--issuer-seed",
        &seed_path,
        "--session",
        "3s",
    ]);
    let status = |who: &str| cli.run(&["--token-file", &path(&format!("{who}.token")), "status"]);
    wait_until(
        "alice connects with her token",
        Duration::from_secs(30),
        || status("alice").code == 0,
    );
    assert_eq!(status("bob").code, 0);
    let published = cli.run(&["--token-file", &path("bob.token"), "auth", "publish"]);
    assert_eq!(published.code, 0, "{published:?}");
    // A worker too is who its token says: the auditor, which carries out
    // revocations.
    let auditor_token = path("auditor-1.token");
    let auditor_args = ["--token-file", auditor_token.as_str(), "worker", "auditor"];
    let _auditor = cli.spawn(&auditor_args);
    // (`status` as bob.)
    let mut as_bob = cli.clone();
    as_bob
        .env
        .push(("FLEETROLL_TOKEN_FILE".into(), path("bob.token")));
    let began = Instant::now();
    while as_bob.replicas_of("auditor") != 1 {
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "no live auditor; its log:\n{}\nstatus: {:?}",
            std::fs::read_to_string(cli.log_of(&auditor_args)).unwrap_or_default(),
            as_bob.run(&["status", "--json"])
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let forged = cli.run(&["--token-file", &path("auth.toml"), "status"]);
    assert_eq!(
        forged.code, 5,
        "a file that is no token connects no one: {forged:?}"
    );

    // Her token is bound to her key: without it, the token connects no one.
    let alice_token = std::fs::read_to_string(data.join("alice.token")).unwrap();
    match Bus::connect(
        ConnectOptions::new(url.clone(), "alice-without-key")
            .token(TokenSource::Fixed(alice_token.clone())),
    )
    .await
    {
        Err(BusError::NotAuthorized { .. }) => {}
        other => panic!("a captured token connected: {other:?}"),
    }
    // Alice's own connection, open while she is revoked.
    let alice = Bus::connect(
        ConnectOptions::new(url.clone(), "alice")
            .token(TokenSource::File(data.join("alice.token"))),
    )
    .await
    .unwrap();
    alice.client.flush().await.unwrap();
    // Replies go to each operator's own inbox: alice may read neither
    // bob's nor the role-wide one, while her own requests are answered.
    let bobs_inbox = format!("_INBOX_relops_{}.>", hex("bob"));
    for inbox in [bobs_inbox.as_str(), "_INBOX_relops.>"] {
        refused(&alice, inbox, async {
            let mut snoop = alice.client.subscribe(inbox.to_string()).await.unwrap();
            snoop.next().await
        })
        .await;
    }
    let answered = alice
        .client
        .request("$JS.API.INFO", Vec::new().into())
        .await
        .expect("alice's own inbox gets her reply");
    assert!(
        answered
            .subject
            .starts_with(&format!("_INBOX_relops_{}.", hex("alice"))),
        "{}",
        answered.subject
    );

    let revoked = cli.run(&[
        "--token-file",
        &path("bob.token"),
        "auth",
        "revoke",
        "--actor",
        "alice",
        "--reason",
        "left",
    ]);
    assert_eq!(
        revoked.code,
        0,
        "{revoked:?}\nthe auditor's log:\n{}",
        std::fs::read_to_string(cli.log_of(&auditor_args)).unwrap_or_default()
    );
    let refused = status("alice");
    assert_eq!(refused.code, 5, "{refused:?}");
    assert!(
        refused.stderr.contains("refused the connection"),
        "{refused:?}"
    );
    assert_eq!(status("bob").code, 0, "bob goes on");
    // Commands alike: alice's next one is refused, bob's are carried out.
    let revoke_as = |who: &str, target: &str| {
        let token = path(&format!("{who}.token"));
        cli.run(&[
            "--token-file",
            &token,
            "auth",
            "revoke",
            "--actor",
            target,
            "--reason",
            "test",
        ])
    };
    let alices = revoke_as("alice", "bob");
    assert_eq!(alices.code, 5, "{alices:?}");
    let bobs = revoke_as("bob", "mallory");
    assert_eq!(bobs.code, 0, "{bobs:?}");
    // Her open connection ends when its session does, and stays ended.
    let revoked_at = Instant::now();
    let alive = || alice.client.connection_state() == async_nats::connection::State::Connected;
    let limit = session * 3;
    while alive() {
        assert!(
            revoked_at.elapsed() < limit,
            "alice still connected after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ended = revoked_at.elapsed();
    while revoked_at.elapsed() < ended + session * 2 {
        assert!(!alive(), "alice got back in");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    match Bus::connect(
        ConnectOptions::new(url, "alice-again").token(TokenSource::File(data.join("alice.token"))),
    )
    .await
    {
        Err(BusError::NotAuthorized { .. }) => {}
        other => panic!("alice reconnected: {other:?}"),
    }
}
