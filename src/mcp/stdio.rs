//! The line filter between the real stdin/stdout and rmcp: every request gets an answer.
//!
//! rmcp's stdio transport ignores a line that is not JSON (to serde_json, that includes a string
//! holding a lone surrogate escape), answers a request it cannot read as a message (`params` an
//! array, say) with an `Invalid request` that carries no id, so the client cannot match it to its
//! request, and reads a known method whose params do not fit as a custom request, answered
//! "method not found". So each line from stdin is screened first:
//!
//! - each lone UTF-16 surrogate escape (`"\ud83d"`: what JavaScript makes of a string cut inside
//!   an emoji) becomes `\ufffd` (U+FFFD), so that the request is served rather than refused;
//!   a valid pair stays, and so does `\\ud83d` (an escaped backslash, then text);
//! - a line that is not JSON is answered here: parse error -32700, id null;
//! - a request whose params have the wrong shape is answered here: invalid params -32602, with
//!   its id and a message naming the problem (`params must be an object`, `tools/call needs a
//!   string "name"`, `arguments must be an object`...);
//! - everything else goes on to rmcp unchanged.
//!
//! rmcp reads and writes in-process pipes. One writer task owns stdout and writes whole lines,
//! rmcp's and this filter's, so that the two never interleave.

use std::borrow::Cow;
use std::io;

use rmcp::model::{CallToolRequestParams, ClientJsonRpcMessage, InitializeRequestParams, RequestId};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The longest line read, newline included: rmcp's own limit, so a line passed on fits it.
const MAX_LINE: usize = rmcp::transport::async_rw::DEFAULT_MAX_LINE_LENGTH;
/// Buffer of each in-process pipe.
const PIPE: usize = 64 * 1024;
/// Lines queued for the writer.
const QUEUE: usize = 64;

const PARSE_ERROR: i32 = -32700;
const INVALID_REQUEST: i32 = -32600;
const INVALID_PARAMS: i32 = -32602;

/// rmcp's transport (a reader and a writer), fed from `input` through the filter, with its
/// answers written to `output`; and the writer task, which ends once rmcp's answers are out.
pub(crate) fn filter<R, W>(input: R, output: W) -> ((DuplexStream, DuplexStream), JoinHandle<io::Result<()>>)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (to_rmcp, rmcp_in) = tokio::io::duplex(PIPE);
    let (rmcp_out, from_rmcp) = tokio::io::duplex(PIPE);
    let (answers_tx, answers) = mpsc::channel(QUEUE);
    let (rmcp_tx, rmcp_lines) = mpsc::channel(QUEUE);
    tokio::spawn(read_input(BufReader::new(input), to_rmcp, answers_tx));
    tokio::spawn(relay(BufReader::new(from_rmcp), rmcp_tx));
    let writer = tokio::spawn(write_output(rmcp_lines, answers, output));
    ((rmcp_in, rmcp_out), writer)
}

/// Screen each line of `input`: pass it to rmcp or queue the answer. Ends at the end of input
/// (which closes rmcp's input) or when rmcp or the writer is gone.
async fn read_input<R: AsyncBufRead + Unpin>(mut input: R, mut to_rmcp: DuplexStream, answers: mpsc::Sender<Vec<u8>>) {
    let mut line = Vec::new();
    loop {
        line.clear();
        match read_line(&mut input, &mut line, MAX_LINE).await {
            Ok(Line::Complete) => {}
            Ok(Line::Oversized) => {
                tracing::warn!(max = MAX_LINE, "an MCP message longer than the limit was not read");
                let message = format!("Invalid request: message longer than {MAX_LINE} bytes");
                if answers.send(error_line(&Value::Null, INVALID_REQUEST, &message)).await.is_err() {
                    return;
                }
                continue;
            }
            Ok(Line::Eof) => return,
            Err(e) => {
                tracing::error!("reading MCP input: {e}");
                return;
            }
        }
        let sent = match screen(&line) {
            Screened::Pass(pass) => to_rmcp.write_all(&pass).await.is_ok(),
            Screened::Answer(answer) => answers.send(answer).await.is_ok(),
        };
        if !sent {
            return;
        }
    }
}

