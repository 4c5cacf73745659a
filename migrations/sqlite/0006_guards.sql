-- baton queue schema, version 6: what a hand-written statement may not do to the queue.
--
-- Version 1 refused illegal states; these triggers refuse the rest of what the code never does,
-- so `sqlite3 .baton/baton.db` cannot corrupt a queue either:
--   - a finished job (or workflow run, or step) never changes; pruning deletes whole rows;
--   - ids, and the columns that link rows to each other, never change;
--   - unfinished jobs, live workers, running workflow runs and their steps are never deleted,
--     and a workflow run's deletion takes its steps and jobs with it;
--   - the *_transitions tables (the state machines) change only through migrations;
--   - the dispatcher lease row is inserted once and never deleted or replaced, so its epoch only
--     increases.
--
-- The finished guards compare every column but the state and the ones guarded elsewhere; a
-- later migration that adds a column to jobs, workflow_runs or workflow_steps drops and
-- recreates that table's finished guard with the new column (tests/guards.rs tries to change
-- every column of a finished row). A later migration that must change a transitions table (a
-- new state, say) drops that table's guard triggers, changes the rows, and creates the triggers
-- again, all in the same migration.
--
-- SQLite fires the triggers of one event newest first, so where two guards refuse one change
-- the newer one's message is seen. The finished guards leave the state, ids, links and owner
-- fields to the guards that watch them, so those changes keep their own messages.

-- Jobs ------------------------------------------------------------------------------------------

-- A job in a terminal state keeps every value. A change of state is left to jobs_state_guard
-- (job_transitions lists no way out of a terminal state; `task retry` starts a new job); id and
-- seq to jobs_id_guard; the links and the owner fields to the two guards below.
CREATE TRIGGER jobs_finished_guard BEFORE UPDATE ON jobs
WHEN OLD.state IN ('succeeded', 'failed', 'canceled') AND NEW.state IS OLD.state
 AND (NEW.kind, NEW.task, NEW.session, NEW.requested_by, NEW.project_dir, NEW.argv, NEW.prompt_stdin,
      NEW.model, NEW.env, NEW.attachments, NEW.priority, NEW.max_attempts, NEW.run_after_ms,
      NEW.timeout_ms, NEW.profile_limit, NEW.created_ms, NEW.started_ms, NEW.finished_ms,
      NEW.response, NEW.response_chars, NEW.error, NEW.report, NEW.exit_code, NEW.output_tail,
      NEW.cancel_requested_ms, NEW.cancel_reason, NEW.dedup_key, NEW.tokens, NEW.cost_usd,
      NEW.output, NEW.worker_kind, NEW.input_tokens, NEW.output_tokens, NEW.cached_tokens)
     IS NOT
     (OLD.kind, OLD.task, OLD.session, OLD.requested_by, OLD.project_dir, OLD.argv, OLD.prompt_stdin,
      OLD.model, OLD.env, OLD.attachments, OLD.priority, OLD.max_attempts, OLD.run_after_ms,
      OLD.timeout_ms, OLD.profile_limit, OLD.created_ms, OLD.started_ms, OLD.finished_ms,
      OLD.response, OLD.response_chars, OLD.error, OLD.report, OLD.exit_code, OLD.output_tail,
      OLD.cancel_requested_ms, OLD.cancel_reason, OLD.dedup_key, OLD.tokens, OLD.cost_usd,
      OLD.output, OLD.worker_kind, OLD.input_tokens, OLD.output_tokens, OLD.cached_tokens)
BEGIN
    SELECT RAISE(ABORT, 'baton: a finished job never changes (pruning deletes it whole; task retry starts a new job)');
END;

-- What a job belongs to: its worker profile (workerId), its workflow run and step.
CREATE TRIGGER jobs_link_guard BEFORE UPDATE OF profile, workflow_run_id, workflow_step ON jobs
WHEN NEW.profile IS NOT OLD.profile OR NEW.workflow_run_id IS NOT OLD.workflow_run_id
  OR NEW.workflow_step IS NOT OLD.workflow_step
BEGIN
    SELECT RAISE(ABORT, 'baton: a job''s worker profile, workflow run and step never change');
END;

