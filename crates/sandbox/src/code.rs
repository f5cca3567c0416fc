//! The function's code at `/var/task`, through a file system of its own.
//!
//! A bind mount of the code directory would show its path within the host file system in the sandbox's
//! `/proc/self/mountinfo` (a bind mount's "root" field), and so the worker's data directory. Instead the worker
//! packs each code directory once into an EROFS image (`mkfs.erofs` of erofs-utils: uncompressed, modes, owners and
//! modification times kept, no extended attributes) written to an unnamed file (`O_TMPFILE`) in the host's state
//! directory, and mounts it as a detached, file-backed erofs whose source is given as `/proc/self/fd/N`. Every
//! sandbox of that code gets a clone of this mount (`open_tree(OPEN_TREE_CLONE)`), read-only, nosuid, nodev and
//! private; its line in mountinfo reads `/ /var/task ... - erofs /proc/self/fd/N ...`: nothing of the host's paths.
//! The clones share one superblock, so one page cache per code directory; the image file itself is read with direct
//! I/O where the kernel can (`directio`), so that the code is not cached twice. A kernel without file-backed erofs (before
//! Linux 6.12) gets the image through a loop device instead (read-only, detached by the kernel once the last mount
//! of it is gone: `LO_FLAGS_AUTOCLEAR`); the source then reads `/dev/loopN`.
//!
//! The first sandbox of a code directory on a host waits for its image (`mkfs.erofs` took 6-15 ms for a one-file
//! tree and 0.3 s for 54 MB of Python's standard library, measured on 2 shared cores); every later one only clones
//! the mount (about 20 µs, as long as the bind mount it replaces).
//!
//! [`Images`] keeps the mounts of at most [`CAPACITY`] code directories, evicting the least recently used ([`Lru`],
//! no IO). An evicted image lives on as long as a sandbox still has it mounted; the unnamed file is gone with its
//! last reference, also when the worker is killed. A code directory is known by its path, device, inode and change
//! time, so a directory made anew at the same path gets its own image; its contents must not change once a sandbox
//! was spawned from it (Ignis's code directories are content-addressed and never change).

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::spawn::{MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY, MountAttr, mount_setattr};

/// Code directories whose images a [`Images`] keeps mounted.
pub const CAPACITY: usize = 32;

/// The program that packs a directory into an image; looked for on `PATH`, then in the usual places.
const MKFS: &str = "mkfs.erofs";
const MKFS_DIRS: [&str; 4] = ["/usr/bin", "/usr/sbin", "/bin", "/sbin"];

/// A code directory as [`Images`] knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    path: PathBuf,
    dev: u64,
    ino: u64,
    ctime: (i64, i64),
}

/// A least-recently-used map of at most `capacity` entries. Pure: no IO.
#[derive(Debug)]
pub(crate) struct Lru<K, V> {
    capacity: usize,
    /// (key, value, last use); a linear scan is cheap at this size.
    entries: Vec<(K, V, u64)>,
    clock: u64,
}

impl<K: PartialEq, V> Lru<K, V> {
    pub(crate) fn new(capacity: usize) -> Lru<K, V> {
        Lru { capacity: capacity.max(1), entries: Vec::new(), clock: 0 }
    }

    /// The value of `key`, now the most recently used.
    pub(crate) fn get(&mut self, key: &K) -> Option<&V> {
        self.clock += 1;
        let clock = self.clock;
        let entry = self.entries.iter_mut().find(|(k, _, _)| k == key)?;
        entry.2 = clock;
        Some(&entry.1)
    }

    /// Inserts (or replaces) `key` as the most recently used; returns what it pushed out (the replaced value, or
    /// the least recently used entry's when full).
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.clock += 1;
        if let Some(entry) = self.entries.iter_mut().find(|(k, _, _)| *k == key) {
            entry.2 = self.clock;
            return Some(std::mem::replace(&mut entry.1, value));
        }
        let evicted = if self.entries.len() >= self.capacity {
            let oldest = self.entries.iter().enumerate().min_by_key(|(_, (_, _, used))| *used).map(|(i, _)| i)?;
            Some(self.entries.swap_remove(oldest).1)
        } else {
            None
        };
        self.entries.push((key, value, self.clock));
        evicted
    }

    /// Removes the entries whose key `gone` says are gone; returns their values.
    pub(crate) fn remove_where(&mut self, gone: impl Fn(&K) -> bool) -> Vec<V> {
        let (removed, kept) = std::mem::take(&mut self.entries).into_iter().partition(|(k, _, _)| gone(k));
        self.entries = kept;
        removed.into_iter().map(|(_, v, _)| v).collect()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// How an image is mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backing {
    /// Straight from the file (Linux 6.12 and later).
    File,
    /// Through a loop device.
    Loop,
}

