//! Hosts that present other host keys: ECDSA, RSA with SHA-2, RSA with
//! SHA-1 only, and certificates signed by a CA, checked with the system ssh
//! and strict host key checking.

mod common;

use std::path::Path;
use std::process::Output;

use common::*;
use fleetroll_lab::{HostKeyKind, Lab, LabError, generate_key_pair};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A known_hosts file holding exactly `lines`.
fn known_hosts(dir: &Path, name: &str, lines: &[String]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn pinned(lab: &Lab, host: &str, key: &str) -> String {
    format!("[{host}]:{} {key}", lab.ssh_port())
}

#[test]
fn hosts_offer_only_the_key_type_they_were_given() {
    let dir = lab_dir();
    let lab = start(4, dir.path(), "");
    let [ecdsa, rsa, sha1, plain] = [0, 1, 2, 3].map(|i| lab.hosts()[i].hostname.clone());

    let keys = [
        (&ecdsa, HostKeyKind::Ecdsa, "ecdsa-sha2-nistp256 "),
        (&rsa, HostKeyKind::Rsa, "ssh-rsa "),
        (&sha1, HostKeyKind::RsaSha1Only, "ssh-rsa "),
    ]
    .map(|(host, kind, prefix)| {
        let key = lab.host(host).unwrap().set_host_key(kind).unwrap();
        assert!(key.starts_with(prefix), "{kind:?}: {key}");
        assert_eq!(lab.host(host).unwrap().host_public_key().unwrap(), key);
        pinned(&lab, host, &key)
    });
    let plain_key = lab.host(&plain).unwrap().host_public_key().unwrap();
    let mut lines = keys.to_vec();
    lines.push(pinned(&lab, &plain, &plain_key));
    let kh = known_hosts(dir.path(), "known_hosts.pinned", &lines);
    let run = |host: &str, algorithms: Option<&str>| {
        let opt = algorithms.map(|a| format!("HostKeyAlgorithms={a}"));
        // ssh reports a failed negotiation at INFO level.
        let mut extra = vec!["-o", "LogLevel=INFO"];
        extra.extend(opt.iter().flat_map(|o| ["-o", o.as_str()]));
        ssh_strict(&lab, host, "hostname", &kh, &extra)
    };
    let works = |host: &str, algorithms: Option<&str>| {
        assert_eq!(ok_stdout(&run(host, algorithms)), format!("{host}\n"));
    };
    let no_common_type = |host: &str, algorithms: Option<&str>| {
        let out = run(host, algorithms);
        assert_eq!(
            out.status.code(),
            Some(255),
            "{host} {algorithms:?}: {out:?}"
        );
        assert!(
            stderr(&out).contains("no matching host key type found"),
            "{host} {algorithms:?}: {}",
            stderr(&out)
        );
    };

    works(&ecdsa, None);
    no_common_type(&ecdsa, Some("ssh-ed25519,rsa-sha2-512,rsa-sha2-256"));

    works(&rsa, None);
    works(&rsa, Some("rsa-sha2-512"));
    works(&rsa, Some("rsa-sha2-256"));
    no_common_type(&rsa, Some("ssh-rsa"));
    no_common_type(&rsa, Some("ssh-ed25519"));

    // Like a server older than OpenSSH 7.2: current clients refuse it
    // unless ssh-rsa is allowed again.
    no_common_type(&sha1, None);
    no_common_type(&sha1, Some("rsa-sha2-512,rsa-sha2-256"));
    works(&sha1, Some("ssh-rsa"));
    works(&sha1, Some("+ssh-rsa"));

    // The others still present the lab's shared ed25519 key only.
    works(&plain, Some("ssh-ed25519"));
    no_common_type(&plain, Some("ecdsa-sha2-nistp256"));

    // A rotated key keeps its type and is a new key.
    lab.host(&ecdsa).unwrap().rotate_host_key().unwrap();
    let out = run(&ecdsa, None);
    assert!(
        stderr(&out).contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "{out:?}"
    );
    let rotated = lab.host(&ecdsa).unwrap().host_public_key().unwrap();
    assert!(rotated.starts_with("ecdsa-sha2-nistp256 "), "{rotated}");
}

#[test]
fn certified_hosts_are_trusted_through_their_ca_only() {
    let dir = lab_dir();
    let lab = start(5, dir.path(), "");
    let [shared, own, rsa, wrong_name, expired] =
        [0, 1, 2, 3, 4].map(|i| lab.hosts()[i].hostname.clone());
    let domain = shared.split_once('.').unwrap().1.to_string();
    let ca = dir.path().join("host_ca");
    let ca_pub = generate_key_pair(&ca, HostKeyKind::Ed25519, "lab test host CA").unwrap();
    let other_ca = dir.path().join("other_ca");
    let other_pub = generate_key_pair(&other_ca, HostKeyKind::Ed25519, "another CA").unwrap();

    // The lab's shared key, a key of the host's own, an RSA one.
    lab.host(&shared)
        .unwrap()
        .certify_host_key(&ca, &[&shared], None)
        .unwrap();
    lab.host(&own)
        .unwrap()
        .set_host_key(HostKeyKind::Ed25519)
        .unwrap();
    lab.host(&own)
        .unwrap()
        .certify_host_key(&ca, &[&own, "alias.example"], Some("-5m:+1h"))
        .unwrap();
    lab.host(&rsa)
        .unwrap()
        .set_host_key(HostKeyKind::Rsa)
        .unwrap();
    lab.host(&rsa)
        .unwrap()
        .certify_host_key(&ca, &[&rsa], Some("+1d"))
        .unwrap();
    lab.host(&wrong_name)
        .unwrap()
        .certify_host_key(&ca, &["someone-else.example"], None)
        .unwrap();
    lab.host(&expired)
        .unwrap()
        .certify_host_key(&ca, &[&expired], Some("-2d:-1d"))
        .unwrap();

    // The host is dialled on a port other than 22, so known_hosts names it
    // "[name]:port": the pattern must say so.
    let trust = |name: &str, key: &str| {
        known_hosts(
            dir.path(),
            name,
            &[format!("@cert-authority [*.{domain}]:* {key}")],
        )
    };
    let by_ca = trust("known_hosts.ca", &ca_pub);
    let by_other = trust("known_hosts.other", &other_pub);
    for host in [&shared, &own, &rsa] {
        let out = ssh_strict(&lab, host, "hostname", &by_ca, &[]);
        assert_eq!(ok_stdout(&out), format!("{host}\n"));
        let out = ssh_strict(&lab, host, "hostname", &by_other, &[]);
        assert_eq!(out.status.code(), Some(255), "{host}: {out:?}");
        assert!(
            stderr(&out).contains("Host key verification failed"),
            "{host}: {}",
            stderr(&out)
        );
    }
    for host in [&wrong_name, &expired] {
        let out = ssh_strict(&lab, host, "hostname", &by_ca, &[]);
        assert_eq!(out.status.code(), Some(255), "{host}: {out:?}");
    }
    // An uncertified host is not trusted by the CA.
    lab.host(&own).unwrap().rotate_host_key().unwrap();
    let out = ssh_strict(&lab, &own, "hostname", &by_ca, &[]);
    assert_eq!(out.status.code(), Some(255), "{out:?}");

    // A certified host still offers its plain key to clients that pin it.
    let plain = lab.host(&rsa).unwrap().host_public_key().unwrap();
    let pinned_kh = known_hosts(
        dir.path(),
        "known_hosts.plain",
        &[pinned(&lab, &rsa, &plain)],
    );
    let out = ssh_strict(&lab, &rsa, "hostname", &pinned_kh, &[]);
    assert_eq!(ok_stdout(&out), format!("{rsa}\n"));

    // What cannot be signed is an error, and the host keeps its certificate.
    let h = lab.host(&rsa).unwrap();
    let err = h.certify_host_key(&ca, &["a.example,b.example"], None);
    assert!(matches!(err, Err(LabError::Config(_))), "{err:?}");
    let err = h.certify_host_key(&dir.path().join("missing"), &[&rsa], None);
    assert!(matches!(err, Err(LabError::Command { .. })), "{err:?}");
    let out = ssh_strict(&lab, &rsa, "hostname", &by_ca, &[]);
    assert_eq!(ok_stdout(&out), format!("{rsa}\n"));
}
