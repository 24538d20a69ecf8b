//! What the notification service knows about each notification, merged from two topics.
//!
//! Requests (`sms`) and their results (`sms.results`) arrive on two independent subscriptions,
//! so after a restart a result may be replayed before its request. The merge is therefore
//! order-independent: a notification only moves forward (pending, then failed or sent), and
//! fields learnt from one topic are never erased by the other.

use herald::EventId;
use serde::Serialize;

use crate::bounded::BoundedMap;
use crate::messages::{SmsResult, Status};

/// Notifications tracked by default; the oldest are forgotten beyond this.
pub const NOTIFICATIONS_MAX_DEFAULT: usize = 100_000;

/// One notification as `GET /notifications/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notification {
    pub id: EventId,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
}

impl Notification {
    fn new(id: EventId) -> Self {
        Notification {
            id,
            status: Status::Pending,
            to: None,
            attempts: None,
            error: None,
            provider_message_id: None,
        }
    }
}

/// How far along a status is. `Sent` outranks `Failed`: if a send was reported failed but the
/// provider did take it (a failure report raced a late success), the SMS did go out.
fn rank(s: Status) -> u8 {
    match s {
        Status::Pending => 0,
        Status::Failed => 1,
        Status::Sent => 2,
    }
}

/// The tracked notifications, at most `notifications_max` of them (oldest forgotten first).
#[derive(Debug)]
pub struct StatusBook {
    notifications: BoundedMap<EventId, Notification>,
}

impl StatusBook {
    pub fn new(notifications_max: usize) -> Self {
        StatusBook {
            notifications: BoundedMap::new(notifications_max),
        }
    }

    /// Records that request `id` to `to` is stored (from a publish receipt or the `sms` topic).
    pub fn request(&mut self, id: EventId, to: &str) {
        match self.notifications.get_mut(&id) {
            Some(n) => {
                if n.to.is_none() {
                    n.to = Some(to.to_string());
                }
            }
            None => {
                let mut n = Notification::new(id);
                n.to = Some(to.to_string());
                self.notifications.insert(id, n);
            }
        }
    }

    /// Applies a result reporting on request `id`.
    pub fn result(&mut self, id: EventId, result: &SmsResult) {
        if result.status == Status::Pending {
            return;
        }
        if !self.notifications.contains_key(&id) {
            self.notifications.insert(id, Notification::new(id));
        }
        let Some(n) = self.notifications.get_mut(&id) else {
            return;
        };
        if n.to.is_none() {
            n.to.clone_from(&result.to);
        }
        if rank(result.status) > rank(n.status) {
            n.status = result.status;
            n.attempts = result.attempts;
            n.error = match result.status {
                Status::Failed => result.error.clone(),
                _ => None,
            };
            n.provider_message_id
                .clone_from(&result.provider_message_id);
        }
    }

    pub fn get(&self, id: &EventId) -> Option<&Notification> {
        self.notifications.get(id)
    }

    pub fn len(&self) -> usize {
        self.notifications.len()
    }

    pub fn is_empty(&self) -> bool {
        self.notifications.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(attempts: u32) -> SmsResult {
        SmsResult {
            status: Status::Sent,
            to: Some("+441".to_string()),
            attempts: Some(attempts),
            error: None,
            provider_message_id: Some("p1".to_string()),
        }
    }

    fn failed() -> SmsResult {
        SmsResult {
            status: Status::Failed,
            to: None,
            attempts: Some(5),
            error: Some("provider down".to_string()),
            provider_message_id: None,
        }
    }

    #[test]
    fn a_result_before_its_request_is_kept() {
        let mut book = StatusBook::new(10);
        let id = EventId::new();
        book.result(id, &sent(2));
        book.request(id, "+442");
        let n = book.get(&id).unwrap();
        assert_eq!(n.status, Status::Sent);
        assert_eq!(n.attempts, Some(2));
        assert_eq!(n.to.as_deref(), Some("+441"));
    }

    #[test]
    fn status_only_moves_forward() {
        let mut book = StatusBook::new(10);
        let id = EventId::new();
        book.request(id, "+441");
        assert_eq!(book.get(&id).unwrap().status, Status::Pending);
        book.result(id, &failed());
        assert_eq!(book.get(&id).unwrap().status, Status::Failed);
        assert_eq!(
            book.get(&id).unwrap().error.as_deref(),
            Some("provider down")
        );
        book.result(id, &sent(3));
        let n = book.get(&id).unwrap();
        assert_eq!(n.status, Status::Sent);
        assert_eq!(n.error, None);
        book.result(id, &failed());
        book.request(id, "+449");
        let n = book.get(&id).unwrap();
        assert_eq!(n.status, Status::Sent);
        assert_eq!(n.to.as_deref(), Some("+441"));
    }

    #[test]
    fn the_book_is_bounded() {
        let mut book = StatusBook::new(3);
        let ids: Vec<EventId> = (0..5).map(|_| EventId::new()).collect();
        for id in &ids {
            book.request(*id, "+441");
        }
        assert_eq!(book.len(), 3);
        assert!(book.get(&ids[0]).is_none());
        assert!(book.get(&ids[4]).is_some());
    }
}
