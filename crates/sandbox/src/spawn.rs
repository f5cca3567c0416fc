//! The worker side of [`crate::Host::spawn`], in two steps.
//!
//! [`new_shell`] makes a sandbox without a function (off the invoke path, ahead of time for the pool):
//! the calling thread's root base made sure of ([`ensure_base`]: once per thread and host, the read-only part of
//! every root, built in a mount namespace of the thread's own, of which each sandbox cloned from the thread gets a
//! copy) → uid slot taken and cgroup created (`pids.max` only) → control socket pair, output pipe, "go" and "error"
//! pipes → the spawner thread enters an empty network namespace ([`crate::netns`]) → `clone` into new user, pid,
//! mount, ipc and uts namespaces (the user namespace owns them; the network namespace stays the host's), the thread's
//! effective uid the slot's base for the moment ([`userns::AsOwner`]: the user namespace's owner, charged for it)
//! → the child sets up fds 0-3 and blocks on the go pipe → the parent writes the child's `uid_map`/`gid_map` (inside
//! 0..65536 → the slot's outside range), then says go → the child enters the root mountpoint (where its copy of the
//! base is; while it still has the worker's host-root ids, so the worker's private state directory may be `0700`),
//! drops the worker's supplementary groups, becomes inside root (so it keeps its capabilities, in its own user
//! namespace only, across exec), sets `PR_SET_PDEATHSIG` (credential changes clear it), marks every fd above 3
//! close-on-exec and `execveat`s `ignis-init` through an fd opened by [`crate::Host::new`]. Meanwhile the parent
//! moves it into its cgroup(s) (inside root cannot write the host's cgroup files), and only then sends the shell
//! config (user, hostname, seccomp filters): init makes its root before it waits for that config, and forks nothing before it. The parent learns from the error pipe (closed by the exec)
//! whether the exec worked, and init says when it is ready (once it has the config). Joining
//! the cgroup is the slow part of a start on cgroup v1 (the kernel waits for an RCU grace period), and the
//! namespaces take their time too, which is why shells may be made ahead of time. A sandbox made from nothing
//! ([`new_sandbox`]) gets its function in the same go: limits and config are sent while init still starts.
//!
//! [`launch`] gives a shell its function: memory and CPU limits written, the code directory cloned as a detached
//! mount tree (read-only, nosuid, nodev, private; a clone of the code's image mount, see [`crate::code`]), or a
//! container image's tree cloned the same way ([`image_tree`]), sent with the config; init mounts it (the code at
//! `/var/task`; an image as the root, see [`crate::init`]), `/tmp` and `/dev/shm`, and starts the runtime; exec
//! result received.
//!
//! The caller is a multi-threaded process, so the cloned child (a copy of only the calling thread) must not allocate
//! or take locks: everything it touches (C strings, argv, envp, fds) is prepared before the `clone`, and the child
//! only makes raw syscalls (not libc's set*id wrappers, which would signal the parent's other threads) until it
//! `execve`s `ignis-init` (or `_exit`s). Every wait for the child or init is bounded. On any failure init is killed and
//! reaped, the cgroup removed and the uid slot released (by dropping the [`Shell`] or the half-made parts).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::cgroup::{CgroupDriver, Limits};
use crate::proto::{self, InitConfig, InitMsg, ShellConfig, Tree};
use crate::userns::{self, Slot};
use crate::{HANDSHAKE_TIMEOUT, Host, ImageRoot, RMDIR_PATIENCE, Sandbox, SandboxConfig, SandboxError};

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

/// Returns `fd` unchanged if it is above 3, else a CLOEXEC duplicate that is, so that the child's `dup2`s onto
/// 0-3 can never clobber one of their own sources.
pub(crate) fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 3 {
        return Ok(fd);
    }
    // SAFETY: plain fcntl; the new fd is ours.
    let new = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 4) })?;
    // SAFETY: fcntl just created it.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

