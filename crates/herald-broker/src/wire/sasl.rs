//! SaslHandshake and SaslAuthenticate: a connection's SASL exchange on a SASL listener, and the
//! per-connection [`Session`] (listener, principal, SASL state) every request is checked against.
//!
//! On a SASL listener nothing but ApiVersions, SaslHandshake and SaslAuthenticate is served
//! before authentication succeeds. A failed authentication is answered with
//! SASL_AUTHENTICATION_FAILED after a delay that grows per source address, logged without the
//! secret, and the connection is closed.

use std::net::SocketAddr;
use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use tracing::{info, warn};

use super::str_bytes;
use crate::Core;
use crate::auth::scram::{self, Mechanism, SaslError, ScramServer};
use crate::auth::{Listener, Principal};
use crate::stats::Counters;

/// Where a connection is in its SASL exchange.
pub(crate) enum SaslState {
    /// Not a SASL listener: the principal comes from TLS or is anonymous.
    NotRequired,
    /// Waiting for SaslHandshake.
    Handshake,
    /// Handshake done; waiting for the first SaslAuthenticate of this mechanism.
    Authenticate(String),
    /// SCRAM server-first sent; waiting for client-final.
    ScramFinal(Box<ScramServer>),
    /// Authenticated.
    Done,
}

/// What the wire layer knows about one connection.
pub(crate) struct Session {
    pub(crate) listener: Arc<Listener>,
    pub(crate) peer: SocketAddr,
    pub(crate) principal: Principal,
    pub(crate) sasl: SaslState,
    /// Set when the response being sent is the last: the connection closes after it.
    pub(crate) close_after_reply: bool,
    /// After a SaslHandshake v0 the SASL tokens come as bare size-prefixed frames, without
    /// Kafka headers, until authentication ends.
    pub(crate) raw_tokens: bool,
}

impl Session {
    pub(crate) fn new(listener: Arc<Listener>, peer: SocketAddr, principal: Principal) -> Session {
        let sasl = if listener.protocol.sasl() {
            SaslState::Handshake
        } else {
            SaslState::NotRequired
        };
        Session {
            listener,
            peer,
            principal,
            sasl,
            close_after_reply: false,
            raw_tokens: false,
        }
    }

    /// Whether requests other than the SASL ones may be served.
    pub(crate) fn authenticated(&self) -> bool {
        matches!(self.sasl, SaslState::NotRequired | SaslState::Done)
    }
}

const ILLEGAL_SASL_STATE: i16 = ResponseError::IllegalSaslState.code();
const UNSUPPORTED_SASL_MECHANISM: i16 = ResponseError::UnsupportedSaslMechanism.code();
const SASL_AUTHENTICATION_FAILED: i16 = ResponseError::SaslAuthenticationFailed.code();

pub(crate) fn handshake(
    core: &Core,
    session: &mut Session,
    request: SaslHandshakeRequest,
    version: i16,
) -> SaslHandshakeResponse {
    let mechanisms = core
        .security
        .mechanisms
        .iter()
        .map(|name| str_bytes(name))
        .collect();
    let response = SaslHandshakeResponse::default().with_mechanisms(mechanisms);
    if !matches!(session.sasl, SaslState::Handshake) {
        // Not a SASL listener, or a second handshake: Kafka refuses both this way.
        session.close_after_reply = true;
        return response.with_error_code(ILLEGAL_SASL_STATE);
    }
    let wanted = request.mechanism.as_str().to_string();
    if !core.security.mechanisms.contains(&wanted) {
        info!(peer = %session.peer, mechanism = %wanted, "SASL mechanism not enabled");
        session.close_after_reply = true;
        return response.with_error_code(UNSUPPORTED_SASL_MECHANISM);
    }
    session.sasl = SaslState::Authenticate(wanted);
    session.raw_tokens = version == 0;
    response
}

/// One bare SASL token after a SaslHandshake v0: the answer token, or `None` when
/// authentication failed (the connection is then closed, as Kafka does in this mode).
pub(crate) async fn raw_token(
    core: &Arc<Core>,
    session: &mut Session,
    token: bytes::Bytes,
) -> Option<Vec<u8>> {
    let request = SaslAuthenticateRequest::default().with_auth_bytes(token);
    let response = authenticate(core, session, request).await;
    if response.error_code != 0 {
        return None;
    }
    if session.authenticated() {
        session.raw_tokens = false;
    }
    Some(response.auth_bytes.to_vec())
}

