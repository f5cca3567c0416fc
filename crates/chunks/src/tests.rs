//! The contract of [`ChunkStore`], checked against every implementation
//! through the trait by one helper, [`check`] (the S3 store on a Garage each
//! test starts: see [`garage`]); then what only the directory store has (its
//! temp files, its files on disk, several stores on one directory).

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use super::*;

/// One implementation under test, with a way to damage a stored chunk.
struct Subject {
    name: &'static str,
    store: Arc<dyn ChunkStore>,
    /// Flips one byte of the stored chunk, as damage on disk would.
    tamper: Box<dyn Fn(ChunkDigest) -> BoxFuture<'static, ()> + Send + Sync>,
    /// Whether exactly one of concurrent puts of a chunk answers new (else at least one does: S3 over a backend
    /// that ignores `If-None-Match`).
    one_new: bool,
}

/// A fresh store of every implementation, with what must outlive it (a temp directory, a Garage).
async fn subjects() -> Vec<(Subject, Box<dyn std::any::Any>)> {
    let memory = Arc::new(MemoryChunkStore::new());
    let dir = tempfile::tempdir().unwrap();
    let directory = Arc::new(DirectoryChunkStore::open(dir.path()).unwrap());
    let root = dir.path().to_path_buf();
    let garage = garage::Garage::start().unwrap();
    let s3 = S3Roots::new(garage.options("tests")).unwrap().store("ab").unwrap();
    vec![
        (
            Subject {
                name: "memory",
                store: memory.clone(),
                tamper: Box::new(move |d| {
                    assert!(memory.tamper(d, flip));
                    Box::pin(async {})
                }),
                one_new: true,
            },
            Box::new(()),
        ),
        (
            Subject {
                name: "directory",
                store: directory,
                tamper: Box::new(move |d| {
                    let path = chunk_path(&root, d);
                    std::fs::write(&path, flip(&std::fs::read(&path).unwrap())).unwrap();
                    Box::pin(async {})
                }),
                one_new: true,
            },
            Box::new(dir),
        ),
        (
            Subject {
                name: "s3",
                store: s3.clone(),
                tamper: Box::new(move |d| {
                    let s3 = s3.clone();
                    Box::pin(async move {
                        let bytes = s3.get(d).await.unwrap();
                        s3.overwrite(d, flip(&bytes)).await;
                    })
                }),
                one_new: false,
            },
            Box::new(garage),
        ),
    ]
}

/// Runs `scenario` against a fresh store of every implementation.
async fn check<F: Future<Output = ()>>(scenario: impl Fn(Subject) -> F) {
    for (subject, keep) in subjects().await {
        scenario(subject).await;
        drop(keep);
    }
}

fn flip(bytes: &[u8]) -> Vec<u8> {
    let mut bytes = bytes.to_vec();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    bytes
}

