//! The worker's side of the shared tier: a chunk's 5 stripes fetched from and written to the 5 cache nodes
//! its placement names.
//!
//! # Invariants
//! - [`StripeTier::get`] never returns bytes whose SHA-256 is not the digest asked for (`assemble` checks).
//! - A get sends its 5 stripe requests at once and answers as soon as 4 good stripes rebuild the chunk: it
//!   does not wait for the 5th (whose request is dropped), and asks no node twice (no retries). It waits for
//!   the 5th only when the first 4 do not verify. Everything is bounded by [`Limits::get`]: a hung node costs
//!   nothing while 4 others answer, and at most that limit otherwise.
//! - A put sends the 5 stripes at once and is done when all answered or [`Limits::put`] passed: best
//!   effort, a node that refuses or hangs leaves its stripe unwritten.
//! - Stripe `i` of a chunk goes to, and is read from, node `placement(digest)[i]` (consistent hashing with
//!   bounded loads over the node names: every worker given the same names places alike, in whatever order;
//!   5 distinct nodes when there are 5). With fewer than 5 nodes, a node holds several stripes of a chunk; with
//!   none, every get misses and puts store nothing.
//!
//! Metrics (the `metrics` facade): `ignis_stripe_fetch_seconds` (each stripe request's time to its answer),
//! `ignis_stripes_rebuilt_total` (chunks rebuilt using parity), `ignis_stripes_bad_total` (stripes found
//! wrong, as the assembly counts them), `ignis_chunk_cache_hits_total{tier="shared"}` and
//! `ignis_chunk_cache_misses_total{tier="shared"}`; the same as plain counters in [`StripeTier::stats`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use http::{Method, StatusCode};
use ignis_cachepolicy::Placement;
use ignis_chunks::ChunkDigest;
use ignis_cluster::{Peer, Protocol};
use ignis_sigv4::Credentials;

use crate::assemble::{Answer, Assembly, Outcome};
use crate::erasure::{self, STRIPES};

/// The protocol [`StripeTier::new`] speaks to the nodes: HTTP/1.1, whose p99.9 with one node slow or dead stays
/// within 1.1x of healthy in `bench/cache`, where HTTP/2's, one connection per node, is 7x (the numbers are in
/// ARCHITECTURE.md's known limits).
pub const DEFAULT_PROTOCOL: Protocol = Protocol::Http1;

/// How long a get and a put may take, all requests included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub get: Duration,
    pub put: Duration,
}

impl Default for Limits {
    /// A get: 2 s (a healthy one takes a few milliseconds; past this the origin is the faster way); a put: 10 s.
    fn default() -> Self {
        Limits { get: Duration::from_secs(2), put: Duration::from_secs(10) }
    }
}

/// Why a get gave no chunk: the caller goes to the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Miss {
    /// Fewer than 4 good stripes answered (not held, nodes down or refusing, stripes found wrong).
    #[error("fewer than 4 good stripes of the chunk in the shared tier")]
    Unavailable,
    /// Enough stripes answered, but no 4 of them rebuild bytes with the chunk's hash.
    #[error("the shared tier's stripes do not rebuild the chunk")]
    Unverified,
    /// The get's time limit passed before 4 good stripes answered.
    #[error("the shared tier did not answer in time")]
    TimedOut,
    /// No cache nodes are configured.
    #[error("no cache nodes")]
    NoNodes,
}

/// Why a put stored nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PutError {
    #[error(transparent)]
    TooLarge(#[from] erasure::TooLarge),
    #[error("the chunk's bytes do not hash to {0}")]
    WrongDigest(ChunkDigest),
}

/// The tier's counters since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TierStats {
    pub hits: u64,
    pub misses: u64,
    /// Chunks rebuilt using the parity stripe.
    pub rebuilt: u64,
    /// Stripes found wrong.
    pub bad: u64,
    /// Stripes stored by puts (answered 204).
    pub stripes_stored: u64,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    rebuilt: AtomicU64,
    bad: AtomicU64,
    stripes_stored: AtomicU64,
}

/// The shared tier, as a worker sees it.
pub struct StripeTier {
    nodes: Vec<String>,
    /// `None` only if the ring refused its parameters, which are constants: then every get misses.
    placement: Option<Placement>,
    peers: Vec<Arc<Peer>>,
    limits: Limits,
    counters: Counters,
}

impl std::fmt::Debug for StripeTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeTier").field("nodes", &self.nodes).field("limits", &self.limits).finish()
    }
}

impl StripeTier {
    /// The tier over the cache nodes at `nodes` (`host:port`), calls signed with `credentials`, in
    /// [`DEFAULT_PROTOCOL`].
    pub fn new(nodes: Vec<String>, credentials: Credentials) -> StripeTier {
        StripeTier::with_protocol(nodes, credentials, DEFAULT_PROTOCOL)
    }

    /// The same, the nodes spoken to in `protocol` (a node speaks both).
    pub fn with_protocol(nodes: Vec<String>, credentials: Credentials, protocol: Protocol) -> StripeTier {
        let peer = |node: &String| Arc::new(Peer::with_protocol(node, credentials.clone(), protocol));
        let peers = nodes.iter().map(peer).collect();
        let placement = Placement::new(&nodes, STRIPES).ok();
        StripeTier { nodes, placement, peers, limits: Limits::default(), counters: Counters::default() }
    }

