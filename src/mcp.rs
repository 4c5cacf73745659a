//! `baton mcp`: the MCP server on stdio (rmcp), a thin face over `api` like the CLI.
//!
//! Five tools, named exactly `task_start`, `task_await`, `task_peek`, `task_list` and
//! `task_cancel`. stdout carries only the protocol; logs go to stderr.
//!
//! Answers are text content holding pretty JSON (two-space indent): the same objects the CLI's
//! `--json` prints (`task_list` answers markdown unless `format` or `ui.defaultListFormat` says
//! `json`). `responseText` is capped at `ui.maxResponseChars`.
//!
//! A tool's errors are *tool errors* (`isError: true`), never protocol errors, so that the agent
//! reads them: their text is the JSON object `{"error": "<message>"}` with the spec's message
//! (`Missing taskId/taskIds.`, `Missing workerId`, `Invalid attachment path: ...`, the
//! recursive-spawn refusal naming its variable...). A parameter of the wrong JSON type is such an
//! error too, naming the parameter: `Invalid parameter "timeoutMs": invalid type: string "soon",
//! expected f64`. An unknown profile is not an error: the job is recorded and answers
//! `{taskId, workerId, status: "failed", error}`, as from the CLI.
//!
//! Every request gets an answer. The `stdio` submodule screens each line before rmcp reads it: a
//! line that is not JSON gets a parse error (-32700, id null), params of the wrong shape invalid
//! params (-32602) naming the problem, and a lone UTF-16 surrogate in a string becomes U+FFFD.
//!
//! Sessions: `--session` / `BATON_SESSION` when given, else `<clientInfo.name>@<8 hex>` where the
//! hex is the FNV-1a hash (32 bits) of the project path, so an agent finds its own tasks again
//! after an editor restart. `requestedBy` is the client's name.

mod stdio;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, JsonObject, ProgressNotificationParam, ServerCapabilities,
    ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, ServiceExt, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::api::{self, Answer, Caller, ListParams, OpenOptions, Queue, StartParams};
use crate::error::{Error, Result};

/// `task_await`'s default wait under MCP (SPEC 4): short enough that clients do not time out.
pub const DEFAULT_AWAIT_MS: f64 = 30_000.0;

/// How often `task_await` reports progress while it waits.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Serve the tools on stdin/stdout until the client closes the connection.
pub async fn serve(opts: OpenOptions, session: Option<String>) -> Result<()> {
    let q = Queue::open(&opts).await?;
    let session = session.or_else(|| std::env::var("BATON_SESSION").ok()).filter(|s| !s.is_empty());
    tracing::info!(db = %q.store.describe(), "MCP server on stdio");
    let server = BatonMcp::new(q, session);
    let (transport, writer) = stdio::filter(tokio::io::stdin(), tokio::io::stdout());
    let served = match server.serve(transport).await {
        Ok(running) => running.waiting().await.map(drop).map_err(|e| mcp_io("serving MCP", e)),
        Err(e) => Err(mcp_io("starting the MCP server", e)),
    };
    // The last answers are on their way out: the writer ends with rmcp's output. A client that
    // has gone is not an error.
    match writer.await {
        Ok(Err(e)) => tracing::debug!("writing MCP output: {e}"),
        Err(e) => tracing::debug!("MCP output writer: {e}"),
        Ok(Ok(())) => {}
    }
    served
}

fn mcp_io(context: &str, e: impl std::fmt::Display) -> Error {
    Error::io(context, std::io::Error::other(e.to_string()))
}

/// The MCP server: an open queue, the fixed session (if any), the tools.
#[derive(Clone)]
pub struct BatonMcp {
    q: Arc<Queue>,
    /// `--session` / `BATON_SESSION`; else derived from the client's name.
    session: Option<String>,
    tool_router: ToolRouter<Self>,
}

/// FNV-1a, 32 bits: stable across builds and platforms (std's hashers are not).
fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

/// The session of a client: `<name>@<8 hex of the project path's hash>`.
pub fn session_id(client: &str, project: &std::path::Path) -> String {
    format!("{client}@{:08x}", fnv1a32(project.as_os_str().as_encoded_bytes()))
}

fn pretty(v: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|e| json!({"error": e.to_string()}).to_string())
}

fn ok_text(text: String) -> std::result::Result<CallToolResult, McpError> {
    Ok(CallToolResult::success(vec![ContentBlock::text(text)]))
}

fn ok_json(v: &impl serde::Serialize) -> std::result::Result<CallToolResult, McpError> {
    ok_text(pretty(v))
}

