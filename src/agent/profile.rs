//! Worker profiles: the five built-ins, custom profiles from config, runner argv templates, model-tag resolution and auto-selection.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

/// How a profile's worker process lives: one process per task (`oneshot`, the default) or a
/// long-lived server; the same word its jobs and workers carry.
pub use crate::state::WorkerKind as ProfileKind;

/// How the prompt reaches the worker process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptVia {
    /// As an argument (the default); switched to stdin automatically for prompts over [`STDIN_PROMPT_BYTES`].
    Arg,
    /// Always on standard input.
    Stdin,
}

/// A worker profile, built-in or from config.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// Lowercase id, `^[a-z0-9-]+$`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Model or model tag (`node`, `node:vision`, `auto`, `openai/gpt-4`, ...); see [`resolve_model`].
    pub model: String,
    /// What the profile is for.
    pub purpose: String,
    /// When a caller should pick it.
    pub when_to_use: String,
    /// System prompt handed to the runner as `{systemPrompt}`.
    pub system_prompt: Option<String>,
    /// The model can read images.
    pub supports_vision: bool,
    /// The worker can browse the web.
    pub supports_web: bool,
    /// Tool switches (tool name -> allowed).
    pub tools: BTreeMap<String, bool>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Free-form tags.
    pub tags: Vec<String>,
    /// Process kind.
    pub kind: ProfileKind,
    /// Runner override (an argv template or a preset); `None`: the configured `runner`.
    pub command: Option<RunnerSpec>,
    /// How the runner's stdout becomes the response (`output`: a spec or a preset name);
    /// `None`: the runner's preset says, else stdout is the response.
    pub output: Option<crate::agent::extract::OutputSpec>,
    /// How the prompt is passed (`promptVia`); `None`: as the runner's preset says, else as an argument.
    pub prompt_via: Option<PromptVia>,
    /// Extra environment for the worker process.
    pub env: BTreeMap<String, String>,
    /// Per-task timeout in milliseconds.
    pub timeout_ms: Option<i64>,
    /// Most tasks of this profile running at once (>= 1).
    pub max_concurrency: Option<u32>,
    /// How an agent worker's permission requests are answered (`permissions`).
    pub permissions: crate::agent::permission::Answering,
    /// The ACP session mode an agent worker's sessions are set to (`sessionMode`).
    pub session_mode: Option<String>,
    /// Where its tasks run: in the requester's checkout, or each in a git worktree (`isolation`).
    pub isolation: crate::state::Isolation,
    /// A command (argv) run in each new worktree before the agent (`setup`); `None`: the
    /// configured `worktrees.setup`.
    pub setup: Option<Vec<String>>,
    /// Where it came from: `"built-in"`, or the config layer name (`"global"`, `"project"`).
    pub origin: String,
    /// Built-ins are protected: config cannot override them.
    pub protected: bool,
}

/// A runner as configured: an argv template, or the name of a preset (see [`crate::agent::preset`]),
/// which expands according to the profile that runs it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum RunnerSpec {
    /// A preset (`"claude"`).
    Preset(crate::agent::preset::Name),
    /// An argv template.
    Argv(Runner),
}

impl RunnerSpec {
    /// A preset's name or an argv template.
    ///
    /// # Errors
    /// A message naming what is wrong: an unknown preset, or the template's fault.
    pub fn parse(v: &Value) -> Result<RunnerSpec, String> {
        match v {
            Value::String(name) => crate::agent::preset::Name::parse(name).map(RunnerSpec::Preset).ok_or_else(|| {
                format!(
                    "\"{name}\" is not a preset ({}); give an argv array instead",
                    crate::agent::preset::NAMES.join(", ")
                )
            }),
            v => Runner::parse(v).map(RunnerSpec::Argv),
        }
    }
}

/// How one profile runs: everything a job of it needs from its runner.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub runner: Runner,
    pub prompt_via: PromptVia,
    /// The preset's environment with the profile's `env` over it.
    pub env: BTreeMap<String, String>,
    /// `None`: stdout is the response.
    pub output: Option<crate::agent::extract::OutputSpec>,
    /// The concrete model, `None` when the tag resolves to none.
    pub model: Option<String>,
}

impl Profile {
    /// What this profile's agent may do, from its `tools`.
    pub fn access(&self) -> crate::agent::preset::Access {
        crate::agent::preset::Access::of(&self.tools)
    }

    /// How this profile runs: its own `command`, else `configured` (the config's `runner`); a
    /// preset expands for this profile's access. The profile's `env`, `output` and `promptVia`
    /// win over a preset's.
    pub fn resolve(&self, configured: &RunnerSpec, models: &BTreeMap<String, String>) -> Resolved {
        let model = resolve_model(&self.model, models);
        match self.command.as_ref().unwrap_or(configured) {
            RunnerSpec::Argv(runner) => Resolved {
                runner: runner.clone(),
                prompt_via: self.prompt_via.unwrap_or(PromptVia::Arg),
                env: self.env.clone(),
                output: self.output.clone(),
                model,
            },
            RunnerSpec::Preset(name) => {
                let preset = crate::agent::preset::get(*name, self.access());
                let mut env = preset.env;
                env.extend(self.env.iter().map(|(k, v)| (k.clone(), v.clone())));
                Resolved {
                    runner: preset.runner,
                    prompt_via: self.prompt_via.unwrap_or(preset.prompt_via),
                    env,
                    output: self.output.clone().or(Some(preset.output)),
                    model,
                }
            }
        }
    }
}

