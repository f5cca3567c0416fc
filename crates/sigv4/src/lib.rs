//! AWS Signature Version 4: signing requests and verifying signed requests.
//!
//! Pure code, no IO. The algorithm, as the AWS SDKs implement it (botocore's `SigV4Auth` is the
//! reference followed here, for services other than S3):
//!
//! 1. **Canonical request**: six lines joined by `\n`:
//!    - the method, upper case;
//!    - the canonical URI: the path *as sent on the wire* (already percent-encoded), with `.`/`..`
//!      and empty segments removed, then URI-encoded *again*: every byte outside `A-Za-z0-9-_.~`
//!      and `/` becomes `%XX` (upper-case hex), so `%3A` becomes `%253A`. An empty path is `/`;
//!    - the canonical query: the query split on `&`, each key and value percent-decoded then
//!      re-encoded strictly (space as `%20`), a key without `=` getting an empty value, sorted by
//!      key then value, joined with `&`;
//!    - the canonical headers: for each signed header, sorted by lower-case name,
//!      `name:value\n`, the value trimmed with inner runs of whitespace collapsed to one space,
//!      several headers of one name joined with `,`;
//!    - the signed headers: the lower-case names joined with `;`;
//!    - the hex SHA-256 of the body (the value of `x-amz-content-sha256` when the request has one).
//! 2. **String to sign**: `AWS4-HMAC-SHA256\n<timestamp>\n<scope>\n<hex sha256(canonical request)>`,
//!    where the timestamp is `20150830T123600Z` (from `x-amz-date`, else `date`) and the scope is
//!    `<yyyymmdd>/<region>/<service>/aws4_request`.
//! 3. **Signing key**: `HMAC("AWS4" + secret, yyyymmdd)`, then HMAC'd with the region, the
//!    service and `aws4_request` in turn.
//! 4. **Signature**: hex `HMAC(signing key, string to sign)`, sent in
//!    `Authorization: AWS4-HMAC-SHA256 Credential=<key id>/<scope>, SignedHeaders=<names>,
//!    Signature=<hex>`.
//!
//! [`verify`] recomputes the signature from the request and the secret of the access key it
//! names, compares it in constant time, checks the scope's date against the request's date and
//! rejects requests dated more than 15 minutes away from the server's clock. [`sign`] produces the
//! headers a client adds.
//!
//! A server checks a request in two steps so that it reads no body of a request it can refuse
//! without it: [`verify_head`] checks everything the head proves (the key, the scope, the date,
//! the signed headers, and the signature itself when `x-amz-content-sha256` declares the payload
//! hash, as Ignis's own clients and S3 clients send); [`HeadChecked::finish`] then checks the
//! body: against the declared hash, or, when none was declared (the AWS SDKs for Lambda, SQS and
//! CloudWatch Logs send none), by computing the signature with the body's hash.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The only algorithm supported (and the only one AWS's SigV4 uses with HMAC).
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// How far a request's date may be from the server's clock, either way.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

/// Headers never signed by [`sign`] (hop-by-hop ones a proxy may change, and `user-agent`), as in
/// botocore.
const UNSIGNED_HEADERS: &[&str] = &[
    "authorization",
    "connection",
    "expect",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "x-amzn-trace-id",
];

/// An access key pair.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// What signing and verification need to know about an HTTP request.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    /// The method, e.g. `GET` (any case).
    pub method: &'a str,
    /// The path exactly as received / sent: still percent-encoded, without the query.
    pub path: &'a str,
    /// The raw query string, without the `?` (empty when there is none).
    pub query: &'a str,
    /// All the request's headers, names in any case, in the order received; a name may repeat.
    /// `host` must be among them.
    pub headers: &'a [(&'a str, &'a str)],
    /// The whole body. Its SHA-256 is what gets signed; when the request has an
    /// `x-amz-content-sha256` header, the signature covers that value and [`verify`] checks that
    /// the body matches it.
    pub body: &'a [u8],
}

