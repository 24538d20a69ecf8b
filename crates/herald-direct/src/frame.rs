//! The wire format shared by the TCP (direct) and UDP (datagram) transports: frame types, encoding
//! and a decoder that checks every length against what is left before it allocates.
//!
//! See `docs/direct-protocol.md` for the byte layout. Everything is big-endian.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The only protocol version this crate speaks; a frame with another version closes the connection.
pub const PROTOCOL_VERSION: u8 = 1;
/// Bytes of the length prefix in front of every frame.
pub const LENGTH_PREFIX_BYTES: usize = 4;
/// Bytes of the version and kind fields that start every frame body.
pub const FRAME_HEADER_BYTES: usize = 2;
/// Default upper bound of one frame (length prefix excluded); larger frames close the connection.
pub const FRAME_BYTES_MAX_DEFAULT: usize = 4 * 1024 * 1024;
/// Upper bound of headers on one event, so a small frame cannot ask for a huge vector.
pub const HEADERS_MAX: usize = 256;
/// Marker in a key length field meaning "no key" (distinct from an empty key).
const KEY_ABSENT: u32 = u32::MAX;
/// The upper 48 bits of a PING nonce by which a producer announces what it understands beyond
/// version 1 (the low 16 bits are [`FEATURE_REPLY`] and friends). Heartbeat nonces count up from
/// 1 and never reach it; a member that predates features just answers the PING.
pub const FEATURES_NONCE_TAG: u64 = 0x4845_5241_4C44_0000;
/// Mask selecting the tag part of a features nonce.
const FEATURES_TAG_MASK: u64 = 0xFFFF_FFFF_FFFF_0000;
/// Feature bit: this producer decodes REPLY frames (kind 10), so a member may answer with one.
pub const FEATURE_REPLY: u16 = 1;

const _: () = assert!(LENGTH_PREFIX_BYTES == std::mem::size_of::<u32>());
const _: () = assert!(NONCE_BYTES == 32 && MAC_BYTES == 32);

/// The kind byte of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Hello = 1,
    Event = 2,
    Ack = 3,
    Nack = 4,
    Request = 5,
    Response = 6,
    Ping = 7,
    Pong = 8,
    Goodbye = 9,
    Reply = 10,
    // 11 is a sealed datagram (`crate::seal`), never a TCP frame.
    Challenge = 12,
    Proof = 13,
    Proven = 14,
}

impl Kind {
    fn from_u8(value: u8) -> Option<Kind> {
        Some(match value {
            1 => Kind::Hello,
            2 => Kind::Event,
            3 => Kind::Ack,
            4 => Kind::Nack,
            5 => Kind::Request,
            6 => Kind::Response,
            7 => Kind::Ping,
            8 => Kind::Pong,
            9 => Kind::Goodbye,
            10 => Kind::Reply,
            12 => Kind::Challenge,
            13 => Kind::Proof,
            14 => Kind::Proven,
            _ => return None,
        })
    }
}

/// Why a member refused an event or a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum NackReason {
    /// The handler returned an error; another member may succeed.
    HandlerFailed = 1,
    /// The member has as many events in flight as it advertised; try another one.
    Busy = 2,
    /// The absolute deadline carried by the frame passed before the handler finished.
    DeadlineExceeded = 3,
    /// The member is leaving and takes no new work.
    ShuttingDown = 4,
    /// The member does not serve this topic or this kind of frame.
    Unsupported = 5,
}

impl NackReason {
    fn from_u8(value: u8) -> Option<NackReason> {
        Some(match value {
            1 => NackReason::HandlerFailed,
            2 => NackReason::Busy,
            3 => NackReason::DeadlineExceeded,
            4 => NackReason::ShuttingDown,
            5 => NackReason::Unsupported,
            _ => return None,
        })
    }
}

/// A member's self-description, sent as the first frame on every connection it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub member_id: u128,
    pub topic: String,
    pub group: String,
    /// Events this member handles at once; producers never send more.
    pub capacity: u32,
    /// The largest frame this member accepts.
    pub frame_bytes_max: u32,
}

