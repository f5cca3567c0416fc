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
//!
//! A sandbox's start also carries a [`Tag`]: what it runs (the function's revision) and what its front end's
//! table knew of it. A host keeps an orphan for [`ADOPTION_GRACE`] before it ends it, and lists it
//! (`GET /sandboxes`, [`Listed`]); the front end that takes the dead one's partition over makes the sandboxes of its
//! functions its own (`POST /sandboxes/{id}/owner`, from the dead owner to itself: one front end at a time holds a
//! sandbox) and adds them to its table ([`adoptable`]). A sandbox running an invocation is not taken over.

use std::time::Duration;

use serde_json::{Value, json};

/// How long a host keeps a sandbox whose front end is gone, for another to take it over, before it ends it.
pub const ADOPTION_GRACE: Duration = Duration::from_secs(5);

/// The front end a sandbox was started by: its etcd lease, and the revision its listing was made at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub front_end: i64,
    pub since: i64,
}

/// What a front end says of a sandbox it starts (in a cluster), for another front end that takes it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    /// The revision it runs: account, function, revision id.
    pub account: String,
    pub function: String,
    pub revision_id: String,
    /// Kept for provisioned concurrency.
    pub provisioned: bool,
    /// From when it may not be handed out (its credentials near their expiry), in Unix milliseconds.
    pub renew_at_ms: Option<u64>,
}

/// A front end's claim on a sandbox it starts: who it is, and (from a front end that says) what the sandbox runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub owner: Owner,
    pub tag: Option<Tag>,
}

/// A sandbox with a claim, as its host lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The host's id of it.
    pub id: String,
    pub owner: Owner,
    pub tag: Tag,
    pub memory_mb: u32,
    /// An invocation runs on it now.
    pub busy: bool,
}

/// Whether a front end seeing `view` may take `listed` over: its owner is gone by `view` (so it is not this front
/// end, which its own view lists), and no invocation runs on it.
pub fn adoptable(listed: &Listed, view: &FrontEnds) -> bool {
    orphaned(&listed.owner, view) && !listed.busy
}

/// The owner of a sandbox its front end gave up with a partition it no longer leads: no front end (leases are
/// never 0), so orphaned by every view, for the partition's new leader to take over.
pub const RELEASED: Owner = Owner { front_end: 0, since: 0 };

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

impl Tag {
    fn encode(&self) -> Value {
        json!({
            "Account": self.account,
            "Function": self.function,
            "RevisionId": self.revision_id,
            "Provisioned": self.provisioned,
            "RenewAtMs": self.renew_at_ms,
        })
    }

    fn decode(v: &Value) -> Result<Tag, String> {
        let text = |name: &str| v.get(name).and_then(Value::as_str).map(str::to_string).ok_or(format!("Tag.{name} is not a string"));
        let renew_at_ms = match v.get("RenewAtMs") {
            None | Some(Value::Null) => None,
            Some(n) => Some(n.as_u64().ok_or("Tag.RenewAtMs is not a number")?),
        };
        Ok(Tag {
            account: text("Account")?,
            function: text("Function")?,
            revision_id: text("RevisionId")?,
            provisioned: v.get("Provisioned").and_then(Value::as_bool).ok_or("Tag.Provisioned is not a boolean")?,
            renew_at_ms,
        })
    }
}

impl Claim {
    /// The `"Owner"` and `"Tag"` of a start's body.
    pub(crate) fn encode_into(claim: Option<&Claim>, body: &mut Value) {
        body["Owner"] = claim.map_or(Value::Null, |claim| claim.owner.encode());
        body["Tag"] = claim.and_then(|claim| claim.tag.as_ref()).map_or(Value::Null, Tag::encode);
    }

    /// A start's claim: none without an `"Owner"`; an owner without a `"Tag"` says nothing of what it runs.
    pub(crate) fn decode(v: &Value) -> Result<Option<Claim>, String> {
        let Some(owner) = Owner::decode(v)? else { return Ok(None) };
        let tag = match v.get("Tag") {
            None | Some(Value::Null) => None,
            Some(tag) => Some(Tag::decode(tag)?),
        };
        Ok(Some(Claim { owner, tag }))
    }
}

impl Listed {
    /// `GET /sandboxes`' answer.
    pub fn encode_all(listed: &[Listed]) -> Value {
        let all: Vec<Value> = listed
            .iter()
            .map(|l| json!({ "SandboxId": l.id, "Owner": l.owner.encode(), "Tag": l.tag.encode(), "MemoryMb": l.memory_mb, "Busy": l.busy }))
            .collect();
        json!({ "Sandboxes": all })
    }

