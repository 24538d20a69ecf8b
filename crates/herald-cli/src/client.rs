//! What every Kafka client command shares: librdkafka settings built from [`Global`], a probe
//! that tells "broker unreachable" from "topic does not exist" before any real work, and the
//! mapping of librdkafka errors onto the documented exit codes.
//!
//! The commands talk plain Kafka protocol through librdkafka, so they work against any
//! Kafka-compatible broker, not only Herald.

use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::{ClientConfig, FromClientConfig, FromClientConfigAndContext};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::metadata::Metadata;

use crate::{CliError, Global};

/// How long one broker request (metadata, admin operation, offsets lookup) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the TCP probe waits for each bootstrap address to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// What to tell the user to do when no broker answers.
const UNREACHABLE_HINT: &str =
    "start one with `herald serve` or point --bootstrap (or HERALD_BOOTSTRAP) at a running broker";

/// The settings every client starts from: where the broker is, and librdkafka logging kept to
/// errors so its retries do not drown the command's own one-line error.
pub fn base_config(global: &Global) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &global.bootstrap)
        .set("client.id", "herald-cli")
        .set("log_level", "0")
        .set("socket.timeout.ms", REQUEST_TIMEOUT.as_millis().to_string())
        // Never create topics as a side effect of reading or writing: a typo should be reported
        // as a missing topic, not become a new one.
        .set("allow.auto.create.topics", "false");
    apply_client_properties(global, &mut config);
    config
}

/// Adds the user's librdkafka properties (`--client-config` file, then `-X`), such as the
/// security settings, to a client's config; they win over the command's own choices.
pub fn apply_client_properties(global: &Global, config: &mut ClientConfig) {
    for (key, value) in client_properties(global) {
        config.set(key, value);
    }
}

/// The `--client-config` file's properties, then the `-X` ones (which win), in order. These
/// are the values themselves: `ClientConfig::config_map` would hide secrets such as
/// `sasl.password` behind a placeholder.
pub fn client_properties(global: &Global) -> Vec<(String, String)> {
    let mut properties = Vec::new();
    if let Some(path) = &global.client_config {
        // A file that cannot be read leaves the defaults, and librdkafka's first error says
        // why the broker refused; reading it is reported here too.
        match std::fs::read_to_string(path) {
            Ok(text) => {
                for line in text.lines().map(str::trim) {
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    if let Ok((key, value)) = parse_key_value(line) {
                        properties.push((key.trim().to_string(), value.trim().to_string()));
                    }
                }
            }
            Err(error) => eprintln!("herald: cannot read {}: {error}", path.display()),
        }
    }
    properties.extend(global.client_properties.iter().cloned());
    properties
}

/// Creates any librdkafka client from a config, mapping the (configuration) error.
pub fn create<T: FromClientConfig>(config: &ClientConfig) -> Result<T, CliError> {
    config
        .create()
        .map_err(|error| CliError::Usage(format!("invalid client setting: {error}")))
}

/// Creates a librdkafka client with a custom context (producers with delivery callbacks).
pub fn create_with_context<C: ClientContext, T: FromClientConfigAndContext<C>>(
    config: &ClientConfig,
    context: C,
) -> Result<T, CliError> {
    config
        .create_with_context(context)
        .map_err(|error| CliError::Usage(format!("invalid client setting: {error}")))
}

/// An admin client with the common settings.
pub fn admin(global: &Global) -> Result<AdminClient<DefaultClientContext>, CliError> {
    create(&base_config(global))
}

/// Admin options with the request timeout applied to both the request and the operation.
pub fn admin_options() -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(REQUEST_TIMEOUT))
        .operation_timeout(Some(REQUEST_TIMEOUT))
}

/// A consumer without a group, for metadata and offset look-ups.
pub fn metadata_client(global: &Global) -> Result<BaseConsumer, CliError> {
    let mut config = base_config(global);
    config.set("enable.auto.commit", "false");
    create(&config)
}

/// Checks that at least one bootstrap address accepts a TCP connection.
///
/// librdkafka retries an unreachable broker until the request times out and then reports a
/// generic timeout; connecting once ourselves gives the user the real reason at once.
pub fn probe_tcp(global: &Global) -> Result<(), CliError> {
    let mut last_error = String::from("no address given");
    for server in global.bootstrap.split(',').map(str::trim) {
        if server.is_empty() {
            continue;
        }
        let addrs = match server.to_socket_addrs() {
            Ok(addrs) => addrs,
            Err(error) => {
                last_error = format!("cannot resolve {server}: {error}");
                continue;
            }
        };
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(_) => return Ok(()),
                Err(error) => last_error = error.to_string(),
            }
        }
    }
    Err(unreachable(global, &last_error))
}

/// The one-line "broker unreachable" error for these settings.
pub fn unreachable(global: &Global, reason: &str) -> CliError {
    CliError::Unreachable(format!(
        "broker unreachable at {} ({reason}); {UNREACHABLE_HINT}",
        global.bootstrap
    ))
}

/// The one-line "topic does not exist" error.
pub fn topic_not_found(topic: &str) -> CliError {
    CliError::NotFound(format!(
        "topic {topic} does not exist; create it with `herald topic create {topic}` or list \
         topics with `herald topic list`"
    ))
}

