//! Rebuilding one chunk from its stripes as they arrive, in any order. Pure: no IO, no clock.
//!
//! [`Assembly`] is told each stripe's answer ([`Assembly::offer`]) and says when it is done:
//!
//! ```text
//!  waiting ──offer──► waiting        fewer than 4 good stripes, and 4 still possible
//!     │                              (or every 4-set of the good ones failed the hash, and one answer is due)
//!     ├──offer──► Done(Chunk)        a 4-set of good stripes decodes to bytes that hash to the digest
//!     └──offer──► Done(Miss)         4 good stripes can no longer be had, or every answer is in and
//!                                    no 4-set verifies
//! ```
//!
//! A stripe is *good* if [`erasure::check`] accepts it for the index it was asked as; a bad one (wrong
//! header, index or length) is counted at once. 4-sets are tried as good stripes come (the one without
//! parity first), each at most once.
//!
//! # Invariants
//! - Never [`Outcome::Chunk`] with bytes whose SHA-256 is not the digest.
//! - With at least 4 correct stripes among the answers, once they are all in, the chunk is rebuilt.
//! - `bad` counts stripes found wrong: each refused by [`erasure::check`]; each left out of the 4-set that
//!   verified after another 4-set failed the hash; and, when no 4-set verifies, one (at least one of the
//!   stripes is wrong; which one is not known).

use bytes::Bytes;
use ignis_chunks::ChunkDigest;

use crate::erasure::{self, DATA_STRIPES, STRIPES};

/// What the client got for one stripe.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// The node's bytes for the stripe (not yet checked).
    Stripe(Bytes),
    /// No stripe: not held, an error, a refused or broken call.
    Failed,
}

/// How an assembly ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The chunk, its hash checked; `rebuilt` if the parity stripe was used.
    Chunk { bytes: Bytes, rebuilt: bool },
    /// Fewer than 4 good stripes answered.
    Unavailable,
    /// Enough stripes answered, but no 4 of them rebuild bytes with the chunk's hash.
    Unverified,
}

/// One chunk's stripes so far.
#[derive(Debug)]
pub(crate) struct Assembly {
    digest: ChunkDigest,
    good: Vec<(usize, Bytes)>,
    answered: [bool; STRIPES],
    /// The 4-sets tried, as bit masks of stripe indexes.
    tried: Vec<u8>,
    bad: u64,
    done: bool,
}

impl Assembly {
    pub(crate) fn new(digest: ChunkDigest) -> Assembly {
        Assembly { digest, good: Vec::new(), answered: [false; STRIPES], tried: Vec::new(), bad: 0, done: false }
    }

    /// Stripes found wrong so far.
    pub(crate) fn bad(&self) -> u64 {
        self.bad
    }

    /// Stripe `index` answered; `Some` once the assembly is done (later offers are ignored and answer
    /// `None`, as does a second answer for the same index or an index out of range).
    pub(crate) fn offer(&mut self, index: usize, answer: Answer) -> Option<Outcome> {
        if self.done || index >= STRIPES || self.answered[index] {
            return None;
        }
        self.answered[index] = true;
        if let Answer::Stripe(bytes) = answer {
            match erasure::check(&bytes, index) {
                Ok(_) => self.good.push((index, bytes)),
                Err(_) => self.bad += 1,
            }
        }
        let outcome = self.try_sets().or_else(|| self.hopeless());
        self.done = outcome.is_some();
        outcome
    }

    /// Tries each 4-set of the good stripes not tried yet.
    fn try_sets(&mut self) -> Option<Outcome> {
        if self.good.len() < DATA_STRIPES {
            return None;
        }
        let all = self.good.iter().fold(0u8, |m, (i, _)| m | 1 << i);
        // With 5 good stripes: without the parity one first (no decoding), then without each data stripe.
        let sets: Vec<u8> = match self.good.len() {
            DATA_STRIPES => vec![all],
            _ => (0..STRIPES).rev().map(|left_out| all & !(1 << left_out)).collect(),
        };
        for mask in sets {
            if self.tried.contains(&mask) {
                continue;
            }
            let failed_before = !self.tried.is_empty();
            self.tried.push(mask);
            let set: Vec<(usize, &[u8])> =
                self.good.iter().filter(|(i, _)| mask & 1 << i != 0).map(|(i, s)| (*i, &s[..])).collect();
            if let Ok(bytes) = erasure::decode(&set)
                && ChunkDigest::of(&bytes) == self.digest
            {
                if failed_before {
                    // Any 4 correct stripes rebuild the chunk: the one left out is wrong.
                    self.bad += (self.good.len() - DATA_STRIPES) as u64;
                }
                return Some(Outcome::Chunk { bytes, rebuilt: mask & 1 << DATA_STRIPES != 0 });
            }
        }
        None
    }

