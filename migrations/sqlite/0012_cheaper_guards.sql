-- baton queue schema, version 12: the same guards, cheaper to run.
--
-- Nothing here changes what the schema refuses or does; it changes how much each write pays:
--
-- * In a trigger or a partial index, `x IN ('a', 'b', 'c')` with three or more constants makes
--   SQLite build a temporary b-tree of the list each time the trigger runs. The triggers on the
--   hot path (every claim and every finish fires jobs_finished_guard) spell such lists as
--   `x = 'a' OR x = 'b' OR x = 'c'`, which is compared in place. Two-item lists stay as IN.
-- * Each WHEN tests its cheapest, most selective term first (a state that did not change ends
--   the test), since SQLite stops at the first false term of an AND.
-- * The dependency triggers run only for a job that some task depends on (job_deps_dep index).
--
-- Each trigger is dropped and created again under its own name, with its body unchanged.

DROP TRIGGER workers_delete_guard;
CREATE TRIGGER workers_delete_guard BEFORE DELETE ON workers
WHEN (OLD.state = 'starting' OR OLD.state = 'ready' OR OLD.state = 'busy')
 AND (OLD.kind = 'server' OR EXISTS (SELECT 1 FROM jobs WHERE id = OLD.job_id))
BEGIN
    SELECT RAISE(ABORT, 'baton: a live worker''s row cannot be deleted (stop it: baton workers stop)');
END;

DROP TRIGGER workflow_runs_finished_guard;
CREATE TRIGGER workflow_runs_finished_guard BEFORE UPDATE ON workflow_runs
WHEN NEW.state IS OLD.state AND (OLD.state = 'succeeded' OR OLD.state = 'failed' OR OLD.state = 'canceled')
 AND (NEW.name, NEW.task, NEW.session, NEW.requested_by, NEW.project_dir, NEW.priority,
      NEW.max_attempts, NEW.max_carry_chars, NEW.carry, NEW.current_step, NEW.created_ms,
      NEW.finished_ms, NEW.response, NEW.error, NEW.cancel_requested_ms, NEW.cancel_reason)
     IS NOT
     (OLD.name, OLD.task, OLD.session, OLD.requested_by, OLD.project_dir, OLD.priority,
      OLD.max_attempts, OLD.max_carry_chars, OLD.carry, OLD.current_step, OLD.created_ms,
      OLD.finished_ms, OLD.response, OLD.error, OLD.cancel_requested_ms, OLD.cancel_reason)
BEGIN
    SELECT RAISE(ABORT, 'baton: a finished workflow run never changes (pruning deletes it whole)');
END;

DROP TRIGGER workflow_steps_finished_guard;
CREATE TRIGGER workflow_steps_finished_guard BEFORE UPDATE ON workflow_steps
WHEN NEW.state IS OLD.state
 AND (OLD.state = 'succeeded' OR OLD.state = 'failed' OR OLD.state = 'canceled' OR OLD.state = 'skipped')
 AND (NEW.title, NEW.prompt, NEW.carry, NEW.timeout_ms, NEW.runner, NEW.model, NEW.system_prompt,
      NEW.prompt_via, NEW.env, NEW.profile_limit, NEW.attachments, NEW.carry_in, NEW.warning,
      NEW.error, NEW.started_ms, NEW.finished_ms, NEW.output, NEW.worker_kind, NEW.permissions)
     IS NOT
     (OLD.title, OLD.prompt, OLD.carry, OLD.timeout_ms, OLD.runner, OLD.model, OLD.system_prompt,
      OLD.prompt_via, OLD.env, OLD.profile_limit, OLD.attachments, OLD.carry_in, OLD.warning,
      OLD.error, OLD.started_ms, OLD.finished_ms, OLD.output, OLD.worker_kind, OLD.permissions)
BEGIN
    SELECT RAISE(ABORT, 'baton: a finished workflow step never changes (pruning deletes its run whole)');
END;

DROP TRIGGER worktrees_delete_guard;
CREATE TRIGGER worktrees_delete_guard BEFORE DELETE ON worktrees
WHEN EXISTS (SELECT 1 FROM jobs WHERE worktree_id = OLD.id AND (state = 'waiting' OR state = 'queued' OR state = 'running'))
BEGIN
    SELECT RAISE(ABORT, 'baton: a worktree of an unfinished task cannot be deleted');
END;

DROP TRIGGER jobs_finished_guard;
CREATE TRIGGER jobs_finished_guard BEFORE UPDATE ON jobs
WHEN NEW.state IS OLD.state AND (OLD.state = 'succeeded' OR OLD.state = 'failed' OR OLD.state = 'canceled')
 AND (NEW.kind, NEW.task, NEW.session, NEW.requested_by, NEW.project_dir, NEW.argv, NEW.prompt_stdin,
      NEW.model, NEW.env, NEW.attachments, NEW.priority, NEW.max_attempts, NEW.run_after_ms,
      NEW.timeout_ms, NEW.profile_limit, NEW.created_ms, NEW.started_ms, NEW.finished_ms,
      NEW.response, NEW.response_chars, NEW.error, NEW.report, NEW.exit_code, NEW.output_tail,
      NEW.cancel_requested_ms, NEW.cancel_reason, NEW.dedup_key, NEW.tokens, NEW.cost_usd,
      NEW.output, NEW.worker_kind, NEW.input_tokens, NEW.output_tokens, NEW.cached_tokens,
      NEW.system_prompt, NEW.permissions, NEW.labels, NEW.after, NEW.after_any)
     IS NOT
     (OLD.kind, OLD.task, OLD.session, OLD.requested_by, OLD.project_dir, OLD.argv, OLD.prompt_stdin,
      OLD.model, OLD.env, OLD.attachments, OLD.priority, OLD.max_attempts, OLD.run_after_ms,
      OLD.timeout_ms, OLD.profile_limit, OLD.created_ms, OLD.started_ms, OLD.finished_ms,
      OLD.response, OLD.response_chars, OLD.error, OLD.report, OLD.exit_code, OLD.output_tail,
      OLD.cancel_requested_ms, OLD.cancel_reason, OLD.dedup_key, OLD.tokens, OLD.cost_usd,
      OLD.output, OLD.worker_kind, OLD.input_tokens, OLD.output_tokens, OLD.cached_tokens,
      OLD.system_prompt, OLD.permissions, OLD.labels, OLD.after, OLD.after_any)
