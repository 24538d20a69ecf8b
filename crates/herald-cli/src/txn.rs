//! `herald txn`: list and describe the transactional ids a broker coordinates, with the
//! ListTransactions and DescribeTransactions requests.
//!
//! librdkafka has no call for either, so this module sends the request itself over a plain TCP
//! connection to the bootstrap broker (which, on Herald, coordinates every transactional id).
//! A client configured for TLS or SASL is refused with a clear message rather than sending an
//! unauthenticated request.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use clap::Subcommand;
use kafka_protocol::messages::{
    ApiKey, DescribeTransactionsRequest, DescribeTransactionsResponse, ListTransactionsRequest,
    ListTransactionsResponse, RequestHeader, ResponseHeader, TransactionalId,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use serde::Serialize;

use crate::output::{print_json, print_table};
use crate::{CliError, Global, Output};

/// Longest time the broker may take to connect and answer.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response accepted.
const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Both requests are sent at v0, which every broker serving them knows. Both are flexible
/// versions: request header v2, response header v1.
const REQUEST_VERSION: i16 = 0;

/// `herald txn ...`
#[derive(Debug, Subcommand)]
pub enum TxnCommand {
    /// List transactional ids with their producer id and state.
    List {
        /// Only ids in this state (Empty, Ongoing, PrepareCommit, PrepareAbort,
        /// CompleteCommit, CompleteAbort); repeatable.
        #[arg(long)]
        state: Vec<String>,
    },
    /// Show a transactional id: producer id and epoch, state, timeout, start time, partitions.
    Describe {
        /// The transactional id.
        transactional_id: String,
    },
}

/// Runs one `herald txn` command.
pub fn run(global: &Global, command: TxnCommand) -> Result<(), CliError> {
    refuse_secured(global)?;
    match command {
        TxnCommand::List { state } => list(global, state),
        TxnCommand::Describe { transactional_id } => describe(global, &transactional_id),
    }
}

fn refuse_secured(global: &Global) -> Result<(), CliError> {
    let secured = global.client_config.is_some()
        || global.client_properties.iter().any(|(key, value)| {
            key == "security.protocol" && !value.eq_ignore_ascii_case("plaintext")
        });
    if secured {
        return Err(CliError::Usage(
            "herald txn speaks PLAINTEXT only; point --bootstrap at a PLAINTEXT listener".into(),
        ));
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct Listed {
    transactional_id: String,
    producer_id: i64,
    state: String,
}

fn list(global: &Global, states: Vec<String>) -> Result<(), CliError> {
    let request = ListTransactionsRequest::default()
        .with_state_filters(states.into_iter().map(StrBytes::from_string).collect());
    let response: ListTransactionsResponse = ask(global, ApiKey::ListTransactions, &request)?;
    if response.error_code != 0 {
        return Err(CliError::Refused(format!(
            "listing transactions: the broker answered error code {}",
            response.error_code
        )));
    }
    if !response.unknown_state_filters.is_empty() {
        let unknown: Vec<&str> = response
            .unknown_state_filters
            .iter()
            .map(|s| s.as_str())
            .collect();
        return Err(CliError::Usage(format!(
            "unknown transaction states: {}",
            unknown.join(", ")
        )));
    }
    let mut rows: Vec<Listed> = response
        .transaction_states
        .iter()
        .map(|t| Listed {
            transactional_id: t.transactional_id.as_str().to_string(),
            producer_id: t.producer_id.0,
            state: t.transaction_state.as_str().to_string(),
        })
        .collect();
    rows.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
    match global.output {
        Output::Json => print_json(&rows, false).map_err(|e| CliError::Other(e.into()))?,
        Output::Table => print_table(
            &["TRANSACTIONAL ID", "PRODUCER ID", "STATE"],
            &rows
                .iter()
                .map(|r| {
                    vec![
                        r.transactional_id.clone(),
                        r.producer_id.to_string(),
                        r.state.clone(),
                    ]
                })
                .collect::<Vec<_>>(),
        ),
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct Described {
    transactional_id: String,
    producer_id: i64,
    producer_epoch: i16,
    state: String,
    timeout_ms: i32,
    /// When the current transaction began (ms since the Unix epoch), -1 if none has.
    start_time_ms: i64,
    partitions: Vec<String>,
}

fn describe(global: &Global, id: &str) -> Result<(), CliError> {
    let request = DescribeTransactionsRequest::default()
        .with_transactional_ids(vec![TransactionalId(StrBytes::from_string(id.to_string()))]);
    let response: DescribeTransactionsResponse =
        ask(global, ApiKey::DescribeTransactions, &request)?;
    let Some(state) = response.transaction_states.first() else {
        return Err(CliError::Refused(
            "describing the transaction: the broker sent no answer for it".into(),
        ));
    };
    // TRANSACTIONAL_ID_NOT_FOUND
    if state.error_code == 105 {
        return Err(CliError::NotFound(format!(
            "transactional id {id:?} is not known to the broker"
        )));
    }
    if state.error_code != 0 {
        return Err(CliError::Refused(format!(
            "describing transactional id {id:?}: the broker answered error code {}",
            state.error_code
        )));
    }
    let described = Described {
        transactional_id: id.to_string(),
        producer_id: state.producer_id.0,
        producer_epoch: state.producer_epoch,
        state: state.transaction_state.as_str().to_string(),
        timeout_ms: state.transaction_timeout_ms,
        start_time_ms: state.transaction_start_time_ms,
        partitions: state
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| format!("{}-{p}", t.topic.as_str()))
            })
            .collect(),
    };
    match global.output {
        Output::Json => print_json(&described, false).map_err(|e| CliError::Other(e.into()))?,
        Output::Table => {
            let rows = vec![
                vec![
                    "transactional id".into(),
                    described.transactional_id.clone(),
                ],
                vec!["producer id".into(), described.producer_id.to_string()],
                vec![
                    "producer epoch".into(),
                    described.producer_epoch.to_string(),
                ],
                vec!["state".into(), described.state.clone()],
                vec!["timeout ms".into(), described.timeout_ms.to_string()],
                vec!["start time ms".into(), described.start_time_ms.to_string()],
                vec!["partitions".into(), described.partitions.join(" ")],
            ];
            print_table(&["FIELD", "VALUE"], &rows);
        }
    }
    Ok(())
}

/// Sends one request to the first bootstrap broker and decodes its answer.
fn ask<Req: Encodable, Resp: Decodable>(
    global: &Global,
    api_key: ApiKey,
    request: &Req,
) -> Result<Resp, CliError> {
    let first = global
        .bootstrap
        .split(',')
        .next()
        .unwrap_or_default()
        .trim();
    let unreachable = |why: String| CliError::Unreachable(format!("cannot reach {first}: {why}"));
    let addr = first
        .to_socket_addrs()
        .map_err(|e| unreachable(e.to_string()))?
        .next()
        .ok_or_else(|| unreachable("no address".into()))?;
    let mut stream = TcpStream::connect_timeout(&addr, BROKER_TIMEOUT)
        .map_err(|e| unreachable(e.to_string()))?;
    stream
        .set_read_timeout(Some(BROKER_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(BROKER_TIMEOUT)))
        .map_err(|e| unreachable(e.to_string()))?;
    let correlation_id = 1;
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(REQUEST_VERSION)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("herald-cli")));
    let encoding = |e: anyhow::Error| CliError::Other(e.context("encoding the request"));
    let mut body = BytesMut::new();
    header.encode(&mut body, 2).map_err(encoding)?;
    request
        .encode(&mut body, REQUEST_VERSION)
        .map_err(encoding)?;
    let mut frame = BytesMut::with_capacity(4 + body.len());
    frame.put_i32(i32::try_from(body.len()).unwrap_or(i32::MAX));
    frame.put_slice(&body);
    stream
        .write_all(&frame)
        .map_err(|e| unreachable(e.to_string()))?;
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).map_err(|e| {
        unreachable(format!(
            "no answer ({e}); does the broker serve transactions?"
        ))
    })?;
    let length = usize::try_from(i32::from_be_bytes(length)).unwrap_or(usize::MAX);
    if length > RESPONSE_BYTES_MAX {
        return Err(CliError::Refused(format!(
            "the answer of {length} bytes is over {RESPONSE_BYTES_MAX}"
        )));
    }
    let mut buf = vec![0u8; length];
    stream
        .read_exact(&mut buf)
        .map_err(|e| unreachable(e.to_string()))?;
    let mut buf = Bytes::from(buf);
    let malformed = |e: anyhow::Error| CliError::Other(e.context("decoding the broker's answer"));
    let header = ResponseHeader::decode(&mut buf, 1).map_err(malformed)?;
    if header.correlation_id != correlation_id {
        return Err(CliError::Refused(
            "the broker answered another request".into(),
        ));
    }
    let response = Resp::decode(&mut buf, REQUEST_VERSION).map_err(malformed)?;
    if buf.has_remaining() {
        return Err(CliError::Refused(
            "the broker's answer has trailing bytes".into(),
        ));
    }
    Ok(response)
}
