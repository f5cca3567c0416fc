//! The stored records: a function's `$LATEST` ([`FunctionRecord`]) carrying its
//! published versions, aliases ([`AliasRecord`]), provisioned-concurrency
//! settings ([`ProvisionedRecord`]), event invoke configs
//! ([`EventInvokeConfig`]) and function URLs ([`UrlRecord`]).
//!
//! Serde here is the storage format only (JSON, as in every data directory so
//! far: fields and defaults must stay readable). Lambda's wire shapes of these
//! records are the front end's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::RegistryError;
use crate::policy::Policy;

/// Lambda's default `MemorySize`, in MB.
pub const DEFAULT_MEMORY_MB: u32 = 128;
/// Lambda's default `Timeout`, in seconds.
pub const DEFAULT_TIMEOUT_S: u32 = 3;
/// Lambda's default `EphemeralStorage.Size`, in MB.
pub const DEFAULT_EPHEMERAL_MB: u32 = 512;

/// What storage keeps of a function: `$LATEST`, carrying its published
/// versions (immutable snapshots of the same shape) and its aliases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionRecord {
    pub name: String,
    pub runtime: String,
    pub role: String,
    pub handler: String,
    pub description: String,
    pub memory_mb: u32,
    pub timeout_s: u32,
    pub ephemeral_mb: u32,
    pub environment: BTreeMap<String, String>,
    pub architecture: String,
    /// Hex SHA-256 of the zip: names the unpacked code tree.
    pub code_sha256_hex: String,
    /// Base64 SHA-256 of the zip, Lambda's `CodeSha256`.
    pub code_sha256: String,
    pub code_size: u64,
    /// Milliseconds since the epoch.
    pub last_modified_ms: i64,
    /// Changes with every update; sandboxes of an older revision are not reused.
    pub revision_id: String,
    /// `ReservedConcurrentExecutions` (PutFunctionConcurrency), if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_concurrency: Option<u32>,
    /// The published version this record is; `None` for `$LATEST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// `$LATEST`'s published versions, oldest first (empty in a version).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<FunctionRecord>,
    /// `$LATEST`'s aliases by name (empty in a version).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aliases: BTreeMap<String, AliasRecord>,
    /// The highest version number ever published (numbers are not reused).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub last_version: u32,
    /// `$LATEST`'s provisioned concurrency, by qualifier (a version or an alias; empty in a version).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub provisioned: BTreeMap<String, ProvisionedRecord>,
    /// `DeadLetterConfig.TargetArn`: where events that fail every try go (a version keeps its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_target: Option<String>,
    /// `$LATEST`'s event invoke configs by qualifier (`$LATEST`, a version
    /// or an alias; empty in a version).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub event_invoke: BTreeMap<String, EventInvokeConfig>,
    /// `$LATEST`'s function URLs by qualifier (`$LATEST` or an alias; empty in a version).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub urls: BTreeMap<String, UrlRecord>,
    /// `PutFunctionRecursionConfig`'s `Allow`: a chain of destination records that reaches this function is not
    /// stopped at Lambda's limit (`false`: `Terminate`, the default). The function's, kept in `$LATEST`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recursion_allowed: bool,
    /// The container image of a function of package type `Image` (`None`:
    /// a zip function, whose code is the tree `code_sha256_hex` names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageRecord>,
    /// `ImageConfig`: the function's overrides of its image's settings
    /// (changed by UpdateFunctionConfiguration, kept by UpdateFunctionCode).
    #[serde(default, skip_serializing_if = "ImageConfigOverride::is_empty")]
    pub image_config: ImageConfigOverride,
    /// Total bytes of the unpacked code (0 in records stored before it was kept).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub code_unzipped_size: u64,
    /// `Layers`: the layer versions mounted at `/opt`, in order (empty: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerUse>,
    /// The merged tree of `layers` (`ignis_store::merged_name` of their trees;
    /// empty when there are none): what `/opt` is. It is a copy, so deleting a
    /// layer version never breaks the function.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub opt_sha256_hex: String,
    /// A zip function's runtime base: the installed runtime its `runtime` had when the code or configuration last
    /// changed (`None`: none was installed then, and it runs on the host's base).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<crate::RuntimeRecord>,
    /// Which life of the function this is: set by the registry when the function is created (random, never 0),
    /// kept by every later write and by its versions; a function deleted and created again has another (0: a
    /// record stored before incarnations were kept). Session credentials name it (`crate::sessions`).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub incarnation: u64,
    /// `VpcConfig`: the networks the function is attached to (`None`: none; a version keeps its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc: Option<VpcRecord>,
    /// `LoggingConfig.LogGroup`: the log group its logs go to (`None`: Lambda's `/aws/lambda/NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_group_name: Option<String>,
    /// `LoggingConfig`'s `LogFormat` `JSON` and its levels (`None`: `Text`, Lambda's default; a version keeps its
    /// own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_json: Option<JsonLogging>,
    /// `$LATEST`'s tags (TagResource, `Tags` of CreateFunction): the function's, not a version's (empty in a
    /// version); they go with the function when it is deleted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// `$LATEST`'s resource-based policies by qualifier (`crate::policy`: the unqualified function's under
    /// `policy::UNQUALIFIED`, a version's or an alias's under its own; empty in a version).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub policies: BTreeMap<String, Policy>,
    /// Keeps the code tree on disk while this record, or a clone of it (a
    /// running invocation's, a sandbox's), lives; set by the registry.
    #[serde(skip)]
    pub code: CodeRef,
    /// Keeps the merged `/opt` tree on disk as `code` keeps the code's.
    #[serde(skip)]
    pub opt: CodeRef,
}

