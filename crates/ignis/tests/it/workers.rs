//! Several worker hosts: `ignis server --no-local-worker` with `ignis worker`
//! processes joined to it; placement by capacity, logs from remote
//! sandboxes, and failover when a worker is killed with SIGKILL under load.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Server, WorkerHost, cgroup_left, eventually, sandbox_ids, sh_runtime};
use crate::lifecycle::{assert_gone_with, sandbox_pids};

fn slow_function(server: &Server, name: &str, seconds: &str) {
    let zip = sh_runtime(&format!("sleep {seconds}; echo \"{{\\\"worker\\\": \\\"$AWS_LAMBDA_LOG_STREAM_NAME\\\"}}\" > /tmp/response"));
    let reply = server.create(name, &zip, json!({ "Timeout": 30, "MemorySize": 128 }));
    assert_eq!(reply.status, 201, "{}", reply.text());
}

#[test]
fn kill_9_of_a_worker_host_takes_its_sandboxes_and_their_cgroups_with_it() {
    let mut server = Server::start_with(&["--no-local-worker"]);
    let mut worker = WorkerHost::start(&server, &[]);
    server.wait_for_workers(1);
    // The runtime leaves a child behind, so there is more than init to end.
    let reply = server.create("forky", &sh_runtime("sleep 1000 & echo '\"forked\"' > /tmp/response"), json!({}));
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(server.invoke("forky", "{}").text().trim(), "\"forked\"");
    assert!(eventually(Duration::from_secs(10), || !sandbox_ids(&server.log_events("forky")).is_empty()));
    let ids = sandbox_ids(&server.log_events("forky"));
    let pids: Vec<i32> = ids.iter().flat_map(|id| sandbox_pids(id)).collect();
    assert!(pids.len() >= 3, "init, runtime and its child: {pids:?}");
    assert!(ids.iter().all(|id| cgroup_left(id)));

    worker.kill9();
    // Their cgroups go too, with no other worker started on its data directory.
    assert_gone_with("the worker", &ids, &pids);
    server.stop();
}

#[test]
fn without_a_worker_an_invoke_is_a_clear_error() {
    let server = Server::start_with(&["--no-local-worker"]);
    assert!(server.workers().is_empty());
    slow_function(&server, "alone", "0");
    let started = Instant::now();
    let reply = server.invoke("alone", "{}");
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert_eq!(reply.error_type(), "ServiceException");
    assert!(reply.text().contains("no healthy worker"), "{}", reply.text());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn two_workers_share_the_sandboxes_by_capacity_and_their_logs_reach_the_server() {
    let server = Server::start_with(&["--no-local-worker"]);
    // Room for two sandboxes of 128 MB each.
    let _first = WorkerHost::start(&server, &["--memory", "256"]);
    let _second = WorkerHost::start(&server, &["--memory", "256"]);
    server.wait_for_workers(2);
    slow_function(&server, "shared", "1");

    // Five at once: four fit (two per worker), the fifth finds no room.
    let replies: Vec<_> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..5).map(|_| s.spawn(|| server.invoke("shared", "{}"))).collect();
        let mut workers = Vec::new();
        let full = eventually(Duration::from_secs(10), || {
            workers = server.workers();
            workers.iter().map(|w| w["UsedMemoryMb"].as_u64().unwrap()).collect::<Vec<_>>() == [256, 256]
        });
        assert!(full, "{workers:?}");
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let refused: Vec<_> = replies.iter().filter(|r| r.status != 200).collect();
    assert_eq!(ok, 4, "{replies:?}");
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].error_type(), "ServiceException");
    assert!(refused[0].text().contains("no worker has room"), "{}", refused[0].text());

    // Warm invokes reuse them; the tail and FilterLogEvents show their lines.
    let reply = server.invoke("shared", "{}");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.log_tail().contains("REPORT RequestId"), "{}", reply.log_tail());
    assert!(eventually(Duration::from_secs(10), || {
        let events = server.log_events("shared");
        events.iter().filter(|e| e["message"].as_str().unwrap_or("").starts_with("REPORT")).count() == 5
    }));
    assert_eq!(sandbox_ids(&server.log_events("shared")).len(), 4);
}