-- Owner and epoch fence every write of a running job, and the attempt names its worker process
-- (BATON_ATTEMPT): they change only with the claim (queued -> running, attempt + 1) and with a
-- requeue after a lost worker (running -> queued, owner cleared).
CREATE TRIGGER jobs_owner_guard BEFORE UPDATE OF owner, epoch, attempt ON jobs
BEGIN
    SELECT RAISE(ABORT, 'baton: a job''s owner and epoch change only when it is claimed (queued -> running) or requeued (running -> queued, owner cleared)')
    WHERE (NEW.owner IS NOT OLD.owner OR NEW.epoch IS NOT OLD.epoch)
      AND NOT (OLD.state = 'queued' AND NEW.state = 'running')
      AND NOT (OLD.state = 'running' AND NEW.state = 'queued' AND NEW.owner IS NULL AND NEW.epoch IS NULL);
    SELECT RAISE(ABORT, 'baton: a job''s attempt changes only when it is claimed (queued -> running), by one')
    WHERE NEW.attempt IS NOT OLD.attempt
      AND NOT (OLD.state = 'queued' AND NEW.state = 'running' AND NEW.attempt = OLD.attempt + 1);
END;

-- Only finished jobs are deleted (pruning). A queued or running one would leave its awaiters,
-- its worker process or its workflow run waiting for nothing.
CREATE TRIGGER jobs_delete_guard BEFORE DELETE ON jobs
WHEN OLD.state IN ('queued', 'running')
BEGIN
    SELECT RAISE(ABORT, 'baton: an unfinished job cannot be deleted (cancel it; pruning deletes finished jobs)');
END;

-- Workers ---------------------------------------------------------------------------------------

