-- baton queue schema, version 5: token counts by kind.
--
-- `tokens` stays the total. `input_tokens` counts every prompt token (cached ones included),
-- `cached_tokens` the part of them read from the provider's prompt cache, `output_tokens` the
-- generated ones (reasoning included): tokens = input_tokens + output_tokens where both are known.

ALTER TABLE jobs ADD COLUMN input_tokens INTEGER;
ALTER TABLE jobs ADD COLUMN output_tokens INTEGER;
ALTER TABLE jobs ADD COLUMN cached_tokens INTEGER;

PRAGMA user_version = 5;