#[test]
fn the_cli_lists_the_local_worker_and_those_that_joined() {
    let server = Server::start();
    let worker = WorkerHost::start(&server, &["--memory", "512"]);
    server.wait_for_workers(2);
    let listed = std::process::Command::new(env!("CARGO_BIN_EXE_ignis"))
        .args(["workers", "--endpoint", &format!("http://{}", server.address)])
        .env("IGNIS_ACCESS_KEY_ID", crate::harness::KEY_ID)
        .env("IGNIS_SECRET_ACCESS_KEY", crate::harness::SECRET)
        .output()
        .unwrap();
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    let text = String::from_utf8_lossy(&listed.stdout).into_owned();
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["WORKER", "ADDRESS", "HEALTHY", "MEMORY_MB", "USED_MB", "CPUS", "SANDBOXES"]);
    assert_eq!(rows[1][..3], ["worker-0", "local", "true"]);
    assert_eq!(rows[2][..4], ["worker-1", worker.address.as_str(), "true", "512"]);
    // A tenant's key may not see them.
    let (_, tenant) = server.create_account("tenant");
    let reply = server.ignis_as(&tenant, "GET", "/ignis/workers", b"");
    assert_eq!((reply.status, reply.error_type()), (403, "AccessDeniedException"));
}

#[test]
fn killing_a_worker_under_load_fails_over_to_the_other() {
    let mut server = Server::start_with(&["--no-local-worker"]);
    let mut first = WorkerHost::start(&server, &[]);
    server.wait_for_workers(1);
    let mut second = WorkerHost::start(&server, &[]);
    server.wait_for_workers(2);
    slow_function(&server, "busy", "0.2");
    // Four slots: one that was not given back would throttle the clients below.
    let reply = server.lambda("PUT", "/2017-10-31/functions/busy/concurrency", br#"{"ReservedConcurrentExecutions": 4}"#);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(server.invoke("busy", "{}").status, 200);
    // Packing fills the oldest worker first.
    let workers = server.workers();
    assert_eq!(workers[0]["Sandboxes"], 1, "{workers:?}");
    let (victim_id, victim_address) = (workers[0]["WorkerId"].clone(), workers[0]["Address"].clone());
    assert_eq!(victim_address, first.address.as_str());

    // 4 clients × 20 invokes; the worker running them is killed after a second.
    let results: Vec<(u16, String, Duration)> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    (0..20)
                        .map(|_| {
                            let started = Instant::now();
                            let reply = server.invoke("busy", "{}");
                            (reply.status, reply.error_type().to_string(), started.elapsed())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(1));
        first.kill9();
        clients.into_iter().flat_map(|c| c.join().unwrap()).collect()
    });
    let failed: Vec<_> = results.iter().filter(|(status, ..)| *status != 200).collect();
    for (status, error_type, elapsed) in &failed {
        assert_eq!((*status, error_type.as_str()), (500, "ServiceException"), "{failed:?}");
        assert!(*elapsed < Duration::from_secs(5), "a failure took {elapsed:?}, the function's timeout is 30 s");
    }
    assert!(failed.len() <= 4, "only invocations in flight on the killed worker may fail: {failed:?}");
    // Each client's last invokes ran on the survivor.
    for client in results.chunks(20) {
        assert!(client[10..].iter().all(|(status, ..)| *status == 200), "{client:?}");
    }

    // The killed worker is unhealthy and holds nothing; the survivor has the sandboxes.
    assert!(eventually(Duration::from_secs(5), || {
        let workers = server.workers();
        let victim = workers.iter().find(|w| w["WorkerId"] == victim_id).unwrap();
        victim["Healthy"] == false && victim["Sandboxes"] == 0
    }));
    let workers = server.workers();
    let survivor = workers.iter().find(|w| w["Address"] == second.address.as_str()).unwrap();
    assert_eq!(survivor["Healthy"], true);
    assert!(survivor["Sandboxes"].as_u64().unwrap() >= 1, "{workers:?}");
    assert_eq!(server.invoke("busy", "{}").status, 200);

    // Nothing is left behind: the survivor ends its sandboxes when it stops;
    // the killed worker's sandboxes and their cgroups went with it, and the
    // next worker on its data directory starts there.
    let ids = sandbox_ids(&server.log_events("busy"));
    assert!(ids.len() >= 2, "{ids:?}");
    second.stop();
    let mut again = WorkerHost::start_in(&server, &first.data, &[]);
    assert!(
        eventually(Duration::from_secs(10), || ids.iter().all(|id| !cgroup_left(id))),
        "cgroups left: {:?}",
        ids.iter().filter(|id| cgroup_left(id)).collect::<Vec<_>>()
    );
    again.stop();
    server.stop();
}

