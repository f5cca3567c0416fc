//! Several front ends on etcd (`ignis server --etcd`): functions, code, accounts and keys made through one are
//! served by the others; one etcd member of three lost changes nothing, and without quorum writes fail with a clear
//! error while invokes of known functions go on.

use std::path::Path;
use std::time::Duration;

use ignis_etcd::testing::EtcdCluster;
use serde_json::json;

use crate::async_invoke::send_numbered;
use crate::concurrency::{assert_throttled, sleeper, started};
use crate::harness::{Server, WorkerHost, cgroup_left, eventually, rust_example, sh_runtime};
use crate::runtimes::publish_layer;

/// How long a change made through one front end may take to show on another (generous: no test waits it out).
const SHOWS_WITHIN: Duration = Duration::from_secs(30);

/// A cluster's shared parts: the master key file and the object store directory.
struct Shared {
    dir: tempfile::TempDir,
}

impl Shared {
    fn new() -> Shared {
        let dir = tempfile::tempdir().unwrap();
        let key: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect();
        std::fs::write(dir.path().join("master.key"), key).unwrap();
        std::fs::create_dir(dir.path().join("objects")).unwrap();
        Shared { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A front end of the cluster whose etcd members are at `etcd`.
fn front_end(etcd: &str, shared: &Shared) -> Server {
    front_end_in(None, etcd, shared, &[])
}

/// [`front_end`] on the data directory `data` (a new one if `None`), with `more` arguments.
fn front_end_in(data: Option<&Path>, etcd: &str, shared: &Shared, more: &[&str]) -> Server {
    let key = shared.path().join("master.key");
    let objects = format!("file://{}", shared.path().join("objects").display());
    let mut args = vec![
        "--etcd",
        etcd,
        "--object-store",
        &objects,
        "--master-key-file",
        key.to_str().unwrap(),
        "--sandbox-pool",
        "0",
        "--async-retry-delay",
        "1",
    ];
    args.extend(more);
    match data {
        Some(data) => Server::start_in(data, &args),
        None => Server::start_with(&args),
    }
}

fn echo_function(server: &Server, name: &str, answer: &str) {
    let reply = server.create(name, &sh_runtime(&format!("echo '\"{answer}\"' > /tmp/response")), json!({}));
    assert_eq!(reply.status, 201, "{}", reply.text());
}

/// Invokes `name` through `server` once it knows the function; its answer.
fn invoke_once_shown(server: &Server, name: &str) -> String {
    let path = format!("/2015-03-31/functions/{name}");
    assert!(eventually(SHOWS_WITHIN, || server.lambda("GET", &path, b"").status == 200), "{name} never showed");
    let reply = server.invoke(name, "{}");
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.text().trim().to_string()
}

#[test]
fn what_is_made_through_one_front_end_is_served_by_the_others() {
    let etcd = EtcdCluster::start(1);
    let shared = Shared::new();
    let fronts: Vec<Server> = (0..3).map(|_| front_end(&etcd.endpoints_flag(), &shared)).collect();

    echo_function(&fronts[0], "hello", "one");
    assert_eq!(invoke_once_shown(&fronts[1], "hello"), "\"one\"");
    assert_eq!(invoke_once_shown(&fronts[2], "hello"), "\"one\"");

    // New code through the third front end runs through the first.
    let zip = sh_runtime("echo '\"two\"' > /tmp/response");
    let body = json!({ "ZipFile": base64_of(&zip) }).to_string();
    let reply = fronts[2].lambda("PUT", "/2015-03-31/functions/hello/code", body.as_bytes());
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        eventually(SHOWS_WITHIN, || fronts[0].invoke("hello", "{}").text().trim() == "\"two\""),
        "the new code never ran through the first front end"
    );

    // A layer published through one front end is used by a function made through another, run through a third.
    let layer = publish_layer(&fronts[0], "words", &[("word", b"layered", 0o644)]);
    assert!(eventually(SHOWS_WITHIN, || fronts[1].lambda("GET", "/2018-10-31/layers/words/versions/1", b"").status == 200));
    let reply = fronts[1].create(
        "layered",
        &sh_runtime("printf '\"%s\"' \"$(cat /opt/word)\" > /tmp/response"),
        json!({ "Layers": [layer] }),
    );
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(invoke_once_shown(&fronts[2], "layered"), "\"layered\"");

    // An account made through one front end signs on another.
    let (_, tenant) = fronts[1].create_account("tenant");
    let reply = fronts[2].create_as(&tenant, "mine", &sh_runtime("echo '\"mine\"' > /tmp/response"));
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert!(eventually(SHOWS_WITHIN, || fronts[0].invoke_as(&tenant, "mine", "{}").text().trim() == "\"mine\""));
    assert_eq!(fronts[0].invoke("mine", "{}").status, 404, "another account's function is not the administrator's");

    // A delete through one front end goes from every other.
    assert_eq!(fronts[1].lambda("DELETE", "/2015-03-31/functions/hello", b"").status, 204);
    assert!(eventually(SHOWS_WITHIN, || fronts[0].lambda("GET", "/2015-03-31/functions/hello", b"").status == 404));
    assert_eq!(fronts[2].invoke("hello", "{}").status, 404);
}

#[test]
fn one_etcd_member_of_three_lost_changes_nothing_and_without_quorum_only_writes_fail() {
    let mut etcd = EtcdCluster::start(3);
    let shared = Shared::new();
    let fronts: Vec<Server> = (0..2).map(|_| front_end(&etcd.endpoints_flag(), &shared)).collect();
    echo_function(&fronts[0], "before", "before");
    assert_eq!(invoke_once_shown(&fronts[1], "before"), "\"before\"");

    // One member killed while invokes go on through both front ends: every one succeeds.
    let killed = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let load: Vec<_> = fronts
            .iter()
            .map(|front| {
                let killed = &killed;
                scope.spawn(move || {
                    let mut replies = 0;
                    while !killed.load(std::sync::atomic::Ordering::Acquire) || replies < 50 {
                        let reply = front.invoke("before", "{}");
                        assert_eq!(reply.status, 200, "an invoke while an etcd member dies: {}", reply.text());
                        replies += 1;
                    }
                })
            })
            .collect();
        // Stays end-to-end, on real time: the member dies under real requests.
        std::thread::sleep(Duration::from_millis(200));
        etcd.kill(0);
        killed.store(true, std::sync::atomic::Ordering::Release);
        for thread in load {
            thread.join().unwrap();
        }
    });
    echo_function(&fronts[1], "after", "after");
    assert_eq!(invoke_once_shown(&fronts[0], "after"), "\"after\"");
    // Each front end has run each function: they are warm everywhere.
    for front in &fronts {
        for name in ["before", "after"] {
            assert_eq!(front.invoke(name, "{}").status, 200);
        }
    }

    etcd.kill(1);
    let reply = fronts[0].create("refused", &sh_runtime("true"), json!({}));
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert_eq!(reply.error_type(), "ServiceException");
    assert!(reply.text().contains("etcd"), "the error names what failed: {}", reply.text());
    for front in &fronts {
        for name in ["before", "after"] {
            let reply = front.invoke(name, "{}");
            assert_eq!(reply.status, 200, "invokes of known functions go on without quorum: {}", reply.text());
        }
    }

    etcd.restart(1);
    assert!(
        eventually(SHOWS_WITHIN, || fronts[1].create("later", &sh_runtime("true"), json!({})).status == 201),
        "writes did not come back with quorum"
    );
    assert_eq!(invoke_once_shown(&fronts[0], "later"), "{}");
}

