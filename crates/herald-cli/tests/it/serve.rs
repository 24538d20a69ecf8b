//! `herald serve`: the broker as a process: defaults, config, signals, restarts and crashes.

mod client;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext};

use crate::support::{
    ServeProcess, free_addr, herald, http_get, kafkajs_check, wait_exit, wait_healthy,
};
use client::{Record, consume_all, create_topic, produce_all, sample_records, topic_configs};

fn sorted(mut records: Vec<Record>) -> Vec<Record> {
    records.sort();
    records
}

#[test]
fn health_and_metrics_answer() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(&dir.path().join("data"));
    let health = http_get(broker.http_addr, "/health").unwrap();
    assert_eq!(health.status, 200);
    let health: serde_json::Value = serde_json::from_str(&health.body).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["kafka_addr"], broker.kafka_addr.to_string());

    produce_all(broker.kafka_addr, "metered", &sample_records(10));
    let metrics = http_get(broker.http_addr, "/metrics").unwrap();
    assert_eq!(metrics.status, 200);
    let value = |name: &str| -> u64 {
        metrics
            .body
            .lines()
            .find(|line| line.starts_with(name) && !line.starts_with('#'))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no sample {name} in:\n{}", metrics.body))
    };
    assert!(value("herald_topics ") >= 1);
    assert!(value("herald_produced_records_total ") >= 10);
    assert!(value("herald_process_resident_memory_bytes ") > 0);
}

#[test]
fn flag_beats_env_beats_file() {
    let dir = tempfile::tempdir().unwrap();
    let (file_addr, env_addr, flag_addr) = (free_addr(), free_addr(), free_addr());
    let http_addr = free_addr();
    let config = dir.path().join("herald.toml");
    std::fs::write(
        &config,
        format!(
            "kafka_addr = \"{file_addr}\"\nhttp_addr = \"{http_addr}\"\ndata_dir = \"{}\"\n",
            dir.path().join("from-file").display()
        ),
    )
    .unwrap();
    let log = dir.path().join("serve.log");

    let start = |env: Option<std::net::SocketAddr>, flag: Option<std::net::SocketAddr>| {
        let mut command = herald();
        command.arg("serve").arg("--config").arg(&config);
        if let Some(addr) = env {
            command.env("HERALD_KAFKA_ADDR", addr.to_string());
        }
        if let Some(addr) = flag {
            command.arg("--kafka-addr").arg(addr.to_string());
        }
        let file = std::fs::File::create(&log).unwrap();
        let mut child = command.stdout(Stdio::null()).stderr(file).spawn().unwrap();
        wait_healthy(http_addr, &mut child, &log);
        let health = http_get(http_addr, "/health").unwrap();
        let health: serde_json::Value = serde_json::from_str(&health.body).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        health["kafka_addr"].as_str().unwrap().to_string()
    };

    assert_eq!(start(None, None), file_addr.to_string());
    assert_eq!(start(Some(env_addr), None), env_addr.to_string());
    assert_eq!(
        start(Some(env_addr), Some(flag_addr)),
        flag_addr.to_string()
    );
    assert!(dir.path().join("from-file").is_dir());
}

#[test]
fn data_dir_defaults_to_herald_data_in_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let http_addr = free_addr();
    let log = dir.path().join("serve.log");
    let mut child = herald()
        .arg("serve")
        .current_dir(dir.path())
        .env("HERALD_KAFKA_ADDR", free_addr().to_string())
        .env("HERALD_HTTP_ADDR", http_addr.to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_healthy(http_addr, &mut child, &log);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(dir.path().join("herald-data").is_dir());
}

#[test]
fn help_documents_the_precedence() {
    let output = herald().args(["serve", "--help"]).output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(help.contains("--data-dir"), "{help}");
    assert!(help.contains("HERALD_DATA_DIR"), "{help}");
    assert!(help.contains("precedence"), "{help}");
}

#[test]
fn bad_config_is_one_line_and_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("herald.toml");
    std::fs::write(&config, "kafka_adr = \"127.0.0.1:1\"\n").unwrap();
    let output = herald()
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("unknown setting `kafka_adr`"), "{stderr}");

    let output = herald()
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .env("HERALD_KAFKA_ADDR", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("HERALD_KAFKA_ADDR"), "{stderr}");
}

