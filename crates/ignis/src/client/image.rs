//! `ignis image push` and `ignis image ls`: the OCI distribution API (`/v2/`), with the access
//! key id and its secret as HTTP Basic credentials.
//!
//! A push uploads each blob the repository lacks (`HEAD` first) in pieces of `--chunk-mib` read
//! from disk (`POST` to start, `PATCH` per piece, `PUT ?digest=` to end), then puts the manifest
//! by tag. Progress goes to stderr (a bar on a terminal, plain lines otherwise); the pushed
//! `NAME:TAG@DIGEST` to stdout.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use super::Endpoint;
use super::http::{Client, Request, Response};
use super::image_source::{self, Blob, Image};

/// The default of the most bytes of a blob sent in one `PATCH` (and held in memory), in MiB.
pub const CHUNK_MIB: u16 = 8;
/// Names asked for per page of `_catalog` and `tags/list`.
const PAGE: usize = 100;

#[derive(clap::Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(clap::Subcommand)]
pub enum ImageCommand {
    /// Push an image from an OCI image layout directory or a `docker save` archive.
    Push {
        #[command(flatten)]
        endpoint: Endpoint,
        /// The repository and tag to push to, NAME:TAG.
        reference: String,
        /// An OCI image layout directory (the image tagged TAG, or its only one) or a
        /// `docker save` archive.
        path: PathBuf,
        /// The most of a blob sent in one request (and held in memory), in MiB.
        #[arg(long, value_name = "MIB", default_value_t = CHUNK_MIB, value_parser = clap::value_parser!(u16).range(1..=1024))]
        chunk_mib: u16,
    },
    /// List your repositories and their tags, one NAME:TAG a line.
    Ls {
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Collect the chunk store's garbage (administrator's key only): rotate to a new root, copy forward what
    /// functions use, expire and delete older roots once they have waited long enough.
    Gc {
        #[command(flatten)]
        endpoint: Endpoint,
        /// Seconds a retired root stays readable (for sandboxes that mounted an image from it) before it expires.
        #[arg(long, default_value_t = 3600)]
        retire_seconds: u64,
        /// Seconds an expired root is kept (a read of it raises an alarm and keeps it) before it is deleted.
        #[arg(long, default_value_t = 3600)]
        expire_seconds: u64,
    },
}