pub(crate) async fn authenticate(
    core: &Arc<Core>,
    session: &mut Session,
    request: SaslAuthenticateRequest,
) -> SaslAuthenticateResponse {
    let state = std::mem::replace(&mut session.sasl, SaslState::Handshake);
    let outcome = match state {
        SaslState::Authenticate(mechanism) if mechanism == "PLAIN" => {
            plain(core, request.auth_bytes.to_vec())
                .await
                .map(|user| (Some(user), Vec::new()))
        }
        SaslState::Authenticate(mechanism) => match Mechanism::from_name(&mechanism) {
            Some(mechanism) => scram_first(core, mechanism, &request.auth_bytes).map(|server| {
                let first = server.server_first().to_vec();
                session.sasl = SaslState::ScramFinal(Box::new(server));
                (None, first)
            }),
            None => Err(Failure::State),
        },
        SaslState::ScramFinal(server) => {
            let user = server.user().to_string();
            server
                .finish(&request.auth_bytes)
                .map(|last| (Some(user), last))
                .map_err(Failure::Sasl)
        }
        other => {
            session.sasl = other;
            Err(Failure::State)
        }
    };
    match outcome {
        Ok((Some(user), bytes)) => {
            core.security.failures.succeeded(session.peer.ip());
            session.principal = Principal::user(&user);
            session.sasl = SaslState::Done;
            info!(peer = %session.peer, principal = %session.principal, listener = %session.listener.name, "authenticated");
            SaslAuthenticateResponse::default().with_auth_bytes(bytes.into())
        }
        Ok((None, bytes)) => SaslAuthenticateResponse::default().with_auth_bytes(bytes.into()),
        Err(Failure::State) => {
            session.close_after_reply = true;
            SaslAuthenticateResponse::default()
                .with_error_code(ILLEGAL_SASL_STATE)
                .with_error_message(Some(str_bytes(
                    "SaslAuthenticate is only valid after a successful SaslHandshake",
                )))
        }
        Err(Failure::Sasl(error)) => {
            Counters::add(&core.counters.authentication_failures, 1);
            // The error says which user and why in our words; never what was sent.
            warn!(peer = %session.peer, listener = %session.listener.name, %error, "authentication failed");
            let delay = core.security.failures.failed(session.peer.ip());
            tokio::time::sleep(delay).await;
            session.close_after_reply = true;
            SaslAuthenticateResponse::default()
                .with_error_code(SASL_AUTHENTICATION_FAILED)
                .with_error_message(Some(str_bytes(match error {
                    SaslError::InvalidCredentials { .. } => {
                        "Authentication failed: Invalid username or password"
                    }
                    _ => "Authentication failed: malformed or unsupported SASL message",
                })))
        }
    }
}

enum Failure {
    State,
    Sasl(SaslError),
}

fn scram_first(core: &Core, mechanism: Mechanism, message: &[u8]) -> Result<ScramServer, Failure> {
    let first = scram::parse_client_first(mechanism, message).map_err(Failure::Sasl)?;
    let credential = match core.security.users.credential(&first.user, mechanism) {
        Ok(credential) => credential,
        Err(error) => {
            warn!(%error, "cannot read the users' credentials");
            None
        }
    };
    Ok(ScramServer::start(mechanism, first, credential))
}

/// Checks a PLAIN message against the user's stored SCRAM credential (SHA-512 first); the
/// PBKDF2 runs on the blocking pool.
async fn plain(core: &Arc<Core>, message: Vec<u8>) -> Result<String, Failure> {
    let core = core.clone();
    let checked = tokio::task::spawn_blocking(move || {
        let plain = scram::parse_plain(&message)?;
        let invalid = || SaslError::InvalidCredentials {
            user: plain.user.to_string(),
        };
        for mechanism in [Mechanism::Sha512, Mechanism::Sha256] {
            match core.security.users.credential(plain.user, mechanism) {
                Ok(Some(credential)) => {
                    return if credential.matches_password(mechanism, plain.password) {
                        Ok(plain.user.to_string())
                    } else {
                        Err(invalid())
                    };
                }
                Ok(None) => {}
                Err(error) => warn!(%error, "cannot read the users' credentials"),
            }
        }
        Err(invalid())
    })
    .await;
    match checked {
        Ok(result) => result.map_err(Failure::Sasl),
        Err(_) => Err(Failure::State),
    }
}
