//! The invoke path over the in-memory fake workers and a manual clock: no
//! root, no sandboxes, no real waiting.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ignis_clock::ManualClock;
use ignis_cluster::Capacity;
use ignis_counting::{Limits, Reason, ReservationError};
use ignis_ids::AccountId;
use ignis_placement::Refusal;
use ignis_worker::{Completion, Invocation, LogLevel, Outcome};

use crate::fake::{FakeWorker, Start, Step};
use crate::*;

const ACCOUNT: &str = "123456789012";

struct Options {
    local_mb: Option<u64>,
    concurrency: u32,
    scale_rate: u32,
    keep_alive: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options { local_mb: Some(1024), concurrency: 10, scale_rate: 100, keep_alive: Duration::from_secs(60) }
    }
}

struct World {
    invoker: Arc<Invoker>,
    clock: Arc<ManualClock>,
    local: Arc<FakeWorker>,
    /// Remote workers, in the order they registered.
    remotes: Arc<Mutex<Vec<Arc<FakeWorker>>>>,
}

fn world(options: Options) -> World {
    let clock = ManualClock::at_epoch_2026();
    let shared: SharedClock = clock.clone();
    let local = FakeWorker::new("local", shared.clone());
    let remotes: Arc<Mutex<Vec<Arc<FakeWorker>>>> = Arc::default();
    let made = remotes.clone();
    let remote_clock = shared.clone();
    let workers = Workers {
        local: options
            .local_mb
            .map(|memory_mb| (Arc::new(local.clone()) as Arc<dyn WorkerBackend>, Capacity { memory_mb, cpus: 2 })),
        connect: Box::new(move |address| {
            let worker = FakeWorker::new(address, remote_clock.clone());
            made.lock().unwrap().push(worker.clone());
            Arc::new(worker)
        }),
        logs: tokio::sync::mpsc::channel(1).0,
    };
    let limits = Limits { concurrency: options.concurrency, min_unreserved: 0 };
    let admission = Admission::new(limits, options.scale_rate, shared.clone());
    let invoker = Invoker::new(workers, admission, options.keep_alive, shared);
    World { invoker, clock, local, remotes }
}

impl World {
    fn remote(&self, i: usize) -> Arc<FakeWorker> {
        self.remotes.lock().unwrap()[i].clone()
    }

    /// Runs an invocation in a task of its own (for invocations the test holds).
    fn spawn(&self, target: &Target, id: &str) -> tokio::task::JoinHandle<Result<Outcome, InvokeError>> {
        let (invoker, target, event) = (self.invoker.clone(), target.clone(), event(id));
        tokio::spawn(async move { invoker.invoke(target, event).await })
    }

    /// Moves time on and lets the background tasks (reaper, health check) run.
    async fn advance(&self, by: Duration) {
        self.clock.advance(by);
        settle().await;
    }
}

pub(crate) fn function(name: &str, revision_id: &str, memory_mb: u32) -> Target {
    let function = Function {
        revision: Revision { account: AccountId::new(ACCOUNT), function: name.into(), revision_id: revision_id.into() },
        incarnation: 1,
        version: "$LATEST".into(),
        memory_mb,
        ephemeral_mb: 512,
        timeout: Duration::from_secs(3),
        runtime: "provided.al2023".into(),
        handler: "bootstrap".into(),
        environment: vec![("GREETING".into(), "hello".into())],
        log_group: format!("/aws/lambda/{name}"),
        log_format: ignis_worker::LogFormat::Text,
        code_sha256_hex: "ab".into(),
        code_dir: "/nonexistent".into(),
        opt_dir: None,
        code_hold: None,
        image: None,
        base: None,
        network: None,
    };
    Target { function: Arc::new(function), region: "eu-west-1".into() }
}

