//! Function code: zips validated and unpacked once, content-addressed by the
//! SHA-256 of the zip bytes.
//!
//! # Holds
//!
//! A tree stays on disk while something holds it: a [`CodeHold`] (cheap to
//! clone) is handed out by [`Store::put_code`] (inside [`Code`]) and
//! [`Store::hold_code`]; whoever uses a tree (a function record, a version, a
//! sandbox that has it mounted, an upload on its way to a record) keeps one.
//! When the last hold of a tree is dropped, the tree is removed at once (moved
//! aside under the holds' mutex, deleted by a thread of its own), so code that
//! nothing uses does not wait for the next start to go. Invariants:
//!
//! - Every hold of a tree shares one generation; a generation's end removes
//!   the tree only if no newer generation was started meanwhile (a new hold
//!   taken between the last drop and its cleanup keeps the tree).
//! - [`Store::put_code`] takes its hold before it looks at the disk, so a
//!   tree it finds cannot be removed under it.
//! - Leftovers of removals cut short (`.tmp-*`) go at the next open.
//! - After [`Store::keep_code`] (a process that stops: its records and
//!   sandboxes go from memory, its functions stay) nothing is removed.
//!
//! # Merged trees
//!
//! [`Store::merge_code`] makes one tree of several (a function's layers, for
//! `/opt`): each part copied in order over the ones before (a later part's
//! file, link or directory replaces what an earlier one had at that path;
//! directories merge). It is a code tree like any other, named by
//! [`merged_name`] (a SHA-256 over a domain prefix and the parts' names, in
//! order), held and removed the same way. Its parts are trees this module
//! unpacked, so it copies only regular files (hard links where it can: trees
//! never change), directories and symlinks (verbatim, never followed), and
//! writes only through directories it made itself.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Cursor, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::{Store, StoreError, io_err};

/// The message Lambda gives for a zip it cannot read.
const CORRUPT_MSG: &str =
    "Could not unzip uploaded file. Please check your file, then try to upload again.";
/// Longest symlink target accepted.
const MAX_LINK_TARGET: u64 = 4096;
/// Longest entry name accepted (bytes).
const MAX_NAME: usize = 4096;
const TMP_PREFIX: &str = ".tmp-";

/// Limits applied when a zip is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRules {
    /// Maximum total size of the unpacked files (bytes actually decompressed,
    /// not the sizes the zip claims). Lambda's limit is 262 144 000.
    pub max_unzipped_bytes: u64,
    /// Maximum number of zip entries, and of paths (files, directories,
    /// symlinks, including implied parent directories) created.
    pub max_files: usize,
    /// Whether a top-level `bootstrap` (regular file or symlink) is required.
    pub require_bootstrap: bool,
}

impl Default for CodeRules {
    /// Lambda's unzipped limit, 50 000 entries, bootstrap not required.
    fn default() -> Self {
        CodeRules {
            max_unzipped_bytes: 262_144_000,
            max_files: 50_000,
            require_bootstrap: false,
        }
    }
}

/// A stored code package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code {
    /// SHA-256 of the zip bytes.
    pub sha256: [u8; 32],
    /// Size of the zip (Lambda's `CodeSize`).
    pub zip_size: u64,
    /// Total bytes of the unpacked files and symlink targets.
    pub unzipped_size: u64,
    /// Keeps the tree on disk; clone it into whatever uses the tree.
    pub hold: CodeHold,
}

/// A tree made by [`Store::merge_code`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedCode {
    /// Total bytes of its files and symlink targets.
    pub unzipped_size: u64,
    /// Keeps the tree on disk (its name is [`CodeHold::sha256_hex`]).
    pub hold: CodeHold,
}

/// Keeps one code tree on disk: the tree is removed when the last hold of it
/// (every clone, and every other hold of the same tree) is dropped.
#[derive(Clone)]
pub struct CodeHold(Arc<Held>);

