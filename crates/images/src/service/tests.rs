use std::time::Duration;

use ignis_chunks::MemoryRoots;
use ignis_clock::ManualClock;
use sha2::{Digest as _, Sha256};

use super::*;

const ACCOUNT: &str = "111111111111";
const POLICY: Policy = Policy { retire_for_ms: 60_000, expire_for_ms: 60_000 };

struct World {
    _dir: tempfile::TempDir,
    oci: Arc<Oci>,
    roots: Arc<MemoryRoots>,
    clock: Arc<ManualClock>,
    images: Arc<Images>,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let clock = ManualClock::at_epoch_2026();
    let oci = Arc::new(Oci::open(store.clone(), clock.clone()).unwrap());
    let roots = Arc::new(MemoryRoots::default());
    let keys: AccountKeys = Arc::new(|account: &AccountId| {
        let mut key = [7u8; 32];
        key[..12].copy_from_slice(&account.as_str().as_bytes()[..12]);
        AccountKey::from_bytes(key)
    });
    let config = ImagesConfig { work_dir: dir.path().join("work"), operator_salt: None, prepare: PrepareOptions::default() };
    let images = Images::open(store, oci.clone(), roots.clone(), keys, clock.clone(), config).unwrap();
    World { _dir: dir, oci, roots, clock, images }
}

fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn push_blob(oci: &Oci, repo: &str, data: &[u8]) -> String {
    let id = oci.start_upload(ACCOUNT, repo).unwrap();
    oci.append(ACCOUNT, repo, &id, None, data).unwrap();
    let digest = digest_of(data);
    oci.finish_upload(ACCOUNT, repo, &id, &digest).unwrap();
    digest
}

/// A tar layer of `files` (path, contents).
fn layer(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, body) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, path, body.as_slice()).unwrap();
    }
    tar.into_inner().unwrap()
}

/// Pushes an image of `layers` tagged `tag`; answers its manifest digest.
fn push_image(oci: &Oci, repo: &str, tag: &str, layers: &[Vec<u8>]) -> String {
    let config = serde_json::json!({ "architecture": "amd64", "os": "linux", "config": { "Cmd": ["/app"] } }).to_string();
    let config_digest = push_blob(oci, repo, config.as_bytes());
    let layers: Vec<_> = layers
        .iter()
        .map(|l| serde_json::json!({ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": push_blob(oci, repo, l), "size": l.len() }))
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": ignis_oci::OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len() },
        "layers": layers,
    });
    oci.put_manifest(ACCOUNT, repo, tag, None, manifest.to_string().as_bytes()).unwrap()
}

fn pseudo_random(len: usize, seed: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut block = Sha256::digest([seed]);
    while out.len() < len {
        out.extend_from_slice(&block);
        block = Sha256::digest(block);
    }
    out.truncate(len);
    out
}

/// Every chunk of `image`'s filesystem image, read through `Images::reader`.
async fn image_bytes(images: &Arc<Images>, image: &ImageManifest) -> Result<Vec<u8>, String> {
    let reader = images.reader(&image.root).map_err(|e| e.to_string())?;
    let opened = image.manifest.open(&image.key).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for index in 0..image.manifest.chunks().len() {
        out.extend_from_slice(&opened.read_chunk(index, &*reader).await.map_err(|e| e.to_string())?);
    }
    Ok(out)
}

fn account() -> AccountId {
    AccountId::new(ACCOUNT)
}

#[tokio::test]
async fn an_image_is_prepared_once_and_found_by_its_digest() {
    let w = world();
    let digest = push_image(&w.oci, "app", "v1", &[layer(&[("bin/app", pseudo_random(900_000, 1))])]);
    assert!(w.images.find(&account(), &digest).unwrap().is_none());
    let me = account();
    let (first, second) = tokio::join!(w.images.prepare(&me, "app", &digest), w.images.prepare(&me, "app", &digest));
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!([first.prepared, second.prepared].iter().filter(|p| **p).count(), 1, "prepared once");
    assert!(first.image_bytes > 900_000);
    let found = w.images.find(&account(), &digest).unwrap().unwrap();
    assert_eq!(found.root, w.images.roots()[0].id);
    let bytes = image_bytes(&w.images, &found).await.unwrap();
    assert_eq!(bytes.len() as u64, found.manifest.image_bytes());
    let body = pseudo_random(900_000, 1);
    assert!(bytes.windows(64).any(|w| w == &body[1000..1064]), "the file's bytes are in the image");
    // Another account does not see it.
    assert!(w.images.find(&AccountId::new("222222222222"), &digest).unwrap().is_none());
}

#[tokio::test]
async fn images_that_are_not_runnable_are_the_images_fault() {
    let w = world();
    let digest = push_image(&w.oci, "app", "v1", &[b"not a tar at all".repeat(100)]);
    let error = w.images.prepare(&account(), "app", &digest).await.unwrap_err();
    assert!(error.is_image_fault(), "{error}");
    let missing = w.images.prepare(&account(), "app", &digest_of(b"nothing")).await.unwrap_err();
    assert!(missing.is_image_fault(), "{missing}");
    assert!(w.images.find(&account(), &digest).unwrap().is_none());
}

#[tokio::test]
async fn collection_keeps_what_is_live_and_deletes_the_rest_over_three_runs() {
    let w = world();
    let live = push_image(&w.oci, "app", "live", &[layer(&[("a", pseudo_random(700_000, 2))])]);
    let dead = push_image(&w.oci, "app", "dead", &[layer(&[("b", pseudo_random(700_000, 3))])]);
    for digest in [&live, &dead] {
        w.images.prepare(&account(), "app", digest).await.unwrap();
    }
    let before = image_bytes(&w.images, &w.images.find(&account(), &live).unwrap().unwrap()).await.unwrap();
    let first_root = w.images.roots()[0].id.clone();
    let live_set: HashSet<_> = [(account(), live.clone())].into();
    // Both were prepared just now: within the retire time both count as live.
    w.clock.advance(Duration::from_millis(POLICY.retire_for_ms as u64));
    let report = w.images.collect(&live_set, POLICY).await.unwrap();
    assert_eq!((report.copied, report.dropped), (1, 1), "{report:?}");
    let moved = w.images.find(&account(), &live).unwrap().unwrap();
    assert_eq!(moved.root, report.active_root);
    assert_eq!(image_bytes(&w.images, &moved).await.unwrap(), before, "the copy reads the same bytes");
    assert!(w.images.find(&account(), &dead).unwrap().is_none());
    // The old root is retired, still readable by mounts made before.
    assert!(w.roots.store(&first_root).is_some());
    w.clock.advance(Duration::from_millis(POLICY.retire_for_ms as u64));
    let report = w.images.collect(&live_set, POLICY).await.unwrap();
    assert_eq!(report.expired, vec![first_root.clone()]);
    w.clock.advance(Duration::from_millis(POLICY.expire_for_ms as u64));
    let report = w.images.collect(&live_set, POLICY).await.unwrap();
    assert!(report.deleted.contains(&first_root), "{report:?}");
    assert!(w.roots.store(&first_root).is_none());
    // The live image is still whole, in the active root.
    let now = w.images.find(&account(), &live).unwrap().unwrap();
    assert_eq!(image_bytes(&w.images, &now).await.unwrap(), before);
    let active: Vec<_> = w.images.roots().into_iter().filter(|r| r.state == RootState::Active).collect();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].id, now.root);
}

