-- baton queue schema on PostgreSQL, version 12 (the SQLite schema's version, in one migration).
--
-- The same tables, states and guarantees as migrations/sqlite/: timestamps are bigint
-- milliseconds since the Unix epoch (UTC), states are lowercase words, JSON is kept as text
-- (checked where SQLite checks it), and legal state changes live in the *_transitions tables,
-- enforced by triggers, so a hand-written UPDATE through psql cannot move a row into a state the
-- code would never produce. The row '(new)' -> s lists the states a row may be inserted in.
--
-- What differs from one SQLite file: several dispatchers (nodes) share the queue. Each registers
-- in `nodes` and renews its heartbeat there; a job or worker it owns names the node (`owner`)
-- and the node's epoch when it claimed it, and every write a node makes is fenced by that pair
-- still being the node's row. A node that stops heart-beating is taken over by another one,
-- which raises its epoch: from then on nothing the old process writes lands.
-- Errors raised by the guards start with 'baton: ' and use SQLSTATE P0001.

CREATE TABLE baton_schema (
    singleton   integer PRIMARY KEY CHECK (singleton = 1),
    application text    NOT NULL CHECK (application = 'baton'),
    version     bigint  NOT NULL
);
INSERT INTO baton_schema VALUES (1, 'baton', 12);

-- The state machines ------------------------------------------------------------------------

CREATE TABLE job_transitions (
    from_state text NOT NULL,
    to_state   text NOT NULL,
    PRIMARY KEY (from_state, to_state)
);
INSERT INTO job_transitions (from_state, to_state) VALUES
    ('(new)',   'queued'),
    ('(new)',   'waiting'),     -- with dependencies (after)
    ('waiting', 'queued'),      -- its dependencies are met
    ('waiting', 'failed'),      -- a dependency failed
    ('waiting', 'canceled'),
    ('queued',  'running'),
    ('queued',  'failed'),      -- can never run (unknown profile...)
    ('queued',  'canceled'),
    ('running', 'succeeded'),
    ('running', 'failed'),
    ('running', 'canceled'),
    ('running', 'queued');      -- retry after a lost worker

CREATE TABLE worker_transitions (
    kind       text NOT NULL,
    from_state text NOT NULL,
    to_state   text NOT NULL,
    PRIMARY KEY (kind, from_state, to_state)
);
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

CREATE TABLE run_transitions (
    from_state text NOT NULL,
    to_state   text NOT NULL,
    PRIMARY KEY (from_state, to_state)
);
INSERT INTO run_transitions (from_state, to_state) VALUES
    ('(new)',   'running'),
    ('running', 'succeeded'),
    ('running', 'failed'),
    ('running', 'canceled');

CREATE TABLE step_transitions (
    from_state text NOT NULL,
    to_state   text NOT NULL,
    PRIMARY KEY (from_state, to_state)
);
INSERT INTO step_transitions (from_state, to_state) VALUES
    ('(new)',   'pending'),
    ('pending', 'running'),
    ('pending', 'skipped'),
    ('pending', 'canceled'),
    ('running', 'succeeded'),
    ('running', 'failed'),
    ('running', 'canceled');

CREATE TABLE worktree_transitions (
    from_state text NOT NULL,
    to_state   text NOT NULL,
    PRIMARY KEY (from_state, to_state)
);
INSERT INTO worktree_transitions (from_state, to_state) VALUES
    ('(new)',   'planned'),
    ('planned', 'ready'),
    ('planned', 'discarded'),
    ('ready',   'merged'),
    ('ready',   'discarded'),
    ('merged',  'discarded');

CREATE FUNCTION baton_transitions_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'baton: % is a state machine: only a migration changes it', TG_TABLE_NAME;
END $$;
CREATE TRIGGER job_transitions_fixed BEFORE INSERT OR UPDATE OR DELETE ON job_transitions
    FOR EACH ROW EXECUTE FUNCTION baton_transitions_fixed();
CREATE TRIGGER worker_transitions_fixed BEFORE INSERT OR UPDATE OR DELETE ON worker_transitions
    FOR EACH ROW EXECUTE FUNCTION baton_transitions_fixed();
CREATE TRIGGER run_transitions_fixed BEFORE INSERT OR UPDATE OR DELETE ON run_transitions
    FOR EACH ROW EXECUTE FUNCTION baton_transitions_fixed();
CREATE TRIGGER step_transitions_fixed BEFORE INSERT OR UPDATE OR DELETE ON step_transitions
    FOR EACH ROW EXECUTE FUNCTION baton_transitions_fixed();
CREATE TRIGGER worktree_transitions_fixed BEFORE INSERT OR UPDATE OR DELETE ON worktree_transitions
    FOR EACH ROW EXECUTE FUNCTION baton_transitions_fixed();
-- TRUNCATE skips row triggers.
CREATE TRIGGER job_transitions_no_truncate BEFORE TRUNCATE ON job_transitions
    FOR EACH STATEMENT EXECUTE FUNCTION baton_transitions_fixed();
CREATE TRIGGER worker_transitions_no_truncate BEFORE TRUNCATE ON worker_transitions
    FOR EACH STATEMENT EXECUTE FUNCTION baton_transitions_fixed();
CREATE TRIGGER run_transitions_no_truncate BEFORE TRUNCATE ON run_transitions
    FOR EACH STATEMENT EXECUTE FUNCTION baton_transitions_fixed();
CREATE TRIGGER step_transitions_no_truncate BEFORE TRUNCATE ON step_transitions
    FOR EACH STATEMENT EXECUTE FUNCTION baton_transitions_fixed();
CREATE TRIGGER worktree_transitions_no_truncate BEFORE TRUNCATE ON worktree_transitions
    FOR EACH STATEMENT EXECUTE FUNCTION baton_transitions_fixed();

-- Nodes: the dispatchers sharing this queue ---------------------------------------------------

CREATE TABLE nodes (
    id           text   PRIMARY KEY CHECK (length(id) > 0),   -- the node id (--node, or the host name)
    epoch        bigint NOT NULL CHECK (epoch >= 1),          -- raised by whoever takes it over
    owner        text   NOT NULL,                             -- the dispatcher process instance
    host         text   NOT NULL,
    pid          bigint NOT NULL,
    labels       text   CHECK (labels IS NULL OR jsonb_typeof(labels::jsonb) = 'object'),
    started_ms   bigint NOT NULL,
    heartbeat_ms bigint NOT NULL,
    stopped_ms   bigint                                       -- left cleanly, or taken over
);

CREATE FUNCTION nodes_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF EXISTS (SELECT 1 FROM jobs WHERE owner = OLD.id AND state = 'running')
           OR EXISTS (SELECT 1 FROM workers WHERE owner = OLD.id AND state IN ('starting', 'ready', 'busy')) THEN
            RAISE EXCEPTION 'baton: a node that owns running jobs or live workers is not deleted (they are taken over first)';
        END IF;
        RETURN OLD;
    END IF;
    IF NEW.id IS DISTINCT FROM OLD.id THEN
        RAISE EXCEPTION 'baton: a node id never changes';
    END IF;
    IF NEW.epoch < OLD.epoch THEN
        RAISE EXCEPTION 'baton: a node''s epoch only increases';
    END IF;
    IF NEW.epoch = OLD.epoch AND (NEW.owner, NEW.pid, NEW.started_ms) IS DISTINCT FROM (OLD.owner, OLD.pid, OLD.started_ms) THEN
        RAISE EXCEPTION 'baton: a node changes hands only with a higher epoch';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER nodes_guard BEFORE UPDATE OR DELETE ON nodes FOR EACH ROW EXECUTE FUNCTION nodes_guard();

-- Worktrees (before jobs, which reference them) ---------------------------------------------

CREATE TABLE worktrees (
    id           text   PRIMARY KEY,     -- the task's id, or the workflow run's
    state        text   NOT NULL,
    repo         text   NOT NULL,
    path         text   NOT NULL UNIQUE,
    subdir       text   NOT NULL DEFAULT '',
    branch       text   NOT NULL UNIQUE CHECK (branch LIKE 'baton/%'),
    base_commit  text   NOT NULL CHECK (length(base_commit) >= 40),
    target       text   NOT NULL,
    auto_commit  bigint NOT NULL CHECK (auto_commit IN (0, 1)),
    setup        text   CHECK (setup IS NULL OR setup::jsonb IS NOT NULL),
    created_ms   bigint NOT NULL,
    ready_ms     bigint,
    merged_ms    bigint,
    merged_how   text   CHECK (merged_how IS NULL OR merged_how IN ('merge', 'squash', 'rebase', 'apply')),
    merge_commit text,
    merged_head  text,
    ended_ms     bigint
);

-- Jobs ---------------------------------------------------------------------------------------

CREATE TABLE jobs (
    seq                 bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,   -- insertion order
    id                  text   NOT NULL UNIQUE,         -- UUID v4
    state               text   NOT NULL,
    kind                text   NOT NULL DEFAULT 'worker',
    profile             text   NOT NULL,                -- workerId
    task                text   NOT NULL,
    session             text,
    requested_by        text   NOT NULL,
    project_dir         text   NOT NULL,
    -- Only this node may claim it (NULL: any node that has project_dir).
    node                text,
    argv                text   NOT NULL,                -- JSON array, resolved at enqueue
    prompt_stdin        bigint NOT NULL DEFAULT 0 CHECK (prompt_stdin IN (0, 1)),
    model               text,
    env                 text   NOT NULL DEFAULT '{}',
    attachments         text   NOT NULL DEFAULT '[]',
    priority            bigint NOT NULL DEFAULT 0,
    attempt             bigint NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts        bigint NOT NULL CHECK (max_attempts >= 1),
    run_after_ms        bigint NOT NULL,
    timeout_ms          bigint NOT NULL CHECK (timeout_ms > 0),
    profile_limit       bigint CHECK (profile_limit IS NULL OR profile_limit >= 1),
    created_ms          bigint NOT NULL,
    started_ms          bigint,
    finished_ms         bigint,
    response            text,
    response_chars      bigint,
    error               text,
    report              text,
    exit_code           bigint,
    owner               text,                           -- the node running it
    epoch               bigint,                         -- that node's epoch when it claimed it
    output_tail         text,
    cancel_requested_ms bigint,
    cancel_reason       text,
    workflow_run_id     text,
    workflow_step       bigint,
    dedup_key           text,
    tokens              bigint,
    cost_usd            double precision,
    output              text,
    worker_kind         text   NOT NULL DEFAULT 'oneshot' CHECK (worker_kind IN ('oneshot', 'server')),
    input_tokens        bigint,
    output_tokens       bigint,
    cached_tokens       bigint,
    system_prompt       text,
    permissions         text   CHECK (permissions IS NULL OR permissions::jsonb IS NOT NULL),
    worktree_id         text   REFERENCES worktrees (id),
    labels              text   CHECK (labels IS NULL OR jsonb_typeof(labels::jsonb) = 'object'),
    after               text   CHECK (after IS NULL OR jsonb_typeof(after::jsonb) = 'array'),
    after_any           bigint NOT NULL DEFAULT 0 CHECK (after_any IN (0, 1)),
    CONSTRAINT jobs_finished_have_a_time CHECK (state NOT IN ('succeeded', 'failed', 'canceled') OR finished_ms IS NOT NULL),
    CONSTRAINT jobs_running_have_an_owner
        CHECK (state <> 'running' OR (owner IS NOT NULL AND epoch IS NOT NULL AND started_ms IS NOT NULL))
);
CREATE INDEX jobs_queue ON jobs (priority DESC, seq) WHERE state = 'queued';
CREATE INDEX jobs_due ON jobs (run_after_ms) WHERE state = 'queued';
CREATE INDEX jobs_running ON jobs (profile, session) WHERE state = 'running';
CREATE INDEX jobs_owned ON jobs (owner) WHERE state = 'running';
CREATE INDEX jobs_finished ON jobs (finished_ms) WHERE finished_ms IS NOT NULL;
CREATE INDEX jobs_session ON jobs (session, seq);
CREATE INDEX jobs_workflow_run ON jobs (workflow_run_id) WHERE workflow_run_id IS NOT NULL;
CREATE INDEX jobs_worktree ON jobs (worktree_id) WHERE worktree_id IS NOT NULL;
CREATE INDEX jobs_waiting ON jobs (seq) WHERE state = 'waiting';
CREATE UNIQUE INDEX jobs_dedup ON jobs (dedup_key)
    WHERE dedup_key IS NOT NULL AND state IN ('waiting', 'queued', 'running');

CREATE TABLE job_deps (
    job_id text NOT NULL,
    dep_id text NOT NULL,
    need   text NOT NULL CHECK (need IN ('succeeded', 'finished')),
    PRIMARY KEY (job_id, dep_id)
);
CREATE INDEX job_deps_dep ON job_deps (dep_id);

CREATE VIEW v_job_deps AS
SELECT d.job_id, d.dep_id, d.need, x.state AS dep_state,
       coalesce(x.state = 'succeeded' OR (d.need = 'finished' AND x.state IN ('failed', 'canceled')), false) AS met,
       coalesce(d.need = 'succeeded' AND x.state IN ('failed', 'canceled'), false) AS broken
  FROM job_deps d LEFT JOIN jobs x ON x.id = d.dep_id;

CREATE FUNCTION jobs_insert_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM job_transitions WHERE from_state = '(new)' AND to_state = NEW.state) THEN
        RAISE EXCEPTION 'baton: illegal job state for a new job (jobs start queued, or waiting for dependencies)';
    END IF;
    IF (NEW.state = 'waiting') IS DISTINCT FROM (NEW.after IS NOT NULL) THEN
        RAISE EXCEPTION 'baton: a job starts waiting exactly when it has dependencies (after)';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER jobs_insert_guard BEFORE INSERT ON jobs FOR EACH ROW EXECUTE FUNCTION jobs_insert_guard();

