//! Runner presets end to end: fake agent CLIs (scripts named like the real ones, printing their
//! recorded output formats) run through a real dispatcher; the response text, failures, tokens
//! and cost come out of their JSON (Lines).

use crate::common::{self, TestQueue};
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
            r###"p=$(cat)
case "$p" in
  *FAIL*) echo '{"type":"result","subtype":"error_during_execution","is_error":true,"result":"Credit balance is too low"}' ;;
  *EXIT3*) echo '{"type":"result","is_error":false,"result":"partial"}'; exit 3 ;;
  *DENY*) echo '{"type":"result","subtype":"success","is_error":false,"result":"I could not write it","permission_denials":[{"tool_name":"Write","tool_use_id":"t1","tool_input":{"file_path":"/w/hello.txt","content":"hi"}}]}' ;;
  *) echo '{"type":"system","subtype":"init","session_id":"s"}'
     echo '{"type":"assistant","message":{"id":"m1","content":[{"type":"text","text":"working"}],"usage":{"input_tokens":100,"cache_read_input_tokens":300,"output_tokens":20}}}'
     printf '{"type":"result","subtype":"success","is_error":false,"result":"## Summary\\nclaude did: %s","total_cost_usd":0.25,"usage":{"input_tokens":100,"cache_creation_input_tokens":20,"cache_read_input_tokens":300,"output_tokens":20}}\n' "$p" ;;
esac"###,
        ),
        (
            "codex",
            r###"p=$(cat)
case "$p" in
  *NOGIT*) echo 'Not inside a trusted directory and --skip-git-repo-check was not specified.' >&2; exit 1 ;;
esac
echo '{"type":"thread.started","thread_id":"t"}'
echo '{"type":"item.completed","item":{"id":"i0","type":"agent_message","text":"draft"}}'
case "$p" in
  *FAIL*) echo '{"type":"turn.failed","error":{"message":"stream disconnected"}}' ;;
  *) echo '{"type":"item.completed","item":{"id":"i1","type":"agent_message","text":"codex final"}}'
     echo '{"type":"turn.completed","usage":{"input_tokens":7,"cached_input_tokens":4,"output_tokens":3}}' ;;
esac"###,
        ),
        (
            "gemini",
            r###"p=$(cat)
case "$p" in
  *FAIL*) printf '{\n  "error": {\n    "type": "ApiError",\n    "message": "quota exceeded",\n    "code": 429\n  }\n}\n' >&2; exit 173 ;;
  *QUOTA*) echo '{"type":"init","session_id":"s","model":"m"}'
     echo '{"type":"result","status":"error","error":{"type":"unknown","message":"[API Error: quota exceeded]"},"stats":{"total_tokens":0}}'; exit 1 ;;
  *) echo '{"type":"init","session_id":"s","model":"m"}'
     echo '{"type":"message","role":"user","content":"go"}'
     echo '{"type":"message","role":"assistant","content":"gemini ","delta":true}'
     echo '{"type":"message","role":"assistant","content":"answer","delta":true}'
     echo '{"type":"result","status":"success","stats":{"total_tokens":119,"input_tokens":110,"output_tokens":7,"cached":54,"input":56,"models":{"a":{"total_tokens":12},"b":{"total_tokens":107}}}}' ;;
