-- baton queue schema, version 2: durable workflow runs.
--
-- A run is a row of workflow_runs (its id is the task id task_start answers) with one row of
-- workflow_steps per step; each started step is one job of the queue (jobs.workflow_run_id,
-- jobs.workflow_step). The carry handed from step to step is stored on the run after every
-- step. Run states use the job words; a run takes no concurrency slot. As for jobs, the legal
-- state changes live in transitions tables and triggers refuse any other.

CREATE TABLE run_transitions (
    from_state TEXT NOT NULL,
    to_state   TEXT NOT NULL,
    PRIMARY KEY (from_state, to_state)
) WITHOUT ROWID;

INSERT INTO run_transitions (from_state, to_state) VALUES
    ('(new)',   'running'),
    ('running', 'succeeded'),
    ('running', 'failed'),
    ('running', 'canceled');

CREATE TABLE step_transitions (
    from_state TEXT NOT NULL,
    to_state   TEXT NOT NULL,
    PRIMARY KEY (from_state, to_state)
) WITHOUT ROWID;

INSERT INTO step_transitions (from_state, to_state) VALUES
    ('(new)',   'pending'),
    ('pending', 'running'),
    ('pending', 'skipped'),
    ('pending', 'canceled'),
    ('running', 'succeeded'),
    ('running', 'failed'),
    ('running', 'canceled');

CREATE TABLE workflow_runs (
    seq                 INTEGER PRIMARY KEY NOT NULL,
    id                  TEXT    NOT NULL UNIQUE,   -- the task id of the run
    workflow_id         TEXT    NOT NULL,
    name                TEXT    NOT NULL,
    state               TEXT    NOT NULL,
    task                TEXT    NOT NULL,
    session             TEXT,
    requested_by        TEXT    NOT NULL,
    project_dir         TEXT    NOT NULL,
    priority            INTEGER NOT NULL DEFAULT 0,
    max_attempts        INTEGER NOT NULL CHECK (max_attempts >= 1),
    max_carry_chars     INTEGER NOT NULL CHECK (max_carry_chars >= 15),
    carry               TEXT    NOT NULL DEFAULT '',
    current_step        INTEGER,                   -- index of the step running now
    created_ms          INTEGER NOT NULL,
    finished_ms         INTEGER,
    response            TEXT,                      -- the last step's response
    error               TEXT,
    cancel_requested_ms INTEGER,
    cancel_reason       TEXT,
    CHECK (state NOT IN ('succeeded', 'failed', 'canceled') OR finished_ms IS NOT NULL)
);

CREATE INDEX workflow_runs_finished ON workflow_runs (finished_ms) WHERE finished_ms IS NOT NULL;

CREATE TABLE workflow_steps (
    run_id        TEXT    NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    idx           INTEGER NOT NULL CHECK (idx >= 0),
    step_id       TEXT    NOT NULL,
    title         TEXT    NOT NULL,
    worker_id     TEXT    NOT NULL,
    prompt        TEXT    NOT NULL,                -- the template ({task}, {carry})
    carry         INTEGER NOT NULL CHECK (carry IN (0, 1)),
    timeout_ms    INTEGER NOT NULL CHECK (timeout_ms > 0),
    -- How to run it, resolved from the requester's config when the run started.
    runner        TEXT    NOT NULL,                -- JSON argv template
    model         TEXT,
    system_prompt TEXT,
    prompt_via    TEXT    NOT NULL DEFAULT 'arg',
    env           TEXT    NOT NULL DEFAULT '{}',
    profile_limit INTEGER,
    attachments   TEXT    NOT NULL DEFAULT '[]',   -- step 0 only
    state         TEXT    NOT NULL,
    job_id        TEXT,
    carry_in      TEXT,                            -- the carry that went into its prompt
    warning       TEXT,
    error         TEXT,
    started_ms    INTEGER,
    finished_ms   INTEGER,
    PRIMARY KEY (run_id, idx)
) WITHOUT ROWID;

