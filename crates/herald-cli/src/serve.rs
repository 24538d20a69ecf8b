//! `herald serve`: runs the broker library as a process: settings from flags, environment, a
//! TOML file and defaults; logging; the HTTP side; and a clean stop on SIGTERM/SIGINT.

use std::ffi::OsString;
use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use herald_broker::{Broker, BrokerConfig, StartError, http};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::CliError;
use serde::de::DeserializeOwned;
use toml::{Table, Value};

/// `herald serve`: every setting comes from, in decreasing precedence, a flag, a `HERALD_*`
/// environment variable, the TOML config file, or the default.
#[derive(Debug, clap::Args)]
#[command(after_long_help = settings_help())]
pub struct ServeArgs {
    /// Directory holding topics and their segment logs [default: ./herald-data]
    /// [env: HERALD_DATA_DIR]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address the Kafka protocol listens on [default: 127.0.0.1:9092] [env: HERALD_KAFKA_ADDR]
    #[arg(long, value_name = "HOST:PORT")]
    pub kafka_addr: Option<SocketAddr>,
    /// Address of the HTTP side: /health and /metrics [default: 127.0.0.1:8092]
    /// [env: HERALD_HTTP_ADDR]
    #[arg(long, value_name = "HOST:PORT")]
    pub http_addr: Option<SocketAddr>,
    /// TOML file with settings; keys are the setting names listed below
    #[arg(long, value_name = "FILE", env = "HERALD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format: human (default) or json [env: HERALD_LOG_FORMAT]
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per event, for log collectors.
    Json,
}

/// Settings of the process around the broker library: where the HTTP side listens and how it
/// logs. They share the file and the environment with [`BrokerConfig`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProcessSettings {
    http_addr: SocketAddr,
    log_format: LogFormat,
    /// A `RUST_LOG`-style filter, e.g. `info` or `herald_broker=debug,info`.
    log: String,
}

impl Default for ProcessSettings {
    fn default() -> Self {
        ProcessSettings {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8092)),
            log_format: LogFormat::Human,
            log: "info".to_string(),
        }
    }
}

/// Printed by `herald serve --help`: how settings combine, then every setting with its
/// environment variable and default, listed from the defaults themselves so it cannot drift.
fn settings_help() -> String {
    let mut help = String::from(
        "Settings and precedence:
  Every setting is taken from the first of: a command-line flag, a HERALD_<NAME> environment
  variable, the --config TOML file, the built-in default. Setting names are the keys of the TOML
  file; the environment variable is the name in capitals with HERALD_ in front; keys inside a
  table join with a double underscore (HERALD_GROUPS__TICK_MS sets tick_ms in [groups]).
  The meaning of each broker setting is documented on herald_broker::BrokerConfig.

  log is a filter in RUST_LOG syntax (info, herald_broker=debug,warn); log_format is human or
  json; http_addr serves /health and /metrics; advertised_host (unset: the bound IP) is the host
  name clients are told in Metadata responses.

  setting = default                                   environment variable
",
    );
    if let Ok(defaults) = Table::try_from(Combined::default()) {
        let mut lines = Vec::new();
        leaves(&defaults, &mut Vec::new(), &mut |path, value| {
            let shown = match &value {
                Value::String(text) => format!("\"{text}\""),
                other => other.to_string(),
            };
            let key = path.join(".");
            let env = format!(
                "{ENV_PREFIX}{}",
                path.join(ENV_NESTING).to_ascii_uppercase()
            );
            lines.push(format!("  {:<50} {env}", format!("{key} = {shown}")));
        });
        for line in lines {
            help.push_str(&line);
            help.push('\n');
        }
    }
    help.push_str(
        "
Signals:
  SIGTERM or SIGINT stops accepting connections, finishes requests in flight, flushes the logs
  to disk and exits 0.",
    );
    help
}

/// Runs `herald serve` until SIGTERM or SIGINT.
pub fn run(args: ServeArgs) -> Result<(), CliError> {
    let (process, broker_config) =
        settings(&args).map_err(|error| CliError::Usage(error.to_string()))?;
    init_logging(&process)?;
    use_one_malloc_arena();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("herald-serve")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(process, broker_config))
}