/// A hold that does not keep the tree: [`WeakCodeHold::upgrade`] gives the
/// hold back while some other hold still keeps it.
#[derive(Clone)]
pub struct WeakCodeHold(Weak<Held>);

impl CodeHold {
    /// The tree's name under `<data_dir>/code/`.
    pub fn sha256_hex(&self) -> &str {
        &self.0.hex
    }

    /// The tree this hold keeps.
    pub fn dir(&self) -> PathBuf {
        self.0.holds.root.join(&self.0.hex)
    }

    /// A reference that does not keep the tree.
    pub fn downgrade(&self) -> WeakCodeHold {
        WeakCodeHold(Arc::downgrade(&self.0))
    }
}

impl WeakCodeHold {
    /// The hold, if the tree is still kept by another.
    pub fn upgrade(&self) -> Option<CodeHold> {
        self.0.upgrade().map(CodeHold)
    }
}

impl std::fmt::Debug for CodeHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CodeHold").field(&self.0.hex).finish()
    }
}

impl PartialEq for CodeHold {
    fn eq(&self, other: &Self) -> bool {
        self.0.hex == other.0.hex
    }
}

impl Eq for CodeHold {}

/// Every held tree of a store: hex → (generation, the holds' shared part).
pub(crate) struct Holds {
    root: PathBuf,
    held: Mutex<HashMap<String, (u64, Weak<Held>)>>,
    /// Set by [`Store::keep_code`]: the holders are going away, not what they hold.
    keep: AtomicBool,
    generation: AtomicU64,
    tmp_counter: AtomicU64,
    /// Set by [`Store::on_code_removed`]: told of each tree before it goes.
    removed: std::sync::OnceLock<OnRemoved>,
}

/// What [`Store::on_code_removed`] calls.
type OnRemoved = Box<dyn Fn(&Path) + Send + Sync>;

/// What all holds of one tree (of one generation) share; its drop is the
/// last hold's end.
struct Held {
    hex: String,
    generation: u64,
    holds: Arc<Holds>,
}

