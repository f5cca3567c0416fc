//! Session credentials: the temporary key pair and token every sandbox gets
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), as
//! Lambda gives each execution environment its role's, so that a function's
//! own SDK calls reach Ignis's APIs as its account.
//!
//! Nothing is stored. The session token carries its claims ([`SessionClaims`]:
//! account, function, the function's incarnation, issue and expiry time) and a
//! MAC over them under the account's session key, which
//! [`Accounts::data_key`] derives from the data directory's master key; the
//! access key id (`ASIA` + 16 base32 characters) and the 40-character secret
//! are derived from the same key and claims. So every front end with the same
//! master key mints and verifies the same credentials, and only the holder of
//! the token and the secret can sign with them.
//!
//! # Token format (version 1)
//! base64url without padding of
//! `1 | issued_s (u64 BE) | expires_s (u64 BE) | incarnation (u64 BE) | account length (u8) | account |
//! function length (u16 BE) | function | HMAC-SHA256(key, "token" 0 body)`.
//!
//! # Invariants
//! - [`mint`] and [`open`] are pure: time and the key are passed in.
//! - A token is accepted ([`open`]) only whole and untouched, with the key id
//!   derived from it, before its expiry; [`Sessions::verify`] also requires
//!   that the function still exists with the same incarnation, so deleting a
//!   function (or deleting and creating it again) ends its credentials.
//! - A session acts for its account only, and never as its administrator:
//!   what it may do is the front end's to refuse (see `Caller::session`).
//! - Secrets and tokens never appear in `Debug` output.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use ignis_ids::AccountId;
use sha2::Sha256;

use crate::{Accounts, Registry};

/// How long session credentials are valid after they are minted (Lambda's own
/// are renewed by the service; a sandbox's cannot be, see `ignis_invoke`).
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// The purpose an account's session key is derived for ([`Accounts::data_key`]).
const KEY_PURPOSE: &str = "session-credentials";
const TOKEN_VERSION: u8 = 1;
const MAC_LEN: usize = 32;
/// Longer tokens are refused before they are decoded.
const MAX_TOKEN_LEN: usize = 1024;
/// Base32 letters and digits (as AWS's access key ids).
const BASE32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// A sandbox's temporary credentials. Its `Debug` form hides the secret and the token.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionCredentials {
    /// `ASIA` + 16 base32 characters.
    pub access_key_id: String,
    /// 40 characters.
    pub secret_access_key: String,
    pub session_token: String,
    pub expiration: SystemTime,
}

impl std::fmt::Debug for SessionCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &"<redacted>")
            .field("expiration", &self.expiration)
            .finish()
    }
}

/// What a session token says: whose function's sandbox it was given to, and when it is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionClaims {
    pub account: AccountId,
    pub function: String,
    /// The function's [`crate::FunctionRecord::incarnation`] when it was minted.
    pub incarnation: u64,
    /// Seconds since the Unix epoch.
    pub issued_s: u64,
    /// Seconds since the Unix epoch; the token is refused from then on.
    pub expires_s: u64,
}

impl SessionClaims {
    /// The claims of credentials minted at `now`, valid for [`SESSION_LIFETIME`].
    pub fn new(account: AccountId, function: &str, incarnation: u64, now: SystemTime) -> SessionClaims {
        let issued_s = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let expires_s = issued_s.saturating_add(SESSION_LIFETIME.as_secs());
        SessionClaims { account, function: function.to_string(), incarnation, issued_s, expires_s }
    }

    /// The token's body (see the module docs).
    fn body(&self) -> Vec<u8> {
        let account = self.account.as_str().as_bytes();
        let account = &account[..account.len().min(u8::MAX as usize)];
        let function = self.function.as_bytes();
        let function = &function[..function.len().min(u16::MAX as usize)];
        let mut body = Vec::with_capacity(28 + account.len() + function.len());
        body.push(TOKEN_VERSION);
        body.extend_from_slice(&self.issued_s.to_be_bytes());
        body.extend_from_slice(&self.expires_s.to_be_bytes());
        body.extend_from_slice(&self.incarnation.to_be_bytes());
        body.push(account.len() as u8);
        body.extend_from_slice(account);
        body.extend_from_slice(&(function.len() as u16).to_be_bytes());
        body.extend_from_slice(function);
        body
    }

