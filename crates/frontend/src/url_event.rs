//! Function URLs' HTTP mapping, pure: which URL a request's `Host` names, the
//! payload format 2.0 event a request becomes, how a function's answer becomes
//! the HTTP response, and the CORS headers of a URL's configuration.

use std::collections::BTreeMap;

use base64::Engine;
use bytes::Bytes;
use base64::engine::general_purpose::STANDARD as BASE64;
use ignis_registry::CorsRecord;
use serde_json::{Map, Value, json};

/// The length of a URL id: 32 lowercase letters and digits.
pub const URL_ID_LEN: usize = 32;

/// The URL id `host` names (`<url-id>.lambda-url.<region>.<domain>`, any port), if it is one of this server's.
pub fn url_id<'a>(host: &'a str, region: &str, domain: &str) -> Option<&'a str> {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    let rest = name.strip_suffix(domain)?.strip_suffix('.')?;
    let id = rest.strip_suffix(region)?.strip_suffix(".lambda-url.")?;
    let ok = id.len() == URL_ID_LEN && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    ok.then_some(id)
}

/// What the event is made of besides the request itself.
pub struct Context<'a> {
    pub url_id: &'a str,
    pub domain_name: &'a str,
    pub request_id: &'a str,
    pub source_ip: &'a str,
    /// Milliseconds since the epoch.
    pub time_ms: i64,
    /// The signer, for an `AWS_IAM` URL: (access key id, account).
    pub signer: Option<(&'a str, &'a str)>,
}

/// Whether a body of `content_type` goes to the function as text (else base64).
fn is_text(content_type: Option<&str>, body: &[u8]) -> bool {
    let Some(kind) = content_type else { return std::str::from_utf8(body).is_ok() };
    let kind = kind.to_ascii_lowercase();
    let textual = kind.starts_with("text/")
        || ["json", "xml", "javascript", "x-www-form-urlencoded", "yaml", "graphql"].iter().any(|t| kind.contains(t));
    textual && std::str::from_utf8(body).is_ok()
}

/// `time_ms` as the event's `requestContext.time`: `04/Mar/2020:19:03:58 +0000`.
fn request_time(time_ms: i64) -> String {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(time_ms.max(0) as u64);
    // 2020-03-04T19:03:58Z
    let rfc = humantime::format_rfc3339_seconds(at).to_string();
    let month = rfc[5..7].parse::<usize>().unwrap_or(1).clamp(1, 12);
    format!("{}/{}/{}:{} +0000", &rfc[8..10], MONTHS[month - 1], &rfc[0..4], &rfc[11..19])
}

/// The payload format 2.0 event of a request: `headers` as (lowercase name, value) in order.
pub fn event(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(String, String)],
    body: &[u8],
    context: &Context<'_>,
) -> Value {
    let mut joined: BTreeMap<String, String> = BTreeMap::new();
    let mut cookies = Vec::new();
    for (name, value) in headers {
        if name == "cookie" {
            cookies.extend(value.split(';').map(str::trim).filter(|c| !c.is_empty()).map(String::from));
            continue;
        }
        joined.entry(name.clone()).and_modify(|v| *v = format!("{v},{value}")).or_insert_with(|| value.clone());
    }
    let header = |name: &str| joined.get(name).map(String::as_str);
    let mut parameters: BTreeMap<String, String> = BTreeMap::new();
    for (key, value) in crate::http::query_params(query) {
        parameters.entry(key).and_modify(|v| *v = format!("{v},{value}")).or_insert(value);
    }
    let authorizer = context.signer.map(|(key, account)| {
        json!({ "iam": {
            "accessKey": key, "accountId": account, "callerId": key, "cognitoIdentity": null,
            "principalOrgId": null, "userArn": format!("arn:aws:iam::{account}:root"), "userId": key,
        }})
    });
    let mut event = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": joined,
        "requestContext": {
            // The signer's account, for a URL that takes no signature `anonymous`.
            "accountId": context.signer.map_or("anonymous", |(_, account)| account),
            "apiId": context.url_id,
            "domainName": context.domain_name,
            "domainPrefix": context.url_id,
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": context.source_ip,
                "userAgent": header("user-agent").unwrap_or(""),
            },
            "requestId": context.request_id,
            "routeKey": "$default",
            "stage": "$default",
            "time": request_time(context.time_ms),
            "timeEpoch": context.time_ms,
        },
        "isBase64Encoded": false,
    });
    let object = event.as_object_mut().expect("an object");
    if let Some(authorizer) = authorizer {
        object["requestContext"]["authorizer"] = authorizer;
    }
    if !cookies.is_empty() {
        object.insert("cookies".into(), json!(cookies));
    }
    if !parameters.is_empty() {
        object.insert("queryStringParameters".into(), json!(parameters));
    }
    if !body.is_empty() {
        if is_text(header("content-type"), body) {
            object.insert("body".into(), json!(String::from_utf8_lossy(body)));
        } else {
            object.insert("body".into(), json!(BASE64.encode(body)));
            object.insert("isBase64Encoded".into(), json!(true));
        }
    }
    event
}

