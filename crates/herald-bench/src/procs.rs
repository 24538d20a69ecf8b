//! The child processes a matrix run starts, the way a deployment would run them: a
//! `herald serve` on free loopback ports with its own data directory, and `herald bench member`
//! processes (a direct member that also timestamps each event's arrival). Each child is stopped
//! with SIGTERM when done (SIGKILL if it does not exit in time) and killed if the run fails.

use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use crate::BenchError;
use crate::clock::{ProcUsage, mono_ns, proc_usage};
use crate::member::MemberReport;

/// How long a child may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a child may take to exit after SIGTERM before it is killed.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// A free loopback address: bound to port 0 and released, so a child can bind it next.
pub fn free_addr() -> Result<SocketAddr, BenchError> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(BenchError::io("finding a free port"))?;
    Ok(listener.local_addr()?)
}

/// The `herald` binary at `exe` with no `HERALD_*` settings inherited, so a user's environment
/// cannot change what the bench measures.
fn herald(exe: &Path) -> Command {
    let mut command = Command::new(exe);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("HERALD_") {
            command.env_remove(name);
        }
    }
    command
}

/// A running child; SIGKILLed on drop unless it was stopped.
struct Proc {
    name: String,
    child: Option<Child>,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn usage(&self) -> ProcUsage {
        proc_usage(&self.pid().to_string())
    }

