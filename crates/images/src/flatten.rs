//! Applying an image's layers, in order, into one tree: the input of the
//! read-only filesystem builder.
//!
//! [`flatten`] reads each layer (a tar stream, gzip-compressed or plain; the
//! first bytes decide) once, front to back, and keeps an in-memory map from
//! path to [`Entry`]. File contents never sit in memory: each regular file's
//! bytes are copied into a spool directory (one file per file body, deleted
//! as soon as no entry names it), and the total copied is bounded by
//! [`Limits::max_bytes`]. The answer, [`Flattened`], lists the final tree
//! sorted by path and writes it into a directory with [`Flattened::write_to`].
//!
//! # Semantics (the OCI image spec's layer changesets)
//! - A later entry at a path replaces the earlier one, except that a
//!   directory over a directory only updates its mode and owner and keeps
//!   the children. A non-directory replacing a directory removes the whole
//!   subtree; an entry below a path that is not a directory turns that path
//!   into a directory (links are never followed, so every entry's parent in
//!   the tree is a directory). Missing parents are made as directories with
//!   mode `0755`, owned by root.
//! - `.wh.NAME` removes `NAME` (and what is below it) as brought by lower
//!   layers; `DIR/.wh..wh..opq` removes everything below `DIR` brought by
//!   lower layers. Per the spec, neither touches entries of its own layer.
//!   Other `.wh..wh.` names (aufs bookkeeping) are ignored.
//! - A hard link names an entry present at that point (this layer so far,
//!   or a lower one); it shares the target's body and metadata, as an inode
//!   does, and keeps them if the target is later removed. In the answer,
//!   the first path (in sort order) of each group is the file and the others
//!   are [`EntryKind::HardLink`]s to it. A link to a directory is refused;
//!   a link to a symlink becomes a copy of the symlink.
//! - Symlinks are kept as written, even if they point outside the root:
//!   they are data here, never followed.
//! - Paths: a leading `/` is dropped (entries are relative to the layer's
//!   root whatever their spelling, as tar and the container runtimes treat
//!   them), `.` components are removed and `..` is resolved lexically; a
//!   path (or hard-link target) that climbs above the root is refused.
//! - Modes keep the permission and sticky bits; setuid and setgid are
//!   dropped (counted in [`FlattenStats::setid_dropped`]). Owners are kept.
//! - Device nodes and FIFOs are dropped and counted; other entry types that
//!   are not files (unknown or vendor types) are dropped and counted too.
//! - Timestamps are not kept: every entry of the answer has mtime (and
//!   atime) 0, the Unix epoch, and [`Flattened::write_to`] sets that on
//!   disk. Layers built at different times from the same files so give the
//!   same tree, and the filesystem image built from it does not depend on
//!   when anything was built.
//!
//! # Bounds
//! [`Limits::max_bytes`] (10 GiB by default, Lambda's image limit) bounds
//! the sum of all regular-file bodies read, across all layers (so also the
//! spool's size on disk); [`Limits::max_entries`] bounds the entries in the
//! tree at any time. Exceeding either stops with an error.

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// Lambda's limit on a container image's size.
pub const DEFAULT_MAX_BYTES: u64 = 10 << 30;
/// The default bound on entries in the flattened tree.
pub const DEFAULT_MAX_ENTRIES: usize = 1_000_000;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Bounds on one flattening.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The most regular-file bytes read from all layers together.
    pub max_bytes: u64,
    /// The most entries in the tree at any time.
    pub max_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_bytes: DEFAULT_MAX_BYTES, max_entries: DEFAULT_MAX_ENTRIES }
    }
}

/// Where the spool lives and how far flattening may go.
#[derive(Debug, Clone, Default)]
pub struct FlattenOptions {
    pub limits: Limits,
    /// The directory in which the spool directory is made (the system's
    /// temporary directory if `None`).
    pub spool_in: Option<PathBuf>,
}

/// Why flattening stopped. `layer` counts from 0, the bottom layer.
#[derive(Debug, thiserror::Error)]
pub enum FlattenError {
    #[error("layer {layer} is not a tar stream (or its compression is corrupt): {source}")]
    NotATar { layer: usize, source: io::Error },
    #[error("layer {layer}: path {path:?} escapes the root")]
    Escapes { layer: usize, path: PathBuf },
    #[error("layer {layer}: hard link {path:?} names {target:?}, which escapes the root")]
    LinkEscapes { layer: usize, path: PathBuf, target: PathBuf },
    #[error("layer {layer}: hard link {path:?} names {target:?}, which is not present")]
    LinkMissing { layer: usize, path: PathBuf, target: PathBuf },
    #[error("layer {layer}: hard link {path:?} names {target:?}, which is a directory")]
    LinkToDirectory { layer: usize, path: PathBuf, target: PathBuf },
    #[error("layer {layer}: the image's files exceed {limit} bytes")]
    TooLarge { layer: usize, limit: u64 },
    #[error("layer {layer}: the image has more than {limit} entries")]
    TooManyEntries { layer: usize, limit: usize },
    #[error("spool: {0}")]
    Spool(io::Error),
}

