//! The Agent Client Protocol, client side, as baton's agent workers speak it: JSON-RPC 2.0, one
//! message per line on the worker's stdin and stdout. This module is the wire (framing, message
//! classes, the requests baton writes) and the reading of what an agent reports (its session
//! updates, as activity events and an answer); `server` runs the conversation.
//!
//! baton reads the dozen fields it needs from each message and keeps the rest as the event's
//! payload, so an agent that sends more (newer update kinds, extension fields) is not refused.

use std::collections::HashMap;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::process::ChildStdin;

use crate::agent::extract::Tokens;
use crate::engine::activity::{MAX_EVENT_TEXT, bounded_payload, cut};
use crate::error::{Error, Result};
use crate::state::EventKind;
use crate::store::events::NewEvent;

/// The protocol version baton speaks.
pub const PROTOCOL_VERSION: i64 = 1;

/// The longest message line, newline excluded.
pub const MAX_LINE: usize = 1 << 20;

/// A JSON-RPC error object.
#[derive(Debug, Clone)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
}

/// One message from the agent.
#[derive(Debug)]
pub enum Incoming {
    /// The answer to a request of baton's.
    Response {
        id: i64,
        result: std::result::Result<Value, RpcError>,
    },
    /// A request of the agent's (a permission, a file or terminal method).
    Request {
        id: Value,
        method: String,
        params: Value,
    },
    Notification {
        method: String,
        params: Value,
    },
}

impl Incoming {
    /// Read one line: a JSON-RPC 2.0 message, or why it is none.
    pub fn parse(text: &str) -> std::result::Result<Incoming, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON ({e}): {}", snippet(text)))?;
        let Value::Object(mut m) = v else {
            return Err(format!("not a JSON-RPC message: {}", snippet(text)));
        };
        if m.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err(format!("not a JSON-RPC 2.0 message (no \"jsonrpc\": \"2.0\"): {}", snippet(text)));
        }
        let params = m.remove("params").unwrap_or(Value::Null);
        match (m.remove("method"), m.remove("id")) {
            (Some(Value::String(method)), None) => Ok(Incoming::Notification { method, params }),
            (Some(Value::String(method)), Some(id)) => Ok(Incoming::Request { id, method, params }),
            (None, Some(id)) => {
                let Some(id) = id.as_i64() else {
                    return Err(format!("a response to request {id}, which baton never sent"));
                };
                let result = match (m.remove("result"), m.remove("error")) {
                    (_, Some(e)) => Err(RpcError {
                        code: e.get("code").and_then(Value::as_i64).unwrap_or(0),
                        message: e.get("message").and_then(Value::as_str).unwrap_or("no message").to_string(),
                    }),
                    (Some(r), None) => Ok(r),
                    (None, None) => return Err(format!("a response with neither result nor error: {}", snippet(text))),
                };
                Ok(Incoming::Response { id, result })
            }
            _ => Err(format!("not a JSON-RPC request, notification or response: {}", snippet(text))),
        }
    }
}

/// The writing half of a connection: baton's requests (numbered by the caller), notifications
/// and answers.
pub struct Rpc {
    stdin: Option<ChildStdin>,
}

impl Rpc {
    pub fn new(stdin: ChildStdin) -> Rpc {
        Rpc { stdin: Some(stdin) }
    }

    /// Close the agent's stdin (an ACP agent exits when it closes).
    pub fn close(&mut self) {
        self.stdin = None;
    }

    pub async fn request(&mut self, id: i64, method: &str, params: &Value) -> Result<()> {
        self.write(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})).await
    }

    pub async fn notify(&mut self, method: &str, params: Value) -> Result<()> {
        self.write(&json!({"jsonrpc": "2.0", "method": method, "params": params})).await
    }

    pub async fn respond(&mut self, id: &Value, result: Value) -> Result<()> {
        self.write(&json!({"jsonrpc": "2.0", "id": id, "result": result})).await
    }

    pub async fn respond_error(&mut self, id: &Value, code: i64, message: &str) -> Result<()> {
        self.write(&json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})).await
    }

    async fn write(&mut self, msg: &Value) -> Result<()> {
        let mut line = serde_json::to_vec(msg)?;
        line.push(b'\n');
        let stdin = self.stdin.as_mut().ok_or_else(|| Error::Invalid("the worker's stdin is closed".into()))?;
        let res = async {
            stdin.write_all(&line).await?;
            stdin.flush().await
        }
        .await;
        res.map_err(|e| {
            self.stdin = None;
            Error::io("writing to the agent worker", e)
        })
    }
}

