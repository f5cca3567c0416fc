//! The address plan of a host's sandbox network: pure arithmetic on the operator's range (`--sandbox-network`).
//!
//! The range is cut into [`BLOCKS`] equal blocks. Block 0 holds the gateway (the range's first address, which every
//! host-side link carries) and the addresses of sandboxes attached to no network; each other block serves the
//! sandboxes of one [`crate::Attachment`] on this host, so that the firewall tells them apart by source block alone,
//! with rules made once per attachment rather than per sandbox. A sandbox's address also names the host side of its
//! link ([`Plan::host_link`]), so that names never clash while addresses do not.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Blocks the range is cut into.
pub const BLOCKS: u8 = 32;
/// The narrowest range accepted: 32 blocks of 128 addresses.
pub const NARROWEST_PREFIX: u8 = 20;
/// The widest range accepted.
pub const WIDEST_PREFIX: u8 = 8;
/// The default range: in 10/8 (which functions cannot reach by default anyway), clear of the nets home and office
/// routers, Docker (172.17/16 and up) and Kubernetes (10.96/12, 10.244/16) usually pick.
pub const DEFAULT_RANGE: &str = "10.213.0.0/16";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("sandbox network {0}: the prefix must be /{WIDEST_PREFIX} to /{NARROWEST_PREFIX}")]
    Size(Ipv4Net),
    #[error("sandbox network {0}: must be a private range (10/8, 172.16/12, 192.168/16 or 100.64/10)")]
    NotPrivate(Ipv4Net),
}

/// The plan of one sandbox range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    range: Ipv4Net,
    /// Four characters naming the range in link and table names, so that hosts of different ranges (several servers
    /// on one machine) never touch each other's.
    tag: String,
}

impl Plan {
    pub fn new(range: Ipv4Net) -> Result<Plan, PlanError> {
        let range = range.trunc();
        if !(WIDEST_PREFIX..=NARROWEST_PREFIX).contains(&range.prefix_len()) {
            return Err(PlanError::Size(range));
        }
        let private = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"]
            .iter()
            .any(|p| p.parse::<Ipv4Net>().is_ok_and(|p| p.contains(&range)));
        if !private {
            return Err(PlanError::NotPrivate(range));
        }
        let tag = format!("{:04x}", fold(u32::from(range.network()) ^ u32::from(range.prefix_len()) << 27));
        Ok(Plan { range, tag })
    }

    pub fn range(&self) -> Ipv4Net {
        self.range
    }

    /// The sandboxes' gateway: the range's first address, carried by every host-side link.
    pub fn gateway(&self) -> Ipv4Addr {
        nth(self.range.network(), 1)
    }

    /// Block `b` (`b < BLOCKS`).
    pub fn block(&self, b: u8) -> Ipv4Net {
        let len = self.range.prefix_len() + 5;
        let size = 1u32 << (32 - len);
        Ipv4Net::new(nth(self.range.network(), u32::from(b) * size), len).expect("prefix at most 25")
    }

    /// How many sandbox addresses block `b` has.
    pub fn capacity(&self, b: u8) -> u32 {
        let size = 1u32 << (32 - self.block(b).prefix_len());
        size - first(b) - 1
    }

    /// The `index`th sandbox address of block `b`, if the block has that many.
    pub fn address(&self, b: u8, index: u32) -> Option<Ipv4Addr> {
        (b < BLOCKS && index < self.capacity(b)).then(|| nth(self.block(b).network(), first(b) + index))
    }

    /// The name of the host side of the link of the sandbox at `address`: [`Plan::link_prefix`] and the address's
    /// offset in the range, in hex (at most 15 characters, as the kernel allows).
    pub fn host_link(&self, address: Ipv4Addr) -> String {
        format!("{}{:x}", self.link_prefix(), u32::from(address) - u32::from(self.range.network()))
    }

    /// What every host-side link name of this range starts with (`ig<tag>-`).
    pub fn link_prefix(&self) -> String {
        format!("ig{}-", self.tag)
    }

    /// The name of this range's nftables table (family `inet`).
    pub fn table(&self) -> String {
        format!("ignis_{}", self.tag)
    }
}

/// The first sandbox address's offset in block `b`: past the network address, and in block 0 past the gateway.
fn first(b: u8) -> u32 {
    if b == 0 { 2 } else { 1 }
}

fn nth(base: Ipv4Addr, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base).wrapping_add(n))
}

/// 32 bits folded to 16.
fn fold(x: u32) -> u16 {
    let x = x.wrapping_mul(0x9e37_79b9);
    ((x >> 16) ^ (x & 0xffff)) as u16
}

/// Which addresses of each block are taken.
#[derive(Debug, Default)]
pub struct Slots {
    taken: Vec<Vec<bool>>,
}