/// One of a function's layers: Lambda's `Layer` (`Arn`, `CodeSize`) and the
/// unpacked size that counts against the function's limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerUse {
    /// The layer version's ARN.
    pub arn: String,
    /// The layer version's zip size.
    pub code_size: u64,
    pub unzipped_size: u64,
}

/// A function's JSON log format: its `ApplicationLogLevel` and `SystemLogLevel`, by Lambda's names (`INFO`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonLogging {
    pub application_level: String,
    pub system_level: String,
}

impl Default for JsonLogging {
    /// Lambda's levels of a function that names none: INFO both.
    fn default() -> JsonLogging {
        JsonLogging { application_level: "INFO".into(), system_level: "INFO".into() }
    }
}

/// A function's `VpcConfig`: the networks (`crate::networks`) it is attached to, named in `SubnetIds`, and those
/// named in `SecurityGroupIds` (each one of the former: a network is its own security group). Each list is in the
/// order given, each name once, and neither is empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VpcRecord {
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
}

/// Lambda's `PackageType`: how a function's code is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageType {
    Zip,
    Image,
}

impl PackageType {
    /// `Zip` or `Image`, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            PackageType::Zip => "Zip",
            PackageType::Image => "Image",
        }
    }
}

/// What a function of package type `Image` runs: the image as named, as
/// resolved (a tag is resolved to its digest once, when the code is set: a
/// later push to the tag does not change the function), the image's own
/// settings read then, and the prepared image the workers run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `ImageUri` as the caller gave it.
    pub image_uri: String,
    /// `ResolvedImageUri`: the same registry host, `repository@sha256:<hex>`.
    pub resolved_image_uri: String,
    /// The repository in Ignis's registry (of the function's account).
    pub repository: String,
    /// `sha256:<hex>` of the image manifest.
    pub manifest_digest: String,
    /// The image config's settings, read when the code was set.
    #[serde(default)]
    pub settings: ImageSettings,
    /// The prepared image's id (from the image preparer), what the invoke path runs.
    pub prepared_id: String,
}

/// What an image's config says about running it (absent: `None` or empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// `NAME=value` entries, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
}

/// Lambda's `ImageConfig`: each field given replaces the image's own setting
/// (`EntryPoint` its ENTRYPOINT, `Command` its CMD, `WorkingDirectory` its
/// WORKDIR).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfigOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_point: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
}

impl ImageConfigOverride {
    /// Whether it overrides nothing.
    pub fn is_empty(&self) -> bool {
        self.entry_point.is_none() && self.command.is_none() && self.working_directory.is_none()
    }
}

/// A record's hold of its code tree (not stored; records compare equal whatever it holds).
#[derive(Debug, Clone, Default)]
pub struct CodeRef(Option<ignis_store::CodeHold>);

impl CodeRef {
    pub fn new(hold: ignis_store::CodeHold) -> CodeRef {
        CodeRef(Some(hold))
    }

    /// Whether it holds the tree `sha256_hex`.
    pub fn holds(&self, sha256_hex: &str) -> bool {
        self.0.as_ref().is_some_and(|h| h.sha256_hex() == sha256_hex)
    }

    pub fn hold(&self) -> Option<&ignis_store::CodeHold> {
        self.0.as_ref()
    }
}

impl PartialEq for CodeRef {
    fn eq(&self, _: &CodeRef) -> bool {
        true
    }
}

/// PutProvisionedConcurrencyConfig's setting for one version or alias.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionedRecord {
    pub requested: u32,
    /// Milliseconds since the epoch.
    pub last_modified_ms: i64,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// What is stored of one event invoke config (`PutFunctionEventInvokeConfig`):
/// how asynchronous invocations of one qualifier are retried, how old they
/// may get, and where their records go.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventInvokeConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_s: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_success: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<String>,
    pub last_modified_ms: i64,
}

