//! Container images as bad input and processes that die with an image mounted. Layers that are not what they
//! claim, paths that climb out of the root, a declared size past Lambda's 10 GiB, digests that do not match: each
//! refused with Lambda's kind of error, nothing stored harmed. Absolute paths are made relative and device nodes
//! dropped, and such an image runs. A chunk tampered with while its function runs reads as `EIO`, never as other
//! bytes; a missing entry point is the function's error. A server or worker host killed with SIGKILL while an image
//! is mounted leaves no FUSE connection, mount, sandbox process or cgroup, and starts again on the same data.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Reply, Server, WorkerHost, cgroup_left, eventually, sandbox_ids};
use crate::image_functions::refused;
use crate::image_invoke::{chunk_files, chunk_files_in, create_image, program_layout};
use crate::oci::{basic, digest, gzip, make_layout_of_blobs, make_layout_with, push, tar_entry, tar_of_files};

const FUNCTIONS: &str = "/2015-03-31/functions";
const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const HELLO: &str = r#"{"Entrypoint":["/var/task/bootstrap"]}"#;

/// Pushes the layout at `layout` (tag `v1`) to `name:v1` and asks CreateFunction for function `name` of it.
fn push_and_create(server: &Server, credentials: &ignis_sigv4::Credentials, layout: &Path, name: &str) -> Reply {
    push(server, layout, "v1", &format!("{name}:v1"), credentials);
    let code = json!({ "Code": { "ImageUri": format!("{}/{name}:v1", server.address) }, "Timeout": 30 });
    crate::image_functions::create_image(server, credentials, name, code)
}

/// Invokes `name` (the `hostile` example as an image) with `event`; its answer.
fn attack(server: &Server, credentials: &ignis_sigv4::Credentials, name: &str, event: Value) -> Value {
    let reply = server.invoke_as(credentials, name, &event.to_string());
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-amz-function-error"), None, "{}", reply.text());
    reply.json()
}

