//! A minimal HTTP/1.1 client for JSON calls: the direct-call design's notification service uses
//! it to call the SMS and usage services, and `compare` to post its load.
//!
//! One connection per call keeps it simple and makes a stopped server show at once as a refused
//! connection, which is exactly what the direct design has to cope with.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// Why a call got no HTTP answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// Nobody listens there (the server is down): nothing was sent.
    #[error("cannot connect to {authority}: {source}")]
    Connect {
        authority: String,
        source: std::io::Error,
    },
    /// The server took the request but did not answer in time: it may or may not have acted.
    #[error("no answer from {authority} within {timeout_ms} ms")]
    Timeout { authority: String, timeout_ms: u64 },
    /// The connection broke before the answer (the server died mid-call): it may have acted.
    #[error("the call to {authority} broke off: {source}")]
    Broken {
        authority: String,
        source: hyper::Error,
    },
    #[error("a bad request to {authority}: {reason}")]
    Invalid { authority: String, reason: String },
}

impl CallError {
    /// Whether the server never saw the request (so it surely did nothing).
    pub fn never_sent(&self) -> bool {
        matches!(self, CallError::Connect { .. })
    }
}

/// An HTTP answer: its status and body, parsed as JSON when it is JSON (`Value::Null` if not).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// `host:port` out of `http://host:port` (a trailing `/` allowed), the only URLs this client
/// needs; the error says what is wrong.
pub fn authority_of(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?} is not an http:// URL"))?;
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        return Err(format!("{url:?} must be http://HOST:PORT, with no path"));
    }
    Ok(authority.to_string())
}

/// One request to `authority` (`host:port`), answered within `timeout` (connecting included).
pub async fn call(
    authority: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<Answer, CallError> {
    match tokio::time::timeout(timeout, exchange(authority, method, path, body)).await {
        Ok(result) => result,
        Err(_) => Err(CallError::Timeout {
            authority: authority.to_string(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        }),
    }
}

async fn exchange(
    authority: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Answer, CallError> {
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|source| CallError::Connect {
            authority: authority.to_string(),
            source,
        })?;
    // A small request is sent at once rather than held back by Nagle's algorithm.
    let _ = stream.set_nodelay(true);
    let broken = |source| CallError::Broken {
        authority: authority.to_string(),
        source,
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(broken)?;
    tokio::spawn(connection);
    let body = body.map(Value::to_string).unwrap_or_default();
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", authority)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| CallError::Invalid {
            authority: authority.to_string(),
            reason: e.to_string(),
        })?;
    let response = sender.send_request(request).await.map_err(broken)?;
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(broken)?
        .to_bytes();
    Ok(Answer {
        status,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_base_urls_are_taken() {
        assert_eq!(
            authority_of("http://127.0.0.1:8081").as_deref(),
            Ok("127.0.0.1:8081")
        );
        assert_eq!(authority_of("http://sms:80/").as_deref(), Ok("sms:80"));
        assert!(authority_of("https://sms:80").is_err());
        assert!(authority_of("http://sms:80/send").is_err());
        assert!(authority_of("http://").is_err());
    }
}
