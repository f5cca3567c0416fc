//! End-to-end tests of lazy images (root: FUSE, mounts): an EROFS image made with `mkfs.erofs` from a tree of
//! files, chunked into a directory chunk store, mounted lazily and read back through a sandbox's tree.

use std::ffi::CString;
use std::io::{BufRead as _, Read as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ignis_chunks::{CHUNK_BYTES, ChunkStore, DirectoryChunkStore};
use ignis_images::{AccountKey, ChunkName, Manifest, Salt, chunk_and_store};
use ignis_sandbox::code::{fd_syscall, fsconfig};

use crate::cache::Image;
use crate::{ImageFs, ImageFsConfig, LoadError};

/// Bytes from splitmix64 over a counter: "random" content that neither compresses nor repeats, different for
/// each seed.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let word = |i: u64| {
        let mut z = (seed << 40 | i).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    (0..len).map(|i| (word(i as u64 / 8) >> (8 * (i % 8))) as u8).collect()
}

/// The source tree: small files, files over 1 MiB of noise, a repeated pattern, a sparse file of zeros.
fn source_tree(dir: &Path) {
    std::fs::write(dir.join("small.txt"), "hello from a lazily loaded image\n").unwrap();
    std::fs::write(dir.join("noise-a.bin"), noise(1, 1_500_000)).unwrap();
    std::fs::write(dir.join("noise-b.bin"), noise(2, 3 * 1024 * 1024 + 17)).unwrap();
    std::fs::write(dir.join("repeated.bin"), b"ignis ".repeat(400_000)).unwrap();
    let sparse = std::fs::File::create(dir.join("sparse.bin")).unwrap();
    sparse.set_len(4 * 1024 * 1024).unwrap();
    std::fs::create_dir(dir.join("lib")).unwrap();
    std::fs::write(dir.join("lib/module.py"), "print('hi')\n".repeat(50)).unwrap();
    std::fs::write(dir.join("lib/noise-c.bin"), noise(3, 700_000)).unwrap();
}

/// Every regular file under `dir`, as paths relative to it.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        for entry in std::fs::read_dir(dir.join(&rel)).unwrap() {
            let entry = entry.unwrap();
            let path = rel.join(entry.file_name());
            match entry.file_type().unwrap().is_dir() {
                true => pending.push(path),
                false => out.push(path),
            }
        }
    }
    out.sort();
    out
}

