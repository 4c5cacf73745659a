-- Write the results of several running jobs ($1: a JSON array of outcomes) at time $2, each
-- fenced by node $3 at epoch $4, which must still hold that epoch (a node that was taken over
-- writes nothing). A canceled job's error comes from its recorded reason.
UPDATE jobs
    SET state = o.state, finished_ms = $2, response = o.response, response_chars = o.response_chars,
        report = o.report, exit_code = o.exit_code, output_tail = o.output_tail, tokens = o.tokens,
        input_tokens = o.input_tokens, output_tokens = o.output_tokens, cached_tokens = o.cached_tokens,
        cost_usd = o.cost_usd,
        error = CASE WHEN o.state = 'canceled' THEN coalesce('Canceled: ' || jobs.cancel_reason, 'Canceled')
                     ELSE o.error END
   FROM jsonb_to_recordset($1::text::jsonb) AS o(id text, state text, response text, response_chars bigint, error text,
                                            report text, exit_code bigint, output_tail text, tokens bigint,
                                            input_tokens bigint, output_tokens bigint, cached_tokens bigint,
                                            cost_usd double precision)
  WHERE jobs.id = o.id AND jobs.state = 'running' AND jobs.owner = $3 AND jobs.epoch = $4
    AND EXISTS (SELECT 1 FROM nodes WHERE id = $3 AND epoch = $4 AND stopped_ms IS NULL)
 RETURNING jobs.id
