//! Images as functions use them: the `ImageUri` a function names
//! ([`ImageUri::parse`], pure), and what an image reference resolves to in a
//! repository ([`Oci::resolve_image`]): the manifest digest, the image's
//! config and its layers.
//!
//! # Rules
//!
//! - An `ImageUri` is `[host[:port]/]repository(:tag|@sha256:<64 hex>)`. A
//!   first component holding `.` or `:`, or equal to `localhost`, is the
//!   registry host: it is kept (for `ResolvedImageUri`) and otherwise ignored,
//!   since Ignis is the only registry. A tag or a digest is required, as
//!   Lambda requires one (`repo` alone is not a valid source image).
//! - Resolution acts for one account: another account's repository does not
//!   exist for it ([`OciError::NameUnknown`], never `Denied`: it reveals
//!   nothing).
//! - An image index resolves to its `linux/amd64` entry; an index without one
//!   is refused ([`OciError::ImageUnsupported`]).
//! - Layers must be tar streams, plain or gzip ([`LAYER_MEDIA_TYPES`]); zstd
//!   and other media types are refused ([`OciError::ImageUnsupported`]).
//! - The image must be `linux/amd64` ([`OciError::Architecture`]): the
//!   machines Ignis runs on are x86_64.

use crate::{DOCKER_LIST, OCI_INDEX, Oci, OciError, valid_digest, valid_name, valid_tag};

/// The layer media types an image function may use: tar streams, plain or gzip.
pub const LAYER_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
];

/// Largest image config read, in bytes.
pub const MAX_IMAGE_CONFIG: u64 = 4 * 1024 * 1024;

/// Longest `ImageUri` accepted.
pub const MAX_IMAGE_URI: usize = 1024;

/// What an `ImageUri` names after its repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageReference {
    Tag(String),
    /// `sha256:<64 hex>`.
    Digest(String),
}

impl ImageReference {
    /// The reference as the registry's calls take it (a tag or a digest).
    pub fn as_str(&self) -> &str {
        match self {
            ImageReference::Tag(t) | ImageReference::Digest(t) => t,
        }
    }
}

/// A parsed `ImageUri`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUri {
    /// The registry host (with its port), if the URI names one.
    pub host: Option<String>,
    pub repository: String,
    pub reference: ImageReference,
}

/// Why an `ImageUri` is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageUriError {
    #[error("the image URI is empty or longer than {MAX_IMAGE_URI} bytes")]
    Length,
    #[error("the image URI names neither a tag nor a digest")]
    NoReference,
    #[error("invalid repository name {0:?}")]
    Repository(String),
    #[error("invalid tag {0:?}")]
    Tag(String),
    #[error("invalid digest {0:?} (sha256:<64 lowercase hex digits>)")]
    Digest(String),
}

impl ImageUri {
    /// Parses `[host[:port]/]repository(:tag|@sha256:<hex>)`; with both a tag
    /// and a digest (`repo:tag@sha256:...`), the digest decides.
    pub fn parse(text: &str) -> Result<ImageUri, ImageUriError> {
        if text.is_empty() || text.len() > MAX_IMAGE_URI {
            return Err(ImageUriError::Length);
        }
        let (name, digest) = match text.split_once('@') {
            Some((name, digest)) => {
                if !valid_digest(digest) {
                    return Err(ImageUriError::Digest(digest.into()));
                }
                (name, Some(digest))
            }
            None => (text, None),
        };
        // A tag follows the last ':' after the last '/' (a ':' before it is a host's port).
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (path, tag) = match name[last_slash..].rfind(':') {
            Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
            None => (name, None),
        };
        if let Some(tag) = tag.filter(|t| !valid_tag(t)) {
            return Err(ImageUriError::Tag(tag.into()));
        }
        let (host, repository) = match path.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (Some(first.to_string()), rest)
            }
            _ => (None, path),
        };
        if !valid_name(repository) {
            return Err(ImageUriError::Repository(repository.into()));
        }
        let reference = match (digest, tag) {
            (Some(d), _) => ImageReference::Digest(d.into()),
            (None, Some(t)) => ImageReference::Tag(t.into()),
            (None, None) => return Err(ImageUriError::NoReference),
        };
        Ok(ImageUri {
            host,
            repository: repository.into(),
            reference,
        })
    }

    /// The URI naming the image by `digest` (Lambda's `ResolvedImageUri`):
    /// the same host, `repository@digest`.
    pub fn resolved(&self, digest: &str) -> String {
        match &self.host {
            Some(host) => format!("{host}/{}@{digest}", self.repository),
            None => format!("{}@{digest}", self.repository),
        }
    }
}

