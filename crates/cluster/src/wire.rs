//! The worker protocol's bodies: JSON, bytes as standard base64. The only
//! place the worker's types are turned into bytes and back.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use ignis_worker::{
    Completion, FunctionSpec, ImageLaunch, Invocation, LogBatch, LogFormat, LogLevel, LogLine, Outcome, RuntimeBase,
    StreamPiece,
};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::owner::Claim;

/// A malformed body; the text says what is wrong.
pub type WireError = String;

fn field<'a>(value: &'a Value, name: &str) -> Result<&'a Value, WireError> {
    value.get(name).ok_or_else(|| format!("missing {name}"))
}

fn text(value: &Value, name: &str) -> Result<String, WireError> {
    field(value, name)?.as_str().map(str::to_string).ok_or_else(|| format!("{name} is not a string"))
}

fn number(value: &Value, name: &str) -> Result<u64, WireError> {
    field(value, name)?.as_u64().ok_or_else(|| format!("{name} is not a number"))
}

fn optional_text(value: &Value, name: &str) -> Option<String> {
    value.get(name).and_then(Value::as_str).map(str::to_string)
}

fn bytes(value: &Value, name: &str) -> Result<Bytes, WireError> {
    let encoded = field(value, name)?.as_str().ok_or_else(|| format!("{name} is not a string"))?;
    STANDARD.decode(encoded).map(Bytes::from).map_err(|e| format!("{name}: {e}"))
}

pub fn parse(body: &[u8]) -> Result<Value, WireError> {
    serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))
}

/// A start's body: the spec, and the front end's claim on it (in a cluster: `"Owner"`, `"Tag"`).
/// A spec names its code by the SHA-256 (hex) the server stores it under; the
/// worker host fetches and unpacks it into its own `code_dir`. Its merged
/// layers (`opt_dir`, a code tree named by its SHA-256, as every one) go as
/// `"OptSha256"`, fetched the same way.
pub fn encode_start(spec: &FunctionSpec, code_sha256_hex: &str, claim: Option<&Claim>) -> Vec<u8> {
    let mut value = spec_value(spec, code_sha256_hex);
    Claim::encode_into(claim, &mut value);
    value.to_string().into_bytes()
}

fn spec_value(spec: &FunctionSpec, code_sha256_hex: &str) -> Value {
    json!({
        "CodeSha256": code_sha256_hex,
        "OptSha256": opt_sha256(spec),
        "MemoryMb": spec.memory_mb,
        "TmpMb": spec.tmp_mb,
        "TimeoutMs": spec.timeout.as_millis() as u64,
        "Env": spec.env,
        "Version": spec.version,
        "LogAccount": spec.log_account,
        "LogGroup": spec.log_group,
        "LogFormat": encode_log_format(spec.log_format),
        "Image": spec.image.as_ref().map(encode_launch),
        "Base": spec.base.as_ref().map(|base| {
            let mut launch = encode_launch(&base.launch);
            launch["Account"] = json!(base.account);
            launch
        }),
        "Network": spec.network,
    })
}

fn encode_launch(image: &ImageLaunch) -> Value {
    json!({
        "Digest": image.digest,
        "Repository": image.repository,
        "Command": image.command,
        "Workdir": image.workdir,
    })
}

/// The image `name` names (`Image`: an image function's; `Base`: a zip function's runtime base), or `None` (null or
/// absent).
fn decode_launch<'v>(v: &'v Value, name: &str) -> Result<Option<(ImageLaunch, &'v Value)>, WireError> {
    let image = match v.get(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(image) => image,
    };
    let command = field(image, "Command")?
        .as_array()
        .ok_or_else(|| format!("{name}.Command is not a list"))?
        .iter()
        .map(|part| part.as_str().map(str::to_string).ok_or_else(|| format!("{name}.Command holds a non-string")))
        .collect::<Result<Vec<_>, _>>()?;
    let launch =
        ImageLaunch { digest: text(image, "Digest")?, repository: text(image, "Repository")?, command, workdir: text(image, "Workdir")? };
    Ok(Some((launch, image)))
}

