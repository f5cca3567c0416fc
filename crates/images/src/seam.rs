//! The seam between the control plane and image preparation: when a function's
//! code becomes a container image (CreateFunction, UpdateFunctionCode), the
//! front end asks an [`ImagePreparer`] to make the image runnable (flatten its
//! layers, build the filesystem image, cut it into chunks, store the chunk
//! manifest) and stores the [`PreparedImage`]'s id in the function's record;
//! the invoke path runs what that id names.
//!
//! Contract: `prepare` is called after the image reference was resolved (the
//! repository is the account's and holds the manifest) and before the record
//! is stored; the same image prepared twice may answer the same id. An image
//! that cannot be prepared is [`PreparerError::Image`] (the caller's fault, with
//! the reason), a platform failure [`PreparerError::Internal`].

use std::future::Future;
use std::pin::Pin;

use ignis_ids::AccountId;

/// A prepared image: what the invoke path runs, by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedImage {
    pub id: String,
}

/// Why an image was not prepared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreparerError {
    /// The image cannot be run as a function (the reason says why).
    #[error("{0}")]
    Image(String),
    /// Preparation failed on the platform's side.
    #[error("preparing the image failed: {0}")]
    Internal(String),
}

/// What [`ImagePreparer::prepare`] answers.
pub type PrepareFuture<'a> = Pin<Box<dyn Future<Output = Result<PreparedImage, PreparerError>> + Send + 'a>>;

/// Makes an image of an account's repository runnable; see the module docs.
pub trait ImagePreparer: Send + Sync {
    fn prepare<'a>(&'a self, account: &'a AccountId, repository: &'a str, manifest_digest: &'a str) -> PrepareFuture<'a>;
}
