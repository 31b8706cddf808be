//! The roll call on the lab: real SSH to real (virtual) hosts.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Up, lab_env};
use fleetroll_bus::token::Role;
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

/// GETs a JSON document from the Taskcluster double.
fn http_get_json(url: &str) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut response = agent.get(url).call().unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.body_mut().read_json().unwrap_or(Value::Null),
    )
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
    let lab = Lab::start(LabConfig::new(60, lab_dir.path()).scenario(scenario())).unwrap();
    let up = Up::start_with(
        "[ssh]\nexec_timeout = \"4s\"\nconnect_timeout = \"4s\"\n[drift]\nunreachable_after = \"0s\"\n",
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
    assert_eq!(
        refresh.code, 2,
        "some hosts could not be probed: {refresh:?}"
    );
    // The hanging host ends at its exec timeout (4 s) instead of holding
    // the refresh until the CLI gives up (minutes); the bound is loose
    // because a loaded machine is slow, not wrong.
    assert!(took < Duration::from_secs(40), "refresh took {took:?}");

    let list = cli.run(&["host", "list", "--json"]);
    assert_eq!(list.code, 0, "{list:?}");
    let hosts = by_host(&list.json());
    assert_eq!(hosts.len(), 60);
    for n in 12..=60 {
        let h = &hosts[&format!("lab-{n:04}")];
        assert!(
            h["sshable"] == true && h["sudoable"] == true && h["applied"] == true,
            "{h:#}"
        );
    }

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
    assert_eq!(mac["os"], "Darwin", "{mac:#}");
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
    // Its contents are kept, byte for byte, in an override snapshot.
    let snapshot_id = tricky["override_snapshot_id"].as_str().expect("a snapshot");
    let snapshot = cli.run(&["audit", "snapshot", snapshot_id]);
    assert_eq!(snapshot.code, 0, "{snapshot:?}");
    assert_eq!(snapshot.stdout, TRICKY_OVERRIDE, "exact contents");
    assert!(snapshot.stderr.contains("lab-0010"), "{snapshot:?}");
    assert!(hosts["lab-0001"]["override_snapshot_id"].is_null());
    let unknown = cli.run(&["audit", "snapshot", "no-such-snapshot"]);
    assert_eq!(unknown.code, 1, "{unknown:?}");

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
    // Each drift type names exactly its hosts (the gatekeeper is watching).
    let expect_linux = cli.run(&[
        "host",
        "set-expected-role",
        &names[10],
        "--role",
        "gecko-t-linux-talos",
        "--confirm",
    ]);
    assert_eq!(expect_linux.code, 0, "{expect_linux:?}");
    let expected_drift = [
        ("override", vec!["lab-0002", "lab-0010"]),
        ("unreachable", vec!["lab-0003"]),
        ("role", vec!["lab-0011"]),
        ("any", vec!["lab-0002", "lab-0003", "lab-0010", "lab-0011"]),
    ];
    common::wait_until("drift computed", Duration::from_secs(30), || {
        expected_drift.iter().all(|(t, want)| {
            hosts_of(&cli.run(&["host", "list", "--drift-type", t, "--json"])) == *want
        })
    });
    let summary = cli.run(&["inventory", "drift", "--json"]).json();
    assert_eq!(summary["hosts"], 60);
    assert_eq!(summary["drifting"], 4, "{summary:#}");
    let count = |t: &str| {
        summary["types"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["drift_type"] == t)
            .unwrap()["count"]
            .clone()
    };
    assert_eq!(count("override"), 2);
    assert_eq!(count("unreachable"), 1);
    assert_eq!(count("tc-missing"), 0);
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

/// A pin that cannot be decoded is a refusal, never "no pin": junk at a
/// host's key in the host-keys bucket (written with the workers' own NATS
/// credentials) must not unpin it, so nothing runs on whatever answers.
#[tokio::test(flavor = "multi_thread")]
async fn a_pin_that_cannot_be_read_refuses_the_connection() {
    let lab_dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(LabConfig::new(1, lab_dir.path())).unwrap();
    let up = Up::start_with("", lab_env(&lab));
    let host = lab.hosts()[0].hostname.clone();
    let worker = common::worker_bus(&up.url()).await;
    worker
        .kv(&fleetroll_bus::topology::HOST_KEYS)
        .await
        .unwrap()
        .put(&host, b"\xff not a pin".to_vec().into())
        .await
        .unwrap();
    let cli = up.cli.clone();
    let h = host.clone();
    let (refused, shown) = tokio::task::spawn_blocking(move || {
        assert_eq!(cli.run(&["inventory", "seed", "add", &h]).code, 0);
        let refused = cli.run(&["host", "refresh", &h]);
        (refused, cli.run(&["host", "show", &h, "--json"]).json())
    })
    .await
    .unwrap();
    assert!(
        refused.stdout.contains("pinned host key is unreadable"),
        "{refused:?}"
    );
    assert!(
        shown["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("refusing to connect")),
        "{shown:#}"
    );
    assert_eq!(shown["role"], Value::Null, "nothing was read from the host");
    assert_ne!(shown["sshable"], Value::Bool(true), "{shown:#}");

    // Re-pinning is the way out, as after a reimage.
    let cli = up.cli.clone();
    let repinned = tokio::task::spawn_blocking(move || {
        assert_eq!(cli.run(&["host", "repin", &host, "--confirm"]).code, 0);
        assert_eq!(cli.run(&["host", "refresh", &host]).code, 0);
        cli.run(&["host", "show", &host, "--json"]).json()
    })
    .await
    .unwrap();
    assert_eq!(repinned["last_error"], Value::Null, "{repinned:#}");
}

fn hosts_of(run: &common::Run) -> Vec<String> {
    assert_eq!(run.code, 0, "{run:?}");
    let mut names: Vec<String> = by_host(&run.json()).into_keys().collect();
    names.sort();
    names
}

#[test]
fn the_seed_runbook_populations_and_drift() {
    let scenario = Scenario::parse(
        r#"
[defaults]
role = "gecko_t_linux_talos"
[[hosts]]
names = ["lab-0002"]
override = "PUPPET_BRANCH=feature_x\n"
[[hosts]]
names = ["lab-0003"]
unreachable = true
[[hosts]]
names = ["lab-0004"]
role = "gecko_t_osx_1400"
"#,
        false,
    )
    .unwrap();
    let lab_dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(LabConfig::new(6, lab_dir.path()).scenario(scenario)).unwrap();
    let up = Up::start_with("[drift]\nunreachable_after = \"0s\"\n", lab_env(&lab));
    let cli = &up.cli;
    let dir = up.dir();
    let name = |n: usize| lab.hosts()[n - 1].hostname.clone();

    // Bad seed files change nothing and say which lines are wrong.
    std::fs::write(
        dir.join("junk.txt"),
        format!("{}\nnot a host!\n\n# fine\nx..y\n", name(1)),
    )
    .unwrap();
    let junk = cli.run(&[
        "inventory",
        "seed",
        "sync",
        "--from-file",
        dir.join("junk.txt").to_str().unwrap(),
    ]);
    assert_eq!(junk.code, 1, "{junk:?}");
    assert!(
        junk.stderr.contains("line 2") && junk.stderr.contains("line 5"),
        "{junk:?}"
    );
    std::fs::write(dir.join("binary.txt"), b"\xff\xfe\x00\x01\n").unwrap();
    let binary = cli.run(&[
        "inventory",
        "seed",
        "sync",
        "--from-file",
        dir.join("binary.txt").to_str().unwrap(),
    ]);
    assert_eq!(binary.code, 1);
    assert!(binary.stderr.contains("not UTF-8"), "{binary:?}");
    let huge = std::fs::File::create(dir.join("huge.txt")).unwrap();
    huge.set_len(32 << 20).unwrap();
    let too_big = cli.run(&[
        "inventory",
        "seed",
        "sync",
        "--from-file",
        dir.join("huge.txt").to_str().unwrap(),
    ]);
    assert_eq!(too_big.code, 1);
    assert!(too_big.stderr.contains("too large"), "{too_big:?}");
    assert_eq!(
        cli.run(&["inventory", "seed", "list", "--json"]).json(),
        serde_json::json!([])
    );

    // Sync adds and removes to match the file, and says both.
    let all: Vec<String> = (1..=6).map(name).collect();
    std::fs::write(
        dir.join("seeds.txt"),
        format!("# the pool\n{}\n", all.join("\n")),
    )
    .unwrap();
    let sync = cli.run(&[
        "inventory",
        "seed",
        "sync",
        "--from-file",
        dir.join("seeds.txt").to_str().unwrap(),
    ]);
    assert_eq!(sync.code, 0, "{sync:?}");
    assert_eq!(sync.stdout.matches("added").count(), 6);
    std::fs::write(dir.join("seeds.txt"), all[..5].join("\n")).unwrap();
    let sync = cli.run(&[
        "inventory",
        "seed",
        "sync",
        "--from-file",
        dir.join("seeds.txt").to_str().unwrap(),
    ]);
    assert_eq!(
        sync.stdout.trim(),
        format!("removed  {}", name(6)),
        "{sync:?}"
    );
    let refresh = cli.run(&["inventory", "refresh", "--seed", "all"]);
    assert_eq!(refresh.code, 2, "{refresh:?}");
    assert_eq!(
        refresh.stdout.matches("failed").count(),
        1,
        "only the unreachable host fails: {refresh:?}"
    );

    // Inspect what is unassigned, with the seed examples verbatim.
    let unassigned = cli.run(&["host", "list", "--filter", "expected_role:null", "--json"]);
    assert_eq!(hosts_of(&unassigned).len(), 5);
    let talos = cli.run(&[
        "host",
        "list",
        "--filter",
        "role:gecko_t_linux_talos AND expected_role:null",
        "--json",
    ]);
    assert_eq!(hosts_of(&talos), ["lab-0001", "lab-0002", "lab-0005"]);

    let create = cli.run(&[
        "population",
        "create",
        "talos",
        "--expected-role",
        "gecko_t_linux_talos",
        "--target-query",
        "role:gecko_t_linux_talos",
        "--description",
        "Linux talos testers",
    ]);
    assert_eq!(create.code, 0, "{create:?}");
    let again = cli.run(&["population", "create", "talos", "--expected-role", "x"]);
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("already exists"), "{again:?}");
    let populations = cli.run(&["population", "list", "--json"]).json();
    assert_eq!(populations[0]["name"], "talos");
    assert_eq!(populations[0]["expected_role"], "gecko_t_linux_talos");

    // Assigning by filter is a dry run until confirmed.
    let filter = "role:gecko_t_linux_talos AND expected_role:null";
    let dry = cli.run(&[
        "host",
        "assign-population",
        "--filter",
        filter,
        "--population",
        "talos",
    ]);
    assert_eq!(dry.code, 4, "{dry:?}");
    assert!(dry.stdout.contains("3 host(s); nothing changed"), "{dry:?}");
    assert_eq!(
        hosts_of(&cli.run(&["host", "list", "--filter", "expected_role:null", "--json"])).len(),
        5
    );
    let assign = cli.run(&[
        "host",
        "assign-population",
        "--filter",
        filter,
        "--population",
        "talos",
        "--confirm",
    ]);
    assert_eq!(assign.code, 0, "{assign:?}");
    assert_eq!(assign.stdout.matches("changed").count(), 3);
    let verify = cli.run(&[
        "host",
        "list",
        "--filter",
        "population:talos AND expected_role:gecko_t_linux_talos",
        "--json",
    ]);
    assert_eq!(hosts_of(&verify), ["lab-0001", "lab-0002", "lab-0005"]);
    let unknown = cli.run(&[
        "host",
        "assign-population",
        &name(1),
        "--population",
        "nope",
    ]);
    assert_eq!(unknown.code, 1);
    assert!(unknown.stderr.contains("unknown population"), "{unknown:?}");

    // A mac in the Linux population drifts by role.
    assert_eq!(
        cli.run(&[
            "host",
            "assign-population",
            &name(4),
            "--population",
            "talos"
        ])
        .code,
        0
    );
    let drift = |t: &str| hosts_of(&cli.run(&["host", "list", "--drift-type", t, "--json"]));
    common::wait_until("the gatekeeper's drift", Duration::from_secs(30), || {
        drift("role") == ["lab-0004"]
    });
    assert_eq!(drift("override"), ["lab-0002"]);
    assert_eq!(drift("unreachable"), ["lab-0003"]);
    assert_eq!(drift("any"), ["lab-0002", "lab-0003", "lab-0004"]);
    assert!(drift("tc-missing").is_empty());
    assert_eq!(
        hosts_of(&cli.run(&[
            "host",
            "list",
            "--filter",
            "population:talos",
            "--drift-type",
            "any",
            "--json"
        ])),
        ["lab-0002", "lab-0004"]
    );

    // Expected roles and disabling, each a recorded change.
    let dry = cli.run(&[
        "host",
        "set-expected-role",
        &name(4),
        "--role",
        "gecko_t_osx_1400",
    ]);
    assert_eq!(dry.code, 4, "{dry:?}");
    assert_eq!(
        cli.run(&[
            "host",
            "set-expected-role",
            &name(4),
            "--role",
            "gecko_t_osx_1400",
            "--confirm"
        ])
        .code,
        0
    );
    common::wait_until("role drift to clear", Duration::from_secs(30), || {
        drift("role").is_empty()
    });
    assert_eq!(
        cli.run(&["host", "clear-expected-role", &name(4), "--confirm"])
            .code,
        0
    );
    let shown = cli.run(&["host", "show", &name(4), "--json"]).json();
    assert_eq!(shown["expected_role"], Value::Null);

    assert_eq!(
        cli.run(&["host", "disable", &name(5), "--reason", "disk failing"])
            .code,
        0
    );
    let shown = cli.run(&["host", "show", &name(5), "--json"]).json();
    assert_eq!(shown["disabled"], true);
    assert_eq!(shown["disabled_reason"], "disk failing");
    assert_eq!(
        shown["disabled_by"],
        std::env::var("USER").unwrap_or_else(|_| "operator".into())
    );
    assert_eq!(
        hosts_of(&cli.run(&["host", "list", "--filter", "disabled:true", "--json"])),
        ["lab-0005"]
    );
    assert_eq!(cli.run(&["host", "enable", &name(5)]).code, 0);
    assert_eq!(
        cli.run(&["host", "show", &name(5), "--json"]).json()["disabled"],
        false
    );
    let unknown_host = cli.run(&["host", "disable", "nowhere.example.com", "--reason", "x"]);
    assert_eq!(unknown_host.code, 1, "{unknown_host:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn chatops_asks_in_json_and_cannot_mutate() {
    let up = tokio::task::spawn_blocking(Up::start).await.unwrap();
    let cli = up.cli.clone();
    let token = tokio::task::spawn_blocking(move || {
        assert_eq!(
            cli.run(&[
                "inventory",
                "seed",
                "add",
                "bot.example.com",
                "bot2.example.com",
                "bot3.example.com"
            ])
            .code,
            0
        );
        let issued = cli.run(&["auth", "issue", "--actor", "chatbot", "--role", "chatops"]);
        assert_eq!(issued.code, 0);
        issued.stdout.trim().to_string()
    })
    .await
    .unwrap();
    // As a bot would: the chatops NATS user may only ask queries.
    let bus = up.bus_as(Role::Chatops).await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Accept", "application/json");
    headers.insert("Authorization", format!("Bearer {token}").as_str());
    let reply = bus
        .client
        .request_with_headers(
            "fleetroll.query.hosts.list",
            headers.clone(),
            r#"{"kind":"host_query","v":1,"body":{"filter":"hostname:bot*"}}"#.into(),
        )
        .await
        .unwrap();
    // A JSON request body needs its Content-Type; without it the body is read as CBOR.
    assert!(
        reply
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Service-Error"))
            .is_some()
    );
    headers.insert("Content-Type", "application/json");
    let reply = bus
        .client
        .request_with_headers(
            "fleetroll.query.hosts.list",
            headers,
            r#"{"kind":"host_query","v":1,"body":{"filter":"hostname:bot*"}}"#.into(),
        )
        .await
        .unwrap();
    let json: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(json["kind"], "host_list");
    assert_eq!(json["body"]["hosts"][0]["hostname"], "bot.example.com");

    // Pages: `limit` hosts at a time, `next` says where to go on.
    let page = |body: &str| {
        let bus = &bus;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Accept", "application/json");
        headers.insert("Content-Type", "application/json");
        headers.insert("Authorization", format!("Bearer {token}").as_str());
        let request = format!(r#"{{"kind":"host_query","v":1,"body":{body}}}"#);
        async move {
            let reply = bus
                .client
                .request_with_headers("fleetroll.query.hosts.list", headers, request.into())
                .await
                .unwrap();
            serde_json::from_slice::<Value>(&reply.payload).unwrap()["body"].clone()
        }
    };
    let first = page(r#"{"filter":"hostname:bot*","limit":2}"#).await;
    assert_eq!(first["hosts"].as_array().unwrap().len(), 2, "{first:#}");
    assert_eq!(first["next"], "bot2.example.com");
    let rest = page(r#"{"filter":"hostname:bot*","limit":2,"after":"bot2.example.com"}"#).await;
    assert_eq!(rest["hosts"][0]["hostname"], "bot3.example.com", "{rest:#}");
    assert_eq!(rest["next"], Value::Null);
    let all = page("{}").await;
    assert_eq!(all["hosts"].as_array().unwrap().len(), 3);

    // The drift summary, for "how is the fleet?" in chat.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Accept", "application/json");
    headers.insert("Authorization", format!("Bearer {token}").as_str());
    let reply = bus
        .client
        .request_with_headers("fleetroll.query.drift.summary", headers, "".into())
        .await
        .unwrap();
    let summary: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(summary["kind"], "drift_summary", "{summary:#}");
    assert_eq!(summary["body"]["hosts"], 3);
    assert_eq!(summary["body"]["types"].as_array().unwrap().len(), 6);

    let cli = up.cli.clone();
    let refused = tokio::task::spawn_blocking(move || {
        std::fs::write(cli.data_dir.join("bot.token"), &token).unwrap();
        let path = cli.data_dir.join("bot.token");
        cli.run(&[
            "--token-file",
            path.to_str().unwrap(),
            "inventory",
            "seed",
            "remove",
            "bot.example.com",
        ])
    })
    .await
    .unwrap();
    assert_eq!(refused.code, 5, "{refused:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prober_killed_mid_refresh_leaves_nothing_unprobed() {
    let scenario = Scenario::parse("[defaults]\nslow = \"1s\"\n", false).unwrap();
    let lab_dir = tempfile::tempdir().unwrap();
    let lab = tokio::task::spawn_blocking(move || {
        let lab = Lab::start(LabConfig::new(24, lab_dir.path()).scenario(scenario)).unwrap();
        (lab, lab_dir)
    })
    .await
    .unwrap();
    let (lab, _lab_dir) = lab;
    let bare = common::Bare::start().await;
    std::fs::write(
        bare.dir.path().join("fleetroll.toml"),
        "[ssh]\nparallelism = 3\n",
    )
    .unwrap();
    let mut cli = bare.cli.clone();
    cli.env = lab_env(&lab);
    let names: Vec<String> = lab.hosts().iter().map(|h| h.hostname.clone()).collect();

    let run = tokio::task::spawn_blocking(move || {
        let mut first = cli.spawn(&["worker", "prober"]);
        let mut second = cli.spawn(&["worker", "prober"]);
        common::wait_until("two probers", Duration::from_secs(30), || {
            cli.replicas_of("prober") == 2
        });
        let mut add = vec!["inventory", "seed", "add"];
        add.extend(names.iter().map(String::as_str));
        assert_eq!(cli.run(&add).code, 0);
        let refresh_started = time::OffsetDateTime::now_utc();
        let refresh = cli.spawn_output(&["inventory", "refresh", "--seed", "all", "--json"]);
        // Mid-refresh: once its first hosts are probed.
        common::wait_until("the refresh under way", Duration::from_secs(60), || {
            let listed = cli.run(&["host", "list", "--json"]);
            listed.code == 0
                && listed.json().as_array().is_some_and(|hosts| {
                    hosts.iter().any(|h| {
                        h["probed_at"].as_str().is_some_and(|at| {
                            time::OffsetDateTime::parse(
                                at,
                                &time::format_description::well_known::Rfc3339,
                            )
                            .is_ok_and(|at| at >= refresh_started)
                        })
                    })
                })
        });
        common::kill(&mut first, libc::SIGKILL);
        let _ = first.wait();
        let output = refresh.wait_with_output().unwrap();
        // Queries are served by the surviving prober.
        let hosts = cli.run(&["host", "list", "--json"]).json();
        common::kill(&mut second, libc::SIGTERM);
        (output, refresh_started, hosts)
    })
    .await
    .unwrap();
    let (output, refresh_started, hosts) = run;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let probed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(probed.as_array().unwrap().len(), 24);
    assert!(
        probed.as_array().unwrap().iter().all(|h| h["ok"] == true),
        "{probed}"
    );
    for host in hosts.as_array().unwrap() {
        let probed_at = time::OffsetDateTime::parse(
            host["probed_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert!(
            probed_at >= refresh_started,
            "{} not probed by the refresh",
            host["hostname"]
        );
    }
}

/// Every task run recorded for `host` in the task-run stream.
async fn task_runs(bus: &fleetroll_bus::Bus, host: &str) -> Vec<Value> {
    bus.stored(
        &fleetroll_bus::topology::TASK_RUNS,
        fleetroll_bus::subjects::task_runs(host),
    )
    .await
    .unwrap()
    .iter()
    .map(|p| {
        let run: fleetroll_bus::messages::workload::TaskRun =
            fleetroll_bus::codec::from_cbor(p).unwrap();
        serde_json::to_value(run).unwrap()
    })
    .collect()
}

async fn history_len(bus: &fleetroll_bus::Bus, host: &str) -> usize {
    bus.stored(
        &fleetroll_bus::topology::HOST_HISTORY,
        fleetroll_bus::subjects::host_history(host),
    )
    .await
    .unwrap()
    .len()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fast_refresh_reads_only_hosts_whose_state_changed() {
    let lab_dir = tempfile::tempdir().unwrap();
    let lab = tokio::task::spawn_blocking(move || {
        (
            Lab::start(LabConfig::new(3, lab_dir.path())).unwrap(),
            lab_dir,
        )
    })
    .await
    .unwrap();
    let (lab, _lab_dir) = (std::sync::Arc::new(lab.0), lab.1);
    let env = lab_env(&lab);
    let up = tokio::task::spawn_blocking(move || Up::start_with("", env))
        .await
        .unwrap();
    let names: Vec<String> = lab.hosts().iter().map(|h| h.hostname.clone()).collect();
    let cli = up.cli.clone();
    let seeds = names.clone();
    let first = tokio::task::spawn_blocking(move || {
        let mut add = vec!["inventory", "seed", "add"];
        add.extend(seeds.iter().map(String::as_str));
        assert_eq!(cli.run(&add).code, 0);
        let refresh = cli.run(&["inventory", "refresh", "--seed", "all"]);
        assert_eq!(refresh.code, 0, "{refresh:?}");
        assert_eq!(refresh.stdout.matches("ok ").count(), 3, "{refresh:?}");
        by_host(&cli.run(&["host", "list", "--json"]).json())
    })
    .await
    .unwrap();
    let bus = up.bus().await;
    // A refresh is satisfied by any probe since it was sent, so the probe
    // queued by the seeds may have answered it and its own may still run.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut jobs = bus
            .js
            .get_stream(fleetroll_bus::topology::PROBE_JOBS.name)
            .await
            .unwrap();
        if jobs.info().await.unwrap().state.messages == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "probe jobs never drained");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut before = Vec::new();
    for name in &names {
        before.push(history_len(&bus, name).await);
    }

    // One host's override changes; the others stay as they were.
    lab.host(&names[1])
        .unwrap()
        .set_override(Some(b"PUPPET_BRANCH=fast_x\n"))
        .unwrap();
    let cli = up.cli.clone();
    let after = tokio::task::spawn_blocking(move || {
        let fast = cli.run(&["inventory", "refresh", "--seed", "all", "--fast"]);
        assert_eq!(fast.code, 0, "{fast:?}");
        assert_eq!(fast.stdout.matches("ok ").count(), 3, "{fast:?}");
        by_host(&cli.run(&["host", "list", "--json"]).json())
    })
    .await
    .unwrap();
    for (i, name) in names.iter().enumerate() {
        let short = name.split('.').next().unwrap();
        let (was, is) = (&first[short], &after[short]);
        assert_ne!(
            was["probed_at"], is["probed_at"],
            "{short} was probed again"
        );
        let recorded = history_len(&bus, name).await - before[i];
        if i == 1 {
            assert_eq!(is["override_present"], true, "{is:#}");
            assert_eq!(is["override_contents"], "PUPPET_BRANCH=fast_x");
            assert_eq!(recorded, 1, "the changed host got a full probe");
            // ...and its history says what changed.
            let history = up.cli.run(&["host", "history", name, "--json"]).json();
            let last = history["entries"].as_array().unwrap().last().unwrap();
            let change = last["changes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["field"] == "override_present")
                .unwrap_or_else(|| panic!("{last:#}"));
            assert_eq!(
                (&change["from"], &change["to"]),
                (&Value::Bool(false), &Value::Bool(true))
            );
            let shown = up.cli.run(&["host", "history", name]);
            assert!(
                shown.stdout.contains("override_present: false -> true"),
                "{shown:?}"
            );
        } else {
            assert_eq!(recorded, 0, "{short}: nothing changed, nothing read");
            assert_eq!(was["state_token"], is["state_token"]);
            assert_eq!(was["override_present"], is["override_present"]);
        }
    }
}

/// Workload from a double shaped like Firefox CI: Linux `-1804` and
/// `-2404` pools, a host moved by `WORKER_TYPE_OVERRIDE`, one quarantined
/// with a reason, a share of runs canceled or superseded, short pages, and
/// a fifth of all requests failing with 502 while drift settles.
#[tokio::test(flavor = "multi_thread")]
async fn workload_from_a_firefox_ci_shaped_taskcluster() {
    let scenario = Scenario::parse(
        r#"
[defaults]
role = "gecko_t_linux_talos"
jobs_per_minute = 30
job_reasons = { canceled = 0.2, superseded = 0.1 }
[taskcluster]
max_page_size = 2
expired_workers = 2
[[hosts]]
names = ["lab-0002"]
job_failure_rate = 1.0
job_reasons = {}
[[hosts]]
names = ["lab-0003"]
role = "gecko_t_osx_1400"
[[hosts]]
names = ["lab-0006"]
role = "gecko_t_linux_2404_talos"
[[hosts]]
names = ["lab-0007"]
override = "PUPPET_BRANCH=staging\nWORKER_TYPE_OVERRIDE='gecko-t-linux-talos-1804-staging'\n"
"#,
        false,
    )
    .unwrap();
    let lab_dir = tempfile::tempdir().unwrap();
    let lab = tokio::task::spawn_blocking(move || {
        (
            Lab::start(LabConfig::new(7, lab_dir.path()).scenario(scenario)).unwrap(),
            lab_dir,
        )
    })
    .await
    .unwrap();
    let (lab, _lab_dir) = (std::sync::Arc::new(lab.0), lab.1);
    lab.set_taskcluster_fail_rate(0.2).unwrap();
    // Only the root URL in the file: the rest is Firefox CI's defaults and
    // the lab client's credentials in Taskcluster's own variables.
    let settings = format!(
        "[workload]\nroot_url = {}\ninterval = \"2s\"\nactive_window = \"1m\"\n",
        toml_string(lab.taskcluster_url()),
    );
    let mut env = lab_env(&lab);
    let client = lab.taskcluster_client();
    env.push(("TASKCLUSTER_CLIENT_ID".into(), client.client_id.clone()));
    env.push((
        "TASKCLUSTER_ACCESS_TOKEN".into(),
        client.access_token.clone(),
    ));
    let up = tokio::task::spawn_blocking(move || Up::start_with(&settings, env))
        .await
        .unwrap();
    let name = |n: usize| lab.hosts()[n - 1].hostname.clone();
    lab.host(&name(4))
        .unwrap()
        .quarantine(
            Some(std::time::SystemTime::now() + Duration::from_secs(3600)),
            Some("disk errors on sda"),
        )
        .unwrap();
    let cli = up.cli.clone();
    let hosts: Vec<String> = (1..=7).map(name).collect();
    tokio::task::spawn_blocking(move || {
        let mut add = vec!["inventory", "seed", "add", "ghost.fleetroll.test"];
        add.extend(hosts.iter().map(String::as_str));
        assert_eq!(cli.run(&add).code, 0);
        let refresh = cli.run(&["inventory", "refresh", "--seed", "all"]);
        assert_eq!(refresh.code, 2, "the ghost does not resolve: {refresh:?}");
        let role = cli.run(&[
            "host",
            "set-expected-role",
            &hosts[2],
            "--role",
            "gecko_t_linux_talos",
            "--confirm",
        ]);
        assert_eq!(role.code, 0, "{role:?}");
        let disable = cli.run(&["host", "disable", &hosts[4], "--reason", "bad disk"]);
        assert_eq!(disable.code, 0, "{disable:?}");
    })
    .await
    .unwrap();

    // Drift of each workload kind names exactly its host, once the
    // disabled host has worked since it was disabled; while requests fail,
    // no host ever goes missing wrongly, and none loses its pool.
    let cli = up.cli.clone();
    let expected: Vec<(&str, Vec<String>)> = vec![
        ("tc-missing", vec!["ghost".into()]),
        ("tc-mismatch", vec!["lab-0003".into()]),
        ("disabled-active", vec!["lab-0005".into()]),
    ];
    let listed = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut sweeps_seen = std::collections::BTreeSet::new();
        loop {
            let listed = cli.run(&["host", "list", "--json"]).json();
            for (host, record) in by_host(&listed) {
                let w = &record["workload"];
                assert!(
                    w.is_null() || w["error"].is_null(),
                    "{host} lost its workload to a failed request: {w:#}"
                );
                if w["collected_at"].is_string() {
                    sweeps_seen.insert(w["collected_at"].to_string());
                }
                let missing = record["drift"]
                    .as_array()
                    .is_some_and(|d| d.iter().any(|t| t == "tc-missing"));
                assert!(
                    !missing || host == "ghost",
                    "{host} is wrongly missing: {record:#}"
                );
            }
            let got: Vec<(&str, Vec<String>)> = expected
                .iter()
                .map(|(t, _)| {
                    (
                        *t,
                        hosts_of(&cli.run(&["host", "list", "--drift-type", t, "--json"])),
                    )
                })
                .collect();
            if got == expected && sweeps_seen.len() >= 3 {
                return listed;
            }
            assert!(
                Instant::now() < deadline,
                "workload drift never settled: {got:?}"
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    })
    .await
    .unwrap();
    lab.set_taskcluster_fail_rate(0.0).unwrap();
    let hosts = by_host(&listed);
    let workload = |h: &str| &hosts[h]["workload"];
    assert_eq!(
        hosts["lab-0001"]["healthy"], true,
        "{:#}",
        hosts["lab-0001"]
    );
    assert_eq!(workload("lab-0001")["state"], "standalone");
    assert_eq!(
        workload("lab-0001")["worker_pool"],
        "releng-hardware/gecko-t-linux-talos-1804"
    );
    assert_eq!(workload("lab-0001")["expected_pool"]["rule"], "table");
    assert_eq!(
        workload("lab-0006")["worker_pool"],
        "releng-hardware/gecko-t-linux-talos-2404"
    );
    assert_eq!(
        workload("lab-0007")["worker_pool"],
        "releng-hardware/gecko-t-linux-talos-1804-staging",
        "the override's pool wins: {:#}",
        workload("lab-0007")
    );
    assert_eq!(
        workload("lab-0007")["expected_pool"]["rule"],
        "worker_type_override"
    );
    assert!(
        !hosts["lab-0007"]["drift"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d == "tc-mismatch"),
        "{:#}",
        hosts["lab-0007"]
    );
    assert_eq!(
        hosts["lab-0004"]["healthy"], false,
        "a quarantined host does no work"
    );
    assert!(workload("ghost")["worker_pool"].is_null());

    // The quarantine and why, in host show and the query language.
    let cli = up.cli.clone();
    let (first, quarantined_host, moved_host) = (name(1), name(4), name(7));
    let (shown, text, quarantined, moved) = tokio::task::spawn_blocking(move || {
        (
            cli.run(&["host", "show", &quarantined_host, "--json"])
                .json(),
            cli.run(&["host", "show", &quarantined_host]),
            hosts_of(&cli.run(&["host", "list", "--filter", "tc_quarantined:true", "--json"])),
            cli.run(&["host", "show", &moved_host]),
        )
    })
    .await
    .unwrap();
    let quarantine = &shown["workload"]["quarantine"];
    assert_eq!(quarantine["reason"], "disk errors on sda", "{shown:#}");
    assert_eq!(quarantine["by"], client.client_id.as_str());
    assert!(quarantine["until"].is_string());
    assert!(
        text.stdout.contains("tc quarantine") && text.stdout.contains("disk errors on sda"),
        "{text:?}"
    );
    assert_eq!(quarantined, vec!["lab-0004".to_string()]);
    assert!(
        moved
            .stdout
            .contains("named by WORKER_TYPE_OVERRIDE in the override file"),
        "{moved:?}"
    );

    // Quarantining through fleetroll reaches Taskcluster, signed with the
    // prober's credentials, and is audited; lifting it too.
    let cli = up.cli.clone();
    let (set, lifted, audit) = tokio::task::spawn_blocking(move || {
        let set = cli.run(&[
            "host",
            "quarantine",
            &first,
            "--until",
            "2h",
            "--reason",
            "flaky \u{1b}[31mGPU",
            "--confirm",
        ]);
        let shown = cli.run(&["host", "show", &first, "--json"]).json();
        let lifted = cli.run(&["host", "unquarantine", &first, "--confirm"]);
        let audit = cli
            .run(&["audit", "list", "--host", &first, "--json"])
            .json();
        ((set, shown), lifted, audit)
    })
    .await
    .unwrap();
    let (set, shown) = set;
    assert_eq!(set.code, 0, "{set:?}");
    assert!(
        set.stdout.contains(&format!("quarantined {}", name(1))),
        "{set:?}"
    );
    assert!(
        shown["workload"]["quarantine"]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("flaky \u{1b}[31mGPU (by ")),
        "{shown:#}"
    );
    assert_eq!(lifted.code, 0, "{lifted:?}");
    let (status, worker) = http_get_json(&format!(
        "{}/api/worker-manager/v1/provisioners/releng-hardware/worker-types/gecko-t-linux-talos-1804/workers/{}/lab-0001",
        lab.taskcluster_url().trim_end_matches('/'),
        lab.info().taskcluster_worker_group
    ));
    assert_eq!(status, 200, "{worker}");
    let notes = worker["quarantineDetails"].as_array().unwrap();
    assert!(
        notes
            .iter()
            .any(|n| n["clientId"] == client.client_id.as_str()
                && n["quarantineInfo"]
                    .as_str()
                    .is_some_and(|i| i.starts_with("flaky \u{1b}[31mGPU"))),
        "{worker:#}"
    );
    assert!(
        notes.iter().any(|n| n["quarantineInfo"]
            .as_str()
            .is_some_and(|i| i.starts_with("lifted by "))),
        "{worker:#}"
    );
    let actions: Vec<(&str, &str)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["record"]["action"].as_str().unwrap_or(""),
                r["record"]["outcome"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(actions.contains(&("host_quarantine", "done")), "{audit:#}");
    assert!(
        actions.contains(&("host_unquarantine", "done")),
        "{audit:#}"
    );

    // Every finished job is recorded once per host, with its result.
    let bus = up.bus().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let (ok_runs, failing_runs) = loop {
        let ok_runs = task_runs(&bus, &name(1)).await;
        let failing_runs = task_runs(&bus, &name(2)).await;
        if ok_runs.len() >= 3 && failing_runs.len() >= 3 {
            break (ok_runs, failing_runs);
        }
        assert!(
            Instant::now() < deadline,
            "too few runs recorded: {ok_runs:?} {failing_runs:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert!(
        ok_runs.iter().all(|r| r["result"] == "completed"
            || (r["result"] == "exception"
                && (r["reason"] == "canceled" || r["reason"] == "superseded"))),
        "{ok_runs:#?}"
    );
    assert!(
        failing_runs.iter().all(|r| r["result"] == "failed"),
        "{failing_runs:#?}"
    );
    for runs in [&ok_runs, &failing_runs] {
        let mut ids: Vec<String> = runs
            .iter()
            .map(|r| format!("{}/{}", r["task_id"], r["run_id"]))
            .collect();
        let total = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), total, "a run recorded twice: {runs:#?}");
    }
    assert!(task_runs(&bus, "ghost.fleetroll.test").await.is_empty());
}

/// Without Taskcluster credentials the prober cannot set a quarantine:
/// the command is refused (exit 5), says why, changes nothing in
/// Taskcluster, and the refusal is audited.
#[test]
fn a_quarantine_without_taskcluster_credentials_is_refused() {
    let lab_dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(LabConfig::new(1, lab_dir.path())).unwrap();
    let settings = format!(
        "[workload]\nroot_url = {}\ninterval = \"1s\"\n",
        toml_string(lab.taskcluster_url()),
    );
    let up = Up::start_with(&settings, lab_env(&lab));
    let host = lab.hosts()[0].hostname.clone();
    assert_eq!(up.cli.run(&["inventory", "seed", "add", &host]).code, 0);
    assert_eq!(up.cli.run(&["host", "refresh", &host]).code, 0);
    common::wait_until("the worker to be found", Duration::from_secs(60), || {
        up.cli.run(&["host", "show", &host, "--json"]).json()["workload"]["worker_pool"].is_string()
    });
    let refused = up.cli.run(&[
        "host",
        "quarantine",
        &host,
        "--until",
        "1h",
        "--reason",
        "r",
        "--confirm",
    ]);
    assert_eq!(refused.code, 5, "{refused:?}");
    assert!(
        refused.stderr.contains("no Taskcluster credentials"),
        "{refused:?}"
    );
    let pool = lab.host(&host).unwrap().worker_pool().unwrap();
    let (provisioner, worker_type) = pool.split_once('/').unwrap();
    let (status, listed) = http_get_json(&format!(
        "{}/api/queue/v1/provisioners/{provisioner}/worker-types/{worker_type}/workers",
        lab.taskcluster_url().trim_end_matches('/')
    ));
    assert_eq!(status, 200, "{listed}");
    assert!(
        listed["workers"][0]["quarantineUntil"].is_null(),
        "{listed:#}"
    );
    let audit = up
        .cli
        .run(&["audit", "list", "--host", &host, "--json"])
        .json();
    assert!(
        audit.as_array().unwrap().iter().any(|r| {
            r["record"]["action"] == "host_quarantine" && r["record"]["outcome"] == "denied"
        }),
        "{audit:#}"
    );
}
