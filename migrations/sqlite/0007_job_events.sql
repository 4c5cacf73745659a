-- baton queue schema, version 7: what a worker is doing, durable.
--
-- Every activity an agent reports while it works on a job (its message and thought text, tool
-- calls and their updates, its plan, token usage, the permission answers baton gave) is one row,
-- written by the job's owner while the attempt runs, in batches. Rows never change; the oldest
-- go when a job passes its cap (jobs.maxEvents rows or jobs.maxEventBytes of text and payload),
-- and all of them go with their job.
--
--   sqlite3 .baton/baton.db "select seq, kind, text from job_events where job_id like 'ab12%'"

CREATE TABLE job_events (
    job_id   TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    -- The attempt the event belongs to (a retried job keeps the events of earlier attempts).
    attempt  INTEGER NOT NULL CHECK (attempt >= 1),
    -- Per job, increasing; never reused after trimming.
    seq      INTEGER NOT NULL CHECK (seq >= 1),
    at_ms    INTEGER NOT NULL,
    -- message: the agent's answer text; thought: its reasoning text; tool: a tool call began;
    -- tool_update: a tool call changed (status, output); plan: its plan (entries and statuses);
    -- usage: tokens so far; permission: how baton answered a permission request; other: any
    -- other update the agent sent (modes, commands...).
    kind     TEXT    NOT NULL
             CHECK (kind IN ('message', 'thought', 'tool', 'tool_update', 'plan', 'usage', 'permission', 'other')),
    -- One short line a person reads ("edit: Editing src/cli.rs (in_progress)").
    text     TEXT    NOT NULL,
    -- The update as the agent sent it, bounded (longer ones keep their identifying fields).
    payload  TEXT    CHECK (payload IS NULL OR json_valid(payload)),
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;

-- Only the attempt that runs writes events.
CREATE TRIGGER job_events_insert_guard BEFORE INSERT ON job_events
WHEN (SELECT state || ':' || attempt FROM jobs WHERE id = NEW.job_id) IS NOT ('running:' || NEW.attempt)
BEGIN
    SELECT RAISE(ABORT, 'baton: events are written only for the running attempt of a job');
END;

CREATE TRIGGER job_events_update_guard BEFORE UPDATE ON job_events
BEGIN
    SELECT RAISE(ABORT, 'baton: an event never changes');
END;

-- What an agent worker needs at prompt time, captured from the profile when the task starts (as
-- its argv is): the system prompt, and which tool kinds a permission request may be granted
-- (JSON {"deny": [kinds], "ask": bool}; NULL: the worker is not asked, a oneshot CLI).
ALTER TABLE jobs ADD COLUMN system_prompt TEXT;
ALTER TABLE jobs ADD COLUMN permissions TEXT CHECK (permissions IS NULL OR json_valid(permissions));

-- The finished guard compares every column (see 0006): recreated with the new ones.
DROP TRIGGER jobs_finished_guard;
CREATE TRIGGER jobs_finished_guard BEFORE UPDATE ON jobs
WHEN OLD.state IN ('succeeded', 'failed', 'canceled') AND NEW.state IS OLD.state
 AND (NEW.kind, NEW.task, NEW.session, NEW.requested_by, NEW.project_dir, NEW.argv, NEW.prompt_stdin,
      NEW.model, NEW.env, NEW.attachments, NEW.priority, NEW.max_attempts, NEW.run_after_ms,
      NEW.timeout_ms, NEW.profile_limit, NEW.created_ms, NEW.started_ms, NEW.finished_ms,
      NEW.response, NEW.response_chars, NEW.error, NEW.report, NEW.exit_code, NEW.output_tail,
      NEW.cancel_requested_ms, NEW.cancel_reason, NEW.dedup_key, NEW.tokens, NEW.cost_usd,
      NEW.output, NEW.worker_kind, NEW.input_tokens, NEW.output_tokens, NEW.cached_tokens,
      NEW.system_prompt, NEW.permissions)
     IS NOT
     (OLD.kind, OLD.task, OLD.session, OLD.requested_by, OLD.project_dir, OLD.argv, OLD.prompt_stdin,
      OLD.model, OLD.env, OLD.attachments, OLD.priority, OLD.max_attempts, OLD.run_after_ms,
      OLD.timeout_ms, OLD.profile_limit, OLD.created_ms, OLD.started_ms, OLD.finished_ms,
      OLD.response, OLD.response_chars, OLD.error, OLD.report, OLD.exit_code, OLD.output_tail,
      OLD.cancel_requested_ms, OLD.cancel_reason, OLD.dedup_key, OLD.tokens, OLD.cost_usd,
      OLD.output, OLD.worker_kind, OLD.input_tokens, OLD.output_tokens, OLD.cached_tokens,
      OLD.system_prompt, OLD.permissions)
BEGIN
    SELECT RAISE(ABORT, 'baton: a finished job never changes (pruning deletes it whole; task retry starts a new job)');
END;

-- A workflow step keeps its profile's policy like its runner, for the job it becomes.
ALTER TABLE workflow_steps ADD COLUMN permissions TEXT CHECK (permissions IS NULL OR json_valid(permissions));

DROP TRIGGER workflow_steps_finished_guard;
CREATE TRIGGER workflow_steps_finished_guard BEFORE UPDATE ON workflow_steps
WHEN OLD.state IN ('succeeded', 'failed', 'canceled', 'skipped') AND NEW.state IS OLD.state
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

PRAGMA user_version = 7;
