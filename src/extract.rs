//! Turning an agent CLI's stdout into a job's result: plain text, a value taken from one JSON
//! document, or from the last matching line of JSON Lines; with failure, token and cost fields.
//! Pure: the dispatcher feeds it the worker's `.out` log. Ready specs for the agent CLIs live in
//! [`preset`].

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
    /// `jsonl`: join the text of every selected line (with `\n`) instead of taking the last.
    #[serde(default)]
    pub join: bool,
    /// JSON pointer of a flag that, when true, makes the job fail (e.g. claude's `/is_error`).
    pub failed: Option<String>,
    /// `jsonl`: a line matching all of these pointer/value pairs makes the job fail.
    #[serde(default)]
    pub failed_where: Vec<(String, Value)>,
    /// JSON pointer of the error message in a failing document.
    pub error: Option<String>,
    /// JSON pointers summed into the token count, over every document.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// JSON pointer of the cost in USD, summed over every document.
    pub cost: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Text,
    Json,
    Jsonl,
}

/// What was found in the output.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extracted {
    /// The response text (the trimmed stdout for `text`; `None` when nothing matched).
    pub text: Option<String>,
    /// The output itself says the job failed, with this message.
    pub failure: Option<String>,
    pub tokens: Option<i64>,
    pub cost_usd: Option<f64>,
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
    let docs: Vec<Value> = match spec.format {
        Format::Text => return Extracted { text: Some(stdout.trim().to_string()), ..Default::default() },
        Format::Json => serde_json::from_str::<Value>(stdout.trim())
            .ok()
            .or_else(|| stdout.lines().rev().find_map(|l| serde_json::from_str(l.trim()).ok()))
            .into_iter()
            .collect(),
        Format::Jsonl => stdout.lines().filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok()).collect(),
    };
    let selected: Vec<&Value> = if spec.format == Format::Jsonl && !spec.where_.is_empty() {
        docs.iter().filter(|d| matches(d, &spec.where_)).collect()
    } else {
        docs.iter().collect()
    };
    let text_of = |d: &Value| spec.text.as_deref().map_or_else(|| as_text(d), |p| d.pointer(p).and_then(as_text));
    let text = if spec.join {
        let parts: Vec<String> = selected.iter().filter_map(|d| text_of(d)).collect();
        (!parts.is_empty()).then(|| parts.join("\n"))
    } else {
        selected.iter().rev().find_map(|d| text_of(d))
    };
    let failing = docs
        .iter()
        .rev()
        .find(|d| spec.failed.as_deref().is_some_and(|p| truthy(d.pointer(p))) || matches(d, &spec.failed_where));
    let failure = failing.map(|d| {
        spec.error
            .as_deref()
            .and_then(|p| d.pointer(p))
            .and_then(as_text)
            .or_else(|| text.clone())
            .unwrap_or_else(|| "the agent reported an error".into())
    });
    let sum_i = |ptrs: &[String]| -> Option<i64> {
        let vals: Vec<i64> = docs.iter().flat_map(|d| ptrs.iter().filter_map(|p| d.pointer(p)?.as_i64())).collect();
        (!vals.is_empty()).then(|| vals.iter().sum())
    };
    let cost = spec.cost.as_deref().and_then(|p| {
        let vals: Vec<f64> = docs.iter().filter_map(|d| d.pointer(p)?.as_f64()).collect();
        (!vals.is_empty()).then(|| vals.iter().sum())
    });
    Extracted { text: text.map(|t| t.trim().to_string()), failure, tokens: sum_i(&spec.tokens), cost_usd: cost }
}

/// Ready runners for agent CLIs: an argv template and how to read its output.
pub mod preset {
    use super::{Format, OutputSpec};
    use serde_json::{Value, json};

    fn cond(ptr: &str, v: Value) -> (String, Value) {
        (ptr.to_string(), v)
    }

    /// The names of the presets.
    pub const NAMES: [&str; 4] = ["opencode", "claude", "codex", "gemini"];

    /// A preset's runner (argv template) and output spec, by name.
    pub fn get(name: &str) -> Option<(Value, OutputSpec)> {
        match name {
            // JSON Lines events; the answer is the last `text` event's part text; `error` events
            // fail the job; tokens are summed from `step_finish` parts.
            "opencode" => Some((
                json!(["opencode", "run", "--format", "json", ["--model", "{model}"], "{prompt}"]),
                OutputSpec {
                    format: Format::Jsonl,
                    where_: vec![cond("/type", json!("text"))],
                    text: Some("/part/text".into()),
                    failed_where: vec![cond("/type", json!("error"))],
                    error: Some("/error/data/message".into()),
                    tokens: vec!["/part/tokens/input".into(), "/part/tokens/output".into()],
                    cost: Some("/part/cost".into()),
                    ..Default::default()
                },
            )),
            // One JSON document: `result`, `is_error` makes it a failure, usage and cost.
            "claude" => Some((
                json!([
                    "claude",
                    "-p",
                    "--output-format",
                    "json",
                    ["--model", "{model}"],
                    ["--append-system-prompt", "{systemPrompt}"],
                    "{prompt}"
                ]),
                OutputSpec {
                    format: Format::Json,
                    text: Some("/result".into()),
                    failed: Some("/is_error".into()),
                    error: Some("/result".into()),
                    tokens: vec!["/usage/input_tokens".into(), "/usage/output_tokens".into()],
                    cost: Some("/total_cost_usd".into()),
                    ..Default::default()
                },
            )),
            // JSON Lines events; the answer is the last completed agent message.
            "codex" => Some((
                json!(["codex", "exec", "--json", ["--model", "{model}"], "{prompt}"]),
                OutputSpec {
                    format: Format::Jsonl,
                    where_: vec![cond("/type", json!("item.completed")), cond("/item/type", json!("agent_message"))],
                    text: Some("/item/text".into()),
                    failed_where: vec![cond("/type", json!("turn.failed"))],
                    error: Some("/error/message".into()),
                    tokens: vec!["/usage/input_tokens".into(), "/usage/output_tokens".into()],
                    ..Default::default()
                },
            )),
            // One JSON document: `response`; an `error` object makes it a failure.
            "gemini" => Some((
                json!(["gemini", ["--model", "{model}"], "--output-format", "json", "-p", "{prompt}"]),
                OutputSpec {
                    format: Format::Json,
                    text: Some("/response".into()),
                    failed: Some("/error".into()),
                    error: Some("/error/message".into()),
                    ..Default::default()
                },
            )),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> OutputSpec {
        preset::get(name).unwrap().1
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
        assert_eq!(e.tokens, Some(154));
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
        assert_eq!(e.tokens, Some(1050));
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
        assert_eq!(e.tokens, Some(320));
        assert_eq!(e.cost_usd, Some(0.002));
        let err =
            r###"{"type":"error","sessionID":"s","error":{"name":"APIError","data":{"message":"model not found"}}}"###;
        assert_eq!(extract(&spec("opencode"), err).failure.as_deref(), Some("model not found"));
    }

    #[test]
    fn gemini_response_and_error() {
        let ok = r###"{"response":"## Summary\nok","stats":{"models":{}}}"###;
        assert_eq!(extract(&spec("gemini"), ok).text.as_deref(), Some("## Summary\nok"));
        let bad = r###"{"error":{"type":"ApiError","message":"quota exceeded","code":429}}"###;
        let e = extract(&spec("gemini"), bad);
        assert_eq!(e.failure.as_deref(), Some("quota exceeded"));
        assert_eq!(e.text, None);
    }

    #[test]
    fn wrong_shapes_find_nothing_and_never_panic() {
        for name in preset::NAMES {
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
    }
}