#[test]
fn a_reservation_holds_across_front_ends() {
    let etcd = EtcdCluster::start(1);
    let shared = Shared::new();
    let fronts: Vec<Server> = (0..3).map(|_| front_end(&etcd.endpoints_flag(), &shared)).collect();
    // Led by the second front end, which runs (and logs) its invocations.
    let one = name_led_by(&fronts.iter().collect::<Vec<_>>(), 1, "one");
    sleeper(&fronts[0], &one, 8, 20);
    let put = fronts[0].lambda("PUT", &format!("/2017-10-31/functions/{one}/concurrency"), br#"{"ReservedConcurrentExecutions": 1}"#);
    assert_eq!(put.status, 200, "{}", put.text());
    assert!(
        eventually(SHOWS_WITHIN, || fronts[2].lambda("GET", "/2016-08-19/account-settings", b"").json()["AccountLimit"]
            ["UnreservedConcurrentExecutions"]
            == 999),
        "the reservation counts on every front end"
    );
    invoke_once_shown(&fronts[1], &one);
    std::thread::scope(|scope| {
        // The one unit is in use through the second front end while the third is asked.
        let running = scope.spawn(|| fronts[1].invoke(&one, r#"{"sleep": true}"#));
        assert!(eventually(SHOWS_WITHIN, || started(&fronts[1], &one) >= 2), "the held invocation never started");
        assert_throttled(&fronts[2].invoke(&one, "{}"), "ReservedFunctionConcurrentInvocationLimitExceeded");
        assert_eq!(running.join().unwrap().status, 200);
    });
    // Its unit, spare on the second front end, goes to the third when asked.
    let reply = fronts[2].invoke(&one, "{}");
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// The 1,000-event crash test across front ends: events are sent to one front end, which is killed with
/// SIGKILL at a random moment under the load (while synchronous invokes through another go on); the rest go to
/// another. Every event that got its 202 runs: the dead
/// front end's are adopted by a live one. Each event's OnSuccess record goes to `sink`, reserved 0 until the end,
/// so the records wait durably as events of their own; then the sink runs them, wherever they are.
#[test]
fn a_killed_front_ends_accepted_events_run_on_the_others() {
    let etcd = EtcdCluster::start(1);
    let shared = Shared::new();
    let victim_data = tempfile::tempdir().unwrap();
    let fronts: Vec<Server> = (0..2).map(|_| front_end(&etcd.endpoints_flag(), &shared)).collect();
    let mut victim = front_end_in(Some(victim_data.path()), &etcd.endpoints_flag(), &shared, &[]);
    let sink = fronts[0].create("sink", &rust_example(), json!({ "Environment": { "Variables": { "PRINT_EVENT": "1" } } }));
    assert_eq!(sink.status, 201, "{}", sink.text());
    let sink = sink.json()["FunctionArn"].as_str().unwrap().to_string();
    let put = fronts[0].lambda("PUT", "/2017-10-31/functions/sink/concurrency", br#"{"ReservedConcurrentExecutions": 0}"#);
    assert_eq!(put.status, 200, "{}", put.text());
    assert_eq!(fronts[0].create("work", &rust_example(), json!({})).status, 201);
    let config = json!({ "DestinationConfig": { "OnSuccess": { "Destination": sink } } }).to_string();
    let reply = fronts[0].lambda("PUT", "/2019-09-25/functions/work/event-invoke-config", config.as_bytes());
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(eventually(SHOWS_WITHIN, || victim.lambda("GET", "/2019-09-25/functions/work/event-invoke-config", b"").status == 200));

    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64;
    let next = std::sync::atomic::AtomicU32::new(0);
    let send = |server: &Server| send_numbered(server, "work", &next, 1000);
    let pid = victim.pid() as i32;
    let killed = std::sync::atomic::AtomicBool::new(false);
    let mut accepted: std::collections::BTreeSet<u32> = std::thread::scope(|scope| {
        let senders: Vec<_> = (0..4).map(|_| scope.spawn(|| send(&victim))).collect();
        // Synchronous invokes through a live front end go on, before, during and after the kill.
        let invoker = scope.spawn(|| {
            let mut replies = 0;
            while !killed.load(std::sync::atomic::Ordering::Acquire) || replies < 20 {
                let reply = fronts[0].invoke("work", r#"{"name": "sync"}"#);
                assert_eq!(reply.status, 200, "a synchronous invoke through a live front end: {}", reply.text());
                replies += 1;
            }
        });
        // Stays end-to-end, on real time: SIGKILL lands at a random moment of a real front end's commits.
        std::thread::sleep(Duration::from_millis(200 + seed % 400));
        // SAFETY: signals the front end process this test started and has not reaped yet.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        killed.store(true, std::sync::atomic::Ordering::Release);
        invoker.join().unwrap();
        senders.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    victim.kill();
    let on_victim = accepted.len();
    accepted.extend(send(&fronts[1]));
    assert!(on_victim > 0 && accepted.len() >= 1000 - 4, "accepted {} ({on_victim} by the killed one)", accepted.len());

    assert_eq!(fronts[1].lambda("DELETE", "/2017-10-31/functions/sink/concurrency", b"").status, 204);
    let delivered = || -> std::collections::BTreeSet<u32> {
        fronts
            .iter()
            .flat_map(|front| front.log_events("sink"))
            .filter_map(|e| Some(e["message"].as_str()?.strip_prefix("event ")?.to_string()))
            .filter_map(|m| serde_json::from_str::<serde_json::Value>(m.trim()).ok()?["requestPayload"]["name"].as_str()?.parse().ok())
            .collect()
    };
    // Each look reads every record, so look once a second.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !delivered().is_superset(&accepted) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
    }
    let missing: Vec<u32> = accepted.difference(&delivered()).copied().collect();
    assert!(missing.is_empty(), "{} accepted events never ran (seed {seed}): {missing:?}", missing.len());
    // Started again on its data directory, the killed front end leaves nothing of its sandboxes behind.
    let mut again = front_end_in(Some(victim_data.path()), &etcd.endpoints_flag(), &shared, &[]);
    again.stop();
}

/// Sandboxes of this front end's local worker.
fn local_sandboxes(server: &Server) -> u64 {
    server.workers().iter().filter(|w| w["Local"] == true).map(|w| w["Sandboxes"].as_u64().unwrap()).sum()
}

#[test]
fn a_function_changed_or_deleted_through_one_front_end_retires_its_sandboxes_on_the_others() {
    let etcd = EtcdCluster::start(1);
    let shared = Shared::new();
    let fronts: Vec<Server> = (0..2).map(|_| front_end(&etcd.endpoints_flag(), &shared)).collect();
    // Functions whose partition the second front end leads: their sandboxes are there.
    let both: Vec<&Server> = fronts.iter().collect();
    let changed = name_led_by(&both, 1, "changed");
    echo_function(&fronts[0], &changed, "one");
    assert_eq!(invoke_once_shown(&fronts[1], &changed), "\"one\"");
    assert_eq!(local_sandboxes(&fronts[1]), 1, "warm on the second front end");
    let path = format!("/2015-03-31/functions/{changed}/configuration");
    let update = fronts[0].lambda("PUT", &path, br#"{"Description": "new"}"#);
    assert_eq!(update.status, 200, "{}", update.text());
    assert!(eventually(SHOWS_WITHIN, || local_sandboxes(&fronts[1]) == 0), "the old revision's sandbox stayed");

    let deleted = name_led_by(&both, 1, "deleted");
    echo_function(&fronts[0], &deleted, "two");
    assert_eq!(invoke_once_shown(&fronts[1], &deleted), "\"two\"");
    assert_eq!(local_sandboxes(&fronts[1]), 1);
    assert_eq!(fronts[0].lambda("DELETE", &format!("/2015-03-31/functions/{deleted}"), b"").status, 204);
    assert!(eventually(SHOWS_WITHIN, || local_sandboxes(&fronts[1]) == 0), "the deleted function's sandbox stayed");
}

/// Cluster flags that do not go together are refused, each with a message that names what is missing.
#[test]
fn the_server_refuses_cluster_flags_that_do_not_go_together() {
    let etcd = EtcdCluster::start(1);
    let shared = Shared::new();
    let data = tempfile::tempdir().unwrap();
    let key = shared.path().join("master.key");
    let objects = format!("file://{}", shared.path().join("objects").display());
    let refusal = |args: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ignis"));
        command.arg("server").arg("--data-dir").arg(data.path()).args(args);
        let output = command.output().unwrap();
        assert!(!output.status.success(), "{args:?} was accepted");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let endpoints = etcd.endpoints_flag();
    let refused = refusal(&["--etcd", &endpoints, "--object-store", &objects]);
    assert!(refused.contains("--etcd needs --master-key-file"), "{refused}");
    let refused = refusal(&["--advertise", "127.0.0.1:9000"]);
    assert!(refused.contains("--advertise is the address of a cluster's front end: it needs --etcd"), "{refused}");
    let every = ["--listen", "0.0.0.0:0", "--etcd", &endpoints, "--object-store", &objects];
    let refused = refusal(&[&every[..], &["--master-key-file", key.to_str().unwrap()]].concat());
    assert!(refused.contains("is every address: give --advertise HOST:PORT"), "{refused}");
}

/// The address of the front end leading the partition of `function`, as `server` sees it.
fn partition_leader(server: &Server, function: &str) -> Option<String> {
    partition(server, function).0
}

/// The leader of the partition of `function` as `server` sees it, and whether it is the one that should lead it.
fn partition(server: &Server, function: &str) -> (Option<String>, bool) {
    let reply = server.signed("ignis", "GET", "/ignis/partitions", &format!("Function={function}"), &[], b"");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let answer = reply.json();
    (answer["Leader"].as_str().map(str::to_string), answer["Settled"] == true)
}

/// The address of the front end leading the partition of `function`, once every front end of `fronts` sees the
/// one that should lead it leading it.
fn settled_leader(fronts: &[&Server], function: &str) -> String {
    let settled = || {
        let first = partition(fronts[0], function);
        first.1 && fronts.iter().all(|f| partition(f, function) == first)
    };
    assert!(eventually(SHOWS_WITHIN, settled), "the front ends never agreed on the leader of {function}");
    partition_leader(fronts[0], function).unwrap()
}

/// A function name (`prefix-N`) whose partition `fronts[at]` leads.
fn name_led_by(fronts: &[&Server], at: usize, prefix: &str) -> String {
    let name = (0..64).map(|i| format!("{prefix}-{i}")).find(|name| settled_leader(fronts, name) == fronts[at].address);
    name.unwrap_or_else(|| panic!("{} leads none of 64 names", fronts[at].address))
}

/// A function's invocations run on the front end leading its partition, whichever front end they arrive at: it is
/// warm once for the whole cluster. The leader killed, invocations through the others go on (run where they
/// arrive until another front end takes the partition), and another takes it.
#[test]
fn a_function_runs_on_the_leader_of_its_partition_and_the_partition_moves_when_the_leader_dies() {
    let etcd = EtcdCluster::start(1);
    let shared = Shared::new();
    let mut fronts: Vec<Server> = (0..3).map(|_| front_end(&etcd.endpoints_flag(), &shared)).collect();
    echo_function(&fronts[0], "led", "one");
    let leader = settled_leader(&fronts.iter().collect::<Vec<_>>(), "led");
    let at = fronts.iter().position(|f| f.address == leader).expect("a front end of the cluster leads it");

    // Through the leader first (so that it knows the function), then through the others: one sandbox in all.
    assert_eq!(invoke_once_shown(&fronts[at], "led"), "\"one\"");
    for front in &fronts {
        assert_eq!(invoke_once_shown(front, "led"), "\"one\"");
    }
    let sandboxes: Vec<u64> = fronts.iter().map(local_sandboxes).collect();
    assert_eq!((sandboxes.iter().sum::<u64>(), sandboxes[at]), (1, 1), "{sandboxes:?}");

    // The leader killed: every invocation through the others succeeds while another front end takes the partition.
    fronts[at].kill();
    let survivors: Vec<&Server> = fronts.iter().enumerate().filter(|(i, _)| *i != at).map(|(_, f)| f).collect();
    let moved = || {
        for front in &survivors {
            assert_eq!(front.invoke("led", "{}").text().trim(), "\"one\"");
        }
        let new = partition_leader(survivors[0], "led");
        new.is_some() && new != Some(leader.clone()) && survivors.iter().all(|f| partition_leader(f, "led") == new)
    };
    assert!(eventually(SHOWS_WITHIN, moved), "the partition never moved");
    let new = partition_leader(survivors[0], "led").unwrap();
    assert!(survivors.iter().any(|f| f.address == new), "{new} leads it");
}

/// The workers `server` lists: (address, healthy, memory it places on, sandboxes), by address.
fn listed_workers(server: &Server) -> Vec<(String, bool, u64, u64)> {
    let mut listed: Vec<_> = server
        .workers()
        .iter()
        .map(|w| {
            let address = w["Address"].as_str().unwrap().to_string();
            (address, w["Healthy"] == true, w["MemoryMb"].as_u64().unwrap(), w["Sandboxes"].as_u64().unwrap())
        })
        .collect();
    listed.sort();
    listed
}

/// Worker hosts join through any front end, are members in etcd under leases of their own, and each front end
/// places on its share of them. A worker killed is forgotten by every front end when its lease expires; a worker
/// whose front end is killed goes on through another, as the same member.
#[test]
fn worker_hosts_are_members_in_etcd_shared_by_the_front_ends() {
    let etcd = EtcdCluster::start(1);
    let shared = Shared::new();
    let mut fronts: Vec<Server> =
        (0..2).map(|_| front_end_in(None, &etcd.endpoints_flag(), &shared, &["--no-local-worker"])).collect();
    let mut first = WorkerHost::joining(&[&fronts[0], &fronts[1]], &["--memory", "1024"]);
    let second = WorkerHost::joining(&[&fronts[1], &fronts[0]], &["--memory", "1024"]);
    for front in &fronts {
        front.wait_for_workers(2);
    }
    // Two front ends: each places on half of each worker's memory.
    let listed = listed_workers(&fronts[0]);
    assert_eq!(listed.iter().map(|w| (w.1, w.2)).collect::<Vec<_>>(), vec![(true, 512), (true, 512)], "{listed:?}");
    let ids = |front: &Server| -> Vec<u64> {
        let mut ids: Vec<u64> = front.workers().iter().map(|w| w["WorkerId"].as_u64().unwrap()).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&fronts[0]), ids(&fronts[1]), "one membership, one id per worker");

    echo_function(&fronts[0], "hello", "hi");
    assert_eq!(invoke_once_shown(&fronts[1], "hello"), "\"hi\"");
    assert_eq!(fronts[0].invoke("hello", "{}").text().trim(), "\"hi\"");

    // A worker killed: its lease expires, and every front end forgets it and its sandboxes.
    let victim = first.address.clone();
    first.kill9();
    for front in &fronts {
        let gone = || listed_workers(front).iter().any(|w| w.0 == victim && !w.1 && w.3 == 0);
        assert!(eventually(SHOWS_WITHIN, gone), "the killed worker is still listed: {:?}", listed_workers(front));
    }
    for front in &fronts {
        assert_eq!(front.invoke("hello", "{}").text().trim(), "\"hi\"", "run on the survivor");
    }

    // Each front end has a sandbox on the survivor: one of a function whose partition it leads.
    let both: Vec<&Server> = fronts.iter().collect();
    let names = [name_led_by(&both, 0, "whoami"), name_led_by(&both, 1, "whoami")];
    for name in &names {
        assert_eq!(fronts[0].create(name, &whoami(0), json!({})).status, 201);
    }
    let sandbox = sandbox_of;
    let (kept, orphan) = (sandbox(&fronts[0], &names[0]), sandbox(&fronts[1], &names[1]));
    assert!(cgroup_left(&kept) && cgroup_left(&orphan) && kept != orphan);

    // The front end the survivor heartbeats through is killed: the survivor goes on through the other, as the
    // same member, which now places on all of its memory, and takes the dead front end's sandbox there over with
    // its partition.
    let survivor_id = |front: &Server| {
        front.workers().iter().find(|w| w["Address"] == second.address.as_str()).map(|w| w["WorkerId"].clone())
    };
    let before = survivor_id(&fronts[0]);
    let owner_of = |id: &str| listed_on(&second, id).map(|s| s["Owner"]["FrontEnd"].clone());
    let dead = owner_of(&orphan);
    fronts[1].kill();
    let whole = || listed_workers(&fronts[0]).iter().any(|w| w.0 == second.address && w.1 && w.2 == 1024);
    assert!(eventually(SHOWS_WITHIN, whole), "{:?}", listed_workers(&fronts[0]));
    assert_eq!(survivor_id(&fronts[0]), before, "the same member");
    assert!(eventually(SHOWS_WITHIN, || owner_of(&orphan).is_some_and(|owner| Some(owner) != dead)), "{:?}", second.sandboxes());
    assert!(cgroup_left(&kept) && cgroup_left(&orphan));
    assert_eq!(sandbox(&fronts[0], &names[0]), kept, "warm");
    assert_eq!(sandbox(&fronts[0], &names[1]), orphan, "warm, taken over");
}

/// The sandbox `id` (as its log stream names it) as `host` lists it.
fn listed_on(host: &WorkerHost, id: &str) -> Option<serde_json::Value> {
    host.sandboxes().into_iter().find(|s| s["SandboxId"].as_str().is_some_and(|listed| listed.ends_with(&format!("-{id}"))))
}

/// A function answering the log stream of the sandbox that ran it; with "sleep" in the event, after `sleep_s`.
fn whoami(sleep_s: u32) -> Vec<u8> {
    sh_runtime(&format!(r#"grep -q sleep /tmp/event && sleep {sleep_s}; echo "\"$AWS_LAMBDA_LOG_STREAM_NAME\"" > /tmp/response"#))
}

/// The sandbox that runs an invocation of `name` (a [`whoami`]) through `front`, once `front` knows it: its id as
/// its log stream names it (`2026/12/07/[$LATEST]<id>`).
fn sandbox_of(front: &Server, name: &str) -> String {
    invoke_once_shown(front, name).replace('"', "").rsplit(']').next().unwrap().to_string()
}

/// Two front ends without local workers, and a worker host of 2048 MB joined through both, known to both.
fn front_ends_on_a_host(etcd: &EtcdCluster, shared: &Shared) -> (Vec<Server>, WorkerHost) {
    let fronts: Vec<Server> =
        (0..2).map(|_| front_end_in(None, &etcd.endpoints_flag(), shared, &["--no-local-worker"])).collect();
    let host = WorkerHost::joining(&[&fronts[0], &fronts[1]], &["--memory", "2048"]);
    for front in &fronts {
        front.wait_for_workers(1);
    }
    (fronts, host)
}

/// A partition's leader killed, the front end that takes the partition over takes the dead one's idle sandboxes on
/// the worker hosts over too: its functions' next invocations are warm, on the same sandboxes, provisioned ones
/// included. One that ran an invocation as its front end died is not taken over, and its host ends it. Every
/// sandbox the host runs is then in the survivor's table.
#[test]
fn a_new_partition_leader_takes_the_dead_leaders_sandboxes_over() {
    let etcd = EtcdCluster::start(1);
    let shared = Shared::new();
    let (mut fronts, host) = front_ends_on_a_host(&etcd, &shared);
    let both: Vec<&Server> = fronts.iter().collect();
    let whoami = whoami(100);
    let (idle, busy, kept) = (name_led_by(&both, 1, "idle"), name_led_by(&both, 1, "busy"), name_led_by(&both, 1, "kept"));
    for name in [&idle, &busy, &kept] {
        let reply = fronts[0].create(name, &whoami, json!({ "Timeout": 300 }));
        assert_eq!(reply.status, 201, "{}", reply.text());
    }
    let sandbox = sandbox_of;
    let (idle_sandbox, busy_sandbox) = (sandbox(&fronts[1], &idle), sandbox(&fronts[1], &busy));
    // A provisioned sandbox, kept by the leader.
    let published = fronts[0].lambda("POST", &format!("/2015-03-31/functions/{kept}/versions"), b"{}");
    assert_eq!(published.status, 201, "{}", published.text());
    let path = format!("/2019-09-30/functions/{kept}/provisioned-concurrency");
    let body = json!({ "ProvisionedConcurrentExecutions": 1 }).to_string();
    assert_eq!(fronts[0].signed("lambda", "PUT", &path, "Qualifier=1", &[], body.as_bytes()).status, 202);
    let status = |front: &Server| front.signed("lambda", "GET", &path, "Qualifier=1", &[], b"").json();
    let ready = |front: &Server| status(front)["Status"] == "READY" && status(front)["AllocatedProvisionedConcurrentExecutions"] == 1;
    assert!(eventually(SHOWS_WITHIN, || ready(&fronts[1])), "{}", status(&fronts[1]));
    let qualified = format!("{kept}:1");
    let kept_sandbox = sandbox(&fronts[1], &qualified);
    let owner_of = |id: &str| listed_on(&host, id).map(|s| s["Owner"]["FrontEnd"].clone());
    let dead = owner_of(&idle_sandbox).expect("listed");
    assert_eq!(owner_of(&kept_sandbox), Some(dead.clone()));

    // An invocation runs on `busy`'s sandbox as its front end is killed.
    let leader = Server::at(&fronts[1].address);
    std::thread::scope(|scope| {
        let caller = scope.spawn(|| leader.try_signed("lambda", "POST", &format!("/2015-03-31/functions/{busy}/invocations"), "", &[], b"\"sleep\""));
        let running = || listed_on(&host, &busy_sandbox).is_some_and(|s| s["Busy"] == true);
        assert!(eventually(SHOWS_WITHIN, running), "the invocation never ran: {:?}", host.sandboxes());
        fronts[1].kill();
        assert!(caller.join().unwrap().is_err(), "the killed front end answered");
    });

    // The survivor takes the idle and provisioned sandboxes over; the busy one ends.
    let taken = || [&idle_sandbox, &kept_sandbox].iter().all(|id| owner_of(id).is_some_and(|owner| owner != dead));
    assert!(eventually(SHOWS_WITHIN, taken), "not taken over: {:?}", host.sandboxes());
    assert_eq!(sandbox(&fronts[0], &idle), idle_sandbox, "warm, on the same sandbox");
    assert!(eventually(SHOWS_WITHIN, || ready(&fronts[0])), "{}", status(&fronts[0]));
    assert!(eventually(SHOWS_WITHIN, || !cgroup_left(&busy_sandbox)), "the busy sandbox of the dead front end ran on");
    let fresh = sandbox(&fronts[0], &busy);
    assert_ne!(fresh, busy_sandbox);
    // Nothing on the host that the survivor does not count, nor the other way round.
    let listed = host.sandboxes();
    assert!(listed_on(&host, &idle_sandbox).is_some() && listed_on(&host, &fresh).is_some(), "{listed:?}");
    assert!(listed_on(&host, &busy_sandbox).is_none(), "{listed:?}");
    assert!(listed.iter().all(|s| s["Owner"]["FrontEnd"] != dead), "{listed:?}");
    assert_eq!(listed_workers(&fronts[0]).iter().map(|w| w.3 as usize).sum::<usize>(), listed.len());
}

/// Two front ends whose object store is an S3 bucket (a Garage this test starts): code made through one runs
/// through the other, fetched from the bucket.
#[test]
fn front_ends_share_code_through_an_s3_object_store() {
    let etcd = EtcdCluster::start(1);
    let shared = Shared::new();
    let garage = ignis_chunks::garage::Garage::start().unwrap();
    let store = format!("s3://{}/cluster", garage.bucket);
    let key = shared.path().join("master.key");
    let args = [
        "--etcd",
        &etcd.endpoints_flag(),
        "--object-store",
        &store,
        "--s3-endpoint",
        &garage.endpoint,
        "--s3-region",
        ignis_chunks::garage::REGION,
        "--master-key-file",
        key.to_str().unwrap(),
        "--sandbox-pool",
        "0",
    ];
    let env = [("AWS_ACCESS_KEY_ID", garage.access_key_id.as_str()), ("AWS_SECRET_ACCESS_KEY", garage.secret_access_key.as_str())];
    let fronts: Vec<Server> = (0..2).map(|_| Server::start_with_env(&args, &env)).collect();
    echo_function(&fronts[0], "in-s3", "from the bucket");
    assert_eq!(invoke_once_shown(&fronts[1], "in-s3"), "\"from the bucket\"");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let objects = runtime.block_on(garage.object_names("cluster")).unwrap();
    assert!(!objects.is_empty() && objects.iter().all(|o| o.starts_with("cluster/")), "{objects:?}");
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Whether `server` serves the cluster's queues now.
fn serves_queues(server: &Server) -> bool {
    let reply = server.signed("ignis", "GET", "/ignis/queue-home", "", &[], b"");
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["ServedHere"] == true
}

/// `n` front ends on `etcd`, once one of them serves the queues: them, and which one it is.
fn front_ends_serving_queues(etcd: &EtcdCluster, shared: &Shared, n: usize) -> (Vec<Server>, usize) {
    let fronts: Vec<Server> = (0..n).map(|_| front_end(&etcd.endpoints_flag(), shared)).collect();
    assert!(eventually(SHOWS_WITHIN, || fronts.iter().filter(|f| serves_queues(f)).count() == 1), "one front end serves the queues");
    let serving = fronts.iter().position(serves_queues).unwrap();
    (fronts, serving)
}

/// A mapping (batch size 1) from the queue at `queue_url` to `function`, made through `front` once it knows the
/// function: its UUID.
fn map_queue(front: &Server, queue_url: &str, function: &str) -> String {
    let arn = sqs_ok(front, "GetQueueAttributes", json!({ "QueueUrl": queue_url, "AttributeNames": ["QueueArn"] }));
    let request = json!({ "EventSourceArn": arn["Attributes"]["QueueArn"], "FunctionName": function, "BatchSize": 1 }).to_string();
    assert!(eventually(SHOWS_WITHIN, || front.lambda("GET", &format!("/2015-03-31/functions/{function}"), b"").status == 200));
    let created = front.lambda("POST", "/2015-03-31/event-source-mappings/", request.as_bytes());
    assert_eq!(created.status, 202, "{}", created.text());
    created.json()["UUID"].as_str().unwrap().to_string()
}

/// An SQS call through `server` that must succeed, tried again while no front end serves the queues (503, as the
/// SDKs retry it); its answer.
fn sqs_ok(server: &Server, action: &str, body: serde_json::Value) -> serde_json::Value {
    let mut last = None;
    let served = eventually(SHOWS_WITHIN, || {
        let reply = crate::sqs::call(server, action, body.clone());
        let done = reply.status != 503;
        last = Some(reply);
        done
    });
    let reply = last.unwrap();
    assert!(served && reply.status == 200, "{action}: {} {}", reply.status, reply.text());
    reply.json()
}

/// The bodies of the messages of `queue_url` received through `server` until `want` are in, each deleted.
fn drain(server: &Server, queue_url: &str, want: usize) -> std::collections::BTreeSet<String> {
    let mut seen = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + SHOWS_WITHIN;
    while seen.len() < want && std::time::Instant::now() < deadline {
        let got = sqs_ok(server, "ReceiveMessage", json!({ "QueueUrl": queue_url, "MaxNumberOfMessages": 10, "WaitTimeSeconds": 1 }));
        for message in got["Messages"].as_array().into_iter().flatten() {
            seen.insert(message["Body"].as_str().unwrap().to_string());
            let handle = message["ReceiptHandle"].as_str().unwrap();
            sqs_ok(server, "DeleteMessage", json!({ "QueueUrl": queue_url, "ReceiptHandle": handle }));
        }
    }
    seen
}

/// The SQS events `sink` printed on any of `fronts`: their bodies.
fn mapped_bodies(fronts: &[&Server]) -> std::collections::BTreeSet<String> {
    fronts.iter().flat_map(|front| printed_bodies(front, "sink")).collect()
}

/// The bodies of the SQS events `function` printed, read through `front`.
fn printed_bodies(front: &Server, function: &str) -> std::collections::BTreeSet<String> {
    front
        .log_events(function)
        .into_iter()
        .filter_map(|e| Some(e["message"].as_str()?.strip_prefix("event ")?.to_string()))
        .filter_map(|m| serde_json::from_str::<serde_json::Value>(m.trim()).ok())
        .flat_map(|event| event["Records"].as_array().cloned().unwrap_or_default())
        .filter_map(|record| Some(record["body"].as_str()?.to_string()))
        .collect()
}

#[test]
fn queues_and_mappings_are_served_by_one_front_end_and_outlive_it() {
    let etcd = EtcdCluster::start(1);
    let shared = Shared::new();
    let (mut fronts, serving) = front_ends_serving_queues(&etcd, &shared, 3);

    // A queue made through one front end is used through every other.
    let url = sqs_ok(&fronts[1], "CreateQueue", json!({ "QueueName": "jobs" }))["QueueUrl"].as_str().unwrap().to_string();
    for (i, front) in fronts.iter().enumerate() {
        let listed = sqs_ok(front, "ListQueues", json!({}));
        assert_eq!(listed["QueueUrls"].as_array().map(Vec::len), Some(1), "through front end {i}: {listed}");
    }
    let bodies: std::collections::BTreeSet<String> = (0..30).map(|i| format!("job-{i}")).collect();
    for (i, body) in bodies.iter().enumerate() {
        sqs_ok(&fronts[i % 3], "SendMessage", json!({ "QueueUrl": url, "MessageBody": body }));
    }
    let attributes = sqs_ok(&fronts[2], "GetQueueAttributes", json!({ "QueueUrl": url, "AttributeNames": ["All"] }));
    assert_eq!(attributes["Attributes"]["ApproximateNumberOfMessages"], "30", "{attributes}");
    // Some are in flight (for a long while) when the front end serving them dies.
    let in_flight = sqs_ok(&fronts[0], "ReceiveMessage", json!({ "QueueUrl": url, "MaxNumberOfMessages": 10, "VisibilityTimeout": 600 }));
    assert!(!in_flight["Messages"].as_array().unwrap().is_empty());

    // A mapping made through one front end runs wherever the queues are served.
    let sink = fronts[0].create("sink", &rust_example(), json!({ "Environment": { "Variables": { "PRINT_EVENT": "1" } } }));
    assert_eq!(sink.status, 201, "{}", sink.text());
    let mapped = sqs_ok(&fronts[0], "CreateQueue", json!({ "QueueName": "mapped" }))["QueueUrl"].as_str().unwrap().to_string();
    map_queue(&fronts[2], &mapped, "sink");
    sqs_ok(&fronts[1], "SendMessage", json!({ "QueueUrl": mapped, "MessageBody": "before" }));
    assert!(eventually(SHOWS_WITHIN, || mapped_bodies(&fronts.iter().collect::<Vec<_>>()).contains("before")));

    // An asynchronous invocation accepted by a front end that does not serve the queues sends its record there.
    let other = &fronts[(serving + 1) % 3];
    let done = sqs_ok(other, "CreateQueue", json!({ "QueueName": "done" }))["QueueUrl"].as_str().unwrap().to_string();
    let done_arn = sqs_ok(other, "GetQueueAttributes", json!({ "QueueUrl": done, "AttributeNames": ["QueueArn"] }));
    let done_arn = done_arn["Attributes"]["QueueArn"].as_str().unwrap().to_string();
    let config = json!({ "DestinationConfig": { "OnSuccess": { "Destination": done_arn } } }).to_string();
    let reply = other.lambda("PUT", "/2019-09-25/functions/sink/event-invoke-config", config.as_bytes());
    assert_eq!(reply.status, 200, "{}", reply.text());
    let accepted = other.try_event("sink", r#"{"to": "done"}"#).unwrap();
    assert_eq!(accepted.status, 202, "{}", accepted.text());
    let record = drain(&fronts[serving], &done, 1);
    assert!(record.iter().any(|r| r.contains(r#""to":"done""#)), "{record:?}");

    // The front end serving the queues dies: another takes them over, nothing accepted is lost.
    fronts.remove(serving).kill();
    assert!(eventually(SHOWS_WITHIN, || fronts.iter().filter(|f| serves_queues(f)).count() == 1), "a survivor serves the queues");
    // Messages that were in flight are visible again at once.
    assert_eq!(drain(&fronts[1], &url, bodies.len()), bodies);
    sqs_ok(&fronts[0], "SendMessage", json!({ "QueueUrl": mapped, "MessageBody": "after" }));
    let survivors: Vec<&Server> = fronts.iter().collect();
    let ran = eventually(SHOWS_WITHIN, || mapped_bodies(&survivors).contains("after"));
    let depth = sqs_ok(&fronts[1], "GetQueueAttributes", json!({ "QueueUrl": mapped, "AttributeNames": ["All"] }));
    let state = fronts[1].lambda("GET", "/2015-03-31/event-source-mappings/", b"").text();
    assert!(ran, "the mapping's pollers run on the survivor: ran {:?}; queue {depth}; mapping {state}", mapped_bodies(&survivors));
    let listed = fronts[1].lambda("GET", "/2015-03-31/event-source-mappings/", b"");
    assert_eq!(listed.json()["EventSourceMappings"].as_array().map(Vec::len), Some(1), "{}", listed.text());
}

/// The UUIDs of the event source mappings whose pollers run on `server`.
fn polling(server: &Server) -> Vec<String> {
    let reply = server.signed("ignis", "GET", "/ignis/queue-home", "", &[], b"");
    assert_eq!(reply.status, 200, "{}", reply.text());
    serde_json::from_value(reply.json()["Polling"].clone()).unwrap()
}

/// A mapping's `State` as `server` shows it.
fn mapping_state(server: &Server, uuid: &str) -> String {
    let reply = server.lambda("GET", &format!("/2015-03-31/event-source-mappings/{uuid}"), b"");
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["State"].as_str().unwrap().to_string()
}

/// Each mapping's pollers run on the front end leading its function's partition (the batches they invoke run there
/// without a hop) and reach the queues where they are served. A front end killed, its mappings' pollers move with
/// its partitions; a mapping disabled, its pollers end wherever they run.
#[test]
fn mappings_are_polled_by_their_functions_partition_leaders_and_move_when_one_dies() {
    let etcd = EtcdCluster::start(1);
    let shared = Shared::new();
    let (mut fronts, serving) = front_ends_serving_queues(&etcd, &shared, 3);
    // One function led by each front end, each with a queue and a mapping, made through another front end.
    let all: Vec<&Server> = fronts.iter().collect();
    let mut mapped = Vec::new();
    for at in 0..3 {
        let name = name_led_by(&all, at, "sink");
        let made = fronts[0].create(&name, &rust_example(), json!({ "Environment": { "Variables": { "PRINT_EVENT": "1" } } }));
        assert_eq!(made.status, 201, "{}", made.text());
        let url = sqs_ok(&fronts[1], "CreateQueue", json!({ "QueueName": format!("q-{at}") }))["QueueUrl"].as_str().unwrap().to_string();
        let uuid = map_queue(&fronts[(at + 1) % 3], &url, &name);
        mapped.push((name, url, uuid));
    }
    let placed = || (0..3).all(|at| polling(&fronts[at]) == [mapped[at].2.clone()]);
    assert!(eventually(SHOWS_WITHIN, placed), "each front end polls its own function's mapping: {:?}", fronts.iter().map(polling).collect::<Vec<_>>());
    for (name, url, uuid) in &mapped {
        for front in &fronts {
            assert!(eventually(SHOWS_WITHIN, || mapping_state(front, uuid) == "Enabled"), "{uuid} through {}", front.address);
        }
        sqs_ok(&fronts[2], "SendMessage", json!({ "QueueUrl": url, "MessageBody": format!("{name}-before") }));
    }
    for (name, _, _) in &mapped {
        assert!(eventually(SHOWS_WITHIN, || printed_bodies(&fronts[0], name).contains(&format!("{name}-before"))), "{name}");
    }

    // A front end that does not serve the queues is killed: its mapping is polled by its function's new leader.
    let at = (serving + 1) % 3;
    let (name, url, uuid) = mapped[at].clone();
    fronts.remove(at).kill();
    sqs_ok(&fronts[0], "SendMessage", json!({ "QueueUrl": url, "MessageBody": format!("{name}-after") }));
    let heir = || {
        let leader = partition_leader(&fronts[0], &name)?;
        fronts.iter().find(|f| f.address == leader && partition_leader(f, &name).as_ref() == Some(&leader))
    };
    assert!(eventually(SHOWS_WITHIN, || heir().is_some()), "a survivor leads {name}");
    assert!(eventually(SHOWS_WITHIN, || polling(heir().unwrap()).contains(&uuid)), "the new leader polls the mapping");
    assert!(eventually(SHOWS_WITHIN, || printed_bodies(&fronts[0], &name).contains(&format!("{name}-after"))));
    assert_eq!(fronts.iter().filter(|f| polling(f).contains(&uuid)).count(), 1, "one front end polls it");

    // Disabled through either survivor, each mapping's pollers end where they ran, and it shows `Disabled`.
    for (i, (_, _, uuid)) in mapped.iter().enumerate() {
        let through = &fronts[i % 2];
        let reply = through.lambda("PUT", &format!("/2015-03-31/event-source-mappings/{uuid}"), br#"{"Enabled": false}"#);
        assert_eq!(reply.status, 202, "{}", reply.text());
        for front in &fronts {
            assert!(eventually(SHOWS_WITHIN, || mapping_state(front, uuid) == "Disabled"), "{uuid} through {}", front.address);
        }
    }
    assert!(fronts.iter().all(|f| polling(f).is_empty()));
}

/// A batch in hand when the front end running its mapping's pollers is killed is not lost: it is visible again
/// after the queue's visibility timeout, and the function's new partition leader, which polls the mapping now, runs
/// it and deletes it.
#[test]
fn a_batch_in_hand_when_its_pollers_front_end_dies_runs_on_the_new_leader() {
    let etcd = EtcdCluster::start(1);
    let shared = Shared::new();
    let (mut fronts, serving) = front_ends_serving_queues(&etcd, &shared, 2);
    let other = 1 - serving;
    let all: Vec<&Server> = fronts.iter().collect();
    let name = name_led_by(&all, other, "slow");
    let made = fronts[serving].create(&name, &whoami(2), json!({ "Timeout": 4 }));
    assert_eq!(made.status, 201, "{}", made.text());
    let attributes = json!({ "QueueName": "slow-jobs", "Attributes": { "VisibilityTimeout": "5" } });
    let url = sqs_ok(&fronts[serving], "CreateQueue", attributes)["QueueUrl"].as_str().unwrap().to_string();
    let uuid = map_queue(&fronts[serving], &url, &name);
    assert!(eventually(SHOWS_WITHIN, || polling(&fronts[other]) == [uuid.clone()]), "the leader of {name} polls it");

    // The batch is in hand (its function sleeps) when the front end polling it is killed.
    sqs_ok(&fronts[serving], "SendMessage", json!({ "QueueUrl": url, "MessageBody": "sleep" }));
    let counts = |front: &Server| {
        let got = sqs_ok(front, "GetQueueAttributes", json!({ "QueueUrl": url, "AttributeNames": ["All"] }));
        let count = |name: &str| got["Attributes"][name].as_str().unwrap().parse::<u32>().unwrap();
        (count("ApproximateNumberOfMessages"), count("ApproximateNumberOfMessagesNotVisible"))
    };
    assert!(eventually(SHOWS_WITHIN, || counts(&fronts[serving]) == (0, 1)), "the poller took the message");
    fronts.remove(other).kill();

    // The survivor leads the function now, polls its mapping, and runs and deletes the batch.
    assert!(eventually(SHOWS_WITHIN, || polling(&fronts[0]) == [uuid.clone()]), "the survivor polls the mapping");
    assert!(eventually(SHOWS_WITHIN, || counts(&fronts[0]) == (0, 0)), "the batch ran and was deleted: {:?}", counts(&fronts[0]));
    let ran = fronts[0].log_events(&name);
    let reports = ran.iter().filter(|e| e["message"].as_str().is_some_and(|m| m.starts_with("REPORT"))).count();
    assert!(reports >= 1, "the survivor ran it: {ran:?}");
}

#[test]
fn queue_messages_accepted_while_the_front_end_serving_them_is_killed_are_all_kept() {
    let etcd = EtcdCluster::start(1);
    let shared = Shared::new();
    let (mut fronts, serving) = front_ends_serving_queues(&etcd, &shared, 3);
    let url = sqs_ok(&fronts[0], "CreateQueue", json!({ "QueueName": "load" }))["QueueUrl"].as_str().unwrap().to_string();
    let pid = fronts[serving].pid() as i32;

    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64;
    let next = std::sync::atomic::AtomicU32::new(0);
    // Each sender sends numbered messages through the front ends in turn until 1,000 are numbered, each message
    // through the next front end while one does not take it (as a client behind a load balancer would); what was
    // answered 200 was accepted.
    let send = |first: usize| {
        let mut accepted = Vec::new();
        let mut turn = first;
        loop {
            let n = next.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            if n >= 1000 {
                return accepted;
            }
            let body = json!({ "QueueUrl": url, "MessageBody": n.to_string() }).to_string();
            let headers = [("x-amz-target", "AmazonSQS.SendMessage"), ("content-type", "application/x-amz-json-1.0")];
            for _ in 0..3 {
                turn += 1;
                let reply = fronts[turn % 3].try_signed("sqs", "POST", "/", "", &headers, body.as_bytes());
                if reply.is_ok_and(|reply| reply.status == 200) {
                    accepted.push(n.to_string());
                    break;
                }
            }
        }
    };
    let accepted: std::collections::BTreeSet<String> = std::thread::scope(|scope| {
        let senders: Vec<_> = (0..4).map(|i| scope.spawn(move || send(i))).collect();
        // Stays end-to-end, on real time: SIGKILL lands at a random moment of a real front end's commits.
        std::thread::sleep(Duration::from_millis(200 + seed % 400));
        // SAFETY: signals the front end process this test started and has not reaped yet.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        senders.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let mut victim = fronts.remove(serving);
    victim.kill();
    assert!(accepted.len() > 900, "only {} of 1,000 accepted (seed {seed})", accepted.len());
    let kept = drain(&fronts[0], &url, accepted.len());
    let missing: Vec<&String> = accepted.difference(&kept).collect();
    assert!(missing.is_empty(), "{} accepted messages lost (seed {seed}): {missing:?}", missing.len());
}

/// An image function is created through, and runs on, a front end without its image (pushed through another):
/// it asks the other front ends to resolve the image and for the prepared image, and reads its chunks through the
/// one that has it. So does a worker host speaking to a front end without the image.
#[test]
fn an_image_function_is_made_through_and_runs_on_a_front_end_without_its_image() {
    let etcd = EtcdCluster::start(1);
    let shared = Shared::new();
    let fronts: Vec<Server> = (0..2).map(|_| front_end(&etcd.endpoints_flag(), &shared)).collect();
    image_runs_wherever_it_is_led(&fronts);
    // The sandbox started on the leader's local worker.
    assert_eq!(local_sandboxes(&fronts[1]), 1, "it ran on the leader");
    assert_eq!(local_sandboxes(&fronts[0]), 0);
}

#[test]
fn an_image_function_runs_on_a_worker_host_speaking_to_a_front_end_without_its_image() {
    let etcd = EtcdCluster::start(1);
    let shared = Shared::new();
    let fronts: Vec<Server> =
        (0..2).map(|_| front_end_in(None, &etcd.endpoints_flag(), &shared, &["--no-local-worker"])).collect();
    // It speaks to the second front end, which leads the function and lacks its image.
    let host = WorkerHost::joining(&[&fronts[1], &fronts[0]], &[]);
    assert!(eventually(SHOWS_WITHIN, || fronts.iter().all(|f| listed_workers(f).len() == 1)));
    image_runs_wherever_it_is_led(&fronts);
    drop(host);
}

/// An image pushed through `fronts[0]`, its function created through and led by `fronts[1]`, invoked through both.
fn image_runs_wherever_it_is_led(fronts: &[Server]) {
    let tmp = tempfile::tempdir().unwrap();
    let config = json!({ "Entrypoint": ["/var/task/bootstrap"], "WorkingDir": "/var/task" });
    crate::image_invoke::program_layout(&tmp.path().join("hello"), "v1", "bootstrap", &[], config);
    let admin = Server::credentials();
    crate::oci::push(&fronts[0], &tmp.path().join("hello"), "v1", "team/hello:v1", &admin);
    let name = name_led_by(&[&fronts[0], &fronts[1]], 1, "image");
    // Created through the front end the image was not pushed through: it resolves it in the cluster's
    // repositories, and prepares it.
    let uri = format!("{}/team/hello:v1", fronts[1].address);
    let created = crate::image_invoke::create_image(&fronts[1], &admin, &name, &uri, json!({}));
    assert_eq!(created["PackageType"], "Image");
    let missing = crate::image_functions::create_image(&fronts[1], &admin, "nowhere", json!({ "Code": { "ImageUri": format!("{uri}-none") } }));
    crate::image_functions::refused(&missing, "InvalidParameterValueException", "does not exist");
    for front in fronts {
        let path = format!("/2015-03-31/functions/{name}");
        assert!(eventually(SHOWS_WITHIN, || front.lambda("GET", &path, b"").status == 200));
        let reply = front.invoke(&name, r#"{"name":"image"}"#);
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.header("x-amz-function-error"), None, "{}", reply.text());
        assert_eq!(reply.json(), json!({ "message": "Hello, image!" }));
    }
}

/// Provisioned concurrency is kept by the front end leading the function's partition alone (it runs the
/// invocations), and every front end shows its status.
#[test]
fn provisioned_concurrency_is_kept_by_the_leader_and_shown_by_every_front_end() {
    let etcd = EtcdCluster::start(1);
    let shared = Shared::new();
    let fronts: Vec<Server> = (0..2).map(|_| front_end(&etcd.endpoints_flag(), &shared)).collect();
    let name = name_led_by(&[&fronts[0], &fronts[1]], 1, "warmed");
    let handler = r#"echo "\"$AWS_LAMBDA_INITIALIZATION_TYPE\"" > /tmp/response"#;
    assert_eq!(fronts[0].create(&name, &sh_runtime(handler), json!({})).status, 201);
    let published = fronts[0].lambda("POST", &format!("/2015-03-31/functions/{name}/versions"), b"{}");
    assert_eq!(published.status, 201, "{}", published.text());
    let path = format!("/2019-09-30/functions/{name}/provisioned-concurrency");
    let body = json!({ "ProvisionedConcurrentExecutions": 2 }).to_string();
    let put = fronts[0].signed("lambda", "PUT", &path, "Qualifier=1", &[], body.as_bytes());
    assert_eq!(put.status, 202, "{}", put.text());
    for front in &fronts {
        let status = || front.signed("lambda", "GET", &path, "Qualifier=1", &[], b"").json();
        let ready = || {
            let status = status();
            status["Status"] == "READY" && status["AllocatedProvisionedConcurrentExecutions"] == 2
        };
        assert!(eventually(SHOWS_WITHIN, ready), "{}", status());
        let listed = front.lambda("GET", &format!("{path}?List=ALL"), b"").json();
        assert_eq!(listed["ProvisionedConcurrencyConfigs"][0]["Status"], "READY", "{listed}");
    }
    assert_eq!(local_sandboxes(&fronts[1]), 2, "the leader keeps them");
    assert_eq!(local_sandboxes(&fronts[0]), 0, "the other keeps none");
    for front in &fronts {
        let reply = front.invoke(&format!("{name}:1"), "{}");
        assert_eq!(reply.text().trim(), "\"provisioned-concurrency\"");
    }
}

/// Every event of `name`'s log group through `front`'s FilterLogEvents, `limit` a page.
fn filtered(front: &Server, name: &str, limit: u32) -> Vec<serde_json::Value> {
    let mut events = Vec::new();
    let mut body = json!({ "logGroupName": format!("/aws/lambda/{name}"), "limit": limit });
    for _ in 0..1000 {
        let page = front.logs("FilterLogEvents", &body);
        assert_eq!(page.status, 200, "{}", page.text());
        let page = page.json();
        assert!(page["events"].as_array().unwrap().len() <= limit as usize);
        events.extend(page["events"].as_array().unwrap().iter().cloned());
        match page["nextToken"].as_str() {
            Some(token) => body["nextToken"] = json!(token),
            None => return events,
        }
    }
    panic!("FilterLogEvents never ended");
}

/// Each front end keeps the logs of the invocations it ran (a function's partition leader, or the front end a
/// streamed invocation arrived at); CloudWatch Logs through any front end reads, pages and changes every one's.
#[test]
fn logs_are_read_through_any_front_end_whichever_ran_the_invocation() {
    let etcd = EtcdCluster::start(1);
    let shared = Shared::new();
    let mut fronts: Vec<Server> = (0..2).map(|_| front_end(&etcd.endpoints_flag(), &shared)).collect();
    let name = name_led_by(&[&fronts[0], &fronts[1]], 1, "logged");
    let handler = r#"echo "line $(cat /tmp/event)"; echo '"ok"' > /tmp/response"#;
    assert_eq!(fronts[0].create(&name, &sh_runtime(handler), json!({})).status, 201);
    // Three run on the leader; a streamed one runs where it arrives.
    for i in 0..3 {
        assert_eq!(invoke_once_shown(&fronts[0], &name), "\"ok\"", "{i}");
    }
    let path = format!("/2021-11-15/functions/{name}/response-streaming-invocations");
    let streamed = fronts[0].signed("lambda", "POST", &path, "", &[], b"\"streamed\"");
    assert_eq!(streamed.status, 200, "{}", streamed.text());
    let lines = |events: &[serde_json::Value]| events.iter().filter(|e| e["message"].as_str().unwrap().starts_with("line ")).count();
    for front in &fronts {
        assert!(eventually(SHOWS_WITHIN, || lines(&front.log_events(&name)) == 4), "{:?}", front.log_events(&name));
        let all = filtered(front, &name, 10_000);
        let ids = |events: &[serde_json::Value]| events.iter().map(|e| e["eventId"].as_str().unwrap().to_string()).collect::<Vec<_>>();
        let stamps: Vec<i64> = all.iter().map(|e| e["timestamp"].as_i64().unwrap()).collect();
        assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "in time order: {stamps:?}");
        for limit in [1, 3] {
            assert_eq!(ids(&filtered(front, &name, limit)), ids(&all), "{limit} a page");
        }
        let groups = front.logs("DescribeLogGroups", &json!({ "logGroupNamePrefix": format!("/aws/lambda/{name}") })).json();
        assert_eq!(groups["logGroups"].as_array().unwrap().len(), 1, "{groups}");
        let streams = front.logs("DescribeLogStreams", &json!({ "logGroupName": format!("/aws/lambda/{name}") })).json();
        let streams = streams["logStreams"].as_array().unwrap().clone();
        assert_eq!(streams.len(), 2, "a sandbox on each front end: {streams:?}");
        let mut read = 0;
        for stream in &streams {
            let body = json!({ "logGroupName": format!("/aws/lambda/{name}"), "logStreamName": stream["logStreamName"], "startFromHead": true });
            let page = front.logs("GetLogEvents", &body);
            assert_eq!(page.status, 200, "{}", page.text());
            let page = page.json();
            read += lines(page["events"].as_array().unwrap());
            // At the end, the forward token comes back as it was sent.
            let again = json!({ "logGroupName": format!("/aws/lambda/{name}"), "logStreamName": stream["logStreamName"], "nextToken": page["nextForwardToken"] });
            assert_eq!(front.logs("GetLogEvents", &again).json()["nextForwardToken"], page["nextForwardToken"]);
        }
        assert_eq!(read, 4);
    }
    // A retention set through one front end shows through the other; a group deleted through one is gone from both.
    let group = json!({ "logGroupName": format!("/aws/lambda/{name}"), "retentionInDays": 7 });
    assert_eq!(fronts[0].logs("PutRetentionPolicy", &group).status, 200);
    let groups = fronts[1].logs("DescribeLogGroups", &json!({ "logGroupNamePrefix": format!("/aws/lambda/{name}") })).json();
    assert_eq!(groups["logGroups"][0]["retentionInDays"], 7, "{groups}");
    assert_eq!(fronts[1].logs("DeleteLogGroup", &json!({ "logGroupName": format!("/aws/lambda/{name}") })).status, 200);
    for front in &fronts {
        assert!(front.log_events(&name).is_empty());
    }

    // A front end killed while a read pages through the logs: the read ends, with what the others hold.
    assert_eq!(fronts[0].invoke(&name, "{}").status, 200);
    assert_eq!(fronts[0].signed("lambda", "POST", &path, "", &[], b"\"streamed\"").status, 200);
    assert!(eventually(SHOWS_WITHIN, || lines(&fronts[0].log_events(&name)) == 2), "{:?}", fronts[0].log_events(&name));
    let mut body = json!({ "logGroupName": format!("/aws/lambda/{name}"), "limit": 1 });
    let first = fronts[0].logs("FilterLogEvents", &body).json();
    body["nextToken"] = first["nextToken"].clone();
    assert!(body["nextToken"].is_string(), "{first}");
    fronts[1].kill();
    // Its listing gone with its lease (the survivor leads its partition then).
    let gone = || partition_leader(&fronts[0], &name).as_deref() == Some(fronts[0].address.as_str());
    assert!(eventually(SHOWS_WITHIN, gone), "the killed front end stayed listed");
    let ended = (0..100).any(|_| {
        let page = fronts[0].logs("FilterLogEvents", &body);
        assert_eq!(page.status, 200, "{}", page.text());
        match page.json()["nextToken"].as_str() {
            Some(token) => {
                body["nextToken"] = json!(token);
                false
            }
            None => true,
        }
    });
    assert!(ended, "the read never ended");
}

/// A front end that joins leads the partitions rendezvous hashing gives it, and takes over with them the idle
/// sandboxes their leader kept on the worker hosts: the moved functions stay warm, on the same sandboxes.
#[test]
fn a_joining_front_end_takes_its_partitions_over_warm() {
    let etcd = EtcdCluster::start(1);
    let shared = Shared::new();
    let first = front_end_in(None, &etcd.endpoints_flag(), &shared, &["--no-local-worker"]);
    let host = WorkerHost::joining(&[&first], &["--memory", "4096"]);
    first.wait_for_workers(1);
    let (whoami, sandbox) = (whoami(0), sandbox_of);
    let names: Vec<String> = (0..12).map(|i| format!("warm-{i}")).collect();
    let mut before = std::collections::HashMap::new();
    for name in &names {
        assert_eq!(first.create(name, &whoami, json!({})).status, 201);
        before.insert(name.clone(), sandbox(&first, name));
    }
    let owner_of = |name: &str| listed_on(&host, &before[name]).map(|s| s["Owner"]["FrontEnd"].clone());
    let first_owner = owner_of(&names[0]).expect("listed");

    let second = front_end_in(None, &etcd.endpoints_flag(), &shared, &["--no-local-worker"]);
    second.wait_for_workers(1);
    let fronts = [&first, &second];
    let (moved, stayed): (Vec<&String>, Vec<&String>) = names.iter().partition(|name| settled_leader(&fronts, name) == second.address);
    assert!(!moved.is_empty() && !stayed.is_empty(), "moved {moved:?}");
    // Given up by the first (owned by no front end, 0), then taken over by the second.
    let taken = || moved.iter().all(|name| owner_of(name).is_some_and(|owner| owner != first_owner && owner != 0));
    assert!(eventually(SHOWS_WITHIN, taken), "not taken over: {:?}", host.sandboxes());
    for name in &moved {
        assert_eq!(sandbox(&second, name), before[*name], "{name}: warm on the new leader");
    }
    for name in &stayed {
        assert_eq!(owner_of(name), Some(first_owner.clone()));
        assert_eq!(sandbox(&first, name), before[*name], "{name}: warm where it was");
    }
    assert_eq!(host.sandboxes().len(), names.len(), "none started anew: {:?}", host.sandboxes());
}

/// Container images are the cluster's: pushed through one front end, pulled and listed through another, and run
/// (prepared from the object store) after the front end they were pushed through is killed.
#[test]
fn images_pushed_through_one_front_end_are_pulled_and_run_through_another_after_it_dies() {
    use crate::oci::{basic, check, creds, push, skopeo};
    let etcd = EtcdCluster::start(1);
    let shared = Shared::new();
    let mut fronts: Vec<Server> = (0..2).map(|_| front_end(&etcd.endpoints_flag(), &shared)).collect();
    let tmp = tempfile::tempdir().unwrap();
    let config = json!({ "Entrypoint": ["/var/task/bootstrap"], "WorkingDir": "/var/task" });
    crate::image_invoke::program_layout(&tmp.path().join("hello"), "v1", "bootstrap", &[], config);
    let admin = Server::credentials();
    push(&fronts[0], &tmp.path().join("hello"), "v1", "team/hello:v1", &admin);

    // Pulled through the other at once: the same image.
    let pulled = tmp.path().join("pulled");
    let pull = |front: &Server| {
        let _ = std::fs::remove_dir_all(&pulled);
        let source = format!("docker://{}/team/hello:v1", front.address);
        let output = skopeo(&["copy", &source, &format!("oci:{}:v1", pulled.display()), "--src-tls-verify=false", "--src-creds", &creds(&admin)]);
        check(&output, "pull");
        std::fs::read(pulled.join("index.json")).unwrap()
    };
    assert_eq!(pull(&fronts[1]), pull(&fronts[0]));
    let headers = [basic(&admin)];
    for front in &fronts {
        let tags = front.raw("GET", "/v2/team/hello/tags/list", "", &headers, b"");
        assert_eq!(tags.json()["tags"], json!(["v1"]), "{}", tags.text());
        let catalog = front.raw("GET", "/v2/_catalog", "", &headers, b"");
        assert!(catalog.json()["repositories"].as_array().unwrap().contains(&json!("team/hello")), "{}", catalog.text());
    }

    // An upload is the front end's that started it: its location names that front end, wherever the client's
    // next requests would otherwise be sent.
    let started = fronts[1].raw("POST", "/v2/team/hello/blobs/uploads/", "", &headers, b"");
    assert_eq!(started.status, 202, "{}", started.text());
    let location = started.header("location").unwrap().to_string();
    assert!(location.starts_with(&format!("http://{}/v2/team/hello/blobs/uploads/", fronts[1].address)), "{location}");

    // The front end it was pushed through killed: the other pulls it, and runs a function of it.
    fronts[0].kill();
    pull(&fronts[1]);
    let uri = format!("{}/team/hello:v1", fronts[1].address);
    let created = crate::image_invoke::create_image(&fronts[1], &admin, "outlived", &uri, json!({}));
    assert_eq!(created["PackageType"], "Image");
    let reply = fronts[1].invoke("outlived", r#"{"name":"image"}"#);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json(), json!({ "message": "Hello, image!" }), "{}", reply.text());
    // And it is pushed to again through the survivor, as the same account's.
    push(&fronts[1], &tmp.path().join("hello"), "v1", "team/hello:v2", &admin);
    let tags = fronts[1].raw("GET", "/v2/team/hello/tags/list", "", &headers, b"");
    assert_eq!(tags.json()["tags"], json!(["v1", "v2"]));
}

/// A front end stopped (SIGTERM) gives its idle sandboxes on the worker hosts up: the front ends that lead their
/// functions next take them over, warm.
#[test]
fn a_stopped_front_ends_sandboxes_are_taken_over_warm() {
    let etcd = EtcdCluster::start(1);
    let shared = Shared::new();
    let (mut fronts, host) = front_ends_on_a_host(&etcd, &shared);
    let name = name_led_by(&[&fronts[0], &fronts[1]], 1, "stopped");
    assert_eq!(fronts[0].create(&name, &whoami(0), json!({})).status, 201);
    let sandbox = |front: &Server| sandbox_of(front, &name);
    let before = sandbox(&fronts[1]);
    let owner_of = || listed_on(&host, &before).map(|s| s["Owner"]["FrontEnd"].clone());
    let stopped = owner_of().expect("listed");
    fronts[1].stop();
    let taken = || owner_of().is_some_and(|owner| owner != stopped && owner != 0);
    assert!(eventually(SHOWS_WITHIN, taken), "not taken over: {:?}", host.sandboxes());
    assert_eq!(sandbox(&fronts[0]), before, "warm on the front end that leads it now");
}

/// A function URL made through one front end answers on every front end's URL listener.
#[test]
fn a_function_url_made_through_one_front_end_answers_on_the_others() {
    use crate::function_urls::{host_of, send};
    let etcd = EtcdCluster::start(1);
    let shared = Shared::new();
    let listeners: Vec<String> = (0..2).map(|_| crate::harness::free_address()).collect();
    let fronts: Vec<Server> =
        listeners.iter().map(|urls| front_end_in(None, &etcd.endpoints_flag(), &shared, &["--url-listen", urls])).collect();
    echo_function(&fronts[0], "hooked", "hooked");
    let created = fronts[0].lambda("POST", "/2021-10-31/functions/hooked/url", json!({ "AuthType": "NONE" }).to_string().as_bytes());
    assert_eq!(created.status, 201, "{}", created.text());
    let host = host_of(created.json()["FunctionUrl"].as_str().unwrap());
    let anyone = json!({
        "StatementId": "public-url", "Action": "lambda:InvokeFunctionUrl", "Principal": "*", "FunctionUrlAuthType": "NONE",
    });
    let allowed = fronts[0].lambda("POST", "/2015-03-31/functions/hooked/policy", anyone.to_string().as_bytes());
    assert_eq!(allowed.status, 201, "{}", allowed.text());
    for urls in &listeners {
        let answered = || send(urls, &host, "GET", "/", &[], b"").status == 200;
        assert!(eventually(SHOWS_WITHIN, answered), "{urls}: {}", send(urls, &host, "GET", "/", &[], b"").text());
        assert_eq!(send(urls, &host, "GET", "/", &[], b"").text(), "hooked");
    }
}

/// Each front end counts the invocations that arrive at it; the console's activity through either adds them all.
#[test]
fn the_consoles_activity_counts_every_front_ends_invocations() {
    let etcd = EtcdCluster::start(1);
    let shared = Shared::new();
    let fronts: Vec<Server> = (0..2).map(|_| front_end(&etcd.endpoints_flag(), &shared)).collect();
    echo_function(&fronts[0], "counted", "counted");
    for (front, times) in fronts.iter().zip([2, 3]) {
        for _ in 0..times {
            assert_eq!(invoke_once_shown(front, "counted"), "\"counted\"");
        }
    }
    for front in &fronts {
        let listed = front.signed("ignis", "GET", "/ignis/activity", "", &[], b"").json();
        let counted = listed["Functions"].as_array().unwrap().iter().find(|f| f["FunctionName"] == "counted").cloned();
        assert_eq!(counted.map(|f| f["Invocations"].clone()), Some(json!(5)), "{listed}");
        let minutes = front.signed("ignis", "GET", "/ignis/activity/counted", "", &[], b"").json();
        let total: u64 = minutes["Minutes"].as_array().unwrap().iter().map(|m| m["Invocations"].as_u64().unwrap()).sum();
        assert_eq!(total, 5, "{minutes}");
    }
}
