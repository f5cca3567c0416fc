//! Tenant accounts and their access keys, with secrets sealed at rest.
//!
//! * `accounts`: 12-digit account id -> (name, creation time in ms).
//! * `access_keys`: access key id -> (account id, administrator flag, sealed secret).
//!
//! A secret is sealed with ChaCha20-Poly1305 under the data directory's master key
//! (`<data_dir>/master.key`, 32 random bytes, mode 0600, made on first open and kept
//! apart from the database file): `version (1) || nonce (12, random per seal) ||
//! ciphertext+tag`, with the access key id as associated data, so a sealed secret
//! cannot be moved to another key. Plain secrets only ever exist in memory.

use std::io::Write;
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};

use crate::{DbContext, Store, StoreError, io_err, now_ms};

/// account id -> (name, created_ms).
const ACCOUNTS: TableDefinition<&str, (&str, i64)> = TableDefinition::new("accounts");
/// access key id -> (account id, admin, sealed secret).
const ACCESS_KEYS: TableDefinition<&str, (&str, bool, &[u8])> = TableDefinition::new("access_keys");

/// The master key's file name in the data directory.
pub const MASTER_KEY_FILE: &str = "master.key";
const MASTER_KEY_LEN: usize = 32;
const SEAL_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;

/// Base32 letters and digits for access key ids (as AWS's).
const KEY_ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/// Secret access key characters (as AWS's).
const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const DIGITS: &[u8] = b"0123456789";

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(ACCOUNTS).ctx("creating tables")?;
    txn.open_table(ACCESS_KEYS).ctx("creating tables")?;
    Ok(())
}

/// A tenant account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// 12 decimal digits.
    pub id: String,
    /// Unique among accounts.
    pub name: String,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: i64,
}

/// An access key pair and whom it belongs to. Its `Debug` form hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKey {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// The account the key acts for.
    pub account_id: String,
    /// Whether the key may manage accounts.
    pub admin: bool,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("account_id", &self.account_id)
            .field("admin", &self.admin)
            .finish()
    }
}

impl AccessKey {
    /// A new random key pair for `account_id`: `AKIA` + 16 base32 characters, and a
    /// 40-character secret.
    pub fn generate(account_id: &str, admin: bool) -> AccessKey {
        AccessKey {
            access_key_id: random_text("AKIA", 16, KEY_ID_ALPHABET),
            secret_access_key: random_text("", 40, SECRET_ALPHABET),
            account_id: account_id.to_string(),
            admin,
        }
    }
}