#[test]
fn address_in_use_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    for flag in ["--kafka-addr", "--http-addr"] {
        let (kafka_addr, http_addr) = if flag == "--kafka-addr" {
            (taken_addr, free_addr())
        } else {
            (free_addr(), taken_addr)
        };
        let mut child = herald()
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path().join(flag.trim_start_matches('-')))
            .args(["--kafka-addr", &kafka_addr.to_string()])
            .args(["--http-addr", &http_addr.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = wait_exit(&mut child, Duration::from_secs(30)).expect("serve kept running");
        assert!(!status.success());
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("error:") && last.contains(&taken_addr.to_string()),
            "{flag}: {stderr}"
        );
        assert!(last.to_lowercase().contains("in use"), "{flag}: {stderr}");
    }
}

#[test]
fn a_second_broker_on_the_same_data_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = ServeProcess::start(&data);
    create_topic(first.kafka_addr, "held", 3, &[]);
    let mut child = herald()
        .arg("serve")
        .arg("--data-dir")
        .arg(&data)
        .args(["--kafka-addr", &free_addr().to_string()])
        .args(["--http-addr", &free_addr().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(30)).expect("serve kept running");
    assert!(!status.success());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error:") && last.contains("in use by another process"),
        "{stderr}"
    );
    // One lock for the whole directory: no partition holds a lock file (or descriptor) of its own.
    assert!(!data.join("held-0").join("lock").exists());
}

#[test]
fn sigterm_exits_0_and_data_and_topic_configs_survive() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = ServeProcess::start(&dir.path().join("data"));
    create_topic(
        broker.kafka_addr,
        "kept",
        3,
        &[("retention.ms", "123456789"), ("cleanup.policy", "delete")],
    );
    let records = sample_records(500);
    produce_all(broker.kafka_addr, "kept", &records);

    let status = broker.sigterm();
    assert_eq!(status.code(), Some(0), "{}", broker.log());
    broker.restart();

    assert_eq!(
        sorted(consume_all(broker.kafka_addr, "kept", records.len())),
        sorted(records)
    );
    let configs = topic_configs(broker.kafka_addr, "kept");
    assert_eq!(
        configs.get("retention.ms").map(String::as_str),
        Some("123456789")
    );
}

#[test]
fn sigkill_keeps_acknowledged_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = ServeProcess::start(&dir.path().join("data"));
    create_topic(
        broker.kafka_addr,
        "crashed",
        2,
        &[("retention.ms", "987654321")],
    );
    let records = sample_records(1000);
    produce_all(broker.kafka_addr, "crashed", &records);

    broker.sigkill();
    broker.restart();

    assert_eq!(
        sorted(consume_all(broker.kafka_addr, "crashed", records.len())),
        sorted(records)
    );
    let configs = topic_configs(broker.kafka_addr, "crashed");
    assert_eq!(
        configs.get("retention.ms").map(String::as_str),
        Some("987654321")
    );
}

#[test]
fn sigkill_with_more_partitions_than_open_files_keeps_every_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("herald.toml");
    // Far fewer files than the partitions need: the storage must evict and reopen throughout.
    std::fs::write(&config, "open_files_max = 24\n").unwrap();
    let config = config.display().to_string();
    let mut broker = ServeProcess::start_with(
        &dir.path().join("data"),
        free_addr(),
        &["--config", config.as_str()],
    );
    create_topic(broker.kafka_addr, "wide", 300, &[]);
    let records = sample_records(3000);
    produce_all(broker.kafka_addr, "wide", &records);

    broker.sigkill();
    broker.restart();

    assert_eq!(
        sorted(consume_all(broker.kafka_addr, "wide", records.len())),
        sorted(records)
    );
    let metrics = http_get(broker.http_addr, "/metrics").unwrap().body;
    assert!(metrics.contains("herald_open_files_max 24\n"), "{metrics}");
}

/// Records which message indexes the broker acknowledged, and the first failure.
struct Acks {
    acked: Mutex<Vec<usize>>,
    failed: Mutex<Vec<String>>,
}

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        match result {
            Ok(_) => self.acked.lock().unwrap().push(index),
            Err((error, _)) => self.failed.lock().unwrap().push(error.to_string()),
        }
    }
}

