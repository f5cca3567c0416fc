//! A hostile function: each event names an attack on the sandbox, the host or
//! other tenants, and the answer says what happened. Ignis's isolation tests
//! deploy it and check that every attempt fails.
//!
//! Event: `{"attack": NAME, ...arguments}`. Answer: `{"attack": NAME,
//! "blocked": bool, "detail": TEXT}`. Attacks that make the sandbox die (memory,
//! a runaway fork bomb) do not answer: the invocation fails instead.

mod background;

use std::io::Write;

mod kernel_limits;

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// Tries to read each path; blocked if none can be read.
fn read_any(paths: &[String]) -> (bool, String) {
    let mut detail = Vec::new();
    for path in paths {
        match std::fs::read(path) {
            Ok(bytes) => return (false, format!("read {} bytes of {path}", bytes.len())),
            Err(e) => detail.push(format!("{path}: {e}")),
        }
    }
    (true, detail.join("; "))
}

/// Tries to list each directory; blocked if none can be listed.
fn list_any(paths: &[String]) -> (bool, String) {
    let mut detail = Vec::new();
    for path in paths {
        match std::fs::read_dir(path) {
            Ok(entries) => {
                let names: Vec<String> = entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
                return (false, format!("listed {path}: {names:?}"));
            }
            Err(e) => detail.push(format!("{path}: {e}")),
        }
    }
    (true, detail.join("; "))
}

fn strings(event: &Value, key: &str) -> Vec<String> {
    event[key].as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

fn connect_any(addresses: &[String]) -> (bool, String) {
    let mut detail = Vec::new();
    for address in addresses {
        let Ok(address) = address.parse::<std::net::SocketAddr>() else {
            detail.push(format!("{address}: not an address"));
            continue;
        };
        match std::net::TcpStream::connect_timeout(&address, std::time::Duration::from_secs(2)) {
            Ok(_) => return (false, format!("connected to {address}")),
            Err(e) => detail.push(format!("{address}: {e}")),
        }
    }
    (true, detail.join("; "))
}

/// Writes to /tmp until the write fails; blocked if it fails before `limit` bytes.
fn fill_tmp(limit: u64) -> (bool, String) {
    let mut file = match std::fs::File::create("/tmp/fill") {
        Ok(f) => f,
        Err(e) => return (true, format!("create: {e}")),
    };
    let chunk = vec![0x5au8; 1 << 20];
    let mut written: u64 = 0;
    let result = loop {
        if written > limit {
            break (false, format!("wrote {written} bytes, past the {limit}-byte bound"));
        }
        if let Err(e) = file.write_all(&chunk) {
            break (true, format!("write failed after {written} bytes: {e}"));
        }
        written += chunk.len() as u64;
    };
    drop(file);
    let _ = std::fs::remove_file("/tmp/fill");
    result
}

/// Forks sleeping children until fork fails; blocked if it fails before `limit`.
fn fork_bomb(limit: u64) -> (bool, String) {
    let mut children = Vec::new();
    let result = loop {
        if children.len() as u64 >= limit {
            break (false, format!("forked {} processes", children.len()));
        }
        // SAFETY: the child only sleeps and exits, async-signal-safe calls.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: as above.
            unsafe {
                libc::sleep(30);
                libc::_exit(0);
            }
        }
        if pid < 0 {
            break (true, format!("fork failed after {} processes: {}", children.len(), errno()));
        }
        children.push(pid);
    };
    for pid in children {
        // SAFETY: signals and reaps our own children.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
    result
}

/// Allocates and touches `mb` megabytes: past the memory limit, the sandbox dies.
fn allocate(mb: u64) -> (bool, String) {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    for _ in 0..mb {
        blocks.push(vec![1u8; 1 << 20]);
    }
    (false, format!("allocated {} MB", blocks.len()))
}

fn syscall_result(name: &str, ret: i64) -> (bool, String) {
    if ret < 0 { (true, format!("{name}: {}", errno())) } else { (false, format!("{name} succeeded ({ret})")) }
}

fn mount_tmpfs() -> (bool, String) {
    let _ = std::fs::create_dir_all("/tmp/mnt");
    let (source, target, fstype) = (c"none", c"/tmp/mnt", c"tmpfs");
    // SAFETY: valid NUL-terminated strings.
    let ret = unsafe { libc::mount(source.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    syscall_result("mount", ret.into())
}

fn ptrace_attach(pid: i64) -> (bool, String) {
    // SAFETY: plain syscalls.
    let me = unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) };
    // SAFETY: plain syscall.
    let other = unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid as libc::pid_t, 0, 0) };
    if me >= 0 || other >= 0 {
        return (false, format!("PTRACE_TRACEME {me}, PTRACE_ATTACH {pid}: {other}"));
    }
    (true, format!("ptrace: {}", errno()))
}

