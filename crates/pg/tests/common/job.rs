//! The job the statement tests start from (each test overrides what it is about).

use baton_rows::job::NewJob;
use baton_rows::state::WorkerKind;

/// A oneshot `true` job `id` in project `/p`, one attempt, no dedup key or labels.
pub fn job(id: &str) -> NewJob {
    NewJob {
        id: id.into(),
        kind: "worker".into(),
        profile: "coder".into(),
        task: format!("task {id}"),
        session: None,
        requested_by: "cli".into(),
        project_dir: "/p".into(),
        argv: "[\"true\"]".into(),
        prompt_stdin: false,
        model: None,
        env: "{}".into(),
        attachments: "[]".into(),
        priority: 0,
        max_attempts: 1,
        run_after_ms: 0,
        timeout_ms: 60_000,
        profile_limit: None,
        created_ms: 1,
        dedup_key: None,
        workflow_run_id: None,
        workflow_step: None,
        output: None,
        worker_kind: WorkerKind::Oneshot,
        system_prompt: None,
        permissions: None,
        worktree_id: None,
        labels: None,
        after: None,
        after_any: false,
        node: None,
    }
}
