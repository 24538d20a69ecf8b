//! A real process writing a real directory is killed with SIGKILL mid-write; every append it had
//! seen fsynced (`sync_to` returned) must be there, byte-identical, after reopening.
//!
//! The writer is this same test binary re-run with `HERALD_STORAGE_KILL_DIR` set: the test
//! `sigkill_writer` is the child's entry point, ignored so a normal run neither runs nor counts
//! it (the parent starts it with `--ignored`), and a no-op unless that variable is present.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use herald_storage::{LogConfig, OpenError, PartitionLog};

use crate::support::{batch, split, stored};

const DIR_VAR: &str = "HERALD_STORAGE_KILL_DIR";

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024,
        ..LogConfig::default()
    }
}

/// The child: appends and syncs forever, printing each acknowledged base offset.
#[test]
#[ignore = "child process entry point of acknowledged_appends_survive_sigkill"]
fn sigkill_writer() {
    let Some(dir) = std::env::var_os(DIR_VAR) else {
        return;
    };
    let log = PartitionLog::open(Path::new(&dir), config()).unwrap();
    let mut out = std::io::stdout().lock();
    for tag in 0u64.. {
        let info = log
            .append(&batch(tag, 1 + (tag % 4) as usize, 1_000))
            .unwrap();
        log.sync_to(info.last_offset + 1).unwrap();
        use std::io::Write;
        writeln!(out, "acked {tag} {}", info.base_offset).unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "sigkill::sigkill_writer",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR_VAR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = Vec::new();
    while acked.len() < 300 {
        let line = lines.next().expect("writer exited early").unwrap();
        let mut parts = line.split_whitespace();
        if parts.next() != Some("acked") {
            continue;
        }
        let tag: u64 = parts.next().unwrap().parse().unwrap();
        let base: u64 = parts.next().unwrap().parse().unwrap();
        acked.push((tag, base));
    }
    // The writer owns the directory: another process cannot open it meanwhile.
    assert!(matches!(
        PartitionLog::open(dir.path(), config()),
        Err(OpenError::Locked { .. })
    ));
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();

    let log = PartitionLog::open(dir.path(), config()).unwrap();
    let (last_tag, last_base) = *acked.last().unwrap();
    let acked_end = last_base + 1 + last_tag % 4;
    let hw = log.offsets().high_watermark;
    assert!(
        hw >= acked_end,
        "hw {hw} below acknowledged end {acked_end}"
    );
    for (tag, base) in acked {
        let r = log.read(base, 1 << 16, true).unwrap();
        let first = split(&r.batches).into_iter().next().unwrap();
        assert_eq!(
            first,
            (
                base,
                stored(&batch(tag, 1 + (tag % 4) as usize, 1_000), base)
            )
        );
    }
    // And the log goes on from where recovery ended.
    assert_eq!(log.append(&batch(0, 1, 1)).unwrap().base_offset, hw);
}
