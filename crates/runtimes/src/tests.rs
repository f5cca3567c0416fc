use crate::recipe::{self, Runtime};
use crate::{BuildError, build, buildable, defaults, names};

#[test]
fn every_name_parses_to_its_family() {
    let families: Vec<_> = names().iter().map(|name| Runtime::parse(name)).collect();
    assert_eq!(
        families,
        [
            Some(Runtime::Python { minor: 11 }),
            Some(Runtime::Python { minor: 12 }),
            Some(Runtime::Python { minor: 13 }),
            Some(Runtime::Python { minor: 14 }),
            Some(Runtime::Node { major: 20 }),
            Some(Runtime::Node { major: 22 }),
            Some(Runtime::Node { major: 24 }),
            Some(Runtime::Provided),
            Some(Runtime::Provided),
        ]
    );
    for unknown in ["", "python3.10", "python3.x", "nodejs18.x", "provided", "java21", "python3.11 "] {
        assert_eq!(Runtime::parse(unknown), None, "{unknown:?}");
    }
}

#[test]
fn defaults_and_buildable_are_known_names() {
    assert!(defaults().iter().all(|name| names().contains(name)));
    let buildable = buildable();
    assert!(buildable.iter().all(|name| names().contains(&name.as_str())));
    assert!(buildable.iter().any(|name| name == "provided.al2023"));
    assert!(buildable.iter().any(|name| name == "provided.al2"));
}

#[test]
fn unknown_and_unbuildable_names_are_refused_before_any_work() {
    let cache = tempfile::tempdir().unwrap();
    let missing = cache.path().join("absent");
    match build("ruby3.3", &missing, &|_| {}) {
        Err(error @ BuildError::Unknown { .. }) => assert!(error.to_string().contains("python3.11, python3.12")),
        other => panic!("{other:?}"),
    }
    if let Some(name) = names().iter().find(|name| !buildable().iter().any(|b| b == *name)) {
        assert!(matches!(build(name, &missing, &|_| {}), Err(BuildError::NotBuildable { .. })), "{name}");
    }
    assert!(!missing.exists());
}

#[test]
fn ldd_output_is_read() {
    let output = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                  \tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f)\n\
                  \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                  \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
    assert_eq!(
        recipe::parse_ldd(output),
        Ok(vec![
            "/lib/x86_64-linux-gnu/libm.so.6".to_string(),
            "/lib/x86_64-linux-gnu/libc.so.6".to_string(),
            "/lib64/ld-linux-x86-64.so.2".to_string(),
        ])
    );
    assert_eq!(recipe::parse_ldd("\tstatically linked\n"), Ok(vec![]));
    assert_eq!(recipe::parse_ldd("\tnot a dynamic executable\n"), Ok(vec![]));
    assert_eq!(recipe::parse_ldd("\tlibfoo.so.1 => not found\n"), Err("libfoo.so.1".to_string()));
}

#[test]
fn stdlib_exclusions() {
    for excluded in [
        "test",
        "test/test_os.py",
        "idlelib/idle.py",
        "tkinter",
        "turtledemo",
        "ensurepip/__init__.py",
        "lib2to3/tests/data",
        "config-3.11-x86_64-linux-gnu/libpython3.11.a",
        "EXTERNALLY-MANAGED",
        "sitecustomize.py",
        "__pycache__",
        "json/__pycache__/decoder.cpython-311.pyc",
    ] {
        assert!(recipe::stdlib_excluded(excluded), "{excluded}");
    }
    let dynload = "lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so";
    for kept in ["os.py", "json/decoder.py", "lib2to3/fixer_base.py", dynload, "unittest/test"] {
        assert!(!recipe::stdlib_excluded(kept), "{kept}");
    }
}