pub(crate) fn validate(cfg: &SandboxConfig) -> Result<(), SandboxError> {
    let invalid = |what: String| Err(SandboxError::io(what, io::ErrorKind::InvalidInput.into()));
    if !cfg.entrypoint.starts_with('/') || cfg.entrypoint.contains('\0') {
        return invalid(format!("entrypoint {:?} (want an absolute path)", cfg.entrypoint));
    }
    for (k, v) in &cfg.env {
        if k.is_empty() || k.contains(['=', '\0']) || v.contains('\0') {
            return invalid(format!("environment variable {k:?}"));
        }
    }
    if cfg.memory_mb == 0 || cfg.tmp_mb == 0 {
        return invalid("memory_mb and tmp_mb must be > 0".into());
    }
    if let Some(image) = &cfg.image {
        if !(image.workdir.is_empty() || image.workdir.starts_with('/')) || image.workdir.contains('\0') {
            return invalid(format!("working directory {:?} (want an absolute path)", image.workdir));
        }
        if image.args.iter().any(|arg| arg.contains('\0')) {
            return invalid("an argument holds a NUL byte".into());
        }
    }
    for dir in cfg.code_dir.iter().chain(&cfg.opt_dir) {
        if !dir.is_dir() {
            return Err(SandboxError::io(format!("directory {}", dir.display()), io::ErrorKind::NotFound.into()));
        }
    }
    Ok(())
}

/// Directories of an image that init mounts on (see [`crate::init`]): always; and with code (`var` checked to be
/// a directory first, not a link); and with layers.
const IMAGE_MOUNTPOINTS: [&std::ffi::CStr; 3] = [c"dev", c"proc", c"tmp"];
const CODE_MOUNTPOINTS: [&std::ffi::CStr; 2] = [c"var", c"var/task"];
const OPT_MOUNTPOINTS: [&std::ffi::CStr; 1] = [c"opt"];

/// The mount tree a sandbox of `image` gets: a clone of the image's tree, read-only, nosuid, nodev and private
/// (whatever the caller's was), once checked that it holds the directories init mounts on (`/var/task` if `code`,
/// `/opt` if `opt`). These must be directories, not links: init resolves them below the image's root.
pub(crate) fn image_tree(image: &ImageRoot, code: bool, opt: bool) -> Result<OwnedFd, SandboxError> {
    let tree = crate::code::clone(&image.tree).map_err(io_err("cloning the image's mount tree"))?;
    let code = CODE_MOUNTPOINTS.iter().filter(|_| code);
    let opt = OPT_MOUNTPOINTS.iter().filter(|_| opt);
    let needed: Vec<&std::ffi::CStr> = IMAGE_MOUNTPOINTS.iter().chain(code).chain(opt).copied().collect();
    for &path in &needed {
        let name = path.to_string_lossy();
        // SAFETY: stat is plain old data, written by fstatat.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd, NUL-terminated relative path, valid out pointer.
        let r = unsafe { libc::fstatat(tree.as_raw_fd(), path.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
        let what = if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::NotFound {
                return Err(SandboxError::io(format!("the image's /{name}"), e));
            }
            "no"
        } else if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            "not a directory:"
        } else {
            continue;
        };
        let all: Vec<String> = needed.iter().map(|p| format!("/{}", p.to_string_lossy())).collect();
        return Err(SandboxError::Image { what: format!("{what} /{name} (it needs the directories {}, empty)", all.join(", ")) });
    }
    Ok(tree)
}

/// A sandbox with namespaces, cgroup and runtime API listener, waiting for its function. Dropping it kills and
/// reaps its init, removes its cgroup and releases its uid range, as dropping any [`Sandbox`] does.
pub(crate) struct Shell(Sandbox);

impl Shell {
    pub(crate) fn id(&self) -> &str {
        &self.0.id
    }
}

thread_local! {
    /// `None` until this thread has a mount namespace of its own; then the [`Host::generation`]s whose root base
    /// it holds (at each host's mountpoint).
    static BASES: std::cell::RefCell<Option<Vec<u64>>> = const { std::cell::RefCell::new(None) };
}

