//! The sandboxes' DNS: a forwarder on the gateway that relays queries, as they are, to the host's resolvers.
//!
//! Sandboxes cannot reach the host's resolvers themselves (they may be on loopback, or in a private range), so
//! their `/etc/resolv.conf` names the gateway, where the firewall redirects port 53 to this forwarder's port. It
//! forwards UDP queries one datagram at a time and TCP connections as byte streams, to the first upstream that
//! answers. It is bounded: at most [`MAX_QUERIES`] UDP queries and [`MAX_STREAMS`] TCP connections in flight, at most
//! [`QUERIES_PER_SANDBOX`] and [`STREAMS_PER_SANDBOX`] of one sandbox (more are dropped, and the client retries as
//! DNS clients do), each for at most [`QUERY_TIME`] / [`STREAM_TIME`].

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinSet;

use crate::share::Shares;

pub const MAX_QUERIES: usize = 256;
pub const QUERIES_PER_SANDBOX: usize = 32;
pub const MAX_STREAMS: usize = 64;
pub const STREAMS_PER_SANDBOX: usize = 8;
pub const QUERY_TIME: Duration = Duration::from_secs(5);
pub const STREAM_TIME: Duration = Duration::from_secs(30);
/// How long an accept loop waits after a failed accept.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The upstream resolvers of the host: the `nameserver` lines of `resolv.conf` text, port 53.
pub fn upstreams(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next()).flatten()
        })
        .filter_map(|address| address.split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// A running forwarder; its tasks end when it is dropped.
#[derive(Debug)]
pub struct Forwarder {
    port: u16,
    _tasks: JoinSet<()>,
}

impl Forwarder {
    /// Binds UDP and TCP on `address` (freely: the gateway address exists once the first sandbox link does), on one
    /// port the kernel picks, and serves on the current tokio runtime.
    pub fn start(address: Ipv4Addr, upstreams: Vec<SocketAddr>) -> io::Result<Forwarder> {
        if upstreams.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no upstream resolver for the sandboxes' DNS"));
        }
        let udp = freebind_udp(SocketAddr::new(address.into(), 0))?;
        let port = udp.local_addr()?.port();
        let tcp = freebind_tcp(SocketAddr::new(address.into(), port))?;
        let upstreams: Arc<[SocketAddr]> = upstreams.into();
        let mut tasks = JoinSet::new();
        tasks.spawn(serve_udp(udp, upstreams.clone()));
        tasks.spawn(serve_tcp(tcp, upstreams));
        Ok(Forwarder { port, _tasks: tasks })
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

fn freebind_socket(address: SocketAddr, kind: socket2::Type) -> io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, kind, None)?;
    socket.set_freebind_v4(true)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    Ok(socket)
}

fn freebind_udp(address: SocketAddr) -> io::Result<UdpSocket> {
    UdpSocket::from_std(freebind_socket(address, socket2::Type::DGRAM)?.into())
}

pub(crate) fn freebind_tcp(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = freebind_socket(address, socket2::Type::STREAM)?;
    socket.listen(128)?;
    TcpListener::from_std(socket.into())
}

async fn serve_udp(socket: UdpSocket, upstreams: Arc<[SocketAddr]>) {
    let socket = Arc::new(socket);
    let shares = Shares::new(MAX_QUERIES, QUERIES_PER_SANDBOX);
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, client)) = socket.recv_from(&mut buf).await else { continue };
        let Some(slot) = shares.take(client.ip()) else { continue };
        let query = buf[..n].to_vec();
        let (socket, upstreams) = (socket.clone(), upstreams.clone());
        tokio::spawn(async move {
            if let Ok(Some(answer)) = tokio::time::timeout(QUERY_TIME, ask(&query, &upstreams)).await {
                let _ = socket.send_to(&answer, client).await;
            }
            drop(slot);
        });
    }
}

/// The first answer of an upstream to `query`, trying each in turn for a share of the time.
async fn ask(query: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    let each = QUERY_TIME / upstreams.len().max(1) as u32;
    for upstream in upstreams {
        let local: SocketAddr = if upstream.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().ok()?;
        let Ok(socket) = UdpSocket::bind(local).await else { continue };
        if socket.connect(upstream).await.is_err() || socket.send(query).await.is_err() {
            continue;
        }
        let mut answer = vec![0u8; 65536];
        if let Ok(Ok(n)) = tokio::time::timeout(each, socket.recv(&mut answer)).await {
            answer.truncate(n);
            return Some(answer);
        }
    }
    None
}

async fn serve_tcp(listener: TcpListener, upstreams: Arc<[SocketAddr]>) {
    let shares = Shares::new(MAX_STREAMS, STREAMS_PER_SANDBOX);
    loop {
        let Ok((mut client, from)) = listener.accept().await else {
            // Out of descriptors, say: wait a little rather than spin.
            tokio::time::sleep(ACCEPT_BACKOFF).await;
            continue;
        };
        let Some(slot) = shares.take(from.ip()) else { continue };
        let upstreams = upstreams.clone();
        tokio::spawn(async move {
            let relay = async {
                for upstream in upstreams.iter() {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        return;
                    }
                }
            };
            let _ = tokio::time::timeout(STREAM_TIME, relay).await;
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_are_the_nameserver_lines() {
        let conf = "# comment\nsearch example.com\nnameserver 10.255.255.53\nnameserver  ::1\nnameserver fe80::1%eth0\n\
                    nameserver bogus\noptions edns0\n";
        let got = upstreams(conf);
        assert_eq!(
            got,
            vec![
                "10.255.255.53:53".parse::<SocketAddr>().unwrap(),
                "[::1]:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
        assert!(upstreams("").is_empty());
    }

    #[tokio::test]
    async fn a_query_comes_back_from_the_first_upstream_that_answers() {
        // An upstream that answers with the query reversed; a dead one before it.
        let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let up_addr = upstream.local_addr().unwrap();
        let dead = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let dead_addr = dead.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let (n, from) = upstream.recv_from(&mut buf).await.unwrap();
            buf[..n].reverse();
            upstream.send_to(&buf[..n], from).await.unwrap();
        });
        let forwarder = Forwarder::start(Ipv4Addr::LOCALHOST, vec![dead_addr, up_addr]).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(b"abc", ("127.0.0.1", forwarder.port())).await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(30), client.recv(&mut buf)).await.unwrap().unwrap();
        assert_eq!(&buf[..n], b"cba");
        drop(dead);
    }
}
