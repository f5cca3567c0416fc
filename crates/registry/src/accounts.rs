//! Tenant accounts and their access keys: who may call the API, and as whom.
//!
//! # API boundary
//! The front end and the server hold an `Arc<dyn Accounts>` and never the
//! implementation: [`EmbeddedAccounts`] (in memory, written through to the
//! store's redb database) or a cluster's `ignis_etcd::EtcdAccounts` (in etcd,
//! watched into memory). SigV4 verification asks [`Accounts::key`] for a key's secret and
//! whom it acts for; `POST`/`GET /ignis/accounts` call [`Accounts::create`]
//! and [`Accounts::list`]; the server's start calls
//! [`Accounts::set_administrator`]. Who may manage accounts (the
//! administrator's key only), the wire shapes and the wire errors are the
//! front end's.
//!
//! # Invariants
//! - Lookups ([`Accounts::key`], [`Accounts::list`]) read memory only: no
//!   request waits for storage to learn who signed it.
//! - Writes are serialised; each is durable (fsync'd) before memory shows it,
//!   and shows it before it returns: a key is usable the moment its creator
//!   learns its secret, and never before storage holds it.
//! - Account names are unique (compared exactly); account ids and access key
//!   ids are never reused for another account or key.
//! - At most one key is the administrator's; setting one removes the others.
//!   A tenant's key never becomes the administrator's
//!   ([`AccountError::KeyInUse`]).
//! - Secrets are sealed at rest under the data directory's master key
//!   ([`ignis_store::MasterKey`]: the one copy of the sealing code, in
//!   `ignis-store`, shared with the administrator's credentials file). Plain
//!   secrets exist only in memory and in [`Accounts::create`]'s answer.
//!
//! # Storage ([`EmbeddedAccounts`]; this module is the tables' only reader and writer)
//! * `accounts`: 12-digit account id → (name, creation time in ms).
//! * `access_keys`: access key id → (account id, administrator flag, sealed secret).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use ignis_clock::SharedClock;
use ignis_ids::AccountId;
use ignis_store::{DbContext, MasterKey, Store, StoreError};
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::BoxFuture;

/// account id → (name, created_ms).
const ACCOUNTS: TableDefinition<&str, (&str, i64)> = TableDefinition::new("accounts");
/// access key id → (account id, admin, sealed secret).
const ACCESS_KEYS: TableDefinition<&str, (&str, bool, &[u8])> = TableDefinition::new("access_keys");

/// Base32 letters and digits for access key ids (as AWS's).
const KEY_ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/// Secret access key characters (as AWS's).
const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const DIGITS: &[u8] = b"0123456789";

/// A tenant account (or the administrator's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: AccountId,
    /// Unique among accounts.
    pub name: String,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: i64,
}

/// An access key pair and whom it acts for. Its `Debug` form hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKey {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// The account the key acts for.
    pub account: AccountId,
    /// Whether the key may manage accounts.
    pub admin: bool,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("account", &self.account)
            .field("admin", &self.admin)
            .finish()
    }
}

impl AccessKey {
    /// A new random key pair for `account`: `AKIA` + 16 base32 characters, and
    /// a 40-character secret.
    pub fn generate(account: AccountId, admin: bool) -> AccessKey {
        AccessKey {
            access_key_id: random_text("AKIA", 16, KEY_ID_ALPHABET),
            secret_access_key: random_text("", 40, SECRET_ALPHABET),
            account,
            admin,
        }
    }
}

/// A new random 12-digit account id.
pub fn random_account_id() -> AccountId {
    AccountId::new(random_text("", 12, DIGITS))
}

/// Why an account or key could not be made or read. The front end turns each
/// into a wire error in one place.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// Another account has this name.
    #[error("an account named {0} already exists")]
    NameTaken(String),
    /// The access key id already belongs to an account's (non-administrator) key.
    #[error("the access key id {0} already belongs to an account's key")]
    KeyInUse(String),
    /// Storage failed, or holds a secret the master key does not open;
    /// nothing changed.
    #[error(transparent)]
    Storage(#[from] StoreError),
    /// The write's task ended without an answer.
    #[error("{0}")]
    Task(String),
    /// The cluster's store did not answer; nothing changed.
    #[error("{0}")]
    Unavailable(String),
}

