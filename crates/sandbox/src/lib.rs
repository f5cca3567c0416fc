//! Linux isolation for one function runtime.
//!
//! A [`Host`] is created once per worker. It may keep a pool of *shells*: sandboxes whose namespaces, cgroup,
//! network and root filesystem (all but the code, `/tmp` and `/dev/shm`) are made but that have no function yet
//! ([`Host::set_pool_size`], [`Host::refill`]); a cold start that finds a shell skips most of the work (joining a
//! cgroup is the slowest step of it). [`Host::spawn`] builds one
//! sandbox (from a shell when there is one): a process `ignis-init` that is pid 1 of new user, pid, mount, ipc and uts
//! namespaces (owned by the new user namespace) and of an empty network namespace of the worker's ([`netns`]), inside
//! its own cgroup, which pivot_roots into a fresh root
//! holding only the read-only runtime base, the code at `/var/task` (read-only) and a size-bounded `/tmp`, or, for a
//! function packaged as a container image ([`ImageRoot`]), the image read-only as the root with the same `/proc`,
//! `/dev` and `/tmp` (the worker
//! serves the runtime API on a listener bound to 127.0.0.1:9001 in the network namespace), then forks and execs the
//! entrypoint as an unprivileged user without capabilities, under a seccomp filter. All mounts live in the sandbox's
//! own mount namespace or in its spawner thread's (the root base), so they vanish with them; the only host state is the
//! cgroup, which [`Sandbox::destroy`] removes (or, if the worker dies first, even by `SIGKILL`, the host's
//! [`cgroup::GroupGuard`]), and the sandbox's user id range, which it releases.
//!
//! # Layers
//!
//! 1. **User namespace** ([`userns`]). Inside uids/gids `0..65536` map to `base..base + 65536` outside, a range that
//!    belongs to no host user and that no other live sandbox on the machine has ([`Sandbox::uid_base`]). The maps
//!    are written by the worker (host root) right after the `clone`, before the child may go on; `setgroups` stays
//!    allowed only so that the child can drop the worker's supplementary groups. Init is root *inside* (outside:
//!    `base`, no privilege at all on the host: its capabilities count only for objects its user namespace owns), the
//!    runtime is uid 993 / gid 990 inside (`base + 993` / `base + 990` outside). Host files (`/usr`, the code) are
//!    seen through read-only mounts and, being owned by unmapped ids, with "other" permissions only. The namespace
//!    is owned by `base`, not root, so the kernel charges the sandbox's per-user resources (inotify, message queues,
//!    ...) to `base`; init sets the namespace's own limits ([`userns::USER_LIMITS`]).
//! 2. **Other namespaces**: pid (init is pid 1; its death kills the rest), mount (private, pivoted, no `/sys`),
//!    network (`lo`, and with [`Host::set_network`] `eth0`, a link routed to the host; made by the worker, so owned
//!    by the host's user namespace: nothing in the sandbox, init included, has any network privilege; reused by a
//!    later sandbox once empty, see [`netns`]), ipc, uts (hostname
//!    `sandbox`), cgroup (rooted at the sandbox's group).
//! 3. **Cgroup** ([`cgroup`]): memory (no swap), CPU share, `pids.max`. The worker moves the child into it while init
//!    starts (inside root cannot write the host's cgroup files); init waits for that before it forks anything.
//! 4. **Credentials of the runtime**: uid 993 / gid 990, no supplementary groups, empty effective, permitted,
//!    inheritable, ambient *and bounding* capability sets, `no_new_privs`.
//! 5. **Seccomp** ([`seccomp`], policy in `seccomp/x86_64.json`): an allow-list installed right before `execve`;
//!    anything else fails with `EPERM` (the runtime is not killed), `clone3` with `ENOSYS`, a foreign architecture
//!    kills. Refused, among others: mount and the new mount API, `pivot_root`, `chroot`, `unshare`, `setns`, `clone`
//!    with `CLONE_NEW*` flags, `ptrace`, `process_vm_*`, `pidfd_getfd`, `kcmp`, `perf_event_open`, `bpf`, kernel
//!    modules, `kexec_*`, keyrings, `userfaultfd`, `io_uring_*`, `fanotify_*`, file handles, setting clocks,
//!    `iopl`/`ioperm`, `acct`, `quotactl`, `swapon`/`swapoff`, `reboot`, `syslog`, `vhangup`, `mknod` of devices,
//!    `personality` other than the default; sockets of families other than `AF_UNIX`, `AF_INET`, `AF_INET6` and
//!    `AF_NETLINK` (`EAFNOSUPPORT`), netlink other than `NETLINK_ROUTE` (`EPROTONOSUPPORT`). The file lists every
//!    refused group with its reason.
//!
//! # Invariants
//!
//! **Fds crossing into the sandbox.** `ignis-init` starts with exactly fd 0 (`/dev/null`), fds 1 and 2 (the write
//! end of the output pipe) and fd 3 (its end of the control socket); every other fd is made close-on-exec before
//! its exec (`close_range(CLOSE_RANGE_CLOEXEC)`), so nothing of the worker leaks in, not even fds other threads
//! created without `O_CLOEXEC`. (The child also uses, until that exec, a "go" pipe, an error pipe and the `O_PATH`
//! fd of the `ignis-init` executable it execs through.) Init then receives, over the control socket, detached
//! read-only mount trees, each closed once attached: a container image's or runtime base's (a clone of
//! [`ImageRoot::tree`]; attached and entered, before the pivot into it), the code directory's (a clone of its
//! image's mount, see [`code`]; attached at `/var/task`) and the layers directory's (likewise, at `/opt`), each if
//! the function has one. The caller's [`ImageRoot::tree`] is closed with the [`SandboxConfig`], once
//! [`Host::spawn`] returns. The runtime gets only fds
//! 0, 1 and 2 (fd 3 is close-on-exec). The worker keeps: the read end of the output pipe ([`Sandbox::output`]), the
//! runtime API listener of the sandbox's network namespace ([`Sandbox::runtime_api`]), the control socket and a
//! pidfd of init.
//!
//! **What the root holds.** See [`init`] (`build_base`, `enter_root`, `mount_scratch`): read-only host `/usr` (+ the
//! top-level links into it), a generated minimal `/etc` with a few read-only host files (never `/etc/shadow`), the
//! code read-only at `/var/task`, the layers read-only at `/opt` (else it is empty), a private bounded `/tmp`, a fresh `/proc`, a minimal `/dev`; no
//! `/sys`. The read-only part (a read-only tmpfs with the binds) is the *base*, built once per [`Host`] and spawner
//! thread, on the empty directory `<state_dir>/root`, in a mount namespace of that thread's own (the thread unshares
//! it on its first spawn: `unshare(CLONE_NEWNS)` affects only the calling thread, and also gives it its own cwd and
//! root; the namespace is a slave of the host's, so host mounts still show in it and nothing goes back). Each sandbox
//! cloned from the thread gets a copy of the base (its mounts' flags locked by the kernel), binds it recursively as
//! its root and adds its own `/proc`, code, `/tmp` and `/dev/shm`. Nothing of it is seen on the host, and it all
//! vanishes with the thread and the sandboxes.
//!
//! A sandbox of a container image ([`ImageRoot`]; see [`init`], `enter_image`) holds instead: the image read-only,
//! nosuid and nodev as `/`, a fresh `/proc`, the base's minimal `/dev` (a recursive bind: the host's device nodes in
//! it are locked mounts, which cannot be moved), a private bounded `/tmp` and `/dev/shm`; no host `/usr` or `/etc`
//! files, no `/var/task` mount, no `/sys`. It starts as every sandbox does, from the base (so shells serve both
//! kinds), and once given its function attaches the image on the base's `/var/task`, mounts `/proc` and `/dev` on
//! the image's own `proc` and `dev` directories, pivots into it and detaches the base. The image's `dev`, `proc`
//! and `tmp` must be directories (the worker checks before it sends the tree: [`SandboxError::Image`]); its files
//! appear owned by the overflow id (their owners are unmapped in the sandbox), so must be readable by others. A
//! *runtime base* is such an image given with a code directory, and maybe a layers directory: they are mounted on
//! the image's own `/var/task` and `/opt` (which must be directories) after the pivot, as on the host base.
//!
//! **Who cleans up what.**
//! - Processes: when the runtime exits, init reports its status and exits, and the kernel kills everything else in
//!   the pid namespace. [`Sandbox::kill`] SIGKILLs init with the same effect. Init is also killed if the thread that
//!   spawned it exits (`PR_SET_PDEATHSIG`), and exits if the worker closes the control socket (drops the
//!   [`Sandbox`]).
//! - Mounts, ipc, the user namespace: private to the sandbox; freed by the kernel with the last process.
//! - The network namespace: back to the host's pool of empty ones once init is reaped and the worker closed its fds in
//!   it (the last [`netns::NetnsLease`] dropped); the pool keeps a bounded number, the kernel frees the rest.
//! - The cgroup(s): created by [`Host::spawn`] before init starts, removed by [`Sandbox::destroy`] (also run by
//!   `Drop`), or by `spawn` itself when it fails. A crashed worker's groups are thawed and removed by its
//!   [`cgroup::GroupGuard`] (a process of its own, started with the id prefix); were that killed too, the next
//!   worker with the prefix removes them ([`Host::remove_stale_groups`]); a group of the same id is removed when reused.
//! - Code images: unnamed files (gone with their last reference), mounted detached; a loop device (kernels without
//!   file-backed erofs) is detached by the kernel with its last mount.
//! - Container images: the caller's mounts; a sandbox holds a clone of one's tree for its life.
//! - The uid range: taken (an OFD lock on one byte of [`userns::LOCK_FILE`]) before the clone, released by
//!   [`Sandbox::destroy`] once init is reaped (so no process of the sandbox is left), or by `spawn` when it fails;
//!   the kernel releases a crashed worker's ranges with its fds.
//! - Zombie: init is a child of the worker process; [`Sandbox::wait`] (or destroy/drop) reaps it.

