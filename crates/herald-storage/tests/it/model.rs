//! Model-based property test: random appends, reads, syncs, DeleteRecords, clean reopens, process
//! kills and power losses, checked against a plain `Vec` of the batches that should be there.

use std::path::Path;

use herald_storage::{Clock, LogConfig, PartitionLog, SimFs};
use proptest::prelude::*;

use crate::support::{batch, split, stored};

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<usize>),
    Read {
        at: u16,
        max_bytes: u16,
        at_least_one: bool,
    },
    Sync,
    DeleteBefore(u16),
    Reopen,
    ProcessKill,
    PowerLoss,
    /// Advance the clock, then run housekeeping (rolls, retention, checkpoints).
    Maintain(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec(1usize..5, 1..4).prop_map(Op::Append),
        4 => (any::<u16>(), 0u16..2000, any::<bool>())
            .prop_map(|(at, max_bytes, at_least_one)| Op::Read { at, max_bytes, at_least_one }),
        2 => Just(Op::Sync),
        1 => any::<u16>().prop_map(Op::DeleteBefore),
        1 => Just(Op::Reopen),
        1 => Just(Op::ProcessKill),
        1 => Just(Op::PowerLoss),
        2 => (0u16..4000).prop_map(Op::Maintain),
    ]
}

struct Model {
    batches: Vec<(u64, Vec<u8>)>,
    log_start: u64,
    hw: u64,
}

impl Model {
    fn pick(&self, at: u16) -> u64 {
        let span = self.hw - self.log_start + 1;
        self.log_start + u64::from(at) % span
    }
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 150,
        segment_ms: 5_000,
        retention_ms: Some(10_000),
        checkpoint_interval_ms: 1_000,
        ..LogConfig::default()
    }
}

fn run(ops: Vec<Op>) {
    let dir = Path::new("/m");
    let mut fs = SimFs::default();
    let mut log = PartitionLog::open_with(dir, config(), fs.env()).unwrap();
    let mut model = Model {
        batches: Vec::new(),
        log_start: 0,
        hw: 0,
    };
    let mut tag = 0;
    for op in ops {
        match op {
            Op::Append(sizes) => {
                let parts: Vec<Vec<u8>> = sizes
                    .iter()
                    .map(|n| {
                        tag += 1;
                        batch(tag, *n, fs.clock().now_ms())
                    })
                    .collect();
                let info = log.append(&parts.concat()).unwrap();
                assert_eq!(info.base_offset, model.hw);
                for (p, n) in parts.iter().zip(&sizes) {
                    model.batches.push((model.hw, stored(p, model.hw)));
                    model.hw += *n as u64;
                }
                assert_eq!(info.last_offset, model.hw - 1);
            }
            Op::Read {
                at,
                max_bytes,
                at_least_one,
            } => {
                let offset = model.pick(at);
                let r = log
                    .read(offset, usize::from(max_bytes), at_least_one)
                    .unwrap();
                assert_eq!((r.high_watermark, r.log_start), (model.hw, model.log_start));
                let got = split(&r.batches);
                let first = model
                    .batches
                    .iter()
                    .position(|(b, bytes)| {
                        let n = u32::from_be_bytes(bytes[57..61].try_into().unwrap()) as u64;
                        b + n > offset
                    })
                    .unwrap_or(model.batches.len());
                let expected = &model.batches[first..];
                assert!(got.len() <= expected.len());
                assert_eq!(&got[..], &expected[..got.len()], "read at {offset}");
                if offset < model.hw && at_least_one {
                    assert!(!got.is_empty());
                }
                if got.len() > 1 || !at_least_one {
                    assert!(r.batches.len() <= usize::from(max_bytes));
                }
            }
            Op::Sync => {
                log.sync_to(model.hw).unwrap();
                assert_eq!(log.offsets().durable_end, model.hw);
            }
            Op::DeleteBefore(at) => {
                let offset = model.pick(at);
                let start = log.delete_records_before(offset).unwrap();
                model.log_start = model.log_start.max(offset);
                assert_eq!(start, model.log_start);
            }
            Op::Reopen => {
                drop(log);
                log = PartitionLog::open_with(dir, config(), fs.env()).unwrap();
            }
            Op::ProcessKill => {
                let image = fs.process_crash_image();
                std::mem::forget(log);
                fs = image;
                log = PartitionLog::open_with(dir, config(), fs.env()).unwrap();
            }
            Op::Maintain(ms) => {
                fs.clock().advance_ms(i64::from(ms));
                log.maintain().unwrap();
                // Retention may only move the start forward, to a batch boundary, never past the end.
                let start = log.offsets().log_start;
                assert!(start >= model.log_start && start <= model.hw);
                assert!(
                    start == model.log_start
                        || start == model.hw
                        || model.batches.iter().any(|(b, _)| *b == start)
                );
                model.log_start = start;
                model.batches.retain(|(b, bytes)| {
                    b + u32::from_be_bytes(bytes[57..61].try_into().unwrap()) as u64 > start
                });
            }
            Op::PowerLoss => {
                let durable = log.offsets().durable_end;
                let image = fs.crash_image();
                std::mem::forget(log);
                fs = image;
                log = PartitionLog::open_with(dir, config(), fs.env()).unwrap();
                let hw = log.offsets().high_watermark;
                assert!(hw >= durable && hw <= model.hw, "hw {hw} durable {durable}");
                model.batches.retain(|(b, _)| *b < hw);
                model.hw = hw;
                let boundary = model
                    .batches
                    .last()
                    .map_or(model.log_start.min(hw), |(b, bytes)| {
                        b + u32::from_be_bytes(bytes[57..61].try_into().unwrap()) as u64
                    });
                assert_eq!(boundary.max(model.log_start), hw.max(model.log_start));
            }
        }
        let o = log.offsets();
        assert_eq!((o.log_start, o.high_watermark), (model.log_start, model.hw));
        // Whole segments below the log start are gone; what remains is readable from the start.
        let whole = log.read(model.log_start, 1 << 20, true).unwrap();
        if model.log_start < model.hw {
            assert!(!whole.batches.is_empty());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn the_log_behaves_like_a_vec_of_batches(ops in prop::collection::vec(op(), 1..60)) {
        run(ops);
    }
}
