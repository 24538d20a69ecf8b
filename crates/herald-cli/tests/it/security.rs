//! `herald serve` with TLS, SASL and ACLs, against clients nobody here wrote: kcat and Python's
//! confluent-kafka over SASL_SSL with SCRAM-SHA-512 and over mTLS, the failures a misconfigured
//! client meets, Kafka's admin APIs for ACLs and users, and `herald user`/`herald acl`/
//! `herald produce -X` around them. Certificates are made in the test with rcgen.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};

use crate::support::{ServeProcess, free_addr, herald, http_get, kafkajs_check};

/// A CA with `ca.pem`, a server certificate for localhost and 127.0.0.1, a client certificate
/// for alice, and `other-ca.pem` from a CA that signed nothing here.
fn pki(dir: &Path) {
    let (issuer, pem) = ca("Herald test CA");
    std::fs::write(dir.join("ca.pem"), pem).unwrap();
    std::fs::write(dir.join("other-ca.pem"), ca("Unrelated CA").1).unwrap();
    for (name, common_name) in [("server", "localhost"), ("alice", "alice")] {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        params.distinguished_name = rcgen::DistinguishedName::new();
        // Written O first, so the subject reads `CN=alice,O=Herald tests` (last RDN first).
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Herald tests");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let key = KeyPair::generate().unwrap();
        let certificate = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), certificate.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}

fn ca(name: &str) -> (Issuer<'static, KeyPair>, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let certificate = params.self_signed(&key).unwrap();
    (Issuer::new(params, key), certificate.pem())
}

