//! Real agents as ACP server workers (`"command": "opencode-acp"` and the other agent presets),
//! offline against the fake model server on 127.0.0.1: one warm process serves task after
//! task, its activity is recorded, baton's permission answers hold, a cancel ends the turn and
//! keeps the worker. A test whose agent is not installed says so and passes without running.

use serde_json::{Value, json};

use crate::agents::{cli_dir, dispatcher, opencode_env, queue_with};
use crate::common::fake_model::{FakeModel, Reply};
use crate::common::{self, TestQueue, wait_for};

/// A server profile running the agent preset `preset`, with `tools` switches.
fn agent_profile(id: &str, preset: &str, tools: Value) -> Value {
    json!({"id": id, "name": id, "model": "node", "purpose": "p", "whenToUse": "w",
           "kind": "server", "command": preset, "tools": tools})
}

/// Replace the project config's profiles.
pub fn set_profiles(q: &TestQueue, profiles: Value) {
    let path = q.project.join(".baton/config.json");
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["profiles"] = profiles;
    std::fs::write(&path, cfg.to_string()).unwrap();
}

fn await_id(q: &TestQueue, id: &str) -> Value {
    q.json(&["task", "await", id, "--timeout", "150000"]).0
}

/// (kind, text) of a job's events.
fn events(q: &TestQueue, id: &str) -> Vec<(String, String)> {
    let c = q.raw();
    let mut st = c.prepare("SELECT kind, text FROM job_events WHERE job_id = ?1 ORDER BY seq").unwrap();
    st.query_map([id], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
}

/// Every server worker's log (their stderr), for failure messages.
fn worker_logs(q: &TestQueue) -> String {
    let dir = q.project.join(".baton/logs/workers");
    let mut out = String::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
    }
    out
}

