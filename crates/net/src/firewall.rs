//! The host's firewall for sandboxes: one nftables table of Ignis's own per sandbox range ([`Plan::table`]), made at
//! start, replaced atomically when an attachment is added, deleted at shutdown (and, after a crash, by the next
//! start of the same range). It never touches another table. Its rules name the range, the links' name prefix and
//! the blocks, never a single sandbox: nothing changes per sandbox or per invoke.
//!
//! What it enforces, for every packet that comes in on a sandbox link:
//! - IPv6: dropped (sandboxes have none);
//! - spoofing: a source outside the range, or not routed back through the link it came in on, is dropped;
//! - the host: only the gateway's DNS forwarder and the API endpoint may be reached; everything else addressed to the
//!   host (any of its addresses, any port) is dropped;
//! - other sandboxes (the whole range), link-local and metadata (169.254/16), loopback, multicast and reserved
//!   ranges: dropped, whatever is allowed;
//! - the ranges an attachment allows, from its block; then the operator's `--egress-allow` ranges: accepted;
//! - the private ranges ([`PRIVATE`]): dropped; the rest (the internet): accepted, and masqueraded behind the
//!   host's address on the way out.
//!
//! And nothing may open a connection to a sandbox: into a sandbox link goes only what answers its own connections.

use std::fmt::Write;
use std::io::{self, Write as _};
use std::process::{Command, Stdio};

use ipnet::Ipv4Net;

use crate::plan::Plan;

/// Ranges no sandbox reaches unless the operator (`--egress-allow`) or an attachment allows them.
pub const PRIVATE: [&str; 4] = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"];
/// Ranges no sandbox ever reaches (besides the sandbox range itself).
pub const NEVER: [&str; 5] = ["0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4"];

/// What the table lets through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// The operator's `--egress-allow` ranges.
    pub allow: Vec<Ipv4Net>,
    /// The gateway's DNS forwarder's port (sandboxes ask port 53, redirected there).
    pub dns_port: Option<u16>,
    /// The API endpoint's port on the gateway.
    pub endpoint_port: Option<u16>,
    /// Per block, the ranges its attachment allows.
    pub attachments: Vec<(u8, Vec<Ipv4Net>)>,
}

/// The nftables script that (re)makes the table: atomic as one transaction, and idempotent (it deletes the table
/// first, creating it if it is missing so that the delete never fails).
pub fn script(plan: &Plan, policy: &Policy) -> String {
    let table = plan.table();
    let links = format!("\"{}*\"", plan.link_prefix());
    let range = plan.range();
    let gateway = plan.gateway();
    let mut s = String::new();
    let _ = writeln!(s, "table inet {table}\ndelete table inet {table}\ntable inet {table} {{");
    // Before anything else (connection tracking included): what no sandbox may send at all.
    let _ = writeln!(s, "  chain prerouting {{\n    type filter hook prerouting priority raw; policy accept;");
    let _ = writeln!(s, "    iifname {links} meta nfproto ipv6 drop");
    let _ = writeln!(s, "    iifname {links} ip saddr != {range} drop");
    let _ = writeln!(s, "    iifname {links} fib saddr . iif oif missing drop\n  }}");
    if let Some(port) = policy.dns_port {
        let _ = writeln!(s, "  chain dns {{\n    type nat hook prerouting priority dstnat; policy accept;");
        for proto in ["udp", "tcp"] {
            let _ = writeln!(s, "    iifname {links} ip daddr {gateway} {proto} dport 53 redirect to :{port}");
        }
        let _ = writeln!(s, "  }}");
    }
    let _ = writeln!(s, "  chain input {{\n    type filter hook input priority filter; policy accept;");
    if let Some(port) = policy.dns_port {
        let _ = writeln!(s, "    iifname {links} ip daddr {gateway} meta l4proto {{ tcp, udp }} th dport {port} accept");
    }
    if let Some(port) = policy.endpoint_port {
        let _ = writeln!(s, "    iifname {links} ip daddr {gateway} tcp dport {port} accept");
    }
    let _ = writeln!(s, "    iifname {links} drop\n  }}");
    let _ = writeln!(s, "  chain forward {{\n    type filter hook forward priority filter; policy accept;");
    let _ = writeln!(s, "    oifname {links} ct state established,related accept");
    let _ = writeln!(s, "    oifname {links} drop");
    let _ = writeln!(s, "    iifname {links} jump egress\n  }}");
    let _ = writeln!(s, "  chain egress {{");
    let never: Vec<Ipv4Net> = NEVER.iter().map(|n| n.parse().expect("a range")).chain([range]).collect();
    let _ = writeln!(s, "    ip daddr {} drop", set(&never));
    for (block, allow) in &policy.attachments {
        if !allow.is_empty() {
            let _ = writeln!(s, "    ip saddr {} ip daddr {} accept", plan.block(*block), set(allow));
        }
    }
    if !policy.allow.is_empty() {
        let _ = writeln!(s, "    ip daddr {} accept", set(&policy.allow));
    }
    let private: Vec<Ipv4Net> = PRIVATE.iter().map(|n| n.parse().expect("a range")).collect();
    let _ = writeln!(s, "    ip daddr {} drop\n    accept\n  }}", set(&private));
    let _ = writeln!(s, "  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;");
    let _ = writeln!(s, "    ip saddr {range} oifname != {links} masquerade\n  }}\n}}");
    s
}

