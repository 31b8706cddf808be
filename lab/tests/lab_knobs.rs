//! Misbehaving hosts: unreachable, black-holed, slow, hanging, rebooting,
//! sudo-less, with broken metadata; and override writes being counted.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::*;
use fleetroll_lab::{MetadataMode, OverrideEventKind};

fn refused(out: &std::process::Output) -> bool {
    out.status.code() == Some(255)
        && String::from_utf8_lossy(&out.stderr).contains("Connection refused")
}

#[test]
fn unreachable_hosts_refuse_connections_until_they_come_back() {
    let dir = lab_dir();
    let lab = start(
        4,
        dir.path(),
        "[[hosts]]\nnames = [\"lab-0004\"]\nunreachable = true\n",
    );
    let [h1, _, _, h4] = [0, 1, 2, 3].map(|i| lab.hosts()[i].hostname.clone());

    // From the scenario.
    assert!(refused(&ssh(&lab, &h4, "true")));
    assert!(!lab.host(&h4).unwrap().status().reachable);

    // Switched at run time, both ways.
    lab.host(&h1).unwrap().set_unreachable(true).unwrap();
    let t = Instant::now();
    let out = ssh(&lab, &h1, "true");
    assert!(refused(&out), "{out:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "refusal is immediate");
    lab.host(&h1).unwrap().set_unreachable(false).unwrap();
    lab.host(&h4).unwrap().set_unreachable(false).unwrap();
    assert_eq!(ok_stdout(&ssh(&lab, &h1, "hostname")), format!("{h1}\n"));
    assert_eq!(ok_stdout(&ssh(&lab, &h4, "hostname")), format!("{h4}\n"));
}

#[test]
fn black_holed_hosts_time_out_in_the_handshake() {
    let dir = lab_dir();
    let lab = start(2, dir.path(), "");
    let h = lab.hosts()[1].hostname.clone();
    lab.host(&h).unwrap().set_blackhole(true).unwrap();
    let t = Instant::now();
    let out = ssh_command(&lab, &h, "true", &["-o", "ConnectTimeout=2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(t.elapsed() >= Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("refused"));
    lab.host(&h).unwrap().set_blackhole(false).unwrap();
    assert!(ssh(&lab, &h, "true").status.success());
}

#[test]
fn slow_hosts_delay_every_command() {
    let dir = lab_dir();
    let lab = start(
        2,
        dir.path(),
        "[[hosts]]\nnames = [\"lab-0002\"]\nslow = \"1500ms\"\n",
    );
    let h = lab.hosts()[1].hostname.clone();
    for _ in 0..2 {
        let t = Instant::now();
        assert_eq!(ok_stdout(&ssh(&lab, &h, "echo done")), "done\n");
        assert!(
            t.elapsed() >= Duration::from_millis(1500),
            "{:?}",
            t.elapsed()
        );
    }
    lab.host(&h).unwrap().set_slow(Duration::ZERO).unwrap();
    lab.host(&lab.hosts()[0].hostname)
        .unwrap()
        .set_slow(Duration::from_millis(1200))
        .unwrap();
    let t = Instant::now();
    assert!(ssh(&lab, &lab.hosts()[0].hostname, "true").status.success());
    assert!(t.elapsed() >= Duration::from_millis(1200));
}

#[test]
fn hanging_hosts_accept_commands_and_never_answer() {
    let dir = lab_dir();
    let lab = start(
        2,
        dir.path(),
        "[[hosts]]\nnames = [\"lab-0001\"]\nhang = true\n",
    );
    let h = lab.hosts()[0].hostname.clone();
    let mut child = ssh_command(&lab, &h, "echo answered", &["-o", "ConnectTimeout=5"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The command was accepted (the host's session runs it, forever) but
    // nothing comes back.
    let accepted = wait_for(Duration::from_secs(10), || {
        fleetroll_lab::lab_processes(&lab.info().id, Some("lab-0001"))
            .iter()
            .any(|p| p.cmdline.starts_with("sleep "))
            .then_some(())
    });
    assert!(accepted.is_some(), "the hanging host accepted the command");
    assert!(lab.host(&h).unwrap().status().connections > 0);
    std::thread::sleep(Duration::from_secs(3));
    assert!(child.try_wait().unwrap().is_none(), "the command answered");
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.stdout.is_empty());

    lab.host(&h).unwrap().set_hang(false).unwrap();
    assert_eq!(ok_stdout(&ssh(&lab, &h, "echo answered")), "answered\n");
    let id = lab.info().id.clone();
    drop(lab);
    // The hung command's processes went with the lab.
    assert_clean(&id, dir.path());
}

#[test]
fn reboot_takes_the_host_away_and_puppet_runs_at_boot() {
    let dir = lab_dir();
    let lab = start(2, dir.path(), "[defaults]\nreboot_duration = \"2s\"\n");
    let h = lab.hosts()[0].hostname.clone();
    let host = lab.host(&h).unwrap();
    let meta = |lab: &fleetroll_lab::Lab| -> serde_json::Value {
        serde_json::from_slice(
            &lab.host_file(&h, "/etc/puppet/last_run_metadata.json")
                .unwrap()
                .unwrap(),
        )
        .unwrap()
    };
    let before = meta(&lab);
    let runs_before = host.puppet_runs().len();
    let asked = SystemTime::now();

    let out = ssh(&lab, &h, "sudo -n reboot");
    assert!(
        out.status.success() || out.status.code() == Some(255),
        "reboot either returns or drops the connection: {out:?}"
    );
    // Away: refused while rebooting.
    let down = wait_for(Duration::from_secs(5), || {
        let out = ssh(&lab, &h, "true");
        refused(&out).then_some(())
    });
    assert!(down.is_some(), "the host never went away");
    assert!(host.status().rebooting);
    // The other host is unaffected.
    assert!(ssh(&lab, &lab.hosts()[1].hostname, "true").status.success());

    // Back, after Puppet ran at boot.
    let back = wait_for(Duration::from_secs(20), || {
        ssh(&lab, &h, "true").status.success().then_some(())
    });
    assert!(back.is_some(), "the host never came back");
    assert!(asked.elapsed().unwrap() >= Duration::from_secs(2));
    let after = meta(&lab);
    assert!(
        after["ts"].as_str().unwrap() > before["ts"].as_str().unwrap(),
        "fresh metadata: {before} then {after}"
    );
    assert_eq!(after["success"], true);
    let runs = host.puppet_runs();
    assert_eq!(runs.len(), runs_before + 1);
    assert!(runs.last().unwrap().at > asked);
    assert_eq!(host.status().reboots, 1);

    // Without sudo, reboot is refused like on a real host.
    let out = ssh(&lab, &h, "reboot");
    assert_eq!(out.status.code(), Some(1));
    assert!(!host.status().rebooting);
}

#[test]
fn sudo_can_be_taken_away_at_run_time() {
    let dir = lab_dir();
    let lab = start(1, dir.path(), "");
    let h = lab.hosts()[0].hostname.clone();
    assert!(ssh(&lab, &h, "sudo -n true").status.success());
    lab.host(&h).unwrap().set_sudo(false).unwrap();
    assert_eq!(ssh(&lab, &h, "sudo -n true").status.code(), Some(1));
    // Without sudo the vault stays unreadable.
    assert!(!ssh(&lab, &h, "cat /root/vault.yaml").status.success());
    lab.host(&h).unwrap().set_sudo(true).unwrap();
    assert!(ssh(&lab, &h, "sudo -n true").status.success());
}

#[test]
fn override_writes_are_counted() {
    let dir = lab_dir();
    let lab = start(
        3,
        dir.path(),
        "[[hosts]]\nnames = [\"lab-0003\"]\nos = \"macos\"\noverride = \"PUPPET_BRANCH=pre\\n\"\n",
    );
    let h1 = lab.hosts()[0].hostname.clone();
    let h3 = lab.hosts()[2].hostname.clone();
    assert_eq!(lab.host(&h1).unwrap().override_writes().unwrap(), 0);
    assert_eq!(lab.host(&h3).unwrap().override_writes().unwrap(), 0);
    assert_eq!(
        lab.host_file(&h3, "/opt/puppet_environments/ronin_settings")
            .unwrap()
            .unwrap(),
        b"PUPPET_BRANCH=pre\n"
    );

    for n in 1..=2 {
        let content = format!("PUPPET_BRANCH=feature-{n}\n");
        ok_stdout(&write_override(&lab, &h1, &content));
        assert_eq!(lab.host(&h1).unwrap().override_writes().unwrap(), n);
        assert_eq!(
            lab.host_file(&h1, "/etc/puppet/ronin_settings")
                .unwrap()
                .unwrap(),
            content.as_bytes()
        );
    }
    ok_stdout(&write_override(&lab, &h3, "PUPPET_BRANCH=mac\n"));
    assert_eq!(lab.host(&h3).unwrap().override_writes().unwrap(), 1);
    // Reading does not count; removing is an event of its own.
    ok_stdout(&ssh(
        &lab,
        &h1,
        "cat /etc/puppet/ronin_settings >/dev/null; sudo -n rm /etc/puppet/ronin_settings",
    ));
    let events = lab.host(&h1).unwrap().override_events().unwrap();
    let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            OverrideEventKind::Written,
            OverrideEventKind::Written,
            OverrideEventKind::Removed
        ]
    );
    assert!(
        lab.host(&h1)
            .unwrap()
            .file_mtime("/etc/puppet/ronin_settings")
            .unwrap()
            .is_none()
    );
    // Other hosts saw nothing.
    assert_eq!(
        lab.host(&lab.hosts()[1].hostname)
            .unwrap()
            .override_writes()
            .unwrap(),
        0
    );
}

#[test]
fn metadata_can_be_absent_malformed_or_not_utf8() {
    let dir = lab_dir();
    let lab = start(
        4,
        dir.path(),
        "[[hosts]]\nnames = [\"lab-0002\"]\nmetadata = \"absent\"\n[[hosts]]\nnames = [\"lab-0003\"]\nmetadata = \"malformed\"\n[[hosts]]\nnames = [\"lab-0004\"]\nmetadata = \"not_utf8\"\n",
    );
    let name = |i: usize| lab.hosts()[i].hostname.clone();
    let read = |i: usize| {
        lab.host_file(&name(i), "/etc/puppet/last_run_metadata.json")
            .unwrap()
    };
    let check = |lab: &fleetroll_lab::Lab| {
        assert!(serde_json::from_slice::<serde_json::Value>(&read(0).unwrap()).is_ok());
        assert!(read(1).is_none());
        let malformed = read(2).unwrap();
        assert!(std::str::from_utf8(&malformed).is_ok());
        assert!(serde_json::from_slice::<serde_json::Value>(&malformed).is_err());
        assert!(std::str::from_utf8(&read(3).unwrap()).is_err());
        // Puppet's own summary is there either way (the fallback source).
        for i in 0..4 {
            let summary = lab
                .host_file(
                    &name(i),
                    "/opt/puppetlabs/puppet/cache/state/last_run_summary.yaml",
                )
                .unwrap()
                .unwrap();
            assert!(String::from_utf8(summary).unwrap().contains("last_run: "));
        }
    };
    check(&lab);
    // A Puppet run keeps each host's wrapper behaviour.
    for i in 0..4 {
        let out = ssh(&lab, &name(i), "sudo -n run-puppet.sh");
        assert_eq!(out.status.code(), Some(0), "{out:?}");
    }
    check(&lab);
    // Switching the wrapper at run time.
    lab.host(&name(1))
        .unwrap()
        .set_metadata(MetadataMode::Present)
        .unwrap();
    assert_eq!(
        ssh(&lab, &name(1), "sudo -n run-puppet.sh").status.code(),
        Some(0)
    );
    assert!(serde_json::from_slice::<serde_json::Value>(&read(1).unwrap()).is_ok());
}

#[test]
fn broken_branches_fail_puppet_with_their_exit_code() {
    let dir = lab_dir();
    let lab = start(
        1,
        dir.path(),
        "[puppet]\nbroken_branches = { \"broken-branch\" = 4 }\n",
    );
    let h = lab.hosts()[0].hostname.clone();
    // Same settings as the initial run: no changes.
    assert_eq!(
        ssh(&lab, &h, "sudo -n run-puppet.sh").status.code(),
        Some(0)
    );
    ok_stdout(&write_override(&lab, &h, "PUPPET_BRANCH=broken-branch\n"));
    assert_eq!(
        ssh(&lab, &h, "sudo -n run-puppet.sh").status.code(),
        Some(4)
    );
    let meta: serde_json::Value = serde_json::from_slice(
        &lab.host_file(&h, "/etc/puppet/last_run_metadata.json")
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(meta["success"], false);
    assert_eq!(meta["exit_code"], 4);
    assert_eq!(meta["git_branch"], "broken-branch");
    // Repaired at run time.
    lab.set_branch_broken("broken-branch", None).unwrap();
    assert_eq!(
        ssh(&lab, &h, "sudo -n run-puppet.sh").status.code(),
        Some(2)
    );
    lab.set_branch_broken("feature \"quoted\"", Some(6))
        .unwrap();
    ok_stdout(&write_override(
        &lab,
        &h,
        "PUPPET_BRANCH='feature \"quoted\"'\n",
    ));
    assert_eq!(
        ssh(&lab, &h, "sudo -n run-puppet.sh").status.code(),
        Some(6)
    );
    // Without root, Puppet does not run.
    assert_eq!(ssh(&lab, &h, "run-puppet.sh").status.code(), Some(1));
}

#[test]
fn rotated_host_keys_are_presented_and_noticed() {
    let dir = lab_dir();
    let lab = start(2, dir.path(), "");
    let h = lab.hosts()[0].hostname.clone();
    let strict = |lab: &fleetroll_lab::Lab, host: &str| {
        ssh_command(
            lab,
            host,
            "true",
            &[
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                &format!("UserKnownHostsFile={}", lab.known_hosts_file().display()),
            ],
        )
        .output()
        .unwrap()
    };
    assert!(strict(&lab, &h).status.success());
    let before = lab.host(&h).unwrap().host_public_key().unwrap();
    lab.host(&h).unwrap().rotate_host_key().unwrap();
    let after = lab.host(&h).unwrap().host_public_key().unwrap();
    assert_ne!(before, after);
    let out = strict(&lab, &h);
    assert_eq!(out.status.code(), Some(255));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "{out:?}"
    );
    // The server really presents the new key.
    let scan = std::process::Command::new("ssh-keyscan")
        .args(["-t", "ed25519", "-p", &lab.ssh_port().to_string(), &h])
        .output()
        .unwrap();
    let scanned = String::from_utf8_lossy(&scan.stdout);
    assert!(scanned.contains(&after), "{scanned}");
    // Other hosts keep theirs.
    assert!(strict(&lab, &lab.hosts()[1].hostname).status.success());
}
