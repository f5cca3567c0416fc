//! `sandboxes`: how fast `ignis-sandbox` builds a sandbox, and what an idle one costs, next to the same
//! measurements for plain spawn+exec, `unshare` of all namespaces, `bwrap --unshare-all` and `crun run`.
//!
//! - **Creation.** A [`Host`] with pool size 0, so every [`Host::spawn`] builds the whole sandbox (namespaces,
//!   cgroup, root filesystem, runtime API listener, whatever else the library does). The entrypoint is the host's
//!   `/usr/bin/true` (visible in the sandbox through the read-only `/usr`), the same program the other tools run.
//!   Three clocks per sandbox, all started just before `spawn`: until `spawn` returned (init reported "exec ok"),
//!   until init exited (pidfd readable, reaped), and until `destroy` returned (cgroup removed) — the last one is
//!   what a tool's whole `run` costs, so the ratios use it. The tools are timed from `Command::spawn` until they
//!   exited (pidfd readable, reaped); `crun run` removes its container and cgroups before it exits.
//!   Sequential: samples taken in alternating rounds so drift in the machine's load hits every method alike.
//!   Parallel: two threads, each its own spawner, aggregate rate. Pooled: a second Host with pool size 2, refilled
//!   (untimed) before every spawn, so `spawn` only gives a ready shell its function.
//! - **Network namespace reuse.** A namespace goes to a sandbox of another tenant (account) only once nothing of
//!   the previous one is left in it. Next to the full sandbox above (one tenant: its namespace is reused at once),
//!   two Hosts of their own, in the same rounds: a new tenant for every sandbox whose predecessors left nothing
//!   (reused after a look at its `/proc/net/sockstat` and `sockstat6`), and a new tenant for every sandbox whose predecessor left
//!   a connection in `TIME_WAIT` (the entrypoint connects to 127.0.0.1:9001 and closes first): a new namespace each
//!   time, which is also what making a fresh namespace for every sandbox would cost.
//! - **Freezing.** An idle sandbox (`sleep 1000`) frozen (until its cgroup reports it frozen) and thawed, N times.
//! - **Idle memory.** K instances whose program is `sleep 1000`, and K plain `sleep 1000` processes, in
//!   alternating rounds; see [`MEMORY_METHOD`] for what is measured.
//!
//! Must run as root. `bench/sandboxes` installs the tools, builds, mounts what crun needs and runs this.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ignis_sandbox::{Host, RuntimeExit, Sandbox, SandboxConfig};

#[path = "../stats.rs"]
mod stats;
use stats::{Stats, stats, stats_ms};

/// Sequential samples are split into this many rounds, alternating the methods.
const ROUNDS: usize = 4;
/// Longest a single start (or stop) may take before it counts as an error.
const OP_TIMEOUT: Duration = Duration::from_secs(10);
const CRUN_TARGET: f64 = 3.0;
const MEMORY_TARGET_MIB: f64 = 2.0;
const SANDBOX_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

const MEMORY_METHOD: &str = "\
Memory method. In each round, for each kind in turn: /proc/meminfo is read, K instances running `sleep 1000` are
started (and found running `sleep`), after a settle pause it is read again and per-process figures are taken, then
they are stopped, and it is read a third time after another pause (`returned`: how much came back by then).
System-wide figures are the rise per instance, median over rounds, minus the same for K plain `sleep`s (whose row
is absolute). They count everything: processes, page tables, kernel objects of namespaces and cgroups, tmpfs.
  unreclaim.  = AnonPages + Shmem + SUnreclaim + KernelStack + PageTables + Percpu: memory nothing can reclaim.
  MemAvail.   = MemTotal - MemAvailable: also moves with page cache, which other jobs on the machine churn.
  helper PSS  = sum of Pss (/proc/PID/smaps_rollup) of the instance's processes other than the `sleep`
                (ignis-init; the waiting unshare / bwrap / crun processes), median over instances.
  cgroup      = memory use of the instance's memory cgroup (v1 memory.usage_in_bytes, v2 memory.current) minus that
                of a plain `sleep` exec'd into a memory cgroup of its own, median over instances. Ignis and crun only.
  accounted   = helper PSS + cgroup: an upper bound for what the two count twice (init's pages touched after it joined
                its cgroup), a lower bound for what neither sees (kernel objects made before init joined its cgroup,
                e.g. the network namespace); the system-wide figure has neither flaw but all the noise.";

struct Args {
    samples: usize,
    seconds: f64,
    parallel_samples: usize,
    idle: usize,
    mem_rounds: usize,
    settle: Duration,
    bin_dir: Option<PathBuf>,
}

const USAGE: &str = "usage: sandboxes [--samples N] [--seconds S] [--parallel-samples N] [--idle K] [--mem-rounds R] [--settle-ms MS] [--bin-dir DIR]

  --samples N           sequential creations per method (default 200)
  --seconds S           time bound of each method's sequential run, and of each parallel run (default 30)
  --parallel-samples N  creations per method with 2 threads in parallel, both together (default 200)
  --idle K              idle instances per kind for the memory measurement (default 20)
  --mem-rounds R        memory rounds (default 5)
  --settle-ms MS        pause before each memory reading (default 1000)
  --bin-dir DIR         where ignis-init is (default: beside this program)

Must run as root. crun needs the v1 hugetlb controller mounted on a hybrid cgroup layout (bench/sandboxes does it).";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        samples: 200,
        seconds: 30.0,
        parallel_samples: 200,
        idle: 20,
        mem_rounds: 5,
        settle: Duration::from_millis(1000),
        bin_dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let (flag, inline) = match flag.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (flag, None),
        };
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let mut value = || inline.clone().or_else(|| it.next()).ok_or_else(|| format!("{flag} needs a value\n\n{USAGE}"));
        let number = |text: String| text.parse::<f64>().map_err(|_| format!("{flag}: {text:?} is not a number"));
        match flag.as_str() {
            "--samples" => args.samples = number(value()?)?.clamp(ROUNDS as f64, 100_000.0) as usize,
            "--seconds" => args.seconds = number(value()?)?.clamp(0.5, 600.0),
            "--parallel-samples" => args.parallel_samples = number(value()?)?.clamp(2.0, 100_000.0) as usize,
            "--idle" => args.idle = number(value()?)?.clamp(1.0, 500.0) as usize,
            "--mem-rounds" => args.mem_rounds = number(value()?)?.clamp(1.0, 50.0) as usize,
            "--settle-ms" => args.settle = Duration::from_secs_f64(number(value()?)?.clamp(0.0, 60_000.0) / 1000.0),
            "--bin-dir" => args.bin_dir = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("sandboxes: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sandboxes: error: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The methods.

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Kind {
    Plain,
    Unshare,
    Bwrap,
    Crun,
    Ignis,
    IgnisPooled,
    /// A new tenant for every sandbox; clean namespaces.
    IgnisTenants,
    /// A new tenant for every sandbox; each leaves a connection in TIME_WAIT.
    IgnisTraces,
    /// [`Kind::Ignis`] with networking on (a routed link per network namespace, NAT, the firewall table).
    IgnisNet,
    /// [`Kind::IgnisTraces`] with networking on: a new namespace, and so a new link, for every sandbox.
    IgnisTracesNet,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Plain => "spawn+exec (floor)",
            Kind::Unshare => "unshare, all namespaces",
            Kind::Bwrap => "bwrap --unshare-all",
            Kind::Crun => "crun run",
            Kind::Ignis => "Ignis full sandbox",
            Kind::IgnisPooled => "Ignis with a ready shell",
            Kind::IgnisTenants => "Ignis, new tenant each, clean netns",
            Kind::IgnisTraces => "Ignis, new tenant each, netns w/ traces",
            Kind::IgnisNet => "Ignis full sandbox, networking on",
            Kind::IgnisTracesNet => "Ignis, new netns each, networking on",
        }
    }
}

const TOOLS: [Kind; 4] = [Kind::Plain, Kind::Unshare, Kind::Bwrap, Kind::Crun];

const UNSHARE_ARGS: [&str; 8] = ["--fork", "--pid", "--mount", "--net", "--ipc", "--uts", "--user", "--map-root-user"];
const BWRAP_ARGS: [&str; 15] = [
    "--unshare-all",
    "--ro-bind",
    "/usr",
    "/usr",
    "--symlink",
    "usr/lib64",
    "/lib64",
    "--symlink",
    "usr/lib",
    "/lib",
    "--symlink",
    "usr/bin",
    "/bin",
    "--proc",
    "/proc",
];

