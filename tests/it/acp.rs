//! Agent workers over ACP, against `tests/fixtures/fake-acp-agent.py`: activity events while the
//! turn runs, peek's summary, `task events`, permission answers from the profile's tools, tool
//! calls that bypass them, the prompt baton sends, stop reasons, cancel, crashes and kill -9.

use serde_json::{Value, json};

use crate::common::{self, TestQueue, is_dead, wait_for};
use crate::servers::{await_one, kill9, queue, server_profile, server_rows, spawns};

/// A read-only server profile (edits and the shell switched off).
pub fn reader(id: &str) -> Value {
    let mut p = server_profile(id);
    p["tools"] = json!({"write": false, "edit": false, "bash": false});
    p
}

/// (seq, attempt, kind, text) of a job's events, oldest first.
pub fn events(q: &TestQueue, id: &str) -> Vec<(i64, i64, String, String)> {
    let c = q.raw();
    let mut st = c.prepare("SELECT seq, attempt, kind, text FROM job_events WHERE job_id = ?1 ORDER BY seq").unwrap();
    st.query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).unwrap().map(Result::unwrap).collect()
}

pub fn texts(q: &TestQueue, id: &str, kind: &str) -> Vec<String> {
    events(q, id).into_iter().filter(|e| e.2 == kind).map(|e| e.3).collect()
}

#[test]
fn activity_is_written_while_the_turn_runs_and_peek_and_task_events_show_it() {
    let _g = common::heavy();
    let q = queue(json!({}));
    q.dispatcher();
    // 60 chunks 50 ms apart: three seconds of streaming.
    let id = q.start(&["--worker", "srv", "STREAM 60"]);
    wait_for(30, "events while it runs", || q.state(&id) == "running" && !events(&q, &id).is_empty());
    let (v, _) = q.json(&["task", "peek", &id]);
    assert_eq!(v["status"], "running", "{v}");
    assert_eq!(v["activity"]["doing"], "answering", "{v}");
    assert!(v["activity"]["events"].as_i64().unwrap() >= 1, "{v}");
    // Follow prints every event and returns when the task is done.
    let follow = q.run_within(&["task", "events", &id, "--follow"]);
    assert!(follow.status.success(), "{}", String::from_utf8_lossy(&follow.stderr));
    assert_eq!(q.state(&id), "succeeded");
    let printed = String::from_utf8_lossy(&follow.stdout).to_string();
    let all = events(&q, &id);
    assert_eq!(printed.lines().count(), all.len(), "{printed}");
    let joined: String = texts(&q, &id, "message").concat();
    assert!(joined.contains("chunk 0 ") && joined.contains("chunk 59 "), "{joined}");
    // Chunks written together join: far fewer events than chunks.
    assert!(all.len() < 60, "{} events", all.len());
    let v = await_one(&q, &id);
    assert_eq!(v["responseText"].as_str().unwrap(), joined, "the answer is the message chunks");
    // --json prints one object per event, and --after skips the ones seen.
    let out = q.ok(&["task", "events", &id, "--json", "--after", "1"]);
    let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), all.len() - 1);
    assert_eq!((lines[0]["seq"].as_i64(), lines[0]["kind"].as_str()), (Some(2), Some("message")), "{}", lines[0]);
    // A finished job's events never change and take no more.
    let c = q.raw();
    let e = c.execute("UPDATE job_events SET text = 'x' WHERE job_id = ?1", [&id]).unwrap_err().to_string();
    assert!(e.contains("an event never changes"), "{e}");
    let e = c
        .execute(
            "INSERT INTO job_events (job_id, attempt, seq, at_ms, kind, text) VALUES (?1, 1, 999, 0, 'other', 'x')",
            [&id],
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("events are written only for the running attempt"), "{e}");
}

