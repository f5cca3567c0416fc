//! The OCI distribution API under `/v2/`, over `ignis_oci::Oci`: what
//! `skopeo copy ... docker://HOST:PORT/NAME:TAG` speaks to push and pull.
//!
//! - Authentication is HTTP Basic with an access key id and its secret (the
//!   accounts service's keys); a request without (valid) credentials gets
//!   401 `UNAUTHORIZED` with `WWW-Authenticate: Basic realm="ignis"`, the
//!   challenge clients answer. SigV4 is not used here.
//! - Blob upload bodies (`PATCH`, `PUT ?digest=`, `POST ?digest=`) are
//!   streamed to the upload's spool file in pieces of at most
//!   [`PIECE`] bytes; a manifest body is read whole, up to
//!   `ignis_oci::MAX_MANIFEST`.
//! - A blob `GET` answers the blob whole from memory (the front end's answers
//!   are single buffers).
//! - Cross-repository mounts (`POST ?mount=&from=`) are answered by starting
//!   a normal upload, which the spec allows.
//! - `GET /v2/_catalog` lists only the caller's repositories, paged with
//!   `?n=&last=` and a `Link` header as `tags/list` is.
//! - A cluster's repositories are shared (`ignis_etcd::EtcdIndex`,
//!   `EtcdContents`); an upload in progress is the front end's that started
//!   it, whose address its `Location` names.
//! - Errors are the spec's `{"errors":[{"code","message","detail"}]}`
//!   (`ApiError::to_registry_response`); every answer carries
//!   `Docker-Distribution-API-Version: registry/2.0`.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use ignis_oci::{Oci, OciError};
use ignis_worker::conn::{TimedBody, is_body_timeout};

use crate::error::{ApiError, REGISTRY_VERSION};
use crate::http::{Answer, query_params, read_body};
use crate::{App, Caller};

/// The most of an upload body held in memory before it is written to the spool.
pub const PIECE: usize = 1024 * 1024;

/// The largest blob a `GET` serves: an answer is one buffer, so a blob is
/// read whole into memory before it is sent.
pub const MAX_BLOB_GET: u64 = 256 * 1024 * 1024;
/// The bytes of blobs all `GET`s together hold in memory at once; a `GET`
/// that finds no room within [`BLOB_GET_WAIT`] is refused (`TOOMANYREQUESTS`).
pub const BLOB_GET_BUDGET: u64 = 2 * MAX_BLOB_GET;
/// How long a blob `GET` waits for room in [`BLOB_GET_BUDGET`].
pub const BLOB_GET_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A request of the distribution API, routed from its method and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OciRequest {
    /// `GET /v2/`: the API version check.
    Base,
    /// `GET /v2/_catalog`: the caller's repositories (only theirs).
    Catalog,
    /// Repository.
    Tags(String),
    /// Repository, reference (tag or digest).
    GetManifest(String, String),
    HeadManifest(String, String),
    PutManifest(String, String),
    /// Repository, digest.
    GetBlob(String, String),
    HeadBlob(String, String),
    /// Repository (`POST .../blobs/uploads/`).
    StartUpload(String),
    /// Repository, upload id.
    UploadStatus(String, String),
    PatchUpload(String, String),
    PutUpload(String, String),
    CancelUpload(String, String),
}

impl OciRequest {
    pub fn name(&self) -> &'static str {
        match self {
            OciRequest::Base => "OciBase",
            OciRequest::Catalog => "OciCatalog",
            OciRequest::Tags(_) => "OciListTags",
            OciRequest::GetManifest(..) => "OciGetManifest",
            OciRequest::HeadManifest(..) => "OciHeadManifest",
            OciRequest::PutManifest(..) => "OciPutManifest",
            OciRequest::GetBlob(..) => "OciGetBlob",
            OciRequest::HeadBlob(..) => "OciHeadBlob",
            OciRequest::StartUpload(_) => "OciStartUpload",
            OciRequest::UploadStatus(..) => "OciUploadStatus",
            OciRequest::PatchUpload(..) => "OciPatchUpload",
            OciRequest::PutUpload(..) => "OciPutUpload",
            OciRequest::CancelUpload(..) => "OciCancelUpload",
        }
    }
}

