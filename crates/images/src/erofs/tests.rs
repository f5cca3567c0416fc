use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::*;
use crate::flatten::{FlattenOptions, flatten};
use crate::tests::random;

const KIB: u64 = 1024;
const MIB: usize = 1024 * 1024;
const CHUNK: u64 = 512 * KIB;

// ---- pure planning ----

fn entry(kind: EntryKind, mode: u32, layer: usize) -> Entry {
    Entry { kind, mode, uid: 0, gid: 0, layer }
}

fn file(size: u64, layer: usize) -> Entry {
    entry(EntryKind::File { size }, 0o644, layer)
}

fn dir() -> Entry {
    entry(EntryKind::Dir, 0o755, 0)
}

fn tree(entries: &[(&str, Entry)]) -> Vec<(PathBuf, Entry)> {
    let mut out: Vec<(PathBuf, Entry)> = entries.iter().map(|(p, e)| (PathBuf::from(p), e.clone())).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn names(inode: &Inode) -> Vec<String> {
    match &inode.kind {
        InodeKind::Dir { entries, .. } => {
            entries.iter().map(|(n, i)| format!("{}={i}", String::from_utf8_lossy(n))).collect()
        }
        _ => Vec::new(),
    }
}

#[test]
fn dirents_pack_into_self_contained_blocks() {
    let check = |lens: &[usize], expected: &[(usize, usize)]| {
        let blocks: Vec<(usize, usize)> = pack_dirents(lens).into_iter().map(|r| (r.start, r.end)).collect();
        assert_eq!(blocks, expected, "{lens:?}");
    };
    check(&[1, 2], &[(0, 2)]);
    check(&[], &[(0, 0)]);
    // 255-byte names take 267 bytes each: 15 fit in a block.
    check(&[255; 31], &[(0, 15), (15, 30), (30, 31)]);
    // Exactly full: 4096 = 16 × 256 (12 + 244).
    check(&[244; 16], &[(0, 16)]);
    check(&[244; 17], &[(0, 16), (16, 17)]);
}

#[test]
fn a_dirent_block_reads_back() {
    let block = dirent_block(&[(b".", 0, FT_DIR), (b"..", 0, FT_DIR), (b"abc", 7, FT_REG_FILE)]);
    assert_eq!(block.len(), 4096);
    let nameoff = |i: usize| u16::from_le_bytes([block[i * 12 + 8], block[i * 12 + 9]]) as usize;
    assert_eq!(nameoff(0), 36, "the first name follows the three dirents");
    assert_eq!(&block[nameoff(0)..nameoff(1)], b".");
    assert_eq!(&block[nameoff(1)..nameoff(2)], b"..");
    assert_eq!(&block[nameoff(2)..nameoff(2) + 4], b"abc\0", "the last name ends at a zero");
    assert_eq!(u64::from_le_bytes(block[24..32].try_into().unwrap()), 7);
    assert_eq!(block[34], FT_REG_FILE);
}

#[test]
fn nids_never_cross_a_block() {
    // Compact inodes back to back.
    assert_eq!(assign_nids(&[(32, 0), (32, 0), (32, 0)]), (vec![0, 1, 2], 96));
    // An inline tail is rounded up to 32 bytes.
    assert_eq!(assign_nids(&[(32, 0), (32, 5), (64, 0)]), (vec![0, 1, 3], 160));
    // An extended inode that would straddle a block goes to the next one.
    let mut shapes = vec![(32, 0); 127];
    shapes.push((64, 0));
    let (nids, len) = assign_nids(&shapes);
    assert_eq!(nids[127], 128);
    assert_eq!(len, 4096 + 64);
    // So does an inode whose inline target would.
    let (nids, _) = assign_nids(&[(32, 0), (32, 4064)]);
    assert_eq!(nids, vec![0, 128]);
    let (nids, _) = assign_nids(&[(32, 4064), (32, 0)]);
    assert_eq!(nids, vec![0, 128]);
}

#[test]
fn layers_get_chunk_aligned_regions_in_order() {
    // (inode, layer, size), in path order.
    let files = [(1, 2, 10), (2, 0, 5000), (3, 0, 4096), (4, 2, CHUNK + 1)];
    let (data, regions, end) = layer_regions(&files, 4, CHUNK, 4096);
    assert_eq!(data, vec![(2, CHUNK), (3, CHUNK + 8192), (1, 2 * CHUNK), (4, 2 * CHUNK + 4096)]);
    assert_eq!(
        regions,
        vec![
            Some(Region { offset: CHUNK, length: 12288 }),
            None,
            Some(Region { offset: 2 * CHUNK, length: 4096 + CHUNK + 4096 }),
            None,
        ]
    );
    assert_eq!(end, 3 * CHUNK + 8192);
    assert_eq!(layer_regions(&[], 2, CHUNK, 4096), (vec![], vec![None, None], 4096));
}

#[test]
fn the_tree_becomes_inodes_root_first() {
    let entries = tree(&[
        ("", dir()),
        ("a", dir()),
        ("a/f", file(3, 0)),
        ("a/g", entry(EntryKind::HardLink { target: "a/f".into() }, 0o644, 0)),
        ("a/sub", dir()),
        ("b", entry(EntryKind::Symlink { target: "a/f".into() }, 0o777, 1)),
        ("-first", file(0, 0)),
        ("tmp", entry(EntryKind::Symlink { target: "/var/tmp".into() }, 0o777, 0)),
    ]);
    let inodes = inode_tree(&entries, true).unwrap();
    let order: Vec<String> = inodes
        .iter()
        .map(|i| match &i.kind {
            InodeKind::Dir { .. } => format!("dir {:o} nlink={}", i.mode, i.nlink),
            InodeKind::File { path } => format!("file {} {:o} nlink={}", path.display(), i.mode, i.nlink),
            InodeKind::Symlink { target } => format!("symlink {} {:o}", String::from_utf8_lossy(target), i.mode),
        })
        .collect();
    assert_eq!(
        order,
        [
            // root: ., .., and the directories a, dev, proc, sys.
            "dir 40755 nlink=6",
            "file -first 100644 nlink=1",
            "dir 40755 nlink=3",
            "file a/f 100644 nlink=2",
            "dir 40755 nlink=2",
            "symlink a/f 120777",
            "dir 40755 nlink=2",
            "dir 40755 nlink=2",
            "dir 40755 nlink=2",
            // `tmp` is the image's own: no mountpoint replaces it.
            "symlink /var/tmp 120777",
        ]
    );
    // Names sorted by their bytes, `-` before `.`.
    assert_eq!(names(&inodes[0]), ["-first=1", ".=0", "..=0", "a=2", "b=5", "dev=6", "proc=7", "sys=8", "tmp=9"]);
    assert_eq!(names(&inodes[2]), [".=2", "..=0", "f=3", "g=3", "sub=4"]);
    let without = inode_tree(&entries, false).unwrap();
    assert_eq!(without.len(), 7);
    assert_eq!(without[0].nlink, 3);
}

#[test]
fn mountpoints_are_root_owned_and_tmp_is_sticky() {
    let inodes = inode_tree(&tree(&[("", dir())]), true).unwrap();
    let modes: Vec<(String, u16, u32)> = inodes[0]
        .kind
        .clone()
        .dir_entries()
        .into_iter()
        .map(|(n, i)| (n, inodes[i].mode, inodes[i].uid))
        .collect();
    assert_eq!(
        modes,
        [
            (".".into(), 0o40755, 0),
            ("..".into(), 0o40755, 0),
            ("dev".into(), 0o40755, 0),
            ("proc".into(), 0o40755, 0),
            ("sys".into(), 0o40755, 0),
            ("tmp".into(), 0o41777, 0),
        ]
    );
}

impl InodeKind {
    fn dir_entries(self) -> Vec<(String, usize)> {
        match self {
            InodeKind::Dir { entries, .. } => {
                entries.into_iter().map(|(n, i)| (String::from_utf8_lossy(&n).into_owned(), i)).collect()
            }
            _ => Vec::new(),
        }
    }
}

#[test]
fn what_the_format_cannot_hold_is_refused() {
    let long = "n".repeat(256);
    let err = inode_tree(&tree(&[("", dir()), (&long, file(0, 0))]), false).unwrap_err();
    assert!(matches!(err, ErofsError::NameTooLong { .. }), "{err}");
    assert!(inode_tree(&tree(&[("", dir()), (&long[..255], file(0, 0))]), false).is_ok());

    let target = PathBuf::from("t".repeat(4096));
    let err = inode_tree(&tree(&[("", dir()), ("l", entry(EntryKind::Symlink { target }, 0o777, 0))]), false);
    assert!(matches!(err, Err(ErofsError::SymlinkTooLong { .. })));

    let mut big = file(0, 0);
    big.uid = 1 << 32;
    let err = inode_tree(&tree(&[("", dir()), ("f", big)]), false);
    assert!(matches!(err, Err(ErofsError::OwnerTooLarge { .. })));

    let dangling = entry(EntryKind::HardLink { target: "nowhere".into() }, 0o644, 0);
    let err = inode_tree(&tree(&[("", dir()), ("f", dangling)]), false);
    assert!(matches!(err, Err(ErofsError::Malformed { .. })));
    let orphan = inode_tree(&tree(&[("", dir()), ("a/b", file(0, 0))]), false);
    assert!(matches!(orphan, Err(ErofsError::Malformed { .. })));

    let bad = ErofsOptions { chunk_bytes: 1000, add_mountpoints: false };
    assert!(matches!(plan(&tree(&[("", dir())]), 1, &bad), Err(ErofsError::ChunkBytes(1000))));
}

#[test]
fn large_values_take_extended_inodes() {
    let mut owned = file(1, 0);
    owned.uid = 70_000;
    let entries = tree(&[("", dir()), ("huge", file(5 << 30, 0)), ("owned", owned), ("small", file(1, 0))]);
    let inodes = inode_tree(&entries, false).unwrap();
    let extended: Vec<bool> = inodes.iter().map(Inode::extended).collect();
    assert_eq!(extended, [false, true, true, false]);
    let encoded = encode_inode(&inodes[1], 1);
    assert_eq!(encoded.len(), 64);
    assert_eq!(encoded[0] & 1, 1, "the extended version bit");
    assert_eq!(u64::from_le_bytes(encoded[8..16].try_into().unwrap()), 5 << 30);
    assert_eq!(encode_inode(&inodes[3], 3).len(), 32);
}

#[test]
fn the_plan_puts_metadata_after_the_data_root_first() {
    let entries = tree(&[("", dir()), ("a", file(10, 0)), ("b", file(CHUNK, 1)), ("c", file(0, 1))]);
    let plan = plan(&entries, 3, &ErofsOptions { add_mountpoints: false, ..Default::default() }).unwrap();
    assert_eq!(plan.regions, vec![Some(Region { offset: CHUNK, length: 4096 }), Some(Region { offset: 2 * CHUNK, length: CHUNK }), None]);
    assert_eq!(plan.meta_start, 3 * CHUNK);
    assert_eq!(plan.nids[0], 0);
    assert_eq!(plan.inodes[3].data, Data::None, "an empty file has no blocks");
    // The root's one directory block follows the inode table's block.
    assert_eq!(plan.inodes[0].data, Data::Blocks((3 * CHUNK / 4096 + 1) as u32));
    assert_eq!(plan.total_bytes, 3 * CHUNK + 8192);
}

// ---- images from layers ----

/// One tar entry of a test layer.
pub(crate) enum T<'a> {
    Dir(&'a str, u32),
    File(&'a str, u32, Vec<u8>),
    Owned(&'a str, u64, u64, Vec<u8>),
    Link(&'a str, &'a str),
    Symlink(&'a str, &'a str),
}

pub(crate) fn layer(entries: &[T]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(0);
        match e {
            T::Dir(name, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                builder.append_data(&mut h, name, &[][..]).unwrap();
            }
            T::File(name, mode, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                builder.append_data(&mut h, name, data.as_slice()).unwrap();
            }
            T::Owned(name, uid, gid, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o640);
                h.set_uid(*uid);
                h.set_gid(*gid);
                h.set_size(data.len() as u64);
                builder.append_data(&mut h, name, data.as_slice()).unwrap();
            }
            T::Link(name, target) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                builder.append_link(&mut h, name, target).unwrap();
            }
            T::Symlink(name, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                builder.append_link(&mut h, name, target).unwrap();
            }
        }
    }
    builder.into_inner().unwrap()
}