/// Caps glibc at one malloc arena, so that the broker's idle `malloc_trim` (in its maintenance
/// task) can hand memory grown under load back to the system.
///
/// `malloc_trim` releases the top of the main arena but not the tops of the per-thread arenas,
/// where glibc keeps up to twice its dynamic mmap threshold (which grows to the largest buffer
/// freed, several MiB for Fetch reads and Produce frames). With the default arenas a produce
/// and consume run left 20 to 170 MiB resident while idle. Fixing the mmap threshold instead
/// also returns that memory, but every large buffer is then a fresh mapping whose page faults
/// cost more than a third of the broker's CPU under load; one arena keeps the reuse.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn use_one_malloc_arena() {
    // SAFETY: `mallopt` only changes allocator parameters; it is called once, before the
    // runtime's threads exist, and glibc serialises it against allocations anyway.
    let accepted = unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    if accepted == 0 {
        tracing::warn!(
            "could not cap the allocator's arenas; idle memory may stay high after load"
        );
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn use_one_malloc_arena() {}

/// Assembles the process settings and the broker's config from flags, environment and file.
fn settings(args: &ServeArgs) -> Result<(ProcessSettings, BrokerConfig), ConfigError> {
    settings_from(args, std::env::vars_os().collect())
}

fn settings_from(
    args: &ServeArgs,
    env: Vec<(OsString, OsString)>,
) -> Result<(ProcessSettings, BrokerConfig), ConfigError> {
    let text = match &args.config {
        Some(path) => Some(read_config_file(path)?),
        None => None,
    };
    let file = args.config.as_deref().zip(text.as_deref());
    let mut flags = Vec::new();
    if let Some(dir) = &args.data_dir {
        flags.push((
            "--data-dir",
            "data_dir",
            Value::String(dir.display().to_string()),
        ));
    }
    if let Some(addr) = args.kafka_addr {
        flags.push((
            "--kafka-addr",
            "kafka_addr",
            Value::String(addr.to_string()),
        ));
    }
    if let Some(addr) = args.http_addr {
        flags.push(("--http-addr", "http_addr", Value::String(addr.to_string())));
    }
    if let Some(format) = args.log_format {
        let name = match format {
            LogFormat::Human => "human",
            LogFormat::Json => "json",
        };
        flags.push((
            "--log-format",
            "log_format",
            Value::String(name.to_string()),
        ));
    }
    let combined: Combined = layer(&Combined::default(), file, env, flags)?;
    Ok((combined.process, combined.broker))
}

/// The flat namespace of settings: the process's own and the broker library's, side by side.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Combined {
    #[serde(flatten)]
    process: ProcessSettings,
    #[serde(flatten)]
    broker: BrokerConfig,
}

fn init_logging(process: &ProcessSettings) -> Result<(), CliError> {
    let filter = tracing_subscriber::EnvFilter::try_new(&process.log)
        .map_err(|error| CliError::Usage(format!("bad log filter `{}`: {error}", process.log)))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let installed = match process.log_format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    installed.map_err(|error| CliError::Other(anyhow::anyhow!("installing the logger: {error}")))
}

/// Installs the SIGTERM and SIGINT handlers now and returns a future that resolves on the
/// first of them, naming it.
fn stop_signal() -> Result<impl Future<Output = &'static str>, std::io::Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        }
    })
}

