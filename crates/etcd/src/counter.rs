//! [`EtcdCounter`]: concurrency counted cluster-wide, by blocks each front end leases from books in etcd and
//! counts locally.
//!
//! # Keys (per account)
//! - `counts/<account>/blocks/<function>/<holder>`: the units of `function` front end `holder` holds, under its
//!   etcd lease (its [`Presence`]; `holder` is the lease's id): a front end that dies stops renewing it, and its blocks go when it
//!   expires.
//! - `counts/<account>/version`: changed by every transaction that leases, so two leases decided on the same
//!   reading cannot both pass (the second one's compare fails, and it reads again).
//! - `counts/<account>/wanted/<holder>`: a front end that was refused while others hold units of the account
//!   asks them for their spare ones (under its lease; deleted once served).
//!
//! # How a front end counts
//! An invocation takes a unit of a block this front end holds for its function: no request to etcd. Only when it
//! holds none with room does it lease more (one round for a block of units): it reads the account's blocks, asks
//! [`ignis_counting::room`] (Lambda's rules over the whole cluster's use, reservations from the registry) and
//! writes its new holding in a transaction on the account's version. A released unit stays in its block, spare,
//! for the next invocation here; spare units go back when another front end asks for them (`wanted`), and after
//! [`IDLE`] without use. A refused lease while other front ends hold units of the pool asks for them and tries
//! again as blocks change, for up to [`DEMAND_WAIT`], before it throttles. Use is never above a bound: a front
//! end counts on units it holds, and a lease is granted only where every bound has room for everything held.
//! Giving back needs no compare: a reading that still counts a returned unit only errs on the safe side.
//!
//! A front end whose lease was lost (etcd presumed it dead) drops every block, takes a new lease and counts
//! again from nothing; units of the old lease release into nothing. While etcd does not answer (no quorum, or
//! this front end cut off from it), the front end goes on admitting on the units it holds, and leases none: with
//! no quorum etcd expires no lease (a new leader extends them all), so nobody else can be given those units; a
//! front end cut off from a working majority can exceed a bound by at most what it holds, until it reaches
//! etcd again and learns its lease is gone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use ignis_counting::{LeaseId, Limits, Reason, ReservationError};
use ignis_ids::AccountId;
use ignis_invoke::{BoxFuture, Counter, Slot};
use ignis_registry::Registry;
use tokio::sync::watch;

use crate::mirror::{Apply, Kv, Mirror};
use crate::presence::Presence;
use crate::{Etcd, EtcdError, key};

/// Units asked for at once for a function without a reservation (a reserved function asks for one at a time:
/// its few units may be needed on other front ends).
pub const BLOCK: u32 = 8;
/// How long a refused lease waits for other front ends' spare units before it throttles.
pub const DEMAND_WAIT: Duration = Duration::from_secs(1);
/// Spare units unused this long go back.
pub const IDLE: Duration = Duration::from_secs(30);
/// Tries of a lease whose transaction lost to another front end's.
const TRIES: usize = 32;

/// A function's units here: `held` leased, `used` by invocations running.
struct Block {
    held: u32,
    used: u32,
    last_used: Instant,
    /// The function's reservation when its units were leased (`None`: unreserved). Spare units leased under
    /// other terms than the function's now are not used: they go back, and units are leased anew under the rule.
    terms: Option<u32>,
}

type Key = (String, String);

struct Inner {
    etcd: Etcd,
    limits: Limits,
    registry: Arc<dyn Registry>,
    /// This front end's etcd lease: its holder id.
    presence: Arc<Presence>,
    /// The lease the blocks were leased under (when the presence's changes, they are gone).
    blocks_lease: AtomicI64,
    blocks: Mutex<HashMap<Key, Block>>,
    /// One lease or give-back at a time per function (so every write of a holding is from the holding here).
    rounds: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
    /// Bumped whenever the watch sees a block change: refused leases try again.
    changed: watch::Sender<u64>,
    /// Accounts other front ends want units of now, with the holders that want them.
    wanted: Mutex<HashMap<String, std::collections::HashSet<String>>>,
}

