//! Fair shares of a host-side service's room (the DNS forwarder's queries and streams, the API relay's
//! connections): at most `total` at once, and at most `each` for one source address, so that one sandbox cannot take
//! what the others need.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

#[derive(Debug)]
pub struct Shares {
    total: usize,
    each: usize,
    held: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One unit of room, given back when dropped.
#[derive(Debug)]
pub struct Share {
    shares: Arc<Shares>,
    source: IpAddr,
}

impl Shares {
    pub fn new(total: usize, each: usize) -> Arc<Shares> {
        Arc::new(Shares { total, each, held: Mutex::default() })
    }

    /// A unit for `source`, if both the whole and its share have room.
    pub fn take(self: &Arc<Self>, source: IpAddr) -> Option<Share> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let (all, by_source) = &mut *held;
        let mine = by_source.entry(source).or_default();
        if *all >= self.total || *mine >= self.each {
            if *mine == 0 {
                by_source.remove(&source);
            }
            return None;
        }
        *mine += 1;
        *all += 1;
        Some(Share { shares: self.clone(), source })
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut held = self.shares.held.lock().unwrap_or_else(|e| e.into_inner());
        let (all, by_source) = &mut *held;
        *all -= 1;
        if let Some(mine) = by_source.get_mut(&self.source) {
            *mine -= 1;
            if *mine == 0 {
                by_source.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_source_gets_its_share_and_the_whole_is_bounded() {
        let shares = Shares::new(5, 2);
        let (a, b, c): (IpAddr, IpAddr, IpAddr) =
            ("10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap(), "10.0.0.4".parse().unwrap());
        let a1 = shares.take(a).unwrap();
        let _a2 = shares.take(a).unwrap();
        assert!(shares.take(a).is_none(), "a's share is full");
        let _b1 = shares.take(b).unwrap();
        let _b2 = shares.take(b).unwrap();
        let _c1 = shares.take(c).unwrap();
        assert!(shares.take(c).is_none(), "the whole is full");
        drop(a1);
        let c2 = shares.take(c).expect("room again, and c has its share");
        assert!(shares.take(a).is_none(), "the whole is full again");
        drop(c2);
        let a3 = shares.take(a).expect("room again");
        assert_eq!(shares.held.lock().unwrap().0, 5);
        drop(a3);
        assert_eq!(shares.held.lock().unwrap().0, 4);
    }
}