/// The code images of one [`crate::Host`]: mounted, detached, by code directory.
#[derive(Debug)]
pub(crate) struct Images {
    /// Where the unnamed image files are made.
    state_dir: PathBuf,
    mkfs: PathBuf,
    backing: Backing,
    /// Whether a file-backed image is read with direct I/O (so that its data is cached once, as the erofs files',
    /// not also as the image file's); where the kernel can.
    directio: bool,
    mounts: Mutex<Lru<Key, OwnedFd>>,
}

impl Images {
    /// Finds `mkfs.erofs` and chooses how images are mounted: from the file if the kernel can (tried with an image
    /// of the empty directory `empty`), else through loop devices (tried the same way).
    pub(crate) fn new(state_dir: &Path, empty: &Path) -> io::Result<Images> {
        let from_file = Images::with_backing(state_dir, empty, Backing::File);
        match from_file {
            Err(file) if file.kind() != io::ErrorKind::NotFound => Images::with_backing(state_dir, empty, Backing::Loop)
                .map_err(|e| io::Error::new(e.kind(), format!("file-backed: {file}; through a loop device: {e}"))),
            done => done,
        }
    }

    /// [`Images::new`] with the given backing.
    pub(crate) fn with_backing(state_dir: &Path, empty: &Path, backing: Backing) -> io::Result<Images> {
        let mkfs = find_mkfs().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("{MKFS} not found on PATH nor in {MKFS_DIRS:?} (install erofs-utils)"))
        })?;
        let mut images =
            Images { state_dir: state_dir.to_owned(), mkfs, backing, directio: true, mounts: Mutex::new(Lru::new(CAPACITY)) };
        // A sandbox gets a clone of the image's detached mount: check both, once.
        let check = |images: &Images| images.build(empty).and_then(|mount| clone(&mount)).map(drop);
        if backing == Backing::Loop || check(&images).is_err() {
            images.directio = false;
            check(&images).map_err(|e| io::Error::new(e.kind(), format!("checking that code images can be mounted: {e}")))?;
        }
        Ok(images)
    }

    /// A detached mount of `dir`'s image (made now if there is none yet), read-only, nosuid, nodev and private, for
    /// one sandbox.
    pub(crate) fn tree(&self, dir: &Path) -> io::Result<OwnedFd> {
        let meta = std::fs::metadata(dir)?;
        if !meta.is_dir() {
            return Err(io::Error::new(io::ErrorKind::NotADirectory, "not a directory"));
        }
        let key = Key { path: dir.to_owned(), dev: meta.dev(), ino: meta.ino(), ctime: (meta.ctime(), meta.ctime_nsec()) };
        let lock = || self.mounts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mount) = lock().get(&key) {
            return clone(mount);
        }
        // Built without the lock: other spawner threads go on meanwhile (two that build the same image both use
        // their own, and the cache keeps the later).
        let mount = self.build(dir)?;
        let tree = clone(&mount)?;
        lock().insert(key, mount);
        Ok(tree)
    }

    /// Drops the image of `dir` (any made of a directory at that path): its disk space comes back once no sandbox
    /// has it mounted. For when the code directory is removed.
    pub(crate) fn forget(&self, dir: &Path) {
        let removed = self.mounts.lock().unwrap_or_else(|e| e.into_inner()).remove_where(|key| key.path == dir);
        drop(removed);
    }

    /// Packs `dir` into an unnamed file and mounts it (detached).
    fn build(&self, dir: &Path) -> io::Result<OwnedFd> {
        let image = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
            .mode(0o600)
            .open(&self.state_dir)
            .map_err(|e| io::Error::new(e.kind(), format!("an unnamed file in {}: {e}", self.state_dir.display())))?;
        // mkfs.erofs writes through this process's descriptor (it runs as root, like the worker).
        let out = format!("/proc/{}/fd/{}", std::process::id(), image.as_raw_fd());
        let run = std::process::Command::new(&self.mkfs)
            .args(["--quiet", "-x-1", "--preserve-mtime", &out])
            .arg(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .output()
            .map_err(|e| io::Error::new(e.kind(), format!("running {}: {e}", self.mkfs.display())))?;
        if !run.status.success() {
            let stderr = String::from_utf8_lossy(&run.stderr);
            let tail: String = stderr.trim().chars().rev().take(500).collect::<Vec<_>>().into_iter().rev().collect();
            return Err(io::Error::other(format!("{} {} ({}): {tail}", self.mkfs.display(), dir.display(), run.status)));
        }
        let image = OwnedFd::from(image);
        match self.backing {
            Backing::File => mount_image(&format!("/proc/self/fd/{}", image.as_raw_fd()), self.directio),
            Backing::Loop => {
                let (device, path) = loop_device(&image)?;
                let mount = mount_image(&path, false);
                // The mount holds the device open; with the last mount of it gone, the kernel detaches it.
                drop(device);
                mount
            }
        }
    }
}

