//! Garbage collection by roots: the decisions, with no IO.
//!
//! Chunks are never reference-counted. Every chunk lives in one *root* (one
//! [`ChunkStore`](crate::ChunkStore) each), and new chunks go only into the
//! one *active* root. A collection ([`plan`]) goes:
//!
//! 1. **Rotate**: a new root becomes active; from then on every new chunk and
//!    manifest goes there. The previous active root is *retired*: read-only,
//!    still read by the sandboxes that mounted an image from it.
//! 2. **Copy forward**: every live manifest still in an older root is made
//!    anew in the active one (its chunks re-encrypted under the new root's
//!    salt), and the live record points at the copy. Done by the caller right
//!    after the rotation; a root that still holds a live manifest (a copy
//!    failed or never ran) is never expired nor deleted.
//! 3. **Expire**, once retired for [`Policy::retire_for_ms`]: nothing should
//!    read it any more. A read of an expired root still succeeds, but raises
//!    an alarm ([`Root::alarm`]): the policy was wrong for someone, and the
//!    root is then never deleted automatically.
//! 4. **Delete**, once expired for [`Policy::expire_for_ms`] without an alarm:
//!    the whole root, at once.
//!
//! One collection takes each root at most one step, so a root goes from
//! active to deleted over at least three collections and both waits.
//!
//! # Invariants (checked by the tests over every small table)
//! - After any plan there is exactly one active root, and it is new if the
//!   plan rotates.
//! - A root holding a live manifest, an alarmed root and the active root are
//!   never expired or deleted.
//! - A root is deleted only after it was expired, and expired only after it
//!   was retired, each for at least the policy's time.

/// Where a root is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootState {
    /// Takes new chunks. Exactly one root is active.
    Active,
    /// Read-only: readable by the sandboxes that mounted images from it.
    Retired { since_ms: i64 },
    /// Should no longer be read (a read raises the alarm).
    Expired { since_ms: i64 },
    /// Its chunks are gone.
    Deleted,
}

/// One root, as the collector's table keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    pub id: String,
    pub state: RootState,
    /// Whether an expired root was read: it is then kept until an operator
    /// decides.
    pub alarm: bool,
}

/// How long a root waits between the steps of its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// From retired to expired: longer than any sandbox that mounted an image
    /// before its copy may live (its keep-alive).
    pub retire_for_ms: i64,
    /// From expired to deleted: time for an alarm to be raised.
    pub expire_for_ms: i64,
}

/// One step of a collection, in the order to take them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Make a new root active (the caller picks its id) and retire the
    /// previous one, then copy live manifests forward.
    Rotate,
    Expire(String),
    Delete(String),
}

/// What a read of a chunk in a root in `state` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadVerdict {
    Ok,
    /// Serve it, and raise the root's alarm.
    Alarm,
    /// The root's chunks are gone.
    Gone,
}

/// The verdict on a read of a root in `state`.
pub fn read(state: RootState) -> ReadVerdict {
    match state {
        RootState::Active | RootState::Retired { .. } => ReadVerdict::Ok,
        RootState::Expired { .. } => ReadVerdict::Alarm,
        RootState::Deleted => ReadVerdict::Gone,
    }
}

/// The steps of one collection at `now_ms`. `live` answers whether a root
/// still holds a live manifest (before this collection's copy forward).
/// With `rotate` false, only the ends of older roots advance.
pub fn plan(
    roots: &[Root],
    live: impl Fn(&str) -> bool,
    now_ms: i64,
    policy: Policy,
    rotate: bool,
) -> Vec<Step> {
    let mut steps = Vec::new();
    if rotate {
        steps.push(Step::Rotate);
    }
    for root in roots {
        if live(&root.id) || root.alarm {
            continue;
        }
        match root.state {
            RootState::Retired { since_ms }
                if now_ms.saturating_sub(since_ms) >= policy.retire_for_ms =>
            {
                steps.push(Step::Expire(root.id.clone()));
            }
            RootState::Expired { since_ms }
                if now_ms.saturating_sub(since_ms) >= policy.expire_for_ms =>
            {
                steps.push(Step::Delete(root.id.clone()));
            }
            _ => {}
        }
    }
    steps
}

