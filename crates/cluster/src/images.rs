//! A worker host's images: their chunk manifests come from the server
//! (`GET /ignis/images/...`, which prepares the image if it must, or, on a
//! cluster's front end without it, asks the other front ends), their chunks
//! from the chunk store of the front end whose root holds them
//! ([`RemoteChunks`]), each checked against its name and the manifest; a
//! worker never needs a whole image.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{Method, StatusCode};
use ignis_images::{AccountKey, Manifest};
use ignis_worker::ImageLaunch;
use ignis_worker::images::{BoxFuture, ImageManifest, ManifestSource};

use crate::{Peer, RemoteChunks, Servers};

/// The server's prepared images, asked over the worker protocol (of the server spoken to when a manifest is
/// asked for; its chunks come from that server too).
pub struct RemoteManifests {
    pub servers: Arc<Servers>,
}

/// The answer of `server` for the prepared image `digest` of `account`'s `repository` (`only_its_own`: never one
/// it asks another front end of a cluster for): `{"Id", "Manifest", "Key", "Root"}`, and `"ChunksFrom"` when
/// another front end's chunk store root holds its chunks.
pub async fn image_answer(server: &Peer, account: &str, repository: &str, digest: &str, only_its_own: bool) -> Result<serde_json::Value, String> {
    let repository = repository.replace('/', "%2F");
    let own = if only_its_own { "&Own=1" } else { "" };
    let path = format!("/ignis/images/{account}/{digest}?repository={repository}{own}");
    let (status, body) = server.call(Method::GET, &path, Bytes::new()).await.map_err(|e| format!("asking for the image: {e}"))?;
    if status != StatusCode::OK {
        let text = String::from_utf8_lossy(&body);
        return Err(format!("{} has no image {digest} for this function: {status} {text}", server.authority()));
    }
    serde_json::from_slice(&body).map_err(|e| format!("the image's answer: {e}"))
}

/// The prepared image `image` of `account` as `server` has it (see [`image_answer`]), its chunks read through
/// `server`, or through the front end its answer names.
pub async fn fetch_manifest(server: &Arc<Peer>, account: &str, image: &ImageLaunch, only_its_own: bool) -> Result<ImageManifest, String> {
    let v = image_answer(server, account, &image.repository, &image.digest, only_its_own).await?;
    let text = |name: &str| v[name].as_str().map(str::to_string).ok_or_else(|| format!("the image's answer lacks {name}"));
    let bytes = |name: &str| STANDARD.decode(text(name)?).map_err(|e| format!("the image's {name}: {e}"));
    let manifest = Manifest::decode(&bytes("Manifest")?).map_err(|e| format!("the image's manifest: {e}"))?;
    let key: [u8; 32] = bytes("Key")?.try_into().map_err(|_| "the image's key is not 32 bytes".to_string())?;
    let root = text("Root")?;
    if !ignis_chunks::valid_root_id(&root) {
        return Err(format!("the image's root {root:?} is not a root id"));
    }
    let chunks_from = match v["ChunksFrom"].as_str() {
        Some(address) => Arc::new(server.sibling(address)),
        None => server.clone(),
    };
    Ok(ImageManifest {
        id: text("Id")?,
        manifest,
        key: AccountKey::from_bytes(key),
        chunks: Arc::new(RemoteChunks::new(chunks_from, &root)),
    })
}

impl ManifestSource for RemoteManifests {
    fn manifest<'a>(&'a self, account: &'a str, image: &'a ImageLaunch) -> BoxFuture<'a, Result<ImageManifest, String>> {
        Box::pin(async move { fetch_manifest(&self.servers.current(), account, image, false).await })
    }
}