-- Every rule an UPDATE of a job must keep, in the order SQLite's triggers check them.
CREATE FUNCTION jobs_update_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id IS DISTINCT FROM OLD.id OR NEW.seq IS DISTINCT FROM OLD.seq THEN
        RAISE EXCEPTION 'baton: a job id never changes';
    END IF;
    IF (NEW.profile, NEW.workflow_run_id, NEW.workflow_step, NEW.worktree_id)
       IS DISTINCT FROM (OLD.profile, OLD.workflow_run_id, OLD.workflow_step, OLD.worktree_id) THEN
        RAISE EXCEPTION 'baton: a job''s worker profile, workflow run, step and worktree never change';
    END IF;
    IF (NEW.labels, NEW.after, NEW.after_any, NEW.node) IS DISTINCT FROM (OLD.labels, OLD.after, OLD.after_any, OLD.node) THEN
        RAISE EXCEPTION 'baton: a job''s labels, dependencies and node never change';
    END IF;
    IF NEW.state = OLD.state AND OLD.state IN ('succeeded', 'failed', 'canceled') THEN
        IF NEW IS DISTINCT FROM OLD THEN
            RAISE EXCEPTION 'baton: a finished job never changes (pruning deletes it whole; task retry starts a new job)';
        END IF;
        RETURN NEW;
    END IF;
    IF NEW.state IS DISTINCT FROM OLD.state
       AND NOT EXISTS (SELECT 1 FROM job_transitions WHERE from_state = OLD.state AND to_state = NEW.state) THEN
        RAISE EXCEPTION 'baton: illegal job transition (see job_transitions)';
    END IF;
    IF (NEW.owner, NEW.epoch) IS DISTINCT FROM (OLD.owner, OLD.epoch)
       AND NOT (OLD.state = 'queued' AND NEW.state = 'running')
       AND NOT (OLD.state = 'running' AND NEW.state = 'queued' AND NEW.owner IS NULL AND NEW.epoch IS NULL) THEN
        RAISE EXCEPTION 'baton: a job''s owner and epoch change only when it is claimed (queued -> running) or requeued (running -> queued, owner cleared)';
    END IF;
    IF NEW.attempt IS DISTINCT FROM OLD.attempt
       AND NOT (OLD.state = 'queued' AND NEW.state = 'running' AND NEW.attempt = OLD.attempt + 1) THEN
        RAISE EXCEPTION 'baton: a job''s attempt changes only when it is claimed (queued -> running), by one';
    END IF;
    IF OLD.state = 'waiting' AND NEW.state = 'queued'
       AND EXISTS (SELECT 1 FROM v_job_deps WHERE job_id = NEW.id AND NOT met) THEN
        RAISE EXCEPTION 'baton: a waiting job is queued only once its dependencies are met (see v_job_deps)';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER jobs_update_guard BEFORE UPDATE ON jobs FOR EACH ROW EXECUTE FUNCTION jobs_update_guard();