#[test]
fn tool_calls_plans_and_usage_become_events() {
    let _g = common::heavy();
    let q = queue(json!({}));
    q.dispatcher();
    let id = q.start(&["--worker", "srv", "TOOL edit out/a.txt"]);
    let v = await_one(&q, &id);
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(std::fs::read_to_string(q.project.join("out/a.txt")).unwrap(), "edited by fake-acp-agent\n");
    assert_eq!(texts(&q, &id, "tool"), ["edit \"Editing out/a.txt\" (pending)"]);
    let updates = texts(&q, &id, "tool_update");
    assert_eq!(updates.last().unwrap(), "edit \"Editing out/a.txt\" (completed)", "{updates:?}");
    let payload: String = q
        .raw()
        .query_row("SELECT payload FROM job_events WHERE job_id = ?1 AND kind = 'tool'", [&id], |r| r.get(0))
        .unwrap();
    let payload: Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(payload["toolCallId"], "call-1", "{payload}");

    let id = q.start(&["--worker", "srv", "PLAN"]);
    assert_eq!(await_one(&q, &id)["status"], "succeeded");
    assert_eq!(texts(&q, &id, "plan"), ["plan 1/3 done: step 2", "plan 2/3 done: step 3"]);

    let id = q.start(&["--worker", "srv", "usage please"]);
    let v = await_one(&q, &id);
    assert_eq!(texts(&q, &id, "usage"), ["context 1234/200000 tokens"]);
    assert_eq!((v["outputTokens"].as_i64(), v["cachedTokens"].as_i64()), (Some(5), Some(300)), "{v}");

    let id = q.start(&["--worker", "srv", "THINK"]);
    assert_eq!(await_one(&q, &id)["status"], "succeeded");
    assert_eq!(texts(&q, &id, "thought"), ["thinking about it"]);
    assert_eq!(spawns(&q).len(), 1, "one worker served them all");
}

#[test]
fn permission_requests_are_answered_from_the_profiles_tools() {
    let _g = common::heavy();
    let q = queue(json!({"profiles": [server_profile("srv"), reader("ro")]}));
    q.dispatcher();
    // A read-only profile: edits and commands are rejected, reads granted.
    for (task, answer) in [
        ("ASK edit ro.txt", "rejected"),
        ("ASK execute ls", "rejected"),
        ("ASK delete x", "rejected"),
        ("ASK read a", "allowed"),
    ] {
        let id = q.start(&["--worker", "ro", task]);
        let v = await_one(&q, &id);
        assert_eq!(v["status"], "succeeded", "{task}: {v}");
        assert_eq!(v["responseText"], answer, "{task}: {v}");
        let p = texts(&q, &id, "permission");
        assert_eq!(p.len(), 1, "{task}: {p:?}");
        if answer == "rejected" {
            assert!(p[0].starts_with("rejected ") && p[0].ends_with("profile \"ro\" does not allow it"), "{p:?}");
        } else {
            assert!(p[0].starts_with("granted read"), "{p:?}");
        }
    }
    assert!(!q.project.join("ro.txt").exists(), "the rejected edit did not happen");
    // A writing profile may edit.
    let v = await_one(&q, &q.start(&["--worker", "srv", "ASK edit rw.txt"]));
    assert_eq!(v["responseText"], "allowed", "{v}");
    assert!(q.project.join("rw.txt").exists());
    // But not outside its project.
    let id = q.start(&["--worker", "srv", "ASK edit ../outside.txt"]);
    assert_eq!(await_one(&q, &id)["responseText"], "rejected");
    let p = texts(&q, &id, "permission");
    assert!(p[0].starts_with("rejected edit") && p[0].ends_with("outside.txt is outside the project"), "{p:?}");
    assert!(!q.project.parent().unwrap().join("outside.txt").exists());
}

#[test]
fn a_denied_tool_call_made_without_asking_fails_the_task_and_stops_the_worker() {
    let _g = common::heavy();
    let q = queue(json!({"profiles": [reader("ro")]}));
    q.dispatcher();
    let v = await_one(&q, &q.start(&["--worker", "ro", "SILENT edit sneaky.txt"]));
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(
        v["error"],
        "Forbidden tool call: the agent ran edit \"Editing sneaky.txt\" without a permission baton granted; \
         profile \"ro\" does not allow edit",
        "{v}"
    );
    let pid = spawns(&q)[0];
    wait_for(30, "the worker to be stopped", || is_dead(pid));
    assert_eq!(server_rows(&q)[0].0, "stopped");
    // A read needs no permission; the next task gets a new worker.
    assert_eq!(await_one(&q, &q.start(&["--worker", "ro", "SILENT read fine.txt"]))["status"], "succeeded");
    assert_eq!(spawns(&q).len(), 2);
}

