//! Durable workflow runs: starting one (run, steps and the first step's job in one transaction),
//! advancing it when a step's job ends (the step's end, the new carry and the next step's job in
//! the caller's transaction), and the record a run answers with.

use std::path::Path;

use serde_json::{Value, json};

use crate::agent::launch::{self, Launch};
use crate::agent::output;
use crate::agent::profile::{PromptVia, Runner};
use crate::error::{Error, Result};
use crate::job::{self, Record};
use crate::state::{JobState, RunState, StepState};
use crate::store;
use crate::store::workflow::{RunRow, StepRow};
use crate::workflow::handoff;

/// Queue the job of step `idx` with the current carry, and mark the step running.
async fn enqueue_step(conn: &mut store::Tx<'_>, run: &RunRow, step: &StepRow, carry: &str, now: i64) -> Result<()> {
    let job_id = uuid::Uuid::new_v4().to_string();
    let prompt = handoff::template(&step.prompt, &run.task, carry);
    let launch = Launch {
        profile: step.worker_id.clone(),
        kind: step.worker_kind,
        runner: Runner::parse(&serde_json::from_str(&step.runner)?)
            .map_err(|e| Error::Invalid(format!("step \"{}\": runner: {e}", step.step_id)))?,
        prompt_via: if step.prompt_via == "stdin" { PromptVia::Stdin } else { PromptVia::Arg },
        model: step.model.clone(),
        system_prompt: step.system_prompt.clone(),
        env: step.env.clone(),
        output: step.output.clone(),
        timeout_ms: step.timeout_ms,
        profile_limit: step.profile_limit,
        permissions: step.permissions.clone(),
    };
    let attachments: Vec<String> = serde_json::from_str(&step.attachments)?;
    let new = launch.job(launch::Job {
        id: &job_id,
        task: &prompt,
        session: run.session.as_deref(),
        requested_by: &run.requested_by,
        project_dir: &run.project_dir,
        attachments: &attachments,
        priority: run.priority,
        max_attempts: run.max_attempts,
        run_after_ms: now,
        now,
        dedup_key: None,
        workflow: Some((&run.id, step.idx)),
        worktree: run.worktree_id.as_deref(),
    })?;
    store::jobs::insert(conn, &new).await?;
    // Refused, the caller's transaction rolls back, the new job with it.
    if !store::workflow::start_step(conn, &run.id, step.idx, &job_id, carry, now).await? {
        return Err(Error::Invalid(format!(
            "workflow run {} step \"{}\" is no longer pending: another process started it",
            run.id, step.step_id
        )));
    }
    Ok(())
}

/// Start a run whose rows (run + pending steps) the caller inserted in this transaction: queue
/// step 0, or finish an empty workflow at once.
pub async fn begin(conn: &mut store::Tx<'_>, run_id: &str, now: i64) -> Result<()> {
    let run = store::workflow::get_run(conn, run_id).await?.ok_or_else(|| Error::UnknownTask(run_id.into()))?;
    let first = store::workflow::steps_from(conn, run_id, 0, 1).await?;
    match first.first() {
        Some(first) => enqueue_step(conn, &run, first, "", now).await,
        None => {
            store::workflow::end_run(conn, run_id, RunState::Succeeded, None, None, now).await?;
            Ok(())
        }
    }
}

/// What [`advance`] needs of a step's job that just ended: the result the caller wrote in this
/// same transaction, so nothing is read back.
#[derive(Debug, Clone, Copy)]
pub struct StepEnd<'a> {
    pub job_id: &'a str,
    pub run_id: &'a str,
    pub idx: i64,
    pub state: JobState,
    pub attempt: i64,
    pub response: Option<&'a str>,
    pub error: Option<&'a str>,
}

