//! End-to-end tests of real sandboxes. Need root, and cgroup v1 or v2 with the memory controller.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ignis_sandbox::{Host, RuntimeExit, Sandbox, SandboxConfig, SandboxError};

fn host() -> &'static Host {
    static HOST: OnceLock<(Host, tempfile::TempDir)> = OnceLock::new();
    &HOST
        .get_or_init(|| {
            let state = tempfile::tempdir().unwrap();
            let host = Host::new(state.path(), Path::new(env!("CARGO_BIN_EXE_ignis-init"))).unwrap();
            (host, state)
        })
        .0
}

/// A code dir holding `bootstrap` = `script`, readable by the sandbox user.
fn code(script: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("bootstrap");
    std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn config(code_dir: &Path) -> SandboxConfig {
    SandboxConfig {
        code_dir: code_dir.to_owned(),
        memory_mb: 128,
        tmp_mb: 16,
        env: vec![("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()), ("GREETING".into(), "hi there".into())],
        entrypoint: "/var/task/bootstrap".into(),
    }
}

fn spawn(id: &str, script: &str) -> (Sandbox, tempfile::TempDir) {
    let dir = code(script);
    let t = Instant::now();
    let sb = host().spawn(|_| config(dir.path())).unwrap();
    eprintln!("spawn {id}: {:?}", t.elapsed());
    (sb, dir)
}

fn poll_in(fd: BorrowedFd<'_>, timeout: Duration) -> bool {
    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, timeout.as_millis() as i32) > 0 }
}

/// Waits (bounded) for the runtime to end, then returns its exit and all output.
fn finish(sb: &mut Sandbox) -> (Option<RuntimeExit>, String) {
    let mut out = Vec::new();
    let mut f = std::fs::File::from(sb.output.try_clone().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut buf = [0u8; 65536];
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "timeout; output so far: {}", String::from_utf8_lossy(&out));
                poll_in(sb.output.as_fd(), Duration::from_millis(100));
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(poll_in(sb.pidfd(), Duration::from_secs(10)), "init did not exit");
    (sb.wait(), String::from_utf8_lossy(&out).into_owned())
}

fn cgroup_gone(sb_id: &str) -> bool {
    host().cgroup_dirs(sb_id).iter().all(|d| !d.exists())
}

/// A host of its own whose sandbox ids start with a prefix no other test uses.
fn own_host(name: &str) -> (Host, String, tempfile::TempDir) {
    let state = tempfile::tempdir().unwrap();
    let mut host = Host::new(state.path(), Path::new(env!("CARGO_BIN_EXE_ignis-init"))).unwrap();
    let prefix = format!("it{}-{name}-", std::process::id());
    host.set_id_prefix(&prefix).unwrap();
    (host, prefix, state)
}

/// Cgroups whose name starts with `prefix`.
fn groups_with_prefix(prefix: &str) -> Vec<String> {
    let parent = host().cgroup_dirs("x")[0].parent().unwrap().to_path_buf();
    std::fs::read_dir(parent)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

fn line<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines().find_map(|l| l.strip_prefix(key)).unwrap_or_else(|| panic!("no {key:?} in output:\n{out}"))
}

#[test]
fn isolation() {
    let (mut sb, _code) = spawn(
        "iso",
        r#"
echo "id=$(id -u):$(id -g):$(id -G)"
echo "pid=$$"
cat /etc/shadow >/dev/null 2>&1 && echo "shadow=readable" || echo "shadow=denied"
echo "root=$(ls / | tr '\n' ' ')"
touch /var/task/x 2>/dev/null && echo "task=writable" || echo "task=readonly"
touch /x 2>/dev/null && echo "rootfs=writable" || echo "rootfs=readonly"
echo hello > /tmp/f && echo "tmp=$(cat /tmp/f)"
echo "procs=$(ls /proc | grep '^[0-9]' | sort -n | tr '\n' ' ')"
echo "ps=$(ps -e -o pid= | wc -l)"
echo "hostname=$(hostname)"
echo "cwd=$(pwd)"
echo "env=$GREETING"
echo "envcount=$(env | wc -l)"
echo "fds=$(ls /proc/self/fd | tr '\n' ' ')"
echo "caps=$(grep CapEff /proc/self/status)"
echo "sys=$(ls /sys 2>&1 | head -1)"
echo "ifaces=$(ls /proc/self/net/dev_snmp6 2>/dev/null | tr '\n' ' ')"
echo "to-stderr" >&2
exit 3
"#,
    );
    let (exit, out) = finish(&mut sb);
    eprintln!("{out}");
    assert_eq!(exit, Some(RuntimeExit::Code(3)));
    assert_eq!(line(&out, "id="), "993:990:990");
    assert_eq!(line(&out, "pid="), "2");
    assert_eq!(line(&out, "shadow="), "denied");
    let mut expected: Vec<&str> = vec!["dev", "etc", "opt", "proc", "tmp", "usr", "var"];
    for l in ["bin", "sbin", "lib", "lib64", "lib32", "libx32"] {
        if Path::new("/").join(l).exists() {
            expected.push(l);
        }
    }
    expected.sort();
    let mut root: Vec<&str> = line(&out, "root=").split_whitespace().collect();
    root.sort();
    assert_eq!(root, expected);
    assert_eq!(line(&out, "task="), "readonly");
    assert_eq!(line(&out, "rootfs="), "readonly");
    assert_eq!(line(&out, "tmp="), "hello");
    // init (1), the script (2), and the short-lived ls/grep/sort/tr pipeline.
    let procs: Vec<u32> = line(&out, "procs=").split_whitespace().map(|p| p.parse().unwrap()).collect();
    assert_eq!(&procs[..2], &[1, 2]);
    assert!(procs.iter().all(|&p| p < 20), "{procs:?}");
    assert_eq!(line(&out, "hostname="), "sandbox");
    assert_eq!(line(&out, "cwd="), "/var/task");
    assert_eq!(line(&out, "env="), "hi there");
    assert!(line(&out, "caps=").ends_with("0000000000000000"), "{out}");
    assert!(line(&out, "sys=").contains("No such file"), "{out}");
    assert!(out.contains("to-stderr"));
    assert!(sb.peak_memory_bytes().unwrap() > 0);
    assert!(!sb.oom_killed());
    let id = sb.id().to_owned();
    sb.destroy();
    assert!(cgroup_gone(&id));
}

#[test]
fn runtime_api_listener() {
    let (mut sb, _code) = spawn(
        "api",
        r#"
echo "got=$(curl -s -m 10 http://127.0.0.1:9001/x)"
"#,
    );
    // From the host, 127.0.0.1:9001 is not this listener.
    let _ = std::net::TcpStream::connect_timeout(&"127.0.0.1:9001".parse().unwrap(), Duration::from_millis(200));

    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut conn, _) = loop {
        match sb.runtime_api.accept() {
            Ok(c) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "no connection from the runtime");
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("{e}"),
        }
    };
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0);
        req.extend_from_slice(&buf[..n]);
    }
    let req = String::from_utf8_lossy(&req);
    assert!(req.starts_with("GET /x HTTP/1.1\r\n"), "{req}");
    conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello").unwrap();
    drop(conn);

    let (exit, out) = finish(&mut sb);
    assert_eq!(exit, Some(RuntimeExit::Code(0)), "{out}");
    assert_eq!(line(&out, "got="), "hello");
    // Exactly one connection came in: the host's attempt did not reach this listener.
    assert_eq!(sb.runtime_api.accept().unwrap_err().kind(), std::io::ErrorKind::WouldBlock);
}

