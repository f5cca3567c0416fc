//! Managed runtimes: a Python handler, written as for Lambda and zipped, runs on its runtime's base through the
//! official runtime interface client, with Lambda's context, errors and logs; a runtime that is not installed is
//! refused at CreateFunction; a function's layers are its `/opt`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

/// The runtimes these tests install: the Python base, built once per machine (pip, from PyPI) and cached.
const RUNTIMES: &str = "provided.al2023,python3.11";

const APP: &str = r#"
import json, logging, os, sys
import boto3

logger = logging.getLogger()
logger.setLevel(logging.INFO)
COLD = {"starts": 0}
COLD["starts"] += 1
print("init ran")

def handler(event, context):
    COLD.setdefault("calls", 0)
    COLD["calls"] += 1
    print("handling", json.dumps(event))
    logger.info("from logging")
    if event.get("fail"):
        raise ValueError("asked to fail")
    return {
        "event": event,
        "function": context.function_name,
        "version": context.function_version,
        "memory": context.memory_limit_in_mb,
        "request": context.aws_request_id,
        "arn": context.invoked_function_arn,
        "group": context.log_group_name,
        "remaining": context.get_remaining_time_in_millis(),
        "calls": COLD["calls"],
        "starts": COLD["starts"],
        "boto3": boto3.__version__,
        "python": sys.version.split()[0],
        "exec_env": os.environ.get("AWS_EXECUTION_ENV"),
        "handler_env": os.environ.get("_HANDLER"),
        "cwd": os.getcwd(),
        "usr_local": os.path.exists("/usr/local/lib/python3.11"),
    }
"#;

fn python(name: &str, server: &Server, files: &[(&str, &[u8], u32)], handler: &str) -> Reply {
    server.create(name, &zip_of(files), json!({ "Runtime": "python3.11", "Handler": handler, "MemorySize": 256 }))
}

