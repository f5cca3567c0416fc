//! [`QueueLeadership`]: which front end of a cluster serves the queues and the event source mappings.
//!
//! - One front end at a time serves every queue (its live state: messages in flight, visibility timeouts, long
//!   polls) and the mappings' calls; each mapping's pollers run where `crate::pollers` places them. It holds
//!   `leaders/queues` under its [`Presence`] lease, made only where absent: the first front end to look takes it,
//!   and it stays there until that front end's lease ends.
//! - Queues and mappings are stored in etcd (`crate::queues`), and every write is fenced by that key
//!   ([`Fence`]): a front end that no longer holds it writes nothing.
//! - The front end that takes the key loads every queue and mapping from etcd, as a restart does
//!   (`ignis_queues::Queues::take_over`, `ignis_pollers::Mappings::take_over`: messages in flight are visible
//!   again at once; their receipt handles are no longer valid), and only then serves them. One that finds the key
//!   taken by another forgets the queues it served and stops serving the mappings (`stand_down`).
//! - The other front ends hand their SQS actions and mapping calls to it (`POST /ignis/queue-requests`, signed
//!   with the administrator's key, as [`ignis_queues::Forwarded`]), and so do their asynchronous invocations'
//!   queue destinations. Their mappings' pollers (`crate::pollers`) receive, delete and change visibility through
//!   it too (`POST /ignis/queue-polls`, as [`ignis_queues::PollCall`]). While no front end serves the queues (for
//!   up to the dead holder's lease's life and the load), requests wait up to `ignis_queues::HOME_WAIT`, then fail
//!   with `ServiceUnavailable`.
//!
//! # Invariants
//! - At most one front end serves the queues at a time, and a stored message changes only through it.
//! - No message accepted (its send answered) is lost with any one front end: it is in etcd.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use http::{Method, StatusCode};
use ignis_cluster::Peer;
use ignis_pollers::Mappings;
use ignis_cluster::PeerError;
use ignis_queues::{Answered, Forwarded, Home, PeerFailure, PollAnswer, PollCall, QueueHome, QueuePeer, Queues};
use ignis_sigv4::Credentials;

use crate::members::EtcdMembership;
use crate::queues::Fence;
use crate::{Apply, Etcd, EtcdError, Kv, Mirror, Presence, key};

/// The key the front end serving the queues holds (under its lease; its value is the lease in hex).
pub const QUEUES_KEY: &str = "leaders/queues";
/// How often a front end looks whether it is to serve the queues.
pub const EVERY: Duration = Duration::from_millis(250);
/// The longest a forwarded queue request may take (a receive waits up to 20 s for messages).
const FORWARD_LIMIT: Duration = Duration::from_secs(30);

/// The fence of the queues' and mappings' storage: no front end may write them yet.
pub fn queues_fence() -> Fence {
    Fence { key: key(QUEUES_KEY), lease: Arc::new(AtomicI64::new(0)) }
}

/// Which front end serves the queues; see the module docs.
pub struct QueueLeadership {
    etcd: Etcd,
    presence: Arc<Presence>,
    membership: Arc<EtcdMembership>,
    credentials: Credentials,
    fence: Fence,
    /// The lease this front end serves the queues under, once they are loaded (0: it does not).
    ready: AtomicI64,
    /// The holder of [`QUEUES_KEY`], as the watch last showed it.
    holder: Arc<Mutex<Option<i64>>>,
    peers: Mutex<HashMap<String, Arc<QueueFrontEnd>>>,
    /// Every queue as `(account, name)`, from the stored definitions.
    names: Arc<Mutex<BTreeSet<(String, String)>>>,
    queues: Weak<Queues>,
    mappings: Weak<Mappings>,
    _mirror: Mirror,
    _names_mirror: Mirror,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

struct Watched(Weak<Mutex<Option<i64>>>);

impl Watched {
    fn saw(&self, changes: &[Kv]) {
        let Some(holder) = self.0.upgrade() else { return };
        for kv in changes.iter().filter(|kv| kv.key.is_empty()) {
            *lock(&holder) = kv.value.as_deref().and_then(|v| std::str::from_utf8(v).ok()).and_then(|v| i64::from_str_radix(v, 16).ok());
        }
    }
}

impl Apply for Watched {
    fn reset(&self, all: Vec<Kv>) -> crate::mirror::BoxFuture<'_, ()> {
        if let Some(holder) = self.0.upgrade() {
            *lock(&holder) = None;
        }
        self.saw(&all);
        Box::pin(async {})
    }

