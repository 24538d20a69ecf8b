//! `herald topic`: create, list, describe, alter and delete topics on any Kafka-compatible
//! broker, through librdkafka's admin API and metadata requests.

use std::collections::BTreeMap;

use clap::Subcommand;
use rdkafka::admin::{
    AlterConfig, ConfigSource, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::consumer::Consumer;
use serde::Serialize;

use crate::client::{self, REQUEST_TIMEOUT};
use crate::output::{print_json, print_table};
use crate::{CliError, Global, Output};

/// `herald topic ...`
#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create(CreateArgs),
    /// List topics with their partition counts.
    List(ListArgs),
    /// Show a topic's partitions (leader, earliest and latest offsets, size on disk, and with
    /// --metrics-url the log cleaner's progress on a compacted topic) and its configuration.
    Describe {
        /// The topic name.
        topic: String,
        /// A Herald broker's metrics address (`http://127.0.0.1:8092/metrics`): adds each
        /// partition's log cleaner progress, which Kafka requests do not report.
        #[arg(long, env = "HERALD_METRICS_URL", value_name = "URL")]
        metrics_url: Option<String>,
    },
    /// Change a topic's configuration or raise its partition count.
    Alter(AlterArgs),
    /// Delete a topic and every event in it.
    Delete {
        /// The topic name.
        topic: String,
    },
}

/// Arguments of `herald topic create`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The topic name.
    topic: String,
    /// Number of partitions.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
    partitions: i32,
    /// Copies of each partition (brokers that do not replicate accept only 1).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
    replication_factor: i32,
    /// A topic setting, e.g. `retention.ms=86400000`; repeat for more.
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = client::parse_key_value)]
    configs: Vec<(String, String)>,
}

/// Arguments of `herald topic list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Also list internal topics (names starting with `__`, such as `__consumer_offsets`).
    #[arg(long)]
    internal: bool,
}

/// Arguments of `herald topic alter`.
#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("change").required(true).multiple(true).args(["configs", "delete_configs", "partitions"]))]
pub struct AlterArgs {
    /// The topic name.
    topic: String,
    /// A topic setting to set, e.g. `retention.ms=86400000`; repeat for more. Settings not named
    /// keep their current values.
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = client::parse_key_value)]
    configs: Vec<(String, String)>,
    /// A topic setting to remove, so the broker's default applies again; repeat for more.
    #[arg(long = "delete-config", value_name = "KEY")]
    delete_configs: Vec<String>,
    /// The new, larger, partition count.
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
    partitions: Option<i32>,
}

/// Runs one `herald topic` command.
pub fn run(global: &Global, command: TopicCommand) -> Result<(), CliError> {
    match command {
        TopicCommand::Create(args) => create(global, &args),
        TopicCommand::List(args) => list(global, &args),
        TopicCommand::Describe { topic, metrics_url } => {
            describe(global, &topic, metrics_url.as_deref())
        }
        TopicCommand::Alter(args) => alter(global, &args),
        TopicCommand::Delete { topic } => delete(global, &topic),
    }
}

/// What a mutating command reports in `--output json`.
#[derive(Debug, Serialize)]
struct Done<'a> {
    topic: &'a str,
    action: &'a str,
}

fn report_done(global: &Global, topic: &str, action: &str) -> Result<(), CliError> {
    match global.output {
        Output::Json => json(&Done { topic, action }),
        Output::Table => {
            println!("topic {topic} {action}");
            Ok(())
        }
    }
}

fn json<T: Serialize>(value: &T) -> Result<(), CliError> {
    print_json(value, false).map_err(|error| CliError::Other(error.into()))
}

fn create(global: &Global, args: &CreateArgs) -> Result<(), CliError> {
    client::probe_tcp(global)?;
    let admin = client::admin(global)?;
    let mut new_topic = NewTopic::new(
        &args.topic,
        args.partitions,
        TopicReplication::Fixed(args.replication_factor),
    );
    for (key, value) in &args.configs {
        new_topic = new_topic.set(key, value);
    }
    let results = client::block_on(admin.create_topics([&new_topic], &client::admin_options()))?
        .map_err(|error| client::kafka_error(global, "creating the topic", error))?;
    for result in results {
        if let Err((name, code)) = result {
            return Err(client::topic_code_error(
                global,
                &name,
                "creating the topic",
                code,
            ));
        }
    }
    report_done(global, &args.topic, "created")
}

/// One row of `herald topic list`.
#[derive(Debug, Serialize)]
struct TopicSummary {
    topic: String,
    partitions: usize,
}

