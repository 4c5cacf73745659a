//! Configuration: the pinned defaults, the global and project JSONC layers, how they merge, and their validation.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The largest config file baton will read, in bytes.
pub const MAX_CONFIG_BYTES: u64 = 1_000_000;

// ---------------------------------------------------------------------------
// Paths and layers
// ---------------------------------------------------------------------------

/// Where the two config files live.
#[derive(Debug, Clone)]
pub struct ConfigPaths {
    /// The global file; empty when neither an absolute XDG_CONFIG_HOME nor HOME is known (then there is no global layer).
    pub global: PathBuf,
    /// `<project_dir>/.baton/config.json`.
    pub project: PathBuf,
    /// The project directory the project file must stay inside.
    pub project_dir: PathBuf,
}

impl ConfigPaths {
    /// `xdg_config_home` and `home` are the values of XDG_CONFIG_HOME and HOME (None when unset); project file is `<project_dir>/.baton/config.json`.
    ///
    /// XDG_CONFIG_HOME is used only when absolute; otherwise `$HOME/.config` (HOME likewise only when absolute).
    pub fn resolve(project_dir: &Path, home: Option<&Path>, xdg_config_home: Option<&Path>) -> ConfigPaths {
        let config_home = match (absolute(xdg_config_home), absolute(home)) {
            (Some(xdg), _) => Some(xdg.to_path_buf()),
            (None, Some(home)) => Some(home.join(".config")),
            (None, None) => None,
        };
        let global = config_home.map(|dir| dir.join("baton").join("config.json")).unwrap_or_default();
        ConfigPaths {
            global,
            project: project_dir.join(".baton").join("config.json"),
            project_dir: project_dir.to_path_buf(),
        }
    }

    /// Same, reading HOME and XDG_CONFIG_HOME from the process environment.
    pub fn from_env(project_dir: &Path) -> ConfigPaths {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let xdg = std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from);
        Self::resolve(project_dir, home.as_deref(), xdg.as_deref())
    }
}

/// The path when it is set and absolute.
fn absolute(path: Option<&Path>) -> Option<&Path> {
    path.filter(|p| p.is_absolute())
}

/// Which layer a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layer {
    /// The built-in defaults.
    Default,
    /// The global (per-user) config file.
    Global(PathBuf),
    /// The project config file.
    Project(PathBuf),
}

impl Layer {
    /// "default" | "global" | "project".
    pub fn name(&self) -> &'static str {
        match self {
            Layer::Default => "default",
            Layer::Global(_) => "global",
            Layer::Project(_) => "project",
        }
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Layer::Default => f.write_str("default"),
            Layer::Global(p) | Layer::Project(p) => write!(f, "{} ({})", self.name(), p.display()),
        }
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Why configuration could not be loaded. Every message names the file or the key (and the layer it came from).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but could not be opened, inspected or read.
    #[error("cannot read config file {}: {source}", path.display())]
    Io {
        /// The file (or project directory) concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The path exists but is not a regular file.
    #[error(
        "config file {} is not a regular file: it is {kind}. Replace it with a JSON file, or remove it",
        path.display()
    )]
    NotAFile {
        /// The offending path.
        path: PathBuf,
        /// What it is instead: "a directory", "a FIFO (named pipe)"...
        kind: &'static str,
    },
    /// The file is larger than [`MAX_CONFIG_BYTES`].
    #[error("config file {} is too large ({size} bytes; the limit is {limit} bytes)", path.display())]
    TooLarge {
        /// The offending file.
        path: PathBuf,
        /// Its size (or the number of bytes read before giving up).
        size: u64,
        /// The limit, [`MAX_CONFIG_BYTES`].
        limit: u64,
    },
    /// The file is not valid JSONC.
    #[error("invalid JSON in config file {} at line {line}, column {column}: {message}", path.display())]
    Syntax {
        /// The offending file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column (in bytes).
        column: usize,
        /// What is wrong there.
        message: String,
    },
    /// The top level of the file is not a JSON object.
    #[error("config file {} must contain a JSON object at the top level, found {found}", path.display())]
    NotAnObject {
        /// The offending file.
        path: PathBuf,
        /// A description of what was found.
        found: String,
    },
    /// The project config resolves (through a symlink) outside the project directory.
    #[error(
        "refusing project config file {}: it resolves to {}, outside the project directory {}",
        path.display(), target.display(), project_dir.display()
    )]
    OutsideProject {
        /// The project config path.
        path: PathBuf,
        /// What it resolves to.
        target: PathBuf,
        /// The (canonical) project directory.
        project_dir: PathBuf,
    },
    /// A value has the wrong JSON type.
    #[error("invalid config: `{key}` (from {layer}) must be {expected}, found {found}")]
    Type {
        /// Dotted key path.
        key: String,
        /// The layer the bad value came from.
        layer: Layer,
        /// What was expected.
        expected: String,
        /// A description of what was found.
        found: String,
    },
    /// A value has the right type but is out of range or not allowed.
    #[error("invalid config: `{key}` (from {layer}) {message}")]
    Value {
        /// Dotted key path.
        key: String,
        /// The layer the bad value came from.
        layer: Layer,
        /// What is wrong, e.g. "must be at least 1, found 0".
        message: String,
    },
}

// ---------------------------------------------------------------------------
// Typed configuration: every key declared once
// ---------------------------------------------------------------------------

/// Declares the config sections, each key once. Every `pub struct` becomes a serde struct (camelCase
/// keys) with its `Default` and its list of keys; every field line is one key:
///
/// ```text
/// pub max_concurrency: u32 = 4, min(1);
/// ```
///
/// The JSON key is the field name in camelCase. The Rust type gives the shape a value must have
/// (`Declared`), `= literal` the pinned default, and the rules after it narrow the shape: `min(n)`
/// for integers, `one_of(&[..])` and `env_var()` for strings, `by_id()` for an array whose entries
/// merge by id (and have origins of their own). A field without a default is a section declared
/// here too, and takes that section's defaults. The structs, their defaults, `defaults_json`, and
/// `KEYS` (which validation, unknown-key reports and by-id merging walk) all come from these lines.
macro_rules! config_sections {
    (@default $ty:ty) => {
        section_defaults::<$ty>()
    };
    (@default $ty:ty, $default:expr) => {
        <$ty as Declared>::from_literal($default)
    };
    ($(
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[$field_meta:meta])*
                pub $field:ident: $ty:ty $(= $default:expr)? $(, $rule:ident($($arg:expr),*))*;
            )*
        }
    )*) => {$(
        $(#[$meta])*
        #[derive(Debug, Clone, Deserialize, Serialize)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            $($(#[$field_meta])* pub $field: $ty,)*
        }

        impl Default for $name {
            fn default() -> Self {
                $name { $($field: config_sections!(@default $ty $(, $default)?),)* }
            }
        }

        impl Section for $name {}

        impl Declared for $name {
            type Literal = Self;
            const SHAPE: Shape = Shape::Section;

            fn from_literal(literal: Self) -> Self {
                literal
            }

            fn declare_keys(path: &mut Vec<String>, keys: &mut Vec<Key>) {
                $(
                    path.push(camel_case(stringify!($field)));
                    keys.push(Key::new(path, Rules::<$ty>::new()$(.$rule($($arg),*))*.shape));
                    <$ty as Declared>::declare_keys(path, keys);
                    path.pop();
                )*
            }
        }
    )*};
}

