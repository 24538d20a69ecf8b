//! The broker's HTTP side: `GET /health` for orchestrators, `GET /metrics` for Prometheus,
//! the admin API under `/api/v1` (`crate::api`) and the web console (`crate::console`).
//!
//! It is a library function rather than part of the `herald` binary so that applications that
//! embed a broker get the same endpoints with one call. [`HttpAccess`] protects everything but
//! `/health` (and `/metrics` unless asked) with an admin token or the broker's SASL users by
//! HTTP basic auth; [`serve_with`] can serve it over TLS.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use parking_lot::Mutex;
use sha2::Digest as _;
use subtle::ConstantTimeEq as _;

use crate::Broker;
use crate::metrics;

/// Why the HTTP side could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// Binds the HTTP listener, so that an address in use is reported before anything else starts.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, HttpError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })
}

/// Serves `/health` and `/metrics` for `broker` on `listener` until `shutdown` completes.
///
/// ```no_run
/// # async fn example(broker: std::sync::Arc<herald_broker::Broker>) -> Result<(), herald_broker::http::HttpError> {
/// let listener = herald_broker::http::bind("127.0.0.1:8092".parse().unwrap()).await?;
/// herald_broker::http::serve(listener, broker, std::future::pending()).await
/// # }
/// ```
pub async fn serve(
    listener: tokio::net::TcpListener,
    broker: Arc<Broker>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError> {
    axum::serve(listener, router(broker))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(HttpError::Serve)
}

/// The routes, for applications that mount them in their own axum server: `/health`,
/// `/metrics`, the admin API under `/api/v1` and the web console at `/`. Call it inside a
/// tokio runtime, where it starts sampling the history the console's charts draw.
pub fn router(broker: Arc<Broker>) -> Router {
    router_with_options(broker, ConsoleOptions::default())
}

pub use crate::api::bench::{BenchRenderer, ConsoleOptions};
pub use crate::api::peers::{PeerSource, PeerView};

/// [`router`] with what the process adds to the console (the bench report's renderer, the
/// peer source).
pub fn router_with_options(broker: Arc<Broker>, options: ConsoleOptions) -> Router {
    let state = crate::api::ApiState::new(broker.clone(), options);
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .with_state(broker)
        .merge(crate::api::router(state.clone()))
        .merge(crate::console::router(state))
        .fallback(crate::api::fallback)
}

/// Who may use the HTTP side. `/health` is always open; with neither a token nor basic auth
/// configured everything is open, as before.
///
/// ```
/// let access = herald_broker::http::HttpAccess {
///     admin_token: Some("a long random string".to_string()),
///     basic_auth_users: true,
///     metrics_protected: false,
/// };
/// assert!(access.protects("/api/v1/topics") && !access.protects("/metrics"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct HttpAccess {
    /// `Authorization: Bearer <token>` grants access.
    pub admin_token: Option<String>,
    /// `Authorization: Basic` with a SASL user's name and password grants access.
    pub basic_auth_users: bool,
    /// Whether `/metrics` needs the token or a user too.
    pub metrics_protected: bool,
}

impl HttpAccess {
    /// Whether a request for `path` must prove who it is.
    pub fn protects(&self, path: &str) -> bool {
        let configured = self.admin_token.is_some() || self.basic_auth_users;
        configured && path != "/health" && (path != "/metrics" || self.metrics_protected)
    }
}

/// How long a checked user and password stay accepted without PBKDF2 again; a scraper sends
/// the same credentials every few seconds.
const BASIC_AUTH_CACHE: Duration = Duration::from_secs(300);
/// Credentials remembered at once.
const BASIC_AUTH_CACHE_ENTRIES_MAX: usize = 1024;

#[derive(Clone)]
struct Guard {
    broker: Arc<Broker>,
    access: Arc<HttpAccess>,
    /// SHA-256 of `user:password` that passed, with when.
    checked: Arc<Mutex<HashMap<[u8; 32], Instant>>>,
}

/// [`router`] behind [`HttpAccess`].
pub fn router_with(broker: Arc<Broker>, access: HttpAccess) -> Router {
    router_with_access_and_options(broker, access, ConsoleOptions::default())
}

/// [`router_with_options`] behind [`HttpAccess`].
pub fn router_with_access_and_options(
    broker: Arc<Broker>,
    access: HttpAccess,
    options: ConsoleOptions,
) -> Router {
    let guard = Guard {
        broker: broker.clone(),
        access: Arc::new(access),
        checked: Arc::new(Mutex::new(HashMap::new())),
    };
    router_with_options(broker, options)
        .layer(axum::middleware::from_fn_with_state(guard, authorize))
}

async fn authorize(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    if !guard.access.protects(request.uri().path()) {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    if let Some(presented) = presented {
        if allowed(&guard, &presented).await {
            return next.run(request).await;
        }
    }
    let mut response = StatusCode::UNAUTHORIZED.into_response();
    if guard.access.basic_auth_users {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"herald\""),
        );
    }
    response
}

