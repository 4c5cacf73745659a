//! Ready runners for the agent CLIs (opencode, claude, codex, gemini): the argv a profile's
//! access needs (a writing profile may edit, a read-only one cannot), how the prompt reaches
//! the CLI verbatim, the environment that keeps it non-interactive and quick to fail, and how
//! its output becomes the job's response, failure, tokens and cost.
//!
//! Each preset follows what the real CLI does headless (checked against the CLIs themselves):
//! claude answers an unapproved edit with a permission denial, codex sandboxes read-only and
//! refuses to run outside git, gemini refuses an untrusted folder and prints its start-up
//! errors on stderr, opencode rewrites a message given as an argument. Every preset has its CLI
//! stream JSON Lines and names their dialect (`events`), so a running task shows its activity.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::agent::extract::{Format, OutputSpec};
use crate::agent::profile::{PromptVia, Runner, RunnerItem};
use crate::agent::stream::Dialect;

/// The names of the presets.
pub const NAMES: [&str; 4] = ["opencode", "claude", "codex", "gemini"];

/// A preset, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Name {
    Opencode,
    Claude,
    Codex,
    Gemini,
}

impl Name {
    /// The preset called `name`, if there is one.
    pub fn parse(name: &str) -> Option<Name> {
        Some(match name {
            "opencode" => Name::Opencode,
            "claude" => Name::Claude,
            "codex" => Name::Codex,
            "gemini" => Name::Gemini,
            _ => return None,
        })
    }
}

/// What a profile lets its agent do, from its `tools` switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// Create and edit files (`write` and `edit` not switched off).
    pub edit: bool,
    /// Run commands (`bash` not switched off). A read-only profile never gets a shell that
    /// could write, whatever this says.
    pub bash: bool,
}

impl Access {
    /// Every tool (the `coder` profile).
    pub const FULL: Access = Access { edit: true, bash: true };
    /// Reading only (the `architect` profile).
    pub const READ_ONLY: Access = Access { edit: false, bash: false };

    /// The access a profile's `tools` switches give: a tool is allowed unless set to false.
    pub fn of(tools: &BTreeMap<String, bool>) -> Access {
        let on = |t: &str| tools.get(t).copied().unwrap_or(true);
        Access { edit: on("write") && on("edit"), bash: on("bash") }
    }
}

/// A preset resolved for one access level.
#[derive(Debug, Clone, PartialEq)]
pub struct Preset {
    /// The argv template.
    pub runner: Runner,
    /// How the prompt reaches the CLI.
    pub prompt_via: PromptVia,
    /// Environment for the CLI; a profile's own `env` overrides it.
    pub env: BTreeMap<String, String>,
    /// How its stdout becomes the result.
    pub output: OutputSpec,
}

fn cond(ptr: &str, v: Value) -> (String, Value) {
    (ptr.to_string(), v)
}

fn ptrs(list: &[&str]) -> Vec<String> {
    list.iter().map(|p| (*p).to_string()).collect()
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect()
}

fn arg(s: &str) -> RunnerItem {
    RunnerItem::Arg(s.to_string())
}

fn args(list: &[&str]) -> Vec<RunnerItem> {
    list.iter().map(|s| arg(s)).collect()
}

fn group(list: &[&str]) -> RunnerItem {
    RunnerItem::Group(list.iter().map(|s| (*s).to_string()).collect())
}

/// The agent presets of server profiles: the agents' ACP servers (`"command": "opencode-acp"`).
pub const ACP_NAMES: [&str; 4] = ["opencode-acp", "claude-acp", "codex-acp", "gemini-acp"];

/// An agent preset of a server profile, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Acp {
    pub runner: Runner,
    pub env: BTreeMap<String, String>,
    /// The session mode a profile with this access needs (codex starts read-only).
    pub session_mode: Option<String>,
}

