//! The registry and accounts on a real etcd (one member, and three with members killed), with two front ends'
//! data directories sharing a directory chunk store.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ignis_chunks::DirectoryRoots;
use ignis_ids::AccountId;
use ignis_registry::{Accounts, FunctionRecord, Registry, RegistryError};
use ignis_store::{CodeRules, Store};

use crate::testing::EtcdCluster;
use crate::{CodeShare, Etcd, EtcdAccounts, EtcdRegistry};

const REGION: &str = "us-east-1";
/// How long a change made through one front end may take to show on another (generous: no test waits it out).
const SHOWS_WITHIN: Duration = Duration::from_secs(30);

fn account() -> AccountId {
    AccountId::new("111111111111")
}

/// One front end's side: its data directory, registry and accounts.
struct Node {
    store: Arc<Store>,
    code: Arc<CodeShare>,
    registry: Arc<dyn Registry>,
    accounts: Arc<EtcdAccounts>,
    _dir: tempfile::TempDir,
}

/// Two front ends on `cluster`, sharing the chunk store in `shared` and one master key.
async fn nodes(cluster: &EtcdCluster, shared: &std::path::Path) -> (Node, Node) {
    let first = node(cluster, shared, None).await;
    let key = first.store.data_dir().join(ignis_store::MASTER_KEY_FILE);
    let second = node(cluster, shared, Some(&key)).await;
    (first, second)
}

async fn node(cluster: &EtcdCluster, shared: &std::path::Path, master_key: Option<&std::path::Path>) -> Node {
    let dir = tempfile::tempdir().unwrap();
    match master_key {
        Some(key) => drop(std::fs::copy(key, dir.path().join(ignis_store::MASTER_KEY_FILE)).unwrap()),
        None => drop(ignis_store::MasterKey::open(dir.path(), false).unwrap()),
    }
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let etcd = Etcd::connect(&cluster.endpoints()).await.unwrap();
    let roots = Arc::new(DirectoryRoots::new(shared).unwrap());
    let code = Arc::new(CodeShare::new(etcd.clone(), store.clone(), roots));
    let registry = Arc::new(EtcdRegistry::open(etcd.clone(), store.clone(), code.clone(), REGION).await.unwrap());
    let accounts = Arc::new(EtcdAccounts::open(etcd, &store, ignis_clock::SystemClock::shared()).await.unwrap());
    Node { store, code, registry, accounts, _dir: dir }
}

/// A function record whose code, a tree of one `bootstrap` holding `body`, is in `store`.
fn with_code(store: &Store, name: &str, body: &str) -> FunctionRecord {
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("bootstrap"), body).unwrap();
    let zip = ignis_store::zip_tree(tree.path()).unwrap();
    let code = store.put_code(&zip, &CodeRules::default()).unwrap();
    let mut record = FunctionRecord::new(name, "provided.al2023");
    record.code_sha256_hex = code.sha256_hex();
    record.code = ignis_registry::CodeRef::new(code.hold);
    record.revision_id = format!("{name}-{body}");
    record
}

/// Waits (within [`SHOWS_WITHIN`]) until `done` holds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + SHOWS_WITHIN;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within {SHOWS_WITHIN:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn create(registry: &dyn Registry, record: FunctionRecord) -> Result<Arc<FunctionRecord>, RegistryError> {
    let name = record.name.clone();
    let (_, stored) = registry
        .update(&account(), &name, move |current| match current {
            Some(_) => Err(RegistryError::FunctionExists { name: record.name.clone() }),
            None => Ok(record),
        })
        .await?;
    Ok(stored)
}