/// Runs `herald` with `input` on stdin.
fn herald_with(args: &[&str], input: &str) -> Output {
    let mut child = herald()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

struct SecureBroker {
    serve: ServeProcess,
    sasl_ssl: SocketAddr,
    ssl: SocketAddr,
    pki: PathBuf,
    _dir: tempfile::TempDir,
}

/// A `herald serve` with SASL_SSL and SSL (client certificates required) listeners, users
/// alice and admin (a super user) made with `herald user`, and alice's ACLs with `herald acl`.
fn secure_broker() -> SecureBroker {
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = dir.path().join("pki");
    std::fs::create_dir(&pki_dir).unwrap();
    pki(&pki_dir);
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    for user in ["alice", "admin"] {
        ok(herald_with(
            &["user", "create", user, "--data-dir", data_arg],
            &format!("{user}-pw\n"),
        ));
    }
    let users = ok(herald_with(
        &["user", "list", "--data-dir", data_arg, "--output", "json"],
        "",
    ));
    assert!(
        users.contains("SCRAM-SHA-512") && users.contains("alice"),
        "{users}"
    );
    for args in [
        &["--topic", "events.", "--prefixed", "--operation", "all"][..],
        // The benches' warm-up topic.
        &[
            "--topic",
            "herald-bench-",
            "--prefixed",
            "--operation",
            "all",
        ][..],
        &["--group", "*", "--operation", "read"][..],
    ] {
        let mut command = vec![
            "acl",
            "add",
            "--allow",
            "User:alice",
            "--data-dir",
            data_arg,
        ];
        command.extend_from_slice(args);
        ok(herald_with(&command, ""));
    }
    let (sasl_ssl, ssl) = (free_addr(), free_addr());
    let config = dir.path().join("herald.toml");
    let path = |name: &str| pki_dir.join(name).display().to_string();
    std::fs::write(
        &config,
        format!(
            r#"
listeners = "SASL_SSL://{sasl_ssl},SSL://{ssl}"
ssl_certificate_path = "{}"
ssl_key_path = "{}"
ssl_client_ca_path = "{}"
ssl_client_auth = "required"
ssl_principal_mapping_rules = "RULE:^CN=([^,]+),.*$/$1/,DEFAULT"
sasl_enabled_mechanisms = "SCRAM-SHA-512,SCRAM-SHA-256,PLAIN"
super_users = "User:admin"
http_admin_token = "admin-t0ken"
http_basic_auth = true
http_metrics_auth = true
"#,
            path("server.pem"),
            path("server.key"),
            path("ca.pem")
        ),
    )
    .unwrap();
    let serve =
        ServeProcess::start_with(&data, free_addr(), &["--config", config.to_str().unwrap()]);
    SecureBroker {
        serve,
        sasl_ssl,
        ssl,
        pki: pki_dir,
        _dir: dir,
    }
}

impl SecureBroker {
    fn pki(&self, name: &str) -> String {
        self.pki.join(name).display().to_string()
    }

    /// kcat's `-X` options for SCRAM-SHA-512 over TLS as `user`.
    fn kcat_scram(&self, user: &str, password: &str) -> Vec<String> {
        [
            "-b".to_string(),
            self.sasl_ssl.to_string(),
            "-X".to_string(),
            "security.protocol=SASL_SSL".to_string(),
            "-X".to_string(),
            "sasl.mechanisms=SCRAM-SHA-512".to_string(),
            "-X".to_string(),
            format!("sasl.username={user}"),
            "-X".to_string(),
            format!("sasl.password={password}"),
            "-X".to_string(),
            format!("ssl.ca.location={}", self.pki("ca.pem")),
        ]
        .into()
    }

    fn kcat_mtls(&self) -> Vec<String> {
        [
            "-b".to_string(),
            self.ssl.to_string(),
            "-X".to_string(),
            "security.protocol=SSL".to_string(),
            "-X".to_string(),
            format!("ssl.ca.location={}", self.pki("ca.pem")),
            "-X".to_string(),
            format!("ssl.certificate.location={}", self.pki("alice.pem")),
            "-X".to_string(),
            format!("ssl.key.location={}", self.pki("alice.key")),
        ]
        .into()
    }
}

fn kcat(connection: &[String], args: &[&str], input: &str) -> Output {
    let mut child = Command::new("kcat")
        .args(connection)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat is installed by scripts/install-test-deps");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn kcat_over_sasl_ssl_scram_and_mtls_and_its_failures() {
    let broker = secure_broker();
    let lines: String = (0..50).map(|i| format!("v{i}\n")).collect();
    for (connection, topic) in [
        (broker.kcat_scram("alice", "alice-pw"), "events.kcat"),
        (broker.kcat_mtls(), "events.kcat-mtls"),
    ] {
        let produced = kcat(&connection, &["-P", "-t", topic], &lines);
        assert!(
            produced.status.success() && produced.stderr.is_empty(),
            "{}",
            broker.serve.log()
        );
        let read = ok(kcat(
            &connection,
            &["-C", "-t", topic, "-o", "beginning", "-e", "-f", "%s\n"],
            "",
        ));
        assert_eq!(read, lines, "{}", broker.serve.log());
    }
    // A wrong password: kcat says why and exits non-zero.
    let wrong = kcat(&broker.kcat_scram("alice", "guess"), &["-L", "-m", "5"], "");
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        stderr.contains("Authentication failed") || stderr.contains("SASL"),
        "{stderr}"
    );
    // A topic alice has no ACL for.
    let denied = kcat(
        &broker.kcat_scram("alice", "alice-pw"),
        &["-P", "-t", "payroll"],
        "x\n",
    );
    assert!(!denied.status.success() || !String::from_utf8_lossy(&denied.stderr).is_empty());
    // A plaintext client on the TLS port.
    let plaintext = kcat(
        &["-b".to_string(), broker.ssl.to_string()],
        &["-L", "-m", "5"],
        "",
    );
    assert!(!plaintext.status.success());
    // The broker logged the failures without the secret, and still serves.
    let log = broker.serve.log();
    assert!(log.contains("authentication failed"), "{log}");
    assert!(!log.contains("guess"), "a password reached the log:\n{log}");
    ok(kcat(
        &broker.kcat_scram("alice", "alice-pw"),
        &["-L", "-m", "5"],
        "",
    ));
}

#[test]
fn python_confluent_kafka_over_sasl_ssl_and_mtls_with_the_admin_apis() {
    let broker = secure_broker();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/security.py");
    let output = Command::new("python3")
        .arg(script)
        .args([
            &broker.sasl_ssl.to_string(),
            &broker.ssl.to_string(),
            broker.pki.to_str().unwrap(),
        ])
        .output()
        .expect("python3 is not installed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(
        output.status.code(),
        Some(3),
        "confluent-kafka is missing ({stdout})"
    );
    assert!(
        output.status.success(),
        "python security checks failed:\n{stdout}\n{stderr}\nbroker log:\n{}",
        broker.serve.log()
    );
    assert_eq!(stdout.trim(), "ok");
}

#[test]
fn kafka_python_a_client_without_librdkafka_over_sasl_ssl_and_mtls() {
    let broker = secure_broker();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/kafka_python_security.py"
    );
    let output = Command::new("python3")
        .arg(script)
        .args([
            &broker.sasl_ssl.to_string(),
            &broker.ssl.to_string(),
            broker.pki.to_str().unwrap(),
        ])
        .output()
        .expect("python3 is not installed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(
        output.status.code(),
        Some(3),
        "kafka-python is missing: scripts/install-test-deps installs it ({stdout})"
    );
    assert!(
        output.status.success(),
        "kafka-python checks failed:\n{stdout}\n{stderr}\nbroker log:\n{}",
        broker.serve.log()
    );
    assert_eq!(stdout.trim(), "ok");
}