/// Why a lease granted nothing.
enum Refused {
    /// The pool has no room; `others` is whether other front ends hold units that count against it.
    Full { reason: Reason, others: bool },
    Unavailable(EtcdError),
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn block_key(account: &str, function: &str, holder: i64) -> String {
    key(&format!("counts/{account}/blocks/{function}/{holder:x}"))
}

fn version_key(account: &str) -> String {
    key(&format!("counts/{account}/version"))
}

fn wanted_key(account: &str, holder: i64) -> String {
    key(&format!("counts/{account}/wanted/{holder:x}"))
}

/// The concurrency counter of a cluster's front end.
pub struct EtcdCounter {
    inner: Arc<Inner>,
    _mirror: Mirror,
    sweeping: tokio::task::JoinHandle<()>,
}

impl Drop for EtcdCounter {
    fn drop(&mut self) {
        self.sweeping.abort();
    }
}

impl EtcdCounter {
    /// Joins the cluster's counting with a new etcd lease; every account has `limits` (every front end must be
    /// given the same), reservations are the registry's records'.
    pub async fn start(etcd: Etcd, presence: Arc<Presence>, limits: Limits, registry: Arc<dyn Registry>) -> Result<EtcdCounter, EtcdError> {
        let inner = Arc::new(Inner {
            etcd: etcd.clone(),
            limits,
            registry,
            blocks_lease: AtomicI64::new(presence.id()),
            presence,
            blocks: Mutex::default(),
            rounds: Mutex::default(),
            changed: watch::channel(0).0,
            wanted: Mutex::default(),
        });
        let mirror = Mirror::start(etcd, key("counts/"), Arc::new(Watched(Arc::downgrade(&inner)))).await?;
        let sweeping = tokio::spawn(sweep(Arc::downgrade(&inner)));
        Ok(EtcdCounter { inner, _mirror: mirror, sweeping })
    }

    /// Units of `function` this front end holds and uses (for tests and diagnostics).
    pub fn holding(&self, account: &str, function: &str) -> (u32, u32) {
        let blocks = self.inner.blocks();
        blocks.get(&(account.to_string(), function.to_string())).map_or((0, 0), |b| (b.held, b.used))
    }

}

impl Inner {
    fn holder(&self) -> i64 {
        self.presence.id()
    }

    /// The blocks, emptied first if they were leased under a lease etcd has dropped since.
    fn blocks(&self) -> MutexGuard<'_, HashMap<Key, Block>> {
        let mut blocks = lock(&self.blocks);
        let now = self.holder();
        if self.blocks_lease.swap(now, Ordering::AcqRel) != now {
            blocks.clear();
        }
        blocks
    }

    /// A unit of a block held here, if one has room.
    fn take_local(&self, key: &Key) -> Option<Slot> {
        let terms = self.reservation(key);
        let mut blocks = self.blocks();
        let block = blocks.get_mut(key).filter(|b| b.used < b.held && b.terms == terms)?;
        block.used += 1;
        block.last_used = Instant::now();
        Some(Slot::Leased { lease: LeaseId(self.holder() as u64), account: key.0.clone(), function: key.1.clone() })
    }

