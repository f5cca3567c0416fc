//! Cgroup handling for sandboxes, cgroup v1 and v2.
//!
//! Invariants:
//! - Ignis only ever creates, writes and removes groups inside its own subtree: `<root>/<controller>/ignis/<id>`
//!   on v1 (one group per used controller: memory, cpu, pids) and `<root>/ignis/<id>` on v2. The only files written
//!   outside a sandbox's own group are `ignis/cgroup.subtree_control` on v2 (a group Ignis created).
//! - A sandbox's group is created by [`crate::Host::spawn`] (or [`crate::Host::refill`]) *before* `ignis-init` starts;
//!   the worker moves the cloned child into it (writes its pid to each `cgroup.procs`) while init starts and builds
//!   its root, and sends init its first message only once that is done: init forks nothing before, so every process
//!   of the sandbox but init's own first steps runs in it. (Init is root only in its own user namespace: it could
//!   not write the host's cgroup files itself.) Memory and CPU limits are written when the sandbox gets its function.
//! - Groups are removed by [`crate::Sandbox::destroy`] (or by `spawn` on failure) once all processes are dead. If the
//!   worker dies first (even by `SIGKILL`), its sandboxes die of their parent-death signal and its [`GroupGuard`], a
//!   process forked when the worker got its id prefix, removes their groups once they are empty.
//! - Between invocations the worker freezes a sandbox's group ([`CgroupDriver::freeze`]: v1 `freezer.state`, v2
//!   `cgroup.freeze`): its processes get no CPU until [`CgroupDriver::thaw`]. On v1 a frozen task cannot die, not
//!   even of `SIGKILL`, until thawed: [`crate::Sandbox::kill`] thaws right after it signals, a start removing stale
//!   groups thaws them first, and [`GroupGuard`] thaws a worker's groups if the worker dies while they are frozen.
//!
//! The drivers are parameterised by the cgroupfs root so they can be tested against a fake tree.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Name of Ignis's own subtree below each hierarchy root.
pub const PARENT: &str = "ignis";

/// Limits of one sandbox.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub memory_mb: u32,
    pub pids_max: u32,
}

impl Limits {
    pub fn memory_bytes(&self) -> u64 {
        u64::from(self.memory_mb) * 1024 * 1024
    }
    /// v1 `cpu.shares`: 1024 per 1769 MB (the size at which Lambda gives one full vCPU), at least 2.
    pub fn cpu_shares(&self) -> u64 {
        (1024 * u64::from(self.memory_mb) / 1769).max(2)
    }
    /// v2 `cpu.weight`: 100 per 1769 MB, within 1..=10000.
    pub fn cpu_weight(&self) -> u64 {
        (100 * u64::from(self.memory_mb) / 1769).clamp(1, 10000)
    }
}

/// One cgroup version's way of creating, limiting, inspecting and removing a sandbox's group(s).
pub trait CgroupDriver: Send + Sync + std::fmt::Debug {
    /// 1 or 2.
    fn version(&self) -> u8;
    /// Creates the `ignis` parent group(s) if missing (and, on v2, enables the controllers for its children).
    fn setup_parent(&self) -> io::Result<()>;
    /// Creates the sandbox's group(s) with `pids.max` set and memory and CPU not limited yet. Returns the
    /// `cgroup.procs` files a process's pid (or `0`, for itself) must be written to in order to join. On error nothing is
    /// left behind.
    fn create(&self, id: &str, limits: &Limits) -> io::Result<Vec<PathBuf>>;
    /// Sets the memory limit (no swap) and the CPU share of an existing group.
    fn set_limits(&self, id: &str, limits: &Limits) -> io::Result<()>;
    /// The group directories of a sandbox (whether they exist or not).
    fn dirs(&self, id: &str) -> Vec<PathBuf>;
    /// The directories the sandboxes' groups are made in: the `ignis` group of each hierarchy in use.
    fn parents(&self) -> Vec<PathBuf>;
    /// The file that holds the group's peak memory use, in bytes.
    fn peak_memory_path(&self, id: &str) -> PathBuf;
    fn peak_memory_bytes(&self, id: &str) -> Option<u64> {
        read_u64(&self.peak_memory_path(id))
    }
    fn oom_killed(&self, id: &str) -> bool;
    /// Stops every process of the group (they get no CPU until [`CgroupDriver::thaw`]). Returns without waiting
    /// for the kernel to finish: [`CgroupDriver::frozen`] says when it has. A no-op without a freezer (v1 with no
    /// `freezer` hierarchy mounted).
    fn freeze(&self, id: &str) -> io::Result<()>;
    /// Lets the group's processes run again. Missing groups are fine.
    fn thaw(&self, id: &str) -> io::Result<()>;
    /// Whether every process of the group is frozen (v1 `freezer.state` `FROZEN`, v2 `cgroup.events` `frozen 1`).
    fn frozen(&self, id: &str) -> bool;
    /// Whether a frozen process ignores signals until thawed (v1), so that a kill must be followed by a thaw.
    fn frozen_holds_signals(&self) -> bool {
        false
    }
    /// Whether a process of the group has a `SIGKILL` pending (sent while frozen, on v1, it waits for a thaw).
    fn kill_pending(&self, id: &str) -> bool;
    /// The freezer groups' parent, if a frozen group must be thawed for its processes to die (v1).
    fn freezer_parent(&self) -> Option<PathBuf> {
        None
    }
    /// Removes the sandbox's group(s); retries rmdir for up to `patience` while a group is busy.
    /// Missing groups are fine.
    fn remove(&self, id: &str, patience: Duration) -> io::Result<()> {
        remove_dirs(&self.dirs(id), patience)
    }
}

