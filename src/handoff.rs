//! Handoff sections: the structured answer a worker gives (Summary, Actions, Artifacts, Risks,
//! Next). Pure text functions, no IO.

/// The five handoff sections of one response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sections {
    pub summary: String,
    pub actions: String,
    pub artifacts: String,
    pub risks: String,
    pub next: String,
    /// Whether any heading was seen at all.
    pub had_headings: bool,
}

/// If `line` is a section heading, which section (0..5 in Summary, Actions, Artifacts, Risks,
/// Next order). Matches `^\s*(#{1,3}\s*)?(Summary|Actions|Artifacts|Risks|Next)\s*:?\s*$`,
/// case-insensitively.
fn heading(line: &str) -> Option<usize> {
    const NAMES: [&str; 5] = ["summary", "actions", "artifacts", "risks", "next"];
    let mut s = line.trim_start();
    let hashes = s.len() - s.trim_start_matches('#').len();
    if hashes > 3 {
        return None;
    }
    if hashes > 0 {
        s = s[hashes..].trim_start();
    }
    let s = s.trim_end();
    let s = s.strip_suffix(':').map(str::trim_end).unwrap_or(s);
    NAMES.iter().position(|n| s.eq_ignore_ascii_case(n))
}

/// Split a response into its sections (SPEC 8.1 `extract`).
pub fn extract(text: &str) -> Sections {
    let text = text.trim();
    let mut out = Sections::default();
    if text.is_empty() {
        return out;
    }
    let mut parts: [Vec<&str>; 5] = Default::default();
    let mut current: Option<usize> = None;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some(h) = heading(line) {
            current = Some(h);
            out.had_headings = true;
        } else if let Some(c) = current {
            parts[c].push(line);
        }
    }
    if !out.had_headings {
        out.summary = text.to_string();
        return out;
    }
    let [s, a, ar, r, n] = parts.map(|p| p.join("\n").trim().to_string());
    out.summary = s;
    out.actions = a;
    out.artifacts = ar;
    out.risks = r;
    out.next = n;
    if out.summary.is_empty() && !out.actions.is_empty() {
        out.summary = out.actions.clone();
    }
    out
}

/// The `report` of a oneshot job: `{summary, details, issues, notes}` from Summary, Artifacts,
/// Risks and Next, or None when the response has no handoff headings.
pub fn report(response: &str) -> Option<serde_json::Value> {
    let s = extract(response);
    if !s.had_headings {
        return None;
    }
    let opt = |v: &str| if v.is_empty() { serde_json::Value::Null } else { v.into() };
    Some(serde_json::json!({
        "summary": opt(&s.summary),
        "details": opt(&s.artifacts),
        "issues": opt(&s.risks),
        "notes": opt(&s.next),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_plain_text() {
        let s = extract("just text\nmore");
        assert_eq!(s.summary, "just text\nmore");
        assert_eq!((s.actions.as_str(), s.artifacts.as_str(), s.risks.as_str(), s.next.as_str()), ("", "", "", ""));
    }

    #[test]
    fn golden_actions_promoted() {
        let s = extract("## Actions\n- did x\n## Risks:\nNone");
        assert_eq!(s.summary, "- did x");
        assert_eq!(s.actions, "- did x");
        assert_eq!(s.risks, "None");
    }

    #[test]
    fn golden_headings_only_when_alone() {
        let s = extract("Preamble ignored\n### summary:\nS1\n**Next**\nnot heading\nNEXT\nN1\n#### Risks\nR");
        assert_eq!(s.summary, "S1\n**Next**\nnot heading");
        assert_eq!(s.next, "N1\n#### Risks\nR");
        assert_eq!(s.risks, "");
    }

    #[test]
    fn crlf_and_empty() {
        let s = extract("Summary\r\nok\r\nNext:\r\nmore");
        assert_eq!((s.summary.as_str(), s.next.as_str()), ("ok", "more"));
        assert_eq!(extract("   "), Sections::default());
    }

    #[test]
    fn report_maps_sections() {
        let r = report("## Summary\nS\n## Artifacts\nA\n## Risks\nR\n## Next\nN").unwrap();
        assert_eq!(r, serde_json::json!({"summary": "S", "details": "A", "issues": "R", "notes": "N"}));
        assert_eq!(report("no headings here"), None);
    }
}
