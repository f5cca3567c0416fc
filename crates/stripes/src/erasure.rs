//! A chunk as 4 data stripes and 1 parity stripe, rebuilt from any 4. Pure: no IO.
//!
//! The chunk (opaque bytes, at most [`MAX_CHUNK_BYTES`]) is cut into 4 equal shards of
//! [`shard_bytes`]`(len)` bytes (the last padded with zeros); the parity shard is computed by
//! Reed-Solomon over GF(2^16) (`reed-solomon-simd`: kept up, pure Rust, SIMD where the CPU has it; any
//! 4 of the 5 shards give back the other; a decode that uses parity has a fixed cost, a transform over
//! the field, whatever the chunk's size: milliseconds in a debug build). Each stripe is its shard
//! behind a [`HEADER_BYTES`]-byte header:
//!
//! ```text
//!  0..3  magic "IGS"
//!  3     format version (VERSION)
//!  4     stripe index: 0..=3 data, 4 parity
//!  5     data stripes (4)
//!  6     parity stripes (1)
//!  7     reserved (0)
//!  8..12 the chunk's length, u32 big-endian
//! ```
//!
//! # Invariants
//! - [`check`] accepts a stripe only if its header is this format's, names the index it was asked
//!   for, and its length is exactly the header plus the shard of a chunk of the length it claims: a
//!   truncated or lengthened stripe, or a stripe of another index, is refused.
//! - [`decode`] of 4 stripes of distinct indexes that [`check`] accepts and that agree on the chunk's
//!   length gives that many bytes; they are the chunk if the stripes are the ones [`encode`] made.
//!   Whether they are is not known here: the caller compares their SHA-256 with the chunk's digest.

use bytes::{BufMut, Bytes, BytesMut};

/// Data stripes per chunk.
pub const DATA_STRIPES: usize = 4;
/// Parity stripes per chunk.
pub const PARITY_STRIPES: usize = 1;
/// Stripes per chunk.
pub const STRIPES: usize = DATA_STRIPES + PARITY_STRIPES;
/// The stripe format this crate writes and reads.
pub const VERSION: u8 = 1;
/// The bytes of a stripe's header.
pub const HEADER_BYTES: usize = 12;
/// The largest chunk that is striped: the chunk store's limit.
pub const MAX_CHUNK_BYTES: usize = ignis_chunks::DEFAULT_MAX_CHUNK_BYTES;
/// The largest stripe: that of a chunk of [`MAX_CHUNK_BYTES`].
pub const MAX_STRIPE_BYTES: usize = HEADER_BYTES + shard_bytes(MAX_CHUNK_BYTES);

const MAGIC: &[u8; 3] = b"IGS";

/// The bytes of each shard of a chunk of `chunk_len` bytes: a quarter, rounded up to an even
/// number of at least 2 (the Reed-Solomon code works on 16-bit symbols).
pub const fn shard_bytes(chunk_len: usize) -> usize {
    let quarter = chunk_len.div_ceil(DATA_STRIPES);
    let even = quarter + quarter % 2;
    if even == 0 { 2 } else { even }
}

/// A stripe's header, as [`check`] read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub index: u8,
    pub chunk_len: u32,
}

/// A chunk over [`MAX_CHUNK_BYTES`]: it is not striped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a chunk of {0} bytes is over the largest striped chunk ({MAX_CHUNK_BYTES} bytes)")]
pub struct TooLarge(pub usize);

/// Why [`check`] refused a stripe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StripeError {
    #[error("a stripe of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("not a stripe: wrong magic")]
    Magic,
    #[error("stripe format version {0}; this reads version {VERSION}")]
    Version(u8),
    #[error("a stripe of a {data}+{parity} code; this reads {DATA_STRIPES}+{PARITY_STRIPES}")]
    Code { data: u8, parity: u8 },
    #[error("stripe index {found} where {expected} was asked for")]
    Index { found: u8, expected: usize },
    #[error("a stripe of a {0}-byte chunk: over the largest striped chunk")]
    ChunkTooLarge(u32),
    #[error("a stripe of {len} bytes; that of a {chunk_len}-byte chunk has {expected}")]
    Length { len: usize, chunk_len: u32, expected: usize },
}

