//! `ignis-init`: pid 1 of a sandbox. The binary `src/bin/ignis-init.rs` only calls [`main`].
//!
//! Started by [`crate::Host::spawn`] already inside new user, pid, mount, ipc and uts namespaces and a network
//! namespace of the worker's (owned by the host's user namespace: no network privilege at all, `lo` already up), as root
//! *of its user namespace* (uid/gid 0 inside, the sandbox's `base` outside: all its capabilities apply only to what
//! that namespace owns), with exactly these fds: 0 = /dev/null, 1 and 2 = the output pipe, 3 = the control socket
//! (see `proto`); an empty environment; no supplementary groups; its cwd the copy of the root base (`build_base`,
//! built by the worker in its spawner thread's mount namespace) that its mount namespace got from that thread.
//! The worker may still be moving it into the sandbox's cgroup(s). Single-threaded throughout, so `fork` is
//! unrestricted. In order:
//!
//! 1. makes its root from the base and pivots into it (`enter_root`; this needs no config: it overlaps with the
//!    worker's cgroup writes);
//! 2. reads its `ShellConfig` (the runtime's user, hostname and seccomp filters) from fd 3, which the worker sends
//!    only once init is inside its cgroup(s); unshares a cgroup namespace rooted there; sets the hostname; sets the
//!    per-user limits of its user namespace, the message queue limits of its ipc namespace and `RLIMIT_MSGQUEUE`
//!    (`limit_kernel_resources`);
//! 3. says it is ready; then waits, a shell in the worker's pool, for its
//!    function's `InitConfig` and mount trees (detached), in this order: a container image or runtime base, which
//!    becomes the root in place of the base (`enter_image`); the code, which it mounts at `/var/task`; the layers,
//!    at `/opt` (each optional); then a `/tmp` and a `/dev/shm` of the function's size (`mount_scratch`); the
//!    trees' fds are closed;
//! 4. forks the runtime: default signal dispositions, empty mask, new session; empties the capability bounding
//!    set; no supplementary groups; gid/uid of the sandbox user (which clears the effective, permitted and ambient
//!    sets), inheritable set cleared with `capset`, ambient cleared; `no_new_privs`; cwd `/var/task` (an image's:
//!    its working directory); then installs the seccomp filters and `execve`s the entrypoint (with an image's
//!    arguments) with exactly the configured environment and fds 0-2 only.
//!    Reports "exec ok"/"exec failed" (with the failing step) to the worker;
//! 5. reaps every process that gets reparented to it; when the runtime exits, reports its status and exits, which
//!    makes the kernel kill whatever else is left in the pid namespace. It also exits when the worker hangs up.
//!
//! On any setup error it prints a message to stderr (the output pipe), reports it over fd 3 and exits 1.

use std::ffi::{CString, OsStr};
use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt, symlink};
use std::path::Path;

use crate::proto::{self, InitConfig, InitMsg, ShellConfig, Tree};
use crate::spawn::{MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY, MountAttr, mount_setattr};

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CONTROL_FD: i32 = 3;

/// Host paths of `/etc` made visible read-only in the sandbox when they exist. Never the whole of `/etc`.
const ETC_BINDS: [&str; 4] = ["ld.so.cache", "ssl", "ca-certificates", "alternatives"];
/// Host top-level entries recreated in the sandbox (as the same symlink, or a read-only bind of the directory).
const TOP_LEVEL: [&str; 6] = ["bin", "sbin", "lib", "lib64", "lib32", "libx32"];
const DEV_NODES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

#[derive(Debug)]
struct SetupError {
    what: String,
    err: io::Error,
}

type Result<T> = std::result::Result<T, SetupError>;

trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|err| SetupError { what: what(), err })
    }
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

