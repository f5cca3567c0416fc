//! The one place a registry record becomes what the invoker runs: a
//! [`Target`] (with its [`Revision`]) for a [`FunctionRecord`] of an
//! account, the ARN an invocation carries, and the trace header an
//! invocation that came without one gets. Every caller (the sync API,
//! asynchronous events, mapping pollers, the provisioned-concurrency keeper)
//! builds its target here.
//!
//! An image function's command follows Lambda's `ImageConfig`, each field
//! replacing only the image setting it names ([`image_launch`]): `EntryPoint`
//! replaces ENTRYPOINT, `Command` replaces CMD, `WorkingDirectory` replaces
//! WORKDIR, and what runs is ENTRYPOINT followed by CMD (the OCI/Docker rule).
//! Lambda documents the two overrides as independent settings, so an
//! `EntryPoint` given without `Command` keeps the image's CMD as its
//! arguments; Docker's `--entrypoint` flag clearing CMD is a rule of that
//! command line, not of the image. An image that names nothing to run is
//! accepted (as Lambda accepts it); its sandbox fails to start.
//!
//! A zip function on a runtime base ([`base_launch`]) runs the base's
//! ENTRYPOINT with the function's handler as its one argument (as AWS's base
//! images take it, `/lambda-entrypoint.sh app.handler`), in `/var/task`; a
//! `provided` runtime's with no argument, as Lambda starts a `bootstrap`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ignis_registry::{FunctionRecord, ImageConfigOverride, ImageRecord, NetworkRecord, Networks, RuntimeRecord};
use ignis_store::Store;
use ignis_worker::{LogFormat, LogLevel};

use crate::{Function, FunctionBase, FunctionImage, Revision, Target};

/// What the invoker runs for `record` in `account`, in `region`; the code
/// tree is `store`'s, the ranges of its networks `networks`' now.
pub fn target(store: &Store, networks: &dyn Networks, region: &str, account: &str, record: &FunctionRecord) -> Target {
    let function = Function {
        revision: revision(account, record),
        incarnation: record.incarnation,
        version: record.version_label(),
        memory_mb: record.memory_mb,
        ephemeral_mb: record.ephemeral_mb,
        timeout: Duration::from_secs(record.timeout_s.into()),
        runtime: record.runtime.clone(),
        handler: record.handler.clone(),
        environment: record.environment.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        log_group: record.log_group(),
        log_format: log_format(record),
        code_sha256_hex: record.code_sha256_hex.clone(),
        code_dir: store.code_dir(&record.code_sha256_hex),
        opt_dir: record.opt.hold().map(|_| store.code_dir(&record.opt_sha256_hex)),
        code_hold: holds(record),
        image: record.image.as_ref().map(|image| function_image(image, &record.image_config)),
        base: record.base.as_ref().filter(|_| record.image.is_none()).map(|base| function_base(base, &record.handler)),
        network: attachment(networks, account, record),
    };
    Target { function: Arc::new(function), region: region.to_string() }
}

/// `record`'s log format; a level it names that is not Lambda's (it never stores one) is INFO, Lambda's default.
fn log_format(record: &FunctionRecord) -> LogFormat {
    let Some(json) = &record.log_json else { return LogFormat::Text };
    let level = |name: &str| LogLevel::parse(name).unwrap_or(LogLevel::Info);
    LogFormat::Json { application: level(&json.application_level), system: level(&json.system_level) }
}

/// The attachment of `record` (of `account`) to the networks its `VpcConfig` names, with their ranges as `networks`
/// has them now. A network that is gone, or is no longer the account's, still counts as attached but allows nothing
/// (attaching was checked when the record was written; this only follows what changed since).
fn attachment(networks: &dyn Networks, account: &str, record: &FunctionRecord) -> Option<ignis_net::Attachment> {
    let vpc = record.vpc.as_ref()?;
    let found: Vec<(&str, Option<Arc<NetworkRecord>>)> =
        vpc.subnets.iter().map(|name| (name.as_str(), networks.get(name).filter(|n| n.account == account))).collect();
    ignis_net::Attachment::new(found.iter().map(|(name, network)| (*name, allows(network))))
}

