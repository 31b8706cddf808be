//! The roll call on the lab: real SSH to real (virtual) hosts.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Up, lab_env};
use fleetroll_lab::{Lab, LabConfig, Scenario};
use serde_json::Value;
use sha2::Digest;

const TRICKY_OVERRIDE: &str = "PUPPET_BRANCH=\"$(reboot)\"; `id` 'quoted' \\ | & > /tmp/x\n";

fn scenario() -> Scenario {
    let text = format!(
        r#"
[[hosts]]
names = ["lab-0002"]
override = "PUPPET_BRANCH=feature_x\n"
[[hosts]]
names = ["lab-0003"]
unreachable = true
[[hosts]]
names = ["lab-0004"]
sudo = false
[[hosts]]
names = ["lab-0005"]
os = "macos"
[[hosts]]
names = ["lab-0006"]
metadata = "absent"
[[hosts]]
names = ["lab-0007"]
metadata = "malformed"
[[hosts]]
names = ["lab-0008"]
metadata = "not_utf8"
[[hosts]]
names = ["lab-0009"]
hang = true
[[hosts]]
names = ["lab-0010"]
override = {tricky}
[[hosts]]
names = ["lab-0011"]
role = "gecko-t-osx-1400"
"#,
        tricky = toml_string(TRICKY_OVERRIDE)
    );
    Scenario::parse(&text, false).unwrap()
}

fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn by_host(json: &Value) -> HashMap<String, Value> {
    json.as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let short = h["hostname"]
                .as_str()
                .unwrap()
                .split('.')
                .next()
                .unwrap()
                .to_string();
            (short, h.clone())
        })
        .collect()
}