/// Whether `path` is the distribution API's.
pub fn is_registry_path(path: &str) -> bool {
    path == "/v2" || path.starts_with("/v2/")
}

/// Routes a `/v2/...` request.
pub fn route(method: &Method, path: &str) -> Result<OciRequest, ApiError> {
    let rest = path.strip_prefix("/v2").unwrap_or(path);
    if rest.is_empty() || rest == "/" {
        return match *method {
            Method::GET | Method::HEAD => Ok(OciRequest::Base),
            _ => Err(unsupported(method, path)),
        };
    }
    if rest == "/_catalog" {
        return match *method {
            Method::GET => Ok(OciRequest::Catalog),
            _ => Err(unsupported(method, path)),
        };
    }
    let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    let name = |n: usize| -> Result<String, ApiError> {
        let name = segments[..segments.len() - n].join("/");
        if name.is_empty() { Err(OciError::NameInvalid(name).into()) } else { Ok(name) }
    };
    let n = segments.len();
    let last = |i: usize| segments.get(n.wrapping_sub(i)).copied();
    let request = if n >= 3 && last(2) == Some("tags") && last(1) == Some("list") {
        match *method {
            Method::GET => OciRequest::Tags(name(2)?),
            _ => return Err(unsupported(method, path)),
        }
    } else if n >= 3 && last(2) == Some("manifests") {
        let (repository, reference) = (name(2)?, segments[n - 1].to_string());
        match *method {
            Method::GET => OciRequest::GetManifest(repository, reference),
            Method::HEAD => OciRequest::HeadManifest(repository, reference),
            Method::PUT => OciRequest::PutManifest(repository, reference),
            _ => return Err(unsupported(method, path)),
        }
    } else if n >= 3 && last(2) == Some("blobs") && last(1) == Some("uploads") && *method == Method::POST {
        OciRequest::StartUpload(name(2)?)
    } else if n >= 4 && last(3) == Some("blobs") && last(2) == Some("uploads") {
        let (repository, id) = (name(3)?, segments[n - 1].to_string());
        match *method {
            Method::POST if id.is_empty() => OciRequest::StartUpload(repository),
            Method::GET => OciRequest::UploadStatus(repository, id),
            Method::PATCH => OciRequest::PatchUpload(repository, id),
            Method::PUT => OciRequest::PutUpload(repository, id),
            Method::DELETE => OciRequest::CancelUpload(repository, id),
            _ => return Err(unsupported(method, path)),
        }
    } else if n >= 3 && last(2) == Some("blobs") {
        let (repository, digest) = (name(2)?, segments[n - 1].to_string());
        match *method {
            Method::GET => OciRequest::GetBlob(repository, digest),
            Method::HEAD => OciRequest::HeadBlob(repository, digest),
            _ => return Err(unsupported(method, path)),
        }
    } else {
        return Err(ApiError::Registry {
            status: StatusCode::NOT_FOUND,
            code: "NAME_UNKNOWN",
            message: format!("no registry endpoint for {method} {path}"),
        });
    };
    Ok(request)
}

/// Room for `size` bytes of a blob in memory, held until the answer is made.
async fn blob_room(app: &App, size: u64) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    let permits = u32::try_from(size.max(1)).unwrap_or(u32::MAX);
    let room = app.blob_reads.clone().acquire_many_owned(permits);
    match ignis_clock::timeout(&*app.config.clock, BLOB_GET_WAIT, room).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(ApiError::Registry {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "TOOMANYREQUESTS",
            message: "too many blobs are being read at once; try again".into(),
        }),
    }
}

fn unsupported(method: &Method, path: &str) -> ApiError {
    ApiError::Registry {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "UNSUPPORTED",
        message: format!("the operation is unsupported: {method} {path}"),
    }
}

