use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::*;

/// One tar entry to build a test layer from.
enum E<'a> {
    Dir(&'a str, u32),
    File(&'a str, u32, &'a [u8]),
    Link(&'a str, &'a str),
    Symlink(&'a str, &'a str),
    Special(&'a str, tar::EntryType),
}

/// A tar layer; entries' names are written raw, so `..` and `/` survive.
fn layer(entries: &[E]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(1000);
        h.set_gid(1000);
        h.set_mtime(1_700_000_000);
        let (name, data): (&str, &[u8]) = match *e {
            E::Dir(name, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(mode);
                (name, b"")
            }
            E::File(name, mode, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(mode);
                (name, data)
            }
            E::Link(name, target) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                raw_link(&mut h, target);
                (name, b"")
            }
            E::Symlink(name, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                raw_link(&mut h, target);
                (name, b"")
            }
            E::Special(name, kind) => {
                h.set_entry_type(kind);
                h.set_mode(0o644);
                (name, b"")
            }
        };
        raw_name(&mut h, name);
        h.set_size(data.len() as u64);
        h.set_cksum();
        builder.append(&h, data).unwrap();
    }
    builder.into_inner().unwrap()
}

fn raw_name(h: &mut tar::Header, name: &str) {
    let field = &mut h.as_old_mut().name;
    field.fill(0);
    field[..name.len()].copy_from_slice(name.as_bytes());
}