#[test]
fn a_worker_that_stops_heartbeating_is_dropped_and_rejoins_as_a_new_one() {
    let server = Server::start_with(&["--no-local-worker"]);
    let worker = WorkerHost::start(&server, &[]);
    server.wait_for_workers(1);
    slow_function(&server, "paused", "0");
    assert_eq!(server.invoke("paused", "{}").status, 200);
    // SIGSTOP: the process is there but silent (its connections hang). Stays end to end on
    // real time, for a real silent process; the heartbeat timing itself is ignis-invoke's
    // a_silent_worker_turns_unhealthy_and_its_calls_end.
    let pid = worker_pid(&worker);
    signal(pid, 19);
    let started = Instant::now();
    let hung = std::thread::scope(|s| {
        let call = s.spawn(|| server.invoke("paused", "{}"));
        assert!(eventually(Duration::from_secs(6), || server.workers()[0]["Healthy"] == false));
        call.join().unwrap()
    });
    assert_eq!((hung.status, hung.error_type()), (500, "ServiceException"), "{}", hung.text());
    assert!(started.elapsed() < Duration::from_secs(6), "took {:?}", started.elapsed());
    signal(pid, 18);
    // Told it is unknown, it ends its sandboxes and registers again.
    server.wait_for_workers(1);
    assert_eq!(server.workers().len(), 1, "the old entry at the same address is gone");
    let reply = server.invoke("paused", "{}");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(eventually(Duration::from_secs(10), || sandbox_ids(&server.log_events("paused")).len() == 2));
    let ids = sandbox_ids(&server.log_events("paused"));
    assert!(
        eventually(Duration::from_secs(10), || ids.iter().filter(|id| cgroup_left(id)).count() == 1),
        "{ids:?}: {:?}",
        ids.iter().map(|id| cgroup_left(id)).collect::<Vec<_>>()
    );
}

fn worker_pid(worker: &WorkerHost) -> i32 {
    worker.pid() as i32
}

fn signal(pid: i32, signal: i32) {
    unsafe extern "C" {
        fn kill(pid: i32, signal: i32) -> i32;
    }
    // SAFETY: signals a child process this test started and has not reaped.
    assert_eq!(unsafe { kill(pid, signal) }, 0);
}

#[test]
fn a_worker_restarted_at_the_same_address_replaces_the_old_one_at_once() {
    let server = Server::start_with(&["--no-local-worker"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let mut worker = WorkerHost::start(&server, &["--listen", &listen]);
    server.wait_for_workers(1);
    slow_function(&server, "restarted", "0");
    assert_eq!(server.invoke("restarted", "{}").status, 200);
    let data = worker.data.clone();
    worker.kill9();
    let _again = WorkerHost::start_in(&server, &data, &["--listen", &listen]);
    // Well within the heartbeat timeout, the new registration has taken the old one's place.
    assert!(eventually(Duration::from_secs(2), || server.workers().iter().any(|w| w["WorkerId"] == 2)));
    let workers = server.workers();
    assert_eq!(workers.len(), 1, "{workers:?}");
    assert_eq!((workers[0]["Healthy"].clone(), workers[0]["Sandboxes"].clone()), (json!(true), json!(0)));
    let reply = server.invoke("restarted", "{}");
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[test]
fn provisioned_sandboxes_on_a_worker_host_are_ready_and_replaced_when_it_dies() {
    let server = Server::start_with(&["--no-local-worker"]);
    let mut first = WorkerHost::start(&server, &[]);
    server.wait_for_workers(1);
    let handler = r#"echo "\"$AWS_LAMBDA_INITIALIZATION_TYPE\"" > /tmp/response"#;
    assert_eq!(server.create("warmed", &sh_runtime(handler), json!({})).status, 201);
    assert_eq!(server.lambda("POST", "/2015-03-31/functions/warmed/versions", b"{}").status, 201);
    let path = "/2019-09-30/functions/warmed/provisioned-concurrency";
    let status = || server.signed("lambda", "GET", path, "Qualifier=1", &[], b"").json()["Status"].clone();
    let body = json!({ "ProvisionedConcurrentExecutions": 2 }).to_string();
    let put = server.signed("lambda", "PUT", path, "Qualifier=1", &[], body.as_bytes());
    assert_eq!(put.status, 202, "{}", put.text());
    assert!(eventually(Duration::from_secs(30), || status() == "READY"), "{}", status());
    assert_eq!(server.workers()[0]["Sandboxes"], 2);
    let reply = server.invoke("warmed:1", "{}");
    assert_eq!(reply.text().trim(), "\"provisioned-concurrency\"");
    assert!(!reply.log_tail().contains("Init Duration"), "{}", reply.log_tail());

    // Its worker dies; a new one joins and gets the provisioned sandboxes again.
    let _second = WorkerHost::start(&server, &[]);
    server.wait_for_workers(2);
    first.kill9();
    assert!(eventually(Duration::from_secs(30), || {
        let workers = server.workers();
        workers[0]["Healthy"] == false && workers[1]["Sandboxes"] == 2 && status() == "READY"
    }));
    let reply = server.invoke("warmed:1", "{}");
    assert_eq!(reply.text().trim(), "\"provisioned-concurrency\"");
}

#[test]
fn invocations_running_on_a_killed_worker_fail_at_once_and_give_their_slots_back() {
    let server = Server::start_with(&["--no-local-worker"]);
    let mut worker = WorkerHost::start(&server, &[]);
    server.wait_for_workers(1);
    // Sleeps as many seconds as its event says; two may run at once.
    let reply = server.create("long", &sh_runtime("sleep $(cat /tmp/event)"), json!({ "Timeout": 30 }));
    assert_eq!(reply.status, 201, "{}", reply.text());
    let reply = server.lambda("PUT", "/2017-10-31/functions/long/concurrency", br#"{"ReservedConcurrentExecutions": 2}"#);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let (replies, killed_at) = std::thread::scope(|s| {
        let calls: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let reply = server.invoke("long", "20");
                    (reply, Instant::now())
                })
            })
            .collect();
        assert!(eventually(Duration::from_secs(10), || server.workers()[0]["Sandboxes"] == 2));
        // Both runtimes have their event (20 s of the function's 30): both START lines are in.
        let started = || {
            let events = server.log_events("long");
            events.iter().filter(|e| e["message"].as_str().is_some_and(|m| m.starts_with("START RequestId: "))).count()
        };
        assert!(eventually(Duration::from_secs(10), || started() == 2));
        worker.kill9();
        let killed_at = Instant::now();
        (calls.into_iter().map(|c| c.join().unwrap()).collect::<Vec<_>>(), killed_at)
    });
    for (reply, answered_at) in &replies {
        assert_eq!((reply.status, reply.error_type()), (500, "ServiceException"), "{}", reply.text());
        assert!(reply.text().contains("lost"), "{}", reply.text());
        let after = answered_at.duration_since(killed_at);
        assert!(after < Duration::from_secs(2), "answered {after:?} after the kill");
    }
    // Both slots are back: two at once run on a new worker, none is throttled.
    let _other = WorkerHost::start(&server, &[]);
    assert!(eventually(Duration::from_secs(5), || server.workers().iter().any(|w| w["Healthy"] == true)));
    std::thread::scope(|s| {
        let calls: Vec<_> = (0..2).map(|_| s.spawn(|| server.invoke("long", "1"))).collect();
        for call in calls {
            let reply = call.join().unwrap();
            assert_eq!(reply.status, 200, "{}", reply.text());
        }
    });
}

