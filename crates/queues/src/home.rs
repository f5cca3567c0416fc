//! Where the queues are served. In one process, here. In a cluster, one front end at a time serves every queue
//! (and every event source mapping's pollers): the others hand their queue requests to it. The [`QueueHome`] a
//! cluster sets ([`crate::Queues::set_home`]) says which front end that is now; the front end's API hands a
//! request on as a [`Forwarded`] and answers with the [`Answered`] it gets back. An event source mapping's pollers
//! run on any front end ([`crate::Queues::poll`]): their receives, deletes and visibility changes go to the serving
//! one as [`PollCall`]s, answered with a [`PollAnswer`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use base64::Engine;
use serde::{Deserialize, Serialize};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where the queues are served now.
pub enum Home {
    /// By this front end.
    Here,
    /// By another front end.
    Elsewhere(Arc<dyn QueuePeer>),
    /// By no front end yet (the one that served them is gone, and no other took them over yet).
    Unknown,
}

/// Says where the queues are served (set by a cluster's front end).
pub trait QueueHome: Send + Sync {
    fn home(&self) -> Home;
    /// Whether `account` has a queue named `name` (from the stored definitions, as every front end follows them).
    fn exists(&self, account: &str, name: &str) -> bool;
}

/// The front end serving the queues, as another front end reaches it.
pub trait QueuePeer: Send + Sync {
    /// Runs `request` there and answers what it answered, or why it did not.
    fn request(&self, request: Forwarded) -> BoxFuture<'_, Result<Answered, PeerFailure>>;
    /// Runs a poller's `call` there and answers what it answered, or why it did not.
    fn poll(&self, call: PollCall) -> BoxFuture<'_, Result<PollAnswer, PeerFailure>>;
}

/// Why a front end did not answer a request handed to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerFailure {
    /// It did nothing with it: it could not be reached, or does not serve the queues (any more).
    NotTaken(String),
    /// It may have run it, but its answer was lost.
    Lost(String),
}

/// An API request for the queues (an SQS action or an event source mapping's call), checked by the front end it
/// came to and handed on to the one serving the queues, with whom it was made by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Forwarded {
    pub account: String,
    pub admin: bool,
    /// The function whose sandbox's session credentials signed it, if they did.
    pub session: Option<String>,
    pub method: String,
    pub path: String,
    pub query: String,
    /// The `Host` it was sent to (queue URLs name it).
    pub host: String,
    /// Its `X-Amz-Target`.
    pub target: Option<String>,
    #[serde(with = "base64_bytes")]
    pub body: Vec<u8>,
}

/// What the serving front end answered: the status, the headers and the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Answered {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    #[serde(with = "base64_bytes")]
    pub body: Vec<u8>,
}

/// A call of an event source mapping's poller on a queue of `account` (the mapping's), made where the queues are
/// served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PollCall {
    pub account: String,
    pub queue_arn: String,
    pub action: PollAction,
}

/// What a [`PollCall`] asks of its queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub enum PollAction {
    /// The queue's settings a poller reads before each batch.
    Settings,
    /// Receives up to `max` messages, waiting up to `wait_ms` for one.
    #[serde(rename_all = "PascalCase")]
    Receive { max: usize, wait_ms: u64 },
    /// Deletes messages by receipt handle, each on its own (durable when answered).
    #[serde(rename_all = "PascalCase")]
    Delete { handles: Vec<String> },
    /// Sets received messages' visibility timeout, each on its own (a handle no longer valid is passed over).
    #[serde(rename_all = "PascalCase")]
    ChangeVisibility { handles: Vec<String>, timeout_s: u32 },
}

/// The answer to a [`PollCall`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub enum PollAnswer {
    #[serde(rename_all = "PascalCase")]
    Settings { visibility_timeout_s: u32, max_message_size: usize },
    Received(Vec<crate::Message>),
    /// Per handle, in order: whether it was deleted.
    Deleted(Vec<bool>),
    Changed,
    /// The call failed there: `missing` when the queue does not exist (for the account).
    #[serde(rename_all = "PascalCase")]
    Failed { missing: bool, message: String },
}

impl PollAnswer {
    /// What a poller's call that failed with `error` answers.
    pub fn failed(error: &crate::QueueError) -> PollAnswer {
        PollAnswer::Failed { missing: matches!(error, crate::QueueError::DoesNotExist), message: error.to_string() }
    }
}

