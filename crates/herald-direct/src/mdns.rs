//! Discovery on the LAN with mDNS-SD: members advertise `_herald._tcp.local.` with their topic,
//! group, capacity, load and protocol version in TXT records; producers browse for them, and
//! [`PeerBrowser`] keeps a view of them for the broker console.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use mdns_sd::{ResolvedService, ServiceDaemon, ServiceEvent, ServiceInfo};

use crate::frame::PROTOCOL_VERSION;

/// The DNS-SD service type every Herald member registers.
pub const SERVICE_TYPE: &str = "_herald._tcp.local.";

/// Why mDNS could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MdnsError {
    #[error("mDNS daemon: {0}")]
    Daemon(#[from] mdns_sd::Error),
    #[error("starting the mDNS browsing thread: {0}")]
    Thread(std::io::Error),
}

/// Shortest `load_announce_interval_ms` a member accepts (other than 0, off). Each
/// re-announcement is two multicast responses about 1.1 s apart (RFC 6762, 8.3), and a browser
/// replaces a cached TXT record by a new one only if it received the old one more than a second
/// before (RFC 6762, 10.2; otherwise both stay cached until their TTL): 2.5 s leaves both
/// margins.
pub const LOAD_ANNOUNCE_INTERVAL_MS_MIN: u64 = 2_500;

/// A member's registration; unregistering announces that the member leaves.
pub struct Advertisement {
    daemon: ServiceDaemon,
    fullname: String,
    addr: SocketAddr,
    instance: String,
    host: String,
    topic: String,
    group: String,
    capacity: u32,
    /// Load announcements made, sent as `load_seq` (see [`properties`]).
    load_seq: u64,
}

impl Advertisement {
    /// Registers a member serving `topic` in `group` at `addr`, advertising `capacity` and, when
    /// the member announces its load, its current `load` (events in flight). Without a load
    /// the registration has no `load` property, so browsers show none rather than a stale one.
    pub fn register(
        addr: SocketAddr,
        member_id: u128,
        topic: &str,
        group: &str,
        capacity: u32,
        load: Option<u32>,
    ) -> Result<Advertisement, MdnsError> {
        let daemon = ServiceDaemon::new()?;
        let mut advertisement = Advertisement {
            daemon,
            fullname: String::new(),
            addr,
            instance: format!("herald-{:032x}", member_id),
            host: format!("herald-{:016x}.local.", member_id as u64),
            topic: topic.to_string(),
            group: group.to_string(),
            capacity,
            load_seq: 0,
        };
        let info = advertisement.service_info(load.map(|load| (load, 0)))?;
        advertisement.fullname = info.get_fullname().to_string();
        advertisement.daemon.register(info)?;
        tracing::info!(fullname = %advertisement.fullname, %addr, "registered with mDNS");
        Ok(advertisement)
    }

    /// Re-announces the registration with a new `load` TXT value. The other records are the
    /// member's already, so this is not probed again (RFC 6762, 8.4): the daemon sends the
    /// updated records at once and repeats them a second later, and browsers that cached the
    /// old TXT record replace it (it carries the cache-flush bit).
    pub fn announce_load(&mut self, load: u32) -> Result<(), MdnsError> {
        let seq = self.load_seq.wrapping_add(1);
        let mut info = self.service_info(Some((load, seq)))?;
        info.set_requires_probe(false);
        self.daemon.register(info)?;
        self.load_seq = seq;
        Ok(())
    }

    /// The registration, with the load and its announcement number when there is a load.
    fn service_info(&self, load: Option<(u32, u64)>) -> Result<ServiceInfo, MdnsError> {
        let props = properties(&self.topic, &self.group, self.capacity, load);
        let info = if self.addr.ip().is_unspecified() {
            ServiceInfo::new(
                SERVICE_TYPE,
                &self.instance,
                &self.host,
                "",
                self.addr.port(),
                &props[..],
            )?
            .enable_addr_auto()
        } else {
            ServiceInfo::new(
                SERVICE_TYPE,
                &self.instance,
                &self.host,
                self.addr.ip(),
                self.addr.port(),
                &props[..],
            )?
        };
        Ok(info)
    }

