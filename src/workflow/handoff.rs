//! Handoff sections and the carry: the structured answer a worker gives (Summary, Actions, Artifacts,
//! Risks, Next) and the bounded text that carries it to later steps (SPEC 8.1). Pure text functions, no IO.
//!
//! All lengths are counted in Unicode scalar values (`char`s), and no function ever splits one.

/// The five handoff sections of one response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sections {
    /// The Summary section (or the whole text when there is no heading, or Actions when Summary is empty).
    pub summary: String,
    /// The Actions section (never carried).
    pub actions: String,
    /// The Artifacts section.
    pub artifacts: String,
    /// The Risks section.
    pub risks: String,
    /// The Next section.
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

/// Appended to text cut by [`truncate`] (15 chars).
pub const TRUNCATION_SUFFIX: &str = "\n...(truncated)";

/// Length of [`TRUNCATION_SUFFIX`] in chars.
const SUFFIX_CHARS: usize = 15;

/// The carried sections, in carry order, with their base budgets (total 4 300).
const CARRIED: [(&str, usize); 4] = [("Summary", 900), ("Artifacts", 1600), ("Risks", 900), ("Next", 900)];

/// The divisor of the per-section caps: the base total plus 200, on purpose (SPEC 8.1).
const CAP_DIVISOR: usize = 4500;

/// The smallest cap a section or a block is ever cut to.
const MIN_CAP: usize = 60;

/// Length in chars.
fn chars(s: &str) -> usize {
    s.chars().count()
}

/// The first `n` chars of `s` (all of it if shorter).
fn prefix(s: &str, n: usize) -> &str {
    s.char_indices().nth(n).map_or(s, |(i, _)| &s[..i])
}

/// Trim `text`; if it is longer than `max` chars, keep its first `max - 15` chars (none when `max < 15`),
/// trimmed at the end, and append [`TRUNCATION_SUFFIX`]. The result has at most `max` chars whenever
/// `max >= 15`; below that a cut text is the suffix alone.
pub fn truncate(text: &str, max: usize) -> String {
    let text = text.trim();
    if chars(text) <= max {
        return text.to_string();
    }
    let mut out = prefix(text, max.saturating_sub(SUFFIX_CHARS)).trim_end().to_string();
    out.push_str(TRUNCATION_SUFFIX);
    out
}

/// A step's carry block and what was cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The block: `### <step title>\n` followed by its `#### <Section>` blocks.
    pub text: String,
    /// Whether anything was cut: a section over its cap, the whole-response fallback, or the block as a whole.
    pub truncated: bool,
    /// The carried sections cut to their per-section cap, in carry order (`"Summary"`, `"Artifacts"`,
    /// `"Risks"`, `"Next"`).
    pub truncated_sections: Vec<&'static str>,
}

/// The carry block of one step's `response` (SPEC 8.1 compact + carry block), at most `max_carry_chars`
/// chars long whenever `max_carry_chars >= 15`.
///
/// Each non-empty carried section (Summary, Artifacts, Risks, Next; never Actions) is cut to
/// `max(60, base * min(max_carry_chars, 4500) / 4500)` chars and becomes `#### <Section>\n<content>`; when
/// all are empty the only block is `#### Summary\n` plus the whole response cut to
/// `max(240, max_carry_chars / 4)` chars, or `None`. The result is `### <step title>\n` plus the blocks
/// joined by `\n\n`; the title is used as given. When that is too long, each `#### ` block (heading
/// included) is cut to `max(60, max_carry_chars / (2 * blocks))` chars, and if it is still too long, the
/// whole text is cut to `max_carry_chars`.
pub fn block(step_title: &str, response: &str, max_carry_chars: usize) -> Block {
    let s = extract(response);
    let budget = max_carry_chars.min(CAP_DIVISOR);
    let mut truncated = false;
    let mut truncated_sections = Vec::new();
    let mut blocks = Vec::new();
    for ((name, base), content) in CARRIED.into_iter().zip([&s.summary, &s.artifacts, &s.risks, &s.next]) {
        if content.is_empty() {
            continue;
        }
        let cap = MIN_CAP.max(base * budget / CAP_DIVISOR);
        let content = if chars(content) > cap {
            truncated_sections.push(name);
            truncate(content, cap)
        } else {
            content.clone()
        };
        blocks.push(format!("#### {name}\n{content}"));
    }
    if blocks.is_empty() {
        let limit = 240.max(max_carry_chars / 4);
        let whole = truncate(response, limit);
        truncated |= chars(response.trim()) > limit;
        blocks.push(format!("#### Summary\n{}", if whole.is_empty() { "None" } else { &whole }));
    }
    truncated |= !truncated_sections.is_empty();
    let build = |blocks: &[String]| format!("### {step_title}\n{}", blocks.join("\n\n"));
    let mut text = build(&blocks);
    if chars(&text) > max_carry_chars {
        truncated = true;
        let reduced_cap = MIN_CAP.max(max_carry_chars / (blocks.len() * 2));
        let reduced: Vec<String> = blocks.iter().map(|b| truncate(b, reduced_cap)).collect();
        text = build(&reduced);
        if chars(&text) > max_carry_chars {
            text = truncate(&text, max_carry_chars);
        }
    }
    Block { text, truncated, truncated_sections }
}