/// A profile definition in config is wrong. Messages name the profile and the field.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// A `profiles` entry is not a JSON object.
    #[error("profiles[{index}] in the {origin} config is not a JSON object (found {found}).")]
    NotAnObject {
        /// Position in the merged `profiles` array.
        index: usize,
        /// Config layer.
        origin: String,
        /// JSON type found.
        found: &'static str,
    },
    /// A `profiles` entry has no `id`.
    #[error("profiles[{index}] in the {origin} config has no \"id\".")]
    MissingId {
        /// Position in the merged `profiles` array.
        index: usize,
        /// Config layer.
        origin: String,
    },
    /// The id is not a string matching `^[a-z0-9-]+$`.
    #[error(
        "Invalid profile id {id} in the {origin} config: ids must be non-empty strings of letters, digits and '-' only."
    )]
    InvalidId {
        /// The offending id, as JSON (quoted when it is a string).
        id: String,
        /// Config layer.
        origin: String,
    },
    /// A required field is absent or null.
    #[error("Profile \"{id}\" is missing the required field \"{field}\".")]
    MissingField {
        /// Profile id.
        id: String,
        /// Field name as written in config.
        field: &'static str,
    },
    /// A field has the wrong type or an unacceptable value.
    #[error("Profile \"{id}\": field \"{field}\" {reason}.")]
    InvalidField {
        /// Profile id.
        id: String,
        /// Field name as written in config.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Ids of the built-in profiles, in table order.
pub const BUILTIN_IDS: [&str; 5] = ["vision", "docs", "coder", "architect", "explorer"];

fn tools(entries: &[(&str, bool)]) -> BTreeMap<String, bool> {
    entries.iter().map(|(k, v)| ((*k).to_string(), *v)).collect()
}

fn builtin(id: &str, name: &str, model: &str, purpose: &str, when_to_use: &str, system_prompt: &str) -> Profile {
    Profile {
        id: id.to_string(),
        name: name.to_string(),
        model: model.to_string(),
        purpose: purpose.to_string(),
        when_to_use: when_to_use.to_string(),
        system_prompt: Some(system_prompt.to_string()),
        supports_vision: false,
        supports_web: false,
        tools: BTreeMap::new(),
        temperature: None,
        tags: Vec::new(),
        kind: ProfileKind::Oneshot,
        command: None,
        output: None,
        prompt_via: None,
        env: BTreeMap::new(),
        timeout_ms: None,
        max_concurrency: None,
        permissions: Default::default(),
        session_mode: None,
        isolation: crate::state::Isolation::None,
        setup: None,
        origin: "built-in".to_string(),
        protected: true,
    }
}

/// The five built-in profiles, in table order (vision, docs, coder, architect, explorer).
pub fn builtins() -> Vec<Profile> {
    let vision = Profile {
        supports_vision: true,
        ..builtin(
            "vision",
            "Vision Analyst",
            "node:vision",
            "Analyze images, screenshots, diagrams, and visual content",
            "When you need to understand visual content like screenshots, architecture diagrams, UI mockups, error screenshots, or any image-based information",
            "You are a vision analyst. Examine the attached images carefully and describe exactly what they show that matters for the task: text, layout, errors, structure and relationships, without guessing beyond what is visible.",
        )
    };
    let docs = Profile {
        supports_web: true,
        tools: tools(&[("write", false), ("edit", false)]),
        ..builtin(
            "docs",
            "Documentation Librarian",
            "node:docs",
            "Research documentation, find examples, explain APIs and libraries",
            "When you need to look up official documentation, find code examples, understand library APIs, or research best practices",
            "You are a documentation librarian. Find the authoritative documentation and working examples for the question, explain the relevant APIs concisely, and cite your sources; do not modify files.",
        )
    };
    let coder = Profile {
        tools: tools(&[("write", true), ("edit", true), ("bash", true)]),
        ..builtin(
            "coder",
            "Code Implementer",
            "node",
            "Write, edit, and refactor code with full tool access",
            "When you need to actually write or modify code, create files, run commands, or implement features",
            "You are a careful software engineer. Implement the requested change completely, following the codebase's existing conventions, and verify it by building and running the relevant tests.",
        )
    };
    let architect = Profile {
        tools: tools(&[("write", false), ("edit", false), ("bash", false)]),
        ..builtin(
            "architect",
            "System Architect",
            "node",
            "Design systems, plan implementations, review architecture decisions",
            "When you need to plan a complex feature, design system architecture, or make high-level technical decisions",
            "You are a system architect. Study the existing design, then propose a concrete plan with its components, interfaces, trade-offs and risks; do not write or edit code.",
        )
    };
    let explorer = Profile {
        tools: tools(&[("write", false), ("edit", false)]),
        temperature: Some(0.1),
        ..builtin(
            "explorer",
            "Code Explorer",
            "node:fast",
            "Quickly search and navigate the codebase",
            "When you need to quickly find files, search for patterns, or locate specific code without deep analysis",
            "You are a fast code explorer. Locate the files, symbols and patterns asked for and report their paths and line numbers briefly, without deep analysis or changes.",
        )
    };
    vec![vision, docs, coder, architect, explorer]
}

/// Built-in and custom profiles, with the warnings raised while loading them.
#[derive(Debug, Clone)]
pub struct ProfileSet {
    /// Built-ins first (table order), then custom profiles in config order.
    profiles: Vec<Profile>,
    warnings: Vec<String>,
}

impl ProfileSet {
    /// Build the set from the built-ins and `custom`: (entry, origin layer name) pairs from the merged config.
    ///
    /// Entries with a built-in id may set only how it runs ([`BUILTIN_SETTABLE`]; other fields are
    /// ignored with a warning); duplicate ids merge (later keys over earlier) and keep the position
    /// of the first occurrence.
    ///
    /// # Errors
    /// A [`ProfileError`] naming the entry, or the profile and field, for a malformed entry.
    pub fn load(custom: &[(Value, String)]) -> Result<ProfileSet, ProfileError> {
        let mut warnings = Vec::new();
        // (id, merged object, origin), in order of first occurrence.
        let mut merged: Vec<(String, Map<String, Value>, String)> = Vec::new();
        for (index, (entry, origin)) in custom.iter().enumerate() {
            let obj = entry.as_object().ok_or_else(|| ProfileError::NotAnObject {
                index,
                origin: origin.clone(),
                found: type_name(entry),
            })?;
            let id = match obj.get("id") {
                None | Some(Value::Null) => {
                    return Err(ProfileError::MissingId { index, origin: origin.clone() });
                }
                Some(Value::String(s)) if valid_id(s) => s.to_ascii_lowercase(),
                Some(other) => {
                    return Err(ProfileError::InvalidId { id: other.to_string(), origin: origin.clone() });
                }
            };
            match merged.iter_mut().find(|(known, _, _)| *known == id) {
                Some((_, base, base_origin)) => {
                    for (k, v) in obj {
                        base.insert(k.clone(), v.clone());
                    }
                    base_origin.clone_from(origin);
                }
                None => merged.push((id, obj.clone(), origin.clone())),
            }
        }
        let mut profiles = builtins();
        for (id, obj, origin) in merged {
            match profiles.iter_mut().find(|p| p.protected && p.id == id) {
                Some(builtin) => adjust_builtin(builtin, &obj, &origin, &mut warnings)?,
                None => profiles.push(parse_custom(id, &obj, origin, &mut warnings)?),
            }
        }
        Ok(ProfileSet { profiles, warnings })
    }

    /// Warnings raised while loading (refused overrides, unknown fields).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The profile with this id, compared case-insensitively.
    pub fn get(&self, id: &str) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.id.eq_ignore_ascii_case(id))
    }

    /// Every profile, built-ins first, then custom ones in config order.
    pub fn all(&self) -> &[Profile] {
        &self.profiles
    }

    /// Every id, in set order (for `Unknown worker "<id>". Available profiles: a, b, c`).
    pub fn ids(&self) -> Vec<&str> {
        self.profiles.iter().map(|p| p.id.as_str()).collect()
    }
}

fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

const KNOWN_FIELDS: [&str; 22] = [
    "id",
    "name",
    "model",
    "purpose",
    "whenToUse",
    "systemPrompt",
    "supportsVision",
    "supportsWeb",
    "tools",
    "temperature",
    "tags",
    "kind",
    "command",
    "promptVia",
    "env",
    "timeoutMs",
    "maxConcurrency",
    "output",
    "permissions",
    "sessionMode",
    "isolation",
    "setup",
];

/// Typed access to one profile entry's fields, with errors naming the profile and field.
struct Fields<'a> {
    id: &'a str,
    obj: &'a Map<String, Value>,
}

