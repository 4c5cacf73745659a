-- baton queue schema, version 1.
--
-- Timestamps are integer milliseconds since the Unix epoch (UTC); the v_* views show them as
-- ISO-8601 text. States are lowercase words. Legal state changes live in the *_transitions
-- tables and are enforced by triggers, so a hand-written UPDATE through sqlite3 cannot move a
-- job or a worker into a state the code would never produce. The row '(new)' -> s lists the
-- states a row may be inserted in.

CREATE TABLE job_transitions (
    from_state TEXT NOT NULL,
    to_state   TEXT NOT NULL,
    PRIMARY KEY (from_state, to_state)
) WITHOUT ROWID;

INSERT INTO job_transitions (from_state, to_state) VALUES
    ('(new)',   'queued'),
    ('queued',  'running'),
    ('queued',  'failed'),      -- can never run (unknown profile...)
    ('queued',  'canceled'),
    ('running', 'succeeded'),
    ('running', 'failed'),
    ('running', 'canceled'),
    ('running', 'queued');      -- retry after a lost worker

CREATE TABLE jobs (
    seq                 INTEGER PRIMARY KEY NOT NULL,   -- insertion order
    id                  TEXT    NOT NULL UNIQUE,        -- UUID v4
    state               TEXT    NOT NULL,
    kind                TEXT    NOT NULL DEFAULT 'worker',
    profile             TEXT    NOT NULL,               -- workerId
    task                TEXT    NOT NULL,               -- the task text as given
    session             TEXT,
    requested_by        TEXT    NOT NULL,
    project_dir         TEXT    NOT NULL,               -- where the worker runs
    argv                TEXT    NOT NULL,               -- JSON array, resolved at enqueue
    prompt_stdin        INTEGER NOT NULL DEFAULT 0 CHECK (prompt_stdin IN (0, 1)),
    model               TEXT,                           -- resolved model, NULL = CLI default
    env                 TEXT    NOT NULL DEFAULT '{}',  -- JSON object: the profile's env
    attachments         TEXT    NOT NULL DEFAULT '[]',  -- JSON array of absolute paths
    priority            INTEGER NOT NULL DEFAULT 0,
    attempt             INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts        INTEGER NOT NULL CHECK (max_attempts >= 1),
    run_after_ms        INTEGER NOT NULL,
    timeout_ms          INTEGER NOT NULL CHECK (timeout_ms > 0),
    profile_limit       INTEGER CHECK (profile_limit IS NULL OR profile_limit >= 1),
    created_ms          INTEGER NOT NULL,
    started_ms          INTEGER,
    finished_ms         INTEGER,
    response            TEXT,
    response_chars      INTEGER,
    error               TEXT,
    report              TEXT,                           -- JSON
    exit_code           INTEGER,
    owner               TEXT,                           -- dispatcher id while running
    epoch               INTEGER,                        -- lease epoch of that owner
    output_tail         TEXT,
    cancel_requested_ms INTEGER,
    cancel_reason       TEXT,
    workflow_run_id     TEXT,
    workflow_step       INTEGER,
    dedup_key           TEXT,
    tokens              INTEGER,
    cost_usd            REAL,
    CHECK (state NOT IN ('succeeded', 'failed', 'canceled') OR finished_ms IS NOT NULL),
    CHECK (state <> 'running' OR (owner IS NOT NULL AND epoch IS NOT NULL AND started_ms IS NOT NULL))
);

-- The claim scans this in order: higher priority first, then oldest.
CREATE INDEX jobs_queue ON jobs (priority DESC, seq) WHERE state = 'queued';
CREATE INDEX jobs_due ON jobs (run_after_ms) WHERE state = 'queued';
CREATE INDEX jobs_running ON jobs (profile, session) WHERE state = 'running';
CREATE INDEX jobs_finished ON jobs (finished_ms) WHERE finished_ms IS NOT NULL;
CREATE INDEX jobs_session ON jobs (session, seq);
-- A dedup key names at most one unfinished job.
CREATE UNIQUE INDEX jobs_dedup ON jobs (dedup_key)
    WHERE dedup_key IS NOT NULL AND state IN ('queued', 'running');

