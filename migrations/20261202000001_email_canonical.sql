-- E-mail addresses compare exactly (#17 hole 2).
--
-- `users.email` had the accent- and case-insensitive collation utf8mb4_unicode_ci, so
-- 'vïctim@exämple.com' = 'victim@example.com' was true and a look-alike address signed in to
-- another person's account. The api stores one canonical form (trim, NFC, lower case, domain
-- per UTS #46 in Unicode: core::auth::accounts::normalize_email), so the column compares it
-- byte for byte. This cannot fail on existing rows: utf8mb4_bin tells apart everything
-- unicode_ci did, so the unique key holds. Rows written before the canonical form existed
-- (a decomposed accent, an `xn--` domain) are rewritten by the step that runs after the
-- migrations (core::auth::accounts::canonicalize_stored), which names any two accounts that
-- would become one instead of stopping every service; `dropline user collisions` lists them
-- beforehand.
ALTER TABLE users
    MODIFY email VARCHAR(254) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL;

-- Verification codes per account per hour: a resend never restores spent tries. Within one
-- window (an hour from its first code) the wrong tries add up across codes and at most
-- auth.email_codes_per_hour codes are sent; the janitor keeps a row until its window ended.
ALTER TABLE email_codes
    ADD COLUMN window_started_at DATETIME(3) NULL,
    ADD COLUMN codes_in_window   INT         NOT NULL DEFAULT 0;

-- Data steps that run once after the migrations (in Rust), recorded when complete.
CREATE TABLE data_steps (
    name    VARCHAR(64) NOT NULL PRIMARY KEY,
    done_at DATETIME(3) NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
