//! Embedded durable storage for Ignis: small settings, unpacked function code,
//! CloudWatch-Logs-like logs, and the redb database other owners keep their
//! own tables in (see [`Store::database`]; the function registry's are in
//! `ignis-registry`).
//!
//! Everything lives under one data directory that exactly one process owns:
//!
//! * `<data_dir>/ignis.redb` — a [redb] database holding settings ("meta"),
//!   log events, and the tables of other owners (function records);
//! * `<data_dir>/code/<sha256-hex>/` — unpacked code trees, content-addressed by
//!   the SHA-256 of the uploaded zip (see [`Store::put_code`]);
//! * `<data_dir>/master.key` — 32 random bytes (mode 0600, made on first open)
//!   that seal access keys' secrets in the database (see the `accounts` module):
//!   the database alone never reveals a secret.
//!
//! The store knows nothing about Lambda's JSON: meta values are opaque bytes.
//!
//! Accounts and access keys (see [`Store::create_account`], [`Store::access_keys`])
//! are the store's own records; secrets are sealed with ChaCha20-Poly1305 under
//! the master key, a random nonce each, and unsealed only in memory.
//!
//! Queues keep their tables themselves (`ignis-queues`, through
//! [`Store::database`] and [`Store::commit_write`]).
//! Writes that many callers make at once go through one group-commit writer
//! (the `commit` module: [`commit::GroupCommit`]).
//! So do the pollers (`ignis-pollers`: pending asynchronous events and event
//! source mappings).
//!
//! Durability: meta, account and key writes are fsync'd before the call returns. Log
//! appends are committed without fsync when a durable commit happened less than
//! [`LOG_SYNC_INTERVAL`] ago, so a power loss may drop the last instants of logs,
//! but never corrupts the database. [`Store::flush`] (also run on drop) makes
//! everything durable.

mod accounts;
mod code;
pub mod commit;
mod logs;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redb::{
    Database, Durability, ReadableDatabase, TableDefinition, WriteTransaction,
};

pub use accounts::{
    AccessKey, Account, AccountError, MASTER_KEY_FILE, open_file_secret, random_account_id, random_text, seal_file_secret,
};
pub use code::{Code, CodeError, CodeHold, CodeRules, WeakCodeHold, check_zip, zip_tree};
pub use logs::{
    DEFAULT_MAX_LOG_GROUP_BYTES, LOG_EVENT_OVERHEAD, LogEvent, LogGroupInfo, LogPage, LogQuery, LogStreamInfo,
    MAX_LOG_LIMIT, StoredLogEvent,
};

/// At most this long passes between fsync'd commits while logs are being appended
/// (the window of log events a power loss may drop).
pub const LOG_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// The database's page cache (reads and not yet written pages): bounded, so
/// that what is stored (logs, queued messages, pending events) does not grow
/// the server's memory with it.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// key -> opaque value.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Errors of the store. Messages are meant for operators (logs), not API users,
/// except [`StoreError::InvalidNextToken`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (or another `Store` in this process) has the database open.
    #[error("the database {} is in use by another process", path.display())]
    Locked {
        /// Path of the database file.
        path: PathBuf,
    },
    /// An error of the embedded database.
    #[error("database error while {context}: {source}")]
    Db {
        /// What the store was doing.
        context: &'static str,
        /// The database's error.
        #[source]
        source: redb::Error,
    },
    /// A file-system error.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What the store was doing, with the path involved.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The master key is missing, malformed or does not unseal the stored secrets.
    #[error("master key: {0}")]
    MasterKey(String),
    /// An access key id already belongs to another (non-administrator) key.
    #[error("the access key id {0} already belongs to an account's key")]
    KeyInUse(String),
    /// A `next_token` given to [`Store::filter_logs`] is not one the store made.
    #[error("The specified nextToken is invalid.")]
    InvalidNextToken,
}

/// Adds context to redb results.
pub(crate) trait DbContext<T> {
    fn ctx(self, context: &'static str) -> Result<T, StoreError>;
}

impl<T, E: Into<redb::Error>> DbContext<T> for Result<T, E> {
    fn ctx(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::Db {
            context,
            source: e.into(),
        })
    }
}

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

