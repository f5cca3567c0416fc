//! The front end: Lambda's HTTP API (and CloudWatch Logs' reading calls) on
//! one endpoint, authenticated with SigV4, over the registry, the store and
//! the invoke path.
//!
//! - `http`: connections, routing to a closed set of [`http::Operation`]s,
//!   body limits, authentication.
//! - `control`: CreateFunction, GetFunction, ListFunctions, UpdateFunctionCode,
//!   UpdateFunctionConfiguration, DeleteFunction, and Put/Get/DeleteFunctionConcurrency;
//!   `function_image`: an image function's `ImageUri`, resolved in the
//!   caller's repositories and prepared (`ignis_images::ImagePreparer`).
//! - `versions`: PublishVersion, ListVersionsByFunction, deleting a version,
//!   and the alias calls; versions and aliases live in `$LATEST`'s record.
//! - `invoke_api`: Invoke and InvokeWithResponseStream (a record becomes an
//!   `ignis_invoke::Target` in `ignis_invoke::from_record`; the invoker,
//!   admission and the workers are the `ignis-invoke` crate); `eventstream`:
//!   the AWS event-stream framing of a streamed answer.
//! - `policy_api`: AddPermission, RemovePermission and GetPolicy (the policies
//!   and the decision are `ignis_registry::policy`).
//! - `provisioned`: Put/Get/Delete/ListProvisionedConcurrencyConfigs (the
//!   keeper of the configured sandboxes is `ignis_pollers::Keeper`).
//! - `event_config`: the event invoke config calls and destination checks
//!   (asynchronous events themselves are `ignis_pollers::Events`: Invoke's
//!   `Event` type hands them over and answers 202 once they are stored).
//! - `logs_api`: FilterLogEvents, GetLogEvents, DescribeLogGroups, DescribeLogStreams,
//!   PutRetentionPolicy, DeleteRetentionPolicy, DeleteLogGroup over
//!   `ignis_logs` (the log writer, the logs' tables and their queries).
//! - `accounts_api`: Ignis's own account calls (`/ignis/accounts`), for the
//!   administrator's key only.
//! - `networks_api`: Ignis's own network calls (`/ignis/networks`), for the
//!   administrator's key only; `vpc_config`: a function's `VpcConfig`,
//!   which attaches it to networks of its account.
//! - `cluster_api`: the worker hosts' calls (register, heartbeat, code, logs)
//!   and `GET /ignis/workers`, for the administrator's key only.
//! - `sqs_api`: Amazon SQS's JSON protocol over `ignis_queues` (the one owner
//!   of every message queue, with a Rust API for the rest of the server).
//! - `mappings_api`: the event source mapping calls, over the mappings' owner
//!   (`ignis_pollers::Mappings`, with their pollers).
//! - `oci_api`: the OCI distribution API under `/v2/` (push and pull of
//!   container images, over `ignis_oci::Oci`), authenticated with HTTP Basic
//!   (an access key id and its secret), not SigV4.
//! - `error`: every API error and its wire form, in one place.
//!
//! Every request is made by a [`Caller`]: the account its access key belongs
//! to, which SigV4 verification learns from the accounts service
//! (`ignis_registry::Accounts`, from memory), or, for a request signed with a
//! sandbox's session credentials (`X-Amz-Security-Token`), the account of the
//! function they were minted for (`ignis_registry::Sessions`). Handlers act
//! only within the caller's account, but for Invoke of another account's
//! function by ARN, which its resource-based policy may allow (then the
//! invocation is the owner's). A session caller is never the
//! administrator, even in the administrator's account, and calls none of
//! Ignis's own routes (service `ignis`).

mod absent_features;
mod accounts_api;
mod runtimes_api;
mod cluster_api;
mod code_link;
mod console_api;
mod control;
mod error;
mod event_config;
mod eventstream;
mod function;
mod function_image;
#[cfg(feature = "fuzz")]
#[doc(hidden)]
pub mod fuzz;
mod http;
mod invoke_api;
mod lambda_operations;
mod layers_api;
mod logs_api;
mod logs_merge;
mod mappings_api;
mod networks_api;
mod oci_api;
mod policy_api;
mod provisioned;
mod recursion_api;
mod sqs_api;
mod tags_api;
mod url_api;
mod url_event;
mod versions;
mod vpc_config;