fn list(global: &Global, args: &ListArgs) -> Result<(), CliError> {
    let consumer = client::metadata_client(global)?;
    let metadata = client::fetch_metadata(global, &consumer, None)?;
    let mut topics: Vec<TopicSummary> = metadata
        .topics()
        .iter()
        .filter(|t| args.internal || !t.name().starts_with("__"))
        .map(|t| TopicSummary {
            topic: t.name().to_string(),
            partitions: t.partitions().len(),
        })
        .collect();
    topics.sort_by(|a, b| a.topic.cmp(&b.topic));
    match global.output {
        Output::Json => json(&topics),
        Output::Table => {
            let rows: Vec<Vec<String>> = topics
                .iter()
                .map(|t| vec![t.topic.clone(), t.partitions.to_string()])
                .collect();
            print_table(&["TOPIC", "PARTITIONS"], &rows);
            Ok(())
        }
    }
}

/// One partition in `herald topic describe`.
#[derive(Debug, Serialize)]
struct PartitionInfo {
    partition: i32,
    leader: i32,
    replicas: Vec<i32>,
    in_sync: Vec<i32>,
    /// The first offset still stored.
    earliest: i64,
    /// The offset the next event will get.
    latest: i64,
    /// Bytes on disk, or null when the broker does not report it.
    size_bytes: Option<u64>,
    /// The log cleaner's progress, when asked for (--metrics-url) and the partition is
    /// compacted; null otherwise.
    cleaner: Option<crate::cleaner_progress::Progress>,
}

/// One setting in `herald topic describe`.
#[derive(Debug, Serialize)]
struct ConfigInfo {
    name: String,
    value: Option<String>,
    /// Where the value comes from: topic, broker, default, ...
    source: &'static str,
}

/// The whole `herald topic describe` document.
#[derive(Debug, Serialize)]
struct TopicDescription {
    topic: String,
    partitions: Vec<PartitionInfo>,
    /// Bytes on disk over all partitions, or null when the broker does not report it.
    size_bytes: Option<u64>,
    configs: Vec<ConfigInfo>,
}

fn source_name(source: &ConfigSource) -> &'static str {
    match source {
        ConfigSource::DynamicTopic => "topic",
        ConfigSource::DynamicBroker
        | ConfigSource::DynamicDefaultBroker
        | ConfigSource::StaticBroker => "broker",
        ConfigSource::Default => "default",
        ConfigSource::Unknown => "unknown",
    }
}

fn describe(global: &Global, topic: &str, metrics_url: Option<&str>) -> Result<(), CliError> {
    let consumer = client::metadata_client(global)?;
    let metadata = client::fetch_metadata(global, &consumer, Some(topic))?;
    let Some(meta) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(client::topic_not_found(topic));
    };
    let sizes = crate::logdirs::partition_sizes(&metadata, topic);
    let mut cleaner = match metrics_url {
        Some(url) => crate::cleaner_progress::read(url, topic)?,
        None => Default::default(),
    };
    let mut partitions = Vec::with_capacity(meta.partitions().len());
    for p in meta.partitions() {
        let (earliest, latest) = consumer
            .fetch_watermarks(topic, p.id(), REQUEST_TIMEOUT)
            .map_err(|error| {
                client::kafka_error(
                    global,
                    &format!("reading the offsets of partition {}", p.id()),
                    error,
                )
            })?;
        partitions.push(PartitionInfo {
            partition: p.id(),
            leader: p.leader(),
            replicas: p.replicas().to_vec(),
            in_sync: p.isr().to_vec(),
            earliest,
            latest,
            size_bytes: sizes.as_ref().and_then(|s| s.get(&p.id()).copied()),
            cleaner: cleaner.remove(&p.id()),
        });
    }
    partitions.sort_by_key(|p| p.partition);
    let size_bytes = match &sizes {
        Some(_) => partitions.iter().map(|p| p.size_bytes).sum(),
        None => None,
    };
    let configs = describe_configs(global, topic)?;
    let description = TopicDescription {
        topic: topic.to_string(),
        partitions,
        size_bytes,
        configs,
    };
    match global.output {
        Output::Json => json(&description),
        Output::Table => {
            print_description(&description);
            Ok(())
        }
    }
}

