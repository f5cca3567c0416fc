//! The FUSE filesystem: a root directory and, while an image is being mounted, one regular file for it, whose
//! reads are served chunk by chunk ([`crate::cache`]).
//!
//! One connection per [`crate::ImageFs`]: `/dev/fuse` opened, a superblock made with the new mount API
//! (`fsopen("fuse")`, `fsconfig` `fd`, `rootmode=40000`, `user_id=0`, `group_id=0`, `allow_other`, read-only) and
//! mounted *detached* (`fsmount`): never attached to any tree, so it goes with its last reference. `fuser` serves
//! the already-open device ([`fuser::Session::from_fd`]) from a few threads, each with its own cloned descriptor.
//!
//! Inodes: 1 is the root; each image gets a new number (never reused) and the name of that number in decimal
//! for as long as [`crate::ImageFs::mount`] needs to open it; afterwards only its open files keep it (the
//! erofs superblock's), and it is forgotten at the last `RELEASE`. Opens are `FOPEN_DIRECT_IO`: the kernel keeps
//! no page cache of the image file's data (erofs's page cache above it is the cache), so every data read reaches
//! [`Server::read`].
//!
//! A request the server cannot answer is answered with an error, never left waiting: a read handed to the runtime
//! replies from there, and a reply dropped unsent (a runtime shut down) answers `EIO`.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};
use std::{io, thread};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig, LockOwner,
    OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyEmpty, ReplyEntry, ReplyOpen, Request, Session, SessionACL,
};
use ignis_sandbox::code::{fd_syscall, fsconfig};

use crate::cache::{Image, Shared};

const ROOT: u64 = 1;
/// How long the kernel may keep names and attributes: they never change.
const TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// The image inodes, shared by the server and [`crate::ImageFs`].
#[derive(Debug, Default)]
pub(crate) struct Inodes {
    next: AtomicU64,
    table: Mutex<HashMap<u64, Inode>>,
}

#[derive(Debug)]
struct Inode {
    image: Arc<Image>,
    /// Whether its name can be looked up.
    named: bool,
    /// Open files (each `OPEN` not yet `RELEASE`d).
    opens: u64,
}

impl Inodes {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Inode>> {
        crate::lock(&self.table)
    }

    /// Gives `image` a new inode, named: its name is the inode's number.
    pub(crate) fn name(&self, image: Arc<Image>) -> u64 {
        let ino = self.next.fetch_add(1, Ordering::Relaxed) + ROOT + 1;
        self.lock().insert(ino, Inode { image, named: true, opens: 0 });
        ino
    }

    /// Takes `ino`'s name away: only its open files keep it from now on.
    pub(crate) fn unname(&self, ino: u64) {
        let mut table = self.lock();
        if let Some(inode) = table.get_mut(&ino) {
            inode.named = false;
            if inode.opens == 0 {
                table.remove(&ino);
            }
        }
    }