CREATE INDEX workflow_steps_job ON workflow_steps (job_id) WHERE job_id IS NOT NULL;

CREATE TRIGGER workflow_runs_insert_guard BEFORE INSERT ON workflow_runs
BEGIN
    SELECT RAISE(ABORT, 'baton: a workflow run with this id already exists')
    WHERE EXISTS (SELECT 1 FROM workflow_runs WHERE id = NEW.id OR seq = NEW.seq);
    SELECT RAISE(ABORT, 'baton: illegal state for a new workflow run (runs start running)')
    WHERE NOT EXISTS (SELECT 1 FROM run_transitions WHERE from_state = '(new)' AND to_state = NEW.state);
END;

CREATE TRIGGER workflow_runs_state_guard BEFORE UPDATE OF state ON workflow_runs
BEGIN
    SELECT RAISE(ABORT, 'baton: illegal workflow run transition (see run_transitions)')
    WHERE NOT EXISTS (SELECT 1 FROM run_transitions WHERE from_state = OLD.state AND to_state = NEW.state);
END;

CREATE TRIGGER workflow_steps_insert_guard BEFORE INSERT ON workflow_steps
BEGIN
    SELECT RAISE(ABORT, 'baton: this workflow step already exists')
    WHERE EXISTS (SELECT 1 FROM workflow_steps WHERE run_id = NEW.run_id AND idx = NEW.idx);
    SELECT RAISE(ABORT, 'baton: illegal state for a new workflow step (steps start pending)')
    WHERE NOT EXISTS (SELECT 1 FROM step_transitions WHERE from_state = '(new)' AND to_state = NEW.state);
END;

CREATE TRIGGER workflow_steps_state_guard BEFORE UPDATE OF state ON workflow_steps
BEGIN
    SELECT RAISE(ABORT, 'baton: illegal workflow step transition (see step_transitions)')
    WHERE NOT EXISTS (SELECT 1 FROM step_transitions WHERE from_state = OLD.state AND to_state = NEW.state);
END;

-- A step's job canceled by anyone (a canceller, the dispatcher, recovery) cancels its step, the
-- steps after it and the run, in the same statement as the job's own change. Success and
-- failure are advanced by the dispatcher, which computes the carry.
CREATE TRIGGER jobs_cancel_workflow AFTER UPDATE OF state ON jobs
WHEN NEW.state = 'canceled' AND NEW.workflow_run_id IS NOT NULL
BEGIN
    UPDATE workflow_steps SET state = 'canceled', finished_ms = NEW.finished_ms, error = NEW.error
     WHERE run_id = NEW.workflow_run_id AND idx = NEW.workflow_step AND state = 'running';
    UPDATE workflow_steps SET state = 'canceled', finished_ms = NEW.finished_ms
     WHERE run_id = NEW.workflow_run_id AND state = 'pending';
    UPDATE workflow_runs SET state = 'canceled', finished_ms = NEW.finished_ms, current_step = NULL,
                             error = coalesce(NEW.error, 'Canceled')
     WHERE id = NEW.workflow_run_id AND state = 'running';
END;

CREATE VIEW v_workflow_runs AS
SELECT id, workflow_id, state, current_step,
       (SELECT count(*) FROM workflow_steps s WHERE s.run_id = r.id) AS steps,
       strftime('%Y-%m-%dT%H:%M:%fZ', created_ms / 1000.0, 'unixepoch') AS created_at,
       strftime('%Y-%m-%dT%H:%M:%fZ', finished_ms / 1000.0, 'unixepoch') AS finished_at,
       length(carry) AS carry_chars,
       substr(replace(replace(task, char(10), ' '), char(13), ' '), 1, 60) AS message,
       error
  FROM workflow_runs r
 ORDER BY seq DESC;

PRAGMA user_version = 2;
