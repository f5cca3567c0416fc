//! Building bases for real: the layout is a valid OCI image layout, a second build gives the same
//! bytes, a finished base is found rather than rebuilt, and the unpacked layer runs its programs
//! under `chroot` with the base's environment (root only). The Python base needs PyPI.

use std::fs::{self, File};
use std::path::Path;
use std::net::TcpListener;
use std::process::{Command, Output};

use ignis_runtimes::{Built, build, directory_name};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// By its path: the base's `PATH` is the child's, and the host's `chroot` is not on it.
const CHROOT: &str = "/usr/sbin/chroot";

fn quiet(_: &str) {}

/// A blob of the layout, checked against its digest.
fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    let bytes = fs::read(layout.join("blobs/sha256").join(hex)).unwrap();
    assert_eq!(hex::encode(Sha256::digest(&bytes)), hex, "blob {digest}");
    bytes
}

/// Checks the layout by hand (and with skopeo, when the machine has it).
fn check_layout(built: &Built) {
    let layout = &built.layout;
    let oci_layout: Value = serde_json::from_slice(&fs::read(layout.join("oci-layout")).unwrap()).unwrap();
    assert_eq!(oci_layout["imageLayoutVersion"], "1.0.0");
    let index: Value = serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1);
    assert_eq!(manifests[0]["annotations"]["org.opencontainers.image.ref.name"], built.name.as_str());
    assert_eq!(manifests[0]["digest"], built.manifest_digest.as_str());
    let manifest: Value = serde_json::from_slice(&blob(layout, &built.manifest_digest)).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["mediaType"], "application/vnd.oci.image.layer.v1.tar");
    assert_eq!(blob(layout, &built.layer_digest).len() as u64, built.layer_size);
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    let config: Value = serde_json::from_slice(&blob(layout, config_digest)).unwrap();
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["rootfs"]["diff_ids"][0], built.layer_digest.as_str());
    assert_eq!(built.config.working_dir, "/var/task");
    assert!(built.config.env.iter().any(|pair| pair == "LAMBDA_TASK_ROOT=/var/task"));
    if Path::new("/usr/bin/skopeo").exists() {
        let reference = format!("oci:{}:{}", layout.display(), built.name);
        let output = Command::new("skopeo").args(["inspect", &reference]).output().unwrap();
        assert!(output.status.success(), "skopeo: {}", String::from_utf8_lossy(&output.stderr));
        let inspected: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(inspected["Digest"], built.manifest_digest.as_str());
    }
}

/// Builds `name` into two caches: both valid, the same bytes, and a second call finds the first.
fn build_twice(name: &str) -> (tempfile::TempDir, Built) {
    let first_cache = tempfile::tempdir().unwrap();
    let steps = std::cell::RefCell::new(Vec::new());
    let first = build(name, first_cache.path(), &|step| steps.borrow_mut().push(step.to_string())).unwrap();
    assert_eq!(first.layout, first_cache.path().join(directory_name(name)));
    assert!(!steps.borrow().is_empty());
    check_layout(&first);
    let again = build(name, first_cache.path(), &quiet).unwrap();
    assert_eq!(again, first);
    let second_cache = tempfile::tempdir().unwrap();
    // A killed build's staging directory is removed by the next build.
    let abandoned = second_cache.path().join(format!(".{}.killed", directory_name(name)));
    fs::create_dir_all(abandoned.join("rootfs/etc")).unwrap();
    let second = build(name, second_cache.path(), &quiet).unwrap();
    assert!(!abandoned.exists());
    assert_eq!(second.layer_digest, first.layer_digest, "{name}: the same inputs give the same layer");
    assert_eq!(second.manifest_digest, first.manifest_digest);
    // Only the base (and its lock) is left in the cache: the staging directory is gone.
    let entries = fs::read_dir(first_cache.path()).unwrap();
    let mut entries: Vec<_> = entries.map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    entries.sort();
    assert_eq!(entries, [format!(".{}.lock", directory_name(name)), directory_name(name)]);
    (first_cache, first)
}

/// Unpacks the layer into a fresh directory.
fn unpack(built: &Built) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let hex = built.layer_digest.strip_prefix("sha256:").unwrap();
    let layer = File::open(built.layout.join("blobs/sha256").join(hex)).unwrap();
    let mut archive = tar::Archive::new(layer);
    archive.set_preserve_permissions(true);
    archive.unpack(root.path()).unwrap();
    root
}