/// Picks the driver for the machine: v2 if `<root>/cgroup.controllers` exists, else v1.
pub fn detect(root: &Path) -> io::Result<Box<dyn CgroupDriver>> {
    if root.join("cgroup.controllers").exists() {
        Ok(Box::new(CgroupV2::new(root)))
    } else if root.join("memory").is_dir() {
        Ok(Box::new(CgroupV1::new(root)))
    } else {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no cgroup v2 ({}/cgroup.controllers) nor v1 memory controller ({}/memory)", root.display(), root.display()),
        ))
    }
}

/// cgroup v1: one hierarchy per controller at `<root>/<controller>`.
#[derive(Debug)]
pub struct CgroupV1 {
    root: PathBuf,
    mkdir: MkdirFn,
}

impl CgroupV1 {
    /// Required controller; the others are used when mounted.
    const MEMORY: &'static str = "memory";
    const OPTIONAL: [&'static str; 3] = ["cpu", "pids", "freezer"];

    pub fn new(root: &Path) -> CgroupV1 {
        CgroupV1 { root: root.to_owned(), mkdir: create_dir }
    }

    /// With a replacement for `mkdir(2)` of a sandbox group, so tests can populate control files like the kernel.
    pub fn with_mkdir(root: &Path, mkdir: MkdirFn) -> CgroupV1 {
        CgroupV1 { root: root.to_owned(), mkdir }
    }

    /// Controllers in use on this machine, memory first.
    fn controllers(&self) -> Vec<&'static str> {
        let mut v = vec![Self::MEMORY];
        v.extend(Self::OPTIONAL.into_iter().filter(|c| self.root.join(c).is_dir()));
        v
    }

    fn dir(&self, controller: &str, id: &str) -> PathBuf {
        self.root.join(controller).join(PARENT).join(id)
    }

    fn write_memory_and_cpu(&self, id: &str, limits: &Limits) -> io::Result<()> {
        let mem = self.dir(Self::MEMORY, id);
        let bytes = limits.memory_bytes().to_string();
        write(&mem.join("memory.limit_in_bytes"), &bytes)?;
        // memsw must be >= limit_in_bytes, so it is written second. Absent without swap accounting.
        let memsw = mem.join("memory.memsw.limit_in_bytes");
        if memsw.exists() {
            write(&memsw, &bytes)?;
        }
        // Not writable on some kernels/configurations; best effort.
        let _ = write(&mem.join("memory.swappiness"), "0");
        // Socket buffers are not charged to the memory limit on v1: without this a sandbox could queue the host's
        // TCP memory (`net.ipv4.tcp_mem`, shared by every namespace) on loopback connections it never reads. With it
        // they have a bound of their own, as large as the memory limit. (v2 charges them to `memory.current`.)
        let tcp = mem.join("memory.kmem.tcp.limit_in_bytes");
        if tcp.exists() {
            write(&tcp, &bytes)?;
        }
        if self.controllers().contains(&"cpu") {
            write(&self.dir("cpu", id).join("cpu.shares"), &limits.cpu_shares().to_string())?;
        }
        Ok(())
    }
}

impl CgroupDriver for CgroupV1 {
    fn version(&self) -> u8 {
        1
    }

    fn setup_parent(&self) -> io::Result<()> {
        for c in self.controllers() {
            mkdir_exist_ok(&self.root.join(c).join(PARENT))?;
        }
        Ok(())
    }