/// `struct loop_info64` of `<linux/loop.h>`.
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

/// `struct loop_config` of `<linux/loop.h>`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_FLAGS_DIRECT_IO: u32 = 16;

/// A free loop device bound to `image`, read-only and detached by the kernel once nothing holds it open: the
/// device (open) and its path. Also used by `ignis-imagefs` for kernels without file-backed erofs.
pub fn loop_device(image: &OwnedFd) -> io::Result<(std::fs::File, String)> {
    let context = |what: String| move |e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
    let control = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/loop-control")
        .map_err(context("/dev/loop-control".into()))?;
    // Another process may take the free device first: then ask again.
    for _ in 0..32 {
        // SAFETY: plain ioctl without argument.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(context("LOOP_CTL_GET_FREE".into())(io::Error::last_os_error()));
        }
        let path = format!("/dev/loop{n}");
        let device = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(context(path.clone()))?;
        // SAFETY: all-zero is a valid loop_config.
        let mut config: LoopConfig = unsafe { std::mem::zeroed() };
        config.fd = image.as_raw_fd() as u32;
        // Direct I/O (where the image's file system has it) caches the data once, as the erofs files'.
        config.info.flags = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO;
        // SAFETY: a valid loop_config for the ioctl to read.
        if unsafe { libc::ioctl(device.as_raw_fd(), LOOP_CONFIGURE, &config) } == 0 {
            return Ok((device, path));
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(context(format!("LOOP_CONFIGURE {path}"))(e));
        }
    }
    Err(io::Error::new(io::ErrorKind::ResourceBusy, "no free loop device"))
}

fn find_mkfs() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(MKFS_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(MKFS))
        .find(|candidate| std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0))
}

/// Raw syscall returning an fd.
pub fn fd_syscall(ret: libc::c_long) -> io::Result<OwnedFd> {
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the syscall just created this fd; we own it.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as libc::c_int) })
}

/// `fsconfig(2)` on the filesystem context `fs`.
pub fn fsconfig(fs: &OwnedFd, cmd: libc::c_uint, key: Option<&CStr>, value: Option<&CStr>) -> io::Result<()> {
    let ptr = |c: Option<&CStr>| c.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: valid fd; key and value are null or NUL-terminated strings.
    let r = unsafe { libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), cmd, ptr(key), ptr(value), 0) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// A detached erofs mount (read-only, nosuid, nodev) of the image at `source` (`/proc/self/fd/N` or a loop device),
/// reading a file-backed image with direct I/O if `directio`. Also used by `ignis-imagefs` for container images.
pub fn mount_image(source: &str, directio: bool) -> io::Result<OwnedFd> {
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_SET_FLAG: libc::c_uint = 0;
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    fn context(what: &'static str) -> impl Fn(io::Error) -> io::Error {
        move |e| io::Error::new(e.kind(), format!("{what} of the code image: {e}"))
    }
    // SAFETY: valid NUL-terminated name.
    let fs = fd_syscall(unsafe { libc::syscall(libc::SYS_fsopen, c"erofs".as_ptr(), FSOPEN_CLOEXEC) }).map_err(context("fsopen(erofs)"))?;
    let source = CString::new(source).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    fsconfig(&fs, FSCONFIG_SET_STRING, Some(c"source"), Some(&source)).map_err(context("the source"))?;
    // A read-only superblock: a block device is then opened for reading only.
    fsconfig(&fs, FSCONFIG_SET_FLAG, Some(c"ro"), None).map_err(context("ro"))?;
    if directio {
        fsconfig(&fs, FSCONFIG_SET_FLAG, Some(c"directio"), None).map_err(context("directio"))?;
    }
    fsconfig(&fs, FSCONFIG_CMD_CREATE, None, None).map_err(context("mounting (erofs)"))?;
    let attrs = (MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV) as libc::c_uint;
    // SAFETY: valid fd.
    fd_syscall(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) }).map_err(context("fsmount"))
}