impl Holds {
    pub(crate) fn new(root: PathBuf) -> Arc<Holds> {
        Arc::new(Holds {
            root,
            held: Mutex::default(),
            keep: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            tmp_counter: AtomicU64::new(0),
            removed: std::sync::OnceLock::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, Weak<Held>)>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A hold of `hex`: shares the live generation, or starts a new one.
    fn hold(self: &Arc<Self>, hex: &str) -> CodeHold {
        let mut held = self.lock();
        if let Some(live) = held.get(hex).and_then(|(_, weak)| weak.upgrade()) {
            return CodeHold(live);
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let live = Arc::new(Held { hex: hex.to_string(), generation, holds: self.clone() });
        held.insert(hex.to_string(), (generation, Arc::downgrade(&live)));
        CodeHold(live)
    }

    fn is_held(&self, hex: &str) -> bool {
        self.lock().get(hex).is_some_and(|(_, weak)| weak.strong_count() > 0)
    }

    /// The end of `generation` of `hex`: moves the tree aside (unless a newer
    /// generation holds it) and deletes it in the background.
    fn release(&self, hex: &str, generation: u64) {
        let aside = {
            let mut held = self.lock();
            match held.get(hex) {
                Some((g, _)) if *g == generation => {
                    held.remove(hex);
                }
                _ => return,
            }
            if self.keep.load(Ordering::Acquire) {
                return;
            }
            let aside = self.tmp_path();
            match fs::rename(self.root.join(hex), &aside) {
                Ok(()) => aside,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                Err(e) => {
                    tracing::warn!(code = %hex, error = %e, "cannot remove the unused code tree");
                    return;
                }
            }
        };
        // Outside the lock: what it calls may drop holds of its own.
        if let Some(removed) = self.removed.get() {
            removed(&self.root.join(hex));
        }
        let remove = move || {
            if let Err(e) = remove_path(&aside) {
                tracing::warn!(path = %aside.display(), error = %e, "cannot remove an unused code tree");
            }
        };
        // Deleting a big tree takes a while: never on the dropping thread (often an async one).
        let spawned = std::thread::Builder::new().name("ignis-code-rm".into()).spawn(remove.clone());
        if spawned.is_err() {
            remove();
        }
    }

    /// A fresh name for a temporary tree under the root (removed at the next open if left).
    fn tmp_path(&self) -> PathBuf {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        self.root.join(format!("{TMP_PREFIX}{}-{n}", std::process::id()))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.holds.release(&self.hex, self.generation);
    }
}

impl Code {
    /// Lower-case hex of the digest: the directory name under `<data_dir>/code/`.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }

    /// Standard base64 of the raw digest (Lambda's `CodeSha256`).
    pub fn sha256_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.sha256)
    }
}

/// Why a zip was refused. Messages other than `Io` are meant for API users.
#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    /// The zip cannot be read, or its entries conflict (a file and a directory of the same name...).
    #[error("{0}")]
    Corrupt(String),
    /// The unpacked content exceeds `max_unzipped_bytes`.
    #[error("Unzipped size must be smaller than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The zip has more than `max_files` entries or paths.
    #[error("Uploaded file must contain at most {limit} files and directories")]
    TooManyFiles {
        /// The limit.
        limit: usize,
    },
    /// An entry name is absolute, escapes the root, contains NUL, or goes
    /// through a symlink of the archive.
    #[error("Uploaded file contains an unsafe path: {0:?}")]
    UnsafePath(String),
    /// `require_bootstrap` is set and there is no top-level `bootstrap`.
    #[error("Uploaded file must contain a file named bootstrap at its top level")]
    NoBootstrap,
    /// A server-side file-system error (not the user's fault).
    #[error("internal error while storing code: {0}")]
    Io(#[from] io::Error),
}

fn corrupt() -> CodeError {
    CodeError::Corrupt(CORRUPT_MSG.to_string())
}

/// Creates `<data_dir>/code` (mode 0755) and removes leftover temporary trees.
pub(crate) fn prepare_root(data_dir: &Path) -> Result<PathBuf, StoreError> {
    let root = data_dir.join("code");
    fs::create_dir_all(&root).map_err(io_err(format!("creating {}", root.display())))?;
    fs::set_permissions(&root, Permissions::from_mode(0o755))
        .map_err(io_err(format!("setting permissions of {}", root.display())))?;
    let entries = fs::read_dir(&root).map_err(io_err(format!("listing {}", root.display())))?;
    for entry in entries {
        let entry = entry.map_err(io_err(format!("listing {}", root.display())))?;
        if entry
            .file_name()
            .as_bytes()
            .starts_with(TMP_PREFIX.as_bytes())
        {
            let path = entry.path();
            remove_path(&path).map_err(io_err(format!("removing {}", path.display())))?;
        }
    }
    Ok(root)
}

fn remove_path(path: &Path) -> io::Result<()> {
    // `remove_dir_all` never follows symlinks.
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn is_sha_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Zips a directory's contents (not the directory itself), in a stable order with fixed
/// timestamps, keeping unix permissions. Symbolic links are stored as links, never followed.
pub fn zip_tree(root: &Path) -> Result<Vec<u8>, String> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    add_dir(&mut zip, root, "")?;
    let cursor = zip.finish().map_err(|e| format!("cannot build the zip of {}: {e}", root.display()))?;
    Ok(cursor.into_inner())
}

fn add_dir(zip: &mut zip::ZipWriter<Cursor<Vec<u8>>>, dir: &Path, prefix: &str) -> Result<(), String> {
    let read_error = |p: &Path, e: std::io::Error| format!("cannot read {}: {e}", p.display());
    let mut entries = fs::read_dir(dir)
        .map_err(|e| read_error(dir, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_error(dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| format!("cannot zip {}: the name is not UTF-8", path.display()))?;
        let name = format!("{prefix}{name}");
        let metadata = fs::symlink_metadata(&path).map_err(|e| read_error(&path, e))?;
        let mode = metadata.permissions().mode();
        let zip_error = |e: zip::result::ZipError| format!("cannot zip {}: {e}", path.display());
        let file_type = metadata.file_type();
        if file_type.is_symlink() {
            let target = fs::read_link(&path).map_err(|e| read_error(&path, e))?;
            let target = target
                .to_str()
                .ok_or_else(|| format!("cannot zip {}: the link target is not UTF-8", path.display()))?;
            zip.add_symlink(&name, target, zip::write::SimpleFileOptions::default().unix_permissions(mode))
                .map_err(zip_error)?;
        } else if file_type.is_dir() {
            zip.add_directory(format!("{name}/"), zip::write::SimpleFileOptions::default().unix_permissions(mode))
                .map_err(zip_error)?;
            add_dir(zip, &path, &format!("{name}/"))?;
        } else if file_type.is_file() {
            let data = fs::read(&path).map_err(|e| read_error(&path, e))?;
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .unix_permissions(mode)
                .large_file(data.len() >= u32::MAX as usize);
            zip.start_file(&name, options).map_err(zip_error)?;
            zip.write_all(&data).map_err(|e| format!("cannot zip {}: {e}", path.display()))?;
        } else {
            return Err(format!(
                "cannot zip {}: not a regular file, directory or symbolic link",
                path.display()
            ));
        }
    }
    Ok(())
}

/// What [`merged_name`] hashes before the parts' names: no zip's SHA-256 is a merged tree's name.
const MERGED_DOMAIN: &[u8] = b"ignis merged code tree v1\0";

/// The name (lower-case hex SHA-256) of the tree merging the trees named
/// `parts`, in this order: the hash of a domain prefix and each part's name
/// followed by a newline.
pub fn merged_name(parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    hash.update(MERGED_DOMAIN);
    for part in parts {
        hash.update(part.as_bytes());
        hash.update(b"\n");
    }
    hex::encode(hash.finalize())
}

/// Copies the tree `src` over `dst` (a directory this module made): see the module docs' merged trees.
fn merge_into(src: &Path, dst: &Path) -> io::Result<()> {
    let mut entries = fs::read_dir(src)?.collect::<Result<Vec<_>, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let kind = fs::symlink_metadata(&from)?.file_type();
        let there = fs::symlink_metadata(&to).ok().map(|m| m.file_type());
        if kind.is_dir() {
            if !there.is_some_and(|t| t.is_dir()) {
                if there.is_some() {
                    remove_path(&to)?;
                }
                fs::DirBuilder::new().mode(0o755).create(&to)?;
                fs::set_permissions(&to, Permissions::from_mode(0o755))?;
            }
            merge_into(&from, &to)?;
            File::open(&to)?.sync_all()?;
            continue;
        }
        if there.is_some() {
            remove_path(&to)?;
        }
        if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
        } else if kind.is_file() && fs::hard_link(&from, &to).is_err() {
            // Another file system, or too many links: a copy.
            let mode = if fs::metadata(&from)?.permissions().mode() & 0o111 != 0 { 0o755 } else { 0o644 };
            let mut out = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&to)?;
            io::copy(&mut File::open(&from)?, &mut out)?;
            out.set_permissions(Permissions::from_mode(mode))?;
            out.sync_all()?;
        }
        // Nothing else is in a tree this module unpacked.
    }
    Ok(())
}

