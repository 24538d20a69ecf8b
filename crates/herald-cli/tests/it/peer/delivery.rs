//! Two groups of two members, 10,000 direct events, one member SIGKILLed in the middle.

use std::collections::HashMap;
use std::time::Duration;

use super::harness::{Proc, listen, publish_summary};

const EVENTS: usize = 10_000;

fn counts(values: impl IntoIterator<Item = String>) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for v in values {
        *out.entry(v).or_insert(0) += 1;
    }
    out
}

#[test]
fn every_group_gets_every_event_even_when_a_member_is_killed() {
    let (mut a1, addr_a1) = listen("orders", "a", &[]);
    let (a2, addr_a2) = listen("orders", "a", &[]);
    let (mut b1, addr_b1) = listen("orders", "b", &[]);
    let (mut b2, addr_b2) = listen("orders", "b", &[]);
    let peers = [addr_a1.as_str(), &addr_a2, &addr_b1, &addr_b2].join(",");
    let mut publisher = Proc::spawn(&[
        "peer",
        "publish",
        "--topic",
        "orders",
        "--peers",
        &peers,
        "--timeout-ms",
        "15000",
        "--output",
        "json",
    ]);
    let all_up = super::harness::poll(Duration::from_secs(20), || {
        publisher.stderr_text().matches("member up").count() >= 4
    });
    assert!(
        all_up,
        "publisher: {}\na2: {}\nb2: {}",
        publisher.stderr_text(),
        a2.stderr_text(),
        b2.stderr_text()
    );
    publisher.write_lines((0..EVENTS / 3).map(|i| format!("e{i}")));
    // Kill a2 once it is in the middle of its share.
    assert!(
        a2.wait_stdout_count(300, Duration::from_secs(30)),
        "a2 got no events"
    );
    a2.signal(libc::SIGKILL);
    publisher.write_lines((EVENTS / 3..EVENTS).map(|i| format!("e{i}")));
    publisher.close_stdin();
    let code = publisher.wait_exit(Duration::from_secs(120));
    assert_eq!(code, 0, "publish failed: {}", publisher.stderr_text());
    let summary = publish_summary(&publisher);
    assert_eq!(summary["acked"], EVENTS, "{summary}");
    assert_eq!(summary["failed"], 0);

    a1.terminate_for_summary();
    b1.terminate_for_summary();
    b2.terminate_for_summary();
    // Group b lost nobody: each event handled by exactly one of its members.
    let b = counts(b1.event_values().into_iter().chain(b2.event_values()));
    assert_eq!(b.len(), EVENTS);
    assert!(
        b.values().all(|n| *n == 1),
        "an event was handled twice in group b"
    );
    assert!(
        b1.event_values().len() > 1000 && b2.event_values().len() > 1000,
        "no load balancing"
    );
    // Group a: nothing missing despite the kill (a retry after a lost ack may repeat one).
    let a = counts(a1.event_values().into_iter().chain(a2.event_values()));
    let missing: Vec<usize> = (0..EVENTS)
        .filter(|i| !a.contains_key(&format!("e{i}")))
        .collect();
    if !missing.is_empty() {
        let raw = a2.stdout_lines();
        eprintln!(
            "a2 raw lines {} first {:?} last {:?}",
            raw.len(),
            raw.first(),
            raw.last()
        );
        eprintln!("a1 first {:?}", a1.stdout_lines().first());
        eprintln!("publisher stderr: {}", publisher.stderr_text());
    }
    assert!(
        missing.is_empty(),
        "{} events missing in group a (a1 {}, a2 {}), first {:?}",
        missing.len(),
        a1.event_values().len(),
        a2.event_values().len(),
        &missing[..missing.len().min(10)]
    );
    assert!(
        publisher.stderr_text().contains("member down"),
        "the crash was not logged"
    );
}
