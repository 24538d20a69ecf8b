//! `notification-service`: the HTTP front door of the notifications example, publishing to the
//! broker (`--via broker`, the default) or calling the SMS service directly (`--via http`).

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use herald::Bus;
use notifications::calls::{CallsConfig, calling_router};
use notifications::client::authority_of;
use notifications::messages::Names;
use notifications::notifier::{Notifier, NotifierConfig};
use notifications::signals::{init_logging, stop_signal};
use notifications::status::NOTIFICATIONS_MAX_DEFAULT;

/// Accepts SMS notifications over HTTP, publishes them to the `sms` topic and reports their
/// status from `sms.results` (see the topic flags); or, with `--via http`, calls the SMS service
/// and waits.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address the HTTP server listens on (port 0: any free port; the address is printed).
    #[arg(long, value_name = "HOST:PORT")]
    listen: String,
    /// How a notification reaches the SMS service: stored on the broker, or an HTTP call.
    #[arg(long, value_enum, default_value_t = Via::Broker)]
    via: Via,
    /// With `--via http`: the SMS service's base URL (`sms-service --listen`).
    #[arg(long, value_name = "URL", required_if_eq("via", "http"))]
    sms_url: Option<String>,
    /// With `--via http`: the usage service's base URL, told of every SMS sent.
    #[arg(long, value_name = "URL")]
    usage_url: Option<String>,
    /// With `--via http`: longest wait for each call's answer before answering 504.
    #[arg(long, default_value_t = 10_000)]
    call_timeout_ms: u64,
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
    if args.via == Via::Http {
        let sms_url = args.sms_url.as_deref().unwrap_or_default();
        let config = CallsConfig {
            sms: authority_of(sms_url).map_err(anyhow::Error::msg)?,
            usage: match &args.usage_url {
                Some(url) => Some(authority_of(url).map_err(anyhow::Error::msg)?),
                None => None,
            },
            call_timeout: Duration::from_millis(args.call_timeout_ms),
            notifications_max: args.notifications_max,
        };
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let addr = listener.local_addr()?;
        println!("listening on {addr}");
        tracing::info!(%addr, sms = %config.sms, "notification service ready, calling the SMS service directly");
        axum::serve(listener, calling_router(config))
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
        .publish_timeout(Duration::from_millis(args.publish_timeout_ms))
        .connect()
        .await
        .context("connecting to the broker")?;
    let notifier = Notifier::start(
        bus.clone(),
        NotifierConfig {
            notifications_max: args.notifications_max,
            names: args.names.clone(),
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
