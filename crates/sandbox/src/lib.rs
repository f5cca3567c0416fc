//! Linux isolation for one function runtime.
//!
//! (API contract; implementation in progress.)
//!
//! A [`Host`] is created once per worker. [`Host::spawn`] builds one sandbox:
//! a process `ignis-init` that is pid 1 of new pid, mount, network, ipc and uts
//! namespaces, inside its own cgroup, which pivot_roots into a fresh root holding
//! only the read-only runtime base, the code at `/var/task` (read-only) and a
//! size-bounded `/tmp`, hands the worker a TCP listener bound to 127.0.0.1:9001
//! inside the sandbox's network namespace, then forks and execs the entrypoint
//! as an unprivileged user. All mounts live in the sandbox's own mount namespace,
//! so they vanish with it; the only host state is the cgroup, which
//! [`Sandbox::destroy`] removes.

use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

pub struct SandboxConfig {
    /// Unique id, `[a-z0-9-]{1,64}`; names the sandbox's cgroup.
    pub id: String,
    /// Host directory bind-mounted read-only at `/var/task`.
    pub code_dir: PathBuf,
    /// Hard memory limit (no swap).
    pub memory_mb: u32,
    /// Size bound of `/tmp`.
    pub tmp_mb: u32,
    /// Whole environment of the entrypoint.
    pub env: Vec<(String, String)>,
    /// Absolute path inside the sandbox, e.g. `/var/task/bootstrap`.
    pub entrypoint: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("entrypoint {path}: {source}")]
    Entrypoint { path: String, source: std::io::Error },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

/// How the runtime ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeExit {
    Code(i32),
    Signal(i32),
}

pub struct Host {}

pub struct Sandbox {
    /// Listener on 127.0.0.1:9001 in the sandbox's network namespace (non-blocking).
    pub runtime_api: TcpListener,
    /// Read end of the runtime's stdout and stderr (non-blocking).
    pub output: OwnedFd,
}
