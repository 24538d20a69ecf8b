//! Errors users meet first: no broker at the address, a topic that does not exist.

use super::harness::{Broker, run};
use crate::support::free_addr;

#[test]
fn unreachable_broker_exits_3_naming_the_address() {
    let bootstrap = free_addr().to_string();
    let commands: [&[&str]; 4] = [
        &["topic", "list"],
        &["topic", "create", "t"],
        &["consume", "t", "--max-messages", "1"],
        &["produce", "t"],
    ];
    for args in commands {
        let run = run(&bootstrap, args, Some(b"one\n"));
        run.assert_code(3);
        assert!(
            run.stderr
                .contains(&format!("error: broker unreachable at {bootstrap}")),
            "{args:?}: {}",
            run.stderr
        );
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
    }
}

#[test]
fn missing_topic_and_partition_exit_4() {
    let broker = Broker::start();
    let n_nope = broker.name("nope");
    let n_small = broker.name("small");
    for args in [
        &["produce", &n_nope][..],
        &["consume", &n_nope, "--max-messages", "1"],
        &["topic", "describe", &n_nope],
        &["topic", "alter", &n_nope, "--config", "retention.ms=1"],
    ] {
        let run = broker.herald_with_input(args, b"one\n");
        run.assert_code(4);
        assert!(
            run.stderr
                .contains(&format!("error: topic {n_nope} does not exist")),
            "{args:?}: {}",
            run.stderr
        );
    }
    broker.ok(&["topic", "create", &n_small]);
    let run = broker.herald_with_input(&["produce", &n_small, "--partition", "3"], b"x\n");
    run.assert_code(4);
    assert!(run.stderr.contains("partition 3"), "{}", run.stderr);
    // Nothing was created as a side effect of the attempts above.
    assert!(!broker.ok(&["topic", "list"]).contains(&n_nope));
}

#[test]
fn bad_usage_exits_2() {
    let bootstrap = free_addr().to_string();
    let run = run(
        &bootstrap,
        &["consume", "t", "--format", "{nope}", "--max-messages", "1"],
        None,
    );
    run.assert_code(2);
    assert!(
        run.stderr.contains("unknown field {nope}"),
        "{}",
        run.stderr
    );
    let both = super::harness::run(
        &bootstrap,
        &["consume", "t", "--from-beginning", "--offset", "3"],
        None,
    );
    both.assert_code(2);
}

#[test]
fn help_lists_the_client_commands_and_exit_codes() {
    let help = super::harness::run("127.0.0.1:1", &["help"], None);
    help.assert_code(0);
    for word in ["topic", "produce", "consume", "Exit codes:", "4  not found"] {
        assert!(help.stdout.contains(word), "{word}: {}", help.stdout);
    }
}

#[test]
fn rejected_events_exit_5_with_the_brokers_reason() {
    let broker = Broker::start();
    let n_tiny = broker.name("tiny");
    broker.ok(&[
        "topic",
        "create",
        &n_tiny,
        "--config",
        "max.message.bytes=200",
    ]);
    let line = format!("{}\n", "x".repeat(1000));
    let run = broker.herald_with_input(&["produce", &n_tiny], line.as_bytes());
    run.assert_code(5);
    assert!(
        run.stdout.contains("produced 0 of 1 events"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains("error: 1 of 1 events were not acknowledged"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("too large"), "{}", run.stderr);
    // Nothing was stored.
    let description = broker
        .herald(&["--output", "json", "topic", "describe", &n_tiny])
        .json();
    assert_eq!(description["partitions"][0]["latest"], 0);
}

#[test]
fn a_port_that_never_answers_times_out_with_exit_7() {
    // The kernel completes the handshake, but nothing ever reads or answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bootstrap = silent.local_addr().unwrap().to_string();
    let run = run(&bootstrap, &["topic", "list"], None);
    run.assert_code(7);
    assert!(
        run.stderr.contains(&format!(
            "error: broker at {bootstrap} accepted the connection but did not answer"
        )),
        "{}",
        run.stderr
    );
    drop(silent);
}

#[test]
fn an_overlong_line_stops_the_input_after_the_events_before_it_are_stored() {
    let broker = Broker::start();
    let n_lines = broker.name("lines");
    broker.ok(&["topic", "create", &n_lines]);
    let input = format!("a\nb\n{}\nc\n", "x".repeat(300));
    let run = broker.herald_with_input(
        &["produce", &n_lines, "--line-bytes-max", "100"],
        input.as_bytes(),
    );
    run.assert_code(2);
    assert!(
        run.stdout.contains("produced 2 of 2 events"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains("error: line 3 is longer than --line-bytes-max 100 bytes"),
        "{}",
        run.stderr
    );
    let stored = broker.ok(&[
        "consume",
        &n_lines,
        "--from-beginning",
        "--max-messages",
        "10",
    ]);
    assert_eq!(stored, "a\nb\n");
}

#[test]
fn an_event_the_client_refuses_counts_as_not_acknowledged() {
    let broker = Broker::start();
    let n_big = broker.name("big");
    broker.ok(&["topic", "create", &n_big]);
    // Above librdkafka's own message.max.bytes (1,000,000), so it never leaves the process.
    let input = format!("before\n{}\nafter\n", "y".repeat(1_100_000));
    let run = broker.herald_with_input(
        &["produce", &n_big, "--line-bytes-max", "2000000"],
        input.as_bytes(),
    );
    run.assert_code(5);
    assert!(
        run.stdout.contains("produced 2 of 3 events"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains("error: 1 of 3 events were not acknowledged"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("event 2:"), "{}", run.stderr);
}