    fn image(&self, ino: u64) -> Option<Arc<Image>> {
        self.lock().get(&ino).map(|inode| inode.image.clone())
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The FUSE request handlers.
pub(crate) struct Server {
    pub(crate) inodes: Arc<Inodes>,
    pub(crate) shared: Arc<Shared>,
}

fn attr(ino: u64, kind: FileType, size: u64, perm: u16) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind,
        perm,
        nlink: if kind == FileType::Directory { 2 } else { 1 },
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl Server {
    fn attr_of(&self, ino: u64) -> Option<FileAttr> {
        match ino {
            ROOT => Some(attr(ROOT, FileType::Directory, 0, 0o500)),
            ino => self.inodes.image(ino).map(|image| attr(ino, FileType::RegularFile, image.bytes(), 0o400)),
        }
    }
}

impl Filesystem for Server {
    fn init(&mut self, _req: &Request, _config: &mut KernelConfig) -> io::Result<()> {
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let ino = name.to_str().and_then(|n| n.parse::<u64>().ok());
        let named = ino.filter(|ino| parent.0 == ROOT && self.inodes.lock().get(ino).is_some_and(|i| i.named));
        match named.and_then(|ino| self.attr_of(ino)) {
            Some(attr) => reply.entry(&TTL, &attr, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr_of(ino.0) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        let mut table = self.inodes.lock();
        match table.get_mut(&ino.0) {
            Some(inode) => {
                inode.opens += 1;
                drop(table);
                reply.opened(FileHandle(ino.0), FopenFlags::FOPEN_DIRECT_IO)
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.inodes.image(ino.0) {
            Some(image) => self.shared.read(image, offset, size, reply),
            None => reply.error(Errno::EBADF),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut table = self.inodes.lock();
        if let Some(inode) = table.get_mut(&ino.0) {
            inode.opens = inode.opens.saturating_sub(1);
            if inode.opens == 0 && !inode.named {
                table.remove(&ino.0);
            }
        }
        drop(table);
        reply.ok();
    }
}

/// A FUSE connection served by `server` from `threads` threads, mounted detached: the mount (read-only, nosuid,
/// nodev, noexec) and the connection's number (its directory in the `fusectl` filesystem).
pub(crate) fn mount(server: Server, threads: usize) -> io::Result<(OwnedFd, u32)> {
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_SET_FLAG: libc::c_uint = 0;
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    // MOUNT_ATTR_RDONLY | NOSUID | NODEV | NOEXEC.
    const ATTRS: libc::c_uint = 0x1 | 0x2 | 0x4 | 0x8;
    fn context(what: &'static str) -> impl Fn(io::Error) -> io::Error {
        move |e| io::Error::new(e.kind(), format!("{what} of the image filesystem: {e}"))
    }
    let device = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/fuse")
        .map_err(context("/dev/fuse"))?;
    // SAFETY: valid NUL-terminated name.
    let fs = fd_syscall(unsafe { libc::syscall(libc::SYS_fsopen, c"fuse".as_ptr(), FSOPEN_CLOEXEC) })
        .map_err(context("fsopen(fuse)"))?;
    let set = |key: &std::ffi::CStr, value: &str| {
        let value = std::ffi::CString::new(value).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        fsconfig(&fs, FSCONFIG_SET_STRING, Some(key), Some(&value))
    };
    set(c"source", "ignis-imagefs").map_err(context("the source"))?;
    set(c"fd", &device.as_raw_fd().to_string()).map_err(context("the device"))?;
    set(c"rootmode", "40000").map_err(context("rootmode"))?;
    set(c"user_id", "0").map_err(context("user_id"))?;
    set(c"group_id", "0").map_err(context("group_id"))?;
    // Reads come from sandboxes' processes (through erofs), whatever their user.
    fsconfig(&fs, FSCONFIG_SET_FLAG, Some(c"allow_other"), None).map_err(context("allow_other"))?;
    fsconfig(&fs, FSCONFIG_SET_FLAG, Some(c"ro"), None).map_err(context("ro"))?;
    // The kernel queues FUSE_INIT now; the session's handshake answers it.
    fsconfig(&fs, FSCONFIG_CMD_CREATE, None, None).map_err(context("creating (fuse)"))?;
    // SAFETY: valid fd.
    let mount = fd_syscall(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, ATTRS) })
        .map_err(context("fsmount"))?;
    let mut config = fuser::Config::default();
    config.n_threads = Some(threads.max(1));
    config.clone_fd = true;
    let session = Session::from_fd(server, device.into(), SessionACL::All, config).map_err(context("FUSE_INIT"))?;
    // The session ends when the connection does (its superblock gone): nothing joins it.
    thread::Builder::new()
        .name("imagefs-fuse".into())
        .spawn(move || {
            if let Err(e) = session.run() {
                tracing::warn!(error = %e, "the image filesystem's FUSE session ended with an error");
            }
        })
        .map_err(context("starting the FUSE threads"))?;
    // Only now: a stat of the mount waits for the connection's initialisation.
    let connection = connection_of(&mount).map_err(context("fstat"))?;
    Ok((mount, connection))
}

/// The number of the FUSE connection whose superblock `mount` is on: the kernel's device number of the superblock
/// (`major << 20 | minor`).
fn connection_of(mount: &OwnedFd) -> io::Result<u32> {
    // SAFETY: all-zero is a valid stat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and out pointer.
    if unsafe { libc::fstat(mount.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((libc::major(st.st_dev) << 20) | libc::minor(st.st_dev))
}
