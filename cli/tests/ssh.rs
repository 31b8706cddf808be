//! SSH the way operators already use it, on the real lab: their ssh config
//! with a bastion, their agent, their known_hosts.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Cli, Up, lab_env, wait_until};
use fleetroll_lab::{HostKeyKind, Lab, LabConfig};
use serde_json::Value;

fn show(cli: &Cli, host: &str) -> Value {
    let shown = cli.run(&["host", "show", host, "--json"]);
    assert_eq!(shown.code, 0, "{shown:?}");
    shown.json()
}

fn status(cli: &Cli, id: &str) -> Value {
    let run = cli.run(&["rollout", "status", id, "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    run.json()
}

fn ssh_keygen(args: &[&str], path: &Path) {
    let status = Command::new("ssh-keygen")
        .arg("-q")
        .args(args)
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "ssh-keygen {args:?} {}", path.display());
}

/// The fleet is reachable only through the lab's bastion, and fleetroll is
/// given nothing but the ssh config the lab prints (Host patterns and
/// ProxyJump, no FLEETROLL_SSH_*): the roll call and a rollout (write,
/// verify, roll back) work through it, many hosts share one connection to
/// it, a bastion that drops is replaced at once, and an option fleetroll
/// does not act on is named in a warning once.
#[test]
fn the_inventory_and_a_rollout_go_through_a_bastion_with_only_an_ssh_config() {
    let lab_dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(LabConfig::new(4, lab_dir.path()).bastion(true)).unwrap();
    let names: Vec<String> = lab.hosts().iter().map(|h| h.hostname.clone()).collect();
    let direct = std::net::TcpStream::connect((lab.hosts()[0].address, lab.ssh_port()));
    assert!(direct.is_err(), "the hosts are not reachable directly");

    let config = lab_dir.path().join("operator_ssh_config");
    let mut text = std::fs::read_to_string(lab.ssh_config_file()).unwrap();
    text.push_str("\nHost *\n    ForwardX11 yes\n");
    std::fs::write(&config, text).unwrap();
    // Two targets per connection to the bastion: four hosts take two.
    let up = Up::start_with(
        &format!(
            "[ssh]\nconfig_file = \"{}\"\nchannels_per_jump = 2\n",
            config.display()
        ),
        Vec::new(),
    );
    let cli = &up.cli;
    common::onboard(cli, &names);
    for name in &names {
        let host = show(cli, name);
        assert_eq!(host["last_error"], Value::Null, "{host:#}");
        assert_eq!(host["sshable"], Value::Bool(true), "{host:#}");
    }
    assert_eq!(cli.replicas_of("prober"), 1);
    assert_eq!(
        lab.bastion_connections(),
        2,
        "four hosts share two connections to the bastion"
    );

    let id = common::create_rollout(cli, &format!("hostname:{}", names[0]), "1");
    assert_eq!(cli.run(&["rollout", "start", &id]).code, 0);
    let canary = lab.host(&names[0]).unwrap();
    wait_until(
        "the override on the canary",
        Duration::from_secs(60),
        || canary.file(canary.override_path()).unwrap().is_some(),
    );
    wait_until("a probe to see it", Duration::from_secs(60), || {
        show(cli, &names[0])["override_present"] == Value::Bool(true)
    });
    let rollback = cli.run(&[
        "rollout",
        "rollback",
        &id,
        "--remove-overrides",
        "--confirm",
        "--reason",
        "through the bastion and back",
    ]);
    assert_eq!(rollback.code, 0, "{rollback:?}");
    wait_until("rolled back", Duration::from_secs(90), || {
        status(cli, &id)["rollout"]["state"] == "rolled_back"
    });
    assert_eq!(canary.file(canary.override_path()).unwrap(), None);

    lab.drop_bastion_connections().unwrap();
    let refresh = cli.run(&["inventory", "refresh", "--seed", "all"]);
    assert_eq!(
        refresh.code, 0,
        "a dropped bastion is replaced: {refresh:?}"
    );
    assert!(lab.bastion_connections() >= 1);

    let log = std::fs::read_to_string(cli.log_of(&[
        "up",
        "--nats-port",
        "0",
        "--web-listen",
        "127.0.0.1:0",
    ]))
    .unwrap();
    let warnings = log.lines().filter(|l| l.contains("ForwardX11")).count();
    assert_eq!(warnings, 1, "one warning naming the option:\n{log}");
}

/// A bastion that refuses us is named in each host's error.
#[test]
fn a_failing_bastion_is_named_in_the_error() {
    let lab_dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(LabConfig::new(1, lab_dir.path()).bastion(true)).unwrap();
    let bastion = lab.bastion().unwrap().hostname.clone();
    lab.set_bastion_unreachable(true).unwrap();
    let up = Up::start_with(
        &format!(
            "[ssh]\nconfig_file = \"{}\"\nconnect_timeout = \"2s\"\n",
            lab.ssh_config_file().display()
        ),
        Vec::new(),
    );
    let cli = &up.cli;
    let host = &lab.hosts()[0].hostname;
    assert_eq!(cli.run(&["inventory", "seed", "add", host]).code, 0);
    cli.run(&["host", "refresh", host]);
    let shown = show(cli, host);
    let error = shown["last_error"].as_str().unwrap_or_default();
    assert!(error.starts_with(&format!("via {bastion}: ")), "{shown:#}");
    assert_eq!(shown["sshable"], Value::Bool(false), "{shown:#}");
}

/// An ssh-agent of our own, on a socket in `dir`, holding `keys`.
struct Agent {
    child: std::process::Child,
    socket: PathBuf,
}

impl Agent {
    fn start(dir: &Path, keys: &[&Path]) -> Agent {
        let socket = dir.join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_until("the agent's socket", Duration::from_secs(10), || {
            socket.exists()
        });
        for key in keys {
            let added = Command::new("ssh-add")
                .arg(key)
                .env("SSH_AUTH_SOCK", &socket)
                .output()
                .unwrap();
            assert!(added.status.success(), "{added:?}");
        }
        Agent { child, socket }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lab's key, encrypted with a passphrase fleetroll never learns, is
/// used through an agent that holds it, after a key the host refuses; the
/// same file with no agent is a clear error naming it, and exit 2 for that
/// host while the other is recorded.
#[test]
fn a_key_held_only_by_the_agent_works_and_an_encrypted_file_alone_is_a_clear_error() {
    let lab_dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(LabConfig::new(2, lab_dir.path())).unwrap();
    let keys = tempfile::tempdir().unwrap();
    let encrypted = keys.path().join("id_encrypted");
    std::fs::copy(lab.identity_file(), &encrypted).unwrap();
    ssh_keygen(
        &["-p", "-P", "", "-N", "a passphrase nobody types", "-f"],
        &encrypted,
    );
    let public = std::fs::read_to_string(format!("{}.pub", lab.identity_file().display())).unwrap();
    std::fs::write(format!("{}.pub", encrypted.display()), public).unwrap();
    let refused_key = keys.path().join("id_other");
    ssh_keygen(&["-t", "ed25519", "-N", "", "-f"], &refused_key);
    let agent = Agent::start(keys.path(), &[&refused_key, lab.identity_file()]);

    let (agented, alone) = (&lab.hosts()[0].hostname, &lab.hosts()[1].hostname);
    let config = keys.path().join("ssh_config");
    std::fs::write(
        &config,
        format!(
            "Host {agented}\n    IdentityAgent {socket}\n    IdentityFile {refused}\n    IdentityFile {encrypted}\n\
             Host {alone}\n    IdentityAgent none\n    IdentityFile {encrypted}\n\
             Host *\n    User {user}\n    Port {port}\n    UserKnownHostsFile {known}\n",
            socket = agent.socket.display(),
            refused = refused_key.display(),
            encrypted = encrypted.display(),
            user = lab.ssh_user(),
            port = lab.ssh_port(),
            known = lab.known_hosts_file().display(),
        ),
    )
    .unwrap();
    let up = Up::start_with(
        &format!("[ssh]\nconfig_file = \"{}\"\n", config.display()),
        Vec::new(),
    );
    let cli = &up.cli;
    assert_eq!(
        cli.run(&["inventory", "seed", "add", agented, alone]).code,
        0
    );
    let refresh = cli.run(&["inventory", "refresh", "--seed", "all"]);
    assert_eq!(refresh.code, 2, "one host failed: {refresh:?}");
    let good = show(cli, agented);
    assert_eq!(good["last_error"], Value::Null, "{good:#}");
    assert_eq!(good["sshable"], Value::Bool(true));
    let bad = show(cli, alone);
    let error = bad["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("{} is encrypted", encrypted.display())),
        "{bad:#}"
    );
    assert_eq!(bad["sshable"], Value::Bool(false), "{bad:#}");
}

/// `host pin --from-known-hosts` with `first_contact = "known-hosts"`:
/// a host whose (hashed) entries match, one key of each type, is probed
/// with no trust on first use, one whose entry differs is refused naming both keys, a host
/// certificate signed by the imported CA is accepted and one signed by
/// another CA refused, a revoked key is refused, and a host known nowhere
/// is refused until pinned.
#[test]
fn known_hosts_are_imported_and_decide_every_first_contact() {
    let lab_dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(LabConfig::new(6, lab_dir.path())).unwrap();
    let hosts: Vec<String> = lab.hosts().iter().map(|h| h.hostname.clone()).collect();
    let [matching, mismatching, certified, other_ca, revoked, unknown] = &hosts[..] else {
        panic!("six hosts");
    };
    let keys = tempfile::tempdir().unwrap();
    let ca = keys.path().join("ca");
    let stranger_ca = keys.path().join("stranger_ca");
    let ca_public = fleetroll_lab::generate_key_pair(&ca, HostKeyKind::Ed25519, "ca").unwrap();
    fleetroll_lab::generate_key_pair(&stranger_ca, HostKeyKind::Ed25519, "other").unwrap();
    let own_key = |host: &str, kind| lab.host(host).unwrap().set_host_key(kind).unwrap();
    let matching_key = own_key(matching, HostKeyKind::Ecdsa);
    let real_key = own_key(mismatching, HostKeyKind::Ed25519);
    let revoked_key = own_key(revoked, HostKeyKind::Ed25519);
    own_key(certified, HostKeyKind::Ed25519);
    own_key(other_ca, HostKeyKind::Ed25519);
    lab.host(certified)
        .unwrap()
        .certify_host_key(&ca, &[certified], None)
        .unwrap();
    lab.host(other_ca)
        .unwrap()
        .certify_host_key(&stranger_ca, &[other_ca], None)
        .unwrap();
    let port = lab.ssh_port();
    let wrong_key =
        fleetroll_lab::generate_key_pair(&keys.path().join("wrong"), HostKeyKind::Ed25519, "wrong")
            .unwrap();
    let domain = matching.split_once('.').unwrap().1;
    let known = keys.path().join("known_hosts");
    std::fs::write(
        &known,
        format!(
            "[{matching}]:{port} {wrong_key}\n\
             [{matching}]:{port} {matching_key}\n\
             [{mismatching}]:{port} {wrong_key}\n\
             @cert-authority [{certified}]:{port},[{other_ca}]:{port} {ca_public}\n\
             @revoked * {revoked_key}\n\
             [{revoked}]:{port} {revoked_key}\n\
             # *.{domain} is not trusted wholesale\n"
        ),
    )
    .unwrap();
    // Hashed, as `HashKnownHosts yes` writes them.
    ssh_keygen(&["-H", "-f"], &known);

    let up = Up::start_with("[ssh]\nfirst_contact = \"known-hosts\"\n", lab_env(&lab));
    let cli = &up.cli;
    let mut add = vec!["inventory", "seed", "add"];
    add.extend(hosts.iter().map(String::as_str));
    assert_eq!(cli.run(&add).code, 0);
    let file = known.to_str().unwrap();
    let dry = cli.run(&["host", "pin", "--from-known-hosts", file]);
    assert_eq!(dry.code, 4, "nothing changes without --confirm: {dry:?}");
    assert!(
        dry.stdout.contains(&format!("{matching}: would pin")),
        "{dry:?}"
    );
    let import = cli.run(&["host", "pin", "--from-known-hosts", file, "--confirm"]);
    assert_eq!(import.code, 0, "{import:?}");
    assert!(!import.stdout.contains(unknown.as_str()), "{import:?}");

    cli.run(&["inventory", "refresh", "--seed", "all"]);
    let error_of = |host: &str| show(cli, host)["last_error"].as_str().map(str::to_string);
    assert_eq!(error_of(matching), None, "matched, no TOFU");
    assert_eq!(error_of(certified), None, "certified by the imported CA");
    let fingerprint = |key: &str| {
        let path = keys.path().join("fp.pub");
        std::fs::write(&path, key).unwrap();
        let out = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(&path)
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    };
    let changed = error_of(mismatching).unwrap_or_default();
    assert!(
        changed.contains("host key changed")
            && changed.contains(&fingerprint(&wrong_key))
            && changed.contains(&fingerprint(&real_key)),
        "both fingerprints: {changed}"
    );
    let stranger = error_of(other_ca).unwrap_or_default();
    assert!(
        stranger.contains("host key changed"),
        "another CA: {stranger}"
    );
    assert!(error_of(revoked).unwrap_or_default().contains("revoked"));
    let never = error_of(unknown).unwrap_or_default();
    assert!(
        never.contains("first_contact is \"known-hosts\""),
        "{never}"
    );
    let pins = show(cli, matching);
    assert_eq!(pins["sshable"], Value::Bool(true), "{pins:#}");
}

/// RSA host keys are used with SHA-2 signatures; a host that offers only
/// `ssh-rsa` (SHA-1) is refused unless the ssh config asks for it.
#[test]
fn rsa_sha1_is_refused_unless_the_ssh_config_asks_for_it() {
    let lab_dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(LabConfig::new(3, lab_dir.path())).unwrap();
    let hosts: Vec<String> = lab.hosts().iter().map(|h| h.hostname.clone()).collect();
    lab.host(&hosts[0])
        .unwrap()
        .set_host_key(HostKeyKind::Rsa)
        .unwrap();
    lab.host(&hosts[1])
        .unwrap()
        .set_host_key(HostKeyKind::RsaSha1Only)
        .unwrap();
    lab.host(&hosts[2])
        .unwrap()
        .set_host_key(HostKeyKind::RsaSha1Only)
        .unwrap();
    let config = lab_dir.path().join("operator_ssh_config");
    std::fs::write(
        &config,
        format!(
            "Host {}\n    HostKeyAlgorithms +ssh-rsa\nHost *\n    User {}\n    Port {}\n    IdentityFile {}\n",
            hosts[2],
            lab.ssh_user(),
            lab.ssh_port(),
            lab.identity_file().display()
        ),
    )
    .unwrap();
    let up = Up::start_with(
        &format!("[ssh]\nconfig_file = \"{}\"\n", config.display()),
        Vec::new(),
    );
    let cli = &up.cli;
    let mut add = vec!["inventory", "seed", "add"];
    add.extend(hosts.iter().map(String::as_str));
    assert_eq!(cli.run(&add).code, 0);
    cli.run(&["inventory", "refresh", "--seed", "all"]);
    assert_eq!(show(cli, &hosts[0])["last_error"], Value::Null);
    let sha1 = show(cli, &hosts[1]);
    assert!(
        sha1["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("ssh-rsa"),
        "{sha1:#}"
    );
    assert_eq!(show(cli, &hosts[2])["last_error"], Value::Null, "asked for");
}

/// An ssh config that cannot be read fails every host naming the file; it
/// is never taken as "no config".
#[test]
fn an_ssh_config_that_cannot_be_read_fails_every_host_naming_it() {
    let lab_dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(LabConfig::new(1, lab_dir.path())).unwrap();
    let config = lab_dir.path().join("broken_ssh_config");
    std::fs::write(&config, "Host *\n    Port twenty-two\n").unwrap();
    let up = Up::start_with(
        &format!("[ssh]\nconfig_file = \"{}\"\n", config.display()),
        Vec::new(),
    );
    let cli = &up.cli;
    let host = &lab.hosts()[0].hostname;
    assert_eq!(cli.run(&["inventory", "seed", "add", host]).code, 0);
    let refresh = cli.run(&["host", "refresh", host]);
    assert_eq!(refresh.code, 2, "{refresh:?}");
    let shown = show(cli, host);
    let error = shown["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("the ssh config cannot be used") && error.contains("broken_ssh_config:2"),
        "{shown:#}"
    );
}
