use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use ignis_ids::AccountId;
use ignis_store::Store;
use redb::TableDefinition;

use super::*;

const REGION: &str = "us-east-1";
const ACTION: &str = "GetFunction";

fn a() -> AccountId {
    AccountId::new("111111111111")
}

fn b() -> AccountId {
    AccountId::new("222222222222")
}

fn hex(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

/// A `$LATEST` record named `name` whose code is `hex(code)`.
fn record(name: &str, code: u8) -> FunctionRecord {
    FunctionRecord {
        code_sha256_hex: hex(code),
        revision_id: format!("{name}-r0"),
        ..FunctionRecord::new(name, "provided.al2023")
    }
}

fn alias(version: &str, weights: &[(&str, f64)]) -> AliasRecord {
    AliasRecord {
        function_version: version.into(),
        description: String::new(),
        weights: weights.iter().map(|(v, w)| (v.to_string(), *w)).collect(),
        revision_id: String::new(),
    }
}

fn open(dir: &Path) -> (Arc<Store>, Arc<dyn Registry>) {
    let store = Arc::new(Store::open(dir).unwrap());
    let registry: Arc<dyn Registry> = Arc::new(EmbeddedRegistry::load(store.clone()).unwrap());
    (store, registry)
}

async fn put(registry: &dyn Registry, account: &AccountId, record: FunctionRecord) -> Arc<FunctionRecord> {
    let name = record.name.clone();
    registry.update(account, &name, |_| Ok::<_, RegistryError>(record)).await.unwrap().1
}

/// `f` of account A with versions 1 and 2 and aliases `live` (1, 25 % to 2),
/// `latest` ($LATEST) and `stale` (a version that is gone); `g` of account B.
async fn fixture(registry: &dyn Registry) {
    let mut f = record("f", 1);
    f.versions = vec![f.snapshot(1, None, "v1".into(), 1), f.snapshot(2, None, "v2".into(), 2)];
    f.versions[1].code_sha256_hex = hex(2);
    f.last_version = 2;
    f.aliases.insert("live".into(), alias("1", &[("2", 0.25)]));
    f.aliases.insert("latest".into(), alias("$LATEST", &[]));
    f.aliases.insert("stale".into(), alias("9", &[]));
    put(registry, &a(), f).await;
    put(registry, &b(), record("g", 3)).await;
}

fn reference(account: Option<AccountId>, region: Option<&str>, name: &str, qualifier: Option<&str>) -> FunctionRef {
    FunctionRef {
        name: name.into(),
        account,
        region: region.map(str::to_string),
        qualifier: qualifier.map(str::to_string),
    }
}

fn arn(account: &AccountId, name: &str) -> String {
    ignis_ids::arn::function(REGION, account.as_str(), name)
}

/// What a resolution found: the version label of the record, or the error.
fn found(result: Result<Arc<FunctionRecord>, RegistryError>) -> Result<String, RegistryError> {
    result.map(|r| format!("{}:{}", r.name, r.version_label()))
}

#[tokio::test]
async fn resolution_table() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, registry) = open(dir.path());
    fixture(&*registry).await;
    let not_found = |name: &str| Err(RegistryError::FunctionNotFound { function: arn(&a(), name) });
    let no_version =
        |name: &str, version: &str| Err(RegistryError::VersionNotFound { function: arn(&a(), name), version: version.into() });
    let denied = |resource: &str| Err(RegistryError::AccessDenied { caller: a(), action: ACTION.into(), resource: resource.into() });
    let cases: Vec<(FunctionRef, Result<String, RegistryError>)> = vec![
        // Every accepted form of the caller's own function.
        (reference(None, None, "f", None), Ok("f:$LATEST".into())),
        (reference(Some(a()), None, "f", None), Ok("f:$LATEST".into())),
        (reference(Some(a()), Some("eu-west-1"), "f", None), Ok("f:$LATEST".into())),
        (reference(None, None, "f", Some("$LATEST")), Ok("f:$LATEST".into())),
        (reference(None, None, "f", Some("1")), Ok("f:$LATEST".into())),
        (reference(Some(a()), Some(REGION), "f", Some("live")), Ok("f:$LATEST".into())),
        // What does not exist.
        (reference(None, None, "nope", None), not_found("nope")),
        (reference(Some(a()), None, "nope", None), not_found("nope")),
        (reference(None, None, "nope", Some("1")), no_version("nope", "1")),
        (reference(None, None, "f", Some("3")), no_version("f", "3")),
        (reference(None, None, "f", Some("other-alias")), no_version("f", "other-alias")),
        // Another account's function: by name it is not there, by ARN it is denied.
        (reference(None, None, "g", None), not_found("g")),
        (reference(Some(b()), None, "g", None), denied("arn:aws:lambda:us-east-1:222222222222:function:g")),
        (reference(Some(b()), Some("eu-west-1"), "g", Some("1")), denied("arn:aws:lambda:eu-west-1:222222222222:function:g:1")),
        (reference(Some(b()), None, "f", None), denied("arn:aws:lambda:us-east-1:222222222222:function:f")),
    ];
    for (reference, expected) in cases {
        let got = found(registry.resolve(&a(), REGION, ACTION, &reference));
        assert_eq!(got, expected, "{reference:?}");
    }
}