/// One event as it travels on the wire (direct event, request, or datagram).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireEvent {
    pub id: u128,
    pub publisher: u128,
    pub seq: u64,
    /// Absolute deadline in milliseconds since the Unix epoch; 0 means none.
    pub deadline_unix_ms: u64,
    pub topic: String,
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub headers: Vec<(String, Bytes)>,
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Hello(Hello),
    Event(WireEvent),
    Ack {
        id: u128,
    },
    Nack {
        id: u128,
        reason: NackReason,
        message: String,
    },
    Request(WireEvent),
    Response {
        id: u128,
        value: Bytes,
    },
    /// A response with a key and headers, sent only to producers that announced
    /// [`FEATURE_REPLY`] (see [`features_nonce`]).
    Reply {
        id: u128,
        key: Option<Bytes>,
        value: Bytes,
        headers: Vec<(String, Bytes)>,
    },
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
    Goodbye,
    /// Group-key handshake, member → producer, first frame of a member with a group key: the
    /// member's random nonce (see `crate::handshake`).
    Challenge {
        nonce: [u8; NONCE_BYTES],
    },
    /// Group-key handshake, producer → member: the producer's random nonce and its proof.
    Proof {
        nonce: [u8; NONCE_BYTES],
        mac: [u8; MAC_BYTES],
    },
    /// Group-key handshake, member → producer: the member's proof, followed by HELLO.
    Proven {
        mac: [u8; MAC_BYTES],
    },
}

/// Bytes of a handshake nonce.
pub const NONCE_BYTES: usize = 32;
/// Bytes of a handshake proof (HMAC-SHA256).
pub const MAC_BYTES: usize = 32;

/// The PING nonce by which a producer announces `features` (a set of `FEATURE_*` bits).
pub fn features_nonce(features: u16) -> u64 {
    FEATURES_NONCE_TAG | u64::from(features)
}

/// The features a PING nonce announces, if it is a features announcement rather than a heartbeat.
pub fn nonce_features(nonce: u64) -> Option<u16> {
    (nonce & FEATURES_TAG_MASK == FEATURES_NONCE_TAG).then_some((nonce & 0xFFFF) as u16)
}

/// Why bytes could not be decoded into a frame. The connection that sent them is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("frame of {len} bytes exceeds frame_bytes_max {max}")]
    TooLarge { len: usize, max: usize },
    #[error("frame too short: needed {needed} more bytes")]
    Truncated { needed: usize },
    #[error("unsupported protocol version {0}")]
    Version(u8),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("unknown nack reason {0}")]
    UnknownReason(u8),
    #[error("string field is not UTF-8")]
    NotUtf8,
    #[error("{count} headers exceed the limit of {HEADERS_MAX}")]
    TooManyHeaders { count: usize },
    #[error("{extra} bytes left after the frame body")]
    TrailingBytes { extra: usize },
    #[error("datagram length field {field} does not match datagram size {actual}")]
    LengthMismatch { field: usize, actual: usize },
    #[error("unknown flags {0:#04x}")]
    UnknownFlags(u8),
}

fn put_str16(buf: &mut BytesMut, s: &str) {
    // Strings longer than u16 are cut by the caller's validation (see `encoded_len` users);
    // topics, groups and header names are short identifiers.
    let len = s.len().min(u16::MAX as usize);
    buf.put_u16(len as u16);
    buf.put_slice(&s.as_bytes()[..len]);
}

fn put_bytes32(buf: &mut BytesMut, b: &[u8]) {
    buf.put_u32(b.len() as u32);
    buf.put_slice(b);
}

fn put_key(buf: &mut BytesMut, key: &Option<Bytes>) {
    match key {
        Some(k) => put_bytes32(buf, k),
        None => buf.put_u32(KEY_ABSENT),
    }
}

fn put_headers(buf: &mut BytesMut, headers: &[(String, Bytes)]) {
    buf.put_u16(headers.len().min(u16::MAX as usize) as u16);
    for (k, v) in headers {
        put_str16(buf, k);
        put_bytes32(buf, v);
    }
}