/// Everything the methods need; dropped (sandboxes, crun state, temp dirs) on every path out of [`run`].
struct Ctx {
    full: Host,
    pooled: Host,
    /// For [`Kind::IgnisTenants`] and [`Kind::IgnisTraces`]: namespace pools of their own.
    tenants: Host,
    traces: Host,
    /// [`Kind::IgnisNet`] and [`Kind::IgnisTracesNet`]: hosts whose sandboxes have a network, over `network`.
    net_full: Host,
    net_traces: Host,
    /// Kept while the hosts above run (dropped after them).
    _network: Network,
    /// Holds `bootstrap`, which connects to 127.0.0.1:9001 and closes first (a connection left in TIME_WAIT).
    tcp_code: PathBuf,
    /// Empty code dir (the entrypoint is /usr/bin/true) and one holding `bootstrap` = `exec sleep 1000`.
    empty_code: PathBuf,
    sleep_code: PathBuf,
    crun: Option<Crun>,
    /// Why a tool is skipped.
    skipped: HashMap<Kind, String>,
    counter: AtomicU64,
}

struct Crun {
    exe: PathBuf,
    state: PathBuf,
    bundle_true: PathBuf,
    bundle_sleep: PathBuf,
}

impl Ctx {
    fn available(&self, kind: Kind) -> bool {
        !self.skipped.contains_key(&kind)
    }

    fn sandbox_config(&self, code: &Path, entrypoint: &str) -> SandboxConfig {
        self.sandbox_config_for(code, entrypoint, "bench")
    }

    fn sandbox_config_for(&self, code: &Path, entrypoint: &str, tenant: &str) -> SandboxConfig {
        SandboxConfig {
            code_dir: Some(code.to_owned()),
            opt_dir: None,
            image: None,
            memory_mb: 128,
            tmp_mb: 16,
            env: vec![("PATH".into(), SANDBOX_PATH.into())],
            entrypoint: entrypoint.into(),
            tenant: tenant.into(),
        }
    }

    fn crun_id(&self) -> String {
        format!("sbench-{}-{}", std::process::id(), self.counter.fetch_add(1, Ordering::Relaxed))
    }

    /// The command a tool runs `prog args` with (`prog` absolute).
    fn tool_command(&self, kind: Kind, prog: &[&str], crun_id: &str) -> Command {
        let mut cmd = match kind {
            Kind::Plain => {
                let mut c = Command::new(prog[0]);
                c.args(&prog[1..]);
                c
            }
            Kind::Unshare => {
                let mut c = Command::new("unshare");
                c.args(UNSHARE_ARGS).args(prog);
                c
            }
            Kind::Bwrap => {
                let mut c = Command::new("bwrap");
                c.args(BWRAP_ARGS).args(["--dev", "/dev"]).args(prog);
                c
            }
            Kind::Crun => {
                let crun = self.crun.as_ref().expect("crun available");
                let bundle = if prog[0] == "/bin/true" { &crun.bundle_true } else { &crun.bundle_sleep };
                let mut c = Command::new(&crun.exe);
                c.arg("--root").arg(&crun.state).arg("run").arg("--bundle").arg(bundle).arg(crun_id);
                c
            }
            Kind::Ignis | Kind::IgnisPooled | Kind::IgnisTenants | Kind::IgnisTraces | Kind::IgnisNet | Kind::IgnisTracesNet => {
                unreachable!("not a tool")
            }
        };
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        cmd
    }
}

/// One creation, timed.
struct Sample {
    /// Ignis only: until `spawn` returned (entrypoint exec'd).
    created: Option<Duration>,
    /// Until the program exited and was reaped.
    exited: Duration,
    /// Until everything was cleaned up (Ignis: destroy returned; tools: same as `exited`).
    done: Duration,
    /// Pooled Ignis only: how long the (untimed) refill before the spawn took to make the shell.
    shell: Option<Duration>,
}

fn once(ctx: &Ctx, kind: Kind) -> Result<Sample, String> {
    match kind {
        Kind::Ignis | Kind::IgnisPooled | Kind::IgnisTenants | Kind::IgnisTraces | Kind::IgnisNet | Kind::IgnisTracesNet => {
            let host = match kind {
                Kind::IgnisPooled => &ctx.pooled,
                Kind::IgnisTenants => &ctx.tenants,
                Kind::IgnisTraces => &ctx.traces,
                Kind::IgnisNet => &ctx.net_full,
                Kind::IgnisTracesNet => &ctx.net_traces,
                _ => &ctx.full,
            };
            let tenant = match kind {
                Kind::IgnisTenants | Kind::IgnisTraces | Kind::IgnisTracesNet => {
                    format!("tenant-{}", ctx.counter.fetch_add(1, Ordering::Relaxed))
                }
                _ => "bench".to_string(),
            };
            let (code, entrypoint) = match kind {
                Kind::IgnisTraces | Kind::IgnisTracesNet => (&ctx.tcp_code, "/var/task/bootstrap"),
                _ => (&ctx.empty_code, "/usr/bin/true"),
            };
            let mut shell = None;
            if kind == Kind::IgnisPooled {
                // Not in the spawn's time: make sure a ready shell waits.
                for _ in 0..4 {
                    let t = Instant::now();
                    if !host.refill().map_err(|e| format!("refill: {e}"))? {
                        break;
                    }
                    shell = Some(t.elapsed());
                }
                if host.pooled() == 0 {
                    return Err("refill made no shell".into());
                }
            }
            let t0 = Instant::now();
            let mut sb = host.spawn(|_| ctx.sandbox_config_for(code, entrypoint, &tenant)).map_err(|e| format!("spawn: {e}"))?;
            let created = t0.elapsed();
            if !wait_readable(sb.pidfd(), OP_TIMEOUT) {
                sb.destroy();
                return Err(format!("/usr/bin/true did not end within {OP_TIMEOUT:?}"));
            }
            let exit = sb.wait();
            let exited = t0.elapsed();
            sb.destroy();
            let done = t0.elapsed();
            if exit != Some(RuntimeExit::Code(0)) {
                return Err(format!("{entrypoint} in a sandbox ended with {exit:?}"));
            }
            Ok(Sample { created: Some(created), exited, done, shell })
        }
        _ => {
            let id = ctx.crun_id();
            let mut cmd = ctx.tool_command(kind, &["/bin/true"], &id);
            let t0 = Instant::now();
            let result = run_bounded(&mut cmd);
            let elapsed = t0.elapsed();
            if kind == Kind::Crun && result.is_err() {
                crun_delete(ctx, &id);
            }
            result.map_err(|e| format!("{}: {e}", kind.label()))?;
            Ok(Sample { created: None, exited: elapsed, done: elapsed, shell: None })
        }
    }
}

/// Spawns `cmd`, waits (bounded) for it to exit, wants status 0.
fn run_bounded(cmd: &mut Command) -> Result<(), String> {
    let mut child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
    let status = wait_child(&mut child, OP_TIMEOUT)?;
    if status.success() { Ok(()) } else { Err(format!("exited with {status}")) }
}

/// Waits for `child` for at most `timeout` (then SIGKILLs and reaps it, and fails).
fn wait_child(child: &mut Child, timeout: Duration) -> Result<std::process::ExitStatus, String> {
    let exited = match pidfd_open(child.id() as i32) {
        Some(fd) => {
            use std::os::fd::AsFd;
            wait_readable(fd.as_fd(), timeout)
        }
        None => {
            let deadline = Instant::now() + timeout;
            loop {
                if child.try_wait().map_err(|e| e.to_string())?.is_some() || Instant::now() >= deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Instant::now() < deadline
        }
    };
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("did not exit within {timeout:?}"));
    }
    child.wait().map_err(|e| format!("wait: {e}"))
}

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a new fd we own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if r > 0 {
            return true;
        }
        if r == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return false;
        }
    }
}