/// `roots` after `step` at `now_ms`; `Rotate` adds `new_id` as the active
/// root. The caller applies `Rotate` before copying forward, and `Delete`
/// once the root's chunks are gone.
pub fn apply(roots: &mut Vec<Root>, step: &Step, now_ms: i64, new_id: &str) {
    let set = |roots: &mut Vec<Root>, id: &str, state: RootState| {
        if let Some(root) = roots.iter_mut().find(|r| r.id == id) {
            root.state = state;
        }
    };
    match step {
        Step::Rotate => {
            for root in roots.iter_mut().filter(|r| r.state == RootState::Active) {
                root.state = RootState::Retired { since_ms: now_ms };
            }
            roots.push(Root {
                id: new_id.to_string(),
                state: RootState::Active,
                alarm: false,
            });
        }
        Step::Expire(id) => set(roots, id, RootState::Expired { since_ms: now_ms }),
        Step::Delete(id) => set(roots, id, RootState::Deleted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        retire_for_ms: 10,
        expire_for_ms: 20,
    };

    fn states() -> Vec<RootState> {
        let mut out = vec![RootState::Active, RootState::Deleted];
        for since_ms in [0, 5, 10, 15, 30] {
            out.push(RootState::Retired { since_ms });
            out.push(RootState::Expired { since_ms });
        }
        out
    }

    /// Every table of up to three roots (one of them active), every live set
    /// and alarm, at several times, with and without rotation.
    #[test]
    fn every_small_table_keeps_the_invariants() {
        let states = states();
        let mut checked = 0;
        for a in &states {
            for b in &states {
                for c in &states {
                    let table = [*a, *b, *c];
                    if table.iter().filter(|s| **s == RootState::Active).count() != 1 {
                        continue;
                    }
                    for live_mask in 0..8u8 {
                        for alarm_mask in 0..8u8 {
                            for now in [0, 10, 25, 40, 60] {
                                for rotate in [false, true] {
                                    check(&table, live_mask, alarm_mask, now, rotate);
                                    checked += 1;
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(checked > 10_000, "{checked}");
    }

    fn check(table: &[RootState], live_mask: u8, alarm_mask: u8, now: i64, rotate: bool) {
        let mut roots: Vec<Root> = table
            .iter()
            .enumerate()
            .map(|(i, state)| Root {
                id: format!("r{i}"),
                state: *state,
                alarm: alarm_mask & (1 << i) != 0,
            })
            .collect();
        let before = roots.clone();
        let live = |id: &str| {
            before
                .iter()
                .position(|r| r.id == id)
                .is_some_and(|i| live_mask & (1 << i) != 0)
        };
        let steps = plan(&roots, live, now, POLICY, rotate);
        for step in &steps {
            apply(&mut roots, step, now, "new");
        }
        let active: Vec<&Root> = roots
            .iter()
            .filter(|r| r.state == RootState::Active)
            .collect();
        assert_eq!(active.len(), 1, "{before:?} {steps:?}");
        assert_eq!(active[0].id == "new", rotate);
        for (old, new) in before.iter().zip(&roots) {
            let context = || format!("{old:?} -> {new:?} at {now} ({steps:?})");
            match (old.state, new.state) {
                (x, y) if x == y => {}
                (RootState::Active, RootState::Retired { since_ms }) => {
                    assert!(rotate && since_ms == now, "{}", context())
                }
                (RootState::Retired { since_ms }, RootState::Expired { since_ms: at }) => {
                    assert!(
                        now - since_ms >= POLICY.retire_for_ms && at == now,
                        "{}",
                        context()
                    );
                    assert!(!live(&old.id) && !old.alarm, "{}", context());
                }
                (RootState::Expired { since_ms }, RootState::Deleted) => {
                    assert!(now - since_ms >= POLICY.expire_for_ms, "{}", context());
                    assert!(!live(&old.id) && !old.alarm, "{}", context());
                }
                _ => panic!("not a step of a root's life: {}", context()),
            }
        }
    }

    #[test]
    fn a_root_goes_from_active_to_deleted_over_three_collections() {
        let mut roots = vec![Root {
            id: "a".into(),
            state: RootState::Active,
            alarm: false,
        }];
        let nothing_live = |_: &str| false;
        let run = |roots: &mut Vec<Root>, now: i64, id: &str| {
            for step in plan(roots, nothing_live, now, POLICY, true) {
                apply(roots, &step, now, id);
            }
        };
        run(&mut roots, 0, "b");
        assert_eq!(roots[0].state, RootState::Retired { since_ms: 0 });
        run(&mut roots, 5, "c");
        assert_eq!(
            roots[0].state,
            RootState::Retired { since_ms: 0 },
            "not retired long enough"
        );
        run(&mut roots, 10, "d");
        assert_eq!(roots[0].state, RootState::Expired { since_ms: 10 });
        run(&mut roots, 30, "e");
        assert_eq!(roots[0].state, RootState::Deleted);
        assert_eq!(
            roots
                .iter()
                .filter(|r| r.state == RootState::Active)
                .count(),
            1
        );
    }

    #[test]
    fn reads_of_expired_roots_alarm_and_of_deleted_ones_fail() {
        assert_eq!(read(RootState::Active), ReadVerdict::Ok);
        assert_eq!(read(RootState::Retired { since_ms: 1 }), ReadVerdict::Ok);
        assert_eq!(read(RootState::Expired { since_ms: 1 }), ReadVerdict::Alarm);
        assert_eq!(read(RootState::Deleted), ReadVerdict::Gone);
    }
}
