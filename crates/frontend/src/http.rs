//! Connections, routing, body limits and authentication.
//!
//! A request goes through, in order (only `GET /healthz`, the console's
//! files under `/console/` and code downloads by their signed links
//! (`code_link`) are served unsigned, and the OCI distribution API
//! under `/v2/`, which `oci_api` authenticates with HTTP Basic and whose upload
//! bodies it streams):
//!
//! 1. routing to one [`Operation`], from the head alone, so each operation
//!    reads at most its own body limit (a larger `Content-Length` is refused
//!    at once);
//! 2. the SigV4 check of the head ([`ignis_sigv4::verify_head`]): the key
//!    exists (or, for a request with `X-Amz-Security-Token` or an `ASIA` key
//!    id, the session credentials check out: `ignis_registry::Sessions`
//!    gives the secret), the scope (service included) and date are right, the signed
//!    headers are there, and, when `x-amz-content-sha256` declares the
//!    payload hash, the signature itself. Nothing of the body is read before;
//! 3. the body, read against its limit, then checked
//!    ([`ignis_sigv4::HeadChecked::finish`]): against the declared hash, or,
//!    for a request that declared none (the AWS SDKs for Lambda, SQS and
//!    Logs), by the signature computed with the body's hash. The bodies of
//!    such requests are read before they are authenticated: all of them
//!    together hold at most [`UNAUTHENTICATED_BYTES`] at a time (one larger
//!    body, up to its operation's limit, only alone); a request that finds
//!    no room within [`BUDGET_WAIT`] is refused with
//!    `TooManyRequestsException` (429, which the SDKs retry);
//! 4. the operation.
//!
//! Connections have the time limits of [`ignis_worker::conn`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Body;
use ignis_worker::conn::{ChannelBody, Limits, Protocols, TimedBody, is_body_timeout};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;
use crate::{
    App, Caller, accounts_api, cluster_api, code_link, console_api, control, event_config, invoke_api, lambda_operations,
    layers_api, logs_api, mappings_api, networks_api, oci_api, policy_api, provisioned, recursion_api, runtimes_api,
    sqs_api, tags_api, url_api, versions,
};

/// What a handler answers: a whole body.
pub type Answer = Response<Full<Bytes>>;
/// What goes back on the connection: a whole answer, or a body streamed as it is made (`InvokeWithResponseStream`).
pub type Served = Response<Either<Full<Bytes>, ChannelBody>>;

/// A whole answer, as served.
pub fn whole(answer: Answer) -> Served {
    answer.map(Either::Left)
}


/// Bytes that bodies of requests not yet authenticated may hold at once.
pub const UNAUTHENTICATED_BYTES: usize = 16 * 1024 * 1024;
/// How long such a request waits for room before it is refused.
pub const BUDGET_WAIT: Duration = Duration::from_secs(10);

/// Everything the API can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    Health,
    /// A file of the web console (`console_api`), served unsigned.
    Console(console_api::Asset),
    /// Ignis's own: `GET /ignis/activity`, the caller's functions' last hour (`console_api`).
    ListActivity,
    /// Ignis's own: `GET /ignis/activity/{function}`.
    GetActivity(String),
    /// `GET /ignis/activity-of/{account}[/{function}]`: this front end's own activity, for another front end.
    GetActivityHere(String, Option<String>),
    CreateFunction,
    ListFunctions,
    GetAccountSettings,
    GetFunction(String),
    GetFunctionConfiguration(String),
    UpdateFunctionConfiguration(String),
    UpdateFunctionCode(String),
    DeleteFunction(String),
    Invoke(String),
    /// `POST /2021-11-15/functions/{name}/response-streaming-invocations` (`invoke_api`).
    InvokeWithResponseStream(String),
    PutFunctionConcurrency(String),
    GetFunctionConcurrency(String),
    DeleteFunctionConcurrency(String),
    PublishVersion(String),
    ListVersionsByFunction(String),
    CreateAlias(String),
    ListAliases(String),
    /// Function, alias.
    GetAlias(String, String),
    UpdateAlias(String, String),
    DeleteAlias(String, String),
    /// Function (`policy_api`).
    AddPermission(String),
    GetPolicy(String),
    /// Function, statement id.
    RemovePermission(String, String),
    PutProvisionedConcurrencyConfig(String),
    GetProvisionedConcurrencyConfig(String),
    DeleteProvisionedConcurrencyConfig(String),
    ListProvisionedConcurrencyConfigs(String),
    PutFunctionEventInvokeConfig(String),
    UpdateFunctionEventInvokeConfig(String),
    GetFunctionEventInvokeConfig(String),
    DeleteFunctionEventInvokeConfig(String),
    ListFunctionEventInvokeConfigs(String),
    CreateEventSourceMapping,
    ListEventSourceMappings,
    /// By UUID.
    GetEventSourceMapping(String),
    UpdateEventSourceMapping(String),
    DeleteEventSourceMapping(String),
    /// `recursion_api`, by function.
    PutFunctionRecursionConfig(String),
    GetFunctionRecursionConfig(String),
    /// Function URL configs (`url_api`), by function; the qualifier is in the query.
    CreateFunctionUrlConfig(String),
    GetFunctionUrlConfig(String),
    UpdateFunctionUrlConfig(String),
    DeleteFunctionUrlConfig(String),
    ListFunctionUrlConfigs(String),
    /// By the resource's ARN (`tags_api`).
    TagResource(String),
    UntagResource(String),
    ListTags(String),
    /// `GET /ignis/code-download/{account}/{sha256}?...`: GetFunction's `Code.Location`, served unsigned (`code_link`).
    DownloadCode(String, String),
    /// A CloudWatch Logs call, by its `X-Amz-Target` action.
    Logs(LogsAction),
    /// Ignis's own: `POST /ignis/accounts`.
    CreateAccount,
    /// Ignis's own: `GET /ignis/accounts`.
    ListAccounts,
    /// Ignis's own: `PUT /ignis/runtimes/{name}` (`runtimes_api`).
    PutRuntime(String),
    /// Ignis's own: `GET /ignis/runtimes`.
    ListRuntimes,
    /// Ignis's own: `PUT /ignis/networks/{name}` (`networks_api`).
    PutNetwork(String),
    /// Ignis's own: `GET /ignis/networks`.
    ListNetworks,
    /// Ignis's own: `DELETE /ignis/networks/{name}`.
    DeleteNetwork(String),
    /// An SQS call, by its `X-Amz-Target` action.
    Sqs(SqsAction),
    /// Ignis's own cluster calls (`cluster_api`): a worker host registers,
    /// heartbeats (by worker id), fetches code (by SHA-256), posts logs; the
    /// workers are listed.
    RegisterWorker,
    Heartbeat(String),
    ListWorkers,
    GetCode(String),
    /// `POST /ignis/invocations/{account}/{function}/{revision}`: an invocation forwarded by another front end.
    RunForwarded(String, String, String),
    /// `GET /ignis/partitions?Function=NAME`: a function's assignment partition and its leader.
    DescribePartition,
    /// `POST /ignis/queue-requests`: an SQS action or event source mapping call forwarded by another front end
    /// to the one serving the queues (`ignis_queues::Forwarded`).
    RunQueueRequest,
    /// `POST /ignis/queue-polls`: an event source mapping poller's call on a queue, from another front end to the
    /// one serving the queues (`ignis_queues::PollCall`).
    RunQueuePoll,
    /// `GET /ignis/queue-home`: whether this front end serves the queues.
    DescribeQueueHome,
    /// `POST /ignis/log-requests`: a CloudWatch Logs action on this front end's logs alone, for another front end
    /// that merges every front end's answers.
    RunLogRequest,
    /// `GET /ignis/allocations/{account}/{function}/{revision}`: a version's provisioned concurrency here.
    GetAllocation(String, String, String),
    /// `GET /ignis/images/{account}/{digest}?repository=NAME`: a prepared image, for a worker host.
    GetImage(String, String),
    /// `GET /ignis/chunks/{root}/{digest}`: one stored chunk, for a worker host.
    GetChunk(String, String),
    /// `POST /ignis/images/gc`: one garbage collection of the chunk store.
    CollectImages,
    PutLogs,
    PublishLayerVersion(String),
    ListLayers,
    ListLayerVersions(String),
    /// Layer, version number.
    GetLayerVersion(String, String),
    DeleteLayerVersion(String, String),
    GetLayerVersionByArn,
    /// The OCI distribution API (`/v2/...`): container image push and pull.
    Oci(oci_api::OciRequest),
}

