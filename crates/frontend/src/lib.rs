//! The front end: Lambda's HTTP API (and CloudWatch Logs' reading calls) on
//! one endpoint, authenticated with SigV4, over the registry, the store and
//! the invoke path.
//!
//! - `http`: connections, routing to a closed set of [`http::Operation`]s,
//!   body limits, authentication.
//! - `control`: CreateFunction, GetFunction, ListFunctions, UpdateFunctionCode,
//!   UpdateFunctionConfiguration, DeleteFunction, and Put/Get/DeleteFunctionConcurrency.
//! - `versions`: PublishVersion, ListVersionsByFunction, deleting a version,
//!   and the alias calls; versions and aliases live in `$LATEST`'s record.
//! - `invoke_api`: Invoke (a record becomes an `ignis_invoke::Target` in
//!   `ignis_invoke::from_record`; the invoker, admission and the workers are
//!   the `ignis-invoke` crate).
//! - `provisioned`: Put/Get/Delete/ListProvisionedConcurrencyConfigs (the
//!   keeper of the configured sandboxes is `ignis_pollers::Keeper`).
//! - `event_config`: the event invoke config calls and destination checks
//!   (asynchronous events themselves are `ignis_pollers::Events`: Invoke's
//!   `Event` type hands them over and answers 202 once they are stored).
//! - `logs_api`: FilterLogEvents, DescribeLogGroups, DescribeLogStreams, and
//!   the task that writes sandboxes' log lines to storage.
//! - `accounts_api`: Ignis's own account calls (`/ignis/accounts`), for the
//!   administrator's key only.
//! - `cluster_api`: the worker hosts' calls (register, heartbeat, code, logs)
//!   and `GET /ignis/workers`, for the administrator's key only.
//! - `sqs_api`: Amazon SQS's JSON protocol over `ignis_queues` (the one owner
//!   of every message queue, with a Rust API for the rest of the server).
//! - `mappings_api`: the event source mapping calls, over the mappings' owner
//!   (`ignis_pollers::Mappings`, with their pollers).
//! - `error`: every API error and its wire form, in one place.
//!
//! Every request is made by a [`Caller`]: the account its access key belongs
//! to, found in an in-memory key map (loaded from the store at start, updated
//! when accounts are made). Handlers act only within the caller's account.

mod accounts_api;
mod cluster_api;
mod control;
mod error;
mod event_config;
mod function;
#[cfg(feature = "fuzz")]
#[doc(hidden)]
pub mod fuzz;
mod http;
mod invoke_api;
mod logs_api;
mod mappings_api;
mod provisioned;
mod sqs_api;
mod versions;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ignis_store::{AccessKey, Store};
use ignis_worker::LogBatch;

pub use error::ApiError;
pub use http::serve;
pub use ignis_invoke::Workers;

pub struct Config {
    pub region: String,
    /// The administrator's 12-digit account id (its key is the store's
    /// administrator key; every other account is a tenant).
    pub admin_account: String,
    /// How long an idle sandbox is kept for reuse.
    pub keep_alive: Duration,
    /// Every account's concurrency limit.
    pub account_concurrency: u32,
    /// Concurrency reservations must leave unreserved in every account.
    pub min_unreserved: u32,
    /// New sandboxes a function may start per 10 s.
    pub scale_rate: u32,
    /// The wait before an asynchronous invocation's first retry (the second waits twice this).
    pub async_retry_delay: Duration,
    /// Where the invoker's time comes from (keep-alive, heartbeats, the scaling rate).
    pub clock: ignis_clock::SharedClock,
}

/// Who made a request: the account its (verified) access key acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// 12-digit account id.
    pub account: String,
    /// Whether the key is the administrator's.
    pub admin: bool,
}

impl Caller {
    /// Lambda's answer when a caller touches what it may not.
    pub fn denied(&self, action: &str, resource: &str) -> ApiError {
        ApiError::AccessDenied(format!(
            "User: arn:aws:iam::{}:root is not authorized to perform: {action} on resource: {resource} because no resource-based policy allows the {action} action",
            self.account
        ))
    }
}

/// What the verifier needs of an access key.
struct KeyEntry {
    secret: String,
    caller: Caller,
}

/// Everything the API handlers share.
pub struct App {
    config: Config,
    store: Arc<Store>,
    registry: Arc<dyn ignis_registry::Registry>,
    invoker: Arc<ignis_invoke::Invoker>,
    /// Concurrency admission: the counter and the scaling rate (the invoker's own).
    concurrency: Arc<ignis_invoke::Admission>,
    /// Access key id -> secret and account, for every key in the store.
    keys: RwLock<HashMap<String, KeyEntry>>,
    /// Serialises account creation (the store's transaction decides conflicts).
    account_writes: tokio::sync::Mutex<()>,
    /// Keeps provisioned concurrency in line with the configurations.
    provisioning: Arc<ignis_pollers::Keeper>,
    /// Every account's message queues.
    queues: Arc<ignis_queues::Queues>,
    /// Pending asynchronous invocations.
    events: Arc<ignis_pollers::Events>,
    /// Every event source mapping, with its pollers.
    mappings: Arc<ignis_pollers::Mappings>,
}

