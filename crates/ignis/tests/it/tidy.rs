//! Invariants of the code base checked by machine: the pure crates do no IO
//! and depend on nothing that could.

use std::path::Path;

/// The `[dependencies]` of a workspace crate, by name.
fn dependencies(krate: &str) -> Vec<String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(krate).join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
    let mut in_dependencies = false;
    let mut names = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_dependencies = line == "[dependencies]";
        } else if in_dependencies && !line.is_empty() && !line.starts_with('#') {
            names.push(line.split(['.', '=', ' ']).next().unwrap_or("").to_string());
        }
    }
    names
}

#[test]
fn decision_crates_depend_on_nothing() {
    for krate in ["assignment", "counting", "placement", "queue"] {
        assert_eq!(dependencies(krate), Vec::<String>::new(), "crates/{krate} must stay pure (std only)");
    }
}

#[test]
fn sigv4_depends_only_on_hashing() {
    let mut deps = dependencies("sigv4");
    deps.sort();
    assert_eq!(deps, ["hex", "hmac", "sha2"], "crates/sigv4 must stay pure");
}

#[test]
fn no_unwrap_on_requests_in_the_front_end() {
    // The front end answers every input with an error, never a panic: no
    // `.unwrap()` outside its tests.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../frontend/src");
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        assert!(!code.contains(".unwrap()"), "{} calls .unwrap()", entry.path().display());
    }
}
