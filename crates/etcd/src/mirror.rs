//! [`Mirror`]: the keys under a prefix, loaded from etcd and followed with a
//! watch into whatever memory an [`Apply`] keeps.
//!
//! The mirror loads every key (in pages, all at one revision), hands them to
//! [`Apply::reset`], then watches from the next revision and hands each batch
//! of changes, in revision order, to [`Apply::apply`]. A watch that ends (etcd
//! lost its leader, the member died, the revision was compacted) is followed
//! by a new load, retried with a growing pause until etcd answers: nothing is
//! missed, and memory keeps what it had meanwhile. [`Mirror::reached`] waits
//! until memory shows a revision, which is how a write waits to read itself.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{EventType, GetOptions, WatchOptions};
use tokio::sync::watch;

use crate::{Etcd, EtcdError, REQUEST_TIMEOUT};

/// A boxed future, so that [`Apply`] is object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Keys per page of a load (records are small; a page stays far below [`crate::MAX_ANSWER`]).
const PAGE: i64 = 500;
/// The longest pause between loads while etcd does not answer.
const MAX_PAUSE: Duration = Duration::from_secs(2);

/// One key's state: its value (`None`: deleted) at `mod_revision`; `key` is without the mirror's prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: Option<Vec<u8>>,
    pub mod_revision: i64,
}

/// What a mirror keeps its keys in.
pub trait Apply: Send + Sync + 'static {
    /// Every key under the prefix at one revision: replaces whatever memory held.
    fn reset(&self, all: Vec<Kv>) -> BoxFuture<'_, ()>;
    /// Changes since, in revision order.
    fn apply(&self, changes: Vec<Kv>) -> BoxFuture<'_, ()>;
}

/// An [`Apply`] that hands each load (`true`: it replaces what memory held) and each batch of changes (`false`)
/// to one function, which must not block.
pub struct Sees<F>(pub F);

impl<F: Fn(Vec<Kv>, bool) + Send + Sync + 'static> Apply for Sees<F> {
    fn reset(&self, all: Vec<Kv>) -> BoxFuture<'_, ()> {
        (self.0)(all, true);
        Box::pin(async {})
    }

    fn apply(&self, changes: Vec<Kv>) -> BoxFuture<'_, ()> {
        (self.0)(changes, false);
        Box::pin(async {})
    }
}

/// Follows keys whose values are leases in hex (who holds each) into `holders`, by key parsed as `K` (keys that do
/// not parse are passed over), while it lives.
pub fn holders<K>(holders: std::sync::Weak<std::sync::Mutex<std::collections::BTreeMap<K, i64>>>) -> Arc<dyn Apply>
where
    K: std::str::FromStr + Ord + Send + 'static,
{
    Arc::new(Sees(move |changes: Vec<Kv>, reset: bool| {
        let Some(holders) = holders.upgrade() else { return };
        let mut holders = holders.lock().unwrap_or_else(|e| e.into_inner());
        if reset {
            holders.clear();
        }
        for kv in changes {
            let Ok(name) = kv.key.parse::<K>() else { continue };
            let holder = kv.value.as_deref().and_then(|v| std::str::from_utf8(v).ok()).and_then(|v| i64::from_str_radix(v, 16).ok());
            match holder {
                Some(holder) => holders.insert(name, holder),
                None => holders.remove(&name),
            };
        }
    }))
}

