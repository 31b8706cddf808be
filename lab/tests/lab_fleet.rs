//! A 200-host lab reached with the system ssh client: every host shows its
//! own files, name, layout and sudo policy.

mod common;

use std::process::Command;

use common::*;
use fleetroll_lab::{Lab, LabConfig, Scenario, git_sha, sha256_hex};

const HOSTS: usize = 200;

fn role(i: usize) -> String {
    format!("role-{i:04}")
}

fn override_of(i: usize) -> String {
    format!("PUPPET_BRANCH=branch-{i:04}\nPUPPET_MAIL=ops-{i}@example.invalid\n")
}

/// Every host gets its own role and override, so any mix-up shows.
fn scenario() -> Scenario {
    let mut text = String::from(
        "[defaults]\njobs_per_minute = 60\n[[hosts]]\nnames = [\"lab-0002\"]\nsudo = false\n[[hosts]]\nnames = [\"lab-0150\"]\nos = \"macos\"\n",
    );
    for i in 1..=HOSTS {
        text.push_str(&format!(
            "[[hosts]]\nrange = [{i}, {i}]\nrole = \"{}\"\noverride = \"\"\"{}\"\"\"\n",
            role(i),
            override_of(i)
        ));
    }
    Scenario::parse(&text, false).unwrap()
}

#[test]
fn two_hundred_hosts_each_see_only_their_own_files() {
    let dir = lab_dir();
    let started = std::time::Instant::now();
    let lab = Lab::start(LabConfig::new(HOSTS, dir.path()).scenario(scenario())).unwrap();
    eprintln!("200 hosts up in {:?}", started.elapsed());
    assert_eq!(lab.hosts().len(), HOSTS);

    // Names resolve through the system resolver, to distinct loopback addresses.
    let last = &lab.hosts()[HOSTS - 1];
    let out = Command::new("getent")
        .args(["hosts", &last.hostname])
        .output()
        .unwrap();
    let line = ok_stdout(&out);
    assert!(
        line.starts_with(&format!("{} ", last.address)),
        "{line:?} should resolve to {}",
        last.address
    );
    let mut addrs: Vec<_> = lab.hosts().iter().map(|h| h.address).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), HOSTS);
    assert!(lab.hosts().iter().all(|h| h.address.is_loopback()));

    // Two hosts, by name: each sees its own role, override and host name.
    for i in [1usize, 2] {
        let h = &lab.hosts()[i - 1];
        let out = ssh(
            &lab,
            &h.hostname,
            "cat /etc/puppet_role; cat /etc/puppet/ronin_settings; hostname",
        );
        assert_eq!(
            ok_stdout(&out),
            format!("{}\n{}{}\n", role(i), override_of(i), h.hostname)
        );
    }

    // sudo per scenario: allowed on lab-0001, refused on lab-0002.
    let h1 = lab.hosts()[0].hostname.clone();
    let h2 = lab.hosts()[1].hostname.clone();
    assert!(ssh(&lab, &h1, "sudo -n true").status.success());
    let refused = ssh(&lab, &h2, "sudo -n true");
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("password is required"));
    // Root sees the host's own files too (the mounts are per session, not per user).
    let out = ssh(
        &lab,
        &h1,
        "sudo -n cat /etc/puppet/ronin_settings /etc/puppet/last_run_metadata.json; sudo -n sha256sum /root/vault.yaml",
    );
    let text = ok_stdout(&out);
    let (settings, rest) = text.split_at(override_of(1).len());
    assert_eq!(settings, override_of(1));
    let json_end = rest.rfind('}').unwrap() + 1;
    let meta: serde_json::Value = serde_json::from_str(&rest[..json_end]).unwrap();
    assert_eq!(meta["role"], role(1));
    assert_eq!(
        meta["git_sha"],
        git_sha(fleetroll_lab::DEFAULT_PUPPET_REPO, "branch-0001")
    );
    assert_eq!(meta["git_branch"], "branch-0001");
    assert_eq!(meta["override_sha"], sha256_hex(override_of(1).as_bytes()));
    let vault_sha = rest[json_end..].split_whitespace().next().unwrap();
    assert_eq!(meta["vault_sha"], vault_sha);
    // A session on one host cannot see another's files (and the machine's
    // own mount points stay empty).
    assert_eq!(std::fs::read("/etc/puppet_role").unwrap_or_default(), b"");

    // Many hosts at once, spread over the range: never a mix-up.
    let picks: Vec<usize> = (1..=HOSTS).step_by(13).chain([HOSTS]).collect();
    std::thread::scope(|s| {
        for chunk in picks.chunks(4) {
            let lab = &lab;
            s.spawn(move || {
                for &i in chunk {
                    if i == 150 {
                        continue;
                    }
                    let h = &lab.hosts()[i - 1];
                    let out = ssh(
                        lab,
                        &h.hostname,
                        "cat /etc/puppet_role /etc/puppet/ronin_settings",
                    );
                    assert_eq!(ok_stdout(&out), format!("{}\n{}", role(i), override_of(i)));
                }
            });
        }
    });

    // The macOS-like host: its layout, uname and sw_vers.
    let mac = &lab.hosts()[149];
    let out = ssh(
        &lab,
        &mac.hostname,
        "uname -s; sw_vers -productName; cat /opt/puppet_environments/ronin_settings; test -e /etc/puppet/ronin_settings || echo no-linux-override; sudo -n test -f /var/root/vault.yaml && echo vault-in-var-root; sudo -n test -e /root/vault.yaml || echo no-root-vault",
    );
    assert_eq!(
        ok_stdout(&out),
        format!(
            "Darwin\nmacOS\n{}no-linux-override\nvault-in-var-root\nno-root-vault\n",
            override_of(150)
        )
    );
    let meta = lab
        .host_file(
            &mac.hostname,
            "/opt/puppet_environments/last_run_metadata.json",
        )
        .unwrap()
        .expect("macOS metadata in /opt/puppet_environments");
    let meta: serde_json::Value = serde_json::from_slice(&meta).unwrap();
    assert_eq!(
        meta["override_path"],
        "/opt/puppet_environments/ronin_settings"
    );

    let id = lab.info().id.clone();
    lab.down().unwrap();
    assert_clean(&id, dir.path());
}
