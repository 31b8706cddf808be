//! The server configurations in `nats-config/` are valid, and the 3-node
//! cluster forms and keeps three replicas of every stream and bucket.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fleetroll_bus::connect::{Bus, BusError, ConnectOptions, Credentials, Tls};
use fleetroll_bus::embedded::{self, ServerUsers, find_nats_server};
use fleetroll_bus::setup::{self, Replicas};
use fleetroll_bus::token::Role;
use fleetroll_bus::topology;

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../nats-config")
}

/// The cluster's PKI, made once per test process: a CA and a certificate
/// per node, each for 127.0.0.1.
fn pki() -> &'static Path {
    static PKI: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    PKI.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let ca = fleetroll_pki::Ca::create(dir.path(), "test").unwrap();
        for n in 1..=3 {
            ca.issue(
                fleetroll_pki::Kind::Node,
                &format!("n{n}"),
                &["127.0.0.1".into()],
                1,
            )
            .unwrap();
        }
        dir
    })
    .path()
}

fn nats_server(config: &Path, store: &Path) -> Command {
    let mut command = Command::new(find_nats_server(None).expect("nats-server (run `make setup`)"));
    // node-N.conf takes node N's certificate; single.conf none.
    let node = node_of(config).unwrap_or("1");
    command
        .arg("-c")
        .arg(config)
        .env("FLEETROLL_TLS_CA", pki().join(fleetroll_pki::CA_CERT))
        .env("FLEETROLL_TLS_CERT", pki().join(format!("n{node}.pem")))
        .env("FLEETROLL_TLS_KEY", pki().join(format!("n{node}-key.pem")))
        .env("FLEETROLL_NATS_STORE", store)
        .env("FLEETROLL_NATS_HOST", "127.0.0.1")
        .env("FLEETROLL_NATS_PORT", "14222");
    // single.conf's users; the nodes' are the set-up's and the
    // authorizer's, and every other connection is the callout's to judge.
    let users: &[&str] = if node_of(config).is_some() {
        &["AUTH", "ADMIN"]
    } else {
        &["RELOPS", "READONLY", "CHATOPS", "WORKER", "ADMIN"]
    };
    for user in users {
        command.env(
            format!("FLEETROLL_{user}_PASSWORD"),
            format!("{user}-secret"),
        );
    }
    // One callout issuer for the whole cluster.
    static ISSUER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    command.env(
        "FLEETROLL_CALLOUT_ISSUER",
        ISSUER.get_or_init(|| nkeys::KeyPair::new_account().public_key()),
    );
    command
}

/// N of node-N.conf.
fn node_of(config: &Path) -> Option<&str> {
    config
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.strip_prefix("node-"))
}

