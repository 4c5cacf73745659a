//! Oneshot workers whose runner streams JSON Lines (an output spec with `events`): fake agent
//! CLIs print lines of each dialect, then wait for the test to release them; the activity is in
//! `job_events` and in peek while the worker still runs, a half-written line waits for its end,
//! and the task then succeeds with the answer its spec reads from the same output.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::common::{self, TestQueue, wait_for};

/// (kind, text) of a job's events, oldest first.
fn events(q: &TestQueue, id: &str) -> Vec<(String, String)> {
    let c = q.raw();
    let mut st = c.prepare("SELECT kind, text FROM job_events WHERE job_id = ?1 ORDER BY seq").unwrap();
    st.query_map([id], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
}

fn has(q: &TestQueue, id: &str, kind: &str, text: &str) -> bool {
    events(q, id).iter().any(|(k, t)| k == kind && t == text)
}

/// A fake agent CLI `name`: reads its prompt, prints `before` (as it is: a last line without
/// its newline stays unfinished), waits until the test calls `release`, then prints `after`.
struct Fake {
    script: PathBuf,
    release: PathBuf,
}

impl Fake {
    fn new(q: &TestQueue, name: &str, before: &str, after: &str) -> Fake {
        let dir = q.dir.path();
        let (b, a, release) =
            (dir.join(format!("{name}.before")), dir.join(format!("{name}.after")), dir.join(format!("{name}.go")));
        std::fs::write(&b, before).unwrap();
        std::fs::write(&a, after).unwrap();
        let body = format!(
            "cat > /dev/null\ncat '{}'\ni=0\nwhile [ ! -e '{}' ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done\ncat '{}'",
            b.display(),
            release.display(),
            a.display()
        );
        Fake { script: q.script(name, &body), release }
    }

    fn release(&self) {
        std::fs::write(&self.release, "").unwrap();
    }

    fn profile(&self, id: &str, output: Value) -> Value {
        json!({"id": id, "name": id, "model": "node", "purpose": "p", "whenToUse": "w",
               "command": [self.script.display().to_string()], "promptVia": "stdin", "output": output})
    }
}

fn lines(list: &[Value]) -> String {
    list.iter().map(|l| format!("{l}\n")).collect()
}

/// Start `profile`'s task, wait until its running worker has written `expected` (kind, text),
/// and return the task's id and its peek record taken while it still runs.
fn running_with(q: &TestQueue, profile: &str, expected: &[(&str, &str)]) -> (String, Value) {
    let id = q.start(&["--worker", profile, "do the work"]);
    wait_for(30, "the streamed events while the worker runs", || expected.iter().all(|(k, t)| has(q, &id, k, t)));
    assert_eq!(q.state(&id), "running", "the events came while the worker ran: {:?}", events(q, &id));
    let (v, _) = q.json(&["task", "peek", &id]);
    assert_eq!(v["status"], "running", "{v}");
    (id, v)
}

fn finished(q: &TestQueue, id: &str) -> Value {
    q.json(&["task", "await", id, "--timeout", "30000"]).0
}

#[test]
fn a_claude_stream_shows_its_tool_calls_while_it_runs_and_its_result_after() {
    let _g = common::heavy();
    let q = TestQueue::new();
    let target = q.project.join("src/a.rs").display().to_string();
    let before = lines(&[
        json!({"type": "system", "subtype": "init", "session_id": "s", "model": "claude-opus-4-8"}),
        json!({"type": "assistant", "message": {"id": "msg_1", "content": [{"type": "tool_use", "id": "toolu_1",
            "name": "Write", "input": {"file_path": target, "content": "x\n"}}],
            "usage": {"input_tokens": 10, "cache_creation_input_tokens": 20, "cache_read_input_tokens": 300, "output_tokens": 5}}}),
        json!({"type": "user", "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
            "content": "File created successfully"}]}}),
    ]) + r###"{"type":"assistant","message":{"id":"msg_2","content":[{"type":"text","text":"## Summary\ndo"###;
    let after = String::from("ne\"}]}}\n")
        + &lines(&[json!({"type": "result", "subtype": "success", "is_error": false, "result": "## Summary\ndone",
            "total_cost_usd": 0.01, "permission_denials": [],
            "usage": {"input_tokens": 20, "cache_creation_input_tokens": 40, "cache_read_input_tokens": 600, "output_tokens": 10}})]);
    let fake = Fake::new(&q, "claude-like", &before, &after);
    // A custom profile's spec, as the claude preset reads it.
    let spec = json!({"format": "jsonl", "events": "claude", "where": [["/type", "result"]], "text": "/result",
        "failed": "/is_error", "error": "/result", "denials": "/permission_denials",
        "inputTokens": ["/usage/input_tokens", "/usage/cache_creation_input_tokens", "/usage/cache_read_input_tokens"],
        "outputTokens": ["/usage/output_tokens"], "cachedTokens": ["/usage/cache_read_input_tokens"], "cost": "/total_cost_usd"});
    write_profiles(&q, &[fake.profile("cl", spec)]);
    q.dispatcher();

    let (id, peek) = running_with(
        &q,
        "cl",
        &[("tool", "edit \"Write src/a.rs\" (pending)"), ("tool_update", "edit \"Write src/a.rs\" (completed)")],
    );
    assert_eq!(peek["activity"]["doing"], "edit \"Write src/a.rs\" (completed)", "{peek}");
    assert_eq!(peek["activity"]["usage"], "tokens: 330 in (300 cached), 5 out", "{peek}");
    assert!(peek["activity"]["events"].as_i64() >= Some(3), "{peek}");
    assert!(
        !events(&q, &id).iter().any(|(k, _)| k == "message"),
        "a half-written line waits for its end: {:?}",
        events(&q, &id)
    );
    let listed = q.ok(&["task", "events", &id]);
    assert!(listed.contains("edit \"Write src/a.rs\" (completed)"), "{listed}");

    fake.release();
    let v = finished(&q, &id);
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(v["responseText"], "## Summary\ndone");
    assert_eq!(
        (v["inputTokens"].as_i64(), v["cachedTokens"].as_i64()),
        (Some(660), Some(600)),
        "the result line only: {v}"
    );
    assert!(has(&q, &id, "message", "## Summary\ndone"), "{:?}", events(&q, &id));
    assert!(has(&q, &id, "usage", "tokens: 660 in (600 cached), 10 out, $0.01"), "{:?}", events(&q, &id));
}

