//! The identities that cross crate boundaries, as types: [`AccountId`] and
//! [`Revision`] (what sandboxes are keyed by), and [`arn`], the one module that
//! builds and reads every ARN Ignis shows.
//!
//! Pure: no IO, no clock, no dependencies.

pub mod arn;

use std::fmt;

/// A 12-digit account id. Constructed from text already known to be an
/// account id (a verified key's account, a stored record); [`AccountId::parse`]
/// checks text that comes from outside.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountId(String);

impl AccountId {
    /// `text` as an account id, if it is 12 ASCII digits.
    pub fn parse(text: &str) -> Option<AccountId> {
        (text.len() == 12 && text.bytes().all(|b| b.is_ascii_digit())).then(|| AccountId(text.to_owned()))
    }

    /// An id known to be valid (from storage or a verified key).
    pub fn new(id: impl Into<String>) -> AccountId {
        AccountId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for AccountId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for AccountId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for AccountId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// One revision of one function: sandboxes are reused only within a
/// revision (a published version has a revision of its own, and every change
/// to `$LATEST` makes a new one).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    pub account: AccountId,
    pub function: String,
    pub revision_id: String,
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.account, self.function, self.revision_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_are_twelve_digits() {
        assert_eq!(AccountId::parse("123456789012").map(|a| a.to_string()), Some("123456789012".into()));
        for bad in ["", "12345678901", "1234567890123", "12345678901a", "１２３４５６７８９０１２"] {
            assert_eq!(AccountId::parse(bad), None, "{bad}");
        }
    }
}
