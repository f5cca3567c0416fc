//! Nothing is left behind: after kills of the runtime, of its children, and of
//! the server itself, every sandbox process and cgroup is gone.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::harness::{Server, cgroup_left, eventually, sandbox_ids, sh_runtime};

/// The pids in a sandbox's memory cgroup (v1 here; v2 on pure-v2 hosts).
pub(crate) fn sandbox_pids(sandbox_id: &str) -> Vec<i32> {
    let parents = [PathBuf::from("/sys/fs/cgroup/memory/ignis"), PathBuf::from("/sys/fs/cgroup/ignis")];
    for parent in parents {
        let Ok(entries) = std::fs::read_dir(&parent) else { continue };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().ends_with(&format!("-{sandbox_id}")) {
                let procs = std::fs::read_to_string(entry.path().join("cgroup.procs")).unwrap_or_default();
                return procs.lines().filter_map(|l| l.trim().parse().ok()).collect();
            }
        }
    }
    Vec::new()
}

pub(crate) fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ")
}

/// Asserts that the processes and the cgroups (in every hierarchy) of the sandboxes of a killed server or worker
/// host go, without another process started on its data directory.
pub(crate) fn assert_gone_with(killed: &str, ids: &std::collections::BTreeSet<String>, pids: &[i32]) {
    assert!(eventually(Duration::from_secs(10), || pids.iter().all(|&p| !alive(p))), "sandbox processes outlived {killed}: {pids:?}");
    assert!(
        eventually(Duration::from_secs(60), || ids.iter().all(|id| !cgroup_left(id))),
        "cgroups outlived {killed}: {:?}",
        ids.iter().filter(|id| cgroup_left(id)).collect::<Vec<_>>()
    );
}

fn kill9(pid: i32) {
    let status = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    assert!(status.success());
}

/// The runtime leaves a child behind on every event, so there is something to clean up.
fn forking_runtime() -> Vec<u8> {
    sh_runtime("sleep 1000 & echo '\"forked\"' > /tmp/response")
}

#[test]
fn kill_9_of_the_runtime_or_its_child_ends_the_sandbox_cleanly() {
    let server = Server::start();
    server.create("forky", &forking_runtime(), json!({}));
    server.create("other", &sh_runtime("echo '\"other\"' > /tmp/response"), json!({}));
    assert_eq!(server.invoke("forky", "{}").text().trim(), "\"forked\"");
    assert!(eventually(Duration::from_secs(10), || sandbox_ids(&server.log_events("forky")).len() == 1));
    let first = sandbox_ids(&server.log_events("forky")).into_iter().next().unwrap();
    let pids = sandbox_pids(&first);
    assert!(pids.len() >= 3, "init, runtime and its child: {pids:?}");

    // Kill a child the runtime spawned: the sandbox goes on serving.
    let child = *pids
        .iter()
        .find(|p| std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default().starts_with(b"sleep\01000"))
        .expect("the runtime's child");
    kill9(child);
    assert_eq!(server.invoke("forky", "{}").text().trim(), "\"forked\"");

    // Kill every process but init (the runtime included): the sandbox ends,
    // its cgroup goes, and the next invoke gets a fresh sandbox.
    let pids = sandbox_pids(&first);
    for pid in pids.iter().skip(1) {
        let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    assert!(eventually(Duration::from_secs(10), || !cgroup_left(&first)), "cgroup of the killed sandbox left behind");
    assert!(pids.iter().all(|&p| !alive(p)), "processes left behind: {pids:?}");
    assert_eq!(server.invoke("forky", "{}").text().trim(), "\"forked\"");
    assert_eq!(server.invoke("other", "{}").text().trim(), "\"other\"");
}

#[test]
fn stopping_the_server_ends_every_sandbox() {
    let mut server = Server::start();
    server.create("forky", &forking_runtime(), json!({}));
    server.create("sleepy", &sh_runtime("sleep 30"), json!({ "Timeout": 60 }));
    server.invoke("forky", "{}");
    // One sandbox busy while the server stops.
    let busy = server.invoke_with("sleepy", "{}", &[("x-amz-invocation-type", "Event")]);
    assert_eq!(busy.status, 202);
    assert!(eventually(Duration::from_secs(10), || !sandbox_ids(&server.log_events("sleepy")).is_empty()));
    let ids: Vec<String> = ["forky", "sleepy"].iter().flat_map(|f| sandbox_ids(&server.log_events(f))).collect();
    let pids: Vec<i32> = ids.iter().flat_map(|id| sandbox_pids(id)).collect();
    assert!(!pids.is_empty());
    server.stop();
    assert!(ids.iter().all(|id| !cgroup_left(id)), "cgroups left behind after shutdown");
    assert!(pids.iter().all(|&p| !alive(p)), "processes left behind after shutdown: {pids:?}");
}

#[test]
fn kill_9_of_the_server_takes_its_sandboxes_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = Server::start_in(&data, &[]);
    server.create("forky", &forking_runtime(), json!({}));
    server.invoke("forky", "{}");
    assert!(eventually(Duration::from_secs(10), || !sandbox_ids(&server.log_events("forky")).is_empty()));
    let ids = sandbox_ids(&server.log_events("forky"));
    let pids: Vec<i32> = ids.iter().flat_map(|id| sandbox_pids(id)).collect();
    assert!(ids.iter().all(|id| cgroup_left(id)));
    kill9(server.pid() as i32);
    server.stop();
    // Their cgroups go too, with no other server started.
    assert_gone_with("the server", &ids, &pids);
    // The next server on the same data serves as usual.
    let server = Server::start_in(&data, &[]);
    assert_eq!(server.invoke("forky", "{}").text().trim(), "\"forked\"");
}