/// Why [`Flattened::write_to`] stopped.
#[derive(Debug, thiserror::Error)]
#[error("writing {path:?}: {source}")]
pub struct WriteError {
    pub path: PathBuf,
    pub source: io::Error,
}

/// What flattening dropped or applied, for the operator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlattenStats {
    pub layers: usize,
    /// Whiteout and opaque markers applied.
    pub whiteouts: u64,
    /// Character and block devices dropped.
    pub devices_dropped: u64,
    /// FIFOs dropped.
    pub fifos_dropped: u64,
    /// Entries of other types that are not files, dropped.
    pub others_dropped: u64,
    /// Entries whose setuid or setgid bit was dropped.
    pub setid_dropped: u64,
    /// Regular-file bytes read from all layers.
    pub bytes_read: u64,
}

/// One entry of the flattened tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: EntryKind,
    /// Permission and sticky bits (never setuid or setgid).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// The layer (from 0, the bottom one) that last wrote the entry; for a
    /// file, the layer its body comes from (a hard link shares its
    /// target's). The filesystem image places bodies by it.
    pub layer: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    /// A regular file of `size` bytes.
    File { size: u64 },
    /// A symbolic link, its target as written.
    Symlink { target: PathBuf },
    /// Another name for `target`, an earlier [`EntryKind::File`] of the tree.
    HardLink { target: PathBuf },
}

/// How [`Flattened::write_to`] writes.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    /// Give entries their owners; done only when running as root.
    pub ownership: bool,
}

/// The final tree of an image: entries sorted by path (component-wise; the
/// first is the root itself, the empty path, a directory), and the file
/// bodies in a spool deleted when this is dropped.
#[derive(Debug)]
pub struct Flattened {
    entries: Vec<(PathBuf, Entry)>,
    /// The spool file of each [`EntryKind::File`] entry with a body.
    bodies: HashMap<PathBuf, PathBuf>,
    stats: FlattenStats,
    _spool: tempfile::TempDir,
}

/// Applies `layers`, bottom first, into one tree. Each layer is read once,
/// front to back; gzip is recognised by its magic bytes.
pub fn flatten<R: Read>(
    layers: impl IntoIterator<Item = R>,
    options: &FlattenOptions,
) -> Result<Flattened, FlattenError> {
    let spool = match &options.spool_in {
        Some(dir) => tempfile::Builder::new().prefix("ignis-flatten-").tempdir_in(dir),
        None => tempfile::Builder::new().prefix("ignis-flatten-").tempdir(),
    }
    .map_err(FlattenError::Spool)?;
    let mut tree = Tree {
        nodes: BTreeMap::new(),
        refs: HashMap::new(),
        next_body: 0,
        spool: spool.path().to_path_buf(),
        limits: options.limits.clone(),
        stats: FlattenStats::default(),
    };
    // The root is always in the tree, so that its mode and times are set
    // too; a layer's `./` entry updates it.
    let root = Node { kind: NodeKind::Dir, mode: 0o755, uid: 0, gid: 0, layer: 0 };
    tree.nodes.insert(PathBuf::new(), root);
    for (layer, reader) in layers.into_iter().enumerate() {
        tree.stats.layers += 1;
        let mut reader = BufReader::new(reader);
        let head = reader.fill_buf().map_err(|source| FlattenError::NotATar { layer, source })?;
        if head.starts_with(&GZIP_MAGIC) {
            tree.apply_layer(layer, flate2::bufread::MultiGzDecoder::new(reader))?;
        } else {
            tree.apply_layer(layer, reader)?;
        }
    }
    Ok(tree.finish(spool))
}

impl Flattened {
    /// The tree, sorted by path.
    pub fn entries(&self) -> &[(PathBuf, Entry)] {
        &self.entries
    }

    pub fn stats(&self) -> &FlattenStats {
        &self.stats
    }

