//! The reference host-side scripts (seed 003): write_puppet_state and the
//! run-puppet.sh wrappers, run for real and read back with a JSON parser.

use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn reference(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../reference")
        .join(name)
}

fn sha256_file(p: &Path) -> String {
    fleetroll_lab::sha256_hex(&fs::read(p).unwrap())
}

/// Runs `write_puppet_state <args>` in `shell` with extra environment.
fn write_state(shell: &str, args: &str, env: &[(&str, OsString)]) -> Output {
    let mut c = Command::new(shell);
    c.arg("-c")
        .arg(format!(". \"$1\"; write_puppet_state {args}"))
        .arg("sh")
        .arg(reference("write_puppet_state.sh"));
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run the shell")
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("etc/puppet")).unwrap();
        fs::write(dir.path().join("etc/puppet_role"), "gecko-t-linux-talos\n").unwrap();
        fs::write(
            dir.path().join("etc/puppet/ronin_settings"),
            "PUPPET_BRANCH=x\n",
        )
        .unwrap();
        fs::write(dir.path().join("vault.yaml"), "secret: 1\n").unwrap();
        Fixture { dir }
    }
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn state_file(&self) -> PathBuf {
        self.path("etc/puppet/last_run_metadata.json")
    }
    fn env(&self) -> Vec<(&'static str, OsString)> {
        vec![
            ("PUPPET_STATE_FILE", self.state_file().into()),
            (
                "PUPPET_STATE_OVERRIDE_PATH",
                self.path("etc/puppet/ronin_settings").into(),
            ),
            ("PUPPET_STATE_VAULT_PATH", self.path("vault.yaml").into()),
            (
                "PUPPET_STATE_ROLE_FILE",
                self.path("etc/puppet_role").into(),
            ),
            ("PUPPET_STATE_GIT_DIR", self.path("no-checkout").into()),
        ]
    }
    fn read_state(&self) -> Value {
        let bytes = fs::read(self.state_file()).expect("state file written");
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "not valid JSON ({e}): {:?}",
                String::from_utf8_lossy(&bytes)
            )
        })
    }
}

#[test]
fn escapes_nasty_branch_names_in_dash_and_bash() {
    let nasty = [
        "plain",
        "with \"double\" quotes",
        "back\\slash\\\\es",
        "tab\there",
        "new\nline",
        "trailing newline\n",
        "ctrl \u{1} \u{1f} \u{7f} bell\u{7}",
        "unicode ünïcödé 💥 日本語 e\u{301}",
        "$(touch /tmp/pwned) `id` ${HOME}",
        "{\"json\": [1, 2]}",
    ];
    for shell in ["/bin/sh", "/bin/bash"] {
        for branch in nasty {
            let f = Fixture::new();
            let mut env = f.env();
            env.push(("PUPPET_STATE_GIT_BRANCH", branch.into()));
            env.push(("PUPPET_STATE_GIT_REPO", "https://example/r.git".into()));
            env.push((
                "PUPPET_STATE_GIT_SHA",
                "0123456789abcdef0123456789abcdef01234567".into(),
            ));
            let out = write_state(shell, "2 17", &env);
            assert!(out.status.success(), "{shell}: {out:?}");
            let state = f.read_state();
            assert_eq!(state["git_branch"], branch, "{shell} mangled {branch:?}");
            assert_eq!(state["schema_version"], 1);
            assert_eq!(state["success"], true);
            assert_eq!(state["exit_code"], 2);
            assert_eq!(state["duration_s"], 17);
            assert_eq!(state["git_repo"], "https://example/r.git");
            assert_eq!(state["git_sha"], "0123456789abcdef0123456789abcdef01234567");
            assert_eq!(state["role"], "gecko-t-linux-talos");
            assert_eq!(
                state["override_sha"],
                sha256_file(&f.path("etc/puppet/ronin_settings"))
            );
            assert_eq!(state["vault_sha"], sha256_file(&f.path("vault.yaml")));
            let ts = state["ts"].as_str().unwrap();
            assert_eq!(ts.len(), 20, "{ts}");
            assert!(ts.ends_with('Z'));
        }
    }
    assert!(
        !Path::new("/tmp/pwned").exists(),
        "a branch name was executed"
    );
}

#[test]
fn invalid_utf8_becomes_replacement_characters_not_invalid_json() {
    let f = Fixture::new();
    let mut env = f.env();
    let mut bytes = b"ok-".to_vec();
    bytes.extend_from_slice(&[0xff, 0xc3, 0x28, 0xe2, 0x82]);
    bytes.extend_from_slice("-ü".as_bytes());
    env.push(("PUPPET_STATE_GIT_BRANCH", OsString::from_vec(bytes)));
    let out = write_state("/bin/sh", "0 1", &env);
    assert!(out.status.success(), "{out:?}");
    let state = f.read_state();
    let branch = state["git_branch"].as_str().unwrap();
    assert!(branch.starts_with("ok-"), "{branch:?}");
    assert!(branch.ends_with("(\u{fffd}\u{fffd}-ü"), "{branch:?}");
    assert!(branch.contains('\u{fffd}'));
}

