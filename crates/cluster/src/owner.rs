//! Which front end a sandbox on a worker host belongs to, so that the host ends the sandboxes of a front end
//! that is gone (pure).
//!
//! In a cluster, every front end places sandboxes on the same worker hosts, each keeping its own table of them.
//! A front end that dies takes its table with it: its sandboxes on the hosts would run on, holding memory that
//! the other front ends now count as theirs. So a front end names itself in each start ([`Owner`]: its etcd
//! lease and the etcd revision its listing was made at), and its answers to heartbeats say which front ends are
//! listed, as of which revision ([`FrontEnds`]). A host ends a sandbox whose owner is not listed in an answer
//! that is at least as recent as the owner's listing ([`orphaned`]): that front end's listing was deleted
//! since, with its lease. An answer older than the listing says nothing about it (the answering front end may not
//! have seen it yet), so nothing is ended on a stale view.

use serde_json::{Value, json};

/// The front end a sandbox was started by: its etcd lease, and the revision its listing was made at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub front_end: i64,
    pub since: i64,
}

/// Who a front end is now (`None`: not in a cluster), asked at each start: a front end whose etcd lease expired
/// takes a new one, and names itself by it from then on.
pub type OwnerSource = std::sync::Arc<dyn Fn() -> Option<Owner> + Send + Sync>;

/// The front ends one front end's view lists, and the revision that view has reached at least.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontEnds {
    pub revision: i64,
    pub live: Vec<i64>,
}

/// Whether a sandbox of `owner` belongs to a front end that is gone, by `view`.
pub fn orphaned(owner: &Owner, view: &FrontEnds) -> bool {
    owner.since <= view.revision && !view.live.contains(&owner.front_end)
}

impl Owner {
    pub(crate) fn encode(&self) -> Value {
        json!({ "FrontEnd": self.front_end, "Since": self.since })
    }

    /// The `"Owner"` of a start's body (`null` or absent: none).
    pub(crate) fn decode(v: &Value) -> Result<Option<Owner>, String> {
        match v.get("Owner") {
            None | Some(Value::Null) => Ok(None),
            Some(owner) => {
                let number = |name: &str| owner.get(name).and_then(Value::as_i64).ok_or(format!("Owner.{name} is not a number"));
                Ok(Some(Owner { front_end: number("FrontEnd")?, since: number("Since")? }))
            }
        }
    }
}

impl FrontEnds {
    pub fn encode(&self) -> Value {
        json!({ "Revision": self.revision, "Live": self.live })
    }

    /// The `"FrontEnds"` of a heartbeat's or registration's answer, if it has a readable one.
    pub fn decode(answer: &Value) -> Option<FrontEnds> {
        let v = answer.get("FrontEnds")?;
        let live = v.get("Live")?.as_array()?.iter().map(Value::as_i64).collect::<Option<Vec<i64>>>()?;
        Some(FrontEnds { revision: v.get("Revision")?.as_i64()?, live })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sandbox_is_orphaned_only_by_a_view_that_saw_its_owner_listed_and_then_gone() {
        let owner = Owner { front_end: 7, since: 100 };
        for revision in [0, 99, 100, 101, 1_000] {
            for live in [vec![], vec![7], vec![3], vec![3, 7]] {
                let view = FrontEnds { revision, live: live.clone() };
                let expected = revision >= 100 && !live.contains(&7);
                assert_eq!(orphaned(&owner, &view), expected, "{view:?}");
            }
        }
    }

    #[test]
    fn owners_and_views_cross_the_wire_unchanged() {
        let owner = Owner { front_end: i64::MAX, since: 1 };
        let body = json!({ "Owner": owner.encode() });
        assert_eq!(Owner::decode(&body), Ok(Some(owner)));
        assert_eq!(Owner::decode(&json!({})), Ok(None));
        assert_eq!(Owner::decode(&json!({ "Owner": null })), Ok(None));
        assert!(Owner::decode(&json!({ "Owner": { "FrontEnd": "x", "Since": 1 } })).is_err());
        let view = FrontEnds { revision: 5, live: vec![1, 2] };
        assert_eq!(FrontEnds::decode(&json!({ "FrontEnds": view.encode() })), Some(view));
        assert_eq!(FrontEnds::decode(&json!({ "FrontEnds": { "Revision": 5, "Live": ["1"] } })), None);
        assert_eq!(FrontEnds::decode(&json!({})), None);
    }
}
