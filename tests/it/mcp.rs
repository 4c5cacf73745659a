//! `baton mcp` driven by a real MCP client (rmcp's) over stdio: the tools, their schemas,
//! the answers, progress, client cancellation, bad inputs, and the recursive-spawn guard.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{self, TestQueue, wait_for};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ClientRequest, Implementation,
    ProgressNotificationParam, Request,
};
use rmcp::service::{NotificationContext, PeerRequestOptions, RunningService};
use rmcp::transport::TokioChildProcess;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};

const CLIENT: &str = "mcp-test";

/// A client that records the progress notifications it receives.
#[derive(Clone, Default)]
struct TestClient {
    progress: Arc<Mutex<Vec<ProgressNotificationParam>>>,
}

impl ClientHandler for TestClient {
    async fn on_progress(&self, params: ProgressNotificationParam, _ctx: NotificationContext<RoleClient>) {
        self.progress.lock().unwrap().push(params);
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(ClientCapabilities::default(), Implementation::new(CLIENT, "1.0.0"))
    }
}

type Client = RunningService<RoleClient, TestClient>;

/// A connected server and where its stderr goes.
struct Server {
    client: Client,
    progress: Arc<Mutex<Vec<ProgressNotificationParam>>>,
    log: std::path::PathBuf,
}

impl Server {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Start `baton mcp` for this queue (plus `env`) and initialize a client.
async fn connect(q: &TestQueue, env: &[(&str, &str)]) -> Server {
    let mut cmd = q.cmd();
    cmd.arg("mcp");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let log = q.dir.path().join(format!("mcp-{}.log", uuid::Uuid::new_v4()));
    let file = std::fs::File::create(&log).unwrap();
    let (transport, _) =
        TokioChildProcess::builder(tokio::process::Command::from(cmd)).stderr(file).spawn().expect("spawn baton mcp");
    let handler = TestClient::default();
    let progress = handler.progress.clone();
    let client = tokio::time::timeout(Duration::from_secs(20), handler.serve(transport))
        .await
        .expect("initialize in time")
        .expect("initialize");
    Server { client, progress, log }
}

async fn call(c: &Client, tool: &str, args: Value) -> CallToolResult {
    let Value::Object(args) = args else { panic!("arguments must be an object") };
    let params = CallToolRequestParams::new(tool.to_string()).with_arguments(args);
    tokio::time::timeout(Duration::from_secs(60), c.call_tool(params))
        .await
        .unwrap_or_else(|_| panic!("{tool} answered in time"))
        .unwrap_or_else(|e| panic!("{tool}: {e}"))
}

fn text(r: &CallToolResult) -> String {
    r.content.iter().filter_map(|c| c.as_text()).map(|t| t.text.clone()).collect::<Vec<_>>().join("\n")
}

/// A successful call's JSON answer.
async fn ok(c: &Client, tool: &str, args: Value) -> Value {
    let r = call(c, tool, args.clone()).await;
    assert_ne!(r.is_error, Some(true), "{tool} {args}: {}", text(&r));
    serde_json::from_str(&text(&r)).unwrap_or_else(|e| panic!("{tool}: not JSON ({e}): {}", text(&r)))
}

/// A failed call's `error` message (a tool error whose text is `{"error": ...}`).
async fn err(c: &Client, tool: &str, args: Value) -> String {
    let r = call(c, tool, args.clone()).await;
    assert_eq!(r.is_error, Some(true), "{tool} {args} should fail: {}", text(&r));
    let v: Value = serde_json::from_str(&text(&r)).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&r)));
    v["error"].as_str().unwrap_or_else(|| panic!("no error message: {v}")).to_string()
}

async fn start(c: &Client, task: &str) -> String {
    let v = ok(c, "task_start", json!({"task": task, "workerId": "coder"})).await;
    assert_eq!(v["status"], "queued", "{v}");
    v["taskId"].as_str().unwrap().to_string()
}

/// Poll `task_peek` until `cond` holds on the record.
async fn peek_until(c: &Client, id: &str, secs: u64, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = ok(c, "task_peek", json!({"taskId": id})).await;
        if cond(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Is any live process in process group `pgid`?
fn group_alive(pgid: i32) -> bool {
    let Ok(rd) = std::fs::read_dir("/proc") else { return false };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()).any(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            let Some(rest) = s.rfind(')').map(|i| &s[i + 2..]) else { return false };
            let f: Vec<&str> = rest.split_whitespace().collect();
            // state, ppid, pgrp
            f.len() > 2 && f[0] != "Z" && f[0] != "X" && f[2] == pgid.to_string()
        })
    })
}