esac"###,
        ),
        (
            "opencode",
            r###"cat > "$0.stdin"
echo '{"type":"step_start","sessionID":"s","part":{"type":"step-start"}}'
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
    assert_eq!((v["tokens"].as_i64(), v["costUsd"].as_f64()), (Some(440), Some(0.25)));
    let kinds = (v["inputTokens"].as_i64(), v["outputTokens"].as_i64(), v["cachedTokens"].as_i64());
    assert_eq!(kinds, (Some(420), Some(20), Some(300)), "cached tokens count: {v}");
    let argv: String =
        q.raw().query_row("SELECT argv FROM jobs WHERE id = ?1", [v["id"].as_str().unwrap()], |r| r.get(0)).unwrap();
    let argv = serde_json::from_str::<Vec<String>>(&argv).unwrap();
    assert_eq!(argv[..5], ["claude", "-p", "--output-format", "stream-json", "--verbose"]);

    let (v, code) = run(&["--worker", "coder", "please FAIL"]);
    assert_eq!((v["status"].as_str(), code), (Some("failed"), 1), "is_error with exit 0 fails: {v}");
    assert_eq!(v["error"], "Agent reported an error: Credit balance is too low");
    let (v, code) = run(&["--worker", "coder", "please DENY"]);
    assert_eq!((v["status"].as_str(), code), (Some("failed"), 1), "a permission denial fails: {v}");
    assert_eq!(
        v["error"],
        "Agent reported an error: the agent was refused permission for Write (/w/hello.txt): the profile's runner does not grant it"
    );
    assert_eq!(v["responseText"], "I could not write it");
    let (v, _) = run(&["--worker", "coder", "EXIT3"]);
    assert_eq!(v["status"], "failed");
    assert_eq!(v["error"], "Worker exited with code 3");

    let (v, _) = run(&["--worker", "cx", "go"]);
    assert_eq!((v["status"].as_str(), v["responseText"].as_str()), (Some("succeeded"), Some("codex final")), "{v}");
    assert_eq!((v["tokens"].as_i64(), v["cachedTokens"].as_i64()), (Some(10), Some(4)));
    let (v, _) = run(&["--worker", "cx", "FAIL"]);
    assert_eq!(v["error"], "Agent reported an error: stream disconnected");
    assert_eq!(v["responseText"], "draft", "the extracted text, not the raw JSON Lines: {v}");
    let (v, _) = run(&["--worker", "cx", "NOGIT"]);
    assert_eq!(
        v["error"],
        "Worker exited with code 1: Not inside a trusted directory and --skip-git-repo-check was not specified."
    );
    assert_eq!(v["responseText"], Value::Null, "{v}");

    let (v, _) = run(&["--worker", "gm", "go"]);
    assert_eq!((v["status"].as_str(), v["responseText"].as_str()), (Some("succeeded"), Some("gemini answer")));
    assert_eq!((v["tokens"].as_i64(), v["inputTokens"].as_i64()), (Some(119), Some(110)), "the result's stats: {v}");
    assert_eq!((v["outputTokens"].as_i64(), v["cachedTokens"].as_i64()), (Some(7), Some(54)));
    let (v, _) = run(&["--worker", "gm", "FAIL"]);
    assert_eq!(v["error"], "Agent reported an error: quota exceeded", "read from stderr: {v}");
    assert_eq!(v["exitCode"], 173);
    let (v, _) = run(&["--worker", "gm", "QUOTA"]);
    assert_eq!(v["error"], "Agent reported an error: [API Error: quota exceeded]", "the result line: {v}");

    let (v, _) = run(&["--worker", "oc", "go"]);
    assert_eq!((v["responseText"].as_str(), v["tokens"].as_i64()), (Some("opencode answer"), Some(11)), "{v}");
    assert_eq!(v["costUsd"], 0.5);
    let prompt = "write \"hello world\"\n--and keep {model} literal";
    let (v, _) = run(&["--worker", "oc", prompt]);
    assert_eq!(v["status"], "succeeded");
    let got = std::fs::read_to_string(bin.join("opencode.stdin")).unwrap();
    assert_eq!(got, prompt, "opencode receives the task text verbatim on stdin");
}

#[test]
fn built_in_profiles_take_env_and_a_runner_from_config() {
    let _g = common::heavy();
    let q = TestQueue::with_overrides(json!({
        "profiles": [{"id": "coder", "env": {"GREETING": "hi from config"}},
                     {"id": "architect", "command": ["sh", "-c", "echo arch:$GREETING"], "env": {"GREETING": "a"}}]
    }));
    let _d = common::Kill(q.cmd().arg("run").spawn().unwrap());
    let id = q.start(&["--worker", "coder", "echo $GREETING"]);
    let (v, code) = q.json(&["task", "await", &id, "--timeout", "30000"]);
    assert_eq!((v["responseText"].as_str(), code), (Some("hi from config"), 0), "{v}");
    let id = q.start(&["--worker", "architect", "ignored"]);
    let (v, _) = q.json(&["task", "await", &id, "--timeout", "30000"]);
    assert_eq!(v["responseText"], "arch:a", "{v}");
    let (listed, _) = q.json(&["profiles"]);
    let coder = listed.as_array().unwrap().iter().find(|p| p["id"] == "coder").unwrap().clone();
    assert_eq!(coder["origin"], "built-in, adjusted in the project config", "{coder}");
    assert_eq!(coder["name"], "Code Implementer");
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
