//! A small blocking HTTP/1.1 client over hyper, which signs every request with SigV4.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use ignis_sigv4::{Credentials, RequestParts};

use super::Endpoint;

/// How long to wait for the TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The parts of an `http://` endpoint URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `host[:port]` as written, for the Host header.
    pub authority: String,
    /// Host name or address, without IPv6 brackets, to connect to.
    pub host: String,
    pub port: u16,
    /// A path prefix to put before every request path, without a trailing `/` (often empty).
    pub prefix: String,
}

impl Url {
    pub fn parse(endpoint: &str) -> Result<Url, String> {
        let bad = |why: &str| format!("invalid endpoint '{endpoint}': {why}");
        let rest = if let Some(rest) = endpoint.strip_prefix("http://") {
            rest
        } else if endpoint.starts_with("https://") {
            return Err(bad("https is not supported, use http://"));
        } else {
            return Err(bad("expected http://HOST[:PORT]"));
        };
        let (authority, prefix) = match rest.find(['/', '?', '#']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].trim_end_matches('/')),
            Some(_) => return Err(bad("no query or fragment allowed")),
            None => (rest, ""),
        };
        if prefix.contains(['?', '#']) {
            return Err(bad("no query or fragment allowed"));
        }
        if authority.contains('@') {
            return Err(bad("no user info allowed"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            match after {
                "" => (host, None),
                p => (host, Some(p.strip_prefix(':').ok_or_else(|| bad("bad port"))?)),
            }
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            None => 80,
            Some(p) => p.parse::<u16>().map_err(|_| bad("bad port"))?,
        };
        Ok(Url { authority: authority.to_owned(), host: host.to_owned(), port, prefix: prefix.to_owned() })
    }
}

/// A response, fully read.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// For a refusal (401, 403): which key signed the request, and where it came from.
    pub signed_with: Option<String>,
}

impl Response {
    /// The first value of a header (name in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Ok for a 2xx/3xx answer; the server's error as one line otherwise.
    pub fn check(self) -> Result<Response, String> {
        if self.status < 400 {
            Ok(self)
        } else {
            let message = super::error_message(self.status, self.header("x-amzn-ErrorType"), &self.body);
            Err(match &self.signed_with {
                Some(key) => format!("{message} (signed with {key})"),
                None => message,
            })
        }
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("the server sent a response that is not JSON: {e}"))
    }
}

/// A request to send.
pub struct Request<'a> {
    pub method: &'a str,
    /// Already percent-encoded, starting with `/`.
    pub path: &'a str,
    /// Already percent-encoded, without `?`.
    pub query: &'a str,
    pub headers: Vec<(&'a str, &'a str)>,
    pub body: Vec<u8>,
    /// The SigV4 service name: `lambda`, `logs` or `ignis`.
    pub service: &'a str,
}

/// The keys and the endpoint, and a runtime to run requests on.
pub struct Client {
    endpoint: String,
    url: Url,
    credentials: Credentials,
    /// `AWS_SESSION_TOKEN`, for temporary keys.
    session_token: Option<String>,
    /// Where the keys came from (see [`Keys::origin`]).
    origin: String,
    region: String,
    runtime: tokio::runtime::Runtime,
}

impl Client {
    /// A client for the endpoint, with keys from the environment or the data directory.
    pub fn new(endpoint: &Endpoint) -> Result<Client, String> {
        // Check the URL before looking for keys: its error is the more useful one.
        Url::parse(&endpoint.endpoint)?;
        let data_dir = endpoint.data_dir.clone().unwrap_or_else(crate::default_data_dir);
        let keys = Keys::find(|name| std::env::var(name).ok(), &data_dir)?;
        let region = std::env::var("AWS_REGION").ok().filter(|r| !r.is_empty()).unwrap_or_else(|| "us-east-1".into());
        let mut client = Client::with_credentials(&endpoint.endpoint, keys.credentials, region)?;
        client.session_token = keys.session_token;
        client.origin = keys.origin;
        Ok(client)
    }

