//! What the benchmark binaries share: the signed HTTP client, the `ignis server` process, and the table's rows.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use ignis_sigv4::Credentials;

use crate::stats::Stats;

pub const KEY_ID: &str = "AKIABENCHBENCHBENCH0";
pub const SECRET: &str = "bench/secret/key/for/the/ignis/benchmark";
const REGION: &str = "us-east-1";
/// Longest any single request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// The client: hyper 1 over a keep-alive HTTP/1.1 connection, every request signed.

pub struct Conn {
    pub address: String,
    /// The `Host` requests are signed and sent with (the address, unless a function URL's).
    pub host: String,
    pub creds: Credentials,
    sender: SendRequest<Full<Bytes>>,
}

pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
    /// From sending the request to the first byte of the body (to the end, for an empty one).
    #[allow(dead_code, reason = "the urls benchmark's")]
    pub first_byte: Duration,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).chars().take(500).collect()
    }
}

pub fn sign_request(creds: &Credentials, host: &str, method: &str, path: &str, extra: &[(&str, &str)], body: &[u8]) -> Vec<(String, String)> {
    sign_for("lambda", creds, host, method, path, extra, body)
}

/// Signs a request for `service` (`lambda`, or `logs` with an `x-amz-target` header in `extra`).
pub fn sign_for(service: &str, creds: &Credentials, host: &str, method: &str, path: &str, extra: &[(&str, &str)], body: &[u8]) -> Vec<(String, String)> {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let content_type = if service == "logs" { "application/x-amz-json-1.1" } else { "application/json" };
    let mut headers: Vec<(&str, &str)> = vec![("host", host), ("content-type", content_type)];
    headers.extend_from_slice(extra);
    let parts = ignis_sigv4::RequestParts { method, path, query, headers: &headers, body };
    let mut all: Vec<(String, String)> = headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
    all.extend(ignis_sigv4::sign(&parts, creds, REGION, service, SystemTime::now()));
    all
}

impl Conn {
    pub async fn connect(address: &str, creds: Credentials) -> Result<Conn, String> {
        Conn::connect_to_host(address, address, creds).await
    }

    /// A connection to `address` whose requests name `host` (a function URL's, on the URL listener).
    pub async fn connect_to_host(address: &str, host: &str, creds: Credentials) -> Result<Conn, String> {
        let sender = open(address).await?;
        Ok(Conn { address: address.to_string(), host: host.to_string(), creds, sender })
    }

    pub async fn reconnect(&mut self) -> Result<(), String> {
        self.sender = open(&self.address).await?;
        Ok(())
    }

    pub async fn request(&mut self, method: &str, path: &str, extra: &[(&str, &str)], body: &[u8]) -> Result<Reply, String> {
        self.timed(method, path, extra, body).await.map(|(_, reply)| reply)
    }

    /// Signs and sends a request; the time from sending it to having the whole answer.
    pub async fn timed(&mut self, method: &str, path: &str, extra: &[(&str, &str)], body: &[u8]) -> Result<(Duration, Reply), String> {
        self.timed_for("lambda", method, path, extra, body).await
    }

    /// A CloudWatch Logs call (`action`, e.g. `FilterLogEvents`).
    pub async fn logs(&mut self, action: &str, body: &serde_json::Value) -> Result<Reply, String> {
        let target = format!("Logs_20140328.{action}");
        self.timed_for("logs", "POST", "/", &[("x-amz-target", &target)], body.to_string().as_bytes()).await.map(|(_, reply)| reply)
    }

    pub async fn timed_for(&mut self, service: &str, method: &str, path: &str, extra: &[(&str, &str)], body: &[u8]) -> Result<(Duration, Reply), String> {
        self.timed_within(REQUEST_TIMEOUT, service, method, path, extra, body).await
    }

    /// A Lambda request that may take up to `limit` (e.g. a CreateFunction that prepares a large image).
    #[allow(dead_code, reason = "the images benchmark's; ignis-bench has no long requests")]
    pub async fn request_within(&mut self, limit: Duration, method: &str, path: &str, body: &[u8]) -> Result<(Duration, Reply), String> {
        self.timed_within(limit, "lambda", method, path, &[], body).await
    }