/// What an image's config says about running it (the OCI image config's
/// `config` object; absent fields are `None` or empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    /// `NAME=value` entries, in order.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
}

/// One layer of a resolved image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

/// An image reference resolved in a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// The image manifest's digest (for an index, its `linux/amd64` entry's).
    pub manifest_digest: String,
    pub config: ImageConfig,
    /// `amd64`.
    pub architecture: String,
    /// `linux`.
    pub os: String,
    /// Bottom first.
    pub layers: Vec<Layer>,
}

fn strings(value: Option<&serde_json::Value>) -> Option<Vec<String>> {
    let list = value?.as_array()?;
    Some(
        list.iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect(),
    )
}

fn text<'a>(value: &'a serde_json::Value, key: &str) -> &'a str {
    value.get(key).and_then(|v| v.as_str()).unwrap_or("")
}

/// The `linux/amd64` entry of an image index.
fn platform_entry(index: &serde_json::Value) -> Option<String> {
    let entries = index.get("manifests")?.as_array()?;
    entries
        .iter()
        .find(|m| {
            m.get("platform")
                .is_some_and(|p| text(p, "os") == "linux" && text(p, "architecture") == "amd64")
        })
        .and_then(|m| m.get("digest")?.as_str().map(str::to_string))
}

/// The config's descriptor and the layers of an image manifest, each layer of
/// a media type an image function may use.
fn parse_manifest(json: &serde_json::Value) -> Result<((String, u64), Vec<Layer>), OciError> {
    let invalid = |what: &str| OciError::ManifestInvalid(what.into());
    let descriptor = |d: &serde_json::Value| -> Option<(String, String, u64)> {
        Some((
            d.get("digest")?.as_str()?.to_string(),
            text(d, "mediaType").to_string(),
            d.get("size")?.as_u64()?,
        ))
    };
    let (config_digest, _, config_size) = json
        .get("config")
        .and_then(descriptor)
        .ok_or_else(|| invalid("no config"))?;
    let mut layers = Vec::new();
    for l in json
        .get("layers")
        .and_then(|l| l.as_array())
        .ok_or_else(|| invalid("no layers"))?
    {
        let (digest, media_type, size) =
            descriptor(l).ok_or_else(|| invalid("a layer without digest and size"))?;
        if !LAYER_MEDIA_TYPES.contains(&media_type.as_str()) {
            return Err(OciError::ImageUnsupported(format!(
                "layer {digest} has media type {media_type:?}; layers must be tar streams, plain or gzip-compressed"
            )));
        }
        layers.push(Layer {
            digest,
            media_type,
            size,
        });
    }
    Ok(((config_digest, config_size), layers))
}