CREATE FUNCTION jobs_delete_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.state IN ('waiting', 'queued', 'running') THEN
        RAISE EXCEPTION 'baton: an unfinished job cannot be deleted (cancel it; pruning deletes finished jobs)';
    END IF;
    IF EXISTS (SELECT 1 FROM job_deps d JOIN jobs w ON w.id = d.job_id WHERE d.dep_id = OLD.id AND w.state = 'waiting') THEN
        RAISE EXCEPTION 'baton: a waiting job depends on this one: it is kept until that job ends';
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER jobs_delete_guard BEFORE DELETE ON jobs FOR EACH ROW EXECUTE FUNCTION jobs_delete_guard();

-- A new job with dependencies: their rows, then failed at once when one already failed, or
-- queued at once when all are already met.
CREATE FUNCTION jobs_deps_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    cause text;
BEGIN
    INSERT INTO job_deps (job_id, dep_id, need)
    SELECT NEW.id, value, CASE NEW.after_any WHEN 1 THEN 'finished' ELSE 'succeeded' END
      FROM jsonb_array_elements_text(NEW.after::jsonb);
    SELECT min(dep_id) INTO cause FROM v_job_deps WHERE job_id = NEW.id AND broken;
    IF cause IS NOT NULL THEN
        UPDATE jobs SET state = 'failed', finished_ms = NEW.created_ms, error = 'Dependency ' || cause || ' failed'
         WHERE id = NEW.id AND state = 'waiting';
    ELSE
        UPDATE jobs SET state = 'queued'
         WHERE id = NEW.id AND state = 'waiting'
           AND NOT EXISTS (SELECT 1 FROM v_job_deps WHERE job_id = NEW.id AND NOT met);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_deps_insert AFTER INSERT ON jobs
    FOR EACH ROW WHEN (NEW.after IS NOT NULL) EXECUTE FUNCTION jobs_deps_insert();

