//! Chunking and reading over both local chunk stores; each check runs once
//! over [`MemoryChunkStore`] and once over [`DirectoryChunkStore`].

use std::pin::Pin;
use std::task::{Context, Poll};

use ignis_chunks::{CHUNK_BYTES, ChunkDigest, ChunkStore, DirectoryChunkStore, MemoryChunkStore};
use tokio::io::{AsyncRead, ReadBuf};

use crate::*;

const MIB: usize = 1024 * 1024;

/// `len` pseudo-random bytes (xorshift), the same for the same seed.
pub(crate) fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn salt() -> Salt {
    Salt::new("root-1", None)
}

fn alice() -> AccountKey {
    AccountKey::from_bytes([1; 32])
}

fn bob() -> AccountKey {
    AccountKey::from_bytes([2; 32])
}

/// A reader that answers at most 10 000 bytes per read, as a socket or a
/// pipe would: chunk boundaries never line up with reads.
struct Trickle<'a>(&'a [u8]);

impl AsyncRead for Trickle<'_> {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let n = self.0.len().min(buf.remaining()).min(10_000);
        buf.put_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Poll::Ready(Ok(()))
    }
}

async fn chunk(image: &[u8], store: &dyn ChunkStore, salt: &Salt, account: &AccountKey) -> Chunked {
    chunk_and_store(Trickle(image), store, salt, account).await.expect("chunk and store")
}

/// The whole image read back chunk by chunk.
async fn read_all(manifest: &Manifest, store: &dyn ChunkStore, account: &AccountKey) -> Vec<u8> {
    let opened = manifest.open(account).expect("open");
    let mut out = Vec::new();
    for index in 0..manifest.chunks().len() {
        out.extend_from_slice(&opened.read_chunk(index, store).await.expect("read chunk"));
    }
    out
}

async fn held(store: &dyn ChunkStore) -> u64 {
    store.size().await.expect("size").chunks
}

/// Runs `check` over a memory store and over a directory store.
macro_rules! over_both_stores {
    ($($check:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::$check(&super::MemoryChunkStore::new()).await;
                }
            )*
        }
        mod directory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let store = super::DirectoryChunkStore::open(dir.path()).expect("open store");
                    super::$check(&store).await;
                }
            )*
        }
    };
}

over_both_stores!(
    round_trip,
    same_image_twice_stores_nothing_new,
    shared_prefix_shares_chunks,
    zero_chunks_are_not_stored,
    another_account_cannot_open,
    tampered_manifest_is_refused,
    missing_chunk_is_an_error,
    another_salt_gives_other_names,
);

async fn round_trip(store: &dyn ChunkStore) {
    let image = random(3 * MIB + 12_345, 1);
    let Chunked { manifest, stats } = chunk(&image, store, &salt(), &alice()).await;
    assert_eq!(manifest.image_bytes(), image.len() as u64);
    assert_eq!(manifest.chunk_bytes() as usize, CHUNK_BYTES);
    assert_eq!(manifest.chunks().len(), 7);
    let last = manifest.chunks()[6];
    assert_eq!((last.offset, last.len), (6 * CHUNK_BYTES as u64, 12_345));
    assert_eq!(stats, ChunkStats { chunks: 7, new_chunks: 7, new_bytes: image.len() as u64, ..ChunkStats::default() });
    assert_eq!(held(store).await, 7);

    let decoded = Manifest::decode(&manifest.encode()).expect("decode");
    assert_eq!(decoded, manifest);
    assert_eq!(decoded.digest(), manifest.digest());
    assert_eq!(read_all(&decoded, store, &alice()).await, image);

    // Each chunk is checked by its ciphertext's BLAKE3 hash; the store holds only ciphertext.
    assert_eq!(decoded.version(), FORMAT_VERSION);
    let opened = decoded.open(&alice()).expect("open");
    for (index, piece) in image.chunks(CHUNK_BYTES).enumerate() {
        let ChunkName::Stored(name) = decoded.chunks()[index].name else { panic!("chunk {index} is not stored") };
        let ciphertext = store.get(name).await.expect("get");
        assert_ne!(&ciphertext[..], piece);
        assert_eq!(&opened.keys[index].check, blake3::hash(&ciphertext).as_bytes());
    }
    assert!(matches!(
        read_chunk(&decoded, 7, store, &alice()).await,
        Err(ReadError::OutOfRange { index: 7, chunks: 7 })
    ));

    // The empty image: no chunks, and it reads back empty.
    let empty = chunk(&[], store, &salt(), &alice()).await;
    assert_eq!((empty.manifest.image_bytes(), empty.manifest.chunks().len()), (0, 0));
    let decoded = Manifest::decode(&empty.manifest.encode()).expect("decode the empty manifest");
    assert!(read_all(&decoded, store, &alice()).await.is_empty());
}

