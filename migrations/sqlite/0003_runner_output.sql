-- baton queue schema, version 3: how a job's runner output becomes its response.
--
-- `output` holds the job's output spec as JSON (see src/extract.rs: text, a JSON document, or
-- JSON Lines with conditions; where the response, a failure flag, tokens and cost are), resolved
-- from the requester's config at enqueue like the argv. NULL: stdout is the response.

ALTER TABLE jobs ADD COLUMN output TEXT;
ALTER TABLE workflow_steps ADD COLUMN output TEXT;

PRAGMA user_version = 3;