/// The bytes of a tree's files and symlink targets, and how many paths it has (beyond the root).
fn tree_size(dir: &Path) -> io::Result<(u64, usize)> {
    let (mut bytes, mut paths) = (0u64, 0usize);
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let metadata = fs::symlink_metadata(entry.path())?;
        paths += 1;
        if metadata.is_dir() {
            let (b, p) = tree_size(&entry.path())?;
            bytes = bytes.saturating_add(b);
            paths += p;
        } else {
            bytes = bytes.saturating_add(metadata.len());
        }
    }
    Ok((bytes, paths))
}

impl Store {
    /// The tree merging `parts` (trees of this store, each held), in order, made
    /// unless it exists: named by [`merged_name`], checked against `rules`'
    /// size and path limits (the merged result's; `require_bootstrap` does not
    /// apply). Like [`Store::put_code`], it appears atomically and only
    /// complete, and its hold is taken before the disk is looked at. Blocks:
    /// call it off the async runtime's threads.
    pub fn merge_code(&self, parts: &[CodeHold], rules: &CodeRules) -> Result<MergedCode, CodeError> {
        let names: Vec<&str> = parts.iter().map(CodeHold::sha256_hex).collect();
        let hex = merged_name(&names);
        let final_dir = self.code_root.join(&hex);
        let hold = self.code_holds.hold(&hex);
        let check = |dir: &Path| -> Result<u64, CodeError> {
            let (bytes, paths) = tree_size(dir)?;
            if bytes > rules.max_unzipped_bytes {
                return Err(CodeError::TooLarge { limit: rules.max_unzipped_bytes });
            }
            if paths > rules.max_files {
                return Err(CodeError::TooManyFiles { limit: rules.max_files });
            }
            Ok(bytes)
        };
        if fs::symlink_metadata(&final_dir).is_ok_and(|m| m.is_dir()) {
            return Ok(MergedCode { unzipped_size: check(&final_dir)?, hold });
        }
        let unzipped_size = self.make_tree(&final_dir, |tmp| {
            parts.iter().try_for_each(|part| merge_into(&part.dir(), tmp))?;
            check(tmp)
        })?;
        Ok(MergedCode { unzipped_size, hold })
    }