fn cstr(s: impl AsRef<OsStr>) -> io::Result<CString> {
    CString::new(s.as_ref().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in string"))
}

/// Entry point of the `ignis-init` binary.
pub fn main() -> ! {
    // What the Rust runtime's start would do (the binary skips it): a closed pipe is an error, not a signal.
    // SAFETY: plain syscall.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    // SAFETY: fstat only writes the stat buffer.
    let is_socket = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(CONTROL_FD, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFSOCK
    };
    if !is_socket {
        eprintln!("ignis-init: no control socket on fd 3; this program is started by ignis-sandbox");
        std::process::exit(2);
    }
    // SAFETY: fd 3 is the control socket handed to us by the spawner (see module docs); we take ownership of it.
    let control = unsafe { OwnedFd::from_raw_fd(CONTROL_FD) };
    // Keep it out of the runtime.
    // SAFETY: plain fcntl on an fd we own.
    unsafe { libc::fcntl(CONTROL_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
    match run(control.as_fd()) {
        Ok(()) => std::process::exit(0),
        Err(SetupError { what, err }) => {
            let _ = writeln!(io::stderr(), "ignis-init: {what}: {err}");
            let msg = InitMsg::SetupFailed { what, error: err.to_string(), errno: err.raw_os_error() };
            let _ = report(control.as_fd(), &msg);
            std::process::exit(1)
        }
    }
}

fn report(control: BorrowedFd<'_>, msg: &InitMsg) -> io::Result<()> {
    proto::send(control, &serde_json::to_vec(msg).expect("serializable"), &[])
}

/// Reads one JSON message (and the fds it carries) from the worker; exits quietly if the worker hung up (a pooled
/// shell it discarded).
fn receive<T: serde::de::DeserializeOwned>(control: BorrowedFd<'_>, what: &str) -> Result<(T, Vec<OwnedFd>)> {
    let (buf, fds) = match proto::recv(control, 0).ctx(|| format!("reading {what}"))? {
        Some(message) => message,
        None => std::process::exit(0),
    };
    let msg = serde_json::from_slice(&buf).map_err(io::Error::other).ctx(|| format!("parsing {what}"))?;
    Ok((msg, fds))
}

fn run(control: BorrowedFd<'_>) -> Result<()> {
    // 1. The root filesystem (all but what depends on the function): nothing here needs the config, so it overlaps
    //    with the worker moving us into our cgroup(s).
    enter_root()?;

    // 2. User, hostname, seccomp filters for later. The worker sends them once we are in our cgroup(s): only then
    //    may a cgroup namespace be rooted there, and the runtime be forked.
    let (shell, _): (ShellConfig, _) = receive(control, "shell config")?;
    let filters: Vec<Vec<libc::sock_filter>> =
        shell.seccomp.iter().map(|hex| crate::seccomp::decode(hex)).collect::<io::Result<_>>().ctx(|| "seccomp filter".into())?;
    // SAFETY: plain syscall; affects only this process (and future children).
    cvt(unsafe { libc::unshare(libc::CLONE_NEWCGROUP) }).ctx(|| "unshare(CLONE_NEWCGROUP)".into())?;
    let host = shell.hostname.as_bytes();
    // SAFETY: pointer and length describe a valid buffer.
    cvt(unsafe { libc::sethostname(host.as_ptr().cast(), host.len()) }).ctx(|| "sethostname".into())?;
    limit_kernel_resources()?;

    // 3. Ready for a function.
    report(control, &InitMsg::Ready).ctx(|| "reporting ready".into())?;

    // 4. The function: an image (or runtime base) as the root, the code at /var/task, the layers at /opt; /tmp,
    //    /dev/shm.
    let (cfg, trees): (InitConfig, _) = receive(control, "config")?;
    if trees.len() != cfg.trees.len() {
        let e = io::Error::new(io::ErrorKind::InvalidData, format!("{} mount trees for {:?}", trees.len(), cfg.trees));
        return Err(e).ctx(|| "config".into());
    }
    for (kind, tree) in cfg.trees.iter().zip(&trees) {
        match kind {
            Tree::Image => enter_image(tree.as_fd())?,
            Tree::Code => attach(tree.as_fd(), Path::new("/var/task")).ctx(|| "attaching the code at /var/task".into())?,
            Tree::Opt => attach(tree.as_fd(), Path::new("/opt")).ctx(|| "attaching the layers at /opt".into())?,
        }
    }
    // Not for the runtime to inherit.
    drop(trees);
    mount_scratch(cfg.tmp_mb)?;

    // 5. The runtime.
    let runtime = match start_runtime(&cfg, &shell, &filters)? {
        Ok(pid) => pid,
        Err((stage, errno)) => {
            let err = io::Error::from_raw_os_error(errno);
            let _ = writeln!(io::stderr(), "ignis-init: {stage} {}: {err}", cfg.entrypoint);
            let _ = report(control, &InitMsg::ExecFailed { stage, errno });
            std::process::exit(1);
        }
    };
    report(control, &InitMsg::ExecOk).ctx(|| "reporting exec".into())?;

    // 6. Reap until the runtime is gone.
    let status = reap_until(runtime, control)?;
    if let Some(status) = status {
        let msg = if libc::WIFSIGNALED(status) {
            InitMsg::Signaled { signal: libc::WTERMSIG(status) }
        } else {
            InitMsg::Exited { code: libc::WEXITSTATUS(status) }
        };
        let _ = report(control, &msg);
    }
    Ok(())
}

/// Writes [`crate::userns::USER_LIMITS`] to `/proc/sys/user/` (the sysctls of the writer's user namespace: init
/// is root there), [`crate::userns::MQUEUE_LIMITS`] to `/proc/sys/fs/mqueue/` (those of its ipc namespace) and
/// sets `RLIMIT_MSGQUEUE` to at most [`crate::userns::MSGQUEUE_BYTES`]. All inherited by the runtime, none of it
/// writable by it.
fn limit_kernel_resources() -> Result<()> {
    let user = crate::userns::USER_LIMITS.iter().map(|(name, v)| (format!("/proc/sys/user/{name}"), *v));
    let mqueue = crate::userns::MQUEUE_LIMITS.iter().map(|(name, v)| (format!("/proc/sys/fs/mqueue/{name}"), *v));
    for (path, value) in user.chain(mqueue) {
        match fs::write(&path, value.to_string()) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            written => written.ctx(|| format!("writing {path}"))?,
        }
    }
    // SAFETY: rlimit is plain old data, written by getrlimit.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: valid out pointer.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_MSGQUEUE, &mut limit) }).ctx(|| "getrlimit(RLIMIT_MSGQUEUE)".into())?;
    let bytes = limit.rlim_max.min(crate::userns::MSGQUEUE_BYTES);
    let limit = libc::rlimit { rlim_cur: bytes, rlim_max: bytes };
    // SAFETY: valid pointer; lowering a limit needs no privilege.
    cvt(unsafe { libc::setrlimit(libc::RLIMIT_MSGQUEUE, &limit) }).map(drop).ctx(|| "setrlimit(RLIMIT_MSGQUEUE)".into())
}

fn mount(src: Option<&Path>, target: &Path, fstype: Option<&str>, flags: libc::c_ulong, data: Option<&str>) -> Result<()> {
    let what = || {
        format!(
            "mount {} on {} (type {}, flags {flags:#x}, {})",
            src.map_or("none".into(), |s| s.display().to_string()),
            target.display(),
            fstype.unwrap_or("none"),
            data.unwrap_or("")
        )
    };
    let c_src = src.map(|s| cstr(s.as_os_str())).transpose().ctx(what)?;
    let c_target = cstr(target.as_os_str()).ctx(what)?;
    let c_type = fstype.map(cstr).transpose().ctx(what)?;
    let c_data = data.map(cstr).transpose().ctx(what)?;
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: all pointers are null or valid NUL-terminated strings that outlive the call.
    cvt(unsafe { libc::mount(ptr(&c_src), c_target.as_ptr(), ptr(&c_type), flags, ptr(&c_data).cast()) }).ctx(what)?;
    Ok(())
}

/// Sets mount attributes (`MOUNT_ATTR_*`) of the mount at `target`, and of the mounts below it if `recursive`.
/// Unlike a remount it leaves alone what it is not asked to change, such as the flags the kernel locked on mounts
/// inherited from the host's (more privileged) mount namespace, which must not be cleared.
fn set_attr(target: &Path, set: u64, recursive: bool) -> Result<()> {
    let what = || format!("mount_setattr {} ({set:#x})", target.display());
    let path = cstr(target.as_os_str()).ctx(what)?;
    let attr = MountAttr { attr_set: set, attr_clr: 0, propagation: 0, userns_fd: 0 };
    let flags = if recursive { libc::AT_RECURSIVE as libc::c_uint } else { 0 };
    // Making a mount read-only fails with EBUSY while a file on it is open for
    // writing. In the worker, a sandbox another thread is cloning holds copies
    // of all the process's descriptors (the files this thread just wrote
    // included) until its exec, a moment later: wait for that, briefly.
    let mut attempts = 0;
    loop {
        match mount_setattr(libc::AT_FDCWD, &path, flags, &attr) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempts < 200 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            result => return result.ctx(what),
        }
    }
}

/// Bind-mounts `src` (with the mounts below it) on `target`, read-only, nosuid and nodev.
fn bind_ro(src: &Path, target: &Path) -> Result<()> {
    mount(Some(src), target, None, libc::MS_BIND | libc::MS_REC, None)?;
    set_attr(target, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, true)
}

/// Raw syscall returning an fd.
fn fd_syscall(ret: libc::c_long) -> io::Result<OwnedFd> {
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the syscall just created this fd; we own it.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as libc::c_int) })
}

