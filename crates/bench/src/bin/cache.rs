//! `cache`: chunk fetch latency from five cache nodes on loopback, 4+1 erasure coding (over HTTP/1.1 and over
//! HTTP/2, side by side) against single-copy placement, with every node healthy, with one node 50 ms slower and
//! with one node dead; then erasure coding under load in both protocols (part 2 of the shared chunk cache's
//! benchmark; `bench/cache` runs the hit-rate simulation, part 1, before it).
//!
//! - **Nodes.** [`CacheNode`]s in this process (five per condition), each serving a `127.0.0.1` port from a tokio
//!   runtime of its own (one thread): real HTTP (HTTP/1.1 with kept connections and HTTP/2 on the same port), every
//!   request SigV4-signed and checked, as in the product. A node's memory tier can hold every byte written to it
//!   (nothing is evicted, nothing goes to disk). The nodes' names, which are all placement knows, are their addresses.
//! - **Chunks.** `--chunks` (300) chunks of 512 KiB of random bytes (the OS's random source) per scheme and
//!   condition, none shared, all written before any read; the benchmark keeps only their digests.
//! - **4+1 erasure coding.** [`StripeTier`] as a worker uses it: `put` writes the 5 stripes (4 data + 1 parity of
//!   128 KiB each, behind a header) to the 5 nodes the chunk's placement names; `get` asks all 5 at once, answers
//!   from the first 4 good ones (SHA-256 checked) and drops the 5th request; no retries. Two rows per condition:
//!   one tier speaking HTTP/1.1 (a call per kept connection; the dropped 5th request drops its connection), one
//!   speaking HTTP/2 (one connection per node, every call a stream; the dropped one is reset), both reading the
//!   same chunks.
//! - **Single copy (the baseline).** The whole chunk once, on the node `Placement::new(&nodes, 1)` names, over the
//!   same protocol (HTTP/1.1). A node takes bodies of at most [`MAX_BODY`] bytes (a stripe of the largest chunk:
//!   12 + 256 KiB), so a 512 KiB chunk does not fit in one: it is stored in 2 parts, as "stripes" 0 and 1 of its
//!   digest on that node, and read with 2 signed GETs to it at once (the limit is not raised for a baseline). The
//!   bytes are SHA-256 checked as the tier's are. No answer, an answer other than 200, wrong bytes or the get's time
//!   limit ([`Limits::default`], 2 s, as the tier's) reads the origin instead.
//! - **Origin.** A [`DirectoryChunkStore`] in the temporary directory holding every chunk, which both schemes fall
//!   back to on a miss; its read (from the page cache, its hash checked) counts in the fetch's latency. This is the
//!   best case for single copy: a remote origin (S3) answers in tens of milliseconds.
//! - **Conditions.** A cluster of five nodes per condition, each with its own chunks, written while all five
//!   were up; then node 0 is put in its condition. *Healthy*: all five reached directly. *One node 50 ms slower*:
//!   node 0 is stopped and served again, unchanged (the same node, the same stripes), on a new port, behind a TCP
//!   proxy bound to its old address (its name) that passes requests on at once and holds every byte of the
//!   answers for `--delay-ms` (50) ms: a delay line, so an answer is that much late whatever its size. *One node
//!   dead*: node 0 stopped: its port is closed, connections to it are refused.
//! - **Reads.** An untimed warm-up of [`WARMUP`] chunks per scheme and cluster, then `--rounds` (8) passes over
//!   the chunks, one fetch at a time, each of the nine rows (scheme, condition) fetching chunk `i` before any
//!   fetches chunk `i + 1`, in an order that rotates from chunk to chunk: the machine's noise (it is shared, and
//!   has 2 cores) lands on every row alike. `--chunks × --rounds` samples per row, each timed from the call to the
//!   chunk's checked bytes (from the nodes or, failing them, the origin).
//! - **Under load.** Then, in the healthy and the slow cluster, `--rounds` more passes of erasure coding in each
//!   protocol with [`IN_FLIGHT`] (16) gets in flight at once, in blocks of [`LOAD_BLOCK`] chunks that the four
//!   (condition, protocol) rows fetch in turn, in an order that rotates: each get timed, and chunks a second over
//!   the time the row's blocks took.
//! - **Verdicts.** Under erasure coding, p99.9 with one node slow and with one node dead within 1.5× of its
//!   healthy p99.9 (the target); single copy is shown to degrade: its p99.9 ratio to healthy, above 1.5× or not.
//!
//! Every runtime started here is stopped before the benchmark ends (and dropped, if an error ends it first); every
//! loop is bounded; the temporary directory is removed when the benchmark ends.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use ignis_cachepolicy::Placement;
use ignis_chunks::{ChunkDigest, ChunkStore, DirectoryChunkStore};
use ignis_cluster::{Peer, Protocol};
use ignis_sigv4::Credentials;
use ignis_stripes::client::Limits;
use ignis_stripes::erasure::STRIPES;
use ignis_stripes::node::MAX_BODY;
use ignis_stripes::{CacheNode, NodeConfig, StripeTier};
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::runtime::Runtime;