    fn apply(&self, changes: Vec<Kv>) -> crate::mirror::BoxFuture<'_, ()> {
        self.saw(&changes);
        Box::pin(async {})
    }
}

/// The queues' names, followed from their definitions (`queues/definitions/<account>/<name>`) into `names`.
fn names_of(names: Weak<Mutex<BTreeSet<(String, String)>>>) -> Arc<dyn Apply> {
    Arc::new(crate::mirror::Sees(move |changes: Vec<Kv>, reset: bool| {
        let Some(names) = names.upgrade() else { return };
        let mut names = lock(&names);
        if reset {
            names.clear();
        }
        for kv in changes {
            let Some((account, name)) = kv.key.split_once('/') else { continue };
            let named = (account.to_string(), name.to_string());
            match kv.value {
                Some(_) => names.insert(named),
                None => names.remove(&named),
            };
        }
    }))
}

impl QueueLeadership {
    /// Follows who serves the queues, takes them over when no one does (loading `queues` and `mappings`, whose
    /// storage `fence` guards), and makes itself `queues`' home. Looks every [`EVERY`] while it lives.
    /// `credentials` (the administrator's) sign the requests handed to another front end.
    pub async fn start(
        etcd: Etcd,
        presence: Arc<Presence>,
        membership: Arc<EtcdMembership>,
        credentials: Credentials,
        fence: Fence,
        queues: &Arc<Queues>,
        mappings: &Arc<Mappings>,
    ) -> Result<Arc<QueueLeadership>, EtcdError> {
        let holder = Arc::new(Mutex::new(None));
        let mirror = Mirror::start(etcd.clone(), key(QUEUES_KEY), Arc::new(Watched(Arc::downgrade(&holder)))).await?;
        let names = Arc::new(Mutex::new(BTreeSet::new()));
        let names_mirror = Mirror::start(etcd.clone(), key(crate::queues::DEFINITIONS), names_of(Arc::downgrade(&names))).await?;
        let leadership = Arc::new(QueueLeadership {
            etcd,
            presence,
            membership,
            credentials,
            fence,
            ready: AtomicI64::new(0),
            holder,
            peers: Mutex::default(),
            names,
            queues: Arc::downgrade(queues),
            mappings: Arc::downgrade(mappings),
            _mirror: mirror,
            _names_mirror: names_mirror,
        });
        queues.set_home(leadership.clone());
        crate::every(EVERY, Arc::downgrade(&leadership), "cannot look who serves the queues", |leadership| async move {
            leadership.look().await
        });
        Ok(leadership)
    }

    /// One look: takes the queues over, or stands down, as the key's holder says.
    async fn look(&self) -> Result<(), EtcdError> {
        let Some(_looking) = self.presence.looking().await else { return Ok(()) };
        let me = self.presence.id();
        let mut holder = *lock(&self.holder);
        if holder.is_none() && self.presence.claim(&self.etcd, &key(QUEUES_KEY)).await? {
            holder = Some(me);
        }
        let serving = self.fence.lease.load(Ordering::Acquire);
        if holder == Some(me) && serving != me {
            if serving != 0 {
                self.stand_down();
            }
            self.take_over(me).await?;
        } else if holder != Some(me) && serving != 0 {
            self.stand_down();
            tracing::info!("another front end serves the queues now");
        }
        Ok(())
    }

