//! A broker for the client tests (a `herald serve` started through the shared `ServeProcess`, or
//! the external broker `HERALD_TEST_BOOTSTRAP` names), and ways to run client commands against
//! it with a deadline or in the background.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::TestBroker;

pub const HERALD: &str = env!("CARGO_BIN_EXE_herald");

/// Longest a client command may run before the test fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// A running broker in its own temporary directory (dropping it kills the process), or the
/// external broker.
pub struct Broker {
    // Declared before the directory so the process is killed before its data is removed.
    process: TestBroker,
    pub bootstrap: String,
    _dir: tempfile::TempDir,
}

impl Broker {
    pub fn start() -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let process = TestBroker::start(&dir.path().join("data"));
        Broker {
            bootstrap: process.bootstrap(),
            process,
            _dir: dir,
        }
    }

    /// The name topic or group `base` has in this test (see [`TestBroker::name`]).
    pub fn name(&self, base: &str) -> String {
        self.process.name(base)
    }

    /// Of `topics` listed by the broker, those this test made (see [`TestBroker::own`]).
    pub fn own<T>(&self, topics: Vec<(String, T)>) -> Vec<(String, T)> {
        self.process.own(topics)
    }

    /// Runs `herald --bootstrap ADDR args...` and returns what it did.
    pub fn herald(&self, args: &[&str]) -> Run {
        run(&self.bootstrap, args, None)
    }

    /// Like [`Broker::herald`], with `input` on standard input.
    pub fn herald_with_input(&self, args: &[&str], input: &[u8]) -> Run {
        run(&self.bootstrap, args, Some(input))
    }

    /// Runs a command that must succeed, and returns its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let run = self.herald(args);
        run.assert_code(0);
        run.stdout
    }
}

/// The outcome of one client command.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub args: Vec<String>,
}

impl Run {
    pub fn assert_code(&self, code: i32) {
        assert_eq!(
            self.code,
            Some(code),
            "herald {:?} exited with {:?}\nstdout:\n{}\nstderr:\n{}",
            self.args,
            self.code,
            &self.stdout[..self.stdout.len().min(4000)],
            self.stderr
        );
    }

    /// Parses standard output as one JSON document.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout of {:?} is not JSON ({e}):\n{}",
                self.args, self.stdout
            )
        })
    }
}

/// Runs `herald --bootstrap BOOTSTRAP args...` with a deadline.
pub fn run(bootstrap: &str, args: &[&str], input: Option<&[u8]>) -> Run {
    let mut child = Command::new(HERALD)
        .args(["--bootstrap", bootstrap])
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let writer = input.map(|input| {
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        std::thread::spawn(move || {
            // The command may stop reading early (an error); that is for the test to judge.
            let _ = stdin.write_all(&input);
        })
    });
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).unwrap();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).unwrap();
        s
    });
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "herald {args:?} still running after {COMMAND_TIMEOUT:?}; stderr:\n{}",
                err.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if let Some(writer) = writer {
        writer.join().unwrap();
    }
    Run {
        code: status.code(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        args: args.iter().map(|s| s.to_string()).collect(),
    }
}

/// A client command left running (`consume --follow`), its output collected as it comes.
pub struct Background {
    child: Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Broker {
    /// Starts `herald --bootstrap ADDR args...` without waiting for it.
    pub fn spawn(&self, args: &[&str]) -> Background {
        use std::io::BufRead;
        let mut child = Command::new(HERALD)
            .args(["--bootstrap", &self.bootstrap])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let into = lines.clone();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                into.lock().unwrap().push(line);
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut from = child.stderr.take().unwrap();
        let into = stderr.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = from.read_to_string(&mut text);
            into.lock().unwrap().push_str(&text);
        });
        Background {
            child,
            lines,
            stderr,
        }
    }
}

impl Background {
    /// Waits until at least `count` lines were printed, and returns them.
    pub fn wait_lines(&mut self, count: usize) -> Vec<String> {
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            let lines = self.lines.lock().unwrap().clone();
            if lines.len() >= count {
                return lines;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "exited with {status} after {lines:?}; stderr:\n{}",
                    self.stderr.lock().unwrap()
                );
            }
            assert!(
                Instant::now() < deadline,
                "only {lines:?} after {COMMAND_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGINT (Ctrl-C) and returns the exit code.
    pub fn interrupt(mut self) -> Option<i32> {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "still running after SIGINT");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