/// Why an account could not be created.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// Another account has this name.
    #[error("an account named {0} already exists")]
    NameTaken(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `len` symbols of `alphabet` after `prefix`, from the OS's random source.
pub fn random_text(prefix: &str, len: usize, alphabet: &[u8]) -> String {
    let mut text = prefix.to_string();
    // Rejection sampling keeps every symbol equally likely.
    let limit = 256 - 256 % alphabet.len();
    let mut buf = [0u8; 64];
    while text.len() < prefix.len() + len {
        random_bytes(&mut buf);
        for &byte in &buf {
            if (byte as usize) < limit && text.len() < prefix.len() + len {
                text.push(alphabet[byte as usize % alphabet.len()] as char);
            }
        }
    }
    text
}

/// A new random 12-digit account id.
pub fn random_account_id() -> String {
    random_text("", 12, DIGITS)
}

fn random_bytes(buf: &mut [u8]) {
    // The OS's random source failing leaves nothing safe to do.
    getrandom::fill(buf).expect("the operating system's random source failed");
}

/// The master key: read from `<data_dir>/master.key`, or made there (0600,
/// fsync'd) if the file does not exist and no sealed secret does either.
pub(crate) fn open_master_key(data_dir: &Path, have_keys: bool) -> Result<ChaCha20Poly1305, StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = data_dir.join(MASTER_KEY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            if bytes.len() != MASTER_KEY_LEN {
                return Err(StoreError::MasterKey(format!(
                    "{} holds {} bytes, not {MASTER_KEY_LEN}",
                    path.display(),
                    bytes.len()
                )));
            }
            let mode = std::fs::metadata(&path).map_err(io_err(format!("reading {}", path.display())))?.permissions().mode();
            if mode & 0o077 != 0 {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(io_err(format!("restricting {}", path.display())))?;
            }
            Ok(ChaCha20Poly1305::new(Key::from_slice(&bytes)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if have_keys {
                return Err(StoreError::MasterKey(format!(
                    "{} is missing but the database holds sealed secrets: restore it",
                    path.display()
                )));
            }
            let mut key = [0u8; MASTER_KEY_LEN];
            random_bytes(&mut key);
            let tmp = data_dir.join(format!("{MASTER_KEY_FILE}.tmp"));
            let write = || -> std::io::Result<()> {
                let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
                file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
                file.write_all(&key)?;
                file.sync_all()?;
                std::fs::rename(&tmp, &path)?;
                std::fs::File::open(data_dir)?.sync_all()
            };
            write().map_err(io_err(format!("creating {}", path.display())))?;
            Ok(ChaCha20Poly1305::new(Key::from_slice(&key)))
        }
        Err(e) => Err(StoreError::Io { context: format!("reading {}", path.display()), source: e }),
    }
}

/// Seals a secret kept in a file of the data directory (the administrator's
/// credentials file), under the data directory's master key; base64 text.
/// The master key must exist: [`Store::open`] makes it.
pub fn seal_file_secret(data_dir: &Path, access_key_id: &str, secret: &str) -> Result<String, StoreError> {
    use base64::Engine;
    let cipher = open_master_key(data_dir, true)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(seal(&cipher, access_key_id, secret)))
}

/// Opens what [`seal_file_secret`] sealed.
pub fn open_file_secret(data_dir: &Path, access_key_id: &str, sealed: &str) -> Result<String, StoreError> {
    use base64::Engine;
    let cipher = open_master_key(data_dir, true)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(sealed.trim())
        .map_err(|_| StoreError::MasterKey(format!("the sealed secret of access key {access_key_id} is not base64")))?;
    open_sealed(&cipher, access_key_id, &bytes)
}

/// Whether the database holds any access key (so a master key must already exist).
pub(crate) fn has_access_keys(db: &redb::Database) -> Result<bool, StoreError> {
    const CTX: &str = "reading access keys";
    let txn = db.begin_read().ctx(CTX)?;
    let table = txn.open_table(ACCESS_KEYS).ctx(CTX)?;
    Ok(table.len().ctx(CTX)? > 0)
}

fn seal(cipher: &ChaCha20Poly1305, access_key_id: &str, secret: &str) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    random_bytes(&mut nonce);
    let sealed = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: secret.as_bytes(), aad: access_key_id.as_bytes() })
        .expect("ChaCha20-Poly1305 encryption of a short message cannot fail");
    let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
    out.push(SEAL_VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    out
}

fn open_sealed(cipher: &ChaCha20Poly1305, access_key_id: &str, sealed: &[u8]) -> Result<String, StoreError> {
    let bad = |why: &str| StoreError::MasterKey(format!("the secret of access key {access_key_id} cannot be unsealed: {why}"));
    if sealed.len() < 1 + NONCE_LEN || sealed[0] != SEAL_VERSION {
        return Err(bad("unknown format"));
    }
    let nonce = Nonce::from_slice(&sealed[1..1 + NONCE_LEN]);
    let plain = cipher
        .decrypt(nonce, Payload { msg: &sealed[1 + NONCE_LEN..], aad: access_key_id.as_bytes() })
        .map_err(|_| bad("it was not sealed with this data directory's master.key"))?;
    String::from_utf8(plain).map_err(|_| bad("not UTF-8"))
}