/// The HTTP response a function's answer maps to.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    /// (name, value), `set-cookie` once per cookie.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Why an answer cannot be a response (the client gets 502).
#[derive(Debug, Clone, PartialEq)]
pub struct BadAnswer(pub String);

/// The response of a function that answered `payload`: an object with `statusCode` says it all (`headers`,
/// `cookies`, `body`, `isBase64Encoded`); any other JSON is a 200 `application/json` body (a string's content,
/// else the JSON as it came), as Lambda infers.
pub fn reply(payload: &[u8]) -> Result<Reply, BadAnswer> {
    let json_body = |body: Vec<u8>| Reply {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body,
    };
    let value: Value = match serde_json::from_slice(payload) {
        Ok(value) => value,
        Err(_) => return Ok(json_body(payload.to_vec())),
    };
    let object = match value {
        Value::Object(object) if object.contains_key("statusCode") => object,
        Value::String(text) => return Ok(json_body(text.into_bytes())),
        _ => return Ok(json_body(payload.to_vec())),
    };
    shaped(&object)
}

fn shaped(object: &Map<String, Value>) -> Result<Reply, BadAnswer> {
    let status = object["statusCode"]
        .as_u64()
        .filter(|s| (100..=599).contains(s))
        .ok_or_else(|| BadAnswer(format!("statusCode {} is not an HTTP status", object["statusCode"])))?;
    let mut headers = Vec::new();
    match object.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (name, value) in map {
                let value = match value {
                    Value::String(s) => s.clone(),
                    Value::Number(_) | Value::Bool(_) => value.to_string(),
                    _ => return Err(BadAnswer(format!("header {name} is not a string"))),
                };
                headers.push((name.to_ascii_lowercase(), value));
            }
        }
        Some(_) => return Err(BadAnswer("headers is not an object".into())),
    }
    match object.get("cookies") {
        None | Some(Value::Null) => {}
        Some(Value::Array(cookies)) => {
            for cookie in cookies {
                let cookie = cookie.as_str().ok_or_else(|| BadAnswer("a cookie is not a string".into()))?;
                headers.push(("set-cookie".into(), cookie.to_string()));
            }
        }
        Some(_) => return Err(BadAnswer("cookies is not a list".into())),
    }
    let body = match object.get("body") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(text)) if object.get("isBase64Encoded") == Some(&Value::Bool(true)) => {
            BASE64.decode(text).map_err(|e| BadAnswer(format!("body is not base64: {e}")))?
        }
        Some(Value::String(text)) => text.clone().into_bytes(),
        Some(other) => other.to_string().into_bytes(),
    };
    if !headers.iter().any(|(name, _)| name == "content-type") {
        headers.push(("content-type".into(), "application/json".into()));
    }
    Ok(Reply { status: status as u16, headers, body })
}

/// The content type of a streamed response that begins with an HTTP integration prelude.
pub const INTEGRATION_CONTENT_TYPE: &str = "application/vnd.awslambda.http-integration-response";
/// The most a prelude may take, its delimiter included.
pub const MAX_PRELUDE: usize = 64 * 1024;
/// What ends a prelude: eight NUL bytes.
const DELIMITER: [u8; 8] = [0; 8];

/// The HTTP integration prelude of a streamed response (`statusCode`, `headers`, `cookies` as JSON, then eight NUL
/// bytes, then the body), as the runtime clients write it, read as its chunks come.
#[derive(Debug, Default)]
pub struct Prelude {
    held: Vec<u8>,
}