    fn create(&self, id: &str, limits: &Limits) -> io::Result<Vec<PathBuf>> {
        let mut procs = Vec::new();
        let result = (|| {
            for c in self.controllers() {
                let dir = self.dir(c, id);
                mkdir_fresh(&dir, self.mkdir)?;
                procs.push(dir.join("cgroup.procs"));
                if c == "pids" {
                    write(&dir.join("pids.max"), &limits.pids_max.to_string())?;
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(procs),
            Err(e) => {
                let _ = self.remove(id, Duration::ZERO);
                Err(e)
            }
        }
    }

    fn set_limits(&self, id: &str, limits: &Limits) -> io::Result<()> {
        self.write_memory_and_cpu(id, limits)
    }

    fn dirs(&self, id: &str) -> Vec<PathBuf> {
        self.controllers().into_iter().map(|c| self.dir(c, id)).collect()
    }

    fn parents(&self) -> Vec<PathBuf> {
        self.controllers().into_iter().map(|c| self.root.join(c).join(PARENT)).collect()
    }

    fn peak_memory_path(&self, id: &str) -> PathBuf {
        self.dir(Self::MEMORY, id).join("memory.max_usage_in_bytes")
    }

    fn oom_killed(&self, id: &str) -> bool {
        read_key(&self.dir(Self::MEMORY, id).join("memory.oom_control"), "oom_kill").is_some_and(|n| n > 0)
    }

    fn freeze(&self, id: &str) -> io::Result<()> {
        if !self.controllers().contains(&"freezer") {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "no v1 freezer hierarchy"));
        }
        write(&self.dir("freezer", id).join("freezer.state"), "FROZEN")
    }

    fn thaw(&self, id: &str) -> io::Result<()> {
        match write(&self.dir("freezer", id).join("freezer.state"), "THAWED") {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    fn frozen(&self, id: &str) -> bool {
        fs::read_to_string(self.dir("freezer", id).join("freezer.state")).is_ok_and(|s| s.trim() == "FROZEN")
    }

    fn frozen_holds_signals(&self) -> bool {
        self.freezer_parent().is_some()
    }

    fn freezer_parent(&self) -> Option<PathBuf> {
        self.controllers().contains(&"freezer").then(|| self.root.join("freezer").join(PARENT))
    }

    fn kill_pending(&self, id: &str) -> bool {
        let tasks = fs::read_to_string(self.dir(Self::MEMORY, id).join("tasks")).unwrap_or_default();
        tasks.lines().any(|tid| {
            let status = fs::read_to_string(format!("/proc/{}/status", tid.trim())).unwrap_or_default();
            sigkill_pending(&status)
        })
    }
}

/// Whether a `/proc/<tid>/status` shows a `SIGKILL` pending, for the thread (`SigPnd`) or its process (`ShdPnd`).
fn sigkill_pending(status: &str) -> bool {
    let bit = 1u64 << (libc::SIGKILL - 1);
    status.lines().any(|line| {
        let Some((key, mask)) = line.split_once(':') else { return false };
        (key == "SigPnd" || key == "ShdPnd") && u64::from_str_radix(mask.trim(), 16).is_ok_and(|m| m & bit != 0)
    })
}

/// cgroup v2: one unified hierarchy at `<root>`.
#[derive(Debug)]
pub struct CgroupV2 {
    root: PathBuf,
    mkdir: MkdirFn,
}

impl CgroupV2 {
    const CONTROLLERS: [&'static str; 3] = ["memory", "cpu", "pids"];

    pub fn new(root: &Path) -> CgroupV2 {
        CgroupV2 { root: root.to_owned(), mkdir: create_dir }
    }

    /// With a replacement for `mkdir(2)` of a sandbox group, so tests can populate control files like the kernel.
    pub fn with_mkdir(root: &Path, mkdir: MkdirFn) -> CgroupV2 {
        CgroupV2 { root: root.to_owned(), mkdir }
    }

    fn parent(&self) -> PathBuf {
        self.root.join(PARENT)
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.parent().join(id)
    }
}

impl CgroupDriver for CgroupV2 {
    fn version(&self) -> u8 {
        2
    }

    fn setup_parent(&self) -> io::Result<()> {
        let parent = self.parent();
        mkdir_exist_ok(&parent)?;
        // The controllers must be enabled in the root's subtree_control (by the machine's init system, which owns
        // it: we never write there). Then enable them for our children.
        let available = fs::read_to_string(parent.join("cgroup.controllers"))
            .map_err(|e| with_path(e, &parent.join("cgroup.controllers")))?;
        let available: Vec<&str> = available.split_whitespace().collect();
        let missing: Vec<&str> = Self::CONTROLLERS.into_iter().filter(|c| !available.contains(c)).collect();
        if missing.contains(&"memory") {
            return Err(io::Error::other(format!(
                "cgroup v2 controller(s) {missing:?} not available in {} (enable them in the root's cgroup.subtree_control)",
                parent.display()
            )));
        }
        let enable: Vec<String> = Self::CONTROLLERS.into_iter().filter(|c| available.contains(c)).map(|c| format!("+{c}")).collect();
        write(&parent.join("cgroup.subtree_control"), &enable.join(" "))
    }

    fn create(&self, id: &str, limits: &Limits) -> io::Result<Vec<PathBuf>> {
        let dir = self.dir(id);
        mkdir_fresh(&dir, self.mkdir)?;
        let result = (|| {
            let pids = dir.join("pids.max");
            if pids.exists() {
                write(&pids, &limits.pids_max.to_string())?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(vec![dir.join("cgroup.procs")]),
            Err(e) => {
                let _ = self.remove(id, Duration::ZERO);
                Err(e)
            }
        }
    }

    fn set_limits(&self, id: &str, limits: &Limits) -> io::Result<()> {
        let dir = self.dir(id);
        write(&dir.join("memory.max"), &limits.memory_bytes().to_string())?;
        // Absent without swap accounting.
        let swap = dir.join("memory.swap.max");
        if swap.exists() {
            write(&swap, "0")?;
        }
        let weight = dir.join("cpu.weight");
        if weight.exists() {
            write(&weight, &limits.cpu_weight().to_string())?;
        }
        Ok(())
    }

    fn dirs(&self, id: &str) -> Vec<PathBuf> {
        vec![self.dir(id)]
    }

    fn parents(&self) -> Vec<PathBuf> {
        vec![self.parent()]
    }

    fn peak_memory_path(&self, id: &str) -> PathBuf {
        self.dir(id).join("memory.peak")
    }

    fn oom_killed(&self, id: &str) -> bool {
        read_key(&self.dir(id).join("memory.events"), "oom_kill").is_some_and(|n| n > 0)
    }

    fn freeze(&self, id: &str) -> io::Result<()> {
        write(&self.dir(id).join("cgroup.freeze"), "1")
    }

    fn thaw(&self, id: &str) -> io::Result<()> {
        match write(&self.dir(id).join("cgroup.freeze"), "0") {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    fn frozen(&self, id: &str) -> bool {
        read_key(&self.dir(id).join("cgroup.events"), "frozen") == Some(1)
    }

    fn kill_pending(&self, _id: &str) -> bool {
        // A fatal signal wakes a frozen process on v2: nothing waits for a thaw.
        false
    }
}

/// A process that removes the sandbox groups of the process that made it once that process is gone, even by
/// `SIGKILL`: every group named `<prefix>...` under each of the driver's parents ([`CgroupDriver::parents`]). It first
/// thaws the prefix's freezer groups (v1: a frozen task does not die of `SIGKILL`, not even of the parent-death signal
/// of a sandbox whose worker was killed, until thawed), then removes the groups, passing again every
/// [`GroupGuard::PAUSE`] while some are busy (their processes are still dying), for up to [`GroupGuard::PATIENCE`].
/// Only the groups there when its maker is gone are touched: a worker started meanwhile with the same prefix (the same
/// data directory) keeps its own. It waits for the end of a socket whose other end only its maker holds. Dropping the guard tells it so first: it
/// then makes a single pass (after a clean shutdown it finds nothing), ends at once and is reaped.
///
/// It is forked from a multi-threaded process: the child only makes raw system calls on memory prepared before the
/// fork (no allocation, no locks), then `_exit`s.
#[derive(Debug)]
pub struct GroupGuard {
    pid: libc::pid_t,
    alive: Option<std::os::fd::OwnedFd>,
}

/// What the guard's child works on, made before the fork.
struct GuardPlan<'a> {
    parents: &'a [std::ffi::CString],
    freezer: Option<&'a std::ffi::CStr>,
    prefix: &'a [u8],
    /// Room for the names of the groups found when the maker is gone (NUL-terminated, one after the other): only
    /// those are thawed and removed, never a group of a later worker with the same prefix.
    found: &'a mut [u8],
}

/// Room for the names of a dead worker's groups (`<prefix><32 hex digits>`, a few thousand of them).
const GUARD_NAMES: usize = 256 * 1024;

/// Records NUL-terminated `name` in `found` (holding `len` bytes) unless it is there already or there is no room.
fn note_name(found: &mut [u8], len: &mut usize, name: &std::ffi::CStr) {
    let name = name.to_bytes_with_nul();
    if !has_name(&found[..*len], name) && *len + name.len() <= found.len() {
        found[*len..*len + name.len()].copy_from_slice(name);
        *len += name.len();
    }
}

/// Whether the NUL-terminated names in `found` include `name` (with its NUL).
fn has_name(found: &[u8], name: &[u8]) -> bool {
    found.split_inclusive(|&b| b == 0).any(|n| n == name)
}

impl GroupGuard {
    /// How long the guard retries groups that are still busy once its maker is gone.
    pub const PATIENCE: Duration = Duration::from_secs(30);
    /// The pause between two passes.
    pub const PAUSE: Duration = Duration::from_millis(20);

    /// Forks the guard of the groups named `<prefix>...` of `driver`. The prefix must not be empty (the guard would
    /// remove every sandbox group of the machine).
    pub fn start(driver: &dyn CgroupDriver, prefix: &str) -> io::Result<GroupGuard> {
        use std::ffi::CString;
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        use std::os::unix::ffi::OsStrExt;
        if prefix.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "a group guard needs a sandbox id prefix"));
        }
        let c_path = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
        let parents = driver.parents().iter().map(|p| c_path(p)).collect::<io::Result<Vec<_>>>()?;
        let freezer = driver.freezer_parent().map(|p| c_path(&p)).transpose()?;
        let mut found = vec![0u8; GUARD_NAMES];
        let mut plan = GuardPlan { parents: &parents, freezer: freezer.as_deref(), prefix: prefix.as_bytes(), found: &mut found };
        let mut fds = [0; 2];
        // SAFETY: fds is a valid array of two ints.
        if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both just made; we own them.
        let (read, alive) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: the child only makes async-signal-safe system calls on memory prepared before the fork (no
        // allocation, no locks), then `_exit`s.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: see above.
            unsafe { guard(read.as_raw_fd(), &mut plan) }
        }
        Ok(GroupGuard { pid, alive: Some(alive) })
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        if let Some(alive) = self.alive.take() {
            // A byte first: its maker is not gone, the guard need not wait for busy groups. (A socket, not a pipe: no
            // SIGPIPE if the guard is gone already.)
            // SAFETY: plain system call on a socket we own.
            unsafe { libc::send(alive.as_raw_fd(), b"x".as_ptr().cast(), 1, libc::MSG_NOSIGNAL) };
        }
        loop {
            // SAFETY: reaps our own child.
            let r = unsafe { libc::waitpid(self.pid, std::ptr::null_mut(), 0) };
            if r >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                break;
            }
        }
    }
}

/// The guard's body, in the forked child: waits for its maker's end, thaws, removes, exits.
///
/// # Safety
/// Only in a child just forked: makes raw system calls and `_exit`s.
unsafe fn guard(read: libc::c_int, plan: &mut GuardPlan<'_>) -> ! {
    // SAFETY: plain system calls on fds and buffers of our own.
    unsafe {
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
            libc::signal(signal, libc::SIG_IGN);
        }
        libc::dup2(read, 0);
        libc::syscall(libc::SYS_close_range, 1u32, u32::MAX, 0u32);
        let mut byte = [0u8; 1];
        let maker_gone = loop {
            let n = libc::read(0, byte.as_mut_ptr().cast(), 1);
            if n > 0 {
                break false;
            }
            if n == 0 || *libc::__errno_location() != libc::EINTR {
                break true;
            }
        };
        libc::close(0);
        let patience = if maker_gone { GroupGuard::PATIENCE } else { Duration::ZERO };
        let deadline = monotonic_ms() + patience.as_millis() as i64;
        // The groups there are now: a worker started later with the same prefix makes others, left alone.
        let mut len = 0;
        for parent in plan.parents {
            for_each_group(parent, plan.prefix, |_, name| note_name(plan.found, &mut len, name));
        }
        let found = &plan.found[..len];
        loop {
            if let Some(freezer) = plan.freezer {
                for_each_group(freezer, plan.prefix, |dir, name| {
                    if !has_name(found, name.to_bytes_with_nul()) {
                        return;
                    }
                    let mut path = [0u8; 512];
                    let file = b"/freezer.state\0";
                    let name = name.to_bytes();
                    if name.len() + file.len() <= path.len() {
                        path[..name.len()].copy_from_slice(name);
                        path[name.len()..name.len() + file.len()].copy_from_slice(file);
                        let fd = libc::openat(dir, path.as_ptr().cast(), libc::O_WRONLY | libc::O_CLOEXEC);
                        if fd >= 0 {
                            libc::write(fd, b"THAWED".as_ptr().cast(), 6);
                            libc::close(fd);
                        }
                    }
                });
            }
            let mut busy = false;
            for parent in plan.parents {
                for_each_group(parent, plan.prefix, |dir, name| {
                    if has_name(found, name.to_bytes_with_nul()) && libc::unlinkat(dir, name.as_ptr(), libc::AT_REMOVEDIR) != 0 && *libc::__errno_location() == libc::EBUSY {
                        busy = true;
                    }
                });
            }
            if !busy || monotonic_ms() >= deadline {
                break;
            }
            let pause = libc::timespec { tv_sec: 0, tv_nsec: GroupGuard::PAUSE.as_nanos() as libc::c_long };
            libc::nanosleep(&pause, std::ptr::null_mut());
        }
        libc::_exit(0)
    }
}

/// Milliseconds of `CLOCK_MONOTONIC` (async-signal-safe).
fn monotonic_ms() -> i64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: now is a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec * 1000 + now.tv_nsec / 1_000_000
}

/// Calls `f` with an fd of `parent` and the name of each of its entries that starts with `prefix`, without allocating
/// (for the guard's child).
///
/// # Safety
/// `f` gets a directory fd valid only during the call.
unsafe fn for_each_group(parent: &std::ffi::CStr, prefix: &[u8], mut f: impl FnMut(libc::c_int, &std::ffi::CStr)) {
    // SAFETY: plain system calls on a path, an fd and a buffer of our own.
    unsafe {
        let dir = libc::open(parent.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC);
        if dir < 0 {
            return;
        }
        // linux_dirent64: d_ino (8), d_off (8), d_reclen (2), d_type (1), d_name (NUL-terminated).
        let mut entries = [0u8; 8192];
        loop {
            let n = libc::syscall(libc::SYS_getdents64, dir, entries.as_mut_ptr(), entries.len());
            if n <= 0 {
                break;
            }
            let mut at = 0usize;
            while at + 19 < n as usize {
                let len = u16::from_ne_bytes([entries[at + 16], entries[at + 17]]) as usize;
                let end = (at + len).min(n as usize);
                if let Ok(name) = std::ffi::CStr::from_bytes_until_nul(&entries[at + 19..end])
                    && name.to_bytes().starts_with(prefix)
                {
                    f(dir, name);
                }
                at += len.max(1);
            }
        }
        libc::close(dir);
    }
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    fs::write(path, value).map_err(|e| with_path(e, path))
}

fn mkdir_exist_ok(path: &Path) -> io::Result<()> {
    match fs::create_dir(path) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(with_path(e, path)),
        _ => Ok(()),
    }
}

