-- Claim up to $7 runnable jobs for node $1 at epoch $2 at time $3, within every limit, across
-- all the nodes sharing the queue, only while that node still holds its epoch (a node that was
-- taken over claims nothing): $4 limits.maxConcurrency, $5 limits.maxWorkers,
-- $6 limits.maxWorkersPerSession, $8 a JSON array of the project directories that exist on this
-- node (a task runs only where its project is).
--
-- The caller runs it in a transaction that first takes `pg_advisory_xact_lock(1111577678)`
-- (0x4241544E, 'BATN'): claims from every node then take turns, and this statement's snapshot,
-- taken after the lock, counts every running job and live worker the other nodes committed,
-- so the limits hold across nodes. FOR UPDATE SKIP LOCKED passes over a job another
-- transaction is changing (a cancel, say) instead of waiting for it.
--
-- As on SQLite: a oneshot job needs a new worker, so the worker limits hold it back here; a
-- server job runs on its profile's server worker, whose spawn checks those limits itself; a
-- paused profile's jobs (pauses: the profile, or '*' for all) stay queued; the first
-- candidates in queue order come off the jobs_queue index, as many as the look-ahead, and a
-- candidate's running and live-worker counts are looked up only when it has such a limit.
WITH cand AS (
        SELECT j.seq, j.priority, j.profile, j.session, j.profile_limit, j.worker_kind = 'server' AS srv,
               CASE WHEN j.profile_limit IS NULL THEN 0
                    ELSE (SELECT count(*) FROM jobs r WHERE r.state = 'running' AND r.profile = j.profile) END AS p0,
               CASE WHEN j.session IS NULL THEN 0
                    ELSE (SELECT count(*) FROM workers w WHERE w.session = j.session
                             AND w.state IN ('starting', 'ready', 'busy')) END AS s0
          FROM jobs j
         WHERE j.state = 'queued' AND j.run_after_ms <= $3
           AND (j.node IS NULL OR j.node = $1)
           AND j.project_dir IN (SELECT jsonb_array_elements_text($8::text::jsonb))
           AND NOT EXISTS (SELECT 1 FROM pauses p WHERE p.profile = j.profile)
           AND (j.profile_limit IS NULL
                OR (SELECT count(*) FROM jobs r WHERE r.state = 'running' AND r.profile = j.profile) < j.profile_limit)
           AND (j.session IS NULL OR j.worker_kind = 'server'
                OR (SELECT count(*) FROM workers w WHERE w.session = j.session
                       AND w.state IN ('starting', 'ready', 'busy')) < $6)
         ORDER BY j.priority DESC, j.seq
         -- Paused as a whole ('*'): not even a scan. Otherwise a look-ahead past the jobs this
         -- claim can take, for the ones the limits skip: 16 + 8 per free place, at most 256.
         LIMIT CASE WHEN EXISTS (SELECT 1 FROM pauses WHERE profile = '*') THEN 0
                    ELSE least(256, 16 + 8 * greatest(0, least($7, $4 - (SELECT count(*) FROM jobs WHERE state = 'running'))))
               END
           FOR UPDATE OF j SKIP LOCKED),
     -- Each candidate's place among this claim's candidates of its profile (pn), its session
     -- (sn) and its worker kind (wn), on top of what already runs.
     ranked AS (
        SELECT seq, priority, session, profile_limit, srv,
               p0 + row_number() OVER (PARTITION BY profile ORDER BY priority DESC, seq) AS pn,
               s0 + row_number() OVER (PARTITION BY session, srv ORDER BY priority DESC, seq) AS sn,
               row_number() OVER (PARTITION BY srv ORDER BY priority DESC, seq) AS wn
          FROM cand),
     pick AS (
        SELECT seq FROM ranked
         WHERE (profile_limit IS NULL OR pn <= profile_limit)
           AND (srv OR ((session IS NULL OR sn <= $6)
                        AND wn <= $5 - (SELECT count(*) FROM workers WHERE state IN ('starting', 'ready', 'busy'))))
         ORDER BY priority DESC, CASE WHEN session IS NULL THEN 0 ELSE sn END, seq
         LIMIT greatest(0, least($7, $4 - (SELECT count(*) FROM jobs WHERE state = 'running'))))
UPDATE jobs
   SET state = 'running', attempt = attempt + 1, owner = $1, epoch = $2, started_ms = $3,
       finished_ms = NULL, error = NULL, exit_code = NULL, output_tail = NULL
  FROM pick
 WHERE jobs.seq = pick.seq AND jobs.state = 'queued'
   AND EXISTS (SELECT 1 FROM nodes WHERE id = $1 AND epoch = $2 AND stopped_ms IS NULL)
RETURNING jobs.seq, jobs.id, jobs.state AS "state: JobState", jobs.kind, jobs.profile, jobs.task, jobs.session,
          jobs.requested_by, jobs.project_dir, jobs.argv, jobs.prompt_stdin, jobs.model, jobs.env, jobs.attachments,
          jobs.priority, jobs.attempt, jobs.max_attempts, jobs.run_after_ms, jobs.timeout_ms, jobs.profile_limit,
          jobs.created_ms, jobs.started_ms, jobs.finished_ms, jobs.response, jobs.response_chars, jobs.error,
          jobs.report, jobs.exit_code, jobs.owner, jobs.epoch, jobs.output_tail, jobs.cancel_requested_ms,
          jobs.cancel_reason, jobs.workflow_run_id, jobs.workflow_step, jobs.dedup_key, jobs.tokens, jobs.cost_usd,
          jobs.output, jobs.worker_kind AS "worker_kind: WorkerKind", jobs.input_tokens, jobs.output_tokens,
          jobs.cached_tokens, jobs.system_prompt, jobs.permissions, jobs.worktree_id, jobs.labels, jobs.after,
          jobs.after_any <> 0 AS "after_any!: bool"
