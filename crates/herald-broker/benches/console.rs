//! How long the web console's first page takes to be served by a broker holding 1,000 topics
//! and 100 consumer groups: the page itself and the three API calls it makes to fill in
//! (`/api/v1/broker`, `/api/v1/history`, `/api/v1/groups`), and the topic list. Run with
//! `cargo bench -p herald-broker --bench console`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use herald_broker::{Broker, BrokerConfig};

/// Topics and groups the broker holds while measured.
const TOPICS: usize = 1_000;
const GROUPS: usize = 100;

/// One HTTP/1.1 request over a fresh connection; returns the status and body.
fn request(addr: SocketAddr, method: &str, path: &str, headers: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n{headers}\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (addr, _broker) = runtime.block_on(async {
        let broker = Arc::new(
            Broker::start(BrokerConfig {
                data_dir: dir.path().to_path_buf(),
                kafka_addr: "127.0.0.1:0".parse().unwrap(),
                ..Default::default()
            })
            .await
            .unwrap(),
        );
        let listener = herald_broker::http::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(herald_broker::http::serve(
            listener,
            broker.clone(),
            std::future::pending(),
        ));
        (addr, broker)
    });
    let (_, csrf) = request(addr, "GET", "/api/v1/csrf", "", "");
    let csrf: serde_json::Value = serde_json::from_str(&csrf).unwrap();
    let header = format!("x-csrf-token: {}\r\n", csrf["token"].as_str().unwrap());
    for topic in 0..TOPICS {
        let body = format!(r#"{{"name": "topic-{topic:04}", "partitions": 1}}"#);
        let (status, answer) = request(addr, "POST", "/api/v1/topics", &header, &body);
        assert_eq!(status, 201, "{answer}");
    }
    // A reset from outside creates the group with a committed offset, as a stopped consumer
    // group would have.
    for group in 0..GROUPS {
        let body =
            format!(r#"{{"topic": "topic-{group:04}", "to": "earliest", "dry_run": false}}"#);
        let path = format!("/api/v1/groups/group-{group}/reset-offsets");
        let (status, answer) = request(addr, "POST", &path, &header, &body);
        assert_eq!(status, 200, "{answer}");
    }

    let mut console = c.benchmark_group("console_1000_topics_100_groups");
    console.sample_size(20);
    console.measurement_time(Duration::from_secs(10));
    console.bench_function("overview_page_and_its_api_calls", |b| {
        b.iter(|| {
            for path in ["/", "/api/v1/broker", "/api/v1/history", "/api/v1/groups"] {
                let (status, _) = request(addr, "GET", path, "", "");
                assert_eq!(status, 200);
            }
        });
    });
    console.bench_function("topics_list", |b| {
        b.iter(|| {
            let (status, body) = request(addr, "GET", "/api/v1/topics", "", "");
            assert_eq!(status, 200);
            assert!(body.len() > TOPICS * 50);
        });
    });
    console.bench_function("metrics", |b| {
        b.iter(|| {
            let (status, _) = request(addr, "GET", "/metrics", "", "");
            assert_eq!(status, 200);
        });
    });
    console.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
