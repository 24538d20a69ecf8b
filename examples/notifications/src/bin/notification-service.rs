//! `notification-service`: the HTTP front door of the notifications example.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use herald::Bus;
use notifications::notifier::{Notifier, NotifierConfig};
use notifications::signals::{init_logging, stop_signal};
use notifications::status::NOTIFICATIONS_MAX_DEFAULT;

/// Accepts SMS notifications over HTTP, publishes them to the `sms` topic and reports their
/// status from `sms.results`.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address the HTTP server listens on (port 0: any free port; the address is printed).
    #[arg(long, value_name = "HOST:PORT")]
    listen: String,
    /// Kafka address of the Herald broker.
    #[arg(
        long,
        value_name = "HOST:PORT",
        env = "HERALD_BOOTSTRAP",
        default_value = "127.0.0.1:9092"
    )]
    bootstrap: String,
    /// Notifications tracked for `GET /notifications/{id}`; the oldest are forgotten beyond it.
    #[arg(long, default_value_t = NOTIFICATIONS_MAX_DEFAULT)]
    notifications_max: usize,
    /// Longest a `POST` waits for the broker to store the request before answering 503.
    #[arg(long, default_value_t = 10_000)]
    publish_timeout_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    let args = Args::parse();
    let signal = stop_signal().context("installing signal handlers")?;
    let bus = Bus::builder()
        .broker(&args.bootstrap)
        .publish_timeout(Duration::from_millis(args.publish_timeout_ms))
        .connect()
        .await
        .context("connecting to the broker")?;
    let notifier = Notifier::start(
        bus.clone(),
        NotifierConfig {
            notifications_max: args.notifications_max,
        },
    )
    .await
    .context("subscribing to the sms topics")?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    // Scripts (and the tests) read the bound address from this line.
    println!("listening on {addr}");
    tracing::info!(%addr, bootstrap = %args.bootstrap, "notification service ready");
    axum::serve(listener, notifier.router())
        .with_graceful_shutdown(async move {
            let name = signal.await;
            tracing::info!(signal = name, "shutting down");
        })
        .await
        .context("serving HTTP")?;
    notifier
        .shutdown()
        .await
        .context("stopping the subscriptions")?;
    bus.close().await;
    Ok(())
}
