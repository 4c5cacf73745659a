//! The presets with the real agent CLIs (installed from npm by `.ci/agent-clis` into
//! `target/agent-clis`, or found in `$BATON_AGENT_CLIS`), run offline by a real dispatcher
//! against a fake model server on 127.0.0.1: a writing profile's file exists, a read-only
//! profile's does not, an HTTP 400 fails the task with the server's message, tokens count the
//! cached ones, and the CLI's streamed JSON Lines became the task's activity events as it ran.
//! A test whose CLI is absent says so and passes without running.

use std::path::PathBuf;

use crate::common::fake_model::{self, FakeModel, Reply};
use crate::common::{self, TestQueue};
use serde_json::{Value, json};

/// The directory holding the CLIs' executables, when `name` is installed there.
pub fn cli_dir(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("BATON_AGENT_CLIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/agent-clis/node_modules/.bin"));
    if dir.join(name).exists() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: the real `{name}` CLI is not installed in {} (run `bash .ci/agent-clis`, or point \
             BATON_AGENT_CLIS at a node_modules/.bin holding it)",
            dir.display()
        );
        None
    }
}

/// A queue whose project is a real git repository, with `runner` as its configured runner.
fn queue(runner: &str) -> TestQueue {
    queue_with(json!(runner))
}

pub fn queue_with(runner: Value) -> TestQueue {
    let q = TestQueue::with_overrides(json!({"runner": runner, "jobs": {"maxAttempts": 1, "timeoutMs": 120000}}));
    std::fs::remove_dir_all(q.project.join(".git")).unwrap();
    let git = |args: &[&str]| {
        let o = std::process::Command::new("git").args(args).current_dir(&q.project).output().unwrap();
        assert!(o.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    git(&["init", "-q"]);
    git(&["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "init"]);
    q
}

/// Start a dispatcher whose workers find the CLIs on PATH and the fake server in `env`.
pub fn dispatcher(q: &TestQueue, bin: &std::path::Path, env: &[(&str, String)]) -> common::Term {
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let mut c = q.cmd();
    c.arg("run").env("PATH", path).stderr(std::process::Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    common::Term(c.spawn().unwrap())
}

fn run(q: &TestQueue, worker: &str, task: &str) -> Value {
    let id = q.start(&["--worker", worker, "--", task]);
    q.json(&["task", "await", &id, "--timeout", "150000"]).0
}

/// "kind: text" of the events a finished task recorded while its CLI ran, oldest first.
fn events(q: &TestQueue, task: &Value) -> Vec<String> {
    let c = q.raw();
    let mut st = c.prepare("SELECT kind, text FROM job_events WHERE job_id = ?1 ORDER BY seq").unwrap();
    let rows = st.query_map([task["id"].as_str().unwrap()], |r| {
        Ok(format!("{}: {}", r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    });
    rows.unwrap().map(Result::unwrap).collect()
}

/// Start a task whose CLI spends seconds in a tool call, and see its activity while it runs:
/// `doing` (the tool call's event text) is in `job_events` and in peek before the task ends.
fn live(q: &TestQueue, worker: &str, task: &str, doing: &str) -> Value {
    let id = q.start(&["--worker", worker, "--", task]);
    let seen = |kind: &str| {
        q.raw()
            .query_row(
                "SELECT count(*) FROM job_events WHERE job_id = ?1 AND kind = ?2 AND text = ?3",
                [&id, kind, doing],
                |r| r.get::<_, i64>(0),
            )
            .unwrap()
            > 0
    };
    common::wait_for(90, &format!("the event {doing:?}"), || seen("tool") || q.state(&id) != "running");
    let (peek, _) = q.json(&["task", "peek", &id]);
    assert_eq!((peek["status"].as_str(), peek["activity"]["doing"].as_str()), (Some("running"), Some(doing)), "{peek}");
    q.json(&["task", "await", &id, "--timeout", "150000"]).0
}

/// The task recorded these events (each "kind: text", in this order, others between them).
#[track_caller]
fn assert_events(q: &TestQueue, task: &Value, expected: &[&str]) {
    let all = events(q, task);
    let mut rest = all.iter();
    for want in expected {
        assert!(rest.any(|e| e == want), "no {want:?} in order among the events: {all:#?}");
    }
}

pub fn claude_env(m: &FakeModel) -> Vec<(&'static str, String)> {
    vec![
        ("ANTHROPIC_BASE_URL", m.url()),
        ("ANTHROPIC_API_KEY", "sk-ant-test".into()),
        ("DISABLE_TELEMETRY", "1".into()),
        ("DISABLE_AUTOUPDATER", "1".into()),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".into()),
    ]
}

#[test]
fn claude_writes_as_coder_not_as_architect_and_fails_on_a_400() {
    let Some(bin) = cli_dir("claude") else { return };
    let _g = common::heavy();
    let q = queue("claude");
    // A profile that runs plain `claude -p` (no permission mode) but reads its output like the preset.
    let plain = json!({"id": "plain", "name": "p", "model": "node", "purpose": "p", "whenToUse": "w",
        "command": ["claude", "-p", "--output-format", "stream-json", "--verbose"], "promptVia": "stdin", "output": "claude"});
    std::fs::write(
        q.project.join(".baton/config.json"),
        serde_json::to_string(&json!({"autoSpawn": false, "runner": "claude", "profiles": [plain],
            "jobs": {"maxAttempts": 1, "timeoutMs": 120000}}))
        .unwrap(),
    )
    .unwrap();
    let target = q.project.join("hello.txt");
    let write = Reply::tool("Write", json!({"file_path": target.display().to_string(), "content": "hi\n"}));
    let m = FakeModel::start(vec![
        write.clone(),
        Reply::text("## Summary\nwrote it"),
        Reply::error(400, "bad request: no such model"),
        write.clone(),
        Reply::text("could not"),
        Reply::tool("Bash", json!({"command": "sleep 3", "description": "wait"})),
        Reply::text("## Summary\nslept"),
        // Not offered to a read-only profile: the fake answers with a text saying so.
        Reply::tool("Bash", json!({"command": format!("echo hi > {}", target.display())})),
        Reply::error(500, "the server is down"),
    ]);
    let _d = dispatcher(&q, &bin, &claude_env(&m));

    let v = run(&q, "coder", "write \"hi\" into hello.txt");
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "hi\n");
    assert_eq!(v["responseText"], "## Summary\nwrote it");
    // Its stream-json while it ran: the tool call, its result, the answer, the usage.
    assert_events(
        &q,
        &v,
        &[
            "tool: edit \"Write hello.txt\" (pending)",
            "tool_update: edit \"Write hello.txt\" (completed)",
            "message: ## Summary\nwrote it",
            "usage: tokens: 660 in (600 cached), 10 out, $0.0009",
        ],
    );
    let cached = fake_model::ANTHROPIC_CACHE_READ_TOKENS as i64;
    assert!(v["cachedTokens"].as_i64().is_some_and(|c| c >= cached), "cached tokens counted: {v}");
    assert!(v["inputTokens"].as_i64() >= v["cachedTokens"].as_i64(), "{v}");
    let first = m.main_requests().into_iter().next().unwrap();
    assert!(first.body_text().contains(r#"write \"hi\" into hello.txt"#), "the prompt verbatim: {}", first.body_text());

    let v = run(&q, "coder", "now fail");
    assert_eq!(v["status"], "failed", "{v}");
    assert!(v["error"].as_str().unwrap().contains("bad request: no such model"), "{v}");
    assert!(
        events(&q, &v).iter().any(|e| e.starts_with("other: error: ") && e.contains("no such model")),
        "{:#?}",
        events(&q, &v)
    );

    // Without a permission mode claude refuses the write and says so in its JSON: that fails.
    std::fs::remove_file(&target).unwrap();
    let v = run(&q, "plain", "write hello.txt");
    assert_eq!(v["status"], "failed", "{v}");
    assert!(v["error"].as_str().unwrap().contains("refused permission for Write"), "{v}");
    assert!(!target.exists());
    assert_events(
        &q,
        &v,
        &["tool_update: edit \"Write hello.txt\" (failed)", "permission: refused edit \"Write hello.txt\""],
    );

    // stream-json reaches the log as claude works: the command shows while it runs.
    let v = live(&q, "coder", "wait a little", "execute \"Bash sleep 3\" (pending)");
    assert_eq!(
        (v["status"].as_str(), v["responseText"].as_str()),
        (Some("succeeded"), Some("## Summary\nslept")),
        "{v}"
    );
    assert_events(&q, &v, &["tool_update: execute \"Bash sleep 3\" (completed)"]);

    // A read-only profile is not offered the editing tools or the shell at all.
    let v = run(&q, "architect", "write hello.txt");
    assert!(!target.exists(), "{v}");
    let answer = v["responseText"].as_str().unwrap_or_default();
    assert!(answer.contains("no offered tool ends with \"Bash\""), "{v}");
    let offered = m.main_requests().last().unwrap().body_text();
    assert!(!offered.contains("\"Write\"") && !offered.contains("\"Edit\""), "{offered}");

    // An API that keeps failing fails the task after the preset's two retries, not minutes later.
    let before = m.main_requests().len();
    let v = run(&q, "coder", "now the server fails");
    assert_eq!(v["status"], "failed", "{v}");
    assert!(v["error"].as_str().unwrap().contains("the server is down"), "{v}");
    assert_eq!(m.main_requests().len() - before, 3, "one request and two retries");
}

pub fn codex_home(q: &TestQueue, m: &FakeModel) -> Vec<(&'static str, String)> {
    let dir = q.home.join(".codex");
    std::fs::create_dir_all(&dir).unwrap();
    let config = format!(
        "model = \"fake-model\"\nmodel_provider = \"fake\"\n\n[model_providers.fake]\nname = \"fake\"\n\
         base_url = \"{}/v1\"\nwire_api = \"responses\"\nenv_key = \"FAKE_API_KEY\"\n\
         request_max_retries = 0\nstream_max_retries = 0\n",
        m.url()
    );
    std::fs::write(dir.join("config.toml"), config).unwrap();
    vec![("FAKE_API_KEY", "sk-test".into()), ("CODEX_HOME", dir.display().to_string())]
}

#[test]
fn codex_writes_in_the_workspace_sandbox_and_reads_only_when_read_only() {
    let Some(bin) = cli_dir("codex") else { return };
    let _g = common::heavy();
    let q = queue("codex");
    let target = q.project.join("hello.txt");
    let m = FakeModel::start(vec![
        Reply::tool("exec_command", json!({"cmd": "printf 'hi\\n' > hello.txt"})),
        Reply::text("## Summary\nwrote it"),
        Reply::error(400, "bad request: no such model"),
        Reply::tool("exec_command", json!({"cmd": "printf 'hi\\n' > hello.txt"})),
        Reply::text("tried"),
        Reply::tool("exec_command", json!({"cmd": "sleep 3"})),
        Reply::text("## Summary\nslept"),
    ]);
    let _d = dispatcher(&q, &bin, &codex_home(&q, &m));
    let v = run(&q, "coder", "write \"hi\" into hello.txt");
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(std::fs::read_to_string(&target).unwrap_or_default(), "hi\n", "{v}");
    assert_eq!(v["responseText"], "## Summary\nwrote it");
    assert_eq!(v["cachedTokens"].as_i64(), Some(2 * fake_model::CACHED_TOKENS as i64), "{v}");
    assert_events(
        &q,
        &v,
        &[
            "tool: execute \"printf 'hi\\n' > hello.txt\" (in_progress)",
            "tool_update: execute \"printf 'hi\\n' > hello.txt\" (completed)",
            "message: ## Summary\nwrote it",
            "usage: tokens: 660 in (600 cached), 10 out",
        ],
    );

    let v = run(&q, "coder", "now fail");
    assert_eq!(v["status"], "failed", "{v}");
    assert!(v["error"].as_str().unwrap().contains("bad request: no such model"), "{v}");
    assert!(!v["responseText"].as_str().unwrap_or_default().contains("thread.started"), "no raw JSON Lines: {v}");
    assert!(
        events(&q, &v).iter().any(|e| e.starts_with("other: turn failed: ") && e.contains("no such model")),
        "{:#?}",
        events(&q, &v)
    );

    // The read-only sandbox keeps the same command from writing.
    std::fs::remove_file(&target).unwrap();
    let v = run(&q, "explorer", "write \"hi\" into hello.txt");
    assert_eq!(v["status"], "succeeded", "{v}");
    assert!(!target.exists(), "a read-only profile wrote a file: {v}");
    assert_eq!(m.consumed(), 5);

    // The JSON Lines reach the log as codex works: the command shows while it runs.
    let v = live(&q, "coder", "wait a little", "execute \"sleep 3\" (in_progress)");
    assert_eq!(
        (v["status"].as_str(), v["responseText"].as_str()),
        (Some("succeeded"), Some("## Summary\nslept")),
        "{v}"
    );
    assert_events(&q, &v, &["tool_update: execute \"sleep 3\" (completed)"]);
}

#[test]
fn codex_outside_git_says_why_it_failed() {
    let Some(bin) = cli_dir("codex") else { return };
    let _g = common::heavy();
    let q = queue("codex");
    std::fs::remove_dir_all(q.project.join(".git")).unwrap();
    let m = FakeModel::start(vec![Reply::text("never asked")]);
    let _d = dispatcher(&q, &bin, &codex_home(&q, &m));
    let v = run(&q, "coder", "edit something");
    assert_eq!(v["status"], "failed", "{v}");
    let error = v["error"].as_str().unwrap();
    assert!(error.starts_with("Worker exited with code 1: ") && error.contains("trusted directory"), "{v}");
    let v = run(&q, "explorer", "look around");
    assert_eq!((v["status"].as_str(), v["responseText"].as_str()), (Some("succeeded"), Some("never asked")), "{v}");
}

pub fn gemini_env(q: &TestQueue, m: &FakeModel) -> Vec<(&'static str, String)> {
    let dir = q.home.join(".gemini");
    std::fs::create_dir_all(&dir).unwrap();
    let settings = json!({
        "security": {"auth": {"selectedType": "gemini-api-key"}},
        "general": {"enableAutoUpdate": false, "enableAutoUpdateNotification": false},
        "privacy": {"usageStatisticsEnabled": false},
        "telemetry": {"enabled": false}
    });
    std::fs::write(dir.join("settings.json"), settings.to_string()).unwrap();
    vec![("GEMINI_API_KEY", "test-key".into()), ("GOOGLE_GEMINI_BASE_URL", m.url())]
}

#[test]
fn gemini_writes_with_auto_edit_not_in_plan_mode_and_reads_its_errors_from_stderr() {
    let Some(bin) = cli_dir("gemini") else { return };
    let _g = common::heavy();
    let q = queue("gemini");
    let target = q.project.join("hello.txt");
    let write = Reply::tool("write_file", json!({"file_path": target.display().to_string(), "content": "hi\n"}));
    let m = FakeModel::start(vec![
        write.clone(),
        Reply::text("## Summary\nwrote it"),
        Reply::error(400, "bad request: no such model"),
        write,
        Reply::text("could not"),
    ]);
    let _d = dispatcher(&q, &bin, &gemini_env(&q, &m));
    // A prompt that looks like a flag reaches the model verbatim (it goes on stdin).
    let prompt = "-x: write \"hi\" into hello.txt,\n  then say 'done'";
    let v = run(&q, "coder", prompt);
    assert_eq!(v["status"], "succeeded", "{v}");
    let first = m.main_requests().into_iter().next().unwrap();
    let sent = serde_json::to_string(prompt).unwrap();
    assert!(first.body_text().contains(sent.trim_matches('"')), "the prompt verbatim: {}", first.body_text());
    assert_eq!(std::fs::read_to_string(&target).unwrap_or_default(), "hi\n", "{v}");
    assert_eq!(v["responseText"], "## Summary\nwrote it");
    assert!(v["cachedTokens"].as_i64().is_some_and(|c| c >= fake_model::CACHED_TOKENS as i64), "{v}");
    assert_events(
        &q,
        &v,
        &[
            "tool: edit \"write_file hello.txt\" (pending)",
            "tool_update: edit \"write_file hello.txt\" (completed)",
            "message: ## Summary\nwrote it",
        ],
    );
    // Its result's stats, as the record counts them (gemini makes more requests than the script has).
    let usage =
        format!("usage: tokens: {} in ({} cached), {} out", v["inputTokens"], v["cachedTokens"], v["outputTokens"]);
    assert_eq!(events(&q, &v).last(), Some(&usage), "{v}");

    let v = run(&q, "coder", "now fail");
    assert_eq!((v["status"].as_str(), v["exitCode"].as_i64()), (Some("failed"), Some(144)), "{v}");
    assert!(v["error"].as_str().unwrap().contains("bad request: no such model"), "{v}");
    assert!(
        events(&q, &v).iter().any(|e| e.starts_with("other: error: ") && e.contains("no such model")),
        "{:#?}",
        events(&q, &v)
    );

    std::fs::remove_file(&target).unwrap();
    let v = run(&q, "architect", "write \"hi\" into hello.txt");
    assert!(!target.exists(), "plan mode wrote a file: {v}");
}

pub fn opencode_env(q: &TestQueue, m: &FakeModel) -> Vec<(&'static str, String)> {
    let dir = q.home.join(".config/opencode");
    std::fs::create_dir_all(&dir).unwrap();
    let config = json!({
        "$schema": "https://opencode.ai/config.json",
        "autoupdate": false,
        "share": "disabled",
        "provider": {"fake": {
            "npm": "@ai-sdk/openai-compatible",
            "name": "Fake",
            "options": {"baseURL": format!("{}/v1", m.url()), "apiKey": "sk-test"},
            "models": {"fake-model": {"name": "Fake model"}}
        }},
        "model": "fake/fake-model",
        "small_model": "fake/fake-model"
    });
    std::fs::write(dir.join("opencode.json"), config.to_string()).unwrap();
    vec![
        ("XDG_DATA_HOME", q.home.join(".local/share").display().to_string()),
        ("XDG_CACHE_HOME", q.home.join(".cache").display().to_string()),
        ("XDG_STATE_HOME", q.home.join(".local/state").display().to_string()),
        ("OPENCODE_DISABLE_AUTOUPDATE", "1".into()),
        ("OPENCODE_DISABLE_MODELS_FETCH", "1".into()),
    ]
}

#[test]
fn opencode_gets_the_prompt_verbatim_and_writes_only_as_a_writing_profile() {
    let Some(bin) = cli_dir("opencode") else { return };
    let _g = common::heavy();
    let q = queue("opencode");
    let target = q.project.join("hello.txt");
    let write = Reply::tool("write", json!({"filePath": target.display().to_string(), "content": "hi\n"}));
    let outside = q.dir.path().join("outside.txt");
    let m = FakeModel::start(vec![
        write.clone(),
        Reply::text("## Summary\nwrote it"),
        // Auto-rejected: the run ends there.
        Reply::tool("write", json!({"filePath": outside.display().to_string(), "content": "hi\n"})),
        // Neither is offered to a read-only profile: the fake answers with a text saying so.
        write.clone(),
        Reply::tool("bash", json!({"command": "echo hi > hello.txt", "description": "write"})),
        Reply::error(400, "bad request: no such model"),
    ]);
    let _d = dispatcher(&q, &bin, &opencode_env(&q, &m));
    let prompt = "write \"hi\" into hello.txt,\n  then say 'done' {model}";
    let v = run(&q, "coder", prompt);
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(std::fs::read_to_string(&target).unwrap_or_default(), "hi\n", "{v}");
    assert_eq!(v["responseText"], "## Summary\nwrote it");
    let first = m.main_requests().into_iter().next().unwrap();
    let sent = serde_json::to_string(prompt).unwrap();
    assert!(first.body_text().contains(sent.trim_matches('"')), "the prompt verbatim: {}", first.body_text());
    assert_events(
        &q,
        &v,
        &[
            "tool: edit \"write hello.txt\" (completed)",
            "usage: tokens: 330 in (300 cached), 5 out",
            "message: ## Summary\nwrote it",
            "usage: tokens: 660 in (600 cached), 10 out",
        ],
    );

    // A write outside the project asks for a permission that `opencode run` auto-rejects: the
    // task fails instead of succeeding with the work undone.
    let v = run(&q, "coder", "write outside");
    assert!(!outside.exists(), "{v}");
    assert_eq!(v["status"], "failed", "{v}");
    let error = v["error"].as_str().unwrap();
    assert!(error.contains(&format!("refused permission for write ({})", outside.display())), "{v}");
    let refused = format!("edit \"write {}\"", outside.display());
    assert_events(&q, &v, &[&format!("tool: {refused} (failed)"), &format!("permission: refused {refused}")]);

    // A read-only profile runs opencode's plan agent, with edits and the shell denied: neither
    // tool is offered.
    std::fs::remove_file(&target).unwrap();
    let v = run(&q, "architect", "write \"hi\" into hello.txt");
    assert!(!target.exists(), "{v}");
    assert!(v["responseText"].as_str().unwrap_or_default().contains("no offered tool ends with \"write\""), "{v}");
    let v = run(&q, "architect", "write it with the shell");
    assert!(!target.exists(), "the plan agent's shell wrote a file: {v}");
    assert!(v["responseText"].as_str().unwrap_or_default().contains("no offered tool ends with \"bash\""), "{v}");

    // A plain HTTP 400 is not retried: the task fails with the server's message.
    let v = run(&q, "coder", "now fail");
    assert_eq!(v["status"], "failed", "{v}");
    assert!(v["error"].as_str().unwrap().contains("bad request: no such model"), "{v}");
}

/// The script of an agent that starts a baton task over MCP, awaits it and answers.
fn mcp_script() -> Vec<Reply> {
    vec![
        Reply::tool("task_start", json!({"task": "echo hello-from-baton", "workerId": "coder"})),
        Reply::tool("task_await", json!({"taskId": fake_model::TASK_ID, "timeoutMs": 60000})),
        Reply::text("the task said hello"),
    ]
}

/// Run an agent CLI in the project as a person would (not as a baton worker), with `env`, the
/// prompt on stdin; then check that its MCP calls ran a task to the end and that the awaited
/// result reached the model.
fn mcp_round_trip(q: &TestQueue, m: &FakeModel, bin: &std::path::Path, argv: &[&str], env: &[(&str, String)]) {
    let _d = q.dispatcher();
    let mut c = std::process::Command::new(bin.join(argv[0]));
    q.isolate(&mut c);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    // As from a shell in the project: opencode starts its MCP servers in $PWD.
    c.args(&argv[1..]).env("PATH", path).env("PWD", &q.project).env_remove("BATON_DB");
    c.stdin(std::process::Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Run `echo hello-from-baton` as a baton task and tell me what it said.")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let (list, _) = q.json(&["task", "list"]);
    let tasks = list.as_array().cloned().unwrap_or_default();
    assert_eq!(tasks.len(), 1, "one task started over MCP: {list}\nstdout: {out}\nstderr: {err}");
    assert_eq!(tasks[0]["status"], "succeeded", "{list}");
    let last = m.main_requests().last().unwrap().body_text();
    assert!(
        last.contains("hello-from-baton") && last.contains("succeeded"),
        "the awaited record reached the model: {last}"
    );
    assert!(out.contains("the task said hello"), "stdout: {out}\nstderr: {err}");
}

#[test]
fn claude_code_uses_baton_over_mcp_as_the_readme_registers_it() {
    let Some(bin) = cli_dir("claude") else { return };
    let _g = common::heavy();
    let q = queue_with(json!(["sh", "-c", "{prompt}"]));
    let m = FakeModel::start(mcp_script());
    let block = json!({"mcpServers": {"baton": {"command": common::BIN, "args": ["mcp"],
        "env": {"BATON_DB": q.db.display().to_string()}}}});
    std::fs::write(q.project.join(".mcp.json"), block.to_string()).unwrap();
    let argv = [
        "claude",
        "-p",
        "--output-format",
        "json",
        "--allowedTools",
        "mcp__baton__task_start,mcp__baton__task_await,mcp__baton__task_peek",
        "--",
    ];
    mcp_round_trip(&q, &m, &bin, &argv, &claude_env(&m));
}

#[test]
fn codex_uses_baton_over_mcp_as_the_readme_registers_it() {
    let Some(bin) = cli_dir("codex") else { return };
    let _g = common::heavy();
    let q = queue_with(json!(["sh", "-c", "{prompt}"]));
    let m = FakeModel::start(mcp_script());
    let env = codex_home(&q, &m);
    let block = format!(
        "\n[mcp_servers.baton]\ncommand = \"{}\"\nargs = [\"mcp\"]\nenv = {{ BATON_DB = \"{}\" }}\n\
         default_tools_approval_mode = \"approve\"\ntool_timeout_sec = 60\n",
        common::BIN,
        q.db.display()
    );
    let config = q.home.join(".codex/config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&block);
    std::fs::write(&config, text).unwrap();
    mcp_round_trip(&q, &m, &bin, &["codex", "exec", "--json", "-"], &env);
}

#[test]
fn gemini_cli_uses_baton_over_mcp_as_the_readme_registers_it() {
    let Some(bin) = cli_dir("gemini") else { return };
    let _g = common::heavy();
    let q = queue_with(json!(["sh", "-c", "{prompt}"]));
    let m = FakeModel::start(mcp_script());
    let env = gemini_env(&q, &m);
    let settings = q.home.join(".gemini/settings.json");
    let mut s: Value = serde_json::from_str(&std::fs::read_to_string(&settings).unwrap()).unwrap();
    s["mcpServers"] = json!({"baton": {"command": common::BIN, "args": ["mcp"],
        "env": {"BATON_DB": q.db.display().to_string()}, "trust": true}});
    std::fs::write(&settings, s.to_string()).unwrap();
    mcp_round_trip(&q, &m, &bin, &["gemini", "--skip-trust", "--output-format", "json", "-p", " "], &env);
}

#[test]
fn opencode_uses_baton_over_mcp_as_the_readme_registers_it() {
    let Some(bin) = cli_dir("opencode") else { return };
    let _g = common::heavy();
    let q = queue_with(json!(["sh", "-c", "{prompt}"]));
    let m = FakeModel::start(mcp_script());
    let env = opencode_env(&q, &m);
    let path = q.home.join(".config/opencode/opencode.json");
    let mut s: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    s["mcp"] = json!({"baton": {"type": "local", "command": [common::BIN, "mcp"],
        "environment": {"BATON_DB": q.db.display().to_string()}, "enabled": true, "timeout": 60000}});
    std::fs::write(&path, s.to_string()).unwrap();
    mcp_round_trip(&q, &m, &bin, &["opencode", "run", "--format", "json"], &env);
}