#[test]
fn kafkajs_a_javascript_client_over_sasl_ssl_and_mtls() {
    let broker = secure_broker();
    kafkajs_check(
        "security.js",
        &[
            &broker.sasl_ssl.to_string(),
            &broker.ssl.to_string(),
            broker.pki.to_str().unwrap(),
        ],
        || broker.serve.log(),
    );
}

#[test]
fn herald_clients_take_librdkafka_security_settings_and_sighup_reloads_tls() {
    let mut broker = secure_broker();
    // The password in a file, not on the command line.
    let properties = broker.pki.join("client.properties");
    std::fs::write(
        &properties,
        format!(
            "# alice over SASL_SSL\nsecurity.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\nsasl.username=alice\nsasl.password=alice-pw\nssl.ca.location={}\n",
            broker.pki("ca.pem")
        ),
    )
    .unwrap();
    let bootstrap = broker.sasl_ssl.to_string();
    let common = [
        "--bootstrap",
        bootstrap.as_str(),
        "--client-config",
        properties.to_str().unwrap(),
    ];
    let mut create = vec!["topic", "create", "events.cli"];
    create.extend_from_slice(&common);
    ok(herald_with(&create, ""));
    let mut produce = vec!["produce", "events.cli"];
    produce.extend_from_slice(&common);
    ok(herald_with(&produce, "one\ntwo\n"));
    let mut consume = vec![
        "consume",
        "events.cli",
        "--from-beginning",
        "--max-messages",
        "2",
        "--format",
        "{value}",
    ];
    consume.extend_from_slice(&common);
    assert_eq!(ok(herald_with(&consume, "")), "one\ntwo\n");
    // The benches' clients take the same settings, the password included.
    let mut bench = vec![
        "bench",
        "produce",
        "--topic",
        "events.bench",
        "--count",
        "20",
        "--quiet",
    ];
    bench.extend_from_slice(&common);
    ok(herald_with(&bench, ""));

    // SIGHUP re-reads the TLS files and the broker goes on serving.
    let status = Command::new("kill")
        .args(["-HUP", &broker.serve.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    crate::support::eventually_true("the reload to be logged", || {
        broker
            .serve
            .log()
            .contains("TLS certificate, key and client CA reloaded")
    });
    assert_eq!(ok(herald_with(&consume, "")), "one\ntwo\n");
    // A loopback-only broker has nothing to warn about; /health is open, /metrics asks.
    let health = http_get(broker.serve.http_addr, "/health").unwrap();
    assert!(!health.body.contains("warnings"), "{}", health.body);
    let http = broker.serve.http_addr;
    assert_eq!(get_with(http, "/metrics", None), 401);
    assert_eq!(get_with(http, "/metrics", Some("Bearer admin-t0ken")), 200);
    // alice:alice-pw
    assert_eq!(
        get_with(http, "/metrics", Some("Basic YWxpY2U6YWxpY2UtcHc=")),
        200
    );
    assert_eq!(
        get_with(http, "/metrics", Some("Basic YWxpY2U6Z3Vlc3M=")),
        401
    );
    assert_eq!(broker.serve.sigterm().code(), Some(0));
}

/// The status of a plain HTTP GET with an optional `Authorization` header.
fn get_with(addr: SocketAddr, path: &str, authorization: Option<&str>) -> u16 {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let header = authorization
        .map(|value| format!("Authorization: {value}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{header}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response[9..12].parse().unwrap()
}

#[test]
fn a_plaintext_listener_on_the_network_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_addr().port();
    let serve = ServeProcess::start_with(
        &dir.path().join("data"),
        free_addr(),
        &["--listeners", &format!("PLAINTEXT://0.0.0.0:{port}")],
    );
    assert!(
        serve.log().contains("unauthenticated PLAINTEXT listener"),
        "{}",
        serve.log()
    );
    let health = http_get(serve.http_addr, "/health").unwrap();
    assert_eq!(health.status, 200);
    assert!(
        health.body.contains("insecure_listeners"),
        "{}",
        health.body
    );
    let metrics = http_get(serve.http_addr, "/metrics").unwrap();
    assert!(
        metrics.body.contains("herald_listeners_insecure 1"),
        "{}",
        metrics.body
    );
}
