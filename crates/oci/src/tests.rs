use super::*;

fn oci_with(limits: Limits) -> (tempfile::TempDir, Oci) {
    let (dir, oci, _) = oci_clocked(limits);
    (dir, oci)
}

fn oci_clocked(limits: Limits) -> (tempfile::TempDir, Oci, Arc<ignis_clock::ManualClock>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let clock = ignis_clock::ManualClock::at_epoch_2026();
    (
        dir,
        Oci::open_with(store, limits, clock.clone()).unwrap(),
        clock,
    )
}

fn oci() -> (tempfile::TempDir, Oci) {
    oci_with(Limits::default())
}

fn push_blob(oci: &Oci, account: &str, repo: &str, data: &[u8]) -> String {
    let id = oci.start_upload(account, repo).unwrap();
    oci.append(account, repo, &id, None, data).unwrap();
    let digest = digest_of(data);
    oci.finish_upload(account, repo, &id, &digest).unwrap();
    digest
}

fn manifest(config: (&str, usize), layers: &[(&str, usize)]) -> Vec<u8> {
    let d = |(digest, size): (&str, usize)| serde_json::json!({"mediaType": "application/octet-stream", "digest": digest, "size": size});
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": d(config),
        "layers": layers.iter().map(|l| d(*l)).collect::<Vec<_>>(),
    }))
    .unwrap()
}

#[test]
fn monolithic_and_chunked_uploads() {
    let (_dir, oci) = oci();
    let digest = push_blob(&oci, "a", "app", b"hello");
    assert_eq!(oci.read_blob("a", "app", &digest).unwrap(), b"hello");
    assert_eq!(oci.blob_size("a", "app", &digest).unwrap(), 5);

    let id = oci.start_upload("a", "app").unwrap();
    assert_eq!(
        oci.append("a", "app", &id, Some(0), b"chunk one, ")
            .unwrap(),
        11
    );
    assert!(matches!(
        oci.append("a", "app", &id, Some(3), b"x"),
        Err(OciError::RangeInvalid(_))
    ));
    assert_eq!(
        oci.append("a", "app", &id, Some(11), b"chunk two").unwrap(),
        20
    );
    assert_eq!(oci.upload_size("a", "app", &id).unwrap(), 20);
    let digest = digest_of(b"chunk one, chunk two");
    oci.finish_upload("a", "app", &id, &digest).unwrap();
    assert_eq!(
        oci.read_blob("a", "app", &digest).unwrap(),
        b"chunk one, chunk two"
    );
    assert!(matches!(
        oci.upload_size("a", "app", &id),
        Err(OciError::UploadUnknown(_))
    ));
    // Nothing is left in the spool.
    assert_eq!(fs::read_dir(oci.root.join("uploads")).unwrap().count(), 0);
}

#[test]
fn digest_mismatch_is_refused() {
    let (_dir, oci) = oci();
    let id = oci.start_upload("a", "app").unwrap();
    oci.append("a", "app", &id, None, b"hello").unwrap();
    let wrong = digest_of(b"other");
    assert!(matches!(
        oci.finish_upload("a", "app", &id, &wrong),
        Err(OciError::DigestInvalid(_))
    ));
    assert!(matches!(
        oci.blob_size("a", "app", &wrong),
        Err(OciError::NameUnknown(_))
    ));
    assert!(!oci.blob_path(&wrong).exists() && !oci.blob_path(&digest_of(b"hello")).exists());
}

