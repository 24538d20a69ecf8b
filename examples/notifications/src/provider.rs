//! A stand-in for an SMS provider's API: it "sends" an SMS by appending one JSON line to a file.
//!
//! This is not a real SMS gateway. It imitates the two properties of one that matter to the
//! example: it sometimes fails (with probability `fail_rate`, so retries and dead letters get
//! exercised), and it deduplicates by an idempotency key (the notification id), as real SMS
//! APIs let callers do, so an event redelivered after a crash is not sent twice. The file is
//! both the record of what was sent and the provider's durable memory of idempotency keys: it is
//! read back on start, and each line is on disk (`fdatasync`) before a send counts as done.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald::EventId;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::bounded::BoundedMap;

/// Idempotency keys remembered by default. A redelivery can only concern events not yet
/// committed, which are a few recent ones, so this window is far wider than needed; like a real
/// provider's key expiry, a duplicate older than the window would be sent again.
pub const IDEMPOTENCY_KEYS_MAX_DEFAULT: usize = 100_000;

/// Why the stand-in provider did not send.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The simulated outage (`--fail-rate`); worth retrying.
    #[error("the SMS provider is unavailable (simulated failure, attempt {attempt})")]
    Unavailable { attempt: u32 },
    #[error("the provider log {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("the provider log {path}, line {line}: {reason}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("the fail rate must be between 0 and 1, not {0}")]
    BadFailRate(f64),
}

/// One line of the provider log: one SMS that went out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentSms {
    /// The idempotency key: the notification id.
    pub id: EventId,
    pub to: String,
    pub text: String,
    pub provider_message_id: String,
    /// Calls to the provider for this id until it went out (this process's count).
    pub attempts: u32,
    pub sent_at_ms: u64,
}

struct Inner {
    file: File,
    sent: BoundedMap<EventId, SentSms>,
    /// Failed calls per id not yet sent, to report the attempt count.
    failures: BoundedMap<EventId, u32>,
    rng: fastrand::Rng,
}

/// The stand-in provider; see the module docs.
pub struct StandInProvider {
    path: PathBuf,
    fail_rate: f64,
    /// How long each call takes before it answers, like a real provider's API round trip.
    latency: Duration,
    inner: Mutex<Inner>,
}

impl StandInProvider {
    /// Opens (or creates) the log at `path`, remembering the ids it holds. A torn last line (a
    /// crash in the middle of a write) is cut off: that send never completed.
    pub fn open(path: &Path, fail_rate: f64) -> Result<Self, ProviderError> {
        Self::open_with(path, fail_rate, IDEMPOTENCY_KEYS_MAX_DEFAULT)
    }

