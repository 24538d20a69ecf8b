//! The usage service: SMS counted per recipient, each notification exactly once.
//!
//! It is a second consumer of the same `sms` events (its own group, `usage-service`), added
//! without the notification service knowing it exists. Delivery is at-least-once: an event
//! handled but not yet committed when the service crashes comes again after the restart. The
//! count is therefore made idempotent: every counted notification id is remembered, and the
//! counts and the remembered ids are written together in one snapshot file, replaced atomically
//! (temporary file, fsync, rename, fsync of the directory), before the handler returns and so
//! before the SDK commits the offset. A redelivered id is found among the remembered ones and
//! skipped. Writes are shared: one writer task saves the state for every event counted while the
//! previous save ran, so the file is rewritten once per round, not once per event.
//!
//! The direct-call design reaches the same book through `POST /usage`, so both designs count the
//! same way and `compare` can set their numbers side by side.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use herald::{Bus, DeadLetter, Event, EventId, HandlerError, SubscribeError, Subscription};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::bounded::BoundedMap;
use crate::messages::{Names, SmsRequest};

/// Counted ids remembered by default. A redelivery only concerns events not yet committed (those
/// in flight and those handled since the last commit, a fraction of a second's worth), so this
/// is far wider than needed; an id older than the window would be counted again.
pub const SEEN_IDS_MAX_DEFAULT: usize = 10_000;

/// Why the usage could not be counted or loaded.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum UsageError {
    #[error("the usage file {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("the usage file {path} is not a usage snapshot: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    /// A save failed earlier: the counts in memory may be ahead of the file, so nothing more is
    /// counted (or acknowledged) until the service restarts from the file.
    #[error("an earlier save of the usage file failed ({0}); restart the service")]
    Failed(String),
}

/// The file's content: the counts and the ids they include.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Snapshot {
    counts: BTreeMap<String, u64>,
    /// Counted ids, oldest first.
    seen: Vec<EventId>,
}

/// What [`UsageBook::count`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// Counted now (and saved).
    New,
    /// Already counted before: a redelivery or a repeated call, ignored.
    Duplicate,
}

struct Inner {
    counts: BTreeMap<String, u64>,
    seen: BoundedMap<EventId, ()>,
    /// Bumped by every change; the writer saves up to it.
    version: u64,
    duplicates: u64,
    failed: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct Saved {
    version: u64,
    failed: Option<String>,
}

/// The counts per recipient, saved to one file; see the module docs.
pub struct UsageBook {
    path: PathBuf,
    inner: Mutex<Inner>,
    /// Wakes the writer; holds at most one wake-up, which covers every change made before it.
    dirty: mpsc::Sender<()>,
    saved: watch::Sender<Saved>,
}

impl UsageBook {
    /// Loads the book from `path` (empty if there is no file yet) and starts its writer task;
    /// call it inside a Tokio runtime.
    pub fn open(path: &Path, seen_ids_max: usize) -> Result<Arc<Self>, UsageError> {
        let snapshot = match std::fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice::<Snapshot>(&bytes).map_err(|e| UsageError::Corrupt {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Snapshot::default(),
            Err(e) => {
                return Err(UsageError::Io {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                });
            }
        };
        let mut seen = BoundedMap::new(seen_ids_max);
        for id in snapshot.seen {
            seen.insert(id, ());
        }
        let (dirty, wake) = mpsc::channel(1);
        let book = Arc::new(UsageBook {
            path: path.to_path_buf(),
            inner: Mutex::new(Inner {
                counts: snapshot.counts,
                seen,
                version: 0,
                duplicates: 0,
                failed: None,
            }),
            dirty,
            saved: watch::Sender::new(Saved::default()),
        });
        tokio::spawn(write_rounds(Arc::downgrade(&book), wake));
        Ok(book)
    }

    /// Counts notification `id` to `to` once: returns after the count is on disk, or says the id
    /// was counted already (then after that earlier count is on disk).
    pub async fn count(&self, id: EventId, to: &str) -> Result<Counted, UsageError> {
        let (version, counted) = {
            let mut inner = self.inner.lock();
            if let Some(reason) = &inner.failed {
                return Err(UsageError::Failed(reason.clone()));
            }
            if inner.seen.contains_key(&id) {
                inner.duplicates += 1;
                // It may have been counted a moment ago by a call still waiting for its save.
                (inner.version, Counted::Duplicate)
            } else {
                inner.seen.insert(id, ());
                *inner.counts.entry(to.to_string()).or_insert(0) += 1;
                inner.version += 1;
                (inner.version, Counted::New)
            }
        };
        // Full means a wake-up is pending already, which covers this change too.
        let _ = self.dirty.try_send(());
        let mut saved = self.saved.subscribe();
        let state = saved
            .wait_for(|s| s.version >= version || s.failed.is_some())
            .await
            .map_err(|_| UsageError::Failed("the writer stopped".to_string()))?;
        if state.version >= version {
            return Ok(counted);
        }
        Err(UsageError::Failed(state.failed.clone().unwrap_or_default()))
    }

    /// `to`'s count. It may include a count whose save is still under way; such an event is not
    /// acknowledged yet, so after a crash it comes again and is counted then.
    pub fn count_of(&self, to: &str) -> u64 {
        self.inner.lock().counts.get(to).copied().unwrap_or(0)
    }

    pub fn totals(&self) -> Totals {
        let inner = self.inner.lock();
        Totals {
            recipients: inner.counts.len(),
            total: inner.counts.values().sum(),
            duplicates_ignored: inner.duplicates,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `GET /usage`: the sum over every recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub recipients: usize,
    pub total: u64,
    /// Redeliveries and repeated calls skipped since this process started.
    pub duplicates_ignored: u64,
}

/// The writer task: saves the state whenever it changed, one save per round; ends with the book
/// (its wake-up sender goes with it).
async fn write_rounds(book: Weak<UsageBook>, mut wake: mpsc::Receiver<()>) {
    while wake.recv().await.is_some() {
        let Some(book) = book.upgrade() else { return };
        let (version, bytes) = {
            let inner = book.inner.lock();
            if inner.version <= book.saved.borrow().version || inner.failed.is_some() {
                continue;
            }
            let snapshot = Snapshot {
                counts: inner.counts.clone(),
                seen: inner.seen.keys().copied().collect(),
            };
            (inner.version, serde_json::to_vec(&snapshot))
        };
        let path = book.path.clone();
        let result = match bytes {
            Ok(bytes) => tokio::task::spawn_blocking(move || replace_file(&path, &bytes))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e))),
            Err(e) => Err(std::io::Error::other(e)),
        };
        match result {
            Ok(()) => book.saved.send_modify(|s| s.version = version),
            Err(e) => {
                let reason = e.to_string();
                tracing::error!(path = %book.path.display(), error = %reason, "saving the usage failed; counting stops");
                book.inner.lock().failed = Some(reason.clone());
                book.saved.send_modify(|s| s.failed = Some(reason));
            }
        }
        // Changes made while this round wrote are saved by the next one.
        if book.inner.lock().version > version {
            let _ = book.dirty.try_send(());
        }
    }
}

/// Replaces `path` with `bytes` atomically: a crash leaves the old file or the new one, whole.
fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    let temp = PathBuf::from(temp);
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temp, path)?;
    // The rename itself is durable only once the directory is.
    std::fs::File::open(&dir)?.sync_all()
}