/// Makes sure the calling thread's mount namespace holds `host`'s root base ([`crate::init::build_base`]) at
/// `host`'s mountpoint: on a thread's first call it unshares a mount namespace for the thread alone (a slave of
/// the host's, so that mounts the host makes still show, and nothing made here goes back), then builds the base
/// once per host. The sandboxes cloned from the thread get a copy of it.
fn ensure_base(host: &Host) -> Result<(), SandboxError> {
    BASES.with_borrow_mut(|bases| {
        if bases.as_ref().is_some_and(|b| b.contains(&host.generation)) {
            return Ok(());
        }
        if bases.is_none() {
            // SAFETY: plain syscalls. unshare(CLONE_NEWNS) also unshares the thread's fs_struct (root, cwd, umask).
            unsafe {
                cvt(libc::unshare(libc::CLONE_NEWNS)).map_err(io_err("unshare(CLONE_NEWNS) for the spawner thread"))?;
                *bases = Some(Vec::new());
                let r = libc::mount(std::ptr::null(), c"/".as_ptr(), std::ptr::null(), libc::MS_REC | libc::MS_SLAVE, std::ptr::null());
                cvt(r).map_err(io_err("making the spawner thread's mounts slaves"))?;
            }
        }
        crate::init::build_base_for_host(&host.mountpoint, &host.resolv_conf)?;
        bases.as_mut().expect("set above").push(host.generation);
        Ok(())
    })
}

/// Makes a shell named `id`.
pub(crate) fn new_shell(host: &Host, id: String) -> Result<Shell, SandboxError> {
    make(host, id, None)
}

/// Makes a sandbox named `id` from nothing: [`new_shell`] and [`launch`] in one, with the function given to init
/// while it starts rather than after it reported ready.
/// `cfg` has been validated; `trees` are its mount trees ([`Trees`]).
/// `block`: the block of sandbox addresses its network namespace takes (see [`crate::Host::spawn_in`]).
pub(crate) fn new_sandbox(
    host: &Host,
    id: String,
    cfg: &SandboxConfig,
    trees: &Trees,
    block: u8,
) -> Result<Sandbox, SandboxError> {
    let config = function_config(cfg, trees)?;
    let function = Function { tenant: &cfg.tenant, limits: limits(cfg), config, trees, block };
    let Shell(sandbox) = make(host, id, Some(function))?;
    await_exec(sandbox, cfg)
}

/// A sandbox's mount trees, in the order init takes them: the image's or runtime base's ([`image_tree`]), the
/// code's and the layers' ([`crate::code`]), each if any.
pub(crate) type Trees = Vec<(Tree, OwnedFd)>;

/// What [`launch`] gives a shell.
struct Function<'a> {
    tenant: &'a str,
    limits: Limits,
    config: Vec<u8>,
    trees: &'a Trees,
    /// The block of sandbox addresses (shells: 0).
    block: u8,
}

fn limits(cfg: &SandboxConfig) -> Limits {
    Limits { memory_mb: cfg.memory_mb, pids_max: 0 }
}

fn make(host: &Host, id: String, function: Option<Function<'_>>) -> Result<Shell, SandboxError> {
    ensure_base(host)?;
    let slot = host.uid_slots.acquire().map_err(|e| SandboxError::io("allocating a user namespace id range", e))?;
    let limits = Limits { memory_mb: 0, pids_max: host.pids_max };
    let procs = host.cgroups.create(&id, &limits).map_err(|e| SandboxError::io("creating cgroup", e))?;
    start(host, &id, procs, slot, function).inspect_err(|_| {
        let _ = host.cgroups.remove(&id, RMDIR_PATIENCE);
    })
}

/// Gives `shell` its function and starts the runtime.
/// `cfg` has been validated; `trees` are its mount trees ([`Trees`]).
pub(crate) fn launch(shell: Shell, cfg: &SandboxConfig, trees: &Trees) -> Result<Sandbox, SandboxError> {
    let Shell(sandbox) = shell;
    sandbox.network.set_tenant(&cfg.tenant);
    let function = Function { tenant: &cfg.tenant, limits: limits(cfg), config: function_config(cfg, trees)?, trees, block: 0 };
    give(&sandbox.cgroups, &sandbox.id, &sandbox.control, &function)?;
    await_exec(sandbox, cfg)
}