fn decode_base(v: &Value) -> Result<Option<RuntimeBase>, WireError> {
    decode_launch(v, "Base")?.map(|(launch, base)| Ok(RuntimeBase { account: text(base, "Account")?, launch })).transpose()
}

/// The name of `spec`'s `/opt` tree: its directory's last component.
pub fn opt_sha256(spec: &FunctionSpec) -> Option<&str> {
    spec.opt_dir.as_deref().and_then(std::path::Path::file_name).and_then(|name| name.to_str())
}

/// `"OptSha256"`: null or absent, or a tree's name (64 lower-case hex digits).
fn decode_opt(v: &Value) -> Result<Option<PathBuf>, WireError> {
    match v.get("OptSha256") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(sha)) if sha.len() == 64 && sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => {
            Ok(Some(PathBuf::from(sha)))
        }
        Some(_) => Err("OptSha256 is not a SHA-256 in lower-case hex".into()),
    }
}

/// `"Network"`: null or absent (no network, as from a server that sends none), or the function's attachment.
fn decode_network(v: &Value) -> Result<Option<ignis_net::Attachment>, WireError> {
    match v.get("Network") {
        None | Some(Value::Null) => Ok(None),
        Some(network) => serde_json::from_value(network.clone()).map(Some).map_err(|e| format!("Network: {e}")),
    }
}

/// `"LogFormat"`: null for the Text format, else the JSON format's levels by Lambda's names.
fn encode_log_format(format: LogFormat) -> Value {
    match format {
        LogFormat::Text => Value::Null,
        LogFormat::Json { application, system } => json!({ "Application": application.as_str(), "System": system.as_str() }),
    }
}

/// `"LogFormat"`: null or absent (the Text format, as from a server that sends none), or the JSON format's levels.
fn decode_log_format(v: &Value) -> Result<LogFormat, WireError> {
    let format = match v.get("LogFormat") {
        None | Some(Value::Null) => return Ok(LogFormat::Text),
        Some(format) => format,
    };
    let level = |name: &str| {
        let text = text(format, name).map_err(|e| format!("LogFormat.{e}"))?;
        LogLevel::parse(&text).ok_or_else(|| format!("LogFormat.{name} {text:?} is not a log level"))
    };
    Ok(LogFormat::Json { application: level("Application")?, system: level("System")? })
}

/// The longest timeout a spec may carry: Lambda's 15 minutes.
pub const MAX_TIMEOUT_MS: u64 = 900_000;

/// A function's timeout; one the worker could not add to its clock is refused.
fn timeout(ms: u64) -> Result<Duration, WireError> {
    if ms > MAX_TIMEOUT_MS {
        return Err(format!("TimeoutMs {ms} is over {MAX_TIMEOUT_MS}"));
    }
    Ok(Duration::from_millis(ms))
}

/// The spec and its code's SHA-256; `code_dir` is left empty for the host to
/// fill in, and `opt_dir` holds only the `/opt` tree's SHA-256, for the host to
/// fetch and replace by its directory.
pub fn decode_start(body: &[u8]) -> Result<(FunctionSpec, String, Option<Claim>), WireError> {
    let v = parse(body)?;
    let (spec, sha) = spec_from(&v)?;
    Ok((spec, sha, Claim::decode(&v)?))
}

