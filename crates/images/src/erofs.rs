//! The read-only filesystem image of a flattened tree: EROFS, in the Linux
//! kernel's on-disk format, laid out so that images sharing base layers
//! share chunks.
//!
//! [`build`] writes a [`Flattened`] tree into a file: uncompressed, 4 KiB
//! blocks, no extended attributes, no superblock checksum; compact 32-byte
//! inodes, or extended 64-byte ones where a value does not fit (an owner
//! above 65535, a size of 4 GiB or more, more than 65535 links); regular
//! files as one contiguous run of blocks (`FLAT_PLAIN`); directories as
//! blocks of 12-byte dirents followed by their names, every block
//! self-contained, the names (`.` and `..` among them) sorted by their
//! bytes across the whole directory, as the kernel's lookup (a binary
//! search) expects; symlinks with their target right after the inode
//! (`FLAT_INLINE`) when it fits in the inode's block, else in a block of
//! their own. Hard links are one inode; a directory's link count is 2 plus
//! its subdirectories; every mtime is 0.
//!
//! # Layout
//! ```text
//! block 0: the superblock (at byte 1024)
//! for each layer, bottom first, that brings file bodies:
//!     a region starting at a multiple of chunk_bytes: the bodies whose
//!     bytes come from that layer (Entry::layer), in path order, each
//!     starting on a block
//! the metadata, starting at a multiple of chunk_bytes:
//!     the inodes (the root's first: nid 0), each symlink's inline target
//!     after its inode, then each directory's blocks and each long
//!     symlink's block, in path order
//! ```
//! A layer's region depends only on that layer's bodies (and the regions
//! below it, which are chunk-aligned too): two images whose bottom layers
//! are the same, file for file, have the same bytes in those layers'
//! chunks, which convergent encryption then stores once. Only the first
//! chunk (the superblock) and the metadata differ.
//!
//! # Invariants
//! - The same tree and options give the same bytes: nothing depends on
//!   time, randomness, hash-map order or the host (the uuid is zero).
//! - File bodies are streamed from the spool, never held whole; a body
//!   whose spool file does not have its recorded size fails the build.
//! - What the format cannot hold (a name over 255 bytes, a symlink target
//!   over 4095 bytes, an owner over 2³² − 1, more than 2³² blocks) is a
//!   typed [`ErofsError`], never a wrong image.

#[cfg(test)]
pub(crate) mod tests;

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::flatten::{Entry, EntryKind, Flattened};

/// The block size of every image.
pub const BLOCK_BYTES: u64 = 4096;
/// The longest name a directory entry may have.
pub const MAX_NAME_BYTES: usize = 255;
/// The longest symlink target (Linux's `PATH_MAX` less the NUL).
pub const MAX_SYMLINK_BYTES: usize = 4095;

const MAGIC: u32 = 0xE0F5_E1E2;
const SUPERBLOCK_OFFSET: u64 = 1024;
const BLOCK_BITS: u8 = 12;
const COMPACT_BYTES: u64 = 32;
const EXTENDED_BYTES: u64 = 64;
const DIRENT_BYTES: usize = 12;
/// An inode's number is its offset from the metadata's start in these.
const NID_BYTES: u64 = 32;

const LAYOUT_FLAT_PLAIN: u16 = 0;
const LAYOUT_FLAT_INLINE: u16 = 2;

const FT_REG_FILE: u8 = 1;
const FT_DIR: u8 = 2;
const FT_SYMLINK: u8 = 7;

const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;

/// The directories [`ErofsOptions::add_mountpoints`] adds: name and mode.
const MOUNTPOINTS: [(&str, u32); 4] = [("dev", 0o755), ("proc", 0o755), ("sys", 0o755), ("tmp", 0o1777)];

/// How [`build`] lays the image out.
#[derive(Debug, Clone)]
pub struct ErofsOptions {
    /// Each layer's region and the metadata start at a multiple of this (a
    /// positive multiple of [`BLOCK_BYTES`]): the chunk store's chunk size.
    pub chunk_bytes: u64,
    /// Add, where the root has no entry of that name, empty root-owned
    /// directories `dev`, `proc`, `sys` (0755) and `tmp` (1777): the
    /// sandbox mounts over them, and the image is read-only.
    pub add_mountpoints: bool,
}

impl Default for ErofsOptions {
    fn default() -> Self {
        ErofsOptions { chunk_bytes: ignis_chunks::CHUNK_BYTES as u64, add_mountpoints: true }
    }
}