#[path = "../harness.rs"]
#[allow(dead_code, reason = "shared with ignis-bench; this benchmark uses part of it")]
mod harness;
#[path = "../stats.rs"]
mod stats;
use harness::{KEY_ID, SECRET, ms, verdict};
use stats::{Stats, stats_ms};

const CHUNK_BYTES: usize = 512 * 1024;
/// Chunks fetched per scheme and condition, untimed, before the timed ones.
const WARMUP: usize = 16;
/// The node that is slowed, then stopped.
const VICTIM: usize = 0;
/// Erasure coding's p99.9 with one node slow or dead, at most this many times its healthy p99.9.
const TARGET: f64 = 1.5;
/// How long a node's runtime may take to stop.
const STOP_LIMIT: Duration = Duration::from_secs(10);

/// Chunk fetch latency from five cache nodes on loopback: 4+1 erasure coding against single copy, with every node
/// healthy, one node slower and one node dead.
#[derive(Debug, clap::Parser)]
#[command(name = "cache")]
struct Args {
    /// Chunks of 512 KiB per scheme.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u16).range(WARMUP as i64..=2000))]
    chunks: u16,
    /// Passes over the chunks per condition: chunks x rounds samples per row.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=100))]
    rounds: u16,
    /// How much later the slow node answers, in milliseconds.
    #[arg(long = "delay-ms", default_value_t = 50, value_parser = clap::value_parser!(u16).range(0..=1000))]
    delay_ms: u16,
}

impl Args {
    fn chunks(&self) -> usize {
        usize::from(self.chunks)
    }

    fn rounds(&self) -> usize {
        usize::from(self.rounds)
    }

    fn delay(&self) -> Duration {
        Duration::from_millis(u64::from(self.delay_ms))
    }
}

fn main() -> ExitCode {
    let args = <Args as clap::Parser>::parse();
    let measured = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))
        .and_then(|runtime| runtime.block_on(run(args)));
    match measured {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cache: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn credentials() -> Credentials {
    Credentials { access_key_id: KEY_ID.into(), secret_access_key: SECRET.into() }
}

// ---------------------------------------------------------------------------------------------
// The nodes, and the proxy that slows one.

/// A runtime of one thread of its own: stopping it closes every listener and connection its tasks hold.
fn runtime(name: &str) -> Result<Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))
}

/// A listener on `addr`, for a runtime to take.
fn listen(addr: &str) -> Result<std::net::TcpListener, String> {
    let listener = std::net::TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| format!("{addr}: {e}"))?;
    Ok(listener)
}

fn local_addr(listener: &std::net::TcpListener) -> Result<String, String> {
    listener.local_addr().map(|a| a.to_string()).map_err(|e| format!("a listener's address: {e}"))
}

/// A cache node on a loopback port, served from runtimes of its own: its own, and the proxy's when slowed.
struct Node {
    /// Its name in the placement, and where it is reached.
    addr: String,
    node: Arc<CacheNode>,
    runtimes: Vec<Runtime>,
}

impl Node {
    fn start(data_dir: PathBuf, memory_bytes: u64) -> Result<Node, String> {
        let config = NodeConfig { data_dir, memory_bytes, disk_bytes: 0, credentials: credentials() };
        let node = CacheNode::new(config).map_err(|e| e.to_string())?;
        let listener = listen("127.0.0.1:0")?;
        let addr = local_addr(&listener)?;
        let mut node = Node { addr, node, runtimes: Vec::new() };
        node.serve(listener)?;
        Ok(node)
    }

