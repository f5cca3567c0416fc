use std::path::Path;

use serde_json::json;

use super::*;

fn write_blob(layout: &Path, bytes: &[u8]) -> Value {
    let digest = sha256(bytes);
    std::fs::write(layout.join("blobs/sha256").join(&digest[7..]), bytes).unwrap();
    json!({ "digest": digest, "size": bytes.len() })
}

/// A layout with one image per tag (each a config and one layer); answers the manifests' digests.
fn layout(dir: &Path, tags: &[Option<&str>]) -> Vec<String> {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut descriptors = Vec::new();
    for (i, tag) in tags.iter().enumerate() {
        let mut config = write_blob(dir, format!("{{\"n\":{i}}}").as_bytes());
        config["mediaType"] = json!("application/vnd.oci.image.config.v1+json");
        let mut layer = write_blob(dir, format!("layer {i}").as_bytes());
        layer["mediaType"] = json!("application/vnd.oci.image.layer.v1.tar");
        let manifest = json!({ "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer] });
        let mut descriptor = write_blob(dir, manifest.to_string().as_bytes());
        descriptor["mediaType"] = json!(OCI_MANIFEST);
        if let Some(tag) = tag {
            descriptor["annotations"] = json!({ REF_NAME: tag });
        }
        descriptors.push(descriptor);
    }
    std::fs::write(dir.join("index.json"), json!({ "schemaVersion": 2, "manifests": descriptors }).to_string()).unwrap();
    descriptors.iter().map(|d| d["digest"].as_str().unwrap().to_owned()).collect()
}

fn contents(blob: &Blob) -> Vec<u8> {
    let mut out = Vec::new();
    blob.open().unwrap().read_to_end(&mut out).unwrap();
    out
}

#[test]
fn a_layout_image_is_picked_by_tag_or_as_the_only_one() {
    let tmp = tempfile::tempdir().unwrap();
    let digests = layout(tmp.path(), &[Some("v1"), Some("v2")]);
    let image = read(tmp.path(), "v2").unwrap();
    assert_eq!(image.digest(), digests[1]);
    assert_eq!(image.media_type, OCI_MANIFEST);
    assert_eq!(image.blobs.len(), 2);
    assert_eq!(contents(&image.blobs[0]), b"{\"n\":1}");
    assert_eq!(contents(&image.blobs[1]), b"layer 1");
    let missing = read(tmp.path(), "v3").unwrap_err();
    assert!(missing.contains("none is tagged \"v3\"") && missing.contains("v1, v2"), "{missing}");

    let only = tempfile::tempdir().unwrap();
    let digests = layout(only.path(), &[None]);
    assert_eq!(read(only.path(), "anything").unwrap().digest(), digests[0]);
}

#[test]
fn a_broken_layout_is_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(read(tmp.path(), "v1").unwrap_err().contains("is not an OCI image layout"));
    layout(tmp.path(), &[Some("v1")]);
    let image = read(tmp.path(), "v1").unwrap();
    std::fs::remove_file(&image.blobs[1].source.file).unwrap();
    let error = read(tmp.path(), "v1").unwrap_err();
    assert!(error.contains(&format!("blob {}", image.blobs[1].digest)), "{error}");
    assert!(read(Path::new("/no/such/path"), "v1").unwrap_err().contains("cannot read /no/such/path"));
}

fn archive(entries: &[(&str, &[u8])], links: &[(&str, &str)]) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    let mut builder = tar::Builder::new(file.reopen().unwrap());
    for (name, bytes) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        builder.append_data(&mut header, name, *bytes).unwrap();
    }
    for (name, target) in links {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        builder.append_link(&mut header, name, target).unwrap();
    }
    builder.finish().unwrap();
    file
}

#[test]
fn a_docker_save_archive_becomes_a_docker_manifest() {
    let gzipped: &[u8] = &[0x1f, 0x8b, 8, 0, 1, 2, 3];
    let listing = json!([{ "Config": "abc.json", "RepoTags": ["team/app:v1"], "Layers": ["l1/layer.tar", "l2/layer.tar", "l3/layer.tar"] }]);
    let listing = listing.to_string();
    let file = archive(
        &[("manifest.json", listing.as_bytes()), ("abc.json", b"{\"os\":\"linux\"}"), ("l1/layer.tar", b"plain tar"), ("l2/layer.tar", gzipped)],
        &[("l3/layer.tar", "../l1/layer.tar")],
    );
    let image = read(file.path(), "v1").unwrap();
    assert_eq!(image.media_type, DOCKER_MANIFEST);
    let manifest: Value = serde_json::from_slice(&image.manifest).unwrap();
    assert_eq!(manifest["config"], json!({ "mediaType": DOCKER_CONFIG, "size": 14, "digest": sha256(b"{\"os\":\"linux\"}") }));
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers[0], json!({ "mediaType": DOCKER_LAYER, "size": 9, "digest": sha256(b"plain tar") }));
    assert_eq!(layers[1]["mediaType"], DOCKER_LAYER_GZIP);
    assert_eq!(layers[2]["digest"], layers[0]["digest"], "a symbolic link is its target");
    assert_eq!(contents(&image.blobs[0]), b"{\"os\":\"linux\"}");
    assert_eq!(contents(&image.blobs[2]), gzipped);
    // The only image of an archive is pushed under any tag.
    assert_eq!(read(file.path(), "other").unwrap().digest(), image.digest());
}

#[test]
fn a_broken_archive_is_refused_clearly() {
    let not_tar = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(not_tar.path(), b"hello").unwrap();
    assert!(read(not_tar.path(), "v1").unwrap_err().contains("neither an OCI image layout nor a docker save archive"));
    let listing = json!([{ "Config": "abc.json", "RepoTags": [], "Layers": ["missing.tar"] }]).to_string();
    let file = archive(&[("manifest.json", listing.as_bytes()), ("abc.json", b"{}")], &[]);
    assert!(read(file.path(), "v1").unwrap_err().contains("it lacks missing.tar"));
    let file = archive(&[("other", b"x")], &[]);
    assert!(read(file.path(), "v1").unwrap_err().contains("it lacks manifest.json"));
}
