//! The HTTP admin API (`/api/v1`) and the web console of a real `herald serve`: every endpoint
//! with good and bad input, the message browser's read-only guarantees, and the console driven
//! in headless Chromium (through chromedriver) while kcat and a consumer group use the broker.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use serde_json::{Value, json};

use crate::support::ServeProcess;

/// How long a condition polled in these tests may take to hold.
const DEADLINE: Duration = Duration::from_secs(30);

/// An HTTP answer: status and body.
struct Answer {
    status: u16,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {:?}", self.body))
    }
}

/// One HTTP/1.1 request over a fresh connection.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    // A server may answer 413 and close before reading a large body; that is fine.
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Answer {
        status,
        body: if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// The admin API of one broker, with its CSRF token.
struct Api {
    addr: SocketAddr,
    csrf: String,
}

impl Api {
    fn new(addr: SocketAddr) -> Api {
        let answer = request(addr, "GET", "/api/v1/csrf", &[], b"");
        assert_eq!(answer.status, 200, "{}", answer.body);
        let csrf = answer.json()["token"].as_str().unwrap().to_string();
        Api { addr, csrf }
    }

    fn get(&self, path: &str) -> Answer {
        request(self.addr, "GET", path, &[], b"")
    }

    fn send(&self, method: &str, path: &str, body: Value) -> Answer {
        let bytes = serde_json::to_vec(&body).unwrap();
        request(
            self.addr,
            method,
            path,
            &[
                ("x-csrf-token", &self.csrf),
                ("content-type", "application/json"),
            ],
            &bytes,
        )
    }
}

#[test]
fn api_serves_every_endpoint_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(&dir.path().join("data"));
    let api = Api::new(serve.http_addr);

    let broker = api.get("/api/v1/broker");
    assert_eq!(broker.status, 200, "{}", broker.body);
    let broker = broker.json();
    assert_eq!(broker["status"], "ok");
    assert_eq!(broker["listeners"][0]["addr"], serve.kafka_addr.to_string());
    assert!(api.get("/api/v1/history").json()["samples"].is_array());

    // Topics: create, list, describe, alter, grow.
    let created = api.send(
        "POST",
        "/api/v1/topics",
        json!({ "name": "orders", "partitions": 2 }),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.json()["partitions"].as_array().unwrap().len(), 2);
    let again = api.send("POST", "/api/v1/topics", json!({ "name": "orders" }));
    assert_eq!(again.status, 409);
    assert_eq!(again.json()["kafka_error"], "TOPIC_ALREADY_EXISTS");
    let bad_name = api.send("POST", "/api/v1/topics", json!({ "name": "a/b" }));
    assert_eq!(bad_name.status, 400);
    assert_eq!(bad_name.json()["kafka_error"], "INVALID_TOPIC_EXCEPTION");
    let list = api.get("/api/v1/topics").json();
    assert_eq!(list["topics"][0]["name"], "orders");
    assert_eq!(list["topics"][0]["partitions"], 2);
    for rate in [
        "records_in_per_s",
        "records_out_per_s",
        "bytes_in_per_s",
        "bytes_out_per_s",
    ] {
        assert!(list["topics"][0][rate].is_number(), "{rate} in {list}");
    }
    let altered = api.send(
        "PATCH",
        "/api/v1/topics/orders/configs",
        json!({ "set": { "retention.ms": "3600000" } }),
    );
    assert_eq!(altered.status, 200, "{}", altered.body);
    let retention = altered.json()["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "retention.ms")
        .cloned()
        .unwrap();
    assert_eq!(retention["value"], "3600000");
    assert_eq!(retention["overridden"], true);
    let bad_config = api.send(
        "PATCH",
        "/api/v1/topics/orders/configs",
        json!({ "set": { "retention.ms": "soon" } }),
    );
    assert_eq!(bad_config.status, 400);
    assert_eq!(bad_config.json()["kafka_error"], "INVALID_CONFIG");
    let grown = api.send(
        "POST",
        "/api/v1/topics/orders/partitions",
        json!({ "count": 3 }),
    );
    assert_eq!(grown.status, 200, "{}", grown.body);
    assert_eq!(grown.json()["partitions"].as_array().unwrap().len(), 3);

    // Messages: produce with key and headers, then read them back as text, JSON and hex.
    let script = "<script>alert('x')</script>";
    let produced = api.send(
        "POST",
        "/api/v1/topics/orders/partitions/0/messages",
        json!({ "key": "k1", "value": script, "headers": { "source": "test" } }),
    );
    assert_eq!(produced.status, 201, "{}", produced.body);
    assert_eq!(produced.json()["offset"], 0);
    for (key, value) in [("k2", "{\"total\":3}"), ("k1", "second")] {
        let answer = api.send(
            "POST",
            "/api/v1/topics/orders/partitions/0/messages",
            json!({ "key": key, "value": value }),
        );
        assert_eq!(answer.status, 201, "{}", answer.body);
    }
    let window = api.get("/api/v1/topics/orders/partitions/0/messages?offset=0");
    assert_eq!(window.status, 200, "{}", window.body);
    let window = window.json();
    let messages = window["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3);
    // The script is data: shown as the same text, never as markup.
    assert_eq!(messages[0]["value"]["text"], script);
    assert_eq!(messages[0]["value"]["encoding"], "text");
    assert_eq!(messages[0]["headers"][0]["name"], "source");
    assert_eq!(messages[0]["headers"][0]["value"]["text"], "test");
    assert_eq!(messages[1]["value"]["encoding"], "json");
    assert_eq!(messages[1]["value"]["text"], "{\n  \"total\": 3\n}");
    assert_eq!(window["next_offset"], 3);
    let by_key = api
        .get("/api/v1/topics/orders/partitions/0/messages?key=k1")
        .json();
    let offsets: Vec<_> = by_key["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_i64().unwrap())
        .collect();
    assert_eq!(offsets, [0, 2]);
    let newest = api
        .get("/api/v1/topics/orders/partitions/0/messages?newest=true&limit=2")
        .json();
    let offsets: Vec<_> = newest["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_i64().unwrap())
        .collect();
    assert_eq!(offsets, [2, 1]);
    let hex = api
        .get("/api/v1/topics/orders/partitions/0/messages?offset=2&format=hex")
        .json();
    assert_eq!(hex["messages"][0]["value"]["text"], "7365636f6e64");
    let from_time = api
        .get("/api/v1/topics/orders/partitions/0/messages?timestamp_ms=0&limit=1")
        .json();
    assert_eq!(from_time["messages"][0]["offset"], 0);
    let hex_produce = api.send(
        "POST",
        "/api/v1/topics/orders/partitions/1/messages",
        json!({ "value": "ff00", "encoding": "hex" }),
    );
    assert_eq!(hex_produce.status, 201, "{}", hex_produce.body);
    let binary = api
        .get("/api/v1/topics/orders/partitions/1/messages")
        .json();
    assert_eq!(binary["messages"][0]["value"]["encoding"], "hex");
    assert_eq!(binary["messages"][0]["value"]["text"], "ff00");

    // Bad input: unknown topic or partition 404, bad offsets 400, oversize 413, no token 403.
    for path in [
        "/api/v1/topics/nope",
        "/api/v1/topics/nope/partitions/0/messages",
        "/api/v1/topics/orders/partitions/9/messages",
    ] {
        let answer = api.get(path);
        assert_eq!(answer.status, 404, "{path}: {}", answer.body);
        assert_eq!(answer.json()["kafka_error"], "UNKNOWN_TOPIC_OR_PARTITION");
    }
    let not_number = api.get("/api/v1/topics/orders/partitions/0/messages?offset=abc");
    assert_eq!(not_number.status, 400, "{}", not_number.body);
    assert!(not_number.json()["error"].is_string());
    let past_end = api.get("/api/v1/topics/orders/partitions/0/messages?offset=99");
    assert_eq!(past_end.status, 400);
    assert_eq!(past_end.json()["kafka_error"], "OFFSET_OUT_OF_RANGE");
    let bad_partition = api.get("/api/v1/topics/orders/partitions/x/messages");
    assert_eq!(bad_partition.status, 400);
    let big = "x".repeat(2 * 1024 * 1024);
    let oversize = api.send(
        "POST",
        "/api/v1/topics/orders/partitions/0/messages",
        json!({ "value": big }),
    );
    assert_eq!(oversize.status, 413, "{}", oversize.body);
    let bad_json = request(
        serve.http_addr,
        "POST",
        "/api/v1/topics",
        &[("x-csrf-token", &api.csrf)],
        b"{nope",
    );
    assert_eq!(bad_json.status, 400);
    let no_token = request(
        serve.http_addr,
        "POST",
        "/api/v1/topics",
        &[],
        br#"{"name":"sneaky"}"#,
    );
    assert_eq!(no_token.status, 403, "{}", no_token.body);
    assert_eq!(api.get("/api/v1/topics/sneaky").status, 404);
    let unknown = api.get("/api/v1/nothing-here");
    assert_eq!(unknown.status, 404);
    assert!(unknown.json()["error"].is_string());

    // Delete records, then the topic (only with its name repeated).
    let deleted = api.send(
        "POST",
        "/api/v1/topics/orders/partitions/0/delete-records",
        json!({ "before_offset": 1 }),
    );
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(deleted.json()["log_start"], 1);
    let too_far = api.send(
        "POST",
        "/api/v1/topics/orders/partitions/0/delete-records",
        json!({ "before_offset": 50 }),
    );
    assert_eq!(too_far.status, 400);
    let unconfirmed = api.send("DELETE", "/api/v1/topics/orders", json!(null));
    assert_eq!(unconfirmed.status, 400);
    let mistyped = api.send("DELETE", "/api/v1/topics/orders?confirm=order", json!(null));
    assert_eq!(mistyped.status, 400);
    let gone = api.send(
        "DELETE",
        "/api/v1/topics/orders?confirm=orders",
        json!(null),
    );
    assert_eq!(gone.status, 204, "{}", gone.body);
    assert_eq!(api.get("/api/v1/topics/orders").status, 404);

    // Bench results: the matrix JSON is rendered by the report's code; other JSON is refused.
    assert!(api.get("/api/v1/bench").json()["uploaded_ms"].is_null());
    assert_eq!(api.get("/bench/report").status, 404);
    let matrix = herald_bench::score::reference().unwrap();
    let uploaded = api.send(
        "POST",
        "/api/v1/bench",
        serde_json::to_value(&matrix).unwrap(),
    );
    assert_eq!(uploaded.status, 201, "{}", uploaded.body);
    let report = api.get("/bench/report");
    assert_eq!(report.status, 200);
    assert!(report.body.contains("id=\"ranking\""), "{}", report.body);
    let not_matrix = api.send("POST", "/api/v1/bench", json!({ "rows": "no" }));
    assert_eq!(not_matrix.status, 400, "{}", not_matrix.body);
    assert!(api.get("/api/v1/bench").json()["uploaded_ms"].is_i64());

    // Groups: none yet; unknown ones are 404.
    assert_eq!(api.get("/api/v1/groups").json()["groups"], json!([]));
    assert_eq!(api.get("/api/v1/groups/nobody").status, 404);
    let unknown_group = api.send("DELETE", "/api/v1/groups/nobody", json!(null));
    assert_eq!(unknown_group.status, 404);
    assert_eq!(unknown_group.json()["kafka_error"], "GROUP_ID_NOT_FOUND");

    // The console's pages are served, with the CSRF token and names escaped.
    for path in [
        "/",
        "/topics",
        "/groups",
        "/groups/g",
        "/topics/%3Cb%3E",
        "/bench",
    ] {
        let page = api.get(path);
        assert_eq!(page.status, 200, "{path}");
        assert!(page.body.contains(&api.csrf), "{path}");
    }
    let named = api.get("/topics/%3Cb%3E").body;
    assert!(named.contains("<code>&lt;b&gt;</code>"), "{named}");
    assert!(!named.contains("<code><b>"), "{named}");
    assert!(api.get("/assets/console.js").body.contains("textContent"));
}

#[test]
fn openapi_document_matches_the_served_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(&dir.path().join("data"));
    let api = Api::new(serve.http_addr);
    let document = api.get("/api/v1/openapi.json").json();
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().unwrap();
    let mut documented = 0;
    for (path, item) in paths {
        let concrete = path
            .replace("{topic}", "t")
            .replace("{partition}", "0")
            .replace("{group}", "g");
        for method in item.as_object().unwrap().keys() {
            documented += 1;
            let answer = match method.as_str() {
                "get" => api.get(&concrete),
                other => api.send(&other.to_ascii_uppercase(), &concrete, json!({})),
            };
            // Served means neither the unknown-endpoint answer nor 405.
            assert_ne!(answer.status, 405, "{method} {path}");
            assert!(
                !answer.body.contains("no such endpoint"),
                "{method} {path}: {}",
                answer.body
            );
        }
    }
    assert_eq!(documented, herald_broker::api::ENDPOINTS.len());
}

/// chromedriver on a free port, killed when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_driver() -> (Driver, u16) {
    let port = crate::support::free_addr().port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is not installed: run scripts/install-test-deps (Debian: chromium chromium-driver)");
    let driver = Driver(child);
    let until = Instant::now() + DEADLINE;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "chromedriver did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    (driver, port)
}

async fn browser(port: u16, profile: &std::path::Path) -> fantoccini::Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--window-size=1280,1600",
                format!("--user-data-dir={}", profile.display()),
            ]
        }),
    );
    ClientBuilder::new(HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .unwrap()
}

