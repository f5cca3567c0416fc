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
//! Each front end counts the invocations that arrived at it; a cluster's front
//! end adds the others' (`GET /ignis/activity-of/{account}[/{function}]`,
//! the administrator's key).
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

/// `GET /ignis/activity`: the caller's functions active in the last hour, with their totals (in a cluster, every
/// front end's added: each counts the invocations that arrived at it).
pub async fn list_activity(app: &App, caller: &Caller) -> Result<Answer, ApiError> {
    let account = caller.account.as_str();
    let mut all = vec![totals_here(app, account)];
    all.extend(elsewhere(app, &format!("/ignis/activity-of/{account}")).await);
    Ok(json_answer(StatusCode::OK, json!({ "Functions": merge_totals(&all) })))
}

/// `GET /ignis/activity/{function}`: the function's last hour, a point a minute, oldest first (in a cluster, every
/// front end's added).
pub async fn get_activity(app: &App, caller: &Caller, name: &str) -> Result<Answer, ApiError> {
    let (_, record) = crate::control::resolve(app, caller, "GetActivity", name, None)?;
    let account = caller.account.as_str();
    let mut all = vec![minutes_here(app, account, &record.name)];
    all.extend(elsewhere(app, &format!("/ignis/activity-of/{account}/{}", record.name)).await);
    Ok(json_answer(StatusCode::OK, json!({ "FunctionName": record.name, "Minutes": merge_minutes(&all) })))
}

/// `GET /ignis/activity-of/{account}[/{function}]`: this front end's own activity of an account (or of one of its
/// functions), for another front end of a cluster (administrator key only).
pub fn activity_here(app: &App, caller: &Caller, account: &str, function: Option<&str>) -> Result<Answer, ApiError> {
    if !caller.admin {
        return Err(ApiError::AccessDenied("only the administrator's key may read another front end's activity".into()));
    }
    let answer = match function {
        None => totals_here(app, account),
        Some(function) => minutes_here(app, account, function),
    };
    Ok(json_answer(StatusCode::OK, answer))
}

/// This front end's totals of `account`'s functions: `[{"FunctionName", ...}]`.
fn totals_here(app: &App, account: &str) -> Value {
    let totals = app.invoker.activity_totals(account);
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
    json!(functions)
}

/// This front end's minutes of `function` of `account`: `[{"Start", ...}]`.
fn minutes_here(app: &App, account: &str, function: &str) -> Value {
    let minutes: Vec<Value> = app
        .invoker
        .activity_points(account, function)
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
    json!(minutes)
}

/// The answers of the cluster's other front ends to `path` (none outside a cluster; one that does not answer in
/// time adds nothing).
async fn elsewhere(app: &App, path: &str) -> Vec<Value> {
    let Some(front_ends) = &app.config.front_ends else { return Vec::new() };
    let mut answers = Vec::new();
    for peer in front_ends.others().await {
        let call = peer.call(http::Method::GET, path, Bytes::new());
        match ignis_clock::timeout(&*app.config.clock, PEER_WAIT, call).await {
            Ok(Ok((StatusCode::OK, body))) => answers.extend(serde_json::from_slice::<Value>(&body).ok()),
            _ => tracing::warn!(front_end = peer.authority(), "another front end did not give its activity"),
        }
    }
    answers
}

/// How long a front end waits for another's activity.
const PEER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The counts a function's totals and minutes add up across front ends.
const FIELDS: [&str; 4] = ["Invocations", "Errors", "Throttles", "ConcurrentExecutions"];

fn number(v: &Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or(0)
}

/// Front ends' totals (each a list) added by function, sorted by name.
fn merge_totals(all: &[Value]) -> Vec<Value> {
    let mut merged: std::collections::BTreeMap<String, [u64; 4]> = std::collections::BTreeMap::new();
    for function in all.iter().flat_map(|list| list.as_array().into_iter().flatten()) {
        let Some(name) = function["FunctionName"].as_str() else { continue };
        let sums = merged.entry(name.to_string()).or_default();
        for (sum, field) in sums.iter_mut().zip(FIELDS) {
            *sum += number(function, field);
        }
    }
    merged
        .into_iter()
        .map(|(name, [invocations, errors, throttles, running])| {
            json!({
                "FunctionName": name,
                "Invocations": invocations,
                "Errors": errors,
                "Throttles": throttles,
                "ConcurrentExecutions": running,
            })
        })
        .collect()
}

