//! `baton mcp` fed malformed lines, raw, over its real stdin: each gets its exact JSON-RPC answer
//! (a parse error for a line that is not JSON, invalid params naming the problem for params of
//! the wrong shape), the server keeps serving after each, and a lone UTF-16 surrogate in a task's
//! text is stored as U+FFFD while a valid pair and an escaped backslash stay as they are.

use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::common::{self, Kill, TestQueue};
use serde_json::{Value, json};

/// `baton mcp` over raw pipes: lines in, JSON lines out.
struct Raw {
    _child: Kill,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    log: std::path::PathBuf,
    next_id: i64,
}

impl Raw {
    fn start(q: &TestQueue) -> Raw {
        let log = q.dir.path().join("mcp.log");
        let mut cmd = q.cmd();
        cmd.arg("mcp").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(std::fs::File::create(&log).unwrap());
        let mut child = Kill(cmd.spawn().expect("spawn baton mcp"));
        let stdin = child.0.stdin.take().unwrap();
        let stdout = child.0.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Raw { _child: child, stdin, lines, log, next_id: 1000 }
    }

    fn send_bytes(&mut self, line: &[u8]) {
        self.stdin.write_all(line).unwrap();
        self.stdin.write_all(b"\n").unwrap();
        self.stdin.flush().unwrap();
    }

    fn send(&mut self, line: &str) {
        self.send_bytes(line.as_bytes());
    }

    /// The next line the server writes, as JSON.
    fn recv(&self) -> Value {
        let line = self.lines.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|e| {
            panic!("no answer in 30 s ({e}); server log:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default())
        });
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// Send one line and read its answer.
    fn ask(&mut self, line: &str) -> Value {
        self.send(line);
        self.recv()
    }

    fn id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    fn initialize(&mut self) {
        let id = self.id();
        let a = self.ask(
            &json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "mcp-raw-test", "version": "1.0.0"}}})
            .to_string(),
        );
        assert_eq!(a["id"], id, "{a}");
        assert_eq!(a["result"]["serverInfo"]["name"], "baton", "{a}");
        self.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    }

    /// A valid `tools/list` is still answered, `task_start` among the tools (the full list is
    /// checked in `mcp.rs`).
    fn assert_serving(&mut self) {
        let id = self.id();
        let a = self.ask(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/list"}).to_string());
        assert_eq!(a["id"], id, "{a}");
        let tools = a["result"]["tools"].as_array().unwrap_or_else(|| panic!("tools/list: {a}"));
        assert!(tools.iter().any(|t| t["name"] == "task_start"), "{a}");
    }

    /// `tools/call` with these arguments (JSON text, sent as is); the result's JSON answer.
    fn call(&mut self, tool: &str, arguments: &str) -> Value {
        let id = self.id();
        let line = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{arguments}}}}}"#
        );
        let a = self.ask(&line);
        assert_eq!(a["id"], id, "{line}: {a}");
        assert_eq!(a["result"]["isError"], false, "{line}: {a}");
        let text = a["result"]["content"][0]["text"].as_str().unwrap_or_else(|| panic!("{a}"));
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }
}

fn error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

