//! `herald serve`: runs the broker library as a process: settings from flags, environment, a
//! TOML file and defaults; logging; the HTTP side; and a clean stop on SIGTERM/SIGINT.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use herald_broker::{Broker, BrokerConfig, StartError, http};
use herald_direct::mdns::{PEERS_MAX, PeerBrowser};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::CliError;
use crate::process::{LogFormat, init_logging, log_filter, raise_open_files_limit, stop_signal};
use crate::settings::{ConfigError, help_lines, layer, read_config_file};
use toml::Value;

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
    /// Kafka listeners, `PROTOCOL://HOST:PORT,...` with PLAINTEXT, SSL, SASL_PLAINTEXT or
    /// SASL_SSL; replaces --kafka-addr [env: HERALD_LISTENERS]
    #[arg(long, value_name = "LISTENERS")]
    pub listeners: Option<String>,
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
    /// List the brokerless members seen on the LAN by mDNS in the console's Peers page
    /// [default: true] [env: HERALD_PEERS_MDNS]
    #[arg(long, value_name = "BOOL")]
    pub peers_mdns: Option<bool>,
    /// Send Fetch responses' record batches from the segment files with sendfile(2) instead
    /// of reading them into memory first [default: true] [env: HERALD_FETCH_SENDFILE]
    #[arg(long, value_name = "BOOL")]
    pub fetch_sendfile: Option<bool>,
}

/// Settings of the process around the broker library: where the HTTP side listens and how it
/// logs. They share the file and the environment with [`BrokerConfig`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProcessSettings {
    http_addr: SocketAddr,
    /// Serve HTTP over TLS with the broker's `ssl_certificate_path` and `ssl_key_path`.
    http_tls: bool,
    /// A bearer token for everything on the HTTP side but /health; set it from the file or
    /// the environment, never a flag.
    http_admin_token: Option<String>,
    /// Accept the broker's SASL users by HTTP basic auth as well.
    http_basic_auth: bool,
    /// Protect /metrics too (it is open by default so scrapers need no secret).
    http_metrics_auth: bool,
    /// The JSON of a `herald bench matrix` run, shown by the console's trade-off table.
    bench_results_path: Option<PathBuf>,
    /// Browse mDNS for brokerless members, listed by `GET /api/v1/peers` and the Peers page.
    peers_mdns: bool,
    log_format: LogFormat,
    /// A `RUST_LOG`-style filter, e.g. `info` or `herald_broker=debug,info`.
    log: String,
}

impl Default for ProcessSettings {
    fn default() -> Self {
        ProcessSettings {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8092)),
            http_tls: false,
            http_admin_token: None,
            http_basic_auth: false,
            http_metrics_auth: false,
            bench_results_path: None,
            peers_mdns: true,
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
  json; http_addr serves /health, /metrics, the web console (/) and the admin API
  (/api/v1, docs/console.md); advertised_host (unset: the bound IP) is the host
  name clients are told in Metadata responses.

  Security (docs/security.md): listeners (unset: PLAINTEXT on kafka_addr),
  advertised_listeners, listener_security_protocol_map, ssl_certificate_path, ssl_key_path,
  ssl_client_ca_path, ssl_client_auth, ssl_principal_mapping_rules, sasl_enabled_mechanisms,
  super_users, authorizer. Users and ACLs: `herald user`, `herald acl`. The HTTP side:
  http_tls (with the same certificate), http_admin_token (a bearer token for all but /health),
  http_basic_auth (SASL users by basic auth), http_metrics_auth (protect /metrics too).
  bench_results_path: the JSON of a `herald bench matrix` run for the console's trade-offs.
  peers_mdns: browse mDNS for brokerless members, shown by the console's Peers page.
  fetch_sendfile (default true): Fetch responses' record batches go from the segment files
  to plain TCP connections by sendfile(2), never copied through the broker; false reads them
  into memory first (to compare the two, docs/benchmarks.md).

  setting = default                                   environment variable
",
    );
    for line in help_lines(&Combined::default()) {
        help.push_str(&line);
        help.push('\n');
    }
    help.push_str(
        "
Signals:
  SIGTERM or SIGINT stops accepting connections, finishes requests in flight, flushes the logs
  to disk and exits 0. SIGHUP reads the TLS certificate, key and client CA files again: new
  connections use them, open ones are not dropped.",
    );
    help
}