impl App {
    /// Loads the registry and the access keys, and starts the log writer. Must
    /// run inside a tokio runtime.
    pub fn new(
        config: Config,
        store: Arc<Store>,
        workers: Workers,
        logs: tokio::sync::mpsc::Receiver<LogBatch>,
    ) -> Result<Arc<App>, ApiError> {
        let registry: Arc<dyn ignis_registry::Registry> = Arc::new(ignis_registry::EmbeddedRegistry::load(store.clone())?);
        // No sandbox runs yet, so no code tree is in use but the registry's.
        store.remove_unused_code(&registry.live_code())?;
        if config.min_unreserved > config.account_concurrency {
            return Err(ApiError::Service(format!(
                "the minimum unreserved concurrency ({}) is above the account concurrency ({})",
                config.min_unreserved, config.account_concurrency
            )));
        }
        let limits =
            ignis_counting::Limits { concurrency: config.account_concurrency, min_unreserved: config.min_unreserved };
        let concurrency = ignis_invoke::Admission::new(limits, config.scale_rate, config.clock.clone());
        for (account, record) in registry.all() {
            if let Some(reserved) = record.reserved_concurrency {
                if let Err(e) = concurrency.set_reservation(account.as_str(), &record.name, reserved) {
                    // The limits were lowered since: the function runs unreserved until it is set again.
                    tracing::warn!(
                        %account,
                        function = %record.name,
                        reserved,
                        error = %e,
                        "the reservation does not fit the limits, ignored"
                    );
                }
            }
        }
        let invoker = ignis_invoke::Invoker::new(workers, concurrency.clone(), config.keep_alive, config.clock.clone());
        let keys = store.access_keys()?.into_iter().map(key_entry).collect();
        let (log_barriers, barriers) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(logs_api::write_logs(store.clone(), logs, barriers));
        let queues = ignis_queues::Queues::load(store.clone(), config.region.clone(), config.clock.clone())
            .map_err(ApiError::from)?;
        let services = ignis_pollers::Services {
            registry: registry.clone(),
            invoker: invoker.clone(),
            queues: queues.clone(),
            store: store.clone(),
            clock: config.clock.clone(),
            region: config.region.clone(),
        };
        let events = ignis_pollers::Events::start(services.clone(), config.async_retry_delay)?;
        // Waits until every log line handed to the log writer so far is committed.
        let log_barrier: ignis_pollers::LogBarrier = Arc::new(move || {
            let barriers = log_barriers.clone();
            Box::pin(async move {
                let (done, written) = tokio::sync::oneshot::channel();
                if barriers.send(done).is_ok() {
                    let _ = written.await;
                }
            })
        });
        let mappings = ignis_pollers::Mappings::start(services.clone(), log_barrier)?;
        let provisioning = ignis_pollers::Keeper::start(services);
        let app = Arc::new(App {
            config,
            store,
            registry,
            invoker,
            concurrency,
            keys: RwLock::new(keys),
            account_writes: tokio::sync::Mutex::new(()),
            provisioning,
            queues,
            events,
            mappings,
        });
        Ok(app)
    }

    /// Every account's message queues (send, receive, delete, ... by queue ARN).
    pub fn queues(&self) -> &Arc<ignis_queues::Queues> {
        &self.queues
    }

    /// The administrator's account id.
    pub fn admin_account(&self) -> &str {
        &self.config.admin_account
    }

    /// Ends every sandbox and waits until each is cleaned up.
    pub async fn shutdown(&self) {
        self.events.stop();
        self.invoker.shutdown().await;
    }

    /// The secret of an access key (for SigV4), from memory.
    fn secret_for(&self, access_key_id: &str) -> Option<String> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).get(access_key_id).map(|k| k.secret.clone())
    }

    /// Whom an access key acts for, from memory.
    fn caller_for(&self, access_key_id: &str) -> Option<Caller> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).get(access_key_id).map(|k| k.caller.clone())
    }

    /// Makes a key usable at once (after the store holds it).
    fn add_key(&self, key: AccessKey) {
        let (id, entry) = key_entry(key);
        self.keys.write().unwrap_or_else(|e| e.into_inner()).insert(id, entry);
    }
}

fn key_entry(key: AccessKey) -> (String, KeyEntry) {
    let caller = Caller { account: key.account_id, admin: key.admin };
    (key.access_key_id, KeyEntry { secret: key.secret_access_key, caller })
}
