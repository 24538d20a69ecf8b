//! Herald's measuring code, shared by `herald bench` and `herald advise` (thin shells in
//! `herald-cli`): open-loop load generators that record latency from each event's scheduled time
//! ([`pace`]), the machine's own limits measured in the same run ([`baseline`], [`limits`]), the
//! brokered load through librdkafka ([`kafka`]) and a raw Fetch loop ([`fetch`]), brokerless load through `herald-direct`
//! ([`direct`]), the child processes a run starts ([`procs`], [`member`]), the trade-off matrix
//! ([`matrix`]), the priority ranking ([`score`]) and the self-contained HTML report ([`html`]).
//!
//! ```no_run
//! // The disk's ideal group commit at 10,000 events/s of 1 KiB for one second.
//! let report = herald_bench::limits::disk_group_commit(
//!     std::path::Path::new("/tmp"),
//!     1024,
//!     10_000,
//!     std::time::Duration::from_secs(1),
//! )?;
//! println!("p99 {} µs over {} fsyncs", report.latency.p99_us, report.fsyncs);
//! # Ok::<(), herald_bench::BenchError>(())
//! ```

pub mod baseline;
pub mod clock;
pub mod direct;
mod error;
pub mod fetch;
pub mod html;
pub mod kafka;
pub mod limits;
pub mod matrix;
pub mod member;
pub mod pace;
pub mod procs;
pub mod score;

pub use error::BenchError;