/// Init's configuration for `cfg` with `trees`, serialized.
fn function_config(cfg: &SandboxConfig, trees: &Trees) -> Result<Vec<u8>, SandboxError> {
    let (args, cwd) = match &cfg.image {
        Some(image) if image.workdir.is_empty() => (image.args.clone(), "/".into()),
        Some(image) => (image.args.clone(), image.workdir.clone()),
        None => (Vec::new(), "/var/task".into()),
    };
    let trees = trees.iter().map(|(kind, _)| *kind).collect();
    let init_cfg =
        InitConfig { tmp_mb: cfg.tmp_mb, env: cfg.env.clone(), entrypoint: cfg.entrypoint.clone(), args, cwd, trees };
    let config = serde_json::to_vec(&init_cfg).map_err(|e| SandboxError::io("serializing config", io::Error::other(e)))?;
    if config.len() > proto::MAX_MSG {
        let what = "sandbox config (environment or arguments too large)";
        return Err(SandboxError::io(what, io::ErrorKind::InvalidInput.into()));
    }
    Ok(config)
}

/// Memory and CPU limits written, then the function's config and mount trees sent to init (which forks the runtime
/// only once it has them).
fn give(cgroups: &Arc<dyn CgroupDriver>, id: &str, control: &OwnedFd, function: &Function<'_>) -> Result<(), SandboxError> {
    cgroups.set_limits(id, &function.limits).map_err(|e| SandboxError::io("setting cgroup limits", e))?;
    let fds: Vec<BorrowedFd<'_>> = function.trees.iter().map(|(_, tree)| tree.as_fd()).collect();
    proto::send(control.as_fd(), &function.config, &fds).map_err(io_err("sending config to ignis-init"))
}

/// Waits for init's report of the entrypoint's exec.
fn await_exec(sandbox: Sandbox, cfg: &SandboxConfig) -> Result<Sandbox, SandboxError> {
    match receive(&sandbox.control)? {
        (InitMsg::ExecOk, _) => {}
        (InitMsg::ExecFailed { stage, errno }, _) => {
            let os = io::Error::from_raw_os_error(errno);
            let source = if stage == "execve" { os } else { io::Error::new(os.kind(), format!("{stage}: {os}")) };
            return Err(SandboxError::Entrypoint { path: cfg.entrypoint.clone(), source });
        }
        (other, _) => return Err(unexpected(other)),
    }
    set_nonblocking(&sandbox.output).map_err(io_err("output O_NONBLOCK"))?;
    Ok(sandbox)
}

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
pub(crate) struct MountAttr {
    pub attr_set: u64,
    pub attr_clr: u64,
    pub propagation: u64,
    pub userns_fd: u64,
}
pub(crate) const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub(crate) const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub(crate) const MOUNT_ATTR_NODEV: u64 = 0x4;
pub(crate) const MOUNT_ATTR_NOEXEC: u64 = 0x8;

/// `mount_setattr(dirfd, path, flags, attr)`.
pub(crate) fn mount_setattr(dirfd: libc::c_int, path: &std::ffi::CStr, flags: libc::c_uint, attr: &MountAttr) -> io::Result<()> {
    // SAFETY: valid NUL-terminated path and a mount_attr of the size passed.
    let r = unsafe { libc::syscall(libc::SYS_mount_setattr, dirfd, path.as_ptr(), flags, attr as *const MountAttr, size_of::<MountAttr>()) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// One message from init: what it says and any fd it passed.
fn receive(control: &OwnedFd) -> Result<(InitMsg, Vec<OwnedFd>), SandboxError> {
    let (bytes, fds) = match proto::recv(control.as_fd(), 0) {
        Ok(Some(m)) => m,
        Ok(None) => return Err(SandboxError::io("ignis-init exited during setup", io::ErrorKind::UnexpectedEof.into())),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            return Err(SandboxError::io("waiting for ignis-init", io::ErrorKind::TimedOut.into()));
        }
        Err(e) => return Err(SandboxError::io("receiving from ignis-init", e)),
    };
    let message = serde_json::from_slice(&bytes).map_err(|e| SandboxError::io("bad message from ignis-init", io::Error::other(e)))?;
    Ok((message, fds))
}

/// A message init should not send at this point, or its report of a failed setup.
fn unexpected(message: InitMsg) -> SandboxError {
    match message {
        InitMsg::SetupFailed { what, error, errno } => {
            let source = errno.map_or_else(|| io::Error::other(error), io::Error::from_raw_os_error);
            SandboxError::io(format!("ignis-init: {what}"), source)
        }
        other => SandboxError::io(format!("ignis-init: unexpected message {other:?}"), io::ErrorKind::InvalidData.into()),
    }
}

/// A started ignis-init not yet handed over to a [`Sandbox`]: killed and reaped on drop.
struct Child {
    pid: libc::pid_t,
    pidfd: Option<OwnedFd>,
}

impl Drop for Child {
    fn drop(&mut self) {
        // SAFETY: the pid is our unreaped child, so it cannot have been recycled.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        reap(self.pid);
    }
}

/// waitpid for `pid`, retrying on EINTR.
pub(crate) fn reap(pid: libc::pid_t) {
    loop {
        let mut status = 0;
        // SAFETY: status is a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return;
        }
    }
}