    /// A client for an endpoint URL, with the given keys and region.
    pub fn with_credentials(endpoint: &str, credentials: Credentials, region: String) -> Result<Client, String> {
        let url = Url::parse(endpoint)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the async runtime: {e}"))?;
        let origin = "the given credentials".to_string();
        Ok(Client { endpoint: endpoint.to_owned(), url, credentials, session_token: None, origin, region, runtime })
    }

    /// Sends a signed request and reads the whole response. Errors only when there is no HTTP
    /// answer; see [`Response::check`] for error statuses.
    pub fn send(&self, req: Request<'_>) -> Result<Response, String> {
        let path = format!("{}{}", self.url.prefix, req.path);
        let mut headers: Vec<(&str, &str)> = vec![("host", &self.url.authority)];
        if let Some(token) = &self.session_token {
            headers.push(("x-amz-security-token", token));
        }
        headers.extend(req.headers.iter().copied());
        let parts = RequestParts { method: req.method, path: &path, query: req.query, headers: &headers, body: &req.body };
        let signed = ignis_sigv4::sign(&parts, &self.credentials, &self.region, req.service, SystemTime::now());

        let target = if req.query.is_empty() { path.clone() } else { format!("{path}?{}", req.query) };
        let mut builder = hyper::Request::builder().method(req.method).uri(&target);
        for (name, value) in headers.iter().copied().chain(signed.iter().map(|(n, v)| (n.as_str(), v.as_str()))) {
            builder = builder.header(name, value);
        }
        builder = builder.header("user-agent", concat!("ignis-cli/", env!("CARGO_PKG_VERSION")));
        let request = builder
            .body(Full::new(Bytes::from(req.body)))
            .map_err(|e| format!("cannot build the request for {target}: {e}"))?;
        self.exchange(request)
    }

    /// Sends a request of the registry API (`/v2/...`), authenticated with HTTP Basic (the
    /// access key id and its secret), and reads the whole response. `target` is the path and
    /// query, already percent-encoded; the endpoint's path prefix is put before it.
    pub fn send_registry(&self, method: &str, target: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Result<Response, String> {
        use base64::Engine as _;
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.credentials.access_key_id, self.credentials.secret_access_key));
        let target = format!("{}{target}", self.url.prefix);
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(&target)
            .header("host", &self.url.authority)
            .header("authorization", format!("Basic {basic}"))
            .header("user-agent", concat!("ignis-cli/", env!("CARGO_PKG_VERSION")));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("cannot build the request for {target}: {e}"))?;
        self.exchange(request)
    }

    /// Sends one request on a new connection and reads the whole response.
    fn exchange(&self, request: hyper::Request<Full<Bytes>>) -> Result<Response, String> {
        self.runtime.block_on(async {
            let addr = (self.url.host.as_str(), self.url.port);
            let stream = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return Err(format!("cannot reach Ignis at {}: {e}", self.endpoint)),
                Err(_) => return Err(format!("cannot reach Ignis at {}: connection timed out", self.endpoint)),
            };
            let _ = stream.set_nodelay(true);
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| format!("cannot reach Ignis at {}: {e}", self.endpoint))?;
            let driver = tokio::spawn(connection);
            let failed = |e: hyper::Error| format!("request to {} failed: {e}", self.endpoint);
            let response = sender.send_request(request).await.map_err(failed)?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect();
            let body = response.into_body().collect().await.map_err(failed)?.to_bytes().to_vec();
            drop(sender);
            driver.abort();
            let signed_with = matches!(status, 401 | 403).then(|| self.origin.clone());
            Ok(Response { status, headers, body, signed_with })
        })
    }
}

/// The keys the CLI signs with, and where they came from.
pub struct Keys {
    pub credentials: Credentials,
    pub session_token: Option<String>,
    /// `IGNIS_ACCESS_KEY_ID`, `AWS_ACCESS_KEY_ID` or the credentials file's path: said when a call is refused.
    pub origin: String,
}