/// Why [`decode`] gave no bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("stripe {index}: {error}")]
    Stripe { index: usize, error: StripeError },
    #[error("{0} stripes given; decoding takes exactly {DATA_STRIPES}")]
    Count(usize),
    #[error("stripe {0} given twice")]
    Duplicate(usize),
    #[error("the stripes disagree on the chunk's length")]
    Disagree,
    #[error("reed-solomon: {0}")]
    Code(String),
}

/// The chunk's 5 stripes, stripe `i` at index `i`.
pub fn encode(chunk: &[u8]) -> Result<[Bytes; STRIPES], TooLarge> {
    if chunk.len() > MAX_CHUNK_BYTES {
        return Err(TooLarge(chunk.len()));
    }
    let shard = shard_bytes(chunk.len());
    let mut shards = vec![vec![0u8; shard]; DATA_STRIPES];
    for (i, piece) in chunk.chunks(shard).enumerate() {
        shards[i][..piece.len()].copy_from_slice(piece);
    }
    // 4+1 with an even, non-zero shard size is within what the code supports: it cannot fail.
    let parity = reed_solomon_simd::encode(DATA_STRIPES, PARITY_STRIPES, &shards)
        .ok()
        .and_then(|mut recovery| recovery.pop())
        .unwrap_or_else(|| xor(&shards));
    shards.push(parity);
    let len = chunk.len() as u32;
    Ok(std::array::from_fn(|i| {
        let mut stripe = BytesMut::with_capacity(HEADER_BYTES + shard);
        stripe.put_slice(MAGIC);
        stripe.put_u8(VERSION);
        stripe.put_u8(i as u8);
        stripe.put_u8(DATA_STRIPES as u8);
        stripe.put_u8(PARITY_STRIPES as u8);
        stripe.put_u8(0);
        stripe.put_u32(len);
        stripe.put_slice(&shards[i]);
        stripe.freeze()
    }))
}

/// With one recovery shard the code is the XOR of the data shards; only reached if the library
/// refused a shape it documents as supported.
fn xor(shards: &[Vec<u8>]) -> Vec<u8> {
    let mut parity = vec![0u8; shards.first().map_or(0, Vec::len)];
    for shard in shards {
        for (p, b) in parity.iter_mut().zip(shard) {
            *p ^= b;
        }
    }
    parity
}

/// Reads and checks the header of `stripe`, which was asked for as stripe `index`.
pub fn check(stripe: &[u8], index: usize) -> Result<Header, StripeError> {
    let Some(head) = stripe.get(..HEADER_BYTES) else { return Err(StripeError::Short(stripe.len())) };
    if &head[..3] != MAGIC {
        return Err(StripeError::Magic);
    }
    if head[3] != VERSION {
        return Err(StripeError::Version(head[3]));
    }
    if (head[5], head[6]) != (DATA_STRIPES as u8, PARITY_STRIPES as u8) {
        return Err(StripeError::Code { data: head[5], parity: head[6] });
    }
    if usize::from(head[4]) != index {
        return Err(StripeError::Index { found: head[4], expected: index });
    }
    let chunk_len = u32::from_be_bytes([head[8], head[9], head[10], head[11]]);
    if chunk_len as usize > MAX_CHUNK_BYTES {
        return Err(StripeError::ChunkTooLarge(chunk_len));
    }
    let expected = HEADER_BYTES + shard_bytes(chunk_len as usize);
    if stripe.len() != expected {
        return Err(StripeError::Length { len: stripe.len(), chunk_len, expected });
    }
    Ok(Header { index: head[4], chunk_len })
}