impl Oci {
    /// Resolves `reference` (a tag or a digest) in `repository`, for
    /// `account`: the manifest digest, the image's config and its layers (see
    /// the module docs for what is refused). Another account's repository is
    /// [`OciError::NameUnknown`].
    pub fn resolve_image(
        &self,
        account: &str,
        repository: &str,
        reference: &str,
    ) -> Result<ResolvedImage, OciError> {
        let mut manifest = match self.get_manifest(account, repository, reference) {
            Err(OciError::Denied(name)) => return Err(OciError::NameUnknown(name)),
            other => other?,
        };
        let json = |bytes: &[u8]| -> Result<serde_json::Value, OciError> {
            serde_json::from_slice(bytes)
                .map_err(|e| OciError::ManifestInvalid(format!("not JSON: {e}")))
        };
        let mut parsed = json(&manifest.bytes)?;
        if manifest.media_type == OCI_INDEX || manifest.media_type == DOCKER_LIST {
            let digest = platform_entry(&parsed).ok_or_else(|| {
                OciError::ImageUnsupported("the image index has no linux/amd64 image".into())
            })?;
            manifest = self.get_manifest(account, repository, &digest)?;
            if manifest.media_type == OCI_INDEX || manifest.media_type == DOCKER_LIST {
                return Err(OciError::ImageUnsupported(
                    "the image index's linux/amd64 entry is another index".into(),
                ));
            }
            parsed = json(&manifest.bytes)?;
        }
        let ((config_digest, config_size), layers) = parse_manifest(&parsed)?;
        if config_size > MAX_IMAGE_CONFIG || !valid_digest(&config_digest) {
            return Err(OciError::ImageUnsupported(format!(
                "the image config is larger than {MAX_IMAGE_CONFIG} bytes"
            )));
        }
        let config = json(&self.read_blob(account, repository, &config_digest)?)?;
        let (os, architecture) = (
            text(&config, "os").to_string(),
            text(&config, "architecture").to_string(),
        );
        if os != "linux" || architecture != "amd64" {
            return Err(OciError::Architecture { os, architecture });
        }
        let settings = config.get("config").cloned().unwrap_or_default();
        let image = ImageConfig {
            entrypoint: strings(settings.get("Entrypoint")),
            cmd: strings(settings.get("Cmd")),
            env: strings(settings.get("Env")).unwrap_or_default(),
            working_dir: settings
                .get("WorkingDir")
                .and_then(|w| w.as_str())
                .filter(|w| !w.is_empty())
                .map(str::to_string),
        };
        Ok(ResolvedImage {
            manifest_digest: manifest.digest,
            config: image,
            architecture,
            os,
            layers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Result<(Option<&str>, &str, ImageReference), ImageUriError>) {
        let got = ImageUri::parse(text);
        let expected = expected.map(|(host, repository, reference)| ImageUri {
            host: host.map(str::to_string),
            repository: repository.into(),
            reference,
        });
        assert_eq!(got, expected, "{text}");
    }

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn image_uris() {
        use ImageReference::{Digest, Tag};
        let digest = format!("sha256:{HEX}");
        check("app:v1", Ok((None, "app", Tag("v1".into()))));
        check("team/app:v1", Ok((None, "team/app", Tag("v1".into()))));
        check("a/b/c:latest", Ok((None, "a/b/c", Tag("latest".into()))));
        check(
            "localhost/app:v1",
            Ok((Some("localhost"), "app", Tag("v1".into()))),
        );
        check(
            "localhost:9000/team/app:v1",
            Ok((Some("localhost:9000"), "team/app", Tag("v1".into()))),
        );
        check(
            "127.0.0.1:9000/app:v1",
            Ok((Some("127.0.0.1:9000"), "app", Tag("v1".into()))),
        );
        check(
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/app:v1",
            Ok((
                Some("123456789012.dkr.ecr.us-east-1.amazonaws.com"),
                "app",
                Tag("v1".into()),
            )),
        );
        check(
            &format!("app@{digest}"),
            Ok((None, "app", Digest(digest.clone()))),
        );
        check(
            &format!("host.example/app:v1@{digest}"),
            Ok((Some("host.example"), "app", Digest(digest.clone()))),
        );
        check(
            "host:5000:v1",
            Err(ImageUriError::Repository("host:5000".into())),
        );
        // No tag or digest: not a source image.
        check("app", Err(ImageUriError::NoReference));
        check("localhost:9000/app", Err(ImageUriError::NoReference));
        check("host.example/team/app", Err(ImageUriError::NoReference));
        check("", Err(ImageUriError::Length));
        check(&"a".repeat(MAX_IMAGE_URI + 1), Err(ImageUriError::Length));
        check("App:v1", Err(ImageUriError::Repository("App".into())));
        check(
            "team//app:v1",
            Err(ImageUriError::Repository("team//app".into())),
        );
        check(
            "localhost:9000/:v1",
            Err(ImageUriError::Repository("".into())),
        );
        check("app:", Err(ImageUriError::Tag("".into())));
        check("app:-bad", Err(ImageUriError::Tag("-bad".into())));
        check(
            "app@sha256:abc",
            Err(ImageUriError::Digest("sha256:abc".into())),
        );
        check(
            &format!("app@sha512:{HEX}"),
            Err(ImageUriError::Digest(format!("sha512:{HEX}"))),
        );
        check(
            &format!("app@sha256:{}", HEX.to_uppercase()),
            Err(ImageUriError::Digest(format!(
                "sha256:{}",
                HEX.to_uppercase()
            ))),
        );
    }

    #[test]
    fn resolved_uris_keep_the_host() {
        let digest = format!("sha256:{HEX}");
        assert_eq!(
            ImageUri::parse("localhost:9000/team/app:v1")
                .unwrap()
                .resolved(&digest),
            format!("localhost:9000/team/app@{digest}")
        );
        assert_eq!(
            ImageUri::parse("team/app:v1").unwrap().resolved(&digest),
            format!("team/app@{digest}")
        );
        assert_eq!(
            ImageUri::parse(&format!("h.io/app@{digest}"))
                .unwrap()
                .resolved(&digest),
            format!("h.io/app@{digest}")
        );
    }
}