#[test]
fn manifests_and_tags() {
    let (_dir, oci) = oci();
    let config = push_blob(&oci, "a", "app", b"{}");
    let layer = push_blob(&oci, "a", "app", b"layer");
    let missing = digest_of(b"missing");
    let bad = manifest((&config, 2), &[(&layer, 5), (&missing, 7)]);
    assert!(
        matches!(oci.put_manifest("a", "app", "v1", None, &bad), Err(OciError::ManifestBlobUnknown(d)) if d == missing)
    );
    let wrong_size = manifest((&config, 2), &[(&layer, 6)]);
    assert!(matches!(
        oci.put_manifest("a", "app", "v1", None, &wrong_size),
        Err(OciError::ManifestBlobUnknown(_))
    ));
    assert!(matches!(
        oci.put_manifest("a", "app", "v1", None, b"not json"),
        Err(OciError::ManifestInvalid(_))
    ));
    let good = manifest((&config, 2), &[(&layer, 5)]);
    assert!(matches!(
        oci.put_manifest("a", "app", "v1", Some(DOCKER_MANIFEST), &good),
        Err(OciError::ManifestInvalid(_))
    ));
    assert!(matches!(
        oci.put_manifest("a", "app", &missing, None, &good),
        Err(OciError::DigestInvalid(_))
    ));
    let digest = oci
        .put_manifest("a", "app", "v1", Some(OCI_MANIFEST), &good)
        .unwrap();
    assert_eq!(digest, digest_of(&good));
    oci.put_manifest("a", "app", "latest", None, &good).unwrap();
    oci.put_manifest("a", "app", &digest, None, &good).unwrap();
    let by_tag = oci.get_manifest("a", "app", "v1").unwrap();
    assert_eq!(
        by_tag,
        Manifest {
            digest: digest.clone(),
            media_type: OCI_MANIFEST.into(),
            bytes: good.clone()
        }
    );
    assert_eq!(oci.get_manifest("a", "app", &digest).unwrap(), by_tag);
    assert!(matches!(
        oci.get_manifest("a", "app", "v2"),
        Err(OciError::ManifestUnknown(_))
    ));
    assert_eq!(oci.tags("a", "app").unwrap(), ["latest", "v1"]);
    // An index names manifests of the repository.
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": digest, "size": good.len()}],
    }))
    .unwrap();
    oci.put_manifest("a", "app", "multi", None, &index).unwrap();
    assert_eq!(
        oci.get_manifest("a", "app", "multi").unwrap().media_type,
        OCI_INDEX
    );
    assert_eq!(oci.repositories("a").unwrap(), ["app"]);
}

#[test]
fn other_accounts_neither_read_nor_write() {
    let (_dir, oci) = oci();
    let config = push_blob(&oci, "a", "app", b"{}");
    let good = manifest((&config, 2), &[]);
    oci.put_manifest("a", "app", "v1", None, &good).unwrap();
    assert!(matches!(
        oci.get_manifest("b", "app", "v1"),
        Err(OciError::Denied(_))
    ));
    assert!(matches!(oci.tags("b", "app"), Err(OciError::Denied(_))));
    assert!(matches!(
        oci.blob_size("b", "app", &config),
        Err(OciError::Denied(_))
    ));
    assert!(matches!(
        oci.start_upload("b", "app"),
        Err(OciError::Denied(_))
    ));
    assert!(matches!(
        oci.put_manifest("b", "app", "v1", None, &good),
        Err(OciError::Denied(_))
    ));
    // An upload is its starter's alone.
    let id = oci.start_upload("a", "app").unwrap();
    assert!(matches!(
        oci.append("b", "app", &id, None, b"x"),
        Err(OciError::UploadUnknown(_))
    ));
    // A blob stored for one repository is not another's, even of the same bytes' digest.
    assert!(matches!(
        oci.put_manifest("b", "mine", "v1", None, &good),
        Err(OciError::ManifestBlobUnknown(_))
    ));
    assert!(matches!(
        oci.get_manifest("b", "nothing", "v1"),
        Err(OciError::NameUnknown(_))
    ));
    assert!(matches!(
        oci.start_upload("b", "Bad-Name"),
        Err(OciError::NameInvalid(_))
    ));
    assert!(oci.repositories("b").unwrap().is_empty());
}