#[test]
fn initialize_lists_the_tools_with_schemas() {
    let _g = common::heavy();
    let q = TestQueue::new();
    runtime().block_on(async {
        let s = connect(&q, &[]).await;
        let info = s.client.peer_info().expect("server info");
        assert_eq!(info.server_info.as_ref().map(|i| i.name.as_str()), Some("baton"));
        let tools = s.client.list_all_tools().await.unwrap();
        let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "task_await",
                "task_cancel",
                "task_diff",
                "task_discard",
                "task_list",
                "task_merge",
                "task_peek",
                "task_start"
            ]
        );
        let tool = |n: &str| tools.iter().find(|t| t.name == n).unwrap();
        let props = |n: &str| {
            let mut p: Vec<String> = tool(n).input_schema["properties"].as_object().unwrap().keys().cloned().collect();
            p.sort();
            p
        };
        let start = tool("task_start");
        let desc = start.description.as_deref().unwrap();
        for needle in ["coder", "architect", "explorer", "roocode-boomerang", "task_await"] {
            assert!(desc.contains(needle), "task_start description lacks {needle}: {desc}");
        }
        assert_eq!(
            props("task_start"),
            [
                "after",
                "afterAny",
                "attachments",
                "autoSpawn",
                "base",
                "dedupKey",
                "delayMs",
                "isolation",
                "kind",
                "labels",
                "maxAttempts",
                "node",
                "priority",
                "runAt",
                "task",
                "timeoutMs",
                "workerId",
                "workflowId"
            ]
        );
        assert_eq!(start.input_schema["required"], json!(["task"]));
        assert_eq!(props("task_await"), ["taskId", "taskIds", "timeoutMs"]);
        assert_eq!(props("task_peek"), ["taskId", "taskIds"]);
        assert_eq!(
            props("task_list"),
            ["format", "label", "limit", "scope", "sessionId", "since", "sort", "status", "until", "view", "workerId"]
        );
        assert_eq!(props("task_cancel"), ["reason", "taskId", "taskIds"]);
        assert_eq!(props("task_diff"), ["stat", "taskId"]);
        assert_eq!(props("task_merge"), ["how", "taskId"]);
        assert_eq!(props("task_discard"), ["force", "taskId"]);
        for t in &tools {
            assert!(t.description.as_deref().is_some_and(|d| d.len() > 80), "{} needs a real description", t.name);
        }
        s.client.cancel().await.unwrap();
    });
}

#[test]
fn start_peek_await_and_list_a_task() {
    let _g = common::heavy();
    let q = TestQueue::new();
    q.dispatcher();
    let cli_task = q.start(&["--worker", "coder", "echo from-the-cli"]);
    runtime().block_on(async {
        let s = connect(&q, &[]).await;
        let c = &s.client;
        let id = start(c, "echo started; sleep 1; echo done").await;
        let v = peek_until(c, &id, 30, "output while running", |v| {
            v["status"] == "running" && v["outputTail"].as_str().is_some_and(|t| t.contains("started"))
        })
        .await;
        for k in common::RECORD_KEYS {
            assert!(v.get(k).is_some(), "peek lacks {k}: {v}");
        }
        assert_eq!(v["requestedBy"], CLIENT);
        let session = v["sessionId"].as_str().unwrap();
        let hex = session.strip_prefix("mcp-test@").unwrap_or_else(|| panic!("session {session}"));
        assert!(hex.len() == 8 && hex.chars().all(|c| c.is_ascii_hexdigit()), "{session}");

        let done = ok(c, "task_await", json!({"taskId": id, "timeoutMs": 30000})).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert!(done["responseText"].as_str().unwrap().contains("done"), "{done}");
        assert!(done.get("timedOut").is_none(), "{done}");
        // taskIds answers an array, even of one.
        let arr = ok(c, "task_peek", json!({"taskIds": [id]})).await;
        assert_eq!(arr.as_array().map(Vec::len), Some(1), "{arr}");
        // taskId wins over taskIds.
        let one = ok(c, "task_peek", json!({"taskId": id, "taskIds": [cli_task]})).await;
        assert_eq!(one["id"], id.as_str());

        // The session's list shows the MCP task and not the CLI's (it has no session); all shows both.
        let mine = ok(c, "task_list", json!({"format": "json"})).await;
        let ids: Vec<&str> = mine.as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
        assert_eq!(ids, [id.as_str()]);
        let all = ok(c, "task_list", json!({"format": "json", "scope": "all"})).await;
        assert_eq!(all.as_array().unwrap().len(), 2, "{all}");
        let table = call(c, "task_list", json!({})).await;
        assert!(text(&table).starts_with("| Task"), "{}", text(&table));
        let profiles = ok(c, "task_list", json!({"view": "profiles", "format": "json"})).await;
        assert!(profiles.as_array().unwrap().iter().any(|p| p["id"] == "coder"));
        s.client.cancel().await.unwrap();
    });
}

