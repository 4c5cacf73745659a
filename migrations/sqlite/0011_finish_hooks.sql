-- baton queue schema, version 11: the finish hook's outbox.
--
-- `hooks` holds the configured hook as the dispatcher last read it from the configuration
-- (`hooks.onFinish`, an argv template); no row, no hook. While there is one, every task or
-- workflow run that ends gets a `finish_hooks` row in the same transaction as its ending: the
-- outbox the dispatcher runs the hook from, after that transaction and outside it. A row is
-- marked started (attempts + 1) before the hook process runs and done after it ended, timed out
-- or could not start, so a dispatcher that dies in between leaves it for the next one: at least
-- once, at most `attempts` 3 times, and never again once done.
--
--   sqlite3 .baton/baton.db "select * from finish_hooks where done_ms is null"

CREATE TABLE hooks (
    name       TEXT    PRIMARY KEY NOT NULL CHECK (name IN ('onFinish')),
    argv       TEXT    NOT NULL CHECK (json_valid(argv) AND json_type(argv) = 'array' AND json_array_length(argv) > 0),
    updated_ms INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE finish_hooks (
    task_id     TEXT    PRIMARY KEY NOT NULL,   -- a job's id or a workflow run's
    finished_ms INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0 CHECK (attempts BETWEEN 0 AND 3),
    started_ms  INTEGER,
    done_ms     INTEGER,
    exit_code   INTEGER,
    error       TEXT,                           -- why the hook failed, timed out or did not run
    CHECK (done_ms IS NULL OR attempts > 0 OR error IS NOT NULL)
) WITHOUT ROWID;
CREATE INDEX finish_hooks_pending ON finish_hooks (finished_ms) WHERE done_ms IS NULL;

CREATE TRIGGER finish_hooks_done_guard BEFORE UPDATE ON finish_hooks
WHEN OLD.done_ms IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'baton: a finish hook that ran never runs again');
END;
CREATE TRIGGER finish_hooks_id_guard BEFORE UPDATE OF task_id, finished_ms ON finish_hooks
WHEN NEW.task_id IS NOT OLD.task_id OR NEW.finished_ms IS NOT OLD.finished_ms
BEGIN
    SELECT RAISE(ABORT, 'baton: a finish hook''s task and finishing time never change');
END;

-- A workflow's step jobs are part of their run: the run's end is the one that counts.
CREATE TRIGGER jobs_finish_hook AFTER UPDATE OF state ON jobs
WHEN NEW.state IN ('succeeded', 'failed', 'canceled') AND OLD.state IS NOT NEW.state
 AND NEW.workflow_run_id IS NULL AND EXISTS (SELECT 1 FROM hooks WHERE name = 'onFinish')
BEGIN
    INSERT OR IGNORE INTO finish_hooks (task_id, finished_ms) VALUES (NEW.id, NEW.finished_ms);
END;
-- A task refused at its start (an unknown profile...) is inserted finished.
CREATE TRIGGER jobs_finish_hook_insert AFTER INSERT ON jobs
WHEN NEW.state IN ('succeeded', 'failed', 'canceled')
 AND NEW.workflow_run_id IS NULL AND EXISTS (SELECT 1 FROM hooks WHERE name = 'onFinish')
BEGIN
    INSERT OR IGNORE INTO finish_hooks (task_id, finished_ms) VALUES (NEW.id, NEW.finished_ms);
END;
CREATE TRIGGER workflow_runs_finish_hook AFTER UPDATE OF state ON workflow_runs
WHEN NEW.state IN ('succeeded', 'failed', 'canceled') AND OLD.state IS NOT NEW.state
 AND EXISTS (SELECT 1 FROM hooks WHERE name = 'onFinish')
BEGIN
    INSERT OR IGNORE INTO finish_hooks (task_id, finished_ms) VALUES (NEW.id, NEW.finished_ms);
END;
CREATE TRIGGER jobs_delete_finish_hook AFTER DELETE ON jobs
BEGIN
    DELETE FROM finish_hooks WHERE task_id = OLD.id;
END;
CREATE TRIGGER workflow_runs_delete_finish_hook AFTER DELETE ON workflow_runs
BEGIN
    DELETE FROM finish_hooks WHERE task_id = OLD.id;
END;

PRAGMA user_version = 11;
