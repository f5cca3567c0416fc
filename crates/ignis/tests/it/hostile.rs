//! Hostile functions: each test deploys `examples/hostile` next to an ordinary
//! function, runs one attack on the host, Ignis or the other tenant, and checks
//! that the attempt fails, that an invocation whose function dies ends with a
//! clear function error, and that the server goes on serving the other function.

use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use crate::harness::{Server, bin_dir, eventually, sandbox_ids, sh_runtime, zip_of};

struct Scene {
    server: Server,
}

impl Scene {
    /// A server with `hostile` (configured with `settings`) and `victim`, both invoked once.
    fn new(settings: Value) -> Scene {
        let server = Server::start();
        let binary = std::fs::read(bin_dir().join("hostile")).expect("examples/hostile is built (cargo build --workspace)");
        let created = server.create("hostile", &zip_of(&[("bootstrap", &binary, 0o755)]), settings);
        assert_eq!(created.status, 201, "{}", created.text());
        let created = server.create("victim", &sh_runtime("echo '\"unharmed\"' > /tmp/response"), json!({}));
        assert_eq!(created.status, 201, "{}", created.text());
        let scene = Scene { server };
        scene.victim_is_fine();
        scene
    }

    fn attack(&self, event: Value) -> Value {
        let reply = self.server.invoke("hostile", &event.to_string());
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.header("x-amz-function-error"), None, "the attack should answer: {}", reply.text());
        reply.json()
    }

    /// Runs an attack that must fail and answer.
    fn blocked(&self, event: Value) -> Value {
        let answer = self.attack(event.clone());
        assert_eq!(answer["blocked"], true, "attack {event} was not blocked: {answer}");
        self.victim_is_fine();
        answer
    }

    /// Runs an attack that kills the function's sandbox: a function error.
    fn dies(&self, event: Value) -> Value {
        let reply = self.server.invoke("hostile", &event.to_string());
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.header("x-amz-function-error"), Some("Unhandled"), "{}", reply.text());
        let error = reply.json();
        assert!(error["errorType"].as_str().is_some_and(|t| t.starts_with("Runtime.")), "{error}");
        self.victim_is_fine();
        // The hostile function itself is served again, by a fresh sandbox.
        let again = self.attack(json!({ "attack": "write", "path": "/var/task/x" }));
        assert_eq!(again["blocked"], true);
        error
    }

    fn victim_is_fine(&self) {
        let reply = self.server.invoke("victim", "{}");
        assert_eq!(reply.text().trim(), "\"unharmed\"", "the other function was harmed");
    }

    fn code_dir_of(&self, name: &str) -> String {
        let config = self.server.lambda("GET", &format!("/2015-03-31/functions/{name}/configuration"), b"").json();
        let digest = base64::engine::general_purpose::STANDARD.decode(config["CodeSha256"].as_str().unwrap()).unwrap();
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        self.server.data.join("code").join(hex).display().to_string()
    }

    /// Host pids of the victim's sandbox.
    fn victim_pids(&self) -> Vec<i64> {
        assert!(eventually(Duration::from_secs(10), || !sandbox_ids(&self.server.log_events("victim")).is_empty()));
        let id = sandbox_ids(&self.server.log_events("victim")).into_iter().next().unwrap();
        let mut pids = Vec::new();
        for parent in ["/sys/fs/cgroup/memory/ignis", "/sys/fs/cgroup/ignis"] {
            for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
                if entry.file_name().to_string_lossy().ends_with(&id) {
                    let procs = std::fs::read_to_string(entry.path().join("cgroup.procs")).unwrap_or_default();
                    pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i64>().ok()));
                }
            }
        }
        assert!(!pids.is_empty(), "victim sandbox {id} has no processes");
        pids
    }
}

#[test]
fn cannot_read_host_secrets_or_the_servers_data() {
    let scene = Scene::new(json!({}));
    let data = scene.server.data.display().to_string();
    let answer = scene.blocked(json!({ "attack": "read", "paths": [
        "/etc/shadow",
        "/proc/1/root/etc/shadow",
        "/root/.bash_history",
        format!("{data}/credentials"),
        format!("{data}/ignis.redb"),
        format!("{data}/master.key"),
        format!("/proc/{}/environ", scene.server.pid()),
    ] }));
    assert!(answer["detail"].as_str().unwrap().contains("/etc/shadow"), "{answer}");
}

#[test]
fn cannot_list_another_functions_code() {
    let scene = Scene::new(json!({}));
    let victim_code = scene.code_dir_of("victim");
    assert!(std::path::Path::new(&victim_code).join("bootstrap").exists(), "the victim's code is at {victim_code}");
    let data = scene.server.data.display().to_string();
    scene.blocked(json!({ "attack": "list", "paths": [victim_code, format!("{data}/code"), data] }));
    scene.blocked(json!({ "attack": "read", "paths": [format!("{}/bootstrap", scene.code_dir_of("victim"))] }));
}