/// `move_mount` of the detached mount (tree) `from` onto `target`.
fn attach(from: BorrowedFd<'_>, target: &Path) -> io::Result<()> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    let t = cstr(target.as_os_str())?;
    // SAFETY: valid fd and NUL-terminated paths.
    let r = unsafe {
        libc::syscall(libc::SYS_move_mount, from.as_raw_fd(), c"".as_ptr(), libc::AT_FDCWD, t.as_ptr(), MOVE_MOUNT_F_EMPTY_PATH)
    };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// A new tmpfs as a detached mount (nosuid, nodev), with the given options.
fn new_tmpfs(options: &[(&std::ffi::CStr, &std::ffi::CStr)]) -> io::Result<OwnedFd> {
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    // SAFETY: valid NUL-terminated name.
    let fs = fd_syscall(unsafe { libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), FSOPEN_CLOEXEC) })?;
    for (key, value) in options {
        // SAFETY: valid fd and NUL-terminated strings.
        let r = unsafe { libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), FSCONFIG_SET_STRING, key.as_ptr(), value.as_ptr(), 0) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: valid fd; no key or value for this command.
    let r = unsafe {
        libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), FSCONFIG_CMD_CREATE, std::ptr::null::<u8>(), std::ptr::null::<u8>(), 0)
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let attrs = (MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV) as libc::c_uint;
    // SAFETY: valid fd.
    fd_syscall(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) })
}

