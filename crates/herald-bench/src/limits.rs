//! The machine's limits as the matrix compares with them, measured open loop at the same rates
//! as the ways they bound: a bare TCP echo (the floor of any acknowledged round trip: the
//! brokered producer's ack, direct's ack, a request's reply), bare UDP one way (the floor of a
//! datagram's delivery), and the disk's ideal group commit (the floor of a durable ack: every
//! event that has arrived is written and covered by one `fdatasync` per round).

use std::io::{Seek as _, Write as _};
use std::net::UdpSocket;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::BenchError;
use crate::baseline::{Driven, Echo, EchoAnswers};
use crate::clock::{Latency, STAMP_BYTES, mono_ns, read_stamp, stamp};
use crate::pace::{self, Outcome, Recorder, Schedule};

/// Largest file the disk bench writes before starting over at offset 0 (MiB of 2^20 bytes).
const DISK_FILE_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// Events waiting for the disk bench's writer; beyond it the generator is the limit.
const DISK_QUEUE_EVENTS_MAX: usize = 1_000_000;
/// Events in flight at once in a maximum-rate cell (a closed window instead of a schedule).
pub const WINDOW_EVENTS_MAX: u64 = 4096;
/// How long any limit waits for its last answers after the schedule ended.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Bridges the echo's answers to a [`Recorder`]; the echo reports `Instant`s, converted back to
/// the monotonic clock they were taken from.
struct EchoRecorder(Recorder);

impl EchoAnswers for EchoRecorder {
    fn answered(
        &self,
        at: std::time::Instant,
        _called: std::time::Instant,
        due: std::time::Instant,
    ) {
        let due_ns = mono_ns()
            .saturating_sub(at.elapsed().as_nanos() as u64)
            .saturating_sub(at.saturating_duration_since(due).as_nanos() as u64);
        self.0.ok(due_ns);
    }
    fn failed(&self) {
        self.0.fail("echo write failed");
    }
}

/// Bare TCP echo of `payload_bytes` on loopback, open loop at `schedule`: the client on one
/// single-threaded runtime, the echo on another, as two processes would run.
pub fn tcp_echo(payload_bytes: usize, schedule: Schedule) -> Result<Outcome, BenchError> {
    let server = Driven::start("limit-echo-server")?;
    let client = Driven::start("limit-echo-client")?;
    let answers = Arc::new(EchoRecorder(Recorder::new()?));
    let echo = Echo::start(&server, &client, payload_bytes, answers.clone())?;
    let start = mono_ns();
    let now_instant = std::time::Instant::now();
    let sent = std::cell::Cell::new(0u64);
    let generated = pace::run(
        schedule,
        // The closed window of the maximum-rate cell.
        || answers.0.room(sent.get(), WINDOW_EVENTS_MAX, 1),
        |_, due_ns| {
            sent.set(sent.get() + 1);
            let due = now_instant + Duration::from_nanos(due_ns.saturating_sub(start));
            echo.send(client.handle(), &answers, due);
            true
        },
    )?;
    answers.0.wait_finished(generated.sent, DRAIN_TIMEOUT);
    let outcome = answers.0.outcome(generated, start);
    drop(echo);
    Ok(outcome)
}

/// Bare UDP one way: datagrams of `payload_bytes` sent open loop from this thread to a socket
/// read by another thread, latency from each datagram's due time to its receipt, loss counted
/// by the receiver from the sequence numbers it saw.
pub fn udp_one_way(payload_bytes: usize, schedule: Schedule) -> Result<Outcome, BenchError> {
    let receiver = UdpSocket::bind("127.0.0.1:0").map_err(BenchError::io("binding udp"))?;
    let addr = receiver.local_addr()?;
    receiver.set_read_timeout(Some(Duration::from_millis(50)))?;
    let recorder = Arc::new(Recorder::new()?);
    let stop = Arc::new(AtomicBool::new(false));
    let highest = Arc::new(AtomicU64::new(0));
    let thread = {
        let (recorder, stop, highest) = (recorder.clone(), stop.clone(), highest.clone());
        std::thread::Builder::new()
            .name("limit-udp-recv".into())
            .spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = receiver.recv(&mut buf)
                        && let Some((due, seq)) = read_stamp(&buf[..n])
                    {
                        recorder.ok(due);
                        highest.fetch_max(seq + 1, Ordering::Relaxed);
                    }
                }
            })
            .map_err(BenchError::io("starting the udp receiver"))?
    };
    let sender = UdpSocket::bind("127.0.0.1:0")?;
    sender.connect(addr)?;
    let mut payload = crate::clock::filler(payload_bytes.max(STAMP_BYTES));
    let start = mono_ns();
    let sent = std::cell::Cell::new(0u64);
    let generated = pace::run(
        schedule,
        // The maximum-rate cell keeps a window over what the receiver took, so it measures
        // what the receiver sustains rather than how fast a socket buffer overflows.
        || recorder.room(sent.get(), WINDOW_EVENTS_MAX, 1),
        |i, due| {
            sent.set(sent.get() + 1);
            stamp(&mut payload, due, i);
            sender.send(&payload).is_ok()
        },
    )?;
    // Datagrams still in the socket buffer arrive within microseconds; a lost one never does.
    recorder.wait_finished(generated.sent, Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let _ = thread.join();
    let mut outcome = recorder.outcome(generated, start);
    outcome.lost_counted = Some(
        highest
            .load(Ordering::Relaxed)
            .saturating_sub(outcome.delivered),
    );
    Ok(outcome)
}

