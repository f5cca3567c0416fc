use std::collections::HashSet;
use std::io::{Cursor, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use ignis_store::{CodeError, CodeRules, Store, StoreError};
use zip::CompressionMethod;
use zip::write::SimpleFileOptions;

enum E<'a> {
    File(&'a str, &'a [u8], u32),
    /// Full unix mode (type bits included) through external attributes.
    Raw(&'a str, &'a [u8], u32),
    Dir(&'a str),
    Link(&'a str, &'a str),
}

fn make_zip(entries: &[E<'_>]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
    for e in entries {
        match e {
            E::File(name, data, mode) => {
                w.start_file(*name, opts.unix_permissions(*mode)).unwrap();
                w.write_all(data).unwrap();
            }
            E::Raw(name, data, mode) => {
                w.start_file(*name, opts.external_attributes(*mode << 16))
                    .unwrap();
                w.write_all(data).unwrap();
            }
            E::Dir(name) => w.add_directory(*name, opts).unwrap(),
            E::Link(name, target) => w.add_symlink(*name, *target, opts).unwrap(),
        }
    }
    w.finish().unwrap().into_inner()
}

fn rules() -> CodeRules {
    CodeRules {
        require_bootstrap: true,
        ..CodeRules::default()
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Entries of `<data>/code`, sorted.
fn code_entries(data: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(data.join("code"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn meta_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path()).unwrap();
        s.put_meta("creds", b"secret").unwrap();
        // The same process cannot open it twice.
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::Locked { .. })
        ));
    }
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.meta("creds").unwrap().as_deref(), Some(&b"secret"[..]));
    assert_eq!(s.meta("missing").unwrap(), None);
}