fn flat(layers: &[Vec<u8>]) -> Flattened {
    flatten(layers.iter().map(|l| l.as_slice()), &FlattenOptions::default()).unwrap()
}

fn image(flat: &Flattened, options: &ErofsOptions) -> (std::fs::File, ErofsStats) {
    let mut file = tempfile::tempfile().unwrap();
    let stats = build(flat, &mut file, options).unwrap();
    (file, stats)
}

fn bytes_of(mut file: &std::fs::File) -> Vec<u8> {
    let mut out = Vec::new();
    file.seek(SeekFrom::Start(0)).unwrap();
    file.read_to_end(&mut out).unwrap();
    out
}

/// The layers of the mounted test: every kind of entry and size.
fn rich_layers() -> Vec<Vec<u8>> {
    let mut lower = vec![
        T::Dir("./", 0o755),
        T::Dir("etc", 0o755),
        T::File("etc/hostname", 0o644, b"ignis\n".to_vec()),
        T::File("etc/shadow", 0o600, b"root:*:\n".to_vec()),
        T::File("empty", 0o644, Vec::new()),
        T::File("usr/lib/big", 0o755, random(3 * MIB + 12_345, 1)),
        T::File("usr/lib/block", 0o644, random(4096, 2)),
        T::Owned("home/user/owned", 70_000, 70_001, b"mine".to_vec()),
        T::Owned("home/user/small", 1000, 1000, b"also mine".to_vec()),
        T::Symlink("usr/lib/short", "big"),
        T::Symlink("usr/lib/outside", "/etc/../../hostname"),
        T::Link("usr/lib/big-again", "usr/lib/big"),
        T::Dir("a/b/c/d/e/f", 0o700),
        T::File("a/b/c/d/e/f/deep", 0o444, b"deep".to_vec()),
    ];
    let long_target = format!("/{}", "x/".repeat(2040));
    lower.push(T::Symlink("usr/lib/long", &long_target));
    let mut names = Vec::new();
    for i in 0..3000 {
        let name = format!("many/{i:05}-{}", "n".repeat(200 + i % 50));
        names.push(name);
    }
    names.extend(["many/!bang".to_string(), "many/-dash".to_string(), "many/+plus".to_string()]);
    for (i, name) in names.iter().enumerate() {
        lower.push(T::File(name, 0o644, format!("{i}").into_bytes()));
    }
    let upper = vec![
        T::Dir("etc", 0o750),
        T::File("etc/hostname", 0o644, b"ignis-2\n".to_vec()),
        T::Link("etc/hostname-link", "etc/hostname"),
        T::Link("usr/lib/block-link", "usr/lib/block"),
        T::File("usr/lib/.wh.short", 0o644, Vec::new()),
        T::File("new", 0o644, random(100_000, 3)),
    ];
    vec![layer(&lower), layer(&upper)]
}

