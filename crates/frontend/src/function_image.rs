//! The code of a container-image function (`PackageType: Image`): an
//! `ImageUri` resolved in the caller's own repositories of Ignis's registry
//! (`ignis_oci::Oci::resolve_image`: a tag becomes its digest now, so a later
//! push to the tag does not change the function), then prepared
//! (`ignis_images::ImagePreparer`), into the record's `ImageRecord`; and
//! Lambda's refusals of zip settings on image functions.

use std::sync::Arc;

use ignis_ids::AccountId;
use ignis_oci::{ImageUri, Oci, ResolvedImage};
use ignis_registry::{ImageRecord, ImageSettings};

use crate::error::ApiError;
use crate::{App, Caller};

/// Lambda's refusal of zip-only settings (`Runtime`, `Handler`, `Layers`) on an image function.
pub fn zip_settings_refused() -> ApiError {
    ApiError::InvalidParameterValue("Please don't provide Handler or Runtime or Layer when the intended function PackageType is Image.".into())
}

/// The image `uri` names in the caller's repositories, resolved and prepared (a cluster's repositories are every
/// front end's).
pub async fn resolve(app: &App, caller: &Caller, uri: &str) -> Result<ImageRecord, ApiError> {
    resolve_image(&app.oci, &*app.images, &caller.account, uri).await
}

/// The image `uri` names in `account`'s repositories of `oci`, resolved and prepared by `images`: [`resolve`] with
/// the services given (the server installs runtimes with it before it serves).
pub async fn resolve_image(
    oci: &Arc<Oci>,
    images: &dyn ignis_images::ImagePreparer,
    account: &AccountId,
    uri: &str,
) -> Result<ImageRecord, ApiError> {
    let parsed = ImageUri::parse(uri).map_err(|_| ApiError::invalid_source_image(uri))?;
    let oci = oci.clone();
    let (account_id, repository, reference) =
        (account.as_str().to_string(), parsed.repository.clone(), parsed.reference.as_str().to_string());
    let found = tokio::task::spawn_blocking(move || oci.resolve_image(&account_id, &repository, &reference))
        .await
        .map_err(|e| ApiError::Service(format!("registry task failed: {e}")))?;
    let resolved = found.map_err(|e| ApiError::image_source(uri, e))?;
    prepared(images, account, uri, parsed, resolved).await
}

/// The function image record of `resolved`, once `images` prepared it.
async fn prepared(
    images: &dyn ignis_images::ImagePreparer,
    account: &AccountId,
    uri: &str,
    parsed: ImageUri,
    resolved: ResolvedImage,
) -> Result<ImageRecord, ApiError> {
    let prepared = images.prepare(account, &parsed.repository, &resolved.manifest_digest).await?;
    let config = resolved.config;
    Ok(ImageRecord {
        image_uri: uri.to_string(),
        resolved_image_uri: parsed.resolved(&resolved.manifest_digest),
        repository: parsed.repository,
        manifest_digest: resolved.manifest_digest,
        settings: ImageSettings { entrypoint: config.entrypoint, cmd: config.cmd, env: config.env, working_dir: config.working_dir },
        prepared_id: prepared.id,
    })
}

/// Lambda's `CodeSha256` of an image function: the manifest digest's hex.
pub fn code_sha256(image: &ImageRecord) -> String {
    image.manifest_digest.trim_start_matches("sha256:").to_string()
}