config_sections! {
    /// The merged, typed configuration (serde, camelCase; every field always filled, because defaults are applied once after merging).
    pub struct Config {
        /// Path of the queue database, or a `postgres://` URL; `None` means the default location.
        pub database: Option<String> = None;
        /// This machine's node id on a PostgreSQL queue (`BATON_NODE` wins); `None`: the host name.
        pub node: Option<String> = None;
        /// Start a dispatcher automatically when work is submitted.
        pub auto_spawn: bool = true;
        /// Argv template for the worker command (validated elsewhere).
        pub runner: Value = serde_json::json!("opencode");
        /// Model aliases.
        pub models: BTreeMap<String, String> = BTreeMap::new();
        /// Profiles, merged by id (parsed elsewhere).
        pub profiles: Vec<Value> = Vec::new(), by_id();
        /// Worker names.
        pub workers: Vec<String> = Vec::new();
        /// Spawn and size limits.
        pub limits: Limits;
        /// Job timing and retries.
        pub jobs: JobsConfig;
        /// Dispatcher timing.
        pub dispatcher: DispatcherConfig;
        /// SQLite settings.
        pub storage: StorageConfig;
        /// Multi-step workflows.
        pub workflows: WorkflowsConfig;
        /// Pruning of finished jobs.
        pub retention: RetentionConfig;
        /// Security switches.
        pub security: SecurityConfig;
        /// Output settings.
        pub ui: UiConfig;
        /// A git worktree per task.
        pub worktrees: WorktreesConfig;
        /// Commands the dispatcher runs when tasks end.
        pub hooks: HooksConfig;
    }

    /// `limits`: spawn and size limits.
    pub struct Limits {
        /// Workers alive at once, overall.
        pub max_workers: u32 = 50, min(1);
        /// Workers alive at once per session.
        pub max_workers_per_session: u32 = 10, min(1);
        /// Minimum time between spawns.
        pub spawn_rate_limit_ms: u64 = 1000;
        /// Jobs running at once.
        pub max_concurrency: u32 = 4, min(1);
        /// Longest task text.
        pub max_task_chars: u64 = 100_000, min(1);
        /// Attachments per task.
        pub max_attachments: u32 = 10;
        /// Total base64 characters of attachments.
        pub max_base64_chars: u64 = 10_000_000;
    }

    /// `jobs`: job timing and retries.
    pub struct JobsConfig {
        /// Default job timeout.
        pub timeout_ms: i64 = 600_000, min(1);
        /// Largest timeout a task may ask for.
        pub max_timeout_ms: i64 = 3_600_000, min(1);
        /// Attempts per job, including the first.
        pub max_attempts: u32 = 3, min(1);
        /// Delay before a retry.
        pub retry_backoff_ms: u64 = 5000;
        /// Retry jobs that failed (not only those that crashed).
        pub retry_on_failure: bool = false;
        /// Grace between SIGTERM and SIGKILL.
        pub kill_grace_ms: u64 = 2000;
        /// Kill leftover processes of a finished job.
        pub kill_stragglers: bool = true;
        /// A job without output for this long counts as stalled.
        pub stall_ms: u64 = 300_000;
        /// Activity events kept per job (the oldest go first).
        pub max_events: u32 = 2000, min(1);
        /// Bytes of event text and payload kept per job (the oldest go first).
        pub max_event_bytes: u64 = 1_048_576, min(1024);
    }

    /// `dispatcher`: dispatcher timing.
    pub struct DispatcherConfig {
        /// Exit after being idle this long.
        pub idle_exit_ms: u64 = 300_000;
        /// Grace for running jobs at shutdown.
        pub shutdown_grace_ms: u64 = 30_000;
        /// Heartbeat interval.
        pub heartbeat_ms: u64 = 1000, min(1);
        /// A dispatcher silent this long is stale.
        pub stale_ms: u64 = 15_000, min(1);
    }

    /// `storage`: SQLite settings.
    pub struct StorageConfig {
        /// `PRAGMA synchronous`: "normal" | "full".
        pub synchronous: String = "normal", one_of(&["normal", "full"]);
        /// How long a write waits for another process's write lock before it fails, in ms.
        pub busy_timeout_ms: u64 = 30_000, min(1);
    }

    /// `workflows`: multi-step workflows.
    pub struct WorkflowsConfig {
        /// Whether workflows may run.
        pub enabled: bool = true;
        /// Workflow limits.
        pub limits: WorkflowLimits;
        /// Workflow definitions, merged by id (parsed elsewhere).
        pub definitions: Vec<Value> = Vec::new(), by_id();
    }

    /// `workflows.limits`.
    pub struct WorkflowLimits {
        /// Steps per workflow.
        pub max_steps: u32 = 4;
        /// Longest step task text.
        pub max_task_chars: u64 = 12_000, min(1);
        /// Longest text carried from one step to the next.
        pub max_carry_chars: u64 = 24_000, min(15);
        /// Timeout per step.
        pub per_step_timeout_ms: i64 = 600_000, min(1);
    }

    /// `retention`: pruning of finished jobs.
    pub struct RetentionConfig {
        /// Finished jobs kept.
        pub max_jobs: u64 = 200;
        /// Finished jobs older than this are pruned.
        pub max_age_ms: u64 = 86_400_000;
        /// Finished jobs younger than this are never pruned.
        pub min_age_ms: u64 = 600_000;
        /// How often pruning runs.
        pub interval_ms: u64 = 600_000, min(1);
    }

    /// `security`: security switches.
    pub struct SecurityConfig {
        /// Refuse to start tasks from inside a worker.
        pub prevent_recursive_spawn: bool = true;
        /// Environment variable marking a worker process.
        pub recursive_spawn_env_var: String = "BATON_WORKER", env_var();
        /// Keep sessions from seeing each other's jobs.
        pub session_isolation: bool = false;
        /// Hosts workers may reach.
        pub allow_hosts: Vec<String> = Vec::new();
    }

    /// `worktrees`: a git worktree per task (`isolation: "worktree"` on a profile, a task or a workflow).
    pub struct WorktreesConfig {
        /// Where worktrees go (relative to the project, outside its tracked tree); `None`: `.baton/worktrees`.
        pub dir: Option<String> = None;
        /// Commit what a worker leaves uncommitted to its task branch when it ends.
        pub auto_commit: bool = true;
        /// A command (argv) run in each new worktree before the agent, for profiles that set none.
        pub setup: Vec<String> = Vec::new();
    }

    /// `hooks`: commands the dispatcher runs when tasks end, outside the queue's transactions.
    pub struct HooksConfig {
        /// Argv run once per finished task or workflow run, with `{taskId}`, `{status}`,
        /// `{exitCode}`, `{profile}`, `{label.KEY}`, `{logPath}`, `{durationMs}` filled in and
        /// the task's JSON record on stdin; empty: no hook.
        pub on_finish: Vec<String> = Vec::new(), template();
        /// A hook still running after this long is killed (its process group).
        pub timeout_ms: u64 = 30_000, min(1);
        /// Hooks running at once.
        pub max_concurrent: u32 = 4, min(1);
    }

    /// `ui`: output settings.
    pub struct UiConfig {
        /// "markdown" | "json".
        pub default_list_format: String = "markdown", one_of(&["markdown", "json"]);
        /// Longest response printed.
        pub max_response_chars: u64 = 16_000, min(1);
    }
}

/// The defaults as JSON.
pub fn defaults_json() -> Value {
    // Serializing plain structs with string-keyed maps cannot fail.
    serde_json::to_value(Config::default()).unwrap_or_else(|_| Value::Object(Map::new()))
}

/// Every known key, each section before its keys, in declaration order.
static KEYS: LazyLock<Vec<Key>> = LazyLock::new(|| {
    let mut keys = Vec::new();
    Config::declare_keys(&mut Vec::new(), &mut keys);
    keys
});

/// The declared key at `path`.
fn declared<S: AsRef<str>>(path: &[S]) -> Option<&'static Key> {
    KEYS.iter().find(|key| key.path.len() == path.len() && key.path.iter().zip(path).all(|(a, b)| a == b.as_ref()))
}

/// One declared key.
struct Key {
    /// Its place in the JSON, e.g. `["workflows", "limits", "maxSteps"]`.
    path: Vec<String>,
    /// The same, dotted, as messages name it.
    name: String,
    /// What its values must look like.
    shape: Shape,
}

impl Key {
    fn new(path: &[String], shape: Shape) -> Key {
        Key { path: path.to_vec(), name: path.join("."), shape }
    }
}

/// What a key's value must look like.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// An object of further keys.
    Section,
    /// Anything (checked where it is used).
    Any,
    Bool,
    Str,
    /// A string or null.
    OptStr,
    /// An array of strings.
    StrList,
    /// An object of strings, with keys of the user's choosing.
    StrMap,
    /// An array (its entries are checked where they are used).
    List,
    /// An array whose entries merge by id across layers.
    ById,
    /// A whole number from `min` to `max`, both included.
    Int {
        min: i64,
        max: i64,
    },
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// An environment variable name.
    EnvVar,
    /// An argv template (`crate::hook`): strings whose placeholders are known.
    Template,
}

/// A type a key can have: the shape of its values, and how its default is written.
trait Declared: Sized {
    /// What the default is written as in a declaration (a `&str` for a `String`).
    type Literal;
    /// The shape of every value of this type, before a declaration's rules narrow it.
    const SHAPE: Shape;
    fn from_literal(literal: Self::Literal) -> Self;
    /// A section adds its keys below `path`; other types have none.
    fn declare_keys(_path: &mut Vec<String>, _keys: &mut Vec<Key>) {}
}

/// A struct of keys declared by `config_sections!`. Only a field of such a type may omit its default.
trait Section: Default {}

fn section_defaults<S: Section>() -> S {
    S::default()
}