    async fn timed_within(
        &mut self,
        limit: Duration,
        service: &str,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(Duration, Reply), String> {
        let headers = sign_for(service, &self.creds, &self.host, method, path, extra, body);
        let mut builder = hyper::Request::builder().method(method).uri(path);
        for (name, value) in &headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let request = builder.body(Full::new(Bytes::copy_from_slice(body))).map_err(|e| format!("bad request: {e}"))?;
        let started = Instant::now();
        let exchange = async {
            self.sender.ready().await.map_err(|e| format!("connection to {} lost: {e}", self.address))?;
            let response = self.sender.send_request(request).await.map_err(|e| format!("{method} {path} to {} failed: {e}", self.address))?;
            let (parts, mut incoming) = response.into_parts();
            let mut body = Vec::new();
            let mut first_byte = None;
            while let Some(frame) = incoming.frame().await {
                let frame = frame.map_err(|e| format!("reading the answer to {method} {path}: {e}"))?;
                if let Some(data) = frame.data_ref().filter(|d| !d.is_empty()) {
                    first_byte.get_or_insert_with(|| started.elapsed());
                    body.extend_from_slice(data);
                }
            }
            let first_byte = first_byte.unwrap_or_else(|| started.elapsed());
            Ok::<_, String>(Reply { status: parts.status.as_u16(), headers: parts.headers, body: Bytes::from(body), first_byte })
        };
        let reply = tokio::time::timeout(limit, exchange)
            .await
            .map_err(|_| format!("{method} {path} to {} took over {} s", self.address, limit.as_secs()))??;
        Ok((started.elapsed(), reply))
    }
}

pub async fn open(address: &str) -> Result<SendRequest<Full<Bytes>>, String> {
    if !address.starts_with("127.0.0.1:") {
        return Err(format!("refusing to send traffic to {address}: only 127.0.0.1 is benchmarked"));
    }
    let stream = tokio::net::TcpStream::connect(address).await.map_err(|e| format!("cannot connect to {address}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| format!("TCP_NODELAY: {e}"))?;
    let (sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("HTTP handshake with {address}: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

// ---------------------------------------------------------------------------------------------
// The ignis server process.

pub struct Server {
    child: Option<Child>,
    pub address: String,
}

impl Server {
    pub fn start(exe: &Path, data: &Path, extra: &[&str]) -> Result<Server, String> {
        let mut command = Command::new(exe);
        command.arg("server").args(["--listen", "127.0.0.1:0", "--data-dir"]).arg(data).args(extra);
        Server::launch(command, exe)
    }

    /// An `ignis worker` joined through `servers` (a cluster's front ends, the first first; its process is handled
    /// like a server's); `octet` gives its sandboxes a range of their own (see [`own_range`]).
    pub fn worker(exe: &Path, servers: &[&str], data: &Path, octet: u8) -> Result<Server, String> {
        let join: Vec<String> = servers.iter().map(|server| format!("http://{server}")).collect();
        let mut command = Command::new(exe);
        command.arg("worker").args(["--join", &join.join(","), "--listen", "127.0.0.1:0", "--data-dir"]).arg(data);
        command.args(own_range(exe, octet));
        Server::launch(command, exe)
    }

    fn launch(mut command: Command, exe: &Path) -> Result<Server, String> {
        let mut child = command
            .env("IGNIS_ACCESS_KEY_ID", KEY_ID)
            .env("IGNIS_SECRET_ACCESS_KEY", SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        // From here on, `server` stops the child whatever happens.
        let mut server = Server { child: Some(child), address: String::new() };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let tx = Some(tx);
            // Keep draining stdout for the server's whole life, so it never blocks on it.
            while let Some(Ok(line)) = lines.next() {
                if let (Some(rest), Some(tx)) = (line.split("listening on http://").nth(1), tx.as_ref()) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or_default().to_string());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(address) => server.address = address,
            Err(_) => {
                let status = server.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
                return Err(match status {
                    Some(status) => format!("ignis server exited ({status}) before listening"),
                    None => "ignis server did not print its address within 30 s".into(),
                });
            }
        }
        if !server.address.starts_with("127.0.0.1:") {
            return Err(format!("ignis server listens on {:?}, not on 127.0.0.1", server.address));
        }
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGKILL (a crash: no shutdown at all), and reaps it.
    #[allow(dead_code, reason = "the cluster benchmark's; ignis-bench shares this file")]
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then up to 20 s for it to end its sandboxes and exit, else SIGKILL.
    pub fn stop(&mut self) -> Result<(), String> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        // SAFETY: signals a child process we started and have not reaped, so its pid is ours.
        unsafe { kill(child.id() as i32, 15) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => return Err(format!("ignis server exited with {status} after SIGTERM")),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err("ignis server did not stop within 20 s of SIGTERM; killed it".into());
                }
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("ignis-bench: {e}");
        }
    }
}

unsafe extern "C" {
    fn kill(pid: i32, signal: i32) -> i32;
}

/// The directory with the build's `ignis`, `ignis-init` and `bootstrap`: `given`, else this program's own.
pub fn build_dir(given: Option<&Path>) -> Result<PathBuf, String> {
    let dir = match given {
        Some(dir) => dir.to_path_buf(),
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find this program's path: {e}"))?
            .parent()
            .ok_or("this program has no parent directory")?
            .to_path_buf(),
    };
    for exe in ["ignis", "ignis-init", "bootstrap"].map(|name| dir.join(name)) {
        if !exe.is_file() {
            return Err(format!("{} not found: build the workspace (cargo build --release --workspace) or pass --bin-dir", exe.display()));
        }
    }
    Ok(dir)
}

pub fn zip_of(name: &str, content: &[u8], mode: u32) -> Result<Vec<u8>, String> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().unix_permissions(mode);
    writer.start_file(name, options).map_err(|e| format!("zip: {e}"))?;
    writer.write_all(content).map_err(|e| format!("zip: {e}"))?;
    Ok(writer.finish().map_err(|e| format!("zip: {e}"))?.into_inner())
}

/// Whether an Invoke answer is the example's success.
pub fn check_invoke(reply: &Reply) -> Result<(), String> {
    if reply.status != 200 {
        return Err(format!("invoke answered {}: {}", reply.status, reply.text()));
    }
    if let Some(kind) = reply.header("x-amz-function-error") {
        return Err(format!("function error ({kind}): {}", reply.text()));
    }
    Ok(())
}

/// A number of milliseconds from the `REPORT` line of a log tail, e.g. `Init Duration: 4.20 ms`.
pub fn report_field(tail: &str, field: &str) -> Option<f64> {
    let line = tail.lines().rev().find(|l| l.starts_with("REPORT "))?;
    line.split('\t').find_map(|part| part.trim().strip_prefix(field)?.strip_prefix(": ")?.trim_end_matches(" ms").trim().parse().ok())
}

pub fn ms(v: f64) -> String {
    if v >= 100.0 { format!("{v:.1}") } else { format!("{v:.3}") }
}

pub fn row(label: &str, s: Option<&Stats>, note: &str) {
    match s {
        Some(s) => println!(
            "  {label:<34} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}  {note}",
            s.n,
            ms(s.min),
            ms(s.p50),
            ms(s.p90),
            ms(s.p99),
            ms(s.max)
        ),
        None => println!("  {label:<34} {:>6} {:>9}  {note}", 0, "no data"),
    }
}

/// `measured` / `reference` at p50, p90 and p99.
pub fn ratio_row(label: &str, measured: &Stats, reference: &Stats, note: &str) {
    println!(
        "  {label:<34} {:>6} {:>9} {:>8.3}x {:>8.3}x {:>8.3}x {:>9}  {note}",
        "",
        "",
        measured.p50 / reference.p50,
        measured.p90 / reference.p90,
        measured.p99 / reference.p99,
        ""
    );
}

pub fn verdict(ok: bool) -> &'static str {
    if ok { "MET" } else { "MISSED" }
}

/// The arguments that give a server of `exe` a sandbox range of its own (`10.<octet>.0.0/16`: one server per range
/// and machine), if that build has sandbox networking; none for an older build.
pub fn own_range(exe: &std::path::Path, octet: u8) -> Vec<String> {
    let help = std::process::Command::new(exe).args(["server", "--help"]).output();
    if help.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--sandbox-network")) {
        vec!["--sandbox-network".into(), format!("10.{octet}.0.0/16")]
    } else {
        Vec::new()
    }
}