async fn same_image_twice_stores_nothing_new(store: &dyn ChunkStore) {
    let image = random(2 * MIB + 1, 2);
    let first = chunk(&image, store, &salt(), &alice()).await;
    let size = store.size().await.expect("size");
    let second = chunk(&image, store, &salt(), &alice()).await;
    assert_eq!(second.stats.new_chunks, 0);
    assert_eq!(second.stats.new_bytes, 0);
    assert_eq!(second.stats.deduplicated_chunks, 5);
    assert_eq!(second.stats.deduplicated_bytes, image.len() as u64);
    assert_eq!(store.size().await.expect("size"), size);
    assert!(first.manifest.chunk_names().eq(second.manifest.chunk_names()));

    // Across accounts too: the same image under the same salt is stored once,
    // and each account reads it through its own manifest.
    let bobs = chunk(&image, store, &salt(), &bob()).await;
    assert_eq!(bobs.stats.new_chunks, 0);
    assert!(first.manifest.chunk_names().eq(bobs.manifest.chunk_names()));
    assert_eq!(read_all(&bobs.manifest, store, &bob()).await, image);

    // Repeats inside one image are deduplicated as well.
    let piece = random(CHUNK_BYTES, 3);
    let repeated = [piece.clone(), piece.clone(), piece].concat();
    let before = held(store).await;
    let stats = chunk(&repeated, store, &salt(), &alice()).await.stats;
    assert_eq!((stats.new_chunks, stats.deduplicated_chunks), (1, 2));
    assert_eq!(held(store).await, before + 1);
}

async fn shared_prefix_shares_chunks(store: &dyn ChunkStore) {
    let base = random(2 * MIB, 4);
    let one = [base.clone(), random(MIB + 77, 5)].concat();
    let two = [base, random(700_000, 6)].concat();
    let first = chunk(&one, store, &salt(), &alice()).await;
    let second = chunk(&two, store, &salt(), &alice()).await;
    assert_eq!(second.stats.deduplicated_chunks, 4);
    assert_eq!(second.stats.new_chunks, 2);
    assert_eq!(second.stats.new_bytes, 700_000);
    let names = |m: &Manifest| m.chunk_names().collect::<Vec<_>>();
    assert_eq!(names(&first.manifest)[..4], names(&second.manifest)[..4]);
    assert_ne!(names(&first.manifest)[4], names(&second.manifest)[4]);
    assert_eq!(read_all(&second.manifest, store, &alice()).await, two);
    assert_eq!(read_all(&first.manifest, store, &alice()).await, one);
}

async fn zero_chunks_are_not_stored(store: &dyn ChunkStore) {
    let image = [random(CHUNK_BYTES, 7), vec![0; CHUNK_BYTES], random(CHUNK_BYTES, 8), vec![0; 1000]].concat();
    let Chunked { manifest, stats } = chunk(&image, store, &salt(), &alice()).await;
    assert_eq!((stats.chunks, stats.zero_chunks, stats.new_chunks), (4, 2, 2));
    assert_eq!(stats.zero_bytes, CHUNK_BYTES as u64 + 1000);
    assert_eq!(held(store).await, 2);
    let kinds: Vec<bool> = manifest.chunks().iter().map(|c| c.name == ChunkName::Zero).collect();
    assert_eq!(kinds, [false, true, false, true]);
    assert_eq!(manifest.chunk_names().count(), 2);
    let decoded = Manifest::decode(&manifest.encode()).expect("decode");
    assert_eq!(read_all(&decoded, store, &alice()).await, image);

    // A zero chunk reads as zeros without the store: an empty store serves it.
    let empty = MemoryChunkStore::new();
    let zeros = read_chunk(&decoded, 3, &empty, &alice()).await.expect("read a zero chunk");
    assert_eq!(zeros, vec![0u8; 1000]);
}

async fn another_account_cannot_open(store: &dyn ChunkStore) {
    let image = random(MIB + 5, 9);
    let manifest = chunk(&image, store, &salt(), &alice()).await.manifest;
    assert_eq!(manifest.open(&bob()).err(), Some(ManifestError::Unauthenticated));
    assert!(matches!(
        read_chunk(&manifest, 0, store, &bob()).await,
        Err(ReadError::Manifest(ManifestError::Unauthenticated))
    ));
    // The names need no key.
    assert_eq!(manifest.chunk_names().count(), 3);
}

