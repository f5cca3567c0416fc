//! The web console: its assets at `/console/`, served without credentials (they
//! hold no secret: the page asks for a key pair and signs every call itself, so
//! it can do nothing its user's key cannot), and Ignis's own activity calls its
//! function list and charts read:
//!
//! - `GET /ignis/activity`: each function of the caller's account that ran or
//!   was throttled in the last hour, with its totals;
//! - `GET /ignis/activity/{function}`: that function's last hour, minute by
//!   minute (`ignis_invoke::activity`).
//!
//! The assets are compiled into the binary; the page loads nothing from
//! elsewhere (its Content-Security-Policy allows only its own origin), so it
//! works with no network beyond Ignis.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::http::{Answer, json_answer};
use crate::{App, Caller};

/// A file of the console, by its path under `/console/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asset {
    /// `/console` without the slash: redirected, so relative links resolve.
    Root,
    Index,
    Script,
    Style,
}

impl Asset {
    /// The asset `GET path` names, if any.
    pub fn at(path: &str) -> Option<Asset> {
        match path {
            "/console" => Some(Asset::Root),
            "/console/" | "/console/index.html" => Some(Asset::Index),
            "/console/console.js" => Some(Asset::Script),
            "/console/console.css" => Some(Asset::Style),
            _ => None,
        }
    }
}

const INDEX: &str = include_str!("../console/index.html");
const SCRIPT: &str = include_str!("../console/console.js");
const STYLE: &str = include_str!("../console/console.css");

/// What the page may load and connect to: its own origin only.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; \
                      form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// Answers `GET` of `asset`; the page learns the server's region from a meta tag.
pub fn asset(app: &App, asset: Asset) -> Answer {
    let (body, kind) = match asset {
        Asset::Root => {
            let mut moved = Response::new(Full::new(Bytes::new()));
            *moved.status_mut() = StatusCode::MOVED_PERMANENTLY;
            moved.headers_mut().insert(http::header::LOCATION, HeaderValue::from_static("/console/"));
            return moved;
        }
        Asset::Index => (INDEX.replace("{{region}}", &app.config.region), "text/html; charset=utf-8"),
        Asset::Script => (SCRIPT.to_string(), "text/javascript; charset=utf-8"),
        Asset::Style => (STYLE.to_string(), "text/css; charset=utf-8"),
    };
    let mut answer = Response::new(Full::new(Bytes::from(body)));
    let headers = answer.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(http::header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    headers.insert(http::header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(http::header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    answer
}

/// `GET /ignis/activity`: the caller's functions active in the last hour, with their totals.
pub fn list_activity(app: &App, caller: &Caller) -> Result<Answer, ApiError> {
    let mut totals = app.invoker.activity_totals(caller.account.as_str());
    totals.sort_by(|a, b| a.0.cmp(&b.0));
    let functions: Vec<Value> = totals
        .into_iter()
        .map(|(name, t)| {
            json!({
                "FunctionName": name,
                "Invocations": t.invocations,
                "Errors": t.errors,
                "Throttles": t.throttles,
                "ConcurrentExecutions": t.running,
            })
        })
        .collect();
    Ok(json_answer(StatusCode::OK, json!({ "Functions": functions })))
}

/// `GET /ignis/activity/{function}`: the function's last hour, a point a minute, oldest first.
pub fn get_activity(app: &App, caller: &Caller, name: &str) -> Result<Answer, ApiError> {
    let (_, record) = crate::control::resolve(app, caller, "GetActivity", name, None)?;
    let minutes: Vec<Value> = app
        .invoker
        .activity_points(caller.account.as_str(), &record.name)
        .into_iter()
        .map(|p| {
            json!({
                "Start": p.start,
                "Invocations": p.invocations,
                "Errors": p.errors,
                "Throttles": p.throttles,
                "ConcurrentExecutions": p.concurrency,
                "DurationP50": p.p50_ms,
                "DurationP99": p.p99_ms,
            })
        })
        .collect();
    Ok(json_answer(StatusCode::OK, json!({ "FunctionName": record.name, "Minutes": minutes })))
}