#[test]
fn a_line_that_is_not_json_gets_a_parse_error() {
    let _g = common::heavy();
    let q = TestQueue::new();
    let mut s = Raw::start(&q);
    // Before the session starts, too.
    assert_eq!(s.ask("hello"), error(Value::Null, -32700, "Parse error: expected value at line 1 column 1"));
    s.initialize();
    s.assert_serving();
    let cases: [(&[u8], &str); 4] = [
        (b"hello", "Parse error: expected value at line 1 column 1"),
        (
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/list""#,
            "Parse error: EOF while parsing an object at line 1 column 45",
        ),
        (br#"{"jsonrpc":"2.0","id":2,"method":"tools/list",}"#, "Parse error: trailing comma at line 1 column 47"),
        (
            b"{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/\xff\"}",
            "Parse error: invalid unicode code point at line 1 column 41",
        ),
    ];
    for (line, message) in cases {
        s.send_bytes(line);
        assert_eq!(s.recv(), error(Value::Null, -32700, message), "{}", String::from_utf8_lossy(line));
        s.assert_serving();
    }
}

#[test]
fn params_that_are_not_an_object_get_invalid_params() {
    let _g = common::heavy();
    let q = TestQueue::new();
    let mut s = Raw::start(&q);
    // A malformed first initialize does not end the session: the next one starts it.
    let a = s.ask(r#"{"jsonrpc":"2.0","id":"first","method":"initialize","params":["2025-06-18"]}"#);
    assert_eq!(a, error(json!("first"), -32602, "params must be an object"));
    s.initialize();
    s.assert_serving();
    for method in ["initialize", "tools/list", "tools/call"] {
        for params in [json!([1, 2]), json!(42), json!("x")] {
            let line = json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}).to_string();
            assert_eq!(s.ask(&line), error(json!(7), -32602, "params must be an object"), "{line}");
            s.assert_serving();
        }
    }
    let a = s.ask(r#"{"jsonrpc":"2.0","id":8,"method":"initialize","params":{}}"#);
    assert_eq!(a, error(json!(8), -32602, "Invalid params for initialize: missing field `protocolVersion`"));
    s.assert_serving();
}

#[test]
fn a_malformed_tools_call_gets_invalid_params_naming_the_problem() {
    let _g = common::heavy();
    let q = TestQueue::new();
    let mut s = Raw::start(&q);
    s.initialize();
    let needs_name = "tools/call needs a string \"name\"";
    let cases = [
        (json!({}), needs_name),
        (json!({"arguments": {}}), needs_name),
        (json!({"name": 5, "arguments": {}}), needs_name),
        (json!({"name": null}), needs_name),
        (json!({"name": "task_list", "arguments": [1]}), "arguments must be an object"),
        (json!({"name": "task_list", "arguments": "view=profiles"}), "arguments must be an object"),
        (json!({"name": "task_list", "arguments": 5}), "arguments must be an object"),
        (json!({"name": "task_list", "arguments": true}), "arguments must be an object"),
    ];
    for (params, message) in cases {
        let line = json!({"jsonrpc": "2.0", "id": "call-1", "method": "tools/call", "params": params}).to_string();
        assert_eq!(s.ask(&line), error(json!("call-1"), -32602, message), "{line}");
        s.assert_serving();
    }
    // A call without params at all.
    let a = s.ask(r#"{"jsonrpc":"2.0","id":9,"method":"tools/call"}"#);
    assert_eq!(a, error(json!(9), -32602, needs_name));
    // An unknown tool keeps rmcp's answer.
    let a = s.ask(r#"{"jsonrpc":"2.0","id":10,"method":"tools/call","params":{"name":"no_such_tool","arguments":{}}}"#);
    assert_eq!(a, error(json!(10), -32602, "tool not found"));
    s.assert_serving();
    // Null arguments are no arguments.
    let a = s.ask(r#"{"jsonrpc":"2.0","id":11,"method":"tools/call","params":{"name":"task_list","arguments":null}}"#);
    assert_eq!(a["id"], 11, "{a}");
    assert_eq!(a["result"]["isError"], false, "{a}");
}

/// Start a task whose text is `escaped` (JSON string content, sent as is); its stored text
/// must be `expected`, both in the record and in the queue file.
fn started_text_is(s: &mut Raw, q: &TestQueue, escaped: &str, expected: &str) {
    let started = s.call("task_start", &format!(r#"{{"task":"{escaped}","workerId":"coder"}}"#));
    assert_eq!(started["status"], "queued", "{escaped}: {started}");
    let id = started["taskId"].as_str().unwrap().to_string();
    let record = s.call("task_peek", &json!({"taskId": id}).to_string());
    assert_eq!(record["message"], expected, "{escaped}: {record}");
    let stored: String = q.raw().query_row("SELECT task FROM jobs WHERE id = ?1", [&id], |r| r.get(0)).unwrap();
    assert_eq!(stored, expected, "{escaped}");
    s.assert_serving();
}

#[test]
fn a_lone_surrogate_in_a_task_becomes_the_replacement_character() {
    let _g = common::heavy();
    let q = TestQueue::new();
    let mut s = Raw::start(&q);
    s.initialize();
    // A lone high half (a string cut inside an emoji), a lone low half, both at once.
    started_text_is(&mut s, &q, r"fix the \ud83d bug", "fix the \u{FFFD} bug");
    started_text_is(&mut s, &q, r"\uDE00 first", "\u{FFFD} first");
    started_text_is(&mut s, &q, r"cut inside an emoji \ud83d", "cut inside an emoji \u{FFFD}");
    started_text_is(&mut s, &q, r"\ude00\ud83d", "\u{FFFD}\u{FFFD}");
    // A lone high half before a whole pair: only the lone one is replaced.
    started_text_is(&mut s, &q, r"\ud83d\ud83d\ude00", "\u{FFFD}😀");
}

#[test]
fn a_valid_pair_and_an_escaped_backslash_stay_as_they_are() {
    let _g = common::heavy();
    let q = TestQueue::new();
    let mut s = Raw::start(&q);
    s.initialize();
    started_text_is(&mut s, &q, r"ship it \ud83d\ude00", "ship it 😀");
    started_text_is(&mut s, &q, r"ship it \uD83D\uDE00", "ship it 😀");
    started_text_is(&mut s, &q, "ship it 😀", "ship it 😀");
    // An escaped backslash followed by text that looks like an escape.
    started_text_is(&mut s, &q, r"the text \\ud83d", r"the text \ud83d");
    // An escaped backslash, then a real lone surrogate.
    started_text_is(&mut s, &q, r"\\\ud83d", "\\\u{FFFD}");
}