/// Front ends' minutes (each a list) added by minute, oldest first. Counts add up; a minute's duration median is
/// the front ends' medians weighted by their invocations, and its p99 the highest of theirs (an upper bound).
fn merge_minutes(all: &[Value]) -> Vec<Value> {
    #[derive(Default)]
    struct Minute {
        counts: [u64; 4],
        weighted_p50: f64,
        timed: u64,
        p99: Option<f64>,
    }
    let mut merged: std::collections::BTreeMap<u64, Minute> = std::collections::BTreeMap::new();
    for point in all.iter().flat_map(|list| list.as_array().into_iter().flatten()) {
        let minute = merged.entry(number(point, "Start")).or_default();
        for (sum, field) in minute.counts.iter_mut().zip(FIELDS) {
            *sum += number(point, field);
        }
        if let Some(p50) = point["DurationP50"].as_f64() {
            let weight = number(point, "Invocations").max(1);
            minute.weighted_p50 += p50 * weight as f64;
            minute.timed += weight;
        }
        if let Some(p99) = point["DurationP99"].as_f64() {
            minute.p99 = Some(minute.p99.map_or(p99, |known| known.max(p99)));
        }
    }
    merged
        .into_iter()
        .map(|(start, m)| {
            json!({
                "Start": start,
                "Invocations": m.counts[0],
                "Errors": m.counts[1],
                "Throttles": m.counts[2],
                "ConcurrentExecutions": m.counts[3],
                "DurationP50": (m.timed > 0).then(|| m.weighted_p50 / m.timed as f64),
                "DurationP99": m.p99,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_ends_totals_add_up_by_function() {
        let a = json!([{ "FunctionName": "f", "Invocations": 3, "Errors": 1, "Throttles": 0, "ConcurrentExecutions": 1 }]);
        let b = json!([
            { "FunctionName": "f", "Invocations": 2, "Errors": 0, "Throttles": 4, "ConcurrentExecutions": 2 },
            { "FunctionName": "e", "Invocations": 1, "Errors": 0, "Throttles": 0, "ConcurrentExecutions": 0 },
        ]);
        let merged = merge_totals(&[a, b, json!("not a list")]);
        assert_eq!(
            merged,
            vec![
                json!({ "FunctionName": "e", "Invocations": 1, "Errors": 0, "Throttles": 0, "ConcurrentExecutions": 0 }),
                json!({ "FunctionName": "f", "Invocations": 5, "Errors": 1, "Throttles": 4, "ConcurrentExecutions": 3 }),
            ]
        );
    }

    #[test]
    fn front_ends_minutes_add_up_and_their_durations_combine() {
        let point = |start: u64, invocations: u64, p50: Option<f64>, p99: Option<f64>| {
            json!({ "Start": start, "Invocations": invocations, "Errors": 0, "Throttles": 0, "ConcurrentExecutions": 1,
                    "DurationP50": p50, "DurationP99": p99 })
        };
        let a = json!([point(60, 3, Some(10.0), Some(30.0)), point(120, 0, None, None)]);
        let b = json!([point(60, 1, Some(2.0), Some(50.0))]);
        let merged = merge_minutes(&[a, b]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0]["Start"], 60);
        assert_eq!((merged[0]["Invocations"].as_u64(), merged[0]["ConcurrentExecutions"].as_u64()), (Some(4), Some(2)));
        assert_eq!((merged[0]["DurationP50"].as_f64(), merged[0]["DurationP99"].as_f64()), (Some(8.0), Some(50.0)));
        assert_eq!((merged[1]["DurationP50"].clone(), merged[1]["DurationP99"].clone()), (Value::Null, Value::Null));
    }
}
