//! Container images after flattening: one filesystem image cut into fixed
//! chunks, each encrypted convergently, deduplicated in the chunk store, and
//! the [`Manifest`] that names them.
//!
//! # API boundary
//! - [`chunk_and_store`]: reads a flattened image as a stream, puts its
//!   chunks into a [`ChunkStore`](ignis_chunks::ChunkStore) and answers the
//!   image's [`Manifest`] with [`ChunkStats`] (new against deduplicated chunks
//!   and bytes). It never holds the whole image: at most [`IN_FLIGHT`] chunks
//!   are being sealed or put at once.
//! - [`Manifest`]: [`Manifest::encode`] / [`Manifest::decode`] (a versioned
//!   binary form); [`Manifest::chunk_names`] without any key (for garbage
//!   collection); [`Manifest::open`] with the account's key gives an
//!   [`Opened`] manifest, whose [`Opened::read_chunk`] fetches, decrypts and
//!   checks one chunk. [`read_chunk`] does both in one call.
//! - Keys: [`AccountKey`] (per account; where it comes from is the caller's
//!   business) and [`Salt`] (the chunk store's root id and an optional
//!   operator-set value).
//!
//! - [`flatten`](mod@flatten): applies an image's tar layers, in order, into
//!   one tree ([`flatten::Flattened`]: whiteouts, opaque directories, hard
//!   links, symlinks, modes, owners; device nodes, setuid bits and escaping
//!   paths dropped or refused), with file bodies spooled on disk and each
//!   entry's layer kept, and writes it into a directory.
//! - [`erofs`](mod@erofs): [`erofs::build`] writes a flattened tree as a
//!   read-only EROFS image (the kernel's format, uncompressed), laid out
//!   for sharing: each layer's file bodies in a region of their own that
//!   starts on a chunk boundary, so images on the same base layers have the
//!   same chunks there; the metadata after them. Deterministic: the same
//!   tree gives the same bytes.
//! - [`prepare`]: the whole way from layer streams to a stored image:
//!   flatten, build the EROFS image in an unnamed file, [`chunk_and_store`];
//!   answers the [`Manifest`] and each stage's statistics ([`Prepared`]),
//!   or the failing stage's error ([`PrepareError`], which tells the
//!   image's faults from the platform's). Nothing is stored if a layer is
//!   bad.
//!
//! - [`seam`]: the seam the control plane calls when a function's code
//!   becomes an image ([`ImagePreparer`], [`PreparedImage`]), implemented by
//!   [`Images`].
//! - [`Images`] (`service.rs`): the server's owner of prepared images, the
//!   chunk store's roots and garbage collection (see its docs).
//!
//! What this crate does not know: which images or functions are live,
//! where manifests and account keys are kept, how an image is mounted.
//!
//! # Convergent encryption
//! For a chunk with plaintext `p` (the last chunk may be short):
//! - `key = BLAKE3-keyed(k, p)`, where `k = BLAKE3-derive-key("ignis chunk key v2", salt)`;
//! - `c = AES-256-CTR(key, iv = 0, p)` (same length as `p`);
//! - the chunk's name is `SHA-256(c)`, its [`ChunkDigest`](ignis_chunks::ChunkDigest),
//!   and it is put only if the store does not hold that name;
//! - its check, in the manifest's sealed key table beside its key, is `BLAKE3(c)`
//!   (version 1 manifests, still read, have `SHA-256(p)` there instead; their
//!   chunks' keys were `HMAC-SHA256(salt, "ignis chunk key v1" ‖ SHA-256(p))`,
//!   so the same plaintext stored by both versions is two chunks).
//!
//! Identical chunks under the same salt so encrypt identically (also across
//! accounts) and are stored once; the store sees only ciphertext.
//!
//! Why a fixed IV is safe: CTR mode breaks when one (key, IV) pair encrypts
//! two different plaintexts (the keystreams cancel out). Here a key is a
//! keyed hash of its plaintext, so a key encrypts exactly one plaintext (two
//! would be a BLAKE3 collision), and re-encrypting that same
//! plaintext gives the same ciphertext, which reveals nothing new. An IV
//! would add nothing, and a random one would defeat deduplication.
//!
//! What convergent encryption reveals, and how the salt bounds it: whoever
//! holds the ciphertexts can tell that two chunks are equal, and whoever can
//! guess a chunk's whole plaintext and knows the salt can confirm the guess.
//! The salt is `SHA-256` of the store's current root id and the operator's
//! value: a secret operator value stops confirmation by outsiders, and each
//! new root or operator value starts a fresh namespace, bounding the blast
//! radius of one bad chunk (deduplication works within one salt only). The
//! keys are not in the manifest's clear part: they travel in the encrypted
//! key table.
//!
//! An all-zero chunk (of any length) is never encrypted nor stored: the
//! manifest marks it [`ChunkName::Zero`] and a read answers zeros without a
//! fetch.
//!
//! # The manifest's integrity
//! The key table (each chunk's check and key) is sealed with
//! XChaCha20-Poly1305 under a key derived from the [`AccountKey`], with a
//! random nonce, and with the whole clear part (version, sizes, every chunk's
//! offset and name) as associated data: [`Manifest::open`] fails with
//! [`ManifestError::Unauthenticated`] if any byte of the manifest changed or
//! the key is another account's, and nothing is read from a manifest that
//! does not open. [`Manifest::decode`] checks, without a key, the structure
//! and a trailing SHA-256 of the encoding (damage and naive edits:
//! [`ManifestError::Corrupt`]); a keyless reader such as garbage collection
//! that must trust the names against deliberate edits compares
//! [`Manifest::digest`] with the digest recorded where the manifest is
//! referenced.
//!
//! # Invariants
//! - [`read_chunk`] never answers bytes other than the chunk's plaintext as
//!   it was stored: the fetched ciphertext is checked against its BLAKE3
//!   hash in the authenticated key table before it is decrypted with the
//!   authenticated key (version 1: the decrypted bytes against the
//!   authenticated plaintext hash), so the store need not check it; any
//!   mismatch or absence is a [`ReadError`], `Corrupt` if the bytes do not
//!   hash to their name either, else `WrongPlaintext`.
//! - A manifest's chunks cover `0..image_bytes` in order, each
//!   `chunk_bytes` long but the last; `decode` refuses any other layout.

mod chunking;
mod crypto;
pub mod erofs;
pub mod flatten;
mod manifest;
mod prepare;
pub mod seam;
mod service;

#[cfg(test)]
mod tests;

pub use chunking::{ChunkStats, Chunked, ChunkingError, IN_FLIGHT, ReadError, chunk_and_store, read_chunk};
pub use crypto::{AccountKey, Salt};
pub use manifest::{ChunkName, ChunkRef, FORMAT_VERSION, Manifest, ManifestError, Opened};
pub use prepare::{PrepareError, PrepareOptions, Prepared, prepare};
pub use service::{ACCOUNT_KEY_PURPOSE, AccountKeys, CollectReport, ImageManifest, Images, ImagesConfig, ImagesError, PrepareReport};
pub use seam::{ImagePreparer, PrepareFuture, PreparedImage, PreparerError};
