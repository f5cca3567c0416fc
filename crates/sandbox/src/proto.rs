//! The control protocol between the worker ([`crate::Host::spawn`]) and `ignis-init`, over a `SOCK_SEQPACKET`
//! socket pair (fd 3 in `ignis-init`). One JSON document per packet.
//!
//! 0. (Before init runs: the worker wrote its uid/gid maps and let it exec; it moves init into its cgroup(s) while
//!    init builds its root.)
//! 1. worker → init: [`ShellConfig`] (the runtime's user, hostname and seccomp filters), sent only once init is in
//!    its cgroup(s): init waits for it before it unshares its cgroup namespace or forks anything.
//! 2. init → worker: [`InitMsg::Ready`]. The sandbox is now a shell: namespaces, cgroup, network (with its runtime
//!    API listener, made by the worker: see [`crate::netns`]) and root filesystem (all but the code, `/tmp` and
//!    `/dev/shm`) ready, no function yet. It may wait in the pool.
//! 3. worker → init: [`InitConfig`] (the function), carrying the code directory, or the container image that is to
//!    be the root ([`Tree`]), as a detached, read-only mount tree (an `open_tree(OPEN_TREE_CLONE)` fd, SCM_RIGHTS).
//! 4. init → worker: [`InitMsg::ExecOk`] or [`InitMsg::ExecFailed`]; or [`InitMsg::SetupFailed`] at any point.
//! 5. init → worker, when the runtime ended: [`InitMsg::Exited`] or [`InitMsg::Signaled`]; then init exits.
//!
//! If the worker closes its end, init exits (killing the sandbox).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use serde::{Deserialize, Serialize};

/// Largest packet accepted.
pub const MAX_MSG: usize = 128 * 1024;

#[derive(Debug, Serialize, Deserialize)]
pub struct ShellConfig {
    /// BPF programs (`struct sock_filter`s in native byte order, hex), installed in this order in the runtime's
    /// process right before `execve`. See [`crate::seccomp`].
    pub seccomp: Vec<String>,
    /// The runtime's uid and gid inside the sandbox.
    pub uid: u32,
    pub gid: u32,
    pub hostname: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct InitConfig {
    pub tmp_mb: u32,
    pub env: Vec<(String, String)>,
    pub entrypoint: String,
    /// `argv[1..]` of the entrypoint.
    pub args: Vec<String>,
    /// The entrypoint's working directory.
    pub cwd: String,
    /// What the mount trees sent with this config are, in the order of their fds: the image first, if any.
    pub trees: Vec<Tree>,
}

/// A mount tree that comes with an [`InitConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tree {
    /// A container image or a runtime base: the root itself.
    Image,
    /// The code, for `/var/task` (of the root base, or of the image).
    Code,
    /// The function's layers, for `/opt` (of the root base, or of the image).
    Opt,
}

/// The most fds one message carries.
pub const MAX_FDS: usize = 3;

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum InitMsg {
    /// The shell is ready for its function.
    Ready,
    ExecOk,
    /// `stage` is the step of the runtime's launch that failed (e.g. "execve", "chdir /var/task").
    ExecFailed { stage: String, errno: i32 },
    /// `what` was being done when `error` (with `errno` if it was an OS error) happened.
    SetupFailed { what: String, error: String, errno: Option<i32> },
    Exited { code: i32 },
    Signaled { signal: i32 },
}

/// Sends one packet, with `fds` (at most [`MAX_FDS`]) attached.
pub fn send(sock: BorrowedFd<'_>, msg: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let mut iov = libc::iovec { iov_base: msg.as_ptr() as *mut libc::c_void, iov_len: msg.len() };
    // u64 storage keeps the control buffer aligned for cmsghdr.
    let mut cbuf = [0u64; 8];
    // SAFETY: msghdr is plain old data; zeroed is valid.
    let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
    mh.msg_iov = &mut iov;
    mh.msg_iovlen = 1;
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many fds for one message"));
    }
    if !fds.is_empty() {
        let bytes = (fds.len() * size_of::<libc::c_int>()) as u32;
        // SAFETY: CMSG_SPACE only computes a size.
        let space = unsafe { libc::CMSG_SPACE(bytes) } as usize;
        assert!(space <= size_of_val(&cbuf));
        mh.msg_control = cbuf.as_mut_ptr().cast();
        mh.msg_controllen = space as _;
        // SAFETY: msg_control points at `space` zeroed, aligned bytes, enough for one cmsghdr with `fds.len()` ints,
        // so CMSG_FIRSTHDR is non-null and CMSG_DATA is within the buffer for each of them.
        unsafe {
            let cm = libc::CMSG_FIRSTHDR(&mh);
            (*cm).cmsg_level = libc::SOL_SOCKET;
            (*cm).cmsg_type = libc::SCM_RIGHTS;
            (*cm).cmsg_len = libc::CMSG_LEN(bytes) as _;
            let data = libc::CMSG_DATA(cm).cast::<libc::c_int>();
            for (i, fd) in fds.iter().enumerate() {
                std::ptr::write_unaligned(data.add(i), fd.as_raw_fd());
            }
        }
    }
    loop {
        // SAFETY: mh points at valid iovec/control buffers that outlive the call.
        let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &mh, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Receives one packet and the fds attached to it (made CLOEXEC; at most [`MAX_FDS`] kept, in order, any further
/// ones closed). `Ok(None)` on end of stream. `flags` e.g. `MSG_DONTWAIT`.
pub fn recv(sock: BorrowedFd<'_>, flags: libc::c_int) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    let mut buf = vec![0u8; MAX_MSG];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let mut cbuf = [0u64; 8];
    // SAFETY: msghdr is plain old data; zeroed is valid.
    let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
    mh.msg_iov = &mut iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cbuf.as_mut_ptr().cast();
    mh.msg_controllen = size_of_val(&cbuf) as _;
    let n = loop {
        // SAFETY: mh points at valid, writable buffers of the advertised sizes.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut mh, flags | libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let mut fds = Vec::new();
    // SAFETY: mh was filled by recvmsg; the CMSG_* macros walk the control buffer within msg_controllen.
    unsafe {
        let mut cm = libc::CMSG_FIRSTHDR(&mh);
        while !cm.is_null() {
            if (*cm).cmsg_level == libc::SOL_SOCKET && (*cm).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cm).cast::<libc::c_int>();
                let count = ((*cm).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / size_of::<libc::c_int>();
                for i in 0..count {
                    let raw = std::ptr::read_unaligned(data.add(i));
                    // SAFETY: the kernel installed this fd in our table for us; we own it now. Extra fds are closed.
                    let owned = OwnedFd::from_raw_fd(raw);
                    if fds.len() < MAX_FDS {
                        fds.push(owned);
                    }
                }
            }
            cm = libc::CMSG_NXTHDR(&mh, cm);
        }
    }
    if n == 0 && fds.is_empty() {
        return Ok(None);
    }
    if mh.msg_flags & libc::MSG_TRUNC != 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "control message too large"));
    }
    buf.truncate(n);
    Ok(Some((buf, fds)))
}
