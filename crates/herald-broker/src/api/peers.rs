//! `GET /api/v1/peers`: the brokerless members this broker can see on the LAN, read only.
//!
//! The broker library does not browse mDNS itself; the process around it hands over a
//! [`PeerSource`] ([`ConsoleOptions::peer_source`](super::bench::ConsoleOptions::peer_source)),
//! as `herald serve` does with `herald-direct`'s browser. Without one the endpoint answers
//! `browsing: false` with the reason.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::ApiState;

/// A brokerless member as the console shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerView {
    /// The member's DNS-SD instance name, unique per member.
    pub instance: String,
    pub topic: String,
    pub group: String,
    /// Where it listens, `HOST:PORT`.
    pub addresses: Vec<String>,
    /// Events it takes in flight, as it advertised; `None` when it advertised none.
    pub capacity: Option<u32>,
    /// Events it had in flight (admitted, not yet acknowledged) when it last announced its
    /// load; `None` when it announces none (load announcements off, or an older member).
    pub load: Option<u32>,
    /// The direct protocol version it advertised.
    pub protocol_version: String,
    /// When it was first seen, ms since the Unix epoch.
    pub first_seen_ms: i64,
    /// When it was last seen, ms since the Unix epoch.
    pub last_seen_ms: i64,
}

/// Lists the members seen right now; called on every request, so it must be cheap.
pub type PeerSource = Arc<dyn Fn() -> Vec<PeerView> + Send + Sync>;

/// Where the peers come from, or why there are none.
#[derive(Clone)]
pub(crate) enum Peers {
    Browsing(PeerSource),
    Off(String),
}

impl Peers {
    pub(crate) fn new(source: Option<PeerSource>, off_reason: Option<String>) -> Peers {
        match source {
            Some(source) => Peers::Browsing(source),
            None => Peers::Off(
                off_reason
                    .unwrap_or_else(|| "this process gave the console no peer source".to_string()),
            ),
        }
    }
}

pub(crate) async fn list(State(state): State<ApiState>) -> Response {
    let body = match &state.peers {
        Peers::Browsing(source) => {
            serde_json::json!({ "browsing": true, "peers": source() })
        }
        Peers::Off(reason) => {
            serde_json::json!({ "browsing": false, "reason": reason, "peers": [] })
        }
    };
    Json(body).into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn view(load: Option<u32>) -> PeerView {
        PeerView {
            instance: "herald-1._herald._tcp.local.".to_string(),
            topic: "sensors".to_string(),
            group: "g".to_string(),
            addresses: vec!["10.0.0.1:7400".to_string()],
            capacity: Some(64),
            load,
            protocol_version: "1".to_string(),
            first_seen_ms: 1,
            last_seen_ms: 2,
        }
    }

    #[test]
    fn a_peer_is_shown_with_its_load_or_a_null_one() {
        let shown = serde_json::to_value(view(Some(3))).unwrap();
        assert_eq!(shown["load"], 3);
        assert_eq!(shown["capacity"], 64);
        // Present and null, not left out, so a client tells "announces none" from a typo.
        let shown = serde_json::to_value(view(None)).unwrap();
        assert!(shown.as_object().unwrap().contains_key("load"), "{shown}");
        assert!(shown["load"].is_null(), "{shown}");
    }

    #[test]
    fn the_openapi_document_describes_every_field_of_a_peer() {
        let document: serde_json::Value = serde_json::from_str(super::super::OPENAPI_JSON).unwrap();
        let schema = &document["paths"]["/api/v1/peers"]["get"]["responses"]["200"]["content"]["application/json"]
            ["schema"]["properties"]["peers"]["items"]["properties"];
        let mut documented: Vec<&String> = schema.as_object().unwrap().keys().collect();
        documented.sort();
        let shown = serde_json::to_value(view(Some(3))).unwrap();
        let mut served: Vec<&String> = shown.as_object().unwrap().keys().collect();
        served.sort();
        assert_eq!(documented, served);
    }
}