#[test]
fn good_zip_unpacks_with_modes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let zip = make_zip(&[
        E::File("bootstrap", b"#!/bin/sh\necho hi\n", 0o755),
        E::Dir("lib/"),
        E::File("lib/data.txt", b"data", 0o600),
        E::File("./lib//deep/x.txt", b"x", 0o644),
        E::Raw("suid", b"s", 0o104755),
        E::Raw("sticky-private", b"p", 0o101700),
        E::Link("link", "lib/data.txt"),
        E::Link("abs", "/etc/passwd"),
        E::Link("up", "../../../../etc"),
    ]);
    let code = s.put_code(&zip, &rules()).unwrap();
    assert_eq!(code.zip_size, zip.len() as u64);
    let links = "lib/data.txt".len() + "/etc/passwd".len() + "../../../../etc".len();
    assert_eq!(code.unzipped_size, (18 + 4 + 1 + 1 + 1 + links) as u64);
    let hex = code.sha256_hex();
    assert_eq!(hex.len(), 64);
    assert_eq!(code.sha256_base64().len(), 44);
    let root = s.code_dir(&hex);
    assert_eq!(root, dir.path().join("code").join(&hex));
    assert_eq!(mode(&root), 0o755);
    assert_eq!(
        std::fs::read(root.join("bootstrap")).unwrap(),
        b"#!/bin/sh\necho hi\n"
    );
    assert_eq!(mode(&root.join("bootstrap")), 0o755);
    assert_eq!(mode(&root.join("lib")), 0o755);
    assert_eq!(mode(&root.join("lib/data.txt")), 0o644);
    assert_eq!(mode(&root.join("lib/deep")), 0o755);
    assert_eq!(std::fs::read(root.join("lib/deep/x.txt")).unwrap(), b"x");
    assert_eq!(mode(&root.join("suid")), 0o755);
    assert_eq!(mode(&root.join("sticky-private")), 0o755);
    assert_eq!(
        std::fs::read_link(root.join("link")).unwrap(),
        Path::new("lib/data.txt")
    );
    assert_eq!(
        std::fs::read_link(root.join("abs")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(
        std::fs::read_link(root.join("up")).unwrap(),
        Path::new("../../../../etc")
    );
    assert_eq!(code_entries(dir.path()), vec![hex.clone()]);
    assert_eq!(s.code_dir("../etc"), dir.path().join("code/.invalid"));

    // Idempotent.
    let again = s.put_code(&zip, &rules()).unwrap();
    assert_eq!(again, code);
    assert_eq!(code_entries(dir.path()), vec![hex.clone()]);
    // A second upload is validated against the rules given then.
    let tight = CodeRules {
        max_unzipped_bytes: 10,
        ..rules()
    };
    assert!(matches!(
        s.put_code(&zip, &tight),
        Err(CodeError::TooLarge { limit: 10 })
    ));
    assert!(root.join("bootstrap").exists());
}

#[test]
fn corrupt_zip() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    for bytes in [&b""[..], b"not a zip at all", b"PK\x05\x06garbage"] {
        let err = s.put_code(bytes, &rules()).unwrap_err();
        assert!(matches!(err, CodeError::Corrupt(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "Could not unzip uploaded file. Please check your file, then try to upload again."
        );
    }
    // Truncated valid zip.
    let zip = make_zip(&[E::File("bootstrap", &[7u8; 10_000], 0o755)]);
    let err = s.put_code(&zip[..zip.len() / 2], &rules()).unwrap_err();
    assert!(matches!(err, CodeError::Corrupt(_)), "{err:?}");
    // Flipped byte in compressed data: CRC or inflate error.
    let zip = make_zip(&[E::File("bootstrap", b"hello hello hello hello", 0o755)]);
    let mut bad = zip.clone();
    bad[40] ^= 0xff;
    assert!(s.put_code(&bad, &rules()).is_err());
    assert!(code_entries(dir.path()).is_empty());
}

#[test]
fn unsafe_paths() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    for name in [
        "../evil",
        "/abs",
        "a/../../b",
        "a/../b",
        "..\\evil",
        "x/..\\..\\evil",
        "\\abs",
    ] {
        let zip = make_zip(&[
            E::File("bootstrap", b"b", 0o755),
            E::File(name, b"evil", 0o644),
        ]);
        let err = s.put_code(&zip, &rules()).unwrap_err();
        assert!(
            matches!(&err, CodeError::UnsafePath(n) if n == name),
            "{name}: {err:?}"
        );
    }
    let zip = make_zip(&[E::File("bootstrap", b"b", 0o755), E::Link("../escape", "x")]);
    assert!(matches!(
        s.put_code(&zip, &rules()),
        Err(CodeError::UnsafePath(_))
    ));
    assert!(code_entries(dir.path()).is_empty());
    assert!(!dir.path().join("evil").exists());
}

#[test]
fn zip_bomb_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .unix_permissions(0o755);
    w.start_file("bootstrap", opts).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..300 {
        w.write_all(&zeros).unwrap();
    }
    let zip = w.finish().unwrap().into_inner();
    assert!(zip.len() < 1_000_000, "{}", zip.len());
    let err = s.put_code(&zip, &rules()).unwrap_err();
    assert!(
        matches!(err, CodeError::TooLarge { limit: 262_144_000 }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "Unzipped size must be smaller than 262144000 bytes"
    );
    assert!(code_entries(dir.path()).is_empty());
}

#[test]
fn too_many_files() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let r = CodeRules {
        max_files: 3,
        ..rules()
    };
    let zip = make_zip(&[
        E::File("bootstrap", b"b", 0o755),
        E::File("a", b"", 0o644),
        E::File("b", b"", 0o644),
        E::File("c", b"", 0o644),
    ]);
    assert!(matches!(
        s.put_code(&zip, &r),
        Err(CodeError::TooManyFiles { limit: 3 })
    ));
    // Implied directories count too.
    let zip = make_zip(&[
        E::File("bootstrap", b"b", 0o755),
        E::File("a/b/c/d", b"", 0o644),
    ]);
    assert!(matches!(
        s.put_code(&zip, &r),
        Err(CodeError::TooManyFiles { limit: 3 })
    ));
    assert!(code_entries(dir.path()).is_empty());
}

