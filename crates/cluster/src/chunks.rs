//! A worker host's view of the server's chunk store: [`RemoteChunks`] reads
//! one root's chunks with signed `GET /ignis/chunks/{root}/{digest}` calls and checks each one
//! against its name, as every [`ChunkStore`] does (unless read with `get_unverified`, whose caller checks
//! them itself), so a worker never trusts the bytes on the wire more than the disk they came from. It only reads:
//! chunks are written (by image preparation) and deleted (by garbage
//! collection) on the server.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use ignis_chunks::{BoxFuture, ChunkDigest, ChunkError, ChunkStore, NamedChunk, Size, Stored};

use crate::Peer;

/// How long one chunk fetch may take before it fails (the reader gets an
/// error rather than waiting on a server that hangs).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// One root of the server's chunk store, read over the worker protocol.
pub struct RemoteChunks {
    peer: Arc<Peer>,
    root: String,
}

impl std::fmt::Debug for RemoteChunks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteChunks")
            .field("server", &self.peer.authority())
            .finish()
    }
}

impl RemoteChunks {
    pub fn new(peer: Arc<Peer>, root: &str) -> RemoteChunks {
        RemoteChunks { peer, root: root.to_string() }
    }

    /// Chunk `digest` from the server, its hash checked if `verify`.
    async fn fetch(&self, digest: ChunkDigest, verify: bool) -> Result<Bytes, ChunkError> {
        let failed = |what: String| ChunkError::Io {
            what,
            source: std::io::Error::other("fetch failed"),
        };
        let path = format!("/ignis/chunks/{}/{digest}", self.root);
        let call = self.peer.call(Method::GET, &path, Bytes::new());
        let (status, body) = match tokio::time::timeout(FETCH_TIMEOUT, call).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return Err(failed(format!("fetching chunk {digest}: {e}"))),
            Err(_) => {
                return Err(failed(format!(
                    "fetching chunk {digest}: no answer in {FETCH_TIMEOUT:?}"
                )));
            }
        };
        match status {
            StatusCode::OK if !verify || ChunkDigest::of(&body) == digest => Ok(body),
            StatusCode::OK => Err(ChunkError::Corrupt(digest)),
            StatusCode::NOT_FOUND => Err(ChunkError::NotFound(digest)),
            other => Err(failed(format!(
                "fetching chunk {digest}: the server answered {other}"
            ))),
        }
    }
}

fn read_only<T>(what: &str) -> Result<T, ChunkError> {
    Err(ChunkError::Io {
        what: format!("{what} on the server's chunk store from a worker host"),
        source: std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "a worker host only reads chunks",
        ),
    })
}

impl ChunkStore for RemoteChunks {
    fn put_named(&self, _chunk: NamedChunk) -> BoxFuture<'_, Result<Stored, ChunkError>> {
        Box::pin(async { read_only("put") })
    }

    fn get(&self, digest: ChunkDigest) -> BoxFuture<'_, Result<Bytes, ChunkError>> {
        Box::pin(self.fetch(digest, true))
    }

    fn get_unverified(&self, digest: ChunkDigest) -> BoxFuture<'_, Result<Bytes, ChunkError>> {
        Box::pin(self.fetch(digest, false))
    }

    fn contains<'a>(
        &'a self,
        _digests: &'a [ChunkDigest],
    ) -> BoxFuture<'a, Result<Vec<bool>, ChunkError>> {
        Box::pin(async { read_only("contains") })
    }

    fn delete(&self, _digest: ChunkDigest) -> BoxFuture<'_, Result<bool, ChunkError>> {
        Box::pin(async { read_only("delete") })
    }

    fn list(
        &self,
        _after: Option<ChunkDigest>,
        _limit: usize,
    ) -> BoxFuture<'_, Result<Vec<ChunkDigest>, ChunkError>> {
        Box::pin(async { read_only("list") })
    }

    fn size(&self) -> BoxFuture<'_, Result<Size, ChunkError>> {
        Box::pin(async { read_only("size") })
    }
}