#[tokio::test]
async fn another_accounts_function_resolves_only_when_its_policy_allows() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, registry) = open(dir.path());
    fixture(&*registry).await;
    // `a`'s function `f`: its unqualified policy lets `b` invoke; its alias `live` lets anyone; version 1 none.
    let mut f = (*registry.get(&a(), "f").unwrap()).clone();
    let invoke = |principal: &str| policy::Statement::new("s", "lambda:InvokeFunction", principal);
    f.policies.insert(policy::UNQUALIFIED.into(), policy::Policy { revision_id: "p".into(), statements: vec![invoke(b().as_str())] });
    f.policies.insert("live".into(), policy::Policy { revision_id: "q".into(), statements: vec![invoke("*")] });
    put(&*registry, &a(), f).await;
    let by = |caller: &AccountId, qualifier: Option<&str>| {
        let request = policy::Request::invoke_by(caller.as_str(), None);
        let reference = reference(Some(a()), None, "f", qualifier);
        registry.resolve_version_granted(caller, REGION, &request, &reference, 0.9).map(|(owner, r)| (owner, r.version_label()))
    };
    let denied = |caller: AccountId, resource: &str| {
        Err(RegistryError::AccessDenied { caller, action: "InvokeFunction".into(), resource: resource.into() })
    };
    let c = AccountId::new("333333333333");
    let f_arn = arn(&a(), "f");
    assert_eq!(by(&b(), None), Ok((a(), "$LATEST".into())));
    assert_eq!(by(&b(), Some("$LATEST")), Ok((a(), "$LATEST".into())));
    assert_eq!(by(&b(), Some("live")), Ok((a(), "1".into())));
    assert_eq!(by(&c, Some("live")), Ok((a(), "1".into())));
    assert_eq!(by(&b(), Some("1")), denied(b(), &format!("{f_arn}:1")));
    assert_eq!(by(&c, None), denied(c.clone(), &f_arn));
    // The owner itself needs no statement; a function that does not exist is denied as one that does.
    assert_eq!(by(&a(), Some("2")), Ok((a(), "2".into())));
    let caller = b();
    let request = policy::Request::invoke_by(caller.as_str(), None);
    let missing = registry.resolve_version_granted(&caller, REGION, &request, &reference(Some(a()), None, "nope", None), 0.0);
    assert_eq!(missing.map(|(owner, r)| (owner, r.version_label())), denied(b(), &arn(&a(), "nope")));
}

#[tokio::test]
async fn versions_and_aliases_resolve_to_what_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, registry) = open(dir.path());
    fixture(&*registry).await;
    let cases: Vec<(Option<&str>, f64, Result<String, RegistryError>)> = vec![
        (None, 0.5, Ok("f:$LATEST".into())),
        (Some("$LATEST"), 0.5, Ok("f:$LATEST".into())),
        (Some("1"), 0.0, Ok("f:1".into())),
        (Some("2"), 0.99, Ok("f:2".into())),
        // `live` sends 25 % to version 2: below the weight goes there.
        (Some("live"), 0.0, Ok("f:2".into())),
        (Some("live"), 0.249, Ok("f:2".into())),
        (Some("live"), 0.25, Ok("f:1".into())),
        (Some("live"), 0.999, Ok("f:1".into())),
        (Some("latest"), 0.1, Ok("f:$LATEST".into())),
        (Some("stale"), 0.1, Err(RegistryError::VersionNotFound { function: arn(&a(), "f"), version: "9".into() })),
        (Some("7"), 0.1, Err(RegistryError::VersionNotFound { function: arn(&a(), "f"), version: "7".into() })),
    ];
    for (qualifier, random, expected) in cases {
        let got = found(registry.resolve_version(&a(), REGION, ACTION, &reference(None, None, "f", qualifier), random));
        assert_eq!(got, expected, "{qualifier:?} {random}");
    }
    // A version's record is the published snapshot, not `$LATEST`.
    let two = registry.resolve_version(&a(), REGION, ACTION, &reference(None, None, "f", Some("2")), 0.0).unwrap();
    assert_eq!((two.revision_id.as_str(), two.code_sha256_hex.clone()), ("v2", hex(2)));
}

