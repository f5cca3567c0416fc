//! A staged base written as an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/`),
//! and a finished layout read back. The layer is one uncompressed tar whose bytes depend only on
//! the staged tree's names, contents and link targets: entries in byte order of their paths,
//! every mtime 0, owner 0:0 with no names, modes as [`recipe::normal_mode`] says; devices, FIFOs
//! and sockets are left out.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::Path;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::recipe;
use crate::{BuildError, Config};

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
/// The annotation that names the image in `index.json`.
pub(crate) const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A blob as a descriptor names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Blob {
    pub(crate) digest: String,
    pub(crate) size: u64,
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    size: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the layout of a staged base into `dir` (which exists and is empty); answers the
/// manifest's blob. `progress` hears about the layer.
pub(crate) fn write(
    dir: &Path,
    stage: &Path,
    name: &str,
    config: &Config,
    progress: &dyn Fn(&str),
) -> Result<Blob, BuildError> {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(|source| BuildError::io(&blobs, source))?;
    progress("writing the layer");
    let layer = write_layer(stage, &blobs)?;
    progress(&format!("layer {} ({} bytes)", layer.digest, layer.size));
    let config_json = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": config.env,
            "Entrypoint": config.entrypoint,
            "WorkingDir": config.working_dir,
        },
        "rootfs": { "type": "layers", "diff_ids": [layer.digest] },
    });
    let config_blob = write_blob(&blobs, &to_bytes(&config_json))?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": { "mediaType": CONFIG_TYPE, "digest": config_blob.digest, "size": config_blob.size },
        "layers": [{ "mediaType": LAYER_TYPE, "digest": layer.digest, "size": layer.size }],
    });
    let manifest_blob = write_blob(&blobs, &to_bytes(&manifest))?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": [{
            "mediaType": MANIFEST_TYPE,
            "digest": manifest_blob.digest,
            "size": manifest_blob.size,
            "annotations": { REF_NAME: name },
        }],
    });
    write_file(&dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    write_file(&dir.join("index.json"), &to_bytes(&index))?;
    Ok(manifest_blob)
}

/// What a finished layout says: the manifest's blob, the layer's blob and the image config.
pub(crate) fn read(dir: &Path) -> Result<(Blob, Blob, Config), BuildError> {
    let bad = |reason: String| BuildError::Layout { path: dir.to_path_buf(), reason };
    let index = read_json(&dir.join("index.json")).map_err(&bad)?;
    let descriptor = index["manifests"].get(0).ok_or_else(|| bad("index.json names no manifest".into()))?;
    let manifest_blob = descriptor_blob(descriptor).map_err(&bad)?;
    let manifest = read_blob(dir, &manifest_blob).map_err(&bad)?;
    let config_blob = descriptor_blob(&manifest["config"]).map_err(&bad)?;
    let layer = manifest["layers"].get(0).ok_or_else(|| bad("the manifest names no layer".into()))?;
    let layer_blob = descriptor_blob(layer).map_err(&bad)?;
    let config = read_blob(dir, &config_blob).map_err(&bad)?;
    let strings = |value: &Value| -> Vec<String> {
        let items = value.as_array().map(Vec::as_slice).unwrap_or_default();
        items.iter().filter_map(|v| v.as_str().map(String::from)).collect()
    };
    let inner = &config["config"];
    let config = Config {
        env: strings(&inner["Env"]),
        entrypoint: strings(&inner["Entrypoint"]),
        working_dir: inner["WorkingDir"].as_str().unwrap_or_default().to_string(),
    };
    Ok((manifest_blob, layer_blob, config))
}

fn descriptor_blob(descriptor: &Value) -> Result<Blob, String> {
    let digest = descriptor["digest"].as_str().ok_or("a descriptor without a digest")?;
    let size = descriptor["size"].as_u64().ok_or("a descriptor without a size")?;
    Ok(Blob { digest: digest.to_string(), size })
}

