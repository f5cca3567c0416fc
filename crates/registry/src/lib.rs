//! The function registry: every function's stored record (`$LATEST`, with its
//! published versions, aliases, provisioned-concurrency settings and event
//! invoke configs), and the resolution of a name, partial ARN or ARN with a
//! qualifier to the record that runs.
//!
//! # API boundary
//! Callers (the API handlers, the asynchronous and mapping pollers, the
//! provisioned-concurrency keeper) hold an `Arc<dyn Registry>` and never the
//! implementation: [`EmbeddedRegistry`] (in memory, written through to the
//! store's redb database) or a cluster's `ignis_etcd::EtcdRegistry` (in etcd,
//! watched into memory). Everything they call is [`Registry`]'s methods and the helpers on
//! `dyn Registry`: `update` (a write whose change refuses with the caller's
//! own error type), `resolve` and `resolve_version` (resolution, with the
//! random number that picks an alias's version passed in).
//!
//! Networks (the [`networks`] module: the [`Networks`] trait,
//! [`EmbeddedNetworks`]) are the ranges functions attached to them may reach;
//! a function's record keeps the names of its networks ([`VpcRecord`]).
//!
//! Accounts and their access keys sit behind the same kind of seam (the
//! [`accounts`] module: the [`Accounts`] trait, [`EmbeddedAccounts`]): who
//! signed a request is read from memory, creations are durable before they
//! show.
//!
//! The [`sessions`] module mints and verifies the temporary credentials each
//! sandbox gets ([`Sessions`]): stateless, from keys derived from the master key.
//!
//! Lambda's wire shapes (the JSON of a configuration, request bodies,
//! validation, the parsing of request text into a [`FunctionRef`]) are the
//! front end's; so is turning a [`RegistryError`] into a wire error.
//!
//! # Invariants
//! - Reads never wait for storage or for a write: they see the last record a
//!   write completed.
//! - Writes of all functions are serialised: a change runs exactly once,
//!   against the current record, and nothing else is written between its read
//!   and its store (so a revision check in a change is atomic with the write).
//! - A record is durable (fsync'd) before any reader sees it; a failed store
//!   leaves the record readers see as it was.
//! - Every record a registry hands out holds its code tree
//!   ([`FunctionRecord::code`]), and so does each of its versions: a tree goes
//!   when no record, nor a clone an invocation or a sandbox keeps, uses it.
//! - A function belongs to one account: resolution only ever finds the
//!   caller's own; another account's ARN is [`RegistryError::AccessDenied`],
//!   except for `resolve_version_granted`, which finds it when the owner's
//!   resource-based policy ([`policy`]) allows the request.

pub mod accounts;
mod embedded;
pub mod layers;
pub mod networks;
pub mod policy;
mod record;
pub mod runtimes;
pub mod sessions;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ignis_ids::AccountId;

pub use accounts::{AccessKey, Account, AccountError, Accounts, EmbeddedAccounts, random_account_id};
pub use embedded::{EmbeddedRegistry, hold_code, live_code, set_incarnation, url_ids};
pub use layers::{EmbeddedLayers, LayerRecord, LayerVersionRecord, Layers};
pub use networks::{EmbeddedNetworks, NetworkError, NetworkRecord, Networks};
pub use runtimes::{EmbeddedRuntimes, RuntimeRecord, Runtimes};
pub use sessions::{SESSION_LIFETIME, Session, SessionClaims, SessionCredentials, SessionError, Sessions};
pub use record::{
    AliasRecord, CodeRef, DEFAULT_EPHEMERAL_MB, DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S, EventInvokeConfig, FunctionRecord,
    CorsRecord, ImageConfigOverride, ImageRecord, ImageSettings, JsonLogging, LayerUse, PackageType, ProvisionedRecord,
    UrlRecord, VpcRecord,
};

/// A boxed future that can cross tasks.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A write's change: given the current record (`None`: no such function),
/// the record to store, or `None` to store nothing. Runs once, under the
/// registry's write serialisation.
pub type Change<'a> = Box<dyn FnOnce(Option<&FunctionRecord>) -> Option<FunctionRecord> + Send + 'a>;

/// What a write stored: the record it replaced, if any, and the new one.
#[derive(Debug, Clone)]
pub struct Written {
    pub old: Option<Arc<FunctionRecord>>,
    pub new: Arc<FunctionRecord>,
}

