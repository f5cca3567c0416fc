//! Amazon SQS's JSON protocol (`POST /`, `X-Amz-Target: AmazonSQS.<Action>`,
//! `application/x-amz-json-1.0`, SigV4 service `sqs`) over [`ignis_queues`]:
//! CreateQueue, GetQueueUrl, GetQueueAttributes, SetQueueAttributes,
//! ListQueues, ListDeadLetterSourceQueues, DeleteQueue, PurgeQueue, SendMessage(Batch),
//! ReceiveMessage, DeleteMessage(Batch), ChangeMessageVisibility(Batch).
//!
//! Queue URLs are `http://<Host of the request>/<account>/<name>`; only the
//! last two path segments are read, and a URL of another account names no
//! queue. Wire shapes, validation and MD5 digests live here; the semantics in
//! `ignis-queue`; the wire form of errors in `error.rs`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use http::{HeaderValue, StatusCode};
use ignis_queue::{Attribute, Attributes, MAX_DELAY_S, MAX_VISIBILITY_TIMEOUT_S, Redrive};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::error::{ApiError, sqs_batch_code};
use crate::http::{Answer, SqsAction, json_answer};
use ignis_ids::arn::parse_queue as parse_arn;
use ignis_queues::digest::{md5_hex, md5_of_attributes};
use ignis_queues::{MAX_WAIT_S, Message, Outgoing, QueueConfig, QueueError, QueueRef};
use crate::{App, Caller};

/// Largest request body an SQS call reads (ten 256 KiB messages, JSON-escaped).
pub const MAX_REQUEST: usize = 4 * 1024 * 1024;
/// Entries in one batch.
const MAX_BATCH: usize = 10;
/// Message attributes per message.
const MAX_MESSAGE_ATTRIBUTES: usize = 10;

type Result<T, E = QueueError> = std::result::Result<T, E>;

pub async fn handle(app: &Arc<App>, caller: &Caller, action: SqsAction, host: &str, body: &[u8]) -> Result<Answer, ApiError> {
    let api = Api { app, account: caller.account.as_str(), host };
    let answer = match action {
        SqsAction::CreateQueue => api.create_queue(parse(body)?).await?,
        SqsAction::GetQueueUrl => api.get_queue_url(parse(body)?)?,
        SqsAction::ListQueues => api.list_queues(parse(body)?)?,
        SqsAction::ListDeadLetterSourceQueues => api.list_dead_letter_source_queues(parse(body)?)?,
        SqsAction::DeleteQueue => api.delete_queue(parse(body)?).await?,
        SqsAction::GetQueueAttributes => api.get_queue_attributes(parse(body)?)?,
        SqsAction::SetQueueAttributes => api.set_queue_attributes(parse(body)?).await?,
        SqsAction::PurgeQueue => api.purge_queue(parse(body)?).await?,
        SqsAction::SendMessage => api.send_message(parse(body)?).await?,
        SqsAction::SendMessageBatch => api.send_message_batch(parse(body)?).await?,
        SqsAction::ReceiveMessage => api.receive_message(parse(body)?).await?,
        SqsAction::DeleteMessage => api.delete_message(parse(body)?).await?,
        SqsAction::DeleteMessageBatch => api.delete_message_batch(parse(body)?).await?,
        SqsAction::ChangeMessageVisibility => api.change_message_visibility(parse(body)?)?,
        SqsAction::ChangeMessageVisibilityBatch => api.change_message_visibility_batch(parse(body)?)?,
    };
    Ok(answer)
}

fn parse<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| QueueError::InvalidParameterValue(format!("The request body is not valid: {e}")))
}

fn answer(body: Value) -> Answer {
    let mut answer = json_answer(StatusCode::OK, body);
    answer.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/x-amz-json-1.0"));
    answer
}

fn required<T>(value: Option<T>, name: &str) -> Result<T> {
    value.ok_or_else(|| QueueError::MissingParameter(format!("The request must contain the parameter {name}.")))
}

/// An integer parameter within `range`.
fn within(value: i64, name: &str, range: std::ops::RangeInclusive<u32>) -> Result<u32> {
    u32::try_from(value).ok().filter(|v| range.contains(v)).ok_or_else(|| {
        QueueError::InvalidParameterValue(format!(
            "Value {value} for parameter {name} is invalid. Reason: Must be between {} and {}, if provided.",
            range.start(),
            range.end()
        ))
    })
}