pub(crate) fn event(id: &str) -> Invocation {
    Invocation {
        request_id: id.into(),
        payload: Bytes::from_static(br#"{"n":1}"#),
        invoked_function_arn: "arn:aws:lambda:eu-west-1:123456789012:function:f".into(),
        trace_id: "Root=1-0-0".into(),
        client_context: None,
        cognito_identity: None,
        response_stream: None,
    }
}

fn response(outcome: Result<Outcome, InvokeError>) -> Bytes {
    match outcome.map(|o| o.completion) {
        Ok(Completion::Response(body)) => body,
        other => panic!("expected a response, got {other:?}"),
    }
}

/// Lets every ready task run (yields only; no time passes).
pub(crate) async fn settle() {
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
}

/// Yields until `condition` holds.
async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..20_000 {
        if condition() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("never happened: {what}");
}

#[tokio::test]
async fn an_idle_sandbox_is_reused() {
    let w = world(Options::default());
    let f = function("f", "r1", 128);
    assert_eq!(response(w.invoker.invoke(f.clone(), event("1")).await), Bytes::from_static(br#"{"n":1}"#));
    assert_eq!(response(w.invoker.invoke(f.clone(), event("2")).await), Bytes::from_static(br#"{"n":1}"#));
    assert_eq!((w.local.starts(), w.local.invocations()), (1, 2));
    assert_eq!(w.invoker.counts(), (0, 1, 0), "one idle sandbox");
    // Another revision of the same function gets a sandbox of its own.
    response(w.invoker.invoke(function("f", "r2", 128), event("3")).await);
    assert_eq!(w.local.starts(), 2);
}

#[tokio::test]
async fn a_new_sandbox_gets_lambdas_environment() {
    let w = world(Options::default());
    response(w.invoker.invoke(function("f", "r1", 256), event("1")).await);
    let env = &w.local.environments()[0];
    let get = |k: &str| env.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    assert_eq!(get("AWS_LAMBDA_FUNCTION_NAME"), Some("f"));
    assert_eq!(get("AWS_LAMBDA_FUNCTION_VERSION"), Some("$LATEST"));
    assert_eq!(get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"), Some("256"));
    assert_eq!(get("AWS_LAMBDA_LOG_GROUP_NAME"), Some("/aws/lambda/f"));
    assert_eq!(get("AWS_LAMBDA_INITIALIZATION_TYPE"), Some("on-demand"));
    assert_eq!(get("AWS_REGION"), Some("eu-west-1"));
    assert_eq!(get("AWS_EXECUTION_ENV"), Some("AWS_Lambda_provided.al2023"));
    assert_eq!(get("_HANDLER"), Some("bootstrap"));
    assert_eq!(env.last(), Some(&("GREETING".to_string(), "hello".to_string())), "the function's own variables come last");
    assert_eq!((get("AWS_LAMBDA_LOG_FORMAT"), get("AWS_LAMBDA_LOG_LEVEL")), (Some("Text"), None));
}

#[tokio::test]
async fn a_json_log_format_and_its_level_reach_the_runtimes_environment() {
    let w = world(Options::default());
    let mut target = function("f", "r1", 128);
    let mut f = (*target.function).clone();
    f.log_format = ignis_worker::LogFormat::Json { application: LogLevel::Warn, system: LogLevel::Debug };
    target.function = Arc::new(f);
    response(w.invoker.invoke(target, event("1")).await);
    let env = &w.local.environments()[0];
    let get = |k: &str| env.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    assert_eq!((get("AWS_LAMBDA_LOG_FORMAT"), get("AWS_LAMBDA_LOG_LEVEL")), (Some("JSON"), Some("WARN")));
}

/// Credentials numbered in minting order, valid 12 hours.
#[derive(Default)]
struct NumberedCredentials {
    minted: Mutex<Vec<(String, String, u64)>>,
}

impl CredentialSource for NumberedCredentials {
    fn mint(&self, account: &AccountId, function: &str, incarnation: u64, now: std::time::SystemTime) -> ignis_registry::SessionCredentials {
        let mut minted = self.minted.lock().unwrap();
        minted.push((account.to_string(), function.to_string(), incarnation));
        ignis_registry::SessionCredentials {
            access_key_id: format!("ASIA{:016}", minted.len()),
            secret_access_key: format!("secret-{}", minted.len()),
            session_token: format!("token-{}", minted.len()),
            expiration: now + Duration::from_secs(12 * 3600),
        }
    }
}

#[tokio::test]
async fn every_new_sandbox_gets_credentials_of_its_own() {
    let w = world(Options::default());
    let source = Arc::new(NumberedCredentials::default());
    response(w.invoker.invoke(function("f", "r1", 256), event("0")).await);
    w.invoker.set_credential_source(source.clone());
    let mut target = function("g", "r1", 256);
    let mut f = (*target.function).clone();
    // Neither the function's nor its image's environment can set them.
    f.environment.push(("AWS_SECRET_ACCESS_KEY".into(), "mine".into()));
    f.image = Some(crate::FunctionImage {
        prepared_id: "sha256:ab".into(),
        manifest_digest: "sha256:ab".into(),
        repository: "team/app".into(),
        command: vec!["/entry".into()],
        workdir: "/".into(),
        env: vec![("AWS_ACCESS_KEY_ID".into(), "AKIAIMAGE".into())],
    });
    target.function = Arc::new(f);
    w.local.script([Step::Hold, Step::Hold]);
    let (first, second) = (w.spawn(&target, "1"), w.spawn(&target, "2"));
    until("both invocations are held", || w.local.holding() == 2).await;
    w.local.release();
    response(first.await.unwrap());
    response(second.await.unwrap());
    let envs = w.local.environments();
    let get = |env: &Vec<(String, String)>, k: &str| env.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    assert_eq!(get(&envs[0], "AWS_ACCESS_KEY_ID"), None, "no source yet");
    let mut keys = Vec::new();
    for env in &envs[1..] {
        let mut names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        names.sort_unstable();
        let count = names.len();
        names.dedup();
        assert_eq!(names.len(), count, "each name once: {env:?}");
        let n = get(env, "AWS_SECRET_ACCESS_KEY").unwrap().trim_start_matches("secret-").to_string();
        assert_eq!(get(env, "AWS_ACCESS_KEY_ID"), Some(format!("ASIA{:0>16}", n)));
        assert_eq!(get(env, "AWS_SESSION_TOKEN"), Some(format!("token-{n}")));
        keys.push(n);
    }
    keys.sort();
    assert_eq!(keys, ["1", "2"], "two sandboxes, two pairs");
    assert_eq!(*source.minted.lock().unwrap(), vec![(ACCOUNT.to_string(), "g".to_string(), 1); 2]);
}

#[tokio::test]
async fn a_sandbox_whose_credentials_near_their_expiry_is_replaced() {
    let w = world(Options { keep_alive: Duration::from_secs(24 * 3600), ..Options::default() });
    w.invoker.set_credential_source(Arc::new(NumberedCredentials::default()));
    let target = function("f", "r1", 256);
    response(w.invoker.invoke(target.clone(), event("1")).await);
    // Reused until an hour before its credentials expire (12 h after they were minted)...
    w.advance(Duration::from_secs(11 * 3600) - Duration::from_millis(1)).await;
    response(w.invoker.invoke(target.clone(), event("2")).await);
    assert_eq!((w.local.starts(), w.local.kills()), (1, 0));
    // ... then ended and replaced by one with fresh credentials.
    w.advance(Duration::from_millis(1)).await;
    response(w.invoker.invoke(target.clone(), event("3")).await);
    assert_eq!((w.local.starts(), w.local.kills()), (2, 1));
    let envs = w.local.environments();
    let secret = |env: &Vec<(String, String)>| env.iter().find(|(k, _)| k == "AWS_SECRET_ACCESS_KEY").map(|(_, v)| v.clone());
    assert_ne!(secret(&envs[0]), secret(&envs[1]));
    assert_eq!(w.invoker.counts(), (0, 1, 0));
}

#[tokio::test]
async fn a_busy_sandbox_past_its_renewal_time_is_not_reused() {
    let w = world(Options { keep_alive: Duration::from_secs(24 * 3600), ..Options::default() });
    w.invoker.set_credential_source(Arc::new(NumberedCredentials::default()));
    let target = function("f", "r1", 256);
    w.local.script([Step::Hold]);
    let held = w.spawn(&target, "1");
    until("the invocation is held", || w.local.holding() == 1).await;
    w.advance(Duration::from_secs(11 * 3600)).await;
    w.local.release();
    response(held.await.unwrap());
    assert_eq!(w.invoker.counts(), (0, 0, 0), "ended when released");
    response(w.invoker.invoke(target, event("2")).await);
    assert_eq!(w.local.starts(), 2);
}

#[tokio::test]
async fn an_image_functions_environment_is_lambdas_then_the_images_then_its_own() {
    let w = world(Options::default());
    let mut target = function("f", "r1", 256);
    let mut f = (*target.function).clone();
    f.environment = vec![("GREETING".into(), "mine".into()), ("ONLY_MINE".into(), "1".into())];
    f.image = Some(crate::FunctionImage {
        prepared_id: "sha256:ab".into(),
        manifest_digest: "sha256:ab".into(),
        repository: "team/app".into(),
        command: vec!["/entry".into(), "arg".into()],
        workdir: "/srv".into(),
        env: vec![("PATH".into(), "/image/bin".into()), ("GREETING".into(), "image's".into())],
    });
    target.function = Arc::new(f);
    response(w.invoker.invoke(target, event("1")).await);
    let env = &w.local.environments()[0];
    let get = |k: &str| env.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    assert_eq!(get("PATH"), Some("/image/bin"), "the image's environment over Lambda's defaults");
    assert_eq!(get("GREETING"), Some("mine"), "the function's own over the image's");
    assert_eq!((get("ONLY_MINE"), get("AWS_LAMBDA_FUNCTION_NAME")), (Some("1"), Some("f")));
    assert_eq!((get("AWS_EXECUTION_ENV"), get("_HANDLER")), (None, None), "an image brings its own runtime");
    let mut names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    names.sort_unstable();
    let count = names.len();
    names.dedup();
    assert_eq!(names.len(), count, "each name once: {env:?}");
}

#[tokio::test]
async fn a_function_on_a_runtime_base_gets_lambdas_environment_with_the_bases_search_paths_then_its_own() {
    let w = world(Options::default());
    let mut target = function("f", "r1", 256);
    let mut f = (*target.function).clone();
    f.runtime = "python3.11".into();
    f.handler = "app.handler".into();
    f.environment = vec![("LANG".into(), "C.UTF-8".into())];
    let image = crate::FunctionImage {
        prepared_id: "sha256:ab".into(),
        manifest_digest: "sha256:ab".into(),
        repository: "runtimes/python3.11".into(),
        command: vec!["/var/runtime/bootstrap".into(), "app.handler".into()],
        workdir: "/var/task".into(),
        env: vec![
            ("PATH".into(), "/var/lang/bin:/usr/bin".into()),
            ("LANG".into(), "en_US.UTF-8".into()),
            ("TZ".into(), ":/etc/localtime".into()),
            ("BASE_ONLY".into(), "1".into()),
        ],
    };
    f.base = Some(crate::FunctionBase { account: "000000000001".into(), image });
    target.function = Arc::new(f);
    response(w.invoker.invoke(target, event("1")).await);
    let env = &w.local.environments()[0];
    let get = |k: &str| env.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    assert_eq!(get("PATH"), Some("/var/lang/bin:/usr/bin"), "the base's search path over Lambda's default");
    assert_eq!((get("TZ"), get("BASE_ONLY")), (Some(":UTC"), Some("1")), "Lambda's other variables over the base's");
    assert_eq!(get("LANG"), Some("C.UTF-8"), "the function's own over the base's");
    assert_eq!((get("AWS_EXECUTION_ENV"), get("_HANDLER")), (Some("AWS_Lambda_python3.11"), Some("app.handler")));
}

#[tokio::test]
async fn a_cold_start_goes_where_packing_says() {
    let w = world(Options { local_mb: None, ..Options::default() });
    let first = w.invoker.register("10.0.0.1:9000", Capacity { memory_mb: 256, cpus: 2 }).await.expect("registered");
    let second = w.invoker.register("10.0.0.2:9000", Capacity { memory_mb: 2048, cpus: 2 }).await.expect("registered");
    assert_eq!((first, second), (WorkerId(1), WorkerId(2)));
    // Small sandboxes fill the oldest worker first.
    response(w.invoker.invoke(function("small", "r1", 128), event("1")).await);
    assert_eq!((w.remote(0).starts(), w.remote(1).starts()), (1, 0));
    // One that cannot fit there goes to the next.
    response(w.invoker.invoke(function("large", "r1", 512), event("2")).await);
    assert_eq!((w.remote(0).starts(), w.remote(1).starts()), (1, 1));
    let used: Vec<(u32, u64, u32)> = w.invoker.workers().iter().map(|i| (i.id.0, i.used_memory_mb, i.sandboxes)).collect();
    assert_eq!(used, [(1, 128, 1), (2, 512, 1)]);
}

#[tokio::test]
async fn the_account_limit_throttles() {
    let w = world(Options { concurrency: 1, ..Options::default() });
    let f = function("f", "r1", 128);
    w.local.script([Step::Hold]);
    let held = w.spawn(&f, "1");
    until("the first invocation is held", || w.local.holding() == 1).await;
    let throttled = w.invoker.invoke(function("other", "r1", 128), event("2")).await;
    assert_eq!(throttled.err(), Some(InvokeError::Throttled(Reason::ConcurrentInvocationLimitExceeded)));
    w.local.release();
    response(held.await.unwrap());
    // The slot came back.
    response(w.invoker.invoke(f, event("3")).await);
}

#[tokio::test]
async fn reserved_concurrency_throttles_its_function() {
    let w = world(Options::default());
    let admission = w.invoker.admission();
    assert_eq!(admission.set_reservation(ACCOUNT, "f", 1), Ok(None));
    assert_eq!(
        admission.set_reservation(ACCOUNT, "g", 11),
        Err(InvokeError::Reservation(ReservationError::BelowMinimumUnreserved { minimum: 0 }))
    );
    let f = function("f", "r1", 128);
    w.local.script([Step::Hold]);
    let held = w.spawn(&f, "1");
    until("the first invocation is held", || w.local.holding() == 1).await;
    let throttled = w.invoker.invoke(f.clone(), event("2")).await;
    assert_eq!(throttled.err(), Some(InvokeError::Throttled(Reason::ReservedFunctionConcurrentInvocationLimitExceeded)));
    // Other functions still run.
    response(w.invoker.invoke(function("g", "r1", 128), event("3")).await);
    w.local.release();
    response(held.await.unwrap());
}

#[tokio::test]
async fn the_scaling_rate_refuses_new_sandboxes_until_its_window_moves() {
    let w = world(Options { scale_rate: 1, ..Options::default() });
    let f = function("f", "r1", 128);
    w.local.script([Step::Hold]);
    let held = w.spawn(&f, "1");
    until("the first invocation is held", || w.local.holding() == 1).await;
    // No idle sandbox, and the function may start no other for 10 s.
    let refused = w.invoker.invoke(f.clone(), event("2")).await;
    assert_eq!(refused.err(), Some(InvokeError::Throttled(Reason::ConcurrentInvocationLimitExceeded)));
    assert_eq!(w.invoker.counts(), (1, 0, 0), "the refused start left nothing behind");
    w.advance(Duration::from_millis(9_999)).await;
    let refused = w.invoker.invoke(f.clone(), event("2")).await;
    assert_eq!(refused.err(), Some(InvokeError::Throttled(Reason::ConcurrentInvocationLimitExceeded)));
    w.advance(Duration::from_millis(1)).await;
    response(w.invoker.invoke(f.clone(), event("3")).await);
    assert_eq!(w.local.starts(), 2);
    w.local.release();
    response(held.await.unwrap());
}

#[tokio::test]
async fn idle_sandboxes_end_after_the_keep_alive() {
    let w = world(Options { keep_alive: Duration::from_secs(60), ..Options::default() });
    response(w.invoker.invoke(function("f", "r1", 128), event("1")).await);
    w.advance(Duration::from_secs(30)).await;
    w.advance(Duration::from_secs(29)).await;
    assert_eq!((w.local.live(), w.local.kills()), (1, 0), "still within its keep-alive");
    // Used again: its keep-alive starts over.
    response(w.invoker.invoke(function("f", "r1", 128), event("2")).await);
    w.advance(Duration::from_secs(59)).await;
    assert_eq!(w.local.live(), 1);
    w.advance(Duration::from_secs(6)).await;
    until("the reaper ended it", || w.local.live() == 0).await;
    assert_eq!((w.local.kills(), w.invoker.counts()), (1, (0, 0, 0)));
    assert_eq!(w.invoker.workers()[0].used_memory_mb, 0, "its memory is released");
}

#[tokio::test]
async fn idle_sandboxes_are_evicted_when_no_worker_has_room() {
    let w = world(Options { local_mb: Some(384), ..Options::default() });
    let (a, b, p) = (function("a", "r1", 128), function("b", "r1", 128), function("p", "r1", 128));
    // p: one provisioned sandbox; a: idle; b: busy.
    w.invoker.provision(vec![Provisioned { target: p.clone(), requested: 1, since_ms: 1 }]);
    until("p is provisioned", || w.invoker.allocation(&p.function.revision).allocated == 1).await;
    response(w.invoker.invoke(a.clone(), event("a1")).await);
    w.local.script([Step::Hold]);
    let held = w.spawn(&b, "b1");
    until("b is busy", || w.local.holding() == 1).await;
    assert_eq!(w.invoker.workers()[0].used_memory_mb, 384);

    // c needs room: only a's idle sandbox may go.
    response(w.invoker.invoke(function("c", "r1", 128), event("c1")).await);
    assert_eq!(w.local.kills(), 1);
    assert_eq!(w.invoker.allocation(&p.function.revision).allocated, 1, "a provisioned sandbox is never evicted");
    assert_eq!(w.local.holding(), 1, "a busy sandbox is never evicted");

    // Now c is idle; held busy, p provisioned: d evicts c.
    response(w.invoker.invoke(function("d", "r1", 128), event("d1")).await);
    assert_eq!(w.local.kills(), 2);

    // With d busy too, nothing can go: the start is refused.
    w.local.script([Step::Hold]);
    let held_d = w.spawn(&function("d", "r1", 128), "d2");
    until("d is busy", || w.local.holding() == 2).await;
    let refused = w.invoker.invoke(function("e", "r1", 128), event("e1")).await;
    assert_eq!(
        refused.err(),
        Some(InvokeError::NoRoom { memory_mb: 128, refusal: Refusal::Full { largest_free_mb: 0 } })
    );
    w.local.release();
    response(held.await.unwrap());
    response(held_d.await.unwrap());
}

#[tokio::test]
async fn a_silent_worker_turns_unhealthy_and_its_calls_end() {
    let w = world(Options { local_mb: None, ..Options::default() });
    let id = w.invoker.register("10.0.0.1:9000", Capacity { memory_mb: 1024, cpus: 2 }).await.expect("registered");
    let f = function("f", "r1", 128);
    response(w.invoker.invoke(f.clone(), event("1")).await);
    w.remote(0).script([Step::Hold]);
    let held = w.spawn(&f, "2");
    until("the invocation is held", || w.remote(0).holding() == 1).await;

    // Heartbeats keep it healthy...
    w.advance(Duration::from_secs(2)).await;
    assert!(w.invoker.heartbeat(id).await);
    w.advance(Duration::from_secs(2)).await;
    assert!(w.invoker.workers()[0].healthy);
    assert_eq!(w.remote(0).holding(), 1);
    // ... until they stop.
    w.advance(ignis_cluster::HEARTBEAT_TIMEOUT).await;
    let lost = held.await.unwrap();
    assert_eq!(lost.err(), Some(InvokeError::WorkerLost("the worker at 10.0.0.1:9000 was lost".into())));
    let info = &w.invoker.workers()[0];
    assert_eq!((info.healthy, info.sandboxes, info.used_memory_mb), (false, 0, 0));
    assert_eq!(w.invoker.counts(), (0, 0, 0), "its sandboxes left the pool");
    assert!(!w.invoker.heartbeat(id).await, "it must register again");
    let refused = w.invoker.invoke(f.clone(), event("3")).await;
    assert_eq!(refused.err(), Some(InvokeError::NoHealthyWorker { memory_mb: 128 }));

    // It registers again (a new process at the same address): a new worker, healthy.
    let again = w.invoker.register("10.0.0.1:9000", Capacity { memory_mb: 1024, cpus: 2 }).await.expect("registered");
    assert_eq!(again, WorkerId(id.0 + 1));
    response(w.invoker.invoke(f, event("4")).await);
    assert_eq!(w.remote(1).starts(), 1);
    assert_eq!(w.invoker.workers().len(), 1, "the old listing left");
}

#[tokio::test]
async fn an_event_no_runtime_took_runs_on_another_sandbox() {
    let w = world(Options::default());
    let f = function("f", "r1", 128);
    w.local.script([Step::DieBeforeTaking]);
    response(w.invoker.invoke(f.clone(), event("1")).await);
    assert_eq!((w.local.starts(), w.local.invocations(), w.local.live()), (2, 1, 1));
    // Sandboxes that keep dying: the invocation gives up.
    w.local.script([Step::DieBeforeTaking, Step::DieBeforeTaking, Step::DieBeforeTaking]);
    assert_eq!(w.invoker.invoke(f.clone(), event("2")).await.err(), Some(InvokeError::KeptFailing));
    // A sandbox that died after taking the event answers the function's failure, and goes.
    w.local.script([Step::DieAfterTaking]);
    let outcome = w.invoker.invoke(f.clone(), event("3")).await.unwrap();
    assert!(matches!(outcome.completion, Completion::Failed { error_type: "Runtime.ExitError", .. }));
    assert_eq!(w.invoker.counts(), (0, 0, 0));
    // A function error keeps the sandbox.
    w.local.script([Step::FunctionError]);
    let outcome = w.invoker.invoke(f, event("4")).await.unwrap();
    assert!(matches!(outcome.completion, Completion::Error { .. }));
    assert_eq!(w.invoker.counts(), (0, 1, 0));
}

#[tokio::test]
async fn a_worker_whose_connection_fails_is_dropped_and_the_event_runs_elsewhere() {
    let w = world(Options { local_mb: None, ..Options::default() });
    w.invoker.register("10.0.0.1:9000", Capacity { memory_mb: 1024, cpus: 2 }).await.expect("registered");
    w.invoker.register("10.0.0.2:9000", Capacity { memory_mb: 1024, cpus: 2 }).await.expect("registered");
    let f = function("f", "r1", 128);
    response(w.invoker.invoke(f.clone(), event("1")).await);
    assert_eq!((w.remote(0).starts(), w.remote(1).starts()), (1, 0));
    w.remote(0).lose();
    // The idle sandbox there cannot take it: the worker is dropped at once and the event runs on the other.
    response(w.invoker.invoke(f, event("2")).await);
    assert_eq!((w.remote(0).invocations(), w.remote(1).starts(), w.remote(1).invocations()), (1, 1, 1));
    let healthy: Vec<bool> = w.invoker.workers().iter().map(|i| i.healthy).collect();
    assert_eq!(healthy, [false, true]);
}

#[tokio::test]
async fn start_failures_answer_as_lambda_does() {
    let w = world(Options::default());
    let f = function("f", "r1", 128);
    w.local.script_starts([Start::Entrypoint("bootstrap is missing".into())]);
    let outcome = w.invoker.invoke(f.clone(), event("req-1")).await.unwrap();
    assert_eq!(
        outcome.completion,
        Completion::Failed { error_type: "Runtime.InvalidEntrypoint", message: "RequestId: req-1 Error: bootstrap is missing".into() }
    );
    w.local.script_starts([Start::HostError("no namespaces left".into()), Start::ShuttingDown]);
    let failed = w.invoker.invoke(f.clone(), event("2")).await.err().unwrap();
    assert_eq!(failed.to_string(), "could not start a sandbox: no namespaces left");
    assert_eq!(w.invoker.invoke(f.clone(), event("3")).await.err(), Some(InvokeError::ShuttingDown));
    assert_eq!(w.invoker.counts(), (0, 0, 0));
    assert_eq!(w.invoker.workers()[0].used_memory_mb, 0, "failed starts give their memory back");
    let too_large = w.invoker.invoke(function("huge", "r1", 2048), event("4")).await.err().unwrap();
    assert_eq!(
        too_large.to_string(),
        "could not start a sandbox: no worker can take a sandbox of 2048 MB: larger than any worker (1024 MB)"
    );
}

#[tokio::test]
async fn provisioned_sandboxes_are_allocated_and_replaced() {
    let w = world(Options::default());
    let p = function("p", "r1", 128);
    let revision = p.function.revision.clone();
    let want = |n: u32, since_ms: i64| vec![Provisioned { target: p.clone(), requested: n, since_ms }];
    w.invoker.provision(want(2, 1));
    until("two are ready", || w.invoker.allocation(&revision).allocated == 2).await;
    assert_eq!(w.invoker.allocation(&revision), Allocation { allocated: 2, failure: None });
    let env = &w.local.environments()[0];
    assert!(env.contains(&("AWS_LAMBDA_INITIALIZATION_TYPE".into(), "provisioned-concurrency".into())));

    // Invocations use them; one dies and is replaced at the next round.
    w.local.script([Step::DieAfterTaking]);
    w.invoker.invoke(p.clone(), event("1")).await.unwrap();
    assert_eq!((w.local.starts(), w.invoker.allocation(&revision).allocated), (2, 1));
    w.invoker.provision(want(2, 1));
    until("replaced", || w.invoker.allocation(&revision).allocated == 2).await;
    assert_eq!(w.local.starts(), 3);

    // Fewer wanted: the extra one becomes ordinary.
    w.invoker.provision(want(1, 2));
    assert_eq!(w.invoker.allocation(&revision).allocated, 1);
    assert_eq!(w.invoker.counts(), (0, 2, 0));
}

#[tokio::test]
async fn a_failed_provisioned_init_stops_until_the_setting_changes() {
    let w = world(Options::default());
    let p = function("p", "r1", 128);
    let revision = p.function.revision.clone();
    let want = |since_ms: i64| vec![Provisioned { target: p.clone(), requested: 1, since_ms }];
    w.local.script_starts([Start::InitFails("Runtime.ExitError".into())]);
    w.invoker.provision(want(1));
    until("it failed", || w.invoker.allocation(&revision).failure.is_some()).await;
    assert_eq!(w.invoker.allocation(&revision), Allocation { allocated: 0, failure: Some("Runtime.ExitError".into()) });
    assert_eq!(w.local.live(), 0);
    w.invoker.provision(want(1));
    settle().await;
    assert_eq!(w.local.starts(), 1, "no retry under the same setting");
    w.invoker.provision(want(2));
    until("ready", || w.invoker.allocation(&revision).allocated == 1).await;
    assert_eq!(w.invoker.allocation(&revision).failure, None);
}

#[tokio::test]
async fn retiring_a_revision_ends_its_idle_sandboxes_and_its_busy_ones_after() {
    let w = world(Options::default());
    let (old, new) = (function("f", "r1", 128), function("f", "r2", 128));
    w.local.script([Step::Hold]);
    let held = w.spawn(&old, "1");
    until("busy", || w.local.holding() == 1).await;
    response(w.invoker.invoke(old.clone(), event("2")).await);
    response(w.invoker.invoke(new.clone(), event("3")).await);
    // (A cold sandbox counts as initialising until its first invocation ends.)
    assert_eq!((w.local.live(), w.invoker.counts()), (3, (1, 2, 0)));
    w.invoker.retire(&old.function.revision);
    assert_eq!((w.local.live(), w.local.kills()), (2, 1), "r1's idle sandbox ends now");
    assert_eq!(w.local.holding(), 1, "its busy one finishes its invocation");
    w.local.release();
    response(held.await.unwrap());
    assert_eq!((w.local.live(), w.local.kills()), (1, 2), "then it ends too; r2's stays");
    response(w.invoker.invoke(new, event("4")).await);
    assert_eq!(w.local.starts(), 3, "r2 reused its sandbox");
}

#[tokio::test]
async fn shutdown_ends_every_sandbox_and_worker() {
    let w = world(Options::default());
    w.invoker.register("10.0.0.1:9000", Capacity { memory_mb: 1024, cpus: 2 }).await.expect("registered");
    for (i, name) in ["a", "b", "c", "d", "e", "f", "g", "h", "i"].iter().enumerate() {
        response(w.invoker.invoke(function(name, "r1", 128), event(&i.to_string())).await);
    }
    let remote = w.remote(0);
    assert!(remote.live() > 0 && w.local.live() > 0, "both workers have sandboxes");
    w.invoker.shutdown().await;
    assert_eq!((w.local.live(), remote.live()), (0, 0));
    assert_eq!((w.local.shutdowns(), remote.shutdowns()), (1, 1));
    assert_eq!(w.invoker.counts(), (0, 0, 0));
    assert!(w.invoker.workers().iter().all(|i| i.used_memory_mb == 0));
}

#[test]
fn errors_say_what_the_api_shows() {
    let check = |e: InvokeError, message: &str| assert_eq!(e.to_string(), message);
    check(InvokeError::NoHealthyWorker { memory_mb: 128 }, "could not start a sandbox: no worker can take a sandbox of 128 MB: no healthy worker");
    check(
        InvokeError::NoRoom { memory_mb: 512, refusal: Refusal::Full { largest_free_mb: 256 } },
        "could not start a sandbox: no worker can take a sandbox of 512 MB: no worker has room (largest free: 256 MB)",
    );
    check(InvokeError::LostWhileStarting, "could not start a sandbox: the worker was lost while the sandbox started");
    check(InvokeError::StartFailed("x".into()), "could not start a sandbox: x");
    check(InvokeError::KeptFailing, "the function's sandboxes kept failing before they could take the event");
    check(InvokeError::WorkerLost("the worker at h:1 was lost".into()), "the worker at h:1 was lost");
    check(InvokeError::ShuttingDown, "Ignis is shutting down");
    check(InvokeError::Task("panicked".into()), "invocation failed: panicked");
    check(
        InvokeError::Reservation(ReservationError::BelowMinimumUnreserved { minimum: 100 }),
        "Specified ReservedConcurrentExecutions for function decreases account's UnreservedConcurrentExecution below its minimum value of [100].",
    );
}

/// A sandbox's spec carries its function's networks, as its target had them.
#[test]
fn specs_carry_the_network() {
    let mut target = function("f", "r1", 128);
    assert_eq!(spec(&target, "on-demand", Vec::new()).network, None);
    let allow = ["10.0.0.0/8".parse().unwrap()];
    let network = ignis_net::Attachment::new([("db", &allow[..])]);
    Arc::get_mut(&mut target.function).unwrap().network = network.clone();
    assert_eq!(spec(&target, "on-demand", Vec::new()).network, network);
}
