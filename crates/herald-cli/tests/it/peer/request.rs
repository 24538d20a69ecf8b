//! Request/response from the shell, and a chain A -> B -> C whose first deadline ends it all.

use std::time::{Duration, Instant};

use super::harness::{HERALD, Proc, poll};

fn reply(topic: &str, command: &str) -> (Proc, String) {
    Proc::member(&[
        "peer",
        "reply",
        "--topic",
        topic,
        "--group",
        "g",
        "--bind",
        "127.0.0.1:0",
        "--command",
        command,
    ])
}

#[test]
fn a_request_is_answered_by_the_command() {
    let (_r, addr) = reply("upper", "tr a-z A-Z");
    let mut p = Proc::spawn(&[
        "peer",
        "request",
        "--topic",
        "upper",
        "--peers",
        &addr,
        "--timeout-ms",
        "5000",
        "hello",
    ]);
    assert_eq!(
        p.wait_exit(Duration::from_secs(20)),
        0,
        "{}",
        p.stderr_text()
    );
    assert_eq!(p.stdout_lines(), vec!["HELLO".to_string()]);
}

fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A zombie has finished; only its exit status is left to collect.
        Ok(stat) => !stat.contains(") Z "),
        Err(_) => false,
    }
}

#[test]
fn the_first_callers_deadline_ends_a_stuck_chain() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("c.pid");
    let c_command = format!("echo $$ > {}; exec sleep 60", pidfile.display());
    let (_c, addr_c) = reply("c", &c_command);
    // B forwards to C with no deadline of its own beyond a minute: only the inherited one counts.
    let b_command =
        format!("{HERALD} peer request --topic c --peers {addr_c} --timeout-ms 60000 \"$(cat)\"");
    let (b, addr_b) = reply("b", &b_command);
    let started = Instant::now();
    let mut a = Proc::spawn(&[
        "peer",
        "request",
        "--topic",
        "b",
        "--peers",
        &addr_b,
        "--timeout-ms",
        "1500",
        "go",
    ]);
    assert_eq!(
        a.wait_exit(Duration::from_secs(30)),
        7,
        "{}",
        a.stderr_text()
    );
    assert!(a.stderr_text().contains("deadline exceeded"));
    // Far below C's sleep: the deadline ended the call, not C.
    assert!(started.elapsed() < Duration::from_secs(30));
    // C's command did start, and is stopped because the deadline passed.
    assert!(poll(Duration::from_secs(10), || pidfile.exists()));
    let pid: i32 = poll(Duration::from_secs(5), || {
        std::fs::read_to_string(&pidfile).is_ok_and(|s| s.trim().parse::<i32>().is_ok())
    })
    .then(|| {
        std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    })
    .unwrap();
    assert!(
        poll(Duration::from_secs(10), || !alive(pid)),
        "C's command outlived the deadline"
    );
    // B's nested request saw the deadline too (its handler timed out on the same deadline).
    assert!(
        poll(Duration::from_secs(10), || b
            .stderr_text()
            .contains("deadline exceeded")),
        "{}",
        b.stderr_text()
    );
}
