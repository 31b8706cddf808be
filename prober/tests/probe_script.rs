//! The probe script is clean shell, outside and inside its sudo'd body
//! (shellcheck cannot see into the quoted body on its own).

use std::process::Command;

fn shellcheck(name: &str, text: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    let out = Command::new("shellcheck")
        .args(["-s", "sh"])
        .arg(&path)
        .output()
        .expect("shellcheck (Debian package shellcheck, installed by `make setup`)");
    assert!(
        out.status.success(),
        "{name}:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn the_probe_script_is_shellcheck_clean() {
    let script = fleetroll_prober::probe::SCRIPT;
    shellcheck("probe.sh", script);
    let start = script.find("<<'PROBE'\n").expect("the body's heredoc") + "<<'PROBE'\n".len();
    let end = script.find("\nPROBE\n").expect("the end of the body");
    shellcheck("probe-body.sh", &script[start..end]);
}

fn run_here(script: &str) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("/bin/sh")
        .arg("-s")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout
}

#[test]
fn the_probe_runs_here_and_its_answer_parses() {
    let report =
        fleetroll_prober::probe::parse(&run_here(fleetroll_prober::probe::SCRIPT)).unwrap();
    assert_eq!(report.os, "Linux");
    // The fast refresh's answer identifies the same state as the full probe's.
    let fast = run_here(fleetroll_prober::probe::FAST_SCRIPT);
    assert!(String::from_utf8_lossy(&fast).contains("boot "));
    assert_eq!(
        fleetroll_prober::probe::state_token(&fast),
        fleetroll_prober::probe::state_token(&report.state)
    );
}
