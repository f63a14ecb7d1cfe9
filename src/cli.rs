//! The `tickfan` command line: which config file to load and what to override in it.
//!
//! The command line holds no settings of its own. Every named flag
//! (`--listen`, `--max-message-bytes`, ...) is a shorthand for one dotted
//! config key, listed once in [`SHORTHANDS`], and `--set KEY=VALUE` reaches
//! any key. [`Cli::load_config`] applies them all to the TOML table through
//! [`config::apply_override`], so a value from a flag is checked by the same
//! code, and refused with the same message naming the key, as one from a file.
//!
//! To add a flag, add a row to [`SHORTHANDS`]; its help text gains the key and
//! its default from the embedded config automatically. A row in
//! [`ShorthandMode::Append`] is a repeatable flag adding one string to a list
//! key (`--publish-token`), through [`config::append_override`].
//!
//! Token values are secrets: [`Cli`]'s `Debug` redacts the values of the keys
//! [`config::is_secret_key`] names.
//!
//! Two flags are not config keys but say what the process does around the
//! server: `--print-default-config` (print and exit) and `--ready-file`
//! (announce the bound address, [`Cli::write_ready_file`]). With no command
//! the binary runs the broker; the operator commands (`check-config`,
//! `gen-token`) live in [`commands`].

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches, Parser};

use crate::config::{self, Config, ConfigError, DEFAULT_TOML};

pub mod commands;
pub use commands::Operation;

/// The help heading grouping every flag that sets a config key.
const OVERRIDES_HEADING: &str = "Config overrides";

/// One named flag and the dotted config key it sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shorthand {
    /// The long flag without its dashes, e.g. `max-message-bytes`.
    pub flag: &'static str,
    /// The dotted config key it sets, e.g. `websocket.max_message_bytes`.
    pub key: &'static str,
    /// The placeholder shown in `--help`, e.g. `N`.
    pub value_name: &'static str,
    /// One line of help; the key and its default are appended.
    pub help: &'static str,
    /// Whether the flag sets its key or, repeatable, appends to a list key.
    pub mode: ShorthandMode,
}

/// How a [`Shorthand`] flag's value reaches its config key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShorthandMode {
    /// The flag is given at most once and sets the key, through [`config::apply_override`].
    Set,
    /// The flag may be repeated; each value is appended as a string to the
    /// list key, after the config file's entries, through [`config::append_override`].
    Append,
}

