//! Network namespaces for sandboxes: made by the worker, so owned by the host's user namespace, with `lo` up and
//! the runtime API listener (127.0.0.1:9001) bound in it and, when the host gives sandboxes a network
//! ([`NetnsPool::with_links`]), `eth0`, a link routed to the host (`ignis_net::link`), and nothing else; reused
//! once empty, by the same tenant, or by another once nothing of the previous one is left in it, always within its
//! block of addresses (its link and address go with it).
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
//! A namespace whose sockets are all closed still holds their traces for a while: connections in `TIME_WAIT` (60 s),
//! orphans finishing their close, all listed in its `/proc/net/tcp` with addresses and ports. So each free namespace
//! remembers its last tenant (the account its last sandbox ran for; none if no function ever ran in it), and
//! [`reuse`] decides: a sandbox of the same tenant (or a namespace no function ran in) takes it at once; another
//! tenant's sandbox, or a shell (whose tenant is not known yet), only once it holds no socket but the runtime API
//! listener, none in `TIME_WAIT` ([`clean`]). The oldest few such namespaces are looked at; when none is clean, a new
//! namespace is made.
//!
//! A [`NetnsLease`] stands for one sandbox's use of a namespace: the [`crate::Sandbox`] holds one until its init is
//! reaped, and whoever keeps fds of the namespace beyond that holds a clone ([`crate::Sandbox::network_lease`]).
//! The namespace returns to the pool when the last clone is dropped.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex, Weak};

use ignis_net::link::{Link, Links};

/// Empty namespaces kept for reuse at most; more are closed (and the kernel tears them down).
const MAX_FREE: usize = 64;
/// Another tenant's namespaces looked at for a clean one, at most, per sandbox.
const CLEAN_CHECKS: usize = 4;

/// Whether a sandbox of `wanted` (`None`: a shell, whose tenant is not known yet) may take a free namespace whose
/// last sandbox ran for `last` (`None`: no function ever ran in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reuse {
    /// At once.
    Now,
    /// Only if [`clean`].
    IfClean,
}

pub(crate) fn reuse(wanted: Option<&str>, last: Option<&str>) -> Reuse {
    match (wanted, last) {
        (_, None) => Reuse::Now,
        (Some(wanted), Some(last)) if wanted == last => Reuse::Now,
        _ => Reuse::IfClean,
    }
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

/// Empty network namespaces ready for a sandbox.
#[derive(Debug, Default)]
pub(crate) struct NetnsPool {
    /// Oldest first.
    free: Mutex<Vec<Free>>,
    /// The host's sandbox links, if sandboxes have a network beyond `lo` (see `ignis_net::link`).
    links: Option<Arc<Links>>,
}

/// A free namespace and the tenant of its last sandbox.
#[derive(Debug)]
struct Free {
    netns: Netns,
    last: Option<String>,
}

/// A network namespace and its runtime API listener, and its link to the host if it has one (whose block it is
/// reused within only).
#[derive(Debug)]
struct Netns {
    ns: OwnedFd,
    listener: TcpListener,
    link: Option<Link>,
}

impl Netns {
    fn block(&self) -> u8 {
        self.link.as_ref().map_or(0, Link::block)
    }
}

/// One sandbox's hold on its network namespace; clones share it. See the module docs.
#[derive(Debug, Clone)]
pub struct NetnsLease {
    held: Arc<Held>,
}

#[derive(Debug)]
struct Held {
    netns: Option<Netns>,
    /// The tenant whose function runs in it; `None` until one does.
    tenant: Mutex<Option<String>>,
    pool: Weak<NetnsPool>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let (Some(netns), Some(pool)) = (self.netns.take(), self.pool.upgrade()) {
            let last = self.tenant.get_mut().unwrap_or_else(|e| e.into_inner()).take();
            let mut free = pool.free.lock().unwrap_or_else(|e| e.into_inner());
            if free.len() >= MAX_FREE {
                free.remove(0);
            }
            free.push(Free { netns, last });
        }
    }
}