fn says_hello(server: &Server, credentials: &ignis_sigv4::Credentials, name: &str) {
    let reply = server.invoke_as(credentials, name, r#"{"name":"still"}"#);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json(), json!({ "message": "Hello, still!" }), "{name} was harmed");
}

#[test]
fn layers_that_are_not_tars_or_climb_out_of_the_root_are_refused_and_harm_nothing() {
    let server = Server::start();
    let (_, alice) = server.create_account("alice");
    let tmp = tempfile::tempdir().unwrap();
    let hello = tmp.path().join("hello");
    program_layout(&hello, "v1", "bootstrap", &[], serde_json::from_str(HELLO).unwrap());
    assert_eq!(push_and_create(&server, &alice, &hello, "hello").status, 201);
    says_hello(&server, &alice, "hello");

    let end = vec![0u8; 1024];
    let mut bad_gzip = gzip(&tar_of_files(&[("app/data", &[7u8; 100_000], 0o644)]));
    let middle = bad_gzip.len() / 2;
    bad_gzip[middle..middle + 64].iter_mut().for_each(|b| *b ^= 0xa5);
    let cases: [(&str, Vec<u8>, &str, &str); 4] = [
        ("not-a-tar", b"this is not a tar archive\n".repeat(100), TAR, "layer 0 is not a tar stream"),
        ("bad-gzip", bad_gzip, TAR_GZIP, "layer 0 is not a tar stream (or its compression is corrupt)"),
        ("climbs", [tar_entry("app/../../etc/evil", b'0', 5, b"evil\n"), end.clone()].concat(), TAR, "../../etc/evil"),
        // A header that declares 11 GiB is refused before a byte of its body is read (there is none).
        ("huge", tar_entry("big.bin", b'0', 11 << 30, b""), TAR, "10737418240"),
    ];
    for (name, blob, media_type, reason) in cases {
        let layout = tmp.path().join(name);
        let diff_id = digest(&blob);
        make_layout_of_blobs(&layout, "v1", "amd64", &[(blob, media_type, diff_id)], json!({ "Entrypoint": ["/x"] }));
        let reply = push_and_create(&server, &alice, &layout, name);
        refused(&reply, "InvalidParameterValueException", "The source image cannot be used");
        assert!(reply.text().contains(reason), "{name}: {}", reply.text());
        assert_eq!(server.lambda_as(&alice, "GET", &format!("{FUNCTIONS}/{name}"), b"").status, 404);
        says_hello(&server, &alice, "hello");
    }
    // Images that are not there, or not an image's name at all.
    let host = &server.address;
    for (uri, reason) in [
        (format!("{host}/never-pushed:v1"), "does not exist"),
        (format!("{host}/hello:v2"), "does not exist"),
        (format!("{host}/hello@sha256:{}", "0".repeat(64)), "does not exist"),
        ("not an image".to_string(), "is not valid"),
    ] {
        let code = json!({ "Code": { "ImageUri": uri } });
        let reply = crate::image_functions::create_image(&server, &alice, "missing", code);
        refused(&reply, "InvalidParameterValueException", &format!("Source image {uri} {reason}"));
    }
    // The image prepared before is not harmed: a new function of it runs too.
    assert_eq!(push_and_create(&server, &alice, &hello, "again").status, 201);
    says_hello(&server, &alice, "again");
}

#[test]
fn absolute_paths_are_made_relative_and_device_nodes_dropped_and_such_an_image_runs() {
    let server = Server::start();
    let (_, alice) = server.create_account("alice");
    let tmp = tempfile::tempdir().unwrap();
    let odd = [
        tar_entry("/opt/absolute.txt", b'0', 9, b"absolute\n"),
        tar_entry("opt/char-device", b'3', 0, b""),
        tar_entry("opt/block-device", b'4', 0, b""),
        tar_entry("opt/fifo", b'6', 0, b""),
        vec![0; 1024],
    ]
    .concat();
    let layout = tmp.path().join("odd");
    program_layout(&layout, "v1", "hostile", &[odd], serde_json::from_str(HELLO).unwrap());
    let reply = push_and_create(&server, &alice, &layout, "odd");
    assert_eq!(reply.status, 201, "{}", reply.text());
    let answer = attack(&server, &alice, "odd", json!({ "attack": "read", "paths": ["/opt/absolute.txt"] }));
    assert_eq!(answer["detail"], "read 9 bytes of /opt/absolute.txt", "{answer}");
    let answer = attack(&server, &alice, "odd", json!({ "attack": "list", "paths": ["/opt"] }));
    assert_eq!(answer["detail"], r#"listed /opt: ["absolute.txt", "unread.bin"]"#, "{answer}");
}

#[test]
fn manifests_and_blobs_that_do_not_match_their_digest_or_exceed_10_gib_are_refused_at_push() {
    let server = Server::start();
    let (_, alice) = server.create_account("alice");
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("app");
    let pushed = make_layout_with(&layout, "v1", "amd64", &[tar_of_files(&[("hello", b"hi", 0o755)])], json!({}));
    push(&server, &layout, "v1", "app:v1", &alice);
    let auth = basic(&alice);
    let manifest_type = ("content-type".to_string(), "application/vnd.oci.image.manifest.v1+json".to_string());
    let manifest = std::fs::read(layout.join("blobs/sha256").join(&pushed[7..])).unwrap();
    let code = |reply: &Reply| {
        (reply.status, reply.json()["errors"][0]["code"].as_str().unwrap_or_default().to_string())
    };

    // A manifest put under another digest than its own.
    let other = digest(b"other");
    let headers = [auth.clone(), manifest_type.clone()];
    let put = server.raw("PUT", &format!("/v2/app/manifests/{other}"), "", &headers, &manifest);
    assert_eq!(code(&put), (400, "DIGEST_INVALID".to_string()), "{}", put.text());
    // A blob whose bytes are not its digest's.
    let start = server.raw("POST", "/v2/app/blobs/uploads/", "", std::slice::from_ref(&auth), b"");
    assert_eq!(start.status, 202, "{}", start.text());
    let location = start.header("location").unwrap().to_string();
    let put = server.raw("PUT", &location, &format!("digest={other}"), std::slice::from_ref(&auth), b"these bytes");
    assert_eq!(code(&put), (400, "DIGEST_INVALID".to_string()), "{}", put.text());
    // Layers that declare more than 10 GiB in all: refused before any of them is looked for.
    let mut big: Value = serde_json::from_slice(&manifest).unwrap();
    let layer = big["layers"][0].clone();
    big["layers"] = json!([
        { "mediaType": TAR_GZIP, "digest": digest(b"a"), "size": 6u64 << 30 },
        { "mediaType": TAR_GZIP, "digest": digest(b"b"), "size": 5u64 << 30 },
        layer,
    ]);
    let put = server.raw("PUT", "/v2/app/manifests/v1", "", &[auth.clone(), manifest_type], big.to_string().as_bytes());
    assert_eq!(code(&put), (400, "SIZE_INVALID".to_string()), "{}", put.text());
    assert!(put.text().contains("10737418240"), "{}", put.text());

    // The tag still names the image pushed, which still becomes a function.
    let head = server.raw("HEAD", "/v2/app/manifests/v1", "", &[auth], b"");
    assert_eq!(head.header("docker-content-digest"), Some(pushed.as_str()), "{head:?}");
    let reply = crate::image_functions::create_image(
        &server,
        &alice,
        "app",
        json!({ "Code": { "ImageUri": format!("{}/app:v1", server.address) } }),
    );
    assert_eq!(reply.status, 201, "{}", reply.text());
}

#[test]
fn a_missing_entry_point_is_the_functions_error() {
    let server = Server::start();
    let (_, alice) = server.create_account("alice");
    let tmp = tempfile::tempdir().unwrap();
    let files = [tar_of_files(&[("app/data", b"data", 0o644)])];
    let configs = [("missing", json!({ "Entrypoint": ["/app/nope"] })), ("none", json!({ "WorkingDir": "/app" }))];
    for (name, config) in configs {
        let layout = tmp.path().join(name);
        make_layout_with(&layout, "v1", "amd64", &files, config);
        let reply = push_and_create(&server, &alice, &layout, name);
        assert_eq!(reply.status, 201, "{}", reply.text());
        for _ in 0..2 {
            let reply = server.invoke_as(&alice, name, "{}");
            assert_eq!(reply.status, 200, "{}", reply.text());
            assert_eq!(reply.header("x-amz-function-error"), Some("Unhandled"), "{}", reply.text());
            assert_eq!(reply.json()["errorType"], "Runtime.InvalidEntrypoint", "{}", reply.text());
        }
    }
}

#[test]
fn a_chunk_tampered_with_while_its_function_runs_reads_as_an_io_error() {
    let server = Server::start();
    let (_, alice) = server.create_account("alice");
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("reader");
    program_layout(&layout, "v1", "hostile", &[], serde_json::from_str(HELLO).unwrap());
    assert_eq!(push_and_create(&server, &alice, &layout, "reader").status, 201);
    let program = std::fs::metadata(crate::harness::bin_dir().join("hostile")).unwrap().len();
    let read = |path: &str| attack(&server, &alice, "reader", json!({ "attack": "read", "paths": [path] }));
    assert_eq!(read("/var/task/bootstrap")["detail"], format!("read {program} bytes of /var/task/bootstrap"));

    // Every stored chunk is damaged; what the function has read is in the worker's cache, the large file is not.
    for file in chunk_files(&server.data) {
        let mut bytes = std::fs::read(&file).unwrap();
        bytes.iter_mut().step_by(4096).for_each(|b| *b ^= 0x5a);
        std::fs::write(&file, bytes).unwrap();
    }
    for _ in 0..2 {
        let answer = read("/opt/unread.bin");
        assert_eq!(answer["blocked"], true, "{answer}");
        assert!(answer["detail"].as_str().unwrap().contains("os error 5"), "{answer}");
    }
    assert_eq!(read("/var/task/bootstrap")["detail"], format!("read {program} bytes of /var/task/bootstrap"));
}

/// What a process running an image function holds on the host: its FUSE connections (their numbers in
/// `/sys/fs/fuse/connections`), its sandboxes' processes and cgroups and the devices of their roots.
struct Held {
    fuse: Vec<u64>,
    sandboxes: Vec<String>,
    pids: Vec<i64>,
    roots: Vec<u64>,
}

/// The minor number of an anonymous device (major 0), as the kernel names FUSE connections.
fn anonymous_minor(dev: u64) -> Option<u64> {
    let (major, minor) = ((dev >> 8) & 0xfff | (dev >> 32) & !0xfff, dev & 0xff | (dev >> 12) & 0xffff_ff00);
    (major == 0).then_some(minor)
}

/// The devices (`0:<minor>`) of the mounts in a mountinfo.
fn mount_devices(mountinfo: &str) -> Vec<String> {
    mountinfo.lines().filter_map(|l| l.split_whitespace().nth(2)).map(str::to_string).collect()
}

/// The FUSE connections of this host, as `/sys/fs/fuse/connections` lists them (read in a mount namespace of its
/// own, where the `fusectl` file system is mounted there unless the host has it mounted already, as systemd does,
/// so that the host's mounts stay as they are).
fn fuse_connections() -> std::collections::BTreeSet<u64> {
    let list = "{ mountpoint -q /sys/fs/fuse/connections || mount -t fusectl fusectl /sys/fs/fuse/connections; } \
                && ls /sys/fs/fuse/connections";
    let args = ["--mount", "--propagation", "private", "sh", "-c", list];
    let output = std::process::Command::new("unshare").args(args).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).split_whitespace().map(|n| n.parse().unwrap()).collect()
}

impl Held {
    fn by(pid: u32, server: &Server, function: &str) -> Held {
        let connections = fuse_connections();
        let fuse: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
            .filter_map(|fd| anonymous_minor(std::fs::metadata(fd.path()).ok()?.dev()))
            .filter(|minor| connections.contains(minor))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert!(eventually(Duration::from_secs(10), || !sandbox_ids(&server.log_events(function)).is_empty()));
        let sandboxes: Vec<String> = sandbox_ids(&server.log_events(function)).into_iter().collect();
        let mut pids = Vec::new();
        for hierarchy in ["/sys/fs/cgroup/memory/ignis", "/sys/fs/cgroup/ignis"] {
            for entry in std::fs::read_dir(hierarchy).into_iter().flatten().flatten() {
                if sandboxes.iter().any(|id| entry.file_name().to_string_lossy().ends_with(&format!("-{id}"))) {
                    let procs = std::fs::read_to_string(entry.path().join("cgroup.procs")).unwrap_or_default();
                    pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i64>().ok()));
                }
            }
        }
        let root = |pid: &i64| Some(std::fs::metadata(format!("/proc/{pid}/root")).ok()?.dev());
        let roots = pids.iter().filter_map(root).collect();
        Held { fuse, sandboxes, pids, roots }
    }

    /// What of it is still there.
    fn left(&self) -> Vec<String> {
        let mut left = Vec::new();
        let connections = fuse_connections();
        left.extend(self.fuse.iter().filter(|c| connections.contains(c)).map(|c| format!("FUSE connection {c}")));
        let alive = |pid: &&i64| Path::new(&format!("/proc/{pid}")).exists();
        left.extend(self.pids.iter().filter(alive).map(|p| format!("process {p}")));
        left.extend(self.sandboxes.iter().filter(|id| cgroup_left(id)).map(|id| format!("cgroup of {id}")));
        let devices: Vec<String> = self
            .fuse
            .iter()
            .copied()
            .chain(self.roots.iter().filter_map(|&d| anonymous_minor(d)))
            .map(|minor| format!("0:{minor}"))
            .collect();
        for mountinfo in ["/proc/self/mountinfo", "/proc/1/mountinfo"] {
            let mounted = mount_devices(&std::fs::read_to_string(mountinfo).unwrap());
            left.extend(devices.iter().filter(|d| mounted.contains(d)).map(|d| format!("mount of {d} in {mountinfo}")));
        }
        left
    }

    /// Waits, generously, until nothing of it is left.
    fn gone(&self) {
        let (fuse, pids, roots) = (&self.fuse, &self.pids, &self.roots);
        assert!(!fuse.is_empty() && !pids.is_empty() && !roots.is_empty(), "nothing held: {fuse:?} {pids:?} {roots:?}");
        assert!(eventually(Duration::from_secs(60), || self.left().is_empty()), "left behind: {:?}", self.left());
    }
}

