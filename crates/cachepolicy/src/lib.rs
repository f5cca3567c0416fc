//! The decisions of Ignis's tiered chunk cache, as pure code: no IO, no clock, no threads, no randomness.
//!
//! - [`eviction`]: which chunks a byte-bounded cache keeps. [`LruK`] (O'Neil, O'Neil and Weikum, 1993; K = 2 by
//!   default), [`Lru`] and [`Fifo`] behind one [`Eviction`] trait; [`Policy`] names them (`lru-2`, `lru`,
//!   `fifo`) and builds one. The caller (a memory or disk tier) holds the bytes and asks the policy what to
//!   evict; events are ordered by a use counter, not by time.
//! - [`ring`]: which cache nodes hold a chunk's stripes. [`Placement`] is consistent hashing with bounded loads,
//!   computed from the node names alone, so every worker that knows the same nodes places every chunk the same
//!   way without asking a directory.
//!
//! `src/bin/cache-sim.rs` (`bench/cache-policy`) replays a synthetic trace of chunk reads against the eviction
//! policies.
//!
//! **Boundary**: keys are the caller's (any `Clone + Eq + Hash` for eviction, a 32-byte chunk digest for
//! placement); sizes are bytes the caller states. Nothing here reads or writes a chunk.

pub mod eviction;
pub mod ring;

pub use eviction::{Admission, Eviction, Fifo, Lru, LruK, Policy, Queue, UnknownPolicy};
pub use ring::{Placement, PlacementError};

