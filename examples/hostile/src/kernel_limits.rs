//! Attacks on kernel resources that a network or user namespace does not isolate by itself: per-user counts
//! (inotify instances and watches, POSIX message queues), socket families the network namespace does not cover,
//! and host paths in the mount table.

use serde_json::{Value, json};

/// The attacks of this module, by event name.
pub const ATTACKS: [&str; 4] = ["kernel_hoard", "kernel_held", "socket_families", "mounts"];

/// Runs `attack`: `(blocked, detail)`.
pub fn attack(attack: &str, event: &Value) -> (bool, String) {
    let limit = event["limit"].as_u64().unwrap_or(100_000);
    match attack {
        "kernel_hoard" => hoard(limit),
        "kernel_held" => (true, held().to_string()),
        "socket_families" => socket_families(),
        _ => mounts(),
    }
}

fn errno_name() -> String {
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EMFILE) => "EMFILE".into(),
        Some(libc::ENFILE) => "ENFILE".into(),
        Some(libc::ENOSPC) => "ENOSPC".into(),
        Some(libc::ENOMEM) => "ENOMEM".into(),
        Some(libc::EPERM) => "EPERM".into(),
        Some(libc::EACCES) => "EACCES".into(),
        Some(libc::EAFNOSUPPORT) => "EAFNOSUPPORT".into(),
        Some(libc::EPROTONOSUPPORT) => "EPROTONOSUPPORT".into(),
        Some(libc::EINVAL) => "EINVAL".into(),
        _ => e.to_string(),
    }
}

/// Calls `make` until it fails (returns < 0) or `limit` times: how many succeeded, and why it stopped.
fn until_refused(limit: u64, mut make: impl FnMut(u64) -> i64) -> (u64, String) {
    for n in 0..limit {
        if make(n) < 0 {
            return (n, errno_name());
        }
    }
    (limit, "unbounded".into())
}

/// Takes inotify instances, inotify watches and message queues until the kernel refuses each (or `limit` of
/// them), and keeps them all (the descriptors stay open as long as the sandbox lives). Blocked if every one
/// stopped short of `limit`. Detail: a JSON object of counts and the error that stopped each.
fn hoard(limit: u64) -> (bool, String) {
    // SAFETY (all blocks below): plain syscalls on valid, NUL-terminated paths; descriptors are left open on purpose.
    let watcher = unsafe { libc::inotify_init1(0) };
    let (instances, instances_err) = until_refused(limit, |_| unsafe { libc::inotify_init1(0) }.into());
    let dir = "/tmp/watched";
    let _ = std::fs::create_dir(dir);
    let (watches, watches_err) = until_refused(limit, |n| {
        let path = format!("{dir}/{n}");
        if std::fs::File::create(&path).is_err() {
            return -1;
        }
        let path = std::ffi::CString::new(path).expect("no NUL");
        unsafe { libc::inotify_add_watch(watcher, path.as_ptr(), libc::IN_MODIFY) }.into()
    });
    let (queues, queues_err) = until_refused(limit, |n| {
        let name = std::ffi::CString::new(format!("/hoard{n}")).expect("no NUL");
        let attr = std::ptr::null_mut::<libc::mq_attr>();
        unsafe { libc::mq_open(name.as_ptr(), libc::O_CREAT | libc::O_RDWR, 0o600 as libc::mode_t, attr) }.into()
    });
    // SAFETY: mq_attr is plain old data.
    let mut small: libc::mq_attr = unsafe { std::mem::zeroed() };
    small.mq_maxmsg = 1;
    small.mq_msgsize = 1;
    let (small_queues, small_queues_err) = until_refused(limit, |n| {
        let name = std::ffi::CString::new(format!("/small{n}")).expect("no NUL");
        unsafe { libc::mq_open(name.as_ptr(), libc::O_CREAT | libc::O_RDWR, 0o600 as libc::mode_t, &mut small) }.into()
    });
    let counts = json!({
        "inotify_instances": instances + u64::from(watcher >= 0), "inotify_instances_error": instances_err,
        "inotify_watches": watches, "inotify_watches_error": watches_err,
        "mqueues": queues, "mqueues_error": queues_err,
        "small_mqueues": small_queues, "small_mqueues_error": small_queues_err,
    });
    let bounded = [instances, watches, queues, small_queues].iter().all(|&n| n < limit);
    (bounded, counts.to_string())
}