/// The keys under a prefix, followed into memory (the following ends when the mirror is dropped).
pub struct Mirror {
    applied: watch::Receiver<i64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Mirror {
    /// Loads every key under `prefix` (a full key prefix) into `apply`, then follows them. Fails if the first
    /// load does.
    pub async fn start(etcd: Etcd, prefix: String, apply: Arc<dyn Apply>) -> Result<Mirror, EtcdError> {
        let revision = load(&etcd, &prefix, &*apply).await?;
        let (tx, applied) = watch::channel(revision);
        let task = tokio::spawn(follow(etcd, prefix, apply, tx, revision));
        Ok(Mirror { applied, task })
    }

    /// The revision memory shows at least: every change up to it has been applied.
    pub fn revision(&self) -> i64 {
        *self.applied.borrow()
    }

    /// Waits until memory shows `revision` (or a later one); an error if the watch has not brought it within
    /// twice the request time limit.
    pub async fn reached(&self, revision: i64) -> Result<(), EtcdError> {
        let mut applied = self.applied.clone();
        match tokio::time::timeout(2 * REQUEST_TIMEOUT, applied.wait_for(|r| *r >= revision)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(EtcdError::Unavailable(format!(
                "the write (revision {revision}) is stored, but this front end has not seen it yet"
            ))),
        }
    }
}

/// Loads every key under `prefix`, in pages at one revision, into `apply`; returns the revision.
async fn load(etcd: &Etcd, prefix: &str, apply: &dyn Apply) -> Result<i64, EtcdError> {
    let end = prefix_end(prefix);
    let (mut all, mut from, mut revision) = (Vec::new(), prefix.to_string(), 0);
    loop {
        let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let page = etcd.get(&from, Some(options)).await?;
        if revision == 0 {
            revision = page.header().map(|h| h.revision()).unwrap_or(0);
        }
        for kv in page.kvs() {
            all.push(Kv { key: suffix(prefix, kv.key())?, value: Some(kv.value().to_vec()), mod_revision: kv.mod_revision() });
        }
        match page.kvs().last() {
            Some(last) if page.more() => {
                from = format!("{}\0", last.key_str().map_err(|e| EtcdError::Unavailable(e.to_string()))?);
            }
            _ => break,
        }
    }
    apply.reset(all).await;
    Ok(revision)
}

/// The end of the range of keys that start with `prefix` (which ends in `/`): the `/` made a `0`, the next byte.
pub(crate) fn prefix_end(prefix: &str) -> String {
    let mut end = prefix.strip_suffix('/').unwrap_or(prefix).to_string();
    end.push('0');
    end
}

/// `key` without `prefix`, as text.
fn suffix(prefix: &str, key: &[u8]) -> Result<String, EtcdError> {
    let corrupt = |reason: &str| EtcdError::Corrupt { key: String::from_utf8_lossy(key).into_owned(), reason: reason.into() };
    let text = std::str::from_utf8(key).map_err(|_| corrupt("the key is not UTF-8"))?;
    text.strip_prefix(prefix).map(str::to_string).ok_or_else(|| corrupt("the key is outside the watched prefix"))
}

/// Follows the keys from `revision` on, loading them again whenever the watch is lost.
async fn follow(etcd: Etcd, prefix: String, apply: Arc<dyn Apply>, applied: watch::Sender<i64>, mut revision: i64) {
    loop {
        if let Err(e) = watch_from(&etcd, &prefix, &*apply, &applied, &mut revision).await {
            tracing::warn!(%prefix, error = %e, "the watch of etcd ended; loading again");
        }
        let mut pause = Duration::from_millis(50);
        loop {
            tokio::time::sleep(pause).await;
            match load(&etcd, &prefix, &*apply).await {
                Ok(loaded) => {
                    revision = revision.max(loaded);
                    applied.send_replace(revision);
                    break;
                }
                Err(e) => {
                    tracing::warn!(%prefix, error = %e, "cannot load from etcd");
                    pause = (pause * 2).min(MAX_PAUSE);
                }
            }
        }
    }
}

/// Applies the changes under `prefix` after `revision` until the watch ends (always with an error).
async fn watch_from(
    etcd: &Etcd,
    prefix: &str,
    apply: &dyn Apply,
    applied: &watch::Sender<i64>,
    revision: &mut i64,
) -> Result<(), EtcdError> {
    let options = WatchOptions::new().with_prefix().with_start_revision(*revision + 1);
    let mut stream = etcd.client().watch_client().max_decoding_message_size(crate::MAX_ANSWER).watch(prefix, Some(options)).await?;
    while let Some(response) = stream.message().await? {
        if response.canceled() || response.compact_revision() > 0 {
            return Err(EtcdError::Unavailable(format!(
                "the watch was cancelled ({}; compacted at {})",
                response.cancel_reason(),
                response.compact_revision()
            )));
        }
        let mut changes = Vec::with_capacity(response.events().len());
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let value = match event.event_type() {
                EventType::Put => Some(kv.value().to_vec()),
                EventType::Delete => None,
            };
            changes.push(Kv { key: suffix(prefix, kv.key())?, value, mod_revision: kv.mod_revision() });
        }
        let Some(last) = changes.last().map(|kv| kv.mod_revision) else { continue };
        apply.apply(changes).await;
        *revision = last;
        applied.send_replace(last);
    }
    Err(EtcdError::Unavailable("the watch stream ended".into()))
}