/// Runs the hello-rust example as image function `hello` (the administrator's) on `server`; answers what the
/// process `pid` (whose data directory is `data`) holds for it.
fn run_an_image(server: &Server, pid: u32, data: &Path) -> Held {
    let admin = Server::credentials();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("hello");
    program_layout(&layout, "v1", "bootstrap", &[], serde_json::from_str(HELLO).unwrap());
    push(server, &layout, "v1", "hello:v1", &admin);
    create_image(server, &admin, "hello", &format!("{}/hello:v1", server.address), json!({}));
    says_hello(server, &admin, "hello");
    assert!(!chunk_files_in(&data.join("image-cache")).is_empty());
    Held::by(pid, server, "hello")
}

#[test]
fn a_server_killed_with_an_image_mounted_leaves_nothing_behind_and_starts_again() {
    let mut server = Server::start();
    let held = run_an_image(&server, server.pid(), &server.data);
    server.kill();
    held.gone();

    let again = Server::start_in(&server.data, &[]);
    assert!(chunk_files_in(&again.data.join("image-cache")).is_empty(), "the image cache is emptied at start");
    says_hello(&again, &Server::credentials(), "hello");
}

#[test]
fn a_worker_host_killed_with_an_image_mounted_leaves_nothing_behind_and_starts_again() {
    let server = Server::start_with(&["--no-local-worker"]);
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let mut worker = WorkerHost::start(&server, &["--listen", &listen]);
    server.wait_for_workers(1);
    let held = run_an_image(&server, worker.pid(), &worker.data);
    worker.kill9();
    held.gone();

    let again = WorkerHost::start_in(&server, &worker.data, &["--listen", &listen]);
    assert!(chunk_files_in(&again.data.join("image-cache")).is_empty(), "the image cache is emptied at start");
    assert!(eventually(Duration::from_secs(10), || server.workers().iter().any(|w| w["WorkerId"] == 2)));
    says_hello(&server, &Server::credentials(), "hello");
}