#[test]
fn labels_dependencies_and_list_filters_over_mcp() {
    let _g = common::heavy();
    let q = TestQueue::new();
    runtime().block_on(async {
        let s = connect(&q, &[]).await;
        let c = &s.client;
        let a =
            ok(c, "task_start", json!({"task": "sleep 0.3; echo A", "workerId": "coder", "labels": {"area": "db"}}))
                .await;
        let a = a["taskId"].as_str().unwrap().to_string();
        let b =
            ok(c, "task_start", json!({"task": "echo B", "workerId": "docs", "after": [a], "labels": {"area": "ui"}}))
                .await;
        assert_eq!(b["status"], "waiting", "{b}");
        let b = b["taskId"].as_str().unwrap().to_string();
        let e = err(c, "task_start", json!({"task": "x", "workerId": "coder", "after": ["ffffffffffff"]})).await;
        assert!(e.contains("Unknown dependency \"ffffffffffff\""), "{e}");
        let e = err(c, "task_start", json!({"task": "x", "labels": {"no space": "1"}})).await;
        assert!(e.contains("Invalid label key"), "{e}");

        let listed = |v: Value| -> Vec<String> {
            v.as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect()
        };
        let db = ok(c, "task_list", json!({"format": "json", "label": ["area=db"]})).await;
        assert_eq!(listed(db), [a.as_str()]);
        let waiting = ok(c, "task_list", json!({"format": "json", "status": "waiting"})).await;
        assert_eq!(listed(waiting), [b.as_str()]);
        let oldest = ok(c, "task_list", json!({"format": "json", "sort": "oldest", "since": "10m"})).await;
        assert_eq!(listed(oldest), [a.clone(), b.clone()]);
        let e = err(c, "task_list", json!({"sort": "random"})).await;
        assert!(e.contains("Unknown sort \"random\""), "{e}");

        q.dispatcher();
        let done = ok(c, "task_await", json!({"taskId": b, "timeoutMs": 30000})).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(done["after"], json!([a]), "{done}");
        assert_eq!(done["labels"], json!({"area": "ui"}), "{done}");
        s.client.cancel().await.unwrap();
    });
}

#[test]
fn await_sends_progress_and_times_out_without_failing() {
    let _g = common::heavy();
    let q = TestQueue::new();
    q.dispatcher();
    runtime().block_on(async {
        let s = connect(&q, &[]).await;
        let c = &s.client;
        let slow = start(c, "sleep 3; echo slow").await;
        let v = ok(c, "task_await", json!({"taskId": slow})).await;
        assert_eq!(v["status"], "succeeded", "{v}");
        let progress = s.progress.lock().unwrap().clone();
        assert!(!progress.is_empty(), "no progress notification during a 3 s wait");
        assert!(progress[0].message.as_deref().is_some_and(|m| m.contains("unfinished")), "{progress:?}");

        let long = start(c, "sleep 30").await;
        let t0 = Instant::now();
        let v = ok(c, "task_await", json!({"taskId": long, "timeoutMs": 1000})).await;
        assert!(t0.elapsed() < Duration::from_secs(10), "took {:?}", t0.elapsed());
        assert_eq!(v["timedOut"], true, "{v}");
        assert!(v["status"] == "running" || v["status"] == "queued", "{v}");
        assert!(v["error"].is_null(), "a timeout is not a failure: {v}");
        ok(c, "task_cancel", json!({"taskId": long})).await;
        s.client.cancel().await.unwrap();
    });
}