async fn allowed(guard: &Guard, presented: &str) -> bool {
    if let (Some(token), Some(given)) =
        (&guard.access.admin_token, presented.strip_prefix("Bearer "))
    {
        return bool::from(token.as_bytes().ct_eq(given.trim().as_bytes()));
    }
    let Some(encoded) = presented.strip_prefix("Basic ") else {
        return false;
    };
    if !guard.access.basic_auth_users {
        return false;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let key: [u8; 32] = sha2::Sha256::digest(&decoded).into();
    let now = Instant::now();
    if guard
        .checked
        .lock()
        .get(&key)
        .is_some_and(|at| now.duration_since(*at) < BASIC_AUTH_CACHE)
    {
        return true;
    }
    let Ok(text) = String::from_utf8(decoded) else {
        return false;
    };
    let Some((user, password)) = text
        .split_once(':')
        .map(|(u, p)| (u.to_string(), p.to_string()))
    else {
        return false;
    };
    let broker = guard.broker.clone();
    let ok = tokio::task::spawn_blocking(move || broker.check_password(&user, &password))
        .await
        .unwrap_or(false);
    if ok {
        let mut checked = guard.checked.lock();
        if checked.len() >= BASIC_AUTH_CACHE_ENTRIES_MAX {
            checked.retain(|_, at| now.duration_since(*at) < BASIC_AUTH_CACHE);
            if checked.len() >= BASIC_AUTH_CACHE_ENTRIES_MAX {
                checked.clear();
            }
        }
        checked.insert(key, now);
    }
    ok
}

/// Longest a TLS client may take to finish its handshake with the HTTP side.
const HTTP_TLS_HANDSHAKE_MS_MAX: u64 = 10_000;
/// Handshaken connections waiting for the server to take them.
const HTTP_TLS_QUEUE_MAX: usize = 64;

/// Serves [`router_with`] on `listener` until `shutdown` completes, over TLS when `tls` is
/// given (handshakes run on their own tasks, so a slow client holds up no one).
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    broker: Arc<Broker>,
    access: HttpAccess,
    tls: Option<Arc<crate::auth::TlsConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError> {
    serve_with_options(
        listener,
        broker,
        access,
        tls,
        ConsoleOptions::default(),
        shutdown,
    )
    .await
}

/// [`serve_with`] with what the process adds to the console.
pub async fn serve_with_options(
    listener: tokio::net::TcpListener,
    broker: Arc<Broker>,
    access: HttpAccess,
    tls: Option<Arc<crate::auth::TlsConfig>>,
    options: ConsoleOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError> {
    let app = router_with_access_and_options(broker, access, options);
    let Some(tls) = tls else {
        return axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(HttpError::Serve);
    };
    let local_addr = listener.local_addr().map_err(HttpError::Serve)?;
    let (sender, receiver) = tokio::sync::mpsc::channel(HTTP_TLS_QUEUE_MAX);
    let acceptor = tokio::spawn(accept_tls(listener, tls, sender));
    let result = axum::serve(
        TlsListener {
            receiver,
            local_addr,
        },
        app,
    )
    .with_graceful_shutdown(shutdown)
    .await
    .map_err(HttpError::Serve);
    acceptor.abort();
    result
}

type HttpTlsStream = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

async fn accept_tls(
    listener: tokio::net::TcpListener,
    tls: Arc<crate::auth::TlsConfig>,
    sender: tokio::sync::mpsc::Sender<(HttpTlsStream, SocketAddr)>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = tls.acceptor(false);
        let sender = sender.clone();
        tokio::spawn(async move {
            let timeout = Duration::from_millis(HTTP_TLS_HANDSHAKE_MS_MAX);
            match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let _ = sender.send((stream, peer)).await;
                }
                Ok(Err(error)) => tracing::debug!(%peer, %error, "HTTP TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "HTTP TLS handshake timed out"),
            }
        });
    }
}

/// The TLS connections [`accept_tls`] handshook, as an axum listener.
struct TlsListener {
    receiver: tokio::sync::mpsc::Receiver<(HttpTlsStream, SocketAddr)>,
    local_addr: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = HttpTlsStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.receiver.recv().await {
            Some(accepted) => accepted,
            // The acceptor only stops with the server; wait for the shutdown to end us.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

async fn health(State(broker): State<Arc<Broker>>) -> Response {
    let kafka_addr = broker.local_addr().to_string();
    // Once shutdown has begun the Kafka listener is closed, so orchestrators must stop routing
    // to this process even though the HTTP side still answers.
    if *broker.core.stopping.borrow() {
        let body = serde_json::json!({ "status": "stopping", "kafka_addr": kafka_addr });
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    }
    let insecure = broker.insecure_listeners();
    let mut body = serde_json::json!({ "status": "ok", "kafka_addr": kafka_addr });
    if !insecure.is_empty() {
        // Still healthy, but an operator reading this should know.
        body["warnings"] = serde_json::json!([format!(
            "unauthenticated PLAINTEXT listeners reachable from the network: {}",
            insecure.join(", ")
        )]);
        body["insecure_listeners"] = serde_json::json!(insecure);
    }
    (StatusCode::OK, axum::Json(body)).into_response()
}

async fn metrics_text(State(broker): State<Arc<Broker>>) -> Response {
    let text = match tokio::task::spawn_blocking(move || metrics::render_broker(&broker)).await {
        Ok(text) => text,
        Err(error) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response();
        }
    };
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BrokerConfig;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let status = response[9..12].parse().unwrap();
        let body = response.split_once("\r\n\r\n").unwrap().1.to_string();
        (status, body)
    }

    #[tokio::test]
    async fn health_turns_503_when_the_broker_stops_and_metrics_render() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::start(BrokerConfig {
            data_dir: dir.path().to_path_buf(),
            kafka_addr: "127.0.0.1:0".parse().unwrap(),
            ..Default::default()
        })
        .await
        .unwrap();
        let broker = Arc::new(broker);
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, broker.clone(), std::future::pending()));

        let (status, body) = get(addr, "/health").await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"status\":\"ok\""), "{body}");
        let (status, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(body.contains("# TYPE herald_topics gauge"), "{body}");

        broker.shutdown().await.unwrap();
        let (status, body) = get(addr, "/health").await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("\"status\":\"stopping\""), "{body}");
        server.abort();
    }
}
