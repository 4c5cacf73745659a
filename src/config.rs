//! Configuration: the pinned defaults, the global and project JSONC layers, how they merge, and their validation.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The largest config file baton will read, in bytes.
pub const MAX_CONFIG_BYTES: u64 = 1_000_000;

/// Dotted paths of the arrays that merge by `id` instead of being replaced.
const BY_ID_ARRAYS: [&[&str]; 2] = [&["profiles"], &["workflows", "definitions"]];

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
// Typed configuration
// ---------------------------------------------------------------------------

/// The merged, typed configuration (serde, camelCase; every field always filled, because defaults are applied once after merging).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    /// Path of the queue database; `None` means the default location.
    pub database: Option<String>,
    /// Start a dispatcher automatically when work is submitted.
    pub auto_spawn: bool,
    /// Argv template for the worker command (validated elsewhere).
    pub runner: Value,
    /// Model aliases.
    pub models: BTreeMap<String, String>,
    /// Profiles, merged by id (parsed elsewhere).
    pub profiles: Vec<Value>,
    /// Worker names.
    pub workers: Vec<String>,
    /// Spawn and size limits.
    pub limits: Limits,
    /// Job timing and retries.
    pub jobs: JobsConfig,
    /// Dispatcher timing.
    pub dispatcher: DispatcherConfig,
    /// SQLite settings.
    pub storage: StorageConfig,
    /// Multi-step workflows.
    pub workflows: WorkflowsConfig,
    /// Pruning of finished jobs.
    pub retention: RetentionConfig,
    /// Security switches.
    pub security: SecurityConfig,
    /// Output settings.
    pub ui: UiConfig,
}

/// `limits`: spawn and size limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Workers alive at once, overall.
    pub max_workers: u32,
    /// Workers alive at once per session.
    pub max_workers_per_session: u32,
    /// Minimum time between spawns.
    pub spawn_rate_limit_ms: u64,
    /// Jobs running at once.
    pub max_concurrency: u32,
    /// Longest task text.
    pub max_task_chars: u64,
    /// Attachments per task.
    pub max_attachments: u32,
    /// Total base64 characters of attachments.
    pub max_base64_chars: u64,
}

/// `jobs`: job timing and retries.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobsConfig {
    /// Default job timeout.
    pub timeout_ms: i64,
    /// Largest timeout a task may ask for.
    pub max_timeout_ms: i64,
    /// Attempts per job, including the first.
    pub max_attempts: u32,
    /// Delay before a retry.
    pub retry_backoff_ms: u64,
    /// Retry jobs that failed (not only those that crashed).
    pub retry_on_failure: bool,
    /// Grace between SIGTERM and SIGKILL.
    pub kill_grace_ms: u64,
    /// Kill leftover processes of a finished job.
    pub kill_stragglers: bool,
    /// A job without output for this long counts as stalled.
    pub stall_ms: u64,
}

/// `dispatcher`: dispatcher timing.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DispatcherConfig {
    /// Exit after being idle this long.
    pub idle_exit_ms: u64,
    /// Grace for running jobs at shutdown.
    pub shutdown_grace_ms: u64,
    /// Heartbeat interval.
    pub heartbeat_ms: u64,
    /// A dispatcher silent this long is stale.
    pub stale_ms: u64,
}

/// `storage`: SQLite settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageConfig {
    /// `PRAGMA synchronous`: "normal" | "full".
    pub synchronous: String,
    /// How long a write waits for another process's write lock before it fails, in ms.
    pub busy_timeout_ms: u64,
}

/// `workflows`: multi-step workflows.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowsConfig {
    /// Whether workflows may run.
    pub enabled: bool,
    /// Workflow limits.
    pub limits: WorkflowLimits,
    /// Workflow definitions, merged by id (parsed elsewhere).
    pub definitions: Vec<Value>,
}

/// `workflows.limits`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowLimits {
    /// Steps per workflow.
    pub max_steps: u32,
    /// Longest step task text.
    pub max_task_chars: u64,
    /// Longest text carried from one step to the next.
    pub max_carry_chars: u64,
    /// Timeout per step.
    pub per_step_timeout_ms: i64,
}

/// `retention`: pruning of finished jobs.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetentionConfig {
    /// Finished jobs kept.
    pub max_jobs: u64,
    /// Finished jobs older than this are pruned.
    pub max_age_ms: u64,
    /// Finished jobs younger than this are never pruned.
    pub min_age_ms: u64,
    /// How often pruning runs.
    pub interval_ms: u64,
}

/// `security`: security switches.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityConfig {
    /// Refuse to start tasks from inside a worker.
    pub prevent_recursive_spawn: bool,
    /// Environment variable marking a worker process.
    pub recursive_spawn_env_var: String,
    /// Keep sessions from seeing each other's jobs.
    pub session_isolation: bool,
    /// Hosts workers may reach.
    pub allow_hosts: Vec<String>,
}