/// Every named flag, in the order `--help` lists them and overrides apply.
pub const SHORTHANDS: &[Shorthand] = &[
    Shorthand {
        flag: "listen",
        key: "server.listen",
        value_name: "ADDR",
        help: "Address to listen on, e.g. 0.0.0.0:9001",
        mode: ShorthandMode::Set,
    },
    Shorthand {
        flag: "tls-listen",
        key: "tls.listen",
        value_name: "ADDR",
        help: "Address of the TLS listener (wss, https); \"\" = no TLS",
        mode: ShorthandMode::Set,
    },
    Shorthand {
        flag: "tls-cert",
        key: "tls.cert_file",
        value_name: "FILE",
        help: "Certificate chain of the TLS listener, PEM",
        mode: ShorthandMode::Set,
    },
    Shorthand {
        flag: "tls-key",
        key: "tls.key_file",
        value_name: "FILE",
        help: "Private key of the TLS certificate, PEM",
        mode: ShorthandMode::Set,
    },
    Shorthand {
        flag: "workers",
        key: "server.workers",
        value_name: "N",
        help: "Worker threads; 0 = one per CPU core",
        mode: ShorthandMode::Set,
    },
    Shorthand {
        flag: "max-connections",
        key: "server.max_connections",
        value_name: "N",
        help: "Most open connections across all workers; more are refused",
        mode: ShorthandMode::Set,
    },
    Shorthand {
        flag: "shutdown-grace-ms",
        key: "server.shutdown_grace_ms",
        value_name: "N",
        help: "Milliseconds shutdown waits for clients to close",
        mode: ShorthandMode::Set,
    },
    Shorthand {
        flag: "drain-delay-ms",
        key: "server.drain_delay_ms",
        value_name: "N",
        help: "Milliseconds /readyz answers 503 after a signal before shutdown begins",
        mode: ShorthandMode::Set,
    },
    Shorthand {
        flag: "ws-path",
        key: "websocket.path",
        value_name: "PATH",
        help: "Path where clients upgrade to the pub/sub protocol, e.g. /ws",
        mode: ShorthandMode::Set,
    },
    Shorthand {
        flag: "echo-path",
        key: "websocket.echo_path",
        value_name: "PATH",
        help: "Path whose connections echo every message (conformance testing); \"\" = off",
        mode: ShorthandMode::Set,
    },
    Shorthand {
        flag: "max-message-bytes",
        key: "websocket.max_message_bytes",
        value_name: "N",
        help: "Largest reassembled message in bytes; larger closes with 1009",
        mode: ShorthandMode::Set,
    },
    Shorthand {
        flag: "max-frame-bytes",
        key: "websocket.max_frame_bytes",
        value_name: "N",
        help: "Largest frame payload in bytes; larger closes with 1009",
        mode: ShorthandMode::Set,
    },
    Shorthand {
        flag: "max-fragments-per-message",
        key: "websocket.max_fragments_per_message",
        value_name: "N",
        help: "Most frames in one fragmented message; more closes with 1009",
        mode: ShorthandMode::Set,
    },
    Shorthand {
        flag: "max-header-bytes",
        key: "websocket.max_header_bytes",
        value_name: "N",
        help: "Largest handshake request head in bytes; larger is answered 431",
        mode: ShorthandMode::Set,
    },
    Shorthand {
        flag: "handshake-timeout-ms",
        key: "websocket.handshake_timeout_ms",
        value_name: "N",
        help: "Milliseconds allowed to complete the opening handshake",
        mode: ShorthandMode::Set,
    },
    Shorthand {
        flag: "ping-interval-ms",
        key: "websocket.ping_interval_ms",
        value_name: "N",
        help: "Milliseconds of quiet after which the server pings",
        mode: ShorthandMode::Set,
    },
    Shorthand {
        flag: "idle-timeout-ms",
        key: "websocket.idle_timeout_ms",
        value_name: "N",
        help: "Milliseconds of silence after which a connection is closed; > ping interval",
        mode: ShorthandMode::Set,
    },
    Shorthand {
        flag: "close-timeout-ms",
        key: "websocket.close_timeout_ms",
        value_name: "N",
        help: "Milliseconds to wait for the peer's close reply before dropping TCP",
        mode: ShorthandMode::Set,
    },
    Shorthand {
        flag: "max-messages-per-sec",
        key: "websocket.max_messages_per_sec",
        value_name: "N",
        help: "Most messages one connection may send per second (1008 past it); 0 = no limit",
        mode: ShorthandMode::Set,
    },
    Shorthand {
        flag: "shards",
        key: "broker.shards",
        value_name: "N",
        help: "Topic table shards; more = less lock contention between publishers",
        mode: ShorthandMode::Set,
    },
    Shorthand {
        flag: "history-depth",
        key: "broker.history_depth",
        value_name: "N",
        help: "Ticks kept per topic for `since` recovery and long-poll; 0 = none",
        mode: ShorthandMode::Set,
    },
    Shorthand {
        flag: "topic-ttl-ms",
        key: "broker.topic_ttl_ms",
        value_name: "N",
        help:
            "Milliseconds an unused topic (no subscribers, no publish) lives before it is reclaimed",
        mode: ShorthandMode::Set,
    },
    Shorthand {
        flag: "max-topics",
        key: "broker.max_topics",
        value_name: "N",
        help: "Most topics alive at once; more are refused",
        mode: ShorthandMode::Set,
    },
    Shorthand {
        flag: "max-topics-per-connection",
        key: "broker.max_topics_per_connection",
        value_name: "N",
        help: "Most topics one connection may subscribe to",
        mode: ShorthandMode::Set,
    },
    Shorthand {
        flag: "max-client-errors",
        key: "broker.max_client_errors",
        value_name: "N",
        help: "Error events a connection may provoke before it is closed with 1008",
        mode: ShorthandMode::Set,
    },
    Shorthand {
        flag: "heartbeat-interval-ms",
        key: "broker.heartbeat_interval_ms",
        value_name: "N",
        help: "Milliseconds a subscribed connection may be sent nothing before a heartbeat",
        mode: ShorthandMode::Set,
    },
    Shorthand {
        flag: "max-queue-bytes",
        key: "broker.max_queue_bytes",
        value_name: "N",
        help: "Bound on one connection's outbound queue in bytes",
        mode: ShorthandMode::Set,
    },
    Shorthand {
        flag: "slow-consumer",
        key: "broker.slow_consumer",
        value_name: "POLICY",
        help: "conflate|drop|disconnect: what happens to a connection over its queue bound",
        mode: ShorthandMode::Set,
    },
    Shorthand {
        flag: "slow-consumer-grace-ms",
        key: "broker.slow_consumer_grace_ms",
        value_name: "N",
        help: "With slow-consumer disconnect, milliseconds a queue may stay over its bound",
        mode: ShorthandMode::Set,
    },
    Shorthand {
        flag: "flush-interval-ms",
        key: "broker.flush_interval_ms",
        value_name: "N",
        help: "Least milliseconds between two tick writes of a worker (0 = every loop turn)",
        mode: ShorthandMode::Set,
    },
    Shorthand {
        flag: "max-body-bytes",
        key: "http.max_body_bytes",
        value_name: "N",
        help: "Largest POST /publish body in bytes; larger is answered 413",
        mode: ShorthandMode::Set,
    },
    Shorthand {
        flag: "max-poll-timeout-secs",
        key: "http.max_poll_timeout_secs",
        value_name: "N",
        help: "Longest long-poll hold a client may ask for, in seconds",
        mode: ShorthandMode::Set,
    },
    Shorthand {
        flag: "metrics-path",
        key: "http.metrics_path",
        value_name: "PATH",
        help: "Path of the Prometheus metrics endpoint; \"\" = off",
        mode: ShorthandMode::Set,
    },
    Shorthand {
        flag: "publish-token",
        key: "auth.publish_tokens",
        value_name: "TOKEN",
        help: "Add a token that grants publishing; repeatable, adds to the config file's list \
               (visible in the process list: prefer the config file)",
        mode: ShorthandMode::Append,
    },
    Shorthand {
        flag: "subscribe-token",
        key: "auth.subscribe_tokens",
        value_name: "TOKEN",
        help: "Add a token that grants subscribing; repeatable, adds to the config file's list \
               (visible in the process list: prefer the config file)",
        mode: ShorthandMode::Append,
    },
    Shorthand {
        flag: "cluster-nats",
        key: "cluster.nats_urls",
        value_name: "URL",
        help: "Join a cluster through this NATS server (JetStream); repeatable, adds to the \
               config file's list",
        mode: ShorthandMode::Append,
    },
    Shorthand {
        flag: "log-level",
        key: "log.level",
        value_name: "LEVEL",
        help: "trace|debug|info|warn|error|off, or a list with target=level filters such as \
               info,tickfan::net=debug",
        mode: ShorthandMode::Set,
    },
];