/// A tool error the agent reads: `{"error": "<message>"}`.
fn tool_error(message: impl std::fmt::Display) -> std::result::Result<CallToolResult, McpError> {
    Ok(CallToolResult::error(vec![ContentBlock::text(pretty(&json!({"error": message.to_string()})))]))
}

/// One object for `taskId`, an array for `taskIds` (SPEC 4).
fn answer_json(answers: &[Answer], single: bool) -> std::result::Result<CallToolResult, McpError> {
    match answers {
        [one] if single => ok_json(one),
        _ => ok_json(&answers),
    }
}

/// The input schema of a tool: its parameter struct's schema.
fn input_schema<T: JsonSchema + 'static>() -> Arc<JsonObject> {
    rmcp::handler::server::common::schema_for_input::<T>()
        .unwrap_or_else(|_| rmcp::handler::server::common::schema_for_type::<T>())
}

/// Deserialize tool arguments; a bad parameter is named. `base` holds the required parameters
/// with valid values, so that each given parameter can be checked on its own.
fn parse_args<T: DeserializeOwned>(mut args: JsonObject, base: &[(&str, Value)]) -> std::result::Result<T, String> {
    // An absent or null parameter means its default.
    args.retain(|_, v| !v.is_null());
    match serde_json::from_value::<T>(Value::Object(args.clone())) {
        Ok(t) => Ok(t),
        Err(all) => {
            for (k, v) in &args {
                let mut one: JsonObject = base.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
                one.insert(k.clone(), v.clone());
                if let Err(e) = serde_json::from_value::<T>(Value::Object(one)) {
                    return Err(format!("Invalid parameter \"{k}\": {e}"));
                }
            }
            Err(format!("Invalid parameters: {all}"))
        }
    }
}

/// Ids from `taskId` (wins; answers one object) or `taskIds` (answers an array).
fn pick_ids(task_id: Option<String>, task_ids: Option<Vec<String>>) -> Option<(Vec<String>, bool)> {
    match (task_id.filter(|s| !s.trim().is_empty()), task_ids) {
        (Some(id), _) => Some((vec![id], true)),
        (None, Some(ids)) if !ids.is_empty() => Some((ids, false)),
        _ => None,
    }
}

const MISSING_IDS: &str = "Missing taskId/taskIds.";

/// `task_await` parameters.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwaitArgs {
    /// One task id (or a unique prefix of >= 8 chars); answers one record. Wins over taskIds.
    pub task_id: Option<String>,
    /// Several task ids; answers an array of records in the same order.
    pub task_ids: Option<Vec<String>>,
    /// How long to wait in ms (default 30000; clamped to [1000, 600000]; 0 answers at once).
    /// When the time is up the records answer as they stand, with `timedOut: true`: call again.
    pub timeout_ms: Option<f64>,
}

/// `task_peek` parameters.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeekArgs {
    /// One task id (or a unique prefix of >= 8 chars); answers one record. Wins over taskIds.
    pub task_id: Option<String>,
    /// Several task ids; answers an array of records in the same order.
    pub task_ids: Option<Vec<String>>,
}

/// `task_cancel` parameters.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CancelArgs {
    /// One task id (or a unique prefix of >= 8 chars); answers one record. Wins over taskIds.
    pub task_id: Option<String>,
    /// Several task ids; answers an array of records in the same order.
    pub task_ids: Option<Vec<String>>,
    /// Why (recorded with the cancel).
    pub reason: Option<String>,
}

/// `task_diff` parameters.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DiffArgs {
    /// The id of a task (or workflow run) started with isolation "worktree" (or a unique prefix of >= 8 chars).
    pub task_id: String,
    /// Only the changed files and their line counts.
    pub stat: Option<bool>,
}

/// `task_merge` parameters.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MergeArgs {
    /// The id of a finished task (or workflow run) started with isolation "worktree".
    pub task_id: String,
    /// `merge` (default: a merge commit), `squash` (one commit), `rebase` (its commits replayed), or
    /// `apply` (its changes staged in the requester's checkout, not committed).
    pub how: Option<String>,
}

/// `task_discard` parameters.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DiscardArgs {
    /// The id of a finished task (or workflow run) started with isolation "worktree".
    pub task_id: String,
    /// Remove it even though its unmerged commits or uncommitted files are lost.
    pub force: Option<bool>,
}

