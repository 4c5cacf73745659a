//! A scripted fake LLM server on 127.0.0.1 for driving real agent CLIs offline: it speaks the
//! Anthropic Messages, OpenAI Responses, OpenAI chat completions and Gemini APIs (streaming SSE
//! or plain JSON), answers each main-conversation request with the next scripted `Reply`, and
//! records every request so tests can assert what the CLI sent.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

/// Anthropic usage in every reply: uncached input, cache writes, cache reads, output.
pub const ANTHROPIC_INPUT_TOKENS: u64 = 10;
pub const ANTHROPIC_CACHE_CREATION_TOKENS: u64 = 20;
pub const ANTHROPIC_CACHE_READ_TOKENS: u64 = 300;
/// OpenAI (Responses `input_tokens`, chat `prompt_tokens`) and Gemini (`promptTokenCount`)
/// input, of which `CACHED_TOKENS` are cached.
pub const PROMPT_TOKENS: u64 = 330;
pub const CACHED_TOKENS: u64 = 300;
/// Output tokens of every reply, in every protocol.
pub const OUTPUT_TOKENS: u64 = 5;
/// The text of answers to side requests (titles, topic checks, token counts...).
pub const SIDE_TEXT: &str = "side";
/// The placeholder in `Reply::ToolCall` args replaced by the first UUID found in a tool result.
pub const TASK_ID: &str = "{TASK_ID}";

/// One scripted answer to a main-conversation request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A final assistant message.
    Text(String),
    /// Call the offered tool named `tool_suffix`, or else the one whose name ends with it (both
    /// case-insensitive, see `find_tool`), with `args`. `"{TASK_ID}"` inside any string of
    /// `args` becomes the first UUID seen in a tool result of the conversation. A string `args`
    /// is the raw input of a custom (freeform) Responses tool such as codex's `apply_patch`.
    /// A tool that codex defers behind `tool_search` (its MCP tools) is searched for first,
    /// in an extra request that does not consume the script.
    ToolCall { tool_suffix: String, args: Value },
    /// An HTTP error with the provider's error body.
    Error { status: u16, message: String },
}

impl Reply {
    pub fn text(s: &str) -> Reply {
        Reply::Text(s.to_string())
    }
    pub fn tool(tool_suffix: &str, args: Value) -> Reply {
        Reply::ToolCall { tool_suffix: tool_suffix.to_string(), args }
    }
    pub fn error(status: u16, message: &str) -> Reply {
        Reply::Error { status, message: message.to_string() }
    }
}

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The path with its query string, e.g. `/v1/messages?beta=true`.
    pub path: String,
    /// Header names lowercased, in the order received.
    pub headers: Vec<(String, String)>,
    /// The parsed JSON body (`Null` when empty or not JSON).
    pub body: Value,
    /// A side request (title, topic or quota check, token count, warmup...): answered with
    /// `SIDE_TEXT` without consuming the script.
    pub side: bool,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    /// The whole body as JSON text, for `contains` assertions (e.g. on the prompt).
    pub fn body_text(&self) -> String {
        self.body.to_string()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Proto {
    Anthropic,
    Responses,
    Chat,
    Gemini,
}

struct State {
    script: Vec<Reply>,
    next: usize,
    requests: Vec<Recorded>,
}

/// The running server; it stops accepting connections when dropped.
pub struct FakeModel {
    port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl FakeModel {
    /// Bind 127.0.0.1 on a free port and serve `script` from a background thread. Each main
    /// request takes the next reply; past the end of the script a trailing `Error` keeps
    /// failing (so retries see it too), otherwise the last `Text` (or "done") is repeated.
    pub fn start(script: Vec<Reply>) -> FakeModel {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the fake model server");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State { script, next: 0, requests: Vec::new() }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    let st = st.clone();
                    std::thread::spawn(move || serve_connection(conn, &st));
                }
            }
        });
        FakeModel { port, state, stop }
    }

    /// `http://127.0.0.1:PORT` (no trailing slash, no `/v1`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every request received so far, side requests included, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).requests.clone()
    }

    /// The main-conversation requests only (those that consumed, or would consume, the script).
    pub fn main_requests(&self) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| !r.side).collect()
    }

    /// How many script entries have been consumed.
    pub fn consumed(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).next
    }
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

