//! Rollouts on the lab: start refused over existing overrides, a canary,
//! forced batches, each host written once, pause and resume, and every step
//! in the audit log with its snapshots.

mod common;

use std::time::Duration;

use common::{Cli, Up, lab_env, wait_until};
use fleetroll_lab::{Lab, LabConfig, Scenario};
use serde_json::Value;

const CHANGE: &[u8] = b"PUPPET_BRANCH=feature_xyz\n";

fn status(cli: &Cli, id: &str) -> Value {
    let run = cli.run(&["rollout", "status", id, "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    run.json()
}

/// The rollout's audit records, once `ready` finds in them what the test
/// waits for (the auditor writes a moment after the event).
fn audited<T>(cli: &Cli, id: &str, ready: impl Fn(&[Value]) -> Option<T>) -> T {
    let mut found = None;
    wait_until(
        &format!("the audit records of {id}"),
        Duration::from_secs(30),
        || {
            let audit = cli.run(&["audit", "list", "--rollout", id, "--json"]);
            let records: Vec<Value> = audit
                .json()
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["record"].clone())
                .collect();
            found = ready(&records);
            found.is_some()
        },
    );
    found.expect("found")
}

/// Waits until the workload source has reported at least `runs` finished
/// task runs of every one of `hosts` (a baseline needs them).
fn wait_runs(cli: &Cli, hosts: &[String], runs: usize) {
    wait_until(
        "task runs before the rollout",
        Duration::from_secs(60),
        || {
            hosts.iter().all(|h| {
                let shown = cli.run(&["host", "show", h, "--json"]);
                shown.code == 0
                    && shown.json()["workload"]["recorded"]
                        .as_array()
                        .is_some_and(|r| r.len() >= runs)
            })
        },
    );
}

fn wait_stage_waiting(cli: &Cli, id: &str, stage: usize) {
    wait_until(
        &format!("stage {stage} of {id} waiting for assessment"),
        Duration::from_secs(120),
        || {
            let s = status(cli, id);
            s["rollout"]["stages"]
                .as_array()
                .and_then(|st| st.get(stage - 1))
                .is_some_and(|st| st["status"] == "waiting_for_assessment")
        },
    );
}

#[test]
fn a_canary_then_forced_batches_write_each_host_once() {
    let lab_dir = tempfile::tempdir().unwrap();
    let scenario = Scenario::parse(
        "[[hosts]]\nnames = [\"lab-0006\"]\noverride = \"PUPPET_BRANCH=someone_else\\n\"\n",
        false,
    )
    .unwrap();
    let lab = Lab::start(LabConfig::new(6, lab_dir.path()).scenario(scenario)).unwrap();
    let up = Up::start_with("", lab_env(&lab));
    let cli = &up.cli;
    let names: Vec<String> = lab.hosts().iter().map(|h| h.hostname.clone()).collect();
    common::onboard(cli, &names);
    let create = |extra: &[&str]| {
        let mut args = vec![
            "rollout",
            "create",
            "--target",
            "hostname:lab-*",
            "--canary",
            "2",
            "--change",
            "PUPPET_BRANCH=feature_xyz",
        ];
        args.extend_from_slice(extra);
        let run = cli.run(&args);
        assert_eq!(run.code, 0, "{run:?}");
        run.stdout.trim().to_string()
    };

    // A target host already has an override: start is refused, naming it.
    let blocked = create(&[]);
    let start = cli.run(&["rollout", "start", &blocked]);
    assert_eq!(start.code, 4, "{start:?}");
    assert!(start.stderr.contains(&names[5]), "{start:?}");
    assert!(
        names[..5]
            .iter()
            .all(|h| lab.host(h).unwrap().override_writes().unwrap() == 0),
        "nothing written"
    );

    // Skipped, it starts: the canary is two hosts.
    let id = create(&["--skip", &names[5]]);
    let start = cli.run(&["rollout", "start", &id]);
    assert_eq!(start.code, 0, "{start:?}");
    wait_stage_waiting(cli, &id, 1);
    let canary: Vec<String> = status(cli, &id)["rollout"]["stages"][0]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_string())
        .collect();
    assert_eq!(canary.len(), 2);
    for name in &names[..5] {
        let host = lab.host(name).unwrap();
        let file = host.file(host.override_path()).unwrap();
        if canary.contains(name) {
            assert_eq!(file.as_deref(), Some(CHANGE), "{name}");
        } else {
            assert_eq!(file, None, "{name} is not in the canary");
        }
    }

    // No gate evaluation: a normal advance is refused; a forced one needs
    // a reason, and goes.
    let normal = cli.run(&["rollout", "advance", &id, "--batch-size", "2"]);
    assert_eq!(normal.code, 4, "{normal:?}");
    let no_reason = cli.run(&["rollout", "advance", &id, "--batch-size", "2", "--force"]);
    assert_eq!(no_reason.code, 1, "{no_reason:?}");
    let watching = cli.follow(&["watch", "rollout", &id]);
    watching.wait_stderr("watching rollout", Duration::from_secs(30));
    let forced = cli.run(&[
        "rollout",
        "advance",
        &id,
        "--batch-size",
        "2",
        "--force",
        "--reason",
        "canary looks fine by eye",
    ]);
    assert_eq!(forced.code, 0, "{forced:?}");
    wait_stage_waiting(cli, &id, 2);
    // `watch` saw the stage go, host by host.
    watching.wait_stdout(
        "the stage watched to its end",
        Duration::from_secs(30),
        |lines| {
            lines
                .iter()
                .any(|l| l.contains("stage  2 waiting_for_assessment"))
        },
    );
    let watched = watching.stdout().join("\n");
    drop(watching);
    assert!(
        watched.contains("stage  2 applying (2 host(s))"),
        "{watched}"
    );
    assert!(
        watched.contains("stage  2 waiting_for_assessment"),
        "{watched}"
    );
    let hosts = watched
        .lines()
        .filter(|l| l.contains("  host ") && l.ends_with(" applied"))
        .count();
    assert_eq!(hosts, 2, "{watched}");
    let pause = cli.run(&["rollout", "pause", &id, "--reason", "lunch"]);
    assert_eq!(pause.code, 0, "{pause:?}");
    let paused = cli.run(&[
        "rollout",
        "advance",
        &id,
        "--batch-size",
        "5",
        "--force",
        "--reason",
        "x",
    ]);
    assert_eq!(
        paused.code, 4,
        "a paused rollout does not advance: {paused:?}"
    );
    assert_eq!(cli.run(&["rollout", "resume", &id]).code, 0);
    // The emergency stop pauses every running rollout.
    let halt = cli.run(&["rollout", "halt", "--all", "--reason", "incident 42"]);
    assert_eq!(halt.code, 0, "{halt:?}");
    assert_eq!(halt.stdout.trim(), format!("paused {id}"));
    assert_eq!(
        status(cli, &id)["rollout"]["pause_reason"],
        "halt: incident 42"
    );
    assert_eq!(cli.run(&["rollout", "resume", &id]).code, 0);
    let last = cli.run(&[
        "rollout",
        "advance",
        &id,
        "--batch-size",
        "5",
        "--force",
        "--reason",
        "the rest",
    ]);
    assert_eq!(last.code, 0, "{last:?}");
    wait_stage_waiting(cli, &id, 3);
    let done = cli.run(&[
        "rollout",
        "advance",
        &id,
        "--batch-size",
        "1",
        "--force",
        "--reason",
        "y",
    ]);
    assert_eq!(done.code, 4, "every host is in a stage: {done:?}");

    // Every target written exactly once; the skipped host untouched.
    for name in &names[..5] {
        let host = lab.host(name).unwrap();
        assert_eq!(
            host.file(host.override_path()).unwrap().as_deref(),
            Some(CHANGE)
        );
        assert_eq!(host.override_writes().unwrap(), 1, "{name}");
    }
    let skipped = lab.host(&names[5]).unwrap();
    assert_eq!(skipped.override_writes().unwrap(), 0);

    let list = cli.run(&["rollout", "list", "--json"]);
    assert_eq!(list.code, 0);
    assert_eq!(list.json().as_array().unwrap().len(), 2);

    // The audit log has each command, the forced advance with its reason,
    // and each host's write with the snapshot taken first.
    let audit = cli.run(&["audit", "list", "--rollout", &id, "--json"]);
    assert_eq!(audit.code, 0, "{audit:?}");
    let records: Vec<Value> = audit
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["record"].clone())
        .collect();
    let of = |action: &str| -> Vec<&Value> {
        records
            .iter()
            .filter(|r| r["action"] == action && r["outcome"] == "done")
            .collect()
    };
    assert_eq!(of("rollout_create").len(), 1);
    assert_eq!(of("rollout_start").len(), 1);
    let advances = of("rollout_advance");
    assert_eq!(advances.len(), 2, "{records:#?}");
    assert!(advances.iter().all(|r| r["force"] == true));
    assert_eq!(advances[0]["reason"], "canary looks fine by eye");
    let writes = of("override_apply");
    assert_eq!(writes.len(), 5, "{records:#?}");
    for write in writes {
        let snapshot = write["snapshots"][0].as_str().expect("a snapshot");
        let shown = cli.run(&["audit", "snapshot", snapshot, "--json"]);
        assert_eq!(shown.code, 0, "{shown:?}");
        let body = &shown.json()["body"];
        assert_eq!(body["occasion"], "before apply");
        assert!(
            body["content_base64"].is_null(),
            "there was no override before"
        );
        assert_eq!(body["hostname"], write["hosts"][0]);
    }

    // Rollback with --remove-overrides: a dry run first; then the overrides
    // go (each snapshotted), and fresh probes show the hosts clean.
    let dry = cli.run(&[
        "rollout",
        "rollback",
        &id,
        "--remove-overrides",
        "--reason",
        "bad branch",
    ]);
    assert_eq!(dry.code, 4, "{dry:?}");
    assert!(dry.stdout.contains("would stop"), "{dry:?}");
    let rollback = cli.run(&[
        "rollout",
        "rollback",
        &id,
        "--remove-overrides",
        "--confirm",
        "--reason",
        "bad branch",
    ]);
    assert_eq!(rollback.code, 0, "{rollback:?}");
    wait_until("rolled back", Duration::from_secs(60), || {
        status(cli, &id)["rollout"]["state"] == "rolled_back"
    });
    for name in &names[..5] {
        let host = lab.host(name).unwrap();
        assert_eq!(host.file(host.override_path()).unwrap(), None, "{name}");
        let shown = cli.run(&["host", "show", name, "--json"]);
        assert_eq!(
            shown.json()["override_present"],
            false,
            "{name}: a fresh probe"
        );
    }
    let skipped = lab.host(&names[5]).unwrap();
    assert!(
        skipped.file(skipped.override_path()).unwrap().is_some(),
        "not its override"
    );
    let audit = cli.run(&["audit", "list", "--rollout", &id, "--json"]);
    let removals: Vec<Value> = audit
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["record"].clone())
        .filter(|r| r["action"] == "override_remove")
        .collect();
    assert_eq!(removals.len(), 5, "{removals:#?}");
    for removal in &removals {
        let snapshot = removal["snapshots"][0].as_str().expect("a snapshot");
        let shown = cli.run(&["audit", "snapshot", snapshot]);
        assert_eq!(shown.stdout.as_bytes(), CHANGE, "what was removed is kept");
    }
    assert_eq!(cli.run(&["audit", "verify"]).code, 0);
    drop(up);
    lab.down().unwrap();
}

