//! [`EtcdAccounts`]: accounts and access keys in etcd, followed into memory.
//!
//! Keys: `accounts/id/<id>` (the account's name and creation time), `accounts/name/<name>` (its id: names are
//! unique because a transaction makes it only where it is absent), `accounts/key/<access key id>` (the account,
//! the administrator flag and the secret sealed under the master key, which every front end shares),
//! `accounts/admin` (the administrator's account id, made once for the cluster) and `accounts/admin-key` (the
//! administrator key's id: the first front end to make it there makes the cluster's key).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use ignis_clock::SharedClock;
use ignis_ids::AccountId;
use ignis_registry::{AccessKey, Account, AccountError, Accounts, BoxFuture, random_account_id};
use ignis_store::{MasterKey, Store};
use serde::{Deserialize, Serialize};

use crate::mirror::{Apply, Kv, Mirror};
use crate::{Etcd, EtcdError, key};

/// Tries of a create whose random ids happened to be taken.
const TRIES: usize = 8;

#[derive(Serialize, Deserialize)]
struct StoredAccount {
    name: String,
    created_ms: i64,
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    account: String,
    admin: bool,
    /// The secret sealed under the master key, base64.
    sealed: String,
}

fn id_key(id: &str) -> String {
    key(&format!("accounts/id/{id}"))
}

fn name_key(name: &str) -> String {
    key(&format!("accounts/name/{name}"))
}

fn access_key(id: &str) -> String {
    key(&format!("accounts/key/{id}"))
}

fn storage(e: EtcdError) -> AccountError {
    AccountError::Unavailable(e.to_string())
}

fn absent(key: String) -> Compare {
    Compare::version(key, CompareOp::Equal, 0)
}

/// What the mirror fills.
struct Shown {
    master: MasterKey,
    keys: RwLock<HashMap<String, AccessKey>>,
    accounts: RwLock<BTreeMap<AccountId, Account>>,
}

impl Shown {
    fn change(&self, kv: &Kv) {
        let corrupt = |e: &dyn std::fmt::Display| tracing::error!(key = %kv.key, error = %e, "an account key in etcd is unreadable");
        if let Some(id) = kv.key.strip_prefix("id/") {
            let id = AccountId::new(id);
            let mut accounts = self.accounts.write().unwrap_or_else(|e| e.into_inner());
            match kv.value.as_deref().map(serde_json::from_slice::<StoredAccount>) {
                None => drop(accounts.remove(&id)),
                Some(Ok(stored)) => drop(accounts.insert(id.clone(), Account { id, name: stored.name, created_ms: stored.created_ms })),
                Some(Err(e)) => corrupt(&e),
            }
        } else if let Some(access_key_id) = kv.key.strip_prefix("key/") {
            let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
            let Some(bytes) = kv.value.as_deref() else {
                keys.remove(access_key_id);
                return;
            };
            let opened = serde_json::from_slice::<StoredKey>(bytes).map_err(|e| e.to_string()).and_then(|stored| {
                let sealed = base64::engine::general_purpose::STANDARD.decode(&stored.sealed).map_err(|e| e.to_string())?;
                let secret = self.master.open_sealed(access_key_id, &sealed).map_err(|e| e.to_string())?;
                Ok(AccessKey {
                    access_key_id: access_key_id.to_string(),
                    secret_access_key: secret,
                    account: AccountId::new(stored.account),
                    admin: stored.admin,
                })
            });
            match opened {
                Ok(key) => drop(keys.insert(access_key_id.to_string(), key)),
                Err(e) => corrupt(&e),
            }
        }
    }
}

impl Apply for Shown {
    fn reset(&self, all: Vec<Kv>) -> crate::mirror::BoxFuture<'_, ()> {
        self.keys.write().unwrap_or_else(|e| e.into_inner()).clear();
        self.accounts.write().unwrap_or_else(|e| e.into_inner()).clear();
        for kv in &all {
            self.change(kv);
        }
        Box::pin(async {})
    }

    fn apply(&self, changes: Vec<Kv>) -> crate::mirror::BoxFuture<'_, ()> {
        for kv in &changes {
            self.change(kv);
        }
        Box::pin(async {})
    }
}

/// The accounts of a cluster's front end: in etcd, followed into memory.
pub struct EtcdAccounts {
    etcd: Etcd,
    clock: SharedClock,
    shown: Arc<Shown>,
    mirror: Mirror,
    writes: tokio::sync::Mutex<()>,
}

