//! Measures [`ignis_images::chunk_and_store`]'s throughput (hash, derive,
//! encrypt, name, put) and `read_chunk`'s, over an in-memory chunk store and
//! over a directory store in a temp directory; then the whole preparation of
//! a synthetic image of the same size (three tar layers on disk): flattening,
//! building the EROFS image, and chunking it into an in-memory store, each
//! stage timed. Not a test: run it by hand, in release, on one core:
//!
//! ```text
//! cargo build --release -p ignis-images --example chunk_throughput
//! taskset -c 0 target/release/examples/chunk_throughput [MIB]
//! ```

use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Instant;

use ignis_chunks::{ChunkStore, DirectoryChunkStore, MemoryChunkStore};
use ignis_images::erofs::{self, ErofsOptions};
use ignis_images::flatten::{FlattenOptions, flatten};
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

/// Three tar layers in `dir` of about `mib` MiB together (half, a third,
/// the rest), each of files from 4 KiB to 4 MiB of random bytes.
fn synthetic_layers(dir: &Path, mib: usize) -> Vec<PathBuf> {
    let shares = [mib / 2, mib / 3, mib - mib / 2 - mib / 3];
    let mut paths = Vec::new();
    for (layer, share) in shares.into_iter().enumerate() {
        let path = dir.join(format!("layer-{layer}.tar"));
        let mut builder = tar::Builder::new(std::fs::File::create(&path).expect("layer file"));
        let (mut left, mut i) = (share * 1024 * 1024, 0usize);
        while left > 0 {
            let size = left.min(4096 << (i % 11));
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_size(size as u64);
            let name = format!("layer{layer}/dir{}/file{i}", i % 16);
            builder.append_data(&mut header, name, random(size).as_slice()).expect("append");
            left -= size;
            i += 1;
        }
        builder.finish().expect("finish layer");
        paths.push(path);
    }
    paths
}

/// Flattens, builds and chunks the synthetic image, each stage timed.
async fn measure_pipeline(mib: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let layers = synthetic_layers(dir.path(), mib);
    let salt = Salt::new("root-1", None);
    let account = AccountKey::from_bytes([7; 32]);
    let start = Instant::now();
    let readers = layers.iter().map(|p| std::fs::File::open(p).expect("open layer"));
    let options = FlattenOptions { spool_in: Some(dir.path().to_path_buf()), ..Default::default() };
    let flat = flatten(readers, &options).expect("flatten");
    let flattened = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut image = tempfile::tempfile_in(dir.path()).expect("image file");
    let stats = erofs::build(&flat, &mut image, &ErofsOptions::default()).expect("build");
    let built = start.elapsed().as_secs_f64();
    image.seek(SeekFrom::Start(0)).expect("seek");
    let store = MemoryChunkStore::new();
    let start = Instant::now();
    chunk_and_store(tokio::fs::File::from_std(image), &store, &salt, &account).await.expect("chunk");
    let chunked = start.elapsed().as_secs_f64();
    let mb = flat.stats().bytes_read as f64 / 1e6;
    let image_mb = stats.bytes as f64 / 1e6;
    println!(
        " pipeline: {mb:.0} MB of files, {image_mb:.0} MB image: flatten {:.0} MB/s, erofs {:.0} MB/s, chunk {:.0} MB/s; \
         all three {:.0} MB/s",
        mb / flattened,
        image_mb / built,
        image_mb / chunked,
        mb / (flattened + built + chunked)
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
        drop(image);
        measure_pipeline(mib).await;
    });
}