/// Rollouts with worker processes the test kills: an orchestrator killed
/// in the middle of a 100-host batch, and two replicas racing on the same
/// advance.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_orchestrator_leaves_each_host_written_once_and_racing_advances_advance_once() {
    let lab_dir = tempfile::tempdir().unwrap();
    let lab = tokio::task::spawn_blocking(move || {
        let lab = Lab::start(LabConfig::new(100, lab_dir.path())).unwrap();
        (lab, lab_dir)
    })
    .await
    .unwrap();
    let (lab, _lab_dir) = lab;
    let mut bare = common::Bare::start().await;
    std::fs::write(
        bare.dir.path().join("fleetroll.toml"),
        "[ssh]\nparallelism = 4\n",
    )
    .unwrap();
    bare.cli.env = lab_env(&lab);
    let cli = bare.cli.clone();
    let _prober = cli.spawn(&["worker", "prober"]);
    let _auditor = cli.spawn(&["worker", "auditor"]);
    let mut first = cli.spawn(&["worker", "orchestrator"]);
    let _second = cli.spawn(&["worker", "orchestrator"]);
    let names: Vec<String> = lab.hosts().iter().map(|h| h.hostname.clone()).collect();
    let c = cli.clone();
    let n = names.clone();
    let id = tokio::task::spawn_blocking(move || {
        wait_until("the workers", Duration::from_secs(30), || {
            c.replicas_of("prober") == 1
                && c.replicas_of("auditor") == 1
                && c.replicas_of("orchestrator") == 2
        });
        common::onboard(&c, &n);
        let run = c.run(&[
            "rollout",
            "create",
            "--target",
            "hostname:lab-*",
            "--canary",
            "98",
            "--change",
            "PUPPET_BRANCH=feature_xyz",
        ]);
        assert_eq!(run.code, 0, "{run:?}");
        let id = run.stdout.trim().to_string();
        let start = c.run(&["rollout", "start", &id]);
        assert_eq!(start.code, 0, "{start:?}");
        id
    })
    .await
    .unwrap();

    // Kill one orchestrator once the batch is under way.
    let worker = common::worker_bus(&bare.url()).await;
    loop {
        let done = worker
            .bucket_state(&fleetroll_bus::topology::ROLLOUT_HOSTS)
            .await
            .unwrap()
            .messages;
        if done >= 10 {
            assert!(done < 98, "killed too late ({done} hosts done)");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    common::kill(&mut first, libc::SIGKILL);
    let _ = first.wait();

    let c = cli.clone();
    let i = id.clone();
    tokio::task::spawn_blocking(move || wait_stage_waiting(&c, &i, 1))
        .await
        .unwrap();
    let written = |name: &str| lab.host(name).unwrap().override_writes().unwrap();
    let canary = names.iter().filter(|n| written(n) == 1).count();
    assert_eq!(canary, 98, "the canary, each host written once");
    assert!(names.iter().all(|n| written(n) <= 1));

    // A replacement replica, then two advances sent at once: exactly one
    // goes, the other finds the stage it started.
    let _third = cli.spawn(&["worker", "orchestrator"]);
    let c = cli.clone();
    let i = id.clone();
    let (a, b) = tokio::task::spawn_blocking(move || {
        wait_until("two orchestrators", Duration::from_secs(30), || {
            c.replicas_of("orchestrator") == 2
        });
        let advance = || {
            c.spawn_output(&[
                "rollout",
                "advance",
                &i,
                "--batch-size",
                "1",
                "--force",
                "--reason",
                "race",
            ])
        };
        let (a, b) = (advance(), advance());
        (a.wait_with_output().unwrap(), b.wait_with_output().unwrap())
    })
    .await
    .unwrap();
    let mut codes = [a.status.code().unwrap(), b.status.code().unwrap()];
    codes.sort();
    assert_eq!(codes, [0, 4], "{a:?} {b:?}");
    let c = cli.clone();
    let i = id.clone();
    let stages = tokio::task::spawn_blocking(move || {
        wait_stage_waiting(&c, &i, 2);
        status(&c, &i)["rollout"]["stages"]
            .as_array()
            .unwrap()
            .len()
    })
    .await
    .unwrap();
    assert_eq!(stages, 2, "one advance");
    assert_eq!(names.iter().filter(|n| written(n) == 1).count(), 99);
    assert!(names.iter().all(|n| written(n) <= 1));

    let c = cli.clone();
    let verify = tokio::task::spawn_blocking(move || {
        wait_until("every write audited", Duration::from_secs(180), || {
            let run = c.run(&[
                "audit",
                "list",
                "--json",
                "--limit",
                "100000",
                "--rollout",
                &id,
            ]);
            run.code == 0
                && run
                    .json()
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|r| r["record"]["action"] == "override_apply")
                    .count()
                    == 99
        });
        c.run(&["audit", "verify"])
    })
    .await
    .unwrap();
    assert_eq!(verify.code, 0, "{verify:?}");
    tokio::task::spawn_blocking(move || lab.down().unwrap())
        .await
        .unwrap();
}

