-- baton queue schema, version 10: dependencies (a task waits for others), labels and pauses.
--
-- A task started with `--after A,B` is inserted 'waiting' with its dependencies in `after`; the
-- triggers below move it, in the same transaction as the change that decides it: to 'queued'
-- once every dependency succeeded (with `--after-any`: once every one finished), to 'failed'
-- with "Dependency <id> failed" as soon as one failed or was canceled (and so on down the
-- chain). A dependency is always an older task, so dependencies never form a cycle.
--
--   sqlite3 .baton/baton.db "select job_id, dep_id, need from job_deps"
--   sqlite3 .baton/baton.db "select * from v_job_deps where not met"

-- The job state machine gains 'waiting' -----------------------------------------------------------

DROP TRIGGER job_transitions_insert_guard;
DROP TRIGGER job_transitions_update_guard;
DROP TRIGGER job_transitions_delete_guard;

INSERT INTO job_transitions (from_state, to_state) VALUES
    ('(new)',   'waiting'),
    ('waiting', 'queued'),      -- every dependency met
    ('waiting', 'failed'),      -- a dependency failed or was canceled
    ('waiting', 'canceled');

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

DROP TRIGGER jobs_insert_guard;
CREATE TRIGGER jobs_insert_guard BEFORE INSERT ON jobs
BEGIN
    SELECT RAISE(ABORT, 'baton: a job with this id already exists')
    WHERE EXISTS (SELECT 1 FROM jobs WHERE id = NEW.id OR seq = NEW.seq);
    SELECT RAISE(ABORT, 'baton: illegal job state for a new job (jobs start queued, or waiting for dependencies)')
    WHERE NOT EXISTS (SELECT 1 FROM job_transitions WHERE from_state = '(new)' AND to_state = NEW.state);
    SELECT RAISE(ABORT, 'baton: a job starts waiting exactly when it has dependencies (after)')
    WHERE (NEW.state = 'waiting') IS NOT (NEW.after IS NOT NULL);
END;

-- A waiting job is unfinished like a queued one: one dedup key, never deleted, its worktree kept.
DROP INDEX jobs_dedup;
CREATE UNIQUE INDEX jobs_dedup ON jobs (dedup_key)
    WHERE dedup_key IS NOT NULL AND state IN ('waiting', 'queued', 'running');
CREATE INDEX jobs_waiting ON jobs (seq) WHERE state = 'waiting';

DROP TRIGGER worktrees_delete_guard;
CREATE TRIGGER worktrees_delete_guard BEFORE DELETE ON worktrees
WHEN EXISTS (SELECT 1 FROM jobs WHERE worktree_id = OLD.id AND state IN ('waiting', 'queued', 'running'))
BEGIN
    SELECT RAISE(ABORT, 'baton: a worktree of an unfinished task cannot be deleted');
END;

-- Labels and dependencies, written with the job and never changed ----------------------------------

-- labels: a JSON object of short strings ({"area": "db"}); after: a JSON array of the task ids
-- it waits for; after_any: 1 when it runs once they finished, whatever their outcome.
ALTER TABLE jobs ADD COLUMN labels TEXT CHECK (labels IS NULL OR json_type(labels) = 'object');
ALTER TABLE jobs ADD COLUMN after TEXT CHECK (after IS NULL OR json_type(after) = 'array');
ALTER TABLE jobs ADD COLUMN after_any INTEGER NOT NULL DEFAULT 0 CHECK (after_any IN (0, 1));

CREATE TRIGGER jobs_labels_guard BEFORE UPDATE OF labels, after, after_any ON jobs
WHEN (NEW.labels, NEW.after, NEW.after_any) IS NOT (OLD.labels, OLD.after, OLD.after_any)
BEGIN
    SELECT RAISE(ABORT, 'baton: a job''s labels and dependencies never change');
END;

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

-- One row per (waiting job, dependency), derived from jobs.after by jobs_deps_insert: the index
-- that finds a finishing job's dependents. need: 'succeeded', or 'finished' (after_any).
CREATE TABLE job_deps (
    job_id TEXT NOT NULL,
    dep_id TEXT NOT NULL,
    need   TEXT NOT NULL CHECK (need IN ('succeeded', 'finished')),
    PRIMARY KEY (job_id, dep_id)
) WITHOUT ROWID;
CREATE INDEX job_deps_dep ON job_deps (dep_id);

CREATE TRIGGER job_deps_insert_guard BEFORE INSERT ON job_deps
BEGIN
    SELECT RAISE(ABORT, 'baton: dependencies are written with their job, which starts waiting')
    WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE id = NEW.job_id AND state = 'waiting');
    SELECT RAISE(ABORT, 'baton: a dependency is an older task (so dependencies never form a cycle)')
    WHERE NOT EXISTS (SELECT 1 FROM jobs j, jobs d
                       WHERE j.id = NEW.job_id AND d.id = NEW.dep_id AND d.seq < j.seq);
END;
CREATE TRIGGER job_deps_update_guard BEFORE UPDATE ON job_deps
BEGIN
    SELECT RAISE(ABORT, 'baton: a job''s labels and dependencies never change');