/// Every account and access key: what request authentication, the account
/// calls and the server's start read and write. Implementations keep the
/// invariants of the module docs.
pub trait Accounts: Send + Sync {
    /// The key `access_key_id`, with its secret and whom it acts for, if it
    /// exists. From memory.
    fn key(&self, access_key_id: &str) -> Option<AccessKey>;

    /// Every account, ordered by id. From memory.
    fn list(&self) -> Vec<Account>;

    /// Creates an account named `name`, with a new random id and a first key
    /// pair (not an administrator's), atomically; durable and the key usable
    /// when it returns. The returned key holds the only plain copy of the
    /// secret outside this service's memory.
    fn create<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(Account, AccessKey), AccountError>>;

    /// Makes sure `key`'s account exists (named `name` if it has to be made;
    /// if that name is taken, with `-<id>` appended), and makes `key` the only
    /// administrator key (its `admin` flag is set): every other one stops
    /// working. Refuses an access key id that belongs to a tenant's key.
    /// Returns the account; durable and the key usable when it returns.
    fn set_administrator<'a>(&'a self, name: &'a str, key: AccessKey) -> BoxFuture<'a, Result<Account, AccountError>>;

    /// A secret key of `account` for `purpose` (such as the key its images'
    /// chunk keys are sealed under), derived from the data directory's master
    /// key: never stored, the same for as long as the master key is.
    fn data_key(&self, account: &AccountId, purpose: &str) -> [u8; 32];
}

/// The accounts' tables in the store's database, and the master key that
/// seals the secrets in them. Blocking: called off the async runtime.
struct Tables {
    store: Arc<Store>,
    master: MasterKey,
}

impl Tables {
    /// Makes the tables if missing and loads the master key (made if no
    /// sealed secret exists yet).
    fn open(store: Arc<Store>) -> Result<Tables, StoreError> {
        const CTX: &str = "creating the accounts' tables";
        let txn = store.database().begin_write().ctx(CTX)?;
        txn.open_table(ACCOUNTS).ctx(CTX)?;
        txn.open_table(ACCESS_KEYS).ctx(CTX)?;
        store.commit_write(txn, true, CTX)?;
        let sealed_secrets_exist = {
            const CTX: &str = "reading access keys";
            let txn = store.database().begin_read().ctx(CTX)?;
            txn.open_table(ACCESS_KEYS).ctx(CTX)?.len().ctx(CTX)? > 0
        };
        let master = MasterKey::open(store.data_dir(), sealed_secrets_exist)?;
        Ok(Tables { store, master })
    }