    /// Loads the queues and mappings to serve them under lease `me`; gives the key up if they cannot be loaded.
    async fn take_over(&self, me: i64) -> Result<(), EtcdError> {
        let (Some(queues), Some(mappings)) = (self.queues.upgrade(), self.mappings.upgrade()) else { return Ok(()) };
        self.fence.lease.store(me, Ordering::Release);
        let loaded = tokio::task::block_in_place(|| {
            queues.take_over().map_err(|e| e.to_string())?;
            mappings.take_over().map_err(|e| e.to_string())
        });
        match loaded {
            Ok(()) => {
                self.ready.store(me, Ordering::Release);
                tracing::info!("serving the queues and the event source mappings");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot load the queues; another front end may take them");
                self.stand_down();
                let name = key(QUEUES_KEY);
                let txn = Txn::new()
                    .when([Compare::value(name.as_str(), CompareOp::Equal, format!("{me:x}"))])
                    .and_then([TxnOp::delete(name.as_str(), None)]);
                self.etcd.txn(txn).await.map(drop)
            }
        }
    }

    fn stand_down(&self) {
        self.ready.store(0, Ordering::Release);
        self.fence.lease.store(0, Ordering::Release);
        if let Some(mappings) = self.mappings.upgrade() {
            mappings.stand_down();
        }
        if let Some(queues) = self.queues.upgrade() {
            queues.stand_down();
        }
    }

    fn peer(&self, address: &str) -> Arc<QueueFrontEnd> {
        let reached = self.membership.front_ends_reached();
        let mut peers = lock(&self.peers);
        // Clients of front ends no longer listed go.
        peers.retain(|address, _| reached.values().any(|a| a == address));
        peers
            .entry(address.to_string())
            .or_insert_with(|| Arc::new(QueueFrontEnd { peer: Peer::new(address, self.credentials.clone()) }))
            .clone()
    }
}

impl QueueHome for QueueLeadership {
    fn home(&self) -> Home {
        let me = self.presence.id();
        match *lock(&self.holder) {
            Some(holder) if holder == me && self.ready.load(Ordering::Acquire) == me => Home::Here,
            Some(holder) if holder != me => match self.membership.front_end_address(holder) {
                Some(address) => Home::Elsewhere(self.peer(&address)),
                None => Home::Unknown,
            },
            _ => Home::Unknown,
        }
    }

    fn exists(&self, account: &str, name: &str) -> bool {
        lock(&self.names).contains(&(account.to_string(), name.to_string()))
    }
}

/// Another front end, serving the queues.
struct QueueFrontEnd {
    peer: Peer,
}

impl QueueFrontEnd {
    /// POSTs `body` as JSON to `path` there and reads its JSON answer.
    async fn call<T: serde::de::DeserializeOwned>(&self, path: &str, body: &impl serde::Serialize) -> Result<T, PeerFailure> {
        let body = Bytes::from(serde_json::to_vec(body).map_err(|e| PeerFailure::NotTaken(e.to_string()))?);
        let call = self.peer.call(Method::POST, path, body);
        let said = |status: StatusCode, answer: &[u8]| format!("{status}: {}", String::from_utf8_lossy(answer));
        match tokio::time::timeout(FORWARD_LIMIT, call).await {
            Ok(Ok((StatusCode::OK, answer))) => serde_json::from_slice(&answer).map_err(|e| PeerFailure::Lost(format!("its answer: {e}"))),
            // It does not serve the queues (any more).
            Ok(Ok((StatusCode::SERVICE_UNAVAILABLE, answer))) => Err(PeerFailure::NotTaken(said(StatusCode::SERVICE_UNAVAILABLE, &answer))),
            Ok(Ok((status, answer))) => Err(PeerFailure::Lost(said(status, &answer))),
            Ok(Err(PeerError::Connect(e))) => Err(PeerFailure::NotTaken(e)),
            Ok(Err(e)) => Err(PeerFailure::Lost(e.to_string())),
            Err(_) => Err(PeerFailure::Lost(format!("{}: no answer in time", self.peer.authority()))),
        }
    }
}

impl QueuePeer for QueueFrontEnd {
    fn request(&self, request: Forwarded) -> ignis_queues::home::BoxFuture<'_, Result<Answered, PeerFailure>> {
        Box::pin(async move { self.call("/ignis/queue-requests", &request).await })
    }

    fn poll(&self, call: PollCall) -> ignis_queues::home::BoxFuture<'_, Result<PollAnswer, PeerFailure>> {
        Box::pin(async move { self.call("/ignis/queue-polls", &call).await })
    }
}