/// A request whose signature checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The access key the request was signed with.
    pub access_key_id: String,
    /// The region named in the credential scope (the caller decides whether it accepts it).
    pub region: String,
    /// The service named in the credential scope (the caller decides whether it accepts it).
    pub service: String,
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization` header at all.
    Missing,
    /// The `Authorization` header or the request's date is not usable; the text says why.
    Malformed(String),
    /// The access key is not known.
    UnknownKey(String),
    /// The signature is not the one the request and the key's secret give.
    SignatureMismatch,
    /// The request's date is too far from the server's clock; the text says by how much.
    Expired(String),
    /// The body is not the one whose hash `x-amz-content-sha256` declared (and the signature covers).
    ContentMismatch,
}

impl AuthError {
    /// The error type AWS answers with in this case (for an `x-amzn-ErrorType` header).
    pub fn aws_error_type(&self) -> &'static str {
        match self {
            AuthError::Missing => "MissingAuthenticationTokenException",
            AuthError::Malformed(_) => "IncompleteSignatureException",
            AuthError::UnknownKey(_) => "UnrecognizedClientException",
            AuthError::SignatureMismatch | AuthError::Expired(_) | AuthError::ContentMismatch => {
                "InvalidSignatureException"
            }
        }
    }

    /// The HTTP status AWS answers with (403 for all of them).
    pub fn http_status(&self) -> u16 {
        403
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Missing => f.write_str("Missing Authentication Token"),
            AuthError::Malformed(why) => write!(f, "{why}"),
            AuthError::UnknownKey(_) => f.write_str("The security token included in the request is invalid."),
            AuthError::SignatureMismatch => f.write_str(
                "The request signature we calculated does not match the signature you provided. \
                 Check your AWS Secret Access Key and signing method. \
                 Consult the service documentation for details.",
            ),
            AuthError::Expired(why) => write!(f, "{why}"),
            AuthError::ContentMismatch => {
                f.write_str("The provided 'x-amz-content-sha256' header does not match what was computed.")
            }
        }
    }
}

impl std::error::Error for AuthError {}

/// Signs a request: returns the headers to add to it, `authorization`, `x-amz-date` and
/// `x-amz-content-sha256` (lower-case names). Every header in `parts.headers` is signed except
/// hop-by-hop ones and `user-agent` (any `authorization`, `x-amz-date` or `x-amz-content-sha256`
/// already there is ignored: the returned ones replace them). `parts.headers` must contain
/// `host`, and the request must be sent with exactly these path, query, headers and body.
pub fn sign(
    parts: &RequestParts<'_>,
    creds: &Credentials,
    region: &str,
    service: &str,
    now: SystemTime,
) -> Vec<(String, String)> {
    let timestamp = format_timestamp(now);
    let payload_hash = hex::encode(Sha256::digest(parts.body));

    let mut headers: Vec<(String, &str)> = parts
        .headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), *value))
        .filter(|(name, _)| {
            !UNSIGNED_HEADERS.contains(&name.as_str()) && name != "x-amz-date" && name != "x-amz-content-sha256"
        })
        .collect();
    headers.push(("x-amz-date".to_owned(), &timestamp));
    headers.push(("x-amz-content-sha256".to_owned(), &payload_hash));

    let mut names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let signed_headers = names.join(";");

    let borrowed: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    let canonical = canonical_request(
        parts.method,
        parts.path,
        parts.query,
        &borrowed,
        &names,
        &payload_hash,
    )
    .expect("every signed header is present");
    let scope = format!("{}/{region}/{service}/aws4_request", &timestamp[..8]);
    let signature = signature(&creds.secret_access_key, &timestamp, &scope, region, service, &canonical);

    let authorization = format!(
        "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
        creds.access_key_id
    );
    vec![
        ("authorization".to_owned(), authorization),
        ("x-amz-date".to_owned(), timestamp),
        ("x-amz-content-sha256".to_owned(), payload_hash),
    ]
}

/// Verifies a request's SigV4 `Authorization` header. `secret_for` returns the secret access key
/// of an access key id, or `None` for an unknown key. `now` is the server's clock. The same as
/// [`verify_head`] then [`HeadChecked::finish`] with the body.
pub fn verify(
    parts: &RequestParts<'_>,
    secret_for: impl Fn(&str) -> Option<String>,
    now: SystemTime,
) -> Result<Verified, AuthError> {
    verify_head(&parts.head(), secret_for, now)?.finish(parts.body)
}

/// A request without its body: what [`verify_head`] checks before the body is read.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// As in [`RequestParts`].
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
}

impl<'a> RequestParts<'a> {
    /// The request without its body.
    pub fn head(&self) -> RequestHead<'a> {
        RequestHead { method: self.method, path: self.path, query: self.query, headers: self.headers }
    }
}

/// A request whose head checked out: the key exists, the scope and date are valid, every signed
/// header is there and, when the payload hash is declared (`x-amz-content-sha256`), the
/// signature is right. What is left needs the body: [`HeadChecked::finish`].
pub struct HeadChecked {
    verified: Verified,
    payload: Payload,
}

impl fmt::Debug for HeadChecked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeadChecked")
            .field("verified", &self.verified)
            .field("signature_verified", &self.signature_verified())
            .finish_non_exhaustive()
    }
}

enum Payload {
    /// The declared payload hash (lower-case hex), which the signature covers (already checked).
    Declared(String),
    /// No declared hash: the signature covers the body's, so it is checked with the body.
    Undeclared { signing_key: Vec<u8>, timestamp: String, scope: String, canonical_head: String, signature: String },
}

impl HeadChecked {
    /// Whether the signature is already verified (the payload hash was declared): the body then
    /// only has to match the declared hash, and reading it is reading an authenticated request.
    pub fn signature_verified(&self) -> bool {
        matches!(self.payload, Payload::Declared(_))
    }

    /// What the request claims (proven only once [`HeadChecked::finish`] succeeds, or already if
    /// [`HeadChecked::signature_verified`]).
    pub fn claimed(&self) -> &Verified {
        &self.verified
    }

    /// Checks the body: against the declared payload hash, or by computing the signature with its
    /// hash.
    pub fn finish(self, body: &[u8]) -> Result<Verified, AuthError> {
        let body_hash = hex::encode(Sha256::digest(body));
        match self.payload {
            Payload::Declared(declared) => {
                if constant_time_eq(declared.as_bytes(), body_hash.as_bytes()) {
                    Ok(self.verified)
                } else {
                    Err(AuthError::ContentMismatch)
                }
            }
            Payload::Undeclared { signing_key, timestamp, scope, canonical_head, signature } => {
                let canonical = format!("{canonical_head}{body_hash}");
                let expected = signature_with_key(&signing_key, &timestamp, &scope, &canonical);
                if constant_time_eq(expected.as_bytes(), signature.as_bytes()) {
                    Ok(self.verified)
                } else {
                    Err(AuthError::SignatureMismatch)
                }
            }
        }
    }
}

/// Verifies everything a request's head can prove: the `Authorization` header's form, the key
/// (through `secret_for`), the credential scope's date against the request's, the clock skew,
/// the signed headers' presence, and, when `x-amz-content-sha256` declares the payload hash, the
/// signature itself. The body is checked by [`HeadChecked::finish`].
pub fn verify_head(
    head: &RequestHead<'_>,
    secret_for: impl Fn(&str) -> Option<String>,
    now: SystemTime,
) -> Result<HeadChecked, AuthError> {
    let authorization = header_values(head.headers, "authorization");
    let authorization = match authorization.as_slice() {
        [] => return Err(AuthError::Missing),
        [one] => *one,
        _ => return Err(AuthError::Malformed("more than one Authorization header".into())),
    };
    let auth = parse_authorization(authorization)?;

    // The request's date: x-amz-date, else date.
    let (timestamp, when) = request_date(head.headers)?;
    if auth.date != timestamp[..8] {
        return Err(AuthError::Malformed(format!(
            "Credential should be scoped to a valid date ('{}' is not '{}').",
            auth.date,
            &timestamp[..8]
        )));
    }
    check_skew(&timestamp, when, now)?;

    // The payload hash, if declared.
    let content_sha = header_values(head.headers, "x-amz-content-sha256");
    let declared = match content_sha.as_slice() {
        [] => None,
        [declared] => {
            let declared = declared.trim();
            if declared.starts_with("UNSIGNED-PAYLOAD") || declared.starts_with("STREAMING-") {
                return Err(AuthError::Malformed(format!(
                    "x-amz-content-sha256 '{declared}' is not supported: the payload must be signed"
                )));
            }
            Some(declared.to_owned())
        }
        _ => return Err(AuthError::Malformed("more than one x-amz-content-sha256 header".into())),
    };

    let canonical_head = canonical_request(
        head.method,
        head.path,
        head.query,
        head.headers,
        &auth.signed_headers.iter().map(String::as_str).collect::<Vec<_>>(),
        "",
    )
    .map_err(|missing| AuthError::Malformed(format!("signed header '{missing}' is not in the request")))?;

    let secret = secret_for(&auth.access_key_id).ok_or_else(|| AuthError::UnknownKey(auth.access_key_id.clone()))?;
    let scope = format!("{}/{}/{}/aws4_request", auth.date, auth.region, auth.service);
    let signing_key = signing_key(&secret, &timestamp, &auth.region, &auth.service);
    let signature = auth.signature.to_ascii_lowercase();
    let verified = Verified { access_key_id: auth.access_key_id, region: auth.region, service: auth.service };
    let payload = match declared {
        Some(declared) => {
            let expected = signature_with_key(&signing_key, &timestamp, &scope, &format!("{canonical_head}{declared}"));
            if !constant_time_eq(expected.as_bytes(), signature.as_bytes()) {
                return Err(AuthError::SignatureMismatch);
            }
            Payload::Declared(declared.to_ascii_lowercase())
        }
        None => Payload::Undeclared { signing_key, timestamp, scope, canonical_head, signature },
    };
    Ok(HeadChecked { verified, payload })
}

/// The parsed `Authorization` header.
#[derive(Debug)]
struct Authorization {
    access_key_id: String,
    date: String,
    region: String,
    service: String,
    /// Lower-case, sorted, without duplicates.
    signed_headers: Vec<String>,
    signature: String,
}

fn parse_authorization(header: &str) -> Result<Authorization, AuthError> {
    let header = header.trim();
    let rest = match header.split_once(|c: char| c.is_ascii_whitespace()) {
        Some((ALGORITHM, rest)) => rest,
        _ => {
            let algorithm = header.split(|c: char| c.is_ascii_whitespace()).next().unwrap_or("");
            return Err(AuthError::Malformed(format!(
                "Authorization header requires the {ALGORITHM} algorithm, not '{algorithm}'"
            )));
        }
    };
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for component in rest.split(',') {
        let component = component.trim();
        if component.is_empty() {
            continue;
        }
        let Some((key, value)) = component.split_once('=') else {
            return Err(AuthError::Malformed(format!(
                "Authorization header requires each component to be of the form key=value (got '{component}')"
            )));
        };
        let slot = match key.trim() {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => continue,
        };
        if slot.replace(value.trim()).is_some() {
            return Err(AuthError::Malformed(format!("Authorization header has '{key}' twice")));
        }
    }
    let missing: Vec<&str> = [("Credential", &credential), ("SignedHeaders", &signed_headers), ("Signature", &signature)]
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| *k)
        .collect();
    if !missing.is_empty() {
        return Err(AuthError::Malformed(format!(
            "Authorization header requires {} parameter(s)",
            missing.iter().map(|k| format!("'{k}'")).collect::<Vec<_>>().join(", ")
        )));
    }
    let (credential, signed_headers, signature) = (credential.unwrap(), signed_headers.unwrap(), signature.unwrap());

    // Credential=<key id>/<date>/<region>/<service>/aws4_request
    let mut pieces = credential.rsplitn(5, '/');
    let terminator = pieces.next().unwrap_or("");
    let service = pieces.next().unwrap_or("");
    let region = pieces.next().unwrap_or("");
    let date = pieces.next().unwrap_or("");
    let access_key_id = pieces.next().unwrap_or("");
    if access_key_id.is_empty() || date.is_empty() || region.is_empty() || service.is_empty() {
        return Err(AuthError::Malformed(format!(
            "Credential should be of the form <access key id>/<date>/<region>/<service>/aws4_request, not '{credential}'"
        )));
    }
    if terminator != "aws4_request" {
        return Err(AuthError::Malformed(format!(
            "Credential should be scoped with a valid terminator: 'aws4_request', not '{terminator}'"
        )));
    }
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AuthError::Malformed(format!("Credential date '{date}' is not of the form yyyymmdd")));
    }

    let mut names: Vec<String> = signed_headers
        .split(';')
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    names.sort_unstable();
    names.dedup();
    if names.is_empty() {
        return Err(AuthError::Malformed("SignedHeaders is empty".into()));
    }
    if !names.iter().any(|n| n == "host") {
        return Err(AuthError::Malformed("SignedHeaders must include 'host'".into()));
    }
    if names.iter().any(|n| n == "authorization") {
        return Err(AuthError::Malformed("SignedHeaders must not include 'authorization'".into()));
    }
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AuthError::Malformed("Signature should be 64 hexadecimal digits".into()));
    }

    Ok(Authorization {
        access_key_id: access_key_id.to_owned(),
        date: date.to_owned(),
        region: region.to_owned(),
        service: service.to_owned(),
        signed_headers: names,
        signature: signature.to_owned(),
    })
}

/// The request's timestamp (`yyyymmddThhmmssZ`) and the instant it names.
fn request_date(headers: &[(&str, &str)]) -> Result<(String, SystemTime), AuthError> {
    let (name, value) = if let Some(v) = header_values(headers, "x-amz-date").first() {
        ("X-Amz-Date", v.trim())
    } else if let Some(v) = header_values(headers, "date").first() {
        ("Date", v.trim())
    } else {
        return Err(AuthError::Malformed(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.".into(),
        ));
    };
    let when = parse_timestamp(value)
        .or_else(|| parse_http_date(value))
        .ok_or_else(|| AuthError::Malformed(format!("{name} header '{value}' is not a valid date")))?;
    Ok((format_timestamp(when), when))
}

fn check_skew(timestamp: &str, when: SystemTime, now: SystemTime) -> Result<(), AuthError> {
    let minutes = MAX_CLOCK_SKEW.as_secs() / 60;
    if when + MAX_CLOCK_SKEW < now {
        return Err(AuthError::Expired(format!(
            "Signature expired: {timestamp} is now earlier than {} ({} - {minutes} min.)",
            format_timestamp(now.checked_sub(MAX_CLOCK_SKEW).unwrap_or(UNIX_EPOCH)),
            format_timestamp(now),
        )));
    }
    if when > now + MAX_CLOCK_SKEW {
        return Err(AuthError::Expired(format!(
            "Signature not yet current: {timestamp} is still later than {} ({} + {minutes} min.)",
            format_timestamp(now + MAX_CLOCK_SKEW),
            format_timestamp(now),
        )));
    }
    Ok(())
}

/// All values of a header (case-insensitive name), in order.
fn header_values<'a>(headers: &[(&'a str, &'a str)], name: &str) -> Vec<&'a str> {
    headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| *v).collect()
}

/// Builds the canonical request. `signed` are lower-case header names, sorted, without
/// duplicates. Errs with the name of a signed header the request lacks.
fn canonical_request<'n>(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(&str, &str)],
    signed: &[&'n str],
    payload_hash: &str,
) -> Result<String, &'n str> {
    let mut out = String::with_capacity(256);
    out.push_str(&method.to_ascii_uppercase());
    out.push('\n');
    out.push_str(&canonical_uri(path));
    out.push('\n');
    out.push_str(&canonical_query(query));
    out.push('\n');
    for name in signed {
        let values = header_values(headers, name);
        if values.is_empty() {
            return Err(name);
        }
        out.push_str(name);
        out.push(':');
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&trim_all(value));
        }
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed.join(";"));
    out.push('\n');
    out.push_str(payload_hash);
    Ok(out)
}

/// The path with dot and empty segments removed (as botocore and the JS SDK do), URI-encoded
/// again (so that existing `%XX` escapes become `%25XX`). `/` for an empty path.
fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".to_owned();
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut normalized = String::with_capacity(path.len() + 1);
    if path.starts_with('/') {
        normalized.push('/');
    }
    normalized.push_str(&segments.join("/"));
    if path.ends_with('/') && !segments.is_empty() {
        normalized.push('/');
    }
    if normalized.is_empty() {
        normalized.push('/');
    }
    uri_encode(normalized.as_bytes(), false)
}

/// The query with each key and value decoded, re-encoded strictly and sorted.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (uri_encode(&percent_decode(key), true), uri_encode(&percent_decode(value), true))
        })
        .collect();
    pairs.sort_unstable();
    let mut out = String::with_capacity(query.len() + 8);
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(key);
        out.push('=');
        out.push_str(value);
    }
    out
}

/// Percent-encodes every byte outside `A-Za-z0-9-_.~` (and outside `/` unless `encode_slash`).
fn uri_encode(bytes: &[u8], encode_slash: bool) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') || (b == b'/' && !encode_slash) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
    out
}

/// Decodes `%XX` escapes; anything else (including `+` and invalid escapes) stays as is.
fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex_val(bytes[i + 1]), hex_val(bytes[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Trims a header value and collapses inner runs of whitespace into one space.
fn trim_all(value: &str) -> String {
    value.split_ascii_whitespace().collect::<Vec<_>>().join(" ")
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// The hex signature of a canonical request.
fn signature(secret: &str, timestamp: &str, scope: &str, region: &str, service: &str, canonical: &str) -> String {
    signature_with_key(&signing_key(secret, timestamp, region, service), timestamp, scope, canonical)
}

/// The key of one day, region and service.
fn signing_key(secret: &str, timestamp: &str, region: &str, service: &str) -> Vec<u8> {
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), &timestamp.as_bytes()[..8]);
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, b"aws4_request")
}

fn signature_with_key(signing_key: &[u8], timestamp: &str, scope: &str, canonical: &str) -> String {
    let string_to_sign = format!(
        "{ALGORITHM}\n{timestamp}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    hex::encode(hmac_sha256(signing_key, string_to_sign.as_bytes()))
}

/// Compares without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

// ---- dates ----

/// `yyyymmddThhmmssZ` (UTC), the SigV4 timestamp format. Times before 1970 print as 1970.
pub fn format_timestamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

/// Parses `yyyymmddThhmmssZ`.
fn parse_timestamp(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let digits = s.get(r)?;
        if !digits.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    };
    to_system_time(num(0..4)?, num(4..6)?, num(6..8)?, num(9..11)?, num(11..13)?, num(13..15)?)
}

/// Parses an RFC 7231 IMF-fixdate: `Sun, 30 Aug 2015 12:36:00 GMT`.
fn parse_http_date(s: &str) -> Option<SystemTime> {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let (_, rest) = s.split_once(", ")?;
    let mut it = rest.split(' ');
    let day: u32 = it.next()?.parse().ok()?;
    let month_name = it.next()?;
    let month = MONTHS.iter().position(|m| *m == month_name)? as u32 + 1;
    let year: u32 = it.next()?.parse().ok()?;
    let mut hms = it.next()?.split(':');
    let (h, mi, se) = (hms.next()?.parse().ok()?, hms.next()?.parse().ok()?, hms.next()?.parse().ok()?);
    if it.next()? != "GMT" || it.next().is_some() {
        return None;
    }
    to_system_time(year, month, day, h, mi, se)
}

fn to_system_time(y: u32, m: u32, d: u32, h: u32, mi: u32, s: u32) -> Option<SystemTime> {
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(y as i64, m, d);
    let secs = days as u64 * 86_400 + u64::from(h) * 3600 + u64::from(mi) * 60 + u64::from(s);
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

fn days_in_month(y: u32, m: u32) -> u32 {
    match m {
        2 if (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests;
