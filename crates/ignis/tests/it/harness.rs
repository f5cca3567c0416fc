//! A real `ignis server` on a free loopback port with its own data directory,
//! and a small HTTP client that signs its requests with SigV4 as the SDKs do.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use ignis_sigv4::Credentials;
use serde_json::Value;

pub const KEY_ID: &str = "AKIATESTTESTTESTTEST";
pub const SECRET: &str = "test/secret/key/for/ignis/integration/tests";

pub struct Server {
    child: Option<Child>,
    pub address: String,
    pub data: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `x-amzn-ErrorType` of an error answer.
    pub fn error_type(&self) -> &str {
        self.header("x-amzn-errortype").unwrap_or("")
    }

    /// The decoded `X-Amz-Log-Result`.
    pub fn log_tail(&self) -> String {
        use base64::Engine;
        let encoded = self.header("x-amz-log-result").expect("no log tail");
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(encoded).unwrap()).unwrap()
    }
}

/// The runtimes a test server installs unless its test names others.
pub const TEST_RUNTIMES: &str = "provided.al2023";

pub fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_ignis")).parent().unwrap().to_path_buf()
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    pub fn start_with(args: &[&str]) -> Server {
        Server::start_with_env(args, &[])
    }

    /// Starts a server with `args` and the environment variables `env` added.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let mut server = Server::start_in_env(&data, args, env);
        server._tmp = Some(tmp);
        server
    }

    /// Starts a server on an existing data directory (e.g. to test a restart).
    pub fn start_in(data: &Path, args: &[&str]) -> Server {
        Server::start_in_env(data, args, &[])
    }

    fn start_in_env(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ignis"));
        command.arg("server").args(["--listen", "127.0.0.1:0", "--data-dir"]).arg(data).args(args);
        if !args.contains(&"--runtimes") {
            // The bases of the functions tests deploy, not every default one.
            command.args(["--runtimes", TEST_RUNTIMES]);
        }
        if !args.contains(&"--egress") {
            // Servers of tests run side by side: only those about networking give their sandboxes a network (each
            // a range of its own).
            command.args(["--egress", "none"]);
        }
        command.envs(env.iter().copied());
        let (child, address) = launch(command, "server");
        Server { child: Some(child), address, data: data.to_path_buf(), _tmp: None }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Kills the server with SIGKILL (no shutdown at all, as a crash) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server with SIGTERM and waits for it (it ends its sandboxes first).
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            terminate(child, true);
        }
    }

    pub fn credentials() -> Credentials {
        Credentials { access_key_id: KEY_ID.into(), secret_access_key: SECRET.into() }
    }

    /// A request signed for `service` with the test keys.
    pub fn signed(&self, service: &str, method: &str, path: &str, query: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        self.signed_with(&Server::credentials(), service, method, path, query, headers, body)
    }

    /// [`Server::signed`], with the failure to get a reply as an error (the server may be dying).
    pub fn try_signed(&self, service: &str, method: &str, path: &str, query: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<Reply, String> {
        let headers = Server::sign(&self.address, &Server::credentials(), service, method, path, query, headers, body);
        self.try_raw(method, path, query, &headers, body)
    }

    pub fn signed_with(
        &self,
        credentials: &Credentials,
        service: &str,
        method: &str,
        path: &str,
        query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        let headers = Server::sign(&self.address, credentials, service, method, path, query, headers, body);
        self.raw(method, path, query, &headers, body)
    }

    /// `headers` with SigV4's added.
    fn sign(
        address: &str,
        credentials: &Credentials,
        service: &str,
        method: &str,
        path: &str,
        query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Vec<(String, String)> {
        let mut all: Vec<(&str, &str)> = vec![("host", address)];
        all.extend_from_slice(headers);
        let parts = ignis_sigv4::RequestParts { method, path, query, headers: &all, body };
        let added = ignis_sigv4::sign(&parts, credentials, "us-east-1", service, SystemTime::now());
        let mut headers: Vec<(String, String)> = headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        headers.extend(added);
        headers
    }

    /// An `Event` invoke that may fail (the server may be dying): the reply, or why there is none.
    pub fn try_event(&self, name: &str, payload: &str) -> Result<Reply, String> {
        let path = format!("/2015-03-31/functions/{name}/invocations");
        let headers = [("x-amz-invocation-type", "Event")];
        let headers = Server::sign(&self.address, &Server::credentials(), "lambda", "POST", &path, "", &headers, payload.as_bytes());
        self.try_raw("POST", &path, "", &headers, payload.as_bytes())
    }

    /// A Lambda API call.
    pub fn lambda(&self, method: &str, path: &str, body: &[u8]) -> Reply {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        self.signed("lambda", method, path, query, &[("content-type", "application/json")], body)
    }

    /// An unsigned request, as sent.
    pub fn raw(&self, method: &str, path: &str, query: &str, headers: &[(String, String)], body: &[u8]) -> Reply {
        self.try_raw(method, path, query, headers, body).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Server::raw`], with the failure to get a reply as an error.
    pub fn try_raw(&self, method: &str, path: &str, query: &str, headers: &[(String, String)], body: &[u8]) -> Result<Reply, String> {
        let mut stream = TcpStream::connect(&self.address).map_err(|e| format!("connect to {}: {e}", self.address))?;
        stream.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| e.to_string())?;
        let target = if query.is_empty() { path.to_string() } else { format!("{path}?{query}") };
        let mut head = format!("{method} {target} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\ncontent-length: {}\r\n", self.address, body.len());
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).map_err(|e| format!("send to {}: {e}", self.address))?;
        // A server may answer before reading the whole body (e.g. one that is too large).
        let _ = stream.write_all(body);
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes);
        if !bytes.windows(4).any(|w| w == b"\r\n\r\n") {
            return Err(format!("no HTTP reply from {}: {:?}", self.address, String::from_utf8_lossy(&bytes)));
        }
        Ok(parse_reply(&bytes))
    }

    pub fn create(&self, name: &str, zip: &[u8], extra: Value) -> Reply {
        self.lambda("POST", "/2015-03-31/functions", create_body(name, zip, extra).to_string().as_bytes())
    }

    pub fn invoke(&self, name: &str, payload: &str) -> Reply {
        self.invoke_with(name, payload, &[("x-amz-log-type", "Tail")])
    }

    pub fn invoke_with(&self, name: &str, payload: &str, headers: &[(&str, &str)]) -> Reply {
        let path = format!("/2015-03-31/functions/{name}/invocations");
        self.signed("lambda", "POST", &path, "", headers, payload.as_bytes())
    }

    /// Sends a signed Invoke and hangs up half a second later, without reading the answer.
    pub fn invoke_and_hang_up(&self, name: &str, body: &[u8]) {
        let path = format!("/2015-03-31/functions/{name}/invocations");
        let parts = ignis_sigv4::RequestParts { method: "POST", path: &path, query: "", headers: &[("host", &self.address)], body };
        let signed = ignis_sigv4::sign(&parts, &Server::credentials(), "us-east-1", "lambda", SystemTime::now());
        let mut stream = TcpStream::connect(&self.address).unwrap();
        let mut head = format!("POST {path} HTTP/1.1\r\nhost: {}\r\ncontent-length: {}\r\n", self.address, body.len());
        for (name, value) in signed {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body).unwrap();
        std::thread::sleep(Duration::from_millis(500));
    }

    /// All log events of a function, through CloudWatch Logs' FilterLogEvents.
    pub fn log_events(&self, name: &str) -> Vec<Value> {
        let mut events = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut body = serde_json::json!({ "logGroupName": format!("/aws/lambda/{name}") });
            if let Some(t) = &token {
                body["nextToken"] = Value::String(t.clone());
            }
            let reply = self.logs("FilterLogEvents", &body);
            assert_eq!(reply.status, 200, "{}", reply.text());
            let page = reply.json();
            events.extend(page["events"].as_array().unwrap().iter().cloned());
            match page["nextToken"].as_str() {
                Some(t) => token = Some(t.to_string()),
                None => return events,
            }
        }
    }
}

impl Server {
    /// A client of the process listening at `address`, which the test did not start here: dropping it ends nothing.
    pub fn at(address: &str) -> Server {
        Server { child: None, address: address.to_string(), data: PathBuf::new(), _tmp: None }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            terminate(child, false);
        }
    }
}

/// Starts an `ignis` process with the test keys and reads the address it listens on.
fn launch(mut command: Command, what: &str) -> (Child, String) {
    let mut child = command
        .env("IGNIS_ACCESS_KEY_ID", KEY_ID)
        .env("IGNIS_SECRET_ACCESS_KEY", SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start ignis {what}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let address = loop {
        let line = lines.next().unwrap_or_else(|| panic!("ignis {what} exited before listening")).unwrap();
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // Keep draining stdout so the process never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    (child, address)
}

/// SIGTERM, then up to 20 s for the process to end its sandboxes and exit; past that, a
/// panic if `strict`, else SIGKILL.
fn terminate(mut child: Child, strict: bool) {
    // SAFETY: signals a child process we started and have not reaped.
    unsafe { libc_kill(child.id() as i32, 15) };
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            assert!(!strict, "process {} did not stop within 20 s of SIGTERM", child.id());
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

pub fn parse_reply(bytes: &[u8]) -> Reply {
    let split = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| panic!("no HTTP reply: {:?}", String::from_utf8_lossy(bytes)));
    let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = bytes[split + 4..].to_vec();
    if headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked")) {
        body = dechunk(&body);
    }
    Reply { status, headers, body }
}

fn dechunk(mut bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = bytes.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&bytes[..line_end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&bytes[line_end + 2..line_end + 2 + size]);
        bytes = &bytes[line_end + 2 + size + 2..];
    }
}

/// A zip of `(name, content, mode)` entries.
pub fn zip_of(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, content, mode) in files {
        let options = zip::write::SimpleFileOptions::default().unix_permissions(*mode);
        writer.start_file(*name, options).unwrap();
        writer.write_all(content).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

/// A shell custom runtime: for each event (in `/tmp/event`, with `$id` its
/// request id) it runs `handler`, which writes the response to `/tmp/response`.
pub fn sh_runtime(handler: &str) -> Vec<u8> {
    sh_runtime_with(handler, &[])
}

/// [`sh_runtime`] with `files` (path in the zip, bytes, mode) packaged beside the bootstrap.
pub fn sh_runtime_with(handler: &str, files: &[(String, Vec<u8>, u32)]) -> Vec<u8> {
    let script = sh_runtime_script(handler);
    let mut entries: Vec<(&str, &[u8], u32)> = vec![("bootstrap", script.as_bytes(), 0o755)];
    entries.extend(files.iter().map(|(path, bytes, mode)| (path.as_str(), bytes.as_slice(), *mode)));
    zip_of(&entries)
}

/// The bootstrap script of [`sh_runtime`].
pub fn sh_runtime_script(handler: &str) -> String {
    format!(
        r#"#!/bin/sh
api="http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime"
while true; do
  curl -sS -D /tmp/headers -o /tmp/event "$api/invocation/next" || exit 1
  id=$(tr -d '\r' < /tmp/headers | sed -n 's/^[Ll]ambda-[Rr]untime-[Aa]ws-[Rr]equest-[Ii]d: //p')
  echo '{{}}' > /tmp/response
  {handler}
  curl -sS -o /dev/null -X POST "$api/invocation/$id/response" --data-binary @/tmp/response
done
"#
    )
}

/// The host's `jq` as a function packages it, since no runtime base has it: `bin/jq` and the libraries the base
/// lacks in `lib/` (on Lambda's `LD_LIBRARY_PATH` as `/var/task/lib`); run it as `/var/task/bin/jq`.
pub fn jq_files() -> Vec<(String, Vec<u8>, u32)> {
    let mut files = vec![("bin/jq".to_string(), std::fs::read("/usr/bin/jq").expect("jq is installed"), 0o755)];
    let ldd = Command::new("ldd").arg("/usr/bin/jq").output().expect("ldd");
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let Some(path) = line.split_whitespace().find(|word| word.starts_with('/')) else { continue };
        let name = Path::new(path).file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("libjq") || name.starts_with("libonig") {
            files.push((format!("lib/{name}"), std::fs::read(path).unwrap(), 0o644));
        }
    }
    files
}

/// The `REPORT` line of a log tail.
pub fn report_line(tail: &str) -> &str {
    tail.lines().find(|l| l.starts_with("REPORT RequestId: ")).unwrap_or_else(|| panic!("no REPORT line in {tail:?}"))
}

/// The `lambda_runtime` example, as a deployable zip.
pub fn rust_example() -> Vec<u8> {
    let binary = std::fs::read(bin_dir().join("bootstrap")).expect("the hello-rust example is built (cargo build --workspace)");
    zip_of(&[("bootstrap", &binary, 0o755)])
}

/// Retries `check` until it holds or `limit` passes.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sandbox ids (from log stream names) of a function's log events.
pub fn sandbox_ids(events: &[Value]) -> std::collections::BTreeSet<String> {
    events
        .iter()
        .filter_map(|e| e["logStreamName"].as_str())
        .filter_map(|s| s.rsplit(']').next())
        .map(str::to_string)
        .collect()
}

/// Whether any cgroup of this sandbox is left on the host, in any controller's
/// hierarchy (its cgroups are named `<worker tag>-<sandbox id>`).
pub fn cgroup_left(sandbox_id: &str) -> bool {
    let root = Path::new("/sys/fs/cgroup");
    let hierarchies = std::fs::read_dir(root).into_iter().flatten().flatten().map(|e| e.path().join("ignis"));
    std::iter::once(root.join("ignis")).chain(hierarchies).any(|parent| {
        std::fs::read_dir(parent)
            .map(|entries| entries.flatten().any(|e| e.file_name().to_string_lossy().ends_with(&format!("-{sandbox_id}"))))
            .unwrap_or(false)
    })
}

/// Calls made with another key pair than the test administrator's (for tenant accounts).
impl Server {
    /// A Lambda API call signed with `credentials`.
    pub fn lambda_as(&self, credentials: &Credentials, method: &str, path: &str, body: &[u8]) -> Reply {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        self.signed_with(credentials, "lambda", method, path, query, &[("content-type", "application/json")], body)
    }

    /// A call of Ignis's own API (service `ignis`, e.g. `/ignis/accounts`) signed with `credentials`.
    pub fn ignis_as(&self, credentials: &Credentials, method: &str, path: &str, body: &[u8]) -> Reply {
        self.signed_with(credentials, "ignis", method, path, "", &[("content-type", "application/json")], body)
    }

    /// Creates an account with the administrator's key; returns its id and key pair.
    /// Runs the built `ignis` CLI against this server with `credentials`.
    pub fn cli_as(&self, credentials: &Credentials, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_ignis"))
            .args(args)
            .env("IGNIS_ENDPOINT", format!("http://{}", self.address))
            .env("IGNIS_ACCESS_KEY_ID", &credentials.access_key_id)
            .env("IGNIS_SECRET_ACCESS_KEY", &credentials.secret_access_key)
            .output()
            .unwrap()
    }

    pub fn create_account(&self, name: &str) -> (String, Credentials) {
        let body = serde_json::json!({ "Name": name }).to_string();
        let reply = self.ignis_as(&Server::credentials(), "POST", "/ignis/accounts", body.as_bytes());
        assert_eq!(reply.status, 201, "{}", reply.text());
        let created = reply.json();
        let credentials = Credentials {
            access_key_id: created["AccessKeyId"].as_str().unwrap().to_string(),
            secret_access_key: created["SecretAccessKey"].as_str().unwrap().to_string(),
        };
        (created["AccountId"].as_str().unwrap().to_string(), credentials)
    }

    /// CreateFunction signed with `credentials`.
    pub fn create_as(&self, credentials: &Credentials, name: &str, zip: &[u8]) -> Reply {
        self.create_as_with(credentials, name, zip, Value::Null)
    }

    /// CreateFunction signed with `credentials`, with `extra` settings.
    pub fn create_as_with(&self, credentials: &Credentials, name: &str, zip: &[u8], extra: Value) -> Reply {
        self.lambda_as(credentials, "POST", "/2015-03-31/functions", create_body(name, zip, extra).to_string().as_bytes())
    }

    /// Invoke signed with `credentials`; `name` may be an ARN (it is percent-encoded here).
    pub fn invoke_as(&self, credentials: &Credentials, name: &str, payload: &str) -> Reply {
        let path = format!("/2015-03-31/functions/{}/invocations", name.replace(':', "%3A"));
        self.signed_with(credentials, "lambda", "POST", &path, "", &[], payload.as_bytes())
    }

    /// A CloudWatch Logs call, signed with the administrator's key.
    pub fn logs(&self, action: &str, body: &Value) -> Reply {
        self.logs_as(&Server::credentials(), action, body)
    }

    /// A CloudWatch Logs call signed with `credentials`.
    pub fn logs_as(&self, credentials: &Credentials, action: &str, body: &Value) -> Reply {
        let target = format!("Logs_20140328.{action}");
        self.signed_with(
            credentials,
            "logs",
            "POST",
            "/",
            "",
            &[("x-amz-target", &target), ("content-type", "application/x-amz-json-1.1")],
            body.to_string().as_bytes(),
        )
    }
}

/// A real `ignis worker` joined to a server, on a free loopback port.
pub struct WorkerHost {
    child: Option<Child>,
    pub address: String,
    pub data: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl WorkerHost {
    /// Starts a worker with its own data directory and joins it to `server`.
    pub fn start(server: &Server, args: &[&str]) -> WorkerHost {
        let tmp = tempfile::tempdir().unwrap();
        let mut worker = WorkerHost::start_in(server, &tmp.path().join("worker"), args);
        worker._tmp = Some(tmp);
        worker
    }

    /// Starts a worker on an existing data directory (e.g. after one was killed there).
    pub fn start_in(server: &Server, data: &Path, args: &[&str]) -> WorkerHost {
        WorkerHost::joining_in(&[server], data, args)
    }

    /// Starts a worker with its own data directory that joins through `servers` (a cluster's front ends), the
    /// first first.
    pub fn joining(servers: &[&Server], args: &[&str]) -> WorkerHost {
        let tmp = tempfile::tempdir().unwrap();
        let mut worker = WorkerHost::joining_in(servers, &tmp.path().join("worker"), args);
        worker._tmp = Some(tmp);
        worker
    }

    /// The sandboxes front ends claimed on this host, as it lists them (`GET /sandboxes`, signed with the
    /// administrator's key): each `{"SandboxId", "Owner", "Tag", "MemoryMb", "Busy"}`.
    pub fn sandboxes(&self) -> Vec<serde_json::Value> {
        let reply = Server::at(&self.address).signed("ignis", "GET", "/sandboxes", "", &[], b"");
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()["Sandboxes"].as_array().unwrap().clone()
    }

    fn joining_in(servers: &[&Server], data: &Path, args: &[&str]) -> WorkerHost {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ignis"));
        let join: Vec<String> = servers.iter().map(|s| format!("http://{}", s.address)).collect();
        command.arg("worker").args(["--join", &join.join(","), "--data-dir"]).arg(data).args(args);
        if !args.contains(&"--listen") {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        if !args.contains(&"--egress") {
            command.args(["--egress", "none"]);
        }
        let (child, address) = launch(command, "worker");
        WorkerHost { child: Some(child), address, data: data.to_path_buf(), _tmp: None }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Kills the worker's process with SIGKILL (no clean-up of its own) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the worker with SIGTERM and waits for it (it ends its sandboxes first).
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            terminate(child, true);
        }
    }
}

impl Drop for WorkerHost {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            terminate(child, false);
        }
    }
}

/// A loopback address no one listens on now.
pub fn free_address() -> String {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string()
}

/// The value of the metric line `name ...` at `http://address/metrics`, once it is there.
pub fn metric(address: &str, name: &str) -> Option<f64> {
    metrics_text(address)?.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The whole reply (head and Prometheus text) of `http://address/metrics`.
pub fn metrics_text(address: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    Some(text)
}

/// A real `ignis cache` node on a free loopback port, its stripes on disk only (`--memory 0`), in its own directory.
pub struct CacheNode {
    child: Option<Child>,
    pub address: String,
    pub data: PathBuf,
    _tmp: tempfile::TempDir,
}

impl CacheNode {
    pub fn start() -> CacheNode {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("cache");
        let mut command = Command::new(env!("CARGO_BIN_EXE_ignis"));
        command.args(["cache", "--listen", "127.0.0.1:0", "--memory", "0", "--data-dir"]).arg(&data);
        let (child, address) = launch(command, "cache");
        CacheNode { child: Some(child), address, data, _tmp: tmp }
    }

    /// How many stripes the node holds (files under its directory).
    pub fn stripes(&self) -> usize {
        let mut count = 0;
        let mut dirs = vec![self.data.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                match entry.file_type() {
                    Ok(kind) if kind.is_dir() => dirs.push(entry.path()),
                    Ok(_) => count += 1,
                    Err(_) => {}
                }
            }
        }
        count
    }

    /// Sends `signal` to the node's process (e.g. 19, SIGSTOP; 18, SIGCONT).
    pub fn signal(&self, signal: i32) {
        let pid = self.child.as_ref().unwrap().id() as i32;
        // SAFETY: signals a child process we started and have not reaped.
        unsafe { libc_kill(pid, signal) };
    }

    /// Kills the node with SIGKILL and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for CacheNode {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            // A stopped node cannot end on SIGTERM until it runs again.
            // SAFETY: signals a child process we started and have not reaped.
            unsafe { libc_kill(child.id() as i32, 18) };
            terminate(child, false);
        }
    }
}

impl Server {
    /// `GET /ignis/workers`: every worker, oldest first.
    pub fn workers(&self) -> Vec<Value> {
        let reply = self.signed("ignis", "GET", "/ignis/workers", "", &[], b"");
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()["Workers"].as_array().unwrap().clone()
    }

    /// Waits until `count` workers are healthy.
    pub fn wait_for_workers(&self, count: usize) {
        let healthy = || self.workers().iter().filter(|w| w["Healthy"] == true).count();
        assert!(eventually(Duration::from_secs(10), || healthy() == count), "{} workers healthy, not {count}", healthy());
    }
}

/// CreateFunction's body for a `provided.al2023` zip, with `extra` settings on top.
fn create_body(name: &str, zip: &[u8], extra: Value) -> Value {
    use base64::Engine;
    let mut body = serde_json::json!({
        "FunctionName": name,
        "Runtime": "provided.al2023",
        "Role": "arn:aws:iam::123456789012:role/test",
        "Handler": "bootstrap",
        "Code": { "ZipFile": base64::engine::general_purpose::STANDARD.encode(zip) },
    });
    if let Value::Object(fields) = extra {
        for (k, v) in fields {
            body[k] = v;
        }
    }
    body
}
