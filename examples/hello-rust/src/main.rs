//! A function built with the official `lambda_runtime` crate.
//!
//! It answers `{"message": "Hello, <name>!"}` for an event `{"name": ...}`, logs a
//! line per invocation, and turns an event `{"fail": "why"}` into a function error.
//! With `PRINT_EVENT` set in its environment it also prints every event, as
//! `event <json>` on one line.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let (payload, context) = event.into_parts();
    if std::env::var_os("PRINT_EVENT").is_some() {
        println!("event {payload}");
    }
    if let Some(why) = payload.get("fail").and_then(Value::as_str) {
        return Err(why.into());
    }
    let name = payload.get("name").and_then(Value::as_str).unwrap_or("world");
    println!("handling {} for {name}", context.request_id);
    Ok(json!({ "message": format!("Hello, {name}!") }))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(handler)).await
}