/// A byte range of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub offset: u64,
    pub length: u64,
}

/// What [`build`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErofsStats {
    /// The image's size (a multiple of [`BLOCK_BYTES`]).
    pub bytes: u64,
    pub inodes: u64,
    /// Each layer's data region, bottom first; `None` for a layer that
    /// brings no file bodies. A region ends with its last body's last block.
    pub layers: Vec<Option<Region>>,
    /// Inodes and directory and symlink blocks, to the image's end.
    pub metadata: Region,
}

/// Why [`build`] stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErofsError {
    #[error("chunk_bytes {0} is not a positive multiple of {BLOCK_BYTES}")]
    ChunkBytes(u64),
    #[error("{path:?}: a name longer than {MAX_NAME_BYTES} bytes")]
    NameTooLong { path: PathBuf },
    #[error("{path:?}: a symlink target longer than {MAX_SYMLINK_BYTES} bytes")]
    SymlinkTooLong { path: PathBuf },
    #[error("{path:?}: owner {uid}:{gid} does not fit in 32 bits")]
    OwnerTooLarge { path: PathBuf, uid: u64, gid: u64 },
    /// A hard link to what is not a file, an entry without its parent
    /// directory: not a tree that flattening makes.
    #[error("{path:?}: not part of a well-formed tree")]
    Malformed { path: PathBuf },
    #[error("the image would exceed 2^32 blocks")]
    TooLarge,
    #[error("{path:?}: reading the file's body: {source}")]
    Body { path: PathBuf, source: io::Error },
    #[error("{path:?}: the file's body has {got} bytes, not {expected}")]
    BodySize { path: PathBuf, expected: u64, got: u64 },
    #[error("writing the image: {0}")]
    Write(io::Error),
}

/// Writes the image of `flat` into `out` (from its start; the file is cut
/// to the image's size) and answers where everything went. File bodies are
/// streamed from the spool in layer order, then the metadata is written,
/// then the superblock.
pub fn build(flat: &Flattened, out: &mut File, options: &ErofsOptions) -> Result<ErofsStats, ErofsError> {
    let plan = plan(flat.entries(), flat.stats().layers, options)?;
    let mut out = Out::new(out).map_err(ErofsError::Write)?;
    let mut buf = vec![0u8; 256 * 1024];
    for &(i, offset) in &plan.data {
        let inode = &plan.inodes[i];
        let InodeKind::File { path } = &inode.kind else { continue };
        out.pad_to(offset).map_err(ErofsError::Write)?;
        copy_body(flat, path, inode.size, &mut out, &mut buf)?;
    }
    write_metadata(&plan, &mut out).map_err(ErofsError::Write)?;
    out.finish(plan.total_bytes, &superblock(&plan)).map_err(ErofsError::Write)?;
    Ok(ErofsStats {
        bytes: plan.total_bytes,
        inodes: plan.inodes.len() as u64,
        layers: plan.regions.clone(),
        metadata: Region { offset: plan.meta_start, length: plan.total_bytes - plan.meta_start },
    })
}

/// Copies the body of the file at `path` through `buf`, checking its size.
fn copy_body(flat: &Flattened, path: &Path, size: u64, out: &mut Out<'_>, buf: &mut [u8]) -> Result<(), ErofsError> {
    let body_error = |source| ErofsError::Body { path: path.to_path_buf(), source };
    let reader = match flat.open(path) {
        Some(reader) => reader.map_err(body_error)?,
        None => return Err(ErofsError::Malformed { path: path.to_path_buf() }),
    };
    let mut reader = reader.take(size);
    let mut got = 0u64;
    loop {
        let n = match reader.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(body_error(e)),
        };
        out.write_all(&buf[..n]).map_err(ErofsError::Write)?;
        got += n as u64;
    }
    match got == size {
        true => Ok(()),
        false => Err(ErofsError::BodySize { path: path.to_path_buf(), expected: size, got }),
    }
}

/// The image's sequential writer: knows its position, skips gaps.
struct Out<'a> {
    writer: BufWriter<&'a mut File>,
    at: u64,
}

