//! Every error the API answers with, and the one place that turns them into
//! Lambda's wire errors: an HTTP status, an `x-amzn-ErrorType` header and a
//! JSON body with `Type` and `message` (REST APIs) or `__type` and `message`
//! (JSON-protocol APIs such as CloudWatch Logs), and SQS's query-compatible
//! JSON errors (`__type` and `x-amzn-query-error`), and the OCI distribution
//! API's errors (`{"errors":[{"code","message","detail"}]}`).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

use ignis_queues::QueueError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// A request that breaks the API's model: lengths, patterns, ranges, enums.
    Validation(String),
    InvalidParameterValue(String),
    /// CloudWatch Logs' form of a bad parameter.
    InvalidParameter(String),
    /// A `RevisionId` that is not the current one.
    PreconditionFailed(String),
    /// A resource-based policy that would grow over its limit.
    PolicyLengthExceeded(String),
    /// The body is not JSON, or not of the expected shape.
    InvalidRequestContent(String),
    ResourceNotFound(String),
    ResourceConflict(String),
    /// An invoke payload over the limit.
    RequestTooLarge(String),
    /// A control-plane request body over the limit.
    RequestEntityTooLarge(String),
    /// The caller is authenticated but may not do this (another account's resource,
    /// or an administrator's operation).
    AccessDenied(String),
    /// Authentication failed: the type is SigV4's own (`InvalidSignatureException`, ...).
    Auth { error_type: &'static str, message: String },
    /// Session credentials (`X-Amz-Security-Token`) that are not valid
    /// (`expired: false`: not Ignis's, changed, of another key, of a function
    /// that is gone) or expired: each service's own error.
    SecurityToken { expired: bool },
    /// No operation takes the request: Lambda's `UnknownOperationException` (404), its message naming the operation
    /// asked for where Ignis knows it (`lambda_operations`), else the method and path.
    UnknownOperation(String),
    Service(String),
    /// An invocation throttled by concurrency or the scaling rate.
    TooManyRequests(ignis_counting::Reason),
    /// A request refused for want of room to read it (Lambda's API request
    /// rate throttle, `Reason: CallerRateLimitExceeded`).
    Busy(String),
    /// The client stopped sending the request's body.
    RequestTimeout(String),
    ProvisionedConcurrencyConfigNotFound(String),
    /// An SQS error, in its wire form (see [`SqsError`]).
    Sqs(SqsError),
    /// An OCI distribution API error: its status, its spec code
    /// (`NAME_UNKNOWN`, `DENIED`, ...) and a message. `UNAUTHORIZED` answers
    /// carry the Basic challenge.
    Registry { status: StatusCode, code: &'static str, message: String },
}

/// An SQS error as the wire gives it: the status, the error shape (`__type`
/// `com.amazonaws.sqs#<shape>`, which picks the SDK's exception class) and
/// the query-protocol code (`x-amzn-query-error: <code>;Sender`, which the
/// SDKs report as the error code, as real SQS does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsError {
    status: StatusCode,
    shape: &'static str,
    code: &'static str,
    message: String,
}