impl Store {
    /// Every account, ordered by id.
    pub fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        const CTX: &str = "listing accounts";
        let txn = self.db.begin_read().ctx(CTX)?;
        let table = txn.open_table(ACCOUNTS).ctx(CTX)?;
        let mut out = Vec::new();
        for item in table.iter().ctx(CTX)? {
            let (k, v) = item.ctx(CTX)?;
            let (name, created_ms) = v.value();
            out.push(Account { id: k.value().to_string(), name: name.to_string(), created_ms });
        }
        Ok(out)
    }

    /// One account, if it exists.
    pub fn account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        const CTX: &str = "reading an account";
        let txn = self.db.begin_read().ctx(CTX)?;
        let table = txn.open_table(ACCOUNTS).ctx(CTX)?;
        Ok(table.get(id).ctx(CTX)?.map(|v| {
            let (name, created_ms) = v.value();
            Account { id: id.to_string(), name: name.to_string(), created_ms }
        }))
    }

    /// Creates an account named `name` with a new random id and a new key pair
    /// (not an administrator's), atomically. Durable when it returns. The
    /// returned key holds the only plain copy of the secret.
    pub fn create_account(&self, name: &str) -> Result<(Account, AccessKey), AccountError> {
        const CTX: &str = "creating an account";
        let txn = self.db.begin_write().ctx(CTX)?;
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
                let key = AccessKey::generate(&id, false);
                if keys.get(key.access_key_id.as_str()).ctx(CTX)?.is_none() {
                    break key;
                }
            };
            let account = Account { id, name: name.to_string(), created_ms: now_ms() };
            accounts.insert(account.id.as_str(), (account.name.as_str(), account.created_ms)).ctx(CTX)?;
            let sealed = seal(&self.cipher, &key.access_key_id, &key.secret_access_key);
            keys.insert(key.access_key_id.as_str(), (key.account_id.as_str(), false, sealed.as_slice())).ctx(CTX)?;
            (account, key)
        };
        self.commit(txn, true, CTX)?;
        Ok((account, key))
    }

    /// Makes sure account `id` exists (named `name` if it has to be made; a
    /// taken name gets the id appended). Returns it. Durable when it returns.
    pub fn ensure_account(&self, id: &str, name: &str) -> Result<Account, StoreError> {
        const CTX: &str = "storing an account";
        if let Some(account) = self.account(id)? {
            return Ok(account);
        }
        let txn = self.db.begin_write().ctx(CTX)?;
        let account = {
            let mut accounts = txn.open_table(ACCOUNTS).ctx(CTX)?;
            let mut taken = false;
            for item in accounts.iter().ctx(CTX)? {
                let (_, v) = item.ctx(CTX)?;
                taken |= v.value().0 == name;
            }
            let name = if taken { format!("{name}-{id}") } else { name.to_string() };
            let account = Account { id: id.to_string(), name, created_ms: now_ms() };
            accounts.insert(id, (account.name.as_str(), account.created_ms)).ctx(CTX)?;
            account
        };
        self.commit(txn, true, CTX)?;
        Ok(account)
    }

    /// Makes `key` the only administrator key: stores it (sealed) and removes
    /// every other key flagged administrator. Fails if its access key id
    /// belongs to a non-administrator key. Durable when it returns.
    pub fn set_admin_key(&self, key: &AccessKey) -> Result<(), StoreError> {
        const CTX: &str = "storing the administrator key";
        let txn = self.db.begin_write().ctx(CTX)?;
        {
            let mut keys = txn.open_table(ACCESS_KEYS).ctx(CTX)?;
            let existing = keys.get(key.access_key_id.as_str()).ctx(CTX)?.map(|v| v.value().1);
            if existing == Some(false) {
                return Err(StoreError::KeyInUse(key.access_key_id.clone()));
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
            let sealed = seal(&self.cipher, &key.access_key_id, &key.secret_access_key);
            keys.insert(key.access_key_id.as_str(), (key.account_id.as_str(), true, sealed.as_slice())).ctx(CTX)?;
        }
        self.commit(txn, true, CTX)
    }

    /// Every access key, with its secret unsealed, ordered by access key id.
    pub fn access_keys(&self) -> Result<Vec<AccessKey>, StoreError> {
        const CTX: &str = "reading access keys";
        let txn = self.db.begin_read().ctx(CTX)?;
        let table = txn.open_table(ACCESS_KEYS).ctx(CTX)?;
        let mut out = Vec::new();
        for item in table.iter().ctx(CTX)? {
            let (k, v) = item.ctx(CTX)?;
            let (account_id, admin, sealed) = v.value();
            let access_key_id = k.value().to_string();
            let secret_access_key = open_sealed(&self.cipher, &access_key_id, sealed)?;
            out.push(AccessKey { access_key_id, secret_access_key, account_id: account_id.to_string(), admin });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn accounts_and_keys_persist_sealed() {
        let tmp = tempfile::tempdir().unwrap();
        let (account, key) = {
            let store = Store::open(tmp.path()).unwrap();
            let (account, key) = store.create_account("alice").unwrap();
            assert_eq!(account.id.len(), 12);
            assert!(account.id.bytes().all(|b| b.is_ascii_digit()));
            assert!(key.access_key_id.starts_with("AKIA") && key.access_key_id.len() == 20);
            assert_eq!(key.secret_access_key.len(), 40);
            assert!(!format!("{key:?}").contains(&key.secret_access_key));
            assert!(matches!(store.create_account("alice"), Err(AccountError::NameTaken(_))));
            (account, key)
        };
        let store = Store::open(tmp.path()).unwrap();
        assert_eq!(store.accounts().unwrap(), vec![account.clone()]);
        assert_eq!(store.access_keys().unwrap(), vec![key.clone()]);
        drop(store);
        let mode = {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(tmp.path().join(MASTER_KEY_FILE)).unwrap().permissions().mode()
        };
        assert_eq!(mode & 0o777, 0o600);
        for entry in std::fs::read_dir(tmp.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                assert!(!contains(&std::fs::read(&path).unwrap(), key.secret_access_key.as_bytes()), "{}", path.display());
            }
        }
    }

    #[test]
    fn one_admin_key_at_a_time() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        store.ensure_account("111111111111", "admin").unwrap();
        let first = AccessKey::generate("111111111111", true);
        store.set_admin_key(&first).unwrap();
        store.set_admin_key(&first).unwrap();
        assert_eq!(store.access_keys().unwrap(), vec![first.clone()]);
        let second = AccessKey::generate("111111111111", true);
        store.set_admin_key(&second).unwrap();
        assert_eq!(store.access_keys().unwrap(), vec![second]);
        let (_, tenant) = store.create_account("t").unwrap();
        let clash = AccessKey { admin: true, account_id: "111111111111".into(), ..tenant };
        assert!(matches!(store.set_admin_key(&clash), Err(StoreError::KeyInUse(_))));
        // An existing account keeps its name; a new one whose name is taken gets its id appended.
        assert_eq!(store.ensure_account("111111111111", "other").unwrap().name, "admin");
        assert_eq!(store.ensure_account("222222222222", "t").unwrap().name, "t-222222222222");
    }

    #[test]
    fn a_missing_or_wrong_master_key_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let store = Store::open(tmp.path()).unwrap();
            store.create_account("a").unwrap();
        }
        let key_path = tmp.path().join(MASTER_KEY_FILE);
        std::fs::remove_file(&key_path).unwrap();
        assert!(matches!(Store::open(tmp.path()), Err(StoreError::MasterKey(_))));
        std::fs::write(&key_path, [7u8; 32]).unwrap();
        let store = Store::open(tmp.path()).unwrap();
        assert!(matches!(store.access_keys(), Err(StoreError::MasterKey(_))));
    }

    #[test]
    fn random_text_uses_the_alphabet() {
        let text = random_text("P", 200, b"ab");
        assert!(text.starts_with('P') && text.len() == 201);
        assert!(text[1..].contains('a') && text[1..].contains('b'));
        assert!(text[1..].bytes().all(|b| b == b'a' || b == b'b'));
    }
}
