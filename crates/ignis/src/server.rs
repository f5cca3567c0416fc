//! `ignis server`: opens storage, registers the administrator's account and
//! key, starts the local worker (unless `--no-local-worker`) and serves the
//! API, to which worker hosts (`ignis worker`) may also join.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use ignis_clock::SharedClock;
use ignis_cluster::Capacity;
use ignis_counting::Limits;
use ignis_frontend::{App, Config, OriginBudget, Services};
use ignis_ids::AccountId;
use ignis_invoke::{Admission, Invoker, Workers};
use ignis_pollers::{Events, Keeper, Mappings};
use ignis_queues::Queues;
use ignis_registry::{
    AccessKey, Accounts, EmbeddedAccounts, EmbeddedLayers, EmbeddedNetworks, EmbeddedRegistry, EmbeddedRuntimes, Layers,
    Networks, Registry, Runtimes,
};
use ignis_sigv4::Credentials;
use ignis_store::Store;
use ignis_chunks::{ChunkError, DirectoryRoots, ObjectStoreUrl, RootStores, S3Options, S3Roots};
use ignis_imagefs::{ImageFs, ImageFsConfig};
use ignis_images::{ACCOUNT_KEY_PURPOSE, AccountKey, AccountKeys, Images, ImagesConfig};
use ignis_worker::images::{BoxFuture, ImageManifest, ManifestSource};
use ignis_worker::{ImageLaunch, Worker, WorkerConfig};

#[derive(clap::Args)]
pub struct ServerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: String,
    /// Where functions, code and logs are kept [default: $XDG_DATA_HOME/ignis or ~/.local/share/ignis].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Seconds an idle sandbox is kept for reuse.
    #[arg(long, default_value_t = 600)]
    pub keep_alive: u64,
    /// The region named in ARNs.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub region: String,
    /// Sandboxes kept ready ahead of time (namespaces, cgroup and network made, no function yet),
    /// so that a cold start only has to give one its function.
    #[arg(long, default_value_t = 2)]
    pub sandbox_pool: usize,
    /// Leave idle sandboxes running instead of freezing them between invocations (to measure what freezing
    /// costs; what a function leaves running then gets CPU between invocations).
    #[arg(long)]
    pub no_freeze: bool,
    /// Every account's concurrency limit (invocations running at once).
    #[arg(long, default_value_t = 1000)]
    pub account_concurrency: u32,
    /// Concurrency that reservations (PutFunctionConcurrency) must leave unreserved in every account.
    #[arg(long, default_value_t = 100)]
    pub min_unreserved: u32,
    /// New sandboxes each function may start per 10 seconds.
    #[arg(long, default_value_t = 1000)]
    pub scale_rate: u32,
    /// Seconds before an asynchronous invocation's first retry after a function error (the second
    /// waits twice this; Lambda waits about 1 and 2 minutes).
    #[arg(long, default_value_t = 60)]
    pub async_retry_delay: u64,
    /// The sandbox init executable [default: ignis-init beside this program].
    #[arg(long, env = "IGNIS_INIT")]
    pub init: Option<PathBuf>,
    /// Run no sandbox in this process: only the API, storage and placement,
    /// for worker hosts that join with `ignis worker --join`.
    #[arg(long)]
    pub no_local_worker: bool,
    /// Memory (MB) the local worker offers sandboxes [default: this machine's].
    #[arg(long)]
    pub worker_memory: Option<u64>,
    /// Time limits of every connection: the API's and the sandboxes' Runtime API's.
    #[command(flatten)]
    pub client_timeouts: ClientTimeouts,
    /// Bytes of logs kept per function (log group): messages plus 128 per event; past it, the
    /// oldest events go first.
    #[arg(long, default_value_t = ignis_logs::DEFAULT_MAX_GROUP_BYTES, value_parser = clap::value_parser!(u64).range(1..))]
    pub log_bytes_per_function: u64,
    /// Serve function URLs on ADDR (HOST:PORT): a request's Host, `<url-id>.lambda-url.<region>.<domain>`, names
    /// the function.
    #[arg(long, value_name = "ADDR")]
    pub url_listen: Option<String>,
    /// The domain of function URLs, `http://<url-id>.lambda-url.<region>.<domain>:<port>/` (`localhost` and its
    /// subdomains resolve to loopback in browsers and curl).
    #[arg(long, value_name = "DOMAIN", default_value = "localhost")]
    pub url_domain: String,
    /// Serve Prometheus metrics at http://ADDR/metrics (a private address: it has no authentication).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Function versions whose metrics get labels of their own (the first ones invoked); every later one's are
    /// summed under `function="_other"`.
    #[arg(long, value_name = "N", default_value_t = ignis_invoke::metrics::DEFAULT_FUNCTION_LABELS)]
    pub metrics_functions: usize,
    /// Queues whose depth gets a label of its own (the first ones seen); every later one's is summed under
    /// `queue="_other"`.
    #[arg(long, value_name = "N", default_value_t = ignis_invoke::metrics::DEFAULT_FUNCTION_LABELS)]
    pub metrics_queues: usize,
    /// How the local worker loads images.
    #[command(flatten)]
    pub image_loading: ImageLoading,
    /// Cache nodes (`ignis cache`) of the shared chunk cache tier, `HOST:PORT,...`: the local worker and every
    /// worker host that joins keep image chunks' stripes on them.
    #[arg(long, value_name = "ADDRS", value_delimiter = ',')]
    pub cache_nodes: Vec<String>,
    /// The runtimes to have installed, `NAME,...` or `none`: each one missing (or built anew since) is built from
    /// what this machine has, into --runtime-cache, and installed before the server says it listens; one this
    /// machine cannot build is skipped with a warning [default: provided.al2023, provided.al2, python3.11,
    /// nodejs20.x].
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub runtimes: Option<Vec<String>>,
    /// Where built runtime bases are kept, shared by every server of the machine.
    #[arg(long, value_name = "DIR", default_value = ignis_runtimes::DEFAULT_CACHE_DIR)]
    pub runtime_cache: PathBuf,
    /// Origin reads at once across the whole cluster: shared evenly by the healthy workers, each of which learns
    /// its share when it registers and at every heartbeat (instead of its own --origin-fetches).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub origin_budget: Option<u64>,
    /// A secret value mixed into every image chunk's encryption salt: chunks are shared only between images
    /// prepared under the same value (and the same chunk store root).
    #[arg(long, env = "IGNIS_CHUNK_SALT", hide_env_values = true)]
    pub chunk_salt: Option<String>,
    /// The sandboxes' network.
    #[command(flatten)]
    pub networking: SandboxNetworking,
    /// Where diagnostics go and how much of them.
    #[command(flatten)]
    pub diagnostics: crate::Diagnostics,
    /// Where image chunks are kept: `file:///PATH` (a directory) or `s3://BUCKET[/PREFIX]` (an S3-compatible
    /// object store; the key from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) [default: <data-dir>/chunks].
    #[arg(long, value_name = "URL")]
    pub object_store: Option<ObjectStoreUrl>,
    /// The S3 service of an `s3://` object store, e.g. http://127.0.0.1:3900 [default: AWS S3].
    #[arg(long, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// The region an `s3://` object store's requests are signed for (Garage's is its `s3_region`).
    #[arg(long, default_value = "us-east-1")]
    pub s3_region: String,
    /// Be one front end of a cluster: keep functions, layers, networks, accounts and keys, concurrency and
    /// asynchronous events in the etcd cluster whose members are at URLS (`http://HOST:PORT,...`), shared with
    /// every other front end started with them; code trees go to --object-store. Needs --master-key-file and
    /// --object-store.
    #[arg(long, value_name = "URLS", value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// With --etcd: the address (`HOST:PORT`) the other front ends reach this one's API at, to forward the
    /// invocations of the functions whose partition this one leads [default: the address listened on, unless
    /// that is every address].
    #[arg(long, value_name = "ADDR")]
    pub advertise: Option<String>,
    /// The master key (32 bytes) that seals secrets, instead of one made in the data directory: every front end
    /// of a cluster must have the same. Copied into a data directory that has none; refused if it has another.
    #[arg(long, value_name = "PATH")]
    pub master_key_file: Option<PathBuf>,
}