/// Defines a closed enum of the actions one `X-Amz-Target` prefix names, each
/// variant spelled as its action.
macro_rules! actions {
    ($(#[$doc:meta])* $name:ident { $($action:ident),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($action),+
        }

        impl $name {
            /// Every action, in the order declared.
            pub const ALL: &[$name] = &[$($name::$action),+];

            /// The action's name, as `X-Amz-Target` spells it after the prefix.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$action => stringify!($action)),+
                }
            }

            /// The action `name` spells, if Ignis serves it.
            pub fn from_name(name: &str) -> Option<$name> {
                $name::ALL.iter().copied().find(|action| action.name() == name)
            }
        }
    };
}

actions! {
    /// The SQS actions Ignis serves (`X-Amz-Target: AmazonSQS.<action>`).
    SqsAction {
        CreateQueue,
        GetQueueUrl,
        ListQueues,
        ListDeadLetterSourceQueues,
        DeleteQueue,
        GetQueueAttributes,
        SetQueueAttributes,
        PurgeQueue,
        SendMessage,
        SendMessageBatch,
        ReceiveMessage,
        DeleteMessage,
        DeleteMessageBatch,
        ChangeMessageVisibility,
        ChangeMessageVisibilityBatch,
    }
}

actions! {
    /// The CloudWatch Logs actions Ignis serves (`X-Amz-Target: Logs_20140328.<action>`).
    LogsAction {
        FilterLogEvents,
        GetLogEvents,
        DescribeLogGroups,
        DescribeLogStreams,
        PutRetentionPolicy,
        DeleteRetentionPolicy,
        DeleteLogGroup,
    }
}

impl Operation {
    /// Largest body the operation reads, and the error for a larger one.
    fn body_limit(&self) -> (usize, ApiError) {
        match self {
            Operation::Invoke(_) | Operation::InvokeWithResponseStream(_) => (
                invoke_api::MAX_SYNC_PAYLOAD,
                ApiError::RequestTooLarge(format!(
                    "Request must be smaller than {} bytes for the InvokeFunction operation",
                    invoke_api::MAX_SYNC_PAYLOAD
                )),
            ),
            Operation::CreateFunction | Operation::UpdateFunctionCode(_) | Operation::PublishLayerVersion(_) => (
                control::MAX_CODE_REQUEST,
                ApiError::RequestEntityTooLarge(format!(
                    "Request must be smaller than {} bytes for the {} operation",
                    control::MAX_CODE_REQUEST,
                    self.name()
                )),
            ),
            Operation::RunQueueRequest | Operation::RunQueuePoll => (
                cluster_api::MAX_QUEUE_REQUEST,
                ApiError::RequestEntityTooLarge(format!("Request must be smaller than {} bytes", cluster_api::MAX_QUEUE_REQUEST)),
            ),
            Operation::RunForwarded(..) => (
                cluster_api::MAX_FORWARDED,
                ApiError::RequestEntityTooLarge(format!("Request must be smaller than {} bytes", cluster_api::MAX_FORWARDED)),
            ),
            Operation::Sqs(_) => (
                sqs_api::MAX_REQUEST,
                ApiError::from(ignis_queues::QueueError::InvalidParameterValue(format!(
                    "Request must be smaller than {} bytes",
                    sqs_api::MAX_REQUEST
                ))),
            ),
            _ => (
                1024 * 1024,
                ApiError::RequestEntityTooLarge(format!("Request must be smaller than 1048576 bytes for the {} operation", self.name())),
            ),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Operation::Health => "Health",
            Operation::Console(_) => "Console",
            Operation::ListActivity => "ListActivity",
            Operation::GetActivity(_) => "GetActivity",
            Operation::GetActivityHere(..) => "GetActivityHere",
            Operation::CreateFunction => "CreateFunction",
            Operation::ListFunctions => "ListFunctions",
            Operation::GetAccountSettings => "GetAccountSettings",
            Operation::GetFunction(_) => "GetFunction",
            Operation::GetFunctionConfiguration(_) => "GetFunctionConfiguration",
            Operation::UpdateFunctionConfiguration(_) => "UpdateFunctionConfiguration",
            Operation::UpdateFunctionCode(_) => "UpdateFunctionCode",
            Operation::DeleteFunction(_) => "DeleteFunction",
            Operation::Invoke(_) => "Invoke",
            Operation::InvokeWithResponseStream(_) => "InvokeWithResponseStream",
            Operation::PutFunctionConcurrency(_) => "PutFunctionConcurrency",
            Operation::GetFunctionConcurrency(_) => "GetFunctionConcurrency",
            Operation::DeleteFunctionConcurrency(_) => "DeleteFunctionConcurrency",
            Operation::PublishVersion(_) => "PublishVersion",
            Operation::ListVersionsByFunction(_) => "ListVersionsByFunction",
            Operation::CreateAlias(_) => "CreateAlias",
            Operation::ListAliases(_) => "ListAliases",
            Operation::GetAlias(..) => "GetAlias",
            Operation::UpdateAlias(..) => "UpdateAlias",
            Operation::DeleteAlias(..) => "DeleteAlias",
            Operation::AddPermission(_) => "AddPermission",
            Operation::GetPolicy(_) => "GetPolicy",
            Operation::RemovePermission(..) => "RemovePermission",
            Operation::PutProvisionedConcurrencyConfig(_) => "PutProvisionedConcurrencyConfig",
            Operation::GetProvisionedConcurrencyConfig(_) => "GetProvisionedConcurrencyConfig",
            Operation::DeleteProvisionedConcurrencyConfig(_) => "DeleteProvisionedConcurrencyConfig",
            Operation::ListProvisionedConcurrencyConfigs(_) => "ListProvisionedConcurrencyConfigs",
            Operation::PutFunctionEventInvokeConfig(_) => "PutFunctionEventInvokeConfig",
            Operation::UpdateFunctionEventInvokeConfig(_) => "UpdateFunctionEventInvokeConfig",
            Operation::GetFunctionEventInvokeConfig(_) => "GetFunctionEventInvokeConfig",
            Operation::DeleteFunctionEventInvokeConfig(_) => "DeleteFunctionEventInvokeConfig",
            Operation::ListFunctionEventInvokeConfigs(_) => "ListFunctionEventInvokeConfigs",
            Operation::CreateEventSourceMapping => "CreateEventSourceMapping",
            Operation::ListEventSourceMappings => "ListEventSourceMappings",
            Operation::GetEventSourceMapping(_) => "GetEventSourceMapping",
            Operation::UpdateEventSourceMapping(_) => "UpdateEventSourceMapping",
            Operation::DeleteEventSourceMapping(_) => "DeleteEventSourceMapping",
            Operation::PutFunctionRecursionConfig(_) => "PutFunctionRecursionConfig",
            Operation::GetFunctionRecursionConfig(_) => "GetFunctionRecursionConfig",
            Operation::CreateFunctionUrlConfig(_) => "CreateFunctionUrlConfig",
            Operation::GetFunctionUrlConfig(_) => "GetFunctionUrlConfig",
            Operation::UpdateFunctionUrlConfig(_) => "UpdateFunctionUrlConfig",
            Operation::DeleteFunctionUrlConfig(_) => "DeleteFunctionUrlConfig",
            Operation::ListFunctionUrlConfigs(_) => "ListFunctionUrlConfigs",
            Operation::TagResource(_) => "TagResource",
            Operation::UntagResource(_) => "UntagResource",
            Operation::ListTags(_) => "ListTags",
            Operation::DownloadCode(..) => "DownloadCode",
            Operation::Logs(action) => action.name(),
            Operation::CreateAccount => "CreateAccount",
            Operation::ListAccounts => "ListAccounts",
            Operation::PutRuntime(..) => "PutRuntime",
            Operation::ListRuntimes => "ListRuntimes",
            Operation::PutNetwork(_) => "PutNetwork",
            Operation::ListNetworks => "ListNetworks",
            Operation::DeleteNetwork(_) => "DeleteNetwork",
            Operation::Sqs(action) => action.name(),
            Operation::RegisterWorker => "RegisterWorker",
            Operation::Heartbeat(_) => "Heartbeat",
            Operation::ListWorkers => "ListWorkers",
            Operation::GetCode(_) => "GetCode",
            Operation::RunForwarded(..) => "RunForwarded",
            Operation::DescribePartition => "DescribePartition",
            Operation::RunQueueRequest => "RunQueueRequest",
            Operation::RunQueuePoll => "RunQueuePoll",
            Operation::DescribeQueueHome => "DescribeQueueHome",
            Operation::RunLogRequest => "RunLogRequest",
            Operation::GetAllocation(..) => "GetAllocation",
            Operation::GetImage(..) => "GetImage",
            Operation::GetChunk(..) => "GetChunk",
            Operation::CollectImages => "CollectImages",
            Operation::PutLogs => "PutLogs",
            Operation::PublishLayerVersion(_) => "PublishLayerVersion",
            Operation::ListLayers => "ListLayers",
            Operation::ListLayerVersions(_) => "ListLayerVersions",
            Operation::GetLayerVersion(..) => "GetLayerVersion",
            Operation::DeleteLayerVersion(..) => "DeleteLayerVersion",
            Operation::GetLayerVersionByArn => "GetLayerVersionByArn",
            Operation::Oci(request) => request.name(),
        }
    }

