-- Moving a queue (`baton export`, `baton import`): rows restored as another queue holds them.
--
-- A restored task may be finished, have events of earlier attempts, or be a queued job whose
-- dependencies were met long ago: states and rows the insert guards refuse for anything new.
-- An import is a row in `imports`; while it is open (no finished_ms) those guards admit rows
-- as they come, in any state of their state machine (never a word it does not know), and the
-- finish hook of a task that ended before the move is not due again.
-- An import opens only on a queue that holds no tasks, and baton opens, fills and closes it in
-- one transaction, so the relaxed guards never meet another writer. Every other guard (updates,
-- deletes, ids, the transitions) holds throughout.

CREATE TABLE imports (
    id          INTEGER PRIMARY KEY NOT NULL,
    source      TEXT    NOT NULL,                 -- the queue the rows came from, as baton describes it
    format      INTEGER NOT NULL CHECK (format >= 1),
    started_ms  INTEGER NOT NULL,
    finished_ms INTEGER,
    jobs        INTEGER,                          -- rows restored, once finished
    runs        INTEGER,
    events      INTEGER
);
CREATE INDEX imports_open ON imports (id) WHERE finished_ms IS NULL;

CREATE TRIGGER imports_insert_guard BEFORE INSERT ON imports
BEGIN
    SELECT RAISE(ABORT, 'baton: an import starts unfinished')
    WHERE NEW.finished_ms IS NOT NULL;
    SELECT RAISE(ABORT, 'baton: another import into this queue is open')
    WHERE EXISTS (SELECT 1 FROM imports WHERE finished_ms IS NULL);
    SELECT RAISE(ABORT, 'baton: an import fills only a queue that holds no tasks')
    WHERE EXISTS (SELECT 1 FROM jobs) OR EXISTS (SELECT 1 FROM workflow_runs) OR EXISTS (SELECT 1 FROM worktrees);
END;

CREATE TRIGGER imports_update_guard BEFORE UPDATE ON imports
BEGIN
    SELECT RAISE(ABORT, 'baton: an import is finished once, and its record never changes after')
    WHERE OLD.finished_ms IS NOT NULL OR NEW.finished_ms IS NULL
       OR NEW.id IS NOT OLD.id OR NEW.source IS NOT OLD.source OR NEW.format IS NOT OLD.format
       OR NEW.started_ms IS NOT OLD.started_ms;
END;

CREATE TRIGGER imports_delete_guard BEFORE DELETE ON imports
BEGIN
    SELECT RAISE(ABORT, 'baton: an import''s record stays with the queue');
END;

-- The insert guards: while an import is open, a row may be in any state its transitions table
-- reaches, and the checks only new rows must pass are skipped (those tests come last, so a
-- legal new row never pays for them).

DROP TRIGGER jobs_insert_guard;
CREATE TRIGGER jobs_insert_guard BEFORE INSERT ON jobs
BEGIN
    SELECT RAISE(ABORT, 'baton: a job with this id already exists')
    WHERE EXISTS (SELECT 1 FROM jobs WHERE id = NEW.id OR seq = NEW.seq);
    SELECT RAISE(ABORT, 'baton: illegal job state for a new job (jobs start queued, or waiting for dependencies)')
    WHERE NOT EXISTS (SELECT 1 FROM job_transitions WHERE from_state = '(new)' AND to_state = NEW.state)
      AND (NOT EXISTS (SELECT 1 FROM imports WHERE finished_ms IS NULL)
           OR NOT EXISTS (SELECT 1 FROM job_transitions WHERE to_state = NEW.state));
    SELECT RAISE(ABORT, 'baton: a job starts waiting exactly when it has dependencies (after)')
    WHERE (NEW.state = 'waiting') IS NOT (NEW.after IS NOT NULL)
      AND NOT EXISTS (SELECT 1 FROM imports WHERE finished_ms IS NULL);
END;

