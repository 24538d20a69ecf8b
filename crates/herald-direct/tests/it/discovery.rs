//! mDNS-SD: a `PeerBrowser` sees a member's advertised load follow the events it holds.
//!
//! Each test runs in a network namespace of its own with one veth pair, so it sees no
//! other host's or test's members and does not depend on the machine's network. Creating the
//! namespace needs root and `ip`; without them the test says so and passes.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use herald_direct::mdns::{LOAD_ANNOUNCE_INTERVAL_MS_MIN, PEERS_MAX, Peer, PeerBrowser};
use herald_direct::{
    BoxFuture, Handler, HandlerError, Member, MemberConfig, Message, Publisher, PublisherConfig,
    Received,
};
use tokio::sync::watch;

use crate::harness::eventually;

/// The address of the namespace's interface.
const HOST: [u8; 4] = [10, 213, 251, 1];

/// Runs `body` on a thread moved into a new network namespace (only that thread: namespaces
/// are per thread on Linux, and threads it starts, such as a runtime's workers and the mDNS
/// daemons, inherit it), with `lo` and a multicast-capable interface at [`HOST`] up.
/// `Err` with the reason when the namespace cannot be made; a panic in `body` is passed on.
fn in_private_netns<R: Send + 'static>(
    body: impl FnOnce() -> R + Send + 'static,
) -> Result<R, String> {
    let thread = std::thread::spawn(move || {
        // SAFETY: unshare takes no pointers; CLONE_NEWNET moves only the calling thread, whose
        // sockets opened before (none) would stay in the old namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!(
                "cannot create a network namespace (needs root): {}",
                std::io::Error::last_os_error()
            ));
        }
        // IPv4 only: a tentative IPv6 link-local address (duplicate address detection) would
        // make the first mDNS exchanges depend on timing. Best effort, as in the CLI's tests.
        let _ = Command::new("sh")
            .args([
                "-c",
                "for f in all default; do echo 1 > /proc/sys/net/ipv6/conf/$f/disable_ipv6; done",
            ])
            .status();
        let addr = format!("{}.{}.{}.{}/24", HOST[0], HOST[1], HOST[2], HOST[3]);
        // A veth pair with both ends here, since not every kernel has the dummy driver: the
        // member and the browser meet on `hd0` through the multicast loopback of its sockets.
        let steps: [&[&str]; 6] = [
            &["link", "set", "lo", "up"],
            &["link", "add", "hd0", "type", "veth", "peer", "name", "hd1"],
            &["addr", "add", &addr, "dev", "hd0"],
            &["link", "set", "hd1", "up"],
            &["link", "set", "hd0", "multicast", "on", "up"],
            &["route", "add", "224.0.0.0/4", "dev", "hd0"],
        ];
        for step in steps {
            let ok = Command::new("ip")
                .args(step)
                .status()
                .is_ok_and(|status| status.success());
            if !ok {
                return Err(format!("`ip {}` failed", step.join(" ")));
            }
        }
        Ok(body())
    });
    match thread.join() {
        Ok(outcome) => outcome,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Holds every event until the gate opens; counts the events it holds.
struct Gate {
    open: watch::Receiver<bool>,
    holding: Arc<AtomicU32>,
}

impl Handler for Gate {
    fn on_event(&self, _event: Received) -> BoxFuture<Result<(), HandlerError>> {
        let mut open = self.open.clone();
        let holding = self.holding.clone();
        Box::pin(async move {
            holding.fetch_add(1, Ordering::SeqCst);
            let opened = open.wait_for(|open| *open).await.is_ok();
            holding.fetch_sub(1, Ordering::SeqCst);
            if opened {
                Ok(())
            } else {
                Err("the test ended before opening the gate".into())
            }
        })
    }
}

/// Waits, bounded, until the browser shows the member with `load` events in flight; the last
/// view seen otherwise.
async fn browsed_load(
    browser: &PeerBrowser,
    fullname_prefix: &str,
    load: u32,
) -> Result<Peer, Vec<Peer>> {
    let mut last = Vec::new();
    // mDNS queries are repeated at 1, 2, 4 ... s, so a lost first exchange costs seconds.
    let seen = eventually(Duration::from_secs(30), || {
        last = browser.snapshot();
        last.iter()
            .any(|peer| peer.fullname.starts_with(fullname_prefix) && peer.load == Some(load))
    })
    .await;
    match last
        .iter()
        .find(|peer| peer.fullname.starts_with(fullname_prefix))
    {
        Some(peer) if seen => Ok(peer.clone()),
        _ => Err(last),
    }
}

/// Starts a member with mDNS, holds `HELD` events in its handler, and checks that a browser
/// sees its load go to `HELD` and back to 0. With `fresh`, the events arrive while the
/// registration is new (its announcements still going out); otherwise only once the browser
/// saw the member idle.
fn a_browser_follows_the_load(fresh: bool) {
    const HELD: u32 = 3;
    let outcome = in_private_netns(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let browser = PeerBrowser::start(PEERS_MAX).unwrap();
            let (open_tx, open_rx) = watch::channel(false);
            let holding = Arc::new(AtomicU32::new(0));
            let mut config = MemberConfig::new("sensors", "g", (HOST, 0).into());
            config.capacity = 8;
            config.mdns = true;
            config.load_announce_interval_ms = LOAD_ANNOUNCE_INTERVAL_MS_MIN;
            let gate = Gate {
                open: open_rx,
                holding: holding.clone(),
            };
            let member = Member::start(config, Arc::new(gate)).await.unwrap();
            let name = format!("herald-{:032x}", member.member_id());

            if !fresh {
                // Registered before any event: load 0.
                let peer = browsed_load(&browser, &name, 0)
                    .await
                    .unwrap_or_else(|last| {
                        panic!("the member was never seen with load 0; last view: {last:?}")
                    });
                assert_eq!(peer.capacity, Some(8), "{peer:?}");
                assert_eq!(peer.topic, "sensors", "{peer:?}");
            }

            let publisher = Publisher::start(PublisherConfig::new(vec![member.local_addr()]))
                .await
                .unwrap();
            let mut publishes = Vec::new();
            for i in 0..HELD {
                let publisher = publisher.clone();
                publishes.push(tokio::spawn(async move {
                    publisher
                        .publish(
                            Message::new("sensors", format!("e{i}")),
                            Duration::from_secs(60),
                        )
                        .await
                }));
            }
            assert!(
                eventually(Duration::from_secs(10), || holding.load(Ordering::SeqCst)
                    == HELD)
                .await,
                "the handler never held {HELD} events: {:?}",
                member.stats()
            );
            assert_eq!(member.stats().in_flight, HELD);
            let peer = browsed_load(&browser, &name, HELD)
                .await
                .unwrap_or_else(|last| {
                    panic!("the member was never seen with load {HELD}; last view: {last:?}")
                });
            assert_eq!(peer.capacity, Some(8), "{peer:?}");

            // Released and acknowledged: the member announces 0 again.
            open_tx.send(true).unwrap();
            for publish in publishes {
                publish.await.unwrap().unwrap();
            }
            assert_eq!(member.stats().in_flight, 0);
            browsed_load(&browser, &name, 0)
                .await
                .unwrap_or_else(|last| {
                    panic!("the member was never seen with load 0 again; last view: {last:?}")
                });

            // Its goodbye takes it off the view.
            member.shutdown().await;
            let mut last = Vec::new();
            let gone = eventually(Duration::from_secs(10), || {
                last = browser.snapshot();
                !last.iter().any(|peer| peer.fullname.starts_with(&name))
            })
            .await;
            assert!(gone, "the member stayed in the view: {last:?}");
            drop(publisher);
        });
    });
    if let Err(reason) = outcome {
        println!("skipped: {reason}");
    }
}