fn server_pids(q: &TestQueue, profile: &str) -> Vec<i64> {
    let c = q.raw();
    let mut st = c.prepare("SELECT pid FROM workers WHERE kind = 'server' AND profile = ?1 ORDER BY seq").unwrap();
    st.query_map([profile], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
}

#[test]
fn opencode_acp_serves_tasks_on_one_warm_process_with_baton_answering_its_permissions() {
    let Some(bin) = cli_dir("opencode") else { return };
    let _g = common::heavy();
    let q = queue_with(json!("opencode"));
    set_profiles(
        &q,
        json!([
            agent_profile("oc", "opencode-acp", json!({})),
            agent_profile("oc-ro", "opencode-acp", json!({"write": false, "edit": false, "bash": false})),
        ]),
    );
    let hello = q.project.join("hello.txt");
    let ro = q.project.join("ro.txt");
    let m = FakeModel::start(vec![
        // 1. oc writes a file (a permission baton grants), then answers.
        Reply::tool("write", json!({"filePath": hello.display().to_string(), "content": "hi\n"})),
        Reply::text("## Summary\nwrote it"),
        // 2. oc-ro tries the same: baton rejects it, and opencode ends the turn there.
        Reply::tool("write", json!({"filePath": ro.display().to_string(), "content": "hi\n"})),
        // 3. oc runs a long command: canceled while it runs (opencode kills it and ends the turn).
        Reply::tool("bash", json!({"command": "sleep 30", "description": "wait"})),
        // 4. the same warm process answers the next task.
        Reply::text("still here"),
    ]);
    let _d = dispatcher(&q, &bin, &opencode_env(&q, &m));

    let id = q.start(&["--worker", "oc", "--", "write \"hi\" into hello.txt"]);
    let v = await_id(&q, &id);
    assert_eq!(
        (v["status"].as_str(), v["responseText"].as_str()),
        (Some("succeeded"), Some("## Summary\nwrote it")),
        "{v}"
    );
    assert_eq!(std::fs::read_to_string(&hello).unwrap(), "hi\n");
    let ev = events(&q, &id);
    assert!(ev.iter().any(|(k, t)| k == "tool" && t.starts_with("edit ")), "the write shows as an edit: {ev:?}");
    assert!(ev.iter().any(|(k, t)| k == "permission" && t.starts_with("granted edit")), "{ev:?}");
    assert!(ev.iter().any(|(k, t)| k == "message" && t.contains("wrote it")), "{ev:?}");
    assert_eq!(v["outputTokens"], 5, "usage from the prompt answer: {v}");

    let id = q.start(&["--worker", "oc-ro", "--", "write \"hi\" into ro.txt"]);
    let v = await_id(&q, &id);
    assert_eq!(v["status"], "succeeded", "{v}");
    assert!(!ro.exists(), "the read-only profile's write was refused: {v}");
    let ev = events(&q, &id);
    assert!(
        ev.iter().any(|(k, t)| k == "permission" && t.starts_with("rejected edit") && t.ends_with("does not allow it")),
        "{ev:?}"
    );
    assert!(ev.iter().any(|(k, t)| k == "tool_update" && t.ends_with("(failed)")), "{ev:?}");

    let id = q.start(&["--worker", "oc", "--", "wait a while"]);
    wait_for(120, "the command to run", || {
        events(&q, &id).iter().any(|(k, t)| k == "permission" && t.starts_with("granted execute"))
    });
    let o = q.run(&["task", "cancel", &id]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let v = await_id(&q, &id);
    assert_eq!(v["status"], "canceled", "{v}");
    assert_eq!(v["logPath"], Value::Null, "a server worker's task has no log of its own: {v}");

    let v = await_id(&q, &q.start(&["--worker", "oc", "--", "are you there"]));
    assert_eq!((v["status"].as_str(), v["responseText"].as_str()), (Some("succeeded"), Some("still here")), "{v}");
    assert_eq!(server_pids(&q, "oc").len(), 1, "one warm opencode served all of oc's tasks, the cancel included");
    let state: String = q
        .raw()
        .query_row("SELECT state FROM workers WHERE kind = 'server' AND profile = 'oc'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(state, "ready");
}

/// A writing and a read-only profile of an agent preset: the writing one's file is written
/// (baton grants the request), the read-only one's is not (baton rejects it), both recorded.
fn write_granted_and_refused(
    preset: &str,
    bin: &std::path::Path,
    env: impl FnOnce(&TestQueue, &FakeModel) -> Vec<(&'static str, String)>,
    write: impl Fn(&std::path::Path) -> Reply,
    model: &str,
) {
    let _g = common::heavy();
    let q = queue_with(json!("opencode"));
    let mut rw = agent_profile("rw", preset, json!({}));
    let mut ro = agent_profile("ro", preset, json!({"write": false, "edit": false, "bash": false}));
    rw["model"] = json!(model);
    ro["model"] = json!(model);
    set_profiles(&q, json!([rw, ro]));
    let (hello, refused) = (q.project.join("hello.txt"), q.project.join("ro.txt"));
    let m = FakeModel::start(vec![
        write(&hello),
        Reply::text("wrote it"),
        write(&refused),
        // An agent that goes on after a rejection answers; one that stops does not ask.
        Reply::text("could not write"),
        Reply::text("here again"),
        Reply::text("here again"),
    ]);
    let env = env(&q, &m);
    let _d = dispatcher(&q, bin, &env);
    let id = q.start(&["--worker", "rw", "--", "write \"hi\" into hello.txt"]);
    let v = await_id(&q, &id);
    assert_eq!(v["status"], "succeeded", "{preset}: {v}\n{}", worker_logs(&q));
    assert_eq!(std::fs::read_to_string(&hello).unwrap_or_default(), "hi\n", "{preset}: {v}");
    let ev = events(&q, &id);
    assert!(ev.iter().any(|(k, t)| k == "permission" && t.starts_with("granted")), "{preset}: {ev:?}");
    let id = q.start(&["--worker", "ro", "--", "write \"hi\" into ro.txt"]);
    let v = await_id(&q, &id);
    assert!(!refused.exists(), "{preset}: the read-only profile's write happened: {v}");
    let ev = events(&q, &id);
    assert!(ev.iter().any(|(k, t)| k == "permission" && t.starts_with("rejected")), "{preset}: {ev:?}");
    assert_eq!(server_pids(&q, "rw").len(), 1, "{preset}");
    // Another task on the same warm worker.
    assert_eq!(await_id(&q, &q.start(&["--worker", "rw", "--", "again"]))["status"], "succeeded", "{preset}");
    assert_eq!(server_pids(&q, "rw").len(), 1, "{preset}: one warm worker");
}

#[test]
fn gemini_acp_writes_as_a_writing_profile_only() {
    let Some(bin) = cli_dir("gemini") else { return };
    let write = |p: &std::path::Path| {
        Reply::tool("write_file", json!({"file_path": p.display().to_string(), "content": "hi\n"}))
    };
    write_granted_and_refused("gemini-acp", &bin, crate::agents::gemini_env, write, "fake-model");
}

#[test]
fn claude_acp_writes_as_a_writing_profile_only() {
    let Some(bin) = cli_dir("claude-code-acp") else { return };
    let write =
        |p: &std::path::Path| Reply::tool("Write", json!({"file_path": p.display().to_string(), "content": "hi\n"}));
    write_granted_and_refused("claude-acp", &bin, |_, m| crate::agents::claude_env(m), write, "node");
}

#[test]
fn codex_acp_answers_in_its_writing_mode() {
    let Some(bin) = cli_dir("codex-acp") else { return };
    let _g = common::heavy();
    let q = queue_with(json!("opencode"));
    set_profiles(&q, json!([agent_profile("cx", "codex-acp", json!({}))]));
    let m = FakeModel::start(vec![Reply::text("hello from codex"), Reply::text("again")]);
    let _d = dispatcher(&q, &bin, &crate::agents::codex_home(&q, &m));
    for answer in ["hello from codex", "again"] {
        let v = await_id(&q, &q.start(&["--worker", "cx", "--", "say hello"]));
        assert_eq!(v["status"], "succeeded", "{v}\n{}", worker_logs(&q));
        // codex-acp sends its warnings as message chunks before the answer.
        assert!(v["responseText"].as_str().unwrap().ends_with(answer), "{v}");
    }
    assert_eq!(server_pids(&q, "cx").len(), 1);
}