CREATE FUNCTION job_deps_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NOT EXISTS (SELECT 1 FROM jobs WHERE id = NEW.job_id AND state = 'waiting') THEN
            RAISE EXCEPTION 'baton: dependencies are written with their job, which starts waiting';
        END IF;
        IF NOT EXISTS (SELECT 1 FROM jobs j, jobs d WHERE j.id = NEW.job_id AND d.id = NEW.dep_id AND d.seq < j.seq) THEN
            RAISE EXCEPTION 'baton: a dependency is an older task (so dependencies never form a cycle)';
        END IF;
        RETURN NEW;
    ELSIF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION 'baton: a job''s labels and dependencies never change';
    END IF;
    IF EXISTS (SELECT 1 FROM jobs WHERE id = OLD.job_id) THEN
        RAISE EXCEPTION 'baton: a dependency goes only with its job (pruning)';
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER job_deps_guard BEFORE INSERT OR UPDATE OR DELETE ON job_deps
    FOR EACH ROW EXECUTE FUNCTION job_deps_guard();

-- A job that ended: its dependents queue (all met) or fail (a needed one failed, transitively).
CREATE FUNCTION jobs_dependents() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM job_deps WHERE dep_id = NEW.id) THEN
        RETURN NULL;
    END IF;
    IF NEW.state IN ('failed', 'canceled') THEN
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
    END IF;
    UPDATE jobs SET state = 'queued'
     WHERE state = 'waiting' AND id IN (SELECT job_id FROM job_deps WHERE dep_id = NEW.id)
       AND NOT EXISTS (SELECT 1 FROM v_job_deps v WHERE v.job_id = jobs.id AND NOT v.met);
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_dependents AFTER UPDATE OF state ON jobs
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state AND NEW.state IN ('succeeded', 'failed', 'canceled'))
    EXECUTE FUNCTION jobs_dependents();

CREATE FUNCTION jobs_delete_links() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM job_deps WHERE job_id = OLD.id;
    DELETE FROM workers WHERE job_id = OLD.id AND kind = 'oneshot';
    DELETE FROM finish_hooks WHERE task_id = OLD.id;
    RETURN NULL;
END $$;

-- Workers ------------------------------------------------------------------------------------

CREATE TABLE workers (
    seq               bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    id                text   NOT NULL UNIQUE,
    profile           text   NOT NULL,
    kind              text   NOT NULL,
    state             text   NOT NULL,
    pid               bigint,
    pid_start         bigint,             -- /proc/PID/stat starttime (clock ticks since boot)
    pgid              bigint,
    owner             text   NOT NULL,    -- the node
    epoch             bigint NOT NULL,
    session           text,
    job_id            text,               -- a oneshot worker's job
    attempt           bigint,
    model             text,
    started_ms        bigint NOT NULL,
    last_activity_ms  bigint NOT NULL,
    finished_ms       bigint,
    exit_code         bigint,
    error             text,
    stop_requested_ms bigint,
    max_sessions      bigint NOT NULL DEFAULT 1 CHECK (max_sessions >= 1)
);
CREATE INDEX workers_job ON workers (job_id);
CREATE INDEX workers_live ON workers (session) WHERE state IN ('starting', 'ready', 'busy');
-- One live server worker per profile and node.
CREATE UNIQUE INDEX workers_one_server ON workers (owner, profile)
    WHERE kind = 'server' AND state IN ('starting', 'ready', 'busy');
CREATE INDEX workers_stop_requested ON workers (owner, epoch) WHERE stop_requested_ms IS NOT NULL;
CREATE INDEX workers_server_spawns ON workers (started_ms) WHERE kind = 'server';

