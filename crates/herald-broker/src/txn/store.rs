//! The transaction coordinator's durable state: one JSON file, `transactions.json`, replaced
//! whole on every change (temporary file, fsync, rename, fsync of the directory), so it always
//! holds either the state before a change or the state after it.
//!
//! ```text
//! { "transactions": { "<transactional id>": { "producer_id", "producer_epoch", "state",
//!       "timeout_ms", "started_ms", "partitions": [{ "topic", "partition", "first_offset" }],
//!       "groups": [..], "offsets": [{ "group", "topic", "partition", "offset", "metadata" }] } },
//!   "aborted": [{ "topic", "partition", "range": { "producer_id", "first_offset",
//!       "last_offset" } }] }
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{AbortedTxn, Txn, TxnError};
use crate::topics::write_atomically;

/// File name of the transaction state inside the data directory.
pub(crate) const TRANSACTIONS_FILE: &str = "transactions.json";

/// One aborted transaction's range on one partition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AbortedEntry {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) range: AbortedTxn,
}

/// Everything the file holds.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Snapshot {
    pub(crate) transactions: BTreeMap<String, Txn>,
    pub(crate) aborted: Vec<AbortedEntry>,
}

/// Reads the state, or an empty one if the file does not exist.
pub(crate) fn load(dir: &Path) -> Result<Snapshot, TxnError> {
    let path = dir.join(TRANSACTIONS_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|error| TxnError::Storage(format!("{}: {error}", path.display()))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Snapshot::default()),
        Err(error) => Err(TxnError::Storage(format!("{}: {error}", path.display()))),
    }
}

/// Replaces the state durably.
pub(crate) fn save(dir: &Path, snapshot: &Snapshot) -> Result<(), TxnError> {
    let bytes = serde_json::to_vec(snapshot)
        .map_err(|error| TxnError::Storage(format!("encoding the transaction state: {error}")))?;
    write_atomically(dir, TRANSACTIONS_FILE, &bytes).map_err(|error| {
        TxnError::Storage(format!(
            "writing {}: {error}",
            dir.join(TRANSACTIONS_FILE).display()
        ))
    })
}
