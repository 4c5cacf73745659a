-- baton queue schema, version 4: long-lived server workers.
--
-- A job records at enqueue which kind of worker runs it (resolved from the requester's config
-- like the argv): 'oneshot' (one process per job) or 'server' (the profile's long-lived process,
-- fed over the JSON-lines protocol of src/server.rs; the argv is the server's command). A server
-- worker's row is registered 'starting' before its process exists; the unique partial index
-- workers_one_server (version 1) allows one live server worker per profile.

ALTER TABLE jobs ADD COLUMN worker_kind TEXT NOT NULL DEFAULT 'oneshot'
    CHECK (worker_kind IN ('oneshot', 'server'));
ALTER TABLE workflow_steps ADD COLUMN worker_kind TEXT NOT NULL DEFAULT 'oneshot'
    CHECK (worker_kind IN ('oneshot', 'server'));

-- `baton workers stop`: the request, for the dispatcher that owns the worker (which looks for
-- requests on every wake, next to cancel requests: an index of the few rows with one).
ALTER TABLE workers ADD COLUMN stop_requested_ms INTEGER;
CREATE INDEX workers_stop_requested ON workers (owner, epoch) WHERE stop_requested_ms IS NOT NULL;

-- Server spawns are rate-limited: the newest server spawn is one index probe away.
CREATE INDEX workers_server_spawns ON workers (started_ms) WHERE kind = 'server';

-- A server worker goes back to 'ready' with the statement that ends its job. Its owner marks it
-- 'error' or 'stopped' first when the job ended with the worker (it died, timed out, broke the
-- protocol, or was stopped), so then there is nothing busy left to release.
CREATE TRIGGER jobs_release_server_worker AFTER UPDATE OF state ON jobs
WHEN OLD.state = 'running' AND NEW.worker_kind = 'server'
     AND NEW.state IN ('succeeded', 'failed', 'canceled')
BEGIN
    UPDATE workers
       SET state = 'ready', job_id = NULL, attempt = NULL,
           last_activity_ms = coalesce(NEW.finished_ms, last_activity_ms)
     WHERE job_id = NEW.id AND kind = 'server' AND state = 'busy';
END;

PRAGMA user_version = 4;