#[test]
fn alias_picks_by_weight() {
    let live = alias("1", &[("2", 0.25)]);
    assert_eq!(live.pick(0.1), "2");
    assert_eq!(live.pick(0.3), "1");
    assert!(live.uses("1") && live.uses("2") && !live.uses("3"));
    assert_eq!(alias("4", &[]).pick(0.0), "4");
}

#[tokio::test]
async fn records_round_trip_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_store, registry) = open(dir.path());
        fixture(&*registry).await;
        put(&*registry, &a(), record("e", 4)).await;
        put(&*registry, &a(), record("d", 5)).await;
        let names = |account: &AccountId| registry.list(account).iter().map(|r| r.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&a()), ["d", "e", "f"]);
        assert_eq!(names(&b()), ["g"]);
        let deleted = registry.delete(&a(), "d").await.unwrap().expect("d existed");
        assert_eq!(deleted.name, "d");
        assert_eq!(registry.delete(&a(), "d").await.unwrap(), None);
        assert!(registry.get(&a(), "d").is_none());
        // Same name, other account: a record of its own.
        put(&*registry, &b(), record("e", 6)).await;
        assert_eq!(registry.get(&b(), "e").unwrap().code_sha256_hex, hex(6));
        assert_eq!(registry.get(&a(), "e").unwrap().code_sha256_hex, hex(4));
    }
    let (_store, registry) = open(dir.path());
    let mut all: Vec<(String, String)> =
        registry.all().iter().map(|(account, r)| (account.to_string(), r.name.clone())).collect();
    all.sort();
    let expected = [("111111111111", "e"), ("111111111111", "f"), ("222222222222", "e"), ("222222222222", "g")];
    assert_eq!(all, expected.map(|(a, n)| (a.to_string(), n.to_string())));
    let f = registry.get(&a(), "f").unwrap();
    assert_eq!(f.versions.iter().map(FunctionRecord::version_label).collect::<Vec<_>>(), ["1", "2"]);
    assert_eq!(f.aliases["live"], alias("1", &[("2", 0.25)]));
    // Every record handed out holds its code, and so does each version.
    assert!(f.code.holds(&hex(1)) && f.versions[1].code.holds(&hex(2)));
}

/// The stored form is the JSON of every data directory so far: a record
/// written before versions, aliases and configs existed still loads.
#[tokio::test]
async fn old_records_load() {
    let dir = tempfile::tempdir().unwrap();
    let old = r#"{"name":"old","runtime":"provided.al2","role":"","handler":"bootstrap","description":"d","memory_mb":256,
        "timeout_s":10,"ephemeral_mb":512,"environment":{"K":"v"},"architecture":"x86_64","code_sha256_hex":"ab",
        "code_sha256":"q80=","code_size":9,"last_modified_ms":5,"revision_id":"r"}"#;
    {
        let store = Store::open(dir.path()).unwrap();
        let table: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("functions");
        let txn = store.database().begin_write().unwrap();
        txn.open_table(table).unwrap().insert(("111111111111", "old"), old.as_bytes()).unwrap();
        txn.commit().unwrap();
    }
    let (_store, registry) = open(dir.path());
    let record = registry.get(&a(), "old").unwrap();
    assert_eq!((record.memory_mb, record.environment["K"].as_str(), record.version_label()), (256, "v", "$LATEST".into()));
    assert!(record.versions.is_empty() && record.aliases.is_empty() && record.event_invoke.is_empty());
    assert!(record.tags.is_empty() && record.policies.is_empty());
    assert_eq!((record.log_group_name.as_ref(), record.log_json.as_ref()), (None, None), "Text, in Lambda's group");
    // What a write stores reads back the same.
    let mut changed = (*record).clone();
    changed.event_invoke.insert("$LATEST".into(), EventInvokeConfig { max_retries: Some(1), ..EventInvokeConfig::default() });
    changed.log_json = Some(JsonLogging { application_level: "WARN".into(), ..JsonLogging::default() });
    changed.tags.insert("team".into(), "blue".into());
    let statement = policy::Statement {
        source_arn: Some("arn:aws:s3:::bucket".into()),
        source_account: Some("222222222222".into()),
        ..policy::Statement::new("s3", "lambda:InvokeFunction", "s3.amazonaws.com")
    };
    changed.policies.insert(policy::UNQUALIFIED.into(), policy::Policy { revision_id: "p".into(), statements: vec![statement] });
    put(&*registry, &a(), changed.clone()).await;
    drop(registry);
    drop(_store);
    let (_store, registry) = open(dir.path());
    assert_eq!(*registry.get(&a(), "old").unwrap(), changed);
}