fn io_err(what: &'static str) -> impl Fn(io::Error) -> SandboxError {
    move |e| SandboxError::io(what, e)
}

/// What the cloned child failed at, by the stage number it reports on the error pipe.
const CHILD_STAGES: [&str; 8] = [
    "setting up fds 0-3",
    "entering the root mountpoint",
    "dropping supplementary groups",
    "setresgid(0)",
    "setresuid(0)",
    "PR_SET_PDEATHSIG",
    "close_range",
    "executing ignis-init",
];

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid out array of two ints.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: just created; we own them.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((above_stdio(r)?, above_stdio(w)?))
}

fn start(host: &Host, id: &str, cgroup_procs: Vec<PathBuf>, slot: Slot, function: Option<Function<'_>>) -> Result<Shell, SandboxError> {
    let shell_cfg = ShellConfig {
        seccomp: host.seccomp.clone(),
        uid: crate::SANDBOX_UID,
        gid: crate::SANDBOX_GID,
        hostname: crate::SANDBOX_HOSTNAME.into(),
    };
    let config = serde_json::to_vec(&shell_cfg)
        .map_err(|e| SandboxError::io("serializing config", io::Error::other(e)))?;

    // Fds. All CLOEXEC: only the child's dup2'd copies survive into init.
    let mut sv = [0; 2];
    // SAFETY: sv is a valid out array of two ints.
    cvt(unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, sv.as_mut_ptr()) })
        .map_err(io_err("socketpair"))?;
    // SAFETY: just created; we own them.
    let (control, child_control) = unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) };
    let (output, child_output) = pipe().map_err(io_err("pipe2"))?;
    let child_control = above_stdio(child_control).map_err(io_err("dup"))?;
    let child_output = above_stdio(child_output).map_err(io_err("dup"))?;
    // Parent → child: one byte once the id maps and the cgroup are in place (EOF: give up).
    let (go_r, go_w) = pipe().map_err(io_err("pipe2"))?;
    // Child → parent: (stage, errno) if it fails before exec; EOF (close-on-exec) once init runs.
    let (err_r, err_w) = pipe().map_err(io_err("pipe2"))?;

    // What the child uses, as raw values.
    let (devnull_fd, out_fd, ctl_fd) = (host.devnull.as_raw_fd(), child_output.as_raw_fd(), child_control.as_raw_fd());
    let (go_fd, err_fd, init_fd) = (go_r.as_raw_fd(), err_w.as_raw_fd(), host.init_fd.as_raw_fd());
    let go_w_fd = go_w.as_raw_fd();
    let go_wait_ms = HANDSHAKE_TIMEOUT.as_millis() as libc::c_int;
    let mountpoint = host.mountpoint_c.as_ptr();
    let argv = [c"ignis-init".as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null::<libc::c_char>()];
    // SAFETY: sigset_t is plain old data; sigemptyset initializes it.
    let empty_mask = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        set
    };
    // The network namespace is the worker's making (see `netns`): the child is cloned into it.
    let flags = libc::CLONE_NEWUSER | libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    let (tenant, block) = function.as_ref().map_or((None, 0), |f| (Some(f.tenant), f.block));
    let (network, in_netns) = host.netns.enter(tenant, block).map_err(io_err("entering a network namespace"))?;

    // The user namespace is owned by the slot's base, not root: its per-user kernel resources are charged there.
    let as_owner = userns::AsOwner::new(slot.base()).map_err(io_err("taking the sandbox's uid to clone"))?;

    // SAFETY: fork-like clone (no CLONE_VM, stack 0: the child continues on a copy of this stack). The child only
    // makes async-signal-safe raw syscalls on data prepared above and never returns from this block.
    let pid = unsafe {
        let pid = libc::syscall(libc::SYS_clone, (flags | libc::SIGCHLD) as libc::c_ulong, 0usize, 0usize, 0usize, 0usize);
        if pid == 0 {
            let fail = |stage: u8| -> ! {
                let errno = *libc::__errno_location();
                let mut msg = [0u8; 5];
                msg[0] = stage;
                msg[1..].copy_from_slice(&errno.to_ne_bytes());
                libc::write(err_fd, msg.as_ptr().cast(), msg.len());
                libc::_exit(127)
            };
            if libc::dup2(devnull_fd, 0) < 0
                || libc::dup2(out_fd, 1) < 0
                || libc::dup2(out_fd, 2) < 0
                || libc::dup2(ctl_fd, 3) < 0
            {
                fail(0);
            }
            // Never outlive a worker that died before saying go: the child is a copy of the worker, so it holds
            // the go pipe's write end too (closed here, so that the worker's death is an EOF); the parent-death
            // signal covers its spawner thread's death from here on (credential changes below clear it, so it is
            // set again after them); and the wait is bounded, for a write end some other fork holds meanwhile.
            libc::close(go_w_fd);
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) < 0 {
                fail(5);
            }
            let mut go = 0u8;
            loop {
                let mut p = libc::pollfd { fd: go_fd, events: libc::POLLIN, revents: 0 };
                let ready = libc::poll(&mut p, 1, go_wait_ms);
                if ready < 0 && *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                if ready != 1 {
                    libc::_exit(126);
                }
                let n = libc::read(go_fd, (&mut go as *mut u8).cast(), 1);
                if n == 1 {
                    break;
                }
                if n < 0 && *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                libc::_exit(126);
            }
            // Still host root as file system uid (see `AsOwner`): may pass through a private state directory.
            if libc::chdir(mountpoint) < 0 {
                fail(1);
            }
            if libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) < 0 {
                fail(2);
            }
            if libc::syscall(libc::SYS_setresgid, 0u32, 0u32, 0u32) < 0 {
                fail(3);
            }
            if libc::syscall(libc::SYS_setresuid, 0u32, 0u32, 0u32) < 0 {
                fail(4);
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) < 0 {
                fail(5);
            }
            // Close-on-exec rather than closed, so that the error pipe stays usable until the exec.
            if libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) < 0 {
                fail(6);
            }
            libc::sigprocmask(libc::SIG_SETMASK, &empty_mask, std::ptr::null_mut());
            libc::syscall(libc::SYS_execveat, init_fd, c"".as_ptr(), argv.as_ptr(), envp.as_ptr(), libc::AT_EMPTY_PATH);
            fail(7);
        }
        pid
    };
    let cloned = io::Error::last_os_error();
    drop(as_owner);
    drop(in_netns);
    if pid < 0 {
        return Err(SandboxError::io("clone", cloned));
    }
    let mut child = Child { pid: pid as libc::pid_t, pidfd: None };
    drop((child_control, child_output, go_r, err_w));

    // SAFETY: plain syscall; the pid is our unreaped child.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.pid, 0) };
    if pidfd < 0 {
        return Err(SandboxError::io("pidfd_open", io::Error::last_os_error()));
    }
    // SAFETY: just created; pidfds are O_CLOEXEC by default.
    child.pidfd = Some(unsafe { OwnedFd::from_raw_fd(pidfd as i32) });

    userns::write_maps(child.pid, slot.base()).map_err(io_err("user namespace id maps"))?;
    // SAFETY: writes one byte from a valid buffer to a pipe we own.
    if unsafe { libc::write(go_w.as_raw_fd(), [1u8].as_ptr().cast(), 1) } != 1 {
        return Err(SandboxError::io("starting ignis-init", io::Error::last_os_error()));
    }
    drop(go_w);
    // While the child execs init and init gets going, move it into its cgroup(s). Init waits for the shell config,
    // sent only once this is done, before it unshares its cgroup namespace and forks anything.
    let pid_text = child.pid.to_string();
    for procs in &cgroup_procs {
        std::fs::write(procs, &pid_text).map_err(|e| SandboxError::io(format!("joining cgroup {}", procs.display()), e))?;
    }
    set_recv_timeout(&control, HANDSHAKE_TIMEOUT).map_err(io_err("SO_RCVTIMEO"))?;
    // If the child failed before its exec, say why rather than that the send failed.
    let sent = proto::send(control.as_fd(), &config, &[]).map_err(io_err("sending config to ignis-init"));
    if let Some((stage, errno)) = child_failure(err_r)? {
        let stage = CHILD_STAGES.get(usize::from(stage)).copied().unwrap_or("?");
        let what = if stage == CHILD_STAGES[1] {
            format!("ignis-init: {stage} {}", host.mountpoint.display())
        } else {
            format!("ignis-init: {stage}")
        };
        return Err(SandboxError::io(what, io::Error::from_raw_os_error(errno)));
    }

    sent?;
    // A sandbox made from nothing: its function goes now, while init is still starting.
    if let Some(function) = &function
        && let Err(e) = give(&host.cgroups, id, &control, function)
    {
        // Init may have failed its setup and said why before it hung up.
        return Err(match receive(&control) {
            Ok((message, _)) => unexpected(message),
            Err(_) => e,
        });
    }
    match receive(&control)? {
        (InitMsg::Ready, _) => {}
        (other, _) => return Err(unexpected(other)),
    }
    let runtime_api = network.listener().map_err(io_err("the runtime API listener"))?;

    let pidfd = child.pidfd.take().expect("set above");
    let pid = child.pid;
    std::mem::forget(child); // Ownership passes to the Shell.
    Ok(Shell(Sandbox {
        runtime_api,
        output,
        pid,
        pidfd,
        control,
        cgroups: host.cgroups.clone(),
        id: id.to_string(),
        uid_slot: Some(slot),
        reaped: false,
        exit: None,
        destroyed: false,
        peak_file: std::sync::OnceLock::new(),
        network,
    }))
}