/// Time limits of the connections a server or worker serves.
#[derive(clap::Args)]
pub struct ClientTimeouts {
    /// Seconds a client may take to send a request's headers, from their first byte.
    #[arg(long, default_value_t = 30)]
    pub header_timeout: u64,
    /// Seconds a request's body may stop before its connection is closed.
    #[arg(long, default_value_t = 30)]
    pub body_timeout: u64,
    /// Seconds a kept-alive connection may stay idle (no request in flight, nothing sent either way).
    #[arg(long, default_value_t = 75)]
    pub idle_timeout: u64,
}

impl ClientTimeouts {
    pub fn limits(&self) -> Result<ignis_worker::conn::Limits, String> {
        ignis_worker::conn::Limits::from_secs(self.header_timeout, self.body_timeout, self.idle_timeout)
            .map_err(|e| format!("--header-timeout/--body-timeout/--idle-timeout: {e}"))
    }
}

/// Whether sandboxes reach the network, and what they may reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Egress {
    /// A link to the host, routed and masqueraded out (as Lambda functions outside a VPC reach the internet).
    All,
    /// Only `lo` in each sandbox.
    None,
}

/// The sandboxes' network (see `ignis_net`).
#[derive(clap::Args)]
pub struct SandboxNetworking {
    /// Whether sandboxes reach the network: `all` gives each a routed link to the host, behind a firewall that keeps
    /// the host, other sandboxes, link-local addresses and the private ranges out of reach; `none` keeps only `lo`.
    #[arg(long, value_enum, default_value_t = Egress::All)]
    pub egress: Egress,
    /// The sandboxes' addresses, a private range from /8 to /20 [default: 10.213.0.0/16].
    #[arg(long, value_name = "CIDR")]
    pub sandbox_network: Option<ipnet::Ipv4Net>,
    /// A private range every sandbox may reach all the same (repeatable).
    #[arg(long, value_name = "CIDR")]
    pub egress_allow: Vec<ipnet::Ipv4Net>,
    /// A resolver the sandboxes' DNS queries go to, `IP[:PORT]` (repeatable) [default: the host's, from
    /// /etc/resolv.conf].
    #[arg(long, value_name = "ADDR", value_parser = parse_resolver)]
    pub sandbox_dns: Vec<std::net::SocketAddr>,
}

fn parse_resolver(text: &str) -> Result<std::net::SocketAddr, String> {
    text.parse::<std::net::SocketAddr>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(|ip| std::net::SocketAddr::new(ip, 53)))
        .map_err(|_| format!("{text:?} is not IP or IP:PORT"))
}

impl SandboxNetworking {
    /// The worker's network configuration (`None` with `--egress none`), with Ignis's API reachable on the
    /// sandboxes' gateway as `endpoint` says.
    pub fn config(&self, endpoint: Option<ignis_net::Endpoint>) -> Result<Option<ignis_net::Config>, String> {
        if self.egress == Egress::None {
            if self.sandbox_network.is_some() || !self.egress_allow.is_empty() || !self.sandbox_dns.is_empty() {
                return Err("--sandbox-network, --egress-allow and --sandbox-dns need --egress all".into());
            }
            return Ok(None);
        }
        let range = match self.sandbox_network {
            Some(range) => range,
            None => ignis_net::plan::DEFAULT_RANGE.parse().map_err(|e| format!("{e}"))?,
        };
        ignis_net::plan::Plan::new(range).map_err(|e| format!("--sandbox-network: {e}"))?;
        Ok(Some(ignis_net::Config { range, allow: self.egress_allow.clone(), dns: self.sandbox_dns.clone(), endpoint }))
    }
}

/// Ignis's API on the sandboxes' gateway, at the port the API listens on: relayed there unless it already listens on
/// every address.
pub fn endpoint_for(api: std::net::SocketAddr) -> ignis_net::Endpoint {
    let relay_to = (!api.ip().is_unspecified()).then(|| api.to_string()).into_iter().collect();
    ignis_net::Endpoint { port: api.port(), relay_to }
}

