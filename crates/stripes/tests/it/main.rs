//! Cache nodes on loopback ports, real HTTP and real signing: the tier with nodes stopped, hung, or
//! holding wrong stripes; what a node refuses; a node whose disk is full; the origin behind the tier.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use ignis_chunks::{BoxFuture, ChunkDigest, ChunkError, ChunkStore, MemoryChunkStore, NamedChunk, Size, Stored};
use ignis_cluster::{Peer, Protocol};
use ignis_sigv4::Credentials;
use ignis_stripes::client::Limits;
use ignis_stripes::erasure::{self, MAX_STRIPE_BYTES, STRIPES};
use ignis_stripes::{CacheNode, Miss, NodeConfig, StripeTier, TieredChunkStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn credentials() -> Credentials {
    Credentials { access_key_id: "AKIDCACHE".into(), secret_access_key: "cache-secret".into() }
}

/// Deterministic bytes, different per seed.
fn chunk(seed: u64, len: usize) -> Bytes {
    let block = ChunkDigest::of(&seed.to_le_bytes());
    (0..len).map(|i| block.as_bytes()[i % 32] ^ (i / 32) as u8).collect::<Vec<u8>>().into()
}

/// Chunks of assorted sizes, the largest striped one among them.
fn chunks() -> Vec<Bytes> {
    let lens = [0, 1, 3, 1000, 4096, 65_537, 512 * 1024, erasure::MAX_CHUNK_BYTES, 777, 12_345, 100, 200_000];
    lens.iter().enumerate().map(|(i, len)| chunk(i as u64 + 1, *len)).collect()
}

/// A cache node on a loopback port, in a runtime of its own so that stopping it closes every connection.
struct Node {
    addr: String,
    node: Arc<CacheNode>,
    runtime: Option<tokio::runtime::Runtime>,
    _dir: Option<tempfile::TempDir>,
}

impl Node {
    fn start(memory_bytes: u64, disk_bytes: u64) -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut node = Node::start_in(dir.path().join("data"), memory_bytes, disk_bytes);
        node._dir = Some(dir);
        node
    }

    fn start_in(data_dir: PathBuf, memory_bytes: u64, disk_bytes: u64) -> Node {
        let config = NodeConfig { data_dir, memory_bytes, disk_bytes, credentials: credentials() };
        let node = CacheNode::new(config).expect("cache node");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("address").to_string();
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        let serving = node.clone();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            serving.serve(listener, std::future::pending()).await;
        });
        Node { addr, node, runtime: Some(runtime), _dir: None }
    }

    /// Stops the node: its listener and every connection are closed once this returns.
    async fn stop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            tokio::task::spawn_blocking(move || runtime.shutdown_timeout(Duration::from_secs(30))).await.expect("stop");
        }
    }

    fn peer(&self) -> Peer {
        Peer::new(&self.addr, credentials())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A TCP listener that accepts connections and, once told to hang, never answers them; until then it closes
/// each at once (a node that refuses).
struct Hung {
    addr: String,
    hang: Arc<AtomicBool>,
}

impl Hung {
    async fn start(hang: bool) -> Hung {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address").to_string();
        let hang = Arc::new(AtomicBool::new(hang));
        let hanging = hang.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                if hanging.load(Ordering::SeqCst) {
                    held.push(stream);
                }
            }
        });
        Hung { addr, hang }
    }

    fn hang(&self) {
        self.hang.store(true, Ordering::SeqCst);
    }
}

/// An address nothing listens on.
fn dead_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").to_string()
}

fn five_nodes() -> Vec<Node> {
    (0..STRIPES).map(|_| Node::start(8 << 20, 8 << 20)).collect()
}

fn tier(addrs: Vec<String>, limits: Limits) -> StripeTier {
    StripeTier::new(addrs, credentials()).with_limits(limits)
}

fn tier_over(addrs: Vec<String>, limits: Limits, protocol: Protocol) -> StripeTier {
    StripeTier::with_protocol(addrs, credentials(), protocol).with_limits(limits)
}

const PROTOCOLS: [Protocol; 2] = [Protocol::Http1, Protocol::Http2];

fn addrs(nodes: &[Node]) -> Vec<String> {
    nodes.iter().map(|n| n.addr.clone()).collect()
}

/// Long limits: a test that got a result within them did not wait for them.
const PATIENT: Limits = Limits { get: Duration::from_secs(120), put: Duration::from_secs(120) };