fn valid_queue_name(name: &str) -> Result<()> {
    if name.ends_with(".fifo") {
        return Err(QueueError::InvalidParameterValue(
            "Ignis supports standard queues only; FIFO queues (names ending in .fifo) are not available.".into(),
        ));
    }
    let ok = (1..=80).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(QueueError::InvalidParameterValue(
            "Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length".into(),
        ))
    }
}

/// A batch's entry ids: 1 to 10 of them, each valid, none repeated.
fn check_batch<'a>(ids: impl ExactSizeIterator<Item = &'a str>) -> Result<()> {
    match ids.len() {
        0 => return Err(QueueError::EmptyBatch),
        n if n > MAX_BATCH => return Err(QueueError::TooManyEntries(n)),
        _ => {}
    }
    let mut seen = HashSet::new();
    for id in ids {
        let valid = (1..=80).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(QueueError::InvalidBatchEntryId(id.to_string()));
        }
        if !seen.insert(id) {
            return Err(QueueError::IdsNotDistinct(id.to_string()));
        }
    }
    Ok(())
}

fn failed(id: &str, e: &QueueError) -> Value {
    let (code, sender_fault) = sqs_batch_code(e);
    json!({ "Id": id, "SenderFault": sender_fault, "Code": code, "Message": e.to_string() })
}