#[test]
fn a_codex_stream_shows_the_running_command() {
    let _g = common::heavy();
    let q = TestQueue::new();
    let command = |status: &str, code: Value| {
        json!({"id": "item_1", "type": "command_execution", "command": "/bin/bash -lc 'cargo test'",
               "aggregated_output": "", "exit_code": code, "status": status})
    };
    let before = lines(&[
        json!({"type": "thread.started", "thread_id": "t1"}),
        json!({"type": "turn.started"}),
        json!({"type": "item.completed", "item": {"id": "item_0", "type": "reasoning", "text": "**Running the tests**"}}),
        json!({"type": "item.started", "item": command("in_progress", Value::Null)}),
    ]);
    let after = lines(&[
        json!({"type": "item.completed", "item": command("completed", json!(0))}),
        json!({"type": "item.completed", "item": {"id": "item_2", "type": "agent_message", "text": "## Summary\ntests pass"}}),
        json!({"type": "turn.completed", "usage": {"input_tokens": 660, "cached_input_tokens": 600, "output_tokens": 10}}),
    ]);
    let fake = Fake::new(&q, "codex-like", &before, &after);
    write_profiles(&q, &[fake.profile("cx", json!("codex"))]);
    q.dispatcher();

    let (id, peek) = running_with(&q, "cx", &[("tool", "execute \"cargo test\" (in_progress)")]);
    assert_eq!(peek["activity"]["doing"], "execute \"cargo test\" (in_progress)", "{peek}");
    assert!(has(&q, &id, "thought", "**Running the tests**"), "{:?}", events(&q, &id));

    fake.release();
    let v = finished(&q, &id);
    assert_eq!(
        (v["status"].as_str(), v["responseText"].as_str()),
        (Some("succeeded"), Some("## Summary\ntests pass")),
        "{v}"
    );
    assert_eq!(v["cachedTokens"], 600);
    let all = events(&q, &id);
    assert!(has(&q, &id, "tool_update", "execute \"cargo test\" (completed)"), "{all:?}");
    assert!(has(&q, &id, "usage", "tokens: 660 in (600 cached), 10 out"), "{all:?}");
}