/// Authenticates the request with HTTP Basic (access key id, secret).
fn authenticate(app: &App, parts: &http::request::Parts) -> Result<Caller, ApiError> {
    use base64::Engine as _;
    let header = parts.headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let Some(encoded) = header.and_then(|h| h.strip_prefix("Basic ").or_else(|| h.strip_prefix("basic "))) else {
        return Err(ApiError::registry_unauthorized("authentication required"));
    };
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok().and_then(|d| String::from_utf8(d).ok());
    let Some((key, secret)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
        return Err(ApiError::registry_unauthorized("malformed Basic credentials"));
    };
    match app.secret_for(key) {
        Some(expected) if constant_time_eq(expected.as_bytes(), secret.as_bytes()) => {
            app.caller_for(key).ok_or_else(|| ApiError::registry_unauthorized("invalid credentials"))
        }
        _ => Err(ApiError::registry_unauthorized("invalid credentials")),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Runs a blocking call of the registry off the runtime.
async fn blocking<T: Send + 'static>(
    oci: &Arc<Oci>,
    f: impl FnOnce(&Oci) -> Result<T, OciError> + Send + 'static,
) -> Result<T, ApiError> {
    let oci = oci.clone();
    match tokio::task::spawn_blocking(move || f(&oci)).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(e) => Err(ApiError::Service(format!("registry task failed: {e}"))),
    }
}