#[derive(Debug, PartialEq)]
enum Line {
    /// `line` holds one line ending with a newline.
    Complete,
    /// A line longer than [`MAX_LINE`], skipped to its end.
    Oversized,
    Eof,
}

/// Read one line into `line`, at most `max` bytes; a last line without a newline gets one.
async fn read_line<R: AsyncBufRead + Unpin>(input: &mut R, line: &mut Vec<u8>, max: usize) -> io::Result<Line> {
    if (&mut *input).take(max as u64).read_until(b'\n', line).await? == 0 {
        return Ok(Line::Eof);
    }
    if line.ends_with(b"\n") {
        return Ok(Line::Complete);
    }
    if line.len() < max {
        line.push(b'\n');
        return Ok(Line::Complete);
    }
    loop {
        line.clear();
        let n = (&mut *input).take(max as u64).read_until(b'\n', line).await?;
        if n == 0 || line.ends_with(b"\n") {
            line.clear();
            return Ok(Line::Oversized);
        }
    }
}

/// Hand rmcp's output to the writer a whole line at a time.
async fn relay<R: AsyncBufRead + Unpin>(mut from_rmcp: R, lines: mpsc::Sender<Vec<u8>>) {
    loop {
        let mut line = Vec::new();
        match from_rmcp.read_until(b'\n', &mut line).await {
            Ok(0) => return,
            Ok(_) => {
                if lines.send(line).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::error!("reading the MCP server's output: {e}");
                return;
            }
        }
    }
}

/// The one writer of `output`: rmcp's lines and the filter's answers, each line whole. Ends when
/// rmcp's output ends, after the answers already queued; flushes whenever nothing is waiting.
async fn write_output<W: AsyncWrite + Unpin>(
    mut rmcp: mpsc::Receiver<Vec<u8>>,
    mut answers: mpsc::Receiver<Vec<u8>>,
    mut output: W,
) -> io::Result<()> {
    let mut answers_open = true;
    loop {
        let line = tokio::select! {
            line = rmcp.recv() => match line {
                Some(line) => line,
                None => break,
            },
            line = answers.recv(), if answers_open => match line {
                Some(line) => line,
                None => {
                    answers_open = false;
                    continue;
                }
            },
        };
        output.write_all(&line).await?;
        if rmcp.is_empty() && answers.is_empty() {
            output.flush().await?;
        }
    }
    // Answers queued before the input ended (which is what ended rmcp).
    while let Ok(line) = answers.try_recv() {
        output.write_all(&line).await?;
    }
    output.flush().await
}

/// What to do with one line.
#[derive(Debug)]
pub(crate) enum Screened<'a> {
    /// Pass these bytes on to rmcp (the line, its lone surrogates repaired).
    Pass(Cow<'a, [u8]>),
    /// Answer with this line; rmcp never sees the request.
    Answer(Vec<u8>),
}

/// Screen one line (newline included). See the module documentation.
pub(crate) fn screen(line: &[u8]) -> Screened<'_> {
    // rmcp skips blank lines; they are not requests.
    if line.trim_ascii().is_empty() {
        return Screened::Pass(Cow::Borrowed(line));
    }
    let line = repair_surrogates(line);
    // Without the line end, so that an error's position is on line 1; rmcp ignores a leading
    // byte order mark (RFC 8259 8.1).
    let json = line.strip_suffix(b"\n").unwrap_or(&line);
    let json = json.strip_suffix(b"\r").unwrap_or(json);
    let json = json.strip_prefix(b"\xEF\xBB\xBF".as_slice()).unwrap_or(json);
    let value: Value = match serde_json::from_slice(json) {
        Ok(v) => v,
        Err(e) => return Screened::Answer(error_line(&Value::Null, PARSE_ERROR, &format!("Parse error: {e}"))),
    };
    match check_request(&value) {
        Some((code, message)) => Screened::Answer(error_line(&value["id"], code, &message)),
        None => Screened::Pass(line),
    }
}