fn crun_delete(ctx: &Ctx, id: &str) {
    if let Some(crun) = &ctx.crun {
        let _ = Command::new(&crun.exe)
            .arg("--root")
            .arg(&crun.state)
            .args(["delete", "-f", id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

// ---------------------------------------------------------------------------------------------
// Setup.

fn run(args: &Args) -> Result<(), String> {
    // SAFETY: plain syscall.
    if unsafe { libc::geteuid() } != 0 {
        return Err("must run as root (sandboxes need namespaces and cgroups)".into());
    }
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find this program's path: {e}"))?
            .parent()
            .ok_or("this program has no parent directory")?
            .to_path_buf(),
    };
    let init = bin_dir.join("ignis-init");
    if !init.is_file() {
        return Err(format!("{} not found: build the workspace (cargo build --release --workspace) or pass --bin-dir", init.display()));
    }

    let tmp = tempfile::Builder::new().prefix("ignis-sandboxes-").tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).map_err(|e| format!("chmod: {e}"))?;
    let parents_before = ignis_parent_groups();

    let result = (|| {
        let ctx = setup(tmp.path(), &init)?;
        let result = measure(args, &ctx);
        let stale = ctx.full.remove_stale_groups()
            + ctx.pooled.remove_stale_groups()
            + ctx.tenants.remove_stale_groups()
            + ctx.traces.remove_stale_groups()
            + ctx.net_full.remove_stale_groups()
            + ctx.net_traces.remove_stale_groups();
        if stale > 0 {
            eprintln!("sandboxes: removed {stale} leftover sandbox cgroups");
        }
        drop(ctx);
        result
    })();
    // The `ignis` parent groups, if this run made them (and they are empty).
    for dir in ignis_parent_groups().difference(&parents_before) {
        let _ = std::fs::remove_dir(dir);
    }
    result
}

fn ignis_parent_groups() -> std::collections::HashSet<PathBuf> {
    ["memory", "cpu", "pids", "freezer", ""]
        .iter()
        .map(|c| Path::new("/sys/fs/cgroup").join(c).join("ignis"))
        .filter(|d| d.is_dir())
        .collect()
}

fn setup(tmp: &Path, init: &Path) -> Result<Ctx, String> {
    let prefix = format!("sbench{}-", std::process::id());
    let mut full = Host::new(&tmp.join("state-full"), init).map_err(|e| format!("Host::new: {e}"))?;
    full.set_id_prefix(&prefix).map_err(|e| e.to_string())?;
    full.set_pool_size(0);
    let mut pooled = Host::new(&tmp.join("state-pooled"), init).map_err(|e| format!("Host::new: {e}"))?;
    pooled.set_id_prefix(&prefix).map_err(|e| e.to_string())?;
    pooled.set_pool_size(2);
    let mut tenants = Host::new(&tmp.join("state-tenants"), init).map_err(|e| format!("Host::new: {e}"))?;
    tenants.set_id_prefix(&prefix).map_err(|e| e.to_string())?;
    let mut traces = Host::new(&tmp.join("state-traces"), init).map_err(|e| format!("Host::new: {e}"))?;
    traces.set_id_prefix(&prefix).map_err(|e| e.to_string())?;
    let network = Network::start()?;
    let mut net_full = Host::new(&tmp.join("state-net-full"), init).map_err(|e| format!("Host::new: {e}"))?;
    net_full.set_id_prefix(&prefix).map_err(|e| e.to_string())?;
    net_full.set_pool_size(0);
    net_full.set_network(network.host.links(), network.host.resolv_conf());
    let mut net_traces = Host::new(&tmp.join("state-net-traces"), init).map_err(|e| format!("Host::new: {e}"))?;
    net_traces.set_id_prefix(&prefix).map_err(|e| e.to_string())?;
    net_traces.set_network(network.host.links(), network.host.resolv_conf());

    let empty_code = tmp.join("code-empty");
    let sleep_code = tmp.join("code-sleep");
    let tcp_code = tmp.join("code-tcp");
    for dir in [&empty_code, &sleep_code, &tcp_code] {
        std::fs::create_dir(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(|e| format!("chmod: {e}"))?;
    }
    let bootstrap = sleep_code.join("bootstrap");
    std::fs::write(&bootstrap, "#!/bin/sh\nexec sleep 1000\n").map_err(|e| format!("write {}: {e}", bootstrap.display()))?;
    std::fs::set_permissions(&bootstrap, std::fs::Permissions::from_mode(0o755)).map_err(|e| format!("chmod: {e}"))?;
    let bootstrap = tcp_code.join("bootstrap");
    std::fs::write(&bootstrap, "#!/bin/bash\nexec 3<>/dev/tcp/127.0.0.1/9001\n").map_err(|e| format!("write {}: {e}", bootstrap.display()))?;
    std::fs::set_permissions(&bootstrap, std::fs::Permissions::from_mode(0o755)).map_err(|e| format!("chmod: {e}"))?;

    let mut ctx = Ctx {
        full,
        pooled,
        tenants,
        traces,
        net_full,
        net_traces,
        _network: network,
        tcp_code,
        empty_code,
        sleep_code,
        crun: None,
        skipped: HashMap::new(),
        counter: AtomicU64::new(0),
    };
    for (kind, exe) in [(Kind::Unshare, "unshare"), (Kind::Bwrap, "bwrap"), (Kind::Crun, "crun")] {
        let Some(path) = which(exe) else {
            ctx.skipped.insert(kind, format!("{exe} is not installed (apt-get install {})", if exe == "bwrap" { "bubblewrap" } else { exe }));
            continue;
        };
        if kind == Kind::Crun {
            match crun_bundles(tmp, &path) {
                Ok(crun) => ctx.crun = Some(crun),
                Err(e) => {
                    ctx.skipped.insert(kind, format!("cannot make an OCI bundle: {e}"));
                    continue;
                }
            }
        }
        // One trial run, with its error output kept for the note.
        let id = ctx.crun_id();
        let mut cmd = ctx.tool_command(kind, &["/bin/true"], &id);
        let out = cmd.stderr(Stdio::piped()).output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
                let hint = if err.contains("hybrid") {
                    " (crun wants the v1 hugetlb controller at /sys/fs/cgroup/hugetlb; bench/sandboxes mounts it)"
                } else {
                    ""
                };
                ctx.skipped.insert(kind, format!("trial run failed ({}): {err}{hint}", o.status));
                if kind == Kind::Crun {
                    crun_delete(&ctx, &id);
                }
            }
            Err(e) => {
                ctx.skipped.insert(kind, format!("cannot run {}: {e}", path.display()));
            }
        }
    }
    Ok(ctx)
}

fn which(exe: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(exe))
        .find(|p| p.is_file())
}

