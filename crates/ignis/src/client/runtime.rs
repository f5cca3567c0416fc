//! `ignis runtime build`, `import` and `ls`: the runtimes installed on a server, the bases zip functions run on; and
//! the [`Installer`] a server runs at start for its `--runtimes`.
//!
//! Installing pushes the base (an OCI image layout or a `docker save` archive; `build` makes one with
//! `ignis_runtimes::build` in a cache every server of the machine shares) to the administrator's repository
//! `ignis-runtimes/NAME` like `ignis image push`, then names it by digest in `PUT /ignis/runtimes/NAME`, where the
//! server prepares it. Progress goes to stderr; what was installed to stdout.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::{Value, json};

use ignis_sigv4::Credentials;

use super::Endpoint;
use super::http::{Client, Request};
use super::image::{CHUNK_MIB, Progress, push};
use super::image_source;

/// The repository of the administrator's that holds runtime `name`'s bases.
pub fn repository(name: &str) -> String {
    format!("ignis-runtimes/{name}")
}

#[derive(clap::Args)]
pub struct RuntimeArgs {
    #[command(subcommand)]
    pub command: RuntimeCommand,
}

#[derive(clap::Subcommand)]
pub enum RuntimeCommand {
    /// Build a runtime's base from what this machine has (its interpreter and libraries, the runtime interface
    /// client and the AWS SDK from the package index) and install it (administrator's key only).
    Build {
        #[command(flatten)]
        endpoint: Endpoint,
        /// The runtime's name (python3.11, provided.al2023, ...).
        name: String,
        /// Where built bases are kept (a base built already is not built again).
        #[arg(long, value_name = "DIR", default_value = ignis_runtimes::DEFAULT_CACHE_DIR)]
        cache_dir: PathBuf,
    },
    /// Install a runtime from an image (administrator's key only): an OCI image layout directory (the image tagged
    /// TAG, or its only one) or a `docker save` archive, such as AWS's own base image of the runtime.
    Import {
        #[command(flatten)]
        endpoint: Endpoint,
        /// The runtime's name, as functions give it in `Runtime` (python3.12, nodejs22.x, provided.al2023, ...).
        name: String,
        /// The image.
        path: PathBuf,
        /// The tag of the image in the layout or archive, when it holds several.
        #[arg(long, default_value = "latest")]
        tag: String,
    },
    /// List the installed runtimes, one a line: NAME, the image, when it was installed.
    Ls {
        #[command(flatten)]
        endpoint: Endpoint,
    },
}

pub fn runtime(args: RuntimeArgs) -> Result<ExitCode, String> {
    match args.command {
        RuntimeCommand::Build { endpoint, name, cache_dir } => {
            let client = Client::new(&endpoint)?;
            let built = ignis_runtimes::build(&name, &cache_dir, &|step: &str| eprintln!("ignis: {name}: {step}"))
                .map_err(|e| e.to_string())?;
            let installed = install(&client, &name, &built.layout, &name)?;
            super::write_stdout(format!("{}\n", line(&installed)).as_bytes())?;
        }
        RuntimeCommand::Import { endpoint, name, path, tag } => {
            let installed = install(&Client::new(&endpoint)?, &name, &path, &tag)?;
            super::write_stdout(format!("{}\n", line(&installed)).as_bytes())?;
        }
        RuntimeCommand::Ls { endpoint } => {
            let listing = list(&Client::new(&endpoint)?)?;
            let lines: String = listing["Runtimes"].as_array().into_iter().flatten().map(|r| format!("{}\n", line(r))).collect();
            super::write_stdout(lines.as_bytes())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Pushes the image at `path` (tagged `tag` there, or its only one) and installs it as runtime `name`; answers the
/// server's description of the runtime.
pub fn install(client: &Client, name: &str, path: &Path, tag: &str) -> Result<Value, String> {
    let image = image_source::read(path, tag)?;
    let repository = repository(name);
    let digest = push(client, &repository, "latest", &image, usize::from(CHUNK_MIB) << 20, &mut Progress::new())?;
    eprintln!("ignis: preparing {repository}@{digest} as runtime {name}");
    let body = json!({ "ImageUri": format!("{repository}@{digest}") }).to_string().into_bytes();
    let path = format!("/ignis/runtimes/{name}");
    let request = Request { method: "PUT", path: &path, query: "", headers: vec![], body, service: "ignis" };
    client.send(request)?.check()?.json()
}

/// The server's installed runtimes (`GET /ignis/runtimes`).
fn list(client: &Client) -> Result<Value, String> {
    let request = Request { method: "GET", path: "/ignis/runtimes", query: "", headers: vec![], body: vec![], service: "ignis" };
    client.send(request)?.check()?.json()
}

fn line(runtime: &Value) -> String {
    let text = |key: &str| runtime[key].as_str().unwrap_or("-").to_string();
    format!("{}\t{}\t{}", text("Name"), text("ResolvedImageUri"), text("InstalledAt"))
}

/// What a server installs at start: the runtimes it is told to have, built here and installed through its own API
/// (it serves already, and has not said so yet).
pub struct Installer {
    /// The server's own URL.
    pub endpoint: String,
    /// The administrator's key.
    pub credentials: Credentials,
    pub region: String,
    /// Where built bases are kept.
    pub cache_dir: PathBuf,
}

impl Installer {
    /// Builds each runtime of `names` (or finds it built) and installs it unless the server has that very base
    /// installed. Blocking. A runtime that cannot be built or installed is reported and skipped: functions of it
    /// are refused until it is installed.
    pub fn install_missing(&self, names: &[String]) {
        if names.is_empty() {
            return;
        }
        let outcome = Client::with_credentials(&self.endpoint, self.credentials.clone(), self.region.clone())
            .and_then(|client| list(&client).map(|listing| (client, listing)));
        let (client, listing) = match outcome {
            Ok(answer) => answer,
            Err(e) => return tracing::warn!(error = %e, "cannot ask the server which runtimes it has; none installed"),
        };
        let installed = |name: &str, digest: &str| {
            listing["Runtimes"].as_array().into_iter().flatten().any(|r| {
                r["Name"] == name && r["ResolvedImageUri"].as_str().is_some_and(|uri| uri.ends_with(&format!("@{digest}")))
            })
        };
        for name in names {
            let progress = |step: &str| tracing::info!(runtime = %name, "{step}");
            let built = match ignis_runtimes::build(name, &self.cache_dir, &progress) {
                Ok(built) => built,
                Err(e) => {
                    tracing::warn!(runtime = %name, error = %e, "runtime not installed");
                    continue;
                }
            };
            if installed(name, &built.manifest_digest) {
                continue;
            }
            match install(&client, name, &built.layout, name) {
                Ok(_) => tracing::info!(runtime = %name, image = %built.manifest_digest, "runtime installed"),
                Err(e) => tracing::warn!(runtime = %name, error = %e, "runtime not installed"),
            }
        }
    }
}