/// A mounted image, unmounted when dropped: straight from the file, as
/// the sandbox mounts images (Linux 6.12 and later), else through a loop
/// device.
struct Mounted {
    dir: tempfile::TempDir,
}

impl Mounted {
    fn new(image: &Path) -> Mounted {
        let dir = tempfile::tempdir().unwrap();
        let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
        let (source, target) = (c(image), c(dir.path()));
        // SAFETY: NUL-terminated strings alive for the call; no data argument.
        let rc = unsafe {
            libc::mount(source.as_ptr(), target.as_ptr(), c"erofs".as_ptr(), libc::MS_RDONLY, std::ptr::null())
        };
        if rc != 0 {
            let status =
                Command::new("mount").args(["-t", "erofs", "-o", "ro"]).arg(image).arg(dir.path()).status().unwrap();
            assert!(status.success(), "mount {image:?}");
        }
        Mounted { dir }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// The flattened tree as it should appear mounted: one line per path.
fn expected_listing(flat: &Flattened, mountpoints: bool) -> BTreeMap<PathBuf, String> {
    let entries: HashMap<&Path, &Entry> = flat.entries().iter().map(|(p, e)| (p.as_path(), e)).collect();
    let mut links: HashMap<&Path, u64> = HashMap::new();
    let mut subdirs: HashMap<&Path, u64> = HashMap::new();
    for (path, entry) in flat.entries() {
        match &entry.kind {
            EntryKind::HardLink { target } => *links.entry(target.as_path()).or_default() += 1,
            EntryKind::Dir if !path.as_os_str().is_empty() => {
                *subdirs.entry(path.parent().unwrap()).or_default() += 1;
            }
            _ => {}
        }
    }
    let mut out = BTreeMap::new();
    if mountpoints {
        for (name, mode) in MOUNTPOINTS {
            if !entries.contains_key(Path::new(name)) {
                *subdirs.entry(Path::new("")).or_default() += 1;
                out.insert(PathBuf::from(name), format!("dir {mode:o} 0:0 nlink=2"));
            }
        }
    }
    for (path, entry) in flat.entries() {
        let (shown, same_as) = match &entry.kind {
            EntryKind::HardLink { target } => (entries[target.as_path()], target.clone()),
            _ => (entry, path.clone()),
        };
        let owner = format!("{}:{}", shown.uid, shown.gid);
        let line = match &shown.kind {
            EntryKind::Dir => {
                format!("dir {:o} {owner} nlink={}", shown.mode, 2 + subdirs.get(path.as_path()).unwrap_or(&0))
            }
            EntryKind::File { .. } => {
                let mut body = Vec::new();
                flat.open(&same_as).unwrap().unwrap().read_to_end(&mut body).unwrap();
                let nlink = 1 + links.get(same_as.as_path()).unwrap_or(&0);
                format!("file {:o} {owner} nlink={nlink} {} ino-of={}", shown.mode, hex(&Sha256::digest(&body)), same_as.display())
            }
            EntryKind::Symlink { target } => format!("symlink {:o} {owner} -> {}", shown.mode, target.display()),
            EntryKind::HardLink { .. } => unreachable!("a hard link names a file"),
        };
        out.insert(path.clone(), line);
    }
    out
}

/// The mounted tree, in the same form; every mtime must be 0.
fn mounted_listing(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut first_of_ino: HashMap<u64, PathBuf> = HashMap::new();
    let mut stack = vec![PathBuf::new()];
    let mut files = Vec::new();
    while let Some(rel) = stack.pop() {
        let meta = std::fs::symlink_metadata(root.join(&rel)).unwrap();
        assert_eq!(meta.mtime(), 0, "{rel:?}");
        let owner = format!("{}:{}", meta.uid(), meta.gid());
        let mode = meta.mode() & 0o7777;
        let line = if meta.is_dir() {
            for child in std::fs::read_dir(root.join(&rel)).unwrap() {
                stack.push(rel.join(child.unwrap().file_name()));
            }
            format!("dir {mode:o} {owner} nlink={}", meta.nlink())
        } else if meta.file_type().is_symlink() {
            format!("symlink {mode:o} {owner} -> {}", std::fs::read_link(root.join(&rel)).unwrap().display())
        } else {
            files.push((rel.clone(), meta.ino()));
            let hash = Sha256::digest(std::fs::read(root.join(&rel)).unwrap());
            format!("file {mode:o} {owner} nlink={} {}", meta.nlink(), hex(&hash))
        };
        out.insert(rel, line);
    }
    // A hard-link group is named by its first path, as flattening names it.
    files.sort();
    for (path, ino) in files {
        let first = first_of_ino.entry(ino).or_insert_with(|| path.clone()).clone();
        let line = out.get_mut(&path).unwrap();
        line.push_str(&format!(" ino-of={}", first.display()));
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `fsck.erofs` checks the image, reading every file's data as it
/// extracts the tree into a temporary directory.
fn fsck(image: &Path) {
    let into = tempfile::tempdir().unwrap();
    let extract = format!("--extract={}", into.path().join("tree").display());
    let run = Command::new("fsck.erofs").arg(extract).arg(image).output().expect("fsck.erofs (erofs-utils)");
    let output = format!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "fsck.erofs: {output}");
}

#[test]
fn the_mounted_image_is_the_flattened_tree_as_root() {
    let flat = flat(&rich_layers());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("image.erofs");
    let mut file = std::fs::File::create_new(&path).unwrap();
    let stats = build(&flat, &mut file, &ErofsOptions::default()).unwrap();
    drop(file);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), stats.bytes);
    fsck(&path);
    let mounted = Mounted::new(&path);
    let expected = expected_listing(&flat, true);
    let actual = mounted_listing(mounted.dir.path());
    let differ: Vec<_> = expected
        .iter()
        .filter(|(p, line)| actual.get(*p) != Some(*line))
        .map(|(p, line)| format!("{p:?}: expected {line}, mounted {:?}", actual.get(p)))
        .collect();
    assert!(differ.is_empty(), "{differ:#?}");
    assert_eq!(actual.len(), expected.len());
    // The big directory spans many blocks; each name is found by lookup.
    assert!(actual.contains_key(Path::new("many/-dash")));
    assert!(actual.contains_key(Path::new("home/user/owned")));
}

#[test]
fn an_image_without_mountpoints_has_only_the_tree_as_root() {
    let flat = flat(&[layer(&[T::File("only", 0o600, b"x".to_vec()), T::Symlink("tmp", "/var/tmp")])]);
    let dir = tempfile::tempdir().unwrap();
    for mountpoints in [false, true] {
        let path = dir.path().join(format!("image-{mountpoints}"));
        let mut file = std::fs::File::create_new(&path).unwrap();
        build(&flat, &mut file, &ErofsOptions { add_mountpoints: mountpoints, ..Default::default() }).unwrap();
        drop(file);
        fsck(&path);
        let mounted = Mounted::new(&path);
        assert_eq!(mounted_listing(mounted.dir.path()).len(), expected_listing(&flat, mountpoints).len());
        assert_eq!(mounted_listing(mounted.dir.path()), expected_listing(&flat, mountpoints));
    }
}

#[test]
fn the_same_tree_gives_the_same_bytes() {
    let layers = rich_layers();
    let (first, stats) = image(&flat(&layers), &ErofsOptions::default());
    let (second, again) = image(&flat(&layers), &ErofsOptions::default());
    assert_eq!(stats, again);
    let (first, second) = (bytes_of(&first), bytes_of(&second));
    assert_eq!(first.len() as u64, stats.bytes);
    assert!(first == second, "two builds differ");
    // The superblock, where the kernel looks for it.
    assert_eq!(&first[1024..1028], &MAGIC.to_le_bytes());
    assert_eq!(stats.layers.len(), 2);
    assert!(stats.layers.iter().all(|r| r.is_some_and(|r| r.offset % CHUNK == 0)));
    assert_eq!(stats.metadata.offset % CHUNK, 0);
}

#[test]
fn an_image_on_shared_base_layers_shares_their_chunks() {
    // A base of 32 MiB and 8 MiB layers, and a small third layer.
    let names: Vec<String> = (0..16).map(|i| format!("usr/lib/lib{i}.so")).collect();
    let l0: Vec<T> =
        names.iter().enumerate().map(|(i, name)| T::File(name, 0o755, random(2 * MIB - 1000 * i, i as u64))).collect();
    let l0 = layer(&l0);
    let l1 = layer(&[
        T::File("app/main.py", 0o644, random(8 * MIB, 100)),
        T::File("usr/lib/lib3.so", 0o755, random(1000, 101)),
    ]);
    let l2 = layer(&[T::File("app/config.json", 0o644, random(60_000, 200))]);
    let (a, a_stats) = image(&flat(&[l0.clone(), l1.clone()]), &ErofsOptions::default());
    let (b, b_stats) = image(&flat(&[l0, l1, l2]), &ErofsOptions::default());
    assert_eq!(&b_stats.layers[..2], &a_stats.layers[..]);
    let (a, b) = (bytes_of(&a), bytes_of(&b));
    for region in a_stats.layers.iter().flatten() {
        let range = region.offset as usize..(region.offset + region.length).next_multiple_of(CHUNK) as usize;
        assert!(a[range.clone()] == b[range.clone()], "the base layers' chunks differ");
    }
    let held: HashSet<&[u8]> = a.chunks(CHUNK as usize).collect();
    let new: u64 = b.chunks(CHUNK as usize).filter(|c| !held.contains(c)).map(|c| c.len() as u64).sum();
    assert!(new * 20 < b.len() as u64, "{new} of {} bytes are new", b.len());
}

#[test]
fn a_body_shorter_than_recorded_fails_the_build() {
    let flat = flat(&[layer(&[T::File("f", 0o644, b"hello".to_vec())])]);
    let err = ErofsError::BodySize { path: "f".into(), expected: 50, got: 5 };
    let mut out = tempfile::tempfile().unwrap();
    let mut writer = Out::new(&mut out).unwrap();
    let got = copy_body(&flat, Path::new("f"), 50, &mut writer, &mut [0; 16]).unwrap_err();
    assert_eq!(got.to_string(), err.to_string());
}

