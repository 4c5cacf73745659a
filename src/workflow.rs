//! Workflows: definitions (the built-in `roocode-boomerang` and the user's), their validation,
//! and step timeouts. Pure: runs live in `store::workflow`, their progress in `dispatch`.

pub mod handoff;
pub mod runs;

use serde::Serialize;
use serde_json::Value;

use crate::config::Config;
use crate::error::{Error, Result};

/// The built-in workflow's id (protected like the built-in profiles).
pub const BOOMERANG: &str = "roocode-boomerang";

/// One step of a definition.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepDef {
    pub id: String,
    pub title: String,
    pub worker_id: String,
    pub prompt: String,
    pub carry: bool,
    pub timeout_ms: Option<i64>,
}

/// A workflow definition.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowDef {
    pub id: String,
    pub name: String,
    pub description: String,
    pub steps: Vec<StepDef>,
    /// Run every step in one git worktree of the run, in order (`isolation`).
    pub isolation: crate::state::Isolation,
    /// "built-in", "global" or "project".
    pub origin: String,
}

const HANDOFF: &str = "Answer under these headings, in this order: ## Summary (what you did or found, briefly), \
## Actions (what you ran or changed), ## Artifacts (files, commands, links), ## Risks (what could be wrong), \
## Next (what should happen next).";

fn step(id: &str, title: &str, worker: &str, prompt: String) -> StepDef {
    StepDef { id: id.into(), title: title.into(), worker_id: worker.into(), prompt, carry: true, timeout_ms: None }
}

/// The built-in `roocode-boomerang`: plan, implement, review, fix, each passing its handoff on.
pub fn boomerang() -> WorkflowDef {
    WorkflowDef {
        id: BOOMERANG.into(),
        name: "RooCode Boomerang".into(),
        description: "Plan, implement, review, and fix in a tight loop with bounded carry.".into(),
        isolation: crate::state::Isolation::None,
        steps: vec![
            step(
                "plan",
                "Plan",
                "architect",
                format!(
                    "Task:\n{{task}}\n\nMake a plan for this task: a checklist of 3 to 6 concrete steps, each small \
                     enough to implement and verify on its own. Do not write the code yet.\n\n{HANDOFF}"
                ),
            ),
            step(
                "implement",
                "Implement",
                "coder",
                format!(
                    "Task:\n{{task}}\n\nPlan:\n{{carry}}\n\nCarry out the plan: make the changes, run what checks \
                     you can, and note anything you could not finish.\n\n{HANDOFF}"
                ),
            ),
            step(
                "review",
                "Review",
                "architect",
                format!(
                    "Implementation:\n{{carry}}\n\nReview this implementation against the task and the plan. List \
                     concrete issues (file, what is wrong, how to fix it), or say 'no issues'.\n\n{HANDOFF}"
                ),
            ),
            step(
                "fix",
                "Fix",
                "coder",
                format!(
                    "Review:\n{{carry}}\n\nFix what the review found, and verify each fix. If the review found no \
                     issues, answer 'No changes needed'.\n\n{HANDOFF}"
                ),
            ),
        ],
        origin: "built-in".into(),
    }
}

/// All definitions: the built-in first, then the configured ones (already merged by id across
/// config layers) in config order. Empty when `workflows.enabled` is false. A configured
/// definition with the built-in's id is ignored with a warning.
pub fn definitions(cfg: &Config, origin_of: impl Fn(&str) -> String) -> Result<(Vec<WorkflowDef>, Vec<String>)> {
    if !cfg.workflows.enabled {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut defs = vec![boomerang()];
    let mut warnings = Vec::new();
    for (i, v) in cfg.workflows.definitions.iter().enumerate() {
        let def = parse(v, i, &origin_of)?;
        if def.id == BOOMERANG {
            warnings.push(format!(
                "Workflow \"{BOOMERANG}\" is built-in and cannot be overridden; ignoring the configured one."
            ));
            continue;
        }
        defs.push(def);
    }
    Ok((defs, warnings))
}

fn bad(msg: String) -> Error {
    Error::Invalid(msg)
}

fn str_field(obj: &serde_json::Map<String, Value>, key: &str, what: &str) -> Result<Option<String>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(bad(format!("{what}: \"{key}\" must be a string, found {other}"))),
    }
}