/// Why the registry refused or failed. The front end turns each into
/// Lambda's wire error (`ResourceNotFoundException`, ...) in one place.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegistryError {
    /// No such function in the caller's account; `function` is how it was named
    /// (its ARN, qualified as asked, or its name).
    #[error("Function not found: {function}")]
    FunctionNotFound { function: String },
    /// The function exists, the version (or qualifier) does not; `function` is
    /// its unqualified ARN or name.
    #[error("Function not found: {function}:{version}")]
    VersionNotFound { function: String, version: String },
    /// The function exists, the alias does not; `function` is its unqualified ARN.
    #[error("Alias not found: {function}:{alias}")]
    AliasNotFound { function: String, alias: String },
    /// The caller named another account's function by ARN.
    #[error("{caller} may not perform lambda:{action} on {resource}")]
    AccessDenied { caller: AccountId, action: String, resource: String },
    /// A function of that name already exists.
    #[error("Function already exist: {name}")]
    FunctionExists { name: String },
    /// The `RevisionId` the caller expected is not the record's.
    #[error("revision {expected} is not the latest")]
    RevisionMismatch { expected: String },
    /// Another front end changed the function between this write's read and its store (the cluster's
    /// registry); nothing changed. `resource` is the function's ARN or name.
    #[error("The operation cannot be performed at this time. An update is in progress for resource: {resource}")]
    Conflict { resource: String },
    /// Storage failed or holds what cannot be read; nothing changed.
    #[error("{0}")]
    Storage(String),
}

/// A function as a request names it, once parsed: by name, or by partial or
/// full ARN (which carry an account, and a full one a region), with an
/// optional qualifier (`$LATEST`, a version or an alias).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRef {
    pub name: String,
    pub account: Option<AccountId>,
    pub region: Option<String>,
    pub qualifier: Option<String>,
}

/// Every function's record: what the API handlers, pollers and the
/// provisioned-concurrency keeper read and write. Implementations keep the
/// invariants of the crate docs.
pub trait Registry: Send + Sync {
    /// `$LATEST`'s record of `account`'s function `name`.
    fn get(&self, account: &AccountId, name: &str) -> Option<Arc<FunctionRecord>>;

    /// `account`'s functions, sorted by name.
    fn list(&self, account: &AccountId) -> Vec<Arc<FunctionRecord>>;

    /// Every function, with its account, in no particular order.
    fn all(&self) -> Vec<(AccountId, Arc<FunctionRecord>)>;

    /// The code trees (hex SHA-256) some function or version uses.
    fn live_code(&self) -> HashSet<String>;

    /// Applies `change` to the current record of `account`'s `name`,
    /// serialised with every other write, and stores what it returns, durably,
    /// before readers see it. `Ok(None)`: the change stored nothing.
    fn write<'a>(
        &'a self,
        account: &'a AccountId,
        name: &'a str,
        change: Change<'a>,
    ) -> BoxFuture<'a, Result<Option<Written>, RegistryError>>;

    /// The function whose URL (of some qualifier) has the id `url_id`, with its account.
    fn find_url(&self, url_id: &str) -> Option<(AccountId, Arc<FunctionRecord>)>;

    /// Deletes `account`'s function `name` with its versions and aliases;
    /// returns its last record (`None`: there was none).
    fn delete<'a>(&'a self, account: &'a AccountId, name: &'a str)
    -> BoxFuture<'a, Result<Option<Arc<FunctionRecord>>, RegistryError>>;
}

