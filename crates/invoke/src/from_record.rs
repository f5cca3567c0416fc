//! The one place a registry record becomes what the invoker runs: a
//! [`Target`] (with its [`Revision`]) for a [`FunctionRecord`] of an
//! account, the ARN an invocation carries, and the trace header an
//! invocation that came without one gets. Every caller (the sync API,
//! asynchronous events, mapping pollers, the provisioned-concurrency keeper)
//! builds its target here.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ignis_registry::FunctionRecord;
use ignis_store::Store;

use crate::{Function, Revision, Target};

/// What the invoker runs for `record` in `account`, in `region`; the code
/// tree is `store`'s.
pub fn target(store: &Store, region: &str, account: &str, record: &FunctionRecord) -> Target {
    let function = Function {
        revision: revision(account, record),
        version: record.version_label(),
        memory_mb: record.memory_mb,
        ephemeral_mb: record.ephemeral_mb,
        timeout: Duration::from_secs(record.timeout_s.into()),
        runtime: record.runtime.clone(),
        handler: record.handler.clone(),
        environment: record.environment.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        log_group: record.log_group(),
        code_sha256_hex: record.code_sha256_hex.clone(),
        code_dir: store.code_dir(&record.code_sha256_hex),
        code_hold: record.code.hold().map(|hold| Arc::new(hold.clone()) as Arc<dyn Send + Sync>),
    };
    Target { function: Arc::new(function), region: region.to_string() }
}

/// The revision `record` is in `account`: what its sandboxes are kept (and retired) by.
pub fn revision(account: &str, record: &FunctionRecord) -> Revision {
    Revision { account: ignis_ids::AccountId::new(account), function: record.name.clone(), revision_id: record.revision_id.clone() }
}

/// The ARN `record` was invoked by, with the qualifier it was invoked with.
pub fn invoked_arn(region: &str, account: &str, qualifier: Option<&str>, record: &FunctionRecord) -> String {
    match qualifier {
        Some(q) => format!("{}:{q}", record.arn(region, account)),
        None => record.arn(region, account),
    }
}

/// An X-Ray trace header for an invocation of `request_id` that came without
/// one, made at `now`.
pub fn trace_id(request_id: &str, now: SystemTime) -> String {
    let seconds = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let hex: String = request_id.chars().filter(char::is_ascii_hexdigit).collect();
    format!("Root=1-{seconds:08x}-{};Parent={};Sampled=0", &hex[..24.min(hex.len())], &hex[hex.len().saturating_sub(16)..])
}