fn headers_len(headers: &[(String, Bytes)]) -> usize {
    2 + headers
        .iter()
        .map(|(k, v)| 2 + k.len() + 4 + v.len())
        .sum::<usize>()
}

fn put_event(buf: &mut BytesMut, e: &WireEvent) {
    buf.put_u128(e.id);
    buf.put_u128(e.publisher);
    buf.put_u64(e.seq);
    buf.put_u64(e.deadline_unix_ms);
    put_str16(buf, &e.topic);
    put_key(buf, &e.key);
    put_bytes32(buf, &e.value);
    put_headers(buf, &e.headers);
}

/// Bytes an event body takes on the wire (without the frame header and length prefix).
pub fn event_body_len(e: &WireEvent) -> usize {
    let fixed = 16 + 16 + 8 + 8 + 2 + 4 + 4;
    fixed
        + e.topic.len()
        + e.key.as_ref().map_or(0, |k| k.len())
        + e.value.len()
        + headers_len(&e.headers)
}

/// Bytes a whole event frame takes on the wire, length prefix and frame header included: what
/// the frame and datagram size limits are checked against.
pub fn event_frame_len(e: &WireEvent) -> usize {
    LENGTH_PREFIX_BYTES + FRAME_HEADER_BYTES + event_body_len(e)
}

/// Bytes a REPLY body takes on the wire (without the frame header and length prefix).
pub fn reply_body_len(key: &Option<Bytes>, value: &Bytes, headers: &[(String, Bytes)]) -> usize {
    16 + 4 + key.as_ref().map_or(0, |k| k.len()) + 4 + value.len() + headers_len(headers)
}

/// Bytes a whole frame takes on the wire, length prefix included.
pub fn encoded_len(frame: &Frame) -> usize {
    let body = match frame {
        Frame::Hello(h) => 16 + 4 + 4 + 2 + h.topic.len() + 2 + h.group.len(),
        Frame::Event(e) | Frame::Request(e) => event_body_len(e),
        Frame::Ack { .. } => 16,
        Frame::Nack { message, .. } => 16 + 1 + 2 + message.len(),
        Frame::Response { value, .. } => 16 + 4 + value.len(),
        Frame::Reply {
            key,
            value,
            headers,
            ..
        } => reply_body_len(key, value, headers),
        Frame::Ping { .. } | Frame::Pong { .. } => 8,
        Frame::Goodbye => 0,
        Frame::Challenge { .. } => NONCE_BYTES,
        Frame::Proof { .. } => NONCE_BYTES + MAC_BYTES,
        Frame::Proven { .. } => MAC_BYTES,
    };
    LENGTH_PREFIX_BYTES + FRAME_HEADER_BYTES + body
}

/// Appends an EVENT (or REQUEST) frame for a borrowed event, so senders need not clone it.
pub fn encode_event(event: &WireEvent, request: bool, buf: &mut BytesMut) {
    let start = buf.len();
    buf.reserve(event_frame_len(event));
    buf.put_u32(0);
    buf.put_u8(PROTOCOL_VERSION);
    buf.put_u8(if request { Kind::Request } else { Kind::Event } as u8);
    put_event(buf, event);
    let body_len = (buf.len() - start - LENGTH_PREFIX_BYTES) as u32;
    buf[start..start + LENGTH_PREFIX_BYTES].copy_from_slice(&body_len.to_be_bytes());
}