/// baton's `initialize` parameters: no file system or terminal methods are offered, so an
/// agent uses its own tools (and asks permission for them).
pub fn initialize_params() -> Value {
    json!({
        "protocolVersion": PROTOCOL_VERSION,
        "clientCapabilities": {"fs": {"readTextFile": false, "writeTextFile": false}, "terminal": false},
        "clientInfo": {"name": "baton", "version": env!("CARGO_PKG_VERSION")},
    })
}

/// What baton keeps of an `initialize` answer.
#[derive(Debug, Clone, Default)]
pub struct AgentInfo {
    pub images: bool,
    pub name: Option<String>,
}

impl AgentInfo {
    pub fn of(result: &Value) -> std::result::Result<AgentInfo, String> {
        let version = result.get("protocolVersion").and_then(Value::as_i64);
        if version != Some(PROTOCOL_VERSION) {
            return Err(format!(
                "the agent speaks protocol version {}, baton speaks {PROTOCOL_VERSION}",
                version.map_or("(none)".to_string(), |v| v.to_string())
            ));
        }
        Ok(AgentInfo {
            images: result.pointer("/agentCapabilities/promptCapabilities/image").and_then(Value::as_bool)
                == Some(true),
            name: result.pointer("/agentInfo/name").and_then(Value::as_str).map(str::to_string),
        })
    }
}

/// The prompt of one task: the system prompt first (when the profile has one), the attachments
/// (images as image blocks when the agent reads them, else links to the files), the task last.
pub fn prompt_blocks(task: &str, system_prompt: Option<&str>, attachments: &[String], images: bool) -> Vec<Value> {
    use base64::Engine as _;
    let mut blocks = Vec::new();
    if let Some(sp) = system_prompt.filter(|s| !s.trim().is_empty()) {
        blocks.push(json!({"type": "text", "text": sp}));
    }
    for path in attachments {
        let mime = image_mime(path);
        let data = mime.filter(|_| images).and_then(|_| std::fs::read(path).ok());
        match (mime, data) {
            (Some(mime), Some(bytes)) => blocks.push(json!({
                "type": "image", "mimeType": mime, "data": base64::engine::general_purpose::STANDARD.encode(bytes),
            })),
            _ => {
                let name = std::path::Path::new(path).file_name().map_or(path.clone(), |n| n.to_string_lossy().into());
                blocks.push(json!({"type": "resource_link", "uri": format!("file://{path}"), "name": name}));
            }
        }
    }
    blocks.push(json!({"type": "text", "text": task}));
    blocks
}

fn image_mime(path: &str) -> Option<&'static str> {
    let ext = path.rsplit('.').next()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        _ => return None,
    })
}

/// How a prompt turn ended, from its `stopReason`.
pub enum Stop {
    EndTurn,
    Cancelled,
    /// Any other reason: the task fails with this text.
    Failed(String),
}

impl Stop {
    pub fn of(result: &Value) -> Stop {
        match result.get("stopReason").and_then(Value::as_str) {
            Some("end_turn") => Stop::EndTurn,
            Some("cancelled") => Stop::Cancelled,
            Some("refusal") => Stop::Failed("the agent refused to go on (stop reason refusal)".into()),
            Some("max_tokens") => Stop::Failed("the agent ran out of tokens (stop reason max_tokens)".into()),
            Some("max_turn_requests") => {
                Stop::Failed("the agent reached its limit of model requests (stop reason max_turn_requests)".into())
            }
            Some(other) => Stop::Failed(format!("the agent stopped with reason \"{other}\"")),
            None => Stop::Failed("the agent's answer has no stopReason".into()),
        }
    }
}

/// Token counts of a prompt answer, where the agent reports them: ACP's `usage`, or gemini's
/// `_meta.quota.token_count` (input and output only).
pub fn usage_of(result: &Value) -> Tokens {
    let n = |p: &str| result.pointer(p).and_then(Value::as_i64);
    if result.get("usage").is_some() {
        return Tokens {
            total: n("/usage/totalTokens"),
            input: n("/usage/inputTokens"),
            output: n("/usage/outputTokens"),
            cached: n("/usage/cachedReadTokens"),
        };
    }
    let (input, output) = (n("/_meta/quota/token_count/input_tokens"), n("/_meta/quota/token_count/output_tokens"));
    let total = input.zip(output).map(|(i, o)| i + o);
    Tokens { total, input, output, cached: None }
}