fn raw_link(h: &mut tar::Header, target: &str) {
    let field = &mut h.as_old_mut().linkname;
    field.fill(0);
    field[..target.len()].copy_from_slice(target.as_bytes());
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn run(layers: &[Vec<u8>]) -> Result<Flattened, FlattenError> {
    run_with(layers, Limits::default())
}

fn run_with(layers: &[Vec<u8>], limits: Limits) -> Result<Flattened, FlattenError> {
    flatten(layers.iter().map(|l| l.as_slice()), &FlattenOptions { limits, spool_in: None })
}

/// The tree as lines: `path kind mode [size|target]` and file contents.
fn listing(f: &Flattened) -> Vec<String> {
    f.entries()
        .iter()
        .map(|(path, e)| {
            let what = match &e.kind {
                EntryKind::Dir => "dir".to_string(),
                EntryKind::File { .. } => {
                    let mut body = String::new();
                    f.open(path).unwrap().unwrap().read_to_string(&mut body).unwrap();
                    format!("file {body:?}")
                }
                EntryKind::Symlink { target } => format!("symlink {}", target.display()),
                EntryKind::HardLink { target } => format!("hardlink {}", target.display()),
            };
            format!("{} {what} {:o}", path.display(), e.mode)
        })
        .collect()
}

/// A written directory as lines: path, type, mode, content hash or target.
fn disk_listing(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let at = root.join(&rel);
        let meta = std::fs::symlink_metadata(&at).unwrap();
        let what = if meta.is_dir() {
            let mut children: Vec<_> =
                std::fs::read_dir(&at).unwrap().map(|e| rel.join(e.unwrap().file_name())).collect();
            children.sort();
            stack.extend(children.into_iter().rev());
            "dir".to_string()
        } else if meta.file_type().is_symlink() {
            format!("symlink {}", std::fs::read_link(&at).unwrap().display())
        } else {
            let hash = Sha256::digest(std::fs::read(&at).unwrap());
            format!("file {} nlink={}", hex(&hash[..8]), meta.nlink())
        };
        let mode = if meta.file_type().is_symlink() { 0 } else { meta.mode() & 0o7777 };
        out.push(format!("{} {what} {mode:o} mtime={}", rel.display(), meta.mtime()));
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn base() -> Vec<u8> {
    layer(&[
        E::Dir("etc/", 0o755),
        E::File("etc/passwd", 0o644, b"root:x:0:0"),
        E::Dir("gone/", 0o755),
        E::File("gone/a", 0o644, b"a"),
        E::Dir("opaque/", 0o755),
        E::File("opaque/old", 0o644, b"old"),
        E::Dir("dir-to-file/", 0o755),
        E::File("dir-to-file/inner", 0o644, b"inner"),
        E::File("file-to-dir", 0o644, b"was a file"),
        E::File("bin/tool", 0o755, b"#!/bin/sh"),
        E::File("removed", 0o644, b"bye"),
    ])
}

fn upper() -> Vec<u8> {
    layer(&[
        E::File("gone/.wh.a", 0o644, b""),
        E::File(".wh.removed", 0o644, b""),
        E::Dir("opaque/", 0o750),
        E::File("opaque/.wh..wh..opq", 0o644, b""),
        E::File("opaque/new", 0o644, b"new"),
        E::File("dir-to-file", 0o600, b"now a file"),
        E::Dir("file-to-dir/", 0o711),
        E::File("file-to-dir/x", 0o644, b"x"),
        E::Link("bin/tool2", "bin/tool"),
        E::Symlink("etc/escape", "../../../../etc/shadow"),
        E::Symlink("abs", "/etc/passwd"),
        E::File("/abs-file", 0o644, b"absolute"),
        E::File("./dot/../dotted", 0o644, b"dotted"),
        E::Special("dev/null", tar::EntryType::Char),
        E::Special("dev/sda", tar::EntryType::Block),
        E::Special("fifo", tar::EntryType::Fifo),
        E::File("suid", 0o4755, b"s"),
        E::Dir("sgid-dir/", 0o2775),
    ])
}

#[test]
fn layers_apply_in_order() {
    let f = run(&[gzip(&base()), upper()]).unwrap();
    let expected = [
        " dir 755",
        "abs symlink /etc/passwd 777",
        "abs-file file \"absolute\" 644",
        "bin dir 755",
        "bin/tool file \"#!/bin/sh\" 755",
        "bin/tool2 hardlink bin/tool 755",
        "dir-to-file file \"now a file\" 600",
        "dotted file \"dotted\" 644",
        "etc dir 755",
        "etc/escape symlink ../../../../etc/shadow 777",
        "etc/passwd file \"root:x:0:0\" 644",
        "file-to-dir dir 711",
        "file-to-dir/x file \"x\" 644",
        "gone dir 755",
        "opaque dir 750",
        "opaque/new file \"new\" 644",
        "sgid-dir dir 775",
        "suid file \"s\" 755",
    ];
    assert_eq!(listing(&f), expected);
    let stats = f.stats();
    assert_eq!(stats.layers, 2);
    assert_eq!(stats.devices_dropped, 2);
    assert_eq!(stats.fifos_dropped, 1);
    assert_eq!(stats.setid_dropped, 2);
    assert_eq!(stats.whiteouts, 3);
    let (_, passwd) = f.entries().iter().find(|(p, _)| p == Path::new("etc/passwd")).unwrap();
    assert_eq!((passwd.uid, passwd.gid), (1000, 1000));
}

#[test]
fn a_whiteout_spares_its_own_layer_and_a_link_outlives_its_target() {
    let lower = layer(&[E::File("keep", 0o644, b"kept body")]);
    let upper = layer(&[
        E::Link("alias", "keep"),
        E::File(".wh.keep", 0o644, b""),
        E::File("mine", 0o644, b"mine"),
        E::File(".wh.mine", 0o644, b""),
    ]);
    let f = run(&[lower, upper]).unwrap();
    assert_eq!(listing(&f), [" dir 755", "alias file \"kept body\" 644", "mine file \"mine\" 644"]);
}

#[test]
fn a_hard_link_to_a_lower_layer_is_written_as_a_link() {
    let f = run(&[base(), upper()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    f.write_to(dir.path(), WriteOptions::default()).unwrap();
    let a = std::fs::metadata(dir.path().join("bin/tool")).unwrap();
    let b = std::fs::metadata(dir.path().join("bin/tool2")).unwrap();
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
}

#[test]
fn each_entry_names_the_layer_that_last_wrote_it() {
    let lower = layer(&[
        E::Dir("etc/", 0o755),
        E::File("etc/passwd", 0o644, b"root"),
        E::File("keep", 0o644, b"kept body"),
        E::File("zz-target", 0o644, b"z"),
    ]);
    let upper = layer(&[
        E::Dir("etc/", 0o750),
        E::Link("alias", "keep"),
        E::File(".wh.keep", 0o644, b""),
        E::Link("a-link", "zz-target"),
        E::Symlink("s", "keep"),
        E::File("new", 0o644, b"new"),
    ]);
    let f = run(&[lower, upper]).unwrap();
    let layers: Vec<(String, usize)> = f.entries().iter().map(|(p, e)| (p.display().to_string(), e.layer)).collect();
    let expected = [
        ("", 0),
        // A file's layer is its body's, whichever layer named it.
        ("a-link", 0),
        ("alias", 0),
        ("etc", 1),
        ("etc/passwd", 0),
        ("new", 1),
        ("s", 1),
        ("zz-target", 0),
    ];
    let expected: Vec<(String, usize)> = expected.iter().map(|(p, l)| (p.to_string(), *l)).collect();
    assert_eq!(layers, expected);
}

#[test]
fn flattening_is_deterministic() {
    let layers = [gzip(&base()), upper()];
    let one = run(&layers).unwrap();
    let two = run(&layers).unwrap();
    assert_eq!(one.entries(), two.entries());
    assert_eq!(listing(&one), listing(&two));
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    one.write_to(d1.path(), WriteOptions::default()).unwrap();
    two.write_to(d2.path(), WriteOptions::default()).unwrap();
    let (l1, l2) = (disk_listing(d1.path()), disk_listing(d2.path()));
    assert_eq!(l1, l2);
    assert!(l1.iter().all(|l| l.ends_with("mtime=0")), "{l1:#?}");
    assert!(l1.contains(&"suid file 043a718774c572bd nlink=1 755 mtime=0".to_string()), "{l1:#?}");
    assert!(l1.contains(&"opaque dir 750 mtime=0".to_string()), "{l1:#?}");
}

#[test]
fn read_only_directories_are_written_with_their_children() {
    let f = run(&[layer(&[E::Dir("ro/", 0o555), E::File("ro/f", 0o444, b"f")])]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    f.write_to(dir.path(), WriteOptions::default()).unwrap();
    assert_eq!(std::fs::read(dir.path().join("ro/f")).unwrap(), b"f");
    let listing = disk_listing(dir.path());
    assert!(listing.contains(&"ro dir 555 mtime=0".to_string()), "{listing:#?}");
    std::fs::set_permissions(dir.path().join("ro"), std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn paths_escaping_the_root_are_refused() {
    let err = run(&[layer(&[E::File("a/../../etc/passwd", 0o644, b"x")])]).unwrap_err();
    assert!(matches!(err, FlattenError::Escapes { layer: 0, .. }), "{err}");
    let err = run(&[base(), layer(&[E::Link("evil", "../etc/passwd")])]).unwrap_err();
    assert!(matches!(err, FlattenError::LinkEscapes { layer: 1, .. }), "{err}");
}

#[test]
fn hard_links_need_a_present_file() {
    let err = run(&[layer(&[E::Link("l", "nowhere")])]).unwrap_err();
    assert!(matches!(err, FlattenError::LinkMissing { .. }), "{err}");
    // A target removed by this layer's whiteout is gone at that point.
    let err = run(&[base(), layer(&[E::File(".wh.removed", 0o644, b""), E::Link("l", "removed")])]).unwrap_err();
    assert!(matches!(err, FlattenError::LinkMissing { .. }), "{err}");
    let err = run(&[base(), layer(&[E::Link("l", "etc")])]).unwrap_err();
    assert!(matches!(err, FlattenError::LinkToDirectory { .. }), "{err}");
}

#[test]
fn what_is_not_a_tar_is_refused() {
    let text = b"this is not a tar archive\n".repeat(40);
    assert!(matches!(run(std::slice::from_ref(&text)).unwrap_err(), FlattenError::NotATar { layer: 0, .. }));
    let mut corrupt = gzip(&base());
    let middle = corrupt.len() / 2;
    corrupt.truncate(middle);
    assert!(matches!(run(&[base(), corrupt]).unwrap_err(), FlattenError::NotATar { layer: 1, .. }));
    let mut bad_gzip = gzip(&base());
    for b in &mut bad_gzip[10..] {
        *b ^= 0x55;
    }
    assert!(matches!(run(&[bad_gzip]).unwrap_err(), FlattenError::NotATar { layer: 0, .. }));
}

#[test]
fn the_size_and_entry_bounds_hold() {
    let big = layer(&[E::File("a", 0o644, &[1u8; 600]), E::File("b", 0o644, &[2u8; 600])]);
    let limits = Limits { max_bytes: 1000, ..Limits::default() };
    let err = run_with(std::slice::from_ref(&big), limits).unwrap_err();
    assert!(matches!(err, FlattenError::TooLarge { limit: 1000, .. }), "{err}");
    let limits = Limits { max_bytes: 1200, ..Limits::default() };
    assert_eq!(run_with(&[big], limits).unwrap().stats().bytes_read, 1200);

    let many = layer(&[E::File("a", 0o644, b""), E::File("b", 0o644, b""), E::File("c", 0o644, b"")]);
    // The root counts as one.
    let limits = Limits { max_entries: 3, ..Limits::default() };
    let err = run_with(std::slice::from_ref(&many), limits).unwrap_err();
    assert!(matches!(err, FlattenError::TooManyEntries { limit: 3, .. }), "{err}");
    let limits = Limits { max_entries: 4, ..Limits::default() };
    assert_eq!(run_with(&[many], limits).unwrap().entries().len(), 4);
}

#[test]
fn the_spool_holds_only_live_bodies_and_goes_away() {
    let lower = layer(&[E::File("a", 0o644, b"first")]);
    let upper = layer(&[E::File("a", 0o644, b"second")]);
    let spool_in = tempfile::tempdir().unwrap();
    let options = FlattenOptions { limits: Limits::default(), spool_in: Some(spool_in.path().to_path_buf()) };
    let f = flatten([lower.as_slice(), upper.as_slice()], &options).unwrap();
    let spool = std::fs::read_dir(spool_in.path()).unwrap().next().unwrap().unwrap().path();
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 1);
    drop(f);
    assert!(!spool.exists());
}

#[test]
fn a_hard_link_to_a_symlink_copies_it() {
    let f = run(&[layer(&[E::Symlink("s", "/target"), E::Link("t", "s")])]).unwrap();
    assert_eq!(listing(&f), [" dir 755", "s symlink /target 777", "t symlink /target 777"]);
}

#[test]
fn owners_are_written_only_when_asked_and_root() {
    let f = run(&[layer(&[E::File("f", 0o644, b"f")])]).unwrap();
    let (plain, owned) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    f.write_to(plain.path(), WriteOptions { ownership: false }).unwrap();
    f.write_to(owned.path(), WriteOptions { ownership: true }).unwrap();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    assert_eq!(std::fs::metadata(plain.path().join("f")).unwrap().uid(), me);
    let expected = if me == 0 { 1000 } else { me };
    assert_eq!(std::fs::metadata(owned.path().join("f")).unwrap().uid(), expected);
}
