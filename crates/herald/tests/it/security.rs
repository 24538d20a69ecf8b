//! The SDK's secured transports: `direct+tls://` with certificates made here, a group key and
//! topic keys from files, and `broker+sasl://` against an in-process broker with a SASL
//! listener.

use std::net::SocketAddr;
use std::path::Path;

use herald::{Bus, ConnectError, Event, PublishError};
use herald_broker::auth::{Mechanism, UserStore};
use herald_broker::{Broker, BrokerConfig};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use crate::support::{forward, recv, text, topic};

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// `ca.pem` signs `a` and `b`; `other-ca.pem` signs `rogue`.
fn pki(dir: &Path) {
    let ca = |name: &str| {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        (Issuer::new(params, key), pem)
    };
    let (group, group_pem) = ca("group CA");
    let (other, other_pem) = ca("other CA");
    std::fs::write(dir.join("ca.pem"), group_pem).unwrap();
    std::fs::write(dir.join("other-ca.pem"), other_pem).unwrap();
    for (name, issuer) in [("a", &group), ("b", &group), ("rogue", &other)] {
        let params = CertificateParams::new(vec![format!("{name}.herald")]).unwrap();
        let key = KeyPair::generate().unwrap();
        let certificate = params.signed_by(&key, issuer).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), certificate.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}

fn tls_query(dir: &Path, who: &str) -> String {
    let p = |f: String| dir.join(f).display().to_string();
    format!(
        "ca={}&cert={}&key={}",
        p("ca.pem".into()),
        p(format!("{who}.pem")),
        p(format!("{who}.key"))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_over_tls_round_trips_and_refuses_a_foreign_certificate() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let consumer = Bus::connect(&format!("direct+tls://?{}", tls_query(dir.path(), "a")))
        .await
        .unwrap();
    let t = topic("tls");
    let (sub, mut rx) = forward(consumer.subscribe(&t).bind(loopback())).await;
    let addr = sub.local_addr().unwrap();

    let producer = Bus::connect(&format!(
        "direct+tls://{addr}?{}",
        tls_query(dir.path(), "b")
    ))
    .await
    .unwrap();
    let receipt = producer.publish(&t, Event::new("over tls")).await.unwrap();
    assert_eq!(receipt.kind(), "handled");
    assert_eq!(text(&recv(&mut rx).await.payload), "over tls");

    // A certificate from another CA, no certificate, or no TLS: never handled.
    let other_ca = dir.path().join("other-ca.pem").display().to_string();
    for url in [
        format!(
            "direct+tls://{addr}?{}&publish_timeout_ms=300",
            tls_query(dir.path(), "rogue")
                .replace(&dir.path().join("ca.pem").display().to_string(), &other_ca)
        ),
        format!(
            "direct+tls://{addr}?ca={}&publish_timeout_ms=300",
            dir.path().join("ca.pem").display()
        ),
        format!("direct://{addr}?publish_timeout_ms=300"),
    ] {
        let refused = Bus::connect(&url).await.unwrap();
        let err = refused.publish(&t, Event::new("no")).await.unwrap_err();
        assert!(
            matches!(
                err,
                PublishError::NoConsumer { .. } | PublishError::Timeout { .. }
            ),
            "{url}: {err}"
        );
    }
    assert_eq!(sub.shutdown().await.unwrap().handled, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_key_and_a_topic_key_come_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let (right, wrong) = (dir.path().join("right"), dir.path().join("wrong"));
    std::fs::write(&right, format!("{}\n", "5a".repeat(32))).unwrap();
    std::fs::write(&wrong, "a5".repeat(32)).unwrap();
    let t = topic("keyed");

    let consumer = Bus::connect(&format!("direct://?group_key_file={}", right.display()))
        .await
        .unwrap();
    let (sub, mut rx) = forward(consumer.subscribe(&t).bind(loopback())).await;
    let addr = sub.local_addr().unwrap();
    let producer = Bus::connect(&format!(
        "direct://{addr}?group_key_file={}",
        right.display()
    ))
    .await
    .unwrap();
    producer.publish(&t, Event::new("keyed")).await.unwrap();
    assert_eq!(text(&recv(&mut rx).await.payload), "keyed");
    let intruder = Bus::connect(&format!(
        "direct://{addr}?group_key_file={}&publish_timeout_ms=300",
        wrong.display()
    ))
    .await
    .unwrap();
    assert!(intruder.publish(&t, Event::new("no")).await.is_err());
    assert_eq!(sub.shutdown().await.unwrap().handled, 1);

    // Datagrams sealed and encrypted with the topic key.
    let query = format!("topic_key_file.{t}={}&encrypt=true", right.display());
    let receiver = Bus::connect(&format!("datagram://?{query}")).await.unwrap();
    let (sub, mut rx) = forward(receiver.subscribe(&t).bind(loopback())).await;
    let addr = sub.local_addr().unwrap();
    let sender = Bus::connect(&format!("datagram://{addr}?{query}"))
        .await
        .unwrap();
    for i in 0..5 {
        sender
            .publish(&t, Event::new(format!("d{i}")))
            .await
            .unwrap();
        assert_eq!(text(&recv(&mut rx).await.payload), format!("d{i}"));
    }
    sub.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_security_options_are_refused_with_their_name() {
    let cases = [
        ("direct://?ca=/nowhere.pem", "ca"),
        ("direct+tls://", "ca"),
        ("direct+tls://?ca=/nowhere.pem", "cert"),
        ("direct://?group_key_file=/nowhere", "group_key_file"),
        ("datagram://?topic_key_file=/nowhere", "topic_key_file"),
        ("datagram://?encrypt=maybe", "encrypt"),
        (
            "broker+sasl://alice@127.0.0.1:1?password_file=/nowhere",
            "password_file",
        ),
    ];
    for (url, option) in cases {
        match Bus::connect(url).await {
            Err(ConnectError::BadOption { name, .. }) => assert_eq!(name, option, "{url}"),
            other => panic!("{url}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_sasl_urls_authenticate_with_a_password_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    UserStore::open(&data)
        .unwrap()
        .set_password("alice", "alice-pw", &[Mechanism::Sha512], 4096)
        .unwrap();
    let broker = Broker::start(BrokerConfig {
        data_dir: data,
        listeners: Some("SASL_PLAINTEXT://127.0.0.1:0".into()),
        sasl_enabled_mechanisms: "SCRAM-SHA-512".into(),
        super_users: "User:alice".into(),
        ..BrokerConfig::default()
    })
    .await
    .unwrap();
    let addr = broker.kafka_addr();
    let (good, bad) = (dir.path().join("pw"), dir.path().join("bad-pw"));
    std::fs::write(&good, "alice-pw\n").unwrap();
    std::fs::write(&bad, "guess\n").unwrap();

    let bus = Bus::connect(&format!(
        "broker+sasl://alice@{addr}?mechanism=SCRAM-SHA-512&password_file={}",
        good.display()
    ))
    .await
    .unwrap();
    let t = topic("sasl");
    let receipt = bus.publish(&t, Event::new("authenticated")).await.unwrap();
    assert_eq!(receipt.kind(), "stored");

    let refused = Bus::connect(&format!(
        "broker+sasl://alice@{addr}?password_file={}&connect_timeout_ms=2000",
        bad.display()
    ))
    .await;
    assert!(refused.is_err(), "a wrong password connected");
    bus.close().await;
    drop(broker);
}
