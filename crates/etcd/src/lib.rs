//! Cluster state on etcd: what several front ends share, kept in an etcd
//! cluster and followed by each front end into memory.
//!
//! # API boundary
//! The server (`ignis server --etcd`) connects an [`Etcd`] and makes the
//! services' implementations from it; callers hold them through the
//! registry's traits and never see etcd:
//! - [`EtcdRegistry`] is a `Registry`: every function's record;
//! - [`EtcdAccounts`] is an `Accounts`: accounts and access keys, their
//!   secrets sealed under the master key every front end shares;
//! - [`EtcdMembership`] is a `Membership`: the worker hosts, each under an
//!   etcd lease of its own;
//! - [`EtcdQueueStorage`] and [`EtcdMappingStorage`] are the queues' and the
//!   mappings' storage, and [`QueueLeadership`] says which front end serves
//!   them (the others hand it their requests); [`PollerLeases`] says which
//!   front end runs each mapping's pollers;
//! - [`CodeShare`] puts the code trees records name into the object store
//!   (zipped, in content-addressed chunks) and fetches them on the front ends
//!   that lack them.
//!
//! # Keys (all under the prefix, `/ignis/`)
//! - `functions/<account>/<name>`: a function's record (JSON, as the
//!   embedded registry stores it).
//! - `code/<tree>`: where a code tree's zip is in the object store
//!   ([`code::Shipped`]).
//! - `accounts/id/<id>`, `accounts/name/<name>`, `accounts/key/<access key
//!   id>`, `accounts/admin`: accounts, their unique names, access keys
//!   (secrets sealed) and the administrator's account id.
//! - `members/workers/<id>`, `members/front-ends/<lease>`, `worker-ids/next`:
//!   the worker hosts and the front ends, with the address each is reached at
//!   ([`members`]).
//! - `leaders/partitions/<p>`: the front end leading each assignment
//!   partition ([`partitions`]).
//! - `leaders/queues`: the front end serving the queues and the event source
//!   mappings' calls ([`queue_home`]).
//! - `pollers/<uuid>`: the front end running an event source mapping's
//!   pollers ([`pollers`]).
//! - `queues/definitions/<account>/<name>`, `queues/messages/<queue>/<id>`,
//!   `queues/receives/<queue>/<id>`, `queues/next/<queue>`,
//!   `mappings/<account>/<uuid>`: the message queues and the event source
//!   mappings, written only by the front end holding the queues' fence
//!   ([`queues`]).
//!
//! # Invariants
//! - Reads never wait for etcd: each front end keeps a [`Mirror`] of the keys
//!   it serves, loaded at start and followed with a watch (loaded again when
//!   the watch is lost), so a change made through any front end shows on the
//!   others as soon as the watch brings it.
//! - A write is decided by an etcd transaction that compares the key's
//!   modification revision with the one its change read: of two front ends
//!   changing one function at once, one wins and the other is refused
//!   (`RegistryError::Conflict`) having changed nothing.
//! - A write returns only once this front end's mirror shows it: what a
//!   caller wrote it reads back at once from the same front end.
//! - A record is shown only once the code trees it names are on this front
//!   end's disk (fetched if they were not), so whatever a record names can run
//!   here.
//! - Every request to etcd has a time limit, and requires a leader: without
//!   quorum, writes fail with a clear error while reads go on from memory.

mod accounts;
pub mod code;
pub mod compaction;
pub mod counter;
pub mod events;
mod layers;
pub mod members;
mod mirror;
pub mod oci;
pub mod partitions;
pub mod pollers;
pub mod presence;
pub mod queue_home;
pub mod queues;
mod registry;
mod table;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;

use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions, GetResponse, PutOptions, Txn, TxnResponse};

pub use accounts::EtcdAccounts;
pub use code::CodeShare;
pub use counter::EtcdCounter;
pub use events::{EtcdEventStorage, start_adoption};
pub use layers::{EtcdLayers, EtcdNetworks};
pub use members::EtcdMembership;
pub use partitions::Partitions;
pub use pollers::PollerLeases;
pub use mirror::{Apply, Kv, Mirror};
pub use oci::{EtcdContents, EtcdIndex};
pub use presence::Presence;
pub use queue_home::QueueLeadership;
pub use queues::{EtcdMappingStorage, EtcdQueueStorage, Fence};
pub use registry::{ChangeHook, EtcdRegistry};

/// The time limit of each request to etcd.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest answer read from etcd: a page of records or events, or a batch of watched changes (etcd's
/// values are at most its request limit, 1.5 MiB by default).
pub const MAX_ANSWER: usize = 64 << 20;

/// How long a request is tried again while etcd has no leader (an election takes a second or two).
pub const RETRY_FOR: Duration = Duration::from_secs(8);
/// The pause between tries.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Where every key of Ignis's lives in etcd.
pub const PREFIX: &str = "/ignis/";

/// Why etcd could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EtcdError {
    /// etcd did not answer, or answered with an error (no quorum, a time limit passed).
    #[error("the cluster's store (etcd) is unavailable: {0}")]
    Unavailable(String),
    /// A key holds what cannot be read.
    #[error("etcd key {key} holds what cannot be read: {reason}")]
    Corrupt { key: String, reason: String },
}

impl From<etcd_client::Error> for EtcdError {
    fn from(e: etcd_client::Error) -> Self {
        EtcdError::Unavailable(e.to_string())
    }
}

