//! The worker side of [`crate::Host::spawn`], in two steps.
//!
//! [`new_shell`] makes a sandbox without a function: cgroup created (`pids.max` only) → control socket pair +
//! output pipe → `clone` into new namespaces → child: fds 0-3 set up, all others closed, `PR_SET_PDEATHSIG`, exec
//! init → parent: shell config sent, listener received. Joining the cgroup is the slow part of a start on cgroup v1
//! (the kernel waits for an RCU grace period), which is why shells are made ahead of time into the host's pool.
//!
//! [`launch`] gives a shell its function: memory and CPU limits written, config sent, exec result received.
//!
//! The caller is a multi-threaded process, so the cloned child (a copy of only the calling thread) must not allocate
//! or take locks: everything it touches (C strings, argv, envp, fds) is prepared before the `clone`, and the child
//! only makes raw syscalls until it `execve`s `ignis-init` (or `_exit(127)`s). Every wait for init is bounded by
//! `SO_RCVTIMEO`. On any failure init is killed and reaped and the cgroup removed (by dropping the [`Shell`]).

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use crate::cgroup::Limits;
use crate::proto::{self, InitConfig, InitMsg, ShellConfig};
use crate::{HANDSHAKE_TIMEOUT, Host, RMDIR_PATIENCE, Sandbox, SandboxConfig, SandboxError};

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
    if !cfg.code_dir.is_dir() {
        return Err(SandboxError::io(format!("code dir {}", cfg.code_dir.display()), io::ErrorKind::NotFound.into()));
    }
    Ok(())
}

/// A sandbox with namespaces, cgroup and runtime API listener, waiting for its function. Dropping it kills and
/// reaps its init and removes its cgroup, as dropping any [`Sandbox`] does.
pub(crate) struct Shell(Sandbox);

impl Shell {
    pub(crate) fn id(&self) -> &str {
        &self.0.id
    }
}

/// Makes a shell named `id`.
pub(crate) fn new_shell(host: &Host, id: String) -> Result<Shell, SandboxError> {
    let limits = Limits { memory_mb: 0, pids_max: host.pids_max };
    let procs = host.cgroups.create(&id, &limits).map_err(|e| SandboxError::io("creating cgroup", e))?;
    start(host, &id, procs).inspect_err(|_| {
        let _ = host.cgroups.remove(&id, RMDIR_PATIENCE);
    })
}