/// A detached clone of the mount `mount`, read-only, nosuid, nodev and private.
pub fn clone(mount: &OwnedFd) -> io::Result<OwnedFd> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let flags = OPEN_TREE_CLONE | (libc::O_CLOEXEC | libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint;
    // SAFETY: valid fd and NUL-terminated (empty) path.
    let tree = fd_syscall(unsafe { libc::syscall(libc::SYS_open_tree, mount.as_raw_fd(), c"".as_ptr(), flags) })?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: libc::MS_PRIVATE,
        userns_fd: 0,
    };
    mount_setattr(tree.as_raw_fd(), c"", (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint, &attr)?;
    Ok(tree)
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::fd::{AsRawFd, FromRawFd};

    use super::{Backing, Images, Lru};

    /// Reads `name` through the detached mount `tree`.
    fn read_in(tree: &std::os::fd::OwnedFd, name: &std::ffi::CStr) -> String {
        // SAFETY: valid fd and NUL-terminated relative path.
        let fd = unsafe { libc::openat(tree.as_raw_fd(), name.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        assert!(fd >= 0, "{}", std::io::Error::last_os_error());
        // SAFETY: just opened; ours.
        let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        text
    }

    /// Both ways of mounting an image serve the directory's files (needs root; the loop way, loop devices).
    #[test]
    fn images_through_the_file_and_through_a_loop_device_as_root() {
        let state = tempfile::tempdir().unwrap();
        let empty = tempfile::tempdir().unwrap();
        let code = tempfile::tempdir().unwrap();
        std::fs::write(code.path().join("f"), "content").unwrap();
        for backing in [Backing::File, Backing::Loop] {
            let images = Images::with_backing(state.path(), empty.path(), backing).unwrap();
            let tree = images.tree(code.path()).unwrap();
            assert_eq!(read_in(&tree, c"f"), "content", "{backing:?}");
            // The image and the mount outlive the cache's entry as long as a tree is held.
            images.forget(code.path());
            drop(images);
            assert_eq!(read_in(&tree, c"f"), "content", "{backing:?}");
        }
    }

    /// Operations: `g k` gets k, `i k v` inserts; expected: what each returns, and the keys left at the end.
    fn check(capacity: usize, ops: &[&str], expected: &[Option<u32>], keys: &[&str]) {
        let mut lru = Lru::new(capacity);
        let mut got = Vec::new();
        for op in ops {
            let parts: Vec<&str> = op.split(' ').collect();
            match parts[..] {
                ["g", k] => got.push(lru.get(&k.to_string()).copied()),
                ["i", k, v] => got.push(lru.insert(k.to_string(), v.parse().unwrap())),
                _ => panic!("bad op {op}"),
            }
        }
        assert_eq!(got, expected, "{ops:?}");
        let mut left: Vec<&str> = lru.entries.iter().map(|(k, _, _)| k.as_str()).collect();
        left.sort();
        assert_eq!(left, keys, "{ops:?}");
        assert!(lru.len() <= capacity.max(1));
    }

    #[test]
    fn least_recently_used_goes_first() {
        check(2, &["g a", "i a 1", "g a"], &[None, None, Some(1)], &["a"]);
        check(2, &["i a 1", "i b 2", "i c 3"], &[None, None, Some(1)], &["b", "c"]);
        // A get makes an entry the most recent.
        check(2, &["i a 1", "i b 2", "g a", "i c 3"], &[None, None, Some(1), Some(2)], &["a", "c"]);
        // Inserting a present key replaces its value and makes it the most recent; nothing else goes.
        check(2, &["i a 1", "i b 2", "i a 9", "i c 3", "g a"], &[None, None, Some(1), Some(2), Some(9)], &["a", "c"]);
        // A capacity of 0 keeps one.
        check(0, &["i a 1", "i b 2", "g b"], &[None, Some(1), Some(2)], &["b"]);
        check(3, &["i a 1", "i b 2", "i c 3", "g a", "g b", "i d 4", "g c"], &[None, None, None, Some(1), Some(2), Some(3), None], &["a", "b", "d"]);
    }

    #[test]
    fn removed_entries_leave_room() {
        let mut lru = Lru::new(2);
        lru.insert("a", 1);
        lru.insert("b", 2);
        assert_eq!(lru.remove_where(|k| *k == "a"), vec![1]);
        assert_eq!(lru.remove_where(|k| *k == "a"), Vec::<i32>::new());
        assert_eq!(lru.insert("c", 3), None);
        assert_eq!(lru.get(&"b"), Some(&2));
        assert_eq!(lru.len(), 2);
    }
}
