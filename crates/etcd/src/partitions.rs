//! [`Partitions`]: assignment partitions over etcd, the `ignis_invoke::Assignment` of a cluster's front end.
//!
//! - Functions are hashed into [`PARTITIONS`] partitions ([`partition_of`]). One front end at a time leads each:
//!   it holds `leaders/partitions/<p>` (under its [`Presence`] lease) and runs every invocation of the
//!   partition's functions on its own sandboxes; the other front ends forward theirs to it (the worker protocol's
//!   invocation and outcome, `POST /ignis/invocations/{account}/{function}/{revision}`, signed with the
//!   administrator's key), so a function is warm once for the whole cluster.
//! - Who should lead is decided by rendezvous hashing over the front ends listed with an address
//!   ([`preferred`], pure): every front end computes the same answer, and one joining or leaving moves only the
//!   partitions it gains or had. Every [`EVERY`] each front end claims the partitions it should lead that no one
//!   holds, and gives up those it holds and should not ([`moves`], pure).
//! - A leader that dies holds its partitions until its lease expires ([`crate::presence::LEASE_TTL`]); the
//!   front end preferred next claims them at its next look. Meanwhile forwarded invocations are not taken, and run
//!   on the front end they arrived at: no invocation fails for a leader's loss. The new leader takes the dead
//!   one's sandboxes of its functions over from the worker hosts (`ignis_cluster::owner`): after each claim, and
//!   each time a front end leaves the listing, the hook [`Partitions::on_change`] sets is called. A front end that
//!   gives a partition up (another joined, which should lead it) gives up its idle sandboxes of it on the worker
//!   hosts too ([`Partitions::on_release`]), so the new leader takes them over warm.
//!
//! # Invariants
//! - A partition has at most one leader at a time (its key is made only where absent, under the leader's lease).
//! - No request to etcd on the invocation path: leaders and addresses are read from watched memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use http::{Method, StatusCode};
use ignis_cluster::{Peer, PeerError};
use ignis_invoke::assignment::{Assignment, Described, Forwarded, Leader, decode_error};
use ignis_invoke::{BoxFuture, InvokeError, Target};
use ignis_sigv4::Credentials;
use ignis_worker::{Invocation, Outcome};
use sha2::{Digest, Sha256};

use crate::members::EtcdMembership;
use crate::{Etcd, EtcdError, Mirror, Presence, key};

/// How many partitions functions are hashed into.
pub const PARTITIONS: u32 = 32;
/// How often a front end looks at who leads what.
pub const EVERY: Duration = Duration::from_millis(250);
const LEADERS: &str = "leaders/partitions/";
/// Beyond a function's timeout, how long a forwarded invocation may take (its sandbox's start, the hop).
const FORWARD_MARGIN: Duration = Duration::from_secs(30);

/// The partition of `function` of `account`.
pub fn partition_of(account: &str, function: &str) -> u32 {
    let digest = Sha256::new().chain_update(account).chain_update([0]).chain_update(function).finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % PARTITIONS
}

/// The front end that should lead `partition` among `front_ends` (their leases): the one whose hash with the
/// partition is highest.
pub fn preferred(partition: u32, front_ends: &[i64]) -> Option<i64> {
    let weight = |lease: i64| {
        let digest = Sha256::new().chain_update(partition.to_be_bytes()).chain_update(lease.to_be_bytes()).finalize();
        (u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")), lease)
    };
    front_ends.iter().copied().max_by_key(|&lease| weight(lease))
}

/// What front end `me` should do about the partitions: claim those it should lead that no one holds, give up those
/// it holds and should not.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Moves {
    pub claim: Vec<u32>,
    pub release: Vec<u32>,
}

/// [`Moves`] for `me`, given the front ends listed and who holds each partition now.
pub fn moves(me: i64, front_ends: &[i64], leaders: &BTreeMap<u32, i64>) -> Moves {
    let mut moves = Moves::default();
    for partition in 0..PARTITIONS {
        let mine = preferred(partition, front_ends) == Some(me);
        match leaders.get(&partition) {
            None if mine => moves.claim.push(partition),
            Some(&holder) if holder == me && !mine => moves.release.push(partition),
            _ => {}
        }
    }
    moves
}

/// What [`Partitions::on_release`] calls.
pub type Released = Arc<dyn Fn(Vec<u32>) + Send + Sync>;

