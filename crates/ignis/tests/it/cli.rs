//! The `ignis` command-line client against a real server.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::harness::{KEY_ID, SECRET, Server, eventually};

fn ignis(server: &Server, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ignis"))
        .args(args)
        .env("IGNIS_ENDPOINT", format!("http://{}", server.address))
        .env("IGNIS_ACCESS_KEY_ID", KEY_ID)
        .env("IGNIS_SECRET_ACCESS_KEY", SECRET)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn deploy_invoke_ls_logs_rm() {
    let server = Server::start();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello-sh");
    let deployed = ignis(&server, &["deploy", "hello", example.to_str().unwrap(), "--memory", "256", "--timeout", "5", "--env", "GREETING=hi"]);
    assert!(deployed.status.success(), "{}", stderr(&deployed));

    let config = server.lambda("GET", "/2015-03-31/functions/hello/configuration", b"").json();
    assert_eq!((config["MemorySize"].as_u64(), config["Timeout"].as_u64()), (Some(256), Some(5)));
    assert_eq!(config["Environment"]["Variables"]["GREETING"], "hi");

    let invoked = ignis(&server, &["invoke", "hello", r#"{"n": 1}"#, "--log"]);
    assert!(invoked.status.success(), "{}", stderr(&invoked));
    assert_eq!(stdout(&invoked).trim(), r#"{"echo": {"n": 1}}"#);
    assert!(stderr(&invoked).contains("REPORT RequestId: "), "{}", stderr(&invoked));

    // Deploying again updates the code and only the settings given.
    let redeployed = ignis(&server, &["deploy", "hello", example.to_str().unwrap(), "--timeout", "7"]);
    assert!(redeployed.status.success(), "{}", stderr(&redeployed));
    let config = server.lambda("GET", "/2015-03-31/functions/hello/configuration", b"").json();
    assert_eq!((config["MemorySize"].as_u64(), config["Timeout"].as_u64()), (Some(256), Some(7)));

    let listed = ignis(&server, &["ls"]);
    assert!(listed.status.success());
    assert!(stdout(&listed).lines().any(|l| l.starts_with("hello ") && l.contains("provided.al2023")), "{}", stdout(&listed));

    assert!(eventually(Duration::from_secs(10), || stdout(&ignis(&server, &["logs", "hello"])).contains("REPORT RequestId: ")));
    let logs = stdout(&ignis(&server, &["logs", "hello"]));
    assert!(logs.contains("got an event of 8 bytes\n"), "{logs}");

    let removed = ignis(&server, &["rm", "hello"]);
    assert!(removed.status.success(), "{}", stderr(&removed));
    let gone = ignis(&server, &["invoke", "hello"]);
    assert!(!gone.status.success());
    let message = stderr(&gone);
    assert_eq!(message.lines().count(), 1, "one line, no backtrace: {message}");
    assert!(message.contains("ResourceNotFoundException"), "{message}");
}

#[test]
fn errors_are_one_clear_line() {
    let server = Server::start();
    let missing = ignis(&server, &["deploy", "x", "/no/such/dir"]);
    assert!(!missing.status.success());
    assert_eq!(stderr(&missing).lines().count(), 1, "{}", stderr(&missing));

    let bad_memory = ignis(&server, &["deploy", "x", Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello-sh").to_str().unwrap(), "--memory", "64"]);
    assert!(!bad_memory.status.success());
    assert!(stderr(&bad_memory).contains("ValidationException"), "{}", stderr(&bad_memory));

    let unreachable = Command::new(env!("CARGO_BIN_EXE_ignis"))
        .args(["ls", "--endpoint", "http://127.0.0.1:1"])
        .env("IGNIS_ACCESS_KEY_ID", KEY_ID)
        .env("IGNIS_SECRET_ACCESS_KEY", SECRET)
        .output()
        .unwrap();
    assert!(!unreachable.status.success());
    assert_eq!(stderr(&unreachable).lines().count(), 1, "{}", stderr(&unreachable));
    assert!(stderr(&unreachable).contains("cannot reach Ignis"), "{}", stderr(&unreachable));
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() { files.extend(files_under(&path)) } else { files.push(path) }
    }
    files
}

#[test]
fn generated_admin_keys_are_kept_sealed_and_the_cli_finds_them() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ignis"))
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env_remove("IGNIS_ACCESS_KEY_ID")
        .env_remove("IGNIS_SECRET_ACCESS_KEY")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut secret, mut address) = (None, None);
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(value) = line.trim().strip_prefix("export IGNIS_SECRET_ACCESS_KEY=") {
            secret = Some(value.to_string());
        }
        if let Some(rest) = line.split("listening on http://").nth(1) {
            address = Some(rest.split_whitespace().next().unwrap().to_string());
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let (secret, address) = (secret.expect("the generated secret is printed"), address.unwrap());

    let listed = Command::new(env!("CARGO_BIN_EXE_ignis"))
        .args(["ls", "--endpoint", &format!("http://{address}"), "--data-dir"])
        .arg(&data)
        .env_remove("IGNIS_ACCESS_KEY_ID")
        .env_remove("IGNIS_SECRET_ACCESS_KEY")
        .output()
        .unwrap();
    assert!(listed.status.success(), "{}", stderr(&listed));

    for file in files_under(&data) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "{} holds the secret in plain text", file.display());
    }
    // SAFETY: signals the child we started.
    unsafe { libc_kill(child.id() as i32, 15) };
    let _ = child.wait();
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

/// `ignis runtime build`, `import` and `ls`: a runtime built here (into the machine's cache) and one imported from an
/// OCI image layout are installed, listed, and run functions; a tenant's key may list but not install.
#[test]
fn runtimes_are_built_imported_and_listed() {
    let server = Server::start_with(&["--runtimes", "none"]);
    let built = ignis(&server, &["runtime", "build", "provided.al2023"]);
    assert!(built.status.success(), "{}", stderr(&built));
    assert!(stdout(&built).starts_with("provided.al2023\tignis-runtimes/provided.al2023@sha256:"), "{}", stdout(&built));
    assert!(stderr(&built).contains("provided.al2023:"), "progress is shown: {}", stderr(&built));
    // The layout just built, imported under another name, as an operator imports AWS's own base image.
    let layout = Path::new(ignis_runtimes::DEFAULT_CACHE_DIR).join(ignis_runtimes::directory_name("provided.al2023"));
    let layout = layout.to_str().unwrap();
    let imported = ignis(&server, &["runtime", "import", "provided.al2", layout, "--tag", "provided.al2023"]);
    assert!(imported.status.success(), "{}", stderr(&imported));
    let listed = stdout(&ignis(&server, &["runtime", "ls"]));
    let names: Vec<&str> = listed.lines().filter_map(|line| line.split('\t').next()).collect();
    assert_eq!(names, ["provided.al2", "provided.al2023"], "{listed}");
    let zip = crate::harness::sh_runtime(r#"echo '"on a base"' > /tmp/response"#);
    for runtime in ["provided.al2023", "provided.al2"] {
        let name = format!("fn-{}", runtime.replace('.', "-"));
        let created = server.create(&name, &zip, serde_json::json!({ "Runtime": runtime }));
        assert_eq!(created.status, 201, "{}", created.text());
        let reply = server.invoke(&name, "{}");
        assert_eq!(reply.json(), serde_json::json!("on a base"), "{runtime}: {}", reply.text());
    }
    let (_, tenant) = server.create_account("tenant");
    let refused = Command::new(env!("CARGO_BIN_EXE_ignis"))
        .args(["runtime", "import", "provided.al2", layout])
        .env("IGNIS_ENDPOINT", format!("http://{}", server.address))
        .env("IGNIS_ACCESS_KEY_ID", &tenant.access_key_id)
        .env("IGNIS_SECRET_ACCESS_KEY", &tenant.secret_access_key)
        .output()
        .unwrap();
    assert!(!refused.status.success());
}

#[test]
fn credentials_shows_the_administrator_pair_and_a_refused_call_names_its_key() {
    // A server that makes its own pair (no IGNIS_* variables), as on a first start.
    let data = tempfile::tempdir().unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_ignis"))
        .args(["server", "--listen", "127.0.0.1:0", "--runtimes", "none", "--egress", "none", "--data-dir"])
        .arg(data.path())
        .env_remove("IGNIS_ACCESS_KEY_ID")
        .env_remove("IGNIS_SECRET_ACCESS_KEY")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::io::BufRead::lines(std::io::BufReader::new(server.stdout.take().unwrap()));
    let address = lines
        .map_while(Result::ok)
        .find_map(|line| line.split("listening on ").nth(1).and_then(|rest| rest.split_whitespace().next()).map(str::to_string))
        .expect("the server listens");
    let shown = Command::new(env!("CARGO_BIN_EXE_ignis")).args(["credentials", "--data-dir"]).arg(data.path()).output().unwrap();
    assert!(shown.status.success(), "{}", String::from_utf8_lossy(&shown.stderr));
    let pair: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    let ls = |id: &str, secret: &str| {
        Command::new(env!("CARGO_BIN_EXE_ignis"))
            .arg("ls")
            .env("IGNIS_ENDPOINT", &address)
            .env("IGNIS_ACCESS_KEY_ID", id)
            .env("IGNIS_SECRET_ACCESS_KEY", secret)
            .output()
            .unwrap()
    };
    let (id, secret) = (pair["AccessKeyId"].as_str().unwrap(), pair["SecretAccessKey"].as_str().unwrap());
    let listed = ls(id, secret);
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    let refused = ls(id, "not the secret");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains(&format!("signed with key {id} from IGNIS_ACCESS_KEY_ID")), "{stderr}");
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn top_shows_each_function_from_the_server_s_metrics() {
    let metrics = crate::harness::free_address();
    let server = Server::start_with(&["--metrics-listen", &metrics]);
    let created = server.create("watched", &crate::harness::sh_runtime("true"), serde_json::json!({}));
    assert_eq!(created.status, 201, "{}", created.text());
    for _ in 0..3 {
        assert_eq!(server.invoke("watched", "{}").status, 200);
    }
    let top = Command::new(env!("CARGO_BIN_EXE_ignis")).args(["top", "--once", "--metrics", &metrics]).output().unwrap();
    let table = String::from_utf8_lossy(&top.stdout);
    assert!(top.status.success(), "{}", String::from_utf8_lossy(&top.stderr));
    assert!(table.starts_with("ACCOUNT") && table.contains("INVOCATIONS/S"), "{table}");
    assert!(table.lines().any(|line| line.split_whitespace().nth(1) == Some("watched")), "{table}");
    let nowhere = Command::new(env!("CARGO_BIN_EXE_ignis")).args(["top", "--once", "--metrics", "127.0.0.1:1"]).output().unwrap();
    assert!(!nowhere.status.success() && String::from_utf8_lossy(&nowhere.stderr).contains("cannot reach the metrics"));
}