const DIFF_DESCRIPTION: &str = "Show what a task started with isolation \"worktree\" changed: a unified diff \
against the commit its worktree started from (uncommitted changes included while the worktree exists). Use it \
to review a subagent's work before task_merge.";
const MERGE_DESCRIPTION: &str = "Merge a finished worktree task back into the branch it started from (how: \
merge, squash, rebase; or apply: staged in the checkout, not committed). Merges run one at a time; a conflict \
changes nothing and names the conflicting files. Answers {taskId, action, branch, target, commit, worktree}.";
const DISCARD_DESCRIPTION: &str = "Remove a finished worktree task's directory and branch. Refused while they \
hold work the target branch lacks (unmerged commits, uncommitted files) unless force is true.";

const START_INTRO: &str = "Start a task in baton's durable queue and return its id at once \
({taskId, kind, workerId, status, next}). A worker process (an agent CLI run by a profile) does \
the work in the background, in this project; the task survives restarts of everything. Use it to \
hand off a self-contained piece of work (implement, review, document, explore) that can run while \
you do something else, or several in parallel; then call task_await with the id for the result, \
or task_peek to look at its progress. Use kind=workflow with a workflowId for a multi-step \
pipeline. To chain tasks, give after=[ids]: the task waits until they succeeded (and fails if one \
fails), so you can queue a whole plan at once.";

const AWAIT_DESCRIPTION: &str = "Wait until tasks finish and answer their records (status, \
responseText, error, report, durationMs...). Use it after task_start when you need the result. \
Waits up to timeoutMs (default 30000); a wait that runs out is not a failure: the records answer \
as they stand with timedOut: true, and you can call task_await again. Sends progress \
notifications while it waits; canceling the request stops the wait (not the task: use \
task_cancel for that).";

const PEEK_DESCRIPTION: &str = "Look at tasks as they are now, without waiting or changing \
anything: status, elapsedMs, lastActivityAt, stalled, and the last lines of output \
(outputTail); for a workflow run its current step and the carry so far. Use it to check on a \
long task, or to decide whether to wait or cancel.";

const LIST_DESCRIPTION: &str = "List tasks, newest first (by default only this session's: \
scope=session; scope=all for every session), or another view: workers (live worker \
processes), profiles (the workers you can start), workflows (the pipelines you can start), \
status (workers and recent tasks). Filters: status, workerId, label (key=value), sessionId, \
since/until (ISO time or 30m, 2h, 7d ago); sort: newest, oldest, priority, duration. Use it to \
find task ids again or to see what is running.";

const CANCEL_DESCRIPTION: &str = "Cancel tasks: a waiting or queued one at once, a running one by stopping its \
whole process group (the answer comes once it is gone). Finished tasks are left as they are. \
Canceling a workflow run cancels its current step. Use it when a task is no longer wanted, \
stalled, or going the wrong way.";

/// `task_start`'s description: what it is for, then the profiles and workflows of this queue.
fn start_description(q: &Queue) -> String {
    let mut s = String::from(START_INTRO);
    s.push_str("\n\nProfiles (workerId: purpose; when to use):");
    for p in q.profiles.all() {
        s.push_str(&format!("\n- {}: {}; {}", p.id, p.purpose.trim(), p.when_to_use.trim()));
    }
    if q.workflows.is_empty() {
        s.push_str("\n\nNo workflows are defined.");
    } else {
        s.push_str("\n\nWorkflows (workflowId: description; steps):");
        for w in &q.workflows {
            let steps: Vec<String> = w.steps.iter().map(|st| format!("{} ({})", st.id, st.worker_id)).collect();
            s.push_str(&format!("\n- {}: {}; {}", w.id, w.description.trim(), steps.join(" -> ")));
        }
    }
    s
}

impl BatonMcp {
    pub fn new(q: Queue, session: Option<String>) -> BatonMcp {
        let mut tool_router = Self::tool_router();
        if let Some(route) = tool_router.map.get_mut("task_start") {
            route.attr.description = Some(start_description(&q).into());
        }
        BatonMcp { q: Arc::new(q), session, tool_router }
    }

    /// Who is calling: the client's name (from `initialize`, or a request's `_meta` client info)
    /// and the session.
    fn caller(&self, ctx: &RequestContext<RoleServer>) -> Caller {
        let client = ctx
            .peer
            .peer_info()
            .map(|i| i.client_info.name.clone())
            .or_else(|| ctx.meta.client_info().map(|c| c.name))
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| "mcp-client".to_string());
        let session = self.session.clone().unwrap_or_else(|| session_id(&client, &self.q.loc.project_dir));
        Caller { session: Some(session), requested_by: client }
    }
}