pub mod cgroup;
pub mod code;
pub mod init;
pub mod netns;
mod proto;
pub mod seccomp;
mod spawn;
pub mod userns;

use std::ffi::CString;
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cgroup::CgroupDriver;
use proto::Tree;

pub struct SandboxConfig {
    /// Host directory mounted read-only at `/var/task`, or `None` (a container image's sandbox: no code apart from
    /// the image). Its contents must be readable (and searchable) by *others* (the sandbox user is uid 993 in its
    /// own user namespace, an unmapped id for host files), e.g. directories 0755 and files 0644, the entrypoint
    /// 0755. Its parent directories need not be: the worker opens it. Its contents must not change once a sandbox
    /// was spawned from it: the host packs it once into an image (see [`code`]).
    pub code_dir: Option<PathBuf>,
    /// Host directory mounted read-only at `/opt` (the function's layers, unpacked into one tree), or `None` (an
    /// empty `/opt`, or the image's own). The same rules as for [`code_dir`](SandboxConfig::code_dir).
    pub opt_dir: Option<PathBuf>,
    /// The root file system: a container image, or a runtime base (see [`ImageRoot`]), in place of the host base;
    /// with a code or layers directory it must hold `/var/task` or `/opt` to mount them on.
    pub image: Option<ImageRoot>,
    /// Hard memory limit (no swap).
    pub memory_mb: u32,
    /// Size bound of `/tmp`.
    pub tmp_mb: u32,
    /// Whole environment of the entrypoint.
    pub env: Vec<(String, String)>,
    /// Absolute path inside the sandbox, e.g. `/var/task/bootstrap`, or with an image e.g. `/lambda-entrypoint.sh`.
    pub entrypoint: String,
    /// Whose function it is (an account id): a network namespace goes from one tenant's sandbox to another's only
    /// once nothing of the first is left in it (see [`netns`]).
    pub tenant: String,
}

