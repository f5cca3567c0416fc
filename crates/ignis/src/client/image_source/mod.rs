//! The image to push, read from disk: an OCI image layout directory or a `docker save` archive.
//!
//! Reading never holds a layer in memory: a blob is a file (a layout's `blobs/sha256/...`) or a
//! byte range of the archive, read in pieces when it is hashed or uploaded. Only manifests and
//! configs (small JSON) are read whole.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The largest manifest, config or `index.json` read into memory.
const MAX_JSON: u64 = 16 * 1024 * 1024;

/// Where a blob's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobSource {
    pub file: PathBuf,
    pub offset: u64,
}

/// One blob of the image: its digest, size and bytes on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub digest: String,
    pub size: u64,
    pub source: BlobSource,
}

impl Blob {
    /// A reader of exactly the blob's bytes.
    pub fn open(&self) -> Result<impl Read, String> {
        let mut file = File::open(&self.source.file).map_err(|e| format!("cannot read {}: {e}", self.source.file.display()))?;
        file.seek(SeekFrom::Start(self.source.offset))
            .map_err(|e| format!("cannot read {}: {e}", self.source.file.display()))?;
        Ok(file.take(self.size))
    }
}

/// An image ready to push: its blobs (config first) and its manifest.
#[derive(Debug)]
pub struct Image {
    pub blobs: Vec<Blob>,
    pub manifest: Vec<u8>,
    pub media_type: String,
}

impl Image {
    /// The manifest's digest.
    pub fn digest(&self) -> String {
        sha256(&self.manifest)
    }
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Reads the image tagged `tag` at `path`: an OCI image layout directory or a `docker save` tar.
pub fn read(path: &Path, tag: &str) -> Result<Image, String> {
    let metadata = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if metadata.is_dir() { read_layout(path, tag) } else { read_archive(path, tag) }
}

// ---- OCI image layout ----

fn read_layout(dir: &Path, tag: &str) -> Result<Image, String> {
    let bad = |why: String| format!("{} is not an OCI image layout: {why}", dir.display());
    let marker = std::fs::read(dir.join("oci-layout")).map_err(|e| bad(format!("cannot read oci-layout: {e}")))?;
    let marker: Value = serde_json::from_slice(&marker).map_err(|e| bad(format!("oci-layout is not JSON: {e}")))?;
    if marker["imageLayoutVersion"].as_str().is_none() {
        return Err(bad("oci-layout has no imageLayoutVersion".into()));
    }
    let index = read_json_file(&dir.join("index.json"), MAX_JSON).map_err(bad)?;
    let index: Value = serde_json::from_slice(&index).map_err(|e| bad(format!("index.json is not JSON: {e}")))?;
    let manifests = index["manifests"].as_array().ok_or_else(|| bad("index.json lists no manifests".into()))?;
    let descriptor = pick(manifests, tag, |m| m["annotations"][REF_NAME].as_str().map(|t| vec![t.to_owned()]))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let media_type = descriptor["mediaType"].as_str().unwrap_or(OCI_MANIFEST);
    if media_type == OCI_INDEX || media_type == DOCKER_LIST {
        return Err(format!("{}: the image is an index of several images; push one platform's image", dir.display()));
    }
    let manifest_blob = layout_blob(dir, descriptor)?;
    let manifest = read_json_file(&manifest_blob.source.file, MAX_JSON)?;
    if sha256(&manifest) != manifest_blob.digest {
        return Err(bad(format!("the manifest {} does not match its digest", manifest_blob.digest)));
    }
    let parsed: Value = serde_json::from_slice(&manifest).map_err(|e| bad(format!("the manifest is not JSON: {e}")))?;
    let media_type = parsed["mediaType"].as_str().unwrap_or(media_type).to_owned();
    if media_type == OCI_INDEX || media_type == DOCKER_LIST {
        return Err(format!("{}: the image is an index of several images; push one platform's image", dir.display()));
    }
    let mut blobs = vec![layout_blob(dir, &parsed["config"])?];
    for layer in parsed["layers"].as_array().ok_or_else(|| bad("the manifest lists no layers".into()))? {
        blobs.push(layout_blob(dir, layer)?);
    }
    Ok(Image { blobs, manifest, media_type })
}

/// The blob a layout's descriptor names; checks that the file is there with the stated size.
fn layout_blob(dir: &Path, descriptor: &Value) -> Result<Blob, String> {
    let bad = |why: String| format!("{} is not a valid OCI image layout: {why}", dir.display());
    let digest = descriptor["digest"].as_str().ok_or_else(|| bad("a descriptor has no digest".into()))?;
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| bad(format!("unsupported digest {digest:?} (sha256 only)")))?;
    let size = descriptor["size"].as_u64().ok_or_else(|| bad(format!("the descriptor of {digest} has no size")))?;
    let file = dir.join("blobs/sha256").join(hex);
    let actual = std::fs::metadata(&file).map_err(|e| bad(format!("blob {digest}: {e}")))?.len();
    if actual != size {
        return Err(bad(format!("blob {digest} has {actual} bytes, its descriptor says {size}")));
    }
    Ok(Blob { digest: digest.to_owned(), size, source: BlobSource { file, offset: 0 } })
}