#[tokio::test]
async fn a_read_of_an_expired_root_raises_its_alarm_and_keeps_it() {
    let w = world();
    let digest = push_image(&w.oci, "app", "v1", &[layer(&[("a", pseudo_random(600_000, 4))])]);
    w.images.prepare(&account(), "app", &digest).await.unwrap();
    let old = w.images.find(&account(), &digest).unwrap().unwrap();
    let live: HashSet<_> = [(account(), digest.clone())].into();
    w.images.collect(&live, POLICY).await.unwrap();
    w.clock.advance(Duration::from_millis(POLICY.retire_for_ms as u64));
    let report = w.images.collect(&live, POLICY).await.unwrap();
    assert_eq!(report.expired, vec![old.root.clone()]);
    // A sandbox that mounted the old manifest reads on: served, and alarmed.
    image_bytes(&w.images, &old).await.unwrap();
    w.clock.advance(Duration::from_millis(POLICY.expire_for_ms as u64 * 10));
    let report = w.images.collect(&live, POLICY).await.unwrap();
    assert!(!report.deleted.contains(&old.root), "{report:?}");
    assert_eq!(report.alarms, vec![old.root.clone()]);
    assert!(w.roots.store(&old.root).is_some());
}

#[tokio::test]
async fn reads_of_a_deleted_root_fail() {
    let w = world();
    let digest = push_image(&w.oci, "app", "v1", &[layer(&[("a", pseudo_random(600_000, 5))])]);
    w.images.prepare(&account(), "app", &digest).await.unwrap();
    let old = w.images.find(&account(), &digest).unwrap().unwrap();
    let none = HashSet::new();
    let mut policy = POLICY;
    policy.retire_for_ms = 0;
    policy.expire_for_ms = 0;
    for _ in 0..3 {
        w.images.collect(&none, policy).await.unwrap();
    }
    assert!(w.images.find(&account(), &digest).unwrap().is_none());
    assert!(image_bytes(&w.images, &old).await.is_err());
}
