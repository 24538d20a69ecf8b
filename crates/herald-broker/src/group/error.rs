//! What can go wrong in the coordinator: protocol outcomes a client must react to, and failures
//! to open the offsets store.
//!
//! The protocol outcomes are one vocabulary shared by every group operation because clients treat
//! them the same way whichever request produced them (rejoin, retry, give up); the wire layer maps
//! each to its Kafka error code in exactly one function.

use std::path::PathBuf;

/// A group operation's refusal, as the client will be told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// The offsets store failed (an fsync or write error); the coordinator refuses until reopened.
    #[error("the offsets store failed and refuses further writes until the broker restarts")]
    StoreFailed,
    /// The coordinator is shutting down.
    #[error("the group coordinator is not available")]
    CoordinatorNotAvailable,
    /// The group id is empty or longer than the limit.
    #[error("invalid group id")]
    InvalidGroupId,
    /// The session timeout is outside the broker's allowed range.
    #[error("session timeout {0} ms is outside the allowed range")]
    InvalidSessionTimeout(i32),
    /// The member id is not (or no longer) a member of the group.
    #[error("unknown member id")]
    UnknownMemberId,
    /// A new member must rejoin with the member id it is given (JoinGroup v4+).
    #[error("member id required")]
    MemberIdRequired(String),
    /// The request names a generation other than the group's current one.
    #[error("illegal generation")]
    IllegalGeneration,
    /// The group is rebalancing; the member must rejoin.
    #[error("rebalance in progress")]
    RebalanceInProgress,
    /// The member's protocol type or protocols do not match the group's.
    #[error("inconsistent group protocol")]
    InconsistentGroupProtocol,
    /// Another member has since joined with the same `group.instance.id`.
    #[error("fenced by a newer member with the same group instance id")]
    FencedInstanceId,
    /// The group already has the maximum number of members.
    #[error("the group has reached its maximum size")]
    GroupMaxSizeReached,
    /// The coordinator already holds the maximum number of groups.
    #[error("the broker holds the maximum number of groups")]
    GroupsMaxReached,
    /// The group does not exist.
    #[error("group not found")]
    GroupIdNotFound,
    /// The group still has members.
    #[error("the group is not empty")]
    NonEmptyGroup,
    /// The group's members are subscribed to the topic whose offsets should be deleted.
    #[error("the group is subscribed to the topic")]
    GroupSubscribedToTopic,
    /// The commit's metadata string is longer than the limit.
    #[error("offset metadata is too large")]
    OffsetMetadataTooLarge,
    /// The topic or partition does not exist.
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    /// Protocol metadata or an assignment is larger than the limit, or a field is malformed.
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
}

/// Failure to open the offsets store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Reading, truncating or creating the offsets file failed.
    #[error("offsets file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file exists but is not a Herald offsets file; it is left untouched.
    #[error("{path} is not a Herald offsets file (bad magic)")]
    BadMagic { path: PathBuf },
    /// The writer thread could not be started.
    #[error("starting the offsets writer: {0}")]
    Spawn(#[source] std::io::Error),
}