    /// Opens the body of the regular file at `path` (`None` if there is no
    /// such [`EntryKind::File`]; an empty file reads as empty).
    pub fn open(&self, path: &Path) -> Option<io::Result<Box<dyn Read + Send>>> {
        let i = self.entries.binary_search_by(|(p, _)| p.as_path().cmp(path)).ok()?;
        if !matches!(self.entries[i].1.kind, EntryKind::File { .. }) {
            return None;
        }
        Some(match self.bodies.get(path) {
            Some(body) => File::open(body).map(|f| Box::new(f) as Box<dyn Read + Send>),
            None => Ok(Box::new(io::empty())),
        })
    }

    /// Writes the tree into `dir`, which must exist and should be empty:
    /// directories, files (copied from the spool), symlinks and hard links,
    /// with their modes and mtime 0; owners too if `options.ownership` and
    /// running as root. Directories get their modes last, so a read-only
    /// directory does not stop its children being written.
    pub fn write_to(&self, dir: &Path, options: WriteOptions) -> Result<(), WriteError> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let chown = options.ownership && unsafe { libc::geteuid() } == 0;
        for (path, entry) in &self.entries {
            let at = dir.join(path);
            let fail = |source| WriteError { path: path.clone(), source };
            match &entry.kind {
                EntryKind::Dir => {
                    if !path.as_os_str().is_empty() {
                        std::fs::create_dir(&at).map_err(fail)?;
                    }
                    std::fs::set_permissions(&at, std::fs::Permissions::from_mode(0o700)).map_err(fail)?;
                }
                EntryKind::File { .. } => {
                    let mut out = File::create_new(&at).map_err(fail)?;
                    if let Some(body) = self.bodies.get(path) {
                        let mut body = File::open(body).map_err(fail)?;
                        io::copy(&mut body, &mut out).map_err(fail)?;
                    }
                    out.set_permissions(std::fs::Permissions::from_mode(entry.mode)).map_err(fail)?;
                }
                EntryKind::Symlink { target } => std::os::unix::fs::symlink(target, &at).map_err(fail)?,
                EntryKind::HardLink { target } => std::fs::hard_link(dir.join(target), &at).map_err(fail)?,
            }
            if chown && !matches!(entry.kind, EntryKind::HardLink { .. }) {
                let uid = u32::try_from(entry.uid).map_err(|_| fail(io::Error::other("uid out of range")))?;
                let gid = u32::try_from(entry.gid).map_err(|_| fail(io::Error::other("gid out of range")))?;
                std::os::unix::fs::lchown(&at, Some(uid), Some(gid)).map_err(fail)?;
            }
        }
        // Children before parents: setting a directory's mtime must come
        // after its last change, and its mode after its last write.
        for (path, entry) in self.entries.iter().rev() {
            let at = dir.join(path);
            let fail = |source| WriteError { path: path.clone(), source };
            if entry.kind == EntryKind::Dir {
                std::fs::set_permissions(&at, std::fs::Permissions::from_mode(entry.mode)).map_err(fail)?;
            }
            set_epoch_times(&at).map_err(fail)?;
        }
        Ok(())
    }
}

/// Sets atime and mtime of `path` (not following a symlink) to 0.
fn set_epoch_times(path: &Path) -> io::Result<()> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let times = [libc::timespec { tv_sec: 0, tv_nsec: 0 }; 2];
    // SAFETY: `c_path` is a NUL-terminated string and `times` two timespecs,
    // both alive for the call; AT_FDCWD with an absolute or relative path is
    // valid.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c_path.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// A node while layers are applied: hard links share `body`.
#[derive(Debug, Clone)]
struct Node {
    kind: NodeKind,
    mode: u32,
    uid: u64,
    gid: u64,
    /// The layer that last wrote this node.
    layer: usize,
}

#[derive(Debug, Clone)]
enum NodeKind {
    Dir,
    /// `layer`: the layer the body was read from (a hard link made in a
    /// later layer keeps it).
    File { body: u64, size: u64, layer: usize },
    Symlink(PathBuf),
}

struct Tree {
    nodes: BTreeMap<PathBuf, Node>,
    /// How many nodes name each body; the spool file goes at 0.
    refs: HashMap<u64, usize>,
    next_body: u64,
    spool: PathBuf,
    limits: Limits,
    stats: FlattenStats,
}

