//! The data directory's master key, and the sealing of access keys' secrets
//! under it: the one copy of this code, used by the accounts' owner
//! (`ignis_registry::EmbeddedAccounts`, for the secrets it stores in the
//! database) and by the server and the CLI (for the administrator's
//! credentials file, [`seal_file_secret`] / [`open_file_secret`]).
//!
//! The master key is `<data_dir>/master.key`: 32 random bytes, mode 0600,
//! kept apart from the database file. [`MasterKey::open`] makes it (fsync'd)
//! when it does not exist and nothing sealed under it does either; it refuses
//! to make a new one while sealed secrets exist, since they could never be
//! opened again.
//!
//! A sealed secret is ChaCha20-Poly1305 with a random nonce each time:
//! `version (1) || nonce (12) || ciphertext+tag`, with the access key id as
//! associated data, so a sealed secret cannot be moved to another key. Plain
//! secrets only ever exist in memory.
//!
//! Other keys are derived from the master key, never stored:
//! [`MasterKey::derive`] is `HMAC-SHA256(master, label || 0 || context)`, a
//! different key for each label (what it is for) and context (whose it is).

use std::io::Write;
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{StoreError, io_err};

/// The master key's file name in the data directory.
pub const MASTER_KEY_FILE: &str = "master.key";
const MASTER_KEY_LEN: usize = 32;
const SEAL_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;

/// The data directory's master key, loaded: seals and opens secrets.
pub struct MasterKey {
    cipher: ChaCha20Poly1305,
    /// The master key as an HMAC key, for [`MasterKey::derive`].
    derivation: Hmac<Sha256>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// Reads `<data_dir>/master.key` (tightening its mode to 0600 if looser),
    /// or makes it there (0600, fsync'd) if it does not exist and
    /// `sealed_secrets_exist` is false. Fails with [`StoreError::MasterKey`]
    /// if it is malformed, or missing while sealed secrets exist.
    pub fn open(data_dir: &Path, sealed_secrets_exist: bool) -> Result<MasterKey, StoreError> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let path = data_dir.join(MASTER_KEY_FILE);
        let key = match std::fs::read(&path) {
            Ok(bytes) => {
                if bytes.len() != MASTER_KEY_LEN {
                    return Err(StoreError::MasterKey(format!(
                        "{} holds {} bytes, not {MASTER_KEY_LEN}",
                        path.display(),
                        bytes.len()
                    )));
                }
                let mode =
                    std::fs::metadata(&path).map_err(io_err(format!("reading {}", path.display())))?.permissions().mode();
                if mode & 0o077 != 0 {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                        .map_err(io_err(format!("restricting {}", path.display())))?;
                }
                bytes
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if sealed_secrets_exist {
                    return Err(StoreError::MasterKey(format!(
                        "{} is missing but the database holds sealed secrets: restore it",
                        path.display()
                    )));
                }
                let mut key = [0u8; MASTER_KEY_LEN];
                random_bytes(&mut key);
                let tmp = data_dir.join(format!("{MASTER_KEY_FILE}.tmp"));
                let write = || -> std::io::Result<()> {
                    let mut file =
                        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
                    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
                    file.write_all(&key)?;
                    file.sync_all()?;
                    std::fs::rename(&tmp, &path)?;
                    std::fs::File::open(data_dir)?.sync_all()
                };
                write().map_err(io_err(format!("creating {}", path.display())))?;
                key.to_vec()
            }
            Err(e) => return Err(StoreError::Io { context: format!("reading {}", path.display()), source: e }),
        };
        let derivation = <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("HMAC takes keys of any length");
        Ok(MasterKey { cipher: ChaCha20Poly1305::new(Key::from_slice(&key)), derivation })
    }

    /// A 32-byte key derived from the master key for `label` (what it is
    /// for) and `context` (whose it is): the same inputs give the same key
    /// for as long as the master key is the same.
    pub fn derive(&self, label: &str, context: &[u8]) -> [u8; 32] {
        let mut mac = self.derivation.clone();
        mac.update(label.as_bytes());
        mac.update(&[0]);
        mac.update(context);
        mac.finalize().into_bytes().into()
    }

    /// `secret` sealed for `access_key_id` (see the module docs).
    pub fn seal(&self, access_key_id: &str, secret: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        random_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: secret.as_bytes(), aad: access_key_id.as_bytes() })
            .expect("ChaCha20-Poly1305 encryption of a short message cannot fail");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// The secret [`MasterKey::seal`] sealed for `access_key_id`; a
    /// [`StoreError::MasterKey`] if it was sealed for another key, under
    /// another master key, or is not a sealed secret at all.
    pub fn open_sealed(&self, access_key_id: &str, sealed: &[u8]) -> Result<String, StoreError> {
        let bad =
            |why: &str| StoreError::MasterKey(format!("the secret of access key {access_key_id} cannot be unsealed: {why}"));
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != SEAL_VERSION {
            return Err(bad("unknown format"));
        }
        let nonce = Nonce::from_slice(&sealed[1..1 + NONCE_LEN]);
        let plain = self
            .cipher
            .decrypt(nonce, Payload { msg: &sealed[1 + NONCE_LEN..], aad: access_key_id.as_bytes() })
            .map_err(|_| bad("it was not sealed with this data directory's master.key"))?;
        String::from_utf8(plain).map_err(|_| bad("not UTF-8"))
    }
}