/// The root file system of a sandbox that runs a container image, as Lambda runs a function packaged as one: the
/// image read-only as `/`, with a fresh `/proc`, the minimal `/dev` of every sandbox, and `/tmp` (of
/// [`SandboxConfig::tmp_mb`] MiB) and `/dev/shm` writable; nothing of the host (no `/usr`, no generated `/etc`)
/// and no code at `/var/task`. The entrypoint ([`SandboxConfig::entrypoint`], an absolute path in the image) is
/// exec'd with `args` as its further arguments, in `workdir`.
#[derive(Debug)]
pub struct ImageRoot {
    /// The image's file system as a detached mount tree: an `open_tree(OPEN_TREE_CLONE)` clone of a read-only mount
    /// (such as [`code::mount_image`] makes), whose source names no host path (e.g. `/proc/self/fd/N`), as the
    /// sandbox's mountinfo shows it. The sandbox mounts a clone of it read-only, nosuid, nodev and private; the fd
    /// is closed with the config. Its top level must hold the directories `dev`, `proc` and `tmp` (empty: they
    /// become mountpoints), else the spawn fails with [`SandboxError::Image`]. Its files must be readable (and
    /// searchable, executable) by *others*, as a code directory's.
    pub tree: OwnedFd,
    /// The entrypoint's arguments after `argv[0]` (which is the entrypoint's path).
    pub args: Vec<String>,
    /// The entrypoint's working directory, an absolute path in the image; `/` when empty.
    pub workdir: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The entrypoint could not be started: missing, not executable, a bad interpreter, or its working directory
    /// (`/var/task`, an image's `workdir`) missing or not searchable.
    #[error("entrypoint {path}: {source}")]
    Entrypoint { path: String, source: std::io::Error },
    /// The image cannot be a sandbox's root (see [`ImageRoot::tree`]).
    #[error("image: {what}")]
    Image { what: String },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

impl SandboxError {
    fn io(what: impl Into<String>, source: std::io::Error) -> SandboxError {
        SandboxError::Io { what: what.into(), source }
    }
}

/// How the runtime ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeExit {
    Code(i32),
    Signal(i32),
}