/// [`Declared`] for types whose default is written as a value of the type itself.
macro_rules! declared_as_itself {
    ($($ty:ty => $shape:expr;)*) => {$(
        impl Declared for $ty {
            type Literal = Self;
            const SHAPE: Shape = $shape;

            fn from_literal(literal: Self) -> Self {
                literal
            }
        }
    )*};
}

declared_as_itself! {
    bool => Shape::Bool;
    u32 => int::<u32>();
    u64 => int::<u64>();
    i64 => int::<i64>();
    Value => Shape::Any;
    Vec<String> => Shape::StrList;
    Vec<Value> => Shape::List;
    BTreeMap<String, String> => Shape::StrMap;
}

impl Declared for String {
    type Literal = &'static str;
    const SHAPE: Shape = Shape::Str;

    fn from_literal(literal: &'static str) -> Self {
        literal.to_string()
    }
}

impl Declared for Option<String> {
    type Literal = Option<&'static str>;
    const SHAPE: Shape = Shape::OptStr;

    fn from_literal(literal: Option<&'static str>) -> Self {
        literal.map(str::to_string)
    }
}

/// The integer types a key can have, with the values a key of each type accepts.
trait Integer {
    const MIN: i64;
    const MAX: i64;
}

impl Integer for u32 {
    const MIN: i64 = 0;
    const MAX: i64 = u32::MAX as i64;
}

impl Integer for u64 {
    const MIN: i64 = 0;
    // Other modules bind these values to SQLite and compute with them as i64, so they must fit.
    const MAX: i64 = i64::MAX;
}

impl Integer for i64 {
    const MIN: i64 = i64::MIN;
    const MAX: i64 = i64::MAX;
}

const fn int<T: Integer>() -> Shape {
    Shape::Int { min: T::MIN, max: T::MAX }
}

/// One key's shape as its declaration narrows it. Each rule exists only for the types it fits,
/// so a rule on the wrong type does not compile.
struct Rules<T> {
    shape: Shape,
    of: PhantomData<T>,
}

impl<T: Declared> Rules<T> {
    fn new() -> Self {
        Rules { shape: T::SHAPE, of: PhantomData }
    }
}

impl<T: Integer> Rules<T> {
    /// Refuse values below `min`.
    fn min(self, min: i64) -> Self {
        Rules { shape: Shape::Int { min, max: T::MAX }, ..self }
    }
}

impl Rules<String> {
    /// Allow only these values.
    fn one_of(self, allowed: &'static [&'static str]) -> Self {
        Rules { shape: Shape::OneOf(allowed), ..self }
    }

    /// Require a non-empty environment variable name without '='.
    fn env_var(self) -> Self {
        Rules { shape: Shape::EnvVar, ..self }
    }
}

impl Rules<Vec<String>> {
    /// Require known placeholders in each argument (`crate::hook::check`).
    fn template(self) -> Self {
        Rules { shape: Shape::Template, ..self }
    }
}

impl Rules<Vec<Value>> {
    /// Merge entries by id across layers (each entry then has its own origin) instead of replacing the array.
    fn by_id(self) -> Self {
        Rules { shape: Shape::ById, ..self }
    }
}

/// `max_base64_chars` -> `maxBase64Chars`, the names `#[serde(rename_all = "camelCase")]` gives fields.
fn camel_case(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        match c {
            '_' => upper = true,
            c if upper => {
                out.push(c.to_ascii_uppercase());
                upper = false;
            }
            c => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------

/// Result of loading.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The typed configuration.
    pub config: Config,
    /// Merged JSON with defaults applied (what `config show` prints), unknown keys included.
    pub merged: Value,
    /// Dotted path of every leaf value in `merged` -> the layer it came from. Arrays other than
    /// `profiles`/`workflows.definitions` are one leaf, as are empty objects and empty by-id arrays;
    /// by-id entries without a string id appear as `profiles[<index>]` / `workflows.definitions[<index>]`.
    pub origins: BTreeMap<String, Layer>,
    /// Lowercased profile id -> last layer that defined or merged it.
    pub profile_origins: BTreeMap<String, Layer>,
    /// Lowercased workflow definition id -> last layer that defined or merged it.
    pub workflow_origins: BTreeMap<String, Layer>,
    /// Sorted dotted paths of keys baton does not know (entries of profiles/definitions are not checked).
    pub unknown_keys: Vec<String>,
    /// Where the files were looked for.
    pub paths: ConfigPaths,
}

/// Load defaults -> global -> project.
///
/// A missing file is an absent layer; a file that exists but cannot be read or parsed is an error.
/// An empty `paths.global` means there is no global layer.
pub fn load(paths: &ConfigPaths) -> Result<LoadedConfig, ConfigError> {
    let mut layers: Vec<(Layer, Value)> = Vec::new();
    if !paths.global.as_os_str().is_empty()
        && let Some(value) = read_layer(&paths.global)?
    {
        layers.push((Layer::Global(paths.global.clone()), value));
    }
    if let Some(value) = read_project_layer(&paths.project, &paths.project_dir)? {
        layers.push((Layer::Project(paths.project.clone()), value));
    }
    build(&layers, paths)
}

/// Merge the layers, apply defaults, record origins, validate and convert.
fn build(layers: &[(Layer, Value)], paths: &ConfigPaths) -> Result<LoadedConfig, ConfigError> {
    let mut partial = Value::Object(Map::new());
    for (_, value) in layers {
        merge(&mut partial, value);
    }
    let defaults = defaults_json();
    let mut merged = defaults.clone();
    merge(&mut merged, &partial);

    let mut origins = BTreeMap::new();
    for (path, _) in leaves(&merged) {
        origins.insert(path.join("."), origin_of(&path, layers));
    }
    let profile_origins = entry_origins(&merged, &defaults, layers, &["profiles"], &mut origins);
    let workflow_origins = entry_origins(&merged, &defaults, layers, &["workflows", "definitions"], &mut origins);

    let mut unknown_keys = Vec::new();
    collect_unknown(&merged, &mut Vec::new(), &mut unknown_keys);
    unknown_keys.sort();

    validate(&merged, layers)?;
    let config = serde_json::from_value(merged.clone()).map_err(|e| ConfigError::Value {
        key: "(config)".to_string(),
        layer: Layer::Default,
        message: format!("could not be converted: {e}"),
    })?;
    Ok(LoadedConfig { config, merged, origins, profile_origins, workflow_origins, unknown_keys, paths: paths.clone() })
}

/// Read the project layer, refusing a file that resolves outside the project directory.
fn read_project_layer(path: &Path, project_dir: &Path) -> Result<Option<Value>, ConfigError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path, e)),
        Ok(_) => {}
    }
    let target = std::fs::canonicalize(path).map_err(|e| io_error(path, e))?;
    let dir = std::fs::canonicalize(project_dir).map_err(|e| io_error(project_dir, e))?;
    if !target.starts_with(&dir) {
        return Err(ConfigError::OutsideProject { path: path.to_path_buf(), target, project_dir: dir });
    }
    read_layer_from(&target, path)
}

/// Read one layer file (following symlinks); `Ok(None)` when it does not exist.
fn read_layer(path: &Path) -> Result<Option<Value>, ConfigError> {
    read_layer_from(path, path)
}

/// Open `open_path` once, check its size on the handle and read at most limit+1 bytes; errors name `shown`.
///
/// The open does not block (`O_NONBLOCK`: opening a FIFO for reading would wait for a writer
/// forever), and the file is checked on the open descriptor, so what is read is what was checked.
fn read_layer_from(open_path: &Path, shown: &Path) -> Result<Option<Value>, ConfigError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = match std::fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_NONBLOCK).open(open_path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(shown, e)),
        Ok(file) => file,
    };
    let bytes = read_limited(file, shown)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let (line, column) = line_column(e.as_bytes(), valid);
        ConfigError::Syntax { path: shown.to_path_buf(), line, column, message: "invalid UTF-8".to_string() }
    })?;
    parse_layer(&text, shown).map(Some)
}

