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
    let text = metrics::render(&broker.stats());
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
