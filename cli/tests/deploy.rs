//! The systemd units in `deploy/` are ones systemd accepts
//! (`systemd-analyze verify`, where the machine has it), and each starts a
//! fleetroll command line fleetroll accepts.

mod common;

use std::path::Path;
use std::process::Command;

fn units() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let mut units: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "service"))
        .collect();
    units.sort();
    assert!(units.len() >= 4, "the units in {}", dir.display());
    units
}

/// The units, with the binaries where this machine has them, checked by
/// systemd itself: any complaint (an unknown key, a value it would ignore,
/// a missing binary) fails.
#[test]
fn systemd_accepts_every_unit() {
    let Ok(analyze) = which("systemd-analyze") else {
        eprintln!("systemd-analyze is not on this machine: the units are checked where it is (CI)");
        return;
    };
    let nats_server = fleetroll_bus::embedded::find_nats_server(None).expect("nats-server");
    let dir = tempfile::tempdir().unwrap();
    let mut names = Vec::new();
    for unit in units() {
        let text = std::fs::read_to_string(&unit)
            .unwrap()
            .replace("/usr/local/bin/fleetroll", common::bin())
            .replace("/usr/local/bin/nats-server", nats_server.to_str().unwrap());
        let name = unit.file_name().unwrap().to_str().unwrap().to_string();
        std::fs::write(dir.path().join(&name), text).unwrap();
        // A template is checked as one of its instances.
        names.push(dir.path().join(name.replace("@.", "@prober.")));
    }
    let out = Command::new(analyze)
        .arg("verify")
        .args(&names)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}

/// Each unit's fleetroll command line parses (clap refuses an unknown flag
/// before it prints the help).
#[test]
fn every_unit_runs_a_fleetroll_command_line_that_parses() {
    for unit in units() {
        let text = std::fs::read_to_string(&unit).unwrap();
        let Some(exec) = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart=/usr/local/bin/fleetroll "))
        else {
            continue;
        };
        let args: Vec<String> = exec
            .split_whitespace()
            .map(|a| {
                a.replace("%i", "prober")
                    .replace("${CREDENTIALS_DIRECTORY}", "/run/credentials")
            })
            .chain(["--help".to_string()])
            .collect();
        let out = Command::new(common::bin()).args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "{}: fleetroll {}: {}",
            unit.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}
