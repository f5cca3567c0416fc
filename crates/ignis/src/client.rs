//! The command-line client: Lambda's API over HTTP, signed with SigV4.

use std::process::ExitCode;

/// Where the server is and which keys to sign with.
#[derive(clap::Args, Clone)]
pub struct Endpoint {
    /// The server's URL.
    #[arg(long, env = "IGNIS_ENDPOINT", default_value = "http://127.0.0.1:9000")]
    pub endpoint: String,
}

#[derive(clap::Args)]
pub struct DeployArgs {
    #[command(flatten)]
    pub endpoint: Endpoint,
    pub name: String,
    pub path: std::path::PathBuf,
}

#[derive(clap::Args)]
pub struct InvokeArgs {
    #[command(flatten)]
    pub endpoint: Endpoint,
    pub name: String,
    pub payload: Option<String>,
}

#[derive(clap::Args)]
pub struct RmArgs {
    #[command(flatten)]
    pub endpoint: Endpoint,
    pub name: String,
}

#[derive(clap::Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub endpoint: Endpoint,
    pub name: String,
}

pub fn deploy(_a: DeployArgs) -> Result<ExitCode, String> { Err("not built yet".into()) }
pub fn invoke(_a: InvokeArgs) -> Result<ExitCode, String> { Err("not built yet".into()) }
pub fn ls(_a: Endpoint) -> Result<ExitCode, String> { Err("not built yet".into()) }
pub fn rm(_a: RmArgs) -> Result<ExitCode, String> { Err("not built yet".into()) }
pub fn logs(_a: LogsArgs) -> Result<ExitCode, String> { Err("not built yet".into()) }