/// `bytes` with its trailing checksum made right again, as an editor who
/// knows the format would.
fn rechecksummed(mut bytes: Vec<u8>) -> Vec<u8> {
    let body = bytes.len() - 32;
    let checksum = crate::crypto::sha256(&bytes[..body]);
    bytes[body..].copy_from_slice(&checksum);
    bytes
}

async fn tampered_manifest_is_refused(store: &dyn ChunkStore) {
    let image = [random(CHUNK_BYTES, 10), vec![0; CHUNK_BYTES], random(100, 11)].concat();
    let manifest = chunk(&image, store, &salt(), &alice()).await.manifest;
    let good = manifest.encode();
    // The header is 26 bytes, then 41 per chunk: offset (8), kind (1), name (32).
    let name_of_first = 26 + 8 + 1;
    let kind_of_second = 26 + 41 + 8;
    let sealed = 26 + 3 * 41 + 24 + 4;
    for at in [name_of_first, kind_of_second, sealed, good.len() - 40] {
        let mut bad = good.clone();
        bad[at] ^= 1;
        assert_eq!(Manifest::decode(&bad), Err(ManifestError::Corrupt), "byte {at} flipped");
        // Made to pass the keyless check, it still does not open.
        match Manifest::decode(&rechecksummed(bad)) {
            Ok(edited) => {
                assert_eq!(edited.open(&alice()).err(), Some(ManifestError::Unauthenticated), "byte {at} flipped");
                assert!(matches!(
                    read_chunk(&edited, 0, store, &alice()).await,
                    Err(ReadError::Manifest(ManifestError::Unauthenticated))
                ));
            }
            Err(e) => assert!(matches!(e, ManifestError::Malformed(_)), "byte {at} flipped: {e:?}"),
        }
    }
    // The image's size, made to look like one chunk less.
    let mut shorter = good.clone();
    shorter[14..22].copy_from_slice(&(2 * CHUNK_BYTES as u64).to_be_bytes());
    assert!(matches!(Manifest::decode(&rechecksummed(shorter)), Err(ManifestError::Malformed(_))));

    assert_eq!(Manifest::decode(&good[..good.len() - 1]), Err(ManifestError::Corrupt));
    assert_eq!(Manifest::decode(&good[..30]), Err(ManifestError::Truncated));
    assert_eq!(Manifest::decode(b"IGNI"), Err(ManifestError::Truncated));
    assert_eq!(Manifest::decode(b"{\"not\": \"a manifest\"}"), Err(ManifestError::NotAManifest));
    for version in [0, FORMAT_VERSION + 1, 0x0100] {
        let mut other = good.clone();
        other[8..10].copy_from_slice(&version.to_be_bytes());
        assert_eq!(Manifest::decode(&other), Err(ManifestError::UnsupportedVersion(version)));
    }
    let mut longer = good.clone();
    longer.extend_from_slice(&[0; 32]);
    assert_eq!(Manifest::decode(&rechecksummed(longer)), Err(ManifestError::Malformed("bytes after the key table")));
    assert_eq!(Manifest::decode(&good).as_ref(), Ok(&manifest));
}