/// The error a request should get here, or `None` to pass it on. Only requests are checked:
/// an object with a `method` and an id rmcp can read (a string or an integer). Notifications
/// and responses get no answer, and a request whose id cannot be read is left to rmcp.
fn check_request(value: &Value) -> Option<(i32, String)> {
    let obj = value.as_object()?;
    let id = obj.get("id")?;
    RequestId::deserialize(id).ok()?;
    let method = obj.get("method")?;
    let name = method.as_str().map_or_else(|| method.to_string(), str::to_string);
    let params = obj.get("params").filter(|p| !p.is_null());
    if params.is_some_and(|p| !p.is_object()) {
        return Some((INVALID_PARAMS, "params must be an object".to_string()));
    }
    // rmcp reads these two methods, when their params do not fit, as custom requests: answered
    // "method not found" (before `initialize`, "request _meta is missing...").
    let typed = match method.as_str() {
        Some("tools/call") => {
            let field = |k: &str| params.and_then(|p| p.get(k)).filter(|v| !v.is_null());
            if !field("name").is_some_and(Value::is_string) {
                return Some((INVALID_PARAMS, "tools/call needs a string \"name\"".to_string()));
            }
            if field("arguments").is_some_and(|a| !a.is_object()) {
                return Some((INVALID_PARAMS, "arguments must be an object".to_string()));
            }
            fits::<CallToolRequestParams>(params)
        }
        Some("initialize") => fits::<InitializeRequestParams>(params),
        _ => Ok(()),
    };
    if let Err(e) = typed {
        return Some((INVALID_PARAMS, format!("Invalid params for {name}: {e}")));
    }
    // Anything else rmcp could not read would be answered without the id.
    let Err(e) = ClientJsonRpcMessage::deserialize(value) else { return None };
    let mut without_params = obj.clone();
    without_params.remove("params");
    if serde_json::from_value::<ClientJsonRpcMessage>(Value::Object(without_params)).is_ok() {
        Some((INVALID_PARAMS, format!("Invalid params for {name}: {e}")))
    } else if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        Some((INVALID_REQUEST, "Invalid request: \"jsonrpc\" must be \"2.0\"".to_string()))
    } else {
        Some((INVALID_REQUEST, format!("Invalid request: {e}")))
    }
}

/// Do `params` (absent meaning `{}`) deserialize as `T`?
fn fits<T: serde::de::DeserializeOwned>(params: Option<&Value>) -> Result<(), serde_json::Error> {
    match params {
        Some(params) => T::deserialize(params).map(drop),
        None => T::deserialize(&json!({})).map(drop),
    }
}

/// A JSON-RPC error answer, one line, its members in the usual order.
fn error_line(id: &Value, code: i32, message: &str) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Answer<'a> {
        jsonrpc: &'static str,
        id: &'a Value,
        error: Error<'a>,
    }
    #[derive(serde::Serialize)]
    struct Error<'a> {
        code: i32,
        message: &'a str,
    }
    let answer = Answer { jsonrpc: "2.0", id, error: Error { code, message } };
    // A Value and a string always serialize.
    let mut line = serde_json::to_vec(&answer).unwrap_or_default();
    line.push(b'\n');
    line
}

/// Replace each lone surrogate escape in JSON text (a `\uD800`-`\uDBFF` not followed by a
/// `\uDC00`-`\uDFFF`, or the latter alone) with `\ufffd`, which has the same length. Escapes
/// are read from the left, so `\\ud83d` (an escaped backslash, then text) is left alone. A
/// backslash outside a string is not JSON anyway, so strings need not be tracked.
pub(crate) fn repair_surrogates(text: &[u8]) -> Cow<'_, [u8]> {
    let mut repaired: Option<Vec<u8>> = None;
    let mut i = 0;
    while i < text.len() {
        if text[i] != b'\\' {
            i += 1;
            continue;
        }
        match unicode_escape(text, i) {
            Some(0xD800..=0xDBFF)
                if unicode_escape(text, i + 6).is_some_and(|low| (0xDC00..=0xDFFF).contains(&low)) =>
            {
                i += 12;
            }
            Some(0xD800..=0xDFFF) => {
                repaired.get_or_insert_with(|| text.to_vec())[i..i + 6].copy_from_slice(b"\\ufffd");
                i += 6;
            }
            // Any other escape: the backslash and the character it escapes.
            _ => i += 2,
        }
    }
    repaired.map_or(Cow::Borrowed(text), Cow::Owned)
}

