//! Durable workflows end to end: the boomerang's carry between real worker processes, trimming,
//! a dispatcher killed mid-run, failures, cancels, and the database refusing illegal run and
//! step states.

use crate::common::{self, TestQueue, wait_for};
use serde_json::{Value, json};

/// A fake agent: figures out which boomerang step it is from its prompt, records the prompt,
/// and answers with a structured handoff whose text depends only on the step. A file
/// `slow-<step>` makes that step sleep; `fail-<step>` makes it exit 7.
fn fake_agent(q: &TestQueue) -> std::path::PathBuf {
    let dir = q.dir.path();
    std::fs::create_dir_all(dir.join("prompts")).unwrap();
    q.script(
        "agent.sh",
        &format!(
            r#"D='{d}'
prompt="$1"
case "$prompt" in
  *"Make a plan"*) step=plan ;;
  *"Carry out the plan"*) step=implement ;;
  *"Review this implementation"*) step=review ;;
  *"Fix what the review found"*) step=fix ;;
  *) step=custom ;;
esac
printf '%s' "$prompt" > "$D/prompts/$step.$BATON_ATTEMPT"
echo "$step start $BATON_ATTEMPT" >> "$D/runs.log"
if [ -e "$D/slow-$step" ]; then sleep 5; fi
if [ -e "$D/fail-$step" ]; then echo "broken $step" >&2; exit 7; fi
printf '## Summary\nsummary of %s\n## Actions\nACTIONS-SECRET-%s\n## Artifacts\n- file-%s.txt\n## Risks\nnone for %s\n## Next\nafter %s\n' \
  "$step" "$step" "$step" "$step" "$step"
echo "$step end $BATON_ATTEMPT" >> "$D/runs.log"
"#,
            d = dir.display()
        ),
    )
}

