-- Write the results of several running jobs (?1: a JSON array of outcomes) at time ?2, each
-- fenced by owner ?3 and epoch ?4, who must still hold the lease (a leader that was replaced
-- writes nothing). A canceled job's error comes from its recorded reason.
-- RETURNING columns come back as nullable to sqlx: jobs.id is NOT NULL.
UPDATE jobs
    SET state = o.state, finished_ms = ?2, response = o.response, response_chars = o.response_chars,
        report = o.report, exit_code = o.exit_code, output_tail = o.output_tail, tokens = o.tokens,
        input_tokens = o.input_tokens, output_tokens = o.output_tokens, cached_tokens = o.cached_tokens,
        cost_usd = o.cost_usd,
        error = CASE WHEN o.state = 'canceled' THEN coalesce('Canceled: ' || jobs.cancel_reason, 'Canceled')
                     ELSE o.error END
   FROM (SELECT value ->> 'id' AS id, value ->> 'state' AS state, value ->> 'response' AS response,
                value ->> 'response_chars' AS response_chars, value ->> 'error' AS error,
                value ->> 'report' AS report, value ->> 'exit_code' AS exit_code,
                value ->> 'output_tail' AS output_tail, value ->> 'tokens' AS tokens,
                value ->> 'input_tokens' AS input_tokens, value ->> 'output_tokens' AS output_tokens,
                value ->> 'cached_tokens' AS cached_tokens, value ->> 'cost_usd' AS cost_usd
           FROM json_each(?1)) AS o
  WHERE jobs.id = o.id AND jobs.state = 'running' AND jobs.owner = ?3 AND jobs.epoch = ?4
    AND EXISTS (SELECT 1 FROM dispatcher_lease WHERE singleton = 1 AND owner = ?3 AND epoch = ?4)
 RETURNING jobs.id AS "id!: String"