/// Status, shape and query code of each queue error.
fn sqs_wire(e: &QueueError) -> (StatusCode, &'static str, &'static str) {
    use QueueError::*;
    const BAD: StatusCode = StatusCode::BAD_REQUEST;
    match e {
        DoesNotExist => (BAD, "QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue"),
        NameExists(_) => (BAD, "QueueNameExists", "QueueAlreadyExists"),
        InvalidParameterValue(_) => (BAD, "InvalidParameterValue", "InvalidParameterValue"),
        MissingParameter(_) => (BAD, "MissingParameter", "MissingParameter"),
        InvalidAttributeName(_) => (BAD, "InvalidAttributeName", "InvalidAttributeName"),
        InvalidAttributeValue(_) => (BAD, "InvalidAttributeValue", "InvalidAttributeValue"),
        Send(e) => (BAD, e.code(), e.code()),
        ReceiptHandleIsInvalid(_) => (StatusCode::NOT_FOUND, "ReceiptHandleIsInvalid", "ReceiptHandleIsInvalid"),
        MessageNotInflight => (BAD, "MessageNotInflight", "AWS.SimpleQueueService.MessageNotInflight"),
        Unsupported(_) => (BAD, "UnsupportedOperation", "AWS.SimpleQueueService.UnsupportedOperation"),
        EmptyBatch => (BAD, "EmptyBatchRequest", "AWS.SimpleQueueService.EmptyBatchRequest"),
        TooManyEntries(_) => (BAD, "TooManyEntriesInBatchRequest", "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"),
        IdsNotDistinct(_) => (BAD, "BatchEntryIdsNotDistinct", "AWS.SimpleQueueService.BatchEntryIdsNotDistinct"),
        InvalidBatchEntryId(_) => (BAD, "InvalidBatchEntryId", "AWS.SimpleQueueService.InvalidBatchEntryId"),
        BatchTooLong { .. } => (BAD, "BatchRequestTooLong", "AWS.SimpleQueueService.BatchRequestTooLong"),
        Storage(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "InternalError"),
        Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", "ServiceUnavailable"),
    }
}

/// The `Code` and `SenderFault` of a failed batch entry.
pub fn sqs_batch_code(e: &QueueError) -> (&'static str, bool) {
    let (status, _, code) = sqs_wire(e);
    (code, !status.is_server_error())
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        let (status, shape, code) = sqs_wire(&e);
        ApiError::Sqs(SqsError { status, shape, code, message: e.to_string() })
    }
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &str, &str) {
        use ApiError::*;
        match self {
            Validation(m) => (StatusCode::BAD_REQUEST, "ValidationException", m),
            InvalidParameterValue(m) => (StatusCode::BAD_REQUEST, "InvalidParameterValueException", m),
            InvalidParameter(m) => (StatusCode::BAD_REQUEST, "InvalidParameterException", m),
            PreconditionFailed(m) => (StatusCode::PRECONDITION_FAILED, "PreconditionFailedException", m),
            PolicyLengthExceeded(m) => (StatusCode::BAD_REQUEST, "PolicyLengthExceededException", m),
            InvalidRequestContent(m) => (StatusCode::BAD_REQUEST, "InvalidRequestContentException", m),
            ResourceNotFound(m) => (StatusCode::NOT_FOUND, "ResourceNotFoundException", m),
            ResourceConflict(m) => (StatusCode::CONFLICT, "ResourceConflictException", m),
            RequestTooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, "RequestTooLargeException", m),
            RequestEntityTooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLargeException", m),
            AccessDenied(m) => (StatusCode::FORBIDDEN, "AccessDeniedException", m),
            Auth { error_type, message } => (StatusCode::FORBIDDEN, error_type, message),
            SecurityToken { expired: false } => (StatusCode::FORBIDDEN, "UnrecognizedClientException", INVALID_TOKEN),
            SecurityToken { expired: true } => (StatusCode::FORBIDDEN, "ExpiredTokenException", EXPIRED_TOKEN),
            UnknownOperation(m) => (StatusCode::NOT_FOUND, "UnknownOperationException", m),
            Service(m) => (StatusCode::INTERNAL_SERVER_ERROR, "ServiceException", m),
            TooManyRequests(_) => (StatusCode::TOO_MANY_REQUESTS, "TooManyRequestsException", "Rate Exceeded."),
            Busy(m) => (StatusCode::TOO_MANY_REQUESTS, "TooManyRequestsException", m),
            RequestTimeout(m) => (StatusCode::REQUEST_TIMEOUT, "RequestTimeoutException", m),
            ProvisionedConcurrencyConfigNotFound(m) => (StatusCode::NOT_FOUND, "ProvisionedConcurrencyConfigNotFoundException", m),
            Sqs(e) => (e.status, e.shape, &e.message),
            Registry { status, code, message } => (*status, code, message),
        }
    }

    pub fn error_type(&self) -> &str {
        self.parts().1
    }

    pub fn message(&self) -> &str {
        self.parts().2
    }

    /// A REST-JSON error answer, as the Lambda API gives.
    pub fn to_rest_response(&self) -> Response<Full<Bytes>> {
        let (status, error_type, message) = self.parts();
        let kind = if status.is_server_error() { "Service" } else { "User" };
        let mut body = serde_json::json!({ "Type": kind, "message": message });
        match self {
            ApiError::TooManyRequests(reason) => body["Reason"] = serde_json::json!(reason.as_str()),
            ApiError::Busy(_) => body["Reason"] = serde_json::json!("CallerRateLimitExceeded"),
            _ => {}
        }
        response(status, error_type, body)
    }

    /// A JSON-1.1-protocol error answer, as CloudWatch Logs gives.
    pub fn to_json_protocol_response(&self) -> Response<Full<Bytes>> {
        let (status, error_type, message) = self.parts();
        let status = if status == StatusCode::NOT_FOUND || status == StatusCode::CONFLICT {
            StatusCode::BAD_REQUEST
        } else {
            status
        };
        let body = serde_json::json!({ "__type": error_type, "message": message });
        response(status, error_type, body)
    }
}

