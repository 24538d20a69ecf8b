//! `herald bench matrix --quick` and `herald advise`: every row measured, the JSON as
//! `docs/choosing-a-way.md` documents it, datagram loss counted exactly, the consumer-down
//! check right for each way, and a fixed ranking for fixed inputs.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;

use crate::support::herald;

/// The field names `docs/choosing-a-way.md` lists for `object` in its schema table.
fn documented(object: &str) -> BTreeSet<String> {
    let docs = include_str!("../../../../docs/choosing-a-way.md");
    let line = docs
        .lines()
        .find(|l| l.starts_with(&format!("| `{object}` |")))
        .unwrap_or_else(|| panic!("docs/choosing-a-way.md documents no `{object}` object"));
    line.split('|')
        .nth(2)
        .unwrap()
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

fn check_schema(object: &str, value: &Value) {
    assert_eq!(keys(value), documented(object), "fields of {object}");
}

#[test]
fn quick_matrix_measures_every_row_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("report.html");
    let saved = dir.path().join("last.json");
    let out = herald()
        .args(["--output", "json", "bench", "matrix", "--quick"])
        .args(["--datagram-drop-every", "7"])
        .arg("--work-dir")
        .arg(dir.path().join("work"))
        .arg("--html")
        .arg(&html)
        .arg("--save")
        .arg(&saved)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        m,
        serde_json::from_slice::<Value>(&std::fs::read(&saved).unwrap()).unwrap()
    );
    assert!(
        std::fs::read_to_string(&html)
            .unwrap()
            .contains("matrix-data")
    );

    check_schema("matrix", &m);
    assert_eq!(m["schema"], "herald-bench-matrix/1");
    check_schema("machine", &m["machine"]);
    check_schema("config", &m["config"]);
    let rows = m["rows"].as_array().unwrap();
    let ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    for expected in [
        "limit-tcp-echo",
        "limit-udp",
        "limit-disk",
        "brokered-acks-0",
        "brokered-acks-1",
        "brokered-acks-all-fsync",
        "brokered-acks-all-interval",
        "brokered-acks-all-never",
        "brokered-end-to-end",
        "request-broker",
        "direct",
        "request-direct",
        "datagram",
        "chain-event",
        "chain-request",
    ] {
        assert!(
            ids.contains(&format!("{expected}@1024").as_str()),
            "{expected} missing: {ids:?}"
        );
    }
    for row in rows {
        check_schema("row", row);
        let cells = row["cells"].as_array().unwrap();
        // Two fixed rates and the maximum.
        assert_eq!(cells.len(), 3, "{}", row["id"]);
        for cell in cells {
            check_schema("cell", cell);
            check_schema("generator", &cell["generator"]);
            assert!(
                cell["delivered"].as_u64().unwrap() > 0,
                "{}: {cell}",
                row["id"]
            );
            // A figure, or the reason there is none.
            let behind = cell["generator"]["behind"].as_bool().unwrap();
            assert_eq!(cell["latency"].is_null(), behind, "{}: {cell}", row["id"]);
            if behind {
                assert!(cell["note"].as_str().unwrap().contains("fell behind"));
            } else {
                check_schema("latency", &cell["latency"]);
            }
            for p in cell["processes"].as_array().unwrap() {
                check_schema("process", p);
            }
        }
    }

    // Datagrams: what the receiver counted lost is exactly what it missed (the drop hook
    // discarded every 7th before counting, so there is loss to count).
    let datagram = rows.iter().find(|r| r["id"] == "datagram@1024").unwrap();
    let cells = datagram["cells"].as_array().unwrap();
    let missed: u64 = cells.iter().map(|c| c["loss"].as_u64().unwrap()).sum();
    let counted: u64 = cells
        .iter()
        .map(|c| c["lost_counted"].as_u64().unwrap())
        .sum();
    assert!(missed > 0);
    assert_eq!(counted, missed);

    // The consumer down: the broker keeps everything, direct never reports success for an
    // event nobody handled, datagrams are lost.
    let properties = m["properties"].as_array().unwrap();
    let down = |way: &str| {
        let p = properties.iter().find(|p| p["way"] == way).unwrap();
        check_schema("properties", p);
        check_schema("property", &p["survives_consumer_down"]);
        p.clone()
    };
    let brokered = down("brokered");
    assert_eq!(brokered["survives_consumer_down"]["value"], true);
    let counts = &brokered["consumer_down"];
    check_schema("consumer_down", counts);
    assert!(counts["published_ok"].as_u64().unwrap() > 0);
    assert_eq!(counts["delivered_after"], counts["published_ok"]);
    let direct = down("direct");
    assert_eq!(direct["survives_consumer_down"]["value"], false);
    let counts = &direct["consumer_down"];
    assert!(
        counts["published_ok"].as_u64().unwrap() <= counts["delivered_after"].as_u64().unwrap(),
        "{counts}"
    );
    assert_eq!(
        counts["published_ok"].as_u64().unwrap() + counts["failed"].as_u64().unwrap(),
        counts["offered"].as_u64().unwrap()
    );
    let datagram = down("datagram");
    assert_eq!(datagram["survives_consumer_down"]["value"], false);
    assert_eq!(datagram["consumer_down"]["delivered_after"], 0);

    let ranking = m["ranking"].as_array().unwrap();
    assert_eq!(ranking.len(), 4);
    for r in ranking {
        check_schema("ranked", r);
        assert!(!r["reason"].as_str().unwrap().is_empty());
    }
}

