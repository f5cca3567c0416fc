use std::fs;
use std::io::Cursor;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::sync::{Arc, Mutex};

use clap::Parser;
use ignis_sigv4::Credentials;

use super::http::{Keys, Url, credentials};
use super::*;

// ---- pure helpers ----

#[test]
fn payload_argument() {
    let no_stdin = std::io::empty();
    assert_eq!(read_payload(None, no_stdin).unwrap(), b"{}");
    assert_eq!(read_payload(Some(r#"{"a":1}"#), std::io::empty()).unwrap(), br#"{"a":1}"#);
    assert_eq!(read_payload(Some("-"), Cursor::new(b"[1, 2]".to_vec())).unwrap(), b"[1, 2]");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("event.json");
    fs::write(&file, b"{\"from\": \"file\"}\n").unwrap();
    let arg = format!("@{}", file.display());
    assert_eq!(read_payload(Some(&arg), std::io::empty()).unwrap(), b"{\"from\": \"file\"}\n");
    let missing = format!("@{}", dir.path().join("nope.json").display());
    let err = read_payload(Some(&missing), std::io::empty()).unwrap_err();
    assert!(err.starts_with("cannot read the payload file") && err.contains("nope.json"), "{err}");
}

#[test]
fn error_bodies() {
    let body = br#"{"Type":"User","message":"Function not found: arn:aws:lambda:us-east-1:000000000000:function:f"}"#;
    assert_eq!(
        error_message(404, Some("ResourceNotFoundException"), body),
        "ResourceNotFoundException: Function not found: arn:aws:lambda:us-east-1:000000000000:function:f"
    );
    // "Message" too, and a type header with a suffix.
    assert_eq!(
        error_message(400, Some("InvalidParameterValueException:http://internal.amazon.com/coral/"), br#"{"Message":"bad memory"}"#),
        "InvalidParameterValueException: bad memory"
    );
    // The JSON protocol's __type, without a header.
    assert_eq!(
        error_message(400, None, br#"{"__type":"com.amazonaws.logs#ResourceNotFoundException","message":"The specified log group does not exist."}"#),
        "ResourceNotFoundException: The specified log group does not exist."
    );
    assert_eq!(error_message(500, None, b""), "HTTP 500");
    assert_eq!(error_message(502, None, b"Bad   gateway\n"), "HTTP 502: Bad gateway");
    assert_eq!(error_message(403, Some("AccessDeniedException"), b"{}"), "AccessDeniedException");
}

#[test]
fn urls() {
    let url = Url::parse("http://127.0.0.1:9000").unwrap();
    assert_eq!(
        url,
        Url { authority: "127.0.0.1:9000".into(), host: "127.0.0.1".into(), port: 9000, prefix: String::new() }
    );
    let url = Url::parse("http://example.com/ignis/").unwrap();
    assert_eq!((url.host.as_str(), url.port, url.prefix.as_str(), url.authority.as_str()), ("example.com", 80, "/ignis", "example.com"));
    let url = Url::parse("http://[::1]:9001").unwrap();
    assert_eq!((url.host.as_str(), url.port, url.authority.as_str()), ("::1", 9001, "[::1]:9001"));
    assert!(Url::parse("https://example.com").unwrap_err().contains("https is not supported"));
    assert!(Url::parse("example.com:9000").is_err());
    assert!(Url::parse("http://host:99999").is_err());
    assert!(Url::parse("http://").is_err());
    assert!(Url::parse("http://host?x=1").is_err());
}

#[test]
fn credentials_from_env_or_file() {
    let dir = tempfile::tempdir().unwrap();
    let from_env = credentials(Some("AK".into()), Some("SK".into()), dir.path()).unwrap();
    assert_eq!(from_env, Credentials { access_key_id: "AK".into(), secret_access_key: "SK".into() });
    assert!(credentials(Some("AK".into()), None, dir.path()).unwrap_err().contains("IGNIS_SECRET_ACCESS_KEY"));
    let missing = credentials(None, None, dir.path()).unwrap_err();
    assert!(missing.contains("IGNIS_ACCESS_KEY_ID") && missing.contains("IGNIS_SECRET_ACCESS_KEY"), "{missing}");
    fs::write(dir.path().join("credentials"), r#"{"AccessKeyId": "AKFILE", "SecretAccessKey": "secret/file"}"#).unwrap();
    let from_file = credentials(Some(String::new()), None, dir.path()).unwrap();
    assert_eq!(from_file, Credentials { access_key_id: "AKFILE".into(), secret_access_key: "secret/file".into() });
    fs::write(dir.path().join("credentials"), "not json").unwrap();
    assert!(credentials(None, None, dir.path()).unwrap_err().contains("is not valid"));
}

#[test]
fn keys_come_from_ignis_variables_then_aws_variables_then_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("credentials"), r#"{"AccessKeyId": "AKFILE", "SecretAccessKey": "s"}"#).unwrap();
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
    };
    let all = [
        ("IGNIS_ACCESS_KEY_ID", "AKIGNIS"),
        ("IGNIS_SECRET_ACCESS_KEY", "si"),
        ("AWS_ACCESS_KEY_ID", "ASIAAWS"),
        ("AWS_SECRET_ACCESS_KEY", "sa"),
        ("AWS_SESSION_TOKEN", "token"),
    ];
    let keys = Keys::find(env(Box::leak(Box::new(all))), dir.path()).unwrap();
    assert_eq!((keys.credentials.access_key_id.as_str(), keys.session_token), ("AKIGNIS", None));
    assert_eq!(keys.origin, "key AKIGNIS from IGNIS_ACCESS_KEY_ID");
    let keys = Keys::find(env(Box::leak(Box::new([all[2], all[3], all[4]]))), dir.path()).unwrap();
    assert_eq!((keys.credentials.access_key_id.as_str(), keys.session_token.as_deref()), ("ASIAAWS", Some("token")));
    assert_eq!(keys.origin, "key ASIAAWS from AWS_ACCESS_KEY_ID");
    let half = Keys::find(env(Box::leak(Box::new([all[2]]))), dir.path()).err().unwrap();
    assert!(half.contains("AWS_SECRET_ACCESS_KEY"), "{half}");
    let keys = Keys::find(env(&[]), dir.path()).unwrap();
    assert_eq!(keys.credentials.access_key_id, "AKFILE");
    assert_eq!(keys.origin, format!("key AKFILE from {}", dir.path().join("credentials").display()));
}

#[test]
fn small_parsers() {
    assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
    assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
    assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
    assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
    for bad in ["", "m", "10x", "10m5", "-5m"] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
    assert_eq!(parse_env_var("A=b=c").unwrap(), ("A".into(), "b=c".into()));
    assert_eq!(parse_env_var("EMPTY=").unwrap(), ("EMPTY".into(), String::new()));
    assert!(parse_env_var("=x").is_err() && parse_env_var("NOEQ").is_err());
    assert_eq!(
        encode_segment("arn:aws:lambda:us-east-1:000000000000:function:f"),
        "arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Af"
    );
    assert_eq!(encode_segment("a b/c~d_e.f-g"), "a%20b%2Fc~d_e.f-g");
    let table = format_table(["NAME", "X"], &[["long-name".into(), "1".into()], ["f".into(), "".into()]]);
    assert_eq!(table, "NAME       X\nlong-name  1\nf\n");
}

#[test]
fn command_line() {
    use clap::CommandFactory;
    crate::Cli::command().debug_assert();
    let cli = crate::Cli::try_parse_from([
        "ignis", "deploy", "fn", "./dir", "--memory", "256", "--env", "A=1", "--env", "B=x=y", "--timeout", "30",
        "--endpoint", "http://h:1", "--data-dir", "/tmp/d",
    ])
    .unwrap();
    let crate::Command::Deploy(args) = cli.command else { panic!("not deploy") };
    assert_eq!(args.name, "fn");
    assert_eq!(args.memory, Some(256));
    assert_eq!(args.timeout, Some(30));
    assert_eq!(args.env, vec![("A".into(), "1".into()), ("B".into(), "x=y".into())]);
    assert_eq!(args.endpoint.endpoint, "http://h:1");
    assert_eq!(args.endpoint.data_dir.as_deref(), Some(std::path::Path::new("/tmp/d")));
    assert!(crate::Cli::try_parse_from(["ignis", "deploy", "fn", "dir", "--env", "novalue"]).is_err());
    let cli = crate::Cli::try_parse_from(["ignis", "logs", "fn", "-f", "--since", "5m"]).unwrap();
    let crate::Command::Logs(args) = cli.command else { panic!("not logs") };
    assert!(args.follow);
    assert_eq!(args.since, Some(Duration::from_secs(300)));
    let cli = crate::Cli::try_parse_from(["ignis", "invoke", "fn", "@event.json", "--log"]).unwrap();
    let crate::Command::Invoke(args) = cli.command else { panic!("not invoke") };
    assert!(args.log);
    assert_eq!(args.payload.as_deref(), Some("@event.json"));
}

// ---- zip ----

#[test]
fn zipping_keeps_modes_and_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::write(root.join("bootstrap"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(root.join("bootstrap"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(root.join("data.txt"), b"data").unwrap();
    fs::set_permissions(root.join("data.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::create_dir(root.join("lib")).unwrap();
    fs::write(root.join("lib/libx.so.1"), vec![7u8; 10_000]).unwrap();
    symlink("libx.so.1", root.join("lib/libx.so")).unwrap();
    // A link out of the tree is stored as a link, not followed.
    symlink("/etc/passwd", root.join("outside")).unwrap();
    symlink("lib", root.join("lib-link")).unwrap();

    let zip = ignis_store::zip_tree(root).unwrap();
    assert_eq!(ignis_store::zip_tree(root).unwrap(), zip, "zipping is deterministic");
    let mut archive = zip::ZipArchive::new(Cursor::new(zip)).unwrap();
    let mut entries = Vec::new();
    for i in 0..archive.len() {
        let mut file = archive.by_index(i).unwrap();
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut content).unwrap();
        entries.push((file.name().unwrap().into_owned(), file.unix_mode().unwrap(), file.is_symlink(), content));
    }
    let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names, ["bootstrap", "data.txt", "lib/", "lib/libx.so", "lib/libx.so.1", "lib-link", "outside"]);
    let find = |name: &str| entries.iter().find(|e| e.0 == name).unwrap();
    assert_eq!(find("bootstrap").1 & 0o7777, 0o755);
    assert_eq!(find("bootstrap").1 & 0o170000, 0o100000);
    assert_eq!(find("bootstrap").3, b"#!/bin/sh\necho hi\n");
    assert_eq!(find("data.txt").1 & 0o777, 0o640);
    assert_eq!(find("lib/").1 & 0o170000, 0o040000);
    assert_eq!(find("lib/libx.so.1").3.len(), 10_000);
    assert!(find("lib/libx.so").2);
    assert_eq!(find("lib/libx.so").3, b"libx.so.1");
    assert!(find("outside").2);
    assert_eq!(find("outside").3, b"/etc/passwd");
    assert!(find("lib-link").2);
    assert!(!find("bootstrap").2);
}

#[test]
fn package_sends_zip_files_as_they_are() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("bootstrap"), b"x").unwrap();
    let zip = ignis_store::zip_tree(dir.path()).unwrap();
    let file = dir.path().join("fn.zip");
    fs::write(&file, &zip).unwrap();
    assert_eq!(archive::package(&file).unwrap(), zip);
    let err = archive::package(&dir.path().join("bootstrap")).unwrap_err();
    assert!(err.contains("neither a directory nor a zip file"), "{err}");
    let err = archive::package(&dir.path().join("missing")).unwrap_err();
    assert!(err.starts_with("cannot read"), "{err}");
}

// ---- against a fake server ----

const KEY: &str = "AKIDTEST";
const SECRET: &str = "test/secret";

#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    service: String,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

type Answer = (u16, Vec<(&'static str, String)>, Vec<u8>);

/// A server that checks each request's signature, records it and answers with `handler`.
/// Returns its endpoint and the record.
fn fake_server(handler: impl Fn(&Recorded, usize) -> Answer + Send + Sync + 'static) -> (String, Arc<Mutex<Vec<Recorded>>>) {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let record: Arc<Mutex<Vec<Recorded>>> = Arc::default();
    let handler = Arc::new(handler);
    let rec = record.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (rec, handler) = (rec.clone(), handler.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (rec, handler) = (rec.clone(), handler.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.unwrap().to_bytes().to_vec();
                            let headers: Vec<(String, String)> = parts
                                .headers
                                .iter()
                                .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
                                .collect();
                            let borrowed: Vec<(&str, &str)> =
                                headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                            let request_parts = ignis_sigv4::RequestParts {
                                method: parts.method.as_str(),
                                path: parts.uri.path(),
                                query: parts.uri.query().unwrap_or(""),
                                headers: &borrowed,
                                body: &body,
                            };
                            let verified = ignis_sigv4::verify(
                                &request_parts,
                                |id| (id == KEY).then(|| SECRET.to_owned()),
                                SystemTime::now(),
                            );
                            let (status, answer_headers, answer_body) = match verified {
                                Err(e) => (
                                    403,
                                    vec![("x-amzn-ErrorType", e.aws_error_type().to_owned())],
                                    json!({ "message": e.to_string() }).to_string().into_bytes(),
                                ),
                                Ok(v) => {
                                    let recorded = Recorded {
                                        method: parts.method.to_string(),
                                        path: parts.uri.path().to_owned(),
                                        query: parts.uri.query().unwrap_or("").to_owned(),
                                        headers: headers.clone(),
                                        body,
                                        service: v.service,
                                    };
                                    let n = {
                                        let mut rec = rec.lock().unwrap();
                                        rec.push(recorded.clone());
                                        rec.len() - 1
                                    };
                                    handler(&recorded, n)
                                }
                            };
                            let mut response = hyper::Response::builder().status(status);
                            for (n, v) in answer_headers {
                                response = response.header(n, v);
                            }
                            Ok::<_, std::convert::Infallible>(response.body(Full::new(bytes::Bytes::from(answer_body))).unwrap())
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    (endpoint, record)
}

fn client(endpoint: &str) -> Client {
    let credentials = Credentials { access_key_id: KEY.into(), secret_access_key: SECRET.into() };
    Client::with_credentials(endpoint, credentials, "us-east-1".into()).unwrap()
}

fn not_found() -> Answer {
    (
        404,
        vec![("x-amzn-ErrorType", "ResourceNotFoundException".into())],
        br#"{"Type":"User","message":"Function not found"}"#.to_vec(),
    )
}

fn config_json(name: &str) -> Vec<u8> {
    json!({
        "FunctionName": name,
        "FunctionArn": format!("arn:aws:lambda:us-east-1:000000000000:function:{name}"),
        "CodeSize": 123,
        "CodeSha256": "c2hh",
    })
    .to_string()
    .into_bytes()
}

fn deploy_args(endpoint: &str, name: &str) -> DeployArgs {
    DeployArgs {
        endpoint: Endpoint { endpoint: endpoint.into(), data_dir: None },
        name: name.into(),
        path: PathBuf::from("unused"),
        memory: None,
        timeout: None,
        env: vec![],
        runtime: None,
        handler: None,
        description: None,
    }
}

#[test]
fn deploy_creates_a_missing_function() {
    let (endpoint, record) = fake_server(|req, _| match (req.method.as_str(), req.path.as_str()) {
        ("GET", _) => not_found(),
        ("POST", "/2015-03-31/functions") => (201, vec![], config_json("hello")),
        _ => (500, vec![], vec![]),
    });
    let mut args = deploy_args(&endpoint, "hello");
    args.memory = Some(256);
    args.env = vec![("GREETING".into(), "hi there".into())];
    args.description = Some("says hi".into());
    let zip = b"PK\x03\x04 pretend".to_vec();
    let line = deploy_zip(&client(&endpoint), &args, zip.clone()).unwrap();
    assert_eq!(line, "deployed hello (arn:aws:lambda:us-east-1:000000000000:function:hello, 123 bytes, sha256 c2hh)");

    let record = record.lock().unwrap();
    assert_eq!(record.len(), 2);
    assert_eq!((record[0].method.as_str(), record[0].path.as_str()), ("GET", "/2015-03-31/functions/hello"));
    assert_eq!(record[0].service, "lambda");
    let create = record[1].json();
    assert_eq!(create["FunctionName"], "hello");
    assert_eq!(create["Runtime"], "provided.al2023");
    assert_eq!(create["Handler"], "bootstrap");
    assert_eq!(create["Role"], "arn:aws:iam::000000000000:role/ignis");
    assert_eq!(create["MemorySize"], 256);
    assert!(create.get("Timeout").is_none());
    assert_eq!(create["Environment"], json!({ "Variables": { "GREETING": "hi there" } }));
    assert_eq!(create["Description"], "says hi");
    assert_eq!(BASE64.decode(create["Code"]["ZipFile"].as_str().unwrap()).unwrap(), zip);
    assert_eq!(record[1].header("content-type"), Some("application/json"));
}

#[test]
fn deploy_updates_an_existing_function() {
    let (endpoint, record) = fake_server(|req, n| match (req.method.as_str(), req.path.as_str()) {
        ("GET", _) => (200, vec![], br#"{"Configuration": {}}"#.to_vec()),
        ("PUT", "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Ax/code") => {
            (200, vec![], config_json("x"))
        }
        // The first configuration update meets a conflict, the second goes through.
        ("PUT", p) if p.ends_with("/configuration") && n == 2 => (
            409,
            vec![("x-amzn-ErrorType", "ResourceConflictException".into())],
            br#"{"message":"update in progress"}"#.to_vec(),
        ),
        ("PUT", p) if p.ends_with("/configuration") => (200, vec![], br#"{"FunctionArn":"arn:x","MemorySize":512}"#.to_vec()),
        _ => (500, vec![], vec![]),
    });
    let name = "arn:aws:lambda:us-east-1:000000000000:function:x";
    let mut args = deploy_args(&endpoint, name);
    args.timeout = Some(60);
    args.handler = Some("main".into());
    let line = deploy_zip(&client(&endpoint), &args, b"PK\x03\x04".to_vec()).unwrap();
    assert_eq!(line, format!("deployed {name} (arn:x, 123 bytes, sha256 c2hh)"));
    let record = record.lock().unwrap();
    let calls: Vec<(&str, &str)> = record.iter().map(|r| (r.method.as_str(), r.path.rsplit('/').next().unwrap())).collect();
    assert_eq!(calls[0].0, "GET");
    assert_eq!(&calls[1..], [("PUT", "code"), ("PUT", "configuration"), ("PUT", "configuration")]);
    assert_eq!(record[1].json(), json!({ "ZipFile": BASE64.encode(b"PK\x03\x04") }));
    assert_eq!(record[3].json(), json!({ "Timeout": 60, "Handler": "main" }));

    // Without configuration flags only the code is updated.
    drop(record);
    let (endpoint, record) = fake_server(|req, _| match req.method.as_str() {
        "GET" => (200, vec![], b"{}".to_vec()),
        _ => (200, vec![], config_json("y")),
    });
    deploy_zip(&client(&endpoint), &deploy_args(&endpoint, "y"), b"PK\x03\x04".to_vec()).unwrap();
    assert_eq!(record.lock().unwrap().len(), 2);
}

#[test]
fn deploy_reports_server_errors() {
    let (endpoint, _) = fake_server(|req, _| match req.method.as_str() {
        "GET" => not_found(),
        _ => (
            400,
            vec![("x-amzn-ErrorType", "InvalidParameterValueException".into())],
            br#"{"message":"MemorySize must be between 128 and 10240"}"#.to_vec(),
        ),
    });
    let err = deploy_zip(&client(&endpoint), &deploy_args(&endpoint, "f"), b"PK\x03\x04".to_vec()).unwrap_err();
    assert_eq!(err, "InvalidParameterValueException: MemorySize must be between 128 and 10240");
}

#[test]
fn wrong_keys_are_reported() {
    let (endpoint, record) = fake_server(|_, _| (200, vec![], b"{}".to_vec()));
    let bad = Credentials { access_key_id: KEY.into(), secret_access_key: "wrong".into() };
    let client = Client::with_credentials(&endpoint, bad, "us-east-1".into()).unwrap();
    let err = list_functions(&client).unwrap_err();
    assert!(err.starts_with("InvalidSignatureException: The request signature we calculated"), "{err}");
    assert!(record.lock().unwrap().is_empty());
}

#[test]
fn invoke_returns_body_log_and_function_error() {
    let (endpoint, record) = fake_server(|req, _| {
        let mut headers = vec![("x-amz-function-error", "Unhandled".to_owned())];
        if req.header("x-amz-log-type") == Some("Tail") {
            headers.push(("x-amz-log-result", BASE64.encode("START RequestId: 1\nEND\n")));
        }
        (200, headers, br#"{"errorMessage":"boom"}"#.to_vec())
    });
    let args = InvokeArgs {
        endpoint: Endpoint { endpoint: endpoint.clone(), data_dir: None },
        name: "f".into(),
        payload: None,
        log: true,
    };
    let invocation = invoke_with(&client(&endpoint), &args, br#"{"x": 1}"#.to_vec()).unwrap();
    assert_eq!(invocation.body, br#"{"errorMessage":"boom"}"#);
    assert_eq!(invocation.log.as_deref(), Some(&b"START RequestId: 1\nEND\n"[..]));
    assert_eq!(invocation.function_error.as_deref(), Some("Unhandled"));
    let args = InvokeArgs { log: false, ..args };
    let invocation = invoke_with(&client(&endpoint), &args, b"{}".to_vec()).unwrap();
    assert!(invocation.log.is_none());
    let record = record.lock().unwrap();
    assert_eq!(record[0].path, "/2015-03-31/functions/f/invocations");
    assert_eq!(record[0].body, br#"{"x": 1}"#);
    assert_eq!(record[1].header("x-amz-log-type"), None);
}

#[test]
fn ls_follows_markers() {
    let (endpoint, record) = fake_server(|req, _| {
        let page = if req.query.contains("Marker=") {
            json!({ "Functions": [{ "FunctionName": "b", "Runtime": "provided.al2023", "MemorySize": 128, "Timeout": 3, "LastModified": "2025-01-01T00:00:00.000+0000" }] })
        } else {
            json!({ "Functions": [{ "FunctionName": "a", "MemorySize": 1024, "Timeout": 900, "LastModified": "2025-01-02T00:00:00.000+0000" }], "NextMarker": "next page/1" })
        };
        (200, vec![], page.to_string().into_bytes())
    });
    let rows = list_functions(&client(&endpoint)).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0], ["a", "-", "1024", "900", "2025-01-02T00:00:00.000+0000"].map(String::from));
    assert_eq!(rows[1][0], "b");
    let record = record.lock().unwrap();
    assert_eq!(record[0].path, "/2015-03-31/functions/");
    assert_eq!(record[0].query, "MaxItems=50");
    assert_eq!(record[1].query, "MaxItems=50&Marker=next%20page%2F1");
}

#[test]
fn logs_pages_and_messages() {
    let (endpoint, record) = fake_server(|req, _| {
        let body = req.json();
        let page = if body.get("nextToken").is_some() {
            json!({ "events": [{ "logStreamName": "s", "timestamp": 3, "message": "third", "ingestionTime": 3, "eventId": "3" }] })
        } else {
            json!({ "events": [
                { "logStreamName": "s", "timestamp": 1, "message": "first\n", "ingestionTime": 1, "eventId": "1" },
                { "logStreamName": "s", "timestamp": 2, "message": "second\n", "ingestionTime": 2, "eventId": "2" },
            ], "nextToken": "t1" })
        };
        (200, vec![], page.to_string().into_bytes())
    });
    let args = LogsArgs {
        endpoint: Endpoint { endpoint: endpoint.clone(), data_dir: None },
        name: "f".into(),
        follow: false,
        since: Some(Duration::from_secs(600)),
    };
    let mut out = Vec::new();
    logs_with(&client(&endpoint), &args, &mut |b: &[u8]| {
        out.extend_from_slice(b);
        Ok(())
    })
    .unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), "first\nsecond\nthird\n");
    let record = record.lock().unwrap();
    assert_eq!(record.len(), 2);
    let first = &record[0];
    assert_eq!((first.method.as_str(), first.path.as_str(), first.service.as_str()), ("POST", "/", "logs"));
    assert_eq!(first.header("x-amz-target"), Some("Logs_20140328.FilterLogEvents"));
    assert_eq!(first.header("content-type"), Some("application/x-amz-json-1.1"));
    let body = first.json();
    assert_eq!(body["logGroupName"], "/aws/lambda/f");
    let start = body["startTime"].as_i64().unwrap();
    assert!((now_ms() - 600_000 - start).abs() < 60_000, "{start}");
    assert_eq!(record[1].json()["nextToken"], "t1");
}

#[test]
fn logs_follow_skips_seen_events() {
    // Every poll answers the same event plus, from the third poll on, a new one; the follow loop
    // is ended by the printer failing once the new event is printed.
    let (endpoint, record) = fake_server(|_, n| {
        let mut events = vec![json!({ "timestamp": 5, "message": "old\n", "eventId": "e5" })];
        if n >= 2 {
            events.push(json!({ "timestamp": 5, "message": "same ms\n", "eventId": "e5b" }));
        }
        (200, vec![], json!({ "events": events }).to_string().into_bytes())
    });
    let args = LogsArgs {
        endpoint: Endpoint { endpoint: endpoint.clone(), data_dir: None },
        name: "f".into(),
        follow: true,
        since: None,
    };
    let mut out = String::new();
    let err = logs_with(&client(&endpoint), &args, &mut |b: &[u8]| {
        out.push_str(std::str::from_utf8(b).unwrap());
        if out.contains("same ms") { Err("stop".into()) } else { Ok(()) }
    })
    .unwrap_err();
    assert_eq!(err, "stop");
    assert_eq!(out, "old\nsame ms\n");
    let record = record.lock().unwrap();
    assert_eq!(record[0].json()["startTime"], 0);
    assert_eq!(record[1].json()["startTime"], 5);
}

#[test]
fn unreachable_server() {
    // A port nobody listens on: bind, note it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let err = list_functions(&client(&endpoint)).unwrap_err();
    assert!(err.starts_with(&format!("cannot reach Ignis at {endpoint}: ")), "{err}");
}

#[test]
fn account_create_and_ls_use_the_ignis_service() {
    let (endpoint, record) = fake_server(|req, _| match req.method.as_str() {
        "POST" if req.json()["Name"] == "taken" => (
            409,
            vec![("x-amzn-ErrorType", "ResourceConflictException".into())],
            br#"{"Type":"User","message":"Account already exists: taken"}"#.to_vec(),
        ),
        "POST" => {
            let body = json!({ "AccountId": "123456789012", "Name": req.json()["Name"], "AccessKeyId": "AKIAX", "SecretAccessKey": "s" });
            (201, vec![], body.to_string().into_bytes())
        }
        _ => {
            let body = json!({ "Accounts": [
                { "AccountId": "000000000001", "Name": "admin", "CreatedAt": "2025-01-01T00:00:00.000+0000", "Administrator": true },
                { "AccountId": "123456789012", "Name": "team", "CreatedAt": "2025-01-02T00:00:00.000+0000", "Administrator": false },
            ] });
            (200, vec![], body.to_string().into_bytes())
        }
    });
    let created = create_account(&client(&endpoint), "team").unwrap();
    assert_eq!(created["AccountId"], "123456789012");
    assert_eq!(created["SecretAccessKey"], "s");
    let err = create_account(&client(&endpoint), "taken").unwrap_err();
    assert_eq!(err, "ResourceConflictException: Account already exists: taken");
    let rows = list_accounts(&client(&endpoint)).unwrap();
    assert_eq!(rows[0], ["000000000001", "admin (administrator)", "2025-01-01T00:00:00.000+0000"].map(String::from));
    assert_eq!(rows[1][1], "team");
    let record = record.lock().unwrap();
    assert!(record.iter().all(|r| r.service == "ignis" && r.path == "/ignis/accounts"), "{record:?}");
    assert_eq!(record[0].json(), json!({ "Name": "team" }));
}