impl Fields<'_> {
    /// The field's value, with JSON null read as absent.
    fn get(&self, field: &str) -> Option<&Value> {
        self.obj.get(field).filter(|v| !v.is_null())
    }

    fn invalid(&self, field: &'static str, reason: impl Into<String>) -> ProfileError {
        ProfileError::InvalidField { id: self.id.to_string(), field, reason: reason.into() }
    }

    fn expected(&self, field: &'static str, what: &str, found: &Value) -> ProfileError {
        self.invalid(field, format!("must be {what}, found {}", type_name(found)))
    }

    fn required_str(&self, field: &'static str) -> Result<String, ProfileError> {
        match self.get(field) {
            None => Err(ProfileError::MissingField { id: self.id.to_string(), field }),
            Some(Value::String(s)) if s.trim().is_empty() => Err(self.invalid(field, "must not be empty")),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(self.expected(field, "a string", other)),
        }
    }

    fn opt_str(&self, field: &'static str) -> Result<Option<String>, ProfileError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.expected(field, "a string", other)),
        }
    }

    fn flag(&self, field: &'static str) -> Result<bool, ProfileError> {
        match self.get(field) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(self.expected(field, "true or false", other)),
        }
    }

    fn tools(&self) -> Result<BTreeMap<String, bool>, ProfileError> {
        let field = "tools";
        let Some(v) = self.get(field) else {
            return Ok(BTreeMap::new());
        };
        let Value::Object(map) = v else {
            return Err(self.expected(field, "an object of tool name -> true/false", v));
        };
        map.iter()
            .map(|(k, v)| match v {
                Value::Bool(b) => Ok((k.clone(), *b)),
                other => {
                    Err(self.invalid(field, format!("entry \"{k}\" must be true or false, found {}", type_name(other))))
                }
            })
            .collect()
    }

    fn temperature(&self) -> Result<Option<f64>, ProfileError> {
        let field = "temperature";
        match self.get(field) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(t) if t.is_finite() && t >= 0.0 => Ok(Some(t)),
                _ => Err(self.invalid(field, format!("must be a number >= 0, found {n}"))),
            },
            Some(other) => Err(self.expected(field, "a number", other)),
        }
    }

    fn tags(&self) -> Result<Vec<String>, ProfileError> {
        Ok(self.strings("tags")?.unwrap_or_default())
    }

    /// `setup`: an argv, never a shell line.
    fn setup(&self) -> Result<Option<Vec<String>>, ProfileError> {
        let setup = self.strings("setup")?;
        match &setup {
            Some(argv) if argv.first().is_none_or(|p| p.trim().is_empty()) => {
                Err(self.invalid("setup", "must be an argv whose first element names a program"))
            }
            Some(argv) if argv.iter().any(|a| a.contains('\0')) => Err(self.invalid("setup", "must not contain NUL")),
            _ => Ok(setup),
        }
    }

    fn isolation(&self) -> Result<Option<crate::state::Isolation>, ProfileError> {
        use crate::state::Isolation;
        self.word("isolation", &[("none", Isolation::None), ("worktree", Isolation::Worktree)])
    }

    /// An array of strings; `None` when absent.
    fn strings(&self, field: &'static str) -> Result<Option<Vec<String>>, ProfileError> {
        let Some(v) = self.get(field) else {
            return Ok(None);
        };
        let Value::Array(items) = v else {
            return Err(self.expected(field, "an array of strings", v));
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s.clone()),
                other => Err(self.invalid(field, format!("element {i} must be a string, found {}", type_name(other)))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// A field that is one of a few words (case-insensitive); `None` when absent.
    fn word<T: Copy>(&self, field: &'static str, words: &[(&str, T)]) -> Result<Option<T>, ProfileError> {
        let Some(v) = self.get(field) else { return Ok(None) };
        let choices = || words.iter().map(|(w, _)| format!("\"{w}\"")).collect::<Vec<_>>().join(" or ");
        match v {
            Value::String(s) => match words.iter().find(|(w, _)| s.eq_ignore_ascii_case(w)) {
                Some((_, t)) => Ok(Some(*t)),
                None => Err(self.invalid(field, format!("must be {}, found \"{s}\"", choices()))),
            },
            other => Err(self.expected(field, &choices(), other)),
        }
    }

    fn kind(&self) -> Result<ProfileKind, ProfileError> {
        let kind = self.word("kind", &[("oneshot", ProfileKind::Oneshot), ("server", ProfileKind::Server)])?;
        Ok(kind.unwrap_or(ProfileKind::Oneshot))
    }

    fn permissions(&self) -> Result<Option<crate::agent::permission::Answering>, ProfileError> {
        use crate::agent::permission::Answering;
        self.word("permissions", &[("auto", Answering::Auto), ("ask", Answering::Ask)])
    }

    fn prompt_via(&self) -> Result<Option<PromptVia>, ProfileError> {
        self.word("promptVia", &[("arg", PromptVia::Arg), ("stdin", PromptVia::Stdin)])
    }

    /// A server profile runs its own `command` (the server's argv) and takes its jobs over the
    /// protocol: no agent-CLI preset, no output spec, no per-job placeholder outside a group.
    fn check_server(&self) -> Result<(), ProfileError> {
        let field = "command";
        match self.get(field) {
            None => Err(self.invalid(field, "is required for a server profile: the argv of the long-lived process")),
            Some(Value::String(name)) if crate::agent::preset::ACP_NAMES.contains(&name.as_str()) => Ok(()),
            Some(Value::String(name)) => Err(self.invalid(
                field,
                format!(
                    "of a server profile must be an argv array or an agent preset ({}), not \"{name}\"",
                    crate::agent::preset::ACP_NAMES.join(", ")
                ),
            )),
            Some(_) => match self.command()? {
                Some(RunnerSpec::Argv(runner)) => match runner.job_placeholder_outside_groups() {
                    Some(ph) => Err(self.invalid(
                        field,
                        format!(
                            "of a server profile cannot use {{{ph}}} outside an optional group: a job's prompt, \
                             task id and attachments reach the server over its stdin"
                        ),
                    )),
                    None if self.get("output").is_some() => Err(self
                        .invalid("output", "does not apply to a server profile: its answers come over the protocol")),
                    None => Ok(()),
                },
                _ => Ok(()),
            },
        }
    }

    fn command(&self) -> Result<Option<RunnerSpec>, ProfileError> {
        let field = "command";
        self.get(field)
            .map(|v| RunnerSpec::parse(v).map_err(|e| self.invalid(field, format!("is not a valid runner: {e}"))))
            .transpose()
    }

    /// `output`: a spec object, or a preset's name (that preset's spec for this access).
    fn output(
        &self,
        access: crate::agent::preset::Access,
    ) -> Result<Option<crate::agent::extract::OutputSpec>, ProfileError> {
        use crate::agent::preset;
        match self.get("output") {
            None => Ok(None),
            Some(Value::String(name)) => match preset::Name::parse(name) {
                Some(name) => Ok(Some(preset::get(name, access).output)),
                None => Err(self
                    .invalid("output", format!("names no preset \"{name}\" (presets: {})", preset::NAMES.join(", ")))),
            },
            Some(v) => serde_json::from_value(v.clone())
                .map(Some)
                .map_err(|e| self.invalid("output", format!("is not a valid output spec: {e}"))),
        }
    }

    fn env(&self) -> Result<BTreeMap<String, String>, ProfileError> {
        let field = "env";
        let Some(v) = self.get(field) else {
            return Ok(BTreeMap::new());
        };
        let Value::Object(map) = v else {
            return Err(self.expected(field, "an object of name -> string", v));
        };
        let mut env = BTreeMap::new();
        for (k, v) in map {
            if k.is_empty() || k.contains(['=', '\0']) {
                return Err(
                    self.invalid(field, format!("variable name {k:?} must be non-empty and contain no '=' or NUL"))
                );
            }
            match v {
                Value::String(s) if s.contains('\0') => {
                    return Err(self.invalid(field, format!("value of \"{k}\" must not contain NUL")));
                }
                Value::String(s) => {
                    env.insert(k.clone(), s.clone());
                }
                other => {
                    return Err(
                        self.invalid(field, format!("value of \"{k}\" must be a string, found {}", type_name(other)))
                    );
                }
            }
        }
        Ok(env)
    }

    fn timeout_ms(&self) -> Result<Option<i64>, ProfileError> {
        let field = "timeoutMs";
        match self.get(field) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(t) if t > 0 => Ok(Some(t)),
                _ => Err(self.invalid(field, format!("must be a positive whole number of milliseconds, found {n}"))),
            },
            Some(other) => Err(self.expected(field, "a number of milliseconds", other)),
        }
    }

    fn max_concurrency(&self) -> Result<Option<u32>, ProfileError> {
        let field = "maxConcurrency";
        match self.get(field) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_u64().and_then(|c| u32::try_from(c).ok()) {
                Some(c) if c >= 1 => Ok(Some(c)),
                _ => Err(self.invalid(field, format!("must be a whole number >= 1, found {n}"))),
            },
            Some(other) => Err(self.expected(field, "a whole number >= 1", other)),
        }
    }
}

/// The fields a config may set on a built-in profile: how it runs, never what it is.
pub const BUILTIN_SETTABLE: [&str; 9] =
    ["command", "output", "promptVia", "env", "timeoutMs", "maxConcurrency", "permissions", "isolation", "setup"];

/// Apply a config entry to a built-in profile: its runner, environment and limits may be set;
/// its identity (name, model, purpose, tools, system prompt...) stays, with a warning per field.
fn adjust_builtin(
    p: &mut Profile,
    obj: &Map<String, Value>,
    origin: &str,
    warnings: &mut Vec<String>,
) -> Result<(), ProfileError> {
    let f = Fields { id: &p.id, obj };
    for key in obj.keys().filter(|k| *k != "id" && !BUILTIN_SETTABLE.contains(&k.as_str())) {
        warnings.push(format!(
            "Profile \"{}\" is built-in and its \"{key}\" cannot be changed; ignoring the one in the {origin} config \
             (a built-in profile takes only {}).",
            p.id,
            BUILTIN_SETTABLE.join(", ")
        ));
    }
    if let Some(c) = f.command()? {
        p.command = Some(c);
    }
    if let Some(o) = f.output(p.access())? {
        p.output = Some(o);
    }
    if let Some(v) = f.prompt_via()? {
        p.prompt_via = Some(v);
    }
    p.env.extend(f.env()?);
    if let Some(t) = f.timeout_ms()? {
        p.timeout_ms = Some(t);
    }
    if let Some(c) = f.max_concurrency()? {
        p.max_concurrency = Some(c);
    }
    if let Some(a) = f.permissions()? {
        p.permissions = a;
    }
    if let Some(i) = f.isolation()? {
        p.isolation = i;
    }
    if let Some(s) = f.setup()? {
        p.setup = Some(s);
    }
    if BUILTIN_SETTABLE.iter().any(|k| f.get(k).is_some()) {
        p.origin = format!("built-in, adjusted in the {origin} config");
    }
    Ok(())
}

fn parse_custom(
    id: String,
    obj: &Map<String, Value>,
    origin: String,
    warnings: &mut Vec<String>,
) -> Result<Profile, ProfileError> {
    let f = Fields { id: &id, obj };
    for key in obj.keys() {
        if !KNOWN_FIELDS.contains(&key.as_str()) {
            warnings.push(format!("Profile \"{id}\": unknown field \"{key}\" ignored."));
        }
    }
    let kind = f.kind()?;
    if kind == ProfileKind::Server {
        f.check_server()?;
    }
    let tools = f.tools()?;
    let access = crate::agent::preset::Access::of(&tools);
    let mut session_mode = f.opt_str("sessionMode")?;
    let (command, env) = match (kind, f.get("command")) {
        // An agent preset of a server profile is its argv, environment (the profile's own env
        // over the preset's) and, for an agent whose default mode cannot write, a session mode.
        (ProfileKind::Server, Some(Value::String(name))) => {
            let acp = crate::agent::preset::acp(name, access)
                .ok_or_else(|| f.invalid("command", format!("names no agent preset \"{name}\"")))?;
            let mut env = acp.env;
            env.extend(f.env()?);
            session_mode = session_mode.or(acp.session_mode);
            (Some(RunnerSpec::Argv(acp.runner)), env)
        }
        _ => (f.command()?, f.env()?),
    };
    Ok(Profile {
        id: id.clone(),
        name: f.required_str("name")?,
        model: f.required_str("model")?,
        purpose: f.required_str("purpose")?,
        when_to_use: f.required_str("whenToUse")?,
        system_prompt: f.opt_str("systemPrompt")?,
        supports_vision: f.flag("supportsVision")?,
        supports_web: f.flag("supportsWeb")?,
        tools,
        temperature: f.temperature()?,
        tags: f.tags()?,
        kind,
        command,
        output: f.output(access)?,
        prompt_via: f.prompt_via()?,
        env,
        timeout_ms: f.timeout_ms()?,
        max_concurrency: f.max_concurrency()?,
        permissions: f.permissions()?.unwrap_or_default(),
        session_mode,
        isolation: f.isolation()?.unwrap_or(crate::state::Isolation::None),
        setup: f.setup()?,
        origin,
        protected: false,
    })
}

