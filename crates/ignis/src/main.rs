//! `ignis`: the server and the command-line client, thin over the library crates.

mod cache;
mod client;
mod metrics;
mod server;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ignis", version, about = "A self-hosted, Lambda-compatible serverless platform")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the platform: API, storage and a local worker, in one process.
    Server(Box<server::ServerArgs>),
    /// Start a worker host that runs sandboxes for a server it joins.
    Worker(worker::WorkerArgs),
    /// Start a node of the shared chunk cache that workers keep image chunks' stripes on.
    Cache(cache::CacheArgs),
    /// Create a function, or update the code and configuration of an existing one.
    Deploy(client::DeployArgs),
    /// Invoke a function and print its answer.
    Invoke(client::InvokeArgs),
    /// List functions.
    Ls(client::Endpoint),
    /// Delete a function.
    Rm(client::RmArgs),
    /// Print a function's logs.
    Logs(client::LogsArgs),
    /// Push container images (an OCI image layout or a `docker save` archive) and list them.
    Image(client::ImageArgs),
    /// Manage tenant accounts (administrator's key only).
    Account(client::AccountArgs),
    /// Install the runtimes zip functions run on (administrator's key only), and list them.
    Runtime(client::RuntimeArgs),
    /// Manage the networks functions may attach to through VpcConfig (administrator's key only).
    Network(client::NetworkArgs),
    /// List the workers: the local one and the hosts that joined (administrator's key only).
    Workers(client::Endpoint),
    /// Per-function invocations and errors per second, duration p50/p99 and concurrency, live, from the server's
    /// metrics (`ignis server --metrics-listen ADDR`).
    Top(client::top::TopArgs),
    /// Print the administrator's key pair from a server's data directory (on the server's machine, as root: the
    /// secret is sealed under the directory's master key).
    Credentials(client::CredentialsArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Server(args) => match init_daemon(&args.diagnostics) {
            Ok(()) => server::run(*args),
            Err(e) => Err(e),
        },
        Command::Cache(args) => match init_daemon(&args.diagnostics) {
            Ok(()) => cache::run(args),
            Err(e) => Err(e),
        },
        Command::Worker(args) => match init_daemon(&args.diagnostics) {
            Ok(()) => worker::run(args),
            Err(e) => Err(e),
        },
        Command::Credentials(args) => client::show_credentials(args),
        Command::Top(args) => client::top::top(args),
        Command::Deploy(args) => client::deploy(args),
        Command::Invoke(args) => client::invoke(args),
        Command::Ls(args) => client::ls(args),
        Command::Rm(args) => client::rm(args),
        Command::Logs(args) => client::logs(args),
        Command::Image(args) => client::image(args),
        Command::Account(args) => client::account(args),
        Command::Runtime(args) => client::runtime(args),
        Command::Network(args) => client::network(args),
        Command::Workers(args) => client::workers(args),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("ignis: {message}");
            ExitCode::FAILURE
        }
    }
}

/// What `ignis server` and `ignis worker` set up first: their diagnostics, and their allocator.
///
/// Buffers of 256 KiB and more (request bodies, events, chunks) are always their own mappings,
/// returned to the system when freed. Left to itself, glibc raises that threshold to the size of
/// the largest such buffer freed so far, after which megabyte bodies come from the per-thread
/// heaps and stay there: a burst of large requests would keep the process that much bigger.
fn init_daemon(diagnostics: &Diagnostics) -> Result<(), String> {
    // SAFETY: mallopt only sets an allocator parameter; called before any other thread exists.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    };
    init_tracing(diagnostics)
}

/// Allocations of at least this many bytes get their own mapping (see [`init_daemon`]).
const MMAP_THRESHOLD: libc::c_int = 256 * 1024;

/// How `ignis server`, `ignis worker` and `ignis cache` write their diagnostics.
#[derive(clap::Args)]
pub struct Diagnostics {
    /// Which events to write: a level (`error`, `warn`, `info`, `debug`: one line per request, `trace`) or
    /// `RUST_LOG`'s directives (`info,ignis_frontend=debug`) [default: RUST_LOG, else info].
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// `text` (one line an event) or `json` (one JSON object a line, for log collectors).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The diagnostics of `ignis server`, `ignis worker` and `ignis cache`: `tracing` events on stderr, structured and
/// levelled (requests at debug, failed requests at warn, each with its request id). Their stdout keeps what
/// callers read (the address listened on, a generated key pair); a command's fatal error stays one plain line on
/// stderr (`ignis: ...`).
fn init_tracing(diagnostics: &Diagnostics) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let filter = match &diagnostics.log_level {
        Some(directives) => EnvFilter::try_new(directives).map_err(|e| format!("--log-level {directives:?}: {e}"))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match diagnostics.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
    };
    Ok(())
}

/// The sandbox init executable: `given`, else `ignis-init` beside this program.
fn init_exe(given: Option<PathBuf>) -> Result<PathBuf, String> {
    let init_exe = match given {
        Some(path) => path,
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find this program's path: {e}"))?
            .with_file_name("ignis-init"),
    };
    if !init_exe.is_file() {
        return Err(format!("sandbox init {} not found: build it (cargo build) or pass --init", init_exe.display()));
    }
    Ok(init_exe)
}

/// The default data directory: `$XDG_DATA_HOME/ignis`, else `~/.local/share/ignis`.
fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("ignis");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".local/share/ignis")
}
