//! Network namespaces for sandboxes: made by the worker, so owned by the host's user namespace, with `lo` up and
//! the runtime API listener (127.0.0.1:9001) bound in it, and nothing else; reused once empty.
//!
//! Owned by the host's user namespace, a sandbox's network namespace gives nothing inside it any network privilege,
//! not even to ignis-init (root only in its own user namespace): no interface, address, route, firewall rule or
//! `net.*` sysctl can change. All a sandbox can do there is use sockets, and sockets close when their last holder
//! goes. So a namespace is clean again once (1) every process of the sandbox that used it is gone (its init reaped:
//! the death of a pid namespace's init ends every process in it) and (2) the worker has closed every fd of its own
//! in it (its copies of the listener, the connections). Then it goes back to the [`NetnsPool`], and the next
//! sandbox gets it once the connections its predecessor left unaccepted are accepted and closed. Making a network
//! namespace (registering `lo`, its sysctl tables, ...) and tearing one down are the costliest parts of a sandbox's
//! start and end.
//!
//! The listener is the namespace's, made once with it: a sandbox's copy (a dup, [`NetnsLease::listener`]) might
//! outlive it for an instant in a process forked meanwhile, which would keep the port from being bound again.
//!
//! A [`NetnsLease`] stands for one sandbox's use of a namespace: the [`crate::Sandbox`] holds one until its init is
//! reaped, and whoever keeps fds of the namespace beyond that holds a clone ([`crate::Sandbox::network_lease`]).
//! The namespace returns to the pool when the last clone is dropped.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex, Weak};

/// Empty namespaces kept for reuse at most; more are closed (and the kernel tears them down).
const MAX_FREE: usize = 64;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

/// Empty network namespaces ready for a sandbox.
#[derive(Debug, Default)]
pub(crate) struct NetnsPool {
    free: Mutex<Vec<Netns>>,
}

/// A network namespace and its runtime API listener.
#[derive(Debug)]
struct Netns {
    ns: OwnedFd,
    listener: TcpListener,
}

/// One sandbox's hold on its network namespace; clones share it. See the module docs.
#[derive(Debug, Clone)]
pub struct NetnsLease {
    held: Arc<Held>,
}

#[derive(Debug)]
struct Held {
    netns: Option<Netns>,
    pool: Weak<NetnsPool>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let (Some(netns), Some(pool)) = (self.netns.take(), self.pool.upgrade()) {
            let mut free = pool.free.lock().unwrap_or_else(|e| e.into_inner());
            if free.len() < MAX_FREE {
                free.push(netns);
            }
        }
    }
}

impl NetnsLease {
    /// A copy of the namespace's runtime API listener, bound to 127.0.0.1:9001 (non-blocking).
    pub(crate) fn listener(&self) -> io::Result<TcpListener> {
        self.held.netns.as_ref().expect("held until dropped").listener.try_clone()
    }
}

impl NetnsPool {
    /// Namespaces waiting for reuse.
    #[cfg(test)]
    pub(crate) fn free(&self) -> usize {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Puts the calling thread into an empty network namespace (a reused one, else a new one with `lo` up and the
    /// listener bound) until the returned guard is dropped, and gives the lease for the sandbox about to be cloned
    /// into it.
    pub(crate) fn enter(self: &Arc<Self>) -> io::Result<(NetnsLease, Entered)> {
        let entered = Entered { previous: open_own()? };
        let reused = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let netns = match reused {
            Some(netns) => {
                // Connections the last sandbox made but the worker never accepted: gone with it.
                while netns.listener.accept().is_ok() {}
                // SAFETY: plain syscall on a namespace fd we own.
                cvt(unsafe { libc::setns(netns.ns.as_raw_fd(), libc::CLONE_NEWNET) })?;
                netns
            }
            None => {
                // SAFETY: plain syscall; moves only the calling thread.
                cvt(unsafe { libc::unshare(libc::CLONE_NEWNET) })?;
                loopback_up()?;
                let listener = TcpListener::bind("127.0.0.1:9001")?;
                listener.set_nonblocking(true)?;
                Netns { ns: open_own()?, listener }
            }
        };
        Ok((NetnsLease { held: Arc::new(Held { netns: Some(netns), pool: Arc::downgrade(self) }) }, entered))
    }
}

/// The calling thread is in a sandbox's network namespace until this is dropped, which puts it back.
pub(crate) struct Entered {
    previous: OwnedFd,
}

impl Drop for Entered {
    fn drop(&mut self) {
        // SAFETY: plain syscall on a namespace fd we own.
        let back = unsafe { libc::setns(self.previous.as_raw_fd(), libc::CLONE_NEWNET) };
        // Staying in a sandbox's namespace would cut the thread (and what it starts) off the network.
        assert_eq!(back, 0, "could not return to the worker's network namespace: {}", io::Error::last_os_error());
    }
}

/// The calling thread's network namespace.
fn open_own() -> io::Result<OwnedFd> {
    // SAFETY: valid NUL-terminated path.
    let fd = cvt(unsafe { libc::open(c"/proc/thread-self/ns/net".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) })?;
    // SAFETY: just opened; we own it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Brings `lo` of the calling thread's network namespace up.
fn loopback_up() -> io::Result<()> {
    // SAFETY: plain syscall.
    let fd = cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: fd is a new socket we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; zeroed is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: ifr is a valid ifreq naming "lo"; the ioctls read/write it.
    unsafe {
        cvt(libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr))?;
        ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        cvt(libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inode(fd: &OwnedFd) -> u64 {
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) }, 0);
        st.st_ino
    }

    fn own_inode() -> u64 {
        inode(&open_own().unwrap())
    }

    #[test]
    fn a_namespace_is_reused_only_after_its_last_lease() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        // A thread of its own: the test harness's threads stay where they are.
        std::thread::spawn(|| {
            let pool = Arc::new(NetnsPool::default());
            let home = own_inode();
            let (lease, entered) = pool.enter().unwrap();
            let first = own_inode();
            assert_ne!(first, home);
            // lo is up, the listener on 127.0.0.1:9001; a connection left unaccepted is dropped at reuse.
            let listener = lease.listener().unwrap();
            assert_eq!(listener.local_addr().unwrap(), "127.0.0.1:9001".parse().unwrap());
            drop(std::net::TcpStream::connect("127.0.0.1:9001").unwrap());
            drop(listener);
            drop(entered);
            assert_eq!(own_inode(), home);

            // Still leased (a clone outlives the original): the next sandbox gets a new namespace.
            let kept = lease.clone();
            drop(lease);
            assert_eq!(pool.free(), 0);
            let (other, entered) = pool.enter().unwrap();
            assert_ne!(own_inode(), first);
            drop(entered);
            drop(kept);
            assert_eq!(pool.free(), 1);
            let (again, entered) = pool.enter().unwrap();
            assert_eq!(own_inode(), first);
            let listener = again.listener().unwrap();
            assert_eq!(listener.accept().unwrap_err().kind(), io::ErrorKind::WouldBlock);
            drop(entered);
            drop(other);
            assert_eq!(pool.free(), 1);
        })
        .join()
        .unwrap();
    }
}
