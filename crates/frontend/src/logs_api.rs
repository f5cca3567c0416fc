//! Logs: the task that keeps sandboxes' log lines, and the CloudWatch Logs
//! calls that read them (`FilterLogEvents`, `DescribeLogGroups`,
//! `DescribeLogStreams`), so `aws logs` and the SDKs' `logs` clients work.

use std::collections::VecDeque;
use std::sync::Arc;

use http::StatusCode;
use ignis_store::commit::{Ack, GroupCommit, Limits};
use ignis_store::{LogEvent, LogQuery, Store};
use ignis_worker::LogBatch;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use crate::{App, Caller};
use crate::error::ApiError;
use crate::function::parse_body;
use crate::http::{Answer, LogsAction, json_answer};

/// How long the log writer waits for more lines before a transaction.
const LOG_LINGER: std::time::Duration = std::time::Duration::from_millis(20);
/// Most batches in one transaction.
const LOG_BATCHES: usize = 4096;
/// Most bytes of lines in one transaction (and held by the writer at once):
/// a log group over its cap is trimmed in the transaction that took it over,
/// so this also bounds how far past its cap the database file must grow.
const LOG_TXN_BYTES: usize = 1024 * 1024;

/// A request to the log writer: answer once every line handed to it so far is committed.
pub type LogBarrier = tokio::sync::oneshot::Sender<()>;

fn batch_bytes(batch: &LogBatch) -> usize {
    batch.lines.iter().map(|l| l.message.len() + ignis_store::LOG_EVENT_OVERHEAD as usize).sum()
}

/// Writes log lines to storage through a group-commit writer
/// ([`GroupCommit`]): whatever arrives within [`LOG_LINGER`] of the first,
/// in one transaction (of at most [`LOG_BATCHES`] batches and about
/// [`LOG_TXN_BYTES`]), so busy functions cost few transactions. At most
/// about [`LOG_TXN_BYTES`] of lines are handed over and not yet committed;
/// beyond that, batches wait in `logs` (whose senders then wait).
///
/// A [`LogBarrier`] is answered once every batch handed over before it is
/// committed (without the linger while one waits): an event source mapping
/// waits for one before it deletes a batch of messages, so the durable delete
/// (whose fsync covers the earlier log commits) never outlives the
/// invocation's log. The batches queued in `logs` when a barrier comes are
/// handed over before it, so a barrier waits for those, never for later ones.
pub async fn write_logs(store: Arc<Store>, mut logs: mpsc::Receiver<LogBatch>, mut barriers: mpsc::UnboundedReceiver<LogBarrier>) {
    let limits = Limits { max_requests: LOG_BATCHES, max_bytes: LOG_TXN_BYTES, linger: LOG_LINGER };
    let writer = match GroupCommit::start("logs", limits, batch_bytes, move |batches| write_batches(&store, batches)) {
        Ok(writer) => writer,
        Err(e) => {
            eprintln!("ignis: cannot start the log writer: {e}");
            return;
        }
    };
    // Batches handed over and not known to be committed, oldest first, with their bytes.
    let mut in_flight: VecDeque<(Ack, usize)> = VecDeque::new();
    let mut in_flight_bytes = 0;
    let mut barriers_open = true;
    loop {
        tokio::select! {
            received = logs.recv() => {
                let Some(batch) = received else { break };
                hand_over(&writer, batch, &mut in_flight, &mut in_flight_bytes).await;
            }
            barrier = barriers.recv(), if barriers_open => match barrier {
                Some(barrier) => {
                    for _ in 0..logs.len() {
                        let Ok(batch) = logs.try_recv() else { break };
                        hand_over(&writer, batch, &mut in_flight, &mut in_flight_bytes).await;
                    }
                    let committed = writer.barrier();
                    tokio::spawn(async move {
                        let _ = committed.wait().await;
                        let _ = barrier.send(());
                    });
                }
                None => barriers_open = false,
            },
        }
    }
    // Dropping the writer commits what it was handed and waits for its thread.
    let _ = tokio::task::spawn_blocking(move || drop(writer)).await;
}