    /// Every account, ordered by id.
    fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        const CTX: &str = "listing accounts";
        let txn = self.store.database().begin_read().ctx(CTX)?;
        let table = txn.open_table(ACCOUNTS).ctx(CTX)?;
        let mut out = Vec::new();
        for item in table.iter().ctx(CTX)? {
            let (k, v) = item.ctx(CTX)?;
            let (name, created_ms) = v.value();
            out.push(Account { id: AccountId::new(k.value()), name: name.to_string(), created_ms });
        }
        Ok(out)
    }

    /// Every access key, with its secret unsealed, ordered by access key id.
    fn access_keys(&self) -> Result<Vec<AccessKey>, StoreError> {
        const CTX: &str = "reading access keys";
        let txn = self.store.database().begin_read().ctx(CTX)?;
        let table = txn.open_table(ACCESS_KEYS).ctx(CTX)?;
        let mut out = Vec::new();
        for item in table.iter().ctx(CTX)? {
            let (k, v) = item.ctx(CTX)?;
            let (account, admin, sealed) = v.value();
            let access_key_id = k.value().to_string();
            let secret_access_key = self.master.open_sealed(&access_key_id, sealed)?;
            out.push(AccessKey { access_key_id, secret_access_key, account: AccountId::new(account), admin });
        }
        Ok(out)
    }

    /// See [`Accounts::create`].
    fn create(&self, name: &str, created_ms: i64) -> Result<(Account, AccessKey), AccountError> {
        const CTX: &str = "creating an account";
        let txn = self.store.database().begin_write().ctx(CTX)?;
        let (account, key) = {
            let mut accounts = txn.open_table(ACCOUNTS).ctx(CTX)?;
            for item in accounts.iter().ctx(CTX)? {
                let (_, v) = item.ctx(CTX)?;
                if v.value().0 == name {
                    return Err(AccountError::NameTaken(name.to_string()));
                }
            }
            let id = loop {
                let id = random_account_id();
                if accounts.get(id.as_str()).ctx(CTX)?.is_none() {
                    break id;
                }
            };
            let mut keys = txn.open_table(ACCESS_KEYS).ctx(CTX)?;
            let key = loop {
                let key = AccessKey::generate(id.clone(), false);
                if keys.get(key.access_key_id.as_str()).ctx(CTX)?.is_none() {
                    break key;
                }
            };
            let account = Account { id, name: name.to_string(), created_ms };
            accounts.insert(account.id.as_str(), (account.name.as_str(), account.created_ms)).ctx(CTX)?;
            let sealed = self.master.seal(&key.access_key_id, &key.secret_access_key);
            keys.insert(key.access_key_id.as_str(), (key.account.as_str(), false, sealed.as_slice())).ctx(CTX)?;
            (account, key)
        };
        self.store.commit_write(txn, true, CTX)?;
        Ok((account, key))
    }

    /// See [`Accounts::set_administrator`]; `key.admin` is already set.
    /// Returns the account and whether it was made.
    fn set_administrator(&self, name: &str, key: &AccessKey, created_ms: i64) -> Result<(Account, bool), AccountError> {
        const CTX: &str = "storing the administrator key";
        let txn = self.store.database().begin_write().ctx(CTX)?;
        let made = {
            let mut keys = txn.open_table(ACCESS_KEYS).ctx(CTX)?;
            let existing = keys.get(key.access_key_id.as_str()).ctx(CTX)?.map(|v| v.value().1);
            if existing == Some(false) {
                return Err(AccountError::KeyInUse(key.access_key_id.clone()));
            }
            let mut old_admins = Vec::new();
            for item in keys.iter().ctx(CTX)? {
                let (k, v) = item.ctx(CTX)?;
                if v.value().1 {
                    old_admins.push(k.value().to_string());
                }
            }
            for old in old_admins {
                keys.remove(old.as_str()).ctx(CTX)?;
            }
            let sealed = self.master.seal(&key.access_key_id, &key.secret_access_key);
            keys.insert(key.access_key_id.as_str(), (key.account.as_str(), true, sealed.as_slice())).ctx(CTX)?;

            let mut accounts = txn.open_table(ACCOUNTS).ctx(CTX)?;
            let id = key.account.as_str();
            let stored = accounts.get(id).ctx(CTX)?.map(|v| {
                let (name, created_ms) = v.value();
                Account { id: key.account.clone(), name: name.to_string(), created_ms }
            });
            match stored {
                Some(account) => (account, false),
                None => {
                    let mut taken = false;
                    for item in accounts.iter().ctx(CTX)? {
                        let (_, v) = item.ctx(CTX)?;
                        taken |= v.value().0 == name;
                    }
                    let name = if taken { format!("{name}-{id}") } else { name.to_string() };
                    let account = Account { id: key.account.clone(), name, created_ms };
                    accounts.insert(id, (account.name.as_str(), account.created_ms)).ctx(CTX)?;
                    (account, true)
                }
            }
        };
        self.store.commit_write(txn, true, CTX)?;
        Ok(made)
    }
}

