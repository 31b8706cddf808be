//! `fleetroll-lab`: start and stop the test fleet from the command line.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use fleetroll_lab::{Lab, LabConfig, LabError, LabMode, Scenario};

#[derive(Parser)]
#[command(
    name = "fleetroll-lab",
    about = "fleetroll's test fleet: virtual hosts behind one real OpenSSH sshd on loopback"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a lab in the background and print it as JSON.
    Up(UpArgs),
    /// Stop the lab and remove every trace of it from the machine.
    Down {
        /// Lab directory.
        #[arg(long, default_value = ".lab")]
        dir: PathBuf,
        /// Seconds to wait for the daemon before killing it.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Print the running lab as JSON.
    Status {
        /// Lab directory.
        #[arg(long, default_value = ".lab")]
        dir: PathBuf,
    },
    /// Print the running lab's OpenSSH client config (`ssh -F <dir>/ssh_config
    /// <host>`), with ProxyJump through the bastion when there is one.
    SshConfig {
        /// Lab directory.
        #[arg(long, default_value = ".lab")]
        dir: PathBuf,
    },
    /// Serve a lab in the foreground until SIGTERM (what `up` runs).
    #[command(hide = true)]
    Serve(UpArgs),
}

#[derive(Args, Clone)]
struct UpArgs {
    /// Number of hosts.
    #[arg(long)]
    hosts: usize,
    /// Lab directory (keys, host files, logs).
    #[arg(long, default_value = ".lab")]
    dir: PathBuf,
    /// Scenario file (TOML, or JSON if it ends in .json).
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// SSH port on every host address (0 = pick a free one).
    #[arg(long, default_value_t = 2222)]
    port: u16,
    /// DNS domain of the hosts (default: fleetroll.test, or labN.fleetroll.test
    /// when other labs run).
    #[arg(long)]
    domain: Option<String>,
    /// Put the hosts behind a jump host, bastion.<domain>: only it can reach
    /// them (see the printed ssh_config_file).
    #[arg(long)]
    bastion: bool,
    /// Seconds to wait for the lab to come up.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

impl UpArgs {
    fn config(&self) -> Result<LabConfig, LabError> {
        let scenario = match &self.scenario {
            Some(p) => Scenario::from_file(p)?,
            None => Scenario::default(),
        };
        let mut c = LabConfig::new(self.hosts, &self.dir)
            .scenario(scenario)
            .port(self.port);
        c.domain = self.domain.clone();
        Ok(c.bastion(self.bastion))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => up(args),
        Command::Serve(args) => serve(args),
        Command::Down { dir, timeout } => down(&dir, Duration::from_secs(timeout)),
        Command::Status { dir } => status(&dir),
        Command::SshConfig { dir } => ssh_config(&dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleetroll-lab: {e}");
            ExitCode::FAILURE
        }
    }
}

fn absolute(dir: &Path) -> Result<PathBuf, LabError> {
    std::fs::create_dir_all(dir).map_err(|e| LabError::Io {
        context: format!("create {}", dir.display()),
        source: e,
    })?;
    std::fs::canonicalize(dir).map_err(|e| LabError::Io {
        context: format!("resolve {}", dir.display()),
        source: e,
    })
}

fn up(mut args: UpArgs) -> Result<(), LabError> {
    args.dir = absolute(&args.dir)?;
    // Fail on a bad scenario here, not in the daemon's log.
    args.config()?;
    if let Ok(info) = fleetroll_lab::read_info(&args.dir)
        && fleetroll_lab::is_running(&info)
    {
        return Err(LabError::AlreadyRunning {
            dir: args.dir.clone(),
            pid: info.pid as i32,
        });
    }
    let log_path = args.dir.join("daemon.log");
    let log = std::fs::File::create(&log_path).map_err(|e| LabError::Io {
        context: format!("create {}", log_path.display()),
        source: e,
    })?;
    let log2 = log.try_clone().map_err(|e| LabError::Io {
        context: "dup daemon log".into(),
        source: e,
    })?;
    let exe = std::env::current_exe().map_err(|e| LabError::Io {
        context: "find fleetroll-lab's own path".into(),
        source: e,
    })?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("serve")
        .arg("--hosts")
        .arg(args.hosts.to_string())
        .arg("--dir")
        .arg(&args.dir)
        .arg("--port")
        .arg(args.port.to_string());
    if let Some(s) = &args.scenario {
        cmd.arg("--scenario").arg(s);
    }
    if let Some(d) = &args.domain {
        cmd.arg("--domain").arg(d);
    }
    if args.bastion {
        cmd.arg("--bastion");
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2));
    // Its own session: the daemon outlives this command and the terminal.
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| LabError::Io {
        context: "start the lab daemon".into(),
        source: e,
    })?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    loop {
        if let Ok(info) = fleetroll_lab::read_info(&args.dir)
            && info.pid == child.id()
        {
            println!(
                "{}",
                serde_json::to_string_pretty(&info).unwrap_or_default()
            );
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut text = String::new();
            if let Ok(mut f) = std::fs::File::open(&log_path) {
                let _ = f.read_to_string(&mut text);
            }
            return Err(LabError::Daemon(format!(
                "the lab daemon exited ({status}): {}",
                text.trim()
            )));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = fleetroll_lab::down(&args.dir, Duration::from_secs(5));
            return Err(LabError::Daemon(format!(
                "the lab did not come up within {}s (see {})",
                args.timeout,
                log_path.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn serve(args: UpArgs) -> Result<(), LabError> {
    let lab = Lab::start_as(args.config()?, LabMode::Daemon)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| LabError::Io {
            context: "start the signal runtime".into(),
            source: e,
        })?;
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    });
    lab.down()
}

fn down(dir: &Path, timeout: Duration) -> Result<(), LabError> {
    let Ok(dir) = std::fs::canonicalize(dir) else {
        println!("no lab in {}", dir.display());
        return Ok(());
    };
    match fleetroll_lab::down(&dir, timeout)? {
        None => {
            println!("no lab in {}", dir.display());
            Ok(())
        }
        Some(info) => {
            let left = fleetroll_lab::leftovers(&info.id, &dir)?;
            if !left.is_clean() {
                return Err(LabError::Daemon(format!(
                    "lab {} left things behind: {left:?}",
                    info.id
                )));
            }
            println!(
                "stopped lab {} ({} hosts) in {}",
                info.id,
                info.hosts.len(),
                dir.display()
            );
            Ok(())
        }
    }
}

fn status(dir: &Path) -> Result<(), LabError> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    match fleetroll_lab::read_info(&dir) {
        Ok(info) if fleetroll_lab::is_running(&info) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&info).unwrap_or_default()
            );
            Ok(())
        }
        _ => Err(LabError::NoLab(dir)),
    }
}

fn ssh_config(dir: &Path) -> Result<(), LabError> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let info = match fleetroll_lab::read_info(&dir) {
        Ok(info) if fleetroll_lab::is_running(&info) => info,
        _ => return Err(LabError::NoLab(dir)),
    };
    let text = std::fs::read_to_string(&info.ssh_config_file).map_err(|e| LabError::Io {
        context: format!("read {}", info.ssh_config_file.display()),
        source: e,
    })?;
    print!("{text}");
    Ok(())
}
