//! Child `herald` processes whose output the test reads line by line as it arrives.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const HERALD: &str = env!("CARGO_BIN_EXE_herald");

/// A running `herald` with its stdout and stderr collected by background threads.
pub struct Proc {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
    pub name: String,
}

fn collect(reader: impl std::io::Read + Send + 'static, into: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        // Reads to the end whatever the bytes are, so the child never blocks on a full pipe.
        let mut reader = BufReader::new(reader);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let text = String::from_utf8_lossy(&line)
                .trim_end_matches('\n')
                .to_string();
            into.lock().unwrap().push(text);
            line.clear();
        }
    });
}

impl Proc {
    /// Starts `prefix... herald args...` (prefix is e.g. `ip netns exec NS`).
    pub fn spawn_with(prefix: &[&str], args: &[&str]) -> Proc {
        let mut command = if prefix.is_empty() {
            Command::new(HERALD)
        } else {
            let mut c = Command::new(prefix[0]);
            c.args(&prefix[1..]).arg(HERALD);
            c
        };
        command
            .args(args)
            .env("HERALD_LOG", "warn,herald_direct=info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn herald");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        collect(child.stdout.take().unwrap(), stdout.clone());
        collect(child.stderr.take().unwrap(), stderr.clone());
        Proc {
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
            name: args.iter().take(2).copied().collect::<Vec<_>>().join(" "),
        }
    }

    pub fn spawn(args: &[&str]) -> Proc {
        Proc::spawn_with(&[], args)
    }

    /// Starts `herald peer listen` (or `reply`) and waits for its "listening on" line.
    pub fn member(args: &[&str]) -> (Proc, String) {
        Proc::member_with(&[], args)
    }

    pub fn member_with(prefix: &[&str], args: &[&str]) -> (Proc, String) {
        let p = Proc::spawn_with(prefix, args);
        let line = p.wait_stderr(Duration::from_secs(20), |l| l.starts_with("listening on "));
        let addr = line
            .trim_start_matches("listening on ")
            .split_whitespace()
            .next()
            .unwrap()
            .to_string();
        (p, addr)
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits (bounded) for a stderr line matching `pred` and returns it.
    pub fn wait_stderr(&self, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(l) = self.stderr.lock().unwrap().iter().find(|l| pred(l)) {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{}: expected stderr line never came; stderr:\n{}",
                self.name,
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits (bounded) until at least `n` stdout lines arrived.
    pub fn wait_stdout_count(&self, n: usize, limit: Duration) -> bool {
        poll(limit, || self.stdout.lock().unwrap().len() >= n)
    }

    pub fn write_lines(&mut self, lines: impl IntoIterator<Item = String>) {
        let stdin = self.stdin.as_mut().unwrap();
        for l in lines {
            writeln!(stdin, "{l}").unwrap();
        }
        stdin.flush().unwrap();
    }

    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) with a pid we spawned and own; no memory is involved.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, sig);
        }
    }

    /// Waits (bounded) for exit and returns the exit code; the output readers finish too.
    pub fn wait_exit(&mut self, limit: Duration) -> i32 {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader threads drain the pipes.
                std::thread::sleep(Duration::from_millis(50));
                return status.code().unwrap_or(-1);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!(
                    "{} did not exit in time; stderr:\n{}",
                    self.name,
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, wait, and return the JSON summary line.
    pub fn terminate_for_summary(&mut self) -> serde_json::Value {
        self.signal(libc::SIGTERM);
        let code = self.wait_exit(Duration::from_secs(20));
        assert_eq!(
            code,
            0,
            "{} exited with {code}: {}",
            self.name,
            self.stderr_text()
        );
        let last = self
            .stdout_lines()
            .into_iter()
            .rev()
            .find(|l| l.contains("\"summary\""))
            .unwrap_or_else(|| panic!("{}: no summary line", self.name));
        serde_json::from_str(&last).unwrap()
    }

    /// Values of the JSON event lines printed so far.
    pub fn event_values(&self) -> Vec<String> {
        self.stdout_lines()
            .iter()
            .filter(|l| !l.contains("\"summary\""))
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["value"].as_str().unwrap().to_string()
            })
            .collect()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn poll(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Parses the JSON summary `herald peer publish --output json` prints last.
pub fn publish_summary(p: &Proc) -> serde_json::Value {
    let line = p
        .stdout_lines()
        .into_iter()
        .rev()
        .find(|l| l.contains("\"sent\""))
        .unwrap_or_else(|| panic!("no publish summary; stderr:\n{}", p.stderr_text()));
    serde_json::from_str(&line).unwrap()
}

pub fn listen(topic: &str, group: &str, extra: &[&str]) -> (Proc, String) {
    let mut args = vec![
        "peer",
        "listen",
        "--topic",
        topic,
        "--group",
        group,
        "--bind",
        "127.0.0.1:0",
        "--output",
        "json",
    ];
    args.extend_from_slice(extra);
    Proc::member(&args)
}