impl<'a> StepEnd<'a> {
    /// A job row's end, when the job is a workflow step.
    pub fn of(job: &'a job::JobRow) -> Option<StepEnd<'a>> {
        Some(StepEnd {
            job_id: &job.id,
            run_id: job.workflow_run_id.as_deref()?,
            idx: job.workflow_step?,
            state: job.state,
            attempt: job.attempt,
            response: job.response.as_deref(),
            error: job.error.as_deref(),
        })
    }
}

/// A step's job has reached a terminal state (written in this same transaction): end the step,
/// grow the carry, and queue the next step or finish the run. Cancellation is handled by the
/// `jobs_cancel_workflow` trigger. Idempotent: a step no longer running is left alone.
#[tracing::instrument(skip_all, fields(task_id = %end.job_id), err)]
pub async fn advance(conn: &mut store::Tx<'_>, end: &StepEnd<'_>, logs_dir: &Path, now: i64) -> Result<()> {
    if !matches!(end.state, JobState::Succeeded | JobState::Failed) {
        return Ok(());
    }
    let (run_id, idx) = (end.run_id, end.idx);
    let Some(run) = store::workflow::get_run(conn, run_id).await? else { return Ok(()) };
    // This step and the next, if any.
    let steps = store::workflow::steps_from(conn, run_id, idx, 2).await?;
    let Some(step) = steps.iter().find(|s| s.idx == idx && s.state == StepState::Running) else { return Ok(()) };
    if end.state == JobState::Failed {
        let error = end.error.unwrap_or("failed");
        store::workflow::end_step(conn, run_id, idx, StepState::Failed, None, Some(error), now).await?;
        store::workflow::skip_pending(conn, run_id, now).await?;
        let run_error = format!("Step \"{}\" failed: {error}", step.title);
        store::workflow::end_run(conn, run_id, RunState::Failed, end.response, Some(&run_error), now).await?;
        return Ok(());
    }
    // The full response is in the log; the row holds at most 1 MiB of it.
    let response = match end.response {
        Some(r) => r.to_string(),
        None => output::read_response(&job::log_file(logs_dir, end.job_id, end.attempt, "out")).0,
    };
    let mut carry = run.carry.clone();
    let mut warning = None;
    if step.carry != 0 {
        let max = run.max_carry_chars.max(15) as usize;
        let block = handoff::block(&step.title, &response, max);
        let appended = handoff::append(&run.carry, &block.text, max);
        if block.truncated || appended.truncated {
            tracing::info!(
                run = %run_id,
                step = %step.step_id,
                dropped_blocks = appended.dropped,
                truncated_sections = ?block.truncated_sections,
                "carry trimmed"
            );
            warning = Some(format!(
                "carry trimmed: {} older block(s) dropped, truncated sections: [{}]",
                appended.dropped,
                block.truncated_sections.join(", ")
            ));
        }
        carry = appended.text;
    }
    store::workflow::end_step(conn, run_id, idx, StepState::Succeeded, warning.as_deref(), None, now).await?;
    match steps.iter().find(|s| s.idx == idx + 1) {
        // The new carry is stored with the next step's start.
        Some(next) => {
            let run = RunRow { carry: carry.clone(), ..run };
            enqueue_step(conn, &run, next, &carry, now).await
        }
        None => {
            if step.carry != 0 {
                store::workflow::set_carry(conn, run_id, &carry).await?;
            }
            store::workflow::end_run(conn, run_id, RunState::Succeeded, Some(&response), None, now).await?;
            Ok(())
        }
    }
}

/// The per-step summary of a run's `report`.
pub fn report(steps: &[StepRow]) -> Value {
    let steps: Vec<Value> = steps
        .iter()
        .map(|s| {
            json!({
                "id": s.step_id, "title": s.title, "workerId": s.worker_id, "status": s.state,
                "durationMs": s.started_ms.zip(s.finished_ms).map(|(a, b)| b - a),
                "warning": s.warning, "error": s.error,
            })
        })
        .collect();
    json!({ "steps": steps })
}

/// The record of a run: the job record's shape (`kind: workflow`, `workerId: workflow:<id>`),
/// with its report; `live` adds the current step and the carry so far.
pub fn record(run: &RunRow, steps: &[StepRow], max_response_chars: Option<usize>, live: bool, now: i64) -> Record {
    let (response_text, truncated) = match (&run.response, max_response_chars) {
        (Some(r), Some(max)) => {
            let (t, cut) = job::cap_chars(r, max);
            (Some(t.to_string()), cut)
        }
        (r, _) => (r.clone(), false),
    };
    let terminal = run.state.is_terminal();
    let current = steps.iter().find(|s| s.state == StepState::Running);
    let started = steps.first().and_then(|s| s.started_ms).unwrap_or(run.created_ms);
    Record {
        id: run.id.clone(),
        worker_id: format!("workflow:{}", run.workflow_id),
        kind: "workflow".into(),
        message: run.task.clone(),
        status: run.state.into(),
        session_id: run.session.clone(),
        requested_by: run.requested_by.clone(),
        created_at: job::iso(run.created_ms),
        started_at: Some(job::iso(started)),
        finished_at: run.finished_ms.map(job::iso),
        duration_ms: run.finished_ms.map(|f| f - started),
        elapsed_ms: (live && !terminal).then_some(now - started),
        response_chars: run.response.as_ref().map(|r| r.chars().count() as i64),
        response_text,
        response_truncated: truncated,
        error: run.error.clone(),
        report: Some(report(steps)),
        exit_code: None,
        attempt: 1,
        max_attempts: run.max_attempts,
        priority: run.priority,
        workflow_run_id: Some(run.id.clone()),
        log_path: None,
        last_activity_at: None,
        stalled: false,
        output_tail: None,
        activity: None,
        cancel_requested: run.cancel_requested_ms.is_some() && !terminal,
        tokens: None,
        input_tokens: None,
        output_tokens: None,
        cached_tokens: None,
        cost_usd: None,
        timed_out: None,
        dispatcher: None,
        current_step: (live && !terminal)
            .then(|| current.map(|s| json!({"index": s.idx, "id": s.step_id, "title": s.title, "taskId": s.job_id})))
            .flatten(),
        carry: (live && !terminal).then(|| run.carry.clone()),
        worktree: None,
        labels: None,
        after: None,
        after_any: false,
    }
}