#[test]
fn symlink_attacks() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let target = outside.path().to_str().unwrap();
    let cases: Vec<Vec<E<'_>>> = vec![
        // Write through a symlink to a directory.
        vec![
            E::File("bootstrap", b"b", 0o755),
            E::Link("lib", target),
            E::File("lib/evil", b"x", 0o644),
        ],
        // Same, file first in the archive.
        vec![
            E::File("bootstrap", b"b", 0o755),
            E::File("lib/evil", b"x", 0o644),
            E::Link("lib", target),
        ],
        // A symlink whose parent is a symlink.
        vec![
            E::File("bootstrap", b"b", 0o755),
            E::Link("lib", target),
            E::Link("lib/evil", "/etc/passwd"),
        ],
        // A directory entry through a symlink.
        vec![
            E::File("bootstrap", b"b", 0o755),
            E::Link("lib", target),
            E::Dir("lib/sub/"),
        ],
    ];
    for entries in cases {
        let zip = make_zip(&entries);
        let err = s.put_code(&zip, &rules()).unwrap_err();
        assert!(matches!(err, CodeError::UnsafePath(_)), "{err:?}");
    }
    // A symlink and a file of the same name: refused (the file would be written through it otherwise).
    for entries in [
        vec![
            E::File("bootstrap", b"b", 0o755),
            E::Link("f", target),
            E::File("./f", b"x", 0o644),
        ],
        vec![
            E::File("bootstrap", b"b", 0o755),
            E::File("f", b"x", 0o644),
            E::Link("./f", target),
        ],
        vec![
            E::File("bootstrap", b"b", 0o755),
            E::File("f", b"x", 0o644),
            E::File("f/g", b"x", 0o644),
        ],
    ] {
        let zip = make_zip(&entries);
        let err = s.put_code(&zip, &rules()).unwrap_err();
        assert!(matches!(err, CodeError::Corrupt(_)), "{err:?}");
    }
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    assert!(code_entries(dir.path()).is_empty());
}

#[test]
fn bootstrap_rules() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let zip = make_zip(&[E::File("sub/bootstrap", b"b", 0o755), E::Dir("bootstrap/")]);
    assert!(matches!(
        s.put_code(&zip, &rules()),
        Err(CodeError::NoBootstrap)
    ));
    assert!(code_entries(dir.path()).is_empty());
    let relaxed = CodeRules {
        require_bootstrap: false,
        ..rules()
    };
    s.put_code(&zip, &relaxed).unwrap();
    // A symlink bootstrap is fine.
    let zip = make_zip(&[
        E::File("bin/app", b"b", 0o755),
        E::Link("bootstrap", "bin/app"),
    ]);
    let code = s.put_code(&zip, &rules()).unwrap();
    let link = s.code_dir(&code.sha256_hex()).join("bootstrap");
    assert_eq!(std::fs::read(link).unwrap(), b"b");
    // Empty zip without requirement.
    let empty = make_zip(&[]);
    let code = s.put_code(&empty, &relaxed).unwrap();
    assert_eq!(code.unzipped_size, 0);
    assert!(s.code_dir(&code.sha256_hex()).is_dir());
}

#[test]
fn unused_code_and_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = {
        let s = Store::open(dir.path()).unwrap();
        let a = s
            .put_code(&make_zip(&[E::File("bootstrap", b"a", 0o755)]), &rules())
            .unwrap();
        let b = s
            .put_code(&make_zip(&[E::File("bootstrap", b"b", 0o755)]), &rules())
            .unwrap();
        // Held code is never removed.
        assert_eq!(s.remove_unused_code(&HashSet::new()).unwrap(), 0);
        let hex = (a.sha256_hex(), b.sha256_hex());
        // As a process that ends (or is killed) while it holds them.
        std::mem::forget(a);
        std::mem::forget(b);
        hex
    };
    // An interrupted upload.
    std::fs::create_dir_all(dir.path().join("code/.tmp-1-1/x")).unwrap();
    std::fs::write(dir.path().join("code/.tmp-1-1/x/f"), b"f").unwrap();
    std::fs::write(dir.path().join("code/.tmp-2-2"), b"f").unwrap();
    let s = Store::open(dir.path()).unwrap();
    let mut expected = vec![a.clone(), b.clone()];
    expected.sort();
    assert_eq!(code_entries(dir.path()), expected);
    let live: HashSet<String> = [a.clone()].into();
    assert_eq!(s.remove_unused_code(&live).unwrap(), 1);
    assert_eq!(code_entries(dir.path()), vec![a.clone()]);
    assert!(!s.code_dir(&b).exists());
}

/// The trees under `code/`, without those moved aside for deletion.
fn code_trees(data: &Path) -> Vec<String> {
    code_entries(data).into_iter().filter(|e| !e.starts_with(".tmp-")).collect()
}