async fn put_all(tier: &StripeTier, chunks: &[Bytes]) {
    for chunk in chunks {
        let stored = tier.put(ChunkDigest::of(chunk), chunk.clone()).await.expect("put");
        assert_eq!(stored, STRIPES);
    }
}

#[tokio::test]
async fn chunks_come_back_whole_with_all_nodes_and_with_one_stopped_over_http1() {
    chunks_come_back_whole_with_all_nodes_and_with_one_stopped(Protocol::Http1).await;
}

#[tokio::test]
async fn chunks_come_back_whole_with_all_nodes_and_with_one_stopped_over_http2() {
    chunks_come_back_whole_with_all_nodes_and_with_one_stopped(Protocol::Http2).await;
}

async fn chunks_come_back_whole_with_all_nodes_and_with_one_stopped(protocol: Protocol) {
    let mut nodes = five_nodes();
    let tier = tier_over(addrs(&nodes), PATIENT, protocol);
    let chunks = chunks();
    put_all(&tier, &chunks).await;
    for chunk in &chunks {
        assert_eq!(tier.get(ChunkDigest::of(chunk)).await.as_ref(), Ok(chunk), "{} bytes", chunk.len());
    }
    let stats = tier.stats();
    assert_eq!((stats.hits, stats.misses, stats.bad, stats.stripes_stored), (chunks.len() as u64, 0, 0, 60));
    // Every node holds one stripe of each chunk.
    for node in &nodes {
        assert_eq!(node.node.stats().memory_stripes, chunks.len() as u64);
    }

    // One node stopped: every chunk still comes back; those whose data stripe it held are rebuilt with parity.
    nodes[2].stop().await;
    let rebuilt_before = tier.stats().rebuilt;
    for chunk in &chunks {
        assert_eq!(tier.get(ChunkDigest::of(chunk)).await.as_ref(), Ok(chunk), "{} bytes", chunk.len());
    }
    let needed_parity = chunks.iter().filter(|c| tier.placement(ChunkDigest::of(c))[4] != 2).count() as u64;
    assert!(needed_parity > 0);
    assert_eq!(tier.stats().rebuilt - rebuilt_before, needed_parity);

    // A chunk never put is a miss.
    assert_eq!(tier.get(ChunkDigest::of(b"absent")).await, Err(Miss::Unavailable));
    // Two nodes stopped: a miss, never wrong bytes.
    nodes[0].stop().await;
    assert_eq!(tier.get(ChunkDigest::of(&chunks[3])).await, Err(Miss::Unavailable));
    assert_eq!(tier.stats().bad, 0);
}

#[tokio::test]
async fn a_node_down_from_the_start_costs_nothing() {
    let nodes: Vec<Node> = (0..4).map(|_| Node::start(8 << 20, 8 << 20)).collect();
    let mut list = addrs(&nodes);
    list.insert(1, dead_address());
    let tier = tier(list, PATIENT);
    let chunks = chunks();
    for chunk in &chunks {
        assert_eq!(tier.put(ChunkDigest::of(chunk), chunk.clone()).await, Ok(4));
    }
    for chunk in &chunks {
        assert_eq!(tier.get(ChunkDigest::of(chunk)).await.as_ref(), Ok(chunk));
    }
    assert_eq!(tier.stats().hits, chunks.len() as u64);
}

#[tokio::test]
async fn a_hung_node_does_not_delay_the_answer() {
    for protocol in PROTOCOLS {
        let nodes: Vec<Node> = (0..4).map(|_| Node::start(8 << 20, 8 << 20)).collect();
        let mut list = addrs(&nodes);
        let hung = Hung::start(false).await;
        list.insert(3, hung.addr.clone());
        // Gets must not wait for the hung node at all: their limit is long, and a get that waited for the hung
        // node would not finish.
        let tier = tier_over(list, PATIENT, protocol);
        let chunks = chunks();
        for chunk in &chunks {
            assert_eq!(tier.put(ChunkDigest::of(chunk), chunk.clone()).await, Ok(4), "{protocol:?}");
        }
        hung.hang();
        for chunk in &chunks {
            assert_eq!(tier.get(ChunkDigest::of(chunk)).await.as_ref(), Ok(chunk), "{protocol:?}");
        }
        let held_data = chunks.iter().filter(|c| tier.placement(ChunkDigest::of(c))[4] != 3).count() as u64;
        assert_eq!(tier.stats().rebuilt, held_data, "{protocol:?}");
    }
}

