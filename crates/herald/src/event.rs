//! The one event model every transport carries, and how it maps to headers on the wire.
//!
//! Kafka records and direct frames both have a key, a value and headers, so the SDK keeps its own
//! metadata (event id, correlation id, timestamp, content type) in headers named `herald-*`. Any
//! Kafka client can read them; a record written by a client that knows nothing of Herald still
//! becomes an [`Event`] (with a fresh id).

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{Codec, CodecError, Json};

/// Header carrying [`Event::id`].
pub const HEADER_ID: &str = "herald-id";
/// Header carrying [`Event::correlation_id`].
pub const HEADER_CORRELATION_ID: &str = "herald-correlation-id";
/// Header carrying [`Event::timestamp`] in milliseconds since the Unix epoch (transports without a
/// timestamp of their own use it; the broker uses the Kafka record timestamp).
pub const HEADER_TIMESTAMP_MS: &str = "herald-timestamp-ms";
/// Header naming the payload's encoding, e.g. `application/json`.
pub const HEADER_CONTENT_TYPE: &str = "content-type";
/// Dead letters: the handler's last error.
pub const HEADER_DLQ_ERROR: &str = "herald-dlq-error";
/// Dead letters: how many times the handler ran.
pub const HEADER_DLQ_ATTEMPTS: &str = "herald-dlq-attempts";
/// Dead letters: the topic the event was published on.
pub const HEADER_DLQ_TOPIC: &str = "herald-dlq-topic";
/// Dead letters: the consumer group whose handler gave up.
pub const HEADER_DLQ_GROUP: &str = "herald-dlq-group";
/// Requests over a stored transport: the topic the reply goes to.
pub const HEADER_REPLY_TO: &str = "herald-reply-to";
/// Requests: the absolute deadline, milliseconds since the Unix epoch.
pub const HEADER_DEADLINE_MS: &str = "herald-deadline-ms";
/// Replies: set when the replier's handler failed; the payload is the error message.
pub const HEADER_REPLY_ERROR: &str = "herald-reply-error";

/// Headers whose meaning the SDK owns; [`Event::headers`] never contains them.
const RESERVED: [&str; 3] = [HEADER_ID, HEADER_CORRELATION_ID, HEADER_TIMESTAMP_MS];

/// A unique event id: a UUIDv7, so ids sort roughly by creation time.
///
/// ```
/// let a = herald::EventId::new();
/// let b: herald::EventId = a.to_string().parse().unwrap();
/// assert_eq!(a, b);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(uuid::Uuid);

impl EventId {
    /// A fresh id.
    pub fn new() -> Self {
        EventId(uuid::Uuid::now_v7())
    }

    /// The id as a 128-bit number (the direct transport's wire id).
    pub fn as_u128(self) -> u128 {
        self.0.as_u128()
    }

    pub fn from_u128(v: u128) -> Self {
        EventId(uuid::Uuid::from_u128(v))
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// An event id that does not parse.
#[derive(Debug, Clone, thiserror::Error)]
#[error("not an event id: {0:?}")]
pub struct ParseEventIdError(String);

impl FromStr for EventId {
    type Err = ParseEventIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s)
            .map(EventId)
            .map_err(|_| ParseEventIdError(s.to_string()))
    }
}

impl Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for EventId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One event: what producers publish and handlers receive, on every transport.
///
/// ```
/// use herald::Event;
/// let e = Event::new("hello").with_key("user-1").with_header("trace", "abc");
/// assert_eq!(e.payload.as_ref(), b"hello");
/// assert_eq!(e.header("trace").map(|v| v.as_ref()), Some(&b"abc"[..]));
///
/// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
/// struct Sms { to: String, text: String }
/// let sms = Sms { to: "+4412345".into(), text: "hi".into() };
/// let e = Event::json(&sms).unwrap();
/// assert_eq!(e.decode_json::<Sms>().unwrap(), sms);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: EventId,
    /// Events with the same key are handled in order; on the broker the key picks the partition.
    pub key: Option<Bytes>,
    pub payload: Bytes,
    /// Application headers, in order (`herald-id`, `herald-correlation-id` and
    /// `herald-timestamp-ms` are kept in the fields instead).
    pub headers: Vec<(String, Bytes)>,
    pub timestamp: SystemTime,
    /// The event this one answers or reports on (see [`Event::result_of`]).
    pub correlation_id: Option<EventId>,
}

