//! The message browser and test producer: a bounded window of one partition read by offset,
//! by timestamp, newest first or by key, with keys and values shown as text, JSON or hex (as
//! strings in JSON: never executed or rendered as HTML); and one message produced with a key,
//! value and headers.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, ApiState, blocking, find_partition, json_body};
use crate::problem::Problem;
use crate::stats::Counters;

/// Messages one request returns at most.
pub const MESSAGES_MAX: usize = 500;
/// Messages returned when the request does not say.
const MESSAGES_DEFAULT: usize = 50;
/// Records one request decodes at most while looking for a key.
pub const SCAN_RECORDS_MAX: u64 = 100_000;
/// Bytes read from the log per step.
const READ_CHUNK_BYTES: usize = 1024 * 1024;
/// Longest key or value text shown; longer ones are cut, and say so.
const SHOWN_BYTES_MAX: usize = 64 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BrowseQuery {
    /// Start at this offset.
    offset: Option<u64>,
    /// Start at the first record at or after this time (ms since the epoch).
    timestamp_ms: Option<i64>,
    /// The newest messages, newest first.
    #[serde(default)]
    newest: bool,
    limit: Option<usize>,
    /// Only records whose key is exactly this text.
    key: Option<String>,
    /// `auto` (JSON, else text, else hex), `text`, `json` or `hex`.
    format: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    Auto,
    Text,
    Json,
    Hex,
}

/// `GET /api/v1/topics/{topic}/partitions/{partition}/messages`.
pub(crate) async fn browse(
    State(state): State<ApiState>,
    Path((topic, partition)): Path<(String, String)>,
    query: Result<Query<BrowseQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::bad(rejection.body_text()))?;
    let format = match query.format.as_deref() {
        None | Some("auto") => Format::Auto,
        Some("text") => Format::Text,
        Some("json") => Format::Json,
        Some("hex") => Format::Hex,
        Some(other) => {
            return Err(ApiError::bad(format!(
                "bad format `{other}`: use auto, text, json or hex"
            )));
        }
    };
    let limit = query.limit.unwrap_or(MESSAGES_DEFAULT);
    if limit == 0 || limit > MESSAGES_MAX {
        return Err(ApiError::bad(format!(
            "limit {limit} is not between 1 and {MESSAGES_MAX}"
        )));
    }
    if usize::from(query.offset.is_some())
        + usize::from(query.timestamp_ms.is_some())
        + usize::from(query.newest)
        > 1
    {
        return Err(ApiError::bad(
            "give at most one of offset, timestamp_ms and newest",
        ));
    }
    let broker = state.broker.clone();
    let answer = blocking(move || {
        let partition = find_partition(&broker, &topic, &partition)?;
        let offsets = partition.log.offsets();
        let (log_start, end) = (offsets.log_start, offsets.visible_end);
        let start = if let Some(offset) = query.offset {
            if offset < log_start || offset > end {
                return Err(ApiError::problem(
                    Problem::OffsetOutOfRange,
                    format!(
                        "offset {offset} is outside the partition's range [{log_start}, {end}]"
                    ),
                ));
            }
            offset
        } else if let Some(ts) = query.timestamp_ms {
            partition
                .log
                .offset_for_timestamp(ts)
                .map_err(|error| ApiError::problem(Problem::StorageError, error.to_string()))?
                .map_or(end, |(offset, _)| offset)
        } else if query.newest {
            let back = if query.key.is_some() {
                SCAN_RECORDS_MAX
            } else {
                limit as u64
            };
            end.saturating_sub(back).max(log_start)
        } else {
            log_start
        };
        let key = query.key.as_deref().map(str::as_bytes);
        let mut found = Vec::new();
        let mut position = start;
        let mut scanned = 0u64;
        'read: while position < end && scanned < SCAN_RECORDS_MAX {
            let read = match partition.log.read_visible(position, READ_CHUNK_BYTES, true) {
                Ok(read) => read,
                // Retention moved the start past us meanwhile: go on from the new start.
                Err(herald_storage::ReadError::OffsetOutOfRange { log_start, .. })
                    if log_start > position =>
                {
                    position = log_start;
                    continue;
                }
                Err(error) => {
                    return Err(ApiError::problem(Problem::StorageError, error.to_string()));
                }
            };
            if read.batches.is_empty() {
                break;
            }
            let mut batches = read.batches;
            let sets = RecordBatchDecoder::decode_all(&mut batches).map_err(|error| {
                ApiError::problem(
                    Problem::CorruptMessage,
                    format!("cannot decode the records at offset {position}: {error}"),
                )
            })?;
            let mut next = position;
            for record in sets.into_iter().flat_map(|set| set.records) {
                let offset = u64::try_from(record.offset).unwrap_or(0);
                next = next.max(offset + 1);
                if offset < position || record.control {
                    continue;
                }
                scanned += 1;
                if key.is_some_and(|key| record.key.as_deref() != Some(key)) {
                    continue;
                }
                found.push(record);
                if !query.newest && found.len() >= limit {
                    break 'read;
                }
            }
            if next <= position {
                break;
            }
            position = next;
        }
        if query.newest {
            found.reverse();
            found.truncate(limit);
        }
        let next_offset = if query.newest {
            end
        } else {
            found.last().map_or(position, |record| {
                u64::try_from(record.offset).unwrap_or(0) + 1
            })
        };
        let messages: Vec<_> = found.iter().map(|record| show(record, format)).collect();
        Ok(json!({
            "log_start": log_start,
            "high_watermark": end,
            "start_offset": start,
            "next_offset": next_offset,
            "scanned": scanned,
            "messages": messages,
        }))
    })
    .await?;
    Ok(Json(answer).into_response())
}