/// `len` bytes that differ with `seed` (xorshift).
fn chunk(seed: u64, len: usize) -> Bytes {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn chunk_path(root: &Path, d: ChunkDigest) -> std::path::PathBuf {
    root.join(&d.to_string()[..2]).join(d.to_string())
}

#[tokio::test]
async fn a_chunk_comes_back_as_it_went_in() {
    check(|s| async move {
        let bytes = chunk(1, CHUNK_BYTES);
        let stored = s.store.put(bytes.clone()).await.unwrap();
        assert_eq!(stored, Stored { digest: ChunkDigest::of(&bytes), new: true }, "{}", s.name);
        assert_eq!(s.store.get(stored.digest).await.unwrap(), bytes, "{}", s.name);
        assert!(s.store.has(stored.digest).await.unwrap(), "{}", s.name);
        assert_eq!(s.store.size().await.unwrap(), Size { chunks: 1, bytes: CHUNK_BYTES as u64 }, "{}", s.name);
        let empty = s.store.put(Bytes::new()).await.unwrap();
        assert_eq!(s.store.get(empty.digest).await.unwrap(), Bytes::new(), "{}", s.name);
    })
    .await;
}

#[tokio::test]
async fn a_second_put_of_a_chunk_stores_nothing() {
    check(|s| async move {
        let bytes = chunk(2, 1000);
        let first = s.store.put(bytes.clone()).await.unwrap();
        let second = s.store.put(bytes.clone()).await.unwrap();
        assert_eq!(second, Stored { digest: first.digest, new: false }, "{}", s.name);
        assert_eq!(s.store.size().await.unwrap(), Size { chunks: 1, bytes: 1000 }, "{}", s.name);
        assert_eq!(s.store.get(first.digest).await.unwrap(), bytes, "{}", s.name);
    })
    .await;
}

#[tokio::test]
async fn a_missing_chunk_is_not_found() {
    check(|s| async move {
        let present = s.store.put(chunk(3, 100)).await.unwrap().digest;
        let absent = ChunkDigest::of(b"never stored");
        assert!(matches!(s.store.get(absent).await, Err(ChunkError::NotFound(d)) if d == absent), "{}", s.name);
        assert!(!s.store.has(absent).await.unwrap(), "{}", s.name);
        let held = s.store.contains(&[present, absent, present]).await.unwrap();
        assert_eq!(held, [true, false, true], "{}", s.name);
        assert_eq!(s.store.contains(&[]).await.unwrap(), Vec::<bool>::new(), "{}", s.name);
        assert!(!s.store.delete(absent).await.unwrap(), "{}", s.name);
    })
    .await;
}

#[tokio::test]
async fn a_damaged_chunk_is_detected_on_read_and_replaced_by_delete_and_put() {
    check(|s| async move {
        let bytes = chunk(4, CHUNK_BYTES);
        let d = s.store.put(bytes.clone()).await.unwrap().digest;
        (s.tamper)(d).await;
        assert!(matches!(s.store.get(d).await, Err(ChunkError::Corrupt(c)) if c == d), "{}", s.name);
        assert!(s.store.has(d).await.unwrap(), "{}: a corrupt chunk is still held", s.name);
        assert!(s.store.delete(d).await.unwrap(), "{}", s.name);
        assert!(s.store.put(bytes.clone()).await.unwrap().new, "{}", s.name);
        assert_eq!(s.store.get(d).await.unwrap(), bytes, "{}", s.name);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_puts_of_one_chunk_store_it_once() {
    check(|s| async move {
        let bytes = chunk(5, CHUNK_BYTES);
        let puts: Vec<_> = (0..16)
            .map(|_| {
                let (store, bytes) = (s.store.clone(), bytes.clone());
                tokio::spawn(async move { store.put(bytes).await.unwrap() })
            })
            .collect();
        let mut new = 0;
        for put in puts {
            let stored = put.await.unwrap();
            assert_eq!(stored.digest, ChunkDigest::of(&bytes), "{}", s.name);
            new += usize::from(stored.new);
        }
        match s.one_new {
            true => assert_eq!(new, 1, "{}: exactly one put stored it", s.name),
            false => assert!(new >= 1, "{}: at least one put stored it", s.name),
        }
        assert_eq!(s.store.get(ChunkDigest::of(&bytes)).await.unwrap(), bytes, "{}", s.name);
        assert_eq!(s.store.all().await.unwrap(), [ChunkDigest::of(&bytes)], "{}", s.name);
    })
    .await;
}

#[tokio::test]
async fn a_deleted_chunk_is_gone_and_the_others_stay() {
    check(|s| async move {
        let a = s.store.put(chunk(6, 300)).await.unwrap().digest;
        let b = s.store.put(chunk(7, 200)).await.unwrap().digest;
        assert!(s.store.delete(a).await.unwrap(), "{}", s.name);
        assert!(!s.store.delete(a).await.unwrap(), "{}: a second delete finds nothing", s.name);
        assert!(matches!(s.store.get(a).await, Err(ChunkError::NotFound(_))), "{}", s.name);
        assert_eq!(s.store.all().await.unwrap(), [b], "{}", s.name);
        assert_eq!(s.store.size().await.unwrap(), Size { chunks: 1, bytes: 200 }, "{}", s.name);
    })
    .await;
}

#[tokio::test]
async fn listing_pages_through_every_chunk_once_in_order() {
    check(|s| async move {
        let mut digests = Vec::new();
        for seed in 0..50 {
            digests.push(s.store.put(chunk(100 + seed, 64)).await.unwrap().digest);
        }
        digests.sort();
        let mut paged = Vec::new();
        loop {
            let page = s.store.list(paged.last().copied(), 7).await.unwrap();
            assert!(page.len() <= 7, "{}", s.name);
            if page.is_empty() {
                break;
            }
            paged.extend(page);
        }
        assert_eq!(paged, digests, "{}", s.name);
        assert_eq!(s.store.all().await.unwrap(), digests, "{}", s.name);
        assert_eq!(s.store.list(None, 0).await.unwrap(), [], "{}", s.name);
        assert_eq!(s.store.list(Some(digests[10]), 2).await.unwrap(), digests[11..13], "{}", s.name);
        // `after` need not be a stored chunk.
        let between = ChunkDigest::from_bytes([digests[20].as_bytes()[0]; 32]);
        let expected: Vec<_> = digests.iter().copied().filter(|d| *d > between).take(3).collect();
        assert_eq!(s.store.list(Some(between), 3).await.unwrap(), expected, "{}", s.name);
    })
    .await;
}

#[tokio::test]
async fn a_chunk_over_the_limit_is_refused_and_stores_nothing() {
    check(|s| async move {
        let over = chunk(8, DEFAULT_MAX_CHUNK_BYTES + 1);
        let refused = s.store.put(over.clone()).await;
        assert!(
            matches!(refused, Err(ChunkError::TooLarge { len, max }) if len == over.len() && max == DEFAULT_MAX_CHUNK_BYTES),
            "{}: {refused:?}",
            s.name
        );
        assert!(!s.store.has(ChunkDigest::of(&over)).await.unwrap(), "{}", s.name);
        assert_eq!(s.store.size().await.unwrap(), Size::default(), "{}", s.name);
        assert!(s.store.put(chunk(8, DEFAULT_MAX_CHUNK_BYTES)).await.unwrap().new, "{}: the limit itself fits", s.name);
    })
    .await;
}

#[test]
fn a_digest_has_one_text_form() {
    let empty = ChunkDigest::of(b"");
    let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    assert_eq!(empty.to_string(), hex);
    assert_eq!(format!("{empty:?}"), format!("ChunkDigest({hex})"));
    assert_eq!(hex.parse::<ChunkDigest>(), Ok(empty));
    for bad in [
        &hex.to_uppercase(),
        &hex[..63],
        &format!("{hex}0"),
        &format!("{}g", &hex[..63]),
        "",
        &format!(" {}", &hex[1..]),
    ] {
        assert_eq!(bad.parse::<ChunkDigest>(), Err(ParseDigestError(bad.to_string())), "{bad:?}");
    }
    assert_eq!(ChunkDigest::from_bytes(*empty.as_bytes()), empty);
}

#[test]
fn the_store_is_object_safe() {
    let stores: Vec<Arc<dyn ChunkStore>> = vec![Arc::new(MemoryChunkStore::new())];
    assert_eq!(stores.len(), 1);
}

// The directory store's own ways.

fn tmp(root: &Path) -> std::path::PathBuf {
    root.join("tmp")
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn chunks_outlive_the_store_that_put_them() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = chunk(9, 4096);
    let d = DirectoryChunkStore::open(dir.path()).unwrap().put(bytes.clone()).await.unwrap().digest;
    let reopened = DirectoryChunkStore::open(dir.path()).unwrap();
    assert_eq!(reopened.get(d).await.unwrap(), bytes);
    assert_eq!(std::fs::read(chunk_path(dir.path(), d)).unwrap(), bytes, "the file is the chunk, named by its digest");
}

#[tokio::test]
async fn open_removes_the_temp_files_of_stores_that_are_gone_and_only_those() {
    let dir = tempfile::tempdir().unwrap();
    let live = DirectoryChunkStore::open(dir.path()).unwrap();
    let tmp = tmp(dir.path());
    // A store that died mid-put (its lock file unlocked, a partial temp file),
    // a cleanup cut short (a temp file with no lock file), and a put of the live store in flight.
    std::fs::write(tmp.join("dead.lock"), b"").unwrap();
    std::fs::write(tmp.join("dead.0"), &chunk(10, 100)[..50]).unwrap();
    std::fs::write(tmp.join("orphan.3"), b"partial").unwrap();
    let in_flight = format!("{}.99", live.owner());
    std::fs::write(tmp.join(&in_flight), b"partial").unwrap();

    let second = DirectoryChunkStore::open(dir.path()).unwrap();
    let mut expected = vec![format!("{}.lock", live.owner()), in_flight, format!("{}.lock", second.owner())];
    expected.sort();
    assert_eq!(names(&tmp), expected);
    assert_eq!(second.size().await.unwrap(), Size::default(), "temp files are never chunks");

    drop(second);
    drop(live);
    DirectoryChunkStore::open(dir.path()).unwrap();
    assert_eq!(
        names(&tmp),
        Vec::<String>::new(),
        "a dropped store leaves no lock file; its stray temp file is removed"
    );
}

#[tokio::test]
async fn files_that_are_not_chunks_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let store = DirectoryChunkStore::open(dir.path()).unwrap();
    let d = store.put(chunk(11, 10)).await.unwrap().digest;
    let prefix = &d.to_string()[..2];
    let other = if prefix == "00" { "01" } else { "00" };
    // A name in the wrong fan-out directory, a name that is not a digest, and a file at the root.
    std::fs::write(dir.path().join(other).join(d.to_string()), b"x").unwrap();
    std::fs::write(dir.path().join(prefix).join(format!("{d}.tmp")), b"x").unwrap();
    std::fs::write(dir.path().join("README"), b"x").unwrap();
    assert_eq!(store.all().await.unwrap(), [d]);
    assert_eq!(store.size().await.unwrap(), Size { chunks: 1, bytes: 10 });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stores_sharing_a_directory_store_a_chunk_once() {
    let dir = tempfile::tempdir().unwrap();
    let stores: Vec<Arc<dyn ChunkStore>> =
        (0..4).map(|_| Arc::new(DirectoryChunkStore::open(dir.path()).unwrap()) as Arc<dyn ChunkStore>).collect();
    let bytes = chunk(12, CHUNK_BYTES);
    let puts: Vec<_> = (0..16)
        .map(|i| {
            let (store, bytes) = (stores[i % stores.len()].clone(), bytes.clone());
            tokio::spawn(async move { store.put(bytes).await.unwrap().new })
        })
        .collect();
    let mut new = 0;
    for put in puts {
        new += usize::from(put.await.unwrap());
    }
    assert_eq!(new, 1);
    for store in &stores {
        assert_eq!(store.get(ChunkDigest::of(&bytes)).await.unwrap(), bytes);
    }
    let temps = names(&tmp(dir.path()));
    assert!(temps.iter().all(|n| n.ends_with(".lock")), "no temp file is left after the puts: {temps:?}");
}

#[tokio::test]
async fn a_smaller_limit_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let garage = garage::Garage::start().unwrap();
    let s3 = S3Roots::new(S3Options { max_chunk_bytes: 10, ..garage.options("") }).unwrap();
    let stores: [Arc<dyn ChunkStore>; 3] = [
        Arc::new(MemoryChunkStore::with_max_chunk_bytes(10)),
        Arc::new(DirectoryChunkStore::open_with_max_chunk_bytes(dir.path(), 10).unwrap()),
        s3.root("aa").unwrap(),
    ];
    for store in stores {
        assert!(matches!(store.put(chunk(13, 11)).await, Err(ChunkError::TooLarge { len: 11, max: 10 })));
        assert!(store.put(chunk(13, 10)).await.unwrap().new);
    }
}

// The S3 store's own ways.

#[tokio::test]
async fn deleting_an_s3_root_deletes_every_object_under_its_prefix_and_nothing_else() {
    let garage = garage::Garage::start().unwrap();
    let roots = S3Roots::new(garage.options("ignis/chunks")).unwrap();
    let other_prefix = S3Roots::new(garage.options("other")).unwrap();
    let mut kept = Vec::new();
    for (seed, store) in [roots.root("aa").unwrap(), roots.root("aab").unwrap(), other_prefix.root("aa").unwrap()]
        .into_iter()
        .enumerate()
    {
        kept.push((store.clone(), store.put(chunk(20 + seed as u64, 100)).await.unwrap().digest));
    }
    let doomed = roots.store("aa").unwrap();
    for seed in 0..30 {
        doomed.put(chunk(30 + seed, 10)).await.unwrap();
    }
    doomed.put_other("not-a-chunk").await;
    assert_eq!(doomed.size().await.unwrap().chunks, 31, "an object that is not a chunk is not counted");

    roots.delete_root("aa").await.unwrap();
    assert_eq!(roots.root("aa").unwrap().all().await.unwrap(), []);
    assert_eq!(roots.root("aa").unwrap().size().await.unwrap(), Size::default());
    let (_, first) = kept.remove(0);
    assert!(!roots.root("aa").unwrap().has(first).await.unwrap());
    for (store, digest) in kept {
        assert_eq!(store.all().await.unwrap(), [digest], "a root named alike or under another prefix stays");
    }
    roots.delete_root("cc").await.unwrap();
    assert!(roots.delete_root("../aa").await.is_err());
}

#[tokio::test]
async fn a_wrong_key_or_bucket_is_a_backend_error() {
    let garage = garage::Garage::start().unwrap();
    let wrong_key = S3Options { secret_access_key: "0".repeat(64), ..garage.options("") };
    let store = S3Roots::new(wrong_key).unwrap().root("aa").unwrap();
    assert!(matches!(store.get(ChunkDigest::of(b"x")).await, Err(ChunkError::Backend { .. })));
    assert!(matches!(store.has(ChunkDigest::of(b"x")).await, Err(ChunkError::Backend { .. })));
    assert!(matches!(store.put(Bytes::from_static(b"x")).await, Err(ChunkError::Backend { .. })));
    assert!(matches!(store.list(None, 10).await, Err(ChunkError::Backend { .. })));
    // A missing bucket answers 404 to a read, as a missing chunk would; a write or a listing says what is wrong.
    let wrong_bucket = S3Options { bucket: "no-such-bucket".into(), ..garage.options("") };
    let store = S3Roots::new(wrong_bucket).unwrap().root("aa").unwrap();
    assert!(matches!(store.put(Bytes::from_static(b"x")).await, Err(ChunkError::Backend { .. })));
    assert!(matches!(store.list(None, 10).await, Err(ChunkError::Backend { .. })));
}

#[tokio::test]
async fn an_s3_service_that_does_not_answer_fails_each_call_within_its_time_limit() {
    // Connections are accepted (by the kernel, into the backlog) and never answered.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let options = S3Options {
        timeout: std::time::Duration::from_millis(300),
        ..S3Options::new("bucket", "", "garage", "GKkey", "secret").with_endpoint(&endpoint)
    };
    let store = S3Roots::new(options).unwrap().root("aa").unwrap();
    let digest = ChunkDigest::of(b"x");
    assert!(matches!(store.get(digest).await, Err(ChunkError::Backend { .. })));
    assert!(matches!(store.put(Bytes::from_static(b"x")).await, Err(ChunkError::Backend { .. })));
    assert!(matches!(store.contains(&[digest]).await, Err(ChunkError::Backend { .. })));
    assert!(matches!(store.size().await, Err(ChunkError::Backend { .. })));
}