    /// Whether the front end serving the queues answers it (an SQS action or an event source mapping call).
    pub fn is_queue_service(&self) -> bool {
        matches!(
            self,
            Operation::Sqs(_)
                | Operation::CreateEventSourceMapping
                | Operation::ListEventSourceMappings
                | Operation::GetEventSourceMapping(_)
                | Operation::UpdateEventSourceMapping(_)
                | Operation::DeleteEventSourceMapping(_)
        )
    }

    /// The SigV4 service the request must be signed for.
    fn service(&self) -> &'static str {
        match self {
            Operation::Logs(_) => "logs",
            Operation::CreateAccount
            | Operation::ListAccounts
            | Operation::PutRuntime(..)
            | Operation::ListRuntimes
            | Operation::PutNetwork(_)
            | Operation::ListNetworks
            | Operation::DeleteNetwork(_)
            | Operation::RegisterWorker
            | Operation::Heartbeat(_)
            | Operation::ListWorkers
            | Operation::GetCode(_)
            | Operation::RunForwarded(..)
            | Operation::DescribePartition
            | Operation::RunQueueRequest
            | Operation::RunQueuePoll
            | Operation::DescribeQueueHome
            | Operation::RunLogRequest
            | Operation::GetAllocation(..)
            | Operation::GetImage(..)
            | Operation::GetChunk(..)
            | Operation::CollectImages
            | Operation::PutLogs
            | Operation::ListActivity
            | Operation::GetActivity(_)
            | Operation::GetActivityHere(..) => "ignis",
            Operation::Sqs(_) => "sqs",
            _ => "lambda",
        }
    }
}