impl Prelude {
    /// Takes the next chunk: once the delimiter has come, the response's head (with an empty body) and the body's
    /// bytes that followed it in the chunks so far; a prelude that is not JSON of the shape or longer than
    /// [`MAX_PRELUDE`] is an error.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Option<(Reply, Bytes)>, BadAnswer> {
        let searched = self.held.len().saturating_sub(DELIMITER.len() - 1);
        self.held.extend_from_slice(chunk);
        let Some(at) = self.held[searched..].windows(DELIMITER.len()).position(|w| w == DELIMITER).map(|i| i + searched)
        else {
            if self.held.len() > MAX_PRELUDE {
                return Err(BadAnswer(format!("no prelude delimiter within {MAX_PRELUDE} bytes")));
            }
            return Ok(None);
        };
        let object = match serde_json::from_slice::<Value>(&self.held[..at]) {
            Ok(Value::Object(object)) => object,
            _ => return Err(BadAnswer("the prelude is not a JSON object".into())),
        };
        let mut shape = object.clone();
        shape.entry("statusCode").or_insert(json!(200));
        shape.remove("body");
        let mut reply = shaped(&shape)?;
        if !object.get("headers").is_some_and(|h| h.get("content-type").is_some() || h.get("Content-Type").is_some()) {
            reply.headers.retain(|(name, _)| name != "content-type");
            reply.headers.push(("content-type".into(), "application/octet-stream".into()));
        }
        let rest = Bytes::copy_from_slice(&self.held[at + DELIMITER.len()..]);
        Ok(Some((reply, rest)))
    }
}

/// Whether `cors` lets `origin` in.
fn allows_origin(cors: &CorsRecord, origin: &str) -> bool {
    cors.allow_origins.iter().any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(origin))
}

/// The `Access-Control-Allow-Origin` value for an allowed `origin`.
fn allow_origin(cors: &CorsRecord, origin: &str) -> String {
    let wildcard = cors.allow_origins.iter().any(|o| o == "*");
    if wildcard && !cors.allow_credentials { "*".into() } else { origin.to_string() }
}

/// The answer to a CORS preflight from `origin`: its headers (none when the origin is not allowed, so the
/// browser refuses).
pub fn preflight(cors: &CorsRecord, origin: &str) -> Vec<(String, String)> {
    if !allows_origin(cors, origin) {
        return Vec::new();
    }
    let mut headers = vec![("access-control-allow-origin".to_string(), allow_origin(cors, origin))];
    let list = |values: &[String]| values.join(",");
    if !cors.allow_methods.is_empty() {
        headers.push(("access-control-allow-methods".into(), list(&cors.allow_methods)));
    }
    if !cors.allow_headers.is_empty() {
        headers.push(("access-control-allow-headers".into(), list(&cors.allow_headers)));
    }
    if let Some(age) = cors.max_age {
        headers.push(("access-control-max-age".into(), age.to_string()));
    }
    if cors.allow_credentials {
        headers.push(("access-control-allow-credentials".into(), "true".into()));
    }
    headers.push(("vary".into(), "Origin".into()));
    headers
}

