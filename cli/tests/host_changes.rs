//! Changing hosts on the lab: overrides written atomically, verified and
//! snapshotted, each host written once however often it is asked; and
//! converge and reboot, explicit and audited.

mod common;

use std::time::Duration;

use common::{Bare, Up, lab_env, wait_until};
use fleetroll_bus::audit_log;
use fleetroll_lab::{Lab, LabConfig, Scenario};
use fleetroll_orchestrator::overrides::{self, Change, MAX_OVERRIDE_BYTES, OverrideError};
use fleetroll_ssh::SshSettings;
use fleetroll_ssh::pool::Pool;

const TRICKY: &[u8] = b"PUPPET_BRANCH=\"$(reboot)\"; `id` 'quoted' \\ | & > /tmp/x\n";

fn scenario() -> Scenario {
    Scenario::parse(
        r#"
[[hosts]]
names = ["lab-0002"]
override = "PUPPET_BRANCH=old_experiment\n"
[[hosts]]
names = ["lab-0003"]
sudo = false
[[hosts]]
names = ["lab-0004"]
os = "macos"
[[hosts]]
names = ["lab-0005"]
reboot_duration = "2s"
"#,
        false,
    )
    .unwrap()
}

fn ssh(lab: &Lab) -> SshSettings {
    SshSettings {
        user: lab.ssh_user().to_string(),
        port: lab.ssh_port(),
        identity_file: Some(lab.identity_file().to_path_buf()),
        ..SshSettings::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn overrides_are_written_once_verified_and_snapshotted_first() {
    let lab_dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(LabConfig::new(5, lab_dir.path()).scenario(scenario())).unwrap();
    let bare = Bare::start().await;
    let bus = common::worker_bus(&bare.url()).await;
    let pool = Pool::new(bus.clone(), ssh(&lab));
    let name = |n: usize| lab.hosts()[n - 1].hostname.clone();
    let host = |n: usize| lab.host(&name(n)).unwrap();
    let snapshot = |id: String| {
        let bus = bus.clone();
        async move { audit_log::load_snapshot(&bus, &id).await.unwrap().unwrap() }
    };

    // A host without an override: its absence is snapshotted, then the
    // contents are written exactly, once.
    let change = overrides::apply(&pool, &bus, &name(1), TRICKY, "job-1")
        .await
        .unwrap();
    let Change::Changed { snapshot: id } = change else {
        panic!("{change:?}")
    };
    let before = snapshot(id.clone()).await;
    assert_eq!(before.hostname, name(1));
    assert_eq!(before.occasion, "before apply");
    assert_eq!(before.content(), None, "there was no override");
    let path = host(1).override_path();
    assert_eq!(host(1).file(path).unwrap().as_deref(), Some(TRICKY));
    // Another try of the same job (its reply lost, say) writes nothing and
    // finds the snapshot the first one took; another job's finds none.
    assert_eq!(
        overrides::apply(&pool, &bus, &name(1), TRICKY, "job-1")
            .await
            .unwrap(),
        Change::AlreadyThere { snapshot: Some(id) }
    );
    assert_eq!(
        overrides::apply(&pool, &bus, &name(1), TRICKY, "job-2")
            .await
            .unwrap(),
        Change::AlreadyThere { snapshot: None }
    );
    assert_eq!(host(1).override_writes().unwrap(), 1, "written once");
    assert_eq!(
        overrides::read(&pool, &name(1)).await.unwrap().as_deref(),
        Some(TRICKY)
    );

    // A host with someone's override: its contents are kept, then replaced;
    // removing keeps the new ones, and a second removal changes nothing.
    let Change::Changed { snapshot: id } =
        overrides::apply(&pool, &bus, &name(2), b"PUPPET_BRANCH=new\n", "job-3")
            .await
            .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        snapshot(id).await.content().as_deref(),
        Some(&b"PUPPET_BRANCH=old_experiment\n"[..])
    );
    let Change::Changed { snapshot: id } = overrides::remove(&pool, &bus, &name(2), "job-4")
        .await
        .unwrap()
    else {
        panic!()
    };
    let removed = snapshot(id).await;
    assert_eq!(removed.occasion, "before removal");
    assert_eq!(
        removed.content().as_deref(),
        Some(&b"PUPPET_BRANCH=new\n"[..])
    );
    assert_eq!(host(2).file(host(2).override_path()).unwrap(), None);
    assert_eq!(
        overrides::remove(&pool, &bus, &name(2), "job-5")
            .await
            .unwrap(),
        Change::AlreadyThere { snapshot: None }
    );

    // Without sudo nothing is written, and the error says why.
    let refused = overrides::apply(&pool, &bus, &name(3), b"X=1\n", "job-6").await;
    assert!(
        matches!(refused, Err(OverrideError::SudoRefused(_))),
        "{refused:?}"
    );
    assert_eq!(host(3).file(host(3).override_path()).unwrap(), None);

    // A macOS host keeps its override elsewhere.
    overrides::apply(&pool, &bus, &name(4), b"PUPPET_BRANCH=mac\n", "job-7")
        .await
        .unwrap();
    assert_eq!(
        host(4).override_path(),
        "/opt/puppet_environments/ronin_settings"
    );
    assert_eq!(
        host(4).file(host(4).override_path()).unwrap().as_deref(),
        Some(&b"PUPPET_BRANCH=mac\n"[..])
    );

    // Too large: refused before anything is read or written.
    let huge = vec![b'x'; MAX_OVERRIDE_BYTES + 1];
    assert!(matches!(
        overrides::apply(&pool, &bus, &name(1), &huge, "job-8").await,
        Err(OverrideError::TooLarge(_))
    ));
    assert_eq!(host(1).override_writes().unwrap(), 1);

    // Someone's override larger than a command's output once was (68 KiB):
    // snapshotted whole before it is replaced, not cut.
    let big: Vec<u8> = (0..200 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    host(5).set_override(Some(&big)).unwrap();
    let Change::Changed { snapshot: id } =
        overrides::apply(&pool, &bus, &name(5), b"PUPPET_BRANCH=x\n", "job-9")
            .await
            .unwrap()
    else {
        panic!()
    };
    assert_eq!(snapshot(id).await.content(), Some(big));

    // One larger than a snapshot holds on this mesh: left as it is, with
    // an error that names its size; removing is refused alike.
    let most = overrides::snapshot_limit(&bus);
    let huge_file = vec![b'y'; most + 1];
    host(5).set_override(Some(&huge_file)).unwrap();
    let writes = host(5).override_writes().unwrap();
    for refused in [
        overrides::apply(&pool, &bus, &name(5), b"PUPPET_BRANCH=x\n", "job-10").await,
        overrides::remove(&pool, &bus, &name(5), "job-11").await,
    ] {
        let Err(e @ OverrideError::TooLargeToSnapshot { .. }) = refused else {
            panic!("{refused:?}")
        };
        assert!(
            e.to_string().contains(&format!("{} bytes", most + 1)),
            "{e}"
        );
    }
    assert_eq!(host(5).override_writes().unwrap(), writes, "left untouched");
    assert_eq!(
        host(5)
            .file(host(5).override_path())
            .unwrap()
            .map(|f| f.len()),
        Some(most + 1)
    );
    drop(pool);
    lab.down().unwrap();
}

#[test]
fn converge_streams_its_output_and_reboot_waits_for_the_host() {
    let lab_dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(LabConfig::new(5, lab_dir.path()).scenario(scenario())).unwrap();
    let up = Up::start_with("", lab_env(&lab));
    let cli = &up.cli;
    let target = lab.hosts()[4].hostname.clone();
    assert_eq!(cli.run(&["inventory", "seed", "add", &target]).code, 0);
    let host = lab.host(&target).unwrap();

    let runs = host.puppet_runs().len();
    let converge = cli.run(&["converge", "host", &target]);
    assert_eq!(converge.code, 0, "{converge:?}");
    assert!(
        converge.stdout.contains("Notice: Applied catalog"),
        "the Puppet run's output: {converge:?}"
    );
    assert_eq!(host.puppet_runs().len(), runs + 1, "one Puppet run");
    // A fresh probe follows, so what Puppet applied shows.
    common::wait_until(
        "a probe after the converge",
        Duration::from_secs(30),
        || {
            let shown = cli.run(&["host", "show", &target, "--json"]);
            shown.code == 0
                && shown.json()["probed_for"]
                    .as_str()
                    .is_some_and(|o| o.starts_with("converge "))
        },
    );

    let dry = cli.run(&["reboot", "host", &target]);
    assert_eq!(dry.code, 4, "{dry:?}");
    assert!(dry.stdout.contains("would reboot"), "{dry:?}");
    assert_eq!(host.status().reboots, 0);
    let reboot = cli.run(&["reboot", "host", &target, "--confirm"]);
    assert_eq!(reboot.code, 0, "{reboot:?}");
    assert!(reboot.stdout.contains("answering again"), "{reboot:?}");
    assert_eq!(host.status().reboots, 1);
    assert!(host.status().reachable);

    let unknown = cli.run(&["converge", "host", "nowhere.example.com"]);
    assert_eq!(unknown.code, 1, "{unknown:?}");
    assert!(
        unknown.stderr.contains("not in the inventory"),
        "{unknown:?}"
    );

    // Both are audited, with the host.
    let actions = || -> Vec<String> {
        let audit = cli.run(&["audit", "list", "--host", &target, "--json"]);
        assert_eq!(audit.code, 0, "{audit:?}");
        audit
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["record"]["action"].as_str().unwrap().to_string())
            .collect()
    };
    wait_until("both audited", Duration::from_secs(30), || {
        actions().len() >= 3
    });
    assert_eq!(actions(), ["seed_add", "host_converge", "host_reboot"]);
    drop(up);
    lab.down().unwrap();
}

/// Text a host controls (its role, its converge output) reaches the
/// operator's terminal with its control characters shown, not obeyed: a
/// host cannot retitle the window or clear the screen. `--json` keeps the
/// text as it is, JSON-escaped.
#[test]
fn text_from_a_host_reaches_the_terminal_escaped() {
    const HOSTILE: &str = "gecko\u{1b}]0;pwned\u{7}_t\u{9b}2J";
    let lab_dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(LabConfig::new(1, lab_dir.path())).unwrap();
    let target = lab.hosts()[0].hostname.clone();
    let host = lab.host(&target).unwrap();
    host.write_file("/etc/puppet_role", format!("{HOSTILE}\n").as_bytes())
        .unwrap();
    let up = Up::start_with(
        "[orchestrator]\nconverge_command = \"printf 'ok\\\\033[2J\\\\033]0;pwned\\\\007\\\\n'\"\n",
        lab_env(&lab),
    );
    let cli = &up.cli;
    common::onboard(cli, std::slice::from_ref(&target));
    let raw = |run: &common::Run| {
        run.stdout
            .chars()
            .chain(run.stderr.chars())
            .filter(|c| c.is_control() && *c != '\n' && *c != '\t')
            .collect::<String>()
    };

    let json = cli.run(&["host", "show", &target, "--json"]);
    assert_eq!(json.json()["role"], HOSTILE, "--json keeps the text");
    for args in [
        vec!["host", "show", target.as_str()],
        vec!["host", "list"],
        vec!["converge", "host", target.as_str()],
    ] {
        let run = cli.run(&args);
        assert_eq!(run.code, 0, "{args:?}: {run:?}");
        assert_eq!(
            raw(&run),
            "",
            "{args:?} printed control characters: {run:?}"
        );
        assert!(run.stdout.contains("pwned"), "{args:?}: {run:?}");
    }
    let listed = cli.run(&["host", "list"]);
    assert!(
        listed.stdout.contains("gecko\\x1b]0;pwned\\x07_t\\u{9b}2J"),
        "{listed:?}"
    );
    let converged = cli.run(&["converge", "host", &target]);
    assert!(
        converged.stdout.contains("ok\\x1b[2J\\x1b]0;pwned\\x07"),
        "{converged:?}"
    );
    drop(up);
    lab.down().unwrap();
}

/// A converge whose replica stalls past the one-second takeover (SIGSTOP,
/// as a NATS election would hold it) is redelivered to the other replica,
/// which finds the first one's lease and does not run it: Puppet runs once.
#[tokio::test(flavor = "multi_thread")]
async fn a_converge_redelivered_while_its_replica_stalls_runs_once() {
    let lab_dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(LabConfig::new(1, lab_dir.path())).unwrap();
    let target = lab.hosts()[0].hostname.clone();
    let host = lab.host(&target).unwrap();
    host.set_puppet_duration(Duration::from_secs(6)).unwrap();
    let mut bare = Bare::start().await;
    bare.cli.env = lab_env(&lab);
    let cli = bare.cli.clone();
    let _prober = cli.spawn(&["worker", "prober"]);
    let mut first = cli.spawn(&["worker", "orchestrator"]);
    let log = bare
        .dir
        .path()
        .join(format!("worker_orchestrator-{}.log", std::process::id()));
    let c = cli.clone();
    let t = target.clone();
    tokio::task::spawn_blocking(move || {
        wait_until(
            "a prober and an orchestrator",
            Duration::from_secs(30),
            || c.replicas_of("prober") == 1 && c.replicas_of("orchestrator") == 1,
        );
        common::onboard(&c, &[t]);
    })
    .await
    .unwrap();
    let runs = host.puppet_runs().len();

    // Puppet has started once the converge's output says so.
    let mut converge = cli.spawn_output(&["converge", "host", &target]);
    let stdout = converge.stdout.take().unwrap();
    let (lines, output) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines.send(line);
        }
    });
    let compiled = output.iter().find(|line| line.contains("Compiled catalog"));
    assert!(compiled.is_some(), "the converge printed no Puppet run");
    let _second = cli.spawn(&["worker", "orchestrator"]);
    let c = cli.clone();
    tokio::task::spawn_blocking(move || {
        wait_until("a second orchestrator", Duration::from_secs(30), || {
            c.replicas_of("orchestrator") == 2
        });
    })
    .await
    .unwrap();
    common::kill(&mut first, libc::SIGSTOP);
    tokio::task::spawn_blocking(move || {
        wait_until(
            "the second replica to find the converge running",
            Duration::from_secs(30),
            || {
                std::fs::read_to_string(&log)
                    .is_ok_and(|l| l.contains("already running on another replica"))
            },
        );
    })
    .await
    .unwrap();
    common::kill(&mut first, libc::SIGCONT);
    let done = tokio::task::spawn_blocking(move || converge.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(done.status.success(), "{done:?}");
    assert!(
        output.iter().any(|line| line.contains("Applied catalog")),
        "the rest of the run's output"
    );
    assert_eq!(host.puppet_runs().len(), runs + 1, "Puppet ran once");
}