/// Routes a request by method, path, `X-Amz-Target` and (for the one path
/// shared by two operations) query. An SQS or Logs action Ignis does not
/// serve is refused here, before authentication, with the error its API
/// gives for an unknown operation.
pub fn route(method: &Method, path: &str, query: &str, headers: &HeaderMap) -> Result<Operation, ApiError> {
    if path == "/healthz" && method == Method::GET {
        return Ok(Operation::Health);
    }
    if oci_api::is_registry_path(path) {
        return oci_api::route(method, path).map(Operation::Oci);
    }
    if method == Method::GET
        && let Some(asset) = console_api::Asset::at(path)
    {
        return Ok(Operation::Console(asset));
    }
    if path == "/" && method == Method::POST {
        let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or("");
        if let Some(action) = target.strip_prefix("Logs_20140328.") {
            return LogsAction::from_name(action).map(Operation::Logs).ok_or_else(|| {
                ApiError::UnknownOperation(format!("Ignis does not implement the CloudWatch Logs operation {action}"))
            });
        }
        if let Some(action) = target.strip_prefix("AmazonSQS.") {
            return SqsAction::from_name(action).map(Operation::Sqs).ok_or_else(|| {
                ignis_queues::QueueError::Unsupported(format!("Ignis does not implement the SQS operation {action}.")).into()
            });
        }
        return Err(ApiError::UnknownOperation(format!("Unknown operation {target:?}")));
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let decode = |segment: &str| percent_decode(segment).ok_or_else(|| ApiError::Validation("Invalid percent-encoding in path".into()));
    let op = match (method, segments.as_slice()) {
        (&Method::POST, ["2015-03-31", "functions"] | ["2015-03-31", "functions", ""]) => Operation::CreateFunction,
        (&Method::GET, ["2015-03-31", "functions"] | ["2015-03-31", "functions", ""]) => Operation::ListFunctions,
        (&Method::GET, ["2016-08-19", "account-settings"] | ["2016-08-19", "account-settings", ""]) => {
            Operation::GetAccountSettings
        }
        (&Method::GET, ["2015-03-31", "functions", name]) => Operation::GetFunction(decode(name)?),
        (&Method::DELETE, ["2015-03-31", "functions", name]) => Operation::DeleteFunction(decode(name)?),
        (&Method::GET, ["2015-03-31", "functions", name, "configuration"]) => Operation::GetFunctionConfiguration(decode(name)?),
        (&Method::PUT, ["2015-03-31", "functions", name, "configuration"]) => {
            Operation::UpdateFunctionConfiguration(decode(name)?)
        }
        (&Method::PUT, ["2015-03-31", "functions", name, "code"]) => Operation::UpdateFunctionCode(decode(name)?),
        (&Method::POST, ["2015-03-31", "functions", name, "invocations"]) => Operation::Invoke(decode(name)?),
        (&Method::POST, ["2021-11-15", "functions", name, "response-streaming-invocations"]) => {
            Operation::InvokeWithResponseStream(decode(name)?)
        }
        (&Method::PUT, ["2017-10-31", "functions", name, "concurrency"]) => Operation::PutFunctionConcurrency(decode(name)?),
        (&Method::GET, ["2019-09-30", "functions", name, "concurrency"]) => Operation::GetFunctionConcurrency(decode(name)?),
        (&Method::DELETE, ["2017-10-31", "functions", name, "concurrency"]) => {
            Operation::DeleteFunctionConcurrency(decode(name)?)
        }
        (&Method::POST, ["2015-03-31", "functions", name, "versions"]) => Operation::PublishVersion(decode(name)?),
        (&Method::GET, ["2015-03-31", "functions", name, "versions"]) => Operation::ListVersionsByFunction(decode(name)?),
        (&Method::POST, ["2015-03-31", "functions", name, "aliases"]) => Operation::CreateAlias(decode(name)?),
        (&Method::GET, ["2015-03-31", "functions", name, "aliases"]) => Operation::ListAliases(decode(name)?),
        (&Method::GET, ["2015-03-31", "functions", name, "aliases", alias]) => Operation::GetAlias(decode(name)?, decode(alias)?),
        (&Method::PUT, ["2015-03-31", "functions", name, "aliases", alias]) => Operation::UpdateAlias(decode(name)?, decode(alias)?),
        (&Method::DELETE, ["2015-03-31", "functions", name, "aliases", alias]) => {
            Operation::DeleteAlias(decode(name)?, decode(alias)?)
        }
        (&Method::POST, ["2015-03-31", "functions", name, "policy"]) => Operation::AddPermission(decode(name)?),
        (&Method::GET, ["2015-03-31", "functions", name, "policy"]) => Operation::GetPolicy(decode(name)?),
        (&Method::DELETE, ["2015-03-31", "functions", name, "policy", sid]) => {
            Operation::RemovePermission(decode(name)?, decode(sid)?)
        }
        (&Method::PUT, ["2019-09-30", "functions", name, "provisioned-concurrency"]) => {
            Operation::PutProvisionedConcurrencyConfig(decode(name)?)
        }
        (&Method::GET, ["2019-09-30", "functions", name, "provisioned-concurrency"]) => {
            if query_params(query).iter().any(|(k, v)| k == "List" && v == "ALL") {
                Operation::ListProvisionedConcurrencyConfigs(decode(name)?)
            } else {
                Operation::GetProvisionedConcurrencyConfig(decode(name)?)
            }
        }
        (&Method::DELETE, ["2019-09-30", "functions", name, "provisioned-concurrency"]) => {
            Operation::DeleteProvisionedConcurrencyConfig(decode(name)?)
        }
        (&Method::PUT, ["2019-09-25", "functions", name, "event-invoke-config"]) => Operation::PutFunctionEventInvokeConfig(decode(name)?),
        (&Method::POST, ["2019-09-25", "functions", name, "event-invoke-config"]) => {
            Operation::UpdateFunctionEventInvokeConfig(decode(name)?)
        }
        (&Method::GET, ["2019-09-25", "functions", name, "event-invoke-config"]) => Operation::GetFunctionEventInvokeConfig(decode(name)?),
        (&Method::DELETE, ["2019-09-25", "functions", name, "event-invoke-config"]) => {
            Operation::DeleteFunctionEventInvokeConfig(decode(name)?)
        }
        (&Method::GET, ["2019-09-25", "functions", name, "event-invoke-config", "list"]) => {
            Operation::ListFunctionEventInvokeConfigs(decode(name)?)
        }
        (&Method::POST, ["2015-03-31", "event-source-mappings"] | ["2015-03-31", "event-source-mappings", ""]) => {
            Operation::CreateEventSourceMapping
        }
        (&Method::GET, ["2015-03-31", "event-source-mappings"] | ["2015-03-31", "event-source-mappings", ""]) => {
            Operation::ListEventSourceMappings
        }
        (&Method::GET, ["2015-03-31", "event-source-mappings", uuid]) => Operation::GetEventSourceMapping(decode(uuid)?),
        (&Method::PUT, ["2015-03-31", "event-source-mappings", uuid]) => Operation::UpdateEventSourceMapping(decode(uuid)?),
        (&Method::DELETE, ["2015-03-31", "event-source-mappings", uuid]) => Operation::DeleteEventSourceMapping(decode(uuid)?),
        (&Method::PUT, ["2024-08-31", "functions", name, "recursion-config"]) => {
            Operation::PutFunctionRecursionConfig(decode(name)?)
        }
        (&Method::GET, ["2024-08-31", "functions", name, "recursion-config"]) => {
            Operation::GetFunctionRecursionConfig(decode(name)?)
        }
        (&Method::POST, ["2021-10-31", "functions", name, "url"]) => Operation::CreateFunctionUrlConfig(decode(name)?),
        (&Method::GET, ["2021-10-31", "functions", name, "url"]) => Operation::GetFunctionUrlConfig(decode(name)?),
        (&Method::PUT, ["2021-10-31", "functions", name, "url"]) => Operation::UpdateFunctionUrlConfig(decode(name)?),
        (&Method::DELETE, ["2021-10-31", "functions", name, "url"]) => Operation::DeleteFunctionUrlConfig(decode(name)?),
        (&Method::GET, ["2021-10-31", "functions", name, "urls"]) => Operation::ListFunctionUrlConfigs(decode(name)?),
        (&Method::POST, ["2017-03-31", "tags", arn]) => Operation::TagResource(decode(arn)?),
        (&Method::DELETE, ["2017-03-31", "tags", arn]) => Operation::UntagResource(decode(arn)?),
        (&Method::GET, ["2017-03-31", "tags", arn]) => Operation::ListTags(decode(arn)?),
        (&Method::GET, ["ignis", "code-download", account, sha]) => Operation::DownloadCode(decode(account)?, decode(sha)?),
        (&Method::GET, ["2018-10-31", "layers"] | ["2018-10-31", "layers", ""]) => {
            if query_params(query).iter().any(|(k, v)| k == "find" && v == "LayerVersion") {
                Operation::GetLayerVersionByArn
            } else {
                Operation::ListLayers
            }
        }
        (&Method::POST, ["2018-10-31", "layers", name, "versions"]) => Operation::PublishLayerVersion(decode(name)?),
        (&Method::GET, ["2018-10-31", "layers", name, "versions"]) => Operation::ListLayerVersions(decode(name)?),
        (&Method::GET, ["2018-10-31", "layers", name, "versions", n]) => Operation::GetLayerVersion(decode(name)?, decode(n)?),
        (&Method::DELETE, ["2018-10-31", "layers", name, "versions", n]) => Operation::DeleteLayerVersion(decode(name)?, decode(n)?),
        (&Method::POST, ["ignis", "accounts"] | ["ignis", "accounts", ""]) => Operation::CreateAccount,
        (&Method::GET, ["ignis", "accounts"] | ["ignis", "accounts", ""]) => Operation::ListAccounts,
        (&Method::PUT, ["ignis", "runtimes", name]) => Operation::PutRuntime(decode(name)?),
        (&Method::GET, ["ignis", "runtimes"] | ["ignis", "runtimes", ""]) => Operation::ListRuntimes,
        (&Method::PUT, ["ignis", "networks", name]) => Operation::PutNetwork(decode(name)?),
        (&Method::GET, ["ignis", "networks"] | ["ignis", "networks", ""]) => Operation::ListNetworks,
        (&Method::DELETE, ["ignis", "networks", name]) => Operation::DeleteNetwork(decode(name)?),
        (&Method::POST, ["ignis", "workers"]) => Operation::RegisterWorker,
        (&Method::GET, ["ignis", "workers"]) => Operation::ListWorkers,
        (&Method::POST, ["ignis", "workers", id, "heartbeat"]) => Operation::Heartbeat(decode(id)?),
        (&Method::GET, ["ignis", "code", sha]) => Operation::GetCode(decode(sha)?),
        (&Method::POST, ["ignis", "invocations", account, function, revision]) => {
            Operation::RunForwarded(decode(account)?, decode(function)?, decode(revision)?)
        }
        (&Method::GET, ["ignis", "partitions"]) => Operation::DescribePartition,
        (&Method::POST, ["ignis", "queue-requests"]) => Operation::RunQueueRequest,
        (&Method::POST, ["ignis", "queue-polls"]) => Operation::RunQueuePoll,
        (&Method::GET, ["ignis", "queue-home"]) => Operation::DescribeQueueHome,
        (&Method::POST, ["ignis", "log-requests"]) => Operation::RunLogRequest,
        (&Method::GET, ["ignis", "allocations", account, function, revision]) => {
            Operation::GetAllocation(decode(account)?, decode(function)?, decode(revision)?)
        }
        (&Method::GET, ["ignis", "images", account, digest]) => Operation::GetImage(decode(account)?, decode(digest)?),
        (&Method::GET, ["ignis", "chunks", root, digest]) => Operation::GetChunk(decode(root)?, decode(digest)?),
        (&Method::POST, ["ignis", "images", "gc"]) => Operation::CollectImages,
        (&Method::POST, ["ignis", "logs"]) => Operation::PutLogs,
        (&Method::GET, ["ignis", "activity"] | ["ignis", "activity", ""]) => Operation::ListActivity,
        (&Method::GET, ["ignis", "activity", name]) => Operation::GetActivity(decode(name)?),
        (&Method::GET, ["ignis", "activity-of", account]) => Operation::GetActivityHere(decode(account)?, None),
        (&Method::GET, ["ignis", "activity-of", account, name]) => {
            Operation::GetActivityHere(decode(account)?, Some(decode(name)?))
        }
        _ => return Err(lambda_operations::unknown(method.as_str(), path)),
    };
    Ok(op)
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The decoded query parameters.
pub fn query_params(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let plus = |s: &str| s.replace('+', " ");
            (percent_decode(&plus(k)).unwrap_or_default(), percent_decode(&plus(v)).unwrap_or_default())
        })
        .collect()
}

