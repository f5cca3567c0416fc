//! CloudWatch Logs' calls (`FilterLogEvents`, `GetLogEvents`, `DescribeLogGroups`,
//! `DescribeLogStreams`, `PutRetentionPolicy`, `DeleteRetentionPolicy`,
//! `DeleteLogGroup`) over the log service (`ignis_logs::Logs`), so `aws logs`
//! and the SDKs' `logs` clients work: request shapes, group names and ARNs,
//! limits (out of CloudWatch's range: `InvalidParameterException`), and the
//! JSON answers. Every call acts on the caller's account only. A filter
//! pattern is parsed here (`ignis_logs::FilterPattern`; a malformed one is
//! `InvalidParameterException`) and matched by the log service. The log
//! writer, the stored logs, retention and the queries are `ignis_logs`'s.
//! A cluster's front end keeps the logs of the invocations it ran: it asks
//! every other front end too (`POST /ignis/log-requests`) and merges the
//! answers (`logs_merge`).

use std::sync::Arc;

use http::StatusCode;
use ignis_logs::{
    EventsQuery, FilterPattern, GroupsQuery, LogQuery, MAX_DESCRIBE_LIMIT, MAX_LIMIT, StreamOrder, Streams, StreamsQuery,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{App, Caller};
use crate::error::ApiError;
use crate::function::parse_body;
use crate::http::{Answer, LogsAction, json_answer};
use crate::logs_merge;

/// The most log streams one `FilterLogEvents` names (CloudWatch's limit).
const MAX_STREAM_NAMES: usize = 100;
/// How long a cluster's front end waits for another's answer for its logs; one that does not answer adds nothing.
const PEER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FilterLogEvents {
    log_group_name: Option<String>,
    log_group_identifier: Option<String>,
    log_stream_names: Option<Vec<String>>,
    log_stream_name_prefix: Option<String>,
    start_time: Option<i64>,
    end_time: Option<i64>,
    filter_pattern: Option<String>,
    next_token: Option<String>,
    limit: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetLogEvents {
    log_group_name: Option<String>,
    log_group_identifier: Option<String>,
    log_stream_name: Option<String>,
    start_time: Option<i64>,
    end_time: Option<i64>,
    start_from_head: Option<bool>,
    next_token: Option<String>,
    limit: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeLogGroups {
    log_group_name_prefix: Option<String>,
    limit: Option<i64>,
    next_token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeLogStreams {
    log_group_name: Option<String>,
    log_group_identifier: Option<String>,
    log_stream_name_prefix: Option<String>,
    order_by: Option<String>,
    descending: Option<bool>,
    limit: Option<i64>,
    next_token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RetentionPolicy {
    log_group_name: Option<String>,
    retention_in_days: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NamedGroup {
    log_group_name: Option<String>,
}

pub async fn handle(app: &Arc<App>, caller: &Caller, action: LogsAction, body: &[u8]) -> Result<Answer, ApiError> {
    let answer = match &app.config.front_ends {
        None => here(app, caller, action, body.to_vec()).await?,
        Some(front_ends) => across(app, front_ends, caller, action, body).await?,
    };
    Ok(json_answer(StatusCode::OK, answer))
}

/// `action` on this front end's logs alone: its answer's body.
pub(crate) async fn here(app: &Arc<App>, caller: &Caller, action: LogsAction, body: Vec<u8>) -> Result<Value, ApiError> {
    let app = app.clone();
    let caller = caller.clone();
    // Log reads scan storage: keep them off the async threads.
    tokio::task::spawn_blocking(move || match action {
        LogsAction::FilterLogEvents => filter_log_events(&app, &caller, parse_body(&body)?),
        LogsAction::GetLogEvents => get_log_events(&app, &caller, parse_body(&body)?),
        LogsAction::DescribeLogGroups => describe_log_groups(&app, &caller, parse_body(&body)?),
        LogsAction::DescribeLogStreams => describe_log_streams(&app, &caller, parse_body(&body)?),
        LogsAction::PutRetentionPolicy => put_retention_policy(&app, &caller, parse_body(&body)?),
        LogsAction::DeleteRetentionPolicy => {
            let request: NamedGroup = parse_body(&body)?;
            let group = group(&app, &caller, "DeleteRetentionPolicy", request.log_group_name, None)?;
            app.logs.delete_retention(&caller.account, &group)?;
            Ok(json!({}))
        }
        LogsAction::DeleteLogGroup => {
            let request: NamedGroup = parse_body(&body)?;
            let group = group(&app, &caller, "DeleteLogGroup", request.log_group_name, None)?;
            app.logs.delete_group(&caller.account, &group)?;
            Ok(json!({}))
        }
    })
    .await
    .map_err(|e| ApiError::Service(e.to_string()))?
}

/// A front end of a cluster, as a log request reaches it: this one (`None`) or another.
type Reached = (String, Option<Arc<ignis_cluster::Peer>>);

/// `action` on every front end's logs (a cluster's: each keeps the logs of the invocations it ran), their answers
/// merged (`logs_merge`). A read is asked of each front end (a paged one with its own token, `logs_merge::Tokens`);
/// a change is made on each. A front end without the group (or stream) adds nothing; one that cannot be reached
/// adds nothing either (its logs are not shown, and a paged read goes on without it). This front end's error other
/// than a missing group is the answer.
async fn across(
    app: &Arc<App>,
    front_ends: &Arc<dyn crate::OtherFrontEnds>,
    caller: &Caller,
    action: LogsAction,
    body: &[u8],
) -> Result<Value, ApiError> {
    let mut request: serde_json::Map<String, Value> = parse_body(body)?;
    let reached: Vec<Reached> = std::iter::once((front_ends.me().to_string(), None))
        .chain(front_ends.others().await.into_iter().map(|peer| (peer.authority().to_string(), Some(peer))))
        .collect();
    let paged = matches!(action, LogsAction::FilterLogEvents | LogsAction::GetLogEvents);
    let asked = match request.remove("nextToken") {
        Some(Value::String(token)) if paged => logs_merge::Tokens::decode(&token)
            .ok_or_else(|| ApiError::InvalidParameter("The specified nextToken is invalid.".into()))?,
        Some(token) => {
            request.insert("nextToken".into(), token);
            logs_merge::Tokens::default()
        }
        None => logs_merge::Tokens::default(),
    };
    // GetLogEvents goes on where its stream was read; the others read every front end with more.
    let reached: Vec<Reached> = match action {
        LogsAction::GetLogEvents if !asked.0.is_empty() => reached.into_iter().filter(|(address, _)| asked.0.contains_key(address)).collect(),
        _ if paged => reached.into_iter().filter(|(address, _)| asked.open(address)).collect(),
        _ => reached,
    };
    let asks: Vec<_> = reached
        .iter()
        .map(|(address, peer)| {
            let mut request = request.clone();
            if let Some(token) = asked.of(address) {
                request.insert("nextToken".into(), json!(token));
            }
            let (app, caller, peer) = (app.clone(), caller.clone(), peer.clone());
            tokio::spawn(async move { ask(&app, &caller, action, Value::Object(request), peer.as_deref()).await })
        })
        .collect();
    let mut answers: Vec<(String, Value)> = Vec::new();
    let mut tokens = asked.clone();
    // A front end no longer listed has nothing more to give: its logs went with it.
    for (address, token) in tokens.0.iter_mut() {
        if !reached.iter().any(|(reached, _)| reached == address) {
            *token = None;
        }
    }
    for ((address, _), ask) in reached.iter().zip(asks) {
        match ask.await.map_err(|e| ApiError::Service(e.to_string()))? {
            Ok(Some(answer)) => answers.push((address.clone(), answer)),
            Ok(None) => {
                tokens.0.insert(address.clone(), None);
            }
            Err(e) => return Err(e),
        }
    }
    let Some(first) = answers.first() else {
        if action == LogsAction::FilterLogEvents && !asked.0.is_empty() {
            // Paging on: the front ends that had more are gone, and this is the last page.
            return Ok(json!({ "events": [], "searchedLogStreams": [] }));
        }
        return Err(match action {
            LogsAction::GetLogEvents => ApiError::from(ignis_logs::LogsError::StreamNotFound),
            _ => ApiError::ResourceNotFound("The specified log group does not exist.".into()),
        });
    };
    let limit_of = |max: usize| request.get("limit").and_then(Value::as_u64).map_or(max, |n| n as usize);
    let listing_token = |number: i64, name: &str| ignis_logs::listing_token(number, name);
    Ok(match action {
        LogsAction::FilterLogEvents => {
            let pages = answers.into_iter().map(|(address, answer)| logs_merge::FilterPage { address, answer }).collect();
            let (events, tokens) = logs_merge::filter_events(pages, limit_of(MAX_LIMIT), &tokens, ignis_logs::filter_token_after);
            with_token(json!({ "events": events, "searchedLogStreams": [] }), tokens.next())
        }
        LogsAction::GetLogEvents => {
            // A stream is read where it is; of several front ends holding it (its worker host changed front end
            // while it ran), from the one with the most of this page.
            let (address, mut answer) = answers
                .into_iter()
                .max_by_key(|(address, answer)| (answer["events"].as_array().map_or(0, Vec::len), std::cmp::Reverse(address.clone())))
                .expect("one answer at least");
            for name in ["nextForwardToken", "nextBackwardToken"] {
                let own = answer[name].as_str().map(str::to_string);
                answer[name] = json!(logs_merge::Tokens([(address.clone(), own)].into()).encode());
            }
            answer
        }
        LogsAction::DescribeLogGroups => {
            let answers: Vec<Value> = answers.into_iter().map(|(_, answer)| answer).collect();
            logs_merge::log_groups(&answers, limit_of(MAX_DESCRIBE_LIMIT), listing_token)
        }
        LogsAction::DescribeLogStreams => {
            let by_time = request.get("orderBy").and_then(Value::as_str) == Some("LastEventTime");
            let order = logs_merge::Order {
                number: by_time.then_some("lastEventTimestamp"),
                descending: request.get("descending").and_then(Value::as_bool).unwrap_or(false),
            };
            let answers: Vec<Value> = answers.into_iter().map(|(_, answer)| answer).collect();
            logs_merge::log_streams(&answers, &order, limit_of(MAX_DESCRIBE_LIMIT), listing_token)
        }
        // A change made wherever the group is.
        _ => first.1.clone(),
    })
}

/// `action` on one front end's logs (`None`: this one's): its answer, or `None` where the group (or stream) is not.
async fn ask(
    app: &Arc<App>,
    caller: &Caller,
    action: LogsAction,
    request: Value,
    peer: Option<&ignis_cluster::Peer>,
) -> Result<Option<Value>, ApiError> {
    let missing = |e: &ApiError| matches!(e, ApiError::ResourceNotFound(_));
    let Some(peer) = peer else {
        return match here(app, caller, action, request.to_string().into_bytes()).await {
            Ok(answer) => Ok(Some(answer)),
            Err(e) if missing(&e) => Ok(None),
            Err(e) => Err(e),
        };
    };
    let body = json!({ "Account": caller.account.as_str(), "Action": action.name(), "Request": request });
    let call = peer.call(http::Method::POST, "/ignis/log-requests", bytes::Bytes::from(body.to_string()));
    let answered = ignis_clock::timeout(&*app.config.clock, PEER_WAIT, call).await;
    let Ok(answered) = answered else {
        tracing::warn!(front_end = peer.authority(), "another front end did not answer for its logs in time");
        return Ok(None);
    };
    match answered {
        Ok((StatusCode::OK, answer)) => Ok(serde_json::from_slice(&answer).ok()),
        Ok((status, answer)) => {
            let answer: Value = serde_json::from_slice(&answer).unwrap_or_default();
            let message = answer["message"].as_str().unwrap_or_default().to_string();
            match answer["__type"].as_str() {
                Some("ResourceNotFoundException") => Ok(None),
                Some("InvalidParameterException") => Err(ApiError::InvalidParameter(message)),
                _ => Err(ApiError::Service(format!("the front end at {} answered {status}: {message}", peer.authority()))),
            }
        }
        Err(e) => {
            tracing::warn!(front_end = peer.authority(), error = %e, "cannot read another front end's logs");
            Ok(None)
        }
    }
}

/// The group a request names, which must exist for the caller. A group ARN
/// (`arn:aws:logs:<region>:<account>:log-group:<name>`) of another account is
/// denied.
fn group(app: &App, caller: &Caller, action: &str, name: Option<String>, identifier: Option<String>) -> Result<String, ApiError> {
    let arn_account = identifier
        .as_deref()
        .filter(|_| name.is_none())
        .and_then(|id| Some((id, id.split_once(":log-group:")?.0.split(':').nth(4).unwrap_or(""))));
    if let Some((id, _)) = arn_account.filter(|(_, account)| caller.account != *account) {
        return Err(caller.denied(&format!("logs:{action}"), id));
    }
    let name = name
        .or(identifier.map(|id| id.rsplit(":log-group:").next().unwrap_or(&id).trim_end_matches(":*").to_string()))
        .ok_or_else(|| ApiError::InvalidParameter("logGroupName is required".into()))?;
    let exists = match name.strip_prefix("/aws/lambda/") {
        Some(function) if app.registry.get(&caller.account, function).is_some() => true,
        _ => app.logs.has_group(&caller.account, &name)?,
    };
    if exists { Ok(name) } else { Err(ApiError::ResourceNotFound("The specified log group does not exist.".into())) }
}

/// `body` with the `nextToken` of the page after it, if any.
fn with_token(mut body: serde_json::Value, next_token: Option<String>) -> serde_json::Value {
    if let Some(token) = next_token {
        body["nextToken"] = json!(token);
    }
    body
}

/// A request's `limit`: at most `max` (the default), at least 1, as CloudWatch checks it.
fn limit(limit: Option<i64>, max: usize) -> Result<usize, ApiError> {
    match limit {
        None => Ok(max),
        Some(n) if n >= 1 && n as u64 <= max as u64 => Ok(n as usize),
        Some(n) => Err(ApiError::InvalidParameter(format!(
            "1 validation error detected: Value '{n}' at 'limit' failed to satisfy constraint: Member must have value \
             between 1 and {max}"
        ))),
    }
}

fn filter_log_events(app: &App, caller: &Caller, request: FilterLogEvents) -> Result<Value, ApiError> {
    let group = group(app, caller, "FilterLogEvents", request.log_group_name, request.log_group_identifier)?;
    let streams = match (request.log_stream_name_prefix, request.log_stream_names) {
        (Some(_), Some(_)) => {
            return Err(ApiError::InvalidParameter(
                "You cannot specify both logStreamNames and logStreamNamePrefix in the same request.".into(),
            ));
        }
        (Some(prefix), None) => Streams::Prefix(prefix),
        (None, Some(names)) if names.is_empty() || names.len() > MAX_STREAM_NAMES => {
            return Err(ApiError::InvalidParameter(format!(
                "logStreamNames must name between 1 and {MAX_STREAM_NAMES} log streams"
            )));
        }
        (None, Some(names)) => Streams::Named(names),
        (None, None) => Streams::All,
    };
    let pattern = match request.filter_pattern.as_deref().map(FilterPattern::parse).transpose() {
        Ok(pattern) => pattern.filter(|p| !p.matches_all()),
        Err(e) => return Err(ApiError::InvalidParameter(e.to_string())),
    };
    let query = LogQuery {
        start_ms: request.start_time,
        end_ms: request.end_time,
        streams,
        next_token: request.next_token,
        limit: limit(request.limit, MAX_LIMIT)?,
        pattern,
    };
    let page = app.logs.filter(&caller.account, &group, &query)?;
    let events: Vec<_> = page
        .events
        .iter()
        .map(|e| {
            json!({
                "logStreamName": e.stream,
                "timestamp": e.timestamp_ms,
                "message": e.message,
                "ingestionTime": e.ingestion_ms,
                "eventId": e.event_id,
            })
        })
        .collect();
    // CloudWatch has answered an empty `searchedLogStreams` since June 2020.
    let body = json!({ "events": events, "searchedLogStreams": [] });
    Ok(with_token(body, page.next_token))
}

fn get_log_events(app: &App, caller: &Caller, request: GetLogEvents) -> Result<Value, ApiError> {
    let group = group(app, caller, "GetLogEvents", request.log_group_name, request.log_group_identifier)?;
    let stream = request.log_stream_name.ok_or_else(|| ApiError::InvalidParameter("logStreamName is required".into()))?;
    let query = EventsQuery {
        stream,
        start_ms: request.start_time,
        end_ms: request.end_time,
        start_from_head: request.start_from_head.unwrap_or(false),
        next_token: request.next_token,
        limit: limit(request.limit, MAX_LIMIT)?,
    };
    let page = app.logs.events(&caller.account, &group, &query)?;
    let events: Vec<_> = page
        .events
        .iter()
        .map(|e| json!({ "timestamp": e.timestamp_ms, "message": e.message, "ingestionTime": e.ingestion_ms }))
        .collect();
    let body = json!({
        "events": events,
        "nextForwardToken": page.next_forward_token,
        "nextBackwardToken": page.next_backward_token,
    });
    Ok(body)
}

fn put_retention_policy(app: &App, caller: &Caller, request: RetentionPolicy) -> Result<Value, ApiError> {
    let group = group(app, caller, "PutRetentionPolicy", request.log_group_name, None)?;
    let days = request.retention_in_days.ok_or_else(|| ApiError::InvalidParameter("retentionInDays is required".into()))?;
    let days = u32::try_from(days).map_err(|_| ApiError::InvalidParameter(format!("{days} is not a valid retention in days")))?;
    app.logs.put_retention(&caller.account, &group, days)?;
    Ok(json!({}))
}

fn describe_log_groups(app: &App, caller: &Caller, request: DescribeLogGroups) -> Result<Value, ApiError> {
    let query = GroupsQuery {
        prefix: request.log_group_name_prefix.unwrap_or_default(),
        limit: limit(request.limit, MAX_DESCRIBE_LIMIT)?,
        next_token: request.next_token,
    };
    let page = app.logs.groups(&caller.account, &query)?;
    let groups: Vec<_> = page
        .groups
        .into_iter()
        .map(|g| {
            let mut group = json!({
                "logGroupName": g.name,
                "creationTime": g.creation_ms,
                "storedBytes": g.stored_bytes,
                "metricFilterCount": 0,
                "arn": ignis_ids::arn::log_group(&app.config.region, caller.account.as_str(), &g.name),
            });
            if let Some(days) = g.retention_days {
                group["retentionInDays"] = json!(days);
            }
            group
        })
        .collect();
    let body = json!({ "logGroups": groups });
    Ok(with_token(body, page.next_token))
}

fn describe_log_streams(app: &App, caller: &Caller, request: DescribeLogStreams) -> Result<Value, ApiError> {
    let group = group(app, caller, "DescribeLogStreams", request.log_group_name, request.log_group_identifier)?;
    let order = match request.order_by.as_deref() {
        None | Some("LogStreamName") => StreamOrder::Name,
        Some("LastEventTime") if request.log_stream_name_prefix.is_some() => {
            return Err(ApiError::InvalidParameter(
                "Cannot order by LastEventTime with a logStreamNamePrefix.".into(),
            ));
        }
        Some("LastEventTime") => StreamOrder::LastEventTime,
        Some(other) => {
            return Err(ApiError::InvalidParameter(format!(
                "1 validation error detected: Value '{other}' at 'orderBy' failed to satisfy constraint: Member must \
                 satisfy enum value set: [LogStreamName, LastEventTime]"
            )));
        }
    };
    let query = StreamsQuery {
        prefix: request.log_stream_name_prefix.unwrap_or_default(),
        order,
        descending: request.descending.unwrap_or(false),
        limit: limit(request.limit, MAX_DESCRIBE_LIMIT)?,
        next_token: request.next_token,
    };
    let page = app.logs.streams(&caller.account, &group, &query)?;
    let stream_arn = |name: &str| {
        let group_arn = ignis_ids::arn::log_group(&app.config.region, caller.account.as_str(), &group);
        format!("{}:log-stream:{name}", group_arn.trim_end_matches(":*"))
    };
    let streams: Vec<_> = page
        .streams
        .into_iter()
        .map(|s| {
            json!({
                "logStreamName": s.name,
                "creationTime": s.creation_ms,
                "firstEventTimestamp": s.first_event_ms,
                "lastEventTimestamp": s.last_event_ms,
                "lastIngestionTime": s.last_ingestion_ms,
                "storedBytes": s.stored_bytes,
                "arn": stream_arn(&s.name),
            })
        })
        .collect();
    let body = json!({ "logStreams": streams });
    Ok(with_token(body, page.next_token))
}

/// The parsing of a CloudWatch Logs body, for the fuzz targets.
#[cfg(feature = "fuzz")]
pub(crate) fn check_body(action: &str, body: &[u8]) {
    let _ = match action {
        "FilterLogEvents" => parse_body::<FilterLogEvents>(body).map(drop),
        "GetLogEvents" => parse_body::<GetLogEvents>(body).map(drop),
        "PutRetentionPolicy" => parse_body::<RetentionPolicy>(body).map(drop),
        "DescribeLogGroups" => parse_body::<DescribeLogGroups>(body).map(drop),
        _ => parse_body::<DescribeLogStreams>(body).map(drop),
    };
}