/// An ACP agent's argv and environment for a server profile, by preset name. baton answers the
/// agent's permission requests from the profile's tools (see `agent::permission`), so each agent
/// is set to ask rather than to decide alone; codex, which starts every session read-only, gets
/// its `auto` mode for a profile that may edit.
pub fn acp(name: &str, access: Access) -> Option<Acp> {
    let mut session_mode = None;
    let (argv, env) = match name {
        // opencode's own default lets every edit and command run unasked.
        "opencode-acp" => {
            (args(&["opencode", "acp"]), env(&[("OPENCODE_PERMISSION", r#"{"edit":"ask","bash":"ask"}"#)]))
        }
        // With IS_SANDBOX set the adapter starts Claude Code with --dangerously-skip-permissions,
        // which Claude Code refuses as root: every session/new then fails. Empty, it is unset
        // for both.
        "claude-acp" => (args(&["claude-code-acp"]), env(&[("CLAUDE_CODE_MAX_RETRIES", "2"), ("IS_SANDBOX", "")])),
        "codex-acp" => {
            if access.edit {
                session_mode = Some("auto".to_string());
            }
            (args(&["codex-acp"]), BTreeMap::new())
        }
        "gemini-acp" => {
            let mut a = args(&["gemini", "--acp"]);
            a.push(group(&["--model", "{model}"]));
            (a, BTreeMap::new())
        }
        _ => return None,
    };
    Some(Acp { runner: Runner::from_items(argv), env, session_mode })
}

/// A preset for a profile with this access.
pub fn get(name: Name, access: Access) -> Preset {
    match name {
        Name::Opencode => opencode(access),
        Name::Claude => claude(access),
        Name::Codex => codex(access),
        Name::Gemini => gemini(access),
    }
}

/// `opencode run --format json`: JSON Lines events (read as activity while it runs); the
/// answer is the last `text` event's part text, an `error` event fails the job, tokens and cost come from `step_finish` parts. A
/// read-only profile runs opencode's own read-only `plan` agent.
fn opencode(access: Access) -> Preset {
    let mut argv = args(&["opencode", "run", "--format", "json"]);
    if !access.edit {
        argv.extend(args(&["--agent", "plan"]));
    }
    argv.push(group(&["--model", "{model}"]));
    // The plan agent refuses `write` but lets bash write files: a read-only profile gets no
    // edit and no shell at all.
    let env =
        if access.edit { BTreeMap::new() } else { env(&[("OPENCODE_PERMISSION", r#"{"edit":"deny","bash":"deny"}"#)]) };
    Preset {
        runner: Runner::from_items(argv),
        prompt_via: PromptVia::Stdin,
        env,
        output: OutputSpec {
            format: Format::Jsonl,
            where_: vec![cond("/type", json!("text"))],
            text: Some("/part/text".into()),
            failed_where: vec![cond("/type", json!("error"))],
            error: Some("/error/data/message".into()),
            denied_where: vec![
                cond("/type", json!("tool_use")),
                cond("/part/state/error", json!("The user rejected permission to use this specific tool call.")),
            ],
            input_tokens: ptrs(&["/part/tokens/input", "/part/tokens/cache/read", "/part/tokens/cache/write"]),
            output_tokens: ptrs(&["/part/tokens/output", "/part/tokens/reasoning"]),
            cached_tokens: ptrs(&["/part/tokens/cache/read"]),
            cost: Some("/part/cost".into()),
            events: Some(Dialect::Opencode),
            ..Default::default()
        },
    }
}

/// `claude -p --output-format stream-json --verbose`: JSON Lines as it works (its messages,
/// tool calls and results, read as activity), ending with a `result` line, the same document
/// `--output-format json` prints: `result` is the answer, `is_error` fails the job, and so does
/// a permission denial. Tokens and cost come from that line alone (an assistant line's usage
/// sits under `/message`). A writing profile accepts edits (and runs commands when it may); a
/// read-only one does not see the editing tools or the shell at all.
fn claude(access: Access) -> Preset {
    let mut argv = args(&["claude", "-p", "--output-format", "stream-json", "--verbose"]);
    if access.edit {
        argv.extend(args(&["--permission-mode", "acceptEdits"]));
        if access.bash {
            argv.extend(args(&["--allowedTools", "Bash"]));
        }
    } else {
        argv.extend(args(&["--disallowedTools", "Write,Edit,NotebookEdit,Bash"]));
    }
    argv.push(group(&["--model", "{model}"]));
    argv.push(group(&["--append-system-prompt", "{systemPrompt}"]));
    Preset {
        runner: Runner::from_items(argv),
        prompt_via: PromptVia::Stdin,
        env: env(&[("CLAUDE_CODE_MAX_RETRIES", "2")]),
        output: OutputSpec {
            format: Format::Jsonl,
            where_: vec![cond("/type", json!("result"))],
            text: Some("/result".into()),
            failed: Some("/is_error".into()),
            error: Some("/result".into()),
            denials: Some("/permission_denials".into()),
            input_tokens: ptrs(&[
                "/usage/input_tokens",
                "/usage/cache_creation_input_tokens",
                "/usage/cache_read_input_tokens",
            ]),
            output_tokens: ptrs(&["/usage/output_tokens"]),
            cached_tokens: ptrs(&["/usage/cache_read_input_tokens"]),
            cost: Some("/total_cost_usd".into()),
            events: Some(Dialect::Claude),
            ..Default::default()
        },
    }
}

/// `codex exec --json`: JSON Lines events (read as activity while it runs); the answer is the
/// last completed agent message,
/// `turn.failed` fails the job. A writing profile gets the workspace-write sandbox, a read-only
/// one the read-only sandbox (where running outside git risks nothing).
fn codex(access: Access) -> Preset {
    let mut argv = args(&["codex", "exec", "--json"]);
    if access.edit {
        argv.extend(args(&["--sandbox", "workspace-write"]));
    } else {
        argv.extend(args(&["--sandbox", "read-only", "--skip-git-repo-check"]));
    }
    argv.push(group(&["--model", "{model}"]));
    argv.push(arg("-"));
    Preset {
        runner: Runner::from_items(argv),
        prompt_via: PromptVia::Stdin,
        env: BTreeMap::new(),
        output: OutputSpec {
            format: Format::Jsonl,
            where_: vec![cond("/type", json!("item.completed")), cond("/item/type", json!("agent_message"))],
            text: Some("/item/text".into()),
            failed_where: vec![cond("/type", json!("turn.failed"))],
            error: Some("/error/message".into()),
            input_tokens: ptrs(&["/usage/input_tokens"]),
            output_tokens: ptrs(&["/usage/output_tokens"]),
            cached_tokens: ptrs(&["/usage/cached_input_tokens"]),
            events: Some(Dialect::Codex),
            ..Default::default()
        },
    }
}

/// `gemini --output-format stream-json`: JSON Lines as it works (init, messages, tool_use and
/// tool_result, read as activity), ending with a `result` line. The answer is the assistant's
/// message deltas after its last tool call (what `--output-format json` calls `response`); a
/// `result` with status `error` fails the job, and so does an `error` document on stderr (what
/// it prints when it cannot start). Tokens come from the result's stats, summed over models
/// (its `output_tokens` leave thoughts out, its total counts them). A writing profile
/// auto-approves edits, a read-only one runs gemini's read-only `plan` mode.
fn gemini(access: Access) -> Preset {
    let mode = if access.edit { "auto_edit" } else { "plan" };
    Preset {
        runner: Runner::from_items(vec![
            arg("gemini"),
            arg("--output-format"),
            arg("stream-json"),
            arg("--skip-trust"),
            arg("--approval-mode"),
            arg(mode),
            group(&["--model", "{model}"]),
        ]),
        prompt_via: PromptVia::Stdin,
        env: BTreeMap::new(),
        output: OutputSpec {
            format: Format::Jsonl,
            where_: vec![cond("/type", json!("message")), cond("/role", json!("assistant"))],
            text: Some("/content".into()),
            join: true,
            join_with: Some(String::new()),
            after_where: vec![cond("/type", json!("tool_use"))],
            failed: Some("/error".into()),
            failed_where: vec![cond("/type", json!("result")), cond("/status", json!("error"))],
            error: Some("/error/message".into()),
            tokens: ptrs(&["/stats/total_tokens"]),
            input_tokens: ptrs(&["/stats/input_tokens"]),
            output_tokens: ptrs(&["/stats/output_tokens"]),
            cached_tokens: ptrs(&["/stats/cached"]),
            events: Some(Dialect::Gemini),
            ..Default::default()
        },
    }
}