/// The entry tagged `tag` (by `tags_of`), else the only entry.
fn pick<'a>(entries: &'a [Value], tag: &str, tags_of: impl Fn(&Value) -> Option<Vec<String>>) -> Result<&'a Value, String> {
    if let Some(found) = entries.iter().find(|e| tags_of(e).is_some_and(|tags| tags.iter().any(|t| t == tag))) {
        return Ok(found);
    }
    match entries {
        [only] => Ok(only),
        [] => Err("it holds no image".into()),
        _ => {
            let mut known: Vec<String> = entries.iter().filter_map(&tags_of).flatten().collect();
            known.sort();
            Err(format!("it holds {} images and none is tagged {tag:?} (tags: {})", entries.len(), known.join(", ")))
        }
    }
}

fn read_json_file(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    let file = File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    read_limited(file, limit).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn read_limited(reader: impl Read, limit: u64) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    reader.take(limit + 1).read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    if bytes.len() as u64 > limit {
        return Err(format!("larger than {limit} bytes"));
    }
    Ok(bytes)
}

// ---- docker save archive ----

/// A regular file or symbolic link in the archive.
enum Entry {
    File { offset: u64, size: u64 },
    Link(String),
}

fn read_archive(path: &Path, tag: &str) -> Result<Image, String> {
    let bad = |why: String| format!("{} is neither an OCI image layout nor a docker save archive: {why}", path.display());
    let entries = archive_entries(path).map_err(bad)?;
    let file = |name: &str| -> Result<Blob, String> {
        let (offset, size) = resolve(&entries, name).ok_or_else(|| bad(format!("it lacks {name}")))?;
        let mut blob = Blob { digest: String::new(), size, source: BlobSource { file: path.to_owned(), offset } };
        blob.digest = hash(&blob)?;
        Ok(blob)
    };
    let read_small = |name: &str| -> Result<Vec<u8>, String> {
        let (offset, size) = resolve(&entries, name).ok_or_else(|| bad(format!("it lacks {name}")))?;
        let blob = Blob { digest: String::new(), size, source: BlobSource { file: path.to_owned(), offset } };
        read_limited(blob.open()?, MAX_JSON).map_err(|e| bad(format!("{name}: {e}")))
    };
    let listing: Value = serde_json::from_slice(&read_small("manifest.json")?)
        .map_err(|e| bad(format!("manifest.json is not JSON: {e}")))?;
    let images = listing.as_array().ok_or_else(|| bad("manifest.json is not a list".into()))?;
    let tags_of = |image: &Value| {
        image["RepoTags"].as_array().map(|tags| {
            tags.iter().filter_map(Value::as_str).filter_map(|t| t.rsplit_once(':')).map(|(_, t)| t.to_owned()).collect()
        })
    };
    let image = pick(images, tag, tags_of).map_err(|e| format!("{}: {e}", path.display()))?;
    let config_name = image["Config"].as_str().ok_or_else(|| bad("manifest.json names no Config".into()))?;
    let config = file(config_name)?;
    let layer_names = image["Layers"].as_array().ok_or_else(|| bad("manifest.json names no Layers".into()))?;
    let mut layers = Vec::new();
    for name in layer_names {
        let name = name.as_str().ok_or_else(|| bad("a layer name is not a string".into()))?;
        let layer = file(name)?;
        let mut magic = [0u8; 2];
        let gzip = layer.open()?.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
        layers.push((layer, if gzip { DOCKER_LAYER_GZIP } else { DOCKER_LAYER }));
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": { "mediaType": DOCKER_CONFIG, "size": config.size, "digest": config.digest },
        "layers": layers.iter().map(|(l, media_type)| json!({ "mediaType": media_type, "size": l.size, "digest": l.digest })).collect::<Vec<_>>(),
    });
    let mut blobs = vec![config];
    blobs.extend(layers.into_iter().map(|(l, _)| l));
    Ok(Image { blobs, manifest: manifest.to_string().into_bytes(), media_type: DOCKER_MANIFEST.into() })
}