#[test]
fn a_tree_goes_with_its_last_hold() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let removed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let told = removed.clone();
    s.on_code_removed(move |tree| told.lock().unwrap().push(tree.to_path_buf()));
    let zip = make_zip(&[E::File("bootstrap", b"a", 0o755)]);
    let code = s.put_code(&zip, &rules()).unwrap();
    let hex = code.sha256_hex();
    assert_eq!(code.hold.sha256_hex(), hex);
    assert_eq!(code.hold.dir(), s.code_dir(&hex));
    // Every hold counts: another put, a hold by name, a clone.
    let again = s.put_code(&zip, &rules()).unwrap();
    let named = s.hold_code(&hex);
    let cloned = named.clone();
    let weak = cloned.downgrade();
    for step in 0..3 {
        match step {
            0 => drop(code.clone()),
            1 => drop(again.clone()),
            _ => drop(named.clone()),
        }
        assert_eq!(code_trees(dir.path()), vec![hex.clone()], "{step}");
    }
    drop(code);
    drop(again);
    drop(named);
    assert_eq!(code_trees(dir.path()), vec![hex.clone()]);
    assert!(weak.upgrade().is_some());
    assert!(removed.lock().unwrap().is_empty());
    drop(cloned);
    // The last hold is gone: so is the tree, at once, and whoever asked is told.
    assert!(code_trees(dir.path()).is_empty());
    assert!(weak.upgrade().is_none());
    assert_eq!(*removed.lock().unwrap(), vec![s.code_dir(&hex)]);
    // It can be put again, and a hold taken before the tree exists keeps it once it does.
    let early = s.hold_code(&hex);
    let code = s.put_code(&zip, &rules()).unwrap();
    drop(code);
    assert_eq!(code_trees(dir.path()), vec![hex.clone()]);
    drop(early);
    assert!(code_trees(dir.path()).is_empty());
    // A refused upload leaves nothing, held or not.
    assert!(s.put_code(b"not a zip", &rules()).is_err());
    assert!(code_trees(dir.path()).is_empty());
    // A stopping process keeps what its holders held.
    let kept = s.put_code(&zip, &rules()).unwrap();
    s.keep_code();
    drop(kept);
    assert_eq!(code_trees(dir.path()), vec![hex.clone()]);
    assert_eq!(s.remove_unused_code(&HashSet::new()).unwrap(), 1);
    // The background deletion finishes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !code_entries(dir.path()).is_empty() {
        assert!(std::time::Instant::now() < deadline, "{:?}", code_entries(dir.path()));
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn concurrent_same_code() {
    let dir = tempfile::tempdir().unwrap();
    let s = std::sync::Arc::new(Store::open(dir.path()).unwrap());
    let zip = std::sync::Arc::new(make_zip(&[E::File("bootstrap", &[1u8; 100_000], 0o755)]));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (s, zip) = (s.clone(), zip.clone());
            std::thread::spawn(move || s.put_code(&zip, &rules()).unwrap())
        })
        .collect();
    let codes: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(codes.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(code_entries(dir.path()), vec![codes[0].sha256_hex()]);
    let hex = codes[0].sha256_hex();
    drop(codes);
    assert!(!s.code_dir(&hex).exists());
}

/// Stores each zip as a layer would be (default rules) and merges them in order.
fn merge(s: &Store, layers: &[Vec<u8>], rules: &CodeRules) -> Result<ignis_store::MergedCode, CodeError> {
    let holds: Vec<_> = layers.iter().map(|zip| s.put_code(zip, &CodeRules::default()).unwrap().hold).collect();
    s.merge_code(&holds, rules)
}