fn unshare_all() -> (bool, String) {
    let mut detail = Vec::new();
    for (name, flag) in [
        ("user", libc::CLONE_NEWUSER),
        ("mount", libc::CLONE_NEWNS),
        ("net", libc::CLONE_NEWNET),
        ("pid", libc::CLONE_NEWPID),
    ] {
        // SAFETY: plain syscall.
        if unsafe { libc::unshare(flag) } == 0 {
            return (false, format!("unshare({name}) succeeded"));
        }
        detail.push(format!("unshare({name}): {}", errno()));
    }
    (true, detail.join("; "))
}

/// What of other processes this sandbox can see in /proc.
fn proc_others(host_pids: &[i64]) -> (bool, String) {
    let pids: Vec<String> = std::fs::read_dir("/proc")
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.bytes().all(|b| b.is_ascii_digit())).collect())
        .unwrap_or_default();
    for pid in host_pids {
        let path = format!("/proc/{pid}/cmdline");
        if let Ok(cmdline) = std::fs::read(&path) {
            if !cmdline.is_empty() {
                return (false, format!("read {path}: {:?}", String::from_utf8_lossy(&cmdline)));
            }
        }
    }
    (pids.len() < 16, format!("/proc shows pids {pids:?}"))
}

async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let (event, _) = event.into_parts();
    let attack = event["attack"].as_str().unwrap_or("").to_string();
    let limit = event["limit"].as_u64().unwrap_or(u64::MAX);
    let (blocked, detail) = match attack.as_str() {
        "read" => read_any(&strings(&event, "paths")),
        "list" => list_any(&strings(&event, "paths")),
        "write" => match std::fs::write(event["path"].as_str().unwrap_or("/var/task/x"), b"owned") {
            Ok(()) => (false, "written".into()),
            Err(e) => (true, e.to_string()),
        },
        "connect" => connect_any(&strings(&event, "addresses")),
        "fill_tmp" => fill_tmp(limit),
        "fork_bomb" => fork_bomb(limit),
        "allocate" => allocate(event["mb"].as_u64().unwrap_or(1024)),
        "mount" => mount_tmpfs(),
        "ptrace" => ptrace_attach(event["pid"].as_i64().unwrap_or(1)),
        "unshare" => unshare_all(),
        "proc" => proc_others(&event["pids"].as_array().map(|a| a.iter().filter_map(Value::as_i64).collect::<Vec<_>>()).unwrap_or_default()),
        "connections" => {
            // Opens many connections to the Runtime API and keeps them.
            let mut kept = Vec::new();
            for _ in 0..event["count"].as_u64().unwrap_or(1000) {
                let api = std::net::SocketAddr::from(([127, 0, 0, 1], 9001));
                match std::net::TcpStream::connect_timeout(&api, std::time::Duration::from_millis(200)) {
                    Ok(stream) => kept.push(stream),
                    Err(_) => break,
                }
            }
            std::mem::forget(kept);
            (true, "opened connections".to_string())
        }
        "kill_all" => {
            // SAFETY: plain syscall; kills whatever this sandbox can reach, itself included.
            let ret = unsafe { libc::kill(-1, libc::SIGKILL) };
            syscall_result("kill(-1)", ret.into())
        }
        name if kernel_limits::ATTACKS.contains(&name) => kernel_limits::attack(name, &event),
        other => background::attack(other, &event).ok_or_else(|| format!("unknown attack {other:?}"))?,
    };
    Ok(json!({ "attack": attack, "blocked": blocked, "detail": detail }))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(handler)).await
}
