//! [`Presence`]: a front end's etcd lease, what its concurrency blocks (`counter`) and its claim on asynchronous
//! events (`events`) live under. Granted at start, renewed every [`RENEW_EVERY`]; a front end that dies stops
//! renewing, and etcd drops the lease [`LEASE_TTL`] later with every key under it. A front end that learns etcd
//! let its lease expire (it was cut off that long) takes a new one: the holders watch [`Presence::id`] change.
//! While etcd does not answer, the lease is kept as it was (without quorum etcd expires no lease).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use ignis_cluster::owner::Owner;

use crate::{Etcd, EtcdError};

/// The life of a front end's lease without a renewal: what it holds outlives it by this much at most.
pub const LEASE_TTL: Duration = Duration::from_secs(4);
/// How often the lease is renewed.
pub const RENEW_EVERY: Duration = Duration::from_secs(1);

/// A front end's etcd lease, kept alive while the value lives.
pub struct Presence {
    etcd: Etcd,
    lease: Arc<AtomicI64>,
    /// The lease, and the revision this front end was listed at under it (changed together).
    owner: Arc<Mutex<Owner>>,
    /// The address other front ends reach this one at (empty until [`Presence::advertise`]).
    address: Arc<Mutex<String>>,
    renewing: tokio::task::JoinHandle<()>,
    /// Read-held by each look that acts under the lease ([`Presence::looking`]); `true` once this front end leaves.
    looks: tokio::sync::RwLock<bool>,
}

impl Drop for Presence {
    fn drop(&mut self) {
        self.renewing.abort();
    }
}

impl Presence {
    /// Takes a lease and keeps it alive.
    pub async fn start(etcd: Etcd) -> Result<Presence, EtcdError> {
        let address = Arc::new(Mutex::new(String::new()));
        let owner = grant(&etcd, "").await?;
        let lease = Arc::new(AtomicI64::new(owner.front_end));
        let owner = Arc::new(Mutex::new(owner));
        let renewing = tokio::spawn(renew(etcd.clone(), Arc::downgrade(&lease), owner.clone(), address.clone()));
        Ok(Presence { etcd, lease, owner, address, renewing, looks: tokio::sync::RwLock::new(false) })
    }

    /// Lists this front end with `address`, where the other front ends reach it (`HOST:PORT`).
    pub async fn advertise(&self, address: &str) -> Result<(), EtcdError> {
        *self.address.lock().unwrap_or_else(|e| e.into_inner()) = address.to_string();
        let lease = self.id();
        let options = Some(PutOptions::new().with_lease(lease));
        self.etcd.put(&crate::members::front_end_key(lease), address.as_bytes().to_vec(), options).await.map(drop)
    }

    /// This front end as a sandbox's owner on a worker host: its lease and the revision it was listed at.
    pub fn owner(&self) -> Owner {
        *self.owner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The lease's id now (another after etcd let the first expire).
    pub fn id(&self) -> i64 {
        self.lease.load(Ordering::Acquire)
    }

    /// Makes `name` (a full key) this front end's, under its lease, where it is absent; whether it is this front
    /// end's (made now, or before). What lives under the lease goes with it: another front end may claim it then.
    pub async fn claim(&self, etcd: &Etcd, name: &str) -> Result<bool, EtcdError> {
        let me = format!("{:x}", self.id());
        let txn = Txn::new()
            .when([Compare::version(name, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(name, me.clone(), Some(PutOptions::new().with_lease(self.id())))]);
        if etcd.decide(txn, name, Some(me.as_bytes())).await?.is_some() {
            return Ok(true);
        }
        let got = etcd.get(name, None).await?;
        Ok(got.kvs().first().is_some_and(|kv| kv.value() == me.as_bytes()))
    }

    /// Held while a look acts under the lease (claims keys, takes the queues over); `None` once this front end
    /// leaves, and [`Presence::leave`] waits for the looks in progress to end: none is cut off halfway when the
    /// process stops.
    pub async fn looking(&self) -> Option<tokio::sync::RwLockReadGuard<'_, bool>> {
        let left = self.looks.read().await;
        (!*left).then_some(left)
    }

    /// Ends the lease now (a front end that stops), once the looks in progress have ended: what lives under it goes
    /// at once.
    pub async fn leave(&self) {
        *self.looks.write().await = true;
        self.renewing.abort();
        if let Err(e) = self.etcd.client().lease_revoke(self.id()).await {
            tracing::warn!(error = %e, "cannot end this front end's etcd lease; it expires by itself");
        }
    }
}

/// What `address` holds now.
fn current(address: &Mutex<String>) -> String {
    address.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// A new lease, and this front end listed under it (`members/front-ends/<lease>`: the front ends a worker's
/// memory is shared among, and whose sandboxes worker hosts keep), with the revision of the listing.
async fn grant(etcd: &Etcd, address: &str) -> Result<Owner, EtcdError> {
    let lease = etcd.client().lease_grant(LEASE_TTL.as_secs() as i64, None).await?.id();
    let listing = (crate::members::front_end_key(lease), address.as_bytes().to_vec());
    let since = etcd.put(&listing.0, listing.1, Some(PutOptions::new().with_lease(lease))).await?;
    Ok(Owner { front_end: lease, since })
}

/// Keep-alives tried per renewal, [`RETRY_PAUSE`] apart.
const RENEW_TRIES: usize = 4;
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// One renewal of lease `id`: whether it lives, or `None` when etcd did not answer.
async fn keep_alive(etcd: &Etcd, id: i64) -> Option<bool> {
    let (mut keeper, mut answers) = etcd.client().lease_keep_alive(id).await.ok()?;
    keeper.keep_alive().await.ok()?;
    answers.message().await.ok().flatten().map(|answer| answer.ttl() > 0)
}

/// Renews the lease; when etcd has let it expire, takes a new one.
async fn renew(etcd: Etcd, lease: std::sync::Weak<AtomicI64>, owner: Arc<Mutex<Owner>>, address: Arc<Mutex<String>>) {
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        let Some(lease) = lease.upgrade() else { return };
        let id = lease.load(Ordering::Acquire);
        let mut alive = None;
        // A keep-alive stream may be opened to a member that died: a few tries may reach a live one.
        for _ in 0..RENEW_TRIES {
            alive = tokio::time::timeout(RENEW_EVERY, keep_alive(&etcd, id)).await.ok().flatten();
            if alive.is_some() {
                break;
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        if alive.is_none() {
            // Whether etcd (a live member of it) let the lease expire meanwhile.
            alive = etcd.client().lease_time_to_live(id, None).await.ok().map(|answer| answer.ttl() > 0);
        }
        match alive {
            Some(true) => {}
            // etcd unreachable or without a leader: try again; the lease lives LEASE_TTL from its last renewal.
            None => tracing::warn!("cannot renew this front end's etcd lease"),
            Some(false) => match grant(&etcd, &current(&address)).await {
                Ok(new) => {
                    tracing::warn!(old = id, new = new.front_end, "this front end's etcd lease expired: what it held goes, it starts again");
                    *owner.lock().unwrap_or_else(|e| e.into_inner()) = new;
                    lease.store(new.front_end, Ordering::Release);
                }
                Err(e) => tracing::warn!(error = %e, "cannot take a new etcd lease"),
            },
        }
    }
}