CREATE TRIGGER jobs_insert_guard BEFORE INSERT ON jobs
BEGIN
    SELECT RAISE(ABORT, 'baton: a job with this id already exists')
    WHERE EXISTS (SELECT 1 FROM jobs WHERE id = NEW.id OR seq = NEW.seq);
    SELECT RAISE(ABORT, 'baton: illegal job state for a new job (jobs start queued)')
    WHERE NOT EXISTS (SELECT 1 FROM job_transitions WHERE from_state = '(new)' AND to_state = NEW.state);
END;

CREATE TRIGGER jobs_state_guard BEFORE UPDATE OF state ON jobs
BEGIN
    SELECT RAISE(ABORT, 'baton: illegal job transition (see job_transitions)')
    WHERE NOT EXISTS (SELECT 1 FROM job_transitions WHERE from_state = OLD.state AND to_state = NEW.state);
END;

CREATE TRIGGER jobs_id_guard BEFORE UPDATE OF id, seq ON jobs
WHEN NEW.id IS NOT OLD.id OR NEW.seq IS NOT OLD.seq
BEGIN
    SELECT RAISE(ABORT, 'baton: a job id never changes');
END;

-- Workers: one row per OS process. Oneshot workers are inserted busy (their one job is known
-- at spawn); server workers start in 'starting'.
CREATE TABLE worker_transitions (
    kind       TEXT NOT NULL,
    from_state TEXT NOT NULL,
    to_state   TEXT NOT NULL,
    PRIMARY KEY (kind, from_state, to_state)
) WITHOUT ROWID;

INSERT INTO worker_transitions (kind, from_state, to_state) VALUES
    ('oneshot', '(new)',    'busy'),
    ('oneshot', 'busy',     'stopped'),
    ('oneshot', 'busy',     'error'),
    ('oneshot', 'error',    'stopped'),
    ('server',  '(new)',    'starting'),
    ('server',  'starting', 'ready'),
    ('server',  'starting', 'error'),
    ('server',  'starting', 'stopped'),
    ('server',  'ready',    'busy'),
    ('server',  'ready',    'error'),
    ('server',  'ready',    'stopped'),
    ('server',  'busy',     'ready'),
    ('server',  'busy',     'error'),
    ('server',  'busy',     'stopped'),
    ('server',  'error',    'stopped');

CREATE TABLE workers (
    seq              INTEGER PRIMARY KEY NOT NULL,
    id               TEXT    NOT NULL UNIQUE,
    profile          TEXT    NOT NULL,
    kind             TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    pid              INTEGER,
    pid_start        INTEGER,             -- /proc/PID/stat starttime (clock ticks since boot)
    pgid             INTEGER,
    owner            TEXT    NOT NULL,    -- dispatcher id
    epoch            INTEGER NOT NULL,
    session          TEXT,
    job_id           TEXT,                -- current job
    attempt          INTEGER,
    model            TEXT,
    started_ms       INTEGER NOT NULL,
    last_activity_ms INTEGER NOT NULL,
    finished_ms      INTEGER,
    exit_code        INTEGER,
    error            TEXT
);

CREATE INDEX workers_job ON workers (job_id);
CREATE INDEX workers_live ON workers (session) WHERE state IN ('starting', 'ready', 'busy');
-- At most one live server worker per profile: the spawn-deduplication backstop.
CREATE UNIQUE INDEX workers_one_server ON workers (profile)
    WHERE kind = 'server' AND state IN ('starting', 'ready', 'busy');

CREATE TRIGGER workers_insert_guard BEFORE INSERT ON workers
BEGIN
    SELECT RAISE(ABORT, 'baton: a worker with this id already exists')
    WHERE EXISTS (SELECT 1 FROM workers WHERE id = NEW.id OR seq = NEW.seq);
    SELECT RAISE(ABORT, 'baton: illegal worker state for a new worker (see worker_transitions)')
    WHERE NOT EXISTS (SELECT 1 FROM worker_transitions
                      WHERE kind = NEW.kind AND from_state = '(new)' AND to_state = NEW.state);