#[test]
fn merged_layers_later_ones_win() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let first = make_zip(&[
        E::File("bin/tool", b"one", 0o755),
        E::File("lib/a.so", b"a1", 0o644),
        E::Link("lib/link", "a.so"),
        E::File("shadowed/file", b"gone", 0o644),
        E::Dir("empty/"),
    ]);
    let second = make_zip(&[
        E::File("lib/a.so", b"a2", 0o644),
        E::File("lib/b.so", b"b2", 0o644),
        // A directory replaces a link, a file replaces a directory.
        E::File("lib/link/inside", b"x", 0o644),
        E::File("shadowed", b"file now", 0o755),
    ]);
    let merged = merge(&s, &[first.clone(), second.clone()], &CodeRules::default()).unwrap();
    let root = merged.hold.dir();
    let read = |p: &str| std::fs::read(root.join(p)).unwrap();
    assert_eq!(read("bin/tool"), b"one");
    assert_eq!(read("lib/a.so"), b"a2");
    assert_eq!(read("lib/b.so"), b"b2");
    assert!(std::fs::symlink_metadata(root.join("lib/link")).unwrap().is_dir());
    assert_eq!(read("lib/link/inside"), b"x");
    assert_eq!(read("shadowed"), b"file now");
    assert!(root.join("empty").is_dir());
    assert_eq!(mode(&root.join("bin/tool")), 0o755);
    assert_eq!(mode(&root.join("lib/a.so")), 0o644);
    assert_eq!(mode(&root), 0o755);
    assert_eq!(merged.unzipped_size, 3 + 2 + 2 + 1 + 8);

    // Named by the parts in order: the other order is another tree, where the first layer wins.
    let names = |zips: &[&Vec<u8>]| -> Vec<String> {
        zips.iter().map(|z| s.put_code(z, &CodeRules::default()).unwrap().sha256_hex()).collect()
    };
    let order = names(&[&first, &second]);
    assert_eq!(merged.hold.sha256_hex(), ignis_store::merged_name(&[&order[0], &order[1]]));
    let reversed = merge(&s, &[second, first], &CodeRules::default()).unwrap();
    assert_ne!(reversed.hold.sha256_hex(), merged.hold.sha256_hex());
    let back = reversed.hold.dir();
    assert_eq!(std::fs::read(back.join("lib/a.so")).unwrap(), b"a1");
    assert_eq!(std::fs::read_link(back.join("lib/link")).unwrap(), Path::new("a.so"));
    assert_eq!(std::fs::read(back.join("shadowed/file")).unwrap(), b"gone");

    // Made once: the same parts again find the tree.
    let again = merge(&s, &[make_zip(&[E::File("bin/tool", b"one", 0o755)])], &CodeRules::default()).unwrap();
    let same = merge(&s, &[make_zip(&[E::File("bin/tool", b"one", 0o755)])], &CodeRules::default()).unwrap();
    assert_eq!(again.hold, same.hold);
    assert_eq!(same.unzipped_size, 3);
}

#[test]
fn a_merged_tree_outlives_its_parts_and_goes_with_its_last_hold() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let part = s.put_code(&make_zip(&[E::File("x", b"data", 0o644)]), &CodeRules::default()).unwrap();
    let merged = s.merge_code(std::slice::from_ref(&part.hold), &CodeRules::default()).unwrap();
    let (part_dir, merged_dir) = (part.hold.dir(), merged.hold.dir());
    drop(part);
    assert!(!part_dir.exists());
    assert_eq!(std::fs::read(merged_dir.join("x")).unwrap(), b"data");
    drop(merged);
    assert!(!merged_dir.exists());
}

#[test]
fn merged_limits_count_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let a = make_zip(&[E::File("a", &[1; 60], 0o644)]);
    let b = make_zip(&[E::File("b", &[2; 60], 0o644)]);
    let small = CodeRules { max_unzipped_bytes: 100, ..CodeRules::default() };
    assert!(matches!(merge(&s, &[a.clone(), b.clone()], &small), Err(CodeError::TooLarge { limit: 100 })));
    // An overridden file no longer counts.
    let a_again = make_zip(&[E::File("a", &[3; 60], 0o644)]);
    assert_eq!(merge(&s, &[a.clone(), a_again], &small).unwrap().unzipped_size, 60);
    let few = CodeRules { max_files: 1, ..CodeRules::default() };
    assert!(matches!(merge(&s, &[a, b], &few), Err(CodeError::TooManyFiles { limit: 1 })));
    // A refused merge leaves no tree under its name.
    let parts: Vec<String> = code_entries(dir.path()).into_iter().filter(|e| e.len() == 64).collect();
    assert!(parts.iter().all(|p| !dir.path().join("code").join(ignis_store::merged_name(&[p])).exists()));
}

#[test]
fn layer_zips_with_unsafe_paths_or_too_large_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    for name in ["../escape", "a/../../escape", "/etc/passwd"] {
        let zip = make_zip(&[E::File(name, b"x", 0o644)]);
        assert!(matches!(s.put_code(&zip, &CodeRules::default()), Err(CodeError::UnsafePath(_))), "{name}");
    }
    let big = make_zip(&[E::File("big", &[0; 1000], 0o644)]);
    let rules = CodeRules { max_unzipped_bytes: 999, ..CodeRules::default() };
    assert!(matches!(s.put_code(&big, &rules), Err(CodeError::TooLarge { limit: 999 })));
    assert!(code_entries(dir.path()).is_empty());
}