/// Counts every event of the requests topic under the usage group (by default `sms` and
/// `usage-service`).
pub async fn subscribe(
    bus: &Bus,
    book: Arc<UsageBook>,
    concurrency: usize,
    names: &Names,
) -> Result<Subscription, SubscribeError> {
    bus.subscribe(&names.sms_topic)
        .group(&names.usage_group)
        .concurrency(concurrency)
        // A failed save stops counting; leave the event uncommitted for after the restart.
        .dead_letter(DeadLetter::Refuse)
        .handle(move |event: Event| {
            let book = book.clone();
            async move {
                // Events that are not SMS requests are not usage.
                let Ok(request) = event.decode_json::<SmsRequest>() else {
                    return Ok(());
                };
                book.count(event.id, &request.to)
                    .await
                    .map_err(|e| HandlerError::retryable(e.to_string()))?;
                Ok::<(), HandlerError>(())
            }
        })
        .await
}

/// The body of `POST /usage`, how the direct-call design reports a sent SMS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageCall {
    pub id: EventId,
    pub to: String,
}

/// `GET /usage/{to}`, `GET /usage`, `POST /usage` and `GET /health`.
pub fn router(book: Arc<UsageBook>) -> Router {
    Router::new()
        .route("/usage", get(totals).post(record))
        .route("/usage/{to}", get(one))
        .route(
            "/health",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .with_state(book)
}

async fn totals(State(book): State<Arc<UsageBook>>) -> Response {
    axum::Json(book.totals()).into_response()
}

async fn one(State(book): State<Arc<UsageBook>>, UrlPath(to): UrlPath<String>) -> Response {
    axum::Json(json!({"to": to, "count": book.count_of(&to)})).into_response()
}

async fn record(State(book): State<Arc<UsageBook>>, body: axum::body::Bytes) -> Response {
    let call: UsageCall = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": format!("the body must be {{\"id\", \"to\"}}: {e}")})),
            )
                .into_response();
        }
    };
    match book.count(call.id, &call.to).await {
        Ok(counted) => axum::Json(json!({
            "to": call.to,
            "count": book.count_of(&call.to),
            "duplicate": counted == Counted::Duplicate,
        }))
        .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_id_counts_once_even_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.json");
        let book = UsageBook::open(&path, 100).unwrap();
        let (a, b) = (EventId::new(), EventId::new());
        assert_eq!(book.count(a, "+441").await.unwrap(), Counted::New);
        assert_eq!(book.count(a, "+441").await.unwrap(), Counted::Duplicate);
        assert_eq!(book.count(b, "+441").await.unwrap(), Counted::New);
        assert_eq!(book.count_of("+441"), 2);
        drop(book);

        let book = UsageBook::open(&path, 100).unwrap();
        assert_eq!(book.count_of("+441"), 2);
        assert_eq!(book.count(b, "+441").await.unwrap(), Counted::Duplicate);
        assert_eq!(
            book.count(EventId::new(), "+442").await.unwrap(),
            Counted::New
        );
        let totals = book.totals();
        assert_eq!((totals.recipients, totals.total), (2, 3));
        assert_eq!(totals.duplicates_ignored, 1);
    }

    #[tokio::test]
    async fn concurrent_counts_share_saves_and_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.json");
        let book = UsageBook::open(&path, 1000).unwrap();
        let mut tasks = Vec::new();
        for i in 0..200 {
            let book = book.clone();
            tasks.push(tokio::spawn(async move {
                book.count(EventId::new(), &format!("+44{}", i % 7)).await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), Counted::New);
        }
        drop(book);
        let book = UsageBook::open(&path, 1000).unwrap();
        assert_eq!(book.totals().total, 200);
        assert_eq!(book.totals().recipients, 7);
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_snapshot_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.json");
        std::fs::write(&path, b"{\"counts\": 3").unwrap();
        assert!(matches!(
            UsageBook::open(&path, 10),
            Err(UsageError::Corrupt { .. })
        ));
    }
}
