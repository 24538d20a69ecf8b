//! Discovery on the LAN with mDNS-SD: members advertise `_herald._tcp.local.` with their topic,
//! group, capacity and protocol version in TXT records; producers browse for them.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};

use crate::frame::PROTOCOL_VERSION;

/// The DNS-SD service type every Herald member registers.
pub const SERVICE_TYPE: &str = "_herald._tcp.local.";

/// Why mDNS could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MdnsError {
    #[error("mDNS daemon: {0}")]
    Daemon(#[from] mdns_sd::Error),
}

/// A member's registration; unregistering announces that the member leaves.
pub struct Advertisement {
    daemon: ServiceDaemon,
    fullname: String,
}

impl Advertisement {
    pub fn register(
        addr: SocketAddr,
        member_id: u128,
        topic: &str,
        group: &str,
        capacity: u32,
    ) -> Result<Advertisement, MdnsError> {
        let daemon = ServiceDaemon::new()?;
        let instance = format!("herald-{:032x}", member_id);
        let host = format!("herald-{:016x}.local.", member_id as u64);
        let capacity = capacity.to_string();
        let version = PROTOCOL_VERSION.to_string();
        let props = [
            ("topic", topic),
            ("group", group),
            ("capacity", capacity.as_str()),
            ("version", version.as_str()),
        ];
        let info = if addr.ip().is_unspecified() {
            ServiceInfo::new(SERVICE_TYPE, &instance, &host, "", addr.port(), &props[..])?
                .enable_addr_auto()
        } else {
            ServiceInfo::new(
                SERVICE_TYPE,
                &instance,
                &host,
                addr.ip(),
                addr.port(),
                &props[..],
            )?
        };
        let fullname = info.get_fullname().to_string();
        daemon.register(info)?;
        tracing::info!(%fullname, %addr, "registered with mDNS");
        Ok(Advertisement { daemon, fullname })
    }

    /// Sends the goodbye announcement (TTL 0) and stops the daemon.
    pub fn unregister(self) {
        if let Ok(status) = self.daemon.unregister(&self.fullname) {
            let _ = status.recv_timeout(std::time::Duration::from_secs(1));
        }
        let _ = self.daemon.shutdown();
    }
}

/// What browsing reports to the membership.
#[derive(Debug, Clone)]
pub(crate) enum Discovery {
    Found {
        fullname: String,
        addrs: Vec<SocketAddr>,
        topic: String,
    },
    Removed {
        fullname: String,
    },
}

/// Browses for members and forwards what it sees until the receiver is dropped.
pub(crate) fn browse(tx: tokio::sync::mpsc::Sender<Discovery>) -> Result<ServiceDaemon, MdnsError> {
    let daemon = ServiceDaemon::new()?;
    let events = daemon.browse(SERVICE_TYPE)?;
    tokio::spawn(async move {
        let mut known: HashMap<String, Vec<SocketAddr>> = HashMap::new();
        while let Ok(event) = events.recv_async().await {
            let discovery = match event {
                ServiceEvent::ServiceResolved(info) => {
                    let version = info.get_property_val_str("version").unwrap_or("");
                    if version != PROTOCOL_VERSION.to_string() {
                        tracing::warn!(fullname = %info.get_fullname(), version, "ignoring a member with another protocol version");
                        continue;
                    }
                    let port = info.get_port();
                    let mut addrs: Vec<SocketAddr> = info
                        .get_addresses_v4()
                        .into_iter()
                        .map(|ip| SocketAddr::new(IpAddr::V4(ip), port))
                        .collect();
                    addrs.sort();
                    let fullname = info.get_fullname().to_string();
                    if known.get(&fullname) == Some(&addrs) {
                        continue;
                    }
                    known.insert(fullname.clone(), addrs.clone());
                    Discovery::Found {
                        fullname,
                        addrs,
                        topic: info.get_property_val_str("topic").unwrap_or("").to_string(),
                    }
                }
                ServiceEvent::ServiceRemoved(_, fullname) => {
                    known.remove(&fullname);
                    Discovery::Removed { fullname }
                }
                _ => continue,
            };
            if tx.send(discovery).await.is_err() {
                break;
            }
        }
    });
    Ok(daemon)
}