#[tool_router]
impl BatonMcp {
    #[tool(name = "task_start", description = START_INTRO, input_schema = input_schema::<StartParams>())]
    async fn task_start(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> std::result::Result<CallToolResult, McpError> {
        let args: StartParams = match parse_args(args, &[("task", json!("x"))]) {
            Ok(a) => a,
            Err(e) => return tool_error(e),
        };
        match api::start(&self.q, &self.caller(&ctx), args).await {
            Ok(answer) => ok_json(&answer),
            Err(e) => tool_error(e),
        }
    }

    #[tool(name = "task_await", description = AWAIT_DESCRIPTION, input_schema = input_schema::<AwaitArgs>())]
    async fn task_await(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> std::result::Result<CallToolResult, McpError> {
        let args: AwaitArgs = match parse_args(args, &[]) {
            Ok(a) => a,
            Err(e) => return tool_error(e),
        };
        let Some((ids, single)) = pick_ids(args.task_id, args.task_ids) else { return tool_error(MISSING_IDS) };
        let caller = self.caller(&ctx);
        let timeout_ms = api::normalize_await_timeout(Some(args.timeout_ms.unwrap_or(DEFAULT_AWAIT_MS)));
        let token = ctx.meta.get_progress_token();
        let open = AtomicUsize::new(ids.len());
        let mut seen = |_: Duration, n: usize| open.store(n, Ordering::Relaxed);
        let started = Instant::now();
        let wait = api::await_jobs(&self.q, &caller, &ids, Some(timeout_ms as f64), false, Some(&mut seen));
        tokio::pin!(wait);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let answers = loop {
            tokio::select! {
                r = &mut wait => break r,
                () = ctx.ct.cancelled() => {
                    // Dropping the wait ends it (its watcher connection closes with it).
                    tracing::info!(?ids, "task_await canceled by the client");
                    return tool_error("Canceled by the client");
                }
                _ = tick.tick(), if token.is_some() => {
                    let Some(token) = token.clone() else { continue };
                    let elapsed = started.elapsed().as_secs_f64();
                    let unfinished = open.load(Ordering::Relaxed);
                    let param = ProgressNotificationParam::new(token, elapsed.floor())
                        .with_total((timeout_ms / 1000) as f64)
                        .with_message(format!("{unfinished} of {} task(s) unfinished, {}s elapsed", ids.len(), elapsed as u64));
                    if let Err(e) = ctx.peer.notify_progress(param).await {
                        tracing::debug!("progress notification not sent: {e}");
                    }
                }
            }
        };
        match answers {
            Ok(a) => answer_json(&a, single),
            Err(e) => tool_error(e),
        }
    }

    #[tool(name = "task_peek", description = PEEK_DESCRIPTION, input_schema = input_schema::<PeekArgs>())]
    async fn task_peek(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> std::result::Result<CallToolResult, McpError> {
        let args: PeekArgs = match parse_args(args, &[]) {
            Ok(a) => a,
            Err(e) => return tool_error(e),
        };
        let Some((ids, single)) = pick_ids(args.task_id, args.task_ids) else { return tool_error(MISSING_IDS) };
        match api::peek(&self.q, &self.caller(&ctx), &ids, false).await {
            Ok(a) => answer_json(&a, single),
            Err(e) => tool_error(e),
        }
    }

    #[tool(name = "task_list", description = LIST_DESCRIPTION, input_schema = input_schema::<ListParams>())]
    async fn task_list(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> std::result::Result<CallToolResult, McpError> {
        let mut p: ListParams = match parse_args(args, &[]) {
            Ok(a) => a,
            Err(e) => return tool_error(e),
        };
        let format = p.format.clone().unwrap_or_else(|| self.q.config.config.ui.default_list_format.clone());
        if format != "markdown" && format != "json" {
            return tool_error(format!("Unknown format \"{format}\": use markdown or json"));
        }
        p.format = Some(format.clone());
        match api::list(&self.q, &self.caller(&ctx), &p, "session").await {
            Ok(l) if format == "json" => ok_json(&l.data),
            Ok(l) => ok_text(l.markdown),
            Err(e) => tool_error(e),
        }
    }

    #[tool(name = "task_cancel", description = CANCEL_DESCRIPTION, input_schema = input_schema::<CancelArgs>())]
    async fn task_cancel(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> std::result::Result<CallToolResult, McpError> {
        let args: CancelArgs = match parse_args(args, &[]) {
            Ok(a) => a,
            Err(e) => return tool_error(e),
        };
        let Some((ids, single)) = pick_ids(args.task_id, args.task_ids) else { return tool_error(MISSING_IDS) };
        match api::cancel(&self.q, &self.caller(&ctx), &ids, args.reason.as_deref()).await {
            Ok(a) => answer_json(&a, single),
            Err(e) => tool_error(e),
        }
    }

    #[tool(name = "task_diff", description = DIFF_DESCRIPTION, input_schema = input_schema::<DiffArgs>())]
    async fn task_diff(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> std::result::Result<CallToolResult, McpError> {
        let args: DiffArgs = match parse_args(args, &[]) {
            Ok(a) => a,
            Err(e) => return tool_error(e),
        };
        match api::diff(&self.q, &self.caller(&ctx), &args.task_id, args.stat.unwrap_or(false)).await {
            Ok(text) if text.is_empty() => ok_text("No changes.".to_string()),
            Ok(text) => ok_text(text),
            Err(e) => tool_error(e),
        }
    }

    #[tool(name = "task_merge", description = MERGE_DESCRIPTION, input_schema = input_schema::<MergeArgs>())]
    async fn task_merge(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> std::result::Result<CallToolResult, McpError> {
        use crate::worktree::How;
        let args: MergeArgs = match parse_args(args, &[]) {
            Ok(a) => a,
            Err(e) => return tool_error(e),
        };
        let landing = match args.how.as_deref().unwrap_or("merge") {
            "merge" => api::Landing::Merge(How::Merge),
            "squash" => api::Landing::Merge(How::Squash),
            "rebase" => api::Landing::Merge(How::Rebase),
            "apply" => api::Landing::Apply,
            other => return tool_error(format!("Unknown how \"{other}\": use merge, squash, rebase or apply")),
        };
        match api::land(&self.q, &self.caller(&ctx), &args.task_id, landing).await {
            Ok(r) => ok_json(&r),
            Err(e) => tool_error(e),
        }
    }

    #[tool(name = "task_discard", description = DISCARD_DESCRIPTION, input_schema = input_schema::<DiscardArgs>())]
    async fn task_discard(
        &self,
        args: JsonObject,
        ctx: RequestContext<RoleServer>,
    ) -> std::result::Result<CallToolResult, McpError> {
        let args: DiscardArgs = match parse_args(args, &[]) {
            Ok(a) => a,
            Err(e) => return tool_error(e),
        };
        match api::discard(&self.q, &self.caller(&ctx), &args.task_id, args.force.unwrap_or(false)).await {
            Ok(r) => ok_json(&r),
            Err(e) => tool_error(e),
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for BatonMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("baton", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "baton is a durable task queue for coding-agent workers. task_start hands off a task to a worker \
                 process and answers its id at once; task_await waits for results; task_peek looks without \
                 waiting; task_list finds tasks again; task_cancel stops them; task_diff, task_merge and \
                 task_discard review and land the work of tasks run in their own git worktree.",
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_hash_is_stable() {
        // FNV-1a 32 reference values.
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(session_id("claude-code", std::path::Path::new("/src/p")).len(), "claude-code@".len() + 8);
    }

    #[test]
    fn a_bad_parameter_is_named() {
        let args: JsonObject = serde_json::from_value(json!({"taskId": "x", "timeoutMs": "soon"})).unwrap();
        let e = parse_args::<AwaitArgs>(args, &[]).unwrap_err();
        assert!(e.contains("\"timeoutMs\"") && e.contains("soon"), "{e}");
        let args: JsonObject = serde_json::from_value(json!({"task": 5})).unwrap();
        let e = parse_args::<StartParams>(args, &[("task", json!("x"))]).unwrap_err();
        assert!(e.contains("\"task\""), "{e}");
        let e = parse_args::<StartParams>(JsonObject::new(), &[("task", json!("x"))]).unwrap_err();
        assert!(e.contains("missing field `task`"), "{e}");
        let args: JsonObject = serde_json::from_value(json!({"task": "t", "bogus": 1})).unwrap();
        let e = parse_args::<StartParams>(args, &[("task", json!("x"))]).unwrap_err();
        assert!(e.contains("\"bogus\""), "{e}");
        let args: JsonObject = serde_json::from_value(json!({"taskId": "x", "timeoutMs": null})).unwrap();
        assert!(parse_args::<AwaitArgs>(args, &[]).unwrap().timeout_ms.is_none());
    }

    #[test]
    fn task_id_wins_over_task_ids() {
        assert_eq!(pick_ids(Some("a".into()), Some(vec!["b".into()])), Some((vec!["a".to_string()], true)));
        assert_eq!(pick_ids(None, Some(vec!["b".into()])), Some((vec!["b".to_string()], false)));
        assert_eq!(pick_ids(Some(" ".into()), None), None);
        assert_eq!(pick_ids(None, Some(vec![])), None);
    }
}