#[test]
fn size_caps() {
    let limits = Limits {
        image: 100,
        blob: 10,
        spool: 15,
        uploads: 2,
        ..Limits::default()
    };
    let (_dir, oci) = oci_with(limits);
    let id = oci.start_upload("a", "app").unwrap();
    oci.append("a", "app", &id, None, b"12345678").unwrap();
    assert!(matches!(
        oci.append("a", "app", &id, None, b"123"),
        Err(OciError::SizeInvalid(_))
    ));
    let other = oci.start_upload("a", "app").unwrap();
    assert!(matches!(
        oci.start_upload("a", "app"),
        Err(OciError::TooManyRequests(_))
    ));
    assert!(matches!(
        oci.append("a", "app", &other, None, b"12345678"),
        Err(OciError::TooManyRequests(_))
    ));
    oci.cancel("a", "app", &id).unwrap();
    oci.append("a", "app", &other, None, b"12345678").unwrap();
    // An image over the limit is refused before its blobs are looked at.
    let config = digest_of(b"c");
    let big = manifest((&config, 60), &[(&config, 60)]);
    assert!(matches!(
        oci.put_manifest("a", "app", "v1", None, &big),
        Err(OciError::SizeInvalid(_))
    ));
}

#[test]
fn names_and_tags() {
    for good in ["a", "app", "my-app/web.v2", "a__b", "a--b/c_d"] {
        assert!(valid_name(good), "{good}");
    }
    for bad in ["", "App", "a/", "/a", "a..b", "-a", "a b", "a/../b"] {
        assert!(!valid_name(bad), "{bad}");
    }
    assert!(
        valid_tag("v1.0-rc_1")
            && valid_tag("_x")
            && !valid_tag(".x")
            && !valid_tag("")
            && !valid_tag(&"x".repeat(129))
    );
    assert!(
        valid_digest(&digest_of(b"")) && !valid_digest("sha256:ABC") && !valid_digest("md5:00")
    );
}

#[test]
fn idle_uploads_are_abandoned_and_accounts_capped() {
    let limits = Limits {
        uploads: 3,
        account_uploads: 2,
        idle: std::time::Duration::from_secs(60),
        ..Limits::default()
    };
    let (_dir, oci, clock) = oci_clocked(limits);
    let old = oci.start_upload("a", "app").unwrap();
    oci.append("a", "app", &old, None, b"12").unwrap();
    clock.advance(std::time::Duration::from_secs(30));
    let busy = oci.start_upload("a", "app").unwrap();
    assert!(
        matches!(
            oci.start_upload("a", "app"),
            Err(OciError::TooManyRequests(_))
        ),
        "one account's cap"
    );
    oci.start_upload("b", "other").unwrap();
    clock.advance(std::time::Duration::from_secs(31));
    // `old` was idle for 61 s, `busy` for 31 s: starting a new one abandons `old` alone.
    let new = oci.start_upload("a", "app").unwrap();
    assert!(matches!(
        oci.upload_size("a", "app", &old),
        Err(OciError::UploadUnknown(_))
    ));
    assert!(!oci.upload_path(&old).exists());
    assert_eq!(oci.upload_size("a", "app", &busy).unwrap(), 0);
    assert_eq!(oci.upload_size("a", "app", &new).unwrap(), 0);
}

/// Pushes an image (a config of `architecture`, one layer of `layer_type`)
/// tagged `tag`; answers the manifest's digest.
fn push_image(
    oci: &Oci,
    account: &str,
    repo: &str,
    tag: &str,
    architecture: &str,
    layer_type: &str,
) -> String {
    let config = serde_json::json!({
        "architecture": architecture, "os": "linux",
        "config": { "Entrypoint": ["/app"], "Cmd": ["serve"], "Env": ["A=1"], "WorkingDir": "/srv" },
    })
    .to_string();
    let config_digest = push_blob(oci, account, repo, config.as_bytes());
    let layer = b"layer bytes";
    let layer_digest = push_blob(oci, account, repo, layer);
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len() },
        "layers": [{ "mediaType": layer_type, "digest": layer_digest, "size": layer.len() }],
    });
    oci.put_manifest(account, repo, tag, None, manifest.to_string().as_bytes())
        .unwrap()
}

const GZIP_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