/// The whole content of `file`, refusing a non-regular file or one over [`MAX_CONFIG_BYTES`].
fn read_limited(file: File, shown: &Path) -> Result<Vec<u8>, ConfigError> {
    let meta = file.metadata().map_err(|e| io_error(shown, e))?;
    if !meta.is_file() {
        return Err(ConfigError::NotAFile {
            path: shown.to_path_buf(),
            kind: crate::error::file_kind(meta.file_type()),
        });
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(too_large(shown, meta.len()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes).map_err(|e| io_error(shown, e))?;
    let read = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if read > MAX_CONFIG_BYTES {
        return Err(too_large(shown, read));
    }
    Ok(bytes)
}

fn too_large(path: &Path, size: u64) -> ConfigError {
    ConfigError::TooLarge { path: path.to_path_buf(), size, limit: MAX_CONFIG_BYTES }
}

fn io_error(path: &Path, source: io::Error) -> ConfigError {
    ConfigError::Io { path: path.to_path_buf(), source }
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

/// Parse one layer from JSONC text (used by load; `origin` names the file in errors).
///
/// `//` and `/* */` comments and trailing commas are accepted; positions in errors refer to the original text.
pub fn parse_layer(text: &str, origin: &Path) -> Result<Value, ConfigError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut bytes = strip_comments(text.as_bytes()).map_err(|(offset, message)| {
        let (line, column) = line_column(text.as_bytes(), offset);
        ConfigError::Syntax { path: origin.to_path_buf(), line, column, message: message.to_string() }
    })?;
    strip_trailing_commas(&mut bytes);
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| ConfigError::Syntax {
        path: origin.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: serde_message(&e),
    })?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(ConfigError::NotAnObject { path: origin.to_path_buf(), found: describe(&value) })
    }
}

/// serde_json's message without its trailing " at line L column C".
fn serde_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    match full.rfind(" at line ") {
        Some(at) => full[..at].to_string(),
        None => full,
    }
}

/// Blank out comments with json_comments, keeping every byte offset and every line break in place.
///
/// On error returns the byte offset of the problem and a description.
fn strip_comments(input: &[u8]) -> Result<Vec<u8>, (usize, &'static str)> {
    let mut out = Vec::with_capacity(input.len());
    let stripped = json_comments::CommentSettings::c_style().strip_comments(input).read_to_end(&mut out);
    if stripped.is_err() {
        return Err(locate_comment_error(input));
    }
    // Block comments are blanked including their line breaks; put those back so lines stay right.
    for (o, i) in out.iter_mut().zip(input) {
        if matches!(*i, b'\n' | b'\r') {
            *o = *i;
        }
    }
    Ok(out)
}

/// Find where comment stripping fails by feeding the stripper one byte at a time.
fn locate_comment_error(input: &[u8]) -> (usize, &'static str) {
    let mut reader = json_comments::CommentSettings::c_style().strip_comments(input);
    let mut byte = [0u8; 1];
    let mut offset = 0;
    loop {
        match reader.read(&mut byte) {
            Ok(0) => return (offset, "unterminated comment"),
            Ok(_) => offset += 1,
            // The failing byte follows a lone '/': point at the '/'.
            Err(_) if offset < input.len() => {
                return (offset.saturating_sub(1), "unexpected '/' (comments start with // or /*)");
            }
            Err(_) => return (offset, "unterminated block comment"),
        }
    }
}

/// Replace with a space every comma (outside strings) that is followed only by whitespace and then `}` or `]`.
///
/// A comma right after `[`, `{` or another comma is left for the JSON parser to reject.
fn strip_trailing_commas(bytes: &mut [u8]) {
    let mut in_string = false;
    let mut escaped = false;
    let mut last: Option<u8> = None;
    for i in 0..bytes.len() {
        let b = bytes[i];
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                last = Some(b);
            }
            b' ' | b'\t' | b'\n' | b'\r' => {}
            b',' if closes_after(bytes, i + 1) && !matches!(last, None | Some(b'[' | b'{' | b',')) => {
                bytes[i] = b' ';
            }
            _ => last = Some(b),
        }
    }
}

/// Whether the first non-whitespace byte at or after `from` is `}` or `]`.
fn closes_after(bytes: &[u8], from: usize) -> bool {
    bytes
        .get(from..)
        .unwrap_or_default()
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .is_some_and(|b| matches!(b, b'}' | b']'))
}

/// 1-based line and column (in bytes) of `offset` in `bytes`.
fn line_column(bytes: &[u8], offset: usize) -> (usize, usize) {
    let before = bytes.get(..offset).unwrap_or(bytes);
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let line_start = before.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
    (line, before.len() - line_start + 1)
}

/// A short description of a JSON value for error messages.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) if s.chars().count() > 40 => {
            let head: String = s.chars().take(40).collect();
            format!("string {:?}...", head)
        }
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "an array".to_string(),
        Value::Object(_) => "an object".to_string(),
    }
}

// ---------------------------------------------------------------------------
// Merging
// ---------------------------------------------------------------------------

/// Merge `layer` over `base` with the rules above (partial, by-id arrays).
///
/// Objects merge recursively; `profiles` and `workflows.definitions` merge by id (case-insensitive);
/// scalars and other arrays replace.
pub fn merge(base: &mut Value, layer: &Value) {
    merge_at(base, layer, &mut Vec::new());
}

fn merge_at(base: &mut Value, layer: &Value, path: &mut Vec<String>) {
    match layer {
        Value::Object(entries) => {
            if !base.is_object() {
                *base = Value::Object(Map::new());
            }
            if let Value::Object(base_map) = base {
                for (key, value) in entries {
                    path.push(key.clone());
                    let slot = base_map.entry(key.clone()).or_insert(Value::Null);
                    merge_at(slot, value, path);
                    path.pop();
                }
            }
        }
        Value::Array(items) if is_by_id(path) => {
            if !base.is_array() {
                *base = Value::Array(Vec::new());
            }
            if let Value::Array(base_items) = base {
                merge_entries(base_items, items);
            }
        }
        other => *base = other.clone(),
    }
}

/// Whether `path` is one of the arrays merged by id.
fn is_by_id<S: AsRef<str>>(path: &[S]) -> bool {
    declared(path).is_some_and(|key| matches!(key.shape, Shape::ById))
}

/// Merge `layer` entries into `base` by id; returns the indices in `base` each layer entry went to.
fn merge_entries(base: &mut Vec<Value>, layer: &[Value]) -> Vec<usize> {
    let mut touched = Vec::with_capacity(layer.len());
    for entry in layer {
        let found = entry_id(entry).and_then(|id| {
            base.iter().position(|b| entry_id(b).is_some_and(|bid| bid.to_lowercase() == id.to_lowercase()))
        });
        match found {
            Some(index) => {
                // Inside an entry nothing is merged by id, so the path only needs to be non-matching.
                merge_at(&mut base[index], entry, &mut vec!["#entry".to_string()]);
                touched.push(index);
            }
            None => {
                base.push(entry.clone());
                touched.push(base.len() - 1);
            }
        }
    }
    touched
}

/// The string `id` of a by-id entry.
fn entry_id(entry: &Value) -> Option<&str> {
    entry.get("id").and_then(Value::as_str)
}

// ---------------------------------------------------------------------------
// Origins, unknown keys
// ---------------------------------------------------------------------------

/// Every leaf of `value` with its path. Empty objects and non-by-id arrays are leaves;
/// non-empty by-id arrays are left out (their entries are tracked separately).
fn leaves(value: &Value) -> Vec<(Vec<String>, &Value)> {
    let mut out = Vec::new();
    collect_leaves(value, &mut Vec::new(), &mut out);
    out
}

fn collect_leaves<'a>(value: &'a Value, path: &mut Vec<String>, out: &mut Vec<(Vec<String>, &'a Value)>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                path.push(key.clone());
                collect_leaves(child, path, out);
                path.pop();
            }
        }
        Value::Array(items) if !items.is_empty() && is_by_id(path) => {}
        _ => out.push((path.clone(), value)),
    }
}

/// The value at `path` inside `value`, walking objects.
fn get_path<'a, S: AsRef<str>>(value: &'a Value, path: &[S]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.as_object()?.get(key.as_ref()))
}

/// The last layer that sets `path` (or the defaults).
fn origin_of<S: AsRef<str>>(path: &[S], layers: &[(Layer, Value)]) -> Layer {
    layers
        .iter()
        .rev()
        .find(|(_, value)| get_path(value, path).is_some())
        .map_or(Layer::Default, |(layer, _)| layer.clone())
}

