//! mDNS-SD discovery between two processes in two network namespaces joined by a veth pair:
//! a publisher finding a member, and a broker's `/api/v1/peers` listing one with its load.

use std::process::Command;
use std::time::Duration;

use super::harness::Proc;

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

/// Two namespaces and a veth link between them, removed on drop.
struct NetnsPair {
    a: String,
    b: String,
}

impl NetnsPair {
    fn create() -> Result<NetnsPair, String> {
        // Names unique per pair, not only per process: the tests of one binary run at once.
        static PAIRS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = PAIRS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 10;
        let id = std::process::id() % 100_000;
        let (a, b) = (format!("hdm{id}{n}a"), format!("hdm{id}{n}b"));
        if !ip(&["netns", "add", &a]) {
            return Err("cannot create network namespaces (needs root and `ip`)".into());
        }
        let pair = NetnsPair { a, b };
        if !ip(&["netns", "add", &pair.b]) {
            return Err("cannot create a second network namespace".into());
        }
        let (va, vb) = (format!("vd{id}{n}a"), format!("vd{id}{n}b"));
        let subnet = 10 + id % 200;
        let ok = ip(&[
            "link", "add", &va, "netns", &pair.a, "type", "veth", "peer", "name", &vb, "netns",
            &pair.b,
        ]) && [(&pair.a, &va, 1), (&pair.b, &vb, 2)]
            .iter()
            .all(|(ns, dev, host)| {
                let addr = format!("10.213.{subnet}.{host}/24");
                // IPv4 only: tentative IPv6 link-local addresses (duplicate address detection)
                // would make the first mDNS exchanges depend on timing.
                // Best effort: without it the test still works, only less predictably.
                let _ = Command::new("ip")
                    .args(["netns", "exec", ns, "sh", "-c"])
                    .arg("for f in all default; do echo 1 > /proc/sys/net/ipv6/conf/$f/disable_ipv6; done")
                    .status();
                ip(&["-n", ns, "link", "set", "lo", "up"])
                    && ip(&["-n", ns, "addr", "add", &addr, "dev", dev])
                    && ip(&["-n", ns, "link", "set", dev, "multicast", "on", "up"])
                    && ip(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", dev])
            });
        if !ok {
            return Err("cannot set up the veth link".into());
        }
        // The mDNS daemons only use interfaces that are operationally up when they start, and
        // the kernel reports a veth end up only a moment after both ends were set up.
        let oper_up = |ns: &str, dev: &str| {
            Command::new("ip")
                .args(["-n", ns, "-o", "link", "show", "dev", dev])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("state UP"))
        };
        let up = super::harness::poll(std::time::Duration::from_secs(10), || {
            oper_up(&pair.a, &va) && oper_up(&pair.b, &vb)
        });
        if !up {
            return Err("the veth link never came up".into());
        }
        Ok(pair)
    }

    fn addr(&self, host: u8) -> String {
        let subnet = 10 + std::process::id() % 100_000 % 200;
        format!("10.213.{subnet}.{host}")
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        ip(&["netns", "del", &self.a]);
        ip(&["netns", "del", &self.b]);
    }
}

#[test]
fn a_publisher_finds_a_member_with_mdns_across_a_veth_link() {
    let pair = match NetnsPair::create() {
        Ok(pair) => pair,
        Err(reason) => {
            println!("skipped: {reason}");
            return;
        }
    };
    let bind = format!("{}:7400", pair.addr(1));
    let (mut member, _) = Proc::member_with(
        &["ip", "netns", "exec", &pair.a],
        &[
            "peer", "listen", "--topic", "sensors", "--group", "g", "--bind", &bind, "--mdns",
            "--output", "json",
        ],
    );
    let mut publisher = Proc::spawn_with(
        &["ip", "netns", "exec", &pair.b],
        &[
            "peer",
            "publish",
            "--topic",
            "sensors",
            "--mdns",
            "--timeout-ms",
            "45000",
            "--output",
            "json",
        ],
    );
    publisher.write_lines(["found-you".to_string()]);
    publisher.close_stdin();
    // mDNS queries are repeated at 1, 2, 4, 8 ... s, so a lost first exchange costs seconds.
    assert_eq!(
        publisher.wait_exit(Duration::from_secs(90)),
        0,
        "publisher:\n{}\nmember:\n{}",
        publisher.stderr_text(),
        member.stderr_text()
    );
    assert!(
        publisher
            .stderr_text()
            .contains("discovered a member with mDNS")
    );
    let summary = member.terminate_for_summary();
    assert_eq!(summary["direct"], 1);
    assert_eq!(member.event_values(), vec!["found-you".to_string()]);
}