#[test]
fn modes_are_normalised() {
    let cases = [
        ("tmp", true, 0o700, 0o1777),
        ("var/tmp", true, 0o1777, 0o755),
        ("etc", true, 0o700, 0o755),
        ("bin/sh", false, 0o4755, 0o755),
        ("bin/x", false, 0o700, 0o755),
        ("etc/passwd", false, 0o600, 0o644),
        ("etc/shadow", false, 0o2640, 0o644),
    ];
    for (path, is_dir, mode, expected) in cases {
        assert_eq!(recipe::normal_mode(path, is_dir, mode), expected, "{path}");
    }
}

#[test]
fn the_python_bootstrap_runs_the_client_on_the_handler() {
    let script = recipe::python_bootstrap(11);
    assert!(script.starts_with("#!/bin/sh\n"));
    assert!(script.contains("AWS_Lambda_python3.11"));
    assert!(script.contains("/opt/python/lib/python3.11/site-packages:/opt/python"));
    let wrapped = "exec \"$AWS_LAMBDA_EXEC_WRAPPER\" /var/lang/bin/python3.11 -m awslambdaric \"$_HANDLER\"";
    assert!(script.contains(wrapped));
    assert!(script.ends_with("exec /var/lang/bin/python3.11 -m awslambdaric \"$_HANDLER\"\n"));
}

#[test]
fn the_node_bootstrap_sizes_the_heap_unless_node_options_does() {
    let script = recipe::node_bootstrap(20);
    assert!(script.starts_with("#!/bin/sh\n"));
    assert!(script.contains("AWS_Lambda_nodejs20.x"));
    let path = "/opt/nodejs/node20/node_modules:/opt/nodejs/node_modules:/var/runtime/node_modules";
    assert!(script.contains(path));
    assert!(script.contains("$modules:/var/runtime:/var/task"));
    assert!(script.contains("*--max-old-space-size*|*--max-semi-space-size*) ;;"));
    assert!(script.contains("client=/var/runtime/node_modules/aws-lambda-ric/bin/index.mjs"));
    assert!(recipe::node_bootstrap(22).contains("client=/var/runtime/node_modules/aws-lambda-ric/index.mjs"));
}

#[test]
fn the_node_bootstrap_heap_arithmetic() {
    // What the script computes for 128, 1024 and 10240 MB, run by the host's sh.
    for (memory, expected) in [
        (128, "--max-semi-space-size=6 --max-old-space-size=116"),
        (1024, "--max-semi-space-size=51 --max-old-space-size=922"),
        (10240, "--max-semi-space-size=512 --max-old-space-size=9216"),
    ] {
        let script = recipe::node_bootstrap(20).replace("exec ", "echo ");
        let output = std::process::Command::new("/bin/sh")
            .args(["-c", &script])
            .env_clear()
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory.to_string())
            .output()
            .unwrap();
        let line = String::from_utf8(output.stdout).unwrap();
        assert!(line.contains(expected), "{memory}: {line}");
        let output = std::process::Command::new("/bin/sh")
            .args(["-c", &script])
            .env_clear()
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory.to_string())
            .env("NODE_OPTIONS", "--max-old-space-size=64")
            .output()
            .unwrap();
        assert!(!String::from_utf8(output.stdout).unwrap().contains("space-size"));
    }
}

#[test]
fn a_newer_recipe_removes_the_older_bases_of_its_runtime_only() {
    let cache = tempfile::tempdir().unwrap();
    let entries = ["provided.al2023-r1", "provided.al2023-r3", "provided.al2023-r4", "provided.al2-r1", "python3.11-r1"];
    for dir in entries {
        std::fs::create_dir_all(cache.path().join(dir).join("blobs")).unwrap();
    }
    for lock in [".provided.al2023-r1.lock", ".provided.al2023-r4.lock", ".provided.al2023-rx.lock"] {
        std::fs::write(cache.path().join(lock), b"").unwrap();
    }
    crate::remove_older(cache.path(), "provided.al2023", 4).unwrap();
    let mut left: Vec<String> =
        std::fs::read_dir(cache.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    left.sort();
    assert_eq!(
        left,
        [".provided.al2023-r4.lock", ".provided.al2023-rx.lock", "provided.al2-r1", "provided.al2023-r4", "python3.11-r1"]
    );
}
