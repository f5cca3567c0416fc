//! `ignis cache`: a node of the shared chunk cache tier (the logic is `ignis_stripes::node`). Workers keep image
//! chunks' stripes on it; every request is signed with the administrator's key pair, from the environment.

use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;

use ignis_chunks::ChunkStore;
use ignis_sigv4::Credentials;
use ignis_stripes::{CacheNode, NodeConfig, PutSlots, StripeTier, TieredChunkStore};
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
    /// Where diagnostics go and how much of them.
    #[command(flatten)]
    pub diagnostics: crate::Diagnostics,
}

/// Image chunks read through the shared tier, in front of the origin; the stripe writes of every image this
/// worker mounts count against one bound.
struct TierPath {
    tier: Arc<StripeTier>,
    puts: PutSlots,
}

impl ChunkPath for TierPath {
    fn through(&self, origin: Arc<dyn ChunkStore>) -> Arc<dyn ChunkStore> {
        Arc::new(TieredChunkStore::new(self.tier.clone(), origin).with_puts(self.puts.clone()))
    }
}

/// The path through the shared tier on `nodes` (`host:port`), its calls signed with `credentials`.
pub fn tier_path(nodes: Vec<String>, credentials: Credentials) -> Arc<dyn ChunkPath> {
    let puts = PutSlots::new(ignis_stripes::tiered::DEFAULT_MAX_PUTS);
    Arc::new(TierPath { tier: Arc::new(StripeTier::new(nodes, credentials)), puts })
}

/// `--cache-nodes`, checked: each `HOST:PORT` (a port number), none twice.
pub fn check_cache_nodes(nodes: &[String]) -> Result<(), String> {
    for (i, node) in nodes.iter().enumerate() {
        let valid = node.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !valid {
            return Err(format!("--cache-nodes: {node:?} is not HOST:PORT"));
        }
        if nodes[..i].contains(node) {
            return Err(format!("--cache-nodes: {node} is named twice"));
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::check_cache_nodes;

    #[test]
    fn cache_nodes_are_host_and_port_each_once() {
        let nodes = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_cache_nodes(&[]).is_ok());
        assert!(check_cache_nodes(&nodes(&["127.0.0.1:9200", "cache-2.internal:9200", "[::1]:9200"])).is_ok());
        for bad in ["", "127.0.0.1", ":9200", "host:", "host:0", "host:99999", "http://host:9200", "host:port"] {
            let refused = check_cache_nodes(&nodes(&["a:1", bad])).expect_err(bad);
            assert!(refused.contains("is not HOST:PORT"), "{refused}");
        }
        let twice = check_cache_nodes(&nodes(&["a:1", "b:2", "a:1"])).expect_err("a node named twice");
        assert!(twice.contains("a:1 is named twice"), "{twice}");
    }
}
