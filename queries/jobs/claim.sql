-- Claim up to ?7 runnable jobs for owner ?1 / epoch ?2 at time ?3, within every limit, only while
-- that owner holds the lease (a leader that was replaced claims nothing):
-- ?4 limits.maxConcurrency, ?5 limits.maxWorkers, ?6 limits.maxWorkersPerSession.
-- A oneshot job needs a new worker, so the worker limits hold it back here (it stays queued);
-- a server job runs on its profile's server worker, whose spawn checks those limits itself.
-- A paused profile's jobs (pauses: the profile, or '*' for all) stay queued.
-- The first candidates in queue order come off the jobs_queue index, as many as the look-ahead
-- below; a candidate's running count (profile limit) and live-worker count (session limit) are
-- looked up for it alone, and only when it has such a limit, so a claim costs the same beside 10
-- or 1 000 000 queued, and a claim for one free place ranks a few dozen rows, not hundreds.
WITH cand AS (
        SELECT seq, priority, profile, session, profile_limit, srv, p0, s0
          FROM (SELECT j.seq, j.priority, j.profile, j.session, j.profile_limit, j.worker_kind = 'server' AS srv,
                       CASE WHEN j.profile_limit IS NULL THEN 0
                            ELSE (SELECT count(*) FROM jobs r WHERE r.state = 'running' AND r.profile = j.profile) END AS p0,
                       CASE WHEN j.session IS NULL THEN 0
                            ELSE (SELECT count(*) FROM workers w WHERE w.session = j.session
                                     AND w.state IN ('starting', 'ready', 'busy')) END AS s0
                  FROM jobs j
                 WHERE j.state = 'queued' AND j.run_after_ms <= ?3
                   AND NOT EXISTS (SELECT 1 FROM pauses p WHERE p.profile = j.profile))
         WHERE (profile_limit IS NULL OR p0 < profile_limit)
           AND (session IS NULL OR srv OR s0 < ?6)
         ORDER BY priority DESC, seq
         -- Paused as a whole ('*'): not even a scan. Otherwise a look-ahead past the jobs this
         -- claim can take, for the ones the limits skip: 16 + 8 per free place, at most 256.
         LIMIT CASE WHEN EXISTS (SELECT 1 FROM pauses WHERE profile = '*') THEN 0
                    ELSE min(256, 16 + 8 * max(0, min(?7, ?4 - (SELECT count(*) FROM jobs WHERE state = 'running'))))
               END),
     -- Each candidate's place among this claim's candidates of its profile (pn), its session
     -- (sn) and its worker kind (wn), on top of what already runs (p0 and s0 are 0 where no
     -- limit reads them).
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
  FROM pick
 WHERE jobs.seq = pick.seq AND jobs.state = 'queued'
   AND EXISTS (SELECT 1 FROM dispatcher_lease WHERE singleton = 1 AND owner = ?1 AND epoch = ?2)
RETURNING *
