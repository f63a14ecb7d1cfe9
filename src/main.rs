//! The `tickfan` daemon: parses the command line, loads the configuration,
//! runs the server (announcing its address in the `--ready-file`, if asked)
//! until SIGINT or SIGTERM, and exits 0 after a graceful shutdown.
//! Everything testable lives in the library.

use std::process::ExitCode;

use clap::Parser;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tickfan::cli::Cli;
use tickfan::server::Server;
use tracing_subscriber::EnvFilter;

/// The exit status after a worker died (EX_SOFTWARE of sysexits.h): an
/// internal error, for a supervisor to restart the broker on.
const WORKER_DIED_EXIT_CODE: u8 = 70;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(status) = cli.run_command(&mut std::io::stdout(), &mut std::io::stderr()) {
        return ExitCode::from(status);
    }
    match cli.print_default_config(&mut std::io::stdout()) {
        Ok(true) => return ExitCode::SUCCESS,
        Ok(false) => {}
        Err(e) => {
            eprintln!("tickfan: {e}");
            return ExitCode::FAILURE;
        }
    }
    let config = match cli.load_config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("tickfan: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(&config.log.level))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A log write that fails (stderr's reader gone) must not be reported
        // with eprintln!, which panics on that same closed stderr: the
        // thread logging "shutting down" died there, and SIGTERM was ignored.
        .log_internal_errors(false)
        .init();

    raise_open_files_limit(config.server.max_connections);
    let mut signals = match Signals::new([SIGINT, SIGTERM, SIGHUP]) {
        Ok(signals) => signals,
        Err(e) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };
    let server = match Server::start(&config) {
        Ok(server) => server,
        Err(e) => {
            tracing::error!(
                error = %e,
                listen = %off_or(config.server.listen),
                tls = %off_or(config.tls.listen),
                "cannot start"
            );
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        listen = %off_or(server.local_addr()),
        tls = %off_or(server.tls_local_addr()),
        workers = server.worker_count(),
        echo_path = config.websocket.echo_path.as_deref().unwrap_or("off"),
        "tickfan listening"
    );
    let stopper = server.stopper();
    // After the log line, so a harness that waits for the file and then
    // reads the log finds the line written.
    if let Err(e) = cli.write_ready_file(server.local_addr(), server.tls_local_addr()) {
        let path = cli.ready_file.clone().unwrap_or_default();
        tracing::error!(error = %e, ready_file = %path.display(), "cannot write the ready file");
        stopper.stop();
        let _ = server.join();
        return ExitCode::FAILURE;
    }
    let drain_delay = config.server.drain_delay();
    let (signalled, signal) = std::sync::mpsc::channel();
    let reloader = server.stopper();
    std::thread::spawn(move || {
        for number in signals.forever() {
            // SIGHUP reloads the TLS certificate and the JWT keys; the
            // others stop the broker.
            if number == SIGHUP {
                reloader.reload_tls();
                reloader.reload_jwt_keys();
                continue;
            }
            if signalled.send(number).is_err() {
                return;
            }
        }
    });
    std::thread::spawn(move || {
        let Ok(number) = signal.recv() else { return };
        if !drain_delay.is_zero() {
            tracing::info!(
                signal = number,
                drain_delay_ms = drain_delay.as_millis() as u64,
                "draining: /readyz answers 503, shutdown after the drain delay or a second signal"
            );
            stopper.drain();
            if let Ok(number) = signal.recv_timeout(drain_delay) {
                tracing::info!(signal = number, "second signal: drain delay cut short");
            }
        }
        tracing::info!(
            signal = number,
            "shutting down: closing connections with 1001"
        );
        stopper.stop();
    });
    match server.join() {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(died) => {
            tracing::error!(error = %died, "stopped because a worker died");
            ExitCode::from(WORKER_DIED_EXIT_CODE)
        }
    }
}

/// Raises the soft open-files limit to the hard one: every connection is a
/// descriptor, and the default soft limit (often 1024) is far below what a
/// broker serves. Logs the limit it ends with, and warns when that is below
/// `server.max_connections`.
fn raise_open_files_limit(max_connections: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            tracing::info!(open_files = limit, "open-files limit");
            if limit < (max_connections as u64).saturating_add(64) {
                tracing::warn!(
                    open_files = limit,
                    max_connections,
                    "open-files limit is below server.max_connections; accepts will fail with EMFILE first"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit"),
    }
}

/// A listener's address for a log line, `off` when it is not configured.
fn off_or(addr: Option<std::net::SocketAddr>) -> String {
    addr.map_or("off".to_owned(), |a| a.to_string())
}