/// Two OCI bundles from `crun spec` (pid, net, ipc, uts, mount namespaces; cgroups; capabilities dropped to crun's
/// defaults; masked paths), sharing a rootfs that holds only mount points and the host's top-level links into
/// `/usr`, with the host's `/usr` bind-mounted read-only. One runs `/bin/true`, one `/bin/sleep 1000`.
fn crun_bundles(tmp: &Path, exe: &Path) -> Result<Crun, String> {
    let rootfs = tmp.join("crun-rootfs");
    let mut extra_binds = Vec::new();
    for dir in ["usr", "proc", "dev", "sys", "tmp"] {
        std::fs::create_dir_all(rootfs.join(dir)).map_err(|e| format!("mkdir: {e}"))?;
    }
    for top in ["bin", "sbin", "lib", "lib64", "lib32", "libx32"] {
        let host = Path::new("/").join(top);
        match std::fs::read_link(&host) {
            Ok(target) => std::os::unix::fs::symlink(target, rootfs.join(top)).map_err(|e| format!("symlink: {e}"))?,
            Err(_) if host.is_dir() => {
                std::fs::create_dir_all(rootfs.join(top)).map_err(|e| format!("mkdir: {e}"))?;
                extra_binds.push(top);
            }
            Err(_) => {}
        }
    }
    let state = tmp.join("crun-state");
    std::fs::create_dir_all(&state).map_err(|e| format!("mkdir: {e}"))?;
    let spec_dir = tmp.join("crun-spec");
    std::fs::create_dir_all(&spec_dir).map_err(|e| format!("mkdir: {e}"))?;
    let out = Command::new(exe).arg("spec").current_dir(&spec_dir).stdin(Stdio::null()).output().map_err(|e| format!("crun spec: {e}"))?;
    if !out.status.success() {
        return Err(format!("crun spec: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    let text = std::fs::read_to_string(spec_dir.join("config.json")).map_err(|e| format!("crun spec: {e}"))?;
    let spec: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("crun spec: {e}"))?;
    let mut bundles = Vec::new();
    for (name, args) in [("crun-true", vec!["/bin/true"]), ("crun-sleep", vec!["/bin/sleep", "1000"])] {
        let mut spec = spec.clone();
        spec["process"]["terminal"] = false.into();
        spec["process"]["args"] = args.into();
        spec["root"] = serde_json::json!({ "path": rootfs, "readonly": true });
        let mounts = spec["mounts"].as_array_mut().ok_or("crun spec: no mounts")?;
        for dir in std::iter::once("usr").chain(extra_binds.iter().copied()) {
            mounts.push(serde_json::json!({ "destination": format!("/{dir}"), "type": "bind", "source": format!("/{dir}"), "options": ["rbind", "ro"] }));
        }
        let bundle = tmp.join(name);
        std::fs::create_dir_all(&bundle).map_err(|e| format!("mkdir: {e}"))?;
        std::fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(&spec).expect("json")).map_err(|e| format!("write: {e}"))?;
        bundles.push(bundle);
    }
    let bundle_sleep = bundles.pop().expect("two");
    let bundle_true = bundles.pop().expect("two");
    Ok(Crun { exe: exe.to_owned(), state, bundle_true, bundle_sleep })
}

// ---------------------------------------------------------------------------------------------
// Measurements.

#[derive(Default)]
struct Series {
    created: Vec<Duration>,
    exited: Vec<Duration>,
    done: Vec<Duration>,
    shell: Vec<Duration>,
    /// Wall time spent in the loop (sequential: sum over rounds, including untimed refills; parallel: wall).
    busy: Duration,
    errors: Vec<String>,
}

impl Series {
    fn add(&mut self, r: Result<Sample, String>) {
        match r {
            Ok(s) => {
                if let Some(c) = s.created {
                    self.created.push(c);
                }
                self.exited.push(s.exited);
                self.done.push(s.done);
                self.shell.extend(s.shell);
            }
            Err(e) => self.errors.push(e),
        }
    }
    fn rate(&self) -> f64 {
        self.done.len() as f64 / self.busy.as_secs_f64().max(1e-9)
    }
}

struct Results {
    seq: HashMap<Kind, Series>,
    par: HashMap<Kind, Series>,
    mem: HashMap<Kind, MemKind>,
    mem_notes: Vec<String>,
    features: String,
    /// Freeze (until reported frozen) and thaw of an idle sandbox.
    freezing: (Vec<Duration>, Vec<Duration>),
    /// A new network namespace: without a link, with a routed one (Ignis's), with a bridged one.
    links: [Vec<Duration>; 3],
    /// Egress, bytes per second: from the host itself, and from a sandbox (medians of the rounds).
    egress: (f64, f64),
}

/// Freezes an idle sandbox until its cgroup reports it frozen, and thaws it, `n` times.
fn freeze_thaw(ctx: &Ctx, n: usize) -> Result<(Vec<Duration>, Vec<Duration>), String> {
    let mut sb = ctx.full.spawn(|_| ctx.sandbox_config(&ctx.sleep_code, "/var/task/bootstrap")).map_err(|e| format!("spawn: {e}"))?;
    let (mut freeze, mut thaw) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let result = (|| {
        for _ in 0..n {
            let t = Instant::now();
            sb.freeze().map_err(|e| format!("freeze: {e}"))?;
            while !sb.frozen() {
                if t.elapsed() > OP_TIMEOUT {
                    return Err(format!("not frozen within {OP_TIMEOUT:?}"));
                }
                std::thread::yield_now();
            }
            freeze.push(t.elapsed());
            let t = Instant::now();
            sb.thaw().map_err(|e| format!("thaw: {e}"))?;
            thaw.push(t.elapsed());
        }
        Ok(())
    })();
    sb.destroy();
    result.map(|()| (freeze, thaw))
}

fn measure(args: &Args, ctx: &Ctx) -> Result<(), String> {
    let kinds: Vec<Kind> =
        [
            Kind::Plain,
            Kind::Unshare,
            Kind::Bwrap,
            Kind::Crun,
            Kind::Ignis,
            Kind::IgnisNet,
            Kind::IgnisPooled,
            Kind::IgnisTenants,
            Kind::IgnisTraces,
            Kind::IgnisTracesNet,
        ]
        .into_iter()
        .filter(|k| ctx.available(*k))
        .collect();

    // Warm-up (page cache, first cgroup, binaries): a few untimed runs each.
    for &kind in &kinds {
        for _ in 0..3 {
            once(ctx, kind).map_err(|e| format!("warm-up of {}: {e}", kind.label()))?;
        }
    }

    // Sequential, in alternating rounds.
    eprintln!("sandboxes: sequential creations ({} per method in {ROUNDS} rounds, each method at most {} s)", args.samples, args.seconds);
    let mut seq: HashMap<Kind, Series> = kinds.iter().map(|k| (*k, Series::default())).collect();
    let per_round = args.samples.div_ceil(ROUNDS);
    let round_budget = Duration::from_secs_f64(args.seconds / ROUNDS as f64);
    for _ in 0..ROUNDS {
        for &kind in &kinds {
            let series = seq.get_mut(&kind).expect("all kinds");
            let start = Instant::now();
            for _ in 0..per_round {
                if start.elapsed() >= round_budget || series.errors.len() > 10 {
                    break;
                }
                series.add(once(ctx, kind));
            }
            series.busy += start.elapsed();
        }
    }

    // Parallel: two threads, each its own spawner (sandboxes are destroyed by the thread that made them).
    eprintln!("sandboxes: 2 threads in parallel ({} per method, at most {} s)", args.parallel_samples, args.seconds);
    let mut par = HashMap::new();
    let sequential_only = |k: &&Kind| {
        !matches!(k, Kind::IgnisPooled | Kind::IgnisTenants | Kind::IgnisTraces | Kind::IgnisNet | Kind::IgnisTracesNet)
    };
    for &kind in kinds.iter().filter(sequential_only) {
        let budget = Duration::from_secs_f64(args.seconds);
        let per_thread = args.parallel_samples.div_ceil(2);
        let start = Instant::now();
        let parts: Vec<Series> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(move || {
                        let mut series = Series::default();
                        for _ in 0..per_thread {
                            if start.elapsed() >= budget || series.errors.len() > 10 {
                                break;
                            }
                            series.add(once(ctx, kind));
                        }
                        series
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_default()).collect()
        });
        let mut all = Series { busy: start.elapsed(), ..Series::default() };
        for p in parts {
            all.created.extend(p.created);
            all.exited.extend(p.exited);
            all.done.extend(p.done);
            all.errors.extend(p.errors);
        }
        par.insert(kind, all);
    }

    // Idle memory.
    let mem_kinds: Vec<Kind> = [Kind::Plain, Kind::Ignis, Kind::Unshare, Kind::Bwrap, Kind::Crun]
        .into_iter()
        .filter(|k| ctx.available(*k))
        .collect();
    eprintln!(
        "sandboxes: idle memory ({} instances per kind, {} rounds, {} ms settle)",
        args.idle,
        args.mem_rounds,
        args.settle.as_millis()
    );
    let (mem, mem_notes, features) = memory(args, ctx, &mem_kinds)?;
    eprintln!("sandboxes: freezing and thawing an idle sandbox ({} times)", args.samples);
    let freezing = freeze_thaw(ctx, args.samples)?;
    eprintln!("sandboxes: a new network namespace's link to the host, routed and bridged ({} each)", args.samples);
    let links = link_setups(args.samples)?;
    eprintln!("sandboxes: egress throughput, a sandbox and the host itself to a test host ({EGRESS_ROUNDS} rounds)");
    let egress = egress(ctx)?;

    let results = Results { seq, par, mem, mem_notes, features, freezing, links, egress };
    print(args, ctx, &results);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Idle memory.

#[derive(Default)]
struct MemKind {
    /// Per round: rise of MemTotal-MemAvailable per instance, and how much of it came back after the stop; the same
    /// for the sum of the unreclaimable counters.
    rise: Vec<f64>,
    returned: Vec<f64>,
    unrec_rise: Vec<f64>,
    unrec_returned: Vec<f64>,
    /// Per instance (all rounds): Pss of the helper processes, of the sleep, and the memory cgroup's use.
    helper_pss: Vec<f64>,
    sleep_pss: Vec<f64>,
    cgroup: Vec<f64>,
    errors: Vec<String>,
}

/// One idle instance.
enum Idle {
    Proc { child: Child, sleep: Option<i32>, crun_id: Option<String>, cgroup: Option<PathBuf> },
    Sandbox { sandbox: Sandbox, sleep: Option<i32> },
}

/// Idle instances of one kind; stopped on drop.
struct IdleSet<'a> {
    ctx: &'a Ctx,
    items: Vec<Idle>,
}

impl IdleSet<'_> {
    fn stop(&mut self) {
        for item in self.items.drain(..) {
            match item {
                Idle::Sandbox { mut sandbox, .. } => sandbox.destroy(),
                Idle::Proc { mut child, sleep, crun_id, cgroup } => {
                    if let Some(sleep) = sleep.filter(|p| *p != child.id() as i32) {
                        // SAFETY: plain syscall. The pid was seen as a descendant running sleep a moment ago.
                        unsafe { libc::kill(sleep, libc::SIGKILL) };
                    } else {
                        let _ = child.kill();
                    }
                    if wait_child(&mut child, Duration::from_secs(5)).is_err() {
                        eprintln!("sandboxes: an idle instance did not stop when its sleep was killed; killed its launcher");
                    }
                    if let Some(id) = &crun_id {
                        crun_delete(self.ctx, id);
                    }
                    if let Some(dir) = cgroup {
                        remove_cgroup(&dir);
                    }
                }
            }
        }
    }
}

impl Drop for IdleSet<'_> {
    fn drop(&mut self) {
        self.stop();
    }
}