/// Reads `rel` through the detached mount `tree`.
fn read_in(tree: &OwnedFd, rel: &Path) -> std::io::Result<Vec<u8>> {
    let name = CString::new(rel.to_str().unwrap()).unwrap();
    // SAFETY: valid fd and NUL-terminated relative path.
    let fd = unsafe { libc::openat(tree.as_raw_fd(), name.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: just opened; ours.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// An image of a source tree, chunked into a directory store, with a runtime to fetch on.
struct Fixture {
    // Dropped in this order: the runtime last but one, the directories last.
    runtime: tokio::runtime::Runtime,
    store: Arc<DirectoryChunkStore>,
    manifest: Manifest,
    key: AccountKey,
    image: Vec<u8>,
    source: tempfile::TempDir,
    _store_dir: tempfile::TempDir,
    cache_dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let source = tempfile::tempdir().unwrap();
        source_tree(source.path());
        let work = tempfile::tempdir().unwrap();
        let image_path = work.path().join("image.erofs");
        let out = std::process::Command::new("mkfs.erofs")
            .args(["--quiet", "-x-1"])
            .arg(&image_path)
            .arg(source.path())
            .output()
            .expect("run mkfs.erofs (erofs-utils)");
        assert!(out.status.success(), "mkfs.erofs: {}", String::from_utf8_lossy(&out.stderr));
        let image = std::fs::read(&image_path).unwrap();
        let store_dir = tempfile::tempdir().unwrap();
        let store = Arc::new(DirectoryChunkStore::open(store_dir.path()).unwrap());
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let key = AccountKey::from_bytes([7; 32]);
        let chunked = runtime
            .block_on(chunk_and_store(&image[..], &*store, &Salt::new("test-root", None), &key))
            .unwrap();
        Fixture {
            runtime,
            store,
            manifest: chunked.manifest,
            key,
            image,
            source,
            _store_dir: store_dir,
            cache_dir: tempfile::tempdir().unwrap(),
        }
    }

    fn imagefs(&self, cache_bytes: u64) -> ImageFs {
        let mut config = ImageFsConfig::new(self.cache_dir.path(), cache_bytes);
        config.memory_bytes = cache_bytes;
        ImageFs::new(config, self.runtime.handle().clone()).unwrap()
    }

    /// The store, as a mount takes it.
    fn store(&self) -> Arc<dyn ChunkStore> {
        self.store.clone()
    }

    fn stored_chunks(&self) -> usize {
        self.manifest.chunk_names().count()
    }

    /// The index of a stored chunk that lies wholly inside `rel`'s data (found by its content in the image).
    fn chunk_inside(&self, rel: &str) -> usize {
        let content = std::fs::read(self.source.path().join(rel)).unwrap();
        let probe = &content[..4096];
        let at = self.image.windows(probe.len()).position(|w| w == probe).expect("the file's data in the image");
        let index = at.div_ceil(CHUNK_BYTES);
        assert!((index + 1) * CHUNK_BYTES <= at + content.len(), "{rel} holds no whole chunk");
        assert!(matches!(self.manifest.chunks()[index].name, ChunkName::Stored(_)));
        index
    }

    /// Overwrites bytes of chunk `index` in the directory store.
    fn tamper(&self, index: usize) {
        let ChunkName::Stored(name) = self.manifest.chunks()[index].name else { panic!("a zero chunk") };
        let hex = name.to_string();
        let path = self.store.root().join(&hex[..2]).join(&hex);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[100] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    }

    /// Every file of the source read through `tree` equals the source's.
    fn check_all(&self, tree: &OwnedFd) {
        for rel in files(self.source.path()) {
            let want = std::fs::read(self.source.path().join(&rel)).unwrap();
            let got = read_in(tree, &rel).unwrap_or_else(|e| panic!("reading {}: {e}", rel.display()));
            assert!(got == want, "{} differs ({} bytes read, {} expected)", rel.display(), got.len(), want.len());
        }
    }
}

/// The live FUSE connections' numbers, from a detached mount of the `fusectl` filesystem (whether or not the
/// host has one mounted).
fn fuse_connections() -> Vec<u32> {
    // SAFETY: valid NUL-terminated name.
    let fs = fd_syscall(unsafe { libc::syscall(libc::SYS_fsopen, c"fusectl".as_ptr(), 1) }).unwrap();
    fsconfig(&fs, 6, None, None).unwrap();
    // SAFETY: valid fd.
    let mount = fd_syscall(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), 1, 0) }).unwrap();
    let dir = format!("/proc/self/fd/{}", mount.as_raw_fd());
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap()).collect()
}

/// Lines of a mount table that name this crate's filesystems.
fn our_mounts(mountinfo: &str) -> Vec<String> {
    let text = std::fs::read_to_string(mountinfo).unwrap();
    text.lines().filter(|l| l.contains("ignis-imagefs") || l.contains(" - fuse ")).map(String::from).collect()
}

/// Waits (up to a generous bound) until `done`.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Nothing of connection `connection` is left: no fusectl entry, nothing in this process's or the host's mount
/// tables.
fn assert_gone(connection: u32) {
    wait_until("the FUSE connection is gone", || !fuse_connections().contains(&connection));
    assert_eq!(our_mounts("/proc/self/mountinfo"), Vec::<String>::new());
    assert_eq!(our_mounts("/proc/1/mountinfo"), Vec::<String>::new());
}

