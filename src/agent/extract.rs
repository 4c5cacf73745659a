//! Turning an agent CLI's stdout into a job's result: plain text, a value taken from one JSON
//! document, or from the last matching line of JSON Lines (or their join); with failure, token
//! and cost fields, and the stream dialect its lines are read in while it runs. Pure: the
//! dispatcher feeds it the worker's `.out` log. Ready specs for the agent CLIs live in
//! [`crate::agent::preset`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How a runner's stdout becomes the response (a profile's or the config's `output`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutputSpec {
    /// `text` (default): stdout is the response. `json`: stdout is one JSON document (the last
    /// line that parses, when there are several). `jsonl`: one JSON document per line.
    #[serde(default)]
    pub format: Format,
    /// `jsonl`: only lines whose values at these JSON pointers equal the given values count.
    #[serde(default, rename = "where")]
    pub where_: Vec<(String, Value)>,
    /// JSON pointer of the response text in the (last) selected document.
    pub text: Option<String>,
    /// `jsonl`: join the text of every selected line instead of taking the last.
    #[serde(default)]
    pub join: bool,
    /// What `join` puts between the texts (default `\n`; `""` for streamed deltas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_with: Option<String>,
    /// `jsonl`: only selected lines after the last line matching all of these pairs count
    /// (gemini's answer is its text after its last tool call).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after_where: Vec<(String, Value)>,
    /// JSON pointer of a flag that, when true, makes the job fail (e.g. claude's `/is_error`).
    pub failed: Option<String>,
    /// `jsonl`: a line matching all of these pointer/value pairs makes the job fail.
    #[serde(default)]
    pub failed_where: Vec<(String, Value)>,
    /// JSON pointer of the error message in a failing document.
    pub error: Option<String>,
    /// JSON pointers summed into the total token count, over every document. When empty, the
    /// total is input + output.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// JSON pointers summed into the prompt tokens (cached ones included), over every document.
    #[serde(default)]
    pub input_tokens: Vec<String>,
    /// JSON pointers summed into the generated tokens (reasoning included), over every document.
    #[serde(default)]
    pub output_tokens: Vec<String>,
    /// JSON pointers summed into the prompt tokens read from the provider's cache.
    #[serde(default)]
    pub cached_tokens: Vec<String>,
    /// JSON pointer of a list of tool calls the CLI refused for want of permission (claude's
    /// `/permission_denials`): a non-empty list makes the job fail, naming the tools.
    pub denials: Option<String>,
    /// `jsonl`: a line matching all of these pointer/value pairs records a tool call the CLI
    /// refused for want of permission (opencode's rejected `tool_use`): the job fails.
    #[serde(default)]
    pub denied_where: Vec<(String, Value)>,
    /// JSON pointer of the cost in USD, summed over every document.
    pub cost: Option<String>,
    /// `jsonl`: the stream dialect of the lines (`claude`, `codex`, `opencode`, `gemini`): the
    /// dispatcher reads them as they arrive and records the activity they show.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<crate::agent::stream::Dialect>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Text,
    Json,
    Jsonl,
}

/// Token counts of a job, by kind; `None` where the output did not say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    /// The total.
    pub total: Option<i64>,
    /// Prompt tokens, cached ones included.
    pub input: Option<i64>,
    /// Generated tokens, reasoning included.
    pub output: Option<i64>,
    /// The part of `input` read from the provider's prompt cache.
    pub cached: Option<i64>,
}

/// What was found in the output.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extracted {
    /// The response text (the trimmed stdout for `text`; `None` when nothing matched).
    pub text: Option<String>,
    /// The output had the promised shape (`text`, or at least one JSON document): when it did
    /// and no text was found, there is no response; when it did not, the raw output is one.
    pub shaped: bool,
    /// The output itself says the job failed, with this message.
    pub failure: Option<String>,
    pub tokens: Tokens,
    pub cost_usd: Option<f64>,
}

/// Every value at a JSON pointer whose segments may be `*` (any key of an object, any element
/// of an array), e.g. `/stats/models/*/tokens/total`.
fn pointer_all<'a>(doc: &'a Value, ptr: &str) -> Vec<&'a Value> {
    if !ptr.contains('*') {
        return doc.pointer(ptr).into_iter().collect();
    }
    let mut here = vec![doc];
    for seg in ptr.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        here = here
            .into_iter()
            .flat_map(|v| -> Vec<&Value> {
                match (v, seg.as_str()) {
                    (Value::Object(m), "*") => m.values().collect(),
                    (Value::Array(a), "*") => a.iter().collect(),
                    (Value::Object(m), k) => m.get(k).into_iter().collect(),
                    (Value::Array(a), k) => k.parse::<usize>().ok().and_then(|i| a.get(i)).into_iter().collect(),
                    _ => Vec::new(),
                }
            })
            .collect();
    }
    here
}