#[test]
fn the_worker_command_refuses_a_bad_server_url_or_missing_keys() {
    let run = |join: &str, keys: bool| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ignis"));
        command.args(["worker", "--join", join, "--data-dir", "/nonexistent/ignis-worker-test"]);
        command.env_remove("IGNIS_ACCESS_KEY_ID").env_remove("IGNIS_SECRET_ACCESS_KEY");
        if keys {
            command.env("IGNIS_ACCESS_KEY_ID", crate::harness::KEY_ID).env("IGNIS_SECRET_ACCESS_KEY", crate::harness::SECRET);
        }
        let output = command.output().unwrap();
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    assert!(run("https://127.0.0.1:9000", true).contains("--join must be http://HOST:PORT"));
    assert!(run("http://127.0.0.1:9000/path", true).contains("--join must be http://HOST:PORT"));
    assert!(run("http://127.0.0.1:9000", false).contains("IGNIS_ACCESS_KEY_ID"));
}

#[test]
fn timeouts_and_clients_that_go_away_give_their_slot_back_on_a_worker_host() {
    let server = Server::start_with(&["--no-local-worker"]);
    let _worker = WorkerHost::start(&server, &[]);
    server.wait_for_workers(1);
    let reply = server.create("slot", &sh_runtime("sleep $(cat /tmp/event)"), json!({ "Timeout": 1 }));
    assert_eq!(reply.status, 201, "{}", reply.text());
    let reply = server.lambda("PUT", "/2017-10-31/functions/slot/concurrency", br#"{"ReservedConcurrentExecutions": 1}"#);
    assert_eq!(reply.status, 200, "{}", reply.text());
    // Stays end to end on real time: the worker host's sandbox enforces the 1 s timeout, and
    // the slot is held while a real invocation runs.
    // Timeouts: the worker ends the sandbox; the one slot is free for the next.
    for _ in 0..2 {
        let reply = server.invoke("slot", "5");
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.header("x-amz-function-error"), Some("Unhandled"));
        assert!(reply.text().contains("Task timed out after 1.00 seconds"), "{}", reply.text());
    }
    // A client that hangs up: its invocation runs on and holds the slot, then gives it back.
    server.invoke_and_hang_up("slot", b"0.9");
    assert_eq!(server.invoke("slot", "0").status, 429);
    assert!(eventually(Duration::from_secs(10), || server.invoke("slot", "0").status == 200));
}