-- A worker row stands for one process, started for one profile by one dispatcher (owner, epoch:
-- recovery finds a lost leader's workers by them).
CREATE TRIGGER workers_id_guard BEFORE UPDATE OF id, seq, profile, owner, epoch ON workers
WHEN NEW.id IS NOT OLD.id OR NEW.seq IS NOT OLD.seq OR NEW.profile IS NOT OLD.profile
  OR NEW.owner IS NOT OLD.owner OR NEW.epoch IS NOT OLD.epoch
BEGIN
    SELECT RAISE(ABORT, 'baton: a worker''s id, profile, owner and epoch never change');
END;

-- A oneshot worker's job and attempt are written with its row. A server worker takes a job when
-- it goes ready -> busy (store::workers::busy) and gives it back busy -> ready (trigger
-- jobs_release_server_worker); nothing else moves a worker to another job.
CREATE TRIGGER workers_job_guard BEFORE UPDATE OF job_id, attempt ON workers
WHEN (NEW.job_id IS NOT OLD.job_id OR NEW.attempt IS NOT OLD.attempt)
 AND NOT (OLD.kind = 'server' AND OLD.state = 'ready' AND NEW.state = 'busy'
          AND OLD.job_id IS NULL AND OLD.attempt IS NULL AND NEW.job_id IS NOT NULL)
 AND NOT (OLD.kind = 'server' AND OLD.state = 'busy' AND NEW.state = 'ready'
          AND NEW.job_id IS NULL AND NEW.attempt IS NULL)
BEGIN
    SELECT RAISE(ABORT, 'baton: a worker''s job changes only when a server worker takes one (ready -> busy) or gives it back (busy -> ready)');
END;

-- A live worker's row is how baton finds and stops its process. Ended rows go: a server
-- worker's by pruning, a oneshot worker's with its job (trigger jobs_delete_workers, which runs
-- once the job's row is gone).
CREATE TRIGGER workers_delete_guard BEFORE DELETE ON workers
WHEN OLD.state IN ('starting', 'ready', 'busy')
 AND (OLD.kind = 'server' OR EXISTS (SELECT 1 FROM jobs WHERE id = OLD.job_id))
BEGIN
    SELECT RAISE(ABORT, 'baton: a live worker''s row cannot be deleted (stop it: baton workers stop)');
END;

-- Workflow runs and steps -----------------------------------------------------------------------

CREATE TRIGGER workflow_runs_id_guard BEFORE UPDATE OF id, seq, workflow_id ON workflow_runs
WHEN NEW.id IS NOT OLD.id OR NEW.seq IS NOT OLD.seq OR NEW.workflow_id IS NOT OLD.workflow_id
BEGIN
    SELECT RAISE(ABORT, 'baton: a workflow run''s id and workflow never change');
END;

-- As for jobs: state changes are left to workflow_runs_state_guard (no way out of a terminal
-- state), ids to workflow_runs_id_guard.
CREATE TRIGGER workflow_runs_finished_guard BEFORE UPDATE ON workflow_runs
WHEN OLD.state IN ('succeeded', 'failed', 'canceled') AND NEW.state IS OLD.state
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

CREATE TRIGGER workflow_runs_delete_guard BEFORE DELETE ON workflow_runs
WHEN OLD.state = 'running'
BEGIN
    SELECT RAISE(ABORT, 'baton: a running workflow run cannot be deleted (cancel it first)');
END;

-- A run goes whole: its jobs and steps with it (the steps' ON DELETE CASCADE acts only where
-- foreign keys are on, which the sqlite3 shell leaves off). Pruning deletes them itself first
-- (store::workflow::delete_runs), so here nothing is left to delete.
CREATE TRIGGER workflow_runs_delete_whole AFTER DELETE ON workflow_runs
BEGIN
    DELETE FROM jobs WHERE workflow_run_id = OLD.id;
    DELETE FROM workflow_steps WHERE run_id = OLD.id;
END;

-- The trigger above and pruning find a run's jobs by this.
CREATE INDEX jobs_workflow_run ON jobs (workflow_run_id) WHERE workflow_run_id IS NOT NULL;

CREATE TRIGGER workflow_steps_id_guard BEFORE UPDATE OF run_id, idx, step_id, worker_id ON workflow_steps
WHEN NEW.run_id IS NOT OLD.run_id OR NEW.idx IS NOT OLD.idx OR NEW.step_id IS NOT OLD.step_id
  OR NEW.worker_id IS NOT OLD.worker_id
BEGIN
    SELECT RAISE(ABORT, 'baton: a workflow step''s run, index, step id and worker never change');
END;

-- A step's job is recorded once, when it starts (store::workflow::start_step).
CREATE TRIGGER workflow_steps_job_guard BEFORE UPDATE OF job_id ON workflow_steps
WHEN NEW.job_id IS NOT OLD.job_id
 AND NOT (OLD.state = 'pending' AND NEW.state = 'running' AND OLD.job_id IS NULL AND NEW.job_id IS NOT NULL)
BEGIN
    SELECT RAISE(ABORT, 'baton: a workflow step''s job is set once, when the step starts (pending -> running)');
END;

CREATE TRIGGER workflow_steps_finished_guard BEFORE UPDATE ON workflow_steps
WHEN OLD.state IN ('succeeded', 'failed', 'canceled', 'skipped') AND NEW.state IS OLD.state
 AND (NEW.title, NEW.prompt, NEW.carry, NEW.timeout_ms, NEW.runner, NEW.model, NEW.system_prompt,
      NEW.prompt_via, NEW.env, NEW.profile_limit, NEW.attachments, NEW.carry_in, NEW.warning,
      NEW.error, NEW.started_ms, NEW.finished_ms, NEW.output, NEW.worker_kind)
     IS NOT
     (OLD.title, OLD.prompt, OLD.carry, OLD.timeout_ms, OLD.runner, OLD.model, OLD.system_prompt,
      OLD.prompt_via, OLD.env, OLD.profile_limit, OLD.attachments, OLD.carry_in, OLD.warning,
      OLD.error, OLD.started_ms, OLD.finished_ms, OLD.output, OLD.worker_kind)
BEGIN
    SELECT RAISE(ABORT, 'baton: a finished workflow step never changes (pruning deletes its run whole)');
END;

CREATE TRIGGER workflow_steps_delete_guard BEFORE DELETE ON workflow_steps
WHEN EXISTS (SELECT 1 FROM workflow_runs WHERE id = OLD.run_id AND state = 'running')
BEGIN
    SELECT RAISE(ABORT, 'baton: a step of a running workflow run cannot be deleted (cancel the run first)');
END;

-- The state machines ----------------------------------------------------------------------------

CREATE TRIGGER job_transitions_insert_guard BEFORE INSERT ON job_transitions
BEGIN
    SELECT RAISE(ABORT, 'baton: job_transitions is the job state machine: only a migration changes it');
END;
CREATE TRIGGER job_transitions_update_guard BEFORE UPDATE ON job_transitions
BEGIN
    SELECT RAISE(ABORT, 'baton: job_transitions is the job state machine: only a migration changes it');
END;
CREATE TRIGGER job_transitions_delete_guard BEFORE DELETE ON job_transitions
BEGIN
    SELECT RAISE(ABORT, 'baton: job_transitions is the job state machine: only a migration changes it');
END;

CREATE TRIGGER worker_transitions_insert_guard BEFORE INSERT ON worker_transitions
BEGIN
    SELECT RAISE(ABORT, 'baton: worker_transitions is the worker state machine: only a migration changes it');
END;
CREATE TRIGGER worker_transitions_update_guard BEFORE UPDATE ON worker_transitions
BEGIN
    SELECT RAISE(ABORT, 'baton: worker_transitions is the worker state machine: only a migration changes it');
END;
CREATE TRIGGER worker_transitions_delete_guard BEFORE DELETE ON worker_transitions
BEGIN
    SELECT RAISE(ABORT, 'baton: worker_transitions is the worker state machine: only a migration changes it');
END;

CREATE TRIGGER run_transitions_insert_guard BEFORE INSERT ON run_transitions
BEGIN
    SELECT RAISE(ABORT, 'baton: run_transitions is the workflow run state machine: only a migration changes it');
END;
CREATE TRIGGER run_transitions_update_guard BEFORE UPDATE ON run_transitions
BEGIN
    SELECT RAISE(ABORT, 'baton: run_transitions is the workflow run state machine: only a migration changes it');
END;
CREATE TRIGGER run_transitions_delete_guard BEFORE DELETE ON run_transitions
BEGIN
    SELECT RAISE(ABORT, 'baton: run_transitions is the workflow run state machine: only a migration changes it');
END;

CREATE TRIGGER step_transitions_insert_guard BEFORE INSERT ON step_transitions
BEGIN
    SELECT RAISE(ABORT, 'baton: step_transitions is the workflow step state machine: only a migration changes it');
END;
CREATE TRIGGER step_transitions_update_guard BEFORE UPDATE ON step_transitions
BEGIN
    SELECT RAISE(ABORT, 'baton: step_transitions is the workflow step state machine: only a migration changes it');
END;
CREATE TRIGGER step_transitions_delete_guard BEFORE DELETE ON step_transitions
BEGIN
    SELECT RAISE(ABORT, 'baton: step_transitions is the workflow step state machine: only a migration changes it');
END;

-- The dispatcher lease --------------------------------------------------------------------------

-- The row is inserted once (store::lease::acquire inserts it only where there is none, then
-- updates it); a second INSERT, or a REPLACE (which would delete the row and insert one with
-- any epoch), is refused before it can move the epoch back.
CREATE TRIGGER lease_insert_guard BEFORE INSERT ON dispatcher_lease
WHEN EXISTS (SELECT 1 FROM dispatcher_lease)
BEGIN
    SELECT RAISE(ABORT, 'baton: the lease row exists: a new leader updates it to a higher epoch (a second insert or REPLACE would move the epoch back)');
END;

CREATE TRIGGER lease_delete_guard BEFORE DELETE ON dispatcher_lease
BEGIN
    SELECT RAISE(ABORT, 'baton: the lease row is never deleted (its epoch only increases)');
END;

-- Each epoch names one holder: the lease changes hands only with a new, higher epoch
-- (lease_epoch_guard refuses a lower one).
CREATE TRIGGER lease_holder_guard BEFORE UPDATE OF owner, pid, started_ms ON dispatcher_lease
WHEN NEW.epoch <= OLD.epoch
 AND (NEW.owner IS NOT OLD.owner OR NEW.pid IS NOT OLD.pid OR NEW.started_ms IS NOT OLD.started_ms)
BEGIN
    SELECT RAISE(ABORT, 'baton: the lease changes hands only with a higher epoch');
END;

PRAGMA user_version = 6;