/// How a sandbox group directory is made (`fs::create_dir`, except in tests).
pub type MkdirFn = fn(&Path) -> io::Result<()>;

fn create_dir(path: &Path) -> io::Result<()> {
    fs::create_dir(path)
}

/// Creates `path`; a leftover group of the same name (from a crashed worker) is removed first if it is empty.
fn mkdir_fresh(path: &Path, mkdir: MkdirFn) -> io::Result<()> {
    match mkdir(path) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_dir(path).map_err(|e| with_path(e, path))?;
            mkdir(path).map_err(|e| with_path(e, path))
        }
        r => r.map_err(|e| with_path(e, path)),
    }
}

/// rmdir each dir, retrying on EBUSY for up to `patience` (a group stays busy briefly after its last process died).
/// On a real cgroupfs rmdir removes a group with its control files; on a plain directory (tests) the files are removed
/// first.
fn remove_dirs(dirs: &[PathBuf], patience: Duration) -> io::Result<()> {
    let deadline = Instant::now() + patience;
    let mut first_err = None;
    for dir in dirs {
        loop {
            match fs::remove_dir(dir) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) && !is_cgroupfs(dir) => {
                    // A fake tree: plain files.
                    if let Err(e) = fs::remove_dir_all(dir) {
                        first_err.get_or_insert(with_path(e, dir));
                    }
                    break;
                }
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => {
                    first_err.get_or_insert(with_path(e, dir));
                    break;
                }
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

fn is_cgroupfs(path: &Path) -> bool {
    const CGROUP_SUPER_MAGIC: i64 = 0x27e0eb;
    const CGROUP2_SUPER_MAGIC: i64 = 0x63677270;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else { return false };
    // SAFETY: statfs is plain old data, zeroed is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated path, st a valid out pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return false;
    }
    #[allow(clippy::unnecessary_cast)]
    let t = st.f_type as i64;
    t == CGROUP_SUPER_MAGIC || t == CGROUP2_SUPER_MAGIC
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Value of a `key N` line of a flat keyed file (memory.events, memory.oom_control).
fn read_key(path: &Path, key: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        if k == key { v.trim().parse().ok() } else { None }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path, content: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap()
    }

    /// mkdir of a v2 group as the kernel does it (cpu, memory and pids enabled, swap accounting on).
    fn fake_mkdir_v2(dir: &Path) -> io::Result<()> {
        fs::create_dir(dir)?;
        // The kernel's defaults.
        for (f, value) in [
            ("cgroup.procs", ""),
            ("memory.max", "max"),
            ("memory.swap.max", "max"),
            ("cpu.weight", "100"),
            ("pids.max", "max"),
            ("memory.peak", "0"),
            ("memory.events", ""),
            ("cgroup.freeze", "0"),
            ("cgroup.events", "populated 1\nfrozen 0\n"),
        ] {
            fs::write(dir.join(f), value)?;
        }
        Ok(())
    }

    /// mkdir of a v1 group as the kernel does it, with swap accounting on.
    fn fake_mkdir_v1(dir: &Path) -> io::Result<()> {
        fs::create_dir(dir)?;
        let ctl = dir.parent().unwrap().parent().unwrap().file_name().unwrap();
        let files: &[&str] = match ctl.to_str().unwrap() {
            "memory" => &[
                "memory.limit_in_bytes",
                "memory.memsw.limit_in_bytes",
                "memory.kmem.tcp.limit_in_bytes",
                "memory.swappiness",
                "memory.max_usage_in_bytes",
                "memory.oom_control",
                "tasks",
            ],
            "cpu" => &["cpu.shares"],
            "freezer" => &["freezer.state"],
            "pids" => &["pids.max"],
            _ => &[],
        };
        for f in std::iter::once(&"cgroup.procs").chain(files) {
            fs::write(dir.join(f), "")?;
        }
        Ok(())
    }

    #[test]
    fn limits_math() {
        let l = Limits { memory_mb: 128, pids_max: 1024 };
        assert_eq!(l.memory_bytes(), 134_217_728);
        assert_eq!(l.cpu_shares(), 74);
        assert_eq!(l.cpu_weight(), 7);
        let tiny = Limits { memory_mb: 1, pids_max: 1 };
        assert_eq!((tiny.cpu_shares(), tiny.cpu_weight()), (2, 1));
        let huge = Limits { memory_mb: 10_240, pids_max: 1 };
        assert_eq!((huge.cpu_shares(), huge.cpu_weight()), (5927, 578));
    }

    #[test]
    fn detect_versions() {
        let t = tempfile::tempdir().unwrap();
        assert!(detect(t.path()).is_err());
        fs::create_dir(t.path().join("memory")).unwrap();
        assert_eq!(detect(t.path()).unwrap().version(), 1);
        touch(&t.path().join("cgroup.controllers"), "cpu memory pids");
        assert_eq!(detect(t.path()).unwrap().version(), 2);
    }

    #[test]
    fn v2_fake_tree() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        touch(&root.join("cgroup.controllers"), "cpuset cpu io memory hugetlb pids rdma misc\n");
        // What the kernel would show in a new child of a root with subtree_control "cpu memory pids".
        touch(&root.join(PARENT).join("cgroup.controllers"), "cpu memory pids\n");
        touch(&root.join(PARENT).join("cgroup.subtree_control"), "");
        let cg = CgroupV2::with_mkdir(root, fake_mkdir_v2);
        cg.setup_parent().unwrap();
        assert_eq!(read(&root.join("ignis/cgroup.subtree_control")), "+memory +cpu +pids");

        let limits = Limits { memory_mb: 256, pids_max: 1024 };
        let procs = cg.create("sb-1", &limits).unwrap();
        assert_eq!(procs, vec![root.join("ignis/sb-1/cgroup.procs")]);
        let d = root.join("ignis/sb-1");
        assert_eq!(read(&d.join("pids.max")), "1024");
        assert_eq!(read(&d.join("memory.max")), "max", "memory is limited only when the sandbox is launched");
        cg.set_limits("sb-1", &limits).unwrap();
        assert_eq!(read(&d.join("memory.max")), "268435456");
        assert_eq!(read(&d.join("memory.swap.max")), "0");
        assert_eq!(read(&d.join("cpu.weight")), "14");
        assert_eq!(read(&d.join("pids.max")), "1024");
        assert_eq!(read(&d.join("cgroup.procs")), "");

        touch(&d.join("memory.peak"), "12345\n");
        touch(&d.join("memory.events"), "low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\noom_group_kill 0\n");
        assert_eq!(cg.peak_memory_bytes("sb-1"), Some(12345));
        assert!(!cg.oom_killed("sb-1"));
        touch(&d.join("memory.events"), "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n");
        assert!(cg.oom_killed("sb-1"));

        assert!(!cg.frozen("sb-1"));
        cg.freeze("sb-1").unwrap();
        assert_eq!(read(&d.join("cgroup.freeze")), "1");
        touch(&d.join("cgroup.events"), "populated 1\nfrozen 1\n");
        assert!(cg.frozen("sb-1"));
        cg.thaw("sb-1").unwrap();
        assert_eq!(read(&d.join("cgroup.freeze")), "0");
        assert!(!cg.frozen_holds_signals());
        assert!(!cg.kill_pending("sb-1"));

        cg.remove("sb-1", Duration::ZERO).unwrap();
        cg.thaw("sb-1").unwrap(); // a group that is gone needs no thaw
        assert!(!d.exists());
        cg.remove("sb-1", Duration::ZERO).unwrap(); // idempotent
        assert!(root.join(PARENT).exists());
        assert_eq!(cg.peak_memory_bytes("sb-1"), None);
        assert!(!cg.oom_killed("sb-1"));
    }

    #[test]
    fn v2_missing_memory_controller() {
        let t = tempfile::tempdir().unwrap();
        touch(&t.path().join("cgroup.controllers"), "cpu pids\n");
        touch(&t.path().join(PARENT).join("cgroup.controllers"), "cpu pids\n");
        let err = detect(t.path()).unwrap().setup_parent().unwrap_err();
        assert!(err.to_string().contains("memory"), "{err}");
    }

    #[test]
    fn v1_fake_tree() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        for c in ["memory", "cpu", "pids", "freezer", "cpuacct"] {
            fs::create_dir(root.join(c)).unwrap();
        }
        assert_eq!(detect(root).unwrap().version(), 1);
        let cg = CgroupV1::with_mkdir(root, fake_mkdir_v1);
        cg.setup_parent().unwrap();
        for c in ["memory", "cpu", "pids", "freezer"] {
            assert!(root.join(c).join(PARENT).is_dir());
        }
        assert!(!root.join("cpuacct").join(PARENT).exists());

        let limits = Limits { memory_mb: 128, pids_max: 77 };
        let procs = cg.create("sb-2", &limits).unwrap();
        assert_eq!(procs, ["memory", "cpu", "pids", "freezer"].map(|c| root.join(c).join("ignis/sb-2/cgroup.procs")).to_vec());
        assert_eq!(read(&root.join("pids/ignis/sb-2/pids.max")), "77");
        cg.set_limits("sb-2", &limits).unwrap();
        let m = root.join("memory/ignis/sb-2");
        assert_eq!(read(&m.join("memory.limit_in_bytes")), "134217728");
        assert_eq!(read(&m.join("memory.memsw.limit_in_bytes")), "134217728");
        assert_eq!(read(&m.join("memory.kmem.tcp.limit_in_bytes")), "134217728", "socket buffers bounded too");
        assert_eq!(read(&m.join("memory.swappiness")), "0");
        assert_eq!(read(&root.join("cpu/ignis/sb-2/cpu.shares")), "74");
        assert_eq!(read(&root.join("pids/ignis/sb-2/pids.max")), "77");

        touch(&m.join("memory.max_usage_in_bytes"), "4096\n");
        assert!(!cg.oom_killed("sb-2"));
        touch(&m.join("memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n");
        assert_eq!(cg.peak_memory_bytes("sb-2"), Some(4096));
        assert!(cg.oom_killed("sb-2"));

        let state = root.join("freezer/ignis/sb-2/freezer.state");
        cg.freeze("sb-2").unwrap();
        assert_eq!(read(&state), "FROZEN");
        assert!(cg.frozen("sb-2"));
        cg.thaw("sb-2").unwrap();
        assert_eq!(read(&state), "THAWED");
        assert!(!cg.frozen("sb-2"));
        assert!(cg.frozen_holds_signals());
        assert!(!cg.kill_pending("sb-2"), "no tasks");

        cg.remove("sb-2", Duration::ZERO).unwrap();
        for c in ["memory", "cpu", "pids", "freezer"] {
            assert!(!root.join(c).join("ignis/sb-2").exists());
            assert!(root.join(c).join("ignis").exists());
        }

        // Without swap accounting (plain mkdir: no memsw file), memsw is not written; a missing controller is skipped,
        // and without a freezer, freezing is refused (nothing is frozen, no kill waits for a thaw).
        fs::remove_dir_all(root.join("pids")).unwrap();
        fs::remove_dir_all(root.join("freezer")).unwrap();
        let cg = CgroupV1::new(root);
        let limits = Limits { memory_mb: 64, pids_max: 1 };
        let procs = cg.create("sb-3", &limits).unwrap();
        assert_eq!(procs.len(), 2);
        cg.set_limits("sb-3", &limits).unwrap();
        assert!(!root.join("memory/ignis/sb-3/memory.memsw.limit_in_bytes").exists());
        assert_eq!(read(&root.join("memory/ignis/sb-3/memory.limit_in_bytes")), "67108864");
        assert_eq!(cg.freeze("sb-3").unwrap_err().kind(), io::ErrorKind::Unsupported);
        assert!(!cg.frozen_holds_signals());
        cg.thaw("sb-3").unwrap();
        assert!(!cg.frozen("sb-3"));
        cg.remove("sb-3", Duration::ZERO).unwrap();
        assert!(!root.join("memory/ignis/sb-3").exists());
    }

    #[test]
    fn guard_dropped_by_its_maker_makes_one_pass() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        for c in ["memory", "cpu", "pids", "freezer"] {
            fs::create_dir(root.join(c)).unwrap();
        }
        let cg = CgroupV1::new(root);
        cg.setup_parent().unwrap();
        assert_eq!(cg.parents(), ["memory", "cpu", "pids", "freezer"].map(|c| root.join(c).join(PARENT)).to_vec());
        assert_eq!(CgroupV2::new(root).parents(), vec![root.join(PARENT)]);
        assert!(GroupGuard::start(&cg, "").is_err(), "an empty prefix would take every group");

        let guard = GroupGuard::start(&cg, "w1-").unwrap();
        for c in ["memory", "cpu", "pids"] {
            for id in ["w1-a", "w1-b", "w2-a"] {
                fs::create_dir(root.join(c).join(PARENT).join(id)).unwrap();
            }
        }
        // A group that is not empty (a plain directory with a file: ENOTEMPTY, not busy) stays, thawed.
        touch(&root.join("freezer/ignis/w1-a/freezer.state"), "FROZEN");
        touch(&root.join("freezer/ignis/w2-a/freezer.state"), "FROZEN");
        drop(guard);
        for c in ["memory", "cpu", "pids"] {
            let parent = root.join(c).join(PARENT);
            assert!(!parent.join("w1-a").exists() && !parent.join("w1-b").exists(), "{c}");
            assert!(parent.join("w2-a").exists(), "{c}: another prefix's group stays");
        }
        assert_eq!(read(&root.join("freezer/ignis/w1-a/freezer.state")), "THAWED");
        assert_eq!(read(&root.join("freezer/ignis/w2-a/freezer.state")), "FROZEN");
    }

    #[test]
    fn the_guard_notes_each_name_once_within_its_room() {
        let mut room = [0u8; 12];
        let mut len = 0;
        for name in [c"w1-a", c"w1-b", c"w1-a", c"w1-cc"] {
            note_name(&mut room, &mut len, name);
        }
        // "w1-cc" does not fit: not noted, so never touched.
        assert_eq!(&room[..len], b"w1-a\0w1-b\0");
        assert!(has_name(&room[..len], b"w1-a\0") && has_name(&room[..len], b"w1-b\0"));
        assert!(!has_name(&room[..len], b"w1-\0") && !has_name(&room[..len], b"w1-cc\0") && !has_name(&room[..len], b"w1-ab\0"));
    }

    #[test]
    fn pending_sigkill() {
        let status = |sig: &str, shd: &str| format!("Name:\tx\nSigQ:\t0/1\nSigPnd:\t{sig}\nShdPnd:\t{shd}\nSigBlk:\t0000000000000100\n");
        for (sig, shd, pending) in [
            ("0000000000000000", "0000000000000000", false),
            ("0000000000000100", "0000000000000000", true),
            ("0000000000000000", "0000000000000100", true),
            ("0000000000004000", "0000000000000002", false), // SIGTERM, SIGINT
            ("0000000000000000", "ffffffffffffffff", true),
            ("zz", "", false),
        ] {
            assert_eq!(sigkill_pending(&status(sig, shd)), pending, "{sig} {shd}");
        }
        assert!(!sigkill_pending(""));
    }
}
