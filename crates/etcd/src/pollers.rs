//! [`PollerLeases`]: which front end runs each event source mapping's pollers.
//!
//! - Every front end follows the stored mappings (`mappings/<account>/<uuid>`, written by the front end serving
//!   the queues) into its `ignis_pollers::Mappings` ([`Mappings::follow`]).
//! - A mapping's pollers run on the front end leading its function's partition ([`Partitions`]), so the batches
//!   they invoke run there without a hop, and mappings spread over the front ends as partitions do.
//! - A front end whose pollers of a mapping run holds `pollers/<uuid>` under its [`Presence`] lease, put when they
//!   start and deleted when the last of them has ended (after the batch it had in hand). A front end starts a
//!   mapping's pollers only while no other holds that key: when a partition moves, the new leader waits for the
//!   old one's pollers to end, or for its lease to expire when it died. The key also tells the front end serving
//!   the mappings that the pollers run (`State`).
//! - Every [`EVERY`], a front end publishes which pollers run on it and starts and stops pollers as the partitions
//!   and the keys say ([`Mappings::place`]).
//!
//! # Invariants
//! - A mapping's pollers run on one front end at a time, but for a dead front end's until its lease expires
//!   (which run nothing more: the process is gone).
//! - A batch is worked by one poller at a time: it is in flight in its queue, under the queue's visibility
//!   timeout, until its poller deletes what was processed; a batch whose poller died comes back when that timeout
//!   ends.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use ignis_pollers::{Mappings, PollerPlaces};

use crate::mirror::Sees;
use crate::{Etcd, EtcdError, Kv, Mirror, Partitions, Presence, key};

/// Where a front end whose pollers of a mapping run says so.
const POLLERS: &str = "pollers/";
/// How often a front end publishes its pollers and places them.
pub const EVERY: Duration = Duration::from_millis(250);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Which front end runs each mapping's pollers; see the module docs.
pub struct PollerLeases {
    etcd: Etcd,
    presence: Arc<Presence>,
    partitions: Arc<Partitions>,
    mappings: Weak<Mappings>,
    /// The holder (lease) of each mapping's `pollers/<uuid>`, as the watch last showed it.
    holders: Arc<Mutex<BTreeMap<String, i64>>>,
    _holders_mirror: Mirror,
    /// Started once the mappings know their places: before, they would start every poller here.
    mappings_mirror: Mutex<Option<Mirror>>,
}

/// The stored mappings (`mappings/<account>/<uuid>`), followed into a front end's `mappings`.
fn followed(mappings: Weak<Mappings>) -> Arc<dyn crate::Apply> {
    Arc::new(Sees(move |changes: Vec<Kv>, reset: bool| {
        let Some(mappings) = mappings.upgrade() else { return };
        let changes = changes
            .into_iter()
            .filter_map(|kv| {
                let (account, uuid) = kv.key.split_once('/')?;
                Some((account.to_string(), uuid.to_string(), kv.value))
            })
            .collect();
        mappings.follow(reset, changes);
    }))
}

impl PollerLeases {
    /// Follows the stored mappings into `mappings` and runs their pollers where `partitions` says, every
    /// [`EVERY`] while it lives.
    pub async fn start(
        etcd: Etcd,
        presence: Arc<Presence>,
        partitions: Arc<Partitions>,
        mappings: &Arc<Mappings>,
    ) -> Result<Arc<PollerLeases>, EtcdError> {
        let holders = Arc::new(Mutex::new(BTreeMap::new()));
        let holders_mirror = Mirror::start(etcd.clone(), key(POLLERS), crate::mirror::holders(Arc::downgrade(&holders))).await?;
        let leases = Arc::new(PollerLeases {
            etcd: etcd.clone(),
            presence,
            partitions,
            mappings: Arc::downgrade(mappings),
            holders,
            _holders_mirror: holders_mirror,
            mappings_mirror: Mutex::new(None),
        });
        mappings.set_places(leases.clone());
        let followed = followed(Arc::downgrade(mappings));
        *lock(&leases.mappings_mirror) = Some(Mirror::start(etcd, key(crate::queues::MAPPINGS), followed).await?);
        crate::every(EVERY, Arc::downgrade(&leases), "cannot publish or place the event source mappings' pollers", |leases| async move {
            leases.look().await
        });
        Ok(leases)
    }

    /// One look: publishes which mappings' pollers run here, then starts and stops pollers as the partitions
    /// and the other front ends' keys say.
    async fn look(&self) -> Result<(), EtcdError> {
        let Some(mappings) = self.mappings.upgrade() else { return Ok(()) };
        let Some(_looking) = self.presence.looking().await else { return Ok(()) };
        let me = self.presence.id();
        let polling = mappings.polling();
        let mine: Vec<String> = lock(&self.holders).iter().filter(|(_, holder)| **holder == me).map(|(uuid, _)| uuid.clone()).collect();
        for uuid in polling.iter().filter(|uuid| !mine.contains(uuid)) {
            if !self.presence.claim(&self.etcd, &key(&format!("{POLLERS}{uuid}"))).await? {
                tracing::warn!(mapping = %uuid, "another front end holds the mapping's pollers' key while its pollers run here");
            }
        }
        for uuid in mine.iter().filter(|uuid| !polling.contains(uuid)) {
            let name = key(&format!("{POLLERS}{uuid}"));
            let txn = Txn::new()
                .when([Compare::value(name.as_str(), CompareOp::Equal, format!("{me:x}"))])
                .and_then([TxnOp::delete(name.as_str(), None)]);
            self.etcd.txn(txn).await?;
        }
        mappings.place();
        Ok(())
    }
}

impl PollerPlaces for PollerLeases {
    fn here(&self, account: &str, function: &str) -> bool {
        self.partitions.leads(account, function)
    }

    fn elsewhere(&self, uuid: &str) -> bool {
        lock(&self.holders).get(uuid).is_some_and(|holder| *holder != self.presence.id())
    }
}