#[test]
fn images_resolve_to_their_manifest_config_and_layers() {
    let (_dir, oci) = oci();
    let digest = push_image(&oci, "alice", "team/app", "v1", "amd64", GZIP_LAYER);
    let image = oci.resolve_image("alice", "team/app", "v1").unwrap();
    assert_eq!(image.manifest_digest, digest);
    assert_eq!(
        (image.os.as_str(), image.architecture.as_str()),
        ("linux", "amd64")
    );
    assert_eq!(
        image.config,
        ImageConfig {
            entrypoint: Some(vec!["/app".into()]),
            cmd: Some(vec!["serve".into()]),
            env: vec!["A=1".into()],
            working_dir: Some("/srv".into()),
        }
    );
    assert_eq!(image.layers.len(), 1);
    assert_eq!(
        (image.layers[0].media_type.as_str(), image.layers[0].size),
        (GZIP_LAYER, 11)
    );
    assert_eq!(
        oci.resolve_image("alice", "team/app", &digest).unwrap(),
        image
    );

    // A later push to the tag moves the tag, not what the digest names.
    let other = push_image(
        &oci,
        "alice",
        "team/app",
        "v1",
        "amd64",
        "application/vnd.oci.image.layer.v1.tar",
    );
    assert_ne!(other, digest);
    assert_eq!(
        oci.resolve_image("alice", "team/app", "v1")
            .unwrap()
            .manifest_digest,
        other
    );
    assert_eq!(
        oci.resolve_image("alice", "team/app", &digest)
            .unwrap()
            .manifest_digest,
        digest
    );

    // Unknown tags, digests and repositories; another account's repository does not exist for it.
    assert!(matches!(
        oci.resolve_image("alice", "team/app", "v9"),
        Err(OciError::ManifestUnknown(_))
    ));
    let unknown = format!("sha256:{}", "0".repeat(64));
    assert!(matches!(
        oci.resolve_image("alice", "team/app", &unknown),
        Err(OciError::ManifestUnknown(_))
    ));
    assert!(matches!(
        oci.resolve_image("alice", "no/such", "v1"),
        Err(OciError::NameUnknown(_))
    ));
    assert!(matches!(
        oci.resolve_image("bob", "team/app", "v1"),
        Err(OciError::NameUnknown(_))
    ));
}

#[test]
fn images_a_function_cannot_run_are_refused() {
    let (_dir, oci) = oci();
    push_image(
        &oci,
        "alice",
        "app",
        "zstd",
        "amd64",
        "application/vnd.oci.image.layer.v1.tar+zstd",
    );
    let err = oci.resolve_image("alice", "app", "zstd").unwrap_err();
    assert!(
        matches!(&err, OciError::ImageUnsupported(m) if m.contains("tar+zstd")),
        "{err}"
    );
    push_image(&oci, "alice", "app", "arm", "arm64", GZIP_LAYER);
    let err = oci.resolve_image("alice", "app", "arm").unwrap_err();
    assert!(
        matches!(&err, OciError::Architecture { architecture, .. } if architecture == "arm64"),
        "{err}"
    );
    assert!(err.to_string().contains("linux/arm64"), "{err}");
}

#[test]
fn an_index_resolves_to_its_linux_amd64_image() {
    let (_dir, oci) = oci();
    let amd = push_image(&oci, "alice", "app", "amd", "amd64", GZIP_LAYER);
    let arm = push_image(&oci, "alice", "app", "arm", "arm64", GZIP_LAYER);
    let entry = |digest: &str, arch: &str| {
        let size = oci
            .get_manifest("alice", "app", digest)
            .unwrap()
            .bytes
            .len();
        serde_json::json!({ "mediaType": OCI_MANIFEST, "digest": digest, "size": size, "platform": { "os": "linux", "architecture": arch } })
    };
    let both = serde_json::json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry(&arm, "arm64"), entry(&amd, "amd64")] });
    oci.put_manifest("alice", "app", "multi", None, both.to_string().as_bytes())
        .unwrap();
    assert_eq!(
        oci.resolve_image("alice", "app", "multi")
            .unwrap()
            .manifest_digest,
        amd
    );
    let arm_only = serde_json::json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry(&arm, "arm64")] });
    oci.put_manifest(
        "alice",
        "app",
        "armonly",
        None,
        arm_only.to_string().as_bytes(),
    )
    .unwrap();
    let err = oci.resolve_image("alice", "app", "armonly").unwrap_err();
    assert!(
        matches!(&err, OciError::ImageUnsupported(m) if m.contains("linux/amd64")),
        "{err}"
    );
}
