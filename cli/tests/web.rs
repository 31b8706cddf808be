//! The read side for people: the HTTP API against a mesh over a lab, its
//! OpenAPI document under schemathesis, `/metrics`, and the web UI in a real
//! headless Chromium (Debian's, driven over WebDriver by chromedriver).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Cli, Up, lab_env, wait_until};
use fleetroll_lab::{Lab, LabConfig, Scenario};
use serde_json::{Value, json};

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// GET `url`: its status and body.
fn get(url: &str) -> (u16, String) {
    let mut response = agent().get(url).call().expect("the web server answers");
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().unwrap())
}

fn get_json(url: &str) -> (u16, Value) {
    let (status, body) = get(url);
    let value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    (status, value)
}

fn onboard(cli: &Cli, lab: &Lab) -> Vec<String> {
    let names: Vec<String> = lab.hosts().iter().map(|h| h.hostname.clone()).collect();
    common::onboard(cli, &names);
    names
}

/// A Prometheus text exposition, parsed strictly enough to refuse what a
/// scraper would: every sample `name{labels} value`, every `# TYPE` known.
fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            let words: Vec<&str> = comment.split_whitespace().collect();
            match words.first() {
                Some(&"TYPE") => assert!(
                    words.len() == 3
                        && ["counter", "gauge", "summary", "histogram", "untyped"]
                            .contains(&words[2]),
                    "bad TYPE line: {line}"
                ),
                Some(&"HELP") => assert!(words.len() >= 2, "bad HELP line: {line}"),
                _ => panic!("unknown comment: {line}"),
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit()),
            "bad metric name: {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unclosed labels: {line}");
            for pair in series[name_end + 1..series.len() - 1]
                .split("\",")
                .filter(|p| !p.is_empty())
            {
                let (label, quoted) = pair
                    .split_once('=')
                    .unwrap_or_else(|| panic!("bad label: {line}"));
                assert!(quoted.starts_with('"'), "unquoted label value: {line}");
                assert!(
                    label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "bad label: {line}"
                );
            }
        }
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        samples.push((series.to_string(), value));
    }
    samples
}

fn sample(samples: &[(String, f64)], series: &str) -> f64 {
    samples
        .iter()
        .find(|(s, _)| s == series)
        .map_or(0.0, |(_, v)| *v)
}

