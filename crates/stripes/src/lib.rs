//! The shared chunk cache tier: chunks erasure-coded as 4 data + 1 parity stripes over cache nodes, so that
//! one slow or dead node costs nothing.
//!
//! - [`erasure`] (pure): a chunk as 5 stripes, each behind a header (format version, index, code, the
//!   chunk's length), and back from any 4.
//! - `assemble` (pure, private): rebuilding a chunk from stripes as they arrive, in any order, with its
//!   hash checked; which stripes were wrong.
//! - [`node`]: the cache node ([`CacheNode`]): signed HTTP/1.1 and HTTP/2 on one port (`PUT`/`GET
//!   /ignis/stripes/{digest}/{index}`, `GET /ignis/health`), stripes kept opaquely in a memory tier then a
//!   disk tier, each bounded in bytes, LRU-K eviction.
//! - [`client`]: [`StripeTier`], the worker's client: places a chunk's stripes on 5 nodes, reads all 5 at
//!   once and rebuilds from the first 4 good ones, writes them best effort; over HTTP/2 by default (one
//!   connection per node), or HTTP/1.1.
//! - [`tiered`]: [`TieredChunkStore`], a [`ignis_chunks::ChunkStore`] with the tier in front of the origin:
//!   a miss is read from the origin and its stripes written by the worker that missed.
//!
//! # API boundary
//! The image loader holds the tiered store as an `Arc<dyn ChunkStore>` and knows nothing of stripes; the
//! binary starts [`CacheNode`]s (`ignis cache`) and gives workers the node list. Nodes and clients share
//! only the protocol in [`node`] and the stripe format in [`erasure`]; nodes never look inside a stripe.
//!
//! # Invariants
//! - No bytes leave this crate as a chunk unless their SHA-256 is its digest.
//! - Every call to a node is signed with the cluster's key (as [`ignis_cluster::Peer`] signs); a node
//!   reads nothing of an unsigned request's body.
//! - Every get and put is bounded in time ([`client::Limits`]); a node's memory and disk are bounded in
//!   bytes ([`NodeConfig`]).

mod assemble;
pub mod client;
pub mod erasure;
pub mod node;
mod store;
pub mod tiered;

pub use client::{Miss, PutError, StripeTier, TierStats};
pub use node::{CacheNode, NodeConfig, NodeError};
pub use store::NodeStats;
pub use tiered::{PutSlots, TieredChunkStore, TieredStats};
