//! Time and resource readings shared by every bench: a monotonic clock that means the same in
//! every process of the machine (so a receiver in another process can compute one-way latency
//! from a timestamp in the payload), latency histograms and their summary, and a process's CPU
//! time and peak RSS from `/proc`.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::BenchError;

/// Highest latency recorded (one minute); slower samples are clamped to it.
pub const LATENCY_US_MAX: u64 = 60_000_000;

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process of this machine.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU time of the calling thread in seconds (what the load generator itself costs).
pub fn thread_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: as in `mono_ns`; CLOCK_THREAD_CPUTIME_ID is per calling thread.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// A latency histogram in microseconds, 1 µs to [`LATENCY_US_MAX`], three significant digits.
pub fn histogram() -> Result<Histogram<u64>, BenchError> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)
        .map_err(|e| BenchError::Histogram(e.to_string()))
}

/// Records a latency in nanoseconds, clamped to the histogram's range.
pub fn record_ns(h: &mut Histogram<u64>, ns: u64) {
    let _ = h.record((ns / 1_000).clamp(1, LATENCY_US_MAX));
}

/// Latency percentiles in microseconds and the number of samples they summarise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Latency {
    /// The summary of `h`; `None` when it holds no sample.
    pub fn of(h: &Histogram<u64>) -> Option<Latency> {
        (!h.is_empty()).then(|| Latency {
            count: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        })
    }
}

/// A process's CPU time so far and its peak resident set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcUsage {
    pub cpu_s: f64,
    pub rss_peak_bytes: u64,
}

/// Reads `/proc/<pid>` (`"self"` for this process): user + system CPU and `VmHWM`. A process
/// that is gone reads as zero, which callers show as unknown rather than fail a whole run.
pub fn proc_usage(pid: &str) -> ProcUsage {
    if pid == "self" {
        return own_usage();
    }
    let cpu_s = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The command name may hold spaces; the fields we need follow its closing paren.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            // SAFETY: sysconf has no preconditions.
            let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
            Some((utime + stime) / ticks)
        })
        .unwrap_or(0.0);
    let rss_peak_bytes = vm_hwm(pid).unwrap_or(0);
    ProcUsage {
        cpu_s,
        rss_peak_bytes,
    }
}

/// This process's usage from `getrusage`, finer than `/proc`'s clock ticks.
fn own_usage() -> ProcUsage {
    // SAFETY: an all-zero rusage is a valid value for getrusage to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is valid and writable; RUSAGE_SELF always exists.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    ProcUsage {
        cpu_s: secs(usage.ru_utime) + secs(usage.ru_stime),
        // `VmHWM` rather than `ru_maxrss`: only the former can be reset between cells.
        rss_peak_bytes: vm_hwm("self").unwrap_or(usage.ru_maxrss as u64 * 1024),
    }
}

fn vm_hwm(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Resets a process's peak RSS (`VmHWM`) to its current RSS, so the next reading is the peak
/// of what happened since (Linux 4.0+: writing 5 to `clear_refs`). Best effort: a process that
/// is gone or not ours keeps its lifetime peak.
pub fn reset_peak_rss(pid: &str) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// The bytes at the head of every bench payload: the event's scheduled time (`mono_ns`) and its
/// sequence number, so any receiver can compute latency; per-key order is checked on the
/// scheduled times, which only grow for a key over a whole run.
pub const STAMP_BYTES: usize = 16;

/// Writes the stamp into the first [`STAMP_BYTES`] of `payload` (which must be that long).
pub fn stamp(payload: &mut [u8], due_ns: u64, seq: u64) {
    payload[..8].copy_from_slice(&due_ns.to_le_bytes());
    payload[8..16].copy_from_slice(&seq.to_le_bytes());
}

/// Reads a stamp written by [`stamp`]; `None` for a payload too short to hold one.
pub fn read_stamp(payload: &[u8]) -> Option<(u64, u64)> {
    let due = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
    let seq = u64::from_le_bytes(payload.get(8..16)?.try_into().ok()?);
    Some((due, seq))
}

/// A payload of `bytes` (at least [`STAMP_BYTES`]) of pseudo-random filler, so compressed runs
/// compress like real payloads rather than zeros.
pub fn filler(bytes: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..bytes.max(STAMP_BYTES))
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state & 0xff) as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_own_usage_reads() {
        let mut p = filler(8);
        assert_eq!(p.len(), STAMP_BYTES);
        stamp(&mut p, 42, 7);
        assert_eq!(read_stamp(&p), Some((42, 7)));
        assert_eq!(read_stamp(&p[..10]), None);
        let usage = proc_usage("self");
        assert!(usage.rss_peak_bytes > 0);
        assert!(mono_ns() > 0);
    }
}