/// An anonymous nftables set of `ranges`, merged (nftables refuses overlapping intervals).
fn set(ranges: &[Ipv4Net]) -> String {
    let merged = Ipv4Net::aggregate(&ranges.to_vec());
    format!("{{ {} }}", merged.iter().map(Ipv4Net::to_string).collect::<Vec<_>>().join(", "))
}

/// Runs `nft -f -` on `script`.
fn nft(script: &str) -> io::Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("running nft (the nftables package): {e}")))?;
    child.stdin.take().expect("piped").write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("nft: {}", String::from_utf8_lossy(&out.stderr).trim())))
    }
}

/// Makes (or remakes) the table of `plan` as `policy` says.
pub fn install(plan: &Plan, policy: &Policy) -> io::Result<()> {
    nft(&script(plan, policy))
}

/// Deletes the table of `plan`, if there is one.
pub fn remove(plan: &Plan) -> io::Result<()> {
    let table = plan.table();
    nft(&format!("table inet {table}\ndelete table inet {table}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan::new("10.213.0.0/16".parse().unwrap()).unwrap()
    }

    #[test]
    fn the_script_names_only_the_range_its_links_and_its_blocks() {
        let plan = plan();
        let policy = Policy {
            allow: vec!["192.168.7.0/24".parse().unwrap(), "192.168.7.128/25".parse().unwrap()],
            dns_port: Some(40053),
            endpoint_port: Some(9000),
            attachments: vec![(1, vec!["10.99.0.0/16".parse().unwrap()]), (2, vec![])],
        };
        let s = script(&plan, &policy);
        let table = plan.table();
        assert!(s.starts_with(&format!("table inet {table}\ndelete table inet {table}\ntable inet {table} {{")));
        let links = format!("iifname \"{}*\"", plan.link_prefix());
        for rule in [
            format!("{links} meta nfproto ipv6 drop"),
            format!("{links} ip saddr != 10.213.0.0/16 drop"),
            format!("{links} fib saddr . iif oif missing drop"),
            format!("{links} ip daddr 10.213.0.1 udp dport 53 redirect to :40053"),
            format!("{links} ip daddr 10.213.0.1 tcp dport 9000 accept"),
            format!("{links} drop"),
            "ip daddr { 0.0.0.0/8, 10.213.0.0/16, 127.0.0.0/8, 169.254.0.0/16, 224.0.0.0/3 } drop".to_string(),
            "ip saddr 10.213.8.0/21 ip daddr { 10.99.0.0/16 } accept".to_string(),
            "ip daddr { 192.168.7.0/24 } accept".to_string(),
            "ip daddr { 10.0.0.0/8, 100.64.0.0/10, 172.16.0.0/12, 192.168.0.0/16 } drop".to_string(),
            "ip saddr 10.213.0.0/16 oifname != \"".to_string(),
        ] {
            assert!(s.contains(&rule), "missing {rule:?} in\n{s}");
        }
        // A block with nothing allowed has no rule; what is never reached comes before anything allowed.
        assert!(!s.contains("10.213.16.0/21"));
        assert!(s.find("169.254.0.0/16").unwrap() < s.find("10.99.0.0/16").unwrap());
        assert!(s.find("10.99.0.0/16").unwrap() < s.find("{ 10.0.0.0/8").unwrap());
    }

    #[test]
    fn without_a_forwarder_or_endpoint_the_host_takes_nothing() {
        let s = script(&plan(), &Policy::default());
        assert!(!s.contains("redirect") && !s.contains("dport"));
    }
}
