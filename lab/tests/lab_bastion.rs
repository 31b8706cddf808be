//! A fleet behind a bastion: the hosts are reachable only through the jump
//! host (the system ssh with the lab's ssh_config and ProxyJump), never
//! directly; the bastion runs nothing itself; dropped bastion connections
//! need a reconnect; `down` leaves nothing, the fleet's network included.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use fleetroll_lab::{Lab, LabConfig, Scenario};

fn start_behind_bastion(hosts: usize, dir: &Path) -> Lab {
    let scenario = Scenario::parse("", false).expect("scenario parses");
    Lab::start(LabConfig::new(hosts, dir).scenario(scenario).bastion(true)).expect("lab starts")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn connect(addr: std::net::Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    TcpStream::connect_timeout(&SocketAddr::from((addr, port)), Duration::from_secs(5))
}

/// The network namespace of a process (`net:[inode]`).
fn net_ns(pid: &str) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()
}

#[test]
fn hosts_are_reachable_only_through_the_bastion() {
    let dir = lab_dir();
    let lab = start_behind_bastion(3, dir.path());
    let bastion = lab.bastion().expect("the lab has a bastion").clone();
    let domain = lab.hosts()[0].hostname.split_once('.').unwrap().1;
    assert_eq!(bastion.hostname, format!("bastion.{domain}"));
    assert_eq!(bastion.port, lab.ssh_port());
    assert_eq!(lab.info().bastion.as_ref(), Some(&bastion));
    let config = std::fs::read_to_string(lab.ssh_config_file()).unwrap();
    assert!(
        config.contains(&format!("ProxyJump {}", bastion.hostname)),
        "{config}"
    );
    let known = std::fs::read_to_string(lab.known_hosts_file()).unwrap();
    assert!(known.contains(&bastion.public_key), "{known}");

    // Through the bastion, by name and by address, with strict checking.
    for h in lab.hosts() {
        let out = ssh_config(&lab, &h.hostname, "hostname", &[]);
        assert_eq!(ok_stdout(&out), format!("{}\n", h.hostname));
    }
    let h2 = &lab.hosts()[1];
    let out = ssh_config(&lab, &h2.address.to_string(), "hostname", &[]);
    assert_eq!(ok_stdout(&out), format!("{}\n", h2.hostname));

    // Directly: nothing listens on the hosts' addresses.
    for h in lab.hosts() {
        let err = connect(h.address, lab.ssh_port()).expect_err("a host answered directly");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    }
    let out = ssh_config(&lab, &h2.hostname, "hostname", &["-o", "ProxyJump=none"]);
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(stderr(&out).contains("Connection refused"), "{out:?}");
    assert!(connect(bastion.address, bastion.port).is_ok());

    // The bastion itself runs no shell and no command, and forwards only
    // to the lab's hosts' SSH port.
    let out = ssh_config(&lab, &bastion.hostname, "hostname", &[]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("bastion"),
        "{out:?}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("not available"),
        "{out:?}"
    );
    let out = ssh_config(
        &lab,
        &bastion.hostname,
        "",
        &["-o", "LogLevel=INFO", "-W", &format!("{}:22", h2.hostname)],
    );
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(
        stderr(&out).contains("administratively prohibited"),
        "{out:?}"
    );

    // Knobs work behind the bastion: an unreachable host refuses the
    // bastion's connection, and listens again (in the fleet's network)
    // when it comes back.
    lab.host(&h2.hostname)
        .unwrap()
        .set_unreachable(true)
        .unwrap();
    let out = ssh_config(&lab, &h2.hostname, "true", &["-o", "LogLevel=INFO"]);
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(stderr(&out).contains("Connection refused"), "{out:?}");
    lab.host(&h2.hostname)
        .unwrap()
        .set_unreachable(false)
        .unwrap();
    let out = ssh_config(&lab, &h2.hostname, "hostname", &[]);
    assert_eq!(ok_stdout(&out), format!("{}\n", h2.hostname));
    let err = connect(h2.address, lab.ssh_port()).expect_err("a host answered directly");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
}

