//! The `herald` command: one binary for the broker (`serve`), its clients and brokerless peers.
//!
//! Each subcommand lives in its own module with its own clap `Args`/`Command` type; this file only
//! wires them together, owns the options every client command shares, and turns errors into the
//! documented exit codes (see [`exit`]).

mod bench;
mod cleaner_progress;
mod client;
mod consume;
mod exit;
mod group;
mod logdirs;
mod matrix;
mod output;
mod peer;
mod process;
mod produce;
mod security;
mod serve;
mod settings;
mod topic;
mod txn;

use clap::{Parser, Subcommand};

pub use exit::CliError;
pub use output::Output;

/// Options shared by every client command.
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// Kafka bootstrap address of the broker to talk to (any Kafka-compatible broker works).
    #[arg(
        long,
        global = true,
        env = "HERALD_BOOTSTRAP",
        default_value = "127.0.0.1:9092"
    )]
    pub bootstrap: String,
    /// How results are printed: `table` for people (alias `text`), `json` for scripts
    /// (one document for listings, one object per line for streams).
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// A librdkafka property for the client, like kcat's: `-X security.protocol=SASL_SSL`
    /// (repeatable; later ones win over --client-config).
    #[arg(short = 'X', long = "client-property", global = true, value_name = "KEY=VALUE", value_parser = client::parse_key_value)]
    pub client_properties: Vec<(String, String)>,
    /// A file of librdkafka properties, one `key=value` per line (`#` comments), for settings
    /// that should not be on the command line such as `sasl.password`.
    #[arg(long, global = true, value_name = "FILE", env = "HERALD_CLIENT_CONFIG")]
    pub client_config: Option<std::path::PathBuf>,
}

#[derive(Debug, Parser)]
#[command(
    name = "herald",
    version,
    about = "Herald: brokered, direct, datagram and request/response events in one binary.",
    after_help = exit::HELP,
    propagate_version = true
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker: a Kafka-wire-compatible server with embedded storage, /health and /metrics.
    Serve(serve::ServeArgs),
    /// Topics: create, list, describe (partitions, offsets, size, configs), alter, delete.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Send one event per input line (stdin or --file) to a topic and report what was stored.
    Produce(produce::ProduceArgs),
    /// Print a topic's events, one per line, from a chosen position; optionally as a group.
    Consume(consume::ConsumeArgs),
    /// Consumer groups: list, describe (members, committed offsets, lag), reset offsets, delete.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Transactions: list transactional ids, describe one (producer, state, partitions).
    #[command(subcommand)]
    Txn(txn::TxnCommand),
    /// Load generators and the trade-off matrix: produce, consume, end to end, the disk's group
    /// commit, and every way of delivery measured against this machine's limits.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Rank the ways of delivery for your priorities (weights 0 to 5) from the last matrix run,
    /// or from the reference figures shipped with Herald.
    Advise(matrix::AdviseArgs),
    /// Brokerless events: serve a topic as a group member, publish direct or datagram events,
    /// request/response, and a benchmark against bare sockets.
    #[command(subcommand)]
    Peer(peer::PeerCommand),
    /// SASL users of a broker, in its data directory: create, set-password, list, delete.
    #[command(subcommand)]
    User(security::UserCommand),
    /// ACLs of a broker, in its data directory: add, list, remove.
    #[command(subcommand)]
    Acl(security::AclCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result: Result<(), CliError> = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Topic(command) => topic::run(&cli.global, command),
        Command::Produce(args) => produce::run(&cli.global, args),
        Command::Consume(args) => consume::run(&cli.global, args),
        Command::Group(command) => group::run(&cli.global, command),
        Command::Txn(command) => txn::run(&cli.global, command),
        Command::Bench(command) => bench::run(&cli.global, command),
        Command::Advise(args) => matrix::advise(&cli.global, args),
        Command::Peer(command) => peer::run(&cli.global, command),
        Command::User(command) => security::run_user(&cli.global, command),
        Command::Acl(command) => security::run_acl(&cli.global, command),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => error.report(),
    }
}
