//! `usage-service`: counts SMS per recipient, a second consumer of the `sms` events (or, with
//! `--via http`, told by the calling notification service), and serves `GET /usage/{to}`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use herald::Bus;
use notifications::messages::Names;
use notifications::signals::{init_logging, stop_signal};
use notifications::usage::{self, SEEN_IDS_MAX_DEFAULT, UsageBook};

/// Counts the SMS sent per recipient, each notification exactly once across crashes and
/// redeliveries, and serves the counts over HTTP.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address the HTTP server listens on (port 0: any free port; the address is printed).
    #[arg(long, value_name = "HOST:PORT")]
    listen: String,
    /// The counts and the counted ids, replaced atomically on every save.
    #[arg(long, value_name = "FILE")]
    state: PathBuf,
    /// Where the notifications come from: the `sms` topic (group `usage-service`; see the topic
    /// and group flags), or only `POST /usage` calls (the direct-call design).
    #[arg(long, value_enum, default_value_t = Via::Broker)]
    via: Via,
    /// Kafka address of the Herald broker.
    #[arg(
        long,
        value_name = "HOST:PORT",
        env = "HERALD_BOOTSTRAP",
        default_value = "127.0.0.1:9092"
    )]
    bootstrap: String,
    /// Counted ids remembered to recognise a redelivery.
    #[arg(long, default_value_t = SEEN_IDS_MAX_DEFAULT)]
    seen_ids_max: usize,
    /// Events counted at once.
    #[arg(long, default_value_t = herald::CONCURRENCY_DEFAULT)]
    concurrency: usize,
    /// How often handled events are committed to the broker; a crash redelivers what was
    /// handled since the last commit (a longer interval shows the deduplication at work).
    #[arg(long, default_value_t = 200)]
    commit_interval_ms: u64,
    /// How long the broker waits for a silent member before giving its partitions to another.
    #[arg(long, default_value_t = 10_000)]
    session_timeout_ms: u64,
    #[command(flatten)]
    names: Names,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Via {
    Broker,
    Http,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    let args = Args::parse();
    let signal = stop_signal().context("installing signal handlers")?;
    let book = UsageBook::open(&args.state, args.seen_ids_max).context("opening the usage")?;
    let subscription = match args.via {
        Via::Http => None,
        Via::Broker => {
            let bus = Bus::builder()
                .broker(&args.bootstrap)
                .option("session.timeout.ms", args.session_timeout_ms.to_string())
                .option("commit_interval_ms", args.commit_interval_ms.to_string())
                .connect()
                .await
                .context("connecting to the broker")?;
            let sub = usage::subscribe(&bus, book.clone(), args.concurrency, &args.names)
                .await
                .context("subscribing to the sms topic")?;
            Some((bus, sub))
        }
    };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    // Scripts (and the tests) read the bound address from this line.
    println!("listening on {addr}");
    tracing::info!(%addr, state = %args.state.display(), "usage service ready");
    axum::serve(listener, usage::router(book.clone()))
        .with_graceful_shutdown(async move {
            let name = signal.await;
            tracing::info!(signal = name, "shutting down");
        })
        .await
        .context("serving HTTP")?;
    if let Some((bus, sub)) = subscription {
        let stats = sub.shutdown().await.context("stopping the subscription")?;
        tracing::info!(?stats, totals = ?book.totals(), "stopped");
        bus.close().await;
    }
    Ok(())
}
