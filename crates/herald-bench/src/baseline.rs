//! The machine's own limits, measured in the same run as what is compared with them: bare TCP
//! and UDP ping-pong of one payload on loopback between two blocking threads, and a bare TCP
//! echo driven the way the direct path runs (two single-threaded runtimes, sends spawned by a
//! pacing thread). `herald peer bench` and the matrix use them.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::BenchError;

/// Highest latency recorded (10 s); slower samples are clamped.
pub const LATENCY_US_MAX: u64 = 10_000_000;

/// A latency histogram in microseconds, 1 µs to [`LATENCY_US_MAX`], three significant digits.
pub fn histogram() -> Result<Histogram<u64>, BenchError> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)
        .map_err(|e| BenchError::Histogram(e.to_string()))
}

/// Records `elapsed` in `h`, clamped to the histogram's range.
pub fn record(h: &mut Histogram<u64>, elapsed: Duration) {
    let us = (elapsed.as_micros() as u64).clamp(1, LATENCY_US_MAX);
    let _ = h.record(us);
}

/// Round trips of `payload` bytes over loopback TCP between two blocking threads.
pub fn bare_tcp(payload: usize, round_trips: u64) -> Result<Histogram<u64>, BenchError> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = vec![0u8; payload];
        while s.read_exact(&mut buf).is_ok() {
            s.write_all(&buf)?;
        }
        Ok(())
    });
    let mut client = TcpStream::connect(addr)?;
    client.set_nodelay(true)?;
    let mut buf = vec![7u8; payload];
    let mut h = histogram()?;
    let warmup = (round_trips / 10).min(2_000);
    for i in 0..warmup + round_trips {
        let t = Instant::now();
        client.write_all(&buf)?;
        client.read_exact(&mut buf)?;
        if i >= warmup {
            record(&mut h, t.elapsed());
        }
    }
    drop(client);
    let _ = server.join();
    Ok(h)
}

/// Round trips of `payload` bytes over loopback UDP between two blocking threads.
pub fn bare_udp(payload: usize, round_trips: u64) -> Result<Histogram<u64>, BenchError> {
    let server = UdpSocket::bind("127.0.0.1:0")?;
    let addr = server.local_addr()?;
    server.set_read_timeout(Some(Duration::from_millis(500)))?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let echo = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        while !stop2.load(Ordering::Relaxed) {
            if let Ok((n, from)) = server.recv_from(&mut buf) {
                let _ = server.send_to(&buf[..n], from);
            }
        }
    });
    let client = UdpSocket::bind("127.0.0.1:0")?;
    client.connect(addr)?;
    client.set_read_timeout(Some(Duration::from_millis(200)))?;
    let out = vec![7u8; payload];
    let mut buf = vec![0u8; 65_536];
    let mut h = histogram()?;
    let warmup = (round_trips / 10).min(2_000);
    for i in 0..warmup + round_trips {
        let t = Instant::now();
        client.send(&out)?;
        // A lost datagram times out and is not recorded; loopback rarely loses any.
        if client.recv(&mut buf).is_ok() && i >= warmup {
            record(&mut h, t.elapsed());
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = echo.join();
    Ok(h)
}

/// A single-threaded runtime driven by a thread of its own, so producer and consumer each own
/// one thread (as two processes would) and each parks directly on its own I/O driver.
pub struct Driven {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Driven {
    pub fn start(name: &str) -> Result<Driven, BenchError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(BenchError::io("starting a runtime"))?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let _ = runtime.block_on(stopped);
            })
            .map_err(BenchError::io("starting a runtime thread"))?;
        Ok(Driven {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.handle.block_on(future)
    }

    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}

impl Drop for Driven {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Where the echo reports each message: answered (with when it was answered, called and
/// scheduled) or failed to send.
pub trait EchoAnswers: Send + Sync + 'static {
    fn answered(&self, at: Instant, called: Instant, due: Instant);
    fn failed(&self);
}

/// Bytes at the head of each echo message: its scheduled time and its call time, each in
/// nanoseconds since the echo's origin, so the reader needs no table of send times.
pub const ECHO_HEADER_BYTES: usize = 16;

/// The bare TCP baseline set up the way the direct path runs: the client on the publisher's
/// runtime (each send a task the pacing thread spawns there) and an echo task on the member's
/// runtime, so both pay the same runtime wake-ups. A reader task on the publisher's runtime
/// records each echo.
pub struct Echo {
    writer: Arc<tokio::sync::Mutex<tokio::net::tcp::OwnedWriteHalf>>,
    reader: tokio::task::JoinHandle<()>,
    origin: Instant,
    payload_bytes: usize,
}

impl Echo {
    /// Starts the echo task on `server_rt` and the client's reader task on `client_rt`, which
    /// reports each echoed message to `answers`.
    pub fn start<A: EchoAnswers>(
        server_rt: &Driven,
        client_rt: &Driven,
        payload_bytes: usize,
        answers: Arc<A>,
    ) -> Result<Echo, BenchError> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let payload_bytes = payload_bytes.max(ECHO_HEADER_BYTES);
        let listener = server_rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        server_rt.handle().spawn(async move {
            if let Ok((sock, _)) = listener.accept().await {
                let _ = sock.set_nodelay(true);
                let (mut r, mut w) = sock.into_split();
                let mut buf = vec![0u8; payload_bytes];
                while r.read_exact(&mut buf).await.is_ok() {
                    if w.write_all(&buf).await.is_err() {
                        break;
                    }
                }
            }
        });
        let stream = client_rt.block_on(tokio::net::TcpStream::connect(addr))?;
        stream.set_nodelay(true)?;
        let (mut r, w) = stream.into_split();
        let origin = Instant::now();
        let reader = client_rt.handle().spawn(async move {
            let mut buf = vec![0u8; payload_bytes];
            while r.read_exact(&mut buf).await.is_ok() {
                let now = Instant::now();
                let (due, called) = (ns_at(&buf, 0), ns_at(&buf, 8));
                answers.answered(
                    now,
                    origin + Duration::from_nanos(called),
                    origin + Duration::from_nanos(due),
                );
            }
        });
        Ok(Echo {
            writer: Arc::new(tokio::sync::Mutex::new(w)),
            reader,
            origin,
            payload_bytes,
        })
    }

    /// Spawns the sending of one message scheduled for `due` onto the publisher's runtime.
    pub fn send<A: EchoAnswers>(
        &self,
        handle: &tokio::runtime::Handle,
        answers: &Arc<A>,
        due: Instant,
    ) {
        use tokio::io::AsyncWriteExt;
        let (w, answers, origin, payload_bytes) = (
            self.writer.clone(),
            answers.clone(),
            self.origin,
            self.payload_bytes,
        );
        handle.spawn(async move {
            let mut msg = vec![b'x'; payload_bytes];
            let due_ns = due.saturating_duration_since(origin).as_nanos() as u64;
            msg[..8].copy_from_slice(&due_ns.to_le_bytes());
            let called_ns = origin.elapsed().as_nanos() as u64;
            msg[8..16].copy_from_slice(&called_ns.to_le_bytes());
            if w.lock().await.write_all(&msg).await.is_err() {
                answers.failed();
            }
        });
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        // Dropping the write half (once no send task holds it) closes the connection, which
        // ends the echo task on the member's side.
        self.reader.abort();
    }
}
/// The little-endian u64 at `offset` in `buf`.
pub fn ns_at(buf: &[u8], offset: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[offset..offset + 8]);
    u64::from_le_bytes(b)
}