impl<'a> Out<'a> {
    fn new(file: &'a mut File) -> io::Result<Out<'a>> {
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        Ok(Out { writer: BufWriter::with_capacity(1 << 20, file), at: 0 })
    }

    /// Moves forward to `offset`: zeros for a small gap, a hole for a
    /// large one (which reads as zeros). Going back would overwrite what
    /// the plan placed before: refused.
    fn pad_to(&mut self, offset: u64) -> io::Result<()> {
        let Some(gap) = offset.checked_sub(self.at) else {
            return Err(io::Error::other(format!("the layout overlaps at byte {offset} (written up to {})", self.at)));
        };
        if gap <= BLOCK_BYTES {
            self.write_all(&ZEROS[..gap as usize])
        } else {
            self.writer.seek(SeekFrom::Start(offset))?;
            self.at = offset;
            Ok(())
        }
    }

    /// Sets the image's length and writes the superblock.
    fn finish(mut self, total: u64, superblock: &[u8]) -> io::Result<()> {
        self.writer.flush()?;
        let file = self.writer.get_mut();
        file.set_len(total)?;
        file.seek(SeekFrom::Start(SUPERBLOCK_OFFSET))?;
        file.write_all(superblock)?;
        file.flush()
    }
}

impl Write for Out<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.writer.write(buf)?;
        self.at += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

static ZEROS: [u8; BLOCK_BYTES as usize] = [0; BLOCK_BYTES as usize];

/// Writes the metadata area, from `plan.meta_start` to its end.
fn write_metadata(plan: &Plan, out: &mut Out<'_>) -> io::Result<()> {
    for (i, inode) in plan.inodes.iter().enumerate() {
        out.pad_to(plan.meta_start + plan.nids[i] * NID_BYTES)?;
        out.write_all(&encode_inode(inode, i))?;
        if let (InodeKind::Symlink { target }, Data::Inline) = (&inode.kind, inode.data) {
            out.write_all(target)?;
        }
    }
    for inode in &plan.inodes {
        let Data::Blocks(addr) = inode.data else { continue };
        match &inode.kind {
            InodeKind::Dir { entries, blocks } => {
                out.pad_to(u64::from(addr) * BLOCK_BYTES)?;
                for block in blocks {
                    let named: Vec<(&[u8], u64, u8)> = entries[block.clone()]
                        .iter()
                        .map(|(name, target)| (name.as_slice(), plan.nids[*target], plan.inodes[*target].file_type()))
                        .collect();
                    out.write_all(&dirent_block(&named))?;
                }
            }
            InodeKind::Symlink { target } => {
                out.pad_to(u64::from(addr) * BLOCK_BYTES)?;
                out.write_all(target)?;
            }
            InodeKind::File { .. } => {}
        }
    }
    Ok(())
}

/// One inode of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Inode {
    kind: InodeKind,
    /// Type and permission bits.
    mode: u16,
    uid: u32,
    gid: u32,
    nlink: u32,
    size: u64,
    /// For a file, the layer its body comes from.
    layer: usize,
    data: Data,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum InodeKind {
    /// `entries`: every name with its inode (`.` and `..` included), sorted
    /// by name; `blocks`: the entries of each dirent block.
    Dir { entries: Vec<(Vec<u8>, usize)>, blocks: Vec<Range<usize>> },
    /// `path`: where the body is in the flattened tree.
    File { path: PathBuf },
    Symlink { target: Vec<u8> },
}

/// Where an inode's data is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Data {
    /// No data (an empty file).
    None,
    /// Contiguous blocks from this block address.
    Blocks(u32),
    /// Right after the inode (a symlink's target).
    Inline,
}

impl Inode {
    fn extended(&self) -> bool {
        self.uid > 0xFFFF || self.gid > 0xFFFF || self.nlink > 0xFFFF || self.size > u64::from(u32::MAX)
    }

    fn inode_bytes(&self) -> u64 {
        if self.extended() { EXTENDED_BYTES } else { COMPACT_BYTES }
    }

    fn file_type(&self) -> u8 {
        match self.kind {
            InodeKind::Dir { .. } => FT_DIR,
            InodeKind::File { .. } => FT_REG_FILE,
            InodeKind::Symlink { .. } => FT_SYMLINK,
        }
    }
}

/// Every decision of the image, before any byte is written.
#[derive(Debug)]
struct Plan {
    /// In nid order; the root is the first.
    inodes: Vec<Inode>,
    nids: Vec<u64>,
    /// File inodes with a body and the byte offset of each, in write order.
    data: Vec<(usize, u64)>,
    regions: Vec<Option<Region>>,
    meta_start: u64,
    total_bytes: u64,
}