    /// Makes the tree `final_dir`: `fill` writes it into a fresh temporary
    /// directory (and answers its size), which is then made durable and
    /// renamed into place (a concurrent maker of the same content may have
    /// won: the same tree). A failure leaves nothing.
    fn make_tree(&self, final_dir: &Path, fill: impl FnOnce(&Path) -> Result<u64, CodeError>) -> Result<u64, CodeError> {
        let tmp = self.make_tmp_dir()?;
        let made = fill(&tmp).and_then(|size| {
            fs::set_permissions(&tmp, Permissions::from_mode(0o755))?;
            File::open(&tmp)?.sync_all()?;
            Ok(size)
        });
        let size = match made {
            Ok(size) => size,
            Err(e) => {
                let _ = remove_path(&tmp);
                return Err(e);
            }
        };
        if let Err(e) = fs::rename(&tmp, final_dir) {
            let _ = remove_path(&tmp);
            if !fs::symlink_metadata(final_dir).is_ok_and(|m| m.is_dir()) {
                return Err(CodeError::Io(e));
            }
        }
        File::open(&self.code_root)?.sync_all()?;
        Ok(size)
    }

    /// Validates `zip` against `rules` and unpacks it (once) into
    /// `<data_dir>/code/<sha256-hex>/`.
    ///
    /// The tree becomes visible atomically and only complete; a refused or
    /// failed upload leaves nothing. If the same zip was stored before, it is
    /// validated again (against these `rules`) without being unpacked.
    ///
    /// Unpacking rules: entry names must be relative, free of `..` components,
    /// NUL and backslash traversal; no entry may go through a symlink of the
    /// archive; the decompressed bytes are counted while decompressing. Regular
    /// files get mode 0755 if their unix mode has any execute bit, else 0644
    /// (so the unprivileged sandbox user can read them; setuid/setgid/sticky are
    /// never kept); directories get 0755; symlinks are created last, verbatim
    /// (their targets are only ever resolved inside a sandbox).
    pub fn put_code(&self, zip: &[u8], rules: &CodeRules) -> Result<Code, CodeError> {
        let sha256: [u8; 32] = Sha256::digest(zip).into();
        let hex = hex::encode(sha256);
        let final_dir = self.code_root.join(&hex);
        let zip_size = zip.len() as u64;
        // Before looking: a tree found now stays.
        let hold = self.code_holds.hold(&hex);

        let exists = fs::symlink_metadata(&final_dir)
            .map(|m| m.is_dir())
            .unwrap_or(false);
        let unzipped_size = if exists {
            unpack(zip, rules, None)?
        } else {
            self.make_tree(&final_dir, |tmp| unpack(zip, rules, Some(tmp)))?
        };
        Ok(Code {
            sha256,
            zip_size,
            unzipped_size,
            hold,
        })
    }