#[test]
fn the_api_answers_from_the_mesh_and_the_metrics_move_with_probes() {
    let lab_dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(LabConfig::new(3, lab_dir.path())).unwrap();
    let up = Up::start_with("", lab_env(&lab));
    let names = onboard(&up.cli, &lab);
    let web = up.web_url();

    let (status, healthz) = get_json(&format!("{web}healthz"));
    assert_eq!((status, healthz["status"].as_str()), (200, Some("ok")));
    let (status, mesh) = get_json(&format!("{web}api/v1/mesh"));
    assert_eq!(status, 200);
    assert_eq!(mesh["state"], "ok", "{mesh:#}");

    let (status, list) = get_json(&format!("{web}api/v1/hosts"));
    assert_eq!(status, 200, "{list}");
    let listed: Vec<&str> = list["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["hostname"].as_str().unwrap())
        .collect();
    assert_eq!(listed, names.iter().map(String::as_str).collect::<Vec<_>>());
    let (status, one) = get_json(&format!("{web}api/v1/hosts?filter=hostname%3A{}", names[1]));
    assert_eq!(status, 200);
    assert_eq!(one["hosts"].as_array().unwrap().len(), 1, "{one}");
    let (status, bad) = get_json(&format!("{web}api/v1/hosts?filter=role%3A%3A"));
    assert_eq!(status, 400, "{bad}");
    assert!(
        bad["error"].as_str().unwrap().contains("position"),
        "a bad query names the position: {bad}"
    );
    let (status, host) = get_json(&format!("{web}api/v1/hosts/{}", names[0]));
    assert_eq!(
        (status, host["sshable"].as_bool()),
        (200, Some(true)),
        "{host}"
    );
    let (status, _) = get_json(&format!("{web}api/v1/hosts/nowhere.example.com"));
    assert_eq!(status, 404);
    let (status, _) = get_json(&format!("{web}api/v1/rollouts/ro-nothing"));
    assert_eq!(status, 404);
    let (status, overview) = get_json(&format!("{web}api/v1/overview"));
    assert_eq!(status, 200);
    assert_eq!(overview["hosts"], 3);
    assert_eq!(overview["by_state"]["reachable"], 3, "{overview:#}");
    let (status, audit) = get_json(&format!("{web}api/v1/audit?since=1h"));
    assert_eq!(status, 200);
    assert!(
        audit["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["record"]["action"] == "seed_add"),
        "{audit:#}"
    );
    let (status, _) = get_json(&format!("{web}api/v1/audit?since=yesterday"));
    assert_eq!(status, 400);

    // The metrics parse, and count probes as they happen.
    let scrape = || {
        let (status, text) = get(&format!("{web}metrics"));
        assert_eq!(status, 200);
        parse_prometheus(&text)
    };
    let before = scrape();
    let probes = sample(&before, "fleetroll_probes_total{result=\"ok\"}");
    assert!(
        probes >= 3.0,
        "the onboarding probes are counted: {before:?}"
    );
    assert!(sample(&before, "fleetroll_audit_records_total") >= 2.0);
    assert!(
        sample(
            &before,
            "fleetroll_commands_total{worker=\"prober\",verdict=\"done\"}"
        ) >= 1.0
    );
    let refresh = up.cli.run(&["host", "refresh", &names[0]]);
    assert_eq!(refresh.code, 0, "{refresh:?}");
    wait_until("the probe counted", Duration::from_secs(20), || {
        sample(&scrape(), "fleetroll_probes_total{result=\"ok\"}") > probes
    });
    wait_until("hosts by state", Duration::from_secs(20), || {
        sample(&scrape(), "fleetroll_hosts{state=\"reachable\"}") == 3.0
    });
    lab.down().unwrap();
}

#[test]
fn schemathesis_finds_no_response_that_breaks_the_openapi_document() {
    let schemathesis = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/py/bin/schemathesis");
    assert!(
        schemathesis.exists(),
        "schemathesis is missing: `make test` installs it (scripts/setup.sh test)"
    );
    let lab_dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(LabConfig::new(2, lab_dir.path())).unwrap();
    let up = Up::start_with("", lab_env(&lab));
    onboard(&up.cli, &lab);
    let create = up.cli.run(&[
        "rollout",
        "create",
        "--target",
        "hostname:lab-*",
        "--canary",
        "1",
        "--change",
        "PUPPET_BRANCH=feature_xyz",
    ]);
    assert_eq!(create.code, 0, "{create:?}");
    let web = up.web_url();
    let reports = tempfile::tempdir().unwrap();
    // The document as served is valid OpenAPI.
    let (status, document) = get(&format!("{web}api/v1/openapi.json"));
    assert_eq!(status, 200);
    let served = reports.path().join("openapi.json");
    std::fs::write(&served, document).unwrap();
    let validated =
        std::process::Command::new(schemathesis.with_file_name("openapi-spec-validator"))
            .arg(&served)
            .output()
            .unwrap();
    assert!(
        validated.status.success(),
        "{}",
        String::from_utf8_lossy(&validated.stdout)
    );
    // Every check but "a schema-valid request is accepted": a query's
    // grammar is the query language's, which no schema expresses, so a
    // schema-valid string may still be a bad query (a 400 naming the
    // position, as the API test asserts). The event feed never ends, so
    // it is left to the browser test.
    let run = std::process::Command::new(&schemathesis)
        .args(["run", &format!("{web}api/v1/openapi.json")])
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        .args(["--exclude-path", "/api/v1/rollouts/{id}/events"])
        .args(["--max-examples", "25", "--request-timeout", "20"])
        .args([
            "--generation-deterministic",
            "--report",
            "junit",
            "--report-dir",
        ])
        .arg(reports.path())
        .current_dir(reports.path())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "schemathesis found problems:\n{out}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // It did test every operation but the feed, not skip them.
    assert!(out.contains("Tested: 10"), "{out}");
    lab.down().unwrap();
}

/// A WebDriver session on Debian's chromium, through chromedriver: the
/// W3C protocol's few calls this test needs.
struct Browser {
    driver: std::process::Child,
    base: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        Browser::start_with(false)
    }

    /// A browser that takes any certificate (`acceptInsecureCerts`): the
    /// one test that needs it has ureq check the certificate itself.
    fn start_with(accept_insecure_certs: bool) -> Browser {
        for binary in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            assert!(
                Path::new(binary).exists(),
                "{binary} is missing: `make test` installs Debian's chromium and chromium-driver"
            );
        }
        // A free port can be taken by someone else before chromedriver
        // binds it: then it exits, and another port is tried.
        let (driver, server) = (0..5)
            .find_map(|_| {
                let port = common::free_port();
                let mut driver = std::process::Command::new("/usr/bin/chromedriver")
                    .arg(format!("--port={port}"))
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap();
                let server = format!("http://127.0.0.1:{port}");
                let mut exited = false;
                wait_until("chromedriver", Duration::from_secs(20), || {
                    exited = driver.try_wait().unwrap().is_some();
                    exited
                        || agent()
                            .get(&format!("{server}/status"))
                            .call()
                            .is_ok_and(|r| r.status() == 200)
                });
                (!exited).then_some((driver, server))
            })
            .expect("chromedriver would not start");
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,900",
        ];
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let session = post(
            &format!("{server}/session"),
            json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "acceptInsecureCerts": accept_insecure_certs,
                "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}
            }}}),
        );
        let id = session["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {session}"))
            .to_string();
        Browser {
            driver,
            base: format!("{server}/session/{id}"),
            _profile: profile,
        }
    }

    fn go(&self, url: &str) {
        post(&format!("{}/url", self.base), json!({ "url": url }));
    }

    /// Runs `script` in the page and returns what it returns.
    fn eval(&self, script: &str) -> Value {
        post(
            &format!("{}/execute/sync", self.base),
            json!({"script": script, "args": []}),
        )["value"]
            .clone()
    }

    fn count(&self, css: &str) -> u64 {
        self.eval(&format!(
            "return document.querySelectorAll({}).length",
            json!(css)
        ))
        .as_u64()
        .unwrap_or(0)
    }

    fn text(&self, css: &str) -> String {
        self.eval(&format!(
            "const e = document.querySelector({}); return e ? e.innerText : ''",
            json!(css)
        ))
        .as_str()
        .unwrap_or("")
        .to_string()
    }

    /// Types into the element as a person would, then presses Enter.
    fn type_and_enter(&self, css: &str, text: &str) {
        let found = post(
            &format!("{}/element", self.base),
            json!({"using": "css selector", "value": css}),
        );
        let element = found["value"]
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no {css}: {found}"))
            .to_string();
        post(&format!("{}/element/{element}/clear", self.base), json!({}));
        post(
            &format!("{}/element/{element}/value", self.base),
            json!({ "text": format!("{text}\u{E007}") }),
        );
    }

    /// The page's cookie `name` as the browser keeps it (its `secure`
    /// flag included); null when there is none.
    fn cookie(&self, name: &str) -> Value {
        agent()
            .get(&format!("{}/cookie/{name}", self.base))
            .call()
            .unwrap()
            .body_mut()
            .read_json::<Value>()
            .unwrap()["value"]
            .clone()
    }

    fn resize(&self, width: u32, height: u32) {
        post(
            &format!("{}/window/rect", self.base),
            json!({ "width": width, "height": height }),
        );
    }

    fn screenshot(&self, path: &Path) {
        use base64::Engine as _;
        let shot = agent()
            .get(&format!("{}/screenshot", self.base))
            .call()
            .unwrap()
            .body_mut()
            .read_json::<Value>()
            .unwrap();
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["value"].as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = agent().delete(&self.base).call();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn post(url: &str, body: Value) -> Value {
    agent()
        .post(url)
        .send_json(&body)
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap()
}

/// Where the UI test keeps its screenshots: `target/web-ui/`.
fn artefacts() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("web-ui");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ui_in_headless_chromium_lists_filters_follows_a_rollout_and_warns_of_a_missing_worker()
{
    let lab_dir = tempfile::tempdir().unwrap();
    let scenario = Scenario::parse(
        "[[hosts]]\nnames = [\"lab-0004\"]\noverride = \"PUPPET_BRANCH=someone_else\\n\"\n",
        false,
    )
    .unwrap();
    let lab = tokio::task::spawn_blocking({
        let dir = lab_dir.path().to_path_buf();
        move || Lab::start(LabConfig::new(4, &dir).scenario(scenario)).unwrap()
    })
    .await
    .unwrap();
    // Workers as their own processes, so that one kind can be stopped.
    let mut bare = common::Bare::start().await;
    bare.cli.env = lab_env(&lab);
    std::fs::write(
        bare.dir.path().join("fleetroll.toml"),
        format!(
            "[workload]\nroot_url = {}\ninterval = \"1s\"\n",
            serde_json::to_string(lab.taskcluster_url()).unwrap()
        ),
    )
    .unwrap();
    lab.host("lab-0002")
        .unwrap()
        .quarantine(
            Some(std::time::SystemTime::now() + Duration::from_secs(7200)),
            Some("fan failure, ticket 4711"),
        )
        .unwrap();
    let cli = bare.cli.clone();
    let _orchestrator = cli.spawn(&["worker", "orchestrator"]);
    let _auditor = cli.spawn(&["worker", "auditor"]);
    let mut gatekeeper = cli.spawn(&["worker", "gatekeeper"]);
    // Readers must show a token, on loopback too.
    let _serve = cli.spawn(&[
        "serve",
        "--web-listen",
        "127.0.0.1:0",
        "--web-require-token",
    ]);
    let prober_args = ["worker", "prober", "--metrics-listen", "127.0.0.1:0"];
    let _prober = cli.spawn(&prober_args);
    let prober_log = cli.log_of(&prober_args);
    let data_dir = bare.dir.path().to_path_buf();
    let c = cli.clone();
    let (web, names, id, lab) = tokio::task::spawn_blocking(move || {
        wait_until("every worker kind", Duration::from_secs(30), || {
            c.live_replicas()
                .is_some_and(|l| l.len() == 4 && l.iter().all(|(_, n)| *n >= 1))
        });
        wait_until("serve's address", Duration::from_secs(30), || {
            data_dir.join("web.url").exists()
        });
        let web = std::fs::read_to_string(data_dir.join("web.url")).unwrap();
        let names = onboard(&c, &lab);
        let create = c.run(&[
            "rollout",
            "create",
            "--target",
            "hostname:lab-*",
            "--canary",
            "1",
            "--change",
            "PUPPET_BRANCH=feature_xyz",
            "--skip",
            &names[3],
        ]);
        assert_eq!(create.code, 0, "{create:?}");
        let id = create.stdout.trim().to_string();
        // The prober process counts its probes on its own /metrics, where
        // it says it serves them.
        let metrics = std::fs::read_to_string(&prober_log)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("metrics: ").map(str::to_string))
            .expect("the prober names its metrics address");
        let (status, text) = get(&metrics);
        assert_eq!(status, 200);
        let probes = sample(
            &parse_prometheus(&text),
            "fleetroll_probes_total{result=\"ok\"}",
        );
        assert!(probes >= 4.0, "{text}");
        (web, names, id, lab)
    })
    .await
    .unwrap();

    // Without a token, or with a forged one, the API refuses; a readonly
    // token reads.
    let issue = cli.run(&["auth", "issue", "--actor", "oncall", "--role", "readonly"]);
    assert_eq!(issue.code, 0, "{issue:?}");
    let token = issue.stdout.trim().to_string();
    let hosts_url = format!("{web}api/v1/hosts");
    let (status, refused) = get_json(&hosts_url);
    assert_eq!(status, 401, "{refused}");
    let with = |token: &str| {
        agent()
            .get(&hosts_url)
            .header("Authorization", &format!("Bearer {token}"))
            .call()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(with(&format!("{token}x")), 401);
    assert_eq!(with(&token), 200);

    let shots = artefacts();
    let c = cli.clone();
    let names_ = names.clone();
    let id_ = id.clone();
    let browser = tokio::task::spawn_blocking(move || {
        let browser = Browser::start();
        // The page asks for a token first, and keeps it.
        browser.go(&format!("{web}#/hosts"));
        wait_until("the token form", Duration::from_secs(30), || {
            browser.count("#token-form") == 1
        });
        browser.type_and_enter("#token-form input", &token);
        // The host table shows the lab's hosts, and a filter narrows it.
        wait_until("the host table", Duration::from_secs(30), || {
            browser.count("#hosts-table tbody tr") == 4
        });
        let table = browser.text("#hosts-table");
        for name in &names_ {
            assert!(table.contains(name.as_str()), "{name} not shown: {table}");
        }
        browser.screenshot(&shots.join("hosts.png"));
        // On a phone's width the page itself does not scroll sideways (the
        // table scrolls inside it).
        browser.resize(390, 844);
        let overflow = browser.eval(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
        );
        assert!(
            overflow.as_i64().unwrap_or(1) <= 0,
            "the page is wider than a phone: {overflow}"
        );
        browser.screenshot(&shots.join("hosts-phone.png"));
        browser.resize(1280, 900);
        browser.type_and_enter("#filter", "override_present:true");
        wait_until("the filtered table", Duration::from_secs(30), || {
            browser.count("#hosts-table tbody tr") == 1
        });
        assert!(browser.text("#hosts-table").contains("lab-0004"));

        // A host's page says which pool it works in and why it is
        // quarantined.
        let quarantined = names_.iter().find(|n| n.starts_with("lab-0002")).unwrap();
        let page = format!("{web}#/hosts/{quarantined}");
        browser.go(&page);
        // The page shows what was known when it loaded: it is loaded again
        // until the workload sweep has seen the quarantine.
        wait_until(
            "the quarantine on the host page",
            Duration::from_secs(30),
            || {
                let rendered = browser.count("#host-detail") == 1;
                let shown = rendered
                    && browser
                        .text("#host-detail")
                        .contains("fan failure, ticket 4711");
                if rendered && !shown {
                    browser.go(&format!("{web}#/hosts"));
                    browser.go(&page);
                }
                shown
            },
        );
        let detail = browser.text("#host-detail");
        assert!(detail.contains("named by the role's name"), "{detail}");

        // A rollout's page shows a new event without a reload.
        browser.go(&format!("{web}#/rollouts/{id_}"));
        wait_until("the live feed", Duration::from_secs(30), || {
            browser.text("#feed-state").contains("following live")
        });
        let marker = browser.eval("window.notReloaded = 42; return window.notReloaded");
        assert_eq!(marker, 42);
        let start = c.run(&["rollout", "start", &id_]);
        assert_eq!(start.code, 0, "{start:?}");
        wait_until(
            "the canary's events on the page",
            Duration::from_secs(60),
            || {
                let events = browser.text("#events");
                events.contains("stage 1 applying") && events.contains(": applied")
            },
        );
        assert_eq!(
            browser.eval("return window.notReloaded"),
            42,
            "the page was not reloaded"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !browser.text("#stages").contains("applied") {
            assert!(
                std::time::Instant::now() < deadline,
                "the stage's host never shown applied: {}",
                browser.text("#view")
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        browser.screenshot(&shots.join("rollout.png"));
        browser
    })
    .await
    .unwrap();

    // With no gatekeeper alive, the banner says so.
    common::kill(&mut gatekeeper.0, libc::SIGKILL);
    let shots = artefacts();
    tokio::task::spawn_blocking(move || {
        wait_until("the banner", Duration::from_secs(60), || {
            browser.eval("return !document.getElementById('banner').hidden") == true
                && browser
                    .text("#banner")
                    .contains("no live gatekeeper replica")
        });
        browser.screenshot(&shots.join("banner.png"));
        drop(browser);
        lab.down().unwrap();
    })
    .await
    .unwrap();
    assert!(artefacts().join("banner.png").exists());
    drop(bare);
}

/// A GET over a raw connection, with the `Host` and token given: its
/// status, and the connection left open (a live feed keeps going).
fn raw_get(web: &str, path: &str, host: &str, token: Option<&str>) -> (u16, std::net::TcpStream) {
    use std::io::{BufRead, Write};
    let addr = web
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}\r\n").unwrap();
    let mut status = String::new();
    std::io::BufReader::new(stream.try_clone().unwrap())
        .read_line(&mut status)
        .unwrap();
    let code = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {status:?}"));
    (code, stream)
}

/// The web server answers only for its own names (a DNS-rebinding page
/// names another), takes only readonly tokens where it asks for one,
/// `/metrics` included, and keeps a bounded number of live feeds open.
#[test]
fn the_web_server_answers_its_own_names_readonly_tokens_and_bounded_feeds() {
    let lab_dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(LabConfig::new(1, lab_dir.path())).unwrap();
    let up = Up::start_with("", lab_env(&lab));
    let cli = &up.cli;
    let web = up.web_url();
    let port = web
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let (rebound, _) = raw_get(
        &web,
        "/api/v1/overview",
        &format!("evil.example.com:{port}"),
        None,
    );
    assert_eq!(rebound, 421, "another site's name is refused");
    let (own, _) = raw_get(&web, "/api/v1/overview", &format!("127.0.0.1:{port}"), None);
    assert_eq!(own, 200);
    let (by_name, _) = raw_get(&web, "/", &format!("localhost:{port}"), None);
    assert_eq!(by_name, 200);

    // A server that asks for tokens takes readonly ones, on /metrics too.
    let first = std::fs::read_to_string(up.dir().join("web.url")).unwrap();
    let _serve = cli.spawn(&[
        "serve",
        "--web-listen",
        "127.0.0.1:0",
        "--web-require-token",
    ]);
    let mut guarded = String::new();
    wait_until("serve's address", Duration::from_secs(30), || {
        guarded = std::fs::read_to_string(up.dir().join("web.url")).unwrap_or_default();
        !guarded.is_empty() && guarded != first
    });
    let guarded_host = guarded
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let readonly = cli.run(&["auth", "issue", "--actor", "oncall", "--role", "readonly"]);
    assert_eq!(readonly.code, 0, "{readonly:?}");
    let readonly = readonly.stdout.trim().to_string();
    let relops = up.token();
    for path in ["/metrics", "/api/v1/hosts"] {
        let status = |token| raw_get(&guarded, path, &guarded_host, token).0;
        assert_eq!(status(None), 401, "{path} without a token");
        assert_eq!(
            status(Some(relops.as_str())),
            401,
            "{path} with a relops token"
        );
        assert_eq!(
            status(Some(readonly.as_str())),
            200,
            "{path} with a readonly token"
        );
    }

    // Live feeds: 64 at once, the next refused until one closes.
    common::onboard(cli, &[lab.hosts()[0].hostname.clone()]);
    let target = format!("hostname:{}", lab.hosts()[0].hostname);
    let id = common::create_rollout(cli, &target, "1");
    let feed = format!("/api/v1/rollouts/{id}/events");
    let host = format!("127.0.0.1:{port}");
    let mut open = Vec::new();
    for _ in 0..64 {
        let (status, stream) = raw_get(&web, &feed, &host, None);
        assert_eq!(status, 200);
        open.push(stream);
    }
    assert_eq!(raw_get(&web, &feed, &host, None).0, 503, "a 65th feed");
    drop(open.pop());
    wait_until(
        "a feed's slot to come back",
        Duration::from_secs(30),
        || {
            let (status, stream) = raw_get(&web, &feed, &host, None);
            if status == 200 {
                open.push(stream);
            }
            status == 200
        },
    );
}

/// The web server never holds the signing key: it asks the mesh with the
/// readonly token `up` keeps in `<data-dir>/web.token`, read at each use.
/// A token that stops being good stops the answers; one written in its
/// place brings them back, with no restart.
#[test]
fn the_web_server_asks_with_its_own_token_file_not_the_signing_key() {
    use std::os::unix::fs::PermissionsExt;
    let up = Up::start();
    let cli = &up.cli;
    let file = up.dir().join("web.token");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "web.token is private");
    let key = std::fs::read_to_string(up.dir().join("auth/verifying-key.pub")).unwrap();
    let key = fleetroll_bus::token::VerifyingKey::from_base64(key.trim()).unwrap();
    let jwt = std::fs::read_to_string(&file).unwrap();
    let claims =
        fleetroll_bus::token::verify(jwt.trim(), &key, time::OffsetDateTime::now_utc()).unwrap();
    assert_eq!(
        (claims.sub.as_str(), claims.role),
        ("fleetroll-web", fleetroll_bus::token::Role::Readonly)
    );
    let overview = format!("{}api/v1/overview", up.web_url());
    assert_eq!(get(&overview).0, 200);

    // Revoked: the workers refuse the web server's questions.
    let revoked = cli.run(&["auth", "revoke", "--jti", &claims.jti, "--reason", "test"]);
    assert_eq!(revoked.code, 0, "{revoked:?}");
    wait_until(
        "the web server's answers to stop",
        Duration::from_secs(30),
        || get(&overview).0 != 200,
    );
    let (status, body) = get(&overview);
    assert!(body.contains("revoked"), "{status}: {body}");

    let renewed = cli.run(&[
        "auth",
        "issue",
        "--actor",
        "fleetroll-web",
        "--role",
        "readonly",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert_eq!(renewed.code, 0, "{renewed:?}");
    assert_eq!(get(&overview).0, 200, "the new token is used at once");
}

/// Off loopback the server speaks HTTPS with the deployment's certificates
/// (or refuses to start), here on loopback with a certificate `fleetroll
/// tls` made: a client that trusts the CA reads the API, plain HTTP gets
/// nothing, and the token a browser is given is kept in a `Secure` cookie.
#[test]
fn the_web_server_serves_https_with_the_deployments_certificate() {
    use std::sync::Arc;
    let up = Up::start();
    let cli = &up.cli;
    for args in [
        &["tls", "init"][..],
        &["tls", "issue", "node", "web", "--san", "127.0.0.1"][..],
    ] {
        let made = cli.run(args);
        assert_eq!(made.code, 0, "{made:?}");
    }
    let pki = up.dir().join("tls");
    let refused = cli.run(&["serve", "--web-listen", "0.0.0.0:0"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("HTTPS"), "{refused:?}");
    let cert = pki.join("web.pem").display().to_string();
    let serve = |key: &str| {
        let key = pki.join(key).display().to_string();
        let listen = [
            "serve",
            "--web-listen",
            "127.0.0.1:0",
            "--web-require-token",
        ];
        let tls = ["--web-tls-cert", cert.as_str(), "--web-tls-key"];
        listen
            .iter()
            .chain(&tls)
            .map(|a| a.to_string())
            .chain([key])
            .collect::<Vec<_>>()
    };
    let bad_key = cli.run(&strs(&serve("ca-key.pem")));
    assert_eq!(bad_key.code, 1, "a key of another certificate: {bad_key:?}");

    let first = std::fs::read_to_string(up.dir().join("web.url")).unwrap();
    let _serve = cli.spawn(&strs(&serve("web-key.pem")));
    let mut url = String::new();
    wait_until("serve's address", Duration::from_secs(30), || {
        url = std::fs::read_to_string(up.dir().join("web.url")).unwrap_or_default();
        !url.is_empty() && url != first
    });
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let ca = std::fs::read(pki.join("ca.pem")).unwrap();
    let ca = ureq::tls::Certificate::from_pem(&ca).unwrap().to_owned();
    let trusting: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![ca])))
                .build(),
        )
        .build()
        .into();
    let issue = cli.run(&["auth", "issue", "--actor", "oncall", "--role", "readonly"]);
    assert_eq!(issue.code, 0, "{issue:?}");
    let token = issue.stdout.trim().to_string();
    let response = trusting
        .get(&format!("{url}api/v1/overview"))
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .expect("an HTTPS answer");
    assert_eq!(response.status().as_u16(), 200);
    // A browser keeps the token it is given in a cookie that only ever
    // goes out over HTTPS.
    let browser = Browser::start_with(true);
    browser.go(&format!("{url}#/hosts"));
    wait_until("the token form", Duration::from_secs(30), || {
        browser.count("#token-form") == 1
    });
    browser.type_and_enter("#token-form input", &token);
    wait_until("the page with the token", Duration::from_secs(30), || {
        browser.count("#token-form") == 0 && browser.count("#hosts-table") == 1
    });
    let cookie = browser.cookie("fleetroll_token");
    assert_eq!(cookie["secure"], true, "{cookie}");
    assert_eq!(cookie["sameSite"], "Strict", "{cookie}");
    let plain = url.replace("https://", "http://");
    assert!(
        agent()
            .get(&format!("{plain}api/v1/overview"))
            .call()
            .is_err(),
        "plain HTTP to the HTTPS port gets no answer"
    );
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}