/// Runs `future` to its end from inside a write's (synchronous) change.
fn block_on<T>(future: impl Future<Output = T>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_written_through_one_front_end_shows_on_the_other_with_its_code() {
    let cluster = EtcdCluster::start(1);
    let shared = tempfile::tempdir().unwrap();
    let (a, b) = nodes(&cluster, shared.path()).await;

    let stored = create(&*a.registry, with_code(&a.store, "f", "v1")).await.unwrap();
    assert_ne!(stored.incarnation, 0, "a created function gets an incarnation");
    assert!(a.registry.get(&account(), "f").is_some(), "a write reads itself back at once");
    until("the function on b", || b.registry.get(&account(), "f").is_some()).await;
    let seen = b.registry.get(&account(), "f").unwrap();
    assert_eq!(seen.incarnation, stored.incarnation);
    let tree = b.store.code_dir(&seen.code_sha256_hex);
    assert_eq!(std::fs::read_to_string(tree.join("bootstrap")).unwrap(), "v1", "b fetched the code tree");

    // An update through b, checked against the revision a stored, shows on a.
    let (old, new) = b
        .registry
        .update(&account(), "f", |current| {
            let current = current.ok_or(RegistryError::FunctionNotFound { function: "f".into() })?;
            current.check_revision(Some(&stored.revision_id))?;
            Ok::<_, RegistryError>(FunctionRecord { memory_mb: 512, revision_id: "r2".into(), ..current.clone() })
        })
        .await
        .unwrap();
    assert_eq!(old.unwrap().revision_id, stored.revision_id);
    assert_eq!(new.incarnation, stored.incarnation, "an update keeps the incarnation");
    until("the update on a", || a.registry.get(&account(), "f").is_some_and(|r| r.memory_mb == 512)).await;
    // The stale revision is refused wherever it is sent.
    let stale = a
        .registry
        .update(&account(), "f", |current| {
            current.unwrap().check_revision(Some(&stored.revision_id))?;
            Ok::<_, RegistryError>(current.unwrap().clone())
        })
        .await;
    assert!(matches!(stale, Err(RegistryError::RevisionMismatch { .. })), "{stale:?}");

    // A delete through a goes from b; the list of each is empty again.
    assert!(a.registry.delete(&account(), "f").await.unwrap().is_some());
    until("the delete on b", || b.registry.get(&account(), "f").is_none()).await;
    assert!(b.registry.list(&account()).is_empty());
    assert!(b.registry.delete(&account(), "f").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_front_ends_writing_one_function_at_once_one_is_refused_and_nothing_is_lost() {
    let cluster = EtcdCluster::start(1);
    let shared = tempfile::tempdir().unwrap();
    let (a, b) = nodes(&cluster, shared.path()).await;
    create(&*a.registry, with_code(&a.store, "f", "v1")).await.unwrap();
    until("the function on b", || b.registry.get(&account(), "f").is_some()).await;

    // b's write lands between a's read and a's store.
    let b_registry = b.registry.clone();
    let raced = a
        .registry
        .update(&account(), "f", move |current| {
            let by_b = block_on(b_registry.update(&account(), "f", |current| {
                Ok::<_, RegistryError>(FunctionRecord { description: "by b".into(), ..current.unwrap().clone() })
            }));
            by_b.unwrap();
            Ok(FunctionRecord { description: "by a".into(), ..current.unwrap().clone() })
        })
        .await;
    match raced {
        Err(RegistryError::Conflict { resource }) => {
            assert_eq!(resource, "arn:aws:lambda:us-east-1:111111111111:function:f")
        }
        other => panic!("a's write should conflict: {other:?}"),
    }
    until("b's write on a", || a.registry.get(&account(), "f").is_some_and(|r| r.description == "by b")).await;
    // Two creates of one name: one wins.
    let (one, two) = tokio::join!(
        create(&*a.registry, with_code(&a.store, "g", "a")),
        create(&*b.registry, with_code(&b.store, "g", "b"))
    );
    assert!(one.is_ok() != two.is_ok(), "exactly one create wins: {one:?} {two:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_and_keys_made_through_one_front_end_sign_on_the_other() {
    let cluster = EtcdCluster::start(1);
    let shared = tempfile::tempdir().unwrap();
    let (a, b) = nodes(&cluster, shared.path()).await;

    let admin_id = a.accounts.admin_account().await.unwrap();
    assert_eq!(b.accounts.admin_account().await.unwrap(), admin_id, "the cluster has one administrator account");
    // Two front ends starting at once, each with a new pair: they agree on one.
    let (mine, theirs) = (ignis_registry::AccessKey::generate(admin_id.clone(), true), ignis_registry::AccessKey::generate(admin_id.clone(), true));
    let (one, two) = tokio::join!(a.accounts.administrator("admin", mine.clone()), b.accounts.administrator("admin", theirs.clone()));
    let (one, two) = (one.unwrap(), two.unwrap());
    assert_eq!(one, two, "one administrator key for the cluster");
    assert!(one == mine || one == theirs);
    let admin = one;
    until("the administrator key on b", || b.accounts.admin_key().is_some_and(|k| k == admin)).await;
    until("the administrator key on a", || a.accounts.admin_key().is_some_and(|k| k == admin)).await;

    let (made, key) = a.accounts.create("tenant").await.unwrap();
    until("the tenant's key on b", || b.accounts.key(&key.access_key_id).is_some()).await;
    let there = b.accounts.key(&key.access_key_id).unwrap();
    assert_eq!(there.secret_access_key, key.secret_access_key, "the secret opens with the shared master key");
    assert!(!there.admin);
    assert!(b.accounts.list().iter().any(|acc| acc.id == made.id && acc.name == "tenant"));
    assert!(matches!(b.accounts.create("tenant").await, Err(ignis_registry::AccountError::NameTaken(_))));
    assert!(matches!(
        b.accounts.set_administrator("admin", ignis_registry::AccessKey { admin: true, ..key.clone() }).await,
        Err(ignis_registry::AccountError::KeyInUse(_))
    ));
    // A new administrator key replaces the old one everywhere.
    let next = ignis_registry::AccessKey::generate(admin_id, true);
    b.accounts.set_administrator("admin", next.clone()).await.unwrap();
    until("the old administrator key gone from a", || a.accounts.key(&admin.access_key_id).is_none()).await;
    assert_eq!(a.accounts.admin_key(), Some(next));
    assert_eq!(a.accounts.data_key(&made.id, "p"), b.accounts.data_key(&made.id, "p"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_member_of_three_lost_changes_nothing_and_without_quorum_writes_fail_while_reads_go_on() {
    let mut cluster = EtcdCluster::start(3);
    let shared = tempfile::tempdir().unwrap();
    let (a, b) = nodes(&cluster, shared.path()).await;
    create(&*a.registry, with_code(&a.store, "f", "v1")).await.unwrap();

    cluster.kill(0);
    create(&*a.registry, with_code(&a.store, "g", "v1")).await.unwrap();
    until("g on b with one member gone", || b.registry.get(&account(), "g").is_some()).await;

    cluster.kill(1);
    let refused = create(&*b.registry, with_code(&b.store, "h", "v1")).await;
    match refused {
        Err(RegistryError::Storage(message)) => assert!(message.contains("etcd"), "{message}"),
        other => panic!("a write without quorum should fail: {other:?}"),
    }
    assert!(a.registry.get(&account(), "f").is_some() && b.registry.get(&account(), "g").is_some(), "reads go on");

    cluster.restart(1);
    let mut made = None;
    let deadline = tokio::time::Instant::now() + SHOWS_WITHIN;
    while made.is_none() {
        assert!(tokio::time::Instant::now() < deadline, "writes did not come back with quorum");
        made = create(&*b.registry, with_code(&b.store, "h", "v1")).await.ok();
    }
    until("h on a once quorum is back", || a.registry.get(&account(), "h").is_some()).await;
}

// ---- counting ---------------------------------------------------------------

/// A registry with `function` reserved `reserved` units in [`account`] (none: no reservation).
async fn registry_with(dir: &std::path::Path, functions: &[(&str, Option<u32>)]) -> Arc<dyn Registry> {
    let store = Arc::new(Store::open(dir).unwrap());
    let registry: Arc<dyn Registry> = Arc::new(ignis_registry::EmbeddedRegistry::load(store).unwrap());
    for (name, reserved) in functions {
        let mut record = FunctionRecord::new(*name, "provided.al2023");
        record.reserved_concurrency = *reserved;
        registry.update(&account(), name, |_| Ok::<_, RegistryError>(record)).await.unwrap();
    }
    registry
}

async fn counters(cluster: &EtcdCluster, registry: &Arc<dyn Registry>, limits: ignis_counting::Limits, n: usize) -> Vec<Arc<crate::EtcdCounter>> {
    let mut counters = Vec::new();
    for _ in 0..n {
        let etcd = Etcd::connect(&cluster.endpoints()).await.unwrap();
        let presence = Arc::new(crate::Presence::start(etcd.clone()).await.unwrap());
        counters.push(Arc::new(crate::EtcdCounter::start(etcd, presence, limits, registry.clone()).await.unwrap()));
    }
    counters
}

use ignis_invoke::Counter as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_holds_across_front_ends_under_parallel_load_and_every_unit_can_be_used_anywhere() {
    let cluster = EtcdCluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let registry = registry_with(dir.path(), &[("f", Some(3))]).await;
    let limits = ignis_counting::Limits { concurrency: 100, min_unreserved: 10 };
    let fronts = counters(&cluster, &registry, limits, 3).await;
    let a = account();

    // 60 invocations from three front ends at once, each holding its slot a moment: never more than 3 at once.
    let running = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let most = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut tasks = Vec::new();
    for i in 0..60 {
        let (front, running, most, a) = (fronts[i % 3].clone(), running.clone(), most.clone(), a.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(slot) = front.acquire(a.as_str(), "f").await else { return false };
            let now = running.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
            tokio::task::yield_now().await;
            running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            front.release(slot);
            true
        }));
    }
    let mut admitted = 0;
    for task in tasks {
        admitted += usize::from(task.await.unwrap());
    }
    assert!(most.load(std::sync::atomic::Ordering::SeqCst) <= 3, "more than the reservation ran at once");
    assert!(admitted >= 3, "the reservation was usable: {admitted} admitted");

    // Every unit may be used through any one front end: the others give their spare ones back when asked.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(fronts[2].acquire(a.as_str(), "f").await.expect("a unit the others gave back"));
    }
    assert_eq!(
        fronts[0].acquire(a.as_str(), "f").await.err(),
        Some(ignis_counting::Reason::ReservedFunctionConcurrentInvocationLimitExceeded)
    );
    for slot in held {
        fronts[2].release(slot);
    }
    let slot = fronts[0].acquire(a.as_str(), "f").await.expect("given back again");
    fronts[0].release(slot);
}

/// A reservation made after a front end leased units of the function unreserved holds at once: its spare units
/// are not used under the new terms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_made_later_holds_against_units_leased_before_it() {
    let cluster = EtcdCluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let registry = registry_with(dir.path(), &[("f", None)]).await;
    let limits = ignis_counting::Limits { concurrency: 100, min_unreserved: 10 };
    let fronts = counters(&cluster, &registry, limits, 1).await;
    let a = account();
    let slot = fronts[0].acquire(a.as_str(), "f").await.unwrap();
    fronts[0].release(slot);

    let mut record = FunctionRecord::new("f", "provided.al2023");
    record.reserved_concurrency = Some(1);
    registry.update(&a, "f", |_| Ok::<_, RegistryError>(record)).await.unwrap();
    let held = fronts[0].acquire(a.as_str(), "f").await.expect("the one unit");
    assert_eq!(
        fronts[0].acquire(a.as_str(), "f").await.err(),
        Some(ignis_counting::Reason::ReservedFunctionConcurrentInvocationLimitExceeded),
        "a unit leased before the reservation was used"
    );
    fronts[0].release(held);
    let again = fronts[0].acquire(a.as_str(), "f").await.expect("the unit again");
    fronts[0].release(again);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_limit_holds_across_front_ends_and_a_dead_front_ends_units_come_back() {
    let cluster = EtcdCluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let registry = registry_with(dir.path(), &[]).await;
    let limits = ignis_counting::Limits { concurrency: 10, min_unreserved: 0 };
    let fronts = counters(&cluster, &registry, limits, 2).await;
    let a = account();
    assert_eq!(fronts[0].unreserved_capacity(a.as_str()), 10);

    let mut first = Vec::new();
    for _ in 0..7 {
        first.push(fronts[0].acquire(a.as_str(), "f").await.unwrap());
    }
    let mut second = Vec::new();
    for _ in 0..3 {
        second.push(fronts[1].acquire(a.as_str(), "g").await.expect("the units the first does not use"));
    }
    assert_eq!(
        fronts[1].acquire(a.as_str(), "g").await.err(),
        Some(ignis_counting::Reason::ConcurrentInvocationLimitExceeded),
        "ten in use across both"
    );
    assert_eq!(fronts[0].holding(a.as_str(), "f").1, 7);

    // The first front end dies (it renews its lease no more): once etcd drops the lease, its units are the
    // second's to take.
    let mut fronts = fronts;
    drop(first);
    let dead = fronts.remove(0);
    drop(dead);
    let deadline = tokio::time::Instant::now() + SHOWS_WITHIN;
    while second.len() < 10 {
        assert!(tokio::time::Instant::now() < deadline, "the dead front end's units never came back");
        match fronts[0].acquire(a.as_str(), "g").await {
            Ok(slot) => second.push(slot),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(
        fronts[0].acquire(a.as_str(), "g").await.err(),
        Some(ignis_counting::Reason::ConcurrentInvocationLimitExceeded),
        "still ten at most"
    );
}

// ---- layers and networks ----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_and_networks_made_through_one_front_end_show_on_the_other() {
    use ignis_registry::{Layers, Networks};
    let cluster = EtcdCluster::start(1);
    let shared = tempfile::tempdir().unwrap();
    let (a, b) = nodes(&cluster, shared.path()).await;
    let endpoints = cluster.endpoints();
    let open_layers = |node: &Node| {
        let (store, roots) = (node.store.clone(), Arc::new(DirectoryRoots::new(shared.path()).unwrap()));
        let endpoints = endpoints.clone();
        async move {
            let etcd = Etcd::connect(&endpoints).await.unwrap();
            let code = Arc::new(CodeShare::new(etcd.clone(), store.clone(), roots));
            let layers = crate::EtcdLayers::open(etcd.clone(), store.clone(), code.clone(), REGION).await.unwrap();
            (layers, crate::EtcdNetworks::open(etcd, store, code).await.unwrap())
        }
    };
    let ((layers_a, networks_a), (layers_b, networks_b)) = (open_layers(&a).await, open_layers(&b).await);

    let tree = with_code(&a.store, "unused", "layer file");
    let version = ignis_registry::LayerVersionRecord {
        version: 0,
        description: String::new(),
        license_info: None,
        compatible_runtimes: Vec::new(),
        compatible_architectures: Vec::new(),
        code_sha256_hex: tree.code_sha256_hex.clone(),
        code_sha256: String::new(),
        code_size: 1,
        unzipped_size: 1,
        created_ms: 0,
        code: tree.code.clone(),
    };
    assert_eq!(layers_a.publish(&account(), "lib", version.clone()).await.unwrap().version, 1);
    until("the layer on b", || layers_b.get(&account(), "lib").is_some()).await;
    assert_eq!(
        std::fs::read_to_string(b.store.code_dir(&tree.code_sha256_hex).join("bootstrap")).unwrap(),
        "layer file",
        "b fetched the layer's tree"
    );
    // Numbers go on from the other front end, and are never reused.
    assert_eq!(layers_b.publish(&account(), "lib", version.clone()).await.unwrap().version, 2);
    assert!(layers_b.delete_version(&account(), "lib", 2).await.unwrap());
    until("the delete on a", || layers_a.get(&account(), "lib").is_some_and(|r| r.versions.len() == 1)).await;
    assert_eq!(layers_a.publish(&account(), "lib", version).await.unwrap().version, 3);
    assert_eq!(layers_a.live_code(), HashSet::from([tree.code_sha256_hex.clone()]));

    let network = |account: &str| ignis_registry::NetworkRecord {
        name: "lan".into(),
        account: account.into(),
        allow: vec!["10.1.0.0/16".parse().unwrap()],
        created_ms: 7,
    };
    networks_a.put(network("111111111111")).await.unwrap();
    until("the network on b", || networks_b.get("lan").is_some()).await;
    assert!(matches!(networks_b.put(network("222222222222")).await, Err(ignis_registry::NetworkError::OtherAccount { .. })));
    assert_eq!(networks_b.delete("lan").await.unwrap().map(|n| n.created_ms), Some(7));
    until("the network gone from a", || networks_a.list().is_empty()).await;
}

// ---- asynchronous events ----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_storage_keeps_a_batch_beyond_one_transaction_and_reads_it_back() {
    use ignis_pollers::tables::{EventChange, EventStorage};
    let cluster = EtcdCluster::start(1);
    let etcd = Etcd::connect(&cluster.endpoints()).await.unwrap();
    let storage = crate::EtcdEventStorage::new(etcd.clone(), "origin-a".into(), tokio::runtime::Handle::current());
    let other = crate::EtcdEventStorage::new(etcd, "origin-b".into(), tokio::runtime::Handle::current());
    // 300 events of 100 KB: more operations and bytes than one etcd request takes.
    let changes: Vec<EventChange> =
        (1..=300u64).map(|id| EventChange::Put { id, meta: format!("meta {id}").into_bytes(), payload: vec![id as u8; 100_000] }).collect();
    storage.apply(&changes).unwrap();
    let pending = storage.pending().unwrap();
    assert_eq!(pending.len(), 300);
    assert_eq!(pending[41].id, 42, "in id order");
    assert_eq!(pending[41].meta, b"meta 42");
    assert_eq!(storage.payload(7).unwrap(), Some(vec![7u8; 100_000]));
    assert!(other.pending().unwrap().is_empty(), "an origin sees its own events only");
    // A removal and the event that replaces it, then a second apply of the same: nothing changes twice.
    let swap = [EventChange::Remove { id: 1 }, EventChange::Put { id: 301, meta: b"meta 301".to_vec(), payload: Vec::new() }];
    storage.apply(&swap).unwrap();
    storage.apply(&swap).unwrap();
    let pending = storage.pending().unwrap();
    assert_eq!((pending.len(), pending[0].id, pending[299].id), (300, 2, 301));
    assert_eq!(storage.payload(1).unwrap(), None);
    assert_eq!(storage.payload(301).unwrap(), Some(Vec::new()));
}

// ---- code collection --------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_code_nothing_names_is_collected_after_its_grace_and_a_tree_named_again_is_not() {
    let cluster = EtcdCluster::start(1);
    let shared = tempfile::tempdir().unwrap();
    let (a, b) = nodes(&cluster, shared.path()).await;
    let grace = crate::code::GRACE.as_millis() as u64;
    let v1 = with_code(&a.store, "f", "v1");
    let (tree1, hold1) = (v1.code_sha256_hex.clone(), v1.code.clone());
    create(&*a.registry, v1).await.unwrap();
    let v2 = with_code(&a.store, "f", "v2");
    let tree2 = v2.code_sha256_hex.clone();
    a.registry.update(&account(), "f", |_| Ok::<_, RegistryError>(v2)).await.unwrap();
    let roots = || std::fs::read_dir(shared.path()).unwrap().count();
    assert_eq!(roots(), 2, "a root per shipped tree");

    let live = a.registry.live_code();
    assert_eq!(live, HashSet::from([tree2.clone()]));
    let mut unused = std::collections::BTreeMap::new();
    assert_eq!(a.code.collect(&live, &mut unused, 0).await.unwrap(), 0, "within its grace");
    // Named again (by a version of another function) before its grace ends: it stays.
    let mut again = FunctionRecord::new("g", "provided.al2023");
    again.code_sha256_hex = tree1.clone();
    again.code = hold1;
    create(&*a.registry, again).await.unwrap();
    assert_eq!(a.code.collect(&live, &mut unused, grace).await.unwrap(), 0, "touched since it was seen");
    // Unnamed for a whole grace: collected, key and root.
    a.registry.delete(&account(), "g").await.unwrap();
    let live = a.registry.live_code();
    assert_eq!(a.code.collect(&live, &mut unused, grace + 1).await.unwrap(), 0);
    assert_eq!(a.code.collect(&live, &mut unused, 2 * grace + 1).await.unwrap(), 1);
    assert_eq!(roots(), 1, "its root went with it");
    assert!(b.code.fetch(&tree1).await.is_err() || b.store.has_code(&tree1), "gone from the object store");
    assert!(b.code.fetch(&tree2).await.is_ok(), "what is named stays");
}

// ---- compaction -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_drops_old_values_and_the_front_ends_go_on() {
    let cluster = EtcdCluster::start(1);
    let shared = tempfile::tempdir().unwrap();
    let (a, b) = nodes(&cluster, shared.path()).await;
    let etcd = Etcd::connect(&cluster.endpoints()).await.unwrap();
    create(&*a.registry, with_code(&a.store, "f", "v1")).await.unwrap();
    let old = etcd.get(&crate::key("functions/"), Some(etcd_client::GetOptions::new().with_prefix())).await.unwrap();
    let old_revision = old.header().unwrap().revision();
    for i in 0..5 {
        a.registry.update(&account(), "f", |c| Ok::<_, RegistryError>(FunctionRecord { memory_mb: 128 + i, ..c.unwrap().clone() })).await.unwrap();
    }
    let now = etcd.get(&crate::key("functions/"), Some(etcd_client::GetOptions::new().with_prefix())).await.unwrap();
    crate::compaction::compact(&etcd, now.header().unwrap().revision()).await.unwrap();
    crate::compaction::compact(&etcd, old_revision).await.expect("compacting again, less far, is no error");
    let gone = etcd.get(&crate::key("functions/"), Some(etcd_client::GetOptions::new().with_prefix().with_revision(old_revision))).await;
    assert!(gone.is_err(), "the old revision is compacted away");
    // Both front ends go on: writes, and reads of what the other wrote.
    a.registry.update(&account(), "f", |c| Ok::<_, RegistryError>(FunctionRecord { memory_mb: 999, ..c.unwrap().clone() })).await.unwrap();
    until("the write after compaction on b", || b.registry.get(&account(), "f").is_some_and(|r| r.memory_mb == 999)).await;
}

// ---- queues and mappings ----------------------------------------------------

/// A fence on `leaders/queues` this test holds, under a lease of its own.
async fn queues_fence(etcd: &Etcd) -> crate::Fence {
    let lease = etcd.client().lease_grant(60, None).await.unwrap().id();
    let key = crate::key(crate::queue_home::QUEUES_KEY);
    let options = etcd_client::PutOptions::new().with_lease(lease);
    etcd.put(&key, format!("{lease:x}").into_bytes(), Some(options)).await.unwrap();
    crate::Fence { key, lease: Arc::new(std::sync::atomic::AtomicI64::new(lease)) }
}

fn queue_message(id: u64, body: &str) -> ignis_queues::QueueMessage {
    ignis_queues::QueueMessage {
        id,
        wire_id: (id == 2).then(|| "from-elsewhere".to_string()),
        body: body.into(),
        attributes: vec![1, 2, 3],
        sent_ms: 1000 + id,
        visible_at_ms: 2000 + id,
        receive_count: 0,
        first_receive_ms: None,
    }
}

/// How many keys are under `prefix` (under `/ignis/`).
async fn keys_under(etcd: &Etcd, prefix: &str) -> i64 {
    etcd.get(&crate::key(prefix), Some(etcd_client::GetOptions::new().with_prefix().with_count_only())).await.unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_storage_keeps_definitions_and_messages_and_batches_beyond_one_transaction() {
    use ignis_queues::{QueueMessage, QueueStorage, QueueWrite::*, StoredQueue};
    let cluster = EtcdCluster::start(1);
    let etcd = Etcd::connect(&cluster.endpoints()).await.unwrap();
    let fence = queues_fence(&etcd).await;
    let store = crate::EtcdQueueStorage::new(etcd.clone(), fence, tokio::runtime::Handle::current());

    // Definitions: by account then name, replaced, deleted once.
    assert!(store.definitions().unwrap().is_empty());
    store.put_definition("222222222222", "q", b"other").unwrap();
    store.put_definition("111111111111", "b", b"one").unwrap();
    store.put_definition("111111111111", "a", b"two").unwrap();
    store.put_definition("111111111111", "b", b"one'").unwrap();
    assert!(store.delete_definition("111111111111", "a").unwrap());
    assert!(!store.delete_definition("111111111111", "a").unwrap());
    assert_eq!(
        store.definitions().unwrap(),
        vec![("111111111111".into(), "b".into(), b"one'".to_vec()), ("222222222222".into(), "q".into(), b"other".to_vec())]
    );

    // Messages, receives of messages stored and gone, deletes.
    store
        .apply(&[
            Put { queue: 7, message: queue_message(0, "a") },
            Put { queue: 7, message: queue_message(1, "b") },
            Put { queue: 7, message: queue_message(2, "c") },
            Put { queue: 8, message: queue_message(0, "other queue") },
            Delete { queue: 7, id: 0 },
        ])
        .unwrap();
    store
        .apply(&[
            Received { queue: 7, id: 1, receive_count: 3, first_receive_ms: 5000 },
            Received { queue: 7, id: 0, receive_count: 1, first_receive_ms: 5000 },
        ])
        .unwrap();
    let received = QueueMessage { receive_count: 3, first_receive_ms: Some(5000), ..queue_message(1, "b") };
    assert_eq!(store.messages(7).unwrap(), StoredQueue { messages: vec![received, queue_message(2, "c")], next_id: 3 });
    assert_eq!(store.messages(8).unwrap().messages, vec![queue_message(0, "other queue")]);
    assert_eq!(store.messages(9).unwrap(), StoredQueue::default());
    assert_eq!(keys_under(&etcd, "queues/receives/").await, 1, "a receive of a message gone writes nothing");

    // In order within a batch, a key written several times in it; the next id never lowered.
    let dead_letter = QueueMessage { receive_count: 2, first_receive_ms: Some(4000), ..queue_message(5, "dead letter") };
    store
        .apply(&[
            Put { queue: 1, message: dead_letter.clone() },
            Put { queue: 1, message: queue_message(3, "earlier id") },
            Delete { queue: 1, id: 3 },
            Put { queue: 1, message: queue_message(3, "put again") },
            Received { queue: 1, id: 4, receive_count: 1, first_receive_ms: 4500 },
            Received { queue: 1, id: 3, receive_count: 1, first_receive_ms: 4500 },
            Received { queue: 1, id: 3, receive_count: 2, first_receive_ms: 4500 },
        ])
        .unwrap();
    store.apply(&[Delete { queue: 1, id: 4 }, Delete { queue: 2, id: 0 }]).unwrap();
    store.apply(&[Put { queue: 1, message: queue_message(4, "late") }]).unwrap();
    let again = QueueMessage { receive_count: 2, first_receive_ms: Some(4500), ..queue_message(3, "put again") };
    assert_eq!(store.messages(1).unwrap(), StoredQueue { messages: vec![again, queue_message(4, "late"), dead_letter], next_id: 6 });

    // 300 messages of 20 KiB, each moved in from queue 7's ids: beyond one transaction, by bytes and operations.
    let body = "x".repeat(20 * 1024);
    let mut big = Vec::new();
    for id in 0..300u64 {
        big.push(Put { queue: 9, message: QueueMessage { body: format!("{id} {body}"), ..queue_message(id, "") } });
        big.push(Delete { queue: 7, id: 100 + id });
    }
    store.apply(&big).unwrap();
    let stored = store.messages(9).unwrap();
    assert_eq!((stored.messages.len(), stored.next_id), (300, 300));
    assert!(stored.messages.iter().enumerate().all(|(i, m)| m.id == i as u64 && m.body == format!("{i} {body}")));
    assert_eq!(stored.messages[2].wire_id.as_deref(), Some("from-elsewhere"));

    // A purge keeps the next id; a put after a purge in one batch stays.
    store.apply(&[Purge { queue: 9 }]).unwrap();
    assert_eq!(store.messages(9).unwrap(), StoredQueue { messages: Vec::new(), next_id: 300 });
    store
        .apply(&[
            Put { queue: 10, message: queue_message(0, "gone") },
            Received { queue: 10, id: 0, receive_count: 1, first_receive_ms: 1 },
            Purge { queue: 10 },
            Put { queue: 10, message: queue_message(1, "kept") },
            Received { queue: 10, id: 1, receive_count: 1, first_receive_ms: 7 },
            Received { queue: 10, id: 0, receive_count: 1, first_receive_ms: 7 },
        ])
        .unwrap();
    let kept = QueueMessage { receive_count: 1, first_receive_ms: Some(7), ..queue_message(1, "kept") };
    assert_eq!(store.messages(10).unwrap(), StoredQueue { messages: vec![kept], next_id: 2 });

    // Queues not live go, with their receives and next ids; the count is of their messages.
    store.apply(&[Received { queue: 8, id: 0, receive_count: 1, first_receive_ms: 1 }]).unwrap();
    assert_eq!(store.remove_orphans(&HashSet::from([1, 7, 10])).unwrap(), 1);
    assert_eq!(store.messages(8).unwrap(), StoredQueue::default());
    assert_eq!(store.messages(9).unwrap(), StoredQueue::default());
    assert_eq!(store.messages(7).unwrap().messages.len(), 2);
    assert_eq!(store.messages(1).unwrap().messages.len(), 3);
    assert_eq!(store.remove_orphans(&HashSet::from([1, 7, 10])).unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_and_mapping_writes_hold_only_under_the_fence() {
    use ignis_pollers::tables::MappingStorage;
    use ignis_queues::{QueueStorage, QueueWrite::*};
    use ignis_store::StoreError;
    use std::sync::atomic::Ordering;
    let mut cluster = EtcdCluster::start(1);
    let etcd = Etcd::connect(&cluster.endpoints()).await.unwrap();
    let fence = queues_fence(&etcd).await;
    let (held, lease) = (fence.lease.load(Ordering::Acquire), fence.lease.clone());
    let store = crate::EtcdQueueStorage::new(etcd.clone(), fence.clone(), tokio::runtime::Handle::current());
    let mappings = crate::EtcdMappingStorage::new(etcd.clone(), fence, tokio::runtime::Handle::current());
    store.put_definition("111111111111", "q", b"record").unwrap();
    store.apply(&[Put { queue: 7, message: queue_message(0, "a") }]).unwrap();
    mappings.put("111111111111", "m", b"mapping").unwrap();
    let before = (store.definitions().unwrap(), store.messages(7).unwrap(), mappings.all().unwrap());

    // Another front end's lease: every write is refused and changes nothing.
    let other = etcd.client().lease_grant(60, None).await.unwrap().id();
    lease.store(other, Ordering::Release);
    let refused = |result: Result<(), StoreError>| matches!(result, Err(StoreError::Shared(e)) if e.contains("no longer serves"));
    assert!(refused(store.put_definition("111111111111", "q", b"changed")));
    assert!(refused(store.put_definition("111111111111", "new", b"record")));
    assert!(refused(store.delete_definition("111111111111", "q").map(drop)));
    assert!(refused(store.apply(&[Put { queue: 7, message: queue_message(1, "b") }, Delete { queue: 7, id: 0 }])));
    assert!(refused(store.apply(&[Purge { queue: 7 }])));
    assert!(refused(store.remove_orphans(&HashSet::new()).map(drop)));
    assert!(refused(mappings.put("111111111111", "m", b"changed")));
    assert!(refused(mappings.delete("111111111111", "m").map(drop)));
    assert_eq!((store.definitions().unwrap(), store.messages(7).unwrap(), mappings.all().unwrap()), before);

    // This front end's lease again: writes hold.
    lease.store(held, Ordering::Release);
    store.apply(&[Delete { queue: 7, id: 0 }]).unwrap();
    assert!(store.messages(7).unwrap().messages.is_empty());

    // No lease: refused without a request (etcd is gone; a request would wait for it).
    cluster.kill(0);
    lease.store(0, Ordering::Release);
    let started = std::time::Instant::now();
    assert!(refused(store.put_definition("111111111111", "q", b"changed")));
    assert!(refused(store.delete_definition("111111111111", "q").map(drop)));
    assert!(refused(store.apply(&[Purge { queue: 7 }])));
    assert!(refused(store.remove_orphans(&HashSet::new()).map(drop)));
    assert!(refused(mappings.put("111111111111", "m", b"changed")));
    assert!(refused(mappings.delete("111111111111", "m").map(drop)));
    assert!(started.elapsed() < Duration::from_secs(1), "no request was made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mapping_storage_round_trips() {
    use ignis_pollers::tables::MappingStorage;
    let cluster = EtcdCluster::start(1);
    let etcd = Etcd::connect(&cluster.endpoints()).await.unwrap();
    let fence = queues_fence(&etcd).await;
    let table = crate::EtcdMappingStorage::new(etcd, fence, tokio::runtime::Handle::current());
    assert!(table.all().unwrap().is_empty());
    table.put("111111111111", "b", b"two").unwrap();
    table.put("111111111111", "a", b"one").unwrap();
    table.put("111111111111", "a", b"one'").unwrap();
    table.put("222222222222", "c", b"three").unwrap();
    assert!(table.delete("222222222222", "c").unwrap());
    assert!(!table.delete("222222222222", "c").unwrap());
    assert!(!table.delete("111111111111", "c").unwrap(), "a mapping is found by account and UUID");
    let expected = vec![
        ("111111111111".to_string(), "a".to_string(), b"one'".to_vec()),
        ("111111111111".to_string(), "b".to_string(), b"two".to_vec()),
    ];
    assert_eq!(table.all().unwrap(), expected);
}

/// Two front ends' registries (`ignis_oci::Oci`) over one etcd index and object store.
async fn registries(cluster: &EtcdCluster, shared: &std::path::Path) -> Vec<(Arc<ignis_oci::Oci>, tempfile::TempDir)> {
    let mut out = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let etcd = Etcd::connect(&cluster.endpoints()).await.unwrap();
        let index = crate::EtcdIndex::open(etcd.clone()).await.unwrap();
        let contents = crate::EtcdContents::new(etcd, &DirectoryRoots::new(shared).unwrap()).unwrap();
        let clock = ignis_clock::SystemClock::shared();
        let oci = ignis_oci::Oci::shared(&store, ignis_oci::Limits::default(), clock, Arc::new(index), Some(Arc::new(contents)));
        out.push((Arc::new(oci.unwrap()), dir));
    }
    out
}

/// Uploads `bytes` to `repository` through `oci` as `account`; their digest.
fn upload(oci: &ignis_oci::Oci, account: &str, repository: &str, bytes: &[u8]) -> Result<String, ignis_oci::OciError> {
    use sha2::Digest;
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)));
    let id = oci.start_upload(account, repository)?;
    for piece in bytes.chunks(300_000) {
        oci.append(account, repository, &id, None, piece)?;
    }
    oci.finish_upload(account, repository, &id, &digest)?;
    Ok(digest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_pushed_through_one_front_end_is_read_through_the_other_and_owned_by_its_account() {
    let cluster = EtcdCluster::start(1);
    let shared = tempfile::tempdir().unwrap();
    let nodes = registries(&cluster, shared.path()).await;
    let (first, second) = (nodes[0].0.clone(), nodes[1].0.clone());
    tokio::task::spawn_blocking(move || {
        // A layer of several chunks, and a config, through the first.
        let layer: Vec<u8> = (0..1_300_000u32).map(|i| (i % 251) as u8).collect();
        let layer_digest = upload(&first, "111111111111", "team/app", &layer).unwrap();
        let config_digest = upload(&first, "111111111111", "team/app", br#"{"architecture":"amd64","os":"linux"}"#).unwrap();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": ignis_oci::OCI_MANIFEST,
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": 37 },
            "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len() }],
        });
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let digest = first.put_manifest("111111111111", "team/app", "v1", None, &bytes).unwrap();

        // The second reads it at once, the bytes fetched from the object store and checked.
        let read = second.get_manifest("111111111111", "team/app", "v1").unwrap();
        assert_eq!((read.digest.as_str(), read.bytes.as_slice()), (digest.as_str(), bytes.as_slice()));
        assert_eq!(second.read_blob("111111111111", "team/app", &layer_digest).unwrap(), layer);
        assert_eq!(second.blob_size("111111111111", "team/app", &layer_digest).unwrap(), layer.len() as u64);
        assert_eq!(second.tags("111111111111", "team/app").unwrap(), ["v1"]);
        assert_eq!(second.repositories("111111111111").unwrap(), ["team/app"]);

        // Another account neither reads nor writes it, through either.
        assert!(matches!(second.get_manifest("222222222222", "team/app", "v1"), Err(ignis_oci::OciError::Denied(_))));
        assert!(matches!(upload(&second, "222222222222", "team/app", b"x"), Err(ignis_oci::OciError::Denied(_))));
        // A manifest naming a blob the repository lacks is refused through the second too.
        let missing = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": ignis_oci::OCI_MANIFEST,
            "config": { "digest": config_digest, "size": 37 },
            "layers": [{ "digest": format!("sha256:{}", "0".repeat(64)), "size": 1 }],
        }))
        .unwrap();
        assert!(matches!(
            second.put_manifest("111111111111", "team/app", "v2", None, &missing),
            Err(ignis_oci::OciError::ManifestBlobUnknown(_))
        ));
        // The second tags it anew, by digest; the first sees the tag.
        second.put_manifest("111111111111", "team/app", "latest", None, &bytes).unwrap();
    })
    .await
    .unwrap();
    let first = nodes[0].0.clone();
    until("the tag made through the second shows on the first", move || {
        first.tags("111111111111", "team/app").is_ok_and(|tags| tags == ["latest", "v1"])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_accounts_pushing_a_new_repository_at_once_one_owns_it() {
    let cluster = EtcdCluster::start(1);
    let shared = tempfile::tempdir().unwrap();
    let nodes = registries(&cluster, shared.path()).await;
    for round in 0..5 {
        let repository = format!("contested-{round}");
        let pushes: Vec<_> = nodes
            .iter()
            .zip(["111111111111", "222222222222"])
            .map(|((oci, _), account)| {
                let (oci, repository) = (oci.clone(), repository.clone());
                tokio::task::spawn_blocking(move || upload(&oci, account, &repository, account.as_bytes()).map(|_| account))
            })
            .collect();
        let mut owners = Vec::new();
        for push in pushes {
            match push.await.unwrap() {
                Ok(account) => owners.push(account),
                Err(ignis_oci::OciError::Denied(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(owners.len(), 1, "round {round}: {owners:?}");
        let oci = nodes[1].0.clone();
        let owner = owners[0];
        let listed = tokio::task::spawn_blocking(move || oci.repositories(owner).unwrap()).await.unwrap();
        assert!(listed.contains(&repository));
    }
}