fn print_description(d: &TopicDescription) {
    let size = |s: Option<u64>| s.map_or_else(|| "unknown".to_string(), |b| b.to_string());
    println!("topic: {}", d.topic);
    println!("partitions: {}", d.partitions.len());
    println!("size on disk (bytes): {}", size(d.size_bytes));
    println!();
    let list = |ids: &[i32]| ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
    let rows: Vec<Vec<String>> = d
        .partitions
        .iter()
        .map(|p| {
            vec![
                p.partition.to_string(),
                p.leader.to_string(),
                list(&p.replicas),
                list(&p.in_sync),
                p.earliest.to_string(),
                p.latest.to_string(),
                (p.latest - p.earliest).to_string(),
                size(p.size_bytes),
            ]
        })
        .collect();
    print_table(
        &[
            "PARTITION",
            "LEADER",
            "REPLICAS",
            "IN-SYNC",
            "EARLIEST",
            "LATEST",
            "EVENTS",
            "BYTES",
        ],
        &rows,
    );
    let cleaned: Vec<Vec<String>> = d
        .partitions
        .iter()
        .filter_map(|p| {
            let c = p.cleaner.as_ref()?;
            let dirty_percent = (c.dirty_bytes * 100)
                .checked_div(c.cleanable_bytes)
                .unwrap_or(0);
            Some(vec![
                p.partition.to_string(),
                c.cleaned_to_offset.to_string(),
                c.dirty_bytes.to_string(),
                c.cleanable_bytes.to_string(),
                format!("{dirty_percent}%"),
            ])
        })
        .collect();
    if !cleaned.is_empty() {
        println!();
        print_table(
            &[
                "PARTITION",
                "CLEANED-TO",
                "DIRTY-BYTES",
                "CLEANABLE-BYTES",
                "DIRTY",
            ],
            &cleaned,
        );
    }
    println!();
    let rows: Vec<Vec<String>> = d
        .configs
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                c.value.clone().unwrap_or_default(),
                c.source.to_string(),
            ]
        })
        .collect();
    print_table(&["CONFIG", "VALUE", "SOURCE"], &rows);
}

fn describe_configs(global: &Global, topic: &str) -> Result<Vec<ConfigInfo>, CliError> {
    let admin = client::admin(global)?;
    let results = client::block_on(
        admin.describe_configs([&ResourceSpecifier::Topic(topic)], &client::admin_options()),
    )?
    .map_err(|error| client::kafka_error(global, "reading the topic's configuration", error))?;
    let mut configs = Vec::new();
    for result in results {
        let resource = result.map_err(|code| {
            client::topic_code_error(global, topic, "reading the configuration", code)
        })?;
        for entry in resource.entries {
            configs.push(ConfigInfo {
                value: if entry.is_sensitive {
                    Some("(sensitive)".to_string())
                } else {
                    entry.value
                },
                source: source_name(&entry.source),
                name: entry.name,
            });
        }
    }
    configs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(configs)
}

fn alter(global: &Global, args: &AlterArgs) -> Result<(), CliError> {
    let consumer = client::metadata_client(global)?;
    let metadata = client::fetch_metadata(global, &consumer, Some(&args.topic))?;
    let admin = client::admin(global)?;
    if !args.configs.is_empty() || !args.delete_configs.is_empty() {
        // AlterConfigs replaces the topic's whole set of overrides, so the overrides already in
        // place are read first and sent again with the new values on top; otherwise changing
        // one setting would silently reset every other.
        let current = describe_configs(global, &args.topic)?;
        let mut wanted: BTreeMap<String, String> = current
            .into_iter()
            .filter(|c| c.source == "topic")
            .filter_map(|c| c.value.map(|v| (c.name, v)))
            .collect();
        for key in &args.delete_configs {
            wanted.remove(key);
        }
        for (key, value) in &args.configs {
            wanted.insert(key.clone(), value.clone());
        }
        let mut change = AlterConfig::new(ResourceSpecifier::Topic(&args.topic));
        for (key, value) in &wanted {
            change = change.set(key, value);
        }
        let results = client::block_on(admin.alter_configs([&change], &client::admin_options()))?
            .map_err(|error| {
            client::kafka_error(global, "changing the configuration", error)
        })?;
        for result in results {
            if let Err((_, code)) = result {
                return Err(client::topic_code_error(
                    global,
                    &args.topic,
                    "changing the configuration",
                    code,
                ));
            }
        }
    }
    if let Some(count) = args.partitions {
        let current = metadata
            .topics()
            .iter()
            .find(|t| t.name() == args.topic)
            .map_or(0, |t| t.partitions().len());
        let count = usize::try_from(count).unwrap_or(0);
        if count < current {
            return Err(CliError::Refused(format!(
                "topic {} has {current} partitions; partitions can only be added, not removed",
                args.topic
            )));
        }
        if count > current {
            let change = NewPartitions::new(&args.topic, count);
            let results =
                client::block_on(admin.create_partitions([&change], &client::admin_options()))?
                    .map_err(|error| client::kafka_error(global, "adding partitions", error))?;
            for result in results {
                if let Err((name, code)) = result {
                    return Err(client::topic_code_error(
                        global,
                        &name,
                        "adding partitions",
                        code,
                    ));
                }
            }
        }
    }
    report_done(global, &args.topic, "altered")
}

fn delete(global: &Global, topic: &str) -> Result<(), CliError> {
    client::probe_tcp(global)?;
    let admin = client::admin(global)?;
    let results = client::block_on(admin.delete_topics(&[topic], &client::admin_options()))?
        .map_err(|error| client::kafka_error(global, "deleting the topic", error))?;
    for result in results {
        if let Err((name, code)) = result {
            return Err(client::topic_code_error(
                global,
                &name,
                "deleting the topic",
                code,
            ));
        }
    }
    report_done(global, topic, "deleted")
}
