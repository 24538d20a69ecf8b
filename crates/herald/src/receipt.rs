//! What a publish returns: which guarantee was reached for the event.

use crate::event::EventId;

/// Proof of what completed for one published event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub id: EventId,
    pub completed: Completed,
}

/// How far an event got when `publish` returned. Each transport reaches exactly one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Completed {
    /// Datagram: the datagrams left this host (one per group serving the topic); nothing more is
    /// known. Receivers count what was lost.
    Sent { datagrams: usize },
    /// Broker (and memory): the event is stored at this partition and offset. On the broker with
    /// `acks=all` (the default) it is on disk.
    Stored { partition: i32, offset: i64 },
    /// Direct: a consumer in each of these groups ran its handler and acknowledged.
    Handled { groups: Vec<String> },
}

impl Receipt {
    /// `"sent"`, `"stored"` or `"handled"`.
    pub fn kind(&self) -> &'static str {
        match self.completed {
            Completed::Sent { .. } => "sent",
            Completed::Stored { .. } => "stored",
            Completed::Handled { .. } => "handled",
        }
    }
}
