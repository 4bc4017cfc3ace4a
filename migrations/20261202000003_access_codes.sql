-- Access codes for presales and priority groups (design/door.md §2, #19).
--
-- A code is kept only as SHA-256(sale id bytes || normalised code): the plain text is answered
-- once, to the administrator who made the batch, and never stored (core::sale::door::code_hash).
-- The sale's Redis `codes` hash holds the same hashes for the join; MySQL is the record that
-- `sale rearm` rebuilds it from.
CREATE TABLE access_codes (
    sale_id    BINARY(16)  NOT NULL,
    code_hash  BINARY(32)  NOT NULL,
    group_name VARCHAR(32) NOT NULL,
    uses       INT         NOT NULL,
    created_at DATETIME(3) NOT NULL,
    PRIMARY KEY (sale_id, code_hash),
    CONSTRAINT fk_access_codes_sale FOREIGN KEY (sale_id) REFERENCES sales (id),
    CONSTRAINT ck_access_codes_uses CHECK (uses > 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
