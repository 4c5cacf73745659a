//! Runner presets end to end: fake agent CLIs (scripts named like the real ones, printing their
//! recorded output formats) run through a real dispatcher; the response text, failures, tokens
//! and cost come out of their JSON.

mod common;

use common::TestQueue;
use serde_json::{Value, json};

/// A directory of fake `claude`, `codex`, `gemini` and `opencode` executables. Each prints its
/// CLI's output format; a prompt containing FAIL gives that CLI's error shape, EXIT3 exits 3.
fn fake_clis(q: &TestQueue) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = q.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let scripts = [
        (
            "claude",
            r###"for a; do p="$a"; done
case "$p" in
  *FAIL*) echo '{"type":"result","subtype":"error_during_execution","is_error":true,"result":"Credit balance is too low"}' ;;
  *EXIT3*) echo '{"type":"result","is_error":false,"result":"partial"}'; exit 3 ;;
  *) printf '{"type":"result","subtype":"success","is_error":false,"result":"## Summary\\nclaude did: %s","total_cost_usd":0.25,"usage":{"input_tokens":100,"output_tokens":20}}\n' "$p" ;;
esac"###,
        ),
        (
            "codex",
            r###"for a; do p="$a"; done
echo '{"type":"thread.started","thread_id":"t"}'
echo '{"type":"item.completed","item":{"id":"i0","type":"agent_message","text":"draft"}}'
case "$p" in
  *FAIL*) echo '{"type":"turn.failed","error":{"message":"stream disconnected"}}' ;;
  *) echo '{"type":"item.completed","item":{"id":"i1","type":"agent_message","text":"codex final"}}'
     echo '{"type":"turn.completed","usage":{"input_tokens":7,"output_tokens":3}}' ;;
esac"###,
        ),
        (
            "gemini",
            r###"for a; do p="$a"; done
case "$p" in
  *FAIL*) echo '{"error":{"type":"ApiError","message":"quota exceeded","code":429}}' ;;
  *) echo '{"response":"gemini answer","stats":{}}' ;;
esac"###,
        ),
        (
            "opencode",
            r###"echo '{"type":"step_start","sessionID":"s","part":{"type":"step-start"}}'
echo '{"type":"text","sessionID":"s","part":{"type":"text","text":"opencode answer"}}'
echo '{"type":"step_finish","sessionID":"s","part":{"type":"step-finish","tokens":{"input":5,"output":6},"cost":0.5}}'"###,
        ),
    ];
    for (name, body) in scripts {
        let p = bin.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

fn profile(id: &str, command: &str) -> Value {
    json!({"id": id, "name": id, "model": "node", "purpose": "p", "whenToUse": "w", "command": command})
}

#[test]
fn presets_read_each_clis_output_format() {
    let _g = common::heavy();
    let q = TestQueue::with_overrides(json!({
        "runner": "claude",
        "profiles": [profile("cx", "codex"), profile("gm", "gemini"), profile("oc", "opencode")]
    }));
    let bin = fake_clis(&q);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let _d = common::Kill(q.cmd().arg("run").env("PATH", &path).spawn().unwrap());
    let run = |args: &[&str]| -> (Value, i32) {
        let id = q.start(args);
        q.json(&["task", "await", &id, "--timeout", "30000"])
    };

    let (v, code) = run(&["--worker", "coder", "add a flag"]);
    assert_eq!((v["status"].as_str(), code), (Some("succeeded"), 0), "{v}");
    assert_eq!(v["responseText"], "## Summary\nclaude did: add a flag");
    assert_eq!(v["report"]["summary"], "claude did: add a flag");
    assert_eq!((v["tokens"].as_i64(), v["costUsd"].as_f64()), (Some(120), Some(0.25)));
    let argv: String =
        q.raw().query_row("SELECT argv FROM jobs WHERE id = ?1", [v["id"].as_str().unwrap()], |r| r.get(0)).unwrap();
    assert_eq!(serde_json::from_str::<Vec<String>>(&argv).unwrap()[..4], ["claude", "-p", "--output-format", "json"]);

    let (v, code) = run(&["--worker", "coder", "please FAIL"]);
    assert_eq!((v["status"].as_str(), code), (Some("failed"), 1), "is_error with exit 0 fails: {v}");
    assert_eq!(v["error"], "Agent reported an error: Credit balance is too low");
    let (v, _) = run(&["--worker", "coder", "EXIT3"]);
    assert_eq!(v["status"], "failed");
    assert_eq!(v["error"], "Worker exited with code 3");

    let (v, _) = run(&["--worker", "cx", "go"]);
    assert_eq!((v["status"].as_str(), v["responseText"].as_str()), (Some("succeeded"), Some("codex final")), "{v}");
    assert_eq!(v["tokens"], 10);
    let (v, _) = run(&["--worker", "cx", "FAIL"]);
    assert_eq!(v["error"], "Agent reported an error: stream disconnected");

    let (v, _) = run(&["--worker", "gm", "go"]);
    assert_eq!((v["status"].as_str(), v["responseText"].as_str()), (Some("succeeded"), Some("gemini answer")));
    let (v, _) = run(&["--worker", "gm", "FAIL"]);
    assert_eq!(v["error"], "Agent reported an error: quota exceeded");

    let (v, _) = run(&["--worker", "oc", "go"]);
    assert_eq!((v["responseText"].as_str(), v["tokens"].as_i64()), (Some("opencode answer"), Some(11)), "{v}");
    assert_eq!(v["costUsd"], 0.5);
}

#[test]
fn an_unknown_preset_is_a_clear_error() {
    let q = TestQueue::with_overrides(json!({"runner": "claud"}));
    let o = q.run(&["task", "start", "--worker", "coder", "x"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("\"claud\" is not a preset (opencode, claude, codex, gemini)"), "{e}");
    let q = TestQueue::with_overrides(json!({"profiles": [{"id": "x", "name": "x", "model": "m", "purpose": "p",
        "whenToUse": "w", "output": "nope"}]}));
    let o = q.run(&["task", "list"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("names no preset \"nope\""), "{e}");
}