static IDS: AtomicUsize = AtomicUsize::new(1);

fn next_id() -> usize {
    IDS.fetch_add(1, Ordering::Relaxed)
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn read_request(r: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if !line.trim().is_empty() {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.to_ascii_lowercase());
    if get("expect").is_some_and(|v| v == "100-continue") {
        r.get_mut().write_all(b"HTTP/1.1 100 Continue\r\n\r\n").ok()?;
    }
    let mut body = Vec::new();
    if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            line.clear();
            r.read_line(&mut line).ok()?;
            let size = usize::from_str_radix(line.trim().split(';').next()?.trim(), 16).ok()?;
            if size == 0 {
                // Trailers, up to the blank line.
                loop {
                    line.clear();
                    if r.read_line(&mut line).ok()? == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..]).ok()?;
            line.clear();
            r.read_line(&mut line).ok()?;
        }
    } else if let Some(n) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(n, 0);
        r.read_exact(&mut body).ok()?;
    }
    Some(Request { method, path, headers, body })
}

fn serve_connection(conn: TcpStream, state: &Mutex<State>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(300)));
    let mut reader = BufReader::new(conn.try_clone().expect("cloning a connection"));
    let mut out = conn;
    while let Some(req) = read_request(&mut reader) {
        let keep = handle(&req, state, &mut out);
        if !keep {
            break;
        }
    }
    let _ = out.shutdown(Shutdown::Both);
}

fn status_text(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        529 => "Overloaded",
        _ => "Status",
    }
}

fn send_json(out: &mut TcpStream, status: u16, body: &Value) -> bool {
    let b = body.to_string();
    let head = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-request-id: req_fake\r\n\r\n",
        status_text(status),
        b.len()
    );
    out.write_all(head.as_bytes()).and_then(|_| out.write_all(b.as_bytes())).and_then(|_| out.flush()).is_ok()
}

/// SSE events `(event name or "", data)` as one chunked response.
fn send_sse(out: &mut TcpStream, events: &[(&str, Value)], done_marker: bool) -> bool {
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\nx-request-id: req_fake\r\n\r\n";
    let mut ok = out.write_all(head.as_bytes()).is_ok();
    let mut chunk = |s: String, out: &mut TcpStream| {
        if ok {
            ok = out.write_all(format!("{:x}\r\n{s}\r\n", s.len()).as_bytes()).and_then(|_| out.flush()).is_ok();
        }
    };
    for (name, data) in events {
        let ev = if name.is_empty() { format!("data: {data}\n\n") } else { format!("event: {name}\ndata: {data}\n\n") };
        chunk(ev, out);
    }
    if done_marker {
        chunk("data: [DONE]\n\n".to_string(), out);
    }
    ok && out.write_all(b"0\r\n\r\n").and_then(|_| out.flush()).is_ok()
}