use std::sync::Arc;
use ignis_ids::AccountId;
use ignis_registry::Accounts;
use ignis_store::Store;

pub use error::ApiError;
pub use function_image::resolve_image;
pub use runtimes_api::adopt_bases;
pub use http::serve;
pub use url_api::{UrlHost, serve as serve_urls};

pub struct Config {
    pub region: String,
    /// The administrator's account (its key is the accounts' administrator
    /// key; every other account is a tenant).
    pub admin_account: AccountId,
    /// Concurrency reservations must leave unreserved in every account
    /// (what provisioned concurrency may take, too).
    pub min_unreserved: u32,
    /// The server's clock: records' times, SigV4's skew, request durations.
    pub clock: ignis_clock::SharedClock,
    /// The shared chunk cache tier's nodes (`host:port`), which worker hosts learn when they register.
    pub cache_nodes: Vec<String>,
    /// The cluster-wide budget of origin reads at once, if set: shared evenly by the healthy workers.
    pub origin_budget: Option<OriginBudget>,
    /// Where function URLs are served (`--url-listen`, `--url-domain`); `None`: they are not.
    pub function_urls: Option<UrlHost>,
    /// A cluster's other front ends; `None` outside a cluster.
    pub front_ends: Option<Arc<dyn OtherFrontEnds>>,
}

/// A cluster's other front ends, as this one reaches them (signed for with the administrator's key): asked for a
/// prepared image this one does not have, and for their logs.
pub trait OtherFrontEnds: Send + Sync {
    fn others(&self) -> ignis_invoke::BoxFuture<'_, Vec<Arc<ignis_cluster::Peer>>>;
    /// This front end's address, as the others reach it.
    fn me(&self) -> &str;
}

/// A cluster-wide budget of reads of the chunk store of record, shared evenly by the healthy workers: each learns
/// its share when it registers and at every heartbeat; the server's own worker's limit is set at the same times.
pub struct OriginBudget {
    pub total: usize,
    pub local: Option<Arc<ignis_chunks::OriginLimit>>,
}

/// The services the API is a front end for, made by the binary (the embedded
/// implementations, or any other implementation of their traits).
pub struct Services {
    /// The data directory's store: code trees, by SHA-256.
    pub store: Arc<Store>,
    pub registry: Arc<dyn ignis_registry::Registry>,
    /// Every account's layer versions.
    pub layers: Arc<dyn ignis_registry::Layers>,
    /// Every account and access key (SigV4 asks it for secrets).
    pub accounts: Arc<dyn Accounts>,
    /// Admission, assignment, placement and the workers.
    pub invoker: Arc<ignis_invoke::Invoker>,
    /// Every account's message queues.
    pub queues: Arc<ignis_queues::Queues>,
    /// Pending asynchronous invocations.
    pub events: Arc<ignis_pollers::Events>,
    /// Every event source mapping, with its pollers.
    pub mappings: Arc<ignis_pollers::Mappings>,
    /// Keeps provisioned concurrency in line with the configurations.
    pub provisioning: Arc<ignis_pollers::Keeper>,
    /// The log writer and the queries of stored logs.
    pub logs: ignis_logs::Logs,
    /// Container image repositories (the OCI distribution API's storage).
    pub oci: Arc<ignis_oci::Oci>,
    /// Prepares an image function's image when its code is set, serves
    /// prepared images and chunks to worker hosts, collects garbage.
    pub images: Arc<ignis_images::Images>,
    /// The installed runtimes: the bases zip functions run on.
    pub runtimes: Arc<dyn ignis_registry::Runtimes>,
    /// The networks functions may attach to (`VpcConfig`).
    pub networks: Arc<dyn ignis_registry::Networks>,
}

