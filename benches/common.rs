//! What both benchmarks build their jobs from.

use baton::job::NewJob;
use baton::state::WorkerKind;

/// A `/bin/true` job in `project_dir`, queued from `now`.
pub fn job(i: usize, now: i64, project_dir: &str) -> NewJob {
    NewJob {
        id: uuid::Uuid::new_v4().to_string(),
        kind: "worker".into(),
        profile: "coder".into(),
        task: format!("bench task {i}"),
        session: None,
        requested_by: "cli:bench".into(),
        project_dir: project_dir.into(),
        argv: r#"["/bin/true","bench task"]"#.into(),
        prompt_stdin: false,
        model: None,
        env: "{}".into(),
        attachments: "[]".into(),
        priority: 0,
        max_attempts: 3,
        run_after_ms: now,
        timeout_ms: 600_000,
        profile_limit: None,
        created_ms: now,
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
