//! Runs the example on 127.0.0.1 in both modes: nested requests hold every joint before a slow
//! one open until the caller's deadline fails them all; hop-by-hop events free each joint once it
//! handed the move on, and a slow member is replaced by another of its joint's group. Orders and
//! counts are asserted, never durations.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .args(args)
        .output()
        .expect("the example runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("stdout:\n{stdout}\nstderr:\n{stderr}");
    (out.status.code(), stdout)
}

fn move_line(stdout: &str, n: u32) -> &str {
    stdout
        .lines()
        .find(|l| l.starts_with(&format!("move {n}: ")))
        .unwrap_or_else(|| panic!("no line for move {n}:\n{stdout}"))
}

/// The milliseconds after `label` in `line` (`... label 12.3 ms ...`).
fn ms_after(line: &str, label: &str) -> f64 {
    let rest = &line[line
        .find(label)
        .unwrap_or_else(|| panic!("{label} in {line}"))
        + label.len()..];
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

/// What the line says was open while the focus joint worked.
fn open_list(line: &str) -> &str {
    let at = line
        .find(" worked: ")
        .unwrap_or_else(|| panic!("no open list in {line}"));
    &line[at + " worked: ".len()..]
}

#[test]
fn requests_hold_every_joint_until_the_wrist_is_done() {
    let (code, stdout) = run(&[
        "--mode",
        "requests",
        "--moves",
        "3",
        "--deadline-ms",
        "30000",
        "--stage-ms",
        "1",
    ]);
    assert_eq!(code, Some(0), "{stdout}");
    for n in 1..=3 {
        let line = move_line(&stdout, n);
        assert!(
            line.contains("done: base > shoulder > elbow > wrist;"),
            "{line}"
        );
        // The command's answer comes only after the wrist finished.
        assert!(
            ms_after(line, "wrist finished after") <= ms_after(line, "command returned after"),
            "{line}"
        );
        assert!(line.contains("open while wrist worked:"), "{line}");
        assert_eq!(open_list(line), "base, shoulder, elbow", "{line}");
    }
    assert!(stdout.contains("3 of 3 moves completed"), "{stdout}");
    assert!(!stdout.contains("abandoned"), "{stdout}");
}

#[test]
fn in_requests_mode_a_slow_joint_fails_the_whole_chain_at_the_deadline() {
    let (code, stdout) = run(&[
        "--mode",
        "requests",
        "--moves",
        "2",
        "--deadline-ms",
        "300",
        "--stage-ms",
        "1",
        "--slow-stage",
        "elbow",
        "--slow-ms",
        "3600000",
    ]);
    assert_eq!(code, Some(2), "{stdout}");
    for n in 1..=2 {
        let line = move_line(&stdout, n);
        assert!(line.contains("failed after"), "{line}");
        assert!(line.contains("deadline exceeded"), "{line}");
        // Every joint before the slow one held its request open meanwhile.
        assert_eq!(open_list(line), "base, shoulder", "{line}");
        // The slow joint's work was dropped at the deadline, not left running for an hour.
        assert!(
            stdout.contains(&format!("elbow: abandoned move {n}")),
            "{stdout}"
        );
    }
    assert!(
        !stdout.contains("wrist"),
        "the wrist was never asked:\n{stdout}"
    );
    assert!(stdout.contains("0 of 2 moves completed"), "{stdout}");
}

#[test]
fn events_free_each_joint_once_it_handed_the_move_on() {
    let (code, stdout) = run(&[
        "--mode",
        "events",
        "--moves",
        "3",
        "--stage-ms",
        "20",
        "--hop-timeout-ms",
        "30000",
    ]);
    assert_eq!(code, Some(0), "{stdout}");
    for n in 1..=3 {
        let line = move_line(&stdout, n);
        assert!(
            line.contains("done: base > shoulder > elbow > wrist;"),
            "{line}"
        );
        // The command is free once the base took the move; the wrist finishes later.
        assert!(
            ms_after(line, "command returned after") < ms_after(line, "wrist finished after"),
            "{line}"
        );
        // Only the hop into the wrist waits on it; no joint holds the move.
        assert_eq!(open_list(line), "hop elbow>wrist", "{line}");
    }
    assert!(stdout.contains("3 of 3 moves completed"), "{stdout}");
}

#[test]
fn in_events_mode_only_the_hop_into_a_slow_member_waits_and_fails_over() {
    let (code, stdout) = run(&[
        "--mode",
        "events",
        "--moves",
        "4",
        "--members",
        "2",
        "--stage-ms",
        "20",
        "--hop-timeout-ms",
        "300",
        "--slow-stage",
        "elbow",
        "--slow-ms",
        "3600000",
    ]);
    assert_eq!(code, Some(0), "{stdout}");
    let mut failed_over = 0;
    for n in 1..=4 {
        let line = move_line(&stdout, n);
        assert!(line.contains(": done: "), "{line}");
        assert!(
            ms_after(line, "command returned after") < ms_after(line, "wrist finished after"),
            "{line}"
        );
        // Whichever elbow member had it, only the hop into the elbow was open meanwhile.
        assert_eq!(open_list(line), "hop shoulder>elbow", "{line}");
        if line.contains("elbow#2 (after elbow#1 did not answer in time)") {
            failed_over += 1;
            assert!(
                stdout.contains(&format!("elbow#1: abandoned move {n}")),
                "{stdout}"
            );
        } else {
            assert!(line.contains("> elbow#2 >"), "{line}");
        }
    }
    // Ties between equally loaded members rotate, so the slow member gets some of the moves.
    assert!(failed_over >= 1, "{stdout}");
    assert!(stdout.contains("4 of 4 moves completed"), "{stdout}");
}