    pub fn open_with(
        path: &Path,
        fail_rate: f64,
        idempotency_keys_max: usize,
    ) -> Result<Self, ProviderError> {
        if !(0.0..=1.0).contains(&fail_rate) {
            return Err(ProviderError::BadFailRate(fail_rate));
        }
        let io_err = |source| ProviderError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io_err)?;
        let mut sent = BoundedMap::new(idempotency_keys_max);
        let mut complete_bytes = 0u64;
        let mut reader = BufReader::new(&file);
        let mut line = String::new();
        let mut number = 0;
        loop {
            line.clear();
            let n = reader.read_line(&mut line).map_err(io_err)?;
            if n == 0 || !line.ends_with('\n') {
                break;
            }
            number += 1;
            let sms: SentSms =
                serde_json::from_str(line.trim_end()).map_err(|e| ProviderError::Corrupt {
                    path: path.to_path_buf(),
                    line: number,
                    reason: e.to_string(),
                })?;
            sent.insert(sms.id, sms);
            complete_bytes += n as u64;
        }
        drop(reader);
        let len = file.metadata().map_err(io_err)?.len();
        if len != complete_bytes {
            tracing::warn!(path = %path.display(), bytes = len - complete_bytes, "cutting off a torn last line");
            file.set_len(complete_bytes).map_err(io_err)?;
            file.sync_data().map_err(io_err)?;
        }
        file.seek(SeekFrom::End(0)).map_err(io_err)?;
        Ok(StandInProvider {
            path: path.to_path_buf(),
            fail_rate,
            latency: Duration::ZERO,
            inner: Mutex::new(Inner {
                file,
                sent,
                failures: BoundedMap::new(idempotency_keys_max),
                rng: fastrand::Rng::new(),
            }),
        })
    }

    /// Makes each call take `latency` (a real SMS API answers in tens to hundreds of
    /// milliseconds); callers wait it out with [`StandInProvider::latency`] before
    /// [`StandInProvider::send`], outside any lock, so calls overlap as they would over a network.
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    pub fn latency(&self) -> Duration {
        self.latency
    }

    /// Sends one SMS under idempotency key `id`. A key already sent returns the first send's
    /// record without sending again. Blocks on the file: call it from a blocking task.
    pub fn send(&self, id: EventId, to: &str, text: &str) -> Result<SentSms, ProviderError> {
        let mut inner = self.inner.lock();
        if let Some(done) = inner.sent.get(&id) {
            tracing::info!(%id, "duplicate send suppressed by the idempotency key");
            return Ok(done.clone());
        }
        let attempt = inner.failures.get(&id).copied().unwrap_or(0) + 1;
        if self.fail_rate > 0.0 && inner.rng.f64() < self.fail_rate {
            inner.failures.insert(id, attempt);
            return Err(ProviderError::Unavailable { attempt });
        }
        let sms = SentSms {
            id,
            to: to.to_string(),
            text: text.to_string(),
            provider_message_id: format!("stand-in-{}", EventId::new()),
            attempts: attempt,
            sent_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
        };
        let mut line = serde_json::to_vec(&sms).map_err(|e| ProviderError::Io {
            path: self.path.clone(),
            source: e.into(),
        })?;
        line.push(b'\n');
        let io_err = |source| ProviderError::Io {
            path: self.path.clone(),
            source,
        };
        inner.file.write_all(&line).map_err(io_err)?;
        inner.file.sync_data().map_err(io_err)?;
        inner.failures.remove(&id);
        inner.sent.insert(id, sms.clone());
        Ok(sms)
    }

    /// The record of `id`'s send, if it went out (within the idempotency window).
    pub fn sent(&self, id: &EventId) -> Option<SentSms> {
        self.inner.lock().sent.get(id).cloned()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(path: &Path) -> Vec<SentSms> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn a_key_is_sent_once_even_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("provider.log");
        let p = StandInProvider::open(&path, 0.0).unwrap();
        let id = EventId::new();
        let first = p.send(id, "+441", "hi").unwrap();
        let again = p.send(id, "+441", "hi").unwrap();
        assert_eq!(first, again);
        drop(p);
        let p = StandInProvider::open(&path, 0.0).unwrap();
        assert_eq!(p.send(id, "+441", "hi").unwrap(), first);
        let other = p.send(EventId::new(), "+442", "yo").unwrap();
        let log = lines(&path);
        assert_eq!(log, vec![first, other]);
    }

    #[test]
    fn a_torn_last_line_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("provider.log");
        let p = StandInProvider::open(&path, 0.0).unwrap();
        let sent = p.send(EventId::new(), "+441", "hi").unwrap();
        drop(p);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"id\":\"0192").unwrap();
        drop(f);
        let p = StandInProvider::open(&path, 0.0).unwrap();
        let next = p.send(EventId::new(), "+442", "yo").unwrap();
        assert_eq!(lines(&path), vec![sent, next]);
    }

    #[test]
    fn a_failing_provider_sends_nothing_and_counts_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("provider.log");
        let p = StandInProvider::open(&path, 1.0).unwrap();
        let id = EventId::new();
        for attempt in 1..=3 {
            match p.send(id, "+441", "hi") {
                Err(ProviderError::Unavailable { attempt: a }) => assert_eq!(a, attempt),
                other => panic!("expected a simulated failure, got {other:?}"),
            }
        }
        assert!(p.sent(&id).is_none());
        assert!(lines(&path).is_empty());
        assert!(StandInProvider::open(&path, 1.5).is_err());
    }
}
