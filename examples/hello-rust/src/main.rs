//! A function built with the official `lambda_runtime` crate.
//!
//! It answers `{"message": "Hello, <name>!"}` for an event `{"name": ...}`, logs a
//! line per invocation, and turns an event `{"fail": "why"}` into a function error.
//! With `PRINT_EVENT` set in its environment it also prints every event, as
//! `event <json>` on one line. An event `{"stream": ["a", "b", ...]}` is answered
//! with the crate's streaming response: each string a chunk, with `"pause_ms": N`
//! N milliseconds after each.

use lambda_runtime::{Error, FunctionResponse, LambdaEvent, service_fn, streaming};
use serde_json::{Value, json};

type Answer = FunctionResponse<Value, streaming::Body>;

async fn handler(event: LambdaEvent<Value>) -> Result<Answer, Error> {
    let (payload, context) = event.into_parts();
    if std::env::var_os("PRINT_EVENT").is_some() {
        println!("event {payload}");
    }
    if let Some(why) = payload.get("fail").and_then(Value::as_str) {
        return Err(why.into());
    }
    if let Some(chunks) = payload.get("stream").and_then(Value::as_array) {
        let chunks: Vec<String> = chunks.iter().filter_map(Value::as_str).map(str::to_string).collect();
        let pause = std::time::Duration::from_millis(payload.get("pause_ms").and_then(Value::as_u64).unwrap_or(0));
        let (mut sender, body) = streaming::channel();
        tokio::spawn(async move {
            for chunk in chunks {
                if sender.send_data(chunk.into()).await.is_err() {
                    return;
                }
                tokio::time::sleep(pause).await;
            }
        });
        return Ok(FunctionResponse::StreamingResponse(streaming::Response::from(body)));
    }
    let name = payload.get("name").and_then(Value::as_str).unwrap_or("world");
    println!("handling {} for {name}", context.request_id);
    Ok(FunctionResponse::BufferedResponse(json!({ "message": format!("Hello, {name}!") })))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(handler)).await
}