/// How a worker loads images: its chunk cache, and its reads of the chunk store of record (the origin).
#[derive(clap::Args)]
pub struct ImageLoading {
    /// MiB of image chunks kept on disk (`<data-dir>/image-cache`).
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..))]
    pub image_cache_mb: u64,
    /// MiB of image chunks kept in memory, in front of those on disk.
    #[arg(long, default_value_t = ignis_imagefs::DEFAULT_MEMORY_BYTES >> 20)]
    pub image_memory_cache_mb: u64,
    /// Reads of the chunk store of record at once (below every cache tier).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub origin_fetches: u64,
    /// Seconds a sandbox start that must mount its image waits while the chunk store is read as fast as
    /// `--origin-fetches` allows, before it is refused (TooManyRequestsException).
    #[arg(long, default_value_t = 5)]
    pub origin_start_wait: u64,
}

impl ImageLoading {
    /// The image loader's configuration for a worker whose data directory is `data_dir`.
    pub fn fs_config(&self, data_dir: &Path) -> ImageFsConfig {
        let mut config = ImageFsConfig::new(data_dir.join("image-cache"), self.image_cache_mb << 20);
        config.memory_bytes = self.image_memory_cache_mb << 20;
        config.starts_dir = Some(data_dir.join("image-starts"));
        config
    }

    pub fn origin_start_wait(&self) -> Duration {
        Duration::from_secs(self.origin_start_wait)
    }
}

/// The key pair file the server writes and the CLI reads.
pub const CREDENTIALS_FILE: &str = "credentials";