/// Appends the frame, length prefix first, to `buf`.
pub fn encode(frame: &Frame, buf: &mut BytesMut) {
    let start = buf.len();
    buf.reserve(encoded_len(frame));
    buf.put_u32(0);
    buf.put_u8(PROTOCOL_VERSION);
    match frame {
        Frame::Hello(h) => {
            buf.put_u8(Kind::Hello as u8);
            buf.put_u128(h.member_id);
            buf.put_u32(h.capacity);
            buf.put_u32(h.frame_bytes_max);
            put_str16(buf, &h.topic);
            put_str16(buf, &h.group);
        }
        Frame::Event(e) => {
            buf.put_u8(Kind::Event as u8);
            put_event(buf, e);
        }
        Frame::Request(e) => {
            buf.put_u8(Kind::Request as u8);
            put_event(buf, e);
        }
        Frame::Ack { id } => {
            buf.put_u8(Kind::Ack as u8);
            buf.put_u128(*id);
        }
        Frame::Nack {
            id,
            reason,
            message,
        } => {
            buf.put_u8(Kind::Nack as u8);
            buf.put_u128(*id);
            buf.put_u8(*reason as u8);
            put_str16(buf, message);
        }
        Frame::Response { id, value } => {
            buf.put_u8(Kind::Response as u8);
            buf.put_u128(*id);
            put_bytes32(buf, value);
        }
        Frame::Reply {
            id,
            key,
            value,
            headers,
        } => {
            buf.put_u8(Kind::Reply as u8);
            buf.put_u128(*id);
            put_key(buf, key);
            put_bytes32(buf, value);
            put_headers(buf, headers);
        }
        Frame::Ping { nonce } => {
            buf.put_u8(Kind::Ping as u8);
            buf.put_u64(*nonce);
        }
        Frame::Pong { nonce } => {
            buf.put_u8(Kind::Pong as u8);
            buf.put_u64(*nonce);
        }
        Frame::Goodbye => buf.put_u8(Kind::Goodbye as u8),
        Frame::Challenge { nonce } => {
            buf.put_u8(Kind::Challenge as u8);
            buf.put_slice(nonce);
        }
        Frame::Proof { nonce, mac } => {
            buf.put_u8(Kind::Proof as u8);
            buf.put_slice(nonce);
            buf.put_slice(mac);
        }
        Frame::Proven { mac } => {
            buf.put_u8(Kind::Proven as u8);
            buf.put_slice(mac);
        }
    }
    let body_len = (buf.len() - start - LENGTH_PREFIX_BYTES) as u32;
    buf[start..start + LENGTH_PREFIX_BYTES].copy_from_slice(&body_len.to_be_bytes());
}

/// A cursor over one frame body that refuses to read past its end.
struct Reader {
    buf: Bytes,
}

impl Reader {
    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.buf.remaining() < n {
            Err(DecodeError::Truncated {
                needed: n - self.buf.remaining(),
            })
        } else {
            Ok(())
        }
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.need(2)?;
        Ok(self.buf.get_u16())
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.need(8)?;
        Ok(self.buf.get_u64())
    }
    fn u128(&mut self) -> Result<u128, DecodeError> {
        self.need(16)?;
        Ok(self.buf.get_u128())
    }
    fn array32(&mut self) -> Result<[u8; 32], DecodeError> {
        self.need(32)?;
        let mut out = [0u8; 32];
        self.buf.copy_to_slice(&mut out);
        Ok(out)
    }
    fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        // The length was read from the frame, so check it against what is really there before
        // slicing: a lying length never causes an allocation.
        self.need(n)?;
        Ok(self.buf.split_to(n))
    }
    fn str16(&mut self) -> Result<String, DecodeError> {
        let len = self.u16()? as usize;
        let raw = self.take(len)?;
        String::from_utf8(raw.to_vec()).map_err(|_| DecodeError::NotUtf8)
    }
    fn bytes32(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u32()? as usize;
        self.take(len)
    }
    fn key(&mut self) -> Result<Option<Bytes>, DecodeError> {
        let key_len = self.u32()?;
        if key_len == KEY_ABSENT {
            Ok(None)
        } else {
            Ok(Some(self.take(key_len as usize)?))
        }
    }
    fn headers(&mut self) -> Result<Vec<(String, Bytes)>, DecodeError> {
        let count = self.u16()? as usize;
        // The count is checked before the vector is sized by it.
        if count > HEADERS_MAX {
            return Err(DecodeError::TooManyHeaders { count });
        }
        let mut headers = Vec::with_capacity(count);
        for _ in 0..count {
            let k = self.str16()?;
            let v = self.bytes32()?;
            headers.push((k, v));
        }
        Ok(headers)
    }
    fn event(&mut self) -> Result<WireEvent, DecodeError> {
        let id = self.u128()?;
        let publisher = self.u128()?;
        let seq = self.u64()?;
        let deadline_unix_ms = self.u64()?;
        let topic = self.str16()?;
        let key = self.key()?;
        let value = self.bytes32()?;
        let headers = self.headers()?;
        Ok(WireEvent {
            id,
            publisher,
            seq,
            deadline_unix_ms,
            topic,
            key,
            value,
            headers,
        })
    }
}

