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

pub mod api;
pub mod auth;
mod config;
mod console;
pub mod group;
mod group_commit;
pub mod http;
pub mod limits;
pub mod metrics;
mod problem;
mod producer_ids;
mod stats;
mod topic_config;
mod topics;
mod txn;
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
pub use producer_ids::ProducerIdError;
pub use stats::{BrokerStats, CleanerProgress, TopicTrafficStats};
pub use topics::TopicsOpenError;

use producer_ids::ProducerIds;
use stats::Counters;
use topics::Topics;

/// Directory under the data directory holding the consumer groups' committed offsets.
const GROUPS_DIR: &str = "groups";

/// State shared by every connection and background task of one broker.
pub(crate) struct Core {
    pub(crate) config: BrokerConfig,
    pub(crate) counters: Counters,
    pub(crate) topics: Arc<Topics>,
    /// Consumer groups and their committed offsets.
    pub(crate) groups: group::Coordinator,
    pub(crate) producer_ids: ProducerIds,
    /// Transactional ids and their transactions.
    pub(crate) transactions: txn::Transactions,
    /// Listeners, TLS, SASL users, ACLs.
    pub(crate) security: auth::Security,
    /// Flips to `true` when the broker starts stopping.
    pub(crate) stopping: watch::Receiver<bool>,
}