impl Event {
    /// A new event with a fresh id and the current time.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Event {
            id: EventId::new(),
            key: None,
            payload: payload.into(),
            headers: Vec::new(),
            timestamp: SystemTime::now(),
            correlation_id: None,
        }
    }

    /// An event whose payload is `value` in JSON, with `content-type: application/json`.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, CodecError> {
        Self::encoded::<Json, T>(value)
    }

    /// An event whose payload is `value` encoded with codec `C`.
    pub fn encoded<C: Codec, T: Serialize + ?Sized>(value: &T) -> Result<Self, CodecError> {
        Ok(Event::new(C::encode(value)?).with_header(HEADER_CONTENT_TYPE, C::CONTENT_TYPE))
    }

    /// The payload decoded from JSON.
    pub fn decode_json<T: DeserializeOwned>(&self) -> Result<T, CodecError> {
        self.decode::<Json, T>()
    }

    /// The payload decoded with codec `C`.
    pub fn decode<C: Codec, T: DeserializeOwned>(&self) -> Result<T, CodecError> {
        C::decode(&self.payload)
    }

    /// A new event reporting on `input`: its correlation id is `input`'s id and it keeps `input`'s
    /// key, so results of one key stay in order. This is how a consumer tells a producer the
    /// outcome of asynchronous work.
    pub fn result_of(input: &Event, payload: impl Into<Bytes>) -> Self {
        let mut e = Event::new(payload);
        e.key = input.key.clone();
        e.correlation_id = Some(input.id);
        e
    }

    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a header. Names the SDK owns (`herald-id`, `herald-correlation-id`,
    /// `herald-timestamp-ms`) are ignored: set the fields instead.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        let name = name.into();
        if !RESERVED.contains(&name.as_str()) {
            self.headers.push((name, value.into()));
        }
        self
    }

    pub fn with_correlation_id(mut self, id: EventId) -> Self {
        self.correlation_id = Some(id);
        self
    }

    pub fn with_id(mut self, id: EventId) -> Self {
        self.id = id;
        self
    }

    /// The last value of header `name`, if any.
    pub fn header(&self, name: &str) -> Option<&Bytes> {
        self.headers
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// The last value of header `name` as UTF-8 text, if present and valid.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Replaces every value of header `name` with one.
    pub(crate) fn set_header(&mut self, name: &str, value: impl Into<Bytes>) {
        self.headers.retain(|(n, _)| n != name);
        self.headers.push((name.to_string(), value.into()));
    }

    /// The headers to put on the wire: the application's, then the SDK's metadata.
    pub fn wire_headers(&self) -> Vec<(String, Bytes)> {
        let mut h = self.headers.clone();
        h.push((HEADER_ID.to_string(), Bytes::from(self.id.to_string())));
        if let Some(c) = self.correlation_id {
            h.push((
                HEADER_CORRELATION_ID.to_string(),
                Bytes::from(c.to_string()),
            ));
        }
        h.push((
            HEADER_TIMESTAMP_MS.to_string(),
            Bytes::from(system_to_unix_ms(self.timestamp).to_string()),
        ));
        h
    }

    /// Rebuilds an event from what a transport received. A missing or unreadable `herald-id`
    /// (a record from a client that knows nothing of Herald) gets a fresh id; the timestamp
    /// comes from `herald-timestamp-ms`, else `fallback_timestamp`, else now.
    pub fn from_wire(
        key: Option<Bytes>,
        payload: Bytes,
        wire_headers: Vec<(String, Bytes)>,
        fallback_timestamp: Option<SystemTime>,
    ) -> Self {
        let mut id = None;
        let mut correlation_id = None;
        let mut timestamp = None;
        let mut headers = Vec::with_capacity(wire_headers.len());
        for (name, value) in wire_headers {
            let text = std::str::from_utf8(&value).ok();
            match name.as_str() {
                HEADER_ID => id = text.and_then(|t| t.parse().ok()),
                HEADER_CORRELATION_ID => correlation_id = text.and_then(|t| t.parse().ok()),
                HEADER_TIMESTAMP_MS => {
                    timestamp = text
                        .and_then(|t| t.parse::<u64>().ok())
                        .map(unix_ms_to_system)
                }
                _ => headers.push((name, value)),
            }
        }
        Event {
            id: id.unwrap_or_default(),
            key,
            payload,
            headers,
            timestamp: timestamp
                .or(fallback_timestamp)
                .unwrap_or_else(SystemTime::now),
            correlation_id,
        }
    }
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn system_to_unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub fn unix_ms_to_system(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_headers_round_trip_every_field() {
        let input = Event::new("in");
        let e = Event::result_of(&input, "out")
            .with_key("k")
            .with_header("a", "1")
            .with_header(HEADER_ID, "ignored");
        let back = Event::from_wire(e.key.clone(), e.payload.clone(), e.wire_headers(), None);
        assert_eq!(back.id, e.id);
        assert_eq!(back.correlation_id, Some(input.id));
        assert_eq!(back.headers, vec![("a".to_string(), Bytes::from("1"))]);
        assert_eq!(
            system_to_unix_ms(back.timestamp),
            system_to_unix_ms(e.timestamp)
        );
    }

    #[test]
    fn foreign_records_get_an_id_and_the_fallback_time() {
        let t = unix_ms_to_system(1_700_000_000_000);
        let e = Event::from_wire(None, Bytes::from("x"), vec![], Some(t));
        assert_eq!(e.timestamp, t);
        assert!(e.correlation_id.is_none());
    }
}