/// The embedded store. `Send + Sync`; share it with an `Arc`.
pub struct Store {
    db: Database,
    /// Seals and unseals access keys' secrets (the master key).
    cipher: chacha20poly1305::ChaCha20Poly1305,
    data_dir: PathBuf,
    code_root: PathBuf,
    /// When the last fsync'd commit finished.
    last_sync: Mutex<Instant>,
    /// Whether a non-durable (log) commit happened since the last fsync'd one.
    unsynced: AtomicBool,
    /// The code trees something holds (see [`CodeHold`]).
    code_holds: std::sync::Arc<code::Holds>,
    /// The most a log group may hold (see the `logs` module).
    max_log_group_bytes: std::sync::atomic::AtomicU64,
    /// Log groups' sizes as of the last commit that appended to them.
    log_sizes: Mutex<logs::GroupSizes>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens or creates the store in `data_dir` (created if missing):
    /// `<data_dir>/ignis.redb`, `<data_dir>/master.key` and `<data_dir>/code/`.
    /// Fails with [`StoreError::Locked`] if another process holds the database,
    /// and with [`StoreError::MasterKey`] if the master key is unusable or
    /// missing while sealed secrets exist. Removes leftovers of interrupted
    /// code uploads.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(io_err(format!("creating {}", data_dir.display())))?;
        let db_path = data_dir.join("ignis.redb");
        let db = match Database::builder().set_cache_size(CACHE_BYTES).create(&db_path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::Locked { path: db_path });
            }
            Err(e) => {
                return Err(StoreError::Db {
                    context: "opening the database",
                    source: e.into(),
                });
            }
        };
        // Create every table so readers never meet a missing one.
        let txn = db.begin_write().ctx("creating tables")?;
        txn.open_table(META).ctx("creating tables")?;
        logs::create_tables(&txn)?;
        accounts::create_tables(&txn)?;
        txn.commit().ctx("creating tables")?;
        let cipher = accounts::open_master_key(data_dir, accounts::has_access_keys(&db)?)?;

        let code_root = code::prepare_root(data_dir)?;
        let code_holds = code::Holds::new(code_root.clone());
        Ok(Store {
            db,
            cipher,
            data_dir: data_dir.to_path_buf(),
            code_root,
            last_sync: Mutex::new(Instant::now()),
            unsynced: AtomicBool::new(false),
            code_holds,
            max_log_group_bytes: std::sync::atomic::AtomicU64::new(logs::DEFAULT_MAX_LOG_GROUP_BYTES),
            log_sizes: Mutex::default(),
        })
    }

    /// The data directory this store was opened on.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    // ----- meta -----------------------------------------------------------

    /// A small setting, if set.
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        const CTX: &str = "reading a setting";
        let txn = self.db.begin_read().ctx(CTX)?;
        let table = txn.open_table(META).ctx(CTX)?;
        Ok(table.get(key).ctx(CTX)?.map(|g| g.value().to_vec()))
    }

    /// Sets a small setting. Durable when it returns.
    pub fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        const CTX: &str = "storing a setting";
        let txn = self.db.begin_write().ctx(CTX)?;
        txn.open_table(META).ctx(CTX)?.insert(key, value).ctx(CTX)?;
        self.commit(txn, true, CTX)
    }

    // ----- durability -----------------------------------------------------

    /// Makes every commit so far durable (fsync). Cheap when there is nothing to do.
    /// Call it periodically if logs must not wait for the next write; it also runs on drop.
    pub fn flush(&self) -> Result<(), StoreError> {
        if !self.unsynced.load(Ordering::Acquire) {
            return Ok(());
        }
        let txn = self.db.begin_write().ctx("flushing")?;
        self.commit(txn, true, "flushing")
    }

    /// Commits `txn`, fsync'd if `durable` or if the last fsync is older than
    /// [`LOG_SYNC_INTERVAL`].
    pub(crate) fn commit(
        &self,
        mut txn: WriteTransaction,
        durable: bool,
        context: &'static str,
    ) -> Result<(), StoreError> {
        let durable = durable || self.lock_last_sync().elapsed() >= LOG_SYNC_INTERVAL;
        if !durable {
            txn.set_durability(Durability::None).ctx(context)?;
        }
        txn.commit().ctx(context)?;
        if durable {
            *self.lock_last_sync() = Instant::now();
            self.unsynced.store(false, Ordering::Release);
        } else {
            self.unsynced.store(true, Ordering::Release);
        }
        Ok(())
    }

    fn lock_last_sync(&self) -> std::sync::MutexGuard<'_, Instant> {
        self.last_sync.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The database, for the services that keep tables of their own in it
    /// (the registry's `functions`, the queues' tables): they make their own
    /// tables and commit with [`Store::commit_write`] or transactions of their own.
    pub fn database(&self) -> &Database {
        &self.db
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn store_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<super::Store>();
    }
}