CREATE FUNCTION workers_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NOT EXISTS (SELECT 1 FROM worker_transitions
                        WHERE kind = NEW.kind AND from_state = '(new)' AND to_state = NEW.state) THEN
            RAISE EXCEPTION 'baton: illegal worker state for a new worker (see worker_transitions)';
        END IF;
        RETURN NEW;
    ELSIF TG_OP = 'DELETE' THEN
        IF OLD.state IN ('starting', 'ready', 'busy')
           AND (OLD.kind = 'server' OR EXISTS (SELECT 1 FROM jobs WHERE id = OLD.job_id)) THEN
            RAISE EXCEPTION 'baton: a live worker''s row cannot be deleted (stop it: baton workers stop)';
        END IF;
        RETURN OLD;
    END IF;
    IF NEW.kind IS DISTINCT FROM OLD.kind THEN
        RAISE EXCEPTION 'baton: a worker kind never changes';
    END IF;
    IF NEW.state IS DISTINCT FROM OLD.state
       AND NOT EXISTS (SELECT 1 FROM worker_transitions
                        WHERE kind = OLD.kind AND from_state = OLD.state AND to_state = NEW.state) THEN
        RAISE EXCEPTION 'baton: illegal worker transition (see worker_transitions)';
    END IF;
    IF (NEW.id, NEW.seq, NEW.profile, NEW.owner, NEW.epoch) IS DISTINCT FROM (OLD.id, OLD.seq, OLD.profile, OLD.owner, OLD.epoch) THEN
        RAISE EXCEPTION 'baton: a worker''s id, profile, owner and epoch never change';
    END IF;
    IF (NEW.job_id, NEW.attempt) IS DISTINCT FROM (OLD.job_id, OLD.attempt) THEN
        RAISE EXCEPTION 'baton: a worker''s job never changes (a oneshot worker''s is written with its row; a server worker''s tasks are its worker_sessions)';
    END IF;
    IF NEW.max_sessions IS DISTINCT FROM OLD.max_sessions THEN
        RAISE EXCEPTION 'baton: a worker''s max_sessions never changes (it is set when it is registered)';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER workers_guard BEFORE INSERT OR UPDATE OR DELETE ON workers
    FOR EACH ROW EXECUTE FUNCTION workers_guard();

CREATE TABLE worker_sessions (
    job_id      text   PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    attempt     bigint NOT NULL CHECK (attempt >= 1),
    worker_id   text   NOT NULL REFERENCES workers (id) ON DELETE CASCADE,
    acp_session text   NOT NULL,
    started_ms  bigint NOT NULL
);
CREATE INDEX worker_sessions_worker ON worker_sessions (worker_id);

CREATE FUNCTION worker_sessions_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NOT EXISTS (SELECT 1 FROM jobs WHERE id = NEW.job_id AND state = 'running' AND attempt = NEW.attempt
                                          AND worker_kind = 'server') THEN
            RAISE EXCEPTION 'baton: a worker session is the running attempt of a server job';
        END IF;
        -- The worker's row is locked first, so two sessions taken at once count each other.
        PERFORM 1 FROM workers WHERE id = NEW.worker_id FOR UPDATE;
        IF NOT EXISTS (SELECT 1 FROM workers w JOIN jobs j ON j.id = NEW.job_id
                        WHERE w.id = NEW.worker_id AND w.kind = 'server' AND w.state IN ('ready', 'busy')
                          AND w.profile = j.profile AND w.owner = j.owner AND w.epoch = j.epoch) THEN
            RAISE EXCEPTION 'baton: a worker session needs a live server worker of the job''s profile and owner';
        END IF;
        IF (SELECT count(*) FROM worker_sessions WHERE worker_id = NEW.worker_id)
           >= (SELECT max_sessions FROM workers WHERE id = NEW.worker_id) THEN
            RAISE EXCEPTION 'baton: the server worker serves max_sessions tasks already';
        END IF;
        RETURN NEW;
    ELSIF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION 'baton: a worker session never changes (it ends with its attempt)';
    END IF;
    IF EXISTS (SELECT 1 FROM jobs WHERE id = OLD.job_id AND state = 'running' AND attempt = OLD.attempt) THEN
        RAISE EXCEPTION 'baton: a worker session ends only with its attempt';
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER worker_sessions_guard BEFORE INSERT OR UPDATE OR DELETE ON worker_sessions
    FOR EACH ROW EXECUTE FUNCTION worker_sessions_guard();

-- A server worker is busy while it has a session, ready when its last one ends.
CREATE FUNCTION worker_sessions_follow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE workers SET state = 'busy' WHERE id = NEW.worker_id AND state = 'ready';
        UPDATE workers SET last_activity_ms = greatest(last_activity_ms, NEW.started_ms) WHERE id = NEW.worker_id;
        RETURN NULL;
    END IF;
    UPDATE workers
       SET state = 'ready',
           last_activity_ms = greatest(last_activity_ms,
                                       coalesce((SELECT finished_ms FROM jobs WHERE id = OLD.job_id), 0))
     WHERE id = OLD.worker_id AND state = 'busy'
       AND NOT EXISTS (SELECT 1 FROM worker_sessions WHERE worker_id = OLD.worker_id);
    RETURN NULL;
END $$;
CREATE TRIGGER worker_sessions_follow AFTER INSERT OR DELETE ON worker_sessions
    FOR EACH ROW EXECUTE FUNCTION worker_sessions_follow();

-- A job that stops running lets its worker go: a oneshot worker ends with it, a server worker's
-- session for it ends.
CREATE FUNCTION jobs_release_worker() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE workers
       SET state = CASE WHEN NEW.exit_code IS NOT NULL OR NEW.state = 'canceled' THEN 'stopped' ELSE 'error' END,
           exit_code = NEW.exit_code,
           finished_ms = NEW.finished_ms,
           last_activity_ms = coalesce(NEW.finished_ms, last_activity_ms),
           error = CASE WHEN NEW.state IN ('failed', 'queued') THEN NEW.error END
     WHERE job_id = NEW.id AND kind = 'oneshot' AND state = 'busy';
    IF NEW.worker_kind = 'server' THEN
        DELETE FROM worker_sessions WHERE job_id = NEW.id;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_release_worker AFTER UPDATE OF state ON jobs
    FOR EACH ROW WHEN (OLD.state = 'running' AND NEW.state IS DISTINCT FROM OLD.state)
    EXECUTE FUNCTION jobs_release_worker();

-- Activity events ----------------------------------------------------------------------------

