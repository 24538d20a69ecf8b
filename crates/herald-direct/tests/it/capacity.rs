//! Flow control: a member never has more events in flight than it advertised; load shifts to
//! members with room; a full group yields a back-pressure error.

use std::time::Duration;

use herald_direct::{Message, PublishError};

use crate::harness::{Recorder, member, publisher, wait_up};

#[tokio::test]
async fn a_slow_member_with_capacity_one_is_never_overfilled() {
    let slow = Recorder::slow(Duration::from_millis(50));
    let fast = Recorder::new();
    let ms = member("t", "g", 1, &slow).await;
    let mf = member("t", "g", 8, &fast).await;
    let p = publisher(&[&ms, &mf]).await;
    wait_up(&p, 2).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            p.publish(Message::new("t", format!("e{i}")), Duration::from_secs(20))
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(ms.stats().in_flight_max, 1);
    assert_eq!(
        ms.stats().busy_refusals,
        0,
        "the producer sent beyond the capacity"
    );
    assert_eq!(slow.values().len() + fast.values().len(), 200);
    assert!(
        fast.values().len() > slow.values().len() * 4,
        "load did not shift"
    );
}

#[tokio::test]
async fn a_full_group_is_back_pressure_after_the_deadline() {
    let slow = Recorder::slow(Duration::from_secs(3));
    let m = member("t", "g", 1, &slow).await;
    let p = publisher(&[&m]).await;
    wait_up(&p, 1).await;
    let p2 = p.clone();
    let first = tokio::spawn(async move {
        p2.publish(Message::new("t", "first"), Duration::from_secs(10))
            .await
    });
    let p3 = p.clone();
    assert!(
        crate::harness::eventually(Duration::from_secs(5), move || p3.members()[0].in_flight
            == 1)
        .await
    );
    let err = p
        .publish(Message::new("t", "second"), Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, PublishError::BackPressure { .. }), "{err:?}");
    first.await.unwrap().unwrap();
}