impl NetnsLease {
    /// Records whose function runs in the namespace (see the module docs).
    pub(crate) fn set_tenant(&self, tenant: &str) {
        *self.held.tenant.lock().unwrap_or_else(|e| e.into_inner()) = Some(tenant.to_string());
    }

    /// A copy of the namespace's runtime API listener, bound to 127.0.0.1:9001 (non-blocking).
    pub(crate) fn listener(&self) -> io::Result<TcpListener> {
        self.held.netns.as_ref().expect("held until dropped").listener.try_clone()
    }
}

impl NetnsPool {
    /// A pool whose new namespaces get a link to the host from `links`.
    pub(crate) fn with_links(links: Arc<Links>) -> NetnsPool {
        NetnsPool { free: Mutex::default(), links: Some(links) }
    }

    /// Namespaces waiting for reuse.
    #[cfg(test)]
    pub(crate) fn free(&self) -> usize {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Puts the calling thread into an empty network namespace (a reused one that [`reuse`] allows for `tenant`,
    /// else a new one with `lo` up and the listener bound) until the returned guard is dropped, and gives the lease
    /// for the sandbox about to be cloned into it. `tenant`: whose function the sandbox runs, `None` for a shell;
    /// `block`: the block of sandbox addresses it takes (see `ignis_net::plan`; 0 without a network attachment).
    pub(crate) fn enter(self: &Arc<Self>, tenant: Option<&str>, block: u8) -> io::Result<(NetnsLease, Entered)> {
        let entered = Entered { previous: open_own()? };
        let netns = match self.reused(tenant, block)? {
            Some(netns) => netns,
            None => {
                // SAFETY: plain syscall; moves only the calling thread.
                cvt(unsafe { libc::unshare(libc::CLONE_NEWNET) })?;
                loopback_up()?;
                let listener = TcpListener::bind("127.0.0.1:9001")?;
                listener.set_nonblocking(true)?;
                let link = self.links.as_ref().map(|links| links.connect(block)).transpose()?;
                Netns { ns: open_own()?, listener, link }
            }
        };
        let tenant = Mutex::new(tenant.map(str::to_string));
        Ok((NetnsLease { held: Arc::new(Held { netns: Some(netns), tenant, pool: Arc::downgrade(self) }) }, entered))
    }

    /// A free namespace of `block` that `tenant` may have, with the calling thread in it; `None` (the thread where
    /// it was) if none.
    fn reused(&self, tenant: Option<&str>, block: u8) -> io::Result<Option<Netns>> {
        let mut candidates = Vec::new();
        {
            let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
            // The most recent one that needs no look, else the oldest few (their traces are the likeliest gone).
            let now = |f: &Free| f.netns.block() == block && reuse(tenant, f.last.as_deref()) == Reuse::Now;
            if let Some(at) = free.iter().rposition(now) {
                candidates.push(free.remove(at));
            } else {
                let mut at = 0;
                while at < free.len() && candidates.len() < CLEAN_CHECKS {
                    if free[at].netns.block() == block {
                        candidates.push(free.remove(at));
                    } else {
                        at += 1;
                    }
                }
            }
        }
        let mut chosen = None;
        let mut rest = Vec::new();
        for candidate in candidates {
            if chosen.is_some() {
                rest.push(candidate);
                continue;
            }
            // Connections the last sandbox made but the worker never accepted: gone with it.
            while candidate.netns.listener.accept().is_ok() {}
            // SAFETY: plain syscall on a namespace fd we own.
            if let Err(e) = cvt(unsafe { libc::setns(candidate.netns.ns.as_raw_fd(), libc::CLONE_NEWNET) }) {
                // What was taken out of the pool goes back to it.
                rest.push(candidate);
                self.give_back(rest);
                return Err(e);
            }
            if reuse(tenant, candidate.last.as_deref()) == Reuse::Now || clean() {
                chosen = Some(candidate.netns);
            } else {
                rest.push(candidate);
            }
        }
        self.give_back(rest);
        Ok(chosen)
    }

    /// Puts candidates looked at but not taken back at the front of the free list (oldest first), keeping it bounded.
    fn give_back(&self, rest: Vec<Free>) {
        if rest.is_empty() {
            return;
        }
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        free.splice(0..0, rest);
        let over = free.len().saturating_sub(MAX_FREE);
        free.drain(..over);
    }
}

/// Whether the calling thread's network namespace holds no socket but the runtime API listener: its
/// `/proc/net/sockstat` and `sockstat6` count one TCP socket in use (the listener), none in `TIME_WAIT` (orphans
/// finishing their close are in use) and no UDP or raw socket. (These counts are kept per namespace and read in
/// microseconds; `/proc/net/tcp` would say which sockets, but walks the host's whole connection table, milliseconds.)
fn clean() -> bool {
    let read = |file: &str| std::fs::read_to_string(format!("/proc/thread-self/net/{file}"));
    match (read("sockstat"), read("sockstat6")) {
        (Ok(v4), Ok(v6)) => only_listener(&v4, &v6),
        _ => false,
    }
}

/// Whether `sockstat` and `sockstat6` show no socket but one listening TCP socket.
fn only_listener(v4: &str, v6: &str) -> bool {
    let count = |text: &str, proto: &str, key: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.split(':').next() == Some(proto))?;
        let mut words = line.split_whitespace().skip(1);
        while let (Some(k), Some(v)) = (words.next(), words.next()) {
            if k == key {
                return v.parse().ok();
            }
        }
        None
    };
    count(v4, "TCP", "inuse") == Some(1)
        && count(v4, "TCP", "tw") == Some(0)
        && [("UDP", v4), ("RAW", v4), ("TCP6", v6), ("UDP6", v6), ("RAW6", v6)]
            .into_iter()
            .all(|(proto, text)| count(text, proto, "inuse") == Some(0))
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
    ignis_net::link::own_netns()
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
    fn a_namespace_is_reused_only_after_its_last_lease_as_root() {
        // A thread of its own: the test harness's threads stay where they are.
        std::thread::spawn(|| {
            let pool = Arc::new(NetnsPool::default());
            let home = own_inode();
            let (lease, entered) = pool.enter(Some("a"), 0).unwrap();
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
            let (other, entered) = pool.enter(Some("a"), 0).unwrap();
            assert_ne!(own_inode(), first);
            drop(entered);
            drop(kept);
            assert_eq!(pool.free(), 1);
            let (again, entered) = pool.enter(Some("a"), 0).unwrap();
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

    #[test]
    fn a_namespace_gets_a_routed_link_of_its_block_and_loses_it_with_the_pool_as_root() {
        std::thread::spawn(|| {
            let plan = ignis_net::plan::Plan::new("10.251.0.0/16".parse().unwrap()).unwrap();
            let links = Arc::new(Links::new(plan.clone()).unwrap());
            let pool = Arc::new(NetnsPool::with_links(links.clone()));
            let host_links = || ignis_net::link::Netlink::open().unwrap().links_named(&plan.link_prefix()).unwrap();
            let (lease, entered) = pool.enter(Some("a"), 0).unwrap();
            // The sandbox's address is its own, and the gateway is one hop away.
            let first = plan.address(0, 0).unwrap();
            std::net::UdpSocket::bind((first, 0)).unwrap();
            let probe = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            probe.connect((plan.gateway(), 53)).unwrap();
            assert_eq!(probe.local_addr().unwrap().ip(), first);
            drop(probe);
            drop(entered);
            assert_eq!(host_links().len(), 1);
            // Another block: another namespace and address; the same block again: the same namespace.
            let (other, entered) = pool.enter(Some("a"), 3).unwrap();
            std::net::UdpSocket::bind((plan.address(3, 0).unwrap(), 0)).unwrap();
            drop(entered);
            drop(lease);
            drop(other);
            let (again, entered) = pool.enter(Some("a"), 3).unwrap();
            std::net::UdpSocket::bind((plan.address(3, 0).unwrap(), 0)).unwrap();
            drop(entered);
            drop(again);
            assert_eq!(host_links().len(), 2);
            drop(pool);
            assert_eq!(host_links(), vec![]);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn reuse_rules() {
        use Reuse::*;
        for (wanted, last, expected) in [
            (Some("a"), None, Now),
            (None, None, Now),
            (Some("a"), Some("a"), Now),
            (Some("a"), Some("b"), IfClean),
            (None, Some("a"), IfClean),
        ] {
            assert_eq!(reuse(wanted, last), expected, "{wanted:?} after {last:?}");
        }
    }

    #[test]
    fn listings() {
        let v4 = |tcp: &str, udp: &str| {
            format!("sockets: used 3\nTCP: {tcp} alloc 4 mem 230\nUDP: inuse {udp} mem 0\nUDPLITE: inuse 0\nRAW: inuse 0\nFRAG: inuse 0 memory 0\n")
        };
        let v6 = |tcp6: u32| format!("TCP6: inuse {tcp6}\nUDP6: inuse 0\nUDPLITE6: inuse 0\nRAW6: inuse 0\nFRAG6: inuse 0 memory 0\n");
        for (tcp, udp, tcp6, clean) in [
            ("inuse 1 orphan 0 tw 0", 0, 0, true),
            ("inuse 1 orphan 7 tw 0", 0, 0, true), // orphans are counted for the whole host
            ("inuse 1 orphan 0 tw 3", 0, 0, false),
            ("inuse 3 orphan 1 tw 0", 0, 0, false),
            ("inuse 0 orphan 0 tw 0", 0, 0, false), // no listener: not one of ours
            ("inuse 1 orphan 0 tw 0", 1, 0, false),
            ("inuse 1 orphan 0 tw 0", 0, 2, false),
        ] {
            assert_eq!(only_listener(&v4(tcp, &udp.to_string()), &v6(tcp6)), clean, "{tcp} udp {udp} tcp6 {tcp6}");
        }
        assert!(!only_listener("", ""));
    }

    /// Connections to 127.0.0.1:4242 closed by the client first: it keeps them in `TIME_WAIT`.
    fn leave_time_wait() {
        let listener = std::net::TcpListener::bind("127.0.0.1:4242").unwrap();
        for _ in 0..3 {
            let client = std::net::TcpStream::connect("127.0.0.1:4242").unwrap();
            let (server, _) = listener.accept().unwrap();
            drop(client);
            let mut rest = Vec::new();
            std::io::Read::read_to_end(&mut &server, &mut rest).unwrap();
        }
    }

    #[test]
    fn another_tenant_never_gets_a_namespace_with_traces_as_root() {
        std::thread::spawn(|| {
            let pool = Arc::new(NetnsPool::default());
            let (lease, entered) = pool.enter(Some("a"), 0).unwrap();
            let first = own_inode();
            assert!(clean());
            leave_time_wait();
            assert!(!clean());
            drop(entered);
            drop(lease);

            // Another tenant, or a shell: a new namespace; the same tenant: the same one.
            let (other, entered) = pool.enter(Some("b"), 0).unwrap();
            let second = own_inode();
            assert_ne!(second, first);
            assert!(clean());
            drop(entered);
            let (shell, entered) = pool.enter(None, 0).unwrap();
            assert_ne!(own_inode(), first);
            drop(entered);
            let (again, entered) = pool.enter(Some("a"), 0).unwrap();
            assert_eq!(own_inode(), first);
            drop(entered);
            drop(again);

            // A namespace another tenant used without leaving traces is anyone's; one no function ran in too.
            drop(other);
            let (third, entered) = pool.enter(Some("c"), 0).unwrap();
            assert_eq!(own_inode(), second);
            drop(entered);
            drop(third);
            drop(shell);
            assert_eq!(pool.free(), 3);
        })
        .join()
        .unwrap();
    }
}