/// One element of a runner template.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum RunnerItem {
    /// One argument template (may expand to several for `{attachments}`, or to none for `{prompt}` on stdin).
    Arg(String),
    /// An optional group, dropped whole when any placeholder in it is empty.
    Group(Vec<String>),
}

/// A parsed argv template.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Runner {
    items: Vec<RunnerItem>,
}

/// Values substituted into a runner template.
#[derive(Debug, Clone, Default)]
pub struct Placeholders {
    /// `{prompt}`.
    pub prompt: String,
    /// `{model}`: the resolved model, `None` when the tag resolved to no concrete model.
    pub model: Option<String>,
    /// `{systemPrompt}`.
    pub system_prompt: Option<String>,
    /// `{profile}`: the profile id.
    pub profile: String,
    /// `{taskId}`.
    pub task_id: String,
    /// `{cwd}`.
    pub cwd: String,
    /// `{attachments}`: attachment paths.
    pub attachments: Vec<String>,
}

impl Placeholders {
    /// The values for a server worker's argv: what belongs to one job (prompt, task id,
    /// attachments) is left empty, so optional groups naming it drop; jobs reach a server over
    /// its stdin.
    fn for_server(&self) -> Placeholders {
        Placeholders {
            model: self.model.clone(),
            system_prompt: self.system_prompt.clone(),
            profile: self.profile.clone(),
            cwd: self.cwd.clone(),
            ..Default::default()
        }
    }
}

impl Profile {
    /// How many of its jobs may run at once: its `maxConcurrency` (`None`: no limit of its
    /// own); on a server profile, how many its one worker serves at once, each in a session of
    /// its own (one unless set).
    pub fn job_limit(&self) -> Option<i64> {
        match self.kind {
            ProfileKind::Server => Some(self.max_concurrency.map_or(1, i64::from)),
            ProfileKind::Oneshot => self.max_concurrency.map(i64::from),
        }
    }
}

/// Prompts longer than this many bytes go on stdin whatever the runner says (Linux caps one argument at 128 KiB).
pub const STDIN_PROMPT_BYTES: usize = 102_400;

/// Placeholder values for one expansion; `None` from [`Expansion::value`] means "not a placeholder".
struct Expansion<'a> {
    p: &'a Placeholders,
    stdin: bool,
}

impl Expansion<'_> {
    fn value(&self, name: &str) -> Option<Cow<'_, str>> {
        let p = self.p;
        Some(match name {
            "prompt" if self.stdin => Cow::Borrowed(""),
            "prompt" => Cow::Borrowed(p.prompt.as_str()),
            "model" => Cow::Borrowed(p.model.as_deref().unwrap_or("")),
            "systemPrompt" => Cow::Borrowed(p.system_prompt.as_deref().unwrap_or("")),
            "profile" => Cow::Borrowed(p.profile.as_str()),
            "taskId" => Cow::Borrowed(p.task_id.as_str()),
            "cwd" => Cow::Borrowed(p.cwd.as_str()),
            "attachments" => Cow::Owned(p.attachments.join(",")),
            _ => return None,
        })
    }

    /// Single-pass substitution: placeholders are replaced left to right and inserted text is never rescanned.
    /// Unknown `{...}` stay literal.
    fn substitute(&self, template: &str) -> String {
        let mut out = String::with_capacity(template.len());
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                out.push_str(&rest[open..]);
                return out;
            };
            match self.value(&after[..close]) {
                Some(v) => {
                    out.push_str(&v);
                    rest = &after[close + 1..];
                }
                None => {
                    out.push('{');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// Whether the template mentions a known placeholder whose value is empty.
    fn mentions_empty(&self, template: &str) -> bool {
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                return false;
            };
            match self.value(&after[..close]) {
                Some(v) if v.is_empty() => return true,
                Some(_) => rest = &after[close + 1..],
                None => rest = after,
            }
        }
        false
    }

    fn push_arg(&self, template: &str, argv: &mut Vec<String>) {
        if template == "{attachments}" {
            argv.extend(self.p.attachments.iter().cloned());
        } else if template == "{prompt}" && self.stdin {
            // The prompt goes on stdin instead.
        } else {
            argv.push(self.substitute(template));
        }
    }
}

impl Runner {
    /// Parse and validate a template: a non-empty JSON array whose first element is a non-empty string (the
    /// program), every other element a string or an optional group (a non-empty array of strings).
    ///
    /// # Errors
    /// A message describing the offending position, e.g. `element 2[1] must be a string, found a number`.
    pub fn parse(v: &Value) -> Result<Runner, String> {
        let items = match v {
            Value::Array(items) => items,
            Value::String(_) => {
                return Err(
                    "a runner must be a JSON array of arguments, not a string (it is never run through a shell)"
                        .to_string(),
                );
            }
            other => {
                return Err(format!("a runner must be a JSON array of arguments, found {}", type_name(other)));
            }
        };
        match items.first() {
            None => {
                return Err("a runner must not be empty: its first element is the program".to_string());
            }
            Some(Value::String(s)) if s.is_empty() => {
                return Err("element 0 (the program) must not be an empty string".to_string());
            }
            Some(Value::String(_)) => {}
            Some(other) => {
                return Err(format!("element 0 (the program) must be a plain string, found {}", type_name(other)));
            }
        }
        let check = |s: &str, at: &str| {
            if s.contains('\0') { Err(format!("{at} must not contain a NUL character")) } else { Ok(()) }
        };
        let mut parsed = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item {
                Value::String(s) => {
                    check(s, &format!("element {i}"))?;
                    parsed.push(RunnerItem::Arg(s.clone()));
                }
                Value::Array(group) if group.is_empty() => {
                    return Err(format!("element {i} is an empty optional group"));
                }
                Value::Array(group) => {
                    let mut args = Vec::with_capacity(group.len());
                    for (j, g) in group.iter().enumerate() {
                        match g {
                            Value::String(s) => {
                                check(s, &format!("element {i}[{j}]"))?;
                                args.push(s.clone());
                            }
                            Value::Array(_) => {
                                return Err(format!(
                                    "element {i}[{j}] must be a string: optional groups nest only one level"
                                ));
                            }
                            other => {
                                return Err(format!("element {i}[{j}] must be a string, found {}", type_name(other)));
                            }
                        }
                    }
                    parsed.push(RunnerItem::Group(args));
                }
                other => {
                    return Err(format!(
                        "element {i} must be a string or an optional group (an array of strings), found {}",
                        type_name(other)
                    ));
                }
            }
        }
        Ok(Runner { items: parsed })
    }

    /// A template made of these elements (for the presets, which are valid by construction).
    pub fn from_items(items: Vec<RunnerItem>) -> Runner {
        Runner { items }
    }

    /// Text placeholders (`{prompt}`, `{systemPrompt}`, `{attachments}`) written inside a
    /// larger shell script, the argument after `sh|bash|zsh|dash [options] -c`. Substituted
    /// there, the text becomes shell code, so a task could run any command; a placeholder that
    /// is the whole script is the plain-command runner, meant as such. Each warning says what to
    /// write instead.
    pub fn shell_script_warnings(&self) -> Vec<String> {
        let args: Vec<&str> = self
            .items
            .iter()
            .flat_map(|item| match item {
                RunnerItem::Arg(s) => std::slice::from_ref(s),
                RunnerItem::Group(g) => g.as_slice(),
            })
            .map(String::as_str)
            .collect();
        let mut warnings = Vec::new();
        for (i, shell) in args.iter().enumerate() {
            let name = std::path::Path::new(shell).file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if !SHELLS.contains(&name) {
                continue;
            }
            let Some(script) = shell_script(&args[i + 1..]) else { continue };
            for ph in TEXT_PLACEHOLDERS {
                let token = format!("{{{ph}}}");
                if script.contains(&token) && script != token {
                    warnings.push(format!(
                        "{token} is part of the shell script {script:?} (after {name} -c): its text becomes shell \
                         code there, so a task can run any command. Pass it as an argument of its own after the \
                         script and refer to it as \"$1\": [\"{name}\", \"-c\", \"agent \\\"$1\\\"\", \"{name}\", \"{token}\"]"
                    ));
                }
            }
        }
        warnings
    }

    /// The first per-job placeholder (`prompt`, `taskId`, `attachments`) found in a plain
    /// argument: a server's argv is expanded without them, so only an optional group may name one.
    pub fn job_placeholder_outside_groups(&self) -> Option<&'static str> {
        self.items.iter().find_map(|item| match item {
            RunnerItem::Arg(s) => {
                ["prompt", "taskId", "attachments"].into_iter().find(|ph| s.contains(&format!("{{{ph}}}")))
            }
            RunnerItem::Group(_) => None,
        })
    }

    /// The template's elements.
    pub fn items(&self) -> &[RunnerItem] {
        &self.items
    }

    /// The template as JSON, in the form [`Runner::parse`] reads.
    pub fn to_json(&self) -> Value {
        Value::Array(
            self.items
                .iter()
                .map(|item| match item {
                    RunnerItem::Arg(s) => Value::String(s.clone()),
                    RunnerItem::Group(g) => Value::Array(g.iter().cloned().map(Value::String).collect()),
                })
                .collect(),
        )
    }

    /// Expand for a worker of `kind`: a server's argv is its long-lived process, so it leaves out
    /// the job's own values (see [`Placeholders`]) and never takes the prompt on stdin.
    pub fn expand_for(&self, kind: ProfileKind, p: &Placeholders, via: PromptVia) -> (Vec<String>, bool) {
        match kind {
            ProfileKind::Server => (self.expand(&p.for_server(), PromptVia::Arg).0, false),
            ProfileKind::Oneshot => self.expand(p, via),
        }
    }

    /// Expand into argv. Returns (argv, prompt_on_stdin).
    ///
    /// The prompt goes on stdin when `via` is [`PromptVia::Stdin`] or the prompt is over [`STDIN_PROMPT_BYTES`];
    /// then a bare `{prompt}` argument is removed, a group mentioning `{prompt}` is dropped, and `{prompt}`
    /// inside a larger argument becomes empty. `{attachments}` as a whole argument expands to one argument per
    /// path; inside a larger argument it becomes the paths joined with `,`.
    pub fn expand(&self, p: &Placeholders, via: PromptVia) -> (Vec<String>, bool) {
        let stdin = via == PromptVia::Stdin || p.prompt.len() > STDIN_PROMPT_BYTES;
        let ex = Expansion { p, stdin };
        let mut argv = Vec::new();
        for item in &self.items {
            match item {
                RunnerItem::Arg(s) => ex.push_arg(s, &mut argv),
                RunnerItem::Group(group) => {
                    if !group.iter().any(|s| ex.mentions_empty(s)) {
                        for s in group {
                            ex.push_arg(s, &mut argv);
                        }
                    }
                }
            }
        }
        (argv, stdin)
    }
}