    /// The claims of a token's body; `None` if it is not one of this version.
    fn parse(body: &[u8]) -> Option<SessionClaims> {
        let mut rest = body;
        let mut take = |n: usize| -> Option<&[u8]> {
            let (head, tail) = rest.split_at_checked(n)?;
            rest = tail;
            Some(head)
        };
        let u64_at = |bytes: &[u8]| bytes.try_into().ok().map(u64::from_be_bytes);
        if take(1)? != [TOKEN_VERSION] {
            return None;
        }
        let issued_s = u64_at(take(8)?)?;
        let expires_s = u64_at(take(8)?)?;
        let incarnation = u64_at(take(8)?)?;
        let account_len = take(1)?[0] as usize;
        let account = AccountId::parse(std::str::from_utf8(take(account_len)?).ok()?)?;
        let function_len = u16::from_be_bytes(take(2)?.try_into().ok()?) as usize;
        let function = std::str::from_utf8(take(function_len)?).ok()?.to_string();
        rest.is_empty().then_some(SessionClaims { account, function, incarnation, issued_s, expires_s })
    }
}

/// Why session credentials were refused. The front end answers each with its
/// service's invalid-token error, but [`SessionError::Expired`] with its expired-token error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// No token, or not one Ignis made.
    #[error("the session token is malformed")]
    Malformed,
    /// The token was changed, or made under another key.
    #[error("the session token is not authentic")]
    Forged,
    /// The request's access key id is not the token's.
    #[error("the access key id does not belong to the session token")]
    WrongKey,
    #[error("the session token is expired")]
    Expired,
    /// The function the credentials were given to was deleted (and perhaps created again).
    #[error("the function of the session no longer exists")]
    FunctionGone,
}

/// Mints credentials for `claims`, under the account's session `key`.
pub fn mint(key: &[u8; 32], claims: &SessionClaims) -> SessionCredentials {
    let body = claims.body();
    let mut token = body.clone();
    token.extend_from_slice(&mac(key, "token", &body));
    SessionCredentials {
        access_key_id: derive_key_id(key, &body),
        secret_access_key: secret(key, &body),
        session_token: URL_SAFE_NO_PAD.encode(&token),
        expiration: UNIX_EPOCH + Duration::from_secs(claims.expires_s),
    }
}

/// Checks `token` (untouched, made under the session key `key_for` gives for
/// its account, `access_key_id` derived from it, not expired at `now`) and
/// answers its claims and the secret of its key pair.
pub fn open(
    key_for: impl FnOnce(&AccountId) -> [u8; 32],
    access_key_id: &str,
    token: &str,
    now: SystemTime,
) -> Result<(SessionClaims, String), SessionError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(SessionError::Malformed);
    }
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| SessionError::Malformed)?;
    let (body, tag) = bytes.split_at_checked(bytes.len().saturating_sub(MAC_LEN)).ok_or(SessionError::Malformed)?;
    if tag.len() != MAC_LEN {
        return Err(SessionError::Malformed);
    }
    let claims = SessionClaims::parse(body).ok_or(SessionError::Malformed)?;
    let key = key_for(&claims.account);
    let mut check = keyed(&key, "token");
    check.update(body);
    check.verify_slice(tag).map_err(|_| SessionError::Forged)?;
    let expected = derive_key_id(&key, body);
    if !constant_time_eq(expected.as_bytes(), access_key_id.as_bytes()) {
        return Err(SessionError::WrongKey);
    }
    if now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() >= claims.expires_s {
        return Err(SessionError::Expired);
    }
    Ok((claims, secret(&key, body)))
}