#[tokio::test]
async fn many_gets_at_once_come_back_whole_in_either_protocol() {
    let nodes = five_nodes();
    let chunks = chunks();
    put_all(&tier(addrs(&nodes), PATIENT), &chunks).await;
    for protocol in PROTOCOLS {
        let tier = Arc::new(tier_over(addrs(&nodes), PATIENT, protocol));
        let mut gets = tokio::task::JoinSet::new();
        for round in 0..4 {
            for (i, chunk) in chunks.iter().enumerate() {
                let (tier, chunk) = (tier.clone(), chunk.clone());
                gets.spawn(async move { (round, i, tier.get(ChunkDigest::of(&chunk)).await == Ok(chunk)) });
            }
        }
        while let Some(got) = gets.join_next().await {
            let (round, i, whole) = got.expect("a get");
            assert!(whole, "{protocol:?}: chunk {i}, round {round}");
        }
        let stats = tier.stats();
        assert_eq!((stats.hits, stats.misses, stats.bad), (4 * chunks.len() as u64, 0, 0), "{protocol:?}");
    }
}

#[tokio::test]
async fn a_time_limit_bounds_a_get_that_needs_a_hung_node() {
    let nodes: Vec<Node> = (0..3).map(|_| Node::start(8 << 20, 8 << 20)).collect();
    let mut list = addrs(&nodes);
    let hung = [Hung::start(false).await, Hung::start(false).await];
    list.insert(0, hung[0].addr.clone());
    list.insert(2, hung[1].addr.clone());
    let tier = tier(list, Limits { get: Duration::from_millis(500), put: PATIENT.put });
    let data = chunk(99, 10_000);
    assert_eq!(tier.put(ChunkDigest::of(&data), data.clone()).await, Ok(3));
    hung.iter().for_each(Hung::hang);
    assert_eq!(tier.get(ChunkDigest::of(&data)).await, Err(Miss::TimedOut));
    assert_eq!(tier.stats().misses, 1);
}

