//! The OCI distribution API: a real `skopeo` pushes an image from an OCI
//! layout, pulls it back unchanged and inspects it, with an account's access
//! key as its Basic credentials; another account can neither read nor
//! overwrite the repository.

use std::path::Path;
use std::process::{Command, Output};

use base64::Engine as _;
use ignis_sigv4::Credentials;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::harness::Server;

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn write_blob(layout: &Path, bytes: &[u8]) -> Value {
    let digest = digest(bytes);
    std::fs::write(layout.join("blobs/sha256").join(&digest[7..]), bytes).unwrap();
    json!({ "digest": digest, "size": bytes.len() })
}

/// A tar archive of `files` (path, content, mode), with the directories above them, owned by root.
pub fn tar_of_files(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for (path, _, _) in files {
        let mut parent = Path::new(path).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(dir.to_path_buf());
            parent = dir.parent();
        }
    }
    let header = |kind, size, mode| {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header
    };
    for dir in dirs {
        tar.append_data(&mut header(tar::EntryType::Directory, 0, 0o755), &dir, std::io::empty()).unwrap();
    }
    for (path, content, mode) in files {
        tar.append_data(&mut header(tar::EntryType::Regular, content.len() as u64, *mode), path, *content).unwrap();
    }
    tar.into_inner().unwrap()
}

/// A tar archive holding one file `path` of `content` (ustar, no compression).
fn tar_of(path: &str, content: &[u8]) -> Vec<u8> {
    let mut tar = tar_entry(path, b'0', content.len() as u64, content);
    tar.resize(tar.len() + 1024, 0);
    tar
}

/// One ustar entry as written, unchecked (so also a path with `..`, a device node or a size the content lacks):
/// `path`, entry type `kind`, the `declared` size (base-256 past 8 GiB) and `content`, padded to 512 bytes.
pub fn tar_entry(path: &str, kind: u8, declared: u64, content: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..path.len()].copy_from_slice(path.as_bytes());
    header[100..107].copy_from_slice(b"0000755");
    header[108..115].copy_from_slice(b"0000000");
    header[116..123].copy_from_slice(b"0000000");
    if declared < 1 << 33 {
        header[124..135].copy_from_slice(format!("{declared:011o}").as_bytes());
    } else {
        header[124] = 0x80;
        header[128..136].copy_from_slice(&declared.to_be_bytes());
    }
    header[136..147].copy_from_slice(b"00000000000");
    header[156] = kind;
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    if kind == b'3' || kind == b'4' {
        header[329..336].copy_from_slice(b"0000001");
        header[337..344].copy_from_slice(b"0000003");
    }
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    header[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    let mut tar = header.to_vec();
    tar.extend_from_slice(content);
    tar.resize(tar.len().div_ceil(512) * 512, 0);
    tar
}

/// Writes an OCI image layout with one image tagged `tag` (a config and two
/// layers, one of them several MiB so its upload comes in many pieces);
/// answers the manifest's digest.
pub fn make_layout(layout: &Path, tag: &str) -> String {
    make_layout_of(layout, tag, "amd64", json!({ "Entrypoint": ["/hello"], "Env": ["GREETING=hi"], "WorkingDir": "/" }))
}

/// [`make_layout`] with the image config's `architecture` and `config` object given.
pub fn make_layout_of(layout: &Path, tag: &str, architecture: &str, run_config: Value) -> String {
    let layers = [tar_of("hello", b"#!/bin/sh\necho hello\n"), tar_of("data.bin", &noise(3 * 1024 * 1024 + 17))];
    make_layout_with(layout, tag, architecture, &layers, run_config)
}

/// `len` bytes that do not compress (xorshift), the same every time.
pub fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// An OCI image layout with one image tagged `tag`: `layers` (plain tars, pushed gzipped) and a config of
/// `architecture` and `run_config`; answers the manifest's digest.
pub fn make_layout_with(layout: &Path, tag: &str, architecture: &str, layers: &[Vec<u8>], run_config: Value) -> String {
    let gzip_type = "application/vnd.oci.image.layer.v1.tar+gzip";
    let blobs: Vec<_> = layers.iter().map(|l| (gzip(l), gzip_type, digest(l))).collect();
    make_layout_of_blobs(layout, tag, architecture, &blobs, run_config)
}

