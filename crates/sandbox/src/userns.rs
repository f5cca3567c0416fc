//! The sandbox's user namespace: which outside ids it maps to, and who may use them.
//!
//! Each sandbox maps inside uids and gids `0..65536` to `UID_BASE + slot * 65536 ..` outside, where `slot` is
//! unique among live sandboxes *on the machine*: a slot is held as an OFD byte-range lock (`F_OFD_SETLK`) on byte
//! `slot` of [`LOCK_FILE`], so two workers (or two [`crate::Host`]s of one process, each with its own open file
//! description) never hand out the same range, and the kernel releases a crashed worker's slots with its fds. A slot
//! is released by [`crate::Sandbox::destroy`] once init was reaped, i.e. once no process of the sandbox is left (the
//! kernel kills the rest of a pid namespace before its init can be reaped). No file outside the sandbox's own
//! tmpfs mounts can be owned by these ids (everything else it sees is read-only), so a released range is clean.
//!
//! The ranges (from 1 000 000 up) must not be assigned to host users nor handed out in `/etc/subuid`/`/etc/subgid`.
//!
//! # Per-user kernel resources
//!
//! The kernel counts some resources per user (`kernel/ucount.c`): inotify instances and watches, fanotify groups
//! and marks, namespaces of each kind (counted by effective uid), POSIX message queue bytes, pending signals,
//! processes and locked memory (counted by real uid). A count is kept at every level of the user namespace
//! hierarchy: a charge to (sandbox's namespace, uid) is also a charge to (parent namespace, *owner* of the
//! sandbox's namespace), each level checked against its namespace's limit. The owner is the effective uid that
//! created the namespace. Two rules make every sandbox's charges its own:
//!
//! - **The owner is the slot's base**, never host root: the spawner thread takes `base` as its effective uid just
//!   for the `clone` ([`AsOwner`]). In the host's namespace every sandbox is thus charged to an id of its own, under
//!   the host's per-user limits (`fs.inotify.max_user_instances`, the `RLIMIT_MSGQUEUE` of the worker, ...), and
//!   nothing a sandbox holds counts against root's.
//! - **Limits inside**: ignis-init writes [`USER_LIMITS`] into `/proc/sys/user/` of the sandbox's user namespace
//!   (and [`MQUEUE_LIMITS`] into `/proc/sys/fs/mqueue/` of its ipc namespace, [`MSGQUEUE_BYTES`] as
//!   `RLIMIT_MSGQUEUE`) before the runtime starts; the runtime, without capabilities, cannot change them.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Arc, Mutex};

/// Outside uid/gid of inside 0 in slot 0.
pub const UID_BASE: u32 = 1_000_000;
/// Ids mapped per sandbox (inside `0..RANGE`).
pub const RANGE: u32 = 65536;
/// How many ranges fit below `u32::MAX` (-1 is not a valid id).
const MAX_SLOTS: u32 = (u32::MAX - UID_BASE) / RANGE;
/// Machine-wide registry of the slots in use (one lockable byte per slot; the file stays empty).
pub const LOCK_FILE: &str = "/run/ignis-sandbox-uid-slots.lock";

/// Allocates slots for one [`crate::Host`].
#[derive(Debug)]
pub(crate) struct Slots {
    file: File,
    /// Slots this host holds (an OFD lock does not conflict with itself, so the set guards against double use).
    held: Mutex<std::collections::BTreeSet<u32>>,
}

/// One held slot; released on drop.
#[derive(Debug)]
pub(crate) struct Slot {
    slots: Arc<Slots>,
    slot: u32,
}

impl Slot {
    /// Outside id of inside 0.
    pub(crate) fn base(&self) -> u32 {
        UID_BASE + self.slot * RANGE
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self.slots.lock(self.slot, libc::F_UNLCK as libc::c_short);
        held.remove(&self.slot);
    }
}

