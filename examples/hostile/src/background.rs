//! Attacks that outlive their invocation or hoard the kernel's network memory, and probes of what a sandbox's
//! network namespace still holds.
//!
//! - `background`: starts a child (named `ignis-counter`) that keeps counting, writing the count to
//!   `/tmp/counter`, and answers right away: between invocations it must get no CPU.
//! - `counter`: the count the child wrote last.
//! - `tcp_hoard`: opens `pairs` loopback TCP connections to itself and writes to each, non-blocking, without ever
//!   reading, until the kernel takes no more (or `limit` bytes are queued); keeps them all open. Blocked if the
//!   bytes queued stay under `limit`.
//! - `time_wait`: makes `count` connections to 127.0.0.1:`port` that it closes first, leaving them in `TIME_WAIT`.
//! - `net_entries`: the entries of `/proc/net/tcp` and `tcp6` that mention `port`.

use std::io::Write;
use std::os::fd::AsRawFd;

use serde_json::Value;

/// `(blocked, detail)` for the attack named `attack`, or `None` if it is not one of these.
pub fn attack(attack: &str, event: &Value) -> Option<(bool, String)> {
    let port = event["port"].as_u64().unwrap_or(4242) as u16;
    Some(match attack {
        "background" => background(),
        "counter" => (true, std::fs::read_to_string("/tmp/counter").unwrap_or_default()),
        "tcp_hoard" => tcp_hoard(event["pairs"].as_u64().unwrap_or(256), event["limit"].as_u64().unwrap_or(1 << 30)),
        "time_wait" => time_wait(port, event["count"].as_u64().unwrap_or(16)),
        "net_entries" => net_entries(port),
        _ => return None,
    })
}

/// Forks the counting child, which only makes raw system calls (the parent has threads).
fn background() -> (bool, String) {
    // SAFETY: the child makes async-signal-safe system calls only, on its own stack.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return (true, format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: as above.
        unsafe { count_forever() }
    }
    (false, format!("child {pid} counts in /tmp/counter"))
}

/// # Safety
/// Only in a child just forked.
unsafe fn count_forever() -> ! {
    // SAFETY: plain system calls on buffers of our own.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, c"ignis-counter".as_ptr());
        libc::setsid();
        let mut count: u64 = 0;
        loop {
            count += 1;
            if count.is_multiple_of(1 << 20) {
                let mut digits = [0u8; 20];
                let mut at = digits.len();
                let mut n = count;
                while n > 0 {
                    at -= 1;
                    digits[at] = b'0' + (n % 10) as u8;
                    n /= 10;
                }
                let fd = libc::open(c"/tmp/counter".as_ptr(), libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC, 0o644);
                if fd >= 0 {
                    libc::write(fd, digits[at..].as_ptr().cast(), digits.len() - at);
                    libc::close(fd);
                }
            }
        }
    }
}

fn tcp_hoard(pairs: u64, limit: u64) -> (bool, String) {
    let listener = match std::net::TcpListener::bind("127.0.0.1:0") {
        Ok(l) => l,
        Err(e) => return (true, format!("bind: {e}")),
    };
    let address = listener.local_addr().expect("bound");
    let chunk = vec![0x5au8; 64 * 1024];
    let mut kept = Vec::new();
    let mut queued: u64 = 0;
    let mut stop = String::new();
    'pairs: for _ in 0..pairs {
        let client = match std::net::TcpStream::connect(address) {
            Ok(c) => c,
            Err(e) => {
                stop = format!("connect: {e}");
                break;
            }
        };
        let server = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) => {
                stop = format!("accept: {e}");
                break;
            }
        };
        if let Err(e) = client.set_nonblocking(true) {
            stop = format!("nonblocking: {e}");
            break;
        }
        let mut sender = &client;
        loop {
            if queued >= limit {
                break 'pairs;
            }
            match sender.write(&chunk) {
                Ok(0) => break,
                Ok(n) => queued += n as u64,
                Err(_) => break,
            }
        }
        kept.push((client, server));
    }
    let fds = kept.last().map(|(c, _)| c.as_raw_fd()).unwrap_or(0);
    let detail = format!("queued {queued} bytes on {} connection pairs (last fd {fds}) {stop}", kept.len());
    // Kept open for the rest of the sandbox's life.
    std::mem::forget(kept);
    std::mem::forget(listener);
    (queued < limit, detail)
}

fn time_wait(port: u16, count: u64) -> (bool, String) {
    let listener = match std::net::TcpListener::bind(("127.0.0.1", port)) {
        Ok(l) => l,
        Err(e) => return (true, format!("bind: {e}")),
    };
    for _ in 0..count {
        let Ok(client) = std::net::TcpStream::connect(("127.0.0.1", port)) else { break };
        let Ok((server, _)) = listener.accept() else { break };
        // The client closes first: its side stays in TIME_WAIT.
        drop(client);
        let mut rest = Vec::new();
        let _ = std::io::Read::read_to_end(&mut &server, &mut rest);
    }
    net_entries(port)
}

/// Blocked (nothing seen) if neither listing mentions `port`.
fn net_entries(port: u16) -> (bool, String) {
    let hex = format!(":{port:04X}");
    let mut found = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let listing = std::fs::read_to_string(file).unwrap_or_default();
        found.extend(listing.lines().skip(1).filter(|l| l.contains(&hex)).map(|l| l.trim().to_string()));
    }
    (found.is_empty(), found.join("\n"))
}
