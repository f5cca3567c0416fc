//! `ignis worker`: a worker host that joins a server and runs its sandboxes
//! (the logic is `ignis_cluster::host`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use ignis_cluster::Capacity;
use ignis_cluster::host::HostConfig;
use ignis_sigv4::Credentials;

#[derive(clap::Args)]
pub struct WorkerArgs {
    /// The server to join, `http://HOST:PORT`; in a cluster, several front ends, comma-separated: the worker
    /// joins through one and moves on to the next when that one cannot be reached.
    #[arg(long, value_delimiter = ',', required = true)]
    pub join: Vec<String>,
    /// Address to listen on for the server's calls.
    #[arg(long, default_value = "127.0.0.1:9100")]
    pub listen: String,
    /// The address the server should call [default: the one listened on].
    #[arg(long)]
    pub advertise: Option<String>,
    /// Where this worker keeps code and sandbox state (one worker per directory).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Sandboxes kept ready ahead of time (see `ignis server --sandbox-pool`).
    #[arg(long, default_value_t = 2)]
    pub sandbox_pool: usize,
    /// Memory (MB) this worker offers sandboxes [default: this machine's].
    #[arg(long)]
    pub memory: Option<u64>,
    /// The sandbox init executable [default: ignis-init beside this program].
    #[arg(long, env = "IGNIS_INIT")]
    pub init: Option<PathBuf>,
    /// Time limits of every connection: the server's calls and the sandboxes' Runtime API.
    #[command(flatten)]
    pub client_timeouts: crate::server::ClientTimeouts,
    /// Serve Prometheus metrics at http://ADDR/metrics (a private address: it has no authentication).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// How this worker loads images (the shared cache tier's nodes come from the server).
    #[command(flatten)]
    pub image_loading: crate::server::ImageLoading,
    /// The sandboxes' network (Ignis's API on its gateway is relayed to the server).
    #[command(flatten)]
    pub networking: crate::server::SandboxNetworking,
    /// Where diagnostics go and how much of them.
    #[command(flatten)]
    pub diagnostics: crate::Diagnostics,
}

/// The administrator's key pair from the environment, which every cluster call is signed with.
pub fn admin_credentials() -> Result<Credentials, String> {
    match (std::env::var("IGNIS_ACCESS_KEY_ID"), std::env::var("IGNIS_SECRET_ACCESS_KEY")) {
        (Ok(id), Ok(secret)) if !id.is_empty() && !secret.is_empty() => {
            Ok(Credentials { access_key_id: id, secret_access_key: secret })
        }
        _ => Err("set IGNIS_ACCESS_KEY_ID and IGNIS_SECRET_ACCESS_KEY to the server's administrator key pair".into()),
    }
}

pub fn run(args: WorkerArgs) -> Result<ExitCode, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("ignis worker must run as root: it builds sandboxes with namespaces and cgroups".into());
    }
    let client_limits = args.client_timeouts.limits()?;
    let servers = args
        .join
        .iter()
        .map(|join| {
            join.strip_prefix("http://")
                .map(|rest| rest.trim_end_matches('/'))
                .filter(|authority| !authority.is_empty() && !authority.contains('/'))
                .map(str::to_string)
                .ok_or_else(|| format!("--join must be http://HOST:PORT, not {join:?}"))
        })
        .collect::<Result<Vec<String>, String>>()?;
    // The sandboxes reach Ignis's API on the first server's port, relayed to whichever server answers.
    let endpoint = servers[0]
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .map(|port| ignis_net::Endpoint { port, relay_to: servers.clone() });
    let network = args.networking.config(endpoint)?;
    let credentials = admin_credentials()?;
    let tier_credentials = credentials.clone();
    let config = HostConfig {
        servers,
        listen: args.listen,
        advertise: args.advertise,
        data_dir: args.data_dir,
        init_exe: crate::init_exe(args.init)?,
        pool_size: args.sandbox_pool,
        capacity: Capacity::of_this_host(args.memory),
        credentials,
        client_limits,
        image_memory_bytes: args.image_loading.image_memory_cache_mb << 20,
        image_disk_bytes: args.image_loading.image_cache_mb << 20,
        origin_fetches: args.image_loading.origin_fetches as usize,
        origin_start_wait: args.image_loading.origin_start_wait(),
        cache_tier: Some(Arc::new(move |nodes| crate::cache::tier_path(nodes, tier_credentials.clone()))),
        network,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        if let Some(listen) = &args.metrics_listen {
            crate::metrics::serve(listen)?;
        }
        ignis_cluster::host::run(config, crate::server::shutdown_signal()).await
    })?;
    Ok(ExitCode::SUCCESS)
}
