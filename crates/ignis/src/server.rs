//! `ignis server`: wires storage, the worker and the front end together.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ServerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: String,
    /// Where functions, code and logs are kept (default: $XDG_DATA_HOME/ignis).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

pub fn run(_args: ServerArgs) -> Result<ExitCode, String> {
    Err("not built yet".into())
}