fn mkdir(path: &Path, mode: u32) -> Result<()> {
    fs::DirBuilder::new().mode(mode).create(path).ctx(|| format!("mkdir {}", path.display()))?;
    // Not subject to the umask.
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).ctx(|| format!("chmod {}", path.display()))
}

fn write_file(path: &Path, content: &str) -> Result<()> {
    fs::write(path, content).ctx(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).ctx(|| format!("chmod {}", path.display()))
}

fn touch(path: &Path) -> Result<()> {
    fs::File::create(path).map(drop).ctx(|| format!("creating {}", path.display()))
}

fn ln_s(target: &str, link: &Path) -> Result<()> {
    symlink(target, link).ctx(|| format!("symlink {} -> {target}", link.display()))
}

/// Builds the read-only *base* of sandbox roots on `root` (an empty directory), in the calling thread's mount
/// namespace: the worker's spawner thread calls it (through `spawn`) once per [`crate::Host`], in a mount namespace
/// of the thread's own, so every sandbox cloned from that thread starts with a copy of the base, and nothing of it
/// is seen on the host. The base (a small tmpfs, read-only once built, private) holds:
///
/// - `usr`: host `/usr`, bind, read-only, nosuid, nodev; `bin`, `sbin`, `lib*`: as on the host (symlinks into
///   `usr` on merged-/usr hosts, else read-only binds);
/// - `etc`: generated `passwd`, `group`, `hosts`, `resolv.conf` (the host's [`crate::Host::set_network`] resolver, else
///   empty), `nsswitch.conf`, `hostname`, plus read-only
///   binds of the host's `ld.so.cache`, `ssl`, `ca-certificates`, `alternatives` when present. Nothing else of the
///   host's `/etc` (in particular not `shadow`);
/// - `dev`: a small read-only tmpfs with binds of the host's null, zero, full, random, urandom, tty (those that
///   exist), the usual fd/stdin/stdout/stderr symlinks and an empty `shm`. No `/sys`;
/// - empty `var/task`, `opt`, `tmp` (1777) and `proc` (mountpoints).
///
/// Its files belong to host root, an id no sandbox maps: inside they show as the overflow id, readable by others.
/// In a sandbox's (less privileged) mount namespace the kernel locks the flags of the copied mounts (read-only,
/// nosuid, nodev, noexec), so no sandbox can make its copy writable. [`enter_root`], `run` and [`mount_scratch`]
/// add what is the sandbox's own:
///
/// - `proc`: a fresh procfs of the sandbox's pid namespace, nosuid, nodev, noexec (mounted before the pivot: in a
///   user namespace the kernel allows a new procfs only while a fully visible one is mounted);
/// - `var/task`: the code directory: the detached mount tree the worker cloned (read-only, nosuid, nodev); `opt`:
///   the layers' tree, likewise, if the function has layers;
/// - `tmp`: its own tmpfs of `tmp_mb` MiB, mode 1777, nosuid, nodev; `dev/shm`: one of up to 64 MiB.
///
/// A sandbox of a container image leaves the base for the image instead ([`enter_image`]).
fn build_base(root: &Path, uid: u32, gid: u32, hostname: &str, resolv_conf: &str) -> Result<()> {
    let root_fs = new_tmpfs(&[(c"size", c"4m"), (c"mode", c"0755")]).ctx(|| "creating the root tmpfs".into())?;
    attach(root_fs.as_fd(), root).ctx(|| format!("mount tmpfs on {}", root.display()))?;
    drop(root_fs);

    // /usr and the top-level links into it.
    mkdir(&root.join("usr"), 0o755)?;
    bind_ro(Path::new("/usr"), &root.join("usr"))?;
    for name in TOP_LEVEL {
        let host = Path::new("/").join(name);
        let Ok(meta) = fs::symlink_metadata(&host) else { continue };
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&host).ctx(|| format!("readlink {}", host.display()))?;
            symlink(&target, root.join(name)).ctx(|| format!("symlink {name}"))?;
        } else if meta.is_dir() {
            mkdir(&root.join(name), 0o755)?;
            bind_ro(&host, &root.join(name))?;
        }
    }

    // /etc
    let etc = root.join("etc");
    mkdir(&etc, 0o755)?;
    write_file(
        &etc.join("passwd"),
        &format!("root:x:0:0:root:/root:/sbin/nologin\nsbx_user1051:x:{uid}:{gid}::/tmp:/sbin/nologin\n"),
    )?;
    write_file(&etc.join("group"), &format!("root:x:0:\nsbx_user1051:x:{gid}:\n"))?;
    write_file(&etc.join("hosts"), &format!("127.0.0.1 localhost {hostname}\n::1 localhost {hostname}\n"))?;
    write_file(&etc.join("hostname"), &format!("{hostname}\n"))?;
    write_file(&etc.join("resolv.conf"), resolv_conf)?;
    write_file(
        &etc.join("nsswitch.conf"),
        "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n",
    )?;
    for name in ETC_BINDS {
        let host = Path::new("/etc").join(name);
        let Ok(meta) = fs::metadata(&host) else { continue };
        let target = etc.join(name);
        if meta.is_dir() {
            mkdir(&target, 0o755)?;
        } else {
            touch(&target)?;
        }
        bind_ro(&host, &target)?;
    }

    // Mountpoints of /var/task, /opt, /tmp, /proc.
    mkdir(&root.join("var"), 0o755)?;
    mkdir(&root.join("var/task"), 0o755)?;
    mkdir(&root.join("opt"), 0o755)?;
    mkdir(&root.join("tmp"), 0o1777)?;
    mkdir(&root.join("proc"), 0o555)?;

    // /dev
    let dev = root.join("dev");
    mkdir(&dev, 0o755)?;
    mount(Some(Path::new("tmpfs")), &dev, Some("tmpfs"), libc::MS_NOSUID | libc::MS_NOEXEC, Some("size=64k,mode=0755"))?;
    for name in DEV_NODES {
        let host = Path::new("/dev").join(name);
        if !host.exists() {
            continue;
        }
        let target = dev.join(name);
        touch(&target)?;
        mount(Some(&host), &target, None, libc::MS_BIND, None)?;
    }
    ln_s("/proc/self/fd", &dev.join("fd"))?;
    for (i, name) in ["stdin", "stdout", "stderr"].into_iter().enumerate() {
        ln_s(&format!("/proc/self/fd/{i}"), &dev.join(name))?;
    }
    mkdir(&dev.join("shm"), 0o1777)?;
    set_attr(&dev, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, false)?;

    set_attr(root, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, false)?;
    // Nothing propagates in or out of the base (nor between the sandboxes' copies of it).
    mount(None, root, None, libc::MS_REC | libc::MS_PRIVATE, None)
}

