//! Request/response over a stored transport (being built).

use std::sync::Arc;
use std::time::SystemTime;

use crate::bus::Bus;
use crate::error::{RequestError, SubscribeError};
use crate::event::Event;
use crate::runtime::Subscription;
use crate::transport::{Replier, SubscribeSpec};

pub(crate) struct ReplyInbox;

impl ReplyInbox {
    pub(crate) async fn start(_bus: Bus) -> Result<Arc<ReplyInbox>, RequestError> {
        Err(RequestError::Unsupported {
            transport: "stored",
            what: "request yet",
        })
    }

    pub(crate) async fn request(
        &self,
        _bus: &Bus,
        _topic: &str,
        _event: Event,
        _deadline: SystemTime,
    ) -> Result<Event, RequestError> {
        Err(RequestError::Unsupported {
            transport: "stored",
            what: "request yet",
        })
    }

    pub(crate) fn abort(&self) {}
}

pub(crate) async fn serve(
    _bus: Bus,
    _spec: SubscribeSpec,
    _concurrency: usize,
    _replier: Replier,
) -> Result<Subscription, SubscribeError> {
    Err(SubscribeError::Unsupported {
        transport: "stored",
        what: "serve yet",
    })
}
