//! Chunking an image into the store, and reading a chunk back.
//!
//! [`chunk_and_store`] is one task: it reads the image into a 512 KiB buffer
//! and hands each full buffer (and the short last one) to an in-flight
//! future, at most [`IN_FLIGHT`] at once; reading waits while that many are
//! in flight, so memory stays bounded whatever the image's size. Each
//! future hashes and encrypts its chunk on tokio's blocking pool (CPU work,
//! in parallel across cores), asks the store whether the name is held, and
//! puts it if not. Results come back in any order and are placed by index.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use ignis_chunks::{CHUNK_BYTES, ChunkDigest, ChunkError, ChunkStore, NamedChunk};
use tokio::io::{AsyncRead, AsyncReadExt as _};

use crate::crypto::{AccountKey, Salt, apply_chunk_cipher, chunk_key, sha256};
use crate::manifest::{Check, ChunkName, ChunkRef, FORMAT_VERSION, KeyEntry, Manifest, ManifestError};

/// How many chunks [`chunk_and_store`] seals and puts at once.
pub const IN_FLIGHT: usize = 8;

/// What [`chunk_and_store`] made: the image's manifest and what it stored.
#[derive(Debug)]
pub struct Chunked {
    pub manifest: Manifest,
    pub stats: ChunkStats,
}

/// What chunking one image did to the store. Bytes are chunk bytes (a
/// chunk's ciphertext is as long as its plaintext).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkStats {
    /// Every chunk of the image, zero chunks included.
    pub chunks: u64,
    /// All-zero chunks: neither encrypted nor stored.
    pub zero_chunks: u64,
    pub zero_bytes: u64,
    /// Chunks this image stored.
    pub new_chunks: u64,
    pub new_bytes: u64,
    /// Chunks the store already held (from other images, or earlier in this
    /// one): not stored again.
    pub deduplicated_chunks: u64,
    pub deduplicated_bytes: u64,
}