#[test]
fn every_file_reads_back_and_a_small_file_fetches_few_chunks_as_root() {
    let fixture = Fixture::new();
    let connection;
    {
        let fs = fixture.imagefs(64 << 20);
        connection = fs.connection();
        assert!(fuse_connections().contains(&connection));
        let image = fs.mount("img", fixture.manifest.clone(), fixture.key.clone(), fixture.store()).unwrap();
        assert_eq!(image.image_bytes(), fixture.image.len() as u64);
        let tree = image.tree().unwrap();
        let after_mount = fs.stats();
        let small = read_in(&tree, Path::new("small.txt")).unwrap();
        assert_eq!(small, b"hello from a lazily loaded image\n");
        let after_small = fs.stats();
        let total = fixture.stored_chunks() as u64;
        assert!(total >= 12, "a big enough image: {total} stored chunks");
        assert!(after_small.chunk_fetches_total <= 3, "{after_small:?} of {total}");
        assert!(after_small.chunk_fetches_total >= after_mount.chunk_fetches_total);
        // Read again: erofs's page cache answers, nothing is fetched.
        assert_eq!(read_in(&tree, Path::new("small.txt")).unwrap(), small);
        assert_eq!(fs.stats().chunk_fetches_total, after_small.chunk_fetches_total);

        fixture.check_all(&tree);
        let all = fs.stats();
        assert_eq!(all.chunk_fetches_total, all.chunk_fetch_bytes_total.div_ceil(CHUNK_BYTES as u64));
        assert!(all.chunk_fetches_total <= total, "each chunk fetched at most once: {all:?} of {total}");
        assert_eq!((all.verify_failures_total, all.fetch_failures_total), (0, 0));
        assert!(all.memory_bytes > 0 && all.memory_bytes <= 64 << 20);
        wait_until("the fetched chunks are on disk", || fs.stats().disk_bytes == all.memory_bytes);

        // The same image mounted again while the first lives is the same mount.
        let again = fs.mount("img", fixture.manifest.clone(), fixture.key.clone(), fixture.store()).unwrap();
        assert!(Arc::ptr_eq(&image, &again));
        drop((again, image));

        // A new mount of it (a new erofs page cache) reads from the chunk cache: no fetch.
        let image = fs.mount("img", fixture.manifest.clone(), fixture.key.clone(), fixture.store()).unwrap();
        let tree2 = image.tree().unwrap();
        fixture.check_all(&tree2);
        let cached = fs.stats();
        assert_eq!(cached.chunk_fetches_total, all.chunk_fetches_total);
        assert!(cached.memory_hits_total > all.memory_hits_total);
        // Trees outlive their image and the ImageFs.
        drop((image, fs));
        fixture.check_all(&tree);
        drop((tree, tree2));
    }
    assert_gone(connection);
}