/// Polls the text of the element `css` until `check` accepts it.
async fn wait_text(client: &fantoccini::Client, css: &str, check: impl Fn(&str) -> bool) -> String {
    let until = Instant::now() + DEADLINE;
    loop {
        if let Ok(element) = client.find(Locator::Css(css)).await {
            if let Ok(text) = element.text().await {
                if check(&text) {
                    return text;
                }
            }
        }
        assert!(Instant::now() < until, "{css} never matched");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Saves a screenshot of the page at 1280 px and at a phone's 390 px.
async fn screenshots(client: &fantoccini::Client, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    for (width, height) in [(1280, 1600), (390, 1600)] {
        let before = wait_text(client, "#status", |_| true).await;
        client.set_window_size(width, height).await.unwrap();
        // The next poll redraws the page, charts included, at the new width.
        wait_text(client, "#status", |now| now != before).await;
        let png = client.screenshot().await.unwrap();
        std::fs::write(dir.join(format!("{name}-{width}.png")), png).unwrap();
    }
    client.set_window_size(1280, 1600).await.unwrap();
}

async fn fill(client: &fantoccini::Client, css: &str, text: &str) {
    let input = client.find(Locator::Css(css)).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys(text).await.unwrap();
}

async fn click(client: &fantoccini::Client, css: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

fn kcat_produce(bootstrap: &str, topic: &str, lines: &[&str]) {
    let mut child = Command::new("kcat")
        .args(["-b", bootstrap, "-P", "-t", topic, "-p", "0", "-K", ":"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat is not installed: run scripts/install-test-deps");
    let mut stdin = child.stdin.take().unwrap();
    for line in lines {
        writeln!(stdin, "{line}").unwrap();
    }
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "kcat failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Reads `topic` to its end in group `group`, commits, and leaves the group.
fn consume_all(bootstrap: &str, group: &str, topic: &str, count: usize) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("session.timeout.ms", "6000")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let until = Instant::now() + DEADLINE;
    let mut seen = 0;
    while seen < count {
        assert!(Instant::now() < until, "consumed {seen} of {count}");
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            message.unwrap();
            seen += 1;
        }
    }
    consumer.commit_consumer_state(CommitMode::Sync).unwrap();
    consumer.unsubscribe();
    drop(consumer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_creates_a_topic_shows_kcat_messages_and_resets_a_group_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(&dir.path().join("data"));
    let base = format!("http://{}", serve.http_addr);
    let bootstrap = serve.kafka_addr.to_string();
    let profile = tempfile::tempdir().unwrap();
    let (_driver, port) = start_driver();
    let client = browser(port, profile.path()).await;

    // Create a topic in the UI; the list shows it without a reload.
    client.goto(&format!("{base}/topics")).await.unwrap();
    fill(&client, "#create-topic input[name=name]", "payments").await;
    click(&client, "#create-topic button").await;
    wait_text(&client, "#create-message", |t| {
        t.contains("created payments")
    })
    .await;
    wait_text(&client, "#topics tbody", |t| t.contains("payments")).await;
    screenshots(&client, "topics").await;

    // Produce with kcat, a value with markup among them; the browser shows it as text.
    let script = "<img src=x onerror=alert(1)>";
    let value_json = "{\"amount\":42}";
    let lines = [
        format!("alice:{value_json}"),
        format!("bob:{script}"),
        "alice:paid".to_string(),
    ];
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    kcat_produce(&bootstrap, "payments", &lines);
    client
        .goto(&format!("{base}/topics/payments"))
        .await
        .unwrap();
    wait_text(&client, "#partitions tbody", |t| t.contains('3')).await;
    click(&client, "#browse button[type=submit]").await;
    wait_text(&client, "#messages tbody", |t| t.contains("paid")).await;
    let value = client
        .find(Locator::Css("#messages tr[data-offset='1'] td.value pre"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(value, script, "the value is shown as text");
    let injected = client
        .find_all(Locator::Css("#messages img"))
        .await
        .unwrap();
    assert!(
        injected.is_empty(),
        "no markup from a message reached the page"
    );
    let pretty = client
        .find(Locator::Css("#messages tr[data-offset='0'] td.value pre"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(pretty, "{\n  \"amount\": 42\n}");
    // Filter by key.
    fill(&client, "#browse input[name=key]", "alice").await;
    click(&client, "#browse button[type=submit]").await;
    wait_text(&client, "#browse-message", |t| t.starts_with("2 shown")).await;
    screenshots(&client, "topic").await;

    // Produce a test message from the console; the partition table follows.
    fill(&client, "#produce textarea[name=value]", "from the console").await;
    click(&client, "#produce button[type=submit]").await;
    wait_text(&client, "#produce-message", |t| t.contains("offset 3")).await;

    // A group placed at the start shows the whole topic as lag; a consumer of it then reads
    // everything and the open page follows its lag down to 0 without a reload.
    let api = Api::new(serve.http_addr);
    let placed = api.send(
        "POST",
        "/api/v1/groups/billing/reset-offsets",
        json!({ "topic": "payments", "to": "earliest", "dry_run": false }),
    );
    assert_eq!(placed.status, 200, "{}", placed.body);
    client
        .goto(&format!("{base}/groups/billing"))
        .await
        .unwrap();
    wait_text(&client, "#group-lag", |t| t == "4").await;
    let consumer_bootstrap = bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        consume_all(&consumer_bootstrap, "billing", "payments", 4);
    })
    .await
    .unwrap();
    wait_text(&client, "#group-lag", |t| t == "0").await;
    wait_text(&client, "#offsets tbody", |t| t.contains("payments")).await;
    wait_text(&client, "#group-state", |t| t == "Empty").await;

    // Reset to earliest: the preview shows what changes, applying it brings the lag back.
    fill(&client, "#reset input[name=topic]", "payments").await;
    click(&client, "#reset button[type=submit]").await;
    wait_text(&client, "#reset-message", |t| t.contains("preview")).await;
    let preview = wait_text(&client, "#reset-preview tbody", |t| t.contains("payments")).await;
    assert!(preview.contains('4'), "{preview}");
    assert_eq!(
        wait_text(&client, "#group-lag", |_| true).await,
        "0",
        "a preview changes nothing"
    );
    click(&client, "#apply-reset").await;
    wait_text(&client, "#reset-message", |t| t == "offsets reset").await;
    wait_text(&client, "#group-lag", |t| t == "4").await;
    screenshots(&client, "group").await;

    // The overview shows the group with its lag.
    client.goto(&format!("{base}/")).await.unwrap();
    wait_text(&client, "#groups tbody", |t| {
        t.contains("billing") && t.contains('4')
    })
    .await;
    screenshots(&client, "overview").await;

    // The trade-off table: uploaded results, ranked in the report's own page.
    let matrix = herald_bench::score::reference().unwrap();
    let uploaded = api.send(
        "POST",
        "/api/v1/bench",
        serde_json::to_value(&matrix).unwrap(),
    );
    assert_eq!(uploaded.status, 201, "{}", uploaded.body);
    client.goto(&format!("{base}/bench")).await.unwrap();
    let until = Instant::now() + DEADLINE;
    loop {
        let frame = client.find(Locator::Id("bench-report")).await.unwrap();
        if frame.attr("src").await.unwrap().is_some() {
            break;
        }
        assert!(Instant::now() < until, "the report never loaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client.enter_frame(0).await.unwrap();
    let until = Instant::now() + DEADLINE;
    while client
        .find_all(Locator::Css("#ranking li"))
        .await
        .unwrap()
        .is_empty()
    {
        assert!(Instant::now() < until, "the report ranked nothing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client.enter_parent_frame().await.unwrap();
    screenshots(&client, "bench").await;

    // The Peers page goes live and says what it sees: members, none yet, or why it cannot look.
    client.goto(&format!("{base}/peers")).await.unwrap();
    wait_text(&client, "#status", |t| t.starts_with("live")).await;
    let shown = client
        .find(Locator::Css("main"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let rows = client
        .find_all(Locator::Css("#peers tbody tr"))
        .await
        .unwrap();
    assert!(
        !rows.is_empty() || shown.contains("No members seen yet") || shown.contains("Not browsing"),
        "{shown}"
    );
    screenshots(&client, "peers").await;
    client.close().await.unwrap();

    // /metrics shows the same lag, per-topic traffic, latency and connections by listener.
    let metrics = crate::support::http_get(serve.http_addr, "/metrics")
        .unwrap()
        .body;
    for line in [
        "herald_consumergroup_lag{consumergroup=\"billing\",topic=\"payments\",partition=\"0\"} 4\n",
        "herald_consumergroup_current_offset{consumergroup=\"billing\",topic=\"payments\",partition=\"0\"} 0\n",
        "herald_topic_partition_current_offset{topic=\"payments\",partition=\"0\"} 4\n",
        "herald_topic_records_in_total{topic=\"payments\"} 4\n",
        "herald_topic_records_out_total{topic=\"payments\"} ",
        "herald_request_duration_seconds_count{api=\"Produce\"} ",
        "herald_request_duration_seconds_count{api=\"Fetch\"} ",
        "herald_listener_connections_accepted_total{listener=\"PLAINTEXT\"} ",
        "herald_topics 1\n",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    // Every metric the Grafana dashboard queries is one the broker serves.
    let dashboard = include_str!("../../../../docs/grafana-dashboard.json");
    let names = regex_lite_names(dashboard);
    assert!(names.len() > 10, "{names:?}");
    for name in names {
        assert!(
            metrics.contains(&name),
            "the dashboard uses {name}, not in /metrics"
        );
    }
}

/// The `herald_*` metric names in `text`.
fn regex_lite_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("herald_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn with_an_admin_token_the_console_and_the_api_need_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("herald.toml");
    std::fs::write(&config, "http_admin_token = \"console-t0ken\"\n").unwrap();
    let serve = ServeProcess::start_with(
        &dir.path().join("data"),
        crate::support::free_addr(),
        &["--config", config.to_str().unwrap()],
    );
    for path in [
        "/",
        "/topics",
        "/api/v1/topics",
        "/api/v1/csrf",
        "/assets/console.js",
    ] {
        let answer = request(serve.http_addr, "GET", path, &[], b"");
        assert_eq!(answer.status, 401, "{path}");
    }
    let bearer = [("authorization", "Bearer console-t0ken")];
    let csrf = request(serve.http_addr, "GET", "/api/v1/csrf", &bearer, b"");
    assert_eq!(csrf.status, 200, "{}", csrf.body);
    let token = csrf.json()["token"].as_str().unwrap().to_string();
    let created = request(
        serve.http_addr,
        "POST",
        "/api/v1/topics",
        &[bearer[0], ("x-csrf-token", &token)],
        br#"{"name":"guarded"}"#,
    );
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(
        request(serve.http_addr, "GET", "/", &bearer, b"").status,
        200
    );
    // Health stays open for orchestrators.
    assert_eq!(
        request(serve.http_addr, "GET", "/health", &[], b"").status,
        200
    );
}

#[test]
fn bench_results_from_a_file_are_the_trade_off_table_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("matrix.json");
    let matrix = herald_bench::score::reference().unwrap();
    std::fs::write(&results, serde_json::to_vec(&matrix).unwrap()).unwrap();
    let config = dir.path().join("herald.toml");
    std::fs::write(
        &config,
        format!("bench_results_path = {:?}\n", results.to_str().unwrap()),
    )
    .unwrap();
    let serve = ServeProcess::start_with(
        &dir.path().join("data"),
        crate::support::free_addr(),
        &["--config", config.to_str().unwrap()],
    );
    let api = Api::new(serve.http_addr);
    assert!(api.get("/api/v1/bench").json()["uploaded_ms"].is_i64());
    let report = api.get("/bench/report");
    assert_eq!(report.status, 200);
    assert!(report.body.contains("id=\"ranking\""));

    // A file that is not matrix results stops the start with one clear line.
    std::fs::write(&results, b"{}").unwrap();
    let output = crate::support::herald()
        .args(["serve", "--config", config.to_str().unwrap()])
        .arg("--data-dir")
        .arg(dir.path().join("other"))
        .args(["--kafka-addr", &crate::support::free_addr().to_string()])
        .args(["--http-addr", &crate::support::free_addr().to_string()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bench_results_path"), "{stderr}");
}

#[test]
fn peers_answer_not_browsing_when_peers_mdns_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start_with(
        &dir.path().join("data"),
        crate::support::free_addr(),
        &["--peers-mdns", "false"],
    );
    let api = Api::new(serve.http_addr);
    let answer = api.get("/api/v1/peers");
    assert_eq!(answer.status, 200, "{}", answer.body);
    let peers = answer.json();
    assert_eq!(peers["browsing"], false, "{peers}");
    assert!(
        peers["reason"].as_str().unwrap().contains("peers_mdns"),
        "{peers}"
    );
    assert_eq!(peers["peers"], json!([]));
    let page = api.get("/peers");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("data-page=\"peers\""), "{}", page.body);
    assert!(
        page.body
            .contains("<a href=\"/peers\" aria-current=\"page\">Peers</a>"),
        "{}",
        page.body
    );

    // By default the broker browses, unless mDNS cannot start, which it says.
    let other = ServeProcess::start(&dir.path().join("other"));
    let peers = Api::new(other.http_addr).get("/api/v1/peers").json();
    match peers["browsing"].as_bool() {
        Some(true) => assert!(peers["peers"].is_array(), "{peers}"),
        Some(false) => assert!(
            peers["reason"].as_str().unwrap().contains("mDNS"),
            "{peers}"
        ),
        None => panic!("no browsing flag: {peers}"),
    }
}