/// Answer one request; false closes the connection.
fn handle(req: &Request, state: &Mutex<State>, out: &mut TcpStream) -> bool {
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let path = req.path.split('?').next().unwrap_or("").to_string();
    let proto = if req.method != "POST" {
        None
    } else if path.ends_with("/messages") || path.ends_with("/messages/count_tokens") {
        Some(Proto::Anthropic)
    } else if path.ends_with("/responses") {
        Some(Proto::Responses)
    } else if path.ends_with("/chat/completions") {
        Some(Proto::Chat)
    } else if path.contains(":streamGenerateContent")
        || path.contains(":generateContent")
        || path.contains(":countTokens")
    {
        Some(Proto::Gemini)
    } else {
        None
    };
    let side = proto.is_none_or(|p| is_side(p, &path, &body));
    let mut popped = false;
    let reply = {
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        st.requests.push(Recorded {
            method: req.method.clone(),
            path: req.path.clone(),
            headers: req.headers.clone(),
            body: body.clone(),
            side,
        });
        if side {
            Reply::Text(side_text(&body))
        } else if st.next < st.script.len() {
            st.next += 1;
            popped = true;
            st.script[st.next - 1].clone()
        } else {
            // Out of script: a trailing error persists, otherwise repeat the last text.
            match st.script.last() {
                Some(e @ Reply::Error { .. }) => e.clone(),
                _ => st
                    .script
                    .iter()
                    .rev()
                    .find(|r| matches!(r, Reply::Text(_)))
                    .cloned()
                    .unwrap_or_else(|| Reply::Text("done".into())),
            }
        }
    };
    let Some(proto) = proto else {
        return other_endpoint(req, &path, out);
    };
    if path.ends_with("/count_tokens") {
        return send_json(out, 200, &json!({"input_tokens": ANTHROPIC_INPUT_TOKENS}));
    }
    if path.contains(":countTokens") {
        return send_json(out, 200, &json!({"totalTokens": PROMPT_TOKENS}));
    }
    if let Reply::Error { status, message } = &reply {
        return send_json(out, *status, &error_body(proto, *status, message));
    }
    let stream = match proto {
        Proto::Gemini => path.contains(":streamGenerateContent"),
        _ => body.get("stream").and_then(Value::as_bool).unwrap_or(false),
    };
    let model = body.get("model").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| {
        path.split("/models/").nth(1).and_then(|m| m.split(':').next()).unwrap_or("fake-model").to_string()
    });
    // Resolve a tool call against the offered tools; an unknown tool becomes a text saying so.
    let action = match reply {
        Reply::ToolCall { tool_suffix, args } => {
            let tools = offered_tools(proto, &body);
            let found = find_tool(&tools, &tool_suffix);
            match found {
                Some(t) => {
                    let args = match tool_results(proto, &body).iter().find_map(|t| find_uuid(t)) {
                        Some(id) => replace_placeholder(&args, &id),
                        None => args,
                    };
                    Action::Tool { name: t.name.clone(), namespace: t.namespace.clone(), args, custom: t.custom }
                }
                None if proto == Proto::Responses && offers_tool_search(&body) && !searched(&body, &tool_suffix) => {
                    // Codex defers MCP tools behind `tool_search`: search first, and call the
                    // tool on the next request without consuming this script entry.
                    if popped {
                        state.lock().unwrap_or_else(|e| e.into_inner()).next -= 1;
                    }
                    Action::ToolSearch(tool_suffix)
                }
                None => Action::Text(format!(
                    "fake model: no offered tool ends with {tool_suffix:?}; offered: {:?}",
                    tools.iter().map(|t| t.full.as_str()).collect::<Vec<_>>()
                )),
            }
        }
        Reply::Text(t) => Action::Text(t),
        Reply::Error { .. } => unreachable!(),
    };
    match proto {
        Proto::Anthropic => anthropic(out, &model, &action, stream),
        Proto::Responses => responses(out, &model, &action, stream),
        Proto::Chat => chat(out, &model, &action, stream),
        Proto::Gemini => gemini(out, &model, &action, stream, &body),
    }
}

enum Action {
    Text(String),
    /// A client-executed `tool_search_call` for this query (Responses only).
    ToolSearch(String),
    Tool {
        name: String,
        namespace: Option<String>,
        args: Value,
        custom: bool,
    },
}

/// Models lists and anything else: a harmless answer.
fn other_endpoint(req: &Request, path: &str, out: &mut TcpStream) -> bool {
    if req.method == "GET" && path.ends_with("/models") {
        return send_json(
            out,
            200,
            &json!({"object": "list", "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "fake"}],
                     "models": []}),
        );
    }
    if req.method == "HEAD" {
        // No body: claude probes `HEAD /` on the connection it then reuses.
        return out.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").and_then(|_| out.flush()).is_ok();
    }
    if req.method == "GET" && (path == "/" || path.is_empty()) {
        return send_json(out, 200, &json!({}));
    }
    send_json(
        out,
        404,
        &json!({"error": {"message": format!("fake model: no endpoint {} {path}", req.method), "type": "not_found", "code": null}}),
    )
}

/// Requests that are not the main conversation.
fn is_side(proto: Proto, path: &str, body: &Value) -> bool {
    if path.ends_with("/count_tokens") || path.contains(":countTokens") {
        return true;
    }
    let no_tools = |v: Option<&Value>| v.and_then(Value::as_array).is_none_or(|a| a.is_empty());
    match proto {
        // Claude Code's main loop always offers tools; its titles, topic and quota checks don't.
        Proto::Anthropic => no_tools(body.get("tools")),
        // Codex's prewarm sends `generate: false`; compaction and such offer no tools.
        Proto::Responses => body.get("generate") == Some(&Value::Bool(false)) || no_tools(body.get("tools")),
        Proto::Chat => no_tools(body.get("tools")),
        // Gemini CLI's routing and next-speaker checks ask for JSON and offer no tools.
        Proto::Gemini => {
            let cfg = body.get("generationConfig");
            cfg.and_then(|c| c.get("responseMimeType")).and_then(Value::as_str) == Some("application/json")
                || no_tools(body.get("tools"))
        }
    }
}