/// Seals a secret kept in a file of the data directory (the administrator's
/// credentials file), under the data directory's master key; base64 text.
/// The master key must exist (the accounts' owner makes it when it opens).
pub fn seal_file_secret(data_dir: &Path, access_key_id: &str, secret: &str) -> Result<String, StoreError> {
    use base64::Engine;
    let key = MasterKey::open(data_dir, true)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(key.seal(access_key_id, secret)))
}

/// Opens what [`seal_file_secret`] sealed.
pub fn open_file_secret(data_dir: &Path, access_key_id: &str, sealed: &str) -> Result<String, StoreError> {
    use base64::Engine;
    let key = MasterKey::open(data_dir, true)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(sealed.trim())
        .map_err(|_| StoreError::MasterKey(format!("the sealed secret of access key {access_key_id} is not base64")))?;
    key.open_sealed(access_key_id, &bytes)
}

fn random_bytes(buf: &mut [u8]) {
    // The OS's random source failing leaves nothing safe to do.
    getrandom::fill(buf).expect("the operating system's random source failed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_for_one_key_under_one_master_key() {
        let tmp = tempfile::tempdir().unwrap();
        let key = MasterKey::open(tmp.path(), false).unwrap();
        let sealed = key.seal("AKIAONE", "the secret");
        assert!(!sealed.windows(10).any(|w| w == b"the secret"));
        assert_ne!(sealed, key.seal("AKIAONE", "the secret"), "a fresh nonce each time");
        assert_eq!(key.open_sealed("AKIAONE", &sealed).unwrap(), "the secret");
        assert!(matches!(key.open_sealed("AKIATWO", &sealed), Err(StoreError::MasterKey(_))));
        assert!(matches!(key.open_sealed("AKIAONE", &sealed[..5]), Err(StoreError::MasterKey(_))));
        // The same file, read again, opens it; another master key does not.
        assert_eq!(MasterKey::open(tmp.path(), true).unwrap().open_sealed("AKIAONE", &sealed).unwrap(), "the secret");
        let other = tempfile::tempdir().unwrap();
        let stranger = MasterKey::open(other.path(), false).unwrap();
        assert!(matches!(stranger.open_sealed("AKIAONE", &sealed), Err(StoreError::MasterKey(_))));
    }

    #[test]
    fn derived_keys_depend_on_label_context_and_master_key() {
        let tmp = tempfile::tempdir().unwrap();
        let key = MasterKey::open(tmp.path(), false).unwrap();
        let one = key.derive("images", b"111111111111");
        assert_eq!(one, MasterKey::open(tmp.path(), true).unwrap().derive("images", b"111111111111"));
        assert_ne!(one, key.derive("images", b"222222222222"));
        assert_ne!(one, key.derive("other", b"111111111111"));
        // The separator keeps label and context apart.
        assert_ne!(key.derive("ab", b"c"), key.derive("a", b"bc"));
        let other = tempfile::tempdir().unwrap();
        assert_ne!(one, MasterKey::open(other.path(), false).unwrap().derive("images", b"111111111111"));
    }

    #[test]
    fn the_file_is_private_and_never_remade_over_sealed_secrets() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(MASTER_KEY_FILE);
        assert!(matches!(MasterKey::open(tmp.path(), true), Err(StoreError::MasterKey(_))));
        assert!(!path.exists());
        MasterKey::open(tmp.path(), false).unwrap();
        let metadata = std::fs::metadata(&path).unwrap();
        assert_eq!((metadata.permissions().mode() & 0o777, metadata.len()), (0o600, 32));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        MasterKey::open(tmp.path(), true).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::write(&path, [1u8; 31]).unwrap();
        assert!(matches!(MasterKey::open(tmp.path(), true), Err(StoreError::MasterKey(_))));
    }

    #[test]
    fn file_secrets_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        MasterKey::open(tmp.path(), false).unwrap();
        let sealed = seal_file_secret(tmp.path(), "AKIAADMIN", "s3cret").unwrap();
        assert_eq!(open_file_secret(tmp.path(), "AKIAADMIN", &sealed).unwrap(), "s3cret");
        assert!(matches!(open_file_secret(tmp.path(), "AKIAADMIN", "not base64!"), Err(StoreError::MasterKey(_))));
    }
}