/// The archive's regular files and symbolic links by normalized path.
fn archive_entries(path: &Path) -> Result<std::collections::HashMap<String, Entry>, String> {
    let file = File::open(path).map_err(|e| format!("cannot open it: {e}"))?;
    let mut archive = tar::Archive::new(file);
    let mut entries = std::collections::HashMap::new();
    for entry in archive.entries_with_seek().map_err(|e| format!("not a tar archive: {e}"))? {
        let entry = entry.map_err(|e| format!("not a tar archive: {e}"))?;
        let name = entry.path().map_err(|e| format!("bad entry name: {e}"))?;
        let Some(name) = normalize(Path::new(""), &name) else { continue };
        let kind = entry.header().entry_type();
        if kind.is_file() {
            entries.insert(name, Entry::File { offset: entry.raw_file_position(), size: entry.size() });
        } else if kind.is_symlink()
            && let Ok(Some(target)) = entry.link_name()
        {
            let parent = Path::new(&name).parent().unwrap_or(Path::new("")).to_owned();
            if let Some(target) = normalize(&parent, &target) {
                entries.insert(name, Entry::Link(target));
            }
        }
    }
    if entries.is_empty() {
        return Err("not a tar archive, or an empty one".into());
    }
    Ok(entries)
}

/// `name` under `base` as a relative path without `.`/`..`; `None` if it leaves the root.
fn normalize(base: &Path, name: &Path) -> Option<String> {
    let mut parts: Vec<String> = base.components().filter_map(|c| c.as_os_str().to_str().map(str::to_owned)).collect();
    for component in name.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str()?.to_owned()),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir => parts.clear(),
            Component::CurDir | Component::Prefix(_) => {}
        }
    }
    if parts.is_empty() { None } else { Some(parts.join("/")) }
}

/// The offset and size of file `name`, following symbolic links (a few levels).
fn resolve(entries: &std::collections::HashMap<String, Entry>, name: &str) -> Option<(u64, u64)> {
    let mut name = normalize(Path::new(""), Path::new(name))?;
    for _ in 0..8 {
        match entries.get(&name)? {
            Entry::File { offset, size } => return Some((*offset, *size)),
            Entry::Link(target) => name = target.clone(),
        }
    }
    None
}

/// The sha256 digest of a blob, read in pieces.
fn hash(blob: &Blob) -> Result<String, String> {
    let mut reader = blob.open()?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buffer).map_err(|e| format!("cannot read {}: {e}", blob.source.file.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

#[cfg(test)]
mod tests;
