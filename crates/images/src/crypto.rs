//! The keys and ciphers of convergent encryption (see the crate docs for the
//! scheme and why a fixed IV is safe). No IO.

use std::fmt;

use aes::cipher::{KeyIvInit as _, StreamCipher as _};
use hmac::{Hmac, Mac as _};
use sha2::{Digest as _, Sha256};

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;
type HmacSha256 = Hmac<Sha256>;

const CHUNK_KEY_CONTEXT: &str = "ignis chunk key v2";
const SALT_DOMAIN: &[u8] = b"ignis chunk salt v1";
const KEY_TABLE_DOMAIN: &[u8] = b"ignis image key table v1";
const PLAINTEXT_ID_DOMAIN: &[u8] = b"ignis chunk plaintext id v1";

/// An account's secret key: it seals the key tables of that account's image
/// manifests. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct AccountKey([u8; 32]);

impl AccountKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key's bytes, to hand to a worker host that loads the account's images.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key that seals key tables (kept apart from any other use of the
    /// account key).
    pub(crate) fn key_table_key(&self) -> [u8; 32] {
        hmac(&self.0, &[KEY_TABLE_DOMAIN])
    }
}

impl fmt::Debug for AccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccountKey(..)")
    }
}

/// What every chunk key is derived with: the chunk store's current root id
/// and an optional operator-set value. Chunks deduplicate only under the
/// same salt.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Salt {
    /// The BLAKE3 key chunk keys are hashed under, derived from the salt's value.
    chunk_key_key: [u8; 32],
}

impl Salt {
    /// The salt of chunk store root `root_id`, varied by the operator's
    /// `operator` value if set (`None` and `Some(b"")` differ).
    pub fn new(root_id: &str, operator: Option<&[u8]>) -> Self {
        let mut h = Sha256::new();
        h.update(SALT_DOMAIN);
        h.update((root_id.len() as u64).to_be_bytes());
        h.update(root_id.as_bytes());
        match operator {
            None => h.update([0]),
            Some(value) => {
                h.update([1]);
                h.update((value.len() as u64).to_be_bytes());
                h.update(value);
            }
        }
        let value: [u8; 32] = h.finalize().into();
        Self { chunk_key_key: blake3::derive_key(CHUNK_KEY_CONTEXT, &value) }
    }
}

impl fmt::Debug for Salt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Salt(..)")
    }
}

/// The key of the chunk `plaintext`: its BLAKE3 hash keyed by the salt (a pseudo-random function of the
/// plaintext, so a key encrypts exactly one plaintext).
pub(crate) fn chunk_key(salt: &Salt, plaintext: &[u8]) -> [u8; 32] {
    *blake3::keyed_hash(&salt.chunk_key_key, plaintext).as_bytes()
}

/// What tells apart the plaintexts that ciphertexts of one name decrypt to: one per key, so a hash of the key
/// (never the key itself).
pub(crate) fn plaintext_id(key: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(PLAINTEXT_ID_DOMAIN);
    h.update(key);
    h.finalize().into()
}

/// AES-256-CTR with a zero IV, in place; its own inverse.
pub(crate) fn apply_chunk_cipher(key: &[u8; 32], data: &mut [u8]) {
    let mut cipher = Aes256Ctr::new(key.into(), &[0u8; 16].into());
    cipher.apply_keystream(data);
}

pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes a key of any length: `new_from_slice` cannot fail.
    let Ok(mut mac) = HmacSha256::new_from_slice(key) else { unreachable!("HMAC accepts any key length") };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}