END;

CREATE TRIGGER workers_state_guard BEFORE UPDATE OF state, kind ON workers
BEGIN
    SELECT RAISE(ABORT, 'baton: a worker kind never changes') WHERE NEW.kind IS NOT OLD.kind;
    SELECT RAISE(ABORT, 'baton: illegal worker transition (see worker_transitions)')
    WHERE NOT EXISTS (SELECT 1 FROM worker_transitions
                      WHERE kind = OLD.kind AND from_state = OLD.state AND to_state = NEW.state);
END;

-- When a job leaves 'running', its oneshot worker's row ends with it: 'stopped' when baton saw
-- the process exit (an exit code is recorded), 'error' when the worker was lost.
CREATE TRIGGER jobs_release_worker AFTER UPDATE OF state ON jobs
WHEN OLD.state = 'running'
BEGIN
    UPDATE workers
       SET state = CASE WHEN NEW.exit_code IS NOT NULL OR NEW.state = 'canceled' THEN 'stopped' ELSE 'error' END,
           exit_code = NEW.exit_code,
           finished_ms = NEW.finished_ms,
           last_activity_ms = coalesce(NEW.finished_ms, last_activity_ms),
           error = CASE WHEN NEW.state IN ('failed', 'queued') THEN NEW.error END
     WHERE job_id = NEW.id AND kind = 'oneshot' AND state = 'busy';
END;

-- Worker rows go with their job when it is pruned.
CREATE TRIGGER jobs_delete_workers AFTER DELETE ON jobs
BEGIN
    DELETE FROM workers WHERE job_id = OLD.id AND kind = 'oneshot';
END;

-- The dispatcher lease: one row. The leader holds .baton/dispatcher.lock for its whole life;
-- the epoch only increases, and every owner write is fenced by (owner, epoch).
CREATE TABLE dispatcher_lease (
    singleton    INTEGER PRIMARY KEY CHECK (singleton = 1),
    owner        TEXT    NOT NULL,
    epoch        INTEGER NOT NULL,
    pid          INTEGER NOT NULL,
    started_ms   INTEGER NOT NULL,
    heartbeat_ms INTEGER NOT NULL
);

CREATE TRIGGER lease_epoch_guard BEFORE UPDATE OF epoch ON dispatcher_lease
WHEN NEW.epoch <= OLD.epoch
BEGIN
    SELECT RAISE(ABORT, 'baton: the lease epoch only increases');
END;

-- Views for people (they may use 'now'; code never reads them).
CREATE VIEW v_jobs AS
SELECT id,
       state,
       profile,
       attempt || '/' || max_attempts AS attempts,
       priority,
       session,
       strftime('%Y-%m-%dT%H:%M:%fZ', created_ms / 1000.0, 'unixepoch') AS created_at,
       strftime('%Y-%m-%dT%H:%M:%fZ', started_ms / 1000.0, 'unixepoch') AS started_at,
       strftime('%Y-%m-%dT%H:%M:%fZ', finished_ms / 1000.0, 'unixepoch') AS finished_at,
       CASE
           WHEN finished_ms IS NOT NULL AND started_ms IS NOT NULL THEN finished_ms - started_ms
           WHEN state = 'running' THEN CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER) - started_ms
       END AS duration_ms,
       exit_code,
       substr(replace(replace(task, char(10), ' '), char(13), ' '), 1, 60) AS message,
       error
  FROM jobs
 ORDER BY seq DESC;

CREATE VIEW v_workers AS
SELECT id, profile, kind, state, pid, job_id, session,
       strftime('%Y-%m-%dT%H:%M:%fZ', started_ms / 1000.0, 'unixepoch') AS started_at,
       strftime('%Y-%m-%dT%H:%M:%fZ', last_activity_ms / 1000.0, 'unixepoch') AS last_activity_at,
       exit_code, error
  FROM workers
 ORDER BY seq DESC;

PRAGMA application_id = 1111577678;  -- 0x4241544E, 'BATN': see store::APPLICATION_ID
PRAGMA user_version = 1;
