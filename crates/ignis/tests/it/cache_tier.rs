//! The shared chunk cache tier end to end: five `ignis cache` nodes named by `ignis server --cache-nodes`, worker
//! hosts that learn them when they register. The first worker host to start an image misses, reads the origin and
//! writes the chunks' stripes; a fresh worker host then starts the image from the tier, with one node dead or
//! stopped, reading nothing from the origin.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::harness::{CacheNode, Server, WorkerHost, eventually, free_address, metric};
use crate::image_invoke::{chunk_files, create_image, program_layout};
use crate::oci::push;

const SIGSTOP: i32 = 19;

/// Five nodes, a server naming them and a first worker host that has run the image `hello` once (so the tier holds
/// its start's chunks); answers them and the number of chunks that start fetched.
fn tier_with_an_image_started_once(tmp: &Path) -> (Vec<CacheNode>, Server, ignis_sigv4::Credentials, usize) {
    let nodes: Vec<CacheNode> = (0..5).map(|_| CacheNode::start()).collect();
    let list = nodes.iter().map(|n| n.address.as_str()).collect::<Vec<_>>().join(",");
    let server = Server::start_with(&["--no-local-worker", "--cache-nodes", &list]);
    let metrics = free_address();
    let mut first = WorkerHost::start(&server, &["--metrics-listen", &metrics]);
    server.wait_for_workers(1);
    let (_, alice) = server.create_account("alice");
    program_layout(&tmp.join("hello"), "v1", "bootstrap", &[], json!({ "Entrypoint": ["/var/task/bootstrap"] }));
    push(&server, &tmp.join("hello"), "v1", "hello:v1", &alice);
    create_image(&server, &alice, "hello", &format!("{}/hello:v1", server.address), json!({}));
    let reply = server.invoke_as(&alice, "hello", r#"{"name":"tier"}"#);
    assert_eq!(reply.status, 200, "{}", reply.text());
    // It missed everywhere: every chunk it fetched came from the origin, and it wrote their stripes, one per node.
    // (The counts are published every few seconds: wait for the ones that agree.)
    let fetched = || metric(&metrics, "ignis_origin_fetches_total").unwrap_or(0.0) as usize;
    let written = || nodes.iter().map(CacheNode::stripes).collect::<Vec<_>>();
    let agree = || {
        let chunks = fetched();
        chunks > 0 && written().iter().all(|&n| n == chunks)
    };
    assert!(eventually(Duration::from_secs(60), agree), "{:?} stripes of {} chunks", written(), fetched());
    let chunks = fetched();
    first.stop();
    server.wait_for_workers(0);
    (nodes, server, alice, chunks)
}

/// Starts a fresh worker host, invokes `hello` on it, and checks it read nothing from the origin.
fn a_fresh_worker_starts_from_the_tier(server: &Server, alice: &ignis_sigv4::Credentials, chunks: usize) {
    let metrics = free_address();
    let _second = WorkerHost::start(server, &["--metrics-listen", &metrics]);
    server.wait_for_workers(1);
    let reply = server.invoke_as(alice, "hello", r#"{"name":"again"}"#);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json(), json!({ "message": "Hello, again!" }));
    // Every chunk it fetched came from the shared tier (the counts are published every few seconds).
    let fetched = || metric(&metrics, "ignis_chunk_fetches_total");
    let hits = || metric(&metrics, "ignis_chunk_cache_hits_total{tier=\"shared\"}");
    let agree = || fetched().is_some_and(|n| n > 0.0) && hits() == fetched();
    assert!(eventually(Duration::from_secs(30), agree), "{:?} fetched, {:?} from the tier", fetched(), hits());
    assert!(fetched().unwrap() as usize <= chunks);
    assert_eq!(metric(&metrics, "ignis_origin_fetches_total"), Some(0.0), "the origin was read");
}

#[test]
fn a_fresh_worker_host_starts_an_image_from_the_tier_with_one_node_dead() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut nodes, server, alice, chunks) = tier_with_an_image_started_once(tmp.path());
    nodes[0].kill9();
    a_fresh_worker_starts_from_the_tier(&server, &alice, chunks);
}

#[test]
fn a_fresh_worker_host_starts_an_image_from_the_tier_with_one_node_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let (nodes, server, alice, chunks) = tier_with_an_image_started_once(tmp.path());
    nodes[2].signal(SIGSTOP);
    a_fresh_worker_starts_from_the_tier(&server, &alice, chunks);
}

