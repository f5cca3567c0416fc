//! The invoker over a membership it shares with other front ends: members
//! that joined elsewhere are placed on, and their leases still decide when
//! they are gone. Fake workers, a manual clock: no root, no real waiting.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ignis_clock::ManualClock;
use ignis_cluster::Capacity;
use ignis_counting::Limits;
use ignis_worker::Completion;

use crate::fake::FakeWorker;
use crate::membership::Beat;
use crate::tests::{event, function, settle};
use crate::*;

#[tokio::test]
async fn members_that_joined_elsewhere_are_placed_on_until_their_lease_expires() {
    let clock = ManualClock::at_epoch_2026();
    let shared: SharedClock = clock.clone();
    let timeout = ignis_cluster::HEARTBEAT_TIMEOUT.as_millis() as u64;
    let membership = Arc::new(LocalMembership::new(timeout));
    let made: Arc<Mutex<Vec<Arc<FakeWorker>>>> = Arc::default();
    let connected = made.clone();
    let worker_clock = shared.clone();
    let workers = Workers {
        local: None,
        connect: Box::new(move |address| {
            let worker = FakeWorker::new(address, worker_clock.clone());
            connected.lock().unwrap().push(worker.clone());
            Arc::new(worker)
        }),
        logs: tokio::sync::mpsc::channel(1).0,
    };
    let admission = Admission::new(Limits { concurrency: 10, min_unreserved: 0 }, 100, shared.clone());
    let invoker =
        Invoker::with_membership(workers, admission, membership.clone(), Duration::from_secs(60), shared.clone());

    // A worker host registers through another front end (same membership, the same clock's time).
    let id = membership.register("10.0.0.9:9000", Capacity { memory_mb: 1024, cpus: 2 }, 0).await.expect("registered").id;
    assert_eq!(invoker.workers()[0].address, "10.0.0.9:9000", "listed at once");
    // Placed on at once, before the next health check: a start that finds no worker looks at the membership first.
    let outcome = invoker.invoke(function("f", "r1", 128), event("1")).await.expect("an outcome");
    assert!(matches!(outcome.completion, Completion::Response(_)));
    let worker = made.lock().unwrap()[0].clone();
    assert_eq!(worker.starts(), 1);
    assert_eq!((invoker.workers()[0].used_memory_mb, invoker.workers()[0].sandboxes), (128, 1));
    // Its heartbeats go to the other front end; this one's heartbeat answers the same.
    assert_eq!(membership.heartbeat(id, 2 * HEALTH_CHECK_EVERY.as_millis() as u64).await, Beat::Renewed);
    assert!(invoker.heartbeat(id).await);

    // Silence: the lease expires, the worker is down here, its sandboxes are forgotten.
    for _ in 0..(ignis_cluster::HEARTBEAT_TIMEOUT.as_millis() / HEALTH_CHECK_EVERY.as_millis() + 2) {
        clock.advance(HEALTH_CHECK_EVERY);
        settle().await;
    }
    let info = &invoker.workers()[0];
    assert_eq!((info.id, info.healthy, info.sandboxes, info.used_memory_mb), (id, false, 0, 0));
    assert_eq!(invoker.counts(), (0, 0, 0));
    assert_eq!(membership.heartbeat(id, u64::MAX).await, Beat::Unknown);
    assert_eq!(made.lock().unwrap().len(), 1, "one connection per member");
}
