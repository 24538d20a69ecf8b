//! The binaries as separate processes over a real broker: a crashed SMS service loses nothing
//! and sends nothing twice, a restarted notification service rebuilds its view from the topics,
//! a provider that always fails ends in `failed` results and dead letters, and a request the
//! broker does not store is answered 503.
//!
//! The broker is a Herald broker in this process (on a temporary directory and a free port), or
//! the external Kafka-compatible broker `HERALD_TEST_BOOTSTRAP` names; every test gives the
//! services topic and group names of its own, so tests sharing that broker never meet.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};

use bytes::Bytes;
use herald::{Bus, Event, HEADER_DLQ_ATTEMPTS, HEADER_DLQ_GROUP};
use herald_broker::{Broker, BrokerConfig};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use notifications::messages::Names;

use crate::support::{PATIENCE, provider_log, unique_names, wait_for};

/// A session timeout as short as the broker allows, so a killed sms-service's partitions move
/// to its successor soon.
pub(crate) const SESSION_TIMEOUT_MS: &str = "6000";

/// The broker of one test and the names the test's services use on it.
pub(crate) struct TestBroker {
    /// The Herald broker in this process; `None` against an external broker.
    broker: Option<Broker>,
    pub(crate) bootstrap: String,
    /// Unique to this test (see [`unique_names`]).
    pub(crate) names: Names,
    _dir: Option<tempfile::TempDir>,
}

impl TestBroker {
    /// The flags that point a service at this broker with this test's names.
    pub(crate) fn service_args(&self) -> Vec<String> {
        let mut args = vec!["--bootstrap".to_string(), self.bootstrap.clone()];
        args.extend(self.names.args());
        args
    }

    /// Stops the broker in this process, fsyncing everything; nothing for an external broker.
    pub(crate) async fn shutdown(self) {
        if let Some(broker) = self.broker {
            broker.shutdown().await.unwrap();
        }
    }
}