    /// Sends the goodbye announcement (TTL 0) and stops the daemon.
    pub fn unregister(self) {
        if let Ok(status) = self.daemon.unregister(&self.fullname) {
            let _ = status.recv_timeout(std::time::Duration::from_secs(1));
        }
        let _ = self.daemon.shutdown();
    }
}

/// The TXT properties of a member's registration (`docs/direct-protocol.md`, "Discovery"),
/// with `load` and `load_seq` when the member announces its load.
///
/// `load_seq` numbers the announcements so that each TXT record differs from every earlier one.
/// A browser that still caches an earlier record with the same bytes (one it received less than
/// a second before the record that followed it, which then did not replace it) would take the
/// repeat for that old record, refresh it and report no change: a load going 0, 3, 0 would stay
/// at 3 in its view.
fn properties(
    topic: &str,
    group: &str,
    capacity: u32,
    load: Option<(u32, u64)>,
) -> Vec<(&'static str, String)> {
    let mut props = vec![
        ("topic", topic.to_string()),
        ("group", group.to_string()),
        ("capacity", capacity.to_string()),
        ("version", PROTOCOL_VERSION.to_string()),
    ];
    if let Some((load, seq)) = load {
        props.push(("load", load.to_string()));
        props.push(("load_seq", seq.to_string()));
    }
    props
}

/// What one member's registration says, read from its addresses and TXT records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) fullname: String,
    /// IPv4 addresses with the member's port, sorted.
    pub(crate) addrs: Vec<SocketAddr>,
    pub(crate) topic: String,
    pub(crate) group: String,
    /// `None` when the member advertised none or something that is not a number.
    pub(crate) capacity: Option<u32>,
    /// Events the member had in flight when it last announced; `None` when it advertised none
    /// (members before load announcements) or something that is not a number.
    pub(crate) load: Option<u32>,
    pub(crate) version: String,
}

impl Record {
    /// Reads a resolved registration; every browser of the crate parses members here.
    fn of(info: &ResolvedService) -> Record {
        let port = info.get_port();
        let mut addrs: Vec<SocketAddr> = info
            .get_addresses_v4()
            .into_iter()
            .map(|ip| SocketAddr::new(IpAddr::V4(ip), port))
            .collect();
        addrs.sort();
        let text = |name: &str| info.get_property_val_str(name).unwrap_or("").to_string();
        let number = |name: &str| {
            info.get_property_val_str(name)
                .and_then(|value| value.parse().ok())
        };
        Record {
            fullname: info.get_fullname().to_string(),
            addrs,
            topic: text("topic"),
            group: text("group"),
            capacity: number("capacity"),
            load: number("load"),
            version: text("version"),
        }
    }