/// The command line of the `tickfan` binary.
///
/// Its `Debug` shows the values of secret keys (tokens) as `<redacted>`.
#[derive(Clone, PartialEq, Eq, Parser)]
#[command(
    name = "tickfan",
    version,
    about = "A WebSocket (RFC 6455) pub/sub broker for market-tick feeds",
    long_about = "A WebSocket (RFC 6455) pub/sub broker for market-tick feeds.\n\n\
        Settings come from the built-in defaults, then the --config file (which \
        needs only the keys it changes), then the named flags below, then each \
        --set in order. Run with --print-default-config to see every key with \
        its default and trade-off."
)]
pub struct Cli {
    /// TOML config file merged over the built-in defaults (see --print-default-config)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The named config-key flags given, in [`SHORTHANDS`] order.
    #[command(flatten)]
    pub shorthands: Shorthands,

    /// Set any config key, e.g. --set websocket.max_message_bytes=65536; repeatable, applied in order after the named flags
    #[arg(
        long = "set",
        value_name = "KEY=VALUE",
        value_parser = parse_key_value,
        action = ArgAction::Append,
        help_heading = OVERRIDES_HEADING
    )]
    pub set: Vec<(String, String)>,

    /// Publish a synthetic random-walk market into the broker itself, for the demo page at http.demo_path (sets demo.feed = true; symbols and rate in [demo])
    #[arg(long, help_heading = OVERRIDES_HEADING)]
    pub demo_feed: bool,

    /// Print the built-in default config file, documenting every key, and exit
    #[arg(long)]
    pub print_default_config: bool,

    /// Once listening, write the bound address and a newline (e.g. 127.0.0.1:9001) to FILE, atomically (FILE.tmp, then renamed), so a supervisor or test harness can wait for it; never removed by tickfan
    #[arg(long, value_name = "FILE")]
    pub ready_file: Option<PathBuf>,

    /// An operator command; without one, the broker runs.
    #[command(subcommand)]
    pub command: Option<Operation>,
}