async fn serve(process: ProcessSettings, config: BrokerConfig) -> Result<(), CliError> {
    // Signal handlers go in first, so a SIGTERM during start-up is not the default "die now".
    let signal = stop_signal().context("installing signal handlers")?;
    let http_listener = http::bind(process.http_addr)
        .await
        .map_err(|error| CliError::Other(error.into()))?;
    let broker = Broker::start(config).await.map_err(|error| match error {
        StartError::Config(_) => CliError::Usage(error.to_string()),
        error => CliError::Other(error.into()),
    })?;
    let broker = Arc::new(broker);
    tracing::info!(
        kafka_addr = %broker.local_addr(),
        http_addr = %process.http_addr,
        "herald broker ready"
    );
    let (http_stop, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http_task = tokio::spawn(http::serve(http_listener, broker.clone(), async move {
        let _ = http_stopped.await;
    }));
    let which = signal.await;
    tracing::info!(
        signal = which,
        "stopping: finishing requests in flight and flushing"
    );
    broker
        .shutdown()
        .await
        .map_err(|error| CliError::Other(anyhow::anyhow!("shutting down: {error}")))?;
    let _ = http_stop.send(());
    match http_task.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "HTTP side stopped with an error"),
        Err(error) => tracing::warn!(%error, "HTTP task failed"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// Prefix of the environment variables that set serve settings (`HERALD_DATA_DIR`, ...).
const ENV_PREFIX: &str = "HERALD_";
/// Separates nested keys in environment variable names: `HERALD_A__B` sets `b` inside table `a`.
const ENV_NESTING: &str = "__";
/// Largest config file read; a settings file has no reason to be bigger.
const CONFIG_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// Where a setting came from, for error messages that point at the right place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File(PathBuf),
    Env(String),
    Flag(&'static str),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File(path) => write!(f, "config file {}", path.display()),
            Origin::Env(name) => write!(f, "environment variable {name}"),
            Origin::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// Why the serve settings could not be assembled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is larger than {CONFIG_FILE_BYTES_MAX} bytes")]
    TooLarge { path: PathBuf },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("unknown setting `{key}` in {origin}")]
    UnknownKey { key: String, origin: Origin },
    #[error("bad value for `{key}` in {origin}: {message}")]
    BadValue {
        key: String,
        origin: Origin,
        message: String,
    },
    #[error("invalid settings: {0}")]
    Invalid(String),
    #[error("the default settings cannot be listed: {0}")]
    Defaults(String),
}

/// Assembles settings of type `T` from, in increasing precedence: `defaults`, the TOML text of a
/// config file, `HERALD_*` environment variables, and command-line flags.
///
/// The keys `T` knows are found from `T` itself (its defaults serialized to TOML, and what
/// survives a round trip through `T`), so a new field in the broker's config becomes settable from
/// all three places without touching this function. A key in the file that `T` does not know is
/// an error (a typo must not silently keep the default); an environment variable that is not a
/// known key is ignored, because `HERALD_*` variables also configure the client commands.
pub fn layer<T: Serialize + DeserializeOwned>(
    defaults: &T,
    file: Option<(&Path, &str)>,
    env: impl IntoIterator<Item = (OsString, OsString)>,
    flags: Vec<(&'static str, &str, Value)>,
) -> Result<T, ConfigError> {
    let known =
        Table::try_from(defaults).map_err(|error| ConfigError::Defaults(error.to_string()))?;
    let mut merged = known.clone();
    // Every value set, with where it came from, in the order applied.
    let mut applied: Vec<(Vec<String>, Value, Origin)> = Vec::new();

    if let Some((path, text)) = file {
        let table: Table = text
            .parse()
            .map_err(|error: toml::de::Error| ConfigError::Syntax {
                path: path.to_path_buf(),
                message: error.message().to_string(),
            })?;
        let origin = Origin::File(path.to_path_buf());
        leaves(&table, &mut Vec::new(), &mut |key, value| {
            applied.push((key, value, origin.clone()));
        });
        merge(&mut merged, table);
    }

    let mut env: Vec<(String, String)> = env
        .into_iter()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
        .filter(|(name, _)| name.starts_with(ENV_PREFIX))
        .collect();
    // Sorted so that the outcome does not depend on the environment's order.
    env.sort();
    for (name, text) in env {
        let path: Vec<String> = name[ENV_PREFIX.len()..]
            .split(ENV_NESTING)
            .map(str::to_ascii_lowercase)
            .collect();
        let value = match lookup(&known, &path) {
            Some(default) => {
                parse_like(default, &text).map_err(|message| ConfigError::BadValue {
                    key: path.join("."),
                    origin: Origin::Env(name.clone()),
                    message,
                })?
            }
            // Optional settings are absent from the defaults; they are strings when `T` keeps
            // them, and the variable belongs to someone else when it does not.
            None if accepts::<T>(&known, &path, &Value::String(text.clone())) => {
                Value::String(text)
            }
            None => continue,
        };
        set(&mut merged, &path, value.clone());
        applied.push((path, value, Origin::Env(name)));
    }

    for (flag, key, value) in flags {
        let path: Vec<String> = key.split('.').map(str::to_string).collect();
        set(&mut merged, &path, value.clone());
        applied.push((path, value, Origin::Flag(flag)));
    }

    let settings = match T::deserialize(Value::Table(merged)) {
        Ok(settings) => settings,
        Err(error) => {
            // Point at the value that does not fit, highest precedence first, when one alone
            // makes the defaults fail.
            for (path, value, origin) in applied.iter().rev() {
                if let Err(message) = deserialize_with::<T>(&known, path, value) {
                    if lookup(&known, path).is_none() && !accepts::<T>(&known, path, value) {
                        return Err(ConfigError::UnknownKey {
                            key: path.join("."),
                            origin: origin.clone(),
                        });
                    }
                    return Err(ConfigError::BadValue {
                        key: path.join("."),
                        origin: origin.clone(),
                        message,
                    });
                }
            }
            return Err(ConfigError::Invalid(error.to_string()));
        }
    };

    // A key `T` ignored is gone after a round trip: it was a typo or a setting that does not exist.
    let round_trip =
        Table::try_from(&settings).map_err(|error| ConfigError::Defaults(error.to_string()))?;
    for (path, _, origin) in &applied {
        if lookup(&round_trip, path).is_none() {
            return Err(ConfigError::UnknownKey {
                key: path.join("."),
                origin: origin.clone(),
            });
        }
    }
    Ok(settings)
}

/// Deserializes `T` from its defaults with one value changed, reporting why that fails.
fn deserialize_with<T: Serialize + DeserializeOwned>(
    known: &Table,
    path: &[String],
    value: &Value,
) -> Result<T, String> {
    let mut probe = known.clone();
    set(&mut probe, path, value.clone());
    T::deserialize(Value::Table(probe)).map_err(|error| error.message().to_string())
}

/// Whether `T` keeps `value` at `path` through a round trip (the key is one of its fields).
fn accepts<T: Serialize + DeserializeOwned>(known: &Table, path: &[String], value: &Value) -> bool {
    deserialize_with::<T>(known, path, value)
        .ok()
        .and_then(|settings| Table::try_from(&settings).ok())
        .is_some_and(|round_trip| lookup(&round_trip, path).is_some())
}

/// Calls `each` with the dotted path and value of every non-table value in `table`.
fn leaves(table: &Table, prefix: &mut Vec<String>, each: &mut impl FnMut(Vec<String>, Value)) {
    for (key, value) in table {
        prefix.push(key.clone());
        match value {
            Value::Table(inner) => leaves(inner, prefix, each),
            value => each(prefix.clone(), value.clone()),
        }
        prefix.pop();
    }
}

/// Merges `overlay` into `base`, key by key inside nested tables.
fn merge(base: &mut Table, overlay: Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(inner)), Value::Table(overlay_inner)) => merge(inner, overlay_inner),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn lookup<'t>(table: &'t Table, path: &[String]) -> Option<&'t Value> {
    let (first, rest) = path.split_first()?;
    let value = table.get(first)?;
    if rest.is_empty() {
        return Some(value);
    }
    match value {
        Value::Table(inner) => lookup(inner, rest),
        _ => None,
    }
}