fn plan(entries: &[(PathBuf, Entry)], layers: usize, options: &ErofsOptions) -> Result<Plan, ErofsError> {
    let chunk = options.chunk_bytes;
    if chunk == 0 || !chunk.is_multiple_of(BLOCK_BYTES) {
        return Err(ErofsError::ChunkBytes(chunk));
    }
    let mut inodes = inode_tree(entries, options.add_mountpoints)?;
    let files: Vec<(usize, usize, u64)> = inodes
        .iter()
        .enumerate()
        .filter(|(_, inode)| matches!(inode.kind, InodeKind::File { .. }) && inode.size > 0)
        .map(|(i, inode)| (i, inode.layer, inode.size))
        .collect();
    let layers = layers.max(files.iter().map(|f| f.1 + 1).max().unwrap_or(0));
    let (data, regions, data_end) = layer_regions(&files, layers, chunk, BLOCK_BYTES);
    for &(i, offset) in &data {
        inodes[i].data = Data::Blocks(block_addr(offset)?);
    }
    let meta_start = data_end.max(BLOCK_BYTES).next_multiple_of(chunk);
    for inode in &mut inodes {
        if let InodeKind::Symlink { target } = &inode.kind
            && inode.inode_bytes() + target.len() as u64 <= BLOCK_BYTES
        {
            inode.data = Data::Inline;
        }
    }
    let shapes: Vec<(u64, u64)> = inodes
        .iter()
        .map(|inode| match (&inode.kind, inode.data) {
            (InodeKind::Symlink { target }, Data::Inline) => (inode.inode_bytes(), target.len() as u64),
            _ => (inode.inode_bytes(), 0),
        })
        .collect();
    let (nids, table_bytes) = assign_nids(&shapes);
    let mut next = (meta_start + table_bytes).next_multiple_of(BLOCK_BYTES);
    for inode in &mut inodes {
        let blocks = match &inode.kind {
            InodeKind::Dir { blocks, .. } => blocks.len() as u64,
            InodeKind::Symlink { .. } if inode.data != Data::Inline => inode.size.div_ceil(BLOCK_BYTES).max(1),
            _ => continue,
        };
        inode.data = Data::Blocks(block_addr(next)?);
        next += blocks * BLOCK_BYTES;
    }
    block_addr(next)?;
    Ok(Plan { inodes, nids, data, regions, meta_start, total_bytes: next })
}

/// The block address of byte `offset`, if the format can hold it.
fn block_addr(offset: u64) -> Result<u32, ErofsError> {
    u32::try_from(offset / BLOCK_BYTES).map_err(|_| ErofsError::TooLarge)
}