    /// Unpacks `zip` as [`Store::put_code`] does (against `rules`), as the tree named `name` rather than by
    /// the zip's SHA-256, unless that tree exists: a tree another node made (a code SHA-256 or a
    /// [`merged_name`]), shipped as [`zip_tree`] zipped it. Returns its hold. Blocks: call it off the async
    /// runtime's threads.
    pub fn put_code_named(&self, name: &str, zip: &[u8], rules: &CodeRules) -> Result<CodeHold, CodeError> {
        if !is_sha_hex(name) {
            return Err(CodeError::UnsafePath(name.to_string()));
        }
        let final_dir = self.code_root.join(name);
        // Before looking: a tree found now stays.
        let hold = self.code_holds.hold(name);
        if !fs::symlink_metadata(&final_dir).is_ok_and(|m| m.is_dir()) {
            self.make_tree(&final_dir, |tmp| unpack(zip, rules, Some(tmp)))?;
        }
        Ok(hold)
    }

    /// Whether the tree `name` is on disk.
    pub fn has_code(&self, name: &str) -> bool {
        is_sha_hex(name) && fs::symlink_metadata(self.code_root.join(name)).is_ok_and(|m| m.is_dir())
    }

    /// A hold of the tree `sha256_hex` (see [`CodeHold`]): it stays on disk
    /// until the last hold is dropped. Holding a tree that is not there is
    /// allowed (it keeps nothing; a later [`Store::put_code`] shares it).
    pub fn hold_code(&self, sha256_hex: &str) -> CodeHold {
        let hex = if is_sha_hex(sha256_hex) { sha256_hex } else { ".invalid" };
        self.code_holds.hold(hex)
    }

    /// `<data_dir>/code/<hex>`: the unpacked tree of the code whose
    /// [`Code::sha256_hex`] is `sha256_hex`. If `sha256_hex` is not 64 lower-case
    /// hex digits, returns a path under `code/` that never exists.
    pub fn code_dir(&self, sha256_hex: &str) -> PathBuf {
        if is_sha_hex(sha256_hex) {
            self.code_root.join(sha256_hex)
        } else {
            self.code_root.join(".invalid")
        }
    }

    /// Calls `removed` with a tree's directory ([`Store::code_dir`]) just
    /// before a tree whose last hold went is removed, e.g. to drop what a
    /// worker derived from it. Only the first call has effect.
    pub fn on_code_removed(&self, removed: impl Fn(&Path) + Send + Sync + 'static) {
        let _ = self.code_holds.removed.set(Box::new(removed));
    }

    /// From now on, a tree whose last hold goes stays on disk: for a process
    /// that stops, whose holders (records, sandboxes) go away while what they
    /// stand for (stored functions) does not. The next start sorts it out.
    pub fn keep_code(&self) {
        self.code_holds.keep.store(true, Ordering::Release);
    }