    /// Whether the assembly can no longer succeed.
    fn hopeless(&mut self) -> Option<Outcome> {
        let due = self.answered.iter().filter(|a| !**a).count();
        if self.good.len() + due >= DATA_STRIPES && due > 0 {
            return None;
        }
        match self.tried.is_empty() {
            true => Some(Outcome::Unavailable),
            false => {
                self.bad += 1;
                Some(Outcome::Unverified)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a node does with its stripe.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Fault {
        Ok,
        /// Answers that it has none (404, refused, down).
        Missing,
        /// Never answers.
        Hung,
        /// A wrong byte in the shard, header intact.
        Corrupt,
        /// Cut short.
        Truncated,
        /// Another index's stripe.
        OtherIndex,
    }

    const FAULTS: [Fault; 6] =
        [Fault::Ok, Fault::Missing, Fault::Hung, Fault::Corrupt, Fault::Truncated, Fault::OtherIndex];

    fn answer(stripes: &[Bytes; STRIPES], index: usize, fault: Fault) -> Option<Answer> {
        let stripe = &stripes[index];
        Some(match fault {
            Fault::Ok => Answer::Stripe(stripe.clone()),
            Fault::Missing => Answer::Failed,
            Fault::Hung => return None,
            Fault::Corrupt => {
                let mut wrong = stripe.to_vec();
                wrong[erasure::HEADER_BYTES] ^= 1;
                Answer::Stripe(wrong.into())
            }
            Fault::Truncated => Answer::Stripe(stripe.slice(..stripe.len() - 2)),
            Fault::OtherIndex => Answer::Stripe(stripes[(index + 1) % STRIPES].clone()),
        })
    }

    fn permutations(items: Vec<usize>) -> Vec<Vec<usize>> {
        if items.len() <= 1 {
            return vec![items];
        }
        let mut all = Vec::new();
        for i in 0..items.len() {
            let mut rest = items.clone();
            let first = rest.remove(i);
            for mut p in permutations(rest) {
                p.insert(0, first);
                all.push(p);
            }
        }
        all
    }

    /// Whether `order` is a rotation of 0..5, or of its reverse.
    fn rotation(order: &[usize]) -> bool {
        let step = |d: usize| order.windows(2).all(|w| w[1] == (w[0] + d) % STRIPES);
        step(1) || step(STRIPES - 1)
    }

    /// Whether `order` is 0..5 ascending or descending.
    fn monotonic(order: &[usize]) -> bool {
        order.is_sorted() || order.iter().rev().is_sorted()
    }

    /// Every assignment of at most two faults to the five stripes, in several arrival orders: the outcome is
    /// the chunk exactly when 4 correct stripes are to be had, never other bytes; the counts follow.
    #[test]
    fn every_fault_and_fault_pair() {
        let chunk: Vec<u8> = (0..61u32).map(|i| (i * 7 % 251) as u8).collect();
        let digest = ChunkDigest::of(&chunk);
        let stripes = erasure::encode(&chunk).expect("encode");
        let orders = permutations((0..STRIPES).collect());
        assert_eq!(orders.len(), 120);
        let mut cases = 0;
        for a in 0..STRIPES {
            for b in a..STRIPES {
                for fa in FAULTS {
                    for fb in FAULTS {
                        if a == b && fa != fb {
                            continue;
                        }
                        let mut faults = [Fault::Ok; STRIPES];
                        faults[a] = fa;
                        faults[b] = fb;
                        // Each stripe first and each last, both ways round, for a single fault; ascending
                        // and descending for two (a decode with parity costs milliseconds in a debug build).
                        let single = faults.iter().filter(|f| **f != Fault::Ok).count() <= 1;
                        for order in orders.iter().filter(|o| if single { rotation(o) } else { monotonic(o) }) {
                            check(&stripes, digest, &chunk, faults, order);
                            cases += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(cases, 1900);
    }

    fn check(stripes: &[Bytes; STRIPES], digest: ChunkDigest, chunk: &[u8], faults: [Fault; STRIPES], order: &[usize]) {
        let correct = faults.iter().filter(|f| **f == Fault::Ok).count();
        let is_wrong = |f: &&Fault| matches!(f, Fault::Corrupt | Fault::Truncated | Fault::OtherIndex);
        let wrong = faults.iter().filter(is_wrong).count();
        let hung = faults.contains(&Fault::Hung);
        let mut assembly = Assembly::new(digest);
        let mut outcome = None;
        let mut offered = 0;
        for &index in order {
            let Some(answer) = answer(stripes, index, faults[index]) else { continue };
            offered += 1;
            if let Some(done) = assembly.offer(index, answer) {
                outcome = Some(done);
                break;
            }
        }
        let case = format!("{faults:?} in order {order:?}");
        let done = outcome.is_some();
        match outcome {
            Some(Outcome::Chunk { bytes, rebuilt }) => {
                assert_eq!(bytes, chunk, "{case}");
                assert!(correct >= DATA_STRIPES, "{case}");
                // Parity was used exactly when a data stripe's answer was not used.
                let used = assembly.tried.last().copied().unwrap_or(0);
                assert_eq!(rebuilt, used & 1 << DATA_STRIPES != 0, "{case}");
            }
            Some(Outcome::Unavailable | Outcome::Unverified) => assert!(correct < DATA_STRIPES, "{case}"),
            // Waits only for a hung node, and only while the chunk still needs it.
            None => {
                assert!(hung, "{case}");
                assert!(offered < STRIPES, "{case}");
            }
        }
        assert!(assembly.bad() <= wrong as u64, "{case}: bad {}", assembly.bad());
        // Every answer in and a wrong stripe among them: it is found.
        if offered == STRIPES && wrong > 0 && correct < DATA_STRIPES {
            assert!(assembly.bad() >= 1, "{case}");
        }
        // Once done, later answers change nothing.
        if done {
            for index in 0..STRIPES {
                assert_eq!(assembly.offer(index, Answer::Failed), None, "{case}");
            }
        }
    }

    #[test]
    fn a_wrong_stripe_among_the_first_four_is_found_with_the_fifth() {
        let chunk = vec![3u8; 5000];
        let digest = ChunkDigest::of(&chunk);
        let stripes = erasure::encode(&chunk).expect("encode");
        for wrong in 0..STRIPES {
            let mut assembly = Assembly::new(digest);
            let first_four: Vec<usize> = (0..STRIPES).filter(|&i| i != (wrong + 1) % STRIPES).collect();
            for &i in &first_four {
                let answer = answer(&stripes, i, if i == wrong { Fault::Corrupt } else { Fault::Ok });
                assert_eq!(assembly.offer(i, answer.expect("an answer")), None, "stripe {i}");
            }
            let last = (wrong + 1) % STRIPES;
            let done = assembly.offer(last, Answer::Stripe(stripes[last].clone()));
            let expected = Outcome::Chunk { bytes: chunk.clone().into(), rebuilt: wrong != 4 };
            assert_eq!(done, Some(expected), "wrong {wrong}");
            assert_eq!(assembly.bad(), 1);
        }
    }

    #[test]
    fn indexes_out_of_range_and_repeats_are_ignored() {
        let mut assembly = Assembly::new(ChunkDigest::of(b""));
        assert_eq!(assembly.offer(5, Answer::Failed), None);
        assert_eq!(assembly.offer(0, Answer::Failed), None);
        assert_eq!(assembly.offer(0, Answer::Failed), None);
        assert_eq!(assembly.offer(1, Answer::Failed), Some(Outcome::Unavailable));
    }
}
