//! A slow member with capacity 1 never has more than one event in flight; load shifts.

use std::time::Duration;

use super::harness::{Proc, listen, publish_summary};

#[test]
fn a_slow_member_is_never_overfilled_and_the_fast_one_takes_the_load() {
    let (mut slow, addr_slow) = listen("jobs", "g", &["--capacity", "1", "--delay-ms", "100"]);
    let (mut fast, addr_fast) = listen("jobs", "g", &["--capacity", "16"]);
    let peers = format!("{addr_slow},{addr_fast}");
    let mut publisher = Proc::spawn(&[
        "peer",
        "publish",
        "--topic",
        "jobs",
        "--peers",
        &peers,
        "--in-flight-max",
        "32",
        "--output",
        "json",
    ]);
    publisher.write_lines((0..300).map(|i| format!("j{i}")));
    publisher.close_stdin();
    assert_eq!(
        publisher.wait_exit(Duration::from_secs(60)),
        0,
        "{}",
        publisher.stderr_text()
    );
    assert_eq!(publish_summary(&publisher)["acked"], 300);
    let s = slow.terminate_for_summary();
    let f = fast.terminate_for_summary();
    assert_eq!(s["in_flight_max"], 1, "{s}");
    let (ns, nf) = (s["direct"].as_u64().unwrap(), f["direct"].as_u64().unwrap());
    assert_eq!(ns + nf, 300);
    assert!(
        nf > 4 * ns,
        "load did not shift to the fast member: slow {ns}, fast {nf}"
    );
}