impl ApiError {
    /// An SQS answer (JSON 1.0, query-compatible): `__type` is the error's
    /// shape, `x-amzn-query-error` its SQS code and fault. Errors that are not
    /// SQS's own (authentication, unknown operation) keep their type.
    pub fn to_sqs_response(&self) -> Response<Full<Bytes>> {
        let token;
        let e = match self {
            ApiError::Sqs(e) => e,
            ApiError::SecurityToken { expired } => {
                let (shape, message) = if *expired { ("ExpiredToken", EXPIRED_TOKEN) } else { ("InvalidClientTokenId", INVALID_TOKEN) };
                token = SqsError { status: StatusCode::FORBIDDEN, shape, code: shape, message: message.into() };
                &token
            }
            _ => return self.to_json_protocol_response(),
        };
        let body = serde_json::json!({ "__type": format!("com.amazonaws.sqs#{}", e.shape), "message": e.message });
        let mut answer = response(e.status, e.shape, body);
        let fault = if e.status.is_server_error() { "Receiver" } else { "Sender" };
        let headers = answer.headers_mut();
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/x-amz-json-1.0"));
        if let Ok(value) = HeaderValue::from_str(&format!("{};{fault}", e.code)) {
            headers.insert("x-amzn-query-error", value);
        }
        answer
    }
}

/// The header every answer of the OCI distribution API carries.
pub const REGISTRY_VERSION: (&str, &str) = ("docker-distribution-api-version", "registry/2.0");

impl ApiError {
    /// An OCI distribution API answer: `{"errors":[{"code","message","detail"}]}`.
    /// Errors that are not the registry's own (a body read too slowly, the
    /// service's fault, ...) get the code nearest their status.
    pub fn to_registry_response(&self) -> Response<Full<Bytes>> {
        let (status, code, message) = match self {
            ApiError::Registry { status, code, message } => (*status, *code, message.as_str()),
            other => {
                let (status, _, message) = other.parts();
                let code = match status {
                    StatusCode::UNAUTHORIZED => "UNAUTHORIZED",
                    StatusCode::FORBIDDEN => "DENIED",
                    StatusCode::NOT_FOUND => "NAME_UNKNOWN",
                    StatusCode::TOO_MANY_REQUESTS => "TOOMANYREQUESTS",
                    StatusCode::PAYLOAD_TOO_LARGE => "SIZE_INVALID",
                    StatusCode::METHOD_NOT_ALLOWED => "UNSUPPORTED",
                    _ => "UNKNOWN",
                };
                (status, code, message)
            }
        };
        let body = serde_json::json!({ "errors": [{ "code": code, "message": message, "detail": null }] });
        let mut answer = Response::new(Full::new(Bytes::from(body.to_string())));
        *answer.status_mut() = status;
        let headers = answer.headers_mut();
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(REGISTRY_VERSION.0, HeaderValue::from_static(REGISTRY_VERSION.1));
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"ignis\""));
        }
        answer
    }

    /// The registry's `UNAUTHORIZED`: no credentials, or wrong ones.
    pub fn registry_unauthorized(message: &str) -> ApiError {
        ApiError::Registry { status: StatusCode::UNAUTHORIZED, code: "UNAUTHORIZED", message: message.into() }
    }
}