/// The external broker `HERALD_TEST_BOOTSTRAP` names, or a Herald broker started in this
/// process on a free port over a temporary directory.
pub(crate) async fn start_broker() -> TestBroker {
    if let Some(bootstrap) = herald_testkit::external_bootstrap() {
        return TestBroker {
            broker: None,
            bootstrap,
            names: unique_names(),
            _dir: None,
        };
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(BrokerConfig {
        data_dir: dir.path().to_path_buf(),
        kafka_addr: "127.0.0.1:0".parse().unwrap(),
        ..BrokerConfig::default()
    })
    .await
    .unwrap();
    TestBroker {
        bootstrap: broker.kafka_addr().to_string(),
        broker: Some(broker),
        names: unique_names(),
        _dir: Some(dir),
    }
}

/// A running service and the address it serves HTTP on.
pub(crate) struct HttpService {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    /// Held open so the process never writes to a closed pipe.
    _stdout: BufReader<ChildStdout>,
}

pub(crate) async fn start_notification_service(broker: &TestBroker, extra: &[&str]) -> HttpService {
    let mut command = Command::new(env!("CARGO_BIN_EXE_notification-service"));
    command.args(broker.service_args()).args(extra);
    start_http_service(command).await
}

/// Starts a service that serves HTTP on `127.0.0.1:0` (unless `command` names an address) and
/// reads the address it prints.
pub(crate) async fn start_http_service(mut command: Command) -> HttpService {
    if !command
        .as_std()
        .get_args()
        .any(|a| a.to_str() == Some("--listen"))
    {
        command.args(["--listen", "127.0.0.1:0"]);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    tokio::time::timeout(PATIENCE, stdout.read_line(&mut line))
        .await
        .expect("the service did not start in time")
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    HttpService {
        child,
        addr,
        _stdout: stdout,
    }
}

pub(crate) fn start_sms_service(broker: &TestBroker, log: &Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sms-service"))
        .args(broker.service_args())
        .arg("--provider-log")
        .arg(log)
        .args(["--session-timeout-ms", SESSION_TIMEOUT_MS])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Asks `child` to stop with SIGTERM and returns how it exited.
pub(crate) async fn terminate(child: &mut Child) -> ExitStatus {
    let pid = child.id().expect("the child is still running");
    // SAFETY: kill(2) only sends a signal; the pid is our own child, which has not been reaped
    // (we still hold its handle), so it cannot name another process.
    let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0, "kill(SIGTERM) failed");
    tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("the service did not stop after SIGTERM")
        .unwrap()
}

/// One HTTP/1.1 exchange with a minimal hyper client; the answer's status and JSON body.
pub(crate) async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {bytes:?}"));
    (status, value)
}

pub(crate) async fn post(addr: SocketAddr, to: &str, text: &str) -> String {
    let (status, body) = http(
        addr,
        "POST",
        "/notifications",
        Some(json!({"to": to, "text": text})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    body["id"].as_str().unwrap().to_string()
}

pub(crate) async fn get(addr: SocketAddr, id: &str) -> (u16, Value) {
    http(addr, "GET", &format!("/notifications/{id}"), None).await
}

pub(crate) async fn wait_status(addr: SocketAddr, id: &str, want: &str) -> Value {
    wait_for(&format!("notification {id} to be {want}"), || async {
        let (status, body) = get(addr, id).await;
        (status == 200 && body["status"] == want).then_some(body)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_sms_service_loses_nothing_and_sends_nothing_twice() {
    let broker = start_broker().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("provider.log");
    let mut web = start_notification_service(&broker, &[]).await;
    let mut sms = start_sms_service(&broker, &log, &[]);

    // The group is up and working before the crash.
    let mut ids = vec![post(web.addr, "+4410000", "before the crash").await];
    wait_status(web.addr, &ids[0], "sent").await;
    sms.kill().await.unwrap();

    // While nobody sends, notifications are stored and stay pending.
    for i in 0..5 {
        let to = format!("+44100{:02}", i % 3);
        ids.push(post(web.addr, &to, &format!("message {i}")).await);
    }
    for id in &ids[1..] {
        let (status, body) = get(web.addr, id).await;
        assert_eq!(status, 200);
        assert_eq!(body["status"], "pending", "{body}");
    }
    assert_eq!(provider_log(&log).len(), 1);

    // The restarted service resumes where the group left off.
    let mut sms = start_sms_service(&broker, &log, &[]);
    for id in &ids {
        let body = wait_status(web.addr, id, "sent").await;
        assert!(body["to"].as_str().unwrap().starts_with("+44100"), "{body}");
    }
    let sent: Vec<String> = provider_log(&log)
        .iter()
        .map(|s| s.id.to_string())
        .collect();
    for id in &ids {
        let times = sent.iter().filter(|s| *s == id).count();
        assert_eq!(times, 1, "{id} sent {times} times: {sent:?}");
    }
    assert_eq!(sent.len(), ids.len(), "{sent:?}");

    // A restarted notification service rebuilds every status from the topics.
    assert!(terminate(&mut web.child).await.success());
    let mut web = start_notification_service(&broker, &[]).await;
    for id in &ids {
        wait_status(web.addr, id, "sent").await;
    }
    let (status, _) = get(web.addr, &herald::EventId::new().to_string()).await;
    assert_eq!(status, 404);

    assert!(terminate(&mut web.child).await.success());
    assert!(terminate(&mut sms).await.success());
    assert_eq!(provider_log(&log).len(), ids.len());
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_provider_never_takes_is_failed_and_dead_lettered() {
    let broker = start_broker().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("provider.log");
    let mut web = start_notification_service(&broker, &[]).await;
    let mut sms = start_sms_service(
        &broker,
        &log,
        &["--fail-rate", "1", "--attempts", "3", "--backoff-ms", "10"],
    );

    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(post(web.addr, &format!("+4420000{i}"), "never arrives").await);
    }
    for id in &ids {
        let body = wait_status(web.addr, id, "failed").await;
        assert_eq!(body["attempts"], 3, "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("unavailable"),
            "{body}"
        );
    }
    assert!(provider_log(&log).is_empty());

    // The dead letters are on sms.dlq for anyone to inspect or replay.
    let bus = Bus::builder()
        .broker(&broker.bootstrap)
        .connect()
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let reader = bus
        .subscribe(&broker.names.dlq_topic)
        .group(&herald_testkit::unique_name("test-dlq-reader"))
        .handle(move |event: Event| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(event);
                Ok(())
            }
        })
        .await
        .unwrap();
    let mut dead = Vec::new();
    while dead.len() < ids.len() {
        let event = tokio::time::timeout(PATIENCE, rx.recv())
            .await
            .expect("dead letters did not arrive in time")
            .unwrap();
        assert_eq!(event.header_str(HEADER_DLQ_ATTEMPTS), Some("3"));
        assert_eq!(
            event.header_str(HEADER_DLQ_GROUP),
            Some(broker.names.sms_group.as_str())
        );
        dead.push(event.id.to_string());
    }
    dead.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(dead, want);
    reader.shutdown().await.unwrap();
    bus.close().await;

    assert!(terminate(&mut web.child).await.success());
    assert!(terminate(&mut sms).await.success());
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_broker_does_not_store_gets_503() {
    if herald_testkit::skip_on_external(
        "a_request_the_broker_does_not_store_gets_503",
        "stops the broker while the notification service runs",
    ) {
        return;
    }
    let broker = start_broker().await;
    let web = start_notification_service(&broker, &["--publish-timeout-ms", "1000"]).await;
    broker.shutdown().await;

    let (status, body) = http(
        web.addr,
        "POST",
        "/notifications",
        Some(json!({"to": "+4412345", "text": "nobody stores this"})),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("did not store"),
        "{body}"
    );
    // The id comes back too, so a caller can look the request up should it have been stored.
    let id = body["id"].as_str().unwrap();
    let (status, _) = get(web.addr, id).await;
    assert_eq!(status, 404);
}