/// Serves the API on `listener` until `shutdown` completes; every connection
/// has the time `limits`.
pub async fn serve(app: Arc<App>, listener: tokio::net::TcpListener, limits: Limits, shutdown: impl Future<Output = ()>) {
    let budget = Arc::new(Budget::new(UNAUTHENTICATED_BYTES, app.config.clock.clone()));
    ignis_cluster::serve(listener, limits, Protocols::Http1, shutdown, move |request| {
        handle(app.clone(), budget.clone(), request)
    })
    .await;
}

/// The room for bodies of requests not yet authenticated, in bytes.
struct Budget {
    bytes: Arc<Semaphore>,
    total: usize,
    clock: ignis_clock::SharedClock,
}

impl Budget {
    fn new(total: usize, clock: ignis_clock::SharedClock) -> Budget {
        Budget { bytes: Arc::new(Semaphore::new(total)), total, clock }
    }

    /// Room for a body of at most `size` bytes (all the room for a larger one), held until the
    /// permit is dropped.
    async fn take(&self, size: u64) -> Result<OwnedSemaphorePermit, ApiError> {
        let wanted = u32::try_from(size.min(self.total as u64)).unwrap_or(u32::MAX);
        match ignis_clock::timeout(&*self.clock, BUDGET_WAIT, self.bytes.clone().acquire_many_owned(wanted)).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(ApiError::Busy(
                "Too many request bodies are being read before their signature can be checked; try again, \
                 or declare the payload hash in x-amz-content-sha256"
                    .into(),
            )),
        }
    }
}

/// Answers one request, logs it at `debug` (a 5xx at `warn`, with the error)
/// and tags it with its request id.
async fn handle(app: Arc<App>, budget: Arc<Budget>, request: Request<TimedBody>) -> Served {
    let started = app.config.clock.instant();
    let request_id = uuid::Uuid::new_v4().to_string();
    let target = request.headers().get("x-amz-target");
    let is_logs = target.is_some();
    let is_sqs = target.is_some_and(|t| t.as_bytes().starts_with(b"AmazonSQS."));
    let is_registry = oci_api::is_registry_path(request.uri().path());
    // The operation's name once routed; "-" for a request no operation takes.
    let mut operation = "-";
    let (mut answer, error) = match respond(&app, &budget, request, &request_id, &mut operation).await {
        Ok(answer) => (answer, None),
        Err(e) if is_registry => (whole(e.to_registry_response()), Some(e)),
        Err(e) if is_sqs => (whole(e.to_sqs_response()), Some(e)),
        Err(e) if is_logs => (whole(e.to_json_protocol_response()), Some(e)),
        Err(e) => (whole(e.to_rest_response()), Some(e)),
    };
    let status = answer.status().as_u16();
    let duration = app.config.clock.instant().saturating_duration_since(started);
    if answer.status().is_server_error() {
        let error = error.as_ref().map_or("", ApiError::message);
        tracing::warn!(request_id = %request_id, operation, status, ?duration, error, "request failed");
    } else {
        tracing::debug!(request_id = %request_id, operation, status, ?duration, "request");
    }
    // The operation's name is one of a closed set: the labels are bounded.
    metrics::counter!("ignis_requests_total", "operation" => operation).increment(1);
    metrics::histogram!("ignis_request_duration_seconds", "operation" => operation).record(duration.as_secs_f64());
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        answer.headers_mut().insert("x-amzn-requestid", value);
    }
    answer
}

