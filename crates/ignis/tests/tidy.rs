//! The crate graph's rules, checked by machine (a test binary of its own, apart
//! from the end-to-end `it`, so that it stays fast and needs no root):
//!
//! - (a) no workspace crate but the binary `ignis` depends on `ignis-frontend`
//!   (`fuzz/`, a workspace of its own, is not a member and not checked);
//! - (b) the pure crates do no IO: their dependencies are only other pure
//!   crates and [`PURE_EXTERNAL`], and their library sources (test modules and
//!   `src/bin/` tools left out) name none of [`IO`];
//! - (c) no service crate depends on `ignis-frontend`; a service crate that does
//!   not exist (yet) is skipped, not a failure;
//! - (d) `ignis-sigv4` depends only on hashing ([`SIGV4_DEPENDENCIES`]);
//! - (e) the front end and the service crates answer every input with an
//!   error, never a panic: no `.unwrap()` in their library sources.
//!
//! Dependencies are read from `cargo metadata --no-deps`: a path to
//! `ignis-frontend` has to go through workspace crates, so the members'
//! declared dependencies are the whole graph that matters. Every broken rule is
//! reported, each with the crate that breaks it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The only crate allowed to depend on the front end.
const BINARY: &str = "ignis";
const FRONTEND: &str = "ignis-frontend";

/// Crates of decision logic with no IO: time is passed in, state handed over.
const PURE: &[&str] = &[
    "ignis-assignment",
    "ignis-counting",
    "ignis-delivery",
    "ignis-placement",
    "ignis-queue",
    "ignis-ids",
    "ignis-cachepolicy",
];

/// External crates a pure crate may use. One added here must do
/// no IO itself (no files, sockets, processes, clocks or threads).
const PURE_EXTERNAL: &[&str] = &[
    // A stable hash of cache node names (ring placement): computation only.
    "sha2",
    // Derives `std::error::Error` for typed errors: code generation only.
    "thiserror",
];

/// What a pure crate's library sources must not name.
const IO: &[&str] =
    &["std::fs", "std::net", "std::process", "tokio", "SystemTime::now", "Instant::now", "thread::sleep"];

/// The services (and storage seams, and the image loader over them) below the front end; they must not call
/// back into it.
const SERVICES: &[&str] = &[
    "ignis-registry",
    "ignis-invoke",
    "ignis-queues",
    "ignis-pollers",
    "ignis-logs",
    "ignis-chunks",
    "ignis-images",
    "ignis-oci",
    "ignis-imagefs",
    "ignis-stripes",
    "ignis-runtimes",
];

/// All that `ignis-sigv4` may depend on: it verifies every request, so it stays pure.
const SIGV4_DEPENDENCIES: &[&str] = &["hex", "hmac", "sha2"];

struct Package {
    /// `src/lib.rs` (or wherever the library target starts), if the crate has one.
    lib: Option<PathBuf>,
    /// Dependencies by package name, with their kinds (`normal`, `dev`, `build`).
    dependencies: Vec<(String, String)>,
}

fn workspace() -> BTreeMap<String, Package> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline", "--no-deps", "--manifest-path"])
        .arg(&manifest)
        .output()
        .expect("run cargo metadata");
    assert!(output.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&output.stderr));
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("cargo metadata's JSON");
    let mut packages = BTreeMap::new();
    for package in metadata["packages"].as_array().expect("packages") {
        let name = package["name"].as_str().expect("a package name").to_string();
        let lib = package["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "lib")))
            .and_then(|t| t["src_path"].as_str())
            .map(PathBuf::from);
        let dependencies = package["dependencies"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| (d["name"].as_str().unwrap_or("").to_string(), d["kind"].as_str().unwrap_or("normal").to_string()))
            .collect();
        packages.insert(name, Package { lib, dependencies });
    }
    packages
}

/// The workspace crates `from` depends on, directly (any kind) or through the
/// normal and build dependencies of those, with the path to each.
fn reachable(packages: &BTreeMap<String, Package>, from: &str) -> BTreeMap<String, Vec<String>> {
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut stack: Vec<(String, Vec<String>)> = Vec::new();
    for (name, _) in &packages[from].dependencies {
        stack.push((name.clone(), vec![from.to_string(), name.clone()]));
    }
    while let Some((name, path)) = stack.pop() {
        let Some(package) = packages.get(&name) else { continue };
        if seen.contains_key(&name) {
            continue;
        }
        for (dep, kind) in &package.dependencies {
            if kind != "dev" {
                let mut longer = path.clone();
                longer.push(dep.clone());
                stack.push((dep.clone(), longer));
            }
        }
        seen.insert(name, path);
    }
    seen
}

/// The library's source files, from its root through `mod` declarations,
/// without `#[cfg(test)]` modules (inline or in their own file).
fn library_sources(root: &Path) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(file) = pending.pop() {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        let (code, modules) = non_test_code(&text);
        let dir = match file.file_name().and_then(|n| n.to_str()) {
            Some("lib.rs" | "main.rs" | "mod.rs") => file.parent().unwrap().to_path_buf(),
            _ => file.with_extension(""),
        };
        for module in modules {
            let flat = dir.join(format!("{module}.rs"));
            pending.push(if flat.exists() { flat } else { dir.join(&module).join("mod.rs") });
        }
        files.push((file, code));
    }
    files
}