impl dyn Registry + '_ {
    /// [`Registry::write`] with a change that may refuse with the caller's
    /// own error: returns the record replaced (if any) and the one stored.
    pub async fn update<E>(
        &self,
        account: &AccountId,
        name: &str,
        change: impl FnOnce(Option<&FunctionRecord>) -> Result<FunctionRecord, E> + Send,
    ) -> Result<(Option<Arc<FunctionRecord>>, Arc<FunctionRecord>), E>
    where
        E: From<RegistryError> + Send,
    {
        let mut refused = None;
        let written = self
            .write(
                account,
                name,
                Box::new(|current| match change(current) {
                    Ok(record) => Some(record),
                    Err(e) => {
                        refused = Some(e);
                        None
                    }
                }),
            )
            .await?;
        match (written, refused) {
            (Some(written), _) => Ok((written.old, written.new)),
            (None, Some(e)) => Err(e),
            (None, None) => Err(RegistryError::Storage("a write stored nothing".into()).into()),
        }
    }

    /// `$LATEST`'s record of the function `reference` names, in `caller`'s
    /// account only. Its qualifier, if any, must name `$LATEST`, a published
    /// version or an alias. `action` is the IAM action asked for (denied for
    /// another account's ARN); `region` is the server's, for the ARNs errors show.
    pub fn resolve(
        &self,
        caller: &AccountId,
        region: &str,
        action: &str,
        reference: &FunctionRef,
    ) -> Result<Arc<FunctionRecord>, RegistryError> {
        let qualifier = reference.qualifier.as_deref();
        if reference.account.as_ref().is_some_and(|a| a != caller) {
            // By an ARN carrying another account's id, it is denied; by name,
            // another account's function is simply not in the caller's namespace.
            return Err(denied(caller, region, action, reference));
        }
        let arn = ignis_ids::arn::function(region, caller.as_str(), &reference.name);
        let Some(record) = self.get(caller, &reference.name) else {
            return Err(match qualifier {
                Some(q) => RegistryError::VersionNotFound { function: arn, version: q.to_string() },
                None => RegistryError::FunctionNotFound { function: arn },
            });
        };
        if let Some(q) = qualifier.filter(|q| !record.has_version(q) && !record.aliases.contains_key(*q)) {
            return Err(RegistryError::VersionNotFound { function: arn, version: q.to_string() });
        }
        Ok(record)
    }

    /// [`resolve_version`](Self::resolve_version) for a request that may name another account's function by
    /// ARN: such a function resolves in its owner's account when the policy of the qualifier it is named with
    /// (`policy::key`) allows `request` (`policy::allows`), else the answer is `AccessDenied`, as for a
    /// function that does not exist there. Returns the owner's account and the record that runs.
    pub fn resolve_version_granted(
        &self,
        caller: &AccountId,
        region: &str,
        request: &policy::Request,
        reference: &FunctionRef,
        random: f64,
    ) -> Result<(AccountId, Arc<FunctionRecord>), RegistryError> {
        let action = request.action.strip_prefix("lambda:").unwrap_or(request.action);
        let owner = match reference.account.as_ref() {
            Some(owner) if owner != caller => owner,
            _ => return Ok((caller.clone(), self.resolve_version(caller, region, action, reference, random)?)),
        };
        let granted = self
            .get(owner, &reference.name)
            .is_some_and(|latest| policy::allows(latest.policies.get(policy::key(reference.qualifier.as_deref())), request));
        if !granted {
            return Err(denied(caller, region, action, reference));
        }
        Ok((owner.clone(), self.resolve_version(owner, region, action, reference, random)?))
    }

    /// `resolve`, then the record the qualifier runs:
    /// `$LATEST`, a version, or the version an alias sends this call to
    /// (`random`, uniform in `0..1`, picks by the alias's weights).
    pub fn resolve_version(
        &self,
        caller: &AccountId,
        region: &str,
        action: &str,
        reference: &FunctionRef,
        random: f64,
    ) -> Result<Arc<FunctionRecord>, RegistryError> {
        let latest = self.resolve(caller, region, action, reference)?;
        let label = match reference.qualifier.as_deref() {
            None | Some("$LATEST") => return Ok(latest),
            Some(q) => match latest.aliases.get(q) {
                Some(alias) => alias.pick(random),
                None => q,
            },
        };
        if label == "$LATEST" {
            return Ok(latest);
        }
        match latest.find_version(label) {
            Some(version) => Ok(Arc::new(version.clone())),
            None => Err(RegistryError::VersionNotFound {
                function: latest.arn(region, caller.as_str()),
                version: label.to_string(),
            }),
        }
    }
}

/// `caller` may not perform `action` on the function `reference` names (by another account's ARN).
fn denied(caller: &AccountId, region: &str, action: &str, reference: &FunctionRef) -> RegistryError {
    let region = reference.region.as_deref().unwrap_or(region);
    let owner = reference.account.as_ref().unwrap_or(caller).as_str();
    let resource = match reference.qualifier.as_deref() {
        Some(q) => ignis_ids::arn::function_qualified(region, owner, &reference.name, q),
        None => ignis_ids::arn::function(region, owner, &reference.name),
    };
    RegistryError::AccessDenied { caller: caller.clone(), action: action.to_string(), resource }
}