/// The accounts of one server: in memory, written through to its store.
///
/// State: `keys` and `accounts` mirror the tables; only a write holding
/// `writes` changes them, after its commit.
pub struct EmbeddedAccounts {
    tables: Arc<Tables>,
    clock: SharedClock,
    /// Access key id → the key, for every stored key.
    keys: RwLock<HashMap<String, AccessKey>>,
    /// Every stored account, by id.
    accounts: RwLock<BTreeMap<AccountId, Account>>,
    /// Serialises writes (the tables' transaction decides conflicts).
    writes: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for EmbeddedAccounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedAccounts").finish_non_exhaustive()
    }
}

impl EmbeddedAccounts {
    /// Makes the tables if missing, loads the master key (making it if no
    /// sealed secret exists yet) and every account and key. Fails with
    /// [`StoreError::MasterKey`] if the master key is unusable, missing while
    /// sealed secrets exist, or does not open them. Creation times come from
    /// `clock`.
    pub fn open(store: Arc<Store>, clock: SharedClock) -> Result<EmbeddedAccounts, AccountError> {
        let tables = Tables::open(store)?;
        let accounts = tables.accounts()?.into_iter().map(|a| (a.id.clone(), a)).collect();
        let keys = tables.access_keys()?.into_iter().map(|k| (k.access_key_id.clone(), k)).collect();
        Ok(EmbeddedAccounts {
            tables: Arc::new(tables),
            clock,
            keys: RwLock::new(keys),
            accounts: RwLock::new(accounts),
            writes: tokio::sync::Mutex::new(()),
        })
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX)
    }

    /// Runs a blocking write of the tables off the async runtime.
    async fn blocking<T: Send + 'static>(
        &self,
        write: impl FnOnce(&Tables) -> Result<T, AccountError> + Send + 'static,
    ) -> Result<T, AccountError> {
        let tables = self.tables.clone();
        tokio::task::spawn_blocking(move || write(&tables)).await.map_err(|e| AccountError::Task(e.to_string()))?
    }
}

impl Accounts for EmbeddedAccounts {
    fn data_key(&self, account: &AccountId, purpose: &str) -> [u8; 32] {
        self.tables.master.derive(purpose, account.as_str().as_bytes())
    }

    fn key(&self, access_key_id: &str) -> Option<AccessKey> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).get(access_key_id).cloned()
    }

    fn list(&self) -> Vec<Account> {
        self.accounts.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    fn create<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(Account, AccessKey), AccountError>> {
        Box::pin(async move {
            let _writing = self.writes.lock().await;
            let (wanted, created_ms) = (name.to_string(), self.now_ms());
            let (account, key) = self.blocking(move |tables| tables.create(&wanted, created_ms)).await?;
            self.accounts.write().unwrap_or_else(|e| e.into_inner()).insert(account.id.clone(), account.clone());
            self.keys.write().unwrap_or_else(|e| e.into_inner()).insert(key.access_key_id.clone(), key.clone());
            Ok((account, key))
        })
    }

    fn set_administrator<'a>(&'a self, name: &'a str, key: AccessKey) -> BoxFuture<'a, Result<Account, AccountError>> {
        Box::pin(async move {
            let _writing = self.writes.lock().await;
            let key = AccessKey { admin: true, ..key };
            let (wanted, stored, created_ms) = (name.to_string(), key.clone(), self.now_ms());
            let (account, made) =
                self.blocking(move |tables| tables.set_administrator(&wanted, &stored, created_ms)).await?;
            if made {
                self.accounts.write().unwrap_or_else(|e| e.into_inner()).insert(account.id.clone(), account.clone());
            }
            let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
            keys.retain(|_, k| !k.admin);
            keys.insert(key.access_key_id.clone(), key);
            Ok(account)
        })
    }
}