/// The code unit of a `\uXXXX` escape starting at `at`.
fn unicode_escape(text: &[u8], at: usize) -> Option<u16> {
    match text.get(at..at + 6)? {
        [b'\\', b'u', hex @ ..] => hex.iter().try_fold(0u16, |n, b| Some(n * 16 + char::from(*b).to_digit(16)? as u16)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repaired(s: &str) -> String {
        String::from_utf8(repair_surrogates(s.as_bytes()).into_owned()).unwrap()
    }

    #[test]
    fn lone_surrogates_become_the_replacement_character() {
        // input -> output, as JSON text.
        let cases = [
            (r#""\ud83d""#, r#""\ufffd""#),
            (r#""a\ud83db""#, r#""a\ufffdb""#),
            (r#""a\uDE00b""#, r#""a\ufffdb""#),
            (r#""\ude00\ud83d""#, r#""\ufffd\ufffd""#),
            (r#""\ud83d\ud83d\ude00""#, r#""\ufffd\ud83d\ude00""#),
            (r#""\ud83d\n""#, r#""\ufffd\n""#),
            (r#""\\\ud83d""#, r#""\\\ufffd""#),
            (r#""\ud83d\u0041""#, r#""\ufffd\u0041""#),
        ];
        for (input, output) in cases {
            assert_eq!(repaired(input), output, "{input}");
            let s: String = serde_json::from_str(output).unwrap();
            assert!(s.contains('\u{FFFD}'), "{output}");
        }
    }

    #[test]
    fn valid_text_is_left_alone() {
        for input in [
            r#""\ud83d\ude00""#,
            r#""\uD83D\uDE00""#,
            r#""\\ud83d""#,
            r#""\\\\ud83d""#,
            r#""\u00e9 \" \\ \/ \n""#,
            r#""\ud8""#,
            r#""\u+d83""#,
            "\"😀 é\"",
            r#"\"#,
        ] {
            assert!(matches!(repair_surrogates(input.as_bytes()), Cow::Borrowed(_)), "{input}");
        }
    }

    fn answer(line: &str) -> Value {
        match screen(line.as_bytes()) {
            Screened::Answer(a) => serde_json::from_slice(&a).unwrap(),
            Screened::Pass(p) => panic!("passed: {}", String::from_utf8_lossy(&p)),
        }
    }

    fn passes(line: &str) -> String {
        match screen(line.as_bytes()) {
            Screened::Pass(p) => String::from_utf8(p.into_owned()).unwrap(),
            Screened::Answer(a) => panic!("answered: {}", String::from_utf8_lossy(&a)),
        }
    }

    #[test]
    fn a_line_that_is_not_json_is_a_parse_error() {
        for line in ["not json\n", "{\"jsonrpc\":\"2.0\",\"id\":1\n", "\u{feff}{]\n", "{\"a\":\"\\x\"}\n"] {
            let a = answer(line);
            assert_eq!(a["error"]["code"], PARSE_ERROR, "{line}: {a}");
            assert!(a["error"]["message"].as_str().unwrap().starts_with("Parse error: "), "{a}");
            assert!(a.as_object().unwrap().contains_key("id") && a["id"].is_null(), "{a}");
            assert_eq!(a["jsonrpc"], "2.0");
        }
        assert!(matches!(screen(&[0xff, b'\n']), Screened::Answer(_)));
    }

    #[test]
    fn params_of_the_wrong_shape_are_named() {
        let cases = [
            (r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":[1]}"#, "params must be an object"),
            (r#"{"jsonrpc":"2.0","id":"a","method":"initialize","params":5}"#, "params must be an object"),
            (r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":"x"}"#, "params must be an object"),
            (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#, "tools/call needs a string \"name\""),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}"#,
                "tools/call needs a string \"name\"",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":[]}}"#,
                "arguments must be an object",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","_meta":5}}"#,
                "Invalid params for tools/call: ",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#,
                "Invalid params for initialize: missing field `protocolVersion`",
            ),
        ];
        for (line, message) in cases {
            let a = answer(line);
            let sent: Value = serde_json::from_str(line).unwrap();
            assert_eq!(a["id"], sent["id"], "{line}: {a}");
            assert_eq!(a["error"]["code"], INVALID_PARAMS, "{line}: {a}");
            assert!(a["error"]["message"].as_str().unwrap().starts_with(message), "{line}: {a}");
        }
        let a = answer(r#"{"jsonrpc":"1.0","id":7,"method":"tools/list"}"#);
        assert_eq!((a["id"].clone(), a["error"]["code"].clone()), (json!(7), json!(INVALID_REQUEST)), "{a}");
        assert_eq!(a["error"]["message"], "Invalid request: \"jsonrpc\" must be \"2.0\"");
        let a = answer(r#"{"jsonrpc":"2.0","id":8,"method":5}"#);
        assert_eq!((a["id"].clone(), a["error"]["code"].clone()), (json!(8), json!(INVALID_REQUEST)), "{a}");
    }

    #[test]
    fn everything_else_passes_unchanged() {
        for line in [
            "\n",
            "  \r\n",
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}\n",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":null}"#,
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"task_list","arguments":null}}"#,
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"nope","arguments":{"a":1}}}"#,
            r#"{"jsonrpc":"2.0","id":4,"method":"resources/list","params":{"cursor":5}}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized","params":[1]}"#,
            r#"{"jsonrpc":"2.0","id":1.5,"method":"tools/list","params":[1]}"#,
            r#"{"jsonrpc":"2.0","id":5,"result":{}}"#,
            "\u{feff}{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n",
            r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"t","arguments":{"task":"\ud83d\ude00 \\ud83d"}}}"#,
        ] {
            assert_eq!(passes(line), line);
        }
        let line =
            r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"t","arguments":{"task":"a\ud83d"}}}"#;
        assert_eq!(passes(line), line.replace(r"\ud83d", r"\ufffd"));
    }

    #[tokio::test]
    async fn lines_are_bounded_and_a_last_line_gets_its_newline() {
        let mut input: &[u8] = b"ab\ntoo long\nlonger than that\ncd";
        let mut line = Vec::new();
        let mut next = async || {
            line.clear();
            let r = read_line(&mut input, &mut line, 8).await.unwrap();
            (r, String::from_utf8(line.clone()).unwrap())
        };
        assert_eq!(next().await, (Line::Complete, "ab\n".to_string()));
        assert_eq!(next().await, (Line::Oversized, String::new()));
        assert_eq!(next().await, (Line::Oversized, String::new()));
        assert_eq!(next().await, (Line::Complete, "cd\n".to_string()));
        assert_eq!(next().await, (Line::Eof, String::new()));
    }

    /// Through the whole filter, with a stand-in for rmcp that answers each line it gets: the
    /// filter's answers and rmcp's all come out, whole lines, the last ones too.
    #[tokio::test]
    async fn answers_from_the_filter_and_from_rmcp_all_come_out() {
        let input: &[u8] = b"hello\n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n[}";
        let (output, mut client) = tokio::io::duplex(1024);
        let ((rmcp_in, mut rmcp_out), writer) = filter(input, output);
        tokio::spawn(async move {
            let mut lines = BufReader::new(rmcp_in).lines();
            while let Some(line) = lines.next_line().await.unwrap() {
                rmcp_out.write_all(format!("rmcp got {line}\n").as_bytes()).await.unwrap();
            }
        });
        let mut out = String::new();
        client.read_to_string(&mut out).await.unwrap();
        writer.await.unwrap().unwrap();
        let mut lines: Vec<&str> = out.lines().collect();
        lines.sort_unstable();
        let parse_error = |column: u32| {
            format!(
                r#"{{"jsonrpc":"2.0","id":null,"error":{{"code":-32700,"message":"Parse error: expected value at line 1 column {column}"}}}}"#
            )
        };
        assert_eq!(lines, [r#"rmcp got {"jsonrpc":"2.0","id":1,"method":"ping"}"#, &parse_error(1), &parse_error(2)]);
    }
}