/// A running broker. Dropping it without [`shutdown`](Self::shutdown) stops accepting
/// connections but does not wait for in-flight requests or flush the logs.
pub struct Broker {
    core: Arc<Core>,
    listeners: Vec<Arc<auth::Listener>>,
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
    /// The stored topics could not be loaded.
    #[error(transparent)]
    Topics(#[from] TopicsOpenError),
    /// The committed-offsets store could not be opened or recovered.
    #[error("cannot open the consumer groups' committed offsets: {0}")]
    Groups(#[from] group::OpenError),
    /// The producer id reservation could not be read.
    #[error(transparent)]
    ProducerIds(#[from] ProducerIdError),
    /// The transaction state could not be read.
    #[error("cannot open the transaction state: {0}")]
    Transactions(String),
}

/// Why the broker did not stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShutdownError {
    /// A background task panicked.
    #[error("a broker task failed: {0}")]
    Task(String),
    /// Some partitions could not be flushed to disk.
    #[error("{failed} partitions could not be flushed to disk")]
    Flush {
        /// How many.
        failed: usize,
    },
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
        let security_setup = auth::Setup::from_config(&config).map_err(StartError::Config)?;
        // Opening logs recovers them, which reads files: keep it off the async threads.
        let setup = security_setup.clone();
        let (topics, producer_ids, transactions, groups, security, config) =
            tokio::task::spawn_blocking(move || {
                let topics = Arc::new(Topics::open(&config)?);
                let producer_ids = ProducerIds::open(&config.data_dir)?;
                let transactions = txn::Transactions::open(&config.data_dir)
                    .map_err(|error| StartError::Transactions(error.to_string()))?;
                let groups = group::Coordinator::open(
                    &config.data_dir.join(GROUPS_DIR),
                    config.groups.clone(),
                    Arc::new(group::SystemClock),
                    topics.clone(),
                )?;
                let security = setup.open(&config.data_dir).map_err(StartError::Config)?;
                Ok::<_, StartError>((topics, producer_ids, transactions, groups, security, config))
            })
            .await
            .map_err(|error| StartError::Config(format!("start-up task failed: {error}")))??;
        let mut listeners = Vec::new();
        for spec in &security_setup.specs {
            let listener =
                TcpListener::bind(spec.addr)
                    .await
                    .map_err(|source| StartError::Bind {
                        addr: spec.addr,
                        source,
                    })?;
            let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
                addr: spec.addr,
                source,
            })?;
            let advertised = match &spec.advertised {
                Some((host, port)) => (host.clone(), i32::from(*port)),
                None => {
                    let host = match &config.advertised_host {
                        Some(host) => host.clone(),
                        // A wildcard address cannot be connected to; clients on this machine can
                        // use the loopback name, others need `advertised_host`.
                        None if local_addr.ip().is_unspecified() => {
                            warn!(listener = %spec.name, addr = %local_addr, "listening on a wildcard address without an advertised address; advertising localhost");
                            "localhost".to_string()
                        }
                        None => local_addr.ip().to_string(),
                    };
                    (host, i32::from(local_addr.port()))
                }
            };
            let info = Arc::new(auth::Listener {
                name: spec.name.clone(),
                protocol: spec.protocol,
                local_addr,
                advertised,
            });
            if info.insecure() {
                warn!(listener = %info.name, addr = %local_addr, "a PLAINTEXT listener on a non-loopback address: anyone who can reach it can read, write and delete every topic; use SASL_SSL or SSL with client certificates");
            }
            listeners.push((info, listener));
        }
        let (stop, stopping) = watch::channel(false);
        let core = Arc::new(Core {
            config,
            counters: Counters::default(),
            topics,
            producer_ids,
            transactions,
            groups,
            security,
            stopping,
        });
        // The group timer ends by itself once the last reference to the coordinator is gone.
        drop(core.groups.spawn_timer());
        let mut tasks = Vec::new();
        let mut infos = Vec::new();
        for (info, listener) in listeners {
            info!(listener = %info.name, protocol = %info.protocol, addr = %info.local_addr, "listening");
            infos.push(info.clone());
            tasks.push(tokio::spawn(accept_loop(core.clone(), listener, info)));
        }
        tasks.push(tokio::spawn(maintenance_loop(core.clone())));
        tasks.push(tokio::spawn(cleaner_loop(core.clone())));
        tasks.push(tokio::spawn(transaction_timer(core.clone())));
        let (topic_count, partition_count, _) = core.topics.totals();
        info!(kafka_addr = %infos[0].local_addr, topics = topic_count, partitions = partition_count, acls_enforced = core.security.enforce, "broker listening");
        Ok(Broker {
            core,
            listeners: infos,
            stop,
            tasks: Mutex::new(tasks),
        })
    }

    /// The address the first Kafka listener is bound to (with the actual port when 0 was
    /// asked).
    pub fn kafka_addr(&self) -> SocketAddr {
        self.listeners[0].local_addr
    }

    /// Same as [`kafka_addr`](Self::kafka_addr).
    pub fn local_addr(&self) -> SocketAddr {
        self.kafka_addr()
    }

    /// Every listener: its name, protocol and bound address, in configuration order.
    pub fn listeners(&self) -> Vec<(String, auth::SecurityProtocol, SocketAddr)> {
        self.listeners
            .iter()
            .map(|listener| {
                (
                    listener.name.clone(),
                    listener.protocol,
                    listener.local_addr,
                )
            })
            .collect()
    }

    /// The bound address of the listener with this name (`SASL_SSL`, or a mapped name).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|listener| listener.name.eq_ignore_ascii_case(name))
            .map(|listener| listener.local_addr)
    }

    /// Listeners anyone can use unauthenticated from another machine (PLAINTEXT on a
    /// non-loopback address), as `NAME://ADDR`; `/health` and `/metrics` report them.
    pub fn insecure_listeners(&self) -> Vec<String> {
        self.listeners
            .iter()
            .filter(|listener| listener.insecure())
            .map(|listener| format!("{}://{}", listener.name, listener.local_addr))
            .collect()
    }

    /// Whether `password` is `user`'s, checked against the user's stored SCRAM credential as
    /// SASL PLAIN is; runs PBKDF2, so call it off the async threads.
    pub fn check_password(&self, user: &str, password: &str) -> bool {
        [auth::Mechanism::Sha512, auth::Mechanism::Sha256]
            .into_iter()
            .find_map(|mechanism| {
                let credential = self
                    .core
                    .security
                    .users
                    .credential(user, mechanism)
                    .ok()??;
                Some(credential.matches_password(mechanism, password))
            })
            .unwrap_or(false)
    }

    /// Whether ACLs are checked on this broker.
    pub fn acls_enforced(&self) -> bool {
        self.core.security.enforce
    }

    /// Reads the TLS certificate, key and client CA files again; connections accepted from
    /// now on use them, open ones keep theirs. Without TLS listeners it does nothing.
    pub fn reload_tls(&self) -> Result<(), auth::TlsError> {
        match &self.core.security.tls {
            Some(tls) => tls.reload(),
            None => Ok(()),
        }
    }

    /// A snapshot of the broker's counters and sizes; cheap enough to call per scrape.
    pub fn stats(&self) -> BrokerStats {
        let mut stats = self.core.counters.snapshot(wire::versions::name_of_key);
        let (topics, partitions, disk_bytes) = self.core.topics.totals();
        stats.topics = topics;
        stats.partitions = partitions;
        stats.disk_bytes = disk_bytes;
        stats.partitions_loading = self.core.topics.partitions_loading();
        let files = self.core.topics.file_stats();
        stats.open_files = files.open_files;
        stats.open_files_max = files.open_files_max;
        stats.open_files_hits_total = files.hits;
        stats.open_files_misses_total = files.misses;
        stats.open_files_evictions_total = files.evictions;
        stats.limit_refusals_total = self
            .core
            .topics
            .limits
            .snapshot()
            .into_iter()
            .map(|(limit, count)| (limit.to_string(), count))
            .collect();
        stats.listeners_insecure = self.insecure_listeners().len() as u64;
        stats.cleaner_partitions = self.core.topics.cleaner_progress();
        for topic in self.core.topics.list() {
            let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
            let traffic = &topic.traffic;
            stats.topic_traffic.insert(
                topic.name.clone(),
                TopicTrafficStats {
                    bytes_in_total: load(&traffic.bytes_in),
                    records_in_total: load(&traffic.records_in),
                    bytes_out_total: load(&traffic.bytes_out),
                    records_out_total: load(&traffic.records_out),
                },
            );
        }
        stats
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
        let core = self.core.clone();
        let failed = tokio::task::spawn_blocking(move || core.topics.flush_all())
            .await
            .map_err(|error| ShutdownError::Task(error.to_string()))?;
        info!("broker stopped");
        if let Some(message) = failure {
            return Err(ShutdownError::Task(message));
        }
        if failed > 0 {
            return Err(ShutdownError::Flush { failed });
        }
        Ok(())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Accepts connections until the broker stops, then waits for every connection to finish.
async fn accept_loop(core: Arc<Core>, listener: TcpListener, info: Arc<auth::Listener>) {
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
        core.counters.listener_opened(&info.name);
        let connection_core = core.clone();
        let stop = core.stopping.clone();
        let info = info.clone();
        let listener_name = info.name.clone();
        connections.spawn(async move {
            wire::accept_connection(connection_core.clone(), stream, peer, info, stop).await;
            connection_core
                .counters
                .connections_open
                .fetch_sub(1, Ordering::Relaxed);
            connection_core.counters.listener_closed(&listener_name);
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Runs every partition's housekeeping (interval flush, roll, checkpoint) every
/// `maintenance_interval_ms`, with retention every `log_retention_check_interval_ms`, until
/// the broker stops.
/// How often the transaction coordinator looks for timed-out transactions and decided ones
/// left unfinished (by a failed marker write or a restart).
const TRANSACTION_CHECK_INTERVAL_MS: u64 = 1_000;

/// Aborts transactions past their timeout and finishes decided ones, at start-up first.
async fn transaction_timer(core: Arc<Core>) {
    let mut stopping = core.stopping.clone();
    let mut interval = tokio::time::interval(std::time::Duration::from_millis(
        TRANSACTION_CHECK_INTERVAL_MS,
    ));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopping.wait_for(|stopping| *stopping) => break,
            _ = interval.tick() => {}
        }
        let due = {
            let core = core.clone();
            match tokio::task::spawn_blocking(move || core.transactions.due(&core.producer_ids))
                .await
            {
                Ok(due) => due,
                Err(error) => {
                    warn!(%error, "transaction check failed");
                    continue;
                }
            }
        };
        for decision in due {
            let id = decision.transactional_id.clone();
            if let Err(error) = wire::txn::complete(&core, decision).await {
                warn!(transactional_id = %id, %error, "could not complete a transaction; retrying");
            }
        }
    }
}

async fn maintenance_loop(core: Arc<Core>) {
    let mut stopping = core.stopping.clone();
    let period = std::time::Duration::from_millis(core.config.maintenance_interval_ms.max(1));
    let retention_period =
        std::time::Duration::from_millis(core.config.log_retention_check_interval_ms.max(1));
    let mut last_retention = tokio::time::Instant::now();
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut quiet = QuietPeriods::new(activity(&core));
    loop {
        tokio::select! {
            _ = stopping.wait_for(|stopping| *stopping) => break,
            _ = interval.tick() => {}
        }
        let trim = quiet.tick(activity(&core));
        let retention = last_retention.elapsed() >= retention_period;
        if retention {
            last_retention = tokio::time::Instant::now();
        }
        let core = core.clone();
        let done = tokio::task::spawn_blocking(move || {
            // ACLs changed by `herald acl` in another process take effect here.
            if let Err(error) = core.security.acls.refresh() {
                warn!(%error, "could not re-read the ACLs; keeping the ones loaded");
            }
            let deleted = core.topics.maintain_all(retention);
            if retention {
                if let Err(error) = core.transactions.prune_aborted(&core.topics) {
                    warn!(%error, "cannot prune the aborted transactions listed below log starts");
                }
            }
            Counters::add(&core.counters.retention_segments_deleted, deleted);
            Counters::add(&core.counters.maintenance_passes, 1);
            if trim {
                return_free_memory();
            }
        })
        .await;
        if let Err(error) = done {
            warn!(%error, "maintenance task failed");
        }
    }
}

/// The log cleaner: one pass at a time on a blocking thread, on the dirtiest compacted
/// partition that is due, at most `cleaner_io_bytes_per_s` of I/O; waits
/// `cleaner_backoff_ms` when none is due, until the broker stops. A pass in progress at
/// shutdown finishes first (it is bounded by the throttle and the key map).
async fn cleaner_loop(core: Arc<Core>) {
    let mut stopping = core.stopping.clone();
    let backoff = std::time::Duration::from_millis(core.config.cleaner_backoff_ms.max(1));
    let throttle = Arc::new(herald_storage::Throttle::new(Some(
        core.config.cleaner_io_bytes_per_s,
    )));
    loop {
        if *stopping.borrow() {
            break;
        }
        let pass_core = core.clone();
        let pass_throttle = throttle.clone();
        let cleaned = tokio::task::spawn_blocking(move || {
            pass_core.topics.clean_dirtiest(
                pass_core.config.cleaner_dedupe_buffer_bytes,
                &pass_throttle,
                &pass_core.counters,
                &pass_core.transactions,
            )
        })
        .await;
        let cleaned = match cleaned {
            Ok(cleaned) => cleaned,
            Err(error) => {
                warn!(%error, "log cleaner task failed");
                false
            }
        };
        if !cleaned {
            tokio::select! {
                _ = stopping.wait_for(|stopping| *stopping) => break,
                _ = tokio::time::sleep(backoff) => {}
            }
        }
    }
}

/// Spots the start of each quiet period: the first tick after which the activity counters
/// stopped moving, having moved since the previous quiet period (so an idle broker trims once,
/// not every tick).
struct QuietPeriods {
    seen: (u64, u64),
    busy_since_quiet: bool,
}

impl QuietPeriods {
    fn new(now: (u64, u64)) -> Self {
        QuietPeriods {
            seen: now,
            busy_since_quiet: false,
        }
    }

    /// Whether a quiet period starts at this tick.
    fn tick(&mut self, now: (u64, u64)) -> bool {
        let moved = now != self.seen;
        self.seen = now;
        if moved {
            self.busy_since_quiet = true;
            return false;
        }
        std::mem::replace(&mut self.busy_since_quiet, false)
    }
}

/// Bytes produced and fetched so far: unchanged over an interval means the broker was idle.
fn activity(core: &Core) -> (u64, u64) {
    (
        core.counters.produced_bytes.load(Ordering::Relaxed),
        core.counters.fetched_bytes.load(Ordering::Relaxed),
    )
}

/// Hands the allocator's free memory back to the system. Under load the allocator keeps what
/// Fetch reads and Produce frames freed (megabytes each) for reuse, which is what makes it fast;
/// an idle broker should not keep it resident.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn return_free_memory() {
    // SAFETY: `malloc_trim` only releases free memory of the allocator's arenas and is safe to
    // call at any time from any thread; glibc locks each arena while it trims.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_free_memory() {}

#[cfg(test)]
mod tests {
    use super::QuietPeriods;

    #[test]
    fn a_quiet_period_is_reported_once_after_activity() {
        let mut quiet = QuietPeriods::new((0, 0));
        assert!(!quiet.tick((0, 0)), "idle since start: nothing grew");
        assert!(!quiet.tick((10, 0)), "busy");
        assert!(!quiet.tick((10, 5)), "still busy");
        assert!(quiet.tick((10, 5)), "first quiet tick");
        assert!(!quiet.tick((10, 5)), "already reported");
        assert!(!quiet.tick((11, 5)), "busy again");
        assert!(quiet.tick((11, 5)), "next quiet period");
    }
}