#[test]
fn dropped_bastion_connections_need_a_reconnect() {
    let dir = lab_dir();
    let lab = start_behind_bastion(2, dir.path());
    let h1 = lab.hosts()[0].hostname.clone();
    let h2 = lab.hosts()[1].hostname.clone();
    assert_eq!(lab.bastion_connections(), 0);

    let mut long = ssh_config_command(&lab, &h1, "sleep 600", &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let up = wait_for(Duration::from_secs(10), || {
        (lab.bastion_connections() == 1 && lab.host(&h1).unwrap().status().connections == 1)
            .then_some(())
    });
    assert!(
        up.is_some(),
        "the session did not start through the bastion"
    );

    lab.drop_bastion_connections().unwrap();
    assert_eq!(lab.bastion_connections(), 0);
    let ended = wait_for(Duration::from_secs(10), || long.try_wait().unwrap());
    let status = ended.expect("the client noticed its bastion went away");
    assert!(!status.success(), "{status}");
    // The host's end of the forwarded connection goes too.
    let gone = wait_for(Duration::from_secs(10), || {
        (lab.host(&h1).unwrap().status().connections == 0).then_some(())
    });
    assert!(gone.is_some());

    // A new connection works at once.
    assert_eq!(
        ok_stdout(&ssh_config(&lab, &h2, "hostname", &[])),
        format!("{h2}\n")
    );
    let closed = wait_for(Duration::from_secs(10), || {
        (lab.bastion_connections() == 0).then_some(())
    });
    assert!(
        closed.is_some(),
        "a finished client's bastion connection stays"
    );

    // An unreachable bastion refuses connections, and comes back.
    lab.set_bastion_unreachable(true).unwrap();
    let out = ssh_config(&lab, &h2, "true", &["-o", "LogLevel=INFO"]);
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(stderr(&out).contains("Connection refused"), "{out:?}");
    lab.set_bastion_unreachable(false).unwrap();
    assert_eq!(
        ok_stdout(&ssh_config(&lab, &h2, "hostname", &[])),
        format!("{h2}\n")
    );
}

#[test]
fn many_hosts_can_share_one_bastion_connection() {
    let dir = lab_dir();
    let lab = start_behind_bastion(3, dir.path());
    let bastion = lab.bastion().unwrap().hostname.clone();
    // One master connection to the bastion; every host through it.
    let socket = dir.path().join("bastion.ctl");
    let socket_arg = socket.display().to_string();
    let mut master = ssh_config_command(&lab, &bastion, "", &["-M", "-N", "-S", &socket_arg])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ready = wait_for(Duration::from_secs(10), || {
        (socket.exists() && lab.bastion_connections() == 1).then_some(())
    });
    assert!(ready.is_some(), "the master connection did not come up");
    let proxy = format!("ProxyCommand=ssh -S {socket_arg} -W %h:%p {bastion}");
    for h in lab.hosts() {
        let out = ssh_config(&lab, &h.hostname, "hostname", &["-o", &proxy]);
        assert_eq!(ok_stdout(&out), format!("{}\n", h.hostname));
    }
    assert_eq!(lab.bastion_connections(), 1);
    master.kill().unwrap();
    let _ = master.wait();
}

#[test]
fn cli_up_with_a_bastion_and_down() {
    let dir = lab_dir();
    let out = cli()
        .args(["up", "--bastion", "--hosts", "2", "--port", "0", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let info: fleetroll_lab::LabInfo =
        serde_json::from_slice(&out.stdout).expect("up prints the lab as JSON");
    let bastion = info.bastion.clone().expect("the lab has a bastion");
    assert_eq!(info.ssh_config_file, info.dir.join("ssh_config"));

    let printed = cli()
        .arg("ssh-config")
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let printed = ok_stdout(&printed);
    assert_eq!(
        printed,
        std::fs::read_to_string(&info.ssh_config_file).unwrap()
    );
    assert!(printed.contains(&format!("ProxyJump {}", bastion.hostname)));

    let host = &info.hosts[1];
    let ssh = |remote: &str| {
        let mut c = Command::new("ssh");
        c.arg("-F")
            .arg(&info.ssh_config_file)
            .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                info.known_hosts_file.display()
            ))
            .arg(&host.hostname)
            .arg(remote)
            .stdin(Stdio::null());
        c
    };
    assert_eq!(
        ok_stdout(&ssh("hostname").output().unwrap()),
        format!("{}\n", host.hostname)
    );
    let err = connect(host.address, info.ssh_port).expect_err("a host answered directly");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);

    // A live session through the bastion, to see the fleet's network.
    let mut client = ssh("sleep 600")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let fleet_ns = wait_for(Duration::from_secs(10), || {
        fleetroll_lab::lab_processes(&info.id, Some("bastion"))
            .iter()
            .find_map(|p| net_ns(&p.pid.to_string()))
    })
    .expect("the bastion's sshd runs");
    assert_ne!(Some(&fleet_ns), net_ns("self").as_ref());

    down_ends(&info.id, dir.path(), &mut client, "the client");
    // Nothing is left in the fleet's network: it is gone.
    let in_fleet: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| net_ns(pid).as_ref() == Some(&fleet_ns))
        .collect();
    assert!(
        in_fleet.is_empty(),
        "processes in the fleet's network: {in_fleet:?}"
    );
    // Its own block is gone (other tests' labs, bastions included, may be
    // up at the same time, under the same names).
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap();
    assert!(
        !hosts.contains(&format!("# BEGIN fleetroll-lab {} ", info.id)),
        "{hosts}"
    );
}

