-- Claim up to ?7 runnable jobs for owner ?1 / epoch ?2 at time ?3, within every limit, only while
-- that owner holds the lease (a leader that was replaced claims nothing):
-- ?4 limits.maxConcurrency, ?5 limits.maxWorkers, ?6 limits.maxWorkersPerSession.
-- A oneshot job needs a new worker, so the worker limits hold it back here (it stays queued);
-- a server job runs on its profile's server worker, whose spawn checks those limits itself.
-- A paused profile's jobs (pauses: the profile, or '*' for all) stay queued.
WITH rp AS (SELECT profile, count(*) AS n FROM jobs WHERE state = 'running' GROUP BY profile),
     rs AS (SELECT session, count(*) AS n FROM workers
             WHERE state IN ('starting', 'ready', 'busy') AND session IS NOT NULL GROUP BY session),
     cand AS (
        SELECT j.seq, j.priority, j.profile, j.session, j.profile_limit, j.worker_kind = 'server' AS srv,
               coalesce(rp.n, 0) AS p0, coalesce(rs.n, 0) AS s0
          FROM jobs j
          LEFT JOIN rp ON rp.profile = j.profile
          LEFT JOIN rs ON rs.session = j.session
         WHERE j.state = 'queued' AND j.run_after_ms <= ?3
           AND NOT EXISTS (SELECT 1 FROM pauses p WHERE p.profile = j.profile)
           AND (j.profile_limit IS NULL OR coalesce(rp.n, 0) < j.profile_limit)
           AND (j.session IS NULL OR j.worker_kind = 'server' OR coalesce(rs.n, 0) < ?6)
         ORDER BY j.priority DESC, j.seq
         -- Paused as a whole ('*'): not even a scan.
         LIMIT CASE WHEN EXISTS (SELECT 1 FROM pauses WHERE profile = '*') THEN 0 ELSE 256 END),
     ranked AS (
        SELECT seq, priority, session, profile_limit, srv,
               p0 + row_number() OVER (PARTITION BY profile ORDER BY priority DESC, seq) AS pn,
               s0 + row_number() OVER (PARTITION BY session, srv ORDER BY priority DESC, seq) AS sn,
               row_number() OVER (PARTITION BY srv ORDER BY priority DESC, seq) AS wn
          FROM cand),
     pick AS (
        SELECT seq FROM ranked
         WHERE (profile_limit IS NULL OR pn <= profile_limit)
           AND (srv OR ((session IS NULL OR sn <= ?6)
                        AND wn <= ?5 - (SELECT count(*) FROM workers WHERE state IN ('starting', 'ready', 'busy'))))
         ORDER BY priority DESC, CASE WHEN session IS NULL THEN 0 ELSE sn END, seq
         LIMIT max(0, min(?7, ?4 - (SELECT count(*) FROM jobs WHERE state = 'running'))))
UPDATE jobs
   SET state = 'running', attempt = attempt + 1, owner = ?1, epoch = ?2, started_ms = ?3,
       finished_ms = NULL, error = NULL, exit_code = NULL, output_tail = NULL
 WHERE seq IN pick AND state = 'queued'
   AND EXISTS (SELECT 1 FROM dispatcher_lease WHERE singleton = 1 AND owner = ?1 AND epoch = ?2)
RETURNING *