/// Hands one batch to the writer, first waiting for the oldest batches' commits
/// while more than [`LOG_TXN_BYTES`] are in flight.
async fn hand_over(writer: &GroupCommit<LogBatch>, batch: LogBatch, in_flight: &mut VecDeque<(Ack, usize)>, bytes: &mut usize) {
    while *bytes >= LOG_TXN_BYTES
        && let Some((committed, size)) = in_flight.pop_front()
    {
        let _ = committed.wait().await;
        *bytes -= size;
    }
    let size = batch_bytes(&batch);
    in_flight.push_back((writer.push(vec![batch]), size));
    *bytes += size;
}

/// Appends one group of batches in one transaction (the writer's `apply`).
fn write_batches(store: &Store, taken: Vec<LogBatch>) -> Result<(), String> {
    let events: Vec<(String, String, Vec<LogEvent>)> = taken
        .into_iter()
        .map(|batch| {
            let stream = batch.stream;
            let events = batch
                .lines
                .into_iter()
                .map(|line| LogEvent { timestamp_ms: line.timestamp_ms, stream: stream.clone(), message: line.message })
                .collect();
            (batch.account, batch.group, events)
        })
        .collect();
    let borrowed: Vec<(&str, &str, &[LogEvent])> =
        events.iter().map(|(account, group, events)| (account.as_str(), group.as_str(), events.as_slice())).collect();
    store.append_log_batches(&borrowed).map_err(|e| {
        let lines: usize = events.iter().map(|(_, _, events)| events.len()).sum();
        eprintln!("ignis: could not keep {lines} log lines: {e}");
        e.to_string()
    })
}

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
struct DescribeLogGroups {
    log_group_name_prefix: Option<String>,
    limit: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeLogStreams {
    log_group_name: Option<String>,
    log_group_identifier: Option<String>,
    log_stream_name_prefix: Option<String>,
    limit: Option<i64>,
}

pub async fn handle(app: &Arc<App>, caller: &Caller, action: LogsAction, body: &[u8]) -> Result<Answer, ApiError> {
    let app = app.clone();
    let caller = caller.clone();
    let body = body.to_vec();
    // Log reads scan storage: keep them off the async threads.
    tokio::task::spawn_blocking(move || match action {
        LogsAction::FilterLogEvents => filter_log_events(&app, &caller, parse_body(&body)?),
        LogsAction::DescribeLogGroups => describe_log_groups(&app, &caller, parse_body(&body)?),
        LogsAction::DescribeLogStreams => describe_log_streams(&app, &caller, parse_body(&body)?),
    })
    .await
    .map_err(|e| ApiError::Service(e.to_string()))?
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
        _ => app.store.log_groups(caller.account.as_str())?.iter().any(|g| g.name == name),
    };
    if exists { Ok(name) } else { Err(ApiError::ResourceNotFound("The specified log group does not exist.".into())) }
}

fn filter_log_events(app: &App, caller: &Caller, request: FilterLogEvents) -> Result<Answer, ApiError> {
    let group = group(app, caller, "FilterLogEvents", request.log_group_name, request.log_group_identifier)?;
    let mut streams = request.log_stream_names;
    if let Some(prefix) = request.log_stream_name_prefix {
        let matching = app.store.log_streams(caller.account.as_str(), &group)?.into_iter().map(|s| s.name).filter(|n| n.starts_with(&prefix));
        streams = Some(matching.collect());
    }
    let query = LogQuery {
        start_ms: request.start_time,
        end_ms: request.end_time,
        streams,
        next_token: request.next_token,
        limit: request.limit.unwrap_or(10_000).clamp(1, 10_000) as usize,
        // Plain terms only: a quoted term or a bare word matches as a substring.
        pattern: request.filter_pattern.map(|p| p.trim().trim_matches('"').to_string()).filter(|p| !p.is_empty()),
    };
    let page = app.store.filter_logs(caller.account.as_str(), &group, &query)?;
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
    let mut body = json!({ "events": events, "searchedLogStreams": [] });
    if let Some(token) = page.next_token {
        body["nextToken"] = json!(token);
    }
    Ok(json_answer(StatusCode::OK, body))
}