// ----- wire shapes ------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateQueue {
    queue_name: Option<String>,
    attributes: Option<HashMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetQueueUrl {
    queue_name: Option<String>,
    #[serde(rename = "QueueOwnerAWSAccountId")]
    queue_owner_aws_account_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListQueues {
    queue_name_prefix: Option<String>,
    next_token: Option<String>,
    max_results: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListDeadLetterSourceQueues {
    queue_url: Option<String>,
    next_token: Option<String>,
    max_results: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct QueueUrl {
    queue_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetQueueAttributes {
    queue_url: Option<String>,
    attribute_names: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SetQueueAttributes {
    queue_url: Option<String>,
    attributes: Option<HashMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AttributeValue {
    data_type: Option<String>,
    string_value: Option<String>,
    binary_value: Option<String>,
    string_list_values: Option<Vec<String>>,
    binary_list_values: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SendMessage {
    queue_url: Option<String>,
    message_body: Option<String>,
    delay_seconds: Option<i64>,
    message_attributes: Option<HashMap<String, AttributeValue>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SendMessageBatch {
    queue_url: Option<String>,
    entries: Option<Vec<SendEntry>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SendEntry {
    id: Option<String>,
    message_body: Option<String>,
    delay_seconds: Option<i64>,
    message_attributes: Option<HashMap<String, AttributeValue>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReceiveMessage {
    queue_url: Option<String>,
    max_number_of_messages: Option<i64>,
    visibility_timeout: Option<i64>,
    wait_time_seconds: Option<i64>,
    attribute_names: Option<Vec<String>>,
    message_system_attribute_names: Option<Vec<String>>,
    message_attribute_names: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteMessage {
    queue_url: Option<String>,
    receipt_handle: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteMessageBatch {
    queue_url: Option<String>,
    entries: Option<Vec<HandleEntry>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HandleEntry {
    id: Option<String>,
    receipt_handle: Option<String>,
    visibility_timeout: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ChangeMessageVisibility {
    queue_url: Option<String>,
    receipt_handle: Option<String>,
    visibility_timeout: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ChangeMessageVisibilityBatch {
    queue_url: Option<String>,
    entries: Option<Vec<HandleEntry>>,
}

// ----- attributes ---------------------------------------------------------------

/// Attributes that are read, never set.
const READ_ONLY: [&str; 6] = [
    "QueueArn",
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
    "CreatedTimestamp",
    "LastModifiedTimestamp",
];
/// Attributes Ignis keeps.
const SETTABLE: [&str; 6] = [
    "VisibilityTimeout",
    "MessageRetentionPeriod",
    "MaximumMessageSize",
    "DelaySeconds",
    "ReceiveMessageWaitTimeSeconds",
    "RedrivePolicy",
];
/// SQS attributes Ignis does not keep: never answered, refused when set
/// (except `FifoQueue=false`).
const NOT_KEPT: [&str; 10] = [
    "Policy",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
    "SqsManagedSseEnabled",
    "RedriveAllowPolicy",
    "FifoQueue",
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "FifoThroughputLimit",
    "MessageRetentionPeriodUnits",
];

fn message_attributes(given: Option<HashMap<String, AttributeValue>>) -> Result<Attributes> {
    let given = given.unwrap_or_default();
    if given.len() > MAX_MESSAGE_ATTRIBUTES {
        return Err(QueueError::InvalidParameterValue(format!(
            "Number of message attributes [{}] exceeds the allowed maximum [{MAX_MESSAGE_ATTRIBUTES}].",
            given.len()
        )));
    }
    let mut attributes = Attributes::new();
    for (name, value) in given {
        let invalid = |reason: &str| QueueError::InvalidParameterValue(format!("Message attribute '{name}' is invalid: {reason}"));
        let name_ok = (1..=256).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
            && !name.starts_with('.')
            && !name.ends_with('.')
            && !name.contains("..")
            && !name.to_ascii_lowercase().starts_with("aws.")
            && !name.to_ascii_lowercase().starts_with("amazon.");
        if !name_ok {
            return Err(invalid("names are 1 to 256 of A-Z, a-z, 0-9, '_', '-', '.', with no leading, trailing or double '.' and no AWS. or Amazon. prefix."));
        }
        if value.string_list_values.is_some_and(|v| !v.is_empty()) || value.binary_list_values.is_some_and(|v| !v.is_empty()) {
            return Err(QueueError::Unsupported("Message attribute list values are not supported.".into()));
        }
        let data_type = value.data_type.ok_or_else(|| invalid("it must have a DataType."))?;
        let base = data_type.split('.').next().unwrap_or("");
        if data_type.len() > 256 || !matches!(base, "String" | "Number" | "Binary") {
            return Err(invalid("the DataType must be String, Number or Binary, optionally followed by '.' and a custom label."));
        }
        let bytes = if base == "Binary" {
            let encoded = value.binary_value.ok_or_else(|| invalid("a Binary attribute must have a BinaryValue."))?;
            base64::engine::general_purpose::STANDARD.decode(encoded).map_err(|_| invalid("the BinaryValue is not valid base64."))?
        } else {
            let text = value.string_value.filter(|s| !s.is_empty()).ok_or_else(|| invalid("it must contain a non-empty StringValue."))?;
            if base == "Number" && text.trim().parse::<f64>().is_err() {
                return Err(invalid("the value of a Number attribute must be a number."));
            }
            text.into_bytes()
        };
        attributes.insert(name, Attribute { data_type, value: bytes });
    }
    Ok(attributes)
}

fn attributes_json(attributes: &Attributes) -> Value {
    let map: serde_json::Map<String, Value> = attributes
        .iter()
        .map(|(name, a)| {
            let value = if a.data_type.starts_with("Binary") {
                json!({ "DataType": a.data_type, "BinaryValue": base64::engine::general_purpose::STANDARD.encode(&a.value) })
            } else {
                json!({ "DataType": a.data_type, "StringValue": String::from_utf8_lossy(&a.value) })
            };
            (name.clone(), value)
        })
        .collect();
    Value::Object(map)
}

/// `base` with the settable attributes in `given` applied; `dead_letter_exists`
/// says whether a `RedrivePolicy`'s target is one of the caller's queues.
pub(crate) fn apply_attributes(
    base: &QueueConfig,
    given: &HashMap<String, String>,
    dead_letter_exists: &dyn Fn(&str) -> bool,
) -> Result<QueueConfig> {
    let mut config = base.clone();
    for (name, value) in given {
        let int = |range: std::ops::RangeInclusive<u32>| {
            value.trim().parse::<u32>().ok().filter(|v| range.contains(v)).ok_or_else(|| {
                QueueError::InvalidAttributeValue(format!(
                    "Invalid value for the parameter {name}: {value:?} is not an integer from {} to {}.",
                    range.start(),
                    range.end()
                ))
            })
        };
        let s = &mut config.settings;
        match name.as_str() {
            "VisibilityTimeout" => s.visibility_timeout_s = int(0..=MAX_VISIBILITY_TIMEOUT_S)?,
            "MessageRetentionPeriod" => s.retention_s = int(ignis_queue::MIN_RETENTION_S..=ignis_queue::MAX_RETENTION_S)?,
            "MaximumMessageSize" => {
                s.max_message_size =
                    int(ignis_queue::MIN_MAX_MESSAGE_SIZE as u32..=ignis_queue::MAX_MAX_MESSAGE_SIZE as u32)? as usize
            }
            "DelaySeconds" => s.delay_s = int(0..=MAX_DELAY_S)?,
            "ReceiveMessageWaitTimeSeconds" => config.wait_s = int(0..=MAX_WAIT_S)?,
            "RedrivePolicy" => s.redrive = redrive_policy(value, dead_letter_exists)?,
            "FifoQueue" if value.eq_ignore_ascii_case("false") => {}
            "FifoQueue" => {
                return Err(QueueError::InvalidAttributeValue(
                    "Ignis supports standard queues only; FifoQueue must be false.".into(),
                ));
            }
            other if NOT_KEPT.contains(&other) => {
                return Err(QueueError::InvalidAttributeName(format!("Ignis does not support the queue attribute {other}.")));
            }
            other => return Err(QueueError::InvalidAttributeName(format!("Unknown Attribute {other}."))),
        }
    }
    Ok(config)
}

/// A `RedrivePolicy` value: `""` removes the policy; otherwise JSON with
/// `deadLetterTargetArn` (a queue of this account) and `maxReceiveCount`.
fn redrive_policy(value: &str, dead_letter_exists: &dyn Fn(&str) -> bool) -> Result<Option<Redrive>> {
    if value.trim().is_empty() {
        return Ok(None);
    }
    let invalid =
        |reason: &str| QueueError::InvalidParameterValue(format!("Value {value} for parameter RedrivePolicy is invalid. Reason: {reason}"));
    let policy: Value = serde_json::from_str(value).map_err(|_| invalid("Redrive policy is not a valid JSON map."))?;
    let target = policy["deadLetterTargetArn"].as_str().ok_or_else(|| invalid("Redrive policy does not contain mandatory attribute: deadLetterTargetArn."))?;
    let count = match &policy["maxReceiveCount"] {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        Value::Null => return Err(invalid("Redrive policy does not contain mandatory attribute: maxReceiveCount.")),
        _ => None,
    };
    let count = count
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| (1..=ignis_queue::MAX_MAX_RECEIVE_COUNT).contains(n))
        .ok_or_else(|| invalid("Invalid value for maxReceiveCount: must be an integer from 1 to 1000."))?;
    if parse_arn(target).is_none() || !dead_letter_exists(target) {
        return Err(invalid("Dead letter target does not exist."));
    }
    Ok(Some(Redrive { target: target.to_string(), max_receive_count: count }))
}

/// The `(account, name)` a queue URL names: its last two path segments.
pub(crate) fn queue_path(url: &str) -> Option<(&str, &str)> {
    let path = url.split_once("://").map_or(url, |(_, rest)| rest.split_once('/').map_or("", |(_, path)| path));
    let mut segments = path.trim_end_matches('/').rsplit('/');
    let (Some(name), Some(account)) = (segments.next(), segments.next()) else {
        return None;
    };
    Some((account, name))
}

impl Api<'_> {
    fn apply_attributes(&self, base: &QueueConfig, given: &HashMap<String, String>) -> Result<QueueConfig> {
        apply_attributes(base, given, &|arn| self.app.queues.lookup(self.account, arn).is_ok())
    }
}

// ----- handlers ------------------------------------------------------------------

struct Api<'a> {
    app: &'a Arc<App>,
    account: &'a str,
    host: &'a str,
}

impl Api<'_> {
    fn url(&self, queue: &QueueRef) -> String {
        format!("http://{}/{}/{}", self.host, queue.account, queue.name)
    }

    /// The caller's queue a `QueueUrl` names.
    fn queue(&self, url: Option<String>) -> Result<QueueRef> {
        let url = required(url, "QueueUrl")?;
        let Some((account, name)) = queue_path(&url) else {
            return Err(QueueError::DoesNotExist);
        };
        if account != self.account {
            return Err(QueueError::DoesNotExist);
        }
        self.app.queues.get(account, name)
    }

    async fn create_queue(&self, request: CreateQueue) -> Result<Answer> {
        let name = required(request.queue_name, "QueueName")?;
        valid_queue_name(&name)?;
        let given = request.attributes.unwrap_or_default();
        let queue = self.app.queues.create(self.account, &name, &given, |base, given| self.apply_attributes(base, given)).await?;
        Ok(answer(json!({ "QueueUrl": self.url(&queue) })))
    }

    fn get_queue_url(&self, request: GetQueueUrl) -> Result<Answer> {
        let name = required(request.queue_name, "QueueName")?;
        if request.queue_owner_aws_account_id.is_some_and(|owner| owner != self.account) {
            return Err(QueueError::DoesNotExist);
        }
        let queue = self.app.queues.get(self.account, &name)?;
        Ok(answer(json!({ "QueueUrl": self.url(&queue) })))
    }

    fn list_queues(&self, request: ListQueues) -> Result<Answer> {
        let queues = self.app.queues.list(self.account, request.queue_name_prefix.as_deref().unwrap_or(""));
        self.page(queues, "QueueUrls", request.next_token, request.max_results)
    }

    /// The queues whose redrive policy names this one.
    fn list_dead_letter_source_queues(&self, request: ListDeadLetterSourceQueues) -> Result<Answer> {
        let target = self.queue(request.queue_url)?;
        let sources = self.app.queues.list(self.account, "").into_iter().filter(|q| {
            q.config().settings.redrive.is_some_and(|r| r.target == target.arn)
        });
        self.page(sources.collect(), "queueUrls", request.next_token, request.max_results)
    }

    /// One page of queues (sorted by name) as `{<key>: [urls], "NextToken"}`:
    /// all (up to 1000) unless `MaxResults` is given; the token is the last name.
    fn page(&self, queues: Vec<QueueRef>, key: &str, next_token: Option<String>, max_results: Option<i64>) -> Result<Answer> {
        let max = max_results.map(|n| within(n, "MaxResults", 1..=1000)).transpose()?;
        let after = next_token.unwrap_or_default();
        let mut page: Vec<QueueRef> = queues.into_iter().filter(|q| q.name > after).collect();
        let mut body = json!({});
        if let Some(max) = max.map(|m| m as usize)
            && page.len() > max
        {
            page.truncate(max);
            body["NextToken"] = json!(page.last().map(|q| q.name.clone()));
        } else {
            page.truncate(1000);
        }
        body[key] = json!(page.iter().map(|q| self.url(q)).collect::<Vec<_>>());
        Ok(answer(body))
    }

    async fn delete_queue(&self, request: QueueUrl) -> Result<Answer> {
        let queue = self.queue(request.queue_url)?;
        self.app.queues.delete_queue(&queue).await?;
        Ok(answer(json!({})))
    }

    async fn purge_queue(&self, request: QueueUrl) -> Result<Answer> {
        let queue = self.queue(request.queue_url)?;
        self.app.queues.purge(&queue).await?;
        Ok(answer(json!({})))
    }

    fn get_queue_attributes(&self, request: GetQueueAttributes) -> Result<Answer> {
        let queue = self.queue(request.queue_url)?;
        let names = request.attribute_names.unwrap_or_default();
        let all = names.iter().any(|n| n == "All");
        for name in &names {
            let known = name == "All" || READ_ONLY.contains(&name.as_str()) || SETTABLE.contains(&name.as_str()) || NOT_KEPT.contains(&name.as_str());
            if !known {
                return Err(QueueError::InvalidAttributeName(format!("Unknown Attribute {name}.")));
            }
        }
        let info = self.app.queues.info(&queue);
        let s = &info.config.settings;
        let mut values = BTreeMap::from([
            ("QueueArn", queue.arn.clone()),
            ("ApproximateNumberOfMessages", info.counts.visible.to_string()),
            ("ApproximateNumberOfMessagesNotVisible", info.counts.in_flight.to_string()),
            ("ApproximateNumberOfMessagesDelayed", info.counts.delayed.to_string()),
            ("CreatedTimestamp", info.created_s.to_string()),
            ("LastModifiedTimestamp", info.modified_s.to_string()),
            ("VisibilityTimeout", s.visibility_timeout_s.to_string()),
            ("MessageRetentionPeriod", s.retention_s.to_string()),
            ("MaximumMessageSize", s.max_message_size.to_string()),
            ("DelaySeconds", s.delay_s.to_string()),
            ("ReceiveMessageWaitTimeSeconds", info.config.wait_s.to_string()),
        ]);
        if let Some(r) = &s.redrive {
            values.insert("RedrivePolicy", json!({ "deadLetterTargetArn": r.target, "maxReceiveCount": r.max_receive_count }).to_string());
        }
        values.retain(|name, _| all || names.iter().any(|n| n == name));
        if values.is_empty() {
            return Ok(answer(json!({})));
        }
        Ok(answer(json!({ "Attributes": values })))
    }

    async fn set_queue_attributes(&self, request: SetQueueAttributes) -> Result<Answer> {
        let queue = self.queue(request.queue_url)?;
        let given = required(request.attributes, "Attributes")?;
        self.app.queues.set_attributes(&queue, |base| self.apply_attributes(base, &given)).await?;
        Ok(answer(json!({})))
    }

    /// A message to send, checked; its MD5s.
    fn outgoing(body: Option<String>, delay: Option<i64>, attributes: Option<HashMap<String, AttributeValue>>) -> Result<(Outgoing, Value)> {
        let delay_s = delay.map(|d| within(d, "DelaySeconds", 0..=MAX_DELAY_S)).transpose()?;
        let attributes = message_attributes(attributes)?;
        let body = body.unwrap_or_default();
        let mut digests = json!({ "MD5OfMessageBody": md5_hex(body.as_bytes()) });
        if !attributes.is_empty() {
            digests["MD5OfMessageAttributes"] = json!(md5_of_attributes(&attributes));
        }
        Ok((Outgoing { body, attributes, delay_s }, digests))
    }

    async fn send_message(&self, request: SendMessage) -> Result<Answer> {
        let queue = self.queue(request.queue_url)?;
        let (outgoing, mut sent) = Api::outgoing(request.message_body, request.delay_seconds, request.message_attributes)?;
        let answers = self.app.queues.send_batch(&queue, vec![outgoing]).await?;
        let Some(result) = answers.into_iter().next() else {
            return Err(QueueError::Storage("no answer for the message".into()));
        };
        sent["MessageId"] = json!(result?);
        Ok(answer(sent))
    }

    async fn send_message_batch(&self, request: SendMessageBatch) -> Result<Answer> {
        let queue = self.queue(request.queue_url)?;
        let entries = request.entries.unwrap_or_default();
        check_batch(entries.iter().map(|e| e.id.as_deref().unwrap_or("")))?;
        let max = queue.config().settings.max_message_size;
        let size: usize = entries
            .iter()
            .map(|e| e.message_body.as_ref().map_or(0, String::len) + e.message_attributes.as_ref().map_or(0, attributes_size))
            .sum();
        if size > max {
            return Err(QueueError::BatchTooLong { size, max });
        }
        let mut failed_entries = Vec::new();
        let mut accepted = Vec::new();
        for entry in entries {
            let id = entry.id.unwrap_or_default();
            match Api::outgoing(entry.message_body, entry.delay_seconds, entry.message_attributes) {
                Ok((outgoing, digests)) => accepted.push((id, outgoing, digests)),
                Err(e) => failed_entries.push(failed(&id, &e)),
            }
        }
        let (meta, messages): (Vec<_>, Vec<_>) = accepted.into_iter().map(|(id, m, d)| ((id, d), m)).unzip();
        let answers = self.app.queues.send_batch(&queue, messages).await?;
        let mut successful = Vec::new();
        for ((id, mut digests), result) in meta.into_iter().zip(answers) {
            match result {
                Ok(message_id) => {
                    digests["Id"] = json!(id);
                    digests["MessageId"] = json!(message_id);
                    successful.push(digests);
                }
                Err(e) => failed_entries.push(failed(&id, &e)),
            }
        }
        Ok(answer(json!({ "Successful": successful, "Failed": failed_entries })))
    }

    async fn receive_message(&self, request: ReceiveMessage) -> Result<Answer> {
        let queue = self.queue(request.queue_url)?;
        let max = within(request.max_number_of_messages.unwrap_or(1), "MaxNumberOfMessages", 1..=10)? as usize;
        let visibility = request.visibility_timeout.map(|v| within(v, "VisibilityTimeout", 0..=MAX_VISIBILITY_TIMEOUT_S)).transpose()?;
        let wait = match request.wait_time_seconds {
            Some(w) => within(w, "WaitTimeSeconds", 0..=MAX_WAIT_S)?,
            None => queue.config().wait_s,
        };
        let system: Vec<String> =
            request.attribute_names.into_iter().chain(request.message_system_attribute_names).flatten().collect();
        let wanted = request.message_attribute_names.unwrap_or_default();
        let messages = self.app.queues.receive_from(&queue, max, visibility, Duration::from_secs(u64::from(wait))).await?;
        if messages.is_empty() {
            return Ok(answer(json!({})));
        }
        let messages: Vec<Value> = messages.into_iter().map(|m| self.received(m, &system, &wanted)).collect();
        Ok(answer(json!({ "Messages": messages })))
    }

    fn received(&self, m: Message, system: &[String], wanted: &[String]) -> Value {
        let mut out = json!({
            "MessageId": m.message_id,
            "ReceiptHandle": m.receipt_handle,
            "MD5OfBody": md5_hex(m.body.as_bytes()),
            "Body": m.body,
        });
        let all = system.iter().any(|n| n == "All");
        let mut attributes = serde_json::Map::new();
        for (name, value) in [
            ("SenderId", self.account.to_string()),
            ("SentTimestamp", m.sent_ms.to_string()),
            ("ApproximateReceiveCount", m.receive_count.to_string()),
            ("ApproximateFirstReceiveTimestamp", m.first_receive_ms.to_string()),
        ] {
            if all || system.iter().any(|n| n == name) {
                attributes.insert(name.into(), json!(value));
            }
        }
        if !attributes.is_empty() {
            out["Attributes"] = Value::Object(attributes);
        }
        let selected: Attributes = m
            .attributes
            .into_iter()
            .filter(|(name, _)| {
                wanted.iter().any(|w| {
                    w == "All" || w == ".*" || w == name || w.strip_suffix(".*").is_some_and(|prefix| name.starts_with(&format!("{prefix}.")))
                })
            })
            .collect();
        if !selected.is_empty() {
            out["MD5OfMessageAttributes"] = json!(md5_of_attributes(&selected));
            out["MessageAttributes"] = attributes_json(&selected);
        }
        out
    }

    async fn delete_message(&self, request: DeleteMessage) -> Result<Answer> {
        let queue = self.queue(request.queue_url)?;
        let handle = required(request.receipt_handle, "ReceiptHandle")?;
        let answers = self.app.queues.delete_batch(&queue, &[handle.as_str()]).await?;
        answers.into_iter().next().unwrap_or(Err(QueueError::Storage("no answer for the handle".into())))?;
        Ok(answer(json!({})))
    }

    async fn delete_message_batch(&self, request: DeleteMessageBatch) -> Result<Answer> {
        let queue = self.queue(request.queue_url)?;
        let entries = request.entries.unwrap_or_default();
        check_batch(entries.iter().map(|e| e.id.as_deref().unwrap_or("")))?;
        let handles: Vec<&str> = entries.iter().map(|e| e.receipt_handle.as_deref().unwrap_or("")).collect();
        let answers = self.app.queues.delete_batch(&queue, &handles).await?;
        Ok(answer(batch_answer(&entries, answers)))
    }

    fn change_message_visibility(&self, request: ChangeMessageVisibility) -> Result<Answer> {
        let queue = self.queue(request.queue_url)?;
        let handle = required(request.receipt_handle, "ReceiptHandle")?;
        let timeout = within(required(request.visibility_timeout, "VisibilityTimeout")?, "VisibilityTimeout", 0..=MAX_VISIBILITY_TIMEOUT_S)?;
        self.app.queues.change_visibility_of(&queue, &handle, timeout)?;
        Ok(answer(json!({})))
    }

    fn change_message_visibility_batch(&self, request: ChangeMessageVisibilityBatch) -> Result<Answer> {
        let queue = self.queue(request.queue_url)?;
        let entries = request.entries.unwrap_or_default();
        check_batch(entries.iter().map(|e| e.id.as_deref().unwrap_or("")))?;
        let answers = entries
            .iter()
            .map(|e| {
                let timeout = within(e.visibility_timeout.unwrap_or(0), "VisibilityTimeout", 0..=MAX_VISIBILITY_TIMEOUT_S)?;
                self.app.queues.change_visibility_of(&queue, e.receipt_handle.as_deref().unwrap_or(""), timeout)
            })
            .collect();
        Ok(answer(batch_answer(&entries, answers)))
    }
}

/// `{"Successful": [{"Id"}], "Failed": [...]}` for entries answered in order.
fn batch_answer(entries: &[HandleEntry], answers: Vec<Result<()>>) -> Value {
    let mut successful = Vec::new();
    let mut failed_entries = Vec::new();
    for (entry, result) in entries.iter().zip(answers) {
        let id = entry.id.as_deref().unwrap_or("");
        match result {
            Ok(()) => successful.push(json!({ "Id": id })),
            Err(e) => failed_entries.push(failed(id, &e)),
        }
    }
    json!({ "Successful": successful, "Failed": failed_entries })
}

/// The size SQS counts for attributes as given (before validation).
fn attributes_size(given: &HashMap<String, AttributeValue>) -> usize {
    given
        .iter()
        .map(|(name, v)| {
            let value = v.string_value.as_ref().map_or(0, String::len) + v.binary_value.as_ref().map_or(0, |b| b.len() * 3 / 4);
            name.len() + v.data_type.as_ref().map_or(0, String::len) + value
        })
        .sum()
}

/// Every check this module makes of a body before it reaches a queue, for
/// the fuzz targets: the action's wire shape, queue names and URLs, queue
/// attributes, batch entries, message attributes and their MD5.
#[cfg(feature = "fuzz")]
pub(crate) fn check_body(action: &str, body: &[u8]) {
    let any_queue = |_: &str| true;
    let run = || -> Result<()> {
        match action {
            "CreateQueue" => {
                let request: CreateQueue = parse(body)?;
                valid_queue_name(&required(request.queue_name, "QueueName")?)?;
                apply_attributes(&QueueConfig::default(), &request.attributes.unwrap_or_default(), &any_queue)?;
            }
            "SetQueueAttributes" => {
                let request: SetQueueAttributes = parse(body)?;
                queue_path(&required(request.queue_url, "QueueUrl")?);
                apply_attributes(&QueueConfig::default(), &required(request.attributes, "Attributes")?, &any_queue)?;
            }
            "SendMessage" => {
                let request: SendMessage = parse(body)?;
                let (outgoing, _) = Api::outgoing(request.message_body, request.delay_seconds, request.message_attributes)?;
                attributes_json(&outgoing.attributes);
            }
            "SendMessageBatch" => {
                let request: SendMessageBatch = parse(body)?;
                let entries = request.entries.unwrap_or_default();
                check_batch(entries.iter().map(|e| e.id.as_deref().unwrap_or("")))?;
                entries.iter().filter_map(|e| e.message_attributes.as_ref()).map(attributes_size).sum::<usize>();
                for entry in entries {
                    let (outgoing, _) = Api::outgoing(entry.message_body, entry.delay_seconds, entry.message_attributes)?;
                    attributes_json(&outgoing.attributes);
                }
            }
            "ReceiveMessage" => {
                let request: ReceiveMessage = parse(body)?;
                within(request.max_number_of_messages.unwrap_or(1), "MaxNumberOfMessages", 1..=10)?;
                request.visibility_timeout.map(|v| within(v, "VisibilityTimeout", 0..=MAX_VISIBILITY_TIMEOUT_S)).transpose()?;
                request.wait_time_seconds.map(|w| within(w, "WaitTimeSeconds", 0..=MAX_WAIT_S)).transpose()?;
            }
            "DeleteMessageBatch" | "ChangeMessageVisibilityBatch" => {
                let request: ChangeMessageVisibilityBatch = parse(body)?;
                let entries = request.entries.unwrap_or_default();
                check_batch(entries.iter().map(|e| e.id.as_deref().unwrap_or("")))?;
                for e in &entries {
                    within(e.visibility_timeout.unwrap_or(0), "VisibilityTimeout", 0..=MAX_VISIBILITY_TIMEOUT_S)?;
                }
            }
            "ListQueues" => {
                let request: ListQueues = parse(body)?;
                request.max_results.map(|n| within(n, "MaxResults", 1..=1000)).transpose()?;
            }
            _ => {
                let request: GetQueueAttributes = parse(body)?;
                queue_path(&required(request.queue_url, "QueueUrl")?);
            }
        }
        Ok(())
    };
    let _ = run();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_checked() {
        let check = |ids: &[&str]| check_batch(ids.iter().copied());
        assert_eq!(check(&[]), Err(QueueError::EmptyBatch));
        assert_eq!(check(&["a"; 11]), Err(QueueError::TooManyEntries(11)));
        assert_eq!(check(&["a", "b", "a"]), Err(QueueError::IdsNotDistinct("a".into())));
        assert_eq!(check(&["a b"]), Err(QueueError::InvalidBatchEntryId("a b".into())));
        assert_eq!(check(&[""]), Err(QueueError::InvalidBatchEntryId(String::new())));
        assert_eq!(check(&["a-1", "B_2"]), Ok(()));
    }

    #[test]
    fn queue_names() {
        assert!(valid_queue_name("orders-1_a").is_ok());
        for bad in ["", "a b", "q.fifo", &"x".repeat(81), "é"] {
            assert!(valid_queue_name(bad).is_err(), "{bad}");
        }
    }
}