    /// Whether the member speaks this build's protocol.
    fn compatible(&self) -> bool {
        self.version == PROTOCOL_VERSION.to_string()
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
                    let record = Record::of(&info);
                    if !record.compatible() {
                        tracing::warn!(fullname = %record.fullname, version = %record.version, "ignoring a member with another protocol version");
                        continue;
                    }
                    if known.get(&record.fullname) == Some(&record.addrs) {
                        continue;
                    }
                    known.insert(record.fullname.clone(), record.addrs.clone());
                    Discovery::Found {
                        fullname: record.fullname,
                        addrs: record.addrs,
                        topic: record.topic,
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

/// How many members a [`PeerBrowser`] keeps by default.
pub const PEERS_MAX: usize = 10_000;

/// A member seen on the LAN, as a [`PeerBrowser`] last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The DNS-SD instance name, unique per member.
    pub fullname: String,
    pub topic: String,
    pub group: String,
    /// The member's addresses (IPv4 with its port), sorted.
    pub addrs: Vec<SocketAddr>,
    /// Events the member takes in flight, as it advertised; `None` when it advertised none.
    pub capacity: Option<u32>,
    /// Events the member had in flight (admitted, not yet acknowledged) at its last
    /// announcement; `None` when it advertises no load (an older member, or one with load
    /// announcements off). Members re-announce at most once per `load_announce_interval_ms`,
    /// so this lags the member by up to that interval.
    pub load: Option<u32>,
    /// The direct protocol version it advertised (members of any version are listed).
    pub version: String,
    /// When it was first seen, ms since the Unix epoch.
    pub first_seen_ms: i64,
    /// When its registration was last resolved, ms since the Unix epoch.
    pub last_seen_ms: i64,
}

/// The members seen, at most `peers_max` of them.
#[derive(Debug)]
pub(crate) struct PeerMap {
    peers: HashMap<String, Peer>,
    peers_max: usize,
}

impl PeerMap {
    pub(crate) fn new(peers_max: usize) -> PeerMap {
        PeerMap {
            peers: HashMap::new(),
            peers_max,
        }
    }

    /// Records a resolved member; when the map is full the least recently seen one makes room.
    pub(crate) fn seen(&mut self, record: Record, now_ms: i64) {
        if let Some(peer) = self.peers.get_mut(&record.fullname) {
            peer.topic = record.topic;
            peer.group = record.group;
            peer.addrs = record.addrs;
            peer.capacity = record.capacity;
            peer.load = record.load;
            peer.version = record.version;
            peer.last_seen_ms = now_ms;
            return;
        }
        if self.peers_max == 0 {
            return;
        }
        if self.peers.len() >= self.peers_max {
            let oldest = self
                .peers
                .values()
                .min_by_key(|peer| (peer.last_seen_ms, peer.fullname.clone()))
                .map(|peer| peer.fullname.clone());
            if let Some(oldest) = oldest {
                self.peers.remove(&oldest);
            }
        }
        self.peers.insert(
            record.fullname.clone(),
            Peer {
                fullname: record.fullname,
                topic: record.topic,
                group: record.group,
                addrs: record.addrs,
                capacity: record.capacity,
                load: record.load,
                version: record.version,
                first_seen_ms: now_ms,
                last_seen_ms: now_ms,
            },
        );
    }

    /// Forgets a member that said goodbye (or whose records expired).
    pub(crate) fn removed(&mut self, fullname: &str) {
        self.peers.remove(fullname);
    }

    /// The members, by topic, group and name.
    pub(crate) fn snapshot(&self) -> Vec<Peer> {
        let mut peers: Vec<Peer> = self.peers.values().cloned().collect();
        peers.sort_by(|a, b| {
            (&a.topic, &a.group, &a.fullname).cmp(&(&b.topic, &b.group, &b.fullname))
        });
        peers
    }
}

/// Watches the LAN for members (`_herald._tcp.local.`) and keeps what it has seen, for
/// read-only views such as the broker console's Peers page. Members leave the view on their
/// goodbye announcement or when their records expire.
pub struct PeerBrowser {
    daemon: ServiceDaemon,
    peers: std::sync::Arc<parking_lot::Mutex<PeerMap>>,
}

impl PeerBrowser {
    /// Starts browsing on a thread of its own, keeping at most `peers_max` members.
    pub fn start(peers_max: usize) -> Result<PeerBrowser, MdnsError> {
        let daemon = ServiceDaemon::new()?;
        let events = daemon.browse(SERVICE_TYPE)?;
        let peers = std::sync::Arc::new(parking_lot::Mutex::new(PeerMap::new(peers_max)));
        let map = peers.clone();
        // The receiver ends when the daemon shuts down, which ends the thread.
        std::thread::Builder::new()
            .name("herald-mdns-peers".to_string())
            .spawn(move || {
                while let Ok(event) = events.recv() {
                    match event {
                        ServiceEvent::ServiceResolved(info) => {
                            map.lock().seen(Record::of(&info), now_ms());
                        }
                        ServiceEvent::ServiceRemoved(_, fullname) => map.lock().removed(&fullname),
                        _ => {}
                    }
                }
            })
            .map_err(MdnsError::Thread)?;
        Ok(PeerBrowser { daemon, peers })
    }

    /// The members seen, sorted by topic, group and name.
    pub fn snapshot(&self) -> Vec<Peer> {
        self.peers.lock().snapshot()
    }
}

impl Drop for PeerBrowser {
    fn drop(&mut self) {
        let _ = self.daemon.shutdown();
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> Record {
        Record {
            fullname: format!("{name}.{SERVICE_TYPE}"),
            addrs: vec![SocketAddr::from(([10, 0, 0, 1], 7000))],
            topic: "sensors".to_string(),
            group: "g".to_string(),
            capacity: Some(64),
            load: Some(0),
            version: PROTOCOL_VERSION.to_string(),
        }
    }

    /// What a browser resolves from a registration with these TXT properties.
    fn resolved(props: &[(&str, String)]) -> Record {
        let info = ServiceInfo::new(
            SERVICE_TYPE,
            "herald-test",
            "herald-test.local.",
            "10.0.0.1",
            7000,
            props,
        )
        .unwrap();
        Record::of(&info.as_resolved_service())
    }

    #[test]
    fn a_registration_with_a_load_is_read_with_it() {
        let record = resolved(&properties("sensors", "g", 64, Some((3, 7))));
        assert_eq!(record.load, Some(3));
        assert_eq!(record.capacity, Some(64));
        assert_eq!(
            (record.topic.as_str(), record.group.as_str()),
            ("sensors", "g")
        );
        assert_eq!(record.addrs, vec![SocketAddr::from(([10, 0, 0, 1], 7000))]);
        assert!(record.compatible());
    }

    #[test]
    fn a_registration_without_a_load_is_read_as_none() {
        let record = resolved(&properties("sensors", "g", 64, None));
        assert_eq!(record.load, None);
        assert_eq!(record.capacity, Some(64));
        assert!(record.compatible());
    }

    #[test]
    fn a_load_that_is_not_a_number_is_read_as_none() {
        let mut props = properties("sensors", "g", 64, None);
        props.push(("load", "many".to_string()));
        assert_eq!(resolved(&props).load, None);
        let mut props = properties("sensors", "g", 64, None);
        props.push(("load", "-1".to_string()));
        assert_eq!(resolved(&props).load, None);
    }

    #[test]
    fn the_map_keeps_at_most_peers_max_dropping_the_least_recently_seen() {
        let mut map = PeerMap::new(2);
        map.seen(record("a"), 1);
        map.seen(record("b"), 2);
        map.seen(record("a"), 3);
        map.seen(record("c"), 4);
        let names: Vec<String> = map.snapshot().into_iter().map(|p| p.fullname).collect();
        assert_eq!(names.len(), 2);
        assert!(names.contains(&record("a").fullname), "{names:?}");
        assert!(names.contains(&record("c").fullname), "{names:?}");
    }

    #[test]
    fn a_goodbye_removes_the_member_and_a_new_sighting_updates_it() {
        let mut map = PeerMap::new(PEERS_MAX);
        map.seen(record("a"), 1);
        let mut moved = record("a");
        moved.capacity = Some(8);
        moved.load = Some(5);
        map.seen(moved, 5);
        let peers = map.snapshot();
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].capacity, Some(8));
        assert_eq!(peers[0].load, Some(5));
        assert_eq!((peers[0].first_seen_ms, peers[0].last_seen_ms), (1, 5));
        map.removed(&record("a").fullname);
        assert!(map.snapshot().is_empty());
    }

    #[test]
    fn a_map_of_no_peers_keeps_none() {
        let mut map = PeerMap::new(0);
        map.seen(record("a"), 1);
        assert!(map.snapshot().is_empty());
    }
}