impl Cli {
    /// Returns every override as (mode, dotted key, raw value): named flags
    /// first in [`SHORTHANDS`] order, then each `--set` in order.
    pub fn overrides(&self) -> impl Iterator<Item = (ShorthandMode, &str, &str)> {
        self.shorthands
            .values
            .iter()
            .map(|(key, value)| (mode_of(key), *key, value.as_str()))
            .chain(
                self.set
                    .iter()
                    .map(|(k, v)| (ShorthandMode::Set, k.as_str(), v.as_str())),
            )
    }

    /// Builds the validated configuration: the `--config` file (or the defaults), then every override.
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        Config::from_table(self.load_table(self.config.as_deref())?)
    }

    /// Runs the operator command, if one was given, writing its result to
    /// `out` and errors to `err`; returns its exit status, or `None` when
    /// the broker is to run. `check-config FILE` reads FILE instead of `--config`.
    pub fn run_command(&self, out: &mut impl Write, err: &mut impl Write) -> Option<u8> {
        let operation = self.command.as_ref()?;
        let file = match operation {
            Operation::CheckConfig { file: Some(file) } => Some(file.as_path()),
            _ => self.config.as_deref(),
        };
        Some(commands::run(operation, self.load_table(file), out, err))
    }

    /// The configuration table: `file` (or the defaults), then every
    /// override, before [`Config::from_table`] checks it.
    fn load_table(&self, file: Option<&Path>) -> Result<toml::Table, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = fs::read_to_string(path).map_err(|e| ConfigError::Read {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
                config::parse_over_default(&text, &path.display().to_string())?
            }
            None => config::default_table(),
        };
        if self.demo_feed {
            config::apply_override(&mut table, "demo.feed", "true")?;
        }
        for (mode, key, value) in self.overrides() {
            match mode {
                ShorthandMode::Set => config::apply_override(&mut table, key, value)?,
                ShorthandMode::Append => config::append_override(&mut table, key, value)?,
            }
        }
        Ok(table)
    }

    /// Writes [`DEFAULT_TOML`] to `out` if `--print-default-config` was given; returns whether it did.
    ///
    /// The binary calls this first and exits when it returns `true`.
    pub fn print_default_config(&self, out: &mut impl Write) -> io::Result<bool> {
        if !self.print_default_config {
            return Ok(false);
        }
        out.write_all(DEFAULT_TOML.as_bytes())?;
        out.flush()?;
        Ok(true)
    }

    /// Writes the plain listener's address (or `off` when `server.listen`
    /// is empty) and a newline to the `--ready-file` path, if one was given,
    /// and then `tls=` and the TLS listener's address and a newline when
    /// there is one; returns whether it did.
    ///
    /// The binary calls this once the listeners are bound, so the address
    /// is the real one even for `--listen 127.0.0.1:0`. The text goes to
    /// `FILE.tmp` first and is renamed over `FILE`, so a reader that finds
    /// the file finds all of it (rename is atomic within one file system).
    /// The file is not synced: it announces readiness, it does not outlive
    /// a crash usefully. tickfan never removes it; a supervisor removes a
    /// stale one before starting the broker.
    pub fn write_ready_file(
        &self,
        addr: Option<SocketAddr>,
        tls_addr: Option<SocketAddr>,
    ) -> io::Result<bool> {
        let Some(path) = &self.ready_file else {
            return Ok(false);
        };
        let tmp = ready_tmp_path(path);
        let mut text = match addr {
            Some(addr) => format!("{addr}\n"),
            None => "off\n".to_owned(),
        };
        if let Some(tls_addr) = tls_addr {
            text.push_str(&format!("tls={tls_addr}\n"));
        }
        fs::write(&tmp, text)?;
        if let Err(e) = fs::rename(&tmp, path) {
            // Leave nothing half-done behind; the rename's error is the one to report.
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(true)
    }
}

/// `FILE.tmp` beside `FILE`: the same directory, so the rename stays on one file system.
fn ready_tmp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

impl fmt::Debug for Cli {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cli")
            .field("config", &self.config)
            .field("shorthands", &self.shorthands)
            .field("set", &RedactedPairs(&self.set))
            .field("print_default_config", &self.print_default_config)
            .field("ready_file", &self.ready_file)
            .field("command", &self.command)
            .finish()
    }
}