/// The answer to a side request: JSON filling the schema it asks for (e.g. claude's title as
/// `{"title":"side"}`, gemini's next-speaker check), or `SIDE_TEXT`.
fn side_text(body: &Value) -> String {
    let schema = [
        "/output_config/format/schema",
        "/text/format/schema",
        "/response_format/json_schema/schema",
        "/generationConfig/responseJsonSchema",
        "/generationConfig/responseSchema",
    ]
    .iter()
    .find_map(|p| body.pointer(p));
    schema.map_or_else(|| SIDE_TEXT.to_string(), |s| fill_schema(s).to_string())
}

/// A value of a JSON schema's shape: the first enum value, "side" for strings, 1 for numbers...
fn fill_schema(s: &Value) -> Value {
    if let Some(e) = s.get("enum").and_then(Value::as_array).and_then(|a| a.first()) {
        return e.clone();
    }
    let ty = s.get("type").and_then(|t| t.as_str().or_else(|| t.get(0).and_then(Value::as_str)));
    match ty.map(str::to_ascii_lowercase).as_deref() {
        Some("object") | None if s.get("properties").is_some() => {
            let props = s["properties"].as_object().cloned().unwrap_or_default();
            Value::Object(props.iter().map(|(k, v)| (k.clone(), fill_schema(v))).collect())
        }
        Some("array") => json!([]),
        // 1, not 0: gemini's router wants a complexity score of at least 1.
        Some("number") | Some("integer") => s.get("minimum").cloned().unwrap_or(json!(1)),
        Some("boolean") => json!(false),
        Some("object") => json!({}),
        _ => json!(SIDE_TEXT),
    }
}

fn error_body(proto: Proto, status: u16, message: &str) -> Value {
    match proto {
        Proto::Anthropic => {
            let kind = match status {
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                s if s >= 500 => "api_error",
                _ => "invalid_request_error",
            };
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
        Proto::Responses | Proto::Chat => {
            let kind = if status >= 500 { "server_error" } else { "invalid_request_error" };
            json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
        }
        Proto::Gemini => {
            let s = match status {
                401 => "UNAUTHENTICATED",
                403 => "PERMISSION_DENIED",
                404 => "NOT_FOUND",
                429 => "RESOURCE_EXHAUSTED",
                503 => "UNAVAILABLE",
                s if s >= 500 => "INTERNAL",
                _ => "INVALID_ARGUMENT",
            };
            json!({"error": {"code": status, "message": message, "status": s}})
        }
    }
}

/// The offered tool named `suffix` (case-insensitive), else the one whose name ends with it
/// after a `_`, `.` or `-` (`task_start` finds `mcp__baton__task_start`, `write` does not find
/// `todowrite`).
fn find_tool<'a>(tools: &'a [Offered], suffix: &str) -> Option<&'a Offered> {
    let suffix = suffix.to_lowercase();
    let bounded = |t: &&Offered| {
        let full = t.full.to_lowercase();
        full.strip_suffix(&suffix).is_some_and(|head| head.ends_with(['_', '.', '-']))
    };
    (tools.iter().find(|t| t.full.to_lowercase() == suffix || t.name.to_lowercase() == suffix))
        .or_else(|| tools.iter().find(bounded))
}

fn offers_tool_search(body: &Value) -> bool {
    body.get("tools").and_then(Value::as_array).into_iter().flatten().any(|t| t["type"] == "tool_search")
}

/// Whether the conversation already has a tool search for `query`.
fn searched(body: &Value, query: &str) -> bool {
    body.get("input").and_then(Value::as_array).into_iter().flatten().any(|i| {
        i["type"] == "tool_search_call" && i.pointer("/arguments/query").and_then(Value::as_str) == Some(query)
    })
}

