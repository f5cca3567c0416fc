//! Which cache nodes hold a chunk's stripes: consistent hashing with bounded loads (Mirrokni, Thorup and
//! Zadimoghaddam, 2018), computed by every worker from the node names alone, with no directory service.
//!
//! # How
//!
//! - The key space (a chunk's 32-byte digest, uniform) is cut into `partitions` equal ranges (4096 by default);
//!   the key's first 8 bytes pick one. A [`Placement`] is a table: for each partition, `stripes` nodes.
//! - A ring of 2^64 points holds [`VIRTUAL_NODES`] points per node, each the first 8 bytes of the SHA-256 of the
//!   node's name (length-prefixed) and the point's number: stable across processes, builds and machines.
//! - Stripe `i` of partition `p` starts at point `p/partitions + i/stripes` of the way round the ring (so a
//!   partition's stripes start far apart) and walks clockwise to the first node that (a) does not hold a stripe
//!   of `p` yet and (b) holds fewer than the bound `ceil((1 + epsilon) * partitions * stripes / n)` stripes in
//!   all (`n` distinct nodes; `epsilon` 0.25 by default). Partitions are placed in order, `0` first, stripes in
//!   order within one.
//! - With fewer nodes than stripes, stripes wrap: in (a) a node may then hold a partition's stripes as often as
//!   the others do (stripe `i` goes to a node holding `i / n` of them already), so each node holds `stripes / n`
//!   or one more stripe of every chunk, and losing a node loses that many of each chunk's stripes.
//! - If no node on the ring passes (a) and (b) (possible only late, with few more nodes than stripes), the first
//!   node that passes (a) takes the stripe after one of its stripes in an earlier partition moved to the least
//!   loaded node (the latest partition where that keeps the partition's stripes distinct, or spread evenly when
//!   they wrap; one always exists). So no node ever holds more than the bound.
//!
//! # Invariants
//!
//! - Deterministic: the same names, stripes, epsilon and partitions give the same placement, whatever the order of
//!   `nodes` (an index answered is the position of the node's name in the list given; a name given twice counts
//!   once, at its first position, and the later positions are never answered).
//! - [`Placement::nodes`] answers `stripes` indexes into `nodes`, pairwise distinct whenever there are at least
//!   `stripes` distinct names; none for an empty list.
//! - Consistent: removing or adding one node of `n` moves the stripes of the removed (or onto the added) node plus
//!   a small fraction of the others (the bound shifts loads; the tests measure it).
//! - Bounded: a table of `partitions * stripes` indexes and a ring of `VIRTUAL_NODES * n` points; building it is
//!   one short ring walk per stripe of every partition. Parameters out of range are a [`PlacementError`].

use sha2::{Digest, Sha256};

/// The partitions of [`Placement::new`].
pub const DEFAULT_PARTITIONS: usize = 4096;
/// The slack of [`Placement::new`]: no node holds more than 1.25 times its share.
pub const DEFAULT_EPSILON: f64 = 0.25;
/// Points on the ring per node.
pub const VIRTUAL_NODES: u32 = 100;
/// The most stripes per chunk.
pub const MAX_STRIPES: usize = 64;
/// The most partitions.
pub const MAX_PARTITIONS: usize = 1 << 20;

/// Parameters a [`Placement`] cannot be built with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlacementError {
    #[error("{0} stripes: expected 1 to {MAX_STRIPES}")]
    Stripes(usize),
    #[error("{0} partitions: expected 1 to {MAX_PARTITIONS}")]
    Partitions(usize),
    #[error("epsilon {0}: expected a finite number, at least 0")]
    Epsilon(f64),
}

/// Each partition's nodes, one per stripe (see the module docs).
#[derive(Debug, Clone)]
pub struct Placement {
    stripes: usize,
    partitions: usize,
    bound: u64,
    /// Partition `p`'s nodes (indexes into the list given) are `table[p * stripes..(p + 1) * stripes]`; empty when
    /// there are no nodes.
    table: Vec<usize>,
    /// Stripes held, by index into the list given.
    loads: Vec<u64>,
}

impl Placement {
    /// `stripes` per chunk over `nodes`, with [`DEFAULT_EPSILON`] and [`DEFAULT_PARTITIONS`].
    pub fn new(nodes: &[String], stripes: usize) -> Result<Self, PlacementError> {
        Self::with_bounds(nodes, stripes, DEFAULT_EPSILON, DEFAULT_PARTITIONS)
    }

    /// `stripes` per chunk over `nodes`, no node above `(1 + epsilon)` times its share, in `partitions` ranges of
    /// keys.
    pub fn with_bounds(
        nodes: &[String],
        stripes: usize,
        epsilon: f64,
        partitions: usize,
    ) -> Result<Self, PlacementError> {
        if !(1..=MAX_STRIPES).contains(&stripes) {
            return Err(PlacementError::Stripes(stripes));
        }
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(PlacementError::Partitions(partitions));
        }
        if !epsilon.is_finite() || epsilon < 0.0 {
            return Err(PlacementError::Epsilon(epsilon));
        }
        // The distinct names in order, each with the first position that gives it: all the placement depends on.
        let mut names: Vec<(&str, usize)> = nodes.iter().enumerate().map(|(i, name)| (name.as_str(), i)).collect();
        names.sort_unstable();
        names.dedup_by(|later, earlier| later.0 == earlier.0);
        let n = names.len();
        let total = (partitions * stripes) as u64;
        // At least `total / n` rounded up, whatever the rounding of the product.
        let bound = if n == 0 {
            0
        } else {
            (((1.0 + epsilon) * total as f64 / n as f64).ceil() as u64).max(total.div_ceil(n as u64))
        };
        let mut placement = Placement { stripes, partitions, bound, table: Vec::new(), loads: vec![0; nodes.len()] };
        if n == 0 {
            return Ok(placement);
        }