DROP TRIGGER job_deps_insert_guard;
CREATE TRIGGER job_deps_insert_guard BEFORE INSERT ON job_deps
WHEN NOT EXISTS (SELECT 1 FROM imports WHERE finished_ms IS NULL)
BEGIN
    SELECT RAISE(ABORT, 'baton: dependencies are written with their job, which starts waiting')
    WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE id = NEW.job_id AND state = 'waiting');
    SELECT RAISE(ABORT, 'baton: a dependency is an older task (so dependencies never form a cycle)')
    WHERE NOT EXISTS (SELECT 1 FROM jobs j, jobs d
                       WHERE j.id = NEW.job_id AND d.id = NEW.dep_id AND d.seq < j.seq);
END;

DROP TRIGGER job_events_insert_guard;
CREATE TRIGGER job_events_insert_guard BEFORE INSERT ON job_events
WHEN (SELECT state || ':' || attempt FROM jobs WHERE id = NEW.job_id) IS NOT ('running:' || NEW.attempt)
 AND NOT EXISTS (SELECT 1 FROM imports WHERE finished_ms IS NULL)
BEGIN
    SELECT RAISE(ABORT, 'baton: events are written only for the running attempt of a job');
END;

DROP TRIGGER workflow_runs_insert_guard;
CREATE TRIGGER workflow_runs_insert_guard BEFORE INSERT ON workflow_runs
BEGIN
    SELECT RAISE(ABORT, 'baton: a workflow run with this id already exists')
    WHERE EXISTS (SELECT 1 FROM workflow_runs WHERE id = NEW.id OR seq = NEW.seq);
    SELECT RAISE(ABORT, 'baton: illegal state for a new workflow run (runs start running)')
    WHERE NOT EXISTS (SELECT 1 FROM run_transitions WHERE from_state = '(new)' AND to_state = NEW.state)
      AND (NOT EXISTS (SELECT 1 FROM imports WHERE finished_ms IS NULL)
           OR NOT EXISTS (SELECT 1 FROM run_transitions WHERE to_state = NEW.state));
END;

DROP TRIGGER workflow_steps_insert_guard;
CREATE TRIGGER workflow_steps_insert_guard BEFORE INSERT ON workflow_steps
BEGIN
    SELECT RAISE(ABORT, 'baton: this workflow step already exists')
    WHERE EXISTS (SELECT 1 FROM workflow_steps WHERE run_id = NEW.run_id AND idx = NEW.idx);
    SELECT RAISE(ABORT, 'baton: illegal state for a new workflow step (steps start pending)')
    WHERE NOT EXISTS (SELECT 1 FROM step_transitions WHERE from_state = '(new)' AND to_state = NEW.state)
      AND (NOT EXISTS (SELECT 1 FROM imports WHERE finished_ms IS NULL)
           OR NOT EXISTS (SELECT 1 FROM step_transitions WHERE to_state = NEW.state));
END;

DROP TRIGGER worktrees_insert_guard;
CREATE TRIGGER worktrees_insert_guard BEFORE INSERT ON worktrees
WHEN NOT EXISTS (SELECT 1 FROM worktree_transitions WHERE from_state = '(new)' AND to_state = NEW.state)
 AND (NOT EXISTS (SELECT 1 FROM imports WHERE finished_ms IS NULL)
      OR NOT EXISTS (SELECT 1 FROM worktree_transitions WHERE to_state = NEW.state))
BEGIN
    SELECT RAISE(ABORT, 'baton: a worktree starts planned');
END;

-- A restored task that ended before the move brings its finish hook's row as it was.
DROP TRIGGER jobs_finish_hook_insert;
CREATE TRIGGER jobs_finish_hook_insert AFTER INSERT ON jobs
WHEN (NEW.state = 'succeeded' OR NEW.state = 'failed' OR NEW.state = 'canceled')
 AND NEW.workflow_run_id IS NULL AND EXISTS (SELECT 1 FROM hooks WHERE name = 'onFinish')
 AND NOT EXISTS (SELECT 1 FROM imports WHERE finished_ms IS NULL)
BEGIN
    INSERT OR IGNORE INTO finish_hooks (task_id, finished_ms) VALUES (NEW.id, NEW.finished_ms);
END;

PRAGMA user_version = 13;