/// A tool call as the updates so far describe it.
#[derive(Debug, Clone, Default)]
pub struct ToolCall {
    pub kind: Option<String>,
    pub title: Option<String>,
    pub status: Option<String>,
    /// baton granted (true) or refused (false) a permission request for it.
    pub permitted: Option<bool>,
}

impl ToolCall {
    /// "edit \"Editing src/cli.rs\"".
    pub fn describe(&self, id: &str) -> String {
        let kind = self.kind.as_deref().unwrap_or("other");
        match &self.title {
            Some(t) => format!("{kind} \"{t}\""),
            None => format!("{kind} (tool call {id})"),
        }
    }

    /// Did it run? Only a completed call proves it: agents report a call `in_progress` while
    /// they still wait for its permission (opencode does).
    pub fn ran(&self) -> bool {
        self.status.as_deref() == Some("completed")
    }
}

/// What one session update means for the task.
pub struct Reading {
    pub event: NewEvent,
    /// Answer text (an agent message chunk).
    pub answer: Option<String>,
    /// The tool call it created or changed.
    pub tool: Option<String>,
}

/// Read one `session/update` (its `update` object), folding tool calls into `tools`.
pub fn read_update(update: &Value, tools: &mut HashMap<String, ToolCall>, now: i64) -> Reading {
    let kind_word = update.get("sessionUpdate").and_then(Value::as_str).unwrap_or("");
    let str_of = |k: &str| update.get(k).and_then(Value::as_str).map(str::to_string);
    let chunk_text = || update.pointer("/content/text").and_then(Value::as_str).unwrap_or("").to_string();
    let mut answer = None;
    let mut tool = None;
    let (kind, text) = match kind_word {
        "agent_message_chunk" => {
            let t = chunk_text();
            answer = Some(t.clone());
            (EventKind::Message, t)
        }
        "agent_thought_chunk" => (EventKind::Thought, chunk_text()),
        "tool_call" | "tool_call_update" => {
            let id = str_of("toolCallId").unwrap_or_default();
            let call = tools.entry(id.clone()).or_default();
            if let Some(k) = str_of("kind") {
                call.kind = Some(k);
            }
            if let Some(t) = str_of("title") {
                call.title = Some(t);
            }
            if let Some(s) = str_of("status") {
                call.status = Some(s);
            }
            let status = call.status.clone().unwrap_or_else(|| "pending".into());
            let text = format!("{} ({status})", call.describe(&id));
            tool = Some(id);
            (if kind_word == "tool_call" { EventKind::Tool } else { EventKind::ToolUpdate }, text)
        }
        "plan" => {
            let entries = update.get("entries").and_then(Value::as_array).cloned().unwrap_or_default();
            let done = entries.iter().filter(|e| e.get("status").and_then(Value::as_str) == Some("completed")).count();
            let current = entries
                .iter()
                .find(|e| e.get("status").and_then(Value::as_str) == Some("in_progress"))
                .and_then(|e| e.get("content").and_then(Value::as_str));
            let mut text = format!("plan {done}/{} done", entries.len());
            if let Some(c) = current {
                text.push_str(&format!(": {c}"));
            }
            (EventKind::Plan, text)
        }
        "usage_update" => {
            let used = update.get("used").and_then(Value::as_i64);
            let size = update.get("size").and_then(Value::as_i64);
            let text = match (used, size) {
                (Some(u), Some(s)) => format!("context {u}/{s} tokens"),
                (Some(u), None) => format!("context {u} tokens"),
                _ => "usage".to_string(),
            };
            (EventKind::Usage, text)
        }
        other => (EventKind::Other, if other.is_empty() { "update".to_string() } else { other.to_string() }),
    };
    let payload = match kind {
        // A chunk's payload is its text: the event's text already.
        EventKind::Message | EventKind::Thought => None,
        _ => Some(bounded_payload(update)),
    };
    Reading { event: NewEvent { at_ms: now, kind, text: cut(&text, MAX_EVENT_TEXT), payload }, answer, tool }
}