#[test]
fn a_python_handler_runs_with_lambdas_context_errors_and_logs() {
    let server = Server::start_with(&["--runtimes", RUNTIMES]);
    let created = python("py", &server, &[("app.py", APP.as_bytes(), 0o644)], "app.handler");
    assert_eq!(created.status, 201, "{}", created.text());

    let first = server.invoke("py", r#"{"n": 1}"#);
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("x-amz-function-error"), None, "{}", first.text());
    let body = first.json();
    assert_eq!(body["event"], json!({ "n": 1 }));
    assert_eq!((body["function"].as_str(), body["version"].as_str(), body["memory"].as_str()), (Some("py"), Some("$LATEST"), Some("256")));
    assert_eq!(body["group"], "/aws/lambda/py");
    assert!(body["arn"].as_str().unwrap().ends_with(":function:py"), "{body}");
    let remaining = body["remaining"].as_u64().unwrap();
    assert!(remaining > 0 && remaining <= 3000, "{body}");
    assert_eq!((body["exec_env"].as_str(), body["handler_env"].as_str()), (Some("AWS_Lambda_python3.11"), Some("app.handler")));
    assert_eq!(body["cwd"], "/var/task");
    assert!(body["boto3"].as_str().is_some_and(|v| v.starts_with('1')), "{body}");
    assert!(body["python"].as_str().unwrap().starts_with("3.11"), "{body}");
    let tail = first.log_tail();
    assert!(tail.contains("handling {\"n\": 1}") && tail.contains("from logging"), "{tail}");
    assert!(report_line(&tail).contains("Init Duration"), "{tail}");
    // The module's own output, at init, lands in the function's logs too.
    assert!(eventually(Duration::from_secs(10), || server.log_events("py").iter().any(|e| e["message"].as_str().is_some_and(|m| m.contains("init ran")))));

    // Warm: the module's globals are kept, its code ran once.
    let second = server.invoke("py", r#"{"n": 2}"#).json();
    assert_eq!((second["calls"].as_u64(), second["starts"].as_u64()), (Some(2), Some(1)), "{second}");

    // An exception is Lambda's error shape, and the sandbox stays.
    let failed = server.invoke("py", r#"{"fail": true}"#);
    assert_eq!(failed.status, 200);
    assert_eq!(failed.header("x-amz-function-error"), Some("Unhandled"));
    let error = failed.json();
    assert_eq!((error["errorType"].as_str(), error["errorMessage"].as_str()), (Some("ValueError"), Some("asked to fail")), "{error}");
    assert!(error["stackTrace"].as_array().is_some_and(|trace| !trace.is_empty()), "{error}");
    assert!(failed.log_tail().contains("ValueError"), "{}", failed.log_tail());
    assert_eq!(server.invoke("py", "{}").json()["calls"].as_u64(), Some(4));
}

#[test]
fn a_bad_python_handler_is_lambdas_init_error() {
    let server = Server::start_with(&["--runtimes", RUNTIMES]);
    let files: &[(&str, &[u8], u32)] = &[("app.py", b"def handler(event, context):\n    return 1\n", 0o644)];
    for (name, handler, error_type) in
        [("nomodule", "nope.handler", "Runtime.ImportModuleError"), ("nohandler", "app.missing", "Runtime.HandlerNotFound")]
    {
        assert_eq!(python(name, &server, files, handler).status, 201);
        let reply = server.invoke(name, "{}");
        assert_eq!(reply.header("x-amz-function-error"), Some("Unhandled"), "{}", reply.text());
        assert_eq!(reply.json()["errorType"], error_type, "{}", reply.text());
    }
    // A module that exits the process.
    let exits: &[(&str, &[u8], u32)] = &[("app.py", b"import sys\ndef handler(event, context):\n    sys.exit(3)\n", 0o644)];
    assert_eq!(python("exits", &server, exits, "app.handler").status, 201);
    let reply = server.invoke("exits", "{}");
    assert_eq!(reply.header("x-amz-function-error"), Some("Unhandled"), "{}", reply.text());
    assert_eq!(server.invoke("exits", "{}").header("x-amz-function-error"), Some("Unhandled"));
}

#[test]
fn a_runtime_that_is_not_installed_is_refused_at_create_function() {
    let server = Server::start();
    let reply = python("py", &server, &[("app.py", APP.as_bytes(), 0o644)], "app.handler");
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert_eq!(reply.header("x-amzn-errortype").and_then(|t| t.split(':').next()), Some("InvalidParameterValueException"));
    let body: Value = reply.json();
    let message = body["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("python3.11") && message.contains("ignis runtime build python3.11"), "{message}");
    // Not one of Lambda's runtimes at all: the model's error.
    let reply = server.create("odd", &zip_of(&[("x", b"x", 0o644)]), json!({ "Runtime": "cobol85" }));
    assert_eq!(reply.status, 400);
    assert_eq!(reply.header("x-amzn-errortype").and_then(|t| t.split(':').next()), Some("ValidationException"), "{}", reply.text());
}

/// Publishes a layer of `files`; answers its version's ARN.
pub fn publish_layer(server: &Server, name: &str, files: &[(&str, &[u8], u32)]) -> String {
    use base64::Engine;
    let body = json!({ "Content": { "ZipFile": base64::engine::general_purpose::STANDARD.encode(zip_of(files)) } });
    let published = server.lambda("POST", &format!("/2018-10-31/layers/{name}/versions"), body.to_string().as_bytes());
    assert_eq!(published.status, 201, "{}", published.text());
    published.json()["LayerVersionArn"].as_str().unwrap().to_string()
}

/// A layer supplies a dependency: its `python/` and `python/lib/python3.11/site-packages/` are on the handler's
/// import path, under a read-only `/opt`; the handler is a module of a package.
#[test]
fn a_layer_supplies_a_python_dependency_at_opt() {
    let server = Server::start_with(&["--runtimes", RUNTIMES]);
    let arn = publish_layer(
        &server,
        "greetings",
        &[
            ("python/greeting.py", b"WORD = 'from a layer'\n", 0o644),
            ("python/lib/python3.11/site-packages/other.py", b"WORD = 'from site-packages'\n", 0o644),
        ],
    );
    let app = b"import os, greeting, other\ndef handler(event, context):\n    return {'word': greeting.WORD, \
'file': greeting.__file__, 'other': other.WORD, 'writable': os.access('/opt/python', os.W_OK)}\n";
    let created = server.create(
        "layered",
        &zip_of(&[("pkg/__init__.py", b"", 0o644), ("pkg/app.py", app, 0o644)]),
        json!({ "Runtime": "python3.11", "Handler": "pkg.app.handler", "Layers": [arn] }),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let answer = server.invoke("layered", "{}").json();
    assert_eq!((answer["word"].as_str(), answer["other"].as_str()), (Some("from a layer"), Some("from site-packages")), "{answer}");
    assert_eq!(answer["file"], "/opt/python/greeting.py", "{answer}");
    assert_eq!(answer["writable"], false, "{answer}");
}

/// Node.js handlers, ES module and CommonJS, async and callback style, with Lambda's context and error shape.
#[test]
fn node_handlers_run_as_es_modules_and_commonjs() {
    let server = Server::start_with(&["--runtimes", "provided.al2023,nodejs20.x"]);
    let esm = br#"
let calls = 0;
export const handler = async (event, context) => {
  calls += 1;
  console.log("handling", JSON.stringify(event));
  if (event.fail) throw new TypeError("asked to fail");
  return { event, calls, function: context.functionName, remaining: context.getRemainingTimeInMillis(),
           exec: process.env.AWS_EXECUTION_ENV, node: process.version, cwd: process.cwd() };
};
"#;
    let created = server.create(
        "mjs",
        &zip_of(&[("index.mjs", esm, 0o644)]),
        json!({ "Runtime": "nodejs20.x", "Handler": "index.handler" }),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let first = server.invoke("mjs", r#"{"n": 1}"#);
    assert_eq!(first.header("x-amz-function-error"), None, "{}", first.text());
    let body = first.json();
    assert_eq!((body["event"].clone(), body["calls"].clone(), body["function"].clone()), (json!({ "n": 1 }), json!(1), json!("mjs")));
    assert!(body["remaining"].as_u64().is_some_and(|ms| ms > 0 && ms <= 3000), "{body}");
    assert_eq!((body["exec"].as_str(), body["cwd"].as_str()), (Some("AWS_Lambda_nodejs20.x"), Some("/var/task")));
    assert!(body["node"].as_str().unwrap().starts_with("v20."), "{body}");
    assert!(first.log_tail().contains("handling"), "{}", first.log_tail());
    assert_eq!(server.invoke("mjs", "{}").json()["calls"], 2, "warm: the module is loaded once");
    let failed = server.invoke("mjs", r#"{"fail": true}"#);
    assert_eq!(failed.header("x-amz-function-error"), Some("Unhandled"));
    let error = failed.json();
    assert_eq!((error["errorType"].as_str(), error["errorMessage"].as_str()), (Some("TypeError"), Some("asked to fail")), "{error}");

    // A CommonJS callback handler, its dependency from a layer's nodejs/node_modules.
    let arn = publish_layer(&server, "adder", &[("nodejs/node_modules/adder/index.js", b"module.exports = (a, b) => a + b;\n", 0o644)]);
    let cjs = b"const add = require('adder');\nexports.handler = (event, context, callback) => callback(null, { sum: add(event.a, event.b) });\n";
    let settings = json!({ "Runtime": "nodejs20.x", "Handler": "app.handler", "Layers": [arn] });
    let created = server.create("cjs", &zip_of(&[("app.js", cjs, 0o644)]), settings);
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(server.invoke("cjs", r#"{"a": 2, "b": 3}"#).json(), json!({ "sum": 5 }));
}

/// An init longer than Lambda's 10 s goes on within the first invocation's timeout, which then covers the rest of
/// the init and the handler; one that does not end within that either is the invocation's timeout.
#[test]
fn an_init_longer_than_ten_seconds_goes_on_within_the_first_invocations_timeout() {
    let server = Server::start();
    let slow_init = |timeout: u32| {
        let script = sh_runtime_script(r#"echo '"done"' > /tmp/response"#).replacen("#!/bin/sh\n", "#!/bin/sh\nsleep 12\n", 1);
        (zip_of(&[("bootstrap", script.as_bytes(), 0o755)]), json!({ "Timeout": timeout }))
    };
    let (zip, settings) = slow_init(30);
    assert_eq!(server.create("slow-init", &zip, settings).status, 201);
    let (zip, settings) = slow_init(1);
    assert_eq!(server.create("slower-init", &zip, settings).status, 201);
    let (ok, timed_out) = std::thread::scope(|scope| {
        let ok = scope.spawn(|| server.invoke("slow-init", "{}"));
        let timed_out = scope.spawn(|| server.invoke("slower-init", "{}"));
        (ok.join().unwrap(), timed_out.join().unwrap())
    });
    assert_eq!(ok.header("x-amz-function-error"), None, "{}", ok.text());
    assert_eq!(ok.json(), json!("done"));
    assert_eq!(timed_out.header("x-amz-function-error"), Some("Unhandled"), "{}", timed_out.text());
    assert_eq!(timed_out.json()["errorType"], "Sandbox.Timedout", "{}", timed_out.text());
}

/// `nodejs24.x` drops callback-style handlers, as Lambda does: an async one runs, a callback one is refused.
#[test]
fn nodejs24_refuses_callback_handlers() {
    let server = Server::start_with(&["--runtimes", "nodejs24.x"]);
    let callback = b"exports.handler = (event, context, callback) => callback(null, { ok: 1 });\n";
    let created = server.create("cb", &zip_of(&[("app.js", callback, 0o644)]), json!({ "Runtime": "nodejs24.x", "Handler": "app.handler" }));
    assert_eq!(created.status, 201, "{}", created.text());
    let refused = server.invoke("cb", "{}");
    assert_eq!(refused.header("x-amz-function-error"), Some("Unhandled"), "{}", refused.text());
    assert_eq!(refused.json()["errorType"], "Runtime.CallbackHandlerDeprecated", "{}", refused.text());
    let async_handler = b"export const handler = async () => ({ node: process.version });\n";
    let created =
        server.create("as", &zip_of(&[("app.mjs", async_handler, 0o644)]), json!({ "Runtime": "nodejs24.x", "Handler": "app.handler" }));
    assert_eq!(created.status, 201, "{}", created.text());
    assert!(server.invoke("as", "{}").json()["node"].as_str().unwrap().starts_with("v24."));
}
