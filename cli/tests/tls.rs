//! TLS to NATS: `fleetroll tls` makes a deployment's PKI, a server that
//! requires TLS takes fleetroll clients that trust its CA, and turns away,
//! with a clear error and exit 2, a plaintext client, a client that trusts
//! another CA, and (with mutual TLS) a client without a certificate of its
//! own CA. The embedded default stays plaintext on loopback and says so.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Cli, Up, free_port, wait_until};
use fleetroll_bus::embedded::{self, NatsUser, ServerUsers, find_nats_server};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// nats-server with the mesh's users and TLS from `pki`; `verify` asks
/// every client for a certificate of the CA.
fn tls_server(dir: &Path, pki: &Path, port: u16, verify: bool) -> Server {
    common::copy_nats_config(dir, "permissions.conf");
    let config = dir.join(format!("tls-{port}.conf"));
    std::fs::write(
        &config,
        format!(
            "host: 127.0.0.1\nport: {port}\njetstream {{ store_dir: {store:?} }}\n\
             tls {{\n  cert_file: {cert:?}\n  key_file: {key:?}\n  ca_file: {ca:?}\n  verify: {verify}\n}}\n\
             include ./permissions.conf\n",
            store = dir.join(format!("store-{port}")),
            cert = pki.join("nats-1.pem"),
            key = pki.join("nats-1-key.pem"),
            ca = pki.join("ca.pem"),
        ),
    )
    .unwrap();
    let users = ServerUsers::load_or_create(&dir.join(embedded::CREDENTIALS_DIR)).unwrap();
    let server = Command::new(find_nats_server(None).expect("nats-server (run `make setup`)"))
        .arg("-c")
        .arg(&config)
        .envs(users.server_env())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("nats-server to listen", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    Server(server)
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_tls_server_takes_clients_of_its_ca_and_refuses_the_others_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(dir.path());
    let pki = dir.path().join("tls");
    let init = cli.run(&["tls", "init", "--name", "test fleet"]);
    assert_eq!(init.code, 0, "{init:?}");
    assert!(pki.join("ca.pem").exists() && pki.join("ca-key.pem").exists());
    let again = cli.run(&["tls", "init"]);
    assert_eq!(again.code, 1, "a CA is never replaced: {again:?}");
    assert!(again.stderr.contains("exists"), "{again:?}");
    for args in [
        &[
            "tls",
            "issue",
            "node",
            "nats-1",
            "--san",
            "127.0.0.1",
            "--san",
            "localhost",
        ][..],
        &["tls", "issue", "client", "alice"][..],
    ] {
        let issued = cli.run(args);
        assert_eq!(issued.code, 0, "{issued:?}");
    }
    let no_san = cli.run(&["tls", "issue", "node", "nats-2"]);
    assert_eq!(no_san.code, 1, "{no_san:?}");
    let bad_name = cli.run(&["tls", "issue", "client", "../alice"]);
    assert_eq!(bad_name.code, 1, "{bad_name:?}");
    let mode = |p: &Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
            & 0o777
    };
    for key in ["ca-key.pem", "nats-1-key.pem", "alice-key.pem"] {
        assert_eq!(mode(&pki.join(key)), 0o600, "{key}");
    }
    // Another deployment's CA and a client certificate it signed.
    let other = dir.path().join("other");
    let made = cli.run(&["tls", "init", "--dir", path(&other)]);
    assert_eq!(made.code, 0, "{made:?}");
    let made = cli.run(&["tls", "issue", "client", "mallory", "--dir", path(&other)]);
    assert_eq!(made.code, 0, "{made:?}");

    let admin = embedded::credentials_file(dir.path(), NatsUser::Admin);
    let ca = pki.join("ca.pem");
    let port = free_port();
    let server = tls_server(dir.path(), &pki, port, false);
    let tls_url = format!("tls://127.0.0.1:{port}");
    let with = |url: &str, extra: &[&str], args: &[&str]| {
        let mut all = vec!["--nats-url", url];
        all.extend_from_slice(extra);
        all.extend_from_slice(args);
        cli.run(&all)
    };
    let set_up = with(
        &tls_url,
        &[
            "--nats-ca-file",
            path(&ca),
            "--nats-credentials",
            path(&admin),
        ],
        &["setup"],
    );
    assert_eq!(set_up.code, 0, "{set_up:?}");
    let status = with(&tls_url, &["--nats-ca-file", path(&ca)], &["status"]);
    assert_eq!(status.code, 0, "{status:?}");
    assert!(
        status.stdout.lines().next().unwrap().ends_with("TLS"),
        "{status:?}"
    );

    // A plaintext client: the server requires TLS, and this client knows
    // no CA that signed its certificate.
    let plaintext = with(&format!("nats://127.0.0.1:{port}"), &[], &["status"]);
    assert_eq!(plaintext.code, 2, "{plaintext:?}");
    assert!(
        plaintext.stderr.contains("TLS") && plaintext.stderr.contains("ca_file"),
        "{plaintext:?}"
    );
    let other_ca = with(
        &tls_url,
        &["--nats-ca-file", path(&other.join("ca.pem"))],
        &["status"],
    );
    assert_eq!(other_ca.code, 2, "{other_ca:?}");
    assert!(other_ca.stderr.contains("UnknownIssuer"), "{other_ca:?}");
    // With a CA file, a server that offers no TLS is refused too.
    let up = Up::start();
    let downgraded = with(&up.url(), &["--nats-ca-file", path(&ca)], &["status"]);
    assert_eq!(downgraded.code, 2, "{downgraded:?}");
    assert!(
        downgraded.stderr.contains("does not speak TLS"),
        "{downgraded:?}"
    );
    // The embedded default is plaintext on loopback, and says so.
    let embedded = up.cli.run(&["status"]);
    assert_eq!(embedded.code, 0, "{embedded:?}");
    assert!(embedded.stdout.contains("plaintext"), "{embedded:?}");
    drop(server);

    // Mutual TLS: the server wants a certificate of its own CA.
    let port = free_port();
    let _server = tls_server(dir.path(), &pki, port, true);
    let tls_url = format!("tls://127.0.0.1:{port}");
    let no_cert = with(&tls_url, &["--nats-ca-file", path(&ca)], &["status"]);
    assert_eq!(no_cert.code, 2, "{no_cert:?}");
    assert!(
        no_cert.stderr.contains("CertificateRequired"),
        "{no_cert:?}"
    );
    // `status` presenting the client certificate `name` of the PKI in `dir`.
    let status_as = |dir: &Path, name: &str| {
        let (cert, key) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}-key.pem")),
        );
        let flags = ["--nats-ca-file", path(&ca), "--nats-cert-file", path(&cert)];
        with(
            &tls_url,
            &[&flags[..], &["--nats-key-file", path(&key)]].concat(),
            &["status"],
        )
    };
    let foreign = status_as(&other, "mallory");
    assert_eq!(foreign.code, 2, "{foreign:?}");
    assert!(foreign.stderr.contains("UnknownCA"), "{foreign:?}");
    let own = status_as(&pki, "alice");
    assert_eq!(own.code, 0, "{own:?}");
}