/// Parse one configured definition, applying the documented defaults (title = id, workerId
/// `coder`, prompt `Task:\n{task}`, carry false).
fn parse(v: &Value, index: usize, origin_of: &impl Fn(&str) -> String) -> Result<WorkflowDef> {
    let where_ = format!("workflows.definitions[{index}]");
    let obj = v.as_object().ok_or_else(|| bad(format!("{where_} must be an object")))?;
    let id = str_field(obj, "id", &where_)?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad(format!("{where_}: \"id\" is required")))?
        .to_lowercase();
    if !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(bad(format!("Workflow id \"{id}\" must match ^[a-z0-9-]+$")));
    }
    let what = format!("workflow \"{id}\"");
    let steps_v = match obj.get("steps") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(other) => return Err(bad(format!("{what}: \"steps\" must be an array, found {other}"))),
    };
    let mut steps = Vec::with_capacity(steps_v.len());
    for (j, s) in steps_v.iter().enumerate() {
        let swhere = format!("{what}, step {j}");
        let so = s.as_object().ok_or_else(|| bad(format!("{swhere} must be an object")))?;
        let sid = str_field(so, "id", &swhere)?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad(format!("{swhere}: \"id\" is required")))?;
        let carry = match so.get("carry") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => return Err(bad(format!("{swhere}: \"carry\" must be true or false, found {other}"))),
        };
        let timeout_ms = match so.get("timeoutMs") {
            None | Some(Value::Null) => None,
            Some(n) => Some(n.as_f64().ok_or_else(|| bad(format!("{swhere}: \"timeoutMs\" must be a number")))? as i64),
        };
        steps.push(StepDef {
            title: str_field(so, "title", &swhere)?.unwrap_or_else(|| sid.clone()),
            worker_id: str_field(so, "workerId", &swhere)?.unwrap_or_else(|| "coder".into()).to_lowercase(),
            prompt: str_field(so, "prompt", &swhere)?.unwrap_or_else(|| "Task:\n{task}".into()),
            id: sid,
            carry,
            timeout_ms,
        });
    }
    Ok(WorkflowDef {
        name: str_field(obj, "name", &what)?.unwrap_or_else(|| id.clone()),
        description: str_field(obj, "description", &what)?.unwrap_or_default(),
        isolation: match str_field(obj, "isolation", &what)?.as_deref() {
            None | Some("none") => crate::state::Isolation::None,
            Some("worktree") => crate::state::Isolation::Worktree,
            Some(other) => {
                return Err(bad(format!("{what}: \"isolation\" must be \"none\" or \"worktree\", found \"{other}\"")));
            }
        },
        origin: origin_of(&id),
        id,
        steps,
    })
}

/// A step's timeout: its own `timeoutMs` if > 0, else `perStepTimeoutMs`; capped at
/// `perStepTimeoutMs`; floored at 1 000.
pub fn step_timeout(step_timeout_ms: Option<i64>, per_step_timeout_ms: i64) -> i64 {
    let t = step_timeout_ms.filter(|t| *t > 0).unwrap_or(per_step_timeout_ms);
    t.min(per_step_timeout_ms).max(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_timeout_golden_values() {
        assert_eq!(step_timeout(Some(999_999), 5000), 5000);
        assert_eq!(step_timeout(None, 5000), 5000);
        assert_eq!(step_timeout(Some(10), 5000), 1000);
        assert_eq!(step_timeout(Some(-1), 5000), 5000);
        assert_eq!(step_timeout(Some(3000), 5000), 3000);
    }

    #[test]
    fn boomerang_has_the_documented_shape() {
        let b = boomerang();
        assert_eq!(b.name, "RooCode Boomerang");
        assert_eq!(b.description, "Plan, implement, review, and fix in a tight loop with bounded carry.");
        let shape: Vec<(&str, &str, &str, bool)> =
            b.steps.iter().map(|s| (s.id.as_str(), s.title.as_str(), s.worker_id.as_str(), s.carry)).collect();
        assert_eq!(
            shape,
            [
                ("plan", "Plan", "architect", true),
                ("implement", "Implement", "coder", true),
                ("review", "Review", "architect", true),
                ("fix", "Fix", "coder", true)
            ]
        );
        assert!(b.steps[0].prompt.starts_with("Task:\n{task}"));
        assert!(b.steps[1].prompt.starts_with("Task:\n{task}\n\nPlan:\n{carry}"));
        assert!(b.steps[2].prompt.starts_with("Implementation:\n{carry}"));
        assert!(b.steps[3].prompt.starts_with("Review:\n{carry}"));
        for s in &b.steps {
            for h in ["Summary", "Actions", "Artifacts", "Risks", "Next"] {
                assert!(s.prompt.contains(&format!("## {h}")), "{} lacks {h}", s.id);
            }
        }
    }

    #[test]
    fn user_definitions_get_defaults_and_cannot_replace_the_builtin() {
        let mut cfg = Config::default();
        cfg.workflows.definitions = vec![
            serde_json::json!({"id": "Two", "steps": [{"id": "a"}, {"id": "b", "title": "B", "workerId": "docs", "carry": true, "timeoutMs": 5000}]}),
            serde_json::json!({"id": BOOMERANG, "steps": []}),
        ];
        let (defs, warnings) = definitions(&cfg, |_| "project".into()).unwrap();
        assert_eq!(defs.len(), 2);
        let two = &defs[1];
        assert_eq!((two.id.as_str(), two.name.as_str(), two.origin.as_str()), ("two", "two", "project"));
        assert_eq!(
            two.steps[0],
            StepDef {
                id: "a".into(),
                title: "a".into(),
                worker_id: "coder".into(),
                prompt: "Task:\n{task}".into(),
                carry: false,
                timeout_ms: None
            }
        );
        assert_eq!((two.steps[1].title.as_str(), two.steps[1].carry, two.steps[1].timeout_ms), ("B", true, Some(5000)));
        assert_eq!(warnings.len(), 1);
        cfg.workflows.enabled = false;
        assert!(definitions(&cfg, |_| "x".into()).unwrap().0.is_empty());
    }

    #[test]
    fn bad_definitions_are_clear_errors() {
        let mut cfg = Config::default();
        cfg.workflows.definitions = vec![serde_json::json!({"id": "x", "steps": [{"title": "no id"}]})];
        let e = definitions(&cfg, |_| String::new()).unwrap_err().to_string();
        assert!(e.contains("workflow \"x\", step 0") && e.contains("\"id\" is required"), "{e}");
        cfg.workflows.definitions = vec![serde_json::json!({"id": "bad id"})];
        assert!(definitions(&cfg, |_| String::new()).unwrap_err().to_string().contains("must match"));
    }
}