/// The values of the [`SHORTHANDS`] flags given on the command line.
///
/// Implements clap's [`Args`] by hand so the flags are generated from the
/// table rather than written out as fields. Its `Debug` redacts secret values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Shorthands {
    /// (dotted key, raw value) for each flag given, in [`SHORTHANDS`] order;
    /// an [`ShorthandMode::Append`] flag has one entry per value, in command-line order.
    pub values: Vec<(&'static str, String)>,
}

impl fmt::Debug for Shorthands {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shorthands")
            .field("values", &RedactedPairs(&self.values))
            .finish()
    }
}

/// Debug-prints (key, value) pairs with the values of secret keys replaced by `<redacted>`.
struct RedactedPairs<'a, K>(&'a [(K, String)]);

impl<K: AsRef<str>> fmt::Debug for RedactedPairs<'_, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(key, value)| {
                let key = key.as_ref();
                let value = if config::is_secret_key(key) {
                    "<redacted>"
                } else {
                    value.as_str()
                };
                (key, value)
            }))
            .finish()
    }
}

/// Returns the mode of the shorthand that sets `key`; [`ShorthandMode::Set`] for any other key.
fn mode_of(key: &str) -> ShorthandMode {
    SHORTHANDS
        .iter()
        .find(|s| s.key == key)
        .map_or(ShorthandMode::Set, |s| s.mode)
}

impl Shorthand {
    fn arg(&self) -> Arg {
        let default = lookup(&config::default_table(), self.key)
            .map(|v| format!("; default {v}"))
            .unwrap_or_default();
        let action = match self.mode {
            ShorthandMode::Set => ArgAction::Set,
            ShorthandMode::Append => ArgAction::Append,
        };
        Arg::new(self.flag)
            .long(self.flag)
            .value_name(self.value_name)
            .help(format!("{} [{}{default}]", self.help, self.key))
            .help_heading(OVERRIDES_HEADING)
            .action(action)
            // Let `--workers -1` reach the config check, which names the key.
            .allow_negative_numbers(true)
    }
}

impl Args for Shorthands {
    fn augment_args(cmd: Command) -> Command {
        SHORTHANDS.iter().fold(cmd, |cmd, s| cmd.arg(s.arg()))
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for Shorthands {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut shorthands = Shorthands::default();
        shorthands.update_from_arg_matches(matches)?;
        Ok(shorthands)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        for s in SHORTHANDS {
            match s.mode {
                ShorthandMode::Set => {
                    let Ok(Some(value)) = matches.try_get_one::<String>(s.flag) else {
                        continue;
                    };
                    match self.values.iter_mut().find(|(key, _)| *key == s.key) {
                        Some(slot) => slot.1 = value.clone(),
                        None => self.values.push((s.key, value.clone())),
                    }
                }
                ShorthandMode::Append => {
                    let Ok(Some(values)) = matches.try_get_many::<String>(s.flag) else {
                        continue;
                    };
                    // The matches hold the flag's whole list: replace, do not add twice.
                    self.values.retain(|(key, _)| *key != s.key);
                    self.values
                        .extend(values.map(|value| (s.key, value.clone())));
                }
            }
        }
        // Keep table order whatever order the updates came in; the sort is
        // stable, so an append flag's values keep their command-line order.
        self.values.sort_by_key(|(key, _)| {
            SHORTHANDS
                .iter()
                .position(|s| s.key == *key)
                .unwrap_or(usize::MAX)
        });
        Ok(())
    }
}

/// Splits a `--set` argument at its first `=`.
fn parse_key_value(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!(
            "expected KEY=VALUE with a dotted config key, e.g. server.listen=0.0.0.0:9001, got {arg:?}"
        )),
    }
}