impl Slots {
    pub(crate) fn open() -> io::Result<Arc<Slots>> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(LOCK_FILE)
            .map_err(|e| io::Error::new(e.kind(), format!("{LOCK_FILE}: {e}")))?;
        Ok(Arc::new(Slots { file, held: Mutex::new(Default::default()) }))
    }

    /// The lowest slot free on the machine.
    pub(crate) fn acquire(self: &Arc<Self>) -> io::Result<Slot> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        for slot in 0..MAX_SLOTS {
            if held.contains(&slot) {
                continue;
            }
            match self.lock(slot, libc::F_WRLCK as libc::c_short) {
                Ok(()) => {
                    held.insert(slot);
                    return Ok(Slot { slots: self.clone(), slot });
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(io::ErrorKind::ResourceBusy, "all user namespace id ranges are in use"))
    }

    /// Slots held by this host.
    pub(crate) fn in_use(&self) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn lock(&self, slot: u32, kind: libc::c_short) -> io::Result<()> {
        // SAFETY: flock is plain old data; zeroed is valid (l_pid must be 0 for OFD locks).
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = kind;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        fl.l_start = libc::off_t::from(slot);
        fl.l_len = 1;
        // SAFETY: fcntl on an fd we own with a valid flock.
        if unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_OFD_SETLK, &fl) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Limits of the sandbox's user namespace, per user inside (effectively per sandbox: the runtime cannot change its
/// ids): `/proc/sys/user/<name>`. No namespaces at all (seccomp refuses their creation anyway; init's own cgroup
/// namespace is made before these are written), no fanotify (refused by seccomp too), and the inotify bounds that
/// were the kernel's defaults for years. A name the kernel does not have (a feature built out) is skipped.
pub const USER_LIMITS: [(&str, u32); 12] = [
    ("max_inotify_instances", 128),
    ("max_inotify_watches", 8192),
    ("max_fanotify_groups", 0),
    ("max_fanotify_marks", 0),
    ("max_user_namespaces", 0),
    ("max_pid_namespaces", 0),
    ("max_ipc_namespaces", 0),
    ("max_net_namespaces", 0),
    ("max_mnt_namespaces", 0),
    ("max_uts_namespaces", 0),
    ("max_cgroup_namespaces", 0),
    ("max_time_namespaces", 0),
];

/// POSIX message queue limits of the sandbox's ipc namespace, `/proc/sys/fs/mqueue/<name>`: at most 256 queues,
/// of at most 10 messages of at most 8 KiB (the kernel's defaults for a new ipc namespace, written so that they
/// do not depend on them).
pub const MQUEUE_LIMITS: [(&str, u32); 3] = [("queues_max", 256), ("msg_max", 10), ("msgsize_max", 8192)];

/// `RLIMIT_MSGQUEUE` (soft and hard) of the runtime, or lower if the worker's own is: the bytes all of the
/// sandbox's message queues may take (the kernel's default).
pub const MSGQUEUE_BYTES: u64 = 819_200;

/// While alive, the calling thread's effective uid is a slot's `base` (its file system uid stays 0), so that a user
/// namespace it creates is owned by `base` (see the module docs); dropping it gives the thread back its ids. Only
/// the calling thread changes: the raw syscalls do not go through libc, which would change every thread.
/// `SECBIT_NO_SETUID_FIXUP` keeps the thread's capabilities across the change, so the creation is as privileged as
/// before (distributions that restrict unprivileged user namespaces do not apply that to it). A user namespace
/// resets the securebits and capabilities of its first process, so the child inherits none of this. Changing the
/// effective uid makes the process non-dumpable for a moment; dropping makes it dumpable again.
pub(crate) struct AsOwner {
    securebits: libc::c_int,
}

const SECBIT_NO_SETUID_FIXUP: libc::c_int = 1 << 2;
const KEEP: libc::c_long = -1;

impl AsOwner {
    pub(crate) fn new(base: u32) -> io::Result<AsOwner> {
        let cvt = |r: libc::c_long| if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r as libc::c_int) };
        // SAFETY: plain prctl and set*id syscalls on the calling thread's credentials.
        unsafe {
            let securebits = cvt(libc::prctl(libc::PR_GET_SECUREBITS).into())?;
            cvt(libc::prctl(libc::PR_SET_SECUREBITS, (securebits | SECBIT_NO_SETUID_FIXUP) as libc::c_ulong).into())?;
            let owner = AsOwner { securebits };
            cvt(libc::syscall(libc::SYS_setresuid, KEEP, libc::c_long::from(base), KEEP))?;
            // setfsuid says nothing of failure: ask again (an invalid id only reads it).
            libc::syscall(libc::SYS_setfsuid, 0);
            if libc::syscall(libc::SYS_setfsuid, KEEP) != 0 {
                return Err(io::Error::other("setfsuid(0) failed"));
            }
            Ok(owner)
        }
    }
}

impl Drop for AsOwner {
    fn drop(&mut self) {
        // SAFETY: as in `new`; the real and saved uids are still 0, so going back is always allowed.
        let restored = unsafe {
            libc::syscall(libc::SYS_setresuid, KEEP, 0, KEEP) == 0
                && libc::prctl(libc::PR_SET_SECUREBITS, self.securebits as libc::c_ulong) == 0
                // Dumpable is the whole process's: set, not restored, since another spawner thread may have saved
                // the value this one's switch left.
                && libc::prctl(libc::PR_SET_DUMPABLE, 1) == 0
        };
        if !restored {
            // A spawner thread left with another uid would act with the wrong credentials from now on.
            tracing::error!(error = %io::Error::last_os_error(), "cannot restore the spawner thread's credentials; aborting");
            std::process::abort();
        }
    }
}

/// Writes the uid and gid maps of the (waiting) child `pid`: inside `0..RANGE` → outside `base..`. `setgroups` stays
/// allowed (the writer is privileged) so that the child can drop the worker's supplementary groups; it can only ever
/// set mapped gids.
pub(crate) fn write_maps(pid: libc::pid_t, base: u32) -> io::Result<()> {
    let map = format!("0 {base} {RANGE}\n");
    for file in ["uid_map", "gid_map"] {
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, &map).map_err(|e| io::Error::new(e.kind(), format!("writing {path}: {e}")))?;
    }
    Ok(())
}