#[tokio::test]
async fn unreadable_records_are_storage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let table: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("functions");
    let txn = store.database().begin_write().unwrap();
    txn.open_table(table).unwrap().insert(("111111111111", "bad"), &b"{not json"[..]).unwrap();
    txn.commit().unwrap();
    match EmbeddedRegistry::load(store) {
        Err(RegistryError::Storage(message)) => assert!(message.starts_with("stored function 111111111111/bad is unreadable"), "{message}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn a_revision_precondition_is_checked_atomically_with_the_write() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, registry) = open(dir.path());
    put(&*registry, &a(), record("f", 1)).await;
    let change = |expected: &'static str, memory: u32| {
        move |current: Option<&FunctionRecord>| -> Result<FunctionRecord, RegistryError> {
            let current = current.ok_or(RegistryError::FunctionNotFound { function: "f".into() })?;
            current.check_revision(Some(expected))?;
            let mut record = current.clone();
            record.memory_mb = memory;
            record.revision_id = format!("f-r{memory}");
            Ok(record)
        }
    };
    let refused = registry.update(&a(), "f", change("stale", 256)).await.unwrap_err();
    assert_eq!(refused, RegistryError::RevisionMismatch { expected: "stale".into() });
    assert_eq!(registry.get(&a(), "f").unwrap().memory_mb, 128);
    let (old, new) = registry.update(&a(), "f", change("f-r0", 256)).await.unwrap();
    assert_eq!((old.unwrap().memory_mb, new.memory_mb), (128, 256));
    // The revision it checked is gone now.
    assert!(registry.update(&a(), "f", change("f-r0", 512)).await.is_err());
    assert_eq!(registry.update(&a(), "f", change("f-r256", 512)).await.unwrap().1.memory_mb, 512);
    assert!(record("f", 1).check_revision(None).is_ok());
    // A change that refuses stores nothing, also across a reload; a missing function says so.
    let missing = registry.update(&a(), "nope", change("x", 1)).await.unwrap_err();
    assert_eq!(missing, RegistryError::FunctionNotFound { function: "f".into() });
    assert!(registry.get(&a(), "nope").is_none());
    drop(registry);
    drop(_store);
    let (_store, registry) = open(dir.path());
    assert_eq!(registry.get(&a(), "f").unwrap().memory_mb, 512);
    assert!(registry.get(&a(), "nope").is_none());
}

#[tokio::test]
async fn concurrent_writes_are_serialised() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, registry) = open(dir.path());
    put(&*registry, &a(), record("f", 1)).await;
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let registry = registry.clone();
            tokio::spawn(async move {
                registry
                    .update(&a(), "f", |current| {
                        let mut record = current.unwrap().clone();
                        record.last_version += 1;
                        Ok::<_, RegistryError>(record)
                    })
                    .await
                    .unwrap();
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(registry.get(&a(), "f").unwrap().last_version, 20);
}

#[tokio::test]
async fn live_code_is_every_function_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, registry) = open(dir.path());
    assert!(registry.live_code().is_empty());
    fixture(&*registry).await;
    assert_eq!(registry.live_code(), HashSet::from([hex(1), hex(2), hex(3)]));
    registry.delete(&b(), "g").await.unwrap();
    assert_eq!(registry.live_code(), HashSet::from([hex(1), hex(2)]));
    registry
        .update(&a(), "f", |current| {
            let mut record = current.unwrap().clone();
            record.versions.retain(|v| v.version != Some(2));
            Ok::<_, RegistryError>(record)
        })
        .await
        .unwrap();
    assert_eq!(registry.live_code(), HashSet::from([hex(1)]));
}