#[test]
fn opencode_and_gemini_streams_show_their_tools_and_plans() {
    let _g = common::heavy();
    let q = TestQueue::new();
    let target = q.project.join("hello.txt").display().to_string();
    let oc_before = lines(&[
        json!({"type": "step_start", "sessionID": "s", "part": {"id": "p1", "type": "step-start"}}),
        json!({"type": "tool_use", "sessionID": "s", "part": {"type": "tool", "tool": "todowrite", "callID": "c1", "id": "p2",
            "state": {"status": "completed", "title": "2 todos", "input": {"todos": [
                {"id": "1", "content": "write it", "status": "completed", "priority": "high"},
                {"id": "2", "content": "check it", "status": "in_progress", "priority": "high"}]}}}}),
        json!({"type": "tool_use", "sessionID": "s", "part": {"type": "tool", "tool": "write", "callID": "c2", "id": "p3",
            "state": {"status": "completed", "title": "hello.txt", "input": {"filePath": target, "content": "hi\n"}}}}),
        json!({"type": "step_finish", "sessionID": "s", "part": {"id": "p4", "type": "step-finish", "reason": "tool-calls",
            "tokens": {"input": 30, "output": 5, "reasoning": 0, "cache": {"read": 300, "write": 0}}, "cost": 0}}),
    ]);
    let oc_after = lines(&[
        json!({"type": "text", "sessionID": "s", "part": {"id": "p5", "type": "text", "text": "## Summary\nwrote hello.txt"}}),
        json!({"type": "step_finish", "sessionID": "s", "part": {"id": "p6", "type": "step-finish", "reason": "stop",
            "tokens": {"input": 30, "output": 5, "reasoning": 0, "cache": {"read": 300, "write": 0}}, "cost": 0}}),
    ]);
    let gm_before = lines(&[
        json!({"type": "init", "session_id": "g", "model": "m"}),
        json!({"type": "message", "role": "user", "content": "do the work"}),
        json!({"type": "message", "role": "assistant", "content": "Writing it.", "delta": true}),
        json!({"type": "tool_use", "tool_name": "write_file", "tool_id": "w1", "parameters": {"file_path": target, "content": "hi\n"}}),
        json!({"type": "tool_result", "tool_id": "w1", "status": "success"}),
    ]);
    let gm_after = lines(&[
        json!({"type": "message", "role": "assistant", "content": "## Summary\n", "delta": true}),
        json!({"type": "message", "role": "assistant", "content": "wrote it", "delta": true}),
        json!({"type": "result", "status": "success", "stats": {"total_tokens": 335, "input_tokens": 330, "output_tokens": 5, "cached": 300, "input": 30}}),
    ]);
    let oc = Fake::new(&q, "opencode-like", &oc_before, &oc_after);
    let gm = Fake::new(&q, "gemini-like", &gm_before, &gm_after);
    write_profiles(&q, &[oc.profile("oc", json!("opencode")), gm.profile("gm", json!("gemini"))]);
    q.dispatcher();

    let (oc_id, peek) = running_with(
        &q,
        "oc",
        &[("plan", "plan 1/2 done: check it"), ("tool", "edit \"write hello.txt\" (completed)")],
    );
    assert_eq!(
        (peek["activity"]["plan"].as_str(), peek["activity"]["usage"].as_str()),
        (Some("plan 1/2 done: check it"), Some("tokens: 330 in (300 cached), 5 out")),
        "{peek}"
    );
    let (gm_id, peek) = running_with(&q, "gm", &[("tool_update", "edit \"write_file hello.txt\" (completed)")]);
    assert_eq!(peek["activity"]["doing"], "edit \"write_file hello.txt\" (completed)", "{peek}");
    assert!(has(&q, &gm_id, "message", "Writing it."), "{:?}", events(&q, &gm_id));

    oc.release();
    gm.release();
    let v = finished(&q, &oc_id);
    assert_eq!(
        (v["status"].as_str(), v["responseText"].as_str()),
        (Some("succeeded"), Some("## Summary\nwrote hello.txt")),
        "{v}"
    );
    assert!(has(&q, &oc_id, "usage", "tokens: 660 in (600 cached), 10 out"), "{:?}", events(&q, &oc_id));
    let v = finished(&q, &gm_id);
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(v["responseText"], "## Summary\nwrote it", "the text after the last tool call: {v}");
    assert_eq!((v["tokens"].as_i64(), v["cachedTokens"].as_i64()), (Some(335), Some(300)), "{v}");
    assert!(has(&q, &gm_id, "usage", "tokens: 330 in (300 cached), 5 out"), "{:?}", events(&q, &gm_id));
}

#[test]
fn long_or_odd_lines_are_skipped_and_a_runner_without_events_records_none() {
    let _g = common::heavy();
    let q = TestQueue::new();
    let long = format!(
        "{{\"type\":\"item.completed\",\"item\":{{\"type\":\"agent_message\",\"text\":\"{}\"}}}}\n",
        "x".repeat(1 << 20)
    );
    let before = String::from("not json at all\n\u{1}\u{2}\n")
        + &long
        + &lines(&[
            json!({"type": "item.completed", "item": {"id": "a", "type": "agent_message", "text": "## Summary\nafter the long line"}}),
        ]);
    let fake = Fake::new(&q, "odd", &before, "");
    let plain = Fake::new(&q, "plain", &before, "");
    let no_events = json!({"format": "jsonl", "where": [["/type", "item.completed"]], "text": "/item/text"});
    write_profiles(&q, &[fake.profile("odd", json!("codex")), plain.profile("plain", no_events)]);
    fake.release();
    plain.release();
    q.dispatcher();
    let id = q.start(&["--worker", "odd", "go"]);
    let v = finished(&q, &id);
    // The answer comes after more than the response cap of output, and is found all the same.
    let answer: String = v["responseText"].as_str().unwrap_or_default().chars().take(200).collect();
    assert_eq!((v["status"].as_str(), answer.as_str()), (Some("succeeded"), "## Summary\nafter the long line"));
    assert_eq!(
        events(&q, &id),
        [("message".to_string(), "## Summary\nafter the long line".to_string())],
        "the 1 MiB line is skipped"
    );
    let id = q.start(&["--worker", "plain", "go"]);
    assert_eq!(finished(&q, &id)["status"], "succeeded");
    assert!(events(&q, &id).is_empty(), "no `events` in the spec: no activity");
}

/// Write the project config: the test defaults and these profiles.
fn write_profiles(q: &TestQueue, profiles: &[Value]) {
    let mut c = common::default_config();
    c["profiles"] = json!(profiles);
    std::fs::write(q.project.join(".baton/config.json"), serde_json::to_string(&c).unwrap()).unwrap();
}