fn set(table: &mut Table, path: &[String], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        table.insert(first.clone(), value);
        return;
    }
    let entry = table
        .entry(first.clone())
        .or_insert_with(|| Value::Table(Table::new()));
    if let Value::Table(inner) = entry {
        set(inner, rest, value);
    }
}

/// Parses an environment variable's text as a value of the same TOML type as the default, so
/// `HERALD_DATA_DIR=123` stays a string and `HERALD_RETENTION_MS=abc` is an error.
fn parse_like(default: &Value, text: &str) -> Result<Value, String> {
    let text = text.trim();
    match default {
        Value::String(_) => Ok(Value::String(text.to_string())),
        Value::Integer(_) => text
            .replace('_', "")
            .parse::<i64>()
            .map(Value::Integer)
            .map_err(|_| format!("`{text}` is not an integer")),
        Value::Float(_) => text
            .parse::<f64>()
            .map(Value::Float)
            .map_err(|_| format!("`{text}` is not a number")),
        Value::Boolean(_) => match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(Value::Boolean(true)),
            "false" | "0" | "no" | "off" => Ok(Value::Boolean(false)),
            _ => Err(format!("`{text}` is not true or false")),
        },
        Value::Datetime(_) | Value::Array(_) | Value::Table(_) => {
            // Structured values are written in TOML syntax: HERALD_X='[1, 2]' or '{ a = 1 }'.
            let table: Table = format!("value = {text}")
                .parse()
                .map_err(|error: toml::de::Error| error.message().to_string())?;
            table
                .get("value")
                .cloned()
                .ok_or_else(|| "empty value".to_string())
        }
    }
}

