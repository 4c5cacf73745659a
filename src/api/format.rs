//! Markdown tables for people (SPEC 4 `task_list`): each column as wide as its widest cell.

use crate::agent::profile::Profile;
use crate::job::{Record, iso};
use crate::store::workers::WorkerRow;

/// Escape a cell: `|` escaped, newlines turned into spaces.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace("\r\n", " ").replace(['\n', '\r'], " ")
}

/// Render a table: header `| h1 | h2 |`, separator of dashes to the column width, cells padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(|c| cell(c)).collect()).collect();
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| rows.iter().map(|r| r[i].chars().count()).chain([h.chars().count()]).max().unwrap_or(0))
        .collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> =
            cells.iter().zip(&widths).map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count()))).collect();
        format!("| {} |", padded.join(" | "))
    };
    let mut out = vec![line(headers.iter().map(|h| h.to_string()).collect())];
    out.push(line(widths.iter().map(|w| "-".repeat(*w)).collect()));
    out.extend(rows.into_iter().map(line));
    out.join("\n")
}

/// First 60 chars with whitespace runs collapsed.
fn message(s: &str) -> String {
    let collapsed = s.split_whitespace().collect::<Vec<_>>().join(" ");
    collapsed.chars().take(60).collect()
}

pub fn tasks_table(records: &[Record]) -> String {
    if records.is_empty() {
        return "No tasks recorded yet.".into();
    }
    // A Labels column only when some task has labels.
    let labeled = records.iter().any(|r| r.labels.is_some());
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            let mut row = vec![
                r.id.clone(),
                r.worker_id.clone(),
                r.status.to_string(),
                r.started_at.clone().unwrap_or_default(),
                r.duration_ms.map(|d| d.to_string()).unwrap_or_default(),
            ];
            if labeled {
                let pairs = r.labels.iter().flatten().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()));
                row.push(pairs.collect::<Vec<_>>().join(" "));
            }
            row.push(message(&r.message));
            row
        })
        .collect();
    let head: &[&str] = if labeled {
        &["Task", "Worker", "Status", "Started", "ms", "Labels", "Message"]
    } else {
        &["Task", "Worker", "Status", "Started", "ms", "Message"]
    };
    table(head, &rows)
}

pub fn workers_table(workers: &[WorkerRow]) -> String {
    if workers.is_empty() {
        return "No workers are currently registered.".into();
    }
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|w| {
            vec![
                w.id.clone(),
                w.profile.clone(),
                w.kind.to_string(),
                w.state.to_string(),
                w.model.clone().unwrap_or_default(),
                w.pid.map(|p| p.to_string()).unwrap_or_default(),
                match w.jobs().as_slice() {
                    [] => String::new(),
                    [one] => one.clone(),
                    [first, rest @ ..] => format!("{first} (+{} more)", rest.len()),
                },
                iso(w.started_ms),
                iso(w.last_activity_ms),
            ]
        })
        .collect();
    table(&["Worker", "Profile", "Kind", "Status", "Model", "Pid", "Job", "Started", "Last activity"], &rows)
}

pub fn profiles_table(profiles: &[Profile]) -> String {
    if profiles.is_empty() {
        return "No profiles available.".into();
    }
    let yn = |b: bool| if b { "yes" } else { "no" }.to_string();
    let rows: Vec<Vec<String>> = profiles
        .iter()
        .map(|p| {
            vec![
                p.id.clone(),
                p.name.clone(),
                p.model.clone(),
                yn(p.supports_vision),
                yn(p.supports_web),
                p.purpose.clone(),
            ]
        })
        .collect();
    table(&["ID", "Name", "Model", "Vision", "Web", "Purpose"], &rows)
}

pub fn workflows_table(defs: &[crate::workflow::WorkflowDef]) -> String {
    if defs.is_empty() {
        return "No workflows defined.".into();
    }
    let rows: Vec<Vec<String>> = defs
        .iter()
        .map(|d| vec![d.id.clone(), d.name.clone(), d.steps.len().to_string(), d.description.clone()])
        .collect();
    table(&["ID", "Name", "Steps", "Description"], &rows)
}

pub fn status_view(workers: &[WorkerRow], records: &[Record]) -> String {
    let w = if workers.is_empty() { "(none)".to_string() } else { workers_table(workers) };
    let t = if records.is_empty() { "(none)".to_string() } else { tasks_table(records) };
    format!("# Orchestrator Status\n\n## Workers\n{w}\n\n## Recent Tasks\n{t}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let t = table(&["a", "bb"], &[vec!["xyz".into(), "p|q\nr".into()]]);
        assert_eq!(t, "| a   | bb     |\n| --- | ------ |\n| xyz | p\\|q r |");
    }

    #[test]
    fn message_is_collapsed_and_cut() {
        assert_eq!(message("a \n\t b"), "a b");
        assert_eq!(message(&"x".repeat(100)).len(), 60);
    }

    #[test]
    fn empty_states() {
        assert_eq!(tasks_table(&[]), "No tasks recorded yet.");
        assert_eq!(workers_table(&[]), "No workers are currently registered.");
        assert_eq!(profiles_table(&[]), "No profiles available.");
        assert_eq!(status_view(&[], &[]), "# Orchestrator Status\n\n## Workers\n(none)\n\n## Recent Tasks\n(none)");
    }
}