/// The text of a file without comments and `#[cfg(test)]` items (blank
/// lines in their place, so that lines keep their numbers), and the
/// modules it declares in files of their own (`mod name;`) outside those.
fn non_test_code(text: &str) -> (String, Vec<String>) {
    let mut code = String::new();
    let mut modules = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let line = line.split("//").next().unwrap_or("");
        let trimmed = line.trim();
        if trimmed == "#[cfg(test)]" {
            // Skip the item: to its `;`, or to the brace that closes it.
            let mut depth = 0i32;
            code.push('\n');
            for item in lines.by_ref() {
                code.push('\n');
                let item = item.split("//").next().unwrap_or("");
                depth += item.matches('{').count() as i32 - item.matches('}').count() as i32;
                if depth <= 0 && (item.contains('}') || item.trim_end().ends_with(';')) {
                    break;
                }
            }
            continue;
        }
        let declared = ["mod ", "pub mod ", "pub(crate) mod "].iter().find_map(|p| trimmed.strip_prefix(p));
        if let Some(name) = declared.and_then(|rest| rest.strip_suffix(';')) {
            modules.push(name.trim().to_string());
        }
        code.push_str(line);
        code.push('\n');
    }
    (code, modules)
}

/// Every broken rule, as "crate: what".
fn violations(packages: &BTreeMap<String, Package>) -> Vec<String> {
    let mut broken = Vec::new();
    // (a)
    for name in packages.keys().filter(|n| *n != BINARY && *n != FRONTEND) {
        if let Some(path) = reachable(packages, name).get(FRONTEND) {
            broken.push(format!("{name}: depends on {FRONTEND} ({}); only `{BINARY}` may", path.join(" -> ")));
        }
    }
    // (b)
    let pure: BTreeSet<&str> = PURE.iter().copied().collect();
    for name in PURE {
        let Some(package) = packages.get(*name) else {
            broken.push(format!("{name}: a pure crate that is not in the workspace (renamed? update PURE)"));
            continue;
        };
        for (dep, kind) in &package.dependencies {
            if kind != "dev" && !pure.contains(dep.as_str()) && !PURE_EXTERNAL.contains(&dep.as_str()) {
                broken.push(format!("{name}: pure, but has the {kind} dependency {dep} (neither pure nor in PURE_EXTERNAL)"));
            }
        }
        let Some(lib) = &package.lib else {
            broken.push(format!("{name}: a pure crate without a library"));
            continue;
        };
        for (file, code) in library_sources(lib) {
            for (number, line) in code.lines().enumerate() {
                for io in IO.iter().filter(|io| line.contains(*io)) {
                    broken.push(format!("{name}: pure, but {}:{} names `{io}`", file.display(), number + 1));
                }
            }
        }
    }
    // (c)
    for name in SERVICES.iter().filter(|n| packages.contains_key(**n)) {
        if let Some(path) = reachable(packages, name).get(FRONTEND) {
            broken.push(format!("{name}: a service, but depends on {FRONTEND} ({})", path.join(" -> ")));
        }
    }
    broken
}

#[test]
fn the_crate_graph_keeps_its_rules() {
    let packages = workspace();
    assert!(packages.contains_key(BINARY) && packages.contains_key(FRONTEND), "cargo metadata lists the workspace");
    let broken = violations(&packages);
    assert!(broken.is_empty(), "the crate graph breaks its rules:\n  {}", broken.join("\n  "));
}

#[test]
fn test_code_and_comments_are_left_out() {
    let text = "//! Does no std::fs.\nuse a::b; // tokio\nmod real;\n#[cfg(test)]\nmod tests;\n\
                #[cfg(test)]\nmod inline {\n    fn f() {\n        std::fs::read(\"x\");\n    }\n}\nfn g() {}\n";
    let (code, modules) = non_test_code(text);
    assert_eq!(modules, ["real"]);
    assert!(!code.contains("std::fs") && !code.contains("tokio"), "{code}");
    assert_eq!(code.lines().position(|l| l.contains("fn g()")), Some(11), "lines keep their numbers: {code}");
}

#[test]
fn sigv4_depends_only_on_hashing() {
    let packages = workspace();
    let sigv4 = packages.get("ignis-sigv4").expect("ignis-sigv4 is a workspace crate");
    let mut normal: Vec<&str> =
        sigv4.dependencies.iter().filter(|(_, kind)| kind == "normal").map(|(name, _)| name.as_str()).collect();
    normal.sort();
    assert_eq!(normal, SIGV4_DEPENDENCIES, "ignis-sigv4 must stay pure");
}

#[test]
fn no_unwrap_in_the_front_end_or_the_services() {
    let packages = workspace();
    let mut found = Vec::new();
    for name in std::iter::once(&FRONTEND).chain(SERVICES) {
        let Some(lib) = packages.get(*name).and_then(|p| p.lib.as_ref()) else { continue };
        for (file, code) in library_sources(lib) {
            for (n, line) in code.lines().enumerate() {
                if line.contains(".unwrap()") {
                    found.push(format!("{name}: {}:{} calls .unwrap()", file.display(), n + 1));
                }
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}