/// Answers one authenticated (or refused) distribution API request.
pub async fn handle(app: &Arc<App>, request: Request<TimedBody>, oci_request: OciRequest) -> Result<Answer, ApiError> {
    let (parts, body) = request.into_parts();
    let caller = authenticate(app, &parts)?;
    let account = caller.account.as_str().to_string();
    let oci = &app.oci;
    let query = query_params(parts.uri.query().unwrap_or(""));
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    match oci_request {
        OciRequest::Base => Ok(answer(StatusCode::OK, Bytes::from_static(b"{}"), Some("application/json"))),
        OciRequest::Catalog => {
            let mut repositories = blocking(oci, move |o| o.repositories(&account)).await?;
            repositories.sort();
            let (repositories, next) = page(repositories, param("last"), param("n"));
            let body = serde_json::json!({ "repositories": repositories }).to_string();
            let mut reply = answer(StatusCode::OK, Bytes::from(body), Some("application/json"));
            if let Some((n, last)) = next {
                insert(&mut reply, "link", &format!("</v2/_catalog?n={n}&last={last}>; rel=\"next\""));
            }
            Ok(reply)
        }
        OciRequest::Tags(repository) => {
            let (acct, repo) = (account.clone(), repository.clone());
            let tags = blocking(oci, move |o| o.tags(&acct, &repo)).await?;
            let (tags, next) = page(tags, param("last"), param("n"));
            let body = serde_json::json!({ "name": repository, "tags": tags }).to_string();
            let mut reply = answer(StatusCode::OK, Bytes::from(body), Some("application/json"));
            if let Some((n, last)) = next {
                insert(&mut reply, "link", &format!("</v2/{repository}/tags/list?n={n}&last={last}>; rel=\"next\""));
            }
            Ok(reply)
        }
        OciRequest::GetManifest(repository, reference) | OciRequest::HeadManifest(repository, reference) => {
            let head = parts.method == Method::HEAD;
            let manifest = blocking(oci, move |o| o.get_manifest(&account, &repository, &reference)).await?;
            let length = manifest.bytes.len();
            let body = if head { Bytes::new() } else { Bytes::from(manifest.bytes) };
            let mut reply = answer(StatusCode::OK, body, Some(&manifest.media_type));
            insert(&mut reply, "docker-content-digest", &manifest.digest);
            insert(&mut reply, "content-length", &length.to_string());
            Ok(reply)
        }
        OciRequest::PutManifest(repository, reference) => {
            let too_large = OciError::SizeInvalid(format!("a manifest holds at most {} bytes", ignis_oci::MAX_MANIFEST)).into();
            let bytes = read_body(body, ignis_oci::MAX_MANIFEST, too_large).await?;
            let content_type = parts.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
            let repo = repository.clone();
            let digest =
                blocking(oci, move |o| o.put_manifest(&account, &repo, &reference, content_type.as_deref(), &bytes)).await?;
            let mut reply = answer(StatusCode::CREATED, Bytes::new(), None);
            insert(&mut reply, "location", &format!("/v2/{repository}/manifests/{digest}"));
            insert(&mut reply, "docker-content-digest", &digest);
            Ok(reply)
        }
        OciRequest::GetBlob(repository, digest) | OciRequest::HeadBlob(repository, digest) => {
            let head = parts.method == Method::HEAD;
            let d = digest.clone();
            let (acct, repo) = (account.clone(), repository.clone());
            let size = blocking(oci, move |o| o.blob_size(&acct, &repo, &d)).await?;
            let body = if head {
                Bytes::new()
            } else {
                if size > MAX_BLOB_GET {
                    return Err(ApiError::Registry {
                        status: StatusCode::METHOD_NOT_ALLOWED,
                        code: "UNSUPPORTED",
                        message: format!("Ignis serves blobs of at most {MAX_BLOB_GET} bytes; this one has {size}"),
                    });
                }
                let _room = blob_room(app, size).await?;
                let d = digest.clone();
                Bytes::from(blocking(oci, move |o| o.read_blob(&account, &repository, &d)).await?)
            };
            let mut reply = answer(StatusCode::OK, body, Some("application/octet-stream"));
            insert(&mut reply, "docker-content-digest", &digest);
            insert(&mut reply, "content-length", &size.to_string());
            Ok(reply)
        }
        OciRequest::StartUpload(repository) => {
            let (acct, repo) = (account.clone(), repository.clone());
            let id = blocking(oci, move |o| o.start_upload(&acct, &repo)).await?;
            if let Some(digest) = param("digest") {
                // A monolithic upload in one POST.
                let size = stream_into(oci, &account, &repository, &id, body, None).await;
                return finish(oci, &account, &repository, &id, size.map(|_| digest)).await;
            }
            Ok(upload_answer(app, StatusCode::ACCEPTED, &repository, &id, 0))
        }
        OciRequest::UploadStatus(repository, id) => {
            let (acct, repo, upload) = (account.clone(), repository.clone(), id.clone());
            let size = blocking(oci, move |o| o.upload_size(&acct, &repo, &upload)).await?;
            Ok(upload_answer(app, StatusCode::NO_CONTENT, &repository, &id, size))
        }
        OciRequest::PatchUpload(repository, id) => {
            let offset = match parts.headers.get(http::header::CONTENT_RANGE).and_then(|v| v.to_str().ok()) {
                None => None,
                Some(range) => Some(content_range_start(range)?),
            };
            let size = stream_into(oci, &account, &repository, &id, body, offset).await?;
            Ok(upload_answer(app, StatusCode::ACCEPTED, &repository, &id, size))
        }
        OciRequest::PutUpload(repository, id) => {
            let size = stream_into(oci, &account, &repository, &id, body, None).await;
            let digest = size.and_then(|_| {
                param("digest").ok_or_else(|| OciError::DigestInvalid("the digest parameter is missing".into()).into())
            });
            finish(oci, &account, &repository, &id, digest).await
        }
        OciRequest::CancelUpload(repository, id) => {
            blocking(oci, move |o| o.cancel(&account, &repository, &id)).await?;
            Ok(answer(StatusCode::NO_CONTENT, Bytes::new(), None))
        }
    }
}