/// Whether a line starting at byte `i` of `s` begins with `###` followed by whitespace.
fn starts_step(s: &str, i: usize) -> bool {
    s[i..].strip_prefix("###").and_then(|r| r.chars().next()).is_some_and(char::is_whitespace)
}

/// Split a carry into its step blocks (SPEC 8.1 split carry): trimmed; none when empty; one block when it
/// has no `"### "`; otherwise cut before each line starting with `###` and whitespace (so `####` does not
/// cut), each piece trimmed and empty ones dropped. Known quirk, kept: a `### ` line inside a section starts
/// a new block here.
pub fn split_carry(carry: &str) -> Vec<String> {
    let carry = carry.trim();
    if carry.is_empty() {
        return Vec::new();
    }
    if !carry.contains("### ") {
        return vec![carry.to_string()];
    }
    let mut out = Vec::new();
    let mut start = 0;
    let cuts = carry.match_indices('\n').map(|(i, _)| i + 1).filter(|&i| starts_step(carry, i));
    for cut in cuts.chain([carry.len()]) {
        let piece = carry[start..cut].trim();
        if !piece.is_empty() {
            out.push(piece.to_string());
        }
        start = cut;
    }
    out
}

/// The carry after [`append`], and what was cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The new carry, at most `max_carry_chars` chars long whenever `max_carry_chars >= 15`.
    pub text: String,
    /// How many of the oldest blocks were dropped.
    pub dropped: usize,
    /// Whether anything was cut: blocks dropped, or the remaining text truncated.
    pub truncated: bool,
}

/// Append a step's `block` to `carry` (SPEC 8.1 append). The blocks are those of [`split_carry`] on `carry`
/// followed by `block` (trimmed, kept whole, left out when empty); while their `\n\n`-joined text is longer
/// than `max_carry_chars` and more than one block remains, the oldest is dropped; if the last one alone is
/// still too long, it is cut with [`truncate`].
pub fn append(carry: &str, block: &str, max_carry_chars: usize) -> Appended {
    let mut blocks = split_carry(carry);
    let block = block.trim();
    if !block.is_empty() {
        blocks.push(block.to_string());
    }
    let lens: Vec<usize> = blocks.iter().map(|b| chars(b)).collect();
    let mut total = lens.iter().sum::<usize>() + 2 * lens.len().saturating_sub(1);
    let mut dropped = 0;
    while total > max_carry_chars && blocks.len() - dropped > 1 {
        total -= lens[dropped] + 2;
        dropped += 1;
    }
    let joined = blocks[dropped..].join("\n\n");
    if total <= max_carry_chars {
        Appended { text: joined, dropped, truncated: dropped > 0 }
    } else {
        Appended { text: truncate(&joined, max_carry_chars), dropped, truncated: true }
    }
}

