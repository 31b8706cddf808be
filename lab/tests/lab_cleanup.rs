//! Stopping a lab leaves nothing behind: no sshd or session process, no
//! mount in any namespace, no /etc/hosts entry; also when the test using it
//! panicked, and when its daemon was killed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use fleetroll_lab::Lab;

/// Starts a lab with a hanging host and leaves a hung session and an open
/// interactive-ish session on it, so cleanup has real work to do.
fn busy_lab(dir: &Path) -> (Lab, Vec<Child>) {
    let lab = start(3, dir, "[[hosts]]\nnames = [\"lab-0002\"]\nhang = true\n");
    let hung = ssh_command(&lab, &lab.hosts()[1].hostname, "echo never", &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sleeper = ssh_command(&lab, &lab.hosts()[0].hostname, "sudo -n sleep 600", &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let id = lab.info().id.clone();
    let busy = wait_for(Duration::from_secs(15), || {
        let procs = fleetroll_lab::lab_processes(&id, None);
        let hung = procs
            .iter()
            .any(|p| p.cmdline.starts_with("sleep 2147483647"));
        let root_sleep = procs.iter().any(|p| p.cmdline == "sleep 600");
        (hung && root_sleep).then_some(())
    });
    assert!(
        busy.is_some(),
        "sessions did not start: {:#?}",
        fleetroll_lab::lab_processes(&id, None)
    );
    // While running, the lab's mounts exist only in its sessions' namespaces.
    let mine = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mine.contains(&dir.display().to_string()));
    assert!(!fleetroll_lab::mounts_mentioning(&dir.display().to_string()).is_empty());
    (lab, vec![hung, sleeper])
}

fn reap(clients: Vec<Child>) {
    for mut c in clients {
        // The server side is gone, so the clients end on their own.
        let ended = wait_for(Duration::from_secs(10), || c.try_wait().unwrap());
        assert!(
            ended.is_some(),
            "an ssh client still runs after the lab stopped"
        );
    }
}

#[test]
fn down_leaves_nothing_behind() {
    let dir = lab_dir();
    let (lab, clients) = busy_lab(dir.path());
    let id = lab.info().id.clone();
    lab.down().unwrap();
    assert_clean(&id, dir.path());
    reap(clients);
    assert!(!dir.path().join("lab.json").exists());
}

#[test]
fn a_panicking_test_leaves_nothing_behind() {
    let dir = lab_dir();
    let result = std::panic::catch_unwind(|| {
        let (lab, clients) = busy_lab(dir.path());
        std::fs::write(dir.path().join("id"), &lab.info().id).unwrap();
        // Clients are leaked on purpose: the panic leaves them to the lab's
        // cleanup.
        std::mem::forget(clients);
        panic!("test failure while the lab runs");
    });
    assert!(result.is_err());
    let id = std::fs::read_to_string(dir.path().join("id")).unwrap();
    assert_clean(&id, dir.path());
}

/// Runs as a child process of `a_test_process_that_panics_leaves_nothing_behind`.
#[test]
#[ignore = "run by a_test_process_that_panics_leaves_nothing_behind"]
fn child_panics_with_a_running_lab() {
    let Some(dir) = std::env::var_os("FLEETROLL_LAB_CHILD_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let (lab, clients) = busy_lab(&dir);
    std::fs::write(dir.join("id"), &lab.info().id).unwrap();
    std::mem::forget(clients);
    panic!("the child test fails with its lab running");
}

#[test]
fn a_test_process_that_panics_leaves_nothing_behind() {
    let dir = lab_dir();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_panics_with_a_running_lab",
            "--ignored",
            "--nocapture",
        ])
        .env("FLEETROLL_LAB_CHILD_DIR", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the child test should fail: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the child test fails with its lab running"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = std::fs::read_to_string(dir.path().join("id")).unwrap();
    assert_clean(&id, dir.path());
}

fn up(dir: &Path) -> fleetroll_lab::LabInfo {
    let out = cli()
        .args(["up", "--hosts", "3", "--port", "0", "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).expect("up prints the lab as JSON")
}

fn ssh_info(info: &fleetroll_lab::LabInfo, host: &str, cmd: &str) -> std::process::Output {
    Command::new("ssh")
        .args(["-F", "/dev/null", "-i"])
        .arg(&info.identity_file)
        .args(["-p", &info.ssh_port.to_string()])
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
        ])
        .arg(format!(
            "UserKnownHostsFile={}",
            info.known_hosts_file.display()
        ))
        .arg(format!("{}@{host}", info.ssh_user))
        .arg(cmd)
        .output()
        .unwrap()
}

#[test]
fn cli_up_and_down() {
    let dir = lab_dir();
    let info = up(dir.path());
    assert_eq!(info.hosts.len(), 3);
    assert_eq!(info.dir, dir.path().canonicalize().unwrap());
    // The daemon serves it; the known_hosts file it wrote is right.
    let out = ssh_info(&info, &info.hosts[2].hostname, "hostname");
    assert_eq!(ok_stdout(&out), format!("{}\n", info.hosts[2].hostname));
    let status = cli()
        .arg("status")
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(status.status.success());

    // A second `up` in the same directory is refused.
    let again = cli()
        .args(["up", "--hosts", "1", "--port", "0", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already running"));

    let down = cli()
        .arg("down")
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(down.status.success(), "{down:?}");
    assert!(!Path::new(&format!("/proc/{}", info.pid)).exists() || is_zombie(info.pid));
    assert_clean(&info.id, dir.path());
    // Idempotent.
    let down = cli()
        .arg("down")
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(down.status.success());
    assert!(String::from_utf8_lossy(&down.stdout).contains("no lab"));
}

#[test]
fn down_cleans_up_after_a_killed_daemon() {
    let dir = lab_dir();
    let info = up(dir.path());
    // A session that outlives its daemon.
    let mut client = Command::new("ssh")
        .args(["-F", "/dev/null", "-i"])
        .arg(&info.identity_file)
        .args(["-p", &info.ssh_port.to_string()])
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .arg(format!("{}@{}", info.ssh_user, info.hosts[0].hostname))
        .arg("sleep 600")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = wait_for(Duration::from_secs(10), || {
        fleetroll_lab::lab_processes(&info.id, None)
            .iter()
            .any(|p| p.cmdline == "sleep 600")
            .then_some(())
    });
    assert!(started.is_some());
    // SAFETY: killing the daemon this test started.
    unsafe {
        libc::kill(info.pid as i32, libc::SIGKILL);
    }
    let gone = wait_for(Duration::from_secs(5), || is_zombie(info.pid).then_some(()));
    assert!(gone.is_some());
    // The session outlives its daemon (unless a lab starting meanwhile in
    // this test binary already collected the dead lab's remains).

    down_ends(&info.id, dir.path(), &mut client, "the session");
}
