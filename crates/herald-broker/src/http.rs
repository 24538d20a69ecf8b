//! The broker's HTTP side: `GET /health` for orchestrators and `GET /metrics` for Prometheus.
//!
//! It is a library function rather than part of the `herald` binary so that applications that
//! embed a broker get the same endpoints with one call.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

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

/// The routes, for applications that mount them in their own axum server.
pub fn router(broker: Arc<Broker>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .with_state(broker)
}

async fn health(State(broker): State<Arc<Broker>>) -> Response {
    let kafka_addr = broker.local_addr();
    let body = serde_json::json!({
        "status": "ok",
        "kafka_addr": kafka_addr.to_string(),
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

async fn metrics_text(State(broker): State<Arc<Broker>>) -> Response {
    let text = metrics::render(&broker.stats());
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
}
