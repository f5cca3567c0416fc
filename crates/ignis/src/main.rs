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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Server(args) => {
            init_daemon();
            server::run(*args)
        }
        Command::Cache(args) => {
            init_daemon();
            cache::run(args)
        }
        Command::Worker(args) => {
            init_daemon();
            worker::run(args)
        }
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
fn init_daemon() {
    // SAFETY: mallopt only sets an allocator parameter; called before any other thread exists.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    };
    init_tracing();
}

/// Allocations of at least this many bytes get their own mapping (see [`init_daemon`]).
const MMAP_THRESHOLD: libc::c_int = 256 * 1024;

/// The diagnostics of `ignis server` and `ignis worker`: `tracing` events on
/// stderr, filtered by `RUST_LOG` (default `info`). Their stdout keeps what
/// callers read (the address listened on, a generated key pair); a command's
/// fatal error stays one plain line on stderr (`ignis: ...`).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
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