fn remove_cgroup(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while dir.exists() && std::fs::remove_dir(dir).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Where plain `sleep`s get a memory cgroup of their own: `<memory root>/sbench-<pid>`, removed on drop.
struct PlainGroups {
    parent: Option<PathBuf>,
}

impl PlainGroups {
    fn new() -> PlainGroups {
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers");
        let root = if Path::new("/sys/fs/cgroup/memory/memory.usage_in_bytes").exists() {
            Some(PathBuf::from("/sys/fs/cgroup/memory"))
        } else if std::fs::read_to_string("/sys/fs/cgroup/cgroup.subtree_control").is_ok_and(|s| s.split_whitespace().any(|c| c == "memory"))
            && v2.exists()
        {
            Some(PathBuf::from("/sys/fs/cgroup"))
        } else {
            None
        };
        let parent = root.map(|r| r.join(format!("sbench-{}", std::process::id()))).filter(|p| std::fs::create_dir(p).is_ok());
        if let Some(p) = &parent
            && Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
        {
            let _ = std::fs::write(p.join("cgroup.subtree_control"), "+memory");
        }
        PlainGroups { parent }
    }
}

impl Drop for PlainGroups {
    fn drop(&mut self) {
        if let Some(p) = &self.parent {
            if let Ok(entries) = std::fs::read_dir(p) {
                for e in entries.flatten() {
                    if e.path().is_dir() {
                        remove_cgroup(&e.path());
                    }
                }
            }
            remove_cgroup(p);
        }
    }
}

fn start_idle(ctx: &Ctx, kind: Kind, groups: &PlainGroups, n: usize) -> Result<Idle, String> {
    match kind {
        Kind::Ignis => {
            let sandbox = ctx
                .full
                .spawn(|_| ctx.sandbox_config(&ctx.sleep_code, "/var/task/bootstrap"))
                .map_err(|e| format!("spawn: {e}"))?;
            let mut idle = Idle::Sandbox { sleep: None, sandbox };
            let Idle::Sandbox { sandbox, sleep } = &mut idle else { unreachable!() };
            *sleep = Some(find_sleep(sandbox.pid())?);
            Ok(idle)
        }
        _ => {
            let crun_id = (kind == Kind::Crun).then(|| ctx.crun_id());
            let mut cmd = match kind {
                // As timed, but the sleep dies with its launcher whatever happens.
                Kind::Unshare => {
                    let mut c = Command::new("unshare");
                    c.arg("--kill-child").args(UNSHARE_ARGS).args(["/bin/sleep", "1000"]);
                    c
                }
                Kind::Bwrap => {
                    let mut c = Command::new("bwrap");
                    c.arg("--die-with-parent").args(BWRAP_ARGS).args(["--dev", "/dev", "/bin/sleep", "1000"]);
                    c
                }
                _ => ctx.tool_command(kind, &["/bin/sleep", "1000"], crun_id.as_deref().unwrap_or("")),
            };
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
            let mut cgroup = None;
            if kind == Kind::Plain
                && let Some(parent) = &groups.parent
            {
                let dir = parent.join(format!("p{n}"));
                std::fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
                let procs = CString::new(dir.join("cgroup.procs").into_os_string().into_encoded_bytes()).expect("no NUL");
                cgroup = Some(dir);
                // SAFETY: the closure only makes raw syscalls on data prepared before the fork.
                unsafe {
                    cmd.pre_exec(move || {
                        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                        if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                            return Err(std::io::Error::last_os_error());
                        }
                        libc::close(fd);
                        Ok(())
                    });
                }
            }
            let child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    if let Some(dir) = &cgroup {
                        remove_cgroup(dir);
                    }
                    return Err(format!("{}: {e}", kind.label()));
                }
            };
            let mut idle = Idle::Proc { child, sleep: None, crun_id, cgroup };
            let Idle::Proc { child, sleep, .. } = &mut idle else { unreachable!() };
            // Stopped by the caller's IdleSet if this fails.
            *sleep = Some(if kind == Kind::Plain { child.id() as i32 } else { find_sleep(child.id() as i32).map_err(|e| format!("{}: {e}", kind.label()))? });
            Ok(idle)
        }
    }
}

/// Waits (bounded) for a descendant of `root` that runs `sleep`.
fn find_sleep(root: i32) -> Result<i32, String> {
    let deadline = Instant::now() + OP_TIMEOUT;
    loop {
        if let Some(pid) = descendants(root).into_iter().find(|p| comm(*p).as_deref() == Some("sleep")) {
            return Ok(pid);
        }
        if Instant::now() >= deadline {
            return Err(format!("no `sleep` below pid {root} after {OP_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn comm(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|s| s.trim().to_string())
}

/// `root` and all its descendants, from a scan of /proc.
fn descendants(root: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // After the last ')' (the comm may hold anything): state ppid ...
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)).and_then(|s| s.parse::<i32>().ok());
        if let Some(ppid) = ppid {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(c) = children.get(&out[i]) {
            out.extend(c);
        }
        i += 1;
    }
    out
}

fn meminfo() -> HashMap<String, f64> {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.to_string(), v.split_whitespace().next()?.parse::<f64>().ok()? * 1024.0))
        })
        .collect()
}

/// Counters of /proc/meminfo whose sum is memory that no reclaim can free: anonymous and tmpfs pages, unreclaimable
/// slab, kernel stacks, page tables, per-cpu allocations. Leaves out page cache and reclaimable slab, which other
/// jobs on the machine move a lot and which are not a cost of an idle sandbox.
const UNRECLAIMABLE: [&str; 6] = ["AnonPages", "Shmem", "SUnreclaim", "KernelStack", "PageTables", "Percpu"];

/// (MemTotal - MemAvailable, sum of [`UNRECLAIMABLE`]), bytes.
fn mem_used() -> (f64, f64) {
    let m = meminfo();
    let get = |k: &str| m.get(k).copied().unwrap_or(0.0);
    (get("MemTotal") - get("MemAvailable"), UNRECLAIMABLE.iter().map(|k| get(k)).sum())
}

/// Pss of a process, bytes.
fn pss(pid: i32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Pss:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<f64>().ok()? * 1024.0)
}

/// Memory use of the memory cgroup `pid` is in, if it is not this program's own.
fn cgroup_memory(pid: i32) -> Option<f64> {
    let memory_path = |p: i32| -> Option<PathBuf> {
        let text = std::fs::read_to_string(format!("/proc/{p}/cgroup")).ok()?;
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            if controllers.split(',').any(|c| c == "memory") {
                return Some(Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/')));
            }
        }
        let v2 = text.lines().find_map(|l| l.strip_prefix("0::"))?;
        Path::new("/sys/fs/cgroup/cgroup.controllers").exists().then(|| Path::new("/sys/fs/cgroup").join(v2.trim_start_matches('/')))
    };
    let dir = memory_path(pid)?;
    if Some(&dir) == memory_path(std::process::id() as i32).as_ref() {
        return None;
    }
    ["memory.usage_in_bytes", "memory.current"]
        .iter()
        .find_map(|f| std::fs::read_to_string(dir.join(f)).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
}

type MemoryResults = (HashMap<Kind, MemKind>, Vec<String>, String);

fn memory(args: &Args, ctx: &Ctx, kinds: &[Kind]) -> Result<MemoryResults, String> {
    let groups = PlainGroups::new();
    let mut notes = Vec::new();
    if groups.parent.is_none() {
        notes.push("no memory cgroup could be made for the plain sleeps: cgroup column not computed".to_string());
    }
    let mut out: HashMap<Kind, MemKind> = kinds.iter().map(|k| (*k, MemKind::default())).collect();
    let mut features = String::new();
    for round in 0..args.mem_rounds {
        for &kind in kinds {
            let m = out.get_mut(&kind).expect("all kinds");
            std::thread::sleep(args.settle);
            let before = mem_used();
            let mut set = IdleSet { ctx, items: Vec::new() };
            let mut failed = None;
            for n in 0..args.idle {
                match start_idle(ctx, kind, &groups, n) {
                    Ok(item) => set.items.push(item),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = failed {
                m.errors.push(e);
                continue; // `set` stops what started.
            }
            std::thread::sleep(args.settle);
            let during = mem_used();
            for item in &set.items {
                let (root, sleep) = match item {
                    Idle::Sandbox { sandbox, sleep } => (sandbox.pid(), sleep.expect("found")),
                    Idle::Proc { child, sleep, .. } => (child.id() as i32, sleep.expect("found")),
                };
                let helpers: f64 = descendants(root).into_iter().filter(|p| *p != sleep).filter_map(pss).sum();
                m.helper_pss.push(helpers);
                if let Some(p) = pss(sleep) {
                    m.sleep_pss.push(p);
                }
                if let Some(c) = cgroup_memory(sleep) {
                    m.cgroup.push(c);
                }
            }
            if kind == Kind::Ignis
                && round == 0
                && let Some(Idle::Sandbox { sleep: Some(sleep), .. }) = set.items.first()
            {
                features = sandbox_features(*sleep);
            }
            set.stop();
            std::thread::sleep(args.settle);
            let after = mem_used();
            let k = args.idle as f64;
            m.rise.push((during.0 - before.0) / k);
            m.returned.push((during.0 - after.0) / k);
            m.unrec_rise.push((during.1 - before.1) / k);
            m.unrec_returned.push((during.1 - after.1) / k);
        }
    }
    drop(groups);
    Ok((out, notes, features))
}

/// What isolation the kernel shows for a process of a sandbox.
fn sandbox_features(pid: i32) -> String {
    let ns: Vec<&str> = ["pid", "mnt", "net", "ipc", "uts", "user", "cgroup", "time"]
        .into_iter()
        .filter(|n| {
            let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{n}")).ok();
            theirs.is_some() && theirs != std::fs::read_link(format!("/proc/self/ns/{n}")).ok()
        })
        .collect();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string())).unwrap_or_else(|| "?".into())
    };
    let seccomp = match field("Seccomp:").as_str() {
        "0" => "none".to_string(),
        "1" => "strict".to_string(),
        "2" => format!("filter ({} filters)", field("Seccomp_filters:")),
        other => other.to_string(),
    };
    format!(
        "new namespaces: {}; seccomp: {seccomp}; NoNewPrivs {}; CapEff {}; uid {}",
        ns.join(","),
        field("NoNewPrivs:"),
        field("CapEff:"),
        field("Uid:").split_whitespace().next().unwrap_or("?")
    )
}