/// The CORS headers of an actual response to a request from `origin` (they replace any the function set).
pub fn response_cors(cors: &CorsRecord, origin: Option<&str>, headers: &mut Vec<(String, String)>) {
    headers.retain(|(name, _)| !name.starts_with("access-control-"));
    let Some(origin) = origin.filter(|o| allows_origin(cors, o)) else { return };
    headers.push(("access-control-allow-origin".into(), allow_origin(cors, origin)));
    if !cors.expose_headers.is_empty() {
        headers.push(("access-control-expose-headers".into(), cors.expose_headers.join(",")));
    }
    if cors.allow_credentials {
        headers.push(("access-control-allow-credentials".into(), "true".into()));
    }
    headers.push(("vary".into(), "Origin".into()));
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "abcdefghijklmnopqrstuvwxyz012345";

    #[test]
    fn hosts_name_url_ids_of_this_region_and_domain_only() {
        let host = |h: &str| url_id(h, "us-east-1", "localhost").map(String::from);
        let id = Some(ID.to_string());
        assert_eq!(host(&format!("{ID}.lambda-url.us-east-1.localhost")), id);
        assert_eq!(host(&format!("{ID}.lambda-url.us-east-1.localhost:9001")), id);
        assert_eq!(host(&format!("{ID}.lambda-url.us-east-1.localhost.")), id);
        assert_eq!(host(&format!("{ID}.lambda-url.eu-west-1.localhost")), None);
        assert_eq!(host(&format!("{ID}.lambda-url.us-east-1.example.com")), None);
        assert_eq!(host(&format!("{}.lambda-url.us-east-1.localhost", ID.to_uppercase())), None);
        assert_eq!(host(&format!("x{ID}.lambda-url.us-east-1.localhost")), None);
        assert_eq!(host(&format!("a.{ID}.lambda-url.us-east-1.localhost")), None);
        assert_eq!(host("localhost:9001"), None);
        assert_eq!(host(""), None);
        assert_eq!(url_id(&format!("{ID}.lambda-url.us-east-1.on.example.org"), "us-east-1", "on.example.org"), Some(ID));
    }

    fn context() -> Context<'static> {
        Context {
            url_id: ID,
            domain_name: "d",
            request_id: "r",
            source_ip: "127.0.0.1",
            time_ms: 1_583_348_638_390,
            signer: None,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_request_becomes_a_payload_2_event() {
        let request = headers(&[
            ("user-agent", "curl/8"),
            ("x-multi", "a"),
            ("x-multi", "b"),
            ("cookie", "s=1; t=2"),
            ("content-type", "application/json"),
        ]);
        let event = event("POST", "/my/path", "p=1&p=2&q=a%20b&r", &request, br#"{"k":1}"#, &context());
        assert_eq!(event["version"], "2.0");
        assert_eq!(event["rawPath"], "/my/path");
        assert_eq!(event["rawQueryString"], "p=1&p=2&q=a%20b&r");
        assert_eq!(event["queryStringParameters"], json!({ "p": "1,2", "q": "a b", "r": "" }));
        assert_eq!(event["cookies"], json!(["s=1", "t=2"]));
        assert_eq!(event["headers"]["x-multi"], "a,b");
        assert!(event["headers"].get("cookie").is_none());
        assert_eq!(event["body"], r#"{"k":1}"#);
        assert_eq!(event["isBase64Encoded"], false);
        let http = &event["requestContext"]["http"];
        assert_eq!((http["method"].as_str(), http["path"].as_str()), (Some("POST"), Some("/my/path")));
        assert_eq!(http["userAgent"], "curl/8");
        assert_eq!(event["requestContext"]["time"], "04/Mar/2020:19:03:58 +0000");
        assert_eq!(event["requestContext"]["timeEpoch"], 1_583_348_638_390i64);
        assert!(event["requestContext"].get("authorizer").is_none());
    }

    #[test]
    fn bodies_are_text_or_base64_and_absent_parts_are_left_out() {
        let binary = event("PUT", "/", "", &headers(&[("content-type", "image/png")]), &[0, 159, 146, 150], &context());
        assert_eq!((binary["body"].as_str(), binary["isBase64Encoded"].as_bool()), (Some("AJ+Slg=="), Some(true)));
        let untyped = event("PUT", "/", "", &[], b"plain", &context());
        assert_eq!((untyped["body"].as_str(), untyped["isBase64Encoded"].as_bool()), (Some("plain"), Some(false)));
        let bad_text = event("PUT", "/", "", &headers(&[("content-type", "text/plain")]), &[0xff], &context());
        assert_eq!(bad_text["isBase64Encoded"], true);
        let bare = event("GET", "/", "", &[], b"", &context());
        for absent in ["body", "cookies", "queryStringParameters"] {
            assert!(bare.get(absent).is_none(), "{absent}");
        }
        let signed = Context { signer: Some(("AKIAX", "210987654321")), ..context() };
        let event = event("GET", "/", "", &[], b"", &signed);
        assert_eq!(event["requestContext"]["authorizer"]["iam"]["accountId"], "210987654321");
        assert_eq!(event["requestContext"]["authorizer"]["iam"]["accessKey"], "AKIAX");
    }

    #[test]
    fn answers_map_to_responses_as_lambda_infers() {
        let json = |body: &str| Reply {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
        };
        assert_eq!(reply(br#"{"message":"hi"}"#), Ok(json(r#"{"message":"hi"}"#)));
        assert_eq!(reply(br#""Hello""#), Ok(json("Hello")));
        assert_eq!(reply(b"[1,2]"), Ok(json("[1,2]")));
        assert_eq!(reply(b"not json"), Ok(json("not json")));
        let shaped = br#"{"statusCode":201,"headers":{"Content-Type":"text/plain","X-N":3},"cookies":["a=1","b=2"],
            "body":"made"}"#;
        let expected = Reply {
            status: 201,
            headers: vec![
                ("content-type".into(), "text/plain".into()),
                ("x-n".into(), "3".into()),
                ("set-cookie".into(), "a=1".into()),
                ("set-cookie".into(), "b=2".into()),
            ],
            body: b"made".to_vec(),
        };
        assert_eq!(reply(shaped), Ok(expected));
        let binary = reply(br#"{"statusCode":200,"body":"AJ+Slg==","isBase64Encoded":true}"#).unwrap();
        assert_eq!(binary.body, vec![0, 159, 146, 150]);
        assert_eq!(reply(br#"{"statusCode":204}"#).unwrap().body, Vec::<u8>::new());
        for bad in [
            r#"{"statusCode":"200"}"#,
            r#"{"statusCode":99}"#,
            r#"{"statusCode":200,"headers":[]}"#,
            r#"{"statusCode":200,"headers":{"a":[1]}}"#,
            r#"{"statusCode":200,"cookies":"a=1"}"#,
            r#"{"statusCode":200,"body":"%%%","isBase64Encoded":true}"#,
        ] {
            assert!(reply(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_prelude_is_read_across_chunks_and_the_body_after_it_kept() {
        let whole = b"{\"statusCode\":201,\"headers\":{\"content-type\":\"text/plain\"},\"cookies\":[\"a=1\"]}\0\0\0\0\0\0\0\0first";
        // Every way of cutting it into two chunks gives the same head and body.
        for cut in 0..=whole.len() {
            let mut prelude = Prelude::default();
            let (first, second) = whole.split_at(cut);
            let done = match prelude.push(first).unwrap() {
                Some((reply, rest)) => {
                    assert!(prelude.push(b"").is_ok());
                    (reply, [&rest[..], second].concat())
                }
                None => prelude.push(second).unwrap().map(|(reply, rest)| (reply, rest.to_vec())).expect("the delimiter came"),
            };
            assert_eq!(done.0.status, 201, "{cut}");
            assert_eq!(done.0.headers, vec![("content-type".into(), "text/plain".into()), ("set-cookie".into(), "a=1".into())]);
            assert_eq!(done.1, b"first", "{cut}");
        }
        let mut bare = Prelude::default();
        let (reply, rest) = bare.push(b"{}\0\0\0\0\0\0\0\0").unwrap().unwrap();
        assert_eq!((reply.status, rest.len()), (200, 0));
        assert_eq!(reply.headers, vec![("content-type".into(), "application/octet-stream".into())]);
        assert!(Prelude::default().push(b"[1]\0\0\0\0\0\0\0\0").is_err());
        assert!(Prelude::default().push(&vec![b' '; MAX_PRELUDE + 1]).is_err(), "no delimiter within the limit");
        assert!(Prelude::default().push(b"{\"statusCode\":7}\0\0\0\0\0\0\0\0").is_err());
    }

    fn cors(origins: &[&str], credentials: bool) -> CorsRecord {
        CorsRecord {
            allow_credentials: credentials,
            allow_headers: vec!["content-type".into(), "x-custom".into()],
            allow_methods: vec!["GET".into(), "POST".into()],
            allow_origins: origins.iter().map(|o| o.to_string()).collect(),
            expose_headers: vec!["x-out".into()],
            max_age: Some(600),
        }
    }

    fn get<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn preflights_are_answered_from_the_configuration() {
        let site = cors(&["https://app.example"], true);
        let allowed = preflight(&site, "https://app.example");
        assert_eq!(get(&allowed, "access-control-allow-origin"), Some("https://app.example"));
        assert_eq!(get(&allowed, "access-control-allow-methods"), Some("GET,POST"));
        assert_eq!(get(&allowed, "access-control-allow-headers"), Some("content-type,x-custom"));
        assert_eq!(get(&allowed, "access-control-max-age"), Some("600"));
        assert_eq!(get(&allowed, "access-control-allow-credentials"), Some("true"));
        assert!(preflight(&site, "https://evil.example").is_empty());
        let any = preflight(&cors(&["*"], false), "https://anyone.example");
        assert_eq!(get(&any, "access-control-allow-origin"), Some("*"));
        assert_eq!(get(&any, "access-control-allow-credentials"), None);
        // With credentials a wildcard answers the origin itself (browsers refuse `*` with credentials).
        let credentialed = preflight(&cors(&["*"], true), "https://anyone.example");
        assert_eq!(get(&credentialed, "access-control-allow-origin"), Some("https://anyone.example"));
    }

    #[test]
    fn responses_carry_the_configured_cors_headers_only() {
        let site = cors(&["https://app.example"], false);
        let mut headers = vec![("access-control-allow-origin".to_string(), "*".to_string())];
        response_cors(&site, Some("https://app.example"), &mut headers);
        assert_eq!(get(&headers, "access-control-allow-origin"), Some("https://app.example"));
        assert_eq!(get(&headers, "access-control-expose-headers"), Some("x-out"));
        assert_eq!(headers.iter().filter(|(n, _)| n == "access-control-allow-origin").count(), 1);
        let mut other = vec![("access-control-allow-origin".to_string(), "*".to_string())];
        response_cors(&site, Some("https://evil.example"), &mut other);
        assert!(other.is_empty(), "the function's own CORS headers are dropped");
        let mut none = Vec::new();
        response_cors(&site, None, &mut none);
        assert!(none.is_empty());
    }
}
