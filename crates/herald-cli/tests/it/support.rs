//! The one way the end-to-end tests start `herald serve`: a child process on free loopback ports
//! with its own data directory and log file, ready once `/health` answers, stopped with SIGTERM or
//! SIGKILL, and restartable on the same addresses. Tests that only need some Kafka-compatible
//! broker take it from [`TestBroker::start`], which uses the external broker
//! `HERALD_TEST_BOOTSTRAP` names when that is set (`herald_testkit`), and name what they create
//! with [`TestBroker::name`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a broker may take to answer `/health` after starting.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a broker may take to exit after SIGTERM.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// A free loopback address: bound to port 0 and released, so the broker can bind it next.
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// The `herald` command with no `HERALD_*` variables inherited from the test's environment.
pub fn herald() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("HERALD_") {
            command.env_remove(name);
        }
    }
    command
}

/// Answer of a plain HTTP GET.
pub struct HttpAnswer {
    pub status: u16,
    pub body: String,
}

/// A minimal HTTP/1.1 GET over a fresh connection, so the tests need no HTTP client crate.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<HttpAnswer> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no HTTP head in {text:?}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {head:?}")))?;
    Ok(HttpAnswer {
        status,
        body: body.to_string(),
    })
}

/// Polls `http_addr/health` until it answers 200; panics with the log at `log_path` when `child`
/// exits first or [`READY_TIMEOUT`] passes.
pub fn wait_healthy(http_addr: SocketAddr, child: &mut Child, log_path: &Path) {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(answer) = http_get(http_addr, "/health") {
            if answer.status == 200 {
                return;
            }
        }
        let log = || std::fs::read_to_string(log_path).unwrap_or_default();
        if let Some(status) = child.try_wait().unwrap() {
            panic!("herald serve exited with {status} before ready:\n{}", log());
        }
        assert!(
            Instant::now() < deadline,
            "herald serve not ready after {READY_TIMEOUT:?}:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for `child` to exit within `timeout`, returning its status.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `herald serve` process. Killed (SIGKILL) when dropped.
pub struct ServeProcess {
    pub kafka_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub data_dir: PathBuf,
    child: Option<Child>,
    log_path: PathBuf,
    extra_args: Vec<String>,
}

impl ServeProcess {
    /// Starts a broker on free ports with `data_dir` and waits until `/health` answers 200.
    pub fn start(data_dir: &Path) -> ServeProcess {
        Self::start_with(data_dir, free_addr(), &[])
    }

    /// Starts a broker listening for Kafka on `kafka_addr`, with extra `serve` arguments.
    pub fn start_with(
        data_dir: &Path,
        kafka_addr: SocketAddr,
        extra_args: &[&str],
    ) -> ServeProcess {
        let mut process = ServeProcess {
            kafka_addr,
            http_addr: free_addr(),
            data_dir: data_dir.to_path_buf(),
            child: None,
            log_path: data_dir.with_extension("log"),
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
        };
        process.spawn();
        process.wait_ready();
        process
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let child = herald()
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--kafka-addr")
            .arg(self.kafka_addr.to_string())
            .arg("--http-addr")
            .arg(self.http_addr.to_string())
            .args(&self.extra_args)
            .env("HERALD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// Polls `/health` until it answers 200, failing with the broker's log after the deadline or
    /// when the process exits.
    pub fn wait_ready(&mut self) {
        let log_path = self.log_path.clone();
        wait_healthy(self.http_addr, self.child.as_mut().unwrap(), &log_path);
    }

    /// What the broker has logged so far (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends SIGTERM and waits for the process to exit, returning its status.
    pub fn sigterm(&mut self) -> ExitStatus {
        self.signal("TERM")
    }

    /// Sends the signal named like `kill -NAME` and waits for the process to exit.
    pub fn signal(&mut self, name: &str) -> ExitStatus {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
        self.wait_exit()
    }

    /// Kills the process with SIGKILL, as a crash would, and reaps it.
    pub fn sigkill(&mut self) {
        let child = self.child.as_mut().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        self.child = None;
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let Some(status) = wait_exit(self.child.as_mut().unwrap(), EXIT_TIMEOUT) else {
            panic!(
                "herald serve did not exit within {EXIT_TIMEOUT:?}:\n{}",
                self.log()
            );
        };
        self.child = None;
        status
    }

    /// Starts the broker again on the same addresses and data directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running broker");
        self.spawn();
        self.wait_ready();
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The broker a test talks to: a `herald serve` started for the test, or the external
/// Kafka-compatible broker `HERALD_TEST_BOOTSTRAP` names, shared with other tests and runs.
pub enum TestBroker {
    Started(ServeProcess),
    External {
        bootstrap: String,
        /// Appended to the test's names (see [`TestBroker::name`]).
        suffix: String,
    },
}

impl TestBroker {
    /// The external broker when `HERALD_TEST_BOOTSTRAP` is set, else a `herald serve` started
    /// on free ports over `data_dir`.
    pub fn start(data_dir: &Path) -> TestBroker {
        match herald_testkit::external_bootstrap() {
            Some(bootstrap) => TestBroker::External {
                bootstrap,
                suffix: herald_testkit::unique_suffix(),
            },
            None => TestBroker::Started(ServeProcess::start(data_dir)),
        }
    }

    /// The Kafka bootstrap address clients use.
    pub fn bootstrap(&self) -> String {
        match self {
            TestBroker::Started(process) => process.kafka_addr.to_string(),
            TestBroker::External { bootstrap, .. } => bootstrap.clone(),
        }
    }

    /// The name topic, group or transactional id `base` has in this test: `base` itself on a
    /// broker of the test's own, `base` with a suffix unique to this test on a shared external
    /// broker, so reruns and tests running at the same time never meet each other's data.
    pub fn name(&self, base: &str) -> String {
        match self {
            TestBroker::Started(_) => base.to_string(),
            TestBroker::External { suffix, .. } => format!("{base}-{suffix}"),
        }
    }

    /// Of `named` things listed by the broker, those this test made: all of them on a broker
    /// of its own, only those with this test's suffix on a shared external broker.
    pub fn own<T>(&self, named: Vec<(String, T)>) -> Vec<(String, T)> {
        match self {
            TestBroker::Started(_) => named,
            TestBroker::External { suffix, .. } => named
                .into_iter()
                .filter(|(name, _)| name.ends_with(suffix.as_str()))
                .collect(),
        }
    }

    /// What the broker has logged so far, for failure messages; an external broker's log is not
    /// ours to read.
    pub fn log(&self) -> String {
        match self {
            TestBroker::Started(process) => process.log(),
            TestBroker::External { bootstrap, .. } => {
                format!("(the external broker at {bootstrap}: its log is not available here)")
            }
        }
    }
}

/// Polls `check` until it holds, or panics after [`READY_TIMEOUT`].
pub fn eventually_true(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + READY_TIMEOUT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs one of the kafkajs checks in `tests/js` with `args`,
/// failing with its output and `broker_log` unless it exits 0 having printed `ok`.
pub fn kafkajs_check(script: &str, args: &[&str], broker_log: impl Fn() -> String) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/js");
    let output = Command::new("node")
        .arg(format!("{dir}/{script}"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("node is not installed: scripts/install-test-deps installs it");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(
        output.status.code(),
        Some(3),
        "kafkajs is missing: scripts/install-test-deps installs it ({stdout})"
    );
    assert!(
        output.status.success() && stdout.trim() == "ok",
        "kafkajs {script} failed:\n{stdout}\n{stderr}\nbroker log:\n{}",
        broker_log()
    );
}