#[test]
fn cancel_stops_the_worker_process_group() {
    let _g = common::heavy();
    let q = TestQueue::new();
    q.dispatcher();
    runtime().block_on(async {
        let s = connect(&q, &[]).await;
        let c = &s.client;
        let id = start(c, "sleep 30 & sleep 30").await;
        peek_until(c, &id, 30, "the task to run", |v| v["status"] == "running").await;
        let mut pid = None;
        let deadline = Instant::now() + Duration::from_secs(30);
        while pid.is_none() && Instant::now() < deadline {
            pid = q
                .raw()
                .query_row("SELECT pid FROM workers WHERE job_id = ?1 AND pid IS NOT NULL", [&id], |r| {
                    r.get::<_, i64>(0)
                })
                .ok();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let pid = pid.expect("the worker's pid is recorded") as i32;
        wait_for(10, "the worker's group to hold its sleeps", || group_alive(pid));
        let v = ok(c, "task_cancel", json!({"taskId": id, "reason": "not needed"})).await;
        assert_eq!(v["status"], "canceled", "{v}");
        assert!(!group_alive(pid), "the worker's process group is dead after the cancel");
        assert_eq!(q.state(&id), "canceled");
        // Canceling again leaves it as it is.
        let again = ok(c, "task_cancel", json!({"taskIds": [id]})).await;
        assert_eq!(again[0]["status"], "canceled", "{again}");
        s.client.cancel().await.unwrap();
    });
}

#[test]
fn a_client_cancel_ends_task_await_promptly() {
    let _g = common::heavy();
    let q = TestQueue::new();
    runtime().block_on(async {
        let s = connect(&q, &[]).await;
        let c = &s.client;
        // No dispatcher: the task stays queued, the await would wait its whole minute.
        let id = start(c, "sleep 30").await;
        let args = json!({"taskId": id, "timeoutMs": 60000});
        let Value::Object(args) = args else { unreachable!() };
        let req = ClientRequest::CallToolRequest(Request::new(
            CallToolRequestParams::new("task_await".to_string()).with_arguments(args),
        ));
        let handle = c.send_cancellable_request(req, PeerRequestOptions::no_options()).await.unwrap();
        // The first progress notification proves the wait is under way.
        let deadline = Instant::now() + Duration::from_secs(15);
        while s.progress.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "no progress notification");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let t0 = Instant::now();
        handle.cancel(Some("changed my mind".into())).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !s.log().contains("task_await canceled by the client") {
            assert!(Instant::now() < deadline, "the await did not stop: {}", s.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(t0.elapsed() < Duration::from_secs(2), "stopped after {:?}", t0.elapsed());
        // The task itself is untouched, and the server keeps serving.
        let v = ok(c, "task_peek", json!({"taskId": id})).await;
        assert_eq!(v["status"], "queued", "{v}");
        s.client.cancel().await.unwrap();
    });
}

#[test]
fn bad_inputs_are_clear_errors_and_the_server_keeps_serving() {
    let _g = common::heavy();
    let q = TestQueue::with_overrides(json!({"limits": {"maxTaskChars": 1000}}));
    runtime().block_on(async {
        let s = connect(&q, &[]).await;
        let c = &s.client;
        for tool in ["task_await", "task_peek", "task_cancel"] {
            assert_eq!(err(c, tool, json!({})).await, "Missing taskId/taskIds.");
            assert_eq!(err(c, tool, json!({"taskIds": []})).await, "Missing taskId/taskIds.");
        }
        assert_eq!(err(c, "task_start", json!({"task": "x".repeat(1001)})).await, "Task must be <= 1000 chars");
        let e = err(c, "task_start", json!({"task": "x", "attachments": [{"type": "file", "path": "../etc/passwd"}]}))
            .await;
        assert!(e.starts_with("Invalid attachment path:"), "{e}");
        assert_eq!(err(c, "task_start", json!({"task": "x", "kind": "worker"})).await, "Missing workerId");
        let e = err(c, "task_start", json!({"task": "x", "timeoutMs": "soon"})).await;
        assert!(e.contains("\"timeoutMs\"") && e.contains("soon"), "{e}");
        let e = err(c, "task_await", json!({"taskId": "abcdef12", "timeoutMs": "soon"})).await;
        assert!(e.contains("\"timeoutMs\""), "{e}");
        let e = err(c, "task_start", json!({"task": "x", "colour": "blue"})).await;
        assert!(e.contains("\"colour\""), "{e}");
        let e = err(c, "task_start", json!({})).await;
        assert!(e.contains("task"), "{e}");
        let e = err(c, "task_list", json!({"view": "nope"})).await;
        assert!(e.starts_with("Unknown view \"nope\""), "{e}");
        assert_eq!(q.scalar_i64("SELECT count(*) FROM jobs"), 0, "no job was written by a refused start");

        // An unknown profile is recorded and ends failed at once: the answer says so.
        let v = ok(c, "task_start", json!({"task": "x", "workerId": "nobody"})).await;
        assert_eq!(v["status"], "failed", "{v}");
        assert!(v["error"].as_str().unwrap().starts_with("Unknown worker \"nobody\". Available profiles: "), "{v}");

        // Unknown ids answer {id, status: unknown}; null parameters mean the default.
        let v = ok(c, "task_peek", json!({"taskId": "00000000-dead"})).await;
        assert_eq!(v, json!({"id": "00000000-dead", "status": "unknown"}));
        let v = ok(c, "task_await", json!({"taskId": "00000000-dead", "timeoutMs": null})).await;
        assert_eq!(v["status"], "unknown");
        let id = start(c, "echo fine").await;
        let v = ok(c, "task_peek", json!({"taskId": id})).await;
        assert_eq!(v["dispatcher"], "none", "{v}");
        s.client.cancel().await.unwrap();
    });
}

#[test]
fn inside_a_worker_task_start_is_refused_but_peek_and_list_answer() {
    let _g = common::heavy();
    let q = TestQueue::new();
    let id = q.start(&["--worker", "coder", "echo hi"]);
    runtime().block_on(async {
        let s = connect(&q, &[("BATON_WORKER", "true")]).await;
        let c = &s.client;
        let e = err(c, "task_start", json!({"task": "echo nested", "workerId": "coder"})).await;
        assert!(e.contains("BATON_WORKER"), "{e}");
        assert_eq!(q.scalar_i64("SELECT count(*) FROM jobs"), 1, "nothing written");
        let v = ok(c, "task_peek", json!({"taskId": id})).await;
        assert_eq!(v["status"], "queued", "{v}");
        let all = ok(c, "task_list", json!({"scope": "all", "format": "json"})).await;
        assert_eq!(all.as_array().unwrap().len(), 1, "{all}");
        s.client.cancel().await.unwrap();
    });
}

#[test]
fn task_start_auto_starts_a_detached_dispatcher() {
    let _g = common::heavy();
    let q = TestQueue::with_overrides(json!({"autoSpawn": true}));
    runtime().block_on(async {
        let s = connect(&q, &[]).await;
        let c = &s.client;
        let id = start(c, "echo auto").await;
        let v = ok(c, "task_await", json!({"taskId": id, "timeoutMs": 30000})).await;
        assert_eq!(v["status"], "succeeded", "{v}");
        assert!(q.lease_pid().is_some(), "a dispatcher took the lease");
        // The dispatcher holds none of the server's pipes: closing the client ends the server.
        tokio::time::timeout(Duration::from_secs(20), s.client.cancel()).await.expect("shutdown in time").unwrap();
    });
}

#[test]
fn a_task_survives_its_servers_process_group_and_a_later_session_awaits_it() {
    use std::os::unix::process::CommandExt;
    let _g = common::heavy();
    let q = TestQueue::with_overrides(json!({"autoSpawn": true}));
    let marker = q.dir.path().join("survived");
    runtime().block_on(async {
        // The first server runs in a process group of its own, as an editor starts it; the
        // client then kills that whole group, as the official Python client does on exit.
        let mut cmd = q.cmd();
        cmd.arg("mcp").process_group(0);
        let (transport, _) = TokioChildProcess::builder(tokio::process::Command::from(cmd))
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn baton mcp");
        let server_pid = transport.id().expect("server pid") as i32;
        let client = tokio::time::timeout(Duration::from_secs(20), TestClient::default().serve(transport))
            .await
            .expect("initialize in time")
            .expect("initialize");
        let task = format!("sleep 2; echo survived > '{}'; echo done", marker.display());
        let id = start(&client, &task).await;
        peek_until(&client, &id, 30, "the task to run", |v| v["status"] == "running").await;
        nix::sys::signal::killpg(nix::unistd::Pid::from_raw(server_pid), nix::sys::signal::Signal::SIGKILL).unwrap();
        wait_for(30, "the first server to die", || common::is_dead(server_pid));
        drop(client);

        // A later session of the same client finds the task in its default (session) list
        // and awaits its result.
        let s = connect(&q, &[]).await;
        let listed = ok(&s.client, "task_list", json!({"format": "json"})).await;
        assert!(listed.as_array().unwrap().iter().any(|t| t["id"] == id.as_str()), "{listed}");
        let v = ok(&s.client, "task_await", json!({"taskId": id, "timeoutMs": 30000})).await;
        assert_eq!(v["status"], "succeeded", "{v}");
        assert_eq!(v["responseText"], "done");
        assert!(marker.exists(), "the worker ran to its end");
        s.client.cancel().await.unwrap();
    });
}

/// git in the test's project, isolated from the machine's configuration.
fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let o = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim_end().to_string()
}

/// An agent starts a subagent in a worktree, reviews its diff and merges it, all over MCP.
#[test]
fn an_agent_reviews_and_merges_a_worktree_task() {
    let _g = common::heavy();
    let q = TestQueue::new();
    std::fs::remove_dir_all(q.project.join(".git")).unwrap();
    git(&q.project, &["init", "-q", "-b", "main"]);
    q.ok(&["init"]);
    std::fs::write(q.project.join("notes.txt"), "one\n").unwrap();
    git(&q.project, &["add", "-A"]);
    git(&q.project, &["-c", "user.name=T", "-c", "user.email=t@t", "commit", "-qm", "start"]);
    q.dispatcher();
    runtime().block_on(async {
        let s = connect(&q, &[]).await;
        let c = &s.client;
        let v =
            ok(c, "task_start", json!({"task": "echo two >> notes.txt", "workerId": "coder", "isolation": "worktree"}))
                .await;
        let id = v["taskId"].as_str().unwrap().to_string();
        assert_eq!(v["worktree"]["target"], "main", "{v}");
        let e = err(c, "task_merge", json!({"taskId": id, "how": "octopus"})).await;
        assert!(e.contains("Unknown how \"octopus\""), "{e}");
        ok(c, "task_await", json!({"taskId": id, "timeoutMs": 60000})).await;
        let diff = text(&call(c, "task_diff", json!({"taskId": id})).await);
        assert!(diff.contains("+two"), "{diff}");
        let m = ok(c, "task_merge", json!({"taskId": id, "how": "squash"})).await;
        assert_eq!(m["action"], "squash", "{m}");
        assert_eq!(std::fs::read_to_string(q.project.join("notes.txt")).unwrap(), "one\ntwo\n");
        let d = ok(c, "task_discard", json!({"taskId": id})).await;
        assert_eq!(d["worktree"]["state"], "discarded", "{d}");
        let e = err(c, "task_diff", json!({"taskId": "ffffffff-none"})).await;
        assert!(e.contains("Unknown task"), "{e}");
        s.client.cancel().await.unwrap();
    });
}

#[test]
fn on_postgres_the_tools_answer_alike_and_a_start_brings_up_this_machines_node() {
    let _g = common::heavy();
    let Some(pg) = common::pg::Pg::start() else { return };
    let mut q = TestQueue::with_overrides(json!({"autoSpawn": true}));
    q.db = pg.create_db("q").into();
    runtime().block_on(async {
        let s = connect(&q, &[("BATON_NODE", "mcp-node")]).await;
        let c = &s.client;
        let id = start(c, "echo over postgres").await;
        let v = ok(c, "task_await", json!({"taskId": id, "timeoutMs": 30000})).await;
        assert_eq!(v["status"], "succeeded", "{v}");
        assert!(v["responseText"].as_str().unwrap().contains("over postgres"), "{v}");
        let mine = ok(c, "task_list", json!({"format": "json"})).await;
        assert_eq!(mine.as_array().unwrap().len(), 1, "{mine}");
        let unknown = ok(c, "task_peek", json!({"taskId": "zz"})).await;
        assert_eq!(unknown["status"], "unknown", "{unknown}");
        s.client.cancel().await.unwrap();
    });
    let row = pg.psql_ok("q", "SELECT pid FROM nodes WHERE id = 'mcp-node'");
    let pid: i32 = row.parse().unwrap_or_else(|_| panic!("the auto-started node registered: {row:?}"));
    // The detached node would outlive the server it talks to: stop it first.
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
    common::wait_for(30, "the node to stop", || common::is_dead(pid));
}