/// Waits (bounded) for the cloned child to exec init (EOF) or report a failure (stage, errno).
fn child_failure(err_r: OwnedFd) -> Result<Option<(u8, i32)>, SandboxError> {
    let mut msg = [0u8; 5];
    let mut n = 0;
    let deadline = std::time::Instant::now() + HANDSHAKE_TIMEOUT;
    while n < msg.len() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let mut p = libc::pollfd { fd: err_r.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut p, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if ready == 0 {
            return Err(SandboxError::io("waiting for ignis-init to start", io::ErrorKind::TimedOut.into()));
        }
        if ready < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(SandboxError::io("poll", e));
        }
        // SAFETY: reads into the unused rest of msg.
        let r = unsafe { libc::read(err_r.as_raw_fd(), msg[n..].as_mut_ptr().cast(), msg.len() - n) };
        match r {
            0 => break,
            r if r > 0 => n += r as usize,
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(SandboxError::io("reading from the cloned child", e));
                }
            }
        }
    }
    if n < msg.len() {
        return Ok(None);
    }
    Ok(Some((msg[0], i32::from_ne_bytes(msg[1..].try_into().expect("4 bytes")))))
}

fn set_recv_timeout(fd: &OwnedFd, t: Duration) -> io::Result<()> {
    let tv = libc::timeval { tv_sec: t.as_secs() as libc::time_t, tv_usec: t.subsec_micros() as libc::suseconds_t };
    // SAFETY: tv is a valid timeval of the given size.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    })
    .map(drop)
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: plain fcntls on an fd we own.
    unsafe {
        let fl = cvt(libc::fcntl(fd.as_raw_fd(), libc::F_GETFL))?;
        cvt(libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK)).map(drop)
    }
}