CREATE TABLE job_events (
    job_id  text   NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt bigint NOT NULL CHECK (attempt >= 1),
    seq     bigint NOT NULL CHECK (seq >= 1),
    at_ms   bigint NOT NULL,
    kind    text   NOT NULL
            CHECK (kind IN ('message', 'thought', 'tool', 'tool_update', 'plan', 'usage', 'permission', 'other')),
    text    text   NOT NULL,
    payload text   CHECK (payload IS NULL OR payload::jsonb IS NOT NULL),
    PRIMARY KEY (job_id, seq)
);

CREATE FUNCTION job_events_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION 'baton: an event never changes';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM jobs WHERE id = NEW.job_id AND state = 'running' AND attempt = NEW.attempt) THEN
        RAISE EXCEPTION 'baton: events are written only for the running attempt of a job';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER job_events_guard BEFORE INSERT OR UPDATE ON job_events
    FOR EACH ROW EXECUTE FUNCTION job_events_guard();

-- Workflow runs and steps --------------------------------------------------------------------

CREATE TABLE workflow_runs (
    seq                 bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    id                  text   NOT NULL UNIQUE,   -- the task id of the run
    workflow_id         text   NOT NULL,
    name                text   NOT NULL,
    state               text   NOT NULL,
    task                text   NOT NULL,
    session             text,
    requested_by        text   NOT NULL,
    project_dir         text   NOT NULL,
    priority            bigint NOT NULL DEFAULT 0,
    max_attempts        bigint NOT NULL CHECK (max_attempts >= 1),
    max_carry_chars     bigint NOT NULL CHECK (max_carry_chars >= 15),
    carry               text   NOT NULL DEFAULT '',
    current_step        bigint,
    created_ms          bigint NOT NULL,
    finished_ms         bigint,
    response            text,
    error               text,
    cancel_requested_ms bigint,
    cancel_reason       text,
    worktree_id         text   REFERENCES worktrees (id),
    CONSTRAINT workflow_runs_finished_have_a_time
        CHECK (state NOT IN ('succeeded', 'failed', 'canceled') OR finished_ms IS NOT NULL)
);
CREATE INDEX workflow_runs_finished ON workflow_runs (finished_ms) WHERE finished_ms IS NOT NULL;

CREATE TABLE workflow_steps (
    run_id        text   NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    idx           bigint NOT NULL CHECK (idx >= 0),
    step_id       text   NOT NULL,
    title         text   NOT NULL,
    worker_id     text   NOT NULL,
    prompt        text   NOT NULL,
    carry         bigint NOT NULL CHECK (carry IN (0, 1)),
    timeout_ms    bigint NOT NULL CHECK (timeout_ms > 0),
    runner        text   NOT NULL,
    model         text,
    system_prompt text,
    prompt_via    text   NOT NULL DEFAULT 'arg',
    env           text   NOT NULL DEFAULT '{}',
    profile_limit bigint,
    attachments   text   NOT NULL DEFAULT '[]',
    state         text   NOT NULL,
    job_id        text,
    carry_in      text,
    warning       text,
    error         text,
    started_ms    bigint,
    finished_ms   bigint,
    output        text,
    worker_kind   text   NOT NULL DEFAULT 'oneshot' CHECK (worker_kind IN ('oneshot', 'server')),
    permissions   text   CHECK (permissions IS NULL OR permissions::jsonb IS NOT NULL),
    PRIMARY KEY (run_id, idx)
);
CREATE INDEX workflow_steps_job ON workflow_steps (job_id) WHERE job_id IS NOT NULL;

CREATE FUNCTION workflow_runs_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NOT EXISTS (SELECT 1 FROM run_transitions WHERE from_state = '(new)' AND to_state = NEW.state) THEN
            RAISE EXCEPTION 'baton: illegal state for a new workflow run (runs start running)';
        END IF;
        RETURN NEW;
    ELSIF TG_OP = 'DELETE' THEN
        IF OLD.state = 'running' THEN
            RAISE EXCEPTION 'baton: a running workflow run cannot be deleted (cancel it first)';
        END IF;
        RETURN OLD;
    END IF;
    IF (NEW.id, NEW.seq, NEW.workflow_id, NEW.worktree_id) IS DISTINCT FROM (OLD.id, OLD.seq, OLD.workflow_id, OLD.worktree_id) THEN
        RAISE EXCEPTION 'baton: a workflow run''s id, workflow and worktree never change';
    END IF;
    IF NEW.state = OLD.state AND OLD.state IN ('succeeded', 'failed', 'canceled') AND NEW IS DISTINCT FROM OLD THEN
        RAISE EXCEPTION 'baton: a finished workflow run never changes (pruning deletes it whole)';
    END IF;
    IF NEW.state IS DISTINCT FROM OLD.state
       AND NOT EXISTS (SELECT 1 FROM run_transitions WHERE from_state = OLD.state AND to_state = NEW.state) THEN
        RAISE EXCEPTION 'baton: illegal workflow run transition (see run_transitions)';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER workflow_runs_guard BEFORE INSERT OR UPDATE OR DELETE ON workflow_runs
    FOR EACH ROW EXECUTE FUNCTION workflow_runs_guard();

-- A run goes whole: its jobs, steps and finish hook with it.
CREATE FUNCTION workflow_runs_delete_whole() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM jobs WHERE workflow_run_id = OLD.id;
    DELETE FROM workflow_steps WHERE run_id = OLD.id;
    DELETE FROM finish_hooks WHERE task_id = OLD.id;
    RETURN NULL;
END $$;
CREATE TRIGGER workflow_runs_delete_whole AFTER DELETE ON workflow_runs
    FOR EACH ROW EXECUTE FUNCTION workflow_runs_delete_whole();

