//! The consumer-group coordinator: Kafka's classic rebalance protocol and committed offsets,
//! in the broker's own types (the wire module maps Kafka requests onto [`Coordinator`]).
//!
//! Each group is a state machine (Empty, PreparingRebalance, CompletingRebalance, Stable, Dead)
//! held in memory; only committed offsets are durable (see [`offsets`]). After a restart every
//! group with offsets comes back Empty, so its members rejoin as they would after a rebalance.

mod coordinator;
mod error;
mod offsets;
mod state;
mod subscription;

pub use coordinator::{
    CommitPartition, CommitRequest, Coordinator, FetchedOffset, GroupConfig, GroupDescription,
    GroupListing, JoinMember, JoinRequest, JoinResponse, LeaveMember, MemberDescription, Pending,
    PendingCommit, Protocol, SyncRequest, SyncResponse, TopicCatalog,
};
pub use error::{GroupError, OpenError};
/// Time as the coordinator sees it: the storage's injected clock, so tests move both past
/// session timeouts, retention and offset expiry alike.
pub use herald_storage::{Clock, ManualClock, SystemClock};
pub use offsets::{CommittedOffset, OFFSETS_FILE};
pub use state::GroupState;
pub(crate) use subscription::assigned_partitions;

#[cfg(test)]
mod tests;