#[test]
fn sigkill_during_idempotent_produce_keeps_every_ack_exactly_once() {
    const MESSAGES: usize = 30_000;
    let dir = tempfile::tempdir().unwrap();
    let mut broker = ServeProcess::start(&dir.path().join("data"));
    create_topic(broker.kafka_addr, "idempotent", 2, &[]);

    let acks = Acks {
        acked: Mutex::new(Vec::new()),
        failed: Mutex::new(Vec::new()),
    };
    let producer: ThreadedProducer<Acks> = ClientConfig::new()
        .set("bootstrap.servers", broker.kafka_addr.to_string())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("batch.num.messages", "200")
        // Long enough to ride out the restart; the broker is back within seconds.
        .set("message.timeout.ms", "120000")
        .set("reconnect.backoff.ms", "10")
        .set("reconnect.backoff.max.ms", "200")
        .create_with_context(acks)
        .unwrap();
    let producer = Arc::new(producer);
    let done = Arc::new(AtomicBool::new(false));
    let sender = {
        let producer = producer.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            for index in 0..MESSAGES {
                let value = format!("idempotent-{index}");
                let mut record = BaseRecord::with_opaque_to("idempotent", index)
                    .key(value.as_bytes())
                    .payload(value.as_bytes());
                loop {
                    match producer.send(record) {
                        Ok(()) => break,
                        Err((_, back)) => {
                            // Queue full: wait for deliveries to make room.
                            record = back;
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                }
                // Spread the sends over time so that the kill lands mid-stream.
                if index % 100 == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            producer.flush(Duration::from_secs(180)).unwrap();
            done.store(true, Ordering::SeqCst);
        })
    };

    // Kill once a good share is acknowledged but well before the end.
    let deadline = Instant::now() + Duration::from_secs(60);
    while producer.context().acked.lock().unwrap().len() < MESSAGES / 4 {
        assert!(Instant::now() < deadline, "acks too slow before the kill");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        !done.load(Ordering::SeqCst),
        "produce ended before the kill"
    );
    let acked_before_kill = producer.context().acked.lock().unwrap().len();
    broker.sigkill();
    broker.restart();
    sender.join().unwrap();

    let acked: Vec<usize> = producer.context().acked.lock().unwrap().clone();
    let failed: Vec<String> = producer.context().failed.lock().unwrap().clone();
    assert!(acked.len() >= acked_before_kill);
    assert!(
        failed.is_empty(),
        "{} deliveries failed, first: {}",
        failed.len(),
        failed[0]
    );

    let stored = consume_all(broker.kafka_addr, "idempotent", acked.len());
    let mut counts: HashMap<Vec<u8>, usize> = HashMap::new();
    for (_, value) in &stored {
        *counts.entry(value.clone()).or_default() += 1;
    }
    for index in &acked {
        let value = format!("idempotent-{index}").into_bytes();
        assert_eq!(
            counts.get(&value).copied().unwrap_or(0),
            1,
            "acknowledged message {index} stored a wrong number of times"
        );
    }
    let duplicated = counts.values().filter(|count| **count > 1).count();
    assert_eq!(duplicated, 0, "{duplicated} messages stored more than once");
}

fn kcat() -> Command {
    let probe = Command::new("kcat").arg("-V").output();
    assert!(
        probe.is_ok_and(|output| output.status.success()),
        "kcat is not installed; scripts/install-test-deps installs it (Debian package kcat)"
    );
    Command::new("kcat")
}

fn kcat_round_trip(broker: &ServeProcess, topic: &str) {
    let lines: Vec<String> = (0..100)
        .map(|i| format!("k{i}:v{i}-{}", "y".repeat(i)))
        .collect();
    let mut producer = kcat()
        .args([
            "-b",
            &broker.kafka_addr.to_string(),
            "-P",
            "-t",
            topic,
            "-K:",
        ])
        .args(["-X", "acks=all"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    producer
        .stdin
        .take()
        .unwrap()
        .write_all((lines.join("\n") + "\n").as_bytes())
        .unwrap();
    let status = wait_exit(&mut producer, Duration::from_secs(60)).expect("kcat -P hangs");
    assert!(status.success(), "kcat -P failed: {}", broker.log());

    let listing = kcat()
        .args(["-b", &broker.kafka_addr.to_string(), "-L", "-t", topic])
        .output()
        .unwrap();
    assert!(listing.status.success());
    let listing = String::from_utf8(listing.stdout).unwrap();
    assert!(listing.contains(&format!("topic \"{topic}\"")), "{listing}");

    let consumed = kcat()
        .args(["-b", &broker.kafka_addr.to_string(), "-C", "-t", topic])
        .args(["-o", "beginning", "-e", "-f", "%k:%s\\n"])
        .output()
        .unwrap();
    assert!(consumed.status.success());
    let mut got: Vec<String> = String::from_utf8(consumed.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    got.sort();
    let mut want = lines;
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn kcat_list_produce_consume() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(&dir.path().join("data"));
    kcat_round_trip(&broker, "kcat");
}

#[test]
fn python_confluent_kafka_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(&dir.path().join("data"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/roundtrip.py");
    let output = Command::new("python3")
        .arg(script)
        .args([&broker.kafka_addr.to_string(), "python", "200"])
        .output()
        .expect("python3 is not installed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(
        output.status.code(),
        Some(3),
        "confluent-kafka is missing: scripts/install-test-deps installs it ({stdout})"
    );
    assert!(
        output.status.success(),
        "python round trip failed:\n{stdout}\n{stderr}\nbroker log:\n{}",
        broker.log()
    );
    assert_eq!(stdout.trim(), "ok 200");
}

#[test]
fn kafkajs_admin_idempotent_produce_and_a_consumer_group() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(&dir.path().join("data"));
    kafkajs_check("roundtrip.js", &[&broker.kafka_addr.to_string()], || {
        broker.log()
    });
}

#[test]
fn kafkajs_transactions_commit_abort_and_send_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(&dir.path().join("data"));
    kafkajs_check("transactions.js", &[&broker.kafka_addr.to_string()], || {
        broker.log()
    });
}

/// Sends `bytes` on a fresh connection and waits (bounded) for the broker to answer or close.
fn send_raw(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // The broker may close mid-write when it rejects a header; that is an allowed answer.
    let _ = stream.write_all(bytes);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

#[test]
fn garbage_and_oversized_frames_leave_the_broker_serving() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(&dir.path().join("data"));
    let addr = broker.kafka_addr;

    // A frame claiming 2 GiB: must be refused without reading or allocating it.
    let mut oversized = i32::MAX.to_be_bytes().to_vec();
    oversized.extend_from_slice(&[0u8; 64]);
    send_raw(addr, &oversized);
    // A negative length.
    send_raw(addr, &(-5i32).to_be_bytes());
    // A frame just over the default 100 MiB request limit, header only.
    send_raw(addr, &(100 * 1024 * 1024 + 1i32).to_be_bytes());
    // Random bytes in a plausible frame: unknown API key and version, garbage body.
    let mut state: u32 = 0x1234_5678;
    let garbage: Vec<u8> = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect();
    let mut frame = 4096i32.to_be_bytes().to_vec();
    frame.extend_from_slice(&garbage);
    send_raw(addr, &frame);
    // A truncated frame: the length promises more than is sent before the connection closes.
    let mut truncated = 100i32.to_be_bytes().to_vec();
    truncated.extend_from_slice(&[0, 18, 0, 3]);
    drop(TcpStream::connect(addr).unwrap().write_all(&truncated));
    // An ApiVersions request with a version from the future: must answer with its own range.
    let mut request = Vec::new();
    request.extend_from_slice(&18i16.to_be_bytes()); // ApiVersions
    request.extend_from_slice(&99i16.to_be_bytes()); // version
    request.extend_from_slice(&7i32.to_be_bytes()); // correlation id
    request.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
    let mut frame = (request.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&request);
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(&frame).unwrap();
    let mut head = [0u8; 10];
    stream.read_exact(&mut head).unwrap();
    assert_eq!(&head[4..8], &7i32.to_be_bytes(), "correlation id echoed");
    assert_eq!(&head[8..10], &35i16.to_be_bytes(), "UNSUPPORTED_VERSION");

    let health = http_get(broker.http_addr, "/health").unwrap();
    assert_eq!(health.status, 200);
    kcat_round_trip(&broker, "after-garbage");
}

#[test]
fn sigint_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = ServeProcess::start(&dir.path().join("data"));
    let status = broker.signal("INT");
    assert_eq!(status.code(), Some(0), "{}", broker.log());
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = ServeProcess::start_with(
        &dir.path().join("data"),
        free_addr(),
        &["--log-format", "json"],
    );
    assert_eq!(broker.sigterm().code(), Some(0));
    let log = broker.log();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 2, "{log}");
    for line in lines {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
        assert!(event["level"].is_string(), "{line}");
    }
}