    fn serve(&mut self, listener: std::net::TcpListener) -> Result<(), String> {
        let serving = runtime("cache-node")?;
        let node = self.node.clone();
        serving.spawn(async move {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => node.serve(listener, std::future::pending()).await,
                Err(e) => eprintln!("cache: a node cannot serve: {e}"),
            }
        });
        self.runtimes.push(serving);
        Ok(())
    }

    /// Stops the node's runtimes: once this returns, its port is closed and every connection to it too.
    async fn stop(&mut self) -> Result<(), String> {
        let runtimes = std::mem::take(&mut self.runtimes);
        tokio::task::spawn_blocking(move || runtimes.into_iter().for_each(|r| r.shutdown_timeout(STOP_LIMIT)))
            .await
            .map_err(|e| format!("stopping a node: {e}"))
    }

    /// Puts the node in `condition`, its stripes kept: healthy, it serves its address; slow, it serves a new port
    /// behind a proxy on its address that answers `delay` late; dead, nothing listens on its address.
    async fn set(&mut self, condition: Condition, delay: Duration) -> Result<(), String> {
        self.stop().await?;
        match condition {
            Condition::Healthy => self.serve(listen(&self.addr)?),
            Condition::Slow => {
                let inner = listen("127.0.0.1:0")?;
                let upstream = local_addr(&inner)?;
                self.serve(inner)?;
                let outer = listen(&self.addr)?;
                let proxy = runtime("cache-proxy")?;
                proxy.spawn(async move {
                    match tokio::net::TcpListener::from_std(outer) {
                        Ok(listener) => delaying_proxy(listener, upstream, delay).await,
                        Err(e) => eprintln!("cache: the proxy cannot listen: {e}"),
                    }
                });
                self.runtimes.push(proxy);
                Ok(())
            }
            Condition::Dead => Ok(()),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Only if an error ended the benchmark before `stop`: without waiting (this may run on a runtime).
        for runtime in self.runtimes.drain(..) {
            runtime.shutdown_background();
        }
    }
}

/// Connects each connection accepted on `listener` to `upstream`: requests pass at once, answers `delay` late.
/// Runs until its runtime stops; each connection's tasks end when either side closes.
async fn delaying_proxy(listener: tokio::net::TcpListener, upstream: String, delay: Duration) {
    while let Ok((client, _)) = listener.accept().await {
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else { return };
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            let (mut client_read, client_write) = client.into_split();
            let (server_read, mut server_write) = server.into_split();
            let requests = async move {
                let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                let _ = server_write.shutdown().await;
            };
            tokio::join!(requests, delay_line(server_read, client_write, delay));
        });
    }
}