#[test]
fn a_browser_sees_the_load_of_a_member_holding_events_and_its_return_to_zero() {
    a_browser_follows_the_load(false);
}

#[test]
fn a_browser_follows_a_load_that_changes_while_the_registration_is_new() {
    a_browser_follows_the_load(true);
}

#[tokio::test]
async fn a_load_announce_interval_below_the_minimum_is_refused() {
    let mut config = MemberConfig::new("t", "g", "127.0.0.1:0".parse().unwrap());
    config.load_announce_interval_ms = LOAD_ANNOUNCE_INTERVAL_MS_MIN - 1;
    let handler = Arc::new(crate::harness::Shared(crate::harness::Recorder::new()));
    match Member::start(config, handler).await {
        Err(herald_direct::MemberStartError::Config(message)) => {
            assert!(message.contains("load_announce_interval_ms"), "{message}")
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("an interval below the minimum was taken"),
    }
}

#[test]
fn a_member_with_load_announcements_off_is_browsed_without_a_load() {
    let outcome = in_private_netns(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let browser = PeerBrowser::start(PEERS_MAX).unwrap();
            let mut config = MemberConfig::new("sensors", "g", (HOST, 0).into());
            config.mdns = true;
            config.load_announce_interval_ms = 0;
            let handler = Arc::new(crate::harness::Shared(crate::harness::Recorder::new()));
            let member = Member::start(config, handler).await.unwrap();
            let name = format!("herald-{:032x}", member.member_id());
            let mut last = Vec::new();
            let seen = eventually(Duration::from_secs(30), || {
                last = browser.snapshot();
                last.iter().any(|peer| peer.fullname.starts_with(&name))
            })
            .await;
            assert!(seen, "the member was never seen; last view: {last:?}");
            let peer = last
                .iter()
                .find(|peer| peer.fullname.starts_with(&name))
                .unwrap();
            assert_eq!(peer.load, None, "{peer:?}");
            assert_eq!(peer.capacity, Some(64), "{peer:?}");
            member.shutdown().await;
        });
    });
    if let Err(reason) = outcome {
        println!("skipped: {reason}");
    }
}
