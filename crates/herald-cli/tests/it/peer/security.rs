//! `herald peer` with keys from files: a group key admits only producers that hold it, and a
//! topic key makes a member count datagrams sealed with another key as rejected.

use std::time::Duration;

use super::harness::{Proc, listen, publish_summary};

fn key_files() -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let right = dir.path().join("right.key");
    let wrong = dir.path().join("wrong.key");
    std::fs::write(&right, format!("{}\n", "3c".repeat(32))).unwrap();
    std::fs::write(&wrong, "c3".repeat(32)).unwrap();
    let (right, wrong) = (right.display().to_string(), wrong.display().to_string());
    (dir, right, wrong)
}

fn publish(addr: &str, extra: &[&str], values: &[&str]) -> (i32, Proc) {
    let mut args = vec![
        "peer",
        "publish",
        "--topic",
        "orders",
        "--peers",
        addr,
        "--timeout-ms",
        "1000",
        "--output",
        "json",
    ];
    args.extend_from_slice(extra);
    let mut p = Proc::spawn(&args);
    p.write_lines(values.iter().map(|v| v.to_string()));
    p.close_stdin();
    let code = p.wait_exit(Duration::from_secs(60));
    (code, p)
}

#[test]
fn a_group_key_admits_its_producers_only() {
    let (_dir, right, wrong) = key_files();
    let (mut m, addr) = listen("orders", "g", &["--group-key-file", &right]);
    let (code, p) = publish(&addr, &["--group-key-file", &right], &["a", "b"]);
    assert_eq!(code, 0, "{}", p.stderr_text());
    assert_eq!(publish_summary(&p)["acked"], 2);
    let (code, p) = publish(&addr, &["--group-key-file", &wrong], &["c"]);
    assert_ne!(code, 0, "a wrong key published: {}", p.stderr_text());
    let s = m.terminate_for_summary();
    assert_eq!(s["direct"], 2, "{s}");
    assert!(s["auth_failures"].as_u64().unwrap() >= 1, "{s}");
}

#[test]
fn datagrams_with_another_topic_key_are_counted_as_rejected() {
    let (_dir, right, wrong) = key_files();
    let (mut m, addr) = listen("orders", "g", &["--topic-key-file", &right]);
    let datagram = ["--mode", "datagram", "--rate", "1000"];
    let mut good = datagram.to_vec();
    good.extend_from_slice(&["--topic-key-file", &right, "--encrypt"]);
    let (code, p) = publish(&addr, &good, &["s1", "s2", "s3"]);
    assert_eq!(code, 0, "{}", p.stderr_text());
    assert!(m.wait_stdout_count(3, Duration::from_secs(10)));
    let mut bad = datagram.to_vec();
    bad.extend_from_slice(&["--topic-key-file", &wrong]);
    let (code, p) = publish(&addr, &bad, &["x1", "x2"]);
    assert_eq!(code, 0, "{}", p.stderr_text());
    let (code, p) = publish(&addr, &datagram, &["u1"]);
    assert_eq!(code, 0, "{}", p.stderr_text());
    // One socket, read in order: once the last good datagram is printed, the refused ones sent
    // before it have been counted.
    let (code, p) = publish(&addr, &good, &["s4"]);
    assert_eq!(code, 0, "{}", p.stderr_text());
    assert!(m.wait_stdout_count(4, Duration::from_secs(10)));
    let s = m.terminate_for_summary();
    assert_eq!(s["datagrams"], 4, "{s}");
    assert_eq!(s["datagrams_rejected"], 3, "{s}");
    assert_eq!(m.event_values(), vec!["s1", "s2", "s3", "s4"]);
}