#[test]
fn a_tampered_chunk_fails_its_file_with_eio_and_nothing_else_as_root() {
    let fixture = Fixture::new();
    let index = fixture.chunk_inside("noise-b.bin");
    fixture.tamper(index);
    let fs = fixture.imagefs(64 << 20);
    let connection = fs.connection();
    let image = fs.mount("img", fixture.manifest.clone(), fixture.key.clone(), fixture.store()).unwrap();
    let tree = image.tree().unwrap();
    let err = read_in(&tree, Path::new("noise-b.bin")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let stats = fs.stats();
    assert!(stats.verify_failures_total >= 1, "{stats:?}");
    for rel in ["small.txt", "noise-a.bin", "lib/noise-c.bin", "sparse.bin", "repeated.bin"] {
        let want = std::fs::read(fixture.source.path().join(rel)).unwrap();
        let got = read_in(&tree, Path::new(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert!(got == want, "{rel}");
    }
    // Failures are not remembered: the next read fetches again, and fails again.
    assert!(read_in(&tree, Path::new("noise-b.bin")).is_err());
    assert!(fs.stats().verify_failures_total > stats.verify_failures_total);
    drop((tree, image, fs));
    assert_gone(connection);
}

#[test]
fn without_a_memory_tier_chunks_are_served_from_disk_as_root() {
    let fixture = Fixture::new();
    let mut config = ImageFsConfig::new(fixture.cache_dir.path(), 64 << 20);
    config.memory_bytes = 0;
    let fs = ImageFs::new(config, fixture.runtime.handle().clone()).unwrap();
    let connection = fs.connection();
    let image = fs.mount("img", fixture.manifest.clone(), fixture.key.clone(), fixture.store()).unwrap();
    let tree = image.tree().unwrap();
    fixture.check_all(&tree);
    let first = fs.stats();
    assert_eq!((first.memory_bytes, first.memory_hits_total), (0, 0), "{first:?}");
    assert!(first.disk_bytes > 0, "{first:?}");
    drop((tree, image));
    // A new mount: every chunk it reads is on disk.
    let image = fs.mount("img", fixture.manifest.clone(), fixture.key.clone(), fixture.store()).unwrap();
    let tree = image.tree().unwrap();
    fixture.check_all(&tree);
    let again = fs.stats();
    assert_eq!(again.chunk_fetches_total, first.chunk_fetches_total, "{again:?}");
    assert!(again.disk_hits_total > first.disk_hits_total, "{again:?}");
    drop((tree, image, fs));
    assert_gone(connection);
}

#[test]
fn a_cache_smaller_than_the_image_serves_every_read_as_root() {
    let fixture = Fixture::new();
    let budget = 3 * CHUNK_BYTES as u64;
    assert!(budget < fixture.image.len() as u64);
    let fs = fixture.imagefs(budget);
    let connection = fs.connection();
    for _ in 0..2 {
        // A new mount each time: erofs's page cache starts empty, the chunk cache holds what is left of the last.
        let image = fs.mount("img", fixture.manifest.clone(), fixture.key.clone(), fixture.store()).unwrap();
        let tree = image.tree().unwrap();
        fixture.check_all(&tree);
        let stats = fs.stats();
        assert!(stats.memory_bytes <= budget && stats.disk_bytes <= budget, "{stats:?}");
        // Chunks are written to disk after their reads are answered: wait for the writes in progress.
        let temporary = |e: &std::fs::DirEntry| e.file_name().to_string_lossy().starts_with("tmp.");
        let entries = || std::fs::read_dir(fixture.cache_dir.path()).unwrap().map(|e| e.unwrap());
        wait_until("the chunks are written", || !entries().any(|e| temporary(&e)));
        let on_disk: u64 = entries().map(|e| e.metadata().unwrap().len()).sum();
        assert!(on_disk <= budget, "{on_disk} bytes in the cache directory");
    }
    // Chunks evicted were fetched again.
    assert!(fs.stats().chunk_fetches_total > fixture.stored_chunks() as u64);
    drop(fs);
    assert_gone(connection);
}

#[test]
fn a_manifest_under_another_key_is_refused_and_the_cache_starts_empty_as_root() {
    let fixture = Fixture::new();
    // What a cache directory held before is gone: the cache starts empty.
    std::fs::write(fixture.cache_dir.path().join("stale"), "old").unwrap();
    std::fs::create_dir(fixture.cache_dir.path().join("stale-dir")).unwrap();
    let fs = fixture.imagefs(1 << 20);
    assert_eq!(std::fs::read_dir(fixture.cache_dir.path()).unwrap().count(), 0);
    let err = fs.mount("img", fixture.manifest.clone(), AccountKey::from_bytes([8; 32]), fixture.store()).unwrap_err();
    assert!(matches!(err, LoadError::Manifest { .. }), "{err}");
    assert_eq!(fs.inodes.len(), 0);
    let connection = fs.connection();
    drop(fs);
    assert_gone(connection);
}

/// Set in the child of the kill test: the directory it works in.
const CHILD: &str = "IGNIS_IMAGEFS_KILL_CHILD";

/// The child: mounts an image, reads it, says so on stdout with its connection's number, and waits to be killed.
fn child(dir: &Path) {
    let fixture = Fixture::new();
    let config = ImageFsConfig::new(dir.join("cache"), 64 << 20);
    let fs = ImageFs::new(config, fixture.runtime.handle().clone()).unwrap();
    let image = fs.mount("img", fixture.manifest.clone(), fixture.key.clone(), fixture.store()).unwrap();
    let tree = image.tree().unwrap();
    fixture.check_all(&tree);
    // Straight to the descriptor: the test harness captures what goes through `std::io`.
    let line = format!("ready {}\n", fs.connection());
    // SAFETY: writes a valid buffer to standard output.
    assert_eq!(unsafe { libc::write(1, line.as_ptr().cast(), line.len()) }, line.len() as isize);
    // Killed here, holding everything.
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

#[test]
fn nothing_is_left_after_kill_9_as_root() {
    if let Some(dir) = std::env::var_os(CHILD) {
        return child(Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["tests::nothing_is_left_after_kill_9_as_root", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, dir.path())
        // The child's own temporary directories go under ours, removed with it.
        .env("TMPDIR", dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let connection = loop {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            panic!("the child ended before it was ready: {:?}", child.wait());
        }
        // The harness's "test NAME ... " has no newline of its own: "ready" may end its line.
        if let Some((_, n)) = line.trim().split_once("ready ") {
            break n.parse::<u32>().unwrap();
        }
    };
    assert!(fuse_connections().contains(&connection));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_gone(connection);
}

#[test]
fn images_mount_through_a_loop_device_too_as_root() {
    let fixture = Fixture::new();
    let fs = fixture.imagefs(64 << 20);
    let connection = fs.connection();
    *fs.backing.lock().unwrap() = Some(crate::Backing::Loop);
    let image = fs.mount("img", fixture.manifest.clone(), fixture.key.clone(), fixture.store()).unwrap();
    let tree = image.tree().unwrap();
    fixture.check_all(&tree);
    drop((tree, image, fs));
    assert_gone(connection);
}

/// A chunk store whose `get`s wait until the gate opens.
#[derive(Debug)]
struct Gated {
    inner: Arc<DirectoryChunkStore>,
    gate: tokio::sync::Semaphore,
}

impl ChunkStore for Gated {
    fn put_named(&self, chunk: ignis_chunks::NamedChunk) -> ignis_chunks::BoxFuture<'_, Result<ignis_chunks::Stored, ignis_chunks::ChunkError>> {
        self.inner.put_named(chunk)
    }
    fn get(&self, digest: ignis_chunks::ChunkDigest) -> ignis_chunks::BoxFuture<'_, Result<bytes::Bytes, ignis_chunks::ChunkError>> {
        Box::pin(async move {
            drop(self.gate.acquire().await);
            self.inner.get(digest).await
        })
    }
    fn contains<'a>(&'a self, digests: &'a [ignis_chunks::ChunkDigest]) -> ignis_chunks::BoxFuture<'a, Result<Vec<bool>, ignis_chunks::ChunkError>> {
        self.inner.contains(digests)
    }
    fn delete(&self, digest: ignis_chunks::ChunkDigest) -> ignis_chunks::BoxFuture<'_, Result<bool, ignis_chunks::ChunkError>> {
        self.inner.delete(digest)
    }
    fn list(&self, after: Option<ignis_chunks::ChunkDigest>, limit: usize) -> ignis_chunks::BoxFuture<'_, Result<Vec<ignis_chunks::ChunkDigest>, ignis_chunks::ChunkError>> {
        self.inner.list(after, limit)
    }
    fn size(&self) -> ignis_chunks::BoxFuture<'_, Result<ignis_chunks::Size, ignis_chunks::ChunkError>> {
        self.inner.size()
    }
}

#[test]
fn concurrent_readers_of_a_missing_chunk_cause_one_fetch_as_root() {
    let fixture = Fixture::new();
    let gated = Arc::new(Gated { inner: fixture.store.clone(), gate: tokio::sync::Semaphore::new(0) });
    let store: Arc<dyn ChunkStore> = gated.clone();
    let fs = ImageFs::new(ImageFsConfig::new(fixture.cache_dir.path(), 64 << 20), fixture.runtime.handle().clone()).unwrap();
    let connection = fs.connection();
    // The image's own file, read straight (every read reaches the server: no page cache).
    let image = Arc::new(Image::open("img", fixture.manifest.clone(), &fixture.key, store).unwrap());
    let ino = fs.inodes.name(image);
    let name = CString::new(ino.to_string()).unwrap();
    // SAFETY: valid fd and NUL-terminated relative path.
    let fd = unsafe { libc::openat(fs.fuse.as_raw_fd(), name.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    assert!(fd >= 0, "{}", std::io::Error::last_os_error());
    fs.inodes.unname(ino);
    // SAFETY: just opened; ours.
    let file = unsafe { std::fs::File::from_raw_fd(fd) };
    let index = fixture.chunk_inside("noise-b.bin");
    let offset = (index * CHUNK_BYTES) as u64;
    let want = &fixture.image[index * CHUNK_BYTES..][..8192];
    std::thread::scope(|s| {
        let readers: Vec<_> = (0..6u64)
            .map(|i| {
                let file = &file;
                s.spawn(move || {
                    let mut buf = vec![0u8; 4096];
                    std::os::unix::fs::FileExt::read_exact_at(file, &mut buf, offset + (i % 2) * 4096).unwrap();
                    buf
                })
            })
            .collect();
        gated.gate.add_permits(1000);
        for (i, reader) in readers.into_iter().enumerate() {
            assert!(reader.join().unwrap() == want[(i % 2) * 4096..][..4096], "reader {i}");
        }
    });
    let stats = fs.stats();
    assert_eq!(stats.chunk_fetches_total, 1, "{stats:?}");
    drop((file, fs));
    assert_gone(connection);
}

#[test]
fn a_second_mount_prefetches_what_the_first_read_as_root() {
    let fixture = Fixture::new();
    let starts = tempfile::tempdir().unwrap();
    let imagefs = || {
        let mut config = ImageFsConfig::new(fixture.cache_dir.path(), 64 << 20);
        config.starts_dir = Some(starts.path().to_owned());
        ImageFs::new(config, fixture.runtime.handle().clone()).unwrap()
    };
    let mount = |fs: &ImageFs| fs.mount("img", fixture.manifest.clone(), fixture.key.clone(), fixture.store()).unwrap();
    let want = std::fs::read(fixture.source.path().join("noise-b.bin")).unwrap();
    let inside = fixture.chunk_inside("noise-b.bin");
    let record = starts.path().join(hex::encode("img"));

    // The first start: nothing recorded, nothing prefetched; its record is written when its image is released.
    let fs = imagefs();
    let connection = fs.connection();
    let image = mount(&fs);
    let tree = image.tree().unwrap();
    assert_eq!(read_in(&tree, Path::new("noise-b.bin")).unwrap(), want);
    let first = fs.stats();
    assert_eq!(first.prefetched_total, 0);
    drop((tree, image, fs));
    assert_gone(connection);
    wait_until("the start is recorded", || record.exists());
    let recorded = crate::starts::load(&record, fixture.manifest.chunks().len()).expect("a valid record");
    assert!(recorded.contains(&(inside as u32)), "{recorded:?} holds the file's chunk {inside}");

    // The second: a new ImageFs on the same directories (its cache emptied) fetches the record's chunks at mount,
    // before any read asks for them (the mount's own superblock read may start the first chunk's fetch itself).
    let fs = imagefs();
    let connection = fs.connection();
    assert_eq!(fs.stats().memory_bytes, 0);
    let image = mount(&fs);
    wait_until("the recorded chunks are cached", || fs.stats().memory_bytes >= first.memory_bytes);
    let prefetched = fs.stats();
    assert_eq!(prefetched.chunk_fetches_total, first.chunk_fetches_total, "{prefetched:?}");
    assert!(prefetched.prefetched_total + 1 >= first.chunk_fetches_total, "{prefetched:?} after {first:?}");
    assert_eq!((prefetched.verify_failures_total, prefetched.fetch_failures_total), (0, 0));
    // The read finds every chunk cached: nothing more is fetched.
    let tree = image.tree().unwrap();
    assert_eq!(read_in(&tree, Path::new("noise-b.bin")).unwrap(), want);
    let read = fs.stats();
    assert_eq!(read.chunk_fetches_total, first.chunk_fetches_total);
    assert!(read.memory_hits_total > prefetched.memory_hits_total);
    drop((tree, image, fs));
    assert_gone(connection);
}

#[test]
fn an_invalid_start_record_is_ignored_as_root() {
    let fixture = Fixture::new();
    let starts = tempfile::tempdir().unwrap();
    let record = starts.path().join(hex::encode("img"));
    // An index past the image's chunks: the whole record is refused.
    std::fs::write(&record, crate::starts::format(&[0, u32::MAX])).unwrap();
    let mut config = ImageFsConfig::new(fixture.cache_dir.path(), 64 << 20);
    config.starts_dir = Some(starts.path().to_owned());
    let fs = ImageFs::new(config, fixture.runtime.handle().clone()).unwrap();
    let connection = fs.connection();
    let image = fs.mount("img", fixture.manifest.clone(), fixture.key.clone(), fixture.store()).unwrap();
    fixture.check_all(&image.tree().unwrap());
    assert_eq!(fs.stats().prefetched_total, 0);
    drop((image, fs));
    assert_gone(connection);
}