fn advise(args: &[&str]) -> std::process::Output {
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/fixtures/matrix.json");
    let mut command: Command = herald();
    command.args(["advise", "--from", fixture]).args(args);
    command.output().unwrap()
}

#[test]
fn advise_ranks_fixed_inputs_the_same_way_every_time() {
    let ways = |args: &[&str]| -> Vec<String> {
        let out = advise(&[&["--output", "json"][..], args].concat());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["ranking"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["way"].as_str().unwrap().to_string())
            .collect()
    };
    let zero = [
        "--latency",
        "0",
        "--throughput",
        "0",
        "--durability",
        "0",
        "--footprint",
        "0",
        "--independence",
        "0",
        "--confirmation",
        "0",
    ];
    let only = |name: &str| -> Vec<String> {
        let mut args: Vec<&str> = zero.to_vec();
        let at = args.iter().position(|a| *a == name).unwrap();
        args[at + 1] = "5";
        ways(&args)
    };
    assert_eq!(only("--durability")[0], "brokered");
    assert_eq!(only("--latency")[0], "datagram");
    assert_eq!(*only("--independence").last().unwrap(), "brokered");
    assert_eq!(*only("--confirmation").last().unwrap(), "datagram");
    // The same inputs give the same ranking and the same sentences.
    let text = |args: &[&str]| String::from_utf8(advise(args).stdout).unwrap();
    let weighted = [
        "--latency",
        "5",
        "--durability",
        "3",
        "--throughput",
        "2",
        "--footprint",
        "1",
    ];
    assert_eq!(text(&weighted), text(&weighted));
    assert_eq!(
        text(&weighted)
            .lines()
            .filter(|l| l.starts_with(['1', '2', '3', '4']))
            .count(),
        4
    );
}

#[test]
fn advise_refuses_bad_weights_with_a_clear_error() {
    let out = advise(&["--latency", "9"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--latency 9 is out of range: weights go from 0 to 5"),
        "{stderr}"
    );
    let zero = [
        "--latency",
        "0",
        "--throughput",
        "0",
        "--durability",
        "0",
        "--footprint",
        "0",
        "--independence",
        "0",
        "--confirmation",
        "0",
    ];
    let out = advise(&zero);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("every weight is 0"));
    let out = advise(&["--latency", "-1"]);
    assert_eq!(out.status.code(), Some(2));
}
