//! `herald topic create|list|describe|alter|delete` against a started broker.

use serde_json::Value;

use super::harness::Broker;

fn config_value(description: &Value, name: &str) -> Option<(String, String)> {
    description["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .map(|c| {
            (
                c["value"].as_str().unwrap_or_default().to_string(),
                c["source"].as_str().unwrap().to_string(),
            )
        })
}

fn listed(broker: &Broker) -> Vec<(String, u64)> {
    let run = broker.herald(&["--output", "json", "topic", "list"]);
    run.assert_code(0);
    run.json()
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["topic"].as_str().unwrap().to_string(),
                t["partitions"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn topic_lifecycle_create_list_describe_alter_delete() {
    let broker = Broker::start();
    let n_orders = broker.name("orders");
    let n_audit = broker.name("audit");

    let out = broker.ok(&[
        "topic",
        "create",
        &n_orders,
        "--partitions",
        "3",
        "--config",
        "retention.ms=3600000",
    ]);
    assert!(out.contains(&n_orders), "{out}");
    broker.ok(&["topic", "create", &n_audit]);

    assert_eq!(
        broker.own(listed(&broker)),
        vec![(n_audit.clone(), 1), (n_orders.clone(), 3)]
    );
    let table = broker.ok(&["topic", "list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("TOPIC"), "{table}");
    assert!(
        lines
            .iter()
            .any(|l| l.split_whitespace().eq([n_orders.as_str(), "3"])),
        "{table}"
    );

    let description = broker.herald(&["--output", "json", "topic", "describe", &n_orders]);
    description.assert_code(0);
    let description = description.json();
    assert_eq!(description["topic"], n_orders.as_str());
    let partitions = description["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 3);
    for (i, p) in partitions.iter().enumerate() {
        assert_eq!(p["partition"], i as u64);
        assert_eq!(p["earliest"], 0);
        assert_eq!(p["latest"], 0);
        // The broker answers DescribeLogDirs, so an empty partition is 0 bytes, not unknown.
        assert_eq!(p["size_bytes"], 0, "{p}");
    }
    assert_eq!(description["size_bytes"], 0);
    assert_eq!(
        config_value(&description, "retention.ms"),
        Some(("3600000".to_string(), "topic".to_string()))
    );
    let table = broker.ok(&["topic", "describe", &n_orders]);
    assert!(table.contains("PARTITION"), "{table}");
    assert!(table.contains("retention.ms"), "{table}");

    // What was produced shows as bytes on disk, in its partition and in the topic's total.
    let produced = broker.herald_with_input(
        &["produce", &n_orders, "--partition", "1"],
        b"first event\nsecond event\nthird event\n",
    );
    produced.assert_code(0);
    let description = broker
        .herald(&["--output", "json", "topic", "describe", &n_orders])
        .json();
    let sizes: Vec<u64> = description["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["size_bytes"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes[0], 0, "{description}");
    assert!(sizes[1] > 3 * "first event".len() as u64, "{description}");
    assert_eq!(sizes[2], 0, "{description}");
    assert_eq!(description["size_bytes"].as_u64(), Some(sizes[1]));
    let table = broker.ok(&["topic", "describe", &n_orders]);
    assert!(
        table.contains(&format!("size on disk (bytes): {}", sizes[1])),
        "{table}"
    );

    // Changing one setting keeps the others the topic already overrides.
    broker.ok(&["topic", "alter", &n_orders, "--config", "segment.ms=600000"]);
    let description = broker
        .herald(&["--output", "json", "topic", "describe", &n_orders])
        .json();
    assert_eq!(
        config_value(&description, "segment.ms").map(|c| c.0),
        Some("600000".to_string())
    );
    assert_eq!(
        config_value(&description, "retention.ms").map(|c| c.0),
        Some("3600000".to_string())
    );

    // Removing an override brings the broker's default back.
    broker.ok(&["topic", "alter", &n_orders, "--delete-config", "segment.ms"]);
    let description = broker
        .herald(&["--output", "json", "topic", "describe", &n_orders])
        .json();
    assert_ne!(
        config_value(&description, "segment.ms").map(|c| c.1),
        Some("topic".to_string())
    );
    assert_eq!(
        config_value(&description, "retention.ms").map(|c| c.0),
        Some("3600000".to_string())
    );

    broker.ok(&["topic", "alter", &n_orders, "--partitions", "5"]);
    assert!(listed(&broker).contains(&(n_orders.clone(), 5)));
    let shrink = broker.herald(&["topic", "alter", &n_orders, "--partitions", "2"]);
    shrink.assert_code(6);

    let again = broker.herald(&["topic", "create", &n_orders]);
    again.assert_code(6);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);

    broker.ok(&["topic", "delete", &n_orders]);
    assert_eq!(broker.own(listed(&broker)), vec![(n_audit.clone(), 1)]);
    let gone = broker.herald(&["topic", "describe", &n_orders]);
    gone.assert_code(4);
    assert!(
        gone.stderr
            .contains(&format!("topic {n_orders} does not exist")),
        "{}",
        gone.stderr
    );
    broker
        .herald(&["topic", "delete", &n_orders])
        .assert_code(4);
}