CREATE FUNCTION workflow_steps_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NOT EXISTS (SELECT 1 FROM step_transitions WHERE from_state = '(new)' AND to_state = NEW.state) THEN
            RAISE EXCEPTION 'baton: illegal state for a new workflow step (steps start pending)';
        END IF;
        RETURN NEW;
    ELSIF TG_OP = 'DELETE' THEN
        IF EXISTS (SELECT 1 FROM workflow_runs WHERE id = OLD.run_id AND state = 'running') THEN
            RAISE EXCEPTION 'baton: a step of a running workflow run cannot be deleted (cancel the run first)';
        END IF;
        RETURN OLD;
    END IF;
    IF (NEW.run_id, NEW.idx, NEW.step_id, NEW.worker_id) IS DISTINCT FROM (OLD.run_id, OLD.idx, OLD.step_id, OLD.worker_id) THEN
        RAISE EXCEPTION 'baton: a workflow step''s run, index, step id and worker never change';
    END IF;
    IF NEW.job_id IS DISTINCT FROM OLD.job_id
       AND NOT (OLD.state = 'pending' AND NEW.state = 'running' AND OLD.job_id IS NULL AND NEW.job_id IS NOT NULL) THEN
        RAISE EXCEPTION 'baton: a workflow step''s job is set once, when the step starts (pending -> running)';
    END IF;
    IF NEW.state = OLD.state AND OLD.state IN ('succeeded', 'failed', 'canceled', 'skipped') AND NEW IS DISTINCT FROM OLD THEN
        RAISE EXCEPTION 'baton: a finished workflow step never changes (pruning deletes its run whole)';
    END IF;
    IF NEW.state IS DISTINCT FROM OLD.state
       AND NOT EXISTS (SELECT 1 FROM step_transitions WHERE from_state = OLD.state AND to_state = NEW.state) THEN
        RAISE EXCEPTION 'baton: illegal workflow step transition (see step_transitions)';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER workflow_steps_guard BEFORE INSERT OR UPDATE OR DELETE ON workflow_steps
    FOR EACH ROW EXECUTE FUNCTION workflow_steps_guard();

-- A canceled step's job cancels its run: the step, the pending ones and the run itself.
CREATE FUNCTION jobs_cancel_workflow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE workflow_steps SET state = 'canceled', finished_ms = NEW.finished_ms, error = NEW.error
     WHERE run_id = NEW.workflow_run_id AND idx = NEW.workflow_step AND state = 'running';
    UPDATE workflow_steps SET state = 'canceled', finished_ms = NEW.finished_ms
     WHERE run_id = NEW.workflow_run_id AND state = 'pending';
    UPDATE workflow_runs SET state = 'canceled', finished_ms = NEW.finished_ms, current_step = NULL,
                             error = coalesce(NEW.error, 'Canceled')
     WHERE id = NEW.workflow_run_id AND state = 'running';
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_cancel_workflow AFTER UPDATE OF state ON jobs
    FOR EACH ROW WHEN (NEW.state = 'canceled' AND OLD.state IS DISTINCT FROM NEW.state AND NEW.workflow_run_id IS NOT NULL)
    EXECUTE FUNCTION jobs_cancel_workflow();

-- Worktrees' guards --------------------------------------------------------------------------

CREATE FUNCTION worktrees_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NOT EXISTS (SELECT 1 FROM worktree_transitions WHERE from_state = '(new)' AND to_state = NEW.state) THEN
            RAISE EXCEPTION 'baton: a worktree starts planned';
        END IF;
        RETURN NEW;
    ELSIF TG_OP = 'DELETE' THEN
        IF EXISTS (SELECT 1 FROM jobs WHERE worktree_id = OLD.id AND state IN ('waiting', 'queued', 'running')) THEN
            RAISE EXCEPTION 'baton: a worktree of an unfinished task cannot be deleted';
        END IF;
        RETURN OLD;
    END IF;
    IF NEW.state IS DISTINCT FROM OLD.state
       AND NOT EXISTS (SELECT 1 FROM worktree_transitions WHERE from_state = OLD.state AND to_state = NEW.state) THEN
        RAISE EXCEPTION 'baton: illegal worktree transition';
    END IF;
    IF (NEW.id, NEW.repo, NEW.path, NEW.subdir, NEW.branch, NEW.base_commit, NEW.target, NEW.auto_commit,
        NEW.setup, NEW.created_ms)
       IS DISTINCT FROM
       (OLD.id, OLD.repo, OLD.path, OLD.subdir, OLD.branch, OLD.base_commit, OLD.target, OLD.auto_commit,
        OLD.setup, OLD.created_ms) THEN
        RAISE EXCEPTION 'baton: a worktree''s id, path, branch, base and target never change';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER worktrees_guard BEFORE INSERT OR UPDATE OR DELETE ON worktrees
    FOR EACH ROW EXECUTE FUNCTION worktrees_guard();

-- Pauses and finish hooks --------------------------------------------------------------------

CREATE TABLE pauses (
    profile   text   PRIMARY KEY CHECK (length(profile) > 0),
    paused_ms bigint NOT NULL,
    paused_by text   NOT NULL
);

CREATE TABLE hooks (
    name       text   PRIMARY KEY CHECK (name IN ('onFinish')),
    argv       text   NOT NULL CHECK (jsonb_typeof(argv::jsonb) = 'array' AND jsonb_array_length(argv::jsonb) > 0),
    updated_ms bigint NOT NULL
);

CREATE TABLE finish_hooks (
    task_id     text   PRIMARY KEY,   -- a job's id or a workflow run's
    finished_ms bigint NOT NULL,
    attempts    bigint NOT NULL DEFAULT 0 CHECK (attempts BETWEEN 0 AND 3),
    started_ms  bigint,
    done_ms     bigint,
    exit_code   bigint,
    error       text,
    CHECK (done_ms IS NULL OR attempts > 0 OR error IS NOT NULL)
);
CREATE INDEX finish_hooks_pending ON finish_hooks (finished_ms) WHERE done_ms IS NULL;