    fn round(&self, key: &Key) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.rounds).entry(key.clone()).or_default().clone()
    }

    /// `key`'s function's reservation now, from the registry.
    fn reservation(&self, (account, function): &Key) -> Option<u32> {
        self.registry.get(&AccountId::new(account), function).and_then(|record| record.reserved_concurrency)
    }

    /// Whether `key` holds spare units leased under other terms than its function's now.
    fn stale(&self, key: &Key) -> bool {
        let terms = self.reservation(key);
        self.blocks().get(key).is_some_and(|b| b.held > b.used && b.terms != terms)
    }

    /// Every function's reservation in `account`, from the registry.
    fn reservations(&self, account: &str) -> HashMap<String, u32> {
        let account = AccountId::new(account);
        self.registry
            .list(&account)
            .into_iter()
            .filter_map(|record| record.reserved_concurrency.map(|n| (record.name.clone(), n)))
            .collect()
    }

    /// Leases more units of `key`'s function; how many. The caller holds the function's round.
    async fn lease_more(&self, key: &Key) -> Result<u32, Refused> {
        let (account, function) = key;
        let prefix = key_prefix(account);
        for _ in 0..TRIES {
            let holder = self.holder();
            let got = self.etcd.get(&prefix, Some(GetOptions::new().with_prefix())).await.map_err(Refused::Unavailable)?;
            let mine = self.blocks().get(key).map_or(0, |b| b.held);
            let mut version = 0;
            let mut in_use: HashMap<String, u32> = HashMap::new();
            let mut others: HashMap<String, u32> = HashMap::new();
            for kv in got.kvs() {
                let Some(rest) = kv.key_str().ok().and_then(|k| k.strip_prefix(&prefix)) else { continue };
                if rest == "version" {
                    version = kv.mod_revision();
                } else if let Some((f, h)) = rest.strip_prefix("blocks/").and_then(|b| b.rsplit_once('/')) {
                    let units: u32 = kv.value_str().ok().and_then(|v| v.parse().ok()).unwrap_or(0);
                    // This front end's own holding is what it holds here (etcd may lag a give-back).
                    if h != format!("{holder:x}") {
                        *in_use.entry(f.to_string()).or_default() += units;
                        *others.entry(f.to_string()).or_default() += units;
                    }
                }
            }
            for ((a, f), block) in self.blocks().iter() {
                if a == account {
                    *in_use.entry(f.clone()).or_default() += block.held;
                }
            }
            let reservations = self.reservations(account);
            let room = match ignis_counting::room(self.limits, &reservations, &in_use, function) {
                Ok(room) => room,
                Err(reason) => {
                    // Whose units count against the pool that refused: the function's own, or the account's.
                    let others = match reservations.get(function) {
                        Some(_) => others.get(function).is_some_and(|n| *n > 0),
                        None => others.values().any(|n| *n > 0),
                    };
                    return Err(Refused::Full { reason, others });
                }
            };
            let want = if reservations.contains_key(function) { 1 } else { BLOCK };
            let granted = room.min(want);
            let options = Some(PutOptions::new().with_lease(holder));
            let txn = Txn::new()
                .when([Compare::mod_revision(version_key(account), CompareOp::Equal, version)])
                .and_then([
                    TxnOp::put(version_key(account), format!("{holder:x}"), None),
                    TxnOp::put(block_key(account, function, holder), (mine + granted).to_string(), options),
                ]);
            let (answer, _) = self.etcd.txn(txn).await.map_err(Refused::Unavailable)?;
            // Leased under a lease etcd has dropped since: those units are gone with it; lease again.
            if answer.succeeded() && self.holder() == holder {
                let mut blocks = self.blocks();
                let block =
                    blocks.entry(key.clone()).or_insert(Block { held: 0, used: 0, last_used: Instant::now(), terms: None });
                block.held = mine + granted;
                block.terms = reservations.get(function).copied();
                return Ok(granted);
            }
        }
        Err(Refused::Unavailable(EtcdError::Unavailable(format!(
            "{TRIES} leases of {account}'s concurrency in a row lost to other front ends'"
        ))))
    }

    /// Gives `key`'s spare units back (all unused ones).
    async fn give_back(&self, key: &Key) {
        let round = self.round(key);
        let _turn = round.lock().await;
        let holder = self.holder();
        let held = {
            let mut blocks = self.blocks();
            let Some(block) = blocks.get_mut(key) else { return };
            if block.held == block.used {
                return;
            }
            block.held = block.used;
            let held = block.held;
            if held == 0 {
                blocks.remove(key);
            }
            held
        };
        let name = block_key(&key.0, &key.1, holder);
        let written = match held {
            0 => self.etcd.retrying_delete(&name).await,
            n => self.etcd.put(&name, n.to_string().into_bytes(), Some(PutOptions::new().with_lease(holder))).await.map(drop),
        };
        if let Err(e) = written {
            // etcd keeps counting the units: safe, and put right by the next write of this holding.
            tracing::warn!(account = %key.0, function = %key.1, error = %e, "cannot give concurrency back");
        }
        self.forget_round(key);
    }

    /// Drops `key`'s round if nothing uses it or its block.
    fn forget_round(&self, key: &Key) {
        if self.blocks().contains_key(key) {
            return;
        }
        let mut rounds = lock(&self.rounds);
        if rounds.get(key).is_some_and(|round| Arc::strong_count(round) == 1) {
            rounds.remove(key);
        }
    }

    /// Another front end wants units of `account`: gives back every spare one of its functions.
    fn demanded(self: &Arc<Self>, account: &str) {
        let keys: Vec<Key> =
            self.blocks().iter().filter(|((a, _), b)| a == account && b.held > b.used).map(|(k, _)| k.clone()).collect();
        for key in keys {
            let inner = self.clone();
            tokio::spawn(async move { inner.give_back(&key).await });
        }
    }

    async fn acquire(&self, account: &str, function: &str) -> Result<Slot, Reason> {
        let key = (account.to_string(), function.to_string());
        let round = self.round(&key);
        let deadline = tokio::time::Instant::now() + DEMAND_WAIT;
        let mut asked = false;
        let answer = loop {
            if let Some(slot) = self.take_local(&key) {
                break Ok(slot);
            }
            // The function's reservation changed since its spare units were leased: they go back first.
            if self.stale(&key) {
                self.give_back(&key).await;
            }
            let mut changed = self.changed.subscribe();
            let leased = {
                // One round at a time per function: whoever waited for it may find the units another leased.
                let _turn = round.lock().await;
                if let Some(slot) = self.take_local(&key) {
                    break Ok(slot);
                }
                self.lease_more(&key).await
            };
            match leased {
                Ok(_) => continue,
                Err(Refused::Full { reason, others }) => {
                    if !others || tokio::time::Instant::now() >= deadline {
                        break Err(reason);
                    }
                    if !asked {
                        asked = true;
                        let wanted = wanted_key(account, self.holder());
                        let options = Some(PutOptions::new().with_lease(self.holder()));
                        if let Err(e) = self.etcd.put(&wanted, function.as_bytes().to_vec(), options).await {
                            tracing::warn!(error = %e, "cannot ask other front ends for concurrency");
                        }
                    }
                    // Outside the round: waiting invocations of the function wait side by side.
                    let _ = tokio::time::timeout_at(deadline, changed.changed()).await;
                }
                Err(Refused::Unavailable(e)) => {
                    tracing::warn!(account, function, error = %e, "cannot lease concurrency: throttled");
                    break Err(Reason::ConcurrentInvocationLimitExceeded);
                }
            }
        };
        drop(round);
        // A function refused here keeps no round behind.
        self.forget_round(&key);
        if asked && let Err(e) = self.etcd.retrying_delete(&wanted_key(account, self.holder())).await {
            tracing::warn!(error = %e, "cannot withdraw a request for concurrency; it goes with the lease");
        }
        answer
    }
}

