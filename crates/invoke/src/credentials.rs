//! The credentials each new sandbox gets in its environment, as Lambda gives
//! each execution environment its role's: `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`, minted for the function's
//! account by a [`CredentialSource`] (the server gives the invoker the
//! registry's `ignis_registry::Sessions`). (`AWS_ENDPOINT_URL`, where they
//! reach Ignis's APIs, is the worker's to add: see `ignis_worker`.)
//!
//! # Invariants
//! - Every sandbox started while a source is set gets credentials of its own,
//!   minted at its start; Ignis's values replace whatever the function's or
//!   its image's environment says for these names.
//! - A process's environment cannot change, so a sandbox is not handed out
//!   once its credentials are within [`RENEW_BEFORE`] of their expiry: its
//!   renewal time is kept in the assignment pool (`Pool::renew_at`), and the
//!   invoker ends such sandboxes (`Pool::renew`) before it reserves one.
//! - The secret and the token go only into the sandbox's environment: never
//!   into a log line (`SessionCredentials`' `Debug` hides them).

use std::time::{Duration, SystemTime};

use ignis_ids::AccountId;
use ignis_registry::{SessionCredentials, Sessions};

/// How long before its credentials expire a sandbox stops being handed out.
pub const RENEW_BEFORE: Duration = Duration::from_secs(3600);

/// The environment variables that carry a sandbox's credentials; Ignis's own, always.
pub const CREDENTIAL_VARIABLES: [&str; 3] = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"];

/// Mints the credentials of a new sandbox of `account`'s `function`.
pub trait CredentialSource: Send + Sync {
    /// Credentials for a sandbox of `function` as it is in `incarnation`
    /// (`ignis_registry::FunctionRecord::incarnation`), minted at `now`.
    fn mint(&self, account: &AccountId, function: &str, incarnation: u64, now: SystemTime) -> SessionCredentials;
}

impl CredentialSource for Sessions {
    fn mint(&self, account: &AccountId, function: &str, incarnation: u64, now: SystemTime) -> SessionCredentials {
        Sessions::mint(self, account, function, incarnation, now)
    }
}

/// The variables of `credentials` for a sandbox's environment.
pub(crate) fn variables(credentials: Option<&SessionCredentials>) -> Vec<(String, String)> {
    let Some(c) = credentials else { return Vec::new() };
    let values = [&c.access_key_id, &c.secret_access_key, &c.session_token];
    CREDENTIAL_VARIABLES.iter().zip(values).map(|(name, value)| (name.to_string(), value.clone())).collect()
}

/// How long after `now` a sandbox whose credentials expire at `expiration` may still be handed out.
pub(crate) fn usable_for(expiration: SystemTime, now: SystemTime) -> Duration {
    expiration.duration_since(now).unwrap_or_default().saturating_sub(RENEW_BEFORE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sandbox_is_usable_until_an_hour_before_its_credentials_expire() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
        let hours = |h: u64| Duration::from_secs(h * 3600);
        assert_eq!(usable_for(now + hours(12), now), hours(11));
        assert_eq!(usable_for(now + hours(1), now), Duration::ZERO);
        assert_eq!(usable_for(now, now + hours(1)), Duration::ZERO, "already expired");
    }

    #[test]
    fn variables_are_only_those_given() {
        assert!(variables(None).is_empty());
        let c = SessionCredentials {
            access_key_id: "ASIA".into(),
            secret_access_key: "s".into(),
            session_token: "t".into(),
            expiration: SystemTime::UNIX_EPOCH,
        };
        let names: Vec<String> = variables(Some(&c)).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, CREDENTIAL_VARIABLES);
    }
}