// ---------------------------------------------------------------------------------------------
// Statistics and the table.


fn median(values: &[f64]) -> Option<f64> {
    stats(&mut values.to_vec()).map(|s| s.p50)
}

fn ms(v: f64) -> String {
    if v >= 100.0 { format!("{v:.1}") } else { format!("{v:.2}") }
}

fn mib(bytes: f64) -> f64 {
    bytes / (1024.0 * 1024.0)
}

fn verdict(ok: bool) -> &'static str {
    if ok { "MET" } else { "MISSED" }
}

fn row(label: &str, s: Option<&Stats>, rate: Option<f64>, note: &str) {
    let rate = rate.map_or_else(|| "-".to_string(), |r| format!("{r:.0}"));
    match s {
        Some(s) => println!(
            "  {label:<46} {:>5} {:>7} {:>7} {:>7} {:>7} {:>7} {rate:>7}  {note}",
            s.n,
            ms(s.min),
            ms(s.p50),
            ms(s.p90),
            ms(s.p99),
            ms(s.max)
        ),
        None => println!("  {label:<46} {:>5} {:>7}  {note}", 0, "no data"),
    }
}

fn uname() -> String {
    // SAFETY: utsname is plain old data; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: valid out pointer.
    if unsafe { libc::uname(&mut u) } != 0 {
        return "?".into();
    }
    // SAFETY: uname NUL-terminates the field.
    unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }.to_string_lossy().into_owned()
}

