//! The client commands against a client nobody here wrote: what `herald produce` writes, kcat
//! reads back, and what kcat writes, `herald consume` prints.

use std::io::Write;
use std::process::{Command, Stdio};

use super::harness::Broker;

/// Runs kcat with `args` and `input` on standard input; returns standard output.
fn kcat(args: &[&str], input: &[u8]) -> String {
    let mut child = Command::new("kcat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat is installed by scripts/install-test-deps");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "kcat {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn kcat_reads_what_herald_produces_and_herald_reads_what_kcat_produces() {
    let broker = Broker::start();
    let n_shared = broker.name("shared");
    broker.ok(&["topic", "create", &n_shared]);
    let lines: String = (0..100).map(|i| format!("k{}:v{i}\n", i % 7)).collect();
    broker
        .herald_with_input(
            &[
                "produce",
                &n_shared,
                "--key-separator",
                ":",
                "--header",
                "origin=herald",
            ],
            lines.as_bytes(),
        )
        .assert_code(0);
    let read = kcat(
        &[
            "-b",
            &broker.bootstrap,
            "-C",
            "-t",
            &n_shared,
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%k:%s %h\n",
        ],
        b"",
    );
    let expected: String = (0..100)
        .map(|i| format!("k{}:v{i} origin=herald\n", i % 7))
        .collect();
    assert_eq!(read, expected);

    let more: String = (100..150).map(|i| format!("k{}:v{i}\n", i % 7)).collect();
    kcat(
        &[
            "-b",
            &broker.bootstrap,
            "-P",
            "-t",
            &n_shared,
            "-K",
            ":",
            "-p",
            "0",
        ],
        more.as_bytes(),
    );
    let printed = broker.ok(&[
        "consume",
        &n_shared,
        "--offset",
        "100",
        "--max-messages",
        "50",
        "--format",
        "{key}:{value}",
    ]);
    assert_eq!(printed, more);
}
