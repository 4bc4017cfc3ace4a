-- The janitor (api/src/janitor.rs) deletes expired sign-in state in small batches; these
-- indexes let each batch find its rows without scanning the tables.
CREATE INDEX ix_refresh_tokens_expires ON refresh_tokens (expires_at);
CREATE INDEX ix_email_codes_expires ON email_codes (expires_at);
