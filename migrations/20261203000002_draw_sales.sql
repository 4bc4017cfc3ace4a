-- Draw sales (design/draw.md, #23): the sale's mode and draw settings, and its draw.
--
-- mode              'fcfs' (first come, first served: the line) or 'draw'.
-- entries_close_at  a draw sale's freeze: entries are taken from opens_at until then; NULL for fcfs.
-- claim_seconds     how long a draw winner has to order (1..86400); NULL for fcfs.
ALTER TABLE sales
    ADD COLUMN mode             ENUM('fcfs', 'draw') NOT NULL DEFAULT 'fcfs',
    ADD COLUMN entries_close_at DATETIME(3)          NULL,
    ADD COLUMN claim_seconds    INT UNSIGNED         NULL,
    ADD CONSTRAINT ck_sales_draw CHECK (
        (mode = 'fcfs' AND entries_close_at IS NULL AND claim_seconds IS NULL)
        OR (mode = 'draw' AND entries_close_at IS NOT NULL AND entries_close_at > opens_at
            AND claim_seconds BETWEEN 1 AND 86400)
    );

-- One row per draw sale, written with the sale.
--
-- seed             32 bytes from a CSPRNG, secret until drawn_at.
-- seed_commitment  SHA-256(seed), public from the sale's creation.
-- entry_count, entries_digest, frozen_at  written by the freeze (NULL before).
-- drawn_at         when the seed was revealed (NULL before).
CREATE TABLE draws (
    sale_id         BINARY(16)   NOT NULL PRIMARY KEY,
    seed            BINARY(32)   NOT NULL,
    seed_commitment BINARY(32)   NOT NULL,
    entry_count     INT UNSIGNED NULL,
    entries_digest  BINARY(32)   NULL,
    frozen_at       DATETIME(3)  NULL,
    drawn_at        DATETIME(3)  NULL,
    CONSTRAINT fk_draws_sale FOREIGN KEY (sale_id) REFERENCES sales (id)
);
