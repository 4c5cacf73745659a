-- Enqueue one job: 'queued', or 'waiting' when it has dependencies ($28). The jobs_dedup partial
-- unique index decides dedup keys; the jobs_deps_insert trigger writes its job_deps rows and
-- queues or fails it at once when they are already decided. $30: the one node that may run it.
INSERT INTO jobs (id, state, kind, profile, task, session, requested_by, project_dir, argv,
    prompt_stdin, model, env, attachments, priority, max_attempts, run_after_ms,
    timeout_ms, profile_limit, created_ms, dedup_key, workflow_run_id, workflow_step, output, worker_kind,
    system_prompt, permissions, worktree_id, labels, after, after_any, node)
VALUES ($1, CASE WHEN $28::text IS NULL THEN 'queued' ELSE 'waiting' END, $2, $3, $4, $5, $6, $7, $8,
    CASE WHEN $9::boolean THEN 1 ELSE 0 END, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22,
    $23, $24, $25, $26, $27, $28, CASE WHEN $29::boolean THEN 1 ELSE 0 END, $30)