/// Copies `from` to `to`, each byte `delay` after it was read: a link with that much more latency, not less
/// bandwidth. Ends when `from` ends or `to` fails.
async fn delay_line(mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin, delay: Duration) {
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<(tokio::time::Instant, Bytes)>(64);
    let reading = async move {
        let mut buf = vec![0; 64 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf).await {
            let due = tokio::time::Instant::now() + delay;
            if sender.send((due, Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                break;
            }
        }
    };
    let writing = async move {
        while let Some((due, bytes)) = receiver.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reading, writing);
}

// ---------------------------------------------------------------------------------------------
// Single copy: the baseline's client.

/// Each chunk whole, once, on the node `Placement::new(nodes, 1)` names, in parts of at most [`MAX_BODY`] bytes
/// stored as "stripes" 0, 1, … of its digest (the node's protocol; it never looks inside).
struct SingleCopy {
    placement: Placement,
    peers: Vec<Peer>,
    limit: Duration,
}

impl SingleCopy {
    fn new(nodes: &[String]) -> Result<SingleCopy, String> {
        let placement = Placement::new(nodes, 1).map_err(|e| e.to_string())?;
        let peers = nodes.iter().map(|node| Peer::new(node, credentials())).collect();
        Ok(SingleCopy { placement, peers, limit: Limits::default().get })
    }

    /// The index of the node that holds the chunk.
    fn node(&self, digest: ChunkDigest) -> Option<usize> {
        self.placement.nodes(digest.as_bytes()).first().copied()
    }

    /// The chunk's parts' bounds, for a chunk of `len` bytes (as an image's chunk index gives it).
    fn parts(len: usize) -> Result<Vec<std::ops::Range<usize>>, String> {
        let parts = len.div_ceil(MAX_BODY).max(1);
        if parts > STRIPES {
            return Err(format!("a chunk of {len} bytes takes {parts} parts: over the {STRIPES} names a node has"));
        }
        let part = len.div_ceil(parts);
        Ok((0..parts).map(|i| (i * part).min(len)..((i + 1) * part).min(len)).collect())
    }

    fn path(digest: ChunkDigest, part: usize) -> String {
        format!("/ignis/stripes/{digest}/{part}")
    }

    async fn put(&self, chunk: &Bytes) -> Result<(), String> {
        let digest = ChunkDigest::of(chunk);
        let peer = self.node(digest).and_then(|node| self.peers.get(node)).ok_or("no node for a chunk")?;
        for (part, range) in Self::parts(chunk.len())?.into_iter().enumerate() {
            match peer.call(Method::PUT, &Self::path(digest, part), chunk.slice(range)).await {
                Ok((StatusCode::NO_CONTENT, _)) => {}
                Ok((status, body)) => {
                    return Err(format!("a part was refused: {status} {}", String::from_utf8_lossy(&body)));
                }
                Err(e) => return Err(format!("a part was not written: {e}")),
            }
        }
        Ok(())
    }

    /// The chunk from its node, its hash checked; `None` if it did not come, whole and right, within the limit.
    async fn get(&self, digest: ChunkDigest, len: usize) -> Option<Bytes> {
        let peer = self.peers.get(self.node(digest)?)?;
        let parts = Self::parts(len).ok()?;
        let calls = (0..parts.len()).map(|part| async move {
            peer.call(Method::GET, &Self::path(digest, part), Bytes::new()).await
        });
        let answers = tokio::time::timeout(self.limit, futures::future::join_all(calls)).await.ok()?;
        let mut chunk = Vec::with_capacity(len);
        for answer in answers {
            match answer {
                Ok((StatusCode::OK, bytes)) => chunk.extend_from_slice(&bytes),
                _ => return None,
            }
        }
        (ChunkDigest::of(&chunk) == digest).then(|| chunk.into())
    }
}

// ---------------------------------------------------------------------------------------------
// The measurement.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    /// 4+1 erasure coding, the nodes spoken to in this protocol.
    Erasure(Protocol),
    /// Single copy, over HTTP/1.1.
    Single,
}

impl Scheme {
    fn label(self) -> &'static str {
        match self {
            Scheme::Erasure(Protocol::Http1) => "4+1 EC, HTTP/1.1",
            Scheme::Erasure(Protocol::Http2) => "4+1 EC, HTTP/2",
            Scheme::Single => "single copy, HTTP/1.1",
        }
    }
}

/// The protocols erasure coding is measured in, side by side.
const PROTOCOLS: [Protocol; 2] = [Protocol::Http1, Protocol::Http2];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    Healthy,
    Slow,
    Dead,
}

impl Condition {
    const ALL: [Condition; 3] = [Condition::Healthy, Condition::Slow, Condition::Dead];

    fn label(self, delay: Duration) -> String {
        match self {
            Condition::Healthy => "healthy".into(),
            Condition::Slow => format!("one node {} ms slower", delay.as_millis()),
            Condition::Dead => "one node dead".into(),
        }
    }
}

/// One row: a scheme's fetches in one condition.
struct Row {
    scheme: Scheme,
    condition: Condition,
    samples: Vec<Duration>,
    /// Fetches the origin answered.
    from_origin: usize,
    /// Fetches rebuilt with the parity stripe (erasure coding only).
    rebuilt: u64,
}

const SCHEMES: [Scheme; 3] = [Scheme::Erasure(Protocol::Http1), Scheme::Erasure(Protocol::Http2), Scheme::Single];

/// Five cache nodes, node [`VICTIM`] in one condition, and the schemes' clients over them: erasure coding's (one
/// per protocol, reading the same chunks) and single copy's, with chunks of its own.
struct Cluster {
    condition: Condition,
    nodes: Vec<Node>,
    /// Erasure coding's clients, in the order of [`PROTOCOLS`].
    tiers: [StripeTier; 2],
    single: SingleCopy,
    erasure_chunks: Vec<ChunkDigest>,
    single_chunks: Vec<ChunkDigest>,
}