    fn reset_peak_rss(&self) {
        crate::clock::reset_peak_rss(&self.pid().to_string());
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGTERM, then waits; returns the usage read just before the signal.
    fn stop(&mut self) -> ProcUsage {
        let usage = self.usage();
        let Some(mut child) = self.child.take() else {
            return usage;
        };
        // SAFETY: kill has no memory preconditions; the pid is our own unreaped child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let until = mono_ns() + EXIT_TIMEOUT.as_nanos() as u64;
        while mono_ns() < until {
            if let Ok(Some(_)) = child.try_wait() {
                return usage;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill();
        let _ = child.wait();
        usage
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A `herald serve` child.
pub struct ServeChild {
    pub kafka_addr: SocketAddr,
    pub http_addr: SocketAddr,
    proc: Proc,
    log_path: PathBuf,
}

impl ServeChild {
    /// Starts `herald serve` from `exe` on free ports with `data_dir`, logging to `log_path`,
    /// and returns once `/health` answers 200.
    pub fn start(exe: &Path, data_dir: &Path, log_path: &Path) -> Result<ServeChild, BenchError> {
        let (kafka_addr, http_addr) = (free_addr()?, free_addr()?);
        let log = std::fs::File::create(log_path)
            .map_err(BenchError::io(format!("creating {}", log_path.display())))?;
        let child = herald(exe)
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--kafka-addr", &kafka_addr.to_string()])
            .args(["--http-addr", &http_addr.to_string()])
            // Groups join at once instead of after Kafka's 3 s initial delay: it only delays
            // a consumer's first assignment, which no row measures, and it would triple the
            // run's length.
            .env("HERALD_GROUPS__INITIAL_REBALANCE_DELAY_MS", "0")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(BenchError::io(format!("starting {} serve", exe.display())))?;
        let mut serve = ServeChild {
            kafka_addr,
            http_addr,
            proc: Proc {
                name: "herald serve".into(),
                child: Some(child),
            },
            log_path: log_path.to_path_buf(),
        };
        let until = mono_ns() + READY_TIMEOUT.as_nanos() as u64;
        while !health(http_addr) {
            if let Some(status) = serve.proc.exited() {
                return Err(BenchError::Child(format!(
                    "herald serve exited with {status} before it was ready: {}",
                    serve.log_tail()
                )));
            }
            if mono_ns() > until {
                return Err(BenchError::Child(format!(
                    "herald serve not ready within {READY_TIMEOUT:?}: {}",
                    serve.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(serve)
    }

    pub fn bootstrap(&self) -> String {
        self.kafka_addr.to_string()
    }

    pub fn usage(&self) -> ProcUsage {
        self.proc.usage()
    }

    /// Starts a new peak-RSS window (see [`crate::clock::reset_peak_rss`]).
    pub fn reset_peak_rss(&self) {
        self.proc.reset_peak_rss();
    }

    pub fn name(&self) -> &str {
        &self.proc.name
    }

    /// Stops the broker with SIGTERM (it flushes and exits).
    pub fn stop(mut self) -> ProcUsage {
        self.proc.stop()
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let start = log.len().saturating_sub(2_000);
        log.get(start..).unwrap_or_default().to_string()
    }
}

/// True when `GET /health` on `addr` answers 200.
fn health(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(
        stream,
        "GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

/// What `herald bench member` is started with (its flags).
#[derive(Debug, Clone, Default)]
pub struct MemberSpec {
    pub topic: String,
    pub group: String,
    /// Where to listen; `None` picks a free port.
    pub bind: Option<SocketAddr>,
    pub capacity: u32,
    /// The next service of a chain and how to reach it.
    pub next: Option<(SocketAddr, String)>,
    /// `event` or `request`: how this hop calls the next one.
    pub chain: Option<String>,
    /// Each event or request takes this long to handle.
    pub delay_us: u64,
    pub drop_every: Option<u64>,
}

/// A `herald bench member` child, controlled through its stdin (`report`) and stdout (one JSON
/// line per report).
pub struct MemberChild {
    pub addr: SocketAddr,
    pub spec: MemberSpec,
    proc: Proc,
    /// Closed to stop the member (it exits at the end of its stdin).
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl MemberChild {
    /// Starts a member from `exe` and returns once it said where it listens.
    pub fn start(exe: &Path, spec: &MemberSpec) -> Result<MemberChild, BenchError> {
        let bind = match spec.bind {
            Some(addr) => addr,
            None => free_addr()?,
        };
        let mut command = herald(exe);
        command
            .args([
                "bench",
                "member",
                "--topic",
                &spec.topic,
                "--group",
                &spec.group,
            ])
            .args(["--bind", &bind.to_string()])
            .args(["--capacity", &spec.capacity.max(1).to_string()])
            .args(["--delay-us", &spec.delay_us.to_string()]);
        if let Some((addr, topic)) = &spec.next {
            command.args(["--next", &addr.to_string(), "--next-topic", topic]);
        }
        if let Some(chain) = &spec.chain {
            command.args(["--chain", chain]);
        }
        if let Some(n) = spec.drop_every {
            command.args(["--drop-every", &n.to_string()]);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(BenchError::io(format!(
                "starting {} bench member",
                exe.display()
            )))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(BenchError::Child("a member child without pipes".into()));
        };
        let mut member = MemberChild {
            addr: bind,
            spec: MemberSpec {
                bind: Some(bind),
                ..spec.clone()
            },
            proc: Proc {
                name: format!("herald bench member ({})", spec.topic),
                child: Some(child),
            },
            stdin: Some(stdin),
            stdout: BufReader::new(stdout),
        };
        // The first line is {"listening": "ADDR"}, printed once the member serves.
        let line = member.read_line()?;
        let ready: serde_json::Value = serde_json::from_str(&line)?;
        if ready.get("listening").is_none() {
            return Err(BenchError::Child(format!(
                "unexpected first line from a member: {line}"
            )));
        }
        Ok(member)
    }

    fn read_line(&mut self) -> Result<String, BenchError> {
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .map_err(BenchError::io("reading a member's output"))?;
        if n == 0 {
            return Err(BenchError::Child(format!("{} exited", self.proc.name)));
        }
        Ok(line)
    }

    /// Asks the member for its counters and the latencies since the last report.
    pub fn report(&mut self) -> Result<MemberReport, BenchError> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(BenchError::Child(format!("{} was stopped", self.proc.name)));
        };
        writeln!(stdin, "report").map_err(BenchError::io("asking a member for a report"))?;
        stdin.flush()?;
        let line = self.read_line()?;
        Ok(serde_json::from_str(&line)?)
    }

    pub fn usage(&self) -> ProcUsage {
        self.proc.usage()
    }

    /// Starts a new peak-RSS window (see [`crate::clock::reset_peak_rss`]).
    pub fn reset_peak_rss(&self) {
        self.proc.reset_peak_rss();
    }

    pub fn name(&self) -> &str {
        &self.proc.name
    }

    /// Stops the member: the end of its stdin, and SIGTERM (either makes it say goodbye to its
    /// publishers and exit).
    pub fn stop(mut self) -> ProcUsage {
        drop(self.stdin.take());
        self.proc.stop()
    }
}