/// [`build_base`] for the worker.
pub(crate) fn build_base_for_host(root: &Path, resolv_conf: &str) -> std::result::Result<(), crate::SandboxError> {
    build_base(root, crate::SANDBOX_UID, crate::SANDBOX_GID, crate::SANDBOX_HOSTNAME, resolv_conf)
        .map_err(|SetupError { what, err }| crate::SandboxError::io(format!("building the sandbox root base: {what}"), err))
}

/// Makes the sandbox's root from the copy of the base ([`build_base`]) that the clone left on init's cwd, and
/// pivots into it: everything made rprivate first (nothing propagates either way), a recursive bind of the base
/// (the copy itself is locked on its parent, and pivot_root refuses a locked mount) attached on the cwd, a fresh
/// `/proc`, then `pivot_root` and the old root detached. Init itself need not be able to resolve the host path
/// of the base (its cwd).
fn enter_root() -> Result<()> {
    mount(None, Path::new("/"), None, libc::MS_REC | libc::MS_PRIVATE, None)?;
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_RECURSIVE as libc::c_uint;
    // SAFETY: valid NUL-terminated path.
    let tree = fd_syscall(unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c".".as_ptr(), flags) })
        .ctx(|| "cloning the root base".into())?;
    attach(tree.as_fd(), Path::new(".")).ctx(|| "attaching the root".into())?;
    // SAFETY: plain syscall on an fd we own (the root of the new tree).
    cvt(unsafe { libc::fchdir(tree.as_raw_fd()) }).ctx(|| "entering the root".into())?;
    drop(tree);
    mount_proc()?;
    pivot_to_cwd()
}