/// A JSON blob, checked against its digest and size.
fn read_blob(dir: &Path, blob: &Blob) -> Result<Value, String> {
    let hex = blob.digest.strip_prefix("sha256:").ok_or_else(|| format!("digest {} is not sha256", blob.digest))?;
    let path = dir.join("blobs/sha256").join(hex);
    let bytes = fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() as u64 != blob.size || hex::encode(Sha256::digest(&bytes)) != hex {
        return Err(format!("blob {} does not match its digest or size", blob.digest));
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("blob {}: {e}", blob.digest))
}

fn read_json(path: &Path) -> Result<Value, String> {
    let bytes = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn to_bytes(value: &Value) -> Vec<u8> {
    value.to_string().into_bytes()
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), BuildError> {
    fs::write(path, bytes).map_err(|source| BuildError::io(path, source))
}

fn write_blob(blobs: &Path, bytes: &[u8]) -> Result<Blob, BuildError> {
    let hex = hex::encode(Sha256::digest(bytes));
    write_file(&blobs.join(&hex), bytes)?;
    Ok(Blob { digest: format!("sha256:{hex}"), size: bytes.len() as u64 })
}

/// Writes the staged tree as a tar blob into `blobs`.
fn write_layer(stage: &Path, blobs: &Path) -> Result<Blob, BuildError> {
    let spool = blobs.join("layer.partial");
    let file = File::create(&spool).map_err(|source| BuildError::io(&spool, source))?;
    let hashing = Hashing { inner: BufWriter::new(file), hash: Sha256::new(), size: 0 };
    let mut tar = tar::Builder::new(hashing);
    let mut pending = vec![String::new()];
    // Depth first, children in byte order: each directory's entry precedes its contents.
    while let Some(dir) = pending.pop() {
        let host = stage.join(&dir);
        let mut names = Vec::new();
        for entry in fs::read_dir(&host).map_err(|source| BuildError::io(&host, source))? {
            let entry = entry.map_err(|source| BuildError::io(&host, source))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        let mut subdirs = Vec::new();
        for name in names {
            let relative = if dir.is_empty() { name } else { format!("{dir}/{name}") };
            if append(&mut tar, stage, &relative)? {
                subdirs.push(relative);
            }
        }
        // Reversed onto the stack so the first in order is written next.
        pending.extend(subdirs.into_iter().rev());
    }
    let hashing = tar.into_inner().map_err(|source| BuildError::io(&spool, source))?;
    let digest = hex::encode(hashing.hash.finalize());
    let size = hashing.size;
    let file = hashing.inner.into_inner().map_err(|e| BuildError::io(&spool, e.into_error()))?;
    file.sync_all().map_err(|source| BuildError::io(&spool, source))?;
    let path = blobs.join(&digest);
    fs::rename(&spool, &path).map_err(|source| BuildError::io(&path, source))?;
    Ok(Blob { digest: format!("sha256:{digest}"), size })
}

/// Appends one staged path; answers whether it is a directory (whose contents follow).
fn append<W: Write>(tar: &mut tar::Builder<W>, stage: &Path, relative: &str) -> Result<bool, BuildError> {
    use std::os::unix::fs::PermissionsExt;
    let host = stage.join(relative);
    let meta = fs::symlink_metadata(&host).map_err(|source| BuildError::io(&host, source))?;
    let kind = meta.file_type();
    let mut header = tar::Header::new_gnu();
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mode(recipe::normal_mode(relative, kind.is_dir(), meta.permissions().mode()));
    let failed = |source: io::Error| BuildError::io(&host, source);
    if kind.is_dir() {
        header.set_entry_type(tar::EntryType::Directory);
        header.set_size(0);
        tar.append_data(&mut header, format!("{relative}/"), io::empty()).map_err(failed)?;
        return Ok(true);
    }
    if kind.is_symlink() {
        let target = fs::read_link(&host).map_err(failed)?;
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_mode(0o777);
        header.set_size(0);
        tar.append_link(&mut header, relative, &target).map_err(failed)?;
    } else if kind.is_file() {
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(meta.len());
        let file = File::open(&host).map_err(failed)?;
        tar.append_data(&mut header, relative, file).map_err(failed)?;
    }
    Ok(false)
}
