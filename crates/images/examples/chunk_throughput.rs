//! Measures [`ignis_images::chunk_and_store`]'s throughput (hash, derive,
//! encrypt, name, put) and `read_chunk`'s, over an in-memory chunk store and
//! over a directory store in a temp directory. Not a test: run it by hand,
//! in release, optionally on one core:
//!
//! ```text
//! cargo build --release -p ignis-images --example chunk_throughput
//! taskset -c 0 target/release/examples/chunk_throughput [MIB]
//! ```

use std::time::Instant;

use ignis_chunks::{ChunkStore, DirectoryChunkStore, MemoryChunkStore};
use ignis_images::{AccountKey, Salt, chunk_and_store};

fn random(len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    getrandom::fill(&mut out).expect("the system's random source");
    out
}

async fn measure(name: &str, image: &[u8], store: &dyn ChunkStore) {
    let salt = Salt::new("root-1", None);
    let account = AccountKey::from_bytes([7; 32]);
    let mb = image.len() as f64 / 1e6;
    let start = Instant::now();
    let chunked = chunk_and_store(image, store, &salt, &account).await.expect("chunk and store");
    let first = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let again = chunk_and_store(image, store, &salt, &account).await.expect("chunk and store again");
    let second = start.elapsed().as_secs_f64();
    assert_eq!(again.stats.new_chunks, 0);
    let opened = chunked.manifest.open(&account).expect("open");
    let start = Instant::now();
    for index in 0..chunked.manifest.chunks().len() {
        opened.read_chunk(index, store).await.expect("read chunk");
    }
    let read = start.elapsed().as_secs_f64();
    println!(
        "{name:>9}: {mb:.0} MB: chunk and store {:.0} MB/s, again (all deduplicated) {:.0} MB/s, read back {:.0} MB/s",
        mb / first,
        mb / second,
        mb / read
    );
}

fn main() {
    let mib: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(256);
    let image = random(mib * 1024 * 1024);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        measure("memory", &image, &MemoryChunkStore::new()).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = DirectoryChunkStore::open(dir.path()).expect("open store");
        measure("directory", &image, &store).await;
    });
}