/// Probes the broker and fetches metadata: one topic's, or every topic's when `topic` is None.
///
/// A topic the broker reports as unknown becomes [`CliError::NotFound`].
pub fn fetch_metadata(
    global: &Global,
    client: &BaseConsumer,
    topic: Option<&str>,
) -> Result<Metadata, CliError> {
    probe_tcp(global)?;
    let started = std::time::Instant::now();
    let metadata =
        client
            .fetch_metadata(topic, REQUEST_TIMEOUT)
            .map_err(|error| match error.rdkafka_error_code() {
                // The TCP probe got through, so the connection failed mid-request: librdkafka says
                // "transport failure" both for a peer that closed it and for one that stayed silent
                // until the socket timeout, so the time taken tells the two apart.
                Some(
                    RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown,
                ) if started.elapsed() >= REQUEST_TIMEOUT * 9 / 10 => CliError::TimedOut(format!(
                    "broker at {} accepted the connection but did not answer a metadata request \
                     within {} s; check that it speaks the Kafka protocol",
                    global.bootstrap,
                    REQUEST_TIMEOUT.as_secs()
                )),
                Some(
                    RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown,
                ) => CliError::Unreachable(format!(
                    "broker at {} accepted the connection but closed it while answering a \
                     metadata request; check that it speaks the Kafka protocol and see its log",
                    global.bootstrap
                )),
                _ => kafka_error(global, "fetching metadata", error),
            })?;
    if let Some(name) = topic {
        let found = metadata.topics().iter().find(|t| t.name() == name);
        match found {
            None => return Err(topic_not_found(name)),
            Some(t) => {
                if let Some(error) = t.error() {
                    let code = RDKafkaErrorCode::from(error);
                    return Err(topic_code_error(global, name, "fetching metadata", code));
                }
                if t.partitions().is_empty() {
                    return Err(topic_not_found(name));
                }
            }
        }
    }
    Ok(metadata)
}

/// Maps a per-topic error code from a broker response.
pub fn topic_code_error(
    global: &Global,
    topic: &str,
    what: &str,
    code: RDKafkaErrorCode,
) -> CliError {
    match code {
        RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic => {
            topic_not_found(topic)
        }
        RDKafkaErrorCode::TopicAlreadyExists => {
            CliError::Refused(format!("topic {topic} already exists"))
        }
        other => code_error(global, &format!("{what} for topic {topic}"), other),
    }
}

/// Maps a librdkafka error to the exit-code category it belongs to.
pub fn kafka_error(global: &Global, what: &str, error: KafkaError) -> CliError {
    // rdkafka does not expose the code of a failed admin operation through the usual accessor.
    let code = match &error {
        KafkaError::AdminOp(code) => Some(*code),
        other => other.rdkafka_error_code(),
    };
    match code {
        Some(code) => code_error(global, what, code),
        None => CliError::Other(anyhow::anyhow!("{what}: {error}")),
    }
}

/// Maps an error code: transport failures are "unreachable", deadlines "timed out", unknown
/// topics and groups "not found", and what the broker rejected "refused".
pub fn code_error(global: &Global, what: &str, code: RDKafkaErrorCode) -> CliError {
    match code {
        RDKafkaErrorCode::BrokerTransportFailure
        | RDKafkaErrorCode::AllBrokersDown
        | RDKafkaErrorCode::Resolve => unreachable(global, &code.to_string()),
        RDKafkaErrorCode::OperationTimedOut | RDKafkaErrorCode::RequestTimedOut => {
            CliError::TimedOut(format!(
                "{what}: no answer from {} within {} s ({code})",
                global.bootstrap,
                REQUEST_TIMEOUT.as_secs()
            ))
        }
        RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic => {
            CliError::NotFound(format!("{what}: {code}"))
        }
        RDKafkaErrorCode::GroupIdNotFound => CliError::NotFound(format!("{what}: {code}")),
        _ => CliError::Refused(format!("{what}: {code}")),
    }
}

/// Waits for one admin operation. librdkafka's own thread completes the future, so a small
/// current-thread runtime is enough and the commands stay synchronous.
pub fn block_on<F: std::future::Future>(future: F) -> Result<F::Output, CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(future))
}

/// Catches SIGINT and SIGTERM: the first sets the returned flag so a long-running command can
/// finish cleanly (flush, commit), a second ends the process at once with status 130.
pub fn stop_on_signal() -> Result<Arc<AtomicBool>, CliError> {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The handlers are installed here, before the command starts, not later on the thread.
    let (mut terminate, mut interrupt) = {
        let _context = runtime.enter();
        (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        )
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::Builder::new()
        .name("signals".to_string())
        .spawn(move || {
            runtime.block_on(async {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = interrupt.recv() => {}
                }
                flag.store(true, Ordering::SeqCst);
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = interrupt.recv() => {}
                }
            });
            std::process::exit(130);
        })?;
    Ok(stop)
}

/// Parses `k=v` into its two halves (the value may contain `=`).
pub fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_splits_at_the_first_equals_sign() {
        assert_eq!(
            parse_key_value("retention.ms=a=b"),
            Ok(("retention.ms".into(), "a=b".into()))
        );
        assert!(parse_key_value("=x").is_err());
        assert!(parse_key_value("novalue").is_err());
    }
}
