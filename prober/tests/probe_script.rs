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

#[test]
fn the_probe_runs_here_and_its_answer_parses() {
    let out = Command::new("/bin/sh")
        .arg("-s")
        .stdin(
            std::fs::File::open(concat!(env!("CARGO_MANIFEST_DIR"), "/src/probe/probe.sh"))
                .unwrap(),
        )
        .output()
        .unwrap();
    assert!(out.status.success());
    let report = fleetroll_prober::probe::parse(&out.stdout).unwrap();
    assert_eq!(report.os, "Linux");
}
