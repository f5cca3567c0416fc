//! Hostile functions against what the kernel counts per user or does not put in a namespace: inotify instances and
//! watches, POSIX message queues, socket families the network namespace does not isolate, host paths in the mount
//! table. Each test deploys `examples/hostile` (its `kernel_limits` attacks).

use serde_json::{Value, json};

use crate::harness::{Server, bin_dir, zip_of};

/// A server with `examples/hostile` deployed under each of `names`.
fn server_with(names: &[&str]) -> Server {
    let server = Server::start();
    let binary = std::fs::read(bin_dir().join("hostile")).expect("examples/hostile is built (cargo build --workspace)");
    for name in names {
        let created = server.create(name, &zip_of(&[("bootstrap", &binary, 0o755)]), json!({}));
        assert_eq!(created.status, 201, "{}", created.text());
    }
    server
}

/// Runs `attack` on function `name`; its answer.
fn attack(server: &Server, name: &str, attack: Value) -> Value {
    let reply = server.invoke(name, &attack.to_string());
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-amz-function-error"), None, "the attack should answer: {}", reply.text());
    reply.json()
}

/// Whether this process (the host's root) can make an inotify instance and a POSIX message queue.
fn host_root_can_make_inotify_and_mqueue() -> Result<(), String> {
    // SAFETY: plain syscall; the fd is closed below.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    if fd < 0 {
        return Err(format!("inotify_init1: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: we own fd.
    unsafe { libc::close(fd) };
    let name = std::ffi::CString::new(format!("/ignis-it-{}", std::process::id())).unwrap();
    // SAFETY: valid NUL-terminated name; a null attr asks for the defaults.
    let q = unsafe { libc::mq_open(name.as_ptr(), libc::O_CREAT | libc::O_RDWR | libc::O_CLOEXEC, 0o600, std::ptr::null_mut::<libc::mq_attr>()) };
    if q < 0 {
        return Err(format!("mq_open: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: our queue and its name.
    unsafe {
        libc::mq_close(q);
        libc::mq_unlink(name.as_ptr());
    }
    Ok(())
}

#[test]
fn a_sandbox_hoarding_inotify_and_message_queues_takes_nothing_from_others_or_the_hosts_root() {
    let server = server_with(&["hoarder", "neighbour"]);
    // The hoarder's sandbox takes all it can and keeps it (it stays, idle, for the next invocation); then another
    // sandbox does the same, and the host's root still can.
    for name in ["hoarder", "neighbour"] {
        let answer = attack(&server, name, json!({ "attack": "kernel_hoard" }));
        assert_eq!(answer["blocked"], true, "{name}: {answer}");
        let counts: Value = serde_json::from_str(answer["detail"].as_str().unwrap()).unwrap();
        // Each sandbox's own bounds, whole: nothing of them was used up by the other.
        assert_eq!(counts["inotify_instances"], 128, "{name}: {counts}");
        assert_eq!(counts["inotify_instances_error"], "EMFILE", "{name}: {counts}");
        assert_eq!(counts["inotify_watches"], 8192, "{name}: {counts}");
        assert_eq!(counts["inotify_watches_error"], "ENOSPC", "{name}: {counts}");
        // 800 KiB of queues: nine of ten 8 KiB messages; then 256 queues in all.
        assert_eq!(counts["mqueues"], 9, "{name}: {counts}");
        assert_eq!(counts["mqueues_error"], "EMFILE", "{name}: {counts}");
        assert_eq!(counts["small_mqueues"], 247, "{name}: {counts}");
        assert_eq!(counts["small_mqueues_error"], "ENOSPC", "{name}: {counts}");
        host_root_can_make_inotify_and_mqueue().expect("the host's root, while sandboxes hold all they could get");
    }
    // The hoarder's sandbox held its share all along.
    let held = attack(&server, "hoarder", json!({ "attack": "kernel_held" }));
    assert_eq!(held["detail"], "128", "{held}");
}

#[test]
fn socket_families_the_network_namespace_does_not_isolate_are_refused() {
    let server = server_with(&["hostile"]);
    let answer = attack(&server, "hostile", json!({ "attack": "socket_families" }));
    let detail: Value = serde_json::from_str(answer["detail"].as_str().unwrap()).unwrap();
    assert_eq!(answer["blocked"], true, "{detail}");
    for family in ["vsock_bind", "packet", "alg", "bluetooth", "key", "xdp", "tipc"] {
        assert_eq!(detail[family], "EAFNOSUPPORT", "{family}: {detail}");
    }
    for protocol in ["netlink_uevent", "netlink_sock_diag"] {
        assert_eq!(detail[protocol], "EPROTONOSUPPORT", "{protocol}: {detail}");
    }
    for needed in ["netlink_route", "inet", "inet6", "unix"] {
        assert_eq!(detail[needed], "ok", "{needed}: {detail}");
    }
}

#[test]
fn the_mount_table_shows_no_host_path() {
    let server = server_with(&["hostile"]);
    let answer = attack(&server, "hostile", json!({ "attack": "mounts" }));
    let table = answer["detail"].as_str().unwrap();
    eprintln!("{table}");
    let data = server.data.canonicalize().unwrap();
    let code = std::fs::read_dir(data.join("code")).unwrap().flatten().map(|e| e.path()).collect::<Vec<_>>();
    assert!(!code.is_empty());
    for path in code.iter().chain([&data]) {
        assert!(!table.contains(path.to_str().unwrap()), "{} in:\n{table}", path.display());
        // Every component of the data directory's and code's path that is not a common word.
        for name in path.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).filter(|c| c.len() > 4) {
            assert!(!table.contains(&name), "{name} (of {}) in:\n{table}", path.display());
        }
    }
    let var_task = table.lines().find(|l| l.split(' ').nth(4) == Some("/var/task")).expect("a mountinfo line for /var/task");
    assert_eq!(var_task.split(' ').nth(3), Some("/"), "{var_task}");
}
