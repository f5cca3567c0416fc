//! Container-image functions run: an image pushed with skopeo (the `lambda_runtime` example and the libraries it
//! links, nothing of the host) is prepared once, mounted lazily on the worker that runs it, and invoked with the
//! image as the sandbox's root, on the local worker and on a worker host; garbage collection keeps it; a tampered
//! chunk fails the start clearly.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use std::time::Duration;

use crate::harness::{Server, WorkerHost, bin_dir, eventually, free_address, metric};
use crate::oci::{make_layout_with, noise, push, tar_of_files};

const FUNCTIONS: &str = "/2015-03-31/functions";
/// Bytes of a file the function never reads: an image's start must not fetch them.
pub const UNREAD_BYTES: usize = 24 << 20;

/// The files `binary` needs to run (`ldd`'s libraries and loader), as (path, content).
fn libraries(binary: &Path) -> Vec<(String, Vec<u8>)> {
    let output = std::process::Command::new("ldd").arg(binary).output().unwrap();
    assert!(output.status.success(), "ldd {}", binary.display());
    let mut files = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or `/lib64/ld-linux-x86-64.so.2 (0x...)`
        let path = line.split("=>").last().unwrap().split_whitespace().next().unwrap_or("");
        if path.starts_with('/') {
            files.push((path.trim_start_matches('/').to_string(), std::fs::read(path).unwrap()));
        }
    }
    files
}

/// An OCI layout of the hello-rust example as an image: a base layer of its libraries and a large file nobody
/// reads, and a layer with the program at `/var/task/bootstrap`.
fn hello_layout(layout: &Path, tag: &str, run_config: Value) -> String {
    program_layout(layout, tag, "bootstrap", &[], run_config)
}

/// An OCI layout of the built example `program` as an image: a base layer of its libraries and a large file
/// (`/opt/unread.bin`, [`UNREAD_BYTES`]), the layers `extra` (plain tars), and a layer with the program at
/// `/var/task/bootstrap`.
pub fn program_layout(layout: &Path, tag: &str, program: &str, extra: &[Vec<u8>], run_config: Value) -> String {
    let binary = bin_dir().join(program);
    let libs = libraries(&binary);
    let unread = noise(UNREAD_BYTES);
    let mut base: Vec<(&str, &[u8], u32)> = libs.iter().map(|(p, c)| (p.as_str(), c.as_slice(), 0o755)).collect();
    base.push(("opt/unread.bin", &unread, 0o644));
    let program = std::fs::read(&binary).unwrap();
    let app = [("var/task/bootstrap", program.as_slice(), 0o755)];
    let layers: Vec<Vec<u8>> =
        std::iter::once(tar_of_files(&base)).chain(extra.iter().cloned()).chain([tar_of_files(&app)]).collect();
    make_layout_with(layout, tag, "amd64", &layers, run_config)
}