        // (point, node): the ring, in order; equal points in name order.
        let mut ring: Vec<(u64, usize)> = (0..n)
            .flat_map(|id| (0..VIRTUAL_NODES).map(move |v| (id, v)))
            .map(|(id, v)| (point(names[id].0, v), id))
            .collect();
        ring.sort_unstable();
        let mut load = vec![0u64; n];
        // How many stripes of the partition being placed each node holds.
        let mut uses = vec![0usize; n];
        let mut table = Vec::with_capacity(partitions * stripes);
        for p in 0..partitions {
            let first = table.len();
            for i in 0..stripes {
                let round = i / n;
                let start = ring.partition_point(|&(at, _)| at < start_point(p, partitions, i, stripes));
                let walk = ring[start..].iter().chain(&ring[..start]).map(|&(_, id)| id);
                let mut eligible = walk.filter(|&id| uses[id] == round);
                let id = match eligible.clone().find(|&id| load[id] < bound) {
                    Some(id) => id,
                    None => {
                        // `eligible` is never empty: some node holds `round` stripes of `p`.
                        let full = eligible.next().unwrap_or(0);
                        move_one_off(&mut table[..p * stripes], stripes, &mut load, full);
                        full
                    }
                };
                uses[id] += 1;
                load[id] += 1;
                table.push(id);
            }
            for &id in &table[first..] {
                uses[id] = 0;
            }
        }
        placement.table = table.into_iter().map(|id| names[id].1).collect();
        for (id, &(_, given)) in names.iter().enumerate() {
            placement.loads[given] = load[id];
        }
        Ok(placement)
    }

    /// The nodes of `key`'s stripes: stripe `i` on `nodes[answer[i]]` of the list given. `stripes` entries, or none
    /// when there are no nodes.
    pub fn nodes(&self, key: &[u8; 32]) -> &[usize] {
        let p = partition(key, self.partitions);
        self.table.get(p * self.stripes..(p + 1) * self.stripes).unwrap_or(&[])
    }

    /// The stripes each node holds (out of `partitions * stripes`), by index into the list given.
    pub fn loads(&self) -> Vec<u64> {
        self.loads.clone()
    }

    /// The most stripes a node should hold: `ceil((1 + epsilon) * partitions * stripes / n)`; 0 with no nodes.
    pub fn bound(&self) -> u64 {
        self.bound
    }

    pub fn stripes(&self) -> usize {
        self.stripes
    }

    pub fn partitions(&self) -> usize {
        self.partitions
    }
}

/// Moves one stripe off `full` (at the bound, and eligible for the stripe being placed) onto the least loaded node,
/// in the latest partition of `placed` (the complete partitions) where that keeps its stripes spread: where the
/// least loaded node holds fewer of its stripes than `full` does.
///
/// Such a partition exists while some stripe is unplaced: the least loaded node then has room (`n * bound >=
/// partitions * stripes`), so it is below the bound and holds at least as many stripes of the partition being
/// placed as `full` does, so (counting stripes) it holds fewer than `full` in some placed partition.
fn move_one_off(placed: &mut [usize], stripes: usize, load: &mut [u64], full: usize) {
    let Some(spare) = (0..load.len()).min_by_key(|&id| load[id]) else { return };
    let count = |row: &[usize], id: usize| row.iter().filter(|&&x| x == id).count();
    for row in placed.chunks_mut(stripes).rev() {
        if count(row, spare) < count(row, full)
            && let Some(slot) = row.iter_mut().rev().find(|slot| **slot == full)
        {
            *slot = spare;
            load[full] -= 1;
            load[spare] += 1;
            return;
        }
    }
}

/// The ring point of `name`'s virtual node `v`.
fn point(name: &str, v: u32) -> u64 {
    let digest = Sha256::new()
        .chain_update((name.len() as u64).to_be_bytes())
        .chain_update(name.as_bytes())
        .chain_update(v.to_be_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// Where stripe `i` of partition `p` starts its walk: `p / partitions + i / stripes` of the way round.
fn start_point(p: usize, partitions: usize, i: usize, stripes: usize) -> u64 {
    let at = |x: usize, of: usize| (((x as u128) << 64) / of as u128) as u64;
    at(p, partitions).wrapping_add(at(i, stripes))
}

/// The partition of `key`: its first 8 bytes as a fraction of the ring.
fn partition(key: &[u8; 32], partitions: usize) -> usize {
    let mut first = [0u8; 8];
    first.copy_from_slice(&key[..8]);
    ((u128::from(u64::from_be_bytes(first)) * partitions as u128) >> 64) as usize
}

#[cfg(test)]
mod tests;
