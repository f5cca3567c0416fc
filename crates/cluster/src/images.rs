//! A worker host's images: their chunk manifests come from the server
//! (`GET /ignis/images/...`, which prepares the image if it must), their
//! chunks from the server's chunk store ([`RemoteChunks`]), each checked
//! against its name and the manifest; a worker never needs a whole image.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{Method, StatusCode};
use ignis_images::{AccountKey, Manifest};
use ignis_worker::ImageLaunch;
use ignis_worker::images::{BoxFuture, ImageManifest, ManifestSource};

use crate::{RemoteChunks, Servers};

/// The server's prepared images, asked over the worker protocol (of the server spoken to when a manifest is
/// asked for; its chunks come from that server too).
pub struct RemoteManifests {
    pub servers: Arc<Servers>,
}

impl RemoteManifests {
    async fn fetch(&self, account: &str, image: &ImageLaunch) -> Result<ImageManifest, String> {
        let repository = image.repository.replace('/', "%2F");
        let path = format!("/ignis/images/{account}/{}?repository={repository}", image.digest);
        let server = self.servers.current();
        let (status, body) =
            server.call(Method::GET, &path, Bytes::new()).await.map_err(|e| format!("asking for the image: {e}"))?;
        if status != StatusCode::OK {
            let text = String::from_utf8_lossy(&body);
            return Err(format!("the server has no image {} for this function: {status} {text}", image.digest));
        }
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| format!("the image's answer: {e}"))?;
        let text = |name: &str| v[name].as_str().map(str::to_string).ok_or_else(|| format!("the image's answer lacks {name}"));
        let bytes = |name: &str| STANDARD.decode(text(name)?).map_err(|e| format!("the image's {name}: {e}"));
        let manifest = Manifest::decode(&bytes("Manifest")?).map_err(|e| format!("the image's manifest: {e}"))?;
        let key: [u8; 32] = bytes("Key")?.try_into().map_err(|_| "the image's key is not 32 bytes".to_string())?;
        let root = text("Root")?;
        if !ignis_chunks::valid_root_id(&root) {
            return Err(format!("the image's root {root:?} is not a root id"));
        }
        Ok(ImageManifest {
            id: text("Id")?,
            manifest,
            key: AccountKey::from_bytes(key),
            chunks: Arc::new(RemoteChunks::new(server, &root)),
        })
    }
}

impl ManifestSource for RemoteManifests {
    fn manifest<'a>(&'a self, account: &'a str, image: &'a ImageLaunch) -> BoxFuture<'a, Result<ImageManifest, String>> {
        Box::pin(self.fetch(account, image))
    }
}
