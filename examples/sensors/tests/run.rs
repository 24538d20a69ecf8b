//! Runs the example with static peers on 127.0.0.1 (mDNS may be unavailable where tests run) and
//! checks that the loss report appears and that its counts add up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

/// One parsed `final STATION SENSOR: published P received R lost L unaccounted U` line.
struct Final {
    station: String,
    sensor: String,
    published: u64,
    received: u64,
    lost: u64,
    unaccounted: u64,
}

fn parse_final(line: &str) -> Option<Final> {
    let rest = line.strip_prefix("final ")?;
    let (who, counts) = rest.split_once(": ")?;
    let (station, sensor) = who.split_once(' ')?;
    let words: Vec<&str> = counts.split_whitespace().collect();
    let number = |name: &str| -> Option<u64> {
        let i = words.iter().position(|w| *w == name)?;
        words.get(i + 1)?.parse().ok()
    };
    Some(Final {
        station: station.to_string(),
        sensor: sensor.to_string(),
        published: number("published")?,
        received: number("received")?,
        lost: number("lost")?,
        unaccounted: number("unaccounted")?,
    })
}

#[test]
fn stations_count_every_reading_as_received_or_lost() {
    let out = Command::new(env!("CARGO_BIN_EXE_sensors"))
        .args([
            "--sensors",
            "3",
            "--peers",
            "127.0.0.1:0,127.0.0.1:0",
            "--rate",
            "100",
            "--duration-secs",
            "1",
            "--report-secs",
            "0.2",
            // 100 readings per sensor and station, every 7th not sent: 14 lost, and the last
            // reading (the 100th) is sent, so every loss leaves a gap the station sees.
            "--drop-every",
            "7",
        ])
        .output()
        .expect("the example runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.lines().any(|l| l.starts_with("report t=")),
        "no periodic report:\n{stdout}"
    );
    let finals: Vec<Final> = stdout.lines().filter_map(parse_final).collect();
    assert_eq!(finals.len(), 2 * 3, "{stdout}");
    for f in &finals {
        assert_eq!(f.published, 100, "{} {}", f.station, f.sensor);
        assert_eq!(f.lost, 14, "{} {}", f.station, f.sensor);
        assert_eq!(f.received, 86, "{} {}", f.station, f.sensor);
        assert_eq!(f.unaccounted, 0, "{} {}", f.station, f.sensor);
        assert_eq!(f.received + f.lost, f.published);
    }
    let total = stdout
        .lines()
        .find(|l| l.starts_with("total: "))
        .expect("a total line");
    assert!(
        total.starts_with(
            "total: published 600 received 516 lost 84 unaccounted 0 (datagrams sent 516,"
        ),
        "{total}"
    );
}

#[test]
fn without_drops_nothing_is_lost() {
    let out = Command::new(env!("CARGO_BIN_EXE_sensors"))
        .args([
            "--sensors",
            "2",
            "--peers",
            "127.0.0.1:0",
            "--rate",
            "200",
            "--duration-secs",
            "0.5",
        ])
        .output()
        .expect("the example runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let finals: Vec<Final> = stdout.lines().filter_map(parse_final).collect();
    assert_eq!(finals.len(), 2, "{stdout}");
    for f in &finals {
        // Loopback at this rate keeps everything; were the kernel to drop some, the station
        // would count it, so received and lost still add up.
        assert_eq!(f.published, 100);
        assert_eq!(f.received + f.lost + f.unaccounted, f.published);
    }
}