impl Tree {
    fn apply_layer(&mut self, layer: usize, reader: impl Read) -> Result<(), FlattenError> {
        let not_tar = |source| FlattenError::NotATar { layer, source };
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries().map_err(not_tar)? {
            let mut entry = entry.map_err(not_tar)?;
            let raw = entry.path().map_err(not_tar)?.into_owned();
            let path = normalise(&raw).ok_or_else(|| FlattenError::Escapes { layer, path: raw.clone() })?;
            let name = path.file_name().map(|n| n.as_bytes()).unwrap_or_default();
            if name == OPAQUE {
                let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
                self.stats.whiteouts += 1;
                self.remove_below(&dir, layer);
                self.ensure_dir(&dir, layer)?;
                continue;
            }
            if name.starts_with(WHITEOUT_META_PREFIX) {
                continue;
            }
            if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
                if matches!(hidden, b"" | b"." | b"..") {
                    self.stats.others_dropped += 1;
                    continue;
                }
                let target = path.with_file_name(std::ffi::OsStr::from_bytes(hidden));
                self.stats.whiteouts += 1;
                self.remove_lower(&target, layer);
                continue;
            }
            let header = entry.header();
            let raw_mode = header.mode().map_err(not_tar)?;
            let uid = header.uid().map_err(not_tar)?;
            let gid = header.gid().map_err(not_tar)?;
            if raw_mode & 0o6000 != 0 {
                self.stats.setid_dropped += 1;
            }
            let mode = raw_mode & 0o1777;
            let kind = match header.entry_type() {
                tar::EntryType::Directory => NodeKind::Dir,
                tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                    // Refuse early what the header already says is too much.
                    if self.stats.bytes_read.saturating_add(entry.size()) > self.limits.max_bytes {
                        return Err(FlattenError::TooLarge { layer, limit: self.limits.max_bytes });
                    }
                    self.spool_body(layer, &mut entry)?
                }
                tar::EntryType::Symlink => {
                    let target = entry.link_name().map_err(not_tar)?.unwrap_or_default().into_owned();
                    NodeKind::Symlink(target)
                }
                tar::EntryType::Link => {
                    let raw_target = entry.link_name().map_err(not_tar)?.unwrap_or_default().into_owned();
                    let target = normalise(&raw_target).ok_or_else(|| FlattenError::LinkEscapes {
                        layer,
                        path: path.clone(),
                        target: raw_target.clone(),
                    })?;
                    let Some(node) = self.nodes.get(&target) else {
                        return Err(FlattenError::LinkMissing { layer, path, target });
                    };
                    if matches!(node.kind, NodeKind::Dir) {
                        return Err(FlattenError::LinkToDirectory { layer, path, target });
                    }
                    // An inode's metadata is shared by its names.
                    let mut node = node.clone();
                    node.layer = layer;
                    if target != path && !path.as_os_str().is_empty() {
                        self.insert(path, node, layer)?;
                    }
                    continue;
                }
                tar::EntryType::Char | tar::EntryType::Block => {
                    self.stats.devices_dropped += 1;
                    continue;
                }
                tar::EntryType::Fifo => {
                    self.stats.fifos_dropped += 1;
                    continue;
                }
                _ => {
                    self.stats.others_dropped += 1;
                    continue;
                }
            };
            if path.as_os_str().is_empty() && !matches!(kind, NodeKind::Dir) {
                // The root stays a directory.
                self.stats.others_dropped += 1;
                continue;
            }
            self.insert(path, Node { kind, mode, uid, gid, layer }, layer)?;
        }
        Ok(())
    }

    /// Copies a file body into the spool, within the byte bound.
    fn spool_body(&mut self, layer: usize, entry: &mut impl Read) -> Result<NodeKind, FlattenError> {
        let body = self.next_body;
        self.next_body += 1;
        let too_large = FlattenError::TooLarge { layer, limit: self.limits.max_bytes };
        let mut buf = vec![0u8; 64 * 1024];
        let mut size = 0u64;
        let mut out: Option<File> = None;
        loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    if out.is_some() {
                        let _ = std::fs::remove_file(self.spool.join(body.to_string()));
                    }
                    return Err(FlattenError::NotATar { layer, source });
                }
            };
            if self.stats.bytes_read + n as u64 > self.limits.max_bytes {
                return Err(too_large);
            }
            self.stats.bytes_read += n as u64;
            size += n as u64;
            let file = match &mut out {
                Some(f) => f,
                None => out.insert(File::create_new(self.spool.join(body.to_string())).map_err(FlattenError::Spool)?),
            };
            file.write_all(&buf[..n]).map_err(FlattenError::Spool)?;
        }
        Ok(NodeKind::File { body, size, layer })
    }

    /// Puts `node` at `path`, making parents directories.
    fn insert(&mut self, path: PathBuf, node: Node, layer: usize) -> Result<(), FlattenError> {
        if let Some(parent) = path.parent() {
            self.ensure_dir(parent, layer)?;
        }
        match self.nodes.get_mut(&path) {
            Some(old) if matches!(old.kind, NodeKind::Dir) && matches!(node.kind, NodeKind::Dir) => {
                *old = node;
                return Ok(());
            }
            Some(_) => self.remove_tree(&path, |_| true),
            None => {}
        }
        self.add(path, node, layer)
    }

    fn add(&mut self, path: PathBuf, node: Node, layer: usize) -> Result<(), FlattenError> {
        if self.nodes.len() >= self.limits.max_entries {
            return Err(FlattenError::TooManyEntries { layer, limit: self.limits.max_entries });
        }
        if let NodeKind::File { body, .. } = node.kind {
            *self.refs.entry(body).or_default() += 1;
        }
        self.nodes.insert(path, node);
        Ok(())
    }

    /// Makes `dir` and its ancestors directories, replacing what is not one.
    fn ensure_dir(&mut self, dir: &Path, layer: usize) -> Result<(), FlattenError> {
        let mut at = PathBuf::new();
        for component in dir.components() {
            at.push(component);
            match self.nodes.get(&at) {
                Some(node) if matches!(node.kind, NodeKind::Dir) => continue,
                Some(_) => self.remove_tree(&at.clone(), |_| true),
                None => {}
            }
            let node = Node { kind: NodeKind::Dir, mode: 0o755, uid: 0, gid: 0, layer };
            self.add(at.clone(), node, layer)?;
        }
        Ok(())
    }

    /// A whiteout: removes `path` and below, as brought by lower layers.
    fn remove_lower(&mut self, path: &Path, layer: usize) {
        self.remove_tree(path, |node| node.layer < layer);
    }

    /// An opaque marker: removes what is strictly below `dir` from lower layers.
    fn remove_below(&mut self, dir: &Path, layer: usize) {
        let doomed: Vec<PathBuf> = self
            .subtree(dir)
            .filter(|(p, n)| p.as_path() != dir && n.layer < layer)
            .map(|(p, _)| p.clone())
            .collect();
        self.remove_all(doomed);
    }

    fn remove_tree(&mut self, path: &Path, doomed: impl Fn(&Node) -> bool) {
        let doomed: Vec<PathBuf> = self.subtree(path).filter(|(_, n)| doomed(n)).map(|(p, _)| p.clone()).collect();
        self.remove_all(doomed);
    }

    /// `path` and everything below it (contiguous in component order).
    fn subtree<'a>(&'a self, path: &'a Path) -> impl Iterator<Item = (&'a PathBuf, &'a Node)> + 'a {
        self.nodes.range(path.to_path_buf()..).take_while(move |(p, _)| p.starts_with(path))
    }

    fn remove_all(&mut self, paths: Vec<PathBuf>) {
        for path in paths {
            let Some(node) = self.nodes.remove(&path) else { continue };
            if let NodeKind::File { body, .. } = node.kind {
                let refs = self.refs.entry(body).or_default();
                *refs -= 1;
                if *refs == 0 {
                    self.refs.remove(&body);
                    // Absent for empty bodies; any other failure only leaves
                    // a file the spool's removal deletes.
                    let _ = std::fs::remove_file(self.spool.join(body.to_string()));
                }
            }
        }
    }

    fn finish(self, spool: tempfile::TempDir) -> Flattened {
        let mut first_name: HashMap<u64, PathBuf> = HashMap::new();
        let mut entries = Vec::with_capacity(self.nodes.len());
        let mut bodies = HashMap::new();
        for (path, node) in self.nodes {
            let layer = match node.kind {
                NodeKind::File { layer, .. } => layer,
                NodeKind::Dir | NodeKind::Symlink(_) => node.layer,
            };
            let kind = match node.kind {
                NodeKind::Dir => EntryKind::Dir,
                NodeKind::Symlink(target) => EntryKind::Symlink { target },
                NodeKind::File { body, size, .. } => match first_name.get(&body) {
                    Some(target) => EntryKind::HardLink { target: target.clone() },
                    None => {
                        first_name.insert(body, path.clone());
                        if size > 0 {
                            bodies.insert(path.clone(), self.spool.join(body.to_string()));
                        }
                        EntryKind::File { size }
                    }
                },
            };
            entries.push((path, Entry { kind, mode: node.mode, uid: node.uid, gid: node.gid, layer }));
        }
        Flattened { entries, bodies, stats: self.stats, _spool: spool }
    }
}

/// `path` relative to the root, without `.` components and with `..`
/// resolved; `None` if it climbs above the root.
fn normalise(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(name) => out.push(name),
        }
    }
    Some(out)
}