    /// [`Listed::encode_all`]'s JSON back.
    pub fn decode_all(v: &Value) -> Result<Vec<Listed>, String> {
        let all = v.get("Sandboxes").and_then(Value::as_array).ok_or("Sandboxes is not a list")?;
        all.iter()
            .map(|l| {
                let owner = Owner::decode(l)?.ok_or("a listed sandbox has no Owner")?;
                Ok(Listed {
                    id: l.get("SandboxId").and_then(Value::as_str).ok_or("SandboxId is not a string")?.to_string(),
                    owner,
                    tag: Tag::decode(l.get("Tag").ok_or("a listed sandbox has no Tag")?)?,
                    memory_mb: l.get("MemoryMb").and_then(Value::as_u64).and_then(|n| u32::try_from(n).ok()).ok_or("MemoryMb is not a number")?,
                    busy: l.get("Busy").and_then(Value::as_bool).ok_or("Busy is not a boolean")?,
                })
            })
            .collect()
    }
}

/// A take-over's body (`POST /sandboxes/{id}/owner`): the owner the sandbox must still have, and the new one.
pub fn encode_take_over(from: &Owner, to: &Owner) -> Value {
    json!({ "From": from.encode(), "To": to.encode() })
}

/// [`encode_take_over`]'s JSON back.
pub fn decode_take_over(v: &Value) -> Result<(Owner, Owner), String> {
    let side = |name: &str| -> Result<Owner, String> {
        Owner::decode(&json!({ "Owner": v.get(name).cloned().unwrap_or(Value::Null) }))?.ok_or(format!("no {name}"))
    };
    Ok((side("From")?, side("To")?))
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

    fn listed(owner: i64, busy: bool) -> Listed {
        let tag = Tag { account: "1".into(), function: "f".into(), revision_id: "r".into(), provisioned: false, renew_at_ms: None };
        Listed { id: "s".into(), owner: Owner { front_end: owner, since: 100 }, tag, memory_mb: 128, busy }
    }

    #[test]
    fn a_sandbox_is_taken_over_only_from_a_gone_owner_and_only_when_idle() {
        for revision in [99, 100, 200] {
            for live in [vec![], vec![7], vec![3], vec![3, 7]] {
                let view = FrontEnds { revision, live: live.clone() };
                for busy in [false, true] {
                    let expected = revision >= 100 && !live.contains(&7) && !busy;
                    assert_eq!(adoptable(&listed(7, busy), &view), expected, "{view:?} busy {busy}");
                }
            }
        }
    }

    #[test]
    fn a_released_sandbox_is_orphaned_by_every_view() {
        for view in [FrontEnds { revision: 0, live: vec![] }, FrontEnds { revision: 9, live: vec![1, 2, i64::MAX] }] {
            assert!(orphaned(&RELEASED, &view));
        }
    }

    #[test]
    fn claims_listings_and_take_overs_cross_the_wire_unchanged() {
        let owner = Owner { front_end: 7, since: 100 };
        let tag = Tag { account: "123456789012".into(), function: "f".into(), revision_id: "r1".into(), provisioned: true, renew_at_ms: Some(u64::MAX) };
        for claim in [Claim { owner, tag: Some(tag.clone()) }, Claim { owner, tag: None }] {
            let mut body = json!({});
            Claim::encode_into(Some(&claim), &mut body);
            assert_eq!(Claim::decode(&body), Ok(Some(claim)));
        }
        let mut body = json!({});
        Claim::encode_into(None, &mut body);
        assert_eq!(Claim::decode(&body), Ok(None));
        assert!(Claim::decode(&json!({ "Owner": owner.encode(), "Tag": { "Account": 1 } })).is_err());
        let all = vec![listed(7, true), Listed { tag, ..listed(8, false) }];
        assert_eq!(Listed::decode_all(&Listed::encode_all(&all)), Ok(all));
        assert!(Listed::decode_all(&json!({ "Sandboxes": [{ "SandboxId": "s" }] })).is_err());
        assert!(Listed::decode_all(&json!({})).is_err());
        let to = Owner { front_end: 9, since: 200 };
        assert_eq!(decode_take_over(&encode_take_over(&owner, &to)), Ok((owner, to)));
        assert!(decode_take_over(&json!({ "From": owner.encode() })).is_err());
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
