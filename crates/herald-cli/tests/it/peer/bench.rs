//! `herald peer bench`, run briefly: the echo and direct latency phases alternate in slices and
//! every slice's events are counted in its phase's histogram.

use std::process::Command;

use super::harness::HERALD;

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(HERALD)
        .args(["--output", "json", "peer", "bench"])
        .args(args)
        .env("HERALD_LOG", "warn")
        .output()
        .expect("run herald peer bench")
}

#[test]
fn interleaved_slices_are_all_counted() {
    let out = bench(&[
        "--round-trips",
        "200",
        "--rate",
        "2000",
        "--duration-ms",
        "600",
        "--slices",
        "3",
        "--in-flight-max",
        "4",
        "--datagrams",
        "1000",
        "--datagram-rate",
        "2000",
    ]);
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // 2,000/s for 600 ms is 1,200 events per phase, 400 in each of the three slices.
    assert_eq!(report["latency_slices_per_phase"], 3);
    assert_eq!(report["latency_slice_events"], 400);
    assert_eq!(report["direct_failed"], 0);
    assert_eq!(report["direct_publish_to_ack"]["samples"], 1200);
    assert_eq!(report["direct_scheduled_to_ack"]["samples"], 1200);
    assert_eq!(report["bare_tcp_open_loop"]["samples"], 1200);
    assert_eq!(report["bare_tcp_open_loop_scheduled"]["samples"], 1200);
    // Pairs alternate which phase runs first, so neither always follows the other.
    let pairs = report["latency_slice_pairs"].as_array().unwrap();
    let firsts: Vec<&str> = pairs.iter().map(|p| p["first"].as_str().unwrap()).collect();
    assert_eq!(firsts, ["echo", "direct", "echo"]);
    for ratio in [
        "direct_p50_ratio_to_tcp_open_loop",
        "direct_p99_ratio_to_tcp_open_loop",
        "direct_p50_ratio_to_tcp_open_loop_slice_median",
        "direct_p99_ratio_to_tcp_open_loop_slice_median",
    ] {
        let r = report[ratio].as_f64().unwrap();
        assert!(r > 0.0, "{ratio} = {r}");
    }
    // Plain and TLS direct alternate the same way, in slices of the same size.
    assert_eq!(report["direct_tls_failed"], 0);
    assert_eq!(report["direct_tls_publish_to_ack"]["samples"], 1200);
    assert_eq!(report["direct_tls_plain_publish_to_ack"]["samples"], 1200);
    let firsts: Vec<&str> = report["direct_tls_slice_pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["first"].as_str().unwrap())
        .collect();
    assert_eq!(firsts, ["plain", "tls", "plain"]);
    assert!(report["direct_tls_p50_ratio_to_plain"].as_f64().unwrap() > 0.0);
}

#[test]
fn slices_with_no_event_are_refused() {
    for args in [
        &["--slices", "0"][..],
        &["--rate", "10", "--duration-ms", "100", "--slices", "2"][..],
    ] {
        let out = bench(args);
        assert!(!out.status.success(), "accepted {args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--slices"), "{args:?}: {stderr}");
    }
}
