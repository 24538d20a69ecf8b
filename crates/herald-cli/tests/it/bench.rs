//! `herald bench produce|consume --raw|end-to-end|disk` against a real broker: what was produced
//! is what the raw Fetch loop counts, the producer's configuration is reported, and the
//! durable-path tools finish with figures.

use serde_json::Value;

use crate::support::{ServeProcess, herald};

fn json(args: &[&str], bootstrap: &str) -> Value {
    let out = herald()
        .args(["--bootstrap", bootstrap, "--output", "json", "bench"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn raw_consume_counts_every_produced_record_and_produce_reports_its_producer() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(&dir.path().join("data"));
    let bootstrap = broker.kafka_addr.to_string();
    let produced = json(
        &[
            "produce",
            "--topic",
            "raw",
            "--partitions",
            "3",
            "--count",
            "3000",
            "--size",
            "100",
            "--rate",
            "20000",
            "--linger-ms",
            "0",
            "--idempotent",
            "false",
            "--in-flight-max",
            "1",
            "--quiet",
        ],
        &bootstrap,
    );
    assert_eq!(produced["messages"], 3000);
    assert_eq!(produced["producer"]["idempotent"], false);
    assert_eq!(produced["producer"]["in_flight_max"], 1);
    assert_eq!(produced["producer"]["linger_ms"], 0);
    assert!(produced["latency"]["p50_us"].as_u64().unwrap() > 0);

    let pid = broker.pid().to_string();
    let raw = json(
        &[
            "consume",
            "--topic",
            "raw",
            "--raw",
            "--broker-pid",
            &pid,
            "--quiet",
        ],
        &bootstrap,
    );
    assert_eq!(raw["mode"], "consume-raw");
    assert_eq!(raw["messages"], 3000);
    assert!(raw["broker_cpu_s_per_gib"].as_f64().is_some());
    let decoded = json(&["consume", "--topic", "raw", "--quiet"], &bootstrap);
    assert_eq!(decoded["messages"], 3000);

    let e2e = json(
        &[
            "end-to-end",
            "--rate",
            "2000",
            "--duration-ms",
            "300",
            "--linger-ms",
            "0",
        ],
        &bootstrap,
    );
    assert_eq!(e2e["messages"], 600);
    assert_eq!(e2e["failed"], 0);
}

#[test]
fn disk_group_commit_covers_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let out = herald()
        .args([
            "--output",
            "json",
            "bench",
            "disk",
            "--rate",
            "5000",
            "--duration-ms",
            "200",
        ])
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["events"], 1000);
    let fsyncs = report["fsyncs"].as_u64().unwrap();
    assert!((1..=1000).contains(&fsyncs), "{report}");
    // The bench cleans up after itself.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn disk_sequential_writes_what_it_was_asked_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let out = herald()
        .args(["--output", "json", "bench", "disk", "--sequential-mib", "3"])
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["bytes"], 3 * 1024 * 1024);
    assert!(report["mib_per_s"].as_f64().unwrap() > 0.0, "{report}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    let zero = herald()
        .args(["bench", "disk", "--sequential-mib", "0"])
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!zero.status.success());
    assert!(String::from_utf8_lossy(&zero.stderr).contains("more than 0 bytes"));
}