/// Writes `stripe` as stripe `index` of `digest` on the node that holds it.
async fn overwrite(nodes: &[Node], tier: &StripeTier, digest: ChunkDigest, index: usize, stripe: Bytes) {
    let node = &nodes[tier.placement(digest)[index]];
    let path = format!("/ignis/stripes/{digest}/{index}");
    let (status, _) = node.peer().call(Method::PUT, &path, stripe).await.expect("put");
    assert_eq!(status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn wrong_stripes_are_detected_counted_and_never_served() {
    for wrong in 0..STRIPES {
        let mut nodes = five_nodes();
        let tier = tier(addrs(&nodes), PATIENT);
        let corrupt = chunk(10 + wrong as u64, 300_000);
        let truncated = chunk(20 + wrong as u64, 300_000);
        put_all(&tier, &[corrupt.clone(), truncated.clone()]).await;
        let (corrupt_digest, truncated_digest) = (ChunkDigest::of(&corrupt), ChunkDigest::of(&truncated));
        let stripes = erasure::encode(&corrupt).expect("encode");
        let mut bytes = stripes[wrong].to_vec();
        bytes[erasure::HEADER_BYTES + 1000] ^= 0xff;
        overwrite(&nodes, &tier, corrupt_digest, wrong, bytes.into()).await;
        let stripes = erasure::encode(&truncated).expect("encode");
        overwrite(&nodes, &tier, truncated_digest, wrong, stripes[wrong].slice(..stripes[wrong].len() - 10)).await;

        // All five answer: the right bytes, whichever four come first.
        for _ in 0..3 {
            assert_eq!(tier.get(corrupt_digest).await.as_ref(), Ok(&corrupt), "stripe {wrong}");
            assert_eq!(tier.get(truncated_digest).await.as_ref(), Ok(&truncated), "stripe {wrong}");
        }

        // Another stripe's node stopped: the wrong stripe is one of the four; found, counted, not served.
        let other = (wrong + 1) % STRIPES;
        let bad_before = tier.stats().bad;
        nodes[tier.placement(corrupt_digest)[other]].stop().await;
        assert_eq!(tier.get(corrupt_digest).await, Err(Miss::Unverified), "stripe {wrong}");
        assert_eq!(tier.stats().bad, bad_before + 1);
        let stopped = tier.placement(corrupt_digest)[other];
        if tier.placement(truncated_digest)[wrong] != stopped {
            let missing_too = tier.placement(truncated_digest).contains(&stopped);
            let got = tier.get(truncated_digest).await;
            match missing_too {
                true => assert_eq!(got, Err(Miss::Unavailable), "stripe {wrong}"),
                false => assert_eq!(got.as_ref(), Ok(&truncated), "stripe {wrong}"),
            }
            assert_eq!(tier.stats().bad, bad_before + 2, "stripe {wrong}");
        }
    }
}

/// The status line of a raw, unsigned request.
async fn raw(addr: &str, request: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed before a status line");
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer).to_string();
    text.lines().next().unwrap_or("").to_string()
}

/// The head of a request signed as [`Peer`] signs it, for a body of `body`, which is not part of it.
fn signed_head(addr: &str, method: &str, path: &str, body: &[u8]) -> String {
    let headers = [("host", addr)];
    let parts = ignis_sigv4::RequestParts { method, path, query: "", headers: &headers, body };
    let signed = ignis_sigv4::sign(&parts, &credentials(), "us-east-1", "ignis", std::time::SystemTime::now());
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\n", body.len());
    for (name, value) in signed {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head + "\r\n"
}

#[tokio::test]
async fn unsigned_wrongly_signed_and_malformed_requests_are_refused() {
    let node = Node::start(1 << 20, 1 << 20);
    let digest = ChunkDigest::of(b"x");
    // Unsigned: refused before the body, which never comes (were it awaited, this would be a 408 after 30 s).
    let host = &node.addr;
    let put = format!("PUT /ignis/stripes/{digest}/0 HTTP/1.1\r\nhost: {host}\r\ncontent-length: 100000\r\n\r\n");
    assert_eq!(raw(&node.addr, &put).await, "HTTP/1.1 403 Forbidden");
    let get = format!("GET /ignis/health HTTP/1.1\r\nhost: {host}\r\n\r\n");
    assert_eq!(raw(&node.addr, &get).await, "HTTP/1.1 403 Forbidden");
    // Signed with another key.
    let stranger = Credentials { access_key_id: "AKIDCACHE".into(), secret_access_key: "not-the-secret".into() };
    let stranger = Peer::new(&node.addr, stranger);
    let (status, _) = stranger.call(Method::GET, "/ignis/health", Bytes::new()).await.expect("call");
    assert_eq!(status, StatusCode::FORBIDDEN);
    let stranger = Credentials { access_key_id: "AKIDOTHER".into(), secret_access_key: "cache-secret".into() };
    let path = format!("/ignis/stripes/{digest}/0");
    let stranger = Peer::new(&node.addr, stranger);
    let (status, _) = stranger.call(Method::PUT, &path, Bytes::from_static(b"s")).await.expect("call");
    assert_eq!(status, StatusCode::FORBIDDEN);

    let peer = node.peer();
    let call = |method: Method, path: String, body: Bytes| {
        let peer = &peer;
        async move { peer.call(method, &path, body).await.expect("call").0 }
    };
    let stripe = |i: &str| format!("/ignis/stripes/{digest}/{i}");
    assert_eq!(call(Method::GET, "/ignis/health".into(), Bytes::new()).await, StatusCode::OK);
    assert_eq!(call(Method::GET, stripe("0"), Bytes::new()).await, StatusCode::NOT_FOUND);
    for bad in [stripe("5"), stripe("x"), stripe("01"), "/ignis/stripes/abc/0".into(), format!("{}/1", stripe("0"))] {
        assert_eq!(call(Method::GET, bad.clone(), Bytes::new()).await, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(call(Method::PUT, bad.clone(), Bytes::from_static(b"s")).await, StatusCode::BAD_REQUEST, "{bad}");
    }
    let upper = format!("/ignis/stripes/{}/0", digest.to_string().to_uppercase());
    assert_eq!(call(Method::GET, upper, Bytes::new()).await, StatusCode::BAD_REQUEST);
    assert_eq!(call(Method::GET, "/ignis/other".into(), Bytes::new()).await, StatusCode::NOT_FOUND);
    assert_eq!(call(Method::DELETE, stripe("0"), Bytes::new()).await, StatusCode::METHOD_NOT_ALLOWED);
    // Over the limit: refused from its declared length, before the body (which is never sent; a client
    // sending it may see its write fail before it reads the answer).
    let too_large = vec![0; MAX_STRIPE_BYTES + 1];
    let head = signed_head(&node.addr, "PUT", &stripe("0"), &too_large);
    assert_eq!(raw(&node.addr, &head).await, "HTTP/1.1 413 Payload Too Large");
    assert_eq!(call(Method::GET, stripe("0"), Bytes::new()).await, StatusCode::NOT_FOUND);
    // The largest stripe is taken, and stored as it came.
    let largest = Bytes::from(vec![7; MAX_STRIPE_BYTES]);
    assert_eq!(call(Method::PUT, stripe("4"), largest.clone()).await, StatusCode::NO_CONTENT);
    assert_eq!(peer.call(Method::GET, &stripe("4"), Bytes::new()).await, Ok((StatusCode::OK, largest)));
}

/// Checks that a node that cannot store a stripe answers 507 and goes on serving.
async fn full_node_keeps_serving(node: &Node, large: usize) {
    let peer = node.peer();
    let digest = ChunkDigest::of(b"full");
    let path = |i: usize| format!("/ignis/stripes/{digest}/{i}");
    let (status, _) = peer.call(Method::PUT, &path(0), Bytes::from(vec![1; large])).await.expect("put");
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE);
    assert_eq!(peer.call(Method::GET, &path(0), Bytes::new()).await.expect("get").0, StatusCode::NOT_FOUND);
    assert_eq!(peer.call(Method::GET, "/ignis/health", Bytes::new()).await.expect("health").0, StatusCode::OK);
    let small = Bytes::from(vec![2; 100]);
    assert_eq!(peer.call(Method::PUT, &path(1), small.clone()).await.expect("put").0, StatusCode::NO_CONTENT);
    assert_eq!(peer.call(Method::GET, &path(1), Bytes::new()).await, Ok((StatusCode::OK, small)));
}

#[tokio::test]
async fn a_stripe_no_tier_can_hold_is_refused_and_the_node_serves_on() {
    let node = Node::start(0, 1000);
    full_node_keeps_serving(&node, 1001).await;
}

/// A tmpfs mounted for the test, unmounted however the test ends.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(bytes: usize) -> Tmpfs {
        let dir = tempfile::tempdir().expect("temp dir");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount");
        assert!(status.success(), "mount a tmpfs");
        Tmpfs { dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let umount = |lazy: bool| {
            let mut command = std::process::Command::new("umount");
            if lazy {
                // Still busy (a node's blocking thread, after a failed test): detached now, gone when idle.
                command.arg("--lazy");
            }
            command.arg(self.dir.path()).status().is_ok_and(|s| s.success())
        };
        if !umount(false) {
            umount(true);
        }
    }
}

#[tokio::test]
async fn a_node_whose_disk_is_full_answers_507_and_serves_on_as_root() {
    let disk = Tmpfs::mount(64 * 1024);
    let mut node = Node::start_in(disk.dir.path().join("data"), 0, 64 << 20);
    full_node_keeps_serving(&node, 200_000).await;
    assert_eq!(node.node.stats().disk_write_failures, 1);
    // With a memory tier, stripes pushed out to a full disk are dropped; puts and gets go on.
    node.stop().await;
    node = Node::start_in(disk.dir.path().join("data"), 300_000, 64 << 20);
    let peer = node.peer();
    for i in 0..4u8 {
        let path = format!("/ignis/stripes/{}/0", ChunkDigest::of(&[i]));
        let (status, _) = peer.call(Method::PUT, &path, Bytes::from(vec![i; 200_000])).await.expect("put");
        assert_eq!(status, StatusCode::NO_CONTENT, "stripe {i}");
        assert_eq!(peer.call(Method::GET, &path, Bytes::new()).await.expect("get").0, StatusCode::OK);
    }
    assert!(node.node.stats().disk_write_failures >= 1);
    assert_eq!(peer.call(Method::GET, "/ignis/health", Bytes::new()).await.expect("health").0, StatusCode::OK);
    node.stop().await;
}

/// An origin that counts its gets.
#[derive(Debug, Default)]
struct Counting {
    inner: MemoryChunkStore,
    gets: AtomicU64,
}

impl ChunkStore for Counting {
    fn put_named(&self, chunk: NamedChunk) -> BoxFuture<'_, Result<Stored, ChunkError>> {
        self.inner.put_named(chunk)
    }

    fn get(&self, digest: ChunkDigest) -> BoxFuture<'_, Result<Bytes, ChunkError>> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get(digest)
    }

    fn contains<'a>(&'a self, digests: &'a [ChunkDigest]) -> BoxFuture<'a, Result<Vec<bool>, ChunkError>> {
        self.inner.contains(digests)
    }

    fn delete(&self, digest: ChunkDigest) -> BoxFuture<'_, Result<bool, ChunkError>> {
        self.inner.delete(digest)
    }

    fn list(&self, after: Option<ChunkDigest>, limit: usize) -> BoxFuture<'_, Result<Vec<ChunkDigest>, ChunkError>> {
        self.inner.list(after, limit)
    }

    fn size(&self) -> BoxFuture<'_, Result<Size, ChunkError>> {
        self.inner.size()
    }
}

