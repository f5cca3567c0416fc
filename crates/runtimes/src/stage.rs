//! Filling a staging directory with a base's files, from the host: copies, text files, tools run
//! (`pip`, `compileall`, `ldd`). Every path inside the base is given relative to its root, never
//! with a leading `/`. Modes, owners and times written here do not matter: the layer normalises
//! them (`layout.rs`).

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::BuildError;
use crate::recipe;

/// How much of a failed tool's stderr an error keeps (its end).
const STDERR_TAIL: usize = 4096;

/// A staging directory: the future root of a base.
pub(crate) struct Stage {
    pub(crate) root: PathBuf,
}

impl Stage {
    /// The host path of `relative` inside the base.
    pub(crate) fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative.trim_start_matches('/'))
    }

    /// Creates a directory (and its parents) inside the base.
    pub(crate) fn dir(&self, relative: &str) -> Result<(), BuildError> {
        let path = self.path(relative);
        fs::create_dir_all(&path).map_err(|source| BuildError::io(&path, source))
    }

    /// Writes a text file inside the base, executable or not.
    pub(crate) fn write(&self, relative: &str, contents: &str, executable: bool) -> Result<(), BuildError> {
        let path = self.parent_made(relative)?;
        fs::write(&path, contents).map_err(|source| BuildError::io(&path, source))?;
        set_mode(&path, if executable { 0o755 } else { 0o644 })
    }

    /// Copies a host file (following links) to `relative` inside the base.
    pub(crate) fn copy(&self, host: &Path, relative: &str) -> Result<(), BuildError> {
        let path = self.parent_made(relative)?;
        fs::copy(host, &path).map_err(|source| BuildError::io(host, source))?;
        Ok(())
    }

    /// Makes `relative` a symbolic link to `target`.
    pub(crate) fn link(&self, target: &str, relative: &str) -> Result<(), BuildError> {
        let path = self.parent_made(relative)?;
        symlink(target, &path).map_err(|source| BuildError::io(&path, source))
    }

    /// Removes a directory tree inside the base, if it is there.
    pub(crate) fn remove(&self, relative: &str) -> Result<(), BuildError> {
        let path = self.path(relative);
        if !path.exists() {
            return Ok(());
        }
        fs::remove_dir_all(&path).map_err(|source| BuildError::io(&path, source))
    }

    /// Copies a host directory tree to `relative`, leaving out what `excluded` names (by path
    /// relative to `host`). A link that stays inside the tree is kept as a link; any other is
    /// replaced by what it points at, or left out if it points nowhere.
    pub(crate) fn copy_tree(
        &self,
        host: &Path,
        relative: &str,
        excluded: &dyn Fn(&str) -> bool,
    ) -> Result<(), BuildError> {
        self.dir(relative)?;
        let mut pending = vec![String::new()];
        while let Some(sub) = pending.pop() {
            let from = host.join(&sub);
            let entries = fs::read_dir(&from).map_err(|source| BuildError::io(&from, source))?;
            for entry in entries {
                let entry = entry.map_err(|source| BuildError::io(&from, source))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let rel = if sub.is_empty() { name } else { format!("{sub}/{name}") };
                if excluded(&rel) {
                    continue;
                }
                let source = entry.path();
                let dest = format!("{relative}/{rel}");
                let kind = entry.file_type().map_err(|e| BuildError::io(&source, e))?;
                if kind.is_dir() {
                    self.dir(&dest)?;
                    pending.push(rel);
                } else if kind.is_symlink() {
                    let target = fs::read_link(&source).map_err(|e| BuildError::io(&source, e))?;
                    let inside = target.is_relative() && !target.components().any(|c| c.as_os_str() == "..");
                    if inside {
                        self.link(&target.to_string_lossy(), &dest)?;
                    } else if source.is_file() {
                        self.copy(&source, &dest)?;
                    }
                } else if kind.is_file() {
                    self.copy(&source, &dest)?;
                }
            }
        }
        Ok(())
    }

    /// Copies, at their host paths, the libraries every ELF file in the base needs (as `ldd`
    /// resolves them; the dynamic loader among them), and the libraries `extra` names.
    /// Answers how many were added.
    pub(crate) fn add_libraries(&self, extra: &[PathBuf]) -> Result<usize, BuildError> {
        let mut needed = BTreeSet::new();
        let mut files = elf_files(&self.root)?;
        files.extend(extra.iter().cloned());
        for file in &files {
            let output = run(Command::new("ldd").arg(file), "ldd", &[0, 1])?;
            let libraries = recipe::parse_ldd(&output)
                .map_err(|library| BuildError::Library { file: file.clone(), library })?;
            needed.extend(libraries.into_iter().filter(|library| !Path::new(library).starts_with(&self.root)));
        }
        for file in extra {
            needed.insert(file.to_string_lossy().into_owned());
        }
        for library in &needed {
            self.copy(Path::new(library), library)?;
        }
        Ok(needed.len())
    }

    fn parent_made(&self, relative: &str) -> Result<PathBuf, BuildError> {
        let path = self.path(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|source| BuildError::io(parent, source))?;
        }
        Ok(path)
    }
}

/// Sets a file's permission bits.
pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<(), BuildError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|source| BuildError::io(path, source))
}

/// Every regular file under `root` that starts with the ELF magic, in path order.
fn elf_files(root: &Path) -> Result<Vec<PathBuf>, BuildError> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).map_err(|source| BuildError::io(&dir, source))? {
            let entry = entry.map_err(|source| BuildError::io(&dir, source))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(|source| BuildError::io(&path, source))?;
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() {
                let mut magic = [0u8; 4];
                let mut file = fs::File::open(&path).map_err(|source| BuildError::io(&path, source))?;
                if file.read(&mut magic).map_err(|source| BuildError::io(&path, source))? == 4 && magic == *b"\x7fELF" {
                    found.push(path);
                }
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Runs a tool to its end; its stdout if it exits with one of `ok` (its stderr's end otherwise).
pub(crate) fn run(command: &mut Command, tool: &str, ok: &[i32]) -> Result<String, BuildError> {
    let output = command.output().map_err(|source| BuildError::Tool {
        tool: tool.to_string(),
        status: "could not start".to_string(),
        stderr: source.to_string(),
    })?;
    if output.status.code().is_some_and(|code| ok.contains(&code)) {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let start = stderr.len().saturating_sub(STDERR_TAIL);
    let start = (start..stderr.len()).find(|&i| stderr.is_char_boundary(i)).unwrap_or(stderr.len());
    let stderr = stderr[start..].to_string();
    Err(BuildError::Tool { tool: tool.to_string(), status: output.status.to_string(), stderr })
}