fn queue_with_agent(extra: Value) -> TestQueue {
    let q = TestQueue::new();
    let agent = fake_agent(&q);
    let mut cfg = common::default_config();
    cfg["runner"] = json!(["sh", agent, "{prompt}"]);
    if let (Some(c), Some(e)) = (cfg.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    std::fs::write(q.project.join(".baton/config.json"), cfg.to_string()).unwrap();
    q
}

/// Point `q`'s runner at the fake agent, keeping the rest of its configuration.
pub(crate) fn use_fake_agent(q: &TestQueue) {
    let agent = fake_agent(q);
    let path = q.project.join(".baton/config.json");
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["runner"] = json!(["sh", agent, "{prompt}"]);
    std::fs::write(path, cfg.to_string()).unwrap();
}

fn prompt(q: &TestQueue, step: &str, attempt: u32) -> String {
    std::fs::read_to_string(q.dir.path().join(format!("prompts/{step}.{attempt}"))).unwrap_or_default()
}

pub(crate) fn runs_log(q: &TestQueue) -> Vec<String> {
    std::fs::read_to_string(q.dir.path().join("runs.log")).unwrap_or_default().lines().map(String::from).collect()
}

pub(crate) fn run_boomerang(q: &TestQueue) -> String {
    let (v, code) = q.json(&["task", "start", "--workflow", "roocode-boomerang", "add a --verbose flag"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["kind"], "workflow");
    assert_eq!(v["workerId"], "workflow:roocode-boomerang");
    v["taskId"].as_str().unwrap().to_string()
}

#[test]
fn boomerang_passes_a_trimmed_structured_carry() {
    let _g = common::heavy();
    let q = queue_with_agent(json!({}));
    q.dispatcher();
    let run = run_boomerang(&q);
    let (v, code) = q.json(&["task", "await", &run, "--timeout", "60000"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["kind"], "workflow");
    let steps = v["report"]["steps"].as_array().unwrap();
    let shape: Vec<(&str, &str, &str)> = steps
        .iter()
        .map(|s| (s["id"].as_str().unwrap(), s["workerId"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        shape,
        [
            ("plan", "architect", "succeeded"),
            ("implement", "coder", "succeeded"),
            ("review", "architect", "succeeded"),
            ("fix", "coder", "succeeded")
        ]
    );
    for s in steps {
        for k in ["id", "title", "workerId", "status", "durationMs", "warning", "error"] {
            assert!(s.as_object().unwrap().contains_key(k), "step lacks {k}");
        }
    }
    assert!(v["responseText"].as_str().unwrap().contains("summary of fix"));

    let implement = prompt(&q, "implement", 1);
    assert!(
        implement.starts_with("Task:\nadd a --verbose flag\n\nPlan:\n### Plan\n#### Summary\nsummary of plan"),
        "{implement}"
    );
    assert!(implement.contains("#### Artifacts\n- file-plan.txt"));
    let review = prompt(&q, "review", 1);
    assert!(review.contains("### Plan\n") && review.contains("### Implement\n#### Summary\nsummary of implement"));
    let fix = prompt(&q, "fix", 1);
    assert!(fix.contains("### Review\n#### Summary\nsummary of review"), "{fix}");
    for step in ["plan", "implement", "review", "fix"] {
        let p = prompt(&q, step, 1);
        assert!(!p.is_empty(), "{step} never ran");
        assert!(!p.contains("#### Actions"), "{step} prompt has an Actions block");
        assert!(!p.contains("ACTIONS-SECRET"), "{step} prompt carries Actions text");
    }
    // The run's carry is stored, and `workflow show` shows the carry that went into each step.
    let (shown, _) = q.json(&["workflow", "show", &run]);
    let carry = shown["carry"].as_str().unwrap();
    assert!(carry.starts_with("### Plan\n") && carry.contains("### Fix\n"));
    assert_eq!(shown["steps"][0]["carryIn"], "");
    assert!(shown["steps"][1]["carryIn"].as_str().unwrap().starts_with("### Plan"));
    let text = q.ok(&["workflow", "show", &run[..8]]);
    assert!(text.contains("## Step 1 Implement (coder, succeeded)") && text.contains("carry in:\n### Plan"), "{text}");
    // Each step ran exactly once.
    assert_eq!(runs_log(&q).iter().filter(|l| l.contains(" start ")).count(), 4);
}

#[test]
fn a_carry_over_max_carry_chars_is_trimmed() {
    let _g = common::heavy();
    let q = queue_with_agent(json!({"workflows": {"limits": {"maxCarryChars": 150}}}));
    q.dispatcher();
    let run = run_boomerang(&q);
    let (v, _) = q.json(&["task", "await", &run, "--timeout", "60000"]);
    assert_eq!(v["status"], "succeeded", "{v}");
    let (shown, _) = q.json(&["workflow", "show", &run]);
    let carry = shown["carry"].as_str().unwrap();
    assert!(carry.chars().count() <= 150, "{} chars", carry.chars().count());
    assert!(carry.starts_with("### Fix"), "older blocks dropped first: {carry}");
    let warned = v["report"]["steps"].as_array().unwrap().iter().any(|s| s["warning"].as_str().is_some());
    assert!(warned, "a trimmed carry is reported: {v}");
    for step in ["implement", "review", "fix"] {
        let p = prompt(&q, step, 1);
        assert!(!p.contains("#### Actions"));
    }
}

#[test]
fn kill_9_of_the_dispatcher_mid_run_then_restart_completes_it() {
    let _g = common::heavy();
    // The reference: an uninterrupted run with the same worker outputs.
    let reference = {
        let q = queue_with_agent(json!({}));
        q.dispatcher();
        let run = run_boomerang(&q);
        let (v, _) = q.json(&["task", "await", &run, "--timeout", "60000"]);
        assert_eq!(v["status"], "succeeded");
        let (shown, _) = q.json(&["workflow", "show", &run]);
        shown["carry"].as_str().unwrap().to_string()
    };
    let q = queue_with_agent(json!({"jobs": {"retryBackoffMs": 100, "killGraceMs": 300}}));
    std::fs::write(q.dir.path().join("slow-implement"), "").unwrap();
    let first = q.dispatcher();
    let run = run_boomerang(&q);
    wait_for(60, "step 2 to start", || runs_log(&q).iter().any(|l| l == "implement start 1"));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    std::fs::remove_file(q.dir.path().join("slow-implement")).unwrap();
    q.dispatcher();
    let (v, code) = q.json(&["task", "await", &run, "--timeout", "60000"]);
    assert_eq!((v["status"].as_str(), code), (Some("succeeded"), 0), "{v}");
    let log = runs_log(&q);
    let starts = |step: &str| log.iter().filter(|l| l.starts_with(&format!("{step} start"))).count();
    assert_eq!(starts("plan"), 1, "{log:?}");
    assert!((1..=2).contains(&starts("implement")), "{log:?}");
    assert_eq!(starts("review"), 1, "{log:?}");
    assert_eq!(starts("fix"), 1, "{log:?}");
    assert!(!log.contains(&"implement end 1".to_string()), "the killed attempt never finished: {log:?}");
    let (shown, _) = q.json(&["workflow", "show", &run]);
    assert_eq!(shown["carry"].as_str().unwrap(), reference, "same carry as an uninterrupted run");
}

#[test]
fn a_failing_step_fails_the_run_and_skips_the_rest() {
    let _g = common::heavy();
    let q = queue_with_agent(json!({}));
    std::fs::write(q.dir.path().join("fail-implement"), "").unwrap();
    q.dispatcher();
    let run = run_boomerang(&q);
    let (v, code) = q.json(&["task", "await", &run, "--timeout", "60000"]);
    assert_eq!((v["status"].as_str(), code), (Some("failed"), 1), "{v}");
    let states: Vec<&str> =
        v["report"]["steps"].as_array().unwrap().iter().map(|s| s["status"].as_str().unwrap()).collect();
    assert_eq!(states, ["succeeded", "failed", "skipped", "skipped"]);
    assert!(v["error"].as_str().unwrap().contains("Step \"Implement\" failed: Worker exited with code 7"), "{v}");
    assert!(prompt(&q, "review", 1).is_empty() && prompt(&q, "fix", 1).is_empty(), "later steps never started");
    assert_eq!(q.scalar_i64("SELECT count(*) FROM jobs"), 2);
}

#[test]
fn canceling_a_run_mid_step_kills_the_worker() {
    let _g = common::heavy();
    let q = queue_with_agent(json!({}));
    std::fs::write(q.dir.path().join("slow-plan"), "").unwrap();
    q.dispatcher();
    let run = run_boomerang(&q);
    wait_for(60, "step 1 to start", || runs_log(&q).iter().any(|l| l == "plan start 1"));
    let (peek, _) = q.json(&["task", "peek", &run]);
    assert_eq!(peek["currentStep"]["id"], "plan", "{peek}");
    assert_eq!(peek["carry"], "");
    let job = peek["currentStep"]["taskId"].as_str().unwrap().to_string();
    let pid: i64 = q.raw().query_row("SELECT pid FROM workers WHERE job_id = ?1", [&job], |r| r.get(0)).unwrap();
    let (v, code) = q.json(&["task", "cancel", &run, "--reason", "enough"]);
    assert_eq!((v["status"].as_str(), code), (Some("canceled"), 0), "{v}");
    assert!(common::is_dead(pid as i32), "the step's worker is dead");
    assert_eq!(q.state(&job), "canceled");
    let states: Vec<&str> =
        v["report"]["steps"].as_array().unwrap().iter().map(|s| s["status"].as_str().unwrap()).collect();
    assert_eq!(states, ["canceled", "canceled", "canceled", "canceled"]);
    assert!(!runs_log(&q).iter().any(|l| l.starts_with("implement")));
}

#[test]
fn bad_workflow_starts_are_clear_errors_with_nothing_written() {
    let q = queue_with_agent(json!({"workflows": {
        "limits": {"maxSteps": 2, "maxTaskChars": 50},
        "definitions": [
            {"id": "three", "steps": [{"id": "a"}, {"id": "b"}, {"id": "c"}]},
            {"id": "ghost", "steps": [{"id": "a", "workerId": "nobody"}]},
            {"id": "empty", "name": "Empty"}
        ]
    }}));
    let cases: [(&[&str], &str); 5] = [
        (&["task", "start", "--workflow", "nope", "x"], "Unknown workflow \"nope\"."),
        (&["task", "start", "--workflow", "roocode-boomerang", &"y".repeat(51)], "Task exceeds maxTaskChars (50)."),
        (&["task", "start", "--workflow", "three", "x"], "Workflow has 3 steps (maxSteps=2)."),
        (&["task", "start", "--workflow", "ghost", "x"], "Unknown worker \"nobody\" in step \"a\""),
        (&["task", "start", "--workflow", "ghost", "x", "--attach", "../x"], "Path traversal not allowed"),
    ];
    for (args, msg) in cases {
        let o = q.run(args);
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
        assert!(e.contains(msg), "{args:?}: {e}");
    }
    q.ok(&["init"]);
    assert_eq!(q.scalar_i64("SELECT count(*) FROM workflow_runs"), 0);
    assert_eq!(q.scalar_i64("SELECT count(*) FROM jobs"), 0);
    // An empty workflow succeeds at once with no steps.
    let (v, _) = q.json(&["workflow", "run", "empty", "nothing to do"]);
    let (rec, code) = q.json(&["task", "await", v["taskId"].as_str().unwrap(), "--timeout", "0"]);
    assert_eq!((rec["status"].as_str(), code), (Some("succeeded"), 0), "{rec}");
    assert_eq!(rec["report"], json!({"steps": []}));
    // Definitions are listed.
    let table = q.ok(&["task", "list", "--view", "workflows"]);
    assert!(table.contains("| roocode-boomerang | RooCode Boomerang | 4 "), "{table}");
    assert!(table.contains("| three "));
    let (defs, _) = q.json(&["workflow", "list"]);
    assert_eq!(defs.as_array().unwrap().len(), 4);
}

#[test]
fn illegal_run_and_step_transitions_are_refused_by_the_database() {
    let q = TestQueue::new();
    q.ok(&["init"]);
    let c = q.raw();
    let ins_run = |id: &str, state: &str| {
        c.execute(
            "INSERT INTO workflow_runs (id, workflow_id, name, state, task, requested_by, project_dir, max_attempts,
                                        max_carry_chars, created_ms, finished_ms)
             VALUES (?1, 'w', 'W', ?2, 't', 'test', '/', 1, 100, 0, 1)",
            rusqlite::params![id, state],
        )
    };
    assert!(ins_run("r0", "succeeded").unwrap_err().to_string().contains("illegal state for a new workflow run"));
    ins_run("r1", "running").unwrap();
    let e = c.execute("UPDATE workflow_runs SET state = 'running' WHERE id = 'r1'", []).unwrap_err();
    assert!(e.to_string().contains("illegal workflow run transition"), "{e}");
    c.execute("UPDATE workflow_runs SET state = 'failed' WHERE id = 'r1'", []).unwrap();
    let e = c.execute("UPDATE workflow_runs SET state = 'succeeded' WHERE id = 'r1'", []).unwrap_err();
    assert!(e.to_string().contains("illegal workflow run transition"), "{e}");
    let ins_step = |idx: i64, state: &str| {
        c.execute(
            "INSERT INTO workflow_steps (run_id, idx, step_id, title, worker_id, prompt, carry, timeout_ms, runner, state)
             VALUES ('r1', ?1, 's', 'S', 'coder', 'p', 0, 1000, '[]', ?2)",
            rusqlite::params![idx, state],
        )
    };
    assert!(ins_step(0, "running").unwrap_err().to_string().contains("steps start pending"));
    ins_step(0, "pending").unwrap();
    let upd = |st: &str| c.execute("UPDATE workflow_steps SET state = ?1 WHERE run_id = 'r1' AND idx = 0", [st]);
    assert!(upd("succeeded").unwrap_err().to_string().contains("illegal workflow step transition"));
    assert!(upd("pending").unwrap_err().to_string().contains("illegal workflow step transition"));
    upd("skipped").unwrap();
    assert!(upd("running").unwrap_err().to_string().contains("illegal workflow step transition"));
    let e = ins_step(0, "pending").unwrap_err().to_string();
    assert!(e.contains("already exists"), "{e}");
}

#[test]
fn finished_runs_are_pruned_whole_and_running_ones_kept() {
    let _g = common::heavy();
    let q = queue_with_agent(json!({
        "retention": {"minAgeMs": 0, "maxJobs": 0},
        "workflows": {"definitions": [{"id": "one", "steps": [{"id": "custom", "carry": true}]}]}
    }));
    q.dispatcher();
    let (v, _) = q.json(&["workflow", "run", "one", "do it"]);
    let done = v["taskId"].as_str().unwrap().to_string();
    let (rec, _) = q.json(&["task", "await", &done, "--timeout", "60000"]);
    assert_eq!(rec["status"], "succeeded", "{rec}");
    let step_job: String =
        q.raw().query_row("SELECT job_id FROM workflow_steps WHERE run_id = ?1", [&done], |r| r.get(0)).unwrap();
    assert!(q.project.join(".baton/logs").join(&step_job).is_dir());
    // A run still going is never pruned.
    std::fs::write(q.dir.path().join("slow-plan"), "").unwrap();
    let live = run_boomerang(&q);
    wait_for(60, "the live run's first step", || runs_log(&q).iter().any(|l| l == "plan start 1"));
    let out = q.ok(&["prune"]);
    assert!(out.contains("Deleted"), "{out}");
    let c = q.raw();
    let n = |sql: &str, id: &str| -> i64 { c.query_row(sql, [id], |r| r.get(0)).unwrap() };
    assert_eq!(n("SELECT count(*) FROM workflow_runs WHERE id = ?1", &done), 0);
    assert_eq!(n("SELECT count(*) FROM workflow_steps WHERE run_id = ?1", &done), 0);
    assert_eq!(n("SELECT count(*) FROM jobs WHERE workflow_run_id = ?1", &done), 0);
    assert!(!q.project.join(".baton/logs").join(&step_job).exists(), "its logs went with it");
    assert_eq!(n("SELECT count(*) FROM workflow_runs WHERE id = ?1", &live), 1);
    assert_eq!(n("SELECT count(*) FROM jobs WHERE workflow_run_id = ?1", &live), 1);
    q.run(&["task", "cancel", &live]);
}