/// A fresh `/proc` (of the sandbox's pid namespace) on `proc` of the cwd.
fn mount_proc() -> Result<()> {
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    mount(Some(Path::new("proc")), Path::new("proc"), Some("proc"), flags, None)
}

/// Makes the cwd (the root of a mount) the root and detaches the old one with everything mounted below it; the
/// new root read-only, nosuid and nodev.
fn pivot_to_cwd() -> Result<()> {
    // Pivot: stack the new root on the old one, then detach the old one (pivot_root(2), "pivot_root(".", ".")").
    let dot = c".";
    // SAFETY: valid NUL-terminated paths.
    cvt(unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) } as libc::c_int)
        .ctx(|| "pivot_root".into())?;
    // SAFETY: valid NUL-terminated path.
    cvt(unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) }).ctx(|| "detaching old root".into())?;
    // SAFETY: valid NUL-terminated path.
    cvt(unsafe { libc::chdir(c"/".as_ptr()) }).ctx(|| "chdir /".into())?;
    set_attr(Path::new("/"), MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, false)
}

/// Makes a container image (`image`, a detached mount tree) the root, in place of the base [`enter_root`] pivoted
/// into: the image attached on the base's `/var/task` (an empty directory no image function uses) and entered, a
/// fresh `/proc` on its `proc` (allowed, as the base's `/proc` is a fully visible one), a recursive bind of the
/// base's `/dev` on its `dev` (recursive: the host's device nodes in it are locked mounts, which can be neither
/// moved nor left behind), then a pivot into it that detaches the base, and with it every host path (`/usr`,
/// `/etc`'s files). The worker checked that `dev`, `proc` and `tmp` are directories of the image.
fn enter_image(image: BorrowedFd<'_>) -> Result<()> {
    attach(image, Path::new("/var/task")).ctx(|| "attaching the image".into())?;
    // SAFETY: plain syscall on a valid fd (the root of the image's tree).
    cvt(unsafe { libc::fchdir(image.as_raw_fd()) }).ctx(|| "entering the image".into())?;
    mount_proc()?;
    mount(Some(Path::new("/dev")), Path::new("dev"), None, libc::MS_BIND | libc::MS_REC, None)?;
    // The host's resolver for the sandbox (the base's `resolv.conf`) over the image's, where it has one: a regular
    // file in a real `etc` directory (the image is read-only and nothing of the sandbox runs yet: it stays so).
    let is = |path: &str, kind: u32| fs::symlink_metadata(path).is_ok_and(|m| m.mode() & libc::S_IFMT == kind);
    if is("etc", libc::S_IFDIR) && is("etc/resolv.conf", libc::S_IFREG) {
        mount(Some(Path::new("/etc/resolv.conf")), Path::new("etc/resolv.conf"), None, libc::MS_BIND, None)?;
    }
    pivot_to_cwd()
}

/// Mounts what every function gets on its root: a tmpfs of `tmp_mb` MiB at `/tmp` and one of up to 64 MiB at
/// `/dev/shm` (nosuid, nodev; `/dev/shm` noexec).
fn mount_scratch(tmp_mb: u32) -> Result<()> {
    let nosuid_nodev = libc::MS_NOSUID | libc::MS_NODEV;
    let tmp_opts = format!("size={tmp_mb}m,mode=1777");
    mount(Some(Path::new("tmpfs")), Path::new("/tmp"), Some("tmpfs"), nosuid_nodev, Some(&tmp_opts))?;
    let shm_opts = format!("size={}m,mode=1777", tmp_mb.min(64));
    mount(Some(Path::new("tmpfs")), Path::new("/dev/shm"), Some("tmpfs"), nosuid_nodev | libc::MS_NOEXEC, Some(&shm_opts))
}