#[test]
fn cannot_connect_to_the_ignis_api_on_the_hosts_loopback() {
    let scene = Scene::new(json!({}));
    let port = scene.server.address.rsplit(':').next().unwrap().to_string();
    scene.blocked(json!({ "attack": "connect", "addresses": [
        scene.server.address,
        format!("127.0.0.2:{port}"),
        format!("[::1]:{port}"),
    ] }));
}

#[test]
fn cannot_write_to_its_code() {
    let scene = Scene::new(json!({}));
    scene.blocked(json!({ "attack": "write", "path": "/var/task/bootstrap" }));
    scene.blocked(json!({ "attack": "write", "path": "/var/task/new-file" }));
    scene.blocked(json!({ "attack": "write", "path": "/usr/bin/evil" }));
    scene.blocked(json!({ "attack": "write", "path": "/etc/passwd" }));
}

#[test]
fn cannot_fill_tmp_past_its_bound() {
    let scene = Scene::new(json!({ "MemorySize": 1024, "EphemeralStorage": { "Size": 512 }, "Timeout": 60 }));
    let answer = scene.blocked(json!({ "attack": "fill_tmp", "limit": 600u64 << 20 }));
    assert!(answer["detail"].as_str().unwrap().contains("No space left"), "{answer}");
}

#[test]
fn a_fork_bomb_hits_the_process_limit() {
    let scene = Scene::new(json!({ "MemorySize": 512, "Timeout": 60 }));
    let answer = scene.blocked(json!({ "attack": "fork_bomb", "limit": 100_000 }));
    assert!(answer["detail"].as_str().unwrap().contains("fork failed"), "{answer}");
}

#[test]
fn allocating_past_the_memory_limit_kills_only_that_sandbox() {
    let scene = Scene::new(json!({ "MemorySize": 128 }));
    let error = scene.dies(json!({ "attack": "allocate", "mb": 400 }));
    assert_eq!(error["errorType"], "Runtime.OutOfMemory", "{error}");
}

#[test]
fn cannot_mount_ptrace_or_unshare() {
    let scene = Scene::new(json!({}));
    scene.blocked(json!({ "attack": "mount" }));
    scene.blocked(json!({ "attack": "unshare" }));
    let victim = scene.victim_pids();
    scene.blocked(json!({ "attack": "ptrace", "pid": 1 }));
    scene.blocked(json!({ "attack": "ptrace", "pid": victim[0] }));
}

#[test]
fn cannot_see_other_sandboxes_or_the_host_in_proc() {
    let scene = Scene::new(json!({}));
    // Host pids: the other sandbox's processes and the server. (The sandbox's
    // own pids are small numbers in its own pid namespace.)
    let mut pids = scene.victim_pids();
    pids.push(i64::from(scene.server.pid()));
    let answer = scene.blocked(json!({ "attack": "proc", "pids": pids }));
    assert!(answer["detail"].as_str().unwrap().starts_with("/proc shows pids"), "{answer}");
}

#[test]
fn killing_everything_it_can_reach_reaches_nothing_outside() {
    let scene = Scene::new(json!({}));
    // The victim's lasting processes: its init and its runtime (its curl
    // processes come and go with each invocation).
    let victim: Vec<i64> = scene
        .victim_pids()
        .into_iter()
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            cmdline.starts_with(b"ignis-init") || cmdline.windows(9).any(|w| w == b"bootstrap")
        })
        .collect();
    assert_eq!(victim.len(), 2, "the victim's init and runtime");
    // kill(-1) reaches only what the function's own user may signal in its own
    // pid namespace: nothing but itself, which kill(-1) spares.
    scene.blocked(json!({ "attack": "kill_all" }));
    for pid in victim {
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists(), "the victim's process {pid} was killed");
    }
}

#[test]
fn holding_many_runtime_api_connections_does_not_use_up_the_servers_descriptors() {
    let scene = Scene::new(json!({}));
    let before = std::fs::read_dir(format!("/proc/{}/fd", scene.server.pid())).unwrap().count();
    // The function may answer or, if its own connections were among those
    // closed, time out: either way the server must be unharmed.
    let reply = scene.server.invoke("hostile", &json!({ "attack": "connections", "count": 2000 }).to_string());
    assert_eq!(reply.status, 200, "{}", reply.text());
    scene.victim_is_fine();
    let after = std::fs::read_dir(format!("/proc/{}/fd", scene.server.pid())).unwrap().count();
    assert!(after < before + 64, "the server holds {after} descriptors, {before} before");
}