/// `ui`: output settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UiConfig {
    /// "markdown" | "json".
    pub default_list_format: String,
    /// Longest response printed.
    pub max_response_chars: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database: None,
            auto_spawn: true,
            runner: serde_json::json!("opencode"),
            models: BTreeMap::new(),
            profiles: Vec::new(),
            workers: Vec::new(),
            limits: Limits::default(),
            jobs: JobsConfig::default(),
            dispatcher: DispatcherConfig::default(),
            storage: StorageConfig::default(),
            workflows: WorkflowsConfig::default(),
            retention: RetentionConfig::default(),
            security: SecurityConfig::default(),
            ui: UiConfig::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_workers: 50,
            max_workers_per_session: 10,
            spawn_rate_limit_ms: 1000,
            max_concurrency: 4,
            max_task_chars: 100_000,
            max_attachments: 10,
            max_base64_chars: 10_000_000,
        }
    }
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            timeout_ms: 600_000,
            max_timeout_ms: 3_600_000,
            max_attempts: 3,
            retry_backoff_ms: 5000,
            retry_on_failure: false,
            kill_grace_ms: 2000,
            kill_stragglers: true,
            stall_ms: 300_000,
        }
    }
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        DispatcherConfig { idle_exit_ms: 300_000, shutdown_grace_ms: 30_000, heartbeat_ms: 1000, stale_ms: 15_000 }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig { synchronous: "normal".to_string(), busy_timeout_ms: 30_000 }
    }
}

impl Default for WorkflowsConfig {
    fn default() -> Self {
        WorkflowsConfig { enabled: true, limits: WorkflowLimits::default(), definitions: Vec::new() }
    }
}

impl Default for WorkflowLimits {
    fn default() -> Self {
        WorkflowLimits { max_steps: 4, max_task_chars: 12_000, max_carry_chars: 24_000, per_step_timeout_ms: 600_000 }
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig { max_jobs: 200, max_age_ms: 86_400_000, min_age_ms: 600_000, interval_ms: 600_000 }
    }
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            prevent_recursive_spawn: true,
            recursive_spawn_env_var: "BATON_WORKER".to_string(),
            session_isolation: false,
            allow_hosts: Vec::new(),
        }
    }
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig { default_list_format: "markdown".to_string(), max_response_chars: 16_000 }
    }
}