impl Cluster {
    /// Starts five nodes (their directories under `dir`), writes `count` chunks of each scheme to them and to the
    /// origin, then puts node [`VICTIM`] in `condition`.
    async fn start(
        condition: Condition,
        dir: &Path,
        count: usize,
        origin: &DirectoryChunkStore,
        delay: Duration,
    ) -> Result<Cluster, String> {
        // More than both schemes' bytes (the chunks, a quarter more for parity): a node's memory tier never evicts.
        let memory = (3 * count * CHUNK_BYTES) as u64;
        let mut nodes = (0..STRIPES)
            .map(|i| Node::start(dir.join(format!("node-{i}")), memory))
            .collect::<Result<Vec<Node>, String>>()?;
        let names: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
        let tiers = PROTOCOLS.map(|protocol| StripeTier::with_protocol(names.clone(), credentials(), protocol));
        let single = SingleCopy::new(&names)?;
        let erasure_chunks = write_chunks(count, origin, |chunk| {
            let tier = &tiers[0];
            async move {
                match tier.put(ChunkDigest::of(&chunk), chunk).await {
                    Ok(STRIPES) => Ok(()),
                    Ok(stored) => Err(format!("{stored} of {STRIPES} stripes stored")),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .await?;
        let single_chunks = write_chunks(count, origin, |chunk| {
            let single = &single;
            async move { single.put(&chunk).await }
        })
        .await?;
        if condition != Condition::Healthy {
            nodes[VICTIM].set(condition, delay).await?;
        }
        Ok(Cluster { condition, nodes, tiers, single, erasure_chunks, single_chunks })
    }

    fn tier(&self, protocol: Protocol) -> &StripeTier {
        match protocol {
            Protocol::Http1 => &self.tiers[0],
            Protocol::Http2 => &self.tiers[1],
        }
    }

    fn chunks(&self, scheme: Scheme) -> &[ChunkDigest] {
        match scheme {
            Scheme::Erasure(_) => &self.erasure_chunks,
            Scheme::Single => &self.single_chunks,
        }
    }

    /// The single-copy chunks node [`VICTIM`] holds.
    fn victim_share(&self) -> usize {
        self.single_chunks.iter().filter(|&&digest| self.single.node(digest) == Some(VICTIM)).count()
    }

    /// One fetch of the chunk: from the nodes, or else from `origin` (then `true`).
    async fn fetch(&self, scheme: Scheme, digest: ChunkDigest, origin: &DirectoryChunkStore) -> Result<bool, String> {
        let from_nodes = match scheme {
            Scheme::Erasure(protocol) => self.tier(protocol).get(digest).await.ok(),
            Scheme::Single => self.single.get(digest, CHUNK_BYTES).await,
        };
        match from_nodes {
            Some(_) => Ok(false),
            None => match origin.get(digest).await {
                Ok(_) => Ok(true),
                Err(e) => Err(format!("the origin has no chunk {digest}: {e}")),
            },
        }
    }

    async fn stop(&mut self) -> Result<(), String> {
        for node in &mut self.nodes {
            node.stop().await?;
        }
        Ok(())
    }
}

/// `count` chunks of random bytes, written to the origin and by `write` to the nodes; their digests.
async fn write_chunks<F, W>(count: usize, origin: &DirectoryChunkStore, write: W) -> Result<Vec<ChunkDigest>, String>
where
    W: Fn(Bytes) -> F,
    F: Future<Output = Result<(), String>>,
{
    let mut digests = Vec::with_capacity(count);
    for _ in 0..count {
        let mut bytes = vec![0; CHUNK_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| format!("random bytes: {e}"))?;
        let chunk = Bytes::from(bytes);
        origin.put(chunk.clone()).await.map_err(|e| format!("the origin: {e}"))?;
        digests.push(ChunkDigest::of(&chunk));
        write(chunk).await?;
    }
    Ok(digests)
}

async fn run(args: Args) -> Result<(), String> {
    let tmp = tempfile::Builder::new()
        .prefix("ignis-cache-")
        .tempdir()
        .map_err(|e| format!("cannot make a temporary directory: {e}"))?;
    let result = measure_all(&args, tmp.path()).await;
    let removed = tmp.close().map_err(|e| format!("cannot remove the temporary directory: {e}"));
    let measured = result?;
    removed?;
    print(&args, &measured);
    Ok(())
}

/// What [`measure_all`] measured.
struct Measured {
    rows: Vec<Row>,
    load: Vec<LoadRow>,
    /// How many single-copy chunks the victim holds in each cluster.
    victim_shares: Vec<(Condition, usize)>,
}

/// Starts a cluster per condition, reads from all three, chunk by chunk, then under load, and stops them.
async fn measure_all(args: &Args, dir: &Path) -> Result<Measured, String> {
    let origin = DirectoryChunkStore::open(dir.join("origin")).map_err(|e| format!("the origin: {e}"))?;
    let mut clusters = Vec::new();
    for condition in Condition::ALL {
        let started = Instant::now();
        let cluster_dir = dir.join(format!("{condition:?}"));
        let cluster = Cluster::start(condition, &cluster_dir, args.chunks(), &origin, args.delay()).await?;
        let names: Vec<&str> = cluster.nodes.iter().map(|n| n.addr.as_str()).collect();
        eprintln!("cache: {}: nodes on {}; wrote 2 x {} chunks of 512 KiB in {:.1} s", condition.label(args.delay()),
            names.join(", "), args.chunks(), started.elapsed().as_secs_f64());
        clusters.push(cluster);
    }
    for cluster in &clusters {
        for i in 0..WARMUP {
            for scheme in SCHEMES {
                cluster.fetch(scheme, cluster.chunks(scheme)[i], &origin).await?;
            }
        }
    }
    let rebuilt = |cluster: &Cluster, scheme: Scheme| match scheme {
        Scheme::Erasure(protocol) => cluster.tier(protocol).stats().rebuilt,
        Scheme::Single => 0,
    };
    // Every (cluster, scheme) pair fetches chunk i before any fetches chunk i + 1, in an order that rotates: noise
    // lands on all nine rows alike.
    let pairs: Vec<(usize, Scheme)> = (0..clusters.len()).flat_map(|c| SCHEMES.map(|scheme| (c, scheme))).collect();
    let rebuilt_before: Vec<u64> = pairs.iter().map(|&(c, scheme)| rebuilt(&clusters[c], scheme)).collect();
    let mut rows: Vec<Row> = pairs
        .iter()
        .map(|&(c, scheme)| {
            let condition = clusters[c].condition;
            Row { scheme, condition, samples: Vec::new(), from_origin: 0, rebuilt: 0 }
        })
        .collect();
    let started = Instant::now();
    for round in 0..args.rounds() {
        for i in 0..args.chunks() {
            for turn in 0..pairs.len() {
                let r = (round + i + turn) % pairs.len();
                let (c, scheme) = pairs[r];
                let cluster = &clusters[c];
                let fetching = Instant::now();
                let from_origin = cluster.fetch(scheme, cluster.chunks(scheme)[i], &origin).await?;
                rows[r].samples.push(fetching.elapsed());
                rows[r].from_origin += usize::from(from_origin);
            }
        }
        eprintln!("cache: pass {}/{} done in {:.1} s", round + 1, args.rounds(), started.elapsed().as_secs_f64());
    }
    for ((row, &(c, scheme)), before) in rows.iter_mut().zip(&pairs).zip(rebuilt_before) {
        row.rebuilt = rebuilt(&clusters[c], scheme) - before;
    }
    let load = measure_load(args, &clusters, &origin).await?;
    let victim_shares = clusters.iter().map(|c| (c.condition, c.victim_share())).collect();
    for cluster in &mut clusters {
        cluster.stop().await?;
    }
    Ok(Measured { rows, load, victim_shares })
}

/// Gets in flight at once under load.
const IN_FLIGHT: usize = 16;
/// Chunks a protocol fetches under load before the other's turn.
const LOAD_BLOCK: usize = 4 * IN_FLIGHT;

/// Erasure coding's fetches in one protocol and condition, [`IN_FLIGHT`] at a time.
struct LoadRow {
    protocol: Protocol,
    condition: Condition,
    samples: Vec<Duration>,
    /// The time its blocks took, all passes: `samples / busy` chunks a second.
    busy: Duration,
    from_origin: usize,
}

/// Erasure coding under load, in the healthy and the slow cluster: `--rounds` passes over the chunks, each pass in
/// blocks of [`LOAD_BLOCK`] chunks that every (cluster, protocol) pair fetches in turn, in an order that rotates,
/// [`IN_FLIGHT`] gets at once (from one task, as `buffer_unordered` polls them), each timed.
async fn measure_load(args: &Args, clusters: &[Cluster], origin: &DirectoryChunkStore) -> Result<Vec<LoadRow>, String> {
    let pairs: Vec<(usize, Protocol)> = (0..clusters.len())
        .filter(|&c| clusters[c].condition != Condition::Dead)
        .flat_map(|c| PROTOCOLS.map(|protocol| (c, protocol)))
        .collect();
    let mut rows: Vec<LoadRow> = pairs
        .iter()
        .map(|&(c, protocol)| {
            let condition = clusters[c].condition;
            LoadRow { protocol, condition, samples: Vec::new(), busy: Duration::ZERO, from_origin: 0 }
        })
        .collect();
    let started = Instant::now();
    for round in 0..args.rounds() {
        for (b, block) in (0..args.chunks()).collect::<Vec<usize>>().chunks(LOAD_BLOCK).enumerate() {
            for turn in 0..pairs.len() {
                let r = (round + b + turn) % pairs.len();
                let (c, protocol) = pairs[r];
                let cluster = &clusters[c];
                let fetching_block = Instant::now();
                let fetched: Vec<Result<(Duration, bool), String>> = futures::stream::iter(block)
                    .map(|&i| async move {
                        let fetching = Instant::now();
                        let digest = cluster.erasure_chunks[i];
                        let from_origin = cluster.fetch(Scheme::Erasure(protocol), digest, origin).await?;
                        Ok((fetching.elapsed(), from_origin))
                    })
                    .buffer_unordered(IN_FLIGHT)
                    .collect()
                    .await;
                rows[r].busy += fetching_block.elapsed();
                for fetch in fetched {
                    let (took, from_origin) = fetch?;
                    rows[r].samples.push(took);
                    rows[r].from_origin += usize::from(from_origin);
                }
            }
        }
        eprintln!("cache: load pass {}/{} done in {:.1} s", round + 1, args.rounds(), started.elapsed().as_secs_f64());
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------------------------
// The table.

fn print(args: &Args, measured: &Measured) {
    let Measured { rows, load, victim_shares } = measured;
    let delay = args.delay();
    let shares: Vec<String> = victim_shares
        .iter()
        .filter(|(c, _)| *c != Condition::Healthy)
        .map(|(c, n)| format!("{n} ({})", format!("{c:?}").to_lowercase()))
        .collect();
    println!();
    println!("Chunk fetch latency from cache nodes on loopback (in-process, signed; the nodes speak HTTP/1.1 with");
    println!("kept connections and HTTP/2 on the same port): a cluster of 5 nodes per condition, each holding {}",
        args.chunks());
    println!("chunks of 512 KiB per scheme (both erasure-coded rows read the same chunks); {} passes, every row",
        args.rounds());
    println!("fetching chunk i before any fetches chunk i + 1, one fetch at a time: {} fetches a row. Node {VICTIM} is",
        args.chunks() * args.rounds());
    println!("behind a proxy on its address that holds its answers {} ms (slow), or stopped, its port closed (dead);",
        delay.as_millis());
    println!("it holds one stripe of every erasure-coded chunk, and {} of the {} single-copy chunks.",
        shares.join(" and "), args.chunks());
    println!();
    println!("  {:<22} {:<24} {:>6} {:>9} {:>9} {:>9} {:>8} {:>8}", "scheme", "condition", "n", "p50 ms", "p99 ms",
        "p99.9 ms", "origin", "rebuilt");
    let stats: Vec<Option<Stats>> = rows.iter().map(|row| stats_ms(&row.samples)).collect();
    for scheme in SCHEMES {
        for (row, stats) in rows.iter().zip(&stats).filter(|(row, _)| row.scheme == scheme) {
            let condition = row.condition.label(delay);
            let rebuilt = match scheme {
                Scheme::Erasure(_) => row.rebuilt.to_string(),
                Scheme::Single => "-".into(),
            };
            match stats {
                Some(s) => println!("  {:<22} {condition:<24} {:>6} {:>9} {:>9} {:>9} {:>8} {rebuilt:>8}",
                    scheme.label(), s.n, ms(s.p50), ms(s.p99), ms(s.p999), row.from_origin),
                None => println!("  {:<22} {condition:<24} {:>6} {:>9}", scheme.label(), 0, "no data"),
            }
        }
    }
    println!("  (origin: fetches the nodes did not answer, read from the origin instead; rebuilt: chunks rebuilt with");
    println!("  the parity stripe)");
    println!();
    println!("  p99.9 against the same scheme's healthy p99.9:");
    let stat = |scheme: Scheme, condition: Condition| {
        let (_, stats) = rows.iter().zip(&stats).find(|(r, _)| r.scheme == scheme && r.condition == condition)?;
        stats.as_ref()
    };
    for scheme in SCHEMES {
        for condition in [Condition::Slow, Condition::Dead] {
            let label = format!("{}, {}", scheme.label(), condition.label(delay));
            let (Some(faulty), Some(healthy)) = (stat(scheme, condition), stat(scheme, Condition::Healthy)) else {
                println!("  {label:<46} no data");
                continue;
            };
            let ratio = faulty.p999 / healthy.p999;
            let note = match scheme {
                Scheme::Erasure(_) => format!("within {TARGET}x (target): {}", verdict(ratio <= TARGET)),
                Scheme::Single => format!("degrades (over {TARGET}x): {}", if ratio > TARGET { "yes" } else { "no" }),
            };
            println!("  {label:<46} {:>8.2}x  {note}", ratio);
        }
    }
    println!();
    println!("  4+1 EC, HTTP/2 against HTTP/1.1, one fetch at a time (below 1: HTTP/2 is faster):");
    for condition in Condition::ALL {
        let [Some(h1), Some(h2)] = PROTOCOLS.map(|protocol| stat(Scheme::Erasure(protocol), condition)) else {
            continue;
        };
        println!("  {:<24} p50 {:>5.2}x   p99 {:>5.2}x   p99.9 {:>5.2}x", condition.label(delay), h2.p50 / h1.p50,
            h2.p99 / h1.p99, h2.p999 / h1.p999);
    }
    print_load(load, delay);
    println!();
    println!("The origin is a DirectoryChunkStore on this machine's disk, read from the page cache with its SHA-256");
    println!("check: the best case for single copy's fallback (a remote origin answers in tens of milliseconds).");
    let n = args.chunks() * args.rounds();
    let from_slowest = n + 1 - ((0.999 * n as f64).ceil() as usize).clamp(1, n);
    let rank = match from_slowest {
        1 => "its slowest sample".to_string(),
        k => format!("the slowest of its samples but {}", k - 1),
    };
    println!("The machine is shared and noisy: a row's p99.9 is {rank}.");
}

fn print_load(load: &[LoadRow], delay: Duration) {
    println!();
    println!("4+1 EC under load: {IN_FLIGHT} gets in flight at once, the same chunks, each (condition, protocol) in");
    println!("turn for {LOAD_BLOCK} chunks at a time; chunks/s is the fetches over the time their blocks took.");
    println!();
    println!("  {:<22} {:<24} {:>6} {:>9} {:>9} {:>9} {:>9} {:>8}", "protocol", "condition", "n", "chunks/s", "p50 ms",
        "p99 ms", "p99.9 ms", "origin");
    let stats: Vec<Option<Stats>> = load.iter().map(|row| stats_ms(&row.samples)).collect();
    for (row, stats) in load.iter().zip(&stats) {
        let protocol = Scheme::Erasure(row.protocol).label();
        let condition = row.condition.label(delay);
        let rate = row.samples.len() as f64 / row.busy.as_secs_f64().max(f64::MIN_POSITIVE);
        match stats {
            Some(s) => println!("  {protocol:<22} {condition:<24} {:>6} {rate:>9.0} {:>9} {:>9} {:>9} {:>8}", s.n,
                ms(s.p50), ms(s.p99), ms(s.p999), row.from_origin),
            None => println!("  {protocol:<22} {condition:<24} {:>6} {:>9}", 0, "no data"),
        }
    }
}
