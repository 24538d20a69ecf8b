//! The behavioural suite against the in-process transport, plus what only memory does.

use herald::{Bus, Event, TransportKind};

use crate::behaviour::{BoxFuture, Fixture};

/// Every bus of one fixture shares one named in-process store.
pub struct Memory {
    name: String,
}

impl Memory {
    pub async fn start() -> Memory {
        Memory {
            name: format!("suite-{}", herald::EventId::new()),
        }
    }
}

impl Fixture for Memory {
    fn kind(&self) -> TransportKind {
        TransportKind::Memory
    }

    fn bus(&self) -> BoxFuture<'_, Bus> {
        Box::pin(async move {
            Bus::connect(&format!("memory://{}", self.name))
                .await
                .unwrap()
        })
    }
}

crate::behaviour_tests!(Memory::start(); all);

#[tokio::test]
async fn private_memory_buses_do_not_share_topics() {
    let a = Bus::connect("memory://").await.unwrap();
    let b = Bus::connect("memory://").await.unwrap();
    a.publish("t", Event::new("x")).await.unwrap();
    let r = b.publish("t", Event::new("y")).await.unwrap();
    assert_eq!(
        r.completed,
        herald::Completed::Stored {
            partition: 0,
            offset: 0
        }
    );
}

#[tokio::test]
async fn the_oldest_events_go_beyond_the_size_limit() {
    let bus = Bus::connect("memory://?topic_events_max=3").await.unwrap();
    for i in 0..5 {
        bus.publish("t", Event::new(format!("{i}"))).await.unwrap();
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let sub = bus
        .subscribe("t")
        .handle(move |e: Event| {
            let tx = tx.clone();
            async move {
                tx.send(e.payload).unwrap();
                Ok(())
            }
        })
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(rx.recv().await.unwrap());
    }
    // Keyless events may be handled in any order.
    got.sort();
    assert_eq!(got, vec!["2", "3", "4"]);
    sub.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_options_are_refused() {
    let err = Bus::connect("memory://?bogus=1").await.unwrap_err();
    assert!(err.to_string().contains("bogus"), "{err}");
}