/// Who made a request: the account its (verified) access key acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub account: AccountId,
    /// Whether the key is the administrator's (never for a session).
    pub admin: bool,
    /// `Some(function)`: the request was signed with the session credentials
    /// of a sandbox of `account`'s `function`.
    pub session: Option<String>,
}

impl Caller {
    /// Lambda's answer when a caller touches what it may not.
    pub fn denied(&self, action: &str, resource: &str) -> ApiError {
        ApiError::AccessDenied(format!(
            "User: {} is not authorized to perform: {action} on resource: {resource} because no resource-based policy allows the {action} action",
            ignis_ids::arn::account_root(self.account.as_str())
        ))
    }
}

/// Everything the API handlers share.
pub struct App {
    config: Config,
    store: Arc<Store>,
    registry: Arc<dyn ignis_registry::Registry>,
    layers: Arc<dyn ignis_registry::Layers>,
    invoker: Arc<ignis_invoke::Invoker>,
    /// Concurrency admission: the counter and the scaling rate (the invoker's own).
    concurrency: Arc<ignis_invoke::Admission>,
    accounts: Arc<dyn Accounts>,
    provisioning: Arc<ignis_pollers::Keeper>,
    queues: Arc<ignis_queues::Queues>,
    events: Arc<ignis_pollers::Events>,
    mappings: Arc<ignis_pollers::Mappings>,
    logs: ignis_logs::Logs,
    oci: Arc<ignis_oci::Oci>,
    images: Arc<ignis_images::Images>,
    runtimes: Arc<dyn ignis_registry::Runtimes>,
    /// Verifies sandboxes' session credentials (over `accounts` and `registry`).
    sessions: ignis_registry::Sessions,
    networks: Arc<dyn ignis_registry::Networks>,
    /// The room for blob bytes `GET /v2/.../blobs/...` holds in memory (`oci_api::BLOB_GET_BUDGET`).
    blob_reads: Arc<tokio::sync::Semaphore>,
    /// The turns of code downloads (`code_link::CONCURRENT_DOWNLOADS`).
    code_downloads: Arc<tokio::sync::Semaphore>,
}

impl App {
    /// The API over `services`.
    pub fn new(config: Config, services: Services) -> Arc<App> {
        let Services {
            store, registry, layers, accounts, invoker, queues, events, mappings, provisioning, logs, oci, images, runtimes,
            networks,
        } = services;
        let sessions = ignis_registry::Sessions::new(accounts.clone(), registry.clone());
        Arc::new(App {
            config,
            store,
            sessions,
            registry,
            layers,
            concurrency: invoker.admission().clone(),
            invoker,
            accounts,
            provisioning,
            queues,
            events,
            mappings,
            logs,
            oci,
            images,
            runtimes,
            networks,
            blob_reads: Arc::new(tokio::sync::Semaphore::new(oci_api::BLOB_GET_BUDGET as usize)),
            code_downloads: Arc::new(tokio::sync::Semaphore::new(code_link::CONCURRENT_DOWNLOADS)),
        })
    }

    /// Every account's message queues (send, receive, delete, ... by queue ARN).
    pub fn queues(&self) -> &Arc<ignis_queues::Queues> {
        &self.queues
    }

    /// The administrator's account id.
    pub fn admin_account(&self) -> &AccountId {
        &self.config.admin_account
    }

    /// Ends every sandbox and waits until each is cleaned up. A cluster's front end first gives its idle sandboxes
    /// on worker hosts up, for the front ends that lead their partitions next to take over.
    pub async fn shutdown(&self) {
        self.events.stop();
        if self.config.front_ends.is_some() {
            self.invoker.release(&|_| true).await;
        }
        self.invoker.shutdown().await;
    }

    /// The secret of an access key (for SigV4), from the accounts' memory.
    fn secret_for(&self, access_key_id: &str) -> Option<String> {
        self.accounts.key(access_key_id).map(|k| k.secret_access_key)
    }

    /// Whom an access key acts for, from the accounts' memory.
    fn caller_for(&self, access_key_id: &str) -> Option<Caller> {
        self.accounts.key(access_key_id).map(|k| Caller { account: k.account, admin: k.admin, session: None })
    }
}