/// Fill a step prompt: replace every `{task}` with `task`, then every `{carry}` in the result with
/// `carry`; other braces stay. Because the passes run in that order, a `{carry}` inside `task` is
/// replaced by the carry too, while a `{task}` inside `carry` stays as it is.
pub fn template(prompt: &str, task: &str, carry: &str) -> String {
    prompt.replace("{task}", task).replace("{carry}", carry)
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

    #[test]
    fn golden_truncate() {
        assert_eq!(truncate("  abcdefghijklmnopqrstuvwxyz  ", 20), "abcde\n...(truncated)");
    }

    #[test]
    fn truncate_edges() {
        assert_eq!(TRUNCATION_SUFFIX.chars().count(), 15);
        assert_eq!(truncate("  short  ", 5), "short");
        assert_eq!(truncate("abcdef", 3), TRUNCATION_SUFFIX);
        assert_eq!(truncate("ab   cdefghijklmnopqrstuvwxyz", 20), "ab\n...(truncated)");
        assert_eq!(truncate("ééééééééééééééééééééé", 17), "éé\n...(truncated)");
    }

    #[test]
    fn golden_block_all_sections() {
        let b = block(
            "Step One",
            "## Summary\n- did\n## Actions\n- act\n## Artifacts\n- f.ts\n## Risks\nNone\n## Next\n- review",
            24000,
        );
        assert_eq!(
            b.text,
            "### Step One\n#### Summary\n- did\n\n#### Artifacts\n- f.ts\n\n#### Risks\nNone\n\n#### Next\n- review"
        );
        assert!(!b.truncated);
        assert!(b.truncated_sections.is_empty());
    }

    #[test]
    fn golden_block_fallbacks() {
        assert_eq!(block("T", "", 24000).text, "### T\n#### Summary\nNone");
        assert_eq!(block("T", "plain response", 24000).text, "### T\n#### Summary\nplain response");
        assert!(!block("T", "", 24000).truncated);
    }

    #[test]
    fn golden_block_section_cap() {
        let b = block("Step 1", &format!("## Summary\n{}", "a".repeat(2000)), 200);
        assert_eq!(b.text, format!("### Step 1\n#### Summary\n{}\n...(truncated)", "a".repeat(45)));
        assert!(b.truncated);
        assert_eq!(b.truncated_sections, vec!["Summary"]);
    }

    #[test]
    fn golden_block_four_sections_at_100() {
        let x = "x".repeat(500);
        let response = format!("## Summary\n{x}\n## Artifacts\n{x}\n## Risks\n{x}\n## Next\n{x}");
        let b = block("T", &response, 100);
        assert_eq!(b.text.chars().count(), 100);
        assert!(b.text.ends_with(TRUNCATION_SUFFIX));
        assert!(b.truncated);
        assert_eq!(b.truncated_sections, vec!["Summary", "Artifacts", "Risks", "Next"]);
    }

    #[test]
    fn block_caps_use_integer_arithmetic() {
        // Artifacts at max 3000: 1600 * 3000 / 4500 = 1066 (exactly 1066.67); Summary: 900 * 3000 / 4500 = 600.
        let response = format!("## Summary\n{}\n## Artifacts\n{}", "s".repeat(600), "a".repeat(1067));
        let b = block("T", &response, 3000);
        assert_eq!(b.truncated_sections, vec!["Artifacts"]);
        let art = b.text.split("#### Artifacts\n").nth(1).unwrap();
        assert_eq!(art.chars().count(), 1066);
        // Caps stop growing at 4500: Summary cap is 900 for any larger max.
        let b = block("T", &format!("Summary\n{}", "s".repeat(901)), 100_000);
        assert_eq!(b.truncated_sections, vec!["Summary"]);
        assert!(!block("T", &format!("Summary\n{}", "s".repeat(900)), 100_000).truncated);
    }

    #[test]
    fn block_fallback_keeps_actions_only_inside_whole_response() {
        // Headings seen, every carried section empty: the whole response is the Summary.
        let b = block("T", "intro\n## Next", 24000);
        assert_eq!(b.text, "### T\n#### Summary\nintro\n## Next");
        // Actions promoted to Summary.
        let b = block("T", "## Actions\n- did x", 24000);
        assert_eq!(b.text, "### T\n#### Summary\n- did x");
        // The fallback is cut to max(240, max / 4) and reported as truncated.
        let long = format!("{}\n## Next", "p".repeat(300));
        let b = block("T", &long, 400);
        assert_eq!(b.text, format!("### T\n#### Summary\n{}\n...(truncated)", "p".repeat(225)));
        assert!(b.truncated);
        assert!(b.truncated_sections.is_empty());
    }

    #[test]
    fn block_reduced_cap_pass() {
        // Four sections of 59 chars each stay under their caps (60, 92, 60, 60) but the 297-char block is too
        // long for 260: each `####` block is cut to max(60, 260 / 8) = 60 chars, giving 252.
        let x = "x".repeat(59);
        let response = format!("Summary\n{x}\nArtifacts\n{x}\nRisks\n{x}\nNext\n{x}");
        assert_eq!(block("T", &response, 297).text.chars().count(), 297);
        let b = block("T", &response, 260);
        assert!(b.truncated);
        assert!(b.truncated_sections.is_empty());
        let parts: Vec<&str> = b.text.strip_prefix("### T\n").unwrap().split("\n\n").collect();
        assert_eq!(parts.len(), 4);
        for p in &parts {
            assert_eq!(p.chars().count(), 60);
            assert!(p.ends_with(TRUNCATION_SUFFIX));
        }
        assert_eq!(b.text.chars().count(), 252);
    }

    #[test]
    fn block_tiny_max_does_not_panic() {
        for max in 0..20 {
            let b = block("Title", "## Summary\nlong enough text to cut", max);
            if max >= 15 {
                assert!(b.text.chars().count() <= max);
            }
        }
    }

    #[test]
    fn golden_append_drops_oldest() {
        let a = append(&format!("### Old\n#### Summary\n{}", "a".repeat(300)), "### Step 1\n#### Summary\nNew", 150);
        assert_eq!(a, Appended { text: "### Step 1\n#### Summary\nNew".into(), dropped: 1, truncated: true });
    }

    #[test]
    fn golden_append_joins() {
        let a = append("### A\n#### Summary\nx", "### B\n#### Summary\ny", 1000);
        assert_eq!(
            a,
            Appended { text: "### A\n#### Summary\nx\n\n### B\n#### Summary\ny".into(), dropped: 0, truncated: false }
        );
    }

    #[test]
    fn golden_append_truncates_last() {
        let a = append("", &format!("### B\n#### Summary\n{}", "y".repeat(300)), 100);
        assert_eq!(a.text.chars().count(), 100);
        assert!(a.text.ends_with("\n...(truncated)"));
        assert_eq!(a.dropped, 0);
        assert!(a.truncated);
    }

    #[test]
    fn append_empty_inputs() {
        assert_eq!(append("", "", 100), Appended { text: String::new(), dropped: 0, truncated: false });
        assert_eq!(append("  ### A\nx  ", "  ", 100).text, "### A\nx");
    }

    #[test]
    fn split_carry_rules() {
        assert!(split_carry(" \n ").is_empty());
        assert_eq!(split_carry("no step heading\n###\tx"), vec!["no step heading\n###\tx"]);
        assert_eq!(split_carry("### A\n#### Summary\nx\n\n### B\ny"), vec!["### A\n#### Summary\nx", "### B\ny"]);
        assert_eq!(split_carry("lead\n### A\nx\n###\tB\n ### C"), vec!["lead", "### A\nx", "###\tB\n ### C"]);
        // Known quirk, kept: a `### ` line inside a section starts a new block.
        assert_eq!(split_carry("### A\n#### Next\n### not a step"), vec!["### A\n#### Next", "### not a step"]);
    }

    #[test]
    fn golden_template() {
        assert_eq!(template("T={task} C={carry} {task} {other}", "X", "Y"), "T=X C=Y X {other}");
    }

    #[test]
    fn template_pass_order() {
        assert_eq!(template("{task}|{carry}", "a{carry}", "c{task}"), "ac{task}|c{task}");
        assert_eq!(template("{{task}} {carry", "t", "c"), "{t} {carry");
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    const NAMES: [&str; 7] = ["Summary", "Actions", "Artifacts", "Risks", "Next", "SUMMARY", "actions"];

    /// One line: free Unicode text, `#` lines, heading lines (valid and not), or a long run.
    fn line() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => "[^\n]{0,40}",
            1 => "[ \t]{0,2}#{1,5}[ \t]?[a-zé#]{0,6}",
            2 => (r"[ \t]{0,2}(#{1,4}[ \t]?)?", prop::sample::select(&NAMES[..]), r"[ \t]?:?[ \t]?")
                .prop_map(|(a, n, b)| format!("{a}{n}{b}")),
            1 => ("[a€𝄞 \n]", 0usize..1800).prop_map(|(c, n)| c.repeat(n)),
        ]
    }

    fn text() -> impl Strategy<Value = String> {
        (prop::collection::vec(line(), 0..24), any::<bool>())
            .prop_map(|(lines, crlf)| lines.join(if crlf { "\r\n" } else { "\n" }))
    }

    fn is_suffix_cut(out: &str, input: &str, max: usize) -> bool {
        let t = input.trim();
        match out.strip_suffix(TRUNCATION_SUFFIX) {
            Some(p) => t.starts_with(p) && p.chars().count() <= max.saturating_sub(15) && t.chars().count() > max,
            None => false,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn truncate_is_a_char_prefix(s in text(), max in 0usize..3000) {
            let out = truncate(&s, max);
            if s.trim().chars().count() <= max {
                prop_assert_eq!(out.as_str(), s.trim());
            } else {
                prop_assert!(is_suffix_cut(&out, &s, max));
            }
            if max >= 15 {
                prop_assert!(out.chars().count() <= max);
            }
        }

        #[test]
        fn block_fits_and_never_carries_actions(title in "[^\n]{0,30}", s in text(), max in 15usize..5000) {
            let b = block(&title, &s, max);
            prop_assert!(b.text.chars().count() <= max, "{} > {}", b.text.chars().count(), max);
            prop_assert!(b.text.starts_with("### ") || b.text.ends_with(TRUNCATION_SUFFIX));
            let order: Vec<&str> = CARRIED.iter().map(|c| c.0).filter(|n| b.truncated_sections.contains(n)).collect();
            prop_assert_eq!(&order, &b.truncated_sections);
            if !b.truncated_sections.is_empty() {
                prop_assert!(b.truncated);
            }
            // Lines equal to `#### Actions` are never made here; they can only be copied from the response.
            let copied = s.split('\n').any(|l| l.trim().starts_with("#### Actions"));
            if !copied {
                prop_assert!(!b.text.split('\n').any(|l| l == "#### Actions"));
            }
        }

        #[test]
        fn actions_text_only_when_promoted(pre in text(), act in text(), post in text(), max in 15usize..5000) {
            const MARK: &str = "\u{2603}ACTION-MARK\u{2603}";
            prop_assume!(!pre.contains(MARK) && !act.contains(MARK) && !post.contains(MARK));
            let response = format!("{pre}\n## Actions\n{MARK}\n{act}\n{post}");
            let s = extract(&response);
            let b = block("T", &response, max);
            if b.text.contains(MARK) {
                prop_assert_eq!(&s.summary, &s.actions, "Actions text carried without promotion");
            }
        }

        #[test]
        fn append_fits_and_drops_oldest_first(old in text(), new in text(), max in 15usize..5000) {
            let a = append(&old, &new, max);
            prop_assert!(a.text.chars().count() <= max);
            let mut all = split_carry(&old);
            if !new.trim().is_empty() {
                all.push(new.trim().to_string());
            }
            prop_assert!(a.dropped <= all.len());
            let joined = all[a.dropped..].join("\n\n");
            if a.text == joined {
                prop_assert_eq!(a.truncated, a.dropped > 0);
            } else {
                prop_assert!(a.truncated);
                prop_assert!(all.len() - a.dropped <= 1);
                prop_assert!(is_suffix_cut(&a.text, &joined, max));
            }
            if a.dropped > 0 {
                // Dropping one fewer would not have fitted.
                prop_assert!(all[a.dropped - 1..].join("\n\n").chars().count() > max);
            }
        }

        #[test]
        fn carry_chain_keeps_a_suffix_of_steps(bodies in prop::collection::vec(text(), 1..8), max in 15usize..3000) {
            let mut carry = String::new();
            for (i, body) in bodies.iter().enumerate() {
                let b = block(&format!("Step-{i}-end"), body, max);
                let a = append(&carry, &b.text, max);
                prop_assert!(a.text.chars().count() <= max);
                carry = a.text;
            }
            let kept: Vec<usize> = (0..bodies.len()).filter(|i| carry.contains(&format!("### Step-{i}-end\n"))).collect();
            if let (Some(first), Some(last)) = (kept.first(), kept.last()) {
                prop_assert_eq!(kept.len(), last - first + 1, "kept steps are not contiguous: {:?}", kept);
            }
        }

        #[test]
        fn split_carry_pieces_are_trimmed(s in text()) {
            for p in split_carry(&s) {
                prop_assert!(!p.is_empty());
                prop_assert_eq!(p.trim(), p.as_str());
            }
        }

        #[test]
        fn no_panics_at_tiny_max(title in "[^\n]{0,10}", s in text(), max in 0usize..15) {
            let b = block(&title, &s, max);
            let _ = append(&s, &b.text, max);
            let _ = template(&s, &title, &b.text);
        }
    }
}
