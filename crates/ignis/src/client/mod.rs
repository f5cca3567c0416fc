//! The command-line client: Lambda's API (and CloudWatch Logs' `FilterLogEvents`) over HTTP,
//! signed with SigV4, and the OCI distribution API for `ignis image` (HTTP Basic).

mod archive;
mod http;
pub mod top;
mod image;
mod image_source;
mod network;
mod runtime;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use http::{Client, Request, Response};
pub use image::{ImageArgs, image};
pub use network::{NetworkArgs, network};
pub use runtime::{Installer, RuntimeArgs, runtime};

const API: &str = "/2015-03-31/functions";
const DEFAULT_RUNTIME: &str = "provided.al2023";
const DEFAULT_HANDLER: &str = "bootstrap";
const ROLE: &str = "arn:aws:iam::000000000000:role/ignis";

/// Where the server is and which keys to sign with.
#[derive(clap::Args, Clone)]
pub struct Endpoint {
    /// The server's URL.
    #[arg(long, env = "IGNIS_ENDPOINT", default_value = "http://127.0.0.1:9000")]
    pub endpoint: String,
    /// The server's data directory, where its credentials file is read from when neither IGNIS_ACCESS_KEY_ID and
    /// IGNIS_SECRET_ACCESS_KEY nor AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are set (default: $XDG_DATA_HOME/ignis).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct DeployArgs {
    #[command(flatten)]
    pub endpoint: Endpoint,
    /// The function's name.
    pub name: String,
    /// A directory to zip (with file modes and symbolic links kept), or a .zip file.
    pub path: PathBuf,
    /// Memory size in MB.
    #[arg(long, value_name = "MB")]
    pub memory: Option<u32>,
    /// Timeout in seconds.
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u32>,
    /// An environment variable, KEY=VALUE (repeatable). When given, replaces all the function's
    /// variables.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env_var)]
    pub env: Vec<(String, String)>,
    /// The runtime (default for new functions: provided.al2023).
    #[arg(long)]
    pub runtime: Option<String>,
    /// The handler (default for new functions: bootstrap).
    #[arg(long)]
    pub handler: Option<String>,
    /// A description of the function.
    #[arg(long)]
    pub description: Option<String>,
}

#[derive(clap::Args)]
pub struct InvokeArgs {
    #[command(flatten)]
    pub endpoint: Endpoint,
    /// The function's name.
    pub name: String,
    /// The event: JSON text, @FILE to read a file, or - to read standard input (default: {}).
    pub payload: Option<String>,
    /// Print the end of the invocation's log to standard error.
    #[arg(long)]
    pub log: bool,
}

#[derive(clap::Args)]
pub struct RmArgs {
    #[command(flatten)]
    pub endpoint: Endpoint,
    /// The function's name.
    pub name: String,
}

#[derive(clap::Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub endpoint: Endpoint,
    /// The function's name.
    pub name: String,
    /// Keep printing new log events until interrupted.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only events from this long ago on, e.g. 30s, 10m, 2h, 1d, 1h30m.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub since: Option<Duration>,
}

#[derive(clap::Args)]
pub struct AccountArgs {
    #[command(subcommand)]
    pub command: AccountCommand,
}

#[derive(clap::Subcommand)]
pub enum AccountCommand {
    /// Create an account and its first key pair; prints them as JSON (the secret is shown only
    /// this once).
    Create {
        #[command(flatten)]
        endpoint: Endpoint,
        /// The account's name: 1 to 64 letters, digits, '-' or '_', unique.
        name: String,
    },
    /// List the accounts.
    Ls {
        #[command(flatten)]
        endpoint: Endpoint,
    },
}

// ---- deploy ----

