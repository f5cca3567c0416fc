//! The image manifest and its binary form.
//!
//! Encoding, versions 1 and 2 (integers big-endian):
//! ```text
//! "IGNISMAN"                 8 bytes, magic
//! version        u16         = 2 (1 is still read)
//! chunk_bytes    u32         > 0
//! image_bytes    u64
//! count          u32         = ceil(image_bytes / chunk_bytes)
//! count × {
//!   offset       u64         = index × chunk_bytes
//!   kind         u8          0: an all-zero chunk (not stored), 1: stored
//!   name         [32]        the ciphertext's SHA-256 (all zero for kind 0)
//! }                          -- end of the clear part (the AEAD's associated data)
//! nonce          [24]        XChaCha20-Poly1305 nonce
//! sealed_len     u32         = count × 64 + 16
//! sealed         [sealed_len] the key table: count × { check [32], key [32] }, sealed
//! checksum       [32]        SHA-256 of every byte before it
//! ```
//! Nothing may follow the checksum. Only [`Manifest::open`] reads the sealed
//! part. A chunk's `check` is what a reader compares before answering its
//! bytes: in version 2 the BLAKE3 hash of its ciphertext (checked before
//! decrypting, a quarter of SHA-256's work), in version 1 the SHA-256 of its
//! plaintext (checked after). A manifest keeps its version: it encodes to the
//! bytes it was decoded from, so its [`Manifest::digest`] stays the same.

use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use ignis_chunks::{ChunkDigest, ChunkStore};

use bytes::Bytes;

use crate::chunking::{ReadError, read_with};
use crate::crypto::{AccountKey, plaintext_id, sha256};

const MAGIC: &[u8; 8] = b"IGNISMAN";

/// The version new manifests are sealed with; [`Manifest::decode`] reads it and [`OLDEST_VERSION`]..
pub const FORMAT_VERSION: u16 = 2;

/// The oldest version [`Manifest::decode`] reads.
pub const OLDEST_VERSION: u16 = 1;

const HEADER: usize = 8 + 2 + 4 + 8 + 4;
const ENTRY: usize = 8 + 1 + 32;
const NONCE: usize = 24;
const TAG: usize = 16;
const KEY_ENTRY: usize = 64;
const CHECKSUM: usize = 32;

/// Where a chunk's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkName {
    /// All zero: not stored, read as zeros.
    Zero,
    /// Stored in the chunk store under this name.
    Stored(ChunkDigest),
}

/// One chunk of an image, as the manifest's clear part lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRef {
    /// Its first byte's offset in the image.
    pub offset: u64,
    /// Its length: the manifest's chunk size, but for a short last chunk.
    pub len: u32,
    pub name: ChunkName,
}

/// A chunk's secrets, in the sealed key table.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyEntry {
    /// What the chunk's bytes are checked against; its meaning is the manifest's [`Check`].
    pub(crate) check: [u8; 32],
    pub(crate) key: [u8; 32],
}

/// How a manifest's chunks are checked when read (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// Version 1: the SHA-256 of the plaintext.
    PlaintextSha256,
    /// Version 2: the BLAKE3 hash of the ciphertext.
    CiphertextBlake3,
}

/// An image's manifest: its chunks' offsets and names in the clear, their
/// keys and plaintext hashes sealed under the account's key (see the crate
/// docs).
#[derive(Clone, PartialEq, Eq)]
pub struct Manifest {
    version: u16,
    image_bytes: u64,
    chunk_bytes: u32,
    chunks: Vec<ChunkRef>,
    nonce: [u8; NONCE],
    sealed: Vec<u8>,
}

impl std::fmt::Debug for Manifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manifest")
            .field("version", &self.version)
            .field("image_bytes", &self.image_bytes)
            .field("chunk_bytes", &self.chunk_bytes)
            .field("chunks", &self.chunks.len())
            .finish_non_exhaustive()
    }
}

/// Why a manifest does not decode or open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    #[error("not an image manifest (bad magic)")]
    NotAManifest,
    #[error("image manifest version {0} is not supported (this build reads versions {OLDEST_VERSION} to {FORMAT_VERSION})")]
    UnsupportedVersion(u16),
    #[error("image manifest is truncated")]
    Truncated,
    #[error("image manifest is malformed: {0}")]
    Malformed(&'static str),
    /// The trailing checksum does not match: damaged, or edited.
    #[error("image manifest is corrupt: its checksum does not match")]
    Corrupt,
    /// The sealed key table does not open: the manifest was changed, or the
    /// key is another account's.
    #[error("image manifest does not authenticate under this account's key (tampered with, or another account's)")]
    Unauthenticated,
}

