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
