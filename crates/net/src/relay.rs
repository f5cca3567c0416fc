//! The API endpoint on the gateway: a TCP relay from the gateway's port to wherever the API listens (the server's
//! own address, or the servers a worker host joined through), so that sandboxes reach Ignis's API at one address,
//! the one their `AWS_ENDPOINT_URL` names, and nothing else of the host. Bounded: at most [`MAX_CONNECTIONS`] at
//! once, at most [`MAX_PER_SANDBOX`] of them from one sandbox. With several targets (a cluster's front ends), a
//! connection goes to the one the last connection reached, or to the next that answers within [`CONNECT_WITHIN`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;


use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::dns::ACCEPT_BACKOFF;
use crate::share::Shares;

pub const MAX_CONNECTIONS: usize = 1024;
pub const MAX_PER_SANDBOX: usize = 64;
/// How long a connection to one target may take before the next is tried.
pub const CONNECT_WITHIN: Duration = Duration::from_secs(2);

/// A running relay; it stops when dropped.
#[derive(Debug)]
pub struct Relay {
    task: JoinHandle<()>,
    address: SocketAddr,
}

impl Relay {
    /// Listens on `listen` (freely bound: the gateway address exists once a sandbox link does) and relays each
    /// connection to one of `targets` (`HOST:PORT`, at least one), on the current tokio runtime.
    pub fn start(listen: SocketAddr, targets: Vec<String>) -> io::Result<Relay> {
        if targets.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "a relay needs a target"));
        }
        let listener = crate::dns::freebind_tcp(listen)?;
        let address = listener.local_addr()?;
        let shares = Shares::new(MAX_CONNECTIONS, MAX_PER_SANDBOX);
        let targets: Arc<Targets> = Arc::new(Targets { all: targets, reached: AtomicUsize::new(0) });
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, from)) = listener.accept().await else {
                    // Out of descriptors, say: wait a little rather than spin.
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                };
                let Some(slot) = shares.take(from.ip()) else { continue };
                let targets = targets.clone();
                tokio::spawn(async move {
                    if let Some(mut server) = targets.connect().await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                    drop(slot);
                });
            }
        });
        Ok(Relay { task, address })
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

/// A relay's targets, and the one the last connection reached.
struct Targets {
    all: Vec<String>,
    reached: AtomicUsize,
}

impl Targets {
    /// A connection to the target last reached, or else to the next one that answers in time, once round.
    async fn connect(&self) -> Option<TcpStream> {
        let first = self.reached.load(Ordering::Relaxed);
        for at in (0..self.all.len()).map(|i| (first + i) % self.all.len()) {
            if let Ok(Ok(stream)) = tokio::time::timeout(CONNECT_WITHIN, TcpStream::connect(&self.all[at])).await {
                self.reached.store(at, Ordering::Relaxed);
                return Some(stream);
            }
        }
        None
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// An address nothing listens on now.
    fn dead() -> String {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string()
    }

    #[tokio::test]
    async fn a_connection_goes_to_the_first_target_that_answers_and_the_next_ones_go_there_too() {
        let live = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_address = live.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = live.accept().await {
                tokio::spawn(async move {
                    let mut byte = [0u8; 1];
                    while stream.read_exact(&mut byte).await.is_ok() && stream.write_all(&byte).await.is_ok() {}
                });
            }
        });
        let relay = Relay::start("127.0.0.1:0".parse().unwrap(), vec![dead(), live_address]).unwrap();
        for _ in 0..3 {
            let mut client = TcpStream::connect(relay.address()).await.unwrap();
            client.write_all(b"x").await.unwrap();
            let mut echoed = [0u8; 1];
            client.read_exact(&mut echoed).await.unwrap();
            assert_eq!(&echoed, b"x");
        }
        assert!(Relay::start("127.0.0.1:0".parse().unwrap(), Vec::new()).is_err());
    }
}