pub fn create_image(server: &Server, credentials: &ignis_sigv4::Credentials, name: &str, uri: &str, extra: Value) -> Value {
    let mut body = json!({
        "FunctionName": name, "Role": "arn:aws:iam::123456789012:role/r", "PackageType": "Image",
        "Code": { "ImageUri": uri },
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        body[k] = v.clone();
    }
    let reply = server.lambda_as(credentials, "POST", FUNCTIONS, body.to_string().as_bytes());
    assert_eq!(reply.status, 201, "{}", reply.text());
    reply.json()
}

/// The chunk files of the server's chunk store.
pub fn chunk_files(data: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![data.join("chunks")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

fn gc(server: &Server, retire: &str, expire: &str) -> Value {
    let out = server.cli_as(&Server::credentials(), &["image", "gc", "--retire-seconds", retire, "--expire-seconds", expire]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn an_image_pushed_with_skopeo_runs_as_a_function_and_survives_garbage_collection() {
    // No runtime base: garbage collection keeps only this image.
    let server = Server::start_with(&["--runtimes", "none"]);
    let (_, alice) = server.create_account("alice");
    let tmp = tempfile::tempdir().unwrap();
    let config = json!({ "Entrypoint": ["/var/task/bootstrap"], "Env": ["PRINT_EVENT=1"], "WorkingDir": "/var/task" });
    hello_layout(&tmp.path().join("hello"), "v1", config);
    push(&server, &tmp.path().join("hello"), "v1", "team/hello:v1", &alice);
    let uri = format!("{}/team/hello:v1", server.address);
    create_image(&server, &alice, "hello", &uri, json!({}));

    let reply = server.invoke_as(&alice, "hello", r#"{"name":"image"}"#);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-amz-function-error"), None, "{}", reply.text());
    assert_eq!(reply.json(), json!({ "message": "Hello, image!" }));

    // Chunks are stored once, encrypted: the program's bytes are nowhere in the clear.
    let program = std::fs::read(bin_dir().join("bootstrap")).unwrap();
    let stored = chunk_files(&server.data);
    assert!(!stored.is_empty());
    let needle = &program[program.len() / 2..program.len() / 2 + 64];
    assert!(stored.iter().all(|f| !std::fs::read(f).unwrap().windows(64).any(|w| w == needle)));

    collect_then_delete(&server, &alice);
}

/// Garbage collection of the live function `hello`: collections copy its image into a new root each (the old
/// roots go), and it runs on, also from a new sandbox; once it is deleted, its chunks go.
fn collect_then_delete(server: &Server, alice: &ignis_sigv4::Credentials) {
    let report = gc(server, "0", "0");
    assert_eq!((report["LiveImages"].clone(), report["Copied"].clone()), (json!(1), json!(1)), "{report}");
    for _ in 0..2 {
        let report = gc(server, "0", "0");
        assert_eq!(report["Copied"], json!(1), "{report}");
    }
    let update = json!({ "Environment": { "Variables": { "AFTER_GC": "1" } } });
    let updated = server.lambda_as(alice, "PUT", &format!("{FUNCTIONS}/hello/configuration"), update.to_string().as_bytes());
    assert_eq!(updated.status, 200, "{}", updated.text());
    let reply = server.invoke_as(alice, "hello", r#"{"name":"again"}"#);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json(), json!({ "message": "Hello, again!" }));

    let deleted = server.lambda_as(alice, "DELETE", &format!("{FUNCTIONS}/hello"), b"");
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    let report = gc(server, "0", "0");
    assert_eq!(report["Dropped"], json!(1), "{report}");
    gc(server, "0", "0");
    let report = gc(server, "0", "0");
    assert_eq!(report["StoredChunks"], json!(0), "{report}");
}

#[test]
fn an_image_runs_on_a_worker_host_which_fetches_only_what_it_reads() {
    let (server_metrics, worker_metrics) = (free_address(), free_address());
    let server = Server::start_with(&["--no-local-worker", "--metrics-listen", &server_metrics]);
    let worker = WorkerHost::start(&server, &["--metrics-listen", &worker_metrics]);
    server.wait_for_workers(1);
    let (_, alice) = server.create_account("alice");
    let tmp = tempfile::tempdir().unwrap();
    hello_layout(&tmp.path().join("hello"), "v1", json!({ "Entrypoint": ["/var/task/bootstrap"] }));
    push(&server, &tmp.path().join("hello"), "v1", "hello:v1", &alice);
    create_image(&server, &alice, "hello", &format!("{}/hello:v1", server.address), json!({}));
    let reply = server.invoke_as(&alice, "hello", r#"{"name":"host"}"#);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json(), json!({ "message": "Hello, host!" }));
    // The worker's cache holds what the start read: far less than the image (the unread file alone is larger).
    let cached: u64 = chunk_files_in(&worker.data.join("image-cache")).iter().map(|f| f.metadata().unwrap().len()).sum();
    assert!(cached > 0);
    assert!(cached < UNREAD_BYTES as u64 / 2, "the worker cached {cached} bytes");
    // The metrics say the same: the worker fetched some chunks, the server holds the whole image.
    let fetched = || metric(&worker_metrics, "ignis_chunk_fetch_bytes_total");
    assert!(eventually(Duration::from_secs(30), || fetched().is_some_and(|b| b > 0.0)), "{:?}", fetched());
    assert!(fetched().unwrap() < UNREAD_BYTES as f64 / 2.0);
    assert!(metric(&worker_metrics, "ignis_chunk_fetches_total").unwrap() >= 1.0);
    let stored = || metric(&server_metrics, "ignis_chunk_store_bytes");
    assert!(eventually(Duration::from_secs(30), || stored().is_some_and(|b| b >= UNREAD_BYTES as f64)), "{:?}", stored());
}

pub fn chunk_files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.is_file()).collect()
}

#[test]
fn a_tampered_chunk_fails_the_start_and_is_never_read() {
    let server = Server::start();
    let (_, alice) = server.create_account("alice");
    let tmp = tempfile::tempdir().unwrap();
    hello_layout(&tmp.path().join("hello"), "v1", json!({ "Entrypoint": ["/var/task/bootstrap"] }));
    push(&server, &tmp.path().join("hello"), "v1", "hello:v1", &alice);
    create_image(&server, &alice, "hello", &format!("{}/hello:v1", server.address), json!({}));
    for file in chunk_files(&server.data) {
        let mut bytes = std::fs::read(&file).unwrap();
        for b in bytes.iter_mut().step_by(4096) {
            *b ^= 0x5a;
        }
        std::fs::write(&file, bytes).unwrap();
    }
    let reply = server.invoke_as(&alice, "hello", r#"{"name":"x"}"#);
    assert_ne!(reply.status, 200, "{}", reply.text());
    assert!(reply.text().contains("cannot be loaded") || reply.text().contains("corrupt"), "{}", reply.text());
}

/// The bucket's objects under `prefix`.
fn objects(garage: &ignis_chunks::garage::Garage, prefix: &str) -> Vec<String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(garage.object_names(prefix)).unwrap()
}

#[test]
fn an_image_runs_from_chunks_in_an_s3_object_store_and_garbage_collection_deletes_what_is_not_live() {
    let garage = ignis_chunks::garage::Garage::start().unwrap();
    let store = format!("s3://{}/ignis", garage.bucket);
    let region = ignis_chunks::garage::REGION;
    // No runtime base: garbage collection keeps only this image.
    let args = ["--object-store", &store, "--s3-endpoint", &garage.endpoint, "--s3-region", region, "--runtimes", "none"];
    let key = [("AWS_ACCESS_KEY_ID", garage.access_key_id.as_str()), ("AWS_SECRET_ACCESS_KEY", &garage.secret_access_key)];
    let server = Server::start_with_env(&args, &key);
    let (_, alice) = server.create_account("alice");
    let tmp = tempfile::tempdir().unwrap();
    let config = json!({ "Entrypoint": ["/var/task/bootstrap"], "WorkingDir": "/var/task" });
    hello_layout(&tmp.path().join("hello"), "v1", config);
    push(&server, &tmp.path().join("hello"), "v1", "team/hello:v1", &alice);
    create_image(&server, &alice, "hello", &format!("{}/team/hello:v1", server.address), json!({}));

    let reply = server.invoke_as(&alice, "hello", r#"{"name":"s3"}"#);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json(), json!({ "message": "Hello, s3!" }), "{}", reply.text());
    let stored = objects(&garage, "ignis");
    assert!(!stored.is_empty() && stored.iter().all(|o| o.starts_with("ignis/")), "{stored:?}");
    assert!(chunk_files(&server.data).is_empty(), "no chunk is kept in the data directory");
    assert!(objects(&garage, "").iter().all(|o| o.starts_with("ignis/")), "nothing outside the prefix");

    // Collections copy the live image into new roots and delete the old ones; the function runs on. Once it is
    // deleted, its chunks go: no object is left under the prefix.
    collect_then_delete(&server, &alice);
    assert_eq!(objects(&garage, "ignis"), Vec::<String>::new());
}

#[test]
fn a_bad_object_store_is_refused_at_start_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["--object-store", "ftp://host/chunks"], "the scheme is neither file nor s3"),
        (&["--object-store", "s3://Bad_Bucket"], "a bucket name is 3 to 63"),
        (&["--object-store", "s3://chunks"], "needs AWS_ACCESS_KEY_ID"),
        (&["--object-store", "s3://chunks", "--s3-endpoint", "127.0.0.1:3900"], "not an http:// or https:// URL"),
        (&["--object-store", "file:///tmp/chunks", "--s3-endpoint", "http://127.0.0.1:3900"], "--s3-endpoint is for"),
    ];
    for (args, message) in cases {
        let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_ignis"))
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(tmp.path())
            .args(args)
            .env("AWS_ACCESS_KEY_ID", "")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut exited = None;
        eventually(Duration::from_secs(60), || {
            exited = server.try_wait().unwrap();
            exited.is_some()
        });
        if exited.is_none() {
            let _ = server.kill();
            let _ = server.wait();
        }
        let out = server.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(exited.is_some_and(|s| !s.success()) && stderr.contains(message), "{args:?}: {stderr}");
    }
}