/// What a permission denial names: `Write (hello.txt)`, from claude's
/// `{"tool_name": "Write", "tool_input": {"file_path": ...}}` or opencode's
/// `{"part": {"tool": "write", "state": {"input": {"filePath": ...}}}}`, else the entry itself.
fn denial_text(d: &Value) -> String {
    let tool = d.get("tool_name").or_else(|| d.pointer("/part/tool")).and_then(Value::as_str);
    let input = d.get("tool_input").or_else(|| d.pointer("/part/state/input"));
    let what = ["file_path", "filePath", "command", "path", "url", "pattern"]
        .iter()
        .find_map(|k| input.and_then(|i| i.get(*k)).and_then(Value::as_str));
    match (tool, what) {
        (Some(t), Some(w)) => format!("{t} ({w})"),
        (Some(t), None) => t.to_string(),
        _ => d.to_string(),
    }
}

fn matches(doc: &Value, conds: &[(String, Value)]) -> bool {
    !conds.is_empty() && conds.iter().all(|(ptr, want)| doc.pointer(ptr) == Some(want))
}

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn truthy(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::Null) | None => false,
        Some(Value::String(s)) => !s.is_empty() && s != "false",
        Some(Value::Number(n)) => n.as_f64().is_some_and(|x| x != 0.0),
        Some(_) => true,
    }
}

/// Apply a spec to a worker's stdout. Output that does not have the promised shape (no JSON,
/// no matching line) gives `text: None`: the caller falls back to the raw stdout and says so.
pub fn extract(spec: &OutputSpec, stdout: &str) -> Extracted {
    let mut reading = Extraction::new(spec);
    match spec.format {
        Format::Text => {
            return Extracted { text: Some(stdout.trim().to_string()), shaped: true, ..Default::default() };
        }
        Format::Json => {
            if let Some(doc) = json_document(stdout) {
                reading.push(&doc);
            }
        }
        Format::Jsonl => {
            for doc in stdout.lines().filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok()) {
                reading.push(&doc);
            }
        }
    }
    reading.finish()
}

/// The whole output as one JSON document, else its last line that parses, else a
/// pretty-printed document after other output (from the last line that opens with `{`).
fn json_document(stdout: &str) -> Option<Value> {
    serde_json::from_str::<Value>(stdout.trim())
        .ok()
        .or_else(|| stdout.lines().rev().find_map(|l| serde_json::from_str(l.trim()).ok()))
        .or_else(|| stdout.rmatch_indices("\n{").find_map(|(i, _)| serde_json::from_str(stdout[i + 1..].trim()).ok()))
}

/// An output's documents read one at a time, keeping only what the spec asks for: JSON Lines
/// of any length are read in one pass without holding them (`finish` says what was found).
pub struct Extraction<'a> {
    spec: &'a OutputSpec,
    docs: usize,
    /// The last selected text (or, with `join`, every one).
    text: Option<String>,
    parts: Vec<String>,
    /// The newest failing document's error text (`Some(None)`: it names none).
    failing: Option<Option<String>>,
    listed: Vec<String>,
    denied: Vec<String>,
    /// Sums of `tokens`, `input_tokens`, `output_tokens`, `cached_tokens`.
    sums: [Option<i64>; 4],
    cost: Option<f64>,
}