/// Decodes one frame body (everything after the length prefix).
pub fn decode_body(body: Bytes) -> Result<Frame, DecodeError> {
    let mut r = Reader { buf: body };
    let version = r.u8()?;
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::Version(version));
    }
    let kind_byte = r.u8()?;
    let kind = Kind::from_u8(kind_byte).ok_or(DecodeError::UnknownKind(kind_byte))?;
    let frame = match kind {
        Kind::Hello => {
            let member_id = r.u128()?;
            let capacity = r.u32()?;
            let frame_bytes_max = r.u32()?;
            let topic = r.str16()?;
            let group = r.str16()?;
            Frame::Hello(Hello {
                member_id,
                topic,
                group,
                capacity,
                frame_bytes_max,
            })
        }
        Kind::Event => Frame::Event(r.event()?),
        Kind::Request => Frame::Request(r.event()?),
        Kind::Ack => Frame::Ack { id: r.u128()? },
        Kind::Nack => {
            let id = r.u128()?;
            let reason_byte = r.u8()?;
            let reason =
                NackReason::from_u8(reason_byte).ok_or(DecodeError::UnknownReason(reason_byte))?;
            let message = r.str16()?;
            Frame::Nack {
                id,
                reason,
                message,
            }
        }
        Kind::Response => {
            let id = r.u128()?;
            let value = r.bytes32()?;
            Frame::Response { id, value }
        }
        Kind::Reply => {
            let id = r.u128()?;
            let key = r.key()?;
            let value = r.bytes32()?;
            let headers = r.headers()?;
            Frame::Reply {
                id,
                key,
                value,
                headers,
            }
        }
        Kind::Ping => Frame::Ping { nonce: r.u64()? },
        Kind::Pong => Frame::Pong { nonce: r.u64()? },
        Kind::Goodbye => Frame::Goodbye,
        Kind::Challenge => Frame::Challenge {
            nonce: r.array32()?,
        },
        Kind::Proof => Frame::Proof {
            nonce: r.array32()?,
            mac: r.array32()?,
        },
        Kind::Proven => Frame::Proven { mac: r.array32()? },
    };
    if r.buf.has_remaining() {
        return Err(DecodeError::TrailingBytes {
            extra: r.buf.remaining(),
        });
    }
    Ok(frame)
}

