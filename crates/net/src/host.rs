//! A host's sandbox network, as a worker runs it: the links ([`Links`]), the firewall table ([`firewall`]), the DNS
//! forwarder ([`Forwarder`]) and which block serves which [`Attachment`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use ipnet::Ipv4Net;

use crate::dns::{self, Forwarder};
use crate::firewall::{self, Policy};
use crate::link::Links;
use crate::plan::{BLOCKS, Plan, PlanError};
use crate::relay::Relay;
use crate::Attachment;

/// How a host connects its sandboxes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The sandboxes' addresses (`--sandbox-network`).
    pub range: Ipv4Net,
    /// Ranges every sandbox may reach although they are private (`--egress-allow`).
    pub allow: Vec<Ipv4Net>,
    /// The resolvers the sandboxes' DNS goes to; empty: the host's own (`/etc/resolv.conf`).
    pub dns: Vec<SocketAddr>,
    /// Ignis's API, as sandboxes reach it on the gateway, if they do.
    pub endpoint: Option<Endpoint>,
}

/// The API endpoint on the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The gateway's port.
    pub port: u16,
    /// Where the API listens (`HOST:PORT`), if connections must be relayed there (the first that answers, of a
    /// cluster's front ends); empty if the API itself listens on every address (the gateway's included) at `port`.
    pub relay_to: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("this host has blocks of sandbox addresses for {} network attachments at most", BLOCKS - 1)]
    Blocks,
    #[error("the sandbox network {0} is in use by another Ignis on this machine (--sandbox-network picks another)")]
    InUse(Ipv4Net),
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> NetError + '_ {
    move |source| NetError::Io { what: what.to_string(), source }
}

/// A host's running sandbox network. Dropping it deletes the firewall table and stops the forwarder; the links go
/// with their namespaces.
#[derive(Debug)]
pub struct HostNetwork {
    /// Held while it runs (a lock on [`LOCK_DIR`]`/<table>.lock`): one Ignis per range and machine.
    _lock: std::fs::File,
    links: Arc<Links>,
    _forwarder: Forwarder,
    _relay: Option<Relay>,
    endpoint_port: Option<u16>,
    policy: Mutex<Policy>,
    /// The block each attachment's sandboxes take their addresses from (block 0: no attachment).
    blocks: Mutex<HashMap<Attachment, u8>>,
}

impl HostNetwork {
    /// Turns IPv4 forwarding on, deletes what a crashed predecessor of the same range left (links, table), starts
    /// the DNS forwarder (on the current tokio runtime) and installs the firewall table. Needs root.
    pub fn start(config: Config) -> Result<HostNetwork, NetError> {
        let plan = Plan::new(config.range)?;
        let lock = lock(&plan)?;
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(io("turning IPv4 forwarding on"))?;
        let links = Arc::new(Links::new(plan.clone()).map_err(io("removing stale sandbox links"))?);
        let upstreams = if config.dns.is_empty() {
            dns::upstreams(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
        } else {
            config.dns
        };
        let forwarder = Forwarder::start(plan.gateway(), upstreams).map_err(io("starting the sandboxes' DNS forwarder"))?;
        let relay = match &config.endpoint {
            Some(Endpoint { port, relay_to }) if !relay_to.is_empty() => Some(
                Relay::start(SocketAddr::new(plan.gateway().into(), *port), relay_to.clone())
                    .map_err(io("listening for the API on the sandboxes' gateway"))?,
            ),
            _ => None,
        };
        let endpoint_port = config.endpoint.as_ref().map(|e| e.port);
        let policy =
            Policy { allow: config.allow, dns_port: Some(forwarder.port()), endpoint_port, attachments: Vec::new() };
        firewall::install(&plan, &policy).map_err(io("installing the sandbox firewall table"))?;
        Ok(HostNetwork {
            _lock: lock,
            links,
            _forwarder: forwarder,
            _relay: relay,
            endpoint_port,
            policy: Mutex::new(policy),
            blocks: Mutex::default(),
        })
    }

    pub fn links(&self) -> Arc<Links> {
        self.links.clone()
    }

    pub fn plan(&self) -> &Plan {
        self.links.plan()
    }

    /// The sandboxes' `/etc/resolv.conf`.
    pub fn resolv_conf(&self) -> String {
        format!("nameserver {}\n", self.plan().gateway())
    }

    /// The URL of Ignis's API as sandboxes reach it (their `AWS_ENDPOINT_URL`), if they do.
    pub fn endpoint_url(&self) -> Option<String> {
        self.endpoint_port.map(|port| format!("http://{}:{port}", self.plan().gateway()))
    }

    /// The block of the sandboxes of `attachment` (0 for none), allowing its ranges in the firewall the first time.
    pub fn block(&self, attachment: Option<&Attachment>) -> Result<u8, NetError> {
        let Some(attachment) = attachment else { return Ok(0) };
        let mut blocks = self.blocks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&block) = blocks.get(attachment) {
            return Ok(block);
        }
        let block = (1..BLOCKS).find(|b| !blocks.values().any(|used| used == b)).ok_or(NetError::Blocks)?;
        let mut policy = self.policy.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = policy.clone();
        next.attachments.push((block, attachment.allow.clone()));
        firewall::install(self.plan(), &next).map_err(io("allowing a network attachment in the firewall"))?;
        *policy = next;
        blocks.insert(attachment.clone(), block);
        Ok(block)
    }
}

/// Where the locks of the ranges in use are.
pub const LOCK_DIR: &str = "/run/ignis";

/// The lock of `plan`'s range, taken (the kernel drops it with its last fd, a crash included).
fn lock(plan: &Plan) -> Result<std::fs::File, NetError> {
    use std::os::fd::AsRawFd;
    std::fs::create_dir_all(LOCK_DIR).map_err(io("creating /run/ignis"))?;
    let path = format!("{LOCK_DIR}/{}.lock", plan.table());
    let file = std::fs::File::create(&path).map_err(io("opening the sandbox network's lock"))?;
    // SAFETY: plain syscall on an fd we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(if e.kind() == std::io::ErrorKind::WouldBlock { NetError::InUse(plan.range()) } else { io("locking")(e) });
    }
    Ok(file)
}

impl Drop for HostNetwork {
    fn drop(&mut self) {
        if let Err(e) = firewall::remove(self.plan()) {
            tracing::warn!("removing the sandbox firewall table: {e}");
        }
    }
}