/// Inotify instances this process holds.
fn held() -> usize {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else { return 0 };
    fds.flatten()
        .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target.to_string_lossy() == "anon_inode:inotify"))
        .count()
}

/// Tries sockets of families (and netlink protocols) a sandbox must not have: AF_VSOCK (bound, in the host's port
/// space), AF_PACKET, AF_ALG, AF_BLUETOOTH, AF_KEY, AF_XDP, AF_TIPC, netlink uevents and sock_diag. Blocked if every
/// one is refused. Detail: a JSON object of what each gave.
fn socket_families() -> (bool, String) {
    let try_socket = |family: i32, kind: i32, protocol: i32| -> Result<std::os::fd::OwnedFd, String> {
        // SAFETY: plain syscall; the fd is owned by the result.
        let fd = unsafe { libc::socket(family, kind | libc::SOCK_CLOEXEC, protocol) };
        if fd < 0 {
            return Err(errno_name());
        }
        // SAFETY: just created; ours.
        Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
    };
    let vsock = try_socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0).and_then(|fd| {
        // SAFETY: sockaddr_vm is plain old data.
        let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
        addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
        addr.svm_cid = libc::VMADDR_CID_ANY;
        addr.svm_port = 4242;
        let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
        // SAFETY: a valid sockaddr_vm of the given length.
        let bound = unsafe { libc::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), (&addr as *const libc::sockaddr_vm).cast(), len) };
        if bound < 0 { Err(format!("socket ok, bind: {}", errno_name())) } else { Ok(fd) }
    });
    let tries = [
        ("vsock_bind", vsock),
        ("packet", try_socket(libc::AF_PACKET, libc::SOCK_DGRAM, 0)),
        ("alg", try_socket(libc::AF_ALG, libc::SOCK_SEQPACKET, 0)),
        ("bluetooth", try_socket(libc::AF_BLUETOOTH, libc::SOCK_STREAM, 0)),
        ("key", try_socket(libc::AF_KEY, libc::SOCK_RAW, 2)),
        ("xdp", try_socket(libc::AF_XDP, libc::SOCK_RAW, 0)),
        ("tipc", try_socket(libc::AF_TIPC, libc::SOCK_RDM, 0)),
        ("netlink_uevent", try_socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_KOBJECT_UEVENT)),
        ("netlink_sock_diag", try_socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_SOCK_DIAG)),
        // What a runtime needs keeps working.
        ("netlink_route", try_socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE)),
        ("inet", try_socket(libc::AF_INET, libc::SOCK_STREAM, 0)),
        ("inet6", try_socket(libc::AF_INET6, libc::SOCK_DGRAM, 0)),
        ("unix", try_socket(libc::AF_UNIX, libc::SOCK_STREAM, 0)),
    ];
    let mut detail = serde_json::Map::new();
    let mut blocked = true;
    for (name, result) in tries {
        let needed = matches!(name, "netlink_route" | "inet" | "inet6" | "unix");
        blocked &= result.is_ok() == needed;
        detail.insert(name.into(), Value::String(result.map_or_else(|e| e, |_| "ok".into())));
    }
    (blocked, Value::Object(detail).to_string())
}

/// Reads the mount table as the sandbox sees it. Never blocked (the test judges what it shows). Detail: the text
/// of `/proc/self/mountinfo` and `/proc/self/mounts`.
fn mounts() -> (bool, String) {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_else(|e| format!("{path}: {e}"));
    (true, format!("{}\n{}", read("/proc/self/mountinfo"), read("/proc/self/mounts")))
}
