//! Listeners as Kafka names them: `listeners`, `advertised_listeners` and
//! `listener_security_protocol_map`, parsed from the broker's config into [`ListenerSpec`]s.
//!
//! `listeners = "PLAINTEXT://127.0.0.1:9092,SASL_SSL://0.0.0.0:9093"` binds two; a listener's
//! name is its protocol unless the map names it (`INTERNAL:PLAINTEXT,EXTERNAL:SASL_SSL`).

use std::collections::HashMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

use serde::{Deserialize, Serialize};

/// How a listener secures its connections (Kafka's `security.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SecurityProtocol {
    /// Neither TLS nor authentication.
    Plaintext,
    /// TLS; clients are authenticated only by a certificate when client auth is on.
    Ssl,
    /// SASL authentication without TLS.
    SaslPlaintext,
    /// SASL authentication inside TLS.
    SaslSsl,
}

impl SecurityProtocol {
    /// Whether connections start with a TLS handshake.
    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether a client must authenticate with SASL before any other request.
    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    /// Kafka's name for the protocol.
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    fn parse(text: &str) -> Option<SecurityProtocol> {
        Some(match text.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => SecurityProtocol::Plaintext,
            "SSL" => SecurityProtocol::Ssl,
            "SASL_PLAINTEXT" => SecurityProtocol::SaslPlaintext,
            "SASL_SSL" => SecurityProtocol::SaslSsl,
            _ => return None,
        })
    }
}

impl fmt::Display for SecurityProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One listener to bind: its name, address, protocol and what Metadata tells its clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    /// The listener's name (its protocol's name unless the protocol map gives another).
    pub name: String,
    /// The address to bind; port 0 picks a free one.
    pub addr: SocketAddr,
    /// How connections are secured.
    pub protocol: SecurityProtocol,
    /// Host and port clients that came in on this listener are told in Metadata; `None`
    /// means the bound address (or `advertised_host` with the bound port).
    pub advertised: Option<(String, u16)>,
}

/// Why the listener settings do not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListenerError {
    /// An entry is not `NAME://HOST:PORT`.
    #[error("listener `{0}` is not NAME://HOST:PORT")]
    Syntax(String),
    /// A listener name is neither a protocol nor in `listener_security_protocol_map`.
    #[error(
        "listener name `{0}` is not a security protocol and not in listener_security_protocol_map"
    )]
    UnknownName(String),
    /// An address does not resolve.
    #[error("listener address `{0}` is not a socket address")]
    Address(String),
    /// Two listeners share a name.
    #[error("listener name `{0}` is used twice")]
    Duplicate(String),
    /// An advertised listener names no listener.
    #[error("advertised listener `{0}` names no listener")]
    UnknownAdvertised(String),
    /// A protocol map entry is not `NAME:PROTOCOL`.
    #[error("listener_security_protocol_map entry `{0}` is not NAME:PROTOCOL")]
    Map(String),
}

/// Parses Kafka's `listeners` (and the optional advertised listeners and protocol map).
///
/// ```
/// use herald_broker::auth::{parse_listeners, SecurityProtocol};
/// let listeners = parse_listeners(
///     "PLAINTEXT://127.0.0.1:9092,EXTERNAL://0.0.0.0:9093",
///     Some("EXTERNAL://broker.example.com:9093"),
///     Some("EXTERNAL:SASL_SSL"),
/// ).unwrap();
/// assert_eq!(listeners[1].protocol, SecurityProtocol::SaslSsl);
/// assert_eq!(listeners[1].advertised, Some(("broker.example.com".to_string(), 9093)));
/// ```
pub fn parse_listeners(
    listeners: &str,
    advertised: Option<&str>,
    protocol_map: Option<&str>,
) -> Result<Vec<ListenerSpec>, ListenerError> {
    let mut map = HashMap::new();
    for entry in entries(protocol_map.unwrap_or("")) {
        let (name, protocol) = entry
            .split_once(':')
            .ok_or_else(|| ListenerError::Map(entry.to_string()))?;
        let protocol = SecurityProtocol::parse(protocol)
            .ok_or_else(|| ListenerError::Map(entry.to_string()))?;
        map.insert(name.to_ascii_uppercase(), protocol);
    }
    let mut specs: Vec<ListenerSpec> = Vec::new();
    for entry in entries(listeners) {
        let (name, host, port) = split_url(entry)?;
        let protocol = map
            .get(&name)
            .copied()
            .or_else(|| SecurityProtocol::parse(&name))
            .ok_or_else(|| ListenerError::UnknownName(name.clone()))?;
        // Kafka's `PLAINTEXT://:9092` means every interface.
        let host = if host.is_empty() { "0.0.0.0" } else { host };
        let addr = (host.trim_matches(['[', ']']), port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| ListenerError::Address(entry.to_string()))?;
        if specs.iter().any(|spec| spec.name == name) {
            return Err(ListenerError::Duplicate(name));
        }
        specs.push(ListenerSpec {
            name,
            addr,
            protocol,
            advertised: None,
        });
    }
    for entry in entries(advertised.unwrap_or("")) {
        let (name, host, port) = split_url(entry)?;
        let spec = specs
            .iter_mut()
            .find(|spec| spec.name == name)
            .ok_or_else(|| ListenerError::UnknownAdvertised(entry.to_string()))?;
        spec.advertised = Some((host.trim_matches(['[', ']']).to_string(), port));
    }
    Ok(specs)
}

fn entries(text: &str) -> impl Iterator<Item = &str> {
    text.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
}

fn split_url(entry: &str) -> Result<(String, &str, u16), ListenerError> {
    let syntax = || ListenerError::Syntax(entry.to_string());
    let (name, rest) = entry.split_once("://").ok_or_else(syntax)?;
    let (host, port) = rest.rsplit_once(':').ok_or_else(syntax)?;
    let port = port.parse::<u16>().map_err(|_| syntax())?;
    if name.is_empty() {
        return Err(syntax());
    }
    Ok((name.to_ascii_uppercase(), host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_default_to_their_protocol_and_the_map_renames() {
        let specs = parse_listeners(
            "PLAINTEXT://127.0.0.1:0, internal://[::1]:0,SSL://:0",
            Some("INTERNAL://localhost:19092"),
            Some("INTERNAL:SASL_PLAINTEXT"),
        )
        .unwrap();
        assert_eq!(specs[0].protocol, SecurityProtocol::Plaintext);
        assert_eq!(specs[1].name, "INTERNAL");
        assert_eq!(specs[1].protocol, SecurityProtocol::SaslPlaintext);
        assert_eq!(specs[1].addr, "[::1]:0".parse().unwrap());
        assert_eq!(specs[1].advertised, Some(("localhost".to_string(), 19092)));
        assert!(specs[2].addr.ip().is_unspecified());
    }

    #[test]
    fn mistakes_are_named() {
        assert!(matches!(
            parse_listeners("FOO://127.0.0.1:1", None, None),
            Err(ListenerError::UnknownName(_))
        ));
        assert!(matches!(
            parse_listeners("SSL://127.0.0.1:1,SSL://127.0.0.1:2", None, None),
            Err(ListenerError::Duplicate(_))
        ));
        assert!(matches!(
            parse_listeners("SSL://127.0.0.1", None, None),
            Err(ListenerError::Syntax(_))
        ));
        assert!(matches!(
            parse_listeners("SSL://127.0.0.1:1", Some("SASL_SSL://h:1"), None),
            Err(ListenerError::UnknownAdvertised(_))
        ));
    }
}