fn tool_version(exe: &str) -> String {
    Command::new(exe)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn print(args: &Args, ctx: &Ctx, r: &Results) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let line = "-".repeat(124);
    println!();
    println!(
        "Sandbox creation benchmark  ({cpus} CPUs, kernel {}, cgroup v{} for Ignis; {}; {}; {})",
        uname(),
        ctx.full.cgroup_version(),
        tool_version("unshare"),
        tool_version("bwrap"),
        tool_version("crun")
    );
    println!("Every method runs /bin/true (Ignis: /usr/bin/true as the entrypoint, through its read-only /usr) and is cleaned up.");
    println!("Ignis sandbox as seen from inside (idle sandbox): {}", if r.features.is_empty() { "?" } else { &r.features });
    for (kind, why) in {
        let mut v: Vec<_> = ctx.skipped.iter().collect();
        v.sort_by_key(|(k, _)| format!("{k:?}"));
        v
    } {
        println!("SKIPPED {}: {why}", kind.label());
    }
    println!("{line}");
    println!(
        "  {:<46} {:>5} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
        "sequential, latency (ms)",
        "n",
        "min",
        "p50",
        "p90",
        "p99",
        "max",
        "per s"
    );
    println!("{line}");
    for kind in TOOLS {
        if let Some(s) = r.seq.get(&kind) {
            let note = match kind {
                Kind::Plain => "Command::spawn (posix_spawn) + wait",
                Kind::Unshare => "--fork --pid --mount --net --ipc --uts --user --map-root-user",
                Kind::Bwrap => "--ro-bind /usr, symlinks, --proc, --dev",
                Kind::Crun => "crun spec bundle, /usr ro bind, own cgroups",
                _ => "",
            };
            row(&format!("{} /bin/true", kind.label()), stats_ms(&s.done).as_ref(), Some(s.rate()), note);
        }
    }
    if let Some(s) = r.seq.get(&Kind::Ignis) {
        row("Ignis full sandbox (pool 0): spawn -> exec ok", stats_ms(&s.created).as_ref(), None, "what Host::spawn returns on");
        row("  spawn -> /usr/bin/true exited, reaped", stats_ms(&s.exited).as_ref(), None, "");
        row("  spawn -> destroyed (whole life)", stats_ms(&s.done).as_ref(), Some(s.rate()), "cgroup removed; compare with the tools");
        let destroy: Vec<Duration> = s.done.iter().zip(&s.exited).map(|(d, e)| d.saturating_sub(*e)).collect();
        row("  of which destroy (after exit)", stats_ms(&destroy).as_ref(), None, "");
    }
    if let Some(s) = r.seq.get(&Kind::IgnisPooled) {
        row("Ignis, ready shell (pool 2): spawn -> exec ok", stats_ms(&s.created).as_ref(), None, "shell made ahead, untimed refill");
        row("  with a ready shell: spawn -> destroyed", stats_ms(&s.done).as_ref(), None, "");
        row("  making one shell (Host::refill, not above)", stats_ms(&s.shell).as_ref(), None, "namespaces, cgroup, listener");
    }
    for (kind, note) in [
        (Kind::IgnisTenants, "netns of another tenant, checked clean, reused"),
        (Kind::IgnisTraces, "netns with TIME_WAIT of another: a new one"),
    ] {
        if let Some(s) = r.seq.get(&kind) {
            row(&format!("{} (pool 0): spawn -> exec ok", kind.label()), stats_ms(&s.created).as_ref(), None, note);
            row("  spawn -> destroyed (whole life)", stats_ms(&s.done).as_ref(), Some(s.rate()), "vs the full sandbox (one tenant) above");
        }
    }
    row("freeze an idle sandbox (until frozen)", stats_ms(&r.freezing.0).as_ref(), None, "between invocations");
    row("thaw it", stats_ms(&r.freezing.1).as_ref(), None, "before an event");
    println!("{line}");
    println!(
        "  {:<46} {:>5} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}  vs sequential rate",
        "2 threads in parallel, latency (ms)",
        "n",
        "min",
        "p50",
        "p90",
        "p99",
        "max",
        "per s"
    );
    println!("{line}");
    for kind in [Kind::Plain, Kind::Unshare, Kind::Bwrap, Kind::Crun, Kind::Ignis] {
        if let Some(p) = r.par.get(&kind) {
            let label = if kind == Kind::Ignis { "Ignis full sandbox, whole life".to_string() } else { format!("{} /bin/true", kind.label()) };
            let seq_rate = r.seq.get(&kind).map(Series::rate).unwrap_or(0.0);
            let note = if seq_rate > 0.0 { format!("{:.2}x", p.rate() / seq_rate) } else { String::new() };
            row(&label, stats_ms(&p.done).as_ref(), Some(p.rate()), &note);
            if kind == Kind::Ignis {
                row("  spawn -> exec ok", stats_ms(&p.created).as_ref(), None, "");
            }
        }
    }
    println!("{line}");
    print_network(r, &line);

    // Ratios.
    let p50 = |m: &HashMap<Kind, Series>, k: Kind| m.get(&k).and_then(|s| stats_ms(&s.done)).map(|s| s.p50);
    let ig_created = r.seq.get(&Kind::Ignis).and_then(|s| stats_ms(&s.created)).map(|s| s.p50);
    let ig_done = p50(&r.seq, Kind::Ignis);
    let ig_rate = r.seq.get(&Kind::Ignis).map(Series::rate);
    let ig_par_rate = r.par.get(&Kind::Ignis).map(Series::rate);
    println!(
        "  {:<46} {:>16} {:>16} {:>14} {:>14}",
        "ratios: tool / Ignis (>1: Ignis faster)", "p50 whole life", "p50 vs spawn", "seq. rate", "2-thread rate"
    );
    println!("{line}");
    for kind in [Kind::Crun, Kind::Bwrap, Kind::Unshare, Kind::Plain] {
        let Some(t) = p50(&r.seq, kind) else {
            println!("  {:<46} skipped", kind.label());
            continue;
        };
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
            _ => "-".into(),
        };
        let seq_rate = r.seq.get(&kind).map(Series::rate);
        let par_rate = r.par.get(&kind).map(Series::rate);
        let note = if kind == Kind::Crun {
            match ig_done {
                Some(i) => format!("  target >= {CRUN_TARGET}x (whole life): {}", verdict(t / i >= CRUN_TARGET)),
                None => String::new(),
            }
        } else {
            String::new()
        };
        println!(
            "  {:<46} {:>16} {:>16} {:>14} {:>14}{note}",
            kind.label(),
            ratio(Some(t), ig_done),
            ratio(Some(t), ig_created),
            ratio(ig_rate, seq_rate),
            ratio(ig_par_rate, par_rate),
        );
    }
    println!("  (whole life = spawn until destroyed; \"vs spawn\" = the tool's whole run against Ignis's spawn -> exec ok; rates: Ignis / tool)");
    println!("{line}");

    // Memory.
    println!(
        "  {:<40} {:>10} {:>9} {:>10} {:>9} {:>9} {:>8} {:>9} {:>8}",
        format!("idle K={}, MiB each over plain sleep", args.idle),
        "unreclaim.",
        "returned",
        "MemAvail.",
        "returned",
        "helperPSS",
        "cgroup",
        "accounted",
        "sleepPSS"
    );
    println!("{line}");
    let plain = r.mem.get(&Kind::Plain);
    let base = |f: fn(&MemKind) -> &Vec<f64>| plain.and_then(|m| median(f(m)));
    let (plain_rise, plain_unrec, plain_cg) = (base(|m| &m.rise), base(|m| &m.unrec_rise), base(|m| &m.cgroup));
    let fmt = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{:.2}", mib(v)));
    let minus = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a - b);
    let mut ignis_figures = None;
    for kind in [Kind::Plain, Kind::Ignis, Kind::Unshare, Kind::Bwrap, Kind::Crun] {
        let Some(m) = r.mem.get(&kind) else { continue };
        let (rise, unrec, cgroup) = if kind == Kind::Plain {
            (median(&m.rise), median(&m.unrec_rise), median(&m.cgroup))
        } else {
            (minus(median(&m.rise), plain_rise), minus(median(&m.unrec_rise), plain_unrec), minus(median(&m.cgroup), plain_cg))
        };
        let helper = median(&m.helper_pss);
        let accounted = if kind == Kind::Plain { None } else { helper.zip(cgroup).map(|(a, b)| a + b) };
        if kind == Kind::Ignis {
            ignis_figures = Some((unrec, accounted, rise));
        }
        let label = match kind {
            Kind::Plain => "plain sleep 1000 (absolute)",
            Kind::Ignis => "Ignis idle sandbox",
            _ => kind.label(),
        };
        println!(
            "  {label:<40} {:>10} {:>9} {:>10} {:>9} {:>9} {:>8} {:>9} {:>8}",
            fmt(unrec),
            fmt(median(&m.unrec_returned)),
            fmt(rise),
            fmt(median(&m.returned)),
            if kind == Kind::Plain { "-".into() } else { fmt(helper) },
            fmt(cgroup),
            fmt(accounted),
            fmt(median(&m.sleep_pss)),
        );
        if !m.rise.is_empty() {
            let rounds = |v: &[f64]| v.iter().map(|v| format!("{:.2}", mib(*v))).collect::<Vec<_>>().join(" ");
            println!("  {:<40}   per round, absolute: unreclaimable {}; MemAvailable {}", "", rounds(&m.unrec_rise), rounds(&m.rise));
        }
    }
    println!("{line}");
    if let Some((unrec, accounted, rise)) = ignis_figures {
        let judge = |v: Option<f64>| match v {
            Some(v) => format!("{:.2} MiB {}", mib(v), verdict(mib(v) < MEMORY_TARGET_MIB)),
            None => "-".into(),
        };
        println!(
            "  Target < {MEMORY_TARGET_MIB} MiB per idle Ignis sandbox: unreclaimable {}; accounted {}; MemAvailable {} (noisiest)",
            judge(unrec),
            judge(accounted),
            judge(rise)
        );
        println!("{line}");
    }
    println!("{MEMORY_METHOD}");
    println!("{line}");
    println!(
        "Settings: --samples {} (in {ROUNDS} alternating rounds) --seconds {} --parallel-samples {} --idle {} --mem-rounds {} --settle-ms {}; Ignis config 128 MB, /tmp 16 MB",
        args.samples,
        args.seconds,
        args.parallel_samples,
        args.idle,
        args.mem_rounds,
        args.settle.as_millis()
    );
    let mut problems: Vec<String> = r.mem_notes.clone();
    for (what, map) in [("sequential", &r.seq), ("parallel", &r.par)] {
        let mut kinds: Vec<_> = map.iter().collect();
        kinds.sort_by_key(|(k, _)| format!("{k:?}"));
        for (kind, s) in kinds {
            if !s.errors.is_empty() {
                problems.push(format!("{what} {}: {} errors, first: {}", kind.label(), s.errors.len(), s.errors[0]));
            }
        }
    }
    for (kind, m) in &r.mem {
        if !m.errors.is_empty() {
            problems.push(format!("idle memory {}: {} rounds failed, first: {}", kind.label(), m.errors.len(), m.errors[0]));
        }
    }
    if problems.is_empty() {
        println!("No errors.");
    } else {
        println!("Problems:");
        for p in problems {
            println!("  - {p}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Networking.

/// The range of the networked hosts' sandboxes; the routed and bridged links of [`link_setups`] take theirs from
/// ranges of their own.
const NET_RANGE: &str = "10.209.0.0/16";
const ROUTED_RANGE: &str = "10.208.0.0/16";
const BRIDGE_GATEWAY: [u8; 4] = [10, 207, 0, 1];
const EGRESS_ROUNDS: usize = 3;
const EGRESS_BYTES: u64 = 1 << 30;
/// The test host of [`egress`]: a network namespace behind a veth pair, a /30 (host side .129).
const EGRESS_HOST: &str = "198.51.100.130";

/// The sandbox network of the networked hosts, on a runtime of its own (for its DNS forwarder).
struct Network {
    host: ignis_net::HostNetwork,
    _runtime: tokio::runtime::Runtime,
}

impl Network {
    fn start() -> Result<Network, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        let config = ignis_net::Config {
            range: NET_RANGE.parse().map_err(|e| format!("{e}"))?,
            allow: Vec::new(),
            dns: vec!["127.0.0.1:53".parse().map_err(|e| format!("{e}"))?],
            endpoint: None,
        };
        let host = {
            let _in = runtime.enter();
            ignis_net::HostNetwork::start(config).map_err(|e| format!("sandbox network: {e}"))?
        };
        Ok(Network { host, _runtime: runtime })
    }
}

fn setns(fd: BorrowedFd<'_>) -> Result<(), String> {
    // SAFETY: plain syscall on a namespace fd.
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// What it costs a new network namespace to get a link to the host, `n` times each: none, routed (Ignis's:
/// `ignis_net::link::Links::connect`), bridged (the host side a port of a bridge carrying the gateway, the
/// namespace's address a /16 on it). Made on a thread of its own, which goes back to the host's namespace after
/// each; the links are deleted (untimed) before the next.
fn link_setups(n: usize) -> Result<[Vec<Duration>; 3], String> {
    use ignis_net::link::{Links, Netlink};
    std::thread::scope(|s| {
        s.spawn(|| -> Result<[Vec<Duration>; 3], String> {
            let plan = ignis_net::plan::Plan::new(ROUTED_RANGE.parse().map_err(|e| format!("{e}"))?).map_err(|e| e.to_string())?;
            let links = std::sync::Arc::new(Links::new(plan).map_err(|e| format!("links: {e}"))?);
            let home = ignis_net::link::own_netns().map_err(|e| format!("own netns: {e}"))?;
            let mut host = Netlink::open().map_err(|e| format!("netlink: {e}"))?;
            let bridge = format!("igbr{}", std::process::id() % 100_000);
            host.add_bridge(&bridge).map_err(|e| format!("bridge: {e}"))?;
            let result = (|| {
                let br = host.index(&bridge).map_err(|e| e.to_string())?;
                let gateway = std::net::Ipv4Addr::from(BRIDGE_GATEWAY);
                host.add_address(br, gateway, 16).map_err(|e| format!("bridge address: {e}"))?;
                host.set_up(br).map_err(|e| e.to_string())?;
                let mut out: [Vec<Duration>; 3] = Default::default();
                for i in 0..n {
                    for (mode, times) in out.iter_mut().enumerate() {
                        let t = Instant::now();
                        // SAFETY: plain syscall; moves only this thread.
                        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                            return Err(format!("unshare: {}", std::io::Error::last_os_error()));
                        }
                        let made = (|| -> Result<(Option<ignis_net::link::Link>, Option<u32>), String> {
                            match mode {
                                0 => Ok((None, None)),
                                1 => Ok((Some(links.connect(0).map_err(|e| format!("routed link: {e}"))?), None)),
                                _ => {
                                    let name = format!("igbv{}-{i}", std::process::id() % 10_000);
                                    std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1").map_err(|e| e.to_string())?;
                                    let mut inside = Netlink::open().map_err(|e| e.to_string())?;
                                    inside.add_veth("eth0", &name, home.as_fd()).map_err(|e| format!("veth: {e}"))?;
                                    let port = host.index(&name).map_err(|e| e.to_string())?;
                                    host.set_master(port, br).map_err(|e| format!("bridge port: {e}"))?;
                                    host.set_up(port).map_err(|e| e.to_string())?;
                                    let eth0 = inside.index("eth0").map_err(|e| e.to_string())?;
                                    let address = std::net::Ipv4Addr::new(10, 207, 1 + (i / 250) as u8, 1 + (i % 250) as u8);
                                    inside.add_address(eth0, address, 16).map_err(|e| e.to_string())?;
                                    inside.set_up(eth0).map_err(|e| e.to_string())?;
                                    inside.add_route(eth0, Default::default(), Some(gateway)).map_err(|e| e.to_string())?;
                                    Ok((None, Some(port)))
                                }
                            }
                        })();
                        times.push(t.elapsed());
                        setns(home.as_fd())?;
                        let (link, port) = made?;
                        drop(link);
                        if let Some(port) = port {
                            host.delete_link(port).map_err(|e| format!("deleting a bridge port: {e}"))?;
                        }
                    }
                }
                Ok(out)
            })();
            if let Ok(br) = host.index(&bridge) {
                let _ = host.delete_link(br);
            }
            result
        })
        .join()
        .unwrap_or_else(|_| Err("the link thread panicked".into()))
    })
}

/// A network namespace with an address the sandboxes may reach (a public-looking one), deleted when dropped.
struct EgressHost {
    netns: String,
}

impl EgressHost {
    fn start() -> Result<EgressHost, String> {
        let netns = format!("ignis-bench-{}", std::process::id());
        let outside = format!("igbe{}", std::process::id() % 100_000);
        let ip = |args: &[&str]| -> Result<(), String> {
            let status = Command::new("ip").args(args).status().map_err(|e| format!("ip: {e}"))?;
            if status.success() { Ok(()) } else { Err(format!("ip {args:?}: {status}")) }
        };
        ip(&["netns", "add", &netns])?;
        let host = EgressHost { netns: netns.clone() };
        ip(&["link", "add", &outside, "type", "veth", "peer", "name", "eth0", "netns", &netns])?;
        ip(&["addr", "add", "198.51.100.129/30", "dev", &outside])?;
        ip(&["link", "set", &outside, "up"])?;
        ip(&["-n", &netns, "addr", "add", &format!("{EGRESS_HOST}/30"), "dev", "eth0"])?;
        ip(&["-n", &netns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &netns, "route", "add", "default", "via", "198.51.100.129"])?;
        Ok(host)
    }

    /// Accepts one connection on port 9000 in the namespace (on a thread of its own) and reads it to its end:
    /// the bytes per second from accept to end.
    fn sink(&self) -> Result<std::thread::JoinHandle<Result<f64, String>>, String> {
        let ns = std::fs::File::open(format!("/var/run/netns/{}", self.netns)).map_err(|e| format!("netns: {e}"))?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || -> Result<f64, String> {
            setns(ns.as_fd())?;
            let listener = std::net::TcpListener::bind((EGRESS_HOST, 9000)).map_err(|e| format!("sink: {e}"));
            let _ = ready_tx.send(listener.is_ok());
            let (mut conn, _) = listener?.accept().map_err(|e| format!("accept: {e}"))?;
            conn.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| e.to_string())?;
            let t = Instant::now();
            let mut buf = vec![0u8; 1 << 20];
            let mut total = 0u64;
            loop {
                match std::io::Read::read(&mut conn, &mut buf) {
                    Ok(0) => break,
                    Ok(n) => total += n as u64,
                    Err(e) => return Err(format!("sink read: {e}")),
                }
            }
            if total != EGRESS_BYTES {
                return Err(format!("the sink got {total} bytes, not {EGRESS_BYTES}"));
            }
            Ok(total as f64 / t.elapsed().as_secs_f64())
        });
        match ready_rx.recv_timeout(OP_TIMEOUT) {
            Ok(true) => Ok(handle),
            _ => Err(handle.join().ok().and_then(Result::err).unwrap_or_else(|| "the sink did not start".into())),
        }
    }
}