/// A record as the browser shows it.
fn show(record: &Record, format: Format) -> serde_json::Value {
    let headers: Vec<_> = record
        .headers
        .iter()
        .map(|(name, value)| json!({ "name": name.to_string(), "value": field(value.as_ref(), format) }))
        .collect();
    json!({
        "offset": record.offset,
        "timestamp_ms": record.timestamp,
        "key": field(record.key.as_ref(), format),
        "value": field(record.value.as_ref(), format),
        "headers": headers,
    })
}

/// A key, value or header as `{"encoding", "text", "bytes", "truncated"}`, or null.
fn field(bytes: Option<&Bytes>, format: Format) -> serde_json::Value {
    let Some(bytes) = bytes else {
        return serde_json::Value::Null;
    };
    let shown = &bytes[..bytes.len().min(SHOWN_BYTES_MAX)];
    let truncated = shown.len() < bytes.len();
    let text = std::str::from_utf8(shown).ok();
    let (encoding, text) = match (format, text) {
        (Format::Hex, _) | (Format::Text | Format::Json | Format::Auto, None) => {
            ("hex", hex(shown))
        }
        (Format::Text, Some(text)) => ("text", text.to_string()),
        (Format::Json | Format::Auto, Some(text)) => {
            match serde_json::from_str::<serde_json::Value>(text) {
                Ok(value) if !truncated => (
                    "json",
                    serde_json::to_string_pretty(&value).unwrap_or_else(|_| text.to_string()),
                ),
                _ => ("text", text.to_string()),
            }
        }
    };
    json!({ "encoding": encoding, "text": text, "bytes": bytes.len(), "truncated": truncated })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Produce {
    key: Option<String>,
    value: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// How `key` and `value` are written: `text` (the default) or `hex`.
    encoding: Option<String>,
}

/// `POST /api/v1/topics/{topic}/partitions/{partition}/messages`:
/// `{"key", "value", "headers": {...}, "encoding": "text"|"hex"}`; answers its offset once
/// it is as durable as an `acks=all` produce would be.
pub(crate) async fn produce(
    State(state): State<ApiState>,
    Path((topic, partition)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: Produce = json_body(body)?;
    let decode = |text: Option<String>| -> Result<Option<Bytes>, ApiError> {
        let Some(text) = text else { return Ok(None) };
        match request.encoding.as_deref() {
            None | Some("text") => Ok(Some(Bytes::from(text))),
            Some("hex") => unhex(&text).map(|b| Some(Bytes::from(b))),
            Some(other) => Err(ApiError::bad(format!(
                "bad encoding `{other}`: use text or hex"
            ))),
        }
    };
    let key = decode(request.key.clone())?;
    let value = decode(request.value.clone())?;
    let mut headers = IndexMap::new();
    for (name, value) in &request.headers {
        headers.insert(
            StrBytes::from_string(name.clone()),
            Some(Bytes::from(value.clone())),
        );
    }
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: super::history::now_ms(),
        key,
        value,
        headers,
    };
    let mut batch = bytes::BytesMut::new();
    RecordBatchEncoder::encode(
        &mut batch,
        [&record],
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|error| ApiError::bad(format!("cannot encode the message: {error}")))?;
    let broker = state.broker.clone();
    let (partition, info) = blocking(move || {
        let partition = find_partition(&broker, &topic, &partition)?;
        let info = partition.append(&batch).map_err(|error| {
            let problem = match &error {
                herald_storage::AppendError::BatchTooLarge { .. } => Problem::MessageTooLarge,
                herald_storage::AppendError::InvalidTimestamp { .. } => Problem::InvalidTimestamp,
                herald_storage::AppendError::Deleted => Problem::UnknownTopicOrPartition,
                _ => Problem::StorageError,
            };
            ApiError::problem(problem, error.to_string())
        })?;
        Counters::add(&broker.core.counters.produced_bytes, batch.len() as u64);
        Counters::add(&broker.core.counters.produced_records, 1);
        if let Some(known) = broker.core.topics.get(&topic) {
            known.traffic.record_in(batch.len() as u64, 1);
        }
        Ok((partition, info))
    })
    .await?;
    if partition.log.config().flush == herald_storage::FlushPolicy::Always {
        let durable = crate::group_commit::durable(&partition, info.last_offset + 1);
        if !durable.await.unwrap_or(false) {
            return Err(ApiError::problem(
                Problem::StorageError,
                "the message was written but its fsync failed",
            ));
        }
    }
    Ok((
        axum::http::StatusCode::CREATED,
        Json(json!({ "partition": partition.index, "offset": info.base_offset })),
    )
        .into_response())
}

fn unhex(text: &str) -> Result<Vec<u8>, ApiError> {
    let text = text.trim();
    if text.len() % 2 != 0 {
        return Err(ApiError::bad("hex text must have an even number of digits"));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(text.get(i..i + 2).unwrap_or("zz"), 16)
                .map_err(|_| ApiError::bad(format!("`{text}` is not hex")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn fields_are_shown_as_json_text_or_hex() {
        let json = field(Some(&Bytes::from_static(b"{\"a\":1}")), Format::Auto);
        assert_eq!(json["encoding"], "json");
        assert_eq!(json["text"], "{\n  \"a\": 1\n}");
        let text = field(
            Some(&Bytes::from_static(b"<script>x</script>")),
            Format::Auto,
        );
        assert_eq!(text["encoding"], "text");
        assert_eq!(text["text"], "<script>x</script>");
        let binary = field(Some(&Bytes::from_static(&[0xff, 0x00])), Format::Auto);
        assert_eq!(binary["encoding"], "hex");
        assert_eq!(binary["text"], "ff00");
        assert!(field(None, Format::Auto).is_null());
        assert_eq!(unhex("ff00").unwrap(), vec![0xff, 0]);
        assert!(unhex("f").is_err() && unhex("zz").is_err());
    }
}