/// Reads a config file, refusing files above [`CONFIG_FILE_BYTES_MAX`].
pub fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    let read_error = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(read_error)?;
    if metadata.len() > CONFIG_FILE_BYTES_MAX {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    std::fs::read_to_string(path).map_err(read_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Settings {
        data_dir: String,
        retention_ms: u64,
        auto_create: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        advertised_host: Option<String>,
        limits: Limits,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Limits {
        request_bytes_max: u64,
    }

    fn defaults() -> Settings {
        Settings {
            data_dir: "./herald-data".into(),
            retention_ms: 1000,
            auto_create: true,
            advertised_host: None,
            limits: Limits {
                request_bytes_max: 100,
            },
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    #[test]
    fn help_lists_every_setting_with_its_default() {
        let help = settings_help();
        for line in [
            "  data_dir = \"./herald-data\"",
            "  kafka_addr = \"127.0.0.1:9092\"",
            "  http_addr = \"127.0.0.1:8092\"",
            "  log_format = \"human\"",
        ] {
            assert!(help.contains(line), "{line} missing from\n{help}");
        }
        assert!(help.contains("HERALD_DATA_DIR"), "{help}");
        assert!(help.contains("HERALD_REQUEST_BYTES_MAX"), "{help}");
    }

    #[test]
    fn serve_defaults_match_the_documented_ones() {
        let (process, broker) = settings_from(
            &ServeArgs {
                data_dir: None,
                kafka_addr: None,
                http_addr: None,
                config: None,
                log_format: None,
            },
            Vec::new(),
        )
        .unwrap();
        assert_eq!(broker.data_dir, PathBuf::from("./herald-data"));
        assert_eq!(broker.kafka_addr.to_string(), "127.0.0.1:9092");
        assert_eq!(process.http_addr.to_string(), "127.0.0.1:8092");
        assert_eq!(process.log_format, LogFormat::Human);
    }

    #[test]
    fn defaults_stand_when_nothing_is_set() {
        let got = layer(&defaults(), None, env(&[]), vec![]).unwrap();
        assert_eq!(got, defaults());
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let file = "data_dir = \"from-file\"\nretention_ms = 5\n[limits]\nrequest_bytes_max = 7\n";
        let path = Path::new("herald.toml");
        let got = layer(
            &defaults(),
            Some((path, file)),
            env(&[
                ("HERALD_DATA_DIR", "from-env"),
                ("HERALD_RETENTION_MS", "9"),
            ]),
            vec![("--data-dir", "data_dir", Value::String("from-flag".into()))],
        )
        .unwrap();
        assert_eq!(got.data_dir, "from-flag");
        assert_eq!(got.retention_ms, 9);
        assert_eq!(got.limits.request_bytes_max, 7);
        assert!(got.auto_create);
    }

    #[test]
    fn nested_env_keys_use_a_double_underscore() {
        let got = layer(
            &defaults(),
            None,
            env(&[
                ("HERALD_LIMITS__REQUEST_BYTES_MAX", "4_096"),
                ("HERALD_AUTO_CREATE", "off"),
            ]),
            vec![],
        )
        .unwrap();
        assert_eq!(got.limits.request_bytes_max, 4096);
        assert!(!got.auto_create);
    }

    #[test]
    fn unrelated_env_variables_are_ignored() {
        let got = layer(
            &defaults(),
            None,
            env(&[
                ("HERALD_BOOTSTRAP", "x:1"),
                ("PATH", "/bin"),
                ("HERALD_", ""),
            ]),
            vec![],
        )
        .unwrap();
        assert_eq!(got, defaults());
    }

    #[test]
    fn unknown_file_key_names_the_key_and_the_file() {
        let error = layer(
            &defaults(),
            Some((Path::new("a.toml"), "[limits]\nrequest_byte_max = 1\n")),
            env(&[]),
            vec![],
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown setting `limits.request_byte_max` in config file a.toml"
        );
    }

    #[test]
    fn bad_env_value_names_the_variable() {
        let error = layer(
            &defaults(),
            None,
            env(&[("HERALD_RETENTION_MS", "soon")]),
            vec![],
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "bad value for `retention_ms` in environment variable HERALD_RETENTION_MS: `soon` is not an integer"
        );
    }

    #[test]
    fn wrong_type_in_file_names_the_key_and_the_file() {
        let error = layer(
            &defaults(),
            Some((Path::new("a.toml"), "retention_ms = \"long\"\n")),
            env(&[]),
            vec![],
        )
        .unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("bad value for `retention_ms` in config file a.toml: "),
            "{message}"
        );
    }

    #[test]
    fn optional_settings_absent_from_the_defaults_are_known() {
        let got = layer(
            &defaults(),
            Some((Path::new("a.toml"), "advertised_host = \"file\"\n")),
            env(&[]),
            vec![],
        )
        .unwrap();
        assert_eq!(got.advertised_host.as_deref(), Some("file"));
        let got = layer(
            &defaults(),
            None,
            env(&[("HERALD_ADVERTISED_HOST", "env")]),
            vec![],
        )
        .unwrap();
        assert_eq!(got.advertised_host.as_deref(), Some("env"));
    }

    #[test]
    fn syntax_error_is_reported() {
        let error = layer(
            &defaults(),
            Some((Path::new("a.toml"), "retention_ms = = 3")),
            env(&[]),
            vec![],
        )
        .unwrap_err();
        assert!(matches!(error, ConfigError::Syntax { .. }), "{error}");
    }
}