impl Manifest {
    /// Seals `keys` (one per chunk, in order, each with the check `version`
    /// names) under `account`, binding the clear part. New manifests are
    /// [`FORMAT_VERSION`]; tests seal older ones.
    pub(crate) fn seal(
        version: u16,
        image_bytes: u64,
        chunk_bytes: u32,
        chunks: Vec<ChunkRef>,
        keys: &[KeyEntry],
        account: &AccountKey,
    ) -> Result<Self, getrandom::Error> {
        let mut nonce = [0u8; NONCE];
        getrandom::fill(&mut nonce)?;
        let mut manifest = Self { version, image_bytes, chunk_bytes, chunks, nonce, sealed: Vec::new() };
        let mut table = Vec::with_capacity(keys.len() * KEY_ENTRY);
        for entry in keys {
            table.extend_from_slice(&entry.check);
            table.extend_from_slice(&entry.key);
        }
        let aad = manifest.clear_part();
        let cipher = XChaCha20Poly1305::new(&account.key_table_key().into());
        let Ok(sealed) = cipher.encrypt(XNonce::from_slice(&nonce), Payload { msg: &table, aad: &aad }) else {
            unreachable!("XChaCha20-Poly1305 seals any message this size")
        };
        manifest.sealed = sealed;
        Ok(manifest)
    }

    /// The format version the manifest was sealed with.
    pub fn version(&self) -> u16 {
        self.version
    }

    pub(crate) fn check(&self) -> Check {
        match self.version {
            1 => Check::PlaintextSha256,
            _ => Check::CiphertextBlake3,
        }
    }

    /// The image's length in bytes.
    pub fn image_bytes(&self) -> u64 {
        self.image_bytes
    }

    /// The length of every chunk but a short last one.
    pub fn chunk_bytes(&self) -> u32 {
        self.chunk_bytes
    }

    /// The chunks, in image order.
    pub fn chunks(&self) -> &[ChunkRef] {
        &self.chunks
    }