/// The gates on a branch whose jobs fail: too few jobs at first
/// (inconclusive), then the success rate fails; a normal advance is refused
/// each time, a forced one goes and its audit record holds the gate
/// configuration and the failing evaluation.
#[test]
fn a_bad_branch_fails_its_success_rate_gate_and_only_a_forced_advance_goes() {
    let lab_dir = tempfile::tempdir().unwrap();
    let scenario = Scenario::parse("[defaults]\njobs_per_minute = 120\n", false).unwrap();
    let lab = Lab::start(LabConfig::new(4, lab_dir.path()).scenario(scenario)).unwrap();
    let settings = format!(
        "[workload]\nroot_url = {}\nprovisioner = {}\ninterval = \"1s\"\nactive_window = \"1m\"\n",
        serde_json::to_string(lab.taskcluster_url()).unwrap(),
        serde_json::to_string(&lab.info().taskcluster_provisioner).unwrap(),
    );
    let up = Up::start_with(&settings, lab_env(&lab));
    let cli = &up.cli;
    let names: Vec<String> = lab.hosts().iter().map(|h| h.hostname.clone()).collect();
    common::onboard(cli, &names);
    lab.set_branch_bad("feature_bad", true);
    // Jobs before the rollout make the baseline.
    wait_runs(cli, &names, 4);
    let run = cli.run(&[
        "rollout",
        "create",
        "--target",
        "hostname:lab-*",
        "--canary",
        "2",
        "--change",
        "PUPPET_BRANCH=feature_bad",
        "--gate",
        "window=10m",
        "--gate",
        "min_jobs_per_host=3",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let id = run.stdout.trim().to_string();
    assert_eq!(cli.run(&["rollout", "start", &id]).code, 0);
    wait_stage_waiting(cli, &id, 1);
    let gate = |name: &str| -> Option<String> {
        status(cli, &id)["evaluation"]["gates"]
            .as_array()?
            .iter()
            .find(|g| g["name"] == name)
            .map(|g| g["verdict"].as_str().unwrap_or("").to_string())
    };
    wait_until("a first evaluation", Duration::from_secs(30), || {
        gate("min_jobs_per_host").is_some()
    });
    let early = cli.run(&["rollout", "advance", &id, "--batch-size", "2"]);
    assert_eq!(early.code, 4, "{early:?}");
    assert!(early.stderr.contains("do not all pass"), "{early:?}");

    // Puppet applies the bad branch on the canary; its jobs fail.
    let canary: Vec<String> = status(cli, &id)["rollout"]["stages"][0]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_string())
        .collect();
    for host in &canary {
        let converge = cli.run(&["converge", "host", host]);
        assert_eq!(converge.code, 0, "{converge:?}");
    }
    let mut refresh = vec!["host", "refresh"];
    refresh.extend(canary.iter().map(String::as_str));
    assert_eq!(cli.run(&refresh).code, 0);
    wait_until(
        "the success-rate gate to fail",
        Duration::from_secs(90),
        || gate("tc_success_rate_drop").as_deref() == Some("fail"),
    );
    assert_eq!(gate("applied_min_pct").as_deref(), Some("pass"));
    let refused = cli.run(&["rollout", "advance", &id, "--batch-size", "2"]);
    assert_eq!(refused.code, 4, "{refused:?}");
    assert!(
        refused.stderr.contains("tc_success_rate_drop fail"),
        "{refused:?}"
    );
    let forced = cli.run(&[
        "rollout",
        "advance",
        &id,
        "--batch-size",
        "2",
        "--force",
        "--reason",
        "known flaky suite, accepted",
    ]);
    assert_eq!(forced.code, 0, "{forced:?}");

    let advance = audited(cli, &id, |records| {
        records
            .iter()
            .find(|r| r["action"] == "rollout_advance" && r["outcome"] == "done")
            .cloned()
    });
    assert_eq!(advance["force"], true);
    assert_eq!(advance["reason"], "known flaky suite, accepted");
    assert_eq!(advance["gate_config"]["min_jobs_per_host"], 3.0);
    let failing = advance["gate_evaluation"]["gates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "tc_success_rate_drop")
        .unwrap()
        .clone();
    assert_eq!(failing["verdict"], "fail", "{advance:#}");
    drop(up);
    lab.down().unwrap();
}

/// Blast radius: when too many changed hosts fail, the rollout pauses by
/// itself, says what the failing hosts share, and the pause is audited.
#[test]
fn too_many_failing_hosts_pause_the_rollout_by_itself() {
    let lab_dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(LabConfig::new(4, lab_dir.path())).unwrap();
    lab.set_branch_broken("feature_broken", Some(1)).unwrap();
    let up = Up::start_with("", lab_env(&lab));
    let cli = &up.cli;
    let names: Vec<String> = lab.hosts().iter().map(|h| h.hostname.clone()).collect();
    common::onboard(cli, &names);
    let run = cli.run(&[
        "rollout",
        "create",
        "--target",
        "hostname:lab-*",
        "--canary",
        "3",
        "--change",
        "PUPPET_BRANCH=feature_broken",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let id = run.stdout.trim().to_string();
    assert_eq!(cli.run(&["rollout", "start", &id]).code, 0);
    wait_stage_waiting(cli, &id, 1);
    let canary: Vec<String> = status(cli, &id)["rollout"]["stages"][0]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_string())
        .collect();
    for host in &canary {
        let converge = cli.run(&["converge", "host", host]);
        assert_eq!(
            converge.code, 2,
            "Puppet fails on the broken branch: {converge:?}"
        );
    }
    wait_until(
        "the rollout to pause itself",
        Duration::from_secs(60),
        || status(cli, &id)["rollout"]["state"] == "paused",
    );
    let reason = status(cli, &id)["rollout"]["pause_reason"]
        .as_str()
        .unwrap()
        .to_string();
    // It pauses as soon as the failing fraction passes 25%: with 3 hosts
    // changed, at the first failure the gatekeeper sees (the canary's
    // converges go one after another, so how many it saw varies).
    assert!(reason.starts_with("blast radius: "), "{reason}");
    assert!(reason.contains(" of 3 changed hosts failing"), "{reason}");
    assert!(reason.contains("error: Puppet failed ("), "{reason}");
    assert!(reason.contains("role gecko-t-linux-talos ("), "{reason}");
    // The gatekeeper announces a fresh pause again on its next passes (3 s
    // apart), in case it died before the first announcement: still one
    // record, however many passes look.
    let pauses_now = || -> Vec<Value> {
        let audit = cli.run(&["audit", "list", "--rollout", &id, "--json"]);
        audit
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["record"].clone())
            .filter(|r| r["action"] == "rollout_auto_pause")
            .collect()
    };
    wait_until("the pause audited", Duration::from_secs(30), || {
        !pauses_now().is_empty()
    });
    let watched_since = std::time::Instant::now();
    let mut pauses = pauses_now();
    while watched_since.elapsed() < Duration::from_secs(7) {
        assert_eq!(pauses.len(), 1, "the pause is audited once: {pauses:#?}");
        pauses = pauses_now();
    }
    assert_eq!(pauses.len(), 1, "the pause is audited once: {pauses:#?}");
    let paused = &pauses[0];
    let failing: usize = reason["blast radius: ".len()..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("the reason counts the failing hosts");
    assert!(failing >= 1, "{reason}");
    assert_eq!(
        paused["hosts"].as_array().unwrap().len(),
        failing,
        "the record names every failing host: {paused:#}"
    );
    assert!(
        paused["actor"].is_null(),
        "nobody's token: the gatekeeper did it"
    );
    assert_eq!(paused["reason"], reason.as_str());
    drop(up);
    lab.down().unwrap();
}

/// A good branch: the canary's gates pass, a normal advance takes the rest,
/// the rollout succeeds, and finalize removes every override (each
/// snapshotted) and ends finalized.
#[test]
fn a_good_branch_passes_its_gates_succeeds_and_is_finalized() {
    let lab_dir = tempfile::tempdir().unwrap();
    // Runs canceled or superseded are not the hosts' doing: they must not
    // lower the success rate the gate compares.
    let scenario = Scenario::parse(
        "[defaults]\njobs_per_minute = 120\njob_reasons = { canceled = 0.3, superseded = 0.1 }\n",
        false,
    )
    .unwrap();
    let lab = Lab::start(LabConfig::new(3, lab_dir.path()).scenario(scenario)).unwrap();
    let settings = format!(
        "[workload]\nroot_url = {}\nprovisioner = {}\ninterval = \"1s\"\nactive_window = \"1m\"\n",
        serde_json::to_string(lab.taskcluster_url()).unwrap(),
        serde_json::to_string(&lab.info().taskcluster_provisioner).unwrap(),
    );
    let up = Up::start_with(&settings, lab_env(&lab));
    let cli = &up.cli;
    let names: Vec<String> = lab.hosts().iter().map(|h| h.hostname.clone()).collect();
    common::onboard(cli, &names);
    wait_runs(cli, &names, 3);
    let run = cli.run(&[
        "rollout",
        "create",
        "--target",
        "hostname:lab-*",
        "--canary",
        "1",
        "--change",
        "PUPPET_BRANCH=feature_good",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let id = run.stdout.trim().to_string();
    assert_eq!(cli.run(&["rollout", "start", &id]).code, 0);
    wait_stage_waiting(cli, &id, 1);
    let stage_hosts = |n: usize| -> Vec<String> {
        status(cli, &id)["rollout"]["stages"][n - 1]["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h.as_str().unwrap().to_string())
            .collect()
    };
    for host in stage_hosts(1) {
        assert_eq!(cli.run(&["converge", "host", &host]).code, 0);
    }
    let all_pass = || {
        let s = status(cli, &id);
        s["evaluation"]["stage"] == s["rollout"]["stages"].as_array().unwrap().len()
            && s["evaluation"]["gates"]
                .as_array()
                .is_some_and(|g| g.iter().all(|g| g["verdict"] == "pass"))
    };
    wait_until(
        "every gate of the canary to pass",
        Duration::from_secs(90),
        all_pass,
    );
    let rate_gate = || {
        status(cli, &id)["evaluation"]["gates"]
            .as_array()
            .and_then(|g| {
                g.iter()
                    .find(|g| g["name"] == "tc_success_rate_drop")
                    .cloned()
            })
            .unwrap_or_default()
    };
    // Once some of the canary's runs were canceled or superseded, they are
    // counted apart and the rate stays whole.
    wait_until(
        "runs left out of the canary's rate",
        Duration::from_secs(60),
        || {
            rate_gate()["detail"]
                .as_str()
                .is_some_and(|d| d.contains("not the host's doing, left out"))
        },
    );
    let rate = rate_gate();
    assert!(
        rate["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("success rate 100.0%"))
            && rate["verdict"] == "pass",
        "{rate:#}"
    );
    let evaluation = status(cli, &id)["evaluation"].clone();
    assert!(
        evaluation["baseline"]["not_the_host"].as_u64().unwrap() > 0,
        "{evaluation:#}"
    );
    assert_eq!(
        evaluation["baseline"]["success_rate"], 1.0,
        "{evaluation:#}"
    );
    let shown = cli.run(&["rollout", "status", &id]);
    assert!(shown.stdout.contains("left out ("), "{shown:?}");
    let advance = cli.run(&["rollout", "advance", &id, "--batch-size", "2"]);
    assert_eq!(advance.code, 0, "a normal advance: {advance:?}");
    wait_stage_waiting(cli, &id, 2);
    for host in stage_hosts(2) {
        assert_eq!(cli.run(&["converge", "host", &host]).code, 0);
    }
    wait_until("the rollout to succeed", Duration::from_secs(90), || {
        status(cli, &id)["rollout"]["state"] == "succeeded"
    });

    let dry = cli.run(&["rollout", "finalize", &id, "--all"]);
    assert_eq!(dry.code, 4, "{dry:?}");
    let finalize = cli.run(&["rollout", "finalize", &id, "--all", "--confirm"]);
    assert_eq!(finalize.code, 0, "{finalize:?}");
    wait_until("finalized", Duration::from_secs(60), || {
        status(cli, &id)["rollout"]["state"] == "finalized"
    });
    for name in &names {
        let host = lab.host(name).unwrap();
        assert_eq!(host.file(host.override_path()).unwrap(), None, "{name}");
    }
    let again = cli.run(&["rollout", "rollback", &id, "--confirm", "--reason", "x"]);
    assert_eq!(again.code, 4, "finalize is irreversible: {again:?}");
    let records = audited(cli, &id, |records| {
        let removed = records
            .iter()
            .filter(|r| r["action"] == "override_remove")
            .count();
        let refused = records
            .iter()
            .any(|r| r["action"] == "rollout_rollback" && r["outcome"] == "refused");
        (removed == 3 && refused).then(|| records.to_vec())
    });
    let advance = records
        .iter()
        .find(|r| r["action"] == "rollout_advance" && r["outcome"] == "done")
        .unwrap();
    assert_eq!(advance["force"], false);
    assert!(
        advance["gate_evaluation"]["gates"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["verdict"] == "pass")
    );
    let removals: Vec<&Value> = records
        .iter()
        .filter(|r| r["action"] == "override_remove")
        .collect();
    assert_eq!(removals.len(), 3, "{records:#?}");
    for removal in removals {
        let snapshot = removal["snapshots"][0].as_str().unwrap();
        let kept = cli.run(&["audit", "snapshot", snapshot]);
        assert_eq!(kept.stdout, "PUPPET_BRANCH=feature_good\n");
    }

    // The observation phase: the branch the hosts return to turns bad; the
    // rollout is marked with the regression, and it is audited.
    lab.set_branch_bad("master", true);
    for name in &names {
        assert_eq!(cli.run(&["converge", "host", name]).code, 0);
    }
    wait_until("the regression to be seen", Duration::from_secs(90), || {
        status(cli, &id)["rollout"]["pause_reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("post-finalize regression"))
    });
    assert_eq!(
        status(cli, &id)["rollout"]["state"],
        "finalized",
        "no override put back"
    );
    wait_until("the regression audited", Duration::from_secs(30), || {
        let audit = cli.run(&["audit", "list", "--rollout", &id, "--json"]);
        audit
            .json()
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["record"]["action"] == "rollout_regression")
    });
    assert!(names.iter().all(|n| {
        let host = lab.host(n).unwrap();
        host.file(host.override_path()).unwrap().is_none()
    }));
    drop(up);
    lab.down().unwrap();
}

/// A replica that recorded a host's result and died before announcing it:
/// the next delivery of the job does not write the host again, and still
/// gets the write into the audit log.
#[tokio::test(flavor = "multi_thread")]
async fn a_result_recorded_by_a_replica_that_died_unannounced_is_still_audited() {
    use fleetroll_bus::codec;
    use fleetroll_bus::messages::rollout::{ApplyOutcome, HostApply};
    use fleetroll_bus::token::Role;
    use fleetroll_bus::topology;

    let lab_dir = tempfile::tempdir().unwrap();
    let lab = tokio::task::spawn_blocking({
        let dir = lab_dir.path().to_path_buf();
        move || Lab::start(LabConfig::new(1, &dir)).unwrap()
    })
    .await
    .unwrap();
    let host = lab.hosts()[0].hostname.clone();
    let up = Up::start_with("", lab_env(&lab));
    let cli = up.cli.clone();
    let (c, h) = (cli.clone(), host.clone());
    let id = tokio::task::spawn_blocking(move || {
        assert_eq!(c.run(&["inventory", "seed", "add", &h]).code, 0);
        assert_eq!(c.run(&["inventory", "refresh", "--seed", "all"]).code, 0);
        let create = c.run(&[
            "rollout",
            "create",
            "--target",
            &format!("hostname:{h}"),
            "--canary",
            "1",
            "--change",
            "PUPPET_BRANCH=feature_xyz",
        ]);
        assert_eq!(create.code, 0, "{create:?}");
        create.stdout.trim().to_string()
    })
    .await
    .unwrap();

    // What the dead replica left: the result, and no event.
    let worker = up.bus_as(Role::Worker).await;
    let left = HostApply {
        rollout: id.clone(),
        stage: 1,
        hostname: host.clone(),
        outcome: ApplyOutcome::Applied { snapshot: None },
        at: time::OffsetDateTime::now_utc(),
        by: "orchestrator-that-died".into(),
        attempt: 0,
    };
    worker
        .kv(&topology::ROLLOUT_HOSTS)
        .await
        .unwrap()
        .create(
            topology::rollout_host_key(&id, &host),
            codec::to_cbor(&left).into(),
        )
        .await
        .unwrap();

    let (c, i) = (cli.clone(), id.clone());
    let records = tokio::task::spawn_blocking(move || {
        let start = c.run(&["rollout", "start", &i]);
        assert_eq!(start.code, 0, "{start:?}");
        wait_stage_waiting(&c, &i, 1);
        let mut records = Vec::new();
        wait_until("the write audited", Duration::from_secs(60), || {
            let run = c.run(&["audit", "list", "--rollout", &i, "--json"]);
            records = run
                .json()
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["record"].clone())
                .collect::<Vec<Value>>();
            records.iter().any(|r| r["action"] == "override_apply")
        });
        records
    })
    .await
    .unwrap();
    let start = records
        .iter()
        .find(|r| r["action"] == "rollout_start")
        .expect("the start is audited");
    let write = records
        .iter()
        .find(|r| r["action"] == "override_apply")
        .unwrap();
    assert_eq!(write["hosts"], serde_json::json!([host]));
    assert_eq!(write["actor"], start["actor"], "{write:#}");
    assert_eq!(
        lab.host(&host).unwrap().override_writes().unwrap(),
        0,
        "the recorded result stands: the host is not written again"
    );
    tokio::task::spawn_blocking(move || lab.down().unwrap())
        .await
        .unwrap();
}

/// Creates a rollout of CHANGE over `target` and starts it; its id.
fn started(cli: &Cli, target: &str, canary: &str) -> String {
    let id = common::create_rollout(cli, target, canary);
    let start = cli.run(&["rollout", "start", &id]);
    assert_eq!(start.code, 0, "{start:?}");
    id
}

/// A write that landed and whose reply was lost (the host went silent
/// right after the rename) has no result when the operator rolls back; the
/// rollback removes the override all the same (its own reply lost too),
/// and the rollout is rolled back only once a probe shows the host clean.
#[test]
fn a_write_whose_reply_was_lost_is_removed_by_the_rollback() {
    let lab_dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(LabConfig::new(2, lab_dir.path())).unwrap();
    let up = Up::start_with("[ssh]\nexec_timeout = \"3s\"\n", lab_env(&lab));
    let cli = &up.cli;
    let names: Vec<String> = lab.hosts().iter().map(|h| h.hostname.clone()).collect();
    common::onboard(cli, &names);
    let silent = lab.host(&names[0]).unwrap();
    silent.set_lose_reply_after_override_change(true).unwrap();

    let id = started(cli, &format!("hostname:{}", names[0]), "1");
    wait_until("the write to land", Duration::from_secs(30), || {
        silent.override_writes().unwrap() == 1
    });
    let rollback = cli.run(&[
        "rollout",
        "rollback",
        &id,
        "--remove-overrides",
        "--confirm",
        "--reason",
        "the canary went silent",
    ]);
    assert_eq!(rollback.code, 0, "{rollback:?}");
    wait_until("rolled back", Duration::from_secs(90), || {
        status(cli, &id)["rollout"]["state"] == "rolled_back"
    });
    assert_eq!(
        silent.file(silent.override_path()).unwrap(),
        None,
        "the override is gone from the host"
    );
    let audit = cli
        .run(&["audit", "list", "--rollout", &id, "--json"])
        .json();
    let removal = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["record"]["action"] == "override_remove")
        .unwrap_or_else(|| panic!("the removal is audited: {audit:#}"));
    assert_eq!(removal["record"]["outcome"], "done", "{removal:#}");
    assert_eq!(
        removal["record"]["snapshots"].as_array().map(Vec::len),
        Some(1),
        "the snapshot before the removal: {removal:#}"
    );
}

/// A host whose write failed (sudo refused) keeps a rollout from having
/// succeeded, and `rollout status` says so, naming it and why; once the
/// host is mended, `rollout retry` writes it, and both tries are audited.
#[test]
fn a_failed_host_is_named_and_retried() {
    let lab_dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(LabConfig::new(2, lab_dir.path())).unwrap();
    let up = Up::start_with("", lab_env(&lab));
    let cli = &up.cli;
    let names: Vec<String> = lab.hosts().iter().map(|h| h.hostname.clone()).collect();
    common::onboard(cli, &names);
    let broken = lab.host(&names[0]).unwrap();
    broken.set_sudo(false).unwrap();

    let id = started(cli, "hostname:lab-*", "2");
    wait_stage_waiting(cli, &id, 1);
    let mut shown = String::new();
    wait_until("the failed host named", Duration::from_secs(60), || {
        shown = cli.run(&["rollout", "status", &id]).stdout;
        shown.contains("not succeeded: ")
    });
    let line = shown
        .lines()
        .find(|l| l.contains(&names[0]) && l.contains("could not be written"))
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(line.contains("sudo"), "{line}");
    assert!(line.contains("fleetroll rollout retry"), "{line}");

    let nothing = cli.run(&["rollout", "retry", &id, "--host", &names[1]]);
    assert_eq!(nothing.code, 4, "{} was written: {nothing:?}", names[1]);

    broken.set_sudo(true).unwrap();
    let retry = cli.run(&["rollout", "retry", &id]);
    assert_eq!(retry.code, 0, "{retry:?}");
    assert!(retry.stdout.contains(&names[0]), "{retry:?}");
    wait_until("the retried write", Duration::from_secs(60), || {
        broken.file(broken.override_path()).unwrap().as_deref() == Some(CHANGE)
    });
    wait_stage_waiting(cli, &id, 1);
    wait_until("both tries audited", Duration::from_secs(30), || {
        let audit = cli
            .run(&["audit", "list", "--host", &names[0], "--json"])
            .json();
        let outcomes: Vec<String> = audit
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["record"]["action"] == "override_apply")
            .map(|r| r["record"]["outcome"].as_str().unwrap().to_string())
            .collect();
        let retried = audit
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["record"]["action"] == "rollout_retry");
        outcomes == ["failed", "done"] && retried
    });
}