/// A message's attributes on the wire: name, data type and the value's bytes in base64.
pub(crate) mod wire_attributes {
    use super::*;
    use ignis_queue::{Attribute, Attributes};

    pub fn serialize<S: serde::Serializer>(attributes: &Attributes, serializer: S) -> Result<S::Ok, S::Error> {
        let engine = base64::engine::general_purpose::STANDARD;
        let listed: Vec<(&str, &str, String)> =
            attributes.iter().map(|(name, a)| (name.as_str(), a.data_type.as_str(), engine.encode(&a.value))).collect();
        listed.serialize(serializer)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Attributes, D::Error> {
        let listed = Vec::<(String, String, String)>::deserialize(deserializer)?;
        listed
            .into_iter()
            .map(|(name, data_type, value)| {
                let value = base64::engine::general_purpose::STANDARD.decode(value).map_err(serde::de::Error::custom)?;
                Ok((name, Attribute { data_type, value }))
            })
            .collect()
    }
}

mod base64_bytes {
    use super::*;

    pub fn serialize<S: serde::Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        base64::engine::general_purpose::STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// SQS's `SendMessage` of `body` to `account`'s queue `queue_arn`, as the account, for a front end that does not
/// serve the queues.
pub fn send_message(account: &str, queue_arn: &str, body: &str) -> Option<Forwarded> {
    let (arn_account, name) = ignis_ids::arn::parse_queue(queue_arn)?;
    let request = serde_json::json!({ "QueueUrl": format!("http://ignis/{arn_account}/{name}"), "MessageBody": body });
    Some(Forwarded {
        account: account.to_string(),
        admin: false,
        session: None,
        method: "POST".into(),
        path: "/".into(),
        query: String::new(),
        host: "ignis".into(),
        target: Some("AmazonSQS.SendMessage".into()),
        body: request.to_string().into_bytes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forwarded_request_and_its_answer_cross_as_json() {
        let forwarded = send_message("123456789012", "arn:aws:sqs:us-east-1:123456789012:q", "hi\u{0}there").unwrap();
        let text = serde_json::to_string(&forwarded).unwrap();
        assert_eq!(serde_json::from_str::<Forwarded>(&text).unwrap(), forwarded);
        let body: serde_json::Value = serde_json::from_slice(&forwarded.body).unwrap();
        assert_eq!(body["QueueUrl"], "http://ignis/123456789012/q");
        let answered = Answered { status: 200, headers: vec![("content-type".into(), "x".into())], body: vec![0, 255] };
        assert_eq!(serde_json::from_str::<Answered>(&serde_json::to_string(&answered).unwrap()).unwrap(), answered);
        assert!(send_message("1", "not an arn", "b").is_none());
    }

    #[test]
    fn a_pollers_call_and_its_answer_cross_as_json() {
        let attribute = |data_type: &str, value: &[u8]| ignis_queue::Attribute { data_type: data_type.into(), value: value.to_vec() };
        let message = crate::Message {
            message_id: "m".into(),
            receipt_handle: "h".into(),
            body: "b\u{0}".into(),
            attributes: [("s".to_string(), attribute("String", b"x")), ("b".to_string(), attribute("Binary", &[0, 255]))].into(),
            receive_count: 2,
            sent_ms: 3,
            first_receive_ms: 4,
        };
        let calls = [
            PollAction::Settings,
            PollAction::Receive { max: 10, wait_ms: 20_000 },
            PollAction::Delete { handles: vec!["a".into(), "b".into()] },
            PollAction::ChangeVisibility { handles: vec!["a".into()], timeout_s: 30 },
        ];
        for action in calls {
            let call = PollCall { account: "1".into(), queue_arn: "arn".into(), action };
            assert_eq!(serde_json::from_str::<PollCall>(&serde_json::to_string(&call).unwrap()).unwrap(), call);
        }
        let answers = [
            PollAnswer::Settings { visibility_timeout_s: 30, max_message_size: 1024 },
            PollAnswer::Received(vec![message.clone(), crate::Message { attributes: Default::default(), ..message }]),
            PollAnswer::Deleted(vec![true, false]),
            PollAnswer::Changed,
            PollAnswer::Failed { missing: true, message: "gone".into() },
        ];
        for answer in answers {
            assert_eq!(serde_json::from_str::<PollAnswer>(&serde_json::to_string(&answer).unwrap()).unwrap(), answer);
        }
    }
}