/// Why [`chunk_and_store`] failed. Chunks it stored before failing stay (they
/// are content-addressed and harmless; garbage collection removes them if
/// no manifest names them).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkingError {
    #[error("reading the image: {0}")]
    Read(#[source] std::io::Error),
    #[error(transparent)]
    Store(#[from] ChunkError),
    /// The image has more chunks than a manifest can list (2³² − 1).
    #[error("the image is too large to chunk")]
    TooLarge,
    /// The store stored a chunk under another name than its hash: a broken
    /// store implementation.
    #[error("the chunk store named chunk {got} although its hash is {expected}")]
    Misnamed { expected: ChunkDigest, got: ChunkDigest },
    #[error("sealing a chunk failed: {0}")]
    Sealing(#[source] tokio::task::JoinError),
    #[error("no randomness for the manifest's nonce: {0}")]
    Randomness(getrandom::Error),
}

/// Why a chunk could not be read. The caller never gets wrong bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The manifest does not open under the account's key.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("chunk {index} is past the image's last chunk ({chunks} chunks)")]
    OutOfRange { index: usize, chunks: usize },
    /// The store does not hold the chunk the manifest names.
    #[error("chunk {index} ({name}) is missing from the chunk store")]
    Missing { index: usize, name: ChunkDigest },
    /// The store holds the chunk, but its bytes do not hash to its name.
    #[error("chunk {index} ({name}) is corrupt in the chunk store")]
    Corrupt { index: usize, name: ChunkDigest },
    /// The chunk decrypts to other bytes than the manifest's plaintext hash
    /// (or has the wrong length): the manifest and the chunk do not belong
    /// together.
    #[error("chunk {index} does not decrypt to the plaintext its manifest names")]
    WrongPlaintext { index: usize },
    #[error(transparent)]
    Store(ChunkError),
    #[error("decrypting a chunk failed: {0}")]
    Decrypting(#[source] tokio::task::JoinError),
}

/// Cuts the flattened image read from `image` into chunks of
/// [`CHUNK_BYTES`], encrypts each under a key derived from `salt` and its
/// plaintext, stores those the store does not hold (never an all-zero one)
/// and answers the manifest, its key table sealed under `account`.
pub async fn chunk_and_store<R>(
    mut image: R,
    store: &dyn ChunkStore,
    salt: &Salt,
    account: &AccountKey,
) -> Result<Chunked, ChunkingError>
where
    R: AsyncRead + Unpin,
{
    let mut done: Vec<Option<(ChunkRef, KeyEntry)>> = Vec::new();
    let mut stats = ChunkStats::default();
    let mut in_flight: Vec<InFlight<'_>> = Vec::new();
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut filled = 0;
    let mut offset = 0u64;
    let mut eof = false;
    loop {
        if (filled == CHUNK_BYTES || (eof && filled > 0)) && in_flight.len() < IN_FLIGHT {
            let index = done.len();
            if index >= u32::MAX as usize {
                return Err(ChunkingError::TooLarge);
            }
            let mut plaintext = std::mem::replace(&mut buf, vec![0u8; CHUNK_BYTES]);
            plaintext.truncate(filled);
            done.push(None);
            in_flight.push(Box::pin(seal_and_put(index, offset, plaintext, store, *salt)));
            offset += filled as u64;
            filled = 0;
            continue;
        }
        if eof && filled == 0 && in_flight.is_empty() {
            break;
        }
        // At least one branch is enabled: with none in flight, either the
        // buffer has room and the image has not ended, or a chunk is handed
        // over above, or the loop ended.
        let can_read = !eof && filled < CHUNK_BYTES;
        tokio::select! {
            finished = next_finished(&mut in_flight), if !in_flight.is_empty() => {
                let (index, chunk, key, outcome) = finished?;
                let bytes = u64::from(chunk.len);
                stats.chunks += 1;
                match outcome {
                    Outcome::Zero => (stats.zero_chunks += 1, stats.zero_bytes += bytes),
                    Outcome::New => (stats.new_chunks += 1, stats.new_bytes += bytes),
                    Outcome::Deduplicated => (stats.deduplicated_chunks += 1, stats.deduplicated_bytes += bytes),
                };
                done[index] = Some((chunk, key));
            }
            // `read` is cancel safe: when the other branch wins, nothing was read.
            n = image.read(&mut buf[filled..]), if can_read => {
                match n.map_err(ChunkingError::Read)? {
                    0 => eof = true,
                    n => filled += n,
                }
            }
        }
    }
    let (chunks, keys): (Vec<ChunkRef>, Vec<KeyEntry>) = done.into_iter().flatten().unzip();
    let manifest = Manifest::seal(FORMAT_VERSION, offset, CHUNK_BYTES as u32, chunks, &keys, account)
        .map_err(ChunkingError::Randomness)?;
    Ok(Chunked { manifest, stats })
}

/// The plaintext of chunk `index`: the manifest opened under `account`, the
/// chunk fetched (zeros without a fetch for a zero chunk), checked against
/// the manifest's key table and decrypted. To read many chunks, open the
/// manifest once ([`Manifest::open`]) and call [`Opened::read_chunk`](crate::Opened::read_chunk).
pub async fn read_chunk(
    manifest: &Manifest,
    index: usize,
    store: &dyn ChunkStore,
    account: &AccountKey,
) -> Result<Bytes, ReadError> {
    manifest.open(account)?.read_chunk(index, store).await
}

/// What became of one chunk.
enum Outcome {
    Zero,
    New,
    Deduplicated,
}

type InFlight<'a> = Pin<Box<dyn Future<Output = Result<(usize, ChunkRef, KeyEntry, Outcome), ChunkingError>> + Send + 'a>>;

/// The output of whichever in-flight future finishes first, which is then
/// removed. Cancel safe: an output is taken only when returned.
fn next_finished<'a, 'b, T>(
    in_flight: &'a mut Vec<Pin<Box<dyn Future<Output = T> + Send + 'b>>>,
) -> impl Future<Output = T> + 'a {
    std::future::poll_fn(move |cx| {
        for i in 0..in_flight.len() {
            if let Poll::Ready(out) = in_flight[i].as_mut().poll(cx) {
                drop(in_flight.swap_remove(i));
                return Poll::Ready(out);
            }
        }
        Poll::Pending
    })
}

/// A chunk after sealing: its secrets, and its ciphertext and name unless it
/// is all zero.
struct Sealed {
    key: KeyEntry,
    stored: Option<NamedChunk>,
}

/// Hashes, derives the key, encrypts in place and names; CPU work.
fn seal(salt: &Salt, mut plaintext: Vec<u8>) -> Sealed {
    if plaintext.iter().all(|&b| b == 0) {
        return Sealed { key: KeyEntry { check: [0; 32], key: [0; 32] }, stored: None };
    }
    let key = chunk_key(salt, &plaintext);
    apply_chunk_cipher(&key, &mut plaintext);
    let check = *blake3::hash(&plaintext).as_bytes();
    Sealed { key: KeyEntry { check, key }, stored: Some(NamedChunk::new(Bytes::from(plaintext))) }
}

async fn seal_and_put(
    index: usize,
    offset: u64,
    plaintext: Vec<u8>,
    store: &dyn ChunkStore,
    salt: Salt,
) -> Result<(usize, ChunkRef, KeyEntry, Outcome), ChunkingError> {
    let len = plaintext.len() as u32;
    let sealed = tokio::task::spawn_blocking(move || seal(&salt, plaintext)).await.map_err(ChunkingError::Sealing)?;
    let (name, outcome) = match sealed.stored {
        None => (ChunkName::Zero, Outcome::Zero),
        // Ask first: a chunk already held is not sent again (for a remote
        // store, not uploaded).
        Some(chunk) if store.has(chunk.digest()).await? => (ChunkName::Stored(chunk.digest()), Outcome::Deduplicated),
        Some(chunk) => {
            let name = chunk.digest();
            let stored = store.put_named(chunk).await?;
            if stored.digest != name {
                return Err(ChunkingError::Misnamed { expected: name, got: stored.digest });
            }
            let outcome = if stored.new { Outcome::New } else { Outcome::Deduplicated };
            (ChunkName::Stored(name), outcome)
        }
    };
    Ok((index, ChunkRef { offset, len, name }, sealed.key, outcome))
}

/// Reads one chunk given its entries and how its manifest checks them; see [`read_chunk`].
pub(crate) async fn read_with(
    index: usize,
    chunk: ChunkRef,
    key: KeyEntry,
    check: Check,
    store: &dyn ChunkStore,
) -> Result<Bytes, ReadError> {
    let name = match chunk.name {
        ChunkName::Zero => return Ok(Bytes::from(vec![0u8; chunk.len as usize])),
        ChunkName::Stored(name) => name,
    };
    // The key table's check, authenticated by the manifest, is compared below: the store need not hash the
    // ciphertext.
    let ciphertext = store.get_unverified(name).await.map_err(|e| match e {
        ChunkError::NotFound(name) => ReadError::Missing { index, name },
        ChunkError::Corrupt(name) => ReadError::Corrupt { index, name },
        e => ReadError::Store(e),
    })?;
    if ciphertext.len() != chunk.len as usize {
        return Err(ReadError::WrongPlaintext { index });
    }
    tokio::task::spawn_blocking(move || {
        // Which failure it is, told apart only on failure: bytes that are not the stored chunk, or a chunk that
        // is not the one this manifest names.
        let failed = |ciphertext: &[u8]| match ChunkDigest::of(ciphertext) == name {
            true => Err(ReadError::WrongPlaintext { index }),
            false => Err(ReadError::Corrupt { index, name }),
        };
        if check == Check::CiphertextBlake3 && *blake3::hash(&ciphertext).as_bytes() != key.check {
            return failed(&ciphertext);
        }
        let mut plaintext = ciphertext.try_into_mut().unwrap_or_else(|shared| BytesMut::from(&shared[..]));
        apply_chunk_cipher(&key.key, &mut plaintext);
        if check == Check::PlaintextSha256 && sha256(&plaintext) != key.check {
            apply_chunk_cipher(&key.key, &mut plaintext);
            return failed(&plaintext);
        }
        Ok(plaintext.freeze())
    })
    .await
    .map_err(ReadError::Decrypting)?
}