impl<'a> Extraction<'a> {
    pub fn new(spec: &'a OutputSpec) -> Extraction<'a> {
        Extraction {
            spec,
            docs: 0,
            text: None,
            parts: Vec::new(),
            failing: None,
            listed: Vec::new(),
            denied: Vec::new(),
            sums: [None; 4],
            cost: None,
        }
    }

    /// Read the next document.
    pub fn push(&mut self, d: &Value) {
        let spec = self.spec;
        self.docs += 1;
        let lines = spec.format == Format::Jsonl;
        if lines && matches(d, &spec.after_where) {
            // The text so far does not count.
            self.text = None;
            self.parts.clear();
        } else if !lines || spec.where_.is_empty() || matches(d, &spec.where_) {
            let text = spec.text.as_deref().map_or_else(|| as_text(d), |p| d.pointer(p).and_then(as_text));
            if let Some(t) = text {
                if spec.join {
                    self.parts.push(t);
                } else {
                    self.text = Some(t);
                }
            }
        }
        if spec.failed.as_deref().is_some_and(|p| truthy(d.pointer(p))) || matches(d, &spec.failed_where) {
            self.failing = Some(spec.error.as_deref().and_then(|p| d.pointer(p)).and_then(as_text));
        }
        if let Some(p) = spec.denials.as_deref() {
            let listed = pointer_all(d, p).into_iter().flat_map(|v| v.as_array().into_iter().flatten());
            self.listed.extend(listed.map(denial_text));
        }
        if matches(d, &spec.denied_where) {
            self.denied.push(denial_text(d));
        }
        let lists = [&spec.tokens, &spec.input_tokens, &spec.output_tokens, &spec.cached_tokens];
        for (sum, ptrs) in self.sums.iter_mut().zip(lists) {
            for n in ptrs.iter().flat_map(|p| pointer_all(d, p)).filter_map(Value::as_i64) {
                *sum = Some(sum.unwrap_or(0) + n);
            }
        }
        for c in spec.cost.as_deref().into_iter().flat_map(|p| pointer_all(d, p)).filter_map(Value::as_f64) {
            self.cost = Some(self.cost.unwrap_or(0.0) + c);
        }
    }

    /// What the documents read say.
    pub fn finish(self) -> Extracted {
        let text = if self.spec.join {
            (!self.parts.is_empty()).then(|| self.parts.join(self.spec.join_with.as_deref().unwrap_or("\n")))
        } else {
            self.text
        };
        let denied: Vec<String> = self.listed.into_iter().chain(self.denied).collect();
        let failure = self
            .failing
            .map(|error| error.or_else(|| text.clone()).unwrap_or_else(|| "the agent reported an error".into()))
            .or_else(|| {
                (!denied.is_empty()).then(|| {
                    format!(
                        "the agent was refused permission for {}: the profile's runner does not grant it",
                        denied.join(", ")
                    )
                })
            });
        let [total, input, output, cached] = self.sums;
        let total = total.or(match (input, output) {
            (None, None) => None,
            (i, o) => Some(i.unwrap_or(0) + o.unwrap_or(0)),
        });
        Extracted {
            text: text.map(|t| t.trim().to_string()),
            shaped: self.docs > 0,
            failure,
            tokens: Tokens { total, input, output, cached },
            cost_usd: self.cost,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> OutputSpec {
        let name = crate::agent::preset::Name::parse(name).unwrap();
        crate::agent::preset::get(name, crate::agent::preset::Access::FULL).output
    }

    #[test]
    fn text_is_the_trimmed_stdout() {
        let e = extract(&OutputSpec::default(), "  hello\n");
        assert_eq!(e.text.as_deref(), Some("hello"));
        assert_eq!(e.failure, None);
    }

    #[test]
    fn claude_result_and_is_error() {
        let ok = r###"{"type":"result","subtype":"success","is_error":false,"duration_ms":2101,"num_turns":1,"result":"## Summary\nDone.","session_id":"3b1c","total_cost_usd":0.0123,"usage":{"input_tokens":120,"cache_read_input_tokens":0,"output_tokens":34}}"###;
        let e = extract(&spec("claude"), ok);
        assert_eq!(e.text.as_deref(), Some("## Summary\nDone."));
        assert_eq!(e.failure, None);
        assert_eq!(e.tokens, Tokens { total: Some(154), input: Some(120), output: Some(34), cached: Some(0) });
        assert_eq!(e.cost_usd, Some(0.0123));
        let bad = r###"{"type":"result","subtype":"error_during_execution","is_error":true,"result":"Credit balance is too low","session_id":"x"}"###;
        let e = extract(&spec("claude"), bad);
        assert_eq!(e.failure.as_deref(), Some("Credit balance is too low"));
    }

    #[test]
    fn codex_last_agent_message() {
        let out = concat!(
            r###"{"type":"thread.started","thread_id":"t1"}"###,
            "\n",
            r###"{"type":"item.completed","item":{"id":"item_0","type":"reasoning","text":"thinking"}}"###,
            "\n",
            r###"{"type":"item.completed","item":{"id":"item_1","type":"agent_message","text":"first"}}"###,
            "\n",
            "not json at all\n",
            r###"{"type":"item.completed","item":{"id":"item_2","type":"agent_message","text":"## Summary\nfinal"}}"###,
            "\n",
            r###"{"type":"turn.completed","usage":{"input_tokens":1000,"cached_input_tokens":10,"output_tokens":50}}"###,
            "\n"
        );
        let e = extract(&spec("codex"), out);
        assert_eq!(e.text.as_deref(), Some("## Summary\nfinal"));
        assert_eq!(e.tokens, Tokens { total: Some(1050), input: Some(1000), output: Some(50), cached: Some(10) });
        let failed = concat!(r###"{"type":"turn.failed","error":{"message":"stream disconnected"}}"###, "\n");
        assert_eq!(extract(&spec("codex"), failed).failure.as_deref(), Some("stream disconnected"));
    }

    #[test]
    fn opencode_last_text_part() {
        let out = concat!(
            r###"{"type":"step_start","timestamp":1,"sessionID":"s","part":{"type":"step-start"}}"###,
            "\n",
            r###"{"type":"text","timestamp":2,"sessionID":"s","part":{"type":"text","text":"looking"}}"###,
            "\n",
            r###"{"type":"tool_use","timestamp":3,"sessionID":"s","part":{"type":"tool","tool":"read"}}"###,
            "\n",
            r###"{"type":"text","timestamp":4,"sessionID":"s","part":{"type":"text","text":"## Summary\nread it"}}"###,
            "\n",
            r###"{"type":"step_finish","timestamp":5,"sessionID":"s","part":{"type":"step-finish","tokens":{"input":300,"output":20},"cost":0.002}}"###,
            "\n"
        );
        let e = extract(&spec("opencode"), out);
        assert_eq!(e.text.as_deref(), Some("## Summary\nread it"));
        assert_eq!(e.tokens.total, Some(320));
        assert_eq!(e.cost_usd, Some(0.002));
        let err =
            r###"{"type":"error","sessionID":"s","error":{"name":"APIError","data":{"message":"model not found"}}}"###;
        assert_eq!(extract(&spec("opencode"), err).failure.as_deref(), Some("model not found"));
    }

    #[test]
    fn claude_stream_counts_the_result_line_only() {
        // An assistant line's usage sits under /message: it is not counted again.
        let out = concat!(
            r###"{"type":"system","subtype":"init","session_id":"s"}"###,
            "\n",
            r###"{"type":"assistant","message":{"id":"m1","content":[{"type":"text","text":"looking"}],"usage":{"input_tokens":10,"cache_read_input_tokens":300,"output_tokens":5}}}"###,
            "\n",
            r###"{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t","content":"x","is_error":true}]}}"###,
            "\n",
            r###"{"type":"result","subtype":"success","is_error":false,"result":"## Summary\nDone.","total_cost_usd":0.01,"usage":{"input_tokens":20,"cache_read_input_tokens":600,"output_tokens":10},"permission_denials":[]}"###,
            "\n"
        );
        let e = extract(&spec("claude"), out);
        assert_eq!(e.text.as_deref(), Some("## Summary\nDone."));
        assert_eq!((e.failure, e.cost_usd), (None, Some(0.01)));
        assert_eq!(e.tokens, Tokens { total: Some(630), input: Some(620), output: Some(10), cached: Some(600) });
        // Killed before its result line: no answer, but the shape was right.
        let cut = out.lines().take(3).collect::<Vec<_>>().join("\n");
        let e = extract(&spec("claude"), &cut);
        assert_eq!((e.text, e.shaped, e.tokens.total), (None, true, None));
    }

    #[test]
    fn gemini_stream_answer_failure_and_tokens() {
        let out = concat!(
            r###"{"type":"init","session_id":"s","model":"m"}"###,
            "\n",
            r###"{"type":"message","role":"user","content":"do it"}"###,
            "\n",
            r###"{"type":"message","role":"assistant","content":"I will write ","delta":true}"###,
            "\n",
            r###"{"type":"message","role":"assistant","content":"the file.","delta":true}"###,
            "\n",
            r###"{"type":"tool_use","tool_name":"write_file","tool_id":"w1","parameters":{"file_path":"a"}}"###,
            "\n",
            r###"{"type":"tool_result","tool_id":"w1","status":"success"}"###,
            "\n",
            r###"{"type":"message","role":"assistant","content":"## Summary\n","delta":true}"###,
            "\n",
            r###"{"type":"message","role":"assistant","content":"ok","delta":true}"###,
            "\n",
            r###"{"type":"result","status":"success","stats":{"total_tokens":1005,"input_tokens":990,"output_tokens":15,"cached":900,"input":90,"models":{"m":{"total_tokens":1005,"input_tokens":990}}}}"###,
            "\n"
        );
        let e = extract(&spec("gemini"), out);
        assert_eq!(e.text.as_deref(), Some("## Summary\nok"), "the text after the last tool call, deltas joined");
        assert_eq!(e.failure, None);
        assert_eq!(e.tokens, Tokens { total: Some(1005), input: Some(990), output: Some(15), cached: Some(900) });
        let bad = r###"{"type":"result","status":"error","error":{"type":"unknown","message":"[API Error: quota exceeded]"},"stats":{"total_tokens":0}}"###;
        let e = extract(&spec("gemini"), bad);
        assert_eq!(e.failure.as_deref(), Some("[API Error: quota exceeded]"));
        assert_eq!(e.text, None);
        // What it prints on stderr when it cannot start, read as one document.
        let stderr = "Error: boom\n{\n  \"session_id\": \"s\",\n  \"error\": {\"type\": \"Error\", \"message\": \"Invalid auth method selected.\", \"code\": 41}\n}\n";
        let doc = OutputSpec { format: Format::Json, ..spec("gemini") };
        assert_eq!(extract(&doc, stderr).failure.as_deref(), Some("Invalid auth method selected."));
    }

    #[test]
    fn wrong_shapes_find_nothing_and_never_panic() {
        for name in crate::agent::preset::NAMES {
            let e = extract(&spec(name), "plain words, no JSON\n{\"half\": ");
            assert_eq!(e.text, None, "{name}");
            assert_eq!(e.failure, None, "{name}");
        }
        let joined = OutputSpec {
            format: Format::Jsonl,
            where_: vec![("/k".into(), serde_json::json!("t"))],
            text: Some("/v".into()),
            join: true,
            ..Default::default()
        };
        let e = extract(&joined, "{\"k\":\"t\",\"v\":\"a\"}\n{\"k\":\"x\",\"v\":\"b\"}\n{\"k\":\"t\",\"v\":\"c\"}\n");
        assert_eq!(e.text.as_deref(), Some("a\nc"));
        let after = OutputSpec {
            join_with: Some(" + ".into()),
            after_where: vec![("/k".into(), serde_json::json!("x"))],
            ..joined.clone()
        };
        let e = extract(
            &after,
            "{\"k\":\"t\",\"v\":\"a\"}\n{\"k\":\"x\",\"v\":\"b\"}\n{\"k\":\"t\",\"v\":\"c\"}\n{\"k\":\"t\",\"v\":\"d\"}\n",
        );
        assert_eq!(e.text.as_deref(), Some("c + d"));
    }

    #[test]
    fn specs_read_from_config_json() {
        let s: OutputSpec = serde_json::from_value(serde_json::json!({
            "format": "jsonl", "where": [["/type", "done"]], "text": "/msg", "tokens": ["/n"]
        }))
        .unwrap();
        assert_eq!(s.format, Format::Jsonl);
        assert_eq!(extract(&s, "{\"type\":\"done\",\"msg\":\"hi\",\"n\":3}").text.as_deref(), Some("hi"));
        let bad = serde_json::from_value::<OutputSpec>(serde_json::json!({"format": "xml"}));
        assert!(bad.unwrap_err().to_string().contains("xml"));
        let s: OutputSpec = serde_json::from_value(serde_json::json!({
            "format": "jsonl", "events": "claude", "where": [["/type", "result"]], "text": "/result",
            "join": true, "joinWith": "", "afterWhere": [["/type", "tool_use"]]
        }))
        .unwrap();
        assert_eq!((s.events, s.join_with.as_deref()), (Some(crate::agent::stream::Dialect::Claude), Some("")));
        let bad = serde_json::from_value::<OutputSpec>(serde_json::json!({"events": "cursor"}));
        assert!(bad.unwrap_err().to_string().contains("cursor"));
        // Stored specs without the newer keys still read, and a spec without them writes none.
        let plain = serde_json::to_value(OutputSpec::default()).unwrap();
        assert!(plain.get("events").is_none() && plain.get("joinWith").is_none() && plain.get("afterWhere").is_none());
    }
}
