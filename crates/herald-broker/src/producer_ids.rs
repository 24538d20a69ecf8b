//! Producer id allocation for idempotent producers (InitProducerId). Ids never repeat, across
//! restarts too: the broker reserves them in blocks and records the end of the current block in
//! the data directory before handing out any id from it.

use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::topics::write_atomically;

/// Name of the file holding the end of the reserved block.
pub(crate) const PRODUCER_IDS_FILE: &str = "producer-ids.json";
/// Ids reserved per write of the file; a restart skips at most this many.
const BLOCK_IDS: i64 = 1000;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Reserved {
    /// Every id below this may have been handed out.
    next_block_start: i64,
}

/// Allocating a producer id failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProducerIdError {
    /// The reservation file could not be read or written.
    #[error("producer id reservation {path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

struct State {
    next: i64,
    block_end: i64,
}

/// Hands out producer ids.
pub(crate) struct ProducerIds {
    dir: PathBuf,
    state: Mutex<State>,
}

impl ProducerIds {
    /// Loads the reservation; the first id handed out is past every earlier block.
    pub(crate) fn open(dir: &Path) -> Result<ProducerIds, ProducerIdError> {
        let path = dir.join(PRODUCER_IDS_FILE);
        let reserved = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice::<Reserved>(&bytes).map_err(|error| ProducerIdError::Io {
                    path: path.clone(),
                    message: error.to_string(),
                })?
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Reserved::default(),
            Err(error) => {
                return Err(ProducerIdError::Io {
                    path,
                    message: error.to_string(),
                });
            }
        };
        let start = reserved.next_block_start.max(0);
        Ok(ProducerIds {
            dir: dir.to_path_buf(),
            state: Mutex::new(State {
                next: start,
                block_end: start,
            }),
        })
    }

    /// The next unused producer id.
    pub(crate) fn allocate(&self) -> Result<i64, ProducerIdError> {
        let mut state = self.state.lock();
        if state.next >= state.block_end {
            let block_end = state.next + BLOCK_IDS;
            let bytes = serde_json::to_vec(&Reserved {
                next_block_start: block_end,
            })
            .map_err(|error| self.error(error.to_string()))?;
            write_atomically(&self.dir, PRODUCER_IDS_FILE, &bytes)
                .map_err(|error| self.error(error.to_string()))?;
            state.block_end = block_end;
        }
        let id = state.next;
        state.next += 1;
        Ok(id)
    }

    fn error(&self, message: String) -> ProducerIdError {
        ProducerIdError::Io {
            path: self.dir.join(PRODUCER_IDS_FILE),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_never_repeat_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let ids = ProducerIds::open(dir.path()).unwrap();
        let first: Vec<i64> = (0..3).map(|_| ids.allocate().unwrap()).collect();
        assert_eq!(first, vec![0, 1, 2]);
        drop(ids);
        let ids = ProducerIds::open(dir.path()).unwrap();
        let next = ids.allocate().unwrap();
        assert!(next > 2, "{next}");
    }
}
