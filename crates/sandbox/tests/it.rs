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
        code_dir: Some(code_dir.to_owned()),
        opt_dir: None,
        image: None,
        memory_mb: 128,
        tmp_mb: 16,
        env: vec![("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()), ("GREETING".into(), "hi there".into())],
        entrypoint: "/var/task/bootstrap".into(),
        tenant: "test".into(),
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
    for (id, entry, script) in [
        ("missing", "/var/task/nope", None),
        ("noexec", "/var/task/bootstrap", Some(0o644)),
        ("badinterp", "/var/task/bootstrap", None),
    ] {
        // A code directory of its own each time: one must not change once a sandbox was spawned from it.
        let dir = code("exit 0");
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
        assert_eq!(host.uid_slots_in_use(), 0);
    }
}

#[test]
fn bad_config() {
    let (mut host, prefix, _state) = own_host("bad");
    assert!(host.set_id_prefix("Bad/Prefix").is_err());
    let dir = code("exit 0");
    let mut cfg = config(dir.path());
    cfg.code_dir = Some(dir.path().join("nope"));
    assert!(matches!(host.spawn(|_| cfg), Err(SandboxError::Io { .. })));
    let mut cfg = config(dir.path());
    cfg.opt_dir = Some(dir.path().join("nope"));
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
    assert_eq!(host.uid_slots_in_use(), 2);

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
    assert_eq!(host.uid_slots_in_use(), 0);
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

/// Cgroups whose name starts with `prefix`, in every hierarchy in use.
fn groups_anywhere_with_prefix(prefix: &str) -> Vec<std::path::PathBuf> {
    let parents: Vec<_> = host().cgroup_dirs("x").iter().filter_map(|d| d.parent().map(Path::to_path_buf)).collect();
    parents
        .iter()
        .flat_map(|parent| std::fs::read_dir(parent).unwrap().flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect()
}

/// The other half of `the_groups_of_a_host_killed_by_sigkill_go_with_it`, in a process of its own: makes a host with
/// the prefix, state directory and code directory it is given, starts a sandbox there, freezes it, prints its init's
/// pid on a line of its own and waits to be killed. Does nothing when run without them.
#[test]
fn killed_host() {
    let (Ok(prefix), Ok(state), Ok(code)) =
        (std::env::var("IGNIS_TEST_PREFIX"), std::env::var("IGNIS_TEST_STATE"), std::env::var("IGNIS_TEST_CODE"))
    else {
        return;
    };
    let mut host = Host::new(Path::new(&state), Path::new(env!("CARGO_BIN_EXE_ignis-init"))).unwrap();
    host.set_id_prefix(&prefix).unwrap();
    let sb = host.spawn(|_| config(Path::new(&code))).unwrap();
    sb.freeze().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sb.frozen() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("\nready {}", sb.pid());
    // Bounded, so that a test that went wrong is not left waiting for ever.
    std::thread::sleep(Duration::from_secs(300));
}

#[test]
fn the_groups_of_a_host_killed_by_sigkill_go_with_it() {
    let state = tempfile::tempdir().unwrap();
    let code = code("sleep 1000");
    let prefix = format!("it{}-killed-", std::process::id());
    let mut maker = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "killed_host", "--nocapture", "--test-threads=1"])
        .env("IGNIS_TEST_PREFIX", &prefix)
        .env("IGNIS_TEST_STATE", state.path())
        .env("IGNIS_TEST_CODE", code.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(maker.stdout.take().unwrap()));
    let pid: i32 = lines
        .find_map(|l| l.ok()?.strip_prefix("ready ").map(|p| p.trim().parse().unwrap()))
        .expect("the sandbox's pid");
    let groups = groups_anywhere_with_prefix(&prefix);
    assert_eq!(groups.len(), host().cgroup_dirs("x").len(), "{groups:?}");

    maker.kill().unwrap();
    maker.wait().unwrap();
    let alive = || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "));
    let deadline = Instant::now() + Duration::from_secs(60);
    while (alive() || !groups_anywhere_with_prefix(&prefix).is_empty()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(), "the sandbox outlived its host");
    assert_eq!(groups_anywhere_with_prefix(&prefix), Vec::<std::path::PathBuf>::new(), "its groups outlived it");
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

    // With a pooled shell: only the function's part of the start is on the clock.
    let (mut own, _prefix, _state) = own_host("timing");
    own.set_pool_size(1);
    let mut times = Vec::new();
    for _ in 0..20 {
        assert!(own.refill().unwrap());
        let cfg = config(dir.path());
        let t = Instant::now();
        let mut sb = own.spawn(|_| cfg).unwrap();
        times.push(t.elapsed());
        assert_eq!(own.pooled(), 0);
        assert!(poll_in(sb.pidfd(), Duration::from_secs(10)));
        assert_eq!(sb.wait(), Some(RuntimeExit::Code(0)));
        sb.destroy();
    }
    times.sort();
    eprintln!(
        "pooled spawn, 20 sequential: min {:?} median {:?} max {:?}",
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
    // A host whose mountpoint vanished before this thread built its root base there: spawn fails building it.
    // Started before this thread's first spawn, so still in the host's mount namespace (see the second part).
    let (tx, rx) = std::sync::mpsc::channel::<std::path::PathBuf>();
    let remover = std::thread::spawn(move || std::fs::remove_dir(rx.recv().unwrap()).unwrap());
    let (own, prefix, state) = own_host("setupfail");
    std::fs::remove_dir(state.path().join("root")).unwrap();
    let dir = code("exit 0");
    match own.spawn(|_| config(dir.path())).unwrap_err() {
        SandboxError::Io { what, source } => {
            eprintln!("{what}: {source}");
            assert!(what.starts_with("building the sandbox root base"), "{what}");
            assert_eq!(source.raw_os_error(), Some(libc::ENOENT));
        }
        e => panic!("{e}"),
    }
    assert_eq!(groups_with_prefix(&prefix), Vec::<String>::new());
    assert_eq!(own.uid_slots_in_use(), 0);

    // One whose mountpoint vanishes (from the host's mount namespace, which the thread started before this one's
    // first spawn still has) after that: the start of ignis-init fails entering it, and says so.
    let (own, prefix, state) = own_host("setupfail2");
    let mut sb = own.spawn(|_| config(dir.path())).unwrap();
    assert_eq!(finish(&mut sb).0, Some(RuntimeExit::Code(0)));
    drop(sb);
    tx.send(state.path().join("root")).unwrap();
    remover.join().unwrap();
    match own.spawn(|_| config(dir.path())).unwrap_err() {
        SandboxError::Io { what, source } => {
            eprintln!("{what}: {source}");
            assert!(what.starts_with("ignis-init: entering the root mountpoint"), "{what}");
            assert_eq!(source.raw_os_error(), Some(libc::ENOENT));
        }
        e => panic!("{e}"),
    }
    assert_eq!(groups_with_prefix(&prefix), Vec::<String>::new());
    assert_eq!(own.uid_slots_in_use(), 0);
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

/// Reads the output of a sandbox until a line `marker` appeared (the runtime keeps running).
fn read_until(sb: &Sandbox, marker: &str) -> String {
    let mut out = Vec::new();
    let mut f = std::fs::File::from(sb.output.try_clone().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(&out).lines().any(|l| l == marker) {
        let mut buf = [0u8; 65536];
        match f.read(&mut buf) {
            Ok(0) => panic!("output ended before {marker:?}: {}", String::from_utf8_lossy(&out)),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "timeout; output so far: {}", String::from_utf8_lossy(&out));
                poll_in(sb.output.as_fd(), Duration::from_millis(100));
            }
            Err(e) => panic!("{e}"),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `key:` line of /proc/<pid>/status, whitespace collapsed.
fn proc_status(pid: i32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let value = status.lines().find_map(|l| l.strip_prefix(&format!("{key}:"))).unwrap_or_else(|| panic!("no {key} in {status}"));
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Host pids in the sandbox's (first) cgroup.
fn sandbox_pids(sb: &Sandbox) -> Vec<i32> {
    let procs = host().cgroup_dirs(sb.id())[0].join("cgroup.procs");
    std::fs::read_to_string(procs).unwrap().lines().map(|l| l.parse().unwrap()).collect()
}

const HARDENING_SCRIPT: &str = r#"
mkdir -p /tmp/x
mount -t tmpfs x /tmp/x 2>/dev/null && echo "mount=ok" || echo "mount=refused"
unshare -U true 2>/dev/null && echo "unshare_user=ok" || echo "unshare_user=refused"
unshare -n true 2>/dev/null && echo "unshare_net=ok" || echo "unshare_net=refused"
strace -o /dev/null true 2>/dev/null && echo "strace=ok" || echo "strace=refused"
for k in CapEff CapPrm CapInh CapBnd CapAmb NoNewPrivs Seccomp; do
  echo "$k=$(grep "^$k:" /proc/self/status | tr -d ' \t' | cut -d: -f2)"
done
echo "uid_map=$(cat /proc/self/uid_map | tr -s ' ' | sed 's/^ //')"
echo "gid_map=$(cat /proc/self/gid_map | tr -s ' ' | sed 's/^ //')"
echo ready
exec sleep 1000
"#;

#[test]
fn hardening() {
    let (mut a, _ca) = spawn("hard-a", HARDENING_SCRIPT);
    let (mut b, _cb) = spawn("hard-b", HARDENING_SCRIPT);
    let mut bases = Vec::new();
    for sb in [&mut a, &mut b] {
        let out = read_until(sb, "ready");
        eprintln!("{out}");
        assert_eq!(line(&out, "mount="), "refused");
        assert_eq!(line(&out, "unshare_user="), "refused");
        assert_eq!(line(&out, "unshare_net="), "refused");
        assert_eq!(line(&out, "strace="), "refused");
        for cap in ["CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb"] {
            assert_eq!(line(&out, &format!("{cap}=")), "0000000000000000", "{cap}");
        }
        assert_eq!(line(&out, "NoNewPrivs="), "1");
        assert_eq!(line(&out, "Seccomp="), "2");
        let base = sb.uid_base().unwrap();
        assert!(base >= 1_000_000, "{base}");
        assert_eq!(line(&out, "uid_map="), format!("0 {base} 65536"));
        assert_eq!(line(&out, "gid_map="), format!("0 {base} 65536"));

        // From the host: init is (unprivileged) inside root, the runtime base + 993, neither has groups.
        let deadline = Instant::now() + Duration::from_secs(10);
        let runtime = loop {
            if let Some(&pid) = sandbox_pids(sb).iter().find(|&&p| p != sb.pid() && proc_status(p, "Name") == "sleep") {
                break pid;
            }
            assert!(Instant::now() < deadline, "no runtime process");
            std::thread::sleep(Duration::from_millis(10));
        };
        let (uid, gid) = (base + 993, base + 990);
        assert_eq!(proc_status(runtime, "Uid"), format!("{uid} {uid} {uid} {uid}"));
        assert_eq!(proc_status(runtime, "Gid"), format!("{gid} {gid} {gid} {gid}"));
        assert_eq!(proc_status(runtime, "Groups"), "");
        assert_eq!(proc_status(runtime, "CapBnd"), "0000000000000000");
        assert_eq!(proc_status(sb.pid(), "Uid"), format!("{base} {base} {base} {base}"));
        assert_eq!(proc_status(sb.pid(), "Groups"), "");
        // Init's capabilities are those of root in its own user namespace only.
        assert_eq!(proc_status(sb.pid(), "Seccomp"), "0");
        bases.push(base);
    }
    assert_ne!(bases[0], bases[1], "two live sandboxes share an id range");
    for sb in [&mut a, &mut b] {
        let id = sb.id().to_owned();
        let pids = sandbox_pids(sb);
        sb.destroy();
        assert_eq!(sb.uid_base(), None);
        assert!(cgroup_gone(&id));
        for pid in pids {
            // SAFETY: signal 0 only checks existence.
            assert!(unsafe { libc::kill(pid, 0) } != 0, "pid {pid} survived");
        }
    }
}

#[test]
fn seccomp_refuses_with_eperm() {
    let (mut sb, _c) = spawn(
        "seccomp",
        r#"
exec python3 - <<'PY'
import ctypes, errno, os, stat, threading
libc = ctypes.CDLL(None, use_errno=True)
def show(name, r):
    e = ctypes.get_errno()
    print(f"{name}=" + ("ok" if r != -1 else errno.errorcode.get(e, str(e))), flush=True)
    ctypes.set_errno(0)
show("unshare_user", libc.unshare(0x10000000))
show("unshare_ns", libc.unshare(0x00020000))
show("setns", libc.setns(0, 0))
show("mount", libc.syscall(165, b"x", b"/tmp", b"tmpfs", 0, None))
show("umount2", libc.syscall(166, b"/proc", 2))
show("pivot_root", libc.syscall(155, b".", b"."))
show("chroot", libc.syscall(161, b"/tmp"))
show("ptrace", libc.syscall(101, 0, 0, 0, 0))
show("process_vm_readv", libc.syscall(310, 1, None, 0, None, 0, 0))
show("bpf", libc.syscall(321, 0, None, 0))
show("perf_event_open", libc.syscall(298, None, 0, -1, -1, 0))
show("keyctl", libc.syscall(250, 0, 0, 0, 0, 0))
show("add_key", libc.syscall(248, b"user", b"x", None, 0, 0))
show("userfaultfd", libc.syscall(323, 0))
show("open_by_handle_at", libc.syscall(304, 0, None, 0))
show("name_to_handle_at", libc.syscall(303, 0, b"/", None, None, 0))
show("init_module", libc.syscall(175, None, 0, b""))
show("kexec_load", libc.syscall(246, 0, 0, None, 0))
show("reboot", libc.syscall(169, 0, 0, 0, None))
show("settimeofday", libc.syscall(164, None, None))
show("syslog", libc.syscall(103, 3, None, 0))
show("io_uring_setup", libc.syscall(425, 1, None))
show("personality_exec", libc.personality(0x0400000))
show("personality_default", libc.personality(0))
show("clone_newuser", libc.syscall(56, 0x10000000 | 17, None, None, None, 0))
show("clone3", libc.syscall(435, None, 0))
try:
    os.mknod("/tmp/dev", 0o600 | stat.S_IFCHR, os.makedev(1, 3)); print("mknod_dev=ok")
except OSError as e:
    print("mknod_dev=" + errno.errorcode[e.errno])
os.mkfifo("/tmp/fifo"); print("mkfifo=ok")
t = threading.Thread(target=lambda: print("thread=ok", flush=True)); t.start(); t.join()
pid = os.fork()
if pid == 0:
    os._exit(7)
print("fork=" + str(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])))
import subprocess
print("subprocess=" + subprocess.run(["/bin/echo", "hi"], capture_output=True, text=True).stdout.strip())
print("alive", flush=True)
PY
"#,
    );
    let (exit, out) = finish(&mut sb);
    eprintln!("{out}");
    assert_eq!(exit, Some(RuntimeExit::Code(0)), "{out}");
    for name in [
        "unshare_user", "unshare_ns", "setns", "mount", "umount2", "pivot_root", "chroot", "ptrace", "process_vm_readv", "bpf",
        "perf_event_open", "keyctl", "add_key", "userfaultfd", "open_by_handle_at", "name_to_handle_at", "init_module",
        "kexec_load", "reboot", "settimeofday", "syslog", "io_uring_setup", "personality_exec", "clone_newuser", "mknod_dev",
    ] {
        assert_eq!(line(&out, &format!("{name}=")), "EPERM", "{name}");
    }
    assert_eq!(line(&out, "clone3="), "ENOSYS");
    assert_eq!(line(&out, "personality_default="), "ok");
    assert_eq!(line(&out, "mkfifo="), "ok");
    assert_eq!(line(&out, "thread="), "ok");
    assert_eq!(line(&out, "fork="), "7");
    assert_eq!(line(&out, "subprocess="), "hi");
    assert!(out.lines().any(|l| l == "alive"));
}

#[test]
fn code_and_state_under_private_directories() {
    // Host-root-only (0700) parents, as a worker's data directory may be: the worker opens them, not the sandbox.
    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let code_dir = private.path().join("code");
    std::fs::create_dir(&code_dir).unwrap();
    std::fs::set_permissions(&code_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(code_dir.join("bootstrap"), "#!/bin/sh\necho \"task=$(cat /var/task/data)\"\n").unwrap();
    std::fs::set_permissions(code_dir.join("bootstrap"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(code_dir.join("data"), "payload").unwrap();
    std::fs::set_permissions(code_dir.join("data"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let (own, _prefix, state) = own_host("private");
    std::fs::set_permissions(state.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut sb = own.spawn(|_| config(&code_dir)).unwrap();
    let (exit, out) = finish(&mut sb);
    assert_eq!(exit, Some(RuntimeExit::Code(0)), "{out}");
    assert_eq!(line(&out, "task="), "payload");
    sb.destroy();
    assert_eq!(own.uid_slots_in_use(), 0);
}

/// Inode of `/proc/<pid>/ns/<kind>`.
fn ns_inode(pid: u32, kind: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/{kind}")).unwrap().ino()
}

/// Inode of the user namespace that owns `pid`'s network namespace.
fn netns_owner(pid: u32) -> u64 {
    use std::os::unix::fs::MetadataExt;
    const NS_GET_USERNS: libc::c_ulong = 0xb701;
    let net = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
    // SAFETY: plain ioctl; the returned fd is ours.
    let owner = unsafe { libc::ioctl(net.as_raw_fd(), NS_GET_USERNS) };
    assert!(owner >= 0, "{}", std::io::Error::last_os_error());
    // SAFETY: just returned by the ioctl.
    let owner = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(owner) };
    owner.metadata().unwrap().ino()
}

#[test]
fn network_namespace_is_the_hosts_and_reused_only_once_empty() {
    let (host, _prefix, _state) = own_host("netns");
    let dir = code("exec sleep 1000");
    let me = std::process::id();
    let a = host.spawn(|_| config(dir.path())).unwrap();
    let init_a = a.pid() as u32;
    let net_a = ns_inode(init_a, "net");
    assert_ne!(net_a, ns_inode(me, "net"));
    // Owned by the host's user namespace, not the sandbox's: even init has no network privilege in it.
    assert_ne!(ns_inode(init_a, "user"), ns_inode(me, "user"));
    assert_eq!(netns_owner(init_a), ns_inode(me, "user"));

    // While anything holds a lease on it, no other sandbox gets it.
    let lease = a.network_lease();
    drop(a);
    let b = host.spawn(|_| config(dir.path())).unwrap();
    assert_ne!(ns_inode(b.pid() as u32, "net"), net_a);
    drop(lease);
    // Empty now: the next sandbox reuses it.
    let c = host.spawn(|_| config(dir.path())).unwrap();
    assert_eq!(ns_inode(c.pid() as u32, "net"), net_a);
    drop((b, c));
}

/// Takes inotify instances, inotify watches and POSIX message queues (default-sized, then the smallest) until the
/// kernel refuses, says how many it got and why it stopped, and holds them.
const KERNEL_RESOURCES_SCRIPT: &str = r#"
exec python3 - <<'PY'
import ctypes, errno, os, time
libc = ctypes.CDLL(None, use_errno=True)
def until_refused(name, make, limit, n=0):
    while n < limit:
        if make(n) < 0:
            print(f"{name}={n} {errno.errorcode.get(ctypes.get_errno(), '?')}", flush=True)
            return
        n += 1
    print(f"{name}={n} unbounded", flush=True)
watcher = libc.inotify_init1(0)
until_refused("inotify_instances", lambda n: libc.inotify_init1(0), 100000, n=1)
os.mkdir("/tmp/w")
def watch(n):
    path = f"/tmp/w/{n}".encode()
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    return libc.inotify_add_watch(watcher, path, 2)
until_refused("inotify_watches", watch, 100000)
class Attr(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_long), ("maxmsg", ctypes.c_long), ("msgsize", ctypes.c_long), ("curmsgs", ctypes.c_long)]
small = Attr(0, 1, 1, 0)
until_refused("mqueues_default", lambda n: libc.syscall(240, f"d{n}".encode(), os.O_CREAT | os.O_RDWR, 0o600, None), 100000)
until_refused("mqueues_small", lambda n: libc.syscall(240, f"s{n}".encode(), os.O_CREAT | os.O_RDWR, 0o600, ctypes.byref(small)), 100000)
print("ready", flush=True)
time.sleep(1000)
PY
"#;

/// Whether the calling process (host root) can make an inotify instance and a POSIX message queue.
fn root_can_make_inotify_and_mqueue() -> Result<(), String> {
    // SAFETY: plain syscall; the fd is closed below.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    if fd < 0 {
        return Err(format!("inotify_init1: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: we own fd.
    unsafe { libc::close(fd) };
    let name = std::ffi::CString::new(format!("/ignis-sandbox-it-{}", std::process::id())).unwrap();
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
fn per_user_kernel_resources_are_bounded_per_sandbox_and_not_charged_to_root() {
    let (mut a, _ca) = spawn("ucount-a", KERNEL_RESOURCES_SCRIPT);
    let (mut b, _cb) = spawn("ucount-b", KERNEL_RESOURCES_SCRIPT);
    // One after the other: the second runs while the first holds all it got.
    for sb in [&mut a, &mut b] {
        // The sandbox's user namespace is owned by its own base id, not by root.
        const NS_GET_OWNER_UID: libc::c_ulong = 0xb704;
        let userns = std::fs::File::open(format!("/proc/{}/ns/user", sb.pid())).unwrap();
        let mut owner: libc::uid_t = u32::MAX;
        // SAFETY: the ioctl writes one uid_t.
        assert_eq!(unsafe { libc::ioctl(userns.as_raw_fd(), NS_GET_OWNER_UID, &mut owner) }, 0);
        assert_eq!(Some(owner), sb.uid_base());
        let out = read_until(sb, "ready");
        eprintln!("{out}");
        assert_eq!(line(&out, "inotify_instances="), "128 EMFILE");
        assert_eq!(line(&out, "inotify_watches="), "8192 ENOSPC");
        // 800 KiB of RLIMIT_MSGQUEUE: nine queues of ten 8 KiB messages; then queues_max (256) in all.
        assert_eq!(line(&out, "mqueues_default="), "9 EMFILE");
        assert_eq!(line(&out, "mqueues_small="), "247 ENOSPC");
        root_can_make_inotify_and_mqueue().expect("host root, while sandboxes hold all they could get");
    }
}

#[test]
fn socket_families_the_network_namespace_does_not_isolate_are_refused() {
    let (mut sb, _c) = spawn(
        "families",
        r#"
exec python3 - <<'PY'
import errno, socket
def show(name, make):
    try:
        s = make(); s.close(); print(f"{name}=ok", flush=True)
    except OSError as e:
        print(f"{name}=" + errno.errorcode.get(e.errno, str(e.errno)), flush=True)
def vsock_bind():
    s = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    s.bind((socket.VMADDR_CID_ANY, 4242))
    return s
show("vsock", vsock_bind)
show("packet", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0))
show("alg", lambda: socket.socket(socket.AF_ALG, socket.SOCK_SEQPACKET, 0))
show("bluetooth", lambda: socket.socket(31, socket.SOCK_STREAM, 0))
show("key", lambda: socket.socket(15, socket.SOCK_RAW, 2))
show("xdp", lambda: socket.socket(44, socket.SOCK_RAW, 0))
show("tipc", lambda: socket.socket(30, socket.SOCK_RDM, 0))
show("vsock_pair", lambda: socket.socketpair(socket.AF_VSOCK, socket.SOCK_STREAM)[0])
show("netlink_uevent", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 15))
show("netlink_sock_diag", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 4))
show("netlink_route", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0))
show("unix_pair", lambda: socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)[0])
show("inet", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
show("inet6", lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM))
print("interfaces=" + ",".join(name for _, name in socket.if_nameindex()), flush=True)
print("resolved=" + socket.getaddrinfo("localhost", 9001, socket.AF_INET, socket.SOCK_STREAM)[0][4][0], flush=True)
PY
"#,
    );
    let (exit, out) = finish(&mut sb);
    eprintln!("{out}");
    assert_eq!(exit, Some(RuntimeExit::Code(0)), "{out}");
    for name in ["vsock", "packet", "alg", "bluetooth", "key", "xdp", "tipc", "vsock_pair"] {
        assert_eq!(line(&out, &format!("{name}=")), "EAFNOSUPPORT", "{name}");
    }
    for name in ["netlink_uevent", "netlink_sock_diag"] {
        assert_eq!(line(&out, &format!("{name}=")), "EPROTONOSUPPORT", "{name}");
    }
    for name in ["netlink_route", "unix_pair", "inet", "inet6"] {
        assert_eq!(line(&out, &format!("{name}=")), "ok", "{name}");
    }
    assert_eq!(line(&out, "interfaces="), "lo");
    assert_eq!(line(&out, "resolved="), "127.0.0.1");
}

#[test]
fn mounts_reveal_no_host_path() {
    // Code and state under directories with names of their own, the code's one level deeper, as in a data dir.
    let data = tempfile::Builder::new().prefix("ignis-data-").tempdir().unwrap();
    let code_dir = data.path().join("code").join("c0de5eed");
    std::fs::create_dir_all(&code_dir).unwrap();
    for dir in [data.path(), &data.path().join("code"), &code_dir] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::write(code_dir.join("bootstrap"), "#!/bin/sh\ncat /proc/self/mountinfo /proc/self/mounts\necho \"task=$(ls /var/task)\"\n").unwrap();
    std::fs::set_permissions(code_dir.join("bootstrap"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (host, _prefix, state) = own_host("mounts");
    let mut sb = host.spawn(|_| config(&code_dir)).unwrap();
    let (exit, out) = finish(&mut sb);
    eprintln!("{out}");
    assert_eq!(exit, Some(RuntimeExit::Code(0)), "{out}");
    assert_eq!(line(&out, "task="), "bootstrap");
    let var_task = out.lines().find(|l| l.split(' ').nth(4) == Some("/var/task")).expect("a mountinfo line for /var/task");
    assert_eq!(var_task.split(' ').nth(3), Some("/"), "{var_task}");
    let secret_names = |path: &Path| -> Vec<String> {
        path.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).filter(|c| c.len() > 4).collect()
    };
    for path in [&code_dir, state.path()] {
        let path = path.canonicalize().unwrap();
        assert!(!out.contains(path.to_str().unwrap()), "{} in:\n{out}", path.display());
        for name in secret_names(&path) {
            assert!(!out.contains(&name), "{name} (of {}) in:\n{out}", path.display());
        }
    }
}

#[test]
fn a_code_directory_made_anew_or_forgotten_gets_a_new_image() {
    let (host, _prefix, _state) = own_host("images");
    let parent = tempfile::tempdir().unwrap();
    std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = parent.path().join("code");
    let make = |word: &str| {
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.join("bootstrap"), format!("#!/bin/sh\necho word={word}\n")).unwrap();
        std::fs::set_permissions(dir.join("bootstrap"), std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    let word = |host: &Host| {
        let mut sb = host.spawn(|_| config(&dir)).unwrap();
        let (exit, out) = finish(&mut sb);
        assert_eq!(exit, Some(RuntimeExit::Code(0)), "{out}");
        line(&out, "word=").to_string()
    };
    make("one");
    assert_eq!(word(&host), "one");
    assert_eq!(word(&host), "one");
    // Removed and made again at the same path: another directory, another image.
    std::fs::remove_dir_all(&dir).unwrap();
    make("two");
    assert_eq!(word(&host), "two");
    // Changed in place (which Ignis never does) after the host was told to forget it.
    std::fs::write(dir.join("bootstrap"), "#!/bin/sh\necho word=three\n").unwrap();
    host.forget_code(&dir);
    assert_eq!(word(&host), "three");
}

/// Host programs an image of these tests holds, at the same paths, with the libraries and loader `ldd` lists.
const IMAGE_PROGRAMS: [&str; 8] =
    ["/bin/sh", "/bin/cat", "/bin/dd", "/bin/id", "/bin/wc", "/bin/grep", "/bin/ls", "/bin/tr"];

/// Copies the host file `path` (following links) to the same path under `root`.
fn copy_into(root: &Path, path: &Path) {
    let target = root.join(path.strip_prefix("/").unwrap());
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::copy(path, &target).unwrap();
}

/// An image's directory: [`IMAGE_PROGRAMS`], `app/run` = `script` (a `/bin/sh` script), and the empty directories
/// `dev`, `proc`, `sys` and `tmp` but those in `without`; everything readable by others.
fn image_dir(script: &str, without: &[&str]) -> tempfile::TempDir {
    image_dir_with(script, ["dev", "proc", "sys", "tmp"].into_iter().filter(|name| !without.contains(name)))
}

/// [`image_dir`] with the empty directories `dirs`.
fn image_dir_with<'a>(script: &str, dirs: impl IntoIterator<Item = &'a str>) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("ignis-image-").tempdir().unwrap();
    let root = dir.path();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    for program in IMAGE_PROGRAMS {
        copy_into(root, Path::new(program));
        let ldd = std::process::Command::new("ldd").arg(program).output().unwrap();
        assert!(ldd.status.success(), "ldd {program}");
        let listed = String::from_utf8(ldd.stdout).unwrap();
        for lib in listed.lines().filter_map(|l| l.split_whitespace().find(|t| t.starts_with('/'))) {
            copy_into(root, Path::new(lib));
        }
    }
    for name in dirs {
        std::fs::create_dir_all(root.join(name)).unwrap();
    }
    std::fs::create_dir(root.join("app")).unwrap();
    let run = root.join("app/run");
    std::fs::write(&run, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// `dir` packed into an EROFS image file (under a directory of its own) and mounted detached from it, as a worker
/// does (file-backed erofs: Linux 6.12 or later); the mount's source is `/proc/self/fd/N`. Returns a clone of the
/// mount (a detached tree) and the directory holding the file.
fn image_tree(dir: &Path) -> (std::os::fd::OwnedFd, tempfile::TempDir) {
    let files = tempfile::Builder::new().prefix("ignis-image-file-").tempdir().unwrap();
    let file = files.path().join("image.erofs");
    let mkfs = std::process::Command::new("mkfs.erofs").arg("--quiet").arg("-x-1").arg(&file).arg(dir).output().unwrap();
    assert!(mkfs.status.success(), "{}", String::from_utf8_lossy(&mkfs.stderr));
    let image = std::fs::File::open(&file).unwrap();
    let mount = ignis_sandbox::code::mount_image(&format!("/proc/self/fd/{}", image.as_raw_fd()), false).unwrap();
    (ignis_sandbox::code::clone(&mount).unwrap(), files)
}

/// A sandbox of the image `tree`: entrypoint `/app/run` with two arguments, in `/app`.
fn image_config(tree: std::os::fd::OwnedFd) -> SandboxConfig {
    let image = ignis_sandbox::ImageRoot { tree, args: vec!["one".into(), "two words".into()], workdir: "/app".into() };
    SandboxConfig { image: Some(image), code_dir: None, entrypoint: "/app/run".into(), ..config(Path::new("")) }
}

const IMAGE_SCRIPT: &str = r#"
echo "argv=$0|$1|$2|$#"
echo "cwd=$(pwd)"
echo "id=$(id -u):$(id -g)"
echo "caps=$(grep CapEff /proc/self/status)"
echo "root=$(ls / | tr '\n' ' ')"
echo "dev=$(ls /dev | tr '\n' ' ')"
echo "fds=$(ls /proc/self/fd | tr '\n' ' ')"
(echo > /x) 2>/dev/null && echo "rootfs=writable" || echo "rootfs=readonly"
(echo > /app/x) 2>/dev/null && echo "app=writable" || echo "app=readonly"
echo hello > /tmp/f && echo "tmp=$(cat /tmp/f)"
dd if=/dev/zero of=/tmp/big bs=1M count=64 2>/dev/null; echo "big=$(wc -c < /tmp/big)"
echo shm > /dev/shm/f && echo "shm=$(cat /dev/shm/f)"
[ -e /usr ] && echo "usr=present" || echo "usr=absent"
echo "env=$GREETING"
cat /proc/self/mountinfo
"#;

#[test]
fn an_image_is_the_root_read_only_with_a_bounded_tmp_as_root() {
    let (mut host, _prefix, state) = own_host("image");
    host.set_pool_size(1);
    let dir = image_dir(IMAGE_SCRIPT, &[]);
    let (tree, files) = image_tree(dir.path());
    let mut times = Vec::new();
    // From a pooled shell, then from nothing.
    let again = ignis_sandbox::code::clone(&tree).unwrap();
    for tree in [tree, again] {
        let pooled = host.refill().unwrap();
        let t = Instant::now();
        let mut sb = host.spawn(|_| image_config(tree)).unwrap();
        times.push(t.elapsed());
        if pooled {
            assert_eq!(host.pooled(), 0);
        }
        let (exit, out) = finish(&mut sb);
        eprintln!("{out}");
        assert_eq!(exit, Some(RuntimeExit::Code(0)), "{out}");
        assert_eq!(line(&out, "argv="), "/app/run|one|two words|2");
        assert_eq!(line(&out, "cwd="), "/app");
        assert_eq!(line(&out, "id="), "993:990");
        assert!(line(&out, "caps=").ends_with("0000000000000000"), "{out}");
        assert_eq!(line(&out, "root=").trim_end(), "app bin dev lib lib64 proc sys tmp");
        assert_eq!(line(&out, "dev=").trim_end(), "fd full null random shm stderr stdin stdout tty urandom zero");
        // ls's own directory fd is 3.
        assert_eq!(line(&out, "fds=").trim_end(), "0 1 2 3");
        assert_eq!(line(&out, "rootfs="), "readonly");
        assert_eq!(line(&out, "app="), "readonly");
        assert_eq!(line(&out, "tmp="), "hello");
        let big: u64 = line(&out, "big=").parse().unwrap();
        assert!(big > 8 << 20 && big <= 16 << 20, "{big}");
        assert_eq!(line(&out, "shm="), "shm");
        assert_eq!(line(&out, "usr="), "absent");
        assert_eq!(line(&out, "env="), "hi there");
        let root = out.lines().find(|l| l.split(' ').nth(4) == Some("/")).expect("a mountinfo line for /");
        assert!(root.contains(" - erofs /proc/self/fd/"), "{root}");
        assert!(root.split(' ').nth(5).unwrap().starts_with("ro,"), "{root}");
        for l in out.lines().filter(|l| l.split(' ').count() > 5 && l.contains(" - ")) {
            let mountpoint = l.split(' ').nth(4).unwrap();
            assert!(["/usr", "/var", "/etc"].iter().all(|host| !mountpoint.starts_with(host)), "{l}");
        }
        for path in [dir.path(), files.path(), state.path()] {
            let path = path.canonicalize().unwrap();
            let name = path.file_name().unwrap().to_str().unwrap();
            assert!(!out.contains(name), "{} in:\n{out}", path.display());
        }
    }

    // Functions of a code directory right after, on the same host and from a shell (the second one's code image
    // is made already, as the image's was).
    let code = code("echo \"cwd=$(pwd)\"; echo \"task=$(ls /var/task)\"");
    for _ in 0..2 {
        assert!(host.refill().unwrap());
        let t = Instant::now();
        let mut sb = host.spawn(|_| config(code.path())).unwrap();
        times.push(t.elapsed());
        let (exit, out) = finish(&mut sb);
        assert_eq!(exit, Some(RuntimeExit::Code(0)), "{out}");
        assert_eq!(line(&out, "cwd="), "/var/task");
        assert_eq!(line(&out, "task="), "bootstrap");
    }
    eprintln!(
        "spawn of an image sandbox: {:?} from a shell, {:?} from nothing; of a zip sandbox from a shell: {:?} (its code \
         image made), {:?}",
        times[0], times[1], times[2], times[3]
    );
}

const BASE_SCRIPT: &str = r#"
echo "task=$(cat /var/task/data)"
echo "opt=$(cat /opt/lib/x)"
(echo > /var/task/y) 2>/dev/null && echo "code=writable" || echo "code=readonly"
(echo > /opt/y) 2>/dev/null && echo "layers=writable" || echo "layers=readonly"
echo "cwd=$(pwd)"
echo "app=$(ls /app)"
[ -e /usr ] && echo "usr=present" || echo "usr=absent"
"#;

/// A runtime base: an image as the root with the function's code on its own `/var/task` and the layers on its
/// `/opt`, both read-only, from a shell and from nothing; a base without those directories is refused before a
/// shell is used.
#[test]
fn a_runtime_base_gets_the_code_at_var_task_and_the_layers_at_opt_as_root() {
    let (mut host, _prefix, _state) = own_host("base");
    host.set_pool_size(1);
    let base = image_dir_with("exit 0", ["dev", "proc", "tmp", "var/task", "opt"]);
    let (tree, _files) = image_tree(base.path());
    let code = code(BASE_SCRIPT);
    std::fs::write(code.path().join("data"), "the code").unwrap();
    std::fs::set_permissions(code.path().join("data"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let opt = tempfile::tempdir().unwrap();
    std::fs::set_permissions(opt.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir(opt.path().join("lib")).unwrap();
    std::fs::write(opt.path().join("lib/x"), "a layer").unwrap();
    std::fs::set_permissions(opt.path().join("lib/x"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let base_config = |tree| {
        let image = ignis_sandbox::ImageRoot { tree, args: Vec::new(), workdir: "/var/task".into() };
        SandboxConfig { image: Some(image), opt_dir: Some(opt.path().to_owned()), ..config(code.path()) }
    };
    for pooled in [true, false] {
        assert_eq!(host.refill().unwrap(), pooled);
        let mut sb = host.spawn(|_| base_config(ignis_sandbox::code::clone(&tree).unwrap())).unwrap();
        let (exit, out) = finish(&mut sb);
        assert_eq!(exit, Some(RuntimeExit::Code(0)), "{out}");
        assert_eq!(line(&out, "task="), "the code");
        assert_eq!(line(&out, "opt="), "a layer");
        assert_eq!((line(&out, "code="), line(&out, "layers=")), ("readonly", "readonly"));
        assert_eq!(line(&out, "cwd="), "/var/task");
        assert_eq!(line(&out, "app="), "run");
        assert_eq!(line(&out, "usr="), "absent");
        host.set_pool_size(0);
    }

    host.set_pool_size(1);
    assert!(host.refill().unwrap());
    let lacks = [
        (&["dev", "proc", "tmp", "var", "opt"][..], "/var/task"),
        (&["dev", "proc", "tmp", "opt"], "/var"),
        (&["dev", "proc", "tmp", "var/task"], "/opt"),
    ];
    for (dirs, missing) in lacks {
        let lacking = image_dir_with("exit 0", dirs.iter().copied());
        let (lacking_tree, _lacking_files) = image_tree(lacking.path());
        match host.spawn(|_| base_config(lacking_tree)).unwrap_err() {
            SandboxError::Image { what } => assert!(what.starts_with(&format!("no {missing} ")), "{what}"),
            e => panic!("{e}"),
        }
        assert_eq!(host.pooled(), 1);
    }
}

#[test]
fn image_errors_are_clear_as_root() {
    let (mut host, prefix, _state) = own_host("imageerr");
    host.set_pool_size(1);
    let dir = image_dir("exit 0", &[]);
    let (tree, _files) = image_tree(dir.path());
    let clone = || ignis_sandbox::code::clone(&tree).unwrap();

    assert!(host.refill().unwrap());
    let missing = SandboxConfig { entrypoint: "/app/nope".into(), ..image_config(clone()) };
    match host.spawn(|_| missing).unwrap_err() {
        SandboxError::Entrypoint { path, source } => {
            assert_eq!(path, "/app/nope");
            assert_eq!(source.raw_os_error(), Some(libc::ENOENT), "{source}");
        }
        e => panic!("{e}"),
    }

    assert!(host.refill().unwrap());
    let mut no_workdir = image_config(clone());
    no_workdir.image.as_mut().unwrap().workdir = "/nope".into();
    match host.spawn(|_| no_workdir).unwrap_err() {
        SandboxError::Entrypoint { path, source } => {
            assert_eq!(path, "/app/run");
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound, "{source}");
            assert!(source.to_string().contains("chdir /nope"), "{source}");
        }
        e => panic!("{e}"),
    }

    // An image without /proc is refused before a shell is used.
    assert!(host.refill().unwrap());
    let no_proc = image_dir("exit 0", &["proc"]);
    let (no_proc_tree, _no_proc_files) = image_tree(no_proc.path());
    match host.spawn(|_| image_config(no_proc_tree)).unwrap_err() {
        SandboxError::Image { what } => assert!(what.starts_with("no /proc"), "{what}"),
        e => panic!("{e}"),
    }
    assert_eq!(host.pooled(), 1);
    let mut bad_workdir = image_config(clone());
    bad_workdir.image.as_mut().unwrap().workdir = "relative".into();
    assert!(matches!(host.spawn(|_| bad_workdir), Err(SandboxError::Io { .. })));

    // The default working directory is /.
    let mut default_workdir = SandboxConfig { entrypoint: "/bin/sh".into(), ..image_config(clone()) };
    default_workdir.image.as_mut().unwrap().args = vec!["-c".into(), "echo \"cwd=$(pwd)\"".into()];
    default_workdir.image.as_mut().unwrap().workdir = String::new();
    let mut sb = host.spawn(|_| default_workdir).unwrap();
    let (exit, out) = finish(&mut sb);
    assert_eq!(exit, Some(RuntimeExit::Code(0)), "{out}");
    assert_eq!(line(&out, "cwd="), "/");
    sb.destroy();

    // A function of a code directory still starts, from a shell and from nothing.
    for _ in 0..2 {
        let code = code("exit 7");
        let mut sb = host.spawn(|_| config(code.path())).unwrap();
        assert_eq!(finish(&mut sb).0, Some(RuntimeExit::Code(7)));
    }
    host.drain_pool();
    assert_eq!(groups_with_prefix(&prefix), Vec::<String>::new());
    assert_eq!(host.uid_slots_in_use(), 0);
}
