//! Typed payloads: how a value becomes event bytes and back. JSON by default; MessagePack behind
//! the `msgpack` feature.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A payload that could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    #[error("cannot encode the payload as {content_type}: {message}")]
    Encode {
        content_type: &'static str,
        message: String,
    },
    #[error("cannot decode the payload as {content_type}: {message}")]
    Decode {
        content_type: &'static str,
        message: String,
    },
}

/// A payload encoding.
pub trait Codec {
    /// The `content-type` header value events in this encoding carry.
    const CONTENT_TYPE: &'static str;
    fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, CodecError>;
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError>;
}

/// JSON through `serde_json`.
pub struct Json;

impl Codec for Json {
    const CONTENT_TYPE: &'static str = "application/json";

    fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, CodecError> {
        serde_json::to_vec(value)
            .map(Bytes::from)
            .map_err(|e| CodecError::Encode {
                content_type: Self::CONTENT_TYPE,
                message: e.to_string(),
            })
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
        serde_json::from_slice(bytes).map_err(|e| CodecError::Decode {
            content_type: Self::CONTENT_TYPE,
            message: e.to_string(),
        })
    }
}

/// MessagePack through `rmp-serde` (struct fields by name, so schemas can grow).
#[cfg(feature = "msgpack")]
pub struct MsgPack;

#[cfg(feature = "msgpack")]
impl Codec for MsgPack {
    const CONTENT_TYPE: &'static str = "application/msgpack";

    fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, CodecError> {
        rmp_serde::to_vec_named(value)
            .map(Bytes::from)
            .map_err(|e| CodecError::Encode {
                content_type: Self::CONTENT_TYPE,
                message: e.to_string(),
            })
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
        rmp_serde::from_slice(bytes).map_err(|e| CodecError::Decode {
            content_type: Self::CONTENT_TYPE,
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Reading {
        sensor: String,
        celsius: f64,
    }

    #[test]
    fn json_round_trips_and_names_its_content_type() {
        let r = Reading {
            sensor: "s1".into(),
            celsius: 21.5,
        };
        let e = Event::json(&r).unwrap();
        assert_eq!(
            e.header_str(crate::HEADER_CONTENT_TYPE),
            Some("application/json")
        );
        assert_eq!(e.decode_json::<Reading>().unwrap(), r);
        let err = Event::new("not json").decode_json::<Reading>().unwrap_err();
        assert!(matches!(err, CodecError::Decode { .. }), "{err}");
    }

    #[cfg(feature = "msgpack")]
    #[test]
    fn msgpack_round_trips() {
        let r = Reading {
            sensor: "s1".into(),
            celsius: -3.0,
        };
        let e = Event::encoded::<MsgPack, _>(&r).unwrap();
        assert_eq!(
            e.header_str(crate::HEADER_CONTENT_TYPE),
            Some("application/msgpack")
        );
        assert_eq!(e.decode::<MsgPack, Reading>().unwrap(), r);
        assert!(e.decode_json::<Reading>().is_err());
    }
}