    /// Deletes unpacked trees whose hex is not in `live` and that nothing
    /// holds (see [`CodeHold`]); returns how many. For trees left by an
    /// earlier process: those of this one go when their last hold does.
    pub fn remove_unused_code(&self, live: &HashSet<String>) -> Result<usize, StoreError> {
        let root = &self.code_root;
        let mut removed = 0;
        let entries = fs::read_dir(root).map_err(io_err(format!("listing {}", root.display())))?;
        for entry in entries {
            let entry = entry.map_err(io_err(format!("listing {}", root.display())))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !is_sha_hex(name) || live.contains(name) || self.code_holds.is_held(name) {
                continue;
            }
            let path = entry.path();
            remove_path(&path).map_err(io_err(format!("removing {}", path.display())))?;
            removed += 1;
        }
        Ok(removed)
    }

    fn make_tmp_dir(&self) -> io::Result<PathBuf> {
        loop {
            let path = self.code_holds.tmp_path();
            match fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(path),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File { exec: bool },
    Symlink,
}

struct Entry {
    index: usize,
    name: String,
    path: Vec<String>,
    kind: Kind,
}

/// Splits an entry name into normal components, or `None` if it is unsafe.
fn components(name: &str) -> Option<Vec<String>> {
    if name.len() > MAX_NAME
        || name.contains('\0')
        || name.starts_with('/')
        || name.starts_with('\\')
    {
        return None;
    }
    let mut out = Vec::new();
    for comp in name.split('/') {
        if comp.is_empty() || comp == "." {
            continue;
        }
        // `..` also counts when a (Windows) backslash separates it.
        if comp.split('\\').any(|part| part == "..") || comp.len() > 255 {
            return None;
        }
        out.push(comp.to_string());
    }
    Some(out)
}

fn join(root: &Path, path: &[String]) -> PathBuf {
    let mut p = root.to_path_buf();
    p.extend(path);
    p
}

/// Checks a zip as [`Store::put_code`] does, decompressing every file, without
/// writing anything; returns the decompressed size.
pub fn check_zip(zip: &[u8], rules: &CodeRules) -> Result<u64, CodeError> {
    unpack(zip, rules, None)
}

/// Validates the archive and, if `dest` is given, unpacks it there (an empty
/// directory). Returns the decompressed size.
fn unpack(zip: &[u8], rules: &CodeRules, dest: Option<&Path>) -> Result<u64, CodeError> {
    let mut archive = zip::ZipArchive::new(Cursor::new(zip)).map_err(|_| corrupt())?;
    if archive.len() > rules.max_files {
        return Err(CodeError::TooManyFiles {
            limit: rules.max_files,
        });
    }

    // Plan: classify and check every entry before writing anything.
    let mut entries = Vec::with_capacity(archive.len());
    for index in 0..archive.len() {
        let data = archive.by_index_data(index).map_err(|_| corrupt())?;
        let name = data.name().map_err(|_| corrupt())?.into_owned();
        let path = components(&name).ok_or_else(|| CodeError::UnsafePath(name.clone()))?;
        let kind = match data.unix_mode() {
            Some(mode) if mode & 0o170000 == 0o120000 => Kind::Symlink,
            Some(mode) if mode & 0o170000 == 0o040000 => Kind::Dir,
            _ if data.is_dir() => Kind::Dir,
            Some(mode) => Kind::File {
                exec: mode & 0o111 != 0,
            },
            None => Kind::File { exec: false },
        };
        if path.is_empty() {
            if kind == Kind::Dir {
                continue; // the root itself
            }
            return Err(CodeError::UnsafePath(name));
        }
        entries.push(Entry {
            index,
            name,
            path,
            kind,
        });
    }

    let symlinks: HashSet<&[String]> = entries
        .iter()
        .filter(|e| e.kind == Kind::Symlink)
        .map(|e| e.path.as_slice())
        .collect();
    let mut dirs: BTreeSet<&[String]> = BTreeSet::new();
    let mut leaves: HashSet<&[String]> = HashSet::new();
    for e in &entries {
        // Nothing may be written, nor linked, through a symlink of the archive.
        for depth in 1..e.path.len() {
            let ancestor = &e.path[..depth];
            if symlinks.contains(ancestor) {
                return Err(CodeError::UnsafePath(e.name.clone()));
            }
            dirs.insert(ancestor);
        }
        match e.kind {
            Kind::Dir => {
                dirs.insert(&e.path);
            }
            _ => {
                if !leaves.insert(&e.path) {
                    return Err(corrupt()); // duplicate file/symlink
                }
            }
        }
    }
    if leaves.iter().any(|l| dirs.contains(l)) {
        return Err(corrupt()); // same path both a directory and a file/symlink
    }
    if dirs.len() + leaves.len() > rules.max_files {
        return Err(CodeError::TooManyFiles {
            limit: rules.max_files,
        });
    }
    if rules.require_bootstrap && !leaves.contains(["bootstrap".to_string()].as_slice()) {
        return Err(CodeError::NoBootstrap);
    }

    // Directories, parents first (a prefix sorts before its extensions).
    if let Some(root) = dest {
        for dir in &dirs {
            let p = join(root, dir);
            fs::DirBuilder::new().mode(0o755).create(&p)?;
            fs::set_permissions(&p, Permissions::from_mode(0o755))?;
        }
    }

    // Regular files. No symlink exists yet, so nothing is written through one;
    // `create_new` (O_EXCL) would refuse one anyway.
    let mut total: u64 = 0;
    let limit = rules.max_unzipped_bytes;
    let mut buf = vec![0u8; 64 * 1024];
    for e in &entries {
        let Kind::File { exec } = e.kind else {
            continue;
        };
        let mut reader = archive.by_index(e.index).map_err(|_| corrupt())?;
        let mut out = match dest {
            Some(root) => Some(
                OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(join(root, &e.path))?,
            ),
            None => None,
        };
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Err(corrupt()),
            };
            total = total.saturating_add(n as u64);
            if total > limit {
                return Err(CodeError::TooLarge { limit });
            }
            if let Some(out) = out.as_mut() {
                out.write_all(&buf[..n])?;
            }
        }
        if let Some(out) = out {
            out.set_permissions(Permissions::from_mode(if exec { 0o755 } else { 0o644 }))?;
            out.sync_all()?;
        }
    }