CREATE FUNCTION finish_hooks_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.done_ms IS NOT NULL THEN
        RAISE EXCEPTION 'baton: a finish hook that ran never runs again';
    END IF;
    IF (NEW.task_id, NEW.finished_ms) IS DISTINCT FROM (OLD.task_id, OLD.finished_ms) THEN
        RAISE EXCEPTION 'baton: a finish hook''s task and finishing time never change';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER finish_hooks_guard BEFORE UPDATE ON finish_hooks FOR EACH ROW EXECUTE FUNCTION finish_hooks_guard();

-- A task that ended (a job outside a workflow, or a run) gets its finish hook's row, when an
-- onFinish hook is configured (a workflow's steps are left out by the jobs triggers' WHEN).
CREATE FUNCTION finish_hook_due() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM hooks WHERE name = 'onFinish') THEN
        RETURN NULL;
    END IF;
    INSERT INTO finish_hooks (task_id, finished_ms) VALUES (NEW.id, NEW.finished_ms) ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_finish_hook AFTER UPDATE OF state ON jobs
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state AND NEW.state IN ('succeeded', 'failed', 'canceled')
                       AND NEW.workflow_run_id IS NULL)
    EXECUTE FUNCTION finish_hook_due();
CREATE TRIGGER jobs_finish_hook_insert AFTER INSERT ON jobs
    FOR EACH ROW WHEN (NEW.state IN ('succeeded', 'failed', 'canceled') AND NEW.workflow_run_id IS NULL)
    EXECUTE FUNCTION finish_hook_due();
CREATE TRIGGER workflow_runs_finish_hook AFTER UPDATE OF state ON workflow_runs
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state AND NEW.state IN ('succeeded', 'failed', 'canceled'))
    EXECUTE FUNCTION finish_hook_due();

CREATE TRIGGER jobs_delete_links AFTER DELETE ON jobs FOR EACH ROW EXECUTE FUNCTION jobs_delete_links();

-- Wake-ups -----------------------------------------------------------------------------------

-- Every committed change to the queue's tasks, workers, nodes, events or pauses notifies
-- channel 'baton' (once per table and transaction: PostgreSQL folds equal notifications), which
-- dispatchers, awaiters, watch and the MCP server LISTEN on.
CREATE FUNCTION baton_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('baton', TG_TABLE_NAME);
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_notify AFTER INSERT OR UPDATE OR DELETE ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION baton_notify();
CREATE TRIGGER workers_notify AFTER INSERT OR UPDATE OR DELETE ON workers
    FOR EACH STATEMENT EXECUTE FUNCTION baton_notify();
CREATE TRIGGER workflow_runs_notify AFTER INSERT OR UPDATE OR DELETE ON workflow_runs
    FOR EACH STATEMENT EXECUTE FUNCTION baton_notify();
CREATE TRIGGER job_events_notify AFTER INSERT ON job_events
    FOR EACH STATEMENT EXECUTE FUNCTION baton_notify();
CREATE TRIGGER pauses_notify AFTER INSERT OR UPDATE OR DELETE ON pauses
    FOR EACH STATEMENT EXECUTE FUNCTION baton_notify();
CREATE TRIGGER nodes_notify AFTER INSERT OR UPDATE OR DELETE ON nodes
    FOR EACH STATEMENT EXECUTE FUNCTION baton_notify();

-- Views for people reading the queue with psql --------------------------------------------

CREATE FUNCTION baton_iso(ms bigint) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT to_char(to_timestamp(ms / 1000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$$;

CREATE VIEW v_jobs AS
SELECT id, state, profile, attempt || '/' || max_attempts AS attempts, priority, session, owner AS node,
       baton_iso(created_ms) AS created_at, baton_iso(started_ms) AS started_at,
       baton_iso(finished_ms) AS finished_at,
       CASE
           WHEN finished_ms IS NOT NULL AND started_ms IS NOT NULL THEN finished_ms - started_ms
           WHEN state = 'running' THEN (extract(epoch FROM clock_timestamp()) * 1000)::bigint - started_ms
       END AS duration_ms,
       exit_code,
       substr(replace(replace(task, chr(10), ' '), chr(13), ' '), 1, 60) AS message,
       error, labels, after
  FROM jobs
 ORDER BY seq DESC;

CREATE VIEW v_workers AS
SELECT id, owner AS node, profile, kind, state, pid,
       coalesce(job_id, (SELECT string_agg(s.job_id, ',') FROM worker_sessions s WHERE s.worker_id = workers.id))
           AS job_id,
       max_sessions, session, baton_iso(started_ms) AS started_at, baton_iso(last_activity_ms) AS last_activity_at,
       exit_code, error
  FROM workers
 ORDER BY seq DESC;

CREATE VIEW v_workflow_runs AS
SELECT id, workflow_id, state, current_step,
       (SELECT count(*) FROM workflow_steps s WHERE s.run_id = r.id) AS steps,
       baton_iso(created_ms) AS created_at, baton_iso(finished_ms) AS finished_at,
       length(carry) AS carry_chars,
       substr(replace(replace(task, chr(10), ' '), chr(13), ' '), 1, 60) AS message,
       error
  FROM workflow_runs r
 ORDER BY seq DESC;

CREATE VIEW v_nodes AS
SELECT id, epoch, host, pid, labels, baton_iso(started_ms) AS started_at, baton_iso(heartbeat_ms) AS heartbeat_at,
       baton_iso(stopped_ms) AS stopped_at,
       (SELECT count(*) FROM jobs j WHERE j.owner = n.id AND j.state = 'running') AS running
  FROM nodes n
 ORDER BY id;