async fn respond(
    app: &Arc<App>,
    budget: &Budget,
    request: Request<TimedBody>,
    request_id: &str,
    routed: &mut &'static str,
) -> Result<Served, ApiError> {
    let (parts, body) = request.into_parts();
    let operation = route(&parts.method, parts.uri.path(), parts.uri.query().unwrap_or(""), &parts.headers)?;
    *routed = operation.name();
    if operation == Operation::Health {
        return Ok(whole(json_answer(StatusCode::OK, serde_json::json!({ "status": "ok" }))));
    }
    if let Operation::Console(asset) = operation {
        return Ok(whole(console_api::asset(app, asset)));
    }
    if let Operation::DownloadCode(account, sha) = &operation {
        return code_link::download(app, account, sha, parts.uri.query().unwrap_or("")).await.map(whole);
    }
    if let Operation::Oci(request) = operation {
        return oci_api::handle(app, Request::from_parts(parts, body), request).await.map(whole);
    }
    let (limit, too_large) = operation.body_limit();
    let size = body.size_hint();
    if size.lower() > limit as u64 {
        return Err(too_large);
    }
    let (head, caller) = authenticate_head(app, &parts, operation.service())?;
    let body = if head.signature_verified() {
        read_body(body, limit, too_large).await?
    } else {
        let _room = budget.take(size.upper().unwrap_or(limit as u64)).await?;
        read_body(body, limit, too_large).await?
    };
    head.finish(&body)?;
    let caller = &caller;
    let query = parts.uri.query().unwrap_or("");
    let host = parts.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    if operation.is_queue_service() {
        return cluster_api::queue_request(app, caller, operation, &parts, host, body).await.map(whole);
    }
    let answer = match operation {
        Operation::Health | Operation::Console(_) | Operation::Oci(_) | Operation::DownloadCode(..) => {
            unreachable!("answered above")
        }
        Operation::CreateFunction => control::create_function(app, caller, &body).await,
        Operation::ListFunctions => control::list_functions(app, caller, query),
        Operation::GetAccountSettings => control::account_settings(app, caller),
        Operation::GetFunction(name) => control::get_function(app, caller, &name, query, host),
        Operation::GetFunctionConfiguration(name) => control::get_function_configuration(app, caller, &name, query),
        Operation::UpdateFunctionConfiguration(name) => control::update_configuration(app, caller, &name, &body).await,
        Operation::UpdateFunctionCode(name) => control::update_code(app, caller, &name, &body).await,
        Operation::DeleteFunction(name) => control::delete_function(app, caller, &name, query).await,
        Operation::Invoke(name) => {
            let headers = &parts.headers;
            let request = invoke_api::InvokeRequest { name: &name, query, headers, payload: body, request_id };
            invoke_api::invoke(app, caller, request).await
        }
        Operation::InvokeWithResponseStream(name) => {
            let headers = &parts.headers;
            let request = invoke_api::InvokeRequest { name: &name, query, headers, payload: body, request_id };
            return invoke_api::invoke_with_response_stream(app, caller, request).await;
        }
        Operation::PutFunctionConcurrency(name) => control::put_concurrency(app, caller, &name, &body).await,
        Operation::GetFunctionConcurrency(name) => control::get_concurrency(app, caller, &name),
        Operation::DeleteFunctionConcurrency(name) => control::delete_concurrency(app, caller, &name).await,
        Operation::PublishVersion(name) => versions::publish_version(app, caller, &name, &body).await,
        Operation::PublishLayerVersion(name) => layers_api::publish_layer_version(app, caller, &name, &body).await,
        Operation::ListLayers => layers_api::list_layers(app, caller, query),
        Operation::ListLayerVersions(name) => layers_api::list_layer_versions(app, caller, &name, query),
        Operation::GetLayerVersion(name, n) => layers_api::get_layer_version(app, caller, &name, &n),
        Operation::DeleteLayerVersion(name, n) => layers_api::delete_layer_version(app, caller, &name, &n).await,
        Operation::GetLayerVersionByArn => layers_api::get_layer_version_by_arn(app, caller, query),
        Operation::ListVersionsByFunction(name) => versions::list_versions(app, caller, &name, query),
        Operation::CreateAlias(name) => versions::create_alias(app, caller, &name, &body).await,
        Operation::ListAliases(name) => versions::list_aliases(app, caller, &name, query),
        Operation::GetAlias(name, alias) => versions::get_alias(app, caller, &name, &alias),
        Operation::UpdateAlias(name, alias) => versions::update_alias(app, caller, &name, &alias, &body).await,
        Operation::DeleteAlias(name, alias) => versions::delete_alias(app, caller, &name, &alias).await,
        Operation::AddPermission(name) => policy_api::add_permission(app, caller, &name, query, &body).await,
        Operation::GetPolicy(name) => policy_api::get_policy(app, caller, &name, query),
        Operation::RemovePermission(name, sid) => policy_api::remove_permission(app, caller, &name, &sid, query).await,
        Operation::PutProvisionedConcurrencyConfig(name) => provisioned::put(app, caller, &name, query, &body).await,
        Operation::GetProvisionedConcurrencyConfig(name) => provisioned::get(app, caller, &name, query).await,
        Operation::DeleteProvisionedConcurrencyConfig(name) => provisioned::delete(app, caller, &name, query).await,
        Operation::ListProvisionedConcurrencyConfigs(name) => provisioned::list(app, caller, &name, query).await,
        Operation::PutFunctionEventInvokeConfig(name) => event_config::put(app, caller, &name, query, &body, true).await,
        Operation::UpdateFunctionEventInvokeConfig(name) => event_config::put(app, caller, &name, query, &body, false).await,
        Operation::GetFunctionEventInvokeConfig(name) => event_config::get(app, caller, &name, query),
        Operation::DeleteFunctionEventInvokeConfig(name) => event_config::delete(app, caller, &name, query).await,
        Operation::ListFunctionEventInvokeConfigs(name) => event_config::list(app, caller, &name, query),
        Operation::PutFunctionRecursionConfig(name) => recursion_api::put(app, caller, &name, &body).await,
        Operation::GetFunctionRecursionConfig(name) => recursion_api::get(app, caller, &name),
        Operation::CreateFunctionUrlConfig(name) => url_api::create(app, caller, &name, query, &body).await,
        Operation::GetFunctionUrlConfig(name) => url_api::get(app, caller, &name, query),
        Operation::UpdateFunctionUrlConfig(name) => url_api::update(app, caller, &name, query, &body).await,
        Operation::DeleteFunctionUrlConfig(name) => url_api::delete(app, caller, &name, query).await,
        Operation::ListFunctionUrlConfigs(name) => url_api::list(app, caller, &name, query),
        Operation::TagResource(arn) => tags_api::tag_resource(app, caller, &arn, &body).await,
        Operation::UntagResource(arn) => tags_api::untag_resource(app, caller, &arn, query).await,
        Operation::ListTags(arn) => tags_api::list_tags(app, caller, &arn),
        Operation::Logs(action) => logs_api::handle(app, caller, action, &body).await,
        Operation::CreateAccount => accounts_api::create_account(app, caller, &body).await,
        Operation::ListAccounts => accounts_api::list_accounts(app, caller).await,
        Operation::PutRuntime(name) => runtimes_api::put_runtime(app, caller, &name, &body).await,
        Operation::ListRuntimes => runtimes_api::list_runtimes(app).await,
        Operation::PutNetwork(name) => networks_api::put_network(app, caller, &name, &body).await,
        Operation::ListNetworks => networks_api::list_networks(app, caller),
        Operation::DeleteNetwork(name) => networks_api::delete_network(app, caller, &name).await,
        Operation::Sqs(_)
        | Operation::CreateEventSourceMapping
        | Operation::ListEventSourceMappings
        | Operation::GetEventSourceMapping(_)
        | Operation::UpdateEventSourceMapping(_)
        | Operation::DeleteEventSourceMapping(_) => unreachable!("answered above"),
        Operation::RegisterWorker => cluster_api::register(app, caller, &body).await,
        Operation::Heartbeat(id) => cluster_api::heartbeat(app, caller, &id).await,
        Operation::ListWorkers => cluster_api::list(app, caller),
        Operation::GetCode(sha) => cluster_api::code(app, caller, &sha).await,
        Operation::RunForwarded(account, function, revision) => {
            cluster_api::run_forwarded(app, caller, (&account, &function, &revision), &body).await
        }
        Operation::DescribePartition => cluster_api::describe_partition(app, caller, query),
        Operation::RunQueueRequest => cluster_api::run_queue_request(app, caller, &body).await,
        Operation::RunQueuePoll => cluster_api::run_queue_poll(app, caller, &body).await,
        Operation::DescribeQueueHome => cluster_api::describe_queue_home(app, caller),
        Operation::RunLogRequest => cluster_api::run_log_request(app, caller, &body).await,
        Operation::GetAllocation(account, function, revision) => cluster_api::allocation(app, caller, account, function, revision),
        Operation::GetImage(account, digest) => cluster_api::image(app, caller, &account, &digest, query).await,
        Operation::GetChunk(root, digest) => cluster_api::chunk(app, caller, &root, &digest).await,
        Operation::CollectImages => cluster_api::collect_images(app, caller, query).await,
        Operation::PutLogs => cluster_api::logs(app, caller, &body).await,
        Operation::ListActivity => console_api::list_activity(app, caller).await,
        Operation::GetActivity(name) => console_api::get_activity(app, caller, &name).await,
        Operation::GetActivityHere(account, name) => console_api::activity_here(app, caller, &account, name.as_deref()),
    };
    answer.map(whole)
}

/// Answers a request for the queues (an SQS action or an event source mapping call) on this front end, which
/// serves them.
pub(crate) async fn queue_operation(
    app: &Arc<App>,
    caller: &Caller,
    operation: Operation,
    host: &str,
    query: &str,
    body: &Bytes,
) -> Result<Answer, ApiError> {
    match operation {
        Operation::Sqs(action) => sqs_api::handle(app, caller, action, host, body).await,
        Operation::CreateEventSourceMapping => mappings_api::create(app, caller, body).await,
        Operation::ListEventSourceMappings => mappings_api::list(app, caller, query),
        Operation::GetEventSourceMapping(uuid) => mappings_api::get(app, caller, &uuid),
        Operation::UpdateEventSourceMapping(uuid) => mappings_api::update(app, caller, &uuid, body).await,
        Operation::DeleteEventSourceMapping(uuid) => mappings_api::delete(app, caller, &uuid).await,
        other => Err(ApiError::Validation(format!("{} is not a request for the queues", other.name()))),
    }
}

