//! `sms-service`: the consumer group of the notifications example that sends each SMS, or, with
//! `--listen`, the HTTP service the direct-call design calls.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use herald::{Bus, RetryPolicy};
use notifications::calls::sms_router;
use notifications::messages::Names;
use notifications::provider::StandInProvider;
use notifications::sender::{Sender, SenderConfig};
use notifications::signals::{init_logging, stop_signal};

/// Sends the SMS requested on the `sms` topic through a stand-in provider (a file), publishes
/// each outcome to `sms.results`, retries failures and dead-letters what keeps failing to
/// `sms.dlq` (see the topic and group flags).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Kafka address of the Herald broker.
    #[arg(
        long,
        value_name = "HOST:PORT",
        env = "HERALD_BOOTSTRAP",
        default_value = "127.0.0.1:9092"
    )]
    bootstrap: String,
    /// Serve `POST /sms` over HTTP on this address instead of consuming the `sms` topic: the
    /// direct-call design (port 0: any free port; the address is printed).
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// How long each provider call takes, like a real SMS API's round trip.
    #[arg(long, default_value_t = 0)]
    provider_ms: u64,
    /// The stand-in provider's log: one JSON line per SMS "sent" (not a real SMS gateway).
    #[arg(long, value_name = "FILE")]
    provider_log: PathBuf,
    /// Probability (0 to 1) that a provider call fails, to exercise retries and dead letters.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    fail_rate: f64,
    /// Provider calls per SMS before it is dead-lettered to `sms.dlq`.
    #[arg(long, default_value_t = 5)]
    attempts: u32,
    /// Wait after the first failed call; it doubles after each further one.
    #[arg(long, default_value_t = 200)]
    backoff_ms: u64,
    /// Longest wait between two calls.
    #[arg(long, default_value_t = 30_000)]
    backoff_ms_max: u64,
    /// SMS sent at once (one recipient's messages are always sent one after the other).
    #[arg(long, default_value_t = herald::CONCURRENCY_DEFAULT)]
    concurrency: usize,
    /// How long the broker waits for a silent member before giving its partitions to another;
    /// after a crash, a restarted sms-service resumes at most this much later.
    #[arg(long, default_value_t = 10_000)]
    session_timeout_ms: u64,
    #[command(flatten)]
    names: Names,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    let args = Args::parse();
    let signal = stop_signal().context("installing signal handlers")?;
    let provider = StandInProvider::open(&args.provider_log, args.fail_rate)
        .context("opening the stand-in provider")?
        .with_latency(Duration::from_millis(args.provider_ms));
    if let Some(listen) = &args.listen {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let addr = listener.local_addr()?;
        // Scripts (and the tests) read the bound address from this line.
        println!("listening on {addr}");
        tracing::info!(%addr, provider_log = %args.provider_log.display(), "sms service ready over HTTP");
        axum::serve(listener, sms_router(Arc::new(provider)))
            .with_graceful_shutdown(async move {
                let name = signal.await;
                tracing::info!(signal = name, "shutting down");
            })
            .await
            .context("serving HTTP")?;
        return Ok(());
    }
    let bus = Bus::builder()
        .broker(&args.bootstrap)
        .option("session.timeout.ms", args.session_timeout_ms.to_string())
        .connect()
        .await
        .context("connecting to the broker")?;
    let config = SenderConfig {
        retry: RetryPolicy::attempts(args.attempts).backoff(
            Duration::from_millis(args.backoff_ms),
            Duration::from_millis(args.backoff_ms_max),
        ),
        concurrency: args.concurrency,
        names: args.names.clone(),
    };
    let sender = Sender::start(bus.clone(), Arc::new(provider), config)
        .await
        .context("subscribing to the sms topics")?;
    tracing::info!(bootstrap = %args.bootstrap, provider_log = %args.provider_log.display(), "sms service ready");
    let name = signal.await;
    tracing::info!(signal = name, "shutting down: finishing the SMS in flight");
    let stats = sender
        .shutdown()
        .await
        .context("stopping the subscriptions")?;
    tracing::info!(?stats, "stopped");
    bus.close().await;
    Ok(())
}
