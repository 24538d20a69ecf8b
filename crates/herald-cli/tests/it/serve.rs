//! `herald serve`: the broker as a process: defaults, config, signals, restarts and crashes.

mod harness;

use std::io::Read;
use std::net::TcpListener;
use std::process::Stdio;
use std::time::Duration;

use harness::{ServeProcess, free_addr, herald, http_get, wait_exit, wait_healthy};

#[test]
fn health_and_metrics_answer() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ServeProcess::start(&dir.path().join("data"));
    let health = http_get(broker.http_addr, "/health").unwrap();
    assert_eq!(health.status, 200);
    let health: serde_json::Value = serde_json::from_str(&health.body).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["kafka_addr"], broker.kafka_addr.to_string());

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
    assert_eq!(value("herald_topics "), 0);
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
fn sigterm_exits_0_and_the_broker_restarts_on_the_same_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = ServeProcess::start(&dir.path().join("data"));
    let status = broker.sigterm();
    assert_eq!(status.code(), Some(0), "{}", broker.log());
    assert!(broker.log().contains("stopped"), "{}", broker.log());
    broker.restart();
    broker.sigkill();
    broker.restart();
    let health = http_get(broker.http_addr, "/health").unwrap();
    assert_eq!(health.status, 200);
}