/// Gives `shell` its function and starts the runtime.
/// `cfg` has been validated.
pub(crate) fn launch(shell: Shell, cfg: &SandboxConfig, mountpoint: &std::path::Path) -> Result<Sandbox, SandboxError> {
    let limits = Limits { memory_mb: cfg.memory_mb, pids_max: 0 };
    let Shell(sandbox) = shell;
    sandbox.cgroups.set_limits(&sandbox.id, &limits).map_err(|e| SandboxError::io("setting cgroup limits", e))?;
    let init_cfg = InitConfig {
        mountpoint: mountpoint.to_path_buf(),
        code_dir: cfg.code_dir.canonicalize().map_err(io_err("code dir"))?,
        tmp_mb: cfg.tmp_mb,
        env: cfg.env.clone(),
        entrypoint: cfg.entrypoint.clone(),
        uid: crate::SANDBOX_UID,
        gid: crate::SANDBOX_GID,
        hostname: crate::SANDBOX_HOSTNAME.into(),
    };
    let config = serde_json::to_vec(&init_cfg).map_err(|e| SandboxError::io("serializing config", io::Error::other(e)))?;
    if config.len() > proto::MAX_MSG {
        return Err(SandboxError::io("sandbox config (environment too large)", io::ErrorKind::InvalidInput.into()));
    }
    proto::send(sandbox.control.as_fd(), &config, None).map_err(io_err("sending config to ignis-init"))?;
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

/// One message from init: what it says and any fd it passed.
fn receive(control: &OwnedFd) -> Result<(InitMsg, Option<OwnedFd>), SandboxError> {
    let (bytes, fd) = match proto::recv(control.as_fd(), 0) {
        Ok(Some(m)) => m,
        Ok(None) => return Err(SandboxError::io("ignis-init exited during setup", io::ErrorKind::UnexpectedEof.into())),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            return Err(SandboxError::io("waiting for ignis-init", io::ErrorKind::TimedOut.into()));
        }
        Err(e) => return Err(SandboxError::io("receiving from ignis-init", e)),
    };
    let message = serde_json::from_slice(&bytes).map_err(|e| SandboxError::io("bad message from ignis-init", io::Error::other(e)))?;
    Ok((message, fd))
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

fn start(host: &Host, id: &str, cgroup_procs: Vec<PathBuf>) -> Result<Shell, SandboxError> {
    let config = serde_json::to_vec(&ShellConfig { cgroup_procs })
        .map_err(|e| SandboxError::io("serializing config", io::Error::other(e)))?;

    // Fds. All CLOEXEC: only the child's dup2'd copies survive into init.
    let mut sv = [0; 2];
    // SAFETY: sv is a valid out array of two ints.
    cvt(unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, sv.as_mut_ptr()) })
        .map_err(io_err("socketpair"))?;
    // SAFETY: just created; we own them.
    let (control, child_control) = unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) };
    let mut pfd = [0; 2];
    // SAFETY: pfd is a valid out array of two ints.
    cvt(unsafe { libc::pipe2(pfd.as_mut_ptr(), libc::O_CLOEXEC) }).map_err(io_err("pipe2"))?;
    // SAFETY: just created; we own them.
    let (output, child_output) = unsafe { (OwnedFd::from_raw_fd(pfd[0]), OwnedFd::from_raw_fd(pfd[1])) };
    let child_control = above_stdio(child_control).map_err(io_err("dup"))?;
    let child_output = above_stdio(child_output).map_err(io_err("dup"))?;

    // What the child uses, as raw values.
    let (devnull_fd, out_fd, ctl_fd) = (host.devnull.as_raw_fd(), child_output.as_raw_fd(), child_control.as_raw_fd());
    let init_path = host.init_exe.as_ptr();
    let argv = [c"ignis-init".as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null::<libc::c_char>()];
    // SAFETY: sigset_t is plain old data; sigemptyset initializes it.
    let empty_mask = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        set
    };
    let flags = libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWNET | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;

    // SAFETY: fork-like clone (no CLONE_VM, stack 0: the child continues on a copy of this stack). The child only
    // makes async-signal-safe syscalls on data prepared above and never returns from this block.
    let pid = unsafe {
        let pid = libc::syscall(libc::SYS_clone, (flags | libc::SIGCHLD) as libc::c_ulong, 0usize, 0usize, 0usize, 0usize);
        if pid == 0 {
            if libc::dup2(devnull_fd, 0) < 0
                || libc::dup2(out_fd, 1) < 0
                || libc::dup2(out_fd, 2) < 0
                || libc::dup2(ctl_fd, 3) < 0
                || libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32) < 0
                || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) < 0
            {
                libc::_exit(126);
            }
            libc::sigprocmask(libc::SIG_SETMASK, &empty_mask, std::ptr::null_mut());
            libc::execve(init_path, argv.as_ptr(), envp.as_ptr());
            libc::_exit(127);
        }
        pid
    };
    if pid < 0 {
        return Err(SandboxError::io("clone", io::Error::last_os_error()));
    }
    let mut child = Child { pid: pid as libc::pid_t, pidfd: None };
    drop(child_control);
    drop(child_output);

    // SAFETY: plain syscall; the pid is our unreaped child.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.pid, 0) };
    if pidfd < 0 {
        return Err(SandboxError::io("pidfd_open", io::Error::last_os_error()));
    }
    // SAFETY: just created; pidfds are O_CLOEXEC by default.
    child.pidfd = Some(unsafe { OwnedFd::from_raw_fd(pidfd as i32) });

    set_recv_timeout(&control, HANDSHAKE_TIMEOUT).map_err(io_err("SO_RCVTIMEO"))?;
    proto::send(control.as_fd(), &config, None).map_err(io_err("sending config to ignis-init"))?;
    let runtime_api = match receive(&control)? {
        (InitMsg::Listener, Some(fd)) => std::net::TcpListener::from(fd),
        (other, _) => return Err(unexpected(other)),
    };
    runtime_api.set_nonblocking(true).map_err(io_err("listener O_NONBLOCK"))?;

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
        reaped: false,
        exit: None,
        destroyed: false,
        peak_file: std::sync::OnceLock::new(),
    }))
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