/// Checks the request's head (see the module docs) with the secret of the
/// access key it names (from the in-memory key map), and answers whom that
/// key acts for, once [`ignis_sigv4::HeadChecked::finish`] accepts the body.
pub(crate) fn authenticate_head(
    app: &App,
    parts: &http::request::Parts,
    service: &str,
) -> Result<(ignis_sigv4::HeadChecked, Caller), ApiError> {
    let headers: Vec<(&str, &str)> =
        parts.headers.iter().filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?))).collect();
    let request = ignis_sigv4::RequestHead {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &headers,
    };
    let now = app.config.clock.now();
    let token = security_token(parts)?;
    // A session's secret comes from its token; what its check found is kept for the caller, or the error.
    let session = std::cell::RefCell::new(None);
    let secret_for = |key: &str| {
        if token.is_none() && !key.starts_with(SESSION_KEY_PREFIX) {
            return app.secret_for(key);
        }
        let checked = app.sessions.verify(key, token.unwrap_or(""), now);
        let secret = checked.as_ref().ok().map(|s| s.secret_access_key.clone());
        *session.borrow_mut() = Some(checked);
        secret
    };
    let head = ignis_sigv4::verify_head(&request, secret_for, now).map_err(|e| match session.borrow_mut().take() {
        Some(Err(refused)) => ApiError::from(refused),
        _ => ApiError::from(e),
    })?;
    if head.claimed().service != service {
        return Err(ApiError::Auth {
            error_type: "InvalidSignatureException",
            message: format!("Credential should be scoped to correct service: '{service}'. "),
        });
    }
    let caller = match session.into_inner() {
        Some(Ok(session)) => {
            let claims = session.claims;
            Caller { account: claims.account, admin: false, session: Some(claims.function) }
        }
        _ => app.caller_for(&head.claimed().access_key_id).ok_or(ApiError::SecurityToken { expired: false })?,
    };
    if caller.session.is_some() && service == "ignis" {
        return Err(ApiError::AccessDenied(
            "A function's session credentials may not call Ignis's own API (accounts, runtimes, workers).".into(),
        ));
    }
    Ok((head, caller))
}

/// Access key ids of session credentials begin so (as AWS's temporary ones).
const SESSION_KEY_PREFIX: &str = "ASIA";

/// The request's `X-Amz-Security-Token`: the header, else the query parameter; at most one.
fn security_token(parts: &http::request::Parts) -> Result<Option<&str>, ApiError> {
    let mut headers = parts.headers.get_all("x-amz-security-token").iter();
    let header = match (headers.next(), headers.next()) {
        (Some(_), Some(_)) => return Err(ApiError::SecurityToken { expired: false }),
        (Some(value), None) => Some(value.to_str().map_err(|_| ApiError::SecurityToken { expired: false })?),
        (None, _) => None,
    };
    let query = parts.uri.query().unwrap_or("");
    let in_query = query.split('&').find_map(|pair| pair.strip_prefix("X-Amz-Security-Token="));
    match (header, in_query) {
        (Some(_), Some(_)) => Err(ApiError::SecurityToken { expired: false }),
        (Some(token), None) | (None, Some(token)) => Ok(Some(token)),
        (None, None) => Ok(None),
    }
}

/// Reads a body of at most `limit` bytes into one buffer.
pub(crate) async fn read_body(body: TimedBody, limit: usize, too_large: ApiError) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large),
        Err(e) if is_body_timeout(e.as_ref()) => Err(ApiError::RequestTimeout(e.to_string())),
        Err(e) => Err(ApiError::InvalidRequestContent(format!("could not read the request body: {e}"))),
    }
}