/// Shells whose `-c` option takes a script.
const SHELLS: [&str; 4] = ["sh", "bash", "zsh", "dash"];
/// Placeholders whose values are text (the task's, the config's, file names), not values baton makes.
const TEXT_PLACEHOLDERS: [&str; 3] = ["prompt", "systemPrompt", "attachments"];

/// The script a shell's arguments run with `-c` (also in a cluster such as `-ec`), if any.
fn shell_script<'a>(args: &[&'a str]) -> Option<&'a str> {
    let mut rest = args.iter();
    while let Some(a) = rest.next() {
        match a.strip_prefix('-').or_else(|| a.strip_prefix('+')) {
            // `--` ends the options: what follows is a script file, not a script.
            Some("-") => return None,
            // Long options (`--login`, `--norc`).
            Some(flags) if flags.starts_with('-') => {}
            Some(flags) if flags.contains('c') => return rest.next().copied(),
            // `-o name` takes a value.
            Some(flags) if flags.ends_with('o') => {
                rest.next();
            }
            Some(_) => {}
            None => return None,
        }
    }
    None
}

/// Whether a model string is a tag (`node`, `node:*`, `auto`) rather than a concrete model.
fn is_tag(model: &str) -> bool {
    let m = model.trim();
    m.eq_ignore_ascii_case("node")
        || m.eq_ignore_ascii_case("auto")
        || m.get(..5).is_some_and(|prefix| prefix.eq_ignore_ascii_case("node:"))
}

/// Resolve a model tag through config `models`.
///
/// `node:vision`/`node:fast`/`node:docs` (any `node:<key>`) -> `models[key]`, else `models.default`, else the tag;
/// `node`/`auto` -> `models.default`, else the tag; anything else is returned unchanged. When the result is still
/// a tag (or empty), there is no concrete model to pass to the CLI and this returns `None`.
pub fn resolve_model(tag: &str, models: &BTreeMap<String, String>) -> Option<String> {
    let trimmed = tag.trim();
    let lower = trimmed.to_ascii_lowercase();
    let lookup = |key: &str| models.get(key).map(|m| m.trim()).filter(|m| !m.is_empty());
    let resolved = if lower == "node" || lower == "auto" {
        lookup("default").unwrap_or(trimmed)
    } else if let Some(key) = lower.strip_prefix("node:") {
        lookup(key).or_else(|| lookup("default")).unwrap_or(trimmed)
    } else {
        trimmed
    };
    if resolved.is_empty() || is_tag(resolved) { None } else { Some(resolved.to_string()) }
}

/// What an attachment is, for auto-selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachmentKind {
    /// An image file.
    Image,
    /// Any other file.
    File,
}

const DOCS_WORDS: [&str; 9] =
    ["doc", "docs", "documentation", "reference", "api", "example", "examples", "research", "cite"];
const ARCHITECT_WORDS: [&str; 6] = ["architecture", "architect", "design", "plan", "approach", "tradeoff"];
const EXPLORER_WORDS: [&str; 8] = ["search", "find", "locate", "grep", "ripgrep", "scan", "explore", "where"];