/// Default `pids.max` of a sandbox.
pub const DEFAULT_PIDS_MAX: u32 = 1024;
/// The sandbox user.
pub const SANDBOX_UID: u32 = 993;
pub const SANDBOX_GID: u32 = 990;
/// Hostname inside every sandbox.
pub const SANDBOX_HOSTNAME: &str = "sandbox";
/// How long `spawn` waits for each answer of ignis-init.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `destroy` retries removing a busy cgroup.
const RMDIR_PATIENCE: Duration = Duration::from_secs(2);

/// Per-worker sandbox factory.
pub struct Host {
    cgroups: Arc<dyn CgroupDriver>,
    mountpoint: PathBuf,
    /// The same, for the cloned child.
    mountpoint_c: CString,
    init_exe: CString,
    /// `ignis-init`, opened `O_PATH`: the child execs it through this fd, as the host path may not be searchable by
    /// the sandbox's ids.
    init_fd: OwnedFd,
    devnull: OwnedFd,
    /// The runtime's seccomp filters, compiled (see [`seccomp`]).
    seccomp: Vec<String>,
    /// User namespace id ranges in use (see [`userns`]).
    uid_slots: Arc<userns::Slots>,
    pids_max: u32,
    /// Sandbox ids (and so cgroup names) are this prefix and 32 random hex digits.
    id_prefix: String,
    /// Shells made ahead of time, and how many to keep.
    pool: std::sync::Mutex<Vec<spawn::Shell>>,
    pool_size: usize,
    /// Unique among the process's hosts: names this host's root base in a spawner thread (see `spawn`).
    generation: u64,
    /// Empty network namespaces for the next sandboxes (see [`netns`]).
    netns: Arc<netns::NetnsPool>,
    /// The sandboxes' `/etc/resolv.conf` (empty without a network).
    resolv_conf: String,
    /// Thaws and removes this host's groups if the process dies (with an id prefix; see [`cgroup::GroupGuard`]).
    group_guard: Option<cgroup::GroupGuard>,
    /// The code directories' images, mounted (see [`code`]).
    code: code::Images,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("cgroups", &self.cgroups)
            .field("mountpoint", &self.mountpoint)
            .field("init_exe", &self.init_exe)
            .finish_non_exhaustive()
    }
}

impl Host {
    /// Detects cgroup v1 or v2 (automatic), creates the `ignis` parent groups, prepares an empty
    /// directory under `state_dir` to mount sandbox roots on (each spawner thread mounts the root base there
    /// inside a mount namespace of its own, so one directory serves all), opens the `ignis-init` executable
    /// (which must be executable by others), compiles the seccomp policy and opens the uid range registry
    /// ([`userns::LOCK_FILE`]). Needs root.
    pub fn new(state_dir: &Path, init_exe: &Path) -> Result<Host, SandboxError> {
        Host::with_cgroup_root(state_dir, init_exe, Path::new("/sys/fs/cgroup"))
    }

