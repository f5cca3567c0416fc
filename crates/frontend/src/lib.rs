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
//! - `logs_api`: FilterLogEvents, DescribeLogGroups, DescribeLogStreams over
//!   `ignis_logs` (the log writer, the logs' tables and their queries).
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
//! to, which SigV4 verification learns from the accounts service
//! (`ignis_registry::Accounts`, from memory). Handlers act only within the
//! caller's account.

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

use std::sync::Arc;
use std::time::Duration;

use ignis_ids::AccountId;
use ignis_registry::Accounts;
use ignis_store::Store;

pub use error::ApiError;
pub use http::serve;
pub use ignis_invoke::Workers;

pub struct Config {
    pub region: String,
    /// The administrator's account (its key is the accounts' administrator
    /// key; every other account is a tenant).
    pub admin_account: AccountId,
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
    pub account: AccountId,
    /// Whether the key is the administrator's.
    pub admin: bool,
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
    invoker: Arc<ignis_invoke::Invoker>,
    /// Concurrency admission: the counter and the scaling rate (the invoker's own).
    concurrency: Arc<ignis_invoke::Admission>,
    /// Every account and access key (SigV4 asks it for secrets).
    accounts: Arc<dyn Accounts>,
    /// Keeps provisioned concurrency in line with the configurations.
    provisioning: Arc<ignis_pollers::Keeper>,
    /// Every account's message queues.
    queues: Arc<ignis_queues::Queues>,
    /// Pending asynchronous invocations.
    events: Arc<ignis_pollers::Events>,
    /// Every event source mapping, with its pollers.
    mappings: Arc<ignis_pollers::Mappings>,
    /// The log service: the log writer and the queries of stored logs.
    logs: ignis_logs::Logs,
}

impl App {
    /// Loads the registry and the access keys. Must run inside a tokio runtime.
    pub fn new(
        config: Config,
        store: Arc<Store>,
        accounts: Arc<dyn Accounts>,
        workers: Workers,
        logs: ignis_logs::Logs,
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
        let barrier = logs.barrier();
        let log_barrier: ignis_pollers::LogBarrier = Arc::new(move || {
            let barrier = barrier.clone();
            Box::pin(async move { barrier.written().await })
        });
        let mappings = ignis_pollers::Mappings::start(services.clone(), log_barrier)?;
        let provisioning = ignis_pollers::Keeper::start(services);
        let app = Arc::new(App {
            config,
            store,
            registry,
            invoker,
            concurrency,
            accounts,
            provisioning,
            queues,
            events,
            mappings,
            logs,
        });
        Ok(app)
    }

    /// Every account's message queues (send, receive, delete, ... by queue ARN).
    pub fn queues(&self) -> &Arc<ignis_queues::Queues> {
        &self.queues
    }

    /// The administrator's account id.
    pub fn admin_account(&self) -> &AccountId {
        &self.config.admin_account
    }

    /// Ends every sandbox and waits until each is cleaned up.
    pub async fn shutdown(&self) {
        self.events.stop();
        self.invoker.shutdown().await;
    }

    /// The secret of an access key (for SigV4), from the accounts' memory.
    fn secret_for(&self, access_key_id: &str) -> Option<String> {
        self.accounts.key(access_key_id).map(|k| k.secret_access_key)
    }

    /// Whom an access key acts for, from the accounts' memory.
    fn caller_for(&self, access_key_id: &str) -> Option<Caller> {
        self.accounts.key(access_key_id).map(|k| Caller { account: k.account, admin: k.admin })
    }
}
