//! Sandbox links: a veth pair per network namespace, routed point to point, made over rtnetlink (no `ip` processes).
//!
//! Inside, the namespace has `eth0` with the sandbox's address (/32), a route to the gateway on the link and a
//! default route through it, and no IPv6. Outside, the host side (named by [`Plan::host_link`]) carries the gateway
//! address (/32; every host side carries the same one) and the host has a /32 route to the sandbox through it. No
//! bridge: every packet of a sandbox is routed by the host, so the firewall sees each, with its input link, and
//! sandboxes share no layer-2 segment.
//!
//! A [`Link`] is made on a thread inside the new namespace ([`Links::connect`]) and lives with it: dropping it
//! deletes the host side, which takes the namespace's side with it, and frees the address. A worker killed before
//! that leaves nothing either: the namespaces die with their last fd, and their links with them; what a crashed
//! predecessor of the same range left in the kernel's queue is deleted when the next [`Links`] starts.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use ipnet::Ipv4Net;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::plan::{Plan, Slots};

/// An rtnetlink socket of the network namespace its opener was in.
pub struct Netlink {
    socket: Socket,
    seq: u32,
}

impl Netlink {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Netlink> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Netlink { socket, seq: 0 })
    }

    /// Sends `message` and reads the answers until the kernel's acknowledgement (or the end of a dump), giving the
    /// messages it answered with.
    fn request(&mut self, message: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut buf = vec![0; packet.header.length as usize];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        let mut answers = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = self.socket.recv(&mut &mut buf[..], 0)?;
            let mut at = 0;
            while at < n {
                let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[at..n])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("netlink answer: {e}")))?;
                let length = message.header.length as usize;
                if length == 0 {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "netlink answer of length 0"));
                }
                at += length.next_multiple_of(4);
                if message.header.sequence_number != self.seq {
                    continue;
                }
                match message.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                            None => Ok(answers),
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(answers),
                    NetlinkPayload::InnerMessage(inner) => answers.push(inner),
                    _ => {}
                }
            }
        }
    }

    /// A veth pair: `name` here, `peer` in the namespace of `peer_netns`.
    pub fn add_veth(&mut self, name: &str, peer: &str, peer_netns: BorrowedFd<'_>) -> io::Result<()> {
        let mut peer_message = LinkMessage::default();
        peer_message.attributes.push(LinkAttribute::IfName(peer.to_string()));
        peer_message.attributes.push(LinkAttribute::NetNsFd(peer_netns.as_raw_fd()));
        let mut message = LinkMessage::default();
        message.attributes.push(LinkAttribute::IfName(name.to_string()));
        message.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_message))),
        ]));
        self.request(RouteNetlinkMessage::NewLink(message), NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL).map(drop)
    }

    /// The index of the link named `name`.
    pub fn index(&mut self, name: &str) -> io::Result<u32> {
        let mut message = LinkMessage::default();
        message.attributes.push(LinkAttribute::IfName(name.to_string()));
        let answers = self.request(RouteNetlinkMessage::GetLink(message), NLM_F_ACK)?;
        answers
            .into_iter()
            .find_map(|answer| match answer {
                RouteNetlinkMessage::NewLink(link) => Some(link.header.index),
                _ => None,
            })
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no link {name}")))
    }

    /// The links whose names start with `prefix`: (index, name).
    pub fn links_named(&mut self, prefix: &str) -> io::Result<Vec<(u32, String)>> {
        let answers = self.request(RouteNetlinkMessage::GetLink(LinkMessage::default()), NLM_F_DUMP)?;
        Ok(answers
            .into_iter()
            .filter_map(|answer| {
                let RouteNetlinkMessage::NewLink(link) = answer else { return None };
                link.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfName(name) if name.starts_with(prefix) => Some((link.header.index, name.clone())),
                    _ => None,
                })
            })
            .collect())
    }

    /// A bridge named `name` (sandbox links are routed, not bridged: `bench/sandboxes` measures both).
    pub fn add_bridge(&mut self, name: &str) -> io::Result<()> {
        let mut message = LinkMessage::default();
        message.attributes.push(LinkAttribute::IfName(name.to_string()));
        message.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]));
        self.request(RouteNetlinkMessage::NewLink(message), NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL).map(drop)
    }

    /// Makes link `index` a port of bridge `master`.
    pub fn set_master(&mut self, index: u32, master: u32) -> io::Result<()> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.attributes.push(LinkAttribute::Controller(master));
        self.request(RouteNetlinkMessage::SetLink(message), NLM_F_ACK).map(drop)
    }

    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.header.flags = LinkFlags::Up;
        message.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(message), NLM_F_ACK).map(drop)
    }

    pub fn delete_link(&mut self, index: u32) -> io::Result<()> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        self.request(RouteNetlinkMessage::DelLink(message), NLM_F_ACK).map(drop)
    }

    /// `address`/`prefix` on link `index`.
    pub fn add_address(&mut self, index: u32, address: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut message = AddressMessage::default();
        message.header.family = AddressFamily::Inet;
        message.header.prefix_len = prefix;
        message.header.scope = AddressScope::Universe;
        message.header.index = index;
        message.attributes.push(AddressAttribute::Local(address.into()));
        message.attributes.push(AddressAttribute::Address(address.into()));
        self.request(RouteNetlinkMessage::NewAddress(message), NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL).map(drop)
    }

    /// A route to `destination` out of link `index`, through `gateway` or, without one, on the link itself.
    pub fn add_route(&mut self, index: u32, destination: Ipv4Net, gateway: Option<Ipv4Addr>) -> io::Result<()> {
        let mut message = RouteMessage::default();
        message.header.address_family = AddressFamily::Inet;
        message.header.destination_prefix_length = destination.prefix_len();
        message.header.table = RouteHeader::RT_TABLE_MAIN;
        message.header.protocol = RouteProtocol::Static;
        message.header.scope = if gateway.is_some() { RouteScope::Universe } else { RouteScope::Link };
        message.header.kind = RouteType::Unicast;
        if destination.prefix_len() > 0 {
            message.attributes.push(RouteAttribute::Destination(RouteAddress::Inet(destination.network())));
        }
        if let Some(gateway) = gateway {
            message.attributes.push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
        }
        message.attributes.push(RouteAttribute::Oif(index));
        self.request(RouteNetlinkMessage::NewRoute(message), NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL).map(drop)
    }
}