    /// [`Host::new`] with another cgroupfs root than `/sys/fs/cgroup`.
    pub fn with_cgroup_root(state_dir: &Path, init_exe: &Path, cgroup_root: &Path) -> Result<Host, SandboxError> {
        let cgroups: Arc<dyn CgroupDriver> =
            Arc::from(cgroup::detect(cgroup_root).map_err(|e| SandboxError::io("detecting cgroups", e))?);
        cgroups.setup_parent().map_err(|e| SandboxError::io("creating the ignis cgroup", e))?;

        let mountpoint = state_dir.join("root");
        std::fs::create_dir_all(&mountpoint)
            .map_err(|e| SandboxError::io(format!("creating {}", mountpoint.display()), e))?;
        let nonempty = std::fs::read_dir(&mountpoint)
            .map_err(|e| SandboxError::io(format!("reading {}", mountpoint.display()), e))?
            .next()
            .is_some();
        if nonempty {
            return Err(SandboxError::io(
                format!("{} must be empty", mountpoint.display()),
                std::io::ErrorKind::DirectoryNotEmpty.into(),
            ));
        }
        let mountpoint = mountpoint.canonicalize().map_err(|e| SandboxError::io("canonicalizing state dir", e))?;
        let code = code::Images::new(state_dir, &mountpoint).map_err(|e| SandboxError::io("code images", e))?;

        let init_exe = init_exe
            .canonicalize()
            .map_err(|e| SandboxError::io(format!("ignis-init executable {}", init_exe.display()), e))?;
        let init_exe = CString::new(init_exe.into_os_string().into_encoded_bytes())
            .map_err(|_| SandboxError::io("ignis-init path", std::io::ErrorKind::InvalidInput.into()))?;
        let init_fd = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
                .open(std::ffi::OsStr::from_bytes(init_exe.as_bytes()))
                .map_err(|e| SandboxError::io(format!("opening ignis-init {init_exe:?}"), e))?
        };
        let init_fd = spawn::above_stdio(init_fd.into()).map_err(|e| SandboxError::io("dup ignis-init fd", e))?;
        let mountpoint_c = CString::new(mountpoint.as_os_str().as_bytes())
            .map_err(|_| SandboxError::io("state dir path", std::io::ErrorKind::InvalidInput.into()))?;
        let devnull = std::fs::File::open("/dev/null").map_err(|e| SandboxError::io("opening /dev/null", e))?;
        let devnull = spawn::above_stdio(devnull.into()).map_err(|e| SandboxError::io("dup /dev/null", e))?;
        let seccomp = seccomp::compiled().map_err(|e| SandboxError::io("compiling the seccomp policy", e))?;
        let uid_slots = userns::Slots::open().map_err(|e| SandboxError::io("opening the uid slot registry", e))?;
        Ok(Host {
            cgroups,
            mountpoint,
            mountpoint_c,
            init_exe,
            init_fd,
            devnull,
            seccomp,
            uid_slots,
            pids_max: DEFAULT_PIDS_MAX,
            id_prefix: String::new(),
            pool: std::sync::Mutex::new(Vec::new()),
            pool_size: 0,
            generation: {
                static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            },
            netns: Arc::default(),
            resolv_conf: String::new(),
            group_guard: None,
            code,
        })
    }

    /// Names sandboxes `<prefix><32 hex digits>`; `prefix` is `[a-z0-9-]{0,30}`. A worker that owns its state
    /// directory uses a prefix of its own, so that [`Host::remove_stale_groups`] finds what an earlier run left.
    /// With a prefix, a [`cgroup::GroupGuard`] removes the prefix's groups if the process dies.
    pub fn set_id_prefix(&mut self, prefix: &str) -> Result<(), SandboxError> {
        let valid = prefix.len() <= 30 && prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return Err(SandboxError::io(format!("sandbox id prefix {prefix:?}"), std::io::ErrorKind::InvalidInput.into()));
        }
        self.id_prefix = prefix.to_string();
        self.group_guard = None;
        if !prefix.is_empty() {
            let guard = cgroup::GroupGuard::start(&*self.cgroups, prefix)
                .map_err(|e| SandboxError::io("starting the cgroup guard", e))?;
            self.group_guard = Some(guard);
        }
        Ok(())
    }

    /// Gives every later sandbox a link to the host (an address of the sandbox network, a route out through the
    /// host: see `ignis_net::link`) and `resolv_conf` as its `/etc/resolv.conf`; without this, a sandbox's network
    /// namespace has only `lo`. Call it before the first spawn.
    pub fn set_network(&mut self, links: Arc<ignis_net::link::Links>, resolv_conf: String) {
        self.netns = Arc::new(netns::NetnsPool::with_links(links));
        self.resolv_conf = resolv_conf;
    }

    /// Keeps up to `size` shells (sandboxes with namespaces, cgroup and network ready, but no function) made
    /// ahead of time by [`Host::refill`], so that [`Host::spawn`] only has to give one its function.
    pub fn set_pool_size(&mut self, size: usize) {
        self.pool_size = size;
    }

    /// Makes one shell for the pool if it holds fewer than its size. Returns whether it made one. Call it from
    /// the spawner thread while it has nothing else to do.
    pub fn refill(&self) -> Result<bool, SandboxError> {
        if self.pool.lock().unwrap_or_else(|e| e.into_inner()).len() >= self.pool_size {
            return Ok(false);
        }
        let shell = spawn::new_shell(self, self.new_id()?)?;
        self.pool.lock().unwrap_or_else(|e| e.into_inner()).push(shell);
        Ok(true)
    }

    /// Ends every pooled shell.
    pub fn drain_pool(&self) {
        let shells = std::mem::take(&mut *self.pool.lock().unwrap_or_else(|e| e.into_inner()));
        drop(shells);
    }

    /// Shells waiting in the pool.
    pub fn pooled(&self) -> usize {
        self.pool.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn new_id(&self) -> Result<String, SandboxError> {
        let mut bytes = [0u8; 16];
        // SAFETY: the buffer is valid for its length.
        let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
        if n != bytes.len() as isize {
            return Err(SandboxError::io("getrandom", std::io::Error::last_os_error()));
        }
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(format!("{}{hex}", self.id_prefix))
    }

    /// Forgets the image of the code directory `dir` (see [`code`]), e.g. because the directory is being removed:
    /// its disk space comes back once no sandbox has it mounted. A later spawn from `dir` makes a new one.
    pub fn forget_code(&self, dir: &Path) {
        self.code.forget(dir);
    }

    /// Sets `pids.max` for sandboxes spawned from now on (default [`DEFAULT_PIDS_MAX`]).
    pub fn set_pids_max(&mut self, pids_max: u32) {
        self.pids_max = pids_max;
    }

    /// User namespace id ranges held by this host's live sandboxes and pooled shells.
    pub fn uid_slots_in_use(&self) -> usize {
        self.uid_slots.in_use()
    }

    /// 1 or 2.
    pub fn cgroup_version(&self) -> u8 {
        self.cgroups.version()
    }

    /// Removes the empty cgroups left by sandboxes of this host's id prefix (by a worker that was killed together
    /// with its [`cgroup::GroupGuard`], or the machine). Groups that still hold processes stay.
    /// Returns how many were removed. Only meaningful with a prefix of its own.
    pub fn remove_stale_groups(&self) -> usize {
        let prefix = self.id_prefix.as_str();
        let mut removed = 0;
        // A frozen group's processes (v1) wait for a thaw to die of the signal their worker's death sent them.
        if let Some(Ok(entries)) = self.cgroups.freezer_parent().map(std::fs::read_dir) {
            for entry in entries.flatten() {
                if let Some(name) = entry.file_name().to_str().filter(|n| n.starts_with(prefix)) {
                    let _ = self.cgroups.thaw(name);
                }
            }
        }
        for parent in self.cgroups.parents() {
            let Ok(entries) = std::fs::read_dir(&parent) else { continue };
            for entry in entries.flatten() {
                let stale = entry.file_name().to_str().is_some_and(|n| n.starts_with(prefix));
                if stale && entry.path().is_dir() && std::fs::remove_dir(entry.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }

    /// The cgroup directories of the sandbox with this id (existing or not).
    pub fn cgroup_dirs(&self, id: &str) -> Vec<PathBuf> {
        self.cgroups.dirs(id)
    }

    /// Builds and starts one sandbox (blocking, a few ms), from a pooled shell when there is one. Must be called from a thread that lives as long
    /// as the sandboxes it made (PR_SET_PDEATHSIG is tied to the creating thread); callers use a dedicated
    /// long-lived spawner thread. On its first call the thread gets a mount namespace of its own (and its own cwd
    /// and root; see the crate docs), where it builds this host's root base once. Returns only once the entrypoint
    /// was exec'd successfully; if exec fails (missing / not executable / bad interpreter / no working directory)
    /// returns [`SandboxError::Entrypoint`], for an image that cannot be a root [`SandboxError::Image`], and leaves
    /// nothing behind. Shells serve functions of code directories and of images alike.
    ///
    /// `configure` gets the sandbox's id (to name its logs, say) and returns its configuration.
    pub fn spawn(&self, configure: impl FnOnce(&str) -> SandboxConfig) -> Result<Sandbox, SandboxError> {
        self.spawn_in(0, configure)
    }

    /// [`Host::spawn`] with an address of block `block` of the sandbox network (see [`Host::set_network`] and
    /// `ignis_net::plan`): a function attached to networks has a block of its own, and never gets a shell (shells
    /// are made in block 0).
    pub fn spawn_in(&self, block: u8, configure: impl FnOnce(&str) -> SandboxConfig) -> Result<Sandbox, SandboxError> {
        let pooled = if block == 0 { self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop() } else { None };
        let id = match &pooled {
            Some(shell) => shell.id().to_string(),
            None => self.new_id()?,
        };
        let cfg = configure(&id);
        let trees = spawn::validate(&cfg).and_then(|()| self.trees(&cfg));
        let trees = match trees {
            Ok(trees) => trees,
            Err(e) => {
                if let Some(shell) = pooled {
                    self.pool.lock().unwrap_or_else(|e| e.into_inner()).push(shell);
                }
                return Err(e);
            }
        };
        let Some(shell) = pooled else {
            return spawn::new_sandbox(self, id, &cfg, &trees, block);
        };
        match spawn::launch(shell, &cfg, &trees) {
            // A pooled shell that died while it waited (and is gone now): a fresh one of the same id will do.
            Err(SandboxError::Io { .. }) => spawn::new_sandbox(self, id, &cfg, &trees, 0),
            done => done,
        }
    }

    /// The mount trees of a sandbox of `cfg` (validated), in the order init takes them.
    fn trees(&self, cfg: &SandboxConfig) -> Result<spawn::Trees, SandboxError> {
        let mut trees = Vec::with_capacity(proto::MAX_FDS);
        if let Some(image) = &cfg.image {
            trees.push((Tree::Image, spawn::image_tree(image, cfg.code_dir.is_some(), cfg.opt_dir.is_some())?));
        }
        for (kind, dir) in [(Tree::Code, &cfg.code_dir), (Tree::Opt, &cfg.opt_dir)] {
            if let Some(dir) = dir {
                let tree = self.code.tree(dir).map_err(|e| SandboxError::io(format!("directory {}", dir.display()), e))?;
                trees.push((kind, tree));
            }
        }
        Ok(trees)
    }
}

/// One running (or ended, not yet destroyed) sandbox.
pub struct Sandbox {
    /// Listener on 127.0.0.1:9001 in the sandbox's network namespace (non-blocking).
    pub runtime_api: TcpListener,
    /// Read end of the runtime's stdout and stderr (non-blocking).
    pub output: OwnedFd,
    pid: libc::pid_t,
    pidfd: OwnedFd,
    control: OwnedFd,
    cgroups: Arc<dyn CgroupDriver>,
    id: String,
    /// The outside id range of the sandbox's user namespace; released once init is reaped.
    uid_slot: Option<userns::Slot>,
    reaped: bool,
    exit: Option<RuntimeExit>,
    destroyed: bool,
    /// The cgroup's peak-memory file, opened on first use.
    peak_file: std::sync::OnceLock<Option<std::fs::File>>,
    /// The network namespace, back to the host's pool once init is reaped and no other lease is left. Declared
    /// last, so dropped after everything else, `runtime_api` included.
    network: netns::NetnsLease,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("id", &self.id).field("pid", &self.pid).finish_non_exhaustive()
    }
}

impl Sandbox {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Host pid of ignis-init.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The host uid (and gid) that uid (and gid) 0 of the sandbox's user namespace maps to; inside ids `0..65536`
    /// map to `uid_base()..uid_base() + 65536`. The runtime runs as `uid_base() + SANDBOX_UID` on the host.
    /// `None` once destroyed.
    pub fn uid_base(&self) -> Option<u32> {
        self.uid_slot.as_ref().map(|s| s.base())
    }

    /// A hold on the sandbox's network namespace, for whoever keeps fds in it (a copy of [`Sandbox::runtime_api`],
    /// its connections) beyond the sandbox's life: the namespace is reused only once every lease is dropped.
    pub fn network_lease(&self) -> netns::NetnsLease {
        self.network.clone()
    }

    /// pidfd of ignis-init; readable once it exited (await it with e.g. tokio's `AsyncFd`).
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// SIGKILLs ignis-init; the kernel then kills everything in the pid namespace. No-op once reaped. A frozen
    /// sandbox is thawed right after the signal (on v1 its processes die only then; none returns to its own code).
    pub fn kill(&self) {
        if !self.reaped {
            // SAFETY: plain syscall on a pidfd we own; a pidfd cannot refer to a recycled pid.
            unsafe {
                libc::syscall(libc::SYS_pidfd_send_signal, self.pidfd.as_raw_fd(), libc::SIGKILL, std::ptr::null::<u8>(), 0)
            };
            let _ = self.cgroups.thaw(&self.id);
        }
    }

    /// Freezes every process of the sandbox (they get no CPU) until [`Sandbox::thaw`] or [`Sandbox::kill`].
    pub fn freeze(&self) -> std::io::Result<()> {
        self.cgroups.freeze(&self.id)
    }

    pub fn thaw(&self) -> std::io::Result<()> {
        self.cgroups.thaw(&self.id)
    }

    /// Whether the cgroup reports every process of the sandbox frozen.
    pub fn frozen(&self) -> bool {
        self.cgroups.frozen(&self.id)
    }

    /// Whether a process of the frozen sandbox was sent `SIGKILL` that waits for a thaw (v1 only): then thaw it, so
    /// that it dies. [`Sandbox::frozen_holds_signals`] says whether this can happen at all.
    pub fn kill_pending(&self) -> bool {
        self.cgroups.kill_pending(&self.id)
    }

    /// Whether a frozen process ignores `SIGKILL` until thawed (cgroup v1).
    pub fn frozen_holds_signals(&self) -> bool {
        self.cgroups.frozen_holds_signals()
    }

    /// Blocks until ignis-init exited (immediate after the pidfd became readable, or shortly after [`kill`]),
    /// reaps it and says how the runtime ended: as reported by ignis-init, or `None` if ignis-init itself was
    /// killed (e.g. by [`kill`]) before the runtime ended. Idempotent.
    ///
    /// [`kill`]: Sandbox::kill
    pub fn wait(&mut self) -> Option<RuntimeExit> {
        if !self.reaped {
            spawn::reap(self.pid);
            self.reaped = true;
            // Init sent the runtime's status before exiting, so it is queued by now if it was sent at all.
            while let Ok(Some((msg, _))) = proto::recv(self.control.as_fd(), libc::MSG_DONTWAIT) {
                match serde_json::from_slice(&msg) {
                    Ok(proto::InitMsg::Exited { code }) => self.exit = Some(RuntimeExit::Code(code)),
                    Ok(proto::InitMsg::Signaled { signal }) => self.exit = Some(RuntimeExit::Signal(signal)),
                    _ => {}
                }
            }
        }
        self.exit
    }

    /// Peak memory use of the sandbox's cgroup (v1 `memory.max_usage_in_bytes`, v2 `memory.peak`).
    /// `None` once destroyed.
    pub fn peak_memory_bytes(&self) -> Option<u64> {
        use std::os::unix::fs::FileExt;
        if self.destroyed {
            return None;
        }
        // Read once per invocation: keep the file open.
        let file = self.peak_file.get_or_init(|| std::fs::File::open(self.cgroups.peak_memory_path(&self.id)).ok());
        let mut buf = [0u8; 32];
        let n = file.as_ref()?.read_at(&mut buf, 0).ok()?;
        std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
    }

    /// Whether the kernel OOM-killed a process of the sandbox. `false` once destroyed.
    pub fn oom_killed(&self) -> bool {
        self.cgroups.oom_killed(&self.id)
    }

    /// Kill (if alive), reap, and remove the cgroup(s), retrying briefly while they are busy. Idempotent; also
    /// called from Drop.
    pub fn destroy(&mut self) {
        if self.destroyed {
            return;
        }
        self.kill();
        self.wait();
        // Init is reaped, so no process of the sandbox is left to use the id range.
        self.uid_slot.take();
        self.peak_file.take();
        if let Err(e) = self.cgroups.remove(&self.id, RMDIR_PATIENCE) {
            tracing::warn!(sandbox = %self.id, error = %e, "cannot remove the sandbox's cgroup");
        }
        self.destroyed = true;
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.destroy();
    }
}
