//! A Kafka-wire-compatible broker on the Herald segment log, embeddable in-process.
//!
//! [`Broker::start`] binds the Kafka listener and serves until [`Broker::shutdown`]. Existing
//! Kafka clients (librdkafka and everything built on it, the Java client) talk to it unchanged.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use herald_broker::{Broker, BrokerConfig};
//! let broker = Broker::start(BrokerConfig {
//!     data_dir: "./herald-data".into(),
//!     kafka_addr: "127.0.0.1:0".parse()?,
//!     ..Default::default()
//! })
//! .await?;
//! println!("bootstrap.servers={}", broker.kafka_addr());
//! broker.shutdown().await?;
//! # Ok(())
//! # }
//! ```

mod config;
pub mod group;
pub mod http;
pub mod metrics;
#[allow(dead_code, reason = "the categories are mapped as their handlers land")]
mod problem;
mod stats;
mod wire;

#[doc(hidden)]
pub use wire::codec::fuzz_decode;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use config::BrokerConfig;
pub use stats::BrokerStats;
use stats::Counters;

/// State shared by every connection and background task of one broker.
pub(crate) struct Core {
    pub(crate) config: BrokerConfig,
    pub(crate) counters: Counters,
    /// Host and port given to clients in Metadata responses.
    #[allow(dead_code, reason = "read by the Metadata handler")]
    pub(crate) advertised: (String, i32),
    /// Flips to `true` when the broker starts stopping.
    pub(crate) stopping: watch::Receiver<bool>,
}

/// A running broker. Dropping it without [`shutdown`](Self::shutdown) stops accepting
/// connections but does not wait for in-flight requests or flush the logs.
pub struct Broker {
    core: Arc<Core>,
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The Kafka listener could not bind its address.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The data directory could not be created or read.
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        /// The configured directory.
        path: std::path::PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The configuration is inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Why the broker did not stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShutdownError {
    /// A background task panicked.
    #[error("a broker task failed: {0}")]
    Task(String),
}

impl Broker {
    /// Starts a broker: opens the data directory, binds the Kafka listener (port 0 picks a free
    /// port) and starts serving.
    pub async fn start(config: BrokerConfig) -> Result<Broker, StartError> {
        if config.num_partitions == 0 || config.num_partitions > config.partitions_per_topic_max {
            return Err(StartError::Config(format!(
                "num_partitions must be between 1 and partitions_per_topic_max ({})",
                config.partitions_per_topic_max
            )));
        }
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let listener = TcpListener::bind(config.kafka_addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.kafka_addr,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.kafka_addr,
            source,
        })?;
        let host = config
            .advertised_host
            .clone()
            .unwrap_or_else(|| local_addr.ip().to_string());
        let (stop, stopping) = watch::channel(false);
        let core = Arc::new(Core {
            config,
            counters: Counters::default(),
            advertised: (host, i32::from(local_addr.port())),
            stopping,
        });
        let accept = tokio::spawn(accept_loop(core.clone(), listener));
        info!(kafka_addr = %local_addr, "broker listening");
        Ok(Broker {
            core,
            local_addr,
            stop,
            tasks: Mutex::new(vec![accept]),
        })
    }

    /// The address the Kafka listener is bound to (with the actual port when 0 was asked).
    pub fn kafka_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Same as [`kafka_addr`](Self::kafka_addr).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A snapshot of the broker's counters and sizes; cheap enough to call per scrape.
    pub fn stats(&self) -> BrokerStats {
        self.core.counters.snapshot(wire::versions::name_of_key)
    }

    /// Stops accepting connections, lets requests in flight finish (long polls end early),
    /// and flushes every log to disk. Calling it again is harmless.
    pub async fn shutdown(&self) -> Result<(), ShutdownError> {
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock());
        let mut failure = None;
        for task in tasks {
            if let Err(error) = task.await {
                failure = Some(error.to_string());
            }
        }
        info!("broker stopped");
        match failure {
            Some(message) => Err(ShutdownError::Task(message)),
            None => Ok(()),
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Accepts connections until the broker stops, then waits for every connection to finish.
async fn accept_loop(core: Arc<Core>, listener: TcpListener) {
    let mut stopping = core.stopping.clone();
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stopping.wait_for(|stopping| *stopping) => break,
            accepted = listener.accept() => accepted,
            // Reap finished connections so the set does not grow with the broker's lifetime.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and similar: the listener itself is fine, so back
                // off briefly instead of spinning.
                warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let open = core.counters.connections_open.load(Ordering::Relaxed);
        if open >= u64::from(core.config.connections_max) {
            Counters::add(&core.counters.connections_refused, 1);
            warn!(%peer, connections_max = core.config.connections_max, "refusing connection: too many open");
            drop(stream);
            continue;
        }
        Counters::add(&core.counters.connections_accepted, 1);
        core.counters
            .connections_open
            .fetch_add(1, Ordering::Relaxed);
        let connection_core = core.clone();
        let stop = core.stopping.clone();
        connections.spawn(async move {
            wire::serve_connection(connection_core.clone(), stream, peer, stop).await;
            connection_core
                .counters
                .connections_open
                .fetch_sub(1, Ordering::Relaxed);
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}
