//! The pollers' own errors. Only the front end turns them into wire errors
//! (in its `error.rs`).

/// Why an asynchronous event could not be accepted (or the pollers could
/// not start).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PollersError {
    /// Storage failed; the message says what was being done.
    #[error("{0}")]
    Storage(String),
    /// The event writer has stopped (the server is shutting down).
    #[error("the event writer stopped")]
    WriterStopped,
}

/// Why an event source mapping call was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// No such mapping in the caller's account.
    #[error("The resource you requested does not exist.")]
    NotFound,
    /// The queue and the function (as named) have a mapping already.
    #[error(
        "An event source mapping with SQS arn (\" {queue_arn} \") and function (\" {function_name} \") already exists. Please update or delete the existing mapping with UUID {uuid}"
    )]
    Exists { queue_arn: String, function_name: String, uuid: String },
    /// Values the API's model allows but an SQS mapping cannot take
    /// (batching, or a queue's visibility timeout below the function's timeout).
    #[error("{0}")]
    Invalid(String),
    /// Storage failed; nothing changed.
    #[error("{0}")]
    Storage(String),
}

impl From<ignis_store::StoreError> for PollersError {
    fn from(e: ignis_store::StoreError) -> Self {
        PollersError::Storage(format!("storage: {e}"))
    }
}

impl From<ignis_store::StoreError> for MappingError {
    fn from(e: ignis_store::StoreError) -> Self {
        MappingError::Storage(format!("storage: {e}"))
    }
}