/// `len` symbols of `alphabet` after `prefix`, from the OS's random source.
fn random_text(prefix: &str, len: usize, alphabet: &[u8]) -> String {
    let mut text = prefix.to_string();
    // Rejection sampling keeps every symbol equally likely.
    let limit = 256 - 256 % alphabet.len();
    let mut buf = [0u8; 64];
    while text.len() < prefix.len() + len {
        // The OS's random source failing leaves nothing safe to do.
        getrandom::fill(&mut buf).expect("the operating system's random source failed");
        for &byte in &buf {
            if (byte as usize) < limit && text.len() < prefix.len() + len {
                text.push(alphabet[byte as usize % alphabet.len()] as char);
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use ignis_clock::{Clock, ManualClock};
    use ignis_store::MASTER_KEY_FILE;

    use super::*;

    const ADMIN: &str = "111111111111";

    fn open(dir: &Path, clock: &Arc<ManualClock>) -> Result<EmbeddedAccounts, AccountError> {
        EmbeddedAccounts::open(Arc::new(Store::open(dir)?), clock.clone())
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    fn admin_key() -> AccessKey {
        AccessKey::generate(AccountId::new(ADMIN), true)
    }

    /// Every file of `dir` (not below it), as bytes.
    fn files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
            .collect()
    }

    #[tokio::test]
    async fn create_list_and_look_up() {
        let tmp = tempfile::tempdir().unwrap();
        let clock = ManualClock::at_epoch_2026();
        let accounts: Arc<dyn Accounts> = Arc::new(open(tmp.path(), &clock).unwrap());
        assert_eq!(accounts.list(), vec![]);
        let (alice, key) = accounts.create("alice").await.unwrap();
        assert!(AccountId::parse(alice.id.as_str()).is_some(), "{}", alice.id);
        assert_eq!((alice.name.as_str(), alice.created_ms), ("alice", clock.now_ms() as i64));
        assert!(key.access_key_id.starts_with("AKIA") && key.access_key_id.len() == 20, "{}", key.access_key_id);
        assert!(key.access_key_id[4..].bytes().all(|b| KEY_ID_ALPHABET.contains(&b)));
        assert_eq!(key.secret_access_key.len(), 40);
        assert_eq!((&key.account, key.admin), (&alice.id, false));
        assert!(!format!("{key:?}").contains(&key.secret_access_key));
        // Usable at once, from memory.
        assert_eq!(accounts.key(&key.access_key_id), Some(key.clone()));
        assert_eq!(accounts.key("AKIANOSUCHKEY0000000"), None);
        assert!(matches!(accounts.create("alice").await, Err(AccountError::NameTaken(name)) if name == "alice"));
        clock.advance(Duration::from_secs(5));
        let (bob, bobs) = accounts.create("bob").await.unwrap();
        assert_eq!(bob.created_ms, alice.created_ms + 5000);
        assert_ne!((&bob.id, &bobs.access_key_id), (&alice.id, &key.access_key_id));
        let mut expected = vec![alice, bob];
        expected.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(accounts.list(), expected, "ordered by id");
    }

    #[tokio::test]
    async fn one_administrator_key_at_a_time() {
        let tmp = tempfile::tempdir().unwrap();
        let clock = ManualClock::at_epoch_2026();
        let accounts = open(tmp.path(), &clock).unwrap();
        let first = admin_key();
        let admin = accounts.set_administrator("admin", first.clone()).await.unwrap();
        assert_eq!((admin.id.as_str(), admin.name.as_str()), (ADMIN, "admin"));
        assert_eq!(accounts.set_administrator("admin", first.clone()).await.unwrap(), admin);
        assert_eq!(accounts.key(&first.access_key_id), Some(first.clone()));
        // A new administrator key replaces the old one; the flag is set whatever the key says.
        let second = AccessKey { admin: false, ..admin_key() };
        accounts.set_administrator("admin", second.clone()).await.unwrap();
        assert_eq!(accounts.key(&first.access_key_id), None);
        assert_eq!(accounts.key(&second.access_key_id), Some(AccessKey { admin: true, ..second.clone() }));
        // A tenant's key id never becomes the administrator's.
        let (tenant, tenants) = accounts.create("t").await.unwrap();
        let clash = AccessKey { admin: true, account: AccountId::new(ADMIN), ..tenants.clone() };
        assert!(matches!(accounts.set_administrator("admin", clash).await, Err(AccountError::KeyInUse(_))));
        assert_eq!(accounts.key(&tenants.access_key_id), Some(tenants));
        assert!(accounts.key(&second.access_key_id).is_some());
        // An existing account keeps its name; a new one whose name is taken gets its id appended.
        assert_eq!(accounts.set_administrator("other", admin_key()).await.unwrap().name, "admin");
        let elsewhere = AccessKey::generate(AccountId::new("222222222222"), true);
        assert_eq!(accounts.set_administrator("t", elsewhere).await.unwrap().name, "t-222222222222");
        let names: std::collections::BTreeSet<_> = accounts.list().into_iter().map(|a| a.name).collect();
        assert_eq!(names, ["admin", "t", "t-222222222222"].map(String::from).into());
        assert_eq!(tenant.name, "t");
    }

    #[tokio::test]
    async fn reloads_what_it_stored_with_secrets_sealed() {
        let tmp = tempfile::tempdir().unwrap();
        let clock = ManualClock::at_epoch_2026();
        let (before, keys) = {
            let accounts = open(tmp.path(), &clock).unwrap();
            let admin = admin_key();
            accounts.set_administrator("admin", admin.clone()).await.unwrap();
            let (_, key) = accounts.create("keeper").await.unwrap();
            (accounts.list(), [admin, key])
        };
        let accounts = open(tmp.path(), &clock).unwrap();
        assert_eq!(accounts.list(), before);
        for key in &keys {
            assert_eq!(accounts.key(&key.access_key_id).as_ref(), Some(key));
        }
        drop(accounts);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(tmp.path().join(MASTER_KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        for (path, bytes) in files(tmp.path()) {
            for key in &keys {
                assert!(!contains(&bytes, key.secret_access_key.as_bytes()), "{}", path.display());
            }
        }
    }

    #[tokio::test]
    async fn a_missing_or_wrong_master_key_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let clock = ManualClock::at_epoch_2026();
        open(tmp.path(), &clock).unwrap().create("a").await.unwrap();
        let key_path = tmp.path().join(MASTER_KEY_FILE);
        std::fs::remove_file(&key_path).unwrap();
        assert!(matches!(open(tmp.path(), &clock), Err(AccountError::Storage(StoreError::MasterKey(_)))));
        assert!(!key_path.exists(), "no new master key over sealed secrets");
        std::fs::write(&key_path, [7u8; 32]).unwrap();
        assert!(matches!(open(tmp.path(), &clock), Err(AccountError::Storage(StoreError::MasterKey(_)))));
    }

    #[test]
    fn sealed_secrets_round_trip_through_the_table() {
        let tmp = tempfile::tempdir().unwrap();
        let tables = Tables::open(Arc::new(Store::open(tmp.path()).unwrap())).unwrap();
        let key = AccessKey::generate(AccountId::new(ADMIN), true);
        tables.set_administrator("admin", &key, 0).unwrap();
        let txn = tables.store.database().begin_read().unwrap();
        let table = txn.open_table(ACCESS_KEYS).unwrap();
        let row = table.get(key.access_key_id.as_str()).unwrap().unwrap();
        let (account, admin, sealed) = row.value();
        assert_eq!((account, admin), (ADMIN, true));
        assert!(!contains(sealed, key.secret_access_key.as_bytes()));
        assert_eq!(tables.master.open_sealed(&key.access_key_id, sealed).unwrap(), key.secret_access_key);
        assert!(tables.master.open_sealed("AKIAANOTHERKEY000000", sealed).is_err(), "bound to its key id");
        assert_eq!(tables.access_keys().unwrap(), vec![key]);
    }

    #[test]
    fn random_text_uses_the_alphabet() {
        let text = random_text("P", 200, b"ab");
        assert!(text.starts_with('P') && text.len() == 201);
        assert!(text[1..].contains('a') && text[1..].contains('b'));
        assert!(text[1..].bytes().all(|b| b == b'a' || b == b'b'));
        let id = random_account_id();
        assert_eq!(AccountId::parse(id.as_str()), Some(id));
    }
}