fn key_prefix(account: &str) -> String {
    key(&format!("counts/{account}/"))
}

impl Counter for EtcdCounter {
    fn acquire<'a>(&'a self, account: &'a str, function: &'a str) -> BoxFuture<'a, Result<Slot, Reason>> {
        Box::pin(self.inner.acquire(account, function))
    }

    fn release(&self, slot: Slot) {
        let Slot::Leased { lease, account, function } = slot else { return };
        if lease.0 as i64 != self.inner.holder() {
            // Counted under a lease etcd has dropped: its units went with it.
            return;
        }
        let wanted = lock(&self.inner.wanted).contains_key(&account);
        {
            let mut blocks = self.inner.blocks();
            let Some(block) = blocks.get_mut(&(account.clone(), function)) else { return };
            block.used = block.used.saturating_sub(1);
            block.last_used = Instant::now();
        }
        if wanted {
            self.inner.demanded(&account);
        }
    }

    fn set_reservation(&self, account: &str, function: &str, reserved: u32) -> Result<Option<u32>, ReservationError> {
        let mut reservations = self.inner.reservations(account);
        let old = reservations.insert(function.to_string(), reserved);
        let sum: u64 = reservations.values().map(|n| u64::from(*n)).sum();
        let Limits { concurrency, min_unreserved } = self.inner.limits;
        if sum + u64::from(min_unreserved) > u64::from(concurrency) {
            return Err(ReservationError::BelowMinimumUnreserved { minimum: min_unreserved });
        }
        Ok(old)
    }

    fn delete_reservation(&self, account: &str, function: &str) -> Option<u32> {
        self.inner.reservations(account).remove(function)
    }

    fn unreserved_capacity(&self, account: &str) -> u32 {
        let reserved: u32 = self.inner.reservations(account).values().sum();
        self.inner.limits.concurrency.saturating_sub(reserved)
    }

    fn concurrency_limit(&self, _account: &str) -> u32 {
        self.inner.limits.concurrency
    }
}

/// What the watch of `counts/` tells this front end: blocks changed (refused leases try again), and other front
/// ends want units.
struct Watched(std::sync::Weak<Inner>);

impl Watched {
    fn saw(&self, kvs: &[Kv]) {
        let Some(inner) = self.0.upgrade() else { return };
        let me = format!("{:x}", inner.holder());
        let mut blocks_changed = false;
        for kv in kvs {
            let Some((account, rest)) = kv.key.split_once('/') else { continue };
            if rest.starts_with("blocks/") {
                blocks_changed = true;
            } else if let Some(holder) = rest.strip_prefix("wanted/")
                && holder != me
            {
                let mut wanted = lock(&inner.wanted);
                match kv.value {
                    Some(_) => drop(wanted.entry(account.to_string()).or_default().insert(holder.to_string())),
                    None => {
                        if let Some(holders) = wanted.get_mut(account) {
                            holders.remove(holder);
                            if holders.is_empty() {
                                wanted.remove(account);
                            }
                        }
                    }
                }
                drop(wanted);
                if kv.value.is_some() {
                    inner.demanded(account);
                }
            }
        }
        if blocks_changed {
            inner.changed.send_modify(|n| *n += 1);
        }
    }
}

impl Apply for Watched {
    fn reset(&self, all: Vec<Kv>) -> crate::mirror::BoxFuture<'_, ()> {
        if let Some(inner) = self.0.upgrade() {
            lock(&inner.wanted).clear();
        }
        self.saw(&all);
        Box::pin(async {})
    }

    fn apply(&self, changes: Vec<Kv>) -> crate::mirror::BoxFuture<'_, ()> {
        self.saw(&changes);
        Box::pin(async {})
    }
}

/// Gives back spare units unused for [`IDLE`].
async fn sweep(inner: std::sync::Weak<Inner>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(inner) = inner.upgrade() else { return };
        let idle: Vec<Key> = inner
            .blocks()
            .iter()
            .filter(|(_, b)| b.held > b.used && b.last_used.elapsed() >= IDLE)
            .map(|(k, _)| k.clone())
            .collect();
        for key in idle {
            inner.give_back(&key).await;
        }
    }
}
