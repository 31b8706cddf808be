//! Helpers shared by the lab's integration tests (they run as root).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use fleetroll_lab::{Lab, LabConfig, Scenario};

/// A fresh lab directory under /tmp (reachable by the lab's SSH user).
pub fn lab_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("fleetroll-lab-test-")
        .tempdir_in("/tmp")
        .expect("create a lab dir")
}

/// Starts a lab from scenario text (TOML).
pub fn start(hosts: usize, dir: &Path, scenario: &str) -> Lab {
    let scenario = Scenario::parse(scenario, false).expect("scenario parses");
    Lab::start(LabConfig::new(hosts, dir).scenario(scenario)).expect("lab starts")
}

/// The system ssh client, as a test would run it against `host`.
pub fn ssh_command(lab: &Lab, host: &str, remote: &str, extra: &[&str]) -> Command {
    let mut c = Command::new("ssh");
    c.arg("-F")
        .arg("/dev/null")
        .arg("-i")
        .arg(lab.identity_file())
        .arg("-p")
        .arg(lab.ssh_port().to_string())
        // ssh keeps the first value it sees for an option: extras first.
        .args(extra)
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
        ])
        .arg(format!("{}@{}", lab.ssh_user(), host))
        .arg(remote);
    c.stdin(Stdio::null());
    c
}

/// Runs `remote` on `host` and returns its output.
pub fn ssh(lab: &Lab, host: &str, remote: &str) -> Output {
    ssh_command(lab, host, remote, &["-o", "ConnectTimeout=10"])
        .output()
        .expect("run ssh")
}

/// Runs `remote` on `host` with `input` on stdin.
pub fn ssh_with_input(lab: &Lab, host: &str, remote: &str, input: &[u8]) -> Output {
    let mut child = ssh_command(lab, host, remote, &["-o", "ConnectTimeout=10"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ssh");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    child.wait_with_output().expect("wait for ssh")
}

/// stdout of a successful command, or a panic showing what went wrong.
pub fn ok_stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "command failed ({}): stdout {:?} stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("utf-8 output")
}

/// Writes the override file on a host the way fleetroll does: temp file and
/// rename in the same directory, through sudo.
pub fn write_override(lab: &Lab, host: &str, content: &str) -> Output {
    let path = lab.host(host).unwrap().override_path();
    let remote = format!(
        "sudo -n sh -c 'd=$(dirname \"$1\"); t=$(mktemp \"$d/.ronin_settings.XXXXXX\") && cat >\"$t\" && chmod 0644 \"$t\" && mv -f \"$t\" \"$1\"' sh {path}"
    );
    ssh_with_input(lab, host, &remote, content.as_bytes())
}

/// GET a JSON document over plain HTTP/1.0; returns (status, body).
pub fn http_get(url: &str) -> (u16, serde_json::Value) {
    let rest = url.strip_prefix("http://").expect("http url");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut stream = std::net::TcpStream::connect(authority).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nAccept: application/json\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read response");
    let text = String::from_utf8(response).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("http response");
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    (status, serde_json::from_str(body).expect("JSON body"))
}

/// Polls `f` until it returns Some or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts that lab `id` left nothing on the machine.
pub fn assert_clean(id: &str, dir: &Path) {
    // Killed processes take a moment to be reaped.
    let left = wait_for(Duration::from_secs(5), || {
        let l = fleetroll_lab::leftovers(id, dir).expect("look for leftovers");
        l.is_clean().then_some(())
    });
    if left.is_none() {
        panic!(
            "lab {id} left things behind: {:#?}",
            fleetroll_lab::leftovers(id, dir).unwrap()
        );
    }
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap();
    assert!(
        !hosts.contains(&format!("fleetroll-lab {id}")),
        "hosts block of {id} still in /etc/hosts"
    );
}

/// An HTTP/1.0 exchange: (status, content type, body).
pub fn http_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    let rest = url.strip_prefix("http://").expect("http url");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut stream = std::net::TcpStream::connect(authority).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.0\r\nHost: {authority}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read response");
    let text = String::from_utf8(response).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("http response");
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    (status, content_type, body.to_string())
}

/// Runs `remote` on `host` with the system ssh client and strict host key
/// checking against `known_hosts` (nothing else trusted).
pub fn ssh_strict(
    lab: &Lab,
    host: &str,
    remote: &str,
    known_hosts: &Path,
    extra: &[&str],
) -> Output {
    Command::new("ssh")
        .arg("-F")
        .arg("/dev/null")
        .arg("-i")
        .arg(lab.identity_file())
        .arg("-p")
        .arg(lab.ssh_port().to_string())
        // ssh keeps the first value it sees for an option: extras first.
        .args(extra)
        .args(STRICT_BATCH)
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .arg(format!("{}@{}", lab.ssh_user(), host))
        .arg(remote)
        .stdin(Stdio::null())
        .output()
        .expect("run ssh")
}

/// Options every ssh the tests run takes: strict host key checking, no
/// prompts, bounded waits, quiet.
const STRICT_BATCH: [&str; 8] = [
    "-o",
    "StrictHostKeyChecking=yes",
    "-o",
    "BatchMode=yes",
    "-o",
    "ConnectTimeout=10",
    "-o",
    "LogLevel=ERROR",
];

/// The system ssh client with the lab's own client config (`ssh -F
/// <lab>/ssh_config`: through the bastion when there is one) and strict
/// host key checking against the lab's known_hosts.
pub fn ssh_config_command(lab: &Lab, host: &str, remote: &str, extra: &[&str]) -> Command {
    let mut c = Command::new("ssh");
    c.arg("-F")
        .arg(lab.ssh_config_file())
        .args(extra)
        .args(STRICT_BATCH)
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            lab.known_hosts_file().display()
        ))
        .arg(host)
        .arg(remote)
        .stdin(Stdio::null());
    c
}

/// Runs `remote` on `host` with the lab's client config.
pub fn ssh_config(lab: &Lab, host: &str, remote: &str, extra: &[&str]) -> Output {
    ssh_config_command(lab, host, remote, extra)
        .output()
        .expect("run ssh")
}

/// Whether the process is gone but for its zombie (or entirely).
pub fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}

/// The `fleetroll-lab` binary of this build.
pub fn cli() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_fleetroll-lab"))
}

/// `fleetroll-lab down --dir DIR` succeeds and leaves nothing of lab `id`,
/// and `client`, a session into the lab, ends with it.
pub fn down_ends(id: &str, dir: &Path, client: &mut std::process::Child, what: &str) {
    let down = cli().arg("down").arg("--dir").arg(dir).output().unwrap();
    assert!(down.status.success(), "{down:?}");
    assert_clean(id, dir);
    let ended = wait_for(Duration::from_secs(10), || client.try_wait().unwrap());
    assert!(ended.is_some(), "{what} outlived `down`");
}