impl Slots {
    /// The lowest free index of block `b` below `capacity`, now taken; `None` if all are.
    pub fn take(&mut self, b: u8, capacity: u32) -> Option<u32> {
        let b = usize::from(b);
        if self.taken.len() <= b {
            self.taken.resize_with(b + 1, Vec::new);
        }
        let block = &mut self.taken[b];
        let index = match block.iter().position(|t| !t) {
            Some(i) => i,
            None if (block.len() as u64) < u64::from(capacity) => {
                block.push(false);
                block.len() - 1
            }
            None => return None,
        };
        block[index] = true;
        Some(index as u32)
    }

    /// Frees index `index` of block `b`.
    pub fn give(&mut self, b: u8, index: u32) {
        if let Some(t) = self.taken.get_mut(usize::from(b)).and_then(|block| block.get_mut(index as usize)) {
            *t = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(range: &str) -> Plan {
        Plan::new(range.parse().unwrap()).unwrap()
    }

    #[test]
    fn ranges_are_checked() {
        for bad in ["10.0.0.0/7", "10.0.0.0/21", "10.0.0.0/32", "8.8.0.0/16", "172.32.0.0/16", "169.254.0.0/16"] {
            assert!(Plan::new(bad.parse().unwrap()).is_err(), "{bad}");
        }
        for good in ["10.213.0.0/16", "10.0.0.0/8", "172.16.0.0/20", "192.168.0.0/16", "100.64.0.0/12"] {
            assert!(Plan::new(good.parse().unwrap()).is_ok(), "{good}");
        }
        // Host bits are dropped.
        assert_eq!(plan("10.213.7.9/16").range(), "10.213.0.0/16".parse::<Ipv4Net>().unwrap());
    }

    #[test]
    fn blocks_cover_the_range_without_overlap_and_addresses_stay_in_their_block() {
        for range in [DEFAULT_RANGE, "10.0.0.0/8", "172.16.0.0/20"] {
            let p = plan(range);
            let mut total = 0u64;
            for b in 0..BLOCKS {
                let block = p.block(b);
                assert!(p.range().contains(&block));
                if b > 0 {
                    assert_eq!(u32::from(block.network()), u32::from(p.block(b - 1).broadcast()) + 1);
                }
                total += 1u64 << (32 - block.prefix_len());
                let cap = p.capacity(b);
                let firsts = p.address(b, 0).unwrap();
                let last = p.address(b, cap - 1).unwrap();
                assert!(block.contains(&firsts) && block.contains(&last));
                assert_ne!(firsts, block.network());
                assert_ne!(last, block.broadcast());
                assert_ne!(firsts, p.gateway());
                assert_eq!(p.address(b, cap), None);
            }
            assert_eq!(total, 1u64 << (32 - p.range().prefix_len()));
            assert_eq!(p.address(BLOCKS, 0), None);
        }
        let p = plan(DEFAULT_RANGE);
        assert_eq!(p.gateway(), Ipv4Addr::new(10, 213, 0, 1));
        assert_eq!(p.address(0, 0), Some(Ipv4Addr::new(10, 213, 0, 2)));
        assert_eq!(p.address(1, 0), Some(Ipv4Addr::new(10, 213, 8, 1)));
        assert_eq!(p.capacity(0), 2045);
    }

    #[test]
    fn names_fit_the_kernel_and_differ_between_ranges() {
        let wide = plan("10.0.0.0/8");
        let last = wide.address(BLOCKS - 1, wide.capacity(BLOCKS - 1) - 1).unwrap();
        assert!(wide.host_link(last).len() <= 15, "{}", wide.host_link(last));
        assert!(wide.host_link(last).starts_with(&wide.link_prefix()));
        let a = plan("10.213.0.0/16");
        let b = plan("10.214.0.0/16");
        let c = plan("10.213.0.0/17");
        assert_ne!(a.table(), b.table());
        assert_ne!(a.link_prefix(), b.link_prefix());
        assert_ne!(a.link_prefix(), c.link_prefix());
        assert_eq!(a.host_link(Ipv4Addr::new(10, 213, 1, 2)), format!("{}102", a.link_prefix()));
    }

    #[test]
    fn slots_give_the_lowest_free_index_and_stop_at_capacity() {
        let mut slots = Slots::default();
        assert_eq!(slots.take(3, 2), Some(0));
        assert_eq!(slots.take(3, 2), Some(1));
        assert_eq!(slots.take(3, 2), None);
        assert_eq!(slots.take(0, 2), Some(0));
        slots.give(3, 0);
        assert_eq!(slots.take(3, 2), Some(0));
        slots.give(9, 9); // unknown: nothing
        assert_eq!(slots.take(3, 2), None);
    }
}
