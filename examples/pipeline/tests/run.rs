//! Runs the example on 127.0.0.1: every move completes through all four joints in time, and
//! with a slow joint the caller's deadline fails the whole chain.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .args(args)
        .output()
        .expect("the example runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("stderr:\n{stderr}");
    (out.status.code(), stdout)
}

#[test]
fn every_move_goes_through_the_whole_arm() {
    let (code, stdout) = run(&["--moves", "3", "--deadline-ms", "30000", "--stage-ms", "1"]);
    assert_eq!(code, Some(0), "{stdout}");
    for n in 1..=3 {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("move {n}: done")))
            .unwrap_or_else(|| panic!("move {n} did not complete:\n{stdout}"));
        assert!(
            line.ends_with(": base > shoulder > elbow > wrist"),
            "{line}"
        );
    }
    assert!(stdout.contains("3 of 3 moves completed"), "{stdout}");
    assert!(!stdout.contains("abandoned"), "{stdout}");
}

#[test]
fn a_slow_joint_fails_the_whole_chain_at_the_deadline() {
    let (code, stdout) = run(&[
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
        assert!(
            stdout.contains(&format!("move {n}: failed after")),
            "{stdout}"
        );
        // The joints up to the slow one gave up (the slow one's work was dropped, not left
        // running for an hour); the wrist was never asked.
        for joint in ["base", "shoulder", "elbow"] {
            assert!(
                stdout.contains(&format!("{joint}: abandoned move {n} (deadline passed)")),
                "{joint}, move {n}:\n{stdout}"
            );
        }
    }
    assert!(stdout.contains("deadline exceeded"), "{stdout}");
    assert!(!stdout.contains("wrist: abandoned"), "{stdout}");
    assert!(stdout.contains("0 of 2 moves completed"), "{stdout}");
}