/// A tool the request offers.
struct Offered {
    /// What `tool_suffix` is matched against: `namespace__name` for namespaced tools.
    full: String,
    name: String,
    /// The namespace of a Responses namespaced tool (codex's MCP tools: `mcp__baton`).
    namespace: Option<String>,
    /// A custom (freeform) Responses tool, called with a raw string input.
    custom: bool,
}

/// The tools a request offers; for Responses also those inside namespaces and those that an
/// earlier `tool_search_output` in the conversation revealed.
fn offered_tools(proto: Proto, body: &Value) -> Vec<Offered> {
    let arr = |v: Option<&Value>| v.and_then(Value::as_array).cloned().unwrap_or_default();
    let name = |v: &Value| v.get("name").and_then(Value::as_str).map(str::to_string);
    let plain = |n: String| Offered { full: n.clone(), name: n, namespace: None, custom: false };
    let mut out = Vec::new();
    match proto {
        Proto::Anthropic => out.extend(arr(body.get("tools")).iter().filter_map(name).map(plain)),
        Proto::Chat => out.extend(
            arr(body.get("tools"))
                .iter()
                .filter_map(|t| t.get("function").and_then(name).or_else(|| name(t)))
                .map(plain),
        ),
        Proto::Gemini => {
            for t in arr(body.get("tools")) {
                out.extend(arr(t.get("functionDeclarations")).iter().filter_map(name).map(plain));
            }
        }
        Proto::Responses => {
            let mut tools = arr(body.get("tools"));
            for i in arr(body.get("input")) {
                if i["type"] == "tool_search_output" {
                    tools.extend(arr(i.get("tools")));
                }
            }
            for t in &tools {
                let Some(n) = name(t) else { continue };
                if t["type"] == "namespace" {
                    for inner in arr(t.get("tools")) {
                        if let Some(m) = name(&inner) {
                            let full = if n.ends_with('_') { format!("{n}{m}") } else { format!("{n}__{m}") };
                            out.push(Offered { full, name: m, namespace: Some(n.clone()), custom: false });
                        }
                    }
                } else {
                    out.push(Offered { full: n.clone(), name: n, namespace: None, custom: t["type"] == "custom" });
                }
            }
        }
    }
    out
}

/// The texts of the tool results in the conversation so far, oldest first.
fn tool_results(proto: Proto, body: &Value) -> Vec<String> {
    let arr = |k: &str| body.get(k).and_then(Value::as_array).cloned().unwrap_or_default();
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut out = Vec::new();
    match proto {
        Proto::Anthropic => {
            for m in arr("messages") {
                for c in m.get("content").and_then(Value::as_array).into_iter().flatten() {
                    if c.get("type").and_then(Value::as_str) == Some("tool_result") {
                        out.extend(c.get("content").map(text));
                    }
                }
            }
        }
        Proto::Responses => {
            for i in arr("input") {
                let t = i.get("type").and_then(Value::as_str).unwrap_or("");
                if t.ends_with("_call_output") {
                    out.extend(i.get("output").map(text));
                }
            }
        }
        Proto::Chat => {
            for m in arr("messages") {
                if m.get("role").and_then(Value::as_str) == Some("tool") {
                    out.extend(m.get("content").map(text));
                }
            }
        }
        Proto::Gemini => {
            for c in arr("contents") {
                for p in c.get("parts").and_then(Value::as_array).into_iter().flatten() {
                    out.extend(p.get("functionResponse").map(text));
                }
            }
        }
    }
    out
}

/// The first 8-4-4-4-12 hex UUID in `s`.
fn find_uuid(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let shape = [8, 4, 4, 4, 12];
    'start: for i in 0..b.len() {
        if i > 0 && b[i - 1].is_ascii_hexdigit() {
            continue;
        }
        let mut j = i;
        for (n, len) in shape.iter().enumerate() {
            for _ in 0..*len {
                if j >= b.len() || !b[j].is_ascii_hexdigit() {
                    continue 'start;
                }
                j += 1;
            }
            if n < 4 {
                if j >= b.len() || b[j] != b'-' {
                    continue 'start;
                }
                j += 1;
            }
        }
        if j < b.len() && b[j].is_ascii_hexdigit() {
            continue;
        }
        return Some(s[i..j].to_string());
    }
    None
}