/// A new function incarnation: random, never 0.
pub fn new_incarnation() -> u64 {
    let mut bytes = [0u8; 8];
    // The OS's random source failing leaves nothing safe to do.
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    u64::from_le_bytes(bytes).max(1)
}

fn keyed(key: &[u8; 32], label: &str) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(label.as_bytes());
    mac.update(&[0]);
    mac
}

fn mac(key: &[u8; 32], label: &str, body: &[u8]) -> [u8; MAC_LEN] {
    let mut mac = keyed(key, label);
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// `ASIA` and 80 bits of the claims' MAC, in base32.
fn derive_key_id(key: &[u8; 32], body: &[u8]) -> String {
    let bits = u128::from_be_bytes(mac(key, "access-key-id", body)[..16].try_into().expect("16 bytes"));
    let mut id = String::from("ASIA");
    for i in 0..16 {
        id.push(BASE32[((bits >> (123 - 5 * i)) & 31) as usize] as char);
    }
    id
}

/// 240 bits of the claims' MAC, in 40 base64 characters (as AWS's secrets).
fn secret(key: &[u8; 32], body: &[u8]) -> String {
    STANDARD_NO_PAD.encode(&mac(key, "secret", body)[..30])
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// A session that checked out: whom it acts for, and the secret its requests are signed with.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    pub claims: SessionClaims,
    pub secret_access_key: String,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("claims", &self.claims).field("secret_access_key", &"<redacted>").finish()
    }
}

/// Mints and verifies session credentials over the accounts' session keys
/// and, for verification, the functions' records (both from memory).
pub struct Sessions {
    accounts: Arc<dyn Accounts>,
    registry: Arc<dyn Registry>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

impl Sessions {
    pub fn new(accounts: Arc<dyn Accounts>, registry: Arc<dyn Registry>) -> Sessions {
        Sessions { accounts, registry }
    }

    fn key(&self, account: &AccountId) -> [u8; 32] {
        self.accounts.data_key(account, KEY_PURPOSE)
    }

    /// Credentials for a sandbox of `account`'s `function` (of `incarnation`), minted at `now`.
    pub fn mint(&self, account: &AccountId, function: &str, incarnation: u64, now: SystemTime) -> SessionCredentials {
        mint(&self.key(account), &SessionClaims::new(account.clone(), function, incarnation, now))
    }