/// Forks and execs the runtime. Outer error: init's own failure. Inner error: (stage, errno) of the runtime's
/// launch (the stage of a `chdir` names the directory), detected through a CLOEXEC pipe that the child writes to only
/// if it fails before/at execve.
fn start_runtime(
    cfg: &InitConfig,
    shell: &ShellConfig,
    filters: &[Vec<libc::sock_filter>],
) -> Result<std::result::Result<libc::pid_t, (String, i32)>> {
    // Everything the child needs is prepared here: after fork it only makes syscalls.
    let entry = cstr(search_path(&cfg.entrypoint, &cfg.env)).ctx(|| "entrypoint".into())?;
    let args: Vec<CString> = cfg.args.iter().map(cstr).collect::<io::Result<_>>().ctx(|| "arguments".into())?;
    let mut argv: Vec<*const libc::c_char> = std::iter::once(&entry).chain(&args).map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());
    let env: Vec<CString> =
        cfg.env.iter().map(|(k, v)| cstr(format!("{k}={v}"))).collect::<io::Result<_>>().ctx(|| "environment".into())?;
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|c| c.as_ptr()).collect();
    envp.push(std::ptr::null());
    let cwd = cstr(&cfg.cwd).ctx(|| "working directory".into())?;
    let (uid, gid) = (shell.uid, shell.gid);
    let progs: Vec<libc::sock_fprog> = filters
        .iter()
        .map(|f| libc::sock_fprog { len: f.len() as libc::c_ushort, filter: f.as_ptr().cast_mut() })
        .collect();
    // capset(2) with version 3: a header and two data words (64 capability bits), all zero.
    let cap_header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let cap_data = [CapData { effective: 0, permitted: 0, inheritable: 0 }; 2];

    let mut fds = [0; 2];
    // SAFETY: fds is a valid out array of two ints.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }).ctx(|| "pipe2".into())?;
    // SAFETY: pipe2 just created these fds; we own them.
    let (err_r, err_w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };

    // SAFETY: init is single-threaded, so the child may do anything; it only makes async-signal-safe calls anyway.
    let pid = cvt(unsafe { libc::fork() }).ctx(|| "fork".into())?;
    if pid == 0 {
        // SAFETY: in the child; only raw syscalls on prepared data, and it never returns.
        unsafe {
            let fail = |stage: u8| -> ! {
                let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
                let mut msg = [0u8; 5];
                msg[0] = stage;
                msg[1..].copy_from_slice(&errno.to_ne_bytes());
                libc::write(err_w.as_raw_fd(), msg.as_ptr().cast(), msg.len());
                libc::_exit(127)
            };
            // Default dispositions (ignored signals would stay ignored across exec) and an empty mask.
            for sig in 1..=64 {
                libc::signal(sig, libc::SIG_DFL);
            }
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            if libc::setsid() < 0 {
                fail(0);
            }
            // Empty the bounding set while we may (CAP_SETPCAP): caps can then never come back, not even by
            // exec of a file with capabilities. EINVAL marks the end of the kernel's capabilities.
            for cap in 0..64 {
                if libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) < 0 {
                    if *libc::__errno_location() == libc::EINVAL {
                        break;
                    }
                    fail(1);
                }
            }
            if libc::setgroups(0, std::ptr::null()) < 0 {
                fail(2);
            }
            if libc::setresgid(gid, gid, gid) < 0 {
                fail(3);
            }
            // Leaving uid 0 clears the effective, permitted and ambient sets.
            if libc::setresuid(uid, uid, uid) < 0 {
                fail(4);
            }
            // And the inheritable set, which survives it.
            if libc::syscall(libc::SYS_capset, &cap_header as *const CapHeader, cap_data.as_ptr()) < 0
                || libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0, 0, 0) < 0
            {
                fail(5);
            }
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
                fail(6);
            }
            if libc::chdir(cwd.as_ptr()) < 0 {
                fail(7);
            }
            // Last: from here on only what the policy allows (write and _exit for `fail` included).
            for prog in &progs {
                if libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, prog as *const libc::sock_fprog) < 0 {
                    fail(8);
                }
            }
            libc::execve(entry.as_ptr(), argv.as_ptr(), envp.as_ptr());
            fail(9)
        }
    }
    drop(err_w);
    let mut msg = [0u8; 5];
    let mut f = fs::File::from(err_r);
    let n = read_full(&mut f, &mut msg).ctx(|| "reading exec status".into())?;
    if n < msg.len() {
        return Ok(Ok(pid));
    }
    const STAGES: [&str; 10] = [
        "setsid",
        "dropping the capability bounding set",
        "setgroups",
        "setgid",
        "setuid",
        "clearing capabilities",
        "no_new_privs",
        "chdir",
        "seccomp",
        "execve",
    ];
    let errno = i32::from_ne_bytes(msg[1..].try_into().expect("4 bytes"));
    let stage = STAGES.get(msg[0] as usize).copied().unwrap_or("?");
    let stage = if stage == "chdir" { format!("chdir {}", cfg.cwd) } else { stage.to_string() };
    Ok(Err((stage, errno)))
}