/// The ranges `network` allows (none if it is missing).
fn allows(network: &Option<Arc<NetworkRecord>>) -> &[ignis_registry::networks::Ipv4Net] {
    network.as_deref().map_or(&[], |n| &n.allow)
}

/// What keeps `record`'s code tree and merged layers on disk while a sandbox uses them.
fn holds(record: &FunctionRecord) -> Option<Arc<dyn Send + Sync>> {
    match (record.code.hold(), record.opt.hold()) {
        (None, None) => None,
        (code, opt) => Some(Arc::new((code.cloned(), opt.cloned()))),
    }
}

/// What a sandbox of `image`, with the function's overrides, runs.
fn function_image(image: &ImageRecord, overrides: &ImageConfigOverride) -> FunctionImage {
    let (command, workdir) = image_launch(image, overrides);
    FunctionImage {
        prepared_id: image.prepared_id.clone(),
        manifest_digest: image.manifest_digest.clone(),
        repository: image.repository.clone(),
        command,
        workdir,
        env: image_env(&image.settings.env),
    }
}

/// What a sandbox of a zip function with `handler` on the runtime base `base` runs.
fn function_base(base: &RuntimeRecord, handler: &str) -> FunctionBase {
    let image = &base.image;
    FunctionBase {
        account: base.account.clone(),
        image: FunctionImage {
            prepared_id: image.prepared_id.clone(),
            manifest_digest: image.manifest_digest.clone(),
            repository: image.repository.clone(),
            command: base_launch(image, &base.name, handler),
            workdir: "/var/task".into(),
            env: image_env(&image.settings.env),
        },
    }
}

/// The command of a zip function with `handler` on the base `image` of runtime `runtime`: the base's ENTRYPOINT
/// (its CMD if it sets none), then the handler unless the runtime is a `provided` one (see the module docs).
pub fn base_launch(image: &ImageRecord, runtime: &str, handler: &str) -> Vec<String> {
    let settings = &image.settings;
    let mut command: Vec<String> = settings.entrypoint.clone().or_else(|| settings.cmd.clone()).unwrap_or_default();
    if !runtime.starts_with("provided") {
        command.push(handler.to_string());
    }
    command
}

/// The command (effective ENTRYPOINT, then effective CMD) and working
/// directory of `image` under the function's `ImageConfig` (see the module
/// docs); the working directory is `/` when nothing sets one.
pub fn image_launch(image: &ImageRecord, overrides: &ImageConfigOverride) -> (Vec<String>, String) {
    let settings = &image.settings;
    let entrypoint = overrides.entry_point.as_ref().or(settings.entrypoint.as_ref());
    let cmd = overrides.command.as_ref().or(settings.cmd.as_ref());
    let command = entrypoint.into_iter().chain(cmd).flatten().cloned().collect();
    let workdir = overrides
        .working_directory
        .as_ref()
        .or(settings.working_dir.as_ref())
        .filter(|w| !w.is_empty())
        .map_or_else(|| "/".to_string(), Clone::clone);
    (command, workdir)
}

