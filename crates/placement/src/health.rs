//! Worker health from heartbeats: pure, the caller passes the clock in.
//!
//! A worker is `Healthy` from its registration while heartbeats keep
//! arriving at most `timeout_ms` apart, and `Unhealthy` once `timeout_ms` has
//! passed since the last one (or since it registered, if none came). Unhealthy
//! is final: the caller forgets the worker's sandboxes, and a worker that
//! comes back registers again, as a new worker. A heartbeat older than the
//! last one (reordered) changes nothing.

/// Whether a worker may get new sandboxes and keep its old ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Healthy,
    Unhealthy,
}

/// One worker's liveness: when it was last heard from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    last_ms: u64,
    timeout_ms: u64,
    dead: bool,
}

impl Liveness {
    /// A worker registered at `now_ms`, unhealthy after `timeout_ms` of silence.
    pub fn new(now_ms: u64, timeout_ms: u64) -> Self {
        Liveness { last_ms: now_ms, timeout_ms, dead: false }
    }

    /// A heartbeat arrived at `now_ms`. False (and no change) once the worker
    /// is unhealthy: it must register again.
    pub fn beat(&mut self, now_ms: u64) -> bool {
        if self.check(now_ms) == Health::Unhealthy {
            return false;
        }
        self.last_ms = self.last_ms.max(now_ms);
        true
    }

    /// The worker's health at `now_ms`; once unhealthy, always unhealthy.
    pub fn check(&mut self, now_ms: u64) -> Health {
        if !self.dead && now_ms.saturating_sub(self.last_ms) >= self.timeout_ms {
            self.dead = true;
        }
        if self.dead { Health::Unhealthy } else { Health::Healthy }
    }

    /// Declares the worker unhealthy now (its connections failed).
    pub fn fail(&mut self) {
        self.dead = true;
    }

    /// Milliseconds since it was last heard from.
    pub fn silence_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.last_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Heartbeats at `beats`, then the health at each time of `probes`, in order.
    fn check(timeout: u64, beats: &[u64], probes: &[(u64, Health)]) {
        let mut live = Liveness::new(0, timeout);
        for &t in beats {
            live.beat(t);
        }
        for &(t, expected) in probes {
            assert_eq!(live.check(t), expected, "beats {beats:?}, probe at {t}");
        }
    }

    #[test]
    fn silence_makes_unhealthy() {
        use Health::*;
        check(3000, &[], &[(0, Healthy), (2999, Healthy), (3000, Unhealthy)]);
        check(3000, &[500, 1000, 1500], &[(4499, Healthy), (4500, Unhealthy)]);
        // A reordered (older) heartbeat does not move the last one back.
        check(3000, &[2000, 1000], &[(4999, Healthy), (5000, Unhealthy)]);
    }

    #[test]
    fn unhealthy_is_final() {
        let mut live = Liveness::new(0, 100);
        assert_eq!(live.check(100), Health::Unhealthy);
        assert!(!live.beat(101));
        assert_eq!(live.check(101), Health::Unhealthy);
        // Even a heartbeat that would have been in time once the worker was found silent.
        let mut live = Liveness::new(0, 100);
        assert_eq!(live.check(150), Health::Unhealthy);
        assert!(!live.beat(50));
    }

    #[test]
    fn a_late_heartbeat_is_refused_even_unchecked() {
        let mut live = Liveness::new(0, 100);
        assert!(live.beat(99));
        assert!(!live.beat(199 + 1));
        assert_eq!(live.check(0), Health::Unhealthy);
    }

    #[test]
    fn failure_is_immediate() {
        let mut live = Liveness::new(0, 100);
        live.fail();
        assert_eq!(live.check(0), Health::Unhealthy);
        assert!(!live.beat(1));
    }

    #[test]
    fn every_schedule_agrees_with_the_rule() {
        // Exhaustive over small schedules: heartbeats at any subset of 0..8
        // (times in units of 1), timeout 3: healthy at t iff no gap of 3 or
        // more in [0, t] between consecutive heard-from times, t included.
        for mask in 0u32..256 {
            let beats: Vec<u64> = (0..8).filter(|t| mask & (1 << t) != 0).collect();
            let mut live = Liveness::new(0, 3);
            let mut expected_dead = false;
            let mut last = 0;
            let mut next = beats.iter().peekable();
            for t in 0..12u64 {
                // Probe first, then the beat at t (as a heartbeat arriving right after a sweep).
                if t - last >= 3 {
                    expected_dead = true;
                }
                let expected = if expected_dead { Health::Unhealthy } else { Health::Healthy };
                assert_eq!(live.check(t), expected, "beats {beats:?} at {t}");
                if next.peek() == Some(&&t) {
                    next.next();
                    assert_eq!(live.beat(t), !expected_dead, "beats {beats:?} beat at {t}");
                    if !expected_dead {
                        last = t;
                    }
                }
            }
        }
    }
}