fn describe_log_groups(app: &App, caller: &Caller, request: DescribeLogGroups) -> Result<Answer, ApiError> {
    let prefix = request.log_group_name_prefix.unwrap_or_default();
    let limit = request.limit.unwrap_or(50).clamp(1, 50) as usize;
    let groups: Vec<_> = app
        .store
        .log_groups(caller.account.as_str())?
        .into_iter()
        .filter(|g| g.name.starts_with(&prefix))
        .take(limit)
        .map(|g| {
            json!({
                "logGroupName": g.name,
                "creationTime": g.creation_ms,
                "storedBytes": g.stored_bytes,
                "arn": format!("arn:aws:logs:{}:{}:log-group:{}:*", app.config.region, caller.account, g.name),
            })
        })
        .collect();
    Ok(json_answer(StatusCode::OK, json!({ "logGroups": groups })))
}

fn describe_log_streams(app: &App, caller: &Caller, request: DescribeLogStreams) -> Result<Answer, ApiError> {
    let group = group(app, caller, "DescribeLogStreams", request.log_group_name, request.log_group_identifier)?;
    let prefix = request.log_stream_name_prefix.unwrap_or_default();
    let limit = request.limit.unwrap_or(50).clamp(1, 50) as usize;
    let streams: Vec<_> = app
        .store
        .log_streams(caller.account.as_str(), &group)?
        .into_iter()
        .filter(|s| s.name.starts_with(&prefix))
        .take(limit)
        .map(|s| {
            json!({
                "logStreamName": s.name,
                "creationTime": s.creation_ms,
                "firstEventTimestamp": s.first_event_ms,
                "lastEventTimestamp": s.last_event_ms,
                "lastIngestionTime": s.last_ingestion_ms,
                "storedBytes": s.stored_bytes,
            })
        })
        .collect();
    Ok(json_answer(StatusCode::OK, json!({ "logStreams": streams })))
}

/// The parsing of a CloudWatch Logs body, for the fuzz targets.
#[cfg(feature = "fuzz")]
pub(crate) fn check_body(action: &str, body: &[u8]) {
    let _ = match action {
        "FilterLogEvents" => parse_body::<FilterLogEvents>(body).map(drop),
        "DescribeLogGroups" => parse_body::<DescribeLogGroups>(body).map(drop),
        _ => parse_body::<DescribeLogStreams>(body).map(drop),
    };
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ignis_worker::LogLine;

    use super::*;

    fn batch(message: &str) -> LogBatch {
        LogBatch {
            account: "111111111111".into(),
            group: "/aws/lambda/f".into(),
            stream: "s".into(),
            lines: vec![LogLine { timestamp_ms: 1, message: message.into() }],
        }
    }

    #[test]
    fn a_barrier_is_answered_once_earlier_lines_are_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let (lines, logs) = mpsc::channel(8192);
            let (barriers, requests) = mpsc::unbounded_channel();
            tokio::spawn(write_logs(store.clone(), logs, requests));
            let stored = || store.filter_logs("111111111111", "/aws/lambda/f", &LogQuery::default()).unwrap().events.len();
            // An idle writer answers at once.
            let (done, answered) = tokio::sync::oneshot::channel();
            barriers.send(done).unwrap();
            tokio::time::timeout(Duration::from_secs(10), answered).await.unwrap().unwrap();
            // More than one transaction's worth, queued before the barrier: all are in storage when it is answered.
            let count = LOG_BATCHES + 10;
            for i in 0..count {
                lines.send(batch(&format!("line {i}"))).await.unwrap();
            }
            let (done, answered) = tokio::sync::oneshot::channel();
            barriers.send(done).unwrap();
            tokio::time::timeout(Duration::from_secs(10), answered).await.unwrap().unwrap();
            assert_eq!(stored(), count.min(ignis_store::MAX_LOG_LIMIT));
        });
    }
}