/// The defaults as JSON.
pub fn defaults_json() -> Value {
    // Serializing plain structs with string-keyed maps cannot fail.
    serde_json::to_value(Config::default()).unwrap_or_else(|_| Value::Object(Map::new()))
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
    collect_unknown(&merged, &defaults, &mut Vec::new(), &mut unknown_keys);
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
    BY_ID_ARRAYS.iter().any(|by_id| by_id.len() == path.len() && by_id.iter().zip(path).all(|(a, b)| *a == b.as_ref()))
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

/// Keys of `value` not present in the defaults schema. Only non-empty schema objects (the config
/// sections) are descended into; maps like `models` and all arrays are free-form.
fn collect_unknown(value: &Value, schema: &Value, path: &mut Vec<String>, out: &mut Vec<String>) {
    let (Value::Object(map), Value::Object(known)) = (value, schema) else {
        return;
    };
    for (key, child) in map {
        path.push(key.clone());
        match known.get(key) {
            None => out.push(path.join(".")),
            Some(sub) if sub.as_object().is_some_and(|m| !m.is_empty()) => {
                collect_unknown(child, sub, path, out);
            }
            Some(_) => {}
        }
        path.pop();
    }
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

/// Width of an integer field.
#[derive(Clone, Copy)]
enum Int {
    U32,
    U64,
    I64,
}

/// The expected shape of a known key.
#[derive(Clone, Copy)]
enum Kind {
    Section,
    Any,
    Bool,
    OptStr,
    StrList,
    StrMap,
    List,
    Int(Int, i64),
    OneOf(&'static [&'static str]),
    EnvVar,
}

/// Every known key with its expected shape, sections before their keys.
const SCHEMA: &[(&str, Kind)] = &[
    ("database", Kind::OptStr),
    ("autoSpawn", Kind::Bool),
    ("runner", Kind::Any),
    ("models", Kind::StrMap),
    ("profiles", Kind::List),
    ("workers", Kind::StrList),
    ("limits", Kind::Section),
    ("limits.maxWorkers", Kind::Int(Int::U32, 1)),
    ("limits.maxWorkersPerSession", Kind::Int(Int::U32, 1)),
    ("limits.spawnRateLimitMs", Kind::Int(Int::U64, 0)),
    ("limits.maxConcurrency", Kind::Int(Int::U32, 1)),
    ("limits.maxTaskChars", Kind::Int(Int::U64, 1)),
    ("limits.maxAttachments", Kind::Int(Int::U32, 0)),
    ("limits.maxBase64Chars", Kind::Int(Int::U64, 0)),
    ("jobs", Kind::Section),
    ("jobs.timeoutMs", Kind::Int(Int::I64, 1)),
    ("jobs.maxTimeoutMs", Kind::Int(Int::I64, 1)),
    ("jobs.maxAttempts", Kind::Int(Int::U32, 1)),
    ("jobs.retryBackoffMs", Kind::Int(Int::U64, 0)),
    ("jobs.retryOnFailure", Kind::Bool),
    ("jobs.killGraceMs", Kind::Int(Int::U64, 0)),
    ("jobs.killStragglers", Kind::Bool),
    ("jobs.stallMs", Kind::Int(Int::U64, 0)),
    ("dispatcher", Kind::Section),
    ("dispatcher.idleExitMs", Kind::Int(Int::U64, 0)),
    ("dispatcher.shutdownGraceMs", Kind::Int(Int::U64, 0)),
    ("dispatcher.heartbeatMs", Kind::Int(Int::U64, 1)),
    ("dispatcher.staleMs", Kind::Int(Int::U64, 1)),
    ("storage", Kind::Section),
    ("storage.synchronous", Kind::OneOf(&["normal", "full"])),
    ("storage.busyTimeoutMs", Kind::Int(Int::U64, 1)),
    ("workflows", Kind::Section),
    ("workflows.enabled", Kind::Bool),
    ("workflows.limits", Kind::Section),
    ("workflows.limits.maxSteps", Kind::Int(Int::U32, 0)),
    ("workflows.limits.maxTaskChars", Kind::Int(Int::U64, 1)),
    ("workflows.limits.maxCarryChars", Kind::Int(Int::U64, 15)),
    ("workflows.limits.perStepTimeoutMs", Kind::Int(Int::I64, 1)),
    ("workflows.definitions", Kind::List),
    ("retention", Kind::Section),
    ("retention.maxJobs", Kind::Int(Int::U64, 0)),
    ("retention.maxAgeMs", Kind::Int(Int::U64, 0)),
    ("retention.minAgeMs", Kind::Int(Int::U64, 0)),
    ("retention.intervalMs", Kind::Int(Int::U64, 1)),
    ("security", Kind::Section),
    ("security.preventRecursiveSpawn", Kind::Bool),
    ("security.recursiveSpawnEnvVar", Kind::EnvVar),
    ("security.sessionIsolation", Kind::Bool),
    ("security.allowHosts", Kind::StrList),
    ("ui", Kind::Section),
    ("ui.defaultListFormat", Kind::OneOf(&["markdown", "json"])),
    ("ui.maxResponseChars", Kind::Int(Int::U64, 1)),
];

/// Check every known key's type and range, then the cross-key rules.
fn validate(merged: &Value, layers: &[(Layer, Value)]) -> Result<(), ConfigError> {
    for (key, kind) in SCHEMA {
        let path: Vec<&str> = key.split('.').collect();
        if let Some(value) = get_path(merged, &path) {
            check_kind(*kind, value).map_err(|problem| problem.into_error(&path, layers))?;
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

    fn into_error(self, path: &[&str], layers: &[(Layer, Value)]) -> ConfigError {
        let mut full: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        // Map entries are real keys, so the layer can be found for them precisely.
        if let Some(entry) = self.suffix.strip_prefix('.') {
            full.push(entry.to_string());
        }
        let layer = origin_of(&full, layers);
        let key = format!("{}{}", path.join("."), self.suffix);
        match self.kind {
            ProblemKind::Type { expected, found } => ConfigError::Type { key, layer, expected, found },
            ProblemKind::Value(message) => ConfigError::Value { key, layer, message },
        }
    }
}

fn check_kind(kind: Kind, value: &Value) -> Result<(), Problem> {
    match kind {
        Kind::Any => Ok(()),
        Kind::Section => require(value.is_object(), "an object", value),
        Kind::List => require(value.is_array(), "an array", value),
        Kind::Bool => require(value.is_boolean(), "true or false", value),
        Kind::OptStr => require(value.is_string() || value.is_null(), "a string or null", value),
        Kind::StrList => check_str_list(value),
        Kind::StrMap => check_str_map(value),
        Kind::Int(int, min) => check_int(int, min, value),
        Kind::OneOf(allowed) => check_one_of(allowed, value),
        Kind::EnvVar => check_env_var(value),
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

fn check_str_map(value: &Value) -> Result<(), Problem> {
    let map = value.as_object().ok_or_else(|| Problem::wrong_type("an object of strings", value))?;
    match map.iter().find(|(_, v)| !v.is_string()) {
        Some((name, v)) => Err(Problem::wrong_type("a string", v).at(format!(".{name}"))),
        None => Ok(()),
    }
}

fn check_int(int: Int, min: i64, value: &Value) -> Result<(), Problem> {
    let max: i128 = match int {
        Int::U32 => i128::from(u32::MAX),
        Int::U64 => i128::from(u64::MAX),
        Int::I64 => i128::from(i64::MAX),
    };
    let number = value
        .as_i64()
        .map(i128::from)
        .or_else(|| value.as_u64().map(i128::from))
        .ok_or_else(|| Problem::wrong_type("a whole number", value))?;
    if number < i128::from(min) {
        return Err(Problem::bad_value(format!("must be at least {min}, found {number}")));
    }
    if number > max {
        return Err(Problem::bad_value(format!("must be at most {max}, found {number}")));
    }
    Ok(())
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