/// Replay the by-id merge of the array at `path` to find each merged entry's last layer.
///
/// Returns lowercased id -> layer; entries without a string id go into `origins` as `<path>[<index>]`.
fn entry_origins(
    merged: &Value,
    defaults: &Value,
    layers: &[(Layer, Value)],
    path: &[&str],
    origins: &mut BTreeMap<String, Layer>,
) -> BTreeMap<String, Layer> {
    let mut replay: Vec<Value> = get_path(defaults, path).and_then(Value::as_array).cloned().unwrap_or_default();
    let mut tags = vec![Layer::Default; replay.len()];
    for (layer, value) in layers {
        match get_path(value, path) {
            Some(Value::Array(items)) => {
                for index in merge_entries(&mut replay, items) {
                    match tags.get_mut(index) {
                        Some(tag) => *tag = layer.clone(),
                        None => tags.push(layer.clone()),
                    }
                }
            }
            Some(_) => {
                replay.clear();
                tags.clear();
            }
            None => {}
        }
    }
    let mut by_id = BTreeMap::new();
    let entries = get_path(merged, path).and_then(Value::as_array);
    for (index, entry) in entries.into_iter().flatten().enumerate() {
        let layer = tags.get(index).cloned().unwrap_or(Layer::Default);
        match entry_id(entry) {
            Some(id) => {
                by_id.insert(id.to_lowercase(), layer);
            }
            None => {
                origins.insert(format!("{}[{index}]", path.join(".")), layer);
            }
        }
    }
    by_id
}