/// `GET path` on `addr` from inside namespace `ns` (bash's `/dev/tcp`, so no HTTP client needs
/// installing); the body, or `None` when nothing answered.
fn get_in(ns: &str, addr: &str, path: &str) -> Option<String> {
    let (host, port) = addr.rsplit_once(':')?;
    let script = format!(
        "exec 3<>/dev/tcp/{host}/{port} && printf 'GET {path} HTTP/1.0\\r\\nHost: {host}\\r\\n\\r\\n' >&3 && timeout 5 cat <&3"
    );
    let output = Command::new("ip")
        .args(["netns", "exec", ns, "bash", "-c", &script])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
}

#[test]
fn a_broker_lists_a_member_it_sees_by_mdns_with_its_load_until_it_leaves() {
    let pair = match NetnsPair::create() {
        Ok(pair) => pair,
        Err(reason) => {
            println!("skipped: {reason}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let http = format!("{}:7480", pair.addr(1));
    let kafka = format!("{}:7490", pair.addr(1));
    let data = dir.path().join("data");
    let _serve = Proc::spawn_with(
        &["ip", "netns", "exec", &pair.a],
        &[
            "serve",
            "--data-dir",
            data.to_str().unwrap(),
            "--kafka-addr",
            &kafka,
            "--http-addr",
            &http,
            "--peers-mdns",
            "true",
        ],
    );
    let peers = || {
        get_in(&pair.a, &http, "/api/v1/peers")
            .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
    };
    assert!(
        super::harness::poll(Duration::from_secs(20), || peers().is_some()),
        "the broker's HTTP side never answered"
    );
    assert_eq!(peers().unwrap()["browsing"], true, "{:?}", peers());

    let bind = format!("{}:7400", pair.addr(2));
    // Each event takes this long, so the events published below stay in flight long enough for
    // the member's load announcement (at most one per 5 s by default) to reach the broker.
    let delay_ms = "20000";
    let (mut member, _) = Proc::member_with(
        &["ip", "netns", "exec", &pair.b],
        &[
            "peer",
            "listen",
            "--topic",
            "sensors",
            "--group",
            "g",
            "--bind",
            &bind,
            "--mdns",
            "--delay-ms",
            delay_ms,
            "--output",
            "json",
        ],
    );
    let ours = |view: &serde_json::Value| -> Option<serde_json::Value> {
        view["peers"].as_array()?.iter().find_map(|peer| {
            let ours = peer["topic"] == "sensors"
                && peer["group"] == "g"
                && peer["addresses"]
                    .as_array()
                    .is_some_and(|addrs| addrs.iter().any(|a| a == bind.as_str()));
            ours.then(|| peer.clone())
        })
    };
    let listed = |view: &serde_json::Value| ours(view).is_some();
    let with_load = |view: &serde_json::Value, load: u64| {
        ours(view).is_some_and(|peer| peer["load"].as_u64() == Some(load))
    };
    // mDNS queries are repeated at 1, 2, 4, 8 ... s, so a lost first exchange costs seconds.
    let mut last = None;
    let seen = super::harness::poll(Duration::from_secs(60), || {
        last = peers();
        last.as_ref().is_some_and(listed)
    });
    assert!(seen, "the member was never listed; last answer: {last:?}");
    let peer = ours(last.as_ref().unwrap()).unwrap();
    assert!(peer["capacity"].as_u64().is_some_and(|c| c > 0), "{peer}");
    assert!(peer["protocol_version"].as_str().is_some(), "{peer}");
    // Idle so far: it announced no event in flight.
    assert_eq!(peer["load"], 0, "{peer}");

    // Three events held by the member's handler show as its load, then 0 once acknowledged.
    let mut publisher = Proc::spawn_with(
        &["ip", "netns", "exec", &pair.b],
        &[
            "peer",
            "publish",
            "--topic",
            "sensors",
            "--peers",
            &bind,
            "--timeout-ms",
            "60000",
            "--output",
            "json",
        ],
    );
    publisher.write_lines(["a", "b", "c"].map(String::from));
    publisher.close_stdin();
    let loaded = super::harness::poll(Duration::from_secs(15), || {
        last = peers();
        last.as_ref().is_some_and(|view| with_load(view, 3))
    });
    assert!(
        loaded,
        "the member was never listed with load 3; last answer: {last:?}\nmember:\n{}",
        member.stderr_text()
    );
    assert_eq!(
        publisher.wait_exit(Duration::from_secs(60)),
        0,
        "publisher:\n{}",
        publisher.stderr_text()
    );
    let idle = super::harness::poll(Duration::from_secs(20), || {
        last = peers();
        last.as_ref().is_some_and(|view| with_load(view, 0))
    });
    assert!(
        idle,
        "the member's load never went back to 0; last answer: {last:?}"
    );

    // Stopping the member sends its mDNS goodbye, which takes it off the list.
    member.terminate_for_summary();
    let gone = super::harness::poll(Duration::from_secs(30), || {
        last = peers();
        last.as_ref().is_some_and(|view| !listed(view))
    });
    assert!(gone, "the member stayed listed; last answer: {last:?}");
}