impl Keys {
    /// `IGNIS_ACCESS_KEY_ID` and `IGNIS_SECRET_ACCESS_KEY`; else `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (and
    /// `AWS_SESSION_TOKEN`); else the server's credentials file in `data_dir`. `env` reads a variable.
    pub fn find(env: impl Fn(&str) -> Option<String>, data_dir: &Path) -> Result<Keys, String> {
        let var = |name: &str| env(name).filter(|v| !v.is_empty());
        let (ignis_id, ignis_secret) = (var("IGNIS_ACCESS_KEY_ID"), var("IGNIS_SECRET_ACCESS_KEY"));
        if ignis_id.is_some() || ignis_secret.is_some() {
            let credentials = credentials(ignis_id, ignis_secret, data_dir)?;
            let origin = format!("key {} from IGNIS_ACCESS_KEY_ID", credentials.access_key_id);
            return Ok(Keys { credentials, session_token: None, origin });
        }
        match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            (Some(access_key_id), Some(secret_access_key)) => {
                let origin = format!("key {access_key_id} from AWS_ACCESS_KEY_ID");
                let credentials = Credentials { access_key_id, secret_access_key };
                return Ok(Keys { credentials, session_token: var("AWS_SESSION_TOKEN"), origin });
            }
            (Some(_), None) => return Err("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not".into()),
            (None, Some(_)) => return Err("AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not".into()),
            (None, None) => {}
        }
        let credentials = credentials(None, None, data_dir)?;
        let origin = format!("key {} from {}", credentials.access_key_id, credentials_file(data_dir).display());
        Ok(Keys { credentials, session_token: None, origin })
    }
}

/// The keys to sign with: from the environment (both variables), else from the server's
/// credentials file in the data directory.
pub fn credentials(id: Option<String>, secret: Option<String>, data_dir: &Path) -> Result<Credentials, String> {
    let id = id.filter(|v| !v.is_empty());
    let secret = secret.filter(|v| !v.is_empty());
    match (id, secret) {
        (Some(access_key_id), Some(secret_access_key)) => return Ok(Credentials { access_key_id, secret_access_key }),
        (Some(_), None) => return Err("IGNIS_ACCESS_KEY_ID is set but IGNIS_SECRET_ACCESS_KEY is not".into()),
        (None, Some(_)) => return Err("IGNIS_SECRET_ACCESS_KEY is set but IGNIS_ACCESS_KEY_ID is not".into()),
        (None, None) => {}
    }
    let file = credentials_file(data_dir);
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "no credentials: set IGNIS_ACCESS_KEY_ID and IGNIS_SECRET_ACCESS_KEY \
                 (the server writes its keys to {} when it starts; pass --data-dir if it uses another directory)",
                file.display()
            ));
        }
        Err(e) => {
            return Err(format!(
                "cannot read the credentials file {}: {e} (or set IGNIS_ACCESS_KEY_ID and IGNIS_SECRET_ACCESS_KEY)",
                file.display()
            ));
        }
    };
    #[derive(serde::Deserialize)]
    struct File {
        #[serde(rename = "AccessKeyId")]
        access_key_id: String,
        #[serde(rename = "SealedSecretAccessKey")]
        sealed_secret_access_key: Option<String>,
        #[serde(rename = "SecretAccessKey")]
        secret_access_key: Option<String>,
    }
    let parsed: File = serde_json::from_str(&text)
        .map_err(|e| format!("the credentials file {} is not valid: {e}", file.display()))?;
    let secret_access_key = match (parsed.sealed_secret_access_key, parsed.secret_access_key) {
        (Some(sealed), _) => ignis_store::open_file_secret(data_dir, &parsed.access_key_id, &sealed)
            .map_err(|e| format!("cannot read the credentials file {}: {e}", file.display()))?,
        (None, Some(secret)) => secret,
        (None, None) => return Err(format!("the credentials file {} holds no secret", file.display())),
    };
    Ok(Credentials { access_key_id: parsed.access_key_id, secret_access_key })
}

pub fn credentials_file(data_dir: &Path) -> PathBuf {
    data_dir.join("credentials")
}
