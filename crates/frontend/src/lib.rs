//! The front end: Lambda's HTTP API (and CloudWatch Logs' reading calls) on
//! one endpoint, authenticated with SigV4, over the registry, the store and
//! the invoke path.
//!
//! - `http`: connections, routing to a closed set of [`http::Operation`]s,
//!   body limits, authentication.
//! - `control`: CreateFunction, GetFunction, ListFunctions, UpdateFunctionCode,
//!   UpdateFunctionConfiguration, DeleteFunction.
//! - `invoke_api` + `invoke`: Invoke, and the path from a request to a sandbox.
//! - `logs_api`: FilterLogEvents, DescribeLogGroups, DescribeLogStreams, and
//!   the task that writes sandboxes' log lines to storage.
//! - `error`: every API error and its wire form, in one place.

mod control;
mod error;
mod function;
mod http;
mod invoke;
mod invoke_api;
mod logs_api;
mod registry;

use std::sync::Arc;
use std::time::Duration;

use ignis_sigv4::Credentials;
use ignis_store::Store;
use ignis_worker::{LogBatch, Worker};

pub use error::ApiError;
pub use http::serve;

pub struct Config {
    pub region: String,
    /// The 12-digit account every function belongs to.
    pub account: String,
    /// Key pairs allowed to call the API.
    pub credentials: Vec<Credentials>,
    /// How long an idle sandbox is kept for reuse.
    pub keep_alive: Duration,
}

/// Everything the API handlers share.
pub struct App {
    config: Config,
    store: Arc<Store>,
    registry: registry::Registry,
    invoker: Arc<invoke::Invoker>,
}

impl App {
    /// Loads the registry and starts the log writer. Must run inside a tokio runtime.
    pub fn new(
        config: Config,
        store: Arc<Store>,
        worker: Arc<Worker>,
        logs: tokio::sync::mpsc::Receiver<LogBatch>,
    ) -> Result<Arc<App>, ApiError> {
        let registry = registry::Registry::load(store.clone())?;
        // No sandbox runs yet, so no code tree is in use but the registry's.
        store.remove_unused_code(&registry.live_code())?;
        let invoker = invoke::Invoker::new(worker, config.keep_alive);
        tokio::spawn(logs_api::write_logs(store.clone(), logs));
        Ok(Arc::new(App { config, store, registry, invoker }))
    }

    /// Ends every sandbox and waits until each is cleaned up.
    pub async fn shutdown(&self) {
        self.invoker.shutdown().await;
    }

    fn secret_for(&self, access_key_id: &str) -> Option<String> {
        self.config
            .credentials
            .iter()
            .find(|c| c.access_key_id == access_key_id)
            .map(|c| c.secret_access_key.clone())
    }
}