END;
CREATE TRIGGER job_deps_delete_guard BEFORE DELETE ON job_deps
WHEN EXISTS (SELECT 1 FROM jobs WHERE id = OLD.job_id)
BEGIN
    SELECT RAISE(ABORT, 'baton: a dependency goes only with its job (pruning)');
END;
CREATE TRIGGER jobs_delete_deps AFTER DELETE ON jobs
BEGIN
    DELETE FROM job_deps WHERE job_id = OLD.id;
END;

-- Deleting a job (pruning) takes only finished ones, and none that a waiting job still needs.
DROP TRIGGER jobs_delete_guard;
CREATE TRIGGER jobs_delete_guard BEFORE DELETE ON jobs
BEGIN
    SELECT RAISE(ABORT, 'baton: an unfinished job cannot be deleted (cancel it; pruning deletes finished jobs)')
    WHERE OLD.state IN ('waiting', 'queued', 'running');
    SELECT RAISE(ABORT, 'baton: a waiting job depends on this one: it is kept until that job ends')
    WHERE EXISTS (SELECT 1 FROM job_deps d JOIN jobs w ON w.id = d.job_id
                   WHERE d.dep_id = OLD.id AND w.state = 'waiting');
END;

-- Each dependency of each job and whether it is met (the dependency succeeded, or finished for
-- need 'finished') or broken (it failed or was canceled and success was needed).
CREATE VIEW v_job_deps AS
SELECT d.job_id, d.dep_id, d.need, x.state AS dep_state,
       coalesce(x.state = 'succeeded' OR (d.need = 'finished' AND x.state IN ('failed', 'canceled')), 0) AS met,
       coalesce(d.need = 'succeeded' AND x.state IN ('failed', 'canceled'), 0) AS broken
  FROM job_deps d LEFT JOIN jobs x ON x.id = d.dep_id;

-- Nothing queues a waiting job before its dependencies are met (sqlite3 included).
CREATE TRIGGER jobs_waiting_guard BEFORE UPDATE OF state ON jobs
WHEN OLD.state = 'waiting' AND NEW.state = 'queued'
BEGIN
    SELECT RAISE(ABORT, 'baton: a waiting job is queued only once its dependencies are met (see v_job_deps)')
    WHERE EXISTS (SELECT 1 FROM v_job_deps WHERE job_id = NEW.id AND NOT met);
END;

-- A new waiting job: its dependency rows, then the verdict on the ones already decided.
CREATE TRIGGER jobs_deps_insert AFTER INSERT ON jobs
WHEN NEW.after IS NOT NULL
BEGIN
    INSERT INTO job_deps (job_id, dep_id, need)
    SELECT NEW.id, value, CASE NEW.after_any WHEN 1 THEN 'finished' ELSE 'succeeded' END
      FROM json_each(NEW.after);
    UPDATE jobs SET state = 'failed', finished_ms = NEW.created_ms,
                    error = 'Dependency ' || (SELECT min(dep_id) FROM v_job_deps WHERE job_id = NEW.id AND broken) || ' failed'
     WHERE id = NEW.id AND state = 'waiting'
       AND EXISTS (SELECT 1 FROM v_job_deps WHERE job_id = NEW.id AND broken);
    UPDATE jobs SET state = 'queued'
     WHERE id = NEW.id AND state = 'waiting'
       AND NOT EXISTS (SELECT 1 FROM v_job_deps WHERE job_id = NEW.id AND NOT met);
END;

-- A job that failed or was canceled fails every waiting job that needed it to succeed, and theirs
-- in turn (SQLite does not fire a trigger from its own statement, so the chain is one recursive
-- query), each naming the dependency it was waiting for.
CREATE TRIGGER jobs_dependents_fail AFTER UPDATE OF state ON jobs
WHEN NEW.state IN ('failed', 'canceled') AND OLD.state IS NOT NEW.state
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

-- A job that ended queues each waiting dependent whose dependencies are now all met. (This fires
-- for the jobs jobs_dependents_fail ends too, so an after-any task behind a failed chain runs.)
CREATE TRIGGER jobs_dependents_queue AFTER UPDATE OF state ON jobs
WHEN NEW.state IN ('succeeded', 'failed', 'canceled') AND OLD.state IS NOT NEW.state
BEGIN
    UPDATE jobs SET state = 'queued'
     WHERE state = 'waiting' AND id IN (SELECT job_id FROM job_deps WHERE dep_id = NEW.id)
       AND NOT EXISTS (SELECT 1 FROM v_job_deps v WHERE v.job_id = jobs.id AND NOT v.met);
END;

-- Pauses: while a row names a profile (or '*', every profile), the dispatcher claims none of its
-- jobs; running ones go on. `baton pause` inserts, `baton resume` deletes.
CREATE TABLE pauses (
    profile   TEXT    PRIMARY KEY NOT NULL CHECK (length(profile) > 0),
    paused_ms INTEGER NOT NULL,
    paused_by TEXT    NOT NULL
) WITHOUT ROWID;

DROP VIEW v_jobs;
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
       error,
       labels,
       after
  FROM jobs
 ORDER BY seq DESC;

PRAGMA user_version = 10;