/// Keys of `value` that are not declared. Only sections are descended into; maps like `models`
/// and all arrays are free-form.
fn collect_unknown(value: &Value, path: &mut Vec<String>, out: &mut Vec<String>) {
    let Value::Object(map) = value else {
        return;
    };
    for (key, child) in map {
        path.push(key.clone());
        match declared(path) {
            None => out.push(path.join(".")),
            Some(known) if matches!(known.shape, Shape::Section) => collect_unknown(child, path, out),
            Some(_) => {}
        }
        path.pop();
    }
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

/// Check every known key's type and range, then the cross-key rules.
fn validate(merged: &Value, layers: &[(Layer, Value)]) -> Result<(), ConfigError> {
    for key in KEYS.iter() {
        if let Some(value) = get_path(merged, &key.path) {
            check_shape(key.shape, value).map_err(|problem| problem.into_error(key, layers))?;
        }
    }
    check_relations(merged, layers)
}

/// What is wrong with one value, before the layer is known.
struct Problem {
    /// Extra path below the key (e.g. `[2]` or `.fast`).
    suffix: String,
    kind: ProblemKind,
}

enum ProblemKind {
    Type { expected: String, found: String },
    Value(String),
}

impl Problem {
    fn wrong_type(expected: impl Into<String>, found: &Value) -> Self {
        Problem { suffix: String::new(), kind: ProblemKind::Type { expected: expected.into(), found: describe(found) } }
    }

    fn bad_value(message: String) -> Self {
        Problem { suffix: String::new(), kind: ProblemKind::Value(message) }
    }

    fn at(mut self, suffix: String) -> Self {
        self.suffix = suffix;
        self
    }

    fn into_error(self, at: &Key, layers: &[(Layer, Value)]) -> ConfigError {
        let mut full = at.path.clone();
        // Map entries are real keys, so the layer can be found for them precisely.
        if let Some(entry) = self.suffix.strip_prefix('.') {
            full.push(entry.to_string());
        }
        let layer = origin_of(&full, layers);
        let key = format!("{}{}", at.name, self.suffix);
        match self.kind {
            ProblemKind::Type { expected, found } => ConfigError::Type { key, layer, expected, found },
            ProblemKind::Value(message) => ConfigError::Value { key, layer, message },
        }
    }
}

fn check_shape(shape: Shape, value: &Value) -> Result<(), Problem> {
    match shape {
        Shape::Any => Ok(()),
        Shape::Section => require(value.is_object(), "an object", value),
        Shape::List | Shape::ById => require(value.is_array(), "an array", value),
        Shape::Bool => require(value.is_boolean(), "true or false", value),
        Shape::Str => require(value.is_string(), "a string", value),
        Shape::OptStr => require(value.is_string() || value.is_null(), "a string or null", value),
        Shape::StrList => check_str_list(value),
        Shape::StrMap => check_str_map(value),
        Shape::Int { min, max } => check_int(min, max, value),
        Shape::OneOf(allowed) => check_one_of(allowed, value),
        Shape::EnvVar => check_env_var(value),
        Shape::Template => check_template(value),
    }
}

fn require(ok: bool, expected: &str, value: &Value) -> Result<(), Problem> {
    if ok { Ok(()) } else { Err(Problem::wrong_type(expected, value)) }
}

fn check_str_list(value: &Value) -> Result<(), Problem> {
    let items = value.as_array().ok_or_else(|| Problem::wrong_type("an array of strings", value))?;
    match items.iter().position(|item| !item.is_string()) {
        Some(index) => Err(Problem::wrong_type("a string", &items[index]).at(format!("[{index}]"))),
        None => Ok(()),
    }
}

fn check_template(value: &Value) -> Result<(), Problem> {
    check_str_list(value)?;
    let items = value.as_array().into_iter().flatten().filter_map(Value::as_str);
    for (index, item) in items.enumerate() {
        crate::hook::check(item).map_err(|e| Problem::bad_value(e).at(format!("[{index}]")))?;
    }
    Ok(())
}

fn check_str_map(value: &Value) -> Result<(), Problem> {
    let map = value.as_object().ok_or_else(|| Problem::wrong_type("an object of strings", value))?;
    match map.iter().find(|(_, v)| !v.is_string()) {
        Some((name, v)) => Err(Problem::wrong_type("a string", v).at(format!(".{name}"))),
        None => Ok(()),
    }
}

/// A whole number from `min` to `max`. JSON numbers have no limit: one too large for any integer
/// arrives as a float and is out of range too; any other float is not a whole number.
fn check_int(min: i64, max: i64, value: &Value) -> Result<(), Problem> {
    let not_whole = || Problem::wrong_type("a whole number", value);
    let Value::Number(number) = value else {
        return Err(not_whole());
    };
    let in_range = match number.as_i64().map(i128::from).or_else(|| number.as_u64().map(i128::from)) {
        Some(n) => (i128::from(min)..=i128::from(max)).contains(&n),
        // A float this large is always whole, and beyond the range of every key.
        None if number.as_f64().is_some_and(|f| f.abs() >= 2f64.powi(63)) => false,
        None => return Err(not_whole()),
    };
    if in_range { Ok(()) } else { Err(Problem::bad_value(format!("must be between {min} and {max}, found {number}"))) }
}

fn check_one_of(allowed: &[&str], value: &Value) -> Result<(), Problem> {
    let quoted: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
    let expected = format!("one of {}", quoted.join(", "));
    match value.as_str() {
        Some(s) if allowed.contains(&s) => Ok(()),
        Some(_) => Err(Problem::bad_value(format!("must be {expected}, found {}", describe(value)))),
        None => Err(Problem::wrong_type(expected, value)),
    }
}

fn check_env_var(value: &Value) -> Result<(), Problem> {
    let name = value.as_str().ok_or_else(|| Problem::wrong_type("a string", value))?;
    if name.is_empty() || name.contains(['=', '\0']) {
        return Err(Problem::bad_value(format!(
            "must be a non-empty environment variable name without '=', found {}",
            describe(value)
        )));
    }
    Ok(())
}

/// Rules between keys: a default timeout within the maximum, and stale detection slower than the heartbeat.
fn check_relations(merged: &Value, layers: &[(Layer, Value)]) -> Result<(), ConfigError> {
    check_order(merged, layers, &["jobs", "timeoutMs"], &["jobs", "maxTimeoutMs"], false)?;
    check_order(merged, layers, &["dispatcher", "heartbeatMs"], &["dispatcher", "staleMs"], true)
}

/// Require `small <= large` (or `<` when `strict`); the error names `small` and mentions `large` with its layer.
fn check_order(
    merged: &Value,
    layers: &[(Layer, Value)],
    small: &[&str],
    large: &[&str],
    strict: bool,
) -> Result<(), ConfigError> {
    let int = |path: &[&str]| get_path(merged, path).and_then(Value::as_i64);
    let (Some(a), Some(b)) = (int(small), int(large)) else {
        return Ok(());
    };
    if (strict && a < b) || (!strict && a <= b) {
        return Ok(());
    }
    let relation = if strict { "less than" } else { "at most" };
    Err(ConfigError::Value {
        key: small.join("."),
        layer: origin_of(small, layers),
        message: format!("must be {relation} {} ({b}, from {}), found {a}", large.join("."), origin_of(large, layers)),
    })
}

// ---------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------

/// Human rendering for `baton config show`: one line per leaf, `key = <json value>  # <layer>`, sorted by key,
/// profiles as `profiles.<id> = {...}  # <layer>` (workflow definitions likewise as `workflows.definitions.<id>`).
pub fn render_with_origins(loaded: &LoadedConfig) -> String {
    let mut lines: Vec<(String, String, String)> = Vec::new();
    for (path, value) in leaves(&loaded.merged) {
        let key = path.join(".");
        let layer = loaded.origins.get(&key).map_or_else(|| "default".to_string(), Layer::to_string);
        lines.push((key, compact(value), layer));
    }
    render_entries(loaded, &["profiles"], &loaded.profile_origins, &mut lines);
    render_entries(loaded, &["workflows", "definitions"], &loaded.workflow_origins, &mut lines);
    lines.sort();
    lines.into_iter().map(|(key, value, layer)| format!("{key} = {value}  # {layer}\n")).collect()
}

/// Lines for the entries of a by-id array.
fn render_entries(
    loaded: &LoadedConfig,
    path: &[&str],
    by_id: &BTreeMap<String, Layer>,
    lines: &mut Vec<(String, String, String)>,
) {
    let Some(entries) = get_path(&loaded.merged, path).and_then(Value::as_array) else {
        return;
    };
    let prefix = path.join(".");
    for (index, entry) in entries.iter().enumerate() {
        let (key, layer) = match entry_id(entry) {
            Some(id) => (format!("{prefix}.{id}"), by_id.get(&id.to_lowercase())),
            None => {
                let key = format!("{prefix}[{index}]");
                let layer = loaded.origins.get(&key);
                (key, layer)
            }
        };
        let layer = layer.map_or_else(|| "default".to_string(), Layer::to_string);
        lines.push((key, compact(entry), layer));
    }
}

fn compact(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use tempfile::TempDir;

    /// A home directory and a project directory, each in its own temp dir.
    struct Fixture {
        home: TempDir,
        project: TempDir,
    }

    impl Fixture {
        fn new() -> Self {
            Fixture { home: TempDir::new().unwrap(), project: TempDir::new().unwrap() }
        }

        fn paths(&self) -> ConfigPaths {
            ConfigPaths::resolve(self.project.path(), Some(self.home.path()), None)
        }

        fn write_global(&self, text: &str) -> PathBuf {
            write(&self.paths().global, text)
        }

        fn write_project(&self, text: &str) -> PathBuf {
            write(&self.paths().project, text)
        }

        fn load(&self) -> Result<LoadedConfig, ConfigError> {
            load(&self.paths())
        }
    }

    fn write(path: &Path, text: &str) -> PathBuf {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
        path.to_path_buf()
    }

    fn layer_name(loaded: &LoadedConfig, key: &str) -> &'static str {
        loaded.origins.get(key).map(Layer::name).unwrap_or("<missing>")
    }

    #[test]
    fn defaults_only() {
        let fx = Fixture::new();
        let loaded = fx.load().unwrap();
        let c = &loaded.config;
        assert_eq!(c.database, None);
        assert!(c.auto_spawn);
        assert_eq!(c.runner, serde_json::json!("opencode"));
        assert!(c.models.is_empty() && c.profiles.is_empty() && c.workers.is_empty());
        let l = &c.limits;
        assert_eq!(
            (l.max_workers, l.max_workers_per_session, l.spawn_rate_limit_ms, l.max_concurrency),
            (50, 10, 1000, 4)
        );
        assert_eq!((l.max_task_chars, l.max_attachments, l.max_base64_chars), (100_000, 10, 10_000_000));
        let j = &c.jobs;
        assert_eq!((j.timeout_ms, j.max_timeout_ms, j.max_attempts, j.retry_backoff_ms), (600_000, 3_600_000, 3, 5000));
        assert!(!j.retry_on_failure && j.kill_stragglers);
        assert_eq!((j.kill_grace_ms, j.stall_ms), (2000, 300_000));
        let d = &c.dispatcher;
        assert_eq!((d.idle_exit_ms, d.shutdown_grace_ms, d.heartbeat_ms, d.stale_ms), (300_000, 30_000, 1000, 15_000));
        assert_eq!((c.storage.synchronous.as_str(), c.storage.busy_timeout_ms), ("normal", 30_000));
        let w = &c.workflows;
        assert!(w.enabled && w.definitions.is_empty());
        assert_eq!(
            (w.limits.max_steps, w.limits.max_task_chars, w.limits.max_carry_chars, w.limits.per_step_timeout_ms),
            (4, 12_000, 24_000, 600_000)
        );
        let r = &c.retention;
        assert_eq!((r.max_jobs, r.max_age_ms, r.min_age_ms, r.interval_ms), (200, 86_400_000, 600_000, 600_000));
        let s = &c.security;
        assert!(s.prevent_recursive_spawn && !s.session_isolation && s.allow_hosts.is_empty());
        assert_eq!(s.recursive_spawn_env_var, "BATON_WORKER");
        assert_eq!(c.ui.default_list_format, "markdown");
        assert_eq!(c.ui.max_response_chars, 16_000);

        assert_eq!(loaded.merged, defaults_json());
        assert!(loaded.origins.values().all(|l| *l == Layer::Default));
        assert_eq!(layer_name(&loaded, "limits.maxConcurrency"), "default");
        assert_eq!(layer_name(&loaded, "runner"), "default");
        assert_eq!(layer_name(&loaded, "database"), "default");
        assert!(loaded.unknown_keys.is_empty());
        // The defaults JSON uses the pinned camelCase keys.
        let dj = defaults_json();
        assert_eq!(dj["limits"]["maxWorkersPerSession"], 10);
        assert_eq!(dj["security"]["recursiveSpawnEnvVar"], "BATON_WORKER");
        assert_eq!(dj["workflows"]["limits"]["perStepTimeoutMs"], 600_000);
        assert_eq!(dj["database"], Value::Null);
    }

    #[test]
    fn partial_merge_keeps_global_values() {
        let fx = Fixture::new();
        fx.write_global(r#"{"limits": {"maxConcurrency": 2}, "jobs": {"killGraceMs": 100}}"#);
        fx.write_project(r#"{"jobs": {"timeoutMs": 5000}}"#);
        let loaded = fx.load().unwrap();
        assert_eq!(loaded.config.limits.max_concurrency, 2);
        assert_eq!(loaded.config.jobs.kill_grace_ms, 100);
        assert_eq!(loaded.config.jobs.timeout_ms, 5000);
        assert_eq!(loaded.config.jobs.max_attempts, 3);
        assert_eq!(layer_name(&loaded, "limits.maxConcurrency"), "global");
        assert_eq!(layer_name(&loaded, "jobs.killGraceMs"), "global");
        assert_eq!(layer_name(&loaded, "jobs.timeoutMs"), "project");
        assert_eq!(layer_name(&loaded, "jobs.maxAttempts"), "default");
        assert_eq!(loaded.origins["jobs.timeoutMs"], Layer::Project(fx.paths().project));
    }

    #[test]
    fn profiles_merge_by_id_and_other_arrays_replace() {
        let fx = Fixture::new();
        fx.write_global(
            r#"{
                "runner": ["claude", "-p", "{prompt}"],
                "workers": ["a", "b"],
                "models": {"fast": "m1", "smart": "m2"},
                "profiles": [
                    {"id": "Fast", "model": "m1", "opts": {"temp": 1, "keep": true}},
                    {"id": "slow", "model": "m2"},
                    {"name": "no id"}
                ],
                "workflows": {"definitions": [{"id": "review", "steps": ["a"]}]}
            }"#,
        );
        fx.write_project(
            r#"{
                "runner": ["codex", "{prompt}"],
                "models": {"fast": "m3"},
                "profiles": [
                    {"id": "fast", "opts": {"temp": 2}},
                    {"id": "new", "model": "m4"},
                    {"id": 7}
                ],
                "workflows": {"definitions": [{"id": "REVIEW", "steps": ["b", "c"]}]}
            }"#,
        );
        let loaded = fx.load().unwrap();
        let c = &loaded.config;
        assert_eq!(c.runner, serde_json::json!(["codex", "{prompt}"]));
        assert_eq!(c.workers, vec!["a", "b"]);
        assert_eq!(c.models["fast"], "m3");
        assert_eq!(c.models["smart"], "m2");
        assert_eq!(layer_name(&loaded, "models.fast"), "project");
        assert_eq!(layer_name(&loaded, "models.smart"), "global");
        assert_eq!(layer_name(&loaded, "runner"), "project");
        assert_eq!(layer_name(&loaded, "workers"), "global");

        assert_eq!(c.profiles.len(), 5);
        assert_eq!(c.profiles[0], serde_json::json!({"id": "fast", "model": "m1", "opts": {"temp": 2, "keep": true}}));
        assert_eq!(c.profiles[1]["id"], "slow");
        assert_eq!(c.profiles[2]["name"], "no id");
        assert_eq!(c.profiles[3]["id"], "new");
        assert_eq!(c.profiles[4]["id"], 7);
        assert_eq!(loaded.profile_origins["fast"].name(), "project");
        assert_eq!(loaded.profile_origins["slow"].name(), "global");
        assert_eq!(loaded.profile_origins["new"].name(), "project");
        assert_eq!(layer_name(&loaded, "profiles[2]"), "global");
        assert_eq!(layer_name(&loaded, "profiles[4]"), "project");

        assert_eq!(c.workflows.definitions.len(), 1);
        assert_eq!(c.workflows.definitions[0]["steps"], serde_json::json!(["b", "c"]));
        assert_eq!(loaded.workflow_origins["review"].name(), "project");

        let shown = render_with_origins(&loaded);
        assert!(shown.contains("profiles.fast = {"), "{shown}");
        assert!(shown.contains(r#"models.smart = "m2"  # global ("#), "{shown}");
        assert!(shown.contains("workflows.definitions.REVIEW = {"), "{shown}");
        assert!(shown.contains("limits.maxConcurrency = 4  # default\n"), "{shown}");
        let keys: Vec<&str> = shown.lines().map(|l| l.split(" = ").next().unwrap()).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn merge_is_partial_and_recursive() {
        let mut base = serde_json::json!({"a": {"b": 1, "c": [1, 2]}, "d": "x"});
        merge(&mut base, &serde_json::json!({"a": {"c": [3]}, "e": null}));
        assert_eq!(base, serde_json::json!({"a": {"b": 1, "c": [3]}, "d": "x", "e": null}));
    }

    #[test]
    fn jsonc_comments_and_trailing_commas() {
        let fx = Fixture::new();
        fx.write_project(
            "// leading comment\n{\n  /* block\n     comment */\n  \"limits\": {\n    \"maxConcurrency\": 3, // three\n  },\n  \"workers\": [\"a\", \"b\",],\n  \"database\": \"/x//y/*z*/\",\n}\n",
        );
        let loaded = fx.load().unwrap();
        assert_eq!(loaded.config.limits.max_concurrency, 3);
        assert_eq!(loaded.config.workers, vec!["a", "b"]);
        assert_eq!(loaded.config.database.as_deref(), Some("/x//y/*z*/"));
    }

    #[test]
    fn trailing_comma_inside_string_is_kept() {
        let v = parse_layer(r#"{"a": ",]", "b": [1,],}"#, Path::new("t.json")).unwrap();
        assert_eq!(v, serde_json::json!({"a": ",]", "b": [1]}));
        // A lone comma is not a trailing comma.
        assert!(parse_layer(r#"{"b": [,]}"#, Path::new("t.json")).is_err());
    }

    #[test]
    fn invalid_file_names_path_line_and_column() {
        let fx = Fixture::new();
        // The missing ":" is noticed at the "1" on line 5, column 9 (after a multi-line block comment).
        let path = fx.write_project("{\n  /* a\n     b */\n  \"jobs\": {\n    \"x\" 12\n  }\n}\n");
        let err = fx.load().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        match err {
            ConfigError::Syntax { line, column, .. } => assert_eq!((line, column), (5, 9), "{msg}"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(msg.contains("line 5, column 9"), "{msg}");
    }

    #[test]
    fn bad_comment_is_located() {
        let err = parse_layer("{\n  \"a\": 1 / 2\n}", Path::new("/p/c.json")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/p/c.json") && msg.contains("line 2, column 10"), "{msg}");
        let err = parse_layer("{\n /* open", Path::new("/p/c.json")).unwrap_err();
        assert!(err.to_string().contains("unterminated"), "{err}");
    }

    #[test]
    fn top_level_must_be_an_object() {
        let fx = Fixture::new();
        let path = fx.write_global("[1, 2]");
        let msg = fx.load().unwrap_err().to_string();
        assert!(msg.contains(&path.display().to_string()) && msg.contains("JSON object"), "{msg}");
    }

    #[test]
    fn oversize_file_refused() {
        let fx = Fixture::new();
        let mut text = String::from("{");
        text.push_str(&" ".repeat(999_999));
        text.push('}');
        assert_eq!(text.len(), 1_000_001);
        let path = fx.write_global(&text);
        let msg = fx.load().unwrap_err().to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("1000000"), "{msg}");
        // Exactly the limit is fine.
        text.truncate(999_999);
        text.push('}');
        fx.write_global(&text);
        assert!(fx.load().is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn project_symlink_must_stay_inside_project() {
        use std::os::unix::fs::symlink;
        let fx = Fixture::new();
        let outside = TempDir::new().unwrap();
        let target = write(&outside.path().join("evil.json"), r#"{"limits": {"maxConcurrency": 9}}"#);
        let project_file = fx.paths().project;
        fs::create_dir_all(project_file.parent().unwrap()).unwrap();
        symlink(&target, &project_file).unwrap();
        let msg = fx.load().unwrap_err().to_string();
        assert!(msg.contains("outside the project directory"), "{msg}");
        assert!(msg.contains(&project_file.display().to_string()), "{msg}");

        fs::remove_file(&project_file).unwrap();
        let inside = write(&fx.project.path().join("shared.json"), r#"{"limits": {"maxConcurrency": 7}}"#);
        symlink(&inside, &project_file).unwrap();
        assert_eq!(fx.load().unwrap().config.limits.max_concurrency, 7);

        // The global layer may point anywhere.
        let global = fx.paths().global;
        fs::create_dir_all(global.parent().unwrap()).unwrap();
        symlink(&target, &global).unwrap();
        let loaded = fx.load().unwrap();
        assert_eq!(loaded.config.limits.max_concurrency, 7);
        assert_eq!(layer_name(&loaded, "limits.maxConcurrency"), "project");
    }

    #[test]
    fn wrong_type_names_key_and_file() {
        let fx = Fixture::new();
        let path = fx.write_project(r#"{"limits": {"maxConcurrency": "four"}}"#);
        let err = fx.load().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("limits.maxConcurrency"), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(matches!(err, ConfigError::Type { .. }), "{err:?}");

        fx.write_project(r#"{"workers": ["a", 3]}"#);
        assert!(fx.load().unwrap_err().to_string().contains("workers[1]"));
        fx.write_project(r#"{"models": {"fast": 1}}"#);
        assert!(fx.load().unwrap_err().to_string().contains("models.fast"));
        fx.write_project(r#"{"jobs": 5}"#);
        assert!(fx.load().unwrap_err().to_string().contains("`jobs`"));
        fx.write_project(r#"{"limits": {"maxWorkers": 4294967296}}"#);
        assert!(fx.load().unwrap_err().to_string().contains("limits.maxWorkers"));
    }

    #[test]
    fn bad_values_refused() {
        let fx = Fixture::new();
        let path = fx.write_global(r#"{"storage": {"synchronous": "off"}}"#);
        let msg = fx.load().unwrap_err().to_string();
        assert!(msg.contains("storage.synchronous") && msg.contains("\"off\""), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        fx.write_global(r#"{"storage": {"synchronous": "full"}}"#);
        assert_eq!(fx.load().unwrap().config.storage.synchronous, "full");

        for (text, key) in [
            (r#"{"limits": {"maxConcurrency": 0}}"#, "limits.maxConcurrency"),
            (r#"{"jobs": {"maxAttempts": 0}}"#, "jobs.maxAttempts"),
            (r#"{"workflows": {"limits": {"maxCarryChars": 14}}}"#, "workflows.limits.maxCarryChars"),
            (r#"{"ui": {"defaultListFormat": "yaml"}}"#, "ui.defaultListFormat"),
            (r#"{"dispatcher": {"heartbeatMs": 0}}"#, "dispatcher.heartbeatMs"),
            (r#"{"retention": {"intervalMs": -1}}"#, "retention.intervalMs"),
            (r#"{"jobs": {"timeoutMs": 1.5}}"#, "jobs.timeoutMs"),
            (r#"{"jobs": {"maxTimeoutMs": 1000}}"#, "jobs.timeoutMs"),
            (r#"{"security": {"recursiveSpawnEnvVar": ""}}"#, "security.recursiveSpawnEnvVar"),
        ] {
            fx.write_global(text);
            let msg = fx.load().unwrap_err().to_string();
            assert!(msg.contains(key), "{text}: {msg}");
        }
        fx.write_global(r#"{"workflows": {"limits": {"maxSteps": 0, "maxCarryChars": 15}}}"#);
        assert!(fx.load().is_ok());
    }

    #[test]
    fn out_of_range_numbers_name_key_value_and_range() {
        let fx = Fixture::new();
        let path = fx.write_global("{}");
        for (text, key, message) in [
            // A u64 beyond i64::MAX, which other modules would wrap to a negative i64.
            (
                r#"{"retention": {"maxAgeMs": 18446744073709551615}}"#,
                "retention.maxAgeMs",
                "must be between 0 and 9223372036854775807, found 18446744073709551615",
            ),
            (
                r#"{"jobs": {"stallMs": 9223372036854775808}}"#,
                "jobs.stallMs",
                "must be between 0 and 9223372036854775807, found 9223372036854775808",
            ),
            // Beyond u64 too: JSON reads it as a float.
            (
                r#"{"limits": {"maxBase64Chars": 100000000000000000000}}"#,
                "limits.maxBase64Chars",
                "must be between 0 and 9223372036854775807, found 1e+20",
            ),
            (
                r#"{"jobs": {"maxTimeoutMs": 9223372036854775808}}"#,
                "jobs.maxTimeoutMs",
                "must be between 1 and 9223372036854775807, found 9223372036854775808",
            ),
            (
                r#"{"limits": {"maxWorkers": 4294967296}}"#,
                "limits.maxWorkers",
                "must be between 1 and 4294967295, found 4294967296",
            ),
            // Negative for unsigned keys.
            (
                r#"{"jobs": {"killGraceMs": -5}}"#,
                "jobs.killGraceMs",
                "must be between 0 and 9223372036854775807, found -5",
            ),
            (
                r#"{"limits": {"maxAttachments": -1}}"#,
                "limits.maxAttachments",
                "must be between 0 and 4294967295, found -1",
            ),
            (
                r#"{"retention": {"maxJobs": -100000000000000000000}}"#,
                "retention.maxJobs",
                "must be between 0 and 9223372036854775807, found -1e+20",
            ),
            // Below a declared minimum.
            (
                r#"{"limits": {"maxConcurrency": 0}}"#,
                "limits.maxConcurrency",
                "must be between 1 and 4294967295, found 0",
            ),
            (
                r#"{"workflows": {"limits": {"maxCarryChars": 14}}}"#,
                "workflows.limits.maxCarryChars",
                "must be between 15 and 9223372036854775807, found 14",
            ),
        ] {
            fx.write_global(text);
            let err = fx.load().unwrap_err();
            let expected = format!("invalid config: `{key}` (from global ({})) {message}", path.display());
            assert_eq!(err.to_string(), expected, "{text}");
            assert!(matches!(&err, ConfigError::Value { key: k, layer: Layer::Global(_), .. } if k == key), "{err:?}");
        }

        // A fraction is still not a whole number, whatever its size.
        fx.write_global(r#"{"jobs": {"stallMs": 1.5}}"#);
        assert!(fx.load().unwrap_err().to_string().ends_with("must be a whole number, found number 1.5"));

        // The ends of each range load, and the largest u64 value survives a conversion to i64.
        fx.write_global(
            r#"{"retention": {"maxAgeMs": 9223372036854775807, "maxJobs": 0},
                "limits": {"maxWorkers": 4294967295, "maxConcurrency": 1}}"#,
        );
        let c = fx.load().unwrap().config;
        assert_eq!(i64::try_from(c.retention.max_age_ms), Ok(i64::MAX));
        assert_eq!((c.retention.max_jobs, c.limits.max_workers, c.limits.max_concurrency), (0, u32::MAX, 1));
    }

    /// Sets `value` at `path` inside `root`, creating objects on the way.
    fn set_path(root: &mut Value, path: &[String], value: Value) {
        let (last, parents) = path.split_last().unwrap();
        let mut at = root;
        for key in parents {
            at = at.as_object_mut().unwrap().entry(key.clone()).or_insert_with(|| Value::Object(Map::new()));
        }
        at.as_object_mut().unwrap().insert(last.clone(), value);
    }

    #[test]
    fn every_declared_key_round_trips_through_the_defaults() {
        let defaults = defaults_json();
        // Everything the defaults serialize is declared...
        for (path, _) in leaves(&defaults) {
            assert!(declared(&path).is_some(), "{} is in the defaults but not declared", path.join("."));
        }
        // ...and every declared key has a default that passes its own rules.
        let mut explicit = Value::Object(Map::new());
        for key in KEYS.iter() {
            let value = get_path(&defaults, &key.path).unwrap_or_else(|| panic!("{} has no default", key.name));
            assert!(check_shape(key.shape, value).is_ok(), "{}: the default {value} breaks its own rules", key.name);
            if !matches!(key.shape, Shape::Section) {
                set_path(&mut explicit, &key.path, value.clone());
            }
        }
        assert_eq!(explicit, defaults);

        // A file that sets every key to its default loads back identically, each key from that file.
        let fx = Fixture::new();
        let path = fx.write_project(&serde_json::to_string_pretty(&explicit).unwrap());
        let loaded = fx.load().unwrap();
        assert_eq!(loaded.merged, defaults);
        assert_eq!(serde_json::to_value(&loaded.config).unwrap(), defaults);
        assert!(loaded.unknown_keys.is_empty(), "{:?}", loaded.unknown_keys);
        for key in KEYS.iter().filter(|key| !matches!(key.shape, Shape::Section)) {
            assert_eq!(loaded.origins.get(&key.name), Some(&Layer::Project(path.clone())), "{}", key.name);
        }

        // Entries of by-id arrays have origin maps of their own in `LoadedConfig`, one per array.
        let by_id: Vec<&str> =
            KEYS.iter().filter(|key| matches!(key.shape, Shape::ById)).map(|key| key.name.as_str()).collect();
        assert_eq!(by_id, ["profiles", "workflows.definitions"]);
        // The keys the cross-key rules compare are declared integers.
        for name in ["jobs.timeoutMs", "jobs.maxTimeoutMs", "dispatcher.heartbeatMs", "dispatcher.staleMs"] {
            let path: Vec<&str> = name.split('.').collect();
            assert!(declared(&path).is_some_and(|key| matches!(key.shape, Shape::Int { .. })), "{name}");
        }
        assert_eq!(camel_case("max_base64_chars"), "maxBase64Chars");
    }

    #[test]
    fn unknown_keys_reported() {
        let fx = Fixture::new();
        fx.write_global(r#"{"limits": {"bogus": 1}, "models": {"anything": "x"}}"#);
        fx.write_project(r#"{"frobnicate": true, "profiles": [{"id": "a", "weird": 1}]}"#);
        let loaded = fx.load().unwrap();
        assert_eq!(loaded.unknown_keys, vec!["frobnicate", "limits.bogus"]);
        assert_eq!(loaded.merged["frobnicate"], true);
        assert_eq!(layer_name(&loaded, "frobnicate"), "project");
    }

    #[test]
    fn xdg_rules() {
        let project = Path::new("/proj");
        let home = Path::new("/home/u");
        let p = ConfigPaths::resolve(project, Some(home), Some(Path::new("relative/xdg")));
        assert_eq!(p.global, PathBuf::from("/home/u/.config/baton/config.json"));
        let p = ConfigPaths::resolve(project, Some(home), Some(Path::new("/xdg")));
        assert_eq!(p.global, PathBuf::from("/xdg/baton/config.json"));
        assert_eq!(p.project, PathBuf::from("/proj/.baton/config.json"));
        assert_eq!(p.project_dir, PathBuf::from("/proj"));
        let p = ConfigPaths::resolve(project, None, None);
        assert!(p.global.as_os_str().is_empty());
    }

    #[test]
    fn layer_display() {
        assert_eq!(Layer::Default.to_string(), "default");
        assert_eq!(Layer::Global(PathBuf::from("/g")).to_string(), "global (/g)");
        assert_eq!(Layer::Project(PathBuf::from("/p")).to_string(), "project (/p)");
        assert_eq!(Layer::Project(PathBuf::from("/p")).name(), "project");
    }

    #[test]
    fn directory_instead_of_file_is_an_error() {
        let fx = Fixture::new();
        fs::create_dir_all(&fx.paths().global).unwrap();
        let msg = fx.load().unwrap_err().to_string();
        assert!(msg.contains("not a regular file: it is a directory"), "{msg}");
    }

    #[test]
    fn fifo_instead_of_file_is_an_error_at_once() {
        let fx = Fixture::new();
        let project = fx.paths().project;
        fs::create_dir_all(project.parent().unwrap()).unwrap();
        nix::unistd::mkfifo(&project, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // Opening a FIFO without O_NONBLOCK would wait here for a writer that never comes.
        let msg = fx.load().unwrap_err().to_string();
        assert!(msg.contains(&project.display().to_string()) && msg.contains("a FIFO (named pipe)"), "{msg}");
    }
}