#[tokio::test]
async fn the_origin_is_not_read_for_chunks_the_tier_holds() {
    let mut nodes = five_nodes();
    let tier = Arc::new(tier(addrs(&nodes), PATIENT));
    let origin = Arc::new(Counting::default());
    let store = TieredChunkStore::new(tier.clone(), origin.clone());
    let chunks = chunks();
    for chunk in &chunks {
        let stored = store.put(chunk.clone()).await.expect("put");
        assert!(stored.new);
    }
    assert_eq!(tier.stats().stripes_stored, 0, "puts go to the origin alone");
    let size = store.size().await.expect("size");
    assert_eq!(size.chunks, chunks.len() as u64);

    // First reads: misses, from the origin; the stripes are written behind them.
    for chunk in &chunks {
        assert_eq!(store.get(ChunkDigest::of(chunk)).await.as_ref().ok(), Some(chunk));
    }
    assert_eq!(origin.gets.load(Ordering::SeqCst), chunks.len() as u64);
    let total: u64 = chunks.iter().map(|c| c.len() as u64).sum();
    assert_eq!(store.stats().origin_fetch_bytes, total);
    store.settled().await;
    assert_eq!(tier.stats().stripes_stored, 5 * chunks.len() as u64);

    // Then from the tier (checked by it, also when the caller checks itself), also with a node stopped.
    for chunk in &chunks {
        assert_eq!(store.get(ChunkDigest::of(chunk)).await.as_ref().ok(), Some(chunk));
        assert_eq!(store.get_unverified(ChunkDigest::of(chunk)).await.as_ref().ok(), Some(chunk));
    }
    nodes[4].stop().await;
    for chunk in &chunks {
        assert_eq!(store.get(ChunkDigest::of(chunk)).await.as_ref().ok(), Some(chunk));
    }
    assert_eq!(origin.gets.load(Ordering::SeqCst), chunks.len() as u64);

    // A wrong stripe the tier cannot get around: the origin answers, right.
    let digest = ChunkDigest::of(&chunks[6]);
    let placement = tier.placement(digest);
    let wrong = (0..STRIPES).find(|&i| placement[i] != 4).expect("a stripe on a running node");
    let mut bytes = erasure::encode(&chunks[6]).expect("encode")[wrong].to_vec();
    bytes[erasure::HEADER_BYTES] ^= 1;
    overwrite(&nodes, &tier, digest, wrong, bytes.into()).await;
    assert_eq!(store.get(digest).await.as_ref().ok(), Some(&chunks[6]));
    assert_eq!(origin.gets.load(Ordering::SeqCst), chunks.len() as u64 + 1);
    assert!(tier.stats().bad >= 1);

    // Absent everywhere: the origin's answer.
    assert!(matches!(store.get(ChunkDigest::of(b"nowhere")).await, Err(ChunkError::NotFound(_))));
    assert!(store.has(digest).await.expect("has"));
    assert!(store.delete(digest).await.expect("delete"));
    assert!(!store.has(digest).await.expect("has"));
}

#[tokio::test]
async fn misses_past_the_write_limit_write_nothing() {
    let hung = Hung::start(true).await;
    let limits = Limits { get: Duration::from_millis(200), put: Duration::from_secs(600) };
    let tier = Arc::new(tier(vec![hung.addr; 5], limits));
    let origin = Arc::new(Counting::default());
    let store = TieredChunkStore::new(tier.clone(), origin.clone()).with_max_puts(2);
    let chunks = &chunks()[..5];
    for chunk in chunks {
        origin.put(chunk.clone()).await.expect("put");
    }
    // The tier's puts hang: two are in flight, the rest are dropped; the gets are answered by the origin.
    for chunk in chunks {
        assert_eq!(store.get(ChunkDigest::of(chunk)).await.as_ref().ok(), Some(chunk));
    }
    assert_eq!(store.stats().puts_dropped, chunks.len() as u64 - 2);
    assert_eq!(store.stats().origin_fetches, chunks.len() as u64);
}