/// The partitions' leaders, followed from etcd; and the front ends they are reached at.
pub struct Partitions {
    etcd: Etcd,
    presence: Arc<Presence>,
    membership: Arc<EtcdMembership>,
    credentials: Credentials,
    leaders: Arc<Mutex<BTreeMap<u32, i64>>>,
    /// One client per listed front end's address (those no longer listed go at the next look).
    peers: Mutex<HashMap<String, Arc<FrontEnd>>>,
    /// The front ends listed at the last look.
    listed: Mutex<Vec<i64>>,
    /// Called after a look that claimed a partition or found a front end gone.
    changed: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
    /// Called with the partitions a look gave up.
    released: Mutex<Option<Released>>,
    _mirror: Mirror,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Partitions {
    /// Follows the partitions' leaders, and claims and gives up partitions every [`EVERY`] (until dropped).
    /// `credentials` (the administrator's) sign the invocations forwarded to other front ends.
    pub async fn start(
        etcd: Etcd,
        presence: Arc<Presence>,
        membership: Arc<EtcdMembership>,
        credentials: Credentials,
    ) -> Result<Arc<Partitions>, EtcdError> {
        let leaders = Arc::new(Mutex::new(BTreeMap::new()));
        let mirror = Mirror::start(etcd.clone(), key(LEADERS), crate::mirror::holders(Arc::downgrade(&leaders))).await?;
        let partitions = Arc::new(Partitions {
            etcd,
            presence,
            membership,
            credentials,
            leaders,
            peers: Mutex::default(),
            listed: Mutex::default(),
            changed: Mutex::default(),
            released: Mutex::default(),
            _mirror: mirror,
        });
        crate::every(EVERY, Arc::downgrade(&partitions), "cannot claim or give up partitions", |partitions| async move {
            partitions.look().await
        });
        Ok(partitions)
    }

    /// The leader of `partition` now, if one holds it.
    fn holder(&self, partition: u32) -> Option<i64> {
        lock(&*self.leaders).get(&partition).copied()
    }

    /// Whether this front end leads the partition of `function` of `account` now.
    pub fn leads(&self, account: &str, function: &str) -> bool {
        self.holder(partition_of(account, function)) == Some(self.presence.id())
    }

    /// Calls `hook` (which must not block) after each look that claimed a partition, or found a front end listed
    /// before gone: then sandboxes may be this front end's to take over.
    pub fn on_change(&self, hook: Arc<dyn Fn() + Send + Sync>) {
        *lock(&self.changed) = Some(hook);
    }

    fn peer(&self, address: &str) -> Arc<FrontEnd> {
        let mut peers = lock(&self.peers);
        peers
            .entry(address.to_string())
            .or_insert_with(|| Arc::new(FrontEnd { peer: Peer::new(address, self.credentials.clone()) }))
            .clone()
    }

    /// Calls `hook` (which must not block) with the partitions each look gave up (to the front end preferred for
    /// them): this front end's sandboxes of their functions are then the next leader's to take over.
    pub fn on_release(&self, hook: Released) {
        *lock(&self.released) = Some(hook);
    }

    fn changed(&self) {
        let hook = lock(&self.changed).clone();
        if let Some(hook) = hook {
            hook();
        }
    }

    /// One look: claims and gives up what [`moves`] says.
    async fn look(&self) -> Result<(), EtcdError> {
        let Some(_looking) = self.presence.looking().await else { return Ok(()) };
        let me = self.presence.id();
        let reached = self.membership.front_ends_reached();
        // Clients of front ends no longer listed go.
        lock(&self.peers).retain(|address, _| reached.values().any(|a| a == address));
        let front_ends: Vec<i64> = reached.into_keys().collect();
        let gone = {
            let mut listed = lock(&self.listed);
            let gone = listed.iter().any(|lease| !front_ends.contains(lease));
            listed.clone_from(&front_ends);
            gone
        };
        if gone {
            self.changed();
        }
        let leaders = lock(&*self.leaders).clone();
        let Moves { claim, release } = moves(me, &front_ends, &leaders);
        for partition in claim {
            if self.presence.claim(&self.etcd, &key(&format!("{LEADERS}{partition}"))).await? {
                tracing::info!(partition, "leading the partition");
                self.changed();
            }
        }
        let mut released = Vec::new();
        for partition in release {
            let name = key(&format!("{LEADERS}{partition}"));
            let txn = Txn::new()
                .when([Compare::value(name.as_str(), CompareOp::Equal, format!("{me:x}"))])
                .and_then([TxnOp::delete(name.as_str(), None)]);
            if self.etcd.txn(txn).await?.0.succeeded() {
                tracing::info!(partition, "the partition goes to the front end preferred for it");
                released.push(partition);
            }
        }
        let hook = lock(&self.released).clone();
        if let Some(hook) = hook.filter(|_| !released.is_empty()) {
            hook(released);
        }
        Ok(())
    }
}

/// Looks every [`EVERY`] while `partitions` lives.
impl Assignment for Partitions {
    fn leader(&self, account: &str, function: &str) -> Option<Arc<dyn Leader>> {
        let holder = self.holder(partition_of(account, function))?;
        if holder == self.presence.id() {
            return None;
        }
        let address = self.membership.front_end_address(holder)?;
        Some(self.peer(&address))
    }