BEGIN
    SELECT RAISE(ABORT, 'baton: a finished job never changes (pruning deletes it whole; task retry starts a new job)');
END;

DROP TRIGGER jobs_delete_guard;
CREATE TRIGGER jobs_delete_guard BEFORE DELETE ON jobs
BEGIN
    SELECT RAISE(ABORT, 'baton: an unfinished job cannot be deleted (cancel it; pruning deletes finished jobs)')
    WHERE (OLD.state = 'waiting' OR OLD.state = 'queued' OR OLD.state = 'running');
    SELECT RAISE(ABORT, 'baton: a waiting job depends on this one: it is kept until that job ends')
    WHERE EXISTS (SELECT 1 FROM job_deps d JOIN jobs w ON w.id = d.job_id
                   WHERE d.dep_id = OLD.id AND w.state = 'waiting');
END;

DROP TRIGGER jobs_dependents_queue;
CREATE TRIGGER jobs_dependents_queue AFTER UPDATE OF state ON jobs
WHEN OLD.state IS NOT NEW.state AND (NEW.state = 'succeeded' OR NEW.state = 'failed' OR NEW.state = 'canceled')
 AND EXISTS (SELECT 1 FROM job_deps WHERE dep_id = NEW.id)
BEGIN
    UPDATE jobs SET state = 'queued'
     WHERE state = 'waiting' AND id IN (SELECT job_id FROM job_deps WHERE dep_id = NEW.id)
       AND NOT EXISTS (SELECT 1 FROM v_job_deps v WHERE v.job_id = jobs.id AND NOT v.met);
END;

DROP TRIGGER jobs_dependents_fail;
CREATE TRIGGER jobs_dependents_fail AFTER UPDATE OF state ON jobs
WHEN OLD.state IS NOT NEW.state AND NEW.state IN ('failed', 'canceled')
 AND EXISTS (SELECT 1 FROM job_deps WHERE dep_id = NEW.id)
BEGIN
    UPDATE jobs SET state = 'failed', finished_ms = NEW.finished_ms, error = 'Dependency ' || f.cause || ' failed'
      FROM (WITH RECURSIVE f(id, cause) AS (
                SELECT d.job_id, d.dep_id FROM job_deps d JOIN jobs w ON w.id = d.job_id AND w.state = 'waiting'
                 WHERE d.dep_id = NEW.id AND d.need = 'succeeded'
                UNION
                SELECT d.job_id, d.dep_id FROM f JOIN job_deps d ON d.dep_id = f.id
                  JOIN jobs w ON w.id = d.job_id AND w.state = 'waiting'
                 WHERE d.need = 'succeeded')
            SELECT id, min(cause) AS cause FROM f GROUP BY id) AS f
     WHERE jobs.id = f.id AND jobs.state = 'waiting';
END;

DROP TRIGGER jobs_finish_hook;
CREATE TRIGGER jobs_finish_hook AFTER UPDATE OF state ON jobs
WHEN OLD.state IS NOT NEW.state AND (NEW.state = 'succeeded' OR NEW.state = 'failed' OR NEW.state = 'canceled')
 AND NEW.workflow_run_id IS NULL AND EXISTS (SELECT 1 FROM hooks WHERE name = 'onFinish')
BEGIN
    INSERT OR IGNORE INTO finish_hooks (task_id, finished_ms) VALUES (NEW.id, NEW.finished_ms);
END;

DROP TRIGGER jobs_finish_hook_insert;
CREATE TRIGGER jobs_finish_hook_insert AFTER INSERT ON jobs
WHEN (NEW.state = 'succeeded' OR NEW.state = 'failed' OR NEW.state = 'canceled')
 AND NEW.workflow_run_id IS NULL AND EXISTS (SELECT 1 FROM hooks WHERE name = 'onFinish')
BEGIN
    INSERT OR IGNORE INTO finish_hooks (task_id, finished_ms) VALUES (NEW.id, NEW.finished_ms);
END;

DROP TRIGGER workflow_runs_finish_hook;
CREATE TRIGGER workflow_runs_finish_hook AFTER UPDATE OF state ON workflow_runs
WHEN OLD.state IS NOT NEW.state AND (NEW.state = 'succeeded' OR NEW.state = 'failed' OR NEW.state = 'canceled')
 AND EXISTS (SELECT 1 FROM hooks WHERE name = 'onFinish')
BEGIN
    INSERT OR IGNORE INTO finish_hooks (task_id, finished_ms) VALUES (NEW.id, NEW.finished_ms);
END;

PRAGMA user_version = 12;
