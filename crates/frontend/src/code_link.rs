//! GetFunction's `Code.Location`: a link, valid for [`LINK_LIFETIME`] (Lambda's ten minutes), from which a zip
//! function's code downloads with plain HTTP, as deployment tools fetch it from Lambda's presigned S3 URL.
//!
//! `GET /ignis/code-download/{account}/{sha256 hex}?X-Ignis-Expires={unix seconds}&X-Ignis-Signature={hex}` is
//! served unsigned: the link is its own authority. The signature is an HMAC-SHA256 over the account, the code
//! tree's digest and the expiry, under the account's key for this purpose (`Accounts::data_key`, derived from the
//! data directory's master key, as the sessions' keys are): every front end with the same master key makes and
//! accepts the same links, and nothing is stored. A link whose signature does not match (any part changed) or
//! that has expired is refused with 403 `AccessDeniedException`; one for code no longer stored, 404.
//!
//! The answer is the code tree zipped on demand (`ignis_store::zip_tree`, as worker hosts fetch code): the same
//! files, modes and links as deployed, though not the very bytes uploaded (the tree is stored unzipped), so its
//! SHA-256 is not `CodeSha256`. Its size is bounded by the code's own limit (250 MB unzipped), it is built once
//! in memory (the answer's buffer is that zip, not a copy), and at most [`CONCURRENT_DOWNLOADS`] are built at
//! a time (a download that finds no room within [`DOWNLOAD_WAIT`] is 429 `TooManyRequestsException`).
//!
//! [`link`] and [`check`] are pure: the key and the time are passed in.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use ignis_ids::AccountId;
use sha2::Sha256;

use crate::App;
use crate::error::ApiError;
use crate::http::{Answer, query_params};

/// How long a link is valid after GetFunction made it.
pub const LINK_LIFETIME: Duration = Duration::from_secs(600);
/// Zips built for downloads at once.
pub const CONCURRENT_DOWNLOADS: usize = 2;
/// How long a download waits for its turn.
pub const DOWNLOAD_WAIT: Duration = Duration::from_secs(30);
/// The purpose the accounts' link keys are derived for.
pub(crate) const KEY_PURPOSE: &str = "code-download";
/// The path every link begins with.
pub const PATH_PREFIX: &str = "/ignis/code-download/";

/// Why a link is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("The code download link is not valid: it lacks its expiry or signature, or is not one this Ignis made.")]
    Malformed,
    #[error("The code download link is not valid: its signature does not match (the link was changed).")]
    Tampered,
    #[error("The code download link has expired: call GetFunction again for a new one (links are valid for 10 minutes).")]
    Expired,
}

fn signature(key: &[u8; 32], account: &str, sha256_hex: &str, expires_s: u64) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(format!("{KEY_PURPOSE}\n{account}\n{sha256_hex}\n{expires_s}").as_bytes());
    mac
}

/// The path and query of the link to `account`'s code tree `sha256_hex`, made at `now`.
pub fn link(key: &[u8; 32], account: &str, sha256_hex: &str, now: SystemTime) -> String {
    let expires_s = (now + LINK_LIFETIME).duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let signed = hex::encode(signature(key, account, sha256_hex, expires_s).finalize().into_bytes());
    format!("{PATH_PREFIX}{account}/{sha256_hex}?X-Ignis-Expires={expires_s}&X-Ignis-Signature={signed}")
}

/// Checks a link's `query` for `account`'s code tree `sha256_hex` at `now`: signed with `key`, not expired.
pub fn check(key: &[u8; 32], account: &str, sha256_hex: &str, query: &str, now: SystemTime) -> Result<(), LinkError> {
    let params = query_params(query);
    let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let expires_s: u64 = param("X-Ignis-Expires").and_then(|e| e.parse().ok()).ok_or(LinkError::Malformed)?;
    let signed = param("X-Ignis-Signature").and_then(|s| hex::decode(s).ok()).ok_or(LinkError::Malformed)?;
    signature(key, account, sha256_hex, expires_s).verify_slice(&signed).map_err(|_| LinkError::Tampered)?;
    let now_s = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if now_s >= expires_s {
        return Err(LinkError::Expired);
    }
    Ok(())
}