    fn describe(&self, account: &str, function: &str) -> Described {
        let partition = partition_of(account, function);
        let mut reached = self.membership.front_ends_reached();
        let holder = self.holder(partition);
        let settled = holder.is_some() && holder == preferred(partition, &reached.keys().copied().collect::<Vec<_>>());
        Described { partition, leader: holder.and_then(|holder| reached.remove(&holder)), settled }
    }
}

/// Another front end, as a partition's leader.
struct FrontEnd {
    peer: Peer,
}

impl Leader for FrontEnd {
    fn run<'a>(&'a self, target: &'a Target, invocation: Invocation) -> BoxFuture<'a, Result<Outcome, Forwarded>> {
        Box::pin(async move {
            let revision = &target.function.revision;
            let path = format!("/ignis/invocations/{}/{}/{}", revision.account, revision.function, revision.revision_id);
            let body = Bytes::from(ignis_cluster::encode_invocation(&invocation));
            let lost = |why: String| {
                Forwarded::Refused(InvokeError::WorkerLost(format!("the front end at {} leading the function: {why}", self.peer.authority())))
            };
            let limit = target.function.timeout + FORWARD_MARGIN;
            match tokio::time::timeout(limit, self.peer.call(Method::POST, &path, body)).await {
                Ok(Ok((StatusCode::OK, answer))) => match ignis_cluster::decode_outcome(&answer) {
                    Ok(Some(outcome)) => Ok(outcome),
                    Ok(None) => Err(Forwarded::NotTaken(invocation)),
                    Err(e) => Err(lost(format!("its answer: {e}"))),
                },
                Ok(Ok((_, answer))) => {
                    let error = serde_json::from_slice(&answer).ok().and_then(|v| decode_error(&v));
                    match error {
                        Some(error) => Err(Forwarded::Refused(error)),
                        // Not a leader's answer (an older front end, say): run it here.
                        None => Err(Forwarded::NotTaken(invocation)),
                    }
                }
                // Not reached, or lost while it ran: run here (see `ignis_invoke::assignment`).
                Ok(Err(PeerError::Connect(_) | PeerError::Transport(_))) => Err(Forwarded::NotTaken(invocation)),
                Err(_) => Err(lost("no answer in time".into())),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_function_has_one_partition_in_range_and_keeps_it() {
        for i in 0..1000 {
            let function = format!("f{i}");
            let partition = partition_of("123456789012", &function);
            assert!(partition < PARTITIONS);
            assert_eq!(partition, partition_of("123456789012", &function));
        }
        let used: std::collections::BTreeSet<u32> = (0..1000).map(|i| partition_of("1", &format!("f{i}"))).collect();
        assert_eq!(used.len(), PARTITIONS as usize, "spread over every partition");
    }

    /// Every subset of `all`.
    fn subsets(all: &[i64]) -> Vec<Vec<i64>> {
        (0..1u32 << all.len()).map(|mask| all.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, &l)| l).collect()).collect()
    }

    #[test]
    fn the_preferred_leader_is_listed_and_moves_only_when_it_leaves() {
        let all = [3, 17, 42, 1_000_003, i64::MAX];
        for front_ends in subsets(&all) {
            for partition in 0..PARTITIONS {
                let Some(chosen) = preferred(partition, &front_ends) else {
                    assert!(front_ends.is_empty());
                    continue;
                };
                assert!(front_ends.contains(&chosen));
                // Order does not matter.
                let mut reversed = front_ends.clone();
                reversed.reverse();
                assert_eq!(preferred(partition, &reversed), Some(chosen));
                // Another front end leaving changes nothing; one joining takes it or leaves it be.
                for other in front_ends.iter().filter(|&&l| l != chosen) {
                    let fewer: Vec<i64> = front_ends.iter().copied().filter(|l| l != other).collect();
                    assert_eq!(preferred(partition, &fewer), Some(chosen));
                }
                for joining in all.iter().filter(|l| !front_ends.contains(l)) {
                    let more: Vec<i64> = front_ends.iter().copied().chain([*joining]).collect();
                    assert!(matches!(preferred(partition, &more), Some(l) if l == chosen || l == *joining));
                }
            }
        }
    }

    #[test]
    fn three_front_ends_each_lead_some_partitions() {
        let front_ends = [11, 22, 33];
        for me in front_ends {
            let led = (0..PARTITIONS).filter(|&p| preferred(p, &front_ends) == Some(me)).count();
            assert!(led > 0, "{me} leads nothing");
        }
    }

    #[test]
    fn a_front_end_claims_what_it_should_lead_and_no_one_holds_and_gives_up_what_it_should_not() {
        let all = [11, 22, 33];
        for front_ends in subsets(&all).into_iter().filter(|s| !s.is_empty()) {
            for me in front_ends.clone() {
                // No one holds anything: it claims exactly its own.
                let moves_now = moves(me, &front_ends, &BTreeMap::new());
                let own: Vec<u32> = (0..PARTITIONS).filter(|&p| preferred(p, &front_ends) == Some(me)).collect();
                assert_eq!(moves_now, Moves { claim: own.clone(), release: vec![] });
                // It holds everything: it gives up what is not its own, claims nothing.
                let all_mine: BTreeMap<u32, i64> = (0..PARTITIONS).map(|p| (p, me)).collect();
                let others: Vec<u32> = (0..PARTITIONS).filter(|p| !own.contains(p)).collect();
                assert_eq!(moves(me, &front_ends, &all_mine), Moves { claim: vec![], release: others });
                // Another holds everything (a dead one whose lease has not expired, say): it waits.
                let held: BTreeMap<u32, i64> = (0..PARTITIONS).map(|p| (p, 99)).collect();
                assert_eq!(moves(me, &front_ends, &held), Moves::default());
            }
        }
    }
}