/// A host's sandbox links: the address plan, the host's rtnetlink socket and namespace, and the addresses in use.
pub struct Links {
    plan: Plan,
    host: Mutex<Netlink>,
    host_netns: OwnedFd,
    slots: Mutex<Slots>,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links").field("plan", &self.plan).finish_non_exhaustive()
    }
}

impl Links {
    /// Opens the calling thread's namespace (the host's) and an rtnetlink socket in it, and deletes the links of
    /// this range that a crashed predecessor left. Needs `CAP_NET_ADMIN`.
    pub fn new(plan: Plan) -> io::Result<Links> {
        let mut host = Netlink::open()?;
        for (index, _) in host.links_named(&plan.link_prefix())? {
            match host.delete_link(index) {
                Err(e) if e.raw_os_error() != Some(libc::ENODEV) => return Err(e),
                _ => {}
            }
        }
        Ok(Links { plan, host: Mutex::new(host), host_netns: own_netns()?, slots: Mutex::default() })
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Connects the calling thread's network namespace (a new one, with nothing in it yet) to the host, with an
    /// address of block `block`.
    pub fn connect(self: &Arc<Self>, block: u8) -> io::Result<Link> {
        let capacity = self.plan.capacity(block);
        let index = lock(&self.slots)
            .take(block, capacity)
            .ok_or_else(|| io::Error::other(format!("no sandbox address left in {}", self.plan.block(block))))?;
        let address = self.plan.address(block, index).expect("within the capacity");
        let mut link = Link { links: self.clone(), block, index, address, host_index: None };
        let host_name = self.plan.host_link(address);
        let gateway = self.plan.gateway();

        // Inside: no IPv6 on the links made from here on, then the pair, made here with its host side out there.
        // (`/proc/sys/net` is the calling thread's namespace's; a kernel without IPv6 has no such file.)
        match std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1") {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut inside = Netlink::open()?;
        inside.add_veth("eth0", &host_name, self.host_netns.as_fd())?;
        // The host side exists from here on: found by name so that a failure below still deletes it.
        let host_index = lock(&self.host).index(&host_name)?;
        link.host_index = Some(host_index);
        let eth0 = inside.index("eth0")?;
        inside.add_address(eth0, address, 32)?;
        inside.set_up(eth0)?;
        inside.add_route(eth0, Ipv4Net::from(gateway), None)?;
        inside.add_route(eth0, Ipv4Net::default(), Some(gateway))?;

        let mut host = lock(&self.host);
        host.add_address(host_index, gateway, 32)?;
        host.set_up(host_index)?;
        host.add_route(host_index, Ipv4Net::from(address), None)?;
        Ok(link)
    }
}

/// One namespace's link to the host (see the module docs).
#[derive(Debug)]
pub struct Link {
    links: Arc<Links>,
    block: u8,
    index: u32,
    address: Ipv4Addr,
    host_index: Option<u32>,
}

impl Link {
    /// The sandbox's address.
    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    /// The block of the sandbox's address.
    pub fn block(&self) -> u8 {
        self.block
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Some(host_index) = self.host_index {
            let deleted = lock(&self.links.host).delete_link(host_index);
            if let Err(e) = deleted
                && e.raw_os_error() != Some(libc::ENODEV)
            {
                // The address stays taken: a link still using it may be in the kernel's way.
                tracing::warn!(link = %self.links.plan.host_link(self.address), "deleting a sandbox link: {e}");
                return;
            }
        }
        lock(&self.links.slots).give(self.block, self.index);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The calling thread's network namespace (close-on-exec).
pub fn own_netns() -> io::Result<OwnedFd> {
    // SAFETY: valid NUL-terminated path.
    let fd = unsafe { libc::open(c"/proc/thread-self/ns/net".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just opened; we own it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