/// The inodes of the tree, root first, in path order: directories with
/// their sorted, block-packed entries, files, symlinks; hard links counted
/// into their target's inode.
fn inode_tree(entries: &[(PathBuf, Entry)], add_mountpoints: bool) -> Result<Vec<Inode>, ErofsError> {
    let dir = |mode| Entry { kind: EntryKind::Dir, mode, uid: 0, gid: 0, layer: 0 };
    let mut extra: Vec<(PathBuf, Entry)> = Vec::new();
    if !entries.iter().any(|(p, _)| p.as_os_str().is_empty()) {
        extra.push((PathBuf::new(), dir(0o755)));
    }
    if add_mountpoints {
        for (name, mode) in MOUNTPOINTS {
            if !entries.iter().any(|(p, _)| p.as_os_str() == name) {
                extra.push((PathBuf::from(name), dir(mode)));
            }
        }
    }
    let mut sorted: Vec<&(PathBuf, Entry)> = entries.iter().chain(extra.iter()).collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));

    let mut inodes: Vec<Inode> = Vec::with_capacity(sorted.len());
    let mut index: HashMap<&Path, usize> = HashMap::with_capacity(sorted.len());
    // Each inode's parent and, for a directory, its named children.
    let mut parents: Vec<usize> = Vec::with_capacity(sorted.len());
    let mut children: Vec<Vec<(Vec<u8>, usize)>> = Vec::with_capacity(sorted.len());
    for (path, entry) in sorted {
        let malformed = || ErofsError::Malformed { path: path.clone() };
        let (parent, name) = match (path.parent(), path.file_name()) {
            (Some(parent), Some(name)) => match index.get(parent) {
                Some(&parent) if matches!(inodes[parent].kind, InodeKind::Dir { .. }) => (parent, name.as_bytes()),
                _ => return Err(malformed()),
            },
            // The root: the first entry, sorted before all others.
            _ if path.as_os_str().is_empty() && entry.kind == EntryKind::Dir => (0, &[][..]),
            _ => return Err(malformed()),
        };
        if name.len() > MAX_NAME_BYTES {
            return Err(ErofsError::NameTooLong { path: path.clone() });
        }
        let (kind, type_bits, size) = match &entry.kind {
            EntryKind::HardLink { target } => {
                let target = *index.get(target.as_path()).ok_or_else(malformed)?;
                if !matches!(inodes[target].kind, InodeKind::File { .. }) {
                    return Err(malformed());
                }
                inodes[target].nlink += 1;
                children[parent].push((name.to_vec(), target));
                continue;
            }
            EntryKind::Dir => (InodeKind::Dir { entries: Vec::new(), blocks: Vec::new() }, S_IFDIR, 0),
            EntryKind::File { size } => (InodeKind::File { path: path.clone() }, S_IFREG, *size),
            EntryKind::Symlink { target } => {
                let target = target.as_os_str().as_bytes().to_vec();
                if target.len() > MAX_SYMLINK_BYTES {
                    return Err(ErofsError::SymlinkTooLong { path: path.clone() });
                }
                let size = target.len() as u64;
                (InodeKind::Symlink { target }, S_IFLNK, size)
            }
        };
        let (Ok(uid), Ok(gid)) = (u32::try_from(entry.uid), u32::try_from(entry.gid)) else {
            return Err(ErofsError::OwnerTooLarge { path: path.clone(), uid: entry.uid, gid: entry.gid });
        };
        let at = inodes.len();
        let is_dir = entry.kind == EntryKind::Dir;
        inodes.push(Inode {
            kind,
            mode: (type_bits | (entry.mode & 0o7777)) as u16,
            uid,
            gid,
            nlink: if is_dir { 2 } else { 1 },
            size,
            layer: entry.layer,
            data: Data::None,
        });
        parents.push(parent);
        children.push(Vec::new());
        index.insert(path.as_path(), at);
        if at > 0 {
            if is_dir {
                inodes[parent].nlink += 1;
            }
            children[parent].push((name.to_vec(), at));
        }
    }
    for (i, inode) in inodes.iter_mut().enumerate() {
        if let InodeKind::Dir { entries, blocks } = &mut inode.kind {
            let mut named = std::mem::take(&mut children[i]);
            named.push((b".".to_vec(), i));
            named.push((b"..".to_vec(), parents[i]));
            named.sort_by(|a, b| a.0.cmp(&b.0));
            let lens: Vec<usize> = named.iter().map(|(n, _)| n.len()).collect();
            *blocks = pack_dirents(&lens);
            inode.size = blocks.len() as u64 * BLOCK_BYTES;
            *entries = named;
        }
    }
    Ok(inodes)
}

/// Lays the bodies out: `files` are (inode, layer, size) in path order;
/// each layer with bodies gets a region from the next multiple of `chunk`
/// at or after the previous region's end (the first at or after `start`),
/// holding its bodies in the given order, each on a block boundary. Answers
/// each body's offset in write order, each layer's region, and the end of
/// the last region (`start` if there is none).
fn layer_regions(
    files: &[(usize, usize, u64)],
    layers: usize,
    chunk: u64,
    start: u64,
) -> (Vec<(usize, u64)>, Vec<Option<Region>>, u64) {
    let mut by_layer: Vec<Vec<(usize, u64)>> = vec![Vec::new(); layers];
    for &(inode, layer, size) in files {
        if let Some(list) = by_layer.get_mut(layer) {
            list.push((inode, size));
        }
    }
    let mut at = start;
    let mut data = Vec::with_capacity(files.len());
    let mut regions = Vec::with_capacity(layers);
    for list in by_layer {
        if list.is_empty() {
            regions.push(None);
            continue;
        }
        let region_start = at.next_multiple_of(chunk);
        at = region_start;
        for (inode, size) in list {
            data.push((inode, at));
            at += size.next_multiple_of(BLOCK_BYTES);
        }
        regions.push(Some(Region { offset: region_start, length: at - region_start }));
    }
    (data, regions, at)
}

/// Places inodes, each given as (inode bytes, inline bytes after it), one
/// after the other on 32-byte boundaries, never across a block boundary;
/// answers each one's nid (its offset in 32-byte units) and the table's
/// length.
fn assign_nids(shapes: &[(u64, u64)]) -> (Vec<u64>, u64) {
    let mut at = 0u64;
    let mut nids = Vec::with_capacity(shapes.len());
    for &(inode, inline) in shapes {
        let len = inode + inline;
        if at % BLOCK_BYTES + len > BLOCK_BYTES {
            at = at.next_multiple_of(BLOCK_BYTES);
        }
        nids.push(at / NID_BYTES);
        at = (at + len).next_multiple_of(NID_BYTES);
    }
    (nids, at)
}

