//! Helpers shared by the test modules: batch builders, config shortcuts and batch splitting.

use herald_storage::{LogConfig, build_batch};

/// A batch of `n` records whose values say which batch and record they are.
pub fn batch(tag: u64, n: usize, ts: i64) -> Vec<u8> {
    let values: Vec<Vec<u8>> = (0..n).map(|i| format!("b{tag}r{i}").into_bytes()).collect();
    let refs: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
    build_batch(ts, &[], &refs, None)
}

/// An idempotent producer's batch.
pub fn pbatch(pid: i64, epoch: i16, seq: i32, n: usize) -> Vec<u8> {
    let values: Vec<Vec<u8>> = (0..n)
        .map(|i| format!("p{pid}s{seq}r{i}").into_bytes())
        .collect();
    let refs: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
    build_batch(1_000, &[], &refs, Some((pid, epoch, seq)))
}

/// A config with small segments for roll tests.
pub fn small(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 100,
        ..LogConfig::default()
    }
}

/// Splits concatenated batches into (base_offset, bytes) pairs.
pub fn split(mut bytes: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        assert!(bytes.len() >= 12, "partial batch header returned");
        let len = i32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize + 12;
        assert!(bytes.len() >= len, "partial batch returned");
        let base = u64::from_be_bytes(bytes[0..8].try_into().unwrap());
        out.push((base, bytes[..len].to_vec()));
        bytes = &bytes[len..];
    }
    out
}

/// The batch bytes the log stores for `batch` at `base`: offset rewritten, leader epoch 0.
pub fn stored(batch: &[u8], base: u64) -> Vec<u8> {
    let mut b = batch.to_vec();
    b[0..8].copy_from_slice(&base.to_be_bytes());
    b[12..16].copy_from_slice(&0i32.to_be_bytes());
    b
}