/// A function URL (`CreateFunctionUrlConfig`) of one qualifier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UrlRecord {
    /// The `<url-id>` of `<url-id>.lambda-url.<region>.<domain>`: 32 lowercase letters and digits, unique.
    pub url_id: String,
    /// `NONE` or `AWS_IAM`.
    pub auth_type: String,
    /// `BUFFERED` or `RESPONSE_STREAM`.
    pub invoke_mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsRecord>,
    /// Milliseconds since the epoch.
    pub created_ms: i64,
    pub last_modified_ms: i64,
}

/// A function URL's `Cors`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorsRecord {
    #[serde(default)]
    pub allow_credentials: bool,
    #[serde(default)]
    pub allow_headers: Vec<String>,
    #[serde(default)]
    pub allow_methods: Vec<String>,
    #[serde(default)]
    pub allow_origins: Vec<String>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u32>,
}

/// An alias: a name for a version, optionally sending a share of the
/// invocations to one other version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AliasRecord {
    pub function_version: String,
    pub description: String,
    /// Version → share of invocations (0..=1), at most one entry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub weights: BTreeMap<String, f64>,
    pub revision_id: String,
}

impl AliasRecord {
    /// Whether the alias sends any invocation to `version`.
    pub fn uses(&self, version: &str) -> bool {
        self.function_version == version || self.weights.contains_key(version)
    }

    /// The version an invocation goes to, given `random` in `0..1`.
    pub fn pick(&self, random: f64) -> &str {
        match self.weights.iter().next() {
            Some((other, weight)) if random < *weight => other,
            _ => &self.function_version,
        }
    }
}

impl FunctionRecord {
    /// A new function's `$LATEST` with Lambda's defaults (128 MB, 3 s, 512 MB
    /// of `/tmp`, handler `bootstrap`, `x86_64`), no code and no revision yet.
    pub fn new(name: impl Into<String>, runtime: impl Into<String>) -> FunctionRecord {
        FunctionRecord {
            name: name.into(),
            runtime: runtime.into(),
            role: String::new(),
            handler: "bootstrap".into(),
            description: String::new(),
            memory_mb: DEFAULT_MEMORY_MB,
            timeout_s: DEFAULT_TIMEOUT_S,
            ephemeral_mb: DEFAULT_EPHEMERAL_MB,
            environment: BTreeMap::new(),
            architecture: "x86_64".into(),
            code_sha256_hex: String::new(),
            code_sha256: String::new(),
            code_size: 0,
            last_modified_ms: 0,
            revision_id: String::new(),
            reserved_concurrency: None,
            version: None,
            versions: Vec::new(),
            aliases: BTreeMap::new(),
            last_version: 0,
            provisioned: BTreeMap::new(),
            dead_letter_target: None,
            event_invoke: BTreeMap::new(),
            urls: BTreeMap::new(),
            recursion_allowed: false,
            image: None,
            image_config: ImageConfigOverride::default(),
            code_unzipped_size: 0,
            layers: Vec::new(),
            opt_sha256_hex: String::new(),
            base: None,
            incarnation: 0,
            vpc: None,
            log_group_name: None,
            log_json: None,
            tags: BTreeMap::new(),
            policies: BTreeMap::new(),
            code: CodeRef::default(),
            opt: CodeRef::default(),
        }
    }

    /// `Image` for a function of a container image, else `Zip`.
    pub fn package_type(&self) -> PackageType {
        if self.image.is_some() { PackageType::Image } else { PackageType::Zip }
    }

    /// The unqualified ARN (`account` is the function's own).
    pub fn arn(&self, region: &str, account: &str) -> String {
        ignis_ids::arn::function(region, account, &self.name)
    }

    /// The ARN of this version (`:N`), or the unqualified one for `$LATEST`.
    pub fn version_arn(&self, region: &str, account: &str) -> String {
        match self.version {
            Some(n) => ignis_ids::arn::function_qualified(region, account, &self.name, &n.to_string()),
            None => self.arn(region, account),
        }
    }

    /// The ARN qualified by `qualifier` (a version or an alias).
    pub fn qualified_arn(&self, region: &str, account: &str, qualifier: &str) -> String {
        ignis_ids::arn::function_qualified(region, account, &self.name, qualifier)
    }

    /// Refuses a write whose caller expected another revision of this record
    /// (`RevisionId` in a request); `None` expects nothing.
    pub fn check_revision(&self, expected: Option<&str>) -> Result<(), RegistryError> {
        match expected {
            Some(r) if r != self.revision_id => Err(RegistryError::RevisionMismatch { expected: r.to_string() }),
            _ => Ok(()),
        }
    }

    /// `$LATEST` or the version's number.
    pub fn version_label(&self) -> String {
        self.version.map_or_else(|| "$LATEST".to_string(), |n| n.to_string())
    }