/// `Code.Location` of a zip function whose code tree is `sha256_hex`, for `account`, on `host` (the `Host` the
/// GetFunction request was sent to).
pub fn location(app: &App, account: &AccountId, sha256_hex: &str, host: &str) -> String {
    let key = app.accounts.data_key(account, KEY_PURPOSE);
    format!("http://{host}{}", link(&key, account.as_str(), sha256_hex, app.config.clock.now()))
}

/// `GET /ignis/code-download/{account}/{sha256 hex}?...`: the code tree zipped, if the link checks out.
pub async fn download(app: &Arc<App>, account: &str, sha256_hex: &str, query: &str) -> Result<Answer, ApiError> {
    let Some(account_id) = AccountId::parse(account) else {
        return Err(ApiError::AccessDenied(LinkError::Malformed.to_string()));
    };
    let key = app.accounts.data_key(&account_id, KEY_PURPOSE);
    check(&key, account, sha256_hex, query, app.config.clock.now()).map_err(|e| ApiError::AccessDenied(e.to_string()))?;
    let dir = app.store.code_dir(sha256_hex);
    if !dir.is_dir() {
        return Err(ApiError::ResourceNotFound("The function's code is no longer stored: call GetFunction again.".into()));
    }
    let turn = ignis_clock::timeout(&*app.config.clock, DOWNLOAD_WAIT, app.code_downloads.clone().acquire_owned()).await;
    let Ok(Ok(_turn)) = turn else {
        return Err(ApiError::Busy("Too many code downloads are being prepared; try again".into()));
    };
    crate::cluster_api::zipped(dir).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];
    const ACCOUNT: &str = "111111111111";

    fn sha() -> String {
        "ab".repeat(32)
    }

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    fn query_of(link: &str) -> &str {
        link.split_once('?').map_or("", |(_, q)| q)
    }

    #[test]
    fn a_link_is_valid_for_ten_minutes() {
        let made = link(&KEY, ACCOUNT, &sha(), at(1_000));
        assert!(made.starts_with(&format!("/ignis/code-download/{ACCOUNT}/{}?X-Ignis-Expires=1600&X-Ignis-Signature=", sha())), "{made}");
        let query = query_of(&made);
        assert_eq!(check(&KEY, ACCOUNT, &sha(), query, at(1_000)), Ok(()));
        assert_eq!(check(&KEY, ACCOUNT, &sha(), query, at(1_599)), Ok(()));
        assert_eq!(check(&KEY, ACCOUNT, &sha(), query, at(1_600)), Err(LinkError::Expired));
        assert_eq!(check(&KEY, ACCOUNT, &sha(), query, at(90_000)), Err(LinkError::Expired));
    }

    #[test]
    fn a_changed_link_is_refused() {
        let made = link(&KEY, ACCOUNT, &sha(), at(1_000));
        let query = query_of(&made);
        // Another key (master key), account, code, or a later expiry: the signature does not match.
        assert_eq!(check(&[8; 32], ACCOUNT, &sha(), query, at(1_000)), Err(LinkError::Tampered));
        assert_eq!(check(&KEY, "222222222222", &sha(), query, at(1_000)), Err(LinkError::Tampered));
        assert_eq!(check(&KEY, ACCOUNT, &"cd".repeat(32), query, at(1_000)), Err(LinkError::Tampered));
        let later = query.replace("X-Ignis-Expires=1600", "X-Ignis-Expires=9600");
        assert_eq!(check(&KEY, ACCOUNT, &sha(), &later, at(2_000)), Err(LinkError::Tampered));
        let flipped = match query.strip_suffix('0') {
            Some(rest) => format!("{rest}1"),
            None => format!("{}0", &query[..query.len() - 1]),
        };
        assert_eq!(check(&KEY, ACCOUNT, &sha(), &flipped, at(1_000)), Err(LinkError::Tampered));
        for bad in ["", "X-Ignis-Expires=1600", "X-Ignis-Signature=00", "X-Ignis-Expires=x&X-Ignis-Signature=00", "X-Ignis-Expires=1600&X-Ignis-Signature=zz"] {
            assert_eq!(check(&KEY, ACCOUNT, &sha(), bad, at(1_000)), Err(LinkError::Malformed), "{bad}");
        }
    }
}
