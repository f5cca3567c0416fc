use std::io::Read;

use ignis_chunks::{ChunkStore, MemoryChunkStore};

use super::*;
use crate::erofs::tests::{T, layer};
use crate::flatten::FlattenError;
use crate::tests::random;

const MIB: usize = 1024 * 1024;

fn readers(layers: &[Vec<u8>]) -> Vec<Box<dyn Read + Send>> {
    layers.iter().map(|l| Box::new(std::io::Cursor::new(l.clone())) as Box<dyn Read + Send>).collect()
}

async fn run(layers: &[Vec<u8>], work: &Path, store: &dyn ChunkStore) -> Result<Prepared, PrepareError> {
    let salt = Salt::new("root-1", None);
    let account = AccountKey::from_bytes([1; 32]);
    prepare(readers(layers), work, store, &salt, &account, &PrepareOptions::default()).await
}

/// Two layers of about `mib` MiB, as images built on one base share.
fn base(mib: usize) -> Vec<Vec<u8>> {
    let names: Vec<String> = (0..mib / 2).map(|i| format!("usr/lib/lib{i}.so")).collect();
    let lower: Vec<T> =
        names.iter().enumerate().map(|(i, name)| T::File(name, 0o755, random(3 * MIB / 2 + 777 * i, i as u64))).collect();
    let upper = [T::File("usr/share/data", 0o644, random(mib * MIB / 4, 50)), T::Symlink("usr/lib/libc.so", "lib0.so")];
    vec![layer(&lower), layer(&upper)]
}

#[tokio::test]
async fn the_same_image_twice_stores_nothing_new() {
    let work = tempfile::tempdir().unwrap();
    let store = MemoryChunkStore::new();
    let first = run(&base(4), work.path(), &store).await.unwrap();
    assert_eq!(first.manifest.image_bytes(), first.erofs.bytes);
    assert_eq!(first.flatten.layers, 2);
    assert_eq!(first.chunks.deduplicated_chunks, 0);
    assert!(first.chunks.new_bytes > 4 * MIB as u64);
    // The spool and the image file are gone.
    assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0);
    let again = run(&base(4), work.path(), &store).await.unwrap();
    assert_eq!((again.chunks.new_chunks, again.chunks.new_bytes), (0, 0));
    assert_eq!(again.erofs, first.erofs);
}

#[tokio::test]
async fn an_image_on_a_stored_base_stores_little_that_is_new() {
    let work = tempfile::tempdir().unwrap();
    let store = MemoryChunkStore::new();
    let first = run(&base(24), work.path(), &store).await.unwrap();
    let mut app = base(24);
    app.push(layer(&[T::File("var/task/handler.py", 0o644, random(40_000, 99))]));
    let app = run(&app, work.path(), &store).await.unwrap();
    assert_eq!(app.erofs.layers[..2], first.erofs.layers[..]);
    let total = app.manifest.image_bytes();
    assert!(app.chunks.new_bytes * 20 < total, "{} of {total} bytes are new", app.chunks.new_bytes);
}

#[tokio::test]
async fn a_bad_layer_stores_nothing() {
    let work = tempfile::tempdir().unwrap();
    let store = MemoryChunkStore::new();
    let mut corrupt_gzip = vec![0x1f, 0x8b, 8, 0];
    corrupt_gzip.extend(random(5000, 1));
    let not_a_tar = random(5000, 2);
    for bad in [corrupt_gzip, not_a_tar] {
        let layers = [base(2).remove(1), bad];
        let err = run(&layers, work.path(), &store).await.unwrap_err();
        assert!(matches!(err, PrepareError::Flatten(FlattenError::NotATar { layer: 1, .. })), "{err}");
        assert!(err.is_image_fault());
        assert_eq!(store.size().await.unwrap().chunks, 0);
        assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0);
    }
}

#[tokio::test]
async fn what_the_filesystem_cannot_hold_is_the_images_fault() {
    let work = tempfile::tempdir().unwrap();
    let store = MemoryChunkStore::new();
    let long = "n".repeat(300);
    let err = run(&[layer(&[T::File(&long, 0o644, b"x".to_vec())])], work.path(), &store).await.unwrap_err();
    assert!(matches!(err, PrepareError::Erofs(ErofsError::NameTooLong { .. })), "{err}");
    assert!(err.is_image_fault());
    assert_eq!(store.size().await.unwrap().chunks, 0);
    let spool = PrepareError::Flatten(FlattenError::Spool(io::Error::other("disk full")));
    assert!(!spool.is_image_fault());
}