/// [`make_layout_with`] with each layer's blob, media type and diff id given as they are, so also layers that
/// are not what they claim to be.
pub fn make_layout_of_blobs(
    layout: &Path,
    tag: &str,
    architecture: &str,
    layers: &[(Vec<u8>, &str, String)],
    run_config: Value,
) -> String {
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    for (blob, media_type, diff_id) in layers {
        let mut descriptor = write_blob(layout, blob);
        descriptor["mediaType"] = json!(media_type);
        diff_ids.push(diff_id.clone());
        descriptors.push(descriptor);
    }
    let config = json!({
        "architecture": architecture,
        "os": "linux",
        "config": run_config,
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    let mut config = write_blob(layout, config.to_string().as_bytes());
    config["mediaType"] = json!("application/vnd.oci.image.config.v1+json");
    let manifest = json!({ "schemaVersion": 2, "mediaType": MANIFEST, "config": config, "layers": descriptors });
    let mut descriptor = write_blob(layout, manifest.to_string().as_bytes());
    descriptor["mediaType"] = json!(MANIFEST);
    descriptor["annotations"] = json!({ "org.opencontainers.image.ref.name": tag });
    let index = json!({ "schemaVersion": 2, "manifests": [descriptor] });
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    descriptor["digest"].as_str().unwrap().to_string()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut child = Command::new("gzip")
        .args(["-n", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input).unwrap());
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(output.status.success());
    output.stdout
}

pub fn skopeo(args: &[&str]) -> Output {
    Command::new("skopeo").arg("--insecure-policy").args(args).output().expect("skopeo is installed (scripts/test installs it)")
}

pub fn creds(credentials: &Credentials) -> String {
    format!("{}:{}", credentials.access_key_id, credentials.secret_access_key)
}

pub fn basic(credentials: &Credentials) -> (String, String) {
    let token = base64::engine::general_purpose::STANDARD.encode(creds(credentials));
    ("authorization".into(), format!("Basic {token}"))
}

pub fn check(output: &Output, what: &str) {
    assert!(output.status.success(), "{what}: {}\n{}", String::from_utf8_lossy(&output.stderr), String::from_utf8_lossy(&output.stdout));
}

/// Pushes the image tagged `tag` of `layout` to `target` (`repository:tag`) of
/// `server`'s registry with skopeo, as `credentials`' account.
pub fn push(server: &Server, layout: &Path, tag: &str, target: &str, credentials: &Credentials) {
    let output = skopeo(&[
        "copy",
        &format!("oci:{}:{tag}", layout.display()),
        &format!("docker://{}/{target}", server.address),
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds(credentials),
    ]);
    check(&output, &format!("push of {target}"));
}

/// The blob files of a layout, by name.
fn blobs(layout: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn skopeo_pushes_pulls_and_inspects_images() {
    let server = Server::start();
    let (_, alice) = server.create_account("alice");
    let (_, bob) = server.create_account("bob");
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("source");
    let pushed = make_layout(&source, "v1");
    let host = &server.address;
    let image = format!("docker://{host}/team/app:v1");

    // Without credentials: the Basic challenge, in the registry's error form.
    let reply = server.raw("GET", "/v2/", "", &[], b"");
    assert_eq!(reply.status, 401, "{}", reply.text());
    assert_eq!(reply.header("www-authenticate"), Some("Basic realm=\"ignis\""));
    assert_eq!(reply.json()["errors"][0]["code"], "UNAUTHORIZED");
    let wrong = Credentials { access_key_id: alice.access_key_id.clone(), secret_access_key: "wrong".into() };
    assert_eq!(server.raw("GET", "/v2/", "", &[basic(&wrong)], b"").status, 401);
    assert_eq!(server.raw("GET", "/v2/", "", &[basic(&alice)], b"").status, 200);

    push(&server, &source, "v1", "team/app:v1", &alice);

    // Pulled back, the image is the same bytes.
    let pulled = tmp.path().join("pulled");
    let pull = skopeo(&[
        "copy",
        &image,
        &format!("oci:{}:v1", pulled.display()),
        "--src-tls-verify=false",
        "--src-creds",
        &creds(&alice),
    ]);
    check(&pull, "pull");
    let index: Value = serde_json::from_slice(&std::fs::read(pulled.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], pushed.as_str());
    assert_eq!(blobs(&pulled), blobs(&source));

    let inspect = skopeo(&["inspect", &image, "--tls-verify=false", "--creds", &creds(&alice)]);
    check(&inspect, "inspect");
    let inspected: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(inspected["Digest"], pushed.as_str());
    assert_eq!(inspected["Architecture"], "amd64");
    assert_eq!(inspected["Env"], json!(["GREETING=hi"]));
    assert_eq!(inspected["Layers"].as_array().unwrap().len(), 2);
    let tags = skopeo(&["list-tags", &format!("docker://{host}/team/app"), "--tls-verify=false", "--creds", &creds(&alice)]);
    check(&tags, "list-tags");
    assert_eq!(serde_json::from_slice::<Value>(&tags.stdout).unwrap()["Tags"], json!(["v1"]));

    // The manifest by digest, with its digest and media type.
    let manifest = server.raw("GET", &format!("/v2/team/app/manifests/{pushed}"), "", &[basic(&alice)], b"");
    assert_eq!(manifest.status, 200);
    assert_eq!(manifest.header("docker-content-digest"), Some(pushed.as_str()));
    assert_eq!(manifest.header("content-type"), Some(MANIFEST));
    assert_eq!(digest(&manifest.body), pushed);

    // Another account can neither read nor overwrite the repository.
    let denied = server.raw("GET", "/v2/team/app/manifests/v1", "", &[basic(&bob)], b"");
    assert_eq!(denied.status, 403, "{}", denied.text());
    assert_eq!(denied.json()["errors"][0]["code"], "DENIED");
    let inspect = skopeo(&["inspect", &image, "--tls-verify=false", "--creds", &creds(&bob)]);
    assert!(!inspect.status.success(), "bob read alice's image");
    let overwrite = skopeo(&[
        "copy",
        &format!("oci:{}:v1", source.display()),
        &image,
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds(&bob),
    ]);
    assert!(!overwrite.status.success(), "bob overwrote alice's image");
    let denied = server.raw("POST", "/v2/team/app/blobs/uploads/", "", &[basic(&bob)], b"");
    assert_eq!(denied.status, 403);
    // Bob's own repository of the same image is his.
    push(&server, &source, "v1", "bob/app:v1", &bob);
    assert_eq!(server.raw("GET", "/v2/bob/app/tags/list", "", &[basic(&alice)], b"").status, 403);
    let unknown = server.raw("GET", "/v2/nothing/here/tags/list", "", &[basic(&alice)], b"");
    assert_eq!((unknown.status, unknown.json()["errors"][0]["code"].clone()), (404, json!("NAME_UNKNOWN")));

    // A chunked upload: chunks must follow each other.
    let start = server.raw("POST", "/v2/team/app/blobs/uploads/", "", &[basic(&alice)], b"");
    assert_eq!((start.status, start.header("range")), (202, Some("0-0")));
    let location = start.header("location").unwrap().to_string();
    let range = |r: &str| vec![basic(&alice), ("content-range".to_string(), r.to_string())];
    let first = server.raw("PATCH", &location, "", &range("0-4"), b"hello");
    assert_eq!((first.status, first.header("range")), (202, Some("0-4")), "{}", first.text());
    assert_eq!(server.raw("PATCH", &location, "", &range("2-6"), b"xxxxx").status, 416);
    assert_eq!(server.raw("PATCH", &location, "", &range("5-10"), b", blob").status, 202);
    let status = server.raw("GET", &location, "", &[basic(&alice)], b"");
    assert_eq!((status.status, status.header("range")), (204, Some("0-10")));
    let blob = digest(b"hello, blob");
    let put = server.raw("PUT", &location, &format!("digest={blob}"), &[basic(&alice)], b"");
    assert_eq!((put.status, put.header("docker-content-digest")), (201, Some(blob.as_str())), "{}", put.text());
    let got = server.raw("GET", &format!("/v2/team/app/blobs/{blob}"), "", &[basic(&alice)], b"");
    assert_eq!((got.status, got.body.as_slice()), (200, b"hello, blob".as_slice()));
    let head = server.raw("HEAD", &format!("/v2/team/app/blobs/{blob}"), "", &[basic(&alice)], b"");
    assert_eq!((head.status, head.header("content-length")), (200, Some("11")));
    assert_eq!(server.raw("HEAD", &format!("/v2/team/app/blobs/{blob}"), "", &[basic(&bob)], b"").status, 403);

    // A manifest naming a blob the repository lacks is refused.
    let missing = json!({
        "schemaVersion": 2, "mediaType": MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(b"none"), "size": 4 },
        "layers": [],
    });
    let content_type = ("content-type".to_string(), MANIFEST.to_string());
    let put = server.raw("PUT", "/v2/team/app/manifests/v2", "", &[basic(&alice), content_type], missing.to_string().as_bytes());
    assert_eq!((put.status, put.json()["errors"][0]["code"].clone()), (400, json!("MANIFEST_BLOB_UNKNOWN")));

    // A blob whose bytes do not match its digest is refused.
    let start = server.raw("POST", "/v2/team/app/blobs/uploads/", "", &[basic(&alice)], b"");
    assert_eq!(start.status, 202, "{}", start.text());
    let location = start.header("location").unwrap().to_string();
    let wrong_digest = digest(b"something else");
    let put = server.raw("PUT", &location, &format!("digest={wrong_digest}"), &[basic(&alice)], b"these bytes");
    assert_eq!((put.status, put.json()["errors"][0]["code"].clone()), (400, json!("DIGEST_INVALID")));
}

/// Writes a `docker save`-style archive: `manifest.json`, the config and two plain layer tars
/// (one of them several MiB); answers the config's digest.
fn make_docker_archive(path: &Path) -> String {
    let noise: Vec<u8> = (0..2 * 1024 * 1024 + 5).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let layers = [tar_of("hello", b"#!/bin/sh\necho saved\n"), tar_of("data.bin", &noise)];
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Entrypoint": ["/hello"], "Env": ["FROM=docker"] },
        "rootfs": { "type": "layers", "diff_ids": layers.iter().map(|l| digest(l)).collect::<Vec<_>>() },
    })
    .to_string();
    let config_name = format!("{}.json", &digest(config.as_bytes())[7..]);
    let listing = json!([{ "Config": config_name, "RepoTags": ["team/saved:latest"], "Layers": ["a/layer.tar", "b/layer.tar"] }]).to_string();
    let mut builder = tar::Builder::new(std::fs::File::create(path).unwrap());
    let files: [(&str, &[u8]); 4] =
        [("a/layer.tar", &layers[0]), ("b/layer.tar", &layers[1]), (&config_name, config.as_bytes()), ("manifest.json", listing.as_bytes())];
    for (name, bytes) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        builder.append_data(&mut header, name, bytes).unwrap();
    }
    builder.finish().unwrap();
    digest(config.as_bytes())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_cli_pushes_layouts_and_docker_archives_and_lists_them() {
    let server = Server::start();
    let (_, alice) = server.create_account("alice");
    let (_, bob) = server.create_account("bob");
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let pushed = make_layout(&layout, "v1");
    let archive = tmp.path().join("saved.tar");
    let config = make_docker_archive(&archive);
    let host = &server.address;

    // A layout: the manifest is pushed as it is, so its digest is the layout's. In 1 MiB
    // pieces, the 3 MiB layer goes up in four PATCHes, which the registry checks follow each
    // other, and the digest it checks at the end proves they were put together right.
    let push = server.cli_as(&alice, &["image", "push", "--chunk-mib", "1", "team/app:v1", layout.to_str().unwrap()]);
    check(&push, "push of the layout");
    assert_eq!(text(&push.stdout), format!("team/app:v1@{pushed}\n"));
    assert_eq!(text(&push.stderr).matches(" uploaded (").count(), 3, "config and two layers: {}", text(&push.stderr));

    // A docker save archive, converted to a Docker v2 manifest.
    let push = server.cli_as(&alice, &["image", "push", "team/saved:latest", archive.to_str().unwrap()]);
    check(&push, "push of the archive");
    let out = text(&push.stdout);
    let saved = out.trim().strip_prefix("team/saved:latest@").expect("NAME:TAG@DIGEST").to_string();

    // skopeo reads it back as a valid image: inspected, and pulled with every digest checked.
    let image = format!("docker://{host}/team/saved:latest");
    let inspect = skopeo(&["inspect", &image, "--tls-verify=false", "--creds", &creds(&alice)]);
    check(&inspect, "inspect");
    let inspected: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(inspected["Digest"], saved.as_str());
    assert_eq!(inspected["Env"], json!(["FROM=docker"]));
    assert_eq!(inspected["Layers"].as_array().unwrap().len(), 2);
    let raw = skopeo(&["inspect", "--raw", &image, "--tls-verify=false", "--creds", &creds(&alice)]);
    check(&raw, "inspect --raw");
    let manifest: Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(manifest["mediaType"], "application/vnd.docker.distribution.manifest.v2+json");
    assert_eq!(manifest["config"]["digest"], config.as_str());
    assert_eq!(manifest["layers"][0]["mediaType"], "application/vnd.docker.image.rootfs.diff.tar");
    let pulled = tmp.path().join("pulled");
    let pull = skopeo(&["copy", &image, &format!("oci:{}:latest", pulled.display()), "--src-tls-verify=false", "--src-creds", &creds(&alice)]);
    check(&pull, "pull");

    // Pushed again, every blob is found on the registry (HEAD) and none is uploaded.
    let again = server.cli_as(&alice, &["image", "push", "team/app:v1", layout.to_str().unwrap()]);
    check(&again, "second push");
    assert_eq!(text(&again.stdout), format!("team/app:v1@{pushed}\n"));
    let stderr = text(&again.stderr);
    assert_eq!((stderr.matches(" exists, skipped (").count(), stderr.matches(" uploaded (").count()), (3, 0), "{stderr}");

    // The caller's repositories and tags, and only theirs.
    let ls = server.cli_as(&alice, &["image", "ls"]);
    check(&ls, "ls");
    assert_eq!(text(&ls.stdout), "team/app:v1\nteam/saved:latest\n");
    let ls = server.cli_as(&bob, &["image", "ls"]);
    check(&ls, "bob's ls");
    assert_eq!(text(&ls.stdout), "");
    let page = server.raw("GET", "/v2/_catalog", "n=1", &[basic(&alice)], b"");
    assert_eq!(page.json()["repositories"], json!(["team/app"]));
    assert_eq!(page.header("link"), Some("</v2/_catalog?n=1&last=team/app>; rel=\"next\""));
    let page = server.raw("GET", "/v2/_catalog", "n=1&last=team/app", &[basic(&alice)], b"");
    assert_eq!((page.json()["repositories"].clone(), page.header("link")), (json!(["team/saved"]), None));

    // Clear one-line errors: a missing path, a directory that is no layout, the registry's refusal.
    let one_line = |output: &Output, expected: &str| {
        assert!(!output.status.success());
        let message = text(&output.stderr);
        assert_eq!(message.lines().count(), 1, "{message}");
        assert!(message.contains(expected), "{message}");
    };
    one_line(&server.cli_as(&alice, &["image", "push", "team/app:v2", "/no/such/image"]), "cannot read /no/such/image");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    one_line(&server.cli_as(&alice, &["image", "push", "team/app:v2", empty.to_str().unwrap()]), "is not an OCI image layout");
    one_line(&server.cli_as(&alice, &["image", "push", "team/app", layout.to_str().unwrap()]), "expected NAME:TAG");
    let denied = server.cli_as(&bob, &["image", "push", "team/app:v1", layout.to_str().unwrap()]);
    one_line(&denied, "DENIED: ");
}