/// Returns the value at a dotted key of a table, if there is one.
fn lookup<'t>(table: &'t toml::Table, dotted_key: &str) -> Option<&'t toml::Value> {
    let (parents, leaf) = match dotted_key.rsplit_once('.') {
        Some((parents, leaf)) => (Some(parents), leaf),
        None => (None, dotted_key),
    };
    let mut section = table;
    for part in parents.into_iter().flat_map(|p| p.split('.')) {
        section = section.get(part)?.as_table()?;
    }
    section.get(leaf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("tickfan").chain(args.iter().copied())).unwrap()
    }

    /// Writes `text` to a fresh file under the system temp dir; the caller removes it.
    fn temp_config(text: &str) -> PathBuf {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "tickfan-cli-test-{}-{}.toml",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn command_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_shorthand_names_a_default_key() {
        let defaults = config::default_table();
        for s in SHORTHANDS {
            assert!(
                lookup(&defaults, s.key).is_some_and(|v| !v.is_table()),
                "--{} maps to unknown key {}",
                s.flag,
                s.key
            );
        }
    }

    #[test]
    fn help_lists_every_flag_with_its_key() {
        let help = Cli::command().render_long_help().to_string();
        for s in SHORTHANDS {
            assert!(help.contains(&format!("--{}", s.flag)), "{help}");
            assert!(help.contains(s.key), "{help}");
        }
        for flag in [
            "--config",
            "--set",
            "--print-default-config",
            "--ready-file",
        ] {
            assert!(help.contains(flag), "{help}");
        }
        assert!(
            help.contains("[server.listen; default \"127.0.0.1:9001\"]"),
            "{help}"
        );
    }

    #[test]
    fn no_arguments_give_the_embedded_default() {
        assert_eq!(
            parse(&[]).load_config().unwrap(),
            Config::embedded_default()
        );
    }

    #[test]
    fn named_flags_set_their_keys() {
        let c = parse(&[
            "--listen",
            "0.0.0.0:9100",
            "--workers",
            "2",
            "--echo-path",
            "/echo",
            "--max-message-bytes",
            "16777216",
            "--max-frame-bytes",
            "16777216",
            "--max-fragments-per-message",
            "100000",
            "--max-connections",
            "5",
            "--max-header-bytes",
            "2048",
            "--handshake-timeout-ms",
            "10",
            "--ping-interval-ms",
            "20",
            "--idle-timeout-ms",
            "30",
            "--close-timeout-ms",
            "40",
            "--shutdown-grace-ms",
            "0",
            "--log-level",
            "debug",
            "--ws-path",
            "/feed",
            "--shards",
            "8",
            "--history-depth",
            "0",
            "--topic-ttl-ms",
            "60000",
            "--max-topics",
            "10",
            "--max-topics-per-connection",
            "3",
            "--max-client-errors",
            "4",
            "--heartbeat-interval-ms",
            "250",
            "--max-queue-bytes",
            "65536",
            "--slow-consumer",
            "disconnect",
            "--slow-consumer-grace-ms",
            "0",
        ])
        .load_config()
        .unwrap();
        assert_eq!(c.server.listen, Some("0.0.0.0:9100".parse().unwrap()));
        assert_eq!(c.server.workers, 2);
        assert_eq!(c.server.max_connections, 5);
        assert_eq!(c.server.shutdown_grace_ms, 0);
        assert_eq!(c.websocket.echo_path.as_deref(), Some("/echo"));
        assert_eq!(c.websocket.max_message_bytes, 16_777_216);
        assert_eq!(c.websocket.max_frame_bytes, 16_777_216);
        assert_eq!(c.websocket.max_fragments_per_message, 100_000);
        assert_eq!(c.websocket.max_header_bytes, 2048);
        assert_eq!(c.websocket.handshake_timeout_ms, 10);
        assert_eq!(c.websocket.ping_interval_ms, 20);
        assert_eq!(c.websocket.idle_timeout_ms, 30);
        assert_eq!(c.websocket.close_timeout_ms, 40);
        assert_eq!(c.log.level, "debug");
        assert_eq!(c.websocket.path, "/feed");
        assert_eq!(c.broker.shards, 8);
        assert_eq!(c.broker.history_depth, 0);
        assert_eq!(c.broker.topic_ttl_ms, 60_000);
        assert_eq!(c.broker.max_topics, 10);
        assert_eq!(c.broker.max_topics_per_connection, 3);
        assert_eq!(c.broker.max_client_errors, 4);
        assert_eq!(c.broker.heartbeat_interval_ms, 250);
        assert_eq!(c.broker.max_queue_bytes, 65_536);
        assert_eq!(
            c.broker.slow_consumer,
            config::SlowConsumerPolicy::Disconnect
        );
        assert_eq!(c.broker.slow_consumer_grace_ms, 0);
    }

    #[test]
    fn token_flags_append_in_order_after_the_file() {
        let c = parse(&["--publish-token", "a", "--publish-token", "b"])
            .load_config()
            .unwrap();
        assert_eq!(c.auth.publish_tokens, ["a", "b"]);
        assert!(c.auth.subscribe_tokens.is_empty());

        let path =
            temp_config("[auth]\npublish_tokens = [\"file\"]\nsubscribe_tokens = [\"s0\"]\n");
        let cli = parse(&[
            "--subscribe-token",
            "s1",
            "--publish-token",
            "p1",
            "--config",
            path.to_str().unwrap(),
            "--subscribe-token",
            "s2",
            "--set",
            "auth.subscribe_requires_token=true",
        ]);
        let result = cli.load_config();
        fs::remove_file(&path).unwrap();
        let c = result.unwrap();
        assert_eq!(c.auth.publish_tokens, ["file", "p1"]);
        assert_eq!(c.auth.subscribe_tokens, ["s0", "s1", "s2"]);
        assert!(c.auth.subscribe_requires_token);

        // --set replaces the whole list, after the appends.
        let c = parse(&[
            "--publish-token",
            "a",
            "--set",
            "auth.publish_tokens=[\"x\",\"y\"]",
        ])
        .load_config()
        .unwrap();
        assert_eq!(c.auth.publish_tokens, ["x", "y"]);

        let e = parse(&["--publish-token", "a b"])
            .load_config()
            .unwrap_err();
        assert_eq!(e.key(), Some("auth.publish_tokens"));
        assert!(!e.to_string().contains("a b"), "{e}");
        // Printable but not a bearer token (RFC 6750 §2.1): refused too, unseen.
        for token in ["tok@SECRET", "SECRET\"", "SECRET=x", "SECRET;"] {
            let e = parse(&["--publish-token", "ok", "--subscribe-token", token])
                .load_config()
                .unwrap_err();
            assert_eq!(e.key(), Some("auth.subscribe_tokens"), "{token}");
            assert!(!e.to_string().contains("SECRET"), "{e}");
            let e = parse(&["--publish-token", token])
                .load_config()
                .unwrap_err();
            assert_eq!(e.key(), Some("auth.publish_tokens"), "{token}");
        }

        // Set flags stay single: repeating one is a usage error.
        assert!(Cli::try_parse_from(["tickfan", "--shards", "1", "--shards", "2"]).is_err());
    }

    #[test]
    fn debug_redacts_token_values() {
        let cli = parse(&[
            "--publish-token",
            "pub-SECRET",
            "--subscribe-token",
            "sub-SECRET",
            "--set",
            "auth.publish_tokens=[\"set-SECRET\"]",
            "--set",
            "log.level=debug",
        ]);
        let debug = format!("{cli:?}");
        assert!(!debug.contains("SECRET"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        assert!(debug.contains("debug"), "{debug}");
        let c = cli.load_config().unwrap();
        assert!(!format!("{c:?}").contains("SECRET"));
    }

    #[test]
    fn slow_consumer_flag_error_names_the_key_and_choices() {
        let e = parse(&["--slow-consumer", "block"])
            .load_config()
            .unwrap_err();
        assert_eq!(e.key(), Some("broker.slow_consumer"));
        assert!(
            e.to_string().contains("conflate, drop or disconnect"),
            "{e}"
        );
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("conflate|drop|disconnect"), "{help}");
        let e = parse(&["--ws-path", "ws"]).load_config().unwrap_err();
        assert_eq!(e.key(), Some("websocket.path"));
    }

    #[test]
    fn flags_override_file_and_set_overrides_flags() {
        let path = temp_config(
            "[server]\nworkers = 4\nbacklog = 64\n[websocket]\nmax_frame_bytes = 4096\n",
        );
        let cli = parse(&[
            "--config",
            path.to_str().unwrap(),
            "--workers",
            "6",
            "--set",
            "websocket.max_frame_bytes=8192",
            "--set",
            "server.workers=7",
            "--set",
            "server.workers=9",
        ]);
        let result = cli.load_config();
        fs::remove_file(&path).unwrap();
        let c = result.unwrap();
        assert_eq!(c.server.backlog, 64, "file value kept");
        assert_eq!(c.server.workers, 9, "last --set wins over the flag");
        assert_eq!(c.websocket.max_frame_bytes, 8192);
        assert_eq!(
            c.websocket.max_message_bytes,
            Config::embedded_default().websocket.max_message_bytes
        );
    }

    #[test]
    fn flag_errors_name_the_key() {
        let e = parse(&["--listen", "abc"]).load_config().unwrap_err();
        assert_eq!(
            e.to_string(),
            "config key `server.listen`: \"abc\" is not a socket address"
        );
        let e = parse(&["--workers", "-1"]).load_config().unwrap_err();
        assert_eq!(e.key(), Some("server.workers"));
        let e = parse(&["--echo-path", "echo"]).load_config().unwrap_err();
        assert_eq!(e.key(), Some("websocket.echo_path"));
        let e = parse(&["--ping-interval-ms", "60000"])
            .load_config()
            .unwrap_err();
        assert_eq!(e.key(), Some("websocket.idle_timeout_ms"));
        let e = parse(&["--set", "websocket.max_frme_bytes=1"])
            .load_config()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown config key `websocket.max_frme_bytes`"
        );
    }

    #[test]
    fn set_needs_key_equals_value() {
        assert!(Cli::try_parse_from(["tickfan", "--set", "server.workers"]).is_err());
        assert!(Cli::try_parse_from(["tickfan", "--set", "=4"]).is_err());
        assert_eq!(
            parse(&["--set", "log.level=info,tickfan=debug"]).set,
            vec![("log.level".to_owned(), "info,tickfan=debug".to_owned())]
        );
        assert_eq!(
            parse(&["--set", "log.level=info,tickfan=debug"])
                .load_config()
                .unwrap()
                .log
                .level,
            "info,tickfan=debug"
        );
    }

    #[test]
    fn missing_config_file_names_the_path() {
        let e = parse(&["--config", "/nonexistent/tickfan.toml"])
            .load_config()
            .unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e:?}");
        assert!(e.to_string().contains("/nonexistent/tickfan.toml"), "{e}");
    }

    #[test]
    fn bad_config_file_names_the_path_or_key() {
        let path = temp_config("[server\n");
        let syntax = parse(&["--config", path.to_str().unwrap()]).load_config();
        fs::remove_file(&path).unwrap();
        let e = syntax.unwrap_err();
        assert!(e.to_string().contains(path.to_str().unwrap()), "{e}");

        let path = temp_config("[server]\nlistn = \"0.0.0.0:1\"\n");
        let unknown = parse(&["--config", path.to_str().unwrap()]).load_config();
        fs::remove_file(&path).unwrap();
        assert_eq!(unknown.unwrap_err().key(), Some("server.listn"));
    }

    #[test]
    fn print_default_config_only_when_asked() {
        let mut out = Vec::new();
        assert!(!parse(&[]).print_default_config(&mut out).unwrap());
        assert!(out.is_empty());
        assert!(parse(&["--print-default-config"])
            .print_default_config(&mut out)
            .unwrap());
        assert_eq!(out, DEFAULT_TOML.as_bytes());
    }

    #[test]
    fn ready_file_gets_the_address_and_a_newline_only_when_asked() {
        let addr: Option<SocketAddr> = Some("127.0.0.1:45123".parse().unwrap());
        assert!(!parse(&[]).write_ready_file(addr, None).unwrap());

        let path = temp_config("stale");
        let cli = parse(&["--ready-file", path.to_str().unwrap()]);
        assert_eq!(cli.ready_file.as_deref(), Some(path.as_path()));
        let wrote = cli.write_ready_file(addr, None);
        let text = fs::read_to_string(&path);
        fs::remove_file(&path).unwrap();
        assert!(wrote.unwrap());
        assert_eq!(text.unwrap(), "127.0.0.1:45123\n");
        assert!(
            !ready_tmp_path(&path).exists(),
            "the temporary file was renamed"
        );

        let e = parse(&["--ready-file", "/nonexistent/tickfan.ready"])
            .write_ready_file(addr, None)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    }

    #[test]
    fn ready_file_says_off_for_a_missing_plain_listener() {
        let path = temp_config("tls-only");
        let cli = parse(&["--ready-file", path.to_str().unwrap()]);
        let tls: SocketAddr = "127.0.0.1:9443".parse().unwrap();
        let wrote = cli.write_ready_file(None, Some(tls));
        let text = fs::read_to_string(&path);
        fs::remove_file(&path).unwrap();
        assert!(wrote.unwrap());
        assert_eq!(text.unwrap(), "off\ntls=127.0.0.1:9443\n");
    }
}