    /// The same tier with other time limits.
    pub fn with_limits(mut self, limits: Limits) -> StripeTier {
        self.limits = limits;
        self
    }

    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    pub fn stats(&self) -> TierStats {
        let c = &self.counters;
        TierStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            rebuilt: c.rebuilt.load(Ordering::Relaxed),
            bad: c.bad.load(Ordering::Relaxed),
            stripes_stored: c.stripes_stored.load(Ordering::Relaxed),
        }
    }

    /// For each stripe index of the chunk, the index in [`StripeTier::nodes`] of the node that holds it
    /// (consistent hashing with bounded loads); empty when there are no nodes.
    pub fn placement(&self, digest: ChunkDigest) -> &[usize] {
        self.placement.as_ref().map_or(&[], |placement| placement.nodes(digest.as_bytes()))
    }

    /// The node of each stripe of the chunk; `None` with no nodes.
    fn peers(&self, digest: ChunkDigest) -> Option<[Arc<Peer>; STRIPES]> {
        let placement = self.placement(digest);
        let peers: Option<Vec<Arc<Peer>>> = placement.iter().map(|&node| self.peers.get(node).cloned()).collect();
        peers?.try_into().ok()
    }

    fn path(digest: ChunkDigest, index: usize) -> String {
        format!("/ignis/stripes/{digest}/{index}")
    }

    /// The chunk named `digest`, rebuilt from its stripes and its hash checked; see the module docs.
    pub async fn get(&self, digest: ChunkDigest) -> Result<Bytes, Miss> {
        let outcome = match self.peers(digest) {
            Some(peers) => self.assemble(digest, peers).await,
            None => Err(Miss::NoNodes),
        };
        match &outcome {
            Ok(_) => {
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("ignis_chunk_cache_hits_total", "tier" => "shared").increment(1);
            }
            Err(_) => {
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("ignis_chunk_cache_misses_total", "tier" => "shared").increment(1);
            }
        }
        outcome
    }

    async fn assemble(&self, digest: ChunkDigest, peers: [Arc<Peer>; STRIPES]) -> Result<Bytes, Miss> {
        let mut requests: FuturesUnordered<_> = peers
            .into_iter()
            .enumerate()
            .map(|(index, peer)| {
                async move {
                    let started = Instant::now();
                    let answer = match peer.call(Method::GET, &Self::path(digest, index), Bytes::new()).await {
                        Ok((StatusCode::OK, bytes)) => Answer::Stripe(bytes),
                        Ok(_) | Err(_) => Answer::Failed,
                    };
                    metrics::histogram!("ignis_stripe_fetch_seconds").record(started.elapsed().as_secs_f64());
                    (index, answer)
                }
            })
            .collect();
        let mut assembly = Assembly::new(digest);
        let assembled = tokio::time::timeout(self.limits.get, async {
            while let Some((index, answer)) = requests.next().await {
                if let Some(outcome) = assembly.offer(index, answer) {
                    return outcome;
                }
            }
            // Every answer was offered: the assembly has decided; this is not reached.
            Outcome::Unavailable
        })
        .await;
        let bad = assembly.bad();
        if bad > 0 {
            self.counters.bad.fetch_add(bad, Ordering::Relaxed);
            metrics::counter!("ignis_stripes_bad_total").increment(bad);
            tracing::warn!(%digest, bad, "stripes of the shared tier found wrong");
        }
        match assembled {
            Ok(Outcome::Chunk { bytes, rebuilt }) => {
                if rebuilt {
                    self.counters.rebuilt.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("ignis_stripes_rebuilt_total").increment(1);
                }
                Ok(bytes)
            }
            Ok(Outcome::Unavailable) => Err(Miss::Unavailable),
            Ok(Outcome::Unverified) => Err(Miss::Unverified),
            Err(_) => Err(Miss::TimedOut),
        }
    }

    /// Writes the chunk's stripes to their nodes, best effort (see the module docs); how many were stored.
    pub async fn put(&self, digest: ChunkDigest, chunk: Bytes) -> Result<usize, PutError> {
        if ChunkDigest::of(&chunk) != digest {
            return Err(PutError::WrongDigest(digest));
        }
        let stripes = erasure::encode(&chunk)?;
        let Some(peers) = self.peers(digest) else { return Ok(0) };
        let mut requests: FuturesUnordered<_> = stripes
            .into_iter()
            .zip(peers)
            .enumerate()
            .map(|(index, (stripe, peer))| async move {
                peer.call(Method::PUT, &Self::path(digest, index), stripe).await
            })
            .collect();
        let mut stored = 0;
        let _ = tokio::time::timeout(self.limits.put, async {
            while let Some(answer) = requests.next().await {
                match answer {
                    Ok((StatusCode::NO_CONTENT, _)) => stored += 1,
                    Ok((status, body)) => {
                        let body = String::from_utf8_lossy(&body);
                        tracing::debug!(%digest, %status, %body, "a stripe was refused")
                    }
                    Err(e) => tracing::debug!(%digest, error = %e, "a stripe was not written"),
                }
            }
        })
        .await;
        self.counters.stripes_stored.fetch_add(stored as u64, Ordering::Relaxed);
        Ok(stored)
    }
}