/// What `herald bench disk` measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiskReport {
    pub rate: u64,
    pub event_bytes: usize,
    pub events: u64,
    pub fsyncs: u64,
    /// Events covered by one `fdatasync`, on average.
    pub events_per_fsync: f64,
    /// From each event's arrival (its due time) to the return of the fsync covering it.
    pub latency: Latency,
    /// Each `fdatasync` call alone.
    pub fsync: Latency,
    pub generator_behind: bool,
    pub outcome: Outcome,
}

/// The disk's ideal group commit on the filesystem of `dir`: events of `event_bytes` arrive on
/// schedule at `rate`; a writer thread takes every event that has arrived, writes them in one
/// `write` to one file and calls `fdatasync` once; an event's latency is from its arrival until
/// the fsync that covers it returned. Nothing can ack a durable event sooner on this disk.
pub fn disk_group_commit(
    dir: &Path,
    event_bytes: usize,
    rate: u64,
    duration: Duration,
) -> Result<DiskReport, BenchError> {
    if rate == 0 {
        return Err(BenchError::Usage(
            "the disk bench needs a rate above 0".into(),
        ));
    }
    let file = tempfile_in(dir)?;
    let queue: Arc<(parking_lot::Mutex<Vec<u64>>, parking_lot::Condvar)> = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let recorder = Arc::new(Recorder::new()?);
    let fsyncs = Arc::new(parking_lot::Mutex::new(crate::clock::histogram()?));
    let writer = {
        let (queue, stop, recorder, fsyncs) = (
            queue.clone(),
            stop.clone(),
            recorder.clone(),
            fsyncs.clone(),
        );
        std::thread::Builder::new()
            .name("limit-disk-writer".into())
            .spawn(move || disk_writer(file, event_bytes, &queue, &stop, &recorder, &fsyncs))
            .map_err(BenchError::io("starting the disk writer"))?
    };
    let start = mono_ns();
    let schedule = Schedule {
        rate,
        duration,
        count_max: 0,
    };
    let generated = pace::run(
        schedule,
        || true,
        |_, due| {
            let (lock, ready) = &*queue;
            let mut waiting = lock.lock();
            if waiting.len() >= DISK_QUEUE_EVENTS_MAX {
                return false;
            }
            waiting.push(due);
            ready.notify_one();
            true
        },
    )?;
    recorder.wait_finished(generated.sent, DRAIN_TIMEOUT);
    stop.store(true, Ordering::Relaxed);
    queue.1.notify_one();
    let written = writer
        .join()
        .map_err(|_| BenchError::Child("the disk writer panicked".into()))??;
    let outcome = recorder.outcome(generated, start);
    let fsync = Latency::of(&fsyncs.lock()).unwrap_or_default();
    Ok(DiskReport {
        rate,
        event_bytes,
        events: outcome.delivered,
        fsyncs: written,
        events_per_fsync: outcome.delivered as f64 / written.max(1) as f64,
        latency: outcome.latency.unwrap_or_default(),
        fsync,
        generator_behind: outcome.generated.behind,
        outcome,
    })
}

/// What `herald bench disk --sequential-mib` measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SequentialReport {
    pub bytes: u64,
    pub write_bytes: usize,
    pub seconds: f64,
    /// Bytes written and made durable by the final `fdatasync`, per second, in MiB.
    pub mib_per_s: f64,
}

/// Bytes per `write` of the sequential measurement: large enough that system calls cost
/// nothing beside the copy, as a broker appending batches of a linger-filled producer.
const SEQUENTIAL_WRITE_BYTES: usize = 1024 * 1024;

