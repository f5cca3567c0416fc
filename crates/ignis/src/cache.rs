//! `ignis cache`: a node of the shared chunk cache tier (the logic is `ignis_stripes::node`). Workers keep image
//! chunks' stripes on it; every request is signed with the administrator's key pair, from the environment.

use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;

use ignis_chunks::ChunkStore;
use ignis_sigv4::Credentials;
use ignis_stripes::{CacheNode, NodeConfig, StripeTier, TieredChunkStore};
use ignis_worker::images::ChunkPath;

#[derive(clap::Args)]
pub struct CacheArgs {
    /// Address to listen on for workers' calls.
    #[arg(long, default_value = "127.0.0.1:9200")]
    pub listen: String,
    /// Where the node keeps stripes on disk (emptied at start: one node per directory).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Bytes of stripes kept in memory.
    #[arg(long, value_name = "BYTES", default_value_t = 256 << 20)]
    pub memory: u64,
    /// Bytes of stripes kept on disk.
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 30)]
    pub disk: u64,
}

/// Image chunks read through the shared tier on `nodes` (`host:port`), in front of the origin.
struct TierPath(Arc<StripeTier>);

impl ChunkPath for TierPath {
    fn through(&self, origin: Arc<dyn ChunkStore>) -> Arc<dyn ChunkStore> {
        Arc::new(TieredChunkStore::new(self.0.clone(), origin))
    }
}

/// The path through the shared tier on `nodes`, its calls signed with `credentials`.
pub fn tier_path(nodes: Vec<String>, credentials: Credentials) -> Arc<dyn ChunkPath> {
    Arc::new(TierPath(Arc::new(StripeTier::new(nodes, credentials))))
}

pub fn run(args: CacheArgs) -> Result<ExitCode, String> {
    let credentials = crate::worker::admin_credentials()?;
    let config = NodeConfig { data_dir: args.data_dir, memory_bytes: args.memory, disk_bytes: args.disk, credentials };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let node = CacheNode::new(config).map_err(|e| e.to_string())?;
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        println!("ignis cache: listening on http://{address}");
        node.serve(listener, crate::server::shutdown_signal()).await;
        Ok::<_, String>(())
    })?;
    Ok(ExitCode::SUCCESS)
}