/// Pick a built-in profile id for a task given without a worker: first match wins, words matched whole and
/// case-insensitively: image attachment -> `vision`, docs words -> `docs`, design words -> `architect`,
/// search words -> `explorer`, otherwise `coder`.
pub fn auto_select(task: &str, attachments: &[AttachmentKind]) -> &'static str {
    if attachments.contains(&AttachmentKind::Image) {
        return "vision";
    }
    // Words are maximal runs of alphanumeric characters, with their byte spans.
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut start = None;
    for (i, c) in task.char_indices() {
        match (c.is_alphanumeric(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                spans.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        spans.push((s, task.len()));
    }
    let words: Vec<String> = spans.iter().map(|&(s, e)| task[s..e].to_lowercase()).collect();
    let has = |list: &[&str]| words.iter().any(|w| list.contains(&w.as_str()));
    let trade_off = spans.windows(2).zip(words.windows(2)).any(|(sp, w)| {
        let sep = &task[sp[0].1..sp[1].0];
        w[0] == "trade" && w[1] == "off" && (sep == "-" || sep.chars().all(char::is_whitespace))
    });
    if has(&DOCS_WORDS) {
        "docs"
    } else if has(&ARCHITECT_WORDS) || trade_off {
        "architect"
    } else if has(&EXPLORER_WORDS) {
        "explorer"
    } else {
        "coder"
    }
}

/// What of the profile's limits its runner cannot pass to the agent: its tool switches when it
/// runs a plain argv (a preset maps them to the CLI's own permission flags), its temperature
/// always (no agent CLI takes one on its command line).
pub fn advisory_limits(p: &Profile, configured: &RunnerSpec) -> Vec<&'static str> {
    let mut out = Vec::new();
    let plain = matches!(p.command.as_ref().unwrap_or(configured), RunnerSpec::Argv(_));
    if plain && p.tools.values().any(|allowed| !allowed) {
        out.push("tool limits");
    }
    if p.temperature.is_some() {
        out.push("temperature");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn models(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect()
    }

    fn custom(entries: &[(Value, &str)]) -> Vec<(Value, String)> {
        entries.iter().map(|(v, o)| (v.clone(), (*o).to_string())).collect()
    }

    fn minimal(id: &str) -> Value {
        json!({"id": id, "name": "Reviewer", "model": "openai/gpt-4", "purpose": "Review code", "whenToUse": "When reviewing"})
    }

    fn placeholders(prompt: &str, model: Option<&str>) -> Placeholders {
        Placeholders {
            prompt: prompt.to_string(),
            model: model.map(str::to_string),
            profile: "coder".to_string(),
            task_id: "t1".to_string(),
            cwd: "/w".to_string(),
            ..Placeholders::default()
        }
    }

    #[test]
    fn text_placeholders_inside_shell_scripts_are_warned_about() {
        let w = |v: Value| Runner::parse(&v).unwrap().shell_script_warnings();
        let got = w(json!(["sh", "-c", "echo {prompt}"]));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("{prompt} is part of the shell script \"echo {prompt}\" (after sh -c)"), "{got:?}");
        assert!(got[0].ends_with(r#"["sh", "-c", "agent \"$1\"", "sh", "{prompt}"]"#), "{got:?}");
        assert_eq!(w(json!(["/bin/bash", "-ec", "agent --system '{systemPrompt}' {prompt}"])).len(), 2);
        assert_eq!(w(json!(["env", "X=1", "zsh", "-o", "pipefail", "-c", ["run {attachments}"]])).len(), 1);
        assert_eq!(w(json!(["dash", "--norc", "-c", "cat {attachments}"])).len(), 1);
        // The whole script as the placeholder is the plain-command runner; an argument after the
        // script is data; other placeholders are values baton makes; no -c, no script.
        assert!(w(json!(["sh", "-c", "{prompt}"])).is_empty());
        assert!(w(json!(["sh", "-c", "agent \"$1\"", "sh", "{prompt}"])).is_empty());
        assert!(w(json!(["sh", "-c", "cd {cwd} && agent --model {model} --id {taskId}"])).is_empty());
        assert!(w(json!(["sh", "script.sh", "{prompt} and more"])).is_empty());
        assert!(w(json!(["sh", "--", "-c", "echo {prompt}"])).is_empty());
        assert!(w(json!(["fish", "-c", "echo {prompt}"])).is_empty());
    }

    #[test]
    fn auto_selection_golden_table() {
        use AttachmentKind::{File, Image};
        let cases: [(&str, &[AttachmentKind], &str); 13] = [
            ("Find docs for X", &[], "docs"),
            ("design the api", &[], "docs"),
            ("where is foo", &[], "explorer"),
            ("implement login", &[], "coder"),
            ("search the architecture docs", &[], "docs"),
            ("trade off analysis", &[], "architect"),
            ("tradeoff", &[], "architect"),
            ("APIs", &[], "coder"),
            ("planning", &[], "coder"),
            ("docs", &[File], "docs"),
            ("implement login", &[Image], "vision"),
            ("Find docs for X", &[File, Image], "vision"),
            ("", &[Image], "vision"),
        ];
        for (task, attachments, want) in cases {
            assert_eq!(auto_select(task, attachments), want, "task {task:?} with {attachments:?}");
        }
    }

    #[test]
    fn auto_selection_word_rules() {
        assert_eq!(auto_select("weigh the trade-off", &[]), "architect");
        assert_eq!(auto_select("a trade \t\n off here", &[]), "architect");
        assert_eq!(auto_select("trade--off", &[]), "coder");
        assert_eq!(auto_select("trade, off", &[]), "coder");
        assert_eq!(auto_select("PLAN it", &[]), "architect");
        assert_eq!(auto_select("(grep) for x", &[]), "explorer");
        assert_eq!(auto_select("update api_docs", &[]), "docs");
        assert_eq!(auto_select("redesign it", &[]), "coder");
        assert_eq!(auto_select("Where?", &[]), "explorer");
    }

    #[test]
    fn resolve_model_fallbacks() {
        let full = models(&[("default", "m/default"), ("vision", "m/vision"), ("fast", "m/fast"), ("docs", "m/docs")]);
        let only_default = models(&[("default", "m/default")]);
        let none = models(&[]);
        assert_eq!(resolve_model("node:vision", &full).as_deref(), Some("m/vision"));
        assert_eq!(resolve_model("node:fast", &full).as_deref(), Some("m/fast"));
        assert_eq!(resolve_model("node:docs", &full).as_deref(), Some("m/docs"));
        assert_eq!(resolve_model("node", &full).as_deref(), Some("m/default"));
        assert_eq!(resolve_model("auto", &full).as_deref(), Some("m/default"));
        for tag in ["node:vision", "node:fast", "node:docs", "node", "auto"] {
            assert_eq!(resolve_model(tag, &only_default).as_deref(), Some("m/default"), "{tag}");
            assert_eq!(resolve_model(tag, &none), None, "{tag}");
        }
        // A mapping that is itself a tag is still unresolved.
        assert_eq!(resolve_model("node:fast", &models(&[("fast", "node")])), None);
        assert_eq!(resolve_model("node", &models(&[("default", "auto")])), None);
        assert_eq!(resolve_model("openai/gpt-4", &full).as_deref(), Some("openai/gpt-4"));
        assert_eq!(resolve_model("openai/gpt-4", &none).as_deref(), Some("openai/gpt-4"));
        assert_eq!(resolve_model("", &full), None);
    }

    fn plain_opencode() -> Runner {
        Runner::parse(&json!(["opencode", "run", ["--model", "{model}"], "{prompt}"])).unwrap()
    }

    #[test]
    fn an_optional_group_drops_without_its_model() {
        let r = plain_opencode();
        assert_eq!(r.to_json(), json!(["opencode", "run", ["--model", "{model}"], "{prompt}"]));
        assert_eq!(Runner::parse(&r.to_json()).unwrap(), r);
        assert_eq!(serde_json::to_value(&r).unwrap(), r.to_json());
        let (argv, stdin) = r.expand(&placeholders("fix it", Some("m/x")), PromptVia::Arg);
        assert_eq!(argv, ["opencode", "run", "--model", "m/x", "fix it"]);
        assert!(!stdin);
        let (argv, stdin) = r.expand(&placeholders("fix it", None), PromptVia::Arg);
        assert_eq!(argv, ["opencode", "run", "fix it"]);
        assert!(!stdin);
        let (argv, _) = r.expand(&placeholders("fix it", Some("")), PromptVia::Arg);
        assert_eq!(argv, ["opencode", "run", "fix it"]);
    }

    #[test]
    fn substitution_is_single_pass() {
        let r = Runner::parse(&json!(["agent", "--p={prompt}|{model}", "{prompt}", "{unknown}", "{{cwd}", "{cwd"]))
            .unwrap();
        let (argv, _) = r.expand(&placeholders("use {model} and {cwd}", Some("m/x")), PromptVia::Arg);
        assert_eq!(
            argv,
            ["agent", "--p=use {model} and {cwd}|m/x", "use {model} and {cwd}", "{unknown}", "{/w", "{cwd"]
        );
        let r = Runner::parse(&json!(["agent", "{profile}:{taskId}@{cwd}", ["--system", "{systemPrompt}"]])).unwrap();
        let (argv, _) = r.expand(&placeholders("p", None), PromptVia::Arg);
        assert_eq!(argv, ["agent", "coder:t1@/w"]);
        let mut p = placeholders("p", None);
        p.system_prompt = Some("be {prompt}".to_string());
        let (argv, _) = r.expand(&p, PromptVia::Arg);
        assert_eq!(argv, ["agent", "coder:t1@/w", "--system", "be {prompt}"]);
    }

    #[test]
    fn attachments_expand_to_one_argument_each() {
        let r =
            Runner::parse(&json!(["agent", "{attachments}", ["--files", "{attachments}"], "--", "{prompt}"])).unwrap();
        let mut p = placeholders("look", None);
        let (argv, _) = r.expand(&p, PromptVia::Arg);
        assert_eq!(argv, ["agent", "--", "look"]);
        p.attachments = vec!["a.png".to_string(), "b c.txt".to_string()];
        let (argv, _) = r.expand(&p, PromptVia::Arg);
        assert_eq!(argv, ["agent", "a.png", "b c.txt", "--files", "a.png", "b c.txt", "--", "look"]);
        let r = Runner::parse(&json!(["agent", "--files={attachments}"])).unwrap();
        assert_eq!(r.expand(&p, PromptVia::Arg).0, ["agent", "--files=a.png,b c.txt"]);
    }

    #[test]
    fn stdin_mode_removes_the_prompt() {
        let r = Runner::parse(&json!(["agent", ["--prompt", "{prompt}"], "{prompt}", "--model={model}"])).unwrap();
        let (argv, stdin) = r.expand(&placeholders("hello", Some("m")), PromptVia::Stdin);
        assert_eq!(argv, ["agent", "--model=m"]);
        assert!(stdin);
        let (argv, stdin) = r.expand(&placeholders("hello", Some("m")), PromptVia::Arg);
        assert_eq!(argv, ["agent", "--prompt", "hello", "hello", "--model=m"]);
        assert!(!stdin);
    }

    #[test]
    fn long_prompts_go_on_stdin_automatically() {
        let r = plain_opencode();
        let at_limit = "x".repeat(STDIN_PROMPT_BYTES);
        let (argv, stdin) = r.expand(&placeholders(&at_limit, Some("m")), PromptVia::Arg);
        assert!(!stdin);
        assert_eq!(argv.len(), 5);
        let over = "x".repeat(STDIN_PROMPT_BYTES + 1);
        let (argv, stdin) = r.expand(&placeholders(&over, Some("m")), PromptVia::Arg);
        assert!(stdin);
        assert_eq!(argv, ["opencode", "run", "--model", "m"]);
    }

    #[test]
    fn runner_parse_errors_describe_the_position() {
        let err = |v: Value| Runner::parse(&v).unwrap_err();
        assert!(err(json!([])).contains("empty"));
        assert!(err(json!("opencode run {prompt}")).contains("not a string"));
        assert!(err(json!({"cmd": "x"})).contains("an object"));
        assert!(err(json!([""])).contains("element 0"));
        assert!(err(json!([["opencode"], "run"])).contains("element 0"));
        assert!(err(json!(["opencode", 3])).contains("element 1"));
        assert!(err(json!(["opencode", "run", ["--model", ["x"]]])).contains("element 2[1]"));
        assert!(err(json!(["opencode", "run", ["--model", null]])).contains("element 2[1]"));
        assert!(err(json!(["opencode", []])).contains("element 1"));
        assert!(err(json!(["opencode", "a\u{0}b"])).contains("element 1"));
        assert!(Runner::parse(&json!(["opencode"])).is_ok());
    }

    #[test]
    fn builtins_match_the_table() {
        let b = builtins();
        let ids: Vec<&str> = b.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, BUILTIN_IDS);
        let expect = [
            (
                "Vision Analyst",
                "node:vision",
                "Analyze images, screenshots, diagrams, and visual content",
                "When you need to understand visual content like screenshots, architecture diagrams, UI mockups, error screenshots, or any image-based information",
            ),
            (
                "Documentation Librarian",
                "node:docs",
                "Research documentation, find examples, explain APIs and libraries",
                "When you need to look up official documentation, find code examples, understand library APIs, or research best practices",
            ),
            (
                "Code Implementer",
                "node",
                "Write, edit, and refactor code with full tool access",
                "When you need to actually write or modify code, create files, run commands, or implement features",
            ),
            (
                "System Architect",
                "node",
                "Design systems, plan implementations, review architecture decisions",
                "When you need to plan a complex feature, design system architecture, or make high-level technical decisions",
            ),
            (
                "Code Explorer",
                "node:fast",
                "Quickly search and navigate the codebase",
                "When you need to quickly find files, search for patterns, or locate specific code without deep analysis",
            ),
        ];
        for (p, (name, model, purpose, when)) in b.iter().zip(expect) {
            assert_eq!(
                (p.name.as_str(), p.model.as_str(), p.purpose.as_str(), p.when_to_use.as_str()),
                (name, model, purpose, when)
            );
            assert!(p.protected);
            assert_eq!(p.origin, "built-in");
            assert_eq!(p.kind, ProfileKind::Oneshot);
            assert_eq!(p.prompt_via, None);
            assert!(p.command.is_none());
            assert!(p.system_prompt.as_deref().is_some_and(|s| !s.is_empty()));
        }
        let flags: Vec<(bool, bool)> = b.iter().map(|p| (p.supports_vision, p.supports_web)).collect();
        assert_eq!(flags, [(true, false), (false, true), (false, false), (false, false), (false, false)]);
        assert!(b[0].tools.is_empty());
        assert_eq!(b[1].tools, tools(&[("write", false), ("edit", false)]));
        assert_eq!(b[2].tools, tools(&[("write", true), ("edit", true), ("bash", true)]));
        assert_eq!(b[3].tools, tools(&[("write", false), ("edit", false), ("bash", false)]));
        assert_eq!(b[4].tools, tools(&[("write", false), ("edit", false)]));
        let temps: Vec<Option<f64>> = b.iter().map(|p| p.temperature).collect();
        assert_eq!(temps, [None, None, None, None, Some(0.1)]);
        let plain = RunnerSpec::Argv(plain_opencode());
        let advisory: Vec<usize> = b.iter().map(|p| advisory_limits(p, &plain).len()).collect();
        assert_eq!(advisory, [0, 1, 0, 1, 2]);
        let json = serde_json::to_value(&b[4]).unwrap();
        assert_eq!(json["whenToUse"], b[4].when_to_use.as_str());
        assert_eq!(json["kind"], "oneshot");
        assert_eq!(json["promptVia"], Value::Null, "as the runner says");
        assert_eq!(json["tools"], json!({"edit": false, "write": false}));
    }

    #[test]
    fn server_profiles_need_an_argv_without_job_placeholders() {
        let server = |extra: Value| {
            let mut e = minimal("srv");
            e["kind"] = json!("server");
            merge_into(&mut e, extra);
            ProfileSet::load(&custom(&[(e, "project")])).map(|_| ()).map_err(|e| e.to_string())
        };
        assert!(server(json!({})).unwrap_err().contains("is required for a server profile"));
        let e = server(json!({"command": "claude"})).unwrap_err();
        assert!(
            e.contains("must be an argv array or an agent preset (opencode-acp, ") && e.contains("not \"claude\""),
            "{e}"
        );
        // An agent preset is its argv.
        let mut e = minimal("srv");
        e["kind"] = json!("server");
        e["command"] = json!("opencode-acp");
        let set = ProfileSet::load(&custom(&[(e, "project")])).unwrap();
        let p = set.all().iter().find(|p| p.id == "srv").unwrap();
        let Some(RunnerSpec::Argv(r)) = &p.command else { panic!("{:?}", p.command) };
        assert_eq!(r.to_json(), json!(["opencode", "acp"]));
        assert!(p.env.contains_key("OPENCODE_PERMISSION"));
        for ph in ["prompt", "taskId", "attachments"] {
            let e = server(json!({"command": ["srv", format!("--x={{{ph}}}")]})).unwrap_err();
            assert!(e.contains(&format!("cannot use {{{ph}}} outside an optional group")), "{e}");
        }
        let e = server(json!({"command": ["srv"], "output": "claude"})).unwrap_err();
        assert!(e.contains("output") && e.contains("does not apply to a server profile"), "{e}");
        server(json!({"command": ["srv", ["--model", "{model}"], ["--task", "{taskId}"], "{cwd}"]})).unwrap();
        let ph =
            Placeholders { prompt: "p".into(), task_id: "t".into(), model: Some("m".into()), ..Default::default() };
        let r = Runner::parse(&json!(["srv", ["--model", "{model}"], ["--task", "{taskId}"]])).unwrap();
        assert_eq!(
            r.expand_for(ProfileKind::Server, &ph, PromptVia::Stdin),
            (vec!["srv".into(), "--model".into(), "m".into()], false)
        );
        assert_eq!(r.expand_for(ProfileKind::Oneshot, &ph, PromptVia::Arg).0, ["srv", "--model", "m", "--task", "t"]);
    }

    fn merge_into(target: &mut Value, extra: Value) {
        if let (Some(t), Value::Object(e)) = (target.as_object_mut(), extra) {
            t.extend(e);
        }
    }

    #[test]
    fn custom_profiles_load_after_builtins() {
        let entry = json!({
            "id": "Reviewer", "name": "Reviewer", "model": "openai/gpt-4", "purpose": "Review code",
            "whenToUse": "When reviewing", "systemPrompt": "Review.", "supportsWeb": true, "tools": {"bash": false},
            "temperature": 0.2, "tags": ["review"], "kind": "server", "command": ["rev", ["-m", "{model}"], ["--first", "{prompt}"]],
            "promptVia": "stdin", "env": {"A": "1"}, "timeoutMs": 60000, "maxConcurrency": 2
        });
        let set = ProfileSet::load(&custom(&[(entry, "project"), (minimal("z-last"), "global")])).unwrap();
        assert_eq!(set.ids(), ["vision", "docs", "coder", "architect", "explorer", "reviewer", "z-last"]);
        assert!(set.warnings().is_empty());
        let p = set.get("REVIEWER").unwrap();
        assert_eq!(p.id, "reviewer");
        assert_eq!(p.origin, "project");
        assert!(!p.protected);
        assert_eq!(p.kind, ProfileKind::Server);
        assert_eq!(p.prompt_via, Some(PromptVia::Stdin));
        let Some(RunnerSpec::Argv(r)) = &p.command else { panic!("{:?}", p.command) };
        assert_eq!(r.to_json(), json!(["rev", ["-m", "{model}"], ["--first", "{prompt}"]]));
        assert_eq!(p.env.get("A").map(String::as_str), Some("1"));
        assert_eq!((p.timeout_ms, p.max_concurrency, p.temperature), (Some(60000), Some(2), Some(0.2)));
        assert_eq!(p.tags, ["review"]);
        assert!(p.supports_web && !p.supports_vision);
        assert_eq!(advisory_limits(p, &RunnerSpec::Argv(plain_opencode())), ["tool limits", "temperature"]);
        assert_eq!(set.get("z-last").unwrap().command, None);
        assert_eq!(set.get("Coder").unwrap().id, "coder");
        assert!(set.get("nope").is_none());
        assert_eq!(set.all().len(), 7);
        assert_eq!(ProfileSet::load(&[]).unwrap().ids(), BUILTIN_IDS);
    }

    #[test]
    fn bad_ids_are_errors() {
        for id in [json!("bad id"), json!(""), json!("a_b"), json!("é"), json!(42)] {
            let mut e = minimal("x");
            e["id"] = id.clone();
            let err = ProfileSet::load(&custom(&[(e, "project")])).unwrap_err();
            assert!(matches!(err, ProfileError::InvalidId { .. }), "{id}: {err:?}");
            assert!(err.to_string().contains(&id.to_string()), "{err}");
        }
        let err = ProfileSet::load(&custom(&[(json!({"name": "x"}), "global")])).unwrap_err();
        assert!(matches!(err, ProfileError::MissingId { index: 0, .. }), "{err:?}");
        let err = ProfileSet::load(&custom(&[(minimal("ok"), "global"), (json!("x"), "global")])).unwrap_err();
        assert!(err.to_string().contains("profiles[1]"), "{err}");
    }

    #[test]
    fn a_builtin_takes_its_runner_and_env_from_config_but_keeps_its_identity() {
        let set = ProfileSet::load(&custom(&[
            (minimal("Coder"), "project"),
            (json!({"id": "coder", "env": {"A": "1"}, "command": "claude", "tools": {"write": false}}), "global"),
            (json!({"id": "architect", "timeoutMs": 5000, "maxConcurrency": 2, "promptVia": "stdin"}), "project"),
        ]))
        .unwrap();
        assert_eq!(set.ids(), BUILTIN_IDS);
        // name, model, purpose, whenToUse (from minimal) and tools are refused, one warning each.
        assert_eq!(set.warnings().len(), 5, "{:?}", set.warnings());
        assert!(
            set.warnings().iter().any(|w| w.contains("\"coder\" is built-in and its \"tools\" cannot be changed")),
            "{:?}",
            set.warnings()
        );
        let coder = set.get("coder").unwrap();
        assert_eq!(coder.name, "Code Implementer");
        assert_eq!(coder.tools, tools(&[("write", true), ("edit", true), ("bash", true)]));
        assert_eq!(coder.env.get("A").map(String::as_str), Some("1"));
        assert_eq!(coder.command, Some(RunnerSpec::Preset(crate::agent::preset::Name::Claude)));
        assert_eq!(coder.origin, "built-in, adjusted in the global config");
        let architect = set.get("architect").unwrap();
        assert_eq!((architect.timeout_ms, architect.max_concurrency), (Some(5000), Some(2)));
        assert_eq!(architect.prompt_via, Some(PromptVia::Stdin));
        assert!(architect.protected);
        let bad = ProfileSet::load(&custom(&[(json!({"id": "coder", "env": {"A": 1}}), "project")]));
        assert!(bad.unwrap_err().to_string().contains("value of \"A\" must be a string"));
    }

    #[test]
    fn a_preset_runs_as_the_profile_may() {
        let set = ProfileSet::load(&[]).unwrap();
        let models = models(&[("default", "m/x")]);
        let claude = RunnerSpec::Preset(crate::agent::preset::Name::Claude);
        let argv = |id: &str, spec: &RunnerSpec| {
            let r = set.get(id).unwrap().resolve(spec, &models);
            let (argv, stdin) = r.runner.expand(&placeholders("hello", r.model.as_deref()), r.prompt_via);
            assert!(stdin, "presets take the prompt on stdin");
            argv
        };
        let coder = argv("coder", &claude);
        assert!(coder.windows(2).any(|w| w == ["--permission-mode", "acceptEdits"]), "{coder:?}");
        assert!(coder.windows(2).any(|w| w == ["--model", "m/x"]), "{coder:?}");
        assert!(!coder.contains(&"hello".to_string()), "{coder:?}");
        let architect = argv("architect", &claude);
        assert!(!architect.iter().any(|a| a == "acceptEdits"), "{architect:?}");
        assert!(architect.iter().any(|a| a == "--disallowedTools"), "{architect:?}");
        let codex = RunnerSpec::Preset(crate::agent::preset::Name::Codex);
        assert!(argv("coder", &codex).windows(2).any(|w| w == ["--sandbox", "workspace-write"]));
        assert!(argv("explorer", &codex).windows(2).any(|w| w == ["--sandbox", "read-only"]));
        let r = set.get("coder").unwrap().resolve(&claude, &models);
        assert!(r.output.is_some_and(|o| o.denials.is_some()));
        assert_eq!(r.env.get("CLAUDE_CODE_MAX_RETRIES").map(String::as_str), Some("2"));
    }

    #[test]
    fn missing_and_mistyped_fields_name_profile_and_field() {
        for field in ["name", "model", "purpose", "whenToUse"] {
            let mut e = minimal("rev");
            e.as_object_mut().unwrap().remove(field);
            let err = ProfileSet::load(&custom(&[(e, "project")])).unwrap_err();
            assert!(
                matches!(&err, ProfileError::MissingField { id, field: f } if id == "rev" && *f == field),
                "{err:?}"
            );
            let msg = err.to_string();
            assert!(msg.contains("\"rev\"") && msg.contains(field), "{msg}");
        }
        let bad = [
            ("name", json!(3)),
            ("model", json!("  ")),
            ("systemPrompt", json!(["x"])),
            ("supportsVision", json!("yes")),
            ("tools", json!({"bash": "no"})),
            ("tools", json!(["bash"])),
            ("temperature", json!("hot")),
            ("temperature", json!(-1)),
            ("tags", json!(["a", 1])),
            ("kind", json!("daemon")),
            ("command", json!("opencode run")),
            ("command", json!(["opencode", 1])),
            ("promptVia", json!("file")),
            ("env", json!({"A": 1})),
            ("env", json!({"A=B": "1"})),
            ("timeoutMs", json!(0)),
            ("timeoutMs", json!(1.5)),
            ("maxConcurrency", json!(0)),
            ("maxConcurrency", json!(5_000_000_000_u64)),
        ];
        for (field, value) in bad {
            let mut e = minimal("rev");
            e[field] = value.clone();
            let err = ProfileSet::load(&custom(&[(e, "project")])).unwrap_err();
            assert!(
                matches!(&err, ProfileError::InvalidField { id, field: f, .. } if id == "rev" && *f == field),
                "{field}={value}: {err:?}"
            );
            let msg = err.to_string();
            assert!(msg.contains("\"rev\"") && msg.contains(field), "{msg}");
        }
        // null reads as absent.
        let mut e = minimal("rev");
        e["temperature"] = Value::Null;
        e["model"] = Value::Null;
        assert!(matches!(
            ProfileSet::load(&custom(&[(e, "project")])).unwrap_err(),
            ProfileError::MissingField { field: "model", .. }
        ));
    }

    #[test]
    fn duplicate_ids_merge_later_over_earlier() {
        let first = json!({"id": "rev", "name": "First", "model": "a/b", "purpose": "P", "tags": ["x"]});
        let second = json!({"id": "REV", "name": "Second", "whenToUse": "W"});
        let set =
            ProfileSet::load(&custom(&[(first, "global"), (minimal("other"), "global"), (second, "project")])).unwrap();
        assert_eq!(&set.ids()[5..], ["rev", "other"]);
        let p = set.get("rev").unwrap();
        assert_eq!((p.name.as_str(), p.model.as_str(), p.when_to_use.as_str()), ("Second", "a/b", "W"));
        assert_eq!(p.tags, ["x"]);
        assert_eq!(p.origin, "project");
    }

    #[test]
    fn unknown_fields_warn() {
        let mut e = minimal("rev");
        e["modle"] = json!("x");
        let set = ProfileSet::load(&custom(&[(e, "project")])).unwrap();
        assert_eq!(set.warnings().len(), 1);
        assert!(set.warnings()[0].contains("modle"));
    }

    #[test]
    fn advisory_means_tools_off_under_a_plain_runner_or_a_temperature() {
        let plain = RunnerSpec::Argv(plain_opencode());
        let preset = RunnerSpec::Preset(crate::agent::preset::Name::Claude);
        let mut p = builtins().remove(2);
        assert!(advisory_limits(&p, &plain).is_empty());
        p.temperature = Some(0.5);
        assert_eq!(advisory_limits(&p, &preset), ["temperature"]);
        p.temperature = None;
        p.tools.insert("bash".to_string(), false);
        assert_eq!(advisory_limits(&p, &plain), ["tool limits"]);
        assert!(advisory_limits(&p, &preset).is_empty(), "a preset enforces them");
        p.command = Some(plain);
        assert_eq!(advisory_limits(&p, &preset), ["tool limits"], "the profile's own runner counts");
    }
}