pub fn deploy(args: DeployArgs) -> Result<ExitCode, String> {
    let zip = archive::package(&args.path)?;
    let summary = deploy_zip(&Client::new(&args.endpoint)?, &args, zip)?;
    write_stdout(format!("{summary}\n").as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// Creates or updates the function; returns the line to print.
fn deploy_zip(client: &Client, args: &DeployArgs, zip: Vec<u8>) -> Result<String, String> {
    let function_path = format!("{API}/{}", encode_segment(&args.name));

    let existing = client.send(get(&function_path))?;
    let config = if existing.status == 404 {
        let mut body = Map::new();
        body.insert("FunctionName".into(), json!(args.name));
        body.insert("Runtime".into(), json!(args.runtime.as_deref().unwrap_or(DEFAULT_RUNTIME)));
        body.insert("Role".into(), json!(ROLE));
        body.insert("Handler".into(), json!(args.handler.as_deref().unwrap_or(DEFAULT_HANDLER)));
        body.insert("Code".into(), json!({ "ZipFile": BASE64.encode(&zip) }));
        add_configuration(&mut body, args);
        client.send(json_request("POST", API, &Value::Object(body)))?.check()?.json()?
    } else {
        existing.check()?;
        let code = json!({ "ZipFile": BASE64.encode(&zip) });
        let mut config = client
            .send(json_request("PUT", &format!("{function_path}/code"), &code))?
            .check()?
            .json()?;
        let mut body = Map::new();
        add_configuration(&mut body, args);
        if let Some(runtime) = &args.runtime {
            body.insert("Runtime".into(), json!(runtime));
        }
        if let Some(handler) = &args.handler {
            body.insert("Handler".into(), json!(handler));
        }
        if !body.is_empty() {
            let body = Value::Object(body);
            let path = format!("{function_path}/configuration");
            // Lambda refuses a configuration change while the code update is in progress.
            let mut attempts = 0;
            let answer = loop {
                let answer = client.send(json_request("PUT", &path, &body))?;
                attempts += 1;
                let conflict = answer.status == 409
                    && answer.header("x-amzn-ErrorType").is_some_and(|t| t.starts_with("ResourceConflictException"));
                if !conflict || attempts == 20 {
                    break answer;
                }
                std::thread::sleep(Duration::from_millis(500));
            };
            let updated = answer.check()?.json()?;
            // Keep the code's size and hash from the code update if this answer lacks them.
            if let (Value::Object(config), Value::Object(updated)) = (&mut config, updated) {
                config.extend(updated);
            }
        }
        config
    };

    let arn = config["FunctionArn"].as_str().unwrap_or(&args.name);
    let size = config["CodeSize"].as_u64().unwrap_or(zip.len() as u64);
    let sha = match config["CodeSha256"].as_str() {
        Some(sha) => sha.to_owned(),
        None => BASE64.encode(Sha256::digest(&zip)),
    };
    Ok(format!("deployed {} ({arn}, {size} bytes, sha256 {sha})", args.name))
}

/// Adds the configuration fields given on the command line (those that mean the same on create
/// and on update).
fn add_configuration(body: &mut Map<String, Value>, args: &DeployArgs) {
    if let Some(memory) = args.memory {
        body.insert("MemorySize".into(), json!(memory));
    }
    if let Some(timeout) = args.timeout {
        body.insert("Timeout".into(), json!(timeout));
    }
    if !args.env.is_empty() {
        let variables: Map<String, Value> = args.env.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        body.insert("Environment".into(), json!({ "Variables": variables }));
    }
    if let Some(description) = &args.description {
        body.insert("Description".into(), json!(description));
    }
}

// ---- invoke ----

pub fn invoke(args: InvokeArgs) -> Result<ExitCode, String> {
    let payload = read_payload(args.payload.as_deref(), std::io::stdin().lock())?;
    let invocation = invoke_with(&Client::new(&args.endpoint)?, &args, payload)?;
    if let Some(log) = &invocation.log {
        let mut stderr = std::io::stderr().lock();
        let _ = stderr.write_all(log);
        if !log.is_empty() && !log.ends_with(b"\n") {
            let _ = stderr.write_all(b"\n");
        }
    }
    let mut body = invocation.body;
    if !body.ends_with(b"\n") {
        body.push(b'\n');
    }
    write_stdout(&body)?;
    Ok(if invocation.function_error.is_some() { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// What an invocation answered.
struct Invocation {
    body: Vec<u8>,
    /// The decoded `X-Amz-Log-Result`, when asked for and sent.
    log: Option<Vec<u8>>,
    /// `X-Amz-Function-Error`: `Unhandled` or `Handled` when the function failed.
    function_error: Option<String>,
}

fn invoke_with(client: &Client, args: &InvokeArgs, payload: Vec<u8>) -> Result<Invocation, String> {
    let path = format!("{API}/{}/invocations", encode_segment(&args.name));
    let mut headers = Vec::new();
    if args.log {
        headers.push(("x-amz-log-type", "Tail"));
    }
    let response = client
        .send(Request { method: "POST", path: &path, query: "", headers, body: payload, service: "lambda" })?
        .check()?;

    let log = match response.header("x-amz-log-result") {
        Some(log) if args.log => Some(
            BASE64
                .decode(log.trim())
                .map_err(|e| format!("the server sent an invalid X-Amz-Log-Result: {e}"))?,
        ),
        _ => None,
    };
    let function_error = response.header("x-amz-function-error").map(str::to_owned);
    Ok(Invocation { body: response.body, log, function_error })
}

/// The invocation payload: `{}` by default, `-` for standard input, `@FILE` for a file's
/// contents, anything else as it is.
pub fn read_payload(arg: Option<&str>, mut stdin: impl Read) -> Result<Vec<u8>, String> {
    match arg {
        None => Ok(b"{}".to_vec()),
        Some("-") => {
            let mut data = Vec::new();
            stdin.read_to_end(&mut data).map_err(|e| format!("cannot read the payload from standard input: {e}"))?;
            Ok(data)
        }
        Some(arg) => match arg.strip_prefix('@') {
            Some(file) => std::fs::read(file).map_err(|e| format!("cannot read the payload file {file}: {e}")),
            None => Ok(arg.as_bytes().to_vec()),
        },
    }
}

// ---- workers ----

#[derive(clap::Args)]
pub struct CredentialsArgs {
    /// The server's data directory [default: $XDG_DATA_HOME/ignis or ~/.local/share/ignis].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// `ignis credentials`: the administrator's key pair, unsealed from the data directory's credentials file.
pub fn show_credentials(args: CredentialsArgs) -> Result<ExitCode, String> {
    let data_dir = args.data_dir.unwrap_or_else(crate::default_data_dir);
    let keys = http::credentials(None, None, &data_dir)?;
    let pair = serde_json::json!({ "AccessKeyId": keys.access_key_id, "SecretAccessKey": keys.secret_access_key });
    write_stdout(format!("{pair}\n").as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

pub fn workers(endpoint: Endpoint) -> Result<ExitCode, String> {
    let rows = list_workers(&Client::new(&endpoint)?)?;
    let header = ["WORKER", "ADDRESS", "HEALTHY", "MEMORY_MB", "USED_MB", "CPUS", "SANDBOXES"];
    write_stdout(format_table(header, &rows).as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// Every worker (`GET /ignis/workers`), one table row each, oldest first.
fn list_workers(client: &Client) -> Result<Vec<[String; 7]>, String> {
    let page = client
        .send(Request { method: "GET", path: "/ignis/workers", query: "", headers: vec![], body: vec![], service: "ignis" })?
        .check()?
        .json()?;
    let rows = page["Workers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|w| {
            let text = |key: &str| match &w[key] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let id = format!("worker-{}", text("WorkerId"));
            [id, text("Address"), text("Healthy"), text("MemoryMb"), text("UsedMemoryMb"), text("Cpus"), text("Sandboxes")]
        })
        .collect();
    Ok(rows)
}

// ---- ls ----

pub fn ls(endpoint: Endpoint) -> Result<ExitCode, String> {
    let rows = list_functions(&Client::new(&endpoint)?)?;
    write_stdout(format_table(["NAME", "RUNTIME", "MEMORY", "TIMEOUT", "LAST_MODIFIED"], &rows).as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// All functions, one table row each.
fn list_functions(client: &Client) -> Result<Vec<[String; 5]>, String> {
    let mut rows: Vec<[String; 5]> = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let mut query = "MaxItems=50".to_owned();
        if let Some(marker) = &marker {
            query.push_str("&Marker=");
            query.push_str(&encode_segment(marker));
        }
        let page = client
            .send(Request { method: "GET", path: &format!("{API}/"), query: &query, headers: vec![], body: vec![], service: "lambda" })?
            .check()?
            .json()?;
        for function in page["Functions"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let text = |key: &str| match &function[key] {
                Value::Null => "-".to_owned(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            rows.push([text("FunctionName"), text("Runtime"), text("MemorySize"), text("Timeout"), text("LastModified")]);
        }
        match page["NextMarker"].as_str() {
            Some(next) if !next.is_empty() && marker.as_deref() != Some(next) => marker = Some(next.to_owned()),
            _ => break,
        }
    }
    Ok(rows)
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
fn format_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: [&str; N]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == N {
                text.push_str(cell);
            } else {
                text.push_str(cell);
                text.extend(std::iter::repeat_n(' ', widths[i] - cell.chars().count() + 2));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header);
    for row in rows {
        line(std::array::from_fn(|i| row[i].as_str()));
    }
    out
}

// ---- rm ----

pub fn rm(args: RmArgs) -> Result<ExitCode, String> {
    let client = Client::new(&args.endpoint)?;
    let path = format!("{API}/{}", encode_segment(&args.name));
    client
        .send(Request { method: "DELETE", path: &path, query: "", headers: vec![], body: vec![], service: "lambda" })?
        .check()?;
    write_stdout(format!("deleted {}\n", args.name).as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

// ---- account ----

/// Ignis's own account API.
const ACCOUNTS: &str = "/ignis/accounts";

pub fn account(args: AccountArgs) -> Result<ExitCode, String> {
    match args.command {
        AccountCommand::Create { endpoint, name } => {
            let created = create_account(&Client::new(&endpoint)?, &name)?;
            let text = serde_json::to_string_pretty(&created).map_err(|e| e.to_string())?;
            write_stdout(format!("{text}\n").as_bytes())?;
        }
        AccountCommand::Ls { endpoint } => {
            let rows = list_accounts(&Client::new(&endpoint)?)?;
            write_stdout(format_table(["ACCOUNT_ID", "NAME", "CREATED"], &rows).as_bytes())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn create_account(client: &Client, name: &str) -> Result<Value, String> {
    let mut request = json_request("POST", ACCOUNTS, &json!({ "Name": name }));
    request.service = "ignis";
    client.send(request)?.check()?.json()
}

fn list_accounts(client: &Client) -> Result<Vec<[String; 3]>, String> {
    let mut request = get(ACCOUNTS);
    request.service = "ignis";
    let page = client.send(request)?.check()?.json()?;
    let text = |value: &Value| value.as_str().unwrap_or("-").to_owned();
    Ok(page["Accounts"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|a| {
            let name = if a["Administrator"] == json!(true) { format!("{} (administrator)", text(&a["Name"])) } else { text(&a["Name"]) };
            [text(&a["AccountId"]), name, text(&a["CreatedAt"])]
        })
        .collect())
}

// ---- logs ----

pub fn logs(args: LogsArgs) -> Result<ExitCode, String> {
    let client = Client::new(&args.endpoint)?;
    let mut stdout = |bytes: &[u8]| write_stdout(bytes);
    logs_with(&client, &args, &mut stdout)
}

/// Prints the function's log events with `print`; with `--follow`, never returns unless `print`
/// or a request fails.
fn logs_with(client: &Client, args: &LogsArgs, print: &mut dyn FnMut(&[u8]) -> Result<(), String>) -> Result<ExitCode, String> {
    let group = format!("/aws/lambda/{}", args.name);
    let mut start_ms: i64 = match args.since {
        Some(since) => now_ms().saturating_sub(i64::try_from(since.as_millis()).unwrap_or(i64::MAX)),
        None => 0,
    };
    // Event ids printed at timestamps >= start_ms, so that polling again from start_ms does not
    // print them twice.
    let mut seen: HashMap<String, i64> = HashMap::new();
    loop {
        let mut next_token: Option<String> = None;
        let mut newest = start_ms;
        loop {
            let mut body = json!({ "logGroupName": group, "startTime": start_ms });
            if let Some(token) = &next_token {
                body["nextToken"] = json!(token);
            }
            let mut request = json_request("POST", "/", &body);
            request.service = "logs";
            request.headers = vec![
                ("x-amz-target", "Logs_20140328.FilterLogEvents"),
                ("content-type", "application/x-amz-json-1.1"),
            ];
            let response = client.send(request)?;
            if args.follow && is_not_found(&response) {
                // No invocation has logged anything yet: wait for one.
                break;
            }
            let page = response.check()?.json()?;
            let mut out = Vec::new();
            for event in page["events"].as_array().map(Vec::as_slice).unwrap_or_default() {
                let timestamp = event["timestamp"].as_i64().unwrap_or(start_ms);
                if let Some(id) = event["eventId"].as_str() {
                    if seen.contains_key(id) {
                        continue;
                    }
                    seen.insert(id.to_owned(), timestamp);
                }
                newest = newest.max(timestamp);
                let message = event["message"].as_str().unwrap_or_default();
                out.extend_from_slice(message.as_bytes());
                if !message.ends_with('\n') {
                    out.push(b'\n');
                }
            }
            print(&out)?;
            match page["nextToken"].as_str() {
                Some(token) if !token.is_empty() && next_token.as_deref() != Some(token) => {
                    next_token = Some(token.to_owned())
                }
                _ => break,
            }
        }
        if !args.follow {
            return Ok(ExitCode::SUCCESS);
        }
        start_ms = newest;
        seen.retain(|_, t| *t >= start_ms);
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn is_not_found(response: &Response) -> bool {
    response.status >= 400
        && error_type(response.header("x-amzn-ErrorType"), &response.body).as_deref() == Some("ResourceNotFoundException")
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Parses `30s`, `10m`, `2h`, `1d`, `1w`, combinations such as `1h30m`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration '{text}' (expected e.g. 30s, 10m, 2h, 1d)");
    let text = text.trim();
    if text.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        total = n.checked_mul(unit).and_then(|s| total.checked_add(s)).ok_or_else(bad)?;
        number.clear();
    }
    if !number.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// Parses `KEY=VALUE` (the value may be empty and may contain `=`).
pub fn parse_env_var(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got '{text}'")),
    }
}

// ---- shared ----

fn get(path: &str) -> Request<'_> {
    Request { method: "GET", path, query: "", headers: vec![], body: vec![], service: "lambda" }
}

fn json_request<'a>(method: &'a str, path: &'a str, body: &Value) -> Request<'a> {
    Request {
        method,
        path,
        query: "",
        headers: vec![("content-type", "application/json")],
        body: body.to_string().into_bytes(),
        service: "lambda",
    }
}

/// Percent-encodes a path segment or query value: everything but `A-Za-z0-9-_.~`.
pub fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The error type of a failed answer: the `x-amzn-ErrorType` header (without any `:…` suffix),
/// else the JSON body's `__type` (without any `…#` prefix), `code` or `Type`.
fn error_type(header: Option<&str>, body: &[u8]) -> Option<String> {
    if let Some(header) = header.map(|h| h.split(':').next().unwrap_or(h).trim()).filter(|h| !h.is_empty()) {
        return Some(header.to_owned());
    }
    let json: Value = serde_json::from_slice(body).ok()?;
    ["__type", "code", "Type"]
        .iter()
        .find_map(|k| json[*k].as_str())
        .map(|t| t.rsplit('#').next().unwrap_or(t).to_owned())
        .filter(|t| !t.is_empty())
}

/// One line describing a failed answer: `<Type>: <message>`.
pub fn error_message(status: u16, header: Option<&str>, body: &[u8]) -> String {
    let kind = error_type(header, body).unwrap_or_else(|| format!("HTTP {status}"));
    let message = match serde_json::from_slice::<Value>(body) {
        Ok(json) => ["message", "Message", "errorMessage"].iter().find_map(|k| json[*k].as_str().map(str::to_owned)),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
            (!text.is_empty()).then(|| if text.chars().count() > 300 { text.chars().take(300).collect::<String>() + "…" } else { text })
        }
    };
    match message {
        Some(message) if !message.is_empty() => format!("{kind}: {message}"),
        _ => kind,
    }
}

/// Writes to standard output; a closed pipe (as with `| head`) ends the program quietly.
fn write_stdout(bytes: &[u8]) -> Result<(), String> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(141),
        Err(e) => Err(format!("cannot write to standard output: {e}")),
    }
}
