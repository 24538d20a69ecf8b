//! The trade-off table of `herald bench matrix` in the console: results uploaded as the
//! matrix's JSON (`POST /api/v1/bench`) are rendered by the same code as the matrix's HTML
//! report and served at `/bench/report`, where the priority sliders re-rank the ways.
//!
//! The broker library does not know the matrix format; the process around it hands over the
//! renderer ([`ConsoleOptions::bench_renderer`]), as `herald serve` does with `herald-bench`'s.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde_json::json;

use super::{ApiError, ApiState};

/// Turns a matrix's JSON into its self-contained HTML report, or says why it cannot.
pub type BenchRenderer = Arc<dyn Fn(&[u8]) -> Result<String, String> + Send + Sync>;

/// What the process around the broker adds to the console.
///
/// ```
/// use std::sync::Arc;
/// let options = herald_broker::http::ConsoleOptions {
///     bench_renderer: Some(Arc::new(|json: &[u8]| {
///         Ok(format!("<p>{} bytes of results</p>", json.len()))
///     })),
///     ..Default::default()
/// };
/// assert!(options.bench_renderer.is_some());
/// ```
#[derive(Clone, Default)]
pub struct ConsoleOptions {
    /// Renders uploaded `herald bench matrix` results; without it uploads are refused.
    pub bench_renderer: Option<BenchRenderer>,
    /// A report rendered before start (from a results file), shown until an upload replaces it.
    pub bench_report: Option<String>,
    /// Lists the brokerless members seen on the LAN for `GET /api/v1/peers` and the Peers page.
    pub peer_source: Option<super::peers::PeerSource>,
    /// Why there is no peer source (browsing turned off, mDNS failed to start), shown instead.
    pub peers_off_reason: Option<String>,
}

/// The uploaded results, rendered.
pub(crate) struct BenchState {
    renderer: Option<BenchRenderer>,
    /// (when uploaded, ms since the epoch; the report's HTML).
    report: Mutex<Option<(i64, Arc<str>)>>,
}

impl BenchState {
    pub(crate) fn new(options: ConsoleOptions) -> BenchState {
        let report = options
            .bench_report
            .map(|html| (super::history::now_ms(), Arc::from(html)));
        BenchState {
            renderer: options.bench_renderer,
            report: Mutex::new(report),
        }
    }
}

/// `GET /api/v1/bench`: whether results are loaded, and when.
pub(crate) async fn status(State(state): State<ApiState>) -> Response {
    let report = state.bench.report.lock().clone();
    Json(json!({
        "uploads_accepted": state.bench.renderer.is_some(),
        "uploaded_ms": report.as_ref().map(|(at, _)| *at),
        "report_bytes": report.as_ref().map(|(_, html)| html.len()),
    }))
    .into_response()
}

/// `POST /api/v1/bench`: the JSON `herald bench matrix` wrote; replaces the results shown.
pub(crate) async fn upload(
    State(state): State<ApiState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes =
        body.map_err(|rejection| ApiError::new(rejection.status(), rejection.body_text()))?;
    let Some(renderer) = state.bench.renderer.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "this broker was started without a bench renderer",
        ));
    };
    let html = super::blocking(move || {
        renderer(&bytes).map_err(|message| ApiError::bad(format!("not matrix results: {message}")))
    })
    .await?;
    let at = super::history::now_ms();
    let bytes = html.len();
    *state.bench.report.lock() = Some((at, html.into()));
    Ok((
        StatusCode::CREATED,
        Json(json!({ "uploaded_ms": at, "report_bytes": bytes })),
    )
        .into_response())
}

/// `GET /bench/report`: the rendered report, a whole HTML document of its own.
pub(crate) async fn report(State(state): State<ApiState>) -> Response {
    match state.bench.report.lock().clone() {
        Some((_, html)) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                // The report runs only its own inline script and loads nothing else.
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:",
                ),
            ],
            html.to_string(),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "no matrix results uploaded yet\n",
        )
            .into_response(),
    }
}