#[test]
fn snapshots_and_sameness() {
    let mut latest = record("f", 1);
    latest.reserved_concurrency = Some(3);
    latest.aliases.insert("x".into(), alias("1", &[]));
    latest.tags.insert("team".into(), "blue".into());
    let one = latest.snapshot(1, Some("first".into()), "v1".into(), 42);
    assert_eq!((one.version, one.description.as_str(), one.last_modified_ms), (Some(1), "first", 42));
    assert!(one.reserved_concurrency.is_none() && one.aliases.is_empty() && one.versions.is_empty() && one.tags.is_empty());
    assert!(latest.same_as(&one));
    latest.memory_mb = 256;
    assert!(!latest.same_as(&one));
    latest.versions.push(one);
    assert!(latest.has_version("$LATEST") && latest.has_version("1") && !latest.has_version("2"));
    assert_eq!(latest.find_version("1").map(FunctionRecord::version_label), Some("1".into()));
    let account = a();
    assert_eq!(latest.arn(REGION, account.as_str()), "arn:aws:lambda:us-east-1:111111111111:function:f");
    assert_eq!(latest.versions[0].version_arn(REGION, account.as_str()), "arn:aws:lambda:us-east-1:111111111111:function:f:1");
    assert_eq!(latest.version_arn(REGION, account.as_str()), latest.arn(REGION, account.as_str()));
    assert_eq!(latest.log_group(), "/aws/lambda/f");
}

fn image(digest_char: char) -> ImageRecord {
    let digest = format!("sha256:{}", digest_char.to_string().repeat(64));
    ImageRecord {
        image_uri: "localhost:9000/team/app:v1".into(),
        resolved_image_uri: format!("localhost:9000/team/app@{digest}"),
        repository: "team/app".into(),
        manifest_digest: digest.clone(),
        settings: ImageSettings {
            entrypoint: Some(vec!["/app".into()]),
            cmd: None,
            env: vec!["A=1".into()],
            working_dir: Some("/srv".into()),
        },
        prepared_id: digest,
    }
}

/// An image function's record: its package type, its image and overrides
/// are stored, reloaded, snapshotted and compared; it holds no code tree.
#[tokio::test]
async fn image_functions_round_trip_and_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (store, registry) = open(dir.path());
    let mut record = FunctionRecord { code_sha256_hex: String::new(), ..record("img", 1) };
    assert_eq!(record.package_type(), PackageType::Zip);
    record.image = Some(image('a'));
    record.image_config = ImageConfigOverride { command: Some(vec!["x".into()]), ..ImageConfigOverride::default() };
    assert_eq!((record.package_type(), record.package_type().as_str()), (PackageType::Image, "Image"));
    put(&*registry, &a(), record.clone()).await;
    assert!(registry.live_code().is_empty());
    drop(registry);
    drop(store);
    let (_store, registry) = open(dir.path());
    let loaded = registry.get(&a(), "img").unwrap();
    assert_ne!(loaded.incarnation, 0, "given by the registry at creation");
    assert_eq!(*loaded, FunctionRecord { incarnation: loaded.incarnation, ..record.clone() });

    let one = loaded.snapshot(1, None, "v1".into(), 7);
    assert_eq!((one.image.as_ref(), &one.image_config), (record.image.as_ref(), &record.image_config));
    assert!(loaded.same_as(&one));
    let mut other = (*loaded).clone();
    other.image = Some(image('b'));
    assert!(!other.same_as(&one));
    let mut other = (*loaded).clone();
    other.image_config = ImageConfigOverride::default();
    assert!(!other.same_as(&one));
}

/// A function's merged layers are live, and held, with the function and each
/// version that uses them; they are stored, reloaded, snapshotted and compared.
#[tokio::test]
async fn merged_layers_are_live_held_and_snapshotted() {
    let dir = tempfile::tempdir().unwrap();
    let (store, registry) = open(dir.path());
    let mut f = record("f", 1);
    f.layers = vec![LayerUse { arn: "arn:aws:lambda:us-east-1:111111111111:layer:l:1".into(), code_size: 10, unzipped_size: 20 }];
    f.opt_sha256_hex = hex(9);
    f.code_unzipped_size = 30;
    let one = f.snapshot(1, None, "v1".into(), 1);
    assert!(f.same_as(&one));
    f.versions = vec![one];
    let stored = put(&*registry, &a(), f.clone()).await;
    assert!(stored.opt.holds(&hex(9)) && stored.versions[0].opt.holds(&hex(9)));
    assert_eq!(registry.live_code(), HashSet::from([hex(1), hex(9)]));

    // Layers removed from $LATEST: the version keeps them.
    let mut without = (*stored).clone();
    (without.layers, without.opt_sha256_hex) = (Vec::new(), String::new());
    assert!(!without.same_as(&stored.versions[0]));
    let written = put(&*registry, &a(), without).await;
    assert!(written.opt.hold().is_none());
    assert_eq!(registry.live_code(), HashSet::from([hex(1), hex(9)]));
    drop((written, stored));
    drop(registry);
    drop(store);

    let (_store, registry) = open(dir.path());
    let loaded = registry.get(&a(), "f").unwrap();
    assert_eq!((loaded.layers.len(), &loaded.versions[0].layers, loaded.versions[0].code_unzipped_size), (0, &f.layers, 30));
    assert!(loaded.versions[0].opt.holds(&hex(9)));
}

