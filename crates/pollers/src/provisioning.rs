//! The keeper of provisioned concurrency: hands every configuration (from
//! the registry's records: `$LATEST`'s `provisioned`, by qualifier) to the
//! invoker ([`ignis_invoke::Invoker::provision`]) every second and whenever
//! one changes ([`Keeper::changed`]). The invoker starts what is missing,
//! replaces what died and lets what is no longer wanted age out like any
//! idle sandbox; the front end's provisioned-concurrency calls read the
//! status from the invoker.
//!
//! In a cluster, a front end keeps the configurations of the functions whose
//! partition it leads (or that no one leads now): it runs their invocations.
//!
//! The keeper's task holds only a weak reference to the [`Keeper`]: it ends
//! when the keeper (the front end's) is dropped.

use std::sync::{Arc, Weak};
use std::time::Duration;

use ignis_invoke::{Provisioned, from_record};
use ignis_registry::FunctionRecord;
use tokio::sync::Notify;

use crate::Services;

/// How often the configured sandboxes are checked (dead ones replaced) without a change.
pub const PERIOD: Duration = Duration::from_secs(1);

/// Keeps the invoker's provisioned sandboxes in line with the configurations.
pub struct Keeper {
    services: Services,
    wake: Arc<Notify>,
}

impl Keeper {
    /// Starts the keeper's task (needs a tokio runtime); it hands the
    /// configurations over at once, then every [`PERIOD`] and on change.
    pub fn start(services: Services) -> Arc<Keeper> {
        let keeper = Arc::new(Keeper { services, wake: Arc::default() });
        tokio::spawn(keep(Arc::downgrade(&keeper)));
        keeper
    }

    /// A configuration changed: hand them over now.
    pub fn changed(&self) {
        self.wake.notify_one();
    }

    /// Every configuration of a function this front end runs, as the invoker takes it.
    fn wanted(&self) -> Vec<Provisioned> {
        let services = &self.services;
        let assignment = services.invoker.assignment();
        services
            .registry
            .all()
            .into_iter()
            .filter(|(account, latest)| assignment.is_none_or(|a| a.leader(account.as_str(), &latest.name).is_none()))
            .flat_map(|(account, latest)| {
                latest
                    .provisioned
                    .iter()
                    .filter_map(|(qualifier, config)| {
                        let version = version_of(&latest, qualifier)?;
                        Some(Provisioned {
                            target: from_record::target(
                                &services.store,
                                &*services.networks,
                                &services.region,
                                account.as_str(),
                                version,
                            ),
                            requested: config.requested,
                            since_ms: config.last_modified_ms,
                        })
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// The record a configured qualifier runs: the version, or the alias's version.
pub fn version_of<'a>(latest: &'a FunctionRecord, qualifier: &str) -> Option<&'a FunctionRecord> {
    let label = latest.aliases.get(qualifier).map_or(qualifier, |alias| alias.function_version.as_str());
    latest.find_version(label)
}

/// The keeper's task, until the keeper is gone.
async fn keep(keeper: Weak<Keeper>) {
    loop {
        let Some(strong) = keeper.upgrade() else { return };
        strong.services.invoker.provision(strong.wanted());
        let clock = strong.services.clock.clone();
        // Waits without holding the keeper, so that dropping it ends the task
        // (a change meanwhile left a permit: it is not missed).
        let wake = strong.wake.clone();
        drop(strong);
        let _ = ignis_clock::timeout(&*clock, PERIOD, wake.notified()).await;
    }
}
