//! `fleetroll monitor` in a real terminal (tmux) against a mesh that has
//! probed a lab: rows appear, a filter narrows them, a bad filter is
//! refused with the server's message, the overrides toggle, help, and `q`
//! leaves the terminal as it found it with exit status 0.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{Up, bin, lab_env};
use fleetroll_lab::{Lab, LabConfig, Scenario};

/// A tmux server of this test's own (its own socket), killed when the test
/// lets go of it, panics included.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts a detached 200x50 session `mon` running `command`, with no
    /// settings but tmux's own.
    fn start(config_dir: &Path, command: &str) -> Tmux {
        let socket = format!(
            "fleetroll-monitor-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let config = config_dir.join("tmux.conf");
        std::fs::write(&config, "").unwrap();
        let tmux = Tmux { socket };
        let mut start = Command::new("tmux");
        start
            .arg("-L")
            .arg(&tmux.socket)
            .arg("-f")
            .arg(&config)
            .args(["new-session", "-d", "-x", "200", "-y", "50", "-s", "mon"])
            .arg(command);
        // The monitor finds the mesh through its data dir only, as the
        // harness's CLI runs do.
        for var in [
            "TMUX",
            "FLEETROLL_TOKEN",
            "FLEETROLL_TOKEN_FILE",
            "FLEETROLL_NATS_URL",
            "FLEETROLL_NATS_CREDENTIALS",
            "FLEETROLL_DATA_DIR",
            "FLEETROLL_CONFIG",
        ] {
            start.env_remove(var);
        }
        let out = start.output().expect("running tmux");
        assert!(out.status.success(), "tmux new-session: {}", text(&out));
        tmux
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("running tmux")
    }

    /// Named keys (`Enter`, `C-u`, `/`).
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "mon"];
        args.extend_from_slice(keys);
        let out = self.run(&args);
        assert!(out.status.success(), "send-keys: {}", text(&out));
    }

    /// Text typed as is.
    fn type_text(&self, text_: &str) {
        let out = self.run(&["send-keys", "-t", "mon", "-l", text_]);
        assert!(out.status.success(), "send-keys -l: {}", text(&out));
    }

    fn screen(&self) -> String {
        text(&self.run(&["capture-pane", "-p", "-t", "mon"]))
    }

    fn format(&self, format: &str) -> String {
        text(&self.run(&["display-message", "-p", "-t", "mon", format]))
            .trim()
            .to_string()
    }

    /// Waits until the screen satisfies `check`; returns that screen.
    fn wait_screen(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if check(&screen) {
                return screen;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "timed out waiting for {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The screen line showing `host`'s row, if any: rows start with the
/// hostname, other lines never do.
fn row_line(screen: &str, host: &str) -> Option<usize> {
    screen.lines().position(|l| l.starts_with(host))
}

fn rows_shown<'a>(screen: &str, hosts: &'a [String]) -> Vec<&'a str> {
    hosts
        .iter()
        .filter(|h| row_line(screen, h).is_some())
        .map(String::as_str)
        .collect()
}

#[test]
fn the_monitor_shows_filters_and_quits_cleanly() {
    let lab_dir = tempfile::tempdir().unwrap();
    let scenario = Scenario::parse(
        "[[hosts]]\nnames = [\"lab-0002\"]\noverride = \"PUPPET_BRANCH=feature_x\\n\"\n",
        false,
    )
    .unwrap();
    let lab = Lab::start(LabConfig::new(4, lab_dir.path()).scenario(scenario)).unwrap();
    let up = Up::start_with("", lab_env(&lab));
    let cli = &up.cli;
    let hosts: Vec<String> = lab.hosts().iter().map(|h| h.hostname.clone()).collect();
    let overridden = hosts[1].clone();
    common::onboard(cli, &hosts);

    // The shell says how the monitor exited, on the terminal the monitor
    // handed back, and stays so the test can read it.
    let command = format!(
        "'{}' --data-dir '{}' monitor; echo \"monitor exited with $?\"; exec sleep 600",
        bin(),
        up.dir().display()
    );
    let tmux = Tmux::start(lab_dir.path(), &command);

    // Every host, in name order, with what was probed.
    let screen = tmux.wait_screen("every lab host's row", |s| {
        rows_shown(s, &hosts).len() == hosts.len()
    });
    assert!(screen.contains("4 host(s)"), "{screen}");
    assert!(screen.contains("fetched "), "{screen}");
    let lines: Vec<&str> = screen.lines().collect();
    let line_of = |s: &str, h: &str| row_line(s, h).unwrap_or(usize::MAX);
    assert!(
        line_of(&screen, &hosts[0]) < line_of(&screen, &hosts[3]),
        "{screen}"
    );
    let override_row = lines[line_of(&screen, &overridden)];
    assert!(override_row.contains("feature_x@"), "{screen}");
    assert!(override_row.contains(" ago"), "the Puppet run: {screen}");
    assert!(override_row.contains("gecko"), "{screen}");
    let plain_row = lines[line_of(&screen, &hosts[0])];
    assert!(!plain_row.contains("feature_x"), "{screen}");
    assert!(plain_row.contains("yes"), "applied: {screen}");

    // `r` reverses the order.
    tmux.keys(&["r"]);
    tmux.wait_screen("the rows in reverse", |s| {
        rows_shown(s, &hosts).len() == hosts.len() && line_of(s, &hosts[3]) < line_of(s, &hosts[0])
    });
    tmux.keys(&["r"]);

    // A filter in the query language narrows the table to one host.
    tmux.keys(&["/"]);
    tmux.type_text(&format!("hostname:\"{}\"", hosts[0]));
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_screen("only the filtered host", |s| {
        rows_shown(s, &hosts) == [hosts[0].as_str()] && s.contains("1 host(s)")
    });
    assert!(screen.contains("filter: hostname:"), "{screen}");

    // A bad one is refused with the server's message, and the filter stays.
    tmux.keys(&["/", "C-u"]);
    tmux.type_text("role:(");
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_screen("the refused filter's message", |s| s.contains("refused"));
    assert!(
        screen.contains("position"),
        "the server's message: {screen}"
    );
    assert_eq!(rows_shown(&screen, &hosts), [hosts[0].as_str()], "{screen}");

    // No filter: every host again.
    tmux.keys(&["/", "C-u", "Enter"]);
    tmux.wait_screen("every host without a filter", |s| {
        rows_shown(s, &hosts).len() == hosts.len()
    });

    // Overrides only: the one host with an override.
    tmux.keys(&["o"]);
    let screen = tmux.wait_screen("only the overridden host", |s| {
        rows_shown(s, &hosts) == [overridden.as_str()]
    });
    assert!(screen.contains("overrides only"), "{screen}");

    // Help, over the table; any key closes it.
    tmux.keys(&["?"]);
    let screen = tmux.wait_screen("the help screen", |s| s.contains("fleetroll monitor: help"));
    assert!(screen.contains("quit"), "{screen}");
    tmux.keys(&["Escape"]);
    tmux.wait_screen("the help closed", |s| {
        !s.contains("fleetroll monitor: help")
    });

    // `q`: the process ends with 0, and the terminal is out of the
    // alternate screen, showing what the shell printed after it.
    tmux.keys(&["q"]);
    let screen = tmux.wait_screen("the monitor's exit", |s| s.contains("monitor exited"));
    assert!(screen.contains("monitor exited with 0"), "{screen}");
    assert!(!screen.contains("HOST"), "the table is gone: {screen}");
    assert_eq!(tmux.format("#{alternate_on}"), "0", "{screen}");
}