    /// The names of the stored chunks, in image order (repeats included, zero
    /// chunks left out). Needs no key: garbage collection reads them.
    pub fn chunk_names(&self) -> impl Iterator<Item = ChunkDigest> + '_ {
        self.chunks.iter().filter_map(|c| match c.name {
            ChunkName::Stored(d) => Some(d),
            ChunkName::Zero => None,
        })
    }

    /// The SHA-256 of [`Manifest::encode`]'s bytes: what a reference to this
    /// manifest records, so that a keyless reader can check it.
    pub fn digest(&self) -> [u8; 32] {
        sha256(&self.encode())
    }

    /// Checks the manifest against `account`'s key and opens its key table.
    pub fn open(&self, account: &AccountKey) -> Result<Opened<'_>, ManifestError> {
        let aad = self.clear_part();
        let cipher = XChaCha20Poly1305::new(&account.key_table_key().into());
        let table = cipher
            .decrypt(XNonce::from_slice(&self.nonce), Payload { msg: &self.sealed, aad: &aad })
            .map_err(|_| ManifestError::Unauthenticated)?;
        if table.len() != self.chunks.len() * KEY_ENTRY {
            return Err(ManifestError::Malformed("the key table's length does not match the chunk count"));
        }
        let keys = table
            .chunks_exact(KEY_ENTRY)
            .map(|e| {
                let mut entry = KeyEntry { check: [0; 32], key: [0; 32] };
                entry.check.copy_from_slice(&e[..32]);
                entry.key.copy_from_slice(&e[32..]);
                entry
            })
            .collect();
        Ok(Opened { manifest: self, keys })
    }

    /// The stable binary form (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.clear_part();
        out.reserve(NONCE + 4 + self.sealed.len() + CHECKSUM);
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&(self.sealed.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.sealed);
        let checksum = sha256(&out);
        out.extend_from_slice(&checksum);
        out
    }

    /// Reads [`Manifest::encode`]'s form, checking its structure and checksum
    /// (not its authenticity: that needs the key, [`Manifest::open`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() < 8 || &bytes[..8] != MAGIC {
            return Err(match bytes.len() < 8 && MAGIC.starts_with(bytes) {
                true => ManifestError::Truncated,
                false => ManifestError::NotAManifest,
            });
        }
        let mut r = Reader { bytes, at: 8 };
        let version = r.u16()?;
        if !(OLDEST_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(ManifestError::UnsupportedVersion(version));
        }
        if bytes.len() < HEADER + NONCE + 4 + TAG + CHECKSUM {
            return Err(ManifestError::Truncated);
        }
        let (body, checksum) = bytes.split_at(bytes.len() - CHECKSUM);
        if sha256(body) != checksum {
            return Err(ManifestError::Corrupt);
        }
        let mut r = Reader { bytes: body, at: r.at };
        let manifest = Self::parse(version, &mut r)?;
        match r.remaining() {
            0 => Ok(manifest),
            _ => Err(ManifestError::Malformed("bytes after the key table")),
        }
    }

    fn parse(version: u16, r: &mut Reader<'_>) -> Result<Self, ManifestError> {
        let chunk_bytes = r.u32()?;
        let image_bytes = r.u64()?;
        let count = r.u32()? as usize;
        if chunk_bytes == 0 {
            return Err(ManifestError::Malformed("chunk size 0"));
        }
        if image_bytes.div_ceil(u64::from(chunk_bytes)) != count as u64 {
            return Err(ManifestError::Malformed("the chunk count does not cover the image"));
        }
        // Refuse a count the bytes cannot hold before allocating for it.
        if count.checked_mul(ENTRY).is_none_or(|n| n > r.remaining()) {
            return Err(ManifestError::Truncated);
        }
        let mut chunks = Vec::with_capacity(count);
        for index in 0..count {
            let offset = r.u64()?;
            let kind = r.u8()?;
            let name = r.array::<32>()?;
            let expected = index as u64 * u64::from(chunk_bytes);
            if offset != expected {
                return Err(ManifestError::Malformed("a chunk's offset is not its index times the chunk size"));
            }
            let name = match (kind, name) {
                (0, name) if name == [0; 32] => ChunkName::Zero,
                (0, _) => return Err(ManifestError::Malformed("a zero chunk with a name")),
                (1, name) => ChunkName::Stored(ChunkDigest::from_bytes(name)),
                _ => return Err(ManifestError::Malformed("unknown chunk kind")),
            };
            let len = (image_bytes - offset).min(u64::from(chunk_bytes)) as u32;
            chunks.push(ChunkRef { offset, len, name });
        }
        let nonce = r.array::<NONCE>()?;
        let sealed_len = r.u32()? as usize;
        if sealed_len != count * KEY_ENTRY + TAG {
            return Err(ManifestError::Malformed("the key table's length does not match the chunk count"));
        }
        let sealed = r.take(sealed_len)?.to_vec();
        Ok(Self { version, image_bytes, chunk_bytes, chunks, nonce, sealed })
    }

    /// The header and chunk list: the clear part, which the seal binds.
    fn clear_part(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.chunks.len() * ENTRY);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.chunk_bytes.to_be_bytes());
        out.extend_from_slice(&self.image_bytes.to_be_bytes());
        out.extend_from_slice(&(self.chunks.len() as u32).to_be_bytes());
        for chunk in &self.chunks {
            out.extend_from_slice(&chunk.offset.to_be_bytes());
            match chunk.name {
                ChunkName::Zero => {
                    out.push(0);
                    out.extend_from_slice(&[0; 32]);
                }
                ChunkName::Stored(d) => {
                    out.push(1);
                    out.extend_from_slice(d.as_bytes());
                }
            }
        }
        out
    }
}

/// A manifest checked against its account's key, with its key table open:
/// what reads chunks. Open once per image, read many chunks.
pub struct Opened<'m> {
    manifest: &'m Manifest,
    pub(crate) keys: Vec<KeyEntry>,
}

impl std::fmt::Debug for Opened<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened").field("manifest", self.manifest).finish_non_exhaustive()
    }
}

impl Opened<'_> {
    pub fn manifest(&self) -> &Manifest {
        self.manifest
    }

    /// What identifies chunk `index`'s plaintext among the plaintexts a chunk of its name could decrypt to (a
    /// hash of its key: the same for the same chunk in any manifest, of any account; never the key),
    /// if there is such a chunk. A cache of plaintexts keyed by name and this never answers one manifest's
    /// chunk with bytes another decrypted under other keys.
    pub fn plaintext_id(&self, index: usize) -> Option<[u8; 32]> {
        self.keys.get(index).map(|k| plaintext_id(&k.key))
    }

    /// Chunk `index`'s plaintext: fetched by name, checked against the key
    /// table's check and decrypted; zeros without a fetch for a zero chunk.
    pub async fn read_chunk(&self, index: usize, store: &dyn ChunkStore) -> Result<Bytes, ReadError> {
        let (Some(chunk), Some(key)) = (self.manifest.chunks.get(index), self.keys.get(index)) else {
            return Err(ReadError::OutOfRange { index, chunks: self.manifest.chunks.len() });
        };
        read_with(index, *chunk, *key, self.manifest.check(), store).await
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ManifestError> {
        if self.remaining() < n {
            return Err(ManifestError::Truncated);
        }
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ManifestError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, ManifestError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, ManifestError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, ManifestError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, ManifestError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
}