/// The disk's sequential write bandwidth on the filesystem of `dir`, as `dd conv=fdatasync`
/// measures it: `bytes` written in 1 MiB writes to a new file, then one `fdatasync`; the time
/// runs until that returns. The ceiling of a durable produce throughput.
pub fn disk_sequential(dir: &Path, bytes: u64) -> Result<SequentialReport, BenchError> {
    use std::io::Write as _;
    if bytes == 0 {
        return Err(BenchError::Usage(
            "the sequential disk bench needs more than 0 bytes".into(),
        ));
    }
    let mut scratch = tempfile_in(dir)?;
    let block = crate::clock::filler(SEQUENTIAL_WRITE_BYTES);
    let start = mono_ns();
    let mut written = 0u64;
    while written < bytes {
        let n = (bytes - written).min(block.len() as u64) as usize;
        scratch
            .file
            .write_all(&block[..n])
            .map_err(BenchError::io("writing the sequential scratch file"))?;
        written += n as u64;
    }
    scratch
        .file
        .sync_data()
        .map_err(BenchError::io("fdatasync of the sequential scratch file"))?;
    let seconds = (mono_ns() - start) as f64 / 1e9;
    Ok(SequentialReport {
        bytes: written,
        write_bytes: SEQUENTIAL_WRITE_BYTES,
        seconds,
        mib_per_s: written as f64 / (1024.0 * 1024.0) / seconds.max(1e-9),
    })
}

/// A file in `dir` removed on drop, so an interrupted run leaves nothing behind but a name.
struct ScratchFile {
    file: std::fs::File,
    path: std::path::PathBuf,
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn tempfile_in(dir: &Path) -> Result<ScratchFile, BenchError> {
    std::fs::create_dir_all(dir).map_err(BenchError::io(format!("creating {}", dir.display())))?;
    let path = dir.join(format!("herald-bench-disk-{}.bin", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(BenchError::io(format!("creating {}", path.display())))?;
    Ok(ScratchFile { file, path })
}

fn disk_writer(
    mut scratch: ScratchFile,
    event_bytes: usize,
    queue: &(parking_lot::Mutex<Vec<u64>>, parking_lot::Condvar),
    stop: &AtomicBool,
    recorder: &Recorder,
    fsyncs: &parking_lot::Mutex<hdrhistogram::Histogram<u64>>,
) -> Result<u64, BenchError> {
    let event = crate::clock::filler(event_bytes);
    let mut buf = Vec::new();
    let mut taken = Vec::new();
    let mut rounds = 0;
    let mut written: u64 = 0;
    loop {
        {
            let (lock, ready) = queue;
            let mut waiting = lock.lock();
            while waiting.is_empty() && !stop.load(Ordering::Relaxed) {
                ready.wait_for(&mut waiting, Duration::from_millis(10));
            }
            if waiting.is_empty() {
                return Ok(rounds);
            }
            std::mem::swap(&mut *waiting, &mut taken);
        }
        buf.clear();
        for _ in &taken {
            buf.extend_from_slice(&event);
        }
        if written + buf.len() as u64 > DISK_FILE_BYTES_MAX {
            scratch
                .file
                .set_len(0)
                .map_err(BenchError::io("truncating the disk bench file"))?;
            scratch.file.rewind()?;
            written = 0;
        }
        scratch
            .file
            .write_all(&buf)
            .map_err(BenchError::io("writing the disk bench file"))?;
        written += buf.len() as u64;
        let before = mono_ns();
        scratch
            .file
            .sync_data()
            .map_err(BenchError::io("fdatasync of the disk bench file"))?;
        crate::clock::record_ns(&mut fsyncs.lock(), mono_ns() - before);
        rounds += 1;
        for due in taken.drain(..) {
            recorder.ok(due);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_limit_measures_what_it_offered() {
        let schedule = Schedule {
            rate: 5_000,
            duration: Duration::from_millis(100),
            count_max: 0,
        };
        let echo = tcp_echo(1024, schedule).unwrap();
        assert_eq!(echo.delivered, 500);
        let udp = udp_one_way(1024, schedule).unwrap();
        assert_eq!(
            udp.delivered + udp.lost_counted.unwrap(),
            500.max(udp.delivered)
        );
        let dir = tempfile::tempdir().unwrap();
        let disk = disk_group_commit(dir.path(), 1024, 5_000, Duration::from_millis(100)).unwrap();
        assert_eq!(disk.events, 500);
        assert!(disk.fsyncs >= 1 && disk.fsyncs <= 500);
    }
}