fn replace_placeholder(v: &Value, id: &str) -> Value {
    match v {
        Value::String(s) => Value::String(s.replace(TASK_ID, id)),
        Value::Array(a) => Value::Array(a.iter().map(|x| replace_placeholder(x, id)).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, x)| (k.clone(), replace_placeholder(x, id))).collect()),
        other => other.clone(),
    }
}

fn anthropic(out: &mut TcpStream, model: &str, action: &Action, stream: bool) -> bool {
    let n = next_id();
    let id = format!("msg_fake{n}");
    let usage = json!({
        "input_tokens": ANTHROPIC_INPUT_TOKENS,
        "cache_creation_input_tokens": ANTHROPIC_CACHE_CREATION_TOKENS,
        "cache_read_input_tokens": ANTHROPIC_CACHE_READ_TOKENS,
        "output_tokens": OUTPUT_TOKENS,
    });
    let (block, stop_reason) = match action {
        Action::Text(t) | Action::ToolSearch(t) => (json!({"type": "text", "text": t}), "end_turn"),
        Action::Tool { name, args, .. } => {
            (json!({"type": "tool_use", "id": format!("toolu_fake{n}"), "name": name, "input": args}), "tool_use")
        }
    };
    if !stream {
        return send_json(
            out,
            200,
            &json!({"id": id, "type": "message", "role": "assistant", "model": model, "content": [block],
                     "stop_reason": stop_reason, "stop_sequence": null, "usage": usage}),
        );
    }
    let mut start_usage = usage.clone();
    start_usage["output_tokens"] = json!(1);
    let (start_block, delta) = match action {
        Action::Text(t) | Action::ToolSearch(t) => {
            (json!({"type": "text", "text": ""}), json!({"type": "text_delta", "text": t}))
        }
        Action::Tool { args, .. } => {
            let mut b = block.clone();
            b["input"] = json!({});
            (b, json!({"type": "input_json_delta", "partial_json": args.to_string()}))
        }
    };
    let events = [
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant", "model": model,
                   "content": [], "stop_reason": null, "stop_sequence": null, "usage": start_usage}}),
        ),
        ("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": start_block})),
        ("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": delta})),
        ("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null}, "usage": usage}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ];
    send_sse(out, &events, false)
}

fn responses(out: &mut TcpStream, model: &str, action: &Action, stream: bool) -> bool {
    let n = next_id();
    let rid = format!("resp_fake{n}");
    let usage = json!({
        "input_tokens": PROMPT_TOKENS,
        "input_tokens_details": {"cached_tokens": CACHED_TOKENS},
        "output_tokens": OUTPUT_TOKENS,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": PROMPT_TOKENS + OUTPUT_TOKENS,
    });
    let item = match action {
        Action::Text(t) => {
            json!({"type": "message", "id": format!("msg_fake{n}"), "role": "assistant", "status": "completed",
                                  "content": [{"type": "output_text", "text": t, "annotations": []}]})
        }
        Action::ToolSearch(q) => {
            json!({"type": "tool_search_call", "id": format!("tsc_fake{n}"), "call_id": format!("call_fake{n}"),
                                        "execution": "client", "status": "completed", "arguments": {"query": q, "limit": 8}})
        }
        Action::Tool { name, args, custom: true, .. } => {
            let input = args.as_str().map(str::to_string).unwrap_or_else(|| args.to_string());
            json!({"type": "custom_tool_call", "id": format!("ctc_fake{n}"), "call_id": format!("call_fake{n}"),
                   "name": name, "input": input, "status": "completed"})
        }
        Action::Tool { name, namespace, args, custom: false } => {
            let mut call = json!({"type": "function_call", "id": format!("fc_fake{n}"), "call_id": format!("call_fake{n}"),
                                  "name": name, "arguments": args.to_string(), "status": "completed"});
            if let Some(ns) = namespace {
                call["namespace"] = json!(ns);
            }
            call
        }
    };
    let response = |status: &str, output: Value, usage: Value| {
        json!({"id": rid, "object": "response", "created_at": 0, "status": status, "model": model,
               "output": output, "usage": usage})
    };
    if !stream {
        return send_json(out, 200, &response("completed", json!([item]), usage));
    }
    let mut events = vec![
        (
            "response.created",
            json!({"type": "response.created", "response": response("in_progress", json!([]), Value::Null)}),
        ),
        (
            "response.in_progress",
            json!({"type": "response.in_progress", "response": response("in_progress", json!([]), Value::Null)}),
        ),
    ];
    let mut added = item.clone();
    added["status"] = json!("in_progress");
    if let Action::Text(t) = action {
        added["content"] = json!([]);
        let item_id = item["id"].clone();
        events.push((
            "response.output_item.added",
            json!({"type": "response.output_item.added", "output_index": 0, "item": added}),
        ));
        events.push((
            "response.content_part.added",
            json!({"type": "response.content_part.added", "item_id": item_id, "output_index": 0, "content_index": 0,
                   "part": {"type": "output_text", "text": "", "annotations": []}}),
        ));
        events.push((
            "response.output_text.delta",
            json!({"type": "response.output_text.delta", "item_id": item_id, "output_index": 0, "content_index": 0, "delta": t}),
        ));
        events.push((
            "response.output_text.done",
            json!({"type": "response.output_text.done", "item_id": item_id, "output_index": 0, "content_index": 0, "text": t}),
        ));
        events.push((
            "response.content_part.done",
            json!({"type": "response.content_part.done", "item_id": item_id, "output_index": 0, "content_index": 0,
                   "part": {"type": "output_text", "text": t, "annotations": []}}),
        ));
    } else {
        events.push((
            "response.output_item.added",
            json!({"type": "response.output_item.added", "output_index": 0, "item": added}),
        ));
    }
    events.push((
        "response.output_item.done",
        json!({"type": "response.output_item.done", "output_index": 0, "item": item}),
    ));
    events.push((
        "response.completed",
        json!({"type": "response.completed", "response": response("completed", json!([item]), usage)}),
    ));
    send_sse(out, &events, false)
}