#[test]
fn permissions_ask_fails_the_task_with_the_request_shown() {
    let _g = common::heavy();
    let mut asker = server_profile("asker");
    asker["permissions"] = json!("ask");
    let q = queue(json!({"profiles": [asker]}));
    q.dispatcher();
    let v = await_one(&q, &q.start(&["--worker", "asker", "ASK read notes.md"]));
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(
        v["error"],
        "The agent asked permission for read \"Reading notes.md\", and profile \"asker\" answers no request itself \
         (permissions: \"ask\")",
        "{v}"
    );
    // A bad value is a config error that names it.
    let mut bad = server_profile("bad");
    bad["permissions"] = json!("maybe");
    let q = TestQueue::with_overrides(json!({"profiles": [bad]}));
    let e = q.refused(&["task", "start", "--worker", "bad", "x"]);
    assert!(e.contains("permissions") && e.contains("must be \"auto\" or \"ask\", found \"maybe\""), "{e}");
}

#[test]
fn the_prompt_carries_the_system_prompt_the_attachments_and_the_project_as_cwd() {
    let _g = common::heavy();
    let mut sp = server_profile("srv");
    sp["systemPrompt"] = json!("be brief");
    let mut blind = server_profile("blind");
    blind["env"]["FAKE_ACP_NO_IMAGE"] = json!("1");
    let q = queue(json!({"profiles": [sp, blind]}));
    std::fs::write(q.project.join("shot.png"), b"\x89PNG\r\n\x1a\nfake").unwrap();
    std::fs::write(q.project.join("notes.txt"), "hello").unwrap();
    q.dispatcher();
    let blocks = |worker: &str| -> (String, Vec<Value>) {
        let v = await_one(&q, &q.start(&["--worker", worker, "--attach", "shot.png", "--attach", "notes.txt", "ECHO"]));
        assert_eq!(v["status"], "succeeded", "{v}");
        let text = v["responseText"].as_str().unwrap().to_string();
        let (cwd, json) = text.strip_prefix("cwd=").unwrap().split_once(" blocks=").unwrap();
        (cwd.to_string(), serde_json::from_str(json).unwrap())
    };
    let (cwd, b) = blocks("srv");
    assert_eq!(std::fs::canonicalize(&cwd).unwrap(), std::fs::canonicalize(&q.project).unwrap());
    let kinds: Vec<&str> = b.iter().map(|b| b["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["text", "image", "resource_link", "text"], "{b:?}");
    assert_eq!((b[0]["text"].as_str(), b[3]["text"].as_str()), (Some("be brief"), Some("ECHO")));
    assert_eq!(b[1]["mimeType"], "image/png");
    use base64::Engine as _;
    let data = base64::engine::general_purpose::STANDARD.decode(b[1]["data"].as_str().unwrap()).unwrap();
    assert_eq!(data, b"\x89PNG\r\n\x1a\nfake");
    assert!(b[2]["uri"].as_str().unwrap().starts_with("file:///") && b[2]["name"] == "notes.txt", "{b:?}");
    // An agent that reads no images gets a link to it instead.
    let (_, b) = blocks("blind");
    let kinds: Vec<&str> = b.iter().map(|b| b["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["resource_link", "resource_link", "text"], "{b:?}");
}

#[test]
fn stop_reasons_and_errors_fail_the_task_with_what_the_agent_said_and_keep_the_worker() {
    let _g = common::heavy();
    let q = queue(json!({}));
    q.dispatcher();
    for (task, error) in [
        ("MAXTOK", "Agent reported an error: the agent ran out of tokens (stop reason max_tokens)"),
        ("RPCERR", "Agent reported an error: it failed on purpose (code -32603)"),
    ] {
        let v = await_one(&q, &q.start(&["--worker", "srv", task]));
        assert_eq!((v["status"].as_str(), v["error"].as_str()), (Some("failed"), Some(error)), "{v}");
    }
    assert_eq!(await_one(&q, &q.start(&["--worker", "srv", "fine"]))["status"], "succeeded");
    assert_eq!(spawns(&q).len(), 1, "the worker answered each time and stayed");
}

#[test]
fn a_cancel_the_agent_ignores_stops_the_worker_after_the_grace() {
    let _g = common::heavy();
    let mut deaf = server_profile("deaf");
    deaf["env"]["FAKE_ACP_IGNORE_CANCEL"] = json!("1");
    let q = queue(json!({"profiles": [deaf], "jobs": {"killGraceMs": 500}}));
    q.dispatcher();
    let id = q.start(&["--worker", "deaf", "WAIT"]);
    wait_for(30, "the turn to stream", || !events(&q, &id).is_empty());
    let o = q.run(&["task", "cancel", &id]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(await_one(&q, &id)["status"], "canceled");
    let pid = spawns(&q)[0];
    wait_for(30, "the deaf worker to be stopped", || is_dead(pid));
    let rows = server_rows(&q);
    assert_eq!(rows[0].0, "stopped");
    assert_eq!(rows[0].2, Some(format!("It did not answer a cancel in time (task {id})")));
    assert_eq!(texts(&q, &id, "message"), ["waiting"], "its events are kept");
}

#[test]
fn a_crash_mid_turn_fails_the_task_keeps_its_events_and_the_next_task_gets_a_new_worker() {
    let _g = common::heavy();
    let q = queue(json!({}));
    q.dispatcher();
    let id = q.start(&["--worker", "srv", "CRASH"]);
    let v = await_one(&q, &id);
    assert_eq!((v["status"].as_str(), v["error"].as_str()), (Some("failed"), Some("Worker killed by signal 9")), "{v}");
    assert_eq!(texts(&q, &id, "message"), ["crashing"]);
    assert_eq!(await_one(&q, &q.start(&["--worker", "srv", "after"]))["status"], "succeeded");
    assert_eq!(spawns(&q).len(), 2);
    assert_eq!(server_rows(&q)[0].0, "error");
}

#[test]
fn a_killed_dispatcher_retries_the_attempt_and_keeps_the_first_attempts_events() {
    let _g = common::heavy();
    let q = queue(json!({"jobs": {"retryBackoffMs": 0}}));
    let d = q.dispatcher();
    let id = q.start(&["--worker", "srv", "STREAM 80"]);
    wait_for(30, "events of the first attempt", || !events(&q, &id).is_empty());
    kill9(d as i32);
    let first = events(&q, &id).len();
    q.dispatcher();
    let v = await_one(&q, &id);
    assert_eq!((v["status"].as_str(), v["attempt"].as_i64()), (Some("succeeded"), Some(2)), "{v}");
    let all = events(&q, &id);
    let by_attempt = |a: i64| all.iter().filter(|e| e.1 == a).count();
    assert_eq!(by_attempt(1), first, "the first attempt's events are kept as they were");
    assert!(by_attempt(2) > 0);
    // Sequence numbers go on across attempts.
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
}

#[test]
fn events_are_capped_per_job_newest_kept() {
    let _g = common::heavy();
    let q = queue(json!({"jobs": {"maxEvents": 3}}));
    q.dispatcher();
    let id = q.start(&["--worker", "srv", "STREAM 30"]);
    assert_eq!(await_one(&q, &id)["status"], "succeeded");
    let all = events(&q, &id);
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(all[0].0 > 1, "the oldest went: {all:?}");
    let newest: String = all.iter().map(|e| e.3.as_str()).collect();
    assert!(newest.contains("chunk 29 "), "{newest}");
}

#[test]
fn the_readmes_minimal_agent_works_as_shown() {
    let _g = common::heavy();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let after = readme.split_once("A custom agent needs only this much of ACP").unwrap().1;
    let code = after.split_once("```python\n").unwrap().1.split_once("```").unwrap().0;
    let q = queue(json!({}));
    let script = q.project.join("minimal-agent.py");
    std::fs::write(&script, code).unwrap();
    let mut p = server_profile("minimal");
    p["command"] = json!(["python3", script.display().to_string()]);
    crate::acp_agents::set_profiles(&q, json!([p]));
    q.dispatcher();
    for task in ["hello", "again"] {
        let v = await_one(&q, &q.start(&["--worker", "minimal", task]));
        assert_eq!(
            (v["status"].as_str(), v["responseText"].as_str()),
            (Some("succeeded"), Some(&*format!("done: {task}"))),
            "{v}"
        );
    }
}

#[test]
fn a_session_mode_the_agent_refuses_fails_the_task_with_its_answer() {
    let _g = common::heavy();
    let mut moded = server_profile("moded");
    moded["sessionMode"] = json!("auto");
    let q = queue(json!({"profiles": [moded]}));
    q.dispatcher();
    let v = await_one(&q, &q.start(&["--worker", "moded", "hello"]));
    assert_eq!(v["status"], "failed", "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(
        e.starts_with("Agent reported an error: could not set session mode \"auto\": session/set_mode failed: "),
        "{e}"
    );
    assert!(e.ends_with("(code -32601)"), "{e}");
}