#[test]
fn probing_the_lab_records_each_host_as_it_is() {
    let lab_dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(LabConfig::new(12, lab_dir.path()).scenario(scenario())).unwrap();
    let up = Up::start_with(
        "[ssh]\nexec_timeout = \"4s\"\nconnect_timeout = \"4s\"\n",
        lab_env(&lab),
    );
    let cli = &up.cli;
    let names: Vec<String> = lab.hosts().iter().map(|h| h.hostname.clone()).collect();
    let mut add = vec!["inventory", "seed", "add"];
    add.extend(names.iter().map(String::as_str));
    assert_eq!(cli.run(&add).code, 0);

    let started = Instant::now();
    let refresh = cli.run(&["inventory", "refresh", "--seed", "all", "--json"]);
    let took = started.elapsed();
    assert_eq!(refresh.code, 0, "{refresh:?}");
    // The hanging host costs its exec timeout, not more: the others are
    // probed beside it.
    assert!(took < Duration::from_secs(12), "refresh took {took:?}");

    let list = cli.run(&["host", "list", "--json"]);
    assert_eq!(list.code, 0, "{list:?}");
    let hosts = by_host(&list.json());
    assert_eq!(hosts.len(), 12);

    let h = &hosts["lab-0001"];
    assert_eq!(h["sshable"], true);
    assert_eq!(h["sudoable"], true);
    assert_eq!(h["os"], "Linux");
    assert_eq!(h["role"], "gecko-t-linux-talos");
    assert_eq!(h["override_present"], false);
    assert_eq!(h["applied"], true);
    assert_eq!(h["applied_source"], "metadata");
    assert_eq!(h["puppet"]["source"], "metadata");
    assert!(h["vault_sha256"].as_str().unwrap().len() == 64);
    assert!(
        h["host_key_fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("SHA256:")
    );

    assert_eq!(hosts["lab-0002"]["override_present"], true);
    assert_eq!(
        hosts["lab-0002"]["override_contents"],
        "PUPPET_BRANCH=feature_x"
    );

    let unreachable = &hosts["lab-0003"];
    assert_eq!(unreachable["sshable"], false);
    assert!(
        unreachable["last_error"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{unreachable}"
    );
    assert_eq!(unreachable["last_seen"], Value::Null);

    let no_sudo = &hosts["lab-0004"];
    assert_eq!(no_sudo["sshable"], true);
    assert_eq!(no_sudo["sudoable"], false);
    assert_eq!(
        no_sudo["vault_sha256"],
        Value::Null,
        "the vault is root-only"
    );

    let mac = &hosts["lab-0005"];
    assert_eq!(mac["os"], "Darwin");
    assert_eq!(mac["puppet"]["source"], "metadata");

    let old_wrapper = &hosts["lab-0006"];
    assert_eq!(old_wrapper["puppet"]["source"], "summary");
    assert_eq!(old_wrapper["applied_source"], "heuristic");
    assert_eq!(old_wrapper["applied"], true);

    assert!(
        hosts["lab-0007"]["puppet"]["error"]
            .as_str()
            .unwrap()
            .contains("malformed")
    );
    assert_eq!(hosts["lab-0007"]["puppet"]["source"], "summary");
    assert!(
        hosts["lab-0008"]["puppet"]["error"]
            .as_str()
            .unwrap()
            .contains("not UTF-8")
    );

    let hanging = &hosts["lab-0009"];
    assert_eq!(
        hanging["sshable"], true,
        "it accepted us, then never answered: {hanging}"
    );
    assert!(
        hanging["last_error"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{hanging}"
    );

    let tricky = &hosts["lab-0010"];
    assert_eq!(tricky["override_contents"], TRICKY_OVERRIDE.trim());
    let sha: String = sha2::Sha256::digest(TRICKY_OVERRIDE.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(tricky["override_sha256"], sha);

    assert_eq!(hosts["lab-0011"]["role"], "gecko-t-osx-1400");

    // The query language, through the query service.
    let unreachable = cli.run(&["host", "list", "--filter", "sshable:false", "--json"]);
    assert_eq!(
        by_host(&unreachable.json()).keys().collect::<Vec<_>>(),
        ["lab-0003"]
    );
    let overridden = cli.run(&[
        "host",
        "list",
        "--filter",
        "override_present:true AND NOT override:*reboot*",
        "--json",
    ]);
    assert_eq!(
        by_host(&overridden.json()).keys().collect::<Vec<_>>(),
        ["lab-0002"]
    );
    let bad = cli.run(&["host", "list", "--filter", "role:gecko* AND (sshable:"]);
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(bad.stderr.contains("position 26"), "{bad:?}");
    let unknown = cli.run(&["host", "list", "--filter", "colour:red"]);
    assert_eq!(unknown.code, 1);
    assert!(
        unknown.stderr.contains("unknown field `colour`"),
        "{unknown:?}"
    );
}

#[test]
fn a_changed_host_key_is_refused_until_repinned() {
    let lab_dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(LabConfig::new(2, lab_dir.path())).unwrap();
    let up = Up::start_with("", lab_env(&lab));
    let cli = &up.cli;
    let host = lab.hosts()[0].hostname.clone();
    assert_eq!(cli.run(&["inventory", "seed", "add", &host]).code, 0);
    assert_eq!(cli.run(&["host", "refresh", &host]).code, 0);
    let first = cli.run(&["host", "show", &host, "--json"]).json();
    assert_eq!(first["last_error"], Value::Null);

    // The host is reimaged: a new key, and a reboot that drops the
    // prober's pooled connection.
    let handle = lab.host(&host).unwrap();
    handle.rotate_host_key().unwrap();
    handle.set_reboot_duration(Duration::from_secs(1));
    handle.reboot().unwrap();
    handle.wait_reachable(Duration::from_secs(30)).unwrap();
    let refused = cli.run(&["host", "refresh", &host]);
    assert!(refused.stdout.contains("host key changed"), "{refused:?}");
    let after = cli.run(&["host", "show", &host, "--json"]).json();
    assert!(
        after["last_error"]
            .as_str()
            .unwrap()
            .contains("host key changed")
    );
    assert_eq!(
        after["host_key_fingerprint"], first["host_key_fingerprint"],
        "still the pinned key"
    );

    let dry = cli.run(&["host", "repin", &host]);
    assert_eq!(dry.code, 4, "without --confirm nothing changes: {dry:?}");
    assert!(
        cli.run(&["host", "refresh", &host])
            .stdout
            .contains("host key changed")
    );

    assert_eq!(cli.run(&["host", "repin", &host, "--confirm"]).code, 0);
    assert_eq!(cli.run(&["host", "refresh", &host]).code, 0);
    let repinned = cli.run(&["host", "show", &host, "--json"]).json();
    assert_eq!(repinned["last_error"], Value::Null);
    assert_ne!(
        repinned["host_key_fingerprint"],
        first["host_key_fingerprint"]
    );
}
