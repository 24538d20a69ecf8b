//! Both services in one process over the memory transport: the HTTP contract (validation,
//! statuses, 404s), retries ending in `failed`, and a notification service rebuilding its view.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use herald::{Bus, RetryPolicy};
use http_body_util::BodyExt;
use notifications::notifier::{Notifier, NotifierConfig};
use notifications::provider::StandInProvider;
use notifications::sender::{Sender, SenderConfig};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::support::{provider_log, wait_for};

async fn call(app: &Router, method: &str, uri: &str, body: &str) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{method} {uri}: not JSON ({e}): {bytes:?}"));
    (status, value)
}

async fn post(app: &Router, to: &str, text: &str) -> String {
    let (status, body) = call(
        app,
        "POST",
        "/notifications",
        &json!({"to": to, "text": text}).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["id"].as_str().unwrap().to_string()
}

async fn wait_status(app: &Router, id: &str, want: &str) -> Value {
    wait_for(&format!("notification {id} to be {want}"), || async {
        let (status, body) = call(app, "GET", &format!("/notifications/{id}"), "").await;
        (status == StatusCode::OK && body["status"] == want).then_some(body)
    })
    .await
}

fn fast_retry(attempts: u32) -> SenderConfig {
    SenderConfig {
        retry: RetryPolicy::attempts(attempts)
            .backoff(Duration::from_millis(5), Duration::from_millis(20)),
        ..SenderConfig::default()
    }
}

#[tokio::test]
async fn bad_requests_get_clear_json_errors() {
    let bus = Bus::connect("memory://").await.unwrap();
    let notifier = Notifier::start(bus, NotifierConfig::default())
        .await
        .unwrap();
    let app = notifier.router();
    for (body, needle) in [
        ("not json", "JSON object"),
        (r#"{"to": "+4412345"}"#, "missing field `text`"),
        (
            r#"{"to": "+4412345", "text": "hi", "extra": 1}"#,
            "unknown field `extra`",
        ),
        (r#"{"to": "call me", "text": "hi"}"#, "phone number"),
        (r#"{"to": "+1", "text": "hi"}"#, "phone number"),
        (r#"{"to": "+4412345", "text": "  "}"#, "must not be empty"),
    ] {
        let (status, err) = call(&app, "POST", "/notifications", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let message = err["error"].as_str().unwrap();
        assert!(message.contains(needle), "{body}: {message}");
    }
    let long = json!({"to": "+4412345", "text": "x".repeat(1601)}).to_string();
    let (status, err) = call(&app, "POST", "/notifications", &long).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(err["error"].as_str().unwrap().contains("1601 characters"));

    let (status, err) = call(&app, "GET", "/notifications/not-an-id", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(err["error"].as_str().unwrap().contains("not-an-id"));
    let unknown = herald::EventId::new();
    let (status, _) = call(&app, "GET", &format!("/notifications/{unknown}"), "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    notifier.shutdown().await.unwrap();
}

#[tokio::test]
async fn notifications_are_sent_once_and_the_view_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("provider.log");
    let bus = Bus::connect("memory://").await.unwrap();
    let notifier = Notifier::start(bus.clone(), NotifierConfig::default())
        .await
        .unwrap();
    let app = notifier.router();

    // Posted while no SMS service runs: stored, pending.
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(post(&app, &format!("+44100{}", i % 2), &format!("hello {i}")).await);
    }
    for id in &ids {
        let (status, body) = call(&app, "GET", &format!("/notifications/{id}"), "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["status"], "pending", "{body}");
    }

    let provider = Arc::new(StandInProvider::open(&log, 0.0).unwrap());
    let sender = Sender::start(bus.clone(), provider, fast_retry(3))
        .await
        .unwrap();
    for id in &ids {
        let body = wait_status(&app, id, "sent").await;
        assert_eq!(body["attempts"], 1);
        assert!(
            body["provider_message_id"]
                .as_str()
                .unwrap()
                .starts_with("stand-in-")
        );
    }
    let sent: Vec<String> = provider_log(&log)
        .iter()
        .map(|s| s.id.to_string())
        .collect();
    assert_eq!(sent.len(), ids.len());
    for id in &ids {
        assert_eq!(
            sent.iter().filter(|s| *s == id).count(),
            1,
            "{id} in {sent:?}"
        );
    }

    // A new notification service knows nothing but what the topics tell it.
    notifier.shutdown().await.unwrap();
    let again = Notifier::start(bus.clone(), NotifierConfig::default())
        .await
        .unwrap();
    let app = again.router();
    for id in &ids {
        let body = wait_status(&app, id, "sent").await;
        assert!(body["to"].as_str().unwrap().starts_with("+44100"));
    }
    let stats = sender.shutdown().await.unwrap();
    assert_eq!(stats.sms.handled, ids.len() as u64);
    again.shutdown().await.unwrap();
}

#[tokio::test]
async fn what_keeps_failing_becomes_failed() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::connect("memory://").await.unwrap();
    let notifier = Notifier::start(bus.clone(), NotifierConfig::default())
        .await
        .unwrap();
    let app = notifier.router();
    let provider = Arc::new(StandInProvider::open(&dir.path().join("p.log"), 1.0).unwrap());
    let sender = Sender::start(bus.clone(), provider, fast_retry(3))
        .await
        .unwrap();

    let id = post(&app, "+4412345", "never arrives").await;
    let body = wait_status(&app, &id, "failed").await;
    assert_eq!(body["attempts"], 3, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("unavailable"),
        "{body}"
    );
    assert_eq!(body["to"], "+4412345");
    assert!(provider_log(&dir.path().join("p.log")).is_empty());
    let stats = sender.shutdown().await.unwrap();
    assert_eq!(stats.sms.dead_lettered, 1);
    assert_eq!(stats.failures.handled, 1);
    notifier.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_tracked_notifications_are_capped() {
    let bus = Bus::connect("memory://").await.unwrap();
    let notifier = Notifier::start(
        bus,
        NotifierConfig {
            notifications_max: 2,
            ..NotifierConfig::default()
        },
    )
    .await
    .unwrap();
    let app = notifier.router();
    for text in ["one", "two", "three", "four"] {
        post(&app, "+4412345", text).await;
    }
    // Which two are kept depends on how far the view's replay got; that only two are is what
    // bounds memory (the eviction order is tested on the status book itself).
    assert_eq!(notifier.tracked(), 2);
    notifier.shutdown().await.unwrap();
}
