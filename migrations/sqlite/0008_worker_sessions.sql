-- baton queue schema, version 8: a server worker serves several tasks at once, each in an ACP
-- session of its own.
--
-- A server worker's current tasks are its rows in worker_sessions: one per running attempt, with
-- the session id the agent gave it. The worker is 'busy' while it has one and 'ready' when it has
-- none; it holds at most max_sessions at once (its profile's maxConcurrency when it was
-- registered). workers.job_id and workers.attempt are a oneshot worker's, written with its row.
--
--   sqlite3 .baton/baton.db "select worker_id, job_id, acp_session from worker_sessions"

ALTER TABLE workers ADD COLUMN max_sessions INTEGER NOT NULL DEFAULT 1 CHECK (max_sessions >= 1);

CREATE TRIGGER workers_max_sessions_guard BEFORE UPDATE OF max_sessions ON workers
WHEN NEW.max_sessions IS NOT OLD.max_sessions
BEGIN
    SELECT RAISE(ABORT, 'baton: a worker''s max_sessions never changes (it is set when it is registered)');
END;

CREATE TABLE worker_sessions (
    job_id      TEXT    PRIMARY KEY NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL CHECK (attempt >= 1),
    worker_id   TEXT    NOT NULL REFERENCES workers (id) ON DELETE CASCADE,
    -- The agent's sessionId ('' for one taken over from schema version 7).
    acp_session TEXT    NOT NULL,
    started_ms  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX worker_sessions_worker ON worker_sessions (worker_id);

-- A session is the running attempt of a server job, on a live server worker of its profile run
-- by the job's owner, within the worker's max_sessions.
CREATE TRIGGER worker_sessions_insert_guard BEFORE INSERT ON worker_sessions
BEGIN
    SELECT RAISE(ABORT, 'baton: a worker session is the running attempt of a server job')
    WHERE NOT EXISTS (SELECT 1 FROM jobs
                       WHERE id = NEW.job_id AND state = 'running' AND attempt = NEW.attempt
                         AND worker_kind = 'server');
    SELECT RAISE(ABORT, 'baton: a worker session needs a live server worker of the job''s profile and owner')
    WHERE NOT EXISTS (SELECT 1 FROM workers w JOIN jobs j ON j.id = NEW.job_id
                       WHERE w.id = NEW.worker_id AND w.kind = 'server' AND w.state IN ('ready', 'busy')
                         AND w.profile = j.profile AND w.owner = j.owner AND w.epoch = j.epoch);
    SELECT RAISE(ABORT, 'baton: the server worker serves max_sessions tasks already')
    WHERE (SELECT count(*) FROM worker_sessions WHERE worker_id = NEW.worker_id)
          >= (SELECT max_sessions FROM workers WHERE id = NEW.worker_id);
END;

CREATE TRIGGER worker_sessions_update_guard BEFORE UPDATE ON worker_sessions
BEGIN
    SELECT RAISE(ABORT, 'baton: a worker session never changes (it ends with its attempt)');
END;

CREATE TRIGGER worker_sessions_delete_guard BEFORE DELETE ON worker_sessions
WHEN EXISTS (SELECT 1 FROM jobs WHERE id = OLD.job_id AND state = 'running' AND attempt = OLD.attempt)
BEGIN
    SELECT RAISE(ABORT, 'baton: a worker session ends only with its attempt');
END;

-- Taking a session makes the worker busy; giving back its last makes it ready again.
CREATE TRIGGER worker_sessions_take AFTER INSERT ON worker_sessions
BEGIN
    UPDATE workers SET state = 'busy' WHERE id = NEW.worker_id AND state = 'ready';
    UPDATE workers SET last_activity_ms = max(last_activity_ms, NEW.started_ms) WHERE id = NEW.worker_id;
END;

CREATE TRIGGER worker_sessions_give_back AFTER DELETE ON worker_sessions
BEGIN
    UPDATE workers
       SET state = 'ready',
           last_activity_ms = max(last_activity_ms,
                                  coalesce((SELECT finished_ms FROM jobs WHERE id = OLD.job_id), 0))
     WHERE id = OLD.worker_id AND state = 'busy'
       AND NOT EXISTS (SELECT 1 FROM worker_sessions WHERE worker_id = OLD.worker_id);
END;

-- Version 7's busy server workers keep their job, as a session.
INSERT INTO worker_sessions (job_id, attempt, worker_id, acp_session, started_ms)
SELECT w.job_id, w.attempt, w.id, '', w.last_activity_ms
  FROM workers w JOIN jobs j ON j.id = w.job_id AND j.state = 'running' AND j.attempt = w.attempt
 WHERE w.kind = 'server' AND w.state = 'busy';

DROP TRIGGER workers_job_guard;
UPDATE workers SET job_id = NULL, attempt = NULL WHERE kind = 'server' AND job_id IS NOT NULL;

CREATE TRIGGER workers_job_guard BEFORE UPDATE OF job_id, attempt ON workers
WHEN NEW.job_id IS NOT OLD.job_id OR NEW.attempt IS NOT OLD.attempt
BEGIN
    SELECT RAISE(ABORT, 'baton: a worker''s job never changes (a oneshot worker''s is written with its row; a server worker''s tasks are its worker_sessions)');
END;

-- A server job's session ends when the job leaves 'running' (finished, or queued again). Its
-- owner marks the worker 'error' or 'stopped' first when the job ended with the worker, so then
-- there is nothing busy to give back.
DROP TRIGGER jobs_release_server_worker;
CREATE TRIGGER jobs_release_server_worker AFTER UPDATE OF state ON jobs
WHEN OLD.state = 'running' AND NEW.worker_kind = 'server'
BEGIN
    DELETE FROM worker_sessions WHERE job_id = NEW.id;
END;

DROP VIEW v_workers;
CREATE VIEW v_workers AS
SELECT id, profile, kind, state, pid,
       coalesce(job_id, (SELECT group_concat(s.job_id, ',') FROM worker_sessions s WHERE s.worker_id = workers.id))
           AS job_id,
       max_sessions, session,
       strftime('%Y-%m-%dT%H:%M:%fZ', started_ms / 1000.0, 'unixepoch') AS started_at,
       strftime('%Y-%m-%dT%H:%M:%fZ', last_activity_ms / 1000.0, 'unixepoch') AS last_activity_at,
       exit_code, error
  FROM workers
 ORDER BY seq DESC;

PRAGMA user_version = 8;