fn spec_from(v: &Value) -> Result<(FunctionSpec, String), WireError> {
    let env = field(&v, "Env")?
        .as_array()
        .ok_or("Env is not a list")?
        .iter()
        .map(|pair| match pair.as_array().map(Vec::as_slice) {
            Some([Value::String(k), Value::String(v)]) => Ok((k.clone(), v.clone())),
            _ => Err("Env holds a pair that is not two strings".to_string()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let spec = FunctionSpec {
        code_dir: PathBuf::new(),
        memory_mb: u32::try_from(number(&v, "MemoryMb")?).map_err(|e| e.to_string())?,
        tmp_mb: u32::try_from(number(&v, "TmpMb")?).map_err(|e| e.to_string())?,
        timeout: timeout(number(&v, "TimeoutMs")?)?,
        env,
        version: text(&v, "Version")?,
        log_account: text(&v, "LogAccount")?,
        log_group: text(&v, "LogGroup")?,
        log_format: decode_log_format(&v)?,
        code_hold: None,
        image: decode_launch(&v, "Image")?.map(|(launch, _)| launch),
        base: decode_base(&v)?,
        opt_dir: decode_opt(&v)?,
        network: decode_network(&v)?,
    };
    let sha = text(&v, "CodeSha256")?;
    Ok((spec, sha))
}

pub fn encode_invocation(invocation: &Invocation) -> Vec<u8> {
    json!({
        "RequestId": invocation.request_id,
        "Payload": STANDARD.encode(&invocation.payload),
        "InvokedFunctionArn": invocation.invoked_function_arn,
        "TraceId": invocation.trace_id,
        "ClientContext": invocation.client_context,
        "CognitoIdentity": invocation.cognito_identity,
        "Stream": invocation.response_stream.is_some(),
    })
    .to_string()
    .into_bytes()
}

/// The invocation, and for one whose caller reads a streamed response as a stream (`"Stream": true`), the
/// receiving end of its `response_stream`.
pub fn decode_invocation(body: &[u8]) -> Result<(Invocation, Option<mpsc::Receiver<StreamPiece>>), WireError> {
    let v = parse(body)?;
    let (response_stream, received) = match v.get("Stream").and_then(Value::as_bool) {
        Some(true) => {
            let (sender, received) = mpsc::channel(ignis_worker::STREAM_CHUNKS);
            (Some(sender), Some(received))
        }
        _ => (None, None),
    };
    let invocation = Invocation {
        request_id: text(&v, "RequestId")?,
        payload: bytes(&v, "Payload")?,
        invoked_function_arn: text(&v, "InvokedFunctionArn")?,
        trace_id: text(&v, "TraceId")?,
        client_context: optional_text(&v, "ClientContext"),
        cognito_identity: optional_text(&v, "CognitoIdentity"),
        response_stream,
    };
    Ok((invocation, received))
}

/// The answer to an invoke: the outcome, or `None` for "not taken".
pub fn encode_outcome(outcome: Option<&Outcome>) -> Vec<u8> {
    let Some(outcome) = outcome else {
        return br#"{"Untaken":true}"#.to_vec();
    };
    let completion = match &outcome.completion {
        Completion::Response(body) => json!({ "Response": STANDARD.encode(body) }),
        Completion::Streamed { bytes } => json!({ "Streamed": bytes }),
        Completion::Error { body, error_type } => {
            json!({ "Error": { "Body": STANDARD.encode(body), "ErrorType": error_type } })
        }
        Completion::Failed { error_type, message } => {
            json!({ "Failed": { "ErrorType": error_type, "Message": message } })
        }
    };
    json!({ "Completion": completion, "Log": outcome.log, "Reusable": outcome.reusable }).to_string().into_bytes()
}

pub fn decode_outcome(body: &[u8]) -> Result<Option<Outcome>, WireError> {
    let v = parse(body)?;
    if v.get("Untaken").and_then(Value::as_bool) == Some(true) {
        return Ok(None);
    }
    let c = field(&v, "Completion")?;
    let completion = if c.get("Response").is_some() {
        Completion::Response(bytes(c, "Response")?)
    } else if let Some(streamed) = c.get("Streamed") {
        Completion::Streamed { bytes: streamed.as_u64().ok_or("Streamed is not a byte count")? }
    } else if let Some(e) = c.get("Error") {
        Completion::Error { body: bytes(e, "Body")?, error_type: optional_text(e, "ErrorType") }
    } else if let Some(f) = c.get("Failed") {
        Completion::Failed { error_type: known_error_type(&text(f, "ErrorType")?), message: text(f, "Message")? }
    } else {
        return Err("Completion is none of Response, Streamed, Error, Failed".into());
    };
    Ok(Some(Outcome {
        completion,
        log: text(&v, "Log")?,
        reusable: field(&v, "Reusable")?.as_bool().ok_or("Reusable is not a boolean")?,
    }))
}

/// The platform's error types, as the worker names them (`Completion::Failed` holds static text).
fn known_error_type(name: &str) -> &'static str {
    const KNOWN: [&str; 6] = [
        "Runtime.InvalidEntrypoint",
        "Runtime.ExitError",
        "Runtime.OutOfMemory",
        "Runtime.Unknown",
        "Sandbox.Timedout",
        "Function.ResponseSizeTooLarge",
    ];
    KNOWN.into_iter().find(|k| *k == name).unwrap_or("Runtime.Unknown")
}

/// The answer to an invocation with `"Stream": true` is a sequence of frames, each a kind (`u8`), a payload length
/// (`u32`, big-endian) and the payload, sent as they are made: [`Frame::Start`] when the runtime began its streamed
/// response (payload `{"ContentType"}`), a [`Frame::Chunk`] per chunk (the bytes), and last [`Frame::Outcome`] (the
/// outcome as [`encode_outcome`] makes it). An answer that ends without its outcome broke off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Start { content_type: Option<String> },
    Chunk(Bytes),
    Outcome(Bytes),
}

const FRAME_START: u8 = 1;
const FRAME_CHUNK: u8 = 2;
const FRAME_OUTCOME: u8 = 3;
/// Kind and length.
const FRAME_HEAD: usize = 5;
/// Largest frame payload taken: an outcome holds a 6 MB response in base64 and a log tail; a chunk is what the
/// runtime's connection read at once.
pub const MAX_FRAME: usize = 32 << 20;

impl Frame {
    /// The frame's head and payload (a chunk's bytes are not copied).
    pub fn encode(&self) -> (Bytes, Bytes) {
        let (kind, payload) = match self {
            Frame::Start { content_type } => (FRAME_START, Bytes::from(json!({ "ContentType": content_type }).to_string())),
            Frame::Chunk(chunk) => (FRAME_CHUNK, chunk.clone()),
            Frame::Outcome(outcome) => (FRAME_OUTCOME, outcome.clone()),
        };
        let mut head = Vec::with_capacity(FRAME_HEAD);
        head.push(kind);
        head.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        (Bytes::from(head), payload)
    }

    /// The first whole frame in `buffer`, taken out of it; `None` while it is not all there.
    pub fn take(buffer: &mut bytes::BytesMut) -> Result<Option<Frame>, WireError> {
        if buffer.len() < FRAME_HEAD {
            return Ok(None);
        }
        let length = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
        if length > MAX_FRAME {
            return Err(format!("a frame of {length} bytes"));
        }
        if buffer.len() < FRAME_HEAD + length {
            return Ok(None);
        }
        let kind = buffer[0];
        let payload = buffer.split_to(FRAME_HEAD + length).freeze().slice(FRAME_HEAD..);
        match kind {
            FRAME_START => Ok(Some(Frame::Start { content_type: optional_text(&parse(&payload)?, "ContentType") })),
            FRAME_CHUNK => Ok(Some(Frame::Chunk(payload))),
            FRAME_OUTCOME => Ok(Some(Frame::Outcome(payload))),
            other => Err(format!("a frame of unknown kind {other}")),
        }
    }
}

pub fn encode_log_batches(batches: &[LogBatch]) -> Vec<u8> {
    let batches: Vec<Value> = batches
        .iter()
        .map(|b| {
            let lines: Vec<Value> = b.lines.iter().map(|l| json!([l.timestamp_ms, l.message])).collect();
            json!({ "Account": b.account, "Group": b.group, "Stream": b.stream, "Lines": lines })
        })
        .collect();
    json!({ "Batches": batches }).to_string().into_bytes()
}

pub fn decode_log_batches(body: &[u8]) -> Result<Vec<LogBatch>, WireError> {
    let v = parse(body)?;
    let batches = field(&v, "Batches")?.as_array().ok_or("Batches is not a list")?;
    batches
        .iter()
        .map(|b| {
            let lines = field(b, "Lines")?
                .as_array()
                .ok_or("Lines is not a list")?
                .iter()
                .map(|l| match l.as_array().map(Vec::as_slice) {
                    Some([Value::Number(t), Value::String(m)]) => {
                        Ok(LogLine { timestamp_ms: t.as_i64().unwrap_or(0), message: m.clone() })
                    }
                    _ => Err("a log line is not [timestamp, message]".to_string()),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(LogBatch { account: text(b, "Account")?, group: text(b, "Group")?, stream: text(b, "Stream")?, lines })
        })
        .collect()
}

/// An upper bound of a batch's size on the wire (JSON escapes a byte into at
/// most six), to cut posts below the server's body limit.
pub fn batch_size(batch: &LogBatch) -> usize {
    let names = batch.account.len() + batch.group.len() + batch.stream.len();
    batch.lines.iter().map(|l| l.message.len() * 6 + 32).sum::<usize>() + names * 6 + 256
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_format_round_trips_and_an_older_servers_spec_is_text() {
        let spec = FunctionSpec {
            code_dir: PathBuf::new(),
            memory_mb: 128,
            tmp_mb: 512,
            timeout: Duration::from_secs(3),
            env: Vec::new(),
            version: "1".into(),
            log_account: "123456789012".into(),
            log_group: "/aws/lambda/f".into(),
            log_format: LogFormat::Json { application: LogLevel::Error, system: LogLevel::Warn },
            code_hold: None,
            image: None,
            base: None,
            opt_dir: None,
            network: None,
        };
        let body = String::from_utf8(encode_start(&spec, "ab", None)).unwrap();
        assert_eq!(decode_start(body.as_bytes()).unwrap().0.log_format, spec.log_format);
        let json = r#""LogFormat":{"Application":"ERROR","System":"WARN"}"#;
        assert!(body.contains(json), "{body}");
        let older = body.replace(&format!("{json},"), "");
        assert_eq!(decode_start(older.as_bytes()).unwrap().0.log_format, LogFormat::Text);
        for bad in [r#"{"Application":"LOUD","System":"INFO"}"#, r#"{"Application":"INFO"}"#, "3"] {
            let body = body.replace(json, &format!(r#""LogFormat":{bad}"#));
            assert!(decode_start(body.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn round_trips() {
        let spec = FunctionSpec {
            code_dir: PathBuf::from("/x"),
            memory_mb: 256,
            tmp_mb: 512,
            timeout: Duration::from_millis(3500),
            env: vec![("A".into(), "b\"c".into())],
            version: "$LATEST".into(),
            log_account: "123456789012".into(),
            log_group: "/aws/lambda/f".into(),
            log_format: LogFormat::Text,
            code_hold: None,
            image: None,
            base: None,
            opt_dir: None,
            network: None,
        };
        let (back, sha, _) = decode_start(&encode_start(&spec, "ab", None)).unwrap();
        assert_eq!(sha, "ab");
        assert_eq!(back.opt_dir, None);
        let opt = "0f".repeat(32);
        let with_layers = FunctionSpec { opt_dir: Some(PathBuf::from("/data/code").join(&opt)), code_hold: None, env: Vec::new(), ..spec };
        let (back, _, _) = decode_start(&encode_start(&with_layers, "ab", None)).unwrap();
        assert_eq!(back.opt_dir, Some(PathBuf::from(&opt)));
        let spec = FunctionSpec { opt_dir: None, ..with_layers };
        for bad in [r#""../x""#, r#""AB""#, "1"] {
            let body = String::from_utf8(encode_start(&spec, "ab", None)).unwrap().replace(r#""OptSha256":null"#, &format!(r#""OptSha256":{bad}"#));
            assert!(decode_start(body.as_bytes()).is_err(), "{bad}");
        }
        assert_eq!((back.memory_mb, back.tmp_mb, back.timeout, back.env.clone()), (256, 512, spec.timeout, spec.env.clone()));
        assert_eq!((&back.version, &back.log_account, &back.log_group), (&spec.version, &spec.log_account, &spec.log_group));
        assert_eq!((back.image, back.base, back.log_format), (None, None, LogFormat::Text));
        let image = ImageLaunch {
            digest: "sha256:ab".into(),
            repository: "team/app".into(),
            command: vec!["/lambda-entrypoint.sh".into(), "app.handler".into()],
            workdir: "/var/task".into(),
        };
        let with_image = FunctionSpec { image: Some(image.clone()), code_hold: None, env: Vec::new(), ..spec };
        let (back, _, _) = decode_start(&encode_start(&with_image, "", None)).unwrap();
        assert_eq!((back.image, back.base), (Some(image.clone()), None));
        let base = RuntimeBase { account: "000000000001".into(), launch: image };
        let on_base = FunctionSpec { image: None, base: Some(base.clone()), code_hold: None, ..with_image };
        let (back, _, _) = decode_start(&encode_start(&on_base, "", None)).unwrap();
        assert_eq!((back.image, back.base), (None, Some(base)));
        assert_eq!(back.network, None);
        let allow = ["10.1.0.0/16".parse().unwrap(), "192.168.0.0/24".parse().unwrap()];
        let network = ignis_net::Attachment::new([("db", &allow[..]), ("cache", &allow[..1])]);
        let attached = FunctionSpec { network: network.clone(), code_hold: None, ..on_base };
        let (back, _, _) = decode_start(&encode_start(&attached, "", None)).unwrap();
        assert_eq!(back.network, network);
        // A server that sends no network (an older one) starts sandboxes without one; a malformed one is refused.
        let body = String::from_utf8(encode_start(&attached, "", None)).unwrap();
        let start = body.find(r#""Network":"#).unwrap();
        let end = start + body[start..].find("]}").unwrap() + 2;
        let without = format!("{}{}", &body[..start], body[end..].trim_start_matches(','));
        assert_eq!(decode_start(without.as_bytes()).unwrap().0.network, None);
        let bad = r#""Network":{"networks":["db"],"allow":["10.0.0.0/33"]}"#;
        let malformed = format!("{}{bad}{}", &body[..start], &body[end..]);
        assert!(decode_start(malformed.as_bytes()).is_err(), "{malformed}");

        let invocation = Invocation {
            request_id: "r".into(),
            payload: Bytes::from_static(b"\x00{}"),
            invoked_function_arn: "arn".into(),
            trace_id: "t".into(),
            client_context: None,
            cognito_identity: Some("c".into()),
            response_stream: None,
        };
        let (back, received) = decode_invocation(&encode_invocation(&invocation)).unwrap();
        assert!(back.response_stream.is_none() && received.is_none());
        let expected = (invocation.payload.clone(), None, Some("c".into()));
        assert_eq!((back.payload, back.client_context, back.cognito_identity), expected);
        let streamed = Invocation { response_stream: Some(mpsc::channel(1).0), ..invocation };
        let (back, received) = decode_invocation(&encode_invocation(&streamed)).unwrap();
        assert!(back.response_stream.is_some() && received.is_some());

        for completion in [
            Completion::Response(Bytes::from_static(b"ok")),
            Completion::Streamed { bytes: 7 << 20 },
            Completion::Error { body: Bytes::from_static(b"{}"), error_type: Some("E".into()) },
            Completion::Failed { error_type: "Sandbox.Timedout", message: "m".into() },
        ] {
            let outcome = Outcome { completion: completion.clone(), log: "START\n".into(), reusable: true };
            let back = decode_outcome(&encode_outcome(Some(&outcome))).unwrap().unwrap();
            assert_eq!((back.completion, back.log, back.reusable), (completion, outcome.log, true));
        }
        assert!(decode_outcome(&encode_outcome(None)).unwrap().is_none());

        let batch = LogBatch {
            account: "a".into(),
            group: "g".into(),
            stream: "s".into(),
            lines: vec![LogLine { timestamp_ms: 5, message: "hi\n".into() }],
        };
        let back = decode_log_batches(&encode_log_batches(&[batch])).unwrap();
        assert_eq!(back[0].lines, vec![LogLine { timestamp_ms: 5, message: "hi\n".into() }]);

        // The size bound holds for the worst bytes JSON can get.
        let nasty = LogBatch {
            account: "a".into(),
            group: "g".into(),
            stream: "s".into(),
            lines: vec![LogLine { timestamp_ms: i64::MIN, message: "\u{1}\"\\\n".repeat(1000) }],
        };
        assert!(encode_log_batches(std::slice::from_ref(&nasty)).len() <= batch_size(&nasty));
    }

    #[test]
    fn batch_size_counts_the_names() {
        // The `wire` fuzz target checks this bound on every batch it decodes:
        // a long account, group or stream name broke it.
        let body = format!(r#"{{"Batches":[{{"Account":"{}","Group":"g","Stream":"s","Lines":[]}}]}}"#, "a".repeat(400));
        let batches = decode_log_batches(body.as_bytes()).unwrap();
        assert!(encode_log_batches(&batches).len() <= batch_size(&batches[0]));
        let escaped = LogBatch { account: "\u{1}".repeat(100), group: "\"".repeat(100), stream: "s".into(), lines: Vec::new() };
        assert!(encode_log_batches(std::slice::from_ref(&escaped)).len() <= batch_size(&escaped));
    }

    #[test]
    fn refuses_malformed_bodies() {
        assert!(decode_start(b"{}").is_err());
        assert!(decode_invocation(br#"{"RequestId": 1}"#).is_err());
        assert!(decode_outcome(br#"{"Completion": {}, "Log": "", "Reusable": true}"#).is_err());
        assert!(decode_log_batches(br#"{"Batches": [{"Lines": [1]}]}"#).is_err());
        assert!(parse(b"nope").is_err());
    }

    #[test]
    fn refuses_timeouts_past_lambdas_longest() {
        let spec = |ms: u64| {
            format!(
                r#"{{"CodeSha256": "ab", "MemoryMb": 128, "TmpMb": 512, "TimeoutMs": {ms}, "Env": [], "Version": "1", "LogAccount": "a", "LogGroup": "g"}}"#
            )
        };
        assert_eq!(decode_start(spec(900_000).as_bytes()).unwrap().0.timeout, Duration::from_secs(900));
        // A sandbox adds its timeout to the clock's milliseconds (an i64): this one overflowed it.
        assert!(decode_start(spec(i64::MAX as u64).as_bytes()).is_err());
        assert!(decode_start(spec(u64::MAX).as_bytes()).is_err());
        assert!(decode_start(spec(900_001).as_bytes()).is_err());
    }

    #[test]
    fn frames() {
        let frames = [
            Frame::Start { content_type: Some("text/plain".into()) },
            Frame::Start { content_type: None },
            Frame::Chunk(Bytes::from_static(b"\0\x01chunk")),
            Frame::Chunk(Bytes::new()),
            Frame::Outcome(Bytes::from_static(br#"{"Untaken":true}"#)),
        ];
        let mut wire = bytes::BytesMut::new();
        for frame in &frames {
            let (head, payload) = frame.encode();
            wire.extend_from_slice(&head);
            wire.extend_from_slice(&payload);
        }
        // Byte by byte: each frame comes out once it is whole, and only then.
        let (mut buffer, mut back) = (bytes::BytesMut::new(), Vec::new());
        for byte in wire.iter() {
            buffer.extend_from_slice(&[*byte]);
            while let Some(frame) = Frame::take(&mut buffer).unwrap() {
                back.push(frame);
            }
        }
        assert_eq!(back, frames);
        assert!(buffer.is_empty());
        let mut unknown = bytes::BytesMut::from(&b"\x09\0\0\0\0"[..]);
        assert!(Frame::take(&mut unknown).is_err());
        let mut huge = bytes::BytesMut::from(&b"\x02\xff\xff\xff\xff"[..]);
        assert!(Frame::take(&mut huge).is_err());
        let mut bad_start = bytes::BytesMut::from(&b"\x01\0\0\0\x01{"[..]);
        assert!(Frame::take(&mut bad_start).is_err());
    }
}