    // Symlinks last, created verbatim.
    for e in &entries {
        if e.kind != Kind::Symlink {
            continue;
        }
        let reader = archive.by_index(e.index).map_err(|_| corrupt())?;
        let mut target = Vec::new();
        reader
            .take(MAX_LINK_TARGET + 1)
            .read_to_end(&mut target)
            .map_err(|_| corrupt())?;
        if target.is_empty() || target.len() as u64 > MAX_LINK_TARGET || target.contains(&0) {
            return Err(CodeError::UnsafePath(e.name.clone()));
        }
        total = total.saturating_add(target.len() as u64);
        if total > limit {
            return Err(CodeError::TooLarge { limit });
        }
        if let Some(root) = dest {
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), join(root, &e.path))?;
        }
    }

    // Make the directory entries durable (the caller syncs `dest` itself).
    if let Some(root) = dest {
        for dir in &dirs {
            File::open(join(root, dir))?.sync_all()?;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::components;

    #[test]
    fn names() {
        assert_eq!(components("a/./b//c").unwrap(), ["a", "b", "c"]);
        assert_eq!(components("./bootstrap").unwrap(), ["bootstrap"]);
        assert!(components("../x").is_none());
        assert!(components("a/../../b").is_none());
        assert!(components("a/../b").is_none());
        assert!(components("/etc/passwd").is_none());
        assert!(components("\\x").is_none());
        assert!(components("..\\x").is_none());
        assert!(components("a\\..\\..\\x").is_none());
        assert!(components("a\0b").is_none());
        assert_eq!(components("a\\b").unwrap(), ["a\\b"]);
    }
}
