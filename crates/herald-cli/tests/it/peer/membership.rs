//! Join, leave and crash of members, as the publisher's membership log reports them.

use std::time::Duration;

use super::harness::{Proc, listen, poll};

#[test]
fn join_leave_and_crash_are_reflected() {
    let (mut m1, addr1) = listen("t", "g", &[]);
    // A port for a member that starts later.
    let addr2 = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let peers = format!("{addr1},{addr2}");
    let mut p = Proc::spawn(&["peer", "publish", "--topic", "t", "--peers", &peers]);
    let limit = Duration::from_secs(20);
    p.wait_stderr(limit, |l| l.contains("member up") && l.contains(&addr1));

    // Join: the late member is picked up (the publisher retries its address every 200 ms).
    let (m2, _) = Proc::member(&[
        "peer", "listen", "--topic", "t", "--group", "g", "--bind", &addr2, "--output", "json",
    ]);
    p.wait_stderr(limit, |l| l.contains("member up") && l.contains(&addr2));
    p.write_lines(["after-join".to_string()]);
    // The event went to one of the two members (both up and equally loaded).
    assert!(poll(limit, || {
        !m2.stdout_lines().is_empty() || !m1.stdout_lines().is_empty()
    }));

    // Leave: SIGTERM makes the member say goodbye.
    m1.terminate_for_summary();
    p.wait_stderr(limit, |l| l.contains("member left") && l.contains(&addr1));

    // Crash: SIGKILL; the publisher notices the dead connection.
    m2.signal(libc::SIGKILL);
    p.wait_stderr(limit, |l| l.contains("member down") && l.contains(&addr2));
    p.close_stdin();
    assert_eq!(p.wait_exit(limit), 0, "{}", p.stderr_text());
}

#[test]
fn a_frozen_member_is_declared_dead_by_heartbeats_and_its_events_fail_over() {
    let (_a, addr_a) = listen("hb", "g", &[]);
    let (b, addr_b) = listen("hb", "g", &[]);
    let peers = format!("{addr_a},{addr_b}");
    let mut p = Proc::spawn(&[
        "peer",
        "publish",
        "--topic",
        "hb",
        "--peers",
        &peers,
        "--timeout-ms",
        "20000",
        "--output",
        "json",
    ]);
    let limit = Duration::from_secs(20);
    p.wait_stderr(limit, |l| l.contains("member up") && l.contains(&addr_a));
    p.wait_stderr(limit, |l| l.contains("member up") && l.contains(&addr_b));
    // SIGSTOP keeps b's sockets open: only the missing heartbeat replies can reveal it.
    b.signal(libc::SIGSTOP);
    p.write_lines((0..200).map(|i| format!("h{i}")));
    p.close_stdin();
    let code = p.wait_exit(Duration::from_secs(60));
    b.signal(libc::SIGCONT);
    assert_eq!(code, 0, "{}", p.stderr_text());
    assert_eq!(super::harness::publish_summary(&p)["acked"], 200);
    p.wait_stderr(limit, |l| {
        l.contains("member down") && l.contains(&addr_b) && l.contains("no heartbeat")
    });
}

#[test]
fn the_members_command_shows_the_view() {
    let (_m, addr) = listen("view", "readers", &["--capacity", "7"]);
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let peers = format!("{addr},{dead}");
    let mut p = Proc::spawn(&["peer", "members", "--peers", &peers, "--output", "json"]);
    assert_eq!(
        p.wait_exit(Duration::from_secs(20)),
        0,
        "{}",
        p.stderr_text()
    );
    let view: serde_json::Value = serde_json::from_str(&p.stdout_lines().join("\n")).unwrap();
    let rows = view.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let up = rows.iter().find(|r| r["addr"] == addr.as_str()).unwrap();
    assert_eq!(up["state"], "up");
    assert_eq!(up["group"], "readers");
    assert_eq!(up["capacity"], 7);
    let down = rows.iter().find(|r| r["addr"] == dead.as_str()).unwrap();
    assert_ne!(down["state"], "up");
    assert!(down["last_error"].as_str().is_some_and(|e| !e.is_empty()));
}