#[test]
fn down_ends_bastion_connections_of_a_killed_daemon() {
    let dir = lab_dir();
    let out = cli()
        .args(["up", "--bastion", "--hosts", "1", "--port", "0", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let info: fleetroll_lab::LabInfo = serde_json::from_slice(&out.stdout).unwrap();
    let bastion = info.bastion.clone().unwrap();
    // An idle connection to the bastion (no channel, so nothing on a host
    // ends it) that outlives the daemon.
    let socket = dir.path().join("bastion.ctl");
    let mut master = Command::new("ssh")
        .arg("-F")
        .arg(&info.ssh_config_file)
        .args(["-o", "BatchMode=yes", "-M", "-N", "-S"])
        .arg(&socket)
        .arg(&bastion.hostname)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let connected = wait_for(Duration::from_secs(10), || socket.exists().then_some(()));
    assert!(connected.is_some(), "the master connection did not come up");
    // SAFETY: killing the daemon this test started.
    unsafe {
        libc::kill(info.pid as i32, libc::SIGKILL);
    }
    let gone = wait_for(Duration::from_secs(5), || is_zombie(info.pid).then_some(()));
    assert!(gone.is_some());
    let left = fleetroll_lab::leftovers(&info.id, dir.path()).unwrap();
    assert!(
        left.processes
            .iter()
            .any(|p| p.cmdline.starts_with("sshd:")),
        "the bastion's sshd is not seen as the lab's: {left:#?}"
    );

    down_ends(&info.id, dir.path(), &mut master, "the bastion connection");
}

/// Runs as a child process of `a_bastion_lab_works_inside_a_network_namespace`.
#[test]
#[ignore = "run by a_bastion_lab_works_inside_a_network_namespace"]
fn child_bastion_lab_in_a_network_namespace() {
    let Some(dir) = std::env::var_os("FLEETROLL_LAB_CHILD_DIR") else {
        return;
    };
    assert_ne!(net_ns("self"), net_ns("1"), "not in a network namespace");
    let lab = start_behind_bastion(2, Path::new(&dir));
    let h = lab.hosts()[1].clone();
    assert_eq!(
        ok_stdout(&ssh_config(&lab, &h.hostname, "hostname", &[])),
        format!("{}\n", h.hostname)
    );
    let err = connect(h.address, lab.ssh_port()).expect_err("a host answered directly");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    let id = lab.info().id.clone();
    lab.down().unwrap();
    assert_clean(&id, Path::new(&dir));
}

#[test]
fn a_bastion_lab_works_inside_a_network_namespace() {
    let dir = lab_dir();
    // As a test runner might: a network namespace of the test's own, with
    // its loopback up.
    let out = Command::new("unshare")
        .args([
            "--net",
            "--",
            "sh",
            "-c",
            "ip link set lo up && exec \"$@\"",
            "sh",
        ])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_bastion_lab_in_a_network_namespace",
            "--ignored",
            "--nocapture",
        ])
        .env("FLEETROLL_LAB_CHILD_DIR", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
