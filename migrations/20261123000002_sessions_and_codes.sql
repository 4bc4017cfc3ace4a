-- Sign-in state: e-mail verification codes and refresh tokens.
-- Secrets are never stored in the clear: codes as a keyed HMAC, refresh tokens as SHA-256.

CREATE TABLE email_codes (
    user_id    BINARY(16)  NOT NULL PRIMARY KEY,
    -- HMAC-SHA-256 of the six digits under a key derived from the PII key.
    code_hash  BINARY(32)  NOT NULL,
    -- Wrong tries so far; at auth.email_code_max_attempts the code is burnt.
    attempts   INT         NOT NULL DEFAULT 0,
    expires_at DATETIME(3) NOT NULL,
    sent_at    DATETIME(3) NOT NULL,
    CONSTRAINT fk_email_codes_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- One row per refresh token ever issued. A login starts a family; each refresh spends one
-- token and adds the next to the same family. Presenting a spent token again revokes the
-- whole family (the token was stolen, or the client is confused: either way, sign in again).
CREATE TABLE refresh_tokens (
    id         BINARY(16)  NOT NULL PRIMARY KEY,
    family_id  BINARY(16)  NOT NULL,
    user_id    BINARY(16)  NOT NULL,
    token_hash BINARY(32)  NOT NULL,
    created_at DATETIME(3) NOT NULL,
    expires_at DATETIME(3) NOT NULL,
    spent_at   DATETIME(3) NULL,
    revoked_at DATETIME(3) NULL,
    UNIQUE KEY uq_refresh_tokens_hash (token_hash),
    KEY ix_refresh_tokens_family (family_id),
    KEY ix_refresh_tokens_user (user_id),
    CONSTRAINT fk_refresh_tokens_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