/// `bytes` with its first byte changed.
fn flipped(bytes: &[u8]) -> Vec<u8> {
    [&[bytes[0] ^ 1], &bytes[1..]].concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_chunk_in_memory() {
    let store = MemoryChunkStore::new();
    tampered_chunk_is_an_error(&store, |name| assert!(store.tamper(name, flipped))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_chunk_in_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = DirectoryChunkStore::open(dir.path()).expect("open store");
    tampered_chunk_is_an_error(&store, |name| {
        let hex = name.to_string();
        let path = dir.path().join(&hex[..2]).join(&hex);
        let bytes = std::fs::read(&path).expect("read the chunk's file");
        std::fs::write(&path, flipped(&bytes)).expect("write the chunk's file");
    })
    .await;
}

/// `tamper` changes a stored chunk's bytes behind the store's back.
async fn tampered_chunk_is_an_error(store: &dyn ChunkStore, tamper: impl Fn(ChunkDigest)) {
    let image = random(2 * CHUNK_BYTES, 12);
    let manifest = chunk(&image, store, &salt(), &alice()).await.manifest;
    let ChunkName::Stored(name) = manifest.chunks()[1].name else { panic!("chunk 1 is not stored") };
    tamper(name);
    assert!(matches!(
        read_chunk(&manifest, 1, store, &alice()).await,
        Err(ReadError::Corrupt { index: 1, name: n }) if n == name
    ));
    assert_eq!(read_chunk(&manifest, 0, store, &alice()).await.expect("chunk 0"), &image[..CHUNK_BYTES]);
}

/// A chunk whose bytes match its name but belong to another manifest's
/// entry: the plaintext check catches it (the store's hash check cannot).
#[tokio::test]
async fn a_chunk_under_the_wrong_key_is_refused() {
    let store = MemoryChunkStore::new();
    let image = random(2 * CHUNK_BYTES, 15);
    let manifest = chunk(&image, &store, &salt(), &alice()).await.manifest;
    let opened = manifest.open(&alice()).expect("open");
    let (first, second) = (manifest.chunks()[0], opened.keys[1]);
    assert!(matches!(
        crate::chunking::read_with(0, first, second, manifest.check(), &store).await,
        Err(ReadError::WrongPlaintext { index: 0 })
    ));
}

async fn missing_chunk_is_an_error(store: &dyn ChunkStore) {
    let image = random(CHUNK_BYTES + 10, 13);
    let manifest = chunk(&image, store, &salt(), &alice()).await.manifest;
    let ChunkName::Stored(name) = manifest.chunks()[1].name else { panic!("chunk 1 is not stored") };
    assert!(store.delete(name).await.expect("delete"));
    assert!(matches!(
        read_chunk(&manifest, 1, store, &alice()).await,
        Err(ReadError::Missing { index: 1, name: n }) if n == name
    ));
    assert_eq!(read_chunk(&manifest, 0, store, &alice()).await.expect("chunk 0"), &image[..CHUNK_BYTES]);
}

async fn another_salt_gives_other_names(store: &dyn ChunkStore) {
    let image = random(MIB, 14);
    let names = |c: &Chunked| c.manifest.chunk_names().collect::<Vec<_>>();
    let one = chunk(&image, store, &Salt::new("root-1", None), &alice()).await;
    let next_root = chunk(&image, store, &Salt::new("root-2", None), &alice()).await;
    let operator = chunk(&image, store, &Salt::new("root-1", Some(b"blast radius 7")), &alice()).await;
    let empty_operator = chunk(&image, store, &Salt::new("root-1", Some(b"")), &alice()).await;
    for other in [&next_root, &operator, &empty_operator] {
        assert_eq!(other.stats.new_chunks, 2);
        assert!(names(other).iter().all(|n| !names(&one).contains(n)));
        assert_eq!(read_all(&other.manifest, store, &alice()).await, image);
    }
    assert_eq!(held(store).await, 8);
}

/// `manifest` of `image` as version 1 sealed it: each chunk checked by its plaintext's SHA-256.
fn as_version_1(manifest: &Manifest, image: &[u8]) -> Manifest {
    let opened = manifest.open(&alice()).expect("open");
    let keys: Vec<_> = (opened.keys.iter().zip(image.chunks(CHUNK_BYTES)))
        .map(|(entry, piece)| crate::manifest::KeyEntry { check: crate::crypto::sha256(piece), key: entry.key })
        .collect();
    let chunks = manifest.chunks().to_vec();
    Manifest::seal(1, manifest.image_bytes(), manifest.chunk_bytes(), chunks, &keys, &alice()).expect("seal")
}

/// A version 1 manifest (plaintext hashes in its key table) still reads, keeps its bytes and digest, and
/// tells a tampered chunk and a chunk under the wrong key apart as version 2 does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_1_manifests_still_read() {
    let store = MemoryChunkStore::new();
    let image = [random(2 * CHUNK_BYTES, 16), vec![0; CHUNK_BYTES], random(999, 17)].concat();
    let manifest = as_version_1(&chunk(&image, &store, &salt(), &alice()).await.manifest, &image);
    let encoded = manifest.encode();
    assert_eq!(&encoded[8..10], &[0, 1]);
    let decoded = Manifest::decode(&encoded).expect("decode version 1");
    assert_eq!((decoded.version(), decoded.encode(), decoded.digest()), (1, encoded, manifest.digest()));
    assert_eq!(read_all(&decoded, &store, &alice()).await, image);

    let opened = decoded.open(&alice()).expect("open");
    let (first, second) = (decoded.chunks()[0], opened.keys[1]);
    assert!(matches!(
        crate::chunking::read_with(0, first, second, decoded.check(), &store).await,
        Err(ReadError::WrongPlaintext { index: 0 })
    ));
    let ChunkName::Stored(name) = decoded.chunks()[1].name else { panic!("chunk 1 is not stored") };
    assert!(store.tamper(name, flipped));
    assert!(matches!(
        read_chunk(&decoded, 1, &store, &alice()).await,
        Err(ReadError::Corrupt { index: 1, name: n }) if n == name
    ));
    assert_eq!(read_chunk(&decoded, 0, &store, &alice()).await.expect("chunk 0"), &image[..CHUNK_BYTES]);
}
