//! The API endpoint on the gateway: a TCP relay from the gateway's port to wherever the API listens (the server's
//! own address, or the server a worker host joined), so that sandboxes reach Ignis's API at one address, the one
//! their `AWS_ENDPOINT_URL` names, and nothing else of the host. Bounded: at most [`MAX_CONNECTIONS`] at once, at most
//! [`MAX_PER_SANDBOX`] of them from one sandbox.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::dns::ACCEPT_BACKOFF;
use crate::share::Shares;

pub const MAX_CONNECTIONS: usize = 1024;
pub const MAX_PER_SANDBOX: usize = 64;

/// A running relay; it stops when dropped.
#[derive(Debug)]
pub struct Relay {
    task: JoinHandle<()>,
}

impl Relay {
    /// Listens on `listen` (freely bound: the gateway address exists once a sandbox link does) and relays each
    /// connection to `target` (`HOST:PORT`), on the current tokio runtime.
    pub fn start(listen: SocketAddr, target: String) -> io::Result<Relay> {
        let listener = crate::dns::freebind_tcp(listen)?;
        let shares = Shares::new(MAX_CONNECTIONS, MAX_PER_SANDBOX);
        let target: Arc<str> = target.into();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, from)) = listener.accept().await else {
                    // Out of descriptors, say: wait a little rather than spin.
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                };
                let Some(slot) = shares.take(from.ip()) else { continue };
                let target = target.clone();
                tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&*target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                    drop(slot);
                });
            }
        });
        Ok(Relay { task })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
