//! The finish hook's argv template (config `hooks.onFinish`): each argument may name the
//! finished task's `{taskId}`, `{status}`, `{exitCode}`, `{profile}`, `{logPath}`,
//! `{durationMs}` and `{label.KEY}`. A brace that does not open such a name (`{"id": 1}` in a
//! JSON body) is kept as it is; a name that looks like a placeholder but is none is refused when
//! the configuration loads, so a typo never reaches a hook silently. Pure.

use std::borrow::Cow;

/// The placeholders, as the configuration error lists them.
pub const PLACEHOLDERS: &[&str] =
    &["{taskId}", "{status}", "{exitCode}", "{profile}", "{logPath}", "{durationMs}", "{label.KEY}"];

/// The plain placeholder names (without `label.`).
const NAMES: &[&str] = &["taskId", "status", "exitCode", "profile", "logPath", "durationMs"];

/// One placeholder in an argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field<'a> {
    TaskId,
    Status,
    ExitCode,
    Profile,
    LogPath,
    DurationMs,
    Label(&'a str),
}

/// What an argument is made of: literal text and placeholders.
enum Piece<'a> {
    Text(&'a str),
    Field(Field<'a>),
    /// `{name}` whose name is none of ours.
    Unknown(&'a str),
}

/// A placeholder name: `{` + a letter, then letters, digits, `.`, `_`, `-`, `/` + `}`.
fn pieces(arg: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut text_from = 0;
    let mut i = 0;
    let bytes = arg.as_bytes();
    while i < bytes.len() {
        if bytes[i] == b'{' && bytes.get(i + 1).is_some_and(u8::is_ascii_alphabetic) {
            let rest = &arg[i + 1..];
            let len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')))
                .unwrap_or(rest.len());
            if rest[len..].starts_with('}') {
                if text_from < i {
                    out.push(Piece::Text(&arg[text_from..i]));
                }
                let name = &rest[..len];
                out.push(match field(name) {
                    Some(f) => Piece::Field(f),
                    None => Piece::Unknown(name),
                });
                i += len + 2;
                text_from = i;
                continue;
            }
        }
        i += 1;
    }
    if text_from < arg.len() {
        out.push(Piece::Text(&arg[text_from..]));
    }
    out
}

fn field(name: &str) -> Option<Field<'_>> {
    Some(match name {
        "taskId" => Field::TaskId,
        "status" => Field::Status,
        "exitCode" => Field::ExitCode,
        "profile" => Field::Profile,
        "logPath" => Field::LogPath,
        "durationMs" => Field::DurationMs,
        _ => match name.strip_prefix("label.") {
            Some(key) if !key.is_empty() => Field::Label(key),
            _ => return None,
        },
    })
}

/// Refuse an argument naming an unknown placeholder; the message says which and lists ours.
pub fn check(arg: &str) -> Result<(), String> {
    for piece in pieces(arg) {
        if let Piece::Unknown(name) = piece {
            let hint = NAMES
                .iter()
                .find(|n| n.eq_ignore_ascii_case(name))
                .map(|n| format!(" (did you mean {{{n}}}?)"))
                .unwrap_or_default();
            return Err(format!("unknown placeholder {{{name}}}{hint}; known: {}", PLACEHOLDERS.join(", ")));
        }
    }
    Ok(())
}

/// The argument with each placeholder replaced by `value(field)` (empty when it has none, such
/// as the exit code of a task canceled before it ran).
pub fn expand<'a>(arg: &'a str, value: &dyn Fn(Field<'_>) -> Option<String>) -> Cow<'a, str> {
    let pieces = pieces(arg);
    if pieces.iter().all(|p| matches!(p, Piece::Text(_))) {
        return Cow::Borrowed(arg);
    }
    let mut out = String::with_capacity(arg.len());
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Field(f) => out.push_str(&value(f).unwrap_or_default()),
            Piece::Unknown(name) => {
                out.push('{');
                out.push_str(name);
                out.push('}');
            }
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(f: Field<'_>) -> Option<String> {
        match f {
            Field::TaskId => Some("t-1".into()),
            Field::Status => Some("failed".into()),
            Field::ExitCode => None,
            Field::Profile => Some("coder".into()),
            Field::LogPath => Some("/q/logs/t-1/1.out".into()),
            Field::DurationMs => Some("1500".into()),
            Field::Label("team") => Some("web".into()),
            Field::Label(_) => None,
        }
    }

    #[test]
    fn expands_every_placeholder() {
        let got = expand(
            "{taskId} {status} [{exitCode}] {profile} {logPath} {durationMs}ms {label.team}/{label.none}",
            &values,
        );
        assert_eq!(got, "t-1 failed [] coder /q/logs/t-1/1.out 1500ms web/");
    }

    #[test]
    fn keeps_braces_that_are_no_placeholder() {
        let body = r#"{"id": "{taskId}", "ok": {"s": 1}} { } {1} {"#;
        assert_eq!(expand(body, &values), r#"{"id": "t-1", "ok": {"s": 1}} { } {1} {"#);
        assert!(matches!(expand("plain", &values), Cow::Borrowed("plain")));
        assert!(check(body).is_ok());
    }

    #[test]
    fn refuses_unknown_names_with_a_hint() {
        let err = check("done: {taskid}").unwrap_err();
        assert!(err.starts_with("unknown placeholder {taskid} (did you mean {taskId}?); known: {taskId}"), "{err}");
        assert!(check("{label.}").is_err());
        assert!(check("{exit_code}").unwrap_err().contains("known:"));
        assert!(check("{label.team/x}").is_ok());
    }
}
