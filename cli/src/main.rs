//! The `fleetroll` binary: it parses, and calls the libraries.

mod args;
mod cmd;
mod context;
mod exit;
mod term;

use crate::term::tell;
use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, ConvergeCommand, InventoryCommand, RebootCommand, Top, WatchWhat};
use crate::context::Context;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version go to stdout with 0; a bad command line is
        // "invalid arguments" (1), not clap's own 2, which means
        // infrastructure here.
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::INVALID
            } else {
                exit::OK
            });
        }
    };
    // A reader that stops early (`fleetroll host list | head`) ends a
    // one-shot command quietly, as it does any Unix tool, instead of a panic
    // about a broken pipe. The long-running ones keep ignoring SIGPIPE (the
    // Rust default): a worker must never die of a peer that went away.
    if !matches!(
        cli.command,
        Top::Up(_)
            | Top::Worker { .. }
            | Top::Serve(_)
            | Top::Authorizer { .. }
            | Top::Monitor { .. }
    ) {
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    // A one-shot command says itself, once, why NATS failed it (refused
    // credentials, unreachable); async-nats's own log would say it twice.
    // The monitor owns the terminal: a log line would draw over its table.
    let (default_level, nats_level) = match cli.command {
        Top::Up(_) | Top::Worker { .. } | Top::Serve(_) | Top::Authorizer { .. } => {
            ("info", "warn")
        }
        Top::Monitor { .. } => ("off", "off"),
        _ => ("warn", "off"),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLEETROLL_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(format!(
                    "{default_level},async_nats={nats_level}"
                ))
            }),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            tell!("fleetroll: cannot start the async runtime: {e}");
            return ExitCode::from(exit::INTERNAL);
        }
    };
    let code = match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            tell!("fleetroll: {e:#}");
            exit::for_error(&e)
        }
    };
    // Workers' background tasks must not hold the process open.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    ExitCode::from(code)
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    let ctx = Context::new(cli.global)?;
    match cli.command {
        Top::Up(args) => cmd::up::run(&ctx, args).await,
        Top::Worker {
            kind,
            metrics_listen,
        } => cmd::workers::run(&ctx, kind, metrics_listen).await,
        Top::Serve(web) => cmd::serve::run(&ctx, web).await,
        Top::Authorizer {
            issuer_seed,
            session,
        } => cmd::authorizer::run(&ctx, &issuer_seed, session).await,
        Top::Setup => cmd::setup::run(&ctx).await,
        Top::Status { json } => cmd::status::run(&ctx, json).await,
        Top::Ping(args) => cmd::ping::run(&ctx, args).await,
        Top::Auth(command) => cmd::auth::run(&ctx, command).await,
        Top::Tls(command) => cmd::tls::run(&ctx, command),
        Top::Inventory(InventoryCommand::Seed(command)) => cmd::seed::run(&ctx, command).await,
        Top::Inventory(InventoryCommand::Refresh {
            seed,
            hostnames,
            fast,
            json,
        }) => cmd::host::refresh(&ctx, hostnames, seed.is_some(), fast, json).await,
        Top::Inventory(InventoryCommand::Drift { json }) => cmd::host::drift(&ctx, json).await,
        Top::Host(command) => cmd::host::run(&ctx, command).await,
        Top::Population(command) => cmd::population::run(&ctx, command).await,
        Top::Audit(command) => cmd::audit::run(&ctx, command).await,
        Top::Rollout(command) => cmd::rollout::run(&ctx, command).await,
        Top::Watch { what, json } => {
            let id = what.map(|WatchWhat::Rollout { id }| id);
            cmd::watch::run(&ctx, id, json).await
        }
        Top::Monitor { interval } => cmd::monitor::run(&ctx, interval).await,
        Top::Converge(ConvergeCommand::Host { hostname }) => {
            cmd::out_of_band::converge(&ctx, hostname).await
        }
        Top::Reboot(RebootCommand::Host { hostname, confirm }) => {
            cmd::out_of_band::reboot(&ctx, hostname, confirm).await
        }
        Top::Completions { shell } => {
            use clap::CommandFactory;
            use std::io::Write;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "fleetroll", &mut script);
            // A closed pipe (`| head`) is the reader's choice, not an error.
            let _ = std::io::stdout().write_all(&script);
            Ok(exit::OK)
        }
    }
}