impl Drop for EgressHost {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).status();
    }
}

/// Egress throughput to a test host: the host itself sending, and a sandbox of the networked host (through its
/// link, the firewall and NAT); medians of [`EGRESS_ROUNDS`] alternating rounds, bytes per second.
fn egress(ctx: &Ctx) -> Result<(f64, f64), String> {
    let target = EgressHost::start()?;
    let send = format!("head -c {EGRESS_BYTES} /dev/zero > /dev/tcp/{EGRESS_HOST}/9000");
    let code = ctx.empty_code.parent().ok_or("no temporary directory")?.join("code-egress");
    std::fs::create_dir_all(&code).map_err(|e| e.to_string())?;
    std::fs::set_permissions(&code, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
    let bootstrap = code.join("bootstrap");
    std::fs::write(&bootstrap, format!("#!/bin/bash\n{send}\n")).map_err(|e| e.to_string())?;
    std::fs::set_permissions(&bootstrap, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
    let (mut host_rates, mut sandbox_rates) = (Vec::new(), Vec::new());
    for _ in 0..EGRESS_ROUNDS {
        let sink = target.sink()?;
        let mut sender = Command::new("bash").args(["-c", &send]).spawn().map_err(|e| format!("bash: {e}"))?;
        wait_child(&mut sender, Duration::from_secs(60))?;
        host_rates.push(sink.join().map_err(|_| "the sink panicked")??);

        let sink = target.sink()?;
        let mut sb = ctx.net_full.spawn(|_| ctx.sandbox_config(&code, "/var/task/bootstrap")).map_err(|e| format!("spawn: {e}"))?;
        let ended = wait_readable(sb.pidfd(), Duration::from_secs(60));
        let exit = if ended { sb.wait() } else { None };
        sb.destroy();
        if exit != Some(RuntimeExit::Code(0)) {
            return Err(format!("the sandbox's sender ended with {exit:?}"));
        }
        sandbox_rates.push(sink.join().map_err(|_| "the sink panicked")??);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok((median(host_rates), median(sandbox_rates)))
}

fn print_network(r: &Results, line: &str) {
    println!(
        "  {:<46} {:>5} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
        "networking (routed link per netns, NAT, firewall)", "n", "min", "p50", "p90", "p99", "max", "per s"
    );
    println!("{line}");
    let p50 = |kind: Kind, created: bool| {
        r.seq.get(&kind).and_then(|s| stats_ms(if created { &s.created } else { &s.done })).map(|s| s.p50)
    };
    for (on, off, what) in [
        (Kind::IgnisNet, Kind::Ignis, "netns reused (same tenant)"),
        (Kind::IgnisTracesNet, Kind::IgnisTraces, "a new netns, and link, each"),
    ] {
        let Some(s) = r.seq.get(&on) else { continue };
        let delta = match (p50(on, true), p50(off, true)) {
            (Some(a), Some(b)) => format!("{what}; p50 {:+.3} ms vs off", a - b),
            _ => what.to_string(),
        };
        row(&format!("{}: spawn -> exec ok", on.label()), stats_ms(&s.created).as_ref(), None, &delta);
        let delta = match (p50(on, false), p50(off, false)) {
            (Some(a), Some(b)) => format!("p50 {:+.3} ms vs off", a - b),
            _ => String::new(),
        };
        row("  spawn -> destroyed (whole life)", stats_ms(&s.done).as_ref(), Some(s.rate()), &delta);
    }
    let [none, routed, bridged] = &r.links;
    row("new netns, no link", stats_ms(none).as_ref(), None, "unshare(CLONE_NEWNET) only");
    row("new netns + routed link (Ignis's)", stats_ms(routed).as_ref(), None, "veth, /32s, routes, on the host: addr + route");
    row("new netns + bridged link", stats_ms(bridged).as_ref(), None, "veth, host side a bridge port, /16");
    let (host, sandbox) = r.egress;
    let gbit = |bytes_per_s: f64| bytes_per_s * 8.0 / 1e9;
    println!(
        "  egress to a test host, {} MiB, median of {EGRESS_ROUNDS}: host itself {:.2} Gbit/s, sandbox {:.2} Gbit/s = {:.0}% of the host's (target >= 80%)",
        EGRESS_BYTES >> 20,
        gbit(host),
        gbit(sandbox),
        100.0 * sandbox / host
    );
    println!("{line}");
}