impl EtcdAccounts {
    /// Loads every account and key from `etcd` and follows them; secrets open with the master key of `store`'s
    /// data directory, which must exist (the cluster's, `--master-key-file`). Creation times come from `clock`.
    pub async fn open(etcd: Etcd, store: &Store, clock: SharedClock) -> Result<EtcdAccounts, AccountError> {
        let master = MasterKey::open(store.data_dir(), true)?;
        let shown = Arc::new(Shown { master, keys: RwLock::default(), accounts: RwLock::default() });
        let mirror = Mirror::start(etcd.clone(), key("accounts/"), shown.clone()).await.map_err(storage)?;
        Ok(EtcdAccounts { etcd, clock, shown, mirror, writes: tokio::sync::Mutex::new(()) })
    }

    /// The cluster's administrator account id: the one stored, or a new random one stored now.
    pub async fn admin_account(&self) -> Result<AccountId, AccountError> {
        let admin = key("accounts/admin");
        let id = random_account_id();
        let txn = Txn::new()
            .when([absent(admin.clone())])
            .and_then([TxnOp::put(admin.clone(), id.as_str(), None)])
            .or_else([TxnOp::get(admin, None)]);
        let (answer, _) = self.etcd.txn(txn).await.map_err(storage)?;
        if answer.succeeded() {
            return Ok(id);
        }
        for response in answer.op_responses() {
            if let etcd_client::TxnOpResponse::Get(got) = response
                && let Some(kv) = got.kvs().first()
            {
                return Ok(AccountId::new(String::from_utf8_lossy(kv.value())));
            }
        }
        Err(storage(EtcdError::Unavailable("the administrator's account id vanished".into())))
    }

    /// The cluster's administrator key: the one stored, else `made` (a new pair of the administrator's account,
    /// made `name` if it has to be), stored now unless another front end stores one first (then that one). Front
    /// ends that start at once agree on one key.
    pub async fn administrator(&self, name: &str, made: AccessKey) -> Result<AccessKey, AccountError> {
        let marker = key("accounts/admin-key");
        for _ in 0..TRIES {
            if let Some(stored) = self.admin_key() {
                return Ok(stored);
            }
            let id = made.access_key_id.clone();
            let txn = Txn::new().when([absent(marker.clone())]).and_then([TxnOp::put(marker.clone(), id.clone(), None)]);
            if self.etcd.decide(txn, &marker, Some(id.as_bytes())).await.map_err(storage)?.is_some() {
                self.set_administrator(name, made.clone()).await?;
                return Ok(AccessKey { admin: true, ..made });
            }
            // Another front end is storing its own: it shows here once stored.
            let deadline = tokio::time::Instant::now() + 2 * crate::REQUEST_TIMEOUT;
            while tokio::time::Instant::now() < deadline {
                if let Some(stored) = self.admin_key() {
                    return Ok(stored);
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            // It never did (it died in between): its claim goes.
            self.etcd.retrying_delete(&marker).await.map_err(storage)?;
        }
        Err(AccountError::Unavailable("the administrator key kept changing while this front end started".into()))
    }

    /// The administrator's key, if one is stored.
    pub fn admin_key(&self) -> Option<AccessKey> {
        self.shown.keys.read().unwrap_or_else(|e| e.into_inner()).values().find(|k| k.admin).cloned()
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX)
    }

    fn stored_key(&self, key: &AccessKey) -> Result<String, AccountError> {
        let sealed = self.shown.master.seal(&key.access_key_id, &key.secret_access_key);
        let stored = StoredKey {
            account: key.account.as_str().to_string(),
            admin: key.admin,
            sealed: base64::engine::general_purpose::STANDARD.encode(sealed),
        };
        serde_json::to_string(&stored).map_err(|e| AccountError::Task(e.to_string()))
    }

    /// Runs `txn`, which stores `value` at `key` when its compares hold (see `Etcd::decide`); if it did, waits
    /// until memory shows it. Whether it did.
    async fn decide(&self, txn: Txn, key: &str, value: &str) -> Result<bool, AccountError> {
        let Some(revision) = self.etcd.decide(txn, key, Some(value.as_bytes())).await.map_err(storage)? else {
            return Ok(false);
        };
        if let Err(e) = self.mirror.reached(revision).await {
            tracing::warn!(error = %e, "a stored account write is not shown yet");
        }
        Ok(true)
    }

    async fn exists(&self, key: String) -> Result<bool, AccountError> {
        let options = etcd_client::GetOptions::new().with_count_only();
        Ok(self.etcd.get(&key, Some(options)).await.map_err(storage)?.count() > 0)
    }

    fn account_ops(&self, account: &Account) -> Result<[TxnOp; 2], AccountError> {
        let stored = StoredAccount { name: account.name.clone(), created_ms: account.created_ms };
        let value = serde_json::to_string(&stored).map_err(|e| AccountError::Task(e.to_string()))?;
        Ok([
            TxnOp::put(id_key(account.id.as_str()), value, None),
            TxnOp::put(name_key(&account.name), account.id.as_str(), None),
        ])
    }
}

impl Accounts for EtcdAccounts {
    fn key(&self, access_key_id: &str) -> Option<AccessKey> {
        self.shown.keys.read().unwrap_or_else(|e| e.into_inner()).get(access_key_id).cloned()
    }

