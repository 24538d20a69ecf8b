//! Datagrams between processes: nearly all arrive at a modest rate; induced drops are counted
//! exactly.

use std::time::Duration;

use super::harness::{Proc, listen};

fn send(addr: &str, n: usize, extra: &[&str]) {
    let mut args = vec![
        "peer",
        "publish",
        "--topic",
        "telemetry",
        "--peers",
        addr,
        "--mode",
        "datagram",
        "--rate",
        "2000",
    ];
    args.extend_from_slice(extra);
    let mut p = Proc::spawn(&args);
    p.write_lines((1..=n).map(|i| format!("d{i}")));
    p.close_stdin();
    assert_eq!(
        p.wait_exit(Duration::from_secs(60)),
        0,
        "{}",
        p.stderr_text()
    );
}

#[test]
fn at_a_modest_rate_nearly_all_datagrams_arrive() {
    let (mut m, addr) = listen("telemetry", "g", &[]);
    send(&addr, 2000, &[]);
    m.wait_stdout_count(2000, Duration::from_secs(5));
    let s = m.terminate_for_summary();
    let received = s["received"].as_u64().unwrap();
    assert!(received >= 1980, "{s}");
    assert_eq!(s["lost"].as_u64().unwrap(), 2000 - received, "{s}");
    let first: serde_json::Value = serde_json::from_str(&m.stdout_lines()[0]).unwrap();
    assert_eq!(first["mode"], "datagram");
    assert_eq!(first["topic"], "telemetry");
}

#[test]
fn drops_induced_at_the_receiver_are_counted_exactly() {
    let (mut m, addr) = listen("telemetry", "g", &["--drop-every", "7"]);
    send(&addr, 1000, &[]);
    // 1..=1000 minus the 142 multiples of 7.
    assert!(m.wait_stdout_count(858, Duration::from_secs(10)));
    let s = m.terminate_for_summary();
    assert_eq!(s["received"], 858, "{s}");
    assert_eq!(s["lost"], 142, "{s}");
}

#[test]
fn drops_induced_at_the_sender_are_counted_exactly() {
    let (mut m, addr) = listen("telemetry", "g", &[]);
    // Sequence numbers 10, 20, ..., 1000 are never sent; 1001 closes the range.
    send(&addr, 1001, &["--drop-every", "10"]);
    assert!(m.wait_stdout_count(901, Duration::from_secs(10)));
    let s = m.terminate_for_summary();
    assert_eq!(s["received"], 901, "{s}");
    assert_eq!(s["lost"], 100, "{s}");
    assert_eq!(s["publishers"][0]["lost"], 100, "{s}");
}

#[test]
fn an_oversized_datagram_is_refused() {
    let (_m, addr) = listen("telemetry", "g", &[]);
    let mut p = Proc::spawn(&[
        "peer",
        "publish",
        "--topic",
        "telemetry",
        "--peers",
        &addr,
        "--mode",
        "datagram",
    ]);
    p.write_lines(["x".repeat(2000)]);
    p.close_stdin();
    assert_eq!(
        p.wait_exit(Duration::from_secs(20)),
        6,
        "{}",
        p.stderr_text()
    );
    assert!(p.stderr_text().contains("datagram_payload_bytes_max"));
}