pub fn run(args: ServerArgs) -> Result<ExitCode, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("ignis server must run as root: it builds sandboxes with namespaces and cgroups".into());
    }
    if args.min_unreserved > args.account_concurrency {
        return Err(format!(
            "--min-unreserved ({}) must not be above --account-concurrency ({})",
            args.min_unreserved, args.account_concurrency
        ));
    }
    let client_limits = args.client_timeouts.limits()?;
    crate::cache::check_cache_nodes(&args.cache_nodes)?;
    if !args.etcd.is_empty() && (args.master_key_file.is_none() || args.object_store.is_none()) {
        return Err("--etcd needs --master-key-file (every front end seals secrets with the same key) and \
                    --object-store (an s3:// store or a file:/// directory every front end shares: code goes there)"
            .into());
    }
    if args.advertise.is_some() && args.etcd.is_empty() {
        return Err("--advertise is the address of a cluster's front end: it needs --etcd".into());
    }
    let every_address = args.listen.parse::<std::net::SocketAddr>().is_ok_and(|a| a.ip().is_unspecified());
    if !args.etcd.is_empty() && args.advertise.is_none() && every_address {
        return Err(format!(
            "--listen {} is every address: give --advertise HOST:PORT, where the other front ends reach this one",
            args.listen
        ));
    }
    let data_dir = args.data_dir.clone().unwrap_or_else(crate::default_data_dir);
    std::fs::create_dir_all(&data_dir).map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    if let Some(path) = &args.master_key_file {
        install_master_key(&data_dir, path)?;
    }
    let store = Arc::new(Store::open(&data_dir).map_err(|e| format!("cannot open {}: {e}", data_dir.display()))?);
    let clock = ignis_clock::SystemClock::shared();
    let init_exe = crate::init_exe(args.init.clone())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        let cluster = match args.etcd.is_empty() {
            true => None,
            false => Some(Cluster::join(&args, &data_dir, &store).await?),
        };
        let (accounts, admin_account, cluster_accounts) = match &cluster {
            None => {
                let accounts = EmbeddedAccounts::open(store.clone(), clock.clone())
                    .map_err(|e| format!("cannot open {}: {e}", data_dir.display()))?;
                (Arc::new(accounts) as Arc<dyn Accounts>, admin_account_id(&store)?, None)
            }
            Some(cluster) => {
                let accounts = Arc::new(
                    ignis_etcd::EtcdAccounts::open(cluster.etcd.clone(), &store, clock.clone())
                        .await
                        .map_err(|e| format!("cannot load the accounts from etcd: {e}"))?,
                );
                let admin = accounts.admin_account().await.map_err(|e| format!("cannot read the administrator account from etcd: {e}"))?;
                (accounts.clone() as Arc<dyn Accounts>, admin, Some(accounts))
            }
        };
        let credentials = match given_credentials(&data_dir)? {
            Some(credentials) => credentials,
            None => made_credentials(&data_dir, &admin_account, cluster_accounts.as_deref()).await?,
        };
        if let Some(listen) = &args.metrics_listen {
            crate::metrics::serve(listen)?;
        }
        register_admin_key(&*accounts, &admin_account, credentials.clone()).await?;
        // A cluster's repositories: records in etcd, bytes in the object store.
        let oci = match &cluster {
            None => ignis_oci::Oci::open(store.clone(), clock.clone()),
            Some(cluster) => {
                let index = ignis_etcd::EtcdIndex::open(cluster.etcd.clone())
                    .await
                    .map_err(|e| format!("cannot load the image repositories from etcd: {e}"))?;
                let contents = ignis_etcd::EtcdContents::new(cluster.etcd.clone(), &*open_roots(&args, &data_dir)?)
                    .map_err(|e| e.to_string())?;
                let limits = ignis_oci::Limits::default();
                ignis_oci::Oci::shared(&store, limits, clock.clone(), Arc::new(index), Some(Arc::new(contents)))
            }
        };
        let oci = Arc::new(oci.map_err(|e| format!("cannot open the image repositories: {e}"))?);
        let images = open_images(&args, &data_dir, &store, &oci, &accounts, &clock)?;
        let (log_tx, log_rx) = tokio::sync::mpsc::channel(1024);
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        let advertised = args.advertise.clone().unwrap_or_else(|| address.to_string());
        if let Some(cluster) = &cluster {
            cluster.presence.advertise(&advertised).await.map_err(|e| format!("cannot list this front end in etcd: {e}"))?;
        }
        let url_listener = match &args.url_listen {
            Some(listen) => Some(bind_urls(listen, &args.url_domain).await?),
            None => None,
        };
        let network = args.networking.config(Some(endpoint_for(address)))?;
        // A cluster's other front ends, asked for the prepared images this one does not have, and for their logs.
        let front_ends = cluster.as_ref().map(|cluster| {
            Arc::new(FrontEndPeers {
                address: advertised.clone(),
                members: cluster.members.clone(),
                presence: cluster.presence.clone(),
                credentials: credentials.clone(),
                clients: Default::default(),
            })
        });
        // The local worker's origin limit, which a cluster-wide budget sets.
        let mut local_origin = None;
        let local = if args.no_local_worker {
            None
        } else {
            let worker_config =
                WorkerConfig {
                    state_dir: data_dir.join("run"),
                    init_exe,
                    spawners: 2,
                    pool_size: args.sandbox_pool,
                    freeze: !args.no_freeze,
                    client_limits,
                    network,
                };
            let worker = Arc::new(Worker::new(worker_config, log_tx.clone()).map_err(|e| e.to_string())?);
            let code_users = Arc::downgrade(&worker);
            store.on_code_removed(move |dir| {
                if let Some(worker) = code_users.upgrade() {
                    worker.forget_code(dir);
                }
            });
            let loading = &args.image_loading;
            let fs = ImageFs::new(loading.fs_config(&data_dir), tokio::runtime::Handle::current())
                .map_err(|e| format!("cannot start the image loader: {e}"))?;
            let manifests = Arc::new(LocalManifests { images: images.clone(), front_ends: front_ends.clone() });
            let origin = ignis_chunks::OriginLimit::new(loading.origin_fetches as usize, clock.clone());
            local_origin = Some(origin.clone());
            let loader = ignis_worker::images::Images::new(Arc::new(fs), manifests, origin, loading.origin_start_wait());
            if !args.cache_nodes.is_empty() {
                loader.set_path(crate::cache::tier_path(args.cache_nodes.clone(), credentials.clone()));
            }
            worker.set_images(Arc::new(loader));
            Some((worker, Capacity::of_this_host(args.worker_memory)))
        };
        // In a cluster, each sandbox this front end starts on a worker host is its own: the host ends it when this
        // front end is gone.
        let owner = cluster.as_ref().map(|cluster| {
            let presence = Arc::downgrade(&cluster.presence);
            Arc::new(move || presence.upgrade().map(|presence| presence.owner())) as ignis_cluster::owner::OwnerSource
        });
        let workers = Workers::owned_hosts(local, credentials.clone(), owner, log_tx);
        let logs = ignis_logs::Logs::start(store.clone(), clock.clone(), args.log_bytes_per_function, log_rx)
            .map_err(|e| e.to_string())?;
        tokio::spawn(publish_store_size(Arc::downgrade(&images)));
        let presence = cluster.as_ref().map(|cluster| cluster.presence.clone());
        let services =
            services(&args, cluster, store, accounts, workers, logs, oci, images, &credentials, clock.clone()).await?;
        let config = Config {
            region: args.region.clone(),
            admin_account,
            min_unreserved: args.min_unreserved,
            clock,
            cache_nodes: args.cache_nodes.clone(),
            origin_budget: args.origin_budget.map(|total| {
                // Alone until a worker host joins: the whole budget.
                if let Some(local) = &local_origin {
                    local.set_limit(total as usize);
                }
                OriginBudget { total: total as usize, local: local_origin }
            }),
            function_urls: url_listener.as_ref().map(|(_, host)| host.clone()),
            front_ends: front_ends.map(|peers| peers as Arc<dyn ignis_frontend::OtherFrontEnds>),
        };
        let app = App::new(config, services);
        let serving = tokio::spawn(ignis_frontend::serve(app.clone(), listener, client_limits, shutdown_signal()));
        if let Some((url_listener, host)) = url_listener {
            tokio::spawn(ignis_frontend::serve_urls(app.clone(), url_listener, client_limits, shutdown_signal()));
            println!("ignis: function URLs on http://<url-id>.lambda-url.{}.{}:{}/", args.region, host.domain, host.port);
        }
        let wanted = match &args.runtimes {
            Some(names) if names.iter().any(|name| name == "none") => Vec::new(),
            Some(names) => names.clone(),
            None => ignis_runtimes::defaults().iter().map(|name| name.to_string()).collect(),
        };
        let installer = crate::client::Installer {
            endpoint: format!("http://{address}"),
            credentials: credentials.clone(),
            region: args.region.clone(),
            cache_dir: args.runtime_cache.clone(),
        };
        tokio::task::spawn_blocking(move || installer.install_missing(&wanted)).await.map_err(|e| e.to_string())?;
        match ignis_frontend::adopt_bases(&app).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(functions = n, "functions stored without a runtime base now have their runtime's"),
            Err(e) => tracing::warn!(error = %e, "functions stored without a runtime base keep running on the host's /usr"),
        }
        println!("ignis: listening on http://{address} (data in {})", data_dir.display());
        if let Err(e) = serving.await {
            tracing::error!(error = %e, "the API server failed");
        }
        tracing::info!("shutting down");
        app.shutdown().await;
        if let Some(presence) = presence {
            // This front end's concurrency blocks go back, and its pending events go to another front end, now.
            presence.leave().await;
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// A front end's part of a cluster (`--etcd`): the connection, and the code trees shared through the object store.
struct Cluster {
    etcd: ignis_etcd::Etcd,
    code: Arc<ignis_etcd::CodeShare>,
    /// This front end's etcd lease.
    presence: Arc<ignis_etcd::Presence>,
    /// The front ends and worker hosts listed, followed into memory.
    members: Arc<ignis_etcd::EtcdMembership>,
}

impl Cluster {
    async fn join(args: &ServerArgs, data_dir: &Path, store: &Arc<Store>) -> Result<Cluster, String> {
        let etcd = ignis_etcd::Etcd::connect(&args.etcd)
            .await
            .map_err(|e| format!("cannot reach etcd at {}: {e}", args.etcd.join(",")))?;
        let code = Arc::new(ignis_etcd::CodeShare::new(etcd.clone(), store.clone(), open_roots(args, data_dir)?));
        let presence =
            Arc::new(ignis_etcd::Presence::start(etcd.clone()).await.map_err(|e| format!("cannot take an etcd lease: {e}"))?);
        // etcd's history, which every write adds to, is compacted by one front end at a time.
        ignis_etcd::compaction::start_compaction(etcd.clone(), &presence);
        // The worker hosts: members in etcd, each under a lease its heartbeats (through any front end) renew; and
        // the front ends, listed under theirs.
        let members = ignis_etcd::EtcdMembership::start(etcd.clone(), ignis_cluster::HEARTBEAT_TIMEOUT)
            .await
            .map_err(|e| format!("cannot follow the cluster's members: {e}"))?;
        Ok(Cluster { etcd, code, presence, members: Arc::new(members) })
    }
}

/// Makes `path` the master key of `data_dir`: copied there if it has none; refused if it has another.
fn install_master_key(data_dir: &Path, path: &Path) -> Result<(), String> {
    let key = std::fs::read(path).map_err(|e| format!("cannot read --master-key-file {}: {e}", path.display()))?;
    if key.len() != 32 {
        return Err(format!("--master-key-file {} holds {} bytes, not 32", path.display(), key.len()));
    }
    let installed = data_dir.join(ignis_store::MASTER_KEY_FILE);
    match std::fs::read(&installed) {
        Ok(existing) if existing == key => Ok(()),
        Ok(_) => Err(format!(
            "{} holds another master key than --master-key-file {}: the secrets sealed under it would not open",
            installed.display(),
            path.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write_private(&installed, &key).map_err(|e| format!("cannot write {}: {e}", installed.display()))
        }
        Err(e) => Err(format!("cannot read {}: {e}", installed.display())),
    }
}

/// The services of this front end: the one place their implementations are
/// chosen (the front end takes them through their traits and handles). The
/// registry, layers, networks and counter are etcd's in a cluster, the
/// embedded store's otherwise.
#[allow(clippy::too_many_arguments)]
async fn services(
    args: &ServerArgs,
    cluster: Option<Cluster>,
    store: Arc<Store>,
    accounts: Arc<dyn Accounts>,
    workers: Workers,
    logs: ignis_logs::Logs,
    oci: Arc<ignis_oci::Oci>,
    images: Arc<Images>,
    credentials: &Credentials,
    clock: SharedClock,
) -> Result<Services, String> {
    let limits = Limits { concurrency: args.account_concurrency, min_unreserved: args.min_unreserved };
    let (layers, networks): (Arc<dyn Layers>, Arc<dyn Networks>) = match &cluster {
        None => (
            Arc::new(EmbeddedLayers::load(store.clone()).map_err(|e| format!("cannot load the layers: {e}"))?),
            Arc::new(EmbeddedNetworks::load(store.clone()).map_err(|e| format!("cannot load the networks: {e}"))?),
        ),
        Some(cluster) => (
            Arc::new(
                ignis_etcd::EtcdLayers::open(cluster.etcd.clone(), store.clone(), cluster.code.clone(), &args.region)
                    .await
                    .map_err(|e| format!("cannot load the layers from etcd: {e}"))?,
            ),
            Arc::new(
                ignis_etcd::EtcdNetworks::open(cluster.etcd.clone(), store.clone(), cluster.code.clone())
                    .await
                    .map_err(|e| format!("cannot load the networks from etcd: {e}"))?,
            ),
        ),
    };
    // A cluster's registry, which hears of changes made through the other front ends.
    let mut changes = None;
    let (registry, admission): (Arc<dyn Registry>, _) = match &cluster {
        None => {
            let registry = EmbeddedRegistry::load(store.clone()).map_err(|e| format!("cannot load the functions: {e}"))?;
            let admission = Admission::new(limits, args.scale_rate, clock.clone());
            for (account, record) in registry.all() {
                if let Some(reserved) = record.reserved_concurrency
                    && let Err(e) = admission.set_reservation(account.as_str(), &record.name, reserved)
                {
                    // The limits were lowered since: the function runs unreserved until it is set again.
                    tracing::warn!(%account, function = %record.name, reserved, error = %e, "the reservation does not fit the limits, ignored");
                }
            }
            (Arc::new(registry), admission)
        }
        Some(cluster) => {
            let etcd_registry = Arc::new(
                ignis_etcd::EtcdRegistry::open(cluster.etcd.clone(), store.clone(), cluster.code.clone(), &args.region)
                    .await
                    .map_err(|e| format!("cannot load the functions from etcd: {e}"))?,
            );
            changes = Some(etcd_registry.clone());
            let registry: Arc<dyn Registry> = etcd_registry;
            // Counted cluster-wide; reservations are the records'.
            let counter = ignis_etcd::EtcdCounter::start(cluster.etcd.clone(), cluster.presence.clone(), limits, registry.clone())
                .await
                .map_err(|e| format!("cannot join the cluster's counting: {e}"))?;
            (registry, Admission::over(Arc::new(counter), args.scale_rate, clock.clone()))
        }
    };
    if let Some(cluster) = &cluster {
        // Shipped trees no function or layer version names any more leave the object store.
        let (registry, layers) = (registry.clone(), layers.clone());
        let live = move || {
            let mut live = registry.live_code();
            live.extend(layers.live_code());
            live
        };
        ignis_etcd::code::start_collection(&cluster.code, cluster.presence.clone(), live, clock.clone());
    }
    // No sandbox runs yet, so no code tree is in use but the functions' and the layer versions'.
    let mut live = registry.live_code();
    live.extend(layers.live_code());
    store.remove_unused_code(&live).map_err(|e| e.to_string())?;
    let keep_alive = Duration::from_secs(args.keep_alive);
    // A cluster's worker hosts are its members'.
    let mut membership = None;
    let mut assignment = None;
    let invoker = match &cluster {
        None => Invoker::new(workers, admission, keep_alive, clock.clone()),
        Some(cluster) => {
            let members = cluster.members.clone();
            membership = Some(members.clone());
            let invoker = Invoker::with_membership(workers, admission, members.clone(), keep_alive, clock.clone());
            // A function's invocations run on the front end leading its partition.
            let partitions =
                ignis_etcd::Partitions::start(cluster.etcd.clone(), cluster.presence.clone(), members, credentials.clone())
                    .await
                    .map_err(|e| format!("cannot follow the cluster's assignment partitions: {e}"))?;
            start_taking_over(&invoker, &partitions, registry.clone());
            invoker.set_assignment(partitions.clone());
            assignment = Some(partitions);
            invoker
        }
    };
    if let Some(changes) = changes {
        // A function changed or deleted through another front end: its sandboxes here that run nothing any more go.
        let invoker = Arc::downgrade(&invoker);
        changes.on_change(Box::new(move |account, old, new| {
            if let Some(invoker) = invoker.upgrade() {
                for revision in ignis_invoke::from_record::retired(account.as_str(), old, new) {
                    invoker.retire(&revision);
                }
            }
        }));
    }
    invoker.cap_function_labels(args.metrics_functions);
    // Every sandbox gets session credentials for its function's account (its worker says where it reaches the API).
    invoker.set_credential_source(Arc::new(ignis_registry::Sessions::new(accounts.clone(), registry.clone())));
    // A cluster's queues and mappings are in etcd, written only by the front end serving them.
    let fence = ignis_etcd::queue_home::queues_fence();
    let queues = match &cluster {
        None => Queues::load(store.clone(), args.region.clone(), clock.clone()),
        Some(cluster) => {
            let storage = ignis_etcd::EtcdQueueStorage::new(cluster.etcd.clone(), fence.clone(), tokio::runtime::Handle::current());
            Queues::standby(Arc::new(storage), args.region.clone(), clock.clone())
        }
    }
    .map_err(|e| e.to_string())?;
    if args.metrics_listen.is_some() {
        tokio::spawn(publish_queue_depths(Arc::downgrade(&queues), args.metrics_queues));
    }
    let pollers = ignis_pollers::Services {
        registry: registry.clone(),
        networks: networks.clone(),
        invoker: invoker.clone(),
        queues: queues.clone(),
        store: store.clone(),
        clock,
        region: args.region.clone(),
    };
    let retry_delay = Duration::from_secs(args.async_retry_delay);
    let events = match &cluster {
        None => Events::start(pollers.clone(), retry_delay).map_err(|e| e.to_string())?,
        Some(cluster) => {
            // In etcd under this start's own origin; a dead front end's events are adopted by a live one.
            let origin = uuid::Uuid::new_v4().simple().to_string();
            let storage = ignis_etcd::EtcdEventStorage::new(cluster.etcd.clone(), origin.clone(), tokio::runtime::Handle::current());
            let events = Events::start_with(pollers.clone(), Arc::new(storage), retry_delay).map_err(|e| e.to_string())?;
            ignis_etcd::start_adoption(cluster.etcd.clone(), cluster.presence.clone(), origin, Arc::downgrade(&events))
                .await
                .map_err(|e| format!("cannot join the cluster's asynchronous events: {e}"))?;
            events
        }
    };
    // A mapping deletes what it processed only once the invocation's log lines are committed.
    let barrier = logs.barrier();
    let log_barrier: ignis_pollers::LogBarrier = Arc::new(move || {
        let barrier = barrier.clone();
        Box::pin(async move { barrier.written().await })
    });
    let mappings = match (&cluster, membership, assignment) {
        (Some(cluster), Some(membership), Some(partitions)) => {
            let storage = ignis_etcd::EtcdMappingStorage::new(cluster.etcd.clone(), fence.clone(), tokio::runtime::Handle::current());
            let mappings = Mappings::standby(pollers.clone(), Arc::new(storage), log_barrier);
            // One front end at a time serves the queues and the mappings' calls; the others hand it theirs.
            let etcd = cluster.etcd.clone();
            ignis_etcd::QueueLeadership::start(etcd, cluster.presence.clone(), membership, credentials.clone(), fence, &queues, &mappings)
                .await
                .map_err(|e| format!("cannot follow who serves the cluster's queues: {e}"))?;
            // Each mapping's pollers run on the front end leading its function's partition.
            ignis_etcd::PollerLeases::start(cluster.etcd.clone(), cluster.presence.clone(), partitions, &mappings)
                .await
                .map_err(|e| format!("cannot follow the cluster's event source mappings: {e}"))?;
            mappings
        }
        _ => Mappings::start(pollers.clone(), log_barrier).map_err(|e| e.to_string())?,
    };
    let provisioning = Keeper::start(pollers);
    let runtimes: Arc<dyn Runtimes> =
        Arc::new(EmbeddedRuntimes::load(store.clone()).map_err(|e| format!("cannot load the runtimes: {e}"))?);
    Ok(Services {
        store, registry, layers, accounts, invoker, queues, events, mappings, provisioning, logs, oci, images, runtimes,
        networks,
    })
}

/// How many times, a second apart, a front end looks for sandboxes to take over after it claimed a partition or
/// saw a front end leave: a worker host may see the dead front end gone a little later than it, and a sandbox busy
/// at the first look may be idle at the next (within `ignis_cluster::owner::ADOPTION_GRACE`).
const TAKE_OVER_LOOKS: usize = 4;

/// Takes over, into `invoker`'s table, the sandboxes a front end that is gone (or gave a partition up) left on the
/// worker hosts: those of revisions this front end runs, of functions whose partition it leads (see
/// `ignis_cluster::owner`); and gives up its own of the partitions it gives up.
fn start_taking_over(invoker: &Arc<Invoker>, partitions: &Arc<ignis_etcd::Partitions>, registry: Arc<dyn Registry>) {
    // What this front end gives up goes to the new leader warm.
    let releasing = Arc::downgrade(invoker);
    partitions.on_release(Arc::new(move |released: Vec<u32>| {
        let Some(invoker) = releasing.upgrade() else { return };
        tokio::spawn(async move {
            let wanted = |revision: &ignis_ids::Revision| {
                released.contains(&ignis_etcd::partitions::partition_of(revision.account.as_str(), &revision.function))
            };
            invoker.release(&wanted).await;
        });
    }));
    let wake = Arc::new(tokio::sync::Notify::new());
    let notify = wake.clone();
    partitions.on_change(Arc::new(move || notify.notify_one()));
    let (invoker, partitions) = (Arc::downgrade(invoker), Arc::downgrade(partitions));
    tokio::spawn(async move {
        loop {
            wake.notified().await;
            for _ in 0..TAKE_OVER_LOOKS {
                let (Some(invoker), Some(partitions)) = (invoker.upgrade(), partitions.upgrade()) else { return };
                let wanted = |revision: &ignis_ids::Revision| {
                    partitions.leads(revision.account.as_str(), &revision.function)
                        && registry
                            .get(&revision.account, &revision.function)
                            .is_some_and(|record| ignis_invoke::from_record::runs(&record, &revision.revision_id))
                };
                invoker.adopt(&wanted).await;
                drop((invoker, partitions));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    });
}

/// The chunk store's roots that `--object-store` names (`<data-dir>/chunks` if none).
fn open_roots(args: &ServerArgs, data_dir: &Path) -> Result<Arc<dyn RootStores>, String> {
    let opened = |e: ChunkError| format!("cannot open the chunk store: {e}");
    let url = args.object_store.clone().unwrap_or_else(|| ObjectStoreUrl::Directory(data_dir.join("chunks")));
    match (url, &args.s3_endpoint) {
        (ObjectStoreUrl::Directory(_), Some(_)) => Err("--s3-endpoint is for an s3:// --object-store".into()),
        (ObjectStoreUrl::Directory(dir), None) => Ok(Arc::new(DirectoryRoots::new(dir).map_err(opened)?)),
        (ObjectStoreUrl::S3 { bucket, prefix }, endpoint) => {
            let env = |name: &str| match std::env::var(name) {
                Ok(value) if !value.is_empty() => Ok(value),
                _ => Err(format!("an s3:// --object-store needs {name} in the environment")),
            };
            if let Some(endpoint) = endpoint
                && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
            {
                return Err(format!("--s3-endpoint {endpoint:?}: not an http:// or https:// URL"));
            }
            let (key, secret) = (env("AWS_ACCESS_KEY_ID")?, env("AWS_SECRET_ACCESS_KEY")?);
            let mut options = S3Options::new(&bucket, &prefix, &args.s3_region, &key, &secret);
            if let Some(endpoint) = endpoint {
                options = options.with_endpoint(endpoint);
            }
            Ok(Arc::new(S3Roots::new(options).map_err(opened)?))
        }
    }
}

/// The images service over the chunk store `--object-store` names (a directory or a prefix per root).
fn open_images(
    args: &ServerArgs,
    data_dir: &Path,
    store: &Arc<Store>,
    oci: &Arc<ignis_oci::Oci>,
    accounts: &Arc<dyn Accounts>,
    clock: &SharedClock,
) -> Result<Arc<Images>, String> {
    let roots = open_roots(args, data_dir)?;
    let keys: AccountKeys = {
        let accounts = accounts.clone();
        Arc::new(move |account: &AccountId| AccountKey::from_bytes(accounts.data_key(account, ACCOUNT_KEY_PURPOSE)))
    };
    let config = ImagesConfig {
        work_dir: data_dir.join("images-work"),
        operator_salt: args.chunk_salt.as_ref().map(|salt| salt.as_bytes().to_vec()),
        prepare: Default::default(),
    };
    Images::open(store.clone(), oci.clone(), roots, keys, clock.clone(), config)
        .map_err(|e| format!("cannot open the images: {e}"))
}

/// The local worker's image manifests: the images service itself (an image
/// that garbage collection forgot is prepared again), else, in a cluster, the
/// other front ends' (an image pushed through another).
struct LocalManifests {
    images: Arc<Images>,
    front_ends: Option<Arc<FrontEndPeers>>,
}

impl ManifestSource for LocalManifests {
    fn manifest<'a>(&'a self, account: &'a str, image: &'a ImageLaunch) -> BoxFuture<'a, Result<ImageManifest, String>> {
        Box::pin(async move {
            let found = match self.images.prepared(&AccountId::new(account), &image.repository, &image.digest).await {
                Ok(found) => found,
                Err(e) => {
                    let Some(front_ends) = &self.front_ends else { return Err(e.to_string()) };
                    for other in ignis_frontend::OtherFrontEnds::others(&**front_ends).await {
                        if let Ok(manifest) = ignis_cluster::fetch_manifest(&other, account, image, true).await {
                            return Ok(manifest);
                        }
                    }
                    return Err(e.to_string());
                }
            };
            let chunks = self.images.reader(&found.root).map_err(|e| e.to_string())?;
            Ok(ImageManifest { id: found.id, manifest: (*found.manifest).clone(), key: found.key, chunks })
        })
    }
}

/// A cluster's other front ends, as the membership's memory lists them (asked for what this one lacks, and for their
/// logs), each reached by one client.
struct FrontEndPeers {
    /// This front end's advertised address.
    address: String,
    members: Arc<ignis_etcd::EtcdMembership>,
    presence: Arc<ignis_etcd::Presence>,
    credentials: Credentials,
    clients: std::sync::Mutex<std::collections::HashMap<String, Arc<ignis_cluster::Peer>>>,
}

impl ignis_frontend::OtherFrontEnds for FrontEndPeers {
    fn others(&self) -> BoxFuture<'_, Vec<Arc<ignis_cluster::Peer>>> {
        Box::pin(async move {
            let me = self.presence.id();
            let listed = self.members.front_ends_reached();
            let addresses: Vec<String> = listed.into_iter().filter(|(lease, _)| *lease != me).map(|(_, address)| address).collect();
            let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
            clients.retain(|address, _| addresses.contains(address));
            addresses
                .iter()
                .map(|address| {
                    let made = || Arc::new(ignis_cluster::Peer::new(address, self.credentials.clone()));
                    clients.entry(address.clone()).or_insert_with(made).clone()
                })
                .collect()
        })
    }

    fn me(&self) -> &str {
        &self.address
    }
}

/// Keeps `ignis_chunk_store_bytes` current while the images service lives.
async fn publish_store_size(images: std::sync::Weak<Images>) {
    let mut every = tokio::time::interval(STORE_SIZE_EVERY);
    loop {
        every.tick().await;
        let Some(images) = images.upgrade() else { return };
        match images.stored().await {
            Ok(size) => metrics::gauge!("ignis_chunk_store_bytes").set(size.bytes as f64),
            Err(e) => tracing::warn!(error = %e, "cannot measure the chunk store"),
        }
    }
}

/// How often the chunk store's size is measured for the metrics.
const STORE_SIZE_EVERY: Duration = Duration::from_secs(5);

/// Keeps `ignis_queue_messages{queue}` current (every [`STORE_SIZE_EVERY`]) while the queues live.
async fn publish_queue_depths(queues: std::sync::Weak<Queues>, limit: usize) {
    let mut gauges = crate::metrics::QueueDepths::new(limit);
    let mut every = tokio::time::interval(STORE_SIZE_EVERY);
    loop {
        every.tick().await;
        let Some(queues) = queues.upgrade() else { return };
        gauges.publish(queues.depths());
    }
}

/// The listener of `--url-listen` and where its URLs are.
async fn bind_urls(listen: &str, domain: &str) -> Result<(tokio::net::TcpListener, ignis_frontend::UrlHost), String> {
    let valid = !domain.is_empty()
        && domain.len() <= 200
        && domain.split('.').all(|label| {
            !label.is_empty() && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if !valid {
        return Err(format!("--url-domain must be a lowercase DNS name, not {domain:?}"));
    }
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("cannot serve function URLs on {listen}: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    Ok((listener, ignis_frontend::UrlHost { domain: domain.to_string(), port }))
}

pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// The administrator key pair this server is given: from the environment, else the data directory's credentials
/// file (`None`: neither). The file holds the secret sealed under the data directory's master key
/// (`SealedSecretAccessKey`); a file from before that, with the secret in plain text, is rewritten sealed.
fn given_credentials(data_dir: &Path) -> Result<Option<Credentials>, String> {
    if let (Ok(id), Ok(secret)) = (std::env::var("IGNIS_ACCESS_KEY_ID"), std::env::var("IGNIS_SECRET_ACCESS_KEY")) {
        if !id.is_empty() && !secret.is_empty() {
            return Ok(Some(Credentials { access_key_id: id, secret_access_key: secret }));
        }
    }
    let path = data_dir.join(CREDENTIALS_FILE);
    let Ok(text) = std::fs::read(&path) else { return Ok(None) };
    let value: serde_json::Value = serde_json::from_slice(&text).map_err(|e| format!("{} is not valid JSON: {e}", path.display()))?;
    let field = |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::to_string);
    match (field("AccessKeyId"), field("SealedSecretAccessKey"), field("SecretAccessKey")) {
        (Some(access_key_id), Some(sealed), _) => {
            let secret_access_key =
                ignis_store::open_file_secret(data_dir, &access_key_id, &sealed).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(Some(Credentials { access_key_id, secret_access_key }))
        }
        (Some(access_key_id), None, Some(secret_access_key)) => {
            let credentials = Credentials { access_key_id, secret_access_key };
            write_credentials(data_dir, &credentials)?;
            Ok(Some(credentials))
        }
        _ => Err(format!("{} lacks AccessKeyId or SealedSecretAccessKey", path.display())),
    }
}

/// The administrator key pair when none is given: a new pair for `admin_account`; in a cluster, the cluster's (the
/// one stored, or this new one if no front end stored one first). Written to the credentials file, and printed if
/// it is new.
async fn made_credentials(
    data_dir: &Path,
    admin_account: &AccountId,
    cluster: Option<&ignis_etcd::EtcdAccounts>,
) -> Result<Credentials, String> {
    let made = AccessKey::generate(admin_account.clone(), true);
    let key = match cluster {
        Some(accounts) => accounts
            .administrator("admin", made.clone())
            .await
            .map_err(|e| format!("cannot agree on the cluster's administrator key: {e}"))?,
        None => made.clone(),
    };
    let credentials = Credentials { access_key_id: key.access_key_id, secret_access_key: key.secret_access_key };
    write_credentials(data_dir, &credentials)?;
    if credentials.access_key_id == made.access_key_id {
        let path = data_dir.join(CREDENTIALS_FILE);
        println!("ignis: generated an administrator key pair, kept (sealed) in {}:", path.display());
        println!("  export IGNIS_ACCESS_KEY_ID={}", credentials.access_key_id);
        println!("  export IGNIS_SECRET_ACCESS_KEY={}", credentials.secret_access_key);
    }
    Ok(credentials)
}

/// Writes the credentials file with the secret sealed.
fn write_credentials(data_dir: &Path, credentials: &Credentials) -> Result<(), String> {
    let path = data_dir.join(CREDENTIALS_FILE);
    let sealed = ignis_store::seal_file_secret(data_dir, &credentials.access_key_id, &credentials.secret_access_key)
        .map_err(|e| format!("cannot seal the administrator's secret: {e}"))?;
    let text = serde_json::json!({ "AccessKeyId": credentials.access_key_id, "SealedSecretAccessKey": sealed });
    write_private(&path, text.to_string().as_bytes()).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The administrator account's 12-digit id, kept in the store's meta
/// `account_id` (made on first start; a data directory from before accounts
/// existed keeps its id, and its functions and logs stay the administrator's).
/// The account itself is made, if missing, by [`register_admin_key`].
fn admin_account_id(store: &Store) -> Result<AccountId, String> {
    match store.meta("account_id").map_err(|e| e.to_string())? {
        Some(bytes) => String::from_utf8(bytes).map(AccountId::new).map_err(|e| e.to_string()),
        None => {
            let id = ignis_registry::random_account_id();
            store.put_meta("account_id", id.as_str().as_bytes()).map_err(|e| e.to_string())?;
            Ok(id)
        }
    }
}

/// Makes sure the administrator's account exists (named `admin` if it has to
/// be made) and registers this run's administrator key pair as the only
/// administrator key.
///
/// The pair comes from the environment, else the credentials file, else is
/// generated (see [`credentials`]). Whatever pair the server starts with *is*
/// the administrator key for this run: if it differs from the one stored (say
/// `IGNIS_ACCESS_KEY_ID` now names another key), the stored one is replaced and
/// stops working. Tenant accounts' keys are never touched; a pair whose access
/// key id is a tenant's key is refused.
async fn register_admin_key(accounts: &dyn Accounts, admin_account: &AccountId, credentials: Credentials) -> Result<(), String> {
    let key = AccessKey {
        access_key_id: credentials.access_key_id,
        secret_access_key: credentials.secret_access_key,
        account: admin_account.clone(),
        admin: true,
    };
    match accounts.set_administrator("admin", key).await {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("cannot register the administrator key: {e}")),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