/// One page of a sorted list, as the spec pages `_catalog` and `tags/list`:
/// the names after `last`, at most `n` of them; with `(n, last name)` for the
/// `Link` to the next page when the list was cut.
fn page(mut names: Vec<String>, last: Option<String>, n: Option<String>) -> (Vec<String>, Option<(usize, String)>) {
    if let Some(last) = last {
        names.retain(|name| *name > last);
    }
    let mut next = None;
    if let Some(n) = n.and_then(|n| n.parse::<usize>().ok())
        && names.len() > n
    {
        names.truncate(n);
        next = names.last().map(|last| (n, last.clone()));
    }
    (names, next)
}

/// Ends upload `id` as blob `digest` (or abandons it if the body failed).
async fn finish(
    oci: &Arc<Oci>,
    account: &str,
    repository: &str,
    id: &str,
    digest: Result<String, ApiError>,
) -> Result<Answer, ApiError> {
    let (acct, repo, upload) = (account.to_string(), repository.to_string(), id.to_string());
    let digest = match digest {
        Ok(digest) => digest,
        Err(e) => {
            blocking(oci, move |o| o.cancel(&acct, &repo, &upload)).await.ok();
            return Err(e);
        }
    };
    let d = digest.clone();
    blocking(oci, move |o| o.finish_upload(&acct, &repo, &upload, &d)).await?;
    let mut reply = answer(StatusCode::CREATED, Bytes::new(), None);
    insert(&mut reply, "location", &format!("/v2/{repository}/blobs/{digest}"));
    insert(&mut reply, "docker-content-digest", &digest);
    Ok(reply)
}

/// The start of a `Content-Range: <start>-<end>` (or `bytes <start>-<end>/<size>`).
fn content_range_start(range: &str) -> Result<u64, ApiError> {
    let range = range.trim().trim_start_matches("bytes").trim_start_matches([' ', '=']);
    let start = range.split('-').next().and_then(|s| s.trim().parse().ok());
    start.ok_or_else(|| OciError::RangeInvalid(format!("malformed Content-Range {range:?}")).into())
}

/// Streams `body` into upload `id`, at most [`PIECE`] bytes in memory at a
/// time; the first piece must start at `offset` when given. Answers the
/// upload's size after it.
async fn stream_into(
    oci: &Arc<Oci>,
    account: &str,
    repository: &str,
    id: &str,
    mut body: TimedBody,
    offset: Option<u64>,
) -> Result<u64, ApiError> {
    let mut offset = offset;
    let mut piece: Vec<u8> = Vec::new();
    let mut size = None;
    let flush = |piece: Vec<u8>, offset: Option<u64>| {
        let (account, repository, id) = (account.to_string(), repository.to_string(), id.to_string());
        blocking(oci, move |o| o.append(&account, &repository, &id, offset, &piece))
    };
    loop {
        match body.frame().await {
            None => break,
            Some(Err(e)) if is_body_timeout(e.as_ref()) => return Err(ApiError::RequestTimeout(e.to_string())),
            Some(Err(e)) => return Err(ApiError::InvalidRequestContent(format!("could not read the request body: {e}"))),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    piece.extend_from_slice(&data);
                }
                if piece.len() >= PIECE {
                    let end = flush(std::mem::take(&mut piece), offset).await?;
                    offset = Some(end);
                    size = Some(end);
                }
            }
        }
    }
    if !piece.is_empty() || size.is_none() {
        size = Some(flush(piece, offset).await?);
    }
    Ok(size.unwrap_or(0))
}

fn answer(status: StatusCode, body: Bytes, content_type: Option<&str>) -> Answer {
    let mut reply = Response::new(Full::new(body));
    *reply.status_mut() = status;
    reply.headers_mut().insert(REGISTRY_VERSION.0, HeaderValue::from_static(REGISTRY_VERSION.1));
    if let Some(content_type) = content_type {
        insert(&mut reply, "content-type", content_type);
    }
    reply
}

fn insert(reply: &mut Answer, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        reply.headers_mut().insert(name, value);
    }
}