#[test]
fn records_stored_without_a_base_get_their_installed_runtimes() {
    let base = |name: &str| RuntimeRecord {
        name: name.into(),
        account: "000000000001".into(),
        image: ImageRecord {
            image_uri: format!("ignis-runtimes/{name}@sha256:ab"),
            resolved_image_uri: format!("ignis-runtimes/{name}@sha256:ab"),
            repository: format!("ignis-runtimes/{name}"),
            manifest_digest: "sha256:ab".into(),
            settings: ImageSettings::default(),
            prepared_id: "p".into(),
        },
        installed_ms: 1,
    };
    let installed = |name: &str| (name == "provided.al2023").then(|| base(name));
    let mut old = record("f", 1);
    let legacy = FunctionRecord { runtime: "provided".into(), ..record("f", 2) };
    old.versions = vec![record("f", 1).snapshot(1, None, "v1".into(), 0), legacy];
    let given = old.with_bases(installed).expect("lacking bases are given");
    assert_eq!(given.base, Some(base("provided.al2023")));
    assert_eq!(given.versions[0].base, Some(base("provided.al2023")));
    assert_eq!(given.versions[1].base, None, "a runtime not installed stays without");
    assert_eq!((given.revision_id.as_str(), given.versions[0].revision_id.as_str()), ("f-r0", "v1"));
    // Nothing left to give, an image function, a record with a base already: no change.
    assert!(given.with_bases(installed).is_none());
    let mut image = record("i", 3);
    image.image = Some(base("x").image);
    assert!(image.with_bases(installed).is_none());
    let mut other = record("g", 4);
    other.base = Some(base("provided.al2"));
    assert!(other.with_bases(installed).is_none());
}

#[tokio::test]
async fn function_urls_are_found_by_id_as_they_come_and_go() {
    let url = |id: &str| crate::UrlRecord {
        url_id: id.into(),
        auth_type: "AWS_IAM".into(),
        invoke_mode: "BUFFERED".into(),
        cors: None,
        created_ms: 1,
        last_modified_ms: 1,
    };
    let found = |registry: &dyn Registry, id: &str| registry.find_url(id).map(|(account, r)| (account, r.name.clone()));
    let dir = tempfile::tempdir().unwrap();
    {
        let (_store, registry) = open(dir.path());
        let mut f = record("f", 1);
        f.urls.insert("$LATEST".into(), url("latest0"));
        f.urls.insert("live".into(), url("live0"));
        put(&*registry, &a(), f.clone()).await;
        assert_eq!(found(&*registry, "latest0"), Some((a(), "f".to_string())));
        assert_eq!(found(&*registry, "live0"), Some((a(), "f".to_string())));
        assert_eq!(found(&*registry, "nothing"), None);
        // A URL deleted is no longer found; another account's function has its own.
        f.urls.remove("live");
        put(&*registry, &a(), f).await;
        assert_eq!(found(&*registry, "live0"), None);
        let mut g = record("g", 2);
        g.urls.insert("$LATEST".into(), url("g0"));
        put(&*registry, &b(), g).await;
        assert_eq!(found(&*registry, "g0"), Some((b(), "g".to_string())));
        let mut e = record("e", 3);
        e.urls.insert("$LATEST".into(), url("e0"));
        put(&*registry, &a(), e).await;
        registry.delete(&a(), "e").await.unwrap();
        assert_eq!(found(&*registry, "e0"), None, "a deleted function's URLs go with it");
    }
    let (_store, registry) = open(dir.path());
    assert_eq!(found(&*registry, "latest0"), Some((a(), "f".to_string())), "the index is rebuilt at load");
    assert_eq!(found(&*registry, "g0"), Some((b(), "g".to_string())));
    assert_eq!((found(&*registry, "live0"), found(&*registry, "e0")), (None, None));
}