#[test]
fn unknowns_are_null() {
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("m.json");
    let out = write_state(
        "/bin/sh",
        "notanumber ''",
        &[
            ("PUPPET_STATE_FILE", state_file.clone().into()),
            ("PUPPET_STATE_OVERRIDE_PATH", dir.path().join("none").into()),
            ("PUPPET_STATE_VAULT_PATH", dir.path().join("none").into()),
            ("PUPPET_STATE_ROLE_FILE", dir.path().join("none").into()),
            ("PUPPET_STATE_GIT_DIR", dir.path().join("none").into()),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let state: Value = serde_json::from_slice(&fs::read(&state_file).unwrap()).unwrap();
    for key in [
        "git_repo",
        "git_branch",
        "git_sha",
        "override_sha",
        "vault_sha",
        "role",
        "exit_code",
        "duration_s",
    ] {
        assert_eq!(state[key], Value::Null, "{key} should be null: {state}");
    }
    assert_eq!(state["success"], false);
    assert_eq!(
        state["override_path"],
        dir.path().join("none").display().to_string()
    );
}

#[test]
fn write_is_atomic_world_readable_and_leaves_no_temp_files() {
    let f = Fixture::new();
    fs::write(f.state_file(), "old").unwrap();
    let out = write_state("/bin/sh", "0 3", &f.env());
    assert!(out.status.success(), "{out:?}");
    assert_eq!(f.read_state()["exit_code"], 0);
    let mode = fs::metadata(f.state_file()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    let names: Vec<String> = fs::read_dir(f.path("etc/puppet"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, ["last_run_metadata.json", "ronin_settings"]);
}

#[test]
fn failing_to_write_state_never_fails_the_caller() {
    let f = Fixture::new();
    let mut env = f.env();
    // The "directory" is a file: the write must fail.
    env[0] = (
        "PUPPET_STATE_FILE",
        f.path("etc/puppet_role/last_run_metadata.json").into(),
    );
    let mut c = Command::new("/bin/sh");
    c.arg("-c")
        .arg(". \"$1\"; set -e; write_puppet_state 2 5; echo still-running; exit 2")
        .arg("sh")
        .arg(reference("write_puppet_state.sh"));
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "still-running\n");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("write_puppet_state"),
        "the failure is reported: {out:?}"
    );
}

/// A directory of fake tools put first on PATH.
fn fake_tools(tools: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in tools {
        let p = dir.path().join(name);
        fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

fn path_with(dir: &Path) -> OsString {
    let mut p = dir.as_os_str().to_owned();
    p.push(":");
    p.push(std::env::var_os("PATH").unwrap_or_default());
    p
}

#[test]
fn hashes_with_shasum_on_macos_and_sha256sum_on_linux() {
    let broken = "echo deadbeef -";
    for (uname, tools) in [
        // macOS: shasum first; a broken sha256sum must not matter.
        (
            "Darwin",
            vec![("uname", "echo Darwin"), ("sha256sum", broken)],
        ),
        // Linux: sha256sum first; a broken shasum must not matter.
        ("Linux", vec![("uname", "echo Linux"), ("shasum", broken)]),
        // Either: falls back when the preferred tool gives garbage.
        (
            "Linux",
            vec![("uname", "echo Linux"), ("sha256sum", broken)],
        ),
    ] {
        let fake = fake_tools(&tools);
        let f = Fixture::new();
        let mut env = f.env();
        env.push(("PATH", path_with(fake.path())));
        let out = write_state("/bin/sh", "0 1", &env);
        assert!(out.status.success(), "{uname}: {out:?}");
        let state = f.read_state();
        assert_eq!(
            state["vault_sha"],
            sha256_file(&f.path("vault.yaml")),
            "{uname} with {tools:?}"
        );
    }
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.email=lab@example.invalid",
            "-c",
            "user.name=lab",
        ])
        .args(args)
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

fn git_out(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A Puppet repository with a master branch and a nastily named one.
fn puppet_repo(root: &Path, branch: &str) -> String {
    let repo = root.join("repo");
    fs::create_dir_all(repo.join("manifests")).unwrap();
    fs::write(repo.join("manifests/site.pp"), "notice('hi')\n").unwrap();
    git(&repo, &["init", "-q", "-b", "master"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "init"]);
    git(&repo, &["checkout", "-q", "-b", branch]);
    fs::write(repo.join("manifests/extra.pp"), "notice('branch')\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "branch"]);
    git(&repo, &["checkout", "-q", "master"]);
    format!("file://{}", repo.display())
}

/// Shell-quotes a value for the override file.
fn sq(v: &str) -> String {
    format!("'{}'", v.replace('\'', r"'\''"))
}

fn run_wrapper(script: &str, root: &Path, puppet_exit: i32) -> Output {
    let fake = fake_tools(&[(
        "puppet",
        &format!("echo \"fake puppet $*\" >&2; exit {puppet_exit}"),
    )]);
    Command::new("/bin/sh")
        .arg(reference(script))
        .env("RUN_PUPPET_ROOT", root)
        .env("PUPPET_BIN", fake.path().join("puppet"))
        .env("TMPDIR", root)
        .output()
        .unwrap()
}

#[test]
fn run_puppet_wrappers_record_what_was_applied() {
    let branch = "feat/\"quoted\"-ünï💥";
    for (script, override_rel, vault_rel) in [
        (
            "run-puppet-linux.sh",
            "etc/puppet/ronin_settings",
            "root/vault.yaml",
        ),
        (
            "run-puppet-macos.sh",
            "opt/puppet_environments/ronin_settings",
            "var/root/vault.yaml",
        ),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("host");
        for d in ["etc/puppet", "opt/puppet_environments", "root", "var/root"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::write(root.join("etc/puppet_role"), "gecko-t-osx-1400-r8\n").unwrap();
        fs::write(root.join(vault_rel), "vault: x\n").unwrap();
        let url = puppet_repo(tmp.path(), branch);
        fs::write(
            root.join(override_rel),
            format!("PUPPET_REPO={}\nPUPPET_BRANCH={}\n", sq(&url), sq(branch)),
        )
        .unwrap();
        let branch_sha = git_out(&tmp.path().join("repo"), &["rev-parse", branch]);

        for exit in [0, 2, 4, 6] {
            let out = run_wrapper(script, &root, exit);
            assert_eq!(out.status.code(), Some(exit), "{script}: {out:?}");
            let state: Value = serde_json::from_slice(
                &fs::read(root.join("etc/puppet/last_run_metadata.json")).unwrap(),
            )
            .unwrap();
            assert_eq!(state["exit_code"], exit);
            assert_eq!(state["success"], exit == 0 || exit == 2);
            assert_eq!(state["git_branch"], branch, "{script}");
            assert_eq!(state["git_repo"], url.as_str());
            assert_eq!(state["git_sha"], branch_sha.as_str());
            assert_eq!(state["override_sha"], sha256_file(&root.join(override_rel)));
            assert_eq!(state["vault_sha"], sha256_file(&root.join(vault_rel)));
            assert_eq!(
                state["override_path"],
                root.join(override_rel).display().to_string()
            );
            assert_eq!(state["role"], "gecko-t-osx-1400-r8");
        }
        // The checkout is cleaned up.
        let leftovers: Vec<_> = fs::read_dir(&root)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("run-puppet."))
            .collect();
        assert!(leftovers.is_empty(), "temporary checkout left behind");
    }
}

#[test]
fn run_puppet_without_a_checkout_fails_and_records_nulls() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("host");
    fs::create_dir_all(root.join("etc/puppet")).unwrap();
    fs::write(root.join("etc/puppet_role"), "r\n").unwrap();
    fs::write(
        root.join("etc/puppet/ronin_settings"),
        format!(
            "PUPPET_REPO=file://{}/missing\nPUPPET_BRANCH=nope\n",
            tmp.path().display()
        ),
    )
    .unwrap();
    let out = run_wrapper("run-puppet-linux.sh", &root, 0);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let state: Value =
        serde_json::from_slice(&fs::read(root.join("etc/puppet/last_run_metadata.json")).unwrap())
            .unwrap();
    assert_eq!(state["success"], false);
    assert_eq!(state["exit_code"], 1);
    assert_eq!(state["git_sha"], Value::Null);
    assert_eq!(state["git_branch"], Value::Null);
    assert_eq!(state["vault_sha"], Value::Null);
}

#[test]
fn run_puppet_refuses_without_a_role() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("host");
    fs::create_dir_all(root.join("etc/puppet")).unwrap();
    let out = run_wrapper("run-puppet-linux.sh", &root, 0);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no role"));
    assert!(!root.join("etc/puppet/last_run_metadata.json").exists());
}

#[test]
fn shell_scripts_are_shellcheck_clean() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut scripts: Vec<PathBuf> = Vec::new();
    for dir in [manifest.join("../reference"), manifest.join("scripts")] {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "sh") {
                scripts.push(p);
            }
        }
    }
    assert!(scripts.len() >= 9, "{scripts:?}");
    let out = Command::new("shellcheck")
        .arg("--external-sources")
        .args(&scripts)
        .output()
        .expect("shellcheck is installed (apt-get install shellcheck)");
    assert!(
        out.status.success(),
        "shellcheck: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}