#[test]
fn every_config_is_valid() {
    let store = tempfile::tempdir().unwrap();
    let dir = config_dir();
    // The embedded server has a password user per role; the cluster has
    // none: each connection is its token's (the auth callout).
    for (name, users) in [
        ("single.conf", "permissions.conf"),
        ("node-1.conf", "callout.conf"),
        ("node-2.conf", "callout.conf"),
        ("node-3.conf", "callout.conf"),
    ] {
        let config = dir.join(name);
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(
            text.contains(&format!("\ninclude ./{users}")),
            "{name} includes {users}"
        );
        let output = nats_server(&config, store.path())
            .arg("-t")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}: {}",
            config.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// NATS wildcards match whole tokens only, so permissions.conf names every
/// stream and bucket the operators read; a new one must be added there (or
/// here, to the streams readers must not read).
#[test]
fn the_permissions_name_every_stream_and_bucket_readers_read() {
    let permissions = std::fs::read_to_string(config_dir().join("permissions.conf")).unwrap();
    // The command stream carries tokens; job queues are the workers' own.
    let unread: Vec<&str> = std::iter::once(topology::COMMANDS.name)
        .chain(
            topology::STREAMS
                .iter()
                .filter(|s| s.work_queue)
                .map(|s| s.name),
        )
        .collect();
    let streams = topology::STREAMS
        .iter()
        .map(|s| s.name.to_string())
        .filter(|s| !unread.contains(&s.as_str()))
        .chain(topology::BUCKETS.iter().map(|b| b.stream_name()));
    for stream in streams {
        for subject in [
            format!("\"$JS.API.CONSUMER.CREATE.{stream}\""),
            format!("\"$JS.API.CONSUMER.CREATE.{stream}.>\""),
            format!("\"$JS.API.CONSUMER.MSG.NEXT.{stream}.>\""),
            format!("\"$JS.API.DIRECT.GET.{stream}\""),
            format!("\"$JS.API.DIRECT.GET.{stream}.>\""),
            format!("\"$JS.API.STREAM.MSG.GET.{stream}\""),
        ] {
            assert!(
                permissions.contains(&subject),
                "permissions.conf lets readers read {stream}: {subject} is missing"
            );
        }
    }
    for stream in unread {
        assert!(
            !permissions.contains(&format!("CONSUMER.CREATE.{stream}")),
            "readers may not read {stream}"
        );
    }
    // A durable consumer on a stream readers read is denied to them by name:
    // they could otherwise reconfigure it or take its messages.
    for queue in topology::JOB_QUEUES {
        let stream = queue.stream.name;
        if !permissions.contains(&format!("\"$JS.API.CONSUMER.CREATE.{stream}.>\"")) {
            continue;
        }
        for subject in [
            format!("\"$JS.API.CONSUMER.CREATE.{stream}.{}\"", queue.consumer),
            format!("\"$JS.API.CONSUMER.CREATE.{stream}.{}.>\"", queue.consumer),
            format!("\"$JS.API.CONSUMER.MSG.NEXT.{stream}.{}\"", queue.consumer),
        ] {
            assert_eq!(
                permissions.matches(&subject).count(),
                2,
                "relops and readonly are denied {subject}"
            );
        }
    }
}

#[test]
fn up_makes_each_role_a_private_password_once() {
    use std::os::unix::fs::PermissionsExt;
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join(embedded::CREDENTIALS_DIR);
    let users = ServerUsers::load_or_create(&dir).unwrap();
    let mode = |p: &Path| p.metadata().unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    let mut passwords = Vec::new();
    for role in Role::ALL {
        let file = embedded::credentials_file(data.path(), role);
        assert_eq!(mode(&file), 0o600, "{}", file.display());
        let credentials = Credentials::load(&file).unwrap();
        assert_eq!(credentials.user, role.as_str());
        assert_eq!(&credentials, users.get(role));
        // 32 random bytes, base64url without padding.
        assert_eq!(credentials.password.len(), 43);
        assert!(
            credentials
                .password
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        passwords.push(credentials.password);
    }
    passwords.sort();
    passwords.dedup();
    assert_eq!(passwords.len(), 4, "one password per role");
    // Later runs keep them.
    let again = ServerUsers::load_or_create(&dir).unwrap();
    for role in Role::ALL {
        assert_eq!(again.get(role), users.get(role));
    }
    // The server gets them quoted: nats-server parses the value.
    let env = users.server_env();
    assert!(env.iter().any(|(k, v)| k == "FLEETROLL_WORKER_PASSWORD"
        && *v == format!("\"{}\"", users.get(Role::Worker).password)));
    // A file naming another user is refused, not silently used.
    std::fs::write(
        embedded::credentials_file(data.path(), Role::Chatops),
        "user = \"relops\"\npassword = \"x\"\n",
    )
    .unwrap();
    let refused = ServerUsers::load_or_create(&dir).unwrap_err().to_string();
    assert!(refused.contains("chatops.toml"), "{refused}");
}

#[test]
fn a_credentials_file_is_two_strings_and_nothing_else() {
    let ok = Credentials::parse("user = \"relops\"\npassword = \"p-q_r\"\n").unwrap();
    assert_eq!(ok.user, "relops");
    assert_eq!(ok.password, "p-q_r");
    assert_eq!(Credentials::parse(&ok.to_toml()).unwrap(), ok);
    assert!(
        !format!("{ok:?}").contains("p-q_r"),
        "Debug hides the password"
    );
    for (text, why) in [
        ("user = \"relops\"\n", "password"),
        ("password = \"x\"\n", "user"),
        ("user = \"\"\npassword = \"x\"\n", "empty"),
        ("user = \"relops\"\npassword = \"\"\n", "empty"),
        ("user = \"a.b\"\npassword = \"x\"\n", "'.'"),
        (
            "user = \"relops\"\npassword = \"x\"\nurl = \"nats://x\"\n",
            "url",
        ),
        ("user = 1\npassword = \"x\"\n", "string"),
        ("not toml", ""),
    ] {
        let err = Credentials::parse(text).unwrap_err();
        assert!(err.contains(why), "{text:?}: {err}");
    }
    let missing = Credentials::load(Path::new("/nonexistent/relops.toml")).unwrap_err();
    assert!(
        missing.to_string().contains("/nonexistent/relops.toml"),
        "{missing}"
    );
}

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_three_node_cluster_keeps_three_replicas() {
    let store = tempfile::tempdir().unwrap();
    let _nodes: Vec<Node> = (1..=3)
        .map(|n| {
            let config = config_dir().join(format!("node-{n}.conf"));
            Node(
                nats_server(&config, &store.path().join(format!("n{n}")))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    // The nodes include callout.conf: the set-up's admin user creates
    // everything, over TLS (the routes between the nodes are TLS too: the
    // cluster would not form otherwise).
    let admin = Credentials {
        user: "admin".into(),
        password: "ADMIN-secret".into(),
    };
    let url = "tls://127.0.0.1:4231,tls://127.0.0.1:4232,tls://127.0.0.1:4233";
    let tls = Tls {
        ca_file: Some(pki().join(fleetroll_pki::CA_CERT)),
        client: None,
    };
    let mut options = ConnectOptions::new(url, "test")
        .credentials(admin.clone())
        .tls(tls);
    options.wait_for_server = true;
    let bus = Bus::connect(options).await.unwrap();
    // No role has a password here: a relops login (which single.conf
    // takes) is the callout's to judge, and with no authorizer to say yes
    // it does not get in.
    let relops = ConnectOptions::new(url, "test")
        .credentials(Credentials {
            user: "relops".into(),
            password: "RELOPS-secret".into(),
        })
        .tls(Tls {
            ca_file: Some(pki().join(fleetroll_pki::CA_CERT)),
            client: None,
        });
    // (The server's refusal comes when the callout's wait ends, which the
    // client may take for a connection until then.)
    let refused = match Bus::connect(relops).await {
        Err(_) => true,
        Ok(bus) => bus.js.query_account().await.is_err(),
    };
    assert!(
        refused,
        "a shared role password lets no one into the cluster"
    );
    // A plaintext client, one that knows no CA, is turned away, and told why.
    let plaintext = ConnectOptions::new("nats://127.0.0.1:4231", "test").credentials(admin.clone());
    match Bus::connect(plaintext).await {
        Err(e @ BusError::Tls { .. }) => assert!(e.to_string().contains("ca_file"), "{e}"),
        other => panic!("a plaintext client got: {other:?}"),
    }
    // Nor is a client that trusts another deployment's CA.
    let elsewhere = tempfile::tempdir().unwrap();
    fleetroll_pki::Ca::create(elsewhere.path(), "elsewhere").unwrap();
    let wrong_ca = ConnectOptions::new("tls://127.0.0.1:4232", "test")
        .credentials(admin)
        .tls(Tls {
            ca_file: Some(elsewhere.path().join(fleetroll_pki::CA_CERT)),
            client: None,
        });
    match Bus::connect(wrong_ca).await {
        Err(e @ BusError::Tls { .. }) => assert!(e.to_string().contains("UnknownIssuer"), "{e}"),
        other => panic!("a client of another CA got: {other:?}"),
    }
    // The cluster needs a meta leader before it takes R3 streams.
    let mut created = Err(None);
    for _ in 0..60 {
        match setup::ensure(&bus, Replicas(3), Default::default()).await {
            Ok(()) => {
                created = Ok(());
                break;
            }
            Err(e) => created = Err(Some(e.to_string())),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    created.unwrap();
    for stream in topology::STREAMS
        .iter()
        .map(|s| s.name.to_string())
        .chain(topology::BUCKETS.iter().map(|b| format!("KV_{}", b.name)))
    {
        let info = bus
            .js
            .get_stream(&stream)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .clone();
        assert_eq!(info.config.num_replicas, 3, "{stream}");
        let cluster = info.cluster.expect("cluster info");
        assert_eq!(
            cluster.replicas.len(),
            2,
            "{stream}: a leader and two followers"
        );
    }
    // A second `ensure` with other settings leaves the cluster's streams alone.
    setup::ensure(&bus, Replicas(1), Default::default())
        .await
        .unwrap();
    let info = bus
        .js
        .get_stream(topology::COMMANDS.name)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(info.config.num_replicas, 3);
}