    /// A published version by its number (as text).
    pub fn find_version(&self, label: &str) -> Option<&FunctionRecord> {
        let n: u32 = label.parse().ok()?;
        self.versions.iter().find(|v| v.version == Some(n))
    }

    /// Whether `label` is `$LATEST` or a published version.
    pub fn has_version(&self, label: &str) -> bool {
        label == "$LATEST" || self.find_version(label).is_some()
    }

    /// This record with a runtime base for it and each of its versions that is a zip function stored without one (from
    /// before its runtime was installed), as `installed` has it by runtime name; `None` if no such one lacked a base.
    /// Nothing else changes (not the revision: the code and configuration are the same).
    pub fn with_bases(&self, installed: impl Fn(&str) -> Option<crate::RuntimeRecord>) -> Option<FunctionRecord> {
        let lacking = |r: &FunctionRecord| r.image.is_none() && r.base.is_none();
        let give = |r: &mut FunctionRecord| {
            if lacking(r)
                && let Some(base) = installed(&r.runtime)
            {
                r.base = Some(base);
                return true;
            }
            false
        };
        let mut record = self.clone();
        let mut given = give(&mut record);
        for version in &mut record.versions {
            given |= give(version);
        }
        given.then_some(record)
    }

    /// Whether a published version holds the same code and configuration as
    /// this `$LATEST` (its description aside, which publishing may override).
    pub fn same_as(&self, version: &FunctionRecord) -> bool {
        self.code_sha256_hex == version.code_sha256_hex
            && self.runtime == version.runtime
            && self.role == version.role
            && self.handler == version.handler
            && self.memory_mb == version.memory_mb
            && self.timeout_s == version.timeout_s
            && self.ephemeral_mb == version.ephemeral_mb
            && self.environment == version.environment
            && self.architecture == version.architecture
            && self.dead_letter_target == version.dead_letter_target
            && self.image == version.image
            && self.image_config == version.image_config
            && self.layers == version.layers
            && self.vpc == version.vpc
            && self.base.as_ref().map(|base| &base.image) == version.base.as_ref().map(|base| &base.image)
    }

    /// An immutable snapshot of this `$LATEST` as version `number`, with its
    /// own revision (its sandboxes are its own).
    pub fn snapshot(&self, number: u32, description: Option<String>, revision_id: String, now_ms: i64) -> FunctionRecord {
        FunctionRecord {
            description: description.unwrap_or_else(|| self.description.clone()),
            last_modified_ms: now_ms,
            revision_id,
            reserved_concurrency: None,
            version: Some(number),
            versions: Vec::new(),
            aliases: BTreeMap::new(),
            last_version: 0,
            provisioned: BTreeMap::new(),
            ..self.clone_config()
        }
    }

    /// This record without its versions, aliases and tags.
    fn clone_config(&self) -> FunctionRecord {
        FunctionRecord {
            name: self.name.clone(),
            runtime: self.runtime.clone(),
            role: self.role.clone(),
            handler: self.handler.clone(),
            description: self.description.clone(),
            memory_mb: self.memory_mb,
            timeout_s: self.timeout_s,
            ephemeral_mb: self.ephemeral_mb,
            environment: self.environment.clone(),
            architecture: self.architecture.clone(),
            code_sha256_hex: self.code_sha256_hex.clone(),
            code_sha256: self.code_sha256.clone(),
            code_size: self.code_size,
            last_modified_ms: self.last_modified_ms,
            revision_id: self.revision_id.clone(),
            reserved_concurrency: self.reserved_concurrency,
            version: self.version,
            versions: Vec::new(),
            aliases: BTreeMap::new(),
            last_version: self.last_version,
            provisioned: BTreeMap::new(),
            dead_letter_target: self.dead_letter_target.clone(),
            event_invoke: BTreeMap::new(),
            urls: BTreeMap::new(),
            recursion_allowed: false,
            image: self.image.clone(),
            image_config: self.image_config.clone(),
            code_unzipped_size: self.code_unzipped_size,
            layers: self.layers.clone(),
            opt_sha256_hex: self.opt_sha256_hex.clone(),
            base: self.base.clone(),
            incarnation: self.incarnation,
            vpc: self.vpc.clone(),
            log_group_name: self.log_group_name.clone(),
            log_json: self.log_json.clone(),
            tags: BTreeMap::new(),
            policies: BTreeMap::new(),
            code: self.code.clone(),
            opt: self.opt.clone(),
        }
    }

    /// The function's CloudWatch log group, `/aws/lambda/<name>`.
    /// The log group its logs go to: `LoggingConfig.LogGroup`, else Lambda's `/aws/lambda/NAME`.
    pub fn log_group(&self) -> String {
        self.log_group_name.clone().unwrap_or_else(|| format!("/aws/lambda/{}", self.name))
    }
}
