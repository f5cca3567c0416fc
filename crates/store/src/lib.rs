//! Embedded durable storage for Ignis: small settings, unpacked function code,
//! the one group-commit writer, and the redb database the services keep their
//! own tables in (see [`Store::database`] and [`Store::commit_write`]).
//!
//! Everything lives under one data directory that exactly one process owns:
//!
//! * `<data_dir>/ignis.redb` — a [redb] database holding settings ("meta"),
//!   and the tables of the services that own them: function records, accounts
//!   and access keys (`ignis-registry`), queues (`ignis-queues`), pending
//!   asynchronous events and event source mappings (`ignis-pollers`), log
//!   events (`ignis-logs`);
//! * `<data_dir>/code/<sha256-hex>/` — unpacked code trees, content-addressed by
//!   the SHA-256 of the uploaded zip (see [`Store::put_code`]);
//! * `<data_dir>/master.key` — 32 random bytes (mode 0600) that seal access
//!   keys' secrets (see [`seal`]: [`seal::MasterKey`], made by the accounts'
//!   owner when it first opens): the database alone never reveals a secret.
//!
//! The store knows nothing about Lambda's JSON: meta values are opaque bytes.
//! Writes that many callers make at once go through one group-commit writer
//! (the `commit` module: [`commit::GroupCommit`]).
//!
//! Durability: meta writes are fsync'd before the call returns. Log
//! appends (`ignis-logs`) are committed without fsync when a durable commit happened less than
//! [`LOG_SYNC_INTERVAL`] ago, so a power loss may drop the last instants of logs,
//! but never corrupts the database. [`Store::flush`] (also run on drop) makes
//! everything durable.

mod code;
pub mod commit;
pub mod seal;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redb::{
    Database, Durability, ReadableDatabase, TableDefinition, WriteTransaction,
};

pub use code::{Code, CodeError, CodeHold, CodeRules, MergedCode, WeakCodeHold, check_zip, merged_name, zip_tree};
pub use seal::{MASTER_KEY_FILE, MasterKey, open_file_secret, seal_file_secret};

/// At most this long passes between fsync'd commits while logs are being appended
/// (the window of log events a power loss may drop).
pub const LOG_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// The database's page cache (reads and not yet written pages): bounded, so
/// that what is stored (logs, queued messages, pending events) does not grow
/// the server's memory with it.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// key -> opaque value.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Errors of the store. Messages are meant for operators (logs), not API users.
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
    /// A store shared by several nodes (a cluster's etcd) failed or did not answer.
    #[error("{0}")]
    Shared(String),
}

/// Adds what was being done to the results of the embedded database, as a
/// [`StoreError::Db`]: `txn.open_table(T).ctx("listing queues")?`. For every
/// owner of tables in [`Store::database`].
pub trait DbContext<T> {
    /// The result, its error turned into a [`StoreError::Db`] that says `context`.
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
    data_dir: PathBuf,
    code_root: PathBuf,
    /// When the last fsync'd commit finished.
    last_sync: Mutex<Instant>,
    /// Whether a non-durable (log) commit happened since the last fsync'd one.
    unsynced: AtomicBool,
    /// The code trees something holds (see [`CodeHold`]).
    code_holds: std::sync::Arc<code::Holds>,
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
    /// `<data_dir>/ignis.redb` and `<data_dir>/code/`.
    /// Fails with [`StoreError::Locked`] if another process holds the database.
    /// Removes leftovers of interrupted code uploads.
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
        txn.commit().ctx("creating tables")?;

        let code_root = code::prepare_root(data_dir)?;
        let code_holds = code::Holds::new(code_root.clone());
        Ok(Store {
            db,
            data_dir: data_dir.to_path_buf(),
            code_root,
            last_sync: Mutex::new(Instant::now()),
            unsynced: AtomicBool::new(false),
            code_holds,
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
    /// (the registry's `functions`, the accounts' tables, the queues' tables): they make their own
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

#[cfg(test)]
mod tests {
    #[test]
    fn store_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<super::Store>();
    }
}