pub fn image(args: ImageArgs) -> Result<ExitCode, String> {
    match args.command {
        ImageCommand::Push { endpoint, reference, path, chunk_mib } => {
            let (name, tag) = parse_reference(&reference)?;
            let image = image_source::read(&path, tag)?;
            let client = Client::new(&endpoint)?;
            let digest = push(&client, name, tag, &image, usize::from(chunk_mib) << 20, &mut Progress::new())?;
            super::write_stdout(format!("{name}:{tag}@{digest}\n").as_bytes())?;
        }
        ImageCommand::Ls { endpoint } => {
            let client = Client::new(&endpoint)?;
            let mut out = String::new();
            for repository in list(&client, "/v2/_catalog", "repositories")? {
                let tags = list(&client, &format!("/v2/{repository}/tags/list"), "tags")?;
                if tags.is_empty() {
                    out.push_str(&format!("{repository} (no tags)\n"));
                }
                for tag in tags {
                    out.push_str(&format!("{repository}:{tag}\n"));
                }
            }
            super::write_stdout(out.as_bytes())?;
        }
        ImageCommand::Gc { endpoint, retire_seconds, expire_seconds } => {
            let client = Client::new(&endpoint)?;
            let query = format!("ExpireSeconds={expire_seconds}&RetireSeconds={retire_seconds}");
            let request =
                Request { method: "POST", path: "/ignis/images/gc", query: &query, headers: vec![], body: vec![], service: "ignis" };
            let report = client.send(request)?.check()?.json()?;
            super::write_stdout(format!("{}\n", serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?).as_bytes())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `NAME:TAG` split; the tag is what follows the last `:` after the last `/`.
pub fn parse_reference(reference: &str) -> Result<(&str, &str), String> {
    let bad = || format!("invalid image reference {reference:?}: expected NAME:TAG, e.g. team/app:v1");
    let slash = reference.rfind('/').map_or(0, |i| i + 1);
    let colon = reference[slash..].rfind(':').map(|i| slash + i).ok_or_else(bad)?;
    let (name, tag) = (&reference[..colon], &reference[colon + 1..]);
    let name_ok = !name.is_empty()
        && name.split('/').all(|part| {
            !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        });
    let tag_ok = !tag.is_empty() && tag.len() <= 128 && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if name_ok && tag_ok { Ok((name, tag)) } else { Err(bad()) }
}

/// Pushes `image` as `name:tag`; answers the manifest's digest.
pub(super) fn push(client: &Client, name: &str, tag: &str, image: &Image, chunk: usize, progress: &mut Progress) -> Result<String, String> {
    let mut missing = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for blob in &image.blobs {
        if !seen.insert(blob.digest.as_str()) {
            continue;
        }
        let head = client.send_registry("HEAD", &format!("/v2/{name}/blobs/{}", blob.digest), &[], Vec::new())?;
        match head.status {
            200 => progress.line(format!("{} exists, skipped ({} bytes)", blob.digest, blob.size)),
            404 => missing.push(blob),
            _ => return Err(registry_error(head)),
        }
    }
    progress.start(missing.iter().map(|b| b.size).sum());
    for blob in missing {
        upload(client, name, blob, chunk, progress)?;
        progress.line(format!("{} uploaded ({} bytes)", blob.digest, blob.size));
    }
    progress.finish();
    let put = client.send_registry(
        "PUT",
        &format!("/v2/{name}/manifests/{tag}"),
        &[("content-type", &image.media_type)],
        image.manifest.clone(),
    )?;
    if put.status != 201 && put.status != 200 {
        return Err(registry_error(put));
    }
    Ok(put.header("docker-content-digest").map(str::to_owned).unwrap_or_else(|| image.digest()))
}

/// Uploads one blob in pieces of `chunk` bytes read from disk.
fn upload(client: &Client, name: &str, blob: &Blob, chunk: usize, progress: &mut Progress) -> Result<(), String> {
    let start = client.send_registry("POST", &format!("/v2/{name}/blobs/uploads/"), &[], Vec::new())?;
    if start.status != 202 {
        return Err(registry_error(start));
    }
    let mut location = location(&start)?;
    let mut reader = blob.open()?;
    let mut offset = 0u64;
    let mut chunk = vec![0u8; chunk];
    loop {
        let n = read_full(&mut reader, &mut chunk).map_err(|e| format!("cannot read {}: {e}", blob.source.file.display()))?;
        if n == 0 {
            break;
        }
        let range = format!("{offset}-{}", offset + n as u64 - 1);
        let headers = [("content-type", "application/octet-stream"), ("content-range", range.as_str())];
        let patch = client.send_registry("PATCH", &location, &headers, chunk[..n].to_vec())?;
        if patch.status != 202 {
            return Err(registry_error(patch));
        }
        location = location_or(&patch, location);
        offset += n as u64;
        progress.advance(n as u64);
    }
    if offset != blob.size {
        return Err(format!("{} changed while it was read: blob {} has {offset} bytes, not {}", blob.source.file.display(), blob.digest, blob.size));
    }
    let separator = if location.contains('?') { '&' } else { '?' };
    let target = format!("{location}{separator}digest={}", blob.digest);
    let put = client.send_registry("PUT", &target, &[("content-type", "application/octet-stream")], Vec::new())?;
    if put.status != 201 {
        return Err(registry_error(put));
    }
    Ok(())
}

/// Fills `buffer` as far as the reader goes; answers the bytes read.
fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The upload's `Location`, as a path and query on this endpoint.
fn location(response: &Response) -> Result<String, String> {
    let location = response.header("location").ok_or("the registry did not say where the upload goes (no Location)")?;
    Ok(path_of(location))
}

fn location_or(response: &Response, previous: String) -> String {
    response.header("location").map(path_of).unwrap_or(previous)
}

fn path_of(location: &str) -> String {
    match location.strip_prefix("http://").or_else(|| location.strip_prefix("https://")) {
        Some(rest) => rest.find('/').map_or_else(|| "/".to_owned(), |i| rest[i..].to_owned()),
        None => location.to_owned(),
    }
}

/// All the names of a paged list (`_catalog`'s `repositories`, `tags/list`'s `tags`).
fn list(client: &Client, path: &str, field: &str) -> Result<Vec<String>, String> {
    let mut names: Vec<String> = Vec::new();
    loop {
        let mut target = format!("{path}?n={PAGE}");
        if let Some(last) = names.last() {
            target.push_str(&format!("&last={last}"));
        }
        let reply = client.send_registry("GET", &target, &[], Vec::new())?;
        if reply.status != 200 {
            return Err(registry_error(reply));
        }
        let more = reply.header("link").is_some_and(|l| l.contains("rel=\"next\""));
        let page: Value = reply.json()?;
        let page: Vec<String> = page[field].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect();
        let empty = page.is_empty();
        names.extend(page);
        if !more || empty {
            return Ok(names);
        }
    }
}

/// The registry's error answer as one line: status, then each `CODE: message`.
pub fn registry_error(response: Response) -> String {
    let errors: Vec<String> = serde_json::from_slice::<Value>(&response.body)
        .ok()
        .and_then(|v| v["errors"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|e| format!("{}: {}", e["code"].as_str().unwrap_or("UNKNOWN"), e["message"].as_str().unwrap_or("")))
        .collect();
    if errors.is_empty() {
        let body = String::from_utf8_lossy(&response.body);
        let body = body.trim();
        if body.is_empty() {
            // A HEAD answer has no body: name what its status means.
            let meaning = match response.status {
                401 => ": UNAUTHORIZED: the access key or its secret was refused",
                403 => ": DENIED: the repository belongs to another account",
                404 => ": not found",
                _ => "",
            };
            format!("the registry answered {}{meaning}", response.status)
        } else {
            format!("the registry answered {}: {body}", response.status)
        }
    } else {
        format!("the registry answered {}: {}", response.status, errors.join("; "))
    }
}

/// What a push tells the user on stderr: a bar over the bytes to upload on a terminal, plain
/// lines otherwise.
pub(super) struct Progress {
    bar: Option<ProgressBar>,
    terminal: bool,
}

impl Progress {
    pub(super) fn new() -> Progress {
        Progress { bar: None, terminal: std::io::stderr().is_terminal() }
    }

    fn start(&mut self, total: u64) {
        if self.terminal && total > 0 {
            let bar = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}") {
                bar.set_style(style);
            }
            self.bar = Some(bar);
        }
    }

    fn advance(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    fn line(&self, line: String) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => {
                let _ = writeln!(std::io::stderr(), "{line}");
            }
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        assert_eq!(parse_reference("app:v1"), Ok(("app", "v1")));
        assert_eq!(parse_reference("team/app:1.0_rc-2"), Ok(("team/app", "1.0_rc-2")));
        for bad in ["app", "app:", ":v1", "App:v1", "team//app:v1", "app:v/1", "app:v 1"] {
            assert!(parse_reference(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn registry_errors_show_code_and_message() {
        let body = br#"{"errors":[{"code":"DENIED","message":"not yours","detail":null}]}"#.to_vec();
        let response = Response { status: 403, headers: vec![], body, signed_with: None };
        assert_eq!(registry_error(response), "the registry answered 403: DENIED: not yours");
        let response = Response { status: 502, headers: vec![], body: b"bad gateway".to_vec(), signed_with: None };
        assert_eq!(registry_error(response), "the registry answered 502: bad gateway");
        let response = Response { status: 403, headers: vec![], body: vec![], signed_with: None };
        assert_eq!(registry_error(response), "the registry answered 403: DENIED: the repository belongs to another account");
    }

    #[test]
    fn locations_become_paths() {
        assert_eq!(path_of("/v2/a/blobs/uploads/u1"), "/v2/a/blobs/uploads/u1");
        assert_eq!(path_of("http://h:1/v2/a/blobs/uploads/u1?x=1"), "/v2/a/blobs/uploads/u1?x=1");
    }
}