    /// [`open`], and the function must still exist with the token's incarnation.
    pub fn verify(&self, access_key_id: &str, token: &str, now: SystemTime) -> Result<Session, SessionError> {
        let (claims, secret_access_key) = open(|account| self.key(account), access_key_id, token, now)?;
        match self.registry.get(&claims.account, &claims.function) {
            Some(record) if record.incarnation == claims.incarnation => Ok(Session { claims, secret_access_key }),
            _ => Err(SessionError::FunctionGone),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];
    const NOW: Duration = Duration::from_secs(1_790_000_000);

    fn at(offset: Duration) -> SystemTime {
        UNIX_EPOCH + NOW + offset
    }

    fn claims() -> SessionClaims {
        SessionClaims::new(AccountId::new("123456789012"), "my-function", 42, at(Duration::ZERO))
    }

    fn check(credentials: &SessionCredentials, now: SystemTime) -> Result<(SessionClaims, String), SessionError> {
        open(|_| KEY, &credentials.access_key_id, &credentials.session_token, now)
    }

    #[test]
    fn minted_credentials_have_aws_shapes_and_open() {
        let minted = mint(&KEY, &claims());
        let id = &minted.access_key_id;
        assert!(id.starts_with("ASIA") && id.len() == 20 && id[4..].bytes().all(|b| BASE32.contains(&b)), "{id}");
        assert_eq!(minted.secret_access_key.len(), 40);
        assert_eq!(minted.expiration, at(SESSION_LIFETIME));
        assert!(!format!("{minted:?}").contains(&minted.secret_access_key));
        assert!(!format!("{minted:?}").contains(&minted.session_token));
        assert_eq!(check(&minted, at(Duration::ZERO)), Ok((claims(), minted.secret_access_key.clone())));
        assert_eq!(mint(&KEY, &claims()), minted, "stateless: the same claims give the same credentials");
        let later = SessionClaims::new(AccountId::new("123456789012"), "my-function", 42, at(Duration::from_secs(1)));
        let other = mint(&KEY, &later);
        assert_ne!((&other.access_key_id, &other.secret_access_key), (&minted.access_key_id, &minted.secret_access_key));
    }

    #[test]
    fn expiry() {
        let minted = mint(&KEY, &claims());
        let just_before = SESSION_LIFETIME - Duration::from_secs(1);
        assert!(check(&minted, at(just_before)).is_ok());
        assert_eq!(check(&minted, at(SESSION_LIFETIME)), Err(SessionError::Expired));
        assert_eq!(check(&minted, at(SESSION_LIFETIME * 2)), Err(SessionError::Expired));
    }

    #[test]
    fn every_changed_byte_of_a_token_is_refused() {
        let minted = mint(&KEY, &claims());
        let bytes = URL_SAFE_NO_PAD.decode(&minted.session_token).unwrap();
        for i in 0..bytes.len() {
            for flip in [1u8, 0x80] {
                let mut changed = bytes.clone();
                changed[i] ^= flip;
                let token = URL_SAFE_NO_PAD.encode(&changed);
                let result = open(|_| KEY, &minted.access_key_id, &token, at(Duration::ZERO));
                assert!(matches!(result, Err(SessionError::Forged | SessionError::Malformed)), "byte {i}: {result:?}");
            }
        }
        for cut in [0, 1, bytes.len() - 1] {
            let token = URL_SAFE_NO_PAD.encode(&bytes[..cut]);
            assert!(open(|_| KEY, &minted.access_key_id, &token, at(Duration::ZERO)).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        let token = URL_SAFE_NO_PAD.encode(&longer);
        assert!(open(|_| KEY, &minted.access_key_id, &token, at(Duration::ZERO)).is_err());
        for garbage in ["", "not base64!", "AAAA", &"A".repeat(MAX_TOKEN_LEN + 1)] {
            assert_eq!(open(|_| KEY, &minted.access_key_id, garbage, at(Duration::ZERO)), Err(SessionError::Malformed));
        }
    }

    #[test]
    fn a_forged_expiry_or_account_is_refused() {
        // Claims rewritten and re-encoded without the key: the MAC no longer matches.
        let minted = mint(&KEY, &claims());
        let bytes = URL_SAFE_NO_PAD.decode(&minted.session_token).unwrap();
        let tag = &bytes[bytes.len() - MAC_LEN..];
        for changed in [
            SessionClaims { expires_s: u64::MAX, ..claims() },
            SessionClaims { account: AccountId::new("210987654321"), ..claims() },
            SessionClaims { function: "another".into(), ..claims() },
            SessionClaims { incarnation: 43, ..claims() },
        ] {
            let mut token = changed.body();
            token.extend_from_slice(tag);
            let token = URL_SAFE_NO_PAD.encode(&token);
            assert_eq!(open(|_| KEY, &minted.access_key_id, &token, at(Duration::ZERO)), Err(SessionError::Forged));
        }
    }

    #[test]
    fn another_key_or_key_id_is_refused() {
        let minted = mint(&KEY, &claims());
        assert_eq!(
            open(|_| [8; 32], &minted.access_key_id, &minted.session_token, at(Duration::ZERO)),
            Err(SessionError::Forged),
            "another master key, or another account's session key"
        );
        let other = mint(&KEY, &SessionClaims { function: "other".into(), ..claims() });
        assert_eq!(
            open(|_| KEY, &other.access_key_id, &minted.session_token, at(Duration::ZERO)),
            Err(SessionError::WrongKey)
        );
        assert_eq!(open(|_| KEY, "AKIAIOSFODNN7EXAMPLE", &minted.session_token, at(Duration::ZERO)), Err(SessionError::WrongKey));
    }

    #[test]
    fn each_account_has_its_own_key() {
        // The key comes from the token's own account.
        let minted = mint(&KEY, &claims());
        let key_for = |account: &AccountId| if account.as_str() == "123456789012" { KEY } else { [9; 32] };
        assert!(open(key_for, &minted.access_key_id, &minted.session_token, at(Duration::ZERO)).is_ok());
        let elsewhere = mint(&KEY, &SessionClaims { account: AccountId::new("210987654321"), ..claims() });
        let result = open(key_for, &elsewhere.access_key_id, &elsewhere.session_token, at(Duration::ZERO));
        assert_eq!(result, Err(SessionError::Forged));
    }

    mod live {
        use ignis_clock::ManualClock;
        use ignis_store::Store;

        use super::*;
        use crate::{EmbeddedAccounts, EmbeddedRegistry, FunctionRecord};

        #[tokio::test]
        async fn the_function_must_exist_with_the_same_incarnation() {
            let tmp = tempfile::tempdir().unwrap();
            let store = Arc::new(Store::open(tmp.path()).unwrap());
            let accounts: Arc<dyn Accounts> = Arc::new(EmbeddedAccounts::open(store.clone(), ManualClock::at_epoch_2026()).unwrap());
            let registry: Arc<dyn Registry> = Arc::new(EmbeddedRegistry::load(store).unwrap());
            let sessions = Sessions::new(accounts.clone(), registry.clone());
            let (account, other) = (AccountId::new("123456789012"), AccountId::new("210987654321"));
            let create = |name: &'static str| {
                let registry = registry.clone();
                let account = account.clone();
                async move {
                    let record = FunctionRecord { code_sha256_hex: String::new(), ..FunctionRecord::new(name, "provided") };
                    registry.update(&account, name, |_| Ok::<_, crate::RegistryError>(record)).await.unwrap().1
                }
            };
            let first = create("f").await;
            assert_ne!(first.incarnation, 0);
            let now = at(Duration::ZERO);
            let minted = sessions.mint(&account, "f", first.incarnation, now);
            let session = sessions.verify(&minted.access_key_id, &minted.session_token, now).unwrap();
            assert_eq!((&session.claims.account, session.claims.function.as_str()), (&account, "f"));
            assert_eq!(session.secret_access_key, minted.secret_access_key);
            // An update keeps the incarnation.
            let updated = registry
                .update(&account, "f", |current| Ok::<_, crate::RegistryError>(FunctionRecord { incarnation: 7, ..current.unwrap().clone() }))
                .await
                .unwrap()
                .1;
            assert_eq!(updated.incarnation, first.incarnation, "callers cannot change it");
            assert!(sessions.verify(&minted.access_key_id, &minted.session_token, now).is_ok());
            // Another account's function of the same name does not make it live.
            let elsewhere = sessions.mint(&other, "f", first.incarnation, now);
            assert_eq!(sessions.verify(&elsewhere.access_key_id, &elsewhere.session_token, now), Err(SessionError::FunctionGone));
            // Deleted: refused; created again: another incarnation, still refused.
            registry.delete(&account, "f").await.unwrap();
            assert_eq!(sessions.verify(&minted.access_key_id, &minted.session_token, now), Err(SessionError::FunctionGone));
            let again = create("f").await;
            assert_ne!(again.incarnation, first.incarnation);
            assert_eq!(sessions.verify(&minted.access_key_id, &minted.session_token, now), Err(SessionError::FunctionGone));
            let renewed = sessions.mint(&account, "f", again.incarnation, now);
            assert!(sessions.verify(&renewed.access_key_id, &renewed.session_token, now).is_ok());
            // Expired, whatever the function.
            let late = at(SESSION_LIFETIME);
            assert_eq!(sessions.verify(&renewed.access_key_id, &renewed.session_token, late), Err(SessionError::Expired));
        }
    }
}