impl From<EtcdError> for ignis_registry::RegistryError {
    fn from(e: EtcdError) -> Self {
        ignis_registry::RegistryError::Storage(e.to_string())
    }
}

/// A connection to an etcd cluster (cheap to clone: clones share it).
#[derive(Clone)]
pub struct Etcd {
    client: Client,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Etcd")
    }
}

impl Etcd {
    /// Connects to the members at `endpoints` (`http://HOST:PORT`), spreading requests over them, and checks
    /// that the cluster answers.
    pub async fn connect(endpoints: &[String]) -> Result<Etcd, EtcdError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        let client = Client::connect(endpoints, Some(options)).await?;
        let etcd = Etcd { client };
        etcd.client().get(key(""), Some(etcd_client::GetOptions::new().with_count_only())).await?;
        Ok(etcd)
    }

    /// The client, for one request (clones share the connection).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// A range read (of up to [`MAX_ANSWER`] bytes), tried again while etcd has no leader.
    pub async fn get(&self, key: &str, options: Option<GetOptions>) -> Result<GetResponse, EtcdError> {
        Ok(self.retrying(|client| {
            let options = options.clone();
            async move { client.kv_client().max_decoding_message_size(MAX_ANSWER).get(key, options).await }
        })
        .await?
        .0)
    }

    /// A put, tried again while etcd has no leader (a put repeated stores the same value); the revision it was
    /// stored at.
    pub async fn put(&self, key: &str, value: Vec<u8>, options: Option<PutOptions>) -> Result<i64, EtcdError> {
        let (answer, _) = self
            .retrying(|mut client| {
                let (value, options) = (value.clone(), options.clone());
                async move { client.put(key, value, options).await }
            })
            .await?;
        Ok(answer.header().map_or(0, |h| h.revision()))
    }

    /// Deletes `key`, tried again while etcd has no leader.
    pub async fn retrying_delete(&self, key: &str) -> Result<(), EtcdError> {
        self.retrying(|mut client| async move { client.delete(key, None).await }).await?;
        Ok(())
    }

    /// A transaction, tried again while etcd has no leader. Also whether a try failed in a way that leaves it
    /// unknown whether it was applied: then a compare that fails may be failing on this transaction's own write.
    pub async fn txn(&self, txn: Txn) -> Result<(TxnResponse, bool), EtcdError> {
        self.retrying(|mut client| {
            let txn = txn.clone();
            async move { client.txn(txn).await }
        })
        .await
    }

    /// Runs `txn`, which stores `value` at `key` (`None`: deletes it) when its compares hold; the revision it
    /// was stored at, or `None` if the compares failed. A try whose outcome is unknown is settled by reading `key`
    /// back: holding `value`, it was this transaction's.
    pub async fn decide(&self, txn: Txn, key: &str, value: Option<&[u8]>) -> Result<Option<i64>, EtcdError> {
        let (answer, unsure) = self.txn(txn).await?;
        if answer.succeeded() {
            return Ok(Some(answer.header().map_or(0, |h| h.revision())));
        }
        if unsure {
            let got = self.get(key, None).await?;
            match (got.kvs().first(), value) {
                (Some(kv), Some(value)) if kv.value() == value => return Ok(Some(kv.mod_revision())),
                (None, None) => return Ok(Some(got.header().map_or(0, |h| h.revision()))),
                _ => {}
            }
        }
        Ok(None)
    }

    /// Runs `request` until it answers or fails for good, trying again for up to [`RETRY_FOR`] while the
    /// failure is one an election or a lost member causes; also whether any try failed so.
    async fn retrying<T, F, R>(&self, mut request: R) -> Result<(T, bool), EtcdError>
    where
        F: std::future::Future<Output = Result<T, etcd_client::Error>>,
        R: FnMut(Client) -> F,
    {
        let deadline = tokio::time::Instant::now() + RETRY_FOR;
        let mut failed = false;
        loop {
            match request(self.client()).await {
                Ok(answer) => return Ok((answer, failed)),
                Err(e) if passing(&e) && tokio::time::Instant::now() < deadline => {
                    failed = true;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Whether `e` is what an election, a lost member or a lost connection gives (worth trying again), rather than a
/// refusal.
fn passing(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        // Cancelled, Unknown, DeadlineExceeded, Unavailable.
        etcd_client::Error::GRpcStatus(status) => matches!(i32::from(status.code()), 1 | 2 | 4 | 14),
        _ => false,
    }
}

/// The full key of `suffix` (under [`PREFIX`]).
pub fn key(suffix: &str) -> String {
    format!("{PREFIX}{suffix}")
}

/// Runs `request` to its end from a blocking caller (a writer's thread, a blocking task): the storages' methods
/// that the services call synchronously.
pub(crate) fn blocking_wait<T>(runtime: &tokio::runtime::Handle, request: impl std::future::Future<Output = T>) -> T {
    tokio::task::block_in_place(|| runtime.block_on(request))
}

/// Calls `look` on `holder` every `period` while it lives (a leadership's or placement's loop); a failed look is
/// logged with `what` and tried again at the next.
pub(crate) fn every<T, F>(period: Duration, holder: std::sync::Weak<T>, what: &'static str, look: impl Fn(std::sync::Arc<T>) -> F + Send + 'static)
where
    T: Send + Sync + 'static,
    F: std::future::Future<Output = Result<(), EtcdError>> + Send,
{
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(period).await;
            let Some(holder) = holder.upgrade() else { return };
            if let Err(e) = look(holder).await {
                tracing::warn!(error = %e, "{what}");
            }
        }
    });
}