/// Runs `herald serve` until SIGTERM or SIGINT.
pub fn run(args: ServeArgs) -> Result<(), CliError> {
    let (process, broker_config) =
        settings(&args).map_err(|error| CliError::Usage(error.to_string()))?;
    init_logging(log_filter(&process.log)?, process.log_format)?;
    raise_open_files_limit();
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
    if let Some(listeners) = &args.listeners {
        flags.push(("--listeners", "listeners", Value::String(listeners.clone())));
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
    if let Some(on) = args.peers_mdns {
        flags.push(("--peers-mdns", "peers_mdns", Value::Boolean(on)));
    }
    if let Some(on) = args.fetch_sendfile {
        flags.push(("--fetch-sendfile", "fetch_sendfile", Value::Boolean(on)));
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

async fn serve(process: ProcessSettings, config: BrokerConfig) -> Result<(), CliError> {
    // Signal handlers go in first, so a SIGTERM during start-up is not the default "die now".
    let signal = stop_signal().context("installing signal handlers")?;
    let http_tls = if process.http_tls {
        let (Some(certificate), Some(key)) = (&config.ssl_certificate_path, &config.ssl_key_path)
        else {
            return Err(CliError::Usage(
                "http_tls needs ssl_certificate_path and ssl_key_path".to_string(),
            ));
        };
        let paths = herald_broker::auth::TlsPaths {
            certificate: certificate.clone(),
            key: key.clone(),
            client_ca: None,
            client_auth: herald_broker::auth::ClientAuth::None,
        };
        Some(Arc::new(
            herald_broker::auth::TlsConfig::load(paths)
                .map_err(|error| CliError::Usage(format!("http_tls: {error}")))?,
        ))
    } else {
        None
    };
    // The console's trade-off table renders matrix results with the report's code.
    let render_bench = |json: &[u8]| -> Result<String, String> {
        let matrix: herald_bench::matrix::Matrix =
            serde_json::from_slice(json).map_err(|error| error.to_string())?;
        herald_bench::html::render(&matrix).map_err(|error| error.to_string())
    };
    let bench_report = match &process.bench_results_path {
        None => None,
        Some(path) => {
            let json = std::fs::read(path).map_err(|error| {
                CliError::Usage(format!("bench_results_path {}: {error}", path.display()))
            })?;
            Some(render_bench(&json).map_err(|error| {
                CliError::Usage(format!(
                    "bench_results_path {}: not matrix results: {error}",
                    path.display()
                ))
            })?)
        }
    };
    let access = http::HttpAccess {
        admin_token: process.http_admin_token.clone(),
        basic_auth_users: process.http_basic_auth,
        metrics_protected: process.http_metrics_auth,
    };
    let http_listener = http::bind(process.http_addr)
        .await
        .map_err(|error| CliError::Other(error.into()))?;
    let broker = Broker::start(config).await.map_err(|error| match error {
        StartError::Config(_) => CliError::Usage(error.to_string()),
        error => CliError::Other(error.into()),
    })?;
    let broker = Arc::new(broker);
    let listeners: Vec<String> = broker
        .listeners()
        .iter()
        .map(|(name, _, addr)| format!("{name}://{addr}"))
        .collect();
    tracing::info!(
        kafka_addr = %broker.local_addr(),
        listeners = %listeners.join(","),
        http_addr = %process.http_addr,
        acls_enforced = broker.acls_enforced(),
        "herald broker ready"
    );
    for listener in broker.insecure_listeners() {
        tracing::warn!(%listener, "unauthenticated PLAINTEXT listener reachable from the network");
    }
    let reload_task = tokio::spawn(reload_on_sighup(broker.clone(), http_tls.clone()));
    let (http_stop, http_stopped) = tokio::sync::oneshot::channel::<()>();
    // Kept alive until the process stops: dropping the browser stops browsing.
    let peer_browser = start_peer_browser(process.peers_mdns);
    let (peer_source, peers_off_reason) = match &peer_browser {
        Ok(browser) => (Some(peer_source(browser.clone())), None),
        Err(reason) => (None, Some(reason.clone())),
    };
    let console = http::ConsoleOptions {
        bench_renderer: Some(Arc::new(render_bench)),
        bench_report,
        peer_source,
        peers_off_reason,
    };
    let http_task = tokio::spawn(http::serve_with_options(
        http_listener,
        broker.clone(),
        access,
        http_tls,
        console,
        async move {
            let _ = http_stopped.await;
        },
    ));
    let which = signal.await;
    tracing::info!(
        signal = which,
        "stopping: finishing requests in flight and flushing"
    );
    broker
        .shutdown()
        .await
        .map_err(|error| CliError::Other(anyhow::anyhow!("shutting down: {error}")))?;
    reload_task.abort();
    let _ = http_stop.send(());
    match http_task.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "HTTP side stopped with an error"),
        Err(error) => tracing::warn!(%error, "HTTP task failed"),
    }
    drop(peer_browser);
    tracing::info!("stopped");
    Ok(())
}

/// Starts browsing mDNS for brokerless members when `peers_mdns` is on; a failure is logged
/// once and leaves the broker running without the Peers list.
fn start_peer_browser(on: bool) -> Result<Arc<PeerBrowser>, String> {
    if !on {
        return Err("peer browsing is turned off (peers_mdns = false)".to_string());
    }
    match PeerBrowser::start(PEERS_MAX) {
        Ok(browser) => {
            tracing::info!("browsing mDNS for brokerless members");
            Ok(Arc::new(browser))
        }
        Err(error) => {
            tracing::warn!(%error, "cannot browse mDNS; the console lists no peers");
            Err(format!("mDNS could not start: {error}"))
        }
    }
}

/// The console's view of what `browser` has seen.
fn peer_source(browser: Arc<PeerBrowser>) -> http::PeerSource {
    Arc::new(move || {
        browser
            .snapshot()
            .into_iter()
            .map(|peer| http::PeerView {
                instance: peer.fullname,
                topic: peer.topic,
                group: peer.group,
                addresses: peer.addrs.iter().map(ToString::to_string).collect(),
                capacity: peer.capacity,
                load: peer.load,
                protocol_version: peer.version,
                first_seen_ms: peer.first_seen_ms,
                last_seen_ms: peer.last_seen_ms,
            })
            .collect()
    })
}

/// Re-reads the TLS files on every SIGHUP; a failure keeps the configuration in use.
async fn reload_on_sighup(
    broker: Arc<Broker>,
    http_tls: Option<Arc<herald_broker::auth::TlsConfig>>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot watch SIGHUP; TLS files are read at start only");
        return;
    };
    while hangups.recv().await.is_some() {
        let http = http_tls.as_ref().map_or(Ok(()), |tls| tls.reload());
        match broker.reload_tls().and(http) {
            Ok(()) => tracing::info!("SIGHUP: TLS certificate, key and client CA reloaded"),
            Err(error) => {
                tracing::warn!(%error, "SIGHUP: TLS files not reloaded; keeping the current ones")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_lists_every_setting_with_its_default() {
        let help = settings_help();
        for line in [
            "  data_dir = \"./herald-data\"",
            "  kafka_addr = \"127.0.0.1:9092\"",
            "  http_addr = \"127.0.0.1:8092\"",
            "  log_format = \"human\"",
            "  peers_mdns = true",
            "  fetch_sendfile = true",
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
                listeners: None,
                http_addr: None,
                config: None,
                log_format: None,
                peers_mdns: None,
                fetch_sendfile: None,
            },
            Vec::new(),
        )
        .unwrap();
        assert_eq!(broker.data_dir, PathBuf::from("./herald-data"));
        assert!(broker.fetch_sendfile);
        assert_eq!(broker.kafka_addr.to_string(), "127.0.0.1:9092");
        assert_eq!(process.http_addr.to_string(), "127.0.0.1:8092");
        assert_eq!(process.log_format, LogFormat::Human);
        assert!(process.peers_mdns);
    }

    #[test]
    fn the_fetch_sendfile_flag_beats_the_environment() {
        let args = ServeArgs {
            data_dir: None,
            kafka_addr: None,
            listeners: None,
            http_addr: None,
            config: None,
            log_format: None,
            peers_mdns: None,
            fetch_sendfile: None,
        };
        let env = vec![("HERALD_FETCH_SENDFILE".into(), "false".into())];
        let (_, broker) = settings_from(&args, env.clone()).unwrap();
        assert!(!broker.fetch_sendfile);
        let args = ServeArgs {
            fetch_sendfile: Some(true),
            ..args
        };
        let (_, broker) = settings_from(&args, env).unwrap();
        assert!(broker.fetch_sendfile);
    }
}