/// An image's `NAME=value` entries as pairs, in order; an entry without `=`
/// names no variable and is left out.
pub fn image_env(entries: &[String]) -> Vec<(String, String)> {
    entries.iter().filter_map(|e| e.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The revision `record` is in `account`: what its sandboxes are kept (and retired) by.
pub fn revision(account: &str, record: &FunctionRecord) -> Revision {
    Revision { account: ignis_ids::AccountId::new(account), function: record.name.clone(), revision_id: record.revision_id.clone() }
}

/// Whether `record` runs revision `revision_id`: its `$LATEST`'s or a published version's.
pub fn runs(record: &FunctionRecord, revision_id: &str) -> bool {
    record.revision_id == revision_id || record.versions.iter().any(|version| version.revision_id == revision_id)
}

/// The revisions whose sandboxes nothing runs any more once `account`'s function changed from `old` to `new`
/// (`None`: deleted): `$LATEST`'s, if its revision changed, and each published version that is gone.
pub fn retired(account: &str, old: &FunctionRecord, new: Option<&FunctionRecord>) -> Vec<Revision> {
    let mut gone = Vec::new();
    if new.is_none_or(|new| new.revision_id != old.revision_id) {
        gone.push(revision(account, old));
    }
    for version in &old.versions {
        let kept = new.is_some_and(|new| new.versions.iter().any(|v| v.version == version.version && v.revision_id == version.revision_id));
        if !kept {
            gone.push(revision(account, version));
        }
    }
    gone
}

/// The ARN `record` was invoked by, with the qualifier it was invoked with.
pub fn invoked_arn(region: &str, account: &str, qualifier: Option<&str>, record: &FunctionRecord) -> String {
    match qualifier {
        Some(q) => format!("{}:{q}", record.arn(region, account)),
        None => record.arn(region, account),
    }
}

/// An X-Ray trace header for an invocation of `request_id` that came without
/// one, made at `now`.
pub fn trace_id(request_id: &str, now: SystemTime) -> String {
    let seconds = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let hex: String = request_id.chars().filter(char::is_ascii_hexdigit).collect();
    format!("Root=1-{seconds:08x}-{};Parent={};Sampled=0", &hex[..24.min(hex.len())], &hex[hex.len().saturating_sub(16)..])
}

#[cfg(test)]
mod tests {
    use ignis_registry::{BoxFuture, ImageSettings, NetworkError, VpcRecord};

    use super::*;

    #[test]
    fn a_change_retires_the_revisions_nothing_runs_any_more() {
        let mut old = FunctionRecord::new("f", "provided.al2023");
        old.revision_id = "r1".into();
        let mut v1 = old.clone();
        (v1.version, v1.revision_id) = (Some(1), "v1".into());
        let mut v2 = old.clone();
        (v2.version, v2.revision_id) = (Some(2), "v2".into());
        old.versions = vec![v1.clone(), v2.clone()];
        let ids = |revisions: Vec<Revision>| revisions.into_iter().map(|r| r.revision_id).collect::<Vec<_>>();
        assert_eq!(ids(retired("111111111111", &old, None)), ["r1", "v1", "v2"], "deleted: everything");
        assert!(retired("111111111111", &old, Some(&old)).is_empty(), "unchanged: nothing");
        let mut new = old.clone();
        new.revision_id = "r2".into();
        assert_eq!(ids(retired("111111111111", &old, Some(&new))), ["r1"], "$LATEST changed");
        new.versions = vec![v2];
        assert_eq!(ids(retired("111111111111", &old, Some(&new))), ["r1", "v1"], "a version deleted too");
        let mut aliased = old.clone();
        let alias = ignis_registry::AliasRecord {
            function_version: "1".into(),
            description: String::new(),
            weights: Default::default(),
            revision_id: "a1".into(),
        };
        aliased.aliases.insert("live".into(), alias);
        assert!(retired("111111111111", &old, Some(&aliased)).is_empty(), "an alias changes no revision");
        assert_eq!(retired("222222222222", &old, None)[0].account.as_str(), "222222222222");
        // What a change retires is what the new record no longer runs.
        for revision_id in ["r1", "r2", "v1", "v2", "a1"] {
            let gone = ids(retired("111111111111", &old, Some(&new))).contains(&revision_id.to_string());
            assert_eq!(runs(&old, revision_id) && !gone, runs(&new, revision_id) && runs(&old, revision_id), "{revision_id}");
        }
        assert!(runs(&new, "r2") && runs(&new, "v2") && !runs(&new, "v1") && !runs(&new, "a1"));
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// A list setting: the image's, the override, and what is in effect.
    type Case = (Option<Vec<String>>, Option<Vec<String>>, Vec<String>);

    /// Every combination of the image's ENTRYPOINT, CMD and WORKDIR (unset,
    /// set) with every override of each (none, empty, set).
    #[test]
    fn the_command_is_entrypoint_then_cmd_each_overridden_on_its_own() {
        let lists = |image: &[&str], given: &[&str]| -> Vec<Case> {
            let mut out = Vec::new();
            for image_value in [None, Some(strings(image))] {
                for (override_value, effective) in [
                    (None, image_value.clone().unwrap_or_default()),
                    (Some(Vec::new()), Vec::new()),
                    (Some(strings(given)), strings(given)),
                ] {
                    out.push((image_value.clone(), override_value, effective));
                }
            }
            out
        };
        for (image_entry, entry_point, entry) in lists(&["/entry", "-x"], &["/other"]) {
            for (image_cmd, command, cmd) in lists(&["serve"], &["run", "fast"]) {
                for (image_dir, dir_override, dir) in [
                    (None, None, "/"),
                    (Some("/srv"), None, "/srv"),
                    (None, Some("/work"), "/work"),
                    (Some("/srv"), Some("/work"), "/work"),
                    (Some("/srv"), Some(""), "/"),
                ] {
                    let image = ImageRecord {
                        image_uri: String::new(),
                        resolved_image_uri: String::new(),
                        repository: "app".into(),
                        manifest_digest: "sha256:00".into(),
                        settings: ImageSettings {
                            entrypoint: image_entry.clone(),
                            cmd: image_cmd.clone(),
                            env: Vec::new(),
                            working_dir: image_dir.map(str::to_string),
                        },
                        prepared_id: "p".into(),
                    };
                    let overrides = ImageConfigOverride {
                        entry_point: entry_point.clone(),
                        command: command.clone(),
                        working_directory: dir_override.map(str::to_string),
                    };
                    let expected: Vec<String> = entry.iter().chain(&cmd).cloned().collect();
                    assert_eq!(image_launch(&image, &overrides), (expected, dir.to_string()), "{image:?} {overrides:?}");
                }
            }
        }
    }

    /// Networks as a fixed list (writes are not for these tests).
    struct Fixed(Vec<NetworkRecord>);
    const NO_NETWORKS: Fixed = Fixed(Vec::new());

    impl Networks for Fixed {
        fn get(&self, name: &str) -> Option<Arc<NetworkRecord>> {
            self.0.iter().find(|n| n.name == name).cloned().map(Arc::new)
        }
        fn list(&self) -> Vec<Arc<NetworkRecord>> {
            self.0.iter().cloned().map(Arc::new).collect()
        }
        fn put(&self, _: NetworkRecord) -> BoxFuture<'_, Result<Arc<NetworkRecord>, NetworkError>> {
            Box::pin(async { Err(NetworkError::Storage("fixed".into())) })
        }
        fn delete<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Option<Arc<NetworkRecord>>, NetworkError>> {
            Box::pin(async { Err(NetworkError::Storage("fixed".into())) })
        }
    }

    /// A function attached to networks gets their names and the union of their ranges as they are now; a network
    /// gone (or given to another account) since allows nothing, and a function without `VpcConfig` has no network.
    #[test]
    fn targets_carry_the_networks_ranges_of_now() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let account = "111111111111";
        let net = |name: &str, account: &str, allow: &[&str]| NetworkRecord {
            name: name.into(),
            account: account.into(),
            allow: allow.iter().map(|a| a.parse().unwrap()).collect(),
            created_ms: 0,
        };
        let networks = Fixed(vec![
            net("db", account, &["10.1.0.0/16", "10.9.0.0/16"]),
            net("cache", account, &["10.2.0.0/16", "10.1.0.0/16"]),
            net("theirs", "222222222222", &["10.3.0.0/16"]),
        ]);
        let attached = |subnets: &[&str]| FunctionRecord {
            vpc: Some(VpcRecord { subnets: strings(subnets), security_groups: strings(&subnets[..1]) }),
            ..FunctionRecord::new("f", "provided.al2023")
        };
        let network =
            |record: &FunctionRecord| target(&store, &networks, "us-east-1", account, record).function.network.clone();
        assert_eq!(network(&FunctionRecord::new("f", "provided.al2023")), None);
        let both = network(&attached(&["db", "cache"])).unwrap();
        assert_eq!(both.networks, strings(&["cache", "db"]));
        let ranges: Vec<String> = both.allow.iter().map(ToString::to_string).collect();
        assert_eq!(ranges, strings(&["10.1.0.0/16", "10.2.0.0/16", "10.9.0.0/16"]));
        for gone in [&["gone"][..], &["theirs"]] {
            let got = network(&attached(gone)).unwrap();
            assert_eq!((got.networks, got.allow), (strings(gone), Vec::new()));
        }
    }

    /// An image function's target carries its image (a zip function's none).
    #[test]
    fn targets_of_image_functions_carry_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let zip = FunctionRecord::new("zip", "provided.al2023");
        assert!(target(&store, &NO_NETWORKS, "us-east-1", "111111111111", &zip).function.image.is_none());
        let image = ImageRecord {
            image_uri: "team/app:v1".into(),
            resolved_image_uri: "team/app@sha256:aa".into(),
            repository: "team/app".into(),
            manifest_digest: "sha256:aa".into(),
            settings: ImageSettings {
                entrypoint: Some(strings(&["/app"])),
                cmd: Some(strings(&["serve"])),
                env: strings(&["A=1"]),
                working_dir: None,
            },
            prepared_id: "prepared-1".into(),
        };
        let record = FunctionRecord {
            image: Some(image),
            image_config: ImageConfigOverride { command: Some(strings(&["run"])), ..ImageConfigOverride::default() },
            ..FunctionRecord::new("img", "")
        };
        let got = target(&store, &NO_NETWORKS, "us-east-1", "111111111111", &record).function.image.clone();
        assert_eq!(
            got,
            Some(FunctionImage {
                prepared_id: "prepared-1".into(),
                manifest_digest: "sha256:aa".into(),
                repository: "team/app".into(),
                command: strings(&["/app", "run"]),
                workdir: "/".into(),
                env: vec![("A".into(), "1".into())],
            })
        );
    }

    /// A function with layers gets its merged tree as `/opt`; one without, none.
    #[test]
    fn targets_carry_the_merged_layers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let plain = FunctionRecord::new("plain", "provided.al2023");
        assert_eq!(target(&store, &NO_NETWORKS, "us-east-1", "111111111111", &plain).function.opt_dir, None);
        let opt = "0f".repeat(32);
        let layered = FunctionRecord {
            opt_sha256_hex: opt.clone(),
            opt: ignis_registry::CodeRef::new(store.hold_code(&opt)),
            ..FunctionRecord::new("layered", "provided.al2023")
        };
        let function = target(&store, &NO_NETWORKS, "us-east-1", "111111111111", &layered).function;
        assert_eq!(function.opt_dir, Some(store.code_dir(&opt)));
        assert!(function.code_hold.is_some());
    }

    #[test]
    fn image_env_keeps_order_and_splits_at_the_first_equals() {
        let env = image_env(&strings(&["PATH=/bin:/usr/bin", "EMPTY=", "A=b=c", "NOVALUE", "PATH=/again"]));
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(pairs, [("PATH", "/bin:/usr/bin"), ("EMPTY", ""), ("A", "b=c"), ("PATH", "/again")]);
    }

    #[test]
    fn a_base_runs_its_entrypoint_with_the_handler_but_a_provided_ones_alone() {
        let base = |entrypoint: Option<&[&str]>, cmd: Option<&[&str]>| ImageRecord {
            image_uri: String::new(),
            resolved_image_uri: String::new(),
            repository: "runtimes/x".into(),
            manifest_digest: "sha256:ab".into(),
            settings: ImageSettings { entrypoint: entrypoint.map(strings), cmd: cmd.map(strings), ..ImageSettings::default() },
            prepared_id: String::new(),
        };
        let ours = base(Some(&["/var/runtime/bootstrap"]), None);
        assert_eq!(base_launch(&ours, "python3.11", "app.handler"), strings(&["/var/runtime/bootstrap", "app.handler"]));
        let provided = base(Some(&["/var/task/bootstrap"]), None);
        assert_eq!(base_launch(&provided, "provided.al2023", "bootstrap"), strings(&["/var/task/bootstrap"]));
        // An image of AWS's own: its entry point script takes the handler (its CMD, a placeholder, is not used).
        let aws = base(Some(&["/lambda-entrypoint.sh"]), Some(&["app.handler"]));
        assert_eq!(base_launch(&aws, "nodejs20.x", "index.handler"), strings(&["/lambda-entrypoint.sh", "index.handler"]));
        let cmd_only = base(None, Some(&["/var/runtime/bootstrap"]));
        assert_eq!(base_launch(&cmd_only, "python3.11", "a.b"), strings(&["/var/runtime/bootstrap", "a.b"]));
    }
}