/// A start that must mount its image is admitted only while the origin keeps up: with one origin read at a time
/// and no time to wait, a start arriving while another's read of the origin hangs is refused at once with Lambda's
/// throttle (429 TooManyRequestsException), and the hung one ends with an error once its read fails.
#[test]
fn a_start_is_throttled_while_the_origin_is_saturated() {
    let metrics = free_address();
    let server = Server::start_with(&["--origin-fetches", "1", "--origin-start-wait", "0", "--metrics-listen", &metrics]);
    let (_, alice) = server.create_account("alice");
    let tmp = tempfile::tempdir().unwrap();
    let run_config = json!({ "Entrypoint": ["/var/task/bootstrap"] });
    for (name, extra) in [("one", b"1".as_slice()), ("two", b"2".as_slice())] {
        let layer = crate::oci::tar_of_files(&[("var/task/which", extra, 0o644)]);
        program_layout(&tmp.path().join(name), "v1", "bootstrap", &[layer], run_config.clone());
        push(&server, &tmp.path().join(name), "v1", &format!("{name}:v1"), &alice);
        create_image(&server, &alice, name, &format!("{}/{name}:v1", server.address), json!({}));
    }
    // Every chunk becomes a FIFO that no one writes: a read of one hangs until it is opened for writing.
    let chunks: Vec<_> = chunk_files(&server.data)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n.len() == 64 && n.to_string_lossy().bytes().all(|b| b.is_ascii_hexdigit())))
        .collect();
    assert!(!chunks.is_empty());
    for chunk in &chunks {
        std::fs::remove_file(chunk).unwrap();
        let path = std::ffi::CString::new(chunk.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0, "mkfifo {}", chunk.display());
    }
    std::thread::scope(|scope| {
        let hung = scope.spawn(|| server.invoke_as(&alice, "one", "{}"));
        let in_flight = || metric(&metrics, "ignis_origin_fetches_in_flight");
        assert!(eventually(Duration::from_secs(30), || in_flight() == Some(1.0)), "{:?}", in_flight());
        let refused = server.invoke_as(&alice, "two", "{}");
        assert_eq!((refused.status, refused.error_type()), (429, "TooManyRequestsException"), "{}", refused.text());
        assert!(refused.text().contains("loading images"), "{}", refused.text());
        // Give the hung read its end of file: the chunk does not verify, the first start fails.
        let released = || {
            chunks.iter().any(|chunk| {
                let path = std::ffi::CString::new(chunk.as_os_str().as_encoded_bytes()).unwrap();
                // SAFETY: a valid NUL-terminated path; the descriptor is closed at once.
                let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_NONBLOCK) };
                // SAFETY: ours, opened just above.
                fd >= 0 && unsafe { libc::close(fd) } == 0
            })
        };
        assert!(eventually(Duration::from_secs(30), released), "no read of a chunk was waiting");
        let failed = hung.join().unwrap();
        assert_ne!(failed.status, 200, "{}", failed.text());
    });
    assert!(eventually(Duration::from_secs(30), || metric(&metrics, "ignis_image_starts_throttled_total") == Some(1.0)));
}

/// A cluster-wide origin budget is shared evenly by the healthy workers: the server's own and each worker host,
/// which learns its share when it registers and at every heartbeat.
#[test]
fn a_cluster_wide_origin_budget_is_shared_by_the_workers() {
    let (server_metrics, first_metrics, second_metrics) = (free_address(), free_address(), free_address());
    let server = Server::start_with(&["--origin-budget", "6", "--metrics-listen", &server_metrics]);
    let limit = |metrics: &str| metric(metrics, "ignis_origin_fetches_limit");
    let _first = WorkerHost::start(&server, &["--metrics-listen", &first_metrics]);
    server.wait_for_workers(2);
    let shared = |n: f64, all: &[&str]| eventually(Duration::from_secs(30), || all.iter().all(|m| limit(m) == Some(n)));
    assert!(shared(3.0, &[&server_metrics, &first_metrics]), "{:?} {:?}", limit(&server_metrics), limit(&first_metrics));
    let _second = WorkerHost::start(&server, &["--metrics-listen", &second_metrics]);
    server.wait_for_workers(3);
    let all = [&server_metrics[..], &first_metrics, &second_metrics];
    assert!(shared(2.0, &all), "{:?}", all.iter().map(|m| limit(m)).collect::<Vec<_>>());
}