/// The chunk's bytes from exactly 4 stripes of distinct indexes, each `(index, stripe)`.
pub fn decode(stripes: &[(usize, &[u8])]) -> Result<Bytes, DecodeError> {
    if stripes.len() != DATA_STRIPES {
        return Err(DecodeError::Count(stripes.len()));
    }
    let mut shards: [Option<&[u8]>; STRIPES] = [None; STRIPES];
    let mut chunk_len = None;
    for &(index, stripe) in stripes {
        let header = check(stripe, index).map_err(|error| DecodeError::Stripe { index, error })?;
        if shards[index].replace(&stripe[HEADER_BYTES..]).is_some() {
            return Err(DecodeError::Duplicate(index));
        }
        if *chunk_len.get_or_insert(header.chunk_len) != header.chunk_len {
            return Err(DecodeError::Disagree);
        }
    }
    let chunk_len = chunk_len.map_or(0, |len| len as usize);
    let mut chunk = BytesMut::with_capacity(DATA_STRIPES * shard_bytes(chunk_len));
    match shards[DATA_STRIPES] {
        // All the data stripes: no decoding.
        None => {
            for shard in shards.iter().take(DATA_STRIPES).flatten() {
                chunk.put_slice(shard);
            }
        }
        Some(parity) => {
            let originals = shards.iter().take(DATA_STRIPES).enumerate().filter_map(|(i, s)| s.map(|s| (i, s)));
            let restored = reed_solomon_simd::decode(DATA_STRIPES, PARITY_STRIPES, originals, [(0, parity)])
                .map_err(|e| DecodeError::Code(e.to_string()))?;
            for (i, shard) in shards.iter().take(DATA_STRIPES).enumerate() {
                match (shard, restored.get(&i)) {
                    (Some(shard), _) => chunk.put_slice(shard),
                    (None, Some(shard)) => chunk.put_slice(shard),
                    (None, None) => return Err(DecodeError::Code(format!("data stripe {i} was not restored"))),
                }
            }
        }
    }
    chunk.truncate(chunk_len);
    Ok(chunk.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic bytes of `len`, different per `seed`.
    fn chunk(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8).collect()
    }

    const LENS: &[usize] = &[0, 1, 2, 3, 4, 5, 7, 8, 9, 1000, 1001, 4095, 65_537, 512 * 1024, MAX_CHUNK_BYTES];

    /// Every choice of 4 of the 5 indexes.
    fn fours() -> impl Iterator<Item = [usize; 4]> {
        (0..STRIPES).map(|missing| {
            let mut four = [0; 4];
            for (slot, i) in four.iter_mut().zip((0..STRIPES).filter(|&i| i != missing)) {
                *slot = i;
            }
            four
        })
    }

    #[test]
    fn any_four_rebuild_the_chunk() {
        for &len in LENS {
            let chunk = chunk(len, 7);
            let stripes = encode(&chunk).expect("encode");
            for (i, stripe) in stripes.iter().enumerate() {
                assert_eq!(stripe.len(), HEADER_BYTES + shard_bytes(len));
                assert_eq!(check(stripe, i), Ok(Header { index: i as u8, chunk_len: len as u32 }));
            }
            for four in fours() {
                let given: Vec<(usize, &[u8])> = four.iter().map(|&i| (i, &stripes[i][..])).collect();
                assert_eq!(decode(&given).expect("decode"), chunk, "len {len}, stripes {four:?}");
                // The order they are given in does not matter.
                let reversed: Vec<_> = given.iter().rev().copied().collect();
                assert_eq!(decode(&reversed).expect("decode"), chunk, "len {len}, stripes {four:?} reversed");
            }
        }
    }

    #[test]
    fn too_large_chunks_are_refused() {
        assert_eq!(encode(&vec![0; MAX_CHUNK_BYTES + 1]).err(), Some(TooLarge(MAX_CHUNK_BYTES + 1)));
        assert_eq!(MAX_STRIPE_BYTES, HEADER_BYTES + 256 * 1024);
    }

    #[test]
    fn damaged_headers_and_lengths_are_refused() {
        let stripes = encode(&chunk(1000, 1)).expect("encode");
        let stripe = &stripes[2];
        let with = |at: usize, value: u8| {
            let mut s = stripe.to_vec();
            s[at] = value;
            s
        };
        let cases: Vec<(Vec<u8>, StripeError)> = vec![
            (Vec::new(), StripeError::Short(0)),
            (stripe[..HEADER_BYTES - 1].to_vec(), StripeError::Short(HEADER_BYTES - 1)),
            (with(0, b'X'), StripeError::Magic),
            (with(3, 2), StripeError::Version(2)),
            (with(5, 3), StripeError::Code { data: 3, parity: 1 }),
            (with(6, 2), StripeError::Code { data: 4, parity: 2 }),
            (with(4, 3), StripeError::Index { found: 3, expected: 2 }),
            (with(9, 0x20), StripeError::ChunkTooLarge(0x0020_03e8)),
            (stripe[..stripe.len() - 1].to_vec(), StripeError::Length { len: 261, chunk_len: 1000, expected: 262 }),
            ([&stripe[..], &[0]].concat(), StripeError::Length { len: 263, chunk_len: 1000, expected: 262 }),
            (with(11, 0xe9), StripeError::Length { len: 262, chunk_len: 1001, expected: 264 }),
        ];
        for (bytes, expected) in cases {
            assert_eq!(check(&bytes, 2), Err(expected.clone()), "{expected}");
            // Decoding refuses it too, naming the stripe.
            let mut given: Vec<(usize, &[u8])> = vec![(0, &stripes[0][..]), (1, &stripes[1][..]), (4, &stripes[4][..])];
            given.push((2, &bytes));
            assert_eq!(decode(&given), Err(DecodeError::Stripe { index: 2, error: expected }));
        }
        // A stripe of another index, asked for as this one.
        assert_eq!(check(&stripes[3], 2), Err(StripeError::Index { found: 3, expected: 2 }));
    }

    #[test]
    fn decode_takes_four_distinct_agreeing_stripes() {
        let stripes = encode(&chunk(1000, 2)).expect("encode");
        let other = encode(&chunk(998, 3)).expect("encode");
        let s = |i: usize| (i, &stripes[i][..]);
        assert_eq!(decode(&[s(0), s(1), s(2)]), Err(DecodeError::Count(3)));
        assert_eq!(decode(&[s(0), s(1), s(2), s(3), s(4)]), Err(DecodeError::Count(5)));
        assert_eq!(decode(&[s(0), s(1), s(1), s(3)]), Err(DecodeError::Duplicate(1)));
        // Same shard size, another length.
        assert_eq!(decode(&[s(0), s(1), (2, &other[2][..]), s(4)]), Err(DecodeError::Disagree));
    }

    #[test]
    fn every_corrupt_byte_changes_what_is_rebuilt() {
        // A chunk whose shards have no padding: a wrong byte anywhere in any stripe's shard gives other bytes
        // from every 4-set that holds it (the caller's hash check is what catches it).
        let original = chunk(16, 9);
        assert_eq!(shard_bytes(16) * DATA_STRIPES, 16);
        let stripes = encode(&original).expect("encode");
        for bad in 0..STRIPES {
            for at in HEADER_BYTES..stripes[bad].len() {
                let mut wrong = stripes[bad].to_vec();
                wrong[at] ^= 0x5a;
                for four in fours().filter(|f| f.contains(&bad)) {
                    let given: Vec<(usize, &[u8])> =
                        four.iter().map(|&i| (i, if i == bad { &wrong[..] } else { &stripes[i][..] })).collect();
                    assert_ne!(decode(&given).expect("decode"), original, "stripe {bad} byte {at} in {four:?}");
                }
            }
        }
    }
}