/// Runs a command in the unpacked base under `chroot` as `user` (`uid:gid`), with only the base's
/// environment and `extra`.
fn output_in(root: &Path, built: &Built, user: &str, extra: &[&str], command: &[&str]) -> Output {
    let env: Vec<&str> = built.config.env.iter().map(String::as_str).chain(extra.iter().copied()).collect();
    Command::new(CHROOT)
        .arg(format!("--userspec={user}"))
        .arg(root)
        .args(command)
        .env_clear()
        .envs(env.iter().filter_map(|p| p.split_once('=')))
        .current_dir(root)
        .output()
        .unwrap()
}

/// Runs a command as root in the unpacked base (see [`output_in`]); answers its stdout.
fn run_in(root: &Path, built: &Built, extra: &[&str], command: &[&str]) -> String {
    let output = output_in(root, built, "0:0", extra, command);
    assert!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// Builds `name` twice (see [`build_twice`]), checks its entry point and unpacks it; answers the
/// cache, the base and the unpacked root, all removed when dropped.
fn built_and_unpacked(name: &str, entrypoint: &str) -> (tempfile::TempDir, Built, tempfile::TempDir) {
    let (cache, built) = build_twice(name);
    assert_eq!(built.config.entrypoint, [entrypoint]);
    let root = unpack(&built);
    check_common(root.path());
    (cache, built, root)
}

/// What every base holds.
fn check_common(root: &Path) {
    for dir in ["dev", "proc", "tmp", "var/task", "opt"] {
        assert_eq!(fs::read_dir(root.join(dir)).unwrap().count(), 0, "{dir} is empty");
    }
    assert!(fs::read_to_string(root.join("etc/passwd")).unwrap().contains(":993:990:"));
    assert!(root.join("lib64/ld-linux-x86-64.so.2").is_file());
    assert!(root.join("etc/ssl/certs/ca-certificates.crt").is_file());
}

#[test]
fn provided_base_builds_and_runs_sh_as_root() {
    let (_cache, built, root) = built_and_unpacked("provided.al2023", "/var/task/bootstrap");
    assert_eq!(run_in(root.path(), &built, &[], &["/bin/sh", "-c", "echo ok"]), "ok\n");
    // Without LD_LIBRARY_PATH the loader still finds the libraries, at their host paths.
    let output = Command::new(CHROOT).arg(root.path()).args(["/bin/sh", "-c", "echo ok"]).env_clear().output().unwrap();
    assert_eq!(output.stdout, b"ok\n");
}

#[test]
fn python_base_builds_and_imports_the_runtime_as_root() {
    let (_cache, built, root) = built_and_unpacked("python3.11", "/var/runtime/bootstrap");
    let python = "/var/lang/bin/python3.11";
    let imports = "import awslambdaric, boto3, json, ssl, sqlite3, ctypes, zlib, sys; print('ok', sys.prefix)";
    let pythonpath = "PYTHONPATH=/var/task:/opt/python/lib/python3.11/site-packages:/opt/python";
    assert_eq!(run_in(root.path(), &built, &[pythonpath], &[python, "-c", imports]), "ok /var/lang\n");
    // Past the script's own directory (empty for `-c`), as on Lambda: code and layers, the standard
    // library, then the runtime.
    let path = run_in(root.path(), &built, &[pythonpath], &[python, "-c", "import sys; print(':'.join(sys.path[1:]))"]);
    assert_eq!(
        path.trim_end(),
        "/var/task:/opt/python/lib/python3.11/site-packages:/opt/python:/var/lang/lib/python311.zip:\
         /var/lang/lib/python3.11:/var/lang/lib/python3.11/lib-dynload:/var/lang/lib/python3/dist-packages:/var/runtime"
    );
    // The bootstrap runs the client through the exec wrapper, with the command as its arguments.
    let wrapper = root.path().join("tmp/wrapper");
    fs::write(&wrapper, "#!/bin/sh\necho \"$AWS_EXECUTION_ENV $*\"\n").unwrap();
    fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let script = run_in(
        root.path(),
        &built,
        &["AWS_LAMBDA_EXEC_WRAPPER=/tmp/wrapper", "_HANDLER=app.handler"],
        &["/var/runtime/bootstrap"],
    );
    assert_eq!(script, "AWS_Lambda_python3.11 /var/lang/bin/python3.11 -m awslambdaric app.handler\n");
    // Unwrapped, as the sandbox's user: the client starts, imports everything and calls the runtime
    // API, here a port just closed.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let api = format!("AWS_LAMBDA_RUNTIME_API=127.0.0.1:{port}");
    let env = [api.as_str(), "_HANDLER=app.handler"];
    let output = output_in(root.path(), &built, "993:990", &env, &["/var/runtime/bootstrap"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("awslambdaric") && stderr.contains("Connection refused"), "{stderr}");
}

/// The Node.js bases are built in the machine-wide cache: their install compiles a native addon
/// for minutes, so each is built once per machine, then found. One the machine cannot build is
/// refused with the reason.
#[test]
fn node_bases_build_once_per_machine_and_load_the_runtime_as_root() {
    let cache = Path::new(ignis_runtimes::DEFAULT_CACHE_DIR);
    let buildable = ignis_runtimes::buildable();
    // (runtime, major, the client's entry point and addon inside its package)
    let cases = [
        ("nodejs20.x", 20, "bin/index.mjs", "dist/rapid-client.node"),
        ("nodejs22.x", 22, "index.mjs", "rapid-client.node"),
        ("nodejs24.x", 24, "index.mjs", "rapid-client.node"),
    ];
    for (name, major, client, addon) in cases {
        if !buildable.iter().any(|b| b == name) {
            let error = build(name, cache, &quiet).unwrap_err();
            assert!(matches!(error, ignis_runtimes::BuildError::NotBuildable { .. }), "{error}");
            continue;
        }
        check_node(&build(name, cache, &quiet).unwrap(), major, client, addon);
    }
}

fn check_node(built: &Built, major: u32, client: &str, addon: &str) {
    check_layout(built);
    assert_eq!(&build(&built.name, Path::new(ignis_runtimes::DEFAULT_CACHE_DIR), &quiet).unwrap(), built);
    assert_eq!(built.config.entrypoint, ["/var/runtime/bootstrap"]);
    let root = unpack(built);
    check_common(root.path());
    // The SDK clients resolve through NODE_PATH, and the client's addon loads with its libraries,
    // as the sandbox's user.
    let script = format!(
        "for (const m of ['@aws-sdk/client-s3', '@aws-sdk/client-dynamodb', '@aws-sdk/lib-dynamodb', \
         '@aws-sdk/client-lambda', '@aws-sdk/client-sqs', '@aws-sdk/client-sns', '@aws-sdk/client-sts']) \
         require(m); require('/var/runtime/node_modules/aws-lambda-ric/{addon}'); \
         console.log('ok', process.version.split('.')[0])"
    );
    // (The addon reads the runtime API's address when it loads; nothing connects to it here.)
    let env = ["NODE_PATH=/var/runtime/node_modules", "AWS_LAMBDA_RUNTIME_API=127.0.0.1:9"];
    let output = output_in(root.path(), built, "993:990", &env, &["/var/lang/bin/node", "-e", &script]);
    assert!(output.status.success(), "{}: {}", built.name, String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8(output.stdout).unwrap(), format!("ok v{major}\n"));
    // The bootstrap: the heap from the memory size, the client on the handler, through the wrapper.
    let wrapper = root.path().join("tmp/wrapper");
    fs::write(&wrapper, "#!/bin/sh\necho \"$AWS_EXECUTION_ENV $NODE_PATH $*\"\n").unwrap();
    fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let env = ["AWS_LAMBDA_EXEC_WRAPPER=/tmp/wrapper", "_HANDLER=index.handler", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE=128"];
    assert_eq!(
        run_in(root.path(), built, &env, &["/var/runtime/bootstrap"]),
        format!(
            "AWS_Lambda_nodejs{major}.x /opt/nodejs/node{major}/node_modules:/opt/nodejs/node_modules:\
             /var/runtime/node_modules:/var/runtime:/var/task /var/lang/bin/node --expose-gc --max-semi-space-size=6 \
             --max-old-space-size=116 /var/runtime/node_modules/aws-lambda-ric/{client} index.handler\n"
        )
    );
}