fn chat(out: &mut TcpStream, model: &str, action: &Action, stream: bool) -> bool {
    let n = next_id();
    let id = format!("chatcmpl-fake{n}");
    let usage = json!({
        "prompt_tokens": PROMPT_TOKENS,
        "prompt_tokens_details": {"cached_tokens": CACHED_TOKENS},
        "completion_tokens": OUTPUT_TOKENS,
        "total_tokens": PROMPT_TOKENS + OUTPUT_TOKENS,
    });
    let (message, finish) = match action {
        Action::Text(t) | Action::ToolSearch(t) => (json!({"role": "assistant", "content": t}), "stop"),
        Action::Tool { name, args, .. } => (
            json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": format!("call_fake{n}"), "type": "function",
                   "function": {"name": name, "arguments": args.to_string()}}]}),
            "tool_calls",
        ),
    };
    if !stream {
        return send_json(
            out,
            200,
            &json!({"id": id, "object": "chat.completion", "created": 0, "model": model,
                     "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage}),
        );
    }
    let chunk = |choices: Value, usage: Value| json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model, "choices": choices, "usage": usage});
    let events = [
        ("", chunk(json!([{"index": 0, "delta": message, "finish_reason": null}]), Value::Null)),
        ("", chunk(json!([{"index": 0, "delta": {}, "finish_reason": finish}]), Value::Null)),
        ("", chunk(json!([]), usage)),
    ];
    send_sse(out, &events, true)
}

fn gemini(out: &mut TcpStream, model: &str, action: &Action, stream: bool, body: &Value) -> bool {
    let _ = body;
    let usage = json!({
        "promptTokenCount": PROMPT_TOKENS,
        "cachedContentTokenCount": CACHED_TOKENS,
        "candidatesTokenCount": OUTPUT_TOKENS,
        "totalTokenCount": PROMPT_TOKENS + OUTPUT_TOKENS,
    });
    let part = match action {
        Action::Text(t) | Action::ToolSearch(t) => json!({"text": t}),
        Action::Tool { name, args, .. } => json!({"functionCall": {"name": name, "args": args}}),
    };
    let resp = json!({
        "candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": usage,
        "modelVersion": model,
        "responseId": format!("fake{}", next_id()),
    });
    if !stream {
        return send_json(out, 200, &resp);
    }
    send_sse(out, &[("", resp)], false)
}