pub fn json_answer(status: StatusCode, body: serde_json::Value) -> Answer {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub fn empty_answer(status: StatusCode) -> Answer {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(method: Method, path: &str, expected: Option<Operation>) {
        let got = route(&method, path, "", &HeaderMap::new()).ok();
        assert_eq!(got, expected, "{method} {path}");
    }

    #[test]
    fn routes() {
        use Operation::*;
        check(Method::GET, "/healthz", Some(Health));
        check(Method::POST, "/2015-03-31/functions", Some(CreateFunction));
        check(Method::POST, "/2015-03-31/functions/", Some(CreateFunction));
        check(Method::GET, "/2015-03-31/functions/", Some(ListFunctions));
        check(Method::GET, "/2016-08-19/account-settings/", Some(GetAccountSettings));
        check(Method::GET, "/2016-08-19/account-settings", Some(GetAccountSettings));
        check(Method::GET, "/2015-03-31/functions/f", Some(GetFunction("f".into())));
        check(
            Method::GET,
            "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Af",
            Some(GetFunction("arn:aws:lambda:us-east-1:123456789012:function:f".into())),
        );
        check(Method::DELETE, "/2015-03-31/functions/f", Some(DeleteFunction("f".into())));
        check(Method::PUT, "/2015-03-31/functions/f/code", Some(UpdateFunctionCode("f".into())));
        check(Method::PUT, "/2015-03-31/functions/f/configuration", Some(UpdateFunctionConfiguration("f".into())));
        check(Method::GET, "/2015-03-31/functions/f/configuration", Some(GetFunctionConfiguration("f".into())));
        check(Method::POST, "/2015-03-31/functions/f/invocations", Some(Invoke("f".into())));
        check(Method::GET, "/2015-03-31/functions/f/invocations", None);
        check(
            Method::POST,
            "/2021-11-15/functions/f/response-streaming-invocations",
            Some(InvokeWithResponseStream("f".into())),
        );
        check(Method::GET, "/2021-11-15/functions/f/response-streaming-invocations", None);
        check(Method::POST, "/2015-03-31/functions/f/response-streaming-invocations", None);
        check(Method::POST, "/2015-03-31/functions/f/versions", Some(PublishVersion("f".into())));
        check(Method::GET, "/2015-03-31/functions/f/versions", Some(ListVersionsByFunction("f".into())));
        check(Method::POST, "/2015-03-31/functions/f/aliases", Some(CreateAlias("f".into())));
        check(Method::GET, "/2015-03-31/functions/f/aliases", Some(ListAliases("f".into())));
        check(Method::GET, "/2015-03-31/functions/f/aliases/prod", Some(GetAlias("f".into(), "prod".into())));
        check(Method::PUT, "/2015-03-31/functions/f/aliases/prod", Some(UpdateAlias("f".into(), "prod".into())));
        check(Method::DELETE, "/2015-03-31/functions/f/aliases/prod", Some(DeleteAlias("f".into(), "prod".into())));
        check(Method::POST, "/2015-03-31/functions/f/aliases/prod", None);
        check(Method::POST, "/2015-03-31/functions/f/policy", Some(AddPermission("f".into())));
        check(Method::GET, "/2015-03-31/functions/f/policy", Some(GetPolicy("f".into())));
        check(Method::DELETE, "/2015-03-31/functions/f/policy/s-1", Some(RemovePermission("f".into(), "s-1".into())));
        check(Method::DELETE, "/2015-03-31/functions/f/policy", None);
        check(Method::PUT, "/2015-03-31/functions/f/policy", None);
        check(Method::PUT, "/2017-10-31/functions/f/concurrency", Some(PutFunctionConcurrency("f".into())));
        check(Method::GET, "/2019-09-30/functions/f/concurrency", Some(GetFunctionConcurrency("f".into())));
        check(Method::DELETE, "/2017-10-31/functions/f/concurrency", Some(DeleteFunctionConcurrency("f".into())));
        check(Method::GET, "/2017-10-31/functions/f/concurrency", None);
        check(Method::PUT, "/2019-09-30/functions/f/provisioned-concurrency", Some(PutProvisionedConcurrencyConfig("f".into())));
        check(Method::DELETE, "/2019-09-30/functions/f/provisioned-concurrency", Some(DeleteProvisionedConcurrencyConfig("f".into())));
        check(Method::PUT, "/2019-09-25/functions/f/event-invoke-config", Some(PutFunctionEventInvokeConfig("f".into())));
        check(Method::POST, "/2019-09-25/functions/f/event-invoke-config", Some(UpdateFunctionEventInvokeConfig("f".into())));
        check(Method::GET, "/2019-09-25/functions/f/event-invoke-config", Some(GetFunctionEventInvokeConfig("f".into())));
        check(Method::DELETE, "/2019-09-25/functions/f/event-invoke-config", Some(DeleteFunctionEventInvokeConfig("f".into())));
        check(Method::GET, "/2019-09-25/functions/f/event-invoke-config/list", Some(ListFunctionEventInvokeConfigs("f".into())));
        check(Method::POST, "/2015-03-31/event-source-mappings/", Some(CreateEventSourceMapping));
        check(Method::GET, "/2015-03-31/event-source-mappings/", Some(ListEventSourceMappings));
        check(Method::GET, "/2015-03-31/event-source-mappings/u-1", Some(GetEventSourceMapping("u-1".into())));
        check(Method::PUT, "/2015-03-31/event-source-mappings/u-1", Some(UpdateEventSourceMapping("u-1".into())));
        check(Method::DELETE, "/2015-03-31/event-source-mappings/u-1", Some(DeleteEventSourceMapping("u-1".into())));
        check(Method::POST, "/2015-03-31/event-source-mappings/u-1", None);
        let arn = "arn:aws:lambda:us-east-1:123456789012:function:f";
        let encoded = "/2017-03-31/tags/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Af";
        check(Method::POST, encoded, Some(TagResource(arn.into())));
        check(Method::DELETE, encoded, Some(UntagResource(arn.into())));
        check(Method::GET, encoded, Some(ListTags(arn.into())));
        check(Method::GET, &format!("/2017-03-31/tags/{arn}"), Some(ListTags(arn.into())));
        check(Method::PUT, encoded, None);
        check(Method::GET, "/ignis/code-download/111111111111/ab12", Some(DownloadCode("111111111111".into(), "ab12".into())));
        check(Method::POST, "/ignis/code-download/111111111111/ab12", None);
        check(Method::POST, "/ignis/accounts", Some(CreateAccount));
        check(Method::GET, "/ignis/accounts", Some(ListAccounts));
        check(Method::PUT, "/ignis/runtimes/python3.11", Some(PutRuntime("python3.11".into())));
        check(Method::GET, "/ignis/runtimes", Some(ListRuntimes));
        check(Method::PUT, "/ignis/networks/db-net", Some(PutNetwork("db-net".into())));
        check(Method::GET, "/ignis/networks", Some(ListNetworks));
        check(Method::DELETE, "/ignis/networks/db-net", Some(DeleteNetwork("db-net".into())));
        check(Method::POST, "/ignis/networks/db-net", None);
        check(Method::DELETE, "/ignis/networks", None);
        check(Method::DELETE, "/ignis/accounts", None);
        check(Method::POST, "/ignis/workers", Some(RegisterWorker));
        check(Method::GET, "/ignis/workers", Some(ListWorkers));
        check(Method::POST, "/ignis/workers/3/heartbeat", Some(Heartbeat("3".into())));
        check(Method::GET, "/ignis/code/ab12", Some(GetCode("ab12".into())));
        check(Method::POST, "/ignis/logs", Some(PutLogs));
        check(Method::POST, "/ignis/queue-requests", Some(RunQueueRequest));
        check(Method::GET, "/ignis/queue-requests", None);
        check(Method::GET, "/ignis/queue-home", Some(DescribeQueueHome));
        check(Method::POST, "/ignis/log-requests", Some(RunLogRequest));
        check(Method::GET, "/ignis/log-requests", None);
        check(Method::GET, "/ignis/allocations/1/f/r", Some(GetAllocation("1".into(), "f".into(), "r".into())));
        check(Method::GET, "/ignis/allocations/1/f", None);
        check(Method::GET, "/ignis/activity", Some(ListActivity));
        check(Method::GET, "/ignis/activity/my%20fn", Some(GetActivity("my fn".into())));
        check(Method::GET, "/ignis/activity-of/1", Some(GetActivityHere("1".into(), None)));
        check(Method::GET, "/ignis/activity-of/1/f", Some(GetActivityHere("1".into(), Some("f".into()))));
        check(Method::POST, "/ignis/activity", None);
        check(Method::GET, "/console", Some(Console(console_api::Asset::Root)));
        check(Method::GET, "/console/", Some(Console(console_api::Asset::Index)));
        check(Method::GET, "/console/console.js", Some(Console(console_api::Asset::Script)));
        check(Method::GET, "/console/../ignis/accounts", None);
        check(Method::GET, "/console/nothing.js", None);
        check(Method::POST, "/console/", None);
        check(Method::POST, "/", None);
        check(Method::GET, "/v2/", Some(Oci(oci_api::OciRequest::Base)));
        check(Method::PUT, "/v2/a/b/manifests/v1", Some(Oci(oci_api::OciRequest::PutManifest("a/b".into(), "v1".into()))));
        check(Method::GET, "/2015-03-31/functions/%zz", None);
        let path = "/2019-09-30/functions/f/provisioned-concurrency";
        assert_eq!(route(&Method::GET, path, "List=ALL", &HeaderMap::new()), Ok(ListProvisionedConcurrencyConfigs("f".into())));
        assert_eq!(route(&Method::GET, path, "Qualifier=1", &HeaderMap::new()), Ok(GetProvisionedConcurrencyConfig("f".into())));
    }

    fn check_target(target: &str, expected: Result<Operation, ApiError>) {
        let mut headers = HeaderMap::new();
        headers.insert("x-amz-target", HeaderValue::from_str(target).unwrap());
        assert_eq!(route(&Method::POST, "/", "", &headers), expected, "{target}");
    }

    #[test]
    fn targets() {
        let sqs = [
            "CreateQueue",
            "GetQueueUrl",
            "ListQueues",
            "ListDeadLetterSourceQueues",
            "DeleteQueue",
            "GetQueueAttributes",
            "SetQueueAttributes",
            "PurgeQueue",
            "SendMessage",
            "SendMessageBatch",
            "ReceiveMessage",
            "DeleteMessage",
            "DeleteMessageBatch",
            "ChangeMessageVisibility",
            "ChangeMessageVisibilityBatch",
        ];
        assert_eq!(SqsAction::ALL.iter().map(|a| a.name()).collect::<Vec<_>>(), sqs);
        for action in SqsAction::ALL {
            check_target(&format!("AmazonSQS.{}", action.name()), Ok(Operation::Sqs(*action)));
            assert_eq!(Operation::Sqs(*action).service(), "sqs");
            assert_eq!(Operation::Sqs(*action).body_limit().0, sqs_api::MAX_REQUEST);
        }
        let logs = [
            "FilterLogEvents",
            "GetLogEvents",
            "DescribeLogGroups",
            "DescribeLogStreams",
            "PutRetentionPolicy",
            "DeleteRetentionPolicy",
            "DeleteLogGroup",
        ];
        assert_eq!(LogsAction::ALL.iter().map(|a| a.name()).collect::<Vec<_>>(), logs);
        for action in LogsAction::ALL {
            check_target(&format!("Logs_20140328.{}", action.name()), Ok(Operation::Logs(*action)));
            assert_eq!(Operation::Logs(*action).service(), "logs");
        }
        // Unknown actions: the error each API gives for an operation it lacks.
        let unsupported = |action: &str| {
            ApiError::from(ignis_queues::QueueError::Unsupported(format!("Ignis does not implement the SQS operation {action}.")))
        };
        check_target("AmazonSQS.TagQueue", Err(unsupported("TagQueue")));
        check_target("AmazonSQS.", Err(unsupported("")));
        check_target("AmazonSQS.sendmessage", Err(unsupported("sendmessage")));
        check_target(
            "Logs_20140328.PutLogEvents",
            Err(ApiError::UnknownOperation("Ignis does not implement the CloudWatch Logs operation PutLogEvents".into())),
        );
        check_target("Lambda.Invoke", Err(ApiError::UnknownOperation("Unknown operation \"Lambda.Invoke\"".into())));
        let mut headers = HeaderMap::new();
        headers.insert("x-amz-target", HeaderValue::from_static("AmazonSQS.SendMessage"));
        assert!(route(&Method::GET, "/", "", &headers).is_err(), "SQS is POST only");
    }

    #[test]
    fn query_decoding() {
        assert_eq!(
            query_params("Qualifier=%24LATEST&MaxItems=5&flag"),
            vec![("Qualifier".into(), "$LATEST".into()), ("MaxItems".into(), "5".into()), ("flag".into(), String::new())]
        );
    }
}