/// The search path of a command without a `/` when the environment sets no `PATH` (an image's config usually does).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `command` as `execvp` would find it: a name without `/` is looked for in the environment's `PATH` (an image's
/// ENTRYPOINT may be `["python3", ...]`), the first executable regular file found; else it stays as it is (and
/// `execve` fails on it with ENOENT).
fn search_path(command: &str, env: &[(String, String)]) -> String {
    if command.contains('/') || command.is_empty() {
        return command.to_string();
    }
    let path = env.iter().rev().find(|(k, _)| k == "PATH").map_or(DEFAULT_PATH, |(_, v)| v.as_str());
    path.split(':')
        .filter(|dir| dir.starts_with('/'))
        .map(|dir| format!("{}/{command}", dir.trim_end_matches('/')))
        .find(|candidate| {
            fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| command.to_string())
}

fn read_full(f: &mut impl io::Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reaps all children until `runtime` ended (returns its wait status) or the worker hung up (returns None).
fn reap_until(runtime: libc::pid_t, control: BorrowedFd<'_>) -> Result<Option<libc::c_int>> {
    // SIGCHLD through a signalfd, so one poll covers children and the control socket.
    // SAFETY: sigset_t is plain old data; the calls only touch our local set and this process's mask.
    let sfd = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        cvt(libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut())).ctx(|| "sigprocmask".into())?;
        let fd = cvt(libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK)).ctx(|| "signalfd".into())?;
        OwnedFd::from_raw_fd(fd)
    };
    loop {
        // Reap first: children that ended before SIGCHLD was blocked raised no signal on the signalfd.
        loop {
            let mut status = 0;
            // SAFETY: status is a valid out pointer.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid == runtime {
                return Ok(Some(status));
            }
            if pid <= 0 {
                break;
            }
        }
        let mut pfds = [
            libc::pollfd { fd: sfd.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: control.as_raw_fd(), events: libc::POLLIN | libc::POLLRDHUP, revents: 0 },
        ];
        // SAFETY: pfds is a valid array of two pollfds.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).ctx(|| "poll".into());
        }
        if pfds[1].revents != 0 {
            // The worker sends nothing after the config: this is a hang-up (or garbage). Either way, stop.
            match proto::recv(control, libc::MSG_DONTWAIT) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                _ => return Ok(None),
            }
        }
        if pfds[0].revents != 0 {
            let mut info = [0u8; size_of::<libc::signalfd_siginfo>()];
            // SAFETY: info is a writable buffer of the given size. Drain; errors (EAGAIN) are fine.
            while unsafe { libc::read(sfd.as_raw_fd(), info.as_mut_ptr().cast(), info.len()) } > 0 {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::search_path;

    #[test]
    fn commands_without_a_slash_are_looked_for_in_path() {
        let tmp = tempfile::tempdir().unwrap();
        let (first, second) = (tmp.path().join("a"), tmp.path().join("b"));
        for dir in [&first, &second] {
            std::fs::create_dir(dir).unwrap();
        }
        let write = |path: &std::path::Path, mode: u32| {
            std::fs::write(path, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write(&first.join("plain"), 0o644);
        write(&second.join("plain"), 0o755);
        write(&second.join("run"), 0o755);
        std::fs::create_dir(first.join("dir")).unwrap();
        let path = format!("relative:{}:{}", first.display(), second.display());
        let env = vec![("PATH".to_string(), "/nowhere".to_string()), ("PATH".to_string(), path)];
        let found = |command: &str| search_path(command, &env);
        assert_eq!(found("run"), second.join("run").display().to_string(), "the last PATH wins");
        assert_eq!(found("plain"), second.join("plain").display().to_string(), "only executables");
        assert_eq!(found("dir"), "dir", "only files");
        assert_eq!(found("missing"), "missing");
        assert_eq!(found("/abs/run"), "/abs/run");
        assert_eq!(found("./run"), "./run");
        assert_eq!(found(""), "");
    }
}