    fn list(&self) -> Vec<Account> {
        self.shown.accounts.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    fn data_key(&self, account: &AccountId, purpose: &str) -> [u8; 32] {
        self.shown.master.derive(purpose, account.as_str().as_bytes())
    }

    fn create<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(Account, AccessKey), AccountError>> {
        Box::pin(async move {
            let _writing = self.writes.lock().await;
            for _ in 0..TRIES {
                let account = Account { id: random_account_id(), name: name.to_string(), created_ms: self.now_ms() };
                let key = AccessKey::generate(account.id.clone(), false);
                let [put_id, put_name] = self.account_ops(&account)?;
                let (key_key, stored) = (access_key(&key.access_key_id), self.stored_key(&key)?);
                let txn = Txn::new()
                    .when([absent(name_key(name)), absent(id_key(account.id.as_str())), absent(key_key.clone())])
                    .and_then([put_id, put_name, TxnOp::put(key_key.clone(), stored.clone(), None)]);
                if self.decide(txn, &key_key, &stored).await? {
                    return Ok((account, key));
                }
                if self.exists(name_key(name)).await? {
                    return Err(AccountError::NameTaken(name.to_string()));
                }
            }
            Err(AccountError::Task("no free account id after several random tries".into()))
        })
    }

    fn set_administrator<'a>(&'a self, name: &'a str, key: AccessKey) -> BoxFuture<'a, Result<Account, AccountError>> {
        Box::pin(async move {
            let _writing = self.writes.lock().await;
            let key = AccessKey { admin: true, ..key };
            for _ in 0..TRIES {
                let got = self.etcd.get(&access_key(&key.access_key_id), None).await.map_err(storage)?;
                let stored = got.kvs().first();
                if let Some(kv) = stored
                    && !serde_json::from_slice::<StoredKey>(kv.value()).is_ok_and(|k| k.admin)
                {
                    return Err(AccountError::KeyInUse(key.access_key_id.clone()));
                }
                let mut compares = vec![Compare::mod_revision(
                    access_key(&key.access_key_id),
                    CompareOp::Equal,
                    stored.map_or(0, |kv| kv.mod_revision()),
                )];
                let mut ops: Vec<TxnOp> = self
                    .shown
                    .keys
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                    .filter(|k| k.admin && k.access_key_id != key.access_key_id)
                    .map(|k| TxnOp::delete(access_key(&k.access_key_id), None))
                    .collect();
                let (key_key, stored_value) = (access_key(&key.access_key_id), self.stored_key(&key)?);
                ops.push(TxnOp::put(key_key.clone(), stored_value.clone(), None));
                ops.push(TxnOp::put(crate::key("accounts/admin-key"), key.access_key_id.clone(), None));
                let existing = self.shown.accounts.read().unwrap_or_else(|e| e.into_inner()).get(&key.account).cloned();
                let account = match existing {
                    Some(account) => account,
                    None => {
                        let taken = self.exists(name_key(name)).await?;
                        let name = if taken { format!("{name}-{}", key.account) } else { name.to_string() };
                        let account = Account { id: key.account.clone(), name, created_ms: self.now_ms() };
                        compares.push(absent(id_key(account.id.as_str())));
                        compares.push(absent(name_key(&account.name)));
                        ops.extend(self.account_ops(&account)?);
                        account
                    }
                };
                if self.decide(Txn::new().when(compares).and_then(ops), &key_key, &stored_value).await? {
                    return Ok(account);
                }
            }
            Err(AccountError::Task("the administrator key kept changing under this write".into()))
        })
    }
}