/// Packs directory entries, given by their names' lengths in sorted
/// order, into blocks: as many as fit in each (a 12-byte dirent and the
/// name apiece). Answers each block's range of entries.
fn pack_dirents(name_lens: &[usize]) -> Vec<Range<usize>> {
    let mut blocks = Vec::new();
    let mut first = 0;
    let mut used = 0usize;
    for (i, len) in name_lens.iter().enumerate() {
        let need = DIRENT_BYTES + len;
        if used + need > BLOCK_BYTES as usize {
            blocks.push(first..i);
            first = i;
            used = 0;
        }
        used += need;
    }
    if first < name_lens.len() || blocks.is_empty() {
        blocks.push(first..name_lens.len());
    }
    blocks
}

/// One directory block: the dirents (nid, name offset, file type), then
/// the names, then zeros (the last name ends at the first zero).
fn dirent_block(entries: &[(&[u8], u64, u8)]) -> Vec<u8> {
    let mut block = vec![0u8; BLOCK_BYTES as usize];
    let mut name_at = entries.len() * DIRENT_BYTES;
    for (i, (name, nid, file_type)) in entries.iter().enumerate() {
        let d = &mut block[i * DIRENT_BYTES..(i + 1) * DIRENT_BYTES];
        d[0..8].copy_from_slice(&nid.to_le_bytes());
        d[8..10].copy_from_slice(&(name_at as u16).to_le_bytes());
        d[10] = *file_type;
        block[name_at..name_at + name.len()].copy_from_slice(name);
        name_at += name.len();
    }
    block
}

/// The on-disk inode: compact (32 bytes) where everything fits, else
/// extended (64 bytes). `index` gives the 32-bit inode number.
fn encode_inode(inode: &Inode, index: usize) -> Vec<u8> {
    let (layout, addr) = match inode.data {
        Data::None => (LAYOUT_FLAT_PLAIN, 0),
        Data::Blocks(addr) => (LAYOUT_FLAT_PLAIN, addr),
        Data::Inline => (LAYOUT_FLAT_INLINE, 0),
    };
    let ino = (index as u32).wrapping_add(1);
    if inode.extended() {
        let mut b = vec![0u8; EXTENDED_BYTES as usize];
        b[0..2].copy_from_slice(&((layout << 1) | 1).to_le_bytes());
        b[4..6].copy_from_slice(&inode.mode.to_le_bytes());
        b[8..16].copy_from_slice(&inode.size.to_le_bytes());
        b[16..20].copy_from_slice(&addr.to_le_bytes());
        b[20..24].copy_from_slice(&ino.to_le_bytes());
        b[24..28].copy_from_slice(&inode.uid.to_le_bytes());
        b[28..32].copy_from_slice(&inode.gid.to_le_bytes());
        // mtime (32..40) and its nanoseconds (40..44) stay 0.
        b[44..48].copy_from_slice(&inode.nlink.to_le_bytes());
        b
    } else {
        let mut b = vec![0u8; COMPACT_BYTES as usize];
        b[0..2].copy_from_slice(&(layout << 1).to_le_bytes());
        b[4..6].copy_from_slice(&inode.mode.to_le_bytes());
        b[6..8].copy_from_slice(&(inode.nlink as u16).to_le_bytes());
        b[8..12].copy_from_slice(&(inode.size as u32).to_le_bytes());
        b[16..20].copy_from_slice(&addr.to_le_bytes());
        b[20..24].copy_from_slice(&ino.to_le_bytes());
        b[24..26].copy_from_slice(&(inode.uid as u16).to_le_bytes());
        b[26..28].copy_from_slice(&(inode.gid as u16).to_le_bytes());
        b
    }
}

/// The 128-byte superblock: no features, build time 0 (every compact
/// inode's mtime), a zero uuid.
fn superblock(plan: &Plan) -> Vec<u8> {
    let mut b = vec![0u8; 128];
    b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    b[12] = BLOCK_BITS;
    // root_nid (14..16) is 0: the root's inode comes first.
    b[16..24].copy_from_slice(&(plan.inodes.len() as u64).to_le_bytes());
    b[36..40].copy_from_slice(&((plan.total_bytes / BLOCK_BYTES) as u32).to_le_bytes());
    b[40..44].copy_from_slice(&((plan.meta_start / BLOCK_BYTES) as u32).to_le_bytes());
    b
}