#[test]
fn exit_code_and_signal() {
    let (mut sb, _c) = spawn("exit", "exit 42");
    assert_eq!(finish(&mut sb).0, Some(RuntimeExit::Code(42)));
    assert_eq!(sb.wait(), Some(RuntimeExit::Code(42))); // idempotent

    let (mut sb, _c) = spawn("sig", "kill -TERM $$; sleep 5");
    assert_eq!(finish(&mut sb).0, Some(RuntimeExit::Signal(libc::SIGTERM)));

    // Children left behind by the runtime die with it.
    let (mut sb, _c) = spawn("orphans", "sleep 1000 & sleep 1000 & exit 0");
    let t = Instant::now();
    assert_eq!(finish(&mut sb).0, Some(RuntimeExit::Code(0)));
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn missing_entrypoint() {
    let (host, prefix, _state) = own_host("entry");
    let dir = code("exit 0");
    for (id, entry, script) in [
        ("missing", "/var/task/nope", None),
        ("noexec", "/var/task/bootstrap", Some(0o644)),
        ("badinterp", "/var/task/bootstrap", None),
    ] {
        if id == "badinterp" {
            std::fs::write(dir.path().join("bootstrap"), "#!/no/such/sh\n").unwrap();
        }
        if let Some(mode) = script {
            std::fs::set_permissions(dir.path().join("bootstrap"), std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let mut cfg = config(dir.path());
        cfg.entrypoint = entry.into();
        let t = Instant::now();
        let err = host.spawn(|_| cfg).unwrap_err();
        eprintln!("{id}: {err} ({:?})", t.elapsed());
        match &err {
            SandboxError::Entrypoint { path, source } => {
                assert_eq!(path, entry);
                let want = if script == Some(0o644) { libc::EACCES } else { libc::ENOENT };
                assert_eq!(source.raw_os_error(), Some(want), "{err}");
            }
            e => panic!("{e}"),
        }
        assert_eq!(groups_with_prefix(&prefix), Vec::<String>::new());
        std::fs::set_permissions(dir.path().join("bootstrap"), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn bad_config() {
    let (mut host, prefix, _state) = own_host("bad");
    assert!(host.set_id_prefix("Bad/Prefix").is_err());
    let dir = code("exit 0");
    let mut cfg = config(dir.path());
    cfg.code_dir = dir.path().join("nope");
    assert!(matches!(host.spawn(|_| cfg), Err(SandboxError::Io { .. })));
    let mut cfg = config(dir.path());
    cfg.entrypoint = "relative".into();
    assert!(matches!(host.spawn(|_| cfg), Err(SandboxError::Io { .. })));
    assert_eq!(groups_with_prefix(&prefix), Vec::<String>::new());
}

#[test]
fn pooled_shells() {
    let (mut host, prefix, _state) = own_host("pool");
    host.set_pool_size(2);
    assert!(host.refill().unwrap());
    assert!(host.refill().unwrap());
    assert!(!host.refill().unwrap(), "the pool is full");
    assert_eq!(host.pooled(), 2);
    assert_eq!(groups_with_prefix(&prefix).len(), 2);

    // A spawn takes a pooled shell and gives it its function and limits.
    let dir = code("echo \"greeting=$GREETING\"; exit 3");
    let mut sb = host.spawn(|_| config(dir.path())).unwrap();
    assert_eq!(host.pooled(), 1);
    let (exit, out) = finish(&mut sb);
    assert_eq!(exit, Some(RuntimeExit::Code(3)));
    assert_eq!(line(&out, "greeting="), "hi there");
    let memory = host.cgroup_dirs(sb.id())[0].clone();
    if host.cgroup_version() == 1 {
        let limit = std::fs::read_to_string(memory.join("memory.limit_in_bytes")).unwrap();
        assert_eq!(limit.trim(), (128u64 << 20).to_string());
    }
    sb.destroy();

    // A pooled shell that died while waiting is replaced by a fresh one.
    let victim = groups_with_prefix(&prefix).pop().unwrap();
    let procs = std::fs::read_to_string(host.cgroup_dirs(&victim)[0].join("cgroup.procs")).unwrap();
    for pid in procs.lines() {
        // SAFETY: plain syscall on a pid of our own sandbox.
        unsafe { libc::kill(pid.trim().parse().unwrap(), libc::SIGKILL) };
    }
    let mut sb = host.spawn(|_| config(dir.path())).unwrap();
    assert_eq!(finish(&mut sb).0, Some(RuntimeExit::Code(3)));
    sb.destroy();

    host.refill().unwrap();
    host.drain_pool();
    assert_eq!(host.pooled(), 0);
    assert_eq!(groups_with_prefix(&prefix), Vec::<String>::new());
}

#[test]
fn stale_groups_are_removed() {
    let (host, prefix, _state) = own_host("stale");
    let leftover = host.cgroup_dirs(&format!("{prefix}0123"));
    for dir in &leftover {
        std::fs::create_dir(dir).unwrap();
    }
    assert_eq!(host.remove_stale_groups(), leftover.len());
    assert_eq!(groups_with_prefix(&prefix), Vec::<String>::new());
}

#[test]
fn memory_limit() {
    let (mut sb, _c) = spawn("oom", "head -c 300m /dev/zero | tail; echo \"tail=$?\"");
    let (exit, out) = finish(&mut sb);
    let peak = sb.peak_memory_bytes().unwrap();
    eprintln!("oom: exit {exit:?}, peak {} MiB, output: {out}", peak >> 20);
    assert!(sb.oom_killed(), "{out}");
    assert_eq!(line(&out, "tail="), "137");
    assert!(peak <= 128 << 20);
    assert!(peak > 100 << 20);
}

#[test]
fn kill_and_destroy() {
    let (mut sb, _c) = spawn("kill", "sleep 1000 & sleep 1000 & sleep 1000");
    // Host pids of everything in the sandbox, from the cgroup.
    let procs = host().cgroup_dirs(sb.id())[0].join("cgroup.procs");
    let deadline = Instant::now() + Duration::from_secs(10);
    let pids: Vec<i32> = loop {
        let pids: Vec<i32> = std::fs::read_to_string(&procs).unwrap().lines().map(|l| l.parse().unwrap()).collect();
        if pids.len() >= 5 || Instant::now() > deadline {
            break pids;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(pids.len(), 5, "init, sh, 3 sleeps: {pids:?}");
    assert!(pids.contains(&sb.pid()));
    sb.kill();
    assert!(poll_in(sb.pidfd(), Duration::from_secs(10)));
    assert_eq!(sb.wait(), None);
    let id = sb.id().to_owned();
    sb.destroy();
    sb.destroy(); // idempotent
    assert!(cgroup_gone(&id));
    for pid in pids {
        // SAFETY: signal 0 only checks existence.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        assert!(!alive, "pid {pid} survived");
    }

    // Dropping a live sandbox cleans up too.
    let (sb, _c) = spawn("drop", "sleep 1000");
    let id = sb.id().to_owned();
    drop(sb);
    assert!(cgroup_gone(&id));
}

#[test]
fn spawn_timing() {
    let dir = code("exit 0");
    let mut times = Vec::new();
    for i in 0..20 {
        let cfg = config(dir.path());
        let t = Instant::now();
        let mut sb = host().spawn(|_| cfg).unwrap();
        times.push(t.elapsed());
        assert!(poll_in(sb.pidfd(), Duration::from_secs(10)));
        assert_eq!(sb.wait(), Some(RuntimeExit::Code(0)));
        let t = Instant::now();
        sb.destroy();
        if i == 0 {
            eprintln!("destroy: {:?}", t.elapsed());
        }
    }
    times.sort();
    eprintln!(
        "spawn (call to entrypoint exec'd), 20 sequential: min {:?} median {:?} max {:?}",
        times[0],
        times[times.len() / 2],
        times[times.len() - 1]
    );
}

#[test]
fn unreadable_code_dir() {
    let dir = code("exit 0");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let (host, prefix, _state) = own_host("unreadable");
    let cfg = config(dir.path());
    match host.spawn(|_| cfg).unwrap_err() {
        SandboxError::Entrypoint { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::PermissionDenied, "{source}");
            assert!(source.to_string().contains("chdir /var/task"), "{source}");
        }
        e => panic!("{e}"),
    }
    assert_eq!(groups_with_prefix(&prefix), Vec::<String>::new());
}

#[test]
fn init_setup_failure() {
    // A host whose mountpoint vanished: ignis-init fails mounting the root and says so.
    let (own, prefix, state) = own_host("setupfail");
    std::fs::remove_dir(state.path().join("root")).unwrap();
    let dir = code("exit 0");
    let cfg = config(dir.path());
    match own.spawn(|_| cfg).unwrap_err() {
        SandboxError::Io { what, source } => {
            eprintln!("{what}: {source}");
            assert!(what.starts_with("ignis-init: mount tmpfs on"), "{what}");
            assert_eq!(source.raw_os_error(), Some(libc::ENOENT));
        }
        e => panic!("{e}"),
    }
    assert_eq!(groups_with_prefix(&prefix), Vec::<String>::new());
}

#[test]
fn send_sync() {
    fn check<T: Send + Sync>() {}
    check::<Host>();
    check::<Sandbox>();
}

#[test]
fn parallel_spawns() {
    let threads: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                for j in 0..5 {
                    let (mut sb, _c) = spawn(&format!("par{i}-{j}"), "echo \"me=$$\"; exit 5");
                    let (exit, out) = finish(&mut sb);
                    assert_eq!(exit, Some(RuntimeExit::Code(5)));
                    assert_eq!(line(&out, "me="), "2");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}