/// The registry's errors, with the distribution spec's codes and statuses.
impl From<ignis_oci::OciError> for ApiError {
    fn from(e: ignis_oci::OciError) -> Self {
        use ignis_oci::OciError::*;
        let (status, code) = match &e {
            NameInvalid(_) => (StatusCode::BAD_REQUEST, "NAME_INVALID"),
            NameUnknown(_) => (StatusCode::NOT_FOUND, "NAME_UNKNOWN"),
            Denied(_) => (StatusCode::FORBIDDEN, "DENIED"),
            DigestInvalid(_) => (StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
            BlobUnknown(_) => (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"),
            UploadUnknown(_) => (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN"),
            UploadInvalid(_) => (StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID"),
            RangeInvalid(_) => (StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID"),
            ManifestInvalid(_) => (StatusCode::BAD_REQUEST, "MANIFEST_INVALID"),
            ManifestUnknown(_) => (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
            ManifestBlobUnknown(_) => (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN"),
            SizeInvalid(_) => (StatusCode::BAD_REQUEST, "SIZE_INVALID"),
            TooManyRequests(_) => (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS"),
            ImageUnsupported(_) | Architecture { .. } => (StatusCode::BAD_REQUEST, "MANIFEST_INVALID"),
            Io(_) | Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
            // The cluster's storage: clients try a 503 again.
            Shared(_) => (StatusCode::SERVICE_UNAVAILABLE, "UNKNOWN"),
        };
        ApiError::Registry { status, code, message: e.to_string() }
    }
}

impl ApiError {
    /// Lambda's refusal of an `ImageUri` that names no image.
    pub fn invalid_source_image(uri: &str) -> ApiError {
        ApiError::InvalidParameterValue(format!("Source image {uri} is not valid. Provide a valid source image."))
    }

    /// A registry error met resolving the function image `uri` (the caller's
    /// own repositories only: another account's is one that does not exist).
    pub fn image_source(uri: &str, e: ignis_oci::OciError) -> ApiError {
        use ignis_oci::OciError::*;
        match e {
            NameInvalid(_) | NameUnknown(_) | Denied(_) | ManifestUnknown(_) | BlobUnknown(_) => {
                ApiError::InvalidParameterValue(format!("Source image {uri} does not exist. Provide a valid source image."))
            }
            ImageUnsupported(reason) | ManifestInvalid(reason) => ApiError::InvalidParameterValue(format!(
                "The image manifest, config or layer media type for the source image {uri} is not supported: {reason}"
            )),
            Architecture { os, architecture } => ApiError::InvalidParameterValue(format!(
                "The source image {uri} is built for {os}/{architecture}; this Ignis host runs x86_64 (linux/amd64) images only"
            )),
            other => ApiError::Service(format!("reading the source image {uri}: {other}")),
        }
    }
}

/// An image the preparer refused is the caller's; a failure of its own is the platform's.
impl From<ignis_images::PreparerError> for ApiError {
    fn from(e: ignis_images::PreparerError) -> Self {
        match e {
            ignis_images::PreparerError::Image(reason) => {
                ApiError::InvalidParameterValue(format!("The source image cannot be used: {reason}"))
            }
            internal @ ignis_images::PreparerError::Internal(_) => ApiError::Service(internal.to_string()),
        }
    }
}

fn response(status: StatusCode, error_type: &str, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(value) = HeaderValue::from_str(error_type) {
        headers.insert("x-amzn-errortype", value);
    }
    response
}

impl From<ignis_store::StoreError> for ApiError {
    fn from(e: ignis_store::StoreError) -> Self {
        ApiError::Service(format!("storage: {e}"))
    }
}

/// The log service's errors: a token it did not make is CloudWatch Logs'
/// bad parameter, the rest are the service's fault.
impl From<ignis_logs::LogsError> for ApiError {
    fn from(e: ignis_logs::LogsError) -> Self {
        use ignis_logs::LogsError::*;
        match e {
            InvalidNextToken => ApiError::InvalidParameter("The specified nextToken is invalid.".into()),
            e @ StreamNotFound => ApiError::ResourceNotFound(e.to_string()),
            e @ InvalidRetention(_) => ApiError::InvalidParameter(e.to_string()),
            Storage(e) => e.into(),
            e @ Writer(_) => ApiError::Service(e.to_string()),
        }
    }
}

/// The invoker's errors: a throttle is Lambda's 429 with its `Reason`, a
/// reservation the limits refuse is a bad parameter, the rest are the
/// service's fault (`ServiceException`, with the error's message).
impl From<ignis_invoke::InvokeError> for ApiError {
    fn from(e: ignis_invoke::InvokeError) -> Self {
        use ignis_invoke::InvokeError::*;
        match e {
            Throttled(reason) => ApiError::TooManyRequests(reason),
            e @ StartThrottled(_) => ApiError::Busy(e.to_string()),
            Reservation(e) => ApiError::InvalidParameterValue(e.to_string()),
            e @ (NoHealthyWorker { .. }
            | NoRoom { .. }
            | LostWhileStarting
            | StartFailed(_)
            | KeptFailing
            | WorkerLost(_)
            | ShuttingDown
            | Task(_)
            | Elsewhere(_)) => ApiError::Service(e.to_string()),
        }
    }
}

impl From<ignis_registry::RegistryError> for ApiError {
    fn from(e: ignis_registry::RegistryError) -> Self {
        use ignis_registry::RegistryError::*;
        match e {
            FunctionNotFound { function } => ApiError::ResourceNotFound(format!("Function not found: {function}")),
            VersionNotFound { function, version } => ApiError::ResourceNotFound(format!("Function not found: {function}:{version}")),
            AliasNotFound { function, alias } => ApiError::ResourceNotFound(format!("Alias not found: {function}:{alias}")),
            AccessDenied { caller, action, resource } => {
                crate::Caller { account: caller, admin: false, session: None }.denied(&format!("lambda:{action}"), &resource)
            }
            FunctionExists { name } => ApiError::ResourceConflict(format!("Function already exist: {name}")),
            RevisionMismatch { .. } => ApiError::PreconditionFailed(
                "The Revision Id provided does not match the latest Revision Id. Call the GetFunction/GetAlias API to retrieve the latest Revision Id"
                    .into(),
            ),
            Conflict { .. } => ApiError::ResourceConflict(e.to_string()),
            Storage(message) => ApiError::Service(message),
        }
    }
}

/// The networks' errors: a request's bad name or range breaks the model (`ValidationException`), an IPv6 range is
/// a value Ignis cannot honour, a name another account holds a conflict.
impl From<ignis_registry::NetworkError> for ApiError {
    fn from(e: ignis_registry::NetworkError) -> Self {
        use ignis_registry::NetworkError::*;
        match e {
            Name(_) | NoRange | TooManyRanges(_) | Range(_) => ApiError::Validation(e.to_string()),
            Ipv6(_) => ApiError::InvalidParameterValue(e.to_string()),
            OtherAccount { .. } => ApiError::ResourceConflict(e.to_string()),
            Storage(message) => ApiError::Service(message),
        }
    }
}

/// The accounts service's errors: a name already taken is a conflict, the
/// rest are the service's fault (storage's as `storage: ...`).
impl From<ignis_registry::AccountError> for ApiError {
    fn from(e: ignis_registry::AccountError) -> Self {
        use ignis_registry::AccountError::*;
        match e {
            NameTaken(name) => ApiError::ResourceConflict(format!("Account already exists: {name}")),
            Storage(e) => e.into(),
            e @ (KeyInUse(_) | Task(_) | Unavailable(_)) => ApiError::Service(e.to_string()),
        }
    }
}

/// The pollers' errors: an event that could not be stored is the service's
/// fault; a mapping's refusals are Lambda's own errors for them.
impl From<ignis_pollers::PollersError> for ApiError {
    fn from(e: ignis_pollers::PollersError) -> Self {
        ApiError::Service(e.to_string())
    }
}

impl From<ignis_pollers::MappingError> for ApiError {
    fn from(e: ignis_pollers::MappingError) -> Self {
        use ignis_pollers::MappingError::*;
        match e {
            NotFound => ApiError::ResourceNotFound(e.to_string()),
            Exists { .. } => ApiError::ResourceConflict(e.to_string()),
            Invalid(message) => ApiError::InvalidParameterValue(message),
            Storage(message) => ApiError::Service(message),
        }
    }
}

/// The message of an invalid security token, as AWS's services give it.
const INVALID_TOKEN: &str = "The security token included in the request is invalid.";
/// The message of an expired security token, as AWS's services give it.
const EXPIRED_TOKEN: &str = "The security token included in the request is expired";

/// Every refusal of session credentials is an invalid token, but expiry.
impl From<ignis_registry::SessionError> for ApiError {
    fn from(e: ignis_registry::SessionError) -> Self {
        ApiError::SecurityToken { expired: e == ignis_registry::SessionError::Expired }
    }
}

impl From<ignis_sigv4::AuthError> for ApiError {
    fn from(e: ignis_sigv4::AuthError) -> Self {
        ApiError::Auth { error_type: e.aws_error_type(), message: e.to_string() }
    }
}

impl From<ignis_store::CodeError> for ApiError {
    fn from(e: ignis_store::CodeError) -> Self {
        match e {
            ignis_store::CodeError::Io(e) => ApiError::Service(format!("storing code: {e}")),
            other => ApiError::InvalidParameterValue(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn throttles_carry_lambdas_reason() {
        let answer = ApiError::TooManyRequests(ignis_counting::Reason::ConcurrentInvocationLimitExceeded).to_rest_response();
        assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(answer.headers()["x-amzn-errortype"], "TooManyRequestsException");
        let body = answer.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({ "Type": "User", "message": "Rate Exceeded.", "Reason": "ConcurrentInvocationLimitExceeded" })
        );
    }

    #[tokio::test]
    async fn refused_session_tokens_answer_each_services_own_error() {
        use ignis_registry::SessionError::*;
        let json = |answer: Response<Full<Bytes>>| async move {
            let (parts, body) = answer.into_parts();
            let body: serde_json::Value = serde_json::from_slice(&body.collect().await.unwrap().to_bytes()).unwrap();
            (parts.status, parts.headers, body)
        };
        for (refused, expired) in [(Malformed, false), (Forged, false), (WrongKey, false), (FunctionGone, false), (Expired, true)] {
            let e = ApiError::from(refused);
            let (lambda_type, message, sqs) = if expired {
                ("ExpiredTokenException", EXPIRED_TOKEN, "ExpiredToken")
            } else {
                ("UnrecognizedClientException", INVALID_TOKEN, "InvalidClientTokenId")
            };
            let (status, headers, body) = json(e.to_rest_response()).await;
            assert_eq!((status, &headers["x-amzn-errortype"]), (StatusCode::FORBIDDEN, &HeaderValue::from_static(lambda_type)));
            assert_eq!(body["message"], message);
            let (status, _, body) = json(e.to_json_protocol_response()).await;
            assert_eq!((status, body["__type"].as_str()), (StatusCode::FORBIDDEN, Some(lambda_type)), "CloudWatch Logs");
            let (status, headers, body) = json(e.to_sqs_response()).await;
            assert_eq!(status, StatusCode::FORBIDDEN);
            assert_eq!(body["__type"], format!("com.amazonaws.sqs#{sqs}"));
            assert_eq!(body["message"], message);
            assert_eq!(headers["x-amzn-query-error"], format!("{sqs};Sender").as_str());
        }
    }

    #[test]
    fn invoke_errors_keep_their_wire_form() {
        use ignis_invoke::InvokeError;
        let reason = ignis_counting::Reason::ReservedFunctionConcurrentInvocationLimitExceeded;
        assert_eq!(ApiError::from(InvokeError::Throttled(reason)), ApiError::TooManyRequests(reason));
        let below = ignis_counting::ReservationError::BelowMinimumUnreserved { minimum: 100 };
        assert_eq!(ApiError::from(InvokeError::Reservation(below)), ApiError::InvalidParameterValue(below.to_string()));
        assert_eq!(
            ApiError::from(InvokeError::KeptFailing),
            ApiError::Service("the function's sandboxes kept failing before they could take the event".into())
        );
        assert_eq!(
            ApiError::from(InvokeError::WorkerLost("the worker at h:1 was lost".into())),
            ApiError::Service("the worker at h:1 was lost".into())
        );
        assert_eq!(ApiError::from(InvokeError::ShuttingDown), ApiError::Service("Ignis is shutting down".into()));
    }

    #[test]
    fn account_errors_keep_their_wire_form() {
        use ignis_registry::AccountError;
        assert_eq!(
            ApiError::from(AccountError::NameTaken("alice".into())),
            ApiError::ResourceConflict("Account already exists: alice".into())
        );
        let storage = ignis_store::StoreError::MasterKey("gone".into());
        assert_eq!(ApiError::from(AccountError::Storage(storage)), ApiError::Service("storage: master key: gone".into()));
        assert_eq!(ApiError::from(AccountError::Task("panicked".into())), ApiError::Service("panicked".into()));
    }

    #[tokio::test]
    async fn registry_errors_have_the_distribution_form() {
        let answer = ApiError::from(ignis_oci::OciError::NameUnknown("app".into())).to_registry_response();
        assert_eq!(answer.status(), StatusCode::NOT_FOUND);
        assert_eq!(answer.headers()[REGISTRY_VERSION.0], REGISTRY_VERSION.1);
        let body = answer.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({ "errors": [{ "code": "NAME_UNKNOWN", "message": "repository name not known to registry: app", "detail": null }] })
        );
        let answer = ApiError::registry_unauthorized("authentication required").to_registry_response();
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(answer.headers()[http::header::WWW_AUTHENTICATE], "Basic realm=\"ignis\"");
        let denied = ApiError::from(ignis_oci::OciError::Denied("app".into())).to_registry_response();
        assert_eq!(denied.status(), StatusCode::FORBIDDEN);
        let digest = ApiError::from(ignis_oci::OciError::DigestInvalid("x".into()));
        assert!(matches!(digest, ApiError::Registry { code: "DIGEST_INVALID", .. }));
        let blob = ApiError::from(ignis_oci::OciError::ManifestBlobUnknown("x".into()));
        assert!(matches!(blob, ApiError::Registry { code: "MANIFEST_BLOB_UNKNOWN", .. }));
    }

    #[test]
    fn image_source_errors_are_lambdas() {
        use ignis_oci::OciError;
        let uri = "localhost/app:v1";
        for e in [OciError::NameUnknown("app".into()), OciError::Denied("app".into()), OciError::ManifestUnknown("v1".into())] {
            let err = ApiError::image_source(uri, e);
            assert_eq!(err.error_type(), "InvalidParameterValueException");
            assert_eq!(err.message(), "Source image localhost/app:v1 does not exist. Provide a valid source image.");
        }
        let err = ApiError::image_source(uri, OciError::ImageUnsupported("layer x has media type zstd".into()));
        assert!(err.message().ends_with("is not supported: layer x has media type zstd"), "{}", err.message());
        let err = ApiError::image_source(uri, OciError::Architecture { os: "linux".into(), architecture: "arm64".into() });
        assert!(err.message().contains("linux/arm64") && err.message().contains("x86_64"), "{}", err.message());
        assert_eq!(ApiError::invalid_source_image("app").message(), "Source image app is not valid. Provide a valid source image.");
        let refused = ApiError::from(ignis_images::PreparerError::Image("too big".into()));
        assert_eq!((refused.error_type(), refused.message().ends_with("too big")), ("InvalidParameterValueException", true));
        assert_eq!(ApiError::from(ignis_images::PreparerError::Internal("disk".into())).error_type(), "ServiceException");
    }
}