/// Takes one complete frame off the front of a stream buffer, if one is there.
///
/// Returns `Ok(None)` when more bytes are needed. The length prefix is checked against
/// `frame_bytes_max` before anything is buffered for the body, so a peer cannot make the
/// reader allocate more than that.
pub fn decode_stream(
    buf: &mut BytesMut,
    frame_bytes_max: usize,
) -> Result<Option<Frame>, DecodeError> {
    if buf.len() < LENGTH_PREFIX_BYTES {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > frame_bytes_max {
        return Err(DecodeError::TooLarge {
            len,
            max: frame_bytes_max,
        });
    }
    if buf.len() < LENGTH_PREFIX_BYTES + len {
        buf.reserve(LENGTH_PREFIX_BYTES + len - buf.len());
        return Ok(None);
    }
    buf.advance(LENGTH_PREFIX_BYTES);
    let body = buf.split_to(len).freeze();
    decode_body(body).map(Some)
}

/// Decodes one UDP datagram, which carries exactly one length-prefixed frame.
pub fn decode_datagram(datagram: Bytes, frame_bytes_max: usize) -> Result<Frame, DecodeError> {
    if datagram.len() < LENGTH_PREFIX_BYTES {
        return Err(DecodeError::Truncated {
            needed: LENGTH_PREFIX_BYTES - datagram.len(),
        });
    }
    let len = u32::from_be_bytes([datagram[0], datagram[1], datagram[2], datagram[3]]) as usize;
    if len > frame_bytes_max {
        return Err(DecodeError::TooLarge {
            len,
            max: frame_bytes_max,
        });
    }
    if len != datagram.len() - LENGTH_PREFIX_BYTES {
        return Err(DecodeError::LengthMismatch {
            field: len,
            actual: datagram.len() - LENGTH_PREFIX_BYTES,
        });
    }
    decode_body(datagram.slice(LENGTH_PREFIX_BYTES..))
}

/// Runs every decoder over arbitrary bytes and checks that whatever decodes re-encodes to the same
/// bytes. The fuzz target and a proptest both call this, so the normal test suite exercises it too.
pub fn fuzz_decode(data: &[u8]) {
    let frame_bytes_max = 64 * 1024;
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = decode_stream(&mut buf, frame_bytes_max) {
        let mut again = BytesMut::new();
        encode(&frame, &mut again);
        assert_eq!(again.len(), encoded_len(&frame));
        let mut again_buf = again.clone();
        let round = decode_stream(&mut again_buf, frame_bytes_max);
        assert_eq!(round, Ok(Some(frame)));
    }
    let _ = decode_datagram(Bytes::copy_from_slice(data), frame_bytes_max);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn event(value: &[u8]) -> WireEvent {
        WireEvent {
            id: 7,
            publisher: 9,
            seq: 3,
            deadline_unix_ms: 1_700_000_000_000,
            topic: "sms".into(),
            key: Some(Bytes::from_static(b"k")),
            value: Bytes::copy_from_slice(value),
            headers: vec![("h".into(), Bytes::from_static(b"v"))],
        }
    }

    fn all_frames() -> Vec<Frame> {
        vec![
            Frame::Hello(Hello {
                member_id: 1,
                topic: "t".into(),
                group: "g".into(),
                capacity: 4,
                frame_bytes_max: 1024,
            }),
            Frame::Event(event(b"hello")),
            Frame::Request(WireEvent {
                key: None,
                ..event(b"")
            }),
            Frame::Ack { id: 5 },
            Frame::Nack {
                id: 6,
                reason: NackReason::Busy,
                message: "full".into(),
            },
            Frame::Response {
                id: 8,
                value: Bytes::from_static(b"ok"),
            },
            Frame::Ping { nonce: 1 },
            Frame::Pong { nonce: 2 },
            Frame::Goodbye,
            Frame::Reply {
                id: 10,
                key: Some(Bytes::from_static(b"user-1")),
                value: Bytes::from_static(b"done"),
                headers: vec![
                    (
                        "content-type".into(),
                        Bytes::from_static(b"application/json"),
                    ),
                    ("empty".into(), Bytes::new()),
                ],
            },
            Frame::Reply {
                id: 11,
                key: None,
                value: Bytes::new(),
                headers: vec![],
            },
            Frame::Challenge { nonce: [3; 32] },
            Frame::Proof {
                nonce: [4; 32],
                mac: [5; 32],
            },
            Frame::Proven { mac: [6; 32] },
        ]
    }

    #[test]
    fn every_frame_round_trips_through_a_stream() {
        let mut buf = BytesMut::new();
        for f in all_frames() {
            let before = buf.len();
            encode(&f, &mut buf);
            assert_eq!(buf.len() - before, encoded_len(&f));
        }
        for f in all_frames() {
            assert_eq!(decode_stream(&mut buf, 1 << 20), Ok(Some(f)));
        }
        assert_eq!(decode_stream(&mut buf, 1 << 20), Ok(None));
    }

    #[test]
    fn oversized_length_is_refused_before_buffering() {
        let mut buf = BytesMut::from(&(1u32 << 30).to_be_bytes()[..]);
        assert!(matches!(
            decode_stream(&mut buf, 1024),
            Err(DecodeError::TooLarge { .. })
        ));
        assert!(buf.capacity() < 1 << 20);
    }

    #[test]
    fn wrong_version_and_kind_are_errors() {
        let mut buf = BytesMut::new();
        encode(&Frame::Goodbye, &mut buf);
        let mut bad = buf.clone();
        bad[4] = 2;
        assert_eq!(decode_stream(&mut bad, 64), Err(DecodeError::Version(2)));
        let mut bad = buf.clone();
        bad[5] = 99;
        assert_eq!(
            decode_stream(&mut bad, 64),
            Err(DecodeError::UnknownKind(99))
        );
    }

    #[test]
    fn datagram_length_must_match() {
        let mut buf = BytesMut::new();
        encode(&Frame::Event(event(b"x")), &mut buf);
        let ok = decode_datagram(buf.clone().freeze(), 1 << 16);
        assert_eq!(ok, Ok(Frame::Event(event(b"x"))));
        let mut longer = buf.clone();
        longer.put_u8(0);
        assert!(matches!(
            decode_datagram(longer.freeze(), 1 << 16),
            Err(DecodeError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn a_reply_with_too_many_headers_is_refused() {
        let headers = vec![("h".to_string(), Bytes::new()); HEADERS_MAX + 1];
        let mut buf = BytesMut::new();
        encode(
            &Frame::Reply {
                id: 1,
                key: None,
                value: Bytes::new(),
                headers,
            },
            &mut buf,
        );
        assert_eq!(
            decode_stream(&mut buf, 1 << 20),
            Err(DecodeError::TooManyHeaders {
                count: HEADERS_MAX + 1
            })
        );
    }

    #[test]
    fn a_reply_header_length_beyond_the_frame_is_truncated_not_allocated() {
        let mut buf = BytesMut::new();
        encode(
            &Frame::Reply {
                id: 1,
                key: None,
                value: Bytes::new(),
                headers: vec![("h".into(), Bytes::from_static(b"v"))],
            },
            &mut buf,
        );
        // The header value's length field sits just before its one byte: make it claim 2 GiB.
        let at = buf.len() - 1 - 4;
        buf[at..at + 4].copy_from_slice(&(1u32 << 31).to_be_bytes());
        assert!(matches!(
            decode_stream(&mut buf, 1 << 20),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn features_ride_on_a_ping_nonce_that_heartbeats_never_use() {
        assert_eq!(
            nonce_features(features_nonce(FEATURE_REPLY)),
            Some(FEATURE_REPLY)
        );
        assert_eq!(nonce_features(1), None);
        assert_eq!(nonce_features(u64::from(u32::MAX)), None);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            fuzz_decode(&data);
        }

        #[test]
        fn mutated_frames_never_panic(index in 0usize..14, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4)) {
            let mut buf = BytesMut::new();
            encode(&all_frames()[index], &mut buf);
            let mut data = buf.to_vec();
            for (pos, byte) in flips {
                let len = data.len();
                data[pos % len] = byte;
            }
            fuzz_decode(&data);
        }

        #[test]
        fn events_round_trip(id in any::<u128>(), seq in any::<u64>(), key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..32)), value in proptest::collection::vec(any::<u8>(), 0..256), topic in "[a-z]{0,12}") {
            let e = WireEvent { id, publisher: id ^ 1, seq, deadline_unix_ms: seq / 2, topic, key: key.map(Bytes::from), value: Bytes::from(value), headers: vec![] };
            let mut buf = BytesMut::new();
            encode(&Frame::Event(e.clone()), &mut buf);
            prop_assert_eq!(decode_stream(&mut buf, 1 << 20), Ok(Some(Frame::Event(e))));
        }

        #[test]
        fn replies_round_trip(id in any::<u128>(), key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..32)), value in proptest::collection::vec(any::<u8>(), 0..256), headers in proptest::collection::vec(("[a-z-]{0,16}", proptest::collection::vec(any::<u8>(), 0..16)), 0..8)) {
            let f = Frame::Reply { id, key: key.map(Bytes::from), value: Bytes::from(value), headers: headers.into_iter().map(|(k, v)| (k, Bytes::from(v))).collect() };
            let mut buf = BytesMut::new();
            encode(&f, &mut buf);
            prop_assert_eq!(buf.len(), encoded_len(&f));
            prop_assert_eq!(decode_stream(&mut buf, 1 << 20), Ok(Some(f)));
        }
    }
}