pub fn snippet(text: &str) -> String {
    cut(text, 120)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_classified() {
        assert!(matches!(
            Incoming::parse(r#"{"jsonrpc":"2.0","id":3,"result":{"a":1}}"#),
            Ok(Incoming::Response { id: 3, result: Ok(_) })
        ));
        assert!(matches!(
            Incoming::parse(r#"{"jsonrpc":"2.0","id":4,"error":{"code":-32603,"message":"boom"}}"#),
            Ok(Incoming::Response { id: 4, result: Err(RpcError { code: -32603, .. }) })
        ));
        assert!(matches!(
            Incoming::parse(r#"{"jsonrpc":"2.0","id":"x","method":"session/request_permission","params":{}}"#),
            Ok(Incoming::Request { .. })
        ));
        assert!(matches!(
            Incoming::parse(r#"{"jsonrpc":"2.0","method":"session/update","params":{}}"#),
            Ok(Incoming::Notification { .. })
        ));
        assert!(Incoming::parse("this is not json").unwrap_err().starts_with("not JSON"));
        assert!(Incoming::parse(r#"{"hello":1}"#).unwrap_err().contains("JSON-RPC 2.0"));
        assert!(Incoming::parse(r#"{"jsonrpc":"2.0","id":"s","result":1}"#).unwrap_err().contains("never sent"));
    }

    #[test]
    fn updates_become_events_and_tool_calls() {
        let mut tools = HashMap::new();
        let r = read_update(
            &json!({"sessionUpdate": "tool_call", "toolCallId": "c1", "title": "Editing a.rs", "kind": "edit", "status": "pending"}),
            &mut tools,
            5,
        );
        assert_eq!(r.event.kind, EventKind::Tool);
        assert_eq!(r.event.text, "edit \"Editing a.rs\" (pending)");
        let r = read_update(
            &json!({"sessionUpdate": "tool_call_update", "toolCallId": "c1", "status": "completed"}),
            &mut tools,
            6,
        );
        assert_eq!(r.event.text, "edit \"Editing a.rs\" (completed)");
        assert!(tools["c1"].ran());
        let r = read_update(
            &json!({"sessionUpdate": "plan", "entries": [
                {"content": "a", "status": "completed"}, {"content": "b", "status": "in_progress"}, {"content": "c", "status": "pending"}]}),
            &mut tools,
            7,
        );
        assert_eq!(r.event.text, "plan 1/3 done: b");
        let r = read_update(
            &json!({"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": "hi"}}),
            &mut tools,
            8,
        );
        assert_eq!((r.answer.as_deref(), r.event.payload), (Some("hi"), None));
        let big = json!({"sessionUpdate": "tool_call_update", "toolCallId": "c1", "content": "x".repeat(10_000)});
        let p: Value = serde_json::from_str(&bounded_payload(&big)).unwrap();
        assert_eq!(p["truncated"], true);
        assert_eq!(p["toolCallId"], "c1");
    }

    #[test]
    fn usage_is_read_from_acp_or_gemini_meta() {
        let t = usage_of(
            &json!({"usage": {"inputTokens": 30, "outputTokens": 5, "totalTokens": 335, "cachedReadTokens": 300}}),
        );
        assert_eq!((t.total, t.input, t.output, t.cached), (Some(335), Some(30), Some(5), Some(300)));
        let t = usage_of(&json!({"_meta": {"quota": {"token_count": {"input_tokens": 990, "output_tokens": 15}}}}));
        assert_eq!((t.total, t.input, t.output, t.cached), (Some(1005), Some(990), Some(15), None));
        assert_eq!(usage_of(&json!({"stopReason": "end_turn"})).total, None);
    }

    #[test]
    fn prompts_put_the_task_last_and_images_inline_only_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("a.png");
        std::fs::write(&img, b"\x89PNG").unwrap();
        let img = img.display().to_string();
        let b = prompt_blocks("do it", Some("be brief"), std::slice::from_ref(&img), true);
        assert_eq!(b.len(), 3);
        assert_eq!(
            (b[0]["text"].as_str(), b[1]["type"].as_str(), b[2]["text"].as_str()),
            (Some("be brief"), Some("image"), Some("do it"))
        );
        let b = prompt_blocks("do it", None, &[img], false);
        assert_eq!(b[0]["type"], "resource_link");
    }
}
