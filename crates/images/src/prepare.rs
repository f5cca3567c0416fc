//! From an image's layers to its stored chunks and manifest: [`prepare`]
//! runs [`flatten`](crate::flatten::flatten), [`erofs::build`] and
//! [`chunk_and_store`] one after the other.
//!
//! The layers are read once each, front to back; file bodies go to a spool
//! directory in the work directory, the filesystem image to an unnamed file
//! there (`O_TMPFILE`: gone with its descriptor, also if the process dies);
//! both are removed before [`prepare`] answers, whatever the outcome.
//! Flattening and building run on tokio's blocking pool (file IO and CPU
//! work); chunking is [`chunk_and_store`]'s own, bounded, pipeline.
//!
//! Nothing is stored unless flattening and building succeed: a bad layer
//! fails before the first chunk is put. A failure while chunking leaves the
//! chunks already put (harmless, see [`ChunkingError`]).

#[cfg(test)]
mod tests;

use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use ignis_chunks::ChunkStore;

use crate::erofs::{self, ErofsError, ErofsOptions, ErofsStats};
use crate::flatten::{FlattenError, FlattenOptions, FlattenStats, Limits};
use crate::{AccountKey, ChunkStats, ChunkingError, Manifest, Salt, chunk_and_store};

/// How [`prepare`] flattens and lays out.
#[derive(Debug, Clone, Default)]
pub struct PrepareOptions {
    pub limits: Limits,
    pub erofs: ErofsOptions,
}

/// What [`prepare`] made: the manifest (for the caller to keep) and what
/// each stage did.
#[derive(Debug)]
pub struct Prepared {
    pub manifest: Manifest,
    pub chunks: ChunkStats,
    pub flatten: FlattenStats,
    pub erofs: ErofsStats,
}

/// Why [`prepare`] failed, by stage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrepareError {
    #[error("flattening: {0}")]
    Flatten(#[from] FlattenError),
    #[error("building the filesystem image: {0}")]
    Erofs(#[from] ErofsError),
    #[error("the image file in {dir:?}: {source}")]
    ImageFile { dir: PathBuf, source: io::Error },
    #[error("storing the image's chunks: {0}")]
    Chunking(#[from] ChunkingError),
    #[error("the flattening task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
}

impl PrepareError {
    /// Whether the image itself is at fault (a layer that is not a tar
    /// stream, a path escaping the root, a bound exceeded, what the
    /// filesystem cannot hold), as opposed to a failure of the platform
    /// (disk, store, task): the first is the caller's to fix.
    pub fn is_image_fault(&self) -> bool {
        match self {
            PrepareError::Flatten(e) => !matches!(e, FlattenError::Spool(_)),
            PrepareError::Erofs(e) => matches!(
                e,
                ErofsError::NameTooLong { .. }
                    | ErofsError::SymlinkTooLong { .. }
                    | ErofsError::OwnerTooLarge { .. }
                    | ErofsError::TooLarge
            ),
            PrepareError::ImageFile { .. } | PrepareError::Chunking(_) | PrepareError::Task(_) => false,
        }
    }
}

/// Flattens `layers` (bottom first, each a gzip or plain tar stream), builds
/// the filesystem image in `work_dir`, and chunks it into `store` under
/// `salt`, the manifest's key table sealed under `account`.
pub async fn prepare(
    layers: Vec<Box<dyn Read + Send>>,
    work_dir: &Path,
    store: &dyn ChunkStore,
    salt: &Salt,
    account: &AccountKey,
    options: &PrepareOptions,
) -> Result<Prepared, PrepareError> {
    let dir = work_dir.to_path_buf();
    let options = options.clone();
    let built = tokio::task::spawn_blocking(move || {
        let flatten_options = FlattenOptions { limits: options.limits, spool_in: Some(dir.clone()) };
        let flat = crate::flatten::flatten(layers, &flatten_options)?;
        let image_file = |source| PrepareError::ImageFile { dir: dir.clone(), source };
        let mut image = tempfile::tempfile_in(&dir).map_err(image_file)?;
        let erofs = erofs::build(&flat, &mut image, &options.erofs)?;
        image.seek(SeekFrom::Start(0)).map_err(image_file)?;
        Ok::<_, PrepareError>((image, flat.stats().clone(), erofs))
    });
    let (image, flatten, erofs) = built.await.map_err(PrepareError::Task)??;
    let chunked = chunk_and_store(tokio::fs::File::from_std(image), store, salt, account).await?;
    Ok(Prepared { manifest: chunked.manifest, chunks: chunked.stats, flatten, erofs })
}