/// The answer to an upload's start, chunk or status: where it goes on, and
/// the bytes it holds (`Range: 0-<last byte>`, `0-0` when empty). An upload
/// is this front end's: a cluster's names its own address in the location,
/// so the client's next requests of the upload come here, whichever front
/// end a load balancer sent the first to.
fn upload_answer(app: &App, status: StatusCode, repository: &str, id: &str, size: u64) -> Answer {
    let mut reply = answer(status, Bytes::new(), None);
    let here = app.config.front_ends.as_ref().map_or(String::new(), |front_ends| format!("http://{}", front_ends.me()));
    insert(&mut reply, "location", &format!("{here}/v2/{repository}/blobs/uploads/{id}"));
    insert(&mut reply, "range", &format!("0-{}", size.saturating_sub(1)));
    insert(&mut reply, "docker-upload-uuid", id);
    insert(&mut reply, "content-length", "0");
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        use OciRequest::*;
        let r = |m: Method, p: &str| route(&m, p).ok();
        assert_eq!(r(Method::GET, "/v2/"), Some(Base));
        assert_eq!(r(Method::GET, "/v2"), Some(Base));
        assert_eq!(r(Method::GET, "/v2/_catalog"), Some(Catalog));
        assert_eq!(r(Method::POST, "/v2/_catalog"), None);
        assert_eq!(r(Method::GET, "/v2/a/b/tags/list"), Some(Tags("a/b".into())));
        assert_eq!(r(Method::GET, "/v2/app/manifests/v1"), Some(GetManifest("app".into(), "v1".into())));
        assert_eq!(r(Method::HEAD, "/v2/app/manifests/v1"), Some(HeadManifest("app".into(), "v1".into())));
        assert_eq!(r(Method::PUT, "/v2/x/app/manifests/v1"), Some(PutManifest("x/app".into(), "v1".into())));
        assert_eq!(r(Method::DELETE, "/v2/app/manifests/v1"), None);
        assert_eq!(r(Method::POST, "/v2/app/blobs/uploads/"), Some(StartUpload("app".into())));
        assert_eq!(r(Method::POST, "/v2/app/blobs/uploads"), Some(StartUpload("app".into())));
        assert_eq!(r(Method::PATCH, "/v2/app/blobs/uploads/u1"), Some(PatchUpload("app".into(), "u1".into())));
        assert_eq!(r(Method::PUT, "/v2/app/blobs/uploads/u1"), Some(PutUpload("app".into(), "u1".into())));
        assert_eq!(r(Method::GET, "/v2/app/blobs/uploads/u1"), Some(UploadStatus("app".into(), "u1".into())));
        assert_eq!(r(Method::DELETE, "/v2/app/blobs/uploads/u1"), Some(CancelUpload("app".into(), "u1".into())));
        assert_eq!(r(Method::GET, "/v2/app/blobs/sha256:ab"), Some(GetBlob("app".into(), "sha256:ab".into())));
        assert_eq!(r(Method::HEAD, "/v2/app/blobs/sha256:ab"), Some(HeadBlob("app".into(), "sha256:ab".into())));
        assert_eq!(r(Method::GET, "/v2/manifests/v1"), None);
        assert_eq!(r(Method::GET, "/v2/app"), None);
        assert_eq!(r(Method::POST, "/v2/"), None);
    }

    #[test]
    fn pages() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let all = names(&["a", "b", "c"]);
        assert_eq!(page(all.clone(), None, None), (all.clone(), None));
        assert_eq!(page(all.clone(), None, Some("2".into())), (names(&["a", "b"]), Some((2, "b".into()))));
        assert_eq!(page(all.clone(), Some("b".into()), Some("2".into())), (names(&["c"]), None));
        assert_eq!(page(all.clone(), None, Some("3".into())), (all, None));
    }

    #[test]
    fn content_ranges() {
        assert_eq!(content_range_start("0-99").unwrap(), 0);
        assert_eq!(content_range_start("100-199").unwrap(), 100);
        assert_eq!(content_range_start("bytes 5-9/10").unwrap(), 5);
        assert!(content_range_start("x").is_err());
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd") && !constant_time_eq(b"abc", b"ab"));
    }
}
